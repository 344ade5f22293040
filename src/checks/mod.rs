//! Rules over the config and its plan that are not about TOML: what
//! operators get wrong with venus-sealer and venus-worker.

pub mod capacity;
pub mod gpus;
pub mod listen;
pub mod sdr;
pub mod secrets;
pub mod storage;
mod tasks;
pub mod venus;
