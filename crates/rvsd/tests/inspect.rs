//! The README's main command, `rvsd inspect`, run as a binary on corpus captures.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus/pcap");

fn inspect(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rvsd"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn row(out: &str, label: &str) -> Option<usize> {
    out.lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix(label)?;
        rest.split_whitespace().last()?.parse().ok()
    })
}

#[test]
fn smtp_capture_summary() {
    let path = format!("{CORPUS}/smtp.pcap");
    assert!(
        std::path::Path::new(&path).exists(),
        "corpus missing at {path}"
    );
    let (ok, out, err) = inspect(&[&path]);
    assert!(ok, "{err}");
    assert!(out.contains("125 packets"), "{out}");
    assert_eq!(row(&out, "ipv4/tcp"), Some(118), "{out}");
    assert_eq!(row(&out, "ipv4/udp"), Some(3), "{out}");
    assert_eq!(row(&out, "ipv4/icmp-error"), Some(4), "{out}");
    assert_eq!(
        row(&out, "icmp   3/4   fragmentation needed"),
        Some(4),
        "{out}"
    );
    assert_eq!(row(&out, "tcp flow"), Some(4), "{out}");
}

#[test]
fn icmp_listing_names_the_connection_and_mtu() {
    let (ok, out, err) = inspect(&["--icmp", &format!("{CORPUS}/smtp.pcap")]);
    assert!(ok, "{err}");
    let frag: Vec<_> = out
        .lines()
        .filter(|l| l.contains("icmp 3/4 mtu 1492"))
        .collect();
    assert_eq!(frag.len(), 4, "{out}");
    assert!(
        frag.iter()
            .all(|l| l.contains("quoting 548 bytes") && l.contains("proto 6")),
        "{out}"
    );
}

#[test]
fn several_captures_and_typed_errors() {
    let a = format!("{CORPUS}/icmp-icmp_print-oobr-2.pcap");
    let b = format!("{CORPUS}/yanet_014_icmp_error_009-send.pcap");
    let (ok, out, err) = inspect(&[&a, &b]);
    assert!(ok, "{err}");
    assert_eq!(row(&out, "error:unsupported_link_type"), Some(3), "{out}");
    assert_eq!(row(&out, "non_first_fragment"), Some(1), "{out}");
    assert!(out.contains("total over 2 captures: 5 packets"), "{out}");
}

#[test]
fn not_a_capture_fails_with_a_message() {
    let (ok, _, err) = inspect(&[concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")]);
    assert!(!ok);
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
    let (ok, _, err) = inspect(&["/nonexistent/x.pcap"]);
    assert!(!ok);
    assert!(err.contains("opening /nonexistent/x.pcap"), "{err}");
}
