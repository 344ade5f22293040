//! GPU discovery over a fake root: each input writes the NVIDIA driver's
//! folders and `information` file, the PCI device's `numa_node` and the
//! `/dev/nvidiaN` names into a temporary folder (made once, emptied per
//! input), and `host::gpu::discover` reads them.
//!
//! An input is four parts split at 0xff: driver folder names (one a
//! line, at most 4), the `information` text each gets, the `numa_node`
//! text, and names under `/dev` (one a line, at most 4).
#![no_main]

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use venussup::host::gpu::{self, Source, DEV_DIR, DRIVER_DIR, PCI_DIR};
use venussup::util::fsroot::FsRoot;

/// Up to 4 names, one a line, that can be file names (at most NAME_MAX,
/// 255 bytes, long).
fn names(part: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(part)
        .lines()
        .filter(|n| !n.is_empty() && n.len() <= 255 && *n != "." && *n != "..")
        .filter(|n| !n.contains(['/', '\0']))
        .take(4)
        .map(str::to_string)
        .collect()
}

fn fresh(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot empty {}: {e}", dir.display()),
    }
    fs::create_dir_all(dir).expect("the fake root is writable");
}

fuzz_target!(|data: &[u8]| {
    static ROOT: OnceLock<(tempfile::TempDir, FsRoot)> = OnceLock::new();
    let (_, fs_root) = ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let fs_root = FsRoot::new(dir.path());
        (dir, fs_root)
    });
    let [buses, information, numa, devices] = venussup_fuzz::parts(data, 4)[..] else {
        unreachable!("parts gives 4 parts");
    };
    let (driver, pci, dev) = (
        fs_root.path(DRIVER_DIR),
        fs_root.path(PCI_DIR),
        fs_root.path(DEV_DIR),
    );
    for dir in [&driver, &pci, &dev] {
        fresh(dir);
    }
    let buses = names(buses);
    for bus in &buses {
        fs::create_dir_all(driver.join(bus)).expect("the fake root is writable");
        fs::write(driver.join(bus).join("information"), information).expect("writable");
        fs::create_dir_all(pci.join(bus)).expect("the fake root is writable");
        fs::write(pci.join(bus).join("numa_node"), numa).expect("writable");
    }
    for name in names(devices) {
        fs::write(dev.join(name), b"").expect("the fake root is writable");
    }

    let found = gpu::discover(fs_root);
    for (i, g) in found.gpus.iter().enumerate() {
        assert_eq!(
            usize::try_from(g.index).ok(),
            Some(i),
            "GPUs are numbered in order"
        );
        if let Some(uuid) = &g.uuid {
            assert!(uuid.starts_with("GPU-"), "{uuid}");
        }
        std::hint::black_box(g.to_string());
    }
    match found.source {
        Source::Driver => assert!(found.gpus.iter().all(|g| g.bus_id.is_some())),
        Source::DeviceNodes | Source::Config => assert!(!found.gpus.is_empty()),
        Source::None => assert!(found.gpus.is_empty()),
    }
    assert!(found.gpus.len() <= 4);
});
