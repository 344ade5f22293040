//! `venussup topology` (and the plan of `venussup smt off --dry-run`) on
//! every host shape: simulated sysfs trees, real machines' snapshots from
//! hwloc, and the live machine.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::{project_file, venussup};
use serde_json::{json, Value};
use venussup::host::topology::sim::{Numbering, Shape, SimCore, SimHost, Style};
use venussup::util::cpulist::CpuSet;

// ---- helpers -------------------------------------------------------------

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn root_arg(root: &Path) -> &str {
    root.to_str().expect("utf-8 temp path")
}

/// `venussup topology --json` for the host under `root`.
fn topology(root: &Path) -> Value {
    venussup(&["topology", "--json", "--fs-root", root_arg(root)])
        .expect_code(0)
        .json()
}

/// `venussup smt off --dry-run --json` for the host under `root`.
fn dry_run(root: &Path) -> common::Outcome {
    venussup(&[
        "smt",
        "off",
        "--dry-run",
        "--json",
        "--fs-root",
        root_arg(root),
    ])
}

/// What `venussup smt off` would take offline, as a compact list.
fn to_offline(root: &Path) -> String {
    set_of(&dry_run(root).expect_code(0).json()["to_offline"])
}

fn cpus(json: &Value) -> &Vec<Value> {
    json["cpus"].as_array().expect("cpus is an array")
}

fn cpu(json: &Value, n: u64) -> &Value {
    cpus(json)
        .iter()
        .find(|c| c["cpu"] == n)
        .unwrap_or_else(|| panic!("no cpu{n} in {json}"))
}

/// A JSON array of CPU numbers as a compact list (`"0-3,8"`).
fn set_of(value: &Value) -> String {
    let numbers = value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is not an array"));
    let set: CpuSet = numbers
        .iter()
        .map(|n| u32::try_from(n.as_u64().expect("CPU number")).expect("fits"))
        .collect();
    set.to_string()
}

/// The distinct values of a set field (`siblings`, `l3`) over the online
/// CPUs, in order of their first CPU.
fn distinct_sets(json: &Value, field: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for c in cpus(json).iter().filter(|c| c["online"] == true) {
        let set = if c[field].is_null() {
            "null".to_string()
        } else {
            set_of(&c[field])
        };
        if !seen.contains(&set) {
            seen.push(set);
        }
    }
    seen
}

/// For a number field (`package`, `numa`): each value and the online CPUs
/// that have it, e.g. `{"0": "0-7,16-23"}`.
fn cpus_by(json: &Value, field: &str) -> BTreeMap<String, String> {
    let mut groups: BTreeMap<String, CpuSet> = BTreeMap::new();
    for c in cpus(json).iter().filter(|c| c["online"] == true) {
        let n = u32::try_from(c["cpu"].as_u64().expect("cpu")).expect("fits");
        groups.entry(c[field].to_string()).or_default().insert(n);
    }
    groups
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn set(list: &str) -> CpuSet {
    CpuSet::parse_list(list).expect("CPU list")
}

fn core(package: i64, core_id: u32, threads: &str, l3: &str, numa: Option<u32>) -> SimCore {
    SimCore {
        package,
        core_id,
        threads: set(threads),
        l3: set(l3),
        numa,
    }
}

fn shape(packages: u32, cores: u32, threads: u32, numbering: Numbering) -> Shape {
    Shape {
        packages,
        cores_per_package: cores,
        threads_per_core: threads,
        numbering,
        l3_per_node: 1,
        nodes_per_package: 1,
    }
}

// ---- simulated shapes ----------------------------------------------------

/// A host of `shape` in a fresh folder, written as a current kernel would.
fn regular(shape: &Shape) -> (tempfile::TempDir, SimHost) {
    let dir = tempdir();
    let host = SimHost::regular(dir.path(), shape, Style::MODERN).expect("write host");
    (dir, host)
}

/// A host made of exactly `cores`, in a fresh folder.
fn custom(cores: &[SimCore]) -> (tempfile::TempDir, SimHost) {
    let dir = tempdir();
    let mut host = SimHost::new(dir.path());
    for core in cores {
        host.add_core(core, Style::MODERN).expect("write core");
    }
    (dir, host)
}

/// Checks the cores `venussup topology` finds (each core's siblings, in
/// order) and what `smt off` would take offline.
fn assert_cores_and_plan(root: &Path, cores: &[&str], planned: &str) -> Value {
    let json = topology(root);
    assert_eq!(distinct_sets(&json, "siblings"), cores);
    assert_eq!(to_offline(root), planned);
    json
}

#[test]
fn simulated_2_threads_per_core_spread_siblings() {
    let (dir, _) = regular(&shape(2, 4, 2, Numbering::Spread));
    let cores = ["0,8", "1,9", "2,10", "3,11", "4,12", "5,13", "6,14", "7,15"];
    let json = assert_cores_and_plan(dir.path(), &cores, "8-15");
    assert_eq!(
        cpu(&json, 0),
        &json!({"cpu": 0, "online": true, "package": 0, "core": 0,
                "siblings": [0, 8], "l3": [0, 1, 2, 3, 8, 9, 10, 11], "numa": 0})
    );
    assert_eq!(
        cpu(&json, 13),
        &json!({"cpu": 13, "online": true, "package": 1, "core": 1,
                "siblings": [5, 13], "l3": [4, 5, 6, 7, 12, 13, 14, 15], "numa": 1})
    );
}

#[test]
fn simulated_2_threads_per_core_range_siblings() {
    let (dir, host) = regular(&shape(1, 4, 2, Numbering::Adjacent));
    let siblings = host.cpu_dir(2).join("topology/thread_siblings_list");
    assert_eq!(fs::read_to_string(siblings).unwrap(), "2-3\n");
    assert_cores_and_plan(dir.path(), &["0-1", "2-3", "4-5", "6-7"], "1,3,5,7");
}

#[test]
fn simulated_4_threads_per_core_range_siblings() {
    let (dir, _) = regular(&shape(1, 2, 4, Numbering::Adjacent));
    let json = assert_cores_and_plan(dir.path(), &["0-3", "4-7"], "1-3,5-7");
    assert_eq!(set_of(&cpu(&json, 6)["siblings"]), "4-7");
}

#[test]
fn simulated_4_threads_per_core_spread_siblings() {
    let (dir, _) = regular(&shape(1, 3, 4, Numbering::Spread));
    assert_cores_and_plan(dir.path(), &["0,3,6,9", "1,4,7,10", "2,5,8,11"], "3-11");
}

#[test]
fn simulated_old_kernel_masks_only_in_several_32_bit_words() {
    // 80 CPUs: masks span three words ("00000000,00000100,00000001").
    let dir = tempdir();
    let style = Style {
        mask_words: 3,
        ..Style::MASKS_ONLY
    };
    SimHost::regular(dir.path(), &shape(2, 20, 2, Numbering::Spread), style).unwrap();
    let sibling_mask = fs::read_to_string(
        dir.path()
            .join("sys/devices/system/cpu/cpu40/topology/thread_siblings"),
    )
    .unwrap();
    assert_eq!(sibling_mask, "00000000,00000100,00000001\n");
    assert!(!dir
        .path()
        .join("sys/devices/system/cpu/cpu40/topology/thread_siblings_list")
        .exists());
    assert!(!dir
        .path()
        .join("sys/devices/system/cpu/cpu40/node0")
        .exists());
    let json = topology(dir.path());
    assert_eq!(
        cpu(&json, 40),
        &json!({"cpu": 40, "online": true, "package": 0, "core": 0, "siblings": [0, 40],
                "l3": (0..20).chain(40..60).collect::<Vec<_>>(), "numa": 0})
    );
    // NUMA from node/nodeM/cpumap alone.
    assert_eq!(
        cpus_by(&json, "numa"),
        map(&[("0", "0-19,40-59"), ("1", "20-39,60-79")])
    );
    assert_eq!(to_offline(dir.path()), "40-79");
}

#[test]
fn simulated_trailing_whitespace_and_nul_padding() {
    let (dir, host) = regular(&shape(1, 2, 2, Numbering::Adjacent));
    let cpu1 = "/sys/devices/system/cpu/cpu1";
    host.write(format!("{cpu1}/online"), "1 \n\0\0").unwrap();
    host.write(
        format!("{cpu1}/topology/thread_siblings_list"),
        "0-1\n\0\0\0",
    )
    .unwrap();
    host.write(format!("{cpu1}/topology/core_id"), " 0\t\n")
        .unwrap();
    host.write(format!("{cpu1}/cache/index3/shared_cpu_list"), "0-3 \n\0")
        .unwrap();
    host.write("/sys/devices/system/node/node0/cpulist", "0-3\n\0")
        .unwrap();
    host.remove(format!("{cpu1}/node0")).unwrap();
    let json = topology(dir.path());
    assert_eq!(
        cpu(&json, 1),
        &json!({"cpu": 1, "online": true, "package": 0, "core": 0,
                "siblings": [0, 1], "l3": [0, 1, 2, 3], "numa": 0})
    );
    assert_eq!(to_offline(dir.path()), "1,3");
}

#[test]
fn simulated_online_file_missing_for_cpu0_empty_or_unreadable() {
    let (dir, host) = regular(&shape(1, 4, 1, Numbering::Adjacent));
    assert!(!host.cpu_dir(0).join("online").exists());
    // cpu1: empty file, its topology is there → online.
    host.write("/sys/devices/system/cpu/cpu1/online", "")
        .unwrap();
    // cpu2: unreadable (a folder where the file should be) → online.
    host.remove("/sys/devices/system/cpu/cpu2/online").unwrap();
    fs::create_dir(host.cpu_dir(2).join("online")).unwrap();
    // cpu3: empty file and no topology/ → offline.
    host.set_offline(3).unwrap();
    host.write("/sys/devices/system/cpu/cpu3/online", "\n")
        .unwrap();
    let out = venussup(&["topology", "--json", "--fs-root", root_arg(dir.path())]);
    let json = out.expect_code(0).json();
    let online: Vec<bool> = cpus(&json).iter().map(|c| c["online"] == true).collect();
    assert_eq!(online, vec![true, true, true, false]);
    assert!(out.stderr.contains("cpu1/online: empty"), "{}", out.stderr);
    assert!(out.stderr.contains("cpu2/online"), "{}", out.stderr);

    // With the kernel's `cpu/online` list, the list decides.
    host.write("/sys/devices/system/cpu/online", "0-1,3\n")
        .unwrap();
    let json = topology(dir.path());
    let online: Vec<bool> = cpus(&json).iter().map(|c| c["online"] == true).collect();
    assert_eq!(online, vec![true, true, false, true]);
}

#[test]
fn simulated_offline_cpus_lose_topology_and_cache() {
    let (dir, host) = regular(&shape(1, 4, 2, Numbering::Spread));
    host.set_offline(5).unwrap();
    host.set_offline(6).unwrap();
    let json = topology(dir.path());
    assert_eq!(
        cpu(&json, 5),
        &json!({"cpu": 5, "online": false, "package": null, "core": null,
                "siblings": null, "l3": null, "numa": null})
    );
    // The stale files of cpu1 still name cpu5; only online CPUs are listed.
    assert_eq!(set_of(&cpu(&json, 1)["siblings"]), "1");
    assert_eq!(set_of(&cpu(&json, 1)["l3"]), "0-4,7");
    assert_eq!(to_offline(dir.path()), "4,7");
}

#[test]
fn simulated_sparse_cpu_numbering() {
    let (dir, _) = custom(&[
        core(0, 0, "0,4", "0,2,4,6,10", Some(0)),
        core(0, 1, "2,6", "0,2,4,6,10", Some(0)),
        core(0, 3, "10", "0,2,4,6,10", Some(0)),
    ]);
    let json = topology(dir.path());
    let numbers: Vec<u64> = cpus(&json)
        .iter()
        .map(|c| c["cpu"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![0, 2, 4, 6, 10]);
    assert_eq!(distinct_sets(&json, "siblings"), vec!["0,4", "2,6", "10"]);
    assert_eq!(to_offline(dir.path()), "4,6");
}

#[test]
fn simulated_unknown_package_id() {
    let (dir, _) = custom(&[
        core(-1, 0, "0-1", "0-3", Some(0)),
        core(-1, 1, "2-3", "0-3", Some(0)),
    ]);
    let json = topology(dir.path());
    assert_eq!(cpu(&json, 2)["package"], Value::Null);
    assert_eq!(cpu(&json, 2)["core"], 1);
    let human = venussup(&["topology", "--fs-root", root_arg(dir.path())]);
    assert!(
        human.expect_code(0).stdout.contains("package ?\n"),
        "{}",
        human.stdout
    );
    assert_eq!(to_offline(dir.path()), "1,3");
}

#[test]
fn simulated_hybrid_only_some_cores_with_smt() {
    let all = "0-7";
    let (dir, _) = custom(&[
        core(0, 0, "0-1", all, Some(0)),
        core(0, 4, "2-3", all, Some(0)),
        core(0, 8, "4", all, Some(0)),
        core(0, 9, "5", all, Some(0)),
        core(0, 10, "6", all, Some(0)),
        core(0, 11, "7", all, Some(0)),
    ]);
    let json = topology(dir.path());
    assert_eq!(
        distinct_sets(&json, "siblings"),
        vec!["0-1", "2-3", "4", "5", "6", "7"]
    );
    assert_eq!(to_offline(dir.path()), "1,3");
    let human = venussup(&["topology", "--fs-root", root_arg(dir.path())]);
    assert!(
        human
            .expect_code(0)
            .stdout
            .starts_with("8 CPUs online (0-7) in 6 cores, 1-2 threads per core\n"),
        "{}",
        human.stdout
    );
}

#[test]
fn simulated_l3_of_type_data_instruction_ignored_zero_map_unknown() {
    let (dir, host) = regular(&shape(1, 3, 1, Numbering::Adjacent));
    // cpu0: a level-3 Instruction cache comes first; the Data one is the L3.
    let cpu0 = "/sys/devices/system/cpu/cpu0/cache";
    host.write(format!("{cpu0}/index3/type"), "Instruction\n")
        .unwrap();
    host.write(format!("{cpu0}/index3/shared_cpu_list"), "0\n")
        .unwrap();
    host.write(format!("{cpu0}/index4/level"), "3\n").unwrap();
    host.write(format!("{cpu0}/index4/type"), "Data\n").unwrap();
    host.write(format!("{cpu0}/index4/shared_cpu_list"), "0-1\n")
        .unwrap();
    // cpu1: the kernel does not know who shares it: an all-zero map.
    let cpu1 = "/sys/devices/system/cpu/cpu1/cache/index3";
    host.remove(format!("{cpu1}/shared_cpu_list")).unwrap();
    host.write(format!("{cpu1}/shared_cpu_map"), "00000000,00000000\n")
        .unwrap();
    // cpu2: no level-3 cache at all.
    host.remove("/sys/devices/system/cpu/cpu2/cache/index3")
        .unwrap();
    let json = topology(dir.path());
    assert_eq!(cpu(&json, 0)["l3"], json!([0, 1]));
    assert_eq!(cpu(&json, 1)["l3"], Value::Null);
    assert_eq!(cpu(&json, 2)["l3"], Value::Null);
}

#[test]
fn simulated_numa_from_link_then_cpulist_then_cpumap() {
    let (dir, host) = custom(&[
        core(0, 0, "0", "0-1", Some(0)),
        core(0, 1, "1", "0-1", Some(0)),
        core(1, 0, "2", "2-3", Some(1)),
        core(1, 1, "3", "2-3", None),
    ]);
    // cpu1: no link, found in node0/cpulist.
    host.remove("/sys/devices/system/cpu/cpu1/node0").unwrap();
    // cpu2: no link, node1 has only a cpumap.
    host.remove("/sys/devices/system/cpu/cpu2/node1").unwrap();
    host.remove("/sys/devices/system/node/node1/cpulist")
        .unwrap();
    host.write("/sys/devices/system/node/node1/cpumap", "00000004\n")
        .unwrap();
    // cpu3: in no node at all.
    let json = topology(dir.path());
    let nodes: Vec<Value> = cpus(&json).iter().map(|c| c["numa"].clone()).collect();
    assert_eq!(nodes, vec![json!(0), json!(0), json!(1), Value::Null]);
    let human = venussup(&["topology", "--fs-root", root_arg(dir.path())]);
    assert!(
        human.expect_code(0).stdout.contains("NUMA node ?\n"),
        "{}",
        human.stdout
    );
}

#[test]
fn simulated_two_nodes_two_l3_per_node_human_tree() {
    let (dir, _) = regular(&Shape {
        l3_per_node: 2,
        nodes_per_package: 2,
        ..shape(1, 4, 2, Numbering::Adjacent)
    });
    let out = venussup(&["topology", "--fs-root", root_arg(dir.path())]);
    assert_eq!(
        out.expect_code(0).stdout,
        "8 CPUs online (0-7) in 4 cores, 2 threads per core\n\
         package 0\n\
         \x20 NUMA node 0\n\
         \x20   L3 0-1\n\
         \x20     core 0: 0-1\n\
         \x20   L3 2-3\n\
         \x20     core 1: 2-3\n\
         \x20 NUMA node 1\n\
         \x20   L3 4-5\n\
         \x20     core 2: 4-5\n\
         \x20   L3 6-7\n\
         \x20     core 3: 6-7\n"
    );
}

#[test]
fn no_cpu_folder_is_an_error_naming_the_path() {
    let dir = tempdir();
    let out = venussup(&["topology", "--json", "--fs-root", root_arg(dir.path())]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("sys/devices/system/cpu"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

// ---- real machines (hwloc's snapshots; lstopo agrees) ---------------------

fn snapshot(name: &str) -> std::path::PathBuf {
    project_file(&format!("integration/fixtures/topologies/{name}"))
}

#[test]
fn hwloc_16em64t_4_packages_2_cores_2_threads_masks_only() {
    let root = snapshot("16em64t-4s2c2t");
    let json = topology(&root);
    assert_eq!(
        cpu(&json, 0),
        &json!({"cpu": 0, "online": true, "package": 0, "core": 0,
                "siblings": [0, 8], "l3": [0, 4, 8, 12], "numa": 0})
    );
    assert_eq!(
        distinct_sets(&json, "siblings"),
        vec!["0,8", "1,9", "2,10", "3,11", "4,12", "5,13", "6,14", "7,15"]
    );
    assert_eq!(
        distinct_sets(&json, "l3"),
        vec!["0,4,8,12", "1,5,9,13", "2,6,10,14", "3,7,11,15"]
    );
    assert_eq!(
        cpus_by(&json, "package"),
        map(&[
            ("0", "0,4,8,12"),
            ("1", "1,5,9,13"),
            ("2", "2,6,10,14"),
            ("3", "3,7,11,15")
        ])
    );
    assert_eq!(cpus_by(&json, "numa"), map(&[("0", "0-15")]));
    // The snapshot has no `online` files: no CPU could be taken offline.
    assert_eq!(
        dry_run(&root).expect_code(1).json(),
        json!({"to_offline": [], "cannot_offline": (8..16).collect::<Vec<_>>()})
    );
}

#[test]
fn hwloc_20em64t_hybrid_6_p_cores_with_smt_8_e_cores_without() {
    let root = snapshot("20em64t-hybrid-1p6c2t+2ca4co1t");
    let json = topology(&root);
    assert_eq!(
        distinct_sets(&json, "siblings"),
        vec![
            "0-1", "2-3", "4-5", "6-7", "8-9", "10-11", "12", "13", "14", "15", "16", "17", "18",
            "19"
        ]
    );
    assert_eq!(distinct_sets(&json, "l3"), vec!["0-19"]);
    assert_eq!(cpus_by(&json, "package"), map(&[("0", "0-19")]));
    assert_eq!(cpus_by(&json, "numa"), map(&[("0", "0-19")]));
    assert_eq!(cpu(&json, 12)["core"], 24);
    assert_eq!(to_offline(&root), "1,3,5,7,9,11");
}

#[test]
fn hwloc_32intel64_2_packages_8_cores_2_threads_2_nodes() {
    let root = snapshot("32intel64-2p8co2t+8ve");
    let json = topology(&root);
    assert_eq!(cpus(&json).len(), 32);
    assert_eq!(
        cpu(&json, 24),
        &json!({"cpu": 24, "online": true, "package": 1, "core": 0,
                "siblings": [8, 24], "l3": [8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31],
                "numa": 1})
    );
    assert_eq!(distinct_sets(&json, "l3"), vec!["0-7,16-23", "8-15,24-31"]);
    assert_eq!(
        cpus_by(&json, "package"),
        map(&[("0", "0-7,16-23"), ("1", "8-15,24-31")])
    );
    assert_eq!(
        cpus_by(&json, "numa"),
        map(&[("0", "0-7,16-23"), ("1", "8-15,24-31")])
    );
    assert_eq!(to_offline(&root), "16-31");
}

// ---- the live machine (read only) ----------------------------------------

/// `processor`, `physical id` and `core id` of every CPU in /proc/cpuinfo.
fn cpuinfo() -> Vec<BTreeMap<String, String>> {
    let text = fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
    text.split("\n\n")
        .filter(|block| block.contains("processor"))
        .map(|block| {
            block
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn live_sys_matches_proc_cpuinfo_and_online_list() {
    let json = topology(Path::new("/"));
    let online_file = fs::read_to_string("/sys/devices/system/cpu/online").expect("read online");
    let online: CpuSet = cpus(&json)
        .iter()
        .filter(|c| c["online"] == true)
        .map(|c| u32::try_from(c["cpu"].as_u64().unwrap()).unwrap())
        .collect();
    assert_eq!(online, set(&online_file));
    let info = cpuinfo();
    let processors: CpuSet = info
        .iter()
        .map(|p| p["processor"].parse::<u32>().unwrap())
        .collect();
    assert_eq!(online, processors);
    if !info
        .iter()
        .all(|p| p.contains_key("physical id") && p.contains_key("core id"))
    {
        return; // not x86: /proc/cpuinfo does not tell packages and cores
    }
    // Threads with the same (physical id, core id) share a core.
    let mut cores: BTreeMap<(String, String), CpuSet> = BTreeMap::new();
    for p in &info {
        let n: u32 = p["processor"].parse().unwrap();
        cores
            .entry((p["physical id"].clone(), p["core id"].clone()))
            .or_default()
            .insert(n);
    }
    for p in &info {
        let n: u64 = p["processor"].parse().unwrap();
        let c = cpu(&json, n);
        assert_eq!(c["package"].to_string(), p["physical id"], "cpu{n}");
        assert_eq!(c["core"].to_string(), p["core id"], "cpu{n}");
        let key = (p["physical id"].clone(), p["core id"].clone());
        assert_eq!(set_of(&c["siblings"]), cores[&key].to_string(), "cpu{n}");
    }
    let siblings: CpuSet = cores
        .values()
        .flat_map(|threads| threads.iter().skip(1))
        .collect();
    let out = venussup(&["smt", "off", "--dry-run", "--json"]);
    assert_eq!(set_of(&out.json()["to_offline"]), siblings.to_string());
}
