//! Health checks, keepalived-style: every dest of a service with a `[health_check]` section is
//! probed (TCP connect, or HTTP/1.1 `GET` with an expected status and optional body text) every
//! `interval`, each probe limited to `timeout`. `fall` failures in a row take an up dest down:
//! it is quiesced (weight 0: no new connections, existing ones keep flowing — the default) or
//! removed, by `on_fail`. `rise` successes in a row bring it back with its configured weight
//! (re-added, if it was removed). Every transition is logged once.
//!
//! The rules the checker follows, so that it and the operator (`rvsadm`, SIGHUP) agree:
//! - A dest is first seen up (keepalived's default): a director that starts does not drop
//!   its dests before they had a chance to answer.
//! - The configured weight (and method, thresholds) is learnt from the director while the
//!   dest is up: `rvsadm -e ... -w 5` on an up dest is what it gets back after a failure.
//! - While a dest is down the checker owns its weight, as keepalived does: a weight set
//!   meanwhile (by `rvsadm -e`, or a reload whose rules give it one) becomes the weight it gets
//!   back on recovery, and the dest is set back to 0 at once, under the same lock as the
//!   change, so no connection slips through. A down dest with `on_fail = "remove"` that is
//!   added again is removed again, its weight remembered the same way.
//! - A dest the operator deletes is forgotten; a service whose check is removed (reload) gets
//!   every down dest back with its configured weight.
//!
//! Threads: one checker thread (`rvsd-health`) schedules the probes and applies the results
//! through the director's own edit path (`-e`, `-d`, `-a`), under the dataplane lock; each
//! probe runs on a short-lived thread of its own, so a slow dest never delays another's
//! checks. Nothing here panics on what a dest sends.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rvs_core::director::Director;
use rvs_core::rules::{DestSpec, Rule};
use rvs_core::types::{ServiceKey, Time};
use tracing::{debug, info, warn};

use crate::config::{CheckKind, HealthCheck, OnFail, Probe, service_name};
use crate::control::Shared;

/// How often the checker thread wakes to start due probes and take results.
const TICK: Duration = Duration::from_millis(50);
/// How often the checker re-reads the director's dests even if no rules changed.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// Most probes running at once.
const MAX_IN_FLIGHT: usize = 256;
/// Most bytes of an HTTP response read before judging it.
const MAX_RESPONSE: usize = 1 << 20;
/// Most headers of an HTTP response.
const MAX_HEADERS: usize = 64;

/// One checked dest of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Target {
    /// The service.
    pub(crate) service: ServiceKey,
    /// The dest's address.
    pub(crate) addr: IpAddr,
    /// The dest's port (the virtual port for DR and TUN dests).
    pub(crate) port: u16,
}

impl Target {
    fn dest(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

/// What the checker knows about one dest.
#[derive(Debug, Clone)]
struct DestHealth {
    /// Tells results of probes started for an earlier incarnation of this target apart.
    epoch: u64,
    probe: Probe,
    up: bool,
    since: SystemTime,
    ok_run: u32,
    fail_run: u32,
    checks_ok: u64,
    checks_failed: u64,
    transitions: u64,
    last_error: Option<String>,
    /// What the dest is when healthy: the weight to give back, the spec to re-add.
    configured: DestSpec,
    /// Deleted by the checker (`on_fail = "remove"`).
    removed: bool,
    next_due: Instant,
    in_flight: bool,
}

/// A health-checked dest as metrics and logs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DestHealthView {
    /// Service and dest.
    pub(crate) target: Target,
    /// TCP connect or HTTP.
    pub(crate) kind: CheckKind,
    /// Up (taking new connections as configured) or down (quiesced or removed).
    pub(crate) up: bool,
    /// Down and deleted from the service (`on_fail = "remove"`).
    pub(crate) removed: bool,
    /// When it last changed state (start of checking for a dest that never did).
    pub(crate) since: SystemTime,
    /// Probes that succeeded.
    pub(crate) checks_ok: u64,
    /// Probes that failed.
    pub(crate) checks_failed: u64,
    /// Up/down transitions.
    pub(crate) transitions: u64,
    /// Why the last failed probe failed.
    pub(crate) last_error: Option<String>,
}

/// A probe to run.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    target: Target,
    epoch: u64,
    probe: Probe,
    timeout: Duration,
}

#[cfg(test)]
impl Job {
    /// This probe's result, failed for `why` (tests).
    pub(crate) fn failed(&self, why: &str) -> Done {
        Done {
            target: self.target,
            epoch: self.epoch,
            outcome: Err(why.to_owned()),
        }
    }
}

/// A probe's result.
#[derive(Debug, Clone)]
pub(crate) struct Done {
    target: Target,
    epoch: u64,
    outcome: Result<(), String>,
}

/// Something worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// `fall` failures: the dest was quiesced or removed.
    Down {
        /// Service and dest.
        target: Target,
        /// The last failure.
        reason: String,
        /// Quiesced or removed.
        action: OnFail,
        /// Failures in a row.
        fall: u32,
    },
    /// `rise` successes: the dest has its weight back (re-added if it was removed).
    Up {
        /// Service and dest.
        target: Target,
        /// The weight it got back.
        weight: u32,
        /// Successes in a row.
        rise: u32,
    },
    /// A weight set on a down dest (by the operator or a reload) was taken as its configured
    /// weight; the dest stays out of service.
    Held {
        /// Service and dest.
        target: Target,
        /// The weight it will get back.
        weight: u32,
    },
    /// The dest is no longer checked (check removed or disabled): a down dest got its
    /// configured weight back.
    Released {
        /// Service and dest.
        target: Target,
        /// The weight it got back.
        weight: u32,
    },
}

impl Event {
    /// Write the event's log line.
    pub(crate) fn log(&self) {
        let (svc, dest) = match self {
            Event::Down { target, .. }
            | Event::Up { target, .. }
            | Event::Held { target, .. }
            | Event::Released { target, .. } => (service_name(&target.service), target.dest()),
        };
        match self {
            Event::Down {
                reason,
                action,
                fall,
                ..
            } => warn!(
                service = %svc,
                dest = %dest,
                reason = %reason,
                action = match action {
                    OnFail::Quiesce => "quiesced (weight 0)",
                    OnFail::Remove => "removed",
                },
                "health check: dest down after {fall} failed checks"
            ),
            Event::Up { weight, rise, .. } => info!(
                service = %svc,
                dest = %dest,
                weight,
                "health check: dest up after {rise} good checks, back in service"
            ),
            Event::Held { weight, .. } => info!(
                service = %svc,
                dest = %dest,
                weight,
                "health check: the dest is down; the weight it was given is kept for when it \
                 recovers, it stays out of service"
            ),
            Event::Released { weight, .. } => info!(
                service = %svc,
                dest = %dest,
                weight,
                "health check removed: the dest is back in service"
            ),
        }
    }
}

/// What a reconciliation or a result did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The director's services or dests changed (the daemon re-installs its claims).
    pub(crate) changed: bool,
    /// What to log.
    pub(crate) events: Vec<Event>,
}

#[derive(Debug, Default)]
struct Inner {
    checks: BTreeMap<ServiceKey, HealthCheck>,
    dests: BTreeMap<Target, DestHealth>,
    next_epoch: u64,
}

/// Every health-checked dest's state, shared by the checker thread, reloads and metrics.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    inner: Mutex<Inner>,
}

fn spec_of(d: &rvs_core::types::Dest) -> DestSpec {
    DestSpec {
        addr: d.addr,
        port: d.port,
        fwd: d.fwd,
        weight: d.weight,
        u_threshold: d.u_threshold,
        l_threshold: d.l_threshold,
    }
}

impl HealthState {
    /// A state with these checks and no dest seen yet.
    pub(crate) fn new(checks: BTreeMap<ServiceKey, HealthCheck>) -> HealthState {
        HealthState {
            inner: Mutex::new(Inner {
                checks,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replace the checks (reload); [`HealthState::reconcile`] applies the difference.
    pub(crate) fn set_checks(&self, checks: BTreeMap<ServiceKey, HealthCheck>) {
        self.lock().checks = checks;
    }

    /// How many services have a check.
    pub(crate) fn checked_services(&self) -> usize {
        self.lock().checks.len()
    }

    /// Every checked dest, for metrics.
    pub(crate) fn snapshot(&self) -> Vec<DestHealthView> {
        self.lock()
            .dests
            .iter()
            .map(|(t, h)| DestHealthView {
                target: *t,
                kind: h.probe.kind,
                up: h.up,
                removed: h.removed,
                since: h.since,
                checks_ok: h.checks_ok,
                checks_failed: h.checks_failed,
                transitions: h.transitions,
                last_error: h.last_error.clone(),
            })
            .collect()
    }

    /// Bring the checker's view and the director in line (the caller holds the dataplane lock,
    /// so this is atomic with whatever changed the director): start checking new dests,
    /// forget deleted ones, learn configured weights of up dests, hold down dests out of
    /// service, give back what a removed check took. `rules_replaced`: a reload just applied
    /// its rules file, so a dest the checker removed that the file no longer names is
    /// forgotten.
    pub(crate) fn reconcile(&self, d: &mut Director, now: Time, rules_replaced: bool) -> Outcome {
        let mut inner = self.lock();
        let Inner {
            checks,
            dests,
            next_epoch,
        } = &mut *inner;
        let mut out = Outcome::default();
        let mut services = BTreeSet::new();
        let mut live: BTreeMap<Target, DestSpec> = BTreeMap::new();
        for v in d.services() {
            services.insert(v.spec.key);
            for dv in &v.dests {
                let t = Target {
                    service: v.spec.key,
                    addr: dv.dest.addr,
                    port: dv.dest.port,
                };
                live.insert(t, spec_of(dv.dest));
            }
        }
        let mut ops: Vec<(Target, Rule)> = Vec::new();
        // Targets that no longer apply.
        let known: Vec<Target> = dests.keys().copied().collect();
        for t in known {
            let Some(h) = dests.get_mut(&t) else {
                continue;
            };
            let probe = checks
                .get(&t.service)
                .and_then(|c| c.probe_for(t.addr, t.port));
            let is_live = live.contains_key(&t);
            let forget = if !services.contains(&t.service) {
                true
            } else if probe.is_none() {
                if !h.up {
                    let restore = if h.removed {
                        Some(Rule::AddDest(t.service, h.configured))
                    } else if is_live {
                        Some(Rule::EditDest(t.service, h.configured))
                    } else {
                        None
                    };
                    if let Some(r) = restore {
                        ops.push((t, r));
                        out.events.push(Event::Released {
                            target: t,
                            weight: h.configured.weight,
                        });
                    }
                }
                true
            } else {
                // Deleted by the operator, or a reload's rules no longer name it.
                !is_live && (!h.removed || rules_replaced)
            };
            if forget {
                dests.remove(&t);
            } else if let Some(p) = probe {
                h.probe = p;
            }
        }
        // Live dests of checked services.
        for (t, spec) in &live {
            let Some(check) = checks.get(&t.service) else {
                continue;
            };
            let Some(probe) = check.probe_for(t.addr, t.port) else {
                continue;
            };
            let Some(h) = dests.get_mut(t) else {
                *next_epoch += 1;
                dests.insert(
                    *t,
                    DestHealth {
                        epoch: *next_epoch,
                        probe,
                        up: true,
                        since: SystemTime::now(),
                        ok_run: 0,
                        fail_run: 0,
                        checks_ok: 0,
                        checks_failed: 0,
                        transitions: 0,
                        last_error: None,
                        configured: *spec,
                        removed: false,
                        next_due: Instant::now(),
                        in_flight: false,
                    },
                );
                continue;
            };
            if h.up {
                h.configured = *spec;
                continue;
            }
            // Down: the checker owns the weight.
            let given = spec.weight;
            h.configured = DestSpec {
                weight: if given != 0 {
                    given
                } else {
                    h.configured.weight
                },
                ..*spec
            };
            match check.on_fail {
                OnFail::Quiesce => {
                    h.removed = false;
                    if given != 0 {
                        ops.push((
                            *t,
                            Rule::EditDest(t.service, DestSpec { weight: 0, ..*spec }),
                        ));
                        out.events.push(Event::Held {
                            target: *t,
                            weight: given,
                        });
                    }
                }
                OnFail::Remove => {
                    ops.push((*t, Rule::DeleteDest(t.service, t.addr, t.port)));
                    h.removed = true;
                    out.events.push(Event::Held {
                        target: *t,
                        weight: h.configured.weight,
                    });
                }
            }
        }
        // Removed by the checker, and the policy is now to quiesce: back with weight 0.
        for (t, h) in dests.iter_mut() {
            if !h.up
                && h.removed
                && !live.contains_key(t)
                && checks.get(&t.service).map(|c| c.on_fail) == Some(OnFail::Quiesce)
            {
                h.removed = false;
                ops.push((
                    *t,
                    Rule::AddDest(
                        t.service,
                        DestSpec {
                            weight: 0,
                            ..h.configured
                        },
                    ),
                ));
            }
        }
        for (t, op) in ops {
            match d.apply(&op, now) {
                Ok(()) => out.changed = true,
                Err(e) => {
                    debug!(service = %service_name(&t.service), dest = %t.dest(), "health check: {e}");
                    dests.remove(&t);
                }
            }
        }
        out
    }

    /// Probes due at `at` (at most `max`), marked as running.
    pub(crate) fn due(&self, at: Instant, max: usize) -> Vec<Job> {
        let mut inner = self.lock();
        let Inner { checks, dests, .. } = &mut *inner;
        let mut jobs = Vec::new();
        for (t, h) in dests.iter_mut() {
            if jobs.len() >= max {
                break;
            }
            let Some(check) = checks.get(&t.service) else {
                continue;
            };
            if h.in_flight || h.next_due > at {
                continue;
            }
            h.in_flight = true;
            h.next_due = at + check.interval;
            jobs.push(Job {
                target: *t,
                epoch: h.epoch,
                probe: h.probe.clone(),
                timeout: check.timeout,
            });
        }
        jobs
    }

    /// A probe could not be started: it is due again after its interval.
    fn cancel(&self, job: &Job) {
        if let Some(h) = self.lock().dests.get_mut(&job.target)
            && h.epoch == job.epoch
        {
            h.in_flight = false;
        }
    }

    /// Count a probe's result; on `fall` failures in a row take the dest down, on `rise`
    /// successes bring it back, through the director (the caller holds the dataplane lock).
    pub(crate) fn record(&self, d: &mut Director, now: Time, done: Done) -> Outcome {
        let mut out = Outcome::default();
        let mut inner = self.lock();
        let Inner { checks, dests, .. } = &mut *inner;
        let t = done.target;
        let Some(h) = dests.get_mut(&t) else {
            return out;
        };
        if h.epoch != done.epoch {
            return out;
        }
        h.in_flight = false;
        let Some(check) = checks.get(&t.service) else {
            return out;
        };
        match done.outcome {
            Ok(()) => {
                h.checks_ok += 1;
                h.ok_run = h.ok_run.saturating_add(1);
                h.fail_run = 0;
            }
            Err(e) => {
                h.checks_failed += 1;
                h.fail_run = h.fail_run.saturating_add(1);
                h.ok_run = 0;
                h.last_error = Some(e);
            }
        }
        let (op, event) = if h.up && h.fail_run >= check.fall {
            let op = match check.on_fail {
                OnFail::Quiesce => Rule::EditDest(
                    t.service,
                    DestSpec {
                        weight: 0,
                        ..h.configured
                    },
                ),
                OnFail::Remove => Rule::DeleteDest(t.service, t.addr, t.port),
            };
            let ev = Event::Down {
                target: t,
                reason: h.last_error.clone().unwrap_or_default(),
                action: check.on_fail,
                fall: check.fall,
            };
            (op, ev)
        } else if !h.up && h.ok_run >= check.rise {
            let op = if h.removed {
                Rule::AddDest(t.service, h.configured)
            } else {
                Rule::EditDest(t.service, h.configured)
            };
            let ev = Event::Up {
                target: t,
                weight: h.configured.weight,
                rise: check.rise,
            };
            (op, ev)
        } else {
            return out;
        };
        match d.apply(&op, now) {
            Ok(()) => {
                h.up = !h.up;
                h.removed = !h.up && check.on_fail == OnFail::Remove;
                h.since = SystemTime::now();
                h.transitions += 1;
                out.changed = true;
                out.events.push(event);
            }
            Err(e) => {
                // The dest or its service went away meanwhile: nothing left to check.
                debug!(service = %service_name(&t.service), dest = %t.dest(), "health check: {e}");
                dests.remove(&t);
            }
        }
        out
    }
}

/// Log every checked dest's state and counters (at exit).
pub(crate) fn log_summary(state: &HealthState) {
    for v in state.snapshot() {
        let since = v.since.elapsed().map_or(0, |d| d.as_secs());
        info!(
            service = %service_name(&v.target.service),
            dest = %v.target.dest(),
            check = v.kind.name(),
            up = v.up,
            removed = v.removed,
            checks_ok = v.checks_ok,
            checks_failed = v.checks_failed,
            transitions = v.transitions,
            last_error = v.last_error.as_deref().unwrap_or(""),
            "health check summary ({} for {since} s)",
            if v.up { "up" } else { "down" }
        );
    }
}

/// After a control request changed services or dests (the caller holds the dataplane lock):
/// the checker applies its rules at once — a down dest given a weight is held at 0 before any
/// connection can be scheduled to it.
pub(crate) fn after_change(shared: &Shared, d: &mut Director, now: Time) {
    if let Some(h) = shared.health.get() {
        let out = h.reconcile(d, now, false);
        out.events.iter().for_each(Event::log);
    }
}

// ---- the checker thread ---------------------------------------------------------------------

/// Start the checker thread; it stops when `stop` is set (within [`TICK`]). Probes still
/// running then end on their own within their timeout.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    state: Arc<HealthState>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rvsd-health".into())
        .spawn(move || run(&shared, &state, &stop))
}

fn run(shared: &Shared, state: &HealthState, stop: &AtomicBool) {
    let (tx, rx) = mpsc::channel::<Done>();
    let mut in_flight = 0usize;
    let mut seen_generation = None;
    let mut last_reconcile = Instant::now();
    let mut spawn_failures = 0u64;
    let mut last_spawn_log: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        let generation = shared.rules_generation.load(Ordering::Acquire);
        if seen_generation != Some(generation) || last_reconcile.elapsed() >= RECONCILE_EVERY {
            let out = {
                let mut dp = shared.lock();
                state.reconcile(dp.director_mut(), shared.now(), false)
            };
            if out.changed {
                shared.rules_generation.fetch_add(1, Ordering::AcqRel);
            }
            seen_generation = Some(shared.rules_generation.load(Ordering::Acquire));
            last_reconcile = Instant::now();
            out.events.iter().for_each(Event::log);
        }
        for job in state.due(Instant::now(), MAX_IN_FLIGHT.saturating_sub(in_flight)) {
            let tx = tx.clone();
            let j = job.clone();
            let started = std::thread::Builder::new()
                .name("rvsd-probe".into())
                .spawn(move || {
                    let outcome = run_probe(j.target.addr, &j.probe, j.timeout);
                    let _ = tx.send(Done {
                        target: j.target,
                        epoch: j.epoch,
                        outcome,
                    });
                });
            match started {
                Ok(_) => in_flight += 1,
                Err(e) => {
                    // A local shortage, not the dest's fault: not counted against it.
                    state.cancel(&job);
                    spawn_failures += 1;
                    if last_spawn_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        warn!(
                            failures = spawn_failures,
                            "health check: cannot start a probe thread: {e}"
                        );
                        last_spawn_log = Some(Instant::now());
                        spawn_failures = 0;
                    }
                }
            }
        }
        let mut results = Vec::new();
        if let Ok(done) = rx.recv_timeout(TICK) {
            results.push(done);
            results.extend(rx.try_iter());
        }
        if results.is_empty() {
            continue;
        }
        in_flight = in_flight.saturating_sub(results.len());
        let mut events = Vec::new();
        let mut changed = false;
        {
            let mut dp = shared.lock();
            let now = shared.now();
            for done in results {
                let out = state.record(dp.director_mut(), now, done);
                changed |= out.changed;
                events.extend(out.events);
            }
        }
        if changed {
            shared.rules_generation.fetch_add(1, Ordering::AcqRel);
            seen_generation = Some(shared.rules_generation.load(Ordering::Acquire));
        }
        events.iter().for_each(Event::log);
    }
}

// ---- probes ---------------------------------------------------------------------------------

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

/// Run one probe against the dest at `addr` (the probe's port is resolved); `Err` says why it
/// failed.
pub(crate) fn run_probe(addr: IpAddr, probe: &Probe, timeout: Duration) -> Result<(), String> {
    let to = SocketAddr::new(addr, probe.port.unwrap_or(0));
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&to, timeout)
        .map_err(|e| format!("connect to {to}: {}", describe(&e)))?;
    let result = match probe.kind {
        CheckKind::Tcp => Ok(()),
        CheckKind::Http => http_check(&mut s, to, probe, deadline, timeout),
    };
    let _ = s.shutdown(Shutdown::Both);
    result
}

fn left(deadline: Instant, timeout: Duration) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("no complete answer within {timeout:?}"))
}

fn http_check(
    s: &mut TcpStream,
    to: SocketAddr,
    probe: &Probe,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let host = probe.host.clone().unwrap_or_else(|| to.to_string());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rvsd-health-check/{}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        probe.path,
        env!("CARGO_PKG_VERSION")
    );
    s.set_write_timeout(Some(left(deadline, timeout)?))
        .map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes())
        .map_err(|e| format!("sending the request: {}", describe(&e)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut eof = false;
    loop {
        match judge(&buf, eof || buf.len() >= MAX_RESPONSE, probe) {
            Judgement::Pass => return Ok(()),
            Judgement::Fail(why) => return Err(why),
            Judgement::More => {}
        }
        s.set_read_timeout(Some(left(deadline, timeout)?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no complete answer within {timeout:?}"));
            }
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
}

/// What the bytes of a response so far say.
#[derive(Debug, PartialEq, Eq)]
enum Judgement {
    Pass,
    Fail(String),
    More,
}

/// Judge a response from its first bytes; `complete`: no more bytes will come.
fn judge(buf: &[u8], complete: bool, probe: &Probe) -> Judgement {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if complete => {
            return Judgement::Fail(if buf.is_empty() {
                "the connection closed without an answer".to_owned()
            } else {
                "the response head is incomplete".to_owned()
            });
        }
        Ok(httparse::Status::Partial) => return Judgement::More,
        Err(e) => return Judgement::Fail(format!("not an HTTP response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    if status != probe.expect_status {
        return Judgement::Fail(format!(
            "status {status} (expected {})",
            probe.expect_status
        ));
    }
    let Some(needle) = probe.body_contains.as_deref() else {
        return Judgement::Pass;
    };
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let raw = &buf[head_len..];
    let chunked = header("transfer-encoding").is_some_and(|v| v.ends_with("chunked"));
    let (body, body_done) = if chunked {
        dechunk(raw)
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        (raw[..raw.len().min(n)].to_vec(), raw.len() >= n)
    } else {
        (raw.to_vec(), false)
    };
    if contains(&body, needle.as_bytes()) {
        Judgement::Pass
    } else if body_done || complete {
        Judgement::Fail(format!("the body does not contain {needle:?}"))
    } else {
        Judgement::More
    }
}

/// The body of a chunked message so far, and whether its last chunk arrived.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Ok(httparse::Status::Complete((at, size))) = httparse::parse_chunk_size(raw) else {
            // Incomplete or malformed size line: what we have is all there is.
            return (body, false);
        };
        if size == 0 {
            return (body, true);
        }
        let rest = &raw[at..];
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if rest.len() < size {
            body.extend_from_slice(rest);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        // The chunk's CRLF.
        raw = rest.get(size + 2..).unwrap_or(&[]);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::rules::parse_rules;
    use rvs_core::settings::Settings;
    use rvs_core::types::Protocol;

    use crate::config::Config;

    fn http_probe(status: u16, body: Option<&str>) -> Probe {
        Probe {
            kind: CheckKind::Http,
            port: Some(80),
            path: "/".into(),
            host: None,
            expect_status: status,
            body_contains: body.map(str::to_owned),
        }
    }

    #[test]
    fn http_responses_are_judged_by_status_and_body() {
        let p = http_probe(200, None);
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        assert_eq!(judge(ok, false, &p), Judgement::Pass);
        // Byte by byte: undecided until the head is complete.
        for n in 0..ok.len() - 4 {
            assert_eq!(judge(&ok[..n], false, &p), Judgement::More, "{n}");
        }
        assert_eq!(
            judge(b"HTTP/1.1 503 Service Unavailable\r\n\r\n", false, &p),
            Judgement::Fail("status 503 (expected 200)".into())
        );
        assert_eq!(
            judge(b"", true, &p),
            Judgement::Fail("the connection closed without an answer".into())
        );
        assert!(
            matches!(judge(b"HTTP/1.1 20", true, &p), Judgement::Fail(m) if m.contains("incomplete"))
        );
        assert!(
            matches!(judge(b"SSH-2.0-OpenSSH\r\n\r\n", false, &p), Judgement::Fail(m) if m.contains("not an HTTP"))
        );
        assert_eq!(
            judge(
                b"HTTP/1.0 204 No Content\r\n\r\n",
                false,
                &http_probe(204, None)
            ),
            Judgement::Pass
        );

        let p = http_probe(200, Some("healthy"));
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(
            judge(format!("{head}I am healthy").as_bytes(), false, &p),
            Judgement::Pass
        );
        assert_eq!(
            judge(format!("{head}I am heal").as_bytes(), false, &p),
            Judgement::More
        );
        assert_eq!(
            judge(format!("{head}I am sick!!!").as_bytes(), false, &p),
            Judgement::Fail("the body does not contain \"healthy\"".into())
        );
        // Bytes past Content-Length do not count.
        let h4 = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
        assert!(matches!(
            judge(format!("{h4}I amhealthy").as_bytes(), false, &p),
            Judgement::Fail(_)
        ));
        // Without a length, the body ends with the connection.
        let h0 = "HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(
            judge(format!("{h0}not yet").as_bytes(), false, &p),
            Judgement::More
        );
        assert!(matches!(
            judge(format!("{h0}not yet").as_bytes(), true, &p),
            Judgement::Fail(_)
        ));
        // Chunked: the needle spans two chunks.
        let hc = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let body = "5\r\nI am \r\n4;ext=1\r\nheal\r\n3\r\nthy\r\n0\r\n\r\n";
        assert_eq!(
            judge(format!("{hc}{body}").as_bytes(), false, &p),
            Judgement::Pass
        );
        assert_eq!(
            judge(format!("{hc}5\r\nI am \r\n4\r\nhe").as_bytes(), false, &p),
            Judgement::More
        );
        assert!(matches!(
            judge(format!("{hc}5\r\nI am \r\n0\r\n\r\n").as_bytes(), false, &p),
            Judgement::Fail(_)
        ));
        // Garbage chunk sizes never panic.
        assert!(matches!(
            judge(format!("{hc}zz\r\n").as_bytes(), true, &p),
            Judgement::Fail(_)
        ));
        assert!(matches!(
            judge(format!("{hc}ffffffffffffffff\r\nab").as_bytes(), true, &p),
            Judgement::Fail(_)
        ));
    }

    const RULES: &str = "-A -t 203.0.113.10:80 -s rr\n\
                         -a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 3\n\
                         -a -t 203.0.113.10:80 -r 198.51.100.12:80 -g -w 1\n\
                         -A -t 203.0.113.10:443 -s rr\n\
                         -a -t 203.0.113.10:443 -r 198.51.100.11:443 -g -w 1\n";

    fn setup(check: &str) -> (Director, HealthState) {
        let mut d = Director::new(Settings::default());
        for r in parse_rules(RULES).unwrap() {
            d.apply(&r, 0).unwrap();
        }
        let cfg = Config::from_toml(check).unwrap();
        (d, HealthState::new(cfg.health_checks))
    }

    fn target(addr: &str) -> Target {
        Target {
            service: ServiceKey {
                protocol: Protocol::Tcp,
                addr: "203.0.113.10".parse().unwrap(),
                port: 80,
            },
            addr: addr.parse().unwrap(),
            port: 80,
        }
    }

    /// Weight of a dest of the port-80 service; `None` if it is not there.
    fn weight(d: &Director, addr: &str) -> Option<u32> {
        let t = target(addr);
        d.services()
            .iter()
            .find(|v| v.spec.key == t.service)?
            .dests
            .iter()
            .find(|x| x.dest.addr == t.addr)
            .map(|x| x.dest.weight)
    }

    /// Run one round: every due probe of `addr` gets `result`, the others succeed.
    fn round(h: &HealthState, d: &mut Director, failing: &[&str]) -> Vec<Event> {
        let far = Instant::now() + Duration::from_secs(3600 * 24 * 365);
        let mut events = Vec::new();
        for job in h.due(far, usize::MAX) {
            let fail = failing.iter().any(|a| target(a).addr == job.target.addr)
                && job.target.service.port == 80;
            let outcome = if fail {
                Err("connect to 198.51.100.11:80: Connection refused".to_owned())
            } else {
                Ok(())
            };
            let done = Done {
                target: job.target,
                epoch: job.epoch,
                outcome,
            };
            events.extend(h.record(d, 0, done).events);
        }
        // Due again at once in the next round.
        for x in h.lock().dests.values_mut() {
            x.next_due = Instant::now();
        }
        events
    }

    const CHECK: &str =
        "[health_check.\"tcp/203.0.113.10:80\"]\nkind = \"tcp\"\nrise = 2\nfall = 3\n";

    #[test]
    fn fall_quiesces_rise_restores_and_each_transition_is_one_event() {
        let (mut d, h) = setup(CHECK);
        let out = h.reconcile(&mut d, 0, false);
        assert!(!out.changed && out.events.is_empty());
        assert_eq!(
            h.snapshot().len(),
            2,
            "both dests of the checked service, not 443's"
        );
        assert!(h.snapshot().iter().all(|v| v.up));
        let bad = "198.51.100.11";
        assert!(round(&h, &mut d, &[bad]).is_empty());
        assert!(round(&h, &mut d, &[bad]).is_empty());
        assert_eq!(weight(&d, bad), Some(3), "two failures are not yet `fall`");
        let ev = round(&h, &mut d, &[bad]);
        assert_eq!(
            ev,
            vec![Event::Down {
                target: target(bad),
                reason: "connect to 198.51.100.11:80: Connection refused".into(),
                action: OnFail::Quiesce,
                fall: 3
            }]
        );
        assert_eq!(weight(&d, bad), Some(0), "quiesced");
        assert_eq!(
            weight(&d, "198.51.100.12"),
            Some(1),
            "the other dest is untouched"
        );
        // Failing on: no more events.
        for _ in 0..5 {
            assert!(round(&h, &mut d, &[bad]).is_empty());
        }
        // One success is not `rise`; a failure in between restarts the count.
        assert!(round(&h, &mut d, &[]).is_empty());
        assert!(round(&h, &mut d, &[bad]).is_empty());
        assert!(round(&h, &mut d, &[]).is_empty());
        let ev = round(&h, &mut d, &[]);
        assert_eq!(
            ev,
            vec![Event::Up {
                target: target(bad),
                weight: 3,
                rise: 2
            }]
        );
        assert_eq!(weight(&d, bad), Some(3), "the configured weight is back");
        let v = h
            .snapshot()
            .into_iter()
            .find(|v| v.target == target(bad))
            .unwrap();
        assert_eq!((v.up, v.transitions, v.checks_failed), (true, 2, 9));
        assert!(v.last_error.unwrap().contains("refused"));
    }

    #[test]
    fn remove_deletes_and_re_adds_with_the_same_spec() {
        let (mut d, h) = setup(&format!("{CHECK}on_fail = \"remove\"\n"));
        h.reconcile(&mut d, 0, false);
        let bad = "198.51.100.11";
        for _ in 0..3 {
            round(&h, &mut d, &[bad]);
        }
        assert_eq!(weight(&d, bad), None, "removed");
        assert!(
            h.snapshot()
                .iter()
                .any(|v| v.target == target(bad) && v.removed)
        );
        // The periodic reconciliation keeps the removed dest (the operator did not delete it).
        let out = h.reconcile(&mut d, 0, false);
        assert!(!out.changed && out.events.is_empty());
        round(&h, &mut d, &[]);
        let ev = round(&h, &mut d, &[]);
        assert!(
            matches!(ev.as_slice(), [Event::Up { weight: 3, .. }]),
            "{ev:?}"
        );
        assert_eq!(weight(&d, bad), Some(3), "re-added with its weight");
    }

    #[test]
    fn the_operator_and_reloads_meet_the_keepalived_rules() {
        let (mut d, h) = setup(CHECK);
        h.reconcile(&mut d, 0, false);
        let bad = "198.51.100.11";
        let edit = |d: &mut Director, w: u32| {
            let r = format!("-e -t 203.0.113.10:80 -r {bad}:80 -g -w {w}");
            d.apply(&rvs_core::rules::parse_line(&r).unwrap().unwrap(), 0)
                .unwrap();
        };
        // An edit while up is learnt.
        edit(&mut d, 5);
        assert!(h.reconcile(&mut d, 0, false).events.is_empty());
        for _ in 0..3 {
            round(&h, &mut d, &[bad]);
        }
        assert_eq!(weight(&d, bad), Some(0));
        // An edit while down is held: weight back to 0, remembered for the recovery.
        edit(&mut d, 7);
        let out = h.reconcile(&mut d, 0, false);
        assert!(out.changed);
        assert_eq!(
            out.events,
            vec![Event::Held {
                target: target(bad),
                weight: 7
            }]
        );
        assert_eq!(weight(&d, bad), Some(0));
        // Held steady: nothing more to do or say.
        let out = h.reconcile(&mut d, 0, false);
        assert!(!out.changed && out.events.is_empty());
        round(&h, &mut d, &[]);
        round(&h, &mut d, &[]);
        assert_eq!(weight(&d, bad), Some(7));

        // Down again, then the check is removed (reload): the dest gets its weight back.
        for _ in 0..3 {
            round(&h, &mut d, &[bad]);
        }
        assert_eq!(weight(&d, bad), Some(0));
        h.set_checks(BTreeMap::new());
        let out = h.reconcile(&mut d, 0, true);
        assert_eq!(
            out.events,
            vec![Event::Released {
                target: target(bad),
                weight: 7
            }]
        );
        assert_eq!(weight(&d, bad), Some(7));
        assert!(h.snapshot().is_empty());

        // A deleted dest is forgotten.
        let cfg = Config::from_toml(CHECK).unwrap();
        h.set_checks(cfg.health_checks);
        h.reconcile(&mut d, 0, false);
        assert_eq!(h.snapshot().len(), 2);
        let del = rvs_core::rules::parse_line("-d -t 203.0.113.10:80 -r 198.51.100.12:80")
            .unwrap()
            .unwrap();
        d.apply(&del, 0).unwrap();
        h.reconcile(&mut d, 0, false);
        assert_eq!(h.snapshot().len(), 1);
        // A result of a probe started before is ignored for a target that is gone.
        let stale = Done {
            target: target("198.51.100.12"),
            epoch: 1,
            outcome: Err("x".into()),
        };
        assert!(h.record(&mut d, 0, stale).events.is_empty());
    }

    #[test]
    fn a_down_removed_dest_follows_a_policy_change_and_a_reload_that_drops_it() {
        let (mut d, h) = setup(&format!("{CHECK}on_fail = \"remove\"\n"));
        h.reconcile(&mut d, 0, false);
        let bad = "198.51.100.11";
        for _ in 0..3 {
            round(&h, &mut d, &[bad]);
        }
        assert_eq!(weight(&d, bad), None);
        // A reload's rules re-add it (they name it): removed again at once, weight learnt.
        let add =
            rvs_core::rules::parse_line(&format!("-a -t 203.0.113.10:80 -r {bad}:80 -g -w 4"))
                .unwrap()
                .unwrap();
        d.apply(&add, 0).unwrap();
        let out = h.reconcile(&mut d, 0, true);
        assert_eq!(
            out.events,
            vec![Event::Held {
                target: target(bad),
                weight: 4
            }]
        );
        assert_eq!(weight(&d, bad), None);
        // The policy becomes quiesce: it comes back with weight 0.
        h.set_checks(Config::from_toml(CHECK).unwrap().health_checks);
        assert!(h.reconcile(&mut d, 0, false).changed);
        assert_eq!(weight(&d, bad), Some(0));
        round(&h, &mut d, &[]);
        round(&h, &mut d, &[]);
        assert_eq!(weight(&d, bad), Some(4));
        // Removed once more; a reload whose rules no longer name it forgets it.
        h.set_checks(
            Config::from_toml(&format!("{CHECK}on_fail = \"remove\"\n"))
                .unwrap()
                .health_checks,
        );
        for _ in 0..3 {
            round(&h, &mut d, &[bad]);
        }
        assert_eq!(weight(&d, bad), None);
        h.reconcile(&mut d, 0, true);
        assert!(h.snapshot().iter().all(|v| v.target != target(bad)));
        round(&h, &mut d, &[]);
        round(&h, &mut d, &[]);
        assert_eq!(weight(&d, bad), None, "not re-added");
    }

    #[test]
    fn disabled_and_overridden_dests() {
        let (mut d, h) = setup(&format!(
            "{CHECK}[health_check.\"tcp/203.0.113.10:80\".dest.\"198.51.100.12\"]\nenabled = false\n\
             [health_check.\"tcp/203.0.113.10:80\".dest.\"198.51.100.11\"]\nport = 8080\n"
        ));
        h.reconcile(&mut d, 0, false);
        let far = Instant::now() + Duration::from_secs(3600);
        let jobs = h.due(far, usize::MAX);
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].probe.port, Some(8080));
        assert!(
            h.due(far, usize::MAX).is_empty(),
            "in flight: not due twice"
        );
    }
}
