//! The lab: network namespaces joined by veth pairs, removed again on drop.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::net::{IpNet, is_documentation_addr};
use crate::run::{Running, TOOL_TIMEOUT, check, describe, run_checked};

/// Time limit of [`Lab::exec`].
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Every namespace a lab creates is named `rvs-<pid>-<counter>-<host>`.
const NS_PREFIX: &str = "rvs-";

/// Where iproute2 keeps named network namespaces.
const NETNS_DIR: &str = "/run/netns";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A host (network namespace) of one [`Lab`]; a [`Lab`] refuses ids of other labs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostId {
    lab: u32,
    index: usize,
}

/// How [`Lab::link`] configures the two ends of a veth pair.
#[derive(Clone, Debug, Default)]
pub struct LinkOpts {
    /// MTU of the `a` end; the kernel default (1500) if `None`.
    pub mtu_a: Option<u32>,
    /// MTU of the `b` end; the kernel default (1500) if `None`.
    pub mtu_b: Option<u32>,
    /// Addresses configured on the `a` end.
    pub addrs_a: Vec<IpNet>,
    /// Addresses configured on the `b` end.
    pub addrs_b: Vec<IpNet>,
}

/// The interface names of a veth pair made by [`Lab::link`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The interface in host `a` (named `eth<N>`, numbered per host from 0).
    pub a_dev: String,
    /// The interface in host `b`.
    pub b_dev: String,
}

#[derive(Debug)]
struct Host {
    name: String,
    netns: String,
    next_if: u32,
}

/// A set of network namespaces ("hosts") joined by veth pairs.
///
/// Namespaces are named `rvs-<pid>-<counter>-<host>` ([`Lab::prefix`] plus the host name), so
/// every lab instance has its own. Dropping the lab kills every process left in its namespaces
/// and deletes them (which deletes their veths); this also happens when a panic unwinds through
/// the lab. Namespaces left by a process that died without dropping its lab are removed by the
/// next [`Lab::new`]. Addresses and routes are only ever configured inside the lab's own
/// namespaces, and only from the documentation ranges (see [`IpNet`]).
#[derive(Debug)]
pub struct Lab {
    id: u32,
    prefix: String,
    hosts: Mutex<Vec<Host>>,
}

/// A process started in a lab host by [`Lab::spawn`]; killed (and reaped) when dropped, which
/// the borrow makes happen before the lab itself is dropped.
pub struct LabChild<'lab> {
    running: Option<Running>,
    _lab: PhantomData<&'lab Lab>,
}

impl std::fmt::Debug for LabChild<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabChild")
            .field("cmd", &self.running.as_ref().map(|r| &r.cmd))
            .finish()
    }
}

impl LabChild<'_> {
    /// The process id (of `ip netns exec`, which executes the program in place).
    pub fn id(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// Waits up to `timeout` for the process to exit and returns its status and captured
    /// output (the exit status is not checked). On timeout the process is killed and
    /// [`LabError::Timeout`] returned.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Output> {
        match self.running.take() {
            Some(r) => r.wait(timeout),
            None => Err(LabError::Io {
                cmd: "<lab child>".to_owned(),
                source: std::io::Error::other("already waited for"),
            }),
        }
    }
}

impl Drop for LabChild<'_> {
    fn drop(&mut self) {
        if let Some(mut r) = self.running.take() {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

impl Lab {
    /// Creates an empty lab.
    ///
    /// Fails with [`LabError::NotRoot`] without root privileges and with
    /// [`LabError::ToolMissing`] without `ip`, so callers (tests) can skip loudly. Before
    /// returning, removes namespaces left by crashed runs: those named `rvs-<pid>-…` whose
    /// process no longer exists, and any bearing this lab's own prefix.
    pub fn new() -> Result<Self> {
        check_root()?;
        check_tool("ip", &["-V"])?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NS_PREFIX}{}-{n}-", std::process::id());
        remove_stale(Some(&prefix))?;
        Ok(Self {
            id: n,
            prefix,
            hosts: Mutex::new(Vec::new()),
        })
    }

    /// This lab's namespace-name prefix, `rvs-<pid>-<counter>-`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn hosts(&self) -> MutexGuard<'_, Vec<Host>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a host: a new network namespace named [`Lab::prefix`] + `name`, with `lo` up.
    /// `name` is 1 to 12 characters of `a-z`, `0-9` and `-`, unique in the lab.
    pub fn host(&self, name: &str) -> Result<HostId> {
        let valid = (1..=12).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let netns = format!("{}{name}", self.prefix);
        let id = {
            let mut hosts = self.hosts();
            if !valid || hosts.iter().any(|h| h.name == name) {
                return Err(LabError::InvalidName(name.to_owned()));
            }
            ip(&["netns", "add", &netns])?;
            hosts.push(Host {
                name: name.to_owned(),
                netns: netns.clone(),
                next_if: 0,
            });
            HostId {
                lab: self.id,
                index: hosts.len() - 1,
            }
        };
        ip(&["-n", &netns, "link", "set", "dev", "lo", "up"])?;
        Ok(id)
    }

    /// Runs `f` on the record of `host`, if it belongs to this lab.
    fn with_host<T>(&self, host: HostId, f: impl FnOnce(&mut Host) -> T) -> Result<T> {
        let mut hosts = self.hosts();
        match hosts.get_mut(host.index) {
            Some(h) if host.lab == self.id => Ok(f(h)),
            _ => Err(LabError::UnknownHost(host.index)),
        }
    }

    /// The network namespace name of `host` (for `ip netns exec NAME …`).
    pub fn netns_name(&self, host: HostId) -> Result<String> {
        self.with_host(host, |h| h.netns.clone())
    }

    /// The name `host` was created with.
    pub fn host_name(&self, host: HostId) -> Result<String> {
        self.with_host(host, |h| h.name.clone())
    }

    fn next_dev(&self, host: HostId) -> Result<(String, String)> {
        self.with_host(host, |h| {
            let dev = format!("eth{}", h.next_if);
            h.next_if += 1;
            (h.netns.clone(), dev)
        })
    }

    /// Joins hosts `a` and `b` with a veth pair created directly inside their namespaces (it
    /// never appears in the root namespace), sets the MTUs, adds the addresses (IPv6 ones
    /// without duplicate address detection, so they are usable at once) and brings both ends
    /// up.
    pub fn link(&self, a: HostId, b: HostId, opts: &LinkOpts) -> Result<Link> {
        let (ns_a, a_dev) = self.next_dev(a)?;
        let (ns_b, b_dev) = self.next_dev(b)?;
        ip(&[
            "-n", &ns_a, "link", "add", &a_dev, "type", "veth", "peer", "name", &b_dev, "netns",
            &ns_b,
        ])?;
        for (ns, dev, mtu, addrs) in [
            (&ns_a, &a_dev, opts.mtu_a, &opts.addrs_a),
            (&ns_b, &b_dev, opts.mtu_b, &opts.addrs_b),
        ] {
            if let Some(mtu) = mtu {
                ip(&["-n", ns, "link", "set", "dev", dev, "mtu", &mtu.to_string()])?;
            }
            for net in addrs {
                add_addr(ns, dev, net)?;
            }
            ip(&["-n", ns, "link", "set", "dev", dev, "up"])?;
        }
        Ok(Link { a_dev, b_dev })
    }

    /// Adds an address to an interface of `host` (for instance a VIP on `lo`).
    pub fn addr(&self, host: HostId, dev: &str, net: IpNet) -> Result<()> {
        add_addr(&self.netns_name(host)?, dev, &net)
    }

    /// Adds a route in `host` to `dst` (host bits are ignored) via the gateway `via`.
    pub fn route(&self, host: HostId, dst: IpNet, via: IpAddr) -> Result<()> {
        check_gateway(dst.addr(), via)?;
        let ns = self.netns_name(host)?;
        let dst = dst.network().to_string();
        ip(&["-n", &ns, "route", "add", &dst, "via", &via.to_string()])?;
        Ok(())
    }

    /// Adds a default route in `host` via `via` (of `via`'s address family).
    pub fn default_route(&self, host: HostId, via: IpAddr) -> Result<()> {
        check_gateway(via, via)?;
        let ns = self.netns_name(host)?;
        let fam = if via.is_ipv6() { "-6" } else { "-4" };
        ip(&[
            "-n",
            &ns,
            fam,
            "route",
            "add",
            "default",
            "via",
            &via.to_string(),
        ])?;
        Ok(())
    }

    /// Switches IPv4 and IPv6 forwarding in `host` on or off (`net.ipv4.ip_forward`,
    /// `net.ipv6.conf.all.forwarding`).
    pub fn forwarding(&self, host: HostId, on: bool) -> Result<()> {
        let v = if on { "1" } else { "0" };
        self.sysctl(host, "net.ipv4.ip_forward", v)?;
        self.sysctl(host, "net.ipv6.conf.all.forwarding", v)
    }

    /// Sets a sysctl inside `host` with `ip netns exec NS sysctl -q -w KEY=VALUE`, e.g.
    /// `net.ipv4.conf.all.arp_ignore` = `1`. Keys are limited to `A-Za-z0-9._/-`; values to
    /// printable characters.
    pub fn sysctl(&self, host: HostId, key: &str, value: &str) -> Result<()> {
        self.sysctls(host, &[(key, value)])
    }

    /// Sets several sysctls inside `host` with one `sysctl` run, in order; the same checks as
    /// [`Lab::sysctl`] apply to each.
    pub fn sysctls(&self, host: HostId, settings: &[(&str, &str)]) -> Result<()> {
        let mut args = vec!["sysctl".to_owned(), "-q".to_owned()];
        for (key, value) in settings {
            let key_ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
            let value_ok = !value.is_empty() && value.bytes().all(|b| (b' '..=b'~').contains(&b));
            if !key_ok || !value_ok {
                return Err(LabError::InvalidSysctl(format!("{key}={value}")));
            }
            args.push("-w".to_owned());
            args.push(format!("{key}={value}"));
        }
        if settings.is_empty() {
            return Ok(());
        }
        self.exec_timeout(host, &args, TOOL_TIMEOUT)?;
        Ok(())
    }

    /// A command running `args` inside `host` (`ip netns exec NS args…`), for callers that
    /// want to set environment variables or other options before running it with
    /// [`Lab::spawn_command`] or on their own.
    pub fn command<S: AsRef<OsStr>>(&self, host: HostId, args: &[S]) -> Result<Command> {
        let ns = self.netns_name(host)?;
        if args.is_empty() {
            return Err(LabError::Io {
                cmd: format!("ip netns exec {ns}"),
                source: std::io::Error::other("empty command"),
            });
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]).args(args);
        Ok(cmd)
    }

    /// Runs `args` inside `host` to completion within [`EXEC_TIMEOUT`]; fails with
    /// [`LabError::CommandFailed`] on a non-zero exit status.
    pub fn exec<S: AsRef<OsStr>>(&self, host: HostId, args: &[S]) -> Result<Output> {
        self.exec_timeout(host, args, EXEC_TIMEOUT)
    }

    /// [`Lab::exec`] with a chosen time limit.
    pub fn exec_timeout<S: AsRef<OsStr>>(
        &self,
        host: HostId,
        args: &[S],
        timeout: Duration,
    ) -> Result<Output> {
        run_checked(&mut self.command(host, args)?, timeout)
    }

    /// Starts `args` inside `host` with stdin closed and stdout/stderr captured; the process
    /// is killed when the returned [`LabChild`] is dropped.
    pub fn spawn<S: AsRef<OsStr>>(&self, host: HostId, args: &[S]) -> Result<LabChild<'_>> {
        self.spawn_command(self.command(host, args)?)
    }

    /// Starts a command built by [`Lab::command`] (stdin closed, stdout/stderr captured); the
    /// process is killed when the returned [`LabChild`] is dropped.
    pub fn spawn_command(&self, mut cmd: Command) -> Result<LabChild<'_>> {
        Ok(LabChild {
            running: Some(Running::start(&mut cmd)?),
            _lab: PhantomData,
        })
    }

    /// Removes the lab now, reporting the first error (dropping does the same but can only
    /// print errors).
    pub fn close(self) -> Result<()> {
        self.teardown()
    }

    /// Removes every host now; the lab is empty (and its drop a no-op) afterwards.
    pub(crate) fn teardown(&self) -> Result<()> {
        let hosts: Vec<Host> = std::mem::take(&mut *self.hosts());
        let mut first = Ok(());
        for h in hosts.iter().rev() {
            if let Err(e) = remove_netns(&h.netns)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("rvs-lab: cleanup of {} failed: {e}", self.prefix);
        }
    }
}

fn add_addr(ns: &str, dev: &str, net: &IpNet) -> Result<()> {
    let net_s = net.to_string();
    let mut args = vec!["-n", ns, "addr", "add", &net_s, "dev", dev];
    if net.is_ipv6() {
        args.push("nodad");
    }
    ip(&args)?;
    Ok(())
}

fn check_gateway(dst: IpAddr, via: IpAddr) -> Result<()> {
    if dst.is_ipv6() != via.is_ipv6() {
        return Err(LabError::FamilyMismatch(dst, via));
    }
    if !is_documentation_addr(via) {
        let prefix = if via.is_ipv6() { 128 } else { 32 };
        return Err(LabError::NotDocumentation { addr: via, prefix });
    }
    Ok(())
}

/// Runs `ip ARGS` with the tool time limit and checks its status.
fn ip(args: &[&str]) -> Result<Output> {
    run_checked(Command::new("ip").args(args), TOOL_TIMEOUT)
}

fn check_tool(tool: &str, args: &[&str]) -> Result<()> {
    let missing = |detail: String| LabError::ToolMissing {
        tool: tool.to_owned(),
        detail,
    };
    match run_checked(Command::new(tool).args(args), TOOL_TIMEOUT) {
        Ok(_) => Ok(()),
        Err(LabError::Io { source, .. }) => Err(missing(source.to_string())),
        Err(e) => Err(missing(e.to_string())),
    }
}

/// Checks effective uid 0 and the capabilities namespaces and links need, from
/// `/proc/self/status` (no unsafe code needed).
fn check_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| LabError::NotRoot(format!("cannot read /proc/self/status: {e}")))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let euid = field("Uid:").and_then(|v| v.split_whitespace().nth(1));
    if euid != Some("0") {
        return Err(LabError::NotRoot(format!(
            "effective uid is {}",
            euid.unwrap_or("unknown")
        )));
    }
    let cap_eff = field("CapEff:").and_then(|v| u64::from_str_radix(v, 16).ok());
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    match cap_eff {
        Some(c) if c & CAP_NET_ADMIN != 0 && c & CAP_SYS_ADMIN != 0 => Ok(()),
        _ => Err(LabError::NotRoot(
            "CAP_NET_ADMIN or CAP_SYS_ADMIN missing".to_owned(),
        )),
    }
}

/// Names of all named network namespaces.
fn list_netns() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The pid in a lab namespace name `rvs-<pid>-<counter>-<host>`, if it is one.
fn lab_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let _counter: u32 = parts.next()?.parse().ok()?;
    parts.next().filter(|h| !h.is_empty())?;
    Some(pid)
}

/// Removes leftovers of crashed labs: namespaces named `rvs-<pid>-<counter>-<host>` whose
/// process is gone, and those starting with `own_prefix` (a previous process that had the same
/// pid). Namespaces of live processes are left alone. Returns the names removed.
pub fn remove_stale(own_prefix: Option<&str>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_netns()? {
        let Some(pid) = lab_pid(&name) else { continue };
        let own = own_prefix.is_some_and(|p| name.starts_with(p));
        let dead = !Path::new(&format!("/proc/{pid}")).exists();
        if own || dead {
            remove_netns(&name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// (device, inode) of a namespace file, to recognise the root namespace.
fn ns_identity(path: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Kills every process in the named namespace and deletes it. A namespace already gone (another
/// lab's sweep raced us) counts as removed.
fn remove_netns(name: &str) -> Result<()> {
    let path = format!("{NETNS_DIR}/{name}");
    let me = std::process::id();
    // Never kill anything if the name somehow refers to the root (or our own) namespace.
    let id = ns_identity(&path);
    let is_root = id.is_some()
        && (id == ns_identity("/proc/1/ns/net") || id == ns_identity("/proc/self/ns/net"));
    if !is_root && let Ok(out) = ip(&["netns", "pids", name]) {
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|p| p.parse::<u32>().is_ok_and(|p| p > 1 && p != me))
            .map(str::to_owned)
            .collect();
        if !pids.is_empty() {
            // Processes may exit by themselves meanwhile; `kill` then fails for those, which
            // does not matter.
            let _ = run_checked(
                Command::new("kill").arg("-KILL").arg("--").args(&pids),
                TOOL_TIMEOUT,
            );
        }
    }
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "del", name]);
    let desc = describe(&cmd);
    let out = Running::start(&mut cmd)?.wait(TOOL_TIMEOUT)?;
    if out.status.success() || !Path::new(&path).exists() {
        Ok(())
    } else {
        check(desc, out).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names() {
        assert_eq!(lab_pid("rvs-123-0-client"), Some(123));
        assert_eq!(lab_pid("rvs-123-4-r-a"), Some(123));
        assert_eq!(lab_pid("rvs-123-0-"), None);
        assert_eq!(lab_pid("rvs-x-0-a"), None);
        assert_eq!(lab_pid("rvs-12-a"), None);
        assert_eq!(lab_pid("other"), None);
    }
}
