//! What follows a service's exit: a death venussup did not ask for is
//! restarted (at once after a steady run, with backoff after a young one,
//! after the longest wait when its log shows a fatal start error), kept
//! down by its policy, or failed by `give_up`; an exit during a stop
//! venussup asked for completes the stop. Pure: `supervisor/exits.rs`
//! reaps the child, reads the cgroup's OOM count and the log's tail, and
//! carries the effects out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::backoff::Backoff;
use super::effect::Effect;
use super::service::{Lifecycle, RestartRules, ServiceRules, State};
use crate::config::{EventKind, RestartPolicy, ServiceKind};
use crate::status::{ExitKind, LastExit};
use crate::util::clock::after;

/// Exits of each service kept for `status NAME`.
pub const RECENT_EXITS: usize = 5;

/// What the loop knows of an exit when it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The main process that ended (its group goes with it).
    pub pid: Pid,
    pub how: ExitKind,
    /// The OOM killer struck the service's cgroup during the run.
    pub oom: bool,
    /// The fatal start line its log ends with, looked for only when
    /// [`scans_for_fatal`] says so.
    pub fatal_line: Option<String>,
    /// Seconds since the Unix epoch, for the record.
    pub unix: u64,
}

/// How long the current run has lasted at `now`.
pub fn ran(life: &Lifecycle, now: Instant) -> Duration {
    life.run_started
        .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
}

/// Whether the log is worth reading for a fatal start line: a young
/// death, not by the OOM killer.
pub fn scans_for_fatal(life: &Lifecycle, rules: &ServiceRules, oom: bool, now: Instant) -> bool {
    !oom && ran(life, now) < rules.restart.backoff.stable_after
}

/// What follows a service's exit at `now`. `shutting_down`: the daemon
/// stops everything, nothing restarts.
pub fn decide_exit(
    mut life: Lifecycle,
    rules: &ServiceRules,
    exit: Exit,
    shutting_down: bool,
    now: Instant,
) -> (Lifecycle, Vec<Effect>) {
    let Exit {
        pid,
        how,
        oom,
        fatal_line,
        unix,
    } = exit;
    // Whatever the main process left in its group goes with it.
    let mut fx = vec![Effect::kill(pid, Signal::SIGKILL)];
    let ran = ran(&life, now);
    let fatal = fatal_line.filter(|_| scans_for_fatal(&life, rules, oom, now));
    if oom {
        life.oom_kills += 1;
        fx.push(Effect::error(format!(
            "{how}: killed by the kernel's OOM killer (memory_max {})",
            rules.memory_max.as_deref().unwrap_or("?")
        )));
    }
    let record = LastExit {
        how,
        reason: if oom {
            Some("oom-killed".to_string())
        } else {
            fatal.clone()
        },
        at: unix,
        ran_secs: ran.as_secs_f64(),
    };
    if let Some(line) = &fatal {
        life.fatal.saw(line, unix);
    }
    life.recent_exits.push_front(record.clone());
    life.recent_exits.truncate(RECENT_EXITS);
    life.last_exit = Some(record);
    life.ready = life.ready && rules.restart.kind == ServiceKind::Oneshot;
    life.probe_at = None;
    if let Some(p) = life.probe_pid.take() {
        fx.push(Effect::kill(p, Signal::SIGKILL));
    }
    if let Some(p) = life.drain.helper.take() {
        fx.push(Effect::kill(p, Signal::SIGKILL));
    }
    fx.push(Effect::EmptyCgroup);
    if matches!(life.state, State::Stopping { .. } | State::Draining { .. }) || shutting_down {
        fx.push(Effect::info(format!("stopped ({how})")));
        life.state = State::Stopped;
        life.ready = false;
        fx.push(if shutting_down {
            Effect::Release
        } else {
            Effect::FinishRequestedStop
        });
        return (life, fx);
    }
    let decision = after_exit(
        &rules.restart,
        how,
        ran,
        &mut life.backoff,
        &mut life.history,
        now,
    );
    let name = &rules.name;
    let hook = |event, message| Effect::Hook {
        event,
        exit: Some(how.to_string()),
        message,
    };
    if oom {
        fx.push(hook(
            EventKind::Oom,
            format!("{name} was killed by the OOM killer"),
        ));
    }
    if decision != AfterExit::Done {
        fx.push(hook(
            EventKind::Death,
            format!(
                "{name} died ({how}) after {}",
                humantime::format_duration(round(ran))
            ),
        ));
    }
    if let AfterExit::Failed(reason) = &decision {
        fx.push(hook(EventKind::Failed, format!("{name} failed: {reason}")));
    }
    match decision {
        AfterExit::Done => {
            fx.push(Effect::info("done"));
            life.state = State::Done;
            life.ready = true;
            if rules.once {
                fx.push(Effect::RecordOnce);
            }
        }
        AfterExit::Restart(delay) => {
            life.restarts += 1;
            // A fatal start error does not fix itself: wait the longest.
            let delay = match &fatal {
                Some(line) => {
                    let max = rules.restart.backoff.max;
                    fx.push(Effect::error(format!(
                        "fatal start error, restarting will not fix it: {line} ({}); next try in {}",
                        fatal_hint(line),
                        humantime::format_duration(max)
                    )));
                    life.reason = Some(format!("fatal start error: {line}"));
                    max
                }
                None => delay,
            };
            if delay.is_zero() {
                fx.push(Effect::info(format!(
                    "{how} after {}; restarting at once",
                    humantime::format_duration(round(ran))
                )));
                life.state = State::Backoff { until: now };
                fx.push(Effect::Start);
            } else {
                fx.push(Effect::warn(format!(
                    "{how} after {}; restarting in {} (backoff)",
                    humantime::format_duration(round(ran)),
                    humantime::format_duration(delay)
                )));
                life.state = State::Backoff {
                    until: after(now, delay),
                };
            }
        }
        AfterExit::Exited => {
            fx.push(Effect::info(format!("{how}; restart policy keeps it down")));
            life.state = State::Exited;
        }
        AfterExit::Failed(reason) => {
            fx.push(Effect::error(format!("{how}; {reason}")));
            life.reason = Some(reason.clone());
            life.state = State::Failed { reason };
        }
    }
    if matches!(
        life.state,
        State::Exited | State::Failed { .. } | State::Done
    ) {
        fx.push(Effect::Release);
    }
    (life, fx)
}

/// What the restart rules say about an exit venussup did not ask for.
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

/// The restart policy, `give_up` and the backoff applied to an exit after
/// a run of `ran` (`history` holds the times of earlier restarts, pruned
/// to the give-up window).
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
        while history
            .front()
            .is_some_and(|t| now.duration_since(*t) > g.within)
        {
            history.pop_front();
        }
        if history.len() >= g.restarts as usize {
            return AfterExit::Failed(format!(
                "{} restarts within {}; not restarting again (`give_up`)",
                history.len(),
                humantime::format_duration(g.within)
            ));
        }
    }
    history.push_back(now);
    AfterExit::Restart(backoff.on_death(&rules.backoff, ran))
}

/// What to fix, for the fatal start errors venussup knows.
pub fn fatal_hint(line: &str) -> &'static str {
    if line.contains("file descriptor limit") {
        "raise limits.nofile"
    } else if line.contains("already locked") {
        "another process holds its repo: check VENUS_WORKER_PATH / --repo"
    } else if line.contains("address already in use") {
        "another process listens on its --listen port"
    } else if line.contains("opening path") {
        "a seal or store path is missing or not mounted: see requires_mounts"
    } else {
        "see the service's log"
    }
}

/// Durations in logs, to the millisecond.
pub fn round(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::effect::check;
    use crate::runtime::service::tests::{daemon, running, S};
    use crate::runtime::service::GiveUp;

    const PID: i32 = 4242;

    fn died(how: ExitKind) -> Exit {
        Exit {
            pid: Pid::from_raw(PID),
            how,
            oom: false,
            fatal_line: None,
            unix: 1_700_000_000,
        }
    }

    /// Runs `life` into `n` deaths, each `ran` after its (re)start; the
    /// delays they were given.
    fn deaths(
        rules: &ServiceRules,
        mut life: Lifecycle,
        t0: Instant,
        ran: Duration,
        n: usize,
    ) -> (Lifecycle, Vec<Option<Duration>>) {
        let mut delays = Vec::new();
        let mut now = t0;
        for _ in 0..n {
            life.run_started = Some(now);
            life.state = State::Running {
                pid: Pid::from_raw(PID),
            };
            now += ran;
            let (next, _) = decide_exit(life, rules, died(ExitKind::Code(1)), false, now);
            life = next;
            delays.push(match life.state {
                State::Backoff { until } => Some(until - now),
                _ => None,
            });
            now += delays.last().copied().flatten().unwrap_or_default();
        }
        (life, delays)
    }

    #[test]
    fn a_steady_death_restarts_at_once_and_kills_what_the_main_process_left() {
        let t0 = Instant::now();
        let r = daemon("worker");
        let now = t0 + 3600 * S;
        let (life, fx) = decide_exit(running(PID, t0), &r, died(ExitKind::Signal(9)), false, now);
        assert_eq!(life.state, State::Backoff { until: now });
        assert!(check::starts(&fx), "{fx:?}");
        assert_eq!(check::kills(&fx)[0], (PID, Signal::SIGKILL));
        // What it left in its cgroup dies before the next run starts.
        let empty = fx.iter().position(|e| *e == Effect::EmptyCgroup);
        let start = fx.iter().position(|e| *e == Effect::Start);
        assert!(
            matches!((empty, start), (Some(e), Some(s)) if e < s),
            "{fx:?}"
        );
        assert_eq!(check::hooks(&fx), [EventKind::Death]);
        assert!(check::logs(&fx).contains(&"killed by SIGKILL after 1h; restarting at once"));
        assert_eq!(life.restarts, 1);
        assert!(
            !life.ready,
            "dependents see it down until it is ready again"
        );
        let last = life.last_exit.as_ref().unwrap();
        assert_eq!((last.how, last.at), (ExitKind::Signal(9), 1_700_000_000));
    }

    #[test]
    fn young_deaths_wait_1_2_4_seconds_and_so_on_up_to_backoff_max() {
        let t0 = Instant::now();
        let mut r = daemon("worker");
        r.restart.backoff.max = 20 * S;
        let (life, delays) = deaths(&r, running(PID, t0), t0, S / 10, 7);
        let secs: Vec<u64> = delays.iter().map(|d| d.unwrap().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 20, 20]);
        assert_eq!(life.restarts, 7);
        // A steady run then restarts at once and resets the count.
        let (life, delays) = deaths(&r, life, t0 + 3600 * S, 10 * S, 1);
        assert_eq!(delays, [Some(Duration::ZERO)]);
        let (_, delays) = deaths(&r, life, t0 + 7200 * S, S / 10, 1);
        assert_eq!(delays, [Some(S)]);
    }

    #[test]
    fn give_up_fails_the_service_after_n_restarts_within_the_window() {
        let t0 = Instant::now();
        let mut r = daemon("worker");
        r.restart.give_up = Some(GiveUp {
            restarts: 3,
            within: 600 * S,
        });
        let (life, delays) = deaths(&r, running(PID, t0), t0, S / 10, 4);
        assert!(delays[..3].iter().all(Option::is_some), "{delays:?}");
        let State::Failed { reason } = &life.state else {
            panic!("{:?}", life.state);
        };
        assert_eq!(
            reason,
            "3 restarts within 10m; not restarting again (`give_up`)"
        );
        assert_eq!(life.reason.as_deref(), Some(reason.as_str()));

        // The failing death itself: the hook is told, the cgroup released.
        let mut life = deaths(&r, running(PID, t0), t0, S / 10, 3).0;
        life.state = State::Running {
            pid: Pid::from_raw(PID),
        };
        let (_, fx) = decide_exit(life, &r, died(ExitKind::Code(1)), false, t0 + 20 * S);
        assert_eq!(check::hooks(&fx), [EventKind::Death, EventKind::Failed]);
        assert_eq!(fx.last(), Some(&Effect::Release));
        assert!(!check::starts(&fx));
    }

    #[test]
    fn restarts_outside_the_give_up_window_no_longer_count() {
        let t0 = Instant::now();
        let mut r = daemon("worker");
        r.restart.give_up = Some(GiveUp {
            restarts: 3,
            within: 60 * S,
        });
        // Deaths 61 s apart: never three within a minute.
        let (life, delays) = deaths(&r, running(PID, t0), t0, 61 * S, 10);
        assert!(delays.iter().all(Option::is_some), "{delays:?}");
        assert_eq!(life.restarts, 10);
    }

    #[test]
    fn a_fatal_start_line_waits_backoff_max_and_says_what_to_fix() {
        let t0 = Instant::now();
        let r = daemon("worker");
        let now = t0 + S / 2;
        let line = "ERROR: soft file descriptor limit 1024 is too low";
        let exit = Exit {
            fatal_line: Some(line.to_string()),
            ..died(ExitKind::Code(1))
        };
        let (life, fx) = decide_exit(running(PID, t0), &r, exit, false, now);
        assert_eq!(
            life.state,
            State::Backoff {
                until: now + 60 * S
            },
            "the first young death waits the cap, not 1 s"
        );
        assert_eq!(
            life.reason.as_deref(),
            Some("fatal start error: ERROR: soft file descriptor limit 1024 is too low")
        );
        assert_eq!(
            life.last_exit.as_ref().unwrap().reason.as_deref(),
            Some(line)
        );
        assert_eq!(life.fatal.count, 1, "status marks it");
        let last = life.fatal.last.as_ref().unwrap();
        assert_eq!(
            (last.line.as_str(), last.at),
            (line, died(ExitKind::Code(1)).unix)
        );
        // The next young death with the same line counts again.
        let exit = Exit {
            fatal_line: Some(line.to_string()),
            ..died(ExitKind::Code(1))
        };
        let again = Lifecycle {
            fatal: life.fatal.clone(),
            ..running(PID, now)
        };
        let (again, _) = decide_exit(again, &r, exit, false, now + S / 2);
        assert_eq!(again.fatal.count, 2);
        assert!(check::logs(&fx)
            .iter()
            .any(|l| l.contains("raise limits.nofile") && l.contains("next try in 1m")));
    }

    #[test]
    fn a_fatal_line_after_a_steady_run_or_an_oom_kill_does_not_count() {
        let t0 = Instant::now();
        let r = daemon("worker");
        let line = Some("address already in use".to_string());
        let (life, _) = decide_exit(
            running(PID, t0),
            &r,
            Exit {
                fatal_line: line.clone(),
                ..died(ExitKind::Code(1))
            },
            false,
            t0 + 60 * S,
        );
        assert_eq!(life.state, State::Backoff { until: t0 + 60 * S });
        assert_eq!(life.reason, None);
        assert_eq!(life.fatal, crate::status::FatalSeen::default());
        let (life, fx) = decide_exit(
            running(PID, t0),
            &r,
            Exit {
                oom: true,
                fatal_line: line,
                ..died(ExitKind::Signal(9))
            },
            false,
            t0 + S,
        );
        assert_eq!(life.oom_kills, 1);
        assert_eq!(life.fatal.count, 0, "an OOM kill is not a fatal line");
        assert_eq!(
            life.last_exit.unwrap().reason.as_deref(),
            Some("oom-killed")
        );
        assert_eq!(check::hooks(&fx), [EventKind::Oom, EventKind::Death]);
        assert_eq!(life.state, State::Backoff { until: t0 + 2 * S });
    }

    #[test]
    fn exit_0_is_a_death_and_is_restarted() {
        let t0 = Instant::now();
        let r = daemon("worker");
        let (life, fx) = decide_exit(running(PID, t0), &r, died(ExitKind::Code(0)), false, t0 + S);
        assert_eq!(life.state, State::Backoff { until: t0 + 2 * S });
        assert_eq!(check::hooks(&fx), [EventKind::Death]);
        assert_eq!(life.restarts, 1);
    }

    #[test]
    fn restart_policies_decide_by_exit_code() {
        let t0 = Instant::now();
        let steady = t0 + 3600 * S;
        let decide = |policy, how| {
            let mut r = daemon("worker");
            r.restart.policy = policy;
            decide_exit(running(PID, t0), &r, died(how), false, steady)
                .0
                .state
        };
        let at_once = State::Backoff { until: steady };
        assert_eq!(
            decide(RestartPolicy::OnFailure, ExitKind::Code(0)),
            State::Exited
        );
        assert_eq!(
            decide(RestartPolicy::OnFailure, ExitKind::Signal(9)),
            at_once
        );
        assert_eq!(
            decide(RestartPolicy::Never, ExitKind::Signal(9)),
            State::Exited
        );
    }

    #[test]
    fn a_oneshot_is_done_on_success_and_retried_with_backoff_otherwise() {
        let t0 = Instant::now();
        let mut r = daemon("attach");
        r.restart.kind = ServiceKind::Oneshot;
        r.once = true;
        let (life, fx) = decide_exit(running(PID, t0), &r, died(ExitKind::Code(1)), false, t0);
        assert_eq!(life.state, State::Backoff { until: t0 + S });
        assert_eq!(check::hooks(&fx), [EventKind::Death]);
        let (life, _) = decide_exit(running(PID, t0), &r, died(ExitKind::Code(1)), false, t0);
        assert_eq!(life.state, State::Backoff { until: t0 + S });
        let (life, fx) = decide_exit(running(PID, t0), &r, died(ExitKind::Code(0)), false, t0);
        assert_eq!(life.state, State::Done);
        assert!(life.ready, "a done oneshot lets its dependents start");
        assert!(check::hooks(&fx).is_empty(), "success is no death");
        assert!(fx.contains(&Effect::RecordOnce) && fx.contains(&Effect::Release));
    }

    #[test]
    fn an_exit_during_a_requested_stop_completes_it_and_restarts_nothing() {
        let t0 = Instant::now();
        let r = daemon("worker");
        let mut life = running(PID, t0);
        life.state = State::Stopping {
            pid: Pid::from_raw(PID),
            kill_at: Some(t0 + 30 * S),
        };
        life.probe_pid = Some(Pid::from_raw(77));
        let (life, fx) = decide_exit(life, &r, died(ExitKind::Signal(15)), false, t0 + S);
        assert_eq!(life.state, State::Stopped);
        assert_eq!(life.restarts, 0);
        assert!(check::hooks(&fx).is_empty(), "a stop asked for is no death");
        assert_eq!(
            check::kills(&fx),
            [(PID, Signal::SIGKILL), (77, Signal::SIGKILL)]
        );
        assert_eq!(fx.last(), Some(&Effect::FinishRequestedStop));
        // While the daemon shuts down, any exit is a stop.
        let (life, fx) = decide_exit(running(PID, t0), &r, died(ExitKind::Code(1)), true, t0 + S);
        assert_eq!(life.state, State::Stopped);
        assert_eq!(fx.last(), Some(&Effect::Release));
    }

    #[test]
    fn recent_exits_keep_the_newest_few() {
        let t0 = Instant::now();
        let r = daemon("worker");
        let (life, _) = deaths(&r, running(PID, t0), t0, 20 * S, RECENT_EXITS + 3);
        assert_eq!(life.recent_exits.len(), RECENT_EXITS);
    }
}
