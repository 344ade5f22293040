//! `venussup check`: every kind of config mistake is reported with its
//! line and column, all at once, and valid configs print their plan.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::path::PathBuf;

use common::{assert_error_at, project_file, venussup, Outcome};

/// Writes `text` as a config in a fresh folder and runs `check` on it.
fn check_text(text: &str) -> (tempfile::TempDir, PathBuf, Outcome) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("venussup.toml");
    fs::write(&path, text).unwrap();
    let out = venussup(&["check", "--config", path.to_str().unwrap()]);
    (dir, path, out)
}

/// A valid service, to which each case adds one mistake.
const OK_SERVICE: &str = "[[service]]\nname = \"sealer\"\ncommand = [\"/bin/sleep\", \"1000\"]\n";

/// One broken config per kind of mistake: (what, config, line, column,
/// part of the message).
const BROKEN: &[(&str, &str, usize, usize, &str)] = &[
    ("toml syntax", "[host\n", 1, 6, "expected `]`"),
    ("unknown key", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\ncpu = \"75%\"\n", 4, 1, "unknown field `cpu`"),
    ("unknown table", "[[services]]\nname = \"a\"\n", 1, 3, "did you mean `[[service]]`"),
    ("wrong type", "[[service]]\nname = \"a\"\ncommand = \"/bin/true run\"\n", 3, 11, "invalid type: string"),
    ("missing command", "[[service]]\nname = \"a\"\n", 1, 1, "missing field `command`"),
    ("empty command", "[[service]]\nname = \"a\"\ncommand = []\n", 3, 11, "`command` is empty"),
    ("duplicate name", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\n[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\n", 5, 8, "already the name"),
    ("bad name", "[[service]]\nname = \"../etc\"\ncommand = [\"/bin/true\"]\n", 2, 8, "must not start with `.`"),
    ("unknown after", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nafter = [\"sealr\"]\n", 4, 10, "`sealr` in `after` of `a` is not a service"),
    ("ordering cycle", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nafter = [\"b\"]\n[[service]]\nname = \"b\"\ncommand = [\"/bin/true\"]\nafter = [\"a\"]\n", 8, 10, "ordering cycle: a → b → a"),
    ("relative program not found", "[[service]]\nname = \"a\"\ncommand = [\"./bin/standin\"]\n", 3, 11, "does not exist"),
    ("program not in PATH", "[[service]]\nname = \"a\"\ncommand = [\"venus-wroker\", \"run\"]\n", 3, 11, "is in no folder of PATH"),
    ("bad duration", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nstop_timeout = \"5 minutes please\"\n", 4, 16, "is not a duration"),
    ("bad cpu share", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\ncpus = \"175%\"\n", 4, 8, "from \"1%\" to \"100%\""),
    ("shares over 100%", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\ncpus = \"75%\"\n[[service]]\nname = \"b\"\ncommand = [\"/bin/true\"]\ncpus = \"50%\"\n", 8, 8, "add up to 125%"),
    ("cpu list not on this host", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\ncpus = \"0,4000-4001\"\n", 4, 8, "4000-4001"),
    ("unknown task", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\ntasks = [\"PreCommit3\"]\n", 4, 10, "unknown variant `PreCommit3`"),
    ("bad signal", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nstop_signal = \"SIGSTOPPP\"\n", 4, 15, "not a signal name"),
    ("bad env name", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nenv = { \"1X\" = \"y\" }\n", 4, 9, "not an environment variable name"),
    ("bad ready address", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nready = { tcp = \"localhost\" }\n", 4, 17, "not an IP address and port"),
    ("oom_score_adjust out of range", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\noom_score_adjust = 2000\n", 4, 20, "the kernel takes -1000 (never OOM-killed) to 1000"),
    ("unset variable", "[[service]]\nname = \"a\"\ncommand = [\"/bin/echo\", \"${MINER_TOKN}\"]\n", 3, 11, "`${MINER_TOKN}`"),
    ("unset variable in a drain command", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\ndrain = { command = [\"/bin/echo\", \"--repo=${REPO}\"] }\n", 4, 21, "`${REPO}` in the command of `a drain` is not set"),
    ("unset variable in a ready probe", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nready = { command = [\"/bin/test\", \"-e\", \"${REPO}/api\"] }\n", 4, 21, "`${REPO}` in the command of `a ready probe` is not set"),
    ("once on a daemon", "[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nonce = true\n", 4, 8, "`once` applies to oneshot"),
    ("jitter not below every", "[[timer]]\nname = \"pledge\"\ncommand = [\"/bin/true\"]\nevery = \"1m\"\njitter = \"1m\"\n", 5, 10, "must be shorter than `every`"),
    ("bad smt policy", "[host]\nsmt = \"disabled\"\n", 2, 7, "expected `keep` or `off`"),
];

#[test]
fn each_kind_of_mistake_is_an_error_at_its_line_and_column() {
    for (what, text, line, col, needle) in BROKEN {
        let (_dir, _path, out) = check_text(text);
        assert_eq!(out.code, Some(1), "{what}: expected exit 1\n{}", out.stderr);
        assert!(
            out.stdout.is_empty(),
            "{what}: an invalid config prints no plan"
        );
        assert_error_at(&out, *line, *col, needle);
        assert!(out.stderr.contains("nothing was started"), "{what}");
    }
}

#[test]
fn all_errors_are_reported_at_once_even_several_in_one_table() {
    let text = format!(
        "{OK_SERVICE}cpu = \"75%\"\ncpus = 75\nstop_timeout = \"soon\"\n\
         [[service]]\nname = \"sealer\"\ncommand = []\nafter = [\"nobody\"]\n"
    );
    let (_dir, _path, out) = check_text(&text);
    out.expect_code(1);
    assert_error_at(&out, 4, 1, "unknown field `cpu`");
    assert_error_at(&out, 5, 8, "invalid type: integer `75`");
    assert_error_at(&out, 6, 16, "`soon` is not a duration");
    assert_error_at(&out, 8, 8, "already the name");
    assert_error_at(&out, 9, 11, "`command` is empty");
    assert_error_at(&out, 10, 10, "`nobody` in `after`");
    assert!(out.stderr.contains("6 errors"), "{}", out.stderr);
}

#[test]
fn json_report_of_an_invalid_config_lists_errors_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.toml");
    fs::write(&path, format!("{OK_SERVICE}after = [\"nobody\"]\n")).unwrap();
    let out = venussup(&["check", "--json", "-c", path.to_str().unwrap()]);
    out.expect_code(1);
    let doc = out.json();
    assert_eq!(doc["valid"], false);
    assert!(doc["plan"].is_null());
    let err = &doc["errors"][0];
    assert_eq!(
        (err["line"].as_u64(), err["column"].as_u64()),
        (Some(4), Some(10))
    );
    assert!(err["message"].as_str().unwrap().contains("nobody"));
}

#[test]
fn a_missing_config_file_is_named() {
    let out = venussup(&["check", "--config", "/nonexistent/venussup.toml"]);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("/nonexistent/venussup.toml: error: cannot read the config file"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_usage_exits_2() {
    venussup(&["check", "--no-such-flag"]).expect_code(2);
    venussup(&["frobnicate"]).expect_code(2);
}

#[test]
fn host_b_example_prints_the_plan_of_the_deployment_plans_host_b() {
    let cfg = project_file("examples/host-b.toml");
    let out = venussup(&["check", "--config", cfg.to_str().unwrap()]);
    out.expect_code(0);
    let text = &out.stdout;
    for expected in [
        "start order: worker01 → worker02 → worker01-attach → worker02-attach",
        "[1] worker01 (daemon · role worker · tasks PreCommit1, PreCommit2)",
        "VENUS_WORKER_PATH=/var/lib/venus/worker01",
        "--listen=0.0.0.0:3457",
        "VENUS_WORKER_PATH=/var/lib/venus/worker02",
        "request 75%",
        "request 25%",
        "BELLMAN_CPU_UTILIZATION=0.2",
        "nofile 1048576",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // The Venus binaries are not on a test machine: warnings, not errors.
    assert!(
        out.stderr
            .contains("warning: `/usr/local/bin/venus-worker`"),
        "{}",
        out.stderr
    );

    let json = venussup(&["check", "--json", "--config", cfg.to_str().unwrap()]);
    let doc = json.expect_code(0).json();
    assert_eq!(doc["valid"], true);
    let services = doc["plan"]["services"].as_array().unwrap();
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["worker01", "worker02", "worker01-attach", "worker02-attach"]
    );
    assert_eq!(services[0]["cpus"]["request"], "75%");
    assert_eq!(services[1]["gpus"]["request"], "auto");
    assert_eq!(services[0]["limits"]["nofile"], 1_048_576);
}

#[test]
fn every_shipped_example_is_valid() {
    for entry in fs::read_dir(project_file("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // The cluster file is every host's: `check --cluster` reads it.
            let how = if path.ends_with("cluster.toml") {
                "--cluster"
            } else {
                "--config"
            };
            let out = venussup(&["check", how, path.to_str().unwrap()]);
            assert_eq!(out.code, Some(0), "{}:\n{}", path.display(), out.stderr);
        }
    }
}

#[test]
fn secrets_from_an_env_file_reach_the_plan_but_never_the_output() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("miner.env"),
        "# token\nMINER_TOKEN=eyJhbGciOi.secret-value\n",
    )
    .unwrap();
    let path = dir.path().join("v.toml");
    fs::write(
        &path,
        "[host]\nenv_file = \"miner.env\"\n[host.env]\nAPI_KEY = \"k-123456\"\n\
         [[service]]\nname = \"w\"\ncommand = [\"/bin/echo\", \"--miner-token=${MINER_TOKEN}\", \"--key\", \"k-123456\", \"$${HOME}\"]\n",
    )
    .unwrap();
    for args in [vec!["check"], vec!["check", "--json"]] {
        let mut args = args.clone();
        args.extend(["--config", path.to_str().unwrap()]);
        let out = venussup(&args);
        out.expect_code(0);
        assert!(!out.stdout.contains("secret-value"), "{}", out.stdout);
        assert!(!out.stdout.contains("k-123456"), "{}", out.stdout);
        assert!(out.stdout.contains("<redacted>"));
        assert!(
            out.stdout.contains("${HOME}"),
            "`$$` is a literal `$`: {}",
            out.stdout
        );
    }
}

#[test]
fn a_relative_program_is_found_from_the_configs_folder() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("bin")).unwrap();
    let standin = dir.path().join("bin/standin");
    fs::write(&standin, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(
        &standin,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = dir.path().join("v.toml");
    fs::write(
        &path,
        "[[service]]\nname = \"a\"\ncommand = [\"./bin/standin\"]\n",
    )
    .unwrap();
    let out = venussup(&["check", "--config", path.to_str().unwrap()]);
    out.expect_code(0);
    assert!(!out.stderr.contains(": warning:"), "{}", out.stderr);
}

#[test]
fn oom_score_adjust_is_shown_in_the_plan() {
    let (_dir, path, out) = check_text(&format!("{OK_SERVICE}oom_score_adjust = -500\n"));
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("oom_score_adj -500 (set before exec; 0 unless configured)"),
        "{}",
        out.stdout
    );
    let json = venussup(&["check", "--json", "--config", path.to_str().unwrap()]);
    let doc = json.expect_code(0).json();
    assert_eq!(doc["plan"]["services"][0]["oom_score_adjust"], -500);
    let (_dir, path, _) = check_text(OK_SERVICE);
    let json = venussup(&["check", "--json", "--config", path.to_str().unwrap()]);
    assert_eq!(
        json.json()["plan"]["services"][0]["oom_score_adjust"],
        0,
        "the default"
    );
}

/// Free bytes of the filesystem of `path` for an unprivileged writer, as
/// `df` says.
fn df_available(path: &str) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// This machine's own mounts and `/var/tmp`: a seal path on the root
/// filesystem is said, `/dev/shm` (a tmpfs of its own) is not, and the
/// SDR parent cache (56 GiB for 32 GiB sectors) and the PoRep parameters
/// (45 GiB) are weighed against `/var/tmp`'s real free space.
#[test]
fn seal_paths_and_var_tmp_are_checked_against_this_machines_mounts_and_free_space() {
    let seal = tempfile::tempdir_in("/var/tmp").unwrap();
    let seal = seal.path().to_str().unwrap().to_string();
    let text = format!(
        "[[service]]\nname = \"sealer\"\nrole = \"sealer\"\ntasks = [\"WindowPoSt\"]\ncommand = [\"/bin/sleep\", \"run\"]\n\
         [[service]]\nname = \"p1\"\nrole = \"worker\"\ntasks = [\"PreCommit1\"]\n\
         command = [\"/bin/sleep\", \"run\", \"--addpiece=false\", \"--precommit2=false\", \"--commit=false\", \"--unseal=false\", \"--replica-update=false\", \"--prove-replica-update2=false\", \"--regen-sector-key=false\"]\n\
         [[service]]\nname = \"attach-root\"\nkind = \"oneshot\"\ncommand = [\"/bin/sleep\", \"storage\", \"attach\", \"--init\", \"--seal\", \"{seal}/\"]\n\
         [[service]]\nname = \"attach-shm\"\nkind = \"oneshot\"\ncommand = [\"/bin/sleep\", \"storage\", \"attach\", \"--init\", \"--seal\", \"/dev/shm\"]\n\
         [capacity]\nsector_size = \"32GiB\"\n"
    );
    let (_dir, _path, out) = check_text(&text);
    out.expect_code(0);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let with = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        with(&format!(
            "{seal} (`attach-root`'s seal path) is on the root filesystem"
        )),
        1,
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr
            .contains("/dev/shm (`attach-shm`'s seal path) is"),
        "{}",
        out.stderr
    );
    let need = (56 + 45) << 30;
    let cached = [
        "/var/tmp/filecoin-parents",
        "/var/tmp/filecoin-proof-parameters",
    ]
    .iter()
    .any(|d| std::path::Path::new(d).exists());
    let warned = with("(56GiB, for `p1`) and the proof parameters in /var/tmp/filecoin-proof-parameters (45GiB, for `sealer`) need 101GiB for 32GiB sectors");
    if df_available("/var/tmp") < need && !cached {
        assert_eq!(warned, 1, "{}", out.stderr);
    } else if !cached {
        assert_eq!(warned, 0, "{}", out.stderr);
    }
}
