//! The event loop: one `poll` over the signal pipe, the control and
//! metrics sockets, the log watch and the output pipes of timer runs, with
//! one computed deadline; an idle supervisor sleeps until a signal or the
//! next deadline, never on a tick.
//!
//! This is the effectful half of the supervisor. Each decision is a pure
//! function in the module of the same name one level up (`runtime/start.rs`
//! decides, `supervisor/start.rs` spawns; likewise `exits`, `stop`,
//! `drain`, `timer`, `gate`, `hooks`, `service`): it returns the next
//! state and a list of effects (`runtime/effect.rs`), which `effect.rs`
//! here carries out.
//!
//! - `poll.rs`: the poll set, with a typed `Source` per descriptor;
//! - `service.rs`, `timer.rs`: one service or timer at run time;
//! - `start.rs`: starting and probing; `exits.rs`: exits and reaping;
//! - `stop.rs`: the shutdown, stop signals, cgroups released;
//! - `drain.rs`, `gate.rs`, `hooks.rs`: drain commands, gate commands and
//!   hooks as children;
//! - `requests.rs`: requests from the control socket and reload;
//! - `upgrade.rs`: `venussup upgrade`, the new program's checks and the
//!   exec in place; `handover.rs`: the state handed to the next image, and
//!   adopting it there (also after a panic);
//! - `snapshot.rs`: what `status`, `status.json`, metrics and systemd read.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use super::limits::Ceilings;
use super::logs::LogWatch;
use super::notify::Notifier;
use super::signals::Signals;
use super::timer::Jitter;
use crate::control::http::MetricsServer;
use crate::control::server::Server;
use crate::plan::Plan;
use crate::runtime::confine::CgroupSetup;
use crate::util::clock::after;
use crate::util::clock::unix_now;
use crate::util::fsroot::FsRoot;

mod drain;
mod effect;
mod exits;
mod gate;
mod handover;
mod hooks;
mod poll;
mod requests;
mod service;
mod snapshot;
mod start;
mod stop;
mod timer;
mod upgrade;

pub use handover::{receive, Incoming};

use effect::Subject;
use service::Service;
use timer::Timer;

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
    /// A check of the program an upgrade would run.
    Upgrade,
}

/// Everything the loop needs from outside.
#[derive(Debug)]
pub struct Setup {
    pub plan: Plan,
    pub state_dir: PathBuf,
    pub smt: Option<crate::status::smt::SmtState>,
    pub notifier: Notifier,
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
    /// The host lock (`venussup.lock`), held for the daemon's life.
    pub lock: Option<super::state::Lock>,
    /// How `run` was started: what an upgrade or a panic starts again.
    pub run_args: super::RunArgs,
    /// The program file the daemon was started from: `upgrade`'s default.
    pub binary: PathBuf,
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
    /// Processes (pid, kernel start time) that outlived an emptying of
    /// their cgroup, SIGKILL and all (stuck in the kernel: a hung NFS
    /// mount, a driver): killed again at every emptying, never waited for
    /// again, so one stuck process holds up the loop once, not at every
    /// restart.
    stuck: BTreeSet<(i32, u64)>,
    /// `/proc/self/mountinfo`, polled while a service is blocked on a mount.
    mounts: Option<File>,
    prepare: Option<crate::status::prepare::Report>,
    hooks: Vec<hooks::Hook>,
    /// The GPU lock folders as last made (at start or by a reload).
    gpu_tmpdirs: Vec<crate::plan::gpus::LockDir>,
    /// `[host.prepare]` as run at start: a reload that changes it says a
    /// restart applies it.
    prepare_plan: Option<crate::plan::prepare::Prepare>,
    log_dir: PathBuf,
    /// node_exporter's textfile, and when it may be written next.
    textfile: Option<PathBuf>,
    textfile_throttle: super::textfile::Throttle,
    lock: Option<super::state::Lock>,
    run_args: super::RunArgs,
    binary: PathBuf,
    /// The config file as last loaded (at start or by a reload): an
    /// upgrade waits for a changed config to be reloaded first.
    config_digest: Option<u64>,
    /// An upgrade whose checks run.
    upgrade: Option<upgrade::Upgrade>,
    /// What the last in-place handover to this image did.
    handover: Option<crate::status::HandoverStatus>,
}

/// Signals a child's process group. Every child called setsid: its pid is
/// its process group.
fn kill_group(pid: Pid, sig: Signal) {
    match kill(Pid::from_raw(-pid.as_raw()), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(
            "failed to send {} to process group {pid}: {e}",
            sig.as_str()
        ),
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
            lock,
            run_args,
            binary,
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
            stuck: BTreeSet::new(),
            mounts: None,
            prepare,
            hooks: plan.host.hooks.iter().map(hooks::Hook::new).collect(),
            gpu_tmpdirs: plan.host.gpu_tmpdirs.clone(),
            prepare_plan: plan.host.prepare.clone(),
            log_dir: plan.host.log_dir.clone(),
            textfile: plan.host.textfile.clone(),
            textfile_throttle: super::textfile::Throttle::default(),
            config_digest: upgrade::config_digest(&plan.config),
            lock,
            run_args,
            binary,
            upgrade: None,
            handover: None,
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

    /// Whether every service `deps` names is ready.
    fn ready(&self, deps: &[usize]) -> bool {
        deps.iter().all(|&d| self.services[d].life.ready)
    }

    /// From now on a panic re-executes this program with the state of the
    /// last loop turn (`runtime/panic.rs`); `previous`: when this image's
    /// predecessor panicked, if it did.
    pub fn survive_panics(&self, previous: Option<super::handover::Mono>) {
        super::panic::install(self.run_argv(&self.binary), previous);
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
            if self.pids_dirty || self.dirty {
                self.remember_for_panic();
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

    /// The earliest deadline of everything the loop keeps.
    fn next_deadline(&self) -> Option<Instant> {
        let services = self.services.iter().flat_map(|s| {
            let conn = s.probe_conn.as_ref().map(|(_, until)| *until);
            s.life.deadlines().into_iter().chain([conn])
        });
        let timers = self.timers.iter().flat_map(|t| t.state.deadlines());
        let control = self.control.as_ref().and_then(Server::deadline);
        let http = self.http.as_ref().and_then(MetricsServer::deadline);
        services
            .chain(timers)
            .chain(self.hook_deadlines())
            .chain([
                self.next_watchdog,
                self.logs.deadline(),
                control,
                http,
                self.textfile_throttle.due(),
                self.upgrade_deadline(),
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
        self.step_probe_conns(now);
        self.step_hooks(now);
        self.step_upgrade(now);
        self.textfile_due(now);
        if let (Some(at), Some(every)) = (self.next_watchdog, self.notifier.watchdog_every) {
            if at <= now {
                self.notifier.send("WATCHDOG=1");
                self.next_watchdog = Some(after(now, every));
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

    /// A service's due work (see `runtime::service::step`).
    fn step_service(&mut self, i: usize, now: Instant) {
        let deps_ready = self.ready(&self.services[i].deps);
        let stopping = self.stopping;
        self.service_transition(i, now, |life, rules| {
            super::service::step(life, rules, deps_ready, stopping, now)
        });
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
}
