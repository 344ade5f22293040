//! `venussup run`: the supervisor. In order: the host lock (one daemon per
//! host), the SMT step, the plan against the CPUs online after it, the
//! services an earlier daemon left running stopped, then the event loop
//! until SIGTERM or SIGINT has stopped every service.
//!
//! `run --handover FD` is the same process after `venussup upgrade` (or a
//! panic) replaced its program in place: it takes the lock, the sockets
//! and the state the previous image handed over (`handover.rs`), skips
//! what a start does to the host (SMT step, host preparation, stopping
//! leftovers, cleaning up cgroups: its children are the services) and
//! goes on with every child where the previous image left it.

mod adopt;
mod backoff;
pub mod confine;
pub mod gate;
pub mod handover;
pub mod hooks;
pub mod hostprep;
mod limits;
pub mod listen;
pub mod lockdirs;
pub(crate) mod logs;
mod notify;
mod panic;
mod service;
mod signals;
pub mod state;
mod supervisor;
mod textfile;
mod timer;
mod upgrade;

// The supervisor's decisions: pure functions of (state, event, now) that
// give the next state and the effects `supervisor/` carries out; each
// pairs with the `supervisor/` file of the same name (as do `service`,
// `timer`, `gate` and `hooks` above).
mod drain;
mod effect;
mod exits;
mod start;
mod stop;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

use crate::config::load_valid;
use crate::config::EventKind;
use crate::config::{Config, SmtPolicy};
use crate::control;
use crate::host::cgroups::Hierarchy;
use crate::sys::cgroup::Cgroupfs;

use crate::host::{users, Host};
use crate::plan::{self, Plan};
use crate::smt;
use crate::util::cpulist::CpuSet;
use crate::util::diag::Severity;
use crate::util::exit;
use crate::util::fsroot::FsRoot;

/// Structured log lines on stderr; journald keeps them under systemd.
fn init_logging(level: Option<&str>) {
    let filter = level
        .map(tracing_subscriber::EnvFilter::new)
        .or_else(|| tracing_subscriber::EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Plans `config` on the host under `fs_root`: errors refuse it (all of
/// them, one per line); warnings and notes are logged.
fn resolve_logged(config: &Config, fs_root: &FsRoot) -> Result<Plan, String> {
    let mut diags = config.diagnostics();
    let plan = plan::resolve(config, &Host::probe(fs_root), &mut diags);
    let mut errors = Vec::new();
    for d in diags.into_sorted() {
        match d.severity {
            Severity::Error => errors.push(d.to_string()),
            Severity::Warning => warn!("{d}"),
            Severity::Note => info!("{d}"),
        }
    }
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(format!(
            "{}\nthe config is invalid; `venussup check` shows everything",
            errors.join("\n")
        ))
    }
}

/// Loads and plans the config at `path` (a reload).
pub(crate) fn load_plan(path: &Path, fs_root: &FsRoot) -> Result<(Config, Plan), String> {
    let config = load_valid(path)?;
    let plan = resolve_logged(&config, fs_root)?;
    Ok((config, plan))
}

/// The cgroup hierarchy for the services, with what an earlier daemon left
/// there cleaned up (`clean_up`): empty cgroups removed, processes still in
/// one killed. A new image of the same process cleans up nothing: the
/// processes in those cgroups are its own services.
fn cgroups(
    config: &Config,
    fs_root: &FsRoot,
    plan: &Plan,
    clean_up: bool,
) -> Option<confine::CgroupSetup> {
    let hierarchy = match &plan.host.cgroups {
        Some(h) => h.clone(),
        None => Hierarchy::detect(fs_root),
    };
    // A hybrid host's cgroup2 tree that is not ours to write leaves the
    // v1 controllers usable: services are confined, only not tracked.
    let hierarchy = match hierarchy {
        Hierarchy::V1 {
            cpuset,
            memory,
            tracking: Some(t),
        } if !writable(&t) => {
            warn!(
                "cgroups: {} is not writable here; {}",
                t.display(),
                crate::host::cgroups::UNTRACKED
            );
            Hierarchy::V1 {
                cpuset,
                memory,
                tracking: None,
            }
        }
        h => h,
    };
    // Without root (the demo), or in a container that mounts it read-only,
    // the hierarchy is there but not ours to write: the services are held
    // by their affinity masks alone.
    let hierarchy = match hierarchy.roots().iter().find(|r| !writable(r)) {
        Some(root) => {
            let why = format!("{} is not writable here", root.display());
            warn!("cgroups: {why}; services are confined by affinity only");
            Hierarchy::None { why }
        }
        None => hierarchy,
    };
    let parent = config.host.cgroup_parent.get_ref();
    let setup = match confine::CgroupSetup::new(hierarchy, parent, Cgroupfs::real()) {
        Ok(s) => s,
        Err(e) => {
            error!("cgroups: {e}; services are confined by affinity only");
            return None;
        }
    };
    info!("cgroups: {}", setup.hierarchy());
    if !clean_up {
        return Some(setup);
    }
    let keep: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    match confine::cleanup_stale(&setup, &keep) {
        Ok(stale) => {
            for s in stale.iter().filter(|s| !s.pids.is_empty()) {
                warn!("{s}; killing what is left there");
                for pid in &s.pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        Err(e) => warn!("cgroups: failed to clean up after an earlier venussup: {e}"),
    }
    Some(setup)
}

/// Whether this process may create a folder in `dir`.
fn writable(dir: &Path) -> bool {
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_ok()
}

/// Who may use the control socket: root, and `[host] control_group`.
fn access(config: &Config) -> control::server::Access {
    let group = config.host.control_group.as_ref().and_then(|g| {
        users::group_id(g.get_ref()).ok().flatten().or_else(|| {
            warn!(
                "control_group `{}` does not exist; only root may use the control socket",
                g.get_ref()
            );
            None
        })
    });
    control::server::Access { group }
}

/// The CPUs the services run on: their CPU lists, or every usable CPU
/// when one of them is not confined.
fn cpus_in_use(plan: &Plan) -> CpuSet {
    let usable = plan.host.usable_cpus.clone().unwrap_or_default();
    let mut cpus = CpuSet::new();
    for s in &plan.services {
        match s.cpus.as_ref().and_then(|c| c.cpus.as_ref()) {
            Some(set) => cpus = cpus.union(set),
            None => return usable,
        }
    }
    cpus
}

/// How `venussup run` was started: what a re-exec of it repeats.
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub config: PathBuf,
    pub fs_root: FsRoot,
    pub log_level: Option<String>,
}

/// What a new image of the process was handed (`run`'s hidden arguments).
#[derive(Debug, Clone, Copy, Default)]
pub struct Handed {
    /// The memfd with the previous image's state (`--handover FD`).
    pub handover: Option<i32>,
    /// When the previous image panicked (`--panicked-at`, CLOCK_MONOTONIC
    /// nanoseconds).
    pub panicked_at: Option<u64>,
}

/// The program file this process runs, as a path to run again (a file
/// replaced since it started reads "PATH (deleted)": PATH is where the new
/// one is).
fn own_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let text = exe.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

/// The first lines `run` prints: what to run next, with this program and
/// this config (`target/debug/venussup` under `cargo run`), and where the
/// services' logs are.
fn what_next(config: &Path, log_dir: &Path) -> String {
    let program = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .filter(|p| p.components().count() > 1)
        .map_or_else(|| "venussup".to_string(), |p| p.display().to_string());
    let config = config.display();
    let logs = log_dir.display();
    format!(
        "venussup: supervising {config}; in another terminal:\n\
         \x20 {program} status --config {config}     every service: state, pid, CPUs, restarts\n\
         \x20 {program} check --config {config}      the plan: who gets which CPUs and GPUs, and why\n\
         \x20 {program} logs NAME -f --config {config}   a service's log, followed ({logs}/NAME.log)\n"
    )
}

/// Checks the folders venussup writes as root, making venussup's own
/// when missing; false when one of its own is refused (said).
fn trusted_folders(config: &crate::config::Config, resuming: bool) -> bool {
    let mut ok = true;
    for f in state::folders(&config.host) {
        let checked = if f.own {
            crate::sys::folder::ensure(f.what, &f.path, f.mode)
        } else {
            crate::sys::folder::check(f.what, &f.path).map(drop)
        };
        match checked {
            Err(e) if f.own && !resuming => {
                error!("{e} Nothing was started or stopped.");
                ok = false;
            }
            Err(e) => warn!("{e}"),
            Ok(()) => {}
        }
    }
    ok
}

pub fn run(args: &RunArgs, handed: Handed) -> u8 {
    let fs_root = &args.fs_root;
    let config_path = args.config.as_path();
    crate::sys::spawn::close_inherited_on_exec();
    init_logging(args.log_level.as_deref());
    // First thing in a new image: what the previous one handed over,
    // before anything opens a descriptor.
    let mut incoming = handed.handover.map(|fd| {
        let read_at = handover::Anchor::now();
        let mut i = supervisor::receive(fd);
        i.panicked_at = handed.panicked_at.map(handover::Mono);
        (i, read_at)
    });
    let resuming = incoming.is_some();
    if std::env::var_os("VENUSSUP_NO_CLONE_INTO_CGROUP").is_some_and(|v| v == "1") {
        info!("VENUSSUP_NO_CLONE_INTO_CGROUP=1: confined children join their cgroup through cgroup.procs");
        crate::sys::spawn::without_clone_into_cgroup();
    }
    let config = match load_valid(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::FAILURE;
        }
    };
    if !resuming {
        eprint!("{}", what_next(config_path, &config.host.log_dir));
    }
    // Before anything is started or stopped: the folders root writes in
    // are nobody else's (sys::folder). A new image only says it: its
    // services run, and what it writes there is link-safe all the same.
    if !trusted_folders(&config, resuming) {
        return exit::FAILURE;
    }
    let state_dir = config.host.state_dir.clone();
    // The folder's group and mode follow control_group (state.rs).
    let access_by_group = access(&config);
    if let Err(e) = state::ensure_dir(&state_dir, access_by_group.group) {
        error!("{e}");
        return exit::FAILURE;
    }
    let handed_lock = incoming.as_mut().and_then(|(i, _)| i.lock.take());
    let lock = match handed_lock {
        Some(fd) => state::Lock::adopt(fd, &state_dir),
        None => state::lock(&state_dir),
    };
    let lock = match lock {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return exit::FAILURE;
        }
    };
    if std::process::id() != 1 {
        // Orphaned grandchildren are re-parented to us and reaped.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            warn!("failed to become a child subreaper ({e}); orphans go to PID 1");
        }
    }
    let mut events = Vec::new();
    let smt_report = (config.host.smt == SmtPolicy::Off && !resuming).then(|| {
        let report = smt::take_siblings_offline(fs_root, &state_dir);
        if report.succeeded() {
            info!("SMT: {report}");
        } else {
            error!("SMT step failed; services start on the CPUs as they are: {report}");
            events.push(hooks::Event::new(
                EventKind::SmtFailure,
                format!("SMT step failed: {report}"),
            ));
        }
        smt::state_after(&report, fs_root, &state_dir)
    });
    let plan = match resolve_logged(&config, fs_root) {
        Ok(p) => p,
        Err(e) => {
            error!("{e}");
            return exit::FAILURE;
        }
    };
    // Each GPU lock domain's TMPDIR, before any service needs it.
    for e in crate::runtime::lockdirs::create_lock_dirs(&plan.host.gpu_tmpdirs) {
        error!("GPU lock folder: {e}; the services using it will fail to lock their GPU");
    }
    let prepare = plan.host.prepare.as_ref().filter(|_| !resuming).map(|p| {
        let report = hostprep::prepare(
            p,
            &cpus_in_use(&plan),
            fs_root,
            &plan.host.log_dir.join("prepare.log"),
        );
        let problems = report.problems();
        if problems.is_empty() {
            info!("host prepared: {}", report.summary());
        } else {
            error!(
                "host preparation: {}; services start anyway",
                problems.join("; ")
            );
        }
        report
    });
    if let Some(r) = prepare.as_ref().filter(|r| !r.ok()) {
        events.push(hooks::Event::new(
            EventKind::PrepareFailure,
            format!("host preparation: {}", r.problems().join("; ")),
        ));
    }
    let stops: BTreeMap<String, _> = plan
        .services
        .iter()
        .map(|s| (s.name.clone(), (s.stop.signal.0, s.stop.timeout.0)))
        .collect();
    let default_stop = (
        nix::sys::signal::Signal::SIGTERM,
        std::time::Duration::from_secs(30),
    );
    // A new image keeps its own children; anything else recorded is an
    // earlier daemon's and goes (a state it cannot read adopts what is
    // left in services.json).
    let ours = |pid: i32| resuming && crate::sys::reexec::is_child(pid);
    let state_readable = incoming.as_ref().is_some_and(|(i, _)| i.state.is_ok());
    if !state_readable {
        adopt::stop_leftovers(&state_dir, Path::new("/proc"), &stops, default_stop, &ours);
        adopt::stop_leftover_runs(&state_dir, Path::new("/proc"), &ours);
    }
    let (mut incoming, read_at) = match incoming {
        Some((i, at)) => (Some(i), at),
        None => (None, handover::Anchor::now()),
    };
    let control = control_server(&state_dir, access_by_group, incoming.as_mut());
    let http = metrics_server(&config, incoming.as_mut());
    let cgroups = cgroups(&config, fs_root, &plan, !resuming);
    let setup = supervisor::Setup {
        http,
        plan,
        fs_root: fs_root.clone(),
        control,
        state_dir,
        smt: smt_report,
        prepare,
        events,
        notifier: notify::Notifier::from_env(),
        cgroups,
        ceilings: limits::Ceilings::probe(),
        lock: Some(lock),
        run_args: args.clone(),
        binary: own_binary(),
    };
    let mut sup = match supervisor::Supervisor::new(setup) {
        Ok(s) => s,
        Err(e) => {
            error!("failed to set up signal handling: {e}");
            return exit::FAILURE;
        }
    };
    if let Some(incoming) = incoming {
        sup.resume(incoming, read_at);
    }
    sup.survive_panics(handed.panicked_at.map(handover::Mono));
    // The handlers are in place: what came during an exec is delivered.
    crate::sys::reexec::unblock_all();
    sup.run()
}

/// The control socket: the listener the previous image handed over, with
/// its clients, or a new one.
fn control_server(
    state_dir: &Path,
    access: control::server::Access,
    incoming: Option<&mut supervisor::Incoming>,
) -> Option<control::server::Server> {
    let path = state_dir.join(control::SOCKET_NAME);
    if let Some(i) = incoming {
        if let Some(fd) = i.control.take() {
            let clients = std::mem::take(&mut i.clients);
            let next_id = i.state.as_ref().map_or(0, |s| s.control_next_id);
            let listener = std::os::unix::net::UnixListener::from(fd);
            match control::server::Server::adopt(
                listener,
                &path,
                access,
                clients,
                next_id,
                std::time::Instant::now(),
            ) {
                Ok(s) => return Some(s),
                Err(e) => error!("failed to keep the control socket: {e}; binding it again"),
            }
        }
    }
    match control::server::Server::bind(&path, access) {
        Ok(s) => Some(s),
        Err(e) => {
            error!(
                "failed to open the control socket in {}: {e}; status and reload will not answer",
                state_dir.display()
            );
            None
        }
    }
}

/// The Prometheus listener, when configured: the one handed over, or a
/// new one.
fn metrics_server(
    config: &Config,
    incoming: Option<&mut supervisor::Incoming>,
) -> Option<control::http::MetricsServer> {
    let listen = config
        .host
        .metrics
        .as_ref()
        .and_then(|m| m.listen.as_ref())?;
    if let Some(i) = incoming {
        if let Some(fd) = i.metrics.take() {
            let conns = std::mem::take(&mut i.conns);
            let listener = std::net::TcpListener::from(fd);
            match control::http::MetricsServer::adopt(listener, conns, std::time::Instant::now()) {
                Ok(s) => return Some(s),
                Err(e) => error!("failed to keep the metrics listener: {e}; binding it again"),
            }
        }
    }
    control::http::MetricsServer::bind(listen.get_ref())
        .inspect(|_| info!("serving GET /metrics on {}", listen.get_ref()))
        .map_err(|e| error!("failed to listen for metrics on {}: {e}", listen.get_ref()))
        .ok()
}
