//! What /proc says about the supervisors' processes: who descends from
//! whom, resident and proportional memory, CPU time and context switches.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// One line of /proc/PID/stat, the fields the bench uses.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let close = text.rfind(')')?;
    Some(
        text[close + 1..]
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// Every process on the host.
pub fn all() -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let f = stat_fields(pid)?;
            Some(Proc {
                pid,
                state: f.first()?.chars().next()?,
                ppid: f.get(1)?.parse().ok()?,
            })
        })
        .collect()
}

/// `root` and everything below it (alive or zombie).
pub fn descendants(root: i32) -> Vec<Proc> {
    let procs = all();
    let mut children: HashMap<i32, Vec<&Proc>> = HashMap::new();
    for p in &procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    if let Some(me) = procs.iter().find(|p| p.pid == root) {
        out.push(me.clone());
    }
    while let Some(pid) = stack.pop() {
        for c in children.get(&pid).into_iter().flatten() {
            out.push((*c).clone());
            stack.push(c.pid);
        }
    }
    out
}

/// The program a process runs, or `None` once it is gone.
pub fn exe(pid: i32) -> Option<std::path::PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Whether `pid` still exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

fn status_kib(pid: i32, field: &str) -> Option<u64> {
    parse_kib(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        field,
    )
}

fn parse_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Memory of a set of processes, in KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

pub fn memory(pids: &[i32]) -> Memory {
    let mut m = Memory::default();
    for &pid in pids {
        let Some(rss) = status_kib(pid, "VmRSS") else {
            continue;
        };
        let pss = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|t| parse_kib(&t, "Pss"))
            .unwrap_or(0);
        m.processes += 1;
        m.rss_kib += rss;
        m.pss_kib += pss;
    }
    m
}

/// CPU time and context switches of a set of processes (all their threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    /// Time on a CPU from /proc/PID/schedstat, in nanoseconds.
    pub run_ns: u64,
    /// Voluntary + involuntary context switches: each is a wake-up.
    pub switches: u64,
}

pub fn cpu(pids: &[i32]) -> Cpu {
    let mut c = Cpu::default();
    for &pid in pids {
        if let Some(f) = stat_fields(pid) {
            // Fields after the name: state is index 0, utime 11, stime 12.
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            c.ticks += n(11) + n(12);
        }
        let tasks = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for tid in tasks {
            let base = Path::new("/proc")
                .join(pid.to_string())
                .join("task")
                .join(tid.to_string());
            if let Ok(t) = fs::read_to_string(base.join("status")) {
                c.switches += parse_kib(&t, "voluntary_ctxt_switches").unwrap_or(0)
                    + parse_kib(&t, "nonvoluntary_ctxt_switches").unwrap_or(0);
            }
            if let Ok(t) = fs::read_to_string(base.join("schedstat")) {
                c.run_ns += t
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    c
}

/// Clock ticks per second (for utime/stime).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// A short description of the machine, for the report.
pub fn machine() -> serde_json::Value {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_default();
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_kib(&t, "MemTotal"))
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    serde_json::json!({
        "cpu_model": model,
        "cpus": cpus,
        "memory_mib": mem / 1024,
        "kernel": kernel,
    })
}
