//! Confinement against simulated cgroupfs trees (tempdirs filled the way
//! the kernel fills a new cgroup): what is written where, idempotence,
//! release, stale cleanup, and what happens without cgroups. The real
//! kernel is exercised by `integration/confine.rs`.

use std::fs;
use std::path::Path;

use super::*;
use crate::host::topology::sim::{Numbering, Shape, SimHost, Style};
use crate::host::Host;
use crate::sys::cgroup::sim::{SimCgroups, SimKernel};
use crate::util::diag::Diagnostics;

/// A simulated host: 2 NUMA nodes of 4 cores (one L3 each), no SMT.
fn host_dir() -> (tempfile::TempDir, FsRoot) {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        packages: 2,
        cores_per_package: 4,
        threads_per_core: 1,
        numbering: Numbering::Adjacent,
        l3_per_node: 1,
        nodes_per_package: 1,
    };
    SimHost::regular(dir.path(), &shape, Style::MODERN).unwrap();
    let root = FsRoot::new(dir.path());
    (dir, root)
}

/// The plan of one service `w` with `extra` config lines, on `root`.
fn plan_of(root: &FsRoot, extra: &str) -> ServicePlan {
    let text = format!("[[service]]\nname = \"w\"\ncommand = [\"/bin/true\"]\n{extra}");
    let path = Path::new("t.toml");
    let mut diags = Diagnostics::new(path, &text);
    let config = crate::config::parse(path, &text, &mut diags).unwrap();
    let plan = crate::plan::resolve(&config, &Host::probe(root), &mut diags);
    assert!(!diags.has_errors(), "{:?}", diags.into_sorted());
    plan.services.into_iter().next().unwrap()
}

fn setup(root: &FsRoot) -> CgroupSetup {
    CgroupSetup::new(Hierarchy::detect(root), "venussup", SimKernel::cgroupfs()).unwrap()
}

fn read(root: &FsRoot, path: &str) -> String {
    fs::read_to_string(root.path(path))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn v1_writes_the_parent_the_cpuset_and_the_memory_limit_and_is_idempotent() {
    let (_dir, root) = host_dir();
    SimCgroups::v1(&root, "0-7", "0-1").unwrap();
    let setup = setup(&root);
    assert!(matches!(
        setup.hierarchy(),
        Hierarchy::V1 {
            cpuset: Some(_),
            memory: Some(_),
            tracking: Some(_),
        }
    ));
    let plan = plan_of(
        &root,
        "cpus = \"50%\"\nlimits = { memory_max = \"1GiB\" }\n",
    );
    for _ in 0..2 {
        let c = prepare(&setup, &plan).unwrap();
        // cpuset, memory, and its tracking cgroup in the hybrid cgroup2.
        assert_eq!(c.cgroups().len(), 3);
        assert_eq!(
            c.cgroups()[2],
            root.path("/sys/fs/cgroup/unified/venussup/w")
        );
        assert!(c.target().is_some(), "born in its tracking cgroup");
        assert!(c.warnings().is_empty());
    }
    let cs = "/sys/fs/cgroup/cpuset/venussup";
    assert_eq!(read(&root, &format!("{cs}/cpuset.cpus")), "0-7");
    assert_eq!(read(&root, &format!("{cs}/cpuset.mems")), "0-1");
    assert_eq!(read(&root, &format!("{cs}/w/cpuset.cpus")), "0-3");
    assert_eq!(read(&root, &format!("{cs}/w/cpuset.mems")), "0");
    assert_eq!(
        read(
            &root,
            "/sys/fs/cgroup/memory/venussup/w/memory.limit_in_bytes"
        ),
        "1073741824"
    );
}

#[test]
fn v2_passes_controllers_down_and_resets_what_is_not_asked() {
    let (_dir, root) = host_dir();
    SimCgroups::v2(&root, "cpuset cpu io memory pids", "0-7", "0-1").unwrap();
    let setup = setup(&root);
    assert_eq!(
        setup.hierarchy().to_string(),
        format!(
            "cgroup v2 at {} (cpuset, memory)",
            root.path("/sys/fs/cgroup").display()
        )
    );
    let plan = plan_of(&root, "cpus = \"4-7\"\n");
    let c = prepare(&setup, &plan).unwrap();
    assert_eq!(c.cgroups(), [root.path("/sys/fs/cgroup/venussup/w")]);
    assert_eq!(
        read(&root, "/sys/fs/cgroup/cgroup.subtree_control"),
        "+cpuset +memory"
    );
    assert_eq!(
        read(&root, "/sys/fs/cgroup/venussup/cgroup.subtree_control"),
        "+cpuset +memory"
    );
    assert_eq!(read(&root, "/sys/fs/cgroup/venussup/w/cpuset.cpus"), "4-7");
    assert_eq!(read(&root, "/sys/fs/cgroup/venussup/w/cpuset.mems"), "1");
    assert_eq!(read(&root, "/sys/fs/cgroup/venussup/w/memory.max"), "max");
}

#[test]
fn v2_gives_an_unconfined_service_and_a_timers_runs_a_tracking_cgroup_each() {
    let (_dir, root) = host_dir();
    SimCgroups::v2(&root, "cpuset cpu io memory pids", "0-7", "0-1").unwrap();
    let setup = setup(&root);
    let c = prepare(&setup, &plan_of(&root, "")).unwrap();
    assert_eq!(c.cgroups(), [root.path("/sys/fs/cgroup/venussup/w")]);
    assert!(c.target().is_some(), "born in its cgroup");
    assert_eq!(read(&root, "/sys/fs/cgroup/venussup/w/cpuset.cpus"), "");
    let run = prepare_tracking(&setup, &Helpers::Timer("pledge").cgroup()).unwrap();
    assert_eq!(
        run.cgroups(),
        [root.path("/sys/fs/cgroup/venussup/timer:pledge")]
    );
    assert!(run.target().is_some());
    let hook = prepare_tracking(&setup, &Helpers::Hook(3).cgroup()).unwrap();
    assert_eq!(
        hook.cgroups(),
        [root.path("/sys/fs/cgroup/venussup/hook:3")]
    );
    for bad in ["hook:x", "upgrade:check", "a:b"] {
        assert!(
            matches!(
                prepare_tracking(&setup, bad),
                Err(ConfineError::BadName { .. })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        prepare_tracking(&setup, &Helpers::Timer("../x").cgroup()),
        Err(ConfineError::BadName { .. })
    ));
    let stale = cleanup_stale(&setup, &["w"]).unwrap();
    assert!(stale.is_empty(), "{stale:?}");
    assert!(
        !root.path("/sys/fs/cgroup/venussup/timer:pledge").exists(),
        "an empty run cgroup is removed at start"
    );
}

/// The unit's cgroup as systemd delegates it (`Delegate=yes`).
const UNIT: &str = "/system.slice/venussup.service";

#[test]
fn v2_under_systemd_works_inside_the_units_cgroup_after_moving_itself_to_a_leaf() {
    let (_dir, root) = host_dir();
    let all = "cpuset cpu io memory pids";
    SimCgroups::v2_in(&root, UNIT, all, all, "0-7", "0-1").unwrap();
    let setup = setup(&root);
    let unit = format!("/sys/fs/cgroup{UNIT}");
    assert_eq!(
        setup.hierarchy().to_string(),
        format!(
            "cgroup v2 at {}, inside {UNIT} (cpuset, memory)",
            root.path("/sys/fs/cgroup").display()
        )
    );
    let c = prepare(&setup, &plan_of(&root, "cpus = \"4-7\"\n")).unwrap();
    assert_eq!(c.cgroups(), [root.path(format!("{unit}/venussup/w"))]);
    assert!(c.target().is_some(), "a v2 child is born in its cgroup");
    assert_eq!(
        read(&root, &format!("{unit}/supervisor/cgroup.procs")),
        std::process::id().to_string()
    );
    assert_eq!(
        read(&root, &format!("{unit}/cgroup.subtree_control")),
        "+cpuset +memory"
    );
    assert_eq!(
        read(&root, &format!("{unit}/venussup/w/cpuset.cpus")),
        "4-7"
    );
    // The host's root is never written.
    assert_eq!(read(&root, "/sys/fs/cgroup/cgroup.subtree_control"), "");
    assert!(!root.path("/sys/fs/cgroup/venussup").exists());
    // Detected again from its leaf (a reload), it still works in the unit.
    fs::write(
        root.path(crate::host::cgroups::OWN_CGROUP),
        format!("0::{UNIT}/supervisor\n"),
    )
    .unwrap();
    assert_eq!(&Hierarchy::detect(&root), setup.hierarchy());
}

#[test]
fn v2_without_a_delegated_cpuset_holds_by_the_mask_and_never_writes_the_root() {
    let (_dir, root) = host_dir();
    SimCgroups::v2_in(
        &root,
        UNIT,
        "cpuset cpu io memory pids",
        "memory pids",
        "0-7",
        "0-1",
    )
    .unwrap();
    let setup = setup(&root);
    let why = setup.hierarchy().to_string();
    assert!(
        why.contains(&format!("not to venussup's own cgroup {UNIT}"))
            && why.contains("Delegate=yes"),
        "{why}"
    );
    let c = prepare(
        &setup,
        &plan_of(&root, "cpus = \"4-7\"\nconfine = \"cgroup\"\n"),
    )
    .unwrap();
    assert!(c.cgroups().is_empty());
    assert!(
        c.warnings()[0].contains("affinity mask only"),
        "{:?}",
        c.warnings()
    );
    assert_eq!(read(&root, "/sys/fs/cgroup/cgroup.subtree_control"), "");
    assert_eq!(
        read(
            &root,
            &format!("/sys/fs/cgroup{UNIT}/cgroup.subtree_control")
        ),
        ""
    );
}

#[test]
fn confine_chooses_affinity_cgroup_or_both() {
    let (_dir, root) = host_dir();
    SimCgroups::v1(&root, "0-7", "0-1").unwrap();
    let h = Hierarchy::detect(&root);
    let set = CpuSet::parse_list("0-3").unwrap();
    let d = |confine: &str| {
        decide(
            &h,
            &plan_of(&root, &format!("cpus = \"0-3\"\nconfine = \"{confine}\"\n")),
        )
        .unwrap()
    };
    let both = d("both");
    assert_eq!(
        (both.affinity.as_ref(), both.cpuset.as_ref()),
        (Some(&set), Some(&set))
    );
    assert_eq!(
        (d("affinity").affinity.as_ref(), d("affinity").cpuset),
        (Some(&set), None)
    );
    assert_eq!(
        (d("cgroup").affinity, d("cgroup").cpuset.as_ref()),
        (None, Some(&set))
    );
    assert_eq!((d("none").affinity, d("none").cpuset), (None, None));
    // No `cpus`: nothing to hold.
    assert_eq!(decide(&h, &plan_of(&root, "")).unwrap().affinity, None);
}

#[test]
fn without_cgroups_a_warning_and_the_affinity_mask_only() {
    let (_dir, root) = host_dir();
    let setup = setup(&root);
    assert!(matches!(setup.hierarchy(), Hierarchy::None { .. }));
    let plan = plan_of(&root, "cpus = \"0-3\"\nconfine = \"cgroup\"\n");
    let d = decide(setup.hierarchy(), &plan).unwrap();
    assert_eq!(d.affinity, Some(CpuSet::parse_list("0-3").unwrap()));
    let c = prepare(&setup, &plan).unwrap();
    assert!(c.cgroups().is_empty());
    assert!(
        c.warnings()[0].contains("held by its affinity mask only"),
        "{:?}",
        c.warnings()
    );
}

/// Only multicore SDR escapes an affinity mask: a C2 worker held by its
/// mask (as `confine = "both"` asks) is no warning; a PreCommit1 one is.
#[test]
fn without_cgroups_only_multicore_sdr_is_warned_about_the_mask() {
    let (_dir, root) = host_dir();
    let setup = setup(&root);
    let c2 = plan_of(
        &root,
        "cpus = \"0-3\"\ntasks = [\"Commit\"]\nenv = { FIL_PROOFS_USE_MULTICORE_SDR = \"1\" }\n",
    );
    let d = decide(setup.hierarchy(), &c2).unwrap();
    assert_eq!((d.affinity.is_some(), d.warning), (true, None));
    let p1 = plan_of(&root, "cpus = \"0-3\"\ntasks = [\"PreCommit1\"]\nenv = { FIL_PROOFS_USE_MULTICORE_SDR = \"1\" }\n");
    let w = decide(setup.hierarchy(), &p1).unwrap().warning.unwrap();
    assert!(w.contains("multicore-SDR threads (its PreCommit1)"), "{w}");
    // Asked for the mask alone: what it asked, no warning.
    let masked = plan_of(&root, "cpus = \"0-3\"\nconfine = \"affinity\"\ntasks = [\"PreCommit1\"]\nenv = { FIL_PROOFS_USE_MULTICORE_SDR = \"1\" }\n");
    assert_eq!(decide(setup.hierarchy(), &masked).unwrap().warning, None);
}

#[test]
fn a_memory_limit_without_a_memory_controller_is_an_error() {
    let (_dir, root) = host_dir();
    SimCgroups::v2(&root, "cpuset cpu", "0-7", "0-1").unwrap();
    let plan = plan_of(
        &root,
        "cpus = \"0-3\"\nlimits = { memory_max = \"8GiB\" }\n",
    );
    let err = prepare(&setup(&root), &plan).unwrap_err();
    assert!(matches!(err, ConfineError::NoMemory { .. }), "{err}");
}

#[test]
fn release_removes_and_names_the_processes_that_hold_a_cgroup() {
    let (_dir, root) = host_dir();
    SimCgroups::v1(&root, "0-7", "0-1").unwrap();
    let setup = setup(&root);
    let plan = plan_of(
        &root,
        "cpus = \"0-3\"\nlimits = { memory_max = \"1GiB\" }\n",
    );
    prepare(&setup, &plan).unwrap();
    let procs = root.path("/sys/fs/cgroup/memory/venussup/w/cgroup.procs");
    fs::write(&procs, "4242\n4243\n").unwrap();
    assert_eq!(pids(&setup, "w").unwrap(), vec![4242, 4243]);
    let err = release(&setup, "w").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "failed to remove the cgroup {}: it still has processes 4242, 4243",
            root.path("/sys/fs/cgroup/memory/venussup/w").display()
        )
    );
    fs::write(&procs, "").unwrap();
    release(&setup, "w").unwrap();
    release(&setup, "w").unwrap();
    assert!(!root.path("/sys/fs/cgroup/cpuset/venussup/w").exists());
    remove_parent(&setup).unwrap();
    assert!(!root.path("/sys/fs/cgroup/cpuset/venussup").exists());
}

#[test]
fn stale_cgroups_empty_ones_go_the_others_are_reported() {
    let (_dir, root) = host_dir();
    SimCgroups::v1(&root, "0-7", "0-1").unwrap();
    let setup = setup(&root);
    prepare(&setup, &plan_of(&root, "cpus = \"0-3\"\n")).unwrap();
    let fs = SimKernel::cgroupfs();
    let parent = root.path("/sys/fs/cgroup/cpuset/venussup");
    for name in ["old", "ghost", "ghost/inner"] {
        fs.create(&parent.join(name)).unwrap();
    }
    fs::write(parent.join("ghost/inner/cgroup.procs"), "77\n").unwrap();
    let stale = cleanup_stale(&setup, &["w"]).unwrap();
    assert_eq!(
        stale,
        vec![StaleCgroup {
            path: parent.join("ghost"),
            pids: vec![77],
            owned: false
        }]
    );
    assert!(!parent.join("old").exists());
    assert!(parent.join("w").exists());
}

#[test]
fn a_failed_write_names_the_file_and_the_value() {
    let (_dir, root) = host_dir();
    SimCgroups::v1(&root, "0-7", "0-1").unwrap();
    let setup = setup(&root);
    // A plain folder where the cgroup should be, without the kernel's files.
    let parent = root.path("/sys/fs/cgroup/cpuset/venussup");
    SimKernel::cgroupfs().create(&parent).unwrap();
    fs::create_dir(parent.join("w")).unwrap();
    let err = prepare(&setup, &plan_of(&root, "cpus = \"0-3\"\n")).unwrap_err();
    let text = err.to_string();
    let file = root.path("/sys/fs/cgroup/cpuset/venussup/w/cpuset.mems");
    assert!(
        text.starts_with(&format!("failed to write `0` to {}: ", file.display())),
        "{text}"
    );
}

#[test]
fn names_that_are_not_plain_are_refused() {
    let (_dir, root) = host_dir();
    for bad in ["", ".", "..", "a/b", "-x", "cpu set"] {
        let err = CgroupSetup::new(Hierarchy::detect(&root), bad, Cgroupfs::real()).unwrap_err();
        assert!(matches!(err, ConfineError::BadName { .. }), "{bad}");
    }
    assert!(check_name("worker@0").is_ok());
}

#[test]
fn oom_kill_counts_are_read_from_either_version() {
    assert_eq!(
        super::parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
        Some(3)
    );
    assert_eq!(
        super::parse_oom_kill("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n"),
        Some(1)
    );
    assert_eq!(super::parse_oom_kill("oom_kill_disable 0\n"), None);
}

#[test]
fn the_parent_is_made_ready_once_and_again_when_it_was_removed_behind_our_back() {
    let (_dir, root) = host_dir();
    SimCgroups::v1(&root, "0-7", "0-1").unwrap();
    let setup = setup(&root);
    let plan = plan_of(&root, "cpus = \"0-3\"\n");
    prepare(&setup, &plan).unwrap();
    let parent = root.path("/sys/fs/cgroup/cpuset/venussup");
    // A restart does not write the parent again.
    fs::write(parent.join("cpuset.mems"), "1\n").unwrap();
    prepare(&setup, &plan).unwrap();
    assert_eq!(
        read(&root, "/sys/fs/cgroup/cpuset/venussup/cpuset.mems"),
        "1"
    );
    // Gone behind venussup's back: the next prepare fails below the
    // parent, makes the parent again and succeeds.
    fs::remove_dir_all(&parent).unwrap();
    let c = prepare(&setup, &plan).unwrap();
    assert_eq!(c.cgroups().len(), 2, "cpuset and tracking");
    let cs = "/sys/fs/cgroup/cpuset/venussup";
    assert_eq!(read(&root, &format!("{cs}/cpuset.cpus")), "0-7");
    assert_eq!(read(&root, &format!("{cs}/cpuset.mems")), "0-1");
    assert_eq!(read(&root, &format!("{cs}/w/cpuset.cpus")), "0-3");
}

/// On this machine's real cgroup2 mount (root; skipped elsewhere): after
/// `kill_all`, a child is still born alive in the cgroup by
/// `clone3(CLONE_INTO_CGROUP)` (a write to `cgroup.kill` would kill every
/// later child at birth; see `kill_all`).
#[test]
fn after_kill_all_the_next_child_born_in_the_cgroup_lives() {
    use crate::sys::spawn::{spawn, CgroupTarget, Output, SpawnSpec};
    use std::os::fd::AsFd as _;
    use std::time::Duration;
    let table = fs::read_to_string(crate::util::mountinfo::MOUNTINFO).unwrap();
    let Some(mount) = crate::util::mountinfo::parse(&table)
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
    else {
        eprintln!("SKIPPED: no cgroup2 mount");
        return;
    };
    let hierarchy = Hierarchy::V2 {
        mount: mount.point.into(),
        own: "/".into(),
        memory: false,
    };
    let parent = format!("venussup-test-killall-{}", std::process::id());
    let setup = CgroupSetup::new(hierarchy, &parent, Cgroupfs::real()).unwrap();
    let dir = setup.dirs("w").remove(0);
    if let Err(e) = fs::create_dir_all(&dir) {
        eprintln!("SKIPPED: cannot make a cgroup ({e})");
        return;
    }
    let cgroupfs = Cgroupfs::real();
    let run = |seconds: &str| {
        let (d, p) = (
            cgroupfs.open_dir(&dir).unwrap(),
            cgroupfs.open_procs(&dir).unwrap(),
        );
        let argv = vec!["/bin/sleep".to_string(), seconds.to_string()];
        let env = std::collections::BTreeMap::from([("PATH".to_string(), "/bin".to_string())]);
        let mut spec = SpawnSpec::helper(&argv, &env, Output::Append("/dev/null".into()), None);
        spec.cgroup = Some(CgroupTarget {
            dir: d.as_fd(),
            procs: p.as_fd(),
        });
        spawn(spec).unwrap().pid
    };
    let first = run("30");
    kill_all(&setup, "w").unwrap();
    let killed = nix::sys::wait::waitpid(first, None).unwrap();
    let second = run("0.05");
    let lived = nix::sys::wait::waitpid(second, None).unwrap();
    // A killed child leaves its cgroup once the kernel has finished it
    // (seconds on a loaded machine: a 2 s bound left cgroups behind).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fs::remove_dir(&dir).is_err() && dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = fs::remove_dir(dir.parent().unwrap());
    assert!(
        matches!(
            killed,
            nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
        ),
        "{killed:?}"
    );
    assert!(
        matches!(lived, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "the next child was killed at birth: {lived:?}"
    );
}
