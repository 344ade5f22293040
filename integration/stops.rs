//! Stops and restarts that keep sealing work: a planned stop drains, a
//! crash restart does not; exit 0 is a death; OOM kills and fatal start
//! errors are named; a service waits for its mounts. The stand-in worker
//! abandons its task on SIGTERM and exits 0, as the Go workers do.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::process::Command;

use common::daemon::{pid_of, wait_file, Setup, WAIT};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A worker with a 1.5 s task in `{dir}/<name>.task`, with or without a
/// drain that waits for the task to be done.
fn worker(name: &str, drain: bool) -> String {
    let mut s = format!(
        "[[service]]\nname = \"{name}\"\nrole = \"worker\"\nstable_after = \"100ms\"\n\
         command = [\"{{bin}}\", \"standin\", \"--name\", \"{name}\", \"--task\", \"1500ms\", \"--task-file\", \"{{dir}}/{name}.task\"]\n"
    );
    if drain {
        s.push_str(&format!(
            "drain = {{ command = [\"/bin/sh\", \"-c\", \"touch {{dir}}/{name}.disabled\"], quiet = [\"/bin/sh\", \"-c\", \"grep -qx done {{dir}}/{name}.task\"], poll_every = \"100ms\", timeout = \"30s\" }}\n"
        ));
    }
    s
}

#[test]
fn a_planned_stop_drains_so_the_task_finishes_while_a_plain_stop_abandons_it() {
    let setup = Setup::new(&format!(
        "{}\n{}",
        worker("drained", true),
        worker("plain", false)
    ));
    let d = setup.start();
    d.running("drained");
    d.running("plain");
    wait_file(&setup.path("drained.task"));
    wait_file(&setup.path("plain.task"));
    setup.cli(&["stop", "drained"]).expect_code(0);
    setup.cli(&["stop", "plain"]).expect_code(0);
    let draining = d.wait_service("drained", "draining", |s| s["state"] == "draining");
    assert!(
        draining["draining_secs"].is_number(),
        "status shows how long it has waited: {draining}"
    );
    d.wait_service("drained", "stopped", |s| s["state"] == "stopped");
    d.wait_service("plain", "stopped", |s| s["state"] == "stopped");
    assert_eq!(
        fs::read_to_string(setup.path("drained.task")).unwrap(),
        "done",
        "the drained task finished"
    );
    assert!(
        setup.path("drained.disabled").exists(),
        "the drain command ran"
    );
    assert_eq!(
        fs::read_to_string(setup.path("plain.task")).unwrap(),
        "abandoned",
        "SIGTERM cancels a Go worker's task"
    );
}

#[test]
fn a_crash_restart_is_immediate_and_does_not_drain() {
    let setup = Setup::new(&worker("w", true));
    let d = setup.start();
    let first = pid_of(&d.running("w"));
    // It runs steadily (stable_after 100ms) before the crash.
    assert!(!common::daemon::wait_gone(
        i32::try_from(first).unwrap(),
        std::time::Duration::from_millis(300)
    ));
    kill(
        Pid::from_raw(i32::try_from(first).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    let again = d.wait_service("w", "restarted", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(first)
    });
    assert_eq!(again["restarts"], 1);
    assert!(
        !d.log().contains("draining"),
        "a crash restart never drains:\n{}",
        d.log()
    );
}

#[test]
fn an_exit_0_is_a_death_and_is_restarted() {
    let setup = Setup::new(
        "[[service]]\nname = \"quitter\"\nrole = \"worker\"\ncommand = [\"{bin}\", \"standin\", \"--exit-after\", \"200ms\", \"--exit-code\", \"0\"]\nstable_after = \"100ms\"\n",
    );
    let d = setup.start();
    let s = d.wait_service("quitter", "restarted after exit 0", |s| {
        s["restarts"].as_u64() >= Some(2)
    });
    assert_eq!(s["last_exit"]["how"]["code"], 0);
}

#[test]
fn a_fatal_start_error_is_shown_and_the_backoff_goes_to_its_cap() {
    let setup = Setup::new(
        "[[service]]\nname = \"worker\"\nrole = \"worker\"\nbackoff_max = \"40s\"\n\
         command = [\"/bin/sh\", \"-c\", \"echo 'ERROR: soft file descriptor limit is too low: 20000 < 100000'; exit 0\"]\n",
    );
    let d = setup.start();
    let s = d.wait_service("worker", "backing off", |s| s["state"] == "backoff");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("fatal start error: ERROR: soft file descriptor limit"),
        "{reason}"
    );
    assert!(
        s["next_start_in_secs"].as_f64().unwrap() > 30.0,
        "backoff at its cap (40s), not 1s: {s}"
    );
    assert!(s["last_exit"]["reason"]
        .as_str()
        .unwrap()
        .contains("soft file descriptor limit"));
    assert!(
        d.log().contains("raise limits.nofile"),
        "the log says what to fix:\n{}",
        d.log()
    );
    let table = setup.cli(&["status"]);
    table.expect_code(1);
    assert!(
        table.stdout.contains("fatal start error"),
        "{}",
        table.stdout
    );
    // A Venus role's default fatal_output marks it in every view.
    assert_eq!(s["fatal"]["count"], 1, "{s}");
    let t = &table.stdout;
    assert!(
        t.contains("\n  worker: 1 fatal line, the last ")
            && t.contains(" ago: ERROR: soft file descriptor limit is too low: 20000 < 100000\n"),
        "{t}"
    );
}

#[test]
fn an_oom_kill_in_a_memory_limited_cgroup_is_reported_as_oom_killed() {
    let parent = format!("venussup-test-oom-{}", std::process::id());
    let setup = Setup::new(
        "[[service]]\nname = \"hog\"\nrestart = \"never\"\ncommand = [\"{bin}\", \"standin\", \"--name\", \"hog\", \"--allocate\", \"256\"]\nlimits = { memory_max = \"64MiB\" }\n",
    );
    setup.host_line(&format!("cgroup_parent = \"{parent}\""));
    let mut d = setup.start();
    let s = d.wait_service("hog", "killed", |s| s["state"] == "exited");
    assert_eq!(s["last_exit"]["how"]["signal"], 9, "{s}");
    assert_eq!(s["last_exit"]["reason"], "oom-killed", "{s}");
    assert_eq!(s["oom_kills"], 1);
    let metrics = setup.cli(&["metrics"]);
    assert!(
        metrics
            .stdout
            .contains("venussup_service_oom_kills_total{service=\"hog\"} 1"),
        "{}",
        metrics.stdout
    );
    assert!(d.log().contains("OOM killer"), "logged:\n{}", d.log());
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0));
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/memory")
            .join(&parent)
            .exists(),
        "cgroups removed"
    );
}

/// A tmpfs at `dir`, unmounted on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_service_whose_mount_is_missing_is_blocked_until_it_is_mounted() {
    let setup = Setup::new(
        "[[service]]\nname = \"worker\"\ncommand = [\"{bin}\", \"standin\", \"--name\", \"worker\"]\nrequires_mounts = [\"{dir}/seal\"]\n",
    );
    let seal = setup.path("seal");
    fs::create_dir(&seal).unwrap();
    let d = setup.start();
    let blocked = d.wait_service("worker", "blocked", |s| s["state"] == "blocked");
    assert!(
        blocked["reason"]
            .as_str()
            .unwrap()
            .contains("seal to be mounted"),
        "{blocked}"
    );
    assert_eq!(blocked["restarts"], 0, "blocked, not crash-looping");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs"])
        .arg(&seal)
        .status()
        .unwrap();
    assert!(ok.success(), "mounting a tmpfs needs root");
    let _guard = Mounted(seal);
    d.running("worker");
}

#[test]
fn restart_with_dependents_restarts_the_workers_too_and_without_only_the_sealer() {
    let setup = Setup::new(
        "[[service]]\nname = \"sealer\"\ncommand = [\"{bin}\", \"standin\", \"--name\", \"sealer\"]\n\
         [[service]]\nname = \"worker\"\nafter = [\"sealer\"]\ncommand = [\"{bin}\", \"standin\", \"--name\", \"worker\"]\n",
    );
    let d = setup.start();
    let worker = pid_of(&d.running("worker"));
    let sealer = pid_of(&d.running("sealer"));
    setup.cli(&["restart", "sealer"]).expect_code(0);
    let s2 = pid_of(&d.wait_service("sealer", "new pid", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(sealer)
    }));
    assert_eq!(pid_of(&d.service("worker")), worker, "no restart cascade");
    setup
        .cli(&["restart", "sealer", "--with-dependents"])
        .expect_code(0);
    d.wait_service("sealer", "newer pid", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(s2)
    });
    d.wait_service("worker", "new pid", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(worker)
    });
}
