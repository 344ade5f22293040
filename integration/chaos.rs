//! The chaos soak (issue #18): for a bounded time, random faults against a
//! running venussup and its stand-in services — `kill -9` of services, of
//! timer runs and of venussup itself (then started again: it must take
//! over), SIGTERM of services, SIGHUP and `reload` with valid and broken
//! configs, abuse of the control socket — with `status` asked throughout.
//! Invariants are checked on every round and at the end: every desired
//! service runs exactly once (never two sealers), at most one pledge at a
//! time, no zombie, no process that outlives its service or its
//! supervisor, no descriptor or memory growth in venussup, and a clean
//! stop (exit 0, nothing left, no cgroup left).
//!
//! `VENUSSUP_CHAOS_SECS` sets the soak's length (default 150 s; the PID-1
//! soak runs a fifth of it, at least 20 s); `VENUSSUP_CHAOS_SEED` replays
//! a run (the seed is printed at the start and in the summary). The
//! summary (actions per kind, restarts, the slowest `status`, venussup's
//! descriptors and RSS over the run) is printed with `--nocapture` and
//! written to `target/tmp/chaos-TAG-summary.txt`; a failing soak keeps
//! the daemon's log in `target/tmp/chaos-TAG-SEED.log`. Each broken rule
//! is named, with the item of issue #18 whose fix it waits for if any.
//!
//! The main soak runs venussup inside a PID namespace whose PID 1 is a
//! small reaper (`common::pidns`), so venussup can be killed and started
//! again while its services stay; a second soak runs venussup as the real
//! PID 1 of its namespace and ends with its SIGTERM stop.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
#[path = "chaos/faults.rs"]
mod faults;
#[path = "chaos/invariants.rs"]
mod invariants;
#[path = "chaos/socket.rs"]
mod socket;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bin;
use common::daemon::{wait_gone, Setup};
use common::pidns::{fd_count, procs_of_ns, read_proc, rss_kib, PidNs, Proc};
use faults::{env_u64, seed, Action, Rng, ACTIONS, BROKEN, SERVICES};
use invariants::{classify, growth, Round, DESIRED, PLEDGE, TWO_PLEDGES};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use socket::{ask, STATUS, STATUS_BOUND};

/// A process that breaks a rule for this long (while venussup has run at
/// least this long) is a failure: what a supervisor does within it (reap,
/// stop a leftover, restart) is not.
const GRACE: Duration = Duration::from_secs(3);
/// The longest the final settle may take: every desired service running.
const SETTLE: Duration = Duration::from_secs(60);

/// How venussup runs: under the reaper (killable), or as PID 1.
enum Mode {
    Reaped(PidNs),
    Pid1,
}

struct Soak {
    tag: &'static str,
    started: Instant,
    setup: Setup,
    mode: Mode,
    parent: String,
    valid: String,
    /// `nsenter` (reaped) or `unshare` (PID 1): its child is venussup.
    child: Option<Child>,
    /// venussup, outside pid; when this incarnation started.
    vpid: i32,
    since: Instant,
    incarnations: u32,
    rng: Rng,
    seed: u64,
    counts: BTreeMap<String, u32>,
    failures: BTreeMap<String, String>,
    /// Since when each rule-breaking process has been seen.
    suspects: HashMap<(i32, u64), Instant>,
    max_latency: Duration,
    statuses: u32,
    /// (incarnation, descriptors, RSS KiB) of venussup per round.
    series: Vec<(u32, usize, u64)>,
    held: Vec<(Instant, UnixStream)>,
}

impl Soak {
    fn new(mode: Mode, tag: &'static str) -> Self {
        let parent = format!("venussup-chaos-{tag}-{}", std::process::id());
        let setup = Setup::new(SERVICES);
        setup.host_line(&format!("cgroup_parent = \"{parent}\""));
        let valid = fs::read_to_string(setup.config()).unwrap();
        let seed = seed();
        eprintln!("chaos {tag}: seed {seed} (replay with VENUSSUP_CHAOS_SEED={seed})");
        let mut s = Self {
            tag,
            started: Instant::now(),
            setup,
            mode,
            parent,
            valid,
            child: None,
            vpid: 0,
            since: Instant::now(),
            incarnations: 0,
            rng: Rng(seed),
            seed,
            counts: BTreeMap::new(),
            failures: BTreeMap::new(),
            suspects: HashMap::new(),
            max_latency: Duration::ZERO,
            statuses: 0,
            series: Vec::new(),
            held: Vec::new(),
        };
        s.start();
        s
    }

    fn sock(&self) -> PathBuf {
        self.setup.state_dir().join("control.sock")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.setup.path("daemon.log")).unwrap_or_default()
    }

    fn count(&mut self, what: &str) {
        *self.counts.entry(what.to_string()).or_default() += 1;
    }

    /// Records a broken invariant (the first detail of each kind).
    fn fail(&mut self, kind: &str, detail: String) {
        eprintln!("chaos: FAILED {kind}: {detail}");
        self.failures.entry(kind.to_string()).or_insert(detail);
    }

    /// Starts venussup and waits (bounded) until it answers `status`.
    fn start(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.setup.path("daemon.log"))
            .unwrap();
        let mut cmd = match &self.mode {
            Mode::Reaped(ns) => ns.enter(),
            Mode::Pid1 => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", "--"]);
                c
            }
        };
        cmd.arg(bin())
            .args(["run", "--log-level", "info", "--config"])
            .arg(self.setup.config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().unwrap();
        let outer = i32::try_from(child.id()).unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Bounded waits on /proc and on the socket: neither has an event
        // to wait on from here.
        self.vpid = loop {
            let kid = fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
            if let Some(p) = kid.and_then(read_proc) {
                if p.argv.get(1).map(String::as_str) == Some("run") {
                    break p.pid;
                }
            }
            assert!(Instant::now() < deadline, "venussup did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        while ask(&self.sock(), STATUS).is_err() {
            assert!(
                Instant::now() < deadline,
                "venussup did not answer status within 30 s\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.since = Instant::now();
        self.incarnations += 1;
    }

    /// Waits (bounded) for venussup to exit; its exit code (None: a signal).
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let outer = i32::try_from(child.id()).unwrap();
        if !wait_gone(outer, timeout) {
            self.fail(
                "venussup stops within its bound",
                format!("still running {timeout:?} after the signal"),
            );
            let _ = kill(Pid::from_raw(self.vpid), Signal::SIGKILL);
        }
        child.wait().unwrap().code()
    }

    fn status(&mut self) -> Option<Value> {
        match ask(&self.sock(), STATUS) {
            Ok((v, took)) => {
                self.statuses += 1;
                self.max_latency = self.max_latency.max(took);
                if took > STATUS_BOUND {
                    self.fail(
                        "status answers within 5 s (issue #18 item 3: a bounded socket)",
                        format!("took {took:?}"),
                    );
                }
                Some(v["result"].clone())
            }
            Err(e) => {
                let alive = read_proc(self.vpid).is_some_and(|p| !p.zombie());
                let kind = if alive {
                    "status answers (issue #18 item 3: a flood of other clients delays no one)"
                } else {
                    "venussup stays alive"
                };
                self.fail(kind, e);
                None
            }
        }
    }

    /// Every process of the namespace but the reaper.
    fn procs(&self) -> Vec<Proc> {
        match &self.mode {
            Mode::Reaped(ns) => ns.procs(),
            Mode::Pid1 => procs_of_ns(self.vpid),
        }
    }

    /// The pid (inside) of each desired service's grandchild, from its file.
    fn holders(&self) -> BTreeMap<&'static str, i32> {
        DESIRED
            .iter()
            .filter_map(|(_, standin, hold)| {
                let t = fs::read_to_string(self.setup.path(hold.as_ref()?)).ok()?;
                Some((*standin, t.trim().parse().ok()?))
            })
            .collect()
    }

    /// Main pids (inside) of the desired services as `status` shows them.
    fn main_pids(status: &Value) -> BTreeMap<String, i64> {
        status["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["pid"].as_i64()?)))
            .collect()
    }

    /// One round of checks; returns whether every desired service runs
    /// exactly once right now (the settle's condition).
    fn check(&mut self) -> bool {
        if read_proc(self.vpid).is_none_or(|p| p.zombie()) {
            // Died of itself: named, and started again so the soak goes on.
            let tail = self
                .log()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ");
            self.fail(
                "venussup stays alive",
                format!("it died; log (last lines first): {tail}"),
            );
            self.wait_exit(Duration::from_secs(10));
            self.start();
        }
        let status = self.status();
        let mains = status.as_ref().map(Self::main_pids).unwrap_or_default();
        let holders = self.holders();
        let procs = self.procs();
        let now = Instant::now();
        let found = classify(&Round {
            procs: &procs,
            vpid: self.vpid,
            mains: &mains,
            holders: &holders,
        });
        if found.pledges.len() > 1 {
            self.fail(TWO_PLEDGES, format!("pledge runs {:?}", found.pledges));
        }
        let up = now.duration_since(self.since);
        let seen = &found.suspects;
        self.suspects.retain(|k, _| seen.iter().any(|s| s.0 == *k));
        let mut confirmed = Vec::new();
        for (key, kind, detail) in seen {
            let first = self.suspects.entry(*key).or_insert(now);
            if now.duration_since(*first) >= GRACE && up >= GRACE {
                confirmed.push((*key, *kind, detail.clone()));
            }
        }
        for (key, kind, detail) in confirmed {
            self.fail(kind, format!("for {GRACE:?}: {detail}"));
            // Once named, it goes, so that it does not hide later faults.
            self.suspects.remove(&key);
            let _ = kill(Pid::from_raw(key.0), Signal::SIGKILL);
        }
        if let (Some(fds), Some(rss)) = (fd_count(self.vpid), rss_kib(self.vpid)) {
            self.series.push((self.incarnations, fds, rss));
        }
        let running = status.as_ref().is_some_and(|st| {
            DESIRED.iter().all(|(n, ..)| {
                st["services"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|s| s["name"] == *n && s["state"] == "running"))
            })
        });
        running && found.exactly_once()
    }

    /// A desired service's main process (outside pid), if it runs.
    fn service_proc(&mut self) -> Option<(String, i32)> {
        let (status_name, standin, _) = DESIRED[self.rng.below(DESIRED.len())];
        let main = Self::main_pids(&self.status()?).get(status_name).copied()?;
        let p = self
            .procs()
            .into_iter()
            .find(|p| i64::from(p.ns_pid) == main && p.standin_name() == Some(standin))?;
        Some((status_name.to_string(), p.pid))
    }

    /// A timer run going now.
    fn pledge_run(&self) -> Option<Proc> {
        self.procs()
            .into_iter()
            .find(|p| p.standin_name() == Some(PLEDGE) && !p.zombie())
    }

    fn act(&mut self, action: Action) {
        self.count(&format!("{action:?}"));
        match action {
            Action::KillService | Action::TermService => {
                let sig = if action == Action::KillService {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                };
                match self.service_proc() {
                    Some((_, pid)) => {
                        let _ = kill(Pid::from_raw(pid), sig);
                    }
                    None => self.count("  (service not running)"),
                }
            }
            Action::KillTimerRun => match self.pledge_run() {
                Some(p) => {
                    let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                }
                None => self.count("  (no timer run)"),
            },
            Action::KillVenussupMidRun => {
                // A bounded wait on /proc for a run (none: a plain kill).
                let deadline = Instant::now() + Duration::from_secs(15);
                while Instant::now() < deadline && self.pledge_run().is_none() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                self.act(Action::KillVenussup);
            }
            Action::KillVenussup => {
                let _ = kill(Pid::from_raw(self.vpid), Signal::SIGKILL);
                self.wait_exit(Duration::from_secs(10));
                self.start();
            }
            Action::StopStartVenussup => self.stop_start(),
            Action::Reload | Action::Hup => {
                // A valid change: the pledge's timeout, 30 s or 31 s.
                let swap = if self.valid.contains("timeout = \"30s\"") {
                    ("timeout = \"30s\"", "timeout = \"31s\"")
                } else {
                    ("timeout = \"31s\"", "timeout = \"30s\"")
                };
                self.valid = self.valid.replace(swap.0, swap.1);
                let text = self.valid.clone();
                match self.reload(&text, action == Action::Hup) {
                    Some(true) => {}
                    other => self.fail("a valid config reloads", format!("{other:?}")),
                }
            }
            Action::ReloadBroken | Action::HupBroken => {
                let (what, from, to) = BROKEN[self.rng.below(BROKEN.len())];
                assert!(self.valid.contains(from), "{from:?} in the config");
                let text = self.valid.replacen(from, to, 1);
                let before = self.status().map(|s| Self::main_pids(&s));
                let answer = self.reload(&text, action == Action::HupBroken);
                if answer != Some(false) {
                    self.fail(
                        &format!("a broken reload is refused: {what}"),
                        format!("answer {answer:?}"),
                    );
                    self.restore();
                    return;
                }
                let after = self.status().map(|s| Self::main_pids(&s));
                if let (Some(b), Some(a)) = (before, after) {
                    let changed: Vec<_> = b.iter().filter(|(n, p)| a.get(*n) != Some(p)).collect();
                    if !changed.is_empty() {
                        self.fail(
                            "a refused reload changes nothing",
                            format!("{what}: {changed:?} now {a:?}"),
                        );
                    }
                }
            }
            Action::Garbage => {
                let mut g: Vec<u8> = (0..200).map(|_| self.rng.next().to_le_bytes()[0]).collect();
                g.retain(|b| *b != b'\n');
                g.push(b'\n');
                self.abuse(socket::abuse(&self.sock(), &g));
            }
            Action::Oversized => {
                let mut g = vec![b'{'; 256 * 1024];
                g.push(b'\n');
                self.abuse(socket::abuse(&self.sock(), &g));
            }
            Action::NonReader => self.hold(socket::non_reader(&self.sock())),
            Action::Idle => self.hold(socket::idle(&self.sock())),
            Action::ManyClients => self.abuse(socket::many(&self.sock(), 64)),
        }
    }

    fn abuse(&mut self, outcome: Result<(), (&'static str, String)>) {
        if let Err((kind, detail)) = outcome {
            self.fail(kind, detail);
        }
    }

    /// Keeps a client open (for up to 10 s: see `run`).
    fn hold(&mut self, client: Option<UnixStream>) {
        if let Some(c) = client {
            self.held.push((Instant::now(), c));
        }
    }

    /// Writes `text` as the config and reloads (by SIGHUP, or on the
    /// socket); restores the valid config. Whether it was applied.
    fn reload(&mut self, text: &str, by_hup: bool) -> Option<bool> {
        fs::write(self.setup.config(), text).unwrap();
        let applied = if by_hup {
            let done = |log: &str| {
                log.matches("reloaded: ").count() + log.matches("reload refused").count()
            };
            let before = done(&self.log());
            let applied_before = self.log().matches("reloaded: ").count();
            let _ = kill(Pid::from_raw(self.vpid), Signal::SIGHUP);
            // The log says when the SIGHUP was handled: a bounded wait on it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while done(&self.log()) == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = self.log();
            (done(&log) > before).then(|| log.matches("reloaded: ").count() > applied_before)
        } else {
            ask(&self.sock(), r#"{"version":1,"command":"reload"}"#)
                .ok()
                .and_then(|(v, _)| v["ok"].as_bool())
        };
        fs::write(self.setup.config(), &self.valid).unwrap();
        applied
    }

    /// After a broken config was applied: the valid one again (a few
    /// tries: a flooded daemon may drop a request, issue #18 item 3).
    fn restore(&mut self) {
        let valid = self.valid.clone();
        for _ in 0..5 {
            if self.reload(&valid, false) == Some(true) {
                return;
            }
        }
        self.fail("the valid config reloads after a broken one", String::new());
    }

    /// SIGTERM to venussup: exit 0, nothing of its left; then start again.
    fn stop_start(&mut self) {
        let _ = kill(Pid::from_raw(self.vpid), Signal::SIGTERM);
        let code = self.wait_exit(Duration::from_secs(30));
        if code != Some(0) {
            self.fail("a SIGTERM stop exits 0", format!("exit {code:?}"));
        }
        self.left_after_stop();
        self.start();
    }

    /// After a clean stop: nothing venussup started remains (bounded wait
    /// for the reaper to reap), and no cgroup of its.
    fn left_after_stop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = self.procs();
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            left = self.procs();
        }
        if !left.is_empty() {
            self.fail(
                "nothing is left after venussup's stop (issue #18 item 5)",
                format!("{left:?}"),
            );
            for p in left {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
        }
        let cgroups = self.cgroups();
        if !cgroups.is_empty() {
            self.fail(
                "no cgroup is left after venussup's stop",
                format!("{cgroups:?}"),
            );
        }
    }

    /// Service cgroups under this soak's parent, in every hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .filter_map(|h| fs::read_dir(h.ok()?.path().join(&self.parent)).ok())
            .flatten()
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.is_dir())
            .collect()
    }

    /// The random rounds, then the settle.
    fn run(&mut self, secs: u64, can_kill_venussup: bool) {
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        // The last 40 % keep one venussup: its descriptors and memory.
        let steady = start + Duration::from_secs(secs * 6 / 10);
        let total: usize = ACTIONS.iter().map(|a| a.1).sum();
        while Instant::now() < end {
            let mut pick = self.rng.below(total);
            let (action, _) = *ACTIONS
                .iter()
                .find(|(_, w)| {
                    let hit = pick < *w;
                    pick = pick.saturating_sub(*w);
                    hit
                })
                .unwrap();
            let venussup = matches!(
                action,
                Action::KillVenussup | Action::KillVenussupMidRun | Action::StopStartVenussup
            );
            if venussup && (!can_kill_venussup || Instant::now() >= steady) {
                continue;
            }
            self.held
                .retain(|(t, _)| t.elapsed() < Duration::from_secs(10));
            self.act(action);
            self.check();
            // Pacing of the faults (not a synchronisation): 100-600 ms.
            let pause = 100 + self.rng.below(500);
            std::thread::sleep(Duration::from_millis(u64::try_from(pause).unwrap()));
        }
        self.held.clear();
        let deadline = Instant::now() + SETTLE;
        // Bounded: until every desired service runs exactly once.
        while !self.check() {
            if Instant::now() >= deadline {
                let st = self.status().unwrap_or_default();
                self.fail(
                    "every desired service runs exactly once after the settle",
                    format!("{st:#}"),
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.growth();
    }

    /// Descriptors and RSS of the last venussup (which ran the last 40 %
    /// of the soak), after five rounds of warm-up.
    fn growth(&mut self) {
        let last: Vec<(usize, u64)> = self
            .series
            .iter()
            .filter(|s| s.0 == self.incarnations)
            .map(|s| (s.1, s.2))
            .collect();
        for (kind, detail) in growth(&last, 5) {
            self.fail(kind, detail);
        }
    }

    /// SIGTERM to venussup at the end: exit 0, nothing left.
    fn finish(&mut self) {
        let restarts: i64 = self
            .status()
            .and_then(|s| {
                s["services"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s["restarts"].as_i64()).sum())
            })
            .unwrap_or(0);
        let pid1 = matches!(self.mode, Mode::Pid1);
        let _ = kill(Pid::from_raw(self.vpid), Signal::SIGTERM);
        let code = self.wait_exit(Duration::from_secs(30));
        if code != Some(0) {
            self.fail("the final SIGTERM stop exits 0", format!("exit {code:?}"));
        }
        if !pid1 {
            self.left_after_stop();
        } else if !self.cgroups().is_empty() {
            let c = self.cgroups();
            self.fail("no cgroup is left after the stop", format!("{c:?}"));
        }
        self.summary(restarts);
    }

    fn summary(&self, restarts: i64) {
        let series = |f: &dyn Fn(&(u32, usize, u64)) -> String| {
            let step = (self.series.len() / 24).max(1);
            self.series
                .iter()
                .step_by(step)
                .map(f)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let text = format!(
            "chaos summary ({}): seed {}, {:?}, venussup incarnations {}, service restarts (last) {restarts}\n  \
             actions: {:?}\n  status: {} asked, max latency {:?}\n  \
             fds [incarnation:count]: {}\n  rss MiB: {}\n  failures: {:#?}",
            self.tag,
            self.seed,
            self.started.elapsed(),
            self.incarnations,
            self.counts,
            self.statuses,
            self.max_latency,
            series(&|s| format!("{}:{}", s.0, s.1)),
            series(&|s| format!("{:.1}", s.2 as f64 / 1024.0)),
            self.failures,
        );
        // Shown with `--nocapture`, and kept (test output is captured).
        eprintln!("{text}");
        let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("chaos-{}-summary.txt", self.tag));
        let _ = fs::write(keep, text);
    }
}

impl Drop for Soak {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(self.vpid), Signal::SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
        // The reaper's death (PidNs's drop) takes the rest; then the
        // cgroups, deepest first.
        if let Mode::Reaped(ns) = std::mem::replace(&mut self.mode, Mode::Pid1) {
            drop(ns);
        }
        let mut dirs: Vec<PathBuf> = self.cgroups();
        for h in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            dirs.push(h.path().join(&self.parent));
        }
        for d in dirs {
            remove_cgroup(&d);
        }
    }
}

/// Kills what is left in a cgroup, waits (bounded, on /proc: no event
/// says a killed task has left) until it is empty, and removes it.
fn remove_cgroup(dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_dir(dir);
}

fn soak_secs() -> u64 {
    env_u64("VENUSSUP_CHAOS_SECS").unwrap_or(150)
}

fn verdict(soak: &Soak) {
    if !soak.failures.is_empty() {
        // The daemon's log outlives the soak's folder, for a look after.
        let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("chaos-{}-{}.log", soak.tag, soak.seed));
        let _ = fs::write(&keep, soak.log());
        eprintln!("chaos: the daemon's log is kept in {}", keep.display());
    }
    assert!(
        soak.failures.is_empty(),
        "chaos soak (seed {}) broke {} invariant(s):\n{:#?}\nlog tail:\n{}",
        soak.seed,
        soak.failures.len(),
        soak.failures,
        soak.log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn chaos_soak_with_venussup_killed_and_restarted_under_a_reaper() {
    let dir = tempfile::tempdir().unwrap();
    let mut soak = Soak::new(Mode::Reaped(PidNs::new(dir.path())), "reaped");
    soak.run(soak_secs(), true);
    soak.finish();
    verdict(&soak);
}

#[test]
fn chaos_soak_with_venussup_as_pid_1_ends_with_a_clean_sigterm_stop() {
    let mut soak = Soak::new(Mode::Pid1, "pid1");
    soak.run((soak_secs() / 5).max(20), false);
    soak.finish();
    verdict(&soak);
}
