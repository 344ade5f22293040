//! `venussup zabbix KEY [NAME]`: the values behind the Zabbix agent's
//! UserParameters (`units/zabbix_agentd.d/venussup.conf`), read from the
//! running daemon's snapshot. Discovery keys print low-level-discovery
//! JSON; the others one value.
//!
//! The agent stores whatever a UserParameter prints, stderr included, so
//! when the daemon cannot be asked nothing here prints an error text:
//! `ping` prints 0, the discovery keys an empty list with the reason
//! (`{"data":[],"reason":"..."}`, which Zabbix 6.0 reads as "nothing
//! discovered"), and every other key prints nothing, which the template's
//! preprocessing discards, so one trigger ("venussup is not running", on
//! `ping`) speaks for a dead daemon instead of a dashboard of unsupported
//! items. Discovery also says each service's role and whether it proves
//! WindowPoSt on a GPU, which the item prototypes carry as tags for the
//! fleet template's aggregates. The reason goes to stderr only when stderr is a terminal (a
//! person asking); the exit code says it either way.

use std::io::IsTerminal;
use std::path::Path;

use serde_json::json;

use super::{exit, print_stdout};
use crate::control::client;
use crate::control::Command;
use crate::status::{ExitKind, Snapshot};
use crate::util::clock::unix_now;

/// The keys, as the agent config names them after `venussup zabbix`.
pub const KEYS: [&str; 11] = [
    "ping",
    "discovery",
    "timer-discovery",
    "state",
    "up",
    "restarts",
    "uptime",
    "last-exit-code",
    "fatal-lines",
    "timer-last",
    "timer-failures",
];

/// The value of `key` (for service or timer `name`) in `snap` (pure).
pub fn value(snap: &Snapshot, key: &str, name: Option<&str>) -> Result<String, String> {
    let need = || name.ok_or_else(|| format!("`{key}` needs a service or timer name"));
    let service = |n: &str| {
        snap.services
            .iter()
            .find(|s| s.name == n)
            .ok_or_else(|| format!("no service `{n}`"))
    };
    let timer = |n: &str| {
        snap.timers
            .iter()
            .find(|t| t.name == n)
            .ok_or_else(|| format!("no timer `{n}`"))
    };
    Ok(match key {
        "ping" => "1".to_string(),
        "discovery" => json!(snap
            .services
            .iter()
            .map(|s| {
                json!({
                    "{#SERVICE}": s.name,
                    "{#KIND}": s.kind,
                    "{#ROLE}": s.role,
                    "{#WINDOWPOST_GPU}": if s.proves_window_post_on_gpu() { "yes" } else { "no" },
                })
            })
            .collect::<Vec<_>>())
        .to_string(),
        "timer-discovery" => json!(snap
            .timers
            .iter()
            .map(|t| json!({"{#TIMER}": t.name}))
            .collect::<Vec<_>>())
        .to_string(),
        "state" => service(need()?)?.state.clone(),
        // The meaning Prometheus' venussup_service_up has too.
        "up" => u8::from(service(need()?)?.up()).to_string(),
        "restarts" => service(need()?)?.restarts.to_string(),
        "uptime" => service(need()?)?
            .since
            .map_or(0, |t| unix_now().saturating_sub(t))
            .to_string(),
        "last-exit-code" => service(need()?)?
            .last_exit
            .as_ref()
            .map_or(0, |e| match e.how {
                ExitKind::Code(c) => c,
                ExitKind::Signal(s) => 128 + s,
            })
            .to_string(),
        "fatal-lines" => service(need()?)?.fatal.count.to_string(),
        "timer-last" => timer(need()?)?
            .last
            .first()
            .map_or("none", |r| r.result.name())
            .to_string(),
        "timer-failures" => timer(need()?)?.runs.failure.to_string(),
        other => return Err(format!("unknown key `{other}`; keys: {}", KEYS.join(", "))),
    })
}

/// What `key` prints when the daemon cannot be asked (`why`): `ping` 0,
/// discovery an empty list with the reason, anything else nothing (pure).
pub fn unreachable_value(key: &str, why: &str) -> Option<String> {
    match key {
        "ping" => Some("0".to_string()),
        "discovery" | "timer-discovery" => Some(json!({"data": [], "reason": why}).to_string()),
        _ => None,
    }
}

/// The reason, for a person only: the agent would store it as the value.
fn explain(why: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("venussup zabbix: {why}");
    }
}

fn print_value(v: Option<String>) -> bool {
    v.is_none_or(|v| print_stdout(&(v + "\n")).is_ok())
}

pub fn run(config: &Path, key: &str, name: Option<&str>) -> u8 {
    if !KEYS.contains(&key) {
        eprintln!(
            "venussup zabbix: unknown key `{key}`; keys: {}",
            KEYS.join(", ")
        );
        return exit::USAGE;
    }
    let asked = client::request(
        &super::requests::state_dir_of(config),
        Command::Status { name: None },
    );
    let (value, code) = match asked {
        Ok(v) => match serde_json::from_value::<Snapshot>(v) {
            Ok(snap) => match value(&snap, key, name) {
                Ok(v) => (Some(v), exit::OK),
                Err(e) => {
                    explain(&e);
                    (None, exit::FAILURE)
                }
            },
            Err(e) => {
                let why = format!("unreadable status: {e}");
                explain(&why);
                (unreachable_value(key, &why), exit::FAILURE)
            }
        },
        Err(e) => {
            let why = e.to_string();
            explain(&why);
            (unreachable_value(key, &why), exit::UNREACHABLE)
        }
    };
    if print_value(value) {
        code
    } else {
        exit::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        let service = |name: &str, kind: &str, state: &str, pid: Option<i32>| {
            json!({"name": name, "kind": kind, "state": state, "ready": true, "pid": pid,
                   "since": null, "restarts": 4, "last_exit": null, "reason": null,
                   "cpus": null, "log_file": "/dev/null"})
        };
        serde_json::from_value(json!({
            "version": 1, "pid": 1, "started_at": 0, "config": "/c", "stopping": false,
            "smt": null, "orphans_reaped": 0, "timers": [],
            "services": [
                service("sealer", "daemon", "running", Some(42)),
                service("init", "oneshot", "done", None),
                service("attach", "oneshot", "failed", None),
            ],
        }))
        .unwrap()
    }

    #[test]
    fn ping_is_1_with_an_answer_and_0_without_one() {
        assert_eq!(value(&snap(), "ping", None).unwrap(), "1");
        assert_eq!(unreachable_value("ping", "down").unwrap(), "0");
    }

    #[test]
    fn a_dead_daemon_gives_empty_discovery_and_no_text_for_values() {
        let d: serde_json::Value =
            serde_json::from_str(&unreachable_value("discovery", "not running").unwrap()).unwrap();
        assert_eq!(d, json!({"data": [], "reason": "not running"}));
        assert!(unreachable_value("timer-discovery", "x").is_some());
        for key in KEYS
            .iter()
            .filter(|k| !k.contains("discovery") && **k != "ping")
        {
            assert_eq!(unreachable_value(key, "not running"), None, "{key}");
        }
    }

    #[test]
    fn discovery_says_each_service_s_role_and_whether_it_proves_window_post_on_a_gpu() {
        let mut s = snap();
        s.services[0].role = crate::config::Role::Sealer;
        s.services[0].tasks = vec![crate::config::Task::WindowPoSt];
        s.services[0].gpus = vec![0];
        s.services[1].tasks = vec![crate::config::Task::WindowPoSt];
        let d: serde_json::Value =
            serde_json::from_str(&value(&s, "discovery", None).unwrap()).unwrap();
        assert_eq!(
            d[0],
            json!({"{#SERVICE}": "sealer", "{#KIND}": "daemon", "{#ROLE}": "sealer", "{#WINDOWPOST_GPU}": "yes"})
        );
        assert_eq!(d[1]["{#ROLE}"], "other");
        assert_eq!(d[1]["{#WINDOWPOST_GPU}"], "no", "WindowPoSt without a GPU");
    }

    #[test]
    fn up_means_what_prometheus_says_a_done_oneshot_is_up_a_failed_one_not() {
        let s = snap();
        assert_eq!(value(&s, "up", Some("sealer")).unwrap(), "1");
        assert_eq!(value(&s, "up", Some("init")).unwrap(), "1");
        assert_eq!(value(&s, "up", Some("attach")).unwrap(), "0");
        let text = crate::status::metrics::render(&s);
        for (name, up) in [("sealer", 1), ("init", 1), ("attach", 0)] {
            let line = format!("venussup_service_up{{service=\"{name}\"}} {up}\n");
            assert!(text.contains(&line), "{line}");
        }
        assert_eq!(value(&s, "restarts", Some("sealer")).unwrap(), "4");
        assert!(value(&s, "up", Some("nosuch")).is_err());
        assert_eq!(value(&s, "fatal-lines", Some("sealer")).unwrap(), "0");
    }
}
