//! The plan: exactly what each process will get on this host — argv,
//! environment, CPUs, GPUs, limits, restart policy, start order — computed
//! from the config and what the host says, without changing anything.
//! `venussup check` prints it; `venussup run` executes it.

mod expand;
mod order;
mod program;
pub mod render;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::Serialize;
use toml::Spanned;

use crate::config::values::{
    serialize_display, ByteSize, CpuSpec, GpuSpec, HumanDuration, Limit, SignalName, Umask,
};
use crate::config::{
    Config, Confine, GiveUpConfig, RestartPolicy, Role, ServiceConfig, ServiceKind, SmtPolicy,
    Task, TimerConfig,
};
use crate::cpulist::CpuSet;
use crate::diag::Diagnostics;
use crate::envfile;
use crate::fsroot::FsRoot;
use expand::{expand, ExpandError};
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
    /// venussup's own environment, for `pass_env`.
    pub own_env: BTreeMap<String, String>,
}

impl Host {
    /// Reads what the plan needs under `fs_root`. A host whose CPUs
    /// cannot be listed has `online_cpus: None` (CPU lists go unchecked).
    pub fn probe(fs_root: &FsRoot) -> Self {
        let online_cpus = crate::topology::read(fs_root).ok().map(|t| t.online());
        Self {
            online_cpus,
            own_env: std::env::vars().collect(),
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
    pub log_max_size: ByteSize,
    pub log_keep: u32,
}

/// The CPUs a service asked for and, where known, got.
#[derive(Debug, Clone, Serialize)]
pub struct CpuPlan {
    #[serde(serialize_with = "serialize_display")]
    pub request: CpuSpec,
    /// The exact CPUs; `None` until the allocator has placed a share.
    pub cpus: Option<CpuSet>,
    pub confine: Confine,
}

#[derive(Debug, Clone, Serialize)]
pub struct GpuPlan {
    #[serde(serialize_with = "serialize_display")]
    pub request: GpuSpec,
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
    let host_env = base_env(config, host, diags);
    let mut services: Vec<ServicePlan> = config
        .services
        .iter()
        .map(|s| service(config, s, &host_env, host, diags))
        .collect();
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
            log_max_size: config.host.log.max_size,
            log_keep: config.host.log.keep,
        },
        services,
        timers,
    }
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

fn service(
    config: &Config,
    s: &ServiceConfig,
    host_env: &BTreeMap<String, String>,
    host: &Host,
    diags: &mut Diagnostics,
) -> ServicePlan {
    let name = s.name.get_ref().clone();
    let env = own_env(config, host_env, s.env_file.as_ref(), &s.env, diags);
    let unread = env_files_unread(config, s.env_file.as_ref());
    let argv = argv(config, &name, &s.command, &env, unread, diags);
    user_exists(s.user.as_ref(), s.group.as_ref(), &name, diags);
    let cpus = s.cpus.as_ref().map(|spec| {
        let cpus = match spec.get_ref() {
            CpuSpec::List(set) => {
                cpus_exist(
                    set,
                    spec.span(),
                    &format!("`cpus` of `{name}`"),
                    host,
                    diags,
                );
                Some(set.clone())
            }
            CpuSpec::All => host.online_cpus.clone(),
            CpuSpec::Share(_) | CpuSpec::Rest => None,
        };
        CpuPlan {
            request: spec.get_ref().clone(),
            cpus,
            confine: s.confine,
        }
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
    let argv = argv(config, &name, &t.command, &env, unread, diags);
    user_exists(t.user.as_ref(), t.group.as_ref(), &name, diags);
    TimerPlan {
        log_file: config.host.log_dir.join(format!("{name}.log")),
        argv,
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
