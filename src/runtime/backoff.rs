//! [`Backoff`]: the count of one service's young deaths in a row, and the
//! delay each death gets from it under a [`BackoffPolicy`]:
//!
//! delay(n) = 0                                  if the run lasted ≥ `stable_after`
//!          = min(initial × 2^(n−1), max)        for the n-th young death in a row
//!
//! A run of at least `stable_after` resets n to 0. The count saturates;
//! the delay never exceeds `max`. Pure; `exits.rs` and `start.rs` say which
//! events count as deaths.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long counts as steady.
    pub stable_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            stable_after: Duration::from_secs(10),
        }
    }
}

/// Consecutive young deaths of one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    young_deaths: u32,
}

impl Backoff {
    /// The count after `young_deaths` young deaths in a row (a handover
    /// carries it to the next image).
    pub fn after(young_deaths: u32) -> Self {
        Self { young_deaths }
    }

    pub fn young_deaths(&self) -> u32 {
        self.young_deaths
    }

    /// Records a death after a run of `ran` and returns how long to wait
    /// before the restart.
    pub fn on_death(&mut self, policy: &BackoffPolicy, ran: Duration) -> Duration {
        if ran >= policy.stable_after {
            self.young_deaths = 0;
            return Duration::ZERO;
        }
        self.young_deaths = self.young_deaths.saturating_add(1);
        let exp = self.young_deaths.saturating_sub(1).min(31);
        policy
            .initial
            .checked_mul(1u32 << exp)
            .map_or(policy.max, |d| d.min(policy.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_from_initial_to_the_cap_then_resets_after_a_steady_run() {
        let p = BackoffPolicy::default();
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| b.on_death(&p, S / 10).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.on_death(&p, 10 * S), Duration::ZERO);
        assert_eq!(b.on_death(&p, S / 10), S, "a steady run resets the count");
    }

    #[test]
    fn a_steady_first_run_restarts_at_once_and_huge_counts_do_not_overflow() {
        let p = BackoffPolicy::default();
        let mut b = Backoff::default();
        assert_eq!(b.on_death(&p, 3600 * S), Duration::ZERO);
        for _ in 0..100 {
            b.on_death(&p, Duration::ZERO);
        }
        assert_eq!(b.on_death(&p, Duration::ZERO), p.max);
    }
}
