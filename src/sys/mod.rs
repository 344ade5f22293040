//! Every call into the kernel that changes something: spawning children,
//! cgroupfs writes, replacing venussup's own program in place. Knows nothing of the config, the plan or the runtime:
//! its functions take plain values.

pub mod cgroup;
mod clone3;
pub mod connect;
pub mod folder;
pub mod reexec;
pub mod safefs;
pub mod spawn;
