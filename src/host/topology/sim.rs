//! Simulated hosts (tests only: the `testkit` feature): write a CPU
//! topology under a folder as a kernel would show it in sysfs, then read it
//! with `--fs-root`, or build the [`Topology`] it reads as in memory
//! ([`Shape::topology`]). Nothing here touches the real machine.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::read::{CPU_DIR, NODE_DIR};
use super::{Cpu, Topology};
use crate::util::cpulist::CpuSet;
use crate::util::fsroot::FsRoot;

/// Which files the simulated kernel writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// `thread_siblings_list`, `shared_cpu_list`, `node/nodeM/cpulist`.
    pub lists: bool,
    /// `thread_siblings`, `shared_cpu_map`, `node/nodeM/cpumap`.
    pub masks: bool,
    /// How many 32-bit words a mask has at least.
    pub mask_words: usize,
    /// The `cpuN/nodeM` links.
    pub node_links: bool,
}

impl Style {
    /// A current kernel: lists, masks and node links.
    pub const MODERN: Style = Style {
        lists: true,
        masks: true,
        mask_words: 1,
        node_links: true,
    };
    /// An old kernel (2.6 era): hex masks only, no node links.
    pub const MASKS_ONLY: Style = Style {
        lists: false,
        masks: true,
        mask_words: 1,
        node_links: false,
    };
}

/// One core to write: its threads and what they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCore {
    /// Written as is: -1 is the kernel's "unknown".
    pub package: i64,
    pub core_id: u32,
    pub threads: CpuSet,
    /// Every CPU of this core's L3 cache.
    pub l3: CpuSet,
    pub numa: Option<u32>,
}

/// How a regular host numbers the threads of its cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// A core's threads are consecutive: core 0 is CPUs 0-1 (siblings are
    /// printed as a range).
    Adjacent,
    /// First threads first: core 0 is CPUs 0 and N, N the number of cores
    /// (most Intel hosts).
    Spread,
}

/// A host whose packages are all alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub packages: u32,
    pub cores_per_package: u32,
    pub threads_per_core: u32,
    pub numbering: Numbering,
    /// L3 caches per NUMA node, each shared by an equal run of cores.
    pub l3_per_node: u32,
    pub nodes_per_package: u32,
}

impl Shape {
    /// The deployment plan's host: 2 sockets × 64 cores × 2 threads (the
    /// second threads numbered after all first ones), L3 groups of 8
    /// cores, one NUMA node per socket.
    pub fn plan_host() -> Self {
        Self {
            packages: 2,
            cores_per_package: 64,
            threads_per_core: 2,
            numbering: Numbering::Spread,
            l3_per_node: 8,
            nodes_per_package: 1,
        }
    }

    /// One package, one node, one L3.
    pub fn simple(cores: u32, threads_per_core: u32, numbering: Numbering) -> Self {
        Self {
            packages: 1,
            cores_per_package: cores,
            threads_per_core,
            numbering,
            l3_per_node: 1,
            nodes_per_package: 1,
        }
    }

    /// Every core of the host, ordered by package and core id.
    pub fn cores(&self) -> Vec<SimCore> {
        let total_cores = self.packages * self.cores_per_package;
        let cores_per_node = (self.cores_per_package / self.nodes_per_package.max(1)).max(1);
        let cores_per_l3 = (cores_per_node / self.l3_per_node.max(1)).max(1);
        let threads = |global_core: u32| -> CpuSet {
            (0..self.threads_per_core)
                .map(|t| match self.numbering {
                    Numbering::Adjacent => global_core * self.threads_per_core + t,
                    Numbering::Spread => t * total_cores + global_core,
                })
                .collect()
        };
        let l3_of = |global_core: u32| global_core / cores_per_l3;
        (0..total_cores)
            .map(|g| SimCore {
                package: i64::from(g / self.cores_per_package),
                core_id: g % self.cores_per_package,
                threads: threads(g),
                l3: (0..total_cores)
                    .filter(|&other| l3_of(other) == l3_of(g))
                    .flat_map(|other| threads(other).to_vec())
                    .collect(),
                numa: Some(g / cores_per_node),
            })
            .collect()
    }

    /// The topology a host of this shape reads as (every CPU online),
    /// built in memory: for tests that need a [`Topology`] and no files.
    pub fn topology(&self) -> Topology {
        let cpus = self
            .cores()
            .into_iter()
            .flat_map(|c| {
                c.threads
                    .iter()
                    .map(|t| Cpu {
                        package: u32::try_from(c.package).ok(),
                        core: Some(c.core_id),
                        siblings: Some(c.threads.clone()),
                        l3: Some(c.l3.clone()),
                        numa: c.numa,
                        ..Cpu::online(t)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Topology::new(cpus)
    }
}

/// A simulated host rooted at a folder.
#[derive(Debug)]
pub struct SimHost {
    root: PathBuf,
    nodes: BTreeMap<u32, CpuSet>,
}

impl SimHost {
    /// A host with no CPUs yet, under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            nodes: BTreeMap::new(),
        }
    }

    /// A host of `shape`, written in `style`.
    pub fn regular(root: impl Into<PathBuf>, shape: &Shape, style: Style) -> io::Result<Self> {
        let mut host = Self::new(root);
        for core in shape.cores() {
            host.add_core(&core, style)?;
        }
        Ok(host)
    }

    pub fn fs_root(&self) -> FsRoot {
        FsRoot::new(&self.root)
    }

    /// A host path (`/sys/devices/system/cpu/cpu1/online`) in this host.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        self.fs_root().path(host_path)
    }

    /// The folder of one CPU.
    pub fn cpu_dir(&self, cpu: u32) -> PathBuf {
        self.path(CPU_DIR).join(format!("cpu{cpu}"))
    }

    /// Writes `contents` to a host path, creating its folders.
    pub fn write(&self, host_path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
        write_file(&self.path(host_path), contents)
    }

    /// Removes a file or a whole folder at a host path.
    pub fn remove(&self, host_path: impl AsRef<Path>) -> io::Result<()> {
        let path = self.path(host_path);
        if path.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        }
    }

    /// Writes every thread of `core`: its `online` file (none for cpu0),
    /// `topology/`, private L1d, L1i and L2 caches, the shared L3, and its
    /// NUMA node.
    pub fn add_core(&mut self, core: &SimCore, style: Style) -> io::Result<()> {
        for cpu in core.threads.iter() {
            let dir = self.cpu_dir(cpu);
            if cpu != 0 {
                write_file(&dir.join("online"), "1\n")?;
            }
            let topology = dir.join("topology");
            write_file(
                &topology.join("physical_package_id"),
                format!("{}\n", core.package),
            )?;
            write_file(&topology.join("core_id"), format!("{}\n", core.core_id))?;
            write_set(
                &topology,
                "thread_siblings_list",
                "thread_siblings",
                &core.threads,
                style,
            )?;
            let caches = [
                (1, "Data", &core.threads),
                (1, "Instruction", &core.threads),
                (2, "Unified", &core.threads),
                (3, "Unified", &core.l3),
            ];
            for (index, (level, kind, shared)) in caches.into_iter().enumerate() {
                let cache = dir.join(format!("cache/index{index}"));
                write_file(&cache.join("level"), format!("{level}\n"))?;
                write_file(&cache.join("type"), format!("{kind}\n"))?;
                write_set(&cache, "shared_cpu_list", "shared_cpu_map", shared, style)?;
            }
            if let Some(node) = core.numa {
                self.add_to_node(cpu, node, style)?;
            }
        }
        Ok(())
    }

    fn add_to_node(&mut self, cpu: u32, node: u32, style: Style) -> io::Result<()> {
        let node_dir = self.path(NODE_DIR).join(format!("node{node}"));
        let cpus = self.nodes.entry(node).or_default();
        cpus.insert(cpu);
        write_set(&node_dir, "cpulist", "cpumap", cpus, style)?;
        if style.node_links {
            let link = self.cpu_dir(cpu).join(format!("node{node}"));
            if !link.exists() {
                symlink(format!("../../node/node{node}"), link)?;
            }
        }
        Ok(())
    }

    /// Shows a CPU offline as the kernel does: `online` reads 0, `topology/`
    /// and `cache/` are gone. Other CPUs' files still name it, as a stale
    /// snapshot would.
    pub fn set_offline(&self, cpu: u32) -> io::Result<()> {
        let dir = self.cpu_dir(cpu);
        write_file(&dir.join("online"), "0\n")?;
        for gone in ["topology", "cache"] {
            if dir.join(gone).exists() {
                fs::remove_dir_all(dir.join(gone))?;
            }
        }
        Ok(())
    }

    /// What `cpuN/online` reads now (`None` if it has none).
    pub fn online_file(&self, cpu: u32) -> Option<String> {
        fs::read_to_string(self.cpu_dir(cpu).join("online")).ok()
    }
}

fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, contents)
}

/// Writes a CPU set as a list file and/or a mask file, as `style` says.
fn write_set(dir: &Path, list: &str, mask: &str, set: &CpuSet, style: Style) -> io::Result<()> {
    if style.lists {
        write_file(&dir.join(list), format!("{set}\n"))?;
    }
    if style.masks {
        write_file(
            &dir.join(mask),
            format!("{}\n", set.to_mask(style.mask_words)),
        )?;
    }
    Ok(())
}

/// Copies a folder tree (a sysfs snapshot), keeping symbolic links as links.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            symlink(fs::read_link(&source)?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(shape: &Shape) -> Vec<String> {
        shape
            .cores()
            .iter()
            .map(|c| c.threads.to_string())
            .collect()
    }

    #[test]
    fn numbers_threads_adjacent_or_spread() {
        assert_eq!(
            threads(&Shape::simple(2, 2, Numbering::Adjacent)),
            vec!["0-1", "2-3"]
        );
        assert_eq!(
            threads(&Shape::simple(2, 2, Numbering::Spread)),
            vec!["0,2", "1,3"]
        );
    }

    #[test]
    fn splits_packages_into_nodes_and_l3_groups() {
        let shape = Shape {
            packages: 2,
            cores_per_package: 4,
            threads_per_core: 1,
            numbering: Numbering::Adjacent,
            l3_per_node: 2,
            nodes_per_package: 1,
        };
        let cores = shape.cores();
        assert_eq!(cores[5].package, 1);
        assert_eq!(cores[5].core_id, 1);
        assert_eq!(cores[5].numa, Some(1));
        assert_eq!(cores[5].l3.to_string(), "4-5");
    }
}
