//! The `venussup` command line: argument parsing and dispatch only.
//! Everything it calls lives in the library; errors map to fixed exit codes
//! (see `venussup::commands::exit`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use venussup::commands;
use venussup::config::values::ByteSize;
use venussup::control::Command as Request;
use venussup::util::fsroot::FsRoot;

/// The static (musl) release build allocates with dlmalloc, not musl's own
/// mallocng: a restart makes some 300 allocations and 200 reallocations
/// before the new child is cloned, and mallocng spends twice glibc's
/// instructions on each and maps and unmaps its groups as they fill and
/// empty (BENCHMARKS.md, "The static release build"). dlmalloc keeps freed
/// memory for reuse instead: more RSS at 1000 services (15.6 against 10.5
/// MiB), less at 10. The glibc build keeps glibc's malloc.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// `--version`: the first line is `-V`'s, which `venussup upgrade` reads
/// off a new binary (`venussup 0.1.0 (handover format 1)`); the second
/// names the git commit it was built from (build.rs).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (handover format 1)\ncommit ",
    env!("VENUSSUP_COMMIT")
);

/// Supervisor for Filecoin sealing hosts: takes SMT siblings offline, runs
/// venus-sealer and venus-worker confined to their cores and GPUs, restarts
/// them, runs the pledge timer and reports status.
#[derive(Debug, Parser)]
#[command(
    name = "venussup",
    version = venussup::runtime::handover::VERSION,
    long_version = LONG_VERSION,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigOpt {
    /// The host's config file.
    #[arg(long, short = 'c', value_name = "FILE", default_value = commands::DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct ClusterOpt {
    /// Check every host of this cluster file, and the rules across hosts,
    /// instead of one host's config.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    cluster: Option<PathBuf>,
    /// With `--cluster`: a folder with `HOST/topology.json` (`venussup
    /// topology --json`) and `HOST/plan.json` (`venussup plan --json`) of
    /// each host, to check each host's plan against its hardware.
    #[arg(long, value_name = "DIR", requires = "cluster")]
    facts: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct FsRootOpt {
    /// Read `sys/` and `proc/` (and keep the state folder) under DIR instead
    /// of `/`: for tests and simulated hosts.
    #[arg(long, value_name = "DIR", default_value = "/")]
    fs_root: PathBuf,
}

impl FsRootOpt {
    fn root(&self) -> FsRoot {
        FsRoot::new(&self.fs_root)
    }
}

#[derive(Debug, Args)]
struct JsonOpt {
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the supervisor: SMT step, then start and keep every service.
    Run {
        #[command(flatten)]
        config: ConfigOpt,
        #[command(flatten)]
        fs_root: FsRootOpt,
        /// Log level or filter (`debug`, `info`, `venussup=debug`); default
        /// from RUST_LOG, else `info`.
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
        /// The state the previous image of this process handed over, in
        /// this memfd (`venussup upgrade`, or a panic, re-executes `run`
        /// in place with it).
        #[arg(long, value_name = "FD", hide = true)]
        handover: Option<i32>,
        /// When the previous image panicked (CLOCK_MONOTONIC ns): a second
        /// panic within a minute gives up.
        #[arg(long, value_name = "NS", hide = true)]
        panicked_at: Option<u64>,
    },
    /// A stand-in for venus-sealer and venus-worker, for the demo and the
    /// tests: listens, logs, reports its CPUs and environment, crashes on
    /// request.
    #[command(hide = true)]
    Standin(commands::standin::Options),
    /// A model of venus-sealer and venus-worker (`venussup model
    /// venus-worker run ...`), faithful to what venussup depends on: for the
    /// examples' end-to-end tests and the demo.
    #[command(hide = true)]
    Model {
        program: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// POST an event's JSON (stdin) to a webhook: run by the daemon for
    /// each `[[host.hook]] url`, in its own process.
    #[command(hide = true)]
    Webhook {
        /// Default: `VENUSSUP_WEBHOOK_URL` (the daemon passes it there, so
        /// a token in it stays off the command line).
        #[arg(long)]
        url: Option<String>,
        /// PEM file of the CA(s) an https server's certificate must chain
        /// to, instead of the Mozilla roots.
        #[arg(long, value_name = "PEM")]
        ca: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 3)]
        tries: u32,
        /// Each try's bound, e.g. "10s".
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        timeout: std::time::Duration,
    },
    /// Validate the config and print the resolved plan for this host; with
    /// `--cluster`, every host of a cluster file and the rules across them.
    Check {
        #[command(flatten)]
        config: ConfigOpt,
        #[command(flatten)]
        cluster: ClusterOpt,
        #[command(flatten)]
        fs_root: FsRootOpt,
        #[command(flatten)]
        json: JsonOpt,
    },
    /// Print one host's config, derived from a cluster file.
    Render {
        /// The cluster file.
        #[arg(long, value_name = "FILE")]
        cluster: PathBuf,
        /// The host, as named in the cluster file (`[hosts.NAME]`);
        /// default: this machine's hostname.
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
    /// Show the running daemon's services and timers (all, or one).
    Status {
        /// One service or timer to show in detail.
        name: Option<String>,
        #[command(flatten)]
        config: ConfigOpt,
        #[command(flatten)]
        json: JsonOpt,
    },
    /// Print a service's (or timer's) log; `-f` follows it across
    /// rotations, as `tail -F` does.
    Logs {
        name: String,
        /// Keep printing what is written (Ctrl-C to stop).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print the last N lines first.
        #[arg(long, short = 'n', value_name = "N", default_value_t = 10)]
        lines: usize,
        #[command(flatten)]
        config: ConfigOpt,
    },
    /// Start a stopped service.
    Start {
        name: String,
        #[command(flatten)]
        config: ConfigOpt,
    },
    /// Stop a service; it stays stopped until started.
    Stop {
        name: String,
        #[command(flatten)]
        config: ConfigOpt,
    },
    /// Stop (draining first, if it drains) and start a service.
    Restart {
        name: String,
        /// Also restart the services that start after it (a sealer's
        /// workers reconnect by themselves; this is for when they do not).
        #[arg(long)]
        with_dependents: bool,
        #[command(flatten)]
        config: ConfigOpt,
    },
    /// Re-read the config and apply what changed.
    Reload {
        #[command(flatten)]
        config: ConfigOpt,
    },
    /// Replace the running daemon's program with a new one in place: same
    /// pid, every service and timer run keeps running. Install the new
    /// binary first; a failed check or exec changes nothing.
    Upgrade {
        /// The new program (default: the file the daemon was started
        /// from, e.g. /usr/local/bin/venussup after `install`).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigOpt,
    },
    /// Show the host's CPU topology: packages, NUMA nodes, L3 groups, cores.
    Topology {
        #[command(flatten)]
        fs_root: FsRootOpt,
        #[command(flatten)]
        json: JsonOpt,
    },
    /// Take SMT sibling CPUs offline, bring them back, or show their state.
    Smt {
        #[arg(value_enum)]
        action: SmtAction,
        /// With `on`: bring back every offline CPU, not only those venussup
        /// took offline.
        #[arg(long)]
        all: bool,
        /// Say what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Config whose state folder records what `off` took offline
        /// (without it: /var/lib/venussup).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        fs_root: FsRootOpt,
        #[command(flatten)]
        json: JsonOpt,
    },
    /// Capacity plan: how many sectors this host can seal at once.
    Plan {
        /// A folder sectors seal in (repeat for several); its free space counts.
        #[arg(long, value_name = "PATH")]
        seal_path: Vec<PathBuf>,
        /// 32GiB or 64GiB (or a test size: 2KiB, 8MiB, 512MiB); default from
        /// the config's [capacity], else 32GiB.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        sector_size: Option<ByteSize>,
        /// Config to take seal paths and figures from, and to check.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        fs_root: FsRootOpt,
        #[command(flatten)]
        json: JsonOpt,
    },
    /// Print the daemon's metrics in Prometheus text format.
    Metrics {
        #[command(flatten)]
        config: ConfigOpt,
    },
    /// A value for the Zabbix agent (see units/zabbix_agentd.d/venussup.conf):
    /// `ping`, `discovery`, `timer-discovery`, `state|up|restarts|uptime|last-exit-code NAME`,
    /// `timer-last|timer-failures NAME`. Never an error text for the agent
    /// to store: without the daemon, `ping` is 0, discovery an empty list,
    /// the rest nothing (the exit code says why; stderr only on a terminal).
    Zabbix {
        key: String,
        name: Option<String>,
        #[command(flatten)]
        config: ConfigOpt,
    },
    /// Print the shell completion script for bash or zsh (the README's
    /// install steps put them where each shell looks).
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the manual page (roff), generated from this command line.
    Manpage,
    /// Act on a timer: `timer run NAME` runs it now (the pledge, at once).
    Timer {
        #[arg(value_enum)]
        action: TimerAction,
        name: String,
        #[command(flatten)]
        config: ConfigOpt,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TimerAction {
    /// Run it now (never while a run is going).
    Run,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SmtAction {
    /// Keep one thread per core online, take its siblings offline.
    Off,
    /// Bring back the CPUs venussup took offline.
    On,
    /// Show cores, threads per core and offline siblings.
    Status,
}

fn parse_size(s: &str) -> Result<ByteSize, String> {
    ByteSize::parse(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(dispatch(cli))
}

/// Completions and the manual page, generated from [`Cli`] itself.
fn generated(what: &Command) -> Option<Vec<u8>> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    match what {
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
            };
            clap_complete::generate(shell, &mut cmd, "venussup", &mut out);
        }
        Command::Manpage => {
            if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
                eprintln!("venussup: failed to render the manual page: {e}");
                return None;
            }
        }
        _ => return None,
    }
    Some(out)
}

fn dispatch(cli: Cli) -> u8 {
    if matches!(cli.command, Command::Completions { .. } | Command::Manpage) {
        return match generated(&cli.command) {
            Some(out) => match commands::print_stdout(&String::from_utf8_lossy(&out)) {
                Ok(()) => commands::exit::OK,
                Err(e) => {
                    eprintln!("venussup: {e}");
                    commands::exit::FAILURE
                }
            },
            None => commands::exit::FAILURE,
        };
    }
    match cli.command {
        Command::Completions { .. } | Command::Manpage => unreachable!("answered above"),
        Command::Check {
            cluster:
                ClusterOpt {
                    cluster: Some(cluster),
                    facts,
                },
            ..
        } => commands::cluster::check(&cluster, facts.as_deref()),
        Command::Check {
            config,
            fs_root,
            json,
            ..
        } => commands::check::run(&config.config, &fs_root.root(), json.json),
        Command::Render { cluster, host } => commands::cluster::render(&cluster, host),
        Command::Topology { fs_root, json } => commands::topology::run(&fs_root.root(), json.json),
        Command::Smt {
            action,
            all,
            dry_run,
            config,
            fs_root,
            json,
        } => commands::smt::run(&commands::smt::Options {
            action: match action {
                SmtAction::Off => commands::smt::Action::Off,
                SmtAction::On => commands::smt::Action::On,
                SmtAction::Status => commands::smt::Action::Status,
            },
            all,
            dry_run,
            config: config.as_deref(),
            fs_root: fs_root.root(),
            json: json.json,
        }),
        Command::Run {
            config,
            fs_root,
            log_level,
            handover,
            panicked_at,
        } => venussup::runtime::run(
            &venussup::runtime::RunArgs {
                config: config.config,
                fs_root: fs_root.root(),
                log_level,
            },
            venussup::runtime::Handed {
                handover,
                panicked_at,
            },
        ),
        Command::Standin(opts) => commands::standin::run(&opts),
        Command::Model { program, args } => commands::model::run(&program, &args),
        Command::Webhook {
            url,
            ca,
            tries,
            timeout,
        } => venussup::runtime::hooks::webhook_main(url, ca.as_deref(), tries, timeout),
        Command::Status { name, config, json } => {
            commands::requests::status(&config.config, name, json.json)
        }
        Command::Logs {
            name,
            follow,
            lines,
            config,
        } => commands::logs::run(&commands::logs::Options {
            config: config.config,
            name,
            lines,
            follow,
        }),
        Command::Start { name, config } => {
            commands::requests::simple(&config.config, Request::Start { name })
        }
        Command::Stop { name, config } => {
            commands::requests::simple(&config.config, Request::Stop { name })
        }
        Command::Restart {
            name,
            with_dependents,
            config,
        } => commands::requests::simple(
            &config.config,
            Request::Restart {
                name,
                with_dependents,
            },
        ),
        Command::Reload { config } => commands::requests::simple(&config.config, Request::Reload),
        Command::Upgrade { binary, config } => commands::requests::upgrade(&config.config, binary),
        Command::Timer {
            action: TimerAction::Run,
            name,
            config,
        } => commands::requests::simple(&config.config, Request::TimerRun { name }),
        Command::Plan {
            seal_path,
            sector_size,
            config,
            fs_root,
            json,
        } => commands::capacity::run(&commands::capacity::Options {
            config: config.as_deref(),
            fs_root: fs_root.root(),
            seal_paths: seal_path,
            sector_size,
            json: json.json,
        }),
        Command::Metrics { config } => commands::requests::metrics(&config.config),
        Command::Zabbix { key, name, config } => {
            commands::zabbix::run(&config.config, &key, name.as_deref())
        }
    }
}
