//! Signals as events of the loop: signal-hook sets a flag per signal and
//! writes a byte to a self-pipe, whose read end the loop polls with
//! everything else. No work is done in the handler.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

/// The signals venussup acts on: stop (TERM, INT), reload (HUP), reap (CHLD).
const HANDLED: [i32; 4] = [SIGTERM, SIGINT, SIGHUP, SIGCHLD];

/// The same signals, held (blocked) across an in-place exec: one that
/// comes meanwhile waits for the next image's handlers instead of meeting
/// the default action.
pub const HELD: [nix::sys::signal::Signal; 4] = [
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGHUP,
    nix::sys::signal::Signal::SIGCHLD,
];

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub stop: bool,
    pub reload: bool,
    pub child: bool,
}

#[derive(Debug)]
pub struct Signals {
    wake: UnixStream,
    flags: Vec<(i32, Arc<AtomicBool>)>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    pub fn install() -> io::Result<Self> {
        let (wake, write) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut flags = Vec::new();
        let mut ids = Vec::new();
        for sig in HANDLED {
            let flag = Arc::new(AtomicBool::new(false));
            // The flag first, so it is set when the pipe wakes the loop.
            ids.push(signal_hook::flag::register(sig, Arc::clone(&flag))?);
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                write.try_clone()?,
            )?);
            flags.push((sig, flag));
        }
        Ok(Self { wake, flags, ids })
    }

    /// Readable when a signal came.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Empties the pipe and says which signals came since the last call.
    pub fn take(&mut self) -> Pending {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        let mut p = Pending::default();
        for (sig, flag) in &self.flags {
            if flag.swap(false, Ordering::SeqCst) {
                match *sig {
                    SIGTERM | SIGINT => p.stop = true,
                    SIGHUP => p.reload = true,
                    _ => p.child = true,
                }
            }
        }
        p
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
