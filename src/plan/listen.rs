//! Where a venus-worker really listens, and the command-line rule that
//! decides it (venus-sealer v1.6.0-3, `app/venus-worker/main.go`, `runCmd`
//! and `extractRoutableIP`): `--listen` (default `0.0.0.0:3456`) is split
//! at `:`; when its IP is exactly `0.0.0.0`, venus-worker dials the sealer
//! of `--miner-addr` (`/ip4/IP/tcp/PORT`) and listens only on the local
//! address of that connection, the one that routes to the sealer. Any
//! other `--listen` is used as given. Pure: the runtime finds the routed
//! address at probe time (`runtime::listen`). See docs/venus.md.

use serde::Serialize;
use toml::Spanned;

use crate::config::{Role, ServiceConfig};
use crate::util::diag::Diagnostics;
use crate::util::gocli::{self, WorkerRun};

/// venus-worker's listen address, as its command line decides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenRule {
    /// `--listen` as given (an IP other than `0.0.0.0`, or an empty host:
    /// every interface). Never a host name: the probe runs in the
    /// supervisor's loop, which must not wait on a DNS lookup.
    At { address: String },
    /// `0.0.0.0:PORT`: PORT on the local address that routes to `sealer`
    /// (`IP:PORT` of `--miner-addr`, `[IPv6]:PORT` for `/ip6/`).
    RoutedTo { port: String, sealer: String },
}

/// The program a service runs, by its file name.
pub fn program_is(argv: &[String], name: &str) -> bool {
    argv.first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .is_some_and(|f| f == name)
}

/// The listen rule of `venus-worker run` from its flags. An error names
/// what cannot be decided from the command line.
pub fn rule(run: &WorkerRun) -> Result<ListenRule, String> {
    let (ip, port) = run.listen.split_once(':').unwrap_or((&run.listen, ""));
    let unspecified = ip
        .parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.is_unspecified());
    if !unspecified {
        let literal = ip.is_empty() || run.listen.parse::<std::net::SocketAddr>().is_ok();
        if !literal {
            return Err(format!("`--listen={}` names a host, not an IP: the probe would wait on a DNS lookup in the supervisor", run.listen));
        }
        return Ok(ListenRule::At {
            address: run.listen.clone(),
        });
    }
    let Some(ma) = &run.miner_addr else {
        return Err(format!("`--listen={}` is replaced by the address that routes to the sealer of `--miner-addr`, and the command line has none (it would come from the repo's `[Sealer] Url`)", run.listen));
    };
    let sealer = gocli::multiaddr_host_port(ma).and_then(|(host, sport)| {
        Some(std::net::SocketAddr::new(
            host.parse().ok()?,
            sport.parse().ok()?,
        ))
    });
    match sealer {
        Some(sealer) => Ok(ListenRule::RoutedTo {
            port: port.to_string(),
            sealer: sealer.to_string(),
        }),
        None => Err(format!(
            "`--miner-addr={ma}` is not a multiaddr `/ip4/IP/tcp/PORT` or `/ip6/IP/tcp/PORT` (a host name would make the probe wait on a DNS lookup in the supervisor)"
        )),
    }
}

/// The listen rule of a service's argv, when it is `venus-worker run`.
pub fn worker_rule(argv: &[String]) -> Result<ListenRule, String> {
    match gocli::worker_run(argv)? {
        Some(run) => rule(&run),
        None => Err("it is not `venus-worker run`".to_string()),
    }
}

/// Said once, of the service (not of each of its `instances`).
fn first_copy(s: &ServiceConfig) -> bool {
    s.instance.as_ref().is_none_or(|i| i.index == 0)
}

/// A venus-sealer or venus-worker command line the real program rejects:
/// urfave/cli reads global flags (`--repo`, venus-worker's
/// `--enable-gpu-proving`) only before the subcommand, and Go's `flag`
/// package fails on any flag the level does not define. venus-worker then
/// exits 0 at once and venus-sealer 1, so the service would only restart.
pub(super) fn command_line(s: &ServiceConfig, argv: &[String], diags: &mut Diagnostics) {
    let (program, global, sub, exits) = match s.role {
        Role::Worker if program_is(argv, "venus-worker") => {
            ("venus-worker", gocli::WORKER_GLOBAL, gocli::WORKER_RUN, 0)
        }
        Role::Sealer if program_is(argv, "venus-sealer") => {
            ("venus-sealer", gocli::SEALER_GLOBAL, gocli::SEALER_RUN, 1)
        }
        _ => return,
    };
    let Err(e) = gocli::subcommand(argv, global, "run", sub) else {
        return;
    };
    let name = s.instance.as_ref().map_or(s.name.get_ref(), |i| &i.of);
    let misplaced = e
        .strip_prefix("flag provided but not defined: -")
        .filter(|f| global.iter().any(|g| g.name == *f));
    let fix = match misplaced {
        Some(flag) => format!("`--{flag}` is a global flag of {program}: put it before `run` (`{program} --{flag}=... run ...`), or use its environment variable"),
        None => "fix the flag (`{program} run --help` lists them)".replace("{program}", program),
    };
    diags.error(
        s.command.span(),
        format!("`{name}`: {program} rejects this command line ({e}) and exits {exits} at once, so it would only restart; {fix}"),
    );
}

/// The rule of a `ready = { worker_listen = true }` probe, or an error at
/// its place when the service is no `venus-worker run` whose address the
/// command line decides.
pub(super) fn ready(
    s: &ServiceConfig,
    on: &Spanned<bool>,
    argv: &[String],
    diags: &mut Diagnostics,
) -> Option<ListenRule> {
    let name = s.instance.as_ref().map_or(s.name.get_ref(), |i| &i.of);
    let problem = if !*on.get_ref() {
        "`worker_listen` takes only `true` (leave `ready` out for \"started = ready\")".to_string()
    } else if s.role != Role::Worker {
        format!(
            "`ready.worker_listen` probes where a venus-worker listens, and `{name}` has `role = \"{}\"`; use `tcp`",
            format!("{:?}", s.role).to_lowercase()
        )
    } else {
        match worker_rule(argv) {
            Ok(rule) => return Some(rule),
            // A command line venus-worker rejects is said by `command_line`.
            Err(_) if program_is(argv, "venus-worker") && gocli::worker_run(argv).is_err() => {
                return None
            }
            Err(e) => format!("`ready.worker_listen` of `{name}` cannot find where it listens: {e}; give `--listen=IP:PORT` and `--miner-addr=/ip4/IP/tcp/PORT` on its command line, or probe with `tcp`"),
        }
    };
    if first_copy(s) {
        diags.error(on.span(), problem);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        std::iter::once("/usr/local/bin/venus-worker")
            .chain(args.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn an_unspecified_listen_ip_routes_to_the_sealer_any_other_is_taken_as_given() {
        let r = worker_rule(&argv(&["run", "--miner-addr=/ip4/192.168.1.10/tcp/2345"]));
        assert_eq!(
            r,
            Ok(ListenRule::RoutedTo {
                port: "3456".into(),
                sealer: "192.168.1.10:2345".into()
            })
        );
        for given in ["127.0.0.1:3457", ":3457", "[::]:3457"] {
            let r = worker_rule(&argv(&["run", &format!("--listen={given}")]));
            assert_eq!(
                r,
                Ok(ListenRule::At {
                    address: given.into()
                })
            );
        }
        // No name resolution in the supervisor's loop: names are refused here.
        let r = worker_rule(&argv(&["run", "--listen=host:3457"]));
        assert!(r.is_err_and(|e| e.contains("names a host")));
        let r = worker_rule(&argv(&["run", "--miner-addr=/dns4/sealer/tcp/2345"]));
        assert!(r.is_err_and(|e| e.contains("DNS")));
        let r = worker_rule(&argv(&["run", "--miner-addr=/ip6/fd00::10/tcp/2345"]));
        assert_eq!(
            r,
            Ok(ListenRule::RoutedTo {
                port: "3456".into(),
                sealer: "[fd00::10]:2345".into()
            })
        );
    }

    fn worker_config(command: &str, ready: &str) -> (crate::config::Config, Diagnostics) {
        let text = format!(
            "[host]\nstate_dir = \"/s\"\n[[service]]\nname = \"w\"\nrole = \"worker\"\ncommand = {command}\nready = {ready}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        std::fs::write(&path, text).unwrap();
        let (config, diags) = crate::config::load(&path);
        (config.unwrap(), diags)
    }

    #[test]
    fn a_worker_listen_probe_that_cannot_be_decided_is_an_error_never_a_silent_no_probe() {
        let on = |c: &crate::config::Config| {
            c.services[0]
                .ready
                .as_ref()
                .unwrap()
                .get_ref()
                .worker_listen
                .clone()
                .unwrap()
        };
        // A wrapper of another name whose flags venus-worker would reject.
        let argv: Vec<String> = ["/opt/w", "run", "--repo=/r"].map(String::from).into();
        let (config, mut diags) = worker_config(
            "[\"/opt/w\", \"run\", \"--repo=/r\"]",
            "{ worker_listen = true }",
        );
        assert_eq!(
            ready(&config.services[0], &on(&config), &argv, &mut diags),
            None
        );
        assert!(diags.has_errors());
        // `false` is no probe form.
        let argv: Vec<String> = ["venus-worker", "run"].map(String::from).into();
        let (config, mut diags) =
            worker_config("[\"venus-worker\", \"run\"]", "{ worker_listen = false }");
        assert_eq!(
            ready(&config.services[0], &on(&config), &argv, &mut diags),
            None
        );
        assert!(diags.has_errors());
    }

    #[test]
    fn what_the_command_line_cannot_decide_is_said() {
        let e = worker_rule(&argv(&["run"])).unwrap_err();
        assert!(e.contains("has none"), "{e}");
        let e = worker_rule(&argv(&["run", "--miner-addr=127.0.0.1:2345"])).unwrap_err();
        assert!(e.contains("not a multiaddr"), "{e}");
        let e = worker_rule(&argv(&["storage", "attach"])).unwrap_err();
        assert!(e.contains("not `venus-worker run`"), "{e}");
        assert!(program_is(&argv(&[]), "venus-worker"));
        assert!(!program_is(&argv(&[]), "venus-sealer"));
    }
}
