//! What the machine says, read-only, under the injectable filesystem root:
//! CPU topology, GPUs, memory and disk, the cgroup hierarchy; users and
//! groups by name.

pub mod cgroups;
pub mod gpu;
pub mod memory;
pub mod topology;
pub mod users;
