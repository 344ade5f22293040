//! Hand-out, sharing, environment and reconciliation against stated GPUs.

use super::handout::grant;
use super::*;
use crate::host::gpu::*;
use crate::util::gpuid::normalize_uuid;

/// A claim with the GPU builders on (PreCommit2 uses a GPU) and its cores'
/// NUMA nodes not known.
fn claim(name: &str, want: Want, tasks: &[Task]) -> Claim {
    Claim {
        name: name.to_string(),
        want,
        tasks: tasks.to_vec(),
        gpu_builders: true,
        nodes: None,
    }
}

/// `n` GPUs whose NUMA nodes are not known.
fn gpus(n: u32) -> Vec<Gpu> {
    (0..n).map(Gpu::numbered).collect()
}

fn devices(grants: &[Grant]) -> Vec<Vec<u32>> {
    grants.iter().map(|g| g.devices.clone()).collect()
}

fn names(claims: &[Claim]) -> Vec<String> {
    claims.iter().map(|c| c.name.clone()).collect()
}

/// Host A and B of the plan, and a host running all three GPU tasks.
fn three_takers() -> Vec<Claim> {
    vec![
        claim("p2", Want::Auto, &[Task::PreCommit1, Task::PreCommit2]),
        claim("c2", Want::Auto, &[Task::Commit]),
        claim("sealer", Want::Auto, &[Task::WindowPoSt, Task::WinningPoSt]),
        claim("attach", Want::Auto, &[]),
        claim("cpu", Want::None, &[Task::Commit]),
    ]
}

#[test]
fn enough_gpus_each_taker_gets_its_own_in_priority_order() {
    let (grants, problems) = assign(&gpus(3), &three_takers());
    assert!(problems.is_empty());
    assert_eq!(
        devices(&grants),
        vec![vec![2], vec![1], vec![0], vec![], vec![]]
    );
    assert_eq!(grants[3].reason, Reason::NoGpuTask);
    assert_eq!(grants[4].reason, Reason::NotAsked);
    assert_eq!(
        grants[2].reason.to_string(),
        "auto: WindowPoSt, taker 1 of 3, a GPU of its own"
    );
}

#[test]
fn two_gpus_three_takers_the_first_alone_the_others_share_the_last() {
    let claims = three_takers();
    let (grants, _) = assign(&gpus(2), &claims);
    assert_eq!(
        devices(&grants),
        vec![vec![1], vec![1], vec![0], vec![], vec![]]
    );
    assert!(matches!(
        grants[0].reason,
        Reason::SharesLast { rank: 3, .. }
    ));
    let shared = sharing(&names(&claims), &grants);
    assert_eq!(shared[0], vec!["c2".to_string()]);
    assert!(shared[2].is_empty());
    let tmp = lock_tmpdirs(&grants, Path::new("/var/lib/venussup"));
    assert_eq!(tmp[0], Some(PathBuf::from("/var/lib/venussup/gpu1-tmp")));
    assert_eq!(tmp[1], tmp[0]);
    // The sealer has GPU 0 alone: a lock domain of its own.
    assert_eq!(tmp[2], Some(PathBuf::from("/var/lib/venussup/gpu0-tmp")));
    assert_eq!((tmp[3].clone(), tmp[4].clone()), (None, None));
}

#[test]
fn one_gpu_goes_to_windowpost_alone_and_the_others_get_none() {
    let (grants, _) = assign(&gpus(1), &three_takers());
    assert_eq!(
        devices(&grants),
        vec![vec![], vec![], vec![0], vec![], vec![]]
    );
    assert_eq!(
        grants[1].reason.to_string(),
        "auto: Commit, but the free GPUs went to `sealer` (PoSt never shares a GPU); none"
    );
}

#[test]
fn no_gpu_is_a_normal_host_and_listed_gpus_must_exist() {
    let mut claims = three_takers();
    claims.push(claim("listed", Want::Listed(vec![0, 2]), &[]));
    let (grants, problems) = assign(&gpus(0), &claims);
    assert!(grants[..3].iter().all(|g| g.devices.is_empty()));
    assert_eq!(
        grants[0].reason.to_string(),
        "auto: PreCommit2, but this host has no GPU; none"
    );
    assert_eq!(problems.len(), 2);
    let (_, problems) = assign(&gpus(2), &claims);
    assert_eq!(
        problems,
        vec![NoSuchGpu {
            claim: 5,
            gpu: 2,
            gpus: 2
        }]
    );
    assert_eq!(
        problems[0].to_string(),
        "GPU 2 is listed, but this host has 2 GPUs (0-1)"
    );
}

#[test]
fn listed_gpus_are_not_handed_out_by_auto_and_sharing_links_tmpdirs() {
    let claims = vec![
        claim("sealer", Want::Auto, &[Task::WindowPoSt]),
        claim("c2", Want::Listed(vec![0, 1]), &[Task::Commit]),
        claim("p2", Want::Listed(vec![1]), &[Task::PreCommit2]),
    ];
    let (grants, _) = assign(&gpus(3), &claims);
    assert_eq!(devices(&grants), vec![vec![2], vec![0, 1], vec![1]]);
    let tmp = lock_tmpdirs(&grants, Path::new("/s"));
    assert_eq!(
        tmp,
        vec![
            Some(PathBuf::from("/s/gpu2-tmp")),
            Some(PathBuf::from("/s/gpu0-tmp")),
            Some(PathBuf::from("/s/gpu0-tmp"))
        ]
    );
    let (grants, _) = assign(&gpus(2), &claims);
    assert_eq!(
        grants[0].reason,
        Reason::NoneFree {
            task: Task::WindowPoSt,
            gpus: 2
        }
    );
}

#[test]
fn environment_of_gpu_and_cpu_services() {
    let mut env = BTreeMap::from([
        ("BELLMAN_NO_GPU".to_string(), "0".to_string()),
        ("TMPDIR".to_string(), "/tmp/x".to_string()),
    ]);
    let visible = ["0".to_string(), "1".to_string()];
    let replaced = apply_env(&mut env, &visible, Some(Path::new("/s/gpu0-tmp")));
    assert_eq!(env["CUDA_VISIBLE_DEVICES"], "0,1");
    assert_eq!(env["CUDA_DEVICE_ORDER"], "PCI_BUS_ID");
    assert_eq!(env["TMPDIR"], "/s/gpu0-tmp");
    assert!(!env.contains_key("BELLMAN_NO_GPU"));
    assert_eq!(
        replaced.keys().collect::<Vec<_>>(),
        ["BELLMAN_NO_GPU", "TMPDIR"]
    );
    let mut env = BTreeMap::new();
    assert!(apply_env(&mut env, &[], None).is_empty());
    assert_eq!(env["CUDA_VISIBLE_DEVICES"], "");
    assert_eq!(env["BELLMAN_NO_GPU"], "1");
    assert!(!env.contains_key("CUDA_DEVICE_ORDER"));
}

#[test]
fn stated_gpus_win_and_disagreement_is_told() {
    let found = Discovery {
        gpus: vec![Gpu {
            bus_id: Some("0000:01:00.0".into()),
            model: Some("M".into()),
            ..Gpu::numbered(0)
        }],
        source: Source::Driver,
        warnings: Vec::new(),
    };
    let (same, remark) = reconcile(Some(&Stated::Count(1)), &found);
    assert_eq!((same.gpus.clone(), remark), (found.gpus.clone(), None));
    let (two, remark) = reconcile(Some(&Stated::Count(2)), &found);
    assert_eq!(two.gpus.len(), 2);
    assert!(remark.unwrap().0);
    let (none, remark) = reconcile(
        Some(&Stated::Ids(vec![StatedId::Bus("0000:41:00.0".into())])),
        &Discovery::default(),
    );
    assert_eq!(none.gpus[0].bus_id.as_deref(), Some("0000:41:00.0"));
    assert!(!remark.unwrap().0);
    let (by_bus, remark) = reconcile(
        Some(&Stated::Ids(vec![StatedId::Bus("0000:01:00.0".into())])),
        &found,
    );
    assert_eq!((by_bus.gpus[0].model.as_deref(), remark), (Some("M"), None));
}

fn uuid_gpu(index: u32, bus: &str, minor: u32) -> Gpu {
    Gpu {
        bus_id: Some(bus.into()),
        uuid: Some(simulated_uuid(minor)),
        ..Gpu::numbered(index)
    }
}

#[test]
fn lock_dirs_gather_a_domain_and_its_owner() {
    let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let grants = vec![
        grant(vec![1], Reason::Listed),
        grant(vec![1], Reason::Listed),
        grant(vec![0], Reason::Listed),
    ];
    let tmp = lock_tmpdirs(&grants, Path::new("/s"));
    let owners = vec![
        (Some("lotus".to_string()), None),
        (Some("lotus".to_string()), None),
        (None, None),
    ];
    let dirs = lock_dirs(&names, &owners, &grants, &tmp);
    assert_eq!(dirs.len(), 2);
    assert_eq!(
        (dirs[0].path.clone(), dirs[0].services.clone()),
        (
            PathBuf::from("/s/gpu1-tmp"),
            vec!["a".to_string(), "b".to_string()]
        )
    );
    assert_eq!(
        (dirs[0].user.as_deref(), dirs[0].mixed_users),
        (Some("lotus"), false)
    );
    assert_eq!(
        (dirs[1].gpus.clone(), dirs[1].user.clone()),
        (vec![0], None)
    );
    let mixed = vec![
        (Some("lotus".to_string()), None),
        (None, None),
        (None, None),
    ];
    let dirs = lock_dirs(&names, &mixed, &grants, &tmp);
    assert_eq!((dirs[0].user.clone(), dirs[0].mixed_users), (None, true));
}

#[test]
fn uuids_are_normalized_and_name_gpus_wherever_the_bus_puts_them() {
    assert_eq!(
        normalize_uuid(" gpu-8E5C1F2A-0b3c-4d5e-8f90-A1B2C3D4E5F6 ").as_deref(),
        Some("GPU-8e5c1f2a-0b3c-4d5e-8f90-a1b2c3d4e5f6")
    );
    for bad in [
        "GPU-",
        "GPU-xyz",
        "8e5c1f2a",
        "GPU-8e5c--1f2a",
        "MIG-8e5c1f2a",
    ] {
        assert_eq!(normalize_uuid(bad), None, "{bad}");
    }
    // The bus was renumbered: the GPU with minor 1 is now first.
    let gpus = vec![
        uuid_gpu(0, "0000:01:00.0", 1),
        uuid_gpu(1, "0000:41:00.0", 0),
    ];
    let spec = GpuSpec::List(vec![GpuRef::Uuid(simulated_uuid(0)), GpuRef::Index(0)]);
    assert_eq!(want(&spec, &gpus), (Want::Listed(vec![1, 0]), Vec::new()));
    let unknown = GpuSpec::List(vec![GpuRef::Uuid("GPU-deadbeef".into())]);
    let (w, problems) = want(&unknown, &gpus);
    assert_eq!(w, Want::Listed(Vec::new()));
    assert_eq!(
        problems,
        [format!(
            "GPU GPU-deadbeef is not on this host; its GPUs are 0 ({}), 1 ({})",
            simulated_uuid(1),
            simulated_uuid(0)
        )]
    );
    let (_, problems) = want(&unknown, &[Gpu::numbered(0)]);
    assert!(
        problems[0].contains("no GPU of this host has a known UUID"),
        "{problems:?}"
    );
}

#[test]
fn cuda_visible_devices_by_index_or_by_uuid() {
    let gpus = vec![uuid_gpu(0, "0000:01:00.0", 1), Gpu::numbered(1)];
    assert_eq!(
        visible_devices(&[0, 1], &gpus, CudaIds::Index),
        Ok(vec!["0".into(), "1".into()])
    );
    assert_eq!(
        visible_devices(&[0], &gpus, CudaIds::Uuid),
        Ok(vec![simulated_uuid(1)])
    );
    assert_eq!(visible_devices(&[0, 1], &gpus, CudaIds::Uuid), Err(1));
}

#[test]
fn stated_uuids_take_what_the_driver_knows_and_bus_order() {
    let found = Discovery {
        gpus: vec![
            uuid_gpu(0, "0000:01:00.0", 1),
            uuid_gpu(1, "0000:41:00.0", 0),
        ],
        source: Source::Driver,
        warnings: Vec::new(),
    };
    let stated = Stated::Ids(vec![
        StatedId::Uuid(simulated_uuid(0)),
        StatedId::Uuid(simulated_uuid(1)),
    ]);
    let (planned, remark) = reconcile(Some(&stated), &found);
    assert_eq!((planned.gpus, remark), (found.gpus.clone(), None));
    let missing = Stated::Ids(vec![
        StatedId::Uuid("GPU-deadbeef".into()),
        StatedId::Bus("0000:41:00.0".into()),
    ]);
    let (planned, remark) = reconcile(Some(&missing), &found);
    assert_eq!(planned.gpus[0].bus_id.as_deref(), Some("0000:41:00.0"));
    assert_eq!(
        (planned.gpus[1].index, planned.gpus[1].uuid.as_deref()),
        (1, Some("GPU-deadbeef"))
    );
    assert!(remark.unwrap().0);
}

fn on_nodes(mut c: Claim, nodes: &[u32]) -> Claim {
    c.nodes = Some(nodes.to_vec());
    c
}

/// GPUs on the given NUMA nodes, in index order.
fn gpus_on(nodes: &[u32]) -> Vec<Gpu> {
    (0..)
        .zip(nodes)
        .map(|(i, &n)| Gpu {
            numa: Some(n),
            ..Gpu::numbered(i)
        })
        .collect()
}

#[test]
fn gpus_nobody_takes_go_to_c2_the_fewest_first() {
    let claims = vec![
        claim("sealer", Want::Auto, &[Task::WindowPoSt]),
        claim("c2", Want::Auto, &[Task::Commit]),
    ];
    let (grants, _) = assign(&gpus(3), &claims);
    assert_eq!(devices(&grants), vec![vec![0], vec![1, 2]]);
    assert_eq!(
        grants[1].reason.to_string(),
        "auto: Commit, taker 2 of 2, a GPU of its own, and idle GPU 2: C2 splits its work over every GPU it sees"
    );
    // Two C2 workers and a P2 worker: each its own, the idle ones to C2
    // only, one each.
    let claims = vec![
        claim("a", Want::Auto, &[Task::Commit]),
        claim("p2", Want::Auto, &[Task::PreCommit2]),
        claim("b", Want::Auto, &[Task::Commit]),
    ];
    let (grants, _) = assign(&gpus(5), &claims);
    assert_eq!(devices(&grants), vec![vec![0, 3], vec![2], vec![1, 4]]);
    // While anyone shares, nothing is idle.
    let (grants, _) = assign(&gpus(1), &claims);
    assert_eq!(devices(&grants), vec![vec![0], vec![0], vec![0]]);
    assert!(matches!(grants[1].reason, Reason::SharesLast { .. }));
}

#[test]
fn post_never_shares_even_with_another_post() {
    let claims = vec![
        claim("w1", Want::Auto, &[Task::WindowPoSt]),
        claim("w2", Want::Auto, &[Task::WinningPoSt]),
        claim("w3", Want::Auto, &[Task::WindowPoSt]),
        claim("c2", Want::Auto, &[Task::Commit]),
    ];
    let (grants, _) = assign(&gpus(2), &claims);
    assert_eq!(devices(&grants), vec![vec![0], vec![1], vec![], vec![]]);
    assert_eq!(
        grants[2].reason,
        Reason::Crowded {
            task: Task::WindowPoSt,
            by: vec!["w1".into(), "w2".into()]
        }
    );
    let (text, warn) = (
        grants[3].shortfall("c2", &[]).unwrap().1,
        grants[3].shortfall("c2", &[]).unwrap().0,
    );
    assert!(warn);
    assert!(
        !text.contains("gpus = [") && !text.contains("share"),
        "the warning must not suggest sharing: {text}"
    );
    assert!(post_shares(&claims, &grants).is_empty());
}

#[test]
fn a_listed_gpu_shared_with_post_is_found_with_every_holder() {
    let claims = vec![
        claim("c2", Want::Listed(vec![0]), &[Task::Commit]),
        claim(
            "sealer",
            Want::Listed(vec![0, 1]),
            &[Task::WinningPoSt, Task::WindowPoSt],
        ),
        claim("p2", Want::Listed(vec![1]), &[Task::PreCommit2]),
        claim("alone", Want::Listed(vec![2]), &[Task::WindowPoSt]),
    ];
    let (grants, _) = assign(&gpus(3), &claims);
    assert_eq!(
        post_shares(&claims, &grants),
        vec![PostShare {
            post: 1,
            task: Task::WindowPoSt,
            gpus: vec![0, 1],
            with: vec![0, 2]
        }]
    );
}

#[test]
fn gpus_are_chosen_on_the_numa_node_of_the_cores() {
    // GPU 0 on node 0, GPU 1 on node 1; C2 on node-1 cores gets GPU 1,
    // though the unconfined sealer comes first.
    let host = gpus_on(&[0, 1]);
    let claims = vec![
        claim("sealer", Want::Auto, &[Task::WindowPoSt]),
        on_nodes(claim("c2", Want::Auto, &[Task::Commit]), &[1]),
    ];
    let (grants, _) = assign(&host, &claims);
    assert_eq!(devices(&grants), vec![vec![0], vec![1]]);
    assert_eq!(
        grants[1].reason.to_string(),
        "auto: Commit, taker 2 of 2, a GPU of its own on its cores' NUMA node 1"
    );
    assert!(grants[1].shortfall("c2", &[]).is_none());
    // Both GPUs on node 0, C2 on node 1: the nearest there is, said.
    let (grants, _) = assign(&gpus_on(&[0, 0]), &claims);
    assert_eq!(
        grants[1].reason,
        Reason::Own {
            task: Task::Commit,
            rank: 2,
            of: 2,
            numa: NumaFit::Far {
                node: 0,
                cores: vec![1]
            },
            idle: Vec::new()
        }
    );
    assert!(grants[1]
        .shortfall("c2", &[])
        .unwrap()
        .1
        .contains("away from its cores on node 1"));
    // Idle GPUs go to the C2 worker on their node.
    let claims = vec![
        on_nodes(claim("c2a", Want::Auto, &[Task::Commit]), &[0]),
        on_nodes(claim("c2b", Want::Auto, &[Task::Commit]), &[1]),
    ];
    let (grants, _) = assign(&gpus_on(&[0, 0, 1, 1]), &claims);
    assert_eq!(devices(&grants), vec![vec![0, 1], vec![2, 3]]);
}

#[test]
fn precommit2_takes_a_gpu_only_with_the_gpu_builders_on() {
    let mut p2 = claim("p2", Want::Auto, &[Task::PreCommit1, Task::PreCommit2]);
    p2.gpu_builders = false;
    let claims = vec![p2, claim("c2", Want::Auto, &[Task::Commit])];
    let (grants, _) = assign(&gpus(2), &claims);
    assert_eq!(devices(&grants), vec![vec![], vec![0, 1]]);
    assert_eq!(grants[0].reason, Reason::CpuTrees);
    let (note, text) = grants[0].shortfall("p2", &[]).unwrap();
    assert!(
        !note && text.contains("FIL_PROOFS_USE_GPU_TREE_BUILDER=1"),
        "{text}"
    );
    assert!(!wants_gpu(&GpuSpec::Auto, &[Task::PreCommit2], false));
    assert!(wants_gpu(&GpuSpec::Auto, &[Task::PreCommit2], true));
}

#[test]
fn the_gpu_builders_read_as_the_proofs_read_them() {
    for on in ["1", "true", "TRUE", "On", "yes"] {
        assert_eq!(proofs_bool(on), Some(true), "{on}");
    }
    for off in ["0", "false", "Off", "NO"] {
        assert_eq!(proofs_bool(off), Some(false), "{off}");
    }
    for bad in ["", "2", "enabled", " 1"] {
        assert_eq!(proofs_bool(bad), None, "{bad:?}");
    }
    let env = BTreeMap::from([
        (
            "fil_proofs_use_gpu_tree_builder".to_string(),
            "0".to_string(),
        ),
        (
            "FIL_PROOFS_USE_GPU_COLUMN_BUILDER".to_string(),
            "yes".to_string(),
        ),
        ("FIL_PROOFS_USE_MULTICORE_SDR".to_string(), "1".to_string()),
    ]);
    assert_eq!(
        gpu_builders(&env),
        vec![
            ("FIL_PROOFS_USE_GPU_COLUMN_BUILDER", "yes", Some(true)),
            ("fil_proofs_use_gpu_tree_builder", "0", Some(false)),
        ]
    );
    assert!(gpu_builders_on(&env));
    assert!(!gpu_builders_on(&BTreeMap::new()));
}
