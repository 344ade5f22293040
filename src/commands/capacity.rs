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
use crate::capacity::{self, Capacity, HostResources, SectorProfile};
use crate::checks::venus;
use crate::config::load_valid;
use crate::config::values::ByteSize;
use crate::config::Config;
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
    /// MemTotal less the huge pages `[host.prepare]` reserves.
    pub memory: ByteSize,
    pub hugepages: ByteSize,
    pub seal_paths: Vec<SealPath>,
    pub cores: u32,
    pub l3_groups: Vec<u32>,
    pub sdr_unit_cores: u32,
    pub multicore_sdr: bool,
    #[serde(flatten)]
    pub capacity: Capacity,
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
            .find(|s| s.tasks.contains(&crate::config::Task::PreCommit1))
    }) else {
        return default;
    };
    match crate::plan::sdr::multicore_sdr_unit(&p1.tasks, &p1.env) {
        Some(unit) => (true, u32::try_from(unit).unwrap_or(u32::MAX)),
        None => (false, 1),
    }
}

/// Reads the host and computes the capacity plan.
pub fn assess(
    config: Option<(&Config, &Plan)>,
    fs_root: &FsRoot,
    cli_seal_paths: &[PathBuf],
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
    // Huge pages are reserved: what they take is not there for sectors.
    let hugepages = config
        .and_then(|(_, p)| p.host.prepare.as_ref()?.hugepages.as_ref())
        .map_or(0, |h| {
            crate::plan::prepare::hugepage_bytes(h, &crate::host::topology::numa_nodes(fs_root))
        });
    let memory = hostinfo::mem_total(fs_root)
        .map_err(|e| e.to_string())?
        .saturating_sub(hugepages);
    let topo = topology::read(fs_root).map_err(|e| e.to_string())?;
    let l3_groups: Vec<u32> = topo
        .tree()
        .iter()
        .flat_map(|p| &p.nodes)
        .flat_map(|n| &n.l3_groups)
        .map(|g| u32::try_from(g.cores.len()).unwrap_or(u32::MAX))
        .collect();
    let (multicore_sdr, sdr_unit_cores) = sdr_unit(config.map(|(_, p)| p));
    let resources = HostResources {
        memory,
        seal_free: seal_paths.iter().map(|s| s.free.0).collect(),
        l3_group_cores: l3_groups.clone(),
        sdr_unit_cores,
    };
    let reserve = cap_config.map_or(1, |c| c.reserve);
    Ok(Assessment {
        memory: ByteSize(memory),
        hugepages: ByteSize(hugepages),
        cores: l3_groups.iter().sum(),
        seal_paths,
        l3_groups,
        sdr_unit_cores,
        multicore_sdr,
        capacity: capacity::compute(profile, &resources, reserve),
    })
}

fn text(a: &Assessment) -> String {
    let c = &a.capacity;
    let p = &c.profile;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "capacity plan for {} sectors: {} shared cache + {} per sector, about {} of seal disk each",
        p.sector_size, p.shared_cache, p.per_sector_memory, p.per_sector_disk
    );
    let _ = writeln!(
        out,
        "  memory  {} → ({} − {}) / {} = {:.3} → {}",
        a.memory, a.memory, p.shared_cache, p.per_sector_memory, c.by_memory_exact, c.by_memory
    );
    if a.hugepages.0 > 0 {
        let _ = writeln!(
            out,
            "          ({} huge pages of [host.prepare] taken from MemTotal)",
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
    let unit = if a.multicore_sdr {
        format!(
            "multicore SDR units of {} cores in one L3",
            a.sdr_unit_cores
        )
    } else {
        "1 core per sector (multicore SDR off)".to_string()
    };
    let _ = writeln!(
        out,
        "  cores   {} cores in {} L3 group(s), {unit} → {}",
        a.cores,
        a.l3_groups.len(),
        c.by_cores
    );
    let _ = writeln!(out, "  fit     {} (bound by {})", c.fit, c.binding);
    let _ = writeln!(
        out,
        "recommended: MaxSealingSectors = {} ({} held back), needing {} of seal disk",
        c.recommended, c.reserve, c.seal_disk_needed
    );
    out
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
        findings = d.into_sorted();
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
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("venussup plan: {e}");
            exit::FAILURE
        }
    }
}
