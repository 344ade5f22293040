//! The few questions the plan asks the machine about files and names while
//! it resolves a config: the text of a file, what a path is, whether a user
//! or group exists. [`System`] asks the live machine; `InMemory` (tests)
//! answers from what it was given, so a plan can be resolved with no files.
//!
//! Paths are taken as given: the caller decides whether a path is the
//! config's (an `env_file`, a program) or the host's, which it first maps
//! under [`crate::host::Host::fs_root`] (a sealer's `config.toml`).

use std::fmt::Debug;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::users;

/// What is at a path (symlinks followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Nothing, or nothing that can be looked at.
    Missing,
    /// A regular file, and whether anyone may execute it.
    File { executable: bool },
    /// A folder, a device, a socket, ...
    Other,
}

/// Reads and look-ups, nothing that changes the machine.
pub trait Lookups: Debug + Send + Sync {
    /// The text of the file at `path`.
    fn read_file(&self, path: &Path) -> io::Result<String>;
    /// What `path` is.
    fn stat(&self, path: &Path) -> FileKind;
    fn user_exists(&self, name: &str) -> bool;
    fn group_exists(&self, name: &str) -> bool;
    /// Bytes an unprivileged writer can still put in the filesystem of
    /// `path` (statvfs).
    fn free_space(&self, path: &Path) -> io::Result<u64>;
}

/// The live machine: its files, NSS for users and groups.
#[derive(Debug, Clone, Copy, Default)]
pub struct System;

impl Lookups for System {
    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn stat(&self, path: &Path) -> FileKind {
        match path.metadata() {
            Err(_) => FileKind::Missing,
            Ok(m) if m.is_file() => FileKind::File {
                executable: m.permissions().mode() & 0o111 != 0,
            },
            Ok(_) => FileKind::Other,
        }
    }

    fn user_exists(&self, name: &str) -> bool {
        users::user_exists(name)
    }

    fn group_exists(&self, name: &str) -> bool {
        users::group_exists(name)
    }

    fn free_space(&self, path: &Path) -> io::Result<u64> {
        super::memory::free_space(path).map_err(io::Error::other)
    }
}

#[cfg(any(test, feature = "testkit"))]
pub use in_memory::InMemory;

#[cfg(any(test, feature = "testkit"))]
mod in_memory {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io;
    use std::path::{Path, PathBuf};

    use super::{FileKind, Lookups};

    #[derive(Debug, Clone)]
    enum Entry {
        File { text: String, executable: bool },
        Folder,
    }

    /// A machine that has exactly the files, users and groups it is given.
    #[derive(Debug, Clone, Default)]
    pub struct InMemory {
        entries: BTreeMap<PathBuf, Entry>,
        users: BTreeSet<String>,
        groups: BTreeSet<String>,
        free: BTreeMap<PathBuf, u64>,
    }

    impl InMemory {
        pub fn new() -> Self {
            Self::default()
        }

        /// A readable, non-executable file.
        pub fn file(mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
            let (text, executable) = (text.into(), false);
            self.entries
                .insert(path.into(), Entry::File { text, executable });
            self
        }

        /// An executable file (a program).
        pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
            let (text, executable) = (String::new(), true);
            self.entries
                .insert(path.into(), Entry::File { text, executable });
            self
        }

        pub fn folder(mut self, path: impl Into<PathBuf>) -> Self {
            self.entries.insert(path.into(), Entry::Folder);
            self
        }

        pub fn user(mut self, name: &str) -> Self {
            self.users.insert(name.to_string());
            self
        }

        pub fn group(mut self, name: &str) -> Self {
            self.groups.insert(name.to_string());
            self
        }

        /// The free space of the filesystem at `path` (only that path
        /// answers; others are not found).
        pub fn free(mut self, path: impl Into<PathBuf>, bytes: u64) -> Self {
            self.free.insert(path.into(), bytes);
            self
        }
    }

    impl Lookups for InMemory {
        fn read_file(&self, path: &Path) -> io::Result<String> {
            match self.entries.get(path) {
                Some(Entry::File { text, .. }) => Ok(text.clone()),
                Some(Entry::Folder) => Err(io::ErrorKind::IsADirectory.into()),
                None => Err(io::ErrorKind::NotFound.into()),
            }
        }

        fn stat(&self, path: &Path) -> FileKind {
            match self.entries.get(path) {
                Some(Entry::File { executable, .. }) => FileKind::File {
                    executable: *executable,
                },
                Some(Entry::Folder) => FileKind::Other,
                None => FileKind::Missing,
            }
        }

        fn user_exists(&self, name: &str) -> bool {
            self.users.contains(name)
        }

        fn group_exists(&self, name: &str) -> bool {
            self.groups.contains(name)
        }

        fn free_space(&self, path: &Path) -> io::Result<u64> {
            self.free
                .get(path)
                .copied()
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_system_tells_files_programs_and_folders_apart() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("data");
        fs::write(&plain, "A=1\n").unwrap();

        let system = System;
        assert_eq!(system.stat(&exe), FileKind::File { executable: true });
        assert_eq!(system.stat(&plain), FileKind::File { executable: false });
        assert_eq!(system.stat(dir.path()), FileKind::Other);
        assert_eq!(system.stat(&dir.path().join("nope")), FileKind::Missing);
        assert_eq!(system.read_file(&plain).unwrap(), "A=1\n");
        assert_eq!(
            system
                .read_file(&dir.path().join("nope"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        assert!(system.free_space(dir.path()).unwrap() > 0);
        assert!(system.free_space(&dir.path().join("nope")).is_err());
        assert!(system.user_exists("root"));
        assert!(!system.group_exists("no-such-group-venussup"));
    }

    #[test]
    fn in_memory_has_what_it_was_given() {
        let m = InMemory::new()
            .file("/etc/a.env", "A=1\n")
            .program("/usr/bin/tool")
            .folder("/srv")
            .user("seal")
            .group("zabbix")
            .free("/srv", 42);
        assert_eq!(m.free_space(Path::new("/srv")).unwrap(), 42);
        assert!(m.free_space(Path::new("/")).is_err());
        assert_eq!(m.read_file(Path::new("/etc/a.env")).unwrap(), "A=1\n");
        assert_eq!(
            m.stat(Path::new("/usr/bin/tool")),
            FileKind::File { executable: true }
        );
        assert_eq!(m.stat(Path::new("/srv")), FileKind::Other);
        assert_eq!(m.stat(Path::new("/nope")), FileKind::Missing);
        assert!(m.read_file(Path::new("/nope")).is_err());
        assert!(m.user_exists("seal") && !m.user_exists("root"));
        assert!(m.group_exists("zabbix") && !m.group_exists("seal"));
    }
}
