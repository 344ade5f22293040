//! Leaf utilities that every layer may use and that use nothing of the
//! crate: CPU lists, diagnostics, the filesystem root, env files, the mount
//! table, names, GPU ids, exit codes.

pub mod clock;
pub mod cpulist;
pub mod diag;
pub mod envfile;
pub mod exit;
pub mod fsroot;
pub mod gocli;
pub mod gpuid;
pub mod mountinfo;
pub mod names;
pub mod units;
pub mod url;
