//! `rvsd --check-config FILE [--rules FILE] [--set ...]` (issue 6, "Configuration"): exit 0
//! with a summary for a good configuration, 2 with the file, the line and the reason for a bad
//! one, without touching the host (no root needed, no interface). Also the packaging: the
//! example configuration passes the check, and the systemd unit passes `systemd-analyze
//! verify` where systemd is installed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn rvsd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rvsd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rvsd-check-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging")
}

#[test]
fn good_configurations_pass_with_a_summary() {
    let d = Dir::new("good");
    let cfg = d.file(
        "rvsd.toml",
        "timeout_tcp = 60\n\
         [service.\"tcp/203.0.113.10:80\"]\nexpired_reply = \"icmp\"\n\
         [health_check.\"tcp/203.0.113.10:80\"]\nkind = \"http\"\ninterval = \"500ms\"\n\
         [health_check.\"tcp/203.0.113.99:80\"]\nkind = \"tcp\"\n\
         [metrics]\nlisten = \"[::1]:9100\"\n[log]\nformat = \"json\"\n",
    );
    let rules = d.file(
        "rules",
        "-A -t 203.0.113.10:80 -s rr\n-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1\n",
    );
    let (code, out, err) = rvsd(&["--check-config", &cfg, "--rules", &rules]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 settings changed")
            && out.contains("1 service policies")
            && out.contains("2 health checks")
            && out.contains("metrics on [::1]:9100")
            && out.contains("log json"),
        "{out}"
    );
    assert!(out.contains("1 services, 1 dests"), "{out}");
    assert!(
        out.contains("tcp/203.0.113.99:80") && out.contains("names no service"),
        "a check for a service the rules lack is pointed out: {out}"
    );
    // Without --rules, and with --set on top.
    let (code, out, err) = rvsd(&["--check-config", &cfg, "--set", "timeout_udp=30"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 settings changed"), "{out}");
}

#[test]
fn mistakes_exit_2_with_file_line_and_reason() {
    let d = Dir::new("bad");
    let check = |text: &str| {
        let cfg = d.file("rvsd.toml", text);
        let (code, out, err) = rvsd(&["--check-config", &cfg]);
        assert_eq!(code, 2, "{text}: {out}{err}");
        assert!(out.is_empty(), "nothing claims success: {out}");
        assert!(err.contains(&cfg), "{err}");
        err
    };
    let err = check("timeout_tcp = 60\n\nbogus = 1\n");
    assert!(err.contains("line 3") && err.contains("bogus"), "{err}");
    let err = check("pmtu_disc = \"maybe\"\n");
    assert!(err.contains("line 1") && err.contains("pmtu_disc"), "{err}");
    let err = check("# comment\n[service.\"sctp/203.0.113.10:80\"]\nexpired_reply = \"icmp\"\n");
    assert!(
        err.contains("line 2") && err.contains("sctp/203.0.113.10:80"),
        "{err}"
    );
    let err = check("[health_check.\"tcp/203.0.113.10:80\"]\nkind = \"http\"\nfall = 0\n");
    assert!(
        err.contains("line 3") && err.contains("from 1 to 1000"),
        "{err}"
    );
    let err =
        check("[health_check.\"tcp/203.0.113.10:80\"]\nkind = \"tcp\"\nexpect_status = 200\n");
    assert!(err.contains("line 3") && err.contains("http"), "{err}");
    let err = check("[log]\nlevel = \"loud\"\n");
    assert!(err.contains("line 2") && err.contains("loud"), "{err}");
    let err = check("[metrics]\nlisten = \"9753\"\n");
    assert!(
        err.contains("line 2") && err.contains("ADDRESS:PORT"),
        "{err}"
    );

    // A missing file, a bad rules file, a bad --set: also 2.
    let (code, _, err) = rvsd(&["--check-config", "/nonexistent/rvsd.toml"]);
    assert_eq!(code, 2, "{err}");
    let cfg = d.file("ok.toml", "");
    let rules = d.file(
        "rules",
        "-A -t 203.0.113.10:80 -s rr\n# the service below does not exist\n\
         -a -t 203.0.113.20:80 -r 198.51.100.11:80 -g -w 1\n",
    );
    let (code, _, err) = rvsd(&["--check-config", &cfg, "--rules", &rules]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 3") && err.contains("No such service"),
        "{err}"
    );
    let rules = d.file("rules2", "-A -t 203.0.113.10:80 -s nosuchsched\n");
    let (code, _, err) = rvsd(&["--check-config", &cfg, "--rules", &rules]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 1") && err.contains("nosuchsched"),
        "{err}"
    );
    let (code, _, err) = rvsd(&["--check-config", &cfg, "--set", "conn_tab_max=0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("conn_tab_max"), "{err}");
}

/// The example configuration is valid, says it changes nothing, and so does the unit's
/// `ExecStartPre` check of it.
#[test]
fn the_packaged_example_configuration_passes() {
    let example = packaging().join("rvsd.toml");
    let (code, out, err) = rvsd(&["--check-config", example.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 settings changed") && out.contains("0 health checks"),
        "{out}"
    );
}

/// `systemd-analyze verify` on the unit, with its paths pointed at this build (verify checks
/// that the executables and the environment file exist). Skipped, loudly, without systemd.
#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let d = Dir::new("unit");
    let unit = std::fs::read_to_string(packaging().join("rvsd.service")).unwrap();
    let default = std::fs::read_to_string(packaging().join("rvsd.default")).unwrap();
    let env = d.file("rvsd.default", &default);
    assert!(unit.contains("/usr/local/sbin/rvsd") && unit.contains("/etc/default/rvsd"));
    let unit = unit
        .replace("/usr/local/sbin/rvsd", env!("CARGO_BIN_EXE_rvsd"))
        .replace("/etc/default/rvsd", &env);
    let path = d.file("rvsd.service", &unit);
    let out = Command::new("systemd-analyze")
        .args(["verify", &path])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("rvsd.service"),
        "systemd has something to say about the unit:\n{err}"
    );
    // What the unit promises.
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
    ] {
        assert!(unit.contains(line), "{line}");
    }
}
