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

/// `examples/host-b.toml` with `edits` (see `broken_copy`), checked.
fn check_host_b(edits: &[(&str, &str)]) -> Outcome {
    let text = broken_copy("examples/host-b.toml", edits);
    let dir = tempfile::tempdir().unwrap();
    check(dir.path(), &text, &[])
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
    let out = check_host_b(&[
            // worker02 forgets its own repo and its --listen, as the plan did
            ("env = { VENUS_WORKER_PATH = \"/var/lib/venus/worker02\" }\nready", "env = { VENUS_WORKER_PATH = \"/var/lib/venus/worker01\", BELLMAN_NO_GPU = \"0\", TMP_DIR = \"/tmp/gpu\" }\nready"),
            ("  \"--listen=0.0.0.0:3457\",        # the plan forgot this: both would take 3456\n", ""),
            // and runs PreCommit1 too, which venus-worker enables by default
            ("\"--precommit1=false\", ", ""),
            // worker01 declares AddPiece but turns it off, and has too few files
            ("tasks = [\"PreCommit1\", \"PreCommit2\"]", "tasks = [\"AddPiece\", \"PreCommit1\", \"PreCommit2\"]"),
            ("limits = { memory_max = \"527GiB\" }", "limits = { memory_max = \"527GiB\", nofile = 65536 }"),
        ]);
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
    let out = check_host_b(&[(
        "stop_timeout = \"2min\"",
        "stop_timeout = \"2min\"\nrestart = \"on-failure\"",
    )]);
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
    // 0 is no limit to venus-sealer: an error, whatever the plan.
    out.expect_code(1);
    assert_line(&out, "error", &["MaxSealingSectors = 0 means no limit"]);
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
        &format!("[Sealing]\nMaxSealingSectors = 6\n[Storage]\nParallelFetchLimit = 10\n{CLASSIC_OFF}{SNAP_OFF}"),
    );
    out.expect_code(0);
    assert!(!out.stderr.contains("config.toml"), "{}", out.stderr);
}

const CLASSIC_OFF: &str = "AllowAddPiece = false\nAllowPreCommit1 = false\nAllowPreCommit2 = false\nAllowCommit = false\nAllowUnseal = false\n";
const SNAP_OFF: &str =
    "AllowReplicaUpdate = false\nAllowProveReplicaUpdate2 = false\nAllowRegenSectorKey = false\n";

/// Host A's sealer turned every sealing task off but the snap-deal ones,
/// which venus-sealer (v1.4.1 and later) also allows by default: it would
/// take ProveReplicaUpdate2, a C2-class GPU proof, beside its WindowPoSt.
#[test]
fn a_prove_only_sealer_leaving_the_snap_tasks_on_is_told_each() {
    let (_root, out) = host_a_with_sealer_config(&format!(
        "[Sealing]\nMaxSealingSectors = 6\n[Storage]\n{CLASSIC_OFF}AllowRegenSectorKey = false\n"
    ));
    out.expect_code(0);
    assert_line(
        &out,
        "warning",
        &[
            "[Storage] AllowProveReplicaUpdate2 is on (the default), but `sealer` only proves",
            "C2-class GPU proof",
            "set AllowProveReplicaUpdate2 = false",
        ],
    );
    assert_line(
        &out,
        "warning",
        &[
            "[Storage] AllowReplicaUpdate is on (the default)",
            "set AllowReplicaUpdate = false",
        ],
    );
    assert!(
        !out.stderr.contains("AllowRegenSectorKey is on"),
        "{}",
        out.stderr
    );
}

/// A C2 worker that leaves venus-worker's snap-deal switches at their
/// default (on) is told the three flags in one warning; with them off it
/// is told nothing about its tasks.
#[test]
fn a_worker_leaving_the_snap_tasks_on_is_told_the_flags() {
    let worker = |flags: &str| {
        format!(
            "[[service]]\nname = \"c2\"\nrole = \"worker\"\ntasks = [\"Commit\"]\ncommand = [\"/bin/sleep\", \"run\", \"--addpiece=false\", \"--precommit1=false\", \"--precommit2=false\", \"--unseal=false\"{flags}]\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), &worker(""), &[]);
    out.expect_code(0);
    assert_line(
        &out,
        "warning",
        &[
            "`c2` will also run ReplicaUpdate, ProveReplicaUpdate2, RegenSectorKey",
            "(the snap-deal tasks since v1.4.1)",
            "add `--replica-update=false`, `--prove-replica-update2=false`, `--regen-sector-key=false`",
        ],
    );
    let out = check(
        dir.path(),
        &worker(", \"--replica-update=false\", \"--prove-replica-update2=false\", \"--regen-sector-key=false\""),
        &[],
    );
    out.expect_code(0);
    assert!(!out.stderr.contains("will also run"), "{}", out.stderr);
}

/// The same repo spelled with a trailing slash (or `//`, `/./`) is the same
/// folder: two workers there are an error.
#[test]
fn a_repo_spelled_with_a_trailing_slash_is_still_shared() {
    let out = check_host_b(&[(
        "env = { VENUS_WORKER_PATH = \"/var/lib/venus/worker02\"",
        "env = { VENUS_WORKER_PATH = \"/var/lib/venus//./worker01/\"",
    )]);
    out.expect_code(1);
    assert_line(
        &out,
        "error",
        &["`worker01` and `worker02` share the worker repo /var/lib/venus/worker01;"],
    );
}

/// A host under `--fs-root` whose simulated mount table puts the seal disk
/// on NFS and leaves the store path on `/`: the real binary reads the table
/// and the free space under the root and says both, at the attach lines.
#[test]
fn simulated_nfs_seal_path_and_a_store_path_on_root_under_an_fs_root() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("proc/self")).unwrap();
    fs::write(
        root.path().join("proc/self/mountinfo"),
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:50 / /mnt/nfs rw - nfs4 nas:/export rw\n",
    )
    .unwrap();
    fs::create_dir_all(root.path().join("mnt/nfs/seal")).unwrap();
    let text = "\
[[service]]
name = \"seal-attach\"
kind = \"oneshot\"
command = [\"/bin/true\", \"storage\", \"attach\", \"--init\", \"--seal\", \"/mnt/nfs/seal\"]

[[service]]
name = \"store-attach\"
kind = \"oneshot\"
command = [\"/bin/true\", \"storage\", \"attach\", \"--init\", \"--store\", \"/mnt/store\"]
";
    let out = check(
        root.path(),
        text,
        &["--fs-root", root.path().to_str().unwrap()],
    );
    out.expect_code(0);
    assert_line(
        &out,
        "warning",
        &[
            "venussup.toml:4:11",
            "/mnt/nfs/seal (`seal-attach`'s seal path) is on network storage (nfs4 mounted at /mnt/nfs)",
            "seal on fast local disks",
        ],
    );
    assert_line(
        &out,
        "warning",
        &[
            "venussup.toml:9:11",
            "/mnt/store (`store-attach`'s store path) is on the root filesystem",
            "`requires_mounts` of `store-attach`",
        ],
    );
    // A store path on NFS is the usual layout: no warning.
    let nfs_store = text.replace("/mnt/store", "/mnt/nfs/store");
    let out = check(
        root.path(),
        &nfs_store,
        &["--fs-root", root.path().to_str().unwrap()],
    );
    assert!(
        !out.stderr
            .lines()
            .any(|l| l.contains(": warning: ") && l.contains("/mnt/nfs/store")),
        "{}",
        out.stderr
    );
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
