//! Deployment, black-box: the shipped examples run as PID 1 of a PID
//! namespace (as in a container) and stop cleanly; the boot-time unit
//! passes `systemd-analyze verify`, outlasts the examples' stop chains, and
//! works under a real systemd booted in a container (`systemd-nspawn`):
//! installed as the README says, active after boot, reloaded, upgraded in
//! place, restarted after a crash, stopped gracefully.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{Setup, WAIT};
use common::example::{example_copy, free_ports, pair};
use common::nspawn::{cached_root, Machine, IN_CONTAINER};
use common::tmpfs::Tmpfs;
use common::{bin, debian, project_file, run_bounded, venussup};
use nix::sys::signal::Signal;
use serde_json::Value;

/// `venussup run` as PID 1 of its own PID namespace, as in a container.
const AS_PID_1: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc"];

fn running(s: &Value) -> bool {
    s["state"] == "running"
}

/// A line on the test's stderr that the test harness does not capture: a
/// skipped test and the systemd test's timings show in CI's log.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "deploy: {line}");
}

/// Every line of the daemon's log that mentions `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn the_demo_runs_as_pid_1_and_stops_cleanly_on_sigterm() {
    let setup = demo_copy();
    let mut d = setup.start_with(AS_PID_1);
    for name in ["sealer", "worker01", "worker02"] {
        d.wait_service(name, "running", running);
    }
    d.wait_service("worker01-attach", "done", |s| s["state"] == "done");
    let st = d.wait_for("a pledge run", |st| {
        st["timers"][0]["runs"]["success"].as_u64() >= Some(1)
    });
    assert_eq!(st["pid"], 1, "venussup is PID 1 of its namespace");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0), "{}", d.log());
    let log = d.log();
    for name in ["sealer", "worker01", "worker02"] {
        assert!(
            log.contains(&format!("sending SIGTERM service={name}")),
            "{name} was not stopped:\n{log}"
        );
    }
    assert!(
        lines_with(&log, "sending SIGKILL").is_empty(),
        "a stand-in needed SIGKILL:\n{log}"
    );
}

/// The demo with its folders and ports moved out of the way of a demo
/// someone runs on this machine.
fn demo_copy() -> Setup {
    let mut replace = vec![pair("/tmp/venussup-demo", "{dir}")];
    for (port, free) in [23450, 23456, 23457].into_iter().zip(free_ports::<3>()) {
        replace.push(pair(
            &format!("127.0.0.1:{port}"),
            format!("127.0.0.1:{free}"),
        ));
    }
    example_copy("demo.toml", &replace)
}

#[test]
fn the_demo_runs_without_root_shows_the_split_and_the_gpus_and_says_what_next() {
    let setup = demo_copy();
    // As nobody, from a copy of the binary nobody may run, in a folder
    // nobody may write.
    fs::set_permissions(setup.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let own = setup.bin_for_others();
    for sub in ["state", "logs"] {
        fs::create_dir(setup.path(sub)).unwrap();
        std::os::unix::fs::chown(setup.path(sub), Some(65534), Some(65534)).unwrap();
    }
    let exec_own = format!("shift; exec {} \"$@\"", own.display());
    let mut d = setup.start_exec_with(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        &exec_own,
        "sh",
    ]);
    let w1 = d.wait_service("worker01", "running", running);
    let w2 = d.wait_service("worker02", "running", running);
    d.wait_service("sealer", "running", running);
    d.wait_service("worker01-attach", "done", |s| s["state"] == "done");
    // No cgroup is nobody's to write: nothing is tracked, and status says
    // so (metric and snapshot too).
    assert_eq!(d.status()["cgroups"]["tracked"], false);
    let status = setup.cli(&["status"]);
    assert!(
        status.stdout.contains("NOT TRACKED: no cgroups (") && status.stdout.contains("setsid"),
        "{}",
        status.stdout
    );
    assert!(
        setup
            .cli(&["metrics"])
            .stdout
            .contains("venussup_cgroups_tracked 0"),
        "the metric says it too"
    );
    // The first lines say what to run next and where the logs are.
    let log = d.log();
    let first: Vec<&str> = log.lines().take(4).collect();
    let config = setup.config().display().to_string();
    assert!(first[0].contains(&format!("supervising {config}")), "{log}");
    for (line, what) in first[1..].iter().zip([
        format!("{} status --config {config}", own.display()),
        format!("{} check --config {config}", own.display()),
        format!(
            "{} logs NAME -f --config {config}   a service's log, followed ({}/logs/NAME.log)",
            own.display(),
            setup.dir.path().display()
        ),
    ]) {
        assert!(line.contains(&what), "`{what}` is not in:\n{log}");
    }
    // The 75/25 split: whole cores, disjoint, held by the affinity mask.
    let planned = |s: &Value| -> Vec<u64> {
        s["cpus"]
            .as_array()
            .expect("a CPU share is planned")
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect()
    };
    let (c1, c2) = (planned(&w1), planned(&w2));
    assert!(!c1.is_empty() && !c2.is_empty() && c1.iter().all(|c| !c2.contains(c)));
    assert!(c1.len() >= c2.len(), "75% >= 25%: {c1:?} {c2:?}");
    let report = |name: &str| -> Value {
        let path = setup.path(&format!("state/{name}.report.json"));
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
    };
    for (name, cpus) in [("worker01", &c1), ("worker02", &c2)] {
        let r = report(name);
        assert_eq!(
            &cpu_list(r["cpus_allowed"].as_str().unwrap()),
            cpus,
            "{name}: {r:#}"
        );
        assert_eq!(r["uid"], 65534, "{name} runs as the demo's user");
    }
    // The two stated GPUs, by task: WindowPoSt first, then C2.
    assert_eq!(report("sealer")["env"]["CUDA_VISIBLE_DEVICES"], "0");
    assert_eq!(report("worker02")["env"]["CUDA_VISIBLE_DEVICES"], "1");
    assert_eq!(report("worker01")["env"]["CUDA_VISIBLE_DEVICES"], "");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0), "{}", d.log());
}

/// Mounts `/sys` and everything under it read-only (in the mount namespace
/// `unshare` made, which is private), then runs the command after it.
const READ_ONLY_SYS: &str = r#"set -e
mount -o remount,bind,ro /sys
for m in $(awk '$5 ~ "^/sys/" { print $5 }' /proc/self/mountinfo); do
  mount -o remount,bind,ro "$m"
done
exec "$0" "$@""#;

#[test]
fn the_container_example_runs_as_pid_1_on_a_read_only_sys_and_stops_cleanly() {
    // venus-worker's stand-in: `run ...` serves --listen and reports what
    // it got; `storage attach ...` and the drain's `set` succeed, `info`
    // says idle. (integration/examples.rs runs this example against the
    // model of venus-worker.)
    let [p1, p2] = free_ports::<2>();
    let setup = example_copy(
        "container.toml",
        &[
            pair("/usr/local/bin/venus-worker", "{dir}/venus-worker"),
            pair("/var/lib/venussup", "{dir}/state"),
            pair("/var/log/venussup", "{dir}/logs"),
            pair("/var/lib/venus/", "{dir}/venus/"),
            pair("0.0.0.0:3456", format!("127.0.0.1:{p1}")),
            pair("0.0.0.0:3457", format!("127.0.0.1:{p2}")),
            pair("\"/mnt/seal\"]", "\"{dir}/seal\"]"),
            pair(
                "quiet_for = \"30s\", poll_every = \"30s\"",
                "quiet_for = \"0s\", poll_every = \"1s\"",
            ),
        ],
    );
    // The seal volume: a mount point, as `requires_mounts` wants.
    let _seal = Tmpfs::mount(&setup.path("seal"), "1M");
    let dir = setup.dir.path().to_str().unwrap().to_string();
    let script = setup.path("venus-worker");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             name=$(basename \"$VENUS_WORKER_PATH\")\n\
             if [ \"$1\" = run ]; then\n\
             \x20 for a; do case \"$a\" in --listen=*) listen=${{a#--listen=}};; esac; done\n\
             \x20 exec {bin} standin --name \"$name\" --listen \"$listen\" --report {dir}/$name.json -- \"$@\"\n\
             fi\n\
             # the drain's quiet probe: idle, as venus-worker's `info` says it\n\
             if [ \"$1\" = info ]; then echo 'Tasks: 0-100'; exit 0; fi\n\
             exec {bin} standin --name \"$name-attach\" --say \"attached: $*\"\n",
            bin = bin().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

    let mut prefix = AS_PID_1.to_vec();
    prefix.extend(["sh", "-c", READ_ONLY_SYS]);
    let mut d = setup.start_with(&prefix);
    let w1 = d.wait_service("worker01", "running", running);
    let w2 = d.wait_service("worker02", "running", running);
    for name in ["worker01-attach", "worker02-attach"] {
        d.wait_service(name, "done", |s| s["state"] == "done");
    }
    assert_eq!(d.status()["pid"], 1, "venussup is PID 1 of its namespace");
    // Held by the affinity mask alone: each worker's CPUs as planned.
    for (w, name) in [(&w1, "worker01"), (&w2, "worker02")] {
        let report: Value =
            serde_json::from_str(&fs::read_to_string(setup.path(&format!("{name}.json"))).unwrap())
                .unwrap();
        let planned: Vec<u64> = w["cpus"]
            .as_array()
            .expect("a CPU share is planned")
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        let allowed = cpu_list(report["cpus_allowed"].as_str().unwrap());
        assert_eq!(allowed, planned, "{name}: {report:#}");
        let argv: Vec<&str> = report["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            !argv.iter().any(|a| a.contains("token")),
            "{name}: no token on the command line (/proc/PID/cmdline): {argv:?}"
        );
        assert_eq!(
            report["env"]["VENUS_WORKER_PATH"],
            format!("{dir}/venus/{name}"),
            "{name}: the token comes from the config.toml of the worker's own repo: {report:#}"
        );
    }
    // Nothing tried to write the read-only /sys (no SMT step, no cgroup).
    let log = d.log();
    assert!(
        !log.contains("Read-only file system"),
        "the read-only /sys was written to:\n{log}"
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0), "{}", d.log());
    let log = d.log();
    assert_eq!(lines_with(&log, "sending SIGTERM").len(), 2, "{log}");
    assert!(lines_with(&log, "sending SIGKILL").is_empty(), "{log}");
    // The read-only /sys stayed inside the namespace.
    assert!(
        !fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some("/sys")
                && l.split_whitespace()
                    .nth(5)
                    .is_some_and(|o| o.starts_with("ro"))),
        "/sys of the test became read-only"
    );
}

/// The CPUs of a kernel CPU list (`0-3,8`).
fn cpu_list(list: &str) -> Vec<u64> {
    list.trim()
        .split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap()
        })
        .collect()
}

// ---------------------------------------------------------------- the unit

const UNIT: &str = "units/venussup.service";

/// `Key=value` settings of the unit (the last one wins, as in systemd).
fn unit_settings() -> BTreeMap<String, String> {
    fs::read_to_string(project_file(UNIT))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    if !debian::has("systemd-analyze") {
        say("SKIPPED: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    // As installed, except that the binary is the one under test (verify
    // checks that ExecStart= can be executed).
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("venussup.service");
    let text = fs::read_to_string(project_file(UNIT)).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/venussup run"));
    fs::write(
        &unit,
        text.replace("/usr/local/bin/venussup", bin().to_str().unwrap()),
    )
    .unwrap();
    let out = run_bounded(
        Command::new("systemd-analyze").arg("verify").arg(&unit),
        Duration::from_secs(60),
    );
    out.expect_code(0);
    assert_eq!(out.stderr.trim(), "", "systemd-analyze verify complained");
    let unit = unit_settings();
    assert_eq!(unit["Type"], "notify");
    assert_eq!(unit["KillMode"], "mixed");
    assert_eq!(unit["Delegate"], "yes");
    assert_eq!(unit["LimitMEMLOCK"], "infinity");
    assert!(unit["LimitNOFILE"].parse::<u64>().unwrap() >= 100_000);
    assert!(unit["ExecReload"].contains("-HUP $MAINPID"));
}

/// The longest time venussup may take to stop `plan`: a service gets its
/// stop signal only once everything that runs after it has stopped, and
/// each waits up to its stop_timeout.
fn longest_stop_chain(plan: &Value) -> Duration {
    let services = plan["services"].as_array().unwrap();
    let timeout = |s: &Value| humantime::parse_duration(s["stop"]["timeout"].as_str().unwrap());
    // Services are in start order: whoever waits for a service comes after it.
    let mut chain: BTreeMap<String, Duration> = BTreeMap::new();
    for s in services.iter().rev() {
        let name = s["name"].as_str().unwrap();
        let after_it = services
            .iter()
            .filter(|d| d["after"].as_array().unwrap().iter().any(|a| a == name))
            .map(|d| chain[d["name"].as_str().unwrap()])
            .max()
            .unwrap_or_default();
        chain.insert(name.to_string(), timeout(s).unwrap() + after_it);
    }
    chain.into_values().max().unwrap_or_default()
}

/// Every shipped config: each `examples/*.toml`, and for a cluster file
/// (`[hosts.NAME]`) each host's config as `venussup render` prints it
/// (written into `dir`).
fn example_configs(dir: &Path) -> Vec<PathBuf> {
    let mut configs = Vec::new();
    for entry in fs::read_dir(project_file("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let table: toml::Table = fs::read_to_string(&path).unwrap().parse().unwrap();
        let Some(hosts) = table.get("hosts").and_then(toml::Value::as_table) else {
            configs.push(path);
            continue;
        };
        for host in hosts.keys() {
            let cluster = path.to_str().unwrap();
            let out = venussup(&["render", "--cluster", cluster, "--host", host]);
            let rendered = dir.join(format!("{host}.toml"));
            fs::write(&rendered, &out.expect_code(0).stdout).unwrap();
            configs.push(rendered);
        }
    }
    configs
}

#[test]
fn the_units_stop_timeout_outlasts_every_examples_stop_chain() {
    let limit = humantime::parse_duration(&unit_settings()["TimeoutStopSec"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let configs = example_configs(dir.path());
    for path in &configs {
        let out = venussup(&["check", "--json", "--config", path.to_str().unwrap()]);
        let chain = longest_stop_chain(&out.expect_code(0).json()["plan"]);
        assert!(
            chain < limit,
            "{}: stopping may take {chain:?}, but systemd kills everything after {limit:?}",
            path.display()
        );
    }
    assert!(configs.len() >= 6, "{configs:?}");
}

// ------------------------------------------------- a real systemd, booted

/// Everything the systemd test does, both boots included (the root, when
/// it must be built first, has its own bound).
const SYSTEMD_TEST_BOUND: Duration = Duration::from_secs(240);

/// Where the demo keeps its state (inside the container).
const DEMO_STATE: &str = "/tmp/venussup-demo/state";
const DEMO_DAEMONS: [&str; 3] = ["sealer", "worker01", "worker02"];

/// Every daemon of the snapshot runs and every oneshot is done.
fn settled(st: &Value) -> bool {
    st["services"].as_array().is_some_and(|a| {
        a.iter().all(|s| {
            if s["kind"] == "oneshot" {
                s["state"] == "done"
            } else {
                running(s)
            }
        })
    })
}

#[test]
fn the_unit_under_a_real_systemd_starts_at_boot_reports_reloads_survives_a_crash_and_stops() {
    let lower = match cached_root() {
        Ok(root) => root,
        Err(why) => {
            say(&format!(
                "SKIPPED: no Debian root with systemd to boot: {why}"
            ));
            return;
        }
    };
    let machine = Machine::new(lower, "venussup-test", SYSTEMD_TEST_BOUND);
    let timing = |what: &str, d: Duration| say(&format!("  {what}: {d:.2?}"));

    // A fresh Debian host: install as the README says, `enable --now`.
    let c = machine.boot(1);
    // The container has no Filecoin programs: the config is the demo's.
    let steps = format!(
        "cd /src\n{}",
        debian::readme_install_steps("examples/demo.toml")
    );
    assert!(steps.contains("systemctl enable --now venussup"), "{steps}");
    let t0 = Instant::now();
    c.sh(&steps);
    timing(
        "README install steps, enable --now included (READY=1)",
        t0.elapsed(),
    );
    let out = c.sh("systemd-analyze verify /etc/systemd/system/venussup.service 2>&1");
    assert_eq!(out.stdout.trim(), "", "systemd-analyze verify, installed");
    // The completions and the manual page, where the README put them.
    let out = c.sh(
        "grep -q 'complete -F _venussup' /usr/share/bash-completion/completions/venussup && echo bash
         head -n 1 /usr/share/zsh/vendor-completions/_venussup
         grep -m 1 '^.TH venussup 1' /usr/local/share/man/man1/venussup.1 >/dev/null && echo man",
    );
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["bash", "#compdef venussup", "man"],
        "{}",
        out.stdout
    );

    // The storage attach may still run when READY=1 goes out: the STATUS=
    // line counts it until it is done.
    let st = c.wait_snapshot(DEMO_STATE, "the demo running, the attach done", settled);
    let unit = c.unit();
    assert_eq!(unit["ActiveState"], "active", "{unit:?}");
    assert_eq!(unit["UnitFileState"], "enabled");
    assert_ne!(
        unit["WatchdogTimestampMonotonic"], "0",
        "WATCHDOG=1 reached systemd"
    );
    // READY=1 reached systemd (Type=notify is active only then), with the
    // STATUS= line that `systemctl status` shows.
    assert_eq!(
        unit["StatusText"], "3/3 services running, 0 failed or backing off",
        "{unit:?}"
    );
    let status = c.run(&["systemctl", "status", "--no-pager", "venussup"]);
    assert!(
        status
            .stdout
            .contains("Status: \"3/3 services running, 0 failed or backing off\""),
        "{}",
        status.stdout
    );
    let pids = |st: &Value| -> BTreeMap<String, i64> {
        st["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["pid"].as_i64()?)))
            .collect()
    };
    let before_reload = pids(&st);

    // Reload: a changed config is applied as a diff.
    c.sh("cat >> /etc/venussup/venussup.toml <<'EOF'\n\n\
         [[service]]\n\
         name = \"worker03\"\n\
         command = [\"/proc/self/exe\", \"standin\", \"--name\", \"worker03\"]\n\
         after = [\"sealer\"]\n\
         EOF\n\
         venussup check >/dev/null 2>&1");
    let t0 = Instant::now();
    c.sh("systemctl reload venussup");
    let st = c.wait_snapshot(DEMO_STATE, "worker03 running after the reload", |st| {
        st["services"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == "worker03" && running(s)))
    });
    timing("systemctl reload until the new service runs", t0.elapsed());
    let after_reload = pids(&st);
    for name in DEMO_DAEMONS {
        assert_eq!(
            before_reload[name], after_reload[name],
            "{name} was not changed and keeps running through the reload"
        );
    }
    let daemons: Vec<&str> = DEMO_DAEMONS.into_iter().chain(["worker03"]).collect();
    assert_eq!(
        c.unit()["StatusText"],
        "4/4 services running, 0 failed or backing off"
    );

    // An upgrade in place, as the README says: install the new binary over
    // the old one, then `venussup upgrade`. systemd sees the same main
    // process, still active, and no service notices.
    let unit = c.unit();
    let main_pid = unit["MainPID"].clone();
    let (restarts, watchdog) = (unit["NRestarts"].clone(), unit["WatchdogUSec"].clone());
    let before: BTreeMap<&str, Vec<i32>> = daemons.iter().map(|n| (*n, c.standins(n))).collect();
    let t0 = Instant::now();
    let out = c.sh(
        "install -m 0755 /src/target/release/venussup /usr/local/bin/venussup\n\
         readlink /proc/$(systemctl show -P MainPID venussup)/exe\n\
         venussup upgrade",
    );
    timing("install + venussup upgrade", t0.elapsed());
    assert!(
        out.stdout
            .starts_with("/usr/local/bin/venussup (deleted)\n"),
        "install replaced the running program's file: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "upgraded in place: pid {main_pid} runs venussup {} (/usr/local/bin/venussup)",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        out.stdout
    );
    let unit = c.unit();
    assert_eq!(
        unit["MainPID"], main_pid,
        "systemd's main process is the same"
    );
    assert_eq!(
        (unit["ActiveState"].as_str(), unit["SubState"].as_str()),
        ("active", "running"),
        "{unit:?}"
    );
    assert_eq!(unit["NRestarts"], restarts);
    assert_eq!(unit["WatchdogUSec"], watchdog);
    for name in &daemons {
        assert_eq!(c.standins(name), before[name], "{name} kept its process");
    }
    let exe = c.sh(&format!("readlink /proc/{main_pid}/exe")).stdout;
    assert_eq!(
        exe.trim(),
        "/usr/local/bin/venussup",
        "it runs the new file"
    );
    let st = c.wait_snapshot(DEMO_STATE, "the upgrade in the snapshot", |st| {
        st["handover"]["reason"] == "upgrade"
    });
    assert_eq!(st["handover"]["lost"], serde_json::json!([]));
    assert_eq!(
        c.unit()["StatusText"],
        "4/4 services running, 0 failed or backing off"
    );
    // The OOM killer's order: the unit asks -1000 for venussup; each
    // service set its own 0 before exec.
    assert_eq!(unit["OOMScoreAdjust"], "-1000");
    let daemon_adj = c.sh(&format!("cat /proc/{main_pid}/oom_score_adj")).stdout;
    if daemon_adj.trim() == "-1000" {
        say("  OOMScoreAdjust=-1000 is venussup's oom_score_adj");
    } else {
        // systemd ignores a refused write (a container without
        // CAP_SYS_RESOURCE, as on the development VM).
        say(&format!(
            "  the container's systemd could not set OOMScoreAdjust=-1000 here (no CAP_SYS_RESOURCE): venussup runs at {}",
            daemon_adj.trim()
        ));
    }
    for name in &daemons {
        for pid in c.standins(name) {
            let adj = fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
            assert_eq!(adj.trim(), "0", "{name}");
        }
    }

    // A crash of venussup itself: systemd restarts it, and every service
    // runs again exactly once.
    let main_pid: i64 = c.unit()["MainPID"].parse().unwrap();
    let old: BTreeMap<&str, Vec<i32>> = daemons.iter().map(|n| (*n, c.standins(n))).collect();
    let t0 = Instant::now();
    c.sh(&format!("kill -9 {main_pid}"));
    let st = c.wait_snapshot(
        DEMO_STATE,
        "a new venussup with every service running",
        |st| {
            st["pid"].as_i64() != Some(main_pid)
                && daemons.iter().all(|n| {
                    st["services"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|s| s["name"] == *n && running(s)))
                })
        },
    );
    timing(
        "kill -9 of venussup until all services run again",
        t0.elapsed(),
    );
    // Joins the restart's start job: returns once READY=1 has reached
    // systemd (at once if it already has).
    c.sh("systemctl start venussup");
    let unit = c.unit();
    assert_eq!(unit["ActiveState"], "active", "{unit:?}");
    assert_eq!(unit["NRestarts"], "1", "{unit:?}");
    assert_eq!(unit["MainPID"], st["pid"].to_string());
    for name in &daemons {
        let now = c.standins(name);
        assert_eq!(
            now.len(),
            1,
            "{name}: {now:?} (before the crash: {:?})",
            old[name]
        );
        assert!(!old[name].contains(&now[0]), "{name} was not restarted");
        for pid in &old[name] {
            assert!(
                !common::daemon::alive(*pid),
                "{name}: the old copy {pid} lives"
            );
        }
    }
    let journal = c.journal();
    say(&format!(
        "  after the crash: systemd SIGKILLed {} processes left in the unit's cgroup, \
         the new venussup found {} of the old services still running",
        lines_with(&journal, "Killing process").len(),
        lines_with(&journal, "still running from an earlier venussup").len()
    ));

    // Stop: every service gets its stop signal from venussup, none needs
    // SIGKILL, and venussup exits 0 well within TimeoutStopSec.
    let since = c.sh("date +%s.%N").stdout.trim().to_string();
    let t0 = Instant::now();
    c.sh("systemctl stop venussup");
    let stop_took = t0.elapsed();
    timing("systemctl stop", stop_took);
    let unit = c.unit();
    assert_eq!(unit["ActiveState"], "inactive", "{unit:?}");
    assert_eq!(unit["Result"], "success", "{unit:?}");
    assert_eq!(unit["ExecMainStatus"], "0", "{unit:?}");
    let journal = c
        .sh(&format!(
            "journalctl --no-pager -o cat -u venussup --since @{since}"
        ))
        .stdout;
    for name in &daemons {
        assert!(
            journal.contains(&format!("sending SIGTERM service={name}")),
            "{name} was not stopped by venussup:\n{journal}"
        );
        assert!(c.standins(name).is_empty(), "{name} outlived the stop");
    }
    assert!(
        lines_with(&journal, "sending SIGKILL").is_empty(),
        "{journal}"
    );
    assert!(
        lines_with(&journal, "Killing process").is_empty(),
        "systemd killed what venussup was stopping:\n{journal}"
    );
    assert!(stop_took < Duration::from_secs(30));
    // From the next boot on, the journal is kept on disk: the host reads
    // what happened at power off.
    c.sh("mkdir -p /var/log/journal");
    let power_off = c.power_off();
    timing("power off (boot 1)", power_off);

    // Enabled: the next boot starts it, and the boot waits for READY=1.
    let t0 = Instant::now();
    let c = machine.boot(2);
    c.wait_snapshot(DEMO_STATE, "the demo running, the attach done", settled);
    let unit = c.unit();
    assert_eq!(unit["ActiveState"], "active", "{unit:?}");
    assert_eq!(unit["NRestarts"], "0");
    assert_eq!(
        unit["StatusText"], "4/4 services running, 0 failed or backing off",
        "{unit:?}"
    );
    timing("boot 2 until venussup is active", t0.elapsed());
    // Power off: systemd stops venussup, which stops its services.
    let power_off = c.power_off();
    timing("power off (boot 2, venussup running)", power_off);
    let journal = run_bounded(
        Command::new("journalctl")
            .arg("--directory")
            .arg(machine.path("upper/var/log/journal"))
            .args(["--no-pager", "-o", "cat", "-b", "-0", "-u", "venussup"]),
        IN_CONTAINER,
    );
    let journal = journal.expect_code(0).stdout.as_str();
    for name in &daemons {
        assert!(
            journal.contains(&format!("sending SIGTERM service={name}")),
            "{name} was not stopped at power off:\n{journal}"
        );
    }
    assert!(
        lines_with(journal, "sending SIGKILL").is_empty(),
        "{journal}"
    );
    assert!(
        lines_with(journal, "Killing process").is_empty(),
        "{journal}"
    );
    assert!(
        journal.contains("all services stopped; exiting"),
        "{journal}"
    );
    machine.clean_up().unwrap();
}
