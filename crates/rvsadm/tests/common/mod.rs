//! Harness of the rvsadm end-to-end tests: a real `rvsd control-only` on a unique abstract
//! socket (no root needed: abstract sockets are per network namespace, not files), and the real
//! `rvsadm` binary talking to it.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The `rvsd` binary, built (or found up to date) once per test binary. Cargo only gives a
/// package's tests the path of its own binaries, so the daemon is built here with the same
/// cargo, target directory and profile that built `rvsadm`, and taken from beside it.
pub fn rvsd_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let rvsadm = Path::new(env!("CARGO_BIN_EXE_rvsadm"));
        let profile_dir = rvsadm.parent().expect("rvsadm has a directory");
        let target_dir = profile_dir
            .parent()
            .expect("profile directory has a parent");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(p) => p.to_string(),
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "rvsd",
                "--bin",
                "rvsd",
                "--profile",
            ])
            .arg(&profile)
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir)
            .output()
            .expect("running cargo to build rvsd");
        assert!(
            out.status.success(),
            "building rvsd failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("rvsd");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// A running `rvsd control-only`, killed when dropped.
pub struct Daemon {
    child: Child,
    /// Its abstract socket name.
    pub name: String,
    dir: PathBuf,
}

impl Daemon {
    /// Start one with these rules (ipvsadm-save text), optionally feeding it a capture.
    pub fn start(rules: &str, capture: Option<&[u8]>, extra: &[&str]) -> Daemon {
        let name = unique_name();
        let dir = scratch_dir(&name);
        let args = control_only_args(&dir, &name, rules);
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..]).args(extra);
        if let Some(pcap) = capture {
            let p = dir.join("input.pcap");
            std::fs::write(&p, pcap).unwrap();
            cmd.arg("--input").arg(p);
        }
        Daemon::spawn(cmd, name, dir)
    }

    /// Start `cmd` (an `rvsd control-only` serving `name`, possibly wrapped in `ip netns
    /// exec`) and wait until it listens; `dir` is removed when the daemon is dropped.
    pub fn spawn(mut cmd: Command, name: String, dir: PathBuf) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning rvsd");
        // Ready when it says so (it prints after binding the socket); EOF means it failed.
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        if !line.contains("listening on @") {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "rvsd control-only did not start: {line}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Daemon { child, name, dir }
    }

    /// Run rvsadm against this daemon.
    pub fn rvsadm(&self, args: &[&str]) -> Run {
        rvsadm_on(&self.name, args, None)
    }

    /// Run rvsadm with `stdin` as its standard input.
    pub fn rvsadm_stdin(&self, args: &[&str], stdin: &str) -> Run {
        rvsadm_on(&self.name, args, Some(stdin))
    }

    /// Run rvsadm, assert it succeeded with nothing on stderr, return its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.rvsadm(args);
        assert_eq!(
            (r.code, r.stderr.as_str()),
            (0, ""),
            "rvsadm {args:?}: {}",
            r.stdout
        );
        r.stdout
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A socket name no other test uses.
pub fn unique_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("rvsadm-test-{}-{n}", std::process::id())
}

/// A fresh scratch directory for `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `rvsd control-only --socket NAME --rules FILE` (the binary first), the rules written to
/// `dir`.
pub fn control_only_args(dir: &Path, name: &str, rules: &str) -> Vec<std::ffi::OsString> {
    let rules_path = dir.join("rules");
    std::fs::write(&rules_path, rules).unwrap();
    vec![
        rvsd_bin().into(),
        "control-only".into(),
        "--socket".into(),
        name.into(),
        "--rules".into(),
        rules_path.into(),
    ]
}

/// What one rvsadm run did.
#[derive(Debug)]
pub struct Run {
    /// Exit status.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Run rvsadm with `RVSD_SOCKET=name`.
pub fn rvsadm_on(name: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rvsadm"));
    cmd.args(args).env("RVSD_SOCKET", name);
    run(cmd, stdin)
}

/// Run `cmd` (an rvsadm invocation) with `stdin` and collect what it did.
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning rvsadm");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}
