//! Stopping: the daemon's shutdown (timers first, then services in
//! reverse dependency order, decided in `runtime/stop.rs`), planned stops,
//! and the cgroups released once a service is down for good.

use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{info, warn};

use super::Supervisor;
use crate::runtime::confine::{self, Confinement, Helpers};
use crate::runtime::service::State;
use crate::runtime::state;
use crate::runtime::{stop, timer};

/// How long emptying a cgroup may wait for the killed to be gone.
const EMPTY_WITHIN: Duration = Duration::from_secs(2);

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
    /// is killed and waited for (bounded), at every stop and every exit
    /// before a restart, so the next run starts in an empty cgroup:
    /// nothing escapes by double-forking, nothing holds a GPU into the
    /// next run.
    pub(super) fn empty_cgroup(&mut self, i: usize) {
        let name = self.services[i].plan.name.clone();
        self.empty_named(&name);
    }

    /// The tracking cgroup of `helpers`, ready for one to be born in;
    /// `None` where the host has no tracking tree, or (said in the log)
    /// when it cannot be made: that helper is then found by its process
    /// group only.
    pub(super) fn tracking(&self, helpers: Helpers) -> Option<Confinement> {
        let setup = self.cgroups.as_ref()?;
        let name = helpers.cgroup();
        confine::prepare_tracking(setup, &name)
            .map_err(|e| warn!(cgroup = %name, "{e}; what runs there is found by its process group only"))
            .ok()
    }

    /// Empties the cgroup `name` (a service's, or a [`Helpers`] one).
    pub(super) fn empty_named(&mut self, name: &str) {
        let Some(setup) = self.cgroups.clone() else {
            return;
        };
        let owners = &self.owners;
        let orphans = &mut self.orphans_reaped;
        let mut reap = |pid: i32| {
            let pid = Pid::from_raw(pid);
            // A process of its own (a probe) is reaped by the loop.
            if !owners.contains_key(&pid)
                && waitpid(pid, Some(WaitPidFlag::WNOHANG))
                    .is_ok_and(|s| s != WaitStatus::StillAlive)
            {
                *orphans += 1;
            }
        };
        let proc = std::path::Path::new("/proc");
        let stuck = &self.stuck;
        // (No /proc read on the restart path while nothing is stuck.)
        let known = |pid: i32| {
            !stuck.is_empty()
                && state::state_and_start(proc, pid).is_some_and(|(_, t)| stuck.contains(&(pid, t)))
        };
        match confine::empty(&setup, name, EMPTY_WITHIN, &known, &mut reap) {
            Ok(left) => self.note_stuck(name, &left),
            Err(e) => warn!(cgroup = %name, "failed to kill what is left of it: {e}"),
        }
        self.dirty = true;
    }

    /// Remembers the processes an emptying of cgroup `name` left (and
    /// forgets those gone), saying once which they are and why.
    fn note_stuck(&mut self, name: &str, left: &[i32]) {
        let proc = std::path::Path::new("/proc");
        self.stuck.retain(|(pid, t)| {
            state::state_and_start(proc, *pid).is_some_and(|(_, now)| now == *t)
        });
        for &pid in left {
            let Some((letter, t)) = state::state_and_start(proc, pid) else {
                continue;
            };
            if self.stuck.insert((pid, t)) {
                let why = if letter == 'D' {
                    "in uninterruptible sleep (state D): stuck in the kernel, e.g. on a hung NFS mount or in a driver; it dies when the kernel lets go"
                } else {
                    "not dead yet"
                };
                warn!(
                    cgroup = %name,
                    "process {pid} is still in its cgroup {} after SIGKILL, {why}; it is killed again at every emptying but no longer waited for",
                    humantime::format_duration(EMPTY_WITHIN)
                );
            }
        }
    }

    /// A timer or hook a reload removed or changed: what its command left
    /// is killed, and its cgroup removed.
    pub(super) fn discard_helpers(&mut self, helpers: Helpers) {
        let name = helpers.cgroup();
        self.empty_named(&name);
        if let Some(setup) = &self.cgroups {
            let _ = confine::release(setup, &name);
        }
    }

    /// A service is down for good (stopped, exited, failed, done): its
    /// cgroup is emptied and removed.
    pub(super) fn release(&mut self, i: usize) {
        self.empty_cgroup(i);
        let Some(setup) = &self.cgroups else { return };
        let name = &self.services[i].plan.name;
        if let Err(e) = confine::release(setup, name) {
            tracing::debug!(service = %name, "cgroup not removed yet: {e}");
        }
    }

    /// At exit: every service's and timer's cgroup emptied (each waiting,
    /// bounded, for the killed to be gone) and removed, then venussup's
    /// parent: nothing venussup started outlives it.
    pub(super) fn release_all_at_exit(&mut self) {
        let Some(setup) = self.cgroups.clone() else {
            return;
        };
        for i in 0..self.services.len() {
            self.release(i);
        }
        // What timer runs, gate commands and hooks left (a run killed at
        // shutdown, their setsid children) goes too, and so does any other
        // cgroup under the parent (a timer or hook a reload removed).
        let mut helpers: Vec<String> = self
            .timers
            .iter()
            .map(|t| Helpers::Timer(&t.plan.name).cgroup())
            .chain((0..self.hooks.len()).map(|k| Helpers::Hook(k).cgroup()))
            .chain(confine::children(&setup))
            .collect();
        helpers.sort_unstable();
        helpers.dedup();
        for name in &helpers {
            self.empty_named(name);
        }
        // A process venussup owns (a run killed at shutdown) is reaped
        // here; until it is, a v2 cgroup cannot go.
        self.reap();
        let names = self.services.iter().map(|s| s.plan.name.as_str());
        for name in names.chain(helpers.iter().map(String::as_str)) {
            let _ = confine::release(&setup, name);
        }
        if let Err(e) = confine::remove_parent(&setup) {
            warn!("cgroups: {e}");
        }
    }
}
