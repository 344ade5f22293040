//! `instances`: one `[[service]]` that runs as several processes; the
//! expansion itself is `plan::instances`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What a service's `instances` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    Count(u32),
    /// One per GPU of its `gpus` (every GPU of the host for `"auto"`).
    PerGpu,
    /// One per NUMA node of the host.
    PerNuma,
}

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Instances;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of instances, \"per-gpu\" or \"per-numa\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Instances, E> {
                match u32::try_from(v) {
                    Ok(n @ 1..=MAX_INSTANCES) => Ok(Instances::Count(n)),
                    _ => Err(E::custom(format!(
                        "`instances = {v}`: give from 1 to {MAX_INSTANCES}, \"per-gpu\" or \"per-numa\""
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Instances, E> {
                match v {
                    "per-gpu" => Ok(Instances::PerGpu),
                    "per-numa" => Ok(Instances::PerNuma),
                    _ => Err(E::custom(format!(
                        "`{v}` is not an instance count; write a number, \"per-gpu\" or \"per-numa\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Instances::Count(n) => write!(f, "{n}"),
            Instances::PerGpu => f.write_str("per-gpu"),
            Instances::PerNuma => f.write_str("per-numa"),
        }
    }
}

impl Serialize for Instances {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Most instances one service may have (names stay short).
const MAX_INSTANCES: u32 = 256;

/// One copy of a service, as the expansion made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// The service it is a copy of.
    pub of: String,
    pub index: usize,
    pub count: usize,
    pub per: Instances,
    pub gpu: Option<u32>,
    pub numa: Option<u32>,
    pub port: Option<u16>,
}
