//! Size-based rotation of the services' log files, keeping `keep` old
//! files (`name.log.1` is the newest).
//!
//! A service writes its log file directly (its output survives venussup
//! dying), so venussup rotates around it:
//! - before each start, by renaming (nobody writes the file then);
//! - while it runs, when inotify says the file was written, by copying it
//!   to `.1` (`copy_file_range`, in the kernel) and truncating it (the
//!   service appends with O_APPEND, so it goes on at the new end). Lines
//!   written between the copy and the truncate are lost; the window is one
//!   copy of `max_size` bytes.
//!
//! Every file is reached through the log folder's descriptor and never
//! through a link (`sys::safefs`): root rotates, and a link planted in the
//! folder must not send its copy, truncate or rename elsewhere.
//!
//! How often a growing log is looked at follows how fast it grows: after
//! a check the inotify descriptor is left unpolled for half the time the
//! fastest writer needs to fill what is left below `max_size` at the rate
//! it is expected to keep ([`pause`], [`next_rate`]), between
//! [`CHECK_MIN`] and [`CHECK_EVERY`]. So a log stays within `max_size`
//! plus about `CHECK_MIN` of writing (a second at the very most), and the
//! folder within `(keep + 1) × max_size` plus that. An idle host is never
//! woken for it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::sys::safefs::{self, Dir};
use crate::util::clock;

/// The longest a growing log goes unchecked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The shortest pause between two checks, however fast a log grows.
pub const CHECK_MIN: Duration = Duration::from_millis(20);

/// `NAME.n`: where rotations put a log's older contents.
pub(crate) fn numbered(name: &OsStr, n: u32) -> OsString {
    let mut s = name.to_owned();
    s.push(format!(".{n}"));
    s
}

/// The log's folder, opened, and its name; None when the folder is gone.
fn folder(path: &Path) -> io::Result<Option<(Dir, &OsStr)>> {
    let (dir, name) = safefs::split(path)?;
    match Dir::open(dir) {
        Ok(d) => Ok(Some((d, name))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Shifts `.1 … .keep-1` up by one, dropping `.keep`.
fn shift(dir: &Dir, name: &OsStr, keep: u32) -> io::Result<()> {
    for n in (1..keep).rev() {
        match dir.rename(numbered(name, n), numbered(name, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The size of `name` when it is a regular file of `max` bytes or more.
fn too_big(dir: &Dir, name: &OsStr, max: u64) -> io::Result<Option<u64>> {
    Ok(dir
        .entry(name)?
        .filter(|e| e.regular && e.size >= max)
        .map(|e| e.size))
}

/// Before a start: `name.log` → `name.log.1` when it reached `max` bytes.
/// `keep = 0` just starts the file afresh.
pub fn rotate_idle(path: &Path, max: u64, keep: u32) -> io::Result<bool> {
    let Some((dir, name)) = folder(path)? else {
        return Ok(false);
    };
    if too_big(&dir, name, max)?.is_none() {
        return Ok(false);
    }
    if keep == 0 {
        dir.remove(name)?;
    } else {
        shift(&dir, name, keep)?;
        dir.rename(name, numbered(name, 1))?;
    }
    Ok(true)
}

/// While a service writes it: copy to `.1`, then truncate in place.
pub fn rotate_live(path: &Path, max: u64, keep: u32) -> io::Result<bool> {
    let Some((dir, name)) = folder(path)? else {
        return Ok(false);
    };
    if too_big(&dir, name, max)?.is_none() {
        return Ok(false);
    }
    // A plain file (no link, one name), or nothing is written.
    let log = dir.open_write(name)?;
    if keep > 0 {
        shift(&dir, name, keep)?;
        let source = dir.open_read(name)?;
        let mut part = name.to_owned();
        part.push(".part");
        let mut copy = dir.create_new(&part, 0o640)?;
        // What is there, then what the writer added meanwhile (a few
        // rounds at most): a line written between the last round and the
        // truncation below is lost, as with logrotate's copytruncate, so
        // that window is kept as short as it can be. The copy gets its
        // name only when complete, before the truncation, so `logs -f`
        // finds there, at the same offsets, what it had not read yet.
        let mut copied = 0;
        for _ in 0..CATCH_UP_ROUNDS {
            let len = source.metadata()?.len();
            if len <= copied {
                break;
            }
            copied += io::copy(&mut (&source).take(len - copied), &mut copy)?;
        }
        dir.rename(&part, numbered(name, 1))?;
    }
    log.set_len(0)?;
    Ok(true)
}

/// Rounds of copying what a live log grew by while it was being copied.
const CATCH_UP_ROUNDS: usize = 4;

/// The last `lines` lines of a file, read from its last 16 KiB (never
/// through a link: they are shown to whoever may ask the status).
pub fn tail(path: &Path, lines: usize) -> Vec<String> {
    use std::io::{Seek, SeekFrom};
    const TAIL_BYTES: u64 = 16 * 1024;
    let opened = folder(path)
        .ok()
        .flatten()
        .map(|(d, name)| d.open_read(name));
    let Some(Ok(mut f)) = opened else {
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

/// How long a log may go unchecked: half the time it needs to grow from
/// `size` to `max` at `rate` bytes a second, within [`CHECK_MIN`,
/// `CHECK_EVERY`]. Half, so that the checks close in on the moment it
/// fills (each finds half the room left, until they are `CHECK_MIN`
/// apart) and a writer that speeds up is caught early.
pub fn pause(size: u64, max: u64, rate: f64) -> Duration {
    #[allow(clippy::cast_precision_loss)] // a pause, not an account
    let room = max.saturating_sub(size) as f64;
    if rate <= 0.0 {
        return CHECK_EVERY;
    }
    Duration::try_from_secs_f64(room / rate / 2.0)
        .unwrap_or(CHECK_EVERY)
        .clamp(CHECK_MIN, CHECK_EVERY)
}

/// The rate to expect next: what was seen since the last check (`grown`
/// bytes in `elapsed`), or half the previous estimate when that is more:
/// a writer that paused for a moment is still expected to come back fast,
/// for a few checks.
pub fn next_rate(previous: f64, grown: u64, elapsed: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let seen = grown as f64 / elapsed.as_secs_f64().max(1e-3);
    seen.max(previous / 2.0)
}

/// A watched log as last seen: its size after the check, and when.
#[derive(Debug, Clone)]
struct Seen {
    path: PathBuf,
    size: u64,
    at: Instant,
    /// Bytes a second it is expected to grow ([`next_rate`]).
    rate: f64,
}

/// inotify over the log files of running services.
#[derive(Debug)]
pub struct LogWatch {
    inotify: Option<Inotify>,
    files: HashMap<WatchDescriptor, Seen>,
    /// Not polled before this, after a check.
    resume_at: Option<Instant>,
}

fn size_of(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).map_or(0, |m| m.len())
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
        if let Err(e) = rotate_live(path, max, keep) {
            tracing::warn!("failed to rotate {}: {e}", path.display());
        }
        if let Some(ino) = &self.inotify {
            let flags = AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DONT_FOLLOW;
            match ino.add_watch(path, flags) {
                Ok(wd) => {
                    let seen = Seen {
                        path: path.to_path_buf(),
                        size: size_of(path),
                        at: Instant::now(),
                        // Until it shows its pace, a new writer is taken
                        // to fill the file in a tenth of a second: the
                        // first sample (a program starting, half a burst)
                        // says little, and the estimate halves per quiet
                        // check, so a slow writer costs a few checks.
                        rate: f64::from(u32::try_from(max).unwrap_or(u32::MAX)) * 10.0,
                    };
                    self.files.insert(wd, seen);
                }
                Err(e) => tracing::warn!("cannot watch {} for rotation: {e}", path.display()),
            }
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

    /// Reads what was written and rotates what grew too big; then pauses
    /// for as long as the fastest writer leaves room ([`pause`]).
    pub fn check(&mut self, now: Instant, max: u64, keep: u32) {
        let Some(ino) = &self.inotify else { return };
        let mut written: Vec<WatchDescriptor> = Vec::new();
        while let Ok(events) = ino.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.files.remove(&ev.wd);
                } else if self.files.contains_key(&ev.wd) && !written.contains(&ev.wd) {
                    written.push(ev.wd);
                }
            }
        }
        let mut wait = CHECK_EVERY;
        for wd in written {
            let Some(seen) = self.files.get_mut(&wd) else {
                continue;
            };
            let before = size_of(&seen.path);
            match rotate_live(&seen.path, max, keep) {
                Ok(true) => tracing::debug!("rotated {}", seen.path.display()),
                Ok(false) => {}
                Err(e) => tracing::warn!("failed to rotate {}: {e}", seen.path.display()),
            }
            let after = size_of(&seen.path);
            let grown = before.saturating_sub(seen.size);
            seen.rate = next_rate(seen.rate, grown, now.saturating_duration_since(seen.at));
            wait = wait.min(pause(after, max, seen.rate));
            seen.size = after;
            seen.at = now;
        }
        self.resume_at = Some(clock::after(now, wait));
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
    use std::fs;

    #[test]
    fn the_pause_is_the_time_to_fill_the_room_left() {
        let mib = 1 << 20;
        // 50 MiB/s, 4 MiB of room: filled in 80 ms, looked at in 40.
        let rate = next_rate(0.0, 5 * mib, Duration::from_millis(100));
        assert_eq!(pause(0, 4 * mib, rate).as_millis(), 40);
        assert_eq!(
            pause(3 * mib, 4 * mib, rate).as_millis(),
            CHECK_MIN.as_millis()
        );
        assert_eq!(pause(0, 4 * mib, 0.0), CHECK_EVERY, "quiet");
        assert_eq!(pause(0, 4 * mib, 1024.0), CHECK_EVERY, "slow");
        assert_eq!(pause(4 * mib, 4 * mib, 1e6), CHECK_MIN, "full");
        assert_eq!(pause(0, 1, f64::MAX), CHECK_MIN);
        assert_eq!(pause(0, 1, f64::NAN), CHECK_EVERY);
        // A writer that stops for a moment is still expected back fast.
        let after_stall = next_rate(rate, 0, Duration::from_millis(300));
        assert!((after_stall - rate / 2.0).abs() < 1.0);
        assert!(next_rate(after_stall, 0, Duration::from_secs(1)) < after_stall);
    }

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
        assert_eq!(fs::read(dir.path().join("s.log.1")).unwrap().len(), 100);
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
