//! Simulated cgroup hierarchies under a folder, for tests and demos: the
//! mount table, the root control files, and a [`SimKernel`] that makes new
//! cgroups the way cgroupfs does. Nothing here touches the real machine.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::{Cgroupfs, Kernel, PROCS};
use crate::util::fsroot::FsRoot;

/// `mkdir` fills the new cgroup with the control files of its parent
/// (limits at their "no limit" value, the rest empty); `rmdir` refuses a
/// cgroup that has processes or child cgroups, as the kernel does (EBUSY).
#[derive(Debug, Clone, Copy, Default)]
pub struct SimKernel;

impl SimKernel {
    pub fn cgroupfs() -> Cgroupfs {
        Cgroupfs::with_kernel(Arc::new(SimKernel))
    }
}

impl Kernel for SimKernel {
    fn mkdir(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)?;
        let parent = dir.parent().ok_or(io::ErrorKind::InvalidInput)?;
        let subtree = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
        for entry in fs::read_dir(parent)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let name = entry.file_name();
            let content = match name.to_str() {
                Some("memory.max") => "max\n".to_string(),
                Some("memory.limit_in_bytes") => "9223372036854771712\n".to_string(),
                Some("cgroup.controllers") => subtree.replace('+', ""),
                _ => String::new(),
            };
            fs::write(dir.join(&name), content)?;
        }
        Ok(())
    }

    fn rmdir(&self, dir: &Path) -> io::Result<()> {
        if !dir.is_dir() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let busy = !fs::read_to_string(dir.join(PROCS))
            .unwrap_or_default()
            .trim()
            .is_empty()
            || fs::read_dir(dir)?
                .filter_map(Result::ok)
                .any(|e| e.path().is_dir());
        if busy {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        fs::remove_dir_all(dir)
    }
}

/// Writes a mount table and root cgroups under `fs_root`.
#[derive(Debug)]
pub struct SimCgroups;

impl SimCgroups {
    /// This project's VM: cgroup v1 cpuset and memory hierarchies under
    /// `/sys/fs/cgroup/<controller>`, and a cgroup2 mount at
    /// `/sys/fs/cgroup/unified` without the cpuset controller.
    pub fn v1(fs_root: &FsRoot, cpus: &str, mems: &str) -> io::Result<()> {
        let base = "/sys/fs/cgroup";
        root(
            fs_root,
            &format!("{base}/cpuset"),
            &[
                ("cpuset.cpus", cpus),
                ("cpuset.mems", mems),
                ("cpuset.effective_cpus", cpus),
                ("cpuset.effective_mems", mems),
                ("cgroup.clone_children", "0"),
                ("tasks", ""),
                (PROCS, ""),
            ],
        )?;
        root(
            fs_root,
            &format!("{base}/memory"),
            &[
                ("memory.limit_in_bytes", "9223372036854771712"),
                ("memory.usage_in_bytes", "0"),
                ("tasks", ""),
                (PROCS, ""),
            ],
        )?;
        root(
            fs_root,
            &format!("{base}/unified"),
            &[
                ("cgroup.controllers", "hugetlb"),
                ("cgroup.subtree_control", ""),
                (PROCS, ""),
            ],
        )?;
        mountinfo(
            fs_root,
            &[
                ("/sys/fs/cgroup/cpuset", "cgroup", "rw,cpuset"),
                ("/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
                ("/sys/fs/cgroup/unified", "cgroup2", "rw"),
            ],
        )
    }

    /// A cgroup2-only host at `/sys/fs/cgroup` whose root offers
    /// `controllers` (e.g. "cpuset cpu io memory pids"), venussup running
    /// in the root cgroup (a container's view).
    pub fn v2(fs_root: &FsRoot, controllers: &str, cpus: &str, mems: &str) -> io::Result<()> {
        Self::v2_in(fs_root, "/", controllers, controllers, cpus, mems)
    }

    /// A cgroup2-only host whose root offers `controllers`, venussup
    /// running in the cgroup `own` (e.g. `/system.slice/venussup.service`,
    /// as systemd starts a unit) to which `delegated` are offered.
    pub fn v2_in(
        fs_root: &FsRoot,
        own: &str,
        controllers: &str,
        delegated: &str,
        cpus: &str,
        mems: &str,
    ) -> io::Result<()> {
        let files = |offered: &str, procs: &str| {
            [
                ("cgroup.controllers", offered.to_string()),
                ("cgroup.subtree_control", String::new()),
                ("cpuset.cpus.effective", cpus.to_string()),
                ("cpuset.mems.effective", mems.to_string()),
                ("cpuset.cpus", String::new()),
                ("cpuset.mems", String::new()),
                ("memory.max", "max".to_string()),
                (PROCS, procs.to_string()),
            ]
        };
        let me = std::process::id().to_string();
        let at_root = own == "/";
        write_files(
            &fs_root.path("/sys/fs/cgroup"),
            &files(controllers, if at_root { &me } else { "" }),
        )?;
        if !at_root {
            write_files(
                &fs_root
                    .path("/sys/fs/cgroup")
                    .join(own.trim_start_matches('/')),
                &files(delegated, &me),
            )?;
        }
        let own_file = fs_root.path(crate::host::cgroups::OWN_CGROUP);
        fs::create_dir_all(own_file.parent().ok_or(io::ErrorKind::InvalidInput)?)?;
        fs::write(own_file, format!("0::{own}\n"))?;
        mountinfo(fs_root, &[("/sys/fs/cgroup", "cgroup2", "rw,nsdelegate")])
    }
}

fn write_files(dir: &Path, files: &[(&str, String)]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, content) in files {
        fs::write(dir.join(name), format!("{content}\n"))?;
    }
    Ok(())
}

fn root(fs_root: &FsRoot, at: &str, files: &[(&str, &str)]) -> io::Result<()> {
    let dir = fs_root.path(at);
    fs::create_dir_all(&dir)?;
    for (name, content) in files {
        fs::write(dir.join(name), format!("{content}\n"))?;
    }
    Ok(())
}

fn mountinfo(fs_root: &FsRoot, mounts: &[(&str, &str, &str)]) -> io::Result<()> {
    let mut text = String::from("22 1 0:21 / /sys rw,relatime - sysfs sysfs rw\n");
    for (i, (point, fstype, options)) in mounts.iter().enumerate() {
        text.push_str(&format!(
            "{} 22 0:{} / {point} rw,relatime - {fstype} {fstype} {options}\n",
            30 + i,
            30 + i
        ));
    }
    let path = fs_root.path(crate::util::mountinfo::MOUNTINFO);
    fs::create_dir_all(path.parent().ok_or(io::ErrorKind::InvalidInput)?)?;
    fs::write(path, text)
}
