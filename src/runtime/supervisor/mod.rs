//! The event loop: one `poll` over the signal pipe and the output pipes of
//! timer runs, with one computed deadline; an idle supervisor sleeps until
//! a signal or the next deadline, never on a tick.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use super::backoff::{Backoff, BackoffPolicy};
use super::limits::{self, Ceilings};
use super::logs::{self, LogWatch};
use super::notify::Notifier;
use super::service::{after_exit, AfterExit, RestartRules, State};
use super::signals::Signals;
use super::state::{self, PidRecord, RecordedPid};
use super::timer::{self, Jitter};
use crate::config::values::Limit;
use crate::config::{EventKind, ServiceKind};
use crate::control::http::{HttpToken, MetricsServer};
use crate::control::server::{Server, Token};
use crate::plan::{Plan, ReadyPlan, ServicePlan, TimerPlan};
use crate::runtime::confine::{self, CgroupSetup, Confinement};
use crate::status::{ExitKind, GateStatus, LastExit, RunCounts, RunRecord, RunResult};
use crate::sys::spawn::{self, ChildHook, Identity, Output, SpawnSpec};
use crate::util::clock::unix_now;
use crate::util::fsroot::FsRoot;

mod control;
mod drain;
mod gate;
mod hooks;
mod snapshot;

/// How often a ready probe is tried while a service starts.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long one TCP probe may wait for a connection.
const TCP_PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// A timer run asked to stop gets this long before SIGKILL.
const TIMER_STOP_GRACE: Duration = Duration::from_secs(10);
/// Results of each timer kept for status.
const TIMER_HISTORY: usize = 10;
/// Exits of each service kept for `status NAME`.
const RECENT_EXITS: usize = 5;
/// Log lines of a young death searched for a fatal start error.
const FATAL_LINES: usize = 30;

/// Who a child pid belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Service(usize),
    Probe(usize),
    /// A drain command or quiet probe of a service.
    Drain(usize),
    Timer(usize),
    /// A run of `[[host.hook]]` number k.
    Hook(usize),
    /// The gate command of timer i.
    Gate(usize),
}

/// Where a planned stop's drain is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum DrainPhase {
    #[default]
    Off,
    /// Its drain command runs (no new tasks).
    Command,
    /// Its quiet probe is polled until idle long enough.
    Quiet,
    /// Its stop command runs; the stop signal follows.
    StopCommand,
}

#[derive(Debug, Default)]
struct DrainProgress {
    phase: DrainPhase,
    helper: Option<Pid>,
    /// The quiet probe's output (matched against `quiet_output`).
    helper_out: Option<File>,
    next_poll: Option<Instant>,
    quiet_since: Option<Instant>,
}

#[derive(Debug)]
struct Service {
    plan: ServicePlan,
    rules: RestartRules,
    deps: Vec<usize>,
    identity: Option<Identity>,
    /// Its confinement warnings were logged (once per service, not per
    /// start).
    confine_warned: bool,
    state: State,
    ready: bool,
    restarts: u32,
    last_exit: Option<LastExit>,
    backoff: Backoff,
    history: VecDeque<Instant>,
    /// Next probe attempt, and the pid of a running command probe.
    probe_at: Option<Instant>,
    probe_pid: Option<Pid>,
    /// Why it is not running as it should (spawn error, probe timeout).
    reason: Option<String>,
    /// When the current (or last) run started.
    run_started: Option<Instant>,
    /// The kernel's start time of the current pid (`services.json`).
    start_time: Option<u64>,
    drain: DrainProgress,
    /// The cgroup's OOM kill count when the current run started.
    oom_base: Option<u64>,
    oom_kills: u64,
    /// The last few exits, newest first, for `status NAME`.
    recent_exits: VecDeque<LastExit>,
    after_stop: AfterStop,
    /// A reload changed it: this plan takes over at its next start.
    replacement: Option<ServicePlan>,
    /// A reload removed it: dropped once stopped.
    retiring: bool,
    /// The rlimits it really gets (see `limits.rs`).
    nofile: Limit,
    memlock: Limit,
}

impl Service {
    /// A service as first seen (at start or in a reload), not yet started.
    fn new(s: &ServicePlan, ceilings: &Ceilings, clamped: &mut BTreeSet<String>) -> Self {
        let identity = s.user.as_ref().and_then(|u| {
            spawn::identity(u, s.group.as_deref())
                .map_err(|e| error!(service = %s.name, "{e}; it cannot start"))
                .ok()
        });
        let (nofile, why) = limits::clamp("nofile", s.limits.nofile, ceilings.nofile);
        let (memlock, why2) = limits::clamp("memlock", s.limits.memlock, ceilings.memlock);
        clamped.extend([why, why2].into_iter().flatten());
        Service {
            run_started: None,
            start_time: None,
            drain: DrainProgress::default(),
            oom_base: None,
            oom_kills: 0,
            nofile,
            memlock,
            deps: Vec::new(),
            rules: RestartRules {
                kind: s.kind,
                policy: s.restart.policy,
                backoff: BackoffPolicy {
                    max: s.restart.backoff_max.0,
                    stable_after: s.restart.stable_after.0,
                    ..BackoffPolicy::default()
                },
                give_up: s.restart.give_up.clone(),
            },
            identity,
            confine_warned: false,
            plan: s.clone(),
            state: State::Waiting,
            ready: false,
            restarts: 0,
            last_exit: None,
            recent_exits: VecDeque::new(),
            backoff: Backoff::default(),
            history: VecDeque::new(),
            probe_at: None,
            probe_pid: None,
            reason: None,
            after_stop: AfterStop::StayStopped,
            replacement: None,
            retiring: false,
        }
    }
}

impl Service {
    /// A side process of this service (ready probe, drain command): its
    /// environment, folder and user; no limits or confinement of its own.
    fn side_process<'a>(&'a self, argv: &'a [String], output: Output) -> SpawnSpec<'a> {
        SpawnSpec {
            workdir: self.plan.workdir.as_deref(),
            identity: self.identity.as_ref(),
            ..SpawnSpec::helper(argv, &self.plan.env, output, None)
        }
    }
}

/// What a service does once a stop venussup asked for is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    StayStopped,
    /// `restart NAME`, or a reload that changed it.
    StartAgain,
}

#[derive(Debug)]
struct Run {
    pid: Pid,
    started: Instant,
    kill_at: Option<Instant>,
    timed_out: Option<Duration>,
    output: Option<File>,
    log: Option<File>,
    kept: Vec<u8>,
}

impl Run {
    /// A timer's run (or its gate command) that just started.
    fn started(
        child: spawn::Spawned,
        now: Instant,
        timeout: Option<crate::config::values::HumanDuration>,
        log: Option<File>,
    ) -> Self {
        Run {
            pid: child.pid,
            started: now,
            kill_at: timeout.map(|d| now + d.0),
            timed_out: None,
            output: child.output,
            log,
            kept: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Timer {
    plan: TimerPlan,
    deps: Vec<usize>,
    due: Option<Instant>,
    run: Option<Run>,
    counts: RunCounts,
    last: VecDeque<RunRecord>,
    /// The gate command of this tick, while it runs.
    asking: Option<Run>,
    /// Runs the gate let through that have not started yet, and when the
    /// next one may (`spacing` after the last).
    pending: u32,
    next_pending: Option<Instant>,
    gate: Option<GateStatus>,
}

impl Timer {
    /// The timer's run, or its gate command's.
    fn run_of(&mut self, gate: bool) -> Option<&mut Run> {
        if gate {
            self.asking.as_mut()
        } else {
            self.run.as_mut()
        }
    }

    /// In the middle of a tick: asking the gate, running, or waiting to
    /// run again.
    fn busy(&self) -> bool {
        self.run.is_some() || self.asking.is_some() || self.next_pending.is_some()
    }

    fn new(plan: &TimerPlan) -> Self {
        Timer {
            asking: None,
            pending: 0,
            next_pending: None,
            gate: None,
            deps: Vec::new(),
            plan: plan.clone(),
            due: None,
            run: None,
            counts: RunCounts::default(),
            last: VecDeque::new(),
        }
    }
}

/// Everything the loop needs from outside.
#[derive(Debug)]
pub struct Setup {
    pub plan: Plan,
    pub state_dir: PathBuf,
    pub smt: Option<crate::status::smt::SmtState>,
    pub notifier: Notifier,
    /// Child-side confinement per service name (CPU affinity, cgroup).
    /// The cgroup hierarchy services are confined in, if any.
    pub cgroups: Option<CgroupSetup>,
    /// The control socket, when it could be bound.
    pub control: Option<Server>,
    /// Where the host is read (reload plans again).
    pub fs_root: FsRoot,
    /// The Prometheus listener, when configured and bound.
    pub http: Option<MetricsServer>,
    pub ceilings: Ceilings,
    /// What `[host.prepare]` did at start.
    pub prepare: Option<crate::status::prepare::Report>,
    /// Events from before the loop (SMT step, host preparation) for hooks.
    pub events: Vec<crate::runtime::hooks::Event>,
}

#[derive(Debug)]
pub struct Supervisor {
    services: Vec<Service>,
    timers: Vec<Timer>,
    owners: HashMap<Pid, Owner>,
    signals: Signals,
    state_dir: PathBuf,
    config: PathBuf,
    smt: Option<crate::status::smt::SmtState>,
    notifier: Notifier,
    started_at: u64,
    stopping: bool,
    announced_ready: bool,
    next_watchdog: Option<Instant>,
    jitter: Jitter,
    dirty: bool,
    /// `services.json` is behind the pids.
    pids_dirty: bool,
    orphans_reaped: u64,
    logs: LogWatch,
    log_max: u64,
    log_keep: u32,
    ceilings: Ceilings,
    control: Option<Server>,
    http: Option<MetricsServer>,
    fs_root: FsRoot,
    cgroups: Option<CgroupSetup>,
    /// `/proc/self/mountinfo`, polled while a service is blocked on a mount.
    mounts: Option<File>,
    prepare: Option<crate::status::prepare::Report>,
    hooks: Vec<hooks::Hook>,
    log_dir: PathBuf,
    /// node_exporter's textfile, and when it may be written next.
    textfile: Option<PathBuf>,
    textfile_throttle: super::textfile::Throttle,
}

fn kill_group(pid: Pid, sig: Signal) {
    // The child called setsid: its pid is its process group.
    match kill(Pid::from_raw(-pid.as_raw()), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(
            "failed to send {} to process group {pid}: {e}",
            sig.as_str()
        ),
    }
}

fn exit_kind(status: WaitStatus) -> Option<(Pid, ExitKind)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid, ExitKind::Code(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid, ExitKind::Signal(sig as i32))),
        _ => None,
    }
}

impl Supervisor {
    pub fn new(setup: Setup) -> std::io::Result<Self> {
        let Setup {
            plan,
            state_dir,
            smt,
            notifier,
            cgroups,
            ceilings,
            control,
            fs_root,
            http,
            prepare,
            events: early_events,
        } = setup;
        let mut clamped = BTreeSet::new();
        let services = plan
            .services
            .iter()
            .map(|s| Service::new(s, &ceilings, &mut clamped))
            .collect();
        for w in clamped {
            warn!("{w}");
        }
        let timers = plan.timers.iter().map(Timer::new).collect();
        let mut me = Self {
            services,
            timers,
            owners: HashMap::new(),
            signals: Signals::install()?,
            state_dir,
            config: plan.config.clone(),
            smt,
            next_watchdog: notifier.watchdog_every.map(|_| Instant::now()),
            notifier,
            started_at: unix_now(),
            stopping: false,
            announced_ready: false,
            jitter: Jitter::seeded(unix_now() ^ u64::from(std::process::id())),
            dirty: true,
            pids_dirty: false,
            orphans_reaped: 0,
            logs: LogWatch::new(),
            log_max: plan.host.log_max_size.0,
            log_keep: plan.host.log_keep,
            ceilings,
            control,
            fs_root,
            http,
            cgroups,
            mounts: None,
            prepare,
            hooks: plan.host.hooks.iter().map(hooks::Hook::new).collect(),
            log_dir: plan.host.log_dir.clone(),
            textfile: plan.host.textfile.clone(),
            textfile_throttle: super::textfile::Throttle::default(),
        };
        me.link();
        for e in early_events {
            me.emit(e);
        }
        Ok(me)
    }

    /// Each service's position in `services`, by name.
    fn name_index(&self) -> HashMap<String, usize> {
        self.services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.plan.name.clone(), i))
            .collect()
    }

    /// Resolves every `after` name to an index (after the lists changed).
    fn link(&mut self) {
        let index: HashMap<String, usize> = self.name_index();
        let deps_of = |after: &[String]| {
            after
                .iter()
                .filter_map(|a| index.get(a).copied())
                .collect::<Vec<_>>()
        };
        for s in &mut self.services {
            s.deps = deps_of(&s.plan.after);
        }
        for t in &mut self.timers {
            t.deps = deps_of(&t.plan.after);
        }
    }

    /// Runs until every service is stopped after SIGTERM or SIGINT.
    pub fn run(mut self) -> u8 {
        loop {
            let now = Instant::now();
            self.step(now);
            if self.stopping && self.nothing_alive() {
                info!("all services stopped; exiting");
                self.release_all_at_exit();
                self.record_pids();
                self.write_snapshot();
                // The last state reaches the textfile even inside the second.
                self.write_textfile();
                self.notifier.send("STATUS=stopped");
                return 0;
            }
            if self.pids_dirty {
                self.record_pids();
            }
            if self.dirty {
                self.write_snapshot();
            }
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            self.wait(timeout);
        }
    }

    fn nothing_alive(&self) -> bool {
        self.owners.is_empty()
    }

    /// Blocks until a signal, timer output, or the deadline.
    fn wait(&mut self, timeout: Option<Duration>) {
        let timeout = match timeout {
            // Round up so the deadline has passed when poll returns.
            Some(d) => {
                PollTimeout::try_from(d.as_millis().saturating_add(1)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let now = Instant::now();
        // Timers whose run output is open, in the order polled.
        let outputs: Vec<(usize, bool)> = (0..self.timers.len())
            .flat_map(|i| [(i, false), (i, true)])
            .filter(|&(i, gate)| {
                self.timers[i]
                    .run_of(gate)
                    .is_some_and(|r| r.output.is_some())
            })
            .collect();
        let (sig_ready, logs_ready, out_ready, control_ready, http_ready, mounts_changed) = {
            let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
            let control_set = self
                .control
                .as_ref()
                .map(Server::poll_set)
                .unwrap_or_default();
            let tokens: Vec<Token> = control_set.iter().map(|(t, _, _)| *t).collect();
            fds.extend(
                control_set
                    .into_iter()
                    .map(|(_, fd, flags)| PollFd::new(fd, flags)),
            );
            // The mount table, while a service waits for a mount: the
            // kernel marks it readable with POLLPRI when it changes.
            let blocked = self
                .services
                .iter()
                .any(|s| matches!(s.state, State::Blocked { .. }));
            if blocked && self.mounts.is_none() {
                self.mounts = std::fs::File::open("/proc/self/mountinfo").ok();
            } else if !blocked {
                self.mounts = None;
            }
            let mounts_at = self.mounts.as_ref().map(|m| {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLPRI));
                fds.len() - 1
            });
            let first_http = fds.len();
            let http_set = self
                .http
                .as_ref()
                .map(MetricsServer::poll_set)
                .unwrap_or_default();
            let http_tokens: Vec<HttpToken> = http_set.iter().map(|(t, _, _)| *t).collect();
            fds.extend(
                http_set
                    .into_iter()
                    .map(|(_, fd, flags)| PollFd::new(fd, flags)),
            );
            let first_log = fds.len();
            let logs_fd = self.logs.fd(now);
            let logs_at = logs_fd.map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });
            let first_output = fds.len();
            fds.extend(outputs.iter().filter_map(|&(i, gate)| {
                let t = &self.timers[i];
                let run = if gate { &t.asking } else { &t.run };
                let out = run.as_ref()?.output.as_ref()?;
                Some(PollFd::new(out.as_fd(), PollFlags::POLLIN))
            }));
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => error!("poll failed: {e}"),
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let mounts_changed = mounts_at.is_some_and(|k| ready(&fds[k]));
            let control_ready: Vec<Token> = tokens
                .into_iter()
                .zip(&fds[1..mounts_at.unwrap_or(first_http)])
                .filter(|(_, fd)| ready(fd))
                .map(|(t, _)| t)
                .collect();
            let http_ready: Vec<HttpToken> = http_tokens
                .into_iter()
                .zip(&fds[first_http..first_log])
                .filter(|(_, fd)| ready(fd))
                .map(|(t, _)| t)
                .collect();
            (
                ready(&fds[0]),
                logs_at.is_some_and(|k| ready(&fds[k])),
                fds[first_output..].iter().map(ready).collect::<Vec<bool>>(),
                control_ready,
                http_ready,
                mounts_changed,
            )
        };
        if mounts_changed {
            self.mounts_changed();
        }
        for token in http_ready {
            // Out of `self` for the call, so the body can read the snapshot.
            if let Some(mut h) = self.http.take() {
                h.ready(token, Instant::now(), || {
                    crate::status::metrics::render(&self.snapshot())
                });
                self.http = Some(h);
            }
        }
        if !control_ready.is_empty() {
            self.serve_control(&control_ready);
        }
        if logs_ready {
            self.logs.check(Instant::now(), self.log_max, self.log_keep);
        }
        for ((i, gate), readable) in outputs.into_iter().zip(out_ready) {
            if readable {
                self.read_timer_output(i, gate);
            }
        }
        if sig_ready {
            let p = self.signals.take();
            if p.child {
                self.reap();
            }
            if p.reload && !self.stopping {
                info!("SIGHUP: reloading {}", self.config.display());
                match self.reload() {
                    Ok(summary) => info!("reloaded: {summary}"),
                    Err(e) => error!("reload refused, nothing changed:\n{e}"),
                }
            }
            if p.stop && !self.stopping {
                self.begin_stop();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let svc = self.services.iter().flat_map(|s| {
            let state = match &s.state {
                State::Backoff { until } => Some(*until),
                State::Stopping { kill_at, .. } => *kill_at,
                State::Draining { until, .. } => Some(*until),
                State::Starting { probe_until, .. } => Some(*probe_until),
                _ => None,
            };
            [state, s.probe_at, s.drain.next_poll]
        });
        let tmr = self.timers.iter().flat_map(|t| {
            [
                t.due,
                t.run.as_ref().and_then(|r| r.kill_at),
                t.asking.as_ref().and_then(|r| r.kill_at),
                t.next_pending,
            ]
        });
        let control = self.control.as_ref().and_then(Server::deadline);
        let http = self.http.as_ref().and_then(MetricsServer::deadline);
        svc.chain(tmr)
            .chain(self.hook_deadlines())
            .chain([
                self.next_watchdog,
                self.logs.deadline(),
                control,
                http,
                self.textfile_throttle.due(),
            ])
            .flatten()
            .min()
    }

    /// Everything due at `now`, and what became possible.
    fn step(&mut self, now: Instant) {
        self.logs.resume_if_due(now);
        if let Some(c) = self.control.as_mut() {
            c.expire(now);
        }
        if let Some(h) = self.http.as_mut() {
            h.expire(now);
        }
        self.drop_retired();
        self.step_hooks(now);
        self.textfile_due(now);
        if let (Some(at), Some(every)) = (self.next_watchdog, self.notifier.watchdog_every) {
            if at <= now {
                self.notifier.send("WATCHDOG=1");
                self.next_watchdog = Some(now + every);
            }
        }
        for i in 0..self.services.len() {
            self.step_service(i, now);
        }
        for i in 0..self.timers.len() {
            self.step_timer(i, now);
        }
        if self.stopping {
            self.stop_what_can_stop(now);
        } else if !self.announced_ready && self.all_settled() {
            self.announced_ready = true;
            info!("initial services started");
            self.notifier
                .send(&format!("READY=1\nSTATUS={}", self.summary()));
        }
    }

    fn step_service(&mut self, i: usize, now: Instant) {
        match self.services[i].state.clone() {
            State::Waiting
                if !self.stopping
                    && self.services[i]
                        .deps
                        .iter()
                        .all(|&d| self.services[d].ready) =>
            {
                self.start(i, now);
            }
            State::Backoff { until } if until <= now && !self.stopping => self.start(i, now),
            State::Starting {
                pid, probe_until, ..
            } => {
                if probe_until <= now {
                    let s = &mut self.services[i];
                    let timeout = s
                        .plan
                        .ready
                        .as_ref()
                        .map_or(String::new(), |r| probe_timeout(r).to_string());
                    s.reason = Some(format!("not ready within {timeout}; killed"));
                    error!(service = %s.plan.name, "not ready within {timeout}; killing it");
                    s.probe_at = None;
                    kill_group(pid, Signal::SIGKILL);
                    self.dirty = true;
                } else if self.services[i].probe_at.is_some_and(|t| t <= now) {
                    self.probe(i, now);
                }
            }
            State::Draining { .. } => self.step_drain(i, now),
            State::Stopping {
                pid,
                kill_at: Some(kill_at),
            } if kill_at <= now => {
                let s = &mut self.services[i];
                warn!(service = %s.plan.name, "still running {} after {}; sending SIGKILL", s.plan.stop.signal.0.as_str(), s.plan.stop.timeout);
                kill_group(pid, Signal::SIGKILL);
                // SIGKILL cannot be ignored; no deadline after it.
                s.state = State::Stopping { pid, kill_at: None };
            }
            _ => {}
        }
    }

    fn start(&mut self, i: usize, now: Instant) {
        let s = &mut self.services[i];
        if s.plan.once && state::once_marker(&self.state_dir, &s.plan.name).exists() {
            info!(service = %s.plan.name, "already done on this host (once = true); not run again");
            s.state = State::Done;
            s.ready = true;
            self.dirty = true;
            return;
        }
        let missing = missing_mounts(&s.plan.requires_mounts);
        if !missing.is_empty() {
            let reason = format!("waiting for {} to be mounted", missing.join(", "));
            if s.state
                != (State::Blocked {
                    reason: reason.clone(),
                })
            {
                warn!(service = %s.plan.name, "blocked: {reason}");
            }
            s.state = State::Blocked { reason };
            self.dirty = true;
            return;
        }
        if let Err(e) = logs::rotate_idle(&s.plan.log_file, self.log_max, self.log_keep) {
            warn!(service = %s.plan.name, "failed to rotate {}: {e}", s.plan.log_file.display());
        }
        // Confinement is prepared again at every start: a cgroup removed
        // or changed behind venussup's back is put right.
        let hook = match &self.cgroups {
            Some(setup) => match confine::prepare(setup, &s.plan) {
                Ok(c) => {
                    if !s.confine_warned {
                        for w in c.warnings() {
                            warn!(service = %s.plan.name, "{w}");
                        }
                        s.confine_warned = true;
                    }
                    Ok(Some(Arc::new(c)))
                }
                Err(e) => Err(format!("failed to confine it: {e}")),
            },
            None => Ok(None),
        };
        // After `prepare`: the memory cgroup exists from the first start on.
        s.oom_base = self
            .cgroups
            .as_ref()
            .and_then(|c| confine::oom_kills(c, &s.plan.name));
        let result = match hook {
            Err(e) => Err(e),
            Ok(_) if s.plan.user.is_some() && s.identity.is_none() => Err(format!(
                "user `{}` could not be resolved",
                s.plan.user.as_deref().unwrap_or_default()
            )),
            Ok(confinement) => spawn::spawn(SpawnSpec {
                hook: confinement
                    .clone()
                    .map(|c| ChildHook(Arc::new(move || c.apply_in_child()))),
                cgroup: confinement.as_deref().and_then(Confinement::target),
                argv: &s.plan.argv,
                env: &s.plan.env,
                workdir: s.plan.workdir.as_deref(),
                identity: s.identity.as_ref(),
                umask: s.plan.umask.map(|u| u.0),
                nofile: Some(s.nofile),
                memlock: Some(s.memlock),
                output: Output::Append(s.plan.log_file.clone()),
                stdin: None,
            })
            .map_err(|e| e.to_string()),
        };
        self.dirty = true;
        match result {
            Ok(child) => {
                info!(service = %s.plan.name, pid = child.pid.as_raw(), "started");
                self.logs
                    .watch(&s.plan.log_file, self.log_max, self.log_keep);
                s.reason = None;
                s.run_started = Some(now);
                s.start_time = state::start_time(Path::new("/proc"), child.pid.as_raw());
                self.owners.insert(child.pid, Owner::Service(i));
                match &s.plan.ready {
                    Some(r) => {
                        s.state = State::Starting {
                            pid: child.pid,
                            probe_until: now + probe_timeout(r).0,
                        };
                        s.probe_at = Some(now);
                    }
                    None => {
                        s.state = State::Running { pid: child.pid };
                        s.ready = true;
                    }
                }
                self.pids_dirty = true;
            }
            Err(e) => {
                let delay = s.backoff.on_death(&s.rules.backoff, Duration::ZERO);
                error!(service = %s.plan.name, "{e}; retrying in {}", humantime::format_duration(delay));
                s.reason = Some(e);
                s.state = State::Backoff { until: now + delay };
            }
        }
    }

    fn probe(&mut self, i: usize, now: Instant) {
        let s = &mut self.services[i];
        let Some(ready) = s.plan.ready.clone() else {
            return;
        };
        let ok = match &ready {
            ReadyPlan::Tcp { address, .. } => address
                .parse()
                .is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, TCP_PROBE_TIMEOUT).is_ok()),
            ReadyPlan::File { path, .. } => path.exists(),
            ReadyPlan::Command { argv, .. } => {
                if s.probe_pid.is_none() {
                    let output = Output::Append(s.plan.log_file.clone());
                    match spawn::spawn(s.side_process(argv, output)) {
                        Ok(child) => {
                            s.probe_pid = Some(child.pid);
                            self.owners.insert(child.pid, Owner::Probe(i));
                        }
                        Err(e) => warn!(service = %s.plan.name, "ready probe: {e}"),
                    }
                }
                // The answer comes with the probe's exit.
                s.probe_at = None;
                return;
            }
        };
        if ok {
            self.became_ready(i);
        } else {
            self.services[i].probe_at = Some(now + PROBE_EVERY);
        }
    }

    fn became_ready(&mut self, i: usize) {
        let s = &mut self.services[i];
        if let State::Starting { pid, .. } = s.state {
            info!(service = %s.plan.name, "ready");
            s.state = State::Running { pid };
            s.ready = true;
            s.probe_at = None;
            self.dirty = true;
        }
    }

    /// Drains every exited child: services, probes, timer runs, orphans.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    let Some((pid, how)) = exit_kind(status) else {
                        continue;
                    };
                    match self.owners.remove(&pid) {
                        Some(Owner::Service(i)) => self.service_exited(i, pid, how),
                        Some(Owner::Probe(i)) => self.probe_exited(i, how),
                        Some(Owner::Drain(i)) => self.drain_helper_exited(i, how),
                        Some(Owner::Timer(i)) => self.timer_exited(i, how),
                        Some(Owner::Hook(k)) => self.hook_exited(k, how),
                        Some(Owner::Gate(i)) => self.gate_exited(i, how),
                        None => {
                            self.orphans_reaped += 1;
                            self.dirty = true;
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    error!("waitpid failed: {e}");
                    return;
                }
            }
        }
    }

    fn service_exited(&mut self, i: usize, pid: Pid, how: ExitKind) {
        let now = Instant::now();
        self.dirty = true;
        // Whatever the main process left in its group goes with it.
        kill_group(pid, Signal::SIGKILL);
        let oom = self.oom_since_start(i);
        let s = &mut self.services[i];
        let ran = s
            .run_started
            .map_or(Duration::ZERO, |t| now.duration_since(t));
        let young = ran < s.rules.backoff.stable_after;
        let fatal = if young && !oom {
            fatal_line(&s.plan.log_file, &s.plan.fatal_output)
        } else {
            None
        };
        if oom {
            s.oom_kills += 1;
            error!(service = %s.plan.name, "{how}: killed by the kernel's OOM killer (memory_max {})", s.plan.limits.memory_max.map_or("?".to_string(), |m| m.to_string()));
        }
        let exit = LastExit {
            how,
            reason: if oom {
                Some("oom-killed".to_string())
            } else {
                fatal.clone()
            },
            at: unix_now(),
            ran_secs: ran.as_secs_f64(),
        };
        s.recent_exits.push_front(exit.clone());
        s.recent_exits.truncate(RECENT_EXITS);
        s.last_exit = Some(exit);
        s.ready = s.ready && s.plan.kind == ServiceKind::Oneshot;
        s.probe_at = None;
        if let Some(p) = s.probe_pid.take() {
            kill_group(p, Signal::SIGKILL);
        }
        if let Some(p) = s.drain.helper.take() {
            kill_group(p, Signal::SIGKILL);
        }
        if matches!(s.state, State::Stopping { .. } | State::Draining { .. }) || self.stopping {
            info!(service = %s.plan.name, "stopped ({how})");
            s.state = State::Stopped;
            s.ready = false;
            if !self.stopping {
                self.after_requested_stop(i, now);
            }
            if self.services[i].state == State::Stopped {
                self.release(i);
            }
            self.pids_dirty = true;
            return;
        }
        let decision = after_exit(&s.rules, how, ran, &mut s.backoff, &mut s.history, now);
        let name = s.plan.name.clone();
        if oom {
            self.emit_about(
                EventKind::Oom,
                Some(&name),
                None,
                Some(how.to_string()),
                format!("{name} was killed by the OOM killer"),
            );
        }
        if decision != AfterExit::Done {
            self.emit_about(
                EventKind::Death,
                Some(&name),
                None,
                Some(how.to_string()),
                format!(
                    "{name} died ({how}) after {}",
                    humantime::format_duration(round(ran))
                ),
            );
        }
        if let AfterExit::Failed(reason) = &decision {
            self.emit_about(
                EventKind::Failed,
                Some(&name),
                None,
                Some(how.to_string()),
                format!("{name} failed: {reason}"),
            );
        }
        let s = &mut self.services[i];
        match decision {
            AfterExit::Done => {
                info!(service = %s.plan.name, "done");
                s.state = State::Done;
                s.ready = true;
                if s.plan.once {
                    let marker = state::once_marker(&self.state_dir, &s.plan.name);
                    let written = marker
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(&marker, b""));
                    if let Err(e) = written {
                        warn!(service = %s.plan.name, "failed to record {}: {e}; it will run again at next start", marker.display());
                    }
                }
            }
            AfterExit::Restart(delay) => {
                s.restarts += 1;
                // A fatal start error does not fix itself: wait the longest.
                let delay = match &fatal {
                    Some(line) => {
                        error!(service = %s.plan.name, "fatal start error, restarting will not fix it: {line} ({}); next try in {}", fatal_hint(line), humantime::format_duration(s.rules.backoff.max));
                        s.reason = Some(format!("fatal start error: {line}"));
                        s.rules.backoff.max
                    }
                    None => delay,
                };
                if delay.is_zero() {
                    info!(service = %s.plan.name, "{how} after {}; restarting at once", humantime::format_duration(round(ran)));
                    s.state = State::Backoff { until: now };
                    self.start(i, now);
                } else {
                    warn!(service = %s.plan.name, "{how} after {}; restarting in {} (backoff)", humantime::format_duration(round(ran)), humantime::format_duration(delay));
                    s.state = State::Backoff { until: now + delay };
                }
            }
            AfterExit::Exited => {
                info!(service = %s.plan.name, "{how}; restart policy keeps it down");
                s.state = State::Exited;
            }
            AfterExit::Failed(reason) => {
                error!(service = %s.plan.name, "{how}; {reason}");
                s.reason = Some(reason.clone());
                s.state = State::Failed { reason };
            }
        }
        if matches!(
            self.services[i].state,
            State::Exited | State::Failed { .. } | State::Done
        ) {
            self.release(i);
        }
        self.pids_dirty = true;
    }

    /// The mount table changed: blocked services look again.
    fn mounts_changed(&mut self) {
        if let Some(m) = self.mounts.as_mut() {
            // Reading it to the end re-arms the notification.
            let mut sink = Vec::new();
            let _ = std::io::Seek::seek(m, std::io::SeekFrom::Start(0));
            let _ = m.read_to_end(&mut sink);
        }
        for s in &mut self.services {
            if matches!(s.state, State::Blocked { .. }) {
                s.state = State::Waiting;
            }
        }
    }

    /// At exit: every service's cgroup emptied and removed, then venussup's
    /// parent. A SIGKILLed process leaves its cgroup only once the kernel
    /// has finished it, so each removal is retried for a bounded moment.
    fn release_all_at_exit(&mut self) {
        let Some(setup) = self.cgroups.clone() else {
            return;
        };
        for i in 0..self.services.len() {
            self.release(i);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            // A killed grandchild is ours to reap (subreaper); until it is,
            // its cgroup cannot go.
            self.reap();
            let left = self
                .services
                .iter()
                .any(|s| confine::pids(&setup, &s.plan.name).is_ok_and(|p| !p.is_empty()));
            if !left || Instant::now() >= deadline {
                break;
            }
            // No event says "the cgroup is empty" on v1: a short, bounded wait.
            std::thread::sleep(Duration::from_millis(10));
        }
        self.reap();
        for s in &self.services {
            let _ = confine::release(&setup, &s.plan.name);
        }
        if let Err(e) = confine::remove_parent(&setup) {
            warn!("cgroups: {e}");
        }
    }

    /// Whether the OOM killer struck the service's cgroup since it started.
    fn oom_since_start(&self, i: usize) -> bool {
        let s = &self.services[i];
        let now = self
            .cgroups
            .as_ref()
            .and_then(|c| confine::oom_kills(c, &s.plan.name));
        matches!((s.oom_base, now), (Some(base), Some(n)) if n > base)
    }

    /// A service is down for good (stopped, exited, failed, done): whatever
    /// is left in its cgroup is killed (nothing escapes by double-forking)
    /// and the cgroup removed.
    fn release(&self, i: usize) {
        let Some(setup) = &self.cgroups else { return };
        let name = &self.services[i].plan.name;
        if let Err(e) = confine::kill_all(setup, name) {
            warn!(service = %name, "failed to kill what is left of it: {e}");
        }
        // Killed processes may not be gone yet; a cgroup left now is
        // removed at the next start of the service or of venussup.
        if let Err(e) = confine::release(setup, name) {
            tracing::debug!(service = %name, "cgroup not removed yet: {e}");
        }
    }

    fn probe_exited(&mut self, i: usize, how: ExitKind) {
        let now = Instant::now();
        self.services[i].probe_pid = None;
        if how.success() {
            self.became_ready(i);
        } else if matches!(self.services[i].state, State::Starting { .. }) {
            self.services[i].probe_at = Some(now + PROBE_EVERY);
        }
    }

    fn step_timer(&mut self, i: usize, now: Instant) {
        if self.stopping {
            return;
        }
        let t = &mut self.timers[i];
        for run in [&mut t.run, &mut t.asking].into_iter().flatten() {
            if run.kill_at.is_some_and(|k| k <= now) && run.timed_out.is_none() {
                run.timed_out = Some(now.duration_since(run.started));
                warn!(timer = %t.plan.name, "run still going after its timeout; killing it");
                kill_group(run.pid, Signal::SIGKILL);
                run.kill_at = None;
            }
        }
        if t.next_pending.is_some_and(|at| at <= now) && t.run.is_none() {
            t.next_pending = None;
            self.run_pending(i, now);
        }
        let deps_ready = self.timers[i].deps.iter().all(|&d| self.services[d].ready);
        let t = &mut self.timers[i];
        // The first run is one interval after the dependencies are ready.
        let first = t.due.is_none();
        let from = match t.due {
            None if deps_ready => now,
            Some(due) if due <= now => due,
            _ => return,
        };
        let jitter = t.plan.jitter.map_or(Duration::ZERO, |j| j.0);
        t.due = Some(timer::next_due(
            from,
            t.plan.every.0,
            jitter,
            self.jitter.next(),
            now,
        ));
        self.dirty = true;
        if first {
            return;
        }
        if t.busy() {
            t.counts.skipped += 1;
            warn!(timer = %t.plan.name, "due while the last run is still going; skipped");
        } else if deps_ready && t.plan.gate.is_some() {
            self.ask_gate(i, now);
        } else if deps_ready {
            self.run_timer(i, now);
        }
    }

    fn run_timer(&mut self, i: usize, now: Instant) {
        let t = &mut self.timers[i];
        match spawn_piped(&t.plan, &t.plan.argv) {
            Ok(child) => {
                info!(timer = %t.plan.name, pid = child.pid.as_raw(), "run started");
                if let Err(e) = logs::rotate_idle(&t.plan.log_file, self.log_max, self.log_keep) {
                    warn!(timer = %t.plan.name, "failed to rotate {}: {e}", t.plan.log_file.display());
                }
                let log = spawn::open_log(&t.plan.log_file)
                    .map_err(|e| warn!(timer = %t.plan.name, "{e}"))
                    .ok();
                self.owners.insert(child.pid, Owner::Timer(i));
                t.run = Some(Run::started(child, now, t.plan.timeout, log));
            }
            Err(e) => {
                error!(timer = %t.plan.name, "{e}");
                t.pending = 0;
                let (name, message) = (
                    t.plan.name.clone(),
                    format!("{} failed to start: {e}", t.plan.name),
                );
                Self::record_run(t, RunResult::Failure(e.to_string()));
                self.emit_about(EventKind::TimerFailure, None, Some(&name), None, message);
            }
        }
    }

    fn read_timer_output(&mut self, i: usize, gate: bool) {
        let Some(run) = self.timers[i].run_of(gate) else {
            return;
        };
        let mut buf = [0u8; 8192];
        loop {
            let Some(out) = run.output.as_mut() else {
                return;
            };
            match out.read(&mut buf) {
                Ok(0) => {
                    run.output = None;
                    return;
                }
                Ok(n) => {
                    timer::keep_tail(&mut run.kept, &buf[..n]);
                    if let Some(log) = run.log.as_mut() {
                        let _ = std::io::Write::write_all(log, &buf[..n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    run.output = None;
                    return;
                }
            }
        }
    }

    fn timer_exited(&mut self, i: usize, how: ExitKind) {
        self.read_timer_output(i, false);
        let t = &mut self.timers[i];
        let Some(run) = t.run.take() else { return };
        kill_group(run.pid, Signal::SIGKILL);
        let output = String::from_utf8_lossy(&run.kept);
        let result = timer::classify(
            how,
            run.timed_out,
            &output,
            &t.plan.full_output,
            &t.plan.full_exit_codes,
        );
        match &result {
            RunResult::Failure(r) => warn!(timer = %t.plan.name, "run failed: {r}"),
            r => info!(timer = %t.plan.name, "run finished: {}", r.name()),
        }
        let failure = match &result {
            RunResult::Failure(r) => Some(format!("{} failed: {r}", t.plan.name)),
            _ => None,
        };
        let name = t.plan.name.clone();
        self.after_gated_run(i, &result, Instant::now());
        Self::record_run(&mut self.timers[i], result);
        if let Some(message) = failure {
            self.emit_about(
                EventKind::TimerFailure,
                None,
                Some(&name),
                Some(how.to_string()),
                message,
            );
        }
        self.dirty = true;
    }

    fn record_run(t: &mut Timer, result: RunResult) {
        match result {
            RunResult::Success => t.counts.success += 1,
            RunResult::Full => t.counts.full += 1,
            RunResult::Failure(_) => t.counts.failure += 1,
        }
        t.last.push_front(RunRecord {
            at: unix_now(),
            result,
        });
        t.last.truncate(TIMER_HISTORY);
    }

    fn begin_stop(&mut self) {
        info!("stopping: timers first, then services in reverse start order");
        self.stopping = true;
        self.dirty = true;
        self.notifier.send("STOPPING=1\nSTATUS=stopping");
        let now = Instant::now();
        for t in &mut self.timers {
            t.due = None;
            t.pending = 0;
            t.next_pending = None;
            if let Some(ask) = &t.asking {
                kill_group(ask.pid, Signal::SIGKILL);
            }
            if let Some(run) = &mut t.run {
                kill_group(run.pid, Signal::SIGTERM);
                run.kill_at = Some(now + TIMER_STOP_GRACE);
            }
        }
        for s in &mut self.services {
            if let Some(p) = s.probe_pid {
                kill_group(p, Signal::SIGKILL);
            }
            if matches!(
                s.state,
                State::Waiting | State::Backoff { .. } | State::Blocked { .. }
            ) {
                s.state = State::Stopped;
            }
        }
    }

    /// Sends the stop signal to every service no running service depends on.
    fn stop_what_can_stop(&mut self, now: Instant) {
        // A timer run that outlives its grace is killed.
        for t in &mut self.timers {
            if let Some(run) = &mut t.run {
                if run.kill_at.is_some_and(|k| k <= now) {
                    kill_group(run.pid, Signal::SIGKILL);
                    run.kill_at = None;
                }
            }
        }
        for i in (0..self.services.len()).rev() {
            let pid = match self.services[i].state {
                State::Starting { pid, .. } | State::Running { pid, .. } => pid,
                _ => continue,
            };
            let needed = self
                .services
                .iter()
                .any(|d| d.deps.contains(&i) && d.state.pid().is_some());
            if needed {
                continue;
            }
            self.planned_stop(i, pid, now);
        }
    }

    /// Sends a service its stop signal; SIGKILL follows at its stop timeout.
    fn send_stop(&mut self, i: usize, pid: Pid, now: Instant) {
        let s = &mut self.services[i];
        info!(service = %s.plan.name, "sending {}", s.plan.stop.signal.0.as_str());
        kill_group(pid, s.plan.stop.signal.0);
        s.probe_at = None;
        s.state = State::Stopping {
            pid,
            kill_at: Some(now + s.plan.stop.timeout.0),
        };
        self.dirty = true;
    }

    /// Moves every pid's owner as `f` says (after services or timers moved
    /// in their lists); an owner `f` drops is forgotten.
    fn remap_owners(&mut self, f: impl Fn(Owner) -> Option<Owner>) {
        let owners: Vec<(Pid, Owner)> = self.owners.drain().collect();
        self.owners = owners
            .into_iter()
            .filter_map(|(pid, o)| f(o).map(|o| (pid, o)))
            .collect();
    }

    /// Writes `services.json` (once per loop turn that changed a pid, not
    /// once per start: 1000 starts would rewrite it 1000 times).
    fn record_pids(&mut self) {
        self.pids_dirty = false;
        let record: PidRecord = self
            .services
            .iter()
            .filter_map(|s| {
                let pid = s.state.pid()?;
                let start_time = s.start_time?;
                Some((
                    s.plan.name.clone(),
                    RecordedPid {
                        pid: pid.as_raw(),
                        start_time,
                    },
                ))
            })
            .collect();
        if let Err(e) = state::write_pids(&self.state_dir, &record) {
            warn!("{e}");
        }
    }

    /// Whether start-up is over: every service ready, or where it will stay
    /// for a while (backing off, failed, blocked on a mount, or waiting for
    /// a dependency in such a state). READY=1 waits for this, and only for
    /// this: a crash-looping service must not hold the boot up for ever.
    fn all_settled(&self) -> bool {
        let mut settled = vec![false; self.services.len()];
        loop {
            let mut changed = false;
            for (i, s) in self.services.iter().enumerate() {
                if settled[i] {
                    continue;
                }
                let now_settled = s.ready
                    || match s.state {
                        State::Waiting => s
                            .deps
                            .iter()
                            .any(|&d| settled[d] && !self.services[d].ready),
                        State::Starting { .. } => false,
                        _ => true,
                    };
                if now_settled {
                    settled[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return settled.iter().all(|s| *s);
            }
        }
    }

    fn summary(&self) -> String {
        let running = self
            .services
            .iter()
            .filter(|s| {
                s.plan.kind == ServiceKind::Daemon && matches!(s.state, State::Running { .. })
            })
            .count();
        let daemons = self
            .services
            .iter()
            .filter(|s| s.plan.kind == ServiceKind::Daemon)
            .count();
        let failed = self
            .services
            .iter()
            .filter(|s| matches!(s.state, State::Failed { .. } | State::Backoff { .. }))
            .count();
        format!("{running}/{daemons} services running, {failed} failed or backing off")
    }

    fn write_snapshot(&mut self) {
        self.dirty = false;
        match serde_json::to_vec_pretty(&self.snapshot()) {
            Ok(json) => {
                if let Err(e) = state::write_atomic(&self.state_dir.join("status.json"), &json) {
                    warn!("{e}");
                }
            }
            Err(e) => warn!("failed to encode the status snapshot: {e}"),
        }
        if self.announced_ready {
            self.notifier.send(&format!("STATUS={}", self.summary()));
        }
        self.textfile_changed(Instant::now());
    }
}

/// Starts `argv` as timer `plan` says (its environment, user, folder),
/// output into a non-blocking pipe: a run, or its gate command.
fn spawn_piped(plan: &TimerPlan, argv: &[String]) -> Result<spawn::Spawned, spawn::SpawnError> {
    let identity = match &plan.user {
        Some(u) => Some(spawn::identity(u, plan.group.as_deref())?),
        None => None,
    };
    let child = spawn::spawn(SpawnSpec {
        argv,
        env: &plan.env,
        workdir: plan.workdir.as_deref(),
        identity: identity.as_ref(),
        umask: None,
        nofile: None,
        memlock: None,
        output: Output::Pipe,
        hook: None,
        cgroup: None,
        stdin: None,
    })?;
    if let Some(out) = &child.output {
        let _ = nix::fcntl::fcntl(
            out,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    Ok(child)
}

fn probe_timeout(r: &ReadyPlan) -> crate::config::values::HumanDuration {
    match r {
        ReadyPlan::Tcp { timeout, .. }
        | ReadyPlan::File { timeout, .. }
        | ReadyPlan::Command { timeout, .. } => *timeout,
    }
}

/// Durations in logs, to the millisecond.
fn round(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Required mount points that are not mounted now.
fn missing_mounts(required: &[PathBuf]) -> Vec<String> {
    if required.is_empty() {
        return Vec::new();
    }
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted = crate::util::mountinfo::points_and_types(&table);
    required
        .iter()
        .filter(|m| !mounted.iter().any(|(p, _)| Path::new(p) == m.as_path()))
        .map(|m| m.display().to_string())
        .collect()
}

/// The last log line of a young death that says it will not fix itself.
fn fatal_line(log: &Path, patterns: &[String]) -> Option<String> {
    if patterns.is_empty() {
        return None;
    }
    logs::tail(log, FATAL_LINES)
        .into_iter()
        .rev()
        .find(|l| patterns.iter().any(|p| l.contains(p.as_str())))
        .map(|l| l.trim().to_string())
}

/// What to fix, for the fatal start errors venussup knows.
fn fatal_hint(line: &str) -> &'static str {
    if line.contains("file descriptor limit") {
        "raise limits.nofile"
    } else if line.contains("already locked") {
        "another process holds its repo: check VENUS_WORKER_PATH / --repo"
    } else if line.contains("address already in use") {
        "another process listens on its --listen port"
    } else if line.contains("opening path") {
        "a seal or store path is missing or not mounted: see requires_mounts"
    } else {
        "see the service's log"
    }
}
