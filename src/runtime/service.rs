//! One service at run time: its state, named for what the supervisor waits
//! for, and the pure decision of what follows an exit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::backoff::{Backoff, BackoffPolicy};
use crate::config::{GiveUpConfig, RestartPolicy, ServiceKind};
use crate::status::{Coarse, ExitKind};

/// What the supervisor waits for, per service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// For the services in `after` to be ready.
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

/// What follows an exit the supervisor did not ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// Start again after this delay (zero: at once).
    Restart(Duration),
    /// The policy keeps it down.
    Exited,
    /// The restart limit was reached.
    Failed(String),
    /// A oneshot that succeeded.
    Done,
}

/// The restart rules, as data.
#[derive(Debug, Clone)]
pub struct RestartRules {
    pub kind: ServiceKind,
    pub policy: RestartPolicy,
    pub backoff: BackoffPolicy,
    pub give_up: Option<GiveUpConfig>,
}

/// Decides what follows an exit (pure; `history` holds the times of earlier
/// restarts, pruned to the give-up window).
pub fn after_exit(
    rules: &RestartRules,
    how: ExitKind,
    ran: Duration,
    backoff: &mut Backoff,
    history: &mut VecDeque<Instant>,
    now: Instant,
) -> AfterExit {
    if rules.kind == ServiceKind::Oneshot {
        // A oneshot is retried until it succeeds.
        return if how.success() {
            AfterExit::Done
        } else {
            AfterExit::Restart(backoff.on_death(&rules.backoff, Duration::ZERO))
        };
    }
    let restart = match rules.policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !how.success(),
        RestartPolicy::Never => false,
    };
    if !restart {
        return AfterExit::Exited;
    }
    if let Some(g) = &rules.give_up {
        let window = g.within.0;
        while history
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            history.pop_front();
        }
        if history.len() >= *g.restarts.get_ref() as usize {
            return AfterExit::Failed(format!(
                "{} restarts within {}; not restarting again (`give_up`)",
                history.len(),
                g.within
            ));
        }
    }
    history.push_back(now);
    AfterExit::Restart(backoff.on_death(&rules.backoff, ran))
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::HumanDuration;
    use toml::Spanned;

    fn rules(policy: RestartPolicy, give_up: Option<(u32, u64)>) -> RestartRules {
        RestartRules {
            kind: ServiceKind::Daemon,
            policy,
            backoff: BackoffPolicy::default(),
            give_up: give_up.map(|(n, secs)| GiveUpConfig {
                restarts: Spanned::new(0..0, n),
                within: HumanDuration::secs(secs),
            }),
        }
    }

    #[test]
    fn policies_decide_by_exit_code() {
        let now = Instant::now();
        let (mut b, mut h) = (Backoff::default(), VecDeque::new());
        let steady = Duration::from_secs(3600);
        let ok = ExitKind::Code(0);
        let crash = ExitKind::Signal(9);
        assert_eq!(
            after_exit(
                &rules(RestartPolicy::Always, None),
                ok,
                steady,
                &mut b,
                &mut h,
                now
            ),
            AfterExit::Restart(Duration::ZERO)
        );
        assert_eq!(
            after_exit(
                &rules(RestartPolicy::OnFailure, None),
                ok,
                steady,
                &mut b,
                &mut h,
                now
            ),
            AfterExit::Exited
        );
        assert_eq!(
            after_exit(
                &rules(RestartPolicy::OnFailure, None),
                crash,
                steady,
                &mut b,
                &mut h,
                now
            ),
            AfterExit::Restart(Duration::ZERO)
        );
        assert_eq!(
            after_exit(
                &rules(RestartPolicy::Never, None),
                crash,
                steady,
                &mut b,
                &mut h,
                now
            ),
            AfterExit::Exited
        );
    }

    #[test]
    fn gives_up_after_n_restarts_within_the_window_only() {
        let r = rules(RestartPolicy::Always, Some((3, 60)));
        let (mut b, mut h) = (Backoff::default(), VecDeque::new());
        let t0 = Instant::now();
        let young = Duration::from_millis(10);
        for i in 0..3 {
            let d = after_exit(
                &r,
                ExitKind::Code(1),
                young,
                &mut b,
                &mut h,
                t0 + Duration::from_secs(i),
            );
            assert!(matches!(d, AfterExit::Restart(_)), "{d:?}");
        }
        assert!(matches!(
            after_exit(
                &r,
                ExitKind::Code(1),
                young,
                &mut b,
                &mut h,
                t0 + Duration::from_secs(3)
            ),
            AfterExit::Failed(_)
        ));
        // Outside the window the old restarts no longer count.
        let (mut b, mut h) = (Backoff::default(), VecDeque::new());
        for i in 0..10 {
            let d = after_exit(
                &r,
                ExitKind::Code(1),
                young,
                &mut b,
                &mut h,
                t0 + Duration::from_secs(i * 61),
            );
            assert!(matches!(d, AfterExit::Restart(_)), "{d:?}");
        }
    }

    #[test]
    fn a_oneshot_is_done_on_success_and_retried_with_backoff_otherwise() {
        let r = RestartRules {
            kind: ServiceKind::Oneshot,
            ..rules(RestartPolicy::Never, None)
        };
        let (mut b, mut h) = (Backoff::default(), VecDeque::new());
        let now = Instant::now();
        assert_eq!(
            after_exit(&r, ExitKind::Code(1), Duration::ZERO, &mut b, &mut h, now),
            AfterExit::Restart(Duration::from_secs(1))
        );
        assert_eq!(
            after_exit(&r, ExitKind::Code(1), Duration::ZERO, &mut b, &mut h, now),
            AfterExit::Restart(Duration::from_secs(2))
        );
        assert_eq!(
            after_exit(&r, ExitKind::Code(0), Duration::ZERO, &mut b, &mut h, now),
            AfterExit::Done
        );
    }

    #[test]
    fn exits_read_like_systemd() {
        assert_eq!(ExitKind::Code(3).to_string(), "exit code 3");
        assert_eq!(ExitKind::Signal(9).to_string(), "killed by SIGKILL");
    }
}
