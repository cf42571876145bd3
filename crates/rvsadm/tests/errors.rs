//! rvsadm's messages and exit statuses for common mistakes, as ipvsadm's: against a real
//! `rvsd control-only` for the director's refusals, and with no daemon at all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Daemon, rvsadm_on};

const RULES: &str = "\
-A -t 203.0.113.10:80 -s rr
-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1
";

/// Run and return (status, stderr), asserting nothing went to stdout.
fn err(d: &Daemon, args: &[&str]) -> (i32, String) {
    let r = d.rvsadm(args);
    assert_eq!(r.stdout, "", "rvsadm {args:?}");
    (r.code, r.stderr)
}

#[test]
fn director_refusals() {
    let d = Daemon::start(RULES, None, &[]);
    let cases: &[(&[&str], i32, &str)] = &[
        // ipvsadm returns -1 from main for the kernel's refusals: status 255.
        (
            &["-A", "-t", "203.0.113.10:80"],
            255,
            "Service already exists\n",
        ),
        (
            &["-E", "-t", "203.0.113.99:80", "-s", "wlc"],
            255,
            "No such service\n",
        ),
        (&["-D", "-t", "203.0.113.99:80"], 255, "No such service\n"),
        (
            &["-a", "-t", "203.0.113.99:80", "-r", "198.51.100.11"],
            255,
            "Service not defined\n",
        ),
        (
            &["-a", "-t", "203.0.113.10:80", "-r", "198.51.100.11"],
            255,
            "Destination already exists\n",
        ),
        (
            &["-e", "-t", "203.0.113.10:80", "-r", "198.51.100.12"],
            255,
            "No such destination\n",
        ),
        (
            &["-d", "-t", "203.0.113.10:80", "-r", "198.51.100.12"],
            255,
            "No such destination\n",
        ),
        (&["-Z", "-t", "203.0.113.99:80"], 255, "No such service\n"),
        (
            &["-A", "-t", "203.0.113.11:80", "-s", "nope"],
            255,
            "Scheduler or persistence engine not found\n",
        ),
        // A failed listing exits 1.
        (
            &["-L", "-n", "-t", "203.0.113.99:80"],
            1,
            "No such service\n",
        ),
    ];
    for &(args, code, msg) in cases {
        assert_eq!(err(&d, args), (code, msg.to_string()), "rvsadm {args:?}");
    }
    // Nothing above changed the rules.
    assert_eq!(d.ok(&["-S", "-n"]), RULES);
}

#[test]
fn usage_mistakes() {
    let d = Daemon::start(RULES, None, &[]);
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["-A", "-t", "203.0.113.300:80"],
            2,
            "illegal virtual server address[:port] specified\n",
        ),
        (
            &["-a", "-t", "203.0.113.10:80", "-r", "198.51.100.300"],
            2,
            "illegal real server address[:port] specified\n",
        ),
        (
            &["-a", "-t", "203.0.113.10:80"],
            2,
            "You need to supply the 'real-server' option for the 'add-server' command\n",
        ),
        (
            &["-a", "-r", "198.51.100.11"],
            2,
            "You need to supply the 'service-address' option for the 'add-server' command\n",
        ),
        (
            &[
                "-a",
                "-t",
                "203.0.113.10:80",
                "-r",
                "198.51.100.12",
                "-w",
                "x",
            ],
            2,
            "illegal weight specified\n",
        ),
        (
            &["-A", "-t", "203.0.113.10:0"],
            2,
            "Zero port specified for non-persistent service\n",
        ),
        (
            &["--set", "1", "2"],
            2,
            "--set option requires 3 timeout values\n",
        ),
        (&["-A", "-t"], 255, "-t: missing argument\n"),
        (&["-L", "--nonsense"], 255, "--nonsense: unknown option\n"),
        (
            &["-t", "203.0.113.10:80"],
            255,
            "Try `RVSADM -h' or 'RVSADM --help' for more information.\n",
        ),
    ];
    let program = env!("CARGO_BIN_EXE_rvsadm");
    for &(args, code, msg) in cases {
        let msg = msg.replace("RVSADM", program);
        assert_eq!(err(&d, args), (code, msg), "rvsadm {args:?}");
    }
    assert_eq!(d.ok(&["-S", "-n"]), RULES);
}

#[test]
fn restore_failures_change_nothing() {
    let d = Daemon::start(RULES, None, &[]);
    // The director refuses line 2: status 255, nothing restored.
    let r = d.rvsadm_stdin(
        &["-R"],
        "-A -t 203.0.113.20:80 -s rr\n-a -t 203.0.113.30:80 -r 198.51.100.31:80\n",
    );
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (255, "line 2: Service not defined (nothing was restored)\n")
    );
    // A line that does not parse: status 2.
    let r = d.rvsadm_stdin(&["-R"], "-A -t 203.0.113.20:80 -s rr\n-Q\n");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.starts_with("line 2: "), "{r:?}");
    assert_eq!(d.ok(&["-S", "-n"]), RULES);
}

#[test]
fn no_daemon() {
    let r = rvsadm_on("rvsadm-test-nobody-listens-here", &["-L", "-n"], None);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "Can't initialize ipvs: Connection refused\nIs rvsd running in this network namespace? (control socket @rvsadm-test-nobody-listens-here)\n"
    );
    // Help and version do not need a daemon.
    let r = rvsadm_on("rvsadm-test-nobody-listens-here", &["-h"], None);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("--add-service"), "{r:?}");
    let r = rvsadm_on("rvsadm-test-nobody-listens-here", &["-v"], None);
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with("rvsadm v"), "{r:?}");
}

#[test]
fn settings_extension() {
    let d = Daemon::start(RULES, None, &["--set", "expire_nodest_conn=1"]);
    assert_eq!(
        d.ok(&["--setting", "expire_nodest_conn"]),
        "expire_nodest_conn=true\n"
    );
    assert_eq!(d.ok(&["--setting", "schedule_icmp=1"]), "");
    assert_eq!(
        d.ok(&["--setting", "schedule_icmp"]),
        "schedule_icmp=true\n"
    );
    let all = d.ok(&["--settings"]);
    assert!(all.contains("\ntimeout_tcp=900\n"), "{all}");
    let r = d.rvsadm(&["--setting", "no_such_thing=1"]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(
        r.stderr.starts_with("unknown setting \"no_such_thing\""),
        "{r:?}"
    );
    let r = d.rvsadm(&["--setting", "no_such_thing"]);
    assert_eq!(r.code, 1, "{r:?}");
}
