//! The host's CPU topology: which CPUs exist and are online, which threads
//! share a core, an L3 cache, a NUMA node and a package.
//!
//! This file is the model and the pure logic over it (cores, the
//! package → NUMA node → L3 → core tree); [`read()`] builds a [`Topology`] from
//! sysfs, [`render`] prints the tree; `sim` (tests only: the `testkit`
//! feature) writes simulated sysfs trees.

pub mod read;
pub mod render;
#[cfg(any(test, feature = "testkit"))]
pub mod sim;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::util::cpulist::CpuSet;
use crate::util::fsroot::FsRoot;

pub use read::{read, TopologyError};

/// One `cpuN` folder of `/sys/devices/system/cpu`, as the JSON contract of
/// `venussup topology --json` shows it. `None` is a fact the host does not
/// tell (printed as `null`); an offline CPU has only `cpu` and `online`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cpu {
    pub cpu: u32,
    pub online: bool,
    /// `topology/physical_package_id`; `None` when absent or -1.
    pub package: Option<u32>,
    /// `topology/core_id`, unique within a package at best.
    pub core: Option<u32>,
    /// The online threads of this CPU's core, itself included.
    pub siblings: Option<CpuSet>,
    /// The online CPUs sharing this CPU's level-3 cache.
    pub l3: Option<CpuSet>,
    pub numa: Option<u32>,
    /// Whether `cpuN/online` exists, i.e. whether the CPU can be taken
    /// offline at all (cpu0 often cannot). Not part of the JSON contract.
    #[serde(skip)]
    pub hotpluggable: bool,
}

impl Cpu {
    /// An online CPU about which nothing else is known yet; hotpluggable
    /// unless it is cpu0, as on most hosts.
    pub fn online(cpu: u32) -> Self {
        Self {
            cpu,
            online: true,
            package: None,
            core: None,
            siblings: None,
            l3: None,
            numa: None,
            hotpluggable: cpu != 0,
        }
    }

    /// An offline CPU: all the kernel still tells is its number.
    pub fn offline(cpu: u32) -> Self {
        Self {
            online: false,
            hotpluggable: true,
            ..Self::online(cpu)
        }
    }

    /// The CPU that stands for this CPU's core: the lowest online thread of
    /// the core as this CPU's own `siblings` tell it (itself if unknown).
    fn core_leader(&self) -> u32 {
        self.siblings
            .as_ref()
            .and_then(CpuSet::first)
            .map_or(self.cpu, |first| first.min(self.cpu))
    }
}

/// Something read from the host that could not be used and was taken as
/// unknown: the topology is still usable, but the operator should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadWarning {
    pub path: PathBuf,
    pub problem: String,
}

impl fmt::Display for ReadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ignored {}: {}", self.path.display(), self.problem)
    }
}

/// Every CPU folder of the host, sorted by number. Serializes as the
/// `venussup topology --json` document: `{"cpus": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Topology {
    cpus: Vec<Cpu>,
    #[serde(skip)]
    warnings: Vec<ReadWarning>,
}

/// One core: the online threads that share it. Its `threads.first()` is the
/// thread `smt off` keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Core {
    pub threads: CpuSet,
    pub package: Option<u32>,
    pub core_id: Option<u32>,
    pub numa: Option<u32>,
    /// The online CPUs sharing this core's L3 cache.
    pub l3: Option<CpuSet>,
}

/// How many online threads the cores have: the same number on most hosts,
/// a range on hybrid CPUs where only some cores have SMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ThreadsPerCore {
    pub min: usize,
    pub max: usize,
}

/// `2`, or `1-2` on a hybrid CPU.
impl fmt::Display for ThreadsPerCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// `"8 cores, 2 threads per core"`, `"1 core, 1 thread per core"`,
/// `"14 cores, 1-2 threads per core"`.
pub fn describe_cores(cores: usize, threads: Option<ThreadsPerCore>) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let threads = threads.map_or_else(
        || "no threads".to_string(),
        |t| format!("{t} thread{} per core", plural(t.max)),
    );
    format!("{cores} core{}, {threads}", plural(cores))
}

/// The online cores of one package, grouped by NUMA node, then by L3 cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub package: Option<u32>,
    pub nodes: Vec<NumaNode>,
}

/// The cores of one NUMA node within one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    pub node: Option<u32>,
    pub l3_groups: Vec<L3Group>,
}

/// The cores of one NUMA node that share one L3 cache. `cpus` is the whole
/// cache's set (which may reach into another node); `cores` only those of
/// this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3Group {
    pub cpus: Option<CpuSet>,
    pub cores: Vec<Core>,
}

impl Topology {
    /// Builds the topology from CPUs as read: sorts them, keeps one entry
    /// per number, clears what an offline CPU cannot tell, limits `siblings`
    /// and `l3` to online CPUs and takes an empty set as unknown.
    pub fn new(mut cpus: Vec<Cpu>) -> Self {
        cpus.sort_by_key(|c| c.cpu);
        cpus.dedup_by_key(|c| c.cpu);
        let online: CpuSet = cpus.iter().filter(|c| c.online).map(|c| c.cpu).collect();
        let only_online = |set: Option<CpuSet>| {
            set.map(|s| s.intersection(&online))
                .filter(|s| !s.is_empty())
        };
        let cpus = cpus
            .into_iter()
            .map(|c| {
                if c.online {
                    Cpu {
                        siblings: only_online(c.siblings),
                        l3: only_online(c.l3),
                        ..c
                    }
                } else {
                    Cpu {
                        hotpluggable: c.hotpluggable,
                        ..Cpu::offline(c.cpu)
                    }
                }
            })
            .collect();
        Self {
            cpus,
            warnings: Vec::new(),
        }
    }

    /// Attaches what the reader had to ignore.
    pub fn with_warnings(mut self, warnings: Vec<ReadWarning>) -> Self {
        self.warnings = warnings;
        self
    }

    /// Every CPU folder, sorted by number.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus
    }

    pub fn cpu(&self, cpu: u32) -> Option<&Cpu> {
        self.cpus
            .binary_search_by_key(&cpu, |c| c.cpu)
            .ok()
            .map(|i| &self.cpus[i])
    }

    /// Files that were present but could not be used.
    pub fn warnings(&self) -> &[ReadWarning] {
        &self.warnings
    }

    pub fn online(&self) -> CpuSet {
        self.cpus
            .iter()
            .filter(|c| c.online)
            .map(|c| c.cpu)
            .collect()
    }

    pub fn offline(&self) -> CpuSet {
        self.cpus
            .iter()
            .filter(|c| !c.online)
            .map(|c| c.cpu)
            .collect()
    }

    /// The online cores, ordered by their lowest thread. A CPU belongs to
    /// the core of the lowest CPU among its own siblings, so every online
    /// CPU is in exactly one core even if sysfs contradicts itself.
    pub fn cores(&self) -> Vec<Core> {
        let mut by_leader: BTreeMap<u32, CpuSet> = BTreeMap::new();
        for cpu in self.cpus.iter().filter(|c| c.online) {
            by_leader
                .entry(cpu.core_leader())
                .or_default()
                .insert(cpu.cpu);
        }
        by_leader
            .into_values()
            .filter_map(|threads| {
                let first = self.cpu(threads.first()?)?;
                Some(Core {
                    package: first.package,
                    core_id: first.core,
                    numa: first.numa,
                    l3: first.l3.clone(),
                    threads,
                })
            })
            .collect()
    }

    /// The fewest and the most online threads a core has (1 and 2 on a
    /// hybrid CPU); `None` when no CPU is online.
    pub fn threads_per_core(&self) -> Option<ThreadsPerCore> {
        let cores = self.cores();
        Some(ThreadsPerCore {
            min: cores.iter().map(|c| c.threads.len()).min()?,
            max: cores.iter().map(|c| c.threads.len()).max()?,
        })
    }

    /// The online CPUs of each NUMA node the host tells; CPUs of unknown
    /// node are left out.
    pub fn numa_nodes(&self) -> BTreeMap<u32, CpuSet> {
        let mut nodes: BTreeMap<u32, CpuSet> = BTreeMap::new();
        for cpu in self.cpus.iter().filter(|c| c.online) {
            if let Some(node) = cpu.numa {
                nodes.entry(node).or_default().insert(cpu.cpu);
            }
        }
        nodes
    }

    /// The online cores as a tree: package → NUMA node → L3 group → core.
    /// Every level is ordered by the lowest CPU in it.
    pub fn tree(&self) -> Vec<Package> {
        let mut packages: Vec<Package> = Vec::new();
        for core in self.cores() {
            let package = find_or_push(
                &mut packages,
                |p| p.package == core.package,
                || Package {
                    package: core.package,
                    nodes: Vec::new(),
                },
            );
            let node = find_or_push(
                &mut package.nodes,
                |n| n.node == core.numa,
                || NumaNode {
                    node: core.numa,
                    l3_groups: Vec::new(),
                },
            );
            let group = find_or_push(
                &mut node.l3_groups,
                |g| g.cpus == core.l3,
                || L3Group {
                    cpus: core.l3.clone(),
                    cores: Vec::new(),
                },
            );
            group.cores.push(core);
        }
        packages
    }
}

/// The element of `items` that `matches`, or a new one made by `make`. Cores
/// arrive ordered by lowest thread, so first-seen order is lowest-CPU order.
fn find_or_push<T>(
    items: &mut Vec<T>,
    matches: impl Fn(&T) -> bool,
    make: impl FnOnce() -> T,
) -> &mut T {
    let index = match items.iter().position(matches) {
        Some(index) => index,
        None => {
            items.push(make());
            items.len() - 1
        }
    };
    &mut items[index]
}

/// The NUMA nodes under `fs_root`, in order; empty when the host has no
/// node folders.
pub fn numa_nodes(fs_root: &FsRoot) -> Vec<u32> {
    let mut nodes: Vec<u32> = std::fs::read_dir(fs_root.path(read::NODE_DIR))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("node")?
                .parse()
                .ok()
        })
        .collect();
    nodes.sort_unstable();
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &str) -> CpuSet {
        CpuSet::parse_list(list).unwrap()
    }

    /// An online CPU with the given package, siblings, L3 and node.
    fn cpu(n: u32, package: u32, siblings: &str, l3: &str, numa: u32) -> Cpu {
        Cpu {
            package: Some(package),
            core: Some(n % 4),
            siblings: Some(set(siblings)),
            l3: Some(set(l3)),
            numa: Some(numa),
            ..Cpu::online(n)
        }
    }

    #[test]
    fn offline_cpus_keep_only_their_number_and_leave_online_sets() {
        let topo = Topology::new(vec![
            cpu(1, 0, "0-1", "0-3", 0),
            Cpu {
                online: false,
                ..cpu(3, 0, "2-3", "0-3", 0)
            },
            cpu(0, 0, "0-1", "0-3", 0),
            cpu(2, 0, "2-3", "0-3", 0),
        ]);
        let numbers: Vec<u32> = topo.cpus().iter().map(|c| c.cpu).collect();
        assert_eq!(numbers, vec![0, 1, 2, 3]);
        assert_eq!(topo.cpu(3), Some(&Cpu::offline(3)));
        assert_eq!(topo.cpu(2).unwrap().siblings, Some(set("2")));
        assert_eq!(topo.cpu(0).unwrap().l3, Some(set("0-2")));
        assert_eq!(topo.online(), set("0-2"));
        assert_eq!(topo.offline(), set("3"));
    }

    #[test]
    fn an_empty_set_is_unknown() {
        let topo = Topology::new(vec![Cpu {
            l3: Some(CpuSet::new()),
            siblings: Some(set("5")),
            ..Cpu::online(0)
        }]);
        assert_eq!(topo.cpu(0).unwrap().l3, None);
        assert_eq!(topo.cpu(0).unwrap().siblings, None);
    }

    #[test]
    fn cores_group_threads_under_their_lowest_sibling() {
        let topo = Topology::new(vec![
            cpu(0, 0, "0,4", "0-7", 0),
            cpu(4, 0, "0,4", "0-7", 0),
            cpu(1, 0, "1,5", "0-7", 0),
            cpu(5, 0, "1,5", "0-7", 0),
            Cpu::online(9),
        ]);
        let cores: Vec<CpuSet> = topo.cores().into_iter().map(|c| c.threads).collect();
        assert_eq!(cores, vec![set("0,4"), set("1,5"), set("9")]);
        let threads = topo.threads_per_core().unwrap();
        assert_eq!((threads.min, threads.max), (1, 2));
        assert_eq!(threads.to_string(), "1-2");
        assert_eq!(
            describe_cores(3, Some(threads)),
            "3 cores, 1-2 threads per core"
        );
        let one = ThreadsPerCore { min: 1, max: 1 };
        assert_eq!(describe_cores(1, Some(one)), "1 core, 1 thread per core");
    }

    #[test]
    fn contradicting_siblings_still_put_each_cpu_in_one_core() {
        let topo = Topology::new(vec![cpu(0, 0, "0-1", "0-1", 0), cpu(1, 0, "1", "0-1", 0)]);
        let cores: Vec<CpuSet> = topo.cores().into_iter().map(|c| c.threads).collect();
        assert_eq!(cores, vec![set("0"), set("1")]);
    }

    #[test]
    fn tree_nests_package_node_l3_core_in_lowest_cpu_order() {
        // Two packages; package 0 has two nodes, the second with two L3s.
        let topo = Topology::new(vec![
            cpu(0, 0, "0", "0-1", 0),
            cpu(1, 0, "1", "0-1", 0),
            cpu(2, 0, "2", "2", 1),
            cpu(3, 0, "3", "3", 1),
            cpu(4, 1, "4", "4", 2),
        ]);
        let tree = topo.tree();
        assert_eq!(tree.len(), 2);
        assert_eq!(tree[0].package, Some(0));
        assert_eq!(tree[0].nodes.len(), 2);
        assert_eq!(tree[0].nodes[0].l3_groups.len(), 1);
        assert_eq!(tree[0].nodes[0].l3_groups[0].cores.len(), 2);
        assert_eq!(tree[0].nodes[1].node, Some(1));
        assert_eq!(tree[0].nodes[1].l3_groups.len(), 2);
        assert_eq!(tree[1].nodes[0].node, Some(2));
        assert_eq!(
            topo.numa_nodes().into_iter().collect::<Vec<_>>(),
            vec![(0, set("0-1")), (1, set("2-3")), (2, set("4"))]
        );
    }

    #[test]
    fn serializes_to_the_json_contract_with_nulls() {
        let topo = Topology::new(vec![
            cpu(0, 0, "0,8", "0,4,8,12", 0),
            cpu(4, 0, "4", "0,4,8,12", 0),
            cpu(8, 0, "0,8", "0,4,8,12", 0),
            cpu(12, 0, "12", "0,4,8,12", 0),
            Cpu::offline(13),
            Cpu::online(14),
        ]);
        let json = serde_json::to_value(&topo).unwrap();
        assert_eq!(
            json["cpus"][0],
            serde_json::json!({"cpu": 0, "online": true, "package": 0, "core": 0,
                "siblings": [0, 8], "l3": [0, 4, 8, 12], "numa": 0})
        );
        assert_eq!(
            json["cpus"][4],
            serde_json::json!({"cpu": 13, "online": false, "package": null, "core": null,
                "siblings": null, "l3": null, "numa": null})
        );
        assert_eq!(json["cpus"][5]["siblings"], serde_json::Value::Null);
        assert_eq!(json.as_object().unwrap().len(), 1);
    }
}
