//! Timers at run time: their runs (and gate commands) as children whose
//! output comes through a non-blocking pipe into the timer's log and a
//! bounded tail. When to run and what a result means is decided in
//! `runtime/timer.rs`.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;
use std::time::Instant;

use nix::sys::signal::Signal;
use tracing::{info, warn};

use super::{kill_group, Owner, Supervisor};
use crate::plan::TimerPlan;
use crate::runtime::adopt::{self, RecordedRun, RunRecord};
use crate::runtime::confine::{Confinement, Helpers};
use crate::runtime::logs;
use crate::runtime::state;
use crate::runtime::timer::{self, Running, TimerState};
use crate::status::ExitKind;
use crate::sys::spawn::{self, CgroupTarget, Output, SpawnSpec};
use crate::util::clock::unix_now;

/// The output of a run (or gate command) while it runs.
#[derive(Debug, Default)]
pub(super) struct RunOutput {
    /// The read end of its stdout and stderr; `None` at end of file.
    pub pipe: Option<File>,
    /// The timer's log file, where the output is copied.
    pub log: Option<File>,
    /// The last [`timer::OUTPUT_KEPT`] bytes, for matching.
    pub kept: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct Timer {
    pub plan: TimerPlan,
    /// The services in its `after`, by index.
    pub deps: Vec<usize>,
    pub state: TimerState,
    /// The output of `state.run`, and of `state.asking` (the gate).
    pub run_output: RunOutput,
    pub gate_output: RunOutput,
    /// The run as `timer-runs.json` records it, while it runs.
    pub recorded: Option<RecordedRun>,
}

impl Timer {
    pub fn new(plan: &TimerPlan) -> Self {
        Timer {
            plan: plan.clone(),
            deps: Vec::new(),
            state: TimerState::default(),
            run_output: RunOutput::default(),
            gate_output: RunOutput::default(),
            recorded: None,
        }
    }

    /// The output of its run, or of its gate command.
    pub fn output_of(&mut self, gate: bool) -> &mut RunOutput {
        if gate {
            &mut self.gate_output
        } else {
            &mut self.run_output
        }
    }
}

impl Supervisor {
    /// Timer `i`'s due work: timeouts, a gated tick's next run, the tick.
    pub(super) fn step_timer(&mut self, i: usize, now: Instant) {
        if self.stopping {
            return;
        }
        self.timer_transition(i, now, |t, _| timer::step_runs(t, now));
        let deps_ready = self.ready(&self.timers[i].deps);
        let t = &mut self.timers[i];
        let due = t.state.due;
        let (state, fx) = timer::step_due(
            std::mem::take(&mut t.state),
            &t.plan,
            deps_ready,
            &mut self.jitter,
            now,
        );
        t.state = state;
        if t.state.due != due {
            self.dirty = true;
        }
        self.apply(super::Subject::Timer(i), fx, now);
    }

    /// Starts a run of timer `i`, in the cgroup of the timer's runs where
    /// the host has one, and records it (`timer-runs.json`) so that a
    /// daemon started after this one was killed stops it before running
    /// another.
    pub(super) fn run_timer(&mut self, i: usize, now: Instant) {
        let tracked = self.tracking(Helpers::Timer(&self.timers[i].plan.name));
        let t = &mut self.timers[i];
        let target = tracked.as_ref().and_then(Confinement::target);
        match spawn_piped(&t.plan, &t.plan.argv, target) {
            Ok(child) => {
                info!(timer = %t.plan.name, pid = child.pid.as_raw(), "run started");
                if let Err(e) = logs::rotate_idle(&t.plan.log_file, self.log_max, self.log_keep) {
                    warn!(timer = %t.plan.name, "failed to rotate {}: {e}", t.plan.log_file.display());
                }
                let log = spawn::open_log(&t.plan.log_file)
                    .map_err(|e| warn!(timer = %t.plan.name, "{e}"))
                    .ok();
                self.owners.insert(child.pid, Owner::Timer(i));
                t.state.run = Some(Running::new(child.pid, now, t.plan.timeout.map(|d| d.0)));
                t.run_output = RunOutput {
                    pipe: child.output,
                    log,
                    kept: Vec::new(),
                };
                t.recorded =
                    state::start_time(Path::new("/proc"), child.pid.as_raw()).map(|start_time| {
                        RecordedRun {
                            pid: child.pid.as_raw(),
                            start_time,
                            cgroup: tracked.and_then(|c| c.cgroups().first().cloned()),
                        }
                    });
                self.record_runs();
            }
            Err(e) => {
                let e = e.to_string();
                self.dirty = true;
                self.timer_transition(i, now, |t, plan| {
                    timer::start_failed(t, plan, &e, unix_now())
                });
            }
        }
    }

    /// Writes `timer-runs.json`: the runs going now.
    fn record_runs(&self) {
        let runs: RunRecord = self
            .timers
            .iter()
            .filter_map(|t| Some((t.plan.name.clone(), t.recorded.clone()?)))
            .collect();
        if let Err(e) = adopt::write_runs(&self.state_dir, &runs) {
            warn!("{e}");
        }
    }

    /// Reads what a run (or the gate command) wrote, without blocking.
    pub(super) fn read_timer_output(&mut self, i: usize, gate: bool) {
        let out = self.timers[i].output_of(gate);
        let mut buf = [0u8; 8192];
        loop {
            let Some(pipe) = out.pipe.as_mut() else {
                return;
            };
            match pipe.read(&mut buf) {
                Ok(0) => {
                    out.pipe = None;
                    return;
                }
                Ok(n) => {
                    timer::keep_tail(&mut out.kept, &buf[..n]);
                    if let Some(log) = out.log.as_mut() {
                        let _ = std::io::Write::write_all(log, &buf[..n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    out.pipe = None;
                    return;
                }
            }
        }
    }

    /// A run of timer `i` ended.
    pub(super) fn timer_exited(&mut self, i: usize, how: ExitKind) {
        self.read_timer_output(i, false);
        let t = &mut self.timers[i];
        let Some(run) = t.state.run.take() else {
            return;
        };
        let output = std::mem::take(&mut t.run_output);
        // Whatever the run left in its group and its cgroup goes with it.
        kill_group(run.pid, Signal::SIGKILL);
        let name = Helpers::Timer(&t.plan.name).cgroup();
        self.empty_named(&name);
        if self.timers[i].recorded.take().is_some() {
            self.record_runs();
        }
        let text = String::from_utf8_lossy(&output.kept);
        let now = Instant::now();
        self.timer_transition(i, now, |t, plan| {
            timer::finished(t, plan, how, run.timed_out, &text, unix_now(), now)
        });
        self.dirty = true;
    }
}

/// Starts `argv` as timer `plan` says (its environment, user, folder),
/// output into a non-blocking pipe, born in `cgroup` (the timer's, where
/// the host has one): a run, or its gate command.
pub(super) fn spawn_piped(
    plan: &TimerPlan,
    argv: &[String],
    cgroup: Option<CgroupTarget<'_>>,
) -> Result<spawn::Spawned, spawn::SpawnError> {
    let identity = match &plan.user {
        Some(u) => Some(spawn::identity(u, plan.group.as_deref())?),
        None => None,
    };
    let child = spawn::spawn(SpawnSpec {
        argv,
        env: &plan.env,
        workdir: plan.workdir.as_deref(),
        identity: identity.as_ref(),
        umask: None,
        nofile: None,
        memlock: None,
        output: Output::Pipe,
        hook: None,
        cgroup,
        stdin: None,
        oom_score_adj: Some(0),
    })?;
    if let Some(out) = &child.output {
        let _ = nix::fcntl::fcntl(
            out,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    Ok(child)
}
