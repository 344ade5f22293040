//! Pledge gating at run time: the gate command of a gated timer's tick,
//! as a child whose output is read like a run's. What its answer lets
//! through, and the spacing and cooldown, are decided in `runtime/gate.rs`.

use std::time::Instant;

use nix::sys::signal::Signal;
use tracing::warn;

use super::timer::{spawn_piped, RunOutput};
use super::{kill_group, Owner, Supervisor};
use crate::runtime::confine::{Confinement, Helpers};
use crate::runtime::gate;
use crate::runtime::timer::Running;
use crate::status::ExitKind;
use crate::util::clock::unix_now;

impl Supervisor {
    /// A gated timer's tick: ask how many sectors are in flight.
    /// The command runs in the timer's cgroup, as its runs do.
    pub(super) fn ask_gate(&mut self, i: usize, now: Instant) {
        if self.timers[i].plan.gate.is_none() {
            return;
        }
        let tracked = self.tracking(Helpers::Timer(&self.timers[i].plan.name));
        let t = &mut self.timers[i];
        let Some(g) = &t.plan.gate else { return };
        let target = tracked.as_ref().and_then(Confinement::target);
        match spawn_piped(&t.plan, &g.argv, target) {
            Ok(child) => {
                self.owners.insert(child.pid, Owner::Gate(i));
                t.state.asking = Some(Running::new(child.pid, now, t.plan.timeout.map(|d| d.0)));
                t.gate_output = RunOutput {
                    pipe: child.output,
                    log: None,
                    kept: Vec::new(),
                };
            }
            Err(e) => {
                warn!(timer = %t.plan.name, "gate: {e}; no run this tick");
                t.state.gate = Some(gate::failed(g.target, e.to_string(), unix_now()));
                self.dirty = true;
            }
        }
    }

    /// The gate command of timer `i` ended: its answer decides the tick.
    pub(super) fn gate_exited(&mut self, i: usize, how: ExitKind) {
        self.read_timer_output(i, true);
        let now = Instant::now();
        let t = &mut self.timers[i];
        let Some(ask) = t.state.asking.take() else {
            return;
        };
        let output = std::mem::take(&mut t.gate_output);
        kill_group(ask.pid, Signal::SIGKILL);
        // What it left in the timer's cgroup goes with it (no run is in
        // there while the gate is asked).
        if t.state.run.is_none() {
            let name = Helpers::Timer(&t.plan.name).cgroup();
            self.empty_named(&name);
        }
        let t = &mut self.timers[i];
        let Some(g) = &t.plan.gate else { return };
        let text = String::from_utf8_lossy(&output.kept);
        let status = gate::answer(g, how, ask.timed_out, &text, unix_now());
        self.dirty = true;
        let stopping = self.stopping;
        self.timer_transition(i, now, |t, _| gate::answered(t, status, stopping));
    }
}
