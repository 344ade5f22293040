//! Confinement for real, on this VM's cgroups (v1 cpuset and memory): a
//! test-only spawner built on std `Command` + `pre_exec` +
//! `Confinement::apply_in_child` starts real children, and each child
//! proves its own confinement from `/proc/thread-self/status`, the way
//! systemd's test-execute does. Needs root.
//!
//! The probe child is this test binary itself, run again with
//! [`PROBE_ENV`] set: it tries to widen its mask to every CPU, starts a
//! thread, and prints what each sees. Every cgroup a test makes lives under
//! a parent of its own (`venussup-test-<pid>-<n>`), removed by a guard
//! even when the test panics; every process it starts is killed by one.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::io::{BufRead as _, BufReader};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{sched_setaffinity, CpuSet as Mask};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use venussup::host::cgroups::Hierarchy;
use venussup::host::Host;
use venussup::plan::{self, ServicePlan};
use venussup::runtime::confine::{self, CgroupSetup, Confinement};
use venussup::sys::cgroup::Cgroupfs;
use venussup::util::cpulist::CpuSet;
use venussup::util::diag::Diagnostics;
use venussup::util::fsroot::FsRoot;

/// Set in the environment of a probe child.
const PROBE_ENV: &str = "VENUSSUP_CONFINE_PROBE";
/// No wait in these tests may take longer.
const WAIT: Duration = Duration::from_secs(20);

/// The probe: runs only in a child started with [`PROBE_ENV`].
#[test]
fn probe_child() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    let before = allowed("/proc/thread-self/status");
    let mut all = Mask::new();
    // SAFETY: sysconf(3) takes a constant name and reads no memory of ours.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    for cpu in 0..usize::try_from(configured).unwrap() {
        all.set(cpu).unwrap();
    }
    let widened = sched_setaffinity(Pid::from_raw(0), &all).is_ok();
    let after = allowed("/proc/thread-self/status");
    let thread = thread::spawn(|| allowed("/proc/thread-self/status"))
        .join()
        .unwrap();
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .replace('\n', ";");
    println!(
        "probe: before={before} widened={widened} after={after} thread={thread} cgroups={cgroups}"
    );
}

/// `Cpus_allowed_list` of a status file.
fn allowed(status: &str) -> String {
    std::fs::read_to_string(status)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// What a probe child printed.
#[derive(Debug)]
struct Probe {
    before: CpuSet,
    widened: bool,
    after: CpuSet,
    thread: CpuSet,
    cgroups: String,
}

fn parse_probe(output: &Output) -> Probe {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("probe: ").map(|(_, probe)| probe))
        .unwrap_or_else(|| {
            panic!(
                "no probe line in:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let field = |name: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let set = |name: &str| CpuSet::parse_list(&field(name)).unwrap();
    Probe {
        before: set("before"),
        widened: field("widened") == "true",
        after: set("after"),
        thread: set("thread"),
        cgroups: line.split_once("cgroups=").unwrap().1.to_string(),
    }
}

/// The test-only spawner: `argv` with `confinement` applied between fork
/// and exec.
fn spawn(confinement: &Arc<Confinement>, command: &mut Command) -> std::io::Result<Child> {
    let c = Arc::clone(confinement);
    // The closure runs in the forked child before exec; the `Arc` keeps its
    // state alive in the parent while the child is spawned.
    // SAFETY: `apply_in_child` only makes async-signal-safe syscalls (write
    // on fds, sched_setaffinity with a mask, both made before the fork).
    unsafe { command.pre_exec(move || c.apply_in_child()) };
    command.spawn()
}

/// The probe child: this test binary, running only [`probe_child`].
fn probe_command() -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "probe_child", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for a child's output, killing it past [`WAIT`].
fn output_within(child: Child) -> Output {
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(WAIT).is_err() {
        // Not reaped yet (the waiter has not returned), so the pid is ours.
        let _ = kill(pid, Signal::SIGKILL);
        panic!("child {pid} ran longer than {WAIT:?}; killed");
    }
    waiter.join().unwrap().unwrap()
}

/// Waits until a process (not necessarily a child) is gone, through a
/// pidfd; `false` if it is still there after [`WAIT`].
fn gone_within(pid: i32) -> bool {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or
    // -1; no memory of ours is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let Ok(fd) = i32::try_from(fd) else {
        return false;
    };
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: `fd` was just returned by pidfd_open and is owned by no one
    // else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(&fd),
        PollFlags::POLLIN,
    )];
    let ms = u16::try_from(WAIT.as_millis()).unwrap_or(u16::MAX);
    poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n == 1)
}

/// A venussup parent of this test's own in each real hierarchy; on drop
/// kills what is left in it and removes every cgroup under it.
struct TestCgroups {
    setup: CgroupSetup,
}

impl TestCgroups {
    fn live() -> Self {
        Self::with(Hierarchy::detect(&FsRoot::live()))
    }

    fn with(hierarchy: Hierarchy) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the confinement tests need root (they make cgroups)"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let parent = format!(
            "venussup-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            setup: CgroupSetup::new(hierarchy, &parent, Cgroupfs::real()).unwrap(),
        }
    }

    fn parents(&self) -> Vec<std::path::PathBuf> {
        self.setup
            .hierarchy()
            .roots()
            .into_iter()
            .map(|r| r.join(self.setup.parent()))
            .collect()
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        let mut names: Vec<String> = Vec::new();
        for parent in self.parents() {
            for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        names.dedup();
        for name in &names {
            for pid in confine::pids(&self.setup, name).unwrap_or_default() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                gone_within(pid);
            }
            if let Err(e) = confine::release(&self.setup, name) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Err(e) = confine::remove_parent(&self.setup) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A child killed and reaped on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The plan of one service `w` (`command` is not run) on this host.
fn plan_of(extra: &str) -> ServicePlan {
    let text = format!("[[service]]\nname = \"w\"\ncommand = [\"/bin/true\"]\n{extra}");
    let path = Path::new("confine.toml");
    let mut diags = Diagnostics::new(path, &text);
    let config = venussup::config::parse(path, &text, &mut diags).unwrap();
    let plan = plan::resolve(&config, &Host::probe(&FsRoot::live()), &mut diags);
    assert!(!diags.has_errors(), "{:?}", diags.into_sorted());
    plan.services.into_iter().next().unwrap()
}

fn planned_cpus(plan: &ServicePlan) -> CpuSet {
    plan.cpus.as_ref().unwrap().cpus.clone().unwrap()
}

/// The probe ran on `cpus` from exec on, in the cgroup of service `w`,
/// and neither widening its mask nor a new thread left them.
fn assert_held(probe: &Probe, cpus: &CpuSet, t: &TestCgroups) {
    assert_eq!(
        (&probe.before, &probe.after, &probe.thread),
        (cpus, cpus, cpus),
        "{probe:?}"
    );
    let cgroup = format!(":cpuset:/{}/w", t.setup.parent());
    assert!(probe.cgroups.contains(&cgroup), "{probe:?}");
}

#[test]
fn v1_cpuset_holds_a_child_that_widens_its_own_mask_and_its_new_thread() {
    let t = TestCgroups::live();
    assert!(t.setup.hierarchy().has_cpuset(), "{}", t.setup.hierarchy());
    // cgroup only: no affinity mask is set, the cpuset alone holds it.
    let plan = plan_of("cpus = \"50%\"\nconfine = \"cgroup\"\n");
    let cpus = planned_cpus(&plan);
    let c = Arc::new(confine::prepare(&t.setup, &plan).unwrap());
    let probe = parse_probe(&output_within(spawn(&c, &mut probe_command()).unwrap()));
    assert!(probe.widened, "widening within a cpuset succeeds, narrowed");
    assert_held(&probe, &cpus, &t);
}

#[test]
fn both_apply_before_exec_at_every_start_and_release_removes_the_cgroup() {
    let t = TestCgroups::live();
    let plan = plan_of("cpus = \"50%\"\n");
    let cpus = planned_cpus(&plan);
    let dir = match t.setup.hierarchy() {
        Hierarchy::V1 {
            cpuset: Some(root), ..
        } => root.join(t.setup.parent()).join("w"),
        other => panic!("expected cgroup v1 cpuset here, found {other}"),
    };
    for _start in 0..2 {
        let c = Arc::new(confine::prepare(&t.setup, &plan).unwrap());
        // Then its tracking cgroup, on a hybrid host.
        assert_eq!(c.cgroups().first(), Some(&dir));
        assert_eq!(
            std::fs::read_to_string(dir.join("cpuset.cpus"))
                .unwrap()
                .trim(),
            cpus.to_string()
        );
        let probe = parse_probe(&output_within(spawn(&c, &mut probe_command()).unwrap()));
        assert_held(&probe, &cpus, &t);
        confine::release(&t.setup, "w").unwrap();
        assert!(!dir.exists());
    }
}

#[test]
fn without_cgroups_the_mask_holds_at_start_but_not_a_child_that_widens_it() {
    let t = TestCgroups::with(Hierarchy::None { why: "test".into() });
    // A multicore-SDR PreCommit1 service: the one whose threads escape a
    // mask, so the one warned.
    let plan = plan_of(
        "cpus = \"50%\"\ntasks = [\"PreCommit1\"]\nenv = { FIL_PROOFS_USE_MULTICORE_SDR = \"1\" }\n",
    );
    let cpus = planned_cpus(&plan);
    let c = Arc::new(confine::prepare(&t.setup, &plan).unwrap());
    assert!(c.cgroups().is_empty());
    assert!(c.warnings()[0].contains("held by its affinity mask only"));
    let probe = parse_probe(&output_within(spawn(&c, &mut probe_command()).unwrap()));
    assert_eq!(probe.before, cpus);
    // Why venussup wants a cpuset: a mask alone is the child's to undo
    // (as the proofs library's SDR threads do).
    let online = Host::probe(&FsRoot::live()).online_cpus.unwrap();
    assert_eq!((probe.after, probe.thread), (online.clone(), online));
}

#[test]
fn a_child_that_cannot_join_its_cgroup_is_a_failed_spawn() {
    let t = TestCgroups::live();
    let plan = plan_of("cpus = \"50%\"\n");
    let c = Arc::new(confine::prepare(&t.setup, &plan).unwrap());
    // The cgroup goes away after the parent opened its cgroup.procs.
    confine::release(&t.setup, "w").unwrap();
    let err = spawn(&c, &mut probe_command()).unwrap_err();
    assert!(err.raw_os_error().is_some(), "{err}");
}

#[test]
fn memory_max_puts_the_child_under_its_limit_in_the_v1_memory_hierarchy() {
    let t = TestCgroups::live();
    let Hierarchy::V1 {
        memory: Some(root), ..
    } = t.setup.hierarchy().clone()
    else {
        panic!(
            "expected the cgroup v1 memory hierarchy here, found {}",
            t.setup.hierarchy()
        );
    };
    let plan = plan_of("cpus = \"50%\"\nlimits = { memory_max = \"256MiB\" }\n");
    let c = Arc::new(confine::prepare(&t.setup, &plan).unwrap());
    let dir = root.join(t.setup.parent()).join("w");
    // cpuset, memory, and its tracking cgroup on a hybrid host.
    let tracked = usize::from(t.setup.hierarchy().tracking().is_some());
    assert_eq!(c.cgroups().len(), 2 + tracked);
    assert_eq!(
        std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        "268435456"
    );
    let probe = parse_probe(&output_within(spawn(&c, &mut probe_command()).unwrap()));
    assert!(
        probe
            .cgroups
            .contains(&format!(":memory:/{}/w", t.setup.parent())),
        "{probe:?}"
    );
}

/// `sh` that starts a second process in the background, prints its pid,
/// then becomes `sleep`: two processes in the service's cgroup.
fn two_sleepers(c: &Arc<Confinement>) -> (Kid, i32) {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "sleep 60 & echo $!; exec sleep 60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut kid = Kid(spawn(c, &mut cmd).unwrap());
    let stdout = kid.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(WAIT)
        .expect("the shell prints its background pid");
    (kid, line.trim().parse().unwrap())
}

#[test]
fn pids_lists_every_process_and_release_refuses_while_they_live() {
    let t = TestCgroups::live();
    let plan = plan_of("cpus = \"50%\"\n");
    let c = Arc::new(confine::prepare(&t.setup, &plan).unwrap());
    let (kid, background) = two_sleepers(&c);
    let main = i32::try_from(kid.0.id()).unwrap();
    let mut expected = vec![main, background];
    expected.sort_unstable();
    assert_eq!(confine::pids(&t.setup, "w").unwrap(), expected);
    let err = confine::release(&t.setup, "w").unwrap_err();
    assert!(err.to_string().contains("it still has processes"), "{err}");
    // What the runtime does at final stop: kill every pid of the cgroup.
    for pid in confine::pids(&t.setup, "w").unwrap() {
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    }
    drop(kid);
    assert!(gone_within(background));
    confine::release(&t.setup, "w").unwrap();
}

#[test]
fn stale_cgroups_left_by_a_crash_are_cleaned_and_busy_ones_reported() {
    let t = TestCgroups::live();
    let plan = plan_of("cpus = \"50%\"\n");
    let c = Arc::new(confine::prepare(&t.setup, &plan).unwrap());
    let (kid, background) = two_sleepers(&c);
    let fs = Cgroupfs::real();
    let parents = t.parents();
    for parent in parents.iter().filter(|p| p.is_dir()) {
        fs.create(&parent.join("crashed")).unwrap();
    }
    let stale = confine::cleanup_stale(&t.setup, &["other"]).unwrap();
    assert!(parents.iter().all(|p| !p.join("crashed").exists()));
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(!stale[0].owned);
    assert!(stale[0].pids.contains(&background));
    let stale = confine::cleanup_stale(&t.setup, &["w"]).unwrap();
    assert!(stale[0].owned);
    assert!(
        stale[0].to_string().contains("left by a previous run"),
        "{}",
        stale[0]
    );
    drop(kid);
}

/// Fifteen starts in a row, each prepared, spawned and released, and what
/// confinement adds to a start (printed with `--nocapture`): prepare
/// (cgroup writes, parent side) and spawn (fork, the child joining its
/// cgroup and setting its mask, exec), against a spawn with no confinement.
#[test]
fn fifteen_restarts_are_each_confined_and_their_cost_is_measured() {
    let t = TestCgroups::live();
    let plan = plan_of("cpus = \"50%\"\n");
    let mut prepare = Vec::new();
    let mut confined = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..15 {
        let start = Instant::now();
        let c = Arc::new(confine::prepare(&t.setup, &plan).unwrap());
        prepare.push(start.elapsed());
        let mut cmd = Command::new("/bin/true");
        let start = Instant::now();
        let kid = spawn(&c, &mut cmd).unwrap();
        confined.push(start.elapsed());
        let mut kid = Kid(kid);
        let _ = kid.0.wait();
        let start = Instant::now();
        let mut plain = Kid(Command::new("/bin/true").spawn().unwrap());
        bare.push(start.elapsed());
        let _ = plain.0.wait();
        confine::release(&t.setup, "w").unwrap();
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        format!("{:?} (max {:?})", v[v.len() / 2], v[v.len() - 1])
    };
    eprintln!(
        "restart path here, medians of 15: prepare {}, confined spawn {}, bare spawn {}",
        stats(&mut prepare),
        stats(&mut confined),
        stats(&mut bare)
    );
}
