//! Rules over the config and its plan that are not about TOML: what
//! operators get wrong with venus-sealer and venus-worker.

pub mod listen;
pub mod secrets;
pub mod venus;
