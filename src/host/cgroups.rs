//! Which cgroup hierarchy the host offers for confining services, read
//! from the mount table, venussup's own cgroup (`/proc/self/cgroup`) and
//! the hierarchy's `cgroup.controllers`.
//!
//! On cgroup v2 venussup works inside the cgroup it runs in (under systemd:
//! the unit's, delegated by `Delegate=yes`), never at the root of a host's
//! hierarchy: what it makes there stays part of its unit, which systemd
//! counts, kills and stops. That cgroup must offer the cpuset controller
//! (systemd delegates cpuset from version 244); where it does not, services
//! are held by their affinity mask and `check` and the log say why.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::util::fsroot::FsRoot;
use crate::util::mountinfo::{cgroup_mounts, MOUNTINFO};

/// Which cgroup hierarchy confines services on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "version", rename_all = "kebab-case")]
pub enum Hierarchy {
    /// cgroup v2 where venussup's own cgroup `own` (as `/proc/self/cgroup`
    /// names it, `/` for the root) offers the cpuset controller: one tree.
    V2 {
        mount: PathBuf,
        own: PathBuf,
        memory: bool,
    },
    /// cgroup v1: each controller has its own tree. `tracking` is
    /// venussup's own cgroup in the controller-less cgroup2 tree of a
    /// hybrid host (`/sys/fs/cgroup/unified`), where every service and
    /// timer run also gets a cgroup of its own, confined or not, so that
    /// venussup finds everything it started; `None` on a pure v1 host.
    V1 {
        cpuset: Option<PathBuf>,
        memory: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tracking: Option<PathBuf>,
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
        let controllers = |dir: &Path| {
            std::fs::read_to_string(dir.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let own = own_cgroup(fs_root);
        let mut undelegated = None;
        let mut tracking = None;
        for m in mounts.iter().filter(|m| m.unified) {
            let mount = fs_root.path(&m.point);
            let own_dir = mount.join(relative(&own));
            let offered = controllers(&own_dir);
            if offered.iter().any(|c| c == "cpuset") {
                return Hierarchy::V2 {
                    mount,
                    own,
                    memory: offered.iter().any(|c| c == "memory"),
                };
            }
            if controllers(&mount).iter().any(|c| c == "cpuset") {
                undelegated = Some(format!(
                    "cgroup v2 at {} offers the cpuset controller, but not to venussup's own cgroup {}: run venussup from units/venussup.service (Delegate=yes; systemd 244 or newer delegates cpuset) or in a cgroup delegated to it",
                    mount.display(),
                    own.display()
                ));
            }
            if tracking.is_none() && own_dir.is_dir() {
                tracking = Some(own_dir);
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
                why: undelegated.unwrap_or_else(|| "no cgroup v2 mount offers the cpuset controller, and there is no cgroup v1 cpuset or memory hierarchy".to_string()),
            },
            (cpuset, memory) => Hierarchy::V1 {
                cpuset,
                memory,
                tracking,
            },
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

    /// Where venussup makes its cgroups in each tree in use: on v2 its own
    /// cgroup, on v1 each hierarchy's root and its own cgroup in the
    /// tracking tree.
    pub fn roots(&self) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2 { mount, own, .. } => vec![mount.join(relative(own))],
            Hierarchy::V1 {
                cpuset,
                memory,
                tracking,
            } => cpuset
                .iter()
                .chain(memory)
                .chain(tracking)
                .cloned()
                .collect(),
            Hierarchy::None { .. } => Vec::new(),
        }
    }

    /// Where every service and timer run gets a cgroup of its own (the
    /// one tree of v2, the cgroup2 tree of a hybrid v1 host); `None` when
    /// nothing is left behind by a service is found but through its
    /// process group.
    pub fn tracking(&self) -> Option<PathBuf> {
        match self {
            Hierarchy::V2 { mount, own, .. } => Some(mount.join(relative(own))),
            Hierarchy::V1 { tracking, .. } => tracking.clone(),
            Hierarchy::None { .. } => None,
        }
    }
}

/// `cgroup v2 at /sys/fs/cgroup (cpuset, memory)`,
/// `cgroup v1 (cpuset at ..., memory at ...)`, `no cgroups (why)`.
impl fmt::Display for Hierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hierarchy::V2 { mount, own, memory } => write!(
                f,
                "cgroup v2 at {}{} (cpuset{})",
                mount.display(),
                if own == Path::new("/") {
                    String::new()
                } else {
                    format!(", inside {}", own.display())
                },
                if *memory { ", memory" } else { "" }
            ),
            Hierarchy::V1 {
                cpuset,
                memory,
                tracking,
            } => {
                let at = |what: &str, p: &Option<PathBuf>| match p {
                    Some(p) => format!("{what} at {}", p.display()),
                    None => format!("no {what}"),
                };
                write!(
                    f,
                    "cgroup v1 ({}, {}, {})",
                    at("cpuset", cpuset),
                    at("memory", memory),
                    match tracking {
                        Some(p) => format!(
                            "each service and timer run tracked in cgroup2 at {}",
                            p.display()
                        ),
                        None => format!("no cgroup2 to track services in: {UNTRACKED}"),
                    }
                )
            }
            Hierarchy::None { why } => write!(f, "no cgroups ({why}; {UNTRACKED})"),
        }
    }
}

/// What a host without a tracking cgroup does about a service's leftovers.
pub const UNTRACKED: &str = "what a service leaves behind is found through its process group only, so a child that calls setsid can outlive its service";

/// venussup's own cgroup v2, from the `0::PATH` line of
/// `/proc/self/cgroup` (under the fs root); `/` when there is none.
fn own_cgroup(fs_root: &FsRoot) -> PathBuf {
    std::fs::read_to_string(fs_root.path(OWN_CGROUP))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| PathBuf::from(p.trim()))
        })
        .filter(|p| p.is_absolute())
        // venussup itself, once it has moved into its leaf (a reload).
        .map(|p| match p.parent() {
            Some(own) if p.ends_with(SUPERVISOR_LEAF) => own.to_path_buf(),
            _ => p,
        })
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `own` as a path below the mount point.
fn relative(own: &Path) -> &Path {
    own.strip_prefix("/").unwrap_or(own)
}

/// The leaf of its own cgroup v2 venussup moves itself into before it
/// makes its services' cgroups beside it.
pub const SUPERVISOR_LEAF: &str = "supervisor";

/// Where the process's cgroups are listed (under the fs root).
pub const OWN_CGROUP: &str = "/proc/self/cgroup";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_a_tracking_tree_says_what_that_means() {
        let pure_v1 = Hierarchy::V1 {
            cpuset: Some("/sys/fs/cgroup/cpuset".into()),
            memory: None,
            tracking: None,
        };
        assert_eq!(pure_v1.tracking(), None);
        assert!(pure_v1.to_string().contains(UNTRACKED), "{pure_v1}");
        let none = Hierarchy::None { why: "test".into() };
        assert!(none.to_string().contains(UNTRACKED), "{none}");
        let hybrid = Hierarchy::V1 {
            cpuset: None,
            memory: None,
            tracking: Some("/sys/fs/cgroup/unified".into()),
        };
        assert!(!hybrid.to_string().contains(UNTRACKED), "{hybrid}");
        assert_eq!(hybrid.roots(), [PathBuf::from("/sys/fs/cgroup/unified")]);
        let v2 = Hierarchy::V2 {
            mount: "/sys/fs/cgroup".into(),
            own: "/system.slice/venussup.service".into(),
            memory: true,
        };
        assert_eq!(
            v2.tracking(),
            Some(PathBuf::from(
                "/sys/fs/cgroup/system.slice/venussup.service"
            ))
        );
    }
}
