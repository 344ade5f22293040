//! Host preparation (`[host.prepare]`): what operators redo by hand after
//! every boot, done by `venussup run` at every start, after the plan (it
//! needs the CPUs the services use): huge pages per NUMA node, a
//! `hugetlbfs` mount, the CPU frequency governor, NVIDIA persistence mode.
//!
//! Every step is optional and idempotent, and its outcome is a [`Report`]
//! for the snapshot, `status` and the metrics. A failure is logged and
//! reported; it never stops the services. The kernel files are written
//! through [`SysWrite`], so the logic runs against a test kernel too.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config::values::ByteSize;
use crate::host::topology::numa_nodes;
use crate::host::topology::read::{CPU_DIR, NODE_DIR};
use crate::plan::prepare::{asked, Hugepages, Prepare};
use crate::status::prepare::{
    CpuFailure, GovernorReport, HugepagesReport, NodePages, Report, StepReport,
};
use crate::util::cpulist::CpuSet;
use crate::util::fsroot::FsRoot;
use crate::util::mountinfo::{points_and_types, MOUNTINFO};

/// The persistence command is killed after this long.
const GPU_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The kernel files, as the steps use them. The live one opens files
/// without creating them; tests give a kernel that grants less.
pub trait SysWrite {
    fn write(&mut self, path: &Path, value: &str) -> std::io::Result<()>;
    fn read(&mut self, path: &Path) -> std::io::Result<String>;
}

/// The real files under an fs-root.
#[derive(Debug, Default)]
pub struct Files;

impl SysWrite for Files {
    fn write(&mut self, path: &Path, value: &str) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    }

    fn read(&mut self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Writes each node's `nr_hugepages` and reads back what the kernel
/// granted. Writing the count it already has changes nothing.
pub fn hugepages(h: &Hugepages, fs_root: &FsRoot, sys: &mut dyn SysWrite) -> HugepagesReport {
    let size_kib = h.size.0 / 1024;
    let mut report = HugepagesReport {
        size_kib,
        ..HugepagesReport::default()
    };
    let nodes = numa_nodes(fs_root);
    if nodes.is_empty() {
        report.error = Some(format!(
            "no NUMA node folders in {}",
            fs_root.path(NODE_DIR).display()
        ));
        return report;
    }
    let asked = match asked(&h.per_node, &nodes) {
        Ok(a) => a,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    for (node, pages) in asked {
        let file = fs_root.path(format!(
            "{NODE_DIR}/node{node}/hugepages/hugepages-{size_kib}kB/nr_hugepages"
        ));
        let mut entry = NodePages {
            node,
            asked: pages,
            granted: None,
            error: None,
        };
        if !file.parent().is_some_and(Path::is_dir) {
            entry.error = Some(format!(
                "the kernel has no {} huge pages here ({} is missing)",
                h.size,
                file.parent().unwrap_or(&file).display()
            ));
        } else if let Err(e) = sys.write(&file, &pages.to_string()) {
            entry.error = Some(format!(
                "failed to write `{pages}` to {}: {e}",
                file.display()
            ));
        } else {
            match sys.read(&file) {
                Ok(text) => match text.trim().parse::<u64>() {
                    Ok(n) => entry.granted = Some(n),
                    Err(_) => {
                        entry.error = Some(format!(
                            "{} holds `{}`, not a number",
                            file.display(),
                            text.trim()
                        ))
                    }
                },
                Err(e) => entry.error = Some(format!("failed to read {}: {e}", file.display())),
            }
        }
        report.nodes.push(entry);
    }
    report
}

/// Sets `governor` on each CPU in `cpus` that does not have it yet, and
/// reads it back.
pub fn governor(
    governor: &str,
    cpus: &CpuSet,
    fs_root: &FsRoot,
    sys: &mut dyn SysWrite,
) -> GovernorReport {
    let mut report = GovernorReport {
        governor: governor.to_string(),
        ..GovernorReport::default()
    };
    for cpu in cpus.iter() {
        let file = fs_root.path(format!("{CPU_DIR}/cpu{cpu}/cpufreq/scaling_governor"));
        let now = |sys: &mut dyn SysWrite| sys.read(&file).map(|t| t.trim().to_string());
        let result = match now(sys) {
            Ok(g) if g == governor => Ok(()),
            Ok(_) => sys
                .write(&file, governor)
                .map_err(|e| format!("failed to write `{governor}` to {}: {e}", file.display()))
                .and_then(|()| match now(sys) {
                    Ok(g) if g == governor => Ok(()),
                    Ok(g) => Err(format!("the kernel kept `{g}`")),
                    Err(e) => Err(format!("failed to read {}: {e}", file.display())),
                }),
            Err(e) => Err(format!(
                "no frequency scaling here ({}: {e})",
                file.display()
            )),
        };
        match result {
            Ok(()) => {
                report.cpus.insert(cpu);
            }
            Err(error) => report.failed.push(CpuFailure { cpu, error }),
        }
    }
    report
}

/// Every configured step, in order: huge pages, the mount (with their
/// page size), the governor on `cpus`, GPU persistence (output to `log`).
pub fn prepare(p: &Prepare, cpus: &CpuSet, fs_root: &FsRoot, log: &Path) -> Report {
    let mut files = Files;
    Report {
        hugepages: p
            .hugepages
            .as_ref()
            .map(|h| hugepages(h, fs_root, &mut files)),
        hugetlbfs: p
            .hugetlbfs
            .as_ref()
            .map(|m| hugetlbfs(&fs_root.path(m), p.hugepages.as_ref().map(|h| h.size))),
        governor: p
            .governor
            .as_ref()
            .map(|g| governor(g, cpus, fs_root, &mut files)),
        gpu_persistence: p
            .gpu_persistence
            .as_ref()
            .map(|c| gpu_persistence(c, fs_root, log)),
    }
}

/// Mounts a `hugetlbfs` at `target` (created if missing) with `pagesize`
/// when given, unless one is mounted there already.
pub fn hugetlbfs(target: &Path, pagesize: Option<ByteSize>) -> StepReport {
    let table = std::fs::read_to_string(MOUNTINFO).unwrap_or_default();
    let already = points_and_types(&table)
        .iter()
        .any(|(p, t)| Path::new(p) == target && t == "hugetlbfs");
    if already {
        return StepReport {
            ok: true,
            note: format!("already mounted at {}", target.display()),
        };
    }
    let result = std::fs::create_dir_all(target)
        .map_err(|e| format!("failed to create {}: {e}", target.display()))
        .and_then(|()| {
            let data = pagesize.map(|s| format!("pagesize={}", s.0));
            nix::mount::mount(
                Some("hugetlbfs"),
                target,
                Some("hugetlbfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                data.as_deref(),
            )
            .map_err(|e| format!("failed to mount hugetlbfs at {}: {e}", target.display()))
        });
    match result {
        Ok(()) => StepReport {
            ok: true,
            note: format!("mounted at {}", target.display()),
        },
        Err(note) => StepReport { ok: false, note },
    }
}

/// Runs the persistence command when the host has a GPU; its output goes
/// to `log`. Bounded by `GPU_COMMAND_TIMEOUT` (60 s).
pub fn gpu_persistence(argv: &[String], fs_root: &FsRoot, log: &Path) -> StepReport {
    let gpus = crate::host::gpu::discover(fs_root).gpus.len();
    if gpus == 0 {
        return StepReport {
            ok: true,
            note: "skipped: no GPU".to_string(),
        };
    }
    match run_bounded(argv, log, GPU_COMMAND_TIMEOUT) {
        Ok(how) if how.success() => StepReport {
            ok: true,
            note: format!("on ({gpus} GPU{})", if gpus == 1 { "" } else { "s" }),
        },
        Ok(how) => StepReport {
            ok: false,
            note: format!("`{}` {how} (see {})", argv.join(" "), log.display()),
        },
        Err(e) => StepReport { ok: false, note: e },
    }
}

/// Runs `argv` (output appended to `log`) and waits for it, killing it
/// after `timeout`. Only before the event loop exists.
fn run_bounded(
    argv: &[String],
    log: &Path,
    timeout: Duration,
) -> Result<crate::status::ExitKind, String> {
    use crate::sys::spawn::{self, Output, SpawnSpec};
    let env = std::collections::BTreeMap::from([(
        "PATH".to_string(),
        crate::plan::DEFAULT_PATH.to_string(),
    )]);
    let child = spawn::spawn(SpawnSpec::helper(
        argv,
        &env,
        Output::Append(log.to_path_buf()),
        None,
    ))
    .map_err(|e| e.to_string())?;
    let exited = wait_bounded(child.pid, timeout);
    if !exited {
        let _ = nix::sys::signal::killpg(child.pid, nix::sys::signal::Signal::SIGKILL);
    }
    match nix::sys::wait::waitpid(child.pid, None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) if exited => {
            Ok(crate::status::ExitKind::Code(c))
        }
        Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) if exited => {
            Ok(crate::status::ExitKind::Signal(s as i32))
        }
        Ok(_) if !exited => Err(format!(
            "`{}` still running after {}; killed",
            argv.join(" "),
            humantime::format_duration(timeout)
        )),
        Ok(other) => Err(format!("`{}` ended oddly: {other:?}", argv.join(" "))),
        Err(e) => Err(format!("failed to wait for `{}`: {e}", argv.join(" "))),
    }
}

/// Waits until `pid` has exited (not reaped) or `timeout` passed: a pidfd
/// polled with the timeout. True if it exited.
fn wait_bounded(pid: nix::unistd::Pid, timeout: Duration) -> bool {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open(2) only reads its two integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let Some(fd) = i32::try_from(fd).ok().filter(|f| *f >= 0) else {
        // No pidfd (an old kernel): wait without a bound.
        return true;
    };
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = nix::poll::PollTimeout::try_from(timeout.as_millis())
        .unwrap_or(nix::poll::PollTimeout::MAX);
    matches!(nix::poll::poll(&mut fds, ms), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PerNode;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    /// A kernel with `free` huge pages per node left: a write asks, the
    /// file then holds what it could grant. Governor files keep what is
    /// written unless it is not in `known`.
    struct Kernel {
        free: u64,
        files: BTreeMap<PathBuf, String>,
        known: Vec<&'static str>,
    }

    impl SysWrite for Kernel {
        fn write(&mut self, path: &Path, value: &str) -> std::io::Result<()> {
            let text = if path.ends_with("nr_hugepages") {
                let n: u64 = value
                    .parse()
                    .map_err(|_| std::io::ErrorKind::InvalidInput)?;
                n.min(self.free).to_string()
            } else if self.known.contains(&value) {
                value.to_string()
            } else {
                return Err(std::io::ErrorKind::InvalidInput.into());
            };
            self.files.insert(path.to_path_buf(), text);
            Ok(())
        }

        fn read(&mut self, path: &Path) -> std::io::Result<String> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }
    }

    fn host(nodes: u32) -> (tempfile::TempDir, FsRoot) {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..nodes {
            std::fs::create_dir_all(dir.path().join(format!(
                "sys/devices/system/node/node{n}/hugepages/hugepages-2048kB"
            )))
            .unwrap();
        }
        let root = FsRoot::new(dir.path());
        (dir, root)
    }

    fn kernel(free: u64) -> Kernel {
        Kernel {
            free,
            files: BTreeMap::new(),
            known: vec!["performance", "powersave"],
        }
    }

    #[test]
    fn a_kernel_that_grants_fewer_pages_is_reported_short() {
        let (_d, root) = host(2);
        let h = Hugepages {
            size: ByteSize::mib(2),
            per_node: PerNode::All(100),
        };
        let report = hugepages(&h, &root, &mut kernel(98));
        assert_eq!(report.size_kib, 2048);
        assert_eq!(
            report
                .nodes
                .iter()
                .map(|n| (n.node, n.asked, n.granted))
                .collect::<Vec<_>>(),
            vec![(0, 100, Some(98)), (1, 100, Some(98))]
        );
        assert!(!report.ok());
        assert_eq!(report.summary(), "2MiB: node0 98/100, node1 98/100");
        let full = hugepages(&h, &root, &mut kernel(1000));
        assert!(full.ok());
    }

    #[test]
    fn a_missing_page_size_is_an_error_of_its_node() {
        let (_d, root) = host(1);
        let h = Hugepages {
            size: ByteSize(1 << 30),
            per_node: PerNode::All(4),
        };
        let report = hugepages(&h, &root, &mut kernel(10));
        let e = report.nodes[0].error.as_deref().unwrap();
        assert!(e.contains("no 1GiB huge pages"), "{e}");
        assert!(!report.ok());
    }

    #[test]
    fn governor_is_written_only_where_it_differs_and_checked() {
        let (_d, root) = host(1);
        let mut k = kernel(0);
        let file = |c: u32| root.path(format!("{CPU_DIR}/cpu{c}/cpufreq/scaling_governor"));
        k.files.insert(file(0), "performance\n".into());
        k.files.insert(file(1), "powersave\n".into());
        let cpus: CpuSet = [0, 1, 2].into_iter().collect();
        let r = governor("performance", &cpus, &root, &mut k);
        assert_eq!(r.cpus.to_vec(), vec![0, 1]);
        assert_eq!(r.failed.len(), 1);
        assert!(r.failed[0].error.contains("no frequency scaling"));
        let r = governor("turbo", &[1].into_iter().collect(), &root, &mut k);
        assert!(r.failed[0].error.contains("failed to write `turbo`"));
    }
}
