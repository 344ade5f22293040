//! The model of venus-worker (`app/venus-worker/{main,cli,tasks,rpc,
//! storage}.go`, venus-sealer v1.6.0-3). `main` logs any error and
//! returns: the exit code is always 0.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{api, app_flags, flags, log, no_help_topic, repo, storage};
use crate::util::gocli::{self, Flag, Parsed, WORKER_GLOBAL, WORKER_RUN};

const SET: &[Flag] = &[Flag::switch("enabled", true)];
const NONE: &[Flag] = &[];
/// `tasks enable|disable` take these (`tasks.go` `allowSetting`, by `Short()`).
const SETTABLE: [&str; 9] = ["DC", "AP", "PC1", "PC2", "C2", "UNS", "RU", "PR2", "GSK"];
/// venus-worker refuses to start below this soft `RLIMIT_NOFILE`
/// (`constants.MinerFDLimit`).
const MIN_NOFILE: u64 = 100_000;

/// venus-worker's `main`: an error is logged (`log.Warnf`) and `main`
/// returns, so the exit code is 0 whatever happened.
pub fn main(args: &[String]) -> u8 {
    if let Err(e) = dispatch(args) {
        log::warn(&e);
    }
    0
}

/// A global flag, else its environment variable, else its default.
pub fn global(g: &Parsed, spec: &[Flag], name: &str, env: &str) -> PathBuf {
    let value = g
        .set
        .get(name)
        .cloned()
        .or_else(|| std::env::var(env).ok())
        .unwrap_or_else(|| g.get(spec, name).to_string());
    repo::expand(&value)
}

fn dispatch(args: &[String]) -> Result<(), String> {
    let g = app_flags(args, WORKER_GLOBAL)?;
    let repo = global(&g, WORKER_GLOBAL, "repo", "VENUS_WORKER_PATH");
    let rest = &g.rest;
    let sub = |n: usize| rest.get(n).map(String::as_str);
    match (sub(0), sub(1)) {
        (Some("run"), _) => run(&g, &repo, &flags(&rest[1..], WORKER_RUN)?),
        (Some("set"), _) => {
            let f = flags(&rest[1..], SET)?;
            let on = f.on(SET, "enabled");
            call(&repo, &format!("set-enabled {on}")).map_err(|e| format!("SetEnabled: {e}"))
        }
        (Some("wait-quiet"), _) => call(&repo, "wait-quiet"),
        (Some("info"), _) => {
            print!("{}", api::call(repo::running(&repo)?, "info")?);
            Ok(())
        }
        (Some("tasks"), Some(verb @ ("enable" | "disable"))) => {
            let f = flags(&rest[2..], NONE)?;
            if f.rest.len() != 1 {
                return Err("expected 1 argument".into());
            }
            let tt = &f.rest[0];
            if !SETTABLE.contains(&tt.as_str()) {
                return Err(format!("unknown task type '{tt}'"));
            }
            call(&repo, &format!("task-{verb} {tt}"))
        }
        (Some("storage"), Some("attach")) => storage::attach(&repo, &rest[2..]),
        // A command alone, or none: urfave/cli shows the help, exit 0.
        (Some("tasks" | "storage"), Some(other)) => no_help_topic(other),
        (None | Some("tasks" | "storage"), _) => {
            println!(
                "USAGE:\n   venus-worker [global options] command [command options] [arguments...]"
            );
            Ok(())
        }
        (Some("resources"), _) => Err("model: `resources` is not modelled".into()),
        (Some(other), _) => no_help_topic(other),
    }
}

fn call(repo: &Path, request: &str) -> Result<(), String> {
    api::call(repo::running(repo)?, request).map(drop)
}

/// What the running worker keeps.
struct Worker {
    repo: PathBuf,
    enabled: AtomicBool,
    /// `--task-total`, shown by `info` after the tasks running.
    task_total: String,
    tasks: Mutex<BTreeSet<String>>,
    /// The sector whose task runs now.
    running: Mutex<Option<u64>>,
    quiet: Condvar,
}

impl Worker {
    fn handle(&self, request: &str) -> Result<String, String> {
        let (verb, arg) = request.split_once(' ').unwrap_or((request, ""));
        match verb {
            "version" => Ok(String::new()),
            // `info.go`: `Enabled: %t`, and `Tasks: %s` of `TaskNumbers`
            // (`worker_local.go`: tasks running, `-`, `--task-total`).
            "info" => {
                let running =
                    usize::from(self.running.lock().map_err(|e| e.to_string())?.is_some());
                let types: Vec<String> = self
                    .tasks
                    .lock()
                    .map(|t| t.iter().cloned().collect())
                    .unwrap_or_default();
                Ok(format!(
                    "Enabled: {}\nTasks: {running}-{}\nTask types: {} \n",
                    self.enabled.load(Ordering::SeqCst),
                    self.task_total,
                    types.join(" ")
                ))
            }
            "set-enabled" => {
                let on = arg == "true";
                // Under the lock `work` takes a task with: once this
                // answers, no new task starts.
                let _taking = self.running.lock().map_err(|e| e.to_string())?;
                self.enabled.store(on, Ordering::SeqCst);
                log::info(&format!(
                    "model: SetEnabled({on}): new task processing {}",
                    if on { "enabled" } else { "disabled" }
                ));
                Ok(String::new())
            }
            "wait-quiet" => {
                let mut running = self.running.lock().map_err(|e| e.to_string())?;
                while running.is_some() {
                    running = self.quiet.wait(running).map_err(|e| e.to_string())?;
                }
                Ok(String::new())
            }
            "task-enable" | "task-disable" => {
                let mut tasks = self.tasks.lock().map_err(|e| e.to_string())?;
                if verb == "task-enable" {
                    tasks.insert(arg.to_string());
                } else {
                    tasks.remove(arg);
                }
                log::info(&format!("model: {verb} {arg}: accepting {tasks:?}"));
                Ok(String::new())
            }
            "storage-add-local" => storage::add_local(&self.repo, arg),
            _ => Err(format!("model: unknown request `{verb}`")),
        }
    }
}

/// The task types `run`'s switches accept (`main.go`: Fetch, Commit1 and
/// Finalize always; AddPiece brings DataCid).
fn task_types(run: &Parsed) -> BTreeSet<String> {
    let switches = [
        ("addpiece", &["AP", "DC"][..]),
        ("precommit1", &["PC1"]),
        ("unseal", &["UNS"]),
        ("precommit2", &["PC2"]),
        ("commit", &["C2"]),
        ("replica-update", &["RU"]),
        ("prove-replica-update2", &["PR2"]),
        ("regen-sector-key", &["GSK"]),
    ];
    let always = ["GET", "C1", "FIN"].map(String::from);
    switches
        .iter()
        .filter(|(flag, _)| run.on(WORKER_RUN, flag))
        .flat_map(|(_, shorts)| shorts.iter().map(|s| s.to_string()))
        .chain(always)
        .collect()
}

/// `extractRoutableIP`: dial the sealer and take the local address.
fn routable_ip(url: &str, timeout: Duration) -> Result<String, String> {
    let (host, port) = gocli::multiaddr_host_port(url)
        .ok_or_else(|| format!("model: `{url}` has no /IP/tcp/PORT"))?;
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let conn =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: {e}"))?;
    conn.local_addr()
        .map(|a| a.ip().to_string())
        .map_err(|e| e.to_string())
}

fn task_time() -> Duration {
    let ms = std::env::var("VENUS_MODEL_TASK_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    Duration::from_millis(ms.unwrap_or(2000))
}

/// `venus-worker run`, in `main.go`'s order.
fn run(g: &Parsed, repo: &Path, run: &Parsed) -> Result<(), String> {
    log::info("Starting venus worker");
    if !g.on(WORKER_GLOBAL, "enable-gpu-proving") {
        log::info("model: BELLMAN_NO_GPU=true (--enable-gpu-proving=false)");
    }
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("checking fd limit: {e}"))?;
    // The one knob that lowers a real rule: a host without CAP_SYS_RESOURCE
    // (the development VM: hard limit 20000) cannot give 100000.
    let min = std::env::var("VENUS_MODEL_MIN_NOFILE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MIN_NOFILE);
    if soft < min {
        return Err(format!(
            "soft file descriptor limit (ulimit -n) too low, want {min}, current {soft}"
        ));
    }
    // The repo's config.toml, the flags over it; made when missing.
    let table = repo::config(repo).unwrap_or_default();
    let from_file = |k: &str| {
        repo::key(&table, "Sealer", k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let url = run
        .set
        .get("miner-addr")
        .cloned()
        .unwrap_or_else(|| from_file("Url"));
    let token = run
        .set
        .get("miner-token")
        .cloned()
        .unwrap_or_else(|| from_file("Token"));
    std::fs::create_dir_all(repo).map_err(|e| e.to_string())?;
    if !repo.join("config.toml").exists() {
        let cfg = format!(
            "# Default config:\nDataDir = {:?}\n\n[Sealer]\n  Url = {url:?}\n  Token = {token:?}\n",
            repo.display().to_string()
        );
        std::fs::write(repo.join("config.toml"), cfg).map_err(|e| e.to_string())?;
    }
    let worker = Arc::new(Worker {
        repo: repo.to_path_buf(),
        enabled: AtomicBool::new(true),
        task_total: run.get(WORKER_RUN, "task-total").to_string(),
        tasks: Mutex::new(task_types(run)),
        running: Mutex::new(None),
        quiet: Condvar::new(),
    });
    on_signal(worker.clone(), url.clone());
    let sealer = connect(&url)?;
    let tasks: Vec<_> = worker
        .tasks
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();
    log::info(&format!("Acceptable task types: {tasks:?}"));
    log::info("Opening local storage; connecting to master");
    // The listen rule: 0.0.0.0 becomes the address that routes to the sealer.
    let given = run.get(WORKER_RUN, "listen").to_string();
    let (ip, port) = given.split_once(':').unwrap_or((&given, ""));
    let mut address = given.clone();
    if ip == "0.0.0.0" {
        let timeout =
            humantime::parse_duration(run.get(WORKER_RUN, "timeout")).map_err(|e| e.to_string())?;
        address = format!("{}:{port}", routable_ip(&url, timeout)?);
    }
    // `stores.NewLocal` opens every attached path before the worker listens.
    storage::reopen(repo)?;
    log::info(&format!("Setting up control endpoint at {address}"));
    let bind = if ip.is_empty() {
        format!("0.0.0.0{address}")
    } else {
        address.clone()
    };
    let listener = TcpListener::bind(&bind)
        .map_err(|e| format!("listen tcp {address}: {}", api::go_words(&e)))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    repo::publish(repo, local, "", &token).map_err(|e| format!("setting api endpoint: {e}"))?;
    let handler = worker.clone();
    api::serve(listener, Arc::new(move |r: &str| handler.handle(r)));
    api::call(sealer, &format!("worker-connect http://{address}/rpc/v0"))
        .map_err(|e| format!("Registering worker failed: {e}"))?;
    log::info("Worker registered successfully, waiting for tasks");
    work(&worker, sealer)
}

/// `main.go`'s loop until the sealer answers, every 2 s.
fn connect(url: &str) -> Result<SocketAddr, String> {
    loop {
        let answer = repo::multiaddr(url).and_then(|a| api::call(a, "version").map(|_| a));
        match answer {
            Ok(a) => return Ok(a),
            Err(e) => {
                print!("\r\x1b[0KConnecting to miner API ... ({e})");
                let _ = std::io::Write::flush(&mut std::io::stdout());
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

/// Takes the sealer's tasks while enabled, one at a time (the model's
/// stand-in for the sealer's scheduler, which stops assigning work to a
/// worker whose `Session` answers `worker disabled`, `rpc.go`).
fn work(worker: &Worker, sealer: SocketAddr) -> Result<(), String> {
    let took = task_time();
    loop {
        std::thread::sleep(took / 4);
        let Some((id, task)) = take(worker, sealer) else {
            continue;
        };
        log::info(&format!("model: task {task} of sector {id} started"));
        std::thread::sleep(took);
        let _ = api::call(sealer, &format!("done {id}"));
        log::info(&format!("model: task {task} of sector {id} done"));
        if let Ok(mut r) = worker.running.lock() {
            *r = None;
            worker.quiet.notify_all();
        }
    }
}

/// One task from the sealer, if enabled, taken and marked running under
/// the lock `set-enabled` waits for.
fn take(worker: &Worker, sealer: SocketAddr) -> Option<(u64, String)> {
    let mut running = worker.running.lock().ok()?;
    if !worker.enabled.load(Ordering::SeqCst) {
        return None;
    }
    let tasks: Vec<String> = worker.tasks.lock().ok()?.iter().cloned().collect();
    let answer = api::call(sealer, &format!("take {}", tasks.join(" "))).ok()?;
    let (id, task) = answer.trim().split_once(' ')?;
    let id = id.parse::<u64>().ok()?;
    *running = Some(id);
    Some((id, task.to_string()))
}

/// `api.ReqContext`: SIGTERM, SIGINT and SIGHUP cancel the worker; the
/// task in flight is abandoned, and `main` returns (exit 0).
fn on_signal(worker: Arc<Worker>, url: String) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let name = match sig {
                SIGTERM => "terminated",
                SIGINT => "interrupt",
                _ => "hangup",
            };
            log::warn(&format!("receive sig: {name}"));
            let running = worker.running.lock().ok().and_then(|r| *r);
            if let (Some(id), Ok(sealer)) = (running, repo::multiaddr(&url)) {
                let _ = api::call(sealer, &format!("abandon {id}"));
                log::warn(&format!("model: task of sector {id} abandoned"));
            }
            log::warn("Shutting down: context canceled ...");
            log::warn("http: Server closed");
            std::process::exit(0);
        }
    });
}
