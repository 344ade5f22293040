//! What the machine says, read-only, under the injectable filesystem root:
//! CPU topology, GPUs, memory and disk, the cgroup hierarchy, users and
//! files. [`Host`] gathers what the plan needs, so the plan reads nothing
//! itself.

pub mod cgroups;
pub mod gpu;
pub mod lookups;
pub mod memory;
pub mod topology;
pub mod users;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::util::cpulist::CpuSet;
use crate::util::fsroot::FsRoot;
use cgroups::Hierarchy;
pub use lookups::{FileKind, Lookups};
use topology::Topology;

/// What venussup learns from the host before planning: facts read once,
/// and [`Lookups`] for the files and names a config mentions.
#[derive(Debug, Clone)]
pub struct Host {
    /// CPUs online now; `None` when the host does not say.
    pub online_cpus: Option<CpuSet>,
    /// Cores, L3 groups and NUMA nodes; `None` when it cannot be read
    /// (then every online CPU counts as a core of one group).
    pub topology: Option<Topology>,
    /// The NVIDIA GPUs found.
    pub gpus: gpu::Discovery,
    /// The cgroup hierarchy services would be confined in; `None` when
    /// not probed (nothing is said about confinement then).
    pub cgroups: Option<Hierarchy>,
    /// venussup's own environment, for `pass_env`.
    pub own_env: BTreeMap<String, String>,
    /// Where the host's own files are (a sealer's `config.toml` is read
    /// under it; the config's files are not).
    pub fs_root: FsRoot,
    /// Files, programs, users and groups.
    pub lookups: Arc<dyn Lookups>,
}

impl Host {
    /// Reads what the plan needs under `fs_root` (nothing is written).
    pub fn probe(fs_root: &FsRoot) -> Self {
        let topology = topology::read(fs_root).ok();
        Self {
            online_cpus: topology.as_ref().map(Topology::online),
            topology,
            gpus: gpu::discover(fs_root),
            cgroups: Some(Hierarchy::detect(fs_root)),
            own_env: std::env::vars().collect(),
            fs_root: fs_root.clone(),
            lookups: Arc::new(lookups::System),
        }
    }

    /// A host that knows nothing but what `lookups` has: no CPUs, no GPUs,
    /// no cgroups, an empty environment, the live root. Tests fill in the
    /// facts they need.
    #[cfg(any(test, feature = "testkit"))]
    pub fn in_memory(lookups: lookups::InMemory) -> Self {
        Self {
            online_cpus: None,
            topology: None,
            gpus: gpu::Discovery::default(),
            cgroups: None,
            own_env: BTreeMap::new(),
            fs_root: FsRoot::live(),
            lookups: Arc::new(lookups),
        }
    }
}
