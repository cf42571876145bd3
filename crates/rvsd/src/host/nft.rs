//! Claiming from the host only what the director owns, with nftables.
//!
//! The director reads every frame of its interfaces through packet sockets, which get a *copy*:
//! the host stack still receives its own. So that the host does not also answer (or forward)
//! what the director handles, `rvsd` installs its own table in the `netdev` family with an
//! `ingress` chain bound to the director's interfaces. Packet taps run before the ingress hook
//! (`__netif_receive_skb_core` delivers to them first), so the chain *drops* the claimed frames
//! after the director has its copy. Frames the daemon re-injects through its TAP device are not
//! seen by the chain (the TAP is not in its device list) and reach the host stack.
//!
//! What is claimed, per address family — and nothing else, in particular never ARP, neighbour
//! discovery, MLD, router solicitations/advertisements or redirects:
//!
//! * TCP/UDP to a virtual service (`vaddr:vport`, or every port of `vaddr` for port-0 services);
//! * fragments addressed to a VIP (the dataplane reassembles them or hands them back);
//! * ICMP errors (v4 types 3, 4, 11, 12; v6 types 1–4) and echo requests addressed to a VIP;
//! * NAT: the dests' replies (matched on their **source** `daddr:dport`), their fragments, and
//!   ICMP errors quoting a packet whose **destination** is a NAT dest (a client's packet that
//!   the director forwarded to the dest: the quote is client → RIP, and the dataplane reverses
//!   it to find the connection) — except when addressed to one of the director's own addresses,
//!   so the host's own traffic with its dests (health checks) stays the host's;
//! * packet-too-big errors about the director's own tunnel packets (IP-in-IP / IPv6-in-IPv6
//!   quoted with one of the director's addresses as source), from which the dataplane learns
//!   the tunnel path MTU.
//!
//! Membership lives in named sets, so [`NftTable::update`] flushes and refills them in one
//! atomic transaction without touching the rules. [`Claims::claims`] is the same predicate in
//! userspace, rule for rule: it answers whether the kernel dropped a frame, following the
//! kernel's own parsing (nftables `netdev` packet info: IPv4 and IPv6 validation, the IPv6
//! extension-header walk that stops at AH, transport-header loads refused for later fragments,
//! loads bounded by the frame, not by the IP length).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use rvs_core::director::Director;
use rvs_core::types::FwdMethod;

use super::HostError;

/// The table name `rvsd` uses unless told otherwise.
pub(crate) const DEFAULT_TABLE: &str = "rvsd";

/// Priority of the ingress chain: before any other ingress chain a user may have.
const PRIORITY: i32 = -500;

const ICMP: u8 = 1;
const IPIP: u8 = 4;
const TCP: u8 = 6;
const UDP: u8 = 17;
const IPV6_IN_IP: u8 = 41;
const ICMPV6: u8 = 58;

/// What one address family claims. Every set of the nftables table is one field here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FamilyClaims<A: Ord> {
    /// `(protocol, vaddr, vport)` of services with a port.
    svc: BTreeSet<(u8, A, u16)>,
    /// `(protocol, vaddr)` of port-0 (every port) services.
    svc_all: BTreeSet<(u8, A)>,
    /// Every VIP.
    vip: BTreeSet<A>,
    /// `(protocol, daddr, dport)` of NAT dests with a port.
    nat: BTreeSet<(u8, A, u16)>,
    /// `(protocol, daddr)` of NAT dests of port-0 services.
    nat_all: BTreeSet<(u8, A)>,
    /// Every NAT dest address.
    nat_addr: BTreeSet<A>,
    /// The director's own addresses.
    local: BTreeSet<A>,
}

impl<A: Ord> Default for FamilyClaims<A> {
    fn default() -> Self {
        FamilyClaims {
            svc: BTreeSet::new(),
            svc_all: BTreeSet::new(),
            vip: BTreeSet::new(),
            nat: BTreeSet::new(),
            nat_all: BTreeSet::new(),
            nat_addr: BTreeSet::new(),
            local: BTreeSet::new(),
        }
    }
}

/// What the director claims from the host stack: built from the director's services, its NAT
/// dests and (optionally) its own addresses. [`Claims::claims`] says whether the nftables table
/// made from it drops a frame; [`NftTable`] installs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Claims {
    v4: FamilyClaims<Ipv4Addr>,
    v6: FamilyClaims<Ipv6Addr>,
}

impl Claims {
    /// Claims nothing.
    pub(crate) fn new() -> Claims {
        Claims::default()
    }

    /// The claims of a director: every service (protocol, VIP, port; port 0 = every port) and
    /// every live NAT dest (protocol, address, port).
    pub(crate) fn from_director(d: &Director) -> Claims {
        let mut c = Claims::new();
        for svc in d.services() {
            let key = svc.spec.key;
            let proto = key.protocol.number();
            c.add_service(proto, key.addr, key.port);
            for dv in &svc.dests {
                if dv.dest.fwd == FwdMethod::Masq {
                    c.add_nat_dest(proto, dv.dest.addr, dv.dest.port);
                }
            }
        }
        c
    }

    /// Also claim packet-too-big errors about tunnel packets sent from these (the director's
    /// own) addresses, and leave to the host what the NAT dests send to them.
    pub(crate) fn with_local_addrs(mut self, addrs: &[IpAddr]) -> Claims {
        for a in addrs {
            match *a {
                IpAddr::V4(a) => self.v4.local.insert(a),
                IpAddr::V6(a) => self.v6.local.insert(a),
            };
        }
        self
    }

    /// Claim `protocol` (6 or 17) to `vaddr:vport`; port 0 claims every port.
    pub(crate) fn add_service(&mut self, protocol: u8, vaddr: IpAddr, vport: u16) {
        fn add<A: Ord + Copy>(f: &mut FamilyClaims<A>, p: u8, a: A, port: u16) {
            f.vip.insert(a);
            if port == 0 {
                f.svc_all.insert((p, a));
            } else {
                f.svc.insert((p, a, port));
            }
        }
        match vaddr {
            IpAddr::V4(a) => add(&mut self.v4, protocol, a, vport),
            IpAddr::V6(a) => add(&mut self.v6, protocol, a, vport),
        }
    }

    /// Claim what the NAT dest `daddr:dport` sends (its replies, their fragments, ICMP errors
    /// about packets sent to it); port 0 means every source port.
    pub(crate) fn add_nat_dest(&mut self, protocol: u8, daddr: IpAddr, dport: u16) {
        fn add<A: Ord + Copy>(f: &mut FamilyClaims<A>, p: u8, a: A, port: u16) {
            f.nat_addr.insert(a);
            if port == 0 {
                f.nat_all.insert((p, a));
            } else {
                f.nat.insert((p, a, port));
            }
        }
        match daddr {
            IpAddr::V4(a) => add(&mut self.v4, protocol, a, dport),
            IpAddr::V6(a) => add(&mut self.v6, protocol, a, dport),
        }
    }

    /// True when the nftables table built from these claims drops this Ethernet frame (one
    /// 802.1Q or 802.1ad tag allowed). Never panics, never allocates.
    pub(crate) fn claims(&self, frame: &[u8]) -> bool {
        match link_layer(frame) {
            Some((ETH_P_IP, net)) => {
                let p = Pkt {
                    net,
                    l4: ipv4_pktinfo(net),
                };
                RULES
                    .iter()
                    .any(|r| r.matches::<Ipv4Addr>(&self.v4, &p) == Some(true))
            }
            Some((ETH_P_IPV6, net)) => {
                let p = Pkt {
                    net,
                    l4: ipv6_pktinfo(net),
                };
                RULES
                    .iter()
                    .any(|r| r.matches::<Ipv6Addr>(&self.v6, &p) == Some(true))
            }
            _ => false,
        }
    }
}

// ---- the rules, shared by the script and the userspace twin -----------------------------------

/// The address family specifics of the rules.
trait Family: Ord + Copy + std::fmt::Display {
    /// Set-name suffix and `meta protocol` keyword: `4`/`ip`, `6`/`ip6`.
    const SUFFIX: &'static str;
    /// `ip` or `ip6` (protocol keyword and header expression).
    const IP: &'static str;
    /// nftables address type.
    const ADDR_TYPE: &'static str;
    /// Address length in bytes.
    const LEN: usize;
    /// Offsets of the source and destination addresses in the IP header.
    const SADDR: usize;
    /// See [`Family::SADDR`].
    const DADDR: usize;
    /// ICMP protocol number and its nftables name.
    const ICMP: (u8, &'static str);
    /// nftables ICMP type expression.
    const ICMP_TYPE: &'static str;
    /// ICMP error types the dataplane relays (never redirects).
    const ERRORS: &'static [u8];
    /// Echo request type.
    const ECHO: u8;
    /// Packet-too-big: type and, for v4, code.
    const TOO_BIG: (u8, Option<u8>);
    /// The version nibble of a quoted header, as `@th,64,8 & 0xf0`.
    const VERSION: u8;
    /// Offset in the ICMP message of the quoted header's protocol / next header.
    const Q_PROTO: usize;
    /// Offset in the ICMP message of the quoted header's source address.
    const Q_SRC: usize;
    /// Offset in the ICMP message of the quoted header's destination address.
    const Q_DST: usize;
    /// Reads an address.
    fn from_slice(b: &[u8]) -> Option<Self>;
    /// The address as a big-endian integer literal for raw-payload sets.
    fn hex(&self) -> String;
    /// The rule text matching any fragment (first or later).
    fn fragment_expr() -> &'static str;
    /// Any fragment, as the rule's expressions see it.
    fn is_fragment(p: &Pkt<'_>) -> Option<bool>;
}

impl Family for Ipv4Addr {
    const SUFFIX: &'static str = "4";
    const IP: &'static str = "ip";
    const ADDR_TYPE: &'static str = "ipv4_addr";
    const LEN: usize = 4;
    const SADDR: usize = 12;
    const DADDR: usize = 16;
    const ICMP: (u8, &'static str) = (ICMP, "icmp");
    const ICMP_TYPE: &'static str = "icmp type";
    const ERRORS: &'static [u8] = &[3, 4, 11, 12];
    const ECHO: u8 = 8;
    const TOO_BIG: (u8, Option<u8>) = (3, Some(4));
    const VERSION: u8 = 0x40;
    const Q_PROTO: usize = 8 + 9;
    const Q_SRC: usize = 8 + 12;
    const Q_DST: usize = 8 + 16;
    fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from)
    }
    fn hex(&self) -> String {
        format!("0x{:08x}", u32::from(*self))
    }
    fn fragment_expr() -> &'static str {
        // More-fragments flag or a fragment offset (RFC 791).
        "ip frag-off & 0x3fff != 0"
    }
    fn is_fragment(p: &Pkt<'_>) -> Option<bool> {
        Some(be16(p.nh(6, 2)?) & 0x3fff != 0)
    }
}

impl Family for Ipv6Addr {
    const SUFFIX: &'static str = "6";
    const IP: &'static str = "ip6";
    const ADDR_TYPE: &'static str = "ipv6_addr";
    const LEN: usize = 16;
    const SADDR: usize = 8;
    const DADDR: usize = 24;
    const ICMP: (u8, &'static str) = (ICMPV6, "ipv6-icmp");
    const ICMP_TYPE: &'static str = "icmpv6 type";
    const ERRORS: &'static [u8] = &[1, 2, 3, 4];
    const ECHO: u8 = 128;
    const TOO_BIG: (u8, Option<u8>) = (2, None);
    const VERSION: u8 = 0x60;
    const Q_PROTO: usize = 8 + 6;
    const Q_SRC: usize = 8 + 8;
    const Q_DST: usize = 8 + 24;
    fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from)
    }
    fn hex(&self) -> String {
        format!("0x{:032x}", u128::from(*self))
    }
    fn fragment_expr() -> &'static str {
        // A fragment header right after the fixed header (where senders put it, RFC 8200
        // §4.1 puts only hop-by-hop, destination and routing headers before it), with an offset
        // or the M flag. `exthdr frag exists` cannot be used: the kernel's header walk does not
        // find the fragment header of a later fragment.
        "ip6 nexthdr 44 @nh,336,16 & 0xfff9 != 0"
    }
    fn is_fragment(p: &Pkt<'_>) -> Option<bool> {
        Some(p.nh(6, 1)?[0] == 44 && be16(p.nh(42, 2)?) & 0xfff9 != 0)
    }
}

/// One rule of the ingress chain, per address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// TCP/UDP to a virtual service with a port.
    Service,
    /// Anything of the service's protocol to a port-0 service.
    ServiceAllPorts,
    /// Fragments to a VIP.
    VipFragment,
    /// ICMP errors and echo requests to a VIP.
    VipIcmp,
    /// NAT dests' replies.
    NatReply,
    /// NAT dests' replies, port-0 services.
    NatReplyAllPorts,
    /// NAT dests' fragments.
    NatFragment,
    /// ICMP errors quoting a packet sent to a NAT dest.
    NatIcmpError,
    /// Packet-too-big errors about the director's own tunnel packets.
    TunnelTooBig,
}

const RULES: [Rule; 9] = [
    Rule::Service,
    Rule::ServiceAllPorts,
    Rule::VipFragment,
    Rule::VipIcmp,
    Rule::NatReply,
    Rule::NatReplyAllPorts,
    Rule::NatFragment,
    Rule::NatIcmpError,
    Rule::TunnelTooBig,
];

fn list(v: &[u8]) -> String {
    let items: Vec<String> = v.iter().map(u8::to_string).collect();
    format!("{{ {} }}", items.join(", "))
}

impl Rule {
    /// The rule's nftables text for family `A`.
    fn text<A: Family>(self) -> String {
        let (ip, s) = (A::IP, A::SUFFIX);
        let head = format!("meta protocol {ip}");
        let not_local = format!("{ip} daddr != @local{s}");
        let icmp = format!("meta l4proto {}", A::ICMP.1);
        let version = format!("@th,64,8 & 0xf0 == 0x{:02x}", A::VERSION);
        let raw = |off: usize, len: usize| format!("@th,{},{}", off * 8, len * 8);
        match self {
            Rule::Service => format!("{head} meta l4proto . {ip} daddr . th dport @svc{s} drop"),
            Rule::ServiceAllPorts => format!("{head} meta l4proto . {ip} daddr @svc{s}_all drop"),
            Rule::VipFragment => format!("{head} {ip} daddr @vip{s} {} drop", A::fragment_expr()),
            Rule::VipIcmp => {
                let mut types = A::ERRORS.to_vec();
                types.push(A::ECHO);
                types.sort_unstable();
                format!(
                    "{head} {ip} daddr @vip{s} {icmp} {} {} drop",
                    A::ICMP_TYPE,
                    list(&types)
                )
            }
            Rule::NatReply => {
                format!("{head} {not_local} meta l4proto . {ip} saddr . th sport @nat{s} drop")
            }
            Rule::NatReplyAllPorts => {
                format!("{head} {not_local} meta l4proto . {ip} saddr @nat{s}_all drop")
            }
            Rule::NatFragment => format!(
                "{head} {not_local} {ip} saddr @nat{s}_addr {} drop",
                A::fragment_expr()
            ),
            Rule::NatIcmpError => format!(
                "{head} {not_local} {icmp} {} {} {version} {} @nat{s}_quoted drop",
                A::ICMP_TYPE,
                list(A::ERRORS),
                raw(A::Q_DST, A::LEN)
            ),
            Rule::TunnelTooBig => {
                let (t, code) = A::TOO_BIG;
                let code = match code {
                    Some(c) => format!(" icmp code {c}"),
                    None => String::new(),
                };
                format!(
                    "{head} {icmp} {} {t}{code} {version} {} {} {} @local{s}_quoted drop",
                    A::ICMP_TYPE,
                    raw(A::Q_PROTO, 1),
                    list(&[IPIP, IPV6_IN_IP]),
                    raw(A::Q_SRC, A::LEN)
                )
            }
        }
    }

    /// Whether the rule matches: `Some(true)` when every expression matches, `Some(false)` or
    /// `None` (an expression could not load its operand, which nftables treats as no match)
    /// otherwise.
    fn matches<A: Family>(self, c: &FamilyClaims<A>, p: &Pkt<'_>) -> Option<bool> {
        let saddr = || p.nh(A::SADDR, A::LEN).and_then(A::from_slice);
        let daddr = || p.nh(A::DADDR, A::LEN).and_then(A::from_slice);
        let not_local = || daddr().map(|d| !c.local.contains(&d));
        let icmp = || Some(p.l4proto()? == A::ICMP.0);
        let icmp_type = || Some(p.th(0, 1)?[0]);
        let version = || Some(p.th(8, 1)?[0] & 0xf0 == A::VERSION);
        let quoted = |off: usize| p.th(off, A::LEN).and_then(A::from_slice);
        Some(match self {
            Rule::Service => {
                let key = (p.l4proto()?, daddr()?, be16(p.th(2, 2)?));
                c.svc.contains(&key)
            }
            Rule::ServiceAllPorts => c.svc_all.contains(&(p.l4proto()?, daddr()?)),
            Rule::VipFragment => c.vip.contains(&daddr()?) && A::is_fragment(p)?,
            Rule::VipIcmp => {
                c.vip.contains(&daddr()?)
                    && icmp()?
                    && (A::ERRORS.contains(&icmp_type()?) || icmp_type()? == A::ECHO)
            }
            Rule::NatReply => {
                not_local()? && c.nat.contains(&(p.l4proto()?, saddr()?, be16(p.th(0, 2)?)))
            }
            Rule::NatReplyAllPorts => not_local()? && c.nat_all.contains(&(p.l4proto()?, saddr()?)),
            Rule::NatFragment => {
                not_local()? && c.nat_addr.contains(&saddr()?) && A::is_fragment(p)?
            }
            Rule::NatIcmpError => {
                not_local()?
                    && icmp()?
                    && A::ERRORS.contains(&icmp_type()?)
                    && version()?
                    && c.nat_addr.contains(&quoted(A::Q_DST)?)
            }
            Rule::TunnelTooBig => {
                let (t, code) = A::TOO_BIG;
                icmp()?
                    && icmp_type()? == t
                    && code.map_or(Some(true), |code| Some(p.th(1, 1)?[0] == code))?
                    && version()?
                    && matches!(p.th(A::Q_PROTO, 1)?[0], IPIP | IPV6_IN_IP)
                    && c.local.contains(&quoted(A::Q_SRC)?)
            }
        })
    }
}

// ---- the kernel's view of a frame ----------------------------------------------------------

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

fn be16(b: &[u8]) -> u16 {
    match b {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

/// The network protocol and the bytes from the network header on, as the ingress hook sees
/// them: the receive path has already removed one VLAN tag (`skb_vlan_untag`).
fn link_layer(frame: &[u8]) -> Option<(u16, &[u8])> {
    let ethertype = be16(frame.get(12..14)?);
    if matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD) {
        return Some((be16(frame.get(16..18)?), frame.get(18..)?));
    }
    Some((ethertype, frame.get(14..)?))
}

/// The transport-layer facts nftables keeps per packet (`nft_pktinfo`).
#[derive(Debug, Clone, Copy)]
struct L4 {
    /// `meta l4proto`.
    proto: u8,
    /// Transport header offset from the network header.
    thoff: usize,
    /// Fragment offset: transport-header loads fail when it is not 0.
    fragoff: u16,
}

/// A frame from the network header on, with the packet info nftables derived for it.
struct Pkt<'a> {
    net: &'a [u8],
    l4: Option<L4>,
}

impl Pkt<'_> {
    /// `@nh,off*8,n*8`: a network-header load, bounded by the frame.
    fn nh(&self, off: usize, n: usize) -> Option<&[u8]> {
        self.net.get(off..off.checked_add(n)?)
    }

    /// `meta l4proto`.
    fn l4proto(&self) -> Option<u8> {
        self.l4.map(|l| l.proto)
    }

    /// `@th,off*8,n*8`: a transport-header load; refused without transport info and for later
    /// fragments.
    fn th(&self, off: usize, n: usize) -> Option<&[u8]> {
        let l4 = self.l4?;
        if l4.fragoff != 0 {
            return None;
        }
        let start = l4.thoff.checked_add(off)?;
        self.net.get(start..start.checked_add(n)?)
    }
}

/// IPv4 packet info as the netdev family validates it: version 4, IHL at least 5, the total
/// length within the frame and not shorter than the header. (The header checksum is not
/// checked at this hook.)
fn ipv4_pktinfo(net: &[u8]) -> Option<L4> {
    let h = net.get(..20)?;
    let ihl = usize::from(h[0] & 0x0f);
    if h[0] >> 4 != 4 || ihl < 5 {
        return None;
    }
    let len = usize::from(be16(&h[2..4]));
    let thoff = ihl * 4;
    if net.len() < len || len < thoff {
        return None;
    }
    Some(L4 {
        proto: h[9],
        thoff,
        fragoff: be16(&h[6..8]) & 0x1fff,
    })
}

/// Extension headers the kernel walks (`ipv6_ext_hdr`): hop-by-hop, routing, fragment, AH,
/// no-next-header and destination options.
fn ipv6_ext_hdr(nexthdr: u8) -> bool {
    matches!(nexthdr, 0 | 43 | 44 | 51 | 59 | 60)
}

/// IPv6 packet info as the netdev family validates it: version 6, the payload within the frame,
/// then the kernel's extension-header walk (`ipv6_find_hdr` with no target, stopping at AH).
fn ipv6_pktinfo(net: &[u8]) -> Option<L4> {
    let h = net.get(..40)?;
    if h[0] >> 4 != 6 || usize::from(be16(&h[4..6])) + 40 > net.len() {
        return None;
    }
    let mut nexthdr = h[6];
    let mut start = 40usize;
    loop {
        if !ipv6_ext_hdr(nexthdr) || nexthdr == 59 {
            break;
        }
        let hp = net.get(start..start.checked_add(2)?)?;
        let hdrlen = match nexthdr {
            43 => {
                // The routing header is read whole (4 bytes) even when not inspected.
                net.get(start..start.checked_add(4)?)?;
                (usize::from(hp[1]) + 1) * 8
            }
            44 => {
                let frag_off = be16(net.get(start + 2..start + 4)?) & !7;
                if frag_off != 0 {
                    // A later fragment: its protocol is the fragment header's next header, if
                    // that is final; the transport header is not there.
                    if !ipv6_ext_hdr(hp[0]) || hp[0] == 59 {
                        return Some(L4 {
                            proto: hp[0],
                            thoff: 0,
                            fragoff: frag_off,
                        });
                    }
                    return None;
                }
                8
            }
            51 => break,
            _ => (usize::from(hp[1]) + 1) * 8,
        };
        nexthdr = hp[0];
        start = start.checked_add(hdrlen)?;
    }
    if start > usize::from(u16::MAX) {
        return None;
    }
    Some(L4 {
        proto: nexthdr,
        thoff: start,
        fragoff: 0,
    })
}

// ---- the table ------------------------------------------------------------------------------

/// The sets of one family: name, type declaration, elements.
fn sets<A: Family>(c: &FamilyClaims<A>) -> Vec<(String, String, Vec<String>)> {
    let s = A::SUFFIX;
    let t = A::ADDR_TYPE;
    let proto = |p: u8| match p {
        TCP => "tcp".to_owned(),
        UDP => "udp".to_owned(),
        p => p.to_string(),
    };
    let ports = |v: &BTreeSet<(u8, A, u16)>| {
        v.iter()
            .map(|(p, a, port)| format!("{} . {a} . {port}", proto(*p)))
            .collect()
    };
    let all = |v: &BTreeSet<(u8, A)>| {
        v.iter()
            .map(|(p, a)| format!("{} . {a}", proto(*p)))
            .collect()
    };
    let addrs = |v: &BTreeSet<A>| v.iter().map(ToString::to_string).collect();
    let hex = |v: &BTreeSet<A>| v.iter().map(Family::hex).collect();
    let raw = |off: usize| format!("typeof @th,{},{}", off * 8, A::LEN * 8);
    vec![
        (
            format!("svc{s}"),
            format!("type inet_proto . {t} . inet_service"),
            ports(&c.svc),
        ),
        (
            format!("svc{s}_all"),
            format!("type inet_proto . {t}"),
            all(&c.svc_all),
        ),
        (format!("vip{s}"), format!("type {t}"), addrs(&c.vip)),
        (
            format!("nat{s}"),
            format!("type inet_proto . {t} . inet_service"),
            ports(&c.nat),
        ),
        (
            format!("nat{s}_all"),
            format!("type inet_proto . {t}"),
            all(&c.nat_all),
        ),
        (
            format!("nat{s}_addr"),
            format!("type {t}"),
            addrs(&c.nat_addr),
        ),
        (format!("nat{s}_quoted"), raw(A::Q_DST), hex(&c.nat_addr)),
        (format!("local{s}"), format!("type {t}"), addrs(&c.local)),
        (format!("local{s}_quoted"), raw(A::Q_SRC), hex(&c.local)),
    ]
}

fn all_sets(c: &Claims) -> Vec<(String, String, Vec<String>)> {
    let mut v = sets(&c.v4);
    v.extend(sets(&c.v6));
    v
}

/// `add element` lines for every non-empty set.
fn elements(out: &mut String, name: &str, sets: &[(String, String, Vec<String>)]) {
    for (set, _, elems) in sets {
        if !elems.is_empty() {
            let _ = writeln!(
                out,
                "add element netdev {name} {set} {{ {} }}",
                elems.join(", ")
            );
        }
    }
}

fn check_table_name(name: &str) -> Result<(), HostError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(HostError::InvalidTableName(name.to_owned()))
    }
}

fn check_device(dev: &str) -> Result<(), HostError> {
    // What the kernel's dev_valid_name() accepts, minus what cannot sit in a quoted nft string.
    let ok = (1..=15).contains(&dev.len())
        && dev != "."
        && dev != ".."
        && dev
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'"' | b'\\'));
    if ok {
        Ok(())
    } else {
        Err(HostError::InvalidInterface(dev.to_owned()))
    }
}

/// Runs `nft -f -` with `script` on standard input: one atomic transaction.
fn run_nft(script: &str) -> Result<(), HostError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(HostError::NftSpawn)?;
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(script.as_bytes()),
        None => Err(std::io::Error::other("no stdin pipe")),
    };
    // nft reads its whole input before it writes anything, so the pipes cannot deadlock.
    let out = child.wait_with_output().map_err(HostError::NftSpawn)?;
    if !out.status.success() {
        return Err(HostError::NftFailed {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    written.map_err(HostError::NftSpawn)
}

/// The director's nftables table (`netdev` family, one ingress chain on its interfaces).
/// Removed by [`NftTable::remove`], or best-effort when dropped.
#[derive(Debug)]
pub(crate) struct NftTable {
    name: String,
    installed: bool,
}

impl NftTable {
    /// The script that (re)creates the table `name` bound to `devices` with `claims`: it
    /// first creates and deletes the table, so one left by a crashed run is replaced in the
    /// same transaction.
    pub(crate) fn script(
        name: &str,
        devices: &[String],
        claims: &Claims,
    ) -> Result<String, HostError> {
        check_table_name(name)?;
        if devices.is_empty() {
            return Err(HostError::NoInterfaces);
        }
        for d in devices {
            check_device(d)?;
        }
        let sets = all_sets(claims);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# rvsd: what the director claims from the host stack (generated)"
        );
        let _ = writeln!(s, "add table netdev {name}");
        let _ = writeln!(s, "delete table netdev {name}");
        let _ = writeln!(s, "table netdev {name} {{");
        for (set, decl, _) in &sets {
            let _ = writeln!(s, "\tset {set} {{ {decl}; }}");
        }
        let devs: Vec<String> = devices.iter().map(|d| format!("\"{d}\"")).collect();
        let _ = writeln!(s, "\tchain ingress {{");
        let _ = writeln!(
            s,
            "\t\ttype filter hook ingress devices = {{ {} }} priority {PRIORITY}; policy accept;",
            devs.join(", ")
        );
        for r in RULES {
            let _ = writeln!(s, "\t\t{}", r.text::<Ipv4Addr>());
        }
        for r in RULES {
            let _ = writeln!(s, "\t\t{}", r.text::<Ipv6Addr>());
        }
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "}}");
        elements(&mut s, name, &sets);
        Ok(s)
    }

    /// The script that replaces every set's elements with `claims`.
    pub(crate) fn update_script(name: &str, claims: &Claims) -> Result<String, HostError> {
        check_table_name(name)?;
        let sets = all_sets(claims);
        let mut s = String::new();
        for (set, _, _) in &sets {
            let _ = writeln!(s, "flush set netdev {name} {set}");
        }
        elements(&mut s, name, &sets);
        Ok(s)
    }

    /// Installs the table `name` on `devices`, replacing one left by a crashed run.
    pub(crate) fn install(
        name: &str,
        devices: &[String],
        claims: &Claims,
    ) -> Result<NftTable, HostError> {
        run_nft(&NftTable::script(name, devices, claims)?)?;
        Ok(NftTable {
            name: name.to_owned(),
            installed: true,
        })
    }

    /// The table's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Replaces what is claimed, atomically (the rules stay, the sets are refilled).
    pub(crate) fn update(&mut self, claims: &Claims) -> Result<(), HostError> {
        run_nft(&NftTable::update_script(&self.name, claims)?)
    }

    /// Removes the table.
    pub(crate) fn remove(mut self) -> Result<(), HostError> {
        self.installed = false;
        NftTable::remove_by_name(&self.name)
    }

    /// Removes the table `name` if it exists (what a crashed run left behind).
    pub(crate) fn remove_by_name(name: &str) -> Result<(), HostError> {
        check_table_name(name)?;
        // Creating it first makes the deletion succeed whether or not it existed.
        run_nft(&format!(
            "add table netdev {name}\ndelete table netdev {name}\n"
        ))
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        if self.installed
            && let Err(e) = NftTable::remove_by_name(&self.name)
        {
            eprintln!("rvsd: removing nftables table {}: {e}", self.name);
        }
    }
}
