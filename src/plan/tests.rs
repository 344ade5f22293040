//! [`resolve`] against hosts built in memory: no files, no root, no NSS.

use std::path::{Path, PathBuf};

use super::*;
use crate::config;
use crate::host::gpu::{Discovery, Source};
use crate::host::lookups::InMemory;
use crate::host::topology::sim::Shape;
use crate::util::diag::{Diagnostic, Position, Severity};

/// Where every test's config "is": relative paths are taken from its folder.
const CONFIG: &str = "/etc/venussup/venussup.toml";

fn set(list: &str) -> CpuSet {
    CpuSet::parse_list(list).unwrap()
}

/// The deployment plan's host: 2 sockets × 64 cores (2 threads each, the
/// second threads numbered after all first ones), L3 groups of 8 cores,
/// one NUMA node per socket, `gpus` NVIDIA GPUs found by the driver; the
/// Venus binaries installed and the miner's env file present.
fn plan_host(gpus: u32) -> Host {
    let topology = Shape::plan_host().topology();
    let lookups = InMemory::new()
        .program("/usr/local/bin/venus-worker")
        .program("/usr/local/bin/venus-sealer")
        .file("/etc/venussup/miner.env", "MINER_TOKEN=t0ken\n");
    Host {
        online_cpus: Some(topology.online()),
        topology: Some(topology),
        gpus: Discovery {
            gpus: (0..gpus)
                .map(|i| Gpu {
                    bus_id: Some(format!("0000:{:02x}:00.0", i + 1)),
                    model: Some("NVIDIA GeForce RTX 3060 Ti".into()),
                    ..Gpu::numbered(i)
                })
                .collect(),
            source: Source::Driver,
            warnings: Vec::new(),
        },
        ..Host::in_memory(lookups)
    }
}

/// Parses `text` as the config at [`CONFIG`] and resolves it on `host`.
fn resolve_text(text: &str, host: &Host) -> (Plan, Vec<Diagnostic>) {
    let mut diags = Diagnostics::new(Path::new(CONFIG), text);
    let config = config::parse(Path::new(CONFIG), text, &mut diags).expect("the config parses");
    assert!(!diags.has_errors(), "{:?}", diags.into_sorted());
    let plan = resolve(&config, host, &mut diags);
    (plan, diags.into_sorted())
}

fn service<'a>(plan: &'a Plan, name: &str) -> &'a ServicePlan {
    plan.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service `{name}`"))
}

fn of(diags: &[Diagnostic], severity: Severity) -> Vec<&Diagnostic> {
    diags.iter().filter(|d| d.severity == severity).collect()
}

/// The line `needle` is first on in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in the config"))
        + 1
}

/// The one diagnostic whose message holds `needle`.
fn the<'a>(diags: &'a [Diagnostic], needle: &str) -> &'a Diagnostic {
    let found: Vec<_> = diags
        .iter()
        .filter(|d| d.message.contains(needle))
        .collect();
    assert_eq!(found.len(), 1, "`{needle}` in {diags:#?}");
    found[0]
}

fn at_line(d: &Diagnostic) -> Option<usize> {
    d.position.map(|Position { line, .. }| line)
}

#[test]
fn host_b_on_the_plans_host_gets_its_cores_as_whole_l3_groups_and_the_gpu() {
    let text = include_str!("../../examples/host-b.toml");
    let (plan, diags) = resolve_text(text, &plan_host(2));
    // (That worker01 spans both nodes is the Venus checks' to say.)
    assert!(diags.is_empty(), "{diags:#?}");

    assert_eq!(plan.host.usable_cpus, Some(set("0-127")));
    assert_eq!(plan.host.usable_cores, 128);
    assert_eq!(plan.host.gpus.len(), 2);
    let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["worker01", "worker02", "worker01-attach", "worker02-attach"]
    );

    // worker01: 75% is 96 cores, the first 12 L3 groups whole, both nodes.
    let w1 = service(&plan, "worker01").cpus.as_ref().unwrap();
    assert_eq!(w1.cpus, Some(set("0-95")));
    let span = w1.span.as_ref().unwrap();
    assert_eq!(span.cores, 96);
    assert_eq!(
        span.l3.iter().map(|u| u.group).collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>()
    );
    assert!(span.whole_groups() && span.l3.iter().all(|u| u.of == 8));
    assert_eq!(span.numa, Some(set("0-1")));
    // worker02: the other 25%, 4 whole groups on node 1.
    let w2 = service(&plan, "worker02").cpus.as_ref().unwrap();
    assert_eq!(w2.cpus, Some(set("96-127")));
    let span = w2.span.as_ref().unwrap();
    assert_eq!(
        span.l3.iter().map(|u| u.group).collect::<Vec<_>>(),
        [12, 13, 14, 15]
    );
    assert!(span.whole_groups());
    assert_eq!(span.numa, Some(set("1")));

    // The GPUs: worker02 (Commit) is the one taker, and gets the second
    // too (C2 splits its work over every GPU it sees); worker01 asked for
    // none.
    let w2 = service(&plan, "worker02");
    assert_eq!(w2.gpus.devices, [0, 1]);
    assert_eq!(w2.env["CUDA_VISIBLE_DEVICES"], "0,1");
    assert_eq!(w2.env["CUDA_DEVICE_ORDER"], "PCI_BUS_ID");
    assert_eq!(w2.env["TMPDIR"], "/var/lib/venussup/gpu0-tmp");
    assert!(!w2.env.contains_key("BELLMAN_NO_GPU"));
    for name in ["worker01", "worker01-attach", "worker02-attach"] {
        let s = service(&plan, name);
        assert!(s.gpus.devices.is_empty(), "{name}");
        assert_eq!(s.env["CUDA_VISIBLE_DEVICES"], "", "{name}");
        assert_eq!(s.env["BELLMAN_NO_GPU"], "1", "{name}");
    }
    assert_eq!(
        plan.host
            .gpu_tmpdirs
            .iter()
            .map(|d| &d.path)
            .collect::<Vec<_>>(),
        [Path::new("/var/lib/venussup/gpu0-tmp")]
    );

    // The host env_file was read through the host's lookups.
    let w1 = service(&plan, "worker01");
    assert_eq!(w1.env["MINER_TOKEN"], "t0ken");
    // The token stays off the command line (venus-worker reads its own
    // config.toml for it).
    assert!(
        !w1.argv.iter().any(|a| a.contains("t0ken")),
        "{:?}",
        w1.argv
    );
    assert_eq!(w1.env["FIL_PROOFS_USE_MULTICORE_SDR"], "1");
    assert_eq!(w1.env["VENUS_WORKER_PATH"], "/var/lib/venus/worker01");
}

#[test]
fn host_a_on_two_gpus_gives_the_sealers_post_a_gpu_and_the_cpu_worker_none() {
    let text = include_str!("../../examples/host-a.toml");
    let (plan, diags) = resolve_text(text, &plan_host(2));
    assert!(of(&diags, Severity::Error).is_empty(), "{diags:#?}");
    let sealer = service(&plan, "sealer");
    assert_eq!(sealer.gpus.devices, [0]);
    assert_eq!(sealer.env["CUDA_VISIBLE_DEVICES"], "0");
    assert!(!sealer.env.contains_key("BELLMAN_NO_GPU"));
    let worker = service(&plan, "worker");
    assert!(worker.gpus.devices.is_empty());
    assert_eq!(worker.env["CUDA_VISIBLE_DEVICES"], "");
    assert_eq!(worker.env["BELLMAN_NO_GPU"], "1");
    // The proving sealer and its CPU worker never share cores: 25% and
    // the rest of the 128.
    let placed = |s: &ServicePlan| s.cpus.as_ref().and_then(|c| c.cpus.clone()).unwrap();
    let (sc, wc) = (placed(sealer), placed(worker));
    assert_eq!((sc.len(), wc.len()), (32, 96));
    assert!(sc.intersection(&wc).is_empty());
    assert_eq!(plan.timers.len(), 1);
    assert_eq!(plan.timers[0].env["MINER_TOKEN"], "t0ken");
}

#[test]
fn fewer_gpus_than_takers_the_first_keeps_its_own_and_the_rest_share_the_last() {
    let text = r#"
[host]
state_dir = "/var/lib/venussup"

[[service]]
name = "sealer"
role = "sealer"
tasks = ["WindowPoSt"]
command = ["/usr/local/bin/venus-sealer", "run"]

[[service]]
name = "c2"
role = "worker"
tasks = ["Commit"]
command = ["/usr/local/bin/venus-worker", "run", "--listen=0.0.0.0:3457"]
env = { VENUS_WORKER_PATH = "/var/lib/venus/c2" }

[[service]]
name = "p2"
role = "worker"
tasks = ["PreCommit2"]
command = ["/usr/local/bin/venus-worker", "run", "--listen=0.0.0.0:3458"]
env = { VENUS_WORKER_PATH = "/var/lib/venus/p2", FIL_PROOFS_USE_GPU_TREE_BUILDER = "1" }
"#;
    let (plan, diags) = resolve_text(text, &plan_host(2));
    assert!(of(&diags, Severity::Error).is_empty(), "{diags:#?}");
    let devices = |name| service(&plan, name).gpus.devices.clone();
    assert_eq!(
        (devices("sealer"), devices("c2"), devices("p2")),
        (vec![0], vec![1], vec![1])
    );
    assert_eq!(service(&plan, "c2").gpus.shared_with, ["p2"]);
    // One lock domain per GPU: the sealer's PoSt never waits on C2's locks.
    assert_eq!(
        service(&plan, "sealer").env["TMPDIR"],
        "/var/lib/venussup/gpu0-tmp"
    );
    assert_eq!(
        service(&plan, "c2").env["TMPDIR"],
        "/var/lib/venussup/gpu1-tmp"
    );
    assert_eq!(
        service(&plan, "p2").env["TMPDIR"],
        "/var/lib/venussup/gpu1-tmp"
    );
    assert_eq!(service(&plan, "p2").env["CUDA_VISIBLE_DEVICES"], "1");

    // With one GPU the sealer keeps it alone and the others are told.
    let (plan, diags) = resolve_text(text, &plan_host(1));
    assert_eq!(service(&plan, "sealer").gpus.devices, [0]);
    assert!(service(&plan, "c2").gpus.devices.is_empty());
    assert_eq!(service(&plan, "c2").env["BELLMAN_NO_GPU"], "1");
    assert!(
        of(&diags, Severity::Warning)
            .iter()
            .any(|d| d.message.contains("`c2`")
                && at_line(d) == Some(line_of(text, "name = \"c2\""))),
        "{diags:#?}"
    );
}

#[test]
fn env_files_are_read_through_the_host_in_their_order_of_precedence() {
    let text = r#"
[host]
pass_env = ["LANG"]
env_file = "host.env"
env = { FROM_HOST_ENV = "host-env", OVERRIDDEN = "host-env" }

[[service]]
name = "svc"
command = ["/usr/local/bin/venus-worker", "--repo=${REPO}", "--who=${OVERRIDDEN}"]
env_file = "/srv/svc.env"
env = { FROM_OWN_ENV = "own" }
gpus = "none"
"#;
    let lookups = InMemory::new()
        .program("/usr/local/bin/venus-worker")
        // Relative to the config's folder.
        .file(
            "/etc/venussup/host.env",
            "# the host's\nREPO=/var/lib/venus\nOVERRIDDEN=host-file\nLANG=from-file\n",
        )
        .file(
            "/srv/svc.env",
            "OVERRIDDEN=svc-file\nexport QUOTED=\"a b\"\n",
        );
    let mut host = Host::in_memory(lookups);
    host.own_env = BTreeMap::from([
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("HOME".to_string(), "/root".to_string()),
    ]);
    let (plan, diags) = resolve_text(text, &host);
    assert!(of(&diags, Severity::Error).is_empty(), "{diags:#?}");
    assert!(of(&diags, Severity::Warning).is_empty(), "{diags:#?}");
    let env = &service(&plan, "svc").env;
    assert_eq!(env["PATH"], DEFAULT_PATH);
    // The host env_file beats pass_env; only what pass_env names passes.
    assert_eq!(env["LANG"], "from-file");
    assert!(!env.contains_key("HOME"));
    assert_eq!(env["REPO"], "/var/lib/venus");
    assert_eq!(env["FROM_HOST_ENV"], "host-env");
    // The service's env_file beats [host.env]; its env beats everything.
    assert_eq!(env["OVERRIDDEN"], "svc-file");
    assert_eq!(env["FROM_OWN_ENV"], "own");
    assert_eq!(env["QUOTED"], "a b");
    assert_eq!(
        service(&plan, "svc").argv,
        [
            "/usr/local/bin/venus-worker",
            "--repo=/var/lib/venus",
            "--who=svc-file"
        ]
    );
}

#[test]
fn an_env_file_missing_here_is_a_warning_and_so_are_the_variables_it_would_set() {
    let text = r#"
[[service]]
name = "svc"
command = ["/usr/local/bin/venus-worker", "--token=${MINER_TOKEN}"]
env_file = "/etc/venussup/secret.env"
gpus = "none"
"#;
    let host = Host::in_memory(InMemory::new().program("/usr/local/bin/venus-worker"));
    let (plan, diags) = resolve_text(text, &host);
    assert!(of(&diags, Severity::Error).is_empty(), "{diags:#?}");
    let unread = the(&diags, "cannot read env_file /etc/venussup/secret.env here");
    assert_eq!(unread.severity, Severity::Warning);
    assert_eq!(at_line(unread), Some(line_of(text, "env_file =")));
    let unset = the(
        &diags,
        "`${MINER_TOKEN}` in the command of `svc` is not set here",
    );
    assert_eq!(unset.severity, Severity::Warning);
    assert_eq!(at_line(unset), Some(line_of(text, "command =")));
    // The argument is kept as written.
    assert_eq!(service(&plan, "svc").argv[1], "--token=${MINER_TOKEN}");

    // Present, the same variable unset is an error, and a line that is no
    // KEY=VALUE is an error at the env_file, naming the file's line.
    let host = Host::in_memory(
        InMemory::new()
            .program("/usr/local/bin/venus-worker")
            .file("/etc/venussup/secret.env", "A=1\nnot a pair\n"),
    );
    let (_, diags) = resolve_text(text, &host);
    let bad = the(
        &diags,
        "/etc/venussup/secret.env:2: `not a pair` is not a KEY=VALUE line",
    );
    assert_eq!(bad.severity, Severity::Error);
    assert_eq!(at_line(bad), Some(line_of(text, "env_file =")));
    let unset = the(
        &diags,
        "`${MINER_TOKEN}` in the command of `svc` is not set in its environment",
    );
    assert_eq!(unset.severity, Severity::Error);
}

#[test]
fn a_user_or_group_missing_here_is_said_at_its_line() {
    let text = r#"
[[service]]
name = "svc"
command = ["/usr/local/bin/venus-worker"]
user = "seal"
group = "sealers"
gpus = "none"

[[timer]]
name = "pledge"
command = ["/usr/local/bin/venus-worker"]
every = "10min"
user = "pledger"
"#;
    let lookups = InMemory::new()
        .program("/usr/local/bin/venus-worker")
        .user("seal");
    let (plan, diags) = resolve_text(text, &Host::in_memory(lookups));
    // A config may be meant for another host: a warning, not an error.
    assert!(of(&diags, Severity::Error).is_empty(), "{diags:#?}");
    assert!(!diags.iter().any(|d| d.message.contains("user `seal`")));
    let group = the(
        &diags,
        "group `sealers` does not exist on this host; `svc` will fail to start",
    );
    assert_eq!(group.severity, Severity::Warning);
    assert_eq!(at_line(group), Some(line_of(text, "group = \"sealers\"")));
    let user = the(
        &diags,
        "user `pledger` does not exist on this host; `pledge` will fail to start",
    );
    assert_eq!(user.severity, Severity::Warning);
    assert_eq!(at_line(user), Some(line_of(text, "user = \"pledger\"")));
    // The plan keeps the names: `run` resolves them when it starts.
    let svc = service(&plan, "svc");
    assert_eq!(
        (svc.user.as_deref(), svc.group.as_deref()),
        (Some("seal"), Some("sealers"))
    );
}

#[test]
fn a_program_in_no_folder_of_path_is_an_error_at_its_command() {
    let text = r#"
[[service]]
name = "bare"
command = ["venus-worker", "run"]
gpus = "none"

[[service]]
name = "on-own-path"
command = ["venus-worker", "run"]
env = { PATH = "/opt/venus/bin:/usr/bin" }
gpus = "none"

[[service]]
name = "absolute"
command = ["/opt/venus/bin/venus-sealer"]
gpus = "none"

[[service]]
name = "relative"
command = ["./bin/helper"]
gpus = "none"
"#;
    let lookups = InMemory::new()
        .program("/opt/venus/bin/venus-worker")
        .folder("/opt/venus/bin/venus-sealer");
    let (_, diags) = resolve_text(text, &Host::in_memory(lookups));
    let bare = the(
        &diags,
        "`venus-worker` (the program of `bare`) is in no folder of PATH",
    );
    assert_eq!(bare.severity, Severity::Error);
    assert_eq!(
        at_line(bare),
        Some(line_of(text, "command = [\"venus-worker\""))
    );
    assert!(
        !diags.iter().any(|d| d.message.contains("`on-own-path`")),
        "{diags:#?}"
    );
    let folder = the(
        &diags,
        "(the program of `absolute`) is not an executable file",
    );
    assert_eq!(folder.severity, Severity::Warning);
    let relative = the(
        &diags,
        "`./bin/helper` (the program of `relative`) is taken relative to the config's folder and is not there: /etc/venussup/./bin/helper does not exist",
    );
    assert_eq!(relative.severity, Severity::Error);
}

#[test]
fn a_host_that_tells_no_cpus_cannot_place_a_share() {
    let text = r#"
[[service]]
name = "w"
command = ["/usr/local/bin/venus-worker"]
cpus = "50%"
gpus = "none"
"#;
    let host = Host::in_memory(InMemory::new().program("/usr/local/bin/venus-worker"));
    let (plan, diags) = resolve_text(text, &host);
    let e = the(
        &diags,
        "`cpus` of `w` cannot be placed: the CPUs of this host could not be read",
    );
    assert_eq!(e.severity, Severity::Error);
    assert_eq!(at_line(e), Some(line_of(text, "cpus = ")));
    assert_eq!(service(&plan, "w").cpus.as_ref().unwrap().cpus, None);
    assert_eq!((plan.host.usable_cpus, plan.host.usable_cores), (None, 0));
}

#[test]
fn reserved_cpus_must_be_online_and_are_never_part_of_a_share() {
    let text = r#"
[host]
smt = "off"
reserved_cpus = "0-7"

[[service]]
name = "w"
command = ["/usr/local/bin/venus-worker"]
cpus = "rest"
gpus = "none"
"#;
    let (plan, diags) = resolve_text(text, &plan_host(0));
    assert!(of(&diags, Severity::Error).is_empty(), "{diags:#?}");
    assert_eq!(plan.host.usable_cpus, Some(set("8-127")));
    assert_eq!(plan.host.usable_cores, 120);
    assert_eq!(
        service(&plan, "w").cpus.as_ref().unwrap().cpus,
        Some(set("8-127"))
    );

    let text = text.replace("0-7", "0-7,300");
    let (_, diags) = resolve_text(&text, &plan_host(0));
    let e = the(
        &diags,
        "CPUs 300 in reserved_cpus are not online on this host",
    );
    assert_eq!(e.severity, Severity::Error);
    assert_eq!(at_line(e), Some(line_of(&text, "reserved_cpus")));
}

#[test]
fn the_plan_names_the_config_it_came_from() {
    let text = "[[service]]\nname = \"w\"\ncommand = [\"/bin/true\"]\ngpus = \"none\"\n";
    let host = Host::in_memory(InMemory::new().program("/bin/true"));
    let (plan, diags) = resolve_text(text, &host);
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(plan.config, PathBuf::from(CONFIG));
    assert_eq!(plan.host.gpu_source, Source::None);
    assert_eq!(plan.host.online_cpus, None);
    assert_eq!(
        service(&plan, "w").log_file,
        Path::new("/var/log/venussup/w.log")
    );
}

#[test]
fn a_group_without_a_user_runs_as_root_with_that_group() {
    let text = r#"
[[service]]
name = "svc"
command = ["/usr/local/bin/venus-worker"]
group = "nogroup"
gpus = "none"

[[timer]]
name = "pledge"
command = ["/usr/local/bin/venus-worker"]
every = "10min"
group = "nogroup"
"#;
    let lookups = InMemory::new()
        .program("/usr/local/bin/venus-worker")
        .group("nogroup");
    let (plan, diags) = resolve_text(text, &Host::in_memory(lookups));
    assert!(of(&diags, Severity::Error).is_empty(), "{diags:#?}");
    let svc = service(&plan, "svc");
    assert_eq!(
        (svc.user.as_deref(), svc.group.as_deref()),
        (Some("root"), Some("nogroup"))
    );
    let pledge = &plan.timers[0];
    assert_eq!(
        (pledge.user.as_deref(), pledge.group.as_deref()),
        (Some("root"), Some("nogroup"))
    );
}
