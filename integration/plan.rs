//! `venussup plan` on simulated hosts: an fs root with a meminfo and a CPU
//! topology, and a real tmpfs mounted as the seal path (its size is the
//! free space statvfs reports), so every bound can be driven.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::path::Path;

use common::tmpfs::Tmpfs;
use common::{project_file, venussup};
use venussup::host::topology::sim::{Numbering, Shape, SimHost, Style};

/// A tmpfs mounted for the test's life; unmounted on drop, even on panic.
fn host(memory_kib: u64, shape: &Shape) -> tempfile::TempDir {
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
fn plan_host() -> tempfile::TempDir {
    host(1 << 30, &Shape::plan_host())
}

fn plan_json(root: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["plan", "--json", "--fs-root", root.to_str().unwrap()];
    all.extend(args);
    venussup(&all).expect_code(0).json()
}

#[test]
fn simulated_1_tib_128_core_host_64_gib_sectors_gives_the_plans_7_then_6() {
    let root = plan_host();
    let _seal = Tmpfs::mount(&root.path().join("mnt/seal"), "10T");
    let doc = plan_json(
        root.path(),
        &["--seal-path", "/mnt/seal", "--sector-size", "64GiB"],
    );
    assert!(
        (doc["by_memory_exact"].as_f64().unwrap() - 7.125).abs() < 1e-9,
        "{doc}"
    );
    assert_eq!(doc["by_memory"], 7);
    assert_eq!(doc["by_disk"], 10);
    assert_eq!(doc["cores"], 128);
    assert_eq!(doc["l3_groups"].as_array().unwrap().len(), 16);
    assert_eq!(doc["by_cores"], 32);
    assert_eq!(doc["binding"], "memory");
    assert_eq!(doc["fit"], 7);
    assert_eq!(doc["recommended"], 6);
    assert_eq!(doc["seal_disk_needed"], 6u64 << 40);

    let text = venussup(&[
        "plan",
        "--fs-root",
        root.path().to_str().unwrap(),
        "--seal-path",
        "/mnt/seal",
        "--sector-size",
        "64GiB",
    ]);
    let out = &text.expect_code(0).stdout;
    assert!(
        out.contains("(1TiB − 112GiB) / 128GiB = 7.125 → 7"),
        "{out}"
    );
    assert!(
        out.contains("MaxSealingSectors = 6 (1 held back), needing 6TiB of seal disk"),
        "{out}"
    );
}

#[test]
fn simulated_1_tib_host_32_gib_sectors() {
    let root = plan_host();
    let _seal = Tmpfs::mount(&root.path().join("mnt/seal"), "10T");
    let doc = plan_json(
        root.path(),
        &["--seal-path", "/mnt/seal", "--sector-size", "32GiB"],
    );
    // (1024 − 56) / 64 = 15.125; 10 TiB / 520 GiB = 19.7
    assert_eq!(
        (doc["by_memory"].as_u64(), doc["by_disk"].as_u64()),
        (Some(15), Some(19))
    );
    assert_eq!(
        (doc["fit"].as_u64(), doc["recommended"].as_u64()),
        (Some(15), Some(14))
    );
}

#[test]
fn simulated_small_seal_disk_binds() {
    let root = plan_host();
    let _seal = Tmpfs::mount(&root.path().join("mnt/seal"), "3T");
    let doc = plan_json(
        root.path(),
        &["--seal-path", "/mnt/seal", "--sector-size", "64GiB"],
    );
    assert_eq!(doc["binding"], "disk");
    assert_eq!(
        (doc["fit"].as_u64(), doc["recommended"].as_u64()),
        (Some(3), Some(2))
    );
}

#[test]
fn simulated_few_cores_in_odd_l3_groups_bind() {
    // 2 L3 groups of 6 cores: one 4-core multicore-SDR unit each.
    let shape = Shape {
        l3_per_node: 2,
        ..Shape::simple(12, 1, Numbering::Adjacent)
    };
    let root = host(1 << 30, &shape);
    let _seal = Tmpfs::mount(&root.path().join("mnt/seal"), "10T");
    let doc = plan_json(
        root.path(),
        &["--seal-path", "/mnt/seal", "--sector-size", "64GiB"],
    );
    assert_eq!(doc["l3_groups"], serde_json::json!([6, 6]));
    assert_eq!(
        (doc["by_cores"].as_u64(), doc["binding"].as_str()),
        (Some(2), Some("cores"))
    );
}

#[test]
fn with_a_config_seal_paths_come_from_storage_attach_and_the_sealer_is_checked() {
    let root = plan_host();
    let _seal = Tmpfs::mount(&root.path().join("mnt/seal"), "10T");
    let repo = root.path().join("var/lib/venus/sealer");
    fs::create_dir_all(&repo).unwrap();
    fs::write(
        repo.join("config.toml"),
        "[Sealing]\nMaxSealingSectors = 20\n",
    )
    .unwrap();
    let cfg = root.path().join("venussup.toml");
    // Host A's example carries the plan's `[capacity]` (64 GiB sectors).
    let text = fs::read_to_string(project_file("examples/host-a.toml")).unwrap();
    fs::write(&cfg, text).unwrap();
    let out = venussup(&[
        "plan",
        "--config",
        cfg.to_str().unwrap(),
        "--fs-root",
        root.path().to_str().unwrap(),
    ]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("/mnt/seal 10TiB free → 10"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("MaxSealingSectors = 20 is above the capacity plan (7 fit, bound by memory, 6 recommended); set it to 6"),
        "{}",
        out.stderr
    );
}

#[test]
fn without_a_seal_path_or_config_it_says_what_to_give() {
    let out = venussup(&["plan"]);
    out.expect_code(2);
    assert!(out.stderr.contains("--seal-path"), "{}", out.stderr);
    venussup(&["plan", "--seal-path", "/", "--sector-size", "5 GB please"]).expect_code(2);
}

#[test]
fn a_missing_seal_path_is_named() {
    let root = plan_host();
    let out = venussup(&[
        "plan",
        "--fs-root",
        root.path().to_str().unwrap(),
        "--seal-path",
        "/mnt/nvme9",
    ]);
    out.expect_code(1);
    assert!(out.stderr.contains("mnt/nvme9"), "{}", out.stderr);
}
