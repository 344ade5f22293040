//! Monitoring as operators run it (issue 22): the control group's members
//! reach the control socket and nothing else in the state folder; the
//! real Zabbix agent, running as `zabbix`, answers `venussup.ping` 1 and
//! 0 and never an error text; the Prometheus rules pass promtool and its
//! unit tests (every alert fires and stays quiet in one), the fleet's
//! scrape example passes `promtool check config`, and the fleet dashboard
//! reads only metrics venussup serves or the rules record.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::{Setup, WAIT};
use common::{bin, project_file, run_bounded, Outcome};
use nix::sys::signal::Signal;

const BOUND: Duration = Duration::from_secs(30);

fn standin(name: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\ncommand = [\"{{bin}}\", \"standin\", \"--name\", \"{name}\"]\nstable_after = \"100ms\"\n")
}

/// A throw-away group and a user who is in it as a supplementary group
/// (its own group is `nogroup`), removed on drop.
struct Account {
    user: String,
    group: String,
}

impl Account {
    fn new() -> Self {
        let tag = std::process::id();
        let account = Self {
            user: format!("vsupu{tag}"),
            group: format!("vsupg{tag}"),
        };
        let run = |args: &[&str]| {
            run_bounded(Command::new(args[0]).args(&args[1..]), BOUND).expect_code(0);
        };
        run(&["groupadd", "--system", &account.group]);
        run(&[
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--gid",
            "nogroup",
            "--groups",
            &account.group,
            &account.user,
        ]);
        account
    }

    /// `PROGRAM ARGS...` as this user, with its groups.
    fn run(&self, program: &Path, args: &[&str]) -> Outcome {
        as_user(&self.user, program, args)
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = run_bounded(Command::new("userdel").arg(&self.user), BOUND);
        let _ = run_bounded(Command::new("groupdel").arg(&self.group), BOUND);
    }
}

/// `PROGRAM ARGS...` as `user` with the user's groups, as a login would.
fn as_user(user: &str, program: &Path, args: &[&str]) -> Outcome {
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    run_bounded(
        Command::new("setpriv")
            .args(["--reuid", &u.uid.to_string(), "--regid", &u.gid.to_string()])
            .args(["--init-groups"])
            .args(["--reset-env"])
            .arg(program)
            .args(args),
        BOUND,
    )
}

/// Anyone may pass through the test's folder, as through /var/lib.
fn open_to_all(setup: &Setup) {
    fs::set_permissions(setup.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn control_group_members_reach_the_socket_and_nothing_else_in_the_state_folder() {
    let account = Account::new();
    let setup = Setup::new(&standin("sealer"));
    setup.host_line(&format!("control_group = \"{}\"", account.group));
    open_to_all(&setup);
    // What an older venussup left readable is made root-only at start.
    let state = setup.state_dir();
    fs::create_dir_all(state.join("once")).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(state.join("once"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(state.join("services.json"), "{}").unwrap();
    fs::set_permissions(
        state.join("services.json"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let d = setup.start();
    d.running("sealer");
    let gid = nix::unistd::Group::from_name(&account.group)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let meta = fs::metadata(&state).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o710, 0, gid)
    );
    let sock = fs::metadata(state.join("control.sock")).unwrap();
    assert_eq!(
        (sock.mode() & 0o777, sock.uid(), sock.gid()),
        (0o660, 0, gid)
    );
    for entry in fs::read_dir(&state).unwrap() {
        let entry = entry.unwrap();
        let m = entry.metadata().unwrap();
        if entry.file_name() != "control.sock" {
            assert_eq!(m.mode() & 0o077, 0, "{:?} is {:o}", entry.path(), m.mode());
        }
    }

    let config = setup.config();
    let config = config.to_str().unwrap();
    // The member asks status and the Zabbix keys...
    let status = account.run(&bin(), &["status", "--json", "--config", config]);
    status.expect_code(0);
    assert_eq!(status.json()["services"][0]["name"], "sealer");
    let ping = account.run(&bin(), &["zabbix", "--config", config, "ping"]);
    assert_eq!(ping.expect_code(0).stdout, "1\n");
    // ...and reads, lists and writes nothing else there.
    let cat = Path::new("/bin/cat");
    for file in ["status.json", "services.json", "venussup.lock", "once"] {
        let path = state.join(file);
        let out = account.run(cat, &[path.to_str().unwrap()]);
        assert_ne!(out.code, Some(0), "{file}: {out:?}");
        assert!(out.stderr.contains("Permission denied"), "{file}: {out:?}");
    }
    let ls = account.run(Path::new("/bin/ls"), &[state.to_str().unwrap()]);
    assert!(ls.stderr.contains("Permission denied"), "{ls:?}");
    let touch = state.join("planted");
    let out = account.run(Path::new("/usr/bin/touch"), &[touch.to_str().unwrap()]);
    assert!(out.stderr.contains("Permission denied"), "{out:?}");

    // Someone outside the group gets 0 from ping, and no error text.
    let nobody = as_user("nobody", &bin(), &["zabbix", "--config", config, "ping"]);
    assert_eq!(nobody.stdout, "0\n", "{nobody:?}");
    assert_eq!(nobody.stderr, "", "{nobody:?}");
    let down = as_user("nobody", &bin(), &["status", "--config", config]);
    down.expect_code(3);
    assert!(down.stderr.contains("Permission denied"), "{down:?}");
    drop(d);
}

#[test]
fn check_says_what_the_control_group_will_reach() {
    let setup = Setup::new(&standin("sealer"));
    setup.host_line("control_group = \"zabbix\"");
    open_to_all(&setup);
    let out = setup.cli(&["check"]);
    out.expect_code(0);
    assert!(
        out.stderr.contains("members of `zabbix`")
            && out.stderr.contains("will reach the control socket")
            && out.stderr.contains("0710 root:zabbix"),
        "{}",
        out.stderr
    );
    // A folder on the way they may not pass, and a config they cannot read.
    fs::set_permissions(setup.dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let out = setup.cli(&["check"]);
    assert!(
        out.stderr.contains("cannot reach the control socket")
            && out.stderr.contains("may not pass through"),
        "{}",
        out.stderr
    );
    open_to_all(&setup);
    fs::set_permissions(setup.config(), fs::Permissions::from_mode(0o600)).unwrap();
    let out = setup.cli(&["check"]);
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);

    let setup = Setup::new(&standin("sealer"));
    setup.host_line("control_group = \"no-such-group-here\"");
    let out = setup.cli(&["check"]);
    assert!(
        out.stderr
            .contains("does not exist on this host: only root"),
        "{}",
        out.stderr
    );
}

/// The shipped UserParameters, pointed at this build and `config`, in an
/// agent config the `zabbix` user can read.
fn agent_config(setup: &Setup) -> String {
    let params = common::zabbix_user_parameters(&setup.config());
    let agent = setup.path("zabbix_agentd.conf");
    fs::write(
        &agent,
        format!("LogType=console\nServer=127.0.0.1\nTimeout=10\n{params}"),
    )
    .unwrap();
    agent.to_str().unwrap().to_string()
}

#[test]
fn the_real_zabbix_agent_as_zabbix_answers_ping_1_then_0_and_never_an_error_text() {
    let setup = Setup::new(&format!(
        "{}\n[[timer]]\nname = \"pledge\"\ncommand = [\"/bin/true\"]\nevery = \"1h\"\n",
        standin("sealer")
    ));
    setup.host_line("control_group = \"zabbix\"");
    open_to_all(&setup);
    let agent = agent_config(&setup);
    let zabbix_agentd = Path::new("/usr/sbin/zabbix_agentd");
    assert!(
        zabbix_agentd.exists(),
        "zabbix_agentd (Debian package zabbix-agent) is installed; .ci/run installs it"
    );
    // As the agent runs it: the `zabbix` user, through its own config.
    let test = |key: &str| {
        let out = as_user("zabbix", zabbix_agentd, &["-c", &agent, "-t", key]);
        let line = out.stdout.trim().to_string();
        let value = line
            .split_once("[t|")
            .and_then(|(_, v)| v.strip_suffix(']'))
            .unwrap_or_else(|| panic!("{key}: not a text value: {out:?}"));
        value.to_string()
    };
    let mut d = setup.start();
    d.running("sealer");
    assert_eq!(test("venussup.ping"), "1");
    assert_eq!(
        test("venussup.discovery"),
        r#"[{"{#KIND}":"daemon","{#ROLE}":"other","{#SERVICE}":"sealer","{#WINDOWPOST_GPU}":"no"}]"#
    );
    assert_eq!(
        test("venussup.timer.discovery"),
        r#"[{"{#TIMER}":"pledge"}]"#
    );
    assert_eq!(test("venussup.service.state[sealer]"), "running");
    assert_eq!(test("venussup.service.up[sealer]"), "1");
    assert_eq!(test("venussup.service.restarts[sealer]"), "0");
    assert_eq!(test("venussup.service.last_exit_code[sealer]"), "0");
    assert_eq!(test("venussup.service.fatal_lines[sealer]"), "0");
    assert_eq!(test("venussup.timer.failures[pledge]"), "0");
    // A key about what is not there: no text either.
    assert_eq!(test("venussup.service.up[nosuch]"), "");

    d.signal(Signal::SIGTERM);
    d.wait_exit(WAIT);
    assert_eq!(test("venussup.ping"), "0");
    for key in ["venussup.discovery", "venussup.timer.discovery"] {
        let lld: serde_json::Value = serde_json::from_str(&test(key)).unwrap();
        assert_eq!(lld["data"], serde_json::json!([]), "{key}: {lld}");
        assert!(
            lld["reason"]
                .as_str()
                .unwrap()
                .contains("venussup is not running"),
            "{lld}"
        );
    }
    for key in [
        "venussup.service.state[sealer]",
        "venussup.service.up[sealer]",
        "venussup.service.restarts[sealer]",
        "venussup.service.uptime[sealer]",
        "venussup.service.last_exit_code[sealer]",
        "venussup.service.fatal_lines[sealer]",
        "venussup.timer.last[pledge]",
        "venussup.timer.failures[pledge]",
    ] {
        assert_eq!(test(key), "", "{key}");
    }
}

#[test]
fn the_template_discards_empty_values_and_has_one_trigger_for_a_dead_daemon() {
    let template = fs::read_to_string(project_file("units/zabbix/venussup_template.yaml")).unwrap();
    // Every item prototype discards what is not a value (an empty answer).
    let prototypes = template.matches("key: 'venussup.service.").count()
        + template.matches("key: 'venussup.timer.").count();
    assert_eq!(
        template.matches("error_handler: DISCARD_VALUE").count(),
        prototypes
    );
    assert!(template.contains("key: venussup.ping"));
    assert!(template.contains("name: 'venussup is not running'"));
    // The others wait for it.
    let triggers = template
        .matches("expression: 'last(/venussup by Zabbix agent/venussup.service")
        .count()
        + template
            .matches("expression: 'last(/venussup by Zabbix agent/venussup.timer")
            .count();
    assert_eq!(
        template
            .matches("- name: 'venussup is not running'")
            .count(),
        triggers
    );
    assert!(
        !template.contains("now-15m"),
        "restarts: no 15-minute blind spot"
    );
    // Every service item carries the tags the fleet template filters on,
    // and each fleet aggregate reads the group its macro names.
    for tag in ["value: '{#ROLE}'", "value: '{#WINDOWPOST_GPU}'"] {
        let services = template.matches("key: 'venussup.service.").count();
        assert_eq!(template.matches(tag).count(), services, "{tag}");
    }
    let fleet = &template[template.find("template: 'venussup fleet'").unwrap()..];
    let aggregates = fleet.matches("type: CALCULATED").count();
    assert_eq!(aggregates, 4);
    assert_eq!(
        fleet
            .matches("expression: 'last(/venussup fleet/venussup.fleet.")
            .count(),
        aggregates
    );
    assert_eq!(
        fleet
            .lines()
            .filter(|l| l.trim_start().starts_with("params: '"))
            .filter(|l| l.contains("_foreach(/*/venussup.")
                && l.contains(r#"group="{$VENUSSUP.HOSTGROUP}""#))
            .count(),
        aggregates
    );
}

/// `promtool ARGS FILE`, bounded.
fn promtool(args: &[&str], file: &Path) -> Outcome {
    run_bounded(Command::new("promtool").args(args).arg(file), BOUND)
}

#[test]
fn prometheus_alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = project_file("units/prometheus/venussup.rules.yml");
    let check = promtool(&["check", "rules"], &rules);
    check.expect_code(0);
    assert!(
        check.stdout.contains("SUCCESS: 21 rules found"),
        "{check:?}"
    );
    let text = fs::read_to_string(&rules).unwrap();
    assert!(text.contains(r#"expr: up{job="venussup"} == 0"#));
    let tests = project_file("integration/fixtures/prometheus/venussup.rules.test.yml");
    promtool(&["test", "rules"], &tests).expect_code(0);
    // Every alert has a test that expects it to fire and one that does not.
    let fixture = fs::read_to_string(&tests).unwrap();
    for alert in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let evals: Vec<&str> = fixture
            .split("- eval_time: ")
            .filter(|e| e.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            evals.iter().any(|e| e.contains("exp_alerts: []")),
            "{alert}: no test that it stays quiet"
        );
        assert!(
            evals.iter().any(|e| e.contains("- exp_labels:")),
            "{alert}: no test that it fires"
        );
    }
    for record in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
    {
        assert!(
            fixture.contains(&format!("- expr: {record}\n")),
            "{record}: no promql_expr_test"
        );
    }
}

#[test]
fn the_fleet_scrape_example_passes_promtool_check_config() {
    // It loads the rules and its file_sd targets (venussup-targets.yml)
    // from its own folder, as shipped: promtool reads and checks both.
    let config = project_file("units/prometheus/scrape-example.yml");
    let out = promtool(&["check", "config"], &config);
    out.expect_code(0);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(!said.contains("WARNING"), "{said}");
    assert!(said.contains("SUCCESS: 1 rule files found"), "{said}");
    let targets =
        fs::read_to_string(project_file("units/prometheus/venussup-targets.yml")).unwrap();
    for host in ["host-a", "host-b"] {
        assert!(targets.contains(&format!("host: {host}")), "{targets}");
    }
}

/// The names a text spells in double quotes that start with `venussup_`:
/// every metric family `src/status/metrics.rs` renders.
fn metric_names(source: &str) -> BTreeSet<String> {
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("venussup_") && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .map(String::from)
        .collect()
}

/// The series names in a PromQL expression: what starts with `venussup_`,
/// or is a recording rule's `level:metric:operations` name.
fn series_in(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("venussup_") || t.contains(":venussup_"))
        .collect()
}

#[test]
fn the_fleet_dashboard_is_well_formed_and_every_query_parses_and_reads_real_series() {
    let path = project_file("units/grafana/venussup-fleet.json");
    let dash: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    // Datasources as {type, uid} references: schema 36 and later.
    assert!(
        dash["schemaVersion"].as_u64().unwrap() >= 36,
        "{}",
        dash["schemaVersion"]
    );
    assert_eq!(dash["uid"], "venussup-fleet");
    let ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let host = var("instance");
    assert_eq!(host["type"], "query");
    assert_eq!(host["datasource"], ds);
    assert_eq!(
        (host["multi"].as_bool(), host["includeAll"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(host["query"]
        .as_str()
        .unwrap()
        .contains(r#"venussup_build_info{job="venussup"}"#));

    let panels = dash["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(i64, i64, i64, i64, String)> = Vec::new();
    let mut exprs: Vec<(String, String)> = Vec::new();
    let mut in_host_row = false;
    for p in panels {
        let title = p["title"].as_str().unwrap().to_string();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "id of {title} twice");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_i64().unwrap());
        assert!(
            x >= 0 && y >= 0 && w >= 1 && h >= 1 && x + w <= 24,
            "{title}: {g}"
        );
        for (bx, by, bw, bh, other) in &boxes {
            let apart = x + w <= *bx || bx + bw <= x || y + h <= *by || by + bh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((x, y, w, h, title.clone()));
        if p["type"] == "row" {
            // One row per host: the Host variable repeats it.
            in_host_row = p["repeat"] == "instance";
            if in_host_row {
                assert!(title.contains("$instance"), "{title}");
            }
            continue;
        }
        assert_eq!(p["datasource"], ds, "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"], ds, "{title}");
            let expr = t["expr"].as_str().unwrap().to_string();
            if in_host_row {
                assert!(expr.contains(r#"instance=~"$instance""#), "{title}: {expr}");
            }
            exprs.push((title.clone(), expr));
        }
    }
    assert!(
        panels.iter().any(|p| p["repeat"] == "instance"),
        "no row per host"
    );

    // Every series a panel reads is one venussup serves or the rules record.
    let served = metric_names(&fs::read_to_string(project_file("src/status/metrics.rs")).unwrap());
    let rules = fs::read_to_string(project_file("units/prometheus/venussup.rules.yml")).unwrap();
    let recorded: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .collect();
    for (title, expr) in &exprs {
        for name in series_in(expr) {
            assert!(
                served.contains(name) || recorded.contains(name),
                "{title}: {name} is neither a venussup metric nor a recording rule"
            );
        }
    }
    // Every expression parses: promtool checks them as recording rules,
    // Grafana's variables given values.
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (_, expr)) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$instance", "host-a")
            .replace("$__rate_interval", "1m");
        file.push_str(&format!(
            "      - record: dashboard_query_{n}\n        expr: '{}'\n",
            expr.replace('\'', "''")
        ));
    }
    let checked = dir.path().join("dashboard.rules.yml");
    fs::write(&checked, file).unwrap();
    let out = promtool(&["check", "rules"], &checked);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{out:?}"
    );
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asks `f` every 250 ms until it answers, at most `bound` (a real server
/// has no event to wait on).
fn eventually<T>(what: &str, bound: Duration, f: impl FnMut() -> Option<T>) -> T {
    common::eventually(what, bound, Duration::from_millis(250), &String::new, f)
}

/// `GET url` with `query` parameters through curl (bounded), as JSON.
fn get_json(url: &str, query: &[(&str, &str)]) -> Option<serde_json::Value> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-G", url]);
    for (k, v) in query {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = common::try_run_bounded(&mut cmd, BOUND)?;
    serde_json::from_str(&out.stdout).ok()
}

/// A Prometheus server of our own, killed and reaped on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Self {
        // The shipped rules, their `for:` shortened so that the test does
        // not wait minutes; the expressions are the shipped ones.
        let rules = fs::read_to_string(project_file("units/prometheus/venussup.rules.yml"))
            .unwrap()
            .replace("for: 1m", "for: 2s")
            .replace("for: 2m", "for: 2s");
        fs::write(dir.join("venussup.rules.yml"), rules).unwrap();
        fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [venussup.rules.yml]\nscrape_configs:\n  - job_name: venussup\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let log = fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus) is installed; .ci/run installs it");
        Self {
            child,
            url: format!("http://{listen}"),
        }
    }

    /// The value of the instant query `q` when it has exactly one series.
    fn one(&self, q: &str) -> Option<f64> {
        let doc = get_json(&format!("{}/api/v1/query", self.url), &[("query", q)])?;
        let result = doc["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// The firing alerts' names.
    fn firing(&self) -> Option<Vec<String>> {
        let doc = get_json(&format!("{}/api/v1/alerts", self.url), &[])?;
        Some(
            doc["data"]["alerts"]
                .as_array()?
                .iter()
                .filter(|a| a["state"] == "firing")
                .filter_map(|a| a["labels"]["alertname"].as_str().map(String::from))
                .collect(),
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        if !common::daemon::wait_gone(pid.as_raw(), BOUND) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_sees_restarts_and_alerts_while_venussup_is_down() {
    let setup = Setup::new(&standin("sealer"));
    let target = format!("127.0.0.1:{}", free_port());
    setup.host_line(&format!("metrics = {{ listen = \"{target}\" }}"));
    let d = setup.start();
    let mut pid = common::daemon::pid_of(&d.running("sealer"));
    let prom = Prometheus::start(setup.dir.path(), &target);
    let log = || fs::read_to_string(setup.path("prometheus.log")).unwrap_or_default();
    let minute = Duration::from_secs(60);
    eventually(&format!("up == 1\n{}", log()), minute, || {
        prom.one(r#"up{job="venussup"}"#).filter(|v| *v == 1.0)
    });
    eventually("restarts == 0 scraped", minute, || {
        prom.one(r#"venussup_service_restarts_total{service="sealer"}"#)
            .filter(|v| *v == 0.0)
    });
    assert_eq!(
        prom.one(r#"venussup_service_up{service="sealer"}"#),
        Some(1.0)
    );
    // What the service is, scraped, and the dashboard's join on it.
    assert_eq!(
        prom.one(r#"venussup_service_info{service="sealer", role="other"}"#),
        Some(1.0)
    );
    eventually("the recording rule joins up and info", minute, || {
        prom.one(r#"instance_role:venussup_services_up:sum{role="other"}"#)
            .filter(|v| *v == 1.0)
    });
    // Three kills within the first minute: the rate follows, the alert fires.
    for n in 1..=3 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            Signal::SIGKILL,
        )
        .unwrap();
        let s = d.wait_service("sealer", "restarted", |s| {
            s["restarts"] == n && s["state"] == "running"
        });
        pid = common::daemon::pid_of(&s);
    }
    eventually("restarts == 3 scraped", minute, || {
        prom.one(r#"venussup_service_restarts_total{service="sealer"}"#)
            .filter(|v| *v == 3.0)
    });
    eventually("a restart rate", minute, || {
        prom.one(r#"rate(venussup_service_restarts_total{service="sealer"}[1m])"#)
            .filter(|v| *v > 0.0)
    });
    eventually("VenussupServiceRestartingRepeatedly firing", minute, || {
        prom.firing()
            .filter(|f| f.iter().any(|a| a == "VenussupServiceRestartingRepeatedly"))
    });
    // venussup stops: up 0, the alert fires; it starts again: both resolve.
    let mut d = d;
    d.signal(Signal::SIGTERM);
    d.wait_exit(WAIT);
    eventually("up == 0", minute, || {
        prom.one(r#"up{job="venussup"}"#).filter(|v| *v == 0.0)
    });
    eventually("VenussupNotRunning firing", minute, || {
        prom.firing()
            .filter(|f| f.iter().any(|a| a == "VenussupNotRunning"))
    });
    let d = setup.start();
    d.running("sealer");
    eventually("VenussupNotRunning resolved", minute, || {
        prom.firing()
            .filter(|f| !f.iter().any(|a| a == "VenussupNotRunning"))
    });
    assert_eq!(prom.one(r#"up{job="venussup"}"#), Some(1.0));
    drop(prom);
    drop(d);
}
