//! A Debian machine booted under its own systemd by `systemd-nspawn`, for
//! the tests that deploy to one (`deploy.rs`, `ansible.rs`): a root built
//! by `debootstrap` and cached between runs, mounted read-only under an
//! overlay per machine; each machine in cgroups of its own that are
//! removed at the end, killed past its time bound, and entered with
//! `nsenter`.
#![allow(clippy::unwrap_used)] // test support: a failure here is a test failure

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::daemon::{pidfd, wait_gone, wait_snapshot, WAIT};
use super::{bin, debian, project_file, run_bounded, Outcome};

const UNIT: &str = "units/venussup.service";

/// A line on the test's stderr that the test harness does not capture.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "nspawn: {line}");
}

/// Built roots are kept here between runs, one per package list.
pub const ROOT_CACHE: &str = "/var/cache/venussup-test";
const SUITE: &str = "bookworm";
/// What the tests need in the root: systemd, and Python for Ansible's
/// modules (integration/ansible.rs).
const PACKAGES: &str = "systemd,systemd-sysv,dbus,procps,python3";
/// Building the root (about 40 s with a Debian mirror at hand).
const DEBOOTSTRAP_BOUND: Duration = Duration::from_secs(300);
/// One command inside the container.
pub const IN_CONTAINER: Duration = Duration::from_secs(60);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A minimal Debian root with systemd, built once by debootstrap and then
/// reused (it is only ever mounted read-only, as the lower layer of an
/// overlay). `Err` says why there is none.
pub fn cached_root() -> Result<PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    debian::need(&[
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
    ])?;
    let cache = Path::new(ROOT_CACHE);
    let root = cache.join(format!("{SUITE}-minbase-{}", PACKAGES.replace(',', "+")));
    let _lock = debian::lock_cache(cache)?;
    if root.join("usr/lib/systemd/systemd").exists() {
        return Ok(root);
    }
    let partial = root.with_extension("partial");
    let took = debian::debootstrap(&partial, SUITE, PACKAGES, DEBOOTSTRAP_BOUND)?;
    fs::rename(&partial, &root).map_err(|e| e.to_string())?;
    say(&format!("built {} in {took:.0?}", root.display()));
    Ok(root)
}

/// The cgroup hierarchies systemd-nspawn uses to track a container: every
/// cgroup2 mount and the v1 `name=systemd` one.
fn tracking_hierarchies() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?;
            let options = r.nth(1).unwrap_or("");
            let named = options.split(',').any(|o| o == "name=systemd");
            (fstype == "cgroup2" || (fstype == "cgroup" && named)).then(|| PathBuf::from(point))
        })
        .collect()
}

/// Removes the cgroup `dir` and everything below it, deepest first; an
/// error names what could not go (a process still in it).
fn remove_cgroup_tree(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir).map_err(|e| format!("failed to remove cgroup {}: {e}", dir.display()))
}

/// A container's disk (an overlay over the cached root, kept across its
/// boots) and the cgroup it runs in.
pub struct Machine {
    dir: tempfile::TempDir,
    /// Its hostname (`--machine`).
    name: String,
    lower: PathBuf,
    /// Our cgroup in each tracking hierarchy: systemd-nspawn is moved in
    /// before it starts, so whatever it leaves there is ours to remove.
    cgroups: Vec<PathBuf>,
    /// SIGKILLs the running container when the test outlives its bound.
    guard: Guard,
}

/// The pids the guard kills when time is up: the container's init (whose
/// death takes every process of its PID namespace) and systemd-nspawn.
#[derive(Default, Clone)]
struct Victims(std::sync::Arc<std::sync::Mutex<Vec<i32>>>);

struct Guard {
    victims: Victims,
    cancel: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Guard {
    fn new(bound: Duration) -> Self {
        let victims = Victims::default();
        let (cancel, rx) = mpsc::channel::<()>();
        let v = victims.clone();
        let thread = thread::spawn(move || {
            if rx.recv_timeout(bound) == Err(mpsc::RecvTimeoutError::Timeout) {
                eprintln!("the systemd test outlived {bound:?}: killing the container");
                for pid in v.0.lock().unwrap().iter() {
                    let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                }
            }
        });
        Self {
            victims,
            cancel: Some(cancel),
            thread: Some(thread),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Machine {
    /// A machine called `hostname` that `bound` limits: past it,
    /// the running container is killed.
    pub fn new(lower: PathBuf, hostname: &str, bound: Duration) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("venussup-nspawn-")
            .tempdir_in("/var/tmp")
            .unwrap();
        for d in [
            "upper",
            "work",
            "merged",
            "src/units",
            "src/examples",
            "src/target/release",
        ] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        // What the README's install steps read, as in a checkout after
        // `cargo build --release`.
        let src = dir.path().join("src");
        fs::copy(project_file(UNIT), src.join(UNIT)).unwrap();
        for entry in fs::read_dir(project_file("examples")).unwrap() {
            let path = entry.unwrap().path();
            fs::copy(&path, src.join("examples").join(path.file_name().unwrap())).unwrap();
        }
        fs::copy(bin(), src.join("target/release/venussup")).unwrap();
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let cgroups = tracking_hierarchies()
            .into_iter()
            .map(|h| h.join(&name))
            .collect::<Vec<_>>();
        for c in &cgroups {
            fs::create_dir_all(c).unwrap();
        }
        Self {
            dir,
            lower,
            cgroups,
            guard: Guard::new(bound),
            name: hostname.to_string(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Boots the container's systemd and waits until it has finished
    /// booting (`is-system-running --wait`).
    pub fn boot(&self, n: u32) -> Booted<'_> {
        let t0 = Instant::now();
        let sock_path = self.path(&format!("notify-{n}.sock"));
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        let q = |p: PathBuf| format!("'{}'", p.display());
        // The overlay exists only in the mount namespace of `unshare`, so
        // it goes away with the container whatever happens.
        let script = format!(
            "set -e\n\
             for procs in \"$@\"; do echo $$ > \"$procs\"; done\n\
             mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {}\n\
             exec systemd-nspawn --quiet --register=no --keep-unit --private-network \
             --notify-ready=yes --console=read-only --machine={} \
             --bind-ro={}:/src --directory={} --boot",
            q(self.lower.clone()),
            q(self.path("upper")),
            q(self.path("work")),
            q(self.path("merged")),
            self.name,
            q(self.path("src")),
            q(self.path("merged")),
        );
        let console = fs::File::create(self.path(&format!("console-{n}.log"))).unwrap();
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .args(self.cgroups.iter().map(|c| c.join("cgroup.procs")))
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap();
        // `unshare` and `sh` exec: the child is systemd-nspawn.
        let nspawn = i32::try_from(child.id()).unwrap();
        self.guard.victims.0.lock().unwrap().push(nspawn);
        let mut booted = Booted {
            machine: self,
            nspawn: Some(child),
            leader: 0,
            n,
        };
        booted.leader = booted.wait_for_leader(&sock);
        self.guard.victims.0.lock().unwrap().push(booted.leader);
        let state = booted.run(&["systemctl", "is-system-running", "--wait"]);
        assert!(
            ["running", "degraded"].contains(&state.stdout.trim()),
            "the container did not finish booting: {state:?}\n{}",
            booted.run(&["systemctl", "--failed", "--no-legend"]).stdout
        );
        say(&format!(
            "  boot {n}: the container's systemd finished booting after {:.2?}",
            t0.elapsed()
        ));
        booted
    }

    /// Everything the test left is gone: the cgroups (so no process of the
    /// container is left either) and any mount of its folder.
    pub fn clean_up(&self) -> Result<(), String> {
        for c in &self.cgroups {
            remove_cgroup_tree(c)?;
        }
        let ours = self.dir.path().to_str().unwrap();
        match fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.contains(ours))
        {
            Some(l) => Err(format!("a mount was left behind: {l}")),
            None => Ok(()),
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Err(e) = self.clean_up() {
            eprintln!("left behind: {e}");
        }
    }
}

/// A running container.
pub struct Booted<'a> {
    machine: &'a Machine,
    nspawn: Option<Child>,
    /// The container's systemd (PID 1 inside), as the host sees it.
    pub leader: i32,
    n: u32,
}

impl Booted<'_> {
    pub fn console(&self) -> String {
        fs::read_to_string(self.machine.path(&format!("console-{}.log", self.n)))
            .unwrap_or_default()
    }

    /// Reads systemd-nspawn's notifications until the container's systemd
    /// is ready (it forwards its READY=1) and returns the leader's pid.
    fn wait_for_leader(&mut self, sock: &UnixDatagram) -> i32 {
        let exited = pidfd(i32::try_from(self.nspawn.as_ref().unwrap().id()).unwrap()).unwrap();
        let deadline = Instant::now() + IN_CONTAINER;
        let mut leader = None;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the container did not start:\n{}",
                self.console()
            );
            let mut fds = [
                PollFd::new(sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(exited.as_fd(), PollFlags::POLLIN),
            ];
            let _ = poll(
                &mut fds,
                PollTimeout::try_from(left.as_millis()).unwrap_or(PollTimeout::MAX),
            );
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                panic!("systemd-nspawn exited at boot:\n{}", self.console());
            }
            if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                let n = sock.recv(&mut buf).unwrap();
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                for line in msg.lines() {
                    if let Some(pid) = line.strip_prefix("X_NSPAWN_LEADER_PID=") {
                        leader = pid.parse().ok();
                    }
                }
                if let (true, Some(pid)) = (msg.lines().any(|l| l == "READY=1"), leader) {
                    return pid;
                }
            }
        }
    }

    /// Runs `args` inside the container (all its namespaces), bounded.
    pub fn run(&self, args: &[&str]) -> Outcome {
        run_bounded(
            Command::new("nsenter")
                .args(["--target", &self.leader.to_string(), "--all"])
                .args(args)
                .env_clear()
                .env("PATH", PATH)
                .env("LANG", "C.UTF-8"),
            IN_CONTAINER,
        )
    }

    /// Runs a shell script inside the container; panics unless it exits 0.
    pub fn sh(&self, script: &str) -> Outcome {
        let out = self.run(&["sh", "-ec", script]);
        assert_eq!(
            out.code,
            Some(0),
            "in the container:\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            out.stdout,
            out.stderr
        );
        out
    }

    /// `systemctl show venussup` as a map.
    pub fn unit(&self) -> BTreeMap<String, String> {
        self.sh("systemctl show venussup")
            .stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn journal(&self) -> String {
        self.sh("journalctl --no-pager -o cat -u venussup").stdout
    }

    /// A file inside the container, seen from the host.
    pub fn file(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.leader))
    }

    /// Waits for the status snapshot in the state folder `state` (inside
    /// the container) to satisfy `pred`, woken by inotify on the folder.
    pub fn wait_snapshot(&self, state: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_snapshot(&self.file(state), what, WAIT, pred, || self.journal())
    }

    /// Processes of the container whose command line is a stand-in named
    /// `name`, as host pids.
    pub fn standins(&self, name: &str) -> Vec<i32> {
        let ns = fs::read_link(format!("/proc/{}/ns/pid", self.leader)).unwrap();
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() == Some(&ns))
            .filter(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                args.get(1) == Some(&&b"standin"[..])
                    && args
                        .windows(2)
                        .any(|w| w[0] == b"--name" && w[1] == name.as_bytes())
            })
            .collect()
    }

    /// Powers the container off (systemd stops every unit) and waits for
    /// systemd-nspawn to exit; SIGKILL after a bound.
    pub fn power_off(mut self) -> Duration {
        let t0 = Instant::now();
        let nspawn = i32::try_from(self.nspawn.as_ref().unwrap().id()).unwrap();
        // systemd-nspawn asks the container's systemd to power off.
        kill(Pid::from_raw(nspawn), Signal::SIGTERM).unwrap();
        assert!(
            wait_gone(nspawn, IN_CONTAINER),
            "the container did not power off:\n{}",
            self.console()
        );
        let status = self.nspawn.take().unwrap().wait().unwrap();
        assert!(
            status.success(),
            "systemd-nspawn: {status}\n{}",
            self.console()
        );
        self.machine.guard.victims.0.lock().unwrap().clear();
        t0.elapsed()
    }
}

impl Drop for Booted<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.nspawn.take() {
            // A failed test: the container goes at once, with all of its
            // processes (its PID 1 exits only once the kernel has killed
            // every other process of its namespace).
            if self.leader > 0 {
                let _ = kill(Pid::from_raw(self.leader), Signal::SIGKILL);
                wait_gone(self.leader, IN_CONTAINER);
            }
            let _ = kill(
                Pid::from_raw(i32::try_from(child.id()).unwrap()),
                Signal::SIGKILL,
            );
            let _ = child.wait();
            self.machine.guard.victims.0.lock().unwrap().clear();
        }
    }
}
