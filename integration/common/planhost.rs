//! The deployment plan's host, simulated under an fs root: CPUs of a
//! topology shape, a meminfo, and a real tmpfs as the seal path (its size
//! is the free space statvfs reports). `venussup plan` and `check
//! --cluster --facts` read it.
#![allow(clippy::unwrap_used)] // test support: a failure here is a test failure

use std::fs;
use std::path::Path;

use super::tmpfs::Tmpfs;
use venussup::host::topology::sim::{Shape, SimHost, Style};

/// A simulated host of `shape` with `memory_kib` of memory, its root in
/// /dev/shm when there is one; removed on drop.
pub fn host(memory_kib: u64, shape: &Shape) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    SimHost::regular(root.path(), shape, Style::MODERN).unwrap();
    fs::create_dir_all(root.path().join("proc")).unwrap();
    fs::write(
        root.path().join("proc/meminfo"),
        format!("MemTotal:       {memory_kib} kB\nMemFree:        1000 kB\n"),
    )
    .unwrap();
    root
}

/// The deployment plan's host: 1 TiB, 2 sockets × 64 cores (2 threads
/// each), L3 groups of 8 cores.
pub fn plan_host() -> tempfile::TempDir {
    host(1 << 30, &Shape::plan_host())
}

/// The plan's host with a 10 TiB seal path at /mnt/seal; the seal path is
/// unmounted first (bindings drop in reverse order).
pub fn plan_host_with_seal() -> (tempfile::TempDir, Tmpfs) {
    let root = plan_host();
    let seal = Tmpfs::mount(&root.path().join("mnt/seal"), "10T");
    (root, seal)
}
