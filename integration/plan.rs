//! `venussup plan` on simulated hosts: an fs root with a meminfo and a CPU
//! topology, and a real tmpfs mounted as the seal path (its size is the
//! free space statvfs reports), so every bound can be driven.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::planhost::{host, plan_host, plan_host_with_seal};
use common::tmpfs::Tmpfs;
use common::{project_file, venussup};
use venussup::host::topology::sim::{Numbering, Shape};

/// `venussup plan` of 64 GiB sectors on /mnt/seal under `root`.
fn plan_64_gib(root: &Path, json: bool) -> common::Outcome {
    let mut args = vec![
        "plan",
        "--fs-root",
        root.to_str().unwrap(),
        "--seal-path",
        "/mnt/seal",
        "--sector-size",
        "64GiB",
    ];
    if json {
        args.push("--json");
    }
    venussup(&args)
}

fn plan_json(root: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["plan", "--json", "--fs-root", root.to_str().unwrap()];
    all.extend(args);
    venussup(&all).expect_code(0).json()
}

#[test]
fn simulated_1_tib_128_core_host_64_gib_sectors_gives_the_plans_7_then_6() {
    let (root, _seal) = plan_host_with_seal();
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
    // The proofs venus-worker ships run one SDR per L3 group.
    assert_eq!(doc["proofs"], "venus");
    assert_eq!(doc["by_cores"], 16);
    assert_eq!(doc["binding"], "memory");
    assert_eq!(doc["fit"], 7);
    assert_eq!(doc["recommended"], 6);
    assert_eq!(doc["held_back"], 1);
    assert_eq!(doc["seal_disk_needed"], 6u64 << 40);

    let text = plan_64_gib(root.path(), false);
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
    let (root, _seal) = plan_host_with_seal();
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

/// Writes the sealer's `config.toml` under the simulated root and the
/// example (with `edits` applied) as the config; returns its path.
fn example_on(root: &Path, example: &str, edits: &[(&str, &str)], sealer: Option<&str>) -> PathBuf {
    if let Some(sealer) = sealer {
        let repo = root.join("var/lib/venus/sealer");
        fs::create_dir_all(&repo).unwrap();
        fs::write(repo.join("config.toml"), sealer).unwrap();
    }
    let mut text = fs::read_to_string(project_file(example)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{example} no longer has {from:?}");
        text = text.replacen(from, to, 1);
    }
    let cfg = root.join("venussup.toml");
    fs::write(&cfg, text).unwrap();
    cfg
}

/// Host A's example with `edits`, its sealer's config.toml saying
/// `MaxSealingSectors = max`.
fn host_a(root: &Path, edits: &[(&str, &str)], max: u64) -> PathBuf {
    let sealer = format!("[Sealing]\nMaxSealingSectors = {max}\n");
    example_on(root, "examples/host-a.toml", edits, Some(&sealer))
}

fn plan_config(root: &Path, cfg: &Path, json: bool) -> common::Outcome {
    let mut args = vec![
        "plan",
        "--config",
        cfg.to_str().unwrap(),
        "--fs-root",
        root.to_str().unwrap(),
    ];
    if json {
        args.push("--json");
    }
    venussup(&args)
}

/// Host A: the sealer (WindowPoSt, WinningPoSt) and a worker with
/// AddPiece, PreCommit1, PreCommit2, Unseal. AddPiece 8 + 1, PreCommit2
/// 30 + 1 and Unseal (PreCommit1's row) 128 GiB + 10 MiB come first:
/// (1024 − 112 − 168.01) / 128 = 5.8, 5 fit, 4 recommended.
#[test]
fn simulated_host_a_counts_every_task_and_checks_the_sealer_wide_limit() {
    let (root, _seal) = plan_host_with_seal();
    // This host alone first: host B's share taken out.
    let cfg = host_a(root.path(), &[("other_hosts = 3\n", "")], 20);
    let out = plan_config(root.path(), &cfg, false);
    out.expect_code(0);
    assert!(
        out.stdout.contains("/mnt/seal 10TiB free → 10"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("(1TiB − 112GiB − 168.0GiB of other tasks) / 128GiB = 5.812 → 5"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("MaxSealingSectors = 20 is above the capacity plan: it counts every sealing sector of the sealer on every host, and this host holds 4 (5 fit, bound by memory); if other hosts seal for this sealer, give their sectors in [capacity] other_hosts; set it to 4 (venussup plan)"),
        "{}",
        out.stderr
    );
    // No figure for WindowPoSt with 64 GiB sectors: said, not guessed.
    assert!(
        out.stderr
            .contains("WindowPoSt of `sealer` is not in the memory budget"),
        "{}",
        out.stderr
    );

    // Host B's 3 sectors seal for the same sealer.
    let cfg = host_a(
        root.path(),
        &[(
            "other_hosts = 3\n",
            "other_hosts = 3\nwindow_post_memory = \"200GiB\"\n",
        )],
        12,
    );
    let out = plan_config(root.path(), &cfg, false);
    out.expect_code(0);
    // (1024 − 112 − 368.01) / 128 = 4.25
    assert!(
        out.stdout.contains(
            "sealer-wide: 3 here + 3 on other hosts ([capacity] other_hosts) = MaxSealingSectors 6"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("MaxSealingSectors = 12 is above the capacity plan: it counts every sealing sector of the sealer on every host, and this host holds 3 (4 fit, bound by memory) + 3 on other hosts ([capacity] other_hosts) = 6; set it to 6"),
        "{}",
        out.stderr
    );
    let cfg = host_a(root.path(), &[], 7);
    let out = plan_config(root.path(), &cfg, false);
    assert!(!out.stderr.contains("MaxSealingSectors"), "{}", out.stderr);
}

/// Host B of the deployment plan on a simulated 1 TiB, 128-core host:
/// C2 (190 + 64 GiB) and PreCommit2 (30 + 1 GiB) leave (1024 − 112 − 285)
/// / 128 = 4.9 sectors: 4 fit, 3 recommended, and each worker is told the
/// `memory_max` its tasks need.
#[test]
fn simulated_host_b_fits_c2_and_suggests_each_workers_memory_max() {
    let (root, _seal) = plan_host_with_seal();
    let cfg = example_on(root.path(), "examples/host-b.toml", &[], None);
    let doc = plan_config(root.path(), &cfg, true).expect_code(0).json();
    assert_eq!(doc["other_tasks"], 285u64 << 30, "{doc}");
    assert_eq!(
        (
            doc["by_memory"].as_u64(),
            doc["fit"].as_u64(),
            doc["recommended"].as_u64()
        ),
        (Some(4), Some(4), Some(3))
    );
    // worker01's 75 %: 96 cores in 12 whole L3 groups, one SDR run each.
    assert_eq!(
        (doc["cores"].as_u64(), doc["by_cores"].as_u64()),
        (Some(96), Some(12))
    );
    let budget = doc["budget"].as_array().unwrap();
    assert_eq!(budget[0]["service"], "worker01");
    assert_eq!(budget[0]["suggested_memory_max"], 527u64 << 30);
    assert_eq!(budget[1]["service"], "worker02");
    assert_eq!(budget[1]["suggested_memory_max"], 254u64 << 30);
    assert_eq!(doc["host_budget"], 781u64 << 30);

    let out = plan_config(root.path(), &cfg, false);
    let text = &out.expect_code(0).stdout;
    for line in [
        "worker01  parent cache 1 × 112GiB, PreCommit1 3 × 128GiB, PreCommit2 1 × 31GiB = 527GiB → limits.memory_max = \"527GiB\"",
        "worker02  Commit 1 × 254GiB = 254GiB → limits.memory_max = \"254GiB\"",
        "MaxSealingSectors = 3 (1 held back), needing 3TiB of seal disk",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }

    // `check` reports the same plan, in text and in its JSON.
    let (out, doc) = common::check_on(root.path(), &fs::read_to_string(&cfg).unwrap());
    assert!(
        out.stdout.contains("MaxSealingSectors = 3 (1 held back)"),
        "{}",
        out.stdout
    );
    assert_eq!(doc["capacity"]["recommended"], 3, "{doc}");
    assert_eq!(
        doc["capacity"]["budget"][1]["suggested_memory_max"],
        254u64 << 30
    );
    // The example sets the suggested limits: nothing to say about them.
    assert!(
        !out.stderr.contains("set limits.memory_max"),
        "{}",
        out.stderr
    );

    // Without them both workers advertise the whole host: a warning each.
    let cfg = example_on(
        root.path(),
        "examples/host-b.toml",
        &[
            ("limits = { memory_max = \"527GiB\" }", "#"),
            (
                "limits = { memory_max = \"254GiB\" }",
                "limits = { memory_max = \"100GiB\" }",
            ),
        ],
        None,
    );
    let out = plan_config(root.path(), &cfg, false);
    assert!(out.stderr.contains("warning: `worker01` has no limits.memory_max, so venus-worker advertises the whole host's memory"), "{}", out.stderr);
    assert!(out.stderr.contains("error: `worker02` has limits.memory_max = \"100GiB\", below the 124GiB that Commit needs in physical memory"), "{}", out.stderr);
}

#[test]
fn simulated_small_host_fits_nothing_and_plan_fails_instead_of_advising_0() {
    let root = host(200 << 20, &Shape::plan_host());
    let _seal = Tmpfs::mount(&root.path().join("mnt/seal"), "10T");
    let out = plan_64_gib(root.path(), false);
    out.expect_code(1);
    assert!(out.stdout.contains("nothing fits: not one 64GiB sector (bound by memory); do not set MaxSealingSectors = 0"), "{}", out.stdout);
    assert!(!out.stdout.contains("recommended"), "{}", out.stdout);
    let json = plan_64_gib(root.path(), true);
    json.expect_code(1);
    assert_eq!(json.json()["recommended"], serde_json::Value::Null);
}

#[test]
fn simulated_one_sector_host_holds_nothing_back_and_says_none() {
    // (360 − 112) / 128 = 1.9: the reserve does not take the only sector.
    let root = host(360 << 20, &Shape::plan_host());
    let _seal = Tmpfs::mount(&root.path().join("mnt/seal"), "10T");
    let out = plan_64_gib(root.path(), false);
    out.expect_code(0);
    assert!(
        out.stdout.contains("MaxSealingSectors = 1, needing 1TiB"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("held back"), "{}", out.stdout);
}

#[test]
fn simulated_max_sealing_sectors_0_is_an_error_with_the_number_to_set() {
    let (root, _seal) = plan_host_with_seal();
    let cfg = host_a(root.path(), &[], 0);
    let (out, doc) = common::check_on(root.path(), &fs::read_to_string(&cfg).unwrap());
    out.expect_code(1);
    assert!(
        out.stderr.contains("error: ") && out.stderr.contains("[Sealing] MaxSealingSectors = 0 means no limit: venus-sealer checks the limit only when it is above 0, so pledges never stop and memory and seal disk run out; set it to 7 (venussup plan)"),
        "{}",
        out.stderr
    );
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["capacity"]["recommended"], 4);
}

/// Huge pages count only for the proofs that read them: damocles' fork.
#[test]
fn simulated_hugepages_take_memory_unless_the_proofs_use_them() {
    let (root, _seal) = plan_host_with_seal();
    // 100 pages of 1 GiB on each of the 2 nodes: 200 GiB.
    let prepare = "[host.prepare]\nhugepages = { size = \"1GiB\", per_node = 100 }\n\n[capacity]\n";
    let stock = example_on(
        root.path(),
        "examples/host-b.toml",
        &[("[capacity]\n", prepare)],
        None,
    );
    let out = plan_config(root.path(), &stock, false);
    // (824 − 112 − 285) / 128 = 3.3
    assert!(
        out.stdout
            .contains("824GiB → (824GiB − 112GiB − 285GiB of other tasks) / 128GiB = 3.336 → 3"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("warning: [host.prepare] reserves 200GiB of huge pages, but only damocles' fork of the proofs reads them"), "{}", out.stderr);
    let damocles = example_on(
        root.path(),
        "examples/host-b.toml",
        &[("[capacity]\n", &format!("{prepare}proofs = \"damocles\"\n"))],
        None,
    );
    let out = plan_config(root.path(), &damocles, true);
    let doc = out.json();
    assert_eq!(
        (doc["by_memory"].as_u64(), doc["proofs"].as_str()),
        (Some(4), Some("damocles"))
    );
    // damocles runs two 4-core SDR units per 8-core L3 group.
    assert_eq!(doc["by_cores"], 24);
    assert!(!out.stderr.contains("huge pages"), "{}", out.stderr);
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
