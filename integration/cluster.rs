//! The cluster file: `venussup render --cluster` gives each host the
//! config its own example is, and `venussup check --cluster` rejects what
//! ties the hosts together wrongly (a worker dialing no sealer, a token
//! from another file, a MaxSealingSectors above what the hosts can seal),
//! each at the cluster file's line and column. The hosts' hardware is the
//! deployment plan's (1 TiB, 128 cores), simulated under an fs root and
//! read back through `venussup topology --json` and `plan --json`, as an
//! operator collects them from the real hosts.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::planhost::plan_host_with_seal;
use common::{assert_error_at, project_file, venussup, Outcome};

const HOSTS: [&str; 2] = ["host-a", "host-b"];

fn example() -> String {
    fs::read_to_string(project_file("examples/cluster.toml")).unwrap()
}

/// The example cluster with each `(from, to)` replaced once, written to
/// `dir/cluster.toml`.
fn cluster_with(dir: &Path, edits: &[(&str, &str)]) -> (PathBuf, String) {
    let mut text = example();
    for (from, to) in edits {
        assert!(text.contains(from), "examples/cluster.toml has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    let path = dir.join("cluster.toml");
    fs::write(&path, &text).unwrap();
    (path, text)
}

/// The line and column (from 1) of what follows `after` in `text`.
fn after(text: &str, after: &str) -> (usize, usize) {
    let (line, col) = line_col(text, after);
    (line, col + after.chars().count())
}

/// The line and column (from 1) where `needle` starts in `text`.
fn line_col(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap();
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn render(cluster: &Path, host: &str) -> Outcome {
    venussup(&[
        "render",
        "--cluster",
        cluster.to_str().unwrap(),
        "--host",
        host,
    ])
}

fn check_cluster(cluster: &Path, facts: Option<&Path>) -> Outcome {
    let mut args = vec!["check", "--cluster", cluster.to_str().unwrap()];
    if let Some(f) = facts {
        args.extend(["--facts", f.to_str().unwrap()]);
    }
    venussup(&args)
}

/// Diagnostics without their place: the same findings, wherever the file
/// has them.
fn findings(stderr: &str) -> Vec<String> {
    let mut lines: Vec<String> = stderr
        .lines()
        .filter_map(|l| {
            let at = l
                .find(": error: ")
                .or_else(|| l.find(": warning: "))
                .or_else(|| l.find(": note: "))?;
            Some(l[at..].to_string())
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn each_rendered_host_checks_as_its_own_example_does() {
    let dir = tempfile::tempdir().unwrap();
    for host in HOSTS {
        let out = render(&project_file("examples/cluster.toml"), host);
        out.expect_code(0);
        let rendered = dir.path().join(format!("{host}.toml"));
        fs::write(&rendered, &out.stdout).unwrap();
        let derived = venussup(&["check", "--config", rendered.to_str().unwrap()]);
        derived.expect_code(0);
        let example = project_file(&format!("examples/{host}.toml"));
        let own = venussup(&["check", "--config", example.to_str().unwrap()]);
        own.expect_code(0);
        // The same plan (but for the file it names first), and the same
        // findings (only their lines differ).
        let plan = |out: &str| out.split_once('\n').unwrap().1.to_string();
        assert_eq!(plan(&derived.stdout), plan(&own.stdout), "{host}");
        assert_eq!(findings(&derived.stderr), findings(&own.stderr), "{host}");
        assert!(!findings(&own.stderr).is_empty());
        // Rendering is a function of the file: the same text again.
        assert_eq!(
            render(&project_file("examples/cluster.toml"), host).stdout,
            out.stdout
        );
    }
}

#[test]
fn an_unknown_host_or_a_bad_cluster_file_is_named_with_its_place() {
    let out = render(&project_file("examples/cluster.toml"), "host-c");
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("no host `host-c` in the cluster file (its hosts: host-a, host-b)"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
    // A cluster file given as one host's config says what it is.
    let cluster = project_file("examples/cluster.toml");
    let out = venussup(&["check", "--config", cluster.to_str().unwrap()]);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("is checked with `venussup check --cluster`"),
        "{}",
        out.stderr
    );
    // Without --host: this machine's hostname, which the example lacks.
    let me = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = venussup(&["render", "--cluster", cluster.to_str().unwrap()]);
    out.expect_code(1);
    assert!(
        out.stderr.contains(&format!("no host `{}`", me.trim())),
        "{}",
        out.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    // A mistake in a host's service is reported where the cluster file has it.
    let (path, text) = cluster_with(dir.path(), &[("cpus = \"75%\"", "cpus = true")]);
    let out = render(&path, "host-b");
    out.expect_code(1);
    assert!(out.stdout.is_empty());
    let (line, col) = after(&text, "cpus = true");
    let col = col - "true".len();
    assert_error_at(
        &out,
        line,
        col,
        "host `host-b`: invalid type: boolean `true`",
    );
    // Host A's config has no mistake: it renders.
    render(&path, "host-a").expect_code(0);
    let out = check_cluster(&path, None);
    out.expect_code(1);
    assert_error_at(&out, line, col, "host `host-b`");

    // A key the cluster file does not know.
    let (path, text) = cluster_with(
        dir.path(),
        &[("address = \"192.168.1.11\"", "adress = \"192.168.1.11\"")],
    );
    let out = check_cluster(&path, None);
    out.expect_code(1);
    let (line, col) = line_col(&text, "adress");
    assert_error_at(&out, line, col, "`[hosts.host-b]` has no `adress`");
}

#[test]
fn the_example_cluster_passes_and_says_what_it_could_not_check() {
    let out = check_cluster(&project_file("examples/cluster.toml"), None);
    out.expect_code(0);
    // Which sealer each worker dials.
    let links: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert_eq!(
        links,
        [
            "host-a: worker → sealer of host-a at /ip4/127.0.0.1/tcp/2345",
            "host-b: worker01 → sealer of host-a at /ip4/192.168.1.10/tcp/2345",
            "host-b: worker02 → sealer of host-a at /ip4/192.168.1.10/tcp/2345",
        ]
    );
    assert!(
        out.stderr.contains("cluster OK (0 warnings)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("MaxSealingSectors of `sealer` was not checked"),
        "{}",
        out.stderr
    );
}

#[test]
fn host_b_dialing_the_wrong_sealer_address_is_rejected_at_its_argument() {
    let dir = tempfile::tempdir().unwrap();
    let (path, text) = cluster_with(
        dir.path(),
        &[(
            "--miner-addr=/ip4/192.168.1.10/tcp/2345\",   # host A's sealer",
            "--miner-addr=/ip4/192.168.1.99/tcp/2345\",   # host A's sealer",
        )],
    );
    let out = check_cluster(&path, None);
    out.expect_code(1);
    let (line, col) = line_col(&text, "--miner-addr=/ip4/192.168.1.99");
    assert_error_at(&out, line, col, "host `host-b`: `worker01` dials its sealer at --miner-addr=/ip4/192.168.1.99/tcp/2345, but no sealer of the cluster listens at 192.168.1.99:2345");
    assert!(
        out.stderr
            .contains("its sealers listen at `sealer` of host-a at 192.168.1.10 (0.0.0.0):2345"),
        "{}",
        out.stderr
    );

    // The right address, but the sealer listens on loopback only.
    let (path, text) = cluster_with(
        dir.path(),
        &[(
            "listen = \"/ip4/0.0.0.0/tcp/2345/http\"",
            "listen = \"/ip4/127.0.0.1/tcp/2345/http\"",
        )],
    );
    let out = check_cluster(&path, None);
    out.expect_code(1);
    let (line, col) = line_col(&text, "--miner-addr=/ip4/192.168.1.10");
    assert_error_at(
        &out,
        line,
        col,
        "listens on 127.0.0.1 only, which other hosts cannot reach",
    );
    // Host A's own worker reaches it on loopback: only host B's two fail.
    assert_eq!(out.stderr.matches(": error: ").count(), 2, "{}", out.stderr);

    // A loopback target on a host without a sealer.
    let (path, _) = cluster_with(
        dir.path(),
        &[(
            "--miner-addr=/ip4/192.168.1.10/tcp/2345\",\n  # the token",
            "--miner-addr=/ip4/127.0.0.1/tcp/2345\",\n  # the token",
        )],
    );
    let out = check_cluster(&path, None);
    out.expect_code(1);
    assert!(out.stderr.contains("`worker02` dials its sealer at --miner-addr=/ip4/127.0.0.1/tcp/2345, but 127.0.0.1 is host `host-b` itself"), "{}", out.stderr);
}

#[test]
fn a_token_from_the_wrong_file_is_rejected_at_its_statement() {
    let dir = tempfile::tempdir().unwrap();
    let (path, text) = cluster_with(
        dir.path(),
        &[(
            "worker01 = \"host-a:/var/lib/venus/sealer/token\"",
            "worker01 = \"host-a:/var/lib/venus/worker/token\"",
        )],
    );
    let out = check_cluster(&path, None);
    out.expect_code(1);
    let (line, col) = line_col(&text, "\"host-a:/var/lib/venus/worker/token\"");
    assert_error_at(&out, line, col, "host `host-b`: the token of `worker01` comes from host-a:/var/lib/venus/worker/token, but the sealer it dials (`sealer` of host-a at 192.168.1.10 (0.0.0.0):2345) keeps its token in host-a:/var/lib/venus/sealer/token");
    assert_eq!(out.stderr.matches(": error: ").count(), 1, "{}", out.stderr);

    // The right path on the wrong host is wrong too; `//` is the same path.
    let (path, _) = cluster_with(
        dir.path(),
        &[
            (
                "worker01 = \"host-a:/var/lib/venus/sealer/token\"",
                "worker01 = \"host-b:/var/lib/venus/sealer/token\"",
            ),
            (
                "worker02 = \"host-a:/var/lib/venus/sealer/token\"",
                "worker02 = \"host-a:/var/lib/venus//sealer/token\"",
            ),
        ],
    );
    let out = check_cluster(&path, None);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("the token of `worker01` comes from host-b:"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("the token of `worker02`"),
        "{}",
        out.stderr
    );

    // Not stated: a warning says what to state.
    let (path, _) = cluster_with(
        dir.path(),
        &[("worker02 = \"host-a:/var/lib/venus/sealer/token\"\n", "")],
    );
    let out = check_cluster(&path, None);
    out.expect_code(0);
    assert!(
        out.stderr.contains(
            "add `worker02 = \"host-a:/var/lib/venus/sealer/token\"` to [hosts.host-b.tokens]"
        ),
        "{}",
        out.stderr
    );
}

/// `DIR/HOST/topology.json` and `plan.json` of each host, as `venussup
/// topology --json` and `venussup plan --json --config` print them on a
/// simulated plan host with the host's rendered config.
fn simulated_facts(cluster: &Path, dir: &Path) {
    for host in HOSTS {
        let (sim, _seal) = plan_host_with_seal();
        let root = sim.path().to_str().unwrap();
        let out = dir.join(host);
        fs::create_dir_all(&out).unwrap();
        let topology = venussup(&["topology", "--json", "--fs-root", root]);
        fs::write(out.join("topology.json"), &topology.expect_code(0).stdout).unwrap();
        let config = out.join("venussup.toml");
        fs::write(&config, &render(cluster, host).expect_code(0).stdout).unwrap();
        let plan = venussup(&[
            "plan",
            "--json",
            "--config",
            config.to_str().unwrap(),
            "--fs-root",
            root,
        ]);
        fs::write(out.join("plan.json"), &plan.stdout).unwrap();
    }
}

#[test]
fn simulated_hosts_max_sealing_sectors_above_their_combined_plan_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("facts");
    simulated_facts(&project_file("examples/cluster.toml"), &facts);
    let recommended = |h: &str| {
        let doc: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(facts.join(h).join("plan.json")).unwrap())
                .unwrap();
        doc["recommended"].as_u64()
    };
    // The plan's figures: 4 on host A, 3 on host B.
    assert_eq!(
        (recommended("host-a"), recommended("host-b")),
        (Some(4), Some(3))
    );
    let out = check_cluster(&project_file("examples/cluster.toml"), Some(&facts));
    out.expect_code(0);
    assert!(!out.stderr.contains("MaxSealingSectors"), "{}", out.stderr);

    let (path, text) = cluster_with(
        dir.path(),
        &[("max_sealing_sectors = 7", "max_sealing_sectors = 8")],
    );
    let out = check_cluster(&path, Some(&facts));
    out.expect_code(1);
    let (line, col) = after(&text, "max_sealing_sectors = ");
    assert_error_at(&out, line, col, "host `host-a`: MaxSealingSectors = 8 of `sealer` is above what the hosts sealing for it can seal at once: host-a 4 + host-b 3 = 7");

    // Host A's share of it claims more than host B can seal.
    let (path, text) = cluster_with(dir.path(), &[("other_hosts = 3", "other_hosts = 5")]);
    let out = check_cluster(&path, Some(&facts));
    out.expect_code(1);
    let (line, col) = after(&text, "other_hosts = ");
    assert_error_at(&out, line, col, "host `host-a`: [capacity] other_hosts = 5, but the other hosts sealing for `sealer` can seal 3 at once");

    // Facts that cannot be read are an error, not a skipped check.
    fs::remove_file(facts.join("host-b/topology.json")).unwrap();
    let out = check_cluster(&project_file("examples/cluster.toml"), Some(&facts));
    out.expect_code(1);
    assert!(
        out.stderr.contains("host `host-b`: cannot read"),
        "{}",
        out.stderr
    );
}

#[test]
fn simulated_one_cpu_host_b_cannot_hold_its_shares_at_their_lines() {
    // Host B's topology.json says one CPU: worker01's 75% and worker02's
    // 25% cannot both have whole cores, and the error is at worker02's
    // `cpus` in the cluster file, as `check` on host B would say.
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("facts");
    simulated_facts(&project_file("examples/cluster.toml"), &facts);
    fs::write(
        facts.join("host-b/topology.json"),
        "{\"cpus\": [{\"cpu\":0,\"online\":true,\"package\":0,\"core\":0,\"siblings\":[0],\"l3\":[0],\"numa\":0}]}\n",
    )
    .unwrap();
    let out = check_cluster(&project_file("examples/cluster.toml"), Some(&facts));
    out.expect_code(1);
    let text = example();
    let (line, col) = line_col(
        &text,
        "cpus = \"25%\"\ngpus = \"auto\"                     # C2",
    );
    assert_error_at(
        &out,
        line,
        col + "cpus = ".len(),
        "host `host-b`: `cpus` of `worker02`: 25% is 1 core of the 1 usable",
    );
    assert_eq!(out.stderr.matches(": error: ").count(), 1, "{}", out.stderr);
}
