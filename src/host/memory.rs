//! Host facts beyond the CPU topology: total memory (`/proc/meminfo` under
//! the fs root) and the free space of a folder (statvfs).

use std::path::{Path, PathBuf};

use crate::util::fsroot::FsRoot;

#[derive(Debug, thiserror::Error)]
pub enum HostInfoError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no `MemTotal: N kB` line")]
    NoMemTotal { path: PathBuf },
    #[error("failed to get the free space of {path} (statvfs): {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// `MemTotal` in bytes, from the `meminfo` text.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let mut words = rest.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => n.checked_mul(1024),
            None => Some(n),
            Some(_) => None,
        }
    })
}

/// Total memory of the host under `fs_root`, in bytes.
pub fn mem_total(fs_root: &FsRoot) -> Result<u64, HostInfoError> {
    let path = fs_root.path("/proc/meminfo");
    let text = std::fs::read_to_string(&path).map_err(|source| HostInfoError::Read {
        path: path.clone(),
        source,
    })?;
    parse_mem_total(&text).ok_or(HostInfoError::NoMemTotal { path })
}

/// Bytes an unprivileged writer can still put in the filesystem of `path`.
pub fn free_space(path: &Path) -> Result<u64, HostInfoError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|source| HostInfoError::Statvfs {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_in_bytes() {
        let text = "MemTotal:       1073741824 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_mem_total(text), Some(1 << 40));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn free_space_of_a_real_folder_and_a_missing_one() {
        assert!(free_space(Path::new("/")).unwrap() > 0);
        assert!(matches!(
            free_space(Path::new("/nonexistent/seal")),
            Err(HostInfoError::Statvfs { .. })
        ));
    }
}
