//! The shipped examples end to end, under a real `venussup run`, against
//! the model of venus-sealer and venus-worker (`venussup model`, faithful
//! to what venussup relies on: docs/venus.md): every service ready with no
//! restart, every attach done, a pledge accepted and "too many sectors
//! sealing" counted as full, and a drain that really stops new work before
//! the stop signal. Host B's and the container's sealer is at
//! 192.168.1.10: those run in a network namespace of their own where it
//! is, so venus-worker's listen rule (0.0.0.0 → the address that routes to
//! the sealer) really takes another address than 127.0.0.1.
//!
//! What the copies change: paths into the test's folder, seal and store
//! paths onto tmpfs mounts, ports (host A), timings (every, cooldown,
//! the drain's polls), `smt = "keep"` (this VM's CPUs stay online), a
//! cgroup parent of the test's own, and the model's two knobs in
//! `[host.env]`: tasks of 1 s, and the 100000 descriptors venus-worker
//! wants lowered to what this VM (no CAP_SYS_RESOURCE, hard limit 20000)
//! can give.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::daemon::{Daemon, Setup, WAIT};
use common::example::{example_copy, free_ports, pair};
use common::tmpfs::Tmpfs;
use common::{assert_error_at, bin, run_bounded, venussup, Outcome};
use nix::sys::signal::Signal;
use serde_json::Value;

/// `PATH`-free wrappers `{dir}/bin/venus-worker` and `venus-sealer` that
/// exec the model (what the examples' `/usr/local/bin/...` become).
fn install_model(setup: &Setup) {
    let dir = setup.path("bin");
    fs::create_dir_all(&dir).unwrap();
    for program in ["venus-worker", "venus-sealer"] {
        let path = dir.join(program);
        fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec {} model {program} \"$@\"\n",
                bin().display()
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The rewrites every example needs (see the module's comment).
fn common_pairs() -> Vec<(String, String)> {
    vec![
        pair("/usr/local/bin/", "{dir}/bin/"),
        pair("/var/lib/venussup", "{dir}/state"),
        pair("/var/log/venussup", "{dir}/logs"),
        pair("/var/lib/venus/", "{dir}/venus/"),
        pair("\"/mnt/seal\"", "\"{dir}/seal\""),
        pair(
            "[host.env]\n",
            "[host.env]\nVENUS_MODEL_TASK_MS = \"1000\"\nVENUS_MODEL_MIN_NOFILE = \"10000\"\n",
        ),
        pair(
            "quiet_for = \"30s\", poll_every = \"30s\"",
            "quiet_for = \"1s\", poll_every = \"1s\"",
        ),
    ]
}

/// What this 2-core VM is not: the plan's 1 TiB host, for which the
/// `[capacity]` table is written (integration/plan.rs checks it on a
/// simulated one), nor a host whose CPUs a test may take offline.
fn for_this_vm(text: &str) -> String {
    let text = text.replace("smt = \"off\"", "smt = \"keep\"");
    match text.find("\n[capacity]\n") {
        Some(at) => {
            let rest = &text[at + 1..];
            let end = rest[1..].find("\n[").map_or(text.len(), |e| at + 1 + e + 2);
            format!("{}{}", &text[..at + 1], &text[end..])
        }
        None => text,
    }
}

/// A copy of `name` ready to run here: the model installed, the seal path
/// a tmpfs, the env file (if any) present, the sealer's `config.toml`.
fn prepared(name: &str, extra: &[(String, String)], sealer_toml: &str) -> (Setup, Vec<Tmpfs>) {
    let mut replace = common_pairs();
    replace.extend_from_slice(extra);
    let setup = example_copy(name, &replace);
    let text = fs::read_to_string(setup.config()).unwrap();
    fs::write(setup.config(), for_this_vm(&text)).unwrap();
    setup.host_line(&format!(
        "cgroup_parent = \"venussup-examples-{}-{}\"",
        std::process::id(),
        name.trim_end_matches(".toml")
    ));
    install_model(&setup);
    let env_file = setup.path("miner.env");
    fs::write(&env_file, "").unwrap();
    fs::set_permissions(&env_file, fs::Permissions::from_mode(0o600)).unwrap();
    let sealer = setup.path("venus/sealer");
    fs::create_dir_all(&sealer).unwrap();
    fs::write(sealer.join("config.toml"), sealer_toml).unwrap();
    let mut mounts = vec![Tmpfs::mount(&setup.path("seal"), "1M")];
    if text.contains(setup.path("store").to_str().unwrap()) {
        mounts.push(Tmpfs::mount(&setup.path("store"), "1M"));
    }
    (setup, mounts)
}

/// `venussup check` of the copy: valid, and every warning one the README
/// explains (each pattern names the README section that does).
fn check_explained(setup: &Setup) -> Outcome {
    let out = setup.cli(&["check"]);
    out.expect_code(0);
    let readme = fs::read_to_string(common::project_file("README.md")).unwrap();
    // (the warning, what the README says of it)
    let explained = [
        (
            "fewer than one SDR unit",
            "fewer cores per group than one unit",
        ),
        ("but this host has none", "A host without GPUs is normal"),
    ];
    for line in out.stderr.lines().filter(|l| l.contains(": warning: ")) {
        let known = explained
            .iter()
            .find(|(needle, _)| line.contains(needle))
            .unwrap_or_else(|| panic!("a warning the README does not explain: {line}"));
        assert!(readme.contains(known.1), "README lacks {:?}", known.1);
    }
    out
}

fn state(s: &Value) -> &str {
    s["state"].as_str().unwrap_or("")
}

/// Every daemon service running and every oneshot done, none restarted.
fn all_up(d: &Daemon, daemons: &[&str], oneshots: &[&str]) {
    for name in daemons {
        d.wait_service(name, "running", |s| state(s) == "running");
    }
    for name in oneshots {
        d.wait_service(name, "done", |s| state(s) == "done");
    }
    for name in daemons.iter().chain(oneshots) {
        assert_eq!(d.service(name)["restarts"], 0, "{name}:\n{}", d.log());
    }
}

/// The index of the first line of `log` that contains `needle`.
fn first_index(log: &str, needle: &str) -> Option<usize> {
    log.lines().position(|l| l.contains(needle))
}

/// Stops `name` through the daemon and proves the drain: `set
/// --enabled=false` reached the worker, no task started after it, and the
/// stop signal came only after the worker was quiet.
fn drained_stop(setup: &Setup, d: &Daemon, name: &str) -> String {
    setup.cli(&["stop", name]).expect_code(0);
    d.wait_service(name, "stopped", |s| state(s) == "stopped");
    let log = fs::read_to_string(setup.path(&format!("logs/{name}.log"))).unwrap();
    let disabled = first_index(&log, "SetEnabled(false)")
        .unwrap_or_else(|| panic!("{name} was never disabled:\n{log}"));
    let signal = first_index(&log, "receive sig: terminated")
        .unwrap_or_else(|| panic!("{name} got no SIGTERM:\n{log}"));
    assert!(disabled < signal, "disabled before the signal:\n{log}");
    let started_after = log
        .lines()
        .skip(disabled)
        .filter(|l| l.contains("started"))
        .count();
    assert_eq!(started_after, 0, "no new task after the drain:\n{log}");
    assert!(
        !log.contains("abandoned"),
        "the drain waited for the task in flight:\n{log}"
    );
    let daemon = d.log();
    let quiet = first_index(&daemon, &format!("quiet; stopping service={name}"));
    let term = first_index(&daemon, &format!("sending SIGTERM service={name}"));
    assert!(quiet.is_some() && quiet < term, "{daemon}");
    log
}

fn sealer_cli(setup: &Setup, netns_of: Option<i32>, args: &[&str]) -> Outcome {
    let repo = setup.path("venus/sealer");
    let repo = format!("--repo={}", repo.display());
    let mut cmd = match netns_of {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net")).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    cmd.args(["model", "venus-sealer", &repo]).args(args);
    run_bounded(&mut cmd, Duration::from_secs(30))
}

#[test]
fn host_a_runs_end_to_end_pledges_until_full_and_drains_its_worker() {
    let [sealer_port, worker_port] = free_ports::<2>();
    let ports = vec![
        pair("/etc/venussup/miner.env", "{dir}/miner.env"),
        pair("tcp/2345", format!("tcp/{sealer_port}")),
        pair("127.0.0.1:2345", format!("127.0.0.1:{sealer_port}")),
        pair("0.0.0.0:3456", format!("0.0.0.0:{worker_port}")),
        pair("\"/mnt/store\"", "\"{dir}/store\""),
        pair("every = \"10min\"", "every = \"1s\""),
        pair("jitter = \"30s\"\n", ""),
        pair(
            "spacing = \"30s\", cooldown = \"30min\"",
            "spacing = \"0s\", cooldown = \"1s\"",
        ),
    ];
    let sealer_toml = format!(
        "[API]\nListenAddress = \"/ip4/127.0.0.1/tcp/{sealer_port}/http\"\n\
         [Sealing]\nMaxSealingSectors = 2\n\
         [Storage]\nAllowAddPiece = false\nAllowPreCommit1 = false\nAllowPreCommit2 = false\n\
         AllowCommit = false\nAllowUnseal = false\nAllowReplicaUpdate = false\n\
         AllowProveReplicaUpdate2 = false\nAllowRegenSectorKey = false\n"
    );
    let (setup, mounts) = prepared("host-a.toml", &ports, &sealer_toml);
    check_explained(&setup);
    let mut d = setup.start();
    all_up(
        &d,
        &["sealer", "worker"],
        &["sealer-attach", "worker-attach"],
    );
    // Pledges until the sealer is full: 2 accepted, then "too many sectors
    // sealing", which is full, not a failure (no C2 on host A: its sectors
    // stay in Committing).
    let st = d.wait_for("a pledge accepted and one full", |st| {
        let runs = &st["timers"][0]["runs"];
        runs["success"].as_u64() >= Some(2) && runs["full"].as_u64() >= Some(1)
    });
    assert_eq!(st["timers"][0]["runs"]["failure"], 0, "{}", d.log());
    // The gate read the model's `sectors list` (an empty one first: its
    // first pledge came from 0 in flight) and never failed.
    let gate = &st["timers"][0]["gate"];
    assert!(
        gate["in_flight"].is_u64() && gate["error"].is_null(),
        "{gate}"
    );
    let pledge_log = fs::read_to_string(setup.path("logs/pledge.log")).unwrap();
    assert!(pledge_log.contains("Created CC sector:  1"), "{pledge_log}");
    assert!(
        pledge_log.contains("too many sectors sealing (curSealing: 2, max: 2)"),
        "{pledge_log}"
    );
    drained_stop(&setup, &d, "worker");
    // Its seal disk goes away: started again, the worker waits for it
    // (`requires_mounts`) instead of failing on `opening path`, and runs
    // once it is back.
    let meta = fs::read(setup.path("seal/sectorstore.json")).unwrap();
    let mut mounts = mounts;
    drop(mounts.remove(0));
    setup.cli(&["start", "worker"]).expect_code(0);
    d.wait_service("worker", "blocked", |s| state(s) == "blocked");
    let disk = Tmpfs::mount(&setup.path("disk"), "1M");
    fs::write(setup.path("disk/sectorstore.json"), meta).unwrap();
    mounts.push(disk.move_to(&setup.path("seal")));
    d.wait_service("worker", "running", |s| state(s) == "running");
    assert_eq!(d.service("worker")["restarts"], 0, "{}", d.log());
    assert_eq!(d.service("sealer")["restarts"], 0);
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0), "{}", d.log());
}

/// Brings 192.168.1.10 up on the loopback of a new network namespace,
/// starts the model sealer there (its pid in `{dir}/sealer.pid`), then
/// execs what follows (`venussup run ...`).
fn netns_script(setup: &Setup) -> String {
    format!(
        "set -e\nip link set lo up\nip addr add 192.168.1.10/32 dev lo\n\
         \"$0\" model venus-sealer --repo={dir}/venus/sealer run 2>{dir}/sealer.log &\n\
         echo $! > {dir}/sealer.pid\nexec \"$0\" \"$@\"",
        dir = setup.dir.path().display()
    )
}

/// Kills the model sealer of a test that ran without a PID namespace.
struct SealerGuard(std::path::PathBuf);

impl Drop for SealerGuard {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
    }
}

const HOST_B_SEALER: &str = "[API]\nListenAddress = \"/ip4/192.168.1.10/tcp/2345/http\"\n[Sealing]\nMaxSealingSectors = 0\n";

/// Host B or the container: both workers ready where they really listen,
/// the attaches done, pledges accepted, worker01 drained with work left.
fn host_b_like(setup: &Setup, d: &mut Daemon, netns_of: i32) {
    all_up(
        d,
        &["worker01", "worker02"],
        &["worker01-attach", "worker02-attach"],
    );
    // The listen rule took the address that routes to the sealer.
    for (name, port) in [("worker01", 3456), ("worker02", 3457)] {
        let api = fs::read_to_string(setup.path(&format!("venus/{name}/api"))).unwrap();
        assert_eq!(api, format!("/ip4/192.168.1.10/tcp/{port}"), "{name}");
    }
    // Work enough for worker01 to still have some when it is drained.
    for n in 1..=4 {
        let out = sealer_cli(setup, Some(netns_of), &["sectors", "pledge"]);
        out.expect_code(0);
        assert!(
            out.stdout.contains(&format!("Created CC sector:  {n}")),
            "{}",
            out.stdout
        );
    }
    let worker01 = setup.path("logs/worker01.log");
    common::eventually(
        "worker01 took a task",
        WAIT,
        Duration::from_millis(100),
        &|| d.log(),
        || {
            fs::read_to_string(&worker01)
                .ok()
                .filter(|l| l.contains("started"))
        },
    );
    drained_stop(setup, d, "worker01");
    // New work was there and stayed: the drain stopped it being taken.
    let list = sealer_cli(setup, Some(netns_of), &["sectors", "list"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("PreCommit1") || list.stdout.contains("PreCommit2"),
        "work left for worker01:\n{}",
        list.stdout
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0), "{}", d.log());
}

#[test]
fn host_b_in_its_own_network_listens_where_the_sealer_routes_and_drains() {
    let env_file = [pair("/etc/venussup/miner.env", "{dir}/miner.env")];
    let (setup, _mounts) = prepared("host-b.toml", &env_file, HOST_B_SEALER);
    let _sealer = SealerGuard(setup.path("sealer.pid"));
    check_explained(&setup);
    // Item 1 of #19 replayed: the old probe on 127.0.0.1 is an error now.
    let text = fs::read_to_string(setup.config()).unwrap();
    let new = "ready = { worker_listen = true, timeout = \"5min\" }";
    let old = "ready = { tcp = \"127.0.0.1:3456\", timeout = \"5min\" }";
    let at = text.find(new).unwrap();
    let line = text[..at].lines().count() + 1;
    let broken = setup.path("broken.toml");
    fs::write(&broken, text.replacen(new, old, 1)).unwrap();
    let out = venussup(&["check", "--config", broken.to_str().unwrap()]);
    out.expect_code(1);
    assert_error_at(
        &out,
        line,
        17,
        "probed on 127.0.0.1:3456, but venus-worker replaces `--listen=0.0.0.0:3456`",
    );

    let script = netns_script(&setup);
    let mut d = setup.start_exec_with(&["unshare", "--net", "sh", "-c", &script]);
    let pid = d.pid();
    host_b_like(&setup, &mut d, pid);
}

#[test]
fn the_container_example_as_pid_1_with_the_sealer_at_192_168_1_10() {
    let (setup, _mounts) = prepared("container.toml", &[], HOST_B_SEALER);
    check_explained(&setup);
    let script = netns_script(&setup);
    let mut d = setup.start_with(&[
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--net",
        "sh",
        "-c",
        &script,
    ]);
    let pid = d.pid();
    assert_eq!(d.status()["pid"], 1, "venussup is PID 1 of its namespace");
    host_b_like(&setup, &mut d, pid);
}

/// `venussup model PROGRAM ARGS...` with `env`, bounded.
fn model(program: &str, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = Command::new(bin());
    cmd.args(["model", program])
        .args(args)
        .envs(env.iter().copied());
    run_bounded(&mut cmd, Duration::from_secs(30))
}

#[test]
fn the_model_exits_as_the_real_programs_do_worker_0_after_any_error_sealer_1() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("w");
    let repo_env = [("VENUS_WORKER_PATH", repo.to_str().unwrap())];
    // A global flag after `run`, `tasks disable` without its task type, a
    // drain command with no worker running: all exit 0.
    for (args, said) in [
        (
            &["run", "--repo=/x"][..],
            "flag provided but not defined: -repo",
        ),
        (&["tasks", "disable"][..], "expected 1 argument"),
        (&["tasks", "disable", "PC3"][..], "unknown task type 'PC3'"),
        (
            &["set", "--enabled=false"][..],
            "config.toml: no such file or directory",
        ),
    ] {
        let out = model("venus-worker", args, &repo_env);
        out.expect_code(0);
        assert!(out.stderr.contains(said), "{args:?}: {}", out.stderr);
    }
    // A fatal start: 4096 descriptors are below 100000; logged, exit 0.
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=4096:4096")
        .arg(bin())
        .args(["model", "venus-worker", "run"])
        .envs(repo_env);
    let out = run_bounded(&mut cmd, Duration::from_secs(30));
    out.expect_code(0);
    assert!(
        out.stderr
            .contains("soft file descriptor limit (ulimit -n) too low, want 100000, current 4096"),
        "{}",
        out.stderr
    );
    // An unknown command is urfave/cli's exit 3.
    let out = model("venus-worker", &["tasks", "stop"], &repo_env);
    out.expect_code(3);
    assert!(
        out.stderr.contains("No help topic for 'stop'"),
        "{}",
        out.stderr
    );
    // venus-sealer: `ERROR: ...` and exit 1.
    let sealer = format!("--repo={}", dir.path().join("s").display());
    let out = model("venus-sealer", &[&sealer, "sectors", "pledge"], &[]);
    out.expect_code(1);
    assert!(out.stderr.starts_with("ERROR: open "), "{}", out.stderr);
    let out = model("venus-sealer", &["run", &sealer], &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("flag provided but not defined: -repo"),
        "{}",
        out.stderr
    );
    // go-filelock wants an absolute path: a relative `--repo` cannot run.
    fs::create_dir(dir.path().join("s")).unwrap();
    fs::write(dir.path().join("s/config.toml"), "").unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["model", "venus-sealer", "--repo=s", "run"])
        .current_dir(dir.path());
    let out = run_bounded(&mut cmd, Duration::from_secs(30));
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("ERROR: absolute file path must be provided"),
        "{}",
        out.stderr
    );
}
