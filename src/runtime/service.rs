//! One service at run time, as its decisions see it: its state, named for
//! what the supervisor waits for, the rest of what the decisions read and
//! change ([`Lifecycle`]), the parts of its plan they need
//! ([`ServiceRules`]), and [`step`], the due work of one loop turn.
//! Pure: `supervisor/service.rs` holds the rest of a service (its plan,
//! user, open files) and carries the effects out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::backoff::{Backoff, BackoffPolicy};
use super::drain::{self, Drain};
use super::effect::Effect;
use super::{start, stop};
use crate::config::{RestartPolicy, ServiceKind};
use crate::plan::DrainPlan;
use crate::status::{Coarse, FatalSeen, LastExit};

/// What the supervisor waits for, per service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum State {
    /// For the services in `after` to be ready.
    #[default]
    Waiting,
    /// For its required mounts (`requires_mounts`) to appear.
    Blocked {
        reason: String,
    },
    /// Spawned; for its ready probe to pass.
    Starting {
        pid: Pid,
        probe_until: Instant,
    },
    Running {
        pid: Pid,
    },
    /// For the backoff delay to pass before the next start.
    Backoff {
        until: Instant,
    },
    /// A planned stop drains first: for its drain command, its quiet probe
    /// to report idle, or `until` (the drain timeout).
    Draining {
        pid: Pid,
        since: Instant,
        until: Instant,
    },
    /// Sent its stop signal; SIGKILL at `kill_at`, `None` once it was
    /// sent (SIGKILL cannot be ignored: nothing more to wait for but the
    /// exit).
    Stopping {
        pid: Pid,
        kill_at: Option<Instant>,
    },
    /// Stopped on request; stays so until started.
    Stopped,
    /// Ended and its policy does not restart it.
    Exited,
    /// Gave up (restart limit, ready timeout).
    Failed {
        reason: String,
    },
    /// A oneshot that succeeded.
    Done,
}

impl State {
    /// The coarse state shown in status, metrics and Zabbix.
    pub fn coarse(&self) -> Coarse {
        match self {
            State::Waiting => Coarse::Waiting,
            State::Blocked { .. } => Coarse::Blocked,
            State::Draining { .. } => Coarse::Draining,
            State::Starting { .. } => Coarse::Starting,
            State::Running { .. } => Coarse::Running,
            State::Backoff { .. } => Coarse::Backoff,
            State::Stopping { .. } => Coarse::Stopping,
            State::Stopped => Coarse::Stopped,
            State::Exited => Coarse::Exited,
            State::Failed { .. } => Coarse::Failed,
            State::Done => Coarse::Done,
        }
    }

    pub fn name(&self) -> &'static str {
        self.coarse().as_str()
    }

    pub fn pid(&self) -> Option<Pid> {
        match self {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Draining { pid, .. }
            | State::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// `give_up = { restarts, within }`: that many restarts within the
/// window and the service is failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GiveUp {
    pub restarts: u32,
    pub within: Duration,
}

/// The restart rules, as data.
#[derive(Debug, Clone)]
pub struct RestartRules {
    pub kind: ServiceKind,
    pub policy: RestartPolicy,
    pub backoff: BackoffPolicy,
    pub give_up: Option<GiveUp>,
}

/// What the decisions need of a service's plan.
#[derive(Debug, Clone)]
pub struct ServiceRules {
    pub name: String,
    /// A oneshot that succeeded is recorded and never run again.
    pub once: bool,
    pub restart: RestartRules,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    /// The ready probe's timeout; `None`: started is ready.
    pub ready_timeout: Option<Duration>,
    pub drain: Option<DrainPlan>,
    /// `limits.memory_max` as written, for the OOM line.
    pub memory_max: Option<String>,
}

/// The part of a service its decisions read and change. The pure
/// functions take it by value and give back the next one.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    pub state: State,
    /// Its dependents may start (a oneshot stays ready once done).
    pub ready: bool,
    pub restarts: u32,
    pub backoff: Backoff,
    /// Times of restarts, pruned to the `give_up` window.
    pub history: VecDeque<Instant>,
    /// Why it is not running as it should (spawn error, probe timeout).
    pub reason: Option<String>,
    /// When the current (or last) run started.
    pub run_started: Option<Instant>,
    /// Next probe attempt, and the pid of a running command probe.
    pub probe_at: Option<Instant>,
    pub probe_pid: Option<Pid>,
    pub last_exit: Option<LastExit>,
    /// The last few exits, newest first, for `status NAME`.
    pub recent_exits: VecDeque<LastExit>,
    /// OOM kills of its cgroup since venussup started.
    pub oom_kills: u64,
    /// Fatal start lines its log showed at young deaths.
    pub fatal: FatalSeen,
    /// Where a planned stop's drain is.
    pub drain: Drain,
}

impl Lifecycle {
    /// What the snapshot shows of it: a change there is worth a write.
    pub fn shown(&self) -> (State, bool, Option<String>, u32, [u64; 2], usize) {
        (
            self.state.clone(),
            self.ready,
            self.reason.clone(),
            self.restarts,
            [self.oom_kills, self.fatal.count],
            self.recent_exits.len(),
        )
    }

    /// When something is due for it: the end of its backoff, its SIGKILL,
    /// its drain's timeout or next poll, its ready timeout or next probe.
    pub fn deadlines(&self) -> [Option<Instant>; 3] {
        let state = match self.state {
            State::Backoff { until } => Some(until),
            State::Stopping { kill_at, .. } => kill_at,
            State::Draining { until, .. } => Some(until),
            State::Starting { probe_until, .. } => Some(probe_until),
            _ => None,
        };
        [state, self.probe_at, self.drain.next_poll]
    }
}

/// The due work of one loop turn: a start whose time came (its
/// dependencies ready, its backoff over), a ready probe or its timeout,
/// a drain's next step, SIGKILL after the stop timeout.
pub fn step(
    life: Lifecycle,
    rules: &ServiceRules,
    deps_ready: bool,
    shutting_down: bool,
    now: Instant,
) -> (Lifecycle, Vec<Effect>) {
    match life.state {
        State::Waiting if !shutting_down && deps_ready => (life, vec![Effect::Start]),
        State::Backoff { until } if until <= now && !shutting_down => (life, vec![Effect::Start]),
        State::Starting { pid, probe_until } if probe_until <= now => {
            start::not_ready_in_time(life, rules, pid)
        }
        State::Starting { .. } if life.probe_at.is_some_and(|t| t <= now) => {
            (life, vec![Effect::Probe])
        }
        State::Draining { .. } => drain::step(life, rules, now),
        State::Stopping {
            pid,
            kill_at: Some(at),
        } if at <= now => stop::escalate(life, rules, pid),
        _ => (life, Vec::new()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub const S: Duration = Duration::from_secs(1);

    /// A daemon with the defaults: restart always, backoff 1 s … 60 s,
    /// steady after 10 s, SIGTERM then SIGKILL after 30 s.
    pub fn daemon(name: &str) -> ServiceRules {
        ServiceRules {
            name: name.to_string(),
            once: false,
            restart: RestartRules {
                kind: ServiceKind::Daemon,
                policy: RestartPolicy::Always,
                backoff: BackoffPolicy::default(),
                give_up: None,
            },
            stop_signal: Signal::SIGTERM,
            stop_timeout: 30 * S,
            ready_timeout: None,
            drain: None,
            memory_max: None,
        }
    }

    /// A service running as `pid` since `since`.
    pub fn running(pid: i32, since: Instant) -> Lifecycle {
        Lifecycle {
            state: State::Running {
                pid: Pid::from_raw(pid),
            },
            ready: true,
            run_started: Some(since),
            ..Lifecycle::default()
        }
    }

    #[test]
    fn a_waiting_service_starts_once_its_dependencies_are_ready_and_not_while_shutting_down() {
        let t0 = Instant::now();
        let r = daemon("worker");
        let (_, fx) = step(Lifecycle::default(), &r, false, false, t0);
        assert!(fx.is_empty(), "dependencies not ready: {fx:?}");
        let (_, fx) = step(Lifecycle::default(), &r, true, false, t0);
        assert_eq!(fx, [Effect::Start]);
        let (_, fx) = step(Lifecycle::default(), &r, true, true, t0);
        assert!(fx.is_empty(), "no start during shutdown: {fx:?}");
    }

    #[test]
    fn a_backoff_starts_again_when_its_time_has_come_and_not_before() {
        let t0 = Instant::now();
        let r = daemon("worker");
        let life = Lifecycle {
            state: State::Backoff { until: t0 + 4 * S },
            ..Lifecycle::default()
        };
        let (life, fx) = step(life, &r, true, false, t0 + 3 * S);
        assert!(fx.is_empty());
        let (_, fx) = step(life, &r, true, false, t0 + 4 * S);
        assert_eq!(fx, [Effect::Start]);
    }

    #[test]
    fn exits_read_like_systemd() {
        use crate::status::ExitKind;
        assert_eq!(ExitKind::Code(3).to_string(), "exit code 3");
        assert_eq!(ExitKind::Signal(9).to_string(), "killed by SIGKILL");
    }
}
