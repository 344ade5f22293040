//! The snapshot of the daemon that `status`, the metrics and Zabbix read:
//! the supervisor builds it, writes it to `status.json` and serves it on
//! the control socket.

use std::path::PathBuf;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::config::{Role, ServiceKind, Task};
use crate::status::prepare::Report;
use crate::util::cpulist::CpuSet;

/// The coarse state of a service: what status, the metrics and Zabbix
/// show (the supervisor's own state says what it waits for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Coarse {
    Waiting,
    Blocked,
    Starting,
    Running,
    Backoff,
    Draining,
    Stopping,
    Stopped,
    Exited,
    Failed,
    Done,
}

impl Coarse {
    /// Every state, each a series of `venussup_service_state`.
    pub const ALL: [Coarse; 11] = [
        Coarse::Waiting,
        Coarse::Blocked,
        Coarse::Starting,
        Coarse::Running,
        Coarse::Backoff,
        Coarse::Draining,
        Coarse::Stopping,
        Coarse::Stopped,
        Coarse::Exited,
        Coarse::Failed,
        Coarse::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Coarse::Waiting => "waiting",
            Coarse::Blocked => "blocked",
            Coarse::Starting => "starting",
            Coarse::Running => "running",
            Coarse::Backoff => "backoff",
            Coarse::Draining => "draining",
            Coarse::Stopping => "stopping",
            Coarse::Stopped => "stopped",
            Coarse::Exited => "exited",
            Coarse::Failed => "failed",
            Coarse::Done => "done",
        }
    }
}

/// What `status` and the metrics read: one snapshot of the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub pid: u32,
    pub started_at: u64,
    pub config: PathBuf,
    pub stopping: bool,
    /// `smt = "off"`: what this start did, and the host then.
    pub smt: Option<crate::status::smt::SmtState>,
    /// Orphaned grandchildren venussup reaped (as PID 1 or subreaper).
    pub orphans_reaped: u64,
    pub services: Vec<ServiceStatus>,
    pub timers: Vec<TimerStatus>,
    /// What `[host.prepare]` did at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<Report>,
    /// `[[host.hook]]`s, in config order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookStatus>,
    /// The daemon's version (its program, after any in-place upgrade).
    #[serde(default)]
    pub venussup: String,
    /// The last time this process's program was replaced in place
    /// (`venussup upgrade`, or the re-exec after a panic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<HandoverStatus>,
    /// The cgroups venussup holds and tracks its children in.
    #[serde(default)]
    pub cgroups: CgroupsStatus,
}

/// The cgroup hierarchy venussup uses, and whether everything it starts
/// has a cgroup it can be found and killed by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupsStatus {
    /// `cgroup v2 at /sys/fs/cgroup (cpuset, memory)`, `cgroup v1 (...)`,
    /// `no cgroups (why)`.
    pub hierarchy: String,
    /// Every service, timer run, gate command and hook has a cgroup of its
    /// own. When not, what they leave behind is found through its process
    /// group only (`hierarchy` says why).
    pub tracked: bool,
}

/// An older daemon's snapshot does not say: taken as tracked, so that
/// nothing alarms for want of a field.
impl Default for CgroupsStatus {
    fn default() -> Self {
        Self {
            hierarchy: String::new(),
            tracked: true,
        }
    }
}

/// What the last in-place handover did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoverStatus {
    /// Unix time the new image took over.
    pub at: u64,
    /// `upgrade` or `panic`.
    pub reason: String,
    /// The version of the image that handed over.
    pub from: String,
    /// The program now running.
    pub binary: PathBuf,
    /// From the old image starting the handover to the new one running
    /// its loop with everything adopted.
    pub ms: f64,
    /// What could not be carried over (empty: nothing was lost).
    #[serde(default)]
    pub lost: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookStatus {
    /// The command, or `POST <url>` (its query hidden).
    pub target: String,
    pub running: bool,
    pub queued: usize,
    #[serde(flatten)]
    pub counts: HookCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub kind: ServiceKind,
    pub state: String,
    pub ready: bool,
    pub pid: Option<i32>,
    /// Unix time the current run started.
    pub since: Option<u64>,
    pub restarts: u32,
    pub last_exit: Option<LastExit>,
    pub reason: Option<String>,
    pub cpus: Option<CpuSet>,
    pub log_file: PathBuf,
    /// OOM kills of its cgroup since venussup started.
    #[serde(default)]
    pub oom_kills: u64,
    /// While draining: how long it has waited.
    #[serde(default)]
    pub draining_secs: Option<f64>,
    /// While backing off: when the next start comes.
    #[serde(default)]
    pub next_start_in_secs: Option<f64>,
    /// CUDA indices of the GPUs the plan handed it (PCI bus order, as in
    /// its `CUDA_VISIBLE_DEVICES`); empty: none.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// Why the plan handed it those GPUs (`plan::gpus::Reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_why: Option<String>,
    /// Fatal start lines its log showed when it died young.
    #[serde(default)]
    pub fatal: FatalSeen,
    /// What the config says it is (`role`): the fleet's alerts and
    /// dashboards tell a sealer from a worker by it.
    #[serde(default)]
    pub role: Role,
    /// What it does (`tasks`), e.g. WindowPoSt.
    #[serde(default)]
    pub tasks: Vec<Task>,
}

/// The fatal start lines (`fatal_output`) a service's log showed at its
/// young deaths since venussup started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FatalSeen {
    /// Deaths whose log ended with a fatal line.
    pub count: u64,
    /// The newest of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<FatalLine>,
}

/// One fatal start line, as the log showed it (at most
/// [`FatalLine::MAX_CHARS`] characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FatalLine {
    pub line: String,
    /// Unix time of the death that showed it.
    pub at: u64,
}

impl FatalLine {
    /// Longer lines are cut here and end with `…`: a line of the log's
    /// tail may be 16 KiB, and status shows it on one line under the row.
    pub const MAX_CHARS: usize = 200;

    /// `line` trimmed and cut to [`Self::MAX_CHARS`] characters.
    pub fn new(line: &str, at: u64) -> Self {
        let line = line.trim();
        let line = match line.char_indices().nth(Self::MAX_CHARS) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_string(),
        };
        Self { line, at }
    }
}

impl FatalSeen {
    /// One more death showed `line` at `at`.
    pub fn saw(&mut self, line: &str, at: u64) {
        self.count += 1;
        self.last = Some(FatalLine::new(line, at));
    }
}

impl ServiceStatus {
    /// The one meaning of "up", for Zabbix's `venussup.service.up` and
    /// Prometheus' `venussup_service_up` alike: the service is where it
    /// should be, which is running (a process: starting, running,
    /// draining, stopping) or, for a oneshot, finished successfully
    /// (`done`). A oneshot that failed or has not run yet is not up.
    pub fn up(&self) -> bool {
        self.pid.is_some() || self.state == Coarse::Done.as_str()
    }

    /// It proves WindowPoSt, on a GPU the plan handed it: what the fleet
    /// alerts (Prometheus' `tasks`/`gpus` labels, Zabbix's
    /// `windowpost_gpu` tag) watch most closely.
    pub fn proves_window_post_on_gpu(&self) -> bool {
        self.tasks.contains(&Task::WindowPoSt) && !self.gpus.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimerStatus {
    pub name: String,
    pub running: bool,
    pub next_in_secs: Option<f64>,
    pub runs: RunCounts,
    pub last: Vec<RunRecord>,
    /// A gated timer's last gate answer and decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub at: u64,
    #[serde(flatten)]
    pub result: RunResult,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RunCounts {
    pub success: u64,
    pub full: u64,
    pub failure: u64,
    /// Due while the previous run was still going.
    pub skipped: u64,
}

/// What a hook is doing, and what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCounts {
    /// Runs that ended well (exit 0; a POST answered 2xx).
    pub ok: u64,
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

impl ExitKind {
    pub fn success(self) -> bool {
        self == ExitKind::Code(0)
    }
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Code(c) => write!(f, "exit code {c}"),
            ExitKind::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {}", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastExit {
    pub how: ExitKind,
    /// Why, when venussup knows more than the code: `oom-killed`, or the
    /// fatal start line that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// How long that run lasted, in seconds.
    pub ran_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "result", content = "reason")]
pub enum RunResult {
    Success,
    /// "Full, try later": the sealer has as many sectors as it may seal.
    Full,
    Failure(String),
}

impl RunResult {
    pub fn name(&self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Full => "full",
            RunResult::Failure(_) => "failure",
        }
    }
}

/// The last answer of the gate, for status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateStatus {
    /// Unix time of the answer.
    pub at: u64,
    /// Sectors in flight; `None` when the gate command failed.
    pub in_flight: Option<u64>,
    pub target: u32,
    /// Runs let through this tick.
    pub runs: u32,
    /// Why none, when the gate command failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl GateStatus {
    /// `gate: 5 in flight, target 6: pledging 1`.
    pub fn line(&self) -> String {
        match (self.in_flight, &self.error) {
            (_, Some(e)) => format!("gate: failed ({e}): holding"),
            (Some(n), None) if self.runs == 0 => {
                format!("gate: {n} in flight, target {}: holding", self.target)
            }
            (Some(n), None) => format!(
                "gate: {n} in flight, target {}: pledging {}",
                self.target, self.runs
            ),
            (None, None) => "gate: no answer yet".to_string(),
        }
    }
}

#[cfg(test)]
pub(crate) mod sample {
    use super::*;

    /// A running daemon service `name`, nothing else set.
    pub fn service(name: &str) -> ServiceStatus {
        ServiceStatus {
            name: name.to_string(),
            kind: ServiceKind::Daemon,
            state: Coarse::Running.as_str().to_string(),
            ready: true,
            pid: Some(4242),
            since: Some(1_700_000_000),
            restarts: 0,
            last_exit: None,
            reason: None,
            cpus: None,
            log_file: PathBuf::from(format!("/var/log/venussup/{name}.log")),
            oom_kills: 0,
            draining_secs: None,
            next_start_in_secs: None,
            gpus: Vec::new(),
            gpus_why: None,
            fatal: FatalSeen::default(),
            role: Role::Other,
            tasks: Vec::new(),
        }
    }

    /// A snapshot of `services`, nothing else set.
    pub fn snapshot(services: Vec<ServiceStatus>) -> Snapshot {
        Snapshot {
            version: 1,
            pid: 1,
            started_at: 1_700_000_000,
            config: PathBuf::from("/etc/venussup.toml"),
            stopping: false,
            smt: None,
            orphans_reaped: 0,
            services,
            timers: Vec::new(),
            prepare: None,
            hooks: Vec::new(),
            venussup: String::new(),
            handover: None,
            cgroups: CgroupsStatus::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fatal_line_is_trimmed_and_cut_at_200_characters() {
        assert_eq!(
            FatalLine::new("  opening path /x \n", 7).line,
            "opening path /x"
        );
        let long = "é".repeat(500);
        let cut = FatalLine::new(&long, 7).line;
        assert_eq!(cut.chars().count(), FatalLine::MAX_CHARS + 1);
        assert!(cut.ends_with("é…"), "{cut}");
        let exact = "x".repeat(FatalLine::MAX_CHARS);
        assert_eq!(FatalLine::new(&exact, 7).line, exact, "not cut");
    }

    #[test]
    fn a_snapshot_from_an_older_daemon_has_no_gpus_and_no_fatal_lines() {
        let mut v = serde_json::to_value(sample::service("sealer")).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("gpus");
        o.remove("fatal");
        let s: ServiceStatus = serde_json::from_value(v).unwrap();
        assert!(s.gpus.is_empty());
        assert_eq!(s.fatal, FatalSeen::default());
    }

    #[test]
    fn fatal_seen_counts_and_keeps_the_newest() {
        let mut f = FatalSeen::default();
        f.saw("repo is already locked", 10);
        f.saw("address already in use", 20);
        assert_eq!(f.count, 2);
        assert_eq!(
            f.last,
            Some(FatalLine {
                line: "address already in use".into(),
                at: 20
            })
        );
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["last"]["line"], "address already in use");
    }
}
