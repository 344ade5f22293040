//! What the supervisor publishes and every observer reads: the snapshot,
//! host preparation's report, and their renderings for Prometheus and
//! Zabbix.

pub mod metrics;
pub mod prepare;
pub mod smt;
pub mod snapshot;

pub use snapshot::*;
