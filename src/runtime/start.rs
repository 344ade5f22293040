//! Starting a service and waiting for it to be ready: what a start
//! attempt leads to (done already, blocked on a mount, spawned, failed to
//! spawn), what a ready probe's answer does, and the ready timeout. Pure:
//! `supervisor/start.rs` checks the host, spawns and probes.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::effect::Effect;
use super::service::{Lifecycle, ServiceRules, State};
use crate::util::clock::after;

/// How often a ready probe is tried while a service starts.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);

/// How a start attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A `once = true` oneshot that succeeded on this host before.
    AlreadyDone,
    /// Its `requires_mounts` that are not mounted.
    MissingMounts(Vec<String>),
    Spawned(Pid),
    /// It could not be spawned (or confined, or its user resolved).
    Failed(String),
}

/// What follows a start attempt at `now`.
pub fn decide_start(
    mut life: Lifecycle,
    rules: &ServiceRules,
    started: Started,
    now: Instant,
) -> (Lifecycle, Vec<Effect>) {
    let mut fx = Vec::new();
    match started {
        Started::AlreadyDone => {
            fx.push(Effect::info(
                "already done on this host (once = true); not run again",
            ));
            life.state = State::Done;
            life.ready = true;
        }
        Started::MissingMounts(missing) => {
            let reason = format!("waiting for {} to be mounted", missing.join(", "));
            if !matches!(&life.state, State::Blocked { reason: r } if *r == reason) {
                fx.push(Effect::warn(format!("blocked: {reason}")));
            }
            life.state = State::Blocked { reason };
        }
        Started::Spawned(pid) => {
            life.reason = None;
            life.run_started = Some(now);
            match rules.ready_timeout {
                Some(timeout) => {
                    life.state = State::Starting {
                        pid,
                        probe_until: after(now, timeout),
                    };
                    life.probe_at = Some(now);
                }
                None => {
                    life.state = State::Running { pid };
                    life.ready = true;
                }
            }
        }
        Started::Failed(e) => {
            let delay = life
                .backoff
                .on_death(&rules.restart.backoff, Duration::ZERO);
            fx.push(Effect::error(format!(
                "{e}; retrying in {}",
                humantime::format_duration(delay)
            )));
            life.reason = Some(e);
            life.state = State::Backoff {
                until: after(now, delay),
            };
        }
    }
    (life, fx)
}

/// A ready probe answered: ready, or try again in [`PROBE_EVERY`].
pub fn probe_answered(mut life: Lifecycle, ok: bool, now: Instant) -> (Lifecycle, Vec<Effect>) {
    let State::Starting { pid, .. } = life.state else {
        return (life, Vec::new());
    };
    if !ok {
        life.probe_at = Some(after(now, PROBE_EVERY));
        return (life, Vec::new());
    }
    life.state = State::Running { pid };
    life.ready = true;
    life.probe_at = None;
    (life, vec![Effect::info("ready")])
}

/// Its ready probe did not pass in time: killed, and its exit then goes
/// by its restart policy.
pub fn not_ready_in_time(
    mut life: Lifecycle,
    rules: &ServiceRules,
    pid: Pid,
) -> (Lifecycle, Vec<Effect>) {
    let timeout = rules
        .ready_timeout
        .map_or(String::new(), |t| humantime::format_duration(t).to_string());
    life.reason = Some(format!("not ready within {timeout}; killed"));
    life.probe_at = None;
    let fx = vec![
        Effect::error(format!("not ready within {timeout}; killing it")),
        Effect::kill(pid, Signal::SIGKILL),
    ];
    (life, fx)
}

/// Whether start-up is over: every service ready, or where it will stay
/// for a while (backing off, failed, blocked on a mount, or waiting for a
/// dependency in such a state). READY=1 waits for this, and only for
/// this: a crash-looping service must not hold the boot up for ever.
/// `services` holds each one's lifecycle and the indices it depends on.
pub fn all_settled(services: &[(&Lifecycle, &[usize])]) -> bool {
    let mut settled = vec![false; services.len()];
    loop {
        let mut changed = false;
        for (i, (life, deps)) in services.iter().enumerate() {
            if settled[i] {
                continue;
            }
            let now_settled = life.ready
                || match life.state {
                    State::Waiting => deps.iter().any(|&d| settled[d] && !services[d].0.ready),
                    State::Starting { .. } => false,
                    _ => true,
                };
            if now_settled {
                settled[i] = true;
                changed = true;
            }
        }
        if !changed {
            return settled.iter().all(|s| *s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::effect::check;
    use crate::runtime::service::step;
    use crate::runtime::service::tests::{daemon, S};

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    #[test]
    fn without_a_probe_started_is_ready() {
        let t0 = Instant::now();
        let (life, fx) = decide_start(
            Lifecycle::default(),
            &daemon("sealer"),
            Started::Spawned(pid(7)),
            t0,
        );
        assert_eq!(life.state, State::Running { pid: pid(7) });
        assert!(life.ready && fx.is_empty());
        assert_eq!(life.run_started, Some(t0));
    }

    #[test]
    fn with_a_probe_it_is_probed_every_200_ms_until_ready() {
        let t0 = Instant::now();
        let mut r = daemon("sealer");
        r.ready_timeout = Some(120 * S);
        let (life, _) = decide_start(Lifecycle::default(), &r, Started::Spawned(pid(7)), t0);
        assert!(!life.ready);
        let (life, fx) = step(life, &r, true, false, t0);
        assert_eq!(fx, [Effect::Probe], "the first probe is at once");
        let (life, _) = probe_answered(life, false, t0);
        let (life, fx) = step(life, &r, true, false, t0 + PROBE_EVERY / 2);
        assert!(fx.is_empty(), "not before 200 ms");
        let (life, fx) = step(life, &r, true, false, t0 + PROBE_EVERY);
        assert_eq!(fx, [Effect::Probe]);
        let (life, fx) = probe_answered(life, true, t0 + PROBE_EVERY);
        assert_eq!(life.state, State::Running { pid: pid(7) });
        assert!(life.ready);
        assert_eq!(check::logs(&fx), ["ready"]);
    }

    #[test]
    fn not_ready_within_the_probe_timeout_is_killed() {
        let t0 = Instant::now();
        let mut r = daemon("sealer");
        r.ready_timeout = Some(120 * S);
        let (life, _) = decide_start(Lifecycle::default(), &r, Started::Spawned(pid(7)), t0);
        let (life, fx) = step(life, &r, true, false, t0 + 120 * S);
        assert_eq!(check::kills(&fx), [(7, Signal::SIGKILL)]);
        assert_eq!(life.reason.as_deref(), Some("not ready within 2m; killed"));
        assert_eq!(life.probe_at, None);
    }

    #[test]
    fn a_failed_spawn_backs_off_like_a_young_death() {
        let t0 = Instant::now();
        let r = daemon("worker");
        let failed = || Started::Failed("failed to start `/opt/nowhere`".into());
        let (life, fx) = decide_start(Lifecycle::default(), &r, failed(), t0);
        assert_eq!(life.state, State::Backoff { until: t0 + S });
        assert_eq!(
            check::logs(&fx),
            ["failed to start `/opt/nowhere`; retrying in 1s"]
        );
        let (life, _) = decide_start(life, &r, failed(), t0 + S);
        assert_eq!(life.state, State::Backoff { until: t0 + 3 * S });
        assert_eq!(
            life.reason.as_deref(),
            Some("failed to start `/opt/nowhere`")
        );
    }

    #[test]
    fn a_missing_mount_blocks_and_is_logged_once() {
        let t0 = Instant::now();
        let r = daemon("worker");
        let missing = || Started::MissingMounts(vec!["/mnt/seal".into()]);
        let (life, fx) = decide_start(Lifecycle::default(), &r, missing(), t0);
        assert_eq!(
            life.state,
            State::Blocked {
                reason: "waiting for /mnt/seal to be mounted".into()
            }
        );
        assert_eq!(fx.len(), 1);
        let (_, fx) = decide_start(life, &r, missing(), t0);
        assert!(fx.is_empty(), "the same reason again is not logged again");
    }

    #[test]
    fn a_done_oneshot_is_not_run_again() {
        let (life, _) = decide_start(
            Lifecycle::default(),
            &daemon("attach"),
            Started::AlreadyDone,
            Instant::now(),
        );
        assert_eq!(life.state, State::Done);
        assert!(life.ready);
    }

    #[test]
    fn start_up_is_over_when_nothing_is_still_on_its_way() {
        let t0 = Instant::now();
        let ready = crate::runtime::service::tests::running(7, t0);
        let backing_off = Lifecycle {
            state: State::Backoff { until: t0 + S },
            ..Lifecycle::default()
        };
        let starting = Lifecycle {
            state: State::Starting {
                pid: pid(8),
                probe_until: t0 + S,
            },
            ..Lifecycle::default()
        };
        let waiting = Lifecycle::default();
        let no_deps: &[usize] = &[];
        assert!(all_settled(&[(&ready, no_deps)]));
        assert!(!all_settled(&[(&ready, no_deps), (&starting, no_deps)]));
        // A worker waiting for a sealer that crash-loops does not hold
        // READY=1 up; one waiting for a sealer still starting does.
        assert!(all_settled(&[(&backing_off, no_deps), (&waiting, &[0])]));
        assert!(!all_settled(&[(&starting, no_deps), (&waiting, &[0])]));
    }
}
