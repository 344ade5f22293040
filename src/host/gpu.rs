//! NVIDIA GPUs the host has: discovery reads
//! `/proc/driver/nvidia/gpus/<bus id>/information` (one folder per GPU,
//! named by its PCI bus id; its model and `GPU UUID`) and the GPU's NUMA
//! node from `/sys/bus/pci/devices/<bus id>/numa_node`, else counts
//! `/dev/nvidiaN`, under the fs root; GPUs are numbered in PCI bus order,
//! which is CUDA's order once `CUDA_DEVICE_ORDER=PCI_BUS_ID` is set. No GPU
//! is a normal host. Which GPU each service gets is `plan::gpus`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::util::fsroot::FsRoot;
use crate::util::gpuid::{normalize_bus_id, normalize_uuid};

/// One folder per GPU, named by its PCI bus id.
pub const DRIVER_DIR: &str = "/proc/driver/nvidia/gpus";
/// Where the `nvidiaN` device nodes are.
pub const DEV_DIR: &str = "/dev";
/// `<bus id>/numa_node`: the NUMA node a PCI device is attached to.
pub const PCI_DIR: &str = "/sys/bus/pci/devices";

/// One GPU of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// Its CUDA index with `CUDA_DEVICE_ORDER=PCI_BUS_ID`: its place in
    /// PCI bus order.
    pub index: u32,
    /// `0000:01:00.0`, lower case.
    pub bus_id: Option<String>,
    pub model: Option<String>,
    pub uuid: Option<String>,
    /// The NUMA node it is attached to, when the host tells.
    pub numa: Option<u32>,
}

impl Gpu {
    /// A GPU known by its index only.
    pub fn numbered(index: u32) -> Self {
        Self {
            index,
            bus_id: None,
            model: None,
            uuid: None,
            numa: None,
        }
    }
}

impl fmt::Display for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.index)?;
        let about: Vec<&str> = [&self.bus_id, &self.model]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let node = self.numa.map(|n| format!("NUMA node {n}"));
        match (about.is_empty(), node) {
            (true, None) => Ok(()),
            (true, Some(node)) => write!(f, " ({node})"),
            (false, None) => write!(f, " ({})", about.join(" ")),
            (false, Some(node)) => write!(f, " ({}, {node})", about.join(" ")),
        }
    }
}

/// Where the host's GPUs were learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `/proc/driver/nvidia/gpus`.
    Driver,
    /// `/dev/nvidiaN` only: ordered by device number, which is bus order
    /// on most hosts but not guaranteed.
    DeviceNodes,
    /// `[host] gpus` in the config.
    Config,
    /// None found.
    #[default]
    None,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Driver => "the NVIDIA driver",
            Source::DeviceNodes => "/dev/nvidiaN",
            Source::Config => "[host] gpus",
            Source::None => "nothing",
        })
    }
}

/// The host's GPUs and where they were learned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub gpus: Vec<Gpu>,
    pub source: Source,
    /// Files that were there but could not be used.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Finds the NVIDIA GPUs of the host under `fs_root`.
pub fn discover(fs_root: &FsRoot) -> Discovery {
    let mut warnings = Vec::new();
    let driver = fs_root.path(DRIVER_DIR);
    let mut bus_ids: Vec<String> = entries(&driver)
        .into_iter()
        .filter_map(|name| normalize_bus_id(&name))
        .collect();
    bus_ids.sort();
    if !bus_ids.is_empty() {
        let gpus = bus_ids
            .into_iter()
            .zip(0..)
            .map(|(bus_id, index)| {
                let file = driver.join(&bus_id).join("information");
                let info = match fs::read_to_string(&file) {
                    Ok(text) => parse_information(&text),
                    Err(e) => {
                        warnings.push(format!("ignored {}: {e}", file.display()));
                        BTreeMap::new()
                    }
                };
                Gpu {
                    index,
                    model: info.get("Model").cloned(),
                    uuid: info.get("GPU UUID").and_then(|u| normalize_uuid(u)),
                    numa: numa_node(fs_root, &bus_id, &mut warnings),
                    bus_id: Some(bus_id),
                }
            })
            .collect();
        return Discovery {
            gpus,
            source: Source::Driver,
            warnings,
        };
    }
    let mut minors: Vec<u32> = entries(&fs_root.path(DEV_DIR))
        .iter()
        .filter_map(|name| name.strip_prefix("nvidia"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse().ok())
        .collect();
    minors.sort_unstable();
    let gpus: Vec<Gpu> = (0..).zip(&minors).map(|(i, _)| Gpu::numbered(i)).collect();
    Discovery {
        source: if gpus.is_empty() {
            Source::None
        } else {
            Source::DeviceNodes
        },
        gpus,
        warnings,
    }
}

/// The NUMA node of the PCI device `bus_id`: `None` when the host does not
/// tell (no file, or the kernel's `-1`); a file that cannot be read or
/// parsed is a warning.
fn numa_node(fs_root: &FsRoot, bus_id: &str, warnings: &mut Vec<String>) -> Option<u32> {
    let file = fs_root.path(PCI_DIR).join(bus_id).join("numa_node");
    match fs::read_to_string(&file) {
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(n) => u32::try_from(n).ok(),
            Err(_) => {
                warnings.push(format!(
                    "ignored {}: `{}` is not a number",
                    file.display(),
                    text.trim()
                ));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warnings.push(format!("ignored {}: {e}", file.display()));
            None
        }
    }
}

/// The names in a folder; none when it cannot be listed (no driver).
fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `Key: value` lines of the driver's `information` file.
fn parse_information(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// Writes a simulated NVIDIA GPU under `fs_root` as the driver shows it:
/// `/proc/driver/nvidia/gpus/<bus id>/information` (with the UUID of
/// [`simulated_uuid`]) and `/dev/nvidia<minor>` (tests only: the `testkit`
/// feature; no GPU is needed).
#[cfg(any(test, feature = "testkit"))]
pub fn simulate(fs_root: &FsRoot, bus_id: &str, minor: u32, model: &str) -> std::io::Result<()> {
    let dir = fs_root.path(DRIVER_DIR).join(bus_id);
    fs::create_dir_all(&dir)?;
    fs::write(
        dir.join("information"),
        format!(
            "Model: \t\t {model}\nIRQ:   \t\t 142\nGPU UUID: \t {}\nBus Type: \t PCIe\nBus Location: \t {bus_id}\nDevice Minor: \t {minor}\n",
            simulated_uuid(minor)
        ),
    )?;
    fs::create_dir_all(fs_root.path(DEV_DIR))?;
    fs::write(fs_root.path(DEV_DIR).join(format!("nvidia{minor}")), "")
}

/// The UUID [`simulate`] gives the GPU with device minor `minor`.
#[cfg(any(test, feature = "testkit"))]
pub fn simulated_uuid(minor: u32) -> String {
    format!("GPU-{minor:08x}-5e5e-4d1c-9a00-00000000c0de")
}

/// Writes the NUMA node of a simulated GPU as sysfs shows it.
#[cfg(any(test, feature = "testkit"))]
pub fn simulate_numa(fs_root: &FsRoot, bus_id: &str, node: i32) -> std::io::Result<()> {
    let dir = fs_root.path(PCI_DIR).join(bus_id);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("numa_node"), format!("{node}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_reads_the_driver_in_bus_order_else_device_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let root = FsRoot::new(dir.path());
        assert_eq!(discover(&root).source, Source::None);
        for minor in ["0", "1", "ctl", "-uvm"] {
            std::fs::create_dir_all(root.path(DEV_DIR)).unwrap();
            std::fs::write(root.path(format!("/dev/nvidia{minor}")), "").unwrap();
        }
        let found = discover(&root);
        assert_eq!((found.source, found.gpus.len()), (Source::DeviceNodes, 2));
        simulate(&root, "0000:41:00.0", 0, "NVIDIA GeForce RTX 3060 Ti B").unwrap();
        simulate(&root, "0000:01:00.0", 1, "NVIDIA GeForce RTX 3060 Ti A").unwrap();
        let found = discover(&root);
        assert_eq!(found.source, Source::Driver);
        assert_eq!(found.gpus[0].bus_id.as_deref(), Some("0000:01:00.0"));
        assert_eq!(found.gpus[0].uuid, Some(simulated_uuid(1)));
        assert_eq!(found.gpus[0].numa, None);
        simulate_numa(&root, "0000:41:00.0", 1).unwrap();
        simulate_numa(&root, "0000:01:00.0", -1).unwrap();
        let found = discover(&root);
        assert_eq!((found.gpus[0].numa, found.gpus[1].numa), (None, Some(1)));
        assert_eq!(
            found.gpus[1].to_string(),
            "1 (0000:41:00.0 NVIDIA GeForce RTX 3060 Ti B, NUMA node 1)"
        );
    }
}
