//! The capacity plan: how many sectors a host can seal at once, by memory,
//! by seal disk and by cores, and which of them binds. Pure arithmetic over
//! numbers the caller read from the host.
//!
//! Memory decides first (the deployment plan: 64 GiB sectors take 112 GiB of
//! shared cache plus 128 GiB per sector, so 1 TiB gives (1024 − 112) / 128
//! = 7.125, 7 fit, 6 recommended). Cores are counted in multicore-SDR units
//! of `FIL_PROOFS_MULTICORE_SDR_PRODUCERS + 1` cores that must share one L3
//! cache, so a group's leftover cores count for nothing. How many units one
//! L3 group runs depends on the proofs version ([`Proofs`]).
//!
//! Every other declared task of the host's services (PreCommit2, C2, ...)
//! takes its memory first ([`memory`]): the sectors get what is left.

pub mod memory;

use serde::{Deserialize, Serialize};

use crate::util::units::ByteSize;

const GIB: u64 = 1 << 30;

/// Sector sizes the proofs know; the small ones are for test networks.
pub const SECTOR_SIZES: [&str; 5] = ["2KiB", "8MiB", "512MiB", "32GiB", "64GiB"];

/// What one sector size costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectorProfile {
    pub sector_size: ByteSize,
    /// Memory shared by all sealing sectors (the parameter/layer cache).
    pub shared_cache: ByteSize,
    /// Memory each concurrently sealing sector takes.
    pub per_sector_memory: ByteSize,
    /// Scratch disk each sealing sector takes.
    pub per_sector_disk: ByteSize,
}

impl SectorProfile {
    /// The deployment plan's figures for 32 GiB (56 GiB + 64 GiB each, about
    /// 520 GiB disk each) and 64 GiB sectors (112 GiB + 128 GiB each, about
    /// 1 TiB disk each). Test sizes scale the 32 GiB figures with the sector.
    pub fn default_for(sector_size: ByteSize) -> Option<Self> {
        let (cache, mem, disk) = match sector_size.0 {
            s if s == 64 * GIB => (112 * GIB, 128 * GIB, 1024 * GIB),
            s if s == 32 * GIB => (56 * GIB, 64 * GIB, 520 * GIB),
            s @ (2048 | 0x80_0000 | 0x2000_0000) => (s * 7 / 4, s * 2, s * 65 / 4),
            _ => return None,
        };
        Some(Self {
            sector_size,
            shared_cache: ByteSize(cache),
            per_sector_memory: ByteSize(mem),
            per_sector_disk: ByteSize(disk),
        })
    }
}

/// The proofs library PreCommit1 runs with, which decides how many
/// multicore-SDR runs one L3 group holds and whether huge pages are used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proofs {
    /// What venus-worker v1.6.0-3 ships: filecoin-ffi 943e335 pins
    /// storage-proofs-porep 11.1.1, whose `cores.rs` makes one core group
    /// per L3 cache and checks out a whole group per SDR run (one run per
    /// group), and which never reads huge pages.
    #[default]
    Venus,
    /// storage-proofs-porep 12.0.0 or later (rust-fil-proofs#1588): several
    /// units of `PRODUCERS + 1` cores per L3 group; no huge pages.
    V12,
    /// damocles' fork (force/v18.1.0): several units per group, and the two
    /// sector-sized layers of PreCommit1 in huge-page files.
    Damocles,
}

impl Proofs {
    /// Multicore-SDR runs an L3 group of `cores` holds with units of `unit`.
    pub fn runs_per_group(self, cores: u32, unit: u32) -> u64 {
        let unit = unit.max(1);
        match self {
            Proofs::Venus => u64::from(cores >= unit),
            Proofs::V12 | Proofs::Damocles => u64::from(cores / unit),
        }
    }

    /// Whether PreCommit1 uses the huge pages the host reserves.
    pub fn uses_hugepages(self) -> bool {
        self == Proofs::Damocles
    }

    /// The spelling in `[capacity] proofs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proofs::Venus => "venus",
            Proofs::V12 => "v12",
            Proofs::Damocles => "damocles",
        }
    }
}

/// What the host has, as read by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResources {
    /// Memory available to sealing (MemTotal, less hugepages the proofs do
    /// not use).
    pub memory: u64,
    /// Free space of each seal path.
    pub seal_free: Vec<u64>,
    /// Cores (one thread each) of every L3 group the PreCommit1 services
    /// get (the whole host without a config).
    pub l3_group_cores: Vec<u32>,
    /// Cores one multicore-SDR unit needs in one L3 group.
    pub sdr_unit_cores: u32,
    pub proofs: Proofs,
    /// The host's services and their declared tasks (none without a
    /// config: then PreCommit1 alone is counted).
    pub services: Vec<memory::Service>,
    /// `[capacity] window_post_memory`.
    pub window_post: Option<u64>,
    /// `[capacity] other_hosts`: sealing sectors the sealer leaves to
    /// other hosts.
    pub other_hosts: u64,
}

/// Which resource limits the number of sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Memory,
    Disk,
    Cores,
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bound::Memory => "memory",
            Bound::Disk => "disk",
            Bound::Cores => "cores",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    pub profile: SectorProfile,
    pub proofs: Proofs,
    /// Memory every task but the PreCommit1 sectors takes, host-wide.
    pub other_tasks: ByteSize,
    /// Memory the recommended sectors and every other task take.
    pub host_budget: ByteSize,
    /// Per service: its tasks' memory and the `memory_max` to give it.
    pub budget: Vec<memory::ServiceBudget>,
    /// Sectors memory allows, unrounded (the plan's 7.125).
    pub by_memory_exact: f64,
    pub by_memory: u64,
    /// `None` when no seal path is known.
    pub by_disk: Option<u64>,
    pub by_cores: u64,
    pub binding: Bound,
    /// Sectors that fit: the least of the bounds.
    pub fit: u64,
    /// Sectors asked to be held back for safety (`[capacity] reserve`).
    pub reserve: u64,
    /// Sectors really held back: the reserve never takes the last one.
    pub held_back: u64,
    /// `MaxSealingSectors` for this host: what fits less the reserve, at
    /// least 1; `None` when nothing fits (never 0: venus-sealer reads 0 as
    /// no limit).
    pub recommended: Option<u64>,
    /// Seal disk the recommended number needs.
    pub seal_disk_needed: ByteSize,
    /// Sealing sectors the sealer leaves to other hosts.
    pub other_hosts: u64,
    /// `MaxSealingSectors` for the whole sealer: `recommended` here plus
    /// `other_hosts`.
    pub sealer_wide: Option<u64>,
}

/// Computes the plan. `reserve` sectors are held back from what fits.
pub fn compute(profile: SectorProfile, host: &HostResources, reserve: u64) -> Capacity {
    let mut budget = memory::other_tasks(&host.services, profile.sector_size.0, host.window_post);
    let other_tasks: u64 = budget.iter().map(|b| b.total.0).sum();
    let free_memory = host
        .memory
        .saturating_sub(profile.shared_cache.0)
        .saturating_sub(other_tasks);
    let per_mem = profile.per_sector_memory.0.max(1);
    // f64 is exact here for any real memory size (< 2^53 bytes).
    #[allow(clippy::cast_precision_loss)]
    let by_memory_exact = free_memory as f64 / per_mem as f64;
    let by_memory = free_memory / per_mem;
    let per_disk = profile.per_sector_disk.0.max(1);
    let by_disk = (!host.seal_free.is_empty())
        .then(|| host.seal_free.iter().map(|free| free / per_disk).sum());
    let unit = host.sdr_unit_cores.max(1);
    let by_cores = host
        .l3_group_cores
        .iter()
        .map(|&cores| host.proofs.runs_per_group(cores, unit))
        .sum();
    let mut bounds = vec![(by_memory, Bound::Memory), (by_cores, Bound::Cores)];
    if let Some(d) = by_disk {
        bounds.push((d, Bound::Disk));
    }
    // Ties go to the first listed: memory, then cores, then disk.
    let (fit, binding) = bounds
        .into_iter()
        .reduce(|best, b| if b.0 < best.0 { b } else { best })
        .unwrap_or((0, Bound::Memory));
    let recommended = (fit > 0).then(|| fit.saturating_sub(reserve).max(1));
    let sectors = recommended.unwrap_or(0);
    memory::finish(
        &mut budget,
        &host.services,
        sectors,
        profile.per_sector_memory.0,
        profile.shared_cache.0,
    );
    Capacity {
        profile,
        proofs: host.proofs,
        other_tasks: ByteSize(other_tasks),
        host_budget: ByteSize(
            profile
                .shared_cache
                .0
                .saturating_add(sectors.saturating_mul(profile.per_sector_memory.0))
                .saturating_add(other_tasks),
        ),
        budget,
        by_memory_exact,
        by_memory,
        by_disk,
        by_cores,
        binding,
        fit,
        reserve,
        held_back: fit - sectors.min(fit),
        recommended,
        seal_disk_needed: ByteSize(sectors.saturating_mul(profile.per_sector_disk.0)),
        other_hosts: host.other_hosts,
        sealer_wide: recommended.map(|n| n.saturating_add(host.other_hosts)),
    }
}

/// What `plan` says when not one sector fits.
pub fn nothing_fits(c: &Capacity) -> String {
    format!(
        "nothing fits: not one {} sector (bound by {}); do not set MaxSealingSectors = 0, venus-sealer reads 0 as no limit (storage-sealing/garbage.go); free {} or take tasks off this host",
        c.profile.sector_size, c.binding, c.binding
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIB: u64 = 1 << 40;

    fn host(memory: u64, seal_free: Vec<u64>, l3: Vec<u32>) -> HostResources {
        HostResources {
            memory,
            seal_free,
            l3_group_cores: l3,
            sdr_unit_cores: 4,
            proofs: Proofs::Venus,
            services: Vec::new(),
            window_post: None,
            other_hosts: 0,
        }
    }

    fn profile(gib: u64) -> SectorProfile {
        SectorProfile::default_for(ByteSize(gib * GIB)).unwrap()
    }

    #[test]
    fn the_deployment_plans_1_tib_host_with_64_gib_sectors() {
        // 128 cores in 16 L3 groups of 8; 10 TiB of seal disk.
        let c = compute(profile(64), &host(TIB, vec![10 * TIB], vec![8; 16]), 1);
        assert!((c.by_memory_exact - 7.125).abs() < 1e-9);
        assert_eq!(c.by_memory, 7);
        assert_eq!(c.by_disk, Some(10));
        // proofs 11.1.1: one SDR run per L3 group.
        assert_eq!(c.by_cores, 16);
        assert_eq!(
            (c.binding, c.fit, c.recommended),
            (Bound::Memory, 7, Some(6))
        );
        assert_eq!((c.reserve, c.held_back), (1, 1));
        assert_eq!(c.seal_disk_needed, ByteSize(6 * TIB));
        assert_eq!(c.host_budget, ByteSize((112 + 6 * 128) * GIB));
    }

    /// Host B of the deployment plan: worker01 PreCommit1 + PreCommit2 on
    /// the CPU (75 % of the cores), worker02 C2 on one GPU (25 %), 1 TiB,
    /// 64 GiB sectors. C2 takes 190 + 64 GiB (MaxMemory + the parameters'
    /// BaseMinMemory), PreCommit2 30 + 1 GiB: (1024 − 112 − 254 − 31) / 128
    /// = 4.9, so 4 fit and 3 are recommended, not the plan's 6.
    #[test]
    fn host_b_counts_c2_and_precommit2_before_the_sectors() {
        let mut h = host(TIB, vec![10 * TIB], vec![8; 12]);
        h.services = vec![
            memory::Service::worker("worker01", &["PreCommit1", "PreCommit2"]),
            memory::Service::worker("worker02", &["Commit"]),
        ];
        let c = compute(profile(64), &h, 1);
        assert_eq!(c.other_tasks, ByteSize(285 * GIB));
        assert!((c.by_memory_exact - 627.0 / 128.0).abs() < 1e-9);
        assert_eq!((c.by_memory, c.by_cores), (4, 12));
        assert_eq!(
            (c.binding, c.fit, c.recommended, c.held_back),
            (Bound::Memory, 4, Some(3), 1)
        );
        // 112 + 3 × 128 + 31 and 254: 781 GiB of the 1024.
        assert_eq!(c.budget[0].suggested_memory_max, Some(ByteSize(527 * GIB)));
        assert_eq!(c.budget[1].suggested_memory_max, Some(ByteSize(254 * GIB)));
        assert_eq!(c.host_budget, ByteSize(781 * GIB));
        // Host A's sealer seals for host B too: its MaxSealingSectors
        // counts both.
        h.other_hosts = 4;
        assert_eq!(compute(profile(64), &h, 1).sealer_wide, Some(7));
    }

    #[test]
    fn thirty_two_gib_sectors_on_the_same_host() {
        // (1024 − 56) / 64 = 15.125
        let c = compute(profile(32), &host(TIB, vec![10 * TIB], vec![8; 16]), 1);
        assert!((c.by_memory_exact - 15.125).abs() < 1e-9);
        assert_eq!(c.by_memory, 15);
        // 10 TiB / 520 GiB = 19.69
        assert_eq!(c.by_disk, Some(19));
        assert_eq!(
            (c.binding, c.fit, c.recommended),
            (Bound::Memory, 15, Some(14))
        );
        assert_eq!(c.seal_disk_needed, ByteSize(14 * 520 * GIB));
    }

    #[test]
    fn disk_binds_when_the_seal_paths_are_small() {
        // Two paths of 2.5 TiB: each holds 2 whole 64 GiB sectors.
        let c = compute(
            profile(64),
            &host(TIB, vec![5 * TIB / 2; 2], vec![8; 16]),
            1,
        );
        assert_eq!(
            (c.by_disk, c.binding, c.fit, c.recommended),
            (Some(4), Bound::Disk, 4, Some(3))
        );
    }

    #[test]
    fn cores_bind_by_the_proofs_versions_rule() {
        // Two L3 groups of 6 cores: one 4-core SDR unit each, either way.
        let c = compute(profile(64), &host(TIB, vec![], vec![6, 6]), 1);
        assert_eq!(
            (c.by_cores, c.by_disk, c.binding, c.fit),
            (2, None, Bound::Cores, 2)
        );
        assert_eq!((c.recommended, c.held_back), (Some(1), 1));
        // Groups of 8: proofs 11.1.1 runs one SDR per group, 12+ two.
        let mut h = host(TIB, vec![], vec![8, 8]);
        assert_eq!(compute(profile(64), &h, 1).by_cores, 2);
        h.proofs = Proofs::V12;
        assert_eq!(compute(profile(64), &h, 1).by_cores, 4);
        h.proofs = Proofs::Damocles;
        assert_eq!(compute(profile(64), &h, 1).by_cores, 4);
        // A group smaller than a unit runs no bound SDR in either.
        h.l3_group_cores = vec![3, 3];
        for proofs in [Proofs::Venus, Proofs::V12] {
            h.proofs = proofs;
            assert_eq!(compute(profile(64), &h, 1).by_cores, 0);
        }
    }

    #[test]
    fn too_little_memory_fits_nothing_and_recommends_nothing() {
        // 100 GiB is less than the 112 GiB shared cache alone.
        let c = compute(profile(64), &host(100 * GIB, vec![TIB], vec![8]), 1);
        assert_eq!(
            (c.by_memory, c.fit, c.recommended, c.held_back),
            (0, 0, None, 0)
        );
        assert_eq!(c.seal_disk_needed, ByteSize(0));
        // C2 alone takes what would have fitted one sector.
        let mut h = host(400 * GIB, vec![TIB], vec![8]);
        assert_eq!(compute(profile(64), &h, 1).recommended, Some(1));
        h.services = vec![memory::Service::worker("w", &["PreCommit1", "Commit"])];
        assert_eq!(compute(profile(64), &h, 1).recommended, None);
    }

    #[test]
    fn the_reserve_never_takes_the_last_sector() {
        // (360 − 112) / 128 = 1.9: one fits, one is recommended, none held back.
        let c = compute(profile(64), &host(360 * GIB, vec![TIB], vec![8]), 1);
        assert_eq!((c.fit, c.recommended, c.held_back), (1, Some(1), 0));
        let c = compute(profile(64), &host(TIB, vec![10 * TIB], vec![8; 16]), 3);
        assert_eq!((c.recommended, c.held_back), (Some(4), 3));
    }

    #[test]
    fn profiles_exist_for_every_known_size_and_only_those() {
        for s in SECTOR_SIZES {
            let size = ByteSize::parse(s).unwrap();
            let p = SectorProfile::default_for(size).unwrap();
            assert!(
                p.shared_cache.0 > 0
                    && p.per_sector_memory.0 > size.0
                    && p.per_sector_disk.0 > size.0
            );
        }
        assert!(SectorProfile::default_for(ByteSize(16 * GIB)).is_none());
    }
}
