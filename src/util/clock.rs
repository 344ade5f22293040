//! The wall clock, for what status shows, and deadlines that saturate.

use std::time::{Duration, Instant, SystemTime};

/// Seconds since the Unix epoch, for what status shows.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The longest a deadline lies ahead: past any duration the config takes
/// (100 years) and far from where `Instant` arithmetic overflows.
pub const FAR: Duration = Duration::from_secs(200 * 365 * 24 * 3600);

/// `now + d`, saturating at `now + FAR`: no duration, however large (a
/// config value, a number handed over by an older image), can panic the
/// supervisor with "overflow when adding duration to instant". Every
/// deadline of the runtime is computed through this.
pub fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(FAR))
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_adds_and_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(after(now, Duration::MAX), now + FAR);
        assert_eq!(
            after(after(now, Duration::MAX), Duration::MAX),
            now + FAR + FAR
        );
        assert!(after(now, Duration::ZERO) == now);
    }
}
