//! `venussup smt off|on|status` on simulated hosts and a copy of a real
//! machine's snapshot: what is written, what is recorded, what comes back.
//! Nothing here writes to the live /sys.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{project_file, venussup, Outcome};
use serde_json::{json, Value};
use venussup::host::topology::sim::{copy_tree, Numbering, Shape, SimHost, Style};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// `venussup smt ARGS... --fs-root ROOT`.
fn smt(root: &Path, args: &[&str]) -> Outcome {
    let mut all = vec!["smt"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--fs-root", root.to_str().expect("utf-8 temp path")]);
    venussup(&all)
}

/// A host of 4 cores × 2 threads, siblings `N,N+4`.
fn intel_like(root: &Path) -> SimHost {
    SimHost::regular(root, &Shape::simple(4, 2, Numbering::Spread), Style::MODERN)
        .expect("write host")
}

fn record_file(root: &Path) -> PathBuf {
    root.join("var/lib/venussup/smt-offline.json")
}

fn record(root: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(record_file(root)).expect("read record"))
        .expect("record is JSON")
}

/// What each CPU's `online` file says, `-` where there is none.
fn online_files(host: &SimHost, cpus: u32) -> String {
    (0..cpus)
        .map(|n| {
            host.online_file(n)
                .map_or_else(|| "-".to_string(), |s| s.trim().to_string())
        })
        .collect()
}

#[test]
fn off_takes_siblings_offline_then_a_second_off_changes_nothing() {
    let dir = tempdir();
    let host = intel_like(dir.path());
    let first = smt(dir.path(), &["off", "--json"]);
    assert_eq!(
        first.expect_code(0).json(),
        json!({"to_offline": [4, 5, 6, 7], "offlined": [4, 5, 6, 7], "failed": []})
    );
    assert_eq!(online_files(&host, 8), "-1110000");
    assert_eq!(record(dir.path()), json!({"offlined": [4, 5, 6, 7]}));

    let before = fs::metadata(record_file(dir.path()))
        .unwrap()
        .modified()
        .unwrap();
    let second = smt(dir.path(), &["off", "--json"]);
    assert_eq!(
        second.expect_code(0).json(),
        json!({"to_offline": [], "offlined": [], "failed": []})
    );
    assert_eq!(online_files(&host, 8), "-1110000");
    assert_eq!(
        fs::metadata(record_file(dir.path()))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    let dry = smt(dir.path(), &["off", "--dry-run", "--json"]);
    assert_eq!(dry.expect_code(0).json(), json!({"to_offline": []}));
}

#[test]
fn on_restores_exactly_what_off_took() {
    let dir = tempdir();
    let host = intel_like(dir.path());
    // cpu7 was offline before venussup came: `on` leaves it offline.
    host.set_offline(7).unwrap();
    smt(dir.path(), &["off"]).expect_code(0);
    assert_eq!(online_files(&host, 8), "-1110000");
    assert_eq!(record(dir.path()), json!({"offlined": [4, 5, 6]}));

    let dry = smt(dir.path(), &["on", "--dry-run", "--json"]);
    assert_eq!(dry.expect_code(0).json(), json!({"to_online": [4, 5, 6]}));
    assert_eq!(online_files(&host, 8), "-1110000");

    let on = smt(dir.path(), &["on", "--json"]);
    assert_eq!(
        on.expect_code(0).json(),
        json!({"to_online": [4, 5, 6], "onlined": [4, 5, 6], "failed": []})
    );
    assert_eq!(online_files(&host, 8), "-1111110");
    assert_eq!(record(dir.path()), json!({"offlined": []}));
    let again = smt(dir.path(), &["on", "--json"]);
    assert_eq!(again.expect_code(0).json()["to_online"], json!([]));

    let all = smt(dir.path(), &["on", "--all", "--json"]);
    assert_eq!(all.expect_code(0).json()["onlined"], json!([7]));
    assert_eq!(online_files(&host, 8), "-1111111");
}

#[test]
fn off_never_writes_cpu0_nor_a_cpu_without_online_file() {
    let dir = tempdir();
    let host = SimHost::regular(
        dir.path(),
        &Shape::simple(2, 2, Numbering::Adjacent),
        Style::MODERN,
    )
    .unwrap();
    host.remove("/sys/devices/system/cpu/cpu3/online").unwrap();
    let dry = smt(dir.path(), &["off", "--dry-run", "--json"]);
    assert_eq!(
        dry.expect_code(1).json(),
        json!({"to_offline": [1], "cannot_offline": [3]})
    );
    let off = smt(dir.path(), &["off", "--json"]);
    assert_eq!(
        off.expect_code(1).json(),
        json!({"to_offline": [1], "offlined": [1], "failed": [], "cannot_offline": [3]})
    );
    assert!(off.stderr.contains("no `online` file"), "{}", off.stderr);
    assert_eq!(online_files(&host, 4), "-01-");
}

#[test]
fn off_tries_every_cpu_and_fails_after_all() {
    let dir = tempdir();
    let host = intel_like(dir.path());
    // cpu5's `online` cannot be written (a folder stands in its place).
    host.remove("/sys/devices/system/cpu/cpu5/online").unwrap();
    fs::create_dir(host.cpu_dir(5).join("online")).unwrap();
    let out = smt(dir.path(), &["off", "--json"]);
    let json = out.expect_code(1).json();
    assert_eq!(json["offlined"], json!([4, 6, 7]));
    assert_eq!(json["failed"][0]["cpu"], 5);
    let error = json["failed"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("failed to write `0` to "), "{error}");
    assert!(error.contains("cpu5/online"), "{error}");
    assert!(out.stderr.contains("cpu5"), "{}", out.stderr);
    assert_eq!(record(dir.path()), json!({"offlined": [4, 6, 7]}));
}

#[test]
fn state_folder_from_config_is_kept_inside_fs_root() {
    let dir = tempdir();
    let root = dir.path().join("host");
    let host = intel_like(&root);
    let config = dir.path().join("venussup.toml");
    fs::write(&config, "[host]\nstate_dir = \"/srv/venussup\"\n").unwrap();
    smt(&root, &["off", "--config", config.to_str().unwrap()]).expect_code(0);
    let recorded = root.join("srv/venussup/smt-offline.json");
    assert!(recorded.exists(), "no record at {}", recorded.display());
    assert!(!record_file(&root).exists());
    let status = smt(
        &root,
        &["status", "--json", "--config", config.to_str().unwrap()],
    );
    assert_eq!(
        status.expect_code(0).json()["offlined_by_venussup"],
        json!([4, 5, 6, 7])
    );
    smt(&root, &["on", "-c", config.to_str().unwrap()]).expect_code(0);
    assert_eq!(online_files(&host, 8), "-1111111");
}

#[test]
fn status_counts_cores_threads_and_offline_siblings() {
    let dir = tempdir();
    intel_like(dir.path());
    let before = smt(dir.path(), &["status", "--json"]);
    assert_eq!(
        before.expect_code(0).json(),
        json!({"cores": 4, "threads_per_core": {"min": 2, "max": 2},
               "online": [0, 1, 2, 3, 4, 5, 6, 7], "offline": [],
               "offlined_by_venussup": [], "siblings_online": [4, 5, 6, 7], "cannot_offline": []})
    );
    smt(dir.path(), &["off"]).expect_code(0);
    let after = smt(dir.path(), &["status"]);
    assert_eq!(
        after.expect_code(0).stdout,
        "online: 0-3 (4 cores, 1 thread per core)\n\
         siblings online: none\n\
         offline: 4-7; venussup took 4-7 offline (`venussup smt on` brings them back)\n"
    );
}

#[test]
fn a_corrupt_record_fails_on_but_off_still_takes_siblings_offline() {
    let dir = tempdir();
    let host = intel_like(dir.path());
    fs::create_dir_all(record_file(dir.path()).parent().unwrap()).unwrap();
    fs::write(record_file(dir.path()), "not json").unwrap();
    let off = smt(dir.path(), &["off", "--json"]);
    let json = off.expect_code(1).json();
    assert_eq!(json["offlined"], json!([4, 5, 6, 7]));
    assert!(
        json["error"].as_str().unwrap().contains("smt-offline.json"),
        "{json}"
    );
    assert_eq!(
        fs::read_to_string(record_file(dir.path())).unwrap(),
        "not json"
    );
    let on = smt(dir.path(), &["on"]);
    on.expect_code(1);
    assert!(on.stderr.contains("failed to parse"), "{}", on.stderr);
    assert_eq!(online_files(&host, 8), "-1110000");
    smt(dir.path(), &["on", "--all"]).expect_code(1);
    assert_eq!(online_files(&host, 8), "-1111111");
}

#[test]
fn flags_that_do_not_fit_the_action_are_usage_errors() {
    let dir = tempdir();
    intel_like(dir.path());
    smt(dir.path(), &["off", "--all"]).expect_code(2);
    smt(dir.path(), &["status", "--dry-run"]).expect_code(2);
    smt(dir.path(), &["sideways"]).expect_code(2);
    assert!(!record_file(dir.path()).exists());
}

#[test]
fn hwloc_32intel64_copy_off_off_on_round_trip() {
    let dir = tempdir();
    let snapshot = project_file("integration/fixtures/topologies/32intel64-2p8co2t+8ve");
    copy_tree(&snapshot, dir.path()).unwrap();
    let host = SimHost::new(dir.path());
    let off = smt(dir.path(), &["off", "--json"]);
    let siblings: Vec<u32> = (16..32).collect();
    assert_eq!(off.expect_code(0).json()["offlined"], json!(siblings));
    assert_eq!(
        online_files(&host, 32),
        format!("{}{}", "1".repeat(16), "0".repeat(16))
    );
    let again = smt(dir.path(), &["off", "--json"]);
    assert_eq!(again.expect_code(0).json()["to_offline"], json!([]));
    let topology = venussup(&[
        "topology",
        "--json",
        "--fs-root",
        dir.path().to_str().unwrap(),
    ]);
    let json = topology.expect_code(0).json();
    assert_eq!(json["cpus"][8]["siblings"], json!([8]));
    assert_eq!(json["cpus"][8]["l3"], json!([8, 9, 10, 11, 12, 13, 14, 15]));
    smt(dir.path(), &["on"]).expect_code(0);
    assert_eq!(online_files(&host, 32), "1".repeat(32));
}
