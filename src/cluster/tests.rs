//! The cluster file read from text, its hosts' configs derived, and the
//! rules across hosts, without a file or a host.

use std::path::Path;

use super::rules::{self, Member};
use super::*;

const SEALER: &str = r#"
[defaults.host]
state_dir = "/var/lib/venussup"
[hosts.a]
address = "10.0.0.1"
[hosts.a.sealers.s]
listen = "/ip4/0.0.0.0/tcp/2345/http"
max_sealing_sectors = 5
[hosts.a.capacity]
sector_size = "32GiB"
other_hosts = 2
[[hosts.a.service]]
name = "s"
role = "sealer"
command = ["/bin/venus-sealer", "run"]
env = { VENUS_SEALER_PATH = "/r/s" }
[hosts.a.tokens]
w = "a:/r/s/token"
[[hosts.a.service]]
name = "w"
role = "worker"
command = ["/bin/venus-worker", "run", "--miner-addr=/ip4/127.0.0.1/tcp/2345"]
[hosts.b.host]
state_dir = "/srv/v"
[hosts.b.tokens]
w2 = "a:/r/s/token"
[[hosts.b.service]]
name = "w2"
role = "worker"
command = ["/bin/venus-worker", "run", "--miner-addr=/ip4/10.0.0.1/tcp/2345"]
"#;

/// Every diagnostic of the cluster `text` with `plans` (per host, in
/// order), as `line:col: severity: message`.
fn check(text: &str, plans: &[Option<u64>]) -> Vec<String> {
    let path = Path::new("c.toml");
    let mut diags = Diagnostics::new(path, text);
    let cluster = parse(path, text, &mut diags).unwrap();
    let configs: Vec<_> = cluster
        .hosts
        .iter()
        .map(|h| cluster.config(h, &mut diags))
        .collect();
    let members: Vec<Member<'_>> = cluster
        .hosts
        .iter()
        .zip(&configs)
        .zip(plans)
        .map(|((host, config), plan)| Member {
            host,
            config: config.as_ref(),
            plan: *plan,
        })
        .collect();
    rules::check(&members, &mut diags);
    diags
        .into_sorted()
        .iter()
        .filter(|d| d.severity != crate::util::diag::Severity::Note)
        .map(|d| d.to_string().trim_start_matches("c.toml:").to_string())
        .collect()
}

#[test]
fn a_consistent_cluster_has_nothing_to_say() {
    assert_eq!(check(SEALER, &[Some(3), Some(2)]), Vec::<String>::new());
}

#[test]
fn the_host_wins_over_the_defaults_and_every_host_gets_them() {
    let path = Path::new("c.toml");
    let mut diags = Diagnostics::new(path, SEALER);
    let cluster = parse(path, SEALER, &mut diags).unwrap();
    let a = cluster
        .config(cluster.host("a").unwrap(), &mut diags)
        .unwrap();
    let b = cluster
        .config(cluster.host("b").unwrap(), &mut diags)
        .unwrap();
    assert!(!diags.has_errors());
    assert_eq!(a.host.state_dir, Path::new("/var/lib/venussup"));
    assert_eq!(b.host.state_dir, Path::new("/srv/v"));
    assert_eq!(a.capacity.as_ref().map(|c| c.other_hosts), Some(2));
    assert!(b.capacity.is_none());
    // The cluster's own keys stay out of the host's config.
    assert!(!cluster.host("a").unwrap().rendered.text.contains("address"));
}

#[test]
fn a_limit_above_the_plans_and_a_share_above_the_others_point_at_their_values() {
    let lines = check(SEALER, &[Some(2), Some(1)]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("8:23: error: host `a`: MaxSealingSectors = 5 of `s` is above what the hosts sealing for it can seal at once: a 2 + b 1 = 3"), "{lines:?}");
    assert!(lines[1].starts_with("11:15: error: host `a`: [capacity] other_hosts = 2, but the other hosts sealing for `s` can seal 1"), "{lines:?}");
}

#[test]
fn a_sealer_on_another_port_or_a_loopback_listen_is_no_target() {
    let text = SEALER.replace(
        "--miner-addr=/ip4/10.0.0.1/tcp/2345",
        "--miner-addr=/ip4/10.0.0.1/tcp/2346",
    );
    let lines = check(&text, &[Some(3), Some(2)]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("30:41: error: host `b`: `w2` dials its sealer")),
        "{lines:?}"
    );
    let text = SEALER.replace("/ip4/0.0.0.0/tcp/2345/http", "/ip4/127.0.0.1/tcp/2345/http");
    let lines = check(&text, &[Some(3), Some(2)]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("listens on 127.0.0.1 only")),
        "{lines:?}"
    );
    // --miner-api moves the sealer's port: the worker's 2346 finds it.
    let text = SEALER
        .replace(
            "--miner-addr=/ip4/10.0.0.1/tcp/2345",
            "--miner-addr=/ip4/10.0.0.1/tcp/2346",
        )
        .replace(
            "--miner-addr=/ip4/127.0.0.1/tcp/2345",
            "--miner-addr=/ip4/127.0.0.1/tcp/2346",
        )
        .replace("\"run\"]", "\"run\", \"--miner-api=2346\"]");
    assert_eq!(check(&text, &[Some(3), Some(2)]), Vec::<String>::new());
}

#[test]
fn stated_names_must_be_services_of_their_host() {
    let text = SEALER.replace("w2 = \"a:/r/s/token\"", "w3 = \"a:/r/s/token\"");
    let lines = check(&text, &[Some(3), Some(2)]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("26:1: error: host `b` has no worker `w3`")),
        "{lines:?}"
    );
}

#[test]
fn positions_in_the_rendered_text_map_back_to_the_cluster_file() {
    let text = SEALER.replace(
        "role = \"worker\"\ncommand = [\"/bin/venus-worker\", \"run\", \"--miner-addr=/ip4/10",
        "role = \"wroker\"\ncommand = [\"/bin/venus-worker\", \"run\", \"--miner-addr=/ip4/10",
    );
    let lines = check(&text, &[None, None]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("29:8: error: host `b`: unknown variant `wroker`")),
        "{lines:?}"
    );
}

#[test]
fn an_address_must_be_dialable_and_one_hosts_own() {
    let text = SEALER.replace(
        "[hosts.b.host]",
        "[hosts.b]\naddress = \"10.0.0.1\"\n[hosts.b.host]",
    );
    let lines = check(&text, &[Some(3), Some(2)]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("24:11: error: host `b`: address 10.0.0.1 is also host `a`'s")),
        "{lines:?}"
    );
    let text = SEALER.replace("address = \"10.0.0.1\"", "address = \"127.0.0.1\"");
    let lines = check(&text, &[Some(3), Some(2)]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("5:11: error: host `a`: address 127.0.0.1 is no address")),
        "{lines:?}"
    );
}

#[test]
fn every_byte_of_a_rendered_host_points_inside_the_cluster_file() {
    // Found by the `cluster` fuzz target: the renderer's own text (the
    // first line's comment) was mapped as if copied, past the file's end.
    let text = "\n[max_sedefaults.host]\nstatector_size = \"32(GiB\"\nother_hosts = 2\n[[hosts.a.service]]\nnPme = \"s\"\nrolend = [\"/bin/venus-worker\", \"run\", \"--miner-addr=/ip4/10.0.0.3/tcp/2345\"]\n";
    let path = Path::new("c.toml");
    let mut diags = Diagnostics::new(path, text);
    let cluster = parse(path, text, &mut diags).unwrap();
    for h in &cluster.hosts {
        for at in 0..=h.rendered.text.len() {
            assert!(h.rendered.source(at) <= text.len(), "byte {at}");
        }
    }
    let lines = check(text, &[None]);
    assert!(!lines.is_empty());
    for l in &lines {
        let line: usize = l.split(':').next().unwrap().parse().unwrap();
        assert!(line <= text.lines().count(), "{l}");
    }
}
