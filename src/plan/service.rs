//! One `[[service]]` as planned, before its CPUs and GPUs are placed.

use std::collections::BTreeMap;

use toml::Spanned;

use super::env::{env_files_unread, own_env};
use super::program::{self, argv, owner_exists, run_as};
use super::{
    gpus, listen, sdr, CpuPlan, DrainPlan, GpuPlan, LimitsPlan, ReadyPlan, RestartPlan,
    ServicePlan, StopPlan, DEFAULT_STABLE_AFTER,
};
use crate::config::{Config, Role, ServiceConfig, VENUS_FATAL_OUTPUT};
use crate::host::Host;
use crate::util::diag::Diagnostics;

pub(super) fn service(
    config: &Config,
    host: &Host,
    s: &ServiceConfig,
    host_env: &BTreeMap<String, String>,
    diags: &mut Diagnostics,
) -> ServicePlan {
    let name = s.name.get_ref().clone();
    // What is wrong with every copy is said once, of the service.
    let owner = s.instance.as_ref().map_or(&name, |i| &i.of);
    let env = own_env(config, host, host_env, s.env_file.as_ref(), &s.env, diags);
    let unread = env_files_unread(config, host, s.env_file.as_ref());
    let argv = argv(config, host, owner, &s.command, &env, unread, diags);
    if s.instance.as_ref().is_none_or(|i| i.index == 0) {
        listen::command_line(s, &argv, diags);
    }
    owner_exists(host, s.user.as_ref(), s.group.as_ref(), owner, diags);
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
        } else if let Some(on) = &r.worker_listen {
            listen::ready(s, on, &argv, diags).map(|rule| ReadyPlan::WorkerListen { rule, timeout })
        } else {
            r.command.as_ref().map(|c| ReadyPlan::Command {
                argv: program::argv(
                    config,
                    host,
                    &format!("{owner} ready probe"),
                    c,
                    &env,
                    unread,
                    diags,
                ),
                timeout,
            })
        }
    });
    // Every command of the service takes `${VAR}`s from its environment,
    // as its own does.
    let drain = s.drain.as_ref().map(|d| {
        let mut side = |what: &str, c: &Option<Spanned<Vec<String>>>| {
            c.as_ref().map(|c| {
                program::argv(
                    config,
                    host,
                    &format!("{owner} {what}"),
                    c,
                    &env,
                    unread,
                    diags,
                )
            })
        };
        DrainPlan {
            command: side("drain", &d.command),
            quiet: side("quiet probe", &d.quiet),
            quiet_output: d.quiet_output.clone(),
            quiet_for: d.quiet_for,
            poll_every: d.poll_every,
            timeout: d.timeout,
            stop_command: side("stop command", &d.stop_command),
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
        user: run_as(s.user.as_ref(), s.group.as_ref()),
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
        drain,
        fatal_output: match (&s.fatal_output, s.role) {
            (Some(given), _) => given.clone(),
            (None, Role::Sealer | Role::Worker) => {
                VENUS_FATAL_OUTPUT.iter().map(ToString::to_string).collect()
            }
            (None, Role::Other) => Vec::new(),
        },
        requires_mounts: s.requires_mounts.clone(),
        oom_score_adjust: s.oom_score_adjust.as_ref().map_or(0, |a| *a.get_ref()),
        name,
    }
}
