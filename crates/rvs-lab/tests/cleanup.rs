//! A director lab leaves nothing behind when the test using it panics: no namespace, no
//! thread, no socket or device (which would keep a deleted namespace alive).
//!
//! This is the only test of its binary, so the process's threads and descriptors can be
//! counted. It needs root: without it it prints "SKIPPED: needs root" and passes, unless
//! `RVS_E2E=1` is set, in which case skipping fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::Duration;

use rvs_lab::{DirectorLab, DirectorLabOpts, Mode, or_skip};

const T: Duration = Duration::from_secs(10);

fn netns_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn director_lab_cleanup_on_panic_and_close() {
    let threads = count("/proc/self/task");
    let fds = count("/proc/self/fd");
    let mut prefix = String::new();
    let r = catch_unwind(AssertUnwindSafe(|| {
        let Some(lab) = or_skip(DirectorLab::new(DirectorLabOpts {
            mode: Mode::Tun,
            ..DirectorLabOpts::default()
        })) else {
            return false;
        };
        prefix = lab.lab().prefix().to_owned();
        assert_eq!(netns_with(&prefix).len(), 7);
        // Servers, decapsulators and a client connection are open when the panic hits.
        let rip = lab.addrs().dests[2].v4.into();
        let client = lab.client().unwrap();
        assert_eq!(client.udp_request(rip, 7, b"x", T).unwrap(), b"x");
        let mut session = client.tcp_connect(rip, 7, T).unwrap();
        session.echo(b"open", T).unwrap();
        assert!(count("/proc/self/task") > threads);
        panic!("intentional panic inside a director lab (expected by this test)");
    }));
    let Err(_) = r else {
        return; // skipped
    };
    assert!(prefix.starts_with("rvs-"), "{prefix:?}");
    assert_eq!(netns_with(&prefix), Vec::<String>::new());
    assert_eq!(count("/proc/self/task"), threads, "threads left behind");
    assert_eq!(count("/proc/self/fd"), fds, "descriptors left behind");

    // The explicit close does the same and reports success.
    let lab = DirectorLab::new(DirectorLabOpts::default()).unwrap();
    let prefix = lab.lab().prefix().to_owned();
    assert_eq!(netns_with(&prefix).len(), 7);
    lab.close().unwrap();
    assert_eq!(netns_with(&prefix), Vec::<String>::new());
    assert_eq!(count("/proc/self/task"), threads, "threads left behind");
    assert_eq!(count("/proc/self/fd"), fds, "descriptors left behind");
}
