//! Which cgroup hierarchy the host offers for confining services, read
//! from the mount table and the hierarchy's `cgroup.controllers`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::util::fsroot::FsRoot;
use crate::util::mountinfo::{cgroup_mounts, MOUNTINFO};

/// Which cgroup hierarchy confines services on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "version", rename_all = "kebab-case")]
pub enum Hierarchy {
    /// cgroup v2 whose root offers the cpuset controller: one tree.
    V2 { mount: PathBuf, memory: bool },
    /// cgroup v1: each controller has its own tree.
    V1 {
        cpuset: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
    /// Nothing usable, and why.
    None { why: String },
}

impl Hierarchy {
    /// Reads the mount table under `fs_root`. Paths are mapped under it.
    pub fn detect(fs_root: &FsRoot) -> Self {
        let path = fs_root.path(MOUNTINFO);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                return Hierarchy::None {
                    why: format!("cannot read {}: {e}", path.display()),
                }
            }
        };
        let mounts = cgroup_mounts(&text);
        let controllers = |point: &str| {
            std::fs::read_to_string(fs_root.path(point).join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        for m in mounts.iter().filter(|m| m.unified) {
            let offered = controllers(&m.point);
            if offered.iter().any(|c| c == "cpuset") {
                return Hierarchy::V2 {
                    mount: fs_root.path(&m.point),
                    memory: offered.iter().any(|c| c == "memory"),
                };
            }
        }
        let v1 = |controller: &str| {
            mounts
                .iter()
                .find(|m| m.has_v1(controller))
                .map(|m| fs_root.path(&m.point))
        };
        match (v1("cpuset"), v1("memory")) {
            (None, None) => Hierarchy::None {
                why: "no cgroup v2 mount offers the cpuset controller, and there is no cgroup v1 cpuset or memory hierarchy".to_string(),
            },
            (cpuset, memory) => Hierarchy::V1 { cpuset, memory },
        }
    }

    pub fn has_cpuset(&self) -> bool {
        matches!(
            self,
            Hierarchy::V2 { .. }
                | Hierarchy::V1 {
                    cpuset: Some(_),
                    ..
                }
        )
    }

    pub fn has_memory(&self) -> bool {
        matches!(
            self,
            Hierarchy::V2 { memory: true, .. }
                | Hierarchy::V1 {
                    memory: Some(_),
                    ..
                }
        )
    }

    /// The root of each tree in use.
    pub fn roots(&self) -> Vec<&Path> {
        match self {
            Hierarchy::V2 { mount, .. } => vec![mount.as_path()],
            Hierarchy::V1 { cpuset, memory } => {
                cpuset.iter().chain(memory).map(PathBuf::as_path).collect()
            }
            Hierarchy::None { .. } => Vec::new(),
        }
    }
}

/// `cgroup v2 at /sys/fs/cgroup (cpuset, memory)`,
/// `cgroup v1 (cpuset at ..., memory at ...)`, `no cgroups (why)`.
impl fmt::Display for Hierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hierarchy::V2 { mount, memory } => write!(
                f,
                "cgroup v2 at {} (cpuset{})",
                mount.display(),
                if *memory { ", memory" } else { "" }
            ),
            Hierarchy::V1 { cpuset, memory } => {
                let at = |what: &str, p: &Option<PathBuf>| match p {
                    Some(p) => format!("{what} at {}", p.display()),
                    None => format!("no {what}"),
                };
                write!(
                    f,
                    "cgroup v1 ({}, {})",
                    at("cpuset", cpuset),
                    at("memory", memory)
                )
            }
            Hierarchy::None { why } => write!(f, "no cgroups ({why})"),
        }
    }
}
