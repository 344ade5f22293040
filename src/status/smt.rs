//! SMT on the host as the daemon reports it: what its start did, and the
//! host's state (which siblings are offline, and which of them venussup
//! took offline, by its record across restarts).

use serde::{Deserialize, Serialize};

use crate::util::cpulist::CpuSet;

/// One CPU the start could not take offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFailure {
    pub cpu: u32,
    pub error: String,
}

/// `smt = "off"` at this start, and the host as it was then.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtState {
    /// Siblings this start meant to take offline.
    pub to_offline: CpuSet,
    /// Those it took offline.
    pub offlined: CpuSet,
    pub failed: Vec<CpuFailure>,
    /// The step failed as a whole (topology unreadable, record unsaved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// CPUs offline on the host after the step.
    #[serde(default)]
    pub offline: CpuSet,
    /// Of those, the ones venussup took offline (this start or an earlier
    /// one): `venussup smt on` brings them back.
    #[serde(default)]
    pub offlined_by_venussup: CpuSet,
    /// Siblings still online after the step.
    #[serde(default)]
    pub siblings_online: CpuSet,
}

impl SmtState {
    /// The step did what `smt = "off"` asks: every sibling offline, none
    /// failed (the meaning of `venussup_smt_ok`).
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.failed.is_empty() && self.siblings_online.is_empty()
    }

    /// `SMT: 4 siblings offline (by venussup: 4)`, or what failed.
    pub fn line(&self) -> String {
        if let Some(e) = &self.error {
            return format!("SMT step failed: {e}");
        }
        let mut line = format!(
            "SMT: {} siblings offline (by venussup: {})",
            self.offline.len(),
            self.offlined_by_venussup.len()
        );
        if !self.failed.is_empty() {
            line.push_str(&format!(
                ", {} could not be taken offline",
                self.failed.len()
            ));
        }
        if !self.siblings_online.is_empty() {
            line.push_str(&format!(", siblings online: {}", self.siblings_online));
        }
        line
    }
}
