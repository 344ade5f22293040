//! What the machine says, read-only, under the injectable filesystem root:
//! CPU topology, GPUs, memory and disk, the cgroup hierarchy.

pub mod cgroups;
pub mod gpu;
pub mod memory;
pub mod topology;
