//! venussup on a real kernel (issue 16): a throw-away Debian 12 VM under
//! qemu, with Debian's own kernel, systemd as PID 1 and pure cgroup v2 (as
//! on the sealing hosts; this development VM mounts cgroup v1), 2 sockets ×
//! 2 cores × 2 threads and two NUMA nodes. venussup is installed there as
//! the README says and driven through systemd; `integration/vm/guest.sh`
//! runs the checks inside and reports one `PASS name detail` or
//! `FAIL name detail` line per check on a virtio-9p share, then reboots
//! once (the reboot check) and powers off. This test prints every line and
//! fails naming every FAIL and every check that never reported.
//!
//! The guest image (debootstrap + kernel + ext4 image) is cached in
//! /var/cache/venussup-vm, rebuilt when the package list or
//! `integration/vm/setup-image.sh` changes; each boot runs on a snapshot
//! of it (`snapshot=on`), so every run starts from the same disk. qemu uses
//! software emulation (this machine's /dev/kvm cannot boot Debian's kernel).
//! The test is skipped, saying so, only when qemu is not installed or the
//! kernel package cannot be had (no debootstrap, no Debian registry).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::io::Write;
use std::os::fd::AsFd as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{bin, debian, project_file, run_bounded, venussup};

/// The cached guest images, one folder per stamp.
const CACHE: &str = "/var/cache/venussup-vm";
const SUITE: &str = "bookworm";
/// What the guest runs on top of minbase: systemd as PID 1, Debian's
/// kernel (whose initramfs mounts the virtio root), `ps`/`pgrep`,
/// `taskset` and `jq` for the checks.
const PACKAGES: &str =
    "systemd,systemd-sysv,dbus,linux-image-amd64,initramfs-tools,kmod,procps,util-linux,jq";
/// Bump to rebuild every cached image.
const IMAGE_VERSION: u32 = 1;
const IMAGE_SIZE: &str = "2G";
const SETUP_IMAGE: &str = include_str!("vm/setup-image.sh");
const GUEST_SCRIPT: &str = include_str!("vm/guest.sh");
/// The guest's venussup config, relative to the checkout-like share.
const GUEST_CONFIG: &str = "integration/vm/venussup.toml";

/// debootstrap with the kernel (about 90 s with the registry at hand).
const DEBOOTSTRAP_BOUND: Duration = Duration::from_secs(600);
/// Setting the root up, and `mkfs.ext4 -d` of it.
const IMAGE_STEP_BOUND: Duration = Duration::from_secs(180);
/// The VM from qemu's start to its power off: two boots (30 to 50 s each
/// under emulation) and every check; 6 to 8 minutes on an idle machine,
/// 11 with three such VMs on its two cores.
const VM_BOUND: Duration = Duration::from_secs(900);

/// How much of each raw file the test prints.
const RAW_LINES: usize = 60;
/// Set to keep the share (results, raw data) and the serial console.
const KEEP_ENV: &str = "VENUSSUP_VM_KEEP";
/// Set for a diagnostic run: the guest remounts cgroup2 with
/// `favordynmods` first, so a migration into a cgroup waits for no RCU
/// grace period (what the restart ratio looks like without that cost).
const FAVORDYNMODS_ENV: &str = "VENUSSUP_VM_FAVORDYNMODS";

/// Every check guest.sh reports, in its order.
const CHECKS: &[&str] = &[
    "guest",
    "install",
    "cpusets.sealer",
    "cpusets.worker01",
    "cpusets.worker02",
    "cpusets.lat-both",
    "cpusets.lat-affinity",
    "smt-hotplug",
    "services-in-unit",
    "tasks-counted",
    "upgrade",
    "restart-latency",
    "restart-latency-join",
    "status-smt-after-restart",
    "escape-setsid-child",
    "kill9-one-copy",
    "kill9-unsupervised",
    "kill9-stop-clean",
    "reboot",
];

/// A line on the test's stderr that the test harness does not capture: a
/// skip, the timings and the guest's results show in CI's log.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "vm: {line}");
}

/// FNV-1a: a stamp of the image's recipe that stays the same across Rust
/// releases (std's hasher may not).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The cached guest: kernel, initramfs and root image.
struct Image {
    kernel: PathBuf,
    initrd: PathBuf,
    disk: PathBuf,
}

/// The cached image for the current recipe, built when missing. `Err`
/// says why there can be no VM (a skip): no qemu, or no kernel package. A
/// failure after the packages are in is a broken recipe and panics.
fn cached_image() -> Result<Image, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    debian::need(&[
        (
            "qemu-system-x86_64",
            "qemu-system-x86, from bookworm-backports",
        ),
        ("debootstrap", "debootstrap"),
    ])?;
    debian::need(&[
        ("mkfs.ext4", "e2fsprogs"),
        ("taskset", "util-linux"),
        ("unshare", "util-linux"),
        ("timeout", "coreutils"),
    ])
    .unwrap();
    let stamp = format!(
        "{SUITE}-{:016x}",
        fnv1a(&[
            SUITE,
            PACKAGES,
            SETUP_IMAGE,
            IMAGE_SIZE,
            &IMAGE_VERSION.to_string()
        ])
    );
    let cache = Path::new(CACHE);
    let dir = cache.join(&stamp);
    let image = Image {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        disk: dir.join("root.img"),
    };
    let _lock = debian::lock_cache(cache)?;
    if dir.join("ready").exists() {
        return Ok(image);
    }
    // An image of another recipe (or a build cut short) is of no more use.
    for entry in fs::read_dir(cache).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != ".lock") {
            say(&format!("removing the outdated {}", path.display()));
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
    let t0 = Instant::now();
    let partial = cache.join(format!("{stamp}.partial"));
    let root = partial.join("root");
    fs::create_dir_all(&partial).unwrap();
    let took = debian::debootstrap(&root, SUITE, PACKAGES, DEBOOTSTRAP_BOUND)?;
    say(&format!("debootstrap of the guest: {took:.0?}"));
    let script = partial.join("setup-image.sh");
    fs::write(&script, SETUP_IMAGE).unwrap();
    run_bounded(Command::new("sh").arg(&script).arg(&root), IMAGE_STEP_BOUND).expect_code(0);
    let boot = root.join("boot");
    for (prefix, to) in [("vmlinuz-", "vmlinuz"), ("initrd.img-", "initrd.img")] {
        let from = fs::read_dir(&boot)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}* in {}", boot.display()));
        fs::copy(&from, partial.join(to)).unwrap();
    }
    let t1 = Instant::now();
    run_bounded(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(&root)
            .arg(partial.join("root.img"))
            .arg(IMAGE_SIZE),
        IMAGE_STEP_BOUND,
    )
    .expect_code(0);
    say(&format!("mkfs.ext4 -d of the guest: {:.0?}", t1.elapsed()));
    fs::remove_dir_all(&root).unwrap();
    fs::write(
        partial.join("ready"),
        format!("suite {SUITE}\npackages {PACKAGES}\nimage version {IMAGE_VERSION}\n"),
    )
    .unwrap();
    fs::rename(&partial, &dir).unwrap();
    say(&format!(
        "built the guest image {} in {:.0?}",
        dir.display(),
        t0.elapsed()
    ));
    Ok(image)
}

/// The CPUs this test may run on, as a list for `taskset -c`.
fn own_cpus() -> String {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The 9p share, laid out as a checkout after `cargo build --release`
/// (what the README's install steps read) plus the guest's scripts.
fn lay_out_share(share: &Path) {
    let src = share.join("src");
    for d in ["target/release", "units", "integration/vm"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::copy(bin(), src.join("target/release/venussup")).unwrap();
    fs::copy(
        project_file("units/venussup.service"),
        src.join("units/venussup.service"),
    )
    .unwrap();
    fs::copy(project_file(GUEST_CONFIG), src.join(GUEST_CONFIG)).unwrap();
    fs::write(
        share.join("install.sh"),
        debian::readme_install_steps(GUEST_CONFIG) + "\n",
    )
    .unwrap();
    fs::write(share.join("guest.sh"), GUEST_SCRIPT).unwrap();
    fs::write(share.join("results.txt"), "").unwrap();
    if std::env::var_os(FAVORDYNMODS_ENV).is_some() {
        fs::write(share.join("favordynmods"), "").unwrap();
    }
    // The guest's root writes here (as root: security_model=none).
    fs::set_permissions(share, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A running qemu, SIGKILLed with its process group unless it exited.
struct Qemu {
    child: Option<Child>,
    console: PathBuf,
}

impl Qemu {
    fn boot(image: &Image, share: &Path, work: &Path) -> Self {
        let console = work.join("console.log");
        let qemu_log = fs::File::create(work.join("qemu.log")).unwrap();
        let bound = VM_BOUND.as_secs().to_string();
        let disk = format!(
            "file={},format=raw,if=virtio,snapshot=on",
            image.disk.display()
        );
        let virtfs = format!(
            "local,path={},mount_tag=share,security_model=none",
            share.display()
        );
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=10", &bound])
            .args(["taskset", "-c", &own_cpus()])
            .arg("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg,thread=multi",
                "-cpu",
                "max,vendor=GenuineIntel",
            ])
            .args(["-smp", "8,sockets=2,cores=2,threads=2", "-m", "2G"])
            .args(["-object", "memory-backend-ram,id=m0,size=1G"])
            .args(["-numa", "node,nodeid=0,cpus=0-3,memdev=m0"])
            .args(["-object", "memory-backend-ram,id=m1,size=1G"])
            .args(["-numa", "node,nodeid=1,cpus=4-7,memdev=m1"])
            .args(["-nographic", "-monitor", "none", "-nic", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args([
                "-append",
                "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 \
                 panic=-1 systemd.show_status=auto",
            ])
            .args(["-drive", &disk, "-virtfs", &virtfs])
            // qemu's snapshot overlay goes to TMPDIR; unlinked at once.
            .env("TMPDIR", work)
            .stdin(Stdio::null())
            .stdout(qemu_log.try_clone().unwrap())
            .stderr(qemu_log)
            .process_group(0);
        let child = cmd.spawn().expect("qemu-system-x86_64 under timeout");
        Self {
            child: Some(child),
            console,
        }
    }

    /// Waits for qemu to exit (the guest powered off), at most `bound`;
    /// `None` when it did not and was killed. Prints each result line as
    /// the guest writes it.
    fn wait(&mut self, bound: Duration, results: &Path, t0: Instant) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        let pid = self.child.as_ref().map_or(0, Child::id);
        let exited = common::daemon::pidfd(i32::try_from(pid).unwrap_or(0))
            .expect("a pidfd for qemu (Linux 5.3 or newer)");
        let mut shown = 0;
        loop {
            let lines: Vec<String> = fs::read_to_string(results)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect();
            for line in lines.iter().skip(shown) {
                say(&format!("  [{:>5.1?}] {line}", t0.elapsed().as_secs_f64()));
            }
            shown = shown.max(lines.len());
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                self.kill();
                return None;
            }
            // qemu's exit wakes this at once; meanwhile the guest's new
            // result lines are shown every half second.
            let mut fds = [nix::poll::PollFd::new(
                exited.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(500u16));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = i32::try_from(child.id()).unwrap();
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }

    /// The last `n` lines of the serial console.
    fn console_tail(&self, n: usize) -> String {
        let text = fs::read(&self.console).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether qemu ended by a signal before the guest wrote a phase or a
/// verdict: the emulator failed, not what it runs.
fn emulator_died_before_the_guest(
    status: Option<ExitStatus>,
    share: &Path,
    results: &Path,
) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let empty = |p: &Path| fs::read_to_string(p).map_or(true, |t| t.trim().is_empty());
    status.is_some_and(|s| s.signal().is_some()) && empty(&share.join("phase")) && empty(results)
}

/// The guest's verdicts: `(PASS|FAIL, name, detail)` per line.
fn verdicts(results: &str) -> Vec<(&str, &str, &str)> {
    results
        .lines()
        .filter_map(|l| {
            let (verdict, rest) = l.split_once(' ')?;
            let (name, detail) = rest.split_once(' ').unwrap_or((rest, ""));
            ["PASS", "FAIL"]
                .contains(&verdict)
                .then_some((verdict, name, detail))
        })
        .collect()
}

#[test]
fn on_a_real_debian_kernel_with_pure_cgroup_v2_under_systemd() {
    let t0 = Instant::now();
    // The guest's config is valid before a VM is spent on it (on a
    // snapshot of a real 2-socket machine: the plan's shape, not its CPUs).
    venussup(&[
        "check",
        "--config",
        project_file(GUEST_CONFIG).to_str().unwrap(),
        "--fs-root",
        project_file("integration/fixtures/topologies/32intel64-2p8co2t+8ve")
            .to_str()
            .unwrap(),
    ])
    .expect_code(0);
    let image = match cached_image() {
        Ok(image) => image,
        Err(why) => {
            say(&format!("SKIPPED: no VM to boot: {why}"));
            return;
        }
    };
    let ready = t0.elapsed();
    say(&format!("guest image ready after {ready:.1?}"));

    let work = tempfile::Builder::new()
        .prefix("venussup-vm-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let share = work.path().join("share");
    fs::create_dir(&share).unwrap();
    lay_out_share(&share);
    let results = share.join("results.txt");

    let mut booted = Instant::now();
    let mut qemu = Qemu::boot(&image, &share, work.path());
    let mut status = qemu.wait(VM_BOUND + Duration::from_secs(20), &results, booted);
    if emulator_died_before_the_guest(status, &share, &results) {
        // qemu itself, not the guest: a fresh-clone CI run of 2026-12-02
        // saw qemu 10.0.2 (bookworm-backports) abort 2.7 s into the boot
        // while the kernel probed PCI (`iotlb_to_section: Assertion ...
        // failed`, SIGABRT), before anything of ours ran. Such a crash is
        // shown and booted once more.
        say(&format!(
            "qemu died of {} before the guest reported anything; its own output:\n{}\nbooting once more",
            status.map_or("?".to_string(), |s| s.to_string()),
            fs::read_to_string(work.path().join("qemu.log")).unwrap_or_default()
        ));
        drop(qemu);
        booted = Instant::now();
        qemu = Qemu::boot(&image, &share, work.path());
        status = qemu.wait(VM_BOUND + Duration::from_secs(20), &results, booted);
    }
    let vm_took = booted.elapsed();

    let text = fs::read_to_string(&results).unwrap_or_default();
    let found = verdicts(&text);
    say(&format!(
        "qemu ended after {vm_took:.1?} ({}); whole test {:.1?}",
        status.map_or("killed at the bound".to_string(), |s| s.to_string()),
        t0.elapsed()
    ));
    say("results:");
    for (verdict, name, detail) in &found {
        say(&format!("  {verdict} {name} {detail}"));
    }

    let mut problems: Vec<String> = found
        .iter()
        .filter(|(verdict, ..)| *verdict == "FAIL")
        .map(|(_, name, detail)| format!("FAIL {name} {detail}"))
        .collect();
    for check in CHECKS {
        if !found.iter().any(|(_, name, _)| name == check) {
            problems.push(format!("MISSING {check}: the guest never reported it"));
        }
    }
    let phase = fs::read_to_string(share.join("phase")).unwrap_or_default();
    if !status.is_some_and(|s| s.success()) || phase.trim() != "done" {
        problems.push(format!(
            "the VM did not run to its power off: qemu {}, guest phase {:?}",
            status.map_or("killed at the bound".to_string(), |s| s.to_string()),
            phase.trim()
        ));
    }

    // What the guest saw: always the guest, the timings and the restart
    // latencies; everything after a failure (but the plan, which is
    // `venussup check --json`, long and summed up by the cpusets lines).
    let mut raws: Vec<PathBuf> = fs::read_dir(share.join("raw"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    raws.sort();
    raws.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        name != "plan.txt"
            && (!problems.is_empty()
                || ["guest.txt", "timings.txt", "latency.txt"].contains(&&*name))
    });
    for raw in &raws {
        let body = fs::read_to_string(raw).unwrap_or_default();
        let lines: Vec<&str> = body.lines().collect();
        say(&format!(
            "--- raw/{} ({} lines{})",
            raw.file_name().unwrap().to_string_lossy(),
            lines.len(),
            if lines.len() > RAW_LINES {
                format!(", last {RAW_LINES} shown")
            } else {
                String::new()
            }
        ));
        for line in &lines[lines.len().saturating_sub(RAW_LINES)..] {
            say(&format!("  {line}"));
        }
    }
    if !problems.is_empty() {
        say(&format!(
            "--- serial console, last 60 lines\n{}",
            qemu.console_tail(60)
        ));
        say(&format!(
            "--- qemu's own output\n{}",
            fs::read_to_string(work.path().join("qemu.log")).unwrap_or_default()
        ));
    }
    drop(qemu);
    if std::env::var_os(KEEP_ENV).is_some() {
        say(&format!("kept {} ({KEEP_ENV})", work.keep().display()));
    }
    assert!(
        problems.is_empty(),
        "on the VM, of {} checks:\n{}",
        CHECKS.len(),
        problems.join("\n")
    );
}
