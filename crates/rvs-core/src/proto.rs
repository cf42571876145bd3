//! Connection states and timeouts in IPVS's terms: the TCP state machine as one transition table
//! (`[direction][event][state]`, as `ip_vs_proto_tcp.c` keeps it), the UDP pseudo-state, and the
//! per-state timeouts that `ipvsadm --set tcp tcpfin udp` changes.
//!
//! The director tracks a TCP connection from the segments it forwards, not as an endpoint: in NAT
//! it sees both directions, in DR and TUN only the client's. IPVS therefore keeps three tables —
//! input, output and input-only — and so do we ([`Direction`]).
//!
//! Pure functions over small enums: no clock, no allocation, no panics.

use crate::types::{FwdMethod, SEC, Time};
use rvs_wire::parse::tcp_flags;

/// IPVS TCP connection states (`IP_VS_TCP_S_*`), in IPVS's order (the table's column order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum TcpState {
    /// No segment seen yet (a brand-new connection).
    #[default]
    None = 0,
    /// Three-way handshake completed.
    Established,
    /// SYN seen from the dest side (NAT only).
    SynSent,
    /// SYN seen from the client.
    SynRecv,
    /// One side closed (FIN seen from the dest in NAT, from the client in DR/TUN).
    FinWait,
    /// Both sides closed.
    TimeWait,
    /// Reset or closed.
    Close,
    /// The client closed first (NAT).
    CloseWait,
    /// Last ACK awaited.
    LastAck,
    /// Listening (FTP data connections in IPVS; kept for the listing vocabulary).
    Listen,
    /// SYN-ACK seen from the dest (IPVS's secure_tcp tables).
    SynAck,
}

impl TcpState {
    /// Every state, in IPVS's order.
    pub const ALL: [TcpState; 11] = [
        TcpState::None,
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::SynAck,
    ];

    /// The name `ipvsadm -L -c` prints ("ESTABLISHED", "SYN_RECV", ...).
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
        }
    }

    /// True for the states IPVS counts in a dest's active connections.
    ///
    /// Current Linux (`tcp_state_active_table`, since 5.1) counts the handshake states as active
    /// too: ESTABLISHED, SYN_SENT, SYN_RECV and SYNACK. Older kernels counted only ESTABLISHED.
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            TcpState::Established | TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck
        )
    }
}

/// A connection table entry's state: a TCP state, UDP's single state, or a persistence template.
///
/// One byte (the TCP enum's spare values hold the other two variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// A TCP connection.
    Tcp(TcpState),
    /// A UDP connection (IPVS's single `IP_VS_UDP_S_NORMAL` state).
    Udp,
    /// A persistence template; its lifetime is the service's persistence timeout.
    Template,
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState::Tcp(TcpState::None)
    }
}

impl ConnState {
    /// The state a new connection of IP protocol `protocol` starts in (UDP for 17, else TCP NONE).
    pub const fn initial(protocol: u8) -> ConnState {
        if protocol == 17 {
            ConnState::Udp
        } else {
            ConnState::Tcp(TcpState::None)
        }
    }

    /// The name `ipvsadm -L -c` prints: the TCP state name, "UDP", or "NONE" for templates.
    pub const fn name(self) -> &'static str {
        match self {
            ConnState::Tcp(s) => s.name(),
            ConnState::Udp => "UDP",
            ConnState::Template => "NONE",
        }
    }

    /// The state after a packet in `dir` with TCP flags `flags`; UDP and templates never change.
    #[inline]
    pub fn transition(self, dir: Direction, flags: u8) -> ConnState {
        match self {
            ConnState::Tcp(s) => ConnState::Tcp(tcp_transition(s, dir, flags)),
            other => other,
        }
    }
}

/// True when a connection in `state` counts as active for its dest (see [`TcpState::is_active`]);
/// UDP connections and templates never do, as in IPVS.
#[inline]
pub const fn is_active(state: ConnState) -> bool {
    match state {
        ConnState::Tcp(s) => s.is_active(),
        ConnState::Udp | ConnState::Template => false,
    }
}

/// Which way a packet travels relative to the connection, choosing IPVS's transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → dest through the director, when the director also sees the replies (NAT).
    Input,
    /// Dest → client through the director (NAT replies).
    Output,
    /// Client → dest when the replies bypass the director (DR, TUN: IPVS's `NOOUTPUT`).
    InputOnly,
}

impl Direction {
    /// The direction of client packets for a forwarding method: [`Direction::Input`] for NAT,
    /// [`Direction::InputOnly`] for DR and TUN.
    pub const fn inbound(fwd: FwdMethod) -> Direction {
        match fwd {
            FwdMethod::Masq => Direction::Input,
            FwdMethod::DirectRoute | FwdMethod::Tunnel => Direction::InputOnly,
        }
    }

    const fn index(self) -> usize {
        match self {
            Direction::Input => 0,
            Direction::Output => 1,
            Direction::InputOnly => 2,
        }
    }
}

/// The event a TCP segment is, for the state machine: one per segment, by IPVS's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpEvent {
    /// SYN set (and RST not).
    Syn,
    /// FIN set (and neither RST nor SYN).
    Fin,
    /// ACK only (no RST, SYN or FIN).
    Ack,
    /// RST set (whatever else is).
    Rst,
}

impl TcpEvent {
    /// The event for a TCP flags byte: RST before SYN before FIN before ACK (IPVS's
    /// `tcp_state_idx`); `None` when none of the four is set.
    #[inline]
    pub const fn from_flags(flags: u8) -> Option<TcpEvent> {
        if flags & tcp_flags::RST != 0 {
            Some(TcpEvent::Rst)
        } else if flags & tcp_flags::SYN != 0 {
            Some(TcpEvent::Syn)
        } else if flags & tcp_flags::FIN != 0 {
            Some(TcpEvent::Fin)
        } else if flags & tcp_flags::ACK != 0 {
            Some(TcpEvent::Ack)
        } else {
            None
        }
    }

    const fn index(self) -> usize {
        match self {
            TcpEvent::Syn => 0,
            TcpEvent::Fin => 1,
            TcpEvent::Ack => 2,
            TcpEvent::Rst => 3,
        }
    }
}

// Short names so the table below reads as a grid (in the default table no transition leads to
// NONE or SYNACK, so they need none).
const ES: TcpState = TcpState::Established;
const SS: TcpState = TcpState::SynSent;
const SR: TcpState = TcpState::SynRecv;
const FW: TcpState = TcpState::FinWait;
const TW: TcpState = TcpState::TimeWait;
const CL: TcpState = TcpState::Close;
const CW: TcpState = TcpState::CloseWait;
const LA: TcpState = TcpState::LastAck;
const LI: TcpState = TcpState::Listen;

/// Next state by `[direction][event][current state]`: IPVS's default (not `secure_tcp`) table.
/// Columns follow [`TcpState::ALL`]: NO ES SS SR FW TW CL CW LA LI SA.
#[rustfmt::skip]
const TCP_STATES: [[[TcpState; 11]; 4]; 3] = [
    // Input (NAT, client → dest).
    [
        /* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /* fin */ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // Output (NAT, dest → client).
    [
        /* syn */ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        /* fin */ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /* rst */ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // Input-only (DR and TUN, client → dest, replies unseen).
    [
        /* syn */ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /* fin */ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /* ack */ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /* rst */ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// The TCP state after a segment with flags byte `flags` travelling in `dir`.
///
/// A segment with none of RST, SYN, FIN, ACK moves the connection to CLOSE, as IPVS does.
#[inline]
pub fn tcp_transition(state: TcpState, dir: Direction, flags: u8) -> TcpState {
    // The commonest segment by far, an ACK without SYN, FIN or RST on an ESTABLISHED
    // connection, stays ESTABLISHED in every direction of the table: answered without the
    // event decode and the table walk (`established_ack_shortcut_is_the_table` checks it).
    const EVENTS: u8 = tcp_flags::RST | tcp_flags::SYN | tcp_flags::FIN | tcp_flags::ACK;
    if state as u8 == TcpState::Established as u8 && flags & EVENTS == tcp_flags::ACK {
        return TcpState::Established;
    }
    match TcpEvent::from_flags(flags) {
        Some(ev) => TCP_STATES[dir.index()][ev.index()][state as usize],
        None => TcpState::Close,
    }
}

/// Per-state timeouts in seconds, IPVS's defaults; `ipvsadm --set tcp tcpfin udp` changes
/// ESTABLISHED, FIN_WAIT and UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// NONE (a connection that has seen no segment yet): 2 s.
    pub none: u32,
    /// ESTABLISHED (`--set tcp`): 900 s.
    pub established: u32,
    /// SYN_SENT: 120 s.
    pub syn_sent: u32,
    /// SYN_RECV: 60 s.
    pub syn_recv: u32,
    /// FIN_WAIT (`--set tcpfin`): 120 s.
    pub fin_wait: u32,
    /// TIME_WAIT: 120 s.
    pub time_wait: u32,
    /// CLOSE: 10 s.
    pub close: u32,
    /// CLOSE_WAIT: 60 s.
    pub close_wait: u32,
    /// LAST_ACK: 30 s.
    pub last_ack: u32,
    /// LISTEN: 120 s.
    pub listen: u32,
    /// SYNACK: 120 s.
    pub synack: u32,
    /// UDP (`--set udp`): 300 s.
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            none: 2,
            established: 900,
            syn_sent: 120,
            syn_recv: 60,
            fin_wait: 120,
            time_wait: 120,
            close: 10,
            close_wait: 60,
            last_ack: 30,
            listen: 120,
            synack: 120,
            udp: 300,
        }
    }
}

impl Timeouts {
    /// The timeout of a state in seconds; templates get NONE's (the director sets their expiry
    /// from the service's persistence timeout instead).
    #[inline]
    pub const fn seconds(&self, state: ConnState) -> u32 {
        match state {
            ConnState::Tcp(s) => match s {
                TcpState::None => self.none,
                TcpState::Established => self.established,
                TcpState::SynSent => self.syn_sent,
                TcpState::SynRecv => self.syn_recv,
                TcpState::FinWait => self.fin_wait,
                TcpState::TimeWait => self.time_wait,
                TcpState::Close => self.close,
                TcpState::CloseWait => self.close_wait,
                TcpState::LastAck => self.last_ack,
                TcpState::Listen => self.listen,
                TcpState::SynAck => self.synack,
            },
            ConnState::Udp => self.udp,
            ConnState::Template => self.none,
        }
    }

    /// The timeout of a state in [`Time`] units (ns).
    #[inline]
    pub const fn timeout(&self, state: ConnState) -> Time {
        self.seconds(state) as Time * SEC
    }

    /// `ipvsadm --set` tcp: the ESTABLISHED timeout in seconds; 0 keeps the current value.
    pub fn set_tcp(&mut self, secs: u32) {
        if secs != 0 {
            self.established = secs;
        }
    }

    /// `ipvsadm --set` tcpfin: the FIN_WAIT timeout in seconds; 0 keeps the current value.
    pub fn set_tcpfin(&mut self, secs: u32) {
        if secs != 0 {
            self.fin_wait = secs;
        }
    }

    /// `ipvsadm --set` udp: the UDP timeout in seconds; 0 keeps the current value.
    pub fn set_udp(&mut self, secs: u32) {
        if secs != 0 {
            self.udp = secs;
        }
    }

    /// The three values `ipvsadm -L --timeout` prints: (tcp, tcpfin, udp) in seconds.
    pub const fn tcp_tcpfin_udp(&self) -> (u32, u32, u32) {
        (self.established, self.fin_wait, self.udp)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rvs_wire::parse::tcp_flags::{ACK, FIN, PSH, RST, SYN};

    /// Feed `(direction, flags)` segments from NONE and collect the states after each.
    fn run(steps: &[(Direction, u8)]) -> Vec<TcpState> {
        let mut s = TcpState::None;
        steps
            .iter()
            .map(|&(d, f)| {
                s = tcp_transition(s, d, f);
                s
            })
            .collect()
    }

    use Direction::{Input as I, InputOnly as IO, Output as O};
    use TcpState::*;

    /// The ESTABLISHED + ACK shortcut of `tcp_transition` answers what the table says, for every
    /// flags byte, direction and state.
    #[test]
    fn established_ack_shortcut_is_the_table() {
        for dir in [I, O, IO] {
            for flags in 0..=u8::MAX {
                for state in TCP_STATES[0][0].iter().copied().chain([Established, None]) {
                    let table = match TcpEvent::from_flags(flags) {
                        Some(ev) => TCP_STATES[dir.index()][ev.index()][state as usize],
                        Option::None => Close,
                    };
                    assert_eq!(
                        tcp_transition(state, dir, flags),
                        table,
                        "{state:?} {dir:?} {flags:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn nat_client_closes_first() {
        let got = run(&[
            (I, SYN),
            (O, SYN | ACK),
            (I, ACK),
            (I, PSH | ACK),
            (O, ACK),
            (I, FIN | ACK),
            (O, ACK),
            (O, FIN | ACK),
            (I, ACK),
        ]);
        assert_eq!(
            got,
            [
                SynRecv,
                SynRecv,
                Established,
                Established,
                Established,
                CloseWait,
                CloseWait,
                TimeWait,
                TimeWait
            ]
        );
    }

    #[test]
    fn nat_server_closes_first() {
        let got = run(&[
            (I, SYN),
            (O, SYN | ACK),
            (I, ACK),
            (O, FIN | ACK),
            (I, ACK),
            (I, FIN | ACK),
            (O, ACK),
        ]);
        assert_eq!(
            got,
            [
                SynRecv,
                SynRecv,
                Established,
                FinWait,
                FinWait,
                TimeWait,
                TimeWait
            ]
        );
    }

    #[test]
    fn dr_lifecycle_sees_only_the_client() {
        let got = run(&[
            (IO, SYN),
            (IO, ACK),
            (IO, PSH | ACK),
            (IO, FIN | ACK),
            (IO, ACK),
        ]);
        assert_eq!(got, [SynRecv, Established, Established, FinWait, FinWait]);
        // The client's FIN after the server's (which DR never sees) also lands in FIN_WAIT.
        assert_eq!(tcp_transition(Established, IO, FIN | ACK), FinWait);
        assert_eq!(Direction::inbound(FwdMethod::DirectRoute), IO);
        assert_eq!(Direction::inbound(FwdMethod::Tunnel), IO);
        assert_eq!(Direction::inbound(FwdMethod::Masq), I);
    }

    #[test]
    fn rst_closes() {
        for d in [I, O, IO] {
            assert_eq!(tcp_transition(Established, d, RST), Close, "{d:?}");
            assert_eq!(tcp_transition(Established, d, RST | ACK), Close, "{d:?}");
            assert_eq!(tcp_transition(FinWait, d, RST), Close, "{d:?}");
        }
        // IPVS quirks kept: a client RST in SYN_RECV stays there; a dest RST in TIME_WAIT too.
        assert_eq!(tcp_transition(SynRecv, I, RST), SynRecv);
        assert_eq!(tcp_transition(SynRecv, O, RST), Close);
        assert_eq!(tcp_transition(TimeWait, O, RST), TimeWait);
    }

    #[test]
    fn flag_priority_and_flagless_segments() {
        assert_eq!(TcpEvent::from_flags(SYN | RST), Some(TcpEvent::Rst));
        assert_eq!(TcpEvent::from_flags(SYN | FIN | ACK), Some(TcpEvent::Syn));
        assert_eq!(TcpEvent::from_flags(FIN | ACK), Some(TcpEvent::Fin));
        assert_eq!(TcpEvent::from_flags(ACK | PSH), Some(TcpEvent::Ack));
        assert!(TcpEvent::from_flags(PSH).is_none());
        assert_eq!(tcp_transition(Established, I, PSH), Close);
        assert_eq!(tcp_transition(Established, I, 0), Close);
        // A SYN on an established connection keeps it established (a retransmission).
        assert_eq!(tcp_transition(Established, I, SYN), Established);
        // A new SYN on a closing connection reopens it (port reuse).
        assert_eq!(tcp_transition(TimeWait, I, SYN), SynRecv);
        assert_eq!(tcp_transition(Close, IO, SYN), SynRecv);
    }

    #[test]
    fn udp_and_templates_never_change() {
        assert_eq!(ConnState::Udp.transition(I, RST), ConnState::Udp);
        assert_eq!(ConnState::Template.transition(O, SYN), ConnState::Template);
        assert_eq!(
            ConnState::Tcp(None).transition(I, SYN),
            ConnState::Tcp(SynRecv)
        );
        assert_eq!(ConnState::initial(17), ConnState::Udp);
        assert_eq!(ConnState::initial(6), ConnState::Tcp(None));
    }

    #[test]
    fn names_are_ipvsadm_names() {
        let names: Vec<_> = TcpState::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "NONE",
                "ESTABLISHED",
                "SYN_SENT",
                "SYN_RECV",
                "FIN_WAIT",
                "TIME_WAIT",
                "CLOSE",
                "CLOSE_WAIT",
                "LAST_ACK",
                "LISTEN",
                "SYNACK"
            ]
        );
        assert_eq!(ConnState::Udp.name(), "UDP");
        assert_eq!(ConnState::Template.name(), "NONE");
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }

    #[test]
    fn active_states() {
        let active: Vec<_> = TcpState::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .collect();
        assert_eq!(active, [Established, SynSent, SynRecv, SynAck]);
        assert!(is_active(ConnState::Tcp(Established)));
        assert!(!is_active(ConnState::Tcp(FinWait)));
        assert!(!is_active(ConnState::Udp));
        assert!(!is_active(ConnState::Template));
    }

    #[test]
    fn timeouts_defaults_and_set() {
        let mut t = Timeouts::default();
        let secs: Vec<u32> = TcpState::ALL
            .iter()
            .map(|&s| t.seconds(ConnState::Tcp(s)))
            .collect();
        assert_eq!(secs, [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120]);
        assert_eq!(t.timeout(ConnState::Udp), 300 * SEC);
        assert_eq!(t.timeout(ConnState::Tcp(Established)), 900 * SEC);
        assert_eq!(t.tcp_tcpfin_udp(), (900, 120, 300));
        t.set_tcp(7200);
        t.set_tcpfin(30);
        t.set_udp(0); // 0 = keep, as ipvsadm --set documents
        assert_eq!(t.tcp_tcpfin_udp(), (7200, 30, 300));
        assert_eq!(t.timeout(ConnState::Tcp(Established)), 7200 * SEC);
        assert_eq!(t.timeout(ConnState::Tcp(FinWait)), 30 * SEC);
        assert_eq!(
            t.timeout(ConnState::Tcp(TimeWait)),
            120 * SEC,
            "tcpfin is FIN_WAIT only"
        );
        t.set_udp(u32::MAX);
        assert_eq!(t.timeout(ConnState::Udp), u64::from(u32::MAX) * SEC);
    }

    #[test]
    fn states_are_one_byte() {
        assert_eq!(core::mem::size_of::<ConnState>(), 1);
        assert_eq!(core::mem::size_of::<TcpState>(), 1);
    }
}
