//! What the daemon keeps in its state folder:
//! - `venussup.lock`: one daemon per host (flock), holding its pid;
//! - `services.json`: pid and kernel start time of every running service,
//!   so a restarted daemon finds (and stops) what its predecessor left;
//! - `status.json`: the snapshot `status`, metrics and Zabbix read;
//! - `once/<name>.done`: oneshots with `once = true` that succeeded.
//!
//! Files are replaced atomically: written to a temporary file, then renamed.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "another venussup is already running for this host (pid {pid}, lock {path}); stop it first"
    )]
    Locked { path: PathBuf, pid: String },
    #[error("failed to {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the state folder (0700: it will hold the control socket).
pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create the state folder", dir))
}

/// Holds the host's lock while alive.
#[derive(Debug)]
pub struct Lock(Flock<File>);

impl Lock {
    /// The lock file's descriptor: the lock belongs to its open file
    /// description, so handing it to the next image of the process keeps
    /// the host locked throughout.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&*self.0)
    }

    /// The lock the previous image of this process held, on its handed
    /// descriptor (locking it again is a no-op: same open file description).
    pub fn adopt(fd: std::os::fd::OwnedFd, dir: &Path) -> Result<Self, StateError> {
        let path = dir.join("venussup.lock");
        Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock)
            .map(Lock)
            .map_err(|(_, errno)| StateError::Io {
                what: "keep the lock on",
                path,
                source: errno.into(),
            })
    }
}

/// Takes the one-daemon-per-host lock, or says who has it.
pub fn lock(dir: &Path) -> Result<Lock, StateError> {
    let path = dir.join("venussup.lock");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("open the lock file", &path))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            locked
                .set_len(0)
                .map_err(io_err("write the lock file", &path))?;
            writeln!(locked, "{}", std::process::id())
                .map_err(io_err("write the lock file", &path))?;
            Ok(Lock(locked))
        }
        Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => Err(StateError::Locked {
            pid: fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string(),
            path,
        }),
        Err((_, errno)) => Err(StateError::Io {
            what: "lock",
            path,
            source: errno.into(),
        }),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("replace", path))
}

/// A running service as the next daemon must recognise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPid {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: tells a reused pid from the same process.
    pub start_time: u64,
}

pub type PidRecord = BTreeMap<String, RecordedPid>;

pub fn read_pids(dir: &Path) -> PidRecord {
    fs::read_to_string(dir.join("services.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

pub fn write_pids(dir: &Path, pids: &PidRecord) -> Result<(), StateError> {
    let json = serde_json::to_vec(pids).unwrap_or_default();
    write_atomic(&dir.join("services.json"), &json)
}

/// The kernel start time of `pid` (clock ticks since boot), from `proc`.
pub fn start_time(proc_dir: &Path, pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(proc_dir.join(pid.to_string()).join("stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line; the command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Where a oneshot with `once = true` records its success.
pub fn once_marker(dir: &Path, name: &str) -> PathBuf {
    dir.join("once").join(format!("{name}.done"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("garbage"), None);
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(start_time(Path::new("/proc"), me).is_some());
    }

    #[test]
    fn the_lock_is_exclusive_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        match lock(dir.path()) {
            Err(StateError::Locked { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        assert!(lock(dir.path()).is_ok());
    }

    #[test]
    fn pid_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = PidRecord::new();
        r.insert(
            "sealer".into(),
            RecordedPid {
                pid: 7,
                start_time: 9,
            },
        );
        write_pids(dir.path(), &r).unwrap();
        assert_eq!(read_pids(dir.path()), r);
    }
}
