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
    /// True when it is the host's, untouched (a held fragment of a datagram whose first
    /// fragment turned out to be `Local`): to be delivered locally, not transmitted.
    pub local: bool,
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

/// A rate-limited log line about dropped packets: at most one per reason per interval, carrying
/// how many drops of that reason were not logged since the last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropLog {
    /// When (dataplane clock, ns).
    pub at: u64,
    /// Why packets were dropped.
    pub reason: DropReason,
    /// Drops of this reason since the previous line for it that got no line of their own.
    pub suppressed: u64,
}

/// Turns drops into at most one [`DropLog`] per reason per interval, in a bounded queue.
#[derive(Debug, Clone)]
pub struct DropLogger {
    interval: u64,
    last: Vec<Option<u64>>,
    suppressed: Vec<u64>,
    queue: Vec<DropLog>,
    /// Lines lost because the queue was full (nobody drained it).
    pub overflow: u64,
}

/// Most log lines held until drained.
pub const DROP_LOG_QUEUE: usize = 256;

impl DropLogger {
    /// A logger that allows one line per reason every `interval` ns.
    pub fn new(interval: u64) -> DropLogger {
        let n = DropReason::ALL.len();
        DropLogger {
            interval,
            last: vec![None; n],
            suppressed: vec![0; n],
            queue: Vec::new(),
            overflow: 0,
        }
    }

    /// Note one drop at `now`; queues a line when the reason's interval has passed.
    pub fn note(&mut self, reason: DropReason, now: u64) {
        let i = reason as usize;
        let due = match self.last.get(i).copied().flatten() {
            None => true,
            Some(t) => now.saturating_sub(t) >= self.interval,
        };
        if !due {
            if let Some(s) = self.suppressed.get_mut(i) {
                *s += 1;
            }
            return;
        }
        let suppressed = self.suppressed.get(i).copied().unwrap_or(0);
        if self.queue.len() >= DROP_LOG_QUEUE {
            self.overflow += 1;
            if let Some(s) = self.suppressed.get_mut(i) {
                *s += 1;
            }
            return;
        }
        self.queue.push(DropLog {
            at: now,
            reason,
            suppressed,
        });
        if let (Some(l), Some(s)) = (self.last.get_mut(i), self.suppressed.get_mut(i)) {
            *l = Some(now);
            *s = 0;
        }
    }

    /// Take the queued lines.
    pub fn drain(&mut self) -> Vec<DropLog> {
        core::mem::take(&mut self.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval_with_suppressed_count() {
        let mut l = DropLogger::new(10);
        for t in 0..25 {
            l.note(DropReason::IcmpBadChecksum, t);
        }
        l.note(DropReason::Malformed, 3);
        let lines = l.drain();
        let bad: Vec<_> = lines
            .iter()
            .filter(|x| x.reason == DropReason::IcmpBadChecksum)
            .collect();
        assert_eq!(bad.len(), 3, "{lines:?}");
        assert_eq!((bad[0].at, bad[0].suppressed), (0, 0));
        assert_eq!((bad[1].at, bad[1].suppressed), (10, 9));
        assert_eq!((bad[2].at, bad[2].suppressed), (20, 9));
        assert_eq!(
            lines
                .iter()
                .filter(|x| x.reason == DropReason::Malformed)
                .count(),
            1
        );
        assert!(l.drain().is_empty());
    }
}
