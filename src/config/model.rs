//! The config file's tables as plain serde data. Every table denies unknown
//! keys; places that semantic checks point at are kept as `Spanned`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::instances::{Instance, Instances};
use super::values::{self, ByteSize, CpuSpec, GpuSpec, HumanDuration, Limit, SignalName, Umask};
use crate::util::gpuid::{normalize_bus_id, normalize_uuid};

/// `[host]`: settings for the whole machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// What to do with SMT sibling CPUs at start.
    #[serde(default)]
    pub smt: SmtPolicy,
    /// Where the lock, the state file and the control socket live.
    #[serde(default = "default_state_dir", deserialize_with = "values::path")]
    pub state_dir: PathBuf,
    /// Where each service's `<name>.log` goes.
    #[serde(default = "default_log_dir", deserialize_with = "values::path")]
    pub log_dir: PathBuf,
    /// CPUs kept for the OS and venussup itself; never given to a share.
    pub reserved_cpus: Option<Spanned<CpuSpec>>,
    /// Environment for every service and timer.
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, String>,
    /// A file of `KEY=VALUE` lines for every service (secrets go here).
    pub env_file: Option<Spanned<PathBuf>>,
    /// Variables taken from venussup's own environment (nothing else leaks).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Log rotation for every service's output.
    #[serde(default)]
    pub log: LogConfig,
    /// The cgroup venussup makes its services' cgroups in (under each
    /// hierarchy's root).
    #[serde(default = "default_cgroup_parent")]
    pub cgroup_parent: Spanned<String>,
    /// A group whose members may use the control socket (`status`,
    /// `stop`, ...) besides root; the socket is then mode 0660.
    pub control_group: Option<Spanned<String>>,
    /// `[host.metrics]`: the Prometheus listener (off unless set).
    pub metrics: Option<MetricsConfig>,
    /// The host's GPUs as the operator states them (a count or PCI bus
    /// ids); otherwise they are found under `/proc/driver/nvidia`.
    pub gpus: Option<Spanned<HostGpus>>,
    /// How `CUDA_VISIBLE_DEVICES` names a service's GPUs: by index (PCI bus
    /// order) or by UUID (stable when the bus is renumbered).
    #[serde(default = "spanned_default")]
    pub cuda_visible_devices: Spanned<CudaIds>,
    /// Lets a listed GPU of a WindowPoSt/WinningPoSt service be another
    /// service's too (an error otherwise: PoSt waits for the GPU lock).
    #[serde(default = "spanned_default")]
    pub share_post_gpu: Spanned<bool>,
    /// `[host.prepare]`: hugepages, governor, GPU persistence, redone at
    /// every start of `run`.
    pub prepare: Option<PrepareConfig>,
    /// `[[host.hook]]`: commands and webhooks told about events.
    #[serde(default)]
    pub hook: Vec<HookConfig>,
}

/// `[host] cuda_visible_devices`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CudaIds {
    /// `CUDA_VISIBLE_DEVICES=0,1` with `CUDA_DEVICE_ORDER=PCI_BUS_ID`.
    #[default]
    Index,
    /// `CUDA_VISIBLE_DEVICES=GPU-8e5c...,GPU-...`.
    Uuid,
}

/// `[host.metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `GET /metrics` on, e.g. "127.0.0.1:9101".
    pub listen: Option<Spanned<String>>,
    /// A `.prom` file in node_exporter's textfile folder, rewritten
    /// (atomically) when the state changes, at most once a second.
    pub textfile: Option<Spanned<PathBuf>>,
}

/// `[host.prepare]`: what an operator otherwise redoes by hand after every
/// boot. Each step is optional; a failure is reported, never fatal.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareConfig {
    /// Huge pages reserved on every NUMA node.
    pub hugepages: Option<HugepagesConfig>,
    /// Where a `hugetlbfs` is mounted (with the hugepages' page size).
    pub hugetlbfs: Option<Spanned<PathBuf>>,
    /// The CPU frequency governor for the CPUs the services use.
    pub governor: Option<Spanned<String>>,
    /// The command that turns NVIDIA persistence mode on, e.g.
    /// `["nvidia-smi", "-pm", "1"]`; skipped when the host has no GPU.
    pub gpu_persistence: Option<Spanned<Vec<String>>>,
}

/// `[host.prepare.hugepages]`: `{ size = "1GiB", per_node = 100 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HugepagesConfig {
    /// The page size: "2MiB" or "1GiB" on x86-64.
    pub size: Spanned<ByteSize>,
    /// Pages per node: one number for every node, or one per node.
    pub per_node: Spanned<PerNode>,
}

/// `per_node = 100` or `per_node = [100, 0]` (node 0, node 1, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PerNode {
    All(u64),
    Each(Vec<u64>),
}

impl<'de> Deserialize<'de> for PerNode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PerNode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of pages for every node, or a list with one per node")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PerNode, E> {
                u64::try_from(v)
                    .map(PerNode::All)
                    .map_err(|_| E::custom("a number of pages cannot be negative"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<PerNode, A::Error> {
                let mut each = Vec::new();
                while let Some(n) = seq.next_element::<u64>()? {
                    each.push(n);
                }
                Ok(PerNode::Each(each))
            }
        }
        d.deserialize_any(V)
    }
}

/// Events a hook can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A service died (any exit venussup did not ask for).
    Death,
    /// The kernel's OOM killer struck a service's cgroup.
    Oom,
    /// A service entered `failed` (give_up reached, not ready in time).
    Failed,
    /// A timer run (the pledge) failed.
    TimerFailure,
    /// The SMT step at start failed.
    SmtFailure,
    /// A host preparation step at start failed.
    PrepareFailure,
}

/// `[[host.hook]]`: exactly one of `command` and `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// Which events; default: all of them.
    pub on: Option<Vec<EventKind>>,
    /// Run with the event in `VENUSSUP_*` variables and as JSON on stdin.
    pub command: Option<Spanned<Vec<String>>>,
    /// POST the event's JSON here (`http://` or `https://`).
    pub url: Option<Spanned<String>>,
    /// With an `https://` url: a PEM file of the CA(s) the server's
    /// certificate must chain to (a private CA), instead of the Mozilla
    /// roots built into venussup.
    pub ca: Option<Spanned<PathBuf>>,
    /// One run or POST (all its tries) is killed after this long.
    #[serde(default = "default_hook_timeout")]
    pub timeout: HumanDuration,
    /// Tries of a POST that fails (1 = no retry).
    #[serde(
        default = "default_hook_tries",
        deserialize_with = "values::hook_tries"
    )]
    pub tries: u32,
}

fn default_hook_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}

fn default_hook_tries() -> u32 {
    3
}

/// Where the lock, the state file and the control socket live unless
/// `[host] state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/venussup";

pub fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_cgroup_parent() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_CGROUP_PARENT.to_string())
}

pub fn default_log_dir() -> PathBuf {
    PathBuf::from("/var/log/venussup")
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            smt: SmtPolicy::default(),
            state_dir: default_state_dir(),
            log_dir: default_log_dir(),
            reserved_cpus: None,
            env: BTreeMap::new(),
            env_file: None,
            pass_env: Vec::new(),
            log: LogConfig::default(),
            control_group: None,
            metrics: None,
            cgroup_parent: default_cgroup_parent(),
            gpus: None,
            cuda_visible_devices: spanned_default(),
            share_post_gpu: spanned_default(),
            prepare: None,
            hook: Vec::new(),
        }
    }
}

/// `[host] gpus`: `2`, or `["0000:01:00.0", "0000:41:00.0"]`, or UUIDs
/// (`["GPU-8e5c...", ...]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGpus(pub Stated);

impl<'de> Deserialize<'de> for HostGpus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HostGpus;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of GPUs or a list of PCI bus ids such as [\"0000:01:00.0\"] or GPU UUIDs")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HostGpus, E> {
                u32::try_from(v)
                    .map(|n| HostGpus(Stated::Count(n)))
                    .map_err(|_| E::custom("a number of GPUs cannot be negative"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HostGpus, A::Error> {
                let mut ids: Vec<StatedId> = Vec::new();
                while let Some(text) = seq.next_element::<String>()? {
                    let id = normalize_bus_id(&text)
                        .map(StatedId::Bus)
                        .or_else(|| normalize_uuid(&text).map(StatedId::Uuid))
                        .ok_or_else(|| {
                            serde::de::Error::custom(format!(
                                "`{text}` is neither a PCI bus id nor a GPU UUID; write e.g. \"0000:01:00.0\" or \"GPU-8e5c1f2a-...\" (see /proc/driver/nvidia/gpus)"
                            ))
                        })?;
                    if ids.contains(&id) {
                        return Err(serde::de::Error::custom(format!(
                            "GPU {id} is listed twice"
                        )));
                    }
                    ids.push(id);
                }
                Ok(HostGpus(Stated::Ids(ids)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `smt = "off"` takes every sibling thread offline at start; `"keep"`
/// leaves the CPUs as the machine booted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtPolicy {
    #[default]
    Keep,
    Off,
}

/// `[host.log]`: size-based rotation of the services' log files.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Rotate `<name>.log` when it grows past this.
    #[serde(
        default = "default_log_max_size",
        deserialize_with = "values::log_size"
    )]
    pub max_size: ByteSize,
    /// How many rotated files (`<name>.log.1` ...) to keep.
    #[serde(default = "default_log_keep", deserialize_with = "values::log_keep")]
    pub keep: u32,
}

fn default_log_max_size() -> ByteSize {
    ByteSize::mib(100)
}

fn default_log_keep() -> u32 {
    5
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_size: default_log_max_size(),
            keep: default_log_keep(),
        }
    }
}

/// A long-running program (`daemon`) or one that runs to success once its
/// dependencies are ready (`oneshot`, e.g. `venus-worker storage attach`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    #[default]
    Daemon,
    Oneshot,
}

/// What the service is, for the Venus-aware checks and GPU priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Sealer,
    Worker,
    #[default]
    Other,
}

/// Sealing tasks, by the names venus-sealer's `[Storage] Allow*` flags and
/// venus-worker's flags use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum Task {
    #[serde(alias = "AP")]
    AddPiece,
    #[serde(alias = "P1", alias = "PC1")]
    PreCommit1,
    #[serde(alias = "P2", alias = "PC2")]
    PreCommit2,
    #[serde(alias = "C2", alias = "C")]
    Commit,
    Unseal,
    /// Snap deals (venus-sealer v1.4.1 and later): encoding data into a
    /// CC sector, its proof, and re-creating the sector key.
    #[serde(alias = "RU")]
    ReplicaUpdate,
    /// A C2-class GPU proof (venus-sealer's resource table copies C2's).
    #[serde(alias = "PR2")]
    ProveReplicaUpdate2,
    #[serde(alias = "GSK")]
    RegenSectorKey,
    #[serde(alias = "wdPoSt")]
    WindowPoSt,
    WinningPoSt,
}

impl Task {
    /// GPU priority: WindowPoSt (and WinningPoSt) > C2 > PreCommit2; `None`
    /// for tasks that never use a GPU.
    pub fn gpu_priority(self) -> Option<u8> {
        match self {
            Task::WindowPoSt | Task::WinningPoSt => Some(3),
            Task::Commit | Task::ProveReplicaUpdate2 => Some(2),
            Task::PreCommit2 => Some(1),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Every exit venussup did not ask for, whatever its code.
    #[default]
    Always,
    /// Only non-zero exits and deaths by signal.
    OnFailure,
    Never,
}

/// How a service is held to its CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Confine {
    /// Affinity mask and cgroup cpuset (cgroup where available).
    #[default]
    Both,
    Affinity,
    Cgroup,
    None,
}

/// `[service.ready]`: when a started service counts as ready for those
/// that start after it. Exactly one of `tcp`, `file`, `command`,
/// `worker_listen`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyConfig {
    /// A TCP address that accepts connections, e.g. "127.0.0.1:2345".
    pub tcp: Option<Spanned<String>>,
    /// A file that exists.
    #[serde(default, deserialize_with = "values::optional_path")]
    pub file: Option<PathBuf>,
    /// A command that exits 0.
    pub command: Option<Spanned<Vec<String>>>,
    /// `true`: where this venus-worker really listens accepts (its
    /// `--listen`, with an unspecified IP replaced by the local address that
    /// routes to its sealer, as venus-worker does; `plan::listen`).
    pub worker_listen: Option<Spanned<bool>>,
    /// Give up waiting after this long (the service is then failed).
    #[serde(default = "default_ready_timeout")]
    pub timeout: HumanDuration,
}

fn default_ready_timeout() -> HumanDuration {
    HumanDuration::secs(120)
}

/// `[service.give_up]`: after `restarts` restarts within `within`, the
/// service is failed instead of restarted again.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GiveUpConfig {
    pub restarts: Spanned<u32>,
    pub within: HumanDuration,
}

/// `[service.limits]`: rlimits and the cgroup memory limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open files (venus-worker refuses to start below 100000).
    #[serde(default = "default_nofile")]
    pub nofile: Spanned<Limit>,
    /// Locked memory (the proofs library locks its layers).
    #[serde(default = "default_memlock")]
    pub memlock: Limit,
    /// cgroup memory limit; none by default.
    #[serde(default, deserialize_with = "values::memory_limit")]
    pub memory_max: Option<ByteSize>,
}

pub const DEFAULT_NOFILE: u64 = 1_048_576;

fn default_nofile() -> Spanned<Limit> {
    Spanned::new(0..0, Limit::Value(DEFAULT_NOFILE))
}

/// A default for a field kept with its place: the empty span `0..0` means
/// "not written in the file".
fn spanned_default<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

fn default_memlock() -> Limit {
    Limit::Unlimited
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            nofile: default_nofile(),
            memlock: default_memlock(),
            memory_max: None,
        }
    }
}

/// `[[service]]`: one program venussup starts and keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: Spanned<String>,
    #[serde(default)]
    pub kind: ServiceKind,
    #[serde(default)]
    pub role: Role,
    /// The program and its arguments, never through a shell. `${VAR}` takes
    /// a value from the service's environment (`$$` is a literal `$`).
    pub command: Spanned<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, String>,
    pub env_file: Option<Spanned<PathBuf>>,
    #[serde(default, deserialize_with = "values::optional_path")]
    pub workdir: Option<PathBuf>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub umask: Option<Umask>,
    /// What the service does (GPU priority, Venus checks).
    #[serde(default)]
    pub tasks: Vec<Task>,
    pub cpus: Option<Spanned<CpuSpec>>,
    /// Services whose CPUs this one's CPU list may overlap.
    #[serde(default)]
    pub share_cpus_with: Vec<Spanned<String>>,
    #[serde(default)]
    pub confine: Confine,
    #[serde(default = "spanned_default")]
    pub gpus: Spanned<GpuSpec>,
    /// Run this many copies (`NAME@0`, `NAME@1`, ...), or one per GPU or
    /// NUMA node; `{i}`, `{gpu}`, `{numa}`, `{port}` are substituted in
    /// each copy.
    pub instances: Option<Spanned<Instances>>,
    /// `{port}` of instance i is `port_base + i`.
    pub port_base: Option<Spanned<u16>>,
    /// Set on the copies venussup makes of a service with `instances`.
    #[serde(skip)]
    pub instance: Option<Instance>,
    /// Services that must be ready before this one starts.
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    pub ready: Option<Spanned<ReadyConfig>>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Longest wait between restarts of a service that keeps dying young.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: HumanDuration,
    /// A run at least this long is steady: the next death restarts at once
    /// and resets the backoff (default 10s).
    pub stable_after: Option<HumanDuration>,
    pub give_up: Option<GiveUpConfig>,
    #[serde(default = "default_stop_signal")]
    pub stop_signal: SignalName,
    /// Wait this long after the stop signal before SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: HumanDuration,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// A planned stop (stop, reload of a changed service, shutdown) drains
    /// first; a crash restart does not.
    pub drain: Option<DrainConfig>,
    /// Output that means "this will not fix itself by restarting": when a
    /// young death's last log lines contain one, the backoff goes to its
    /// cap and status shows the line. Default for Venus sealers and
    /// workers: the known fatal start errors.
    pub fatal_output: Option<Vec<String>>,
    /// Paths that must be mount points before it starts (a seal path on
    /// NVMe, a tmpfs); until they are, it waits in `blocked`.
    #[serde(default, deserialize_with = "values::paths")]
    pub requires_mounts: Vec<PathBuf>,
    /// For a oneshot: once it succeeded, never run it again on this host
    /// (recorded in the state folder).
    #[serde(default = "spanned_default")]
    pub once: Spanned<bool>,
    /// The kernel OOM killer's bias for this service's processes, -1000
    /// (never) to 1000 (first); default 0. venussup itself runs at -1000
    /// under its unit, and each child sets its own before exec.
    pub oom_score_adjust: Option<Spanned<i32>>,
}

fn default_backoff_max() -> HumanDuration {
    HumanDuration::secs(60)
}

fn default_stop_signal() -> SignalName {
    SignalName(nix::sys::signal::Signal::SIGTERM)
}

fn default_stop_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}

/// `[service.drain]`: what a planned stop does before the stop signal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainConfig {
    /// Run first, e.g. `venus-worker tasks disable` (no new tasks).
    pub command: Option<Spanned<Vec<String>>>,
    /// Polled until it reports idle: exit 0 (and, with `quiet_output`,
    /// output containing it), e.g. `venus-worker wait-quiet`.
    pub quiet: Option<Spanned<Vec<String>>>,
    pub quiet_output: Option<String>,
    /// Idle must hold this long (successive polls) before the stop.
    #[serde(default = "default_quiet_for")]
    pub quiet_for: HumanDuration,
    #[serde(default = "default_poll_every")]
    pub poll_every: HumanDuration,
    /// Stop anyway after this long (a sealing task can take hours).
    #[serde(default = "default_drain_timeout")]
    pub timeout: HumanDuration,
    /// Run last, before the stop signal.
    pub stop_command: Option<Spanned<Vec<String>>>,
}

fn default_quiet_for() -> HumanDuration {
    HumanDuration::secs(0)
}

fn default_poll_every() -> HumanDuration {
    HumanDuration::secs(10)
}

fn default_drain_timeout() -> HumanDuration {
    HumanDuration::secs(4 * 3600)
}

/// Start errors of venus-worker and lotus-worker that no restart fixes.
/// `repo is already locked` is lotus-worker's: venus-sealer waits for its
/// repo's lock instead (go-filelock, docs/venus.md).
pub const VENUS_FATAL_OUTPUT: [&str; 4] = [
    "soft file descriptor limit",
    "repo is already locked",
    "address already in use",
    "opening path",
];

/// `[[timer]]`: a command run every so often (the pledge).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerConfig {
    pub name: Spanned<String>,
    pub command: Spanned<Vec<String>>,
    pub every: Spanned<HumanDuration>,
    /// A random delay up to this long is added to each interval.
    pub jitter: Option<Spanned<HumanDuration>>,
    /// A run still going after this long is killed and counted a failure.
    pub timeout: Option<HumanDuration>,
    /// Services that must be ready before the first run.
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, String>,
    pub env_file: Option<Spanned<PathBuf>>,
    #[serde(default, deserialize_with = "values::optional_path")]
    pub workdir: Option<PathBuf>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    /// Output that means "full, try later" rather than failure, e.g.
    /// "too many sectors sealing".
    #[serde(default)]
    pub full_output: Vec<String>,
    /// Exit codes that mean "full".
    #[serde(default)]
    pub full_exit_codes: Vec<i32>,
    /// Asked before each tick: how many sectors are in flight.
    pub gate: Option<GateConfig>,
}

/// `[timer.gate]`: pledge only while fewer than `target` sectors are in
/// flight, at most `max_per_tick` a tick, `spacing` apart, and wait
/// `cooldown` after a `full` answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Prints the sectors in flight, e.g. a `sectors list` by state.
    pub command: Spanned<Vec<String>>,
    /// How to read its output: the first integer, or the non-empty lines.
    #[serde(default)]
    pub count: GateCount,
    pub target: Spanned<u32>,
    #[serde(default = "default_max_per_tick")]
    pub max_per_tick: Spanned<u32>,
    #[serde(default = "default_spacing")]
    pub spacing: HumanDuration,
    /// After a `full` run, the next tick waits at least this long.
    pub cooldown: Option<HumanDuration>,
}

/// How the gate command's output counts sectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateCount {
    /// The first integer in the output (`wc -l`, a JSON count).
    #[default]
    FirstInteger,
    /// The number of non-empty lines (one sector a line).
    Lines,
}

fn default_max_per_tick() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

fn default_spacing() -> HumanDuration {
    HumanDuration::secs(0)
}

/// `[capacity]`: inputs of `venussup plan` and of the checks against it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// "32GiB" or "64GiB" (or a test size: "2KiB", "8MiB", "512MiB").
    pub sector_size: Spanned<ByteSize>,
    /// Overrides of the sector size's default figures.
    #[serde(default, deserialize_with = "values::figure")]
    pub shared_cache: Option<ByteSize>,
    #[serde(default, deserialize_with = "values::figure")]
    pub per_sector_memory: Option<ByteSize>,
    #[serde(default, deserialize_with = "values::figure")]
    pub per_sector_disk: Option<ByteSize>,
    /// Sectors held back from what fits (default 1: the plan's 7 → 6).
    #[serde(default = "default_reserve", deserialize_with = "values::reserve")]
    pub reserve: u64,
    /// Seal paths whose free space counts; default: the `--seal` paths of
    /// the services' `storage attach` commands.
    #[serde(default, deserialize_with = "values::paths")]
    pub seal_paths: Vec<PathBuf>,
    /// Sectors the sealer's `MaxSealingSectors` leaves to other hosts: it
    /// counts every sealing sector of the sealer, on every host.
    #[serde(default, deserialize_with = "values::other_hosts")]
    pub other_hosts: u64,
    /// The proofs library PreCommit1 runs with: "venus" (what venus-worker
    /// v1.6.0-3 ships, storage-proofs-porep 11.1.1), "v12" (12.0.0 or
    /// later), "damocles" (damocles' fork, which uses huge pages).
    #[serde(default)]
    pub proofs: crate::capacity::Proofs,
    /// WindowPoSt's memory where no default is known (64 GiB sectors).
    #[serde(default, deserialize_with = "values::figure")]
    pub window_post_memory: Option<ByteSize>,
}

fn default_reserve() -> u64 {
    1
}

/// The GPUs the host states in `[host] gpus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stated {
    Count(u32),
    Ids(Vec<StatedId>),
}

/// One GPU of `[host] gpus`: by PCI bus id or by UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatedId {
    Bus(String),
    Uuid(String),
}

impl fmt::Display for StatedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatedId::Bus(s) | StatedId::Uuid(s) => f.write_str(s),
        }
    }
}

/// The cgroup that holds every service's cgroup.
pub const DEFAULT_CGROUP_PARENT: &str = "venussup";
