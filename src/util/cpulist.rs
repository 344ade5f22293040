//! CPU sets as the kernel writes them: lists (`0-3,8,10-11`) and hex masks
//! (`00000000,0000ff0f`, 32-bit words, most significant first).
//!
//! Pure parsing and formatting; no file access.

use std::collections::BTreeSet;
use std::fmt;

/// A set of CPU numbers, always sorted and free of duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<u32>);

/// Why a CPU list or mask could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    #[error("`{item}` is not a CPU number or range (expected e.g. `0-3,8,10-11`)")]
    BadItem { item: String },
    #[error("range `{item}` runs backwards (write the lower number first, e.g. `{hi}-{lo}`)")]
    Backwards { item: String, lo: u32, hi: u32 },
    #[error("`{text}` is not a hex CPU mask (expected 32-bit hex words separated by commas)")]
    BadMask { text: String },
    #[error("`{item}` names CPU {cpu}, beyond {MAX_CPU}, the highest CPU number read")]
    TooLarge { item: String, cpu: u32 },
}

/// The highest CPU number a list or mask may hold. Kernels are built for
/// at most 8192 CPUs (x86's and powerpc's MAXSMP), so a higher number is a
/// mistake; refusing it keeps `0-4294967295` from filling memory.
pub const MAX_CPU: u32 = 65_535;

/// Characters sysfs files may carry around their value: whitespace, and NUL
/// padding in some snapshots.
pub fn trim_sysfs(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the kernel's list format: comma-separated numbers and ranges.
    /// An empty (or all-whitespace) string is the empty set.
    pub fn parse_list(text: &str) -> Result<Self, CpuListError> {
        let mut set = BTreeSet::new();
        let text = trim_sysfs(text);
        if text.is_empty() {
            return Ok(Self(set));
        }
        for raw in text.split(',') {
            let item = raw.trim();
            let bad = || CpuListError::BadItem {
                item: item.to_string(),
            };
            let number = |s: &str| match s.trim().parse::<u32>() {
                Ok(cpu) if cpu > MAX_CPU => Err(CpuListError::TooLarge {
                    item: item.to_string(),
                    cpu,
                }),
                Ok(cpu) => Ok(cpu),
                Err(_) => Err(bad()),
            };
            match item.split_once('-') {
                None => {
                    set.insert(number(item)?);
                }
                Some((lo, hi)) => {
                    let (lo, hi) = (number(lo)?, number(hi)?);
                    if lo > hi {
                        return Err(CpuListError::Backwards {
                            item: item.to_string(),
                            lo,
                            hi,
                        });
                    }
                    set.extend(lo..=hi);
                }
            }
        }
        Ok(Self(set))
    }

    /// Parses the kernel's mask format: hex words of 32 bits separated by
    /// commas, most significant word first (`thread_siblings`, `cpumap`).
    pub fn parse_mask(text: &str) -> Result<Self, CpuListError> {
        let text = trim_sysfs(text);
        let bad = || CpuListError::BadMask {
            text: text.to_string(),
        };
        if text.is_empty() {
            return Err(bad());
        }
        let mut set = BTreeSet::new();
        for (word_index, word) in text.rsplit(',').enumerate() {
            let word = word.trim();
            let hex = word.strip_prefix("0x").unwrap_or(word);
            if hex.is_empty() || hex.len() > 8 {
                return Err(bad());
            }
            let bits = u32::from_str_radix(hex, 16).map_err(|_| bad())?;
            let base = u32::try_from(word_index * 32).map_err(|_| bad())?;
            for bit in (0..32).filter(|bit| bits & (1 << bit) != 0) {
                let cpu = base.checked_add(bit).ok_or_else(bad)?;
                if cpu > MAX_CPU {
                    return Err(CpuListError::TooLarge {
                        item: word.to_string(),
                        cpu,
                    });
                }
                set.insert(cpu);
            }
        }
        Ok(Self(set))
    }

    pub fn insert(&mut self, cpu: u32) -> bool {
        self.0.insert(cpu)
    }

    pub fn remove(&mut self, cpu: u32) -> bool {
        self.0.remove(&cpu)
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The lowest CPU in the set.
    pub fn first(&self) -> Option<u32> {
        self.0.first().copied()
    }

    /// CPUs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        Self(self.0.intersection(&other.0).copied().collect())
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        Self(self.0.difference(&other.0).copied().collect())
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        Self(self.0.union(&other.0).copied().collect())
    }

    /// CPUs as a plain vector, ascending.
    pub fn to_vec(&self) -> Vec<u32> {
        self.iter().collect()
    }

    /// Formats in the kernel's mask format, the inverse of
    /// [`CpuSet::parse_mask`]: at least `min_words` 32-bit words (more if a
    /// CPU needs them), most significant first, each as 8 hex digits.
    pub fn to_mask(&self, min_words: usize) -> String {
        let needed = self.0.last().map_or(0, |&top| top as usize / 32 + 1);
        let mut words = vec![0u32; needed.max(min_words).max(1)];
        for cpu in self.iter() {
            words[cpu as usize / 32] |= 1 << (cpu % 32);
        }
        let hex: Vec<String> = words.iter().rev().map(|w| format!("{w:08x}")).collect();
        hex.join(",")
    }
}

/// Serialized as a JSON array of CPU numbers, ascending (`[0, 8]`).
impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// Reads the JSON array [`Serialize`](serde::Serialize) writes.
impl<'de> serde::Deserialize<'de> for CpuSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<u32>::deserialize(d).map(|v| v.into_iter().collect())
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Extend<u32> for CpuSet {
    fn extend<I: IntoIterator<Item = u32>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Formats in the kernel's compact list format (`0-3,8,10-11`); the empty
/// set is the empty string, as in `/sys/devices/system/cpu/offline`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.iter().peekable();
        while let Some(lo) = iter.next() {
            let mut hi = lo;
            while iter.peek() == Some(&(hi + 1)) {
                hi += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if hi == lo {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<u32> {
        CpuSet::parse_list(s).unwrap().to_vec()
    }

    #[test]
    fn parses_single_numbers_ranges_and_mixes() {
        assert_eq!(list("0"), vec![0]);
        assert_eq!(list("0-3"), vec![0, 1, 2, 3]);
        assert_eq!(list("0,64"), vec![0, 64]);
        assert_eq!(list("0-1,8,10-11"), vec![0, 1, 8, 10, 11]);
    }

    #[test]
    fn tolerates_sysfs_padding_newline_and_nul() {
        assert_eq!(list("0-1\n"), vec![0, 1]);
        assert_eq!(list("2,6\0\0"), vec![2, 6]);
        assert_eq!(list(" \n"), Vec::<u32>::new());
    }

    #[test]
    fn rejects_garbage_and_backward_ranges() {
        assert!(matches!(
            CpuSet::parse_list("0-x"),
            Err(CpuListError::BadItem { .. })
        ));
        assert!(matches!(
            CpuSet::parse_list("1,,2"),
            Err(CpuListError::BadItem { .. })
        ));
        assert!(matches!(
            CpuSet::parse_list("7-3"),
            Err(CpuListError::Backwards { lo: 7, hi: 3, .. })
        ));
    }

    /// Found by fuzzing (`fuzz/`): `0-4294967295`, in a config's `cpus` or
    /// a sysfs file, built a set of four billion CPUs until memory ran out.
    #[test]
    fn refuses_cpu_numbers_no_kernel_has() {
        for text in ["0-4294967295", "4294967295", "65536", "1,70000-70001"] {
            assert!(
                matches!(
                    CpuSet::parse_list(text),
                    Err(CpuListError::TooLarge { cpu, .. }) if cpu > MAX_CPU
                ),
                "{text}"
            );
        }
        assert_eq!(list("65534-65535"), vec![65534, 65535]);
        let top = CpuSet::parse_list("65535").unwrap();
        assert_eq!(CpuSet::parse_mask(&top.to_mask(1)), Ok(top));
        let beyond = format!("1{}", ",00000000".repeat(2048));
        assert!(matches!(
            CpuSet::parse_mask(&beyond),
            Err(CpuListError::TooLarge { cpu: 65536, .. })
        ));
        let err = CpuSet::parse_list("0-4294967295").unwrap_err().to_string();
        assert!(
            err.contains("`0-4294967295`") && err.contains("65535"),
            "{err}"
        );
    }

    #[test]
    fn parses_masks_word_by_word_most_significant_first() {
        assert_eq!(CpuSet::parse_mask("3\n").unwrap().to_vec(), vec![0, 1]);
        assert_eq!(
            CpuSet::parse_mask("00000001,00000100").unwrap().to_vec(),
            vec![8, 32]
        );
        assert_eq!(
            CpuSet::parse_mask("00000000,00000000,0000f00f")
                .unwrap()
                .to_vec(),
            vec![0, 1, 2, 3, 12, 13, 14, 15]
        );
        assert!(CpuSet::parse_mask("00000000").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_masks() {
        assert!(CpuSet::parse_mask("").is_err());
        assert!(CpuSet::parse_mask("zz").is_err());
        assert!(CpuSet::parse_mask("123456789").is_err());
    }

    #[test]
    fn formats_masks_in_32_bit_words_and_round_trips() {
        let set = CpuSet::parse_list("0-1,8,32,63").unwrap();
        assert_eq!(set.to_mask(1), "80000001,00000103");
        assert_eq!(CpuSet::new().to_mask(2), "00000000,00000000");
        assert_eq!(CpuSet::parse_mask(&set.to_mask(3)).unwrap(), set);
    }

    #[test]
    fn serializes_as_a_json_array() {
        let set = CpuSet::parse_list("0,8-9").unwrap();
        assert_eq!(serde_json::to_string(&set).unwrap(), "[0,8,9]");
    }

    #[test]
    fn formats_compactly_and_round_trips() {
        for s in ["", "0", "0-3", "0-1,8,10-11", "1,3,5", "0-63,128-191"] {
            assert_eq!(CpuSet::parse_list(s).unwrap().to_string(), s);
        }
    }
}
