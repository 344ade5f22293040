//! A daemon started again while its predecessor's services still run (it
//! was killed, or crashed) stops them before starting anything: never two
//! copies of a sealer. Services are recognised by pid, kernel start time,
//! program and cgroup (`state::verify`), so neither a reused pid nor a
//! record that names someone else's process is ever signalled; a record
//! without program and cgroup (an older venussup's) is said, not acted
//! on. A new image of the same process (an in-place upgrade whose state
//! could not be read) keeps the recorded services that are its own
//! children: they are adopted, not stopped (`supervisor/handover.rs`).

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use super::state::{self, PidRecord, Verdict};
use crate::util::clock::after;

/// An fd that becomes readable when `pid` exits (works for processes that
/// are not our children).
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new file
    // descriptor or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing
    // else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Stops every recorded service that still runs: `stop_signal` to its
/// process group, then SIGKILL after `timeout` (per name; `default` for
/// names no longer in the config). Those `ours` says are this process's
/// own children are left running and stay recorded. Returns the names
/// stopped.
pub fn stop_leftovers(
    state_dir: &Path,
    proc_dir: &Path,
    stop: &BTreeMap<String, (Signal, Duration)>,
    default: (Signal, Duration),
    ours: &dyn Fn(i32) -> bool,
) -> Vec<String> {
    let record: PidRecord = state::read_pids(state_dir);
    let mut kept = PidRecord::new();
    let mut waiting = Vec::new();
    for (name, r) in &record {
        let verdict = state::verify(r, state::observe(proc_dir, r.pid).as_ref());
        if verdict == Verdict::Gone {
            continue; // gone, or the pid now belongs to someone else
        }
        if ours(r.pid) {
            kept.insert(name.clone(), r.clone());
            continue;
        }
        match verdict {
            Verdict::Unverified => {
                warn!(service = %name, pid = r.pid, "recorded without its program and cgroup (an older venussup?): not signalled; if it is an earlier copy of the service, stop it by hand");
                continue;
            }
            Verdict::Other(why) => {
                warn!(service = %name, pid = r.pid, "recorded, but not the process venussup started: {why}; not signalled");
                continue;
            }
            Verdict::Same | Verdict::Gone => {}
        }
        let (sig, timeout) = stop.get(name).copied().unwrap_or(default);
        warn!(service = %name, pid = r.pid, "still running from an earlier venussup; sending {}", sig.as_str());
        let Some(fd) = pidfd_open(r.pid) else {
            continue;
        };
        let _ = kill(Pid::from_raw(-r.pid), sig);
        waiting.push((name.clone(), r.pid, fd, after(Instant::now(), timeout)));
    }
    let stopped: Vec<String> = waiting.iter().map(|w| w.0.clone()).collect();
    while !waiting.is_empty() {
        let now = Instant::now();
        waiting.retain(|(name, pid, _, kill_at)| {
            if *kill_at <= now {
                warn!(service = %name, pid, "did not stop in time; sending SIGKILL");
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            }
            true
        });
        let next = waiting.iter().map(|w| w.3).filter(|k| *k > now).min();
        let timeout = next.map_or(PollTimeout::from(100u8), |n| {
            PollTimeout::try_from(
                n.saturating_duration_since(now)
                    .as_millis()
                    .saturating_add(1),
            )
            .unwrap_or(PollTimeout::MAX)
        });
        let exited: Vec<bool> = {
            let mut fds: Vec<PollFd> = waiting
                .iter()
                .map(|w| PollFd::new(std::os::fd::AsFd::as_fd(&w.2), PollFlags::POLLIN))
                .collect();
            let _ = poll(&mut fds, timeout);
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let mut i = 0;
        waiting.retain(|(name, pid, _, _)| {
            let gone = exited[i];
            i += 1;
            if gone {
                info!(service = %name, pid, "earlier copy stopped");
                // Whatever it left in its process group goes too.
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            }
            !gone
        });
    }
    if let Err(e) = state::write_pids(state_dir, &kept) {
        warn!("{e}");
    }
    stopped
}
