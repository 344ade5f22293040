//! The supervisors under test, each set up for N copies of the stamp
//! service, started, observed and stopped the same way.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procfs;
use crate::{mono_ns, Ctx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Venus,
    VenusPlain,
    S6,
    Runit,
    Supervisord,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Venus,
        Kind::VenusPlain,
        Kind::S6,
        Kind::Runit,
        Kind::Supervisord,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Kind::Venus => "venussup",
            Kind::VenusPlain => "venussup-unconfined",
            Kind::S6 => "s6",
            Kind::Runit => "runit",
            Kind::Supervisord => "supervisord",
        }
    }

    /// The programs it needs, and the Debian package that has them.
    pub fn needs(self) -> (&'static [&'static str], &'static str) {
        match self {
            Kind::Venus | Kind::VenusPlain => (&[], ""),
            Kind::S6 => (&["s6-svscan", "s6-svscanctl", "s6-svstat"], "s6"),
            Kind::Runit => (&["runsvdir", "sv"], "runit"),
            Kind::Supervisord => (&["supervisord", "supervisorctl"], "supervisor"),
        }
    }

    /// How it is configured, for the report.
    pub fn how(self) -> &'static str {
        match self {
            Kind::Venus => "venussup run; per service: cpus = \"all\", confine = \"both\" (cpuset cgroup under a cgroup_parent of the bench's own + affinity mask), stable_after = \"500ms\", output to <log_dir>/<name>.log, default rlimits",
            Kind::VenusPlain => "as venussup, without `cpus` (no cgroup, no mask): the cost of confinement is the difference",
            Kind::S6 => "s6-svscan -c N+10 on a scan dir; each service dir: ./run = the stamp program, notification-fd = 3 (the service writes its readiness line), no finish script; stopped with s6-svscanctl -t",
            Kind::Runit => "runsvdir -P on a service dir; each service: ./run = the stamp program, no finish script (runsv waits 1 s only after a run shorter than 1 s); stopped with SIGHUP to runsvdir",
            Kind::Supervisord => "supervisord -n; per program: autorestart = true, startsecs = 0, startretries = 1000000, stdout to a log file, redirect_stderr; stopped with SIGTERM",
        }
    }
}

/// One start of the stamp service: its folder name, pid and the moment its
/// first instruction ran (CLOCK_MONOTONIC, ns).
#[derive(Debug, Clone)]
pub struct Stamp {
    pub name: String,
    pub pid: i32,
    pub ns: u64,
}

/// The stamp lines all of one supervisor's services append to.
pub struct Stamps {
    file: fs::File,
    partial: String,
    notify: Inotify,
    /// Newest stamp per service, by index.
    pub latest: Vec<Option<Stamp>>,
    pub count: usize,
}

impl Stamps {
    fn new(path: &Path, n: usize) -> std::io::Result<Self> {
        fs::write(path, b"")?;
        let notify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        notify.add_watch(path, AddWatchFlags::IN_MODIFY)?;
        Ok(Self {
            file: fs::File::open(path)?,
            partial: String::new(),
            notify,
            latest: vec![None; n],
            count: 0,
        })
    }

    /// Reads what was appended since the last call.
    fn read_new(&mut self) -> Vec<Stamp> {
        let mut buf = String::new();
        let _ = self.file.read_to_string(&mut buf);
        self.partial.push_str(&buf);
        let mut out = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            let mut f = line.split_whitespace();
            let (Some(name), Some(pid), Some(ns)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let (Ok(pid), Ok(ns)) = (pid.parse(), ns.parse()) else {
                continue;
            };
            let stamp = Stamp {
                name: name.to_string(),
                pid,
                ns,
            };
            if let Some(i) = index_of(name) {
                if let Some(slot) = self.latest.get_mut(i) {
                    *slot = Some(stamp.clone());
                }
            }
            self.count += 1;
            out.push(stamp);
        }
        out
    }

    /// Waits (on inotify, bounded by `deadline`) for a stamp that `want`
    /// accepts; `None` at the deadline.
    pub fn wait_for(
        &mut self,
        deadline: u64,
        mut want: impl FnMut(&Stamps, &Stamp) -> bool,
    ) -> Option<Stamp> {
        loop {
            for s in self.read_new() {
                if want(self, &s) {
                    return Some(s);
                }
            }
            let now = mono_ns();
            if now >= deadline {
                return None;
            }
            let ms = ((deadline - now) / 1_000_000 + 1).min(60_000);
            let mut fds = [PollFd::new(self.notify.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            let _ = poll(&mut fds, timeout);
            let _ = self.notify.read_events();
        }
    }

    /// Waits until every service has a stamp; the latest first-instruction
    /// time, or `None` at the deadline.
    pub fn wait_all(&mut self, deadline: u64) -> Option<u64> {
        let done = |s: &Stamps| s.latest.iter().all(Option::is_some);
        if !done(self) {
            self.wait_for(deadline, |s, _| done(s))?;
        }
        self.latest.iter().flatten().map(|s| s.ns).max()
    }

    pub fn pids(&self) -> Vec<i32> {
        self.latest.iter().flatten().map(|s| s.pid).collect()
    }
}

pub fn name_of(i: usize) -> String {
    format!("s{i:04}")
}

fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix('s')?.parse().ok()
}

/// One supervisor with its services, in a folder of its own.
pub struct Sup {
    pub kind: Kind,
    pub n: usize,
    root: PathBuf,
    config: PathBuf,
    /// The cgroup parent (venussup), removed at the end.
    pub cgroup_parent: Option<String>,
    child: Option<Child>,
    pub stamps: Stamps,
    venussup: PathBuf,
}

impl Sup {
    /// Writes the config and service folders for `n` services.
    pub fn prepare(ctx: &Ctx, kind: Kind, n: usize, tag: &str) -> std::io::Result<Self> {
        let root = ctx.work.join(format!("{}-{n}-{tag}", kind.key()));
        fs::create_dir_all(&root)?;
        let stamps_path = root.join("stamps");
        let stamps = Stamps::new(&stamps_path, n)?;
        let svc_parent = match kind {
            Kind::S6 => root.join("scan"),
            Kind::Runit => root.join("sv"),
            _ => root.join("svc"),
        };
        let mut config = root.join("config");
        let mut cgroup_parent = None;
        let mut text = String::new();
        match kind {
            Kind::Venus | Kind::VenusPlain => {
                let parent = format!(
                    "venussup-bench-{}-{}-{n}-{tag}",
                    std::process::id(),
                    kind.key()
                );
                text.push_str(&format!(
                    "[host]\nstate_dir = \"{r}/state\"\nlog_dir = \"{r}/logs\"\ncgroup_parent = \"{parent}\"\n",
                    r = root.display()
                ));
                cgroup_parent = Some(parent);
                config = root.join("venussup.toml");
            }
            Kind::Supervisord => {
                config = root.join("supervisord.conf");
                text.push_str(&format!(
                    "[supervisord]\nnodaemon = true\nlogfile = {r}/supervisord.log\npidfile = {r}/supervisord.pid\nchildlogdir = {r}/logs\nminfds = 8192\nminprocs = 200\n\n\
                     [unix_http_server]\nfile = {r}/supervisor.sock\n\n\
                     [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
                     [supervisorctl]\nserverurl = unix://{r}/supervisor.sock\n",
                    r = root.display()
                ));
                fs::create_dir_all(root.join("logs"))?;
            }
            Kind::S6 | Kind::Runit => {}
        }
        for i in 0..n {
            let name = name_of(i);
            let dir = svc_parent.join(&name);
            fs::create_dir_all(&dir)?;
            symlink(&stamps_path, dir.join("stamps"))?;
            let stamp = ctx.stamp.display();
            match kind {
                Kind::Venus | Kind::VenusPlain => {
                    text.push_str(&format!(
                        "\n[[service]]\nname = \"{name}\"\ncommand = [\"{stamp}\"]\nworkdir = \"{}\"\nstable_after = \"500ms\"\n{}",
                        dir.display(),
                        if kind == Kind::Venus { "cpus = \"all\"\nconfine = \"both\"\n" } else { "" }
                    ));
                }
                Kind::S6 => {
                    symlink(&ctx.stamp, dir.join("run"))?;
                    fs::write(dir.join("notification-fd"), "3\n")?;
                }
                Kind::Runit => symlink(&ctx.stamp, dir.join("run"))?,
                Kind::Supervisord => {
                    text.push_str(&format!(
                        "\n[program:{name}]\ncommand = {stamp}\ndirectory = {}\nautostart = true\nautorestart = true\nstartsecs = 0\nstartretries = 1000000\nstopsignal = TERM\nstopwaitsecs = 30\nredirect_stderr = true\nstdout_logfile = {}/logs/{name}.log\n",
                        dir.display(),
                        root.display()
                    ));
                }
            }
        }
        if !text.is_empty() {
            fs::write(&config, text)?;
        }
        Ok(Self {
            kind,
            n,
            root,
            config,
            cgroup_parent,
            child: None,
            stamps,
            venussup: ctx.venussup.clone(),
        })
    }

    fn svc_dir(&self, i: usize) -> PathBuf {
        match self.kind {
            Kind::S6 => self.root.join("scan"),
            Kind::Runit => self.root.join("sv"),
            _ => self.root.join("svc"),
        }
        .join(name_of(i))
    }

    /// Starts the supervisor; returns CLOCK_MONOTONIC just before.
    pub fn start(&mut self) -> std::io::Result<u64> {
        let log = fs::File::create(self.root.join("supervisor.out"))?;
        let mut cmd = match self.kind {
            Kind::Venus | Kind::VenusPlain => {
                let mut c = Command::new(&self.venussup);
                c.arg("run").arg("--config").arg(&self.config);
                c
            }
            Kind::S6 => {
                // Its default is at most 500 services.
                let mut c = Command::new("s6-svscan");
                c.arg("-c")
                    .arg((self.n + 10).to_string())
                    .arg(self.root.join("scan"));
                c
            }
            Kind::Runit => {
                let mut c = Command::new("runsvdir");
                c.arg("-P").arg(self.root.join("sv"));
                c
            }
            Kind::Supervisord => {
                let mut c = Command::new("supervisord");
                c.arg("-n").arg("-c").arg(&self.config);
                c
            }
        };
        cmd.current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let t0 = mono_ns();
        self.child = Some(cmd.spawn()?);
        Ok(t0)
    }

    pub fn main_pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// The supervisor's own processes: its main process and every
    /// descendant that is not a service.
    pub fn own_pids(&self, stamp: &Path) -> Vec<i32> {
        let Some(main) = self.main_pid() else {
            return Vec::new();
        };
        procfs::descendants(main)
            .into_iter()
            .filter(|p| p.state != 'Z')
            .filter(|p| procfs::exe(p.pid).as_deref() != Some(stamp))
            .map(|p| p.pid)
            .collect()
    }

    /// Asks it to stop everything and waits until its main process exited
    /// and no service or helper of it is left; the time that took (ns).
    pub fn stop(&mut self, timeout: Duration) -> Option<u64> {
        let main = self.main_pid()?;
        let mut watched: Vec<i32> = procfs::descendants(main).iter().map(|p| p.pid).collect();
        watched.extend(self.stamps.pids());
        let t0 = mono_ns();
        match self.kind {
            Kind::S6 => {
                let _ = Command::new("s6-svscanctl")
                    .arg("-t")
                    .arg(self.root.join("scan"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            Kind::Runit => {
                let _ = kill(Pid::from_raw(main), Signal::SIGHUP);
            }
            _ => {
                let _ = kill(Pid::from_raw(main), Signal::SIGTERM);
            }
        }
        let deadline = t0 + u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let mut main_done = false;
        loop {
            if !main_done {
                if let Some(c) = self.child.as_mut() {
                    main_done = matches!(c.try_wait(), Ok(Some(_)));
                }
            }
            // Orphans of a supervisor come to the bench (a subreaper).
            crate::reap_orphans();
            watched.retain(|&p| procfs::alive(p));
            if main_done && watched.is_empty() {
                self.child = None;
                return Some(mono_ns() - t0);
            }
            if mono_ns() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Kills whatever is left of it (after a failed stop, or at the end).
    pub fn kill_all(&mut self) {
        if let Some(main) = self.main_pid() {
            for p in procfs::descendants(main).iter().rev() {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
        }
        for pid in self.stamps.pids() {
            if procfs::alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        crate::reap_orphans();
    }

    /// The status command an operator would run for every service, as argv
    /// lists (s6 has one per service).
    pub fn status_commands(&self) -> Vec<Vec<String>> {
        let s = |p: &Path| p.display().to_string();
        match self.kind {
            Kind::Venus | Kind::VenusPlain => vec![vec![
                s(&self.venussup),
                "status".into(),
                "--json".into(),
                "--config".into(),
                s(&self.config),
            ]],
            Kind::S6 => (0..self.n)
                .map(|i| vec!["s6-svstat".into(), s(&self.svc_dir(i))])
                .collect(),
            Kind::Runit => {
                let mut argv = vec!["sv".to_string(), "status".to_string()];
                argv.extend((0..self.n).map(|i| s(&self.svc_dir(i))));
                vec![argv]
            }
            Kind::Supervisord => vec![vec![
                "supervisorctl".into(),
                "-c".into(),
                s(&self.config),
                "status".into(),
            ]],
        }
    }

    /// One status round trip through the CLI(s); ns, or `None` on failure.
    pub fn status_cli(&self) -> Option<u64> {
        let cmds = self.status_commands();
        let t0 = mono_ns();
        for argv in &cmds {
            let out = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            // supervisorctl exits 3 when something is not RUNNING; an
            // empty answer is the failure that matters.
            if out.stdout.is_empty() {
                return None;
            }
        }
        Some(mono_ns() - t0)
    }

    /// venussup only: one request line over the control socket and its
    /// answer line, without the CLI's process start; ns.
    pub fn status_socket(&self) -> Option<u64> {
        let sock = self.root.join("state").join("control.sock");
        let t0 = mono_ns();
        let mut s = UnixStream::connect(&sock).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"{\"version\":1,\"command\":\"status\"}\n")
            .ok()?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).ok()?;
        let t = mono_ns() - t0;
        line.contains("\"ok\":true").then_some(t)
    }

    /// venussup only: `upgrade` to `binary` over the control socket; the
    /// new image's answer and the round trip (ns), checks included.
    pub fn upgrade(&self, binary: &Path) -> Option<(serde_json::Value, u64)> {
        let sock = self.root.join("state").join("control.sock");
        let request = serde_json::json!({"version": 1, "command": "upgrade", "binary": binary});
        let t0 = mono_ns();
        let mut s = UnixStream::connect(&sock).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
        s.write_all(format!("{request}\n").as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).ok()?;
        let t = mono_ns() - t0;
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        if v["ok"] != true {
            eprintln!("venussup upgrade refused: {}", v["error"]);
            return None;
        }
        Some((v["result"].clone(), t))
    }

    /// Removes its folder (service logs and all).
    pub fn remove_files(&self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill_all();
        }
    }
}
