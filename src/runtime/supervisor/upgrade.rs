//! `venussup upgrade` at run time: the new program's checks as children
//! of the loop (`NEW --version`, then `NEW check --config ...`), their
//! output read through a pipe like a timer run's, the loop going on
//! meanwhile; then the handover: the state into a memfd, close-on-exec
//! cleared on exactly the descriptors it names, the loop's signals held,
//! and `execve` in place. The requesting client is answered by the new
//! image once it runs, or here when anything fails before the exec (then
//! nothing changed). What each answer means is decided in
//! `runtime/upgrade.rs`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::sys::signal::Signal;
use tracing::{info, warn};

use super::timer::RunOutput;
use super::{kill_group, Owner, Supervisor};
use crate::control::Response;
use crate::runtime::handover::{self, Anchor, Reason};
use crate::runtime::timer::{self, Running};
use crate::runtime::upgrade::{self as decide, FileFacts, Obstacles};
use crate::status::ExitKind;
use crate::sys::reexec;
use crate::sys::spawn::{self, Output, SpawnSpec};
use crate::util::clock::after;

/// Which check of the new program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Version,
    Check,
}

/// An upgrade under way: the client to answer, the new program, the
/// check that runs and its output.
#[derive(Debug)]
pub(super) struct Upgrade {
    client: u64,
    binary: PathBuf,
    step: Step,
    run: Running,
    output: RunOutput,
}

/// A digest of the config file's bytes, to tell whether it changed since
/// it was loaded (within one image: the hash need not be stable).
pub(super) fn config_digest(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// What the file system says of `path`.
fn file_facts(path: &Path) -> Result<FileFacts, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    Ok(FileFacts {
        regular: meta.is_file(),
        mode: meta.permissions().mode(),
        executable: nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok(),
    })
}

impl Supervisor {
    /// What stands in the way of a handover now, if anything.
    fn upgrade_obstacle(&self) -> Option<String> {
        decide::refusal(&Obstacles {
            stopping: self.stopping,
            upgrading: self.upgrade.as_ref().map(|u| u.binary.as_path()),
            reloading: self
                .services
                .iter()
                .filter(|s| s.retiring || s.replacement.is_some())
                .map(|s| s.plan.name.as_str())
                .collect(),
            config_changed: config_digest(&self.config) != self.config_digest,
        })
    }

    /// `upgrade` from control client `client`: refused at once, or the
    /// first check starts and the answer comes later (`None`).
    pub(super) fn upgrade_requested(
        &mut self,
        client: u64,
        binary: Option<PathBuf>,
    ) -> Option<Response> {
        if let Some(why) = self.upgrade_obstacle() {
            return Some(Response::err(format!("upgrade refused: {why}")));
        }
        let binary = binary.unwrap_or_else(|| self.binary.clone());
        if let Some(why) = decide::file_problem(&binary, file_facts(&binary)) {
            return Some(Response::err(format!(
                "upgrade refused: {why}; nothing was changed"
            )));
        }
        info!("upgrade to {} requested; checking it", binary.display());
        let now = Instant::now();
        match self.spawn_upgrade_check(client, &binary, Step::Version, now) {
            Ok(u) => {
                let until = after(now, decide::VERSION_TIMEOUT + decide::CHECK_TIMEOUT);
                if let Some(server) = self.control.as_mut() {
                    server.hold(client, until);
                }
                self.upgrade = Some(u);
                None
            }
            Err(e) => Some(Response::err(format!(
                "upgrade refused: {e}; nothing was changed"
            ))),
        }
    }

    /// Starts one check of `binary`, its output into a pipe.
    fn spawn_upgrade_check(
        &mut self,
        client: u64,
        binary: &Path,
        step: Step,
        now: Instant,
    ) -> Result<Upgrade, String> {
        let program = binary.display().to_string();
        let (argv, timeout) = match step {
            Step::Version => (vec![program, "--version".into()], decide::VERSION_TIMEOUT),
            Step::Check => {
                let mut argv = vec![
                    program,
                    "check".into(),
                    "--config".into(),
                    self.config.display().to_string(),
                ];
                if self.run_args.fs_root.root() != Path::new("/") {
                    argv.push("--fs-root".into());
                    argv.push(self.run_args.fs_root.root().display().to_string());
                }
                (argv, decide::CHECK_TIMEOUT)
            }
        };
        // The daemon's own environment: `check` plans with `pass_env` as
        // `run` does.
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let child = spawn::spawn(SpawnSpec::helper(&argv, &env, Output::Pipe, None))
            .map_err(|e| e.to_string())?;
        if let Some(out) = &child.output {
            let _ = nix::fcntl::fcntl(
                out,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
        }
        self.owners.insert(child.pid, Owner::Upgrade);
        Ok(Upgrade {
            client,
            binary: binary.to_path_buf(),
            step,
            run: Running::new(child.pid, now, Some(timeout)),
            output: RunOutput {
                pipe: child.output,
                log: None,
                kept: Vec::new(),
            },
        })
    }

    /// The check's output pipe, while it is open.
    pub(super) fn upgrade_pipe(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.upgrade
            .as_ref()
            .and_then(|u| u.output.pipe.as_ref())
            .map(AsFd::as_fd)
    }

    /// Reads what the check wrote, without blocking.
    pub(super) fn read_upgrade_output(&mut self) {
        let Some(out) = self.upgrade.as_mut().map(|u| &mut u.output) else {
            return;
        };
        let mut buf = [0u8; 8192];
        while let Some(pipe) = out.pipe.as_mut() {
            match pipe.read(&mut buf) {
                Ok(0) => out.pipe = None,
                Ok(n) => timer::keep_tail(&mut out.kept, &buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => out.pipe = None,
            }
        }
    }

    /// When the running check is killed.
    pub(super) fn upgrade_deadline(&self) -> Option<Instant> {
        self.upgrade.as_ref().and_then(|u| u.run.kill_at)
    }

    /// Kills a check past its time (its exit then fails the upgrade).
    pub(super) fn step_upgrade(&mut self, now: Instant) {
        let Some(u) = self.upgrade.as_mut() else {
            return;
        };
        if u.run.kill_at.is_some_and(|k| k <= now) {
            u.run.timed_out = Some(now.saturating_duration_since(u.run.started));
            u.run.kill_at = None;
            kill_group(u.run.pid, Signal::SIGKILL);
        }
    }

    /// A check ended: on to the next one, to the handover, or the upgrade
    /// fails with what the check said.
    pub(super) fn upgrade_check_exited(&mut self, how: ExitKind) {
        self.read_upgrade_output();
        let Some(u) = self.upgrade.take() else {
            return;
        };
        kill_group(u.run.pid, Signal::SIGKILL);
        let text = String::from_utf8_lossy(&u.output.kept).into_owned();
        let answer = match u.step {
            Step::Version => decide::version_answer(&u.binary, how, u.run.timed_out, &text)
                .map(|(version, _)| Some(version)),
            Step::Check => {
                decide::check_answer(&u.binary, how, u.run.timed_out, &text).map(|()| None)
            }
        };
        match (answer, u.step) {
            (Err(why), _) => self.upgrade_failed(u.client, &why),
            (Ok(version), Step::Version) => {
                info!(
                    "{} is venussup {}; checking the config under it",
                    u.binary.display(),
                    version.unwrap_or_default()
                );
                match self.spawn_upgrade_check(u.client, &u.binary, Step::Check, Instant::now()) {
                    Ok(next) => self.upgrade = Some(next),
                    Err(e) => self.upgrade_failed(u.client, &e),
                }
            }
            (Ok(_), Step::Check) => {
                let why = self.hand_over(u.client, &u.binary);
                self.upgrade_failed(u.client, &why);
            }
        }
    }

    /// The daemon stops (or reloads something away): an upgrade under way
    /// is abandoned.
    pub(super) fn cancel_upgrade(&mut self, why: &str) {
        if let Some(u) = self.upgrade.take() {
            kill_group(u.run.pid, Signal::SIGKILL);
            self.upgrade_failed(u.client, why);
        }
    }

    fn upgrade_failed(&mut self, client: u64, why: &str) {
        warn!("upgrade failed, venussup goes on as it was: {why}");
        if let Some(server) = self.control.as_mut() {
            server.respond(client, &Response::err(format!("upgrade failed: {why}")));
        }
    }

    /// Replaces this process's program with `binary`, handing over the
    /// state; returns only when that failed (with why), having undone
    /// what it did, so the loop goes on as before.
    fn hand_over(&mut self, client: u64, binary: &Path) -> String {
        if let Some(why) = self.upgrade_obstacle() {
            return why;
        }
        let anchor = Anchor::now();
        let mut out = self.outgoing(Reason::Upgrade, &anchor, true);
        out.state.upgrade_client = Some(client);
        // The new image's `upgrade` default: the file it was started from.
        out.state.binary = binary.to_path_buf();
        let bytes = match handover::encode(&out.header, &out.state) {
            Ok(b) => b,
            Err(e) => return format!("failed to encode the state: {e}"),
        };
        let memfd = match reexec::memfd_with(c"venussup-handover", &bytes) {
            Ok(fd) => fd,
            Err(e) => return format!("failed to make the memfd for the state: {e}"),
        };
        let mut argv = self.run_argv(binary);
        argv.extend(["--handover".to_string(), memfd.as_raw_fd().to_string()]);
        let (Ok(program), Ok(argv)) = (
            CString::new(binary.as_os_str().as_encoded_bytes()),
            argv.into_iter()
                .map(CString::new)
                .collect::<Result<Vec<_>, _>>(),
        ) else {
            return "a path holds a NUL byte".to_string();
        };
        let env = crate::runtime::panic::environment();
        info!(
            "handing over to {} ({} bytes of state, {} descriptors)",
            binary.display(),
            bytes.len(),
            out.fds.len()
        );
        for fd in &out.fds {
            let _ = reexec::set_inherit_raw(*fd, true);
        }
        let mask = match reexec::hold(&crate::runtime::signals::HELD) {
            Ok(m) => m,
            Err(e) => {
                for fd in &out.fds {
                    let _ = reexec::set_inherit_raw(*fd, false);
                }
                return format!("failed to hold the signals: {e}");
            }
        };
        let e = reexec::exec(&program, &argv, &env);
        // Still here: nothing was replaced. Everything back as it was.
        reexec::restore(&mask);
        for fd in &out.fds {
            let _ = reexec::set_inherit_raw(*fd, false);
        }
        drop(memfd);
        format!("failed to execute {}: {e}", binary.display())
    }
}
