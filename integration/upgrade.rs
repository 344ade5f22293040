//! `venussup upgrade` and the panic re-exec, black-box: the daemon replaces
//! its own program in place and every child keeps running with its pid and
//! state; a failed upgrade changes nothing and says why; a panic re-execs;
//! `oom_score_adj` is the daemon's own and each service's own.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::bin;
use common::daemon::{alive, pid_of, wait_file, wait_gone, Daemon, Setup, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A stand-in service.
fn standin(name: &str, extra: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\ncommand = [\"{{bin}}\", \"standin\", \"--name\", \"{name}\"]\nstable_after = \"100ms\"\n{extra}\n"
    )
}

/// Puts a copy of `src` at `dest`, mode 0755, written by an `install`
/// process of its own: a file this multi-threaded test process wrote
/// itself could still be open for writing in a child another test thread
/// just forked, and executing it would fail with ETXTBSY.
fn place(src: &Path, dest: &Path) {
    let out = common::run_bounded(
        std::process::Command::new("install")
            .args(["-m", "0755"])
            .arg(src)
            .arg(dest),
        WAIT,
    );
    out.expect_code(0);
}

/// The venussup binary copied to `name` in the test's folder: "a second
/// build" at another path.
fn copy_of_bin(setup: &Setup, name: &str) -> PathBuf {
    let path = setup.path(name);
    place(&bin(), &path);
    path
}

/// An executable shell script `name` in the test's folder; `{bin}` and
/// `{dir}` are filled in.
fn script(setup: &Setup, name: &str, body: &str) -> PathBuf {
    let path = setup.path(name);
    let text = body
        .replace("{bin}", bin().to_str().unwrap())
        .replace("{dir}", setup.dir.path().to_str().unwrap());
    let draft = setup.path(&format!("{name}.draft"));
    fs::write(&draft, format!("#!/bin/sh\n{text}")).unwrap();
    place(&draft, &path);
    path
}

fn upgrade(setup: &Setup, binary: &Path) -> common::Outcome {
    setup.cli(&["upgrade", "--binary", binary.to_str().unwrap()])
}

/// A field of /proc/PID/status.
fn proc_status(pid: i64, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap()
        .trim()
        .to_string()
}

fn oom_score_adj(pid: i64) -> i32 {
    fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Each service's pid, by name.
fn pids(st: &Value) -> BTreeMap<String, Option<i64>> {
    st["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["pid"].as_i64()))
        .collect()
}

fn service<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

/// Sends a raw request line and reads the answer line (empty at EOF).
fn raw(d: &Daemon, line: &str) -> String {
    let mut s = UnixStream::connect(d.state_dir.join("control.sock")).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = BufReader::new(&s).read_line(&mut answer);
    answer
}

/// The state of every kind of child an upgrade must keep: a running
/// stand-in, one waiting for its ready probe, one backing off, one
/// draining, a timer run writing its output, each at its own
/// `oom_score_adj` under a daemon at 500.
#[test]
fn every_child_keeps_its_pid_and_state_across_an_upgrade_to_another_build() {
    let setup = Setup::new(&format!(
        "{}{}{}{}{}\
         [[timer]]\nname = \"pledge\"\nevery = \"1h\"\nfull_output = [\"too many sectors sealing\"]\n\
         command = [\"/bin/sh\", \"-c\", \"echo $$$$ > {{dir}}/run.pid; echo too many sectors sealing; while [ ! -e {{dir}}/go ]; do sleep 0.05; done; echo after the upgrade; exit 1\"]\n",
        standin("sealer", ""),
        standin("slow", "ready = { file = \"{dir}/slow.ready\" }"),
        "[[service]]\nname = \"flappy\"\ncommand = [\"/bin/sh\", \"-c\", \"echo FATAL-X; exit 1\"]\nfatal_output = [\"FATAL-X\"]\nbackoff_max = \"10min\"\n\n",
        standin(
            "worker",
            "drain = { command = [\"/bin/true\"], quiet = [\"/bin/sh\", \"-c\", \"test -e {dir}/idle\"], poll_every = \"100ms\", timeout = \"5min\" }"
        ),
        standin("tuned", "oom_score_adjust = 700"),
    ));
    let d = setup.start_oom(500);
    let daemon = i64::from(d.pid());
    for name in ["sealer", "worker", "tuned"] {
        d.running(name);
    }
    d.wait_service("slow", "starting", |s| s["state"] == "starting");
    d.wait_service("flappy", "backing off", |s| {
        s["state"] == "backoff" && s["fatal"]["count"] == 1
    });
    setup.cli(&["stop", "worker"]).expect_code(0);
    d.wait_service("worker", "draining", |s| s["state"] == "draining");
    setup.cli(&["timer", "run", "pledge"]).expect_code(0);
    wait_file(&setup.path("run.pid"));
    let run: i64 = fs::read_to_string(setup.path("run.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let before = d.wait_for("the timer running", |st| st["timers"][0]["running"] == true);

    // oom_score_adj: the daemon's own, and each child's own from before exec.
    assert_eq!(oom_score_adj(daemon), 500);
    let pid = |name: &str| service(&before, name)["pid"].as_i64().unwrap();
    assert_eq!(oom_score_adj(pid("sealer")), 0, "reset to 0 by default");
    assert_eq!(oom_score_adj(pid("tuned")), 700, "its oom_score_adjust");
    assert_eq!(oom_score_adj(run), 0, "a timer run is reset too");

    let copy = copy_of_bin(&setup, "venussup-2");
    let out = upgrade(&setup, &copy);
    out.expect_code(0);
    assert!(
        out.stdout
            .starts_with(&format!("upgraded in place: pid {daemon} runs venussup ")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("4 service processes and 1 timer runs kept"),
        "{}",
        out.stdout
    );
    let after = d.wait_for("the handover in the snapshot", |st| {
        st["handover"]["reason"] == "upgrade"
    });
    assert_eq!(after["pid"].as_i64(), Some(daemon), "same process");
    assert_eq!(
        after["handover"]["lost"],
        serde_json::json!([]),
        "{}",
        d.log()
    );
    assert_eq!(after["handover"]["binary"], copy.to_str().unwrap());
    assert_eq!(
        fs::read_link(format!("/proc/{daemon}/exe")).unwrap(),
        copy,
        "the daemon runs the new program"
    );
    assert_eq!(pids(&after), pids(&before), "every service keeps its pid");
    for name in ["sealer", "slow", "flappy", "worker", "tuned"] {
        let (b, a) = (service(&before, name), service(&after, name));
        for field in ["state", "ready", "restarts", "reason", "last_exit", "fatal"] {
            assert_eq!(a[field], b[field], "{name}: {field}");
        }
        // Uptimes are kept (Unix seconds derived from the monotonic clock).
        if let (Some(x), Some(y)) = (a["since"].as_u64(), b["since"].as_u64()) {
            assert!(x.abs_diff(y) <= 1, "{name}: since {y} then {x}");
        }
    }
    let next = |st: &Value| {
        service(st, "flappy")["next_start_in_secs"]
            .as_f64()
            .unwrap()
    };
    assert!(
        next(&after) <= next(&before) && next(&after) > 500.0,
        "the backoff goes on where it was: {} then {}",
        next(&before),
        next(&after)
    );
    assert!(
        service(&after, "worker")["draining_secs"].as_f64()
            >= service(&before, "worker")["draining_secs"].as_f64()
    );
    assert_eq!(after["timers"][0]["running"], true);
    assert!(alive(i32::try_from(run).unwrap()));
    assert_eq!(
        proc_status(run, "PPid"),
        daemon.to_string(),
        "still our child"
    );
    assert_eq!(oom_score_adj(daemon), 500, "kept across the exec");
    let table = setup.cli(&["status"]);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("upgraded in place ")
                && l.contains(&format!(" ago from {} (", env!("CARGO_PKG_VERSION")))
                && l.ends_with("; nothing lost)")),
        "{}",
        table.stdout
    );

    // Each goes on in the new image: the probe, the drain, the run (whose
    // output from before the upgrade decides its result).
    fs::write(setup.path("slow.ready"), "").unwrap();
    let slow = d.wait_service("slow", "ready", |s| s["state"] == "running");
    assert_eq!(slow["pid"].as_i64(), Some(pid("slow")));
    fs::write(setup.path("idle"), "").unwrap();
    d.wait_service("worker", "stopped after its drain", |s| {
        s["state"] == "stopped"
    });
    fs::write(setup.path("go"), "").unwrap();
    let done = d.wait_for("the run reaped", |st| st["timers"][0]["running"] == false);
    assert_eq!(done["timers"][0]["runs"]["full"], 1, "{}", d.log());
    assert!(fs::read_to_string(setup.path("logs/pledge.log"))
        .unwrap()
        .contains("too many sectors sealing\nafter the upgrade"));
}

#[test]
fn a_control_client_polling_through_upgrades_is_never_refused_nor_left_unanswered() {
    let setup = Setup::new(&standin("sealer", ""));
    let d = setup.start();
    let daemon = d.pid();
    d.running("sealer");
    let sock = d.state_dir.join("control.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut ok, mut refused, mut unanswered) = (0u32, Vec::new(), 0u32);
            let mut other_pids = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut s = match UnixStream::connect(&sock) {
                    Ok(s) => s,
                    Err(e) => {
                        refused.push(e.to_string());
                        continue;
                    }
                };
                s.set_read_timeout(Some(WAIT)).unwrap();
                let _ = s.write_all(b"{\"version\":1,\"command\":\"status\"}\n");
                let mut line = String::new();
                let _ = BufReader::new(&s).read_line(&mut line);
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v["ok"] == true => {
                        ok += 1;
                        if v["result"]["pid"] != daemon {
                            other_pids.push(v["result"]["pid"].clone());
                        }
                    }
                    _ => unanswered += 1,
                }
            }
            (ok, refused, unanswered, other_pids)
        })
    };
    let copies = [copy_of_bin(&setup, "b1"), copy_of_bin(&setup, "b2")];
    for (n, copy) in copies.iter().cycle().take(4).enumerate() {
        upgrade(&setup, copy).expect_code(0);
        d.wait_for(&format!("upgrade {n} done"), |st| {
            st["handover"]["binary"] == copy.to_str().unwrap()
        });
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, refused, unanswered, other_pids) = poller.join().unwrap();
    assert!(refused.is_empty(), "refused connections: {refused:?}");
    assert_eq!(unanswered, 0, "connections closed without an answer");
    assert!(other_pids.is_empty(), "{other_pids:?}");
    assert!(ok > 10, "only {ok} answers");
    eprintln!("upgrade: {ok} status answers through 4 upgrades, none refused");
}

#[test]
fn a_child_that_dies_during_the_handover_is_reaped_and_restarted_by_the_new_image() {
    let setup = Setup::new(&format!(
        "{}{}",
        standin("victim", ""),
        standin("bystander", "")
    ));
    let d = setup.start();
    let victim = pid_of(&d.running("victim"));
    let bystander = pid_of(&d.running("bystander"));
    // A steady run (stable_after 100ms): its death restarts it at once.
    assert!(!wait_gone(
        i32::try_from(victim).unwrap(),
        Duration::from_millis(300)
    ));
    fs::write(setup.path("victim.pid"), victim.to_string()).unwrap();
    // The new "program" kills the victim after the old image is gone and
    // before the new one runs: the death happens inside the handover.
    let new = script(
        &setup,
        "killer",
        "if [ \"$1\" = run ]; then kill -9 $(cat {dir}/victim.pid); fi\nexec {bin} \"$@\"\n",
    );
    upgrade(&setup, &new).expect_code(0);
    let again = d.wait_service("victim", "restarted by the new image", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(victim)
    });
    assert_eq!(again["restarts"], 1);
    assert_eq!(again["last_exit"]["how"]["signal"], 9);
    assert_eq!(d.service("bystander")["pid"].as_i64(), Some(bystander));
    assert_eq!(d.status()["pid"].as_i64(), Some(i64::from(d.pid())));
    // Reaped: no zombie of it is left.
    assert!(wait_gone(i32::try_from(victim).unwrap(), WAIT));
}

#[test]
fn an_upgrade_that_cannot_happen_changes_nothing_and_says_why() {
    let setup = Setup::new(&standin("sealer", ""));
    let d = setup.start();
    let daemon = d.pid();
    let sealer = pid_of(&d.running("sealer"));
    let copy = copy_of_bin(&setup, "not-executable");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)).unwrap();
    let crash = script(&setup, "crash", "kill -SEGV $$\n");
    let bad_check = script(
        &setup,
        "bad-check",
        "if [ \"$1\" = check ]; then echo 'venussup.toml:3:1: error: nope' >&2; exit 1; fi\nexec {bin} \"$@\"\n",
    );
    // Passes every check, then is gone when the exec comes.
    let vanishing = script(
        &setup,
        "vanishing",
        "if [ \"$1\" = check ]; then rm -f \"$0\"; fi\nexec {bin} \"$@\"\n",
    );
    let cases: [(&Path, &str); 5] = [
        (&copy, "is not executable (mode 0644)"),
        (Path::new("/nonexistent/venussup"), "No such file or directory"),
        (&crash, "--version` killed by SIGSEGV: not a program that can take over"),
        (&bad_check, "check` of the config exit code 1; nothing was changed:\nvenussup.toml:3:1: error: nope"),
        (&vanishing, "failed to execute"),
    ];
    for (binary, why) in cases {
        let out = upgrade(&setup, binary);
        out.expect_code(1);
        assert!(
            out.stderr.contains(why),
            "{}: {}",
            binary.display(),
            out.stderr
        );
    }
    // A config changed on disk is reloaded first.
    let text = fs::read_to_string(setup.config()).unwrap();
    fs::write(setup.config(), format!("{text}\n# edited\n")).unwrap();
    let out = upgrade(&setup, &copy_of_bin(&setup, "fine"));
    out.expect_code(1);
    assert!(
        out.stderr.contains("`venussup reload` first"),
        "{}",
        out.stderr
    );

    let st = d.status();
    assert_eq!(st["pid"].as_i64(), Some(i64::from(daemon)));
    assert!(st["handover"].is_null(), "no handover happened");
    let s = d.service("sealer");
    assert_eq!(
        (s["pid"].as_i64(), &s["restarts"]),
        (Some(sealer), &Value::from(0))
    );
    assert_eq!(
        fs::read_link(format!("/proc/{daemon}/exe")).unwrap(),
        bin(),
        "the old program goes on"
    );
    assert_eq!(
        d.log()
            .matches("upgrade failed, venussup goes on as it was")
            .count(),
        3
    );
    // And it still supervises.
    setup.cli(&["reload"]).expect_code(0);
    upgrade(&setup, &copy_of_bin(&setup, "fine-after-reload")).expect_code(0);
}

/// User + system CPU time of process `pid` so far, in clock ticks
/// (`/proc/PID/stat` fields 14 and 15; kept across an exec).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A client that asks for an upgrade and hangs up at once is still owed
/// the answer while the checks run; its socket, polled for nothing,
/// reported POLLHUP at every turn and the loop spun for the whole check.
#[test]
fn a_client_that_hangs_up_during_an_upgrade_costs_the_loop_nothing() {
    let setup = Setup::new(&standin("sealer", ""));
    let d = setup.start();
    let daemon = d.pid();
    d.running("sealer");
    // The check takes a second: the measured window.
    let slow = script(
        &setup,
        "slow-check",
        "if [ \"$1\" = check ]; then sleep 1; fi\nexec {bin} \"$@\"\n",
    );
    let before = cpu_ticks(daemon);
    {
        let mut s = UnixStream::connect(d.state_dir.join("control.sock")).unwrap();
        let line = serde_json::json!({"version": 1, "command": "upgrade", "binary": slow});
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    common::eventually(
        "the upgrade",
        WAIT,
        Duration::from_millis(50),
        &|| d.log(),
        || (!d.status()["handover"].is_null()).then_some(()),
    );
    let spent = cpu_ticks(daemon) - before;
    // A spinning loop burns the whole second (100 ticks); the work of an
    // upgrade with a stand-in takes a few.
    assert!(spent < 40, "{spent} ticks of CPU during a 1 s check");
    assert_eq!(d.pid(), daemon, "upgraded in place");
}

#[test]
fn a_panic_re_execs_in_place_and_a_second_within_a_minute_ends_venussup() {
    let setup = Setup::new(&format!(
        "{}{}",
        standin("sealer", ""),
        standin("worker", "")
    ));
    let mut d = setup.start();
    let daemon = d.pid();
    d.running("sealer");
    d.running("worker");
    let before: Vec<_> = pids(&d.status()).into_iter().collect();
    // The test-only trigger (debug builds): the connection just closes.
    assert_eq!(raw(&d, "{\"version\":1,\"command\":\"debug-panic\"}\n"), "");
    let st = d.wait_for("the re-exec after the panic", |st| {
        st["handover"]["reason"] == "panic"
    });
    assert_eq!(st["pid"].as_i64(), Some(i64::from(daemon)));
    assert_eq!(pids(&st).into_iter().collect::<Vec<_>>(), before);
    assert_eq!(st["handover"]["lost"], serde_json::json!([]));
    let log = d.log();
    assert!(log.contains("venussup panicked"), "{log}");
    assert!(log.contains("a debug-panic request"), "{log}");
    // It supervises as before: a killed service comes back.
    let sealer = pid_of(&d.service("sealer"));
    kill(
        Pid::from_raw(i32::try_from(sealer).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    d.wait_service("sealer", "restarted", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(sealer)
    });

    assert_eq!(raw(&d, "{\"version\":1,\"command\":\"debug-panic\"}\n"), "");
    let status = d.wait_exit(WAIT);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{}", d.log());
    assert!(d.log().contains("a second panic within 1m"), "{}", d.log());
}

#[test]
fn an_unreadable_state_falls_back_to_the_recorded_services_and_says_what_was_lost() {
    let setup = Setup::new(&format!(
        "{}{}",
        standin("sealer", ""),
        standin("worker", "")
    ));
    let d = setup.start();
    let daemon = d.pid();
    let sealer = pid_of(&d.running("sealer"));
    let worker = pid_of(&d.running("worker"));
    // Keeps the header (the lock and the sockets), breaks the state.
    let breaker = script(
        &setup,
        "breaker",
        "if [ \"$1\" = run ]; then\n\
         \x20 prev=; for a in \"$@\"; do [ \"$prev\" = --handover ] && fd=$a; prev=$a; done\n\
         \x20 head -n 1 /proc/self/fd/$fd > {dir}/state.tmp\n\
         \x20 echo '{\"services\": [' >> {dir}/state.tmp\n\
         \x20 cat {dir}/state.tmp > /proc/self/fd/$fd\n\
         fi\nexec {bin} \"$@\"\n",
    );
    let out = upgrade(&setup, &breaker);
    out.expect_code(1);
    assert!(
        out.stderr.contains("no answer to the upgrade"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("services.json"), "{}", out.stderr);
    let st = d.wait_for("the fallback's snapshot", |st| !st["handover"].is_null());
    assert_eq!(st["pid"].as_i64(), Some(i64::from(daemon)));
    let lost = st["handover"]["lost"].to_string();
    assert!(lost.contains("is unreadable"), "{lost}");
    assert!(
        lost.contains("adopted 2 running service(s) from services.json"),
        "{lost}"
    );
    assert_eq!(service(&st, "sealer")["pid"].as_i64(), Some(sealer));
    assert_eq!(service(&st, "worker")["pid"].as_i64(), Some(worker));
    assert_eq!(service(&st, "sealer")["state"], "running");
    // Adopted services are supervised: a death is a restart.
    kill(
        Pid::from_raw(i32::try_from(worker).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    d.wait_service("worker", "restarted", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(worker)
    });
    let mut text = String::new();
    fs::File::open(setup.path("daemon.log"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        text.contains("handover: adopted 2 running service(s)"),
        "{text}"
    );
}

#[test]
fn systemd_hears_ready_once_and_the_watchdog_pings_go_on_through_an_upgrade() {
    use std::os::unix::net::UnixDatagram;
    let setup = Setup::new(&standin("sealer", ""));
    let sock_path = setup.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    // As under `WatchdogSec=200ms`: a ping every 100 ms.
    let _d = setup.start_env(
        &[],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let recv = || {
        let mut buf = [0u8; 1024];
        let n = sock.recv(&mut buf).expect("a notification within the wait");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    while !recv().contains("READY=1") {}
    upgrade(&setup, &copy_of_bin(&setup, "venussup-2")).expect_code(0);
    // Everything sent from READY=1 on, up to five pings after the upgrade
    // answered (the old image had time for one or two of them at most).
    let mut after = Vec::new();
    while after
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 5
    {
        after.push(recv());
    }
    assert!(
        !after.iter().any(|m| m.contains("READY=1")),
        "READY=1 only once: {after:?}"
    );
    assert!(
        after
            .iter()
            .any(|m| m.starts_with("STATUS=1/1 services running")),
        "{after:?}"
    );
}
