//! How many cores one PreCommit1 with multicore SDR keeps busy.

use std::collections::BTreeMap;

use crate::config::Task;

/// `FIL_PROOFS_MULTICORE_SDR_PRODUCERS` when not set (the proofs' default).
const DEFAULT_SDR_PRODUCERS: usize = 3;

/// Cores per multicore-SDR unit (`FIL_PROOFS_MULTICORE_SDR_PRODUCERS + 1`)
/// when a service runs PreCommit1 with `FIL_PROOFS_USE_MULTICORE_SDR=1`.
pub fn multicore_sdr_unit(tasks: &[Task], env: &BTreeMap<String, String>) -> Option<usize> {
    let multicore = env
        .get("FIL_PROOFS_USE_MULTICORE_SDR")
        .is_some_and(|v| v == "1");
    (tasks.contains(&Task::PreCommit1) && multicore).then(|| {
        env.get("FIL_PROOFS_MULTICORE_SDR_PRODUCERS")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_SDR_PRODUCERS)
            + 1
    })
}
