//! The commands that talk to the running daemon over its control socket:
//! `status`, `start`, `stop`, `restart`, `reload`, `timer run`, `metrics`.
//! Exit codes: 0 done (status: everything as desired), 1 refused or
//! something failed or backing off, 3 the daemon is not reachable.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{exit, print_stdout};
use crate::config;
use crate::control::client::{self, ClientError};
use crate::control::Command;
use crate::status::{FatalSeen, ServiceStatus, Snapshot};
use crate::util::clock::unix_now;

/// The daemon's state folder, from the config at `path`: only its `[host]
/// state_dir` is read (a config with mistakes still names its folder).
pub fn state_dir_of(path: &Path) -> PathBuf {
    config::state_dir_only(path)
}

fn ask(config: &Path, command: Command) -> Result<Value, u8> {
    client::request(&state_dir_of(config), command).map_err(|e| {
        eprintln!("venussup: {e}");
        match e {
            ClientError::Unreachable { .. } => exit::UNREACHABLE,
            _ => exit::FAILURE,
        }
    })
}

fn emit(text: &str) -> u8 {
    match print_stdout(text) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("venussup: {e}");
            exit::FAILURE
        }
    }
}

/// `start`, `stop`, `restart`, `reload`, `timer run`: says what happened.
pub fn simple(config: &Path, command: Command) -> u8 {
    match ask(config, command) {
        Ok(v) => emit(&format!("{}\n", summary_line(&v))),
        Err(code) => code,
    }
}

fn summary_line(v: &Value) -> String {
    // Every instance of a name (`stop worker`): one line each.
    if let Some(each) = v["services"].as_array() {
        let lines: Vec<String> = each
            .iter()
            .map(|s| match s["error"].as_str() {
                Some(e) => format!("{}: refused: {e}", s["service"].as_str().unwrap_or("?")),
                None => summary_line(s),
            })
            .collect();
        return lines.join("\n");
    }
    if let (Some(name), Some(state)) = (v["service"].as_str(), v["state"].as_str()) {
        return format!("{name}: {state}");
    }
    if let Some(name) = v["timer"].as_str() {
        return format!("{name}: run started");
    }
    if v.get("unchanged").is_some() {
        let list = |k: &str| {
            let names: Vec<&str> = v[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let mut line = format!(
            "reloaded: started {}; stopped {}; restarted {}; unchanged {}",
            list("started"),
            list("stopped"),
            list("restarted"),
            list("unchanged")
        );
        if v["applied"].as_array().is_some_and(|a| !a.is_empty()) {
            let _ = write!(line, "; applied {}", list("applied"));
        }
        if v["timers"].as_array().is_some_and(|a| !a.is_empty()) {
            let _ = write!(line, "; timers {}", list("timers"));
        }
        for why in v["needs_restart"].as_array().into_iter().flatten() {
            let _ = write!(line, "\nneeds a restart: {}", why.as_str().unwrap_or(""));
        }
        return line;
    }
    v.to_string()
}

/// How long `upgrade` waits for its answer: the new program's checks
/// (bounded by the daemon: 10 s and 60 s), then the handover.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(120);

/// `upgrade [--binary PATH]`: the daemon checks the new program and
/// replaces its own with it in place; the answer comes from the new image.
pub fn upgrade(config: &Path, binary: Option<PathBuf>) -> u8 {
    // A relative path is the caller's, not the daemon's.
    let binary = binary.map(|b| std::path::absolute(&b).unwrap_or(b));
    let state_dir = state_dir_of(config);
    match client::request_within(&state_dir, Command::Upgrade { binary }, UPGRADE_TIMEOUT) {
        Ok(v) => {
            for lost in v["lost"].as_array().into_iter().flatten() {
                eprintln!(
                    "venussup: the handover lost: {}",
                    lost.as_str().unwrap_or("")
                );
            }
            emit(&format!("{}\n", upgraded_line(&v)))
        }
        Err(ClientError::BadAnswer(why)) => {
            // The new image runs but could not read the state (so it does
            // not know who asked): its status says what it kept.
            eprintln!("venussup: no answer to the upgrade ({why})");
            if let Ok(st) = client::request(&state_dir, Command::Status { name: None }) {
                let h = &st["handover"];
                eprintln!(
                    "venussup: the daemon (pid {}) runs venussup {}; its last handover lost: {}",
                    st["pid"],
                    st["venussup"].as_str().unwrap_or("?"),
                    h["lost"]
                );
            }
            exit::FAILURE
        }
        Err(e) => {
            eprintln!("venussup: {e}");
            match e {
                ClientError::Unreachable { .. } => exit::UNREACHABLE,
                _ => exit::FAILURE,
            }
        }
    }
}

/// `upgraded in place: pid 812 runs venussup 0.2.0 (/usr/local/bin/venussup); ...`
fn upgraded_line(v: &Value) -> String {
    format!(
        "upgraded in place: pid {} runs venussup {} ({}), was {}; {} service processes and {} timer runs kept; handover {:.1} ms",
        v["pid"],
        v["to"].as_str().unwrap_or("?"),
        v["binary"].as_str().unwrap_or("?"),
        v["from"].as_str().unwrap_or("?"),
        v["services"],
        v["timer_runs"],
        v["handover_ms"].as_f64().unwrap_or(f64::NAN)
    )
}

pub fn metrics(config: &Path) -> u8 {
    match ask(config, Command::Metrics) {
        Ok(Value::String(text)) => emit(&text),
        Ok(other) => emit(&other.to_string()),
        Err(code) => code,
    }
}

/// A duration in seconds the way `systemctl` shows one: `2h 3min`.
fn ago(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}min {s}s"),
        (0, _, _) => format!("{h}h {m}min"),
        _ => format!("{d}d {h}h"),
    }
}

fn last_exit(s: &ServiceStatus, now: u64) -> String {
    s.last_exit.as_ref().map_or("-".to_string(), |e| {
        let why = e
            .reason
            .as_deref()
            .map_or(String::new(), |r| format!(", {r}"));
        format!("{}{why} ({} ago)", e.how, ago(now.saturating_sub(e.at)))
    })
}

/// `0,1` as in `CUDA_VISIBLE_DEVICES`; `-` for none.
fn gpus(s: &ServiceStatus) -> String {
    if s.gpus.is_empty() {
        return "-".to_string();
    }
    let ids: Vec<String> = s.gpus.iter().map(ToString::to_string).collect();
    ids.join(",")
}

/// The FATAL column: how many deaths showed a fatal start line.
fn fatal_mark(s: &ServiceStatus) -> String {
    match s.fatal.count {
        0 => "-".to_string(),
        n => format!("{n}!"),
    }
}

/// `3 fatal lines, the last 2min 5s ago: ERROR: repo is already locked`.
fn fatal_line(f: &FatalSeen, now: u64) -> Option<String> {
    let last = f.last.as_ref()?;
    let lines = if f.count == 1 { "line" } else { "lines" };
    Some(format!(
        "{} fatal {lines}, the last {} ago: {}",
        f.count,
        ago(now.saturating_sub(last.at)),
        last.line
    ))
}

/// Whether everything is as desired: nothing failed or backing off.
fn healthy(snap: &Snapshot) -> bool {
    !snap
        .services
        .iter()
        .any(|s| matches!(&*s.state, "failed" | "backoff"))
}

fn smt_line(snap: &Snapshot) -> String {
    snap.smt
        .as_ref()
        .map_or_else(|| "SMT left as booted".to_string(), |s| s.line())
}

fn table(snap: &Snapshot) -> String {
    let now = unix_now();
    let mut out = String::new();
    // The daemon's version (an older daemon's snapshot does not say it).
    let version = if snap.venussup.is_empty() {
        env!("CARGO_PKG_VERSION")
    } else {
        snap.venussup.as_str()
    };
    let _ = writeln!(
        out,
        "venussup {version} · pid {} · up {} · {}{}",
        snap.pid,
        ago(now.saturating_sub(snap.started_at)),
        snap.config.display(),
        if snap.stopping { " · stopping" } else { "" }
    );
    if let Some(h) = &snap.handover {
        let how = if h.reason == "panic" {
            "re-executed after a panic"
        } else {
            "upgraded in place"
        };
        let lost = if h.lost.is_empty() {
            "nothing lost".to_string()
        } else {
            format!("lost: {}", h.lost.join("; "))
        };
        let _ = writeln!(
            out,
            "      {how} {} ago from {} ({:.1} ms; {lost})",
            ago(now.saturating_sub(h.at)),
            h.from,
            h.ms
        );
    }
    let _ = writeln!(out, "host: {}", smt_line(snap));
    if !snap.cgroups.tracked {
        let _ = writeln!(out, "      NOT TRACKED: {}", snap.cgroups.hierarchy);
    }
    if let Some(p) = &snap.prepare {
        let _ = writeln!(out, "      prepared: {}", p.summary());
    }
    for t in &snap.timers {
        if let Some(g) = &t.gate {
            let _ = writeln!(out, "      {}: {}", t.name, g.line());
        }
    }
    for h in &snap.hooks {
        let _ = writeln!(
            out,
            "      hook {}: {} ok, {} failed, {} dropped{}",
            h.target,
            h.counts.ok,
            h.counts.failed,
            h.counts.dropped,
            if h.running { " · running" } else { "" }
        );
    }
    out.push('\n');
    let rows: Vec<[String; 10]> = snap
        .services
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                serde_json::to_value(s.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                s.state.clone(),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.since.map_or("-".into(), |t| ago(now.saturating_sub(t))),
                s.restarts.to_string(),
                fatal_mark(s),
                last_exit(s, now),
                s.cpus.as_ref().map_or("all".into(), ToString::to_string),
                gpus(s),
            ]
        })
        .collect();
    let header = [
        "SERVICE",
        "KIND",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "FATAL",
        "LAST EXIT",
        "CPUS",
        "GPUS",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&header.map(String::from)));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
    for s in &snap.services {
        let notes = s.reason.iter().cloned().chain(fatal_line(&s.fatal, now));
        for note in notes {
            let _ = writeln!(out, "  {}: {note}", s.name);
        }
    }
    if !snap.timers.is_empty() {
        let _ = writeln!(
            out,
            "\nTIMER  NEXT  RUNS (success/full/failure/skipped)  LAST RESULTS (newest first)"
        );
        for t in &snap.timers {
            let next = match (t.running, t.next_in_secs) {
                (true, _) => "running".to_string(),
                (false, Some(s)) => {
                    format!("in {}", ago(Duration::from_secs_f64(s.max(0.0)).as_secs()))
                }
                (false, None) => "not scheduled".to_string(),
            };
            let last: Vec<&str> = t.last.iter().map(|r| r.result.name()).collect();
            let r = &t.runs;
            let _ = writeln!(
                out,
                "{}  {next}  {}/{}/{}/{}  {}",
                t.name,
                r.success,
                r.full,
                r.failure,
                r.skipped,
                last.join(", ")
            );
        }
    }
    out
}

fn detail(v: &Value) -> String {
    let mut out = String::new();
    let name = v["name"].as_str().unwrap_or("?");
    let _ = writeln!(out, "{name} ({})", v["kind"].as_str().unwrap_or("?"));
    for key in [
        "state",
        "pid",
        "restarts",
        "reason",
        "cpus",
        "gpus",
        "gpus_why",
        "log_file",
        "after",
        "runs",
        "next_in_secs",
    ] {
        if !v[key].is_null() {
            let _ = writeln!(out, "  {key:<9} {}", v[key]);
        }
    }
    let fatal = serde_json::from_value::<FatalSeen>(v["fatal"].clone()).unwrap_or_default();
    if let Some(line) = fatal_line(&fatal, unix_now()) {
        let _ = writeln!(out, "  FATAL     {line}");
    }
    if let Some(argv) = v["argv"].as_array() {
        let args: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(out, "  command   {}", args.join(" "));
    }
    if let Some(exits) = v["recent_exits"].as_array().filter(|e| !e.is_empty()) {
        let _ = writeln!(out, "  recent exits (newest first):");
        for e in exits {
            let _ = writeln!(
                out,
                "    {} after {:.1}s, at {}",
                serde_json::from_value::<crate::status::ExitKind>(e["how"].clone())
                    .map_or(e["how"].to_string(), |k| k.to_string()),
                e["ran_secs"].as_f64().unwrap_or(0.0),
                e["at"]
            );
        }
    }
    if let Some(lines) = v["log_tail"].as_array().filter(|l| !l.is_empty()) {
        let _ = writeln!(out, "  last log lines:");
        for l in lines.iter().filter_map(Value::as_str) {
            let _ = writeln!(out, "    {l}");
        }
    }
    out
}

pub fn status(config: &Path, name: Option<String>, json: bool) -> u8 {
    let detail_wanted = name.is_some();
    let v = match ask(config, Command::Status { name }) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if detail_wanted {
        let bad = matches!(v["state"].as_str(), Some("failed" | "backoff"));
        let code = emit(&if json { format!("{v:#}\n") } else { detail(&v) });
        return if code == exit::OK && bad {
            exit::FAILURE
        } else {
            code
        };
    }
    let snap: Snapshot = match serde_json::from_value(v.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("venussup: the daemon's status is not what this version reads: {e}");
            return exit::FAILURE;
        }
    };
    let code = emit(&if json {
        format!("{v:#}\n")
    } else {
        table(&snap)
    });
    if code == exit::OK && !healthy(&snap) {
        exit::FAILURE
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::sample;

    fn two_services() -> Snapshot {
        let mut sealer = sample::service("sealer");
        sealer.gpus = vec![0, 1];
        let mut worker = sample::service("worker01");
        worker.state = "backoff".into();
        worker.pid = None;
        // Two days ago: "2d 0h" whatever second the table is drawn in.
        let at = unix_now() - 2 * 86400;
        worker.fatal.saw("ERROR: repo is already locked", at);
        worker.fatal.saw("ERROR: repo is already locked", at);
        sample::snapshot(vec![sealer, worker])
    }

    fn row<'a>(table: &'a str, name: &str) -> &'a str {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
    }

    #[test]
    fn the_table_shows_gpus_and_marks_fatal_lines_under_the_row() {
        let t = table(&two_services());
        let header = t.lines().find(|l| l.starts_with("SERVICE")).unwrap();
        let cols: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(cols.last(), Some(&"GPUS"), "{header}");
        assert!(cols.contains(&"FATAL"), "{header}");
        let sealer = row(&t, "sealer");
        assert!(sealer.ends_with("all   0,1"), "{sealer}");
        let worker: Vec<&str> = row(&t, "worker01").split_whitespace().collect();
        assert_eq!(worker.last(), Some(&"-"), "no GPU: {worker:?}");
        assert!(worker.contains(&"2!"), "{worker:?}");
        assert!(
            t.contains(
                "\n  worker01: 2 fatal lines, the last 2d 0h ago: ERROR: repo is already locked\n"
            ),
            "{t}"
        );
        assert!(!t.contains("sealer: "), "nothing under a clean row: {t}");
    }

    #[test]
    fn status_name_shows_gpus_and_the_last_fatal_line() {
        let mut v = serde_json::to_value(&two_services().services[1]).unwrap();
        let text = detail(&v);
        assert!(
            text.contains(
                "  FATAL     2 fatal lines, the last 2d 0h ago: ERROR: repo is already locked\n"
            ),
            "{text}"
        );
        assert!(text.contains("  gpus      []\n"), "{text}");
        v["fatal"] = serde_json::json!({"count": 0});
        v["gpus"] = serde_json::json!([1]);
        v["gpus_why"] = serde_json::json!("auto: Commit, taker 2 of 2, a GPU of its own");
        let text = detail(&v);
        assert!(!text.contains("FATAL"), "{text}");
        assert!(text.contains("  gpus      [1]\n"), "{text}");
        assert!(
            text.contains("  gpus_why  \"auto: Commit, taker 2 of 2, a GPU of its own\"\n"),
            "{text}"
        );
    }
}
