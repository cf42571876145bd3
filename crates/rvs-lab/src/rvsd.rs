//! Running the real `rvsd` binary in a [`DirectorLab`]'s director namespace: start it with
//! rules and settings, wait until its control socket answers, talk to it over `rvs-api` from a
//! thread inside that namespace (abstract Unix sockets belong to the network namespace of the
//! socket that looks them up), and stop it with SIGTERM, collecting its exit status and logs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rvs_api::{Counters, Reply, Request};

use crate::error::{LabError, Result};
use crate::lab::LabChild;
use crate::netns::Netns;
use crate::topology::{DirectorLab, Family, Mode};

/// How long [`Rvsd::start`] waits for the control socket to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How `rvsd` is started.
#[derive(Debug, Clone, Default)]
pub struct RvsdOpts {
    /// The rules, in the ipvsadm-save format (written to a file passed with `--rules`).
    pub rules: String,
    /// `--set NAME=VALUE` settings.
    pub sets: Vec<(String, String)>,
    /// `--workers N` (default: rvsd's own default, the number of CPUs).
    pub workers: Option<usize>,
    /// A configuration file's text (TOML, written to a file passed with `--config`).
    pub config: Option<String>,
}

/// How `rvsd` ended.
#[derive(Debug, Clone)]
pub struct RvsdExit {
    /// Its exit status code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Everything it logged on standard error.
    pub stderr: String,
}

/// A running `rvsd` in a lab's director namespace; killed if dropped without [`Rvsd::stop`].
#[derive(Debug)]
pub struct Rvsd<'lab> {
    child: Option<LabChild<'lab>>,
    netns: Netns,
    socket: String,
    rules_path: PathBuf,
    config_path: Option<PathBuf>,
}

/// The ipvsadm-save rules of one service on `vip:port` over the lab's three dests, each with
/// weight 1, forwarded by `mode`; `udp` picks `-u` instead of `-t`.
pub fn service_rules(
    lab: &DirectorLab,
    family: Family,
    udp: bool,
    port: u16,
    scheduler: &str,
) -> String {
    let a = lab.addrs();
    let p = if udp { "-u" } else { "-t" };
    let m = match lab.opts().mode {
        Mode::Nat => "-m",
        Mode::Dr => "-g",
        Mode::Tun => "-i",
    };
    let sa = |ip: std::net::IpAddr| std::net::SocketAddr::new(ip, port).to_string();
    let vip = sa(a.vip.get(family));
    let mut s = format!("-A {p} {vip} -s {scheduler}\n");
    for d in &a.dests {
        s.push_str(&format!("-a {p} {vip} -r {} {m} -w 1\n", sa(d.get(family))));
    }
    s
}

impl<'lab> Rvsd<'lab> {
    /// Start `rvsd_bin` on the director's LAN interface with `opts`, and wait until its control
    /// socket answers. If it exits first, the error carries its log.
    pub fn start(lab: &'lab DirectorLab, rvsd_bin: &Path, opts: &RvsdOpts) -> Result<Self> {
        let io = |what: &str, e: std::io::Error| LabError::Io {
            cmd: what.to_owned(),
            source: e,
        };
        let rules_path = std::env::temp_dir().join(format!("{}-rvsd.rules", lab.lab().prefix()));
        std::fs::write(&rules_path, &opts.rules).map_err(|e| io("writing rules", e))?;
        let bin = rvsd_bin.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec![
            bin,
            "--interface".into(),
            lab.ifaces().director.clone(),
            "--rules".into(),
            rules_path.to_string_lossy().into_owned(),
        ];
        let config_path = match &opts.config {
            Some(text) => {
                let p = std::env::temp_dir().join(format!("{}-rvsd.toml", lab.lab().prefix()));
                std::fs::write(&p, text).map_err(|e| io("writing the configuration", e))?;
                args.push("--config".into());
                args.push(p.to_string_lossy().into_owned());
                Some(p)
            }
            None => None,
        };
        if let Some(w) = opts.workers {
            args.push("--workers".into());
            args.push(w.to_string());
        }
        for (k, v) in &opts.sets {
            args.push("--set".into());
            args.push(format!("{k}={v}"));
        }
        let cmd = lab.lab().command(lab.hosts().director, &args)?;
        let child = lab.lab().spawn_command(cmd)?;
        let mut me = Rvsd {
            child: Some(child),
            netns: Netns::named(&lab.director_netns()?),
            socket: "rvsd".to_owned(),
            rules_path,
            config_path,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if me.call(&Request::Info).is_ok() {
                return Ok(me);
            }
            if me.exited() || Instant::now() >= deadline {
                let exit = me.stop_inner()?;
                return Err(LabError::Io {
                    cmd: "rvsd".to_owned(),
                    source: std::io::Error::other(format!(
                        "did not come up (exit code {:?}); its log:\n{}",
                        exit.code, exit.stderr
                    )),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exited(&mut self) -> bool {
        // `LabChild` owns the process; a zero signal tells whether it is still there.
        match self.child.as_ref().and_then(|c| c.id()) {
            Some(pid) => !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            None => true,
        }
    }

    /// Send one control request (from a thread inside the director's namespace).
    pub fn call(&self, req: &Request) -> Result<Reply> {
        let name = self.socket.clone();
        let r = self
            .netns
            .run(move || rvs_api::client::call(&name, req))
            .map_err(|e| LabError::Io {
                cmd: "entering the director namespace".to_owned(),
                source: e,
            })?;
        match r {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(api)) => Err(LabError::Io {
                cmd: format!("rvsd request {req:?}"),
                source: std::io::Error::other(api.to_string()),
            }),
            Err(e) => Err(LabError::Io {
                cmd: format!("rvsd request {req:?}"),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// The daemon's counters.
    pub fn counters(&self) -> Result<Counters> {
        match self.call(&Request::Counters)? {
            Reply::Counters(c) => Ok(*c),
            other => Err(LabError::Io {
                cmd: "rvsd counters".to_owned(),
                source: std::io::Error::other(format!("unexpected reply {other:?}")),
            }),
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Rewrite its rules file (and its configuration file, if it was started with one) and
    /// send SIGHUP, as `systemctl reload` does. Returns once the signal is sent; the reload
    /// itself is rvsd's business (watch its listing, or its log after [`Rvsd::stop`]).
    pub fn reload(&self, rules: Option<&str>, config: Option<&str>) -> Result<()> {
        let io = |what: &str, e: std::io::Error| LabError::Io {
            cmd: what.to_owned(),
            source: e,
        };
        if let Some(r) = rules {
            std::fs::write(&self.rules_path, r).map_err(|e| io("writing rules", e))?;
        }
        if let Some(c) = config {
            let p = self.config_path.as_ref().ok_or_else(|| {
                io(
                    "reload",
                    std::io::Error::other("rvsd was started without a configuration file"),
                )
            })?;
            std::fs::write(p, c).map_err(|e| io("writing the configuration", e))?;
        }
        let pid = self
            .pid()
            .ok_or_else(|| io("reload", std::io::Error::other("rvsd is not running")))?;
        let st = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .map_err(|e| io("kill -HUP", e))?;
        if st.success() {
            Ok(())
        } else {
            Err(io("kill -HUP", std::io::Error::other(format!("{st}"))))
        }
    }

    /// Stop it with SIGTERM and return how it ended (killed after 10 s if it does not stop).
    pub fn stop(mut self) -> Result<RvsdExit> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<RvsdExit> {
        let _ = std::fs::remove_file(&self.rules_path);
        if let Some(p) = &self.config_path {
            let _ = std::fs::remove_file(p);
        }
        let Some(child) = self.child.take() else {
            return Ok(RvsdExit {
                code: None,
                stderr: String::new(),
            });
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let out = child.wait_timeout(Duration::from_secs(10))?;
        Ok(RvsdExit {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

impl Drop for Rvsd<'_> {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
