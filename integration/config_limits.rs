//! Issue #18, replayed: values `check` used to accept and the daemon could
//! not live with. Each is now an error at its line and column, in `check`
//! and in `reload` (which keeps the running config), and the largest
//! duration allowed cannot panic the loop.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::daemon::{pid_of, Setup, WAIT};
use common::{assert_error_at, venussup, Outcome};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const SERVICE: &str = "[[service]]\nname = \"a\"\ncommand = [\"/bin/sleep\", \"1000\"]\n";

/// Writes `text` (bytes: some cases are not UTF-8) as a config and runs
/// `check` on it.
fn check_bytes(text: &[u8]) -> (tempfile::TempDir, PathBuf, Outcome) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("venussup.toml");
    fs::write(&path, text).unwrap();
    let out = venussup(&["check", "--config", path.to_str().unwrap()]);
    (dir, path, out)
}

/// The exact values of the issue (and their neighbours): (config, line,
/// column, part of the message).
const BAD: &[(&str, usize, usize, &str)] = &[
    ("[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nbackoff_max = \"584542046090y\"\n", 4, 15, "longer than 100 years"),
    ("[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nstop_timeout = \"584542046090y\"\n", 4, 16, "longer than 100 years"),
    ("[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nready = { file = \"/x\", timeout = \"584542046090y\" }\n", 4, 34, "longer than 100 years"),
    ("[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nbackoff_max = \"100y 1s\"\n", 4, 15, "longer than 100 years"),
    ("[[timer]]\nname = \"t\"\ncommand = [\"/bin/true\"]\nevery = \"584542046090y\"\n", 4, 9, "longer than 100 years"),
    ("[[timer]]\nname = \"t\"\ncommand = [\"/bin/true\"]\nevery = \"1ns\"\n", 4, 9, "shorter than 1ms"),
    ("[[timer]]\nname = \"t\"\ncommand = [\"/bin/true\"]\nevery = \"500ms\"\n", 4, 9, "at least 1s"),
    ("[host]\nlog = { max_size = \"0\" }\n", 2, 20, "at least \"1MiB\""),
    ("[host]\nlog = { max_size = 1000 }\n", 2, 20, "at least \"1MiB\""),
    ("[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nlimits = { memory_max = \"4KiB\" }\n", 4, 25, "at least \"1MiB\""),
    ("[host]\nlog = { keep = 4294967295 }\n", 2, 16, "between 0 and 1000"),
    ("[[host.hook]]\ncommand = [\"/bin/true\"]\ntries = 0\n", 3, 9, "between 1 and 100"),
    ("[host]\nstate_dir = \"\"\n", 2, 13, "empty path"),
    ("[host]\nlog_dir = \"\"\n", 2, 11, "empty path"),
    ("[host]\nenv_file = \"\"\n", 2, 12, "empty path"),
    ("[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nworkdir = \"\"\n", 4, 11, "empty path"),
    ("[host]\nmetrics = { listen = \"999.0.0.1:99999\" }\n", 2, 22, "not an IP address and port"),
    ("[host]\nmetrics = { listen = \"localhost\" }\n", 2, 22, "not an IP address and port"),
    ("[[service]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nenv = { A = \"x\\u0000y\" }\n", 4, 13, "NUL character"),
    ("[[service]]\nname = \"a\"\ncommand = [\"/bin/true\", \"a\\u0000b\"]\n", 3, 25, "NUL character"),
    ("[host]\nstate_dir = \"/run/a\\u0000b\"\n", 2, 13, "NUL character"),
    // [capacity] counts and figures: a sum of them overflowed (a panic of
    // `check` and `plan`), a 0B figure counted sectors without end.
    ("[capacity]\nsector_size = \"32GiB\"\nother_hosts = 18446744073709551615\n", 3, 15, "it is between 0 and 100000"),
    ("[capacity]\nsector_size = \"32GiB\"\nreserve = 100001\n", 3, 11, "it is between 0 and 100000"),
    ("[capacity]\nsector_size = \"32GiB\"\nper_sector_memory = \"0B\"\n", 3, 21, "figure of 0B"),
    ("[capacity]\nsector_size = \"32GiB\"\nwindow_post_memory = \"0\"\n", 3, 22, "figure of 0B"),
];

#[test]
fn each_bad_value_of_the_issue_is_an_error_at_its_place() {
    for (text, line, col, needle) in BAD {
        let (_dir, _, out) = check_bytes(text.as_bytes());
        out.expect_code(1);
        assert_error_at(&out, *line, *col, needle);
    }
}

#[test]
fn invalid_utf8_is_an_error_at_its_line_and_column() {
    let mut text = SERVICE.as_bytes().to_vec();
    text.extend_from_slice(b"env = { A = \"caf\xe9\" }\n");
    let (_dir, _, out) = check_bytes(&text);
    out.expect_code(1);
    assert_error_at(&out, 4, 17, "not UTF-8");
}

#[test]
fn env_file_names_follow_the_env_rule_and_values_hold_no_nul() {
    for (line, why) in [
        ("1BAD=x", "`1BAD` is not an environment variable name"),
        ("A-B=x", "`A-B` is not an environment variable name"),
        ("A=x\0y", "the value of `A` contains a NUL character"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("secret.env"), format!("OK=1\n{line}\n")).unwrap();
        let config = format!("{SERVICE}env_file = \"secret.env\"\n");
        let path = dir.path().join("venussup.toml");
        fs::write(&path, config).unwrap();
        let out = venussup(&["check", "--config", path.to_str().unwrap()]);
        out.expect_code(1);
        assert_error_at(&out, 4, 12, &format!("secret.env:2: {why}"));
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("secret.env"), b"A=caf\xe9\n").unwrap();
    let path = dir.path().join("venussup.toml");
    fs::write(&path, format!("{SERVICE}env_file = \"secret.env\"\n")).unwrap();
    let out = venussup(&["check", "--config", path.to_str().unwrap()]);
    out.expect_code(1);
    assert_error_at(&out, 4, 12, "is not UTF-8 text");
}

#[test]
fn a_reload_with_a_huge_duration_is_refused_and_the_daemon_runs_on() {
    let setup = Setup::new(SERVICE);
    let d = setup.start();
    let pid = pid_of(&d.running("a"));
    let good = fs::read_to_string(setup.config()).unwrap();
    fs::write(
        setup.config(),
        format!("{good}backoff_max = \"584542046090y\"\n"),
    )
    .unwrap();
    let out = setup.cli(&["reload"]);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains(&format!("venussup.toml:{}:15", good.lines().count() + 1))
            && out.stderr.contains("longer than 100 years"),
        "{}",
        out.stderr
    );
    // The same answer a second later: the daemon did not die after it.
    let again = setup.cli(&["reload"]);
    again.expect_code(1);
    assert!(d.status()["services"][0]["state"] == "running");
    assert_eq!(pid_of(&d.service("a")), pid, "the running service was kept");
}

#[test]
fn the_longest_backoff_and_timeouts_allowed_do_not_panic_the_loop() {
    let setup = Setup::new(
        "[[service]]\nname = \"a\"\ncommand = [\"/bin/sh\", \"-c\", \"echo FATAL-X; exec sleep 1000\"]\n\
         backoff_max = \"100y\"\nstop_timeout = \"100y\"\nstable_after = \"100y\"\n\
         fatal_output = [\"FATAL-X\"]\n\
         [[timer]]\nname = \"t\"\ncommand = [\"/bin/true\"]\nevery = \"100y\"\ntimeout = \"100y\"\n",
    );
    let mut d = setup.start();
    let pid = pid_of(&d.running("a"));
    // A young death after a fatal line: the backoff goes to its 100-year
    // cap (the deadline saturates instead of overflowing).
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
    let st = d.wait_service("a", "in backoff", |s| s["state"] == "backoff");
    assert!(
        st["next_start_in_secs"].as_f64() > Some(3.0e9),
        "held for 100 years: {st:#}"
    );
    assert!(d.status()["timers"][0]["name"] == "t");
    // A clean stop: nothing runs, the daemon exits 0, no panic in its log.
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(WAIT + Duration::from_secs(5));
    let log = d.log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// The ids of a `/proc/PID/status` line (`Gid:` real, effective, saved,
/// fs; `Groups:` the supplementary groups).
fn ids(pid: i64, key: &str) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"));
    line.split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn a_group_without_a_user_is_applied_as_systemd_does() {
    let gid = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .expect("the test needs group nogroup")
        .gid
        .as_raw();
    let setup = Setup::new(&format!("{SERVICE}group = \"nogroup\"\n"));
    let check = setup.cli(&["check"]);
    check.expect_code(0);
    assert!(
        check.stdout.contains("user root · group nogroup"),
        "{}",
        check.stdout
    );
    let d = setup.start();
    let pid = pid_of(&d.running("a"));
    assert_eq!(ids(pid, "Uid:"), vec![0; 4], "still root");
    assert_eq!(ids(pid, "Gid:"), vec![gid; 4], "runs as root:nogroup");
    assert_eq!(ids(pid, "Groups:"), vec![gid], "root's groups are dropped");
}

#[test]
fn a_token_put_into_argv_is_warned_with_the_service_argument_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("miner.env"),
        "MINER_TOKEN=t0k\nADDR=/ip4/1.2.3.4\n",
    )
    .unwrap();
    let path = dir.path().join("venussup.toml");
    fs::write(
        &path,
        "[host]\nenv_file = \"miner.env\"\n\
         [[service]]\nname = \"worker\"\ncommand = [\"/bin/sleep\", \"--miner-token=${MINER_TOKEN}\", \"--miner-addr=${ADDR}\"]\n",
    )
    .unwrap();
    let out = venussup(&["check", "--config", path.to_str().unwrap()]);
    out.expect_code(0);
    for needle in [
        "the argument `--miner-token=${MINER_TOKEN}` of `worker` puts `${MINER_TOKEN}` (a secret by its name) on its command line",
        "the argument `--miner-addr=${ADDR}` of `worker` puts `${ADDR}` (from an env_file)",
    ] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(":5:11: warning: ") && l.contains(needle) && l.contains("/proc/PID/cmdline")),
            "{needle}:\n{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("t0k"), "the value is never shown");
}

/// A config of one sealer and `n` workers, each with its own repo, listen
/// address and `after = ["sealer"]`: every Venus pair rule has work to do.
fn many_workers(dir: &std::path::Path, n: u32) -> PathBuf {
    let d = dir.display();
    let mut text = format!(
        "[host]\nstate_dir = \"{d}/state\"\nlog_dir = \"{d}/logs\"\n\
         [[service]]\nname = \"sealer\"\nrole = \"sealer\"\ncommand = [\"/bin/sleep\", \"1000\"]\n\
         env = {{ VENUS_SEALER_PATH = \"{d}/sealer\" }}\n"
    );
    for i in 0..n {
        let (a, b, c) = ((i >> 16) & 255, (i >> 8) & 255, i & 255);
        text.push_str(&format!(
            "[[service]]\nname = \"w{i}\"\nrole = \"worker\"\n\
             command = [\"/bin/sleep\", \"--listen=127.{a}.{b}.{c}:3456\"]\nafter = [\"sealer\"]\n\
             env = {{ VENUS_WORKER_PATH = \"{d}/w{i}\" }}\n"
        ));
    }
    let path = dir.join(format!("{n}.toml"));
    fs::write(&path, text).unwrap();
    path
}

/// The CPU time (user + system) of the children waited for so far.
fn children_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::new(
            u64::try_from(tv.tv_sec()).unwrap(),
            u32::try_from(tv.tv_usec() * 1000).unwrap(),
        )
    };
    t(u.user_time()) + t(u.system_time())
}

/// `check` of 16k and 100k services: no rule compares every service with
/// every other (16k took 33 s before). A measurement, so ignored by
/// default; run it with the release binary:
///
///     cargo test --release --test config_limits -- --ignored --nocapture
///
/// It asserts the CPU time (the wall time on a shared VM follows the load).
/// Measured 2026-12-02 on the 2-core VM: 16k 0.43 s, 100k 3.31 s CPU
/// (0.73 and 4.95 s while the plan still copied the config without
/// `instances`, and the shown plan twice); peak RSS at 100k 757 MB (1 GB).
#[test]
#[ignore = "a measurement; run with --release --ignored"]
fn check_of_100k_services_takes_under_5_seconds() {
    let dir = tempfile::tempdir().unwrap();
    for n in [16_000, 100_000] {
        let path = many_workers(dir.path(), n);
        let before = children_cpu();
        let start = std::time::Instant::now();
        let out = venussup(&["check", "--config", path.to_str().unwrap()]);
        let (wall, cpu) = (start.elapsed(), children_cpu() - before);
        out.expect_code(0);
        eprintln!("check of {n} services: {cpu:.2?} CPU, {wall:.2?} wall");
        assert!(cpu < Duration::from_secs(5), "{n}: {cpu:?}");
    }
}
