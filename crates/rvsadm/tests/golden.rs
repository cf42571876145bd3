//! rvsadm end to end against a real `rvsd control-only`: the `-L -n`, `--stats`, `--rate`,
//! `--thresholds`, `--persistent-conn`, `-c`, `--timeout` and `-S` outputs in ipvsadm's
//! layouts, over connections the dataplane really made from a capture; `--json` and
//! `--counters`; save → clear → restore.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::Daemon;
use etherparse::PacketBuilder;

const RULES: &str = "\
-A -t 203.0.113.10:80 -s rr -p 300
-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1
-A -t 203.0.113.20:80 -s wlc
-a -t 203.0.113.20:80 -r 198.51.100.12:8080 -m -w 3 -x 100 -y 50
-a -t 203.0.113.20:80 -r 198.51.100.13:8080 -m -w 0
-A -u [2001:db8::53]:53 -s sh -b sh-fallback
-a -u [2001:db8::53]:53 -r [2001:db8:1::21]:53 -i -w 1
";

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DIRECTOR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn v4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

fn tcp(src: (&str, u16), dst: (&str, u16), flags: &str) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(v4(src.0), v4(dst.0), 64)
        .tcp(src.1, dst.1, 1000, 64240);
    let b = match flags {
        "S" => b.syn(),
        "SA" => b.syn().ack(1001),
        _ => b.ack(1),
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn udp6(src: (&str, u16), dst: (&str, u16), payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6(v6(src.0), v6(dst.0), 64)
        .udp(src.1, dst.1)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// The traffic: a DR client completing its handshake on the persistent service, a NAT client
/// with the dest's SYN-ACK, a UDP query over IPv6 to the tunnel service.
fn capture() -> Vec<u8> {
    let frames = [
        tcp(("192.0.2.1", 40000), ("203.0.113.10", 80), "S"),
        tcp(("192.0.2.1", 40000), ("203.0.113.10", 80), "A"),
        tcp(("192.0.2.2", 40001), ("203.0.113.20", 80), "S"),
        tcp(("198.51.100.12", 8080), ("192.0.2.2", 40001), "SA"),
        udp6(("2001:db8:2::1", 5353), ("2001:db8::53", 53), b"0123456789"),
    ];
    let mut w = rvs_wire::capture::CaptureWriter::new(Vec::new()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write(Duration::from_millis(i as u64), f).unwrap();
    }
    w.into_inner()
}

fn daemon() -> Daemon {
    Daemon::start(
        RULES,
        Some(&capture()),
        &["--addr", "198.51.100.1", "--addr", "2001:db8:1::1"],
    )
}

#[test]
fn list_numeric() {
    let d = daemon();
    let want = "\
IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  203.0.113.10:80 rr persistent 300
  -> 198.51.100.11:80             Route   1      1          0         
TCP  203.0.113.20:80 wlc
  -> 198.51.100.12:8080           Masq    3      1          0         
  -> 198.51.100.13:8080           Masq    0      0          0         
UDP  [2001:db8::53]:53 sh (sh-fallback)
  -> [2001:db8:1::21]:53          Tunnel  1      0          1         
";
    assert_eq!(d.ok(&["-L", "-n"]), want);
    // The same through every spelling scripts use.
    assert_eq!(d.ok(&["-Ln"]), want);
    assert_eq!(d.ok(&["-ln"]), want);
    assert_eq!(d.ok(&["--list", "--numeric"]), want);
    assert_eq!(d.ok(&[]), want, "no arguments lists the table");
    // One service: no version line.
    assert_eq!(
        d.ok(&["-L", "-n", "-t", "203.0.113.20:80"]),
        "\
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  203.0.113.20:80 wlc
  -> 198.51.100.12:8080           Masq    3      1          0         
  -> 198.51.100.13:8080           Masq    0      0          0         
"
    );
}

#[test]
fn stats_rate_thresholds_persistent_conn() {
    let d = daemon();
    // Bytes are IP packet lengths: 40 per bare TCP segment, 58 for the UDP query over IPv6.
    assert_eq!(
        d.ok(&["-L", "-n", "--stats"]),
        "\
IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  203.0.113.10:80                     1        2        0       80        0
  -> 198.51.100.11:80                    1        2        0       80        0
TCP  203.0.113.20:80                     1        1        1       40       40
  -> 198.51.100.12:8080                  1        1        1       40       40
  -> 198.51.100.13:8080                  0        0        0        0        0
UDP  [2001:db8::53]:53                   1        1        0       58        0
  -> [2001:db8:1::21]:53                 1        1        0       58        0
"
    );
    // Every packet came before the first rate estimate: the rates are zero.
    assert_eq!(
        d.ok(&["-L", "-n", "--rate", "-t", "203.0.113.20:80"]),
        "\
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  203.0.113.20:80                     0        0        0        0        0
  -> 198.51.100.12:8080                  0        0        0        0        0
  -> 198.51.100.13:8080                  0        0        0        0        0
"
    );
    assert_eq!(
        d.ok(&["-L", "-n", "--thresholds", "-t", "203.0.113.20:80"]),
        "\
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  203.0.113.20:80 wlc
  -> 198.51.100.12:8080           100        50         1          0         
  -> 198.51.100.13:8080           0          0          0          0         
"
    );
    assert_eq!(
        d.ok(&["-L", "-n", "--persistent-conn", "-t", "203.0.113.10:80"]),
        "\
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  203.0.113.10:80 rr persistent 300
  -> 198.51.100.11:80             1         1           1          0         
"
    );
    // -Z zeroes the counters, not the connections.
    d.ok(&["-Z", "-t", "203.0.113.10:80"]);
    let after = d.ok(&["-L", "-n", "--stats", "-t", "203.0.113.10:80"]);
    assert!(
        after.ends_with(
            "TCP  203.0.113.10:80                     0        0        0        0        0\n  -> 198.51.100.11:80                    0        0        0        0        0\n"
        ),
        "{after}"
    );
    d.ok(&["-Z"]);
    assert!(
        d.ok(&["-Ln", "--stats"])
            .lines()
            .skip(3)
            .all(|l| l.ends_with(" 0"))
    );
}

#[test]
fn connections() {
    let d = daemon();
    let out = d.ok(&["-L", "-n", "-c"]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("IPVS connection entries"));
    assert_eq!(
        lines.next(),
        Some("pro expire state       source             virtual            destination")
    );
    // The expiry counts down with the wall clock: check its shape, pin everything else.
    let mut rows: Vec<String> = lines
        .map(|l| {
            let (head, tail) = l.split_at(4);
            let (expire, rest) = tail.split_at(6);
            let e = expire.trim_end().as_bytes();
            assert!(
                e.len() == 5
                    && e[2] == b':'
                    && e.iter()
                        .enumerate()
                        .all(|(i, c)| i == 2 || c.is_ascii_digit()),
                "{l}"
            );
            format!("{head}MM:SS {rest}")
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            "TCP MM:SS  ESTABLISHED 192.0.2.1:40000    203.0.113.10:80    198.51.100.11:80",
            "TCP MM:SS  NONE        192.0.2.1:0        203.0.113.10:80    198.51.100.11:80",
            "TCP MM:SS  SYN_RECV    192.0.2.2:40001    203.0.113.20:80    198.51.100.12:8080",
            "UDP MM:SS  UDP         [2001:db8:2::1]:5353 [2001:db8::53]:53  [2001:db8:1::21]:53",
        ]
    );
    // Timeouts bound the expiries: ESTABLISHED 900 s at most, the template 300 s.
    for l in out.lines().skip(2) {
        let m: u64 = l[4..6].parse().unwrap();
        assert!(m <= 15, "{l}");
    }
}

#[test]
fn timeouts_save_and_json() {
    let d = daemon();
    assert_eq!(
        d.ok(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    d.ok(&["--set", "3600", "0", "60"]);
    assert_eq!(
        d.ok(&["-l", "--timeout"]),
        "Timeout (tcp tcpfin udp): 3600 120 60\n"
    );
    assert_eq!(
        d.ok(&["-S", "-n"]),
        "\
-A -t 203.0.113.10:80 -s rr -p 300
-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1
-A -t 203.0.113.20:80 -s wlc
-a -t 203.0.113.20:80 -r 198.51.100.12:8080 -m -w 3 -x 100 -y 50
-a -t 203.0.113.20:80 -r 198.51.100.13:8080 -m -w 0
-A -u [2001:db8::53]:53 -s sh -b sh-fallback
-a -u [2001:db8::53]:53 -r [2001:db8:1::21]:53 -i -w 1
"
    );
    let list: rvs_api::ServiceList = serde_json::from_str(&d.ok(&["-L", "-n", "--json"])).unwrap();
    assert_eq!(list.services.len(), 3);
    let conns: Vec<rvs_api::ConnEntry> =
        serde_json::from_str(&d.ok(&["-L", "-c", "--json"])).unwrap();
    assert_eq!(conns.len(), 4);
    let c: rvs_api::Counters = serde_json::from_str(&d.ok(&["--counters", "--json"])).unwrap();
    assert_eq!((c.rx, c.forwarded, c.conn_table.entries), (5, 5, 4));
    let text = d.ok(&["--counters"]);
    assert!(
        text.contains("\n  rx                                      5\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  entries                                 4\n"),
        "{text}"
    );
}

#[test]
fn save_clear_restore_round_trip() {
    let d = daemon();
    let saved = d.ok(&["-S", "-n"]);
    let listed = d.ok(&["-L", "-n", "--thresholds"]);
    d.ok(&["-C"]);
    assert_eq!(d.ok(&["-S", "-n"]), "");
    assert_eq!(
        d.ok(&["-Ln"]),
        "IP Virtual Server version 1.2.1 (size=1048576)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    );
    let r = d.rvsadm_stdin(&["-R"], &saved);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    assert_eq!(d.ok(&["-S", "-n"]), saved);
    // The connections outlived their dests' deletion and are counted again by the restored
    // dests (IPVS's dest trash), so even the counts come back.
    assert_eq!(d.ok(&["-L", "-n", "--thresholds"]), listed);
    // ipvsadm-save files may carry the program name; restore reads them as ipvsadm does.
    d.ok(&["-C"]);
    let prefixed: String = saved.lines().map(|l| format!("ipvsadm {l}\n")).collect();
    let r = d.rvsadm_stdin(&["--restore"], &prefixed);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    assert_eq!(d.ok(&["-S", "-n"]), saved);
}
