//! The control socket: `rvsadm` (and anything speaking `rvs-api`) changes and reads the director
//! through it.
//!
//! The daemon listens on an abstract Unix socket (default `@rvsd`), so each network namespace
//! has its own director. One request per connection: one line of JSON in, one line of JSON out
//! (`rvs_api::Request` / `rvs_api::Response`). Every request acts on [`Shared::dp`], the one
//! dataplane the workers share, under its lock, through the `Director`'s control methods; every
//! change of services or dests bumps [`Shared::rules_generation`] so the daemon re-installs its
//! nftables claims.
//!
//! A bad client cannot hurt the daemon: requests are size-limited and read with a timeout on a
//! short-lived thread per client (at most [`MAX_CLIENTS`] at once, the rest are told to retry),
//! malformed JSON gets an error response, and only root or the daemon's own user is served
//! (the peer's credentials are checked, as IPVS only talks to `CAP_NET_ADMIN`). Nothing here
//! panics on any input.

use crate::accept::{ClientSlot, accept_loop};
use std::io::{self, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rvs_api::{
    ApiError, ConnEntry, Counters, DaemonInfo, DestConfig, DestEntry, IcmpCount, NamedCount, Reply,
    Request, Response, ServiceAddr, ServiceConfig, ServiceEntry, ServiceList, Setting, Timeouts,
};
use rvs_core::conn::{Conn, ConnFlags};
use rvs_core::director::{Director, DirectorError};
use rvs_core::rules::{DestSpec, Netmask, Rule, RuleError, ServiceSpec, parse_rules};
use rvs_core::settings::{MAX_TIMEOUT_SECS, Settings};
use rvs_core::stats::Stats;
use rvs_core::types::{FwdMethod, Protocol, SEC, SchedFlags, SchedulerKind, ServiceKey, Time};
use rvs_dataplane::{Dataplane, DataplaneConfig, Frame, Tx};

/// Most clients served at once; more are answered [`ApiError::Busy`].
pub(crate) const MAX_CLIENTS: usize = 16;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the daemon waits for a client to take the response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's state shared by the workers, the control server and housekeeping.
pub(crate) struct Shared {
    /// The one dataplane, shared by all workers.
    pub(crate) dp: Mutex<Dataplane>,
    /// The dataplane clock's origin.
    pub(crate) start: Instant,
    /// Bumped after every change of services or dests (the daemon then re-installs its
    /// nftables claims).
    pub(crate) rules_generation: AtomicU64,
    /// Interfaces the workers are attached to (reported by `Info`).
    pub(crate) interfaces: Vec<String>,
    /// Worker threads (reported by `Info`).
    pub(crate) workers: u32,
    /// The daemon's I/O counters, set once the workers exist (reported by `Counters`).
    pub(crate) io: std::sync::OnceLock<crate::daemon::IoStats>,
    /// The health checker's state, set when the daemon starts (read by metrics; every change
    /// of services or dests lets it re-apply its rules under the same lock).
    pub(crate) health: std::sync::OnceLock<Arc<crate::health::HealthState>>,
}

impl Shared {
    /// Shared state over `dp`, its clock starting now (no interfaces, no workers: see
    /// [`Shared::with_info`]).
    pub(crate) fn new(dp: Dataplane) -> Shared {
        Shared {
            dp: Mutex::new(dp),
            start: Instant::now(),
            rules_generation: AtomicU64::new(0),
            interfaces: Vec::new(),
            workers: 0,
            io: std::sync::OnceLock::new(),
            health: std::sync::OnceLock::new(),
        }
    }

    /// The same, reporting these interfaces and this many workers in `Info`.
    pub(crate) fn with_info(self, interfaces: Vec<String>, workers: u32) -> Shared {
        Shared {
            interfaces,
            workers,
            ..self
        }
    }

    /// The dataplane clock: nanoseconds since [`Shared::start`].
    pub(crate) fn now(&self) -> Time {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Lock the dataplane. A worker that panicked while holding the lock does not make the
    /// director unmanageable: the state is still the last one written, and the operator needs
    /// the control socket most at that moment.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Dataplane> {
        crate::daemon::lock(&self.dp)
    }
}

/// Listen on the abstract socket `socket_name` and serve clients on a new thread until `stop`
/// is set (checked every 200 ms; the socket name is released when the thread ends). Fails if
/// the name is taken (another director runs in this network namespace) or invalid.
pub(crate) fn serve(
    socket_name: &str,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    serve_with(socket_name, shared, stop, Limits::default())
}

/// The server's limits (constants in the daemon; tests change them).
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Most clients served at once.
    max_clients: usize,
    /// How long a client may take to send its request.
    request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: MAX_CLIENTS,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

fn serve_with(
    socket_name: &str,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    limits: Limits,
) -> io::Result<JoinHandle<()>> {
    let addr = SocketAddr::from_abstract_name(socket_name.as_bytes())?;
    let listener = UnixListener::bind_addr(&addr)?;
    listener.set_nonblocking(true)?;
    thread::Builder::new()
        .name("rvsd-control".into())
        .spawn(move || {
            accept_loop(&listener, "control socket", &stop, |stream, active| {
                dispatch(stream, &shared, active, limits);
            });
        })
}

fn dispatch(stream: UnixStream, shared: &Arc<Shared>, active: &Arc<AtomicUsize>, limits: Limits) {
    let (slot, live) = ClientSlot::take(active);
    if live >= limits.max_clients {
        // A fresh socket's buffer takes this small answer without blocking.
        let mut stream = stream;
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        let busy: Response = Err(ApiError::Busy);
        let _ = rvs_api::write_message(&mut stream, &busy);
        return;
    }
    let shared = Arc::clone(shared);
    // If the thread cannot be spawned the closure (and the slot) is dropped: the client sees
    // the connection close.
    let _ = thread::Builder::new()
        .name("rvsd-control-client".into())
        .spawn(move || {
            let _slot = slot;
            serve_client(stream, &shared, limits.request_timeout);
        });
}

fn serve_client(stream: UnixStream, shared: &Shared, request_timeout: Duration) {
    let _ = stream.set_read_timeout(Some(request_timeout));
    let _ = stream.set_write_timeout(Some(RESPONSE_TIMEOUT));
    // The request is read even from a peer that will be refused, so that its write completes
    // and it reads the refusal rather than a broken pipe.
    let mut reader = BufReader::new(&stream);
    let request = rvs_api::read_message(&mut reader, rvs_api::MAX_REQUEST_BYTES);
    let response = match request {
        _ if !peer_allowed(&stream) => Err(ApiError::PermissionDenied),
        Ok(line) => match serde_json::from_slice::<Request>(&line) {
            Ok(req) => handle(shared, req),
            Err(e) => Err(ApiError::BadRequest(e.to_string())),
        },
        Err(rvs_api::FrameError::Empty) => return,
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    };
    let mut w = &stream;
    let _ = rvs_api::write_message(&mut w, &response);
}

/// Only root and the daemon's own user may control it.
fn peer_allowed(stream: &UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        Ok(cred) => cred.uid() == 0 || cred.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

/// Carry out one request against the shared state.
pub(crate) fn handle(shared: &Shared, req: Request) -> Response {
    let now = shared.now();
    match req {
        Request::Info => {
            let conn_tab_max = shared.lock().settings().conn_tab_max as u64;
            Ok(Reply::Info(DaemonInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                protocol_version: rvs_api::PROTOCOL_VERSION,
                interfaces: shared.interfaces.clone(),
                workers: shared.workers,
                uptime_secs: now / SEC,
                conn_tab_max,
            }))
        }
        Request::AddService(cfg) => {
            let rule = Rule::AddService(service_spec(&cfg)?);
            change(shared, &rule, now, Ctx::Service)
        }
        Request::EditService(cfg) => {
            let rule = Rule::EditService(service_spec(&cfg)?);
            change(shared, &rule, now, Ctx::Service)
        }
        Request::DeleteService(s) => {
            change(shared, &Rule::DeleteService(key(s)), now, Ctx::Service)
        }
        Request::AddDest { service, dest } => {
            let k = key(service);
            change(
                shared,
                &Rule::AddDest(k, dest_spec(&k, &dest)),
                now,
                Ctx::Dest,
            )
        }
        Request::EditDest { service, dest } => {
            let k = key(service);
            change(
                shared,
                &Rule::EditDest(k, dest_spec(&k, &dest)),
                now,
                Ctx::Dest,
            )
        }
        Request::DeleteDest {
            service,
            addr,
            port,
        } => change(
            shared,
            &Rule::DeleteDest(key(service), addr, port),
            now,
            Ctx::Dest,
        ),
        Request::Clear => change(shared, &Rule::Clear, now, Ctx::Service),
        Request::Zero { service } => {
            let k = service.map(key);
            shared
                .lock()
                .director_mut()
                .zero(k.as_ref())
                .map_err(|e| director_error(e, Ctx::Service))?;
            Ok(Reply::Done)
        }
        Request::ListServices { service } => list_services(shared, service.map(key)),
        Request::ListConnections => Ok(Reply::Connections(list_conns(shared, now))),
        Request::GetTimeouts => {
            let t = shared.lock().settings().timeouts;
            Ok(Reply::Timeouts(Timeouts {
                tcp: t.tcp,
                tcpfin: t.tcpfin,
                udp: t.udp,
            }))
        }
        Request::SetTimeouts(t) => set_timeouts(shared, t),
        Request::Save => Ok(Reply::Rules(save(shared.lock().director()))),
        Request::Restore { rules } => restore(shared, &rules, now),
        Request::Counters => {
            // The workers' counters are read under the dataplane's lock, under which the
            // workers update them: one consistent snapshot (their frames add up to `rx`).
            let dp = shared.lock();
            let mut c = counters(&dp);
            if let Some(io) = shared.io.get() {
                io.fill(&mut c);
            }
            drop(dp);
            Ok(Reply::Counters(Box::new(c)))
        }
        Request::GetSetting { name } => get_settings(shared, name.as_deref()),
        Request::SetSetting { name, value } => set_setting(shared, &name, &value),
    }
}

/// What a rule is about, for the error texts (ipvsadm says "No such service" for service
/// commands and "Service not defined" for dest commands).
#[derive(Clone, Copy)]
enum Ctx {
    Service,
    Dest,
}

fn director_error(e: DirectorError, ctx: Ctx) -> ApiError {
    match e {
        DirectorError::ServiceExists => ApiError::ServiceExists,
        DirectorError::NoService => match ctx {
            Ctx::Service => ApiError::NoSuchService,
            Ctx::Dest => ApiError::ServiceNotDefined,
        },
        DirectorError::DestExists => ApiError::DestExists,
        DirectorError::NoDest => ApiError::NoSuchDest,
        DirectorError::MixedFamily => ApiError::AddressFamily,
        DirectorError::PortZeroWithoutPersistence => {
            ApiError::Invalid("Zero port specified for non-persistent service".into())
        }
    }
}

fn rule_error(e: RuleError) -> ApiError {
    match e {
        RuleError::MixedFamily { .. } => ApiError::AddressFamily,
        RuleError::PortZeroNeedsPersistence => {
            ApiError::Invalid("Zero port specified for non-persistent service".into())
        }
        other => ApiError::Invalid(other.to_string()),
    }
}

/// Validate and apply one rule; bump the rules generation if it changed anything.
fn change(shared: &Shared, rule: &Rule, now: Time, ctx: Ctx) -> Response {
    rule.validate().map_err(rule_error)?;
    let mut dp = shared.lock();
    dp.director_mut()
        .apply(rule, now)
        .map_err(|e| director_error(e, ctx))?;
    crate::health::after_change(shared, dp.director_mut(), now);
    drop(dp);
    shared.rules_generation.fetch_add(1, Ordering::AcqRel);
    Ok(Reply::Done)
}

// ---- conversions between the protocol and the core ---------------------------------------

fn protocol(p: rvs_api::Protocol) -> Protocol {
    match p {
        rvs_api::Protocol::Tcp => Protocol::Tcp,
        rvs_api::Protocol::Udp => Protocol::Udp,
    }
}

fn api_protocol(p: Protocol) -> rvs_api::Protocol {
    match p {
        Protocol::Tcp => rvs_api::Protocol::Tcp,
        Protocol::Udp => rvs_api::Protocol::Udp,
    }
}

fn key(s: ServiceAddr) -> ServiceKey {
    ServiceKey {
        protocol: protocol(s.protocol),
        addr: s.addr,
        port: s.port,
    }
}

fn api_service(k: &ServiceKey) -> ServiceAddr {
    ServiceAddr {
        protocol: api_protocol(k.protocol),
        addr: k.addr,
        port: k.port,
    }
}

fn fwd(f: rvs_api::FwdMethod) -> FwdMethod {
    match f {
        rvs_api::FwdMethod::Masq => FwdMethod::Masq,
        rvs_api::FwdMethod::Route => FwdMethod::DirectRoute,
        rvs_api::FwdMethod::Tunnel => FwdMethod::Tunnel,
    }
}

fn api_fwd(f: FwdMethod) -> rvs_api::FwdMethod {
    match f {
        FwdMethod::Masq => rvs_api::FwdMethod::Masq,
        FwdMethod::DirectRoute => rvs_api::FwdMethod::Route,
        FwdMethod::Tunnel => rvs_api::FwdMethod::Tunnel,
    }
}

fn service_spec(c: &ServiceConfig) -> Result<ServiceSpec, ApiError> {
    let k = key(c.service);
    let scheduler: SchedulerKind = c
        .scheduler
        .parse()
        .map_err(|_| ApiError::SchedulerNotFound)?;
    let netmask = match c.netmask {
        None => Netmask::host(k.addr),
        Some(rvs_api::Netmask::V4(m)) => Netmask::V4(m),
        Some(rvs_api::Netmask::V6(len)) => Netmask::V6(len),
    };
    Ok(ServiceSpec {
        key: k,
        scheduler,
        flags: SchedFlags {
            fallback: c.sched_flags.fallback,
            port: c.sched_flags.port,
        },
        persistence: c.persistence,
        netmask,
    })
}

fn api_service_config(s: &ServiceSpec) -> ServiceConfig {
    ServiceConfig {
        service: api_service(&s.key),
        scheduler: s.scheduler.name().to_string(),
        sched_flags: rvs_api::SchedFlags {
            fallback: s.flags.fallback,
            port: s.flags.port,
        },
        persistence: s.persistence,
        netmask: if s.netmask.is_host() {
            None
        } else {
            Some(match s.netmask {
                Netmask::V4(m) => rvs_api::Netmask::V4(m),
                Netmask::V6(len) => rvs_api::Netmask::V6(len),
            })
        },
    }
}

/// The core's dest. DR and TUN dests take the virtual port whatever was given, as ipvsadm
/// forces it before talking to the kernel.
fn dest_spec(k: &ServiceKey, d: &DestConfig) -> DestSpec {
    let fwd = fwd(d.fwd);
    DestSpec {
        addr: d.addr,
        port: if fwd == FwdMethod::Masq {
            d.port
        } else {
            k.port
        },
        fwd,
        weight: d.weight,
        u_threshold: d.u_threshold,
        l_threshold: d.l_threshold,
    }
}

fn api_stats(s: &Stats) -> (rvs_api::Stats, rvs_api::Rates) {
    let c = s.counters;
    let r = s.rates();
    (
        rvs_api::Stats {
            conns: c.conns,
            inpkts: c.inpkts,
            outpkts: c.outpkts,
            inbytes: c.inbytes,
            outbytes: c.outbytes,
        },
        rvs_api::Rates {
            cps: r.cps,
            inpps: r.inpps,
            outpps: r.outpps,
            inbps: r.inbps,
            outbps: r.outbps,
        },
    )
}

// ---- listings --------------------------------------------------------------------------

fn list_services(shared: &Shared, only: Option<ServiceKey>) -> Response {
    let dp = shared.lock();
    let d = dp.director();
    let mut services = Vec::new();
    for v in d.services() {
        if only.is_some_and(|k| k != v.spec.key) {
            continue;
        }
        let (stats, rates) = api_stats(v.stats);
        let dests = v
            .dests
            .iter()
            .map(|dv| {
                let (stats, rates) = api_stats(dv.stats);
                let x = dv.dest;
                DestEntry {
                    config: DestConfig {
                        addr: x.addr,
                        port: x.port,
                        fwd: api_fwd(x.fwd),
                        weight: x.weight,
                        u_threshold: x.u_threshold,
                        l_threshold: x.l_threshold,
                    },
                    active_conns: x.active_conns,
                    inactive_conns: x.inactive_conns,
                    persist_conns: x.persist_conns,
                    overloaded: x.overloaded,
                    stats,
                    rates,
                }
            })
            .collect();
        services.push(ServiceEntry {
            config: api_service_config(v.spec),
            dests,
            stats,
            rates,
        });
    }
    if only.is_some() && services.is_empty() {
        return Err(ApiError::NoSuchService);
    }
    Ok(Reply::Services(ServiceList {
        conn_tab_size: d.settings().conn_tab_max as u64,
        services,
    }))
}

fn list_conns(shared: &Shared, now: Time) -> Vec<ConnEntry> {
    // Copy the compact entries under the lock (the workers wait meanwhile), build the
    // listing after releasing it.
    let raw: Vec<Conn> = {
        let dp = shared.lock();
        dp.director().conns().iter().map(|(_, c)| c).collect()
    };
    raw.iter()
        .filter_map(|c| {
            let protocol = api_protocol(Protocol::from_number(c.key.protocol)?);
            Some(ConnEntry {
                protocol,
                state: c.state.name().to_string(),
                expires_secs: c.expires.saturating_sub(now) / SEC,
                caddr: c.key.src,
                cport: c.key.sport,
                vaddr: c.key.dst,
                vport: c.key.dport,
                daddr: c.daddr,
                dport: c.dport,
                fwd: api_fwd(c.fwd),
                template: c.flags.contains(ConnFlags::TEMPLATE),
            })
        })
        .collect()
}

/// The rules in force, in the ipvsadm-save format (services sorted by key, dests in order).
fn save(d: &Director) -> String {
    let mut out = String::new();
    for r in current_rules(d) {
        out.push_str(&r.to_save_line());
        out.push('\n');
    }
    out
}

/// The `-A`/`-a` rules that rebuild the current services and dests.
fn current_rules(d: &Director) -> Vec<Rule> {
    let mut rules = Vec::new();
    for v in d.services() {
        rules.push(Rule::AddService(*v.spec));
        for dv in &v.dests {
            let x = dv.dest;
            rules.push(Rule::AddDest(
                v.spec.key,
                DestSpec {
                    addr: x.addr,
                    port: x.port,
                    fwd: x.fwd,
                    weight: x.weight,
                    u_threshold: x.u_threshold,
                    l_threshold: x.l_threshold,
                },
            ));
        }
    }
    rules
}

/// `-R`: all or nothing. The rules are parsed, then tried on a scratch director holding the
/// same services and dests; only if every one succeeds there are they applied for real (the
/// outcome of a rule depends only on which services and dests exist, which the scratch copy
/// reproduces).
fn restore(shared: &Shared, text: &str, now: Time) -> Response {
    let rules = parse_rules(text).map_err(|e| ApiError::Restore {
        line: e.line,
        message: e.error.to_string(),
        syntax: true,
    })?;
    let mut lines = Vec::with_capacity(rules.len());
    for (i, l) in text.lines().enumerate() {
        if matches!(rvs_core::rules::parse_line(l), Ok(Some(_))) {
            lines.push(i + 1);
        }
    }
    let line_of = |i: usize| lines.get(i).copied().unwrap_or(0);
    let ctx_of = |r: &Rule| match r {
        Rule::AddDest(..) | Rule::EditDest(..) | Rule::DeleteDest(..) => Ctx::Dest,
        _ => Ctx::Service,
    };
    for (i, r) in rules.iter().enumerate() {
        r.validate().map_err(|e| ApiError::Restore {
            line: line_of(i),
            message: rule_error(e).to_string(),
            syntax: true,
        })?;
    }
    let mut dp = shared.lock();
    let result = match apply_all_or_nothing(dp.director_mut(), &rules, now) {
        Ok(()) => Ok(Reply::Done),
        Err(ApplyError::Rebuild(e)) => {
            return Err(ApiError::Internal(format!(
                "rebuilding the current rules failed: {e}"
            )));
        }
        Err(ApplyError::Rule { index, error }) => {
            return Err(ApiError::Restore {
                line: line_of(index),
                message: director_error(error, rules.get(index).map_or(Ctx::Service, ctx_of))
                    .to_string(),
                syntax: false,
            });
        }
        // Cannot happen (the scratch run succeeded); say so rather than hide it.
        Err(ApplyError::AfterCheck { index, error }) => Err(ApiError::Internal(format!(
            "line {}: {} after a successful check; the rules before it were applied",
            line_of(index),
            director_error(error, rules.get(index).map_or(Ctx::Service, ctx_of))
        ))),
    };
    crate::health::after_change(shared, dp.director_mut(), now);
    drop(dp);
    if !rules.is_empty() {
        shared.rules_generation.fetch_add(1, Ordering::AcqRel);
    }
    result
}

/// Why [`apply_all_or_nothing`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApplyError {
    /// Rule `index` (0-based) fails: nothing was applied.
    #[error("rule {}: {error}", index + 1)]
    Rule {
        /// The failing rule.
        index: usize,
        /// Why.
        error: DirectorError,
    },
    /// The current services could not be copied for the check (a bug): nothing was applied.
    #[error("copying the current rules failed: {0}")]
    Rebuild(DirectorError),
    /// Rule `index` failed for real after the check passed (a bug): the rules before it were
    /// applied.
    #[error("rule {}: {error} after a successful check", index + 1)]
    AfterCheck {
        /// The failing rule.
        index: usize,
        /// Why.
        error: DirectorError,
    },
}

/// Apply `rules` to `d` all or nothing: they are first tried on a scratch director holding the
/// same services and dests, and applied for real only if every one succeeds there (the
/// outcome of a rule depends only on which services and dests exist, which the scratch copy
/// reproduces). The connection table is untouched but for what the rules themselves do.
pub(crate) fn apply_all_or_nothing(
    d: &mut Director,
    rules: &[Rule],
    now: Time,
) -> Result<(), ApplyError> {
    let mut scratch = Director::new(d.settings().clone());
    for r in current_rules(d) {
        scratch.apply(&r, now).map_err(ApplyError::Rebuild)?;
    }
    for (index, r) in rules.iter().enumerate() {
        scratch
            .apply(r, now)
            .map_err(|error| ApplyError::Rule { index, error })?;
    }
    drop(scratch);
    for (index, r) in rules.iter().enumerate() {
        d.apply(r, now)
            .map_err(|error| ApplyError::AfterCheck { index, error })?;
    }
    Ok(())
}

fn set_timeouts(shared: &Shared, t: Timeouts) -> Response {
    for (name, v) in [("tcp", t.tcp), ("tcpfin", t.tcpfin), ("udp", t.udp)] {
        if v > MAX_TIMEOUT_SECS {
            return Err(ApiError::Invalid(format!(
                "invalid {name} timeout value `{v}' specified (0..{MAX_TIMEOUT_SECS})"
            )));
        }
    }
    let mut dp = shared.lock();
    let mut s = dp.settings().clone();
    // 0 = leave unchanged, as IPVS does.
    if t.tcp != 0 {
        s.timeouts.tcp = t.tcp;
    }
    if t.tcpfin != 0 {
        s.timeouts.tcpfin = t.tcpfin;
    }
    if t.udp != 0 {
        s.timeouts.udp = t.udp;
    }
    s.validate().map_err(|e| ApiError::Invalid(e.to_string()))?;
    dp.director_mut().set_settings(s);
    Ok(Reply::Done)
}

fn counters(dp: &Dataplane) -> Counters {
    let c = dp.counters();
    let d = dp.director();
    let t = d.conns();
    let tc = t.counters();
    let dc = d.counters();
    let (tracker, reasm) = dp.frag_counters();
    let frag = |f: rvs_dataplane::frag::FragCounters| rvs_api::FragCounters {
        held: f.held,
        released: f.released,
        expired: f.expired,
        overflow: f.overflow,
        reassembled: f.reassembled,
        bad: f.bad,
    };
    Counters {
        rx: c.rx,
        forwarded: c.forwarded,
        generated: c.generated,
        local: c.local,
        held: c.held,
        drops: rvs_dataplane::DropReason::ALL
            .iter()
            .map(|&r| NamedCount {
                name: r.name().to_string(),
                count: c.drops(r),
            })
            .collect(),
        icmp: dp
            .icmp_counters()
            .iter()
            .map(|((v6, icmp_type, code, outcome), count)| IcmpCount {
                v6,
                icmp_type,
                code,
                outcome: outcome.name().to_string(),
                reason: match outcome {
                    rvs_dataplane::IcmpOutcome::Dropped(r) => Some(r.name().to_string()),
                    _ => None,
                },
                count,
            })
            .collect(),
        conn_table: rvs_api::ConnTableCounters {
            entries: t.len() as u64,
            max: t.max() as u64,
            memory_bytes: t.memory_bytes() as u64,
            inserted: tc.inserted,
            refused_full: tc.refused_full,
            evicted: tc.evicted,
            expired: tc.expired,
            removed: tc.removed,
        },
        director: rvs_api::DirectorCounters {
            no_dest: dc.no_dest,
            table_full: dc.table_full,
            evicted: dc.evicted,
            expired: dc.expired,
            dest_unavailable: dc.dest_unavailable,
        },
        frag_tracker: frag(tracker),
        frag_reassembler: frag(reasm),
        io: Vec::new(),
        workers: Vec::new(),
    }
}

fn get_settings(shared: &Shared, name: Option<&str>) -> Response {
    let dp = shared.lock();
    let s = dp.settings();
    let names: Vec<&str> = match name {
        Some(n) => vec![n],
        None => Settings::NAMES.to_vec(),
    };
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let value = s.get(n).ok_or_else(|| {
            ApiError::Setting(
                rvs_core::settings::SettingError::UnknownSetting {
                    name: n.to_string(),
                }
                .to_string(),
            )
        })?;
        out.push(Setting {
            name: n.to_string(),
            value,
        });
    }
    Ok(Reply::Settings(out))
}

fn set_setting(shared: &Shared, name: &str, value: &str) -> Response {
    let mut dp = shared.lock();
    let mut s = dp.settings().clone();
    s.set(name, value)
        .map_err(|e| ApiError::Setting(e.to_string()))?;
    s.validate().map_err(|e| ApiError::Setting(e.to_string()))?;
    if s.hash_seed != dp.settings().hash_seed {
        return Err(ApiError::Setting(
            "hash_seed cannot change while the connection table exists (set it in the config \
             and restart rvsd)"
                .into(),
        ));
    }
    dp.director_mut().set_settings(s);
    Ok(Reply::Done)
}

// ---- control-only mode -----------------------------------------------------------------

/// Arguments of the hidden `rvsd control-only`: the control socket over a dataplane attached
/// to no interface, for tests and for checking rules with `rvsadm`.
#[derive(Debug, clap::Args)]
pub(crate) struct ControlOnlyArgs {
    /// Abstract socket name.
    #[arg(long, default_value = rvs_api::DEFAULT_SOCKET_NAME)]
    socket: String,
    /// Rules to load first (ipvsadm-save format).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Director settings file (TOML), as for `rvsd replay`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A director setting NAME=VALUE (repeatable).
    #[arg(long = "set", value_parser = parse_set)]
    sets: Vec<(String, String)>,
    /// The director's own addresses (tunnel sources), repeatable.
    #[arg(long = "addr")]
    addrs: Vec<std::net::IpAddr>,
    /// A capture (Ethernet frames) that goes through the dataplane once at start, so that
    /// listings show connections and statistics; what the director would transmit is discarded.
    #[arg(long)]
    input: Option<PathBuf>,
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Run `rvsd control-only` until killed. Prints `listening on @NAME` on stdout once the socket
/// is bound.
pub(crate) fn run_control_only(a: &ControlOnlyArgs) -> Result<()> {
    let cfg = crate::config::load_config(a.config.as_deref(), &a.sets)?;
    let mut director = Director::new(cfg.settings);
    for (k, p) in cfg.policies {
        director.set_service_policy(k, p);
    }
    if let Some(path) = &a.rules {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("--rules {}", path.display()))?;
        let rules = parse_rules(&text).with_context(|| format!("--rules {}", path.display()))?;
        for (i, r) in rules.iter().enumerate() {
            director
                .apply(r, 0)
                .with_context(|| format!("--rules {}: rule {}", path.display(), i + 1))?;
        }
    }
    let shared = Arc::new(Shared::new(Dataplane::new(
        director,
        DataplaneConfig {
            addrs: a.addrs.clone(),
            ..DataplaneConfig::default()
        },
    )));
    if let Some(path) = &a.input {
        let reader =
            rvs_wire::capture::open(path).with_context(|| format!("--input {}", path.display()))?;
        let mut extra: Vec<Tx> = Vec::new();
        for pkt in reader {
            let pkt = pkt.with_context(|| format!("reading {}", path.display()))?;
            // Ethernet frames only: this is a test aid, not `rvsd replay`.
            let Ok(rvs_wire::capture::LinkPayload::Ethernet(bytes)) = pkt.link_payload() else {
                continue;
            };
            let mut frame = Frame::from_bytes(bytes);
            extra.clear();
            let now = shared.now();
            shared.lock().process(&mut frame, now, &mut extra);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(&a.socket, Arc::clone(&shared), Arc::clone(&stop))
        .with_context(|| format!("control socket @{}", a.socket))?;
    let mut stdout = io::stdout();
    writeln!(stdout, "rvsd control-only: listening on @{}", a.socket)?;
    stdout.flush()?;
    // Housekeeping as the daemon does it: expiry, rate estimates, the drop log.
    while !server.is_finished() {
        thread::sleep(Duration::from_secs(1));
        let now = shared.now();
        let mut dp = shared.lock();
        dp.housekeeping(now);
        for l in dp.take_drop_log() {
            let _ = writeln!(
                io::stderr(),
                "rvsd: dropped ({}), {} more since the last report",
                l.reason.name(),
                l.suppressed
            );
        }
    }
    stop.store(true, Ordering::Release);
    server
        .join()
        .map_err(|_| anyhow::anyhow!("control thread panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::IpAddr;

    use rvs_api::client::call;
    use rvs_api::{FwdMethod as ApiFwd, Protocol as ApiProto};

    /// A running control server on a unique abstract name, stopped on drop.
    struct Server {
        name: String,
        shared: Arc<Shared>,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    }

    impl Server {
        fn start() -> Server {
            Server::start_with(Limits::default())
        }

        fn start_with(limits: Limits) -> Server {
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "rvsd-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let dp = Dataplane::new(
                Director::new(Settings::default()),
                DataplaneConfig::default(),
            );
            let shared = Arc::new(Shared::new(dp).with_info(vec!["veth0".into()], 2));
            let stop = Arc::new(AtomicBool::new(false));
            let handle = serve_with(&name, Arc::clone(&shared), Arc::clone(&stop), limits).unwrap();
            Server {
                name,
                shared,
                stop,
                handle: Some(handle),
            }
        }

        fn call(&self, req: Request) -> Response {
            call(&self.name, &req).unwrap()
        }

        fn generation(&self) -> u64 {
            self.shared.rules_generation.load(Ordering::Acquire)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tcp(addr: &str, port: u16) -> ServiceAddr {
        ServiceAddr {
            protocol: ApiProto::Tcp,
            addr: ip(addr),
            port,
        }
    }

    fn add_service(s: &Server, svc: ServiceAddr, sched: &str) -> Response {
        let mut c = ServiceConfig::new(svc);
        c.scheduler = sched.into();
        s.call(Request::AddService(c))
    }

    fn add_dest(s: &Server, svc: ServiceAddr, addr: &str, port: u16, fwd: ApiFwd) -> Response {
        let mut d = DestConfig::new(ip(addr), port);
        d.fwd = fwd;
        s.call(Request::AddDest {
            service: svc,
            dest: d,
        })
    }

    fn services(s: &Server) -> ServiceList {
        match s.call(Request::ListServices { service: None }) {
            Ok(Reply::Services(l)) => l,
            other => panic!("{other:?}"),
        }
    }

    fn saved(s: &Server) -> String {
        match s.call(Request::Save) {
            Ok(Reply::Rules(t)) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn services_and_dests_with_ipvsadm_errors() {
        let s = Server::start();
        let vip = tcp("203.0.113.10", 80);
        assert_eq!(add_service(&s, vip, "rr"), Ok(Reply::Done));
        assert_eq!(add_service(&s, vip, "rr"), Err(ApiError::ServiceExists));
        assert_eq!(
            add_dest(&s, vip, "198.51.100.11", 8080, ApiFwd::Masq),
            Ok(Reply::Done)
        );
        // DR takes the virtual port whatever is given, as ipvsadm forces it.
        assert_eq!(
            add_dest(&s, vip, "198.51.100.12", 9999, ApiFwd::Route),
            Ok(Reply::Done)
        );
        assert_eq!(
            add_dest(&s, vip, "198.51.100.11", 8080, ApiFwd::Masq),
            Err(ApiError::DestExists)
        );
        let other = tcp("203.0.113.99", 80);
        assert_eq!(
            add_dest(&s, other, "198.51.100.11", 80, ApiFwd::Route),
            Err(ApiError::ServiceNotDefined)
        );
        assert_eq!(
            s.call(Request::EditService(ServiceConfig::new(other))),
            Err(ApiError::NoSuchService)
        );
        assert_eq!(
            s.call(Request::DeleteService(other)),
            Err(ApiError::NoSuchService)
        );
        assert_eq!(
            s.call(Request::DeleteDest {
                service: vip,
                addr: ip("198.51.100.99"),
                port: 80
            }),
            Err(ApiError::NoSuchDest)
        );
        assert_eq!(
            add_dest(&s, vip, "2001:db8::1", 80, ApiFwd::Tunnel),
            Err(ApiError::AddressFamily)
        );
        assert_eq!(
            add_service(&s, other, "nope"),
            Err(ApiError::SchedulerNotFound)
        );
        assert_eq!(
            add_service(&s, tcp("203.0.113.11", 0), "rr"),
            Err(ApiError::Invalid(
                "Zero port specified for non-persistent service".into()
            ))
        );
        let l = services(&s);
        assert_eq!(l.conn_tab_size, Settings::default().conn_tab_max as u64);
        assert_eq!(l.services.len(), 1);
        let e = &l.services[0];
        assert_eq!(e.config.scheduler, "rr");
        let dests: Vec<(IpAddr, u16, ApiFwd, u32)> = e
            .dests
            .iter()
            .map(|d| (d.config.addr, d.config.port, d.config.fwd, d.config.weight))
            .collect();
        assert_eq!(
            dests,
            vec![
                (ip("198.51.100.11"), 8080, ApiFwd::Masq, 1),
                (ip("198.51.100.12"), 80, ApiFwd::Route, 1)
            ]
        );
        // Three successful changes so far.
        assert_eq!(s.generation(), 3);
        let mut d = DestConfig::new(ip("198.51.100.12"), 80);
        d.weight = 0;
        assert_eq!(
            s.call(Request::EditDest {
                service: vip,
                dest: d
            }),
            Ok(Reply::Done)
        );
        let l = services(&s);
        assert_eq!(l.services[0].dests[1].config.weight, 0);
        assert_eq!(
            s.call(Request::ListServices {
                service: Some(other)
            }),
            Err(ApiError::NoSuchService)
        );
        assert_eq!(s.call(Request::Clear), Ok(Reply::Done));
        assert!(services(&s).services.is_empty());
        assert_eq!(s.generation(), 5);
    }

    #[test]
    fn service_options_survive_listing() {
        let s = Server::start();
        let v6 = ServiceAddr {
            protocol: ApiProto::Udp,
            addr: ip("2001:db8::10"),
            port: 53,
        };
        let cfg = ServiceConfig {
            service: v6,
            scheduler: "sh".into(),
            sched_flags: rvs_api::SchedFlags {
                fallback: true,
                port: false,
            },
            persistence: Some(600),
            netmask: Some(rvs_api::Netmask::V6(64)),
        };
        assert_eq!(s.call(Request::AddService(cfg.clone())), Ok(Reply::Done));
        assert_eq!(services(&s).services[0].config, cfg);
        assert_eq!(
            saved(&s),
            "-A -u [2001:db8::10]:53 -s sh -p 600 -M 64 -b sh-fallback\n"
        );
        // A mask of the wrong family is refused with the core's reason.
        let mut bad = ServiceConfig::new(tcp("203.0.113.10", 80));
        bad.persistence = Some(60);
        bad.netmask = Some(rvs_api::Netmask::V6(64));
        assert!(matches!(
            s.call(Request::AddService(bad)),
            Err(ApiError::Invalid(m)) if m.contains("netmask")
        ));
    }

    #[test]
    fn restore_is_all_or_nothing() {
        let s = Server::start();
        let vip = tcp("203.0.113.10", 80);
        assert_eq!(add_service(&s, vip, "wlc"), Ok(Reply::Done));
        let before = saved(&s);
        let g = s.generation();
        // Line 3 adds a dest to a service that does not exist.
        let bad = "-A -t 203.0.113.20:80 -s rr\n\
                   -a -t 203.0.113.20:80 -r 198.51.100.21:80 -g -w 1\n\
                   -a -t 203.0.113.30:80 -r 198.51.100.31:80 -g -w 1\n";
        assert_eq!(
            s.call(Request::Restore { rules: bad.into() }),
            Err(ApiError::Restore {
                line: 3,
                message: "Service not defined".into(),
                syntax: false
            })
        );
        // Line 2 duplicates the existing service (a comment line does not count).
        let dup = "# comment\n-A -t 203.0.113.10:80 -s rr\n";
        assert_eq!(
            s.call(Request::Restore { rules: dup.into() }),
            Err(ApiError::Restore {
                line: 2,
                message: "Service already exists".into(),
                syntax: false
            })
        );
        // A line that does not parse.
        assert!(matches!(
            s.call(Request::Restore {
                rules: "-A -t 203.0.113.40:80 -s rr\n-a -t nonsense\n".into()
            }),
            Err(ApiError::Restore {
                line: 2,
                syntax: true,
                ..
            })
        ));
        assert_eq!(saved(&s), before, "a refused restore changed nothing");
        assert_eq!(s.generation(), g);
        // A good one, including deleting what exists.
        let good = "-D -t 203.0.113.10:80\n\
                    -A -t 203.0.113.20:80 -s rr\n\
                    -a -t 203.0.113.20:80 -r 198.51.100.21:80 -m -w 2\n\
                    -A -u [2001:db8::20]:53 -s wrr -p 300\n\
                    -a -u [2001:db8::20]:53 -r [2001:db8:1::21]:53 -i -w 1\n";
        assert_eq!(
            s.call(Request::Restore { rules: good.into() }),
            Ok(Reply::Done)
        );
        let after = saved(&s);
        assert_eq!(
            after,
            "-A -t 203.0.113.20:80 -s rr\n\
             -a -t 203.0.113.20:80 -r 198.51.100.21:80 -m -w 2\n\
             -A -u [2001:db8::20]:53 -s wrr -p 300\n\
             -a -u [2001:db8::20]:53 -r [2001:db8:1::21]:53 -i -w 1\n"
        );
        // save → clear → restore gives the same rules.
        assert_eq!(s.call(Request::Clear), Ok(Reply::Done));
        assert_eq!(saved(&s), "");
        assert_eq!(
            s.call(Request::Restore {
                rules: after.clone()
            }),
            Ok(Reply::Done)
        );
        assert_eq!(saved(&s), after);
    }

    #[test]
    fn timeouts_and_settings() {
        let s = Server::start();
        assert_eq!(
            s.call(Request::GetTimeouts),
            Ok(Reply::Timeouts(Timeouts {
                tcp: 900,
                tcpfin: 120,
                udp: 300
            }))
        );
        // 0 leaves a timeout unchanged.
        assert_eq!(
            s.call(Request::SetTimeouts(Timeouts {
                tcp: 3600,
                tcpfin: 0,
                udp: 60
            })),
            Ok(Reply::Done)
        );
        assert_eq!(
            s.call(Request::GetTimeouts),
            Ok(Reply::Timeouts(Timeouts {
                tcp: 3600,
                tcpfin: 120,
                udp: 60
            }))
        );
        assert!(matches!(
            s.call(Request::SetTimeouts(Timeouts {
                tcp: MAX_TIMEOUT_SECS + 1,
                tcpfin: 0,
                udp: 0
            })),
            Err(ApiError::Invalid(_))
        ));
        // The core's timeouts follow.
        assert_eq!(
            s.shared.lock().director().timeouts().tcp_tcpfin_udp(),
            (3600, 120, 60)
        );

        let Ok(Reply::Settings(all)) = s.call(Request::GetSetting { name: None }) else {
            panic!("no settings")
        };
        assert_eq!(all.len(), Settings::NAMES.len());
        assert!(
            all.iter()
                .any(|x| x.name == "timeout_tcp" && x.value == "3600")
        );
        assert_eq!(
            s.call(Request::SetSetting {
                name: "conn_full_policy".into(),
                value: "evict_oldest".into()
            }),
            Ok(Reply::Done)
        );
        assert_eq!(
            s.shared.lock().director().conns().policy(),
            rvs_core::conn::FullPolicy::EvictOldest,
            "the table takes the new policy"
        );
        assert_eq!(
            s.call(Request::GetSetting {
                name: Some("conn_full_policy".into())
            }),
            Ok(Reply::Settings(vec![Setting {
                name: "conn_full_policy".into(),
                value: "evict_oldest".into()
            }]))
        );
        assert!(matches!(
            s.call(Request::GetSetting { name: Some("nope".into()) }),
            Err(ApiError::Setting(m)) if m.contains("unknown setting")
        ));
        assert!(matches!(
            s.call(Request::SetSetting {
                name: "pmtu_disc".into(),
                value: "maybe".into()
            }),
            Err(ApiError::Setting(_))
        ));
        assert!(matches!(
            s.call(Request::SetSetting { name: "hash_seed".into(), value: "0x1".into() }),
            Err(ApiError::Setting(m)) if m.contains("hash_seed")
        ));
        assert_eq!(
            s.call(Request::SetSetting {
                name: "conn_tab_max".into(),
                value: "4096".into()
            }),
            Ok(Reply::Done)
        );
        assert_eq!(s.shared.lock().director().conns().max(), 4096);
        let Ok(Reply::Info(info)) = s.call(Request::Info) else {
            panic!("no info")
        };
        assert_eq!(
            (
                info.interfaces,
                info.workers,
                info.conn_tab_max,
                info.protocol_version
            ),
            (
                vec!["veth0".to_string()],
                2,
                4096,
                rvs_api::PROTOCOL_VERSION
            )
        );
    }

    /// An Ethernet/IPv4/TCP frame from `src` to `dst` with the given flags.
    fn tcp_frame(src: (&str, u16), dst: (&str, u16), syn: bool) -> Vec<u8> {
        let s: std::net::Ipv4Addr = src.0.parse().unwrap();
        let d: std::net::Ipv4Addr = dst.0.parse().unwrap();
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(s.octets(), d.octets(), 64)
            .tcp(src.1, dst.1, 1000, 64240);
        let b = if syn { b.syn() } else { b.ack(1) };
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    #[test]
    fn connections_stats_and_counters() {
        let s = Server::start();
        let vip = tcp("203.0.113.10", 80);
        let mut cfg = ServiceConfig::new(vip);
        cfg.scheduler = "rr".into();
        cfg.persistence = Some(300);
        assert_eq!(s.call(Request::AddService(cfg)), Ok(Reply::Done));
        assert_eq!(
            add_dest(&s, vip, "198.51.100.11", 80, ApiFwd::Route),
            Ok(Reply::Done)
        );
        let now = s.shared.now();
        {
            let mut dp = s.shared.lock();
            let mut extra = Vec::new();
            for (f, syn) in [(("192.0.2.1", 40000), true), (("192.0.2.1", 40000), false)] {
                let mut frame = Frame::from_bytes(&tcp_frame(f, ("203.0.113.10", 80), syn));
                let v = dp.process(&mut frame, now, &mut extra);
                assert!(
                    matches!(v, rvs_dataplane::Verdict::Transmit { .. }),
                    "{v:?}"
                );
            }
        }
        let Ok(Reply::Connections(mut conns)) = s.call(Request::ListConnections) else {
            panic!("no connections")
        };
        conns.sort_by_key(|c| c.template);
        assert_eq!(conns.len(), 2, "{conns:?}");
        let c = &conns[0];
        assert_eq!(
            (
                c.protocol,
                c.state.as_str(),
                c.caddr,
                c.cport,
                c.vaddr,
                c.vport,
                c.daddr,
                c.dport
            ),
            (
                ApiProto::Tcp,
                "ESTABLISHED",
                ip("192.0.2.1"),
                40000,
                ip("203.0.113.10"),
                80,
                ip("198.51.100.11"),
                80
            )
        );
        assert!(!c.template && (1..=900).contains(&c.expires_secs));
        let t = &conns[1];
        assert_eq!((t.template, t.state.as_str(), t.cport), (true, "NONE", 0));
        let l = services(&s);
        let d = &l.services[0].dests[0];
        assert_eq!(
            (d.active_conns, d.inactive_conns, d.persist_conns),
            (1, 0, 1)
        );
        assert_eq!(
            (l.services[0].stats.conns, l.services[0].stats.inpkts),
            (1, 2)
        );
        let Ok(Reply::Counters(c)) = s.call(Request::Counters) else {
            panic!("no counters")
        };
        assert_eq!((c.rx, c.forwarded), (2, 2));
        assert_eq!(c.conn_table.entries, 2);
        assert_eq!(c.drops.len(), rvs_dataplane::DropReason::ALL.len());
        assert!(c.drops.iter().all(|d| d.count == 0));
        // Zero: the counters go, the connections stay.
        assert_eq!(
            s.call(Request::Zero {
                service: Some(tcp("203.0.113.99", 80))
            }),
            Err(ApiError::NoSuchService)
        );
        assert_eq!(
            s.call(Request::Zero { service: Some(vip) }),
            Ok(Reply::Done)
        );
        let l = services(&s);
        assert_eq!(l.services[0].stats, rvs_api::Stats::default());
        assert_eq!(l.services[0].dests[0].stats, rvs_api::Stats::default());
        assert_eq!(l.services[0].dests[0].active_conns, 1);
    }

    fn raw_exchange(name: &str, bytes: &[u8]) -> Response {
        let mut st = rvs_api::client::connect(name).unwrap();
        st.write_all(bytes).unwrap();
        st.shutdown(std::net::Shutdown::Write).unwrap();
        let mut r = BufReader::new(st);
        let line = rvs_api::read_message(&mut r, 1 << 20).unwrap();
        serde_json::from_slice(&line).unwrap()
    }

    #[test]
    fn bad_clients_get_errors_and_do_not_block_others() {
        let s = Server::start();
        assert!(matches!(
            raw_exchange(&s.name, b"{not json\n"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            raw_exchange(&s.name, b"{\"add_service\":{\"service\":7}}\n"),
            Err(ApiError::BadRequest(_))
        ));
        // Deeply nested JSON is refused by serde_json's recursion limit, not a stack overflow.
        let deep = format!("{}\n", "[".repeat(100_000));
        assert!(matches!(
            raw_exchange(&s.name, deep.as_bytes()),
            Err(ApiError::BadRequest(_))
        ));
        // Too large: the server stops reading at the limit and says so.
        let mut big = vec![b' '; rvs_api::MAX_REQUEST_BYTES + 10];
        big.push(b'\n');
        let mut st = rvs_api::client::connect(&s.name).unwrap();
        // The server may close before taking everything: a write error is fine.
        let _ = st.write_all(&big);
        let mut r = BufReader::new(st);
        let line = rvs_api::read_message(&mut r, 1 << 20).unwrap();
        let resp: Response = serde_json::from_slice(&line).unwrap();
        assert!(matches!(resp, Err(ApiError::BadRequest(m)) if m.contains("larger than")));
        // A client that connects and says nothing, and one that stalls mid-request, do not
        // keep others waiting.
        let silent = rvs_api::client::connect(&s.name).unwrap();
        drop(silent);
        let mut stalled = rvs_api::client::connect(&s.name).unwrap();
        stalled.write_all(b"{\"list_services\":").unwrap();
        assert!(matches!(s.call(Request::Info), Ok(Reply::Info(_))));
        drop(stalled);
    }

    #[test]
    fn too_many_clients_are_told_to_retry() {
        let s = Server::start_with(Limits {
            max_clients: 3,
            request_timeout: Duration::from_secs(3600),
        });
        let mut stalled = Vec::new();
        for _ in 0..3 {
            let mut st = rvs_api::client::connect(&s.name).unwrap();
            st.write_all(b"{").unwrap();
            stalled.push(st);
        }
        // Connections are accepted in order, so the three above hold the three slots.
        assert_eq!(s.call(Request::Info), Err(ApiError::Busy));
        drop(stalled);
        // The slots free as their threads see the end of the stream; wait for that (not for a
        // time).
        loop {
            match s.call(Request::Info) {
                Ok(Reply::Info(_)) => break,
                Err(ApiError::Busy) => thread::yield_now(),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn stop_releases_the_name() {
        let mut s = Server::start();
        assert!(matches!(s.call(Request::Info), Ok(Reply::Info(_))));
        // A second director in the same namespace cannot take the name.
        let taken = serve(
            &s.name,
            Arc::clone(&s.shared),
            Arc::new(AtomicBool::new(false)),
        );
        assert_eq!(
            taken.map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::AddrInUse)
        );
        s.stop.store(true, Ordering::Release);
        s.handle.take().unwrap().join().unwrap();
        assert!(matches!(
            call(&s.name, &Request::Info),
            Err(rvs_api::client::ClientError::Connect { .. })
        ));
        let again = Server::start();
        let stop = Arc::new(AtomicBool::new(true));
        let h = serve(&s.name, Arc::clone(&again.shared), stop).unwrap();
        h.join().unwrap();
    }
}
