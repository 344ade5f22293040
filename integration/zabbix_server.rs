//! The Zabbix template against a real Zabbix 6.0 (issue 22): Debian's
//! zabbix_server on a PostgreSQL of its own, the frontend's JSON-RPC API
//! (served by PHP's built-in server), and Debian's zabbix_agentd running
//! as `zabbix` on the shipped UserParameters. All on loopback, all of it
//! started here and stopped on drop; every wait is bounded.
//!
//! It imports the template, links a host, lowers the intervals through the
//! API and checks: discovery and values, "not running" after `venussup
//! stop`, "restarting repeatedly" after three kills in the host's first
//! minute, one high-severity problem ("venussup is not running") after the
//! daemon stops, and recovery. Skipped, saying which package, only when a
//! package is missing (.ci/run installs them).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{pid_of, wait_gone, Setup, WAIT};
use common::{project_file, run_bounded};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};
use serde_json::{json, Value};

const BOUND: Duration = Duration::from_secs(60);
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const FRONTEND_CONF: &str = "/etc/zabbix/zabbix.conf.php";
const TEMPLATE: &str = "venussup by Zabbix agent";
const FLEET: &str = "venussup fleet";

/// A loopback port nobody listens on now, within the 1024-32767 that
/// Zabbix's ListenPort accepts (the kernel's own picks are above).
/// Each call looks from a later port on, so that ports picked before the
/// servers bind them differ.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base =
        std::process::id() % 10_000 + NEXT.fetch_add(97, std::sync::atomic::Ordering::Relaxed);
    (0..12_000)
        .map(|i| u16::try_from(20_000 + (base + i) % 12_000).unwrap())
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 20000-31999")
}

/// Asks `f` every 500 ms until it answers, at most `bound` (a real server
/// has no event to wait on); `diag` tells what the servers said.
fn eventually<T>(
    what: &str,
    bound: Duration,
    diag: &dyn Fn() -> String,
    f: impl FnMut() -> Option<T>,
) -> T {
    common::eventually(what, bound, Duration::from_millis(500), diag, f)
}

/// `cmd` as `user`, with its groups (through setpriv).
fn as_user(user: &str, cmd: &mut Command) -> Command {
    let u = User::from_name(user).unwrap().unwrap();
    let mut c = Command::new("setpriv");
    c.args(["--reuid", &u.uid.to_string(), "--regid", &u.gid.to_string()])
        .arg("--init-groups")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    c
}

fn chown(path: &Path, user: &str) {
    let u = User::from_name(user).unwrap().unwrap();
    nix::unistd::chown(path, Some(u.uid), Some(u.gid)).unwrap();
}

/// A process group we started, ended (TERM, then KILL) and reaped on drop.
struct Proc {
    child: Child,
    what: &'static str,
}

impl Proc {
    fn spawn(what: &'static str, cmd: &mut Command, log: &Path) -> Self {
        let log = fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Self { child, what }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = Pid::from_raw(-i32::try_from(self.child.id()).unwrap());
        let _ = kill(pgid, Signal::SIGTERM);
        if !wait_gone(i32::try_from(self.child.id()).unwrap(), BOUND) {
            eprintln!("{} ignored SIGTERM; killing its group", self.what);
        }
        let _ = kill(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A PostgreSQL cluster in `dir`, listening only on a socket there.
struct Postgres {
    data: PathBuf,
    socket: PathBuf,
    port: u16,
}

impl Postgres {
    fn start(dir: &Path) -> Self {
        let data = dir.join("pg");
        let socket = dir.join("pgsock");
        for d in [&data, &socket] {
            fs::create_dir(d).unwrap();
            chown(d, "postgres");
        }
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
        let port = free_port();
        run_bounded(
            &mut as_user(
                "postgres",
                Command::new(format!("{PG_BIN}/initdb"))
                    .args(["-D", data.to_str().unwrap(), "-U", "postgres"])
                    .args(["--auth=trust", "--no-sync", "-E", "UTF8"]),
            ),
            BOUND,
        )
        .expect_code(0);
        let pg = Self { data, socket, port };
        let opts = format!(
            "-c listen_addresses='' -k {} -p {port} -c fsync=off",
            pg.socket.display()
        );
        run_bounded(
            &mut as_user(
                "postgres",
                Command::new(format!("{PG_BIN}/pg_ctl"))
                    .args([
                        "-D",
                        pg.data.to_str().unwrap(),
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        &opts,
                    ])
                    .args(["-l", pg.socket.join("pg.log").to_str().unwrap(), "start"]),
            ),
            Duration::from_secs(90),
        )
        .expect_code(0);
        pg
    }

    /// `psql` on database `db`, with `sql` on stdin (a shell pipeline).
    fn psql(&self, db: &str, input: &str) {
        let cmd = format!(
            "{input} | {PG_BIN}/psql -q -v ON_ERROR_STOP=1 -h {} -p {} -U postgres -d {db} >/dev/null",
            self.socket.display(),
            self.port
        );
        run_bounded(
            Command::new("sh").args(["-c", &cmd]),
            Duration::from_secs(180),
        )
        .expect_code(0);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = common::try_run_bounded(
            &mut as_user(
                "postgres",
                Command::new(format!("{PG_BIN}/pg_ctl")).args([
                    "-D",
                    self.data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ]),
            ),
            Duration::from_secs(90),
        );
    }
}

/// The frontend's config, put in place for the test and taken away after
/// (an operator's own file, if any, is put back).
struct FrontendConf {
    saved: Option<Vec<u8>>,
}

impl FrontendConf {
    fn write(pg: &Postgres, server_port: u16) -> Self {
        let saved = fs::read(FRONTEND_CONF).ok();
        fs::write(
            FRONTEND_CONF,
            format!(
                "<?php\n$DB['TYPE'] = 'POSTGRESQL';\n$DB['SERVER'] = '{}';\n$DB['PORT'] = '{}';\n$DB['DATABASE'] = 'zabbix';\n$DB['USER'] = 'postgres';\n$DB['PASSWORD'] = '';\n$DB['SCHEMA'] = '';\n$DB['ENCRYPTION'] = false;\n$DB['KEY_FILE'] = '';\n$DB['CERT_FILE'] = '';\n$DB['CA_FILE'] = '';\n$DB['VERIFY_HOST'] = false;\n$DB['CIPHER_LIST'] = '';\n$DB['VAULT_URL'] = '';\n$DB['VAULT_DB_PATH'] = '';\n$DB['VAULT_TOKEN'] = '';\n$DB['DOUBLE_IEEE754'] = true;\n$ZBX_SERVER = '127.0.0.1';\n$ZBX_SERVER_PORT = '{server_port}';\n$ZBX_SERVER_NAME = 'venussup test';\n$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;\n",
                pg.socket.display(),
                pg.port
            ),
        )
        .unwrap();
        Self { saved }
    }
}

impl Drop for FrontendConf {
    fn drop(&mut self) {
        match &self.saved {
            Some(bytes) => {
                let _ = fs::write(FRONTEND_CONF, bytes);
            }
            None => {
                let _ = fs::remove_file(FRONTEND_CONF);
            }
        }
    }
}

/// The JSON-RPC API of the frontend.
struct Api {
    url: String,
    auth: Option<String>,
    /// Where each request is written for curl to send.
    body: PathBuf,
}

impl Api {
    fn try_call(&self, method: &str, params: Value) -> Result<Value, String> {
        let mut req = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
        if let Some(a) = &self.auth {
            req["auth"] = json!(a);
        }
        fs::write(&self.body, req.to_string()).map_err(|e| e.to_string())?;
        let out = common::try_run_bounded(
            Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "50",
                    "-H",
                    "Content-Type: application/json-rpc",
                ])
                .arg("--data-binary")
                .arg(format!("@{}", self.body.display()))
                .arg(&self.url),
            BOUND,
        )
        .ok_or("curl timed out")?;
        let doc: Value = serde_json::from_str(&out.stdout)
            .map_err(|e| format!("{method}: {e}: {} {}", out.stdout, out.stderr))?;
        match doc.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(format!("{method}: {}", doc["error"])),
        }
    }

    fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// What is missing to run the test, naming the Debian package.
fn missing() -> Option<&'static str> {
    [
        ("/usr/sbin/zabbix_server", "zabbix-server-pgsql"),
        (
            "/usr/share/zabbix-server-pgsql/schema.sql.gz",
            "zabbix-server-pgsql",
        ),
        ("/usr/share/zabbix/api_jsonrpc.php", "zabbix-frontend-php"),
        ("/usr/bin/php", "php-cli"),
        ("/usr/sbin/zabbix_agentd", "zabbix-agent"),
        ("/usr/bin/curl", "curl"),
        ("/usr/lib/postgresql/15/bin/initdb", "postgresql"),
    ]
    .into_iter()
    .find(|(p, _)| !Path::new(p).exists())
    .map(|(_, pkg)| pkg)
    .or_else(|| {
        let pgsql = Command::new("php").args(["-m"]).output().ok()?;
        (!String::from_utf8_lossy(&pgsql.stdout).contains("pgsql")).then_some("php-pgsql")
    })
}

#[test]
fn the_template_on_a_real_zabbix_6_server_raises_one_problem_for_a_dead_daemon() {
    if let Some(pkg) = missing() {
        eprintln!("SKIPPED: the real Zabbix server test needs the Debian package {pkg}");
        return;
    }
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();

    // venussup, reachable by the agent through control_group.
    let setup = Setup::new(
        "[[service]]\nname = \"sealer\"\nrole = \"sealer\"\ncommand = [\"{bin}\", \"standin\", \"--name\", \"sealer\"]\nstable_after = \"100ms\"\n[[service]]\nname = \"worker01\"\nrole = \"worker\"\ncommand = [\"{bin}\", \"standin\", \"--name\", \"worker01\"]\nstable_after = \"100ms\"\n[[timer]]\nname = \"pledge\"\ncommand = [\"/bin/true\"]\nevery = \"2s\"\n",
    );
    setup.host_line("control_group = \"zabbix\"");
    fs::set_permissions(setup.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let d = setup.start();
    d.running("sealer");

    // PostgreSQL and the packaged schema.
    let pg = Postgres::start(dir);
    pg.psql("postgres", "echo 'CREATE DATABASE zabbix'");
    for part in ["schema", "images", "data"] {
        pg.psql(
            "zabbix",
            &format!("zcat /usr/share/zabbix-server-pgsql/{part}.sql.gz"),
        );
    }

    // The server.
    let server_port = free_port();
    let server_dir = dir.join("server");
    fs::create_dir(&server_dir).unwrap();
    let server_conf = server_dir.join("zabbix_server.conf");
    fs::write(
        &server_conf,
        format!(
            "LogType=file\nLogFile={d}/zabbix_server.log\nPidFile={d}/zabbix_server.pid\nSocketDir={d}\nDBHost={}\nDBPort={}\nDBName=zabbix\nDBUser=postgres\nListenIP=127.0.0.1\nListenPort={server_port}\nAllowRoot=1\nCacheUpdateFrequency=1\nTimeout=10\nStartPollers=2\nStartPollersUnreachable=1\nStartTrappers=1\nStartPingers=0\nStartDiscoverers=0\nStartHTTPPollers=0\nStartLLDProcessors=1\nStartPreprocessors=1\nHousekeepingFrequency=0\n",
            pg.socket.display(),
            pg.port,
            d = server_dir.display()
        ),
    )
    .unwrap();
    let server_log = server_dir.join("zabbix_server.log");
    let _server = Proc::spawn(
        "zabbix_server",
        Command::new("/usr/sbin/zabbix_server").args(["-f", "-c", server_conf.to_str().unwrap()]),
        &server_dir.join("stdout.log"),
    );

    // The agent, as zabbix, with the shipped UserParameters.
    let agent_dir = dir.join("agent");
    fs::create_dir(&agent_dir).unwrap();
    chown(&agent_dir, "zabbix");
    let agent_port = free_port();
    let params = common::zabbix_user_parameters(&setup.config());
    let agent_conf = agent_dir.join("zabbix_agentd.conf");
    fs::write(
        &agent_conf,
        format!(
            "LogType=console\nPidFile={}/agentd.pid\nServer=127.0.0.1\nListenIP=127.0.0.1\nListenPort={agent_port}\nHostname=sealer01\nTimeout=10\nStartAgents=2\n{params}",
            agent_dir.display()
        ),
    )
    .unwrap();
    let _agent = Proc::spawn(
        "zabbix_agentd",
        &mut as_user(
            "zabbix",
            Command::new("/usr/sbin/zabbix_agentd").args([
                "-f",
                "-c",
                agent_conf.to_str().unwrap(),
            ]),
        ),
        &agent_dir.join("agent.log"),
    );

    let diag = || {
        format!(
            "server log:\n{}\n{}\nagent log:\n{}",
            tail(&server_log),
            tail(&server_dir.join("stdout.log")),
            tail(&agent_dir.join("agent.log"))
        )
    };

    // The frontend's API.
    let _conf = FrontendConf::write(&pg, server_port);
    let web = format!("127.0.0.1:{}", free_port());
    let _php = Proc::spawn(
        "php -S",
        Command::new("php").args(["-S", &web, "-t", "/usr/share/zabbix"]),
        &dir.join("php.log"),
    );
    let mut api = Api {
        url: format!("http://{web}/api_jsonrpc.php"),
        auth: None,
        body: dir.join("request.json"),
    };
    let token = eventually("the API answers user.login", BOUND, &diag, || {
        api.try_call(
            "user.login",
            json!({"username": "Admin", "password": "zabbix"}),
        )
        .ok()
    });
    api.auth = Some(token.as_str().unwrap().to_string());

    // The template, imported as shipped.
    let yaml = fs::read_to_string(project_file("units/zabbix/venussup_template.yaml")).unwrap();
    let both = json!({"createMissing": true, "updateExisting": true});
    let imported = api.call(
        "configuration.import",
        json!({"format": "yaml", "source": yaml, "rules": {
            "groups": {"createMissing": true},
            "templates": both, "items": both, "discoveryRules": both,
            "triggers": both, "valueMaps": both,
        }}),
    );
    assert_eq!(imported, json!(true));
    let template_id = |name: &str| {
        api.call(
            "template.get",
            json!({"filter": {"host": [name]}, "output": ["templateid"]}),
        )[0]["templateid"]
            .clone()
    };
    let (template, fleet_template) = (template_id(TEMPLATE), template_id(FLEET));
    // Intervals lowered on the template, through the API.
    for (get, update, idfield, delay) in [
        ("item.get", "item.update", "itemid", "2s"),
        ("itemprototype.get", "itemprototype.update", "itemid", "2s"),
        ("discoveryrule.get", "discoveryrule.update", "itemid", "3s"),
    ] {
        for it in api
            .call(
                get,
                json!({"templateids": [template, fleet_template], "output": [idfield]}),
            )
            .as_array()
            .unwrap()
        {
            api.call(update, json!({idfield: it[idfield], "delay": delay}));
        }
    }
    let group = api.call(
        "hostgroup.get",
        json!({"filter": {"name": ["Linux servers"]}, "output": ["groupid"]}),
    )[0]["groupid"]
        .clone();
    // The fleet template's group, and a host of its own for its aggregates.
    let sealing =
        api.call("hostgroup.create", json!({"name": "Sealing hosts"}))["groupids"][0].clone();
    let fleet = api.call(
        "host.create",
        json!({
            "host": "sealing-fleet",
            "groups": [{"groupid": group}],
            "templates": [{"templateid": fleet_template}],
        }),
    )["hostids"][0]
        .clone();
    let host = api.call(
        "host.create",
        json!({
            "host": "sealer01",
            "groups": [{"groupid": group}, {"groupid": sealing}],
            "templates": [{"templateid": template}],
            "interfaces": [{"type": 1, "main": 1, "useip": 1, "ip": "127.0.0.1", "dns": "", "port": agent_port.to_string()}],
        }),
    )["hostids"][0]
        .clone();
    let host_created = Instant::now();
    let slow = Duration::from_secs(120);
    let item = |on: &Value, key: &str| -> Option<Value> {
        let items = api
            .try_call(
                "item.get",
                json!({"hostids": [on], "filter": {"key_": [key]}, "output": ["lastvalue", "lastclock", "state", "error"]}),
            )
            .ok()?;
        items.as_array()?.first().cloned()
    };
    let last = |key: &str| -> Option<String> {
        let it = item(&host, key)?;
        (it["lastclock"] != "0").then(|| it["lastvalue"].as_str().unwrap_or("").to_string())
    };
    let problems_on = |on: &Value| -> Option<Vec<(String, u64)>> {
        let t = api
            .try_call(
                "trigger.get",
                json!({"hostids": [on], "filter": {"value": 1}, "output": ["description", "priority"], "expandDescription": true}),
            )
            .ok()?;
        Some(
            t.as_array()?
                .iter()
                .map(|t| {
                    (
                        t["description"].as_str().unwrap_or("").to_string(),
                        t["priority"]
                            .as_str()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0),
                    )
                })
                .collect(),
        )
    };
    let problems = || problems_on(&host);
    let has = |name: &'static str| move |p: &Vec<(String, u64)>| p.iter().any(|(d, _)| d == name);
    let fleet_item = |key: &str| item(&fleet, key);
    let fleet_last = |key: &str| -> Option<String> {
        let it = fleet_item(key)?;
        (it["lastclock"] != "0" && it["state"] == "0")
            .then(|| it["lastvalue"].as_str().unwrap_or("").to_string())
    };
    let fleet_problems = || -> Option<Vec<String>> {
        Some(problems_on(&fleet)?.into_iter().map(|(d, _)| d).collect())
    };

    // Discovery and values.
    eventually("venussup.ping = 1", slow, &diag, || {
        last("venussup.ping").filter(|v| v == "1")
    });
    eventually("discovered sealer, up = 1", slow, &diag, || {
        last("venussup.service.up[sealer]").filter(|v| v == "1")
    });
    eventually("restarts = 0", slow, &diag, || {
        last("venussup.service.restarts[sealer]").filter(|v| v == "0")
    });
    eventually("state = running", slow, &diag, || {
        last("venussup.service.state[sealer]").filter(|v| v == "running")
    });
    // Every other item has a value too.
    for (key, want) in [
        ("venussup.service.last_exit_code[sealer]", "0"),
        ("venussup.timer.last[pledge]", "success"),
        ("venussup.timer.failures[pledge]", "0"),
    ] {
        eventually(&format!("{key} = {want}"), slow, &diag, || {
            last(key).filter(|v| v == want)
        });
    }
    eventually("uptime", slow, &diag, || {
        last("venussup.service.uptime[sealer]").filter(|v| v.parse::<u64>().is_ok())
    });
    assert_eq!(problems(), Some(vec![]));
    // The fleet's aggregates over the group, from the discovered items'
    // role tags: every one computes but WindowPoSt's, which has no item
    // to aggregate here (no GPU: no service proves WindowPoSt on one).
    for key in [
        "venussup.fleet.hosts_down",
        "venussup.fleet.sealers_down",
        "venussup.fleet.worker_restarts_15m",
    ] {
        eventually(&format!("fleet {key} = 0"), slow, &diag, || {
            fleet_last(key).filter(|v| v == "0")
        });
    }
    let windowpost = eventually("the WindowPoSt aggregate evaluated", slow, &diag, || {
        fleet_item("venussup.fleet.windowpost_gpu_down").filter(|i| i["state"] == "1")
    });
    assert!(
        !windowpost["error"].as_str().unwrap_or("").is_empty(),
        "{windowpost}"
    );
    assert_eq!(fleet_problems(), Some(vec![]));

    // "not running" after venussup stop, resolved by start; the fleet
    // counts the sealer down meanwhile.
    setup.cli(&["stop", "sealer"]).expect_code(0);
    eventually("'sealer is not running' raised", slow, &diag, || {
        problems().filter(has("venussup: sealer is not running"))
    });
    eventually("the fleet's sealer-down problem", slow, &diag, || {
        fleet_problems()
            .filter(|p| p == &["venussup fleet: 1 sealer(s) down in Sealing hosts".to_string()])
    });
    setup.cli(&["start", "sealer"]).expect_code(0);
    let mut pid = pid_of(&d.running("sealer"));
    eventually("'sealer is not running' resolved", slow, &diag, || {
        problems().filter(|p| p.is_empty())
    });
    eventually(
        "the fleet's sealer-down problem resolved",
        slow,
        &diag,
        || fleet_problems().filter(Vec::is_empty),
    );

    // Three kills within the host's first minute.
    for n in 1..=3 {
        kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
        let s = d.wait_service("sealer", "restarted", |s| {
            s["restarts"] == n && s["state"] == "running"
        });
        pid = pid_of(&s);
    }
    assert!(
        host_created.elapsed() < Duration::from_secs(60),
        "the kills came {:?} after the host was created",
        host_created.elapsed()
    );
    eventually("'restarting repeatedly' raised", slow, &diag, || {
        problems().filter(has("venussup: sealer is restarting repeatedly"))
    });
    eventually("up back to 1", slow, &diag, || {
        last("venussup.service.up[sealer]").filter(|v| v == "1")
    });
    eventually(
        "'sealer is not running' resolved again",
        slow,
        &diag,
        || problems().filter(|p| !has("venussup: sealer is not running")(p)),
    );

    // venussup stops: exactly one high-severity problem; then recovery.
    let mut d = d;
    d.signal(Signal::SIGTERM);
    d.wait_exit(WAIT);
    let high = |p: &Vec<(String, u64)>| -> Vec<String> {
        p.iter()
            .filter(|(_, s)| *s >= 4)
            .map(|(d, _)| d.clone())
            .collect()
    };
    let at_stop = eventually("'venussup is not running' raised", slow, &diag, || {
        problems().filter(has("venussup is not running"))
    });
    assert_eq!(high(&at_stop), ["venussup is not running"], "{at_stop:?}");
    // Two more polls of every item: still the one problem, nothing unsupported.
    let clock = |key: &str| -> u64 {
        api.call(
            "item.get",
            json!({"hostids": [host], "filter": {"key_": [key]}, "output": ["lastclock"]}),
        )[0]["lastclock"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let then = clock("venussup.ping");
    eventually("two more pings", slow, &diag, || {
        (clock("venussup.ping") >= then + 4).then_some(())
    });
    let later = problems().unwrap();
    assert_eq!(high(&later), ["venussup is not running"], "{later:?}");
    let unsupported = api.call(
        "item.get",
        json!({"hostids": [host], "filter": {"state": 1}, "output": ["key_", "error"]}),
    );
    assert_eq!(unsupported, json!([]), "unsupported items");
    // The discoveries answered an empty list: read, not unsupported.
    let rules = api.call(
        "discoveryrule.get",
        json!({"hostids": [host], "output": ["key_", "state", "error"]}),
    );
    for rule in rules.as_array().unwrap() {
        assert_eq!(rule["state"], "0", "{rule}");
    }
    assert_eq!(rules.as_array().unwrap().len(), 2, "{rules}");
    assert_eq!(last("venussup.ping").as_deref(), Some("0"));
    eventually("the fleet: one host does not answer", slow, &diag, || {
        fleet_problems().filter(|p| {
            p.contains(&"venussup does not answer on 1 host(s) of Sealing hosts".to_string())
        })
    });

    let d = setup.start();
    d.running("sealer");
    eventually("'venussup is not running' resolved", slow, &diag, || {
        problems().filter(|p| !has("venussup is not running")(p))
    });
    eprintln!("the real Zabbix server test took {:?}", started.elapsed());
    drop(d);
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
