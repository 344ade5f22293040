//! The supervisor's side of pledge gating: the gate command runs at each
//! tick of a gated timer, then the runs it lets through start one after
//! another, `spacing` apart (a deadline in the loop). A `full` answer ends
//! the tick and holds the next one back for `cooldown`.

use std::time::Instant;

use nix::sys::signal::Signal;
use tracing::{info, warn};

use super::{kill_group, spawn_piped, Owner, Run, Supervisor};
use crate::runtime::gate;
use crate::status::RunResult;
use crate::status::{ExitKind, GateStatus};
use crate::util::clock::unix_now;

impl Supervisor {
    /// A gated timer's tick: ask how many sectors are in flight.
    pub(super) fn ask_gate(&mut self, i: usize, now: Instant) {
        let t = &mut self.timers[i];
        let Some(g) = &t.plan.gate else { return };
        match spawn_piped(&t.plan, &g.argv) {
            Ok(child) => {
                self.owners.insert(child.pid, Owner::Gate(i));
                t.asking = Some(Run::started(child, now, t.plan.timeout, None));
            }
            Err(e) => {
                warn!(timer = %t.plan.name, "gate: {e}; no run this tick");
                t.gate = Some(failed_gate(g.target, e.to_string()));
                self.dirty = true;
            }
        }
    }

    pub(super) fn gate_exited(&mut self, i: usize, how: ExitKind) {
        self.read_timer_output(i, true);
        let now = Instant::now();
        let t = &mut self.timers[i];
        let Some(ask) = t.asking.take() else { return };
        kill_group(ask.pid, Signal::SIGKILL);
        let Some(g) = &t.plan.gate else { return };
        let output = String::from_utf8_lossy(&ask.kept);
        let answer = match (ask.timed_out, how.success()) {
            (Some(after), _) => Err(format!(
                "no answer within {}",
                humantime::format_duration(after)
            )),
            (None, false) => Err(format!("the gate command {how}")),
            (None, true) => {
                gate::count(&output, g.count).ok_or_else(|| "its output has no number".to_string())
            }
        };
        self.dirty = true;
        let status = match answer {
            Ok(n) => GateStatus {
                at: unix_now(),
                in_flight: Some(n),
                target: g.target,
                runs: gate::runs(n, g.target, g.max_per_tick),
                error: None,
            },
            Err(e) => failed_gate(g.target, e),
        };
        match &status.error {
            Some(e) => warn!(timer = %t.plan.name, "gate: {e}; no run this tick"),
            None => info!(timer = %t.plan.name, "{}", status.line()),
        }
        t.pending = status.runs;
        t.gate = Some(status);
        if t.pending > 0 {
            self.run_pending(i, now);
        }
    }

    /// Starts the next run the gate let through.
    pub(super) fn run_pending(&mut self, i: usize, now: Instant) {
        let t = &mut self.timers[i];
        if t.pending == 0 || self.stopping {
            return;
        }
        t.pending -= 1;
        self.run_timer(i, now);
    }

    /// After a run of a gated timer: the next one `spacing` later, unless
    /// the tick is over. `full` (or a failure) ends the tick; `full` also
    /// holds the next tick back for `cooldown`.
    pub(super) fn after_gated_run(&mut self, i: usize, result: &RunResult, now: Instant) {
        let t = &mut self.timers[i];
        let Some(g) = &t.plan.gate else { return };
        match result {
            RunResult::Success if t.pending > 0 => t.next_pending = Some(now + g.spacing.0),
            RunResult::Success => {}
            RunResult::Full | RunResult::Failure(_) => {
                t.pending = 0;
                t.next_pending = None;
                if let (RunResult::Full, Some(c)) = (result, g.cooldown) {
                    let until = now + c.0;
                    info!(timer = %t.plan.name, "full: next tick in {c} at the earliest");
                    t.due = Some(t.due.map_or(until, |d| d.max(until)));
                }
            }
        }
    }
}

fn failed_gate(target: u32, error: String) -> GateStatus {
    GateStatus {
        at: unix_now(),
        in_flight: None,
        target,
        runs: 0,
        error: Some(error),
    }
}
