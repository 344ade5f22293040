//! Rules over the config and its plan that are not about TOML: what
//! operators get wrong with venus-sealer and venus-worker.

pub mod capacity;
pub mod gpus;
pub mod listen;
pub mod sdr;
pub mod secrets;
pub mod storage;
mod tasks;
pub mod venus;

/// What the checks' unit tests share: a config text parsed and planned on
/// an in-memory host where `/bin/w` (the tests' worker program) exists.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use crate::config::Config;
    use crate::host::lookups::InMemory;
    use crate::host::Host;
    use crate::plan::Plan;
    use crate::util::diag::{Diagnostic, Diagnostics};

    /// `check` run over `text` planned on the in-memory host: its findings,
    /// sorted (parse and plan findings are not among them).
    pub fn findings(
        text: &str,
        check: impl FnOnce(&Config, &Plan, &Host, &mut Diagnostics),
    ) -> Vec<Diagnostic> {
        let path = Path::new("t.toml");
        let host = Host::in_memory(InMemory::new().program("/bin/w"));
        let mut diags = Diagnostics::new(path, text);
        let config = crate::config::parse(path, text, &mut diags).unwrap();
        let plan = crate::plan::resolve(&config, &host, &mut diags);
        let mut found = Diagnostics::new(path, text);
        check(&config, &plan, &host, &mut found);
        found.into_sorted()
    }
}
