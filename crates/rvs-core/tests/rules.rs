//! The ipvsadm-save rules format and the director settings, from the outside.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use rvs_core::rules::{
    DEFAULT_PERSISTENCE_SECS, DestSpec, MAX_PERSISTENCE_SECS, Netmask, Rule, RuleError, RulesError,
    ServiceSpec, parse_args, parse_line, parse_rules,
};
use rvs_core::settings::{ExpiredReply, FullPolicyName, SettingError, Settings};
use rvs_core::{FwdMethod, Protocol, SchedFlags, SchedulerKind, ServiceKey};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(protocol: Protocol, addr: &str, port: u16) -> ServiceKey {
    ServiceKey {
        protocol,
        addr: ip(addr),
        port,
    }
}

fn rule(line: &str) -> Rule {
    match parse_line(line) {
        Ok(Some(r)) => r,
        other => panic!("{line:?} → {other:?}"),
    }
}

fn err(line: &str) -> String {
    match parse_line(line) {
        Err(e) => e.to_string(),
        other => panic!("{line:?} should fail, got {other:?}"),
    }
}

/// parse → print → parse is the identity, and printing is idempotent.
fn assert_round_trip(line: &str) -> String {
    let r = rule(line);
    r.validate()
        .unwrap_or_else(|e| panic!("{line:?} parsed to an invalid rule: {e}"));
    let printed = r.to_save_line();
    assert_eq!(rule(&printed), r, "{line:?} → {printed:?}");
    assert_eq!(rule(&printed).to_save_line(), printed);
    assert_eq!(r.to_string(), printed, "Display = to_save_line");
    printed
}

// ---------------------------------------------------------------------------------------------
// Golden lines

#[test]
fn golden_lines_from_the_brief() {
    let svc = key(Protocol::Tcp, "203.0.113.10", 80);
    assert_eq!(
        rule("-A -t 203.0.113.10:80 -s rr"),
        Rule::AddService(ServiceSpec {
            scheduler: SchedulerKind::Rr,
            ..ServiceSpec::new(svc)
        })
    );
    assert_eq!(
        rule("-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1"),
        Rule::AddDest(svc, DestSpec::new(ip("198.51.100.11"), 80))
    );

    let v6 = key(Protocol::Udp, "2001:db8::10", 53);
    assert_eq!(
        rule("-A -u [2001:db8::10]:53 -s wlc -p 600 -M 64"),
        Rule::AddService(ServiceSpec {
            persistence: Some(600),
            netmask: Netmask::V6(64),
            ..ServiceSpec::new(v6)
        })
    );
    assert_eq!(
        rule("-a -u [2001:db8::10]:53 -r [2001:db8:1::11]:53 -m -w 3 -x 100 -y 50"),
        Rule::AddDest(
            v6,
            DestSpec {
                fwd: FwdMethod::Masq,
                weight: 3,
                u_threshold: 100,
                l_threshold: 50,
                ..DestSpec::new(ip("2001:db8:1::11"), 53)
            }
        )
    );
    assert_eq!(
        rule("-A -t 203.0.113.10:0 -s sh -b sh-fallback,sh-port -p"),
        Rule::AddService(ServiceSpec {
            scheduler: SchedulerKind::Sh,
            flags: SchedFlags {
                fallback: true,
                port: true
            },
            persistence: Some(300),
            ..ServiceSpec::new(key(Protocol::Tcp, "203.0.113.10", 0))
        })
    );
}

#[test]
fn output_is_ipvsadm_save_format() {
    let cases = [
        ("-A -t 203.0.113.10:80 -s rr", "-A -t 203.0.113.10:80 -s rr"),
        ("-A -t 203.0.113.10:80", "-A -t 203.0.113.10:80 -s wlc"),
        (
            "-a -t 203.0.113.10:80 -r 198.51.100.11",
            "-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1",
        ),
        // ipvsadm prints -p, then -M, then -b.
        (
            "-A -t 203.0.113.10:0 -s sh -b sh-fallback,sh-port -p",
            "-A -t 203.0.113.10:0 -s sh -p 300 -b sh-fallback,sh-port",
        ),
        (
            "-A -t 192.0.2.1:443 -b mh-port -M 255.255.255.0 -p 60 -s mh",
            "-A -t 192.0.2.1:443 -s mh -p 60 -M 255.255.255.0 -b mh-port",
        ),
        (
            "-A -u [2001:db8::10]:53 -s wlc -p 600 -M 64",
            "-A -u [2001:db8::10]:53 -s wlc -p 600 -M 64",
        ),
        // The host mask is not printed.
        (
            "-A -t 192.0.2.1:80 -p 60 -M 255.255.255.255",
            "-A -t 192.0.2.1:80 -s wlc -p 60",
        ),
        (
            "-A -u [2001:db8::1]:80 -p 60 -M 128",
            "-A -u [2001:db8::1]:80 -s wlc -p 60",
        ),
        (
            "-a -u [2001:db8::10]:53 -r [2001:db8:1::11]:53 -m -w 3 -x 100 -y 50",
            "-a -u [2001:db8::10]:53 -r [2001:db8:1::11]:53 -m -w 3 -x 100 -y 50",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -i -x 10",
            "-a -t 192.0.2.1:80 -r 10.0.0.1:80 -i -w 1 -x 10",
        ),
        (
            "-e -t 192.0.2.1:80 -r 10.0.0.1:8080 -m -w 0",
            "-e -t 192.0.2.1:80 -r 10.0.0.1:8080 -m -w 0",
        ),
        ("-E -t 192.0.2.1:80 -s sed", "-E -t 192.0.2.1:80 -s sed"),
        ("-D -u 192.0.2.1:53", "-D -u 192.0.2.1:53"),
        (
            "-d -t 192.0.2.1:80 -r 10.0.0.1",
            "-d -t 192.0.2.1:80 -r 10.0.0.1:80",
        ),
        ("-C", "-C"),
        // IPv6 is printed compressed (RFC 5952), as inet_ntop does.
        (
            "-A -t [2001:0db8:0000:0000:0000:0000:0000:0001]:80 -s rr",
            "-A -t [2001:db8::1]:80 -s rr",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(rule(input).to_save_line(), want, "{input}");
        assert_eq!(assert_round_trip(input), want);
    }
}

#[test]
fn long_options_are_printed_short() {
    let cases = [
        (
            "--add-service --tcp-service 192.0.2.1:80 --scheduler rr --persistent 60 --netmask 255.255.0.0",
            "-A -t 192.0.2.1:80 -s rr -p 60 -M 255.255.0.0",
        ),
        (
            "--edit-service --udp-service 192.0.2.1:53 --scheduler sh --sched-flags sh-port",
            "-E -u 192.0.2.1:53 -s sh -b sh-port",
        ),
        (
            "--delete-service --tcp-service 192.0.2.1:80",
            "-D -t 192.0.2.1:80",
        ),
        (
            "--add-server --tcp-service 192.0.2.1:80 --real-server 10.0.0.2:8080 --masquerading --weight 5 --u-threshold 9 --l-threshold 3",
            "-a -t 192.0.2.1:80 -r 10.0.0.2:8080 -m -w 5 -x 9 -y 3",
        ),
        (
            "--edit-server --tcp-service 192.0.2.1:80 --real-server 10.0.0.2 --gatewaying",
            "-e -t 192.0.2.1:80 -r 10.0.0.2:80 -g -w 1",
        ),
        (
            "--add-server --tcp-service 192.0.2.1:80 --real-server 10.0.0.2 --ipip --tun-type ipip",
            "-a -t 192.0.2.1:80 -r 10.0.0.2:80 -i -w 1",
        ),
        (
            "--delete-server --tcp-service 192.0.2.1:80 --real-server 10.0.0.2:80",
            "-d -t 192.0.2.1:80 -r 10.0.0.2:80",
        ),
        ("--clear", "-C"),
        // --long=value and -Xvalue spellings (popt accepts both).
        (
            "--add-service --tcp-service=192.0.2.1:0 --scheduler=lc --persistent=600",
            "-A -t 192.0.2.1:0 -s lc -p 600",
        ),
        ("-A -t192.0.2.1:80 -sdh", "-A -t 192.0.2.1:80 -s dh"),
        (
            "-a -t 192.0.2.1:80 -r10.0.0.2 -w7",
            "-a -t 192.0.2.1:80 -r 10.0.0.2:80 -g -w 7",
        ),
        ("-A -t 192.0.2.1:0 -p900", "-A -t 192.0.2.1:0 -s wlc -p 900"),
    ];
    for (input, want) in cases {
        assert_eq!(assert_round_trip(input), want, "{input}");
    }
}

#[test]
fn every_scheduler_round_trips() {
    for k in SchedulerKind::ALL {
        for proto in ["-t", "-u"] {
            for addr in ["198.51.100.7:8080", "[2001:db8::7]:8080"] {
                let line = format!("-A {proto} {addr} -s {}", k.name());
                assert_eq!(assert_round_trip(&line), line);
                let line = format!("-E {proto} {addr} -s {} -p 1", k.name());
                assert_eq!(assert_round_trip(&line), line);
                match rule(&line) {
                    Rule::EditService(s) => assert_eq!(s.scheduler, k),
                    r => panic!("{r:?}"),
                }
            }
        }
    }
}

#[test]
fn many_lines_round_trip() {
    let lines = [
        "-A -t 203.0.113.10:80 -s rr",
        "-A -t 203.0.113.10:80 -s wrr -p 300",
        "-A -t 203.0.113.10:80 -s wrr -p 1",
        "-A -t 203.0.113.10:80 -s wrr -p 2678400",
        "-A -t 203.0.113.10:0 -s lc -p 30 -M 255.255.255.0",
        "-A -t 203.0.113.10:0 -s lc -p 30 -M 0.0.0.0",
        "-A -u [2001:db8::10]:0 -s sh -p 30 -M 1 -b sh-fallback",
        "-A -u [::1]:65535 -s mh -b mh-fallback,mh-port",
        "-A -u [::ffff:192.0.2.1]:53 -s rr -b flag-1",
        "-A -u 0.0.0.0:1 -s fo -b flag-2",
        "-A -t 255.255.255.255:80 -s ovf -b flag-1,flag-2",
        "-E -t 203.0.113.10:80 -s nq -p 10 -M 255.0.0.0",
        "-D -t 203.0.113.10:0",
        "-D -u [2001:db8::10]:53",
        "-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1",
        "-a -t 203.0.113.10:80 -r 198.51.100.11:80 -i -w 65535",
        "-a -t 203.0.113.10:80 -r 198.51.100.11:8080 -m -w 0",
        "-a -t 203.0.113.10:0 -r 198.51.100.11:0 -m -w 2",
        "-a -t 203.0.113.10:0 -r 198.51.100.11:443 -m -w 2",
        "-a -t 203.0.113.10:0 -r 198.51.100.11:0 -g -w 2",
        "-a -u [2001:db8::10]:53 -r [2001:db8:1::11]:53 -m -w 3 -x 100 -y 50",
        "-a -u [2001:db8::10]:53 -r [2001:db8:1::11]:53 -i -w 3 -x 2147483647 -y 2147483647",
        "-a -u [2001:db8::10]:53 -r [2001:db8:1::11]:53 -g -w 3 -x 7",
        "-e -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 10",
        "-e -u [2001:db8::10]:53 -r [2001:db8:1::11]:5353 -m -w 3 -x 1 -y 1",
        "-d -t 203.0.113.10:80 -r 198.51.100.11:8080",
        "-d -u [2001:db8::10]:53 -r [2001:db8:1::11]:53",
        "-C",
    ];
    for line in lines {
        assert_eq!(
            assert_round_trip(line),
            line,
            "canonical lines print unchanged"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Semantics

#[test]
fn real_port_defaults_to_the_virtual_port() {
    let svc = key(Protocol::Tcp, "192.0.2.1", 443);
    for m in ["-g", "-m", "-i"] {
        match rule(&format!("-a -t 192.0.2.1:443 -r 10.0.0.1 {m}")) {
            Rule::AddDest(k, d) => {
                assert_eq!(k, svc);
                assert_eq!(d.port, 443, "{m}");
            }
            r => panic!("{r:?}"),
        }
    }
    // Order does not matter: -r before -t still takes the service's port.
    assert_eq!(
        rule("-a -r 10.0.0.1 -m -t 192.0.2.1:443"),
        rule("-a -t 192.0.2.1:443 -r 10.0.0.1:443 -m")
    );
    assert_eq!(
        rule("-d -t 192.0.2.1:443 -r 10.0.0.1"),
        Rule::DeleteDest(svc, ip("10.0.0.1"), 443)
    );
    // An unbracketed IPv6 address never has a port.
    assert_eq!(
        rule("-a -u [2001:db8::1]:53 -r 2001:db8::2 -m"),
        Rule::AddDest(
            key(Protocol::Udp, "2001:db8::1", 53),
            DestSpec {
                fwd: FwdMethod::Masq,
                ..DestSpec::new(ip("2001:db8::2"), 53)
            }
        )
    );
}

#[test]
fn dr_and_tun_dests_always_use_the_virtual_port() {
    // ipvsadm overwrites the real port with the virtual one for -g and -i.
    for m in ["-g", "-i", ""] {
        let line = format!("-a -t 192.0.2.1:80 -r 10.0.0.1:8080 {m}");
        match rule(&line) {
            Rule::AddDest(_, d) => assert_eq!(d.port, 80, "{line}"),
            r => panic!("{r:?}"),
        }
        let line = format!("-e -t 192.0.2.1:80 -r 10.0.0.1:0 {m}");
        match rule(&line) {
            Rule::EditDest(_, d) => assert_eq!(d.port, 80, "{line}"),
            r => panic!("{r:?}"),
        }
    }
    // NAT keeps it.
    match rule("-a -t 192.0.2.1:80 -r 10.0.0.1:8080 -m") {
        Rule::AddDest(_, d) => assert_eq!(d.port, 8080),
        r => panic!("{r:?}"),
    }
    // A delete has no method: the port is taken as written.
    assert_eq!(
        rule("-d -t 192.0.2.1:80 -r 10.0.0.1:8080"),
        Rule::DeleteDest(key(Protocol::Tcp, "192.0.2.1", 80), ip("10.0.0.1"), 8080)
    );
    // validate() refuses a hand-built DR dest on another port.
    let r = Rule::AddDest(
        key(Protocol::Tcp, "192.0.2.1", 80),
        DestSpec::new(ip("10.0.0.1"), 8080),
    );
    assert_eq!(
        r.validate().unwrap_err().to_string(),
        "real server port 8080 must equal the virtual port 80 for -g and -i"
    );
}

#[test]
fn persistence_with_and_without_a_value() {
    let persistence = |line: &str| match rule(line) {
        Rule::AddService(s) | Rule::EditService(s) => s.persistence,
        r => panic!("{r:?}"),
    };
    assert_eq!(persistence("-A -t 192.0.2.1:80"), None);
    assert_eq!(
        persistence("-A -t 192.0.2.1:80 -p"),
        Some(DEFAULT_PERSISTENCE_SECS)
    );
    assert_eq!(persistence("-A -t 192.0.2.1:80 -p -s rr"), Some(300));
    assert_eq!(persistence("-A -t 192.0.2.1:80 -p 600 -s rr"), Some(600));
    assert_eq!(persistence("-A -p -t 192.0.2.1:80"), Some(300));
    assert_eq!(persistence("-A -t 192.0.2.1:80 --persistent"), Some(300));
    assert_eq!(persistence("-A -t 192.0.2.1:80 --persistent 7"), Some(7));
    assert_eq!(persistence("-A -t 192.0.2.1:80 --persistent=8"), Some(8));
    assert_eq!(persistence("-E -t 192.0.2.1:80 -p9"), Some(9));
    assert_eq!(
        persistence(&format!("-A -t 192.0.2.1:80 -p {MAX_PERSISTENCE_SECS}")),
        Some(2_678_400)
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -p 0"),
        "persistence timeout 0 out of range 1..2678400"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -p 2678401"),
        "persistence timeout 2678401 out of range 1..2678400"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -p rr"),
        "invalid persistence timeout rr: expected an integer in 1..2678400"
    );
}

#[test]
fn netmask_forms() {
    let mask = |line: &str| match rule(line) {
        Rule::AddService(s) | Rule::EditService(s) => s.netmask,
        r => panic!("{r:?}"),
    };
    assert_eq!(mask("-A -t 192.0.2.1:80"), Netmask::V4(Ipv4Addr::BROADCAST));
    assert_eq!(mask("-A -t [2001:db8::1]:80"), Netmask::V6(128));
    assert_eq!(
        mask("-A -t 192.0.2.1:80 -p -M 255.255.240.0"),
        Netmask::V4(Ipv4Addr::new(255, 255, 240, 0))
    );
    assert_eq!(mask("-A -t [2001:db8::1]:80 -p -M 48"), Netmask::V6(48));
    assert_eq!(
        mask("-A -M 56 -t [2001:db8::1]:80 -p"),
        Netmask::V6(56),
        "order-free"
    );
    // -M without -p is kept but, like ipvsadm-save, not printed.
    let r = rule("-A -t 192.0.2.1:80 -M 255.255.0.0");
    assert_eq!(
        mask("-A -t 192.0.2.1:80 -M 255.255.0.0"),
        Netmask::V4(Ipv4Addr::new(255, 255, 0, 0))
    );
    assert_eq!(r.to_save_line(), "-A -t 192.0.2.1:80 -s wlc");

    let v4_msg = "IPv4 services take a dotted mask such as 255.255.255.0";
    let v6_msg = "IPv6 services take a prefix length 1..128";
    assert_eq!(
        err("-A -t 192.0.2.1:80 -p -M 24"),
        format!("invalid netmask 24: {v4_msg}")
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -p -M /24"),
        format!("invalid netmask /24: {v4_msg}")
    );
    assert_eq!(
        err("-A -t [2001:db8::1]:80 -p -M 255.255.255.0"),
        format!("invalid netmask 255.255.255.0: {v6_msg}")
    );
    assert_eq!(
        err("-A -t [2001:db8::1]:80 -p -M 0"),
        format!("invalid netmask 0: {v6_msg}")
    );
    assert_eq!(
        err("-A -t [2001:db8::1]:80 -p -M 129"),
        format!("invalid netmask 129: {v6_msg}")
    );
}

#[test]
fn sched_flags() {
    let flags = |line: &str| match rule(line) {
        Rule::AddService(s) | Rule::EditService(s) => s.flags,
        r => panic!("{r:?}"),
    };
    let both = SchedFlags {
        fallback: true,
        port: true,
    };
    assert_eq!(
        flags("-A -t 192.0.2.1:80 -s sh -b sh-port,sh-fallback"),
        both
    );
    assert_eq!(
        flags("-A -t 192.0.2.1:80 -s mh -b mh-fallback,mh-port"),
        both
    );
    assert_eq!(flags("-A -t 192.0.2.1:80 -s rr -b flag-1,flag-2"), both);
    assert!(flags("-A -t 192.0.2.1:80 -b flag-2").port);
    assert!(
        flags("-A -b sh-port -t 192.0.2.1:80 -s sh").port,
        "order-free"
    );
    // Raw flags are printed under the scheduler's names, as ipvsadm does.
    assert_eq!(
        rule("-A -t 192.0.2.1:80 -s sh -b flag-1").to_save_line(),
        "-A -t 192.0.2.1:80 -s sh -b sh-fallback"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -b sh-port"),
        "scheduler flag sh-port needs scheduler sh, not wlc"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -s sh -b mh-fallback"),
        "scheduler flag mh-fallback needs scheduler mh, not sh"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -s rr -b flag-3"),
        "scheduler flag flag-3 is not supported (no RVS scheduler uses it)"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -s sh -b sh-port,bogus"),
        "unknown scheduler flag \"bogus\" (one of sh-fallback, sh-port, mh-fallback, mh-port, flag-1, flag-2)"
    );
    assert_eq!(
        err("-A -t 192.0.2.1:80 -s sh -b sh-port,"),
        "unknown scheduler flag \"\" (one of sh-fallback, sh-port, mh-fallback, mh-port, flag-1, flag-2)"
    );
}

#[test]
fn comments_blank_lines_and_program_name() {
    for line in [
        "",
        "   ",
        "\t",
        "# a comment",
        "   # indented",
        "#-A -t 1.2.3.4:80",
    ] {
        assert_eq!(parse_line(line), Ok(None), "{line:?}");
    }
    assert_eq!(
        rule("-A -t 192.0.2.1:80 -s rr # trailing comment"),
        rule("-A -t 192.0.2.1:80 -s rr")
    );
    assert_eq!(
        rule("-A -t 192.0.2.1:80 -s rr#glued"),
        rule("-A -t 192.0.2.1:80 -s rr")
    );
    assert_eq!(
        rule("ipvsadm -A -t 192.0.2.1:80"),
        rule("-A -t 192.0.2.1:80")
    );
    assert_eq!(rule("rvsadm -C"), Rule::Clear);
    assert_eq!(rule("  -C\r"), Rule::Clear);
    assert_eq!(
        err("ipvsadm"),
        "missing command (one of -A, -E, -D, -a, -e, -d, -C)"
    );
}

#[test]
fn parse_rules_reports_line_numbers() {
    let text = "\
# saved by ipvsadm-save -n
-A -t 203.0.113.10:80 -s rr
-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1

-a -t 203.0.113.10:80 -r 198.51.100.12:80 -g -w 2
-A -u [2001:db8::10]:53 -s wlc -p 600 -M 64
";
    let rules = parse_rules(text).unwrap();
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0].to_save_line(), "-A -t 203.0.113.10:80 -s rr");
    assert_eq!(
        rules[3].to_save_line(),
        "-A -u [2001:db8::10]:53 -s wlc -p 600 -M 64"
    );
    // A saved file restores to the same rules after printing.
    let saved: String = rules.iter().map(|r| r.to_save_line() + "\n").collect();
    assert_eq!(parse_rules(&saved).unwrap(), rules);

    let bad = "-C\r\n# ok\r\n\r\n  -a -t 203.0.113.10:80 -r 198.51.100.11 -w 70000  \r\n-C\n";
    let e = parse_rules(bad).unwrap_err();
    assert_eq!(
        e,
        RulesError {
            line: 4,
            text: "-a -t 203.0.113.10:80 -r 198.51.100.11 -w 70000".to_string(),
            error: RuleError::OutOfRange {
                what: "weight",
                value: "70000".to_string(),
                min: 0,
                max: 65535
            },
        }
    );
    assert_eq!(
        e.to_string(),
        "line 4: weight 70000 out of range 0..65535: -a -t 203.0.113.10:80 -r 198.51.100.11 -w 70000"
    );
    assert_eq!(parse_rules("").unwrap(), vec![]);
    assert_eq!(parse_rules("\n\n# nothing\n").unwrap(), vec![]);
    assert_eq!(parse_rules("-C\nbogus\n").unwrap_err().line, 2);
}

#[test]
fn parse_args_takes_argv_words() {
    assert_eq!(
        parse_args(["-A", "-t", "192.0.2.1:80", "-s", "rr"]).unwrap(),
        rule("-A -t 192.0.2.1:80 -s rr")
    );
    assert_eq!(parse_args([]), Err(RuleError::MissingCommand));
}

#[test]
fn dest_spec_to_dest() {
    let d = DestSpec {
        u_threshold: 10,
        l_threshold: 5,
        weight: 4,
        fwd: FwdMethod::Tunnel,
        ..DestSpec::new(ip("10.0.0.1"), 80)
    }
    .to_dest();
    assert_eq!(
        (
            d.addr,
            d.port,
            d.fwd,
            d.weight,
            d.u_threshold,
            d.l_threshold
        ),
        (ip("10.0.0.1"), 80, FwdMethod::Tunnel, 4, 10, 5)
    );
    assert_eq!(d.active_conns + d.inactive_conns + d.persist_conns, 0);
    assert!(!d.overloaded);
}

#[test]
fn service_key_of_rules() {
    assert_eq!(rule("-C").service_key(), None);
    assert_eq!(
        rule("-d -u 192.0.2.1:53 -r 10.0.0.1").service_key(),
        Some(&key(Protocol::Udp, "192.0.2.1", 53))
    );
}

// ---------------------------------------------------------------------------------------------
// Errors, each with its message

#[test]
fn every_error_has_a_clear_message() {
    let cases: &[(&str, &str)] = &[
        (
            "-t 192.0.2.1:80 -s rr",
            "missing command (one of -A, -E, -D, -a, -e, -d, -C)",
        ),
        ("-A -a -t 192.0.2.1:80", "multiple commands: -A and -a"),
        (
            "--add-service -A -t 192.0.2.1:80",
            "multiple commands: --add-service and -A",
        ),
        (
            "-L -n",
            "command -L is not a rule (rules are -A, -E, -D, -a, -e, -d and -C)",
        ),
        (
            "-Z -t 192.0.2.1:80",
            "command -Z is not a rule (rules are -A, -E, -D, -a, -e, -d and -C)",
        ),
        (
            "--set 900 120 300",
            "command --set is not a rule (rules are -A, -E, -D, -a, -e, -d and -C)",
        ),
        (
            "--start-daemon master",
            "command --start-daemon is not a rule (rules are -A, -E, -D, -a, -e, -d and -C)",
        ),
        (
            "-S",
            "command -S is not a rule (rules are -A, -E, -D, -a, -e, -d and -C)",
        ),
        ("-A -t 192.0.2.1:80 --foo", "unknown option --foo"),
        ("-A -t 192.0.2.1:80 -q", "unknown option -q"),
        ("-A -t 192.0.2.1:80 -", "unknown option -"),
        ("-A -t 192.0.2.1:80 --", "unknown option --"),
        (
            "-A -t 192.0.2.1:80 --Scheduler rr",
            "unknown option --Scheduler",
        ),
        ("-A -t 192.0.2.1:80 rr", "unexpected argument rr"),
        (
            "-A -t 192.0.2.1:80 -s",
            "option -s (--scheduler) needs a value",
        ),
        (
            "-a -t 192.0.2.1:80 -r",
            "option -r (--real-server) needs a value",
        ),
        ("-A -t", "option -t (--tcp-service) needs a value"),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -gm",
            "option -g (--gatewaying) takes no value: -gm",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 --ipip=1",
            "option -i (--ipip) takes no value: --ipip=1",
        ),
        (
            "-A -t 192.0.2.1:80 -s rr -s wlc",
            "option -s (--scheduler) given more than once",
        ),
        (
            "-A -t 192.0.2.1:80 -u 192.0.2.1:53",
            "option -t/-u (service address) given more than once",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -g -m",
            "option -g/-m/-i (forwarding method) given more than once",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -g -g",
            "option -g/-m/-i (forwarding method) given more than once",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -w 1 -w 2",
            "option -w (--weight) given more than once",
        ),
        (
            "-A -t 192.0.2.1:80 -p -p 5",
            "option -p (--persistent) given more than once",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -r 10.0.0.2",
            "option -r (--real-server) given more than once",
        ),
        (
            "-A -t 192.0.2.1:80 -r 10.0.0.1",
            "option -r (--real-server) is not allowed with -A (--add-service)",
        ),
        (
            "-A -t 192.0.2.1:80 -w 2",
            "option -w (--weight) is not allowed with -A (--add-service)",
        ),
        (
            "-E -t 192.0.2.1:80 -g",
            "option -g/-m/-i (forwarding method) is not allowed with -E (--edit-service)",
        ),
        (
            "-D -t 192.0.2.1:80 -s rr",
            "option -s (--scheduler) is not allowed with -D (--delete-service)",
        ),
        (
            "-D -t 192.0.2.1:80 -p",
            "option -p (--persistent) is not allowed with -D (--delete-service)",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -s rr",
            "option -s (--scheduler) is not allowed with -a (--add-server)",
        ),
        (
            "-e -t 192.0.2.1:80 -r 10.0.0.1 -M 255.0.0.0",
            "option -M (--netmask) is not allowed with -e (--edit-server)",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -b flag-1",
            "option -b (--sched-flags) is not allowed with -a (--add-server)",
        ),
        (
            "-d -t 192.0.2.1:80 -r 10.0.0.1 -w 1",
            "option -w (--weight) is not allowed with -d (--delete-server)",
        ),
        (
            "-d -t 192.0.2.1:80 -r 10.0.0.1 -m",
            "option -g/-m/-i (forwarding method) is not allowed with -d (--delete-server)",
        ),
        (
            "-d -t 192.0.2.1:80 -r 10.0.0.1 -x 1",
            "option -x (--u-threshold) is not allowed with -d (--delete-server)",
        ),
        (
            "-d -t 192.0.2.1:80 -r 10.0.0.1 -y 1",
            "option -y (--l-threshold) is not allowed with -d (--delete-server)",
        ),
        (
            "-d -t 192.0.2.1:80 -r 10.0.0.1 --tun-type ipip",
            "option --tun-type is not allowed with -d (--delete-server)",
        ),
        (
            "-D -t 192.0.2.1:80 -r 10.0.0.1",
            "option -r (--real-server) is not allowed with -D (--delete-service)",
        ),
        (
            "-C -t 192.0.2.1:80",
            "option -t/-u (service address) is not allowed with -C (--clear)",
        ),
        (
            "-C -g",
            "option -g/-m/-i (forwarding method) is not allowed with -C (--clear)",
        ),
        ("-A -s rr", "missing service address (-t or -u)"),
        ("-a -r 10.0.0.1", "missing service address (-t or -u)"),
        ("-D", "missing service address (-t or -u)"),
        ("-a -t 192.0.2.1:80 -w 1", "missing real server (-r)"),
        ("-e -t 192.0.2.1:80", "missing real server (-r)"),
        ("-d -t 192.0.2.1:80", "missing real server (-r)"),
        ("-A -f 1 -s rr", "fwmark services are not supported: -f"),
        (
            "-A --fwmark-service 1",
            "fwmark services are not supported: --fwmark-service",
        ),
        (
            "-A --fwmark-service=1",
            "fwmark services are not supported: --fwmark-service=1",
        ),
        ("-A -f1", "fwmark services are not supported: -f1"),
        ("-A -f 1 -6", "fwmark services are not supported: -f"),
        (
            "-A --sctp-service 192.0.2.1:80",
            "SCTP services are not supported: --sctp-service",
        ),
        (
            "-A -t 192.0.2.1:80 -o",
            "option -o is not supported: one-packet scheduling",
        ),
        (
            "-A -u 192.0.2.1:53 --ops",
            "option --ops is not supported: one-packet scheduling",
        ),
        (
            "-A -t 192.0.2.1:80 -p --pe sip",
            "option --pe is not supported: persistence engines",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -i --tun-type gue --tun-port 6080",
            "tunnel type gue is not supported (only ipip)",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -i --tun-port 6080",
            "option --tun-port is not supported: GUE tunnels",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -i --tun-csum",
            "option --tun-csum is not supported: GUE tunnels",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -i --tun-nocsum",
            "option --tun-nocsum is not supported: GUE tunnels",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -i --tun-remcsum",
            "option --tun-remcsum is not supported: GUE tunnels",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 --tun-type ipip",
            "--tun-type needs the tunnel method (-i)",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -m --tun-type ipip",
            "--tun-type needs the tunnel method (-i)",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -i --tun-type ipip --tun-type ipip",
            "option --tun-type given more than once",
        ),
        ("-A -t 192.0.2.1:80 -n", "option -n is not valid in a rule"),
        (
            "-A -t 192.0.2.1:80 --stats",
            "option --stats is not valid in a rule",
        ),
        (
            "-A -t example.com:80",
            "invalid address example.com:80 (expected IPV4[:PORT], IPV6 or [IPV6]:PORT; names are not resolved)",
        ),
        (
            "-A -t 192.0.2.256:80",
            "invalid address 192.0.2.256:80 (expected IPV4[:PORT], IPV6 or [IPV6]:PORT; names are not resolved)",
        ),
        (
            "-A -t 010.0.0.1:80",
            "invalid address 010.0.0.1:80 (expected IPV4[:PORT], IPV6 or [IPV6]:PORT; names are not resolved)",
        ),
        (
            "-A -t [2001:db8::1:80",
            "invalid address [2001:db8::1:80 (expected IPV4[:PORT], IPV6 or [IPV6]:PORT; names are not resolved)",
        ),
        (
            "-A -t [2001:db8::1]80",
            "invalid address [2001:db8::1]80 (expected IPV4[:PORT], IPV6 or [IPV6]:PORT; names are not resolved)",
        ),
        (
            "-A -t [fe80::1%eth0]:80",
            "invalid address [fe80::1%eth0]:80 (expected IPV4[:PORT], IPV6 or [IPV6]:PORT; names are not resolved)",
        ),
        (
            "-A -t [192.0.2.1]:80",
            "invalid address [192.0.2.1]:80: brackets are for IPv6 addresses only",
        ),
        (
            "-A -t 192.0.2.1:http",
            "invalid port http: expected an integer in 0..65535",
        ),
        (
            "-A -t 192.0.2.1:+80",
            "invalid port +80: expected an integer in 0..65535",
        ),
        (
            "-A -t 192.0.2.1:",
            "invalid port : expected an integer in 0..65535",
        ),
        ("-A -t 192.0.2.1:65536", "port 65536 out of range 0..65535"),
        (
            "-A -t [2001:db8::1]:99999999999999999999",
            "port 99999999999999999999 out of range 0..65535",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1:-1",
            "invalid port -1: expected an integer in 0..65535",
        ),
        (
            "-A -t 192.0.2.1:80 -s foo",
            "unknown scheduler foo (one of rr, wrr, lc, wlc, sed, nq, sh, dh, mh, fo, ovf)",
        ),
        (
            "-A -t 192.0.2.1:80 -s RR",
            "unknown scheduler RR (one of rr, wrr, lc, wlc, sed, nq, sh, dh, mh, fo, ovf)",
        ),
        ("-A -t 192.0.2.1:0", "port 0 requires persistence (-p)"),
        ("-A -t 192.0.2.1", "port 0 requires persistence (-p)"),
        (
            "-E -u [2001:db8::1] -s rr",
            "port 0 requires persistence (-p)",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -w 70000",
            "weight 70000 out of range 0..65535",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -w -1",
            "invalid weight -1: expected an integer in 0..65535",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -w 1.5",
            "invalid weight 1.5: expected an integer in 0..65535",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 --weight=",
            "invalid weight : expected an integer in 0..65535",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -x 2147483648",
            "upper threshold 2147483648 out of range 0..2147483647",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -y x",
            "invalid lower threshold x: expected an integer in 0..2147483647",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -x 10 -y 11",
            "lower threshold 11 is higher than upper threshold 10",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1 -y 1",
            "lower threshold 1 is higher than upper threshold 0",
        ),
        (
            "-a -t 192.0.2.1:80 -r 10.0.0.1:0 -m",
            "real server port 0 is only valid for port-0 services (service port 80)",
        ),
        (
            "-a -t 192.0.2.1:80 -r [2001:db8::1]:80 -m",
            "real server 2001:db8::1 and service 192.0.2.1 are of different address families (not supported)",
        ),
        (
            "-a -t [2001:db8::1]:80 -r 10.0.0.1 -i",
            "real server 10.0.0.1 and service 2001:db8::1 are of different address families (not supported)",
        ),
        (
            "-a -t [2001:db8::1]:80 -r 10.0.0.1 -g",
            "real server 10.0.0.1 and service 2001:db8::1 are of different address families (not supported)",
        ),
        (
            "-d -t 192.0.2.1:443 -r [2001:db8::1]",
            "real server 2001:db8::1 and service 192.0.2.1 are of different address families (not supported)",
        ),
    ];
    for (line, want) in cases {
        assert_eq!(&err(line), want, "{line}");
    }
}

#[test]
fn validate_catches_hand_built_mistakes() {
    let svc = key(Protocol::Tcp, "192.0.2.1", 0);
    let msg = |r: Rule| r.validate().unwrap_err().to_string();
    assert_eq!(
        msg(Rule::AddService(ServiceSpec::new(svc))),
        "port 0 requires persistence (-p)"
    );
    let bad_mask = ServiceSpec {
        persistence: Some(10),
        netmask: Netmask::V6(64),
        ..ServiceSpec::new(svc)
    };
    assert_eq!(
        msg(Rule::EditService(bad_mask)),
        "invalid netmask 64: IPv4 services take a dotted mask such as 255.255.255.0"
    );
    let long = ServiceSpec {
        persistence: Some(0),
        ..ServiceSpec::new(svc)
    };
    assert_eq!(
        msg(Rule::AddService(long)),
        "persistence timeout 0 out of range 1..2678400"
    );
    let v6 = key(Protocol::Udp, "2001:db8::1", 53);
    let zero_len = ServiceSpec {
        netmask: Netmask::V6(0),
        ..ServiceSpec::new(v6)
    };
    assert_eq!(
        msg(Rule::AddService(zero_len)),
        "invalid netmask 0: IPv6 services take a prefix length 1..128"
    );
    let heavy = DestSpec {
        weight: 65536,
        ..DestSpec::new(ip("2001:db8::2"), 53)
    };
    assert_eq!(
        msg(Rule::AddDest(v6, heavy)),
        "weight 65536 out of range 0..65535"
    );
    let thresholds = DestSpec {
        u_threshold: 1,
        l_threshold: 2,
        ..DestSpec::new(ip("2001:db8::2"), 53)
    };
    assert_eq!(
        msg(Rule::EditDest(v6, thresholds)),
        "lower threshold 2 is higher than upper threshold 1"
    );
    let mixed = DestSpec::new(ip("10.0.0.1"), 53);
    assert!(matches!(
        Rule::AddDest(v6, mixed).validate(),
        Err(RuleError::MixedFamily { .. })
    ));
    assert!(Rule::DeleteDest(v6, ip("10.0.0.1"), 53).validate().is_err());
    let nat0 = DestSpec {
        fwd: FwdMethod::Masq,
        ..DestSpec::new(ip("2001:db8::2"), 0)
    };
    assert!(matches!(
        Rule::AddDest(v6, nat0).validate(),
        Err(RuleError::RealPortZero { vport: 53 })
    ));
    assert_eq!(Rule::Clear.validate(), Ok(()));
    assert_eq!(Rule::DeleteService(svc).validate(), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Tokens from ipvsadm's vocabulary, to build adversarial lines.
const WORDS: &[&str] = &[
    "-A",
    "-E",
    "-D",
    "-a",
    "-e",
    "-d",
    "-C",
    "-L",
    "-Z",
    "--set",
    "-t",
    "-u",
    "-f",
    "-6",
    "-s",
    "-p",
    "-M",
    "-b",
    "-r",
    "-g",
    "-m",
    "-i",
    "-w",
    "-x",
    "-y",
    "-o",
    "--pe",
    "--tun-type",
    "ipip",
    "gue",
    "--add-service",
    "--tcp-service=",
    "--weight=",
    "-w5",
    "-p7",
    "192.0.2.1:80",
    "192.0.2.1",
    "10.0.0.1:0",
    "[2001:db8::1]:53",
    "[2001:db8::1]",
    "2001:db8::2",
    "[::1]:",
    "[",
    "]",
    ":",
    "rr",
    "sh",
    "mh",
    "sh-port,sh-fallback",
    "flag-3",
    "mh-port",
    "0",
    "1",
    "65535",
    "65536",
    "128",
    "255.255.255.0",
    "-1",
    "#",
    "é",
    "-é",
    "--é=é",
    "ipvsadm",
];

fn service_spec() -> impl Strategy<Value = ServiceSpec> {
    (
        prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)],
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        prop::sample::select(SchedulerKind::ALL.to_vec()),
        any::<(bool, bool)>(),
        prop::option::of(1..=MAX_PERSISTENCE_SECS),
        any::<u32>(),
        1u8..=128,
    )
        .prop_map(
            |(
                protocol,
                v6,
                bytes,
                port,
                scheduler,
                (fallback, fport),
                persistence,
                mask4,
                mask6,
            )| {
                let addr = if v6 {
                    IpAddr::from(bytes)
                } else {
                    IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
                };
                let persistence = if port == 0 {
                    persistence.or(Some(300))
                } else {
                    persistence
                };
                // Without persistence the mask is not printed, so only the host mask survives.
                let netmask = match (persistence, addr) {
                    (None, _) => Netmask::host(addr),
                    (Some(_), IpAddr::V4(_)) => Netmask::V4(Ipv4Addr::from(mask4)),
                    (Some(_), IpAddr::V6(_)) => Netmask::V6(mask6),
                };
                ServiceSpec {
                    key: ServiceKey {
                        protocol,
                        addr,
                        port,
                    },
                    scheduler,
                    flags: SchedFlags {
                        fallback,
                        port: fport,
                    },
                    persistence,
                    netmask,
                }
            },
        )
}

fn dest_rule() -> impl Strategy<Value = Rule> {
    (
        service_spec(),
        any::<[u8; 16]>(),
        any::<u16>(),
        prop_oneof![
            Just(FwdMethod::Masq),
            Just(FwdMethod::DirectRoute),
            Just(FwdMethod::Tunnel)
        ],
        0u32..=65535,
        0u32..=2_147_483_647,
        any::<u32>(),
        0u8..3,
    )
        .prop_map(|(svc, bytes, dport, fwd, weight, u, l, which)| {
            let k = svc.key;
            let addr = if k.addr.is_ipv6() {
                IpAddr::from(bytes)
            } else {
                IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
            };
            let mut port = if fwd == FwdMethod::Masq {
                dport
            } else {
                k.port
            };
            if port == 0 && k.port != 0 {
                port = k.port;
            }
            let l_threshold = if u == 0 { 0 } else { l % (u + 1) };
            let d = DestSpec {
                addr,
                port,
                fwd,
                weight,
                u_threshold: u,
                l_threshold,
            };
            match which {
                0 => Rule::AddDest(k, d),
                1 => Rule::EditDest(k, d),
                _ => Rule::DeleteDest(k, addr, dport),
            }
        })
}

fn any_rule() -> impl Strategy<Value = Rule> {
    prop_oneof![
        service_spec().prop_map(Rule::AddService),
        service_spec().prop_map(Rule::EditService),
        service_spec().prop_map(|s| Rule::DeleteService(s.key)),
        dest_rule(),
        Just(Rule::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        let _ = parse_line(&s);
        let _ = parse_rules(&s);
    }

    #[test]
    fn printable_strings_never_panic(s in "[ -~\\t\\r\\n]{0,120}") {
        let _ = parse_rules(&s);
    }

    #[test]
    fn token_soup_never_panics_and_whatever_parses_round_trips(
        words in prop::collection::vec(prop::sample::select(WORDS.to_vec()), 0..12),
    ) {
        let line = words.join(" ");
        if let Ok(Some(r)) = parse_line(&line) {
            prop_assert_eq!(r.validate(), Ok(()));
            let printed = r.to_save_line();
            prop_assert_eq!(parse_line(&printed), Ok(Some(r)), "{} → {}", line, printed);
        }
    }

    #[test]
    fn valid_rules_round_trip(r in any_rule()) {
        prop_assert_eq!(r.validate(), Ok(()));
        let printed = r.to_save_line();
        prop_assert_eq!(parse_line(&printed), Ok(Some(r)), "{}", printed);
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

#[test]
fn settings_defaults() {
    let s = Settings::default();
    assert!(!s.expire_nodest_conn && !s.expire_quiescent_template && !s.schedule_icmp);
    assert!(s.pmtu_disc);
    assert_eq!(s.conn_tab_max, 1 << 20);
    assert_eq!(s.conn_full_policy, FullPolicyName::Refuse);
    assert_eq!(
        (s.timeouts.tcp, s.timeouts.tcpfin, s.timeouts.udp),
        (900, 120, 300)
    );
    assert_eq!(s.dest_trash_timeout_secs, 120);
    assert_eq!(s.expired_reply, ExpiredReply::Rst);
    assert_eq!(s.nodest_reply, ExpiredReply::Icmp);
    assert_eq!(
        s.hash_seed,
        Settings::default().hash_seed,
        "a fixed constant"
    );
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn settings_set_and_get() {
    let mut s = Settings::default();
    for (name, value, back) in [
        ("expire_nodest_conn", "1", "true"),
        ("expire_nodest_conn", "false", "false"),
        ("expire_quiescent_template", "TRUE", "true"),
        ("schedule_icmp", "true", "true"),
        ("conn_reuse_mode", "3", "3"),
        ("conn_reuse_mode", "0", "0"),
        ("pmtu_disc", "0", "false"),
        ("conn_tab_max", "4096", "4096"),
        ("conn_tab_max", " 1 ", "1"),
        ("conn_full_policy", "evict_oldest", "evict_oldest"),
        ("conn_full_policy", "refuse", "refuse"),
        ("timeout_tcp", "7200", "7200"),
        ("timeout_tcpfin", "60", "60"),
        ("timeout_udp", "2678400", "2678400"),
        ("dest_trash_timeout", "0", "0"),
        ("dest_trash_timeout", "300", "300"),
        ("expired_reply", "icmp", "icmp"),
        ("expired_reply", "drop", "drop"),
        ("nodest_reply", "rst", "rst"),
        ("hash_seed", "42", "0x000000000000002a"),
        ("hash_seed", "0xDEADbeef", "0x00000000deadbeef"),
        ("hash_seed", "18446744073709551615", "0xffffffffffffffff"),
    ] {
        assert_eq!(s.set(name, value), Ok(()), "{name}={value}");
        assert_eq!(s.get(name).as_deref(), Some(back), "{name}");
    }
    assert!(s.expire_quiescent_template && s.schedule_icmp && !s.pmtu_disc);
    assert_eq!(s.conn_tab_max, 1);
    assert_eq!(s.timeouts.udp, 2_678_400);
    assert_eq!(s.nodest_reply, ExpiredReply::Rst);
    assert_eq!(s.hash_seed, u64::MAX);
    assert_eq!(s.validate(), Ok(()));
    // get → set reproduces every value.
    let mut t = Settings::default();
    for name in Settings::NAMES {
        t.set(name, &s.get(name).unwrap()).unwrap();
    }
    assert_eq!(t, s);
    assert_eq!(Settings::NAMES.len(), 21);
}

#[test]
fn settings_errors_name_the_setting_and_accepted_values() {
    let mut s = Settings::default();
    let cases = [
        (
            "pmtu_disc",
            "yes",
            "invalid value \"yes\" for setting pmtu_disc: expected 0, 1, true or false",
        ),
        (
            "schedule_icmp",
            "2",
            "invalid value \"2\" for setting schedule_icmp: expected 0, 1, true or false",
        ),
        (
            "conn_reuse_mode",
            "4",
            "invalid value \"4\" for setting conn_reuse_mode: expected a whole number from 0 to 3",
        ),
        (
            "conn_tab_max",
            "0",
            "invalid value \"0\" for setting conn_tab_max: expected an integer from 1 to 1073741824",
        ),
        (
            "conn_tab_max",
            "-5",
            "invalid value \"-5\" for setting conn_tab_max: expected an integer from 1 to 1073741824",
        ),
        (
            "conn_tab_max",
            "1e6",
            "invalid value \"1e6\" for setting conn_tab_max: expected an integer from 1 to 1073741824",
        ),
        (
            "conn_full_policy",
            "evict",
            "invalid value \"evict\" for setting conn_full_policy: expected one of refuse, evict_oldest",
        ),
        (
            "timeout_tcp",
            "0",
            "invalid value \"0\" for setting timeout_tcp: expected an integer from 1 to 2678400 (seconds)",
        ),
        (
            "timeout_tcpfin",
            "2678401",
            "invalid value \"2678401\" for setting timeout_tcpfin: expected an integer from 1 to 2678400 (seconds)",
        ),
        (
            "timeout_udp",
            "5m",
            "invalid value \"5m\" for setting timeout_udp: expected an integer from 1 to 2678400 (seconds)",
        ),
        (
            "dest_trash_timeout",
            "",
            "invalid value \"\" for setting dest_trash_timeout: expected an integer from 0 to 2678400 (seconds)",
        ),
        (
            "expired_reply",
            "reset",
            "invalid value \"reset\" for setting expired_reply: expected one of rst, icmp, drop",
        ),
        (
            "nodest_reply",
            "ICMP",
            "invalid value \"ICMP\" for setting nodest_reply: expected one of rst, icmp, drop",
        ),
        (
            "hash_seed",
            "0x",
            "invalid value \"0x\" for setting hash_seed: expected a 64-bit integer, decimal or 0x hexadecimal",
        ),
        (
            "hash_seed",
            "18446744073709551616",
            "invalid value \"18446744073709551616\" for setting hash_seed: expected a 64-bit integer, decimal or 0x hexadecimal",
        ),
        (
            "hash_seed",
            "0x1ffffffffffffffff",
            "invalid value \"0x1ffffffffffffffff\" for setting hash_seed: expected a 64-bit integer, decimal or 0x hexadecimal",
        ),
    ];
    for (name, value, want) in cases {
        assert_eq!(
            s.set(name, value).unwrap_err().to_string(),
            want,
            "{name}={value}"
        );
    }
    assert_eq!(s, Settings::default(), "a failed set changes nothing");

    let e = s.set("timeout_tcp_fin", "5").unwrap_err();
    assert_eq!(
        e,
        SettingError::UnknownSetting {
            name: "timeout_tcp_fin".to_string()
        }
    );
    assert_eq!(
        e.to_string(),
        "unknown setting \"timeout_tcp_fin\" (valid settings: expire_nodest_conn, expire_quiescent_template, \
         conn_reuse_mode, schedule_icmp, pmtu_disc, conn_tab_max, conn_full_policy, timeout_tcp, timeout_tcpfin, timeout_udp, \
         dest_trash_timeout, expired_reply, nodest_reply, hash_seed, icmp_msgs_per_sec, icmp_msgs_burst, icmp_ratelimit, icmp_forward_per_sec, icmp_forward, \
         icmp_small_mtu, icmp_echo_reply)"
    );
    assert_eq!(s.get("timeout_tcp_fin"), None);
}

#[test]
fn settings_validate() {
    let mut s = Settings {
        conn_tab_max: 0,
        ..Settings::default()
    };
    assert_eq!(
        s.validate().unwrap_err().to_string(),
        "invalid value \"0\" for setting conn_tab_max: expected an integer from 1 to 1073741824"
    );
    s.conn_tab_max = (1 << 30) + 1;
    assert!(s.validate().is_err());
    s.conn_tab_max = 1 << 30;
    assert_eq!(s.validate(), Ok(()));
    s.timeouts.tcpfin = 0;
    assert_eq!(
        s.validate().unwrap_err().to_string(),
        "invalid value \"0\" for setting timeout_tcpfin: expected an integer from 1 to 2678400 (seconds)"
    );
    s.timeouts.tcpfin = 1;
    s.timeouts.udp = u32::MAX;
    assert!(s.validate().is_err());
    s.timeouts.udp = 1;
    s.dest_trash_timeout_secs = 2_678_401;
    assert_eq!(
        s.validate().unwrap_err().to_string(),
        "invalid value \"2678401\" for setting dest_trash_timeout: expected an integer from 0 to 2678400 (seconds)"
    );
    s.dest_trash_timeout_secs = 0;
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn settings_policy_names() {
    for p in FullPolicyName::ALL {
        assert_eq!(p.name().parse::<FullPolicyName>(), Ok(p));
        assert_eq!(p.to_string(), p.name());
    }
    for r in ExpiredReply::ALL {
        assert_eq!(r.name().parse::<ExpiredReply>(), Ok(r));
        assert_eq!(r.to_string(), r.name());
    }
    assert_eq!(FullPolicyName::default(), FullPolicyName::Refuse);
}
