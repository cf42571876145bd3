//! The director's state as one deterministic machine: services and their dests (with the trash
//! of recently deleted dests), schedulers, the connection table with persistence templates,
//! TCP/UDP states and timeouts, statistics.
//!
//! The dataplane asks it three things per packet — which connection, or which service, and
//! "this packet happened on that connection" — and the control plane applies ipvsadm rules.
//! No clock (every call takes `now`), no I/O, no packet bytes.

use core::cell::Cell;
use core::net::IpAddr;
use hashbrown::HashMap;

use rvs_wire::parse::FlowKey;

use crate::conn::{Conn, ConnFlags, ConnId, ConnTable, FullPolicy, Hot, InsertError, Probe};
use crate::proto::{ConnState, Direction, TcpState, Timeouts, is_active};
use crate::rules::{DestSpec, Rule, ServiceSpec};
use crate::sched::{SchedFlow, Scheduler, new_scheduler};
use crate::settings::{ExpiredReply, FullPolicyName, Settings};
use crate::stats::Stats;
use crate::types::{Dest, FwdMethod, Protocol, SEC, ServiceKey, Time};

/// Index of a service in the director.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcId(pub u32);

/// Index of a dest in the director's dest arena (stable while the dest is live or in the trash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestId(pub u32);

/// Why a control-plane change was refused (ipvsadm's error texts where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectorError {
    /// `-A` for a service that exists.
    #[error("Service already exists")]
    ServiceExists,
    /// `-E`, `-D`, `-a`, ... for a service that does not exist.
    #[error("No such service")]
    NoService,
    /// `-a` for a dest that exists.
    #[error("Destination already exists")]
    DestExists,
    /// `-e`/`-d` for a dest that does not exist.
    #[error("No such destination")]
    NoDest,
    /// A dest whose address family differs from its service's (only tunnels could carry it).
    #[error("Address family of destination differs from service")]
    MixedFamily,
    /// A port-0 service without persistence.
    #[error("Port 0 service requires persistence")]
    PortZeroWithoutPersistence,
}

/// Why a new connection could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewConnError {
    /// No dest of the service is usable (all weight 0, overloaded, or none).
    NoDest,
    /// The connection table is at its maximum and the policy refuses new entries.
    TableFull,
    /// An entry with the same key exists (a caller bug: look up before scheduling).
    Exists,
}

/// Why a packet of a known connection is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnDrop {
    /// The connection's dest was deleted: its packets are dropped until it expires or the dest is
    /// re-added in time (IPVS's dest trash).
    DestUnavailable,
    /// The connection id is stale.
    Gone,
}

/// What the dataplane needs to forward a packet of a connection to its dest (the client side
/// of the connection, for NAT replies, is [`Director::conn`]'s `key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The connection.
    pub conn: ConnId,
    /// Dest address.
    pub daddr: IpAddr,
    /// Dest port (the virtual port for port-0 services and DR/TUN dests without a port).
    pub dport: u16,
    /// Forwarding method fixed when the connection was scheduled.
    pub fwd: FwdMethod,
    /// The dest's arena id.
    pub dest: DestId,
}

/// Per-service overrides of the director-wide reply settings (keepalived-style per-virtual-server
/// options; the ipvsadm rules format has no place for them, so they come from the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServicePolicy {
    /// Reply to a non-SYN TCP segment with no connection (overrides `expired_reply`).
    pub expired_reply: Option<ExpiredReply>,
    /// Reply to a new connection that finds no usable dest (overrides `nodest_reply`).
    pub nodest_reply: Option<ExpiredReply>,
    /// Answer echo requests to this service's VIP in the dataplane (overrides `icmp_echo_reply`).
    pub icmp_echo_reply: Option<bool>,
}

/// Director-wide counters (everything else is per service and per dest in [`Stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectorCounters {
    /// New connections refused because no dest was usable.
    pub no_dest: u64,
    /// New connections refused because the table was full.
    pub table_full: u64,
    /// Connections evicted to make room (policy `evict_oldest`).
    pub evicted: u64,
    /// Connections expired by timeout.
    pub expired: u64,
    /// Packets dropped because their connection's dest was deleted.
    pub dest_unavailable: u64,
}

#[derive(Debug)]
struct Service {
    spec: ServiceSpec,
    sched: Box<dyn Scheduler>,
    dests: Vec<Dest>,
    dest_ids: Vec<DestId>,
    stats: Stats,
}

#[derive(Debug)]
enum Place {
    Live(usize),
    Trash { dest: Dest, since: Time },
    Free,
}

#[derive(Debug)]
struct DestSlot {
    svc: SvcId,
    place: Place,
    stats: Stats,
    /// Connections and templates bound to this dest (kept while in the trash).
    refs: u32,
}

/// A read-only view of a service for listings.
#[derive(Debug, Clone)]
pub struct ServiceView<'a> {
    /// The service's id.
    pub id: SvcId,
    /// Its configuration.
    pub spec: &'a ServiceSpec,
    /// Its live dests, in order.
    pub dests: Vec<DestView<'a>>,
    /// Its statistics.
    pub stats: &'a Stats,
}

/// A read-only view of a live dest for listings.
#[derive(Debug, Clone)]
pub struct DestView<'a> {
    /// The dest's id.
    pub id: DestId,
    /// Its configuration and connection counts.
    pub dest: &'a Dest,
    /// Its statistics.
    pub stats: &'a Stats,
}

/// The director's whole state.
#[derive(Debug)]
pub struct Director {
    settings: Settings,
    timeouts: Timeouts,
    services: Vec<Option<Service>>,
    svc_index: HashMap<ServiceKey, SvcId>,
    vips: HashMap<IpAddr, u32>,
    /// A 256-bit filter of the VIPs (bit [`vip_bit`] of each): [`Director::maybe_vip`].
    vip_filter: [u64; 4],
    /// The last [`Director::find_service`] hit: a new connection's lookup key and its service
    /// (emptied whenever a service is added or deleted).
    last_svc: Cell<Option<(ServiceKey, SvcId)>>,
    dests: Vec<DestSlot>,
    free_dests: Vec<u32>,
    conns: ConnTable,
    counters: DirectorCounters,
    scratch: Vec<Conn>,
    policies: HashMap<ServiceKey, ServicePolicy>,
}

/// The packet that opens a connection, accounted as the connection is made
/// ([`Director::new_conn_in`]).
#[derive(Clone, Copy)]
struct Opening {
    /// Its TCP flags (0 for UDP).
    tcp_flags: u8,
    /// Its length (IP header on).
    bytes: usize,
}

/// The direction of a client → VIP packet for the state machine: NAT connections see both
/// sides, DR and TUN ones only the client's (IPVS's `INPUT_ONLY`).
#[inline(always)]
fn inbound_direction(fwd: FwdMethod) -> Direction {
    match fwd {
        FwdMethod::Masq => Direction::Input,
        _ => Direction::InputOnly,
    }
}

/// The bit of [`Director::maybe_vip`]'s filter that stands for an address (0..256).
#[inline(always)]
fn vip_bit(addr: &[u8; 16], v6: bool) -> usize {
    let x = u128::from_le_bytes(*addr);
    let (lo, hi) = (x as u64, (x >> 64) as u64);
    ((lo ^ hi.rotate_left(32) ^ u64::from(v6)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
}

/// Most expired entries handled per [`Director::expire`] call, so one call's work is bounded.
pub const EXPIRE_BUDGET: usize = 4096;

fn policy_of(s: &Settings) -> FullPolicy {
    match s.conn_full_policy {
        FullPolicyName::Refuse => FullPolicy::Refuse,
        FullPolicyName::EvictOldest => FullPolicy::EvictOldest,
    }
}

fn timeouts_of(s: &Settings) -> Timeouts {
    let mut t = Timeouts::default();
    t.set_tcp(s.timeouts.tcp);
    t.set_tcpfin(s.timeouts.tcpfin);
    t.set_udp(s.timeouts.udp);
    t
}

impl Director {
    /// A director with no services and the given settings.
    pub fn new(settings: Settings) -> Director {
        let conns = ConnTable::new(
            settings.conn_tab_max,
            policy_of(&settings),
            settings.hash_seed,
        );
        Director {
            timeouts: timeouts_of(&settings),
            settings,
            services: Vec::new(),
            svc_index: HashMap::new(),
            vips: HashMap::new(),
            vip_filter: [0; 4],
            last_svc: Cell::new(None),
            dests: Vec::new(),
            free_dests: Vec::new(),
            conns,
            counters: DirectorCounters::default(),
            scratch: Vec::new(),
            policies: HashMap::new(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Replace the settings (timeouts apply to new state changes; the table keeps its entries,
    /// takes the new bound and full policy; the hash seed of an existing table does not change).
    pub fn set_settings(&mut self, settings: Settings) {
        self.timeouts = timeouts_of(&settings);
        self.conns.set_max(settings.conn_tab_max);
        self.conns.set_policy(policy_of(&settings));
        self.settings = settings;
    }

    /// The per-state timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Director-wide counters.
    pub fn counters(&self) -> DirectorCounters {
        self.counters
    }

    /// The connection table (read-only: listings, metrics).
    pub fn conns(&self) -> &ConnTable {
        &self.conns
    }

    // ---- control plane -------------------------------------------------------------------

    /// Apply one ipvsadm rule (`-A`, `-E`, `-D`, `-a`, `-e`, `-d`, `-C`).
    pub fn apply(&mut self, rule: &Rule, now: Time) -> Result<(), DirectorError> {
        match rule {
            Rule::AddService(spec) => self.add_service(spec),
            Rule::EditService(spec) => self.edit_service(spec),
            Rule::DeleteService(key) => self.del_service(key, now),
            Rule::AddDest(key, d) => self.add_dest(key, d, now),
            Rule::EditDest(key, d) => self.edit_dest(key, d),
            Rule::DeleteDest(key, addr, port) => self.del_dest(key, *addr, *port, now),
            Rule::Clear => {
                let keys: Vec<ServiceKey> = self.svc_index.keys().copied().collect();
                for k in keys {
                    self.del_service(&k, now)?;
                }
                Ok(())
            }
        }
    }

    fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), DirectorError> {
        if self.svc_index.contains_key(&spec.key) {
            return Err(DirectorError::ServiceExists);
        }
        if spec.key.port == 0 && spec.persistence.is_none() {
            return Err(DirectorError::PortZeroWithoutPersistence);
        }
        let mut sched = new_scheduler(spec.scheduler, spec.flags, self.settings.hash_seed);
        sched.update(&[]);
        let svc = Service {
            spec: *spec,
            sched,
            dests: Vec::new(),
            dest_ids: Vec::new(),
            stats: Stats::default(),
        };
        let id = match self.services.iter().position(Option::is_none) {
            Some(i) => {
                self.services[i] = Some(svc);
                SvcId(i as u32)
            }
            None => {
                self.services.push(Some(svc));
                SvcId((self.services.len() - 1) as u32)
            }
        };
        self.svc_index.insert(spec.key, id);
        *self.vips.entry(spec.key.addr).or_default() += 1;
        self.services_changed();
        Ok(())
    }

    fn edit_service(&mut self, spec: &ServiceSpec) -> Result<(), DirectorError> {
        let id = *self
            .svc_index
            .get(&spec.key)
            .ok_or(DirectorError::NoService)?;
        if spec.key.port == 0 && spec.persistence.is_none() {
            return Err(DirectorError::PortZeroWithoutPersistence);
        }
        let seed = self.settings.hash_seed;
        let svc = self.svc_mut(id).ok_or(DirectorError::NoService)?;
        if svc.spec.scheduler != spec.scheduler || svc.spec.flags != spec.flags {
            svc.sched = new_scheduler(spec.scheduler, spec.flags, seed);
            svc.sched.update(&svc.dests);
        }
        svc.spec = *spec;
        Ok(())
    }

    fn del_service(&mut self, key: &ServiceKey, now: Time) -> Result<(), DirectorError> {
        let id = *self.svc_index.get(key).ok_or(DirectorError::NoService)?;
        let dests: Vec<(IpAddr, u16)> = self
            .svc(id)
            .map(|s| s.dests.iter().map(|d| (d.addr, d.port)).collect())
            .unwrap_or_default();
        for (addr, port) in dests {
            self.del_dest(key, addr, port, now)?;
        }
        self.svc_index.remove(key);
        if let Some(n) = self.vips.get_mut(&key.addr) {
            *n -= 1;
            if *n == 0 {
                self.vips.remove(&key.addr);
            }
        }
        self.services_changed();
        if let Some(slot) = self.services.get_mut(id.0 as usize) {
            *slot = None;
        }
        Ok(())
    }

    fn add_dest(&mut self, key: &ServiceKey, d: &DestSpec, now: Time) -> Result<(), DirectorError> {
        let id = *self.svc_index.get(key).ok_or(DirectorError::NoService)?;
        if key.addr.is_ipv4() != d.addr.is_ipv4() {
            return Err(DirectorError::MixedFamily);
        }
        let port = self.dest_port(key, d);
        if self
            .svc(id)
            .is_some_and(|s| s.dests.iter().any(|x| x.addr == d.addr && x.port == port))
        {
            return Err(DirectorError::DestExists);
        }
        let mut dest = Dest::new(d.addr, port, d.fwd, d.weight);
        dest.u_threshold = d.u_threshold;
        dest.l_threshold = d.l_threshold;
        // A dest deleted less than `dest_trash_timeout` ago comes back with its connections.
        let trash_timeout = Time::from(self.settings.dest_trash_timeout_secs) * SEC;
        let revived = self.dests.iter().position(|s| {
            s.svc == id
                && matches!(&s.place, Place::Trash { dest: t, since }
                    if t.addr == d.addr && t.port == port && now.saturating_sub(*since) <= trash_timeout)
        });
        let did = match revived {
            Some(i) => {
                if let Place::Trash { dest: old, .. } = &self.dests[i].place {
                    dest.active_conns = old.active_conns;
                    dest.inactive_conns = old.inactive_conns;
                    dest.persist_conns = old.persist_conns;
                }
                DestId(i as u32)
            }
            None => self.alloc_dest(id),
        };
        dest.update_overload();
        let Some(svc) = self.svc_mut(id) else {
            return Err(DirectorError::NoService);
        };
        svc.dests.push(dest);
        svc.dest_ids.push(did);
        let idx = svc.dests.len() - 1;
        svc.sched.update(&svc.dests);
        self.dests[did.0 as usize].place = Place::Live(idx);
        Ok(())
    }

    fn alloc_dest(&mut self, svc: SvcId) -> DestId {
        let slot = DestSlot {
            svc,
            place: Place::Free,
            stats: Stats::default(),
            refs: 0,
        };
        match self.free_dests.pop() {
            Some(i) => {
                self.dests[i as usize] = slot;
                DestId(i)
            }
            None => {
                self.dests.push(slot);
                DestId((self.dests.len() - 1) as u32)
            }
        }
    }

    fn dest_port(&self, key: &ServiceKey, d: &DestSpec) -> u16 {
        // DR and TUN cannot change the port: the dest receives the virtual port (IPVS ignores
        // the given port for them). A port-0 service forwards every port unchanged.
        if key.port == 0 || d.fwd != FwdMethod::Masq {
            key.port
        } else {
            d.port
        }
    }

    fn find_dest(&self, id: SvcId, addr: IpAddr, port: u16) -> Option<usize> {
        self.svc(id)?
            .dests
            .iter()
            .position(|d| d.addr == addr && d.port == port)
    }

    fn edit_dest(&mut self, key: &ServiceKey, d: &DestSpec) -> Result<(), DirectorError> {
        let id = *self.svc_index.get(key).ok_or(DirectorError::NoService)?;
        let port = self.dest_port(key, d);
        let idx = self
            .find_dest(id, d.addr, port)
            .ok_or(DirectorError::NoDest)?;
        let svc = self.svc_mut(id).ok_or(DirectorError::NoService)?;
        let dest = &mut svc.dests[idx];
        dest.weight = d.weight;
        dest.fwd = d.fwd;
        dest.u_threshold = d.u_threshold;
        dest.l_threshold = d.l_threshold;
        dest.update_overload();
        svc.sched.update(&svc.dests);
        Ok(())
    }

    fn del_dest(
        &mut self,
        key: &ServiceKey,
        addr: IpAddr,
        port: u16,
        now: Time,
    ) -> Result<(), DirectorError> {
        let id = *self.svc_index.get(key).ok_or(DirectorError::NoService)?;
        let idx = self
            .find_dest(id, addr, port)
            .or_else(|| self.find_dest(id, addr, key.port))
            .ok_or(DirectorError::NoDest)?;
        let svc = self.svc_mut(id).ok_or(DirectorError::NoService)?;
        let dest = svc.dests.remove(idx);
        let did = svc.dest_ids.remove(idx);
        svc.sched.update(&svc.dests);
        let moved: Vec<DestId> = svc.dest_ids[idx..].to_vec();
        for (k, m) in moved.into_iter().enumerate() {
            self.dests[m.0 as usize].place = Place::Live(idx + k);
        }
        self.dests[did.0 as usize].place = Place::Trash { dest, since: now };
        if self.settings.expire_nodest_conn {
            // Expire the dest's connections at once: their next packets find no connection and
            // are treated as new (SYN → rescheduled, others → the expired-connection reply).
            let doomed: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.dest == did.0)
                .map(|(i, _)| i)
                .collect();
            for cid in doomed {
                if let Some(c) = self.conns.remove(cid) {
                    self.unbind(&c);
                }
            }
        }
        self.reap_dest(did, now);
        Ok(())
    }

    /// Free a trashed dest once its grace time is over and nothing refers to it.
    fn reap_dest(&mut self, did: DestId, now: Time) {
        let trash_timeout = Time::from(self.settings.dest_trash_timeout_secs) * SEC;
        let Some(slot) = self.dests.get_mut(did.0 as usize) else {
            return;
        };
        if let Place::Trash { since, .. } = slot.place
            && slot.refs == 0
            && now.saturating_sub(since) > trash_timeout
        {
            slot.place = Place::Free;
            self.free_dests.push(did.0);
        }
    }

    // ---- lookups -------------------------------------------------------------------------

    fn svc(&self, id: SvcId) -> Option<&Service> {
        self.services.get(id.0 as usize)?.as_ref()
    }

    fn svc_mut(&mut self, id: SvcId) -> Option<&mut Service> {
        self.services.get_mut(id.0 as usize)?.as_mut()
    }

    /// After a service was added or deleted: rebuild [`Director::maybe_vip`]'s filter from
    /// the VIPs and forget [`Director::find_service`]'s last hit.
    fn services_changed(&mut self) {
        self.last_svc.set(None);
        let mut f = [0u64; 4];
        for a in self.vips.keys() {
            let (bytes, v6) = crate::conn::pack(*a);
            let b = vip_bit(&bytes, v6);
            if let Some(w) = f.get_mut(b / 64) {
                *w |= 1 << (b % 64);
            }
        }
        self.vip_filter = f;
    }

    /// False when `addr` (IPv4 in the first four bytes and zeros after, as
    /// [`rvs_wire::flow::Flow`] holds it) is certainly not a VIP; true when it may be one. A
    /// 256-bit filter: it answers without a hash-map lookup, so the per-packet path can tell a
    /// packet to a VIP (never a NAT dest's reply) from one that might be a reply.
    #[inline(always)]
    pub fn maybe_vip(&self, addr: &[u8; 16], v6: bool) -> bool {
        let b = vip_bit(addr, v6);
        self.vip_filter
            .get(b / 64)
            .is_some_and(|w| w & (1 << (b % 64)) != 0)
    }

    /// [`Director::maybe_vip`] of an [`IpAddr`].
    #[inline]
    pub fn maybe_vip_ip(&self, addr: IpAddr) -> bool {
        let (bytes, v6) = crate::conn::pack(addr);
        self.maybe_vip(&bytes, v6)
    }

    /// True when some service uses `addr` as its virtual address.
    #[inline]
    pub fn is_vip(&self, addr: IpAddr) -> bool {
        self.vips.contains_key(&addr)
    }

    /// True when `addr` is the address of a live NAT dest (its replies come through us).
    pub fn is_masq_dest(&self, addr: IpAddr) -> bool {
        self.services.iter().flatten().any(|s| {
            s.dests
                .iter()
                .any(|d| d.addr == addr && d.fwd == FwdMethod::Masq)
        })
    }

    /// The service for a packet to `vaddr:vport`: the exact service, else the port-0 one.
    #[inline]
    pub fn find_service(&self, protocol: u8, vaddr: IpAddr, vport: u16) -> Option<SvcId> {
        let protocol = Protocol::from_number(protocol)?;
        let key = ServiceKey {
            protocol,
            addr: vaddr,
            port: vport,
        };
        // New connections tend to come to one service after another: the last hit answers
        // without hashing (a hash-map lookup is ~100 instructions, a tenth of a SYN's
        // scheduling and insert).
        if let Some((k, svc)) = self.last_svc.get()
            && k == key
        {
            return Some(svc);
        }
        // The exact service first: a new connection to a service finds it in one lookup. Only
        // a miss asks whether the address is a VIP at all before trying its port-0 service.
        let svc = match self.svc_index.get(&key) {
            Some(&svc) => svc,
            None => {
                if !self.vips.contains_key(&vaddr) {
                    return None;
                }
                *self.svc_index.get(&ServiceKey { port: 0, ..key })?
            }
        };
        self.last_svc.set(Some((key, svc)));
        Some(svc)
    }

    /// Set a service's reply-policy overrides (kept across the service's deletion and
    /// re-creation, like configuration).
    pub fn set_service_policy(&mut self, key: ServiceKey, policy: ServicePolicy) {
        if policy == ServicePolicy::default() {
            self.policies.remove(&key);
        } else {
            self.policies.insert(key, policy);
        }
    }

    /// The reply to a non-SYN segment without connection on service `svc`.
    pub fn expired_reply(&self, svc: SvcId) -> ExpiredReply {
        self.svc(svc)
            .and_then(|s| self.policies.get(&s.spec.key))
            .and_then(|p| p.expired_reply)
            .unwrap_or(self.settings.expired_reply)
    }

    /// The reply to a new connection without usable dest on service `svc`.
    pub fn nodest_reply(&self, svc: SvcId) -> ExpiredReply {
        self.svc(svc)
            .and_then(|s| self.policies.get(&s.spec.key))
            .and_then(|p| p.nodest_reply)
            .unwrap_or(self.settings.nodest_reply)
    }

    /// Whether echo requests to `vip` are answered in the dataplane: a service on that VIP that
    /// says so decides (yes wins over no), else the director-wide setting.
    pub fn echo_reply(&self, vip: IpAddr) -> bool {
        let mut any = None;
        for (k, p) in &self.policies {
            if k.addr == vip
                && self.svc_index.contains_key(k)
                && let Some(v) = p.icmp_echo_reply
            {
                any = Some(any.unwrap_or(false) || v);
            }
        }
        any.unwrap_or(self.settings.icmp_echo_reply)
    }

    /// The service's configuration.
    pub fn service_spec(&self, id: SvcId) -> Option<&ServiceSpec> {
        self.svc(id).map(|s| &s.spec)
    }

    /// The connection a client→VIP packet belongs to.
    #[inline]
    pub fn conn_in(&self, key: &FlowKey) -> Option<ConnId> {
        self.conns.lookup_in(key)
    }

    /// The NAT connection a dest→client packet (RIP:rport → CIP:cport) belongs to.
    #[inline]
    pub fn conn_out(&self, key: &FlowKey) -> Option<ConnId> {
        self.conns.lookup_out(key)
    }

    /// [`Director::conn_in`], treating a connection whose timer ran out as gone (and removing
    /// it) even when the periodic expiry has not swept it yet.
    #[inline]
    pub fn conn_in_live(&mut self, key: &FlowKey, now: Time) -> Option<ConnId> {
        let id = self.conns.lookup_in(key)?;
        self.live(id, now)
    }

    /// [`Director::conn_in_live`] of a [`ConnTable::probe`] (the key hashed once per packet).
    #[inline]
    pub fn conn_in_live_probe(&mut self, p: &Probe, now: Time) -> Option<ConnId> {
        let id = self.conns.lookup_in_probe(p)?;
        self.live(id, now)
    }

    /// [`Director::conn_in_live_probe`] of a client → VIP segment with TCP `flags` (0 for UDP),
    /// with IPVS's `conn_reuse_mode` ([`Settings::conn_reuse_mode`]): a SYN that finds its
    /// connection ended (TIME_WAIT, CLOSE; FIN_WAIT of a DR or TUN connection with bit 2)
    /// expires it at once and gets `None`, so that the SYN is scheduled as a new connection
    /// rather than reopening the old one on its old dest.
    pub fn conn_in_live_reuse(&mut self, p: &Probe, flags: u8, now: Time) -> Option<ConnId> {
        use rvs_wire::parse::tcp_flags::{ACK, RST, SYN};
        let id = self.conn_in_live_probe(p, now)?;
        let mode = self.settings.conn_reuse_mode;
        if mode == 0 || flags & (SYN | ACK | RST) != SYN {
            return Some(id);
        }
        let c = self.conns.get(id)?;
        let ended = match c.state {
            ConnState::Tcp(TcpState::TimeWait | TcpState::Close) => mode & 1 != 0,
            ConnState::Tcp(TcpState::FinWait) => mode & 2 != 0 && c.fwd != FwdMethod::Masq,
            _ => false,
        };
        if !ended || c.control.is_some() {
            return Some(id);
        }
        self.expire_now(id, now);
        None
    }

    /// [`Director::conn_out`] with the same treatment of run-out timers.
    #[inline]
    pub fn conn_out_live(&mut self, key: &FlowKey, now: Time) -> Option<ConnId> {
        let id = self.conns.lookup_out(key)?;
        self.live(id, now)
    }

    /// The live connection of a fast-read client → VIP frame and the fields a packet of it
    /// needs ([`ConnTable::hit_in_flow`]), with no side effect: `None` both when there is none
    /// and when its timer ran out (which [`Director::conn_in_live_probe`] then handles). For
    /// the dataplane's fast paths, which must leave every unusual case to the full path
    /// untouched.
    #[inline(always)]
    pub fn conn_in_hit_flow(
        &self,
        f: &rvs_wire::flow::Flow,
        hash: u64,
        hint: crate::conn::Hint,
        now: Time,
    ) -> Option<(ConnId, Hot)> {
        self.conns.hit_in_flow(f, hash, hint, now)
    }

    /// [`Director::conn_out_live`] of a [`ConnTable::probe`].
    #[inline]
    pub fn conn_out_live_probe(&mut self, p: &Probe, now: Time) -> Option<ConnId> {
        let id = self.conns.lookup_out_probe(p)?;
        self.live(id, now)
    }

    #[inline]
    fn live(&mut self, id: ConnId, now: Time) -> Option<ConnId> {
        let expires = self.conns.expires(id)?;
        if expires > now {
            return Some(id);
        }
        self.expire_now(id, now);
        None
    }

    /// End connection `id` as its timeout would: removed, counted as expired, unbound from its
    /// dest, its template (if any) given a fresh period.
    fn expire_now(&mut self, id: ConnId, now: Time) {
        if let Some(c) = self.conns.remove(id) {
            self.counters.expired += 1;
            self.unbind(&c);
            self.refresh_template(&c, c.expires.min(now), now);
        }
    }

    /// The client side of a connection (caddr:cport → vaddr:vport), without decoding the rest.
    #[inline]
    pub fn conn_key(&self, id: ConnId) -> Option<FlowKey> {
        self.conns.client_key(id)
    }

    /// The fields a packet of a connection needs (method, dest), without decoding the rest.
    #[inline]
    pub fn conn_hot(&self, id: ConnId) -> Option<Hot> {
        self.conns.hot(id)
    }

    /// A connection by id (decoded from the table's compact entry).
    #[inline]
    pub fn conn(&self, id: ConnId) -> Option<Conn> {
        self.conns.get(id)
    }

    /// A dest by id, live or in the trash.
    pub fn dest(&self, id: DestId) -> Option<&Dest> {
        let slot = self.dests.get(id.0 as usize)?;
        match &slot.place {
            Place::Live(i) => self.svc(slot.svc)?.dests.get(*i),
            Place::Trash { dest, .. } => Some(dest),
            Place::Free => None,
        }
    }

    fn dest_mut(&mut self, id: DestId) -> Option<&mut Dest> {
        let slot = self.dests.get_mut(id.0 as usize)?;
        match &mut slot.place {
            Place::Live(i) => {
                let i = *i;
                let svc = slot.svc;
                self.services
                    .get_mut(svc.0 as usize)?
                    .as_mut()?
                    .dests
                    .get_mut(i)
            }
            Place::Trash { dest, .. } => Some(dest),
            Place::Free => None,
        }
    }

    /// True when the dest is live (not deleted).
    #[inline]
    pub fn dest_is_live(&self, id: DestId) -> bool {
        matches!(
            self.dests.get(id.0 as usize).map(|s| &s.place),
            Some(Place::Live(_))
        )
    }

    /// Every service with its live dests, in creation order of ids.
    pub fn services(&self) -> Vec<ServiceView<'_>> {
        let mut out: Vec<ServiceView<'_>> = self
            .services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                let dests = s
                    .dests
                    .iter()
                    .zip(&s.dest_ids)
                    .filter_map(|(d, id)| {
                        Some(DestView {
                            id: *id,
                            dest: d,
                            stats: &self.dests.get(id.0 as usize)?.stats,
                        })
                    })
                    .collect();
                Some(ServiceView {
                    id: SvcId(i as u32),
                    spec: &s.spec,
                    dests,
                    stats: &s.stats,
                })
            })
            .collect();
        out.sort_by_key(|v| v.spec.key);
        out
    }

    /// Dests deleted but still in the trash (their connections wait for them to come back or
    /// to time out), with the protocol of their service.
    pub fn trashed_dests(&self) -> impl Iterator<Item = (Protocol, &Dest)> + '_ {
        self.dests.iter().filter_map(|slot| match &slot.place {
            Place::Trash { dest, .. } => {
                let svc = self.services.get(slot.svc.0 as usize)?.as_ref()?;
                Some((svc.spec.key.protocol, dest))
            }
            _ => None,
        })
    }

    // ---- the data path -------------------------------------------------------------------

    /// Schedule a new connection for `key` (caddr:cport → vaddr:vport) on service `svc`,
    /// honouring persistence templates, and insert it.
    pub fn new_conn(
        &mut self,
        svc_id: SvcId,
        key: &FlowKey,
        now: Time,
    ) -> Result<Forward, NewConnError> {
        self.new_conn_hashed(svc_id, key, None, now)
    }

    /// [`Director::new_conn`] with the table's hash of `key` when the caller has it
    /// ([`Probe::hash`]; any other value would index the connection where lookups miss it).
    pub fn new_conn_hashed(
        &mut self,
        svc_id: SvcId,
        key: &FlowKey,
        hash: Option<u64>,
        now: Time,
    ) -> Result<Forward, NewConnError> {
        self.new_conn_with(svc_id, key, hash, None, now)
    }

    /// [`Director::new_conn_hashed`] and then [`Director::conn_packet_in`] of the packet that
    /// opens the connection (TCP `tcp_flags`, 0 for UDP; `bytes` long), in one pass, for a
    /// caller whose lookup of `key` under `hash` ([`Director::conn_in_live_reuse`] of a
    /// [`Probe`]) has just missed: the entry is made in the state and with the timer that
    /// packet leaves it in, and the packet is counted with the new connection. Results,
    /// counters and table contents are those of the two calls; the entry is only filed once in
    /// the timer wheel (at its real expiry, where the two calls filed it at the initial state's
    /// and left the sweep to move it), and the index is not searched again for the key. (So
    /// sweeps free slots in another order, and later connections may get other slot ids.)
    #[allow(clippy::too_many_arguments)]
    pub fn new_conn_in(
        &mut self,
        svc_id: SvcId,
        key: &FlowKey,
        hash: u64,
        tcp_flags: u8,
        bytes: usize,
        now: Time,
    ) -> Result<Forward, NewConnError> {
        let opening = Opening { tcp_flags, bytes };
        self.new_conn_with(svc_id, key, Some(hash), Some(opening), now)
    }

    /// The body of [`Director::new_conn_hashed`] and [`Director::new_conn_in`].
    #[inline(always)]
    fn new_conn_with(
        &mut self,
        svc_id: SvcId,
        key: &FlowKey,
        hash: Option<u64>,
        opening: Option<Opening>,
        now: Time,
    ) -> Result<Forward, NewConnError> {
        let svc = self.svc(svc_id).ok_or(NewConnError::NoDest)?;
        let persistence = svc.spec.persistence;
        let template_key = persistence.map(|_| FlowKey {
            protocol: key.protocol,
            src: svc.spec.netmask.apply(key.src),
            sport: 0,
            dst: key.dst,
            dport: svc.spec.key.port,
        });
        let mut chosen: Option<(DestId, ConnId)> = None;
        if let Some(tk) = template_key
            && let Some(tid) = self.conns.lookup_template(&tk)
            && let Some(t) = self.conns.get(tid)
        {
            let did = DestId(t.dest);
            let usable = match self.dest(did) {
                Some(d) if self.dest_is_live(did) => {
                    d.weight > 0 || !self.settings.expire_quiescent_template
                }
                _ => false,
            };
            if usable {
                chosen = Some((did, tid));
            } else if let Some(t) = self.conns.remove(tid) {
                // A template whose dest is gone (or quiescent, with expire_quiescent_template)
                // no longer binds its clients: schedule afresh.
                self.unbind(&t);
            }
        }
        let (did, template) = match chosen {
            Some((d, t)) => (d, Some(t)),
            None => {
                let svc = self.svc_mut(svc_id).ok_or(NewConnError::NoDest)?;
                let flow = SchedFlow {
                    protocol: key.protocol,
                    caddr: key.src,
                    cport: key.sport,
                    vaddr: key.dst,
                    vport: key.dport,
                };
                let Some(idx) = svc.sched.schedule(&svc.dests, &flow) else {
                    self.counters.no_dest += 1;
                    return Err(NewConnError::NoDest);
                };
                let Some(&did) = svc.dest_ids.get(idx) else {
                    self.counters.no_dest += 1;
                    return Err(NewConnError::NoDest);
                };
                let mut template = None;
                if let (Some(tk), Some(p)) = (template_key, persistence) {
                    let d = self.dest(did).ok_or(NewConnError::NoDest)?;
                    let t = Conn {
                        key: tk,
                        daddr: d.addr,
                        dport: d.port,
                        dest: did.0,
                        fwd: d.fwd,
                        state: ConnState::Template,
                        flags: ConnFlags::TEMPLATE,
                        expires: now + Time::from(p) * SEC,
                        control: None,
                    };
                    template = Some(self.insert(t, None, false, now)?);
                }
                (did, template)
            }
        };
        let d = self.dest(did).ok_or(NewConnError::NoDest)?;
        let (daddr, fwd) = (d.addr, d.fwd);
        let dport = if d.port == 0 { key.dport } else { d.port };
        let mut state = ConnState::initial(key.protocol);
        if let Some(o) = opening {
            // The opening packet's transition, as `account_live` makes it. (The dest was just
            // scheduled, or taken from a template after `dest_is_live`: it is live, so that
            // packet would not have been refused.)
            debug_assert!(self.dest_is_live(did));
            state = state.transition(inbound_direction(fwd), o.tcp_flags);
        }
        let conn = Conn {
            key: *key,
            daddr,
            dport,
            dest: did.0,
            fwd,
            state,
            flags: ConnFlags::default(),
            expires: now + self.timeouts.timeout(state),
            // The template stays while it controls connections (the table pins it).
            control: template,
        };
        let cid = self.insert(conn, hash, opening.is_some(), now)?;
        if let (Some(tid), Some(p)) = (template, persistence) {
            // A new connection gives its template a whole persistence period again.
            let exp = now + Time::from(p) * SEC;
            if self.conns.get(tid).is_some_and(|t| t.expires < exp) {
                self.conns.touch(tid, exp);
            }
        }
        if let Some(s) = self.svc_mut(svc_id) {
            s.stats.conn();
        }
        let slot_svc = self.dests.get_mut(did.0 as usize).map(|slot| {
            slot.stats.conn();
            if let Some(o) = opening {
                slot.stats.inbound(o.bytes);
            }
            slot.svc
        });
        // The opening packet in its dest's service's counters, as `account_live` counts it.
        if let Some(o) = opening
            && let Some(s) = slot_svc.and_then(|s| self.svc_mut(s))
        {
            s.stats.inbound(o.bytes);
        }
        Ok(Forward {
            conn: cid,
            daddr,
            dport,
            fwd,
            dest: did,
        })
    }

    /// Insert `conn` and bind it to its dest; `absent`: the caller has just missed its key
    /// under `hash` ([`ConnTable::insert_absent`]).
    fn insert(
        &mut self,
        conn: Conn,
        hash: Option<u64>,
        absent: bool,
        now: Time,
    ) -> Result<ConnId, NewConnError> {
        let template = conn.flags.contains(ConnFlags::TEMPLATE);
        let did = DestId(conn.dest);
        let state = conn.state;
        let made = match hash {
            Some(h) if absent => self.conns.insert_absent(conn, h, now),
            _ => self.conns.insert_hashed(conn, hash, now),
        };
        match made {
            Ok((id, evicted)) => {
                if let Some(e) = evicted {
                    self.counters.evicted += 1;
                    self.unbind(&e);
                    self.refresh_template(&e, e.expires.min(now), now);
                }
                if let Some(slot) = self.dests.get_mut(did.0 as usize) {
                    slot.refs += 1;
                }
                if let Some(d) = self.dest_mut(did) {
                    if template {
                        d.persist_conns += 1;
                    } else if is_active(state) {
                        d.active_conns += 1;
                    } else {
                        d.inactive_conns += 1;
                    }
                    d.update_overload();
                }
                Ok(id)
            }
            Err(InsertError::Exists(_)) => Err(NewConnError::Exists),
            Err(InsertError::Full) => {
                self.counters.table_full += 1;
                Err(NewConnError::TableFull)
            }
        }
    }

    /// Undo a removed entry's bindings: dest counters, template references, trash reaping.
    fn unbind(&mut self, c: &Conn) {
        let did = DestId(c.dest);
        if let Some(d) = self.dest_mut(did) {
            if c.flags.contains(ConnFlags::TEMPLATE) {
                d.persist_conns = d.persist_conns.saturating_sub(1);
            } else if is_active(c.state) {
                d.active_conns = d.active_conns.saturating_sub(1);
            } else {
                d.inactive_conns = d.inactive_conns.saturating_sub(1);
            }
            d.update_overload();
        }
        if let Some(slot) = self.dests.get_mut(did.0 as usize) {
            slot.refs = slot.refs.saturating_sub(1);
        }
    }

    /// The persistence template key and period (in [`Time`] units) for a client → VIP key, when
    /// its service is persistent.
    fn template_of(&self, key: &FlowKey) -> Option<(FlowKey, Time)> {
        let svc = self.svc(self.find_service(key.protocol, key.dst, key.dport)?)?;
        let period = Time::from(svc.spec.persistence?) * SEC;
        let tk = FlowKey {
            protocol: key.protocol,
            src: svc.spec.netmask.apply(key.src),
            sport: 0,
            dst: key.dst,
            dport: svc.spec.key.port,
        };
        Some((tk, period))
    }

    /// Persistence counts from the end of a client's last connection (`-p` is "seconds of
    /// inactivity" to operators; IPVS re-arms a template that still controls connections rather
    /// than expiring it): when connection `c`, which `ended` at that time, leaves the table, its
    /// template gets at least a whole period from then.
    fn refresh_template(&mut self, c: &Conn, ended: Time, now: Time) {
        let Some(tid) = c.control else { return };
        let Some((_, period)) = self.template_of(&c.key) else {
            return;
        };
        let until = ended.saturating_add(period);
        if until > now && self.conns.get(tid).is_some_and(|t| t.expires < until) {
            self.conns.touch(tid, until);
        }
    }

    /// Account a packet on a connection: TCP state transition, timer, statistics.
    ///
    /// `dir` is [`Direction::Input`] for client→dest packets of NAT connections,
    /// [`Direction::Output`] for dest→client packets (NAT), [`Direction::InputOnly`] for DR and
    /// TUN. `tcp_flags` is the TCP flags byte (0 for UDP). Returns what to forward with, or why not.
    #[inline]
    pub fn conn_packet(
        &mut self,
        id: ConnId,
        dir: Direction,
        tcp_flags: u8,
        bytes: usize,
        now: Time,
    ) -> Result<Forward, ConnDrop> {
        self.account(id, Some(dir), tcp_flags, bytes, now)
    }

    /// [`Director::conn_packet`] for a client → VIP packet: the direction follows from the
    /// connection's forwarding method ([`Direction::Input`] for NAT, [`Direction::InputOnly`]
    /// for DR and TUN), read from the same decoded entry.
    #[inline(always)]
    pub fn conn_packet_in(
        &mut self,
        id: ConnId,
        tcp_flags: u8,
        bytes: usize,
        now: Time,
    ) -> Result<Forward, ConnDrop> {
        self.account(id, None, tcp_flags, bytes, now)
    }

    /// The body of [`Director::conn_packet`]; `dir: None` = inbound, by forwarding method.
    #[inline(always)]
    fn account(
        &mut self,
        id: ConnId,
        dir: Option<Direction>,
        tcp_flags: u8,
        bytes: usize,
        now: Time,
    ) -> Result<Forward, ConnDrop> {
        let c = self.account_hot(id, dir, tcp_flags, bytes, now)?;
        Ok(Forward {
            conn: id,
            daddr: self.conns.interned(c.daddr_id),
            dport: c.dport,
            fwd: c.fwd,
            dest: DestId(c.dest),
        })
    }

    /// Account a client → VIP packet of a connection as [`Director::conn_packet_in`] does (state,
    /// timer, counters), for a caller that has just read its fields `hot`
    /// ([`Director::conn_in_hit_flow`]) and found its dest live ([`Director::dest_is_live`]),
    /// nothing having changed since: the entry is not read nor the dest checked again.
    #[inline(always)]
    pub fn conn_account_in(
        &mut self,
        id: ConnId,
        hot: &Hot,
        tcp_flags: u8,
        bytes: usize,
        now: Time,
    ) {
        self.account_live(id, hot, None, tcp_flags, bytes, now);
    }

    /// The interned address [`Hot::daddr_id`] names.
    #[inline(always)]
    pub fn interned_addr(&self, id: u32) -> IpAddr {
        self.conns.interned(id)
    }

    /// The body of [`Director::account`].
    #[inline(always)]
    fn account_hot(
        &mut self,
        id: ConnId,
        dir: Option<Direction>,
        tcp_flags: u8,
        bytes: usize,
        now: Time,
    ) -> Result<Hot, ConnDrop> {
        // The fields a packet needs, read in place (no decode of the whole entry).
        let c = self.conns.hot(id).ok_or(ConnDrop::Gone)?;
        if !self.dest_is_live(DestId(c.dest)) {
            self.counters.dest_unavailable += 1;
            return Err(ConnDrop::DestUnavailable);
        }
        self.account_live(id, &c, dir, tcp_flags, bytes, now);
        Ok(c)
    }

    /// [`Director::account_hot`] once the entry is read (`c`) and its dest found live.
    #[inline(always)]
    fn account_live(
        &mut self,
        id: ConnId,
        c: &Hot,
        dir: Option<Direction>,
        tcp_flags: u8,
        bytes: usize,
        now: Time,
    ) {
        let dir = dir.unwrap_or(inbound_direction(c.fwd));
        let did = DestId(c.dest);
        let old = c.state;
        let new = old.transition(dir, tcp_flags);
        let expires = now + self.timeouts.timeout(new);
        self.conns.set_state(id, new, expires);
        if is_active(old) != is_active(new)
            && let Some(d) = self.dest_mut(did)
        {
            if is_active(new) {
                d.inactive_conns = d.inactive_conns.saturating_sub(1);
                d.active_conns += 1;
            } else {
                d.active_conns = d.active_conns.saturating_sub(1);
                d.inactive_conns += 1;
            }
            d.update_overload();
        }
        let outbound = dir == Direction::Output;
        let slot_svc = self.dests.get_mut(did.0 as usize).map(|slot| {
            if outbound {
                slot.stats.outbound(bytes)
            } else {
                slot.stats.inbound(bytes)
            }
            slot.svc
        });
        if let Some(svc) = slot_svc.and_then(|s| self.svc_mut(s)) {
            if outbound {
                svc.stats.outbound(bytes)
            } else {
                svc.stats.inbound(bytes)
            }
        }
    }

    /// Expire due connections and templates (bounded work per call) and reap trashed dests.
    /// Returns how many entries were expired.
    pub fn expire(&mut self, now: Time) -> usize {
        let mut buf = core::mem::take(&mut self.scratch);
        buf.clear();
        let n = self.conns.expire(now, EXPIRE_BUDGET, &mut buf);
        // Templates whose connections just ended get a fresh period (`refresh_template`). The
        // table may even have expired such a template in this same sweep, as soon as its last
        // connection stopped pinning it: those are put back below.
        let mut put_back: HashMap<FlowKey, Time> = HashMap::new();
        for c in &buf {
            let Some(tid) = c.control else { continue };
            let Some((tk, period)) = self.template_of(&c.key) else {
                continue;
            };
            let until = c.expires.min(now).saturating_add(period);
            match self.conns.get(tid) {
                Some(t) if t.expires < until => {
                    self.conns.touch(tid, until);
                }
                Some(_) => {}
                None if until > now => {
                    let u = put_back.entry(tk).or_insert(until);
                    *u = (*u).max(until);
                }
                None => {}
            }
        }
        for c in buf.drain(..) {
            if c.flags.contains(ConnFlags::TEMPLATE)
                && let Some(&until) = put_back.get(&c.key)
            {
                // Its slot was just freed, so it fits; it keeps its dest binding.
                let kept = Conn {
                    expires: until,
                    ..c
                };
                if let Ok((_, evicted)) = self.conns.insert(kept, now) {
                    if let Some(e) = evicted {
                        self.counters.evicted += 1;
                        self.unbind(&e);
                    }
                    continue;
                }
            }
            self.counters.expired += 1;
            self.unbind(&c);
        }
        self.scratch = buf;
        let trashed: Vec<DestId> = self
            .dests
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.place, Place::Trash { .. }))
            .map(|(i, _)| DestId(i as u32))
            .collect();
        for d in trashed {
            self.reap_dest(d, now);
        }
        n
    }

    /// Update every service's and dest's rate estimate (call at least every 2 s).
    pub fn estimate_rates(&mut self, now: Time) {
        for s in self.services.iter_mut().flatten() {
            s.stats.estimate(now);
        }
        for d in &mut self.dests {
            d.stats.estimate(now);
        }
    }

    /// Zero the statistics (`ipvsadm -Z`): of one service, or of all when `key` is `None`.
    pub fn zero(&mut self, key: Option<&ServiceKey>) -> Result<(), DirectorError> {
        let ids: Vec<SvcId> = match key {
            Some(k) => vec![*self.svc_index.get(k).ok_or(DirectorError::NoService)?],
            None => self.svc_index.values().copied().collect(),
        };
        for id in ids {
            let dest_ids = match self.svc_mut(id) {
                Some(s) => {
                    s.stats.zero();
                    s.dest_ids.clone()
                }
                None => continue,
            };
            for d in dest_ids {
                if let Some(slot) = self.dests.get_mut(d.0 as usize) {
                    slot.stats.zero();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::rules::parse_line;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn add(d: &mut Director, vip: IpAddr, port: u16) {
        let line = format!("-A -t {} -s rr", std::net::SocketAddr::new(vip, port));
        d.apply(&parse_line(&line).unwrap().unwrap(), 0).unwrap();
    }

    fn del(d: &mut Director, vip: IpAddr, port: u16) {
        let line = format!("-D -t {}", std::net::SocketAddr::new(vip, port));
        d.apply(&parse_line(&line).unwrap().unwrap(), 0).unwrap();
    }

    /// Pseudo-random addresses of both families (xorshift; documentation ranges not needed:
    /// nothing is sent).
    fn addrs(n: usize, seed: u64) -> Vec<IpAddr> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if i % 2 == 0 {
                    IpAddr::V4(Ipv4Addr::from(s as u32))
                } else {
                    IpAddr::V6(Ipv6Addr::from(u128::from(s) << 64 | u128::from(s >> 7)))
                }
            })
            .collect()
    }

    /// The VIP filter never says "no" for a VIP, with services added and removed in any
    /// order, and says "no" for almost every other address (it is not all ones).
    #[test]
    fn vip_filter_covers_every_vip_and_little_else() {
        let mut d = Director::new(Settings::default());
        let vips = addrs(40, 0x5eed);
        for (i, &v) in vips.iter().enumerate() {
            add(&mut d, v, 80);
            if i % 3 == 0 {
                add(&mut d, v, 443);
            }
        }
        assert!(
            vips.iter().all(|&v| d.maybe_vip_ip(v)),
            "a VIP filtered out"
        );
        // Remove every other VIP (both services where there are two), and one of the two
        // services of some others.
        for (i, &v) in vips.iter().enumerate() {
            if i % 2 == 0 {
                del(&mut d, v, 80);
                if i % 3 == 0 {
                    del(&mut d, v, 443);
                }
            } else if i % 3 == 0 {
                del(&mut d, v, 80);
            }
        }
        for (i, &v) in vips.iter().enumerate() {
            assert_eq!(d.is_vip(v), i % 2 == 1, "{v}");
            if d.is_vip(v) {
                assert!(d.maybe_vip_ip(v), "VIP {v} filtered out");
                let (bytes, v6) = crate::conn::pack(v);
                assert!(d.maybe_vip(&bytes, v6), "{v}");
            }
        }
        // 20 VIPs in 256 bits: expect ~8 % false positives; all ones would be 100 %.
        let others = addrs(4000, 0xfeed);
        let yes = others.iter().filter(|&&a| d.maybe_vip_ip(a)).count();
        assert!(yes < 800, "{yes} of 4000 non-VIPs pass the filter");
        // With no service left, nothing passes.
        for (i, &v) in vips.iter().enumerate() {
            if i % 2 == 1 {
                del(&mut d, v, if i % 3 == 0 { 443 } else { 80 });
            }
        }
        assert!(others.iter().chain(&vips).all(|&a| !d.maybe_vip_ip(a)));
    }

    /// `find_service` without its last-hit memory.
    fn uncached(d: &Director, vaddr: IpAddr, port: u16) -> Option<SvcId> {
        let key = ServiceKey {
            protocol: Protocol::Tcp,
            addr: vaddr,
            port,
        };
        d.svc_index.get(&key).copied().or_else(|| {
            d.vips
                .contains_key(&vaddr)
                .then(|| d.svc_index.get(&ServiceKey { port: 0, ..key }).copied())
                .flatten()
        })
    }

    /// Lookups between services added and deleted (port-0 ones among them, and ids reused)
    /// answer as a lookup without the last-hit memory does.
    #[test]
    fn find_service_memory_never_outlives_a_change() {
        let mut d = Director::new(Settings::default());
        let vips = addrs(3, 11);
        let ports = [0u16, 80, 443];
        let mut live: Vec<(IpAddr, u16)> = Vec::new();
        let mut s = 0x2545_f491_u64;
        for round in 0..3000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = vips[(s % 3) as usize];
            let p = ports[((s >> 8) % 3) as usize];
            if round % 4 == 0 {
                if let Some(i) = live.iter().position(|&x| x == (v, p)) {
                    del(&mut d, v, p);
                    live.swap_remove(i);
                } else {
                    let line = if p == 0 {
                        format!("-A -t {} -s rr -p 60", std::net::SocketAddr::new(v, p))
                    } else {
                        format!("-A -t {} -s rr", std::net::SocketAddr::new(v, p))
                    };
                    d.apply(&parse_line(&line).unwrap().unwrap(), 0).unwrap();
                    live.push((v, p));
                }
            }
            for port in [80, 443, 8080] {
                assert_eq!(
                    d.find_service(6, v, port),
                    uncached(&d, v, port),
                    "round {round}: {v}:{port} with {live:?}"
                );
            }
        }
    }

    /// An IPv4 address and the IPv6 address with the same leading bytes are told apart.
    #[test]
    fn vip_bit_depends_on_the_family() {
        let differ = addrs(200, 7)
            .iter()
            .map(|&a| crate::conn::pack(a).0)
            .filter(|b| vip_bit(b, false) != vip_bit(b, true))
            .count();
        assert!(differ > 150, "{differ}");
    }
}
