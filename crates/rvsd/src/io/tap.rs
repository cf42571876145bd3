//! The exception path: a TAP device through which frames the director claimed but does not own
//! (an ICMP error about no known connection, a fragment of the host's own traffic) reach the
//! host stack, as if they had arrived on an interface.
//!
//! Why by hand rather than a TUN/TAP crate: creating the device is one `TUNSETIFF` ioctl, and
//! the crates that wrap it pull in address management, async runtimes and Windows support.
//!
//! The device is made quiet: no IPv6 link-local address (`addr_gen_mode` 1: no DAD, router or
//! MLD solicitations are sent into it), no router advertisements or autoconfiguration; IPv4
//! sends nothing to it unless routes point there. What the host does send is never read unless
//! [`Tap::drain`] is called; the kernel drops it once the device queue (`txqueuelen`) is full,
//! which costs nothing. IPv6 stays enabled, so IPv6 frames can be injected.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{if_mac, if_set_up, ifreq, socket};

/// A TAP device (`IFF_TAP | IFF_NO_PI`), up, removed when dropped (the device is not
/// persistent: closing its descriptor deletes it).
#[derive(Debug)]
pub(crate) struct Tap {
    file: File,
    name: String,
    mac: [u8; 6],
    rp_filter: u8,
}

impl Tap {
    /// Creates TAP device `name` (at most 15 bytes) in the calling thread's network namespace,
    /// configures it (see the module docs; `rp_filter` 0) and brings it up. Needs
    /// `CAP_NET_ADMIN`.
    ///
    /// IPv4 reverse-path filtering: what the director hands the host arrives on the TAP from
    /// sources routed via other interfaces, and the TAP has no IPv4 address, for which Linux
    /// rejects every source in both strict and loose mode. The kernel applies the larger of
    /// `conf/all/rp_filter` and the device's own value, so the device is set to 0, but
    /// IPv4 delivery only works when `conf/all/rp_filter` is 0 too: check
    /// [`Tap::ipv4_rp_filter`] and tell the operator (this does not change the host-wide
    /// setting). IPv6 has no such filter.
    pub(crate) fn open(name: &str) -> io::Result<Tap> {
        let mut ifr = ifreq(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes the `struct ifreq` that `ifr` points to for the
        // duration of the call.
        let r = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETIFF,
                &mut ifr as *mut libc::ifreq,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")));
        }
        let ctl = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        let mac = if_mac(ctl.as_fd(), name)?;
        for (key, value) in [
            ("addr_gen_mode", "1"),
            ("accept_ra", "0"),
            ("autoconf", "0"),
        ] {
            // Absent when IPv6 is disabled on this host: nothing to quieten then.
            match std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/{key}"), value) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io::Error::new(e.kind(), format!("{name}: ipv6 {key}: {e}")));
                }
                _ => {}
            }
        }
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0")
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: rp_filter: {e}")))?;
        let all = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")?;
        let rp_filter = all.trim().parse().unwrap_or(u8::MAX);
        if_set_up(ctl.as_fd(), name)
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: up: {e}")))?;
        Ok(Tap {
            file,
            name: name.to_owned(),
            mac,
            rp_filter,
        })
    }

    /// The device name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The device's hardware address: frames for the host must be addressed to it.
    pub(crate) fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The effective IPv4 reverse-path filter mode on the TAP when it was opened (the larger
    /// of `conf/all/rp_filter` and the TAP's 0): anything but 0 means the host stack drops
    /// every IPv4 frame written to the TAP (see [`Tap::open`]).
    pub(crate) fn ipv4_rp_filter(&self) -> u8 {
        self.rp_filter
    }

    /// The device descriptor (readable when the host sent something to the TAP).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Hands `frame` (Ethernet header on, destination already [`Tap::mac`], checksums
    /// complete) to the host stack.
    pub(crate) fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let n = self.file.write(frame)?;
        if n != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("{}: short write {n} of {}", self.name, frame.len()),
            ));
        }
        Ok(())
    }

    /// Addresses `frame` to the TAP (rewrites the Ethernet destination) and hands it to the
    /// host stack. `InvalidInput` for a frame shorter than an Ethernet header.
    pub(crate) fn deliver(&mut self, frame: &mut [u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame shorter than 14 bytes",
            ));
        }
        frame[..6].copy_from_slice(&self.mac);
        self.write_frame(frame)
    }

    /// Reads and discards what the host sent to the TAP, without blocking; returns the number
    /// of frames discarded.
    pub(crate) fn drain(&mut self) -> usize {
        let mut buf = vec![0u8; 65536 + 64];
        let mut n = 0;
        while let Ok(len) = self.file.read(&mut buf) {
            if len == 0 {
                break;
            }
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::testns::{Pair, in_netns, pair};
    use std::time::{Duration, Instant};

    use etherparse::PacketBuilder;

    const TAP: &str = "rvstap0";

    /// A counter from `/proc/net/snmp` (`Icmp: … InEchos …` header/value line pairs) or
    /// `/proc/net/snmp6` (`Icmp6InEchos N`) inside host `b`.
    fn counter(p: &Pair, v6: bool) -> u64 {
        let file = if v6 {
            "/proc/net/snmp6"
        } else {
            "/proc/net/snmp"
        };
        let out = p.lab.exec(p.b, &["cat", file]).unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        if v6 {
            let line = text
                .lines()
                .find(|l| l.starts_with("Icmp6InEchos "))
                .unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
        let mut icmp = text.lines().filter(|l| l.starts_with("Icmp: "));
        let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
        let i = names
            .split_whitespace()
            .position(|n| n == "InEchos")
            .unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    }

    fn echo_request(v6: bool) -> Vec<u8> {
        // The destination MAC is whatever: `deliver` addresses the frame to the TAP.
        let b = PacketBuilder::ethernet2([0x02, 0, 0, 0, 0, 0x99], [0xff; 6]);
        let mut f = Vec::new();
        if v6 {
            let src = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
            let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
            b.ipv6(src, dst, 64)
                .icmpv6_echo_request(77, 1)
                .write(&mut f, b"rvs tap")
                .unwrap();
        } else {
            b.ipv4([198, 51, 100, 7], [192, 0, 2, 2], 64)
                .icmpv4_echo_request(77, 1)
                .write(&mut f, b"rvs tap")
                .unwrap();
        }
        f
    }

    /// Echo requests injected through the TAP, for an address of another interface of the
    /// namespace, from a source routed elsewhere, are received by the host stack; a host-wide
    /// reverse-path filter that would block IPv4 is reported.
    #[test]
    fn injected_echo_requests_reach_the_host_stack() {
        let Some(p) = pair("injected_echo_requests_reach_the_host_stack") else {
            return;
        };
        p.lab
            .default_route(p.b, "192.0.2.1".parse().unwrap())
            .unwrap();
        p.lab
            .default_route(p.b, "2001:db8::1".parse().unwrap())
            .unwrap();
        let before = (counter(&p, false), counter(&p, true));
        in_netns(&p.ns_b, || {
            assert!(Tap::open("").is_err());
            assert!(Tap::open("a-name-too-long-for-linux").is_err());
            let mut tap = Tap::open(TAP).unwrap();
            assert_eq!(tap.name(), TAP);
            assert_ne!(tap.mac(), [0; 6]);
            let conf = |k: &str| std::fs::read_to_string(format!("/proc/sys/net/{k}")).unwrap();
            assert_eq!(conf(&format!("ipv4/conf/{TAP}/rp_filter")).trim(), "0");
            assert_eq!(tap.ipv4_rp_filter(), 0);
            assert_eq!(conf(&format!("ipv6/conf/{TAP}/accept_ra")).trim(), "0");
            assert_eq!(conf(&format!("ipv6/conf/{TAP}/addr_gen_mode")).trim(), "1");
            assert_eq!(conf(&format!("ipv6/conf/{TAP}/disable_ipv6")).trim(), "0");
            assert!(tap.deliver(&mut [0u8; 13]).is_err());
            for v6 in [false, true] {
                let mut f = echo_request(v6);
                tap.deliver(&mut f).unwrap();
                assert_eq!(&f[..6], &tap.mac());
            }
            let start = Instant::now();
            while (counter(&p, false), counter(&p, true)) != (before.0 + 1, before.1 + 1) {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "InEchos {} -> {}, Icmp6InEchos {} -> {}",
                    before.0,
                    counter(&p, false),
                    before.1,
                    counter(&p, true)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // The host sends nothing into the quiet TAP.
            assert_eq!(tap.drain(), 0);
        });
        // Closing the descriptor removed the device.
        let gone = p.lab.exec(p.b, &["ip", "link", "show", TAP]);
        assert!(gone.is_err(), "{TAP} still exists");
        // Loose mode host-wide: reported, since the address-less TAP would drop all IPv4.
        p.lab
            .sysctl(p.b, "net.ipv4.conf.all.rp_filter", "2")
            .unwrap();
        let (rp, echos) = in_netns(&p.ns_b, || {
            let mut tap = Tap::open(TAP).unwrap();
            tap.deliver(&mut echo_request(false)).unwrap();
            // Once the IPv6 request has been counted, the IPv4 one was processed too.
            tap.deliver(&mut echo_request(true)).unwrap();
            let start = Instant::now();
            while counter(&p, true) != before.1 + 2 {
                assert!(start.elapsed() < Duration::from_secs(30));
                std::thread::sleep(Duration::from_millis(20));
            }
            (tap.ipv4_rp_filter(), counter(&p, false))
        });
        assert_eq!(rp, 2);
        assert_eq!(
            echos,
            before.0 + 1,
            "IPv4 dropped by rp_filter, as documented"
        );
    }
}
