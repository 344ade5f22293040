//! `instances`: one `[[service]]` expanded into a worker per GPU or per
//! NUMA node, checked with `check --fs-root` over simulated hosts (CPUs,
//! NUMA nodes and NVIDIA GPUs written under a folder as the kernel and the
//! driver show them), and the GPU lock folders `run` creates.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use common::daemon::{wait_file, Setup};
use common::{check_on as check, planned_service as service, project_file, Outcome};
use serde_json::{json, Value};
use venussup::host::gpu::{simulate, simulate_numa, simulated_uuid};
use venussup::host::topology::sim::{Numbering, Shape, SimHost, Style};
use venussup::util::fsroot::FsRoot;

/// 2 packages × 16 cores, one NUMA node each, L3 groups of 8 cores, no
/// SMT; with a GPU at each (bus id, NUMA node).
fn host(gpus: &[(&str, i32)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let shape = Shape {
        packages: 2,
        cores_per_package: 16,
        threads_per_core: 1,
        numbering: Numbering::Adjacent,
        l3_per_node: 2,
        nodes_per_package: 1,
    };
    SimHost::regular(dir.path(), &shape, Style::MODERN).unwrap();
    let root = FsRoot::new(dir.path());
    for (minor, (bus, node)) in (0..).zip(gpus) {
        simulate(&root, bus, minor, &format!("NVIDIA RTX A4000 #{minor}")).unwrap();
        simulate_numa(&root, bus, *node).unwrap();
    }
    dir
}

/// Four GPUs, two on each node, interleaved in bus order so that "its
/// GPU's node" is not "the next node".
const FOUR_GPUS_TWO_NODES: [(&str, i32); 4] = [
    ("0000:01:00.0", 0),
    ("0000:41:00.0", 1),
    ("0000:81:00.0", 0),
    ("0000:c1:00.0", 1),
];

fn assert_diag(out: &Outcome, needle: &str) {
    assert!(
        out.stderr.lines().any(|l| l.contains(needle)),
        "no diagnostic containing {needle:?} in:\n{}",
        out.stderr
    );
}

#[test]
fn simulated_2x16_cores_4_gpus_on_2_numa_nodes_per_gpu_gives_four_distinct_workers() {
    let root = host(&FOUR_GPUS_TWO_NODES);
    let text = fs::read_to_string(project_file("integration/fixtures/per-gpu.toml")).unwrap();
    let (out, doc) = check(root.path(), &text);
    out.expect_code(0);
    // GPU i: (CPUs, NUMA node); each worker a quarter (8 cores = one L3
    // group) on its GPU's node.
    let expect = [(0..8, 0), (16..24, 1), (8..16, 0), (24..32, 1)];
    for (i, (cpus, node)) in expect.into_iter().enumerate() {
        let w = service(&doc, &format!("worker@{i}"));
        let port = 3456 + i;
        assert_eq!(
            w["instance"],
            json!({"of": "worker", "index": i, "count": 4, "per": "per-gpu",
                   "gpu": i, "numa": node, "port": port})
        );
        assert_eq!(w["argv"][2], format!("--listen=0.0.0.0:{port}"));
        assert_eq!(
            w["env"]["VENUS_WORKER_PATH"],
            format!("/var/lib/venus/worker{i}")
        );
        assert_eq!(w["env"]["CUDA_VISIBLE_DEVICES"], i.to_string());
        let tmpdir = format!("/var/lib/venussup/gpu{i}-tmp");
        assert_eq!(w["env"]["TMPDIR"], tmpdir);
        assert_eq!(w["gpus"]["devices"], json!([i]));
        assert_eq!(w["cpus"]["cpus"], json!(cpus.collect::<Vec<_>>()));
        assert_eq!(w["cpus"]["numa"], json!([node]));
        assert_eq!(doc["plan"]["host"]["gpu_tmpdirs"][i]["path"], tmpdir);
        assert_eq!(
            doc["plan"]["host"]["gpu_tmpdirs"][i]["services"],
            json!([format!("worker@{i}")])
        );
        assert!(
            out.stdout.contains(&format!(
                "instance {i} of worker's 4 (per-gpu) · GPU {i} · NUMA node {node} · port {port}"
            )),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&format!("TMPDIR {tmpdir}")),
            "{}",
            out.stdout
        );
    }
    // `after = ["worker"]` waits for every instance.
    assert_eq!(
        doc["plan"]["timers"][0]["after"],
        json!(["worker@0", "worker@1", "worker@2", "worker@3"])
    );
    assert!(out
        .stdout
        .contains("start order: worker@0 → worker@1 → worker@2 → worker@3"));
}

#[test]
fn simulated_2x16_cores_no_gpu_per_numa_gives_a_worker_per_node_and_lints_after_expansion() {
    let root = host(&[]);
    let text = "\
[[service]]
name = \"p1\"
role = \"worker\"
tasks = [\"PreCommit1\"]
instances = \"per-numa\"
cpus = \"100%\"
command = [\"/bin/true\", \"run\"]
env = { VENUS_WORKER_PATH = \"/w/p1-{numa}\" }
[[service]]
name = \"attach\"
kind = \"oneshot\"
after = [\"p1@1\"]
command = [\"/bin/true\"]
";
    let (out, doc) = check(root.path(), text);
    // Both listen on venus-worker's default port: the Venus lint sees the
    // expanded workers.
    out.expect_code(1);
    assert_diag(
        &out,
        "venussup.toml:7:11: error: `p1@1` listens on 0.0.0.0:3456 and `p1@0` on 0.0.0.0:3456",
    );
    assert!(doc["plan"].is_null());
    let fixed = text.replace("\"run\"]", "\"run\", \"--listen=0.0.0.0:{i}345\"]");
    let (out, doc) = check(root.path(), &fixed);
    out.expect_code(0);
    for (node, cpus) in [(0, 0..16), (1, 16..32)] {
        let w = service(&doc, &format!("p1@{node}"));
        assert_eq!(w["cpus"]["cpus"], json!(cpus.collect::<Vec<_>>()));
        assert_eq!(w["env"]["VENUS_WORKER_PATH"], format!("/w/p1-{node}"));
        assert_eq!(w["argv"][2], format!("--listen=0.0.0.0:{node}345"));
    }
    assert_eq!(service(&doc, "attach")["after"], json!(["p1@1"]));

    // One repo for both: an error after expansion, with the way out.
    let shared = text
        .replace("p1-{numa}", "p1")
        .replace("\"run\"]", "\"run\", \"--listen=0.0.0.0:{i}345\"]");
    let (out, _) = check(root.path(), &shared);
    assert_diag(&out, "error: `p1@0` and `p1@1` share the worker repo /w/p1; each worker needs its own (set VENUS_WORKER_PATH in its `env`) (with `instances`: `{i}` in it");
}

#[test]
fn placeholders_that_cannot_be_filled_are_errors_at_their_line_and_column() {
    let root = host(&FOUR_GPUS_TWO_NODES);
    let text = "\
[[service]]
name = \"w\"
instances = 2
command = [\"/bin/true\", \"--listen=0.0.0.0:{port}\", \"--gpu={gpu}\"]
env = { A = \"x{nope}\", B = \"{{literal}} ${HOME} {i}\" }
after = [\"w@0\"]
[[service]]
name = \"x\"
after = [\"w@2\"]
command = [\"/bin/echo\", \"{i}\"]
port_base = 1
";
    let (out, _) = check(root.path(), text);
    out.expect_code(1);
    for needle in [
        "venussup.toml:4:43: error: `w`: `{port}` is `port_base + {i}`: give `w` a `port_base`",
        "venussup.toml:4:59: error: `w`: `{gpu}` is the instance's own GPU: it needs `instances = \"per-gpu\"` (`w` has `instances = 2`)",
        "venussup.toml:5:15: error: `w`: unknown placeholder `{nope}`; instances know {i}, {gpu}, {numa}, {port}",
        "venussup.toml:6:10: error: `w` cannot start after itself",
        "venussup.toml:9:10: error: `w@2` in `after` of `x` is not an instance: `w` has 2 instances, w@0 to w@1",
        "venussup.toml:10:26: warning: `{i}` in the command of `x` stays as written",
        "venussup.toml:11:13: error: `port_base` of `x` gives `{port}` to instances; `x` has no `instances`",
    ] {
        assert_diag(&out, needle);
    }
    // `{{`, `}}` and `${HOME}` in B are no placeholders: line 5 has one error.
    assert_eq!(
        out.stderr.matches("venussup.toml:5:").count(),
        1,
        "{}",
        out.stderr
    );
}

#[test]
fn simulated_renumbered_bus_gpus_named_by_uuid_and_cuda_visible_devices_by_uuid() {
    // Device minors 0 and 1 sit at buses 41 and 01: bus order puts minor 1
    // first, so index 0 is the GPU whose UUID is simulated_uuid(1).
    let root = host(&[("0000:41:00.0", 1), ("0000:01:00.0", 0)]);
    let (sealer_gpu, c2_gpu) = (simulated_uuid(0), simulated_uuid(1));
    let text = format!(
        "[host]\ngpus = [\"{sealer_gpu}\", \"{c2_gpu}\"]\ncuda_visible_devices = \"uuid\"\n\
         [[service]]\nname = \"sealer\"\ntasks = [\"WindowPoSt\"]\ngpus = [\"{}\"]\ncommand = [\"/bin/true\"]\n\
         [[service]]\nname = \"c2\"\ntasks = [\"Commit\"]\ncommand = [\"/bin/true\"]\n",
        sealer_gpu.to_uppercase()
    );
    let (out, doc) = check(root.path(), &text);
    out.expect_code(0);
    let sealer = service(&doc, "sealer");
    assert_eq!(sealer["gpus"]["devices"], json!([1]));
    assert_eq!(sealer["env"]["CUDA_VISIBLE_DEVICES"], sealer_gpu);
    assert_eq!(sealer["env"]["TMPDIR"], "/var/lib/venussup/gpu1-tmp");
    let c2 = service(&doc, "c2");
    assert_eq!(c2["env"]["CUDA_VISIBLE_DEVICES"], c2_gpu);
    assert_eq!(c2["env"]["TMPDIR"], "/var/lib/venussup/gpu0-tmp");
    assert_eq!(doc["plan"]["host"]["gpus"][0]["uuid"], c2_gpu);
    assert_eq!(doc["plan"]["host"]["cuda_visible_devices"], "uuid");
    assert!(out
        .stdout
        .contains("CUDA_VISIBLE_DEVICES names GPUs by UUID"));

    // A UUID this host does not have, and UUIDs the host cannot tell.
    let (out, _) = check(
        root.path(),
        "[[service]]\nname = \"x\"\ngpus = [\"GPU-deadbeef-0000\"]\ncommand = [\"/bin/true\"]\n",
    );
    out.expect_code(1);
    assert_diag(&out, "venussup.toml:3:8: error: `gpus` of `x`: GPU GPU-deadbeef-0000 is not on this host; its GPUs are 0 (GPU-00000001");
    let nodes_only = host(&[]);
    fs::create_dir_all(nodes_only.path().join("dev")).unwrap();
    fs::write(nodes_only.path().join("dev/nvidia0"), "").unwrap();
    let (out, _) = check(
        nodes_only.path(),
        "[host]\ncuda_visible_devices = \"uuid\"\n[[service]]\nname = \"x\"\ngpus = [0]\ncommand = [\"/bin/true\"]\n",
    );
    out.expect_code(1);
    assert_diag(&out, "venussup.toml:2:24: error: `cuda_visible_devices = \"uuid\"`, but GPU 0 (of `x`) has no known UUID here");
}

#[test]
fn run_creates_each_gpu_lock_folder_owned_by_its_services_user() {
    let root = host(&[("0000:01:00.0", 0), ("0000:41:00.0", 1)]);
    let setup = Setup::new(
        "[[service]]\nname = \"w\"\ninstances = \"per-gpu\"\nuser = \"nobody\"\n\
         command = [\"{bin}\", \"standin\", \"--name\", \"w{i}\", \"--report\", \"{dir}/w{i}.json\"]\n",
    );
    // The reports are written by `nobody`: its folder must let it (sticky:
    // an open folder above the state folder is refused).
    fs::set_permissions(setup.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    setup.bin_for_others();
    let d = setup.start_args(&["--fs-root", root.path().to_str().unwrap()]);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    for i in 0..2 {
        d.wait_service(&format!("w@{i}"), "running", |s| s["state"] == "running");
        wait_file(&setup.path(&format!("w{i}.json")));
        let report: Value =
            serde_json::from_str(&fs::read_to_string(setup.path(&format!("w{i}.json"))).unwrap())
                .unwrap();
        let tmpdir = setup.state_dir().join(format!("gpu{i}-tmp"));
        assert_eq!(report["env"]["TMPDIR"], tmpdir.to_str().unwrap());
        assert_eq!(report["env"]["CUDA_VISIBLE_DEVICES"], i.to_string());
        let meta = fs::metadata(&tmpdir).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777),
            (nobody.uid.as_raw(), nobody.gid.as_raw(), 0o700)
        );
    }
}

#[test]
fn stop_start_and_restart_of_a_name_act_on_every_instance_of_it() {
    let setup = Setup::new(
        "[[service]]\nname = \"w\"\ninstances = 3\n\
         command = [\"{bin}\", \"standin\", \"--name\", \"w{i}\"]\n\
         [[service]]\nname = \"other\"\ncommand = [\"{bin}\", \"standin\", \"--name\", \"other\"]\n",
    );
    let d = setup.start();
    let names = ["w@0", "w@1", "w@2"];
    let pids = |d: &common::daemon::Daemon| -> Vec<i64> {
        names
            .iter()
            .map(|n| {
                let s = d.wait_service(n, "running", |s| s["state"] == "running");
                s["pid"].as_i64().unwrap()
            })
            .collect()
    };
    let first = pids(&d);
    d.wait_service("other", "running", |s| s["state"] == "running");

    let out = setup.cli(&["stop", "w"]).expect_code(0).stdout.clone();
    for n in names {
        assert!(out.contains(&format!("{n}: ")), "{out}");
        d.wait_service(n, "stopped", |s| s["state"] == "stopped");
    }
    assert_eq!(d.service("other")["state"], "running", "only w's instances");

    setup.cli(&["start", "w"]).expect_code(0);
    let second = pids(&d);
    // Already running, every one of them: refused.
    let again = setup.cli(&["start", "w"]).expect_code(1).stderr.clone();
    assert!(again.contains("already running"), "{again}");

    setup.cli(&["restart", "w"]).expect_code(0);
    for (i, n) in names.iter().enumerate() {
        d.wait_service(n, "a new pid", |s| {
            s["state"] == "running" && s["pid"].as_i64() != Some(second[i])
        });
    }
    assert!(first.iter().zip(&second).all(|(a, b)| a != b));

    // One instance by its own name; an unknown name is refused.
    setup.cli(&["stop", "w@1"]).expect_code(0);
    d.wait_service("w@1", "stopped", |s| s["state"] == "stopped");
    assert_eq!(d.service("w@0")["state"], "running");
    let unknown = setup.cli(&["stop", "nope"]).expect_code(1).stderr.clone();
    assert!(unknown.contains("no service `nope`"), "{unknown}");
}
