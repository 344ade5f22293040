//! Timers (the periodic pledge): when the next run is due (never two at
//! once: a slot due during a run is skipped and counted), a run past its
//! timeout, what a run's result means, and what the daemon's shutdown
//! does to a run. Pure: `supervisor/timer.rs` runs the command and reads
//! its output.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::effect::Effect;
use super::gate;
use crate::config::EventKind;
use crate::plan::TimerPlan;
use crate::status::{ExitKind, GateStatus, RunCounts, RunRecord, RunResult};
use crate::util::clock::after;

/// How much of a run's output is kept for matching and for status.
pub const OUTPUT_KEPT: usize = 64 * 1024;
/// A timer run asked to stop gets this long before SIGKILL.
pub const TIMER_STOP_GRACE: Duration = Duration::from_secs(10);
/// Results of each timer kept for status.
pub const TIMER_HISTORY: usize = 10;

/// A timer's run, or its gate command's, as the decisions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub pid: Pid,
    pub started: Instant,
    /// SIGKILL then (the timer's `timeout`, or the grace at shutdown).
    pub kill_at: Option<Instant>,
    /// It was killed for running past its `timeout`, after this long.
    pub timed_out: Option<Duration>,
}

impl Running {
    pub fn new(pid: Pid, now: Instant, timeout: Option<Duration>) -> Self {
        Self {
            pid,
            started: now,
            kill_at: timeout.map(|d| after(now, d)),
            timed_out: None,
        }
    }
}

/// The part of a timer its decisions read and change.
#[derive(Debug, Clone, Default)]
pub struct TimerState {
    /// The next tick; `None` until its `after` services are ready.
    pub due: Option<Instant>,
    pub run: Option<Running>,
    /// The gate command of this tick, while it runs.
    pub asking: Option<Running>,
    /// Runs the gate let through that have not started yet, and when the
    /// next one may (`spacing` after the last).
    pub pending: u32,
    pub next_pending: Option<Instant>,
    pub counts: RunCounts,
    /// The last results, newest first.
    pub last: VecDeque<RunRecord>,
    /// The gate's last answer.
    pub gate: Option<GateStatus>,
}

impl TimerState {
    /// In the middle of a tick: asking the gate, running, or waiting to
    /// run again.
    pub fn busy(&self) -> bool {
        self.run.is_some() || self.asking.is_some() || self.next_pending.is_some()
    }

    /// Its deadlines: the next tick, a kill, the next run of a gated tick.
    pub fn deadlines(&self) -> [Option<Instant>; 4] {
        [
            self.due,
            self.run.and_then(|r| r.kill_at),
            self.asking.and_then(|r| r.kill_at),
            self.next_pending,
        ]
    }

    fn record(&mut self, result: RunResult, unix: u64) {
        match result {
            RunResult::Success => self.counts.success += 1,
            RunResult::Full => self.counts.full += 1,
            RunResult::Failure(_) => self.counts.failure += 1,
        }
        self.last.push_front(RunRecord { at: unix, result });
        self.last.truncate(TIMER_HISTORY);
    }
}

/// Runs (or gate commands) past the timer's `timeout` are killed, and the
/// next run a gate let through starts when its `spacing` is over.
pub fn step_runs(mut t: TimerState, now: Instant) -> (TimerState, Vec<Effect>) {
    let mut fx = Vec::new();
    for run in [&mut t.run, &mut t.asking].into_iter().flatten() {
        if run.kill_at.is_some_and(|k| k <= now) && run.timed_out.is_none() {
            run.timed_out = Some(now.saturating_duration_since(run.started));
            fx.push(Effect::warn(
                "run still going after its timeout; killing it",
            ));
            fx.push(Effect::kill(run.pid, Signal::SIGKILL));
            run.kill_at = None;
        }
    }
    if t.next_pending.is_some_and(|at| at <= now) && t.run.is_none() {
        t.next_pending = None;
        let (next, more) = take_pending(t, false);
        t = next;
        fx.extend(more);
    }
    (t, fx)
}

/// The tick: once its `after` services are ready the first one is an
/// interval away; then each one due is run (through its gate, if it has
/// one), or skipped and counted while the last is still going.
pub fn step_due(
    mut t: TimerState,
    plan: &TimerPlan,
    deps_ready: bool,
    jitter: &mut Jitter,
    now: Instant,
) -> (TimerState, Vec<Effect>) {
    let first = t.due.is_none();
    let from = match t.due {
        None if deps_ready => now,
        Some(due) if due <= now => due,
        _ => return (t, Vec::new()),
    };
    let spread = plan.jitter.map_or(Duration::ZERO, |j| j.0);
    t.due = Some(next_due(from, plan.every.0, spread, jitter.next(), now));
    if first {
        return (t, Vec::new());
    }
    let fx = if t.busy() {
        t.counts.skipped += 1;
        vec![Effect::warn(
            "due while the last run is still going; skipped",
        )]
    } else if deps_ready && plan.gate.is_some() {
        vec![Effect::AskGate]
    } else if deps_ready {
        vec![Effect::Start]
    } else {
        Vec::new()
    };
    (t, fx)
}

/// The next run a gate let through, unless the daemon stops.
pub fn take_pending(mut t: TimerState, shutting_down: bool) -> (TimerState, Vec<Effect>) {
    if t.pending == 0 || shutting_down {
        return (t, Vec::new());
    }
    t.pending -= 1;
    (t, vec![Effect::Start])
}

/// A run ended (`timed_out`: killed past its timeout): its result
/// counted, a gated tick goes on or ends, a failure told to the hooks.
#[allow(clippy::too_many_arguments)]
pub fn finished(
    t: TimerState,
    plan: &TimerPlan,
    how: ExitKind,
    timed_out: Option<Duration>,
    output: &str,
    unix: u64,
    now: Instant,
) -> (TimerState, Vec<Effect>) {
    let result = classify(
        how,
        timed_out,
        output,
        &plan.full_output,
        &plan.full_exit_codes,
    );
    let mut fx = vec![match &result {
        RunResult::Failure(r) => Effect::warn(format!("run failed: {r}")),
        r => Effect::info(format!("run finished: {}", r.name())),
    }];
    let failure = match &result {
        RunResult::Failure(r) => Some(format!("{} failed: {r}", plan.name)),
        _ => None,
    };
    let (mut t, more) = match &plan.gate {
        Some(g) => gate::after_run(t, g, &result, now),
        None => (t, Vec::new()),
    };
    fx.extend(more);
    t.record(result, unix);
    if let Some(message) = failure {
        fx.push(Effect::Hook {
            event: EventKind::TimerFailure,
            exit: Some(how.to_string()),
            message,
        });
    }
    (t, fx)
}

/// A run could not be started: a failure, and the tick is over.
pub fn start_failed(
    mut t: TimerState,
    plan: &TimerPlan,
    error: &str,
    unix: u64,
) -> (TimerState, Vec<Effect>) {
    t.pending = 0;
    t.record(RunResult::Failure(error.to_string()), unix);
    let fx = vec![
        Effect::error(error),
        Effect::Hook {
            event: EventKind::TimerFailure,
            exit: None,
            message: format!("{} failed to start: {error}", plan.name),
        },
    ];
    (t, fx)
}

/// The daemon stops: no tick any more, the gate command killed, a run
/// asked to stop (SIGTERM) and killed after [`TIMER_STOP_GRACE`].
pub fn on_shutdown(mut t: TimerState, now: Instant) -> (TimerState, Vec<Effect>) {
    let mut fx = Vec::new();
    t.due = None;
    t.pending = 0;
    t.next_pending = None;
    if let Some(ask) = &t.asking {
        fx.push(Effect::kill(ask.pid, Signal::SIGKILL));
    }
    if let Some(run) = &mut t.run {
        fx.push(Effect::kill(run.pid, Signal::SIGTERM));
        run.kill_at = Some(after(now, TIMER_STOP_GRACE));
    }
    (t, fx)
}

/// During the shutdown: a run that outlived its grace is killed.
pub fn shutdown_grace_over(mut t: TimerState, now: Instant) -> (TimerState, Vec<Effect>) {
    let mut fx = Vec::new();
    if let Some(run) = &mut t.run {
        if run.kill_at.is_some_and(|k| k <= now) {
            fx.push(Effect::kill(run.pid, Signal::SIGKILL));
            run.kill_at = None;
        }
    }
    (t, fx)
}

/// Classifies a finished run. "Full" wins over the exit code, because
/// `venus-sealer sectors pledge` exits non-zero when it is full.
pub fn classify(
    how: ExitKind,
    timed_out: Option<Duration>,
    output: &str,
    full_output: &[String],
    full_exit_codes: &[i32],
) -> RunResult {
    if let Some(after) = timed_out {
        return RunResult::Failure(format!(
            "still running after {}; killed",
            humantime::format_duration(after)
        ));
    }
    let full_code = matches!(how, ExitKind::Code(c) if full_exit_codes.contains(&c));
    if full_code || full_output.iter().any(|p| output.contains(p.as_str())) {
        return RunResult::Full;
    }
    if how.success() {
        RunResult::Success
    } else {
        RunResult::Failure(how.to_string())
    }
}

/// The next due time after a run that was due at `due`: one interval later
/// plus up to `jitter`, skipping intervals already past (a run never
/// starts twice to catch up).
pub fn next_due(
    due: Instant,
    every: Duration,
    jitter: Duration,
    random: u64,
    now: Instant,
) -> Instant {
    let every = every.max(Duration::from_millis(1));
    let mut next = after(due, every);
    if next <= now {
        // Whole intervals already past, skipped in one step (not one turn
        // of a loop each: a long pause with a short `every` is many).
        let behind = now.duration_since(next).as_nanos() / every.as_nanos() + 1;
        let skip = u32::try_from(behind).map_or(Duration::MAX, |k| every.saturating_mul(k));
        next = after(next, skip);
    }
    let jitter_nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
    after(
        next,
        Duration::from_nanos(
            random
                .checked_rem(jitter_nanos.saturating_add(1))
                .unwrap_or(0),
        ),
    )
}

/// A small xorshift generator for jitter; no need for a crypto source.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Its state, to hand to the next image ([`Jitter::resume`]).
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn resume(state: u64) -> Self {
        Self(state.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Keeps the last [`OUTPUT_KEPT`] bytes of a run's output.
pub fn keep_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > OUTPUT_KEPT {
        let cut = buf.len() - OUTPUT_KEPT;
        buf.drain(..cut);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::values::HumanDuration;
    use crate::runtime::effect::check;

    const S: Duration = Duration::from_secs(1);

    /// `pledge` every 10 minutes, no jitter, `timeout` 2 minutes.
    pub fn pledge() -> TimerPlan {
        TimerPlan {
            name: "pledge".into(),
            argv: vec!["venus-sealer".into(), "sectors".into(), "pledge".into()],
            env: Default::default(),
            workdir: None,
            user: None,
            group: None,
            every: HumanDuration::secs(600),
            jitter: None,
            timeout: Some(HumanDuration::secs(120)),
            after: vec!["sealer".into()],
            full_output: full(),
            full_exit_codes: vec![],
            log_file: "/var/log/venussup/pledge.log".into(),
            gate: None,
        }
    }

    /// A run started at `at`, as the executor records it.
    pub fn run_at(t: &mut TimerState, plan: &TimerPlan, pid: i32, at: Instant) {
        t.run = Some(Running::new(
            Pid::from_raw(pid),
            at,
            plan.timeout.map(|d| d.0),
        ));
    }

    #[test]
    fn the_first_tick_is_an_interval_after_the_dependencies_are_ready() {
        let t0 = Instant::now();
        let plan = pledge();
        let mut j = Jitter::seeded(1);
        let (t, fx) = step_due(TimerState::default(), &plan, false, &mut j, t0);
        assert_eq!((t.due, fx.len()), (None, 0), "waits for its `after`");
        let (t, fx) = step_due(t, &plan, true, &mut j, t0);
        assert_eq!(t.due, Some(t0 + 600 * S));
        assert!(fx.is_empty(), "no run at once");
        let (t, fx) = step_due(t, &plan, true, &mut j, t0 + 599 * S);
        assert!(fx.is_empty());
        let (t, fx) = step_due(t, &plan, true, &mut j, t0 + 600 * S);
        assert_eq!(fx, [Effect::Start]);
        assert_eq!(t.due, Some(t0 + 1200 * S));
    }

    #[test]
    fn a_slot_due_during_a_run_is_skipped_and_counted() {
        let t0 = Instant::now();
        let plan = pledge();
        let mut j = Jitter::seeded(1);
        let mut t = TimerState {
            due: Some(t0 + 600 * S),
            ..TimerState::default()
        };
        run_at(&mut t, &plan, 50, t0 + 500 * S);
        let (t, fx) = step_due(t, &plan, true, &mut j, t0 + 600 * S);
        assert!(!check::starts(&fx), "never two runs at once: {fx:?}");
        assert_eq!(t.counts.skipped, 1);
        assert_eq!(t.due, Some(t0 + 1200 * S), "the rhythm is kept");
        assert_eq!(
            check::logs(&fx),
            ["due while the last run is still going; skipped"]
        );
    }

    #[test]
    fn a_run_past_its_timeout_is_killed_once_and_fails() {
        let t0 = Instant::now();
        let plan = pledge();
        let mut t = TimerState::default();
        run_at(&mut t, &plan, 50, t0);
        let (t, fx) = step_runs(t, t0 + 119 * S);
        assert!(fx.is_empty());
        let (t, fx) = step_runs(t, t0 + 120 * S);
        assert_eq!(check::kills(&fx), [(50, Signal::SIGKILL)]);
        let (mut t, fx) = step_runs(t, t0 + 130 * S);
        assert!(fx.is_empty(), "killed once");
        let run = t.run.take().unwrap();
        assert_eq!(run.timed_out, Some(120 * S));
        let (t, fx) = finished(t, &plan, ExitKind::Signal(9), run.timed_out, "", 0, t0);
        assert_eq!(t.counts.failure, 1);
        assert_eq!(check::hooks(&fx), [EventKind::TimerFailure]);
        assert!(matches!(&t.last[0].result, RunResult::Failure(r) if r.contains("2m")));
    }

    #[test]
    fn full_is_counted_and_is_no_failure() {
        let t0 = Instant::now();
        let plan = pledge();
        let out = "ERROR: too many sectors sealing";
        let (t, fx) = finished(
            TimerState::default(),
            &plan,
            ExitKind::Code(1),
            None,
            out,
            9,
            t0,
        );
        assert_eq!((t.counts.full, t.counts.failure), (1, 0));
        assert!(check::hooks(&fx).is_empty());
        assert_eq!(t.last[0].at, 9);
    }

    #[test]
    fn shutdown_asks_a_run_to_stop_then_kills_it_after_the_grace() {
        let t0 = Instant::now();
        let plan = pledge();
        let mut t = TimerState {
            due: Some(t0 + 600 * S),
            pending: 2,
            ..TimerState::default()
        };
        run_at(&mut t, &plan, 50, t0);
        let (t, fx) = on_shutdown(t, t0 + S);
        assert_eq!(check::kills(&fx), [(50, Signal::SIGTERM)]);
        assert_eq!((t.due, t.pending), (None, 0), "no tick any more");
        let (t, fx) = shutdown_grace_over(t, t0 + 10 * S);
        assert!(fx.is_empty());
        let (_, fx) = shutdown_grace_over(t, t0 + S + TIMER_STOP_GRACE);
        assert_eq!(check::kills(&fx), [(50, Signal::SIGKILL)]);
    }

    #[test]
    fn a_run_that_cannot_start_is_a_failure_and_ends_the_tick() {
        let plan = pledge();
        let t = TimerState {
            pending: 2,
            ..TimerState::default()
        };
        let (t, fx) = start_failed(t, &plan, "failed to start `venus-sealer`", 0);
        assert_eq!((t.pending, t.counts.failure), (0, 1));
        assert_eq!(check::hooks(&fx), [EventKind::TimerFailure]);
    }

    fn full() -> Vec<String> {
        vec!["too many sectors sealing".to_string()]
    }

    #[test]
    fn pledge_results() {
        assert_eq!(
            classify(
                ExitKind::Code(0),
                None,
                "Created CC sector: 12\n",
                &full(),
                &[]
            ),
            RunResult::Success
        );
        assert_eq!(
            classify(
                ExitKind::Code(1),
                None,
                "ERROR: too many sectors sealing\n",
                &full(),
                &[]
            ),
            RunResult::Full
        );
        assert_eq!(
            classify(ExitKind::Code(75), None, "", &full(), &[75]),
            RunResult::Full
        );
        assert_eq!(
            classify(ExitKind::Code(1), None, "connection refused", &full(), &[]),
            RunResult::Failure("exit code 1".into())
        );
        assert!(
            matches!(classify(ExitKind::Signal(9), Some(Duration::from_secs(120)), "", &full(), &[]), RunResult::Failure(r) if r.contains("2m"))
        );
    }

    #[test]
    fn next_runs_keep_the_rhythm_and_never_catch_up() {
        let t0 = Instant::now();
        let every = Duration::from_secs(600);
        assert_eq!(next_due(t0, every, Duration::ZERO, 7, t0), t0 + every);
        // A run that took 25 minutes: the missed slots are skipped.
        assert_eq!(
            next_due(t0, every, Duration::ZERO, 7, t0 + Duration::from_secs(1500)),
            t0 + 3 * every
        );
        let j = Duration::from_secs(30);
        let mut r = Jitter::seeded(42);
        for _ in 0..100 {
            let n = next_due(t0, every, j, r.next(), t0);
            assert!(n >= t0 + every && n <= t0 + every + j);
        }
    }

    #[test]
    fn output_tail_is_bounded() {
        let mut buf = Vec::new();
        keep_tail(&mut buf, &vec![b'a'; OUTPUT_KEPT]);
        keep_tail(&mut buf, b"end");
        assert_eq!(buf.len(), OUTPUT_KEPT);
        assert!(buf.ends_with(b"end"));
    }
}
