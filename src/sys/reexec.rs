//! Replacing venussup's program in place (`venussup upgrade`, and the
//! re-exec after a panic): the same process, so the same pid, the same
//! children (still its children: `waitpid` goes on working) and the
//! descriptors it chooses to hand over. This module has the kernel calls:
//! the memfd the state travels in, a descriptor's close-on-exec flag and
//! identity, the signals held across the exec, and `execve`.
//!
//! Across `execve` the kernel keeps the pid, the children, the signal mask,
//! pending signals, the current folder, rlimits, `oom_score_adj`, the
//! child-subreaper flag and every descriptor without close-on-exec; it
//! resets signal handlers to their default.

use std::ffi::{CStr, CString};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use serde::{Deserialize, Serialize};

/// A descriptor handed to the next image: its number, and its inode so the
/// next image can tell it is still what the handover says (a descriptor
/// closed and reused since would have another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedFd {
    pub fd: RawFd,
    pub ino: u64,
}

impl HandedFd {
    /// `fd` as it is now, to be handed over.
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Self {
            fd: fd.as_raw_fd(),
            ino: inode(fd)?,
        })
    }

    /// In the next image: takes ownership of the descriptor if it is still
    /// the one that was handed over (open, same inode), and makes it
    /// close-on-exec again so no service inherits it.
    pub fn adopt(&self) -> Result<OwnedFd, String> {
        // SAFETY: fcntl(F_GETFD) only reads the flags of a descriptor
        // number; a closed one answers EBADF.
        if unsafe { libc::fcntl(self.fd, libc::F_GETFD) } < 0 {
            return Err(format!("descriptor {} is not open", self.fd));
        }
        // Each handed descriptor is adopted once, by the one record that
        // names it; the previous image owns nothing any more.
        // SAFETY: open (checked above), left to this image, owned by no one else.
        let owned = unsafe { OwnedFd::from_raw_fd(self.fd) };
        match inode(owned.as_fd()) {
            Ok(ino) if ino == self.ino => {
                set_inherit(owned.as_fd(), false).map_err(|e| e.to_string())?;
                Ok(owned)
            }
            Ok(ino) => {
                // Not ours after all: given up without closing it.
                let _ = owned.into_raw_fd();
                Err(format!(
                    "descriptor {} is another file now (inode {ino}, handed over {})",
                    self.fd, self.ino
                ))
            }
            Err(e) => {
                let _ = owned.into_raw_fd();
                Err(format!("descriptor {}: {e}", self.fd))
            }
        }
    }
}

/// The inode number of what `fd` refers to.
pub fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    nix::sys::stat::fstat(fd)
        .map(|st| st.st_ino)
        .map_err(io::Error::from)
}

/// Whether `fd` crosses the next `execve` (`true`: close-on-exec cleared).
pub fn set_inherit(fd: BorrowedFd<'_>, inherit: bool) -> io::Result<()> {
    let flags = if inherit {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))
        .map(drop)
        .map_err(io::Error::from)
}

/// [`set_inherit`] by number, for the panic path, which holds no
/// descriptor objects; a number that is not open just fails.
pub fn set_inherit_raw(fd: RawFd, inherit: bool) -> io::Result<()> {
    let flags = if inherit { 0 } else { libc::FD_CLOEXEC };
    // SAFETY: fcntl(F_SETFD) only changes the flags of a descriptor
    // number of this process; a closed number answers EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An anonymous in-memory file holding `bytes`, read position at the
/// start, that crosses `execve` (no close-on-exec): the state for the next
/// image. Nothing on disk, nothing to clean up.
pub fn memfd_with(name: &CStr, bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(name, MFdFlags::empty()).map_err(io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(OwnedFd::from(file))
}

/// Reads a handed-over memfd to its end (from where it stands) and closes it.
pub fn read_all(fd: OwnedFd) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// In the next image: reads the memfd the previous image left as
/// descriptor `fd` (named on its command line) and closes it.
pub fn take_memfd(fd: RawFd) -> io::Result<Vec<u8>> {
    if fd <= 2 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: fcntl(F_GETFD) only reads the flags of a descriptor number.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and is the memfd the
    // previous image of this process left for this one: nothing in this
    // image owns it.
    read_all(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Closes every descriptor above stderr not in `keep`: in the next image,
/// before it opens anything, what the previous one left but the handover
/// does not name.
pub fn close_inherited_except(keep: &std::collections::BTreeSet<RawFd>) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let open: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // Called before anything is opened; the listing's own descriptor is
        // closed already, and closing its number again fails with EBADF.
        // SAFETY: an inherited descriptor number nothing in this image owns.
        unsafe { libc::close(fd) };
    }
}

/// The signals the loop handles, blocked until the next image has its
/// handlers: one that comes during the exec waits (pending), instead of
/// finding the default action (SIGTERM would end venussup). Returns the
/// mask to restore if the exec fails.
pub fn hold(signals: &[Signal]) -> io::Result<SigSet> {
    let mut set = SigSet::empty();
    for s in signals {
        set.add(*s);
    }
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .map_err(io::Error::from)?;
    Ok(old)
}

/// Restores a mask [`hold`] returned.
pub fn restore(mask: &SigSet) {
    let _ = mask.thread_set_mask();
}

/// Unblocks every signal: a new image, once its handlers are in place,
/// receives what came during the exec.
pub fn unblock_all() {
    let _ = SigSet::empty().thread_set_mask();
}

/// Replaces this process's program with `program`, keeping the pid, the
/// children and every descriptor without close-on-exec. Returns only on
/// failure, with why.
pub fn exec(program: &CStr, argv: &[CString], env: &[CString]) -> io::Error {
    match nix::unistd::execve(program, argv, env) {
        Err(e) => io::Error::from(e),
        Ok(never) => match never {},
    }
}

/// Whether `pid` is a child of this process that has not been reaped
/// (running, or a zombie): `waitid` with `WNOWAIT` looks without reaping.
pub fn is_child(pid: i32) -> bool {
    // SAFETY: a zeroed siginfo_t is a valid out-buffer for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let id = libc::id_t::try_from(pid).unwrap_or(0);
    // SAFETY: waitid(P_PID, ...) with WNOWAIT | WNOHANG writes only into
    // `info` and reaps nothing; it fails with ECHILD for a process that is
    // not our child.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memfd_reads_back_and_a_handed_fd_knows_its_inode() {
        let fd = memfd_with(c"venussup-test", b"hello").unwrap();
        let handed = HandedFd::of(fd.as_fd()).unwrap();
        // Handed over: ownership goes to whoever adopts it.
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        assert_eq!(handed.fd, raw);
        let adopted = handed.adopt().unwrap();
        // SAFETY: F_GETFD only reads the flags of our own descriptor.
        let flags = unsafe { libc::fcntl(adopted.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        assert_eq!(read_all(adopted).unwrap(), b"hello");
        // Closed now: adopting it again fails.
        assert!(handed.adopt().unwrap_err().contains("not open"));
    }

    #[test]
    fn a_reused_descriptor_number_is_not_adopted() {
        let a = memfd_with(c"a", b"").unwrap();
        let wrong = HandedFd {
            fd: a.as_raw_fd(),
            ino: inode(a.as_fd()).unwrap() + 1,
        };
        assert!(wrong.adopt().unwrap_err().contains("another file"));
        // Still open and still ours.
        assert!(inode(a.as_fd()).is_ok());
    }

    #[test]
    fn only_own_children_are_children() {
        assert!(!is_child(1));
        let child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let mut child = child;
        // Exited or not, it is ours until reaped.
        assert!(is_child(pid));
        child.wait().unwrap();
        assert!(!is_child(pid));
    }
}
