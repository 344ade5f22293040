//! Stopping services: who may be stopped now (reverse dependency order:
//! a service once nothing that runs after it still has a process), the
//! stop signal, SIGKILL after `stop_timeout`, and what the daemon's own
//! shutdown does to services not running. Pure: `supervisor/stop.rs`
//! sends the signals and releases the cgroups.

use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::drain;
use super::effect::Effect;
use super::service::{Lifecycle, ServiceRules, State};
use crate::util::clock::after;

/// The services that may get their stop now, last started first: those
/// started (starting or running) that no service with a process depends
/// on. `services` holds each one's state and the indices it depends on.
pub fn stop_order(services: &[(&State, &[usize])]) -> Vec<(usize, Pid)> {
    (0..services.len())
        .rev()
        .filter_map(|i| {
            let pid = match services[i].0 {
                State::Starting { pid, .. } | State::Running { pid } => *pid,
                _ => return None,
            };
            let needed = services
                .iter()
                .any(|(state, deps)| deps.contains(&i) && state.pid().is_some());
            (!needed).then_some((i, pid))
        })
        .collect()
}

/// A stop venussup was asked for (or its own shutdown): drain first when
/// the service says how, else the stop signal at once.
pub fn planned_stop(
    life: Lifecycle,
    rules: &ServiceRules,
    pid: Pid,
    now: Instant,
) -> (Lifecycle, Vec<Effect>) {
    match &rules.drain {
        Some(_) => drain::begin(life, rules, pid, now),
        None => send_stop(life, rules, pid, now),
    }
}

/// The stop signal to its process group; SIGKILL follows at its stop
/// timeout.
pub fn send_stop(
    mut life: Lifecycle,
    rules: &ServiceRules,
    pid: Pid,
    now: Instant,
) -> (Lifecycle, Vec<Effect>) {
    life.probe_at = None;
    life.state = State::Stopping {
        pid,
        kill_at: Some(after(now, rules.stop_timeout)),
    };
    let fx = vec![
        Effect::info(format!("sending {}", rules.stop_signal.as_str())),
        Effect::kill(pid, rules.stop_signal),
    ];
    (life, fx)
}

/// Its stop timeout passed: SIGKILL, and no deadline after it.
pub fn escalate(mut life: Lifecycle, rules: &ServiceRules, pid: Pid) -> (Lifecycle, Vec<Effect>) {
    life.state = State::Stopping { pid, kill_at: None };
    let fx = vec![
        Effect::warn(format!(
            "still running {} after {}; sending SIGKILL",
            rules.stop_signal.as_str(),
            humantime::format_duration(rules.stop_timeout)
        )),
        Effect::kill(pid, Signal::SIGKILL),
    ];
    (life, fx)
}

/// The daemon stops: a ready probe still going is killed, and a service
/// not started yet (waiting, backing off, blocked) never will be.
pub fn on_shutdown(mut life: Lifecycle) -> (Lifecycle, Vec<Effect>) {
    let mut fx = Vec::new();
    if let Some(p) = life.probe_pid {
        fx.push(Effect::kill(p, Signal::SIGKILL));
    }
    if matches!(
        life.state,
        State::Waiting | State::Backoff { .. } | State::Blocked { .. }
    ) {
        life.state = State::Stopped;
    }
    (life, fx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::HumanDuration;
    use crate::plan::DrainPlan;
    use crate::runtime::effect::check;
    use crate::runtime::exits::{decide_exit, Exit};
    use crate::runtime::service::step;
    use crate::runtime::service::tests::{daemon, running, S};
    use crate::status::ExitKind;

    fn order(lives: &[Lifecycle], deps: &[Vec<usize>]) -> Vec<usize> {
        let view: Vec<(&State, &[usize])> = lives
            .iter()
            .zip(deps)
            .map(|(l, d)| (&l.state, d.as_slice()))
            .collect();
        stop_order(&view).into_iter().map(|(i, _)| i).collect()
    }

    fn exited(life: Lifecycle, pid: i32, now: Instant) -> Lifecycle {
        let exit = Exit {
            pid: Pid::from_raw(pid),
            how: ExitKind::Signal(15),
            oom: false,
            fatal_line: None,
            unix: 0,
        };
        decide_exit(life, &daemon("x"), exit, true, now).0
    }

    #[test]
    fn shutdown_stops_in_reverse_order_and_sigkills_after_stop_timeout() {
        let t0 = Instant::now();
        // sealer (0) ← worker-a (1), worker-b (2); `deps` says who needs whom.
        let deps = vec![vec![], vec![0], vec![0]];
        let rules = [daemon("sealer"), daemon("worker-a"), daemon("worker-b")];
        let mut lives: Vec<Lifecycle> = (0..3).map(|i| running(100 + i, t0)).collect();

        assert_eq!(
            order(&lives, &deps),
            [2, 1],
            "the workers first, last started first"
        );
        for i in [2, 1] {
            let pid = lives[i].state.pid().unwrap();
            let (life, fx) = planned_stop(lives[i].clone(), &rules[i], pid, t0);
            assert_eq!(check::kills(&fx), [(pid.as_raw(), Signal::SIGTERM)]);
            lives[i] = life;
        }
        assert!(
            order(&lives, &deps).is_empty(),
            "the sealer waits while a worker still has a process"
        );

        // worker-a exits on SIGTERM; worker-b ignores it.
        lives[1] = exited(lives[1].clone(), 101, t0 + S);
        let (life, fx) = step(lives[2].clone(), &rules[2], true, true, t0 + 29 * S);
        assert!(fx.is_empty(), "no SIGKILL before the stop timeout");
        let (life, fx) = step(life, &rules[2], true, true, t0 + 30 * S);
        assert_eq!(check::kills(&fx), [(102, Signal::SIGKILL)]);
        assert_eq!(
            life.state,
            State::Stopping {
                pid: Pid::from_raw(102),
                kill_at: None
            },
            "after SIGKILL nothing more to wait for"
        );
        let (life, fx) = step(life, &rules[2], true, true, t0 + 3600 * S);
        assert!(fx.is_empty(), "SIGKILL is sent once");
        assert!(order(&lives, &deps).is_empty());

        lives[2] = exited(life, 102, t0 + 30 * S);
        assert_eq!(order(&lives, &deps), [0], "then the sealer");
    }

    #[test]
    fn a_planned_stop_of_a_service_with_a_drain_drains_first() {
        let t0 = Instant::now();
        let mut r = daemon("worker");
        r.drain = Some(DrainPlan {
            command: Some(vec![
                "venus-worker".into(),
                "tasks".into(),
                "disable".into(),
            ]),
            quiet: None,
            quiet_output: None,
            quiet_for: HumanDuration::secs(0),
            poll_every: HumanDuration::secs(10),
            timeout: HumanDuration::secs(3600),
            stop_command: None,
        });
        let (life, fx) = planned_stop(running(7, t0), &r, Pid::from_raw(7), t0);
        assert!(check::drains(&fx), "{fx:?}");
        assert!(check::kills(&fx).is_empty(), "no signal before the drain");
        assert_eq!(life.state.name(), "draining");
    }

    #[test]
    fn shutdown_keeps_what_has_not_started_from_starting() {
        let t0 = Instant::now();
        for state in [
            State::Waiting,
            State::Backoff { until: t0 },
            State::Blocked { reason: "x".into() },
        ] {
            let life = Lifecycle {
                state,
                ..Lifecycle::default()
            };
            assert_eq!(on_shutdown(life).0.state, State::Stopped);
        }
        let mut starting = running(7, t0);
        starting.probe_pid = Some(Pid::from_raw(8));
        let (life, fx) = on_shutdown(starting);
        assert_eq!(check::kills(&fx), [(8, Signal::SIGKILL)]);
        assert_eq!(life.state.name(), "running", "stopped in order, not here");
    }
}
