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
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::sys::folder;
use crate::sys::safefs::{self, Dir};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "another venussup is already running for this host (pid {pid}, lock {path}); stop it first"
    )]
    Locked { path: PathBuf, pid: String },
    #[error(transparent)]
    Folder(#[from] folder::FolderError),
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
/// parents are created 0755, so that the group can reach the folder. An
/// existing folder must be trusted (`sys::folder`: root's, and neither it
/// nor a parent writable by others); it is set again, and what an earlier
/// venussup left readable in it is made root-only.
pub fn ensure_dir(dir: &Path, group: Option<nix::unistd::Gid>) -> Result<(), StateError> {
    use std::os::unix::fs::PermissionsExt;
    folder::ensure("state folder", dir, 0o700)?;
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

/// A folder venussup writes as root and how it holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// What it is, for messages: "state folder ([host] state_dir)".
    pub what: &'static str,
    pub path: PathBuf,
    /// Made with this mode when missing.
    pub mode: u32,
    /// Refused when untrusted (venussup's own); otherwise said (the
    /// textfile collector's folder belongs to node_exporter's set-up, and
    /// the file is written there link-safely all the same).
    pub own: bool,
}

/// The folders venussup writes as root: its state folder (0700), the log
/// folder (0750), and the metrics textfile's folder.
pub fn folders(host: &crate::config::HostConfig) -> Vec<Folder> {
    let textfile = host
        .metrics
        .as_ref()
        .and_then(|m| m.textfile.as_ref())
        .and_then(|t| t.get_ref().parent().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty());
    let mut v = vec![
        Folder {
            what: "state folder ([host] state_dir)",
            path: host.state_dir.clone(),
            mode: 0o700,
            own: true,
        },
        Folder {
            what: "log folder ([host] log_dir)",
            path: host.log_dir.clone(),
            mode: 0o750,
            own: true,
        },
    ];
    v.extend(textfile.map(|path| Folder {
        what: "metrics textfile folder ([host.metrics] textfile)",
        path,
        mode: 0o755,
        own: false,
    }));
    v
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
    let file = Dir::open(dir)
        .and_then(|d| d.open_rw("venussup.lock", 0o600))
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

/// Writes `bytes` to `path` through a temporary file, synced, and a
/// rename in the same folder (`sys::safefs`: never through a link); the
/// file is root-only (0600) whatever the umask or an older file said.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    safefs::write_atomic(path, bytes, 0o600).map_err(io_err("replace", path))
}

/// [`write_atomic`] without the syncs, for what is rewritten at every
/// change and made again at every start (`status.json`, the metrics
/// textfile): a sync per change would hold the loop behind the disk.
pub fn write_snapshot(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    safefs::replace(path, bytes, 0o600).map_err(io_err("replace", path))
}

/// A running service as the next daemon must recognise it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPid {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: tells a reused pid from the same process.
    pub start_time: u64,
    /// /proc/PID/exe when recorded (without " (deleted)"); absent in the
    /// records of older venussups, which are then never signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<PathBuf>,
    /// /proc/PID/cgroup when recorded, as the kernel wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// What `/proc` says of a process now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub start_time: u64,
    /// Its process group (field 5 of stat).
    pub pgrp: i32,
    pub exe: Option<PathBuf>,
    pub cgroup: Option<String>,
}

/// Whether a recorded pid is the process venussup started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Start time, program and cgroup all match, and it leads its group.
    Same,
    /// Not running, or its pid was reused (another start time).
    Gone,
    /// Something differs (said); it is not signalled.
    Other(String),
    /// The record lacks the program or the cgroup (an older venussup's).
    Unverified,
}

/// The rule: a recorded process is signalled (its whole process group)
/// only when everything recorded matches what runs now.
pub fn verify(r: &RecordedPid, seen: Option<&Seen>) -> Verdict {
    let Some(seen) = seen.filter(|s| s.start_time == r.start_time) else {
        return Verdict::Gone;
    };
    let (Some(exe), Some(cgroup)) = (&r.exe, &r.cgroup) else {
        return Verdict::Unverified;
    };
    if seen.pgrp != r.pid {
        return Verdict::Other(format!(
            "it does not lead its process group (group {})",
            seen.pgrp
        ));
    }
    if seen.exe.as_ref() != Some(exe) {
        return Verdict::Other(format!(
            "it runs {} where {} was recorded",
            seen.exe
                .as_ref()
                .map_or("an unknown program".into(), |p| p.display().to_string()),
            exe.display()
        ));
    }
    if seen.cgroup.as_ref() != Some(cgroup) {
        return Verdict::Other(format!(
            "its cgroup is {} where {} was recorded",
            seen.cgroup.as_deref().unwrap_or("unknown").trim(),
            cgroup.trim()
        ));
    }
    Verdict::Same
}

/// Reads what [`Seen`] holds of `pid` under `proc_dir`.
pub fn observe(proc_dir: &Path, pid: i32) -> Option<Seen> {
    let dir = proc_dir.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let exe = fs::read_link(dir.join("exe")).ok().map(|p| {
        let s = p.as_os_str().to_string_lossy();
        s.strip_suffix(" (deleted)")
            .map_or(p.clone(), PathBuf::from)
    });
    Some(Seen {
        start_time: parse_start_time(&stat)?,
        pgrp: parse_stat_field(&stat, 2)?,
        exe,
        cgroup: fs::read_to_string(dir.join("cgroup")).ok(),
    })
}

/// A record of `pid` as it runs now (for `services.json`).
pub fn record(proc_dir: &Path, pid: i32, start_time: u64) -> RecordedPid {
    let seen = observe(proc_dir, pid).filter(|s| s.start_time == start_time);
    RecordedPid {
        pid,
        start_time,
        exe: seen.as_ref().and_then(|s| s.exe.clone()),
        cgroup: seen.and_then(|s| s.cgroup),
    }
}

pub type PidRecord = BTreeMap<String, RecordedPid>;

/// The recorded services; read only from the state folder, which `run`
/// trusts only after `sys::folder` checked it, and never through a link.
pub fn read_pids(dir: &Path) -> PidRecord {
    let mut text = String::new();
    Dir::open(dir)
        .and_then(|d| d.open_read("services.json"))
        .and_then(|mut f| io::Read::read_to_string(&mut f, &mut text))
        .ok()
        .and_then(|_| serde_json::from_str(&text).ok())
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
    parse_stat_field(stat, 19)
}

/// The state letter of `pid` (`R`, `S`, `D` for uninterruptible sleep,
/// `Z`, ...) and its kernel start time, from `proc`.
pub fn state_and_start(proc_dir: &Path, pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(proc_dir.join(pid.to_string()).join("stat")).ok()?;
    let state = parse_stat_field::<String>(&stat, 0)?.chars().next()?;
    Some((state, parse_start_time(&stat)?))
}

/// Field `n + 3` of a stat line (`n` counted from the state, field 3).
fn parse_stat_field<T: std::str::FromStr>(stat: &str, n: usize) -> Option<T> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n)?.parse().ok()
}

/// Where a oneshot with `once = true` records its success.
pub fn once_marker(dir: &Path, name: &str) -> PathBuf {
    dir.join("once").join(format!("{name}.done"))
}

/// Records that oneshot `name` succeeded: `once/` 0700, the marker 0600.
pub fn mark_once(dir: &Path, name: &str) -> io::Result<()> {
    Dir::open(dir)?
        .subdir("once", 0o700)?
        .create_new(format!("{name}.done"), 0o600)
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
                exe: Some("/usr/bin/venus-sealer".into()),
                cgroup: Some("0::/venussup/sealer\n".into()),
            },
        );
        write_pids(dir.path(), &r).unwrap();
        assert_eq!(read_pids(dir.path()), r);
        // An older venussup's record reads, without program and cgroup.
        fs::write(
            dir.path().join("services.json"),
            r#"{"w":{"pid":5,"start_time":6}}"#,
        )
        .unwrap();
        assert_eq!(read_pids(dir.path())["w"].exe, None);
    }

    #[test]
    fn only_a_process_that_matches_everything_recorded_is_signalled() {
        let rec = RecordedPid {
            pid: 40,
            start_time: 100,
            exe: Some("/usr/bin/venus-worker".into()),
            cgroup: Some("0::/venussup/w\n".into()),
        };
        let seen = Seen {
            start_time: 100,
            pgrp: 40,
            exe: rec.exe.clone(),
            cgroup: rec.cgroup.clone(),
        };
        assert_eq!(verify(&rec, Some(&seen)), Verdict::Same);
        assert_eq!(verify(&rec, None), Verdict::Gone);
        let reused = Seen {
            start_time: 101,
            ..seen.clone()
        };
        assert_eq!(verify(&rec, Some(&reused)), Verdict::Gone);
        for other in [
            Seen {
                exe: Some("/usr/bin/sleep".into()),
                ..seen.clone()
            },
            Seen {
                exe: None,
                ..seen.clone()
            },
            Seen {
                cgroup: Some("0::/user.slice\n".into()),
                ..seen.clone()
            },
            Seen {
                pgrp: 1,
                ..seen.clone()
            },
        ] {
            assert!(
                matches!(verify(&rec, Some(&other)), Verdict::Other(_)),
                "{other:?}"
            );
        }
        let old = RecordedPid {
            exe: None,
            cgroup: None,
            ..rec
        };
        assert_eq!(verify(&old, Some(&seen)), Verdict::Unverified);
    }

    #[test]
    fn this_process_is_seen_as_it_runs() {
        let me = i32::try_from(std::process::id()).unwrap();
        let seen = observe(Path::new("/proc"), me).unwrap();
        assert_eq!(seen.exe, std::env::current_exe().ok());
        assert!(seen.cgroup.is_some_and(|c| !c.is_empty()));
        let r = record(Path::new("/proc"), me, seen.start_time);
        assert_eq!(r.exe, std::env::current_exe().ok());
        assert_eq!(
            record(Path::new("/proc"), me, seen.start_time + 1).exe,
            None
        );
    }
}
