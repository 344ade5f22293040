//! A tmpfs mounted for one test (a seal path, a folder that must be a
//! mount point), unmounted on drop.
#![allow(clippy::unwrap_used)] // test support: a failure here is a test failure

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (tmpfs takes no memory until written) at
    /// `dir`. Needs root, as the tests run in CI.
    pub fn mount(dir: &Path, size: &str) -> Self {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        Self(dir.to_path_buf())
    }
}

impl Tmpfs {
    /// Moves the mount to `dir` (`mount --move`, in one step: whoever
    /// watches `dir` sees it appear with what was written into it).
    pub fn move_to(self, dir: &Path) -> Self {
        let status = Command::new("mount")
            .arg("--move")
            .arg(&self.0)
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount --move {}", self.0.display());
        std::mem::forget(self);
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
