//! The wall clock, for what status shows.

use std::time::SystemTime;

/// Seconds since the Unix epoch, for what status shows.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
