//! Every call into the kernel that changes something: spawning children,
//! cgroupfs writes. Knows nothing of the config, the plan or the runtime:
//! its functions take plain values.

pub mod cgroup;
mod clone3;
pub mod spawn;
