//! `venussup zabbix KEY [NAME]`: the values behind the Zabbix agent's
//! UserParameters (`units/zabbix_agentd.d/venussup.conf`), read from the
//! running daemon's snapshot. Discovery keys print low-level-discovery
//! JSON; the others one value.

use std::path::Path;

use serde_json::json;

use super::{exit, print_stdout};
use crate::control::client;
use crate::control::Command;
use crate::status::{ExitKind, Snapshot};
use crate::util::clock::unix_now;

/// The keys, as the agent config names them after `venussup zabbix`.
pub const KEYS: [&str; 9] = [
    "discovery",
    "timer-discovery",
    "state",
    "up",
    "restarts",
    "uptime",
    "last-exit-code",
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
        "discovery" => json!(snap
            .services
            .iter()
            .map(|s| json!({"{#SERVICE}": s.name, "{#KIND}": s.kind}))
            .collect::<Vec<_>>())
        .to_string(),
        "timer-discovery" => json!(snap
            .timers
            .iter()
            .map(|t| json!({"{#TIMER}": t.name}))
            .collect::<Vec<_>>())
        .to_string(),
        "state" => service(need()?)?.state.clone(),
        // A oneshot that is done is as up as it will be.
        "up" => {
            let s = service(need()?)?;
            u8::from(s.pid.is_some() || s.state == "done").to_string()
        }
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
        "timer-last" => timer(need()?)?
            .last
            .first()
            .map_or("none", |r| r.result.name())
            .to_string(),
        "timer-failures" => timer(need()?)?.runs.failure.to_string(),
        other => return Err(format!("unknown key `{other}`; keys: {}", KEYS.join(", "))),
    })
}

pub fn run(config: &Path, key: &str, name: Option<&str>) -> u8 {
    if !KEYS.contains(&key) {
        eprintln!(
            "venussup zabbix: unknown key `{key}`; keys: {}",
            KEYS.join(", ")
        );
        return exit::USAGE;
    }
    let snap = match client::request(
        &super::requests::state_dir_of(config),
        Command::Status { name: None },
    ) {
        Ok(v) => match serde_json::from_value::<Snapshot>(v) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("venussup zabbix: unreadable status: {e}");
                return exit::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("venussup zabbix: {e}");
            return exit::UNREACHABLE;
        }
    };
    match value(&snap, key, name) {
        Ok(v) => match print_stdout(&(v + "\n")) {
            Ok(()) => exit::OK,
            Err(_) => exit::FAILURE,
        },
        Err(e) => {
            eprintln!("venussup zabbix: {e}");
            exit::FAILURE
        }
    }
}
