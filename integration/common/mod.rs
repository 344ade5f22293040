//! Shared by the black-box tests: run the built `venussup` binary with a
//! kill-on-timeout guard and capture what it printed.
#![allow(dead_code)]

pub mod daemon;
pub mod debian;
pub mod example;
pub mod nspawn;
pub mod pidns;
pub mod planhost;
pub mod tmpfs;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// No single invocation of the binary in a test may take longer.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary under test, as Cargo built it for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_venussup"))
}

/// What one invocation printed and how it ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with everything printed unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `venussup ARGS...` in `cwd`, killing it if it outlives [`RUN_TIMEOUT`].
pub fn venussup_in(cwd: &Path, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(cwd);
    run_bounded(&mut cmd, RUN_TIMEOUT)
}

/// Runs `cmd` (stdin from /dev/null, output captured), killing it with
/// SIGKILL and panicking if it outlives `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Outcome {
    let what = format!("{cmd:?}");
    try_run_bounded(cmd, timeout)
        .unwrap_or_else(|| panic!("{what} ran longer than {timeout:?}; killed"))
}

/// Runs `cmd` in a process group of its own (stdin from /dev/null, output
/// captured); `None` when it outlived `timeout` and the group was killed.
pub fn try_run_bounded(cmd: &mut Command, timeout: Duration) -> Option<Outcome> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
    let pid = child.id();
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).map(|_| s)
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).map(|_| s)
    });
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    if rx.recv_timeout(timeout).is_err() {
        // SAFETY: kill(2) on the process group of a child we spawned and
        // have not reaped yet (the waiter thread has not returned), so the
        // group id cannot name anyone else's group.
        unsafe { libc::kill(-i32::try_from(pid).expect("pid fits"), libc::SIGKILL) };
        let _ = waiter.join();
        return None;
    }
    let status = waiter.join().expect("waiter").expect("wait");
    Some(Outcome {
        code: status.code(),
        stdout: out_reader.join().expect("reader").expect("read stdout"),
        stderr: err_reader.join().expect("reader").expect("read stderr"),
    })
}

/// Runs `venussup ARGS...` from the project root (so `examples/...` resolve).
pub fn venussup(args: &[&str]) -> Outcome {
    venussup_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// A file under the project root.
pub fn project_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The shipped Zabbix UserParameters, pointed at this build and at `config`.
pub fn zabbix_user_parameters(config: &Path) -> String {
    std::fs::read_to_string(project_file("units/zabbix_agentd.d/venussup.conf"))
        .expect("units/zabbix_agentd.d/venussup.conf")
        .replace(
            "/usr/local/bin/venussup",
            bin().to_str().unwrap_or_default(),
        )
        .replace(
            "/etc/venussup/venussup.toml",
            config.to_str().unwrap_or_default(),
        )
}

/// `check --fs-root ROOT` of `text` (written to ROOT/venussup.toml): what
/// it printed, and its `--json` document.
pub fn check_on(root: &Path, text: &str) -> (Outcome, serde_json::Value) {
    let path = root.join("venussup.toml");
    std::fs::write(&path, text).expect("write the config");
    let args = [
        "check",
        "--fs-root",
        root.to_str().expect("a UTF-8 path"),
        "--config",
        path.to_str().expect("a UTF-8 path"),
    ];
    let out = venussup(&args);
    let doc = venussup(&[&args[..], &["--json"]].concat()).json();
    (out, doc)
}

/// The planned service `name` of a `check --json` document.
pub fn planned_service(doc: &serde_json::Value, name: &str) -> serde_json::Value {
    doc["plan"]["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {doc}"))
        .clone()
}

/// Asserts that `out`'s stderr has an error at `line:col` whose message
/// contains `needle` (config diagnostics are `file:line:col: error: ...`).
pub fn assert_error_at(out: &Outcome, line: usize, col: usize, needle: &str) {
    let at = format!(":{line}:{col}: error: ");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(&at) && l.contains(needle)),
        "no error at {line}:{col} containing {needle:?} in:\n{}",
        out.stderr
    );
}

/// Asks `f` every `every` until it answers, at most `bound`; past the
/// bound, fails with `what` and `diag()`. For state that no event reports
/// (a real server's HTTP API, a file's size): `every` is pacing, not a
/// guess at how long something takes (the bound is the only limit).
pub fn eventually<T>(
    what: &str,
    bound: std::time::Duration,
    every: std::time::Duration,
    diag: &dyn Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {bound:?}\n{}",
            diag()
        );
        std::thread::sleep(every);
    }
}
