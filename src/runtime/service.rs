//! One service at run time: its state, named for what the supervisor waits
//! for, and the pure decision of what follows an exit.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::backoff::{Backoff, BackoffPolicy};
use crate::config::{GiveUpConfig, RestartPolicy, ServiceKind};

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
    /// Sent its stop signal; SIGKILL at `kill_at`.
    Stopping {
        pid: Pid,
        kill_at: Instant,
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
    /// The coarse name shown in status, metrics and Zabbix.
    pub fn name(&self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Blocked { .. } => "blocked",
            State::Draining { .. } => "draining",
            State::Starting { .. } => "starting",
            State::Running { .. } => "running",
            State::Backoff { .. } => "backoff",
            State::Stopping { .. } => "stopping",
            State::Stopped => "stopped",
            State::Exited => "exited",
            State::Failed { .. } => "failed",
            State::Done => "done",
        }
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

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

impl ExitKind {
    pub fn success(self) -> bool {
        self == ExitKind::Code(0)
    }
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Code(c) => write!(f, "exit code {c}"),
            ExitKind::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {}", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastExit {
    pub how: ExitKind,
    /// Why, when venussup knows more than the code: `oom-killed`, or the
    /// fatal start line that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// How long that run lasted, in seconds.
    pub ran_secs: f64,
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

/// Seconds since the Unix epoch, for what status shows.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
