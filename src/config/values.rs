//! Value types of the config file that are written as strings: durations,
//! sizes, signals, CPU and GPU requests, umask. Each parses with a message
//! that says what would be valid; serde reports it at the value's place.

use std::fmt;
use std::path::PathBuf;

use nix::sys::signal::Signal;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::util::cpulist::CpuSet;
use crate::util::units::from_str_with;
pub use crate::util::units::{ByteSize, HumanDuration, Limit};

/// A signal by name: `"SIGTERM"` or `"TERM"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalName(pub Signal);

impl SignalName {
    fn parse(s: &str) -> Result<Self, String> {
        let upper = s.trim().to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        full.parse::<Signal>().map(Self).map_err(|_| {
            format!("`{s}` is not a signal name; write e.g. \"SIGTERM\", \"SIGINT\" or \"SIGQUIT\"")
        })
    }
}

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a signal name such as \"SIGTERM\"", Self::parse)
    }
}

impl Serialize for SignalName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// Which CPUs a service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuSpec {
    /// A share of the usable CPUs, in percent (1 to 100), whole cores.
    Share(u8),
    /// Exactly these CPUs.
    List(CpuSet),
    /// The usable CPUs no other service was given.
    Rest,
    /// Every usable CPU, shared with everyone (no confinement).
    All,
}

impl CpuSpec {
    fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t {
            "rest" => return Ok(Self::Rest),
            "all" => return Ok(Self::All),
            _ => {}
        }
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(n @ 1..=100) => Ok(Self::Share(n)),
                _ => Err(format!(
                    "`{s}` is not a CPU share; a share is a whole percentage from \"1%\" to \"100%\""
                )),
            };
        }
        match CpuSet::parse_list(t) {
            Ok(set) if !set.is_empty() => Ok(Self::List(set)),
            Ok(_) => Err("an empty CPU list gives a service nothing to run on".to_string()),
            Err(e) => Err(format!(
                "`{s}` is neither a share (\"75%\"), \"rest\", \"all\" nor a CPU list: {e}"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for CpuSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(
            d,
            "\"75%\", \"rest\", \"all\" or a CPU list such as \"0-31,64-95\"",
            Self::parse,
        )
    }
}

impl fmt::Display for CpuSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuSpec::Share(p) => write!(f, "{p}%"),
            CpuSpec::List(set) => write!(f, "{set}"),
            CpuSpec::Rest => f.write_str("rest"),
            CpuSpec::All => f.write_str("all"),
        }
    }
}

/// Which GPUs a service asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GpuSpec {
    /// No GPU: `CUDA_VISIBLE_DEVICES=` and `BELLMAN_NO_GPU=1`.
    None,
    /// Handed out by the service's tasks: WindowPoSt/WinningPoSt, then C2,
    /// then PreCommit2; a service without GPU tasks gets none.
    #[default]
    Auto,
    /// These GPUs: indices in PCI bus order, or UUIDs.
    List(Vec<GpuRef>),
}

/// One GPU as a config names it: its index in PCI bus order (`0`), or its
/// UUID (`"GPU-8e5c..."`, stable when the PCI bus is renumbered).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GpuRef {
    Index(u32),
    Uuid(String),
}

impl<'de> Deserialize<'de> for GpuRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GpuRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a GPU index such as 0 or a GPU UUID such as \"GPU-8e5c...\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GpuRef, E> {
                u32::try_from(v)
                    .map(GpuRef::Index)
                    .map_err(|_| E::custom(format!("`{v}` is not a GPU index")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GpuRef, E> {
                crate::util::gpuid::normalize_uuid(v).map(GpuRef::Uuid).ok_or_else(|| {
                    E::custom(format!(
                        "`{v}` is not a GPU UUID; write e.g. \"GPU-8e5c1f2a-0b3c-4d5e-8f90-a1b2c3d4e5f6\" (`nvidia-smi -L`, or `GPU UUID` in /proc/driver/nvidia/gpus/*/information)"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for GpuRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuRef::Index(i) => write!(f, "{i}"),
            GpuRef::Uuid(u) => f.write_str(u),
        }
    }
}

impl<'de> Deserialize<'de> for GpuSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GpuSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"none\", \"auto\" or a list of GPU indices or UUIDs such as [0, 1]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GpuSpec, E> {
                match v {
                    "none" => Ok(GpuSpec::None),
                    "auto" => Ok(GpuSpec::Auto),
                    _ => Err(E::custom(format!(
                        "`{v}` is not a GPU request; write \"none\", \"auto\" or a list of indices or UUIDs such as [0]"
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GpuSpec, A::Error> {
                let mut list = Vec::new();
                while let Some(gpu) = seq.next_element::<GpuRef>()? {
                    if list.contains(&gpu) {
                        return Err(de::Error::custom(format!("GPU {gpu} is listed twice")));
                    }
                    list.push(gpu);
                }
                Ok(GpuSpec::List(list))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for GpuSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuSpec::None => f.write_str("none"),
            GpuSpec::Auto => f.write_str("auto"),
            GpuSpec::List(v) => {
                let list: Vec<String> = v
                    .iter()
                    .map(|g| match g {
                        GpuRef::Index(i) => i.to_string(),
                        GpuRef::Uuid(u) => format!("{u:?}"),
                    })
                    .collect();
                write!(f, "[{}]", list.join(", "))
            }
        }
    }
}

/// A file mode creation mask, written in octal: `"0022"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Umask(pub u32);

impl Umask {
    fn parse(s: &str) -> Result<Self, String> {
        match u32::from_str_radix(s.trim(), 8) {
            Ok(m) if m <= 0o777 => Ok(Self(m)),
            _ => Err(format!(
                "`{s}` is not a umask; write an octal mode from \"0000\" to \"0777\", e.g. \"0022\""
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an octal umask such as \"0022\"", Self::parse)
    }
}

impl fmt::Display for Umask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Umask {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A path that is not empty: `state_dir = ""` would put the lock and the
/// socket in whatever folder venussup was started from.
pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let p = PathBuf::deserialize(d)?;
    if p.as_os_str().is_empty() {
        return Err(de::Error::custom(
            "an empty path names no file or folder; write the path, or leave the key out",
        ));
    }
    Ok(p)
}

/// An optional [`path`].
pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    path(d).map(Some)
}

/// A list of [`path`]s.
pub fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    let list = Vec::<PathBuf>::deserialize(d)?;
    if list.iter().any(|p| p.as_os_str().is_empty()) {
        return Err(de::Error::custom("the list has an empty path"));
    }
    Ok(list)
}

/// The size a log is rotated at: at least 1MiB, or the rotation (a copy
/// and a truncation) would run for every few lines written.
pub fn log_size<'de, D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
    let size = ByteSize::deserialize(d)?;
    if size < ByteSize::mib(1) {
        return Err(de::Error::custom(format!(
            "a log `max_size` of {size} would rotate every few lines; it is at least \"1MiB\""
        )));
    }
    Ok(size)
}

/// A count bounded at both ends (`what` names the key in the error):
/// `log.keep` (each rotation renames every kept file) and a hook's
/// `tries` (each one bounded by the hook's timeout) must stay small.
fn bounded<'de, D: Deserializer<'de>, N>(d: D, what: &str, min: N, max: N) -> Result<N, D::Error>
where
    N: Deserialize<'de> + PartialOrd + Copy + fmt::Display,
{
    let n = N::deserialize(d)?;
    if !(min..=max).contains(&n) {
        return Err(de::Error::custom(format!(
            "`{what} = {n}`: it is between {min} and {max}"
        )));
    }
    Ok(n)
}

/// `[host.log] keep`: 0 to 1000 rotated files.
pub fn log_keep<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, "keep", 0, 1000)
}

/// A hook's `tries`: 1 to 100.
pub fn hook_tries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, "tries", 1, 100)
}

/// The most sectors a `[capacity]` count may name (`reserve`,
/// `other_hosts`): far beyond any sealer, and small enough that no sum of
/// sectors and sizes in the plan can overflow.
pub const MAX_SECTORS: u64 = 100_000;

/// `[capacity] reserve`: 0 to [`MAX_SECTORS`].
pub fn reserve<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, "reserve", 0, MAX_SECTORS)
}

/// `[capacity] other_hosts`: 0 to [`MAX_SECTORS`].
pub fn other_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, "other_hosts", 0, MAX_SECTORS)
}

/// A `[capacity]` figure (`shared_cache`, `per_sector_memory`,
/// `per_sector_disk`, `window_post_memory`): not 0, which would make
/// sectors or WindowPoSt cost nothing and the plan count without end.
pub fn figure<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    let size = ByteSize::deserialize(d)?;
    if size.0 == 0 {
        return Err(de::Error::custom(
            "a [capacity] figure of 0B makes what it measures cost nothing, and the plan would count sectors without end; give the real figure (e.g. \"64GiB\") or leave it out for the sector size's default",
        ));
    }
    Ok(Some(size))
}

/// A cgroup memory limit: at least 1MiB (below that the kernel's OOM
/// killer takes the service at its first page).
pub fn memory_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    let size = ByteSize::deserialize(d)?;
    if size < ByteSize::mib(1) {
        return Err(de::Error::custom(format!(
            "a `memory_max` of {size} leaves the service no memory to start in; it is at least \"1MiB\""
        )));
    }
    Ok(Some(size))
}

/// Serializes any `Display` value as its string (CPU and GPU requests).
pub fn serialize_display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_with_or_without_prefix() {
        assert_eq!(SignalName::parse("SIGTERM").unwrap().0, Signal::SIGTERM);
        assert_eq!(SignalName::parse("int").unwrap().0, Signal::SIGINT);
        assert!(SignalName::parse("SIGNOPE").is_err());
    }

    #[test]
    fn cpu_requests() {
        assert_eq!(CpuSpec::parse("75%").unwrap(), CpuSpec::Share(75));
        assert_eq!(CpuSpec::parse("rest").unwrap(), CpuSpec::Rest);
        assert_eq!(CpuSpec::parse("all").unwrap(), CpuSpec::All);
        assert_eq!(
            CpuSpec::parse("0-1,4").unwrap(),
            CpuSpec::List(CpuSet::parse_list("0-1,4").unwrap())
        );
        assert!(CpuSpec::parse("0%").is_err());
        assert!(CpuSpec::parse("101%").is_err());
        assert!(CpuSpec::parse("half").is_err());
        assert!(CpuSpec::parse("").is_err());
    }

    #[test]
    fn umask_is_octal() {
        assert_eq!(Umask::parse("0022").unwrap().0, 0o22);
        assert_eq!(Umask(0o27).to_string(), "0027");
        assert!(Umask::parse("0999").is_err());
        assert!(Umask::parse("1777").is_err());
    }
}
