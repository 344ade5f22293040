//! Size-based rotation of the services' log files, keeping `keep` old
//! files (`name.log.1` is the newest).
//!
//! A service writes its log file directly (its output survives venussup
//! dying), so venussup rotates around it:
//! - before each start, by renaming (nobody writes the file then);
//! - while it runs, when inotify says the file was written, by copying it
//!   to `.1` and truncating it (the service appends with O_APPEND, so it
//!   goes on at the new end). Lines written between the copy and the
//!   truncate are lost; the window is one copy of `max_size` bytes.
//!
//! While the files grow, the check runs at most once per `CHECK_EVERY`:
//! after each check the inotify descriptor is left unpolled until then.
//! An idle host is never woken for it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::clock::after;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// The most often a growing log is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Shifts `.1 … .keep-1` up by one, dropping `.keep`.
fn shift(path: &Path, keep: u32) -> io::Result<()> {
    for n in (1..keep).rev() {
        match fs::rename(numbered(path, n), numbered(path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn too_big(path: &Path, max: u64) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() >= max)
}

/// Before a start: `name.log` → `name.log.1` when it reached `max` bytes.
/// `keep = 0` just starts the file afresh.
pub fn rotate_idle(path: &Path, max: u64, keep: u32) -> io::Result<bool> {
    if !too_big(path, max) {
        return Ok(false);
    }
    if keep == 0 {
        fs::remove_file(path)?;
    } else {
        shift(path, keep)?;
        fs::rename(path, numbered(path, 1))?;
    }
    Ok(true)
}

/// While a service writes it: copy to `.1`, then truncate in place.
pub fn rotate_live(path: &Path, max: u64, keep: u32) -> io::Result<bool> {
    if !too_big(path, max) {
        return Ok(false);
    }
    if keep > 0 {
        shift(path, keep)?;
        fs::copy(path, numbered(path, 1))?;
    }
    fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// The last `lines` lines of a file, read from its last 16 KiB.
pub fn tail(path: &Path, lines: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL_BYTES: u64 = 16 * 1024;
    let Ok(mut f) = fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.take(TAIL_BYTES).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// inotify over the log files of running services.
#[derive(Debug)]
pub struct LogWatch {
    inotify: Option<Inotify>,
    files: HashMap<WatchDescriptor, PathBuf>,
    /// Not polled before this, after a check.
    resume_at: Option<Instant>,
}

impl LogWatch {
    pub fn new() -> Self {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| tracing::warn!("inotify unavailable ({e}); logs rotate only at restarts"))
            .ok();
        Self {
            inotify,
            files: HashMap::new(),
            resume_at: None,
        }
    }

    /// Watches `path` for writes (after the service was started on it),
    /// then checks it once: what was written before the watch existed
    /// raised no event.
    pub fn watch(&mut self, path: &Path, max: u64, keep: u32) {
        if let Some(ino) = &self.inotify {
            match ino.add_watch(path, AddWatchFlags::IN_MODIFY) {
                Ok(wd) => {
                    self.files.insert(wd, path.to_path_buf());
                }
                Err(e) => tracing::warn!("cannot watch {} for rotation: {e}", path.display()),
            }
        }
        if let Err(e) = rotate_live(path, max, keep) {
            tracing::warn!("failed to rotate {}: {e}", path.display());
        }
    }

    /// The descriptor to poll, unless paused.
    pub fn fd(&self, now: Instant) -> Option<BorrowedFd<'_>> {
        match self.resume_at {
            Some(t) if t > now => None,
            _ => self.inotify.as_ref().map(AsFd::as_fd),
        }
    }

    /// When polling resumes, if paused.
    pub fn deadline(&self) -> Option<Instant> {
        self.resume_at
    }

    /// Reads what was written and rotates what grew too big; then pauses.
    pub fn check(&mut self, now: Instant, max: u64, keep: u32) {
        let Some(ino) = &self.inotify else { return };
        let mut written: Vec<PathBuf> = Vec::new();
        while let Ok(events) = ino.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.files.remove(&ev.wd);
                } else if let Some(p) = self.files.get(&ev.wd) {
                    if !written.contains(p) {
                        written.push(p.clone());
                    }
                }
            }
        }
        for path in written {
            match rotate_live(&path, max, keep) {
                Ok(true) => tracing::info!("rotated {}", path.display()),
                Ok(false) => {}
                Err(e) => tracing::warn!("failed to rotate {}: {e}", path.display()),
            }
        }
        self.resume_at = Some(after(now, CHECK_EVERY));
    }

    /// Ends a pause whose time has come.
    pub fn resume_if_due(&mut self, now: Instant) {
        if self.resume_at.is_some_and(|t| t <= now) {
            self.resume_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn idle_rotation_renames_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("w.log");
        for size in [10, 20, 30, 40] {
            fs::write(&log, vec![b'x'; size]).unwrap();
            assert!(rotate_idle(&log, 5, 2).unwrap());
        }
        assert_eq!(
            files(dir.path()),
            [("w.log.1".into(), 40), ("w.log.2".into(), 30)]
        );
        fs::write(&log, b"abc").unwrap();
        assert!(
            !rotate_idle(&log, 5, 2).unwrap(),
            "under the size: left alone"
        );
    }

    #[test]
    fn live_rotation_copies_then_truncates_so_an_appending_writer_goes_on() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        let mut writer = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .unwrap();
        writer.write_all(&[b'a'; 100]).unwrap();
        assert!(rotate_live(&log, 50, 3).unwrap());
        writer.write_all(b"after").unwrap();
        assert_eq!(fs::read(&log).unwrap(), b"after");
        assert_eq!(fs::read(numbered(&log, 1)).unwrap().len(), 100);
    }

    #[test]
    fn the_watch_sees_writes_rotates_and_pauses() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.log");
        let mut writer = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .unwrap();
        let mut watch = LogWatch::new();
        watch.watch(&log, 32, 1);
        let now = Instant::now();
        assert!(watch.fd(now).is_some());
        writer.write_all(&[b'z'; 64]).unwrap();
        watch.check(now, 32, 1);
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        assert!(watch.fd(now).is_none(), "paused after a check");
        watch.resume_if_due(now + CHECK_EVERY);
        assert!(watch.fd(now + CHECK_EVERY).is_some());
    }
}
