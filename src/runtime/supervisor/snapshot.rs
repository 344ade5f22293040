//! What the outside reads of the daemon: the snapshot that `status`, the
//! metrics and Zabbix read (built from the supervisor's state, written to
//! `status.json` and served on the control socket), `services.json`, the
//! node_exporter textfile (after a state change, at most once a second)
//! and systemd's `STATUS=` line.

use std::time::Instant;

use nix::unistd::Pid;
use tracing::warn;

use super::Supervisor;
use crate::config::ServiceKind;
use crate::host::cgroups::UNTRACKED;
use crate::plan::HookTarget;
use crate::runtime::service::State;
use crate::runtime::state::{self, PidRecord};
use crate::status::{CgroupsStatus, HookStatus, ServiceStatus, Snapshot, TimerStatus};
use crate::util::clock::unix_now;

impl Supervisor {
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let unix = unix_now();
        Snapshot {
            version: 1,
            pid: std::process::id(),
            started_at: self.started_at,
            config: self.config.clone(),
            stopping: self.stopping,
            smt: self.smt.clone(),
            orphans_reaped: self.orphans_reaped,
            services: (0..self.services.len())
                .map(|i| self.service_status(i, now, unix))
                .collect(),
            timers: (0..self.timers.len())
                .map(|i| self.timer_status(i, now))
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
            venussup: env!("CARGO_PKG_VERSION").to_string(),
            handover: self.handover.clone(),
            cgroups: match &self.cgroups {
                Some(setup) => CgroupsStatus {
                    hierarchy: setup.hierarchy().to_string(),
                    tracked: setup.hierarchy().tracking().is_some(),
                },
                None => CgroupsStatus {
                    hierarchy: format!("no cgroups ({UNTRACKED})"),
                    tracked: false,
                },
            },
        }
    }

    /// Service `i`'s entry in the snapshot; `status NAME` builds only this.
    pub(super) fn service_status(&self, i: usize, now: Instant, unix: u64) -> ServiceStatus {
        let ago = |t: Instant| unix.saturating_sub(now.duration_since(t).as_secs());
        let (plan, s) = (&self.services[i].plan, &self.services[i].life);
        ServiceStatus {
            name: plan.name.clone(),
            kind: plan.kind,
            state: s.state.name().to_string(),
            ready: s.ready,
            pid: s.state.pid().map(Pid::as_raw),
            since: s.state.pid().and(s.run_started).map(ago),
            restarts: s.restarts,
            last_exit: s.last_exit.clone(),
            oom_kills: s.oom_kills,
            draining_secs: match s.state {
                State::Draining { since, .. } => Some(now.duration_since(since).as_secs_f64()),
                _ => None,
            },
            next_start_in_secs: match s.state {
                State::Backoff { until } => {
                    Some(until.saturating_duration_since(now).as_secs_f64())
                }
                _ => None,
            },
            reason: match &s.state {
                State::Failed { reason } | State::Blocked { reason } => Some(reason.clone()),
                _ => s.reason.clone(),
            },
            cpus: plan.cpus.as_ref().and_then(|c| c.cpus.clone()),
            log_file: plan.log_file.clone(),
            gpus: plan.gpus.devices.clone(),
            gpus_why: Some(plan.gpus.reason.to_string()),
            fatal: s.fatal.clone(),
            role: plan.role,
            tasks: plan.tasks.clone(),
        }
    }

    /// Timer `i`'s entry in the snapshot.
    pub(super) fn timer_status(&self, i: usize, now: Instant) -> TimerStatus {
        let t = &self.timers[i];
        TimerStatus {
            name: t.plan.name.clone(),
            running: t.state.run.is_some(),
            gate: t.state.gate.clone(),
            next_in_secs: t
                .state
                .due
                .map(|d| d.saturating_duration_since(now).as_secs_f64()),
            runs: t.state.counts.clone(),
            last: t.state.last.iter().cloned().collect(),
        }
    }
}

impl Supervisor {
    /// Writes `status.json` and tells systemd the one-line summary.
    pub(super) fn write_snapshot(&mut self) {
        self.dirty = false;
        match serde_json::to_vec_pretty(&self.snapshot()) {
            Ok(json) => {
                if let Err(e) = state::write_snapshot(&self.state_dir.join("status.json"), &json) {
                    warn!("{e}");
                }
            }
            Err(e) => warn!("failed to encode the status snapshot: {e}"),
        }
        if self.announced_ready {
            self.notifier.send(&format!("STATUS={}", self.summary()));
        }
        self.textfile_changed(Instant::now());
    }

    /// `3/4 services running, 1 failed or backing off`.
    pub(super) fn summary(&self) -> String {
        let daemons = || {
            self.services
                .iter()
                .filter(|s| s.plan.kind == ServiceKind::Daemon)
        };
        let running = daemons()
            .filter(|s| matches!(s.life.state, State::Running { .. }))
            .count();
        let failed = self
            .services
            .iter()
            .filter(|s| matches!(s.life.state, State::Failed { .. } | State::Backoff { .. }))
            .count();
        format!(
            "{running}/{} services running, {failed} failed or backing off",
            daemons().count()
        )
    }

    /// Writes `services.json` (once per loop turn that changed a pid, not
    /// once per start: 1000 starts would rewrite it 1000 times).
    pub(super) fn record_pids(&mut self) {
        self.pids_dirty = false;
        let record: PidRecord = self
            .services
            .iter()
            .filter_map(|s| {
                let pid = s.life.state.pid()?;
                let start_time = s.start_time?;
                // Program and cgroup as they are now, so that a later
                // daemon signals this process and nothing else.
                let proc_dir = std::path::Path::new("/proc");
                Some((
                    s.plan.name.clone(),
                    state::record(proc_dir, pid.as_raw(), start_time),
                ))
            })
            .collect();
        if let Err(e) = state::write_pids(&self.state_dir, &record) {
            warn!("{e}");
        }
    }

    /// After a state change: the textfile now, or once a second has
    /// passed since the last write.
    pub(super) fn textfile_changed(&mut self, now: Instant) {
        if self.textfile.is_some() && self.textfile_throttle.changed(now) {
            self.write_textfile();
        }
    }

    pub(super) fn textfile_due(&mut self, now: Instant) {
        if self.textfile.is_some() && self.textfile_throttle.take_due(now) {
            self.write_textfile();
        }
    }

    pub(super) fn write_textfile(&self) {
        let Some(path) = &self.textfile else { return };
        let text = crate::status::metrics::render(&self.snapshot());
        if let Err(e) = state::write_snapshot(path, text.as_bytes()) {
            warn!("metrics textfile: {e}");
        }
    }
}
