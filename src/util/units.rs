//! Durations, sizes and rlimits written for people (`"90s"`, `"512GiB"`,
//! `"unlimited"`), and the
//! serde helper that parses a string value through a function whose error
//! message becomes the config error.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Deserializes a value written as a string through `parse`, whose error
/// message becomes the config error.
pub fn from_str_with<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct StrVisitor<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for StrVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(StrVisitor { expecting, parse })
}

/// A duration written for people: `"90s"`, `"5min"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// The shortest duration other than zero: below it a timer or a probe
    /// would spin.
    pub const MIN: Duration = Duration::from_millis(1);
    /// The longest: 100 years (of 365.25 days, as `humantime` counts them),
    /// far below where a deadline `now + d` overflows.
    pub const MAX: Duration = Duration::from_secs(100 * 31_557_600);

    fn parse(s: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(s.trim()).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => {
                format!("`{s}` is longer than 100 years, the longest duration venussup takes")
            }
            e => {
                format!("`{s}` is not a duration ({e}); write e.g. \"90s\", \"5min\" or \"1h 30m\"")
            }
        })?;
        Self::bounded(d)
            .map(Self)
            .map_err(|why| format!("`{s}` is {why}"))
    }

    /// `d` if it is zero or within [`Self::MIN`]..=[`Self::MAX`]; what is
    /// wrong with it otherwise.
    pub fn bounded(d: Duration) -> Result<Duration, &'static str> {
        if d > Self::MAX {
            Err("longer than 100 years, the longest duration venussup takes")
        } else if !d.is_zero() && d < Self::MIN {
            Err("shorter than 1ms, the shortest duration venussup takes (write \"0s\" for none)")
        } else {
            Ok(d)
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a duration such as \"90s\" or \"5min\"", Self::parse)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size in bytes: `"512GiB"`, `"100M"` (K, M, G, T and KiB.. are powers
/// of 1024, as in cgroup files and systemd; KB, MB, GB, TB powers of 1000),
/// or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let unit = unit.trim();
        let bad = || {
            format!("`{s}` is not a size; write e.g. \"512GiB\", \"100MiB\" or a number of bytes")
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let factor: u64 = match unit {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        n.checked_mul(factor)
            .map(Self)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512GiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Exact sizes in the largest unit that divides them (`512GiB`), others in
/// the largest unit they reach, to one decimal (`23.5GiB`).
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (name, shift) in UNITS {
            let unit = 1u64 << shift;
            if self.0 >= unit {
                if self.0 % unit == 0 {
                    return write!(f, "{}{name}", self.0 >> shift);
                }
                // Tenths of the unit, rounded; u128 cannot overflow here.
                let tenths = (u128::from(self.0) * 10 + u128::from(unit) / 2) / u128::from(unit);
                return write!(f, "{}.{}{name}", tenths / 10, tenths % 10);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// An rlimit value: a number or `"unlimited"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Value(u64),
    Unlimited,
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or \"unlimited\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Limit, E> {
                u64::try_from(v)
                    .map(Limit::Value)
                    .map_err(|_| E::custom("a limit cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Limit, E> {
                match v {
                    "unlimited" | "infinity" => Ok(Limit::Unlimited),
                    _ => Err(E::custom(format!(
                        "`{v}` is not a limit; write a number or \"unlimited\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Value(v) => s.serialize_u64(*v),
            Limit::Unlimited => s.serialize_str("unlimited"),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Value(v) => write!(f, "{v}"),
            Limit::Unlimited => f.write_str("unlimited"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_human() {
        assert_eq!(
            HumanDuration::parse("90s").unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            HumanDuration::parse("5min").unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            HumanDuration::parse("1h 30m").unwrap().0,
            Duration::from_secs(5400)
        );
        assert!(HumanDuration::parse("5 minutes please").is_err());
        assert!(HumanDuration::parse("90").is_err());
    }

    #[test]
    fn durations_are_bounded_from_1ms_to_100_years() {
        assert_eq!(HumanDuration::parse("100y").unwrap().0, HumanDuration::MAX);
        assert_eq!(HumanDuration::parse("1ms").unwrap().0, HumanDuration::MIN);
        assert_eq!(HumanDuration::parse("0s").unwrap().0, Duration::ZERO);
        for (long, short) in [("100y 1s", "1ns"), ("584542046090y", "999us")] {
            let e = HumanDuration::parse(long).unwrap_err();
            assert!(e.contains("longer than 100 years"), "{long}: {e}");
            let e = HumanDuration::parse(short).unwrap_err();
            assert!(e.contains("shorter than 1ms"), "{short}: {e}");
        }
        let e = HumanDuration::parse("99999999999999999999999s").unwrap_err();
        assert!(e.contains("longer than 100 years"), "{e}");
    }

    #[test]
    fn sizes_use_binary_short_units_like_cgroups() {
        assert_eq!(ByteSize::parse("512GiB").unwrap().0, 512 << 30);
        assert_eq!(ByteSize::parse("512G").unwrap().0, 512 << 30);
        assert_eq!(ByteSize::parse("1GB").unwrap().0, 1_000_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("99999999999T").is_err());
        assert_eq!(ByteSize(512 << 30).to_string(), "512GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(ByteSize(24_684_100 << 10).to_string(), "23.5GiB");
        assert_eq!(ByteSize(3 << 39).to_string(), "1.5TiB");
    }
}
