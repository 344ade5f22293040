//! node_exporter's textfile collector (`[host.metrics] textfile`): the
//! metrics rewritten on every state change, at most once a second. The
//! limit is a deadline in the loop, not a tick: an idle daemon writes
//! nothing.

use crate::util::clock::after;
use std::time::{Duration, Instant};

/// Shortest time between two writes.
pub const MIN_GAP: Duration = Duration::from_secs(1);

/// When the file may be written next.
#[derive(Debug, Default, Clone)]
pub struct Throttle {
    last: Option<Instant>,
    pending: bool,
}

impl Throttle {
    /// The state changed at `now`: true when the file is to be written
    /// now; otherwise the write waits for [`Throttle::due`].
    pub fn changed(&mut self, now: Instant) -> bool {
        if self.last.is_some_and(|l| now < after(l, MIN_GAP)) {
            self.pending = true;
            return false;
        }
        self.wrote(now);
        true
    }

    /// When a held-back write is due.
    pub fn due(&self) -> Option<Instant> {
        self.pending
            .then(|| self.last.map_or(Instant::now(), |l| after(l, MIN_GAP)))
    }

    /// True (once) when the held-back write is due at `now`.
    pub fn take_due(&mut self, now: Instant) -> bool {
        if self.due().is_some_and(|d| d <= now) {
            self.wrote(now);
            return true;
        }
        false
    }

    fn wrote(&mut self, now: Instant) {
        self.last = Some(now);
        self.pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_write_a_second_and_none_when_idle() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        assert!(t.changed(t0), "the first change writes at once");
        assert_eq!(t.due(), None, "idle: nothing due");
        assert!(!t.changed(t0 + Duration::from_millis(100)));
        assert!(
            !t.changed(t0 + Duration::from_millis(300)),
            "changes fold into one write"
        );
        assert_eq!(t.due(), Some(t0 + MIN_GAP));
        assert!(!t.take_due(t0 + Duration::from_millis(999)));
        assert!(t.take_due(t0 + MIN_GAP));
        assert_eq!(t.due(), None);
        assert!(
            t.changed(t0 + Duration::from_secs(5)),
            "a change after a quiet second writes at once"
        );
    }
}
