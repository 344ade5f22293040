//! Taking SMT siblings offline so that one online CPU is one core, and
//! bringing them back.
//!
//! Which CPUs go offline is a pure function of the [`Topology`]
//! ([`OffPlan`]); switching them goes through [`Hotplug`]; what
//! `off` took offline is kept in a [`Record`] in the state folder. No step
//! stops at the first failure: every CPU is tried and the [`Report`] says
//! what happened to each.

mod files;

use std::fmt;
use std::path::Path;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

pub use files::{Hotplug, Record, SmtError, SysfsHotplug, RECORD_FILE};

use crate::host::topology::{self, describe_cores, ThreadsPerCore, Topology};
use crate::status::smt::SmtState;
use crate::util::cpulist::CpuSet;
use crate::util::fsroot::FsRoot;

/// What `smt off` does on a host: in every core, each online thread but
/// the lowest-numbered one goes offline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffPlan {
    /// The siblings to take offline.
    pub to_offline: CpuSet,
    /// Siblings that stay online because they have no `online` file (the
    /// kernel cannot take them offline; hwloc snapshots have none at all).
    pub cannot_offline: CpuSet,
}

impl OffPlan {
    pub fn new(topo: &Topology) -> Self {
        let siblings: CpuSet = topo
            .cores()
            .iter()
            .flat_map(|core| core.threads.iter().skip(1))
            .collect();
        let (to_offline, cannot_offline) = siblings
            .iter()
            .partition(|&cpu| cpu != 0 && topo.cpu(cpu).is_some_and(|c| c.hotpluggable));
        Self {
            to_offline,
            cannot_offline,
        }
    }

    /// Every sibling still online.
    pub fn siblings_online(&self) -> CpuSet {
        self.to_offline.union(&self.cannot_offline)
    }
}

/// Which way a step switches CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Offline,
    Online,
}

/// One CPU that could not be switched.
#[derive(Debug)]
pub struct CpuFailure {
    pub cpu: u32,
    pub error: SmtError,
}

/// `{"cpu": 9, "error": "failed to write ..."}`
impl Serialize for CpuFailure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("cpu", &self.cpu)?;
        map.serialize_entry("error", &self.error.to_string())?;
        map.end()
    }
}

/// What one `smt off` or `smt on` did (or, with `dry_run`, would do).
#[derive(Debug)]
pub struct Report {
    pub direction: Direction,
    pub dry_run: bool,
    /// The CPUs the step meant to switch.
    pub planned: CpuSet,
    /// `off` only: siblings it had to leave online ([`OffPlan`]).
    pub cannot_offline: CpuSet,
    /// Those it switched, confirmed by reading `online` back.
    pub done: CpuSet,
    pub failed: Vec<CpuFailure>,
    /// A failure of the step as a whole: the topology could not be read, or
    /// the record could not be read or saved.
    pub error: Option<SmtError>,
}

impl Report {
    fn new(direction: Direction, planned: CpuSet, dry_run: bool) -> Self {
        Self {
            direction,
            dry_run,
            planned,
            cannot_offline: CpuSet::new(),
            done: CpuSet::new(),
            failed: Vec::new(),
            error: None,
        }
    }

    fn failed_to_start(direction: Direction, error: SmtError, dry_run: bool) -> Self {
        Self {
            error: Some(error),
            ..Self::new(direction, CpuSet::new(), dry_run)
        }
    }

    /// Whether the step reached its goal: nothing failed and (for `off`) no
    /// sibling had to stay online.
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.error.is_none() && self.cannot_offline.is_empty()
    }

    /// The error that says sysfs cannot be written on this system at all
    /// (a container, a read-only mount), if a CPU failed for that reason.
    pub fn sysfs_not_writable(&self) -> Option<&SmtError> {
        self.failed
            .iter()
            .map(|f| &f.error)
            .find(|e| e.is_not_writable())
    }

    /// One line per failure, for stderr or an error log.
    pub fn problems(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .failed
            .iter()
            .map(|f| format!("cpu{}: {}", f.cpu, f.error))
            .collect();
        if !self.cannot_offline.is_empty() {
            lines.push(format!(
                "siblings {} stay online: they have no `online` file, so the kernel cannot take them offline",
                self.cannot_offline
            ));
        }
        lines.extend(self.error.iter().map(ToString::to_string));
        lines
    }

    fn keys(&self) -> (&'static str, &'static str) {
        match self.direction {
            Direction::Offline => ("to_offline", "offlined"),
            Direction::Online => ("to_online", "onlined"),
        }
    }
}

/// `{"to_offline": [..], "offlined": [..], "failed": [..]}` (for `on`:
/// `to_online`, `onlined`); a dry run has only the first key. Two more
/// keys appear only when they have something to say: `cannot_offline` (the
/// siblings without an `online` file) and `error` (the step as a whole
/// failed).
impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (planned, done) = self.keys();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(planned, &self.planned)?;
        if !self.dry_run {
            map.serialize_entry(done, &self.done)?;
            map.serialize_entry("failed", &self.failed)?;
        }
        if !self.cannot_offline.is_empty() {
            map.serialize_entry("cannot_offline", &self.cannot_offline)?;
        }
        if let Some(error) = &self.error {
            map.serialize_entry("error", &error.to_string())?;
        }
        map.end()
    }
}

/// A one-line summary of what was done (failures: [`Report::problems`]).
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, would, none) = match self.direction {
            Direction::Offline => (
                "took offline",
                "would take offline",
                "no sibling to take offline: one thread per core is online",
            ),
            Direction::Online => ("brought back", "would bring back", "no CPU to bring back"),
        };
        if self.planned.is_empty() {
            f.write_str(none)
        } else if self.dry_run {
            write!(f, "{would}: {}", self.planned)
        } else if self.done.is_empty() {
            write!(f, "{verb}: none of {}", self.planned)
        } else {
            write!(f, "{verb}: {}", self.done)?;
            let missed = self.planned.difference(&self.done);
            if !missed.is_empty() {
                write!(f, " (failed: {missed})")?;
            }
            Ok(())
        }
    }
}

/// Switches every CPU of `cpus`, going on after a failure.
fn switch(cpus: &CpuSet, online: bool, hotplug: &mut dyn Hotplug) -> (CpuSet, Vec<CpuFailure>) {
    let mut done = CpuSet::new();
    let mut failed = Vec::new();
    for cpu in cpus.iter() {
        match hotplug.set_online(cpu, online) {
            Ok(()) => {
                tracing::info!(cpu, online, "switched CPU");
                done.insert(cpu);
            }
            Err(error) => {
                tracing::error!(cpu, online, %error, "failed to switch CPU");
                failed.push(CpuFailure { cpu, error });
            }
        }
    }
    (done, failed)
}

/// The SMT step of `venussup run`: reads the topology under `fs_root`,
/// takes every sibling offline, records what it took in `state_dir` (a host
/// path). Never panics and tries every CPU; read the topology again
/// afterwards to allocate CPUs from those still online. When sysfs cannot
/// be written, [`Report::sysfs_not_writable`] says so.
pub fn take_siblings_offline(fs_root: &FsRoot, state_dir: &Path) -> Report {
    off(fs_root, state_dir, false)
}

/// `venussup smt off`: see [`off_with`].
pub fn off(fs_root: &FsRoot, state_dir: &Path, dry_run: bool) -> Report {
    on_host(
        fs_root,
        state_dir,
        Direction::Offline,
        dry_run,
        |topo, record, hotplug| off_with(topo, record, hotplug, dry_run),
    )
}

/// Runs `step` on the host under `fs_root`: its topology, its record in
/// `state_dir`, its sysfs. A topology that cannot be read fails the step.
fn on_host(
    fs_root: &FsRoot,
    state_dir: &Path,
    direction: Direction,
    dry_run: bool,
    step: impl FnOnce(&Topology, &Record, &mut dyn Hotplug) -> Report,
) -> Report {
    match topology::read(fs_root) {
        Ok(topo) => step(
            &topo,
            &Record::new(fs_root, state_dir),
            &mut SysfsHotplug::new(fs_root),
        ),
        Err(e) => Report::failed_to_start(direction, e.into(), dry_run),
    }
}

/// Takes the [`OffPlan`]'s siblings offline and adds them to the record. The
/// record is saved before the writes too, so a crash half-way still leaves
/// every CPU this run may take offline recorded. A record that cannot be
/// read is reported and left alone; the CPUs still go offline.
pub fn off_with(
    topo: &Topology,
    record: &Record,
    hotplug: &mut dyn Hotplug,
    dry_run: bool,
) -> Report {
    let plan = OffPlan::new(topo);
    let mut report = Report::new(Direction::Offline, plan.to_offline, dry_run);
    report.cannot_offline = plan.cannot_offline;
    if dry_run || report.planned.is_empty() {
        return report;
    }
    let earlier = record.load();
    if let Ok(earlier) = &earlier {
        if let Err(e) = record.save(&earlier.union(&report.planned)) {
            report.error = Some(e);
        }
    }
    (report.done, report.failed) = switch(&report.planned, false, hotplug);
    match earlier {
        Ok(earlier) => {
            if let Err(e) = record.save(&earlier.union(&report.done)) {
                report.error = Some(e);
            }
        }
        Err(e) => report.error = Some(e),
    }
    report
}

/// `venussup smt on`: see [`on_with`].
pub fn on(fs_root: &FsRoot, state_dir: &Path, all: bool, dry_run: bool) -> Report {
    on_host(
        fs_root,
        state_dir,
        Direction::Online,
        dry_run,
        |topo, record, hotplug| on_with(topo, record, hotplug, all, dry_run),
    )
}

/// Brings back the recorded CPUs that are not online (with `all`: every
/// offline CPU too), then drops from the record those that are back.
pub fn on_with(
    topo: &Topology,
    record: &Record,
    hotplug: &mut dyn Hotplug,
    all: bool,
    dry_run: bool,
) -> Report {
    let online = topo.online();
    let (recorded, load_error) = match record.load() {
        Ok(recorded) => (Some(recorded), None),
        Err(e) => (None, Some(e)),
    };
    let mut planned = recorded
        .as_ref()
        .map_or_else(CpuSet::new, |r| r.difference(&online));
    if all {
        planned = planned.union(&topo.offline());
    }
    let mut report = Report::new(Direction::Online, planned, dry_run);
    report.error = load_error;
    if dry_run {
        return report;
    }
    (report.done, report.failed) = switch(&report.planned, true, hotplug);
    if let Some(recorded) = recorded {
        let remaining = recorded.difference(&online).difference(&report.done);
        if remaining != recorded {
            if let Err(e) = record.save(&remaining) {
                report.error = Some(e);
            }
        }
    }
    report
}

/// What the daemon reports of `smt = "off"`: `report` (its start's step)
/// and the host after it, read again, so a restart of venussup, whose step
/// finds the siblings offline already, still shows them.
pub fn state_after(report: &Report, fs_root: &FsRoot, state_dir: &Path) -> SmtState {
    let mut state = SmtState {
        to_offline: report.planned.clone(),
        offlined: report.done.clone(),
        failed: report
            .failed
            .iter()
            .map(|f| crate::status::smt::CpuFailure {
                cpu: f.cpu,
                error: f.error.to_string(),
            })
            .collect(),
        error: report.error.as_ref().map(ToString::to_string),
        ..SmtState::default()
    };
    match status(fs_root, state_dir) {
        Ok(now) => {
            state.offline = now.offline;
            state.offlined_by_venussup = now.offlined_by_venussup;
            state.siblings_online = now.siblings_online;
        }
        Err(e) => {
            state.error.get_or_insert_with(|| e.to_string());
        }
    }
    state
}

/// What `venussup smt status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Online cores.
    pub cores: usize,
    pub threads_per_core: Option<ThreadsPerCore>,
    pub online: CpuSet,
    pub offline: CpuSet,
    /// Offline CPUs that venussup took offline (`smt on` brings them back).
    pub offlined_by_venussup: CpuSet,
    /// Siblings still online: what `smt off` would take offline now...
    pub siblings_online: CpuSet,
    /// ... but for these, which have no `online` file.
    pub cannot_offline: CpuSet,
}

impl Status {
    pub fn new(topo: &Topology, recorded: &CpuSet) -> Self {
        let offline = topo.offline();
        let plan = OffPlan::new(topo);
        Self {
            cores: topo.cores().len(),
            threads_per_core: topo.threads_per_core(),
            online: topo.online(),
            offlined_by_venussup: recorded.intersection(&offline),
            offline,
            siblings_online: plan.siblings_online(),
            cannot_offline: plan.cannot_offline,
        }
    }
}

/// `venussup smt status`.
pub fn status(fs_root: &FsRoot, state_dir: &Path) -> Result<Status, SmtError> {
    let topo = topology::read(fs_root)?;
    let recorded = Record::new(fs_root, state_dir).load()?;
    Ok(Status::new(&topo, &recorded))
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cores = describe_cores(self.cores, self.threads_per_core);
        writeln!(f, "online: {} ({cores})", self.online)?;
        if self.siblings_online.is_empty() {
            writeln!(f, "siblings online: none")?;
        } else {
            writeln!(f, "siblings online: {}", self.siblings_online)?;
            let can = self.siblings_online.difference(&self.cannot_offline);
            if !can.is_empty() {
                writeln!(f, "  `venussup smt off` takes {can} offline")?;
            }
            if !self.cannot_offline.is_empty() {
                writeln!(
                    f,
                    "  {} have no `online` file: the kernel cannot take them offline",
                    self.cannot_offline
                )?;
            }
        }
        if self.offline.is_empty() {
            writeln!(f, "offline: none")
        } else if self.offlined_by_venussup.is_empty() {
            writeln!(f, "offline: {} (not by venussup)", self.offline)
        } else {
            writeln!(
                f,
                "offline: {}; venussup took {} offline (`venussup smt on` brings them back)",
                self.offline, self.offlined_by_venussup
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io;

    use super::*;
    use crate::host::topology::Cpu;

    fn set(list: &str) -> CpuSet {
        CpuSet::parse_list(list).unwrap()
    }

    /// Online CPUs grouped in cores by their siblings lists.
    fn topo(cores: &[&str]) -> Topology {
        Topology::new(
            cores
                .iter()
                .flat_map(|siblings| {
                    set(siblings).to_vec().into_iter().map(move |n| Cpu {
                        siblings: Some(set(siblings)),
                        ..Cpu::online(n)
                    })
                })
                .collect(),
        )
    }

    /// A [`Hotplug`] that records each call and fails for chosen CPUs.
    #[derive(Debug, Default)]
    struct Recording {
        calls: Vec<(u32, bool)>,
        refuse: BTreeSet<u32>,
        read_only: bool,
    }

    impl Hotplug for Recording {
        fn set_online(&mut self, cpu: u32, online: bool) -> Result<(), SmtError> {
            self.calls.push((cpu, online));
            let kind = if self.read_only {
                io::ErrorKind::ReadOnlyFilesystem
            } else if self.refuse.contains(&cpu) {
                io::ErrorKind::ResourceBusy
            } else {
                return Ok(());
            };
            Err(SmtError::Write {
                path: format!("cpu{cpu}/online").into(),
                value: "0".into(),
                source: kind.into(),
            })
        }
    }

    fn record_in(dir: &tempfile::TempDir) -> Record {
        Record::new(&FsRoot::new(dir.path()), Path::new("/state"))
    }

    #[test]
    fn keeps_the_lowest_thread_of_every_core() {
        assert_eq!(
            OffPlan::new(&topo(&["0,8", "1,9", "2-3"])).to_offline,
            set("3,8-9")
        );
        assert_eq!(
            OffPlan::new(&topo(&["0-3", "4-7"])).to_offline,
            set("1-3,5-7")
        );
        assert_eq!(OffPlan::new(&topo(&["0-1", "2", "3"])).to_offline, set("1"));
    }

    #[test]
    fn never_plans_a_cpu_without_online_file() {
        let mut cpus = topo(&["0-1", "2-3"]).cpus().to_vec();
        cpus[3].hotpluggable = false;
        let plan = OffPlan::new(&Topology::new(cpus));
        assert_eq!(plan.to_offline, set("1"));
        assert_eq!(plan.cannot_offline, set("3"));
        assert_eq!(plan.siblings_online(), set("1,3"));
    }

    #[test]
    fn off_tries_every_cpu_and_records_only_those_it_took() {
        let dir = tempfile::tempdir().unwrap();
        let record = record_in(&dir);
        let mut hotplug = Recording {
            refuse: [9].into(),
            ..Recording::default()
        };
        let report = off_with(&topo(&["0,8", "1,9", "2,10"]), &record, &mut hotplug, false);
        assert_eq!(hotplug.calls, vec![(8, false), (9, false), (10, false)]);
        assert_eq!(report.done, set("8,10"));
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].cpu, 9);
        assert!(!report.succeeded());
        assert!(report.sysfs_not_writable().is_none());
        assert_eq!(record.load().unwrap(), set("8,10"));
        assert_eq!(report.to_string(), "took offline: 8,10 (failed: 9)");
    }

    #[test]
    fn off_on_a_read_only_sysfs_says_so_and_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let record = record_in(&dir);
        let mut hotplug = Recording {
            read_only: true,
            ..Recording::default()
        };
        let report = off_with(&topo(&["0,2", "1,3"]), &record, &mut hotplug, false);
        assert_eq!(hotplug.calls.len(), 2);
        assert!(report.sysfs_not_writable().is_some());
        assert_eq!(record.load().unwrap(), CpuSet::new());
        assert_eq!(report.problems().len(), 2);
    }

    #[test]
    fn dry_run_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let record = record_in(&dir);
        let mut hotplug = Recording::default();
        let report = off_with(&topo(&["0,2", "1,3"]), &record, &mut hotplug, true);
        assert!(hotplug.calls.is_empty());
        assert!(!record.path().exists());
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({"to_offline": [2, 3]})
        );
    }

    #[test]
    fn on_brings_back_recorded_cpus_and_forgets_those_online() {
        let dir = tempfile::tempdir().unwrap();
        let record = record_in(&dir);
        record.save(&set("1,2,3")).unwrap();
        let mut cpus = topo(&["0", "1"]).cpus().to_vec();
        cpus.extend([Cpu::offline(2), Cpu::offline(3), Cpu::offline(4)]);
        let topo = Topology::new(cpus);
        let mut hotplug = Recording {
            refuse: [3].into(),
            ..Recording::default()
        };
        let report = on_with(&topo, &record, &mut hotplug, false, false);
        assert_eq!(hotplug.calls, vec![(2, true), (3, true)]);
        assert_eq!(record.load().unwrap(), set("3"));
        assert_eq!(
            serde_json::to_value(&report).unwrap()["onlined"],
            serde_json::json!([2])
        );

        let mut hotplug = Recording::default();
        let report = on_with(&topo, &record, &mut hotplug, true, false);
        assert_eq!(report.done, set("2-4"));
        assert_eq!(record.load().unwrap(), CpuSet::new());
    }

    #[test]
    fn status_counts_cores_and_names_recorded_siblings() {
        let mut cpus = topo(&["0,2", "1"]).cpus().to_vec();
        cpus.push(Cpu::offline(3));
        let status = Status::new(&Topology::new(cpus), &set("3,7"));
        assert_eq!(status.cores, 2);
        assert_eq!(status.offlined_by_venussup, set("3"));
        assert_eq!(status.siblings_online, set("2"));
        assert_eq!(
            serde_json::to_value(&status).unwrap()["threads_per_core"],
            serde_json::json!({"min": 1, "max": 2})
        );
    }
}
