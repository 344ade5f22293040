//! The plan: exactly what each process will get on this host — argv,
//! environment, CPUs, GPUs, limits, restart policy, start order — computed
//! from the config and what the host says, without changing anything.
//! `venussup check` prints it; `venussup run` executes it.
//!
//! Pure: everything it learns about the machine comes from the [`Host`] it
//! is given (facts probed beforehand, and [`crate::host::Lookups`] for the
//! files, programs and users the config names).
//!
//! This file holds the plan's types and [`resolve`]; `env` builds the
//! environments, `program` checks commands against the host, `service`
//! and `timer` plan one of each, `placement` hands out CPUs and GPUs.

pub mod confine;
pub mod cpus;
mod env;
pub mod expand;
pub mod gpus;
pub mod instances;
pub mod listen;
mod order;
mod placement;
pub mod prepare;
mod program;
pub mod render;
pub mod sdr;
mod service;
mod timer;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::values::{
    serialize_display, ByteSize, CpuSpec, GpuSpec, HumanDuration, Limit, SignalName, Umask,
};
use crate::config::Instance;
use crate::config::{
    Config, Confine, CudaIds, GiveUpConfig, RestartPolicy, Role, ServiceKind, SmtPolicy, Task,
};
use crate::host::cgroups::Hierarchy;
use crate::host::gpu::Gpu;
use crate::host::{FileKind, Host};
use crate::util::cpulist::CpuSet;
use crate::util::diag::Diagnostics;
use cpus::{Layout, Span};
use gpus::LockDir;
use placement::{confinement, cpus_exist, hand_out_gpus, host_gpus, layout, place_cpus};

/// A run this long counts as steady unless `stable_after` says otherwise.
pub const DEFAULT_STABLE_AFTER: HumanDuration = HumanDuration::secs(10);

/// `PATH` for services that set none (systemd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub config: PathBuf,
    pub host: HostPlan,
    /// In start order.
    pub services: Vec<ServicePlan>,
    pub timers: Vec<TimerPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    pub smt: SmtPolicy,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub online_cpus: Option<CpuSet>,
    pub reserved_cpus: Option<CpuSet>,
    /// What shares are taken from: online after the SMT step, minus the
    /// reserved CPUs, and how many whole cores that is.
    pub usable_cpus: Option<CpuSet>,
    pub usable_cores: usize,
    /// The GPUs planned with, in PCI bus order, and where they were learned.
    pub gpus: Vec<Gpu>,
    pub gpu_source: crate::host::gpu::Source,
    /// How `CUDA_VISIBLE_DEVICES` names GPUs.
    pub cuda_visible_devices: CudaIds,
    /// One `TMPDIR` per GPU lock domain, created by `run` before any
    /// service starts.
    pub gpu_tmpdirs: Vec<LockDir>,
    /// The cgroup hierarchy services are confined in (`None`: not probed).
    pub cgroups: Option<Hierarchy>,
    pub log_max_size: ByteSize,
    pub log_keep: u32,
    /// `[host.prepare]`, done at every start of `run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepare: Option<prepare::Prepare>,
    /// `[[host.hook]]`, in config order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookPlan>,
    /// `[host.metrics] textfile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub textfile: Option<PathBuf>,
}

/// One `[[host.hook]]`: which events, and what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookPlan {
    pub on: Vec<crate::config::EventKind>,
    #[serde(flatten)]
    pub target: HookTarget,
    pub timeout: HumanDuration,
    pub tries: u32,
    /// An https hook's own CA file (`[[host.hook]] ca`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HookTarget {
    Command(Vec<String>),
    Url(String),
}

/// The CPUs a service asked for and got.
#[derive(Debug, Clone, Serialize)]
pub struct CpuPlan {
    #[serde(serialize_with = "serialize_display")]
    pub request: CpuSpec,
    /// The exact CPUs; `None` when they could not be placed (the config
    /// then has an error).
    pub cpus: Option<CpuSet>,
    /// How they lie on the host: cores, L3 groups, NUMA nodes.
    #[serde(flatten)]
    pub span: Option<Span>,
    pub confine: Confine,
    /// Cores per multicore-SDR unit, when it runs PreCommit1 with
    /// `FIL_PROOFS_USE_MULTICORE_SDR=1`.
    pub sdr_unit: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub share_cpus_with: Vec<String>,
}

/// The GPUs a service asked for and got; the plan's environment holds it
/// to them.
#[derive(Debug, Clone, Serialize)]
pub struct GpuPlan {
    #[serde(serialize_with = "serialize_display")]
    pub request: GpuSpec,
    /// CUDA indices (PCI bus order), as in `CUDA_VISIBLE_DEVICES`.
    pub devices: Vec<u32>,
    #[serde(flatten)]
    pub reason: gpus::Reason,
    /// Services holding one of the same GPUs.
    pub shared_with: Vec<String>,
    /// Its GPU lock domain's folder (shared with those services):
    /// bellperson's GPU locks live here.
    pub tmpdir: Option<PathBuf>,
    /// What the config had set for the variables the GPU plan replaced or
    /// removed (`BELLMAN_NO_GPU`, `CUDA_VISIBLE_DEVICES`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub replaced: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitsPlan {
    pub nofile: Limit,
    pub memlock: Limit,
    pub memory_max: Option<ByteSize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestartPlan {
    pub policy: RestartPolicy,
    pub backoff_max: HumanDuration,
    /// A run this long is steady: restart at once, reset the backoff.
    pub stable_after: HumanDuration,
    pub give_up: Option<GiveUpConfig>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StopPlan {
    pub signal: SignalName,
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyPlan {
    Tcp {
        address: String,
        timeout: HumanDuration,
    },
    File {
        path: PathBuf,
        timeout: HumanDuration,
    },
    Command {
        argv: Vec<String>,
        timeout: HumanDuration,
    },
    /// Where this venus-worker really listens accepts (`plan::listen`).
    WorkerListen {
        rule: listen::ListenRule,
        timeout: HumanDuration,
    },
}

/// One process as it will be started.
#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    pub name: String,
    /// Which copy of a service with `instances` it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    pub kind: ServiceKind,
    pub role: Role,
    pub tasks: Vec<Task>,
    /// `${VAR}` already expanded.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<Umask>,
    pub cpus: Option<CpuPlan>,
    pub gpus: GpuPlan,
    pub limits: LimitsPlan,
    pub restart: RestartPlan,
    pub stop: StopPlan,
    pub after: Vec<String>,
    pub ready: Option<ReadyPlan>,
    pub once: bool,
    pub log_file: PathBuf,
    pub drain: Option<DrainPlan>,
    /// Lines that mark a death no restart fixes.
    pub fatal_output: Vec<String>,
    pub requires_mounts: Vec<PathBuf>,
    /// The child's `oom_score_adj`, set before exec (venussup's own -1000
    /// is inherited otherwise).
    pub oom_score_adjust: i32,
}

/// What a planned stop runs before the stop signal.
#[derive(Debug, Clone, Serialize)]
pub struct DrainPlan {
    pub command: Option<Vec<String>>,
    pub quiet: Option<Vec<String>>,
    pub quiet_output: Option<String>,
    pub quiet_for: HumanDuration,
    pub poll_every: HumanDuration,
    pub timeout: HumanDuration,
    pub stop_command: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimerPlan {
    pub name: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub every: HumanDuration,
    pub jitter: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub after: Vec<String>,
    pub full_output: Vec<String>,
    pub full_exit_codes: Vec<i32>,
    pub log_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<GatePlan>,
}

/// `[timer.gate]` as planned (the command expanded like the timer's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatePlan {
    pub argv: Vec<String>,
    pub count: crate::config::GateCount,
    pub target: u32,
    pub max_per_tick: u32,
    pub spacing: HumanDuration,
    pub cooldown: Option<HumanDuration>,
}

/// Builds the plan for `config` on `host`. Problems found against the host
/// (programs, env files, CPUs, users) go to `diags`; the plan is returned
/// whole either way so `check` can show it beside them.
pub fn resolve(config: &Config, host: &Host, diags: &mut Diagnostics) -> Plan {
    let reserved_cpus = config
        .host
        .reserved_cpus
        .as_ref()
        .and_then(|r| match r.get_ref() {
            CpuSpec::List(set) => {
                cpus_exist(set, r.span(), "reserved_cpus", host, diags);
                Some(set.clone())
            }
            _ => {
                diags.error(r.span(), "`reserved_cpus` takes a CPU list such as \"0-1\"");
                None
            }
        });
    let layout = layout(
        host,
        config.host.smt,
        reserved_cpus.as_ref().unwrap_or(&CpuSet::new()),
    );
    let gpus = host_gpus(config, host, diags);
    let numa_nodes = layout.as_ref().and_then(Layout::numa_nodes);
    let expanded = instances::expand(config, &gpus.gpus, numa_nodes.as_deref(), diags);
    let config: &Config = &expanded;
    let host_env = env::base_env(config, host, diags);
    let mut services: Vec<ServicePlan> = config
        .services
        .iter()
        .map(|s| service::service(config, host, s, &host_env, diags))
        .collect();
    place_cpus(config, &mut services, layout.as_ref(), diags);
    let gpu_tmpdirs = hand_out_gpus(config, &mut services, &gpus, diags);
    if let Some(h) = &host.cgroups {
        confinement(config, &services, h, diags);
    }
    let index = config.service_index();
    let deps: Vec<Vec<usize>> = services
        .iter()
        .map(|s| {
            s.after
                .iter()
                .filter_map(|a| index.get(a.as_str()).copied())
                .collect()
        })
        .collect();
    let order = order::start_order(&deps);
    let mut slots: Vec<Option<ServicePlan>> = services.drain(..).map(Some).collect();
    let services = order.into_iter().filter_map(|i| slots[i].take()).collect();
    let timers = config
        .timers
        .iter()
        .map(|t| timer::timer(config, host, t, &host_env, diags))
        .collect();
    Plan {
        config: config.path.clone(),
        host: HostPlan {
            smt: config.host.smt,
            state_dir: config.host.state_dir.clone(),
            log_dir: config.host.log_dir.clone(),
            online_cpus: host.online_cpus.clone(),
            reserved_cpus,
            usable_cpus: layout.as_ref().map(Layout::usable),
            usable_cores: layout.as_ref().map_or(0, Layout::share_cores),
            gpus: gpus.gpus,
            gpu_source: gpus.source,
            cuda_visible_devices: *config.host.cuda_visible_devices.get_ref(),
            gpu_tmpdirs,
            cgroups: host.cgroups.clone(),
            log_max_size: config.host.log.max_size,
            log_keep: config.host.log.keep,
            prepare: config
                .host
                .prepare
                .as_ref()
                .map(prepare::Prepare::from_config),
            hooks: config
                .host
                .hook
                .iter()
                .filter_map(|h| hook(h, host, diags))
                .collect(),
            textfile: config
                .host
                .metrics
                .as_ref()
                .and_then(|m| m.textfile.as_ref())
                .map(|t| t.get_ref().clone()),
        },
        services,
        timers,
    }
}

/// A hook as planned; `None` for one the file's rules already refused.
/// A `ca` file missing here is a warning: the hook's POSTs fail until it
/// is there.
fn hook(h: &crate::config::HookConfig, host: &Host, diags: &mut Diagnostics) -> Option<HookPlan> {
    use crate::config::EventKind::*;
    if let Some(ca) = &h.ca {
        let path = ca.get_ref();
        if path.is_absolute() && !matches!(host.lookups.stat(path), FileKind::File { .. }) {
            diags.warning(
                ca.span(),
                format!(
                    "the hook's CA file {} is not a file here; every POST of this hook fails until it is",
                    ca.get_ref().display()
                ),
            );
        }
    }
    let target = match (&h.command, &h.url) {
        (Some(c), None) => HookTarget::Command(c.get_ref().clone()),
        (None, Some(u)) => HookTarget::Url(u.get_ref().clone()),
        _ => return None,
    };
    Some(HookPlan {
        on: h
            .on
            .clone()
            .unwrap_or_else(|| vec![Death, Oom, Failed, TimerFailure, SmtFailure, PrepareFailure]),
        target,
        timeout: h.timeout,
        tries: h.tries,
        ca: h.ca.as_ref().map(|c| c.get_ref().clone()),
    })
}
