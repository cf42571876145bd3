#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
use std::time::Duration;
use rvs_lab::{DirectorLab, DirectorLabOpts, Family, Mode, or_skip};

#[test]
fn smoke_dr_v4() {
    let Some(lab) = or_skip(DirectorLab::new(DirectorLabOpts { mode: Mode::Dr, ..DirectorLabOpts::default() })) else { return };
    let a = lab.addrs();
    let vip = a.vip.get(Family::V4);
    let rules = format!("-A -t {vip}:80 -s rr\n-a -t {vip}:80 -r {}:80 -g -w 1\n-a -t {vip}:80 -r {}:80 -g -w 1\n-a -t {vip}:80 -r {}:80 -g -w 1\n",
        a.dests[0].get(Family::V4), a.dests[1].get(Family::V4), a.dests[2].get(Family::V4));
    let path = std::env::temp_dir().join(format!("rvs-smoke-{}.rules", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let dir = lab.hosts().director;
    let mut cmd = lab.lab().command(dir, &[env!("CARGO_BIN_EXE_rvsd"), "--interface", &lab.ifaces().director, "--rules", path.to_str().unwrap(), "--workers", "2"]).unwrap();
    cmd.stderr(std::process::Stdio::inherit());
    let child = lab.lab().spawn_command(cmd).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let client = lab.client().unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..30 {
        match client.http_get(vip, 80, "/", Duration::from_secs(3)) {
            Ok(r) => *counts.entry(r.dest.clone()).or_insert(0) += 1,
            Err(e) => { eprintln!("GET failed: {e}"); *counts.entry(Some("ERR".to_string())).or_insert(0) += 1 }
        }
    }
    eprintln!("counts: {counts:?}");
    let pid = child.id().unwrap();
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    let out = child.wait_timeout(Duration::from_secs(5)).unwrap();
    eprintln!("rvsd exit: {:?}", out.status);
}
