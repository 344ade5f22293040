//! `venussup check` places every service's CPUs on simulated hosts
//! (sysfs trees under `--fs-root`, written to /dev/shm: thousands of small
//! files are slow on this VM's disk), and says what is wrong at its line.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::path::Path;

use common::{project_file, venussup, Outcome};
use venussup::host::topology::sim::{Numbering, Shape, SimHost, Style};
use venussup::sys::cgroup::sim::SimCgroups;
use venussup::util::fsroot::FsRoot;

/// A simulated host of `shape` with cgroup v1 (as this VM has), and one
/// simulated GPU when `gpu`.
fn host(shape: &Shape, gpu: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let host = SimHost::regular(dir.path(), shape, Style::MODERN).unwrap();
    let root = host.fs_root();
    let cpus = shape.packages * shape.cores_per_package * shape.threads_per_core;
    SimCgroups::v1(&root, &format!("0-{}", cpus - 1), "0-1").unwrap();
    if gpu {
        venussup::host::gpu::simulate(&root, "0000:01:00.0", 0, "NVIDIA GeForce RTX 3060 Ti")
            .unwrap();
    }
    dir
}

/// One package, one NUMA node, `cores` cores in `groups` equal L3 groups.
fn l3_host(cores: u32, groups: u32) -> tempfile::TempDir {
    let shape = Shape {
        l3_per_node: groups,
        ..Shape::simple(cores, 1, Numbering::Adjacent)
    };
    host(&shape, false)
}

fn check(root: &Path, config: &Path, json: bool) -> Outcome {
    let mut args = vec![
        "check",
        "--fs-root",
        root.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    if json {
        args.push("--json");
    }
    venussup(&args)
}

/// Writes `text` as the config in `root` and checks it there.
fn check_text(root: &Path, text: &str) -> Outcome {
    let path = root.join("venussup.toml");
    fs::write(&path, text).unwrap();
    check(root, &path, false)
}

fn assert_has(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "missing {n:?} in:\n{text}");
    }
}

fn assert_diag(out: &Outcome, at: &str, severity: &str, needle: &str) {
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(&format!("{at}: {severity}: ")) && l.contains(needle)),
        "no {severity} at {at} containing {needle:?} in:\n{}",
        out.stderr
    );
}

fn cpus_of(doc: &serde_json::Value, service: usize) -> Vec<u64> {
    doc["plan"]["services"][service]["cpus"]["cpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[test]
fn simulated_2x64_cores_8_core_l3_host_b_75_25() {
    let root = host(&Shape::plan_host(), true);
    let cfg = project_file("examples/host-b.toml");
    let out = check(root.path(), &cfg, false);
    out.expect_code(0);
    assert_has(
        &out.stdout,
        &[
            "usable CPUs 0-127 (128 whole cores for shares)",
            "GPUs 0 (0000:01:00.0 NVIDIA GeForce RTX 3060 Ti), from the NVIDIA driver",
            "cpus     0-95 · 96 cores · request 75% · confine both",
            "         L3 groups 0-11 (12 whole groups of 8 cores) · NUMA nodes 0-1",
            "cpus     96-127 · 32 cores · request 25% · confine both",
            "         L3 groups 12-15 (4 whole groups of 8 cores) · NUMA node 1",
            "gpus     none · request none · asks for none",
            "gpus     0 · request auto · auto: Commit, taker 1 of 1, a GPU of its own",
        ],
    );
    // worker01 is 96 cores: more than one node has, so it spans both (a
    // note, not a warning); its cores are whole L3 groups, so no warning.
    assert_diag(
        &out,
        "host-b.toml:31:8",
        "note",
        "span NUMA nodes 0-1 because one node has 64",
    );
    assert!(!out.stderr.contains("uneven"), "{}", out.stderr);

    let doc = check(root.path(), &cfg, true).expect_code(0).json();
    let (w1, w2) = (cpus_of(&doc, 0), cpus_of(&doc, 1));
    assert_eq!((w1.len(), w2.len()), (96, 32));
    assert_eq!(w1.len(), 3 * w2.len());
    assert!(w1.iter().all(|c| !w2.contains(c)));
    let services = &doc["plan"]["services"];
    assert_eq!(services[0]["cpus"]["numa"], serde_json::json!([0, 1]));
    assert_eq!(
        services[1]["cpus"]["l3"][0],
        serde_json::json!({"group": 12, "cores": 8, "of": 8})
    );
    assert_eq!(services[1]["gpus"]["devices"], serde_json::json!([0]));
    assert_eq!(services[1]["env"]["CUDA_VISIBLE_DEVICES"], "0");
    assert_eq!(services[1]["env"]["CUDA_DEVICE_ORDER"], "PCI_BUS_ID");
    assert!(services[1]["env"]["BELLMAN_NO_GPU"].is_null());
    assert_eq!(services[0]["env"]["CUDA_VISIBLE_DEVICES"], "");
    assert_eq!(services[0]["env"]["BELLMAN_NO_GPU"], "1");
}

#[test]
fn simulated_2x64_with_smt_kept_gives_whole_cores_with_both_threads() {
    let root = host(&Shape::plan_host(), true);
    let text = fs::read_to_string(project_file("examples/host-b.toml"))
        .unwrap()
        .replace("smt = \"off\"", "smt = \"keep\"");
    let out = check_text(root.path(), &text);
    out.expect_code(0);
    assert_has(
        &out.stdout,
        &[
            "cpus     0-95,128-223 · 96 cores · request 75%",
            "cpus     96-127,224-255 · 32 cores · request 25%",
        ],
    );
}

#[test]
fn simulated_2_cpu_vm_host_b_gives_one_core_each() {
    let root = host(&Shape::simple(2, 1, Numbering::Adjacent), false);
    let out = check(root.path(), &project_file("examples/host-b.toml"), false);
    out.expect_code(0);
    assert_has(
        &out.stdout,
        &[
            "cpus     0 · 1 core · request 75%",
            "cpus     1 · 1 core · request 25%",
            "L3 group 0 (1 of 2 cores) · NUMA node 0",
        ],
    );
    assert_diag(
        &out,
        "host-b.toml:31:8",
        "warning",
        "only 1 core per L3 group, fewer than one SDR unit (4",
    );
    assert_diag(
        &out,
        "host-b.toml:58:8",
        "warning",
        "`worker02` asks for a GPU (Commit), but this host has none",
    );
}

#[test]
fn this_vm_host_b_is_a_sensible_split_or_a_clear_error() {
    let cfg = project_file("examples/host-b.toml");
    let out = venussup(&["check", "--json", "--config", cfg.to_str().unwrap()]);
    let doc = out.json();
    if doc["valid"] == true {
        let (w1, w2) = (cpus_of(&doc, 0), cpus_of(&doc, 1));
        assert!(!w1.is_empty() && !w2.is_empty() && w1.len() >= w2.len());
        assert!(w1.iter().all(|c| !w2.contains(c)), "{w1:?} {w2:?}");
    } else {
        let errors = doc["errors"].to_string();
        assert!(errors.contains("`cpus` of `worker"), "{errors}");
    }
}

#[test]
fn simulated_2_core_host_three_shares_the_last_is_an_error_at_its_line() {
    let root = host(&Shape::simple(2, 1, Numbering::Adjacent), false);
    let service = |name: &str, cpus: &str| {
        format!("[[service]]\nname = \"{name}\"\ncommand = [\"/bin/true\"]\ncpus = \"{cpus}\"\n")
    };
    let text = [service("a", "50%"), service("b", "49%"), service("c", "1%")].concat();
    let out = check_text(root.path(), &text);
    out.expect_code(1);
    assert_diag(
        &out,
        "venussup.toml:12:8",
        "error",
        "`cpus` of `c`: 1% is 1 core of the 2 usable, but only 0 are free",
    );
}

#[test]
fn simulated_8_core_smt_host_lists_are_checked_at_their_lines() {
    let root = host(&Shape::simple(8, 2, Numbering::Spread), false);
    let text = "\
[host]
smt = \"off\"
reserved_cpus = \"7\"
[[service]]
name = \"a\"
command = [\"/bin/true\"]
cpus = \"0-1\"
[[service]]
name = \"b\"
command = [\"/bin/true\"]
cpus = \"1,9\"
[[service]]
name = \"c\"
command = [\"/bin/true\"]
cpus = \"1\"
share_cpus_with = [\"a\", \"b\"]
[[service]]
name = \"d\"
command = [\"/bin/true\"]
cpus = \"6-7\"
[[service]]
name = \"e\"
command = [\"/bin/true\"]
cpus = \"50%\"
share_cpus_with = [\"a\"]
";
    let out = check_text(root.path(), text);
    out.expect_code(1);
    assert_diag(
        &out,
        "venussup.toml:11:8",
        "error",
        "CPUs 9 go offline at start: `smt = \"off\"` keeps one thread per core (0-7)",
    );
    assert_diag(
        &out,
        "venussup.toml:11:8",
        "error",
        "CPUs 1 are also given to `a`",
    );
    assert_diag(
        &out,
        "venussup.toml:20:8",
        "warning",
        "CPUs 7 are in `reserved_cpus`",
    );
    assert_diag(
        &out,
        "venussup.toml:25:20",
        "error",
        "`share_cpus_with` lets a CPU list overlap others; `e` has no CPU list",
    );
    assert!(
        !out.stderr.contains("of `c`"),
        "c shares with a and b:\n{}",
        out.stderr
    );
}

#[test]
fn simulated_3x8_core_l3_host_p1_gets_equal_cores_per_group_c2_packs() {
    let root = l3_host(24, 3);
    let text = "\
[host.env]
FIL_PROOFS_USE_MULTICORE_SDR = \"1\"
[[service]]
name = \"p1\"
tasks = [\"PreCommit1\"]
command = [\"/bin/true\"]
cpus = \"50%\"
[[service]]
name = \"c2\"
tasks = [\"Commit\"]
command = [\"/bin/true\"]
cpus = \"rest\"
";
    let out = check_text(root.path(), text);
    out.expect_code(0);
    assert_has(
        &out.stdout,
        &[
            "cpus     0-5,8-13 · 12 cores · request 50%",
            "L3 groups 0-1 (6 of 8 cores each) · NUMA node 0",
            "cpus     6-7,14-23 · 12 cores · request rest",
            "L3 groups 0-2 (2+2+8 of 8 cores each)",
        ],
    );
    assert!(!out.stderr.contains("multicore"), "{}", out.stderr);
}

#[test]
fn simulated_8_core_l3_host_an_uneven_p1_list_is_warned() {
    let root = l3_host(16, 2);
    let text = "\
[[service]]
name = \"p1\"
tasks = [\"PreCommit1\"]
command = [\"/bin/true\"]
env = { FIL_PROOFS_USE_MULTICORE_SDR = \"1\" }
cpus = \"0-11\"
";
    let out = check_text(root.path(), text);
    out.expect_code(0);
    assert_diag(
        &out,
        "venussup.toml:6:8",
        "warning",
        "uneven across L3 groups (8 of group 0, 4 of group 1): the proofs library splits the cores it sees into one equal run per L3 cache",
    );
}

#[test]
fn simulated_host_without_cgroups_warns_affinity_only_and_memory_limits_cannot_hold() {
    let root = host(&Shape::simple(4, 1, Numbering::Adjacent), false);
    fs::remove_file(FsRoot::new(root.path()).path("/proc/self/mountinfo")).unwrap();
    let text = "\
[[service]]
name = \"w\"
command = [\"/bin/true\"]
cpus = \"50%\"
limits = { memory_max = \"1GiB\" }
";
    let out = check_text(root.path(), text);
    out.expect_code(0);
    assert_has(&out.stdout, &["confinement: no cgroups (cannot read"]);
    assert_diag(
        &out,
        "venussup.toml:2:8",
        "warning",
        "`w` has `limits.memory_max`, but this host has no cgroups",
    );
    // Only multicore SDR escapes the mask: a PreCommit1 service with it is
    // warned, the same service without PreCommit1 is not.
    let p1 = text.replace(
        "limits = { memory_max = \"1GiB\" }\n",
        "tasks = [\"PreCommit1\"]\nenv = { FIL_PROOFS_USE_MULTICORE_SDR = \"1\" }\n",
    );
    let out = check_text(root.path(), &p1);
    assert_diag(
        &out,
        "venussup.toml:4:8",
        "warning",
        "`w` is held by its affinity mask only",
    );
    let out = check_text(root.path(), &p1.replace("PreCommit1", "Commit"));
    assert!(!out.stderr.contains("affinity mask"), "{}", out.stderr);
}
