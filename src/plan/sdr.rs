//! How many cores one PreCommit1 with multicore SDR keeps busy.
//!
//! The proofs read `FIL_PROOFS_*` through the `config` crate 0.10
//! (storage-proofs-core 11.1.1 `settings.rs`, `Environment::with_prefix`),
//! whose `Value::into_bool` takes "1", "true", "on", "yes" as true and "0",
//! "false", "off", "no" as false, in any case; anything else fails the
//! settings, and the proofs panic ("invalid configuration") on first use.

use std::collections::BTreeMap;

use crate::config::Task;

/// `FIL_PROOFS_MULTICORE_SDR_PRODUCERS` when not set (the proofs' default).
const DEFAULT_SDR_PRODUCERS: usize = 3;

/// A `FIL_PROOFS_*` boolean as the proofs read it; `None` when they would
/// reject it.
pub fn proofs_bool(value: &str) -> Option<bool> {
    match value.to_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// Cores per multicore-SDR unit (`FIL_PROOFS_MULTICORE_SDR_PRODUCERS + 1`)
/// when a service runs PreCommit1 with `FIL_PROOFS_USE_MULTICORE_SDR` on.
pub fn multicore_sdr_unit(tasks: &[Task], env: &BTreeMap<String, String>) -> Option<usize> {
    let multicore = env
        .get("FIL_PROOFS_USE_MULTICORE_SDR")
        .is_some_and(|v| proofs_bool(v) == Some(true));
    (tasks.contains(&Task::PreCommit1) && multicore).then(|| {
        env.get("FIL_PROOFS_MULTICORE_SDR_PRODUCERS")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_SDR_PRODUCERS)
            + 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_spelling_the_proofs_take_as_true_turns_it_on() {
        for on in ["1", "true", "TRUE", "on", "Yes"] {
            let e = env(&[("FIL_PROOFS_USE_MULTICORE_SDR", on)]);
            assert_eq!(multicore_sdr_unit(&[Task::PreCommit1], &e), Some(4), "{on}");
        }
        for off in ["0", "false", "off", "no", "enabled", ""] {
            let e = env(&[("FIL_PROOFS_USE_MULTICORE_SDR", off)]);
            assert_eq!(multicore_sdr_unit(&[Task::PreCommit1], &e), None, "{off}");
        }
        assert_eq!(proofs_bool("enabled"), None);
        assert_eq!(proofs_bool("No"), Some(false));
        let e = env(&[
            ("FIL_PROOFS_USE_MULTICORE_SDR", "true"),
            ("FIL_PROOFS_MULTICORE_SDR_PRODUCERS", "5"),
        ]);
        assert_eq!(multicore_sdr_unit(&[Task::PreCommit1], &e), Some(6));
        assert_eq!(multicore_sdr_unit(&[Task::Commit], &e), None);
    }
}
