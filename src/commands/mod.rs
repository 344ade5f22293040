//! One module per CLI subcommand. Each takes parsed options, writes its
//! output to stdout (errors to stderr) and returns the process exit code.

pub mod capacity;
pub mod check;
pub mod cluster;
pub mod logs;
pub mod model;
pub mod requests;
pub mod smt;
pub mod standin;
pub mod topology;
pub mod zabbix;

use std::io::{self, Write as _};

/// Where the host's config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/venussup/venussup.toml";

pub use crate::util::exit;

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
