//! Planned stops that keep sealing work: drain first (its `command`: no
//! new tasks; its `quiet` probe polled until idle for `quiet_for`; its
//! `stop_command`), then the stop signal; the whole drain bounded by its
//! `timeout`. A crash restart never drains: only a stop venussup was asked
//! for comes here. Pure: `supervisor/drain.rs` runs the commands.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::effect::Effect;
use super::service::{Lifecycle, ServiceRules, State};
use super::stop::send_stop;
use crate::status::ExitKind;
use crate::util::clock::after;

/// Where a planned stop's drain is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Off,
    /// Its drain command runs (no new tasks).
    Command,
    /// Its quiet probe is polled until idle long enough.
    Quiet,
    /// Its stop command runs; the stop signal follows.
    StopCommand,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drain {
    pub phase: Phase,
    /// The drain command or quiet probe running now.
    pub helper: Option<Pid>,
    pub next_poll: Option<Instant>,
    /// Since when the quiet probe has said idle.
    pub quiet_since: Option<Instant>,
}

/// The drain of a planned stop begins: `Draining`, then its first phase.
/// Without a drain in its rules, the stop signal at once.
pub fn begin(
    mut life: Lifecycle,
    rules: &ServiceRules,
    pid: Pid,
    now: Instant,
) -> (Lifecycle, Vec<Effect>) {
    let Some(drain) = &rules.drain else {
        return send_stop(life, rules, pid, now);
    };
    let fx = vec![Effect::info(format!(
        "draining before the stop (at most {})",
        drain.timeout
    ))];
    life.state = State::Draining {
        pid,
        since: now,
        until: after(now, drain.timeout.0),
    };
    life.drain = Drain::default();
    enter(life, rules, Phase::Command, now, fx)
}

/// Enters `phase`, skipping those the drain has no command for; after the
/// last one, the stop signal.
fn enter(
    mut life: Lifecycle,
    rules: &ServiceRules,
    mut phase: Phase,
    now: Instant,
    mut fx: Vec<Effect>,
) -> (Lifecycle, Vec<Effect>) {
    let Some(drain) = &rules.drain else {
        return (life, fx);
    };
    let State::Draining { pid, .. } = life.state else {
        return (life, fx);
    };
    let run = |argv: &Option<Vec<String>>| Effect::RunDrainHelper {
        argv: argv.clone().unwrap_or_default(),
        capture: false,
    };
    loop {
        match phase {
            Phase::Command if drain.command.is_some() => {
                life.drain.phase = phase;
                fx.push(run(&drain.command));
                return (life, fx);
            }
            Phase::Command => phase = Phase::Quiet,
            Phase::Quiet if drain.quiet.is_some() => {
                life.drain.phase = phase;
                life.drain.next_poll = Some(now);
                return (life, fx);
            }
            Phase::Quiet => phase = Phase::StopCommand,
            Phase::StopCommand if drain.stop_command.is_some() => {
                life.drain.phase = phase;
                fx.push(run(&drain.stop_command));
                return (life, fx);
            }
            Phase::StopCommand | Phase::Off => {
                life.drain = Drain::default();
                let (life, more) = send_stop(life, rules, pid, now);
                fx.extend(more);
                return (life, fx);
            }
        }
    }
}

/// Due work of a draining service: its timeout, its next quiet poll.
pub fn step(mut life: Lifecycle, rules: &ServiceRules, now: Instant) -> (Lifecycle, Vec<Effect>) {
    let State::Draining { pid, since, until } = life.state else {
        return (life, Vec::new());
    };
    if until <= now {
        let mut fx = vec![Effect::warn(format!(
            "drain timed out after {}; stopping it anyway",
            humantime::format_duration(now.saturating_duration_since(since))
        ))];
        if let Some(h) = life.drain.helper.take() {
            fx.push(Effect::kill(h, Signal::SIGKILL));
        }
        life.drain = Drain::default();
        let (life, more) = send_stop(life, rules, pid, now);
        fx.extend(more);
        return (life, fx);
    }
    let d = &mut life.drain;
    if d.phase == Phase::Quiet && d.helper.is_none() && d.next_poll.is_some_and(|t| t <= now) {
        d.next_poll = None;
        let argv = rules
            .drain
            .as_ref()
            .and_then(|d| d.quiet.clone())
            .unwrap_or_default();
        return (
            life,
            vec![Effect::RunDrainHelper {
                argv,
                capture: true,
            }],
        );
    }
    (life, Vec::new())
}

/// A drain command could not be started. It must not hold the stop up
/// for ever: the quiet probe is tried again, the rest is skipped.
pub fn helper_failed(
    mut life: Lifecycle,
    rules: &ServiceRules,
    error: &str,
    now: Instant,
) -> (Lifecycle, Vec<Effect>) {
    let fx = vec![Effect::warn(format!("drain: {error}"))];
    let next = match life.drain.phase {
        Phase::Command => Phase::Quiet,
        Phase::Quiet => {
            let every = rules
                .drain
                .as_ref()
                .map_or(Duration::from_secs(10), |d| d.poll_every.0);
            life.drain.next_poll = Some(after(now, every));
            return (life, fx);
        }
        _ => Phase::Off,
    };
    enter(life, rules, next, now, fx)
}

/// A drain command ended (`output`: what the quiet probe printed): on to
/// the next phase, or poll again.
pub fn helper_exited(
    mut life: Lifecycle,
    rules: &ServiceRules,
    how: ExitKind,
    output: &str,
    now: Instant,
) -> (Lifecycle, Vec<Effect>) {
    life.drain.helper = None;
    if !matches!(life.state, State::Draining { .. }) {
        return (life, Vec::new());
    }
    let Some(drain) = &rules.drain else {
        return (life, Vec::new());
    };
    match life.drain.phase {
        Phase::Command => enter(life, rules, Phase::Quiet, now, Vec::new()),
        Phase::Quiet => {
            let idle = how.success()
                && drain
                    .quiet_output
                    .as_ref()
                    .is_none_or(|p| output.contains(p.as_str()));
            let d = &mut life.drain;
            if !idle {
                d.quiet_since = None;
                d.next_poll = Some(after(now, drain.poll_every.0));
                return (life, Vec::new());
            }
            let since = *d.quiet_since.get_or_insert(now);
            if now.duration_since(since) >= drain.quiet_for.0 {
                enter(
                    life,
                    rules,
                    Phase::StopCommand,
                    now,
                    vec![Effect::info("quiet; stopping")],
                )
            } else {
                d.next_poll = Some(after(now, drain.poll_every.0));
                (life, Vec::new())
            }
        }
        Phase::StopCommand | Phase::Off => enter(life, rules, Phase::Off, now, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::HumanDuration;
    use crate::plan::DrainPlan;
    use crate::runtime::effect::check;
    use crate::runtime::exits::{decide_exit, Exit};
    use crate::runtime::service::step as step_service;
    use crate::runtime::service::tests::{daemon, running, S};

    const PID: i32 = 7;

    fn argv(words: &str) -> Option<Vec<String>> {
        Some(words.split(' ').map(str::to_string).collect())
    }

    fn drained(quiet_for: u64) -> ServiceRules {
        let mut r = daemon("worker");
        r.drain = Some(DrainPlan {
            command: argv("venus-worker tasks disable"),
            quiet: argv("venus-worker wait-quiet"),
            quiet_output: Some("idle".into()),
            quiet_for: HumanDuration::secs(quiet_for),
            poll_every: HumanDuration::secs(30),
            timeout: HumanDuration::secs(3600),
            stop_command: argv("venus-worker stop"),
        });
        r
    }

    fn helper(fx: &[Effect]) -> Option<(String, bool)> {
        fx.iter().find_map(|e| match e {
            Effect::RunDrainHelper { argv, capture } => Some((argv.join(" "), *capture)),
            _ => None,
        })
    }

    /// The helper asked for by `fx` runs as pid 99.
    fn started(mut life: Lifecycle) -> Lifecycle {
        life.drain.helper = Some(Pid::from_raw(99));
        life
    }

    #[test]
    fn a_planned_stop_drains_polls_until_quiet_then_stops() {
        let t0 = Instant::now();
        let r = drained(60);
        let (life, fx) = begin(running(PID, t0), &r, Pid::from_raw(PID), t0);
        assert_eq!(
            helper(&fx),
            Some(("venus-worker tasks disable".into(), false))
        );
        assert!(check::kills(&fx).is_empty());
        let (life, fx) = helper_exited(started(life), &r, ExitKind::Code(0), "", t0 + S);
        assert!(fx.is_empty());
        // The quiet probe: at once, then every `poll_every`.
        let (life, fx) = step_service(life, &r, true, true, t0 + S);
        assert_eq!(helper(&fx), Some(("venus-worker wait-quiet".into(), true)));
        let (life, _) = helper_exited(
            started(life),
            &r,
            ExitKind::Code(0),
            "busy: 2 tasks",
            t0 + 2 * S,
        );
        let (life, fx) = step_service(life, &r, true, true, t0 + 31 * S);
        assert!(fx.is_empty(), "not before poll_every");
        let (life, fx) = step_service(life, &r, true, true, t0 + 32 * S);
        assert!(helper(&fx).is_some());
        // Idle, but not yet for `quiet_for`.
        let (life, _) = helper_exited(started(life), &r, ExitKind::Code(0), "idle", t0 + 40 * S);
        let (life, _) = step_service(life, &r, true, true, t0 + 70 * S);
        let (life, fx) = helper_exited(started(life), &r, ExitKind::Code(0), "idle", t0 + 100 * S);
        assert_eq!(check::logs(&fx), ["quiet; stopping"]);
        assert_eq!(helper(&fx), Some(("venus-worker stop".into(), false)));
        assert!(check::kills(&fx).is_empty(), "the stop command comes first");
        let (life, fx) = helper_exited(started(life), &r, ExitKind::Code(0), "", t0 + 101 * S);
        assert_eq!(check::kills(&fx), [(PID, Signal::SIGTERM)]);
        assert_eq!(life.state.name(), "stopping");
    }

    #[test]
    fn a_crash_restart_does_not_drain() {
        let t0 = Instant::now();
        let r = drained(0);
        let exit = Exit {
            pid: Pid::from_raw(PID),
            how: ExitKind::Signal(9),
            oom: false,
            fatal_line: None,
            unix: 0,
        };
        let (life, fx) = decide_exit(running(PID, t0), &r, exit, false, t0 + 3600 * S);
        assert!(!check::drains(&fx), "{fx:?}");
        assert!(check::starts(&fx));
        assert_eq!(life.drain, Drain::default());
    }

    #[test]
    fn a_drain_past_its_timeout_stops_the_service_anyway() {
        let t0 = Instant::now();
        let r = drained(0);
        let (life, _) = begin(running(PID, t0), &r, Pid::from_raw(PID), t0);
        let (life, fx) = step(started(life), &r, t0 + 3600 * S);
        assert_eq!(
            check::kills(&fx),
            [(99, Signal::SIGKILL), (PID, Signal::SIGTERM)],
            "the drain command is killed, the service gets its stop signal"
        );
        assert_eq!(
            check::logs(&fx)[0],
            "drain timed out after 1h; stopping it anyway"
        );
        assert_eq!(life.drain, Drain::default());
    }

    #[test]
    fn a_drain_command_that_cannot_start_does_not_hold_the_stop_up() {
        let t0 = Instant::now();
        let mut r = drained(0);
        if let Some(d) = r.drain.as_mut() {
            d.quiet = None;
        }
        let (life, _) = begin(running(PID, t0), &r, Pid::from_raw(PID), t0);
        let (life, fx) = helper_failed(life, &r, "no such file", t0);
        assert_eq!(helper(&fx), Some(("venus-worker stop".into(), false)));
        let (life, fx) = helper_failed(life, &r, "no such file", t0);
        assert_eq!(check::kills(&fx), [(PID, Signal::SIGTERM)]);
        assert_eq!(life.state.name(), "stopping");
    }
}
