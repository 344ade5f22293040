//! A `ready.tcp` probe that can never reach where its venus-worker
//! listens (`plan::listen` has the rule: venus-worker replaces
//! `--listen=0.0.0.0:PORT` with the local address that routes to its
//! sealer). Such a worker is killed as "not ready" and started again,
//! forever, and what comes after it never runs.

use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, Role, ServiceKind};
use crate::plan::listen::{self, ListenRule};
use crate::plan::{Plan, ReadyPlan};
use crate::util::diag::Diagnostics;

/// Why `probe` cannot reach a worker listening by `rule`, when the command
/// line alone says so.
pub fn mismatch(rule: &ListenRule, probe: SocketAddr) -> Option<String> {
    match rule {
        ListenRule::RoutedTo { port, sealer } => {
            let listens = format!("venus-worker replaces `--listen=0.0.0.0:{port}` with the local address that routes to its sealer {sealer} and listens only there");
            if probe.port().to_string() != *port {
                return Some(format!("{listens}, on port {port}"));
            }
            let sealer_ip = sealer.parse::<SocketAddr>().ok()?.ip();
            // Towards a loopback sealer the route's source is 127.0.0.1;
            // towards any other, never a loopback or unspecified address.
            let expected_loopback = sealer_ip.is_loopback();
            let probe_local = probe.ip().is_loopback() || probe.ip().is_unspecified();
            if expected_loopback && probe.ip() != IpAddr::from([127, 0, 0, 1]) {
                Some(format!("{listens}: 127.0.0.1"))
            } else if !expected_loopback && probe_local {
                Some(listens)
            } else {
                None
            }
        }
        ListenRule::At { address } => {
            let (host, port) = address.rsplit_once(':')?;
            if probe.port().to_string() != port {
                return Some(format!(
                    "venus-worker listens on `--listen={address}`, port {port}"
                ));
            }
            let every = host.is_empty() || host == "[::]";
            match host.parse::<IpAddr>() {
                Ok(ip) if !every && ip != probe.ip() => {
                    Some(format!("venus-worker listens only on `--listen={address}`"))
                }
                _ => None,
            }
        }
    }
}

/// Each venus-worker daemon whose `ready.tcp` cannot match its listen rule.
pub fn check(config: &Config, plan: &Plan, diags: &mut Diagnostics) {
    for s in &config.services {
        if s.role != Role::Worker || s.kind != ServiceKind::Daemon {
            continue;
        }
        let Some(tcp) = s.ready.as_ref().and_then(|r| r.get_ref().tcp.as_ref()) else {
            continue;
        };
        let name = s.name.get_ref();
        let copy = plan
            .services
            .iter()
            .find(|p| p.instance.as_ref().map_or(&p.name, |i| &i.of) == name);
        let Some(p) = copy.filter(|p| listen::program_is(&p.argv, "venus-worker")) else {
            continue;
        };
        let (Ok(rule), Some(ReadyPlan::Tcp { address, .. })) =
            (listen::worker_rule(&p.argv), &p.ready)
        else {
            continue;
        };
        let Ok(probe) = address.parse::<SocketAddr>() else {
            continue;
        };
        if let Some(why) = mismatch(&rule, probe) {
            diags.error(
                tcp.span(),
                format!("`{name}` is probed on {probe}, but {why}: the probe is refused, so the worker would be killed as not ready and started again, forever, and its `after` services never run; use `ready = {{ worker_listen = true }}`, which probes where it really listens"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(sealer: &str) -> ListenRule {
        ListenRule::RoutedTo {
            port: "3456".into(),
            sealer: sealer.into(),
        }
    }

    #[test]
    fn a_loopback_probe_never_reaches_a_worker_whose_sealer_is_remote() {
        let probe = "127.0.0.1:3456".parse().unwrap();
        assert!(mismatch(&routed("192.168.1.10:2345"), probe).is_some());
        assert!(mismatch(&routed("127.0.0.1:2345"), probe).is_none());
        let other_port = "127.0.0.1:3457".parse().unwrap();
        assert!(mismatch(&routed("127.0.0.1:2345"), other_port).is_some());
        // The routed address itself: only the host knows it; not flagged.
        let lan = "192.168.1.20:3456".parse().unwrap();
        assert!(mismatch(&routed("192.168.1.10:2345"), lan).is_none());
    }

    #[test]
    fn a_listen_address_given_is_matched_exactly_except_every_interface() {
        let at = |a: &str| ListenRule::At { address: a.into() };
        let probe = "127.0.0.1:3456".parse().unwrap();
        assert!(mismatch(&at("10.0.0.5:3456"), probe).is_some());
        assert!(mismatch(&at("127.0.0.1:3456"), probe).is_none());
        assert!(mismatch(&at(":3456"), probe).is_none());
        assert!(mismatch(&at(":3457"), probe).is_some());
    }
}
