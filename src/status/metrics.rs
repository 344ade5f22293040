//! The daemon's snapshot in Prometheus' text exposition format (0.0.4):
//! served by the optional listener and by `venussup metrics`, and read by
//! node_exporter's textfile collector. [`render_with`] is pure: the clock
//! and what is read from `/proc` (CPU time, memory) are its arguments;
//! [`render`] reads them just before.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::status::{Coarse, Snapshot};

/// CPU time and memory of a running service's main process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Reads `/proc/PID/stat` (utime + stime) and `/proc/PID/statm` (resident).
pub fn usage(proc_dir: &Path, pid: i32) -> Option<Usage> {
    let stat = std::fs::read_to_string(proc_dir.join(pid.to_string()).join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line are 12 and 13 after the command name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string(proc_dir.join(pid.to_string()).join("statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    let page = u64::try_from(page).ok()?;
    #[allow(clippy::cast_precision_loss)] // CPU ticks stay far below 2^53
    let cpu_seconds = ticks as f64 / hz as f64;
    Some(Usage {
        cpu_seconds,
        rss_bytes: pages * page,
    })
}

fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// The name a value has in the config and in `status --json` (`sealer`,
/// `WindowPoSt`): one spelling everywhere.
fn serde_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// The metrics of `snap`; `usage` by service name for running services.
pub fn render_with(snap: &Snapshot, usage: &BTreeMap<String, Usage>, now: u64) -> String {
    let mut o = Out(String::new());
    o.family("venussup_build_info", "gauge", "venussup's version.");
    o.sample(
        "venussup_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    o.family(
        "venussup_smt_offline_cpus",
        "gauge",
        "SMT sibling CPUs offline that venussup took offline (this start or an earlier one).",
    );
    let offlined = snap
        .smt
        .as_ref()
        .map_or(0, |s| s.offlined_by_venussup.len());
    o.sample("venussup_smt_offline_cpus", &[], offlined);
    if let Some(smt) = &snap.smt {
        o.family(
            "venussup_smt_ok",
            "gauge",
            "1 when the SMT step at start (smt = \"off\") took every sibling offline, else 0.",
        );
        o.sample("venussup_smt_ok", &[], u8::from(smt.ok()));
    }
    o.family(
        "venussup_cgroups_tracked",
        "gauge",
        "1 when every service, timer run, gate command and hook has a cgroup venussup finds and empties it by; 0 when what they leave behind is found through its process group only (a setsid child can outlive them).",
    );
    o.sample(
        "venussup_cgroups_tracked",
        &[],
        u8::from(snap.cgroups.tracked),
    );
    o.family(
        "venussup_orphans_reaped_total",
        "counter",
        "Orphaned processes venussup reaped.",
    );
    o.sample("venussup_orphans_reaped_total", &[], snap.orphans_reaped);

    o.family(
        "venussup_service_info",
        "gauge",
        "Always 1: what the service is (role), does (tasks) and has (the CUDA indices of its GPUs), to join on service.",
    );
    for s in &snap.services {
        let tasks: Vec<String> = s.tasks.iter().map(serde_name).collect();
        let gpus: Vec<String> = s.gpus.iter().map(ToString::to_string).collect();
        o.sample(
            "venussup_service_info",
            &[
                ("service", &s.name),
                ("role", &serde_name(&s.role)),
                ("tasks", &tasks.join(",")),
                ("gpus", &gpus.join(",")),
            ],
            1,
        );
    }
    o.family(
        "venussup_service_up",
        "gauge",
        "1 when the service is up: its process runs, or it is a oneshot that finished successfully (done); else 0.",
    );
    for s in &snap.services {
        o.sample(
            "venussup_service_up",
            &[("service", &s.name)],
            u8::from(s.up()),
        );
    }
    o.family(
        "venussup_service_state",
        "gauge",
        "1 for the state the service is in, 0 for the others.",
    );
    for s in &snap.services {
        for st in Coarse::ALL.map(Coarse::as_str) {
            o.sample(
                "venussup_service_state",
                &[("service", &s.name), ("state", st)],
                u8::from(s.state == st),
            );
        }
    }
    o.family(
        "venussup_service_restarts_total",
        "counter",
        "Restarts since venussup started.",
    );
    for s in &snap.services {
        o.sample(
            "venussup_service_restarts_total",
            &[("service", &s.name)],
            s.restarts,
        );
    }
    o.family(
        "venussup_service_last_exit_code",
        "gauge",
        "Exit code of the last run (128 + signal when killed by one).",
    );
    for s in &snap.services {
        if let Some(e) = &s.last_exit {
            let code = match e.how {
                crate::status::ExitKind::Code(c) => c,
                crate::status::ExitKind::Signal(sig) => 128 + sig,
            };
            o.sample(
                "venussup_service_last_exit_code",
                &[("service", &s.name)],
                code,
            );
        }
    }
    o.family(
        "venussup_service_oom_kills_total",
        "counter",
        "OOM kills in the service's memory cgroup since venussup started.",
    );
    for s in &snap.services {
        o.sample(
            "venussup_service_oom_kills_total",
            &[("service", &s.name)],
            s.oom_kills,
        );
    }
    o.family(
        "venussup_service_fatal_lines_total",
        "counter",
        "Deaths whose log showed a fatal start line (fatal_output) since venussup started.",
    );
    for s in &snap.services {
        o.sample(
            "venussup_service_fatal_lines_total",
            &[("service", &s.name)],
            s.fatal.count,
        );
    }
    o.family(
        "venussup_service_uptime_seconds",
        "gauge",
        "Seconds since the current run started.",
    );
    for s in &snap.services {
        if let Some(since) = s.since {
            o.sample(
                "venussup_service_uptime_seconds",
                &[("service", &s.name)],
                now.saturating_sub(since),
            );
        }
    }
    o.family(
        "venussup_service_cpu_seconds_total",
        "counter",
        "CPU time of the service's main process.",
    );
    for s in &snap.services {
        if let Some(u) = usage.get(&s.name) {
            o.sample(
                "venussup_service_cpu_seconds_total",
                &[("service", &s.name)],
                u.cpu_seconds,
            );
        }
    }
    o.family(
        "venussup_service_memory_bytes",
        "gauge",
        "Resident memory of the service's main process.",
    );
    for s in &snap.services {
        if let Some(u) = usage.get(&s.name) {
            o.sample(
                "venussup_service_memory_bytes",
                &[("service", &s.name)],
                u.rss_bytes,
            );
        }
    }
    o.family(
        "venussup_timer_runs_total",
        "counter",
        "Timer runs by result (skipped: due while the last run went on).",
    );
    for t in &snap.timers {
        let r = &t.runs;
        for (result, n) in [
            ("success", r.success),
            ("full", r.full),
            ("failure", r.failure),
            ("skipped", r.skipped),
        ] {
            o.sample(
                "venussup_timer_runs_total",
                &[("timer", &t.name), ("result", result)],
                n,
            );
        }
    }
    ops(&mut o, snap);
    o.0
}

/// Host preparation, pledge gates and hooks.
fn ops(o: &mut Out, snap: &Snapshot) {
    let prep = snap.prepare.as_ref();
    if let Some(h) = prep.and_then(|p| p.hugepages.as_ref()) {
        let size = format!("{}", h.size_kib * 1024);
        for (name, help) in [
            (
                "venussup_hugepages_asked",
                "Huge pages [host.prepare] asked of the node.",
            ),
            (
                "venussup_hugepages_granted",
                "Huge pages the kernel granted the node.",
            ),
        ] {
            o.family(name, "gauge", help);
            for n in &h.nodes {
                let value = if name.ends_with("asked") {
                    Some(n.asked)
                } else {
                    n.granted
                };
                if let Some(v) = value {
                    o.sample(
                        name,
                        &[("node", &n.node.to_string()), ("size_bytes", &size)],
                        v,
                    );
                }
            }
        }
    }
    if let Some(p) = prep {
        o.family(
            "venussup_host_prepare_ok",
            "gauge",
            "1 when the [host.prepare] step did what was asked at start, else 0.",
        );
        let steps = [
            (
                "hugepages",
                p.hugepages
                    .as_ref()
                    .map(crate::status::prepare::HugepagesReport::ok),
            ),
            ("hugetlbfs", p.hugetlbfs.as_ref().map(|s| s.ok)),
            ("governor", p.governor.as_ref().map(|g| g.failed.is_empty())),
            ("gpu_persistence", p.gpu_persistence.as_ref().map(|s| s.ok)),
        ];
        for (step, ok) in steps {
            if let Some(ok) = ok {
                o.sample("venussup_host_prepare_ok", &[("step", step)], u8::from(ok));
            }
        }
    }
    let gated: Vec<_> = snap
        .timers
        .iter()
        .filter_map(|t| Some((&t.name, t.gate.as_ref()?)))
        .collect();
    if !gated.is_empty() {
        o.family(
            "venussup_gate_in_flight",
            "gauge",
            "Sectors in flight as the timer's gate last answered.",
        );
        for (name, g) in &gated {
            if let Some(n) = g.in_flight {
                o.sample("venussup_gate_in_flight", &[("timer", name)], n);
            }
        }
        o.family("venussup_gate_target", "gauge", "The gate's target.");
        for (name, g) in &gated {
            o.sample("venussup_gate_target", &[("timer", name)], g.target);
        }
        o.family(
            "venussup_gate_runs",
            "gauge",
            "Runs the gate let through at its last answer.",
        );
        for (name, g) in &gated {
            o.sample("venussup_gate_runs", &[("timer", name)], g.runs);
        }
    }
    if !snap.hooks.is_empty() {
        o.family(
            "venussup_hook_runs_total",
            "counter",
            "Hook runs by result (dropped: the hook's queue was full).",
        );
        for (k, h) in snap.hooks.iter().enumerate() {
            let hook = k.to_string();
            for (result, n) in [
                ("ok", h.counts.ok),
                ("failed", h.counts.failed),
                ("dropped", h.counts.dropped),
            ] {
                o.sample(
                    "venussup_hook_runs_total",
                    &[("hook", &hook), ("result", result)],
                    n,
                );
            }
        }
    }
}

/// The metrics of `snap`, with CPU and memory read from `/proc` now.
pub fn render(snap: &Snapshot) -> String {
    let usage = snap
        .services
        .iter()
        .filter_map(|s| Some((s.name.clone(), usage(Path::new("/proc"), s.pid?)?)))
        .collect();
    render_with(snap, &usage, crate::util::clock::unix_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn each_service_has_its_fatal_line_count() {
        use crate::status::sample;
        let mut bad = sample::service("worker");
        bad.fatal.saw("repo is already locked", 5);
        bad.fatal.saw("repo is already locked", 6);
        let snap = sample::snapshot(vec![sample::service("sealer"), bad]);
        let text = render_with(&snap, &BTreeMap::new(), 10);
        assert!(text.contains("# TYPE venussup_service_fatal_lines_total counter\n"));
        assert!(text.contains("venussup_service_fatal_lines_total{service=\"sealer\"} 0\n"));
        assert!(text.contains("venussup_service_fatal_lines_total{service=\"worker\"} 2\n"));
    }

    #[test]
    fn each_service_says_its_role_tasks_and_gpus_once() {
        use crate::config::{Role, Task};
        use crate::status::sample;
        let mut sealer = sample::service("sealer");
        sealer.role = Role::Sealer;
        sealer.tasks = vec![Task::WindowPoSt, Task::WinningPoSt];
        sealer.gpus = vec![0, 1];
        let snap = sample::snapshot(vec![sealer, sample::service("attach")]);
        let text = render_with(&snap, &BTreeMap::new(), 10);
        assert!(text.contains("# TYPE venussup_service_info gauge\n"));
        assert!(
            text.contains("venussup_service_info{service=\"sealer\",role=\"sealer\",tasks=\"WindowPoSt,WinningPoSt\",gpus=\"0,1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "venussup_service_info{service=\"attach\",role=\"other\",tasks=\"\",gpus=\"\"} 1\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("venussup_service_info{").count(), 2);
    }

    #[test]
    fn smt_ok_only_when_the_step_ran_and_took_every_sibling_offline() {
        use crate::status::sample;
        use crate::status::smt::{CpuFailure, SmtState};
        use crate::util::cpulist::CpuSet;
        let mut snap = sample::snapshot(vec![]);
        let text = render_with(&snap, &BTreeMap::new(), 10);
        assert!(
            !text.contains("venussup_smt_ok"),
            "smt not asked: no series"
        );
        snap.smt = Some(SmtState::default());
        let text = render_with(&snap, &BTreeMap::new(), 10);
        assert!(text.contains("\nvenussup_smt_ok 1\n"), "{text}");
        for broken in [
            SmtState {
                error: Some("record unsaved".into()),
                ..SmtState::default()
            },
            SmtState {
                failed: vec![CpuFailure {
                    cpu: 3,
                    error: "EBUSY".into(),
                }],
                ..SmtState::default()
            },
            SmtState {
                siblings_online: CpuSet::parse_list("5").unwrap(),
                ..SmtState::default()
            },
        ] {
            snap.smt = Some(broken);
            let text = render_with(&snap, &BTreeMap::new(), 10);
            assert!(text.contains("\nvenussup_smt_ok 0\n"), "{text}");
        }
    }

    #[test]
    fn usage_of_this_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        let u = usage(Path::new("/proc"), me).unwrap();
        assert!(u.rss_bytes > 0);
    }
}
