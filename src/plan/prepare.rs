//! `[host.prepare]` as planned: what `check` shows and `run` does at every
//! start (`runtime::hostprep` does it).

use std::path::PathBuf;

use serde::Serialize;

use crate::config::values::ByteSize;
use crate::config::{PerNode, PrepareConfig};

/// `[host.prepare]` as planned: what `check` shows and `run` does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Prepare {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<Hugepages>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlbfs: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub governor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_persistence: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hugepages {
    pub size: ByteSize,
    pub per_node: PerNode,
}

impl Prepare {
    pub fn from_config(c: &PrepareConfig) -> Self {
        Self {
            hugepages: c.hugepages.as_ref().map(|h| Hugepages {
                size: *h.size.get_ref(),
                per_node: h.per_node.get_ref().clone(),
            }),
            hugetlbfs: c.hugetlbfs.as_ref().map(|m| m.get_ref().clone()),
            governor: c.governor.as_ref().map(|g| g.get_ref().clone()),
            gpu_persistence: c.gpu_persistence.as_ref().map(|g| g.get_ref().clone()),
        }
    }

    /// One line for `check`.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = &self.hugepages {
            let per = match &h.per_node {
                PerNode::All(n) => format!("{n} per NUMA node"),
                PerNode::Each(v) => format!(
                    "{} on nodes 0-{}",
                    v.iter().map(u64::to_string).collect::<Vec<_>>().join("/"),
                    v.len().saturating_sub(1)
                ),
            };
            parts.push(format!("hugepages {} × {per}", h.size));
        }
        if let Some(m) = &self.hugetlbfs {
            parts.push(format!("hugetlbfs at {}", m.display()));
        }
        if let Some(g) = &self.governor {
            parts.push(format!("governor {g} on the services' CPUs"));
        }
        if let Some(c) = &self.gpu_persistence {
            parts.push(format!("GPU persistence `{}`", c.join(" ")));
        }
        parts.join(" · ")
    }
}

/// Pages asked of each node: `per_node = N` asks N of every node; a list
/// gives node i its i-th entry and must have one per node.
pub fn asked(per_node: &PerNode, nodes: &[u32]) -> Result<Vec<(u32, u64)>, String> {
    match per_node {
        PerNode::All(n) => Ok(nodes.iter().map(|&node| (node, *n)).collect()),
        PerNode::Each(v) if v.len() == nodes.len() => {
            Ok(nodes.iter().copied().zip(v.iter().copied()).collect())
        }
        PerNode::Each(v) => Err(format!(
            "`per_node` lists {} nodes but the host has {} ({})",
            v.len(),
            nodes.len(),
            nodes
                .iter()
                .map(|n| format!("node{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Memory the huge pages take from what processes can use (for `plan`).
pub fn hugepage_bytes(h: &Hugepages, nodes: &[u32]) -> u64 {
    asked(&h.per_node, nodes)
        .unwrap_or_default()
        .iter()
        .map(|(_, n)| n.saturating_mul(h.size.0))
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_node_lists_must_fit_the_nodes() {
        assert_eq!(
            asked(&PerNode::Each(vec![3, 4]), &[0, 1]).unwrap(),
            vec![(0, 3), (1, 4)]
        );
        let e = asked(&PerNode::Each(vec![3]), &[0, 1]).unwrap_err();
        assert!(e.contains("lists 1 nodes but the host has 2"), "{e}");
        let h = Hugepages {
            size: ByteSize(1 << 30),
            per_node: PerNode::All(100),
        };
        assert_eq!(hugepage_bytes(&h, &[0, 1]), 200 << 30);
    }
}
