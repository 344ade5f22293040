//! The storage checks on simulated hosts: mount tables, free space and
//! cache files given to an in-memory `Host` under `/sim`.

use super::*;
use crate::capacity::{compute, HostResources, Proofs, SectorProfile};
use crate::host::lookups::InMemory;
use crate::util::fsroot::FsRoot;

const TIB: u64 = 1 << 40;

fn v(args: &[&str]) -> Vec<String> {
    args.iter().map(ToString::to_string).collect()
}

#[test]
fn the_attached_path_is_the_first_argument_after_the_flags() {
    type Want<'a> = Option<(&'a str, bool, bool)>;
    let cases: [(&[&str], Want<'_>); 6] = [
        (
            &["w", "storage", "attach", "--init", "--seal", "/mnt/seal"],
            Some(("/mnt/seal", true, false)),
        ),
        (
            &[
                "s", "storage", "attach", "--init", "--weight", "10", "--store", "/s",
            ],
            Some(("/s", false, true)),
        ),
        (
            &[
                "w",
                "storage",
                "attach",
                "--seal=false",
                "-store",
                "--groups=a",
                "/x",
            ],
            Some(("/x", false, true)),
        ),
        (
            &["w", "--repo", "/r", "storage", "attach", "/y"],
            Some(("/y", false, false)),
        ),
        (&["w", "storage", "attach", "--init"], None),
        (&["w", "run", "--seal", "/z"], None),
    ];
    for (argv, want) in cases {
        let argv = v(argv);
        let got = attach_path(&argv).map(|a| (a.path, a.seal, a.store));
        assert_eq!(got, want, "{argv:?}");
    }
}

#[test]
fn a_path_is_on_the_longest_whole_part_mount_and_the_later_of_two_alike() {
    let table = format!("{MOUNTS}6 1 0:60 / /mnt/seal rw - nfs4 nas:/b rw\n");
    let mounts = mountinfo::parse(&table);
    let on = |path: &str| mount_of(&mounts, path).map(|m| (m.point.as_str(), m.fstype.as_str()));
    assert_eq!(on("/mnt/seal2"), Some(("/", "ext4")));
    assert_eq!(on("/mnt/seal/a"), Some(("/mnt/seal", "nfs4")));
    assert_eq!(on("/data"), Some(("/data", "ext4")));
    assert_eq!(mount_of(&[], "/data"), None);
}

#[test]
fn the_parent_cache_is_seven_quarters_of_the_sector() {
    assert_eq!(parent_cache_bytes(32 * GIB), 56 * GIB);
    assert_eq!(parent_cache_bytes(64 * GIB), 112 * GIB);
}

/// 1 TiB, 64 GiB sectors: 7 fit by memory, 6 recommended.
fn capacity(gib: u64) -> Capacity {
    let resources = HostResources {
        memory: TIB,
        seal_free: vec![],
        l3_group_cores: vec![8; 16],
        sdr_unit_cores: 4,
        proofs: Proofs::default(),
        services: vec![],
        window_post: None,
        other_hosts: 0,
    };
    compute(
        SectorProfile::default_for(ByteSize(gib * GIB)).unwrap(),
        &resources,
        1,
    )
}

const MOUNTS: &str = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 8:2 / /mnt/seal rw - xfs /dev/nvme0n1 rw
3 1 0:50 / /mnt/nfs rw - nfs4 nas:/export rw
4 1 8:3 / /data rw - ext4 /dev/sdb1 rw
5 1 8:4 / /mnt/fast rw - xfs /dev/nvme1n1 rw
";

/// Diagnoses `services` (and `extra` tables) on a simulated host under
/// `/sim` that has `files` and the free space `free` per folder.
fn diagnose(
    services: &str,
    files: &[&str],
    free: &[(&str, u64)],
    capacity: Option<&Capacity>,
) -> Vec<(crate::util::diag::Severity, String)> {
    let mut lookups = InMemory::new()
        .program("/bin/w")
        .file("/sim/proc/self/mountinfo", MOUNTS)
        .folder("/sim");
    for f in files {
        lookups = lookups.file(format!("/sim{f}"), "");
    }
    for (folder, bytes) in free {
        lookups = lookups
            .folder(format!("/sim{folder}"))
            .free(format!("/sim{folder}"), *bytes);
    }
    let host = Host {
        fs_root: FsRoot::new("/sim"),
        ..Host::in_memory(lookups)
    };
    let path = Path::new("t.toml");
    let mut diags = Diagnostics::new(path, services);
    let config = crate::config::parse(path, services, &mut diags).unwrap();
    let plan = crate::plan::resolve(&config, &host, &mut diags);
    let mut found = Diagnostics::new(path, services);
    check(&config, &plan, &host, capacity, &mut found);
    found
        .into_sorted()
        .into_iter()
        .map(|d| (d.severity, d.message))
        .collect()
}

fn attach(name: &str, path: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\nkind = \"oneshot\"\ncommand = [\"/bin/w\", \"storage\", \"attach\", \"--init\", \"--seal\", \"{path}\"]\n")
}

#[test]
fn simulated_seal_paths_on_root_on_nfs_inside_a_mount_and_short_of_space() {
    use crate::util::diag::Severity::{Note, Warning};
    let text = [
        attach("own", "/mnt/seal/"),
        attach("nfs", "/mnt/nfs/seal"),
        attach("root", "/var/seal"),
        "[capacity]\nsector_size = \"64GiB\"\nseal_paths = [\"/data/seal\", \"/mnt/seal\"]\n"
            .to_string(),
    ]
    .concat();
    let c = capacity(64);
    assert_eq!(c.recommended, Some(6));
    let found = diagnose(
        &text,
        &[],
        &[
            ("/mnt/seal", 2 * TIB),
            ("/mnt/nfs", TIB),
            ("/var", 100 * GIB),
            ("/data", TIB + 512 * GIB),
        ],
        Some(&c),
    );
    let about =
        |needle: &str| -> Vec<_> { found.iter().filter(|(_, m)| m.contains(needle)).collect() };
    assert!(about("/mnt/seal (").is_empty(), "{found:#?}");
    let root = about("/var/seal (`root`'s seal path)");
    assert_eq!(root.len(), 2, "{found:#?}");
    assert!(root.iter().any(|(s, m)| *s == Warning
        && m.contains("is on the root filesystem")
        && m.contains("`requires_mounts` of `root`")));
    assert!(root.iter().any(|(s, m)| *s == Warning
        && m.contains("has 100GiB free, less than one 64GiB sector")
        && m.contains("1TiB")));
    let nfs =
        about("/mnt/nfs/seal (`nfs`'s seal path) is on network storage (nfs4 mounted at /mnt/nfs)");
    assert_eq!(nfs.len(), 1, "{found:#?}");
    assert_eq!(nfs[0].0, Warning);
    let inside = about("/data/seal (a [capacity] seal path) is not a mount of its own: it is on the ext4 filesystem mounted at /data");
    assert_eq!(inside.len(), 1, "{found:#?}");
    assert_eq!(inside[0].0, Note);
    // 2 (/mnt/seal, named twice, counted once) + 1 (nfs) + 0 + 1 (/data).
    let total = about("the seal paths hold 4 sector(s) of 64GiB");
    assert_eq!(total.len(), 1, "{found:#?}");
    assert!(
        total[0].1.contains("fewer than the capacity plan's 6")
            && total[0].1.contains("lower MaxSealingSectors to 4")
    );
    assert_eq!(found.len(), 5, "{found:#?}");
}

#[test]
fn simulated_seal_path_held_by_requires_mounts_is_a_note_until_mounted() {
    let held = format!(
        "{}requires_mounts = [\"/mnt/seal2/\"]\n",
        attach("held", "/mnt/seal2/a")
    );
    let found = diagnose(&held, &[], &[("/mnt/seal2", GIB)], Some(&capacity(64)));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].1.starts_with("/mnt/seal2/a (`held`'s seal path) is not mounted here (/mnt/seal2 is not a mount point now); `requires_mounts` holds `held` until it is"), "{found:#?}");
    // Mounted: checked as any seal path (here, too small for a sector).
    let mounted = held.replace("/mnt/seal2", "/mnt/seal");
    let found = diagnose(&mounted, &[], &[("/mnt/seal", GIB)], Some(&capacity(64)));
    assert!(
        found
            .iter()
            .any(|(_, m)| m.contains("has 1GiB free, less than one 64GiB sector")),
        "{found:#?}"
    );
}

const SEALER: &str = "[[service]]\nname = \"sealer\"\nrole = \"sealer\"\ntasks = [\"WindowPoSt\"]\ncommand = [\"/bin/w\", \"run\"]\n";
const P1: &str = "[[service]]\nname = \"p1\"\nrole = \"worker\"\ncommand = [\"/bin/w\", \"run\", \"--commit=false\", \"--prove-replica-update2=false\"]\n";

#[test]
fn simulated_var_tmp_too_small_for_the_parent_cache_and_the_parameters() {
    let c = capacity(32);
    let text = format!("{SEALER}{P1}");
    // 56 GiB of parent cache and 45 GiB of parameters on 80 GiB.
    let found = diagnose(&text, &[], &[("/var/tmp", 80 * GIB)], Some(&c));
    assert_eq!(found.len(), 1, "{found:#?}");
    let m = &found[0].1;
    assert!(
        m.starts_with("the filesystem at / has 80GiB free, but the SDR parent cache in /var/tmp/filecoin-parents (56GiB, for `p1`) and the proof parameters in /var/tmp/filecoin-proof-parameters (45GiB, for `sealer`) need 101GiB for 32GiB sectors")
            && m.contains("FIL_PROOFS_PARENT_CACHE"),
        "{m}"
    );
    // Without a capacity plan (a seal path missing), `[capacity]`
    // still gives the sector size.
    let sized = format!("{text}[capacity]\nsector_size = \"32GiB\"\n");
    let found = diagnose(&sized, &[], &[("/var/tmp", 80 * GIB)], None);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].1.contains("need 101GiB"), "{found:#?}");
    // The parent cache is there already: 45 GiB fit in 80.
    let cached = "/var/tmp/filecoin-parents/v28-sdr-parent-21981246c370f9d76c7a77ab273d94bde0ceb4e938292334960bce05585dc117.cache";
    let found = diagnose(&text, &[cached], &[("/var/tmp", 80 * GIB)], Some(&c));
    assert!(found.is_empty(), "{found:#?}");
    // The parent cache moved to its own disk: each filesystem alone.
    let moved =
        format!("{SEALER}{P1}env = {{ FIL_PROOFS_PARENT_CACHE = \"/mnt/fast/parents\" }}\n");
    let found = diagnose(
        &moved,
        &[],
        &[("/var/tmp", 50 * GIB), ("/mnt/fast", 50 * GIB)],
        Some(&c),
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].1.starts_with("the filesystem at /mnt/fast has 50GiB free, but the SDR parent cache in /mnt/fast/parents (56GiB, for `p1`) needs 56GiB"), "{found:#?}");
}

#[test]
fn simulated_parameters_of_unknown_size_are_a_note_and_a_p1_worker_leaving_c2_on_needs_them() {
    let c = capacity(64);
    // The worker declares no tasks and leaves --commit on: it fetches
    // the parameters too, and runs PreCommit1.
    let text = "[[service]]\nname = \"w\"\nrole = \"worker\"\ncommand = [\"/bin/w\", \"run\"]\n";
    let found = diagnose(text, &[], &[("/var/tmp", 200 * GIB)], Some(&c));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].1.starts_with("the proof parameters for 64GiB sectors are not in /var/tmp/filecoin-proof-parameters yet (`w` fetches them at start)"), "{found:#?}");
    // 112 GiB of parent cache do not fit in 100 GiB.
    let found = diagnose(text, &[], &[("/var/tmp", 100 * GIB)], Some(&c));
    assert!(
        found.iter().any(|(_, m)| m.contains(
            "the SDR parent cache in /var/tmp/filecoin-parents (112GiB, for `w`) needs 112GiB"
        )),
        "{found:#?}"
    );
}
