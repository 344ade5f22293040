//! The snapshot of the daemon that `status`, the metrics and Zabbix read:
//! built from the supervisor's state, written to `status.json` and served
//! on the control socket.

use std::path::PathBuf;
use std::time::Instant;

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{RunCounts, RunRecord, Supervisor};
use crate::config::ServiceKind;
use crate::plan::HookTarget;
use crate::runtime::hooks::HookCounts;
use crate::runtime::service::{unix_now, LastExit, State};
use crate::util::cpulist::CpuSet;

/// What `status` and the metrics read: one snapshot of the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub pid: u32,
    pub started_at: u64,
    pub config: PathBuf,
    pub stopping: bool,
    pub smt: Option<serde_json::Value>,
    /// Orphaned grandchildren venussup reaped (as PID 1 or subreaper).
    pub orphans_reaped: u64,
    pub services: Vec<ServiceStatus>,
    pub timers: Vec<TimerStatus>,
    /// What `[host.prepare]` did at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<crate::status::prepare::Report>,
    /// `[[host.hook]]`s, in config order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookStatus {
    /// The command, or `POST <url>` (its query hidden).
    pub target: String,
    pub running: bool,
    pub queued: usize,
    #[serde(flatten)]
    pub counts: HookCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub kind: ServiceKind,
    pub state: String,
    pub ready: bool,
    pub pid: Option<i32>,
    /// Unix time the current run started.
    pub since: Option<u64>,
    pub restarts: u32,
    pub last_exit: Option<LastExit>,
    pub reason: Option<String>,
    pub cpus: Option<CpuSet>,
    pub log_file: PathBuf,
    /// OOM kills of its cgroup since venussup started.
    #[serde(default)]
    pub oom_kills: u64,
    /// While draining: how long it has waited.
    #[serde(default)]
    pub draining_secs: Option<f64>,
    /// While backing off: when the next start comes.
    #[serde(default)]
    pub next_start_in_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimerStatus {
    pub name: String,
    pub running: bool,
    pub next_in_secs: Option<f64>,
    pub runs: RunCounts,
    pub last: Vec<RunRecord>,
    /// A gated timer's last gate answer and decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::runtime::gate::GateStatus>,
}

impl Supervisor {
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let unix = unix_now();
        let ago = |t: Instant| unix.saturating_sub(now.duration_since(t).as_secs());
        Snapshot {
            version: 1,
            pid: std::process::id(),
            started_at: self.started_at,
            config: self.config.clone(),
            stopping: self.stopping,
            smt: self.smt.clone(),
            orphans_reaped: self.orphans_reaped,
            services: self
                .svcs
                .iter()
                .map(|s| ServiceStatus {
                    name: s.plan.name.clone(),
                    kind: s.plan.kind,
                    state: s.state.name().to_string(),
                    ready: s.ready,
                    pid: s.state.pid().map(Pid::as_raw),
                    since: s.state.pid().and(s.run_started).map(ago),
                    restarts: s.restarts,
                    last_exit: s.last_exit.clone(),
                    oom_kills: s.oom_kills,
                    draining_secs: match s.state {
                        State::Draining { since, .. } => {
                            Some(now.duration_since(since).as_secs_f64())
                        }
                        _ => None,
                    },
                    next_start_in_secs: match s.state {
                        State::Backoff { until } => {
                            Some(until.saturating_duration_since(now).as_secs_f64())
                        }
                        _ => None,
                    },
                    reason: match &s.state {
                        State::Failed { reason } | State::Blocked { reason } => {
                            Some(reason.clone())
                        }
                        _ => s.reason.clone(),
                    },
                    cpus: s.plan.cpus.as_ref().and_then(|c| c.cpus.clone()),
                    log_file: s.plan.log_file.clone(),
                })
                .collect(),
            timers: self
                .timers
                .iter()
                .map(|t| TimerStatus {
                    name: t.plan.name.clone(),
                    running: t.run.is_some(),
                    gate: t.gate.clone(),
                    next_in_secs: t
                        .due
                        .map(|d| d.saturating_duration_since(now).as_secs_f64()),
                    runs: t.counts.clone(),
                    last: t.last.iter().cloned().collect(),
                })
                .collect(),
            prepare: self.prepare.clone(),
            hooks: self
                .hooks
                .iter()
                .map(|h| HookStatus {
                    target: match &h.plan.target {
                        HookTarget::Command(c) => c.join(" "),
                        HookTarget::Url(u) => {
                            format!("POST {}", crate::plan::render::redact_url(u))
                        }
                    },
                    running: h.run.is_some(),
                    queued: h.slot.queue.len(),
                    counts: h.slot.counts.clone(),
                })
                .collect(),
        }
    }
}
