//! cgroupfs, version-neutral: the one narrow place through which venussup
//! creates, writes, reads and removes cgroups. Every path comes from the
//! caller (an injectable root, as youki's controllers take theirs), every
//! error names the path and what was written, and files are opened without
//! being created: a cgroup file that is not there is an error, never a new
//! plain file.
//!
//! Making and removing a folder goes through a [`Kernel`]: the real one, or
//! (tests only: the `testkit` feature) `sim::SimKernel`, which fills a new
//! folder with the control files its parent has, the way cgroupfs does, so
//! tests run against a tempdir tree.

#[cfg(any(test, feature = "testkit"))]
pub mod sim;

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the kernel does for `mkdir` and `rmdir` in a cgroup hierarchy.
pub trait Kernel: fmt::Debug + Send + Sync {
    fn mkdir(&self, dir: &Path) -> io::Result<()>;
    fn rmdir(&self, dir: &Path) -> io::Result<()>;
}

/// The running kernel: plain `mkdir(2)` and `rmdir(2)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealKernel;

impl Kernel for RealKernel {
    fn mkdir(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)
    }

    fn rmdir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }
}

/// A cgroup operation that failed, with its path (and what was written).
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to write `{value}` to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to create the cgroup {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to remove the cgroup {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to open {} for the child to join: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: `{text}` is not a process id", path.display())]
    BadPid { path: PathBuf, text: String },
}

impl CgroupError {
    /// The io error behind it, if any.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            CgroupError::Write { source, .. }
            | CgroupError::Read { source, .. }
            | CgroupError::Create { source, .. }
            | CgroupError::Remove { source, .. }
            | CgroupError::Open { source, .. } => Some(source.kind()),
            CgroupError::BadPid { .. } => None,
        }
    }
}

/// The file every cgroup has: its processes, one pid a line.
pub const PROCS: &str = "cgroup.procs";
/// cgroup v1: its threads, one thread id a line.
pub const TASKS: &str = "tasks";

/// Access to cgroup folders through one [`Kernel`].
#[derive(Debug, Clone)]
pub struct Cgroupfs {
    kernel: Arc<dyn Kernel>,
}

impl Default for Cgroupfs {
    fn default() -> Self {
        Self::real()
    }
}

impl Cgroupfs {
    pub fn real() -> Self {
        Self::with_kernel(Arc::new(RealKernel))
    }

    pub fn with_kernel(kernel: Arc<dyn Kernel>) -> Self {
        Self { kernel }
    }

    /// Makes the cgroup `dir` unless it exists; `true` when it was made.
    pub fn create(&self, dir: &Path) -> Result<bool, CgroupError> {
        if dir.is_dir() {
            return Ok(false);
        }
        match self.kernel.mkdir(dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(CgroupError::Create {
                path: dir.to_path_buf(),
                source,
            }),
        }
    }

    /// Removes the cgroup `dir`; `false` when there was none.
    pub fn remove(&self, dir: &Path) -> Result<bool, CgroupError> {
        match self.kernel.rmdir(dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(CgroupError::Remove {
                path: dir.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes `value` to the control file `file` of `dir`, in one write.
    pub fn write(&self, dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = dir.join(file);
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|source| CgroupError::Write {
                path,
                value: value.to_string(),
                source,
            })
    }

    /// Writes `value` to `file` of `dir` unless the file says so already:
    /// a cgroupfs write can take a lock the whole host shares (cpuset's,
    /// the CPU hotplug lock), a read does not, and a restart rewrites what
    /// almost never changed.
    pub fn set(&self, dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
        match self.read(dir, file) {
            Ok(now) if now == value.trim() => Ok(()),
            _ => self.write(dir, file, value),
        }
    }

    /// The trimmed content of the control file `file` of `dir`.
    pub fn read(&self, dir: &Path, file: &str) -> Result<String, CgroupError> {
        let path = dir.join(file);
        fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|source| CgroupError::Read { path, source })
    }

    /// Opens `cgroup.procs` of `dir` for writing, close-on-exec: a child
    /// joins the cgroup by writing `0` to it between fork and exec.
    pub fn open_procs(&self, dir: &Path) -> Result<OwnedFd, CgroupError> {
        Self::open_join(dir.join(PROCS))
    }

    /// Opens the v1 `tasks` file of `dir` for writing, close-on-exec: a
    /// single-threaded child (between fork and exec) that writes `0` to it
    /// moves its only thread, so the whole process, without the global
    /// lock a write to `cgroup.procs` takes (an RCU grace period, ~8 ms).
    pub fn open_tasks(&self, dir: &Path) -> Result<OwnedFd, CgroupError> {
        Self::open_join(dir.join(TASKS))
    }

    /// Opens the cgroup `dir` itself, close-on-exec: the descriptor
    /// `clone3(CLONE_INTO_CGROUP)` starts a child in.
    pub fn open_dir(&self, dir: &Path) -> Result<OwnedFd, CgroupError> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_DIRECTORY)
            .open(dir)
            .map(OwnedFd::from)
            .map_err(|source| CgroupError::Open {
                path: dir.to_path_buf(),
                source,
            })
    }

    fn open_join(path: PathBuf) -> Result<OwnedFd, CgroupError> {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map(OwnedFd::from)
            .map_err(|source| CgroupError::Open { path, source })
    }

    /// The processes in the cgroup `dir`; none when there is no such cgroup.
    pub fn procs(&self, dir: &Path) -> Result<Vec<i32>, CgroupError> {
        let path = dir.join(PROCS);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CgroupError::Read { path, source }),
        };
        text.split_whitespace()
            .map(|t| {
                t.parse().map_err(|_| CgroupError::BadPid {
                    path: path.clone(),
                    text: t.to_string(),
                })
            })
            .collect()
    }

    /// The child cgroups of `dir` by name, sorted; none when there is no
    /// such cgroup.
    pub fn children(&self, dir: &Path) -> Result<Vec<String>, CgroupError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CgroupError::Read {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes `dir` and the empty cgroups below it, deepest first.
    pub fn remove_tree(&self, dir: &Path) -> Result<bool, CgroupError> {
        for child in self.children(dir)? {
            self.remove_tree(&dir.join(child))?;
        }
        self.remove(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_writes_only_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cpuset.cpus");
        fs::write(&file, "4-7\n").unwrap();
        let written = || fs::metadata(&file).unwrap().modified().unwrap();
        let before = written();
        let fs_ = Cgroupfs::real();
        fs_.set(dir.path(), "cpuset.cpus", "4-7").unwrap();
        assert_eq!(written(), before, "the same value is not written again");
        fs_.set(dir.path(), "cpuset.cpus", "0-3").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "0-3");
    }

    #[test]
    fn errors_name_the_path_and_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Cgroupfs::real();
        let err = fs.write(dir.path(), "cpuset.cpus", "0-31").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("failed to write `0-31` to "), "{text}");
        assert!(text.contains("cpuset.cpus: No such file"), "{text}");
        assert!(
            !dir.path().join("cpuset.cpus").exists(),
            "never creates a control file"
        );
    }

    #[test]
    fn procs_and_children_of_a_missing_cgroup_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Cgroupfs::real();
        let gone = dir.path().join("gone");
        assert!(fs.procs(&gone).unwrap().is_empty());
        assert!(fs.children(&gone).unwrap().is_empty());
        assert!(!fs.remove(&gone).unwrap());
        std::fs::write(dir.path().join(PROCS), "12\nx\n").unwrap();
        assert!(matches!(
            fs.procs(dir.path()),
            Err(CgroupError::BadPid { .. })
        ));
    }
}
