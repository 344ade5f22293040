//! The thin layer that carries out what the pure decisions ask for: a
//! decision about a service or timer is applied (its next state stored),
//! then its effects are run in order.

use std::time::Instant;

use tracing::{error, info, warn};

use super::{kill_group, Supervisor};
use crate::plan::TimerPlan;
use crate::runtime::effect::{Effect, Level};
use crate::runtime::service::{Lifecycle, ServiceRules, State};
use crate::runtime::state;
use crate::runtime::timer::TimerState;

/// What a decision was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subject {
    Service(usize),
    Timer(usize),
}

impl Supervisor {
    /// Applies a decision about service `i`: its next lifecycle is stored
    /// (the snapshot and `services.json` marked stale when they would
    /// show it), then its effects run.
    pub(super) fn service_transition(
        &mut self,
        i: usize,
        now: Instant,
        decide: impl FnOnce(Lifecycle, &ServiceRules) -> (Lifecycle, Vec<Effect>),
    ) {
        let s = &mut self.services[i];
        let shown = s.life.shown();
        let pid = s.life.state.pid();
        let (life, fx) = decide(std::mem::take(&mut s.life), &s.rules);
        s.life = life;
        if s.life.shown() != shown {
            self.dirty = true;
        }
        if s.life.state.pid() != pid {
            self.pids_dirty = true;
        }
        self.apply(Subject::Service(i), fx, now);
    }

    /// Applies a decision about timer `i`: its next state, then its effects.
    pub(super) fn timer_transition(
        &mut self,
        i: usize,
        now: Instant,
        decide: impl FnOnce(TimerState, &TimerPlan) -> (TimerState, Vec<Effect>),
    ) {
        let t = &mut self.timers[i];
        let (state, fx) = decide(std::mem::take(&mut t.state), &t.plan);
        t.state = state;
        self.apply(Subject::Timer(i), fx, now);
    }

    /// Carries out `fx`, in order, for `who`.
    pub(super) fn apply(&mut self, who: Subject, fx: Vec<Effect>, now: Instant) {
        for e in fx {
            match (e, who) {
                (Effect::Kill { pid, sig }, _) => kill_group(pid, sig),
                (Effect::Log { level, message }, _) => self.log(who, level, &message),
                (
                    Effect::Hook {
                        event,
                        exit,
                        message,
                    },
                    _,
                ) => {
                    let (service, timer) = match who {
                        Subject::Service(i) => (Some(self.services[i].plan.name.clone()), None),
                        Subject::Timer(i) => (None, Some(self.timers[i].plan.name.clone())),
                    };
                    self.emit_about(event, service.as_deref(), timer.as_deref(), exit, message);
                }
                (Effect::Start, Subject::Service(i)) => self.start(i, now),
                (Effect::Start, Subject::Timer(i)) => self.run_timer(i, now),
                (Effect::AskGate, Subject::Timer(i)) => self.ask_gate(i, now),
                (Effect::Probe, Subject::Service(i)) => self.probe(i, now),
                (Effect::RunDrainHelper { argv, capture }, Subject::Service(i)) => {
                    self.drain_helper(i, &argv, capture, now);
                }
                (Effect::EmptyCgroup, Subject::Service(i)) => self.empty_cgroup(i),
                (Effect::Release, Subject::Service(i)) => self.release(i),
                (Effect::RecordOnce, Subject::Service(i)) => self.record_once(i),
                (Effect::FinishRequestedStop, Subject::Service(i)) => {
                    self.after_requested_stop(i, now);
                    if self.services[i].life.state == State::Stopped {
                        self.release(i);
                    }
                }
                (e, who) => error!("internal error: {e:?} does not apply to {who:?}; ignored"),
            }
        }
    }

    /// A log line of a decision, tagged with its service or timer.
    fn log(&self, who: Subject, level: Level, message: &str) {
        match who {
            Subject::Service(i) => {
                let name = &self.services[i].plan.name;
                match level {
                    Level::Info => info!(service = %name, "{message}"),
                    Level::Warn => warn!(service = %name, "{message}"),
                    Level::Error => error!(service = %name, "{message}"),
                }
            }
            Subject::Timer(i) => {
                let name = &self.timers[i].plan.name;
                match level {
                    Level::Info => info!(timer = %name, "{message}"),
                    Level::Warn => warn!(timer = %name, "{message}"),
                    Level::Error => error!(timer = %name, "{message}"),
                }
            }
        }
    }

    /// A `once = true` oneshot succeeded: recorded, so it never runs again
    /// on this host.
    fn record_once(&self, i: usize) {
        let s = &self.services[i];
        let marker = state::once_marker(&self.state_dir, &s.plan.name);
        if let Err(e) = state::mark_once(&self.state_dir, &s.plan.name) {
            warn!(service = %s.plan.name, "failed to record {}: {e}; it will run again at next start", marker.display());
        }
    }
}
