//! The model of venus-sealer (`app/venus-sealer/{main,run,sectors,
//! storage}.go`, venus-sealer v1.6.0-3). Any error: `ERROR: MSG` on
//! stderr and exit 1 (`RunApp`).

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::sectors::Sectors;
use super::worker::global;
use super::{api, app_flags, flags, log, repo, storage};
use crate::util::gocli::{Flag, Parsed, SEALER_GLOBAL, SEALER_RUN};

/// `sectors list`'s flags (accepted; the model always prints the same
/// columns).
const LIST: &[Flag] = &[
    Flag::switch("show-removed", false),
    Flag::switch("r", false),
    Flag::switch("color", false),
    Flag::switch("c", false),
    Flag::switch("fast", false),
    Flag::switch("f", false),
    Flag::switch("events", false),
    Flag::switch("e", false),
    Flag::switch("initial-pledge", false),
    Flag::switch("p", false),
    Flag::switch("seal-time", false),
    Flag::switch("t", false),
    Flag::value("states", ""),
    Flag::switch("unproven", false),
    Flag::switch("u", false),
];
const NONE: &[Flag] = &[];
/// `[API] ListenAddress` when the config has none (`config/default_config.go`).
const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/2345/http";

pub fn main(args: &[String]) -> u8 {
    match dispatch(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ERROR: {e}\n");
            1
        }
    }
}

fn dispatch(args: &[String]) -> Result<(), String> {
    let g = app_flags(args, SEALER_GLOBAL)?;
    let repo = global(&g, SEALER_GLOBAL, "repo", "VENUS_SEALER_PATH");
    let rest = &g.rest;
    let sub = |n: usize| rest.get(n).map(String::as_str);
    match (sub(0), sub(1)) {
        (Some("run"), _) => run(&repo, &flags(&rest[1..], SEALER_RUN)?),
        (Some("sectors"), Some("pledge")) => {
            flags(&rest[2..], NONE)?;
            let id = api::call(repo::running(&repo)?, "pledge")?;
            // fmt.Println("Created CC sector: ", id.Number)
            println!("Created CC sector:  {}", id.trim());
            Ok(())
        }
        (Some("sectors"), Some("list")) => {
            flags(&rest[2..], LIST)?;
            print!("{}", api::call(repo::running(&repo)?, "list")?);
            Ok(())
        }
        (Some("storage"), Some("attach")) => storage::attach(&repo, &rest[2..]),
        (None | Some("sectors" | "storage"), _) => {
            println!(
                "USAGE:\n   venus-sealer [global options] command [command options] [arguments...]"
            );
            Ok(())
        }
        (Some(other), _) => Err(format!("model: `{other}` is not modelled")),
    }
}

/// What the running sealer answers.
fn handle(repo: &Path, sectors: &Mutex<Sectors>, request: &str) -> Result<String, String> {
    let mut s = sectors.lock().map_err(|e| e.to_string())?;
    let (verb, arg) = request.split_once(' ').unwrap_or((request, ""));
    match verb {
        "version" => Ok(String::new()),
        "pledge" => {
            let id = s.pledge()?;
            log::info(&format!("Creating CC sector {id}"));
            Ok(id.to_string())
        }
        "list" => Ok(s.list()),
        "take" => {
            let tasks: Vec<&str> = arg.split(' ').collect();
            Ok(s.take(&tasks)
                .map_or(String::new(), |(id, task)| format!("{id} {task}")))
        }
        "done" | "abandon" => {
            let id = arg.parse().map_err(|_| format!("model: sector `{arg}`"))?;
            s.finish(id, verb == "done");
            Ok(String::new())
        }
        "worker-connect" => {
            log::info(&format!("model: worker connected: {arg}"));
            Ok(String::new())
        }
        "storage-add-local" => storage::add_local(repo, arg),
        _ => Err(format!("model: unknown request `{verb}`")),
    }
}

/// `venus-sealer run` (`run.go`): the repo's config.toml (required), the
/// repo lock, the API on `[API] ListenAddress` (`--miner-api` replaces its
/// port), then serving until SIGTERM or SIGINT (`shutdown.go`).
fn run(repo: &Path, run: &Parsed) -> Result<(), String> {
    if !run.on(SEALER_RUN, "enable-gpu-proving") {
        log::info("model: BELLMAN_NO_GPU=true (--enable-gpu-proving=false)");
    }
    let table = repo::config(repo)?;
    let _lock = lock(repo)?;
    let listen = repo::key(&table, "API", "ListenAddress")
        .and_then(toml::Value::as_str)
        .unwrap_or(DEFAULT_LISTEN);
    let mut addr = repo::multiaddr(listen)?;
    if let Some(port) = run.set.get("miner-api") {
        addr.set_port(
            port.parse()
                .map_err(|_| format!("model: --miner-api={port}"))?,
        );
    }
    let max = repo::key(&table, "Sealing", "MaxSealingSectors")
        .and_then(toml::Value::as_integer)
        .unwrap_or(0);
    let sectors = Arc::new(Mutex::new(Sectors::new(u64::try_from(max).unwrap_or(0))));
    // `sealer.New` opens every attached path (`stores.NewLocal`).
    storage::reopen(repo).map_err(|e| format!("creating node: {e}"))?;
    repo::publish(&repo::data_dir(repo, &table), addr, "/http", "model-token")
        .map_err(|e| format!("creating node: {e}"))?;
    let listener = TcpListener::bind(addr).map_err(|e| {
        format!(
            "failed to start json-rpc endpoint: could not listen: listen tcp {addr}: {}",
            api::go_words(&e)
        )
    })?;
    log::info(&format!(
        "model: serving the API on {addr} (MaxSealingSectors = {max})"
    ));
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]);
    let repo = repo.to_path_buf();
    api::serve(
        listener,
        Arc::new(move |r: &str| handle(&repo, &sectors, r)),
    );
    if let Some(_sig) = signals.map_err(|e| e.to_string())?.forever().next() {
        log::warn("Graceful shutdown successful");
    }
    Ok(())
}

/// `repo.lock` (`run.go`: zbiljic/go-filelock `New` + `Lock`), held while
/// the sealer runs. On Linux that is an open-file-description write lock
/// taken with `F_OFD_SETLKW` (`filelock_linux.go`): it **waits** for a
/// sealer that holds it, it does not fail; and `New` wants an absolute
/// path.
fn lock(repo: &Path) -> Result<std::fs::File, String> {
    let path = repo.join("repo.lock");
    if !path.is_absolute() {
        return Err("absolute file path must be provided".into());
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("open {}: {}", path.display(), api::go_words(&e)))?;
    let short = |v: libc::c_int| libc::c_short::try_from(v).map_err(|e| e.to_string());
    let whole = libc::flock {
        l_type: short(libc::F_WRLCK)?,
        l_whence: short(libc::SEEK_SET)?,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_SETLKW(&whole))
        .map_err(|e| e.desc().to_string())?;
    Ok(file)
}
