//! Holding a service to its CPUs and memory limit, re-applied at every
//! start and restart, and tracking everything it starts: every service
//! and every timer run gets a cgroup of its own, confined or not (see
//! [`Hierarchy::tracking`]), emptied whenever its main process is gone.
//!
//! Where: on cgroup v1, `<hierarchy root>/<cgroup_parent>/<service>` in the
//! cpuset and memory hierarchies, and (every service) in the cgroup2 tree
//! of a hybrid host, where the child is born. On cgroup v2, inside venussup's own
//! cgroup (under systemd the unit's, `Delegate=yes`): venussup moves itself
//! into `<own>/supervisor` (a cgroup that passes controllers down may hold
//! no process), enables cpuset and memory in `<own>/cgroup.subtree_control`
//! and makes `<own>/<cgroup_parent>/<service>`, so every service stays part
//! of the unit: systemd counts its tasks, and kills them when it stops the
//! unit or venussup dies.
//!
//! The parent prepares, the child applies:
//!
//! 1. [`prepare`] (parent, before the clone): creates or updates the
//!    service's cgroup (`cpuset.cpus`, `cpuset.mems` = the NUMA nodes of its
//!    CPUs, the memory limit) and opens, close-on-exec, what the child
//!    needs: on v2 the cgroup's folder, which the child is born in
//!    (`clone3(CLONE_INTO_CGROUP)`, see `sys::spawn`), and its
//!    `cgroup.procs` for kernels without it; on v1 each cgroup's `tasks`.
//! 2. [`Confinement::apply_in_child`] (child, between clone and exec):
//!    writes `0` to each v1 `tasks` (the child moves itself), then sets its
//!    affinity mask, so every thread it ever makes inherits both. A failure
//!    fails the spawn.
//!
//!    Why not `cgroup.procs`: a write to it takes the kernel's global
//!    threadgroup lock for writing, which waits for an RCU grace period
//!    (7.5 ms median here, up to 30 ms) and sits on the restart path, since
//!    the parent waits for the child's exec. On v1, moving the calling
//!    thread itself through `tasks` skips that lock (kernel/cgroup/cgroup.c,
//!    `cgroup_procs_write_start`: "If we migrate a single thread, ... we can
//!    skip the global lock"), 0.03 ms here; between clone and exec the child
//!    has one thread, so moving it moves the whole process. v2 has no such
//!    file for domain cgroups: there the child is born in its cgroup and
//!    nothing migrates at all.
//! 3. [`empty`] whenever its main process is gone (killed, and waited
//!    for, before any restart), [`release`] once it is down for good;
//!    [`cleanup_stale`] at daemon start. What venussup runs besides the
//!    services is tracked the same way, each kind in a cgroup of its own
//!    ([`Helpers`]): [`prepare_tracking`] before each spawn, [`empty`]
//!    after each exit. A service's own side processes (ready probe,
//!    drain, quiet and stop commands) run in the service's cgroup, as
//!    systemd runs `ExecStop=` in the unit's.
//!
//! The hierarchy is what the plan's host said ([`Hierarchy::detect`]): cgroup
//! v2 when venussup's own cgroup offers the cpuset controller, else the v1
//! cpuset hierarchy (and the v1 memory hierarchy for the memory limit),
//! else none, in which case a service is held by its affinity mask only
//! and a warning says why. The proofs library's multicore-SDR threads
//! ignore the affinity mask (lotus#5076, rust-fil-proofs#1440); only the
//! cpuset holds them.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sched::{sched_setaffinity, CpuSet as AffinityMask};
use nix::unistd::Pid;
use serde::Serialize;

use crate::host::cgroups::{Hierarchy, SUPERVISOR_LEAF};
use crate::plan::confine::{decide, NoMemory};
use crate::plan::ServicePlan;
use crate::sys::cgroup::{CgroupError, Cgroupfs, PROCS};
use crate::sys::spawn::CgroupTarget;
use crate::util::cpulist::CpuSet;
use crate::util::fsroot::FsRoot;

/// Why confinement could not be prepared or undone.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("`{name}` cannot name a cgroup: {why}")]
    BadName { name: String, why: String },
    #[error(transparent)]
    NoMemory(#[from] NoMemory),
    #[error("CPU {cpu} of `{service}` does not fit an affinity mask (at most {max} CPUs)")]
    MaskTooSmall {
        service: String,
        cpu: u32,
        max: usize,
    },
    #[error("cannot pass controllers down from {}: processes {} other than venussup are in it (a cgroup that has child cgroups may hold no process); start venussup from units/venussup.service", path.display(), list(pids))]
    NotALeaf { path: PathBuf, pids: Vec<i32> },
    #[error("failed to remove the cgroup {}: it still has processes {}", path.display(), list(pids))]
    Busy { path: PathBuf, pids: Vec<i32> },
}

fn list(pids: &[i32]) -> String {
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A cgroup name venussup makes: a service's name, an instance's
/// (`worker@0`), the parent's ([`crate::util::names`]) or a
/// [`Helpers`] cgroup's.
fn check_name(name: &str) -> Result<(), ConfineError> {
    let base = match name.split_once(':') {
        Some(("timer", timer)) => timer,
        Some(("hook", k)) if k.parse::<usize>().is_ok() => return Ok(()),
        _ => name,
    };
    match crate::util::names::instance_problem(base) {
        Some(why) => Err(ConfineError::BadName {
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// The hierarchy to use and the venussup parent cgroup in it; detected once
/// at daemon start.
#[derive(Debug, Clone)]
pub struct CgroupSetup {
    hierarchy: Hierarchy,
    parent: String,
    fs: Cgroupfs,
    /// The roots in which this process made the venussup parent ready
    /// ([`CgroupSetup::ready_parent`]), so a restart does not redo it:
    /// five cgroupfs reads and writes off the restart path. Forgotten when a
    /// prepare fails (the parent may have been removed or narrowed behind
    /// venussup's back; the prepare is then redone in full) and when the
    /// parent is removed.
    ready: Arc<Mutex<BTreeSet<PathBuf>>>,
}

impl CgroupSetup {
    /// The hierarchy of the host under `fs_root`, written through the real
    /// kernel; `parent` is the name of venussup's cgroup (tests pass a
    /// name of their own and remove it).
    pub fn detect(fs_root: &FsRoot, parent: &str) -> Result<Self, ConfineError> {
        Self::new(Hierarchy::detect(fs_root), parent, Cgroupfs::real())
    }

    pub fn new(hierarchy: Hierarchy, parent: &str, fs: Cgroupfs) -> Result<Self, ConfineError> {
        check_name(parent)?;
        if parent == SUPERVISOR_LEAF {
            return Err(ConfineError::BadName {
                name: parent.to_string(),
                why: format!("`{SUPERVISOR_LEAF}` is the cgroup venussup itself runs in"),
            });
        }
        Ok(Self {
            hierarchy,
            parent: parent.to_string(),
            fs,
            ready: Arc::default(),
        })
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    pub fn parent(&self) -> &str {
        &self.parent
    }

    /// The venussup parent in each tree in use.
    fn parents(&self) -> Vec<PathBuf> {
        self.hierarchy
            .roots()
            .into_iter()
            .map(|r| r.join(&self.parent))
            .collect()
    }

    /// The service's cgroup in each tree in use.
    fn dirs(&self, name: &str) -> Vec<PathBuf> {
        self.parents().into_iter().map(|p| p.join(name)).collect()
    }

    /// The parent in `root`, created and made ready for children: on v1
    /// cpuset it takes the root's CPUs and memory nodes (a new v1 cpuset is
    /// empty, and no task can join an empty one); on v2 it passes the
    /// controllers down. On v2 venussup first moves itself into the leaf
    /// [`SUPERVISOR_LEAF`] of its own cgroup: a cgroup that passes
    /// controllers down may hold no process itself.
    fn ready_parent(&self, root: &Path, v1_cpuset: bool) -> Result<PathBuf, ConfineError> {
        let parent = root.join(&self.parent);
        if self.ready_roots().contains(root) {
            return Ok(parent);
        }
        if let Hierarchy::V2 { memory, .. } = &self.hierarchy {
            let enable = if *memory {
                "+cpuset +memory"
            } else {
                "+cpuset"
            };
            // Also at `/`, which in a cgroup namespace is no real root.
            let leaf = root.join(SUPERVISOR_LEAF);
            self.fs.create(&leaf)?;
            self.fs
                .write(&leaf, PROCS, &std::process::id().to_string())?;
            if let Err(e) = self.fs.write(root, "cgroup.subtree_control", enable) {
                let others = self.fs.procs(root).unwrap_or_default();
                return Err(if others.is_empty() {
                    e.into()
                } else {
                    ConfineError::NotALeaf {
                        path: root.to_path_buf(),
                        pids: others,
                    }
                });
            }
            self.fs.create(&parent)?;
            self.fs.write(&parent, "cgroup.subtree_control", enable)?;
        } else {
            self.fs.create(&parent)?;
        }
        if v1_cpuset {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = self.fs.read(root, file)?;
                self.fs.write(&parent, file, &value)?;
            }
        }
        self.ready_roots().insert(root.to_path_buf());
        Ok(parent)
    }

    fn ready_roots(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        // A panic while holding it cannot leave the set half-changed.
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets which parents were made ready; whether any was.
    fn forget_ready(&self) -> bool {
        let mut roots = self.ready_roots();
        let any = !roots.is_empty();
        roots.clear();
        any
    }
}

/// What the child applies to itself between fork and exec.
#[derive(Debug)]
pub struct Confinement {
    affinity: Option<AffinityMask>,
    /// Each v1 cgroup's `tasks`, opened close-on-exec.
    joins: Vec<OwnedFd>,
    /// The v2 cgroup the child is born in: its directory and its
    /// `cgroup.procs`, opened close-on-exec ([`Confinement::target`]).
    v2: Option<(OwnedFd, OwnedFd)>,
    cgroups: Vec<PathBuf>,
    warnings: Vec<String>,
}

impl Confinement {
    /// Nothing to apply.
    pub fn none() -> Self {
        Self {
            affinity: None,
            joins: Vec::new(),
            v2: None,
            cgroups: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Runs in the child between fork and exec (`pre_exec`): only
    /// async-signal-safe calls, no allocation. Joins each cgroup first (on
    /// v1, joining a cpuset resets the affinity to the cpuset's CPUs), then
    /// sets the affinity mask. Any error fails the spawn. The child must be
    /// single-threaded (it is, after fork): on v1 it moves its one thread.
    pub fn apply_in_child(&self) -> io::Result<()> {
        for fd in &self.joins {
            match nix::unistd::write(fd, b"0") {
                Ok(1) => {}
                Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
                Err(errno) => return Err(errno.into()),
            }
        }
        if let Some(mask) = &self.affinity {
            sched_setaffinity(Pid::from_raw(0), mask)?;
        }
        Ok(())
    }

    /// The v2 cgroup the child is to be born in, for the spawn.
    pub fn target(&self) -> Option<CgroupTarget<'_>> {
        self.v2.as_ref().map(|(dir, procs)| CgroupTarget {
            dir: dir.as_fd(),
            procs: procs.as_fd(),
        })
    }

    /// The cgroups the child joins.
    pub fn cgroups(&self) -> &[PathBuf] {
        &self.cgroups
    }

    /// Why it is held less than it asks; for the log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

fn affinity_mask(service: &str, cpus: &CpuSet) -> Result<AffinityMask, ConfineError> {
    let mut mask = AffinityMask::new();
    for cpu in cpus.iter() {
        mask.set(cpu as usize)
            .map_err(|_| ConfineError::MaskTooSmall {
                service: service.to_string(),
                cpu,
                max: AffinityMask::count(),
            })?;
    }
    Ok(mask)
}

/// Parent side, before fork: creates or updates the service's cgroup(s)
/// and opens what the child writes its pid to. Idempotent; call it at
/// every start and restart. The venussup parent is made ready once; when
/// anything fails after that, it is made ready again and the prepare
/// redone, so a parent removed or changed behind venussup's back is put
/// right.
pub fn prepare(setup: &CgroupSetup, plan: &ServicePlan) -> Result<Confinement, ConfineError> {
    match prepare_once(setup, plan) {
        Err(_) if setup.forget_ready() => prepare_once(setup, plan),
        done => done,
    }
}

fn prepare_once(setup: &CgroupSetup, plan: &ServicePlan) -> Result<Confinement, ConfineError> {
    let name = plan.name.as_str();
    check_name(name)?;
    let d = decide(&setup.hierarchy, plan)?;
    let mut c = Confinement {
        affinity: d
            .affinity
            .as_ref()
            .map(|cpus| affinity_mask(name, cpus))
            .transpose()?,
        warnings: d.warning.iter().cloned().collect(),
        ..Confinement::none()
    };
    let fs = &setup.fs;
    // v1: the child joins through `tasks`; v2: it is born in the cgroup,
    // or joins through `cgroup.procs` (see the module doc).
    let join = |c: &mut Confinement, dir: PathBuf, v1: bool| -> Result<(), ConfineError> {
        if v1 {
            c.joins.push(fs.open_tasks(&dir)?);
        } else {
            c.v2 = Some((fs.open_dir(&dir)?, fs.open_procs(&dir)?));
        }
        c.cgroups.push(dir);
        Ok(())
    };
    match &setup.hierarchy {
        // Every service has its cgroup, confined or not: an unconfined one
        // takes all of its parent's CPUs and memory nodes (empty values).
        Hierarchy::V2 { memory, .. } => {
            let root = setup.hierarchy.roots().remove(0);
            let dir = setup.ready_parent(&root, false)?.join(name);
            fs.create(&dir)?;
            let cpus = d.cpuset.as_ref().map_or(String::new(), ToString::to_string);
            let mems = d.mems.as_ref().map_or(String::new(), ToString::to_string);
            fs.set(&dir, "cpuset.cpus", &cpus)?;
            fs.set(&dir, "cpuset.mems", &mems)?;
            if *memory {
                let max = d.memory_max.map_or("max".to_string(), |m| m.to_string());
                fs.set(&dir, "memory.max", &max)?;
            }
            join(&mut c, dir, false)?;
        }
        Hierarchy::V1 {
            cpuset,
            memory,
            tracking,
        } => {
            if let (Some(root), Some(cpus)) = (cpuset, &d.cpuset) {
                let parent = setup.ready_parent(root, true)?;
                let dir = parent.join(name);
                fs.create(&dir)?;
                let mems = match &d.mems {
                    Some(m) => m.to_string(),
                    None => fs.read(&parent, "cpuset.mems")?,
                };
                fs.set(&dir, "cpuset.mems", &mems)?;
                fs.set(&dir, "cpuset.cpus", &cpus.to_string())?;
                join(&mut c, dir, true)?;
            }
            if let (Some(root), Some(max)) = (memory, d.memory_max) {
                let dir = setup.ready_parent(root, false)?.join(name);
                fs.create(&dir)?;
                fs.set(&dir, "memory.limit_in_bytes", &max.to_string())?;
                join(&mut c, dir, true)?;
            }
            if let Some(root) = tracking {
                let dir = setup.ready_parent(root, false)?.join(name);
                fs.create(&dir)?;
                join(&mut c, dir, false)?;
            }
        }
        Hierarchy::None { .. } => {}
    }
    Ok(c)
}

/// What venussup runs besides the services, each kind in a cgroup of its
/// own beside the services' under the venussup parent, named so that no
/// service's name can be it (a name has no `:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helpers<'a> {
    /// Timer `name`'s runs and its gate command: `timer:NAME`.
    Timer(&'a str),
    /// Hook `k`'s commands and webhook senders: `hook:K`.
    Hook(usize),
}

impl Helpers<'_> {
    pub fn cgroup(self) -> String {
        match self {
            Helpers::Timer(name) => format!("timer:{name}"),
            Helpers::Hook(k) => format!("hook:{k}"),
        }
    }
}

/// Parent side, before a helper is spawned (a timer run, a gate command,
/// a hook): the tracking cgroup `name`
/// ([`Helpers::cgroup`]), created if missing, for it to be born in
/// (nothing confines a helper). Nothing to join where the host has no
/// tracking tree.
pub fn prepare_tracking(setup: &CgroupSetup, name: &str) -> Result<Confinement, ConfineError> {
    check_name(name)?;
    let run = |setup: &CgroupSetup| -> Result<Confinement, ConfineError> {
        let mut c = Confinement::none();
        let Some(root) = setup.hierarchy.tracking() else {
            return Ok(c);
        };
        let dir = setup.ready_parent(&root, false)?.join(name);
        setup.fs.create(&dir)?;
        c.v2 = Some((setup.fs.open_dir(&dir)?, setup.fs.open_procs(&dir)?));
        c.cgroups.push(dir);
        Ok(c)
    };
    match run(setup) {
        Err(_) if setup.forget_ready() => run(setup),
        done => done,
    }
}

/// Kills every process in the service's cgroup(s), so nothing it started
/// outlives it: SIGKILL to each process found, again until a pass finds
/// none it has not killed (what forked meanwhile), at most
/// [`KILL_PASSES`] passes. Does not wait: the dead are reaped by the
/// supervisor (the orphans among them are its to reap, as a subreaper).
///
/// Not through v2's `cgroup.kill`: after one write to it, every child later
/// born in that cgroup with `clone3(CLONE_INTO_CGROUP)` is killed at once
/// (seen on Debian 12's 6.1.0-50 and on 6.18: the kernel compares the kill
/// sequence of the cgroup the child is born in with its parent's), so the
/// service's next start would die at birth, again and again.
pub fn kill_all(setup: &CgroupSetup, name: &str) -> Result<(), ConfineError> {
    check_name(name)?;
    for dir in setup.dirs(name) {
        let mut killed = BTreeSet::new();
        for _ in 0..KILL_PASSES {
            let new: Vec<i32> = all_pids(setup, &dir)?
                .into_iter()
                .filter(|p| killed.insert(*p))
                .collect();
            if new.is_empty() {
                break;
            }
            for pid in new {
                let _ =
                    nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    Ok(())
}

/// Empties the cgroup(s) `name` (a service's, or a [`Helpers`] one): every
/// process in them is killed ([`kill_all`]) and waited for, through a
/// pidfd each (an event, also for processes that are not venussup's
/// children), until the cgroups list none or `within` has passed. `reap`
/// is called with each pid killed once it is gone: an orphan re-parented
/// to venussup (the subreaper) is venussup's to reap, and until it is,
/// a v2 cgroup counts it as populated. A process `stuck` says outlived an
/// earlier emptying is killed again but not waited for. Returns the
/// processes still there.
pub fn empty(
    setup: &CgroupSetup,
    name: &str,
    within: Duration,
    stuck: &dyn Fn(i32) -> bool,
    reap: &mut dyn FnMut(i32),
) -> Result<Vec<i32>, ConfineError> {
    let start = Instant::now();
    let deadline = start.checked_add(within).unwrap_or(start);
    loop {
        let left = pids(setup, name)?;
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
        // Opened before the kill, so each names the process listed, not
        // a later one given its pid.
        let fds: Vec<(i32, OwnedFd)> = left
            .iter()
            .filter(|p| !stuck(**p))
            .filter_map(|p| crate::runtime::adopt::pidfd_open(*p).map(|fd| (*p, fd)))
            .collect();
        kill_all(setup, name)?;
        if fds.is_empty() {
            return Ok(left);
        }
        crate::runtime::adopt::wait_gone(&fds, deadline);
        for (pid, _) in &fds {
            reap(*pid);
        }
    }
}

/// Passes of [`kill_all`] over a cgroup: enough for what a dying process
/// tree forks meanwhile, bounded against one that forks without end.
const KILL_PASSES: usize = 8;

/// Removes the service's cgroup(s) once it stopped (kills nothing: a
/// cgroup that still has processes is an error naming them).
pub fn release(setup: &CgroupSetup, name: &str) -> Result<(), ConfineError> {
    check_name(name)?;
    for dir in setup.dirs(name) {
        remove(setup, &dir)?;
    }
    Ok(())
}

fn remove(setup: &CgroupSetup, dir: &Path) -> Result<(), ConfineError> {
    match setup.fs.remove_tree(dir) {
        Ok(_) => Ok(()),
        Err(e) if e.io_kind() == Some(io::ErrorKind::ResourceBusy) => {
            let pids = all_pids(setup, dir)?;
            Err(ConfineError::Busy {
                path: dir.to_path_buf(),
                pids,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The processes of a cgroup and of the cgroups below it.
fn all_pids(setup: &CgroupSetup, dir: &Path) -> Result<Vec<i32>, ConfineError> {
    let mut pids = setup.fs.procs(dir)?;
    for child in setup.fs.children(dir)? {
        pids.extend(all_pids(setup, &dir.join(child))?);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// How many times the kernel's OOM killer killed a process in the
/// service's memory cgroup (`oom_kill` of v2 `memory.events`, v1
/// `memory.oom_control`); `None` without a memory cgroup for it.
pub fn oom_kills(setup: &CgroupSetup, name: &str) -> Option<u64> {
    check_name(name).ok()?;
    let (dir, file) = match &setup.hierarchy {
        Hierarchy::V2 { memory: true, .. } => (setup.dirs(name).remove(0), "memory.events"),
        Hierarchy::V1 {
            memory: Some(root), ..
        } => (root.join(&setup.parent).join(name), "memory.oom_control"),
        _ => return None,
    };
    parse_oom_kill(&setup.fs.read(&dir, file).ok()?)
}

/// The `oom_kill N` line of a memory controller file.
fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// Every process in the service's cgroup(s) (and below), sorted; none when
/// it has no cgroup.
pub fn pids(setup: &CgroupSetup, name: &str) -> Result<Vec<i32>, ConfineError> {
    check_name(name)?;
    let mut pids = Vec::new();
    for dir in setup.dirs(name) {
        pids.extend(all_pids(setup, &dir)?);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// A cgroup under the venussup parent that still has processes at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleCgroup {
    pub path: PathBuf,
    pub pids: Vec<i32>,
    /// It is the cgroup of a service of the plan (a previous run's).
    pub owned: bool,
}

impl fmt::Display for StaleCgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} still has processes {}{}",
            self.path.display(),
            list(&self.pids),
            if self.owned {
                " (left by a previous run of venussup)"
            } else {
                " (no service of the plan owns it)"
            }
        )
    }
}

/// At daemon start: removes the empty cgroups under the parent that no
/// service in `keep` owns, and reports every cgroup that still has
/// processes.
pub fn cleanup_stale(setup: &CgroupSetup, keep: &[&str]) -> Result<Vec<StaleCgroup>, ConfineError> {
    let mut stale = Vec::new();
    for parent in setup.parents() {
        for name in setup.fs.children(&parent)? {
            let dir = parent.join(&name);
            let pids = all_pids(setup, &dir)?;
            let owned = keep.contains(&name.as_str());
            if !pids.is_empty() {
                stale.push(StaleCgroup {
                    path: dir,
                    pids,
                    owned,
                });
            } else if !owned {
                remove(setup, &dir)?;
            }
        }
    }
    Ok(stale)
}

/// The names of the cgroups under the venussup parent, in every tree in
/// use (none where a parent is not there).
pub fn children(setup: &CgroupSetup) -> Vec<String> {
    let mut names: Vec<String> = setup
        .parents()
        .iter()
        .flat_map(|p| setup.fs.children(p).unwrap_or_default())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Removes the venussup parent itself (it must be empty): for tests and
/// for taking venussup off a host.
pub fn remove_parent(setup: &CgroupSetup) -> Result<(), ConfineError> {
    setup.forget_ready();
    for parent in setup.parents() {
        remove(setup, &parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
