//! Venus-aware checks in `venussup check`: broken copies of the deployment
//! plan's examples report each known mistake with its place and its fix.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::path::Path;

use common::{project_file, venussup, Outcome};
use venussup::host::topology::sim::{Shape, SimHost, Style};

/// The example with each `(from, to)` replacement applied; panics if a
/// `from` is missing, so the test follows the example when it changes.
fn broken_copy(example: &str, edits: &[(&str, &str)]) -> String {
    let mut text = fs::read_to_string(project_file(example)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{example} no longer contains {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

fn check(dir: &Path, text: &str, extra: &[&str]) -> Outcome {
    let path = dir.join("venussup.toml");
    fs::write(&path, text).unwrap();
    let mut args = vec!["check", "--config", path.to_str().unwrap()];
    args.extend(extra);
    venussup(&args)
}

fn assert_line(out: &Outcome, severity: &str, needles: &[&str]) {
    assert!(
        out.stderr.lines().any(
            |l| l.contains(&format!(": {severity}: ")) && needles.iter().all(|n| l.contains(n))
        ),
        "no {severity} with {needles:?} in:\n{}",
        out.stderr
    );
}

#[test]
fn a_broken_host_b_reports_each_worker_mistake() {
    let text = broken_copy(
        "examples/host-b.toml",
        &[
            // worker02 forgets its own repo and its --listen, as the plan did
            ("env = { VENUS_WORKER_PATH = \"/var/lib/venus/worker02\", VENUS_WORKER_CONFIG = \"/var/lib/venus/worker02/config.toml\" }\nready", "env = { VENUS_WORKER_PATH = \"/var/lib/venus/worker01\", BELLMAN_NO_GPU = \"0\", TMP_DIR = \"/tmp/gpu\" }\nready"),
            ("  \"--listen=0.0.0.0:3457\",        # the plan forgot this: both would take 3456\n", ""),
            // and runs PreCommit1 too, which venus-worker enables by default
            ("\"--precommit1=false\", ", ""),
            // worker01 declares AddPiece but turns it off, and has too few files
            ("tasks = [\"PreCommit1\", \"PreCommit2\"]", "tasks = [\"AddPiece\", \"PreCommit1\", \"PreCommit2\"]\nlimits = { nofile = 65536 }"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), &text, &[]);
    out.expect_code(1);
    assert_line(
        &out,
        "error",
        &[
            "`worker01` and `worker02` share the worker repo /var/lib/venus/worker01",
            "VENUS_WORKER_PATH",
        ],
    );
    assert_line(
        &out,
        "error",
        &[
            "`worker02` listens on 0.0.0.0:3456 and `worker01` on 0.0.0.0:3456",
            "`--listen`",
        ],
    );
    assert_line(
        &out,
        "error",
        &[
            "BELLMAN_NO_GPU disables it whatever its value",
            "`worker02`",
        ],
    );
    assert_line(&out, "error", &["nofile 65536", "below 100000"]);
    assert_line(&out, "warning", &["TMP_DIR has no effect", "TMPDIR"]);
    assert_line(
        &out,
        "warning",
        &["`worker02` will also run PreCommit1", "--precommit1=false"],
    );
    assert_line(
        &out,
        "warning",
        &["`worker01` declares AddPiece", "`--addpiece=false`"],
    );
    assert_line(
        &out,
        "note",
        &["FIL_PROOFS_MAXIMIZE_CACHING", "no longer read"],
    );
    // Each points into the file: line and column of the offending entry.
    assert!(
        out.stderr
            .lines()
            .filter(|l| l.contains("venussup.toml:"))
            .count()
            >= 8,
        "{}",
        out.stderr
    );
}

#[test]
fn on_failure_for_a_venus_worker_is_flagged() {
    let text = broken_copy(
        "examples/host-b.toml",
        &[(
            "stop_timeout = \"2min\"",
            "stop_timeout = \"2min\"\nrestart = \"on-failure\"",
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), &text, &[]);
    out.expect_code(0);
    assert_line(
        &out,
        "warning",
        &["`worker01`", "exit 0 after a fatal error", "use \"always\""],
    );
}

/// Host A's sealer repo, simulated under an fs root, with its config.toml,
/// on the plan's 128 cores (the sealer and its worker have CPU shares).
fn host_a_with_sealer_config(sealer_toml: &str) -> (tempfile::TempDir, Outcome) {
    let root = tempfile::tempdir().unwrap();
    SimHost::regular(root.path(), &Shape::plan_host(), Style::MODERN).unwrap();
    let repo = root.path().join("var/lib/venus/sealer");
    fs::create_dir_all(&repo).unwrap();
    fs::write(repo.join("config.toml"), sealer_toml).unwrap();
    let text = fs::read_to_string(project_file("examples/host-a.toml")).unwrap();
    let out = check(
        root.path(),
        &text,
        &["--fs-root", root.path().to_str().unwrap()],
    );
    (root, out)
}

#[test]
fn the_sealers_own_config_is_checked_against_its_tasks() {
    // venus-sealer allows every task unless told otherwise.
    let (_root, out) = host_a_with_sealer_config(
        "[Sealing]\nMaxSealingSectors = 0\n[Storage]\nAllowAddPiece = false\nAllowUnseal = false\n",
    );
    out.expect_code(0);
    assert_line(&out, "warning", &["MaxSealingSectors = 0 means no limit"]);
    for allow in ["AllowPreCommit1", "AllowPreCommit2", "AllowCommit"] {
        assert_line(
            &out,
            "warning",
            &[
                &format!("[Storage] {allow} is on"),
                &format!("set {allow} = false"),
            ],
        );
    }
    assert!(
        !out.stderr.contains("AllowAddPiece is on"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_sealer_configured_as_the_plan_says_passes() {
    let (_root, out) = host_a_with_sealer_config(
        "[Sealing]\nMaxSealingSectors = 6\n[Storage]\nParallelFetchLimit = 10\nAllowAddPiece = false\nAllowPreCommit1 = false\nAllowPreCommit2 = false\nAllowCommit = false\nAllowUnseal = false\n",
    );
    out.expect_code(0);
    assert!(!out.stderr.contains("config.toml"), "{}", out.stderr);
}

/// The 1-based line and column where `needle` starts in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap();
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    (text[..at].matches('\n').count() + 1, at - line_start + 1)
}

#[test]
fn a_command_line_the_real_cli_rejects_and_a_listen_probe_on_a_non_worker_are_errors_at_their_place(
) {
    let text = broken_copy(
        "examples/host-a.toml",
        &[
            // `--repo` is a global flag of venus-worker: after `run` it fails.
            (
                "\"/usr/local/bin/venus-worker\", \"run\",\n",
                "\"/usr/local/bin/venus-worker\", \"run\", \"--repo=/var/lib/venus/worker\",\n",
            ),
            // The sealer is no venus-worker.
            (
                "ready = { tcp = \"127.0.0.1:2345\", timeout = \"10min\" }",
                "ready = { worker_listen = true, timeout = \"10min\" }",
            ),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), &text, &[]);
    out.expect_code(1);
    let (line, col) = position(
        &text,
        "command = [\n  \"/usr/local/bin/venus-worker\", \"run\", \"--repo",
    );
    common::assert_error_at(&out, line, col + "command = ".len(), "venus-worker rejects this command line (flag provided but not defined: -repo) and exits 0 at once");
    assert_line(
        &out,
        "error",
        &["`--repo` is a global flag of venus-worker: put it before `run`"],
    );
    let (line, col) = position(&text, "worker_listen = true, timeout = \"10min\"");
    common::assert_error_at(&out, line, col + "worker_listen = ".len(), "`ready.worker_listen` probes where a venus-worker listens, and `sealer` has `role = \"sealer\"`");
}
