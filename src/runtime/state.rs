//! What the daemon keeps in its state folder:
//! - `venussup.lock`: one daemon per host (flock), holding its pid;
//! - `services.json`: pid and kernel start time of every running service,
//!   so a restarted daemon finds (and stops) what its predecessor left;
//! - `status.json`: the snapshot `status`, metrics and Zabbix read;
//! - `once/<name>.done`: oneshots with `once = true` that succeeded.
//!
//! Files are replaced atomically: written to a temporary file, then renamed.
//!
//! Who may reach what: the folder is `0700 root:root`, or with `[host]
//! control_group` `0710 root:GROUP`, so that the group's members (the
//! Zabbix agent) can pass through it to the control socket (`0660
//! root:GROUP`) without listing it. Everything venussup keeps there is
//! root-only (files 0600, folders 0700), made so at every start, so that
//! passing through gives the group nothing but the socket. The GPU lock
//! folders (`gpuN-tmp`) belong to their services and keep their own modes.

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

/// Creates the state folder and gives it its owner and mode: `0700`, or
/// `0710` with `group` as its group (see the module's comment). Missing
/// parents are created with the usual mode (0755 under umask 022), so that
/// the group can reach the folder. An existing folder is set again, and
/// what an earlier venussup left readable in it is made root-only.
pub fn ensure_dir(dir: &Path, group: Option<nix::unistd::Gid>) -> Result<(), StateError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("create the state folder", dir))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(io_err("create the state folder", dir)(e))
        }
        _ => {}
    }
    // A folder that cannot be given to the group stays root-only: the
    // daemon runs, only the group is kept out (and told why).
    let given = group.filter(|g| {
        nix::unistd::chown(dir, Some(nix::unistd::geteuid()), Some(*g))
            .inspect_err(|e| {
                tracing::warn!(
                    "cannot give the state folder {} to control_group (gid {g}): {e}; only root will reach the control socket",
                    dir.display()
                );
            })
            .is_ok()
    });
    if given.is_none() {
        nix::unistd::chown(
            dir,
            Some(nix::unistd::geteuid()),
            Some(nix::unistd::getegid()),
        )
        .map_err(|e| io_err("set the owner of", dir)(e.into()))?;
    }
    let mode = if given.is_some() { 0o710 } else { 0o700 };
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(io_err("set the mode of", dir))?;
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))?.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let mine = std::os::unix::fs::MetadataExt::uid(&meta) == nix::unistd::geteuid().as_raw();
        let kept = meta.is_file() || meta.is_dir();
        if !mine || !kept || is_gpu_lock_dir(&name.to_string_lossy()) {
            continue;
        }
        let m = meta.permissions().mode() & 0o7777;
        if m & 0o077 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(m & 0o700))
                .map_err(io_err("set the mode of", &path))?;
        }
    }
    Ok(())
}

/// `gpuN-tmp`: a GPU lock domain's `TMPDIR` (`plan::gpus::lock_tmpdirs`).
fn is_gpu_lock_dir(name: &str) -> bool {
    name.strip_prefix("gpu")
        .and_then(|r| r.strip_suffix("-tmp"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
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

/// Writes `bytes` to `path` through a temporary file and a rename; the
/// file is root-only (0600) whatever the umask or an older file said.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("write", &tmp))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(bytes))
        .map_err(io_err("write", &tmp))?;
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

/// Records that oneshot `name` succeeded: `once/` 0700, the marker 0600.
pub fn mark_once(dir: &Path, name: &str) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let marker = once_marker(dir, name);
    if let Some(folder) = marker.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&marker)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_follows_the_group_and_keeps_everything_else_root_only() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/state");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        ensure_dir(&dir, None).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // What an older venussup left readable is made root-only; the GPU
        // lock folders and the files of others keep theirs.
        fs::write(dir.join("status.json"), "{}").unwrap();
        fs::set_permissions(dir.join("status.json"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir(dir.join("once")).unwrap();
        fs::set_permissions(dir.join("once"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(dir.join("gpu0-tmp")).unwrap();
        fs::set_permissions(dir.join("gpu0-tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        let group = nix::unistd::getegid();
        ensure_dir(&dir, Some(group)).unwrap();
        assert_eq!(mode(&dir), 0o710);
        assert_eq!(fs::metadata(&dir).unwrap().gid(), group.as_raw());
        assert_eq!(mode(&dir.join("status.json")), 0o600);
        assert_eq!(mode(&dir.join("once")), 0o700);
        assert_eq!(mode(&dir.join("gpu0-tmp")), 0o1777);
        ensure_dir(&dir, None).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // New files are root-only whatever the umask.
        write_atomic(&dir.join("services.json"), b"{}").unwrap();
        assert_eq!(mode(&dir.join("services.json")), 0o600);
        mark_once(&dir, "init").unwrap();
        assert_eq!(mode(&once_marker(&dir, "init")), 0o600);
        assert!(is_gpu_lock_dir("gpu12-tmp") && !is_gpu_lock_dir("gpu-tmp"));
    }

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
