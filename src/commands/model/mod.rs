//! `venussup model venus-sealer|venus-worker ARGS...`: a model of the two
//! Venus programs that behaves like them in every way venussup depends on,
//! read from their sources (venus-sealer v1.6.0-3, f932dd3; each behaviour
//! is cited in docs/venus.md): the command lines and their errors (global
//! flags only before the subcommand), venus-worker's listen rule and when
//! it really listens, `set --enabled=false`, `tasks enable|disable`,
//! `wait-quiet`, `storage attach`, the exit codes (venus-worker exits 0
//! after any error, venus-sealer 1), the sealer's `config.toml`,
//! `sectors pledge` with `MaxSealingSectors` (0 = no limit) and
//! `sectors list`'s table. Tests and the demo install a two-line script
//! named `venus-worker` or `venus-sealer` that execs it.
//!
//! What it leaves out: the chain and the full node, proofs, the JSON-RPC
//! wire format (the model's programs talk one line at a time, see `api`),
//! and the sealing pipeline before PreCommit1 (a pledged sector waits for
//! PreCommit1 at once). `VENUS_MODEL_TASK_MS` (default 2000) is how long a
//! modelled task takes; `VENUS_MODEL_MIN_NOFILE` lowers venus-worker's
//! 100000 descriptors for hosts that cannot raise the hard limit.

mod api;
mod log;
mod repo;
mod sealer;
mod sectors;
mod storage;
mod worker;

use crate::util::gocli::{self, Flag, Parsed};

/// A command's flags; urfave/cli v2.3.0 prints a flag error with the
/// command's help (`command.go`, `Run`: `Incorrect Usage: ERR`) and
/// returns it.
fn flags(args: &[String], spec: &[Flag]) -> Result<Parsed, String> {
    gocli::parse(args, spec).inspect_err(|e| println!("Incorrect Usage: {e}\n"))
}

/// The app's (global) flags: `Incorrect Usage. ERR` (`app.go`, `RunContext`).
fn app_flags(args: &[String], spec: &[Flag]) -> Result<Parsed, String> {
    gocli::parse(args, spec).inspect_err(|e| println!("Incorrect Usage. {e}\n"))
}

/// An unknown command: urfave/cli's help answers `No help topic for 'X'`
/// as an exit error of code 3, and `HandleExitCoder` exits inside
/// `app.Run` (`help.go` `ShowCommandHelp`, `errors.go`), before the
/// program's own `main` sees an error.
fn no_help_topic(name: &str) -> ! {
    eprintln!("No help topic for '{name}'");
    std::process::exit(3)
}

/// Runs the model of `program` with `args` (what follows the program's
/// name); returns its exit code.
pub fn run(program: &str, args: &[String]) -> u8 {
    match program {
        "venus-worker" => worker::main(args),
        "venus-sealer" => sealer::main(args),
        other => {
            eprintln!("venussup model: `{other}` is not modelled (venus-worker, venus-sealer)");
            crate::util::exit::USAGE
        }
    }
}
