//! What the supervisor's decisions ask for. The pure modules (`service`,
//! `start`, `exits`, `stop`, `drain`, `timer`, `gate`) take a state, an
//! event and `now`, and give back the next state and a list of these;
//! `supervisor/effect.rs` carries them out, in order, for the service or
//! timer the decision was about.
//!
//! Deadlines are not effects: they are part of the state (`Backoff
//! { until }`, `Stopping { kill_at }`, a timer's `due`), and the loop
//! sleeps until the earliest one.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::EventKind;

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start it: a service (the checks before a start, log rotation,
    /// confinement, the spawn), or a timer's run.
    Start,
    /// Ask a gated timer's gate how many sectors are in flight.
    AskGate,
    /// Try a starting service's ready probe now.
    Probe,
    /// Start a drain command of a service; `capture` pipes its output
    /// back (the quiet probe's answer), else it goes to the service's log.
    RunDrainHelper { argv: Vec<String>, capture: bool },
    /// Signal a process group (every child is the leader of its own).
    Kill { pid: Pid, sig: Signal },
    /// Tell the hooks that want this event (the service or timer it is
    /// about is filled in by who carries it out).
    Hook {
        event: EventKind,
        exit: Option<String>,
        message: String,
    },
    /// A line in venussup's log, tagged with the service or timer.
    Log { level: Level, message: String },
    /// Kill what is left in the service's cgroup (its main process is
    /// gone; nothing it started may outlive it into the next run).
    EmptyCgroup,
    /// Kill what is left in the service's cgroup and remove it.
    Release,
    /// Record a `once = true` oneshot's success in the state folder.
    RecordOnce,
    /// A stop venussup asked for is complete: what follows it (a restart,
    /// a changed plan taking over), and the cgroup released if the
    /// service stays stopped.
    FinishRequestedStop,
}

impl Effect {
    pub fn info(message: impl Into<String>) -> Self {
        Effect::Log {
            level: Level::Info,
            message: message.into(),
        }
    }

    pub fn warn(message: impl Into<String>) -> Self {
        Effect::Log {
            level: Level::Warn,
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Effect::Log {
            level: Level::Error,
            message: message.into(),
        }
    }

    pub fn kill(pid: Pid, sig: Signal) -> Self {
        Effect::Kill { pid, sig }
    }
}

/// Test helpers: what a list of effects contains.
#[cfg(test)]
pub mod check {
    use super::*;

    /// The signals sent, in order.
    pub fn kills(fx: &[Effect]) -> Vec<(i32, Signal)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Kill { pid, sig } => Some((pid.as_raw(), *sig)),
                _ => None,
            })
            .collect()
    }

    /// The log lines, in order.
    pub fn logs(fx: &[Effect]) -> Vec<&str> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Log { message, .. } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The hook events, in order.
    pub fn hooks(fx: &[Effect]) -> Vec<EventKind> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Hook { event, .. } => Some(*event),
                _ => None,
            })
            .collect()
    }

    pub fn starts(fx: &[Effect]) -> bool {
        fx.contains(&Effect::Start)
    }

    pub fn drains(fx: &[Effect]) -> bool {
        fx.iter()
            .any(|e| matches!(e, Effect::RunDrainHelper { .. }))
    }
}
