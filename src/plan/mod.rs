//! The plan: exactly what each process will get on this host — argv,
//! environment, CPUs, GPUs, limits, restart policy, start order — computed
//! from the config and what the host says, without changing anything.
//! `venussup check` prints it; `venussup run` executes it.

pub mod confine;
pub mod cpus;
mod expand;
pub mod gpus;
pub mod instances;
mod order;
pub mod prepare;
mod program;
pub mod render;
pub mod sdr;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::Serialize;
use toml::Spanned;

use crate::config::values::{
    serialize_display, ByteSize, CpuSpec, GpuSpec, HumanDuration, Limit, SignalName, Umask,
};
use crate::config::Instance;
use crate::config::{
    Config, Confine, CudaIds, GiveUpConfig, RestartPolicy, Role, ServiceConfig, ServiceKind,
    SmtPolicy, Task, TimerConfig, VENUS_FATAL_OUTPUT,
};
use crate::host::cgroups::Hierarchy;
use crate::host::gpu::Gpu;
use crate::host::topology::Topology;
use crate::util::cpulist::CpuSet;
use crate::util::diag::Diagnostics;
use crate::util::envfile;
use crate::util::fsroot::FsRoot;
use cpus::{Ask, Layout, Span};
use expand::{expand, ExpandError};
use gpus::LockDir;
use program::Lookup;

/// A run this long counts as steady unless `stable_after` says otherwise.
pub const DEFAULT_STABLE_AFTER: HumanDuration = HumanDuration::secs(10);

/// `PATH` for services that set none (systemd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What venussup learns from the host before planning.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// CPUs online now; `None` when the host does not say.
    pub online_cpus: Option<CpuSet>,
    /// Cores, L3 groups and NUMA nodes; `None` when it cannot be read
    /// (then every online CPU counts as a core of one group).
    pub topology: Option<Topology>,
    /// The NVIDIA GPUs found.
    pub gpus: crate::host::gpu::Discovery,
    /// The cgroup hierarchy services would be confined in; `None` when
    /// not probed (nothing is said about confinement then).
    pub cgroups: Option<Hierarchy>,
    /// venussup's own environment, for `pass_env`.
    pub own_env: BTreeMap<String, String>,
}

impl Host {
    /// Reads what the plan needs under `fs_root` (nothing is written).
    pub fn probe(fs_root: &FsRoot) -> Self {
        let topology = crate::host::topology::read(fs_root).ok();
        Self {
            online_cpus: topology.as_ref().map(Topology::online),
            topology,
            gpus: crate::host::gpu::discover(fs_root),
            cgroups: Some(Hierarchy::detect(fs_root)),
            own_env: std::env::vars().collect(),
        }
    }

    /// The host as the CPU allocator sees it after the SMT step; `None`
    /// when not even the online CPUs are known.
    pub fn layout(&self, smt: SmtPolicy, reserved: &CpuSet) -> Option<Layout> {
        let smt_off = smt == SmtPolicy::Off;
        match (&self.topology, &self.online_cpus) {
            (Some(t), _) => Some(Layout::new(t, smt_off, reserved)),
            (None, Some(online)) => Some(Layout::flat(online, reserved)),
            (None, None) => None,
        }
    }
}

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
    pub prepare: Option<crate::plan::prepare::Prepare>,
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
    let layout = host.layout(
        config.host.smt,
        reserved_cpus.as_ref().unwrap_or(&CpuSet::new()),
    );
    let gpus = host_gpus(config, host, diags);
    let numa_nodes = layout.as_ref().and_then(Layout::numa_nodes);
    let expanded = instances::expand(config, &gpus.gpus, numa_nodes.as_deref(), diags);
    let config = &expanded;
    let host_env = base_env(config, host, diags);
    let mut services: Vec<ServicePlan> = config
        .services
        .iter()
        .map(|s| service(config, s, &host_env, diags))
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
        .map(|t| timer(config, t, &host_env, diags))
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
                .map(crate::plan::prepare::Prepare::from_config),
            hooks: config.host.hook.iter().filter_map(hook).collect(),
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
fn hook(h: &crate::config::HookConfig) -> Option<HookPlan> {
    use crate::config::EventKind::*;
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
    })
}

/// The environment every service starts from, lowest precedence first:
/// `PATH` (systemd's default), `pass_env` from venussup's own environment,
/// the host `env_file`, then `[host.env]`.
fn base_env(config: &Config, host: &Host, diags: &mut Diagnostics) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([("PATH".to_string(), DEFAULT_PATH.to_string())]);
    for key in &config.host.pass_env {
        if let Some(v) = host.own_env.get(key) {
            env.insert(key.clone(), v.clone());
        }
    }
    if let Some(file) = &config.host.env_file {
        env.extend(read_env_file(config, file, diags));
    }
    env.extend(
        config
            .host
            .env
            .iter()
            .map(|(k, v)| (k.get_ref().clone(), v.clone())),
    );
    env
}

/// Reads an `env_file`; a file that cannot be read here is a warning (it
/// may hold secrets only the production host has).
fn read_env_file(
    config: &Config,
    file: &Spanned<PathBuf>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let path = config.dir().join(file.get_ref());
    match std::fs::read_to_string(&path) {
        Ok(text) => envfile::parse(&text).unwrap_or_else(|bad| {
            diags.error(
                file.span(),
                format!(
                    "{}:{}: `{}` is not a KEY=VALUE line",
                    path.display(),
                    bad.line,
                    bad.text
                ),
            );
            BTreeMap::new()
        }),
        Err(e) => {
            diags.warning(
                file.span(),
                format!(
                    "cannot read env_file {} here ({e}); its variables are unknown to this check, and a service that needs it will fail to start",
                    path.display()
                ),
            );
            BTreeMap::new()
        }
    }
}

/// The environment of one service or timer on top of the host's:
/// its `env_file`, then its `env`.
fn own_env(
    config: &Config,
    base: &BTreeMap<String, String>,
    file: Option<&Spanned<PathBuf>>,
    env: &BTreeMap<Spanned<String>, String>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut out = base.clone();
    if let Some(file) = file {
        out.extend(read_env_file(config, file, diags));
    }
    out.extend(env.iter().map(|(k, v)| (k.get_ref().clone(), v.clone())));
    out
}

/// Expands `${VAR}` in every argument and checks the program exists.
fn argv(
    config: &Config,
    owner: &str,
    cmd: &Spanned<Vec<String>>,
    env: &BTreeMap<String, String>,
    env_files_unread: bool,
    diags: &mut Diagnostics,
) -> Vec<String> {
    let out: Vec<String> = cmd
        .get_ref()
        .iter()
        .map(|arg| match expand(arg, env) {
            Ok(a) => a,
            Err(ExpandError::Unset(var)) if env_files_unread => {
                diags.warning(cmd.span(), format!("`${{{var}}}` in the command of `{owner}` is not set here; it must come from an env_file that this check could not read"));
                arg.clone()
            }
            Err(ExpandError::Unset(var)) => {
                diags.error(cmd.span(), format!("`${{{var}}}` in the command of `{owner}` is not set in its environment (set it in `env` or an `env_file`, or write `$$` for a literal `$`)"));
                arg.clone()
            }
            Err(ExpandError::Unclosed) => {
                diags.error(cmd.span(), format!("`{arg}` in the command of `{owner}` opens `${{` without closing `}}`"));
                arg.clone()
            }
        })
        .collect();
    if let Some(program) = cmd.get_ref().first().filter(|p| !p.trim().is_empty()) {
        let path_var = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
        match program::lookup(program, config.dir(), path_var) {
            Lookup::Found(_) => {}
            Lookup::AbsentAbsolute(p) => diags.warning(
                cmd.span(),
                format!("`{}` (the program of `{owner}`) is not on this host; `{owner}` will fail to start until it is installed", p.display()),
            ),
            Lookup::NotExecutable(p) => diags.warning(
                cmd.span(),
                format!("`{}` (the program of `{owner}`) is not an executable file (chmod +x?)", p.display()),
            ),
            Lookup::AbsentRelative(p) => diags.error(
                cmd.span(),
                format!("`{program}` (the program of `{owner}`) is taken relative to the config's folder and is not there: {} does not exist", p.display()),
            ),
            Lookup::NotInPath(name) => diags.error(
                cmd.span(),
                format!("`{name}` (the program of `{owner}`) is in no folder of PATH ({path_var}); give an absolute path"),
            ),
        }
    }
    out
}

fn env_files_unread(config: &Config, own: Option<&Spanned<PathBuf>>) -> bool {
    config
        .host
        .env_file
        .iter()
        .chain(own)
        .any(|f| !config.dir().join(f.get_ref()).is_file())
}

fn user_exists(
    user: Option<&Spanned<String>>,
    group: Option<&Spanned<String>>,
    owner: &str,
    diags: &mut Diagnostics,
) {
    if let Some(u) = user {
        if !matches!(nix::unistd::User::from_name(u.get_ref()), Ok(Some(_))) {
            diags.warning(
                u.span(),
                format!(
                    "user `{}` does not exist on this host; `{owner}` will fail to start",
                    u.get_ref()
                ),
            );
        }
    }
    if let Some(g) = group {
        if !matches!(nix::unistd::Group::from_name(g.get_ref()), Ok(Some(_))) {
            diags.warning(
                g.span(),
                format!(
                    "group `{}` does not exist on this host; `{owner}` will fail to start",
                    g.get_ref()
                ),
            );
        }
    }
}

/// An explicit CPU list must name CPUs that are online here.
fn cpus_exist(set: &CpuSet, span: Range<usize>, what: &str, host: &Host, diags: &mut Diagnostics) {
    if let Some(online) = &host.online_cpus {
        let missing = set.difference(online);
        if !missing.is_empty() {
            diags.error(
                span,
                format!("CPUs {missing} in {what} are not online on this host (online: {online})"),
            );
        }
    }
}

/// Places every service's CPUs (see [`alloc`]) and reports what is wrong
/// at the `cpus` it is about.
fn place_cpus(
    config: &Config,
    services: &mut [ServicePlan],
    layout: Option<&Layout>,
    diags: &mut Diagnostics,
) {
    let asking: Vec<(usize, &Spanned<CpuSpec>)> = config
        .services
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.cpus.as_ref().map(|c| (i, c)))
        .collect();
    let Some(layout) = layout else {
        for (i, spec) in asking {
            diags.error(
                spec.span(),
                format!(
                    "`cpus` of `{}` cannot be placed: the CPUs of this host could not be read",
                    services[i].name
                ),
            );
        }
        return;
    };
    let requests: Vec<cpus::Request> = asking
        .iter()
        .map(|&(i, spec)| cpus::Request {
            name: services[i].name.clone(),
            ask: match (spec.get_ref(), &services[i].instance) {
                (CpuSpec::Share(p), Some(inst)) => Ask::Part {
                    percent: *p,
                    parts: inst.count,
                },
                (CpuSpec::Share(p), None) => Ask::Share(*p),
                (CpuSpec::List(set), _) => Ask::List(set.clone()),
                (CpuSpec::Rest, _) => Ask::Rest,
                (CpuSpec::All, _) => Ask::All,
            },
            sdr_unit: services[i].cpus.as_ref().and_then(|c| c.sdr_unit),
            share_with: config.services[i]
                .share_cpus_with
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
            numa: services[i].instance.as_ref().and_then(|inst| inst.numa),
        })
        .collect();
    let outcome = cpus::allocate(layout, &requests);
    for (&(i, _), placement) in asking.iter().zip(outcome.placements) {
        if let (Some(plan), Some(p)) = (services[i].cpus.as_mut(), placement) {
            plan.cpus = Some(p.cpus);
            plan.span = Some(p.span);
        }
    }
    for (k, problem) in outcome.problems {
        let (i, spec) = asking[k];
        let message = format!("`cpus` of `{}`: {problem}", services[i].name);
        if problem.is_error() {
            diags.error(spec.span(), message);
        } else {
            diags.warning(spec.span(), message);
        }
    }
}

/// The GPUs to plan with: as stated in `[host] gpus`, else as found; what
/// the two disagree on is said at the statement.
fn host_gpus(config: &Config, host: &Host, diags: &mut Diagnostics) -> crate::host::gpu::Discovery {
    let stated = config.host.gpus.as_ref();
    let (gpus, remark) = gpus::reconcile(stated.map(|s| &s.get_ref().0), &host.gpus);
    if let (Some(s), Some((worth_warning, text))) = (stated, remark) {
        if worth_warning {
            diags.warning(s.span(), text);
        } else {
            diags.note(s.span(), text);
        }
    }
    for w in &gpus.warnings {
        diags.warning(None, w.clone());
    }
    gpus
}

/// Hands out the GPUs (see [`gpu`]), sets each service's GPU environment
/// and says what a service that asked for a GPU does not get. Returns the
/// lock domains' folders.
fn hand_out_gpus(
    config: &Config,
    services: &mut [ServicePlan],
    gpus: &crate::host::gpu::Discovery,
    diags: &mut Diagnostics,
) -> Vec<LockDir> {
    let mut claims = Vec::new();
    for s in &config.services {
        let (want, problems) = gpus::want(s.gpus.get_ref(), &gpus.gpus);
        for p in problems {
            diags.error(
                s.gpus.span(),
                format!("`gpus` of `{}`: {p}", s.name.get_ref()),
            );
        }
        claims.push(gpus::Claim {
            name: s.name.get_ref().clone(),
            want,
            tasks: s.tasks.clone(),
        });
    }
    let count = u32::try_from(gpus.gpus.len()).unwrap_or(u32::MAX);
    let (grants, problems) = gpus::assign(count, &claims);
    let span = |s: &ServiceConfig| {
        if s.gpus.span().is_empty() {
            s.name.span()
        } else {
            s.gpus.span()
        }
    };
    for p in problems {
        let s = &config.services[p.claim];
        diags.error(
            s.gpus.span(),
            format!("`gpus` of `{}`: {p}", s.name.get_ref()),
        );
    }
    let names: Vec<String> = claims.iter().map(|c| c.name.clone()).collect();
    let shared = gpus::sharing(&names, &grants);
    let tmpdirs = gpus::lock_tmpdirs(&grants, &config.host.state_dir);
    let owners: Vec<(Option<String>, Option<String>)> = services
        .iter()
        .map(|p| (p.user.clone(), p.group.clone()))
        .collect();
    let lock_dirs = gpus::lock_dirs(&names, &owners, &grants, &tmpdirs);
    let ids = &config.host.cuda_visible_devices;
    for (i, ((grant, shared_with), tmpdir)) in
        grants.into_iter().zip(shared).zip(tmpdirs).enumerate()
    {
        let s = &config.services[i];
        let name = s.name.get_ref();
        match grant.shortfall(name, &shared_with) {
            Some((true, text)) => diags.warning(span(s), text),
            Some((false, text)) => diags.note(span(s), text),
            None => {}
        }
        let visible = gpus::visible_devices(&grant.devices, &gpus.gpus, *ids.get_ref())
            .unwrap_or_else(|gpu| {
                diags.error(ids.span(), format!("`cuda_visible_devices = \"uuid\"`, but GPU {gpu} (of `{name}`) has no known UUID here (the driver's `GPU UUID`, or `[host] gpus` by UUID)"));
                grant.devices.iter().map(u32::to_string).collect()
            });
        let plan = &mut services[i];
        let replaced = gpus::apply_env(&mut plan.env, &visible, tmpdir.as_deref());
        plan.gpus = GpuPlan {
            request: s.gpus.get_ref().clone(),
            devices: grant.devices,
            reason: grant.reason,
            shared_with,
            tmpdir,
            replaced,
        };
    }
    for d in lock_dirs.iter().filter(|d| d.mixed_users) {
        diags.warning(
            None,
            format!(
                "{} share the GPU lock folder {} but run as different users: a lock file one of them creates there may not be writable by the others; run them as one user",
                d.services.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                d.path.display()
            ),
        );
    }
    lock_dirs
}

/// What confinement will do on this host, told where it falls short.
fn confinement(
    config: &Config,
    services: &[ServicePlan],
    hierarchy: &Hierarchy,
    diags: &mut Diagnostics,
) {
    for (s, plan) in config.services.iter().zip(services) {
        let span = s.cpus.as_ref().map_or_else(|| s.name.span(), Spanned::span);
        match confine::decide(hierarchy, plan) {
            Ok(d) => {
                if let Some(w) = d.warning {
                    diags.warning(span, w);
                }
            }
            Err(e) => diags.warning(
                s.name.span(),
                format!("{e}: `{}` will fail to start", plan.name),
            ),
        }
    }
}

fn service(
    config: &Config,
    s: &ServiceConfig,
    host_env: &BTreeMap<String, String>,
    diags: &mut Diagnostics,
) -> ServicePlan {
    let name = s.name.get_ref().clone();
    // What is wrong with every copy is said once, of the service.
    let owner = s.instance.as_ref().map_or(&name, |i| &i.of);
    let env = own_env(config, host_env, s.env_file.as_ref(), &s.env, diags);
    let unread = env_files_unread(config, s.env_file.as_ref());
    let argv = argv(config, owner, &s.command, &env, unread, diags);
    user_exists(s.user.as_ref(), s.group.as_ref(), owner, diags);
    let cpus = s.cpus.as_ref().map(|spec| CpuPlan {
        request: spec.get_ref().clone(),
        cpus: None,
        span: None,
        confine: s.confine,
        sdr_unit: sdr::multicore_sdr_unit(&s.tasks, &env),
        share_cpus_with: s
            .share_cpus_with
            .iter()
            .map(|n| n.get_ref().clone())
            .collect(),
    });
    let ready = s.ready.as_ref().and_then(|r| {
        let r = r.get_ref();
        let timeout = r.timeout;
        if let Some(tcp) = &r.tcp {
            Some(ReadyPlan::Tcp {
                address: tcp.get_ref().clone(),
                timeout,
            })
        } else if let Some(path) = &r.file {
            Some(ReadyPlan::File {
                path: path.clone(),
                timeout,
            })
        } else {
            r.command.as_ref().map(|c| ReadyPlan::Command {
                argv: c.get_ref().clone(),
                timeout,
            })
        }
    });
    ServicePlan {
        instance: s.instance.clone(),
        log_file: config.host.log_dir.join(format!("{name}.log")),
        kind: s.kind,
        role: s.role,
        tasks: s.tasks.clone(),
        argv,
        env,
        workdir: s.workdir.as_ref().map(|w| config.dir().join(w)),
        user: s.user.as_ref().map(|u| u.get_ref().clone()),
        group: s.group.as_ref().map(|g| g.get_ref().clone()),
        umask: s.umask,
        cpus,
        gpus: GpuPlan {
            request: s.gpus.get_ref().clone(),
            devices: Vec::new(),
            reason: gpus::Reason::NotAsked,
            shared_with: Vec::new(),
            tmpdir: None,
            replaced: BTreeMap::new(),
        },
        limits: LimitsPlan {
            nofile: *s.limits.nofile.get_ref(),
            memlock: s.limits.memlock,
            memory_max: s.limits.memory_max,
        },
        restart: RestartPlan {
            policy: s.restart,
            backoff_max: s.backoff_max,
            stable_after: s.stable_after.unwrap_or(DEFAULT_STABLE_AFTER),
            give_up: s.give_up.clone(),
        },
        stop: StopPlan {
            signal: s.stop_signal,
            timeout: s.stop_timeout,
        },
        after: s.after.iter().map(|a| a.get_ref().clone()).collect(),
        ready,
        once: *s.once.get_ref(),
        drain: s.drain.as_ref().map(|d| {
            let argv = |c: &Option<Spanned<Vec<String>>>| c.as_ref().map(|c| c.get_ref().clone());
            DrainPlan {
                command: argv(&d.command),
                quiet: argv(&d.quiet),
                quiet_output: d.quiet_output.clone(),
                quiet_for: d.quiet_for,
                poll_every: d.poll_every,
                timeout: d.timeout,
                stop_command: argv(&d.stop_command),
            }
        }),
        fatal_output: match (&s.fatal_output, s.role) {
            (Some(given), _) => given.clone(),
            (None, Role::Sealer | Role::Worker) => {
                VENUS_FATAL_OUTPUT.iter().map(ToString::to_string).collect()
            }
            (None, Role::Other) => Vec::new(),
        },
        requires_mounts: s.requires_mounts.clone(),
        name,
    }
}

fn timer(
    config: &Config,
    t: &TimerConfig,
    host_env: &BTreeMap<String, String>,
    diags: &mut Diagnostics,
) -> TimerPlan {
    let name = t.name.get_ref().clone();
    let env = own_env(config, host_env, t.env_file.as_ref(), &t.env, diags);
    let unread = env_files_unread(config, t.env_file.as_ref());
    let run_argv = argv(config, &name, &t.command, &env, unread, diags);
    user_exists(t.user.as_ref(), t.group.as_ref(), &name, diags);
    let gate = t.gate.as_ref().map(|g| GatePlan {
        argv: argv(
            config,
            &format!("{name} gate"),
            &g.command,
            &env,
            unread,
            diags,
        ),
        count: g.count,
        target: *g.target.get_ref(),
        max_per_tick: *g.max_per_tick.get_ref(),
        spacing: g.spacing,
        cooldown: g.cooldown,
    });
    TimerPlan {
        gate,
        log_file: config.host.log_dir.join(format!("{name}.log")),
        argv: run_argv,
        env,
        workdir: t.workdir.as_ref().map(|w| config.dir().join(w)),
        user: t.user.as_ref().map(|u| u.get_ref().clone()),
        group: t.group.as_ref().map(|g| g.get_ref().clone()),
        every: *t.every.get_ref(),
        jitter: t.jitter.as_ref().map(|j| *j.get_ref()),
        timeout: t.timeout,
        after: t.after.iter().map(|a| a.get_ref().clone()).collect(),
        full_output: t.full_output.clone(),
        full_exit_codes: t.full_exit_codes.clone(),
        name,
    }
}
