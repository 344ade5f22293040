//! Stopping: the daemon's shutdown (timers first, then services in
//! reverse dependency order, decided in `runtime/stop.rs`), planned stops,
//! and the cgroups released once a service is down for good.

use std::time::{Duration, Instant};

use nix::unistd::Pid;
use tracing::{info, warn};

use super::Supervisor;
use crate::runtime::confine;
use crate::runtime::service::State;
use crate::runtime::{stop, timer};
use crate::util::clock::after;

impl Supervisor {
    /// SIGTERM or SIGINT: no timer runs any more, nothing starts any more;
    /// the services stop in order from the loop.
    pub(super) fn begin_stop(&mut self) {
        info!("stopping: timers first, then services in reverse start order");
        self.stopping = true;
        self.dirty = true;
        self.cancel_upgrade("venussup is stopping; nothing was changed");
        self.notifier.send("STOPPING=1\nSTATUS=stopping");
        let now = Instant::now();
        for i in 0..self.timers.len() {
            self.timer_transition(i, now, |t, _| timer::on_shutdown(t, now));
        }
        for i in 0..self.services.len() {
            self.service_transition(i, now, |life, _| stop::on_shutdown(life));
        }
    }

    /// Sends the stop signal to every service no running service depends on.
    pub(super) fn stop_what_can_stop(&mut self, now: Instant) {
        // A timer run that outlives its grace is killed.
        for i in 0..self.timers.len() {
            self.timer_transition(i, now, |t, _| timer::shutdown_grace_over(t, now));
        }
        let view: Vec<(&State, &[usize])> = self
            .services
            .iter()
            .map(|s| (&s.life.state, s.deps.as_slice()))
            .collect();
        for (i, pid) in stop::stop_order(&view) {
            self.planned_stop(i, pid, now);
        }
    }

    /// A stop venussup was asked for: drain when the service says how,
    /// else the stop signal at once.
    pub(super) fn planned_stop(&mut self, i: usize, pid: Pid, now: Instant) {
        self.service_transition(i, now, |life, rules| {
            stop::planned_stop(life, rules, pid, now)
        });
    }

    /// A service's main process is gone: whatever is left in its cgroup
    /// is killed (nothing escapes by double-forking, nothing holds a GPU
    /// into the next run).
    pub(super) fn empty_cgroup(&self, i: usize) {
        let Some(setup) = &self.cgroups else { return };
        let name = &self.services[i].plan.name;
        if let Err(e) = confine::kill_all(setup, name) {
            warn!(service = %name, "failed to kill what is left of it: {e}");
        }
    }

    /// A service is down for good (stopped, exited, failed, done): its
    /// cgroup is emptied and removed.
    pub(super) fn release(&self, i: usize) {
        self.empty_cgroup(i);
        let Some(setup) = &self.cgroups else { return };
        let name = &self.services[i].plan.name;
        // Killed processes may not be gone yet; a cgroup left now is
        // removed at the next start of the service or of venussup.
        if let Err(e) = confine::release(setup, name) {
            tracing::debug!(service = %name, "cgroup not removed yet: {e}");
        }
    }

    /// At exit: every service's cgroup emptied and removed, then venussup's
    /// parent. A SIGKILLed process leaves its cgroup only once the kernel
    /// has finished it, so each removal is retried for a bounded moment.
    pub(super) fn release_all_at_exit(&mut self) {
        let Some(setup) = self.cgroups.clone() else {
            return;
        };
        for i in 0..self.services.len() {
            self.release(i);
        }
        let deadline = after(Instant::now(), Duration::from_secs(2));
        loop {
            // A killed grandchild is ours to reap (subreaper); until it is,
            // its cgroup cannot go.
            self.reap();
            let left = self
                .services
                .iter()
                .any(|s| confine::pids(&setup, &s.plan.name).is_ok_and(|p| !p.is_empty()));
            if !left || Instant::now() >= deadline {
                break;
            }
            // No event says "the cgroup is empty" on v1: a short, bounded wait.
            std::thread::sleep(Duration::from_millis(10));
        }
        self.reap();
        for s in &self.services {
            let _ = confine::release(&setup, &s.plan.name);
        }
        if let Err(e) = confine::remove_parent(&setup) {
            warn!("cgroups: {e}");
        }
    }
}
