//! A `venussup run` under test: started in the background with its own
//! folders, observed through its status snapshot (waiting on inotify, not
//! on time), and always stopped, with every process it started, on drop.
#![allow(clippy::unwrap_used)] // test support: a failure here is a test failure

use std::fs;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::bin;

/// The longest any test waits for the daemon to reach a state.
pub const WAIT: Duration = Duration::from_secs(30);

/// A folder with a config whose state and logs live inside it.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// Writes `services` (TOML tables) after a `[host]` table pointing the
    /// state and log folders into a fresh temp folder. `{bin}` stands for
    /// the venussup binary and `{dir}` for the folder.
    pub fn new(services: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // A cgroup parent of its own: every service and timer run gets a
        // cgroup, and a daemon's start-up cleans up its parent, which
        // must not be another test's.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let parent = format!(
            "venussup-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let text = format!(
            "[host]\nstate_dir = \"{d}/state\"\nlog_dir = \"{d}/logs\"\ncgroup_parent = \"{parent}\"\n\n{}",
            services
                .replace("{bin}", bin().to_str().unwrap())
                .replace("{dir}", &d)
        );
        fs::write(dir.path().join("venussup.toml"), text).unwrap();
        Self { dir }
    }

    /// For a service run as another user (`user = "nobody"`): installs a
    /// copy of the binary into this setup's folder (mode 0755), points the
    /// config's `{bin}` commands at it, and returns it. The build's own
    /// binary lives under the checkout, which other users may not enter
    /// (a clone in /root or a `mktemp -d` folder is 0700); the setup's
    /// folder is the test's, which lets them through when it chmods it.
    /// Removed with the folder.
    pub fn bin_for_others(&self) -> PathBuf {
        let copy = self.path("venussup");
        // `install`, not a write from this process: a test thread forking
        // while this process holds the file open for writing would make
        // its exec fail with ETXTBSY.
        let st = Command::new("install")
            .args(["-m", "0755"])
            .arg(bin())
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success(), "install the binary into {}", copy.display());
        let text = fs::read_to_string(self.config()).unwrap();
        fs::write(
            self.config(),
            text.replace(bin().to_str().unwrap(), copy.to_str().unwrap()),
        )
        .unwrap();
        copy
    }

    /// Adds `line` (e.g. `smt = "off"`) to the config's `[host]` table
    /// (a `cgroup_parent` replaces the one [`Setup::new`] gave it).
    pub fn host_line(&self, line: &str) {
        let mut text = fs::read_to_string(self.config()).unwrap();
        if line.starts_with("cgroup_parent") {
            text = text
                .lines()
                .filter(|l| !l.starts_with("cgroup_parent"))
                .map(|l| format!("{l}\n"))
                .collect();
        }
        fs::write(
            self.config(),
            text.replacen("[host]\n", &format!("[host]\n{line}\n"), 1),
        )
        .unwrap();
    }

    /// Runs `venussup ARGS... --config <this config>`.
    pub fn cli(&self, args: &[&str]) -> super::Outcome {
        let cfg = self.config();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", cfg.to_str().unwrap()]);
        super::venussup(&all)
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("venussup.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Starts `venussup run` on this config.
    pub fn start(&self) -> Daemon {
        self.start_with(&[])
    }

    /// Starts `PREFIX... venussup run` (e.g. `unshare --pid --fork ...`).
    pub fn start_with(&self, prefix: &[&str]) -> Daemon {
        self.start_env(prefix, &[])
    }

    /// Starts `PREFIX... venussup run` where PREFIX execs what follows it
    /// (e.g. `setpriv --reuid=...`): venussup is the process we started.
    pub fn start_exec_with(&self, prefix: &[&str]) -> Daemon {
        let mut d = self.launch(prefix, &[], &[]);
        d.namespaced = false;
        d
    }

    /// Starts `venussup run ARGS...` (e.g. `--fs-root DIR`).
    pub fn start_args(&self, args: &[&str]) -> Daemon {
        self.launch(&[], args, &[])
    }

    /// Starts `PREFIX... venussup run` with extra environment variables.
    pub fn start_env(&self, prefix: &[&str], env: &[(&str, &str)]) -> Daemon {
        self.launch(prefix, &[], env)
    }

    /// Starts `venussup run` at `oom_score_adj` `adj` (as a unit's
    /// `OOMScoreAdjust=` would; raising needs no privilege).
    pub fn start_oom(&self, adj: i32) -> Daemon {
        self.launch_with(&[], &[], &[], Some(adj))
    }

    fn launch(&self, prefix: &[&str], args: &[&str], env: &[(&str, &str)]) -> Daemon {
        self.launch_with(prefix, args, env, None)
    }

    fn launch_with(
        &self,
        prefix: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        oom: Option<i32>,
    ) -> Daemon {
        let stderr = fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.args(["run", "--log-level", "debug", "--config"])
            .arg(self.config())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .envs(env.iter().copied());
        // No core file in the project folder (the daemon's working folder)
        // when a test makes it abort; and, if asked, an oom_score_adj.
        let oom_text = oom.map(|adj| adj.to_string().into_bytes());
        let pre = move || {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: setrlimit reads a struct on this stack frame.
            if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let Some(text) = &oom_text else {
                return Ok(());
            };
            let path = c"/proc/self/oom_score_adj";
            // SAFETY: open, write and close on a static path and bytes made
            // before the fork: no allocation, no lock.
            let ok = unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                let n = libc::write(fd, text.as_ptr().cast(), text.len());
                libc::close(fd);
                usize::try_from(n).ok() == Some(text.len())
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: `pre` only makes syscalls (see above), as a child
            // between fork and exec may.
            unsafe {
                cmd.pre_exec(pre);
            }
        }
        let child = cmd.spawn().unwrap();
        fs::create_dir_all(self.state_dir()).unwrap();
        Daemon {
            child: Some(child),
            namespaced: !prefix.is_empty(),
            state_dir: self.state_dir(),
            log: self.dir.path().join("daemon.log"),
            config: self.config(),
        }
    }
}

pub struct Daemon {
    child: Option<Child>,
    /// Started under `unshare --pid --fork`: venussup is the child of the
    /// process we started, and PID 1 of its own namespace.
    namespaced: bool,
    pub state_dir: PathBuf,
    log: PathBuf,
    config: PathBuf,
}

/// An fd readable once `pid` has exited.
pub fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) only reads its two integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|f| *f >= 0)?;
    // SAFETY: the kernel just handed us this descriptor; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits (bounded) until `pid` has exited; true if it did.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let Some(fd) = pidfd(pid) else { return true };
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout.as_millis()).unwrap_or(PollTimeout::MAX);
    matches!(poll(&mut fds, ms), Ok(n) if n > 0)
}

/// Waits (bounded) until `path` exists, woken by inotify on its folder.
pub fn wait_file(path: &Path) {
    let dir = path.parent().unwrap();
    fs::create_dir_all(dir).unwrap();
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).unwrap();
    inotify
        .add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{} did not appear within {WAIT:?}",
            path.display()
        );
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(left.as_millis()).unwrap_or(PollTimeout::MAX),
        );
        let _ = inotify.read_events();
    }
}

/// The snapshot in `state_dir` as last written, or `Null` before the first.
pub fn snapshot(state_dir: &Path) -> Value {
    fs::read_to_string(state_dir.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// Waits (at most `timeout`) until `pred` holds for the snapshot in
/// `state_dir` (which must exist), woken by inotify on each rewrite of the
/// folder; panics with `context()` (e.g. the daemon's log) on timeout.
pub fn wait_snapshot(
    state_dir: &Path,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
    context: impl Fn() -> String,
) -> Value {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).unwrap();
    inotify
        .add_watch(
            state_dir,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        )
        .unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let status = snapshot(state_dir);
        if pred(&status) {
            return status;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting for {what}\nstatus: {status:#}\n{}",
            context()
        );
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(left.as_millis()).unwrap_or(PollTimeout::MAX),
        );
        let _ = inotify.read_events();
    }
}

/// Service `name`'s entry in a snapshot (or `status --json`), or `Null`.
pub fn service_in(st: &Value, name: &str) -> Value {
    st["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// The pid in a service's snapshot entry.
pub fn pid_of(s: &Value) -> i64 {
    s["pid"].as_i64().unwrap()
}

/// Whether a process exists (not yet reaped, zombies included).
pub fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// The first child of `pid` (venussup under `unshare --fork`).
fn first_child(pid: i32) -> Option<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Daemon {
    /// The process we started (`unshare` when namespaced).
    fn started_pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    /// venussup's pid as seen from the test (outside any namespace).
    pub fn pid(&self) -> i32 {
        let started = self.started_pid();
        if !self.namespaced {
            return started;
        }
        // venussup writes its first snapshot after its fork happened.
        self.wait_for("venussup's first snapshot", |st| !st.is_null());
        first_child(started).expect("unshare has a child")
    }

    /// The snapshot as last written, or `Null` before the first.
    pub fn status(&self) -> Value {
        snapshot(&self.state_dir)
    }

    /// One service's entry in the snapshot.
    pub fn service(&self, name: &str) -> Value {
        service_in(&self.status(), name)
    }

    /// Waits until `pred` holds for the snapshot, woken by each rewrite of
    /// the state folder; panics with the daemon's log after `WAIT`.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_snapshot(&self.state_dir, what, WAIT, pred, || {
            format!("log:\n{}", self.log())
        })
    }

    /// Waits until `name` is running; its snapshot entry.
    pub fn running(&self, name: &str) -> Value {
        self.wait_service(name, "running", |s| s["state"] == "running")
    }

    pub fn wait_service(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let status = self.wait_for(&format!("{name}: {what}"), |st| {
            st["services"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s["name"] == name && pred(s)))
        });
        service_in(&status, name)
    }

    /// Sends `sig` to venussup itself.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits (bounded) for the daemon (and `unshare`, if any) to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.started_pid();
        assert!(
            wait_gone(pid, timeout),
            "venussup did not exit within {timeout:?}\nlog:\n{}",
            self.log()
        );
        let status = self.child.as_mut().unwrap().wait().unwrap();
        self.child = None;
        status
    }

    /// Kills the daemon with SIGKILL (its services stay, as after a crash).
    pub fn crash(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit(WAIT);
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Pids of services the snapshot or the pid record names.
    fn service_pids(state_dir: &Path) -> Vec<i32> {
        let mut pids = Vec::new();
        if let Some(v) = fs::read_to_string(state_dir.join("services.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            pids.extend(
                v.as_object()
                    .into_iter()
                    .flat_map(|o| o.values())
                    .filter_map(|r| r["pid"].as_i64()),
            );
        }
        if let Some(v) = fs::read_to_string(state_dir.join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            pids.extend(
                v["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["pid"].as_i64()),
            );
        }
        pids.into_iter()
            .filter_map(|p| i32::try_from(p).ok())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(started) = self.child.as_ref().map(|c| i32::try_from(c.id()).unwrap()) else {
            if !self.namespaced {
                self.kill_services();
            }
            self.remove_cgroups();
            return;
        };
        // venussup itself: under unshare, the namespace's PID 1, whose
        // SIGKILL takes every process of the namespace with it.
        let target = if self.namespaced {
            first_child(started).unwrap_or(started)
        } else {
            started
        };
        let _ = kill(Pid::from_raw(target), Signal::SIGTERM);
        if !wait_gone(target, Duration::from_secs(20)) {
            let _ = kill(Pid::from_raw(target), Signal::SIGKILL);
        }
        if let Some(child) = self.child.as_mut() {
            let _ = kill(Pid::from_raw(started), Signal::SIGKILL);
            let _ = child.wait();
        }
        if !self.namespaced {
            self.kill_services();
        }
        self.remove_cgroups();
    }
}

impl Daemon {
    /// Nothing a test started may outlive it: the recorded services' groups
    /// (pids of this namespace only; a namespaced daemon's die with it).
    fn kill_services(&self) {
        for pid in Self::service_pids(&self.state_dir) {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
    }
}

/// The `cgroup_parent` of a config [`Setup::new`] wrote.
fn cgroup_parent(config: &Path) -> Option<String> {
    fs::read_to_string(config)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("cgroup_parent = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_string)
        .filter(|p| p.starts_with("venussup-test-"))
}

/// `dir` and the cgroups below it, deepest first.
fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            all.extend(cgroup_tree(&e.path()));
        }
    }
    all.push(dir.to_path_buf());
    all
}

impl Daemon {
    /// Nothing a test made may outlive it: the test's cgroup parent in
    /// every hierarchy (left by a daemon killed with SIGKILL), with every
    /// process still in it killed first (bounded).
    fn remove_cgroups(&self) {
        let Some(parent) = cgroup_parent(&self.config) else {
            return;
        };
        let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounts = table.lines().filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let point = pre.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        });
        for top in mounts.map(|m| m.join(&parent)).filter(|d| d.is_dir()) {
            for dir in cgroup_tree(&top) {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    wait_gone(pid, Duration::from_secs(5));
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                // A killed process leaves a v2 cgroup once reaped, by
                // whoever adopted it: no event says when.
                while fs::remove_dir(&dir).is_err() && dir.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}
