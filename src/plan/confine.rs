//! What holds each service to its CPUs and memory limit, decided from its
//! plan and the host's cgroup hierarchy alone; `runtime::confine` applies it.

use crate::config::Confine;
use crate::host::cgroups::Hierarchy;
use crate::plan::ServicePlan;
use crate::util::cpulist::CpuSet;

/// A memory limit on a host without a memory controller: the service would
/// run without its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{service}` has `limits.memory_max`, but this host has {hierarchy}, without a memory controller")]
pub struct NoMemory {
    pub service: String,
    pub hierarchy: String,
}

/// What holds one service, decided from its plan and the hierarchy alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The affinity mask, set in the child.
    pub affinity: Option<CpuSet>,
    /// `cpuset.cpus` of its cgroup.
    pub cpuset: Option<CpuSet>,
    /// `cpuset.mems`: the NUMA nodes of its CPUs; `None` to take the
    /// parent's (the host does not tell).
    pub mems: Option<CpuSet>,
    /// The memory limit in bytes.
    pub memory_max: Option<u64>,
    /// Why it is held less than it asks (no cpuset here).
    pub warning: Option<String>,
}

/// Affinity and cpuset as `confine` asks (default both); where the host has
/// no cpuset, affinity only and a warning. A memory limit without a memory
/// controller is an error: the service would run without its limit.
pub fn decide(hierarchy: &Hierarchy, plan: &ServicePlan) -> Result<Decision, NoMemory> {
    let memory_max = plan.limits.memory_max.map(|m| m.0);
    if memory_max.is_some() && !hierarchy.has_memory() {
        return Err(NoMemory {
            service: plan.name.clone(),
            hierarchy: hierarchy.to_string(),
        });
    }
    let mut d = Decision {
        affinity: None,
        cpuset: None,
        mems: None,
        memory_max,
        warning: None,
    };
    let Some(cpu) = &plan.cpus else {
        return Ok(d);
    };
    let Some(cpus) = &cpu.cpus else {
        return Ok(d);
    };
    let wants_cgroup = matches!(cpu.confine, Confine::Both | Confine::Cgroup);
    if wants_cgroup && hierarchy.has_cpuset() {
        d.cpuset = Some(cpus.clone());
        d.mems = cpu.span.as_ref().and_then(|s| s.numa.clone());
    } else if wants_cgroup && cpu.sdr_unit.is_some() {
        // Only multicore SDR (PreCommit1) escapes a mask: other services'
        // threads inherit it, so the mask holds them as a cpuset would.
        d.warning = Some(format!(
            "`{}` is held by its affinity mask only: this host has {hierarchy}; the proofs library's multicore-SDR threads (its PreCommit1) do not respect an affinity mask (lotus#5076)",
            plan.name
        ));
    } else if cpu.confine == Confine::Cgroup {
        d.warning = Some(format!(
            "`{}` is held by its affinity mask only: it asks `confine = \"cgroup\"`, but this host has {hierarchy}",
            plan.name
        ));
    }
    if matches!(cpu.confine, Confine::Both | Confine::Affinity)
        || (wants_cgroup && d.cpuset.is_none())
    {
        d.affinity = Some(cpus.clone());
    }
    Ok(d)
}
