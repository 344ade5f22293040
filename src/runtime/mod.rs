//! `venussup run`: the supervisor. In order: the host lock (one daemon per
//! host), the SMT step, the plan against the CPUs online after it, the
//! services an earlier daemon left running stopped, then the event loop
//! until SIGTERM or SIGINT has stopped every service.

mod adopt;
mod backoff;
mod limits;
mod logs;
mod notify;
mod service;
mod signals;
pub mod spawn;
mod state;
mod supervisor;
mod timer;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tracing::{error, info, warn};

use crate::commands::{exit, load_valid_config};
use crate::config::SmtPolicy;
use crate::diag::Severity;
use crate::fsroot::FsRoot;
use crate::plan::{self, Host};
use crate::smt;

pub use supervisor::Snapshot;

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

pub fn run(config_path: &Path, fs_root: &FsRoot, log_level: Option<&str>) -> u8 {
    spawn::close_inherited_on_exec();
    init_logging(log_level);
    let config = match load_valid_config(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::FAILURE;
        }
    };
    let state_dir = config.host.state_dir.clone();
    if let Err(e) = state::ensure_dir(&state_dir) {
        error!("{e}");
        return exit::FAILURE;
    }
    let _lock = match state::lock(&state_dir) {
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
    let smt_report = (config.host.smt == SmtPolicy::Off).then(|| {
        let report = smt::take_siblings_offline(fs_root, &state_dir);
        if report.succeeded() {
            info!("SMT: {report}");
        } else {
            error!("SMT step failed; services start on the CPUs as they are: {report}");
        }
        serde_json::to_value(&report).unwrap_or_default()
    });
    let mut diags = config.diagnostics();
    let plan = plan::resolve(&config, &Host::probe(fs_root), &mut diags);
    for d in diags.into_sorted() {
        match d.severity {
            Severity::Error => error!("{d}"),
            Severity::Warning => warn!("{d}"),
            Severity::Note => info!("{d}"),
        }
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
    adopt::stop_leftovers(&state_dir, Path::new("/proc"), &stops, default_stop);
    let setup = supervisor::Setup {
        plan,
        state_dir,
        smt: smt_report,
        notifier: notify::Notifier::from_env(),
        hooks: HashMap::new(),
        ceilings: limits::Ceilings::probe(),
    };
    match supervisor::Supervisor::new(setup) {
        Ok(s) => s.run(),
        Err(e) => {
            error!("failed to set up signal handling: {e}");
            exit::FAILURE
        }
    }
}
