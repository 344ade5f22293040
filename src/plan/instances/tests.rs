use std::path::Path;

use super::*;
use crate::config::values::GpuRef;

fn instance(per: Instances, gpu: Option<u32>, numa: Option<u32>, port: Option<u16>) -> Instance {
    Instance {
        of: "w".into(),
        index: 1,
        count: 2,
        per,
        gpu,
        numa,
        port,
    }
}

fn fill(text: &str, inst: &Instance) -> Result<String, SubstError> {
    substitute(text, |name| inst.value(name))
}

#[test]
fn placeholders_are_filled_and_braces_and_variables_kept() {
    let inst = instance(Instances::PerGpu, Some(3), Some(1), Some(3457));
    assert_eq!(
        fill("--listen=0.0.0.0:{port} /r{i} gpu{gpu} node{numa}", &inst).unwrap(),
        "--listen=0.0.0.0:3457 /r1 gpu3 node1"
    );
    // Literal braces, `${VAR}` and `$$` are left for the environment.
    assert_eq!(
        fill("{{\"a\": 1}} ${HOME}/{i} $${i} a}b", &inst).unwrap(),
        "{\"a\": 1} ${HOME}/1 $$1 a}b"
    );
    assert_eq!(fill("${UNCLOSED", &inst).unwrap(), "${UNCLOSED");
}

#[test]
fn a_placeholder_without_a_value_says_why_and_names_itself() {
    let counted = instance(Instances::Count(2), None, None, None);
    let e = fill("x{nope}y", &counted).unwrap_err();
    assert_eq!(e.token, "{nope}");
    assert!(
        e.message
            .starts_with("unknown placeholder `{nope}`; instances know {i}, {gpu}, {numa}, {port}"),
        "{}",
        e.message
    );
    let e = fill("{gpu}", &counted).unwrap_err();
    assert_eq!(e.message, "`{gpu}` is the instance's own GPU: it needs `instances = \"per-gpu\"` (`w` has `instances = 2`)");
    assert!(fill("{numa}", &counted)
        .unwrap_err()
        .message
        .contains("needs `instances = \"per-numa\"`"));
    assert!(fill("{port}", &counted)
        .unwrap_err()
        .message
        .contains("give `w` a `port_base`"));
    let gpu_without_node = instance(Instances::PerGpu, Some(2), None, None);
    assert!(fill("{numa}", &gpu_without_node)
        .unwrap_err()
        .message
        .contains("does not tell the NUMA node of GPU 2"));
    let e = fill("a{i", &counted).unwrap_err();
    assert_eq!(
        (e.token.as_str(), e.message.contains("without closing")),
        ("{i", true)
    );
}

fn parse(text: &str) -> (Config, Diagnostics) {
    let mut diags = Diagnostics::new(Path::new("t.toml"), text);
    let config = crate::config::parse(Path::new("t.toml"), text, &mut diags).unwrap();
    (config, diags)
}

fn gpus(nodes: &[Option<u32>]) -> Vec<Gpu> {
    (0..)
        .zip(nodes)
        .map(|(i, &numa)| Gpu {
            numa,
            ..Gpu::numbered(i)
        })
        .collect()
}

fn messages(diags: Diagnostics) -> Vec<String> {
    diags
        .into_sorted()
        .iter()
        .map(ToString::to_string)
        .collect()
}

const WORKER: &str = "\
[[service]]
name = \"w\"
instances = \"per-gpu\"
port_base = 3456
cpus = \"100%\"
command = [\"/bin/w\", \"--listen=0.0.0.0:{port}\"]
env = { VENUS_WORKER_PATH = \"/r/{i}-gpu{gpu}-node{numa}\" }
ready = { tcp = \"127.0.0.1:{port}\" }
workdir = \"/r/{i}\"
[[service]]
name = \"attach\"
kind = \"oneshot\"
after = [\"w\"]
command = [\"/bin/attach\"]
[[timer]]
name = \"pledge\"
every = \"10min\"
after = [\"w@1\"]
command = [\"/bin/pledge\"]
";

#[test]
fn per_gpu_makes_a_copy_per_gpu_and_after_names_them_all() {
    let (config, mut diags) = parse(WORKER);
    let out = expand(
        &config,
        &gpus(&[Some(1), Some(0)]),
        Some(&[0, 1]),
        &mut diags,
    );
    assert_eq!(messages(diags), Vec::<String>::new());
    let names: Vec<&str> = out
        .services
        .iter()
        .map(|s| s.name.get_ref().as_str())
        .collect();
    assert_eq!(names, ["w@0", "w@1", "attach"]);
    let w1 = &out.services[1];
    assert_eq!(w1.command.get_ref()[1], "--listen=0.0.0.0:3457");
    let env: Vec<&String> = w1.env.values().collect();
    assert_eq!(env, ["/r/1-gpu1-node0"]);
    assert_eq!(
        w1.ready
            .as_ref()
            .unwrap()
            .get_ref()
            .tcp
            .as_ref()
            .unwrap()
            .get_ref(),
        "127.0.0.1:3457"
    );
    assert_eq!(w1.workdir.as_deref(), Some(Path::new("/r/1")));
    assert_eq!(w1.gpus.get_ref(), &GpuSpec::List(vec![GpuRef::Index(1)]));
    assert_eq!(
        w1.instance,
        Some(Instance {
            of: "w".into(),
            index: 1,
            count: 2,
            per: Instances::PerGpu,
            gpu: Some(1),
            numa: Some(0),
            port: Some(3457),
        })
    );
    assert!(w1.instances.is_none() && w1.port_base.is_none());
    let after: Vec<&str> = out.services[2]
        .after
        .iter()
        .map(|a| a.get_ref().as_str())
        .collect();
    assert_eq!(after, ["w@0", "w@1"]);
    let timer_after: Vec<&str> = out.timers[0]
        .after
        .iter()
        .map(|a| a.get_ref().as_str())
        .collect();
    assert_eq!(timer_after, ["w@1"]);
}

#[test]
fn per_gpu_takes_the_listed_gpus_and_needs_some() {
    let listed = WORKER.replace("cpus = \"100%\"", "gpus = [2, 0]");
    let (config, mut diags) = parse(&listed);
    let out = expand(&config, &gpus(&[None, None, None]), None, &mut diags);
    let g: Vec<Option<u32>> = out.services[..2]
        .iter()
        .map(|s| s.instance.as_ref().unwrap().gpu)
        .collect();
    assert_eq!(g, [Some(2), Some(0)]);
    // The GPUs' nodes are unknown: `{numa}` cannot be filled.
    assert_eq!(
        messages(diags),
        ["t.toml:7:50: error: `w`: `{numa}`: this host does not tell the NUMA node of GPU 2 (/sys/bus/pci/devices/<bus id>/numa_node)",
         "t.toml:7:50: error: `w`: `{numa}`: this host does not tell the NUMA node of GPU 0 (/sys/bus/pci/devices/<bus id>/numa_node)"]
    );
    let (config, mut diags) = parse(WORKER);
    let out = expand(&config, &[], Some(&[0]), &mut diags);
    assert_eq!(out.services.len(), 1);
    let m = messages(diags);
    assert!(
        m[0].starts_with(
            "t.toml:3:13: error: `instances = \"per-gpu\"` of `w`: this host has no GPU"
        ),
        "{m:?}"
    );
    assert_eq!(
        m[1],
        "t.toml:18:10: error: `w@1` in `after` of `pledge` is not an instance: `w` has no instances on this host"
    );
}

#[test]
fn counted_and_per_numa_copies_and_what_cannot_be_split() {
    let text = "\
[[service]]
name = \"p1\"
instances = 3
cpus = \"rest\"
port_base = 65534
command = [\"/bin/p1\", \"{i}\"]
[[service]]
name = \"node\"
instances = \"per-numa\"
cpus = \"0-3\"
command = [\"/bin/n\", \"--node={numa}\"]
";
    let (config, mut diags) = parse(text);
    let out = expand(&config, &[], Some(&[0, 1]), &mut diags);
    let names: Vec<&str> = out
        .services
        .iter()
        .map(|s| s.name.get_ref().as_str())
        .collect();
    assert_eq!(names, ["p1@0", "p1@1", "p1@2", "node@0", "node@1"]);
    assert_eq!(out.services[4].command.get_ref()[1], "--node=1");
    assert_eq!(out.services[2].command.get_ref()[1], "2");
    assert_eq!(
        messages(diags),
        [
            "t.toml:4:8: error: `p1` has `instances`, and `rest` cannot be split between them; give a share such as \"100%\" (each instance gets an equal part) or \"all\"",
            "t.toml:5:13: error: `port_base = 65534` of `p1`: 3 instances would pass port 65535",
            "t.toml:10:8: error: `node` has `instances`, and a CPU list cannot be split between them; give a share such as \"100%\" (each instance gets an equal part) or \"all\"",
        ]
    );
    let (config, mut diags) = parse(text);
    expand(&config, &[], None, &mut diags);
    assert!(messages(diags).iter().any(|m| m
        .contains("`instances = \"per-numa\"` of `node`: this host does not tell its NUMA nodes")));
}

#[test]
fn instances_are_read_as_a_count_or_a_kind() {
    let (config, diags) = parse("[[service]]\nname = \"a\"\ninstances = 0\ncommand = [\"/bin/a\"]\n[[service]]\nname = \"b\"\ninstances = \"per-core\"\ncommand = [\"/bin/b\"]\n");
    let m = messages(diags);
    assert!(
        m[0].starts_with("t.toml:3:13: error: `instances = 0`: give from 1 to 256"),
        "{m:?}"
    );
    assert!(
        m[1].starts_with("t.toml:7:13: error: `per-core` is not an instance count"),
        "{m:?}"
    );
    assert!(config.services.iter().all(|s| s.instances.is_none()));
}
