//! On the real kernel: the control socket is abstract, so every network namespace has its own
//! director and `ip netns exec NS rvsadm` talks to NS's; and only root (or the daemon's user)
//! may talk to it. Needs root (network namespaces, another user): without it the tests print
//! "SKIPPED: needs root" and pass, unless `RVS_E2E=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write;
use std::process::Command;

use common::{Daemon, Run, control_only_args, rvsadm_on, scratch_dir, unique_name};
use rvs_lab::{HostId, Lab, LabError};

fn lab_or_skip() -> Option<Lab> {
    match Lab::new() {
        Ok(lab) => Some(lab),
        Err(e @ (LabError::NotRoot(_) | LabError::ToolMissing { .. })) => {
            if std::env::var("RVS_E2E").as_deref() == Ok("1") {
                panic!("RVS_E2E=1 but the netns test cannot run: {e}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED: needs root: {e}");
            None
        }
        Err(e) => panic!("Lab::new failed: {e}"),
    }
}

/// `rvsd control-only` on the default socket name (`@rvsd`) inside `host`.
fn director_in(lab: &Lab, host: HostId, rules: &str) -> Daemon {
    let scratch = unique_name();
    let dir = scratch_dir(&scratch);
    let mut args = control_only_args(&dir, rvs_api::DEFAULT_SOCKET_NAME, rules);
    // control_only_args names the socket explicitly; drop `--socket NAME` to use the default.
    args.drain(2..4);
    let cmd = lab.command(host, &args).unwrap();
    Daemon::spawn(cmd, rvs_api::DEFAULT_SOCKET_NAME.to_string(), dir)
}

/// `ip netns exec NS rvsadm ARGS` with no `RVSD_SOCKET`: the default name.
fn rvsadm_in(lab: &Lab, host: HostId, args: &[&str]) -> Run {
    let mut all = vec![env!("CARGO_BIN_EXE_rvsadm")];
    all.extend_from_slice(args);
    let mut cmd: Command = lab.command(host, &all).unwrap();
    cmd.env_remove(rvs_api::SOCKET_ENV);
    common::run(cmd, None)
}

#[test]
fn each_namespace_has_its_own_director() {
    let Some(lab) = lab_or_skip() else { return };
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    // Declared after the lab: the daemons are killed before the namespaces go.
    let _da = director_in(&lab, a, "-A -t 203.0.113.10:80 -s rr\n");
    let _db = director_in(&lab, b, "-A -u 203.0.113.20:53 -s wlc\n");
    let ok = |h, args: &[&str]| {
        let r = rvsadm_in(&lab, h, args);
        assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{args:?}: {r:?}");
        r.stdout
    };
    assert_eq!(ok(a, &["-S", "-n"]), "-A -t 203.0.113.10:80 -s rr\n");
    assert_eq!(ok(b, &["-S", "-n"]), "-A -u 203.0.113.20:53 -s wlc\n");
    ok(
        a,
        &["-a", "-t", "203.0.113.10:80", "-r", "198.51.100.11", "-m"],
    );
    assert_eq!(
        ok(a, &["-Ln"]),
        "\
IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  203.0.113.10:80 rr
  -> 198.51.100.11:80             Masq    1      0          0         
"
    );
    assert_eq!(ok(b, &["-S", "-n"]), "-A -u 203.0.113.20:53 -s wlc\n");
    // A name served in a namespace is not reachable from outside it.
    let inside = unique_name();
    let dir = scratch_dir(&inside);
    let args = control_only_args(&dir, &inside, "");
    let _dc = Daemon::spawn(lab.command(a, &args).unwrap(), inside.clone(), dir);
    let r = rvsadm_on(&inside, &["-L", "-n"], None);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .starts_with("Can't initialize ipvs: Connection refused"),
        "{r:?}"
    );
}

/// Only root and the daemon's own user may control it, as only root may talk to IPVS.
#[test]
fn other_users_are_refused() {
    // Root is needed to run rvsadm as another user; the lab check says whether we have it.
    let Some(_lab) = lab_or_skip() else { return };
    let Ok(setpriv) = which("setpriv") else {
        if std::env::var("RVS_E2E").as_deref() == Ok("1") {
            panic!("RVS_E2E=1 but setpriv (util-linux) is missing");
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: setpriv (util-linux) is missing"
        );
        return;
    };
    let d = Daemon::start("-A -t 203.0.113.10:80 -s rr\n", None, &[]);
    // A copy of rvsadm that user `nobody` can execute wherever the target directory is.
    let dir = scratch_dir(&unique_name());
    let bin = dir.join("rvsadm");
    std::fs::copy(env!("CARGO_BIN_EXE_rvsadm"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["-A", "-t", "203.0.113.20:80"])
        .env(rvs_api::SOCKET_ENV, &d.name);
    let r = common::run(cmd, None);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            2,
            "Can't initialize ipvs: Permission denied (you must be root)\n"
        )
    );
    assert_eq!(d.ok(&["-S", "-n"]), "-A -t 203.0.113.10:80 -s rr\n");
}

fn which(tool: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|p| p.join(tool))
        .find(|p| p.is_file())
        .ok_or(())
}
