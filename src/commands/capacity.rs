//! `venussup plan`: how many sectors this host can seal at once, from its
//! memory, seal disk and cores, and what `MaxSealingSectors` to set.
//!
//! Works without a config when `--seal-path` is given; with one, seal
//! paths, sector size and figures come from its `[capacity]` table (or the
//! `--seal` paths of its `storage attach` commands), and the sealer's own
//! config is checked against the result.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{exit, print_stdout};
use crate::capacity::{self, memory, Capacity, HostResources, Proofs, SectorProfile};
use crate::checks::{capacity as capacity_checks, venus};
use crate::config::load_valid;
use crate::config::values::ByteSize;
use crate::config::{Config, Role, ServiceKind, Task};
use crate::host::{memory as hostinfo, topology, Host};
use crate::plan::{self as service_plan, Plan};
use crate::util::fsroot::FsRoot;

/// Sector size when neither the command line nor the config says.
const DEFAULT_SECTOR_SIZE: &str = "32GiB";
/// `FIL_PROOFS_MULTICORE_SDR_PRODUCERS` when not set (the proofs' default).
const DEFAULT_SDR_PRODUCERS: u32 = 3;

/// What `venussup plan` was asked.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub config: Option<&'a Path>,
    pub fs_root: FsRoot,
    pub seal_paths: Vec<PathBuf>,
    pub sector_size: Option<ByteSize>,
    pub json: bool,
}

/// One seal path and its free space.
#[derive(Debug, Clone, Serialize)]
pub struct SealPath {
    pub path: PathBuf,
    pub free: ByteSize,
}

/// The inputs read from the host, shown beside the result.
#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    /// MemTotal, less the huge pages `[host.prepare]` reserves unless the
    /// proofs in use read them.
    pub memory: ByteSize,
    pub hugepages: ByteSize,
    /// Whether the huge pages were taken from the memory (the proofs in use
    /// never read them).
    pub hugepages_wasted: bool,
    pub seal_paths: Vec<SealPath>,
    pub cores: u32,
    pub l3_groups: Vec<u32>,
    pub sdr_unit_cores: u32,
    pub multicore_sdr: bool,
    #[serde(flatten)]
    pub capacity: Capacity,
}

impl Assessment {
    /// Huge pages reserved that the proofs in use never read.
    pub fn wasted_hugepages(&self) -> u64 {
        if self.hugepages_wasted {
            self.hugepages.0
        } else {
            0
        }
    }
}

/// Seal paths a config names: `[capacity] seal_paths`, else the `--seal`
/// arguments of its services (`storage attach --seal PATH`).
fn config_seal_paths(config: &Config, plan: &Plan) -> Vec<PathBuf> {
    if let Some(c) = config
        .capacity
        .as_ref()
        .filter(|c| !c.seal_paths.is_empty())
    {
        return c.seal_paths.clone();
    }
    let mut paths: Vec<PathBuf> = plan
        .services
        .iter()
        .filter_map(|s| venus::flag_value(&s.argv, "seal"))
        .filter(|p| *p != "true")
        .map(PathBuf::from)
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Multicore SDR and its unit size, from the environment the first
/// PreCommit1 service runs with; without one (or without a config), the
/// deployment plan's multicore SDR with the proofs' default producers.
fn sdr_unit(plan: Option<&Plan>) -> (bool, u32) {
    let default = (true, DEFAULT_SDR_PRODUCERS + 1);
    let Some(p1) = plan.and_then(|p| {
        p.services
            .iter()
            .find(|s| s.tasks.contains(&Task::PreCommit1))
    }) else {
        return default;
    };
    match crate::plan::sdr::multicore_sdr_unit(&p1.tasks, &p1.env) {
        Some(unit) => (true, u32::try_from(unit).unwrap_or(u32::MAX)),
        None => (false, 1),
    }
}

/// The host's services as the memory budget sees them: every daemon that
/// declares tasks.
fn budget_services(plan: &Plan) -> Vec<memory::Service> {
    plan.services
        .iter()
        .filter(|s| s.kind == ServiceKind::Daemon && !s.tasks.is_empty())
        .map(|s| memory::Service {
            name: s.name.clone(),
            tasks: s.tasks.iter().map(|t| format!("{t:?}")).collect(),
            worker: s.role == Role::Worker,
            memory_max: s.limits.memory_max.map(|m| m.0),
        })
        .collect()
}

/// Cores per L3 group that PreCommit1 gets: the L3 groups of the
/// PreCommit1 services' CPUs when the plan placed them, else the host's.
fn pc1_groups(plan: Option<&Plan>, host_groups: &[u32]) -> Vec<u32> {
    let spans: Vec<_> = plan
        .into_iter()
        .flat_map(|p| &p.services)
        .filter(|s| s.tasks.contains(&Task::PreCommit1))
        .filter_map(|s| s.cpus.as_ref()?.span.as_ref())
        .collect();
    if spans.is_empty() {
        return host_groups.to_vec();
    }
    spans
        .iter()
        .flat_map(|span| &span.l3)
        .map(|u| u32::try_from(u.cores).unwrap_or(u32::MAX))
        .collect()
}

/// What the capacity plan reads of the host.
#[derive(Debug, Clone)]
pub struct Facts {
    /// MemTotal.
    pub mem_total: u64,
    /// The host's NUMA nodes (per-node huge pages are counted on each).
    pub numa_nodes: Vec<u32>,
    pub topology: topology::Topology,
    /// The seal paths with their free space.
    pub seal_paths: Vec<SealPath>,
}

/// Reads the host and computes the capacity plan.
pub fn assess(
    config: Option<(&Config, &Plan)>,
    fs_root: &FsRoot,
    cli_seal_paths: &[PathBuf],
    cli_sector_size: Option<ByteSize>,
) -> Result<Assessment, String> {
    let seal_paths = if cli_seal_paths.is_empty() {
        config
            .map(|(c, p)| config_seal_paths(c, p))
            .unwrap_or_default()
    } else {
        cli_seal_paths.to_vec()
    };
    let seal_paths = seal_paths
        .into_iter()
        .map(|path| {
            let free = hostinfo::free_space(&fs_root.path(&path)).map_err(|e| e.to_string())?;
            Ok(SealPath {
                path,
                free: ByteSize(free),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let facts = Facts {
        mem_total: hostinfo::mem_total(fs_root).map_err(|e| e.to_string())?,
        numa_nodes: crate::host::topology::numa_nodes(fs_root),
        topology: topology::read(fs_root).map_err(|e| e.to_string())?,
        seal_paths,
    };
    assess_facts(config, facts, cli_sector_size)
}

/// The capacity plan of a host as `facts` describe it (pure: what
/// [`assess`] computes once it has read the host).
pub fn assess_facts(
    config: Option<(&Config, &Plan)>,
    facts: Facts,
    cli_sector_size: Option<ByteSize>,
) -> Result<Assessment, String> {
    let cap_config = config.and_then(|(c, _)| c.capacity.as_ref());
    let sector_size = match (cli_sector_size, cap_config) {
        (Some(s), _) => s,
        (None, Some(c)) => *c.sector_size.get_ref(),
        (None, None) => ByteSize::parse(DEFAULT_SECTOR_SIZE)?,
    };
    let defaults = SectorProfile::default_for(sector_size);
    let pick = |given: Option<ByteSize>, default: Option<ByteSize>, what: &str| {
        given.or(default).ok_or_else(|| {
            format!(
                "no default {what} for {sector_size} sectors (known sizes: {}); set it in [capacity]",
                capacity::SECTOR_SIZES.join(", ")
            )
        })
    };
    let profile = SectorProfile {
        sector_size,
        shared_cache: pick(
            cap_config.and_then(|c| c.shared_cache),
            defaults.map(|d| d.shared_cache),
            "shared_cache",
        )?,
        per_sector_memory: pick(
            cap_config.and_then(|c| c.per_sector_memory),
            defaults.map(|d| d.per_sector_memory),
            "per_sector_memory",
        )?,
        per_sector_disk: pick(
            cap_config.and_then(|c| c.per_sector_disk),
            defaults.map(|d| d.per_sector_disk),
            "per_sector_disk",
        )?,
    };
    let seal_paths = facts.seal_paths;
    let proofs = cap_config.map_or(Proofs::default(), |c| c.proofs);
    // Huge pages are reserved: unless the proofs read them, what they take
    // is not there for sectors.
    let hugepages = config
        .and_then(|(_, p)| p.host.prepare.as_ref()?.hugepages.as_ref())
        .map_or(0, |h| {
            crate::plan::prepare::hugepage_bytes(h, &facts.numa_nodes)
        });
    let hugepages_wasted = hugepages > 0 && !proofs.uses_hugepages();
    let memory = facts
        .mem_total
        .saturating_sub(if hugepages_wasted { hugepages } else { 0 });
    let l3_groups: Vec<u32> = facts
        .topology
        .tree()
        .iter()
        .flat_map(|p| &p.nodes)
        .flat_map(|n| &n.l3_groups)
        .map(|g| u32::try_from(g.cores.len()).unwrap_or(u32::MAX))
        .collect();
    let plan = config.map(|(_, p)| p);
    let (multicore_sdr, sdr_unit_cores) = sdr_unit(plan);
    let l3_groups = pc1_groups(plan, &l3_groups);
    let resources = HostResources {
        memory,
        seal_free: seal_paths.iter().map(|s| s.free.0).collect(),
        l3_group_cores: l3_groups.clone(),
        sdr_unit_cores,
        proofs,
        services: plan.map(budget_services).unwrap_or_default(),
        window_post: cap_config.and_then(|c| c.window_post_memory).map(|m| m.0),
        other_hosts: cap_config.map_or(0, |c| c.other_hosts),
    };
    let reserve = cap_config.map_or(1, |c| c.reserve);
    let capacity = capacity::compute(profile, &resources, reserve);
    Ok(Assessment {
        memory: ByteSize(memory),
        hugepages: ByteSize(hugepages),
        hugepages_wasted,
        cores: l3_groups.iter().sum(),
        seal_paths,
        l3_groups,
        sdr_unit_cores,
        multicore_sdr,
        capacity,
    })
}

/// The capacity plan as `plan` prints it (and `check` after its plan).
pub fn text(a: &Assessment) -> String {
    let c = &a.capacity;
    let p = &c.profile;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "capacity plan for {} sectors (proofs: {}): {} shared cache + {} per sector, about {} of seal disk each",
        p.sector_size, c.proofs.as_str(), p.shared_cache, p.per_sector_memory, p.per_sector_disk
    );
    let others = if c.other_tasks.0 > 0 {
        format!(" − {} of other tasks", c.other_tasks)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  memory  {} → ({} − {}{others}) / {} = {:.3} → {}",
        a.memory, a.memory, p.shared_cache, p.per_sector_memory, c.by_memory_exact, c.by_memory
    );
    if a.hugepages.0 > 0 {
        let how = if a.hugepages_wasted {
            "taken from MemTotal: the proofs in use never read them"
        } else {
            "left in: damocles' proofs keep PreCommit1's layers in them"
        };
        let _ = writeln!(
            out,
            "          ({} huge pages of [host.prepare] {how})",
            a.hugepages
        );
    }
    match c.by_disk {
        Some(n) => {
            let paths: Vec<String> = a
                .seal_paths
                .iter()
                .map(|s| format!("{} {} free", s.path.display(), s.free))
                .collect();
            let _ = writeln!(out, "  disk    {} → {n}", paths.join(", "));
        }
        None => {
            let _ = writeln!(
                out,
                "  disk    no seal path given (--seal-path): not counted"
            );
        }
    }
    let unit = match (a.multicore_sdr, c.proofs) {
        (false, _) => "1 core per sector (multicore SDR off)".to_string(),
        (true, Proofs::Venus) => format!(
            "one multicore-SDR run of {} cores per L3 group (proofs 11.1.1)",
            a.sdr_unit_cores
        ),
        (true, _) => format!(
            "multicore SDR units of {} cores in one L3",
            a.sdr_unit_cores
        ),
    };
    let _ = writeln!(
        out,
        "  cores   {} PreCommit1 cores in {} L3 group(s), {unit} → {}",
        a.cores,
        a.l3_groups.len(),
        c.by_cores
    );
    let _ = writeln!(out, "  fit     {} (bound by {})", c.fit, c.binding);
    budget_text(&mut out, a);
    match c.recommended {
        Some(n) => {
            let held = if c.held_back > 0 {
                format!(" ({} held back)", c.held_back)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "recommended: MaxSealingSectors = {n}{held}, needing {} of seal disk",
                c.seal_disk_needed
            );
            if c.other_hosts > 0 {
                let _ = writeln!(
                    out,
                    "  sealer-wide: {n} here + {} on other hosts ([capacity] other_hosts) = MaxSealingSectors {}",
                    c.other_hosts,
                    n.saturating_add(c.other_hosts)
                );
            }
        }
        None => {
            let _ = writeln!(out, "{}", capacity::nothing_fits(c));
        }
    }
    out
}

/// The memory budget, one line per service.
fn budget_text(out: &mut String, a: &Assessment) {
    let c = &a.capacity;
    if c.budget.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "memory budget (venus-sealer's resource table: MaxMemory + BaseMinMemory per task):"
    );
    let width = c.budget.iter().map(|b| b.service.len()).max().unwrap_or(0);
    for b in &c.budget {
        let mut parts: Vec<String> = b
            .lines
            .iter()
            .map(|l| format!("{} {} × {}", l.task, l.count, l.each))
            .collect();
        parts.extend(b.uncounted.iter().map(|t| format!("{t} not counted")));
        let limit = match (b.suggested_memory_max, b.memory_max) {
            (Some(s), Some(m)) => format!(" → limits.memory_max = \"{s}\" (set: {m})"),
            (Some(s), None) => format!(" → limits.memory_max = \"{s}\" (not set)"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:width$}  {} = {}{limit}",
            b.service,
            parts.join(", "),
            b.total
        );
    }
    let _ = writeln!(
        out,
        "  {:width$}  {} of {}",
        "host", c.host_budget, a.memory
    );
}

pub fn run(opts: &Options<'_>) -> u8 {
    let loaded = match opts.config.map(load_valid).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::FAILURE;
        }
    };
    if loaded.is_none() && opts.seal_paths.is_empty() {
        eprintln!(
            "venussup plan: give --seal-path PATH (the folder sectors seal in), or --config FILE"
        );
        return exit::USAGE;
    }
    let host = Host::probe(&opts.fs_root);
    // The config is valid; what resolving finds against the host is for
    // `check` to show.
    let planned = loaded
        .as_ref()
        .map(|c| (c, service_plan::resolve(c, &host, &mut c.diagnostics())));
    let assessment = match assess(
        planned.as_ref().map(|(c, p)| (*c, p)),
        &opts.fs_root,
        &opts.seal_paths,
        opts.sector_size,
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("venussup plan: {e}");
            return exit::FAILURE;
        }
    };
    // Only the findings against the capacity plan: `check` shows the rest.
    let mut findings = Vec::new();
    if let Some((c, p)) = &planned {
        let mut d = c.diagnostics();
        venus::check_capacity(c, p, &host, &assessment.capacity, &mut d);
        capacity_checks::check(
            c,
            p,
            &assessment.capacity,
            assessment.wasted_hugepages(),
            &mut d,
        );
        findings = d.into_sorted();
    }
    let fits = assessment.capacity.recommended.is_some();
    if !fits && opts.json {
        eprintln!(
            "venussup plan: {}",
            capacity::nothing_fits(&assessment.capacity)
        );
    }
    let written = if opts.json {
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(flatten)]
            assessment: &'a Assessment,
            findings: &'a [crate::util::diag::Diagnostic],
        }
        serde_json::to_string_pretty(&Doc {
            assessment: &assessment,
            findings: &findings,
        })
        .map_err(|e| e.to_string())
        .and_then(|s| print_stdout(&(s + "\n")))
    } else {
        for f in &findings {
            eprintln!("{f}");
        }
        print_stdout(&text(&assessment))
    };
    match written {
        Ok(()) if fits => exit::OK,
        Ok(()) => exit::FAILURE,
        Err(e) => {
            eprintln!("venussup plan: {e}");
            exit::FAILURE
        }
    }
}
