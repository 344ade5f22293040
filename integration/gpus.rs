//! `venussup check` hands GPUs out on simulated hosts: NVIDIA GPUs written
//! under `--fs-root` as the driver shows them (no real GPU here), or none.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;

use common::daemon::{wait_file, Setup};
use common::{check_on as check, planned_service as service, project_file, Outcome};
use venussup::host::topology::sim::{Numbering, Shape, SimHost, Style};
use venussup::util::fsroot::FsRoot;

/// An 8-core simulated host with a simulated GPU at each bus id, in the
/// order given (device minors 0, 1, ...).
fn host(gpus: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    SimHost::regular(
        dir.path(),
        &Shape::simple(8, 1, Numbering::Adjacent),
        Style::MODERN,
    )
    .unwrap();
    let root = FsRoot::new(dir.path());
    for (minor, bus) in (0..).zip(gpus) {
        venussup::host::gpu::simulate(
            &root,
            bus,
            minor,
            &format!("NVIDIA GeForce RTX 3060 Ti #{minor}"),
        )
        .unwrap();
    }
    dir
}

fn devices(doc: &serde_json::Value, name: &str) -> serde_json::Value {
    service(doc, name)["gpus"]["devices"].clone()
}

fn assert_diag(out: &Outcome, severity: &str, needle: &str) {
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(&format!(": {severity}: ")) && l.contains(needle)),
        "no {severity} containing {needle:?} in:\n{}",
        out.stderr
    );
}

/// A sealer proving, a C2 worker and a P2 worker that builds its trees on
/// the GPU, all `gpus = "auto"`.
const THREE_TAKERS: &str = "\
[host]
state_dir = \"/var/lib/venussup\"
[[service]]
name = \"p2\"
tasks = [\"PreCommit1\", \"PreCommit2\"]
command = [\"/bin/true\"]
env = { FIL_PROOFS_USE_GPU_TREE_BUILDER = \"1\", FIL_PROOFS_USE_GPU_COLUMN_BUILDER = \"1\" }
[[service]]
name = \"c2\"
tasks = [\"Commit\"]
command = [\"/bin/true\"]
[[service]]
name = \"sealer\"
tasks = [\"WindowPoSt\", \"WinningPoSt\"]
command = [\"/bin/true\"]
";

#[test]
fn simulated_no_gpu_host_a_is_normal_and_says_what_the_sealer_lacks() {
    let root = host(&[]);
    let text = fs::read_to_string(project_file("examples/host-a.toml")).unwrap();
    let (out, doc) = check(root.path(), &text);
    out.expect_code(0);
    assert!(out.stdout.contains("GPUs: none found"), "{}", out.stdout);
    assert_diag(
        &out,
        "warning",
        "`sealer` asks for a GPU (WindowPoSt), but this host has none",
    );
    for name in ["sealer", "worker"] {
        let env = &service(&doc, name)["env"];
        assert_eq!(
            (
                env["CUDA_VISIBLE_DEVICES"].as_str(),
                env["BELLMAN_NO_GPU"].as_str()
            ),
            (Some(""), Some("1"))
        );
    }
}

#[test]
fn simulated_one_gpu_host_a_the_sealer_gets_it_and_the_worker_none() {
    let root = host(&["0000:01:00.0"]);
    let text = fs::read_to_string(project_file("examples/host-a.toml")).unwrap();
    let (out, doc) = check(root.path(), &text);
    out.expect_code(0);
    assert!(
        out.stdout.contains(
            "gpus     0 · request auto · auto: WindowPoSt, taker 1 of 1, a GPU of its own"
        ),
        "{}",
        out.stdout
    );
    let sealer = service(&doc, "sealer");
    assert_eq!(sealer["env"]["CUDA_VISIBLE_DEVICES"], "0");
    assert_eq!(sealer["env"]["CUDA_DEVICE_ORDER"], "PCI_BUS_ID");
    assert!(sealer["env"]["BELLMAN_NO_GPU"].is_null());
    assert_eq!(devices(&doc, "worker"), serde_json::json!([]));
    assert_eq!(service(&doc, "worker")["gpus"]["why"], "not-asked");
    assert!(!out.stderr.contains("GPU ("), "{}", out.stderr);
}

#[test]
fn simulated_one_gpu_three_takers_windowpost_gets_it_alone_the_others_none() {
    let root = host(&["0000:01:00.0"]);
    let (out, doc) = check(root.path(), THREE_TAKERS);
    out.expect_code(0);
    assert_eq!(devices(&doc, "sealer"), serde_json::json!([0]));
    assert_eq!(devices(&doc, "c2"), serde_json::json!([]));
    assert_eq!(devices(&doc, "p2"), serde_json::json!([]));
    assert_diag(&out, "warning", "`c2` gets no GPU: the free GPUs went to `sealer` alone, since WindowPoSt must never wait for a GPU; Commit runs on the CPU");
    assert_diag(
        &out,
        "warning",
        "`p2` gets no GPU: the free GPUs went to `sealer` alone",
    );
    // The warning does not suggest sharing the sealer's GPU.
    assert!(!out.stderr.contains("gpus = [0]"), "{}", out.stderr);
}

#[test]
fn simulated_two_gpus_three_takers_c2_and_p2_share_the_last_and_its_tmpdir() {
    let root = host(&["0000:01:00.0", "0000:41:00.0"]);
    let (out, doc) = check(root.path(), THREE_TAKERS);
    out.expect_code(0);
    assert_eq!(devices(&doc, "sealer"), serde_json::json!([0]));
    assert_eq!(devices(&doc, "c2"), serde_json::json!([1]));
    assert_eq!(devices(&doc, "p2"), serde_json::json!([1]));
    for name in ["c2", "p2"] {
        let s = service(&doc, name);
        assert_eq!(s["env"]["TMPDIR"], "/var/lib/venussup/gpu1-tmp");
        assert_eq!(s["gpus"]["tmpdir"], "/var/lib/venussup/gpu1-tmp");
    }
    // The sealer has GPU 0 alone: a lock domain of its own.
    assert_eq!(
        service(&doc, "sealer")["env"]["TMPDIR"],
        "/var/lib/venussup/gpu0-tmp"
    );
    assert_diag(
        &out,
        "note",
        "`p2` (PreCommit2) shares GPU 1 with `c2`: there are fewer GPUs than services asking",
    );
    assert!(
        out.stdout
            .contains("· shared with c2 · TMPDIR /var/lib/venussup/gpu1-tmp"),
        "{}",
        out.stdout
    );
}

#[test]
fn simulated_gpus_are_numbered_in_pci_bus_order_not_device_order() {
    // Device minor 0 sits at bus 41, minor 1 at bus 01: CUDA index 0 is bus 01.
    let root = host(&["0000:41:00.0", "0000:01:00.0"]);
    let (out, doc) = check(
        root.path(),
        "[[service]]\nname = \"x\"\ncommand = [\"/bin/true\"]\ngpus = [1]\n",
    );
    out.expect_code(0);
    assert_eq!(doc["plan"]["host"]["gpus"][0]["bus_id"], "0000:01:00.0");
    assert_eq!(doc["plan"]["host"]["gpus"][1]["bus_id"], "0000:41:00.0");
    assert_eq!(doc["plan"]["host"]["gpu_source"], "driver");
    assert_eq!(service(&doc, "x")["env"]["CUDA_VISIBLE_DEVICES"], "1");
}

#[test]
fn simulated_device_nodes_only_still_count_as_gpus() {
    let root = host(&[]);
    fs::create_dir_all(root.path().join("dev")).unwrap();
    fs::write(root.path().join("dev/nvidia0"), "").unwrap();
    fs::write(root.path().join("dev/nvidiactl"), "").unwrap();
    let (out, doc) = check(root.path(), THREE_TAKERS);
    out.expect_code(0);
    assert_eq!(doc["plan"]["host"]["gpu_source"], "device-nodes");
    assert_eq!(devices(&doc, "sealer"), serde_json::json!([0]));
}

#[test]
fn simulated_one_gpu_a_listed_gpu_beyond_the_host_is_an_error_at_its_line() {
    let root = host(&["0000:01:00.0"]);
    let (out, _) = check(
        root.path(),
        "[[service]]\nname = \"x\"\ncommand = [\"/bin/true\"]\ngpus = [0, 1]\n",
    );
    out.expect_code(1);
    assert_diag(
        &out,
        "error",
        "venussup.toml:4:8: error: `gpus` of `x`: GPU 1 is listed, but this host has 1 GPU (0-0)",
    );
}

#[test]
fn simulated_no_gpu_host_plans_with_the_gpus_the_config_states() {
    let root = host(&[]);
    let text = format!(
        "[host]\ngpus = [\"0000:41:00.0\", \"01:00.0\"]\n{}",
        &THREE_TAKERS[7..]
    );
    let (out, doc) = check(root.path(), &text);
    out.expect_code(0);
    assert_diag(
        &out,
        "note",
        "`[host] gpus` states 0 (0000:01:00.0), 1 (0000:41:00.0); none is found here",
    );
    assert_eq!(doc["plan"]["host"]["gpu_source"], "config");
    assert_eq!(devices(&doc, "sealer"), serde_json::json!([0]));
    assert_eq!(devices(&doc, "c2"), serde_json::json!([1]));

    let one = host(&["0000:01:00.0"]);
    let (out, _) = check(one.path(), "[host]\ngpus = 2\n");
    assert_diag(&out, "warning", "`[host] gpus` states 0, 1, but the NVIDIA driver shows 0 (0000:01:00.0 NVIDIA GeForce RTX 3060 Ti #0)");
    let (out, _) = check(one.path(), "[host]\ngpus = [\"nvidia0\"]\n");
    out.expect_code(1);
    assert_diag(
        &out,
        "error",
        "`nvidia0` is neither a PCI bus id nor a GPU UUID",
    );
}

#[test]
fn simulated_one_gpu_gpu_variables_from_the_config_give_way_to_the_plan() {
    let root = host(&["0000:01:00.0"]);
    let text = "\
[[service]]
name = \"c2\"
tasks = [\"Commit\"]
command = [\"/bin/true\"]
env = { CUDA_VISIBLE_DEVICES = \"1\", BELLMAN_NO_GPU = \"0\" }
[[service]]
name = \"cpu\"
command = [\"/bin/true\"]
env = { CUDA_VISIBLE_DEVICES = \"0\" }
";
    let (out, _) = check(root.path(), text);
    out.expect_code(1);
    // One place reports BELLMAN_NO_GPU, once.
    assert_eq!(
        out.stderr.matches("BELLMAN_NO_GPU disables it").count(),
        1,
        "{}",
        out.stderr
    );
    assert_diag(
        &out,
        "error",
        "venussup.toml:5:37: error: `c2` is meant to use a GPU, but BELLMAN_NO_GPU disables it",
    );
    assert_diag(
        &out,
        "warning",
        "CUDA_VISIBLE_DEVICES=1 of `c2` is replaced with CUDA_VISIBLE_DEVICES=0: venussup sets it from `gpus`",
    );
    assert_diag(
        &out,
        "warning",
        "CUDA_VISIBLE_DEVICES=0 of `cpu` is replaced with CUDA_VISIBLE_DEVICES=: venussup",
    );
}

/// A sealer and a C2 worker both listing GPU 0.
const POST_SHARES: &str = "\
[[service]]
name = \"sealer\"
role = \"sealer\"
tasks = [\"WindowPoSt\", \"WinningPoSt\"]
command = [\"/bin/true\"]
gpus = [0]
[[service]]
name = \"c2\"
role = \"worker\"
tasks = [\"Commit\"]
command = [\"/bin/true\", \"run\", \"--addpiece=false\", \"--precommit1=false\", \"--precommit2=false\", \"--unseal=false\"]
gpus = [0]
";

#[test]
fn simulated_two_gpus_windowpost_listing_the_c2_gpu_is_an_error_unless_allowed() {
    let root = host(&["0000:01:00.0", "0000:41:00.0"]);
    let (out, _) = check(root.path(), POST_SHARES);
    out.expect_code(1);
    assert_diag(
        &out,
        "error",
        "venussup.toml:6:8: error: `sealer` (WindowPoSt, line 2) shares GPU 0 with `c2` (Commit, line 8): C2 holds bellperson's GPU lock",
    );
    assert_diag(&out, "error", "lotus#6181");
    assert_diag(&out, "error", "`[host] share_post_gpu = true`");

    let allowed = format!("[host]\nshare_post_gpu = true\n{POST_SHARES}");
    let (out, doc) = check(root.path(), &allowed);
    out.expect_code(0);
    assert_diag(
        &out,
        "note",
        "as `[host] share_post_gpu = true` allows: they share one TMPDIR lock folder",
    );
    // One lock folder, so PoSt's priority lock reaches C2.
    assert_eq!(
        service(&doc, "sealer")["env"]["TMPDIR"],
        service(&doc, "c2")["env"]["TMPDIR"]
    );
}

/// A sealer proving WindowPoSt and a C2 worker, `gpus = "auto"`; the C2
/// worker's table is last, open for more keys.
const SEALER_AND_C2: &str = "\
[[service]]
name = \"sealer\"
tasks = [\"WindowPoSt\"]
command = [\"/bin/true\"]
[[service]]
name = \"c2\"
tasks = [\"Commit\"]
command = [\"/bin/true\"]
";

#[test]
fn simulated_three_gpus_c2_gets_every_gpu_nobody_else_takes() {
    let root = host(&["0000:01:00.0", "0000:41:00.0", "0000:81:00.0"]);
    let text = format!(
        "{SEALER_AND_C2}[[service]]\nname = \"p2\"\ntasks = [\"PreCommit1\", \"PreCommit2\"]\ncommand = [\"/bin/true\"]\n"
    );
    let (out, doc) = check(root.path(), &text);
    out.expect_code(0);
    assert_eq!(devices(&doc, "sealer"), serde_json::json!([0]));
    assert_eq!(devices(&doc, "c2"), serde_json::json!([1, 2]));
    assert_eq!(service(&doc, "c2")["env"]["CUDA_VISIBLE_DEVICES"], "1,2");
    assert_eq!(service(&doc, "c2")["gpus"]["idle"], serde_json::json!([2]));
    // P2 with the GPU builders off (their default) takes none.
    assert_eq!(devices(&doc, "p2"), serde_json::json!([]));
    assert_eq!(service(&doc, "p2")["gpus"]["why"], "cpu-trees");
    assert_diag(&out, "note", "`p2` gets no GPU: PreCommit2 builds its trees on the CPU unless FIL_PROOFS_USE_GPU_TREE_BUILDER=1");
    assert!(
        out.stdout.contains(
            "a GPU of its own, and idle GPU 2: C2 splits its work over every GPU it sees"
        ),
        "{}",
        out.stdout
    );
}

/// Two NUMA nodes of 8 cores (CPUs 0-7 and 8-15) with a GPU on each:
/// bus 01 on node 0, bus 41 on node 1.
fn two_node_host() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let shape = Shape {
        packages: 2,
        nodes_per_package: 1,
        ..Shape::simple(8, 1, Numbering::Adjacent)
    };
    SimHost::regular(dir.path(), &shape, Style::MODERN).unwrap();
    let root = FsRoot::new(dir.path());
    for (minor, (bus, node)) in (0..).zip([("0000:01:00.0", 0), ("0000:41:00.0", 1)]) {
        venussup::host::gpu::simulate(&root, bus, minor, "NVIDIA GeForce RTX 3060 Ti").unwrap();
        venussup::host::gpu::simulate_numa(&root, bus, node).unwrap();
    }
    dir
}

#[test]
fn simulated_two_numa_nodes_c2_on_node_1_cores_gets_the_node_1_gpu() {
    let root = two_node_host();
    let text = format!("[host]\nsmt = \"keep\"\n{SEALER_AND_C2}cpus = \"8-15\"\n");
    let (out, doc) = check(root.path(), &text);
    out.expect_code(0);
    assert_eq!(devices(&doc, "c2"), serde_json::json!([1]));
    assert_eq!(devices(&doc, "sealer"), serde_json::json!([0]));
    assert_eq!(service(&doc, "c2")["gpus"]["numa"], "near");
    assert!(
        out.stdout
            .contains("a GPU of its own on its cores' NUMA node 1"),
        "{}",
        out.stdout
    );
}

#[test]
fn simulated_one_gpu_gpu_proving_off_and_builder_switches_are_caught() {
    let root = host(&["0000:01:00.0"]);
    let text = "\
[[service]]
name = \"sealer\"
role = \"sealer\"
tasks = [\"WindowPoSt\"]
command = [\"/bin/true\", \"run\", \"--enable-gpu-proving=false\"]
[[service]]
name = \"p2\"
role = \"worker\"
tasks = [\"PreCommit2\"]
command = [\"/bin/true\", \"run\", \"--addpiece=false\", \"--precommit1=false\", \"--commit=false\", \"--unseal=false\"]
gpus = \"none\"
env = { FIL_PROOFS_USE_GPU_TREE_BUILDER = \"1\", FIL_PROOFS_USE_GPU_COLUMN_BUILDER = \"\" }
";
    let (out, _) = check(root.path(), text);
    out.expect_code(1);
    assert_diag(
        &out,
        "error",
        "venussup.toml:5:11: error: `sealer` runs with --enable-gpu-proving=false, yet it is given GPU 0: venus-sealer then sets BELLMAN_NO_GPU=true",
    );
    assert_diag(
        &out,
        "warning",
        "FIL_PROOFS_USE_GPU_TREE_BUILDER=1 on `p2`, which has `gpus = \"none\"`",
    );
    assert_diag(
        &out,
        "error",
        "FIL_PROOFS_USE_GPU_COLUMN_BUILDER=\"\" of `p2` is not a value the proofs read as on or off",
    );
}

/// `run` with three GPUs stated (none is here): the C2 stand-in is started
/// with both GPUs the sealer leaves, in a lock folder apart from the
/// sealer's, and `status` says why.
#[test]
fn simulated_three_stated_gpus_run_starts_c2_on_both_idle_gpus_and_status_says_why() {
    let setup = Setup::new(
        "[[service]]\nname = \"sealer\"\ntasks = [\"WindowPoSt\"]\n\
         command = [\"{bin}\", \"standin\", \"--name\", \"sealer\", \"--report\", \"{dir}/sealer.json\"]\n\
         [[service]]\nname = \"c2\"\ntasks = [\"Commit\"]\n\
         command = [\"{bin}\", \"standin\", \"--name\", \"c2\", \"--report\", \"{dir}/c2.json\"]\n",
    );
    setup.host_line("gpus = 3");
    let d = setup.start();
    d.wait_service("c2", "running", |s| s["state"] == "running");
    let report = |name: &str| -> serde_json::Value {
        let file = setup.path(&format!("{name}.json"));
        wait_file(&file);
        serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap()
    };
    let (sealer, c2) = (report("sealer"), report("c2"));
    assert_eq!(sealer["env"]["CUDA_VISIBLE_DEVICES"], "0");
    assert_eq!(c2["env"]["CUDA_VISIBLE_DEVICES"], "1,2");
    assert_ne!(sealer["env"]["TMPDIR"], c2["env"]["TMPDIR"]);
    assert!(c2["env"]["BELLMAN_NO_GPU"].is_null());
    let out = setup.cli(&["status", "c2"]).expect_code(0).stdout.clone();
    assert!(
        out.contains("gpus_why  \"auto: Commit, taker 2 of 2, a GPU of its own, and idle GPU 2"),
        "{out}"
    );
}
