//! rlimits a child can really get. Raising a hard limit needs
//! CAP_SYS_RESOURCE; without it (some containers, this project's own test
//! VM) a child gets at most venussup's own hard limit, and the log says so
//! rather than failing every start.

use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};

use crate::util::units::Limit;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ceilings {
    /// `None`: no ceiling (venussup may raise hard limits).
    pub nofile: Option<u64>,
    pub memlock: Option<u64>,
}

impl Ceilings {
    /// venussup's own hard limits, unless it holds CAP_SYS_RESOURCE.
    pub fn probe() -> Self {
        let can_raise = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_RESOURCE,
        )
        .unwrap_or(false);
        if can_raise {
            return Self::default();
        }
        let hard = |r| {
            getrlimit(r)
                .ok()
                .map(|(_, hard)| hard)
                .filter(|h| *h != RLIM_INFINITY)
        };
        Self {
            nofile: hard(Resource::RLIMIT_NOFILE),
            memlock: hard(Resource::RLIMIT_MEMLOCK),
        }
    }
}

/// The limit a child gets for `wanted` under `ceiling`, and a message when
/// it is less than wanted.
pub fn clamp(what: &str, wanted: Limit, ceiling: Option<u64>) -> (Limit, Option<String>) {
    let Some(max) = ceiling else {
        return (wanted, None);
    };
    let too_high = match wanted {
        Limit::Unlimited => true,
        Limit::Value(v) => v > max,
    };
    if too_high {
        (
            Limit::Value(max),
            Some(format!("{what} {wanted} is above venussup's own hard limit {max} and venussup lacks CAP_SYS_RESOURCE to raise it; the service gets {max} (raise LimitNOFILE/LimitMEMLOCK of venussup itself)")),
        )
    } else {
        (wanted, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_only_above_the_ceiling() {
        assert_eq!(
            clamp("nofile", Limit::Value(10), Some(20)),
            (Limit::Value(10), None)
        );
        let (l, msg) = clamp("nofile", Limit::Value(1_048_576), Some(20_000));
        assert_eq!(l, Limit::Value(20_000));
        assert!(msg.unwrap().contains("CAP_SYS_RESOURCE"));
        assert_eq!(
            clamp("memlock", Limit::Unlimited, Some(8192)).0,
            Limit::Value(8192)
        );
        assert_eq!(
            clamp("memlock", Limit::Unlimited, None),
            (Limit::Unlimited, None)
        );
    }
}
