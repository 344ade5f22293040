//! The human view of a topology: a summary line, then the tree
//! package → NUMA node → L3 group → core and its threads.

use super::{describe_cores, Topology};
use crate::util::cpulist::CpuSet;

/// `"0"`, or `"?"` for what the host does not tell.
fn known(value: Option<u32>) -> String {
    value.map_or_else(|| "?".to_string(), |v| v.to_string())
}

/// The whole view, one line per tree node, ending with a newline.
pub fn render(topo: &Topology) -> String {
    let online = topo.online();
    let mut lines = vec![format!(
        "{} CPUs online ({online}) in {}",
        online.len(),
        describe_cores(topo.cores().len(), topo.threads_per_core()),
    )];
    for package in topo.tree() {
        lines.push(format!("package {}", known(package.package)));
        for node in package.nodes {
            lines.push(format!("  NUMA node {}", known(node.node)));
            for group in node.l3_groups {
                let l3 = group
                    .cpus
                    .as_ref()
                    .map_or_else(|| "?".to_string(), CpuSet::to_string);
                lines.push(format!("    L3 {l3}"));
                for core in group.cores {
                    lines.push(format!(
                        "      core {}: {}",
                        known(core.core_id),
                        core.threads
                    ));
                }
            }
        }
    }
    let offline = topo.offline();
    if !offline.is_empty() {
        lines.push(format!("offline: {offline}"));
    }
    lines.push(String::new());
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::topology::Cpu;

    #[test]
    fn renders_the_tree_with_unknowns_and_offline_cpus() {
        let set = |s: &str| Some(CpuSet::parse_list(s).unwrap());
        let cpu = |n: u32, siblings: &str| Cpu {
            package: Some(0),
            core: Some(n / 2),
            siblings: set(siblings),
            l3: set("0-3"),
            numa: Some(0),
            ..Cpu::online(n)
        };
        let topo = Topology::new(vec![
            cpu(0, "0-1"),
            cpu(1, "0-1"),
            cpu(2, "2-3"),
            Cpu::offline(3),
            Cpu::online(4),
        ]);
        assert_eq!(
            render(&topo),
            "4 CPUs online (0-2,4) in 3 cores, 1-2 threads per core\n\
             package 0\n  NUMA node 0\n    L3 0-2\n      core 0: 0-1\n      core 1: 2\n\
             package ?\n  NUMA node ?\n    L3 ?\n      core ?: 4\n\
             offline: 3\n"
        );
    }
}
