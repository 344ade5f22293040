//! Reading the topology from `<fs-root>/sys/devices/system/cpu` and
//! `<fs-root>/sys/devices/system/node`.
//!
//! Real kernels and snapshots differ: `*_list` files or only the older hex
//! masks, padding with newlines or NUL bytes, no `online` file for cpu0,
//! offline CPUs without `topology/` and `cache/`, sparse numbering, package
//! -1, no `cpuN/nodeM` link. A missing file is an unknown fact; a file that
//! is present but unusable is an unknown fact plus a [`ReadWarning`]. Only a
//! CPU folder that cannot be listed is an error.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Cpu, ReadWarning, Topology};
use crate::util::cpulist::{trim_sysfs, CpuSet};
use crate::util::fsroot::FsRoot;

/// Where the kernel lists CPUs (a host path, mapped through [`FsRoot`]).
pub const CPU_DIR: &str = "/sys/devices/system/cpu";
/// Where the kernel lists NUMA nodes.
pub const NODE_DIR: &str = "/sys/devices/system/node";

/// Why no topology could be read at all.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("failed to list the CPUs in {}: {source}", path.display())]
    ListCpus {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How a CPU set file is written.
#[derive(Debug, Clone, Copy)]
enum Format {
    /// `0-3,8`
    List,
    /// `00000000,0000010f`
    Mask,
}

/// The files that tell a CPU's core siblings, preferred first. `core_cpus`
/// is the newer name of `thread_siblings`.
const SIBLING_FILES: [(&str, Format); 4] = [
    ("topology/thread_siblings_list", Format::List),
    ("topology/core_cpus_list", Format::List),
    ("topology/thread_siblings", Format::Mask),
    ("topology/core_cpus", Format::Mask),
];

/// The files of a cache (`cache/indexN/...`) that tell who shares it.
const SHARED_CPU_FILES: [(&str, Format); 2] = [
    ("shared_cpu_list", Format::List),
    ("shared_cpu_map", Format::Mask),
];

/// The files of a NUMA node (`node/nodeM/...`) that list its CPUs.
const NODE_CPU_FILES: [(&str, Format); 2] = [("cpulist", Format::List), ("cpumap", Format::Mask)];

/// Reads the topology of the host under `fs_root`.
pub fn read(fs_root: &FsRoot) -> Result<Topology, TopologyError> {
    let cpu_dir = fs_root.path(CPU_DIR);
    let numbers = numbered_entries(&cpu_dir, "cpu").map_err(|source| TopologyError::ListCpus {
        path: cpu_dir.clone(),
        source,
    })?;
    let mut reader = Reader::default();
    let listed_online = reader.cpu_set(&cpu_dir, &[("online", Format::List)]);
    let mut cpus: Vec<Cpu> = numbers
        .into_iter()
        .map(|n| reader.cpu(&cpu_dir.join(format!("cpu{n}")), n, listed_online.as_ref()))
        .collect();
    if cpus.iter().any(|c| c.online && c.numa.is_none()) {
        let nodes = reader.node_cpus(&fs_root.path(NODE_DIR));
        for cpu in cpus.iter_mut().filter(|c| c.online && c.numa.is_none()) {
            cpu.numa = nodes
                .iter()
                .find(|(_, set)| set.contains(cpu.cpu))
                .map(|(&node, _)| node);
        }
    }
    Ok(Topology::new(cpus).with_warnings(reader.warnings))
}

/// The numbers `N` of the entries named `<prefix>N` in `dir`, ascending.
fn numbered_entries(dir: &Path, prefix: &str) -> io::Result<Vec<u32>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = digits.parse() {
                numbers.push(n);
            }
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Reads files, turning what cannot be used into warnings.
#[derive(Debug, Default)]
struct Reader {
    warnings: Vec<ReadWarning>,
}

impl Reader {
    fn warn(&mut self, path: &Path, problem: impl ToString) {
        self.warnings.push(ReadWarning {
            path: path.to_path_buf(),
            problem: problem.to_string(),
        });
    }

    /// The trimmed text of a file; `None` if it does not exist or (with a
    /// warning) cannot be read.
    fn text(&mut self, path: &Path) -> Option<String> {
        match fs::read(path) {
            Ok(bytes) => Some(trim_sysfs(&String::from_utf8_lossy(&bytes)).to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.warn(path, e);
                None
            }
        }
    }

    /// A non-negative number; -1 (the kernel's "unknown") is `None`.
    fn number(&mut self, path: &Path) -> Option<u32> {
        let text = self.text(path)?;
        match text.parse::<i64>() {
            Ok(n) => u32::try_from(n).ok(),
            Err(_) => {
                self.warn(path, format!("`{text}` is not a number"));
                None
            }
        }
    }

    /// The first of `files` (relative to `dir`) that exists and parses.
    fn cpu_set(&mut self, dir: &Path, files: &[(&str, Format)]) -> Option<CpuSet> {
        for &(name, format) in files {
            let path = dir.join(name);
            let Some(text) = self.text(&path) else {
                continue;
            };
            let parsed = match format {
                Format::List => CpuSet::parse_list(&text),
                Format::Mask => CpuSet::parse_mask(&text),
            };
            match parsed {
                Ok(set) => return Some(set),
                Err(e) => self.warn(&path, e),
            }
        }
        None
    }

    /// One CPU folder.
    fn cpu(&mut self, dir: &Path, n: u32, listed_online: Option<&CpuSet>) -> Cpu {
        let (online, hotpluggable) = self.online_state(dir, n, listed_online);
        if !online {
            return Cpu {
                hotpluggable,
                ..Cpu::offline(n)
            };
        }
        Cpu {
            cpu: n,
            online,
            package: self.number(&dir.join("topology/physical_package_id")),
            core: self.number(&dir.join("topology/core_id")),
            siblings: self.cpu_set(dir, &SIBLING_FILES),
            l3: self.l3(&dir.join("cache")),
            numa: self.node_link(dir),
            hotpluggable,
        }
    }

    /// Whether the CPU is online, and whether it has an `online` file. No
    /// file: online (the kernel cannot take it offline). A file that is
    /// empty, unreadable or holds neither 0 nor 1: the `cpu/online` list
    /// decides, or without it whether `topology/` is there (the kernel
    /// removes it from offline CPUs).
    fn online_state(&mut self, dir: &Path, n: u32, listed_online: Option<&CpuSet>) -> (bool, bool) {
        let path = dir.join("online");
        match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (true, false),
            Ok(bytes) => match trim_sysfs(&String::from_utf8_lossy(&bytes)) {
                "1" => return (true, true),
                "0" => return (false, true),
                "" => self.warn(&path, "empty"),
                other => self.warn(&path, format!("`{other}` is neither 0 nor 1")),
            },
            Err(e) => self.warn(&path, e),
        }
        let online = match listed_online {
            Some(list) => list.contains(n),
            None => dir.join("topology").is_dir(),
        };
        (online, true)
    }

    /// The CPUs sharing the level-3 cache of type Unified or Data.
    fn l3(&mut self, cache_dir: &Path) -> Option<CpuSet> {
        let indexes = match numbered_entries(cache_dir, "index") {
            Ok(indexes) => indexes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.warn(cache_dir, e);
                return None;
            }
        };
        for index in indexes {
            let dir = cache_dir.join(format!("index{index}"));
            if self.text(&dir.join("level")).as_deref() != Some("3") {
                continue;
            }
            let kind = self.text(&dir.join("type"));
            if matches!(kind.as_deref(), Some("Unified" | "Data")) {
                return self.cpu_set(&dir, &SHARED_CPU_FILES);
            }
        }
        None
    }

    /// The node `M` of a `cpuN/nodeM` link.
    fn node_link(&mut self, dir: &Path) -> Option<u32> {
        match numbered_entries(dir, "node") {
            Ok(nodes) => nodes.first().copied(),
            Err(e) => {
                self.warn(dir, e);
                None
            }
        }
    }

    /// The CPUs of every NUMA node, from `node/nodeM/cpulist` or `cpumap`.
    fn node_cpus(&mut self, node_dir: &Path) -> BTreeMap<u32, CpuSet> {
        let nodes = match numbered_entries(node_dir, "node") {
            Ok(nodes) => nodes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.warn(node_dir, e);
                Vec::new()
            }
        };
        nodes
            .into_iter()
            .filter_map(|node| {
                let dir = node_dir.join(format!("node{node}"));
                Some((node, self.cpu_set(&dir, &NODE_CPU_FILES)?))
            })
            .collect()
    }
}
