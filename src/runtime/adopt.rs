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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use serde::{Deserialize, Serialize};

use super::state::{self, PidRecord, StateError, Verdict};
use super::timer::TIMER_STOP_GRACE;
use crate::util::clock::after;

/// An fd that becomes readable when `pid` exits (works for processes that
/// are not our children).
pub(crate) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new file
    // descriptor or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing
    // else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until every pidfd of `fds` says its process has exited, or until
/// `deadline`; whether they all did.
pub(crate) fn wait_gone(fds: &[(i32, OwnedFd)], deadline: Instant) -> bool {
    let mut waiting: Vec<&OwnedFd> = fds.iter().map(|(_, fd)| fd).collect();
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let timeout =
            PollTimeout::try_from(left.as_millis().saturating_add(1)).unwrap_or(PollTimeout::MAX);
        let mut polled: Vec<PollFd> = waiting
            .iter()
            .map(|fd| PollFd::new(std::os::fd::AsFd::as_fd(*fd), PollFlags::POLLIN))
            .collect();
        match poll(&mut polled, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
        let exited: Vec<bool> = polled
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let mut i = 0;
        waiting.retain(|_| {
            i += 1;
            !exited[i - 1]
        });
    }
    true
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

/// A timer run as the next daemon must recognise it: pid, kernel start
/// time and the cgroup it was born in (none where the host has no
/// tracking cgroup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRun {
    pub pid: i32,
    pub start_time: u64,
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// The runs going now, by timer name.
pub type RunRecord = BTreeMap<String, RecordedRun>;

/// Where the runs are recorded in the state folder.
pub const RUNS_FILE: &str = "timer-runs.json";

pub fn write_runs(state_dir: &Path, runs: &RunRecord) -> Result<(), StateError> {
    let json = serde_json::to_vec(runs).unwrap_or_default();
    state::write_atomic(&state_dir.join(RUNS_FILE), &json)
}

pub fn read_runs(state_dir: &Path) -> RunRecord {
    std::fs::read_to_string(state_dir.join(RUNS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Whether `run` is still the process venussup started: the same kernel
/// start time, and still in its cgroup (when it had one).
fn still_there(proc_dir: &Path, run: &RecordedRun) -> bool {
    state::start_time(proc_dir, run.pid) == Some(run.start_time)
        && run.cgroup.as_ref().is_none_or(|dir| {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .is_ok_and(|t| t.split_whitespace().any(|p| p == run.pid.to_string()))
        })
}

/// Stops every recorded timer run that still runs (an earlier venussup
/// was killed while it ran), before this daemon runs any timer: never two
/// pledges at once. SIGTERM to its process group, SIGKILL after
/// [`TIMER_STOP_GRACE`], then SIGKILL to what is left in its group; what
/// its cgroup still holds is killed with the earlier daemon's cgroups
/// (`runtime::cgroups`). Runs `ours` says are this process's own children
/// (an in-place upgrade) stay recorded. Returns the timers stopped.
pub fn stop_leftover_runs(
    state_dir: &Path,
    proc_dir: &Path,
    ours: &dyn Fn(i32) -> bool,
) -> Vec<String> {
    let mut kept = RunRecord::new();
    let mut stopped = Vec::new();
    for (name, run) in read_runs(state_dir) {
        if !still_there(proc_dir, &run) {
            continue;
        }
        if ours(run.pid) {
            kept.insert(name, run);
            continue;
        }
        warn!(timer = %name, pid = run.pid, "run still going from an earlier venussup; stopping it before any new run");
        let Some(fd) = pidfd_open(run.pid) else {
            continue;
        };
        let group = Pid::from_raw(-run.pid);
        let fds = [(run.pid, fd)];
        let _ = kill(group, Signal::SIGTERM);
        let now = Instant::now();
        if !wait_gone(&fds, now.checked_add(TIMER_STOP_GRACE).unwrap_or(now)) {
            warn!(timer = %name, pid = run.pid, "did not stop in time; sending SIGKILL");
            let _ = kill(group, Signal::SIGKILL);
            let now = Instant::now();
            if !wait_gone(&fds, now.checked_add(TIMER_STOP_GRACE).unwrap_or(now)) {
                warn!(timer = %name, pid = run.pid, "still there after SIGKILL");
            }
        }
        let _ = kill(group, Signal::SIGKILL);
        info!(timer = %name, pid = run.pid, "earlier run stopped");
        stopped.push(name);
    }
    if let Err(e) = write_runs(state_dir, &kept) {
        warn!("{e}");
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    #[test]
    fn a_recorded_run_that_still_runs_is_stopped_and_a_stale_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        // A run as venussup starts one: its own process group.
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let proc_dir = Path::new("/proc");
        let start_time = state::start_time(proc_dir, pid).unwrap();
        let mut runs = RunRecord::new();
        runs.insert(
            "pledge".into(),
            RecordedRun {
                pid,
                start_time,
                cgroup: None,
            },
        );
        // The same pid with another start time is someone else now.
        runs.insert(
            "other".into(),
            RecordedRun {
                pid,
                start_time: start_time + 1,
                cgroup: None,
            },
        );
        write_runs(dir.path(), &runs).unwrap();
        assert_eq!(read_runs(dir.path()), runs);
        // An in-place upgrade keeps its own runs.
        assert!(stop_leftover_runs(dir.path(), proc_dir, &|p| p == pid).is_empty());
        assert_eq!(
            read_runs(dir.path()).len(),
            1,
            "kept: {:?}",
            read_runs(dir.path())
        );
        let stopped = stop_leftover_runs(dir.path(), proc_dir, &|_| false);
        assert_eq!(stopped, ["pledge"]);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        assert!(read_runs(dir.path()).is_empty());
    }
}
