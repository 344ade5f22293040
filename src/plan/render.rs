//! Showing a plan: the text `check` prints and its JSON twin. Both go
//! through [`redacted`], so a secret never reaches a terminal or a log.

use std::fmt::Write as _;

use super::listen::ListenRule;
use super::{CpuPlan, GpuPlan, Plan, ReadyPlan, ServicePlan, TimerPlan};
use crate::config::Instance;
use crate::config::{CudaIds, ServiceKind};
use crate::plan::cpus::Span;
use crate::util::cpulist::CpuSet;

/// What stands in for a secret.
pub const REDACTED: &str = "<redacted>";

/// Words that make a variable or flag name secret (`MINER_API_INFO` is
/// `TOKEN:multiaddr`).
const SECRET_WORDS: [&str; 7] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "KEY",
    "CREDENTIAL",
    "API_INFO",
];

/// Names that contain a secret word but name no secret: venus-worker's
/// snap-deal switch `--regen-sector-key` (a task, RegenSectorKey).
const NOT_SECRETS: [&str; 1] = ["SECTOR_KEY"];

/// Whether a variable or flag name (`MINER_TOKEN`, `miner-token`) marks a
/// secret.
pub fn is_secret_name(name: &str) -> bool {
    let mut upper: String = name
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    for n in NOT_SECRETS {
        if upper.contains(n) {
            upper = upper.replace(n, "");
        }
    }
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// Hides secrets in an argv: values of secret variables wherever they
/// appear, and the value of a secret flag (`--miner-token=X`,
/// `--miner-token X`).
fn redact_argv(argv: &[String], secrets: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut hide_next = false;
    for arg in argv {
        if std::mem::take(&mut hide_next) {
            out.push(REDACTED.to_string());
            continue;
        }
        let mut a = arg.clone();
        for s in secrets {
            a = a.replace(s, REDACTED);
        }
        if let Some(flag) = a.strip_prefix('-').map(|f| f.trim_start_matches('-')) {
            match flag.split_once('=') {
                Some((name, _)) if is_secret_name(name) => {
                    a = format!("{}={REDACTED}", &a[..a.len() - flag.len() + name.len()]);
                }
                None if is_secret_name(flag) => hide_next = true,
                _ => {}
            }
        }
        out.push(a);
    }
    out
}

fn redact_env(env: &mut std::collections::BTreeMap<String, String>) -> Vec<String> {
    let mut secrets = Vec::new();
    for (k, v) in env.iter_mut() {
        if is_secret_name(k) && v != REDACTED {
            if !v.is_empty() {
                secrets.push(std::mem::replace(v, REDACTED.to_string()));
            } else {
                *v = REDACTED.to_string();
            }
        }
    }
    secrets
}

/// A copy of one service's plan fit to show.
pub fn redacted_service(s: &ServicePlan) -> ServicePlan {
    let mut s = s.clone();
    redact_service(&mut s);
    s
}

/// Replaces the secrets of one service's plan by `<redacted>`.
fn redact_service(s: &mut ServicePlan) {
    let secrets = redact_env(&mut s.env);
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    s.argv = redact_argv(&s.argv, &refs);
}

/// The plan fit to show: secret values replaced by `<redacted>`.
pub fn redacted(mut plan: Plan) -> Plan {
    plan.services.iter_mut().for_each(redact_service);
    for h in &mut plan.host.hooks {
        if let super::HookTarget::Url(u) = &mut h.target {
            *u = redact_url(u);
        }
    }
    for t in &mut plan.timers {
        let secrets = redact_env(&mut t.env);
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        t.argv = redact_argv(&t.argv, &refs);
    }
    plan
}

/// Quotes an argument for a POSIX shell when it needs it, so the printed
/// command can be pasted.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+<>".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn argv_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The name a value has in the config file (its serde name).
fn label<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from("?"),
    }
}

/// `0-95 · 96 cores · request 75% · confine both`.
fn cpus_line(c: &CpuPlan) -> String {
    let cpus = match (&c.cpus, &c.span) {
        (Some(set), Some(span)) => format!(
            "{set} · {} core{}",
            span.cores,
            if span.cores == 1 { "" } else { "s" }
        ),
        (Some(set), None) => format!("{set} ({} CPUs)", set.len()),
        _ => "not placed".to_string(),
    };
    let shares = if c.share_cpus_with.is_empty() {
        String::new()
    } else {
        format!(" · may overlap {}", c.share_cpus_with.join(", "))
    };
    format!(
        "{cpus} · request {} · confine {}{shares}",
        c.request,
        label(&c.confine)
    )
}

/// A set of small numbers (L3 groups, NUMA nodes) as a compact list.
fn numbers(items: impl Iterator<Item = usize>) -> String {
    items
        .filter_map(|n| u32::try_from(n).ok())
        .collect::<CpuSet>()
        .to_string()
}

/// `L3 groups 0-11 (12 whole groups of 8 cores) · NUMA nodes 0-1`.
fn span_line(span: &Span) -> String {
    let groups = span.l3.len();
    let l3 = if !span.l3_known {
        "L3 not told by the host".to_string()
    } else {
        let which = format!(
            "L3 group{} {}",
            if groups == 1 { "" } else { "s" },
            numbers(span.l3.iter().map(|u| u.group))
        );
        let sizes: Vec<usize> = span.l3.iter().map(|u| u.of).collect();
        let of = if sizes.windows(2).all(|w| w[0] == w[1]) {
            sizes.first().map_or(String::new(), ToString::to_string)
        } else {
            "different numbers of".to_string()
        };
        let each = if groups == 1 { "" } else { " each" };
        let shape = if span.whole_groups() {
            format!(
                "{groups} whole group{} of {of} cores",
                if groups == 1 { "" } else { "s" }
            )
        } else if span.even() {
            format!("{} of {of} cores{each}", span.min_per_group())
        } else {
            let per: Vec<String> = span.l3.iter().map(|u| u.cores.to_string()).collect();
            format!("{} of {of} cores each", per.join("+"))
        };
        format!("{which} ({shape})")
    };
    let numa = match &span.numa {
        Some(nodes) => format!(
            "NUMA node{} {nodes}",
            if nodes.len() == 1 { "" } else { "s" }
        ),
        None => "NUMA not told by the host".to_string(),
    };
    format!("{l3} · {numa}")
}

/// `0 · auto: Commit, taker 1 of 1, a GPU of its own`.
fn gpus_line(g: &GpuPlan) -> String {
    let devices = if g.devices.is_empty() {
        "none".to_string()
    } else {
        numbers(g.devices.iter().map(|&d| d as usize))
    };
    let mut line = format!("{devices} · request {} · {}", g.request, g.reason);
    if !g.shared_with.is_empty() {
        let _ = write!(line, " · shared with {}", g.shared_with.join(", "));
    }
    if let Some(t) = &g.tmpdir {
        let _ = write!(line, " · TMPDIR {}", t.display());
    }
    line
}

/// `1 of worker's 4 (per-gpu) · GPU 1 · NUMA node 0 · port 3457`.
fn instance_line(inst: &Instance) -> String {
    let mut line = format!(
        "{} of {}'s {} ({})",
        inst.index, inst.of, inst.count, inst.per
    );
    if let Some(g) = inst.gpu {
        let _ = write!(line, " · GPU {g}");
    }
    if let Some(n) = inst.numa {
        let _ = write!(line, " · NUMA node {n}");
    }
    if let Some(p) = inst.port {
        let _ = write!(line, " · port {p}");
    }
    line
}

fn ready_line(r: &ReadyPlan) -> String {
    match r {
        ReadyPlan::Tcp { address, timeout } => format!("tcp {address} accepts, within {timeout}"),
        ReadyPlan::File { path, timeout } => {
            format!("file {} exists, within {timeout}", path.display())
        }
        ReadyPlan::Command { argv, timeout } => {
            format!("`{}` exits 0, within {timeout}", argv_line(argv))
        }
        ReadyPlan::WorkerListen { rule, timeout } => match rule {
            ListenRule::At { address } => {
                format!("venus-worker's --listen {address} accepts, within {timeout}")
            }
            ListenRule::RoutedTo { port, sealer } => format!("port {port} of the local address that routes to the sealer {sealer} accepts (venus-worker's --listen on 0.0.0.0), within {timeout}"),
        },
    }
}

fn row(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "    {label:<8} {value}");
}

fn env_rows(out: &mut String, env: &std::collections::BTreeMap<String, String>) {
    let mut first = true;
    for (k, v) in env {
        row(
            out,
            if first { "env" } else { "" },
            &format!("{k}={}", shell_quote(v)),
        );
        first = false;
    }
}

fn service_block(out: &mut String, index: usize, s: &ServicePlan) {
    let kind = match s.kind {
        ServiceKind::Daemon => "daemon",
        ServiceKind::Oneshot if s.once => "oneshot, once per host",
        ServiceKind::Oneshot => "oneshot",
    };
    let tasks = if s.tasks.is_empty() {
        String::new()
    } else {
        let t: Vec<String> = s.tasks.iter().map(label).collect();
        format!(" · tasks {}", t.join(", "))
    };
    let _ = writeln!(
        out,
        "\n[{}] {} ({kind} · role {}{tasks})",
        index + 1,
        s.name,
        label(&s.role)
    );
    if let Some(inst) = &s.instance {
        row(out, "instance", &instance_line(inst));
    }
    row(out, "argv", &argv_line(&s.argv));
    env_rows(out, &s.env);
    if let Some(w) = &s.workdir {
        row(out, "workdir", &w.display().to_string());
    }
    if s.user.is_some() || s.group.is_some() || s.umask.is_some() {
        let who = format!(
            "user {} · group {} · umask {}",
            s.user.as_deref().unwrap_or("root"),
            s.group.as_deref().unwrap_or("(user's)"),
            s.umask.map_or("(inherited)".to_string(), |u| u.to_string())
        );
        row(out, "runs as", &who);
    }
    row(
        out,
        "cpus",
        &s.cpus
            .as_ref()
            .map_or("all online CPUs, not confined".to_string(), cpus_line),
    );
    if let Some(span) = s.cpus.as_ref().and_then(|c| c.span.as_ref()) {
        row(out, "", &span_line(span));
    }
    row(out, "gpus", &gpus_line(&s.gpus));
    row(
        out,
        "limits",
        &format!(
            "nofile {} · memlock {} · memory_max {}",
            s.limits.nofile,
            s.limits.memlock,
            s.limits
                .memory_max
                .map_or("none".to_string(), |m| m.to_string())
        ),
    );
    if s.kind == ServiceKind::Daemon {
        let give_up = s
            .restart
            .give_up
            .as_ref()
            .map_or("never gives up".to_string(), |g| {
                format!(
                    "fails after {} restarts within {}",
                    g.restarts.get_ref(),
                    g.within
                )
            });
        row(
            out,
            "restart",
            &format!(
                "{} · backoff up to {}, reset by a {} run · {give_up}",
                label(&s.restart.policy),
                s.restart.backoff_max,
                s.restart.stable_after
            ),
        );
    }
    row(
        out,
        "stop",
        &format!(
            "{}, then SIGKILL after {}",
            s.stop.signal.0.as_str(),
            s.stop.timeout
        ),
    );
    if !s.after.is_empty() {
        row(out, "after", &s.after.join(", "));
    }
    if let Some(r) = &s.ready {
        row(out, "ready", &ready_line(r));
    }
    if let Some(d) = &s.drain {
        let mut steps = Vec::new();
        if let Some(c) = &d.command {
            steps.push(format!("`{}`", argv_line(c)));
        }
        if let Some(q) = &d.quiet {
            let matched = d
                .quiet_output
                .as_ref()
                .map_or(String::new(), |o| format!(" with output {o:?}"));
            steps.push(format!(
                "until `{}` exits 0{matched} for {} (every {})",
                argv_line(q),
                d.quiet_for,
                d.poll_every
            ));
        }
        if let Some(c) = &d.stop_command {
            steps.push(format!("`{}`", argv_line(c)));
        }
        row(
            out,
            "drain",
            &format!("{}; at most {}", steps.join(", then "), d.timeout),
        );
    }
    if s.oom_score_adjust != 0 {
        row(
            out,
            "oom",
            &format!(
                "oom_score_adj {} (set before exec; 0 unless configured)",
                s.oom_score_adjust
            ),
        );
    }
    if !s.requires_mounts.is_empty() {
        let m: Vec<String> = s
            .requires_mounts
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        row(
            out,
            "mounts",
            &format!("waits for {} to be mounted", m.join(", ")),
        );
    }
    if !s.fatal_output.is_empty() {
        row(
            out,
            "fatal if",
            &format!(
                "a young death logs {}",
                s.fatal_output
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        );
    }
    row(out, "log", &s.log_file.display().to_string());
}

fn timer_block(out: &mut String, t: &TimerPlan) {
    let jitter = t
        .jitter
        .map_or(String::new(), |j| format!(" + up to {j} jitter"));
    let _ = writeln!(out, "\n[timer] {} (every {}{jitter})", t.name, t.every);
    row(out, "argv", &argv_line(&t.argv));
    env_rows(out, &t.env);
    if !t.after.is_empty() {
        row(out, "after", &t.after.join(", "));
    }
    if let Some(to) = t.timeout {
        row(out, "timeout", &to.to_string());
    }
    let mut full: Vec<String> = t
        .full_output
        .iter()
        .map(|p| format!("output contains {p:?}"))
        .collect();
    full.extend(t.full_exit_codes.iter().map(|c| format!("exit code {c}")));
    if !full.is_empty() {
        row(out, "full if", &full.join(" or "));
    }
    if let Some(g) = &t.gate {
        let cooldown = g
            .cooldown
            .map_or(String::new(), |c| format!(" · after full: wait {c}"));
        row(
            out,
            "gate",
            &format!(
                "{} ({}) · runs while below {} in flight · at most {} a tick, {} apart{cooldown}",
                argv_line(&g.argv),
                label(&g.count),
                g.target,
                g.max_per_tick,
                g.spacing
            ),
        );
    }
    row(out, "log", &t.log_file.display().to_string());
}

/// `http://host/path?<redacted>`: a webhook's query often holds its token.
pub fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?{REDACTED}"),
        None => url.to_string(),
    }
}

/// The plan as `check` prints it (call with a [`redacted`] plan).
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let h = &plan.host;
    let _ = writeln!(out, "plan for {}", plan.config.display());
    let _ = writeln!(
        out,
        "host: smt {} · online CPUs {} · reserved CPUs {}",
        label(&h.smt),
        h.online_cpus
            .as_ref()
            .map_or("unknown".to_string(), ToString::to_string),
        h.reserved_cpus
            .as_ref()
            .map_or("none".to_string(), ToString::to_string)
    );
    if let Some(usable) = &h.usable_cpus {
        let _ = writeln!(
            out,
            "      usable CPUs {usable} ({} whole cores for shares)",
            h.usable_cores
        );
    }
    if h.gpus.is_empty() {
        let _ = writeln!(out, "      GPUs: none found");
    } else {
        let list: Vec<String> = h.gpus.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "      GPUs {}, from {}", list.join(", "), h.gpu_source);
        if h.cuda_visible_devices == CudaIds::Uuid {
            let _ = writeln!(out, "      CUDA_VISIBLE_DEVICES names GPUs by UUID");
        }
    }
    if let Some(c) = &h.cgroups {
        let _ = writeln!(out, "      confinement: {c}");
    }
    if let Some(p) = &h.prepare {
        let _ = writeln!(out, "      prepare at start: {}", p.line());
    }
    for hook in &h.hooks {
        let what = match &hook.target {
            super::HookTarget::Command(c) => argv_line(c),
            super::HookTarget::Url(u) => format!(
                "POST {u} ({} tries{})",
                hook.tries,
                hook.ca
                    .as_ref()
                    .map_or(String::new(), |ca| format!(", CA {}", ca.display()))
            ),
        };
        let on: Vec<String> = hook.on.iter().map(label).collect();
        let _ = writeln!(
            out,
            "      hook on {}: {what} · within {}",
            on.join(", "),
            hook.timeout
        );
    }
    if let Some(t) = &h.textfile {
        let _ = writeln!(out, "      metrics textfile {}", t.display());
    }
    let _ = writeln!(
        out,
        "      state {} · logs {} (rotated at {}, {} kept)",
        h.state_dir.display(),
        h.log_dir.display(),
        h.log_max_size,
        h.log_keep
    );
    let _ = writeln!(
        out,
        "start order: {}",
        plan.services
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(" → ")
    );
    for (i, s) in plan.services.iter().enumerate() {
        service_block(&mut out, i, s);
    }
    for t in &plan.timers {
        timer_block(&mut out, t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn secret_flags_and_values_are_hidden() {
        let argv = v(&[
            "w",
            "--miner-token=abc",
            "--api-key",
            "k1",
            "--x=sekrit!",
            "--listen=0.0.0.0:3456",
        ]);
        assert_eq!(
            redact_argv(&argv, &["sekrit!"]),
            v(&[
                "w",
                "--miner-token=<redacted>",
                "--api-key",
                "<redacted>",
                "--x=<redacted>",
                "--listen=0.0.0.0:3456"
            ])
        );
    }

    #[test]
    fn secret_env_names() {
        let mut env = std::collections::BTreeMap::from([
            ("MINER_TOKEN".to_string(), "t".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "s".to_string()),
            ("DB_PASSWORD".to_string(), String::new()),
            ("TRUST_PARAMS".to_string(), "1".to_string()),
        ]);
        let secrets = redact_env(&mut env);
        assert_eq!(secrets, v(&["s", "t"]));
        assert_eq!(env["MINER_TOKEN"], REDACTED);
        assert_eq!(env["DB_PASSWORD"], REDACTED);
        assert_eq!(env["TRUST_PARAMS"], "1");
    }

    #[test]
    fn the_snap_deal_switch_regen_sector_key_is_no_secret_but_an_api_key_is() {
        assert!(!is_secret_name("regen-sector-key"));
        assert!(is_secret_name("api-key"));
        assert!(is_secret_name("SECTOR_KEY_TOKEN"));
    }

    #[test]
    fn quoting_only_where_a_shell_needs_it() {
        assert_eq!(
            shell_quote("--listen=0.0.0.0:3456"),
            "--listen=0.0.0.0:3456"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
