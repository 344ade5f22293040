//! One module per CLI subcommand. Each takes parsed options, writes its
//! output to stdout (errors to stderr) and returns the process exit code.

pub mod check;
pub mod control;
pub mod plan;
pub mod smt;
pub mod standin;
pub mod topology;
pub mod zabbix;

use std::io::{self, Write as _};
use std::path::Path;

use crate::config::{self, Config};
use crate::diag::Severity;

/// Where the host's config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/venussup/venussup.toml";

/// The exit codes of every subcommand.
pub mod exit {
    /// Done; everything as desired.
    pub const OK: u8 = 0;
    /// Invalid config, or the command failed (something failed or backs off).
    pub const FAILURE: u8 = 1;
    /// Bad usage: wrong flags or arguments (clap uses the same code).
    pub const USAGE: u8 = 2;
    /// The daemon could not be reached.
    pub const UNREACHABLE: u8 = 3;
}

/// Writes to stdout. A reader that stopped reading (`| head`) is no error:
/// there is nobody left to tell.
pub fn print_stdout(text: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(format!("failed to write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

/// Loads the config at `path` for a command that needs it valid: the
/// diagnostics, one per line, when it is not.
pub fn load_valid_config(path: &Path) -> Result<Config, String> {
    let (config, diags) = config::load(path);
    let errors: Vec<String> = diags
        .into_sorted()
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    match config {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(format!(
            "{}\nthe config is invalid; `venussup check` shows everything",
            errors.join("\n")
        )),
    }
}
