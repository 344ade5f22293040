//! The Ansible role (`deploy/ansible`) against two real systemd machines:
//! Debian 12 containers booted by `systemd-nspawn` from the root that
//! `deploy.rs` builds (`common::nspawn`), joined by a veth pair (host A at
//! 192.168.1.10, host B at 192.168.1.11, as in the plan), reached by
//! Ansible through the role's `nsenter` connection plugin. One
//! `ansible-playbook` run deploys both hosts, each with its own services
//! (the model of venus-sealer and venus-worker standing in for the Venus
//! programs, host B's workers registered with host A's sealer over the
//! link); a second run changes nothing; a changed value changes exactly
//! the host it belongs to, applied by a reload that keeps every service's
//! process; a mistake in the cluster file stops both hosts, and one only a
//! host's own check finds stops that host, nothing running changed on
//! either; a new binary is taken over in place on both.
//!
//! What the test's copies of the configs change (the containers have the
//! examples' paths and ports): `smt = "keep"` (a container cannot take
//! CPUs offline), the model's two knobs in `[host.env]` (tasks of 1 s, and
//! the 100000 descriptors lowered to what this VM can give), the drain's
//! polls (1 s: a worker restarted by a reload is drained first), and no
//! `limits.memory_max` (a container may give venussup no cgroup it can
//! write, as on this cgroup v1 VM, and a service whose memory limit
//! cannot be held is not started).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::nspawn::{cached_root, Booted, Machine};
use common::{bin, debian, project_file, run_bounded, Outcome};
use serde_json::Value;

/// Everything the test does, both boots and eight playbook runs included.
const TEST_BOUND: Duration = Duration::from_secs(300);
/// One `ansible-playbook` run over both hosts.
const PLAYBOOK_BOUND: Duration = Duration::from_secs(150);
/// venussup's state folder in the examples.
const STATE: &str = "/var/lib/venussup";

fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "ansible: {line}");
}

/// One host of the plan (`examples/cluster.toml`): its address on the
/// link, and what runs there.
struct Host {
    name: &'static str,
    address: &'static str,
    daemons: &'static [&'static str],
    oneshots: &'static [&'static str],
}

const HOST_A: Host = Host {
    name: "host-a",
    address: "192.168.1.10",
    daemons: &["sealer", "worker"],
    oneshots: &["sealer-attach", "worker-attach"],
};

const HOST_B: Host = Host {
    name: "host-b",
    address: "192.168.1.11",
    daemons: &["worker01", "worker02"],
    oneshots: &["worker01-attach", "worker02-attach"],
};

/// The sealer's own config.toml on host A, as `examples/host-a.toml`'s
/// comment asks: listening where host B reaches it, proving only.
const SEALER_TOML: &str = "[API]\nListenAddress = \"/ip4/0.0.0.0/tcp/2345/http\"\n\
    [Sealing]\nMaxSealingSectors = 7\n\
    [Storage]\nAllowAddPiece = false\nAllowPreCommit1 = false\nAllowPreCommit2 = false\n\
    AllowCommit = false\nAllowUnseal = false\nAllowReplicaUpdate = false\n\
    AllowProveReplicaUpdate2 = false\nAllowRegenSectorKey = false\n";

/// The rewrites of the module's comment.
fn for_the_containers(text: &str) -> String {
    let mut text = text.to_string();
    for (from, to) in [
        ("smt = \"off\"", "smt = \"keep\""),
        (
            "[defaults.host.env]\n",
            "[defaults.host.env]\nVENUS_MODEL_TASK_MS = \"1000\"\nVENUS_MODEL_MIN_NOFILE = \"10000\"\n",
        ),
        (
            "quiet_for = \"30s\", poll_every = \"30s\"",
            "quiet_for = \"1s\", poll_every = \"1s\"",
        ),
    ] {
        assert!(text.contains(from), "the cluster file has no `{from}`");
        text = text.replace(from, to);
    }
    // No memory limit (see the module's comment).
    let limits: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("limits = { memory_max = "))
        .collect();
    limits.join("\n") + "\n"
}

/// What the operator of a host does besides venussup: the Venus programs
/// (the model, behind wrappers at the examples' paths), the group the
/// Zabbix agent would bring, the seal and store disks (tmpfs, in the
/// container's mount namespace), and the sealer's repo.
fn prepare(c: &Booted<'_>, host: &Host) {
    let mut script = String::from(
        "groupadd --system zabbix\n\
         for p in venus-worker venus-sealer; do\n\
         \x20 printf '#!/bin/sh\\nexec /src/target/release/venussup model %s \"$@\"\\n' $p > /usr/local/bin/$p\n\
         \x20 chmod 0755 /usr/local/bin/$p\n\
         done\n\
         mkdir -p /mnt/seal && mount -t tmpfs -o size=1M tmpfs /mnt/seal\n",
    );
    if host.daemons.contains(&"sealer") {
        script.push_str(&format!(
            "mkdir -p /mnt/store && mount -t tmpfs -o size=1M tmpfs /mnt/store\n\
             mkdir -p /var/lib/venus/sealer\n\
             cat > /var/lib/venus/sealer/config.toml <<'EOF'\n{SEALER_TOML}EOF\n"
        ));
    }
    c.sh(&script);
}

/// A veth pair between the two containers' network namespaces, each end
/// `lan0` with its host's address; it goes away with the namespaces.
fn link(a: &Booted<'_>, b: &Booted<'_>) {
    let mut script = format!(
        "set -e\nip link add lan0 netns {} type veth peer name lan0 netns {}\n",
        a.leader, b.leader
    );
    for (c, host) in [(a, &HOST_A), (b, &HOST_B)] {
        let net = format!("nsenter --net=/proc/{}/ns/net", c.leader);
        script.push_str(&format!(
            "{net} ip addr add {}/24 dev lan0\n{net} ip link set lan0 up\n{net} ip link set lo up\n",
            host.address
        ));
    }
    run_bounded(
        Command::new("sh").args(["-c", &script]),
        Duration::from_secs(10),
    )
    .expect_code(0);
}

/// Per host: `changed=` of the PLAY RECAP, and `failed=` + `unreachable=`.
fn recap(out: &Outcome) -> BTreeMap<String, (u64, u64)> {
    let recap = out
        .stdout
        .split("PLAY RECAP")
        .nth(1)
        .unwrap_or_else(|| panic!("no PLAY RECAP:\n{}\n{}", out.stdout, out.stderr));
    recap
        .lines()
        .filter_map(|l| {
            let (host, counts) = l.split_once(" : ")?;
            let n = |key: &str| -> u64 {
                counts
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.parse().ok())
                    .unwrap()
            };
            Some((
                host.trim().to_string(),
                (n("changed="), n("failed=") + n("unreachable=")),
            ))
        })
        .collect()
}

/// The controller's side: the inventory that reaches both containers and
/// the files the role reads.
struct Controller {
    dir: tempfile::TempDir,
}

impl Controller {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn inventory(&self, a: &Booted<'_>, b: &Booted<'_>, binary: &Path) {
        let mut text = String::from("[venussup]\n");
        for (c, host) in [(a, &HOST_A), (b, &HOST_B)] {
            text.push_str(&format!(
                "{} ansible_connection=nsenter nsenter_pid={}\n",
                host.name, c.leader,
            ));
        }
        text.push_str(&format!(
            "[venussup:vars]\nansible_become=false\nansible_python_interpreter=/usr/bin/python3\n\
             venussup_binary={}\nvenussup_unit={}\nvenussup_cluster={}\n",
            binary.display(),
            project_file("units/venussup.service").display(),
            self.cluster().display()
        ));
        fs::write(self.path("inventory.ini"), text).unwrap();
    }

    fn cluster(&self) -> PathBuf {
        self.path("cluster.toml")
    }

    /// Replaces `from` (once in the cluster file) by `to`.
    fn edit(&self, from: &str, to: &str) {
        let text = fs::read_to_string(self.cluster()).unwrap();
        assert_eq!(text.matches(from).count(), 1, "`{from}` in:\n{text}");
        fs::write(self.cluster(), text.replace(from, to)).unwrap();
    }

    /// `ansible-playbook site.yml` over both hosts: its output and the
    /// recap (it says how long it took).
    fn play(&self, what: &str, args: &[&str]) -> (Outcome, BTreeMap<String, (u64, u64)>) {
        let t0 = Instant::now();
        let out = run_bounded(
            Command::new("ansible-playbook")
                .args(args)
                .arg("-i")
                .arg(self.path("inventory.ini"))
                .arg(project_file("deploy/ansible/site.yml"))
                .current_dir(self.dir.path())
                .env("HOME", self.dir.path())
                .env("ANSIBLE_LOCAL_TEMP", self.path("tmp"))
                .env("ANSIBLE_NOCOLOR", "1")
                .env("ANSIBLE_PIPELINING", "1")
                .env("ANSIBLE_RETRY_FILES_ENABLED", "0"),
            PLAYBOOK_BOUND,
        );
        say(&format!("  {what}: {:.1?}", t0.elapsed()));
        // The role's summary line of each host, and Ansible's warnings.
        for line in out.stdout.lines().chain(out.stderr.lines()).map(str::trim) {
            if line.starts_with("\"msg\": ") || line.contains("WARNING]") {
                say(&format!("    {line}"));
            }
        }
        let r = recap(&out);
        (out, r)
    }

    /// [`Self::play`], which must succeed on both hosts.
    fn play_ok(&self, what: &str, args: &[&str]) -> (Outcome, BTreeMap<String, (u64, u64)>) {
        let (out, r) = self.play(what, args);
        for host in [&HOST_A, &HOST_B] {
            assert_eq!(
                r.get(host.name).map(|c| c.1),
                Some(0),
                "{what}: {} failed:\n{}\n{}",
                host.name,
                out.stdout,
                out.stderr
            );
        }
        out.expect_code(0);
        (out, r)
    }
}

fn running(s: &Value) -> bool {
    s["state"] == "running"
}

/// Waits until `host`'s snapshot shows exactly its services, every daemon
/// running and every oneshot done; returns each daemon's pid.
fn settled(c: &Booted<'_>, host: &Host) -> BTreeMap<String, i64> {
    let st = c.wait_snapshot(STATE, &format!("{}'s services up", host.name), |st| {
        let Some(services) = st["services"].as_array() else {
            return false;
        };
        let state = |name: &str| {
            services
                .iter()
                .find(|s| s["name"] == name)
                .map(|s| s["state"].as_str().unwrap_or("").to_string())
        };
        services.len() == host.daemons.len() + host.oneshots.len()
            && host
                .daemons
                .iter()
                .all(|n| state(n).as_deref() == Some("running"))
            && host
                .oneshots
                .iter()
                .all(|n| state(n).as_deref() == Some("done"))
    });
    st["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| running(s))
        .map(|s| {
            assert_eq!(s["restarts"], 0, "{}: {s}", host.name);
            (
                s["name"].as_str().unwrap().to_string(),
                s["pid"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn ansible_deploys_both_hosts_into_two_containers_then_changes_nothing_then_only_what_changed() {
    if !nix::unistd::geteuid().is_root() {
        say("SKIPPED: needs root (it boots two containers)");
        return;
    }
    // The programs, then the root to boot (built once, cached).
    let root = debian::need(&[("ansible-playbook", "ansible-core"), ("ip", "iproute2")])
        .and_then(|()| cached_root());
    let lower = match root {
        Ok(root) => root,
        Err(why) => {
            say(&format!("SKIPPED: {why}"));
            return;
        }
    };
    let t_all = Instant::now();
    let (ma, mb) = (
        Machine::new(lower.clone(), HOST_A.name, TEST_BOUND),
        Machine::new(lower, HOST_B.name, TEST_BOUND),
    );
    let a = ma.boot(1);
    let b = mb.boot(1);
    link(&a, &b);
    prepare(&a, &HOST_A);
    prepare(&b, &HOST_B);

    let ctl = Controller {
        dir: tempfile::tempdir().unwrap(),
    };
    fs::create_dir(ctl.path("tmp")).unwrap();
    let text = fs::read_to_string(project_file("examples/cluster.toml")).unwrap();
    fs::write(ctl.cluster(), for_the_containers(&text)).unwrap();
    ctl.inventory(&a, &b, &bin());

    // The first run installs both hosts and starts each one's services.
    let (out, r) = ctl.play_ok("first run (install, enable, start)", &[]);
    for host in [&HOST_A, &HOST_B] {
        assert!(
            r[host.name].0 > 0,
            "{}: nothing changed:\n{}",
            host.name,
            out.stdout
        );
    }
    let mut pids = BTreeMap::new();
    for (c, host) in [(&a, &HOST_A), (&b, &HOST_B)] {
        let unit = c.unit();
        assert_eq!(unit["ActiveState"], "active", "{}: {unit:?}", host.name);
        assert_eq!(unit["UnitFileState"], "enabled", "{}", host.name);
        pids.insert(host.name, (unit["MainPID"].clone(), settled(c, host)));
    }
    // Host B's workers registered with host A's sealer, over the link,
    // from where each listens (venus-worker's rule: the address that
    // routes to the sealer).
    let sealer_log = fs::read_to_string(a.file("/var/log/venussup/sealer.log")).unwrap();
    for port in [3456, 3457] {
        let line = format!("worker connected: http://{}:{port}/rpc/v0", HOST_B.address);
        assert!(sealer_log.contains(&line), "{line}:\n{sealer_log}");
    }
    // Venussup and every service kept their processes.
    let kept = |what: &str| {
        for (c, host) in [(&a, &HOST_A), (&b, &HOST_B)] {
            assert_eq!(
                (c.unit()["MainPID"].clone(), settled(c, host)),
                pids[host.name],
                "{what}: {} restarted something",
                host.name
            );
        }
    };
    let live = |c: &Booted<'_>| fs::read_to_string(c.file("/etc/venussup/venussup.toml")).unwrap();

    // The second run changes nothing.
    let (out, r) = ctl.play_ok("second run (nothing to change)", &[]);
    for host in [&HOST_A, &HOST_B] {
        assert_eq!(r[host.name].0, 0, "{} changed:\n{}", host.name, out.stdout);
    }

    // A value of host A only: host A reloads, keeping every process; host
    // B is not touched.
    ctl.edit("every = \"10min\"", "every = \"15min\"");
    // `--check --diff` first: it shows the change on host A only, and
    // changes nothing.
    let (out, r) = ctl.play_ok("--check --diff of that", &["--check", "--diff"]);
    assert!(r[HOST_A.name].0 > 0, "{}", out.stdout);
    assert_eq!(r[HOST_B.name].0, 0, "host B would change:\n{}", out.stdout);
    assert!(
        out.stdout
            .contains("-every = \"10min\"\n+every = \"15min\"")
            && out
                .stdout
                .contains("host-a: --check: the binary is the same, the config differs"),
        "{}",
        out.stdout
    );
    assert!(live(&a).contains("every = \"10min\""), "{}", live(&a));
    let (out, r) = ctl.play_ok("third run (host A's pledge every 15min)", &[]);
    assert!(r[HOST_A.name].0 > 0, "{}", out.stdout);
    assert_eq!(r[HOST_B.name].0, 0, "host B changed:\n{}", out.stdout);
    assert!(
        out.stdout
            .contains("host-a: binary unchanged; config reloaded: started none; stopped none; restarted none;"),
        "host A's reload, in its summary line:\n{}",
        out.stdout
    );
    assert!(live(&a).contains("every = \"15min\""), "{}", live(&a));
    kept("the reload");

    // A mistake in the cluster file stops the run before any host changes,
    // named by the cluster file's line and column (`check --cluster`, once,
    // on the controller).
    let before = (live(&a), live(&b));
    ctl.edit("every = \"15min\"", "every = \"15 bananas\"");
    let text = fs::read_to_string(ctl.cluster()).unwrap();
    let line = text.lines().position(|l| l.contains("bananas")).unwrap() + 1;
    let (out, r) = ctl.play("a broken duration in the cluster file", &[]);
    assert!(
        r.values().all(|c| c.0 == 0 && c.1 == 1),
        "{r:?}\n{}",
        out.stdout
    );
    assert_ne!(out.code, Some(0));
    let at = format!("{}:{line}:9: error", ctl.cluster().display());
    assert!(
        out.stdout.contains(&at),
        "`{at}` is not in:\n{}",
        out.stdout
    );
    ctl.edit("every = \"15 bananas\"", "every = \"15min\"");

    // A mistake only host B's own check finds (CPUs it does not have):
    // host B stops before switching, host A goes on.
    ctl.edit("cpus = \"25%\"\n", "cpus = \"8-15\"\n");
    let (out, r) = ctl.play("CPUs host B does not have", &[]);
    assert_eq!(r[HOST_A.name], (0, 0), "{}", out.stdout);
    assert_eq!(r[HOST_B.name].1, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("CPUs 8-15 are not online on this host"),
        "host B's check said why:\n{}",
        out.stdout
    );
    assert_eq!((live(&a), live(&b)), before, "a live config changed");
    kept("the refused configs");
    ctl.edit("cpus = \"8-15\"", "cpus = \"25%\"");

    // A new binary: taken over in place on both hosts.
    let new = ctl.path("venussup");
    let mut bytes = fs::read(bin()).unwrap();
    bytes.extend_from_slice(b"\0a new build\0");
    fs::write(&new, bytes).unwrap();
    fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ctl.inventory(&a, &b, &new);
    let (out, r) = ctl.play_ok("a new binary on both", &[]);
    for host in [&HOST_A, &HOST_B] {
        assert!(r[host.name].0 > 0, "{}", out.stdout);
        assert!(
            out.stdout.contains(&format!(
                "{}: binary upgraded in place: pid {} runs venussup",
                host.name, pids[host.name].0
            )),
            "{}",
            out.stdout
        );
    }
    assert_eq!((live(&a), live(&b)), before);
    kept("the upgrade");
    let (out, r) = ctl.play_ok("once more (nothing to change)", &[]);
    assert!(r.values().all(|c| c.0 == 0), "{r:?}\n{}", out.stdout);

    say(&format!(
        "  everything, both boots included: {:.1?}",
        t_all.elapsed()
    ));
    drop((a, b));
    ma.clean_up().unwrap();
    mb.clean_up().unwrap();
}
