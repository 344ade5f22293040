//! The config file's own rules: what can be known wrong from the file alone,
//! before looking at the host. Every rule reports into the same
//! [`Diagnostics`] so all mistakes are shown at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use toml::Spanned;

use super::values::CpuSpec;
use super::{
    Config, GateConfig, HookConfig, PerNode, PrepareConfig, RestartPolicy, Role, ServiceConfig,
    ServiceKind,
};
use crate::capacity::{SectorProfile, SECTOR_SIZES};
use crate::util::diag::Diagnostics;

/// The shortest interval of a timer: every run is a process, a log line and
/// a snapshot change.
const MIN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub fn validate(config: &Config, diags: &mut Diagnostics) {
    names(config, diags);
    for s in &config.services {
        command(&s.command, diags);
        env_keys(s.env.keys(), diags);
        service_rules(s, diags);
    }
    for t in &config.timers {
        command(&t.command, diags);
        if let Some(g) = &t.gate {
            gate(g, diags);
        }
        env_keys(t.env.keys(), diags);
        if t.every.get_ref().0 < MIN_EVERY {
            diags.error(
                t.every.span(),
                format!(
                    "a timer's `every` is at least 1s (not {}): each run is a process and a log line",
                    t.every.get_ref()
                ),
            );
        }
        if let Some(j) = &t.jitter {
            if j.get_ref() >= t.every.get_ref() {
                diags.error(
                    j.span(),
                    format!(
                        "`jitter` ({}) must be shorter than `every` ({})",
                        j.get_ref(),
                        t.every.get_ref()
                    ),
                );
            }
        }
    }
    env_keys(config.host.env.keys(), diags);
    let env_files = config.host.env_file.iter();
    let env_files = env_files.chain(config.services.iter().filter_map(|s| s.env_file.as_ref()));
    for f in env_files.chain(config.timers.iter().filter_map(|t| t.env_file.as_ref())) {
        if f.get_ref().as_os_str().is_empty() {
            diags.error(
                f.span(),
                "`env_file` is an empty path; name the file, or leave the key out",
            );
        }
    }
    if let Some(listen) = config.host.metrics.as_ref().and_then(|m| m.listen.as_ref()) {
        if let Err(e) = listen.get_ref().parse::<SocketAddr>() {
            diags.error(
                listen.span(),
                format!(
                    "`{}` is not an IP address and port ({e}), e.g. \"127.0.0.1:9101\"",
                    listen.get_ref()
                ),
            );
        }
    }
    if let Some(p) = &config.host.prepare {
        prepare(p, diags);
    }
    for h in &config.host.hook {
        hook(h, diags);
    }
    if let Some(t) = config
        .host
        .metrics
        .as_ref()
        .and_then(|m| m.textfile.as_ref())
    {
        if !t.get_ref().is_absolute() || t.get_ref().extension().is_none_or(|e| e != "prom") {
            diags.error(
                t.span(),
                "`textfile` must be an absolute path ending in `.prom` (node_exporter reads only those)",
            );
        }
    }
    references(config, diags);
    cycles(config, diags);
    cpu_shares(config, diags);
    capacity(config, diags);
}

/// `[host.prepare]`: page sizes the kernel can have, a mount point, a
/// governor name, a command.
fn prepare(p: &PrepareConfig, diags: &mut Diagnostics) {
    if let Some(h) = &p.hugepages {
        let size = h.size.get_ref().0;
        if size < 4096 || !size.is_power_of_two() {
            diags.error(
                h.size.span(),
                format!(
                    "a huge page size is a power of two of at least 4KiB, such as \"2MiB\" or \"1GiB\" (not {})",
                    h.size.get_ref()
                ),
            );
        }
        if matches!(h.per_node.get_ref(), PerNode::Each(v) if v.is_empty()) {
            diags.error(h.per_node.span(), "`per_node` lists no node");
        }
    }
    if let Some(m) = &p.hugetlbfs {
        if !m.get_ref().is_absolute() {
            diags.error(
                m.span(),
                "`hugetlbfs` must be an absolute path such as \"/mnt/huge\"",
            );
        }
    }
    if let Some(g) = &p.governor {
        let name = g.get_ref();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            diags.error(
                g.span(),
                format!("`{name}` is not a governor name (e.g. \"performance\", \"schedutil\")"),
            );
        }
    }
    if let Some(c) = &p.gpu_persistence {
        command(c, diags);
    }
}

/// `[[host.hook]]`: one target, an http(s) URL, at least one try; `ca`
/// only with an https URL.
fn hook(h: &HookConfig, diags: &mut Diagnostics) {
    match (&h.command, &h.url) {
        (Some(c), None) => command(c, diags),
        (None, Some(u)) => match crate::util::url::HttpUrl::parse(u.get_ref()) {
            Err(e) => diags.error(u.span(), e),
            Ok(url) => {
                if let Some(ca) = h.ca.as_ref().filter(|_| !url.tls) {
                    diags.error(
                        ca.span(),
                        "`ca` is for an https:// url; this hook's url is plain http://",
                    );
                }
            }
        },
        (Some(c), Some(_)) => diags.error(
            c.span(),
            "a hook has either `command` or `url`, not both; write two `[[host.hook]]` tables",
        ),
        (None, None) => diags.error(None, "a `[[host.hook]]` needs `command` or `url`"),
    }
    if let Some(ca) = &h.ca {
        if h.url.is_none() {
            diags.error(ca.span(), "`ca` goes with `url`, not `command`");
        } else if !ca.get_ref().is_absolute() {
            diags.error(
                ca.span(),
                "`ca` must be an absolute path such as \"/etc/venussup/hooks-ca.pem\"",
            );
        }
    }
    if h.on.as_ref().is_some_and(Vec::is_empty) {
        diags.error(
            None,
            "a `[[host.hook]]` with `on = []` never runs; leave `on` out for every event",
        );
    }
    if h.tries == 0 {
        diags.error(None, "a hook's `tries` is at least 1");
    }
}

/// `[timer.gate]`: a command and a target that lets something through.
fn gate(g: &GateConfig, diags: &mut Diagnostics) {
    command(&g.command, diags);
    if *g.target.get_ref() == 0 {
        diags.error(
            g.target.span(),
            "a gate `target` of 0 never lets a run through",
        );
    }
    if *g.max_per_tick.get_ref() == 0 {
        diags.error(g.max_per_tick.span(), "`max_per_tick` is at least 1");
    }
}

/// A sector size without default figures needs all three given.
fn capacity(config: &Config, diags: &mut Diagnostics) {
    let Some(c) = &config.capacity else { return };
    let all_given =
        c.shared_cache.is_some() && c.per_sector_memory.is_some() && c.per_sector_disk.is_some();
    if SectorProfile::default_for(*c.sector_size.get_ref()).is_none() && !all_given {
        diags.error(
            c.sector_size.span(),
            format!(
                "no default figures for {} sectors (known: {}); give `shared_cache`, `per_sector_memory` and `per_sector_disk`",
                c.sector_size.get_ref(),
                SECTOR_SIZES.join(", ")
            ),
        );
    }
}

fn names(config: &Config, diags: &mut Diagnostics) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let all = config
        .services
        .iter()
        .map(|s| &s.name)
        .chain(config.timers.iter().map(|t| &t.name));
    for name in all {
        if let Some(problem) = crate::util::names::problem(name.get_ref()) {
            diags.error(name.span(), problem);
        }
        if let Some(first) = seen.insert(name.get_ref(), name.span().start) {
            let line = crate::util::diag::Position::of_offset(diags.text(), first).line;
            diags.error(
                name.span(),
                format!(
                    "`{}` is already the name of the service or timer on line {line}; names must be unique",
                    name.get_ref()
                ),
            );
        }
    }
}

fn command(cmd: &Spanned<Vec<String>>, diags: &mut Diagnostics) {
    match cmd.get_ref().first() {
        None => diags.error(
            cmd.span(),
            "`command` is empty; give the program and its arguments, e.g. [\"/usr/local/bin/venus-worker\", \"run\"]",
        ),
        Some(p) if p.trim().is_empty() => diags.error(
            cmd.span(),
            "the program (first element of `command`) is empty",
        ),
        Some(_) => {}
    }
}

fn env_keys<'a>(keys: impl Iterator<Item = &'a Spanned<String>>, diags: &mut Diagnostics) {
    for key in keys {
        if let Some(problem) = crate::util::envfile::name_problem(key.get_ref()) {
            diags.error(key.span(), problem);
        }
    }
}

fn service_rules(s: &ServiceConfig, diags: &mut Diagnostics) {
    let name = s.name.get_ref();
    if *s.once.get_ref() && s.kind != ServiceKind::Oneshot {
        diags.error(
            s.once.span(),
            format!("`once` applies to oneshot services; `{name}` is a daemon (add `kind = \"oneshot\"` or drop `once`)"),
        );
    }
    if let Some(ready) = &s.ready {
        let r = ready.get_ref();
        let probes = [
            r.tcp.is_some(),
            r.file.is_some(),
            r.command.is_some(),
            r.worker_listen.is_some(),
        ];
        let count = probes.iter().filter(|p| **p).count();
        if count != 1 {
            diags.error(
                ready.span(),
                format!("`ready` of `{name}` needs exactly one of `tcp`, `file`, `command` or `worker_listen` (it has {count})"),
            );
        }
        // With `instances`, the address is checked once `{port}` is filled.
        if let Some(tcp) = r.tcp.as_ref().filter(|_| s.instances.is_none()) {
            if tcp.get_ref().parse::<SocketAddr>().is_err() {
                diags.error(
                    tcp.span(),
                    format!(
                        "`{}` is not an IP address and port, e.g. \"127.0.0.1:2345\"",
                        tcp.get_ref()
                    ),
                );
            }
        }
        if let Some(cmd) = &r.command {
            command(cmd, diags);
        }
        if s.kind == ServiceKind::Oneshot {
            diags.error(
                ready.span(),
                format!("`{name}` is a oneshot: it is done when it exits 0, so it takes no `ready` probe"),
            );
        }
    }
    if let Some(d) = &s.drain {
        for c in [&d.command, &d.quiet, &d.stop_command]
            .into_iter()
            .flatten()
        {
            command(c, diags);
        }
        if d.quiet.is_none() && d.quiet_output.is_some() {
            diags.error(s.name.span(), format!("`drain.quiet_output` of `{name}` needs a `drain.quiet` command to read it from"));
        }
        if d.poll_every.0.is_zero() {
            diags.error(
                s.name.span(),
                format!("`drain.poll_every` of `{name}` must be longer than zero"),
            );
        }
    }
    for m in &s.requires_mounts {
        if !m.is_absolute() {
            diags.error(
                s.name.span(),
                format!(
                    "`requires_mounts` of `{name}` names {}, which is not an absolute path",
                    m.display()
                ),
            );
        }
    }
    if let Some(adj) = &s.oom_score_adjust {
        if !(-1000..=1000).contains(adj.get_ref()) {
            diags.error(
                adj.span(),
                format!(
                    "`oom_score_adjust` of `{name}` is {}; the kernel takes -1000 (never OOM-killed) to 1000 (killed first)",
                    adj.get_ref()
                ),
            );
        }
    }
    if let Some(g) = &s.give_up {
        if *g.restarts.get_ref() == 0 {
            diags.error(
                g.restarts.span(),
                "`give_up.restarts` must be at least 1 (leave `give_up` out to never give up)",
            );
        }
    }
    if s.restart == RestartPolicy::OnFailure && matches!(s.role, Role::Sealer | Role::Worker) {
        diags.warning(
            s.name.span(),
            format!("`{name}` is a Venus {} with `restart = \"on-failure\"`: venus-worker and lotus-worker exit 0 after a fatal error, so it would stay dead; use \"always\"",
                if s.role == Role::Sealer { "sealer" } else { "worker" }),
        );
    }
}

/// The service a reference names: `worker` itself, or `worker` for
/// `worker@2` when `worker` has `instances` (which of them exist is known
/// only on the host).
fn referred<'a>(with_instances: &BTreeSet<&str>, name: &'a str) -> &'a str {
    match name.split_once('@') {
        Some((base, k))
            if !k.is_empty()
                && k.bytes().all(|b| b.is_ascii_digit())
                && with_instances.contains(base) =>
        {
            base
        }
        _ => name,
    }
}

/// The services that have `instances`, looked up once (not once per
/// reference: a file of 100k services is checked in linear time).
fn with_instances(config: &Config) -> BTreeSet<&str> {
    config
        .services
        .iter()
        .filter(|s| s.instances.is_some())
        .map(|s| s.name.get_ref().as_str())
        .collect()
}

/// `after` and `share_cpus_with` must name services of this file (or one
/// instance of one, `worker@0`), not itself.
fn references(config: &Config, diags: &mut Diagnostics) {
    let multi = with_instances(config);
    let services: BTreeSet<&str> = config
        .services
        .iter()
        .map(|s| s.name.get_ref().as_str())
        .collect();
    let known = || {
        services
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for s in &config.services {
        let owner = s.name.get_ref();
        let is_list = matches!(
            s.cpus.as_ref().map(Spanned::get_ref),
            Some(CpuSpec::List(_))
        );
        for other in &s.share_cpus_with {
            if !is_list {
                diags.error(other.span(), format!("`share_cpus_with` lets a CPU list overlap others; `{owner}` has no CPU list (shares and `rest` never overlap)"));
            } else if referred(&multi, other.get_ref()) == owner {
                diags.error(
                    other.span(),
                    format!("`{owner}` cannot share CPUs with itself"),
                );
            } else if !services.contains(referred(&multi, other.get_ref())) {
                diags.error(
                    other.span(),
                    format!(
                        "`{}` in `share_cpus_with` of `{owner}` is not a service of this file; services: {}",
                        other.get_ref(),
                        known()
                    ),
                );
            }
        }
    }
    let afters = config
        .services
        .iter()
        .map(|s| (s.name.get_ref(), &s.after))
        .chain(config.timers.iter().map(|t| (t.name.get_ref(), &t.after)));
    for (owner, after) in afters {
        for dep in after {
            if referred(&multi, dep.get_ref()) == owner {
                diags.error(dep.span(), format!("`{owner}` cannot start after itself"));
            } else if !services.contains(referred(&multi, dep.get_ref())) {
                diags.error(
                    dep.span(),
                    format!(
                        "`{}` in `after` of `{owner}` is not a service of this file; services: {}",
                        dep.get_ref(),
                        known()
                    ),
                );
            }
        }
    }
}

/// Reports each ordering cycle once, at the `after` entry that closes it.
fn cycles(config: &Config, diags: &mut Diagnostics) {
    let multi = with_instances(config);
    let index = config.service_index();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut mark = vec![0u8; config.services.len()];
    for start in 0..config.services.len() {
        visit(config, &index, &multi, start, &mut mark, diags);
    }
}

/// A depth-first walk from `start` along `after`, on a stack of its own (a
/// chain of 100k services must not overflow the thread's stack): the path
/// holds each service on it with the next of its `after` entries to follow.
fn visit(
    config: &Config,
    index: &BTreeMap<&str, usize>,
    multi: &BTreeSet<&str>,
    start: usize,
    mark: &mut [u8],
    diags: &mut Diagnostics,
) {
    if mark[start] != 0 {
        return;
    }
    mark[start] = 1;
    let mut path: Vec<(usize, usize)> = vec![(start, 0)];
    while let Some(&mut (node, ref mut k)) = path.last_mut() {
        let Some(dep) = config.services[node].after.get(*k) else {
            mark[node] = 2;
            path.pop();
            continue;
        };
        *k += 1;
        let Some(&next) = index.get(referred(multi, dep.get_ref())) else {
            continue;
        };
        if next == node {
            continue; // reported as "after itself"
        }
        match mark[next] {
            0 => {
                mark[next] = 1;
                path.push((next, 0));
            }
            1 => {
                let from = path.iter().position(|&(n, _)| n == next).unwrap_or(0);
                let mut names: Vec<&str> = path[from..]
                    .iter()
                    .map(|&(n, _)| config.services[n].name.get_ref().as_str())
                    .collect();
                names.push(config.services[next].name.get_ref());
                diags.error(
                    dep.span(),
                    format!(
                        "ordering cycle: {} (each waits for the next to be ready; remove one `after`)",
                        names.join(" → ")
                    ),
                );
            }
            _ => {}
        }
    }
}

/// Shares cannot add up past the host, and at most one service takes the rest.
fn cpu_shares(config: &Config, diags: &mut Diagnostics) {
    let mut total: u32 = 0;
    let mut rest: Option<&str> = None;
    for s in &config.services {
        let Some(spec) = &s.cpus else { continue };
        match spec.get_ref() {
            CpuSpec::Share(p) => {
                total += u32::from(*p);
                if total > 100 {
                    diags.error(
                        spec.span(),
                        format!(
                            "CPU shares add up to {total}% with `{}`; together they can have at most 100%",
                            s.name.get_ref()
                        ),
                    );
                }
            }
            CpuSpec::Rest => match rest {
                Some(first) => diags.error(
                    spec.span(),
                    format!(
                        "`{first}` already takes the rest of the CPUs; give `{}` a share or a list",
                        s.name.get_ref()
                    ),
                ),
                None => rest = Some(s.name.get_ref()),
            },
            CpuSpec::List(_) | CpuSpec::All => {}
        }
    }
    if let (Some(name), 100..) = (rest, total) {
        let span = config
            .services
            .iter()
            .find(|s| s.name.get_ref() == name)
            .and_then(|s| s.cpus.as_ref().map(Spanned::span));
        diags.error(
            span,
            format!("`{name}` takes the rest of the CPUs, but the shares already take 100%"),
        );
    }
}
