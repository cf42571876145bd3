//! Next hops from the kernel: the routing and neighbour tables over rtnetlink.
//!
//! The dataplane says "transmit this frame towards `next_hop`"; [`Resolver::resolve`] turns
//! that into the egress interface and the destination MAC the way the kernel would: a route
//! lookup (`RTM_GETROUTE`, as `ip route get` does) gives the output interface and the gateway
//! (or says the address is on-link), and the neighbour table gives the MAC of the gateway or
//! on-link address. A neighbour the kernel does not know (or only knows as incomplete) is
//! resolved by the kernel on our request (`RTM_NEWNEIGH` with `NTF_USE`, as `ip neigh replace …
//! use` does) while the caller gets [`Resolution::Pending`]. No configuration is involved.
//!
//! Answers are cached briefly ([`CACHE_TTL`]) so the per-packet cost is two hash lookups, and
//! dropped early when the kernel announces a change ([`Resolver::poll_events`]). Nothing here
//! panics on what the kernel sends; a message that does not parse is skipped.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::HostError;

/// How long a route or a usable neighbour is trusted without asking the kernel again.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(1);

/// How long a pending resolution is answered from the cache before the kernel is asked again.
pub(crate) const PENDING_RETRY: Duration = Duration::from_millis(100);

/// How long the kernel has to answer a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Most cached routes; the cache is emptied when it would grow beyond (clients are many).
const MAX_ROUTES: usize = 65_536;

/// Most notification datagrams one [`Resolver::poll_events`] call reads, so a storm of changes
/// cannot hold a worker; the rest wait for the next call (the fd stays readable).
const EVENT_BATCH: usize = 256;

/// Receive buffer: larger than any datagram the kernel sends on a route socket.
const RECV_BUF: usize = 64 * 1024;

/// rtnetlink multicast groups (`RTNLGRP_*`) whose changes invalidate the caches.
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// Where a frame for a next hop goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// Send it out of `ifindex` to `dst_mac`.
    Ready {
        /// Egress interface.
        ifindex: u32,
        /// MAC of the next hop (all zeros on interfaces without link-layer addresses).
        dst_mac: [u8; 6],
    },
    /// The kernel is resolving the next hop's MAC; ask again later.
    Pending,
    /// No route, not a unicast route, or the neighbour failed to answer.
    Unreachable,
}

/// An interface as the daemon needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InterfaceInfo {
    /// Interface index.
    pub(crate) ifindex: u32,
    /// Its MAC address (all zeros when it has none).
    pub(crate) mac: [u8; 6],
    /// Its MTU in bytes.
    pub(crate) mtu: u32,
}

/// When a request is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The first reply message.
    Reply,
    /// The kernel's acknowledgement.
    Ack,
    /// The end of a dump.
    Done,
}

/// A request socket: one request at a time, answered synchronously.
#[derive(Debug)]
struct Requests {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn nl_err(op: &'static str) -> impl FnOnce(io::Error) -> HostError {
    move |source| HostError::Netlink { op, source }
}

/// Calls `f` with each message of a datagram; malformed ones are skipped, a truncated one ends
/// the walk.
fn each_message(buf: &[u8], mut f: impl FnMut(NetlinkMessage<RouteNetlinkMessage>)) {
    let mut off = 0usize;
    while let Some(rest) = buf.get(off..) {
        let Ok(nb) = NetlinkBuffer::new_checked(rest) else {
            break;
        };
        let len = nb.length() as usize;
        let Some(msg) = rest.get(..len) else { break };
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg) {
            f(m);
        }
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        off = off.saturating_add(len.max(1).div_ceil(4) * 4);
    }
}

impl Requests {
    fn new() -> Result<Requests, HostError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(nl_err("socket"))?;
        sock.bind_auto().map_err(nl_err("bind"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(nl_err("connect"))?;
        sock.set_non_blocking(true)
            .map_err(nl_err("set non-blocking"))?;
        Ok(Requests {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends `msg` and collects the answers until `until`.
    fn request(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
        until: Until,
    ) -> Result<Vec<RouteNetlinkMessage>, HostError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send(&out, 0).map_err(nl_err(op))?;

        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut replies = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HostError::NoAnswer(op));
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(nl_err(op)(io::Error::from(e))),
            }
            self.buf.clear();
            match self.sock.recv(&mut self.buf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(nl_err(op)(e)),
            }
            let mut finished: Option<Result<(), HostError>> = None;
            each_message(&self.buf, |m| {
                // Answers to an earlier request that timed out are not ours.
                if m.header.sequence_number != seq || finished.is_some() {
                    return;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        finished = Some(match e.code {
                            None => Ok(()),
                            Some(_) => Err(HostError::Kernel {
                                op,
                                source: e.to_io(),
                            }),
                        });
                    }
                    NetlinkPayload::Done(_) => finished = Some(Ok(())),
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if until == Until::Reply {
                            finished = Some(Ok(()));
                        }
                    }
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    _ => {}
                }
            });
            if let Some(r) = finished {
                return r.map(|()| replies);
            }
        }
    }
}

fn family_of(a: IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Where a route lookup leads: out of `ifindex` to the neighbour `via` (the gateway, or the
/// address itself when on-link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hop {
    ifindex: u32,
    via: IpAddr,
}

#[derive(Debug, Clone, Copy)]
enum RouteEntry {
    Hop(Hop, Instant),
    Unreachable(Instant),
}

#[derive(Debug, Clone, Copy)]
enum NeighEntry {
    Ready([u8; 6], Instant),
    Pending(Instant),
    Failed(Instant),
}

/// What the neighbour table says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Neigh {
    /// Usable: the MAC, and whether the kernel should re-confirm it (STALE).
    Usable([u8; 6], bool),
    /// Being resolved.
    Incomplete,
    /// The kernel gave up.
    Failed,
    /// Not in the table, or in a state that needs a kick.
    Absent,
}

fn neigh_of(m: &NeighbourMessage) -> Neigh {
    let mac = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
        _ => None,
    });
    match m.header.state {
        NeighbourState::Reachable
        | NeighbourState::Delay
        | NeighbourState::Probe
        | NeighbourState::Permanent => mac.map_or(Neigh::Absent, |m| Neigh::Usable(m, false)),
        NeighbourState::Stale => mac.map_or(Neigh::Absent, |m| Neigh::Usable(m, true)),
        // Interfaces without link-layer addresses (point-to-point, tunnels).
        NeighbourState::Noarp => Neigh::Usable(mac.unwrap_or([0; 6]), false),
        NeighbourState::Incomplete => Neigh::Incomplete,
        NeighbourState::Failed => Neigh::Failed,
        _ => Neigh::Absent,
    }
}

/// Resolves next hops to (interface, MAC) from the kernel's tables. One per worker thread: it
/// owns its netlink sockets and a small cache.
#[derive(Debug)]
pub(crate) struct Resolver {
    req: Requests,
    events: Socket,
    event_buf: Vec<u8>,
    routes: HashMap<IpAddr, RouteEntry>,
    neighs: HashMap<(u32, IpAddr), NeighEntry>,
}

impl Resolver {
    /// Opens the request socket and the event socket (subscribed to link, address, route and
    /// neighbour changes) in the calling thread's network namespace.
    pub(crate) fn new() -> Result<Resolver, HostError> {
        let req = Requests::new()?;
        let mut events = Socket::new(NETLINK_ROUTE).map_err(nl_err("event socket"))?;
        events
            .bind(&SocketAddr::new(0, 0))
            .map_err(nl_err("bind event socket"))?;
        for g in [
            RTNLGRP_LINK,
            RTNLGRP_NEIGH,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_IPV6_ROUTE,
        ] {
            events
                .add_membership(g)
                .map_err(nl_err("subscribe to changes"))?;
        }
        events
            .set_non_blocking(true)
            .map_err(nl_err("set non-blocking"))?;
        Ok(Resolver {
            req,
            events,
            event_buf: Vec::with_capacity(RECV_BUF),
            routes: HashMap::new(),
            neighs: HashMap::new(),
        })
    }

    /// Where a frame for `next_hop` goes: a route lookup (gateway or on-link), then the
    /// neighbour table for that address. A missing or incomplete neighbour is resolved by the
    /// kernel at our request ([`Resolution::Pending`] meanwhile); one the kernel marked FAILED
    /// is [`Resolution::Unreachable`] (and asked for again once that answer expires).
    pub(crate) fn resolve(&mut self, next_hop: IpAddr, now: Instant) -> Resolution {
        match self.route(next_hop, now) {
            Some(hop) => self.neighbour(hop, now),
            None => Resolution::Unreachable,
        }
    }

    /// Reads the change notifications without blocking and forgets what they invalidate:
    /// a neighbour change that neighbour, a route, address or link change every route (and a
    /// link change every neighbour). A lost notification (the socket overflowed) forgets all.
    pub(crate) fn poll_events(&mut self) {
        for _ in 0..EVENT_BATCH {
            self.event_buf.clear();
            match self
                .events
                .recv(&mut self.event_buf, nix::libc::MSG_DONTWAIT)
            {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    self.routes.clear();
                    self.neighs.clear();
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
            let (routes, neighs) = (&mut self.routes, &mut self.neighs);
            each_message(&self.event_buf, |m| {
                let NetlinkPayload::InnerMessage(m) = m.payload else {
                    return;
                };
                match m {
                    RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
                        if let Some(a) = n.attributes.iter().find_map(|a| match a {
                            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                                Some(IpAddr::V4(*a))
                            }
                            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                                Some(IpAddr::V6(*a))
                            }
                            _ => None,
                        }) {
                            neighs.remove(&(n.header.ifindex, a));
                        }
                    }
                    RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_) => {
                        routes.clear();
                        neighs.clear();
                    }
                    RouteNetlinkMessage::NewRoute(_)
                    | RouteNetlinkMessage::DelRoute(_)
                    | RouteNetlinkMessage::NewAddress(_)
                    | RouteNetlinkMessage::DelAddress(_) => routes.clear(),
                    _ => {}
                }
            });
        }
    }

    /// The event socket, readable when [`Resolver::poll_events`] has work.
    pub(crate) fn event_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    fn route(&mut self, dst: IpAddr, now: Instant) -> Option<Hop> {
        match self.routes.get(&dst) {
            Some(RouteEntry::Hop(h, exp)) if *exp > now => return Some(*h),
            Some(RouteEntry::Unreachable(exp)) if *exp > now => return None,
            _ => {}
        }
        let hop = self.lookup_route(dst);
        if self.routes.len() >= MAX_ROUTES {
            self.routes.clear();
        }
        let exp = now + CACHE_TTL;
        let entry = match hop {
            Some(h) => RouteEntry::Hop(h, exp),
            None => RouteEntry::Unreachable(exp),
        };
        self.routes.insert(dst, entry);
        hop
    }

    /// `ip route get DST`: the output interface and gateway of a unicast route.
    fn lookup_route(&mut self, dst: IpAddr) -> Option<Hop> {
        let mut m = RouteMessage::default();
        m.header.address_family = family_of(dst);
        m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        let replies = self
            .req
            .request(
                "route lookup",
                RouteNetlinkMessage::GetRoute(m),
                0,
                Until::Reply,
            )
            .ok()?;
        replies.into_iter().find_map(|r| match r {
            RouteNetlinkMessage::NewRoute(r) => hop_of(&r, dst),
            _ => None,
        })
    }

    fn neighbour(&mut self, hop: Hop, now: Instant) -> Resolution {
        let key = (hop.ifindex, hop.via);
        match self.neighs.get(&key) {
            Some(NeighEntry::Ready(mac, exp)) if *exp > now => {
                return Resolution::Ready {
                    ifindex: hop.ifindex,
                    dst_mac: *mac,
                };
            }
            Some(NeighEntry::Pending(retry)) if *retry > now => return Resolution::Pending,
            Some(NeighEntry::Failed(exp)) if *exp > now => return Resolution::Unreachable,
            _ => {}
        }
        let was_failed = matches!(self.neighs.get(&key), Some(NeighEntry::Failed(_)));
        let (entry, res) = match self.lookup_neighbour(hop) {
            Ok(Neigh::Usable(mac, stale)) => {
                if stale {
                    // We bypass the stack, so the kernel never sees the entry used: ask it to
                    // confirm the MAC as it would for its own traffic (STALE → DELAY → PROBE).
                    let _ = self.kick(hop);
                }
                (
                    NeighEntry::Ready(mac, now + CACHE_TTL),
                    Resolution::Ready {
                        ifindex: hop.ifindex,
                        dst_mac: mac,
                    },
                )
            }
            Ok(Neigh::Incomplete) => (
                NeighEntry::Pending(now + PENDING_RETRY),
                Resolution::Pending,
            ),
            Ok(Neigh::Failed) => {
                if was_failed {
                    // Still failed after a while: let the kernel try again.
                    let _ = self.kick(hop);
                }
                (NeighEntry::Failed(now + CACHE_TTL), Resolution::Unreachable)
            }
            Ok(Neigh::Absent) => {
                let _ = self.kick(hop);
                (
                    NeighEntry::Pending(now + PENDING_RETRY),
                    Resolution::Pending,
                )
            }
            // The request socket failed: try again shortly.
            Err(_) => (
                NeighEntry::Pending(now + PENDING_RETRY),
                Resolution::Pending,
            ),
        };
        self.neighs.insert(key, entry);
        res
    }

    /// The neighbour table entry for `hop.via` on `hop.ifindex`.
    fn lookup_neighbour(&mut self, hop: Hop) -> Result<Neigh, HostError> {
        let mut m = NeighbourMessage::default();
        m.header.family = family_of(hop.via);
        m.header.ifindex = hop.ifindex;
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(hop.via)));
        match self.req.request(
            "neighbour lookup",
            RouteNetlinkMessage::GetNeighbour(m),
            0,
            Until::Reply,
        ) {
            Ok(replies) => Ok(replies
                .iter()
                .find_map(|r| match r {
                    RouteNetlinkMessage::NewNeighbour(n) => Some(neigh_of(n)),
                    _ => None,
                })
                .unwrap_or(Neigh::Absent)),
            Err(HostError::Kernel { source, .. })
                if source.raw_os_error() == Some(nix::libc::ENOENT) =>
            {
                Ok(Neigh::Absent)
            }
            Err(e) => Err(e),
        }
    }

    /// Asks the kernel to resolve (or re-confirm) a neighbour, creating the entry if needed:
    /// `ip neigh replace ADDR dev IF use`.
    fn kick(&mut self, hop: Hop) -> Result<(), HostError> {
        let mut m = NeighbourMessage::default();
        m.header.family = family_of(hop.via);
        m.header.ifindex = hop.ifindex;
        m.header.flags = NeighbourFlags::Use;
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(hop.via)));
        self.req
            .request(
                "neighbour resolution",
                RouteNetlinkMessage::NewNeighbour(m),
                NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                Until::Ack,
            )
            .map(drop)
    }
}

fn neigh_addr(a: IpAddr) -> NeighbourAddress {
    match a {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

/// The hop of a route the kernel returned for `dst`: unicast routes only.
fn hop_of(r: &RouteMessage, dst: IpAddr) -> Option<Hop> {
    if r.header.kind != RouteType::Unicast {
        return None;
    }
    let mut oif = None;
    let mut via = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(g) => via = route_addr(g),
            // An IPv4 route via an IPv6 gateway (RFC 5549).
            RouteAttribute::Via(RouteVia::Inet6(g)) => via = Some(IpAddr::V6(*g)),
            RouteAttribute::Via(RouteVia::Inet(g)) => via = Some(IpAddr::V4(*g)),
            _ => {}
        }
    }
    Some(Hop {
        ifindex: oif?,
        via: via.unwrap_or(dst),
    })
}

/// Index, MAC and MTU of the interface `name` in the calling thread's network namespace.
pub(crate) fn interface_info(name: &str) -> Result<InterfaceInfo, HostError> {
    let mut req = Requests::new()?;
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    let replies = match req.request(
        "interface lookup",
        RouteNetlinkMessage::GetLink(m),
        0,
        Until::Reply,
    ) {
        Err(HostError::Kernel { source, .. })
            if source.raw_os_error() == Some(nix::libc::ENODEV) =>
        {
            return Err(HostError::NoSuchInterface(name.to_owned()));
        }
        r => r?,
    };
    let Some(link) = replies.into_iter().find_map(|r| match r {
        RouteNetlinkMessage::NewLink(l) => Some(l),
        _ => None,
    }) else {
        return Err(HostError::NoSuchInterface(name.to_owned()));
    };
    let mut mac = [0u8; 6];
    let mut mtu = None;
    for a in &link.attributes {
        match a {
            LinkAttribute::Address(a) => {
                if let Ok(m) = <[u8; 6]>::try_from(a.as_slice()) {
                    mac = m;
                }
            }
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            _ => {}
        }
    }
    let Some(mtu) = mtu else {
        return Err(HostError::IncompleteInterface {
            name: name.to_owned(),
            what: "no MTU",
        });
    };
    Ok(InterfaceInfo {
        ifindex: link.header.index,
        mac,
        mtu,
    })
}

/// The addresses configured in the calling thread's network namespace, IPv4 then IPv6 in the
/// kernel's order, without loopback and IPv6 link-local addresses (the dataplane sources
/// tunnels and generated errors from these).
pub(crate) fn local_addrs() -> Result<Vec<IpAddr>, HostError> {
    let mut req = Requests::new()?;
    let replies = req.request(
        "address dump",
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        NLM_F_DUMP,
        Until::Done,
    )?;
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for r in replies {
        let RouteNetlinkMessage::NewAddress(a) = r else {
            continue;
        };
        // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on point-to-point links.
        let local = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Local(l) => Some(*l),
            _ => None,
        });
        let addr = local.or_else(|| {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(l) => Some(*l),
                _ => None,
            })
        });
        match addr {
            Some(IpAddr::V4(x)) if !x.is_loopback() && !v4.contains(&IpAddr::V4(x)) => {
                v4.push(IpAddr::V4(x));
            }
            Some(IpAddr::V6(x))
                if !x.is_loopback()
                    && !x.is_unicast_link_local()
                    && !v6.contains(&IpAddr::V6(x)) =>
            {
                v6.push(IpAddr::V6(x));
            }
            _ => {}
        }
    }
    v4.extend(v6);
    Ok(v4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testns::{in_netns, lab_or_skip};
    use rvs_lab::{IpNet, LinkOpts};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn garbage_from_the_kernel_is_skipped() {
        let mut n = 0;
        let mut buf = vec![0u8; 64];
        // A header claiming more than the datagram holds, then zero-length nonsense.
        buf[..4].copy_from_slice(&1000u32.to_ne_bytes());
        each_message(&buf, |_| n += 1);
        buf[..4].copy_from_slice(&0u32.to_ne_bytes());
        each_message(&buf, |_| n += 1);
        for len in 0..buf.len() {
            each_message(&buf[..len], |_| n += 1);
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let v: Vec<u8> = (0..96)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            each_message(&v, |_| n += 1);
        }
        assert_eq!(n, 0);
    }

    #[test]
    fn hops_from_route_messages() {
        let mut r = RouteMessage::default();
        r.header.kind = RouteType::Unicast;
        r.attributes.push(RouteAttribute::Oif(7));
        assert_eq!(
            hop_of(&r, ip("192.0.2.9")),
            Some(Hop {
                ifindex: 7,
                via: ip("192.0.2.9")
            })
        );
        r.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(
                "192.0.2.1".parse().unwrap(),
            )));
        assert_eq!(
            hop_of(&r, ip("198.51.100.9")).map(|h| h.via),
            Some(ip("192.0.2.1"))
        );
        r.attributes.push(RouteAttribute::Via(RouteVia::Inet6(
            "fe80::1".parse().unwrap(),
        )));
        assert_eq!(
            hop_of(&r, ip("198.51.100.9")).map(|h| h.via),
            Some(ip("fe80::1"))
        );
        r.header.kind = RouteType::Local;
        assert_eq!(hop_of(&r, ip("192.0.2.9")), None);
        let mut no_oif = RouteMessage::default();
        no_oif.header.kind = RouteType::Unicast;
        assert_eq!(hop_of(&no_oif, ip("192.0.2.9")), None);
    }

    /// Polls `resolve` (draining events between tries) until it stops being pending or the
    /// generous deadline passes.
    fn settle(r: &mut Resolver, a: IpAddr) -> Resolution {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            r.poll_events();
            let res = r.resolve(a, Instant::now());
            if res != Resolution::Pending || Instant::now() > end {
                return res;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn resolves_next_hops_from_the_kernel() {
        let Some(lab) = lab_or_skip("resolves_next_hops_from_the_kernel") else {
            return;
        };
        let dir = lab.host("dir").unwrap();
        let peer = lab.host("peer").unwrap();
        let link = lab
            .link(
                dir,
                peer,
                &LinkOpts {
                    addrs_a: vec![net("192.0.2.1/24"), net("2001:db8::1/64")],
                    addrs_b: vec![net("192.0.2.2/24"), net("2001:db8::2/64")],
                    ..LinkOpts::default()
                },
            )
            .unwrap();
        let dev = link.a_dev.clone();
        lab.route(dir, net("198.51.100.0/24"), ip("192.0.2.2"))
            .unwrap();
        lab.route(dir, net("2001:db8:5::/64"), ip("2001:db8::2"))
            .unwrap();
        let (dir_ns, peer_ns) = (lab.netns_name(dir).unwrap(), lab.netns_name(peer).unwrap());
        let peer_if = in_netns(&peer_ns, || interface_info(&link.b_dev).unwrap());

        in_netns(&dir_ns, || {
            let me = interface_info(&dev).unwrap();
            assert_eq!(me.mtu, 1500);
            assert_ne!(me.mac, [0; 6]);
            assert_ne!(me.ifindex, 0);
            assert!(matches!(
                interface_info("nope0"),
                Err(HostError::NoSuchInterface(_))
            ));
            let addrs = local_addrs().unwrap();
            assert!(addrs.contains(&ip("192.0.2.1")), "{addrs:?}");
            assert!(addrs.contains(&ip("2001:db8::1")), "{addrs:?}");
            assert!(addrs.iter().all(|a| !a.is_loopback()), "{addrs:?}");

            let ready = Resolution::Ready {
                ifindex: me.ifindex,
                dst_mac: peer_if.mac,
            };
            let mut r = Resolver::new().unwrap();
            for (onlink, via_gw) in [
                ("192.0.2.2", "198.51.100.7"),
                ("2001:db8::2", "2001:db8:5::9"),
            ] {
                // Not in the neighbour table yet: the kernel resolves it on our request.
                assert_eq!(r.resolve(ip(onlink), Instant::now()), Resolution::Pending);
                assert_eq!(settle(&mut r, ip(onlink)), ready, "{onlink}");
                // Through the gateway: the gateway's MAC.
                assert_eq!(settle(&mut r, ip(via_gw)), ready, "{via_gw}");
                // The cached answer, without asking the kernel.
                assert_eq!(r.resolve(ip(via_gw), Instant::now()), ready);
            }
            for unreachable in ["203.0.113.9", "2001:db8:77::1", "192.0.2.1", "224.0.0.5"] {
                assert_eq!(
                    r.resolve(ip(unreachable), Instant::now()),
                    Resolution::Unreachable,
                    "{unreachable}"
                );
            }
            // On-link but nobody answers: pending, then the kernel gives up (after its
            // probes: 3 s with the defaults).
            let silent = [ip("192.0.2.77"), ip("2001:db8::77")];
            for a in silent {
                assert_eq!(r.resolve(a, Instant::now()), Resolution::Pending);
            }
            for a in silent {
                assert_eq!(settle(&mut r, a), Resolution::Unreachable, "{a}");
            }
            // A route change is announced: the cached hop is forgotten before its time.
            let now = Instant::now();
            assert_eq!(r.resolve(ip("198.51.100.7"), now), ready);
            let out = std::process::Command::new("ip")
                .args(["route", "del", "198.51.100.0/24"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let mut fds = [PollFd::new(r.event_fd(), PollFlags::POLLIN)];
            assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1);
            r.poll_events();
            assert_eq!(r.resolve(ip("198.51.100.7"), now), Resolution::Unreachable);
        });
        lab.close().unwrap();
    }
}
