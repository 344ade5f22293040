//! The only place `smt` writes: a CPU's `online` file (the privileged
//! boundary, behind the [`Hotplug`] trait) and the state record. Every
//! failure carries the path it concerns.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::host::topology::read::CPU_DIR;
use crate::host::topology::TopologyError;
use crate::util::cpulist::{trim_sysfs, CpuSet};
use crate::util::fsroot::FsRoot;

/// Why a step of `smt` failed.
#[derive(Debug, thiserror::Error)]
pub enum SmtError {
    #[error("failed to read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write `{value}` to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to create the folder {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to confirm {}: it reads `{found}` after writing `{wrote}`", path.display())]
    NotApplied {
        path: PathBuf,
        wrote: String,
        found: String,
    },
    #[error("failed to parse {}: {cause}", path.display())]
    Parse { path: PathBuf, cause: String },
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

impl SmtError {
    /// Whether this write failed because this system may not write there at
    /// all (a read-only mount, a container), rather than for one CPU.
    pub fn is_not_writable(&self) -> bool {
        matches!(self, SmtError::Write { source, .. }
            if matches!(source.kind(), io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied))
    }
}

/// Writes `value` to the sysfs attribute `path`, which must exist already
/// (in a simulated tree, a missing one must fail as it would on a real
/// host, not appear).
fn write(path: &Path, value: &str) -> Result<(), SmtError> {
    let failed = |source| SmtError::Write {
        path: path.to_path_buf(),
        value: value.trim_end().to_string(),
        source,
    };
    let mut file: File = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(failed)?;
    file.write_all(value.as_bytes()).map_err(failed)
}

fn read_trimmed(path: &Path) -> Result<String, SmtError> {
    let bytes = fs::read(path).map_err(|source| SmtError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(trim_sysfs(&String::from_utf8_lossy(&bytes)).to_string())
}

/// Sets CPUs online or offline: the one privileged operation of `smt`.
pub trait Hotplug {
    /// Switches `cpu` and confirms the kernel applied it.
    fn set_online(&mut self, cpu: u32, online: bool) -> Result<(), SmtError>;
}

/// [`Hotplug`] through `<fs-root>/sys/devices/system/cpu/cpuN/online`.
#[derive(Debug, Clone)]
pub struct SysfsHotplug {
    cpu_dir: PathBuf,
}

impl SysfsHotplug {
    pub fn new(fs_root: &FsRoot) -> Self {
        Self {
            cpu_dir: fs_root.path(CPU_DIR),
        }
    }
}

impl Hotplug for SysfsHotplug {
    /// Writes `0` or `1`, then reads the file back: the kernel does the
    /// switch before the write returns, so the file must say it already.
    fn set_online(&mut self, cpu: u32, online: bool) -> Result<(), SmtError> {
        let path = self.cpu_dir.join(format!("cpu{cpu}/online"));
        let value = if online { "1" } else { "0" };
        write(&path, value)?;
        let found = read_trimmed(&path)?;
        if found == value {
            Ok(())
        } else {
            Err(SmtError::NotApplied {
                path,
                wrote: value.to_string(),
                found,
            })
        }
    }
}

/// The file in the state folder naming the CPUs `smt off` took offline.
pub const RECORD_FILE: &str = "smt-offline.json";

/// What the record file holds: `{"offlined": [8, 9]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    offlined: Vec<u32>,
}

/// `<state>/smt-offline.json`: which CPUs venussup took offline, so that
/// `smt on` brings back exactly those.
#[derive(Debug, Clone)]
pub struct Record {
    path: PathBuf,
}

impl Record {
    /// The record in the host's state folder `state_dir` (a host path).
    pub fn new(fs_root: &FsRoot, state_dir: &Path) -> Self {
        Self {
            path: fs_root.path(state_dir).join(RECORD_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded CPUs; none if there is no record yet.
    pub fn load(&self) -> Result<CpuSet, SmtError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CpuSet::new()),
            Err(source) => {
                return Err(SmtError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let record: RecordFile = serde_json::from_str(&text).map_err(|e| SmtError::Parse {
            path: self.path.clone(),
            cause: e.to_string(),
        })?;
        Ok(record.offlined.into_iter().collect())
    }

    /// Replaces the record atomically (a temporary file, synced, then a
    /// rename in the folder, never through a link: `sys::safefs`), so a
    /// crash leaves the old record or the new one, never half of one.
    pub fn save(&self, cpus: &CpuSet) -> Result<(), SmtError> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(|source| SmtError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let text = format!("{}\n", serde_json::json!({ "offlined": cpus }));
        crate::sys::safefs::write_atomic(&self.path, text.as_bytes(), 0o600).map_err(|source| {
            SmtError::Write {
                path: self.path.clone(),
                value: text.trim_end().to_string(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let record = Record::new(&FsRoot::new(dir.path()), Path::new("/var/lib/venussup"));
        assert_eq!(record.load().unwrap(), CpuSet::new());
        let cpus = CpuSet::parse_list("8-15").unwrap();
        record.save(&cpus).unwrap();
        assert_eq!(record.load().unwrap(), cpus);
        assert_eq!(
            record.path(),
            dir.path().join("var/lib/venussup/smt-offline.json")
        );
        assert!(!record.path().with_extension("json.tmp").exists());
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let record = Record::new(&FsRoot::new(dir.path()), Path::new("/state"));
        fs::create_dir_all(dir.path().join("state")).unwrap();
        fs::write(record.path(), "{\"offlined\": \"8\"}").unwrap();
        let err = record.load().unwrap_err().to_string();
        assert!(err.starts_with("failed to parse "), "{err}");
        assert!(err.contains("smt-offline.json"), "{err}");
    }

    #[test]
    fn hotplug_writes_an_existing_file_only_and_confirms() {
        let dir = tempfile::tempdir().unwrap();
        let fs_root = FsRoot::new(dir.path());
        let cpu1 = fs_root.path("/sys/devices/system/cpu/cpu1");
        fs::create_dir_all(&cpu1).unwrap();
        fs::write(cpu1.join("online"), "1\n").unwrap();
        let mut hotplug = SysfsHotplug::new(&fs_root);
        hotplug.set_online(1, false).unwrap();
        assert_eq!(fs::read_to_string(cpu1.join("online")).unwrap(), "0");
        let err = hotplug.set_online(2, false).unwrap_err();
        assert!(matches!(err, SmtError::Write { .. }), "{err}");
        assert!(!fs_root.path("/sys/devices/system/cpu/cpu2/online").exists());
        assert!(!err.is_not_writable());
    }
}
