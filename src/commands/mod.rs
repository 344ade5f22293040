//! One module per CLI subcommand. Each takes parsed options, writes its
//! output to stdout (errors to stderr) and returns the process exit code.

pub mod check;
pub mod smt;
pub mod topology;

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

/// Answer for a subcommand whose issue has not landed yet.
pub fn not_yet(command: &str, issue: u32) -> u8 {
    eprintln!("venussup {command}: not yet implemented (tracked in issue #{issue})");
    exit::FAILURE
}
