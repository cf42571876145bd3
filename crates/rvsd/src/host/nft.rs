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
    /// every NAT dest, live or in the trash (protocol, address, port).
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
        // A deleted NAT dest's connections live on until they time out (or the dest comes
        // back): its replies must still be claimed, else the host would forward them to the
        // client un-translated and the client's RST would kill the dest's connection.
        for (protocol, dest) in d.trashed_dests() {
            if dest.fwd == FwdMethod::Masq {
                c.add_nat_dest(protocol.number(), dest.addr, dest.port);
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

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, PacketBuilder};

    const DMAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const SMAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn v4(s: &str) -> [u8; 4] {
        s.parse::<Ipv4Addr>().unwrap().octets()
    }
    fn v6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    const VIP: &str = "192.0.2.10";
    const VIP_ALL: &str = "192.0.2.11";
    const LOCAL: &str = "192.0.2.1";
    const CLIENT: &str = "203.0.113.7";
    const RIP: &str = "198.51.100.5";
    const RIP_UDP_ALL: &str = "198.51.100.6";
    const ROUTER: &str = "198.51.100.254";
    const VIP6: &str = "2001:db8::10";
    const VIP6_ALL: &str = "2001:db8::11";
    const LOCAL6: &str = "2001:db8::1";
    const CLIENT6: &str = "2001:db8:2::7";
    const RIP6: &str = "2001:db8:1::5";

    /// The claims every sample frame is judged against.
    fn sample_claims() -> Claims {
        let mut c = Claims::new();
        c.add_service(TCP, ip(VIP), 80);
        c.add_service(UDP, ip(VIP), 53);
        c.add_service(TCP, ip(VIP_ALL), 0);
        c.add_service(TCP, ip(VIP6), 80);
        c.add_service(UDP, ip(VIP6_ALL), 0);
        c.add_nat_dest(TCP, ip(RIP), 8080);
        c.add_nat_dest(UDP, ip(RIP_UDP_ALL), 0);
        c.add_nat_dest(TCP, ip(RIP6), 8080);
        c.with_local_addrs(&[ip(LOCAL), ip(LOCAL6)])
    }

    fn tcp4(src: &str, dst: &str, sp: u16, dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(SMAC, DMAC)
            .ipv4(v4(src), v4(dst), 64)
            .tcp(sp, dp, 1, 1000)
            .write(&mut v, b"payload")
            .unwrap();
        v
    }
    fn udp4(src: &str, dst: &str, sp: u16, dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(SMAC, DMAC)
            .ipv4(v4(src), v4(dst), 64)
            .udp(sp, dp)
            .write(&mut v, b"payload")
            .unwrap();
        v
    }
    /// An IPv4 packet (no Ethernet header) for quotes.
    fn quote4(src: &str, dst: &str, proto: u8, sp: u16, dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        let b = PacketBuilder::ipv4(v4(src), v4(dst), 64);
        match proto {
            TCP => b.tcp(sp, dp, 1, 1000).write(&mut v, &[]).unwrap(),
            UDP => b.udp(sp, dp).write(&mut v, &[]).unwrap(),
            p => b.write(&mut v, IpNumber(p), &[0x45; 20]).unwrap(),
        }
        v
    }
    fn icmp4(src: &str, dst: &str, t: u8, c: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(SMAC, DMAC)
            .ipv4(v4(src), v4(dst), 64)
            .icmpv4_raw(t, c, rest)
            .write(&mut v, payload)
            .unwrap();
        v
    }
    fn tcp6(src: &str, dst: &str, sp: u16, dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(SMAC, DMAC)
            .ipv6(v6(src), v6(dst), 64)
            .tcp(sp, dp, 1, 1000)
            .write(&mut v, b"payload")
            .unwrap();
        v
    }
    fn udp6(src: &str, dst: &str, sp: u16, dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(SMAC, DMAC)
            .ipv6(v6(src), v6(dst), 64)
            .udp(sp, dp)
            .write(&mut v, b"payload")
            .unwrap();
        v
    }
    fn quote6(src: &str, dst: &str, proto: u8, sp: u16, dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        let b = PacketBuilder::ipv6(v6(src), v6(dst), 64);
        match proto {
            TCP => b.tcp(sp, dp, 1, 1000).write(&mut v, &[]).unwrap(),
            p => b.write(&mut v, IpNumber(p), &[0x60; 40]).unwrap(),
        }
        v
    }
    fn icmp6(src: &str, dst: &str, t: u8, c: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(SMAC, DMAC)
            .ipv6(v6(src), v6(dst), 255)
            .icmpv6_raw(t, c, rest)
            .write(&mut v, payload)
            .unwrap();
        v
    }
    fn vlan(f: &[u8], outer: u16) -> Vec<u8> {
        let mut v = f[..12].to_vec();
        v.extend_from_slice(&outer.to_be_bytes());
        v.extend_from_slice(&[0x00, 0x0a]);
        v.extend_from_slice(&f[12..]);
        v
    }
    fn ipv4_checksum(f: &mut [u8]) {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        f[24] = 0;
        f[25] = 0;
        let mut sum = 0u32;
        for c in f[14..14 + ihl].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }
    /// Sets the IPv4 fragment fields (offset in 8-byte units, more-fragments flag).
    fn frag4(mut f: Vec<u8>, offset: u16, more: bool) -> Vec<u8> {
        let v = offset | if more { 0x2000 } else { 0 };
        f[20..22].copy_from_slice(&v.to_be_bytes());
        ipv4_checksum(&mut f);
        f
    }
    fn tot_len4(mut f: Vec<u8>, delta: i32) -> Vec<u8> {
        let l = i32::from(u16::from_be_bytes([f[16], f[17]])) + delta;
        f[16..18].copy_from_slice(&(l as u16).to_be_bytes());
        ipv4_checksum(&mut f);
        f
    }
    fn ihl4(mut f: Vec<u8>, ihl: u8) -> Vec<u8> {
        f[14] = 0x40 | ihl;
        ipv4_checksum(&mut f);
        f
    }
    /// Adds 4 bytes of IPv4 options (NOPs).
    fn options4(f: Vec<u8>) -> Vec<u8> {
        let mut v = f[..34].to_vec();
        v.extend_from_slice(&[1, 1, 1, 1]);
        v.extend_from_slice(&f[34..]);
        v[14] = 0x46;
        let tot = u16::from_be_bytes([v[16], v[17]]) + 4;
        v[16..18].copy_from_slice(&tot.to_be_bytes());
        ipv4_checksum(&mut v);
        v
    }
    /// Inserts an IPv6 extension header right after the fixed header.
    fn ext6(f: Vec<u8>, kind: u8, frag: Option<(u16, bool)>) -> Vec<u8> {
        let next = f[20];
        let hdr: Vec<u8> = match kind {
            44 => {
                let (off, more) = frag.unwrap_or((0, false));
                let v = (off << 3) | u16::from(more);
                let [a, b] = v.to_be_bytes();
                vec![next, 0, a, b, 0, 0, 0, 7]
            }
            // AH: length in 4-byte units minus 2; 12 bytes + 4 of ICV.
            51 => vec![next, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
            43 => vec![next, 0, 0, 0, 0, 0, 0, 0],
            _ => vec![next, 0, 1, 4, 0, 0, 0, 0],
        };
        let mut v = f[..54].to_vec();
        v[20] = kind;
        let pl = u16::from_be_bytes([v[18], v[19]]) + hdr.len() as u16;
        v[18..20].copy_from_slice(&pl.to_be_bytes());
        v.extend_from_slice(&hdr);
        v.extend_from_slice(&f[54..]);
        v
    }
    fn arp_request(target: &str) -> Vec<u8> {
        let mut v = vec![0xff; 6];
        v.extend_from_slice(&SMAC);
        v.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        v.extend_from_slice(&SMAC);
        v.extend_from_slice(&v4(CLIENT));
        v.extend_from_slice(&[0; 6]);
        v.extend_from_slice(&v4(target));
        v
    }

    /// Frames with the claim the table must make for them under [`sample_claims`].
    pub(super) fn samples() -> Vec<(&'static str, Vec<u8>, bool)> {
        let q_to_rip = quote4(CLIENT, RIP, TCP, 40000, 8080);
        let mut s = vec![
            ("tcp to vip:80", tcp4(CLIENT, VIP, 40000, 80), true),
            ("tcp to vip:81", tcp4(CLIENT, VIP, 40000, 81), false),
            ("udp to vip:53", udp4(CLIENT, VIP, 40000, 53), true),
            ("udp to vip:80", udp4(CLIENT, VIP, 40000, 80), false),
            (
                "tcp to port-0 vip",
                tcp4(CLIENT, VIP_ALL, 40000, 2222),
                true,
            ),
            (
                "udp to tcp port-0 vip",
                udp4(CLIENT, VIP_ALL, 40000, 2222),
                false,
            ),
            (
                "tcp to a local address",
                tcp4(CLIENT, LOCAL, 40000, 80),
                false,
            ),
            (
                "echo request to vip",
                icmp4(CLIENT, VIP, 8, 0, [0, 1, 0, 1], b"ping"),
                true,
            ),
            (
                "echo reply to vip",
                icmp4(CLIENT, VIP, 0, 0, [0, 1, 0, 1], b"ping"),
                false,
            ),
            (
                "port unreachable to vip",
                icmp4(
                    ROUTER,
                    VIP,
                    3,
                    3,
                    [0; 4],
                    &quote4(VIP, CLIENT, UDP, 53, 40000),
                ),
                true,
            ),
            (
                "redirect to vip",
                icmp4(
                    ROUTER,
                    VIP,
                    5,
                    1,
                    v4(ROUTER),
                    &quote4(VIP, CLIENT, TCP, 80, 4000),
                ),
                false,
            ),
            (
                "timestamp to vip",
                icmp4(CLIENT, VIP, 13, 0, [0; 4], &[0; 12]),
                false,
            ),
            (
                "echo request to a local address",
                icmp4(CLIENT, LOCAL, 8, 0, [0; 4], b"x"),
                false,
            ),
            ("nat reply", tcp4(RIP, CLIENT, 8080, 40000), true),
            (
                "nat reply, other port",
                tcp4(RIP, CLIENT, 8081, 40000),
                false,
            ),
            (
                "nat dest to a local address (health check)",
                tcp4(RIP, LOCAL, 8080, 40000),
                false,
            ),
            (
                "udp from a port-0 nat dest",
                udp4(RIP_UDP_ALL, CLIENT, 1234, 5555),
                true,
            ),
            (
                "tcp from a udp port-0 nat dest",
                tcp4(RIP_UDP_ALL, CLIENT, 1234, 5555),
                false,
            ),
            (
                "port unreachable from a nat dest",
                icmp4(RIP, CLIENT, 3, 3, [0; 4], &q_to_rip),
                true,
            ),
            (
                "time exceeded on the dests' side",
                icmp4(ROUTER, CLIENT, 11, 0, [0; 4], &q_to_rip),
                true,
            ),
            (
                "error quoting a packet to another address",
                icmp4(
                    ROUTER,
                    CLIENT,
                    3,
                    1,
                    [0; 4],
                    &quote4(CLIENT, ROUTER, TCP, 1, 2),
                ),
                false,
            ),
            (
                "error about a nat dest, to a local address",
                icmp4(
                    ROUTER,
                    LOCAL,
                    3,
                    1,
                    [0; 4],
                    &quote4(LOCAL, RIP, TCP, 1, 8080),
                ),
                false,
            ),
            (
                "error about a nat dest, 8-byte quote",
                icmp4(ROUTER, CLIENT, 3, 1, [0; 4], &q_to_rip[..28]),
                true,
            ),
            (
                "error about a nat dest, quote shorter than its header",
                icmp4(ROUTER, CLIENT, 3, 1, [0; 4], &q_to_rip[..19]),
                false,
            ),
            (
                "frag-needed about our ip-in-ip packet",
                icmp4(
                    ROUTER,
                    LOCAL,
                    3,
                    4,
                    [0, 0, 5, 0xc8],
                    &quote4(LOCAL, RIP, IPIP, 0, 0),
                ),
                true,
            ),
            (
                "host unreachable about our ip-in-ip packet",
                icmp4(ROUTER, LOCAL, 3, 1, [0; 4], &quote4(LOCAL, RIP, IPIP, 0, 0)),
                false,
            ),
            (
                "frag-needed about our tcp packet",
                icmp4(
                    ROUTER,
                    LOCAL,
                    3,
                    4,
                    [0, 0, 5, 0xc8],
                    &quote4(LOCAL, RIP, TCP, 1, 2),
                ),
                false,
            ),
            (
                "later fragment to vip",
                frag4(udp4(CLIENT, VIP, 1, 9999), 185, false),
                true,
            ),
            (
                "first fragment to vip:9999",
                frag4(udp4(CLIENT, VIP, 1, 9999), 0, true),
                true,
            ),
            (
                "later fragment to a local address",
                frag4(udp4(CLIENT, LOCAL, 1, 9), 185, true),
                false,
            ),
            (
                "later fragment from a nat dest",
                frag4(tcp4(RIP, CLIENT, 1, 2), 100, false),
                true,
            ),
            (
                "fragment from a nat dest to a local address",
                frag4(tcp4(RIP, LOCAL, 8080, 2), 100, false),
                false,
            ),
            (
                "later fragment of an echo request to vip",
                frag4(icmp4(CLIENT, VIP, 8, 0, [0; 4], b"x"), 100, false),
                true,
            ),
            (
                "802.1q tcp to vip:80",
                vlan(&tcp4(CLIENT, VIP, 40000, 80), 0x8100),
                true,
            ),
            (
                "802.1q tcp to vip:81",
                vlan(&tcp4(CLIENT, VIP, 40000, 81), 0x8100),
                false,
            ),
            (
                "802.1ad tcp to vip:80",
                vlan(&tcp4(CLIENT, VIP, 40000, 80), 0x88a8),
                true,
            ),
            (
                "q-in-q tcp to vip:80",
                vlan(&vlan(&tcp4(CLIENT, VIP, 40000, 80), 0x8100), 0x88a8),
                false,
            ),
            ("arp request for vip", arp_request(VIP), false),
            (
                "ipv4 total length beyond the frame",
                tot_len4(tcp4(CLIENT, VIP, 1, 80), 10),
                false,
            ),
            (
                "fragment to vip, total length beyond the frame",
                tot_len4(frag4(tcp4(CLIENT, VIP, 1, 80), 10, false), 10),
                true,
            ),
            ("ihl 4", ihl4(tcp4(CLIENT, VIP, 1, 80), 4), false),
            (
                "ip options, tcp to vip:80",
                options4(tcp4(CLIENT, VIP, 1, 80)),
                true,
            ),
            ("tcp6 to vip:80", tcp6(CLIENT6, VIP6, 40000, 80), true),
            ("tcp6 to vip:81", tcp6(CLIENT6, VIP6, 40000, 81), false),
            (
                "udp6 to a port-0 vip",
                udp6(CLIENT6, VIP6_ALL, 1, 7777),
                true,
            ),
            (
                "tcp6 to a udp port-0 vip",
                tcp6(CLIENT6, VIP6_ALL, 1, 7777),
                false,
            ),
            (
                "tcp6 with hop-by-hop to vip:80",
                ext6(tcp6(CLIENT6, VIP6, 1, 80), 0, None),
                true,
            ),
            (
                "tcp6 with routing and destination options to vip:80",
                ext6(ext6(tcp6(CLIENT6, VIP6, 1, 80), 60, None), 43, None),
                true,
            ),
            (
                "tcp6 behind AH to vip:80",
                ext6(tcp6(CLIENT6, VIP6, 1, 80), 51, None),
                false,
            ),
            (
                "first fragment6 to vip:81",
                ext6(tcp6(CLIENT6, VIP6, 1, 81), 44, Some((0, true))),
                true,
            ),
            (
                "later fragment6 to vip",
                ext6(udp6(CLIENT6, VIP6, 1, 9999), 44, Some((100, false))),
                true,
            ),
            (
                "later fragment6 behind hop-by-hop to vip (not seen as a fragment)",
                ext6(
                    ext6(udp6(CLIENT6, VIP6, 1, 9999), 44, Some((100, false))),
                    0,
                    None,
                ),
                false,
            ),
            (
                "atomic fragment6 to vip:81",
                ext6(tcp6(CLIENT6, VIP6, 1, 81), 44, Some((0, false))),
                false,
            ),
            (
                "later fragment6 from a nat dest",
                ext6(tcp6(RIP6, CLIENT6, 8080, 1), 44, Some((100, false))),
                true,
            ),
            (
                "echo request6 to vip",
                icmp6(CLIENT6, VIP6, 128, 0, [0, 1, 0, 1], b"x"),
                true,
            ),
            (
                "echo reply6 to vip",
                icmp6(CLIENT6, VIP6, 129, 0, [0, 1, 0, 1], b"x"),
                false,
            ),
            (
                "packet too big to vip",
                icmp6(
                    ROUTER_6,
                    VIP6,
                    2,
                    0,
                    [0, 0, 5, 0],
                    &quote6(VIP6, CLIENT6, TCP, 80, 1),
                ),
                true,
            ),
            (
                "neighbour solicitation for vip, to vip",
                icmp6(CLIENT6, VIP6, 135, 0, [0; 4], &v6(VIP6)),
                false,
            ),
            (
                "neighbour solicitation for vip, multicast",
                icmp6(CLIENT6, "ff02::1:ff00:10", 135, 0, [0; 4], &v6(VIP6)),
                false,
            ),
            (
                "neighbour advertisement to vip",
                icmp6(CLIENT6, VIP6, 136, 0, [0; 4], &v6(CLIENT6)),
                false,
            ),
            (
                "mld report",
                icmp6("fe80::2", "ff02::16", 143, 0, [0; 4], &[0; 20]),
                false,
            ),
            (
                "router solicitation",
                icmp6("fe80::2", "ff02::2", 133, 0, [0; 4], &[]),
                false,
            ),
            (
                "router advertisement",
                icmp6("fe80::1", "ff02::1", 134, 0, [64, 0, 0, 0], &[0; 8]),
                false,
            ),
            (
                "redirect6 to vip",
                icmp6("fe80::1", VIP6, 137, 0, [0; 4], &[0; 32]),
                false,
            ),
            ("nat6 reply", tcp6(RIP6, CLIENT6, 8080, 40000), true),
            (
                "nat6 dest to a local address",
                tcp6(RIP6, LOCAL6, 8080, 40000),
                false,
            ),
            (
                "unreachable6 from a nat dest",
                icmp6(
                    RIP6,
                    CLIENT6,
                    1,
                    4,
                    [0; 4],
                    &quote6(CLIENT6, RIP6, TCP, 1, 8080),
                ),
                true,
            ),
            (
                "packet too big about our ipv6-in-ipv6 packet",
                icmp6(
                    ROUTER_6,
                    LOCAL6,
                    2,
                    0,
                    [0, 0, 5, 0],
                    &quote6(LOCAL6, RIP6, IPV6_IN_IP, 0, 0),
                ),
                true,
            ),
            (
                "ipv6 payload length beyond the frame",
                {
                    let mut f = tcp6(CLIENT6, VIP6, 1, 80);
                    f[19] += 8;
                    f
                },
                false,
            ),
            (
                "802.1q tcp6 to vip:80",
                vlan(&tcp6(CLIENT6, VIP6, 1, 80), 0x8100),
                true,
            ),
            (
                "ethernet padding after udp to vip:53",
                {
                    let mut f = udp4(CLIENT, VIP, 1, 53);
                    f.extend_from_slice(&[0; 10]);
                    f
                },
                true,
            ),
            (
                "ipv6 packet with the ipv4 ethertype",
                {
                    let mut f = tcp6(CLIENT6, VIP6, 1, 80);
                    f[12..14].copy_from_slice(&[0x08, 0x00]);
                    f
                },
                false,
            ),
        ];
        let mut many = tcp6(CLIENT6, VIP6, 1, 80);
        for _ in 0..13 {
            many = ext6(many, 60, None);
        }
        s.push((
            "tcp6 behind 13 destination-options headers to vip:80",
            many,
            true,
        ));
        s
    }

    const ROUTER_6: &str = "2001:db8:1::fe";

    #[test]
    fn samples_are_claimed_as_expected() {
        let c = sample_claims();
        let mut wrong = Vec::new();
        for (name, f, want) in samples() {
            if c.claims(&f) != want {
                wrong.push(name);
            }
        }
        assert!(wrong.is_empty(), "misjudged: {wrong:?}");
        assert!(
            !Claims::new().claims(&tcp4(CLIENT, VIP, 1, 80)),
            "empty claims"
        );
    }

    #[test]
    fn short_and_odd_frames_are_not_claimed_and_do_not_panic() {
        let c = sample_claims();
        for (_, f, _) in samples() {
            for n in 0..f.len() {
                let _ = c.claims(&f[..n]);
            }
        }
        assert!(!c.claims(&[]));
        assert!(!c.claims(&[0u8; 10]));
        // A claimed frame cut inside its TCP ports is no longer claimed.
        let f = tcp4(CLIENT, VIP, 40000, 80);
        assert!(!c.claims(&f[..14 + 20 + 3]));
    }

    #[test]
    fn claims_from_a_director() {
        use rvs_core::rules::parse_rules;
        use rvs_core::settings::Settings;
        let mut d = Director::new(Settings::default());
        let rules = parse_rules(
            "-A -t 192.0.2.10:80 -s rr\n\
             -a -t 192.0.2.10:80 -r 198.51.100.5:8080 -m\n\
             -a -t 192.0.2.10:80 -r 198.51.100.7:80 -g\n\
             -A -u 192.0.2.10:53\n\
             -A -t 192.0.2.11:0 -p 300\n\
             -A -t [2001:db8::10]:80\n\
             -a -t [2001:db8::10]:80 -r [2001:db8:1::5]:8080 -m\n\
             -A -u [2001:db8::11]:0 -p 300\n\
             -A -u 192.0.2.12:0 -p 300\n\
             -a -u 192.0.2.12:0 -r 198.51.100.6 -m\n",
        )
        .unwrap();
        for r in &rules {
            d.apply(r, 0).unwrap();
        }
        let mut want = sample_claims();
        want.add_service(UDP, ip("192.0.2.12"), 0);
        let got = Claims::from_director(&d).with_local_addrs(&[ip(LOCAL), ip(LOCAL6)]);
        assert_eq!(got, want);
        // The DR dest is not a NAT dest.
        assert!(!got.claims(&tcp4("198.51.100.7", CLIENT, 80, 1)));
    }

    #[test]
    fn script_golden() {
        let mut c = Claims::new();
        c.add_service(TCP, ip(VIP), 80);
        c.add_service(UDP, ip(VIP6_ALL), 0);
        c.add_nat_dest(TCP, ip(RIP), 8080);
        let c = c.with_local_addrs(&[ip(LOCAL)]);
        let s = NftTable::script("rvsd", &["eth0".to_owned(), "eth1".to_owned()], &c).unwrap();
        let want = GOLDEN;
        if s != want {
            eprintln!("{s}");
        }
        assert_eq!(s, want);
        let u = NftTable::update_script("rvsd", &Claims::new()).unwrap();
        assert_eq!(u.lines().count(), 18);
        assert!(u.lines().all(|l| l.starts_with("flush set netdev rvsd ")));
        let u = NftTable::update_script("rvsd", &c).unwrap();
        assert!(u.ends_with(
            "add element netdev rvsd local4_quoted { 0xc0000201 }\n\
             add element netdev rvsd svc6_all { udp . 2001:db8::11 }\n\
             add element netdev rvsd vip6 { 2001:db8::11 }\n"
        ));
    }

    #[test]
    fn names_are_checked() {
        let c = Claims::new();
        let dev = ["eth0".to_owned()];
        assert!(NftTable::script("rvsd", &dev, &c).is_ok());
        for bad in ["", "1x", "a b", "a;b", "a\"", &"x".repeat(65)] {
            assert!(
                matches!(
                    NftTable::script(bad, &dev, &c),
                    Err(HostError::InvalidTableName(_))
                ),
                "{bad:?}"
            );
        }
        for bad in [
            "",
            "a\"b",
            "a b",
            "a/b",
            "a:b",
            "..",
            "sixteen-chars-xx",
            "é",
        ] {
            assert!(
                matches!(
                    NftTable::script("rvsd", &[bad.to_owned()], &c),
                    Err(HostError::InvalidInterface(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            NftTable::script("rvsd", &[], &c),
            Err(HostError::NoInterfaces)
        ));
    }

    // ---- on the real kernel (root) ----------------------------------------------------------

    use crate::host::testns::{in_netns, lab_or_skip, pin_cpu0};
    use pnet_datalink::{Channel, Config, DataLinkReceiver, DataLinkSender};
    use rvs_lab::LinkOpts;
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    /// Generous overall deadline for things the kernel does "at once".
    const DEADLINE: Duration = Duration::from_secs(10);

    fn link_channel(
        dev: &str,
        bufsize: usize,
    ) -> (Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>) {
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == dev)
            .unwrap_or_else(|| panic!("no interface {dev}"));
        let cfg = Config {
            read_timeout: Some(Duration::from_millis(50)),
            read_buffer_size: bufsize,
            write_buffer_size: bufsize,
            ..Config::default()
        };
        match pnet_datalink::channel(&iface, cfg).unwrap() {
            Channel::Ethernet(tx, rx) => (tx, rx),
            _ => panic!("not an ethernet channel"),
        }
    }

    fn mac_of(dev: &str) -> [u8; 6] {
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == dev)
            .unwrap();
        iface.mac.unwrap().octets()
    }

    /// Reads frames until `done` says so or the deadline passes.
    fn read_until(rx: &mut dyn DataLinkReceiver, mut done: impl FnMut(&[u8]) -> bool) -> bool {
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if let Ok(f) = rx.next()
                && done(f)
            {
                return true;
            }
        }
        false
    }

    fn nft_out(args: &[&str]) -> String {
        let out = Command::new("nft").args(args).output().unwrap();
        assert!(out.status.success(), "nft {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A second ingress chain, after ours, recording the source MAC of every frame ours let
    /// through.
    fn install_probe(dev: &str) {
        run_nft(&format!(
            "table netdev probe {{\n\
             \tset seen {{ type ether_addr; flags dynamic; size 65535; }}\n\
             \tchain c {{ type filter hook ingress device \"{dev}\" priority 100; policy accept; \
             add @seen {{ ether saddr }}; }}\n}}\n"
        ))
        .unwrap();
    }

    fn probe_seen() -> HashSet<[u8; 6]> {
        let text = nft_out(&["list", "set", "netdev", "probe", "seen"]);
        text.split(|c: char| !(c.is_ascii_hexdigit() || c == ':'))
            .filter(|w| w.len() == 17)
            .filter_map(|w| {
                let b: Vec<u8> = w
                    .split(':')
                    .filter_map(|x| u8::from_str_radix(x, 16).ok())
                    .collect();
                <[u8; 6]>::try_from(b.as_slice()).ok()
            })
            .collect()
    }

    fn marker(i: usize) -> [u8; 6] {
        [0x02, 0xaa, 0, 0, (i >> 8) as u8, i as u8]
    }

    /// Every sample frame is sent through a real veth into a namespace holding the table: the
    /// kernel's verdict (seen or not by a later ingress chain) must be the twin's, and the
    /// packet tap must have seen every frame (taps run before the ingress hook).
    #[test]
    fn kernel_agrees_with_the_twin() {
        let Some(lab) = lab_or_skip("kernel_agrees_with_the_twin") else {
            return;
        };
        let dir = lab.host("dir").unwrap();
        let cli = lab.host("cli").unwrap();
        let link = lab.link(dir, cli, &LinkOpts::default()).unwrap();
        let (dir_ns, cli_ns) = (lab.netns_name(dir).unwrap(), lab.netns_name(cli).unwrap());
        let claims = sample_claims();
        let samples = samples();
        let sentinel = udp4(CLIENT, "192.0.2.99", 1, 2);
        let sentinel_mark = [0x02, 0xaa, 0, 0, 0xff, 0xff];

        let (tapped, seen) = in_netns(&dir_ns, || {
            let table =
                NftTable::install("rvsdtest", std::slice::from_ref(&link.a_dev), &claims).unwrap();
            install_probe(&link.a_dev);
            let dmac = mac_of(&link.a_dev);
            let (_tx, mut tap) = link_channel(&link.a_dev, 65536);
            in_netns(&cli_ns, || {
                pin_cpu0();
                let (mut tx, _rx) = link_channel(&link.b_dev, 65536);
                for (i, (_, f, _)) in samples.iter().enumerate() {
                    let mut f = f.clone();
                    f[..6].copy_from_slice(&dmac);
                    f[6..12].copy_from_slice(&marker(i));
                    tx.send_to(&f, None).unwrap().unwrap();
                }
                let mut f = sentinel.clone();
                f[..6].copy_from_slice(&dmac);
                f[6..12].copy_from_slice(&sentinel_mark);
                tx.send_to(&f, None).unwrap().unwrap();
            });
            let mut tapped = HashSet::new();
            let all = read_until(&mut *tap, |f| {
                if let Ok(m) = <[u8; 6]>::try_from(&f[6..12]) {
                    tapped.insert(m);
                }
                tapped.contains(&sentinel_mark)
                    && (0..samples.len()).all(|i| tapped.contains(&marker(i)))
            });
            assert!(all, "the tap missed frames");
            let end = Instant::now() + DEADLINE;
            let mut seen = probe_seen();
            while !seen.contains(&sentinel_mark) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
                seen = probe_seen();
            }
            assert!(seen.contains(&sentinel_mark), "the sentinel never passed");
            table.remove().unwrap();
            (tapped, seen)
        });
        let mut wrong = Vec::new();
        for (i, (name, f, want)) in samples.iter().enumerate() {
            assert!(tapped.contains(&marker(i)), "tap missed {name}");
            let kernel = !seen.contains(&marker(i));
            let twin = claims.claims(f);
            if kernel != twin || twin != *want {
                wrong.push(format!(
                    "{name}: kernel {kernel}, twin {twin}, expected {want}"
                ));
            }
        }
        assert!(wrong.is_empty(), "disagreements:\n{}", wrong.join("\n"));
        lab.close().unwrap();
    }

    fn net(s: &str) -> rvs_lab::IpNet {
        s.parse().unwrap()
    }

    fn tables() -> String {
        nft_out(&["list", "tables"])
    }

    /// An ICMP echo request (with checksum) for a raw socket.
    fn echo_request(id: u16) -> Vec<u8> {
        let mut m = vec![
            8,
            0,
            0,
            0,
            (id >> 8) as u8,
            id as u8,
            0,
            1,
            b'r',
            b'v',
            b's',
            b'd',
        ];
        let mut sum = 0u32;
        for c in m.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        m[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        m
    }

    /// Real traffic through the installed table: datagrams to a claimed VIP:port are not
    /// delivered (but the tap sees them), to an unclaimed port they are, ARP and neighbour
    /// discovery keep working, an echo request to the VIP is dropped while one to the host's
    /// own address is answered; `update` changes what is claimed; a stale table is replaced;
    /// `remove` leaves no table.
    #[test]
    fn table_steers_real_traffic() {
        use nix::sys::socket::{
            AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, recvfrom,
            sendto, setsockopt, socket, sockopt::ReceiveTimeout,
        };
        use nix::sys::time::TimeVal;
        use std::net::{SocketAddr, UdpSocket};
        use std::os::fd::AsRawFd;

        let Some(lab) = lab_or_skip("table_steers_real_traffic") else {
            return;
        };
        let dir = lab.host("dir").unwrap();
        let cli = lab.host("cli").unwrap();
        let link = lab
            .link(
                dir,
                cli,
                &LinkOpts {
                    addrs_a: vec![net("192.0.2.1/24"), net("2001:db8::1/64")],
                    addrs_b: vec![net("192.0.2.2/24"), net("2001:db8::2/64")],
                    ..LinkOpts::default()
                },
            )
            .unwrap();
        lab.addr(dir, &link.a_dev, net("192.0.2.10/32")).unwrap();
        lab.addr(dir, &link.a_dev, net("2001:db8::10/128")).unwrap();
        let (dir_ns, cli_ns) = (lab.netns_name(dir).unwrap(), lab.netns_name(cli).unwrap());
        let mut claims = Claims::new();
        claims.add_service(UDP, ip(VIP), 5000);
        claims.add_service(UDP, ip(VIP6), 5000);
        let devs = [link.a_dev.clone()];

        in_netns(&dir_ns, || {
            // A table left by a "crashed" run, with a chain of its own: replaced on install.
            run_nft(
                "table netdev rvsdtest {\n\tchain junk {\n\t\ttype filter hook ingress device \
                 \"eth0\" priority 0; policy accept;\n\t}\n}\n",
            )
            .unwrap();
            assert!(nft_out(&["list", "table", "netdev", "rvsdtest"]).contains("junk"));
            let mut table = NftTable::install("rvsdtest", &devs, &claims).unwrap();
            let listing = nft_out(&["list", "table", "netdev", "rvsdtest"]);
            assert!(!listing.contains("junk"), "stale table kept: {listing}");
            assert!(listing.contains("chain ingress"));

            let bind = |a: &str| {
                let s = UdpSocket::bind(a.parse::<SocketAddr>().unwrap()).unwrap();
                s.set_read_timeout(Some(DEADLINE)).unwrap();
                s
            };
            let claimed4 = bind("192.0.2.10:5000");
            let open4 = bind("192.0.2.10:5001");
            let claimed6 = bind("[2001:db8::10]:5000");
            let open6 = bind("[2001:db8::10]:5001");
            let (_tx, mut tap) = link_channel(&link.a_dev, 65536);

            let send = |payloads: &[(&str, &str)]| {
                in_netns(&cli_ns, || {
                    pin_cpu0();
                    let s4 = UdpSocket::bind("0.0.0.0:0").unwrap();
                    let s6 = UdpSocket::bind("[::]:0").unwrap();
                    for (to, what) in payloads {
                        let to: SocketAddr = to.parse().unwrap();
                        let s = if to.is_ipv4() { &s4 } else { &s6 };
                        s.send_to(what.as_bytes(), to).unwrap();
                    }
                });
            };
            // The claimed datagram goes first; the unclaimed one behind it arrives, so the
            // first would have too (same socket, same CPU, in order).
            send(&[
                ("192.0.2.10:5000", "claimed-v4"),
                ("192.0.2.10:5001", "open-v4"),
                ("[2001:db8::10]:5000", "claimed-v6"),
                ("[2001:db8::10]:5001", "open-v6"),
            ]);
            let mut buf = [0u8; 64];
            let n = open4.recv(&mut buf).expect("unclaimed v4 port (ARP works)");
            assert_eq!(&buf[..n], b"open-v4");
            let n = open6.recv(&mut buf).expect("unclaimed v6 port (NDP works)");
            assert_eq!(&buf[..n], b"open-v6");
            for s in [&claimed4, &claimed6] {
                s.set_nonblocking(true).unwrap();
                let e = s
                    .recv(&mut buf)
                    .expect_err("a claimed datagram reached the host");
                assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
            }
            let (mut saw4, mut saw6) = (false, false);
            let tapped = read_until(&mut *tap, |f| {
                let w = |p: &[u8]| f.windows(p.len()).any(|x| x == p);
                saw4 |= w(b"claimed-v4");
                saw6 |= w(b"claimed-v6");
                saw4 && saw6
            });
            assert!(tapped, "the tap did not see the claimed datagrams");

            // Echo requests: to the VIP (claimed: no answer), then to the host's own
            // address (answered). The VIP's answer would have come first.
            in_netns(&cli_ns, || {
                pin_cpu0();
                let fd = socket(
                    AddressFamily::Inet,
                    SockType::Raw,
                    SockFlag::empty(),
                    SockProtocol::Icmp,
                )
                .unwrap();
                setsockopt(&fd, ReceiveTimeout, &TimeVal::new(0, 200_000)).unwrap();
                for (i, to) in ["192.0.2.10:0", "192.0.2.1:0"].iter().enumerate() {
                    let a = SockaddrIn::from(to.parse::<std::net::SocketAddrV4>().unwrap());
                    sendto(
                        fd.as_raw_fd(),
                        &echo_request(i as u16),
                        &a,
                        MsgFlags::empty(),
                    )
                    .unwrap();
                }
                let end = Instant::now() + DEADLINE;
                let mut replies = Vec::new();
                while Instant::now() < end && !replies.contains(&v4("192.0.2.1")) {
                    let mut b = [0u8; 1500];
                    if let Ok((n, _)) = recvfrom::<SockaddrIn>(fd.as_raw_fd(), &mut b) {
                        let ihl = usize::from(b[0] & 0x0f) * 4;
                        if n > ihl && b[ihl] == 0 {
                            replies.push(<[u8; 4]>::try_from(&b[12..16]).unwrap());
                        }
                    }
                }
                assert!(
                    replies.contains(&v4("192.0.2.1")),
                    "no echo reply from the host"
                );
                assert!(
                    !replies.contains(&v4(VIP)),
                    "the VIP's echo request was not claimed"
                );
            });

            // Nothing claimed any more: the same datagram is delivered.
            table.update(&Claims::new()).unwrap();
            claimed4.set_nonblocking(false).unwrap();
            send(&[("192.0.2.10:5000", "after-update")]);
            let n = claimed4.recv(&mut buf).expect("delivered after update");
            assert_eq!(&buf[..n], b"after-update");

            table.remove().unwrap();
            assert!(!tables().contains("rvsdtest"), "table left: {}", tables());
        });
        lab.close().unwrap();
    }

    const GOLDEN: &str = r#"# rvsd: what the director claims from the host stack (generated)
add table netdev rvsd
delete table netdev rvsd
table netdev rvsd {
	set svc4 { type inet_proto . ipv4_addr . inet_service; }
	set svc4_all { type inet_proto . ipv4_addr; }
	set vip4 { type ipv4_addr; }
	set nat4 { type inet_proto . ipv4_addr . inet_service; }
	set nat4_all { type inet_proto . ipv4_addr; }
	set nat4_addr { type ipv4_addr; }
	set nat4_quoted { typeof @th,192,32; }
	set local4 { type ipv4_addr; }
	set local4_quoted { typeof @th,160,32; }
	set svc6 { type inet_proto . ipv6_addr . inet_service; }
	set svc6_all { type inet_proto . ipv6_addr; }
	set vip6 { type ipv6_addr; }
	set nat6 { type inet_proto . ipv6_addr . inet_service; }
	set nat6_all { type inet_proto . ipv6_addr; }
	set nat6_addr { type ipv6_addr; }
	set nat6_quoted { typeof @th,256,128; }
	set local6 { type ipv6_addr; }
	set local6_quoted { typeof @th,128,128; }
	chain ingress {
		type filter hook ingress devices = { "eth0", "eth1" } priority -500; policy accept;
		meta protocol ip meta l4proto . ip daddr . th dport @svc4 drop
		meta protocol ip meta l4proto . ip daddr @svc4_all drop
		meta protocol ip ip daddr @vip4 ip frag-off & 0x3fff != 0 drop
		meta protocol ip ip daddr @vip4 meta l4proto icmp icmp type { 3, 4, 8, 11, 12 } drop
		meta protocol ip ip daddr != @local4 meta l4proto . ip saddr . th sport @nat4 drop
		meta protocol ip ip daddr != @local4 meta l4proto . ip saddr @nat4_all drop
		meta protocol ip ip daddr != @local4 ip saddr @nat4_addr ip frag-off & 0x3fff != 0 drop
		meta protocol ip ip daddr != @local4 meta l4proto icmp icmp type { 3, 4, 11, 12 } @th,64,8 & 0xf0 == 0x40 @th,192,32 @nat4_quoted drop
		meta protocol ip meta l4proto icmp icmp type 3 icmp code 4 @th,64,8 & 0xf0 == 0x40 @th,136,8 { 4, 41 } @th,160,32 @local4_quoted drop
		meta protocol ip6 meta l4proto . ip6 daddr . th dport @svc6 drop
		meta protocol ip6 meta l4proto . ip6 daddr @svc6_all drop
		meta protocol ip6 ip6 daddr @vip6 ip6 nexthdr 44 @nh,336,16 & 0xfff9 != 0 drop
		meta protocol ip6 ip6 daddr @vip6 meta l4proto ipv6-icmp icmpv6 type { 1, 2, 3, 4, 128 } drop
		meta protocol ip6 ip6 daddr != @local6 meta l4proto . ip6 saddr . th sport @nat6 drop
		meta protocol ip6 ip6 daddr != @local6 meta l4proto . ip6 saddr @nat6_all drop
		meta protocol ip6 ip6 daddr != @local6 ip6 saddr @nat6_addr ip6 nexthdr 44 @nh,336,16 & 0xfff9 != 0 drop
		meta protocol ip6 ip6 daddr != @local6 meta l4proto ipv6-icmp icmpv6 type { 1, 2, 3, 4 } @th,64,8 & 0xf0 == 0x60 @th,256,128 @nat6_quoted drop
		meta protocol ip6 meta l4proto ipv6-icmp icmpv6 type 2 @th,64,8 & 0xf0 == 0x60 @th,112,8 { 4, 41 } @th,128,128 @local6_quoted drop
	}
}
add element netdev rvsd svc4 { tcp . 192.0.2.10 . 80 }
add element netdev rvsd vip4 { 192.0.2.10 }
add element netdev rvsd nat4 { tcp . 198.51.100.5 . 8080 }
add element netdev rvsd nat4_addr { 198.51.100.5 }
add element netdev rvsd nat4_quoted { 0xc6336405 }
add element netdev rvsd local4 { 192.0.2.1 }
add element netdev rvsd local4_quoted { 0xc0000201 }
add element netdev rvsd svc6_all { udp . 2001:db8::11 }
add element netdev rvsd vip6 { 2001:db8::11 }
"#;
}
