//! What the dataplane decides for a packet, and the named reasons for every drop.

use core::net::IpAddr;

use crate::frame::Frame;

/// Where a frame goes after [`crate::Dataplane::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The input frame, rewritten in place, is to be transmitted towards `next_hop` (the I/O
    /// layer resolves it to a MAC: on-link neighbour or gateway) .
    Transmit {
        /// The IP address to resolve for the Ethernet destination.
        next_hop: IpAddr,
    },
    /// The input frame was replaced by a packet the director generated (ICMP error, TCP RST),
    /// to be transmitted towards `next_hop`.
    Reply {
        /// The IP address to resolve for the Ethernet destination.
        next_hop: IpAddr,
    },
    /// Not the director's business: hand the frame, untouched, to the host stack.
    Local,
    /// Held (an IP fragment waiting for its datagram); frames it releases later come out as
    /// extra transmissions of a later call.
    Held,
    /// Dropped, for the named reason.
    Drop(DropReason),
}

impl Verdict {
    /// The verdict's name in replay output ("transmit", "reply", "local", "held", "drop").
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Transmit { .. } => "transmit",
            Verdict::Reply { .. } => "reply",
            Verdict::Local => "local",
            Verdict::Held => "held",
            Verdict::Drop(_) => "drop",
        }
    }
}

/// A frame to transmit besides the input frame (released fragments, fragments of a
/// refragmented datagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    /// The frame, link header included.
    pub frame: Frame,
    /// The IP address to resolve for its Ethernet destination.
    pub next_hop: IpAddr,
    /// True when the director generated it (reply) rather than forwarded it.
    pub generated: bool,
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $v:ident = $name:literal,)*) => {
        /// Why a packet was dropped. Every reason has a stable snake_case name used as a metrics
        /// label and in replay output.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason { $($(#[$doc])* $v,)* }

        impl DropReason {
            /// Every reason, in declaration order (metrics iterate over it).
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];

            /// The stable name.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$v => $name,)* }
            }
        }
    };
}

drop_reasons! {
    /// The frame could not be parsed (truncated, bad lengths, bad version...).
    Malformed = "malformed",
    /// The connection's dest was deleted; its packets are dropped until it expires or the
    /// dest is re-added in time.
    DestUnavailable = "dest_unavailable",
    /// The connection table is full and refuses new connections.
    TableFull = "table_full",
    /// A new connection found no usable dest and the policy is `drop`.
    NoDest = "no_dest",
    /// A packet for an expired connection and the policy is `drop`.
    ExpiredConn = "expired_conn",
    /// A reply the director would send was refused (to broadcast/multicast, about an error...).
    ReplyRefused = "reply_refused",
    /// TTL or hop limit exhausted and the time-exceeded reply could not be sent.
    TtlExceeded = "ttl_exceeded",
    /// Tunnel mode without a director address of the dest's family to use as outer source.
    NoTunnelSource = "no_tunnel_source",
    /// Too big for the path, cannot be fragmented, and no error could be sent.
    TooBig = "too_big",
    /// A fragment the bounded fragment buffers could not hold.
    FragOverflow = "frag_overflow",
    /// A datagram with too many fragments.
    FragTooMany = "frag_too_many",
    /// Overlapping or inconsistent fragments (RFC 5722).
    FragOverlap = "frag_overlap",
    /// A reassembled datagram over 65535 bytes.
    FragTooBig = "frag_too_big",
    /// A fragment too malformed to track.
    FragMalformed = "frag_malformed",
    /// An ICMP message for us whose checksum is wrong (RFC 792 / RFC 4443 §2.3).
    IcmpBadChecksum = "icmp_bad_checksum",
    /// An ICMP error for us too short or with a quote whose lengths are bogus.
    IcmpMalformed = "icmp_malformed",
    /// An ICMP error about an ICMP error (RFC 1812 §4.3.2.7): never acted on.
    IcmpAboutError = "icmp_about_error",
    /// A fragmented ICMP message to a VIP.
    IcmpFragment = "icmp_fragment",
    /// A forwarded ICMP error over its source's rate.
    IcmpRateLimited = "icmp_rate_limited",
    /// A forwarded too-big error advertising an MTU below the floor, with policy `refuse`.
    IcmpSmallMtu = "icmp_small_mtu",
    /// A reply the director would generate, suppressed by the rate limits (counted).
    ReplySuppressed = "reply_suppressed",
}
