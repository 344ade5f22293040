//! Timers (the periodic pledge): when the next run is due, and what a run's
//! result means. Pure; the supervisor runs the command.

use std::time::{Duration, Instant};

use crate::status::{ExitKind, RunResult};

/// How much of a run's output is kept for matching and for status.
pub const OUTPUT_KEPT: usize = 64 * 1024;

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
    let mut next = due + every;
    while next <= now {
        next += every;
    }
    let jitter_nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
    next + Duration::from_nanos(
        random
            .checked_rem(jitter_nanos.saturating_add(1))
            .unwrap_or(0),
    )
}

/// A small xorshift generator for jitter; no need for a crypto source.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
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
mod tests {
    use super::*;

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
