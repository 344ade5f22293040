//! Control and observation, black-box: the control socket and the commands
//! on it, reload, the Prometheus text (checked by promtool) and the Zabbix
//! agent's UserParameters (run by the real zabbix_agentd).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;

use common::bin;
use common::daemon::{pid_of, service_in, wait_file, Daemon, Setup, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn standin(name: &str, extra: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\ncommand = [\"{{bin}}\", \"standin\", \"--name\", \"{name}\"{extra}]\nstable_after = \"100ms\"\n")
}

/// Sends raw bytes on the control socket and reads one line back.
fn raw(d: &Daemon, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(d.state_dir.join("control.sock")).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(bytes).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    line
}

#[test]
fn status_table_and_json_follow_a_kill_and_a_restart() {
    let setup = Setup::new(&format!(
        "{}\n{}",
        standin("sealer", ""),
        standin("worker", "")
    ));
    let d = setup.start();
    let old = pid_of(&d.running("sealer"));
    d.running("worker");
    let json = setup.cli(&["status", "--json"]);
    let doc = json.expect_code(0).json();
    assert_eq!(doc["services"][0]["pid"].as_i64(), Some(old));

    kill(Pid::from_raw(i32::try_from(old).unwrap()), Signal::SIGKILL).unwrap();
    let again = d.wait_service("sealer", "restarted", |s| {
        s["restarts"] == 1 && s["state"] == "running"
    });
    let table = setup.cli(&["status"]);
    table.expect_code(0);
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("sealer "))
        .unwrap();
    assert!(row.contains(&pid_of(&again).to_string()), "{row}");
    assert!(row.contains("killed by SIGKILL"), "{row}");
    assert!(
        table.stdout.contains("SERVICE") && table.stdout.contains("worker"),
        "{}",
        table.stdout
    );

    let one = setup.cli(&["status", "sealer"]);
    one.expect_code(0);
    assert!(one.stdout.contains("killed by SIGKILL"), "{}", one.stdout);
    assert!(one.stdout.contains("last log lines"), "{}", one.stdout);
    assert!(setup
        .cli(&["status", "nosuch"])
        .expect_code(1)
        .stderr
        .contains("no service `nosuch`"));
}

#[test]
fn status_exits_1_while_something_backs_off_and_3_when_the_daemon_is_down() {
    let setup = Setup::new("[[service]]\nname = \"broken\"\ncommand = [\"/bin/false\"]\n");
    let mut d = setup.start();
    d.wait_service("broken", "backoff", |s| s["state"] == "backoff");
    setup.cli(&["status"]).expect_code(1);
    d.signal(Signal::SIGTERM);
    d.wait_exit(WAIT);
    let down = setup.cli(&["status"]);
    down.expect_code(3);
    assert!(
        down.stderr.contains("not running, or not reachable"),
        "{}",
        down.stderr
    );
}

/// A service whose log ends with a fatal start line is marked in every
/// view of the status; a service's GPUs (two stated, one handed out) are
/// shown where its process really got them.
#[test]
fn status_marks_fatal_lines_and_shows_gpus_in_the_table_json_detail_and_metrics() {
    let setup = Setup::new(&format!(
        "{}{}\
         [[service]]\nname = \"flappy\"\ncommand = [\"/bin/sh\", \"-c\", \"echo starting; echo 'ERROR: FATAL-X repo is already locked'; exit 1\"]\nfatal_output = [\"FATAL-X\"]\nbackoff_max = \"10min\"\n",
        standin("sealer", ", \"--report\", \"{dir}/sealer.json\"") + "gpus = [1]\n",
        standin("worker", ""),
    ));
    setup.host_line("gpus = 2");
    let d = setup.start();
    d.running("sealer");
    d.running("worker");
    let flappy = d.wait_service("flappy", "a fatal line", |s| {
        s["state"] == "backoff" && s["fatal"]["count"] == 1
    });
    let line = "ERROR: FATAL-X repo is already locked";
    assert_eq!(flappy["fatal"]["last"]["line"], line);
    let at = flappy["fatal"]["last"]["at"].as_u64().unwrap();
    assert!(at.abs_diff(flappy["last_exit"]["at"].as_u64().unwrap()) <= 1);

    // What the process got is what status shows.
    wait_file(&setup.path("sealer.json"));
    let report: Value =
        serde_json::from_str(&fs::read_to_string(setup.path("sealer.json")).unwrap()).unwrap();
    assert_eq!(report["env"]["CUDA_VISIBLE_DEVICES"], "1");

    // backoff: exit 1, as `status` says whenever something backs off.
    let json = setup.cli(&["status", "--json"]).expect_code(1).json();
    let svc = |name: &str| service_in(&json, name);
    assert_eq!(svc("sealer")["gpus"], serde_json::json!([1]));
    assert_eq!(svc("worker")["gpus"], serde_json::json!([]));
    assert_eq!(svc("sealer")["fatal"]["count"], 0);
    assert_eq!(svc("flappy")["fatal"]["count"], 1);
    assert_eq!(svc("flappy")["fatal"]["last"]["line"], line);

    let table = setup.cli(&["status"]).expect_code(1).stdout.clone();
    let header = table.lines().find(|l| l.starts_with("SERVICE")).unwrap();
    let row = |name: &str| -> Vec<String> {
        let l = table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row:\n{table}"));
        l.split_whitespace().map(String::from).collect()
    };
    assert!(header.ends_with("CPUS  GPUS"), "{table}");
    assert_eq!(row("sealer").last().unwrap(), "1", "{table}");
    assert_eq!(row("worker").last().unwrap(), "-", "{table}");
    assert!(row("flappy").contains(&"1!".to_string()), "{table}");
    assert!(!row("sealer").contains(&"1!".to_string()), "{table}");
    assert!(
        table.contains("\n  flappy: 1 fatal line, the last ")
            && table.contains(&format!(" ago: {line}\n")),
        "{table}"
    );

    let one = setup
        .cli(&["status", "flappy"])
        .expect_code(1)
        .stdout
        .clone();
    assert!(one.contains("  FATAL     1 fatal line, the last "), "{one}");
    assert!(one.contains(line), "{one}");
    let one = setup
        .cli(&["status", "sealer"])
        .expect_code(0)
        .stdout
        .clone();
    assert!(one.contains("  gpus      [1]\n"), "{one}");
    assert!(!one.contains("FATAL"), "{one}");

    let zabbix = setup.cli(&["zabbix", "fatal-lines", "flappy"]);
    assert_eq!(zabbix.expect_code(0).stdout.trim(), "1");
    let metrics = setup.cli(&["metrics"]).expect_code(0).stdout.clone();
    for (name, n) in [("flappy", 1), ("sealer", 0), ("worker", 0)] {
        let sample = format!("venussup_service_fatal_lines_total{{service=\"{name}\"}} {n}\n");
        assert!(metrics.contains(&sample), "{sample}in\n{metrics}");
    }
}

#[test]
fn stop_keeps_a_service_down_start_brings_it_back_restart_renews_it() {
    let setup = Setup::new(&standin("worker", ""));
    let d = setup.start();
    let first = pid_of(&d.running("worker"));
    assert!(setup
        .cli(&["stop", "worker"])
        .expect_code(0)
        .stdout
        .contains("worker: stopping"));
    let stopped = d.wait_service("worker", "stopped", |s| s["state"] == "stopped");
    assert_eq!(stopped["restarts"], 0, "a requested stop is not a death");
    setup.cli(&["start", "worker"]).expect_code(0);
    let second = pid_of(&d.running("worker"));
    assert_ne!(first, second);
    setup.cli(&["restart", "worker"]).expect_code(0);
    d.wait_service("worker", "a new pid", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(second)
    });
    assert!(setup
        .cli(&["start", "worker"])
        .expect_code(1)
        .stderr
        .contains("already running"));
}

#[test]
fn a_non_root_peer_is_refused_by_mode_and_by_its_credentials() {
    let setup = Setup::new(&standin("sealer", ""));
    let d = setup.start();
    d.running("sealer");
    let others_bin = setup.bin_for_others();
    let as_nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&others_bin)
            .args(args)
            .args(["--config", setup.config().to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // The folders let anyone through; the socket itself is 0600.
    fs::set_permissions(setup.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&d.state_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let sock = d.state_dir.join("control.sock");
    assert_eq!(
        fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (code, err) = as_nobody(&["status"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    // Even through a socket anyone may open, the daemon checks the peer.
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = as_nobody(&["stop", "sealer"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("permission denied: uid 65534"), "{err}");
    assert_eq!(d.service("sealer")["state"], "running");
}

#[test]
fn garbage_huge_and_many_clients_leave_the_daemon_and_its_services_untouched() {
    let setup = Setup::new(&standin("sealer", ""));
    let d = setup.start();
    let pid = pid_of(&d.running("sealer"));
    let answer: Value = serde_json::from_str(&raw(&d, b"garbage\n")).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("malformed request"));
    let answer: Value =
        serde_json::from_str(&raw(&d, br#"{"version":1,"command":"stop"}"#)).unwrap_or(Value::Null);
    assert!(
        answer.is_null(),
        "no newline yet: no answer, the line is incomplete"
    );

    // 10 MiB without a newline: refused once past the bound, connection closed.
    let mut big = UnixStream::connect(d.state_dir.join("control.sock")).unwrap();
    big.set_read_timeout(Some(WAIT)).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..10 {
        if big.write_all(&chunk).is_err() {
            break; // the daemon closed it: fine
        }
    }
    let mut reply = String::new();
    let _ = big.read_to_string(&mut reply);
    assert!(reply.contains("request too large"), "{reply}");

    // A client that connects and says nothing does not hold up others.
    let _silent = UnixStream::connect(d.state_dir.join("control.sock")).unwrap();
    // 200 clients at once, each asking for status.
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let path = d.state_dir.join("control.sock");
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(path).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                s.write_all(b"{\"version\":1,\"command\":\"status\"}\n")
                    .unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                serde_json::from_str::<Value>(&line).unwrap()["ok"] == true
            })
        })
        .collect();
    let ok = handles
        .into_iter()
        .filter(|_| true)
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(ok, 200);
    let now = d.service("sealer");
    assert_eq!(pid_of(&now), pid);
    assert_eq!(now["restarts"], 0);
    setup.cli(&["status"]).expect_code(0);
}

#[test]
fn reload_restarts_only_the_changed_service_and_a_broken_config_changes_nothing() {
    let three = format!(
        "{}\n{}\n{}",
        standin("a", ""),
        standin("b", ""),
        standin("c", "")
    );
    let setup = Setup::new(&three);
    let d = setup.start();
    let pids: Vec<i64> = ["a", "b", "c"]
        .iter()
        .map(|n| pid_of(&d.running(n)))
        .collect();
    // Change b only (its environment), add d.
    let cfg = fs::read_to_string(setup.config()).unwrap();
    let changed = cfg.replacen(
        "\"--name\", \"b\"]",
        "\"--name\", \"b\"]\nenv = { TRUST_PARAMS = \"1\" }",
        1,
    ) + &standin("d", "").replace("{bin}", bin().to_str().unwrap())
        + "\n[[timer]]\nname = \"t\"\ncommand = [\"/bin/true\"]\nevery = \"1h\"\n";
    fs::write(setup.config(), &changed).unwrap();
    let out = setup.cli(&["reload"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("started d")
            && out.stdout.contains("restarted b")
            && out.stdout.contains("unchanged a, c")
            && out.stdout.contains("; timers t (new)"),
        "{}",
        out.stdout
    );
    let b = d.wait_service("b", "a new pid", |s| {
        s["state"] == "running" && s["pid"].as_i64() != Some(pids[1])
    });
    assert_ne!(pid_of(&b), pids[1]);
    d.running("d");
    assert_eq!(pid_of(&d.service("a")), pids[0]);
    assert_eq!(pid_of(&d.service("c")), pids[2]);

    // A broken config: the errors come back, nothing changes.
    fs::write(
        setup.config(),
        changed.replacen("name = \"c\"", "name = \"c\"\ncpu = \"50%\"", 1),
    )
    .unwrap();
    let bad = setup.cli(&["reload"]);
    bad.expect_code(1);
    assert!(bad.stderr.contains("unknown field `cpu`"), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("venussup.toml:"),
        "with file and line: {}",
        bad.stderr
    );
    for n in ["a", "c"] {
        assert_eq!(d.service(n)["restarts"], 0);
    }
    assert_eq!(pid_of(&d.service("c")), pids[2]);

    // Removing a service by SIGHUP stops it and drops it from status.
    fs::write(setup.config(), &cfg).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_for("d gone", |st| {
        st["services"].as_array().is_some_and(|a| a.len() == 3)
    });
    assert_eq!(pid_of(&d.service("a")), pids[0]);
}

#[test]
fn timer_run_runs_the_pledge_now_once() {
    let setup = Setup::new(
        "[[timer]]\nname = \"pledge\"\ncommand = [\"/bin/sleep\", \"2\"]\nevery = \"1h\"\n",
    );
    let d = setup.start();
    d.wait_for("the timer scheduled", |st| {
        st["timers"][0]["next_in_secs"].is_number()
    });
    setup.cli(&["timer", "run", "pledge"]).expect_code(0);
    let busy = setup.cli(&["timer", "run", "pledge"]);
    busy.expect_code(1);
    assert!(
        busy.stderr.contains("never runs twice at once"),
        "{}",
        busy.stderr
    );
    d.wait_for("one success", |st| st["timers"][0]["runs"]["success"] == 1);
}

/// `promtool check metrics` on `text`; returns what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed; ./test.sh installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn http_get(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn metrics_pass_promtool_on_the_socket_and_over_http() {
    if let Err(why) = common::debian::need(&[("promtool", "prometheus")]) {
        eprintln!("SKIPPED: {why}; ./test.sh installs it");
        return;
    }
    let setup = Setup::new(&format!(
        "{}\n[[timer]]\nname = \"pledge\"\ncommand = [\"/bin/true\"]\nevery = \"1s\"\n",
        standin("sealer", "")
    ));
    setup.host_line("metrics = { listen = \"127.0.0.1:23491\" }");
    let d = setup.start();
    d.running("sealer");
    d.wait_for("a pledge run", |st| {
        st["timers"][0]["runs"]["success"].as_u64() >= Some(1)
    });
    let text = setup.cli(&["metrics"]).expect_code(0).stdout.clone();
    assert!(
        text.contains("venussup_service_up{service=\"sealer\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("venussup_timer_runs_total{timer=\"pledge\",result=\"success\"}"),
        "{text}"
    );
    assert!(
        text.contains("venussup_service_cpu_seconds_total{service=\"sealer\"}"),
        "{text}"
    );
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool: {said}");

    let resp = http_get(
        "127.0.0.1:23491",
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    let (ok, said) = promtool(body);
    assert!(ok, "promtool: {said}");
    assert!(http_get("127.0.0.1:23491", "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(
        http_get("127.0.0.1:23491", "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405")
    );
}

#[test]
fn zabbix_agentd_gets_discovery_and_values_from_the_running_daemon() {
    if let Err(why) = common::debian::need(&[("zabbix_agentd", "zabbix-agent")]) {
        eprintln!("SKIPPED: {why}; ./test.sh installs it");
        return;
    }
    let setup = Setup::new(&format!(
        "{}\n[[timer]]\nname = \"pledge\"\ncommand = [\"/bin/sh\", \"-c\", \"echo too many sectors sealing; exit 1\"]\nevery = \"1s\"\nfull_output = [\"too many sectors sealing\"]\n",
        standin("sealer", "")
    ));
    let d = setup.start();
    d.running("sealer");
    d.wait_for("a full pledge", |st| {
        st["timers"][0]["runs"]["full"].as_u64() >= Some(1)
    });
    // The shipped UserParameters, pointed at this build and this config.
    let params = common::zabbix_user_parameters(&setup.config());
    let agent = setup.path("zabbix_agentd.conf");
    fs::write(
        &agent,
        format!("LogType=console\nServer=127.0.0.1\nTimeout=10\n{params}"),
    )
    .unwrap();
    let test = |key: &str| {
        let out = Command::new("zabbix_agentd")
            .args(["-c", agent.to_str().unwrap(), "-t", key])
            .output()
            .expect(
                "zabbix_agentd (Debian package zabbix-agent) is installed; ./test.sh installs it",
            );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let discovery = test("venussup.discovery");
    assert!(
        discovery.contains(
            r#"[t|[{"{#KIND}":"daemon","{#ROLE}":"other","{#SERVICE}":"sealer","{#WINDOWPOST_GPU}":"no"}]]"#
        ),
        "{discovery}"
    );
    assert!(test("venussup.service.state[sealer]").contains("[t|running]"));
    assert!(test("venussup.service.up[sealer]").contains("[t|1]"));
    assert!(test("venussup.service.restarts[sealer]").contains("[t|0]"));
    assert!(test("venussup.service.uptime[sealer]").contains("[t|"));
    assert!(test("venussup.timer.discovery").contains(r#"{"{#TIMER}":"pledge"}"#));
    assert!(test("venussup.timer.last[pledge]").contains("[t|full]"));
    assert!(test("venussup.timer.failures[pledge]").contains("[t|0]"));
}

#[test]
fn the_zabbix_template_uses_only_keys_the_agent_config_defines() {
    let params =
        fs::read_to_string(common::project_file("units/zabbix_agentd.d/venussup.conf")).unwrap();
    let defined: Vec<String> = params
        .lines()
        .filter_map(|l| l.strip_prefix("UserParameter="))
        .map(|l| {
            l.split(',')
                .next()
                .unwrap()
                .trim_end_matches("[*]")
                .to_string()
        })
        .collect();
    let template =
        fs::read_to_string(common::project_file("units/zabbix/venussup_template.yaml")).unwrap();
    // The fleet template's items are calculated by the server from the
    // agent's items: the keys its aggregates read must be the agent's.
    let (template, fleet) = template.split_at(template.find("template: 'venussup fleet'").unwrap());
    let keys: Vec<&str> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("key: "))
        .map(|k| k.trim_matches('\'').split('[').next().unwrap())
        .collect();
    let aggregated: Vec<&str> = fleet
        .split("_foreach(/*/")
        .skip(1)
        .map(|part| part.split(['[', '?']).next().unwrap())
        .collect();
    assert!(aggregated.len() >= 4, "{aggregated:?}");
    for k in &aggregated {
        assert!(
            keys.contains(k),
            "the fleet template aggregates {k}, no item has it"
        );
    }
    assert!(keys.len() >= 9, "{keys:?}");
    for k in &keys {
        assert!(
            defined.iter().any(|d| d == k),
            "template key {k} has no UserParameter"
        );
    }
    for expr in template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expression: "))
    {
        for part in expr.split("/venussup by Zabbix agent/").skip(1) {
            let key = part.split(['[', ')', ',']).next().unwrap();
            assert!(keys.contains(&key), "trigger uses {key}, no item has it");
        }
    }
}
