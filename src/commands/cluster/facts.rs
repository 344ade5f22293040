//! `check --cluster --facts DIR`: each host's hardware, read from what
//! `venussup topology --json` and `venussup plan --json` printed on it
//! (`DIR/HOST/topology.json`, `DIR/HOST/plan.json`), so the whole cluster
//! is checked on any machine.
//!
//! The topology feeds the same CPU planner `check` uses on the host: every
//! CPU with its core, L3 group and NUMA node, online or not. What the JSON
//! does not carry is not guessed: no GPUs (a service asking for one is
//! told the host has none, a warning), no cgroups (nothing is said about
//! confinement), no disks and no sealer `config.toml` (the Venus checks
//! that read them run in `check --config` on the host, not here: this
//! machine's disks would say nothing about the host's); programs and users
//! are looked up on this machine (a missing one is a warning).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::host::topology::{Cpu, Topology};
use crate::host::{gpu, lookups, Host};
use crate::util::cpulist::CpuSet;
use crate::util::fsroot::FsRoot;

/// One CPU as `venussup topology --json` prints it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCpu {
    cpu: u32,
    online: bool,
    package: Option<u32>,
    core: Option<u32>,
    siblings: Option<Vec<u32>>,
    l3: Option<Vec<u32>>,
    numa: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTopology {
    cpus: Vec<JsonCpu>,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The host described by `dir/topology.json`, or why it cannot be read.
pub fn host(dir: &Path) -> Result<Host, String> {
    let path = dir.join("topology.json");
    let doc: JsonTopology = serde_json::from_str(&read(&path)?).map_err(|e| {
        format!(
            "{} is not `venussup topology --json` output: {e}",
            path.display()
        )
    })?;
    let set = |cpus: Option<Vec<u32>>| cpus.map(|c| c.into_iter().collect::<CpuSet>());
    let cpus = doc
        .cpus
        .into_iter()
        .map(|c| Cpu {
            cpu: c.cpu,
            online: c.online,
            package: c.package,
            core: c.core,
            siblings: set(c.siblings),
            l3: set(c.l3),
            numa: c.numa,
            hotpluggable: c.cpu != 0,
        })
        .collect();
    let topology = Topology::new(cpus);
    Ok(Host {
        online_cpus: Some(topology.online()),
        topology: Some(topology),
        gpus: gpu::Discovery::default(),
        cgroups: None,
        own_env: BTreeMap::new(),
        fs_root: FsRoot::new(dir),
        lookups: Arc::new(lookups::System),
    })
}

/// `recommended` of `dir/plan.json`: the sectors the host seals at once
/// (`None` in the file when nothing fits: 0 here).
pub fn recommended(dir: &Path) -> Result<u64, String> {
    let path = dir.join("plan.json");
    let doc: serde_json::Value = serde_json::from_str(&read(&path)?)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    match doc.get("recommended") {
        Some(serde_json::Value::Null) => Ok(0),
        Some(n) => n
            .as_u64()
            .ok_or_else(|| format!("`recommended` of {} is not a number", path.display())),
        None => Err(format!(
            "{} has no `recommended`: it is not `venussup plan --json` output",
            path.display()
        )),
    }
}
