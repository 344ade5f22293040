//! venussup: one supervisor per Filecoin sealing host.
//!
//! The pipeline: config file → [`config::Config`] → resolved against the
//! host → [`plan::Plan`] → run. Each stage is its own module; only the
//! runtime touches the system.

pub mod capacity;
pub mod checks;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod control;
pub mod host;
pub mod plan;
pub mod runtime;
pub mod smt;
pub mod status;
pub mod sys;
pub mod util;
