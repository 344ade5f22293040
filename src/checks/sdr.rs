//! The multicore-SDR settings as the proofs and venus-sealer read them.
//! The proofs take any `config` 0.10 boolean (`1`, `true`, `on`, `yes`, in
//! any case) and panic on anything else (storage-proofs-core 11.1.1
//! `settings.rs`: `SETTINGS` is built with `.expect("invalid
//! configuration")`); venus-sealer's scheduler, in the worker, sees
//! multicore SDR only for exactly `"1"` (`storiface/resources.go`
//! `getSDRThreads`) and parses the producers with `strconv.Atoi`.

use crate::config::{Role, ServiceConfig, ServiceKind, Task};
use crate::plan::sdr::proofs_bool;
use crate::plan::ServicePlan;
use crate::util::diag::Diagnostics;

const MULTICORE: &str = "FIL_PROOFS_USE_MULTICORE_SDR";
const PRODUCERS: &str = "FIL_PROOFS_MULTICORE_SDR_PRODUCERS";

/// Checks the two settings in the environment of a sealer or worker.
pub fn settings(s: &ServiceConfig, p: &ServicePlan, diags: &mut Diagnostics) {
    if s.kind != ServiceKind::Daemon || !matches!(s.role, Role::Sealer | Role::Worker) {
        return;
    }
    let name = &p.name;
    if let Some(v) = p.env.get(MULTICORE) {
        let at = super::venus::env_span(s, MULTICORE);
        match proofs_bool(v) {
            None => diags.error(at, format!(
                "{MULTICORE}={v} of `{name}` is no boolean the proofs read (1, true, on, yes / 0, false, off, no): their settings fail and the proofs panic (\"invalid configuration\") at their first use; write \"1\" or \"0\""
            )),
            Some(true) if v != "1" && p.tasks.contains(&Task::PreCommit1) => diags.warning(at, format!(
                "{MULTICORE}={v} of `{name}` turns multicore SDR on in the proofs, but venus-sealer's scheduler sees it only as exactly \"1\" and then counts each PreCommit1 as 1 core instead of {PRODUCERS} + 1, so it gives the worker more PreCommit1s than its cores hold; write \"1\""
            )),
            Some(_) => {}
        }
    }
    if let Some(v) = p.env.get(PRODUCERS) {
        if v.parse::<usize>().is_err() {
            diags.error(super::venus::env_span(s, PRODUCERS), format!(
                "{PRODUCERS}={v} of `{name}` is not a whole number: the proofs panic (\"invalid configuration\") and venus-worker cannot report its resources to the sealer; write a number such as \"3\" (the default)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::util::diag::Severity;

    /// The findings about the settings of one PreCommit1 worker with `env`.
    fn findings(env: &str) -> Vec<(Severity, String)> {
        let text = format!(
            "[[service]]\nname = \"w\"\nrole = \"worker\"\ntasks = [\"PreCommit1\"]\ncommand = [\"/bin/w\", \"run\"]\nenv = {{ {env} }}\n"
        );
        crate::checks::testing::findings(&text, |config, plan, _, found| {
            super::settings(&config.services[0], &plan.services[0], found);
        })
        .into_iter()
        .map(|d| (d.severity, d.message))
        .collect()
    }

    #[test]
    fn what_the_proofs_reject_is_an_error_and_what_the_sealer_misreads_a_warning() {
        assert!(findings("FIL_PROOFS_USE_MULTICORE_SDR = \"1\"").is_empty());
        assert!(findings("FIL_PROOFS_USE_MULTICORE_SDR = \"0\"").is_empty());
        let f = findings("FIL_PROOFS_USE_MULTICORE_SDR = \"true\"");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, Severity::Warning);
        assert!(f[0].1.contains("sees it only as exactly \"1\""), "{f:?}");
        let f = findings("FIL_PROOFS_USE_MULTICORE_SDR = \"enabled\", FIL_PROOFS_MULTICORE_SDR_PRODUCERS = \"three\"");
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(
            f.iter()
                .all(|(s, m)| *s == Severity::Error && m.contains("panic")),
            "{f:?}"
        );
    }
}
