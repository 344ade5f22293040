//! The handover: what a running venussup gives the next image of itself
//! when it replaces its program in place (`venussup upgrade`, or the
//! re-exec after a panic), so that image goes on with the same children as
//! if nothing had happened. Pure: the types, their conversion from and to
//! the supervisor's state, the version rule; `supervisor/handover.rs`
//! fills them and adopts what they describe.
//!
//! **Where.** A memfd (an anonymous in-memory file: nothing on disk, nothing
//! left behind) that crosses `execve`; its descriptor number is the next
//! image's `run --handover FD`.
//!
//! **Layout.** Two JSON lines. The first is the [`Header`], whose shape
//! never changes: the magic word, the format, the writer's version, why
//! (upgrade or panic), when the handover began, and which inherited
//! descriptor is what: the host lock, the control socket's listener and
//! the metrics listener. A next image that cannot read the rest still keeps
//! those (no refused connection, the lock never free). The second line is
//! the [`State`]: every service, timer and hook, and the descriptors that
//! go with them (each [`HandedFd`] by number and inode).
//!
//! **Version rule.** A binary writes format [`FORMAT`] and reads every
//! format from 1 up to its own; within a format, fields are only ever
//! added, with defaults, so a reader takes a state from a writer of the
//! same format with fields it does not know (ignored) or lacks (defaults).
//! A change that cannot be read that way bumps the format. Each binary's
//! `--version` line says its format ([`VERSION`]), and `upgrade` refuses a
//! binary that reads less than this one writes, before anything happens.
//!
//! **Time.** Every `Instant` travels as CLOCK_MONOTONIC nanoseconds
//! ([`Mono`]), which the next image reads on the same clock (the same
//! boot): a backoff's end, a SIGKILL deadline or a timer's next run stay
//! exactly where they were.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::backoff::Backoff;
use super::drain::{Drain, Phase};
use super::hooks::Event;
use super::service::{Lifecycle, State as ServiceState};
use super::timer::{Running, TimerState};
use crate::control::http::ConnRecord;
use crate::control::server::ClientRecord;
use crate::status::{FatalSeen, GateStatus, HookCounts, LastExit, RunCounts, RunRecord};
use crate::sys::reexec::HandedFd;
use crate::util::clock::after;

/// The format this binary writes; it reads every one from 1 up to it.
pub const FORMAT: u32 = 1;
/// The first word of every handover.
pub const MAGIC: &str = "venussup-handover";
/// What `venussup --version` prints after the name: the version and the
/// handover format, which `upgrade` reads off a candidate binary.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (handover format 1)");
/// A second panic this soon after the first ends venussup (abort; systemd
/// restarts it) instead of re-executing again.
pub const PANIC_WINDOW: Duration = Duration::from_secs(60);

/// A point in time as CLOCK_MONOTONIC nanoseconds: the same in the next
/// image of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mono(pub u64);

/// One moment read on both clocks, to carry `Instant`s across the exec.
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    pub instant: Instant,
    pub mono: Mono,
}

impl Anchor {
    /// Now, on both clocks (`Instant` is CLOCK_MONOTONIC on Linux).
    pub fn now() -> Self {
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_or((0, 0), |t| (t.tv_sec(), t.tv_nsec()));
        let ns = u64::try_from(ts.0)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(ts.1).unwrap_or(0));
        Self {
            instant: Instant::now(),
            mono: Mono(ns),
        }
    }

    /// `t` as CLOCK_MONOTONIC nanoseconds.
    pub fn mono(&self, t: Instant) -> Mono {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        if t >= self.instant {
            Mono(self.mono.0.saturating_add(nanos(t - self.instant)))
        } else {
            Mono(self.mono.0.saturating_sub(nanos(self.instant - t)))
        }
    }

    /// The `Instant` of `m`.
    pub fn instant(&self, m: Mono) -> Instant {
        if m >= self.mono {
            after(self.instant, Duration::from_nanos(m.0 - self.mono.0))
        } else {
            let back = Duration::from_nanos(self.mono.0 - m.0);
            self.instant.checked_sub(back).unwrap_or(self.instant)
        }
    }

    fn opt(&self, t: Option<Instant>) -> Option<Mono> {
        t.map(|t| self.mono(t))
    }

    fn back(&self, m: Option<Mono>) -> Option<Instant> {
        m.map(|m| self.instant(m))
    }
}

/// Why the handover happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// `venussup upgrade`: a consistent state, taken between two events.
    Upgrade,
    /// The re-exec after a panic: the state as of the end of the last
    /// loop turn before it (best effort).
    Panic,
}

/// The descriptors every next image must find, whatever else it can read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fds {
    /// `venussup.lock` in the state folder, flock'ed: one daemon per host.
    #[serde(default)]
    pub lock: Option<HandedFd>,
    /// The control socket's listening Unix socket.
    #[serde(default)]
    pub control: Option<HandedFd>,
    /// The Prometheus listener (`[host] metrics.listen`), if bound.
    #[serde(default)]
    pub metrics: Option<HandedFd>,
}

/// The first line: never changes shape, so any later binary reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub magic: String,
    pub format: u32,
    /// The writer's version (`CARGO_PKG_VERSION`).
    pub writer: String,
    pub reason: Reason,
    /// When the old image began the handover.
    pub began: Mono,
    #[serde(default)]
    pub fds: Fds,
}

impl Header {
    pub fn new(reason: Reason, began: Mono, fds: Fds) -> Self {
        Self {
            magic: MAGIC.to_string(),
            format: FORMAT,
            writer: env!("CARGO_PKG_VERSION").to_string(),
            reason,
            began,
            fds,
        }
    }
}

/// The second line: the supervisor as it was.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Unix time the daemon (this process) started, before any re-exec.
    pub started_at: u64,
    /// What `upgrade` runs when not told: the file the daemon was started
    /// from.
    pub binary: PathBuf,
    /// READY=1 went to systemd already: it is not sent again.
    pub announced_ready: bool,
    /// The daemon was stopping (a panic during the shutdown).
    pub stopping: bool,
    pub orphans_reaped: u64,
    /// The jitter generator's state.
    pub jitter: u64,
    pub next_watchdog: Option<Mono>,
    pub smt: Option<crate::status::smt::SmtState>,
    pub prepare: Option<crate::status::prepare::Report>,
    pub services: Vec<ServiceRecord>,
    pub timers: Vec<TimerRecord>,
    pub hooks: Vec<HookRecord>,
    /// Connected control clients (an upgrade hands them over; a panic
    /// does not).
    pub control_clients: Vec<ClientRecord>,
    pub control_next_id: u64,
    /// Open connections of the metrics listener.
    pub http_conns: Vec<ConnRecord>,
    /// The control client whose `upgrade` the next image answers.
    pub upgrade_client: Option<u64>,
}

/// What a service is waiting for, with its times as [`Mono`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum StateRecord {
    #[default]
    Waiting,
    Blocked {
        reason: String,
    },
    Starting {
        pid: i32,
        probe_until: Mono,
    },
    Running {
        pid: i32,
    },
    Backoff {
        until: Mono,
    },
    Draining {
        pid: i32,
        since: Mono,
        until: Mono,
    },
    Stopping {
        pid: i32,
        kill_at: Option<Mono>,
    },
    Stopped,
    Exited,
    Failed {
        reason: String,
    },
    Done,
}

/// Where a planned stop's drain is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseRecord {
    #[default]
    Off,
    Command,
    Quiet,
    StopCommand,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrainRecord {
    pub phase: PhaseRecord,
    pub helper: Option<i32>,
    pub next_poll: Option<Mono>,
    pub quiet_since: Option<Mono>,
}

/// A service's lifecycle (`service::Lifecycle`, which is private to the
/// runtime).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LifeRecord {
    pub state: StateRecord,
    pub ready: bool,
    pub restarts: u32,
    /// Young deaths in a row (the backoff's exponent).
    pub young_deaths: u32,
    pub history: Vec<Mono>,
    pub reason: Option<String>,
    pub run_started: Option<Mono>,
    pub probe_at: Option<Mono>,
    pub probe_pid: Option<i32>,
    pub last_exit: Option<LastExit>,
    pub recent_exits: Vec<LastExit>,
    pub oom_kills: u64,
    /// Absent in the record of an older image: none seen (the count
    /// restarts at 0 after such an upgrade).
    pub fatal: FatalSeen,
    pub drain: DrainRecord,
}

/// One service: its lifecycle and what the supervisor keeps beside it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceRecord {
    pub name: String,
    pub life: LifeRecord,
    /// Field 22 of /proc/PID/stat of its pid: the next image checks that
    /// pid is still this process.
    pub start_time: Option<u64>,
    /// Its cgroup's OOM kill count when the run started.
    pub oom_base: Option<u64>,
    /// A stop venussup asked for is followed by a start (`restart`).
    pub start_again: bool,
    pub confine_warned: bool,
    /// The quiet probe's output pipe, while it runs.
    pub drain_output: Option<HandedFd>,
}

/// A timer's run or gate command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningRecord {
    pub pid: i32,
    pub started: Mono,
    pub kill_at: Option<Mono>,
    /// Killed past its timeout after this many nanoseconds.
    #[serde(default)]
    pub timed_out_ns: Option<u64>,
}

/// The output of a timer's run (or gate command) while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputRecord {
    /// The read end of its pipe; `None` once it reached end of file.
    pub pipe: Option<HandedFd>,
    /// The tail kept for matching (as text: a character cut at the
    /// start of the tail reads as U+FFFD, which matches nothing).
    pub kept: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TimerRecord {
    pub name: String,
    pub due: Option<Mono>,
    pub run: Option<RunningRecord>,
    pub asking: Option<RunningRecord>,
    pub pending: u32,
    pub next_pending: Option<Mono>,
    pub counts: RunCounts,
    pub last: Vec<RunRecord>,
    pub gate: Option<GateStatus>,
    pub run_output: Option<OutputRecord>,
    pub gate_output: Option<OutputRecord>,
}

/// A running hook child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRunRecord {
    pub pid: i32,
    pub kill_at: Option<Mono>,
}

/// One `[[host.hook]]`: its queue and counts, matched by position and
/// target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HookRecord {
    pub target: String,
    pub busy: bool,
    pub queue: Vec<Event>,
    pub counts: HookCounts,
    pub run: Option<HookRunRecord>,
}

fn pid(p: Pid) -> i32 {
    p.as_raw()
}

impl StateRecord {
    pub fn of(s: &ServiceState, a: &Anchor) -> Self {
        match s {
            ServiceState::Waiting => Self::Waiting,
            ServiceState::Blocked { reason } => Self::Blocked {
                reason: reason.clone(),
            },
            ServiceState::Starting {
                pid: p,
                probe_until,
            } => Self::Starting {
                pid: pid(*p),
                probe_until: a.mono(*probe_until),
            },
            ServiceState::Running { pid: p } => Self::Running { pid: pid(*p) },
            ServiceState::Backoff { until } => Self::Backoff {
                until: a.mono(*until),
            },
            ServiceState::Draining {
                pid: p,
                since,
                until,
            } => Self::Draining {
                pid: pid(*p),
                since: a.mono(*since),
                until: a.mono(*until),
            },
            ServiceState::Stopping { pid: p, kill_at } => Self::Stopping {
                pid: pid(*p),
                kill_at: a.opt(*kill_at),
            },
            ServiceState::Stopped => Self::Stopped,
            ServiceState::Exited => Self::Exited,
            ServiceState::Failed { reason } => Self::Failed {
                reason: reason.clone(),
            },
            ServiceState::Done => Self::Done,
        }
    }

    pub fn state(&self, a: &Anchor) -> ServiceState {
        let p = Pid::from_raw;
        match self {
            Self::Waiting => ServiceState::Waiting,
            Self::Blocked { reason } => ServiceState::Blocked {
                reason: reason.clone(),
            },
            Self::Starting { pid, probe_until } => ServiceState::Starting {
                pid: p(*pid),
                probe_until: a.instant(*probe_until),
            },
            Self::Running { pid } => ServiceState::Running { pid: p(*pid) },
            Self::Backoff { until } => ServiceState::Backoff {
                until: a.instant(*until),
            },
            Self::Draining { pid, since, until } => ServiceState::Draining {
                pid: p(*pid),
                since: a.instant(*since),
                until: a.instant(*until),
            },
            Self::Stopping { pid, kill_at } => ServiceState::Stopping {
                pid: p(*pid),
                kill_at: a.back(*kill_at),
            },
            Self::Stopped => ServiceState::Stopped,
            Self::Exited => ServiceState::Exited,
            Self::Failed { reason } => ServiceState::Failed {
                reason: reason.clone(),
            },
            Self::Done => ServiceState::Done,
        }
    }
}

impl LifeRecord {
    pub fn of(l: &Lifecycle, a: &Anchor) -> Self {
        Self {
            state: StateRecord::of(&l.state, a),
            ready: l.ready,
            restarts: l.restarts,
            young_deaths: l.backoff.young_deaths(),
            history: l.history.iter().map(|t| a.mono(*t)).collect(),
            reason: l.reason.clone(),
            run_started: a.opt(l.run_started),
            probe_at: a.opt(l.probe_at),
            probe_pid: l.probe_pid.map(pid),
            last_exit: l.last_exit.clone(),
            recent_exits: l.recent_exits.iter().cloned().collect(),
            oom_kills: l.oom_kills,
            fatal: l.fatal.clone(),
            drain: DrainRecord {
                phase: match l.drain.phase {
                    Phase::Off => PhaseRecord::Off,
                    Phase::Command => PhaseRecord::Command,
                    Phase::Quiet => PhaseRecord::Quiet,
                    Phase::StopCommand => PhaseRecord::StopCommand,
                },
                helper: l.drain.helper.map(pid),
                next_poll: a.opt(l.drain.next_poll),
                quiet_since: a.opt(l.drain.quiet_since),
            },
        }
    }

    pub fn lifecycle(&self, a: &Anchor) -> Lifecycle {
        Lifecycle {
            state: self.state.state(a),
            ready: self.ready,
            restarts: self.restarts,
            backoff: Backoff::after(self.young_deaths),
            history: self.history.iter().map(|m| a.instant(*m)).collect(),
            reason: self.reason.clone(),
            run_started: a.back(self.run_started),
            probe_at: a.back(self.probe_at),
            probe_pid: self.probe_pid.map(Pid::from_raw),
            last_exit: self.last_exit.clone(),
            recent_exits: self.recent_exits.iter().cloned().collect::<VecDeque<_>>(),
            oom_kills: self.oom_kills,
            fatal: self.fatal.clone(),
            drain: Drain {
                phase: match self.drain.phase {
                    PhaseRecord::Off => Phase::Off,
                    PhaseRecord::Command => Phase::Command,
                    PhaseRecord::Quiet => Phase::Quiet,
                    PhaseRecord::StopCommand => Phase::StopCommand,
                },
                helper: self.drain.helper.map(Pid::from_raw),
                next_poll: a.back(self.drain.next_poll),
                quiet_since: a.back(self.drain.quiet_since),
            },
        }
    }
}

impl RunningRecord {
    pub fn of(r: &Running, a: &Anchor) -> Self {
        Self {
            pid: pid(r.pid),
            started: a.mono(r.started),
            kill_at: a.opt(r.kill_at),
            timed_out_ns: r
                .timed_out
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        }
    }

    pub fn running(&self, a: &Anchor) -> Running {
        Running {
            pid: Pid::from_raw(self.pid),
            started: a.instant(self.started),
            kill_at: a.back(self.kill_at),
            timed_out: self.timed_out_ns.map(Duration::from_nanos),
        }
    }
}

impl TimerRecord {
    /// The decisions' part of a timer (its outputs are the caller's).
    pub fn of(name: &str, t: &TimerState, a: &Anchor) -> Self {
        Self {
            name: name.to_string(),
            due: a.opt(t.due),
            run: t.run.as_ref().map(|r| RunningRecord::of(r, a)),
            asking: t.asking.as_ref().map(|r| RunningRecord::of(r, a)),
            pending: t.pending,
            next_pending: a.opt(t.next_pending),
            counts: t.counts.clone(),
            last: t.last.iter().cloned().collect(),
            gate: t.gate.clone(),
            run_output: None,
            gate_output: None,
        }
    }

    pub fn timer_state(&self, a: &Anchor) -> TimerState {
        TimerState {
            due: a.back(self.due),
            run: self.run.map(|r| r.running(a)),
            asking: self.asking.map(|r| r.running(a)),
            pending: self.pending,
            next_pending: a.back(self.next_pending),
            counts: self.counts.clone(),
            last: self.last.iter().cloned().collect(),
            gate: self.gate.clone(),
        }
    }
}

/// A service whose process is gone and was not reaped as ours (a panic's
/// state is as of the end of the last loop turn: its process may have died
/// and been reaped since): a run ends as a death of unknown cause and
/// starts again at once; a stop is complete.
pub fn lost_process(mut life: Lifecycle, start_again: bool, now: Instant) -> Lifecycle {
    let Some(p) = life.state.pid() else {
        return life;
    };
    life.ready = false;
    life.probe_at = None;
    life.state = match life.state {
        ServiceState::Stopping { .. } | ServiceState::Draining { .. } if !start_again => {
            ServiceState::Stopped
        }
        ServiceState::Stopping { .. } | ServiceState::Draining { .. } => ServiceState::Waiting,
        _ => {
            life.restarts += 1;
            life.reason = Some(format!(
                "its process {p} was gone after the handover (exit unknown); started again"
            ));
            ServiceState::Backoff { until: now }
        }
    };
    life
}

/// The two lines, ready for the memfd.
pub fn encode(header: &Header, state: &State) -> Result<Vec<u8>, String> {
    let mut bytes = serde_json::to_vec(header).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    serde_json::to_writer(&mut bytes, state).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// What a next image read: the header, and the state or why not.
#[derive(Debug)]
pub struct Decoded {
    pub header: Header,
    pub state: Result<State, String>,
}

/// Reads a handover. `Err` when even the header cannot be read (then
/// nothing of it can be trusted); a state this binary cannot read is
/// `Decoded::state`'s error, with the header's descriptors still usable.
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let (first, rest) = match bytes.iter().position(|b| *b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[][..]),
    };
    let header: Header = serde_json::from_slice(first)
        .map_err(|e| format!("the handover's first line is not a venussup header ({e})"))?;
    if header.magic != MAGIC {
        return Err(format!(
            "the handover starts with `{}`, not `{MAGIC}`",
            header.magic
        ));
    }
    let state = readable(&header).and_then(|()| {
        serde_json::from_slice(rest.trim_ascii_end()).map_err(|e| {
            format!(
                "the handover's state (format {}, from venussup {}) is unreadable: {e}",
                header.format, header.writer
            )
        })
    });
    Ok(Decoded { header, state })
}

/// Whether this binary reads the format `header` says.
pub fn readable(header: &Header) -> Result<(), String> {
    if header.format == 0 || header.format > FORMAT {
        return Err(format!(
            "the handover is format {} (written by venussup {}), and this venussup {} reads formats 1 to {FORMAT}",
            header.format,
            header.writer,
            env!("CARGO_PKG_VERSION")
        ));
    }
    Ok(())
}

/// What a candidate binary's `--version` line says: its version and the
/// newest handover format it reads; why it cannot take over from this
/// binary otherwise.
pub fn candidate(version_line: &str) -> Result<(String, u32), String> {
    let line = version_line.lines().next().unwrap_or("").trim();
    let Some(rest) = line.strip_prefix("venussup ") else {
        return Err(format!(
            "its `--version` printed {line:?}, not a venussup version line"
        ));
    };
    let (version, format) = match rest.split_once(" (handover format ") {
        Some((v, f)) => (v, f.strip_suffix(')').and_then(|f| f.parse::<u32>().ok())),
        None => (rest, None),
    };
    let Some(format) = format else {
        return Err(format!(
            "it is venussup {version}, which reads no handover (it predates in-place upgrades): it cannot take over in place; install it and `systemctl restart venussup` when no sealing job would be lost"
        ));
    };
    if format < FORMAT {
        return Err(format!(
            "it is venussup {version}, which reads handover formats up to {format}, and this venussup {} writes format {FORMAT}: it cannot take over in place; install it and `systemctl restart venussup` when no sealing job would be lost",
            env!("CARGO_PKG_VERSION")
        ));
    }
    Ok((version.to_string(), format))
}

/// Whether a panic now ends venussup: the last one was less than
/// [`PANIC_WINDOW`] ago.
pub fn gives_up(previous_panic: Option<Mono>, now: Mono) -> bool {
    previous_panic.is_some_and(|p| {
        now.0.saturating_sub(p.0) < u64::try_from(PANIC_WINDOW.as_nanos()).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests;
