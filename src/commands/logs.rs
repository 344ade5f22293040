//! `venussup logs NAME [-f] [-n N]`: a service's (or timer's) log,
//! `<log_dir>/NAME.log`; with `-f` followed as `tail -F` does, across both
//! of venussup's rotations: a file renamed to `NAME.log.1` (rotation before
//! a start) is read to its end and the new `NAME.log` from its start; a
//! file truncated in place (rotation while the service writes) is read
//! again from its start. Needs no daemon: it reads the file.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::exit;
use crate::config;
use crate::util::names;

/// How long a follower waits for inotify before looking anyway (a file
/// system without inotify events, e.g. some network mounts).
const LOOK_ANYWAY_MS: u16 = 1000;

#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub name: String,
    /// Print this many of the last lines first.
    pub lines: usize,
    pub follow: bool,
}

pub fn run(opts: &Options) -> u8 {
    if let Some(why) = names::instance_problem(&opts.name) {
        eprintln!("venussup: {why}");
        return exit::USAGE;
    }
    let path = config::log_dir_only(&opts.config).join(format!("{}.log", opts.name));
    let mut out = io::stdout().lock();
    let result = match File::open(&path) {
        Ok(mut f) => last_lines(&mut f, opts.lines, &mut out).and_then(|pos| {
            if opts.follow {
                follow(&path, Some((f, pos)), &mut out)
            } else {
                Ok(())
            }
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && opts.follow => {
            eprintln!(
                "venussup: {} does not exist yet; waiting for it",
                path.display()
            );
            follow(&path, None, &mut out)
        }
        Err(e) => {
            eprintln!(
                "venussup: {}: {e} (is `{}` a service or timer of {}?)",
                path.display(),
                opts.name,
                opts.config.display()
            );
            return exit::FAILURE;
        }
    };
    match result {
        Ok(()) => exit::OK,
        // A reader that stopped reading (`| head`): nobody left to tell.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("venussup: {}: {e}", path.display());
            exit::FAILURE
        }
    }
}

/// Writes the last `n` lines of `f` to `out`; returns the offset read to.
fn last_lines(f: &mut File, n: usize, out: &mut impl Write) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let len = f.metadata()?.len();
    // Back from the end, a block at a time, until n line ends are in hand
    // (the last byte's newline ends the last line, and does not count).
    let mut start = len;
    let mut tail: Vec<u8> = Vec::new();
    while start > 0 && n > 0 {
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0; usize::try_from(start - from).unwrap_or(0)];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&tail);
        tail = block;
        start = from;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if body.iter().filter(|b| **b == b'\n').count() >= n {
            break;
        }
    }
    let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let mut cut = 0;
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                cut = i + 1;
                break;
            }
        }
    }
    if n > 0 {
        out.write_all(&tail[cut..])?;
        out.flush()?;
    }
    f.seek(SeekFrom::Start(len))?;
    Ok(len)
}

/// The identity of a file: a new one at the same path is a rotation.
fn identity(m: &fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// Copies what `f` has past `pos` to `out`; a file now shorter than `pos`
/// was truncated (rotated in place) and is read from its start, after
/// what it had past `pos` before: the rotation copied it, at the same
/// offsets, to `copy` (`NAME.log.1`).
fn copy_new(f: &mut File, pos: &mut u64, copy: &Path, out: &mut impl Write) -> io::Result<()> {
    let len = f.metadata()?.len();
    if len < *pos {
        if let Ok(mut old) = File::open(copy) {
            let old_len = old.metadata()?.len();
            if old_len > *pos {
                old.seek(SeekFrom::Start(*pos))?;
                io::copy(&mut old.take(old_len - *pos), out)?;
            }
        }
        *pos = 0;
    }
    f.seek(SeekFrom::Start(*pos))?;
    let n = io::copy(&mut f.take(len - *pos), out)?;
    *pos += n;
    out.flush()?;
    Ok(())
}

/// `NAME.log.1`, where a rotation puts the file's contents.
fn rotated(path: &Path) -> PathBuf {
    PathBuf::from(crate::runtime::logs::numbered(path.as_os_str(), 1))
}

/// Follows `path` until the process is stopped (or stdout goes away).
fn follow(path: &Path, open: Option<(File, u64)>, out: &mut impl Write) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let copy = rotated(path);
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    // The folder: a write to the file, and a file renamed or made there.
    let watched = inotify
        .add_watch(
            dir,
            AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_ATTRIB,
        )
        .is_ok();
    let mut current = open.and_then(|(f, pos)| {
        let id = identity(&f.metadata().ok()?);
        Some((f, pos, id))
    });
    loop {
        if let Some((f, pos, _)) = current.as_mut() {
            copy_new(f, pos, &copy, out)?;
        }
        // A different file at the path now: the old one was rotated away.
        // What was written to it before the rename is read above; from
        // here on, the new one from its start.
        if let Ok(m) = fs::metadata(path) {
            let id = identity(&m);
            if current.as_ref().is_none_or(|(_, _, old)| *old != id) {
                if let Ok(f) = File::open(path) {
                    if let Some((old, pos, _)) = current.as_mut() {
                        copy_new(old, pos, &copy, out)?;
                    }
                    current = Some((f, 0, id));
                    continue;
                }
            }
        }
        let timeout = if watched {
            PollTimeout::from(LOOK_ANYWAY_MS)
        } else {
            PollTimeout::from(LOOK_ANYWAY_MS / 4)
        };
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        // Drain the events: which one does not matter, the file is looked at.
        while inotify.read_events().is_ok_and(|e| !e.is_empty()) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(text: &str, n: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        fs::write(&path, text).unwrap();
        let mut f = File::open(&path).unwrap();
        let mut out = Vec::new();
        let pos = last_lines(&mut f, n, &mut out).unwrap();
        assert_eq!(pos, text.len() as u64);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_last_n_lines() {
        assert_eq!(last("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last("a\nb\nc", 2), "b\nc");
        assert_eq!(last("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(last("a\nb\nc\n", 0), "");
        assert_eq!(last("", 3), "");
        // Across blocks.
        let long: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(last(&long, 2), "line 19998\nline 19999\n");
        assert_eq!(last(&long, 20_000), long);
    }

    #[test]
    fn a_truncated_file_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        fs::write(&path, "one\ntwo\n").unwrap();
        let mut f = File::open(&path).unwrap();
        let copy = rotated(&path);
        let mut pos = 0;
        let mut out = Vec::new();
        copy_new(&mut f, &mut pos, &copy, &mut out).unwrap();
        fs::write(&path, "3\n").unwrap();
        copy_new(&mut f, &mut pos, &copy, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\n3\n");
    }

    #[test]
    fn what_was_not_read_before_a_truncation_is_read_from_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        fs::write(&path, "one\ntw").unwrap();
        let mut f = File::open(&path).unwrap();
        let copy = rotated(&path);
        let (mut pos, mut out) = (0, Vec::new());
        copy_new(&mut f, &mut pos, &copy, &mut out).unwrap();
        // The writer ends its line, then the rotation copies and truncates.
        fs::write(&copy, "one\ntwo\nthree\n").unwrap();
        fs::write(&path, "four\n").unwrap();
        copy_new(&mut f, &mut pos, &copy, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\nthree\nfour\n");
    }
}
