//! Addresses with prefix lengths, restricted to the documentation ranges.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::{LabError, Result};

/// An address with a prefix length, such as `192.0.2.1/24` or `2001:db8:1::1/64`.
///
/// Constructing one checks that the whole prefix lies inside a documentation range
/// (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 or 2001:db8::/32); nothing else can be
/// configured by the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Builds `addr/prefix`, refusing anything outside the documentation ranges.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self> {
        if !is_documentation(addr, prefix) {
            return Err(LabError::NotDocumentation { addr, prefix });
        }
        Ok(Self { addr, prefix })
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// The same prefix with the host bits cleared (`192.0.2.7/24` gives `192.0.2.0/24`), the
    /// form routes are written in.
    pub fn network(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Self {
            addr,
            prefix: self.prefix,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = LabError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || LabError::InvalidPrefix(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Self::new(addr, prefix)
    }
}

/// Whether the address is inside a documentation range (any prefix length).
pub fn is_documentation_addr(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => v4_range(a).is_some(),
        IpAddr::V6(a) => v6_doc(a),
    }
}

/// Whether `addr/prefix` lies wholly inside one documentation range.
pub fn is_documentation(addr: IpAddr, prefix: u8) -> bool {
    match addr {
        IpAddr::V4(a) => v4_range(a).is_some() && (24..=32).contains(&prefix),
        IpAddr::V6(a) => v6_doc(a) && (32..=128).contains(&prefix),
    }
}

fn v4_range(a: Ipv4Addr) -> Option<()> {
    let o = a.octets();
    matches!(
        [o[0], o[1], o[2]],
        [192, 0, 2] | [198, 51, 100] | [203, 0, 113]
    )
    .then_some(())
}

fn v6_doc(a: Ipv6Addr) -> bool {
    let s = a.segments();
    s[0] == 0x2001 && s[1] == 0x0db8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documentation_ranges_only() {
        assert!("192.0.2.1/24".parse::<IpNet>().is_ok());
        assert!("198.51.100.7/32".parse::<IpNet>().is_ok());
        assert!("203.0.113.0/24".parse::<IpNet>().is_ok());
        assert!("2001:db8:1::1/64".parse::<IpNet>().is_ok());
        assert!("2001:db8::/32".parse::<IpNet>().is_ok());
        assert!("192.0.2.1/16".parse::<IpNet>().is_err());
        assert!("10.0.0.1/24".parse::<IpNet>().is_err());
        assert!("192.0.3.1/24".parse::<IpNet>().is_err());
        assert!("2001:db9::1/64".parse::<IpNet>().is_err());
        assert!("2001:db8::1/16".parse::<IpNet>().is_err());
        assert!("0.0.0.0/0".parse::<IpNet>().is_err());
        assert!("192.0.2.1".parse::<IpNet>().is_err());
        assert!("192.0.2.1/33".parse::<IpNet>().is_err());
        let n: IpNet = "192.0.2.77/25".parse().unwrap();
        assert_eq!(n.network().to_string(), "192.0.2.0/25");
        let n: IpNet = "192.0.2.77/32".parse().unwrap();
        assert_eq!(n.network().to_string(), "192.0.2.77/32");
        let n: IpNet = "2001:db8:1:2::5/64".parse().unwrap();
        assert_eq!(n.network().to_string(), "2001:db8:1:2::/64");
    }
}
