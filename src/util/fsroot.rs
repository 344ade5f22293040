//! The filesystem root everything about the host is read under.
//!
//! `--fs-root DIR` makes venussup read `DIR/sys/...` and `DIR/proc/...`
//! instead of the live ones, so a test or a simulated 128-core host never
//! touches the real machine. Every read of the host's facts (topology,
//! GPUs, memory, the cgroup mounts, SMT) and every sysfs write goes through
//! an [`FsRoot`]. What the supervisor reads about its own processes
//! (`/proc/self/fd`, `/proc/self/mountinfo` for mount events, `/proc/PID`
//! of its children) is the live `/proc`: those are venussup's children, not
//! the simulated host's.

use std::path::{Path, PathBuf};

/// A directory standing for `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRoot(PathBuf);

impl FsRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    /// The live machine.
    pub fn live() -> Self {
        Self(PathBuf::from("/"))
    }

    /// Whether this is the live machine's `/` (tests only: production code
    /// maps every path and never needs to ask).
    #[cfg(any(test, feature = "testkit"))]
    pub fn is_live(&self) -> bool {
        self.0 == Path::new("/")
    }

    pub fn root(&self) -> &Path {
        &self.0
    }

    /// Maps an absolute host path (`/sys/devices/system/cpu`) to its place
    /// under this root. A relative path is taken relative to the root too.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let host_path = host_path.as_ref();
        let relative = host_path.strip_prefix("/").unwrap_or(host_path);
        self.0.join(relative)
    }
}

impl Default for FsRoot {
    fn default() -> Self {
        Self::live()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_absolute_paths_under_the_root() {
        let root = FsRoot::new("/tmp/host");
        assert_eq!(
            root.path("/sys/devices/system/cpu"),
            PathBuf::from("/tmp/host/sys/devices/system/cpu")
        );
        assert_eq!(
            FsRoot::live().path("/proc/meminfo"),
            PathBuf::from("/proc/meminfo")
        );
        assert!(FsRoot::live().is_live());
        assert!(!root.is_live());
    }
}
