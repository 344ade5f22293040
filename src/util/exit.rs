//! The exit codes of every subcommand.

/// Done; everything as desired.
pub const OK: u8 = 0;
/// Invalid config, or the command failed (something failed or backs off).
pub const FAILURE: u8 = 1;
/// Bad usage: wrong flags or arguments (clap uses the same code).
pub const USAGE: u8 = 2;
/// The daemon could not be reached.
pub const UNREACHABLE: u8 = 3;
