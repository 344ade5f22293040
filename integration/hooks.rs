//! Operations around the services: event hooks (a command and a webhook
//! POST to a local server, over http and https), the pledge gate, and node_exporter's textfile.
//! Every wait is on the status snapshot (inotify) or a bounded channel.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::daemon::{wait_file, Daemon, Setup, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const SEALER: &str = "[[service]]\nname = \"sealer\"\nstable_after = \"100ms\"\ncommand = [\"{bin}\", \"standin\", \"--name\", \"sealer\"]\n";

fn running_pid(d: &Daemon, name: &str) -> i32 {
    let s = d.wait_service(name, "running", |s| s["state"] == "running");
    i32::try_from(s["pid"].as_i64().unwrap()).unwrap()
}

#[test]
fn a_kill_9_runs_the_command_hook_with_the_event_as_json_and_environment() {
    let setup = Setup::new(&format!(
        "[[host.hook]]\non = [\"death\"]\ncommand = [\"/bin/sh\", \"-c\", \"cat > {{dir}}/event.tmp && env | grep ^VENUSSUP_ | sort > {{dir}}/env.txt && mv {{dir}}/event.tmp {{dir}}/event.json\"]\n\n{SEALER}"
    ));
    let d = setup.start();
    let pid = running_pid(&d, "sealer");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let st = d.wait_for("the hook ran once", |st| st["hooks"][0]["ok"] == 1);
    assert_eq!(st["hooks"][0]["failed"], 0, "{st:#}");
    wait_file(&setup.path("event.json"));
    let event: Value =
        serde_json::from_str(&fs::read_to_string(setup.path("event.json")).unwrap()).unwrap();
    assert_eq!(event["event"], "death");
    assert_eq!(event["service"], "sealer");
    assert_eq!(event["exit"], "killed by SIGKILL");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("sealer died (killed by SIGKILL)"),
        "{event}"
    );
    assert!(event["at"].is_u64() && event["host"].is_string(), "{event}");
    let env = fs::read_to_string(setup.path("env.txt")).unwrap();
    for line in [
        "VENUSSUP_EVENT=death",
        "VENUSSUP_SERVICE=sealer",
        "VENUSSUP_EXIT=killed by SIGKILL",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in\n{env}");
    }
    d.wait_service("sealer", "restarted", |s| {
        s["state"] == "running" && s["restarts"] == 1
    });
}

/// One request read off `stream`: (request line, body).
fn read_request(stream: impl Read) -> (String, String) {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (first.trim().to_string(), String::from_utf8(body).unwrap())
}

#[test]
fn a_webhook_post_reaches_a_local_server_after_a_retry() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // The first try gets a 503, the second a 200.
        for answer in ["503 Service Unavailable", "200 OK"] {
            let (mut stream, _) = listener.accept().unwrap();
            let request = read_request(&mut stream);
            write!(stream, "HTTP/1.1 {answer}\r\nContent-Length: 0\r\n\r\n").unwrap();
            tx.send(request).unwrap();
        }
    });
    let setup = Setup::new(&format!(
        "[[host.hook]]\nurl = \"http://127.0.0.1:{port}/robot/send?access_token=s3cret\"\ntries = 3\ntimeout = \"20s\"\n\n\
         [[service]]\nname = \"once\"\nrestart = \"never\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n"
    ));
    let d = setup.start();
    let (first, body1) = rx.recv_timeout(WAIT).expect("a first POST");
    let (second, body2) = rx.recv_timeout(WAIT).expect("a retried POST");
    assert_eq!(first, "POST /robot/send?access_token=s3cret HTTP/1.1");
    assert_eq!(second, first);
    assert_eq!(body1, body2, "the retry sends the same event");
    let event: Value = serde_json::from_str(&body2).unwrap();
    assert_eq!(event["event"], "death");
    assert_eq!(event["service"], "once");
    assert_eq!(event["exit"], "exit code 3");
    let st = d.wait_for("the webhook counted ok", |st| st["hooks"][0]["ok"] == 1);
    let target = st["hooks"][0]["target"].as_str().unwrap();
    assert!(
        target.ends_with("/robot/send?<redacted>"),
        "the token stays out of status: {target}"
    );
    let log = fs::read_to_string(setup.path("logs/hooks.log")).unwrap();
    assert!(
        log.contains("try 1/3") && log.contains("answered 503"),
        "{log}"
    );
}

/// A test CA and two server certificates it signed, made with `openssl`
/// in `dir`: `good` for 127.0.0.1 and localhost, `wrong` for
/// wrong.example only. `None` (and a SKIPPED line) without `openssl`.
fn make_certs(dir: &Path) -> Option<()> {
    let openssl = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(dir);
        common::try_run_bounded(&mut cmd, common::RUN_TIMEOUT)
    };
    if openssl(&["version"]).is_none_or(|o| o.code != Some(0)) {
        eprintln!("SKIPPED: no `openssl` command (Debian package openssl)");
        return None;
    }
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ok = |o: Option<common::Outcome>| {
        o.unwrap().expect_code(0);
    };
    ok(openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=venussup test CA",
            ],
        ]
        .concat(),
    ));
    for (name, san) in [
        ("good", "IP:127.0.0.1,DNS:localhost"),
        ("wrong", "DNS:wrong.example"),
    ] {
        fs::write(
            dir.join(format!("{name}.ext")),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        ok(openssl(
            &[
                &["req", "-new"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat(),
        ));
        ok(openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ]));
    }
    Some(())
}

/// What the TLS server saw of one connection.
#[derive(Debug)]
enum Seen {
    /// A request: (request line, body); it answered 200.
    Request(String, String),
    /// The handshake failed with this error.
    Refused(String),
}

/// An https server on 127.0.0.1 with `name`'s certificate from `dir`,
/// for `connections` connections; returns its port.
fn tls_server(dir: &Path, name: &str, connections: usize, tx: mpsc::Sender<Seen>) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for _ in 0..connections {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(WAIT)).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut seen = None;
            while tls.conn.is_handshaking() {
                if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                    seen = Some(Seen::Refused(e.to_string()));
                    break;
                }
            }
            let seen = seen.unwrap_or_else(|| {
                let (line, body) = read_request(&mut tls);
                write!(tls, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
                tls.conn.send_close_notify();
                let _ = tls.flush();
                Seen::Request(line, body)
            });
            tx.send(seen).unwrap();
        }
    });
    port
}

/// A setup whose one service exits 3 once, with an https hook to `port`
/// (`ca` is the hook's extra line, if any).
fn https_hook(port: u16, ca: &str, tries: u32) -> Setup {
    Setup::new(&format!(
        "[[host.hook]]\nurl = \"https://127.0.0.1:{port}/robot/send?access_token=s3cret\"\n{ca}tries = {tries}\ntimeout = \"20s\"\n\n\
         [[service]]\nname = \"once\"\nrestart = \"never\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n"
    ))
}

#[test]
fn an_https_webhook_is_delivered_to_a_server_of_the_hooks_ca() {
    let certs = tempfile::tempdir().unwrap();
    if make_certs(certs.path()).is_none() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let port = tls_server(certs.path(), "good", 1, tx);
    let ca = certs.path().join("ca.pem");
    let setup = https_hook(port, &format!("ca = \"{}\"\n", ca.display()), 3);
    let check = setup.cli(&["check"]).expect_code(0).stdout.clone();
    assert!(
        check.contains(&format!(
            "POST https://127.0.0.1:{port}/robot/send?<redacted> (3 tries, CA {})",
            ca.display()
        )),
        "{check}"
    );
    assert!(!check.contains("s3cret"), "{check}");
    let d = setup.start();
    let seen = rx.recv_timeout(WAIT).expect("a POST over TLS");
    let Seen::Request(line, body) = seen else {
        panic!("the handshake failed: {seen:?}");
    };
    assert_eq!(line, "POST /robot/send?access_token=s3cret HTTP/1.1");
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["event"], "death");
    assert_eq!(event["service"], "once");
    assert_eq!(event["exit"], "exit code 3");
    let st = d.wait_for("the https webhook counted ok", |st| {
        st["hooks"][0]["ok"] == 1
    });
    assert_eq!(st["hooks"][0]["failed"], 0, "{st:#}");
    assert!(
        st["hooks"][0]["target"]
            .as_str()
            .unwrap()
            .ends_with("?<redacted>"),
        "{st:#}"
    );
}

/// The hook to a server `name` fails every one of its `tries`: the server
/// sees each handshake refused, hooks.log says why, status counts one
/// failure. Returns hooks.log.
fn refused(name: &str, ca: bool, tries: u32) -> Option<String> {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path())?;
    let (tx, rx) = mpsc::channel();
    let port = tls_server(certs.path(), name, tries as usize, tx);
    let line = if ca {
        format!("ca = \"{}\"\n", certs.path().join("ca.pem").display())
    } else {
        String::new()
    };
    let setup = https_hook(port, &line, tries);
    let d = setup.start();
    for n in 1..=tries {
        match rx.recv_timeout(WAIT).expect("a try") {
            Seen::Refused(e) => eprintln!("try {n}: the server saw {e}"),
            seen => panic!("try {n} got through: {seen:?}"),
        }
    }
    let st = d.wait_for("the webhook counted failed", |st| {
        st["hooks"][0]["failed"] == 1
    });
    assert_eq!(st["hooks"][0]["ok"], 0, "{st:#}");
    let log = fs::read_to_string(setup.path("logs/hooks.log")).unwrap();
    assert!(
        log.contains(&format!("gave up after {tries} tries")),
        "{log}"
    );
    assert!(
        d.log().contains("(see hooks.log)"),
        "the daemon reports the failed hook: {}",
        d.log()
    );
    Some(log)
}

#[test]
fn an_https_webhook_to_a_certificate_of_an_unknown_ca_is_refused() {
    let Some(log) = refused("good", false, 2) else {
        return;
    };
    assert!(
        log.contains("TLS: the certificate of 127.0.0.1 was refused")
            && log.contains("UnknownIssuer")
            && log.contains("its CA is not trusted: for a private CA set the hook's `ca`"),
        "{log}"
    );
}

#[test]
fn an_https_webhook_to_a_certificate_for_another_name_is_refused() {
    let Some(log) = refused("wrong", true, 1) else {
        return;
    };
    assert!(
        log.contains("TLS: the certificate of 127.0.0.1 was refused")
            && log.contains("not valid for name \"127.0.0.1\"")
            && log.contains("made for another name"),
        "{log}"
    );
}

#[test]
fn a_ca_needs_an_https_url_and_an_absolute_path_and_is_looked_for() {
    let setup = Setup::new(
        "[[host.hook]]\nurl = \"http://127.0.0.1:9/x\"\nca = \"/etc/ssl/ca.pem\"\n\n\
         [[host.hook]]\nurl = \"https://127.0.0.1:9/x\"\nca = \"ca.pem\"\n\n\
         [[host.hook]]\nurl = \"https://127.0.0.1:9/x\"\nca = \"{dir}/missing.pem\"\n",
    );
    let out = setup.cli(&["check"]);
    common::assert_error_at(&out, 8, 6, "`ca` is for an https:// url");
    common::assert_error_at(&out, 12, 6, "`ca` must be an absolute path");
    let warning = format!(
        ":16:6: warning: the hook's CA file {} is not a file here",
        setup.path("missing.pem").display()
    );
    assert!(
        out.stderr.contains(&warning),
        "{warning} in\n{}",
        out.stderr
    );
}

/// A gated pledge timer: in flight read from `{dir}/in_flight`, each
/// pledge appends a line to `{dir}/pledges` and prints `answer`.
fn gated(answer: &str, gate: &str) -> Setup {
    let setup = Setup::new(&format!(
        "[[timer]]\nname = \"pledge\"\nevery = \"1s\"\nfull_output = [\"too many sectors sealing\"]\n\
         command = [\"/bin/sh\", \"-c\", \"echo x >> {{dir}}/pledges; echo '{answer}'\"]\n\
         gate = {{ command = [\"/bin/cat\", \"{{dir}}/in_flight\"], {gate} }}\n"
    ));
    setup
}

fn pledges(setup: &Setup) -> usize {
    fs::read_to_string(setup.path("pledges")).map_or(0, |t| t.lines().count())
}

fn gate_is(d: &Daemon, in_flight: u64, runs: u64) -> Value {
    let st = d.wait_for(&format!("gate: {in_flight} in flight, {runs} runs"), |st| {
        st["timers"][0]["gate"]["in_flight"] == in_flight && st["timers"][0]["gate"]["runs"] == runs
    });
    st["timers"][0].clone()
}

#[test]
fn the_gate_holds_pledges_above_target_and_lets_through_at_most_k_a_tick() {
    let setup = gated(
        "Created CC sector: 1",
        "target = 6, max_per_tick = 2, spacing = \"50ms\"",
    );
    fs::write(setup.path("in_flight"), "sectors in PC1: 9\n").unwrap();
    let d = setup.start();
    let held = gate_is(&d, 9, 0);
    assert_eq!(held["runs"]["success"], 0, "{held:#}");
    assert_eq!(pledges(&setup), 0, "no pledge above target");
    fs::write(setup.path("in_flight"), "5\n").unwrap();
    gate_is(&d, 5, 1);
    let t = d.wait_for("a pledge", |st| {
        st["timers"][0]["runs"]["success"].as_u64() >= Some(1)
    });
    assert!(t["timers"][0]["runs"]["failure"] == 0, "{t:#}");
    fs::write(setup.path("in_flight"), "0\n").unwrap();
    gate_is(&d, 0, 2);
    fs::write(setup.path("in_flight"), "6\n").unwrap();
    gate_is(&d, 6, 0);
    // Held again: what ran is what the answers let through.
    let ran = pledges(&setup);
    let st = d.status();
    assert_eq!(st["timers"][0]["runs"]["success"], ran, "{st:#}");
    let cfg = setup.config();
    let text = common::venussup(&["status", "--config", cfg.to_str().unwrap()]);
    assert!(
        text.expect_code(0)
            .stdout
            .contains("pledge: gate: 6 in flight, target 6: holding"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_full_answer_ends_the_tick_and_the_cooldown_holds_the_next() {
    let setup = gated(
        "too many sectors sealing",
        "target = 6, max_per_tick = 3, cooldown = \"1h\"",
    );
    fs::write(setup.path("in_flight"), "0\n").unwrap();
    let d = setup.start();
    let st = d.wait_for("a full run", |st| st["timers"][0]["runs"]["full"] == 1);
    let t = &st["timers"][0];
    assert_eq!(t["gate"]["runs"], 3, "the gate let 3 through: {t:#}");
    assert_eq!(t["runs"]["success"], 0, "full ended the tick: {t:#}");
    assert!(
        t["next_in_secs"].as_f64().unwrap() > 3000.0,
        "the next tick waits the cooldown: {t:#}"
    );
    assert_eq!(pledges(&setup), 1);
}

#[test]
fn the_textfile_follows_state_changes_and_promtool_accepts_it() {
    if let Err(why) = common::debian::need(&[("promtool", "prometheus")]) {
        eprintln!("SKIPPED: {why}; ./test.sh installs it");
        return;
    }
    let setup = Setup::new(SEALER);
    let prom = setup.state_dir().join("venussup.prom");
    setup.host_line(&format!(
        "metrics = {{ textfile = \"{}\" }}",
        prom.display()
    ));
    let d = setup.start();
    let pid = running_pid(&d, "sealer");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let restarted = "venussup_service_restarts_total{service=\"sealer\"} 1";
    let up = "venussup_service_state{service=\"sealer\",state=\"running\"} 1";
    d.wait_for("the textfile shows the restart", |_| {
        fs::read_to_string(&prom).is_ok_and(|t| t.contains(restarted) && t.contains(up))
    });
    let text = fs::read_to_string(&prom).unwrap();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let leftovers: Vec<_> = fs::read_dir(setup.state_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("venussup.") && n != "venussup.prom" && n != "venussup.lock")
        .collect();
    assert!(leftovers.is_empty(), "no temp file left: {leftovers:?}");
    assert_eq!(json!(d.status()["services"][0]["restarts"]), json!(1));
}

#[test]
fn reload_applies_hooks_and_the_textfile_and_says_prepare_needs_a_restart() {
    let setup = Setup::new(&format!(
        "[[host.hook]]\non = [\"death\"]\ncommand = [\"/bin/sh\", \"-c\", \"cat > {{dir}}/hook.tmp && mv {{dir}}/hook.tmp {{dir}}/first.json\"]\n\n{SEALER}"
    ));
    let d = setup.start();
    kill(Pid::from_raw(running_pid(&d, "sealer")), Signal::SIGKILL).unwrap();
    d.wait_for("the first hook ran", |st| st["hooks"][0]["ok"] == 1);
    wait_file(&setup.path("first.json"));
    d.wait_service("sealer", "restarted", |s| {
        s["state"] == "running" && s["restarts"] == 1
    });

    // A new hook command, a textfile, and host preparation.
    let text = fs::read_to_string(setup.config()).unwrap();
    fs::write(setup.config(), text.replace("first.json", "second.json")).unwrap();
    let prom = setup.path("state/venussup.prom");
    setup.host_line(&format!(
        "metrics = {{ textfile = \"{}\" }}",
        prom.display()
    ));
    setup.host_line("prepare = { governor = \"performance\" }");
    let out = setup.cli(&["reload"]).expect_code(0).stdout.clone();
    assert!(out.contains("applied hooks, textfile"), "{out}");
    assert!(
        out.contains("needs a restart: [host.prepare]: runs once, when venussup starts"),
        "{out}"
    );
    assert!(out.contains("unchanged sealer"), "{out}");
    wait_file(&prom);
    assert!(fs::read_to_string(&prom)
        .unwrap()
        .contains("venussup_service_up{service=\"sealer\"} 1"));

    // The next death goes to the new command, and only to it.
    fs::remove_file(setup.path("first.json")).unwrap();
    kill(Pid::from_raw(running_pid(&d, "sealer")), Signal::SIGKILL).unwrap();
    wait_file(&setup.path("second.json"));
    let event: Value =
        serde_json::from_str(&fs::read_to_string(setup.path("second.json")).unwrap()).unwrap();
    assert_eq!(event["event"], "death");
    d.wait_for("the new hook ran once", |st| {
        st["hooks"].as_array().map(Vec::len) == Some(1) && st["hooks"][0]["ok"] == 1
    });
    assert!(!setup.path("first.json").exists(), "the old hook ran");
    d.wait_service("sealer", "restarted", |s| {
        s["state"] == "running" && s["restarts"] == 2
    });
}

#[test]
fn reload_makes_the_gpu_lock_folder_of_a_newly_stated_gpu() {
    let setup = Setup::new(
        "[[service]]\nname = \"sealer\"\nrole = \"sealer\"\ntasks = [\"WindowPoSt\"]\n\
         command = [\"{bin}\", \"standin\", \"--name\", \"sealer\"]\n",
    );
    let d = setup.start();
    running_pid(&d, "sealer");
    let lock = setup.state_dir().join("gpu0-tmp");
    assert!(!lock.exists());
    setup.host_line("gpus = 1");
    let out = setup.cli(&["reload"]).expect_code(0).stdout.clone();
    assert!(out.contains("applied gpu lock folders"), "{out}");
    assert!(out.contains("restarted sealer"), "{out}");
    assert!(lock.is_dir(), "{} made by the reload", lock.display());
    d.wait_service("sealer", "running again", |s| s["state"] == "running");
}
