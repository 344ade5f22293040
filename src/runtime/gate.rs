//! Pledge gating (`[timer.gate]`): before each tick a command says how
//! many sectors are in flight; the timer then runs only as many times as
//! keep that under the target, at most `max_per_tick`, `spacing` apart.
//! Pure: the supervisor runs the commands and keeps the deadlines.

use crate::config::GateCount;

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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::GateStatus;

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
