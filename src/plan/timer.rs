//! One `[[timer]]` as planned, its gate's command expanded like its own.

use std::collections::BTreeMap;

use super::env::{env_files_unread, own_env};
use super::program::{argv, owner_exists, run_as};
use super::{GatePlan, TimerPlan};
use crate::config::{Config, TimerConfig};
use crate::host::Host;
use crate::util::diag::Diagnostics;

pub(super) fn timer(
    config: &Config,
    host: &Host,
    t: &TimerConfig,
    host_env: &BTreeMap<String, String>,
    diags: &mut Diagnostics,
) -> TimerPlan {
    let name = t.name.get_ref().clone();
    let env = own_env(config, host, host_env, t.env_file.as_ref(), &t.env, diags);
    let unread = env_files_unread(config, host, t.env_file.as_ref());
    let run_argv = argv(config, host, &name, &t.command, &env, unread, diags);
    owner_exists(host, t.user.as_ref(), t.group.as_ref(), &name, diags);
    let gate = t.gate.as_ref().map(|g| GatePlan {
        argv: argv(
            config,
            host,
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
        user: run_as(t.user.as_ref(), t.group.as_ref()),
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
