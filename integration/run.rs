//! `venussup run`, black-box: real processes, real signals, the daemon
//! observed through its status snapshot and its services' own reports.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::daemon::{alive, wait_file, wait_gone, Setup, WAIT};
use common::venussup;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A stand-in service: `{bin} standin` with a name and extra flags.
fn standin(name: &str, extra: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\ncommand = [\"{{bin}}\", \"standin\", \"--name\", \"{name}\", \"--report\", \"{{dir}}/{name}.json\"{extra}]\n"
    )
}

fn report(setup: &Setup, name: &str) -> Value {
    serde_json::from_str(&fs::read_to_string(setup.path(&format!("{name}.json"))).unwrap()).unwrap()
}

fn pid_of(s: &Value) -> i32 {
    i32::try_from(s["pid"].as_i64().unwrap()).unwrap()
}

#[test]
fn services_start_in_order_with_their_env_own_session_and_no_leaked_descriptors() {
    let setup = Setup::new(&format!(
        "[host.env]\nTRUST_PARAMS = \"1\"\n\n{}ready = {{ tcp = \"127.0.0.1:23461\" }}\nenv = {{ VENUS_SEALER_PATH = \"/tmp/s\" }}\n\n{}after = [\"sealer\"]\nenv = {{ VENUS_WORKER_PATH = \"/tmp/w\", TRUST_PARAMS = \"0\" }}\numask = \"0027\"\n",
        standin("sealer", ", \"--listen\", \"127.0.0.1:23461\""),
        standin("worker", "")
    ));
    let d = setup.start();
    let sealer = d.wait_service("sealer", "running", |s| s["state"] == "running");
    let worker = d.wait_service("worker", "running", |s| s["state"] == "running");
    d.wait_for("both reports", |_| {
        setup.path("worker.json").exists() && setup.path("sealer.json").exists()
    });
    // Order: the worker starts only once the sealer's port accepts.
    let log = d.log();
    let ready = log
        .find("ready service=sealer")
        .expect("sealer became ready");
    let started = log.find("started service=worker").expect("worker started");
    assert!(
        ready < started,
        "worker started before the sealer was ready:\n{log}"
    );

    let w = report(&setup, "worker");
    assert_eq!(w["pid"].as_i64(), worker["pid"].as_i64());
    // Exactly the planned environment: nothing of the test's own leaks
    // (a service without a GPU gets the two GPU variables from the plan).
    let env = w["env"].as_object().unwrap();
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "BELLMAN_NO_GPU",
            "CUDA_VISIBLE_DEVICES",
            "PATH",
            "TRUST_PARAMS",
            "VENUS_WORKER_PATH"
        ],
        "{env:?}"
    );
    assert_eq!(
        env["TRUST_PARAMS"], "0",
        "the service's env wins over the host's"
    );
    assert_eq!(report(&setup, "sealer")["env"]["TRUST_PARAMS"], "1");
    // Its own session and process group: signals to venussup never reach it.
    assert_eq!(w["sid"].as_i64(), w["pid"].as_i64());
    assert_eq!(w["pgid"].as_i64(), w["pid"].as_i64());
    // Only stdin, stdout and stderr (and the fd listing itself) cross exec.
    let fds: Vec<&str> = w["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let leaked: Vec<&&str> = fds
        .iter()
        .filter(|f| {
            !f.starts_with("0:")
                && !f.starts_with("1:")
                && !f.starts_with("2:")
                && !f.contains("/proc/")
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "descriptors leaked into the service: {leaked:?}"
    );
    assert!(fds.iter().any(|f| f.starts_with("0:/dev/null")), "{fds:?}");
    assert!(
        fds.iter()
            .any(|f| f.starts_with("1:") && f.ends_with("/logs/worker.log")),
        "{fds:?}"
    );
    // The open-files limit is raised as far as this host lets venussup.
    let (soft, hard) = (
        w["nofile"][0].as_u64().unwrap(),
        w["nofile"][1].as_u64().unwrap(),
    );
    assert_eq!(soft, hard);
    assert!(soft >= 20_000 || soft == 1_048_576, "nofile {soft}");
    assert_ne!(sealer["pid"], worker["pid"]);
    // Output lands in the service's log file.
    assert!(fs::read_to_string(setup.path("logs/worker.log"))
        .unwrap()
        .contains("worker ["));
}

#[test]
fn kill_9_of_a_service_brings_a_new_pid_at_once() {
    let setup = Setup::new(&format!(
        "{}stable_after = \"100ms\"\n",
        standin("sealer", "")
    ));
    let d = setup.start();
    let first = d.wait_service("sealer", "running", |s| s["state"] == "running");
    // Let it run steadily (past stable_after) before the kill.
    let pid = pid_of(&first);
    assert!(
        !wait_gone(pid, Duration::from_millis(300)),
        "the stand-in died on its own"
    );
    let killed_at = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let again = d.wait_service("sealer", "a new pid", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(i64::from(pid))
    });
    assert!(
        killed_at.elapsed() < Duration::from_secs(1),
        "a steady service restarts at once"
    );
    assert_eq!(again["restarts"], 1);
    assert_eq!(again["last_exit"]["how"]["signal"], 9);
}

#[test]
fn a_crash_looping_service_backs_off_doubling_and_resets_after_a_steady_run() {
    // Dies at once three times, then runs 1.5 s (steady: stable_after 1s)
    // before dying again. Each start is stamped by the service itself.
    let script = "n=$(cat {dir}/count 2>/dev/null || echo 0); echo $((n+1)) > {dir}/count; date +%s%N >> {dir}/starts; if [ $n -lt 3 ]; then exit 1; fi; exec {bin} standin --exit-after 1500ms --exit-code 1";
    let setup = Setup::new(&format!(
        "[[service]]\nname = \"flappy\"\ncommand = [\"/bin/sh\", \"-c\", \"{script}\"]\nstable_after = \"1s\"\n"
    ));
    let d = setup.start();
    let s = d.wait_service("flappy", "6 starts", |s| s["restarts"].as_u64() >= Some(5));
    assert_eq!(s["last_exit"]["how"]["code"], 1);
    let starts: Vec<f64> = fs::read_to_string(setup.path("starts"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse::<f64>().unwrap() / 1e9)
        .collect();
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // Young deaths: 1 s, 2 s, 4 s; then a 1.5 s steady run restarts at
    // once (the backoff reset), and the next steady run again.
    let expected = [1.0, 2.0, 4.0, 1.5, 1.5];
    for (i, (gap, want)) in gaps.iter().zip(expected).enumerate() {
        assert!(
            (gap - want).abs() < 0.5,
            "gap {i} was {gap:.2}s, expected about {want}s; all: {gaps:?}"
        );
    }
}

#[test]
fn sigterm_stops_in_reverse_order_escalating_to_sigkill_and_exits_0() {
    let setup = Setup::new(&format!(
        "{}\n{}after = [\"sealer\"]\nstop_timeout = \"1s\"\nready = {{ file = \"{{dir}}/stubborn.json\" }}\n",
        standin("sealer", ""),
        standin("stubborn", ", \"--ignore-sigterm\"")
    ));
    let mut d = setup.start();
    d.wait_service("stubborn", "running", |s| s["state"] == "running");
    let sealer = pid_of(&d.service("sealer"));
    let stubborn = pid_of(&d.service("stubborn"));
    let t0 = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "SIGKILL came before the stop timeout"
    );
    assert!(!alive(sealer) && !alive(stubborn));
    let log = d.log();
    let term_stubborn = log.find("sending SIGTERM service=stubborn").unwrap();
    let kill_stubborn = log.find("sending SIGKILL service=stubborn").unwrap();
    let term_sealer = log.find("sending SIGTERM service=sealer").unwrap();
    assert!(
        term_stubborn < kill_stubborn && kill_stubborn < term_sealer,
        "wrong order:\n{log}"
    );
    let last = d.service("stubborn");
    assert_eq!(last["last_exit"]["how"]["signal"], 9);
}

#[test]
fn the_pledge_timer_runs_and_classifies_success_full_and_failure() {
    let setup = Setup::new(
        "[[timer]]\nname = \"ok\"\ncommand = [\"{bin}\", \"standin\", \"--say\", \"Created CC sector: 12\"]\nevery = \"1s\"\nfull_output = [\"too many sectors sealing\"]\n\
         [[timer]]\nname = \"full\"\ncommand = [\"/bin/sh\", \"-c\", \"echo 'ERROR: too many sectors sealing' >&2; exit 1\"]\nevery = \"1s\"\nfull_output = [\"too many sectors sealing\"]\n\
         [[timer]]\nname = \"broken\"\ncommand = [\"/bin/sh\", \"-c\", \"echo connection refused; exit 3\"]\nevery = \"1s\"\nfull_output = [\"too many sectors sealing\"]\n\
         [[timer]]\nname = \"slow\"\ncommand = [\"/bin/sleep\", \"60\"]\nevery = \"1s\"\ntimeout = \"1500ms\"\n",
    );
    let d = setup.start();
    let st = d.wait_for("every timer has run", |st| {
        st["timers"].as_array().is_some_and(|ts| {
            ts.len() == 4
                && ts
                    .iter()
                    .all(|t| t["last"].as_array().is_some_and(|l| !l.is_empty()))
        })
    });
    let timer = |n: &str| {
        st["timers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(timer("ok")["last"][0]["result"], "success");
    assert_eq!(timer("full")["last"][0]["result"], "full");
    assert_eq!(timer("broken")["last"][0]["result"], "failure");
    assert_eq!(timer("broken")["last"][0]["reason"], "exit code 3");
    assert!(timer("slow")["last"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("still running after"));
    // Never two runs at once: the slow one was due again while running.
    let d2 = d.wait_for("a skipped slot", |st| {
        st["timers"][3]["runs"]["skipped"].as_u64() >= Some(1)
    });
    assert!(d2["timers"][3]["runs"]["skipped"].as_u64().unwrap() >= 1);
    // The run's output is in the timer's log.
    assert!(fs::read_to_string(setup.path("logs/full.log"))
        .unwrap()
        .contains("too many sectors sealing"));
}

#[test]
fn a_second_run_for_the_same_host_is_refused() {
    let setup = Setup::new(&standin("sealer", ""));
    let d = setup.start();
    d.wait_service("sealer", "running", |s| s["state"] == "running");
    let out = venussup(&["run", "--config", setup.config().to_str().unwrap()]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("another venussup is already running"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&d.pid().to_string()),
        "names the running one: {}",
        out.stderr
    );
    // The first one's service is untouched.
    assert_eq!(d.service("sealer")["restarts"], 0);
}

#[test]
fn a_program_that_cannot_start_is_its_own_error_and_the_others_run() {
    let setup = Setup::new(&format!(
        "[[service]]\nname = \"ghost\"\ncommand = [\"/opt/nowhere/venus-worker\", \"run\"]\n\n{}",
        standin("sealer", "")
    ));
    let d = setup.start();
    let ghost = d.wait_service("ghost", "a start error", |s| {
        s["state"] == "backoff" && s["reason"].is_string()
    });
    assert!(
        ghost["reason"]
            .as_str()
            .unwrap()
            .contains("failed to start `/opt/nowhere/venus-worker`"),
        "{ghost}"
    );
    d.wait_service("sealer", "running", |s| s["state"] == "running");
}

#[test]
fn a_restarted_venussup_stops_what_its_predecessor_left_then_starts_fresh() {
    let setup = Setup::new(&standin("sealer", ""));
    let mut first = setup.start();
    let old = pid_of(&first.wait_service("sealer", "running", |s| s["state"] == "running"));
    first.crash();
    assert!(alive(old), "a service outlives its supervisor's crash");
    let second = setup.start();
    let new = second.wait_service("sealer", "running again", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(i64::from(old))
    });
    assert!(
        wait_gone(old, Duration::from_secs(5)),
        "the old copy is still running next to the new one"
    );
    assert_ne!(pid_of(&new), old);
    assert!(second
        .log()
        .contains("still running from an earlier venussup"));
}

#[test]
fn a_oneshot_runs_after_its_dependency_retries_until_success_and_once_is_remembered() {
    let setup = Setup::new(&format!(
        "{}\n[[service]]\nname = \"attach\"\nkind = \"oneshot\"\nonce = true\nafter = [\"worker\"]\n\
         command = [\"/bin/sh\", \"-c\", \"n=$(cat {{dir}}/tries 2>/dev/null || echo 0); echo $((n+1)) > {{dir}}/tries; [ $n -ge 1 ]\"]\n",
        standin("worker", "")
    ));
    let mut d = setup.start();
    let attach = d.wait_service("attach", "done", |s| s["state"] == "done");
    assert_eq!(attach["restarts"], 1, "failed once, retried once");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0));
    let d = setup.start();
    d.wait_service("attach", "done again", |s| s["state"] == "done");
    assert_eq!(
        fs::read_to_string(setup.path("tries")).unwrap().trim(),
        "2",
        "once = true: not run again"
    );
}

#[test]
fn sighup_to_venussup_reaches_no_service() {
    let setup = Setup::new(&standin("sealer", ""));
    let d = setup.start();
    let pid = pid_of(&d.wait_service("sealer", "running", |s| s["state"] == "running"));
    d.signal(Signal::SIGHUP);
    // The daemon logs the SIGHUP once handled; the service must still run.
    d.wait_for("SIGHUP handled", |_| d.log().contains("SIGHUP"));
    assert!(alive(pid));
    assert_eq!(d.service("sealer")["pid"].as_i64(), Some(i64::from(pid)));
}

#[test]
fn double_forked_orphans_leave_no_zombie_as_subreaper() {
    orphans_test(&[]);
}

#[test]
fn double_forked_orphans_leave_no_zombie_as_pid_1() {
    orphans_test(&["unshare", "--pid", "--fork", "--mount-proc"]);
}

/// A service leaves 500 orphans; venussup (subreaper, or PID 1 in its own
/// pid namespace) reaps every one, then stops cleanly on SIGTERM.
fn orphans_test(prefix: &[&str]) {
    let setup = Setup::new(&standin("spawner", ", \"--orphans\", \"500\""));
    let mut d = setup.start_with(prefix);
    let st = d.wait_for("500 orphans reaped", |st| {
        st["orphans_reaped"].as_u64() >= Some(500)
    });
    if !prefix.is_empty() {
        assert_eq!(st["pid"], 1, "venussup is PID 1 in its namespace");
    }
    // No zombie is left whose parent is venussup.
    let daemon = d.pid();
    let zombies = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let mut f = after.split_whitespace();
            f.next() == Some("Z") && f.next() == Some(&daemon.to_string())
        })
        .count();
    assert_eq!(zombies, 0);
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0), "{}", d.log());
}

#[test]
fn a_growing_log_is_rotated_while_the_service_runs_keeping_n() {
    let setup = Setup::new(&standin("chatty", ", \"--spew\", \"3000000\""));
    // Rotation settings go in [host.log]; Setup wrote [host] first.
    setup.host_line("log = { max_size = \"1MiB\", keep = 2 }"); // the least allowed
    let d = setup.start();
    let pid = pid_of(&d.wait_service("chatty", "running", |s| s["state"] == "running"));
    wait_file(&setup.path("logs/chatty.log.1"));
    assert!(fs::metadata(setup.path("logs/chatty.log.1")).unwrap().len() >= 1 << 20);
    assert!(!setup.path("logs/chatty.log.3").exists(), "keep = 2");
    assert!(alive(pid), "rotation does not disturb the service");
    // The service still writes to the (truncated) live file.
    assert!(fs::metadata(setup.path("logs/chatty.log")).unwrap().len() < 3_000_000);
}

#[test]
fn sd_notify_gets_ready_and_a_status_line() {
    use std::os::unix::net::UnixDatagram;
    let setup = Setup::new(&format!(
        "{}ready = {{ file = \"{{dir}}/sealer.json\" }}\n",
        standin("sealer", "")
    ));
    let sock_path = setup.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let d = setup.start_env(&[], &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification within the wait");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains("STATUS=1/1 services running"), "{msg}");
    // "1/1 running" above says READY came after the file probe passed; the
    // snapshot says the same once written.
    d.wait_service("sealer", "running", |s| s["state"] == "running");
}

#[test]
fn a_command_probe_decides_readiness_and_dependents_wait_for_it() {
    let setup = Setup::new(&format!(
        "{}ready = {{ command = [\"/bin/sh\", \"-c\", \"test -e {{dir}}/go\"], timeout = \"20s\" }}\n\n{}after = [\"sealer\"]\n",
        standin("sealer", ""),
        standin("worker", "")
    ));
    let d = setup.start();
    d.wait_service("sealer", "starting", |s| s["state"] == "starting");
    assert_eq!(d.service("worker")["state"], "waiting");
    fs::write(setup.path("go"), "").unwrap();
    d.wait_service("worker", "running", |s| s["state"] == "running");
    assert_eq!(d.service("sealer")["state"], "running");
}

#[test]
fn a_service_runs_as_its_user_with_its_umask_and_groups() {
    let setup = Setup::new(&format!(
        "{}user = \"nobody\"\numask = \"0027\"\n",
        standin("worker", "")
    ));
    // The report is written by `nobody`: its folder must let it (sticky,
    // like /tmp: an open folder above the state folder is refused).
    let dir = setup.dir.path();
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    setup.bin_for_others();
    let d = setup.start();
    d.wait_service("worker", "running", |s| s["state"] == "running");
    wait_file(&setup.path("worker.json"));
    let r = report(&setup, "worker");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(r["uid"].as_u64(), Some(u64::from(nobody.uid.as_raw())));
    assert_eq!(r["gid"].as_u64(), Some(u64::from(nobody.gid.as_raw())));
    assert!(
        !r["groups"].as_array().unwrap().iter().any(|g| g == 0),
        "root's groups were dropped"
    );
    assert_eq!(r["umask"], "0027");
    assert_eq!(r["env"]["USER"], "nobody");
}

/// A simulated 4-core, 2-threads-per-core host (fs root in /dev/shm when
/// there is one) for the SMT step of `run`.
fn smt_host() -> tempfile::TempDir {
    use venussup::host::topology::sim::{Numbering, Shape, SimHost, Style};
    let shm = std::path::Path::new("/dev/shm");
    let root = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    SimHost::regular(
        root.path(),
        &Shape::simple(4, 2, Numbering::Spread),
        Style::MODERN,
    )
    .unwrap();
    root
}

fn online_file(root: &std::path::Path, cpu: u32) -> String {
    fs::read_to_string(root.join(format!("sys/devices/system/cpu/cpu{cpu}/online")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn simulated_smt_host_run_takes_siblings_offline_before_services_start() {
    let root = smt_host();
    let setup = Setup::new(&standin("sealer", ""));
    setup.host_line("smt = \"off\"");
    let mut d = setup.start_args(&["--fs-root", root.path().to_str().unwrap()]);
    let st = d.wait_service("sealer", "running", |s| s["state"] == "running");
    assert_eq!(st["state"], "running");
    let status = d.status();
    assert_eq!(
        status["smt"]["offlined"],
        serde_json::json!([4, 5, 6, 7]),
        "{status:#}"
    );
    for cpu in 4..8 {
        assert_eq!(online_file(root.path(), cpu), "0");
    }
    assert_eq!(online_file(root.path(), 1), "1");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0));
    // Started again, its step finds nothing to do, and status still shows
    // the host as it is: the siblings offline, taken offline by venussup.
    let mut d = setup.start_args(&["--fs-root", root.path().to_str().unwrap()]);
    d.wait_service("sealer", "running", |s| s["state"] == "running");
    let smt = &d.status()["smt"];
    assert_eq!(smt["offlined"], serde_json::json!([]), "{smt:#}");
    assert_eq!(smt["offline"], serde_json::json!([4, 5, 6, 7]), "{smt:#}");
    assert_eq!(
        smt["offlined_by_venussup"],
        serde_json::json!([4, 5, 6, 7]),
        "{smt:#}"
    );
    let text = setup.cli(&["status"]);
    assert!(
        text.stdout
            .contains("SMT: 4 siblings offline (by venussup: 4)"),
        "{}",
        text.stdout
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn simulated_read_only_sysfs_smt_failure_is_reported_and_services_still_start() {
    let root = smt_host();
    // A sysfs that cannot be written: every sibling's `online` is a folder.
    for cpu in 4..8 {
        let f = root
            .path()
            .join(format!("sys/devices/system/cpu/cpu{cpu}/online"));
        fs::remove_file(&f).unwrap();
        fs::create_dir(&f).unwrap();
    }
    let setup = Setup::new(&standin("sealer", ""));
    setup.host_line("smt = \"off\"");
    let d = setup.start_args(&["--fs-root", root.path().to_str().unwrap()]);
    d.wait_service("sealer", "running", |s| s["state"] == "running");
    let status = d.status();
    assert_eq!(
        status["smt"]["failed"].as_array().map(Vec::len),
        Some(4),
        "{status:#}"
    );
    assert!(d.log().contains("SMT step failed"), "{}", d.log());
}

#[test]
fn a_dependency_that_restarts_does_not_bounce_its_dependents() {
    let setup = Setup::new(&format!(
        "{}stable_after = \"100ms\"\n\n{}after = [\"sealer\"]\n",
        standin("sealer", ""),
        standin("worker", "")
    ));
    let d = setup.start();
    let worker = pid_of(&d.wait_service("worker", "running", |s| s["state"] == "running"));
    let sealer = pid_of(&d.service("sealer"));
    kill(Pid::from_raw(sealer), Signal::SIGKILL).unwrap();
    d.wait_service("sealer", "restarted", |s| {
        s["restarts"] == 1 && s["state"] == "running"
    });
    assert_eq!(pid_of(&d.service("worker")), worker);
    assert_eq!(d.service("worker")["restarts"], 0);
}

#[test]
fn a_confined_service_stays_in_its_cpuset_even_when_it_widens_its_mask_and_its_cgroup_goes_with_it()
{
    let parent = format!("venussup-test-run-{}", std::process::id());
    let setup = Setup::new(&format!(
        "{}cpus = \"1\"\n",
        standin("worker", ", \"--widen-affinity\"")
    ));
    setup.host_line(&format!("cgroup_parent = \"{parent}\""));
    let mut d = setup.start();
    d.wait_service("worker", "running", |s| s["state"] == "running");
    wait_file(&setup.path("worker.json"));
    let r = report(&setup, "worker");
    assert_eq!(
        r["cpus_allowed"], "1",
        "the cpuset holds what the mask no longer does: {r}"
    );
    assert_eq!(r["thread_cpus_allowed"], "1");
    let cgroup = std::path::Path::new("/sys/fs/cgroup/cpuset")
        .join(&parent)
        .join("worker");
    assert!(cgroup.is_dir(), "{} exists while it runs", cgroup.display());
    let procs = fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    let pid = r["pid"].as_u64().unwrap().to_string();
    assert!(procs.lines().any(|p| p == pid), "{procs}");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0));
    assert!(!cgroup.exists(), "the service's cgroup is removed at stop");
    assert!(
        !cgroup.parent().unwrap().exists(),
        "and venussup's parent at exit"
    );
}

#[test]
fn a_grandchild_that_left_the_process_group_is_killed_through_the_cgroup_at_stop() {
    let parent = format!("venussup-test-gc-{}", std::process::id());
    let setup = Setup::new(&format!(
        "{}cpus = \"0-1\"\n",
        standin("forker", ", \"--hold-grandchild\", \"{dir}/grandchild\"")
    ));
    setup.host_line(&format!("cgroup_parent = \"{parent}\""));
    let mut d = setup.start();
    d.wait_service("forker", "running", |s| s["state"] == "running");
    wait_file(&setup.path("grandchild"));
    let gc: i32 = fs::read_to_string(setup.path("grandchild"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(gc));
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).code(), Some(0));
    assert!(
        wait_gone(gc, Duration::from_secs(5)),
        "the escaped grandchild outlived its service"
    );
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/cpuset")
            .join(&parent)
            .exists(),
        "venussup's cgroup is gone at exit"
    );
}

#[test]
fn ready_reaches_systemd_even_while_a_probed_service_crash_loops_before_its_oneshot() {
    use std::os::unix::net::UnixDatagram;
    let setup = Setup::new(
        "[[service]]\nname = \"worker\"\ncommand = [\"/bin/false\"]\nready = { tcp = \"127.0.0.1:23499\" }\n\
         [[service]]\nname = \"attach\"\nkind = \"oneshot\"\nafter = [\"worker\"]\ncommand = [\"/bin/true\"]\n\
         [[service]]\nname = \"sealer\"\ncommand = [\"{bin}\", \"standin\"]\n",
    );
    let sock_path = setup.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let d = setup.start_env(&[], &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("READY within the wait, although worker never gets ready");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(
        msg.contains("STATUS=1/2 services running"),
        "daemons only are counted: {msg}"
    );
    assert_eq!(d.service("attach")["state"], "waiting");
}
