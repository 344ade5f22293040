//! `venussup standin`: a stand-in for venus-sealer and venus-worker, so the
//! demo and the tests run real processes without Filecoin binaries. It
//! listens on a port (the ready probe), writes log lines, reports what it
//! was given (CPUs, environment, limits, descriptors) and can crash, ignore
//! SIGTERM or leave orphans on request.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// The stand-in's options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Name used in its log lines.
    #[arg(long, default_value = "standin")]
    pub name: String,
    /// Listen on this TCP address (what a ready probe connects to).
    #[arg(long)]
    pub listen: Option<String>,
    /// Write a JSON report of what it was given to this file (atomically).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print this line, then exit with `--exit-code` (a timer run).
    #[arg(long)]
    pub say: Option<String>,
    /// Exit after this long (e.g. "300ms"), with `--exit-code`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub exit_after: Option<Duration>,
    #[arg(long, default_value_t = 0)]
    pub exit_code: i32,
    /// Keep running through SIGTERM (only SIGKILL stops it).
    #[arg(long)]
    pub ignore_sigterm: bool,
    /// Leave this many orphans: double-forked grandchildren that exit.
    #[arg(long, default_value_t = 0)]
    pub orphans: u32,
    /// Write this many bytes of log lines after starting.
    #[arg(long, default_value_t = 0)]
    pub spew: usize,
    /// Leave one grandchild that keeps running in a session of its own
    /// (escaping the process group, as daemons do); its pid goes to FILE.
    #[arg(long, value_name = "FILE")]
    pub hold_grandchild: Option<PathBuf>,
    /// Work on a "sealing task" for this long (e.g. "2s"), recording
    /// `running`, then `done`, in `--task-file`; a stop signal before the
    /// end abandons it (`abandoned`) and exits 0, as the Go workers do.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub task: Option<Duration>,
    #[arg(long, value_name = "FILE")]
    pub task_file: Option<PathBuf>,
    /// Allocate and touch this many MiB (to meet a memory limit).
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    pub allocate: usize,
    /// Widen its own CPU affinity to every CPU before reporting (a program
    /// that ignores the mask it was given).
    #[arg(long)]
    pub widen_affinity: bool,
    /// Anything else (a real worker's flags, e.g. `--commit=false`) is
    /// accepted and ignored.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    name: String,
    pid: u32,
    pgid: i32,
    sid: i32,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cpus_allowed: String,
    thread_cpus_allowed: String,
    nofile: (u64, u64),
    memlock: (u64, u64),
    fds: Vec<String>,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    umask: String,
}

/// A field of a /proc status file.
fn status_field(status_path: &str, field: &str) -> String {
    std::fs::read_to_string(status_path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn report(opts: &Options) -> Report {
    use nix::sys::resource::{getrlimit, Resource};
    let thread_cpus = std::thread::spawn(|| {
        let tid = nix::unistd::gettid();
        status_field(
            &format!("/proc/self/task/{tid}/status"),
            "Cpus_allowed_list",
        )
    })
    .join()
    .unwrap_or_default();
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| {
                    let target = std::fs::read_link(e.path())
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    format!("{}:{target}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    Report {
        name: opts.name.clone(),
        pid: std::process::id(),
        pgid: nix::unistd::getpgrp().as_raw(),
        sid: nix::unistd::getsid(None).map_or(-1, nix::unistd::Pid::as_raw),
        argv: std::env::args().collect(),
        env: std::env::vars().collect(),
        cpus_allowed: status_field("/proc/self/status", "Cpus_allowed_list"),
        thread_cpus_allowed: thread_cpus,
        nofile: getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((0, 0)),
        memlock: getrlimit(Resource::RLIMIT_MEMLOCK).unwrap_or((0, 0)),
        fds,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        groups: nix::unistd::getgroups()
            .unwrap_or_default()
            .iter()
            .map(|g| g.as_raw())
            .collect(),
        umask: status_field("/proc/self/status", "Umask"),
    }
}

fn say(opts: &Options, line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{} [{}]: {line}", opts.name, std::process::id());
    let _ = out.flush();
}

/// Forks a child that forks `n` grandchildren, then exits: they are
/// re-parented to the nearest subreaper (venussup) or PID 1.
fn leave_orphans(n: u32, hold: Option<&std::path::Path>) {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: called before this process starts any thread, so the child
    // is a copy of a single-threaded process; the children only call fork,
    // pause and _exit.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            for _ in 0..n {
                // SAFETY: as above; the grandchild exits at once.
                if let Ok(ForkResult::Child) = unsafe { fork() } {
                    // SAFETY: _exit is async-signal-safe and ends the process.
                    unsafe { libc::_exit(0) };
                }
            }
            if let Some(file) = hold {
                // SAFETY: as above; the grandchild leaves the session, says
                // its pid and waits for a signal forever.
                if let Ok(ForkResult::Child) = unsafe { fork() } {
                    let _ = nix::unistd::setsid();
                    let _ = std::fs::write(file, std::process::id().to_string());
                    loop {
                        nix::unistd::pause();
                    }
                }
            }
            // SAFETY: _exit ends the intermediate child without running
            // the parent's atexit handlers or flushing its buffers.
            unsafe { libc::_exit(0) };
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(e) => eprintln!("fork failed: {e}"),
    }
}

pub fn run(opts: &Options) -> u8 {
    if opts.ignore_sigterm {
        // First of all, so a report or a ready probe means it is in place.
        // SAFETY: setting SIGTERM to SIG_IGN changes only this process's
        // disposition; no handler code runs.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    if opts.orphans > 0 || opts.hold_grandchild.is_some() {
        leave_orphans(opts.orphans, opts.hold_grandchild.as_deref());
    }
    if opts.widen_affinity {
        let mut all = nix::sched::CpuSet::new();
        for cpu in 0..nix::sched::CpuSet::count() {
            let _ = all.set(cpu);
        }
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &all) {
            say(opts, &format!("could not widen affinity: {e}"));
        }
    }
    if let Some(line) = &opts.say {
        say(opts, line);
        return u8::try_from(opts.exit_code).unwrap_or(1);
    }
    let listener = match opts.listen.as_deref().map(TcpListener::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            say(opts, &format!("cannot listen: {e}"));
            return 1;
        }
    };
    if let Some(path) = &opts.report {
        let json = serde_json::to_vec_pretty(&report(opts)).unwrap_or_default();
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path)) {
            say(
                opts,
                &format!("cannot write report {}: {e}", path.display()),
            );
        }
    }
    say(
        opts,
        &format!(
            "started{}",
            opts.listen
                .as_ref()
                .map_or(String::new(), |l| format!(", listening on {l}"))
        ),
    );
    let line = "sealing layer 3 of 11: 0123456789abcdef0123456789abcdef0123456789abcdef";
    for _ in 0..opts.spew.div_ceil(line.len() + 20) {
        say(opts, line);
    }
    if let Some(l) = listener {
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                drop(conn)
            }
        });
    }
    if let Some(after) = opts.exit_after {
        let (code, name) = (opts.exit_code, opts.name.clone());
        std::thread::spawn(move || {
            std::thread::sleep(after);
            println!("{name} [{}]: exiting with code {code}", std::process::id());
            std::process::exit(code);
        });
    }
    if opts.allocate > 0 {
        let mut held: Vec<Vec<u8>> = Vec::new();
        for _ in 0..opts.allocate {
            // Touch every page, so the memory really counts.
            held.push(vec![1u8; 1 << 20]);
        }
        say(opts, &format!("holding {} MiB", held.len()));
        std::mem::forget(held);
    }
    if let (Some(secs), Some(file)) = (opts.task, opts.task_file.clone()) {
        let _ = std::fs::write(&file, "running");
        let name = opts.name.clone();
        std::thread::spawn(move || {
            std::thread::sleep(secs);
            let _ = std::fs::write(&file, "done");
            println!("{name} [{}]: task done", std::process::id());
        });
    }
    let mut wanted = vec![signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP];
    if !opts.ignore_sigterm {
        wanted.push(signal_hook::consts::SIGTERM);
    }
    match signal_hook::iterator::Signals::new(&wanted) {
        Ok(mut signals) => {
            if let Some(sig) = signals.forever().next() {
                // Like the Go workers: a stop signal cancels the task in flight.
                if let Some(file) = &opts.task_file {
                    if std::fs::read_to_string(file).is_ok_and(|t| t == "running") {
                        let _ = std::fs::write(file, "abandoned");
                        say(opts, "task abandoned");
                    }
                }
                say(opts, &format!("got signal {sig}; exiting"));
            }
        }
        Err(e) => say(opts, &format!("cannot wait for signals: {e}")),
    }
    0
}
