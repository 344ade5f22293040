//! Pledge gating (`[timer.gate]`): before each tick a command says how
//! many sectors are in flight; the timer then runs only as many times as
//! keep that under the target, at most `max_per_tick`, `spacing` apart. A
//! `full` answer (or a failure) ends the tick, and `full` holds the next
//! one back for `cooldown`. Pure: `supervisor/gate.rs` runs the gate
//! command.

use std::time::{Duration, Instant};

use super::effect::Effect;
use super::timer::{take_pending, TimerState};
use crate::config::GateCount;
use crate::plan::GatePlan;
use crate::status::{ExitKind, GateStatus, RunResult};
use crate::util::clock::after;

/// How many sectors the gate command's output says are in flight:
/// `first-integer` takes the first number that is a word of its own (so
/// `wc -l` output, `count: 5` or a JSON `{"count": 5}` work, and the `1`
/// of `PC1` does not count); `lines` counts
/// the lines that are not blank. `None` when there is no integer.
pub fn count(output: &str, how: GateCount) -> Option<u64> {
    match how {
        GateCount::Lines => Some(output.lines().filter(|l| !l.trim().is_empty()).count() as u64),
        GateCount::FirstInteger => first_integer(output),
    }
}

/// The first run of digits that stands as a word of its own: not part of
/// a name like `PC1` or `sector2`.
fn first_integer(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let wordy = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let before = start.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i).copied();
        if !before.is_some_and(wordy) && !after.is_some_and(wordy) {
            return text[start..i].parse().ok();
        }
    }
    None
}

/// Runs this tick: what keeps `in_flight` under `target`, at most
/// `max_per_tick`.
pub fn runs(in_flight: u64, target: u32, max_per_tick: u32) -> u32 {
    let room = u64::from(target).saturating_sub(in_flight);
    u32::try_from(room.min(u64::from(max_per_tick))).unwrap_or(max_per_tick)
}

/// What the gate command's exit says (`timed_out`: killed past the
/// timer's timeout; `output`: what it printed), at Unix time `unix`.
pub fn answer(
    plan: &GatePlan,
    how: ExitKind,
    timed_out: Option<Duration>,
    output: &str,
    unix: u64,
) -> GateStatus {
    let in_flight = match (timed_out, how.success()) {
        (Some(after), _) => Err(format!(
            "no answer within {}",
            humantime::format_duration(after)
        )),
        (None, false) => Err(format!("the gate command {how}")),
        (None, true) => {
            count(output, plan.count).ok_or_else(|| "its output has no number".to_string())
        }
    };
    match in_flight {
        Ok(n) => GateStatus {
            at: unix,
            in_flight: Some(n),
            target: plan.target,
            runs: runs(n, plan.target, plan.max_per_tick),
            error: None,
        },
        Err(e) => failed(plan.target, e, unix),
    }
}

/// A gate that gave no answer: nothing runs this tick.
pub fn failed(target: u32, error: String, unix: u64) -> GateStatus {
    GateStatus {
        at: unix,
        in_flight: None,
        target,
        runs: 0,
        error: Some(error),
    }
}

/// The gate answered: its runs start one after the other, the first now.
pub fn answered(
    mut t: TimerState,
    status: GateStatus,
    shutting_down: bool,
) -> (TimerState, Vec<Effect>) {
    let log = match &status.error {
        Some(e) => Effect::warn(format!("gate: {e}; no run this tick")),
        None => Effect::info(status.line()),
    };
    t.pending = status.runs;
    t.gate = Some(status);
    let (t, mut fx) = take_pending(t, shutting_down);
    fx.insert(0, log);
    (t, fx)
}

/// After a run of a gated timer: the next one `spacing` later, unless
/// the tick is over. `full` (or a failure) ends the tick; `full` also
/// holds the next tick back for `cooldown`.
pub fn after_run(
    mut t: TimerState,
    plan: &GatePlan,
    result: &RunResult,
    now: Instant,
) -> (TimerState, Vec<Effect>) {
    let mut fx = Vec::new();
    match result {
        RunResult::Success if t.pending > 0 => t.next_pending = Some(after(now, plan.spacing.0)),
        RunResult::Success => {}
        RunResult::Full | RunResult::Failure(_) => {
            t.pending = 0;
            t.next_pending = None;
            if let (RunResult::Full, Some(c)) = (result, plan.cooldown) {
                let until = after(now, c.0);
                fx.push(Effect::info(format!(
                    "full: next tick in {c} at the earliest"
                )));
                t.due = Some(t.due.map_or(until, |d| d.max(until)));
            }
        }
    }
    (t, fx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::HumanDuration;
    use crate::runtime::effect::check;
    use crate::runtime::timer::tests::{pledge, run_at};
    use crate::runtime::timer::{finished, step_due, step_runs, Jitter};

    const S: Duration = Duration::from_secs(1);

    /// target 6, at most 2 a tick, 30 s apart, 30 min after `full`.
    fn gate() -> GatePlan {
        GatePlan {
            argv: vec!["count-pc1".into()],
            count: GateCount::FirstInteger,
            target: 6,
            max_per_tick: 2,
            spacing: HumanDuration::secs(30),
            cooldown: Some(HumanDuration::secs(1800)),
        }
    }

    #[test]
    fn the_answer_lets_through_what_keeps_the_target_and_no_more_than_max_per_tick() {
        let g = gate();
        let ok = ExitKind::Code(0);
        assert_eq!(answer(&g, ok, None, "in flight: 5\n", 0).runs, 1);
        assert_eq!(answer(&g, ok, None, "0", 0).runs, 2, "max_per_tick");
        assert_eq!(answer(&g, ok, None, "6", 0).runs, 0, "at target: hold");
        assert_eq!(answer(&g, ok, None, "9", 0).runs, 0, "above target: hold");
        let none = answer(&g, ok, None, "no sectors", 0);
        assert_eq!(none.runs, 0);
        assert_eq!(none.error.as_deref(), Some("its output has no number"));
        let failed = answer(&g, ExitKind::Code(2), None, "0", 0);
        assert_eq!(
            (failed.runs, failed.error.as_deref()),
            (0, Some("the gate command exit code 2"))
        );
        let slow = answer(&g, ExitKind::Signal(9), Some(120 * S), "0", 0);
        assert_eq!(slow.error.as_deref(), Some("no answer within 2m"));
    }

    #[test]
    fn a_gated_tick_asks_then_runs_its_runs_spacing_apart() {
        let t0 = Instant::now();
        let mut plan = pledge();
        plan.gate = Some(gate());
        let g = gate();
        let mut j = Jitter::seeded(1);
        let t = TimerState {
            due: Some(t0),
            ..TimerState::default()
        };
        let (t, fx) = step_due(t, &plan, true, &mut j, t0);
        assert_eq!(fx, [Effect::AskGate]);
        let (mut t, fx) = answered(t, answer(&g, ExitKind::Code(0), None, "4", 0), false);
        assert_eq!(t.pending, 1, "two runs: one now, one pending");
        assert!(check::starts(&fx));
        assert_eq!(
            check::logs(&fx),
            ["gate: 4 in flight, target 6: pledging 2"]
        );
        run_at(&mut t, &plan, 50, t0);
        let run = t.run.take().unwrap();
        let (mut t, _) = finished(t, &plan, ExitKind::Code(0), run.timed_out, "", 0, t0 + S);
        assert_eq!(t.next_pending, Some(t0 + 31 * S), "spacing after the run");
        assert!(t.busy(), "a tick meanwhile is skipped");
        let (tt, fx) = step_runs(t.clone(), t0 + 30 * S);
        assert!(fx.is_empty());
        t = tt;
        let (t, fx) = step_runs(t, t0 + 31 * S);
        assert_eq!(fx, [Effect::Start]);
        assert_eq!(t.pending, 0);
    }

    #[test]
    fn full_ends_the_tick_and_holds_the_next_back_for_cooldown() {
        let t0 = Instant::now();
        let mut plan = pledge();
        plan.gate = Some(gate());
        let t = TimerState {
            due: Some(t0 + 600 * S),
            pending: 1,
            ..TimerState::default()
        };
        let out = "too many sectors sealing";
        let (t, fx) = finished(t, &plan, ExitKind::Code(1), None, out, 0, t0);
        assert_eq!((t.pending, t.next_pending), (0, None));
        assert_eq!(t.due, Some(t0 + 1800 * S), "not before the cooldown");
        assert!(check::logs(&fx).contains(&"full: next tick in 30m at the earliest"));
        let (t, _) = finished(t, &plan, ExitKind::Code(1), None, "boom", 0, t0);
        assert_eq!(
            t.due,
            Some(t0 + 1800 * S),
            "a failure ends the tick, no cooldown"
        );
    }

    #[test]
    fn a_failed_gate_lets_nothing_through() {
        let t = TimerState::default();
        let (t, fx) = answered(t, failed(6, "boom".into(), 0), false);
        assert_eq!(t.pending, 0);
        assert!(!check::starts(&fx));
        assert_eq!(check::logs(&fx), ["gate: boom; no run this tick"]);
    }

    #[test]
    fn counts_read_the_first_integer_or_the_lines() {
        let first = GateCount::FirstInteger;
        assert_eq!(count("5\n", first), Some(5));
        assert_eq!(count("sectors in PC1: 12 (of 40)", first), Some(12));
        assert_eq!(count("{\"count\": 7}", first), Some(7));
        assert_eq!(count("none", first), None);
        assert_eq!(count("PC1 sector2 x9: 4", first), Some(4));
        let lines = GateCount::Lines;
        assert_eq!(
            count("12 PreCommit1\n13 PreCommit1\n\n  \n", lines),
            Some(2)
        );
        assert_eq!(count("", lines), Some(0));
    }

    #[test]
    fn runs_stop_at_the_target_and_the_tick_limit() {
        assert_eq!(runs(5, 6, 3), 1);
        assert_eq!(runs(0, 6, 3), 3);
        assert_eq!(runs(6, 6, 3), 0);
        assert_eq!(runs(9, 6, 3), 0, "above target holds");
    }

    #[test]
    fn status_lines() {
        let mut g = GateStatus {
            at: 0,
            in_flight: Some(5),
            target: 6,
            runs: 1,
            error: None,
        };
        assert_eq!(g.line(), "gate: 5 in flight, target 6: pledging 1");
        g.in_flight = Some(7);
        g.runs = 0;
        assert_eq!(g.line(), "gate: 7 in flight, target 6: holding");
    }
}
