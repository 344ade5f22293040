//! The snapshot of the daemon that `status`, the metrics and Zabbix read:
//! built from the supervisor's state, written to `status.json` and served
//! on the control socket.

use std::time::Instant;

use nix::unistd::Pid;

use super::Supervisor;
use crate::plan::HookTarget;
use crate::runtime::service::State;
use crate::status::{HookStatus, ServiceStatus, Snapshot, TimerStatus};
use crate::util::clock::unix_now;

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
                .services
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
