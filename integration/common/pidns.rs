//! A PID namespace whose PID 1 is a tiny reaper (built here from C with
//! the machine's `cc`), so that a test can kill venussup inside it and
//! start it again: the services it leaves are reparented to the reaper, as
//! on a host they would be to systemd, and the next venussup finds them.
//! Every process of the namespace is seen from outside through its
//! `/proc/PID/ns/pid` link; `NSpid` gives the pid venussup sees. Dropping
//! the namespace kills its PID 1, and with it everything in it.
#![allow(clippy::unwrap_used)] // test support: a failure here is a test failure

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::daemon::wait_gone;

/// PID 1 of the namespace: reaps every child, blocking in `sigwait` (no
/// busy loop when it has none), and exits on SIGTERM or SIGINT.
const REAPER_C: &str = r#"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGCHLD);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGINT);
    sigprocmask(SIG_BLOCK, &s, 0);
    for (;;) {
        while (waitpid(-1, 0, WNOHANG) > 0) {}
        int sig = 0;
        sigwait(&s, &sig);
        if (sig != SIGCHLD) return 0;
    }
}
"#;

/// One process as `/proc` shows it from outside the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// The pid outside the namespace (what the test signals).
    pub pid: i32,
    /// The pid inside the namespace (what venussup records and shows).
    pub ns_pid: i32,
    /// The parent, outside the namespace.
    pub ppid: i32,
    /// `R`, `S`, `Z`, ...
    pub state: char,
    /// Kernel start time in clock ticks (with the pid, a process's identity).
    pub start: u64,
    pub argv: Vec<String>,
}

impl Proc {
    /// The value after `--name` in its argv (a stand-in's name).
    pub fn standin_name(&self) -> Option<&str> {
        let i = self.argv.iter().position(|a| a == "--name")?;
        self.argv.get(i + 1).map(String::as_str)
    }

    pub fn zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// Reads `/proc/PID` (outside); `None` once it is gone.
pub fn read_proc(pid: i32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after it.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ns_pid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|p| p.parse().ok())
        .unwrap_or(pid);
    let argv = fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(Proc {
        pid,
        ns_pid,
        ppid,
        state,
        start,
        argv,
    })
}

/// The PID namespace `pid` is in (the inode of its `ns/pid` link).
fn pid_ns_of(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Open descriptors of `pid` (outside pid).
pub fn fd_count(pid: i32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Every process of the PID namespace `member` is in (itself included).
pub fn procs_of_ns(member: i32) -> Vec<Proc> {
    pid_ns_of(member).map_or_else(Vec::new, |ns| procs_in(&ns))
}

fn procs_in(ns: &Path) -> Vec<Proc> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| pid_ns_of(*p).as_deref() == Some(ns))
        .filter_map(read_proc)
        .collect()
}

pub struct PidNs {
    /// `unshare`, whose child is the reaper.
    unshare: Child,
    /// The reaper, outside pid.
    pub init: i32,
    ns: PathBuf,
}

impl PidNs {
    /// Builds the reaper in `dir` and starts it as PID 1 of a new PID and
    /// mount namespace with its own `/proc`.
    pub fn new(dir: &Path) -> Self {
        let src = dir.join("reaper.c");
        let exe = dir.join("reaper");
        fs::write(&src, REAPER_C).unwrap();
        let out = Command::new("cc")
            .arg("-O2")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cc reaper.c: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(&exe)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let outer = i32::try_from(unshare.id()).unwrap();
        let mine = pid_ns_of(outer).unwrap();
        // The reaper is unshare's child once it has forked: a bounded wait
        // on /proc (no event tells us the fork happened).
        let deadline = Instant::now() + Duration::from_secs(10);
        let init = loop {
            let child = fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
            if let Some(c) = child.filter(|c| pid_ns_of(*c).is_some_and(|ns| ns != mine)) {
                if read_proc(c).is_some_and(|p| p.argv.first() == Some(&exe.display().to_string()))
                {
                    break c;
                }
            }
            assert!(Instant::now() < deadline, "the reaper did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        let ns = pid_ns_of(init).unwrap();
        Self { unshare, init, ns }
    }

    /// `nsenter` into this namespace (PID and mount, so `/proc` is its
    /// own), followed by the command.
    pub fn enter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["--target", &self.init.to_string(), "--pid", "--mount", "--"]);
        c
    }

    /// Every process of the namespace but its PID 1, as seen now.
    pub fn procs(&self) -> Vec<Proc> {
        let mut all = procs_in(&self.ns);
        all.retain(|p| p.pid != self.init);
        all
    }
}

impl Drop for PidNs {
    fn drop(&mut self) {
        // PID 1's death kills every process of its namespace.
        // The reaper exits on SIGTERM; SIGKILL if it did not.
        let _ = kill(Pid::from_raw(self.init), Signal::SIGTERM);
        if !wait_gone(self.init, Duration::from_secs(10)) {
            let _ = kill(Pid::from_raw(self.init), Signal::SIGKILL);
        }
        let outer = i32::try_from(self.unshare.id()).unwrap();
        if !wait_gone(outer, Duration::from_secs(10)) {
            let _ = self.unshare.kill();
        }
        let _ = self.unshare.wait();
    }
}
