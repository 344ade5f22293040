//! `[host.prepare]` in `venussup run`, against a simulated host under
//! `--fs-root`: huge pages per NUMA node (with a kernel stand-in that grants
//! fewer than asked), a real `hugetlbfs` mount in a temp folder, the
//! governor, and GPU persistence run only when there is a GPU. Nothing here
//! writes to the live /sys.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;

use common::daemon::{Setup, WAIT};
use common::venussup;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use serde_json::json;
use venussup::host::topology::sim::{Numbering, Shape, SimHost, Style};
use venussup::util::fsroot::FsRoot;

/// Two packages of two cores, one NUMA node each, every CPU on the
/// `powersave` governor and 2 MiB huge pages on each node.
fn host() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let shape = Shape {
        packages: 2,
        ..Shape::simple(2, 1, Numbering::Spread)
    };
    SimHost::regular(root.path(), &shape, Style::MODERN).unwrap();
    for cpu in 0..4 {
        let dir = root
            .path()
            .join(format!("sys/devices/system/cpu/cpu{cpu}/cpufreq"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("scaling_governor"), "powersave\n").unwrap();
    }
    for node in 0..2 {
        let dir = pages_dir(root.path(), node);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("nr_hugepages"), "0\n").unwrap();
    }
    root
}

fn pages_dir(root: &Path, node: u32) -> PathBuf {
    root.join(format!(
        "sys/devices/system/node/node{node}/hugepages/hugepages-2048kB"
    ))
}

/// Node 0's `nr_hugepages` played by a kernel whose memory is too
/// fragmented for all it is asked: the file is a FIFO; the stand-in takes
/// what venussup writes and answers the read-back with 98 pages. Returns
/// what venussup wrote.
fn fragmented_kernel(root: &Path) -> thread::JoinHandle<String> {
    let file = pages_dir(root, 0).join("nr_hugepages");
    fs::remove_file(&file).unwrap();
    nix::unistd::mkfifo(&file, Mode::from_bits_truncate(0o600)).unwrap();
    thread::spawn(move || {
        // Each open blocks until venussup opens the other end.
        let asked = fs::read_to_string(&file).unwrap();
        fs::write(&file, "98\n").unwrap();
        asked
    })
}

/// A mount this test made, detached whatever happens.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn mounted_hugetlbfs(at: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    venussup::util::mountinfo::points_and_types(&table)
        .iter()
        .any(|(p, t)| Path::new(p) == at && t == "hugetlbfs")
}

const SERVICE: &str = "[[service]]\nname = \"sealer\"\ncpus = \"0-1\"\ncommand = [\"{bin}\", \"standin\", \"--name\", \"sealer\"]\n";

#[test]
fn a_fragmented_kernel_granting_fewer_pages_is_reported_and_the_rest_is_prepared() {
    let root = host();
    FsRoot::new(root.path());
    venussup::host::gpu::simulate(
        &FsRoot::new(root.path()),
        "0000:01:00.0",
        0,
        "NVIDIA GeForce RTX 3060 Ti",
    )
    .unwrap();
    let kernel = fragmented_kernel(root.path());
    let setup = Setup::new(SERVICE);
    let huge = root.path().join("mnt/huge");
    let _unmount = Unmount(huge.clone());
    setup.host_line(&format!(
        "prepare = {{ hugepages = {{ size = \"2MiB\", per_node = 100 }}, hugetlbfs = \"/mnt/huge\", governor = \"performance\", gpu_persistence = [\"/bin/sh\", \"-c\", \"echo persistence on >> {}/pm.log\"] }}",
        setup.dir.path().display()
    ));
    let mut d = setup.start_args(&["--fs-root", root.path().to_str().unwrap()]);
    d.wait_service("sealer", "running", |s| s["state"] == "running");
    assert_eq!(
        kernel.join().unwrap(),
        "100",
        "venussup asked node 0 for 100"
    );
    let st = d.status();
    let prep = &st["prepare"];
    assert_eq!(
        prep["hugepages"],
        json!({"size_kib": 2048, "nodes": [
            {"node": 0, "asked": 100, "granted": 98},
            {"node": 1, "asked": 100, "granted": 100}
        ]}),
        "{st:#}"
    );
    assert_eq!(prep["governor"]["cpus"], json!([0, 1]), "{st:#}");
    for (cpu, governor) in [(0, "performance"), (1, "performance"), (2, "powersave")] {
        let file = root.path().join(format!(
            "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        ));
        assert_eq!(
            fs::read_to_string(file).unwrap().trim(),
            governor,
            "cpu{cpu}: only the services' CPUs"
        );
    }
    assert_eq!(prep["hugetlbfs"]["ok"], true, "{st:#}");
    assert!(
        mounted_hugetlbfs(&huge),
        "hugetlbfs is mounted at {}",
        huge.display()
    );
    assert_eq!(prep["gpu_persistence"]["ok"], true, "{st:#}");
    assert_eq!(
        fs::read_to_string(setup.path("pm.log")).unwrap(),
        "persistence on\n"
    );
    assert!(d.log().contains("services start anyway"), "{}", d.log());
    let cfg = setup.config();
    let text = venussup(&["status", "--config", cfg.to_str().unwrap()]);
    assert!(
        text.expect_code(0)
            .stdout
            .contains("prepared: hugepages 2MiB: node0 98/100, node1 100/100"),
        "{}",
        text.stdout
    );
    let metrics = venussup(&["metrics", "--config", cfg.to_str().unwrap()]);
    let m = &metrics.expect_code(0).stdout;
    assert!(
        m.contains("venussup_hugepages_granted{node=\"0\",size_bytes=\"2097152\"} 98"),
        "{m}"
    );
    assert!(
        m.contains("venussup_host_prepare_ok{step=\"hugepages\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("venussup_host_prepare_ok{step=\"governor\"} 1"),
        "{m}"
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn a_second_start_finds_everything_done_and_without_a_gpu_persistence_is_skipped() {
    let root = host();
    let setup = Setup::new(SERVICE);
    let huge = root.path().join("mnt/huge");
    let _unmount = Unmount(huge.clone());
    setup.host_line(&format!(
        "prepare = {{ hugepages = {{ size = \"2MiB\", per_node = [3, 0] }}, hugetlbfs = \"/mnt/huge\", gpu_persistence = [\"/bin/sh\", \"-c\", \"touch {}/ran\"] }}",
        setup.dir.path().display()
    ));
    let args = ["--fs-root", root.path().to_str().unwrap()];
    for round in 0..2 {
        let mut d = setup.start_args(&args);
        d.wait_service("sealer", "running", |s| s["state"] == "running");
        let prep = d.status()["prepare"].clone();
        assert_eq!(
            prep["hugepages"]["nodes"],
            json!([{"node": 0, "asked": 3, "granted": 3}, {"node": 1, "asked": 0, "granted": 0}]),
            "round {round}: {prep:#}"
        );
        let note = prep["hugetlbfs"]["note"].as_str().unwrap().to_string();
        let expected = if round == 0 {
            "mounted at"
        } else {
            "already mounted at"
        };
        assert!(note.starts_with(expected), "round {round}: {note}");
        assert_eq!(
            prep["gpu_persistence"],
            json!({"ok": true, "note": "skipped: no GPU"})
        );
        d.signal(Signal::SIGTERM);
        assert_eq!(d.wait_exit(WAIT).code(), Some(0));
    }
    assert!(!setup.path("ran").exists(), "no GPU: the command never ran");
    let once = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(huge.to_str().unwrap()))
        .count();
    assert_eq!(once, 1, "mounted once, not stacked");
}

#[test]
fn check_shows_the_preparation_and_plan_takes_the_pages_from_memory() {
    let root = host();
    fs::create_dir_all(root.path().join("proc")).unwrap();
    fs::write(
        root.path().join("proc/meminfo"),
        "MemTotal:       16777216 kB\n",
    )
    .unwrap();
    let setup = Setup::new(
        "[capacity]\nsector_size = \"2KiB\"\nseal_paths = [\"/\"]\n\n[[service]]\nname = \"sealer\"\ncommand = [\"/bin/true\"]\n",
    );
    setup.host_line(
        "prepare = { hugepages = { size = \"1GiB\", per_node = 4 }, governor = \"performance\" }",
    );
    let cfg = setup.config();
    let fs_root = root.path().to_str().unwrap();
    let check = venussup(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--fs-root",
        fs_root,
    ]);
    assert!(
        check
            .expect_code(0)
            .stdout
            .contains("prepare at start: hugepages 1GiB × 4 per NUMA node · governor performance"),
        "{}",
        check.stdout
    );
    let plan = venussup(&[
        "plan",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
        "--fs-root",
        fs_root,
    ]);
    // Its L3 groups of 2 cores hold no 4-core SDR unit, so not one sector
    // fits and `plan` exits 1 (it never advises 0); the memory still shows.
    let p = plan.expect_code(1).json();
    assert_eq!(p["hugepages"], 8u64 << 30, "{p:#}");
    assert_eq!(
        p["memory"],
        8u64 << 30,
        "16 GiB less 2 nodes × 4 × 1 GiB: {p:#}"
    );
}

#[test]
fn config_mistakes_in_prepare_are_each_reported_at_their_place() {
    let setup = Setup::new("");
    setup.host_line(
        "prepare = { hugepages = { size = \"3MiB\", per_node = [] }, hugetlbfs = \"huge\", governor = \"fast!\" }",
    );
    let cfg = setup.config();
    let out = venussup(&["check", "--config", cfg.to_str().unwrap()]);
    out.expect_code(1);
    for (col, what) in [
        ("2:34", "a huge page size is a power of two"),
        ("2:53", "`per_node` lists no node"),
        ("2:71", "`hugetlbfs` must be an absolute path"),
        ("2:90", "`fast!` is not a governor name"),
    ] {
        assert!(
            out.stderr
                .contains(&format!("venussup.toml:{col}: error: {what}")),
            "{what} at {col}:\n{}",
            out.stderr
        );
    }
    let typo = Setup::new("[host.prepare]\ngovernor = \"performance\"\nswap = false\n");
    let text = fs::read_to_string(typo.config()).unwrap();
    let line = text.lines().position(|l| l.starts_with("swap")).unwrap() + 1;
    let out = venussup(&["check", "--config", typo.config().to_str().unwrap()]);
    out.expect_code(1);
    assert!(
        out.stderr.contains(&format!(
            "venussup.toml:{line}:1: error: unknown field `swap`"
        )),
        "{}",
        out.stderr
    );
}
