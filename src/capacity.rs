//! The capacity plan: how many sectors a host can seal at once, by memory,
//! by seal disk and by cores, and which of them binds. Pure arithmetic over
//! numbers the caller read from the host.
//!
//! Memory decides first (the deployment plan: 64 GiB sectors take 112 GiB of
//! shared cache plus 128 GiB per sector, so 1 TiB gives (1024 − 112) / 128
//! = 7.125, 7 fit, 6 recommended). Cores are counted in multicore-SDR units
//! of `FIL_PROOFS_MULTICORE_SDR_PRODUCERS + 1` cores that must share one L3
//! cache, so a group's leftover cores count for nothing.

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

/// What the host has, as read by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResources {
    /// Memory available to sealing (MemTotal, less hugepages set aside).
    pub memory: u64,
    /// Free space of each seal path.
    pub seal_free: Vec<u64>,
    /// Cores (one thread each) of every L3 group usable for sealing.
    pub l3_group_cores: Vec<u32>,
    /// Cores one multicore-SDR unit needs in one L3 group.
    pub sdr_unit_cores: u32,
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
    /// Sectors memory allows, unrounded (the plan's 7.125).
    pub by_memory_exact: f64,
    pub by_memory: u64,
    /// `None` when no seal path is known.
    pub by_disk: Option<u64>,
    pub by_cores: u64,
    pub binding: Bound,
    /// Sectors that fit: the least of the bounds.
    pub fit: u64,
    /// Sectors held back for safety.
    pub reserve: u64,
    /// `MaxSealingSectors` to set: what fits less the reserve, at least 1
    /// when anything fits.
    pub recommended: u64,
    /// Seal disk the recommended number needs.
    pub seal_disk_needed: ByteSize,
}

/// Computes the plan. `reserve` sectors are held back from what fits.
pub fn compute(profile: SectorProfile, host: &HostResources, reserve: u64) -> Capacity {
    let free_memory = host.memory.saturating_sub(profile.shared_cache.0);
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
        .map(|&cores| u64::from(cores / unit))
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
    let recommended = if fit == 0 {
        0
    } else {
        fit.saturating_sub(reserve).max(1)
    };
    Capacity {
        profile,
        by_memory_exact,
        by_memory,
        by_disk,
        by_cores,
        binding,
        fit,
        reserve,
        recommended,
        seal_disk_needed: ByteSize(recommended * profile.per_sector_disk.0),
    }
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
        assert_eq!(c.by_cores, 32);
        assert_eq!((c.binding, c.fit, c.recommended), (Bound::Memory, 7, 6));
        assert_eq!(c.seal_disk_needed, ByteSize(6 * TIB));
    }

    #[test]
    fn thirty_two_gib_sectors_on_the_same_host() {
        // (1024 − 56) / 64 = 15.125
        let c = compute(profile(32), &host(TIB, vec![10 * TIB], vec![8; 16]), 1);
        assert!((c.by_memory_exact - 15.125).abs() < 1e-9);
        assert_eq!(c.by_memory, 15);
        // 10 TiB / 520 GiB = 19.69
        assert_eq!(c.by_disk, Some(19));
        assert_eq!((c.binding, c.fit, c.recommended), (Bound::Memory, 15, 14));
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
            (Some(4), Bound::Disk, 4, 3)
        );
    }

    #[test]
    fn cores_bind_and_leftover_cores_of_a_group_count_for_nothing() {
        // Two L3 groups of 6 cores: one 4-core SDR unit each.
        let c = compute(profile(64), &host(TIB, vec![], vec![6, 6]), 1);
        assert_eq!(
            (c.by_cores, c.by_disk, c.binding, c.fit),
            (2, None, Bound::Cores, 2)
        );
        assert_eq!(c.recommended, 1);
    }

    #[test]
    fn too_little_memory_fits_nothing() {
        // 100 GiB is less than the 112 GiB shared cache alone.
        let c = compute(profile(64), &host(100 * GIB, vec![TIB], vec![8]), 1);
        assert_eq!((c.by_memory, c.fit, c.recommended), (0, 0, 0));
        assert_eq!(c.seal_disk_needed, ByteSize(0));
    }

    #[test]
    fn the_reserve_never_takes_the_last_sector() {
        // (360 − 112) / 128 = 1.9: one fits, one is recommended.
        let c = compute(profile(64), &host(360 * GIB, vec![TIB], vec![8]), 1);
        assert_eq!((c.fit, c.recommended), (1, 1));
        let c = compute(profile(64), &host(TIB, vec![10 * TIB], vec![8; 16]), 3);
        assert_eq!(c.recommended, 4);
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
