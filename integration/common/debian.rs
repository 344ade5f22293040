//! A fresh Debian host for the tests that boot one: a root built by
//! `debootstrap` and cached between runs (the systemd-nspawn test in
//! `deploy.rs`, the qemu test in `vm.rs`, each with its own cache folder and
//! package list), and the README's install steps to run on it.
#![allow(clippy::unwrap_used)] // test support: a failure here is a test failure

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{project_file, try_run_bounded};

/// Whether `program` is on `PATH`.
pub fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `Err` naming the first of `(program, Debian package)` that is missing.
pub fn need(programs: &[(&str, &str)]) -> Result<(), String> {
    match programs.iter().find(|(program, _)| !has(program)) {
        Some((program, package)) => Err(format!(
            "{program} is not installed (Debian package {package})"
        )),
        None => Ok(()),
    }
}

/// Makes `cache` and holds its lock until the returned file is dropped:
/// one builder at a time (another test run may want the same root).
pub fn lock_cache(cache: &Path) -> Result<nix::fcntl::Flock<fs::File>, String> {
    fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let lock = fs::File::create(cache.join(".lock")).map_err(|e| e.to_string())?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("failed to lock {}/.lock: {e}", cache.display()))
}

/// The Debian mirror this machine's apt uses (the first `URIs:` of a
/// deb822 source, or the URI of a `deb` line, that serves `/debian`), so
/// the guest comes from where the machine's own packages come; none, and
/// debootstrap takes its default, when apt names none.
fn apt_mirror() -> Option<String> {
    let mut texts: Vec<String> = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sources" || e == "list"))
        .filter_map(|p| fs::read_to_string(p).ok())
        .collect();
    texts.extend(fs::read_to_string("/etc/apt/sources.list").ok());
    texts.iter().flat_map(|t| t.lines()).find_map(|line| {
        let uri = match line.trim().strip_prefix("URIs:") {
            Some(rest) => rest.split_whitespace().next(),
            None => line
                .trim()
                .strip_prefix("deb ")
                .and_then(|rest| rest.split_whitespace().find(|w| w.contains("://"))),
        }?;
        uri.trim_end_matches('/')
            .ends_with("/debian")
            .then(|| uri.to_string())
    })
}

/// `debootstrap --variant=minbase --include=PACKAGES SUITE TARGET` from
/// Debian's registry, bounded. `Err` says why there is no root (`TARGET`
/// is removed then): most often that the registry cannot be reached.
pub fn debootstrap(
    target: &Path,
    suite: &str,
    packages: &str,
    bound: Duration,
) -> Result<Duration, String> {
    let _ = fs::remove_dir_all(target);
    let t0 = Instant::now();
    // In a mount namespace of its own: whatever it mounts in the new root
    // (/proc, ...) goes away with it, even when it is killed.
    let out = try_run_bounded(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "debootstrap"])
            .args(["--variant=minbase", &format!("--include={packages}"), suite])
            .arg(target)
            .args(apt_mirror()),
        bound,
    );
    let failed = match &out {
        None => Some(format!("it ran longer than {bound:?}")),
        Some(o) if o.code != Some(0) => Some(format!(
            "{} {}",
            o.stdout
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | "),
            o.stderr.trim()
        )),
        Some(_) => None,
    };
    match failed {
        Some(why) => {
            let _ = fs::remove_dir_all(target);
            Err(format!(
                "debootstrap failed (is the Debian registry reachable?): {why}"
            ))
        }
        None => Ok(t0.elapsed()),
    }
}

/// The README's install steps: the first `sh` block under "## Install",
/// to run in a checkout (after `cargo build --release`), with `config`
/// (relative to the checkout) installed instead of host B's example.
/// Building (`apt-get`, `curl`, `cargo`, `git`) is what the test's own
/// build did, so those lines are left out.
pub fn readme_install_steps(config: &str) -> String {
    let readme = fs::read_to_string(project_file("README.md")).unwrap();
    let section = &readme[readme
        .find("\n## Install\n")
        .expect("README has ## Install")..];
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("an sh block under ## Install");
    let mut steps = Vec::new();
    for line in block.lines() {
        let command = line.split(" #").next().unwrap().trim();
        let first = command.split_whitespace().next().unwrap_or("#");
        if first.starts_with('#') || ["apt-get", "curl", "cargo", "git"].contains(&first) {
            continue;
        }
        steps.push(command.to_string());
    }
    let steps = steps.join("\n");
    assert!(
        steps.contains("examples/host-b.toml") && steps.contains("systemctl enable --now venussup"),
        "the README's install steps changed shape:\n{steps}"
    );
    steps.replace("examples/host-b.toml", config)
}
