//! Planned stops that keep sealing work: drain first (no new tasks, wait
//! until the running ones are done), then the stop signal. A crash
//! restart never drains.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{info, warn};

use super::{kill_group, DrainPhase, DrainProgress, Owner, Supervisor};
use crate::runtime::service::State;
use crate::status::ExitKind;
use crate::sys::spawn::{self, Output};

impl Supervisor {
    /// A stop venussup was asked for: drain when the service says how,
    /// else the stop signal at once.
    pub(super) fn planned_stop(&mut self, i: usize, pid: Pid, now: Instant) {
        let Some(drain) = self.services[i].plan.drain.clone() else {
            self.send_stop(i, pid, now);
            return;
        };
        let s = &mut self.services[i];
        info!(service = %s.plan.name, "draining before the stop (at most {})", drain.timeout);
        s.state = State::Draining {
            pid,
            since: now,
            until: now + drain.timeout.0,
        };
        s.drain = DrainProgress::default();
        self.dirty = true;
        self.drain_enter(i, DrainPhase::Command, now);
    }

    /// Enters `phase`, skipping those the drain has no command for; after
    /// the last one, the stop signal.
    fn drain_enter(&mut self, i: usize, phase: DrainPhase, now: Instant) {
        let Some(drain) = self.services[i].plan.drain.clone() else {
            return;
        };
        let State::Draining { pid, .. } = self.services[i].state else {
            return;
        };
        let mut phase = phase;
        loop {
            match phase {
                DrainPhase::Command if drain.command.is_some() => {
                    self.services[i].drain.phase = phase;
                    self.drain_helper(i, drain.command.as_deref().unwrap_or_default(), false);
                    return;
                }
                DrainPhase::Command => phase = DrainPhase::Quiet,
                DrainPhase::Quiet if drain.quiet.is_some() => {
                    let d = &mut self.services[i].drain;
                    d.phase = phase;
                    d.next_poll = Some(now);
                    return;
                }
                DrainPhase::Quiet => phase = DrainPhase::StopCommand,
                DrainPhase::StopCommand if drain.stop_command.is_some() => {
                    self.services[i].drain.phase = phase;
                    self.drain_helper(i, drain.stop_command.as_deref().unwrap_or_default(), false);
                    return;
                }
                DrainPhase::StopCommand | DrainPhase::Off => {
                    self.services[i].drain = DrainProgress::default();
                    self.send_stop(i, pid, now);
                    return;
                }
            }
        }
    }

    /// Starts a drain command or quiet probe as the service's user, its
    /// output to the service's log (or, for the probe, a pipe).
    fn drain_helper(&mut self, i: usize, argv: &[String], capture: bool) {
        let s = &mut self.services[i];
        let output = if capture {
            Output::Pipe
        } else {
            Output::Append(s.plan.log_file.clone())
        };
        match spawn::spawn(s.side_process(argv, output)) {
            Ok(child) => {
                s.drain.helper = Some(child.pid);
                s.drain.helper_out = child.output;
                self.owners.insert(child.pid, Owner::Drain(i));
            }
            Err(e) => {
                // A drain that cannot run must not hold the stop up forever:
                // the quiet probe is tried again, the rest is skipped.
                warn!(service = %s.plan.name, "drain: {e}");
                let next = match s.drain.phase {
                    DrainPhase::Command => DrainPhase::Quiet,
                    DrainPhase::Quiet => {
                        s.drain.next_poll = Some(
                            Instant::now()
                                + s.plan
                                    .drain
                                    .as_ref()
                                    .map_or(Duration::from_secs(10), |d| d.poll_every.0),
                        );
                        return;
                    }
                    _ => DrainPhase::Off,
                };
                self.drain_enter(i, next, Instant::now());
            }
        }
    }

    /// Due work of a draining service: its timeout, its next quiet poll.
    pub(super) fn step_drain(&mut self, i: usize, now: Instant) {
        let State::Draining { pid, since, until } = self.services[i].state else {
            return;
        };
        if until <= now {
            let s = &mut self.services[i];
            warn!(service = %s.plan.name, "drain timed out after {}; stopping it anyway", humantime::format_duration(now.duration_since(since)));
            if let Some(h) = s.drain.helper.take() {
                kill_group(h, Signal::SIGKILL);
            }
            s.drain = DrainProgress::default();
            self.send_stop(i, pid, now);
            return;
        }
        let d = &self.services[i].drain;
        if d.phase == DrainPhase::Quiet
            && d.helper.is_none()
            && d.next_poll.is_some_and(|t| t <= now)
        {
            self.services[i].drain.next_poll = None;
            let argv = self.services[i]
                .plan
                .drain
                .as_ref()
                .and_then(|d| d.quiet.clone())
                .unwrap_or_default();
            self.drain_helper(i, &argv, true);
        }
    }

    /// A drain helper ended: on to the next phase, or poll again.
    pub(super) fn drain_helper_exited(&mut self, i: usize, how: ExitKind) {
        let now = Instant::now();
        let s = &mut self.services[i];
        s.drain.helper = None;
        let mut output = Vec::new();
        if let Some(mut out) = s.drain.helper_out.take() {
            let _ = nix::fcntl::fcntl(
                &out,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            let mut buf = [0u8; 8192];
            loop {
                match out.read(&mut buf) {
                    Ok(n) if n > 0 && output.len() < 1 << 20 => output.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    _ => break,
                }
            }
        }
        if !matches!(s.state, State::Draining { .. }) {
            return;
        }
        let Some(drain) = s.plan.drain.clone() else {
            return;
        };
        match s.drain.phase {
            DrainPhase::Command => self.drain_enter(i, DrainPhase::Quiet, now),
            DrainPhase::Quiet => {
                let text = String::from_utf8_lossy(&output);
                let idle = how.success()
                    && drain
                        .quiet_output
                        .as_ref()
                        .is_none_or(|p| text.contains(p.as_str()));
                let d = &mut s.drain;
                if !idle {
                    d.quiet_since = None;
                    d.next_poll = Some(now + drain.poll_every.0);
                    return;
                }
                let since = *d.quiet_since.get_or_insert(now);
                if now.duration_since(since) >= drain.quiet_for.0 {
                    info!(service = %s.plan.name, "quiet; stopping");
                    self.drain_enter(i, DrainPhase::StopCommand, now);
                } else {
                    d.next_poll = Some(now + drain.poll_every.0);
                }
            }
            DrainPhase::StopCommand | DrainPhase::Off => self.drain_enter(i, DrainPhase::Off, now),
        }
        self.dirty = true;
    }
}
