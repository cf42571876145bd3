//! `rvsadm` — the ipvsadm-compatible command line for RVS.
//!
//! Same commands, options, defaults, listing layouts, messages and exit statuses as ipvsadm
//! 1.31, so scripts written for ipvsadm work unchanged; it talks to the `rvsd` of its network
//! namespace over the abstract control socket `@rvsd` (`RVSD_SOCKET` overrides the name).
//! RVS extensions are long options ipvsadm does not have: `--json` (machine-readable
//! listings), `--counters` (dataplane, ICMP and connection-table counters), `--setting
//! NAME[=VALUE]` and `--settings` (director settings).
//!
//! Exit statuses, as ipvsadm's: 0 success; 2 usage mistakes and "Can't initialize ipvs" (no
//! daemon); 255 (ipvsadm's `return -1`) when the director refuses a change ("Service not
//! defined", "Destination already exists", ...) and for option-parser errors; 1 when a listing
//! fails (`-L -t` of a service that does not exist).

mod cli;
mod print;

use std::io::{self, Read, Write};
use std::process::ExitCode;

use rvs_api::client::{ClientError, call};
use rvs_api::{ApiError, Reply, Request};
use serde::Serialize;

use cli::{Action, Failure, Invocation};

fn main() -> ExitCode {
    let mut args = Vec::new();
    for a in std::env::args_os() {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(bad) => {
                return fail(&Failure {
                    code: 2,
                    message: format!("invalid (non UTF-8) argument {bad:?}"),
                });
            }
        }
    }
    let result = cli::parse(&args).and_then(|inv| run(&inv, &program(&args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(&f),
    }
}

fn program(args: &[String]) -> String {
    args.first().cloned().unwrap_or_else(|| "rvsadm".into())
}

/// Print the failure's message on stderr and return its status. Never panics (a closed
/// stderr is ignored).
fn fail(f: &Failure) -> ExitCode {
    if !f.message.is_empty() {
        let _ = writeln!(io::stderr(), "{}", f.message);
    }
    ExitCode::from(f.code)
}

/// Write to stdout; a closed pipe (`rvsadm -Ln | head`) ends the program quietly with status 1.
fn out(text: &str) -> Result<(), Failure> {
    let mut o = io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .map_err(|e| Failure {
            code: 1,
            message: if e.kind() == io::ErrorKind::BrokenPipe {
                String::new()
            } else {
                format!("writing output: {e}")
            },
        })
}

fn json<T: Serialize>(v: &T) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(v).map_err(|e| Failure {
        code: 1,
        message: format!("encoding JSON: {e}"),
    })?;
    text.push('\n');
    out(&text)
}

/// How the director's refusals end the program for a kind of command.
#[derive(Clone, Copy)]
enum Kind {
    /// A change: ipvsadm prints the error and returns -1 (status 255).
    Change,
    /// A listing: ipvsadm prints the error and exits 1.
    Listing,
}

/// Send a request; turn every way it can fail into ipvsadm's message and status.
fn request(req: &Request, kind: Kind) -> Result<Reply, Failure> {
    let name = rvs_api::socket_name();
    match call(&name, req) {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(ApiError::PermissionDenied)) => Err(Failure {
            code: 2,
            message: format!("Can't initialize ipvs: {}", ApiError::PermissionDenied),
        }),
        Ok(Err(ApiError::Restore {
            line,
            message,
            syntax,
        })) => Err(Failure {
            code: if syntax { 2 } else { 255 },
            message: format!("line {line}: {message} (nothing was restored)"),
        }),
        Ok(Err(e)) => Err(Failure {
            code: match (kind, &e) {
                (_, ApiError::Busy | ApiError::BadRequest(_) | ApiError::Internal(_)) => 1,
                (Kind::Change, _) => 255,
                (Kind::Listing, _) => 1,
            },
            message: e.to_string(),
        }),
        Err(ClientError::Connect { name, source }) => Err(Failure {
            code: 2,
            message: format!(
                "Can't initialize ipvs: {}\nIs rvsd running in this network namespace? \
                 (control socket @{name})",
                io_message(&source)
            ),
        }),
        Err(e) => Err(Failure {
            code: 1,
            message: e.to_string(),
        }),
    }
}

/// An I/O error as `strerror` words it, without Rust's " (os error N)".
fn io_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn unexpected(reply: &Reply) -> Failure {
    Failure {
        code: 1,
        message: format!("unexpected reply from rvsd: {reply:?}"),
    }
}

fn run(inv: &Invocation, program: &str) -> Result<(), Failure> {
    match &inv.action {
        Action::Help => out(&usage_text(program)),
        Action::Version => out(&format!(
            "rvsadm v{} (ipvsadm v1.31 command line, IPVS v{} interface; rvsd control protocol \
             v{})\n",
            env!("CARGO_PKG_VERSION"),
            rvs_api::IPVS_VERSION,
            rvs_api::PROTOCOL_VERSION
        )),
        Action::Change(req) => match request(req, Kind::Change)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        },
        Action::ListAll(f) => {
            let Reply::Services(list) =
                request(&Request::ListServices { service: None }, Kind::Listing)?
            else {
                return Err(Failure {
                    code: 1,
                    message: "unexpected reply from rvsd".into(),
                });
            };
            if inv.json {
                json(&list)
            } else {
                out(&print::list_all(&list, *f))
            }
        }
        Action::ListService(s, f) => {
            let reply = request(&Request::ListServices { service: Some(*s) }, Kind::Listing)?;
            let Reply::Services(list) = reply else {
                return Err(unexpected(&reply));
            };
            if inv.json {
                return json(&list);
            }
            match list.services.first() {
                Some(e) => out(&print::list_one(e, *f)),
                None => Err(Failure {
                    code: 1,
                    message: ApiError::NoSuchService.to_string(),
                }),
            }
        }
        Action::ListConns { persistent_conn } => {
            let reply = request(&Request::ListConnections, Kind::Listing)?;
            let Reply::Connections(conns) = reply else {
                return Err(unexpected(&reply));
            };
            if inv.json {
                json(&conns)
            } else {
                out(&print::list_conns(&conns, *persistent_conn))
            }
        }
        Action::ListTimeout => {
            let reply = request(&Request::GetTimeouts, Kind::Listing)?;
            let Reply::Timeouts(t) = reply else {
                return Err(unexpected(&reply));
            };
            if inv.json {
                json(&t)
            } else {
                out(&print::timeouts(&t))
            }
        }
        Action::ListDaemon => {
            // No sync daemon can run; like ipvsadm with none running, print nothing — but
            // only after making sure a director answers.
            request(&Request::Info, Kind::Listing)?;
            if inv.json {
                json(&Vec::<()>::new())
            } else {
                Ok(())
            }
        }
        Action::Save => {
            let reply = request(&Request::Save, Kind::Listing)?;
            let Reply::Rules(text) = reply else {
                return Err(unexpected(&reply));
            };
            out(&text)
        }
        Action::Restore => {
            let mut text = String::new();
            io::stdin()
                .take(rvs_api::MAX_REQUEST_BYTES as u64 + 1)
                .read_to_string(&mut text)
                .map_err(|e| Failure {
                    code: 2,
                    message: format!("reading rules from stdin: {e}"),
                })?;
            if text.len() > rvs_api::MAX_REQUEST_BYTES {
                return Err(Failure {
                    code: 2,
                    message: format!(
                        "rules on stdin larger than {} bytes",
                        rvs_api::MAX_REQUEST_BYTES
                    ),
                });
            }
            match request(&Request::Restore { rules: text }, Kind::Change)? {
                Reply::Done => Ok(()),
                other => Err(unexpected(&other)),
            }
        }
        Action::Counters => {
            let reply = request(&Request::Counters, Kind::Listing)?;
            let Reply::Counters(c) = reply else {
                return Err(unexpected(&reply));
            };
            if inv.json {
                json(&c)
            } else {
                out(&print::counters(&c))
            }
        }
        Action::GetSetting(name) => {
            let reply = request(&Request::GetSetting { name: name.clone() }, Kind::Listing)?;
            let Reply::Settings(v) = reply else {
                return Err(unexpected(&reply));
            };
            if inv.json {
                return json(&v);
            }
            let mut text = String::new();
            for s in v {
                text.push_str(&format!("{}={}\n", s.name, s.value));
            }
            out(&text)
        }
    }
}

/// `-h`: the commands and options, in ipvsadm's order, with RVS's extensions at the end.
fn usage_text(p: &str) -> String {
    format!(
        "rvsadm v{version} — ipvsadm-compatible control of rvsd
Usage:
  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]
  {p} -D virtual-service
  {p} -C
  {p} -R
  {p} -S [-n]
  {p} -a|e virtual-service -r server-address [options]
  {p} -d virtual-service -r server-address
  {p} -L|l [virtual-service] [options]
  {p} -Z [virtual-service]
  {p} --set tcp tcpfin udp
  {p} --counters [--json]
  {p} --setting name[=value] | --settings [--json]
  {p} -h

Commands (long or short options):
  --add-service     -A        add a virtual service
  --edit-service    -E        change a virtual service
  --delete-service  -D        delete a virtual service
  --clear           -C        delete every virtual service
  --restore         -R        apply rules read from stdin (all or nothing)
  --save            -S        write the rules to stdout
  --add-server      -a        add a real server
  --edit-server     -e        change a real server
  --delete-server   -d        delete a real server
  --list            -L|-l     list the table
  --zero            -Z        zero the counters of one or all services
  --set tcp tcpfin udp        set the connection timeouts (0 = unchanged)
  --help            -h        this message
  --version         -v        version

virtual-service:
  --tcp-service|-t  service-address   host[:port]; [IPv6]:port
  --udp-service|-u  service-address   host[:port]; [IPv6]:port

Options:
  --scheduler    -s scheduler  rr|wrr|lc|wlc|sed|nq|sh|dh|mh|fo|ovf (default wlc)
  --persistent   -p [timeout]  persistent service (default timeout 300 s)
  --netmask      -M netmask    persistence granularity (dotted mask; IPv6: prefix length)
  --sched-flags  -b flags      sh-fallback,sh-port | mh-fallback,mh-port | flag-1,flag-2
  --real-server  -r address    real server host[:port]
  --gatewaying   -g            direct routing (default)
  --ipip         -i            IP-in-IP / IPv6-in-IPv6 tunnel
  --masquerading -m            NAT
  --tun-type     ipip          the only tunnel type
  --weight       -w weight     0..65535 (default 1)
  --u-threshold  -x number     upper connection threshold
  --l-threshold  -y number     lower connection threshold
  --connection   -c            list connections
  --timeout                    list the timeouts
  --stats                      list statistics
  --rate                       list rates
  --thresholds                 list thresholds
  --persistent-conn            list persistent connections
  --tun-info                   list tunnel information
  --exact                      exact numbers
  --nosort                     do not sort services and servers
  --numeric      -n            numeric output (always: rvsadm never resolves names)

RVS extensions:
  --json                       listings as JSON
  --counters                   dataplane, ICMP, connection-table and fragment counters
  --setting name[=value]       show or change one director setting
  --settings                   show every director setting

The control socket is @{socket} in this network namespace (env {env}).
",
        version = env!("CARGO_PKG_VERSION"),
        socket = rvs_api::DEFAULT_SOCKET_NAME,
        env = rvs_api::SOCKET_ENV,
    )
}
