//! What host preparation did, step by step, for the snapshot, `status` and
//! the metrics.

use serde::{Deserialize, Serialize};

use crate::util::cpulist::CpuSet;
use crate::util::units::ByteSize;

/// What each step did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<HugepagesReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlbfs: Option<StepReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governor: Option<GovernorReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_persistence: Option<StepReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepagesReport {
    /// Page size in KiB, as the kernel names its folders.
    pub size_kib: u64,
    pub nodes: Vec<NodePages>,
    /// The step as a whole failed (no node folders, a list that does not
    /// fit the nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePages {
    pub node: u32,
    pub asked: u64,
    /// What the kernel holds after the write (it grants fewer when memory
    /// is fragmented); `None` when it could not be read.
    pub granted: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    pub ok: bool,
    /// What happened: "mounted", "already mounted", "skipped: no GPU",
    /// or the error.
    pub note: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernorReport {
    pub governor: String,
    /// CPUs that have it now (set or already so).
    pub cpus: CpuSet,
    pub failed: Vec<CpuFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFailure {
    pub cpu: u32,
    pub error: String,
}

impl HugepagesReport {
    pub fn ok(&self) -> bool {
        self.error.is_none()
            && self
                .nodes
                .iter()
                .all(|n| n.error.is_none() && n.granted == Some(n.asked))
    }
}

impl Report {
    /// Whether every configured step did what was asked.
    pub fn ok(&self) -> bool {
        self.hugepages.as_ref().is_none_or(HugepagesReport::ok)
            && self.hugetlbfs.as_ref().is_none_or(|s| s.ok)
            && self.governor.as_ref().is_none_or(|g| g.failed.is_empty())
            && self.gpu_persistence.as_ref().is_none_or(|s| s.ok)
    }

    /// The failed steps, one phrase each (for logs and hooks).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(h) = self.hugepages.as_ref().filter(|h| !h.ok()) {
            out.push(format!("hugepages: {}", h.summary()));
        }
        if let Some(s) = self.hugetlbfs.as_ref().filter(|s| !s.ok) {
            out.push(format!("hugetlbfs: {}", s.note));
        }
        if let Some(g) = self.governor.as_ref().filter(|g| !g.failed.is_empty()) {
            for f in &g.failed {
                out.push(format!("governor on cpu{}: {}", f.cpu, f.error));
            }
        }
        if let Some(s) = self.gpu_persistence.as_ref().filter(|s| !s.ok) {
            out.push(format!("GPU persistence: {}", s.note));
        }
        out
    }

    /// One line for `status`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = &self.hugepages {
            parts.push(format!("hugepages {}", h.summary()));
        }
        if let Some(s) = &self.hugetlbfs {
            parts.push(format!("hugetlbfs {}", s.note));
        }
        if let Some(g) = &self.governor {
            let failed = if g.failed.is_empty() {
                String::new()
            } else {
                format!(", failed on {}", g.failed.len())
            };
            parts.push(format!("governor {} on {}{failed}", g.governor, g.cpus));
        }
        if let Some(s) = &self.gpu_persistence {
            parts.push(format!("GPU persistence {}", s.note));
        }
        parts.join(" · ")
    }
}

impl HugepagesReport {
    /// `2MiB: node0 98/100, node1 100/100`.
    pub fn summary(&self) -> String {
        let size = ByteSize(self.size_kib.saturating_mul(1024));
        if let Some(e) = &self.error {
            return format!("{size}: {e}");
        }
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match (&n.error, n.granted) {
                (Some(e), _) => format!("node{} failed: {e}", n.node),
                (None, Some(g)) => format!("node{} {g}/{}", n.node, n.asked),
                (None, None) => format!("node{} ?/{}", n.node, n.asked),
            })
            .collect();
        format!("{size}: {}", nodes.join(", "))
    }
}
