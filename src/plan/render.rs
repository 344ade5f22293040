//! Showing a plan: the text `check` prints and its JSON twin. Both go
//! through [`redacted`], so a secret never reaches a terminal or a log.

use std::fmt::Write as _;

use super::{CpuPlan, Plan, ReadyPlan, ServicePlan, TimerPlan};
use crate::config::ServiceKind;

/// What stands in for a secret.
pub const REDACTED: &str = "<redacted>";

/// Words that make a variable or flag name secret.
const SECRET_WORDS: [&str; 4] = ["TOKEN", "SECRET", "PASSWORD", "KEY"];

fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
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
    let secrets = redact_env(&mut s.env);
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    s.argv = redact_argv(&s.argv, &refs);
    s
}

/// A copy of the plan fit to show: secret values replaced by `<redacted>`.
pub fn redacted(plan: &Plan) -> Plan {
    let mut plan = plan.clone();
    plan.services = plan.services.iter().map(redacted_service).collect();
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

fn cpus_line(c: &CpuPlan) -> String {
    let cpus = match &c.cpus {
        Some(set) => format!("{set} ({} CPUs)", set.len()),
        None => format!("{} of the usable CPUs, placed at start", c.request),
    };
    format!(
        "{cpus} · request {} · confine {}",
        c.request,
        label(&c.confine)
    )
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
    row(out, "gpus", &s.gpus.request.to_string());
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
    row(out, "log", &t.log_file.display().to_string());
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
