//! Exits and reaping: every exited child is reaped with `waitpid(-1)` and
//! handed to whoever owns its pid; a service's exit is decided in
//! `runtime/exits.rs` from what is read here (the cgroup's OOM count, the
//! log's last lines).

use std::path::Path;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::error;

use super::{Owner, Supervisor};
use crate::runtime::confine;
use crate::runtime::exits::{self, Exit};
use crate::runtime::logs;
use crate::status::ExitKind;
use crate::util::clock::unix_now;

/// Log lines of a young death searched for a fatal start error.
const FATAL_LINES: usize = 30;

fn exit_kind(status: WaitStatus) -> Option<(Pid, ExitKind)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid, ExitKind::Code(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid, ExitKind::Signal(sig as i32))),
        _ => None,
    }
}

impl Supervisor {
    /// Drains every exited child: services, probes, timer runs, orphans.
    pub(super) fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    let Some((pid, how)) = exit_kind(status) else {
                        continue;
                    };
                    match self.owners.remove(&pid) {
                        Some(Owner::Service(i)) => self.service_exited(i, pid, how),
                        Some(Owner::Probe(i)) => self.probe_exited(i, how),
                        Some(Owner::Drain(i)) => self.drain_helper_exited(i, how),
                        Some(Owner::Timer(i)) => self.timer_exited(i, how),
                        Some(Owner::Hook(k)) => self.hook_exited(k, how),
                        Some(Owner::Gate(i)) => self.gate_exited(i, how),
                        Some(Owner::Upgrade) => self.upgrade_check_exited(how),
                        None => {
                            self.orphans_reaped += 1;
                            self.dirty = true;
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    error!("waitpid failed: {e}");
                    return;
                }
            }
        }
    }

    /// Service `i`'s main process `pid` ended.
    fn service_exited(&mut self, i: usize, pid: Pid, how: ExitKind) {
        let now = Instant::now();
        self.dirty = true;
        // A probe's connection to the run that ended answers nothing.
        self.services[i].probe_conn = None;
        let oom = self.oom_since_start(i);
        let s = &self.services[i];
        let fatal_line = if exits::scans_for_fatal(&s.life, &s.rules, oom, now) {
            fatal_line(&s.plan.log_file, &s.plan.fatal_output)
        } else {
            None
        };
        let exit = Exit {
            pid,
            how,
            oom,
            fatal_line,
            unix: unix_now(),
        };
        let stopping = self.stopping;
        self.service_transition(i, now, |life, rules| {
            exits::decide_exit(life, rules, exit, stopping, now)
        });
        self.pids_dirty = true;
    }

    /// Whether the OOM killer struck the service's cgroup since it started.
    fn oom_since_start(&self, i: usize) -> bool {
        let s = &self.services[i];
        let now = self
            .cgroups
            .as_ref()
            .and_then(|c| confine::oom_kills(c, &s.plan.name));
        matches!((s.oom_base, now), (Some(base), Some(n)) if n > base)
    }
}

/// The last log line of a young death that says it will not fix itself.
fn fatal_line(log: &Path, patterns: &[String]) -> Option<String> {
    if patterns.is_empty() {
        return None;
    }
    logs::tail(log, FATAL_LINES)
        .into_iter()
        .rev()
        .find(|l| patterns.iter().any(|p| l.contains(p.as_str())))
        .map(|l| l.trim().to_string())
}
