//! Where sectors seal and where the proofs keep their caches, checked
//! against the host's mount table and free space (read through `Host`):
//! each `storage attach` path and `[capacity] seal_paths` (a mount of its
//! own, not the root filesystem, not network storage for sealing, room for
//! the capacity plan's sectors), and the folders of the SDR parent cache
//! and the proof parameters (`/var/tmp` by default). `docs/venus.md`
//! cites the Venus and proofs sources of each rule.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::venus::{env_span, flag_on, lexical, pairs, Pair};
use crate::capacity::{Capacity, SectorProfile};
use crate::config::{Config, Role, ServiceKind, Task};
use crate::host::{FileKind, Host};
use crate::util::diag::Diagnostics;
use crate::util::mountinfo::{self, Mount};
use crate::util::units::ByteSize;

const GIB: u64 = 1 << 30;

/// Filesystems that reach their data over the network.
const NETWORK_FS: [&str; 9] = [
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.sshfs",
];

/// The proofs' parent cache file names by sector size (two porep ids
/// each), from storage-proofs-porep v11.1.1 `parent_cache.json`: the file
/// is `<name>.cache` in the parent cache folder.
const PARENT_CACHE: [(u64, &str); 4] = [
    (
        32 * GIB,
        "v28-sdr-parent-21981246c370f9d76c7a77ab273d94bde0ceb4e938292334960bce05585dc117",
    ),
    (
        32 * GIB,
        "v28-sdr-parent-e1fa5d5b811ddbd118be3412c4a8c329156b8b8acc72632bca459455b5a05a13",
    ),
    (
        64 * GIB,
        "v28-sdr-parent-4905486b7af19558ac3649bc6261411858b6add534438878c4ee3b29d8b9de0b",
    ),
    (
        64 * GIB,
        "v28-sdr-parent-8a99e8d6b6be7ab87a56b632e6739ff201c23ea14e99737c74690f0e265574d6",
    ),
];

/// The PoRep Groth parameters, the largest file venus fetches for a sector
/// size (venus-sealer v1.6.0-3 `constants/proof-params/parameters.json`),
/// and its size where a public source gives it (rust-fil-proofs#1250: 45G
/// for 32 GiB sectors).
const POREP_PARAMS: [(u64, &str, Option<u64>); 2] = [
    (
        32 * GIB,
        "v28-stacked-proof-of-replication-merkletree-poseidon_hasher-8-8-0-sha256_hasher-82a357d2f2ca81dc61bb45f4a762807aedee1b0a53fd6c4e77b46a01bfef7820.params",
        Some(45 * GIB),
    ),
    (
        64 * GIB,
        "v28-stacked-proof-of-replication-merkletree-poseidon_hasher-8-8-2-sha256_hasher-96f1b4a04c5c51e4759bbf224bbc2ef5a42c7100f16ec0637123f16a845ddfb2.params",
        None,
    ),
];

/// The proofs' defaults: storage-proofs-core v11.1.1 `settings.rs`
/// (`parent_cache` is `FIL_PROOFS_CACHE_DIR`, default `/var/tmp/`, plus
/// `filecoin-parents`), go-paramfetch `paramfetch.go` (`paramdir`).
const PARENT_CACHE_DIR: &str = "/var/tmp/filecoin-parents";
const PARAMETER_DIR: &str = "/var/tmp/filecoin-proof-parameters";

/// Bytes of the parent cache file: 14 parents (6 base + 8 expansion) of 4
/// bytes for each 32-byte node, 1.75 × the sector size (56 GiB for 32 GiB).
pub fn parent_cache_bytes(sector_size: u64) -> u64 {
    sector_size / 32 * 14 * 4
}

/// Runs the storage checks. The seal paths' free space is compared with
/// `capacity` and the caches are sized for its sector size, when known.
pub fn check(
    config: &Config,
    plan: &crate::plan::Plan,
    host: &Host,
    capacity: Option<&Capacity>,
    diags: &mut Diagnostics,
) {
    let pairs = pairs(config, plan);
    let mounts = host
        .lookups
        .read_file(&host.fs_root.path(mountinfo::MOUNTINFO))
        .map(|t| mountinfo::parse(&t))
        .ok();
    let mounts = mounts.as_deref();
    // The sector size and the disk a sector takes: the capacity plan's,
    // else `[capacity]` and its size's defaults (the plan cannot be made
    // when a seal path is missing, but its sector size is still known).
    let profile = capacity.map(|c| c.profile).or_else(|| {
        let cap = config.capacity.as_ref()?;
        let mut p = SectorProfile::default_for(*cap.sector_size.get_ref())?;
        if let Some(d) = cap.per_sector_disk {
            p.per_sector_disk = d;
        }
        Some(p)
    });
    seal_paths(
        config,
        &pairs,
        host,
        mounts,
        profile.as_ref(),
        capacity,
        diags,
    );
    if let Some(p) = profile {
        caches(&pairs, host, mounts, p.sector_size.0, diags);
    }
}

/// What a `storage attach` command attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attach<'a> {
    pub path: &'a str,
    /// `--seal` (for `--init`): sectors seal there.
    pub seal: bool,
    /// `--store` (for `--init`): sealed sectors are kept there.
    pub store: bool,
}

/// The path a `storage attach` command attaches (its first argument, after
/// its flags: `app/venus-worker/storage.go`, `cctx.Args().First()`) and
/// whether `--seal` / `--store` are given.
pub fn attach_path(argv: &[String]) -> Option<Attach<'_>> {
    let at = argv
        .windows(2)
        .position(|w| w[0] == "storage" && w[1] == "attach")?;
    let mut rest = argv[at + 2..].iter();
    let (mut seal, mut store) = (false, false);
    while let Some(arg) = rest.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Some(Attach {
                path: arg.as_str(),
                seal,
                store,
            });
        };
        let (name, value) = flag.split_once('=').unwrap_or((flag, "true"));
        match name {
            "seal" => seal = value != "false",
            "store" => store = value != "false",
            // Flags that take a value as the next argument.
            "weight" | "groups" | "allow-to" if !flag.contains('=') => {
                rest.next();
            }
            _ => {}
        }
    }
    None
}

/// One path to check, where it comes from.
struct Place<'a> {
    path: String,
    seal: bool,
    /// What the messages call it: "`worker01-attach`'s seal path".
    what: String,
    span: Option<Range<usize>>,
    /// The service whose `requires_mounts` should hold it.
    service: Option<&'a str>,
    /// The mount point of its `requires_mounts` that holds it (the path or
    /// a folder above it), if any.
    required: Option<String>,
}

fn places<'a>(config: &'a Config, pairs: &[Pair<'a>]) -> Vec<Place<'a>> {
    let mut out: Vec<Place<'a>> = Vec::new();
    for (s, p) in pairs {
        let Some(Attach { path, seal, store }) = attach_path(&p.argv) else {
            continue;
        };
        let kind = match (seal, store) {
            (true, true) => "seal and store path",
            (true, false) => "seal path",
            (false, true) => "store path",
            (false, false) => "storage path",
        };
        out.push(Place {
            path: lexical(path),
            seal,
            what: format!("`{}`'s {kind}", p.name),
            span: Some(s.command.span()),
            service: Some(s.name.get_ref().as_str()),
            required: p
                .requires_mounts
                .iter()
                .map(|m| lexical(&m.to_string_lossy()))
                .find(|m| Path::new(&lexical(path)).starts_with(m)),
        });
    }
    if let Some(cap) = &config.capacity {
        for path in &cap.seal_paths {
            out.push(Place {
                path: lexical(&path.to_string_lossy()),
                seal: true,
                what: "a [capacity] seal path".to_string(),
                span: None,
                service: None,
                required: None,
            });
        }
    }
    // Each path once, as a seal path if any names it one.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut unique: Vec<Place<'a>> = Vec::new();
    for place in out {
        match seen.get(&place.path) {
            Some(&i) => unique[i].seal |= place.seal,
            None => {
                seen.insert(place.path.clone(), unique.len());
                unique.push(place);
            }
        }
    }
    unique
}

/// The mount `path` is on: the longest mount point that is a whole-part
/// prefix of it (the later of equal ones, which hides the earlier).
fn mount_of<'m>(mounts: &'m [Mount], path: &str) -> Option<&'m Mount> {
    mounts
        .iter()
        .filter(|m| Path::new(path).starts_with(&m.point))
        .max_by_key(|m| Path::new(&m.point).components().count())
}

/// Free space of the filesystem `path` is (or would be) on, read at its
/// nearest existing folder under the host's fs root.
fn free(host: &Host, path: &str) -> Option<u64> {
    let mapped = host.fs_root.path(path);
    let existing = mapped
        .ancestors()
        .find(|a| host.lookups.stat(a) != FileKind::Missing)?;
    host.lookups.free_space(existing).ok()
}

fn seal_paths(
    config: &Config,
    pairs: &[Pair<'_>],
    host: &Host,
    mounts: Option<&[Mount]>,
    profile: Option<&SectorProfile>,
    capacity: Option<&Capacity>,
    diags: &mut Diagnostics,
) {
    // Free space per filesystem (its mount point, else the path), counted
    // once however many seal paths it holds.
    let mut filesystems: BTreeMap<String, u64> = BTreeMap::new();
    for place in places(config, pairs) {
        let Place {
            path, what, span, ..
        } = &place;
        let mount = mounts.and_then(|m| mount_of(m, path));
        let requires = place.service.map_or(String::new(), |s| {
            format!(", and list it in `requires_mounts` of `{s}` so that it waits for the mount")
        });
        if let (Some(m), Some(point)) = (mount, &place.required) {
            if m.point != *point {
                // Not mounted here now: `run` waits for it, the space of
                // what is mounted now says nothing.
                diags.note(span.clone(), format!(
                    "{path} ({what}) is not mounted here ({point} is not a mount point now); `requires_mounts` holds `{}` until it is, so its filesystem and free space were not checked",
                    place.service.unwrap_or_default()
                ));
                continue;
            }
        }
        if let Some(m) = mount {
            if m.point == "/" {
                diags.warning(span.clone(), format!(
                    "{path} ({what}) is on the root filesystem: no disk is mounted there or above it, so sectors would fill `/` (and `storage attach --init` creates the folder when its disk is missing); mount its disk at {path}{requires}"
                ));
            } else if NETWORK_FS.contains(&m.fstype.as_str()) && place.seal {
                diags.warning(span.clone(), format!(
                    "{path} ({what}) is on network storage ({} mounted at {}): every layer PreCommit1 writes (11 of the sector's size for 32 and 64 GiB sectors) and PreCommit2 reads crosses the network; seal on fast local disks (Lotus docs, custom storage layout) and keep network storage for `--store` paths",
                    m.fstype, m.point
                ));
            } else if m.point != *path {
                diags.note(span.clone(), format!(
                    "{path} ({what}) is not a mount of its own: it is on the {} filesystem mounted at {}, whose free space it shares",
                    m.fstype, m.point
                ));
            }
        }
        if !place.seal {
            continue;
        }
        let Some(bytes) = free(host, path) else {
            diags.note(
                span.clone(),
                format!(
                    "the free space of {path} ({what}) could not be read here; it was not checked"
                ),
            );
            continue;
        };
        if let Some(p) = profile {
            let per = p.per_sector_disk;
            if bytes < per.0 {
                diags.warning(span.clone(), format!(
                    "{path} ({what}) has {} free, less than one {} sector takes while it seals ({per}, [capacity] per_sector_disk): no sector fits there; free space or attach a larger disk",
                    ByteSize(bytes), p.sector_size
                ));
            }
        }
        let key = mount.map_or_else(|| path.clone(), |m| m.point.clone());
        filesystems.insert(key, bytes);
    }
    let Some(c) = capacity else { return };
    let Some(recommended) = c.recommended else {
        return;
    };
    let per = c.profile.per_sector_disk.0.max(1);
    let fit: u64 = filesystems.values().map(|b| b / per).sum();
    if !filesystems.is_empty() && fit < recommended {
        let span = config.capacity.as_ref().map(|c| c.sector_size.span());
        // Never advise 0: venus-sealer reads MaxSealingSectors = 0 as no limit.
        let fix = if fit == 0 {
            "attach more seal disk before sealing".to_string()
        } else {
            format!("attach more seal disk or lower MaxSealingSectors to {fit}")
        };
        diags.warning(span, format!(
            "the seal paths hold {fit} sector(s) of {} ({} each, counting each filesystem once), fewer than the capacity plan's {recommended} (MaxSealingSectors): sectors beyond {fit} would fail for lack of disk; {fix}",
            c.profile.sector_size, c.profile.per_sector_disk
        ));
    }
}

/// What one service needs of a cache folder.
struct Need<'a> {
    folder: PathBuf,
    bytes: Option<u64>,
    what: &'static str,
    span: Range<usize>,
    service: &'a str,
}

fn env_or<'a>(p: &'a crate::plan::ServicePlan, key: &str) -> Option<&'a str> {
    p.env.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// Whether a service runs `task`: by its declared tasks, else (a worker
/// that declares none) by its `run` flags.
fn runs(pair: &Pair<'_>, task: Task, flag: &str) -> bool {
    let (s, p) = pair;
    if !s.tasks.is_empty() {
        return s.tasks.contains(&task);
    }
    s.role == Role::Worker
        && s.kind == ServiceKind::Daemon
        && p.argv.iter().any(|a| a == "run")
        && flag_on(&p.argv, flag)
}

fn needs<'a>(pairs: &[Pair<'a>], host: &Host, sector: u64) -> Vec<Need<'a>> {
    let present = |folder: &Path, file: &str| {
        matches!(
            host.lookups.stat(&host.fs_root.path(folder.join(file))),
            FileKind::File { .. }
        )
    };
    let mut out = Vec::new();
    for pair in pairs {
        let (s, p) = pair;
        let service = s.name.get_ref().as_str();
        // The parent cache: made at the first PreCommit1 of a sector size.
        if runs(pair, Task::PreCommit1, "precommit1") {
            let (folder, key) = match (
                env_or(p, "FIL_PROOFS_PARENT_CACHE"),
                env_or(p, "FIL_PROOFS_CACHE_DIR"),
            ) {
                (Some(dir), _) => (PathBuf::from(dir), "FIL_PROOFS_PARENT_CACHE"),
                // The proofs append the name without a `/`.
                (None, Some(base)) => (
                    PathBuf::from(format!("{base}filecoin-parents")),
                    "FIL_PROOFS_CACHE_DIR",
                ),
                (None, None) => (PathBuf::from(PARENT_CACHE_DIR), "FIL_PROOFS_PARENT_CACHE"),
            };
            let cached = PARENT_CACHE
                .iter()
                .any(|(size, name)| *size == sector && present(&folder, &format!("{name}.cache")));
            if !cached {
                out.push(Need {
                    span: env_span(s, key),
                    folder,
                    bytes: Some(parent_cache_bytes(sector)),
                    what: "the SDR parent cache",
                    service,
                });
            }
        }
        // The parameters: fetched at start by every sealer and by a worker
        // with --commit or --prove-replica-update2 on.
        let sealer = s.role == Role::Sealer && s.kind == ServiceKind::Daemon;
        let proves = runs(pair, Task::Commit, "commit")
            || runs(pair, Task::ProveReplicaUpdate2, "prove-replica-update2");
        if sealer || proves {
            let folder =
                PathBuf::from(env_or(p, "FIL_PROOFS_PARAMETER_CACHE").unwrap_or(PARAMETER_DIR));
            if let Some((_, file, bytes)) = POREP_PARAMS.iter().find(|(size, ..)| *size == sector) {
                if !present(&folder, file) {
                    out.push(Need {
                        span: env_span(s, "FIL_PROOFS_PARAMETER_CACHE"),
                        folder,
                        bytes: *bytes,
                        what: "the proof parameters",
                        service,
                    });
                }
            }
        }
    }
    out
}

fn caches(
    pairs: &[Pair<'_>],
    host: &Host,
    mounts: Option<&[Mount]>,
    sector: u64,
    diags: &mut Diagnostics,
) {
    // Each folder once (services share it), then summed per filesystem.
    let mut folders: BTreeMap<PathBuf, Need<'_>> = BTreeMap::new();
    for need in needs(pairs, host, sector) {
        folders.entry(need.folder.clone()).or_insert(need);
    }
    let mut filesystems: BTreeMap<String, Vec<&Need<'_>>> = BTreeMap::new();
    for need in folders.values() {
        let folder = need.folder.to_string_lossy();
        let key = mounts
            .and_then(|m| mount_of(m, &folder))
            .map_or_else(|| folder.to_string(), |m| m.point.clone());
        filesystems.entry(key).or_default().push(need);
    }
    let size = ByteSize(sector);
    for (fs, needs) in filesystems {
        for n in needs.iter().filter(|n| n.bytes.is_none()) {
            diags.note(n.span.clone(), format!(
                "{} for {size} sectors are not in {} yet (`{}` fetches them at start); venussup knows no public figure for their size, so the free space there was not checked",
                n.what, n.folder.display(), n.service
            ));
        }
        let total: u64 = needs.iter().filter_map(|n| n.bytes).sum();
        let folder = needs[0].folder.to_string_lossy();
        let Some(bytes) = free(host, &folder).filter(|_| total > 0) else {
            continue;
        };
        if bytes >= total {
            continue;
        }
        let list: Vec<String> = needs
            .iter()
            .filter_map(|n| {
                let b = n.bytes?;
                Some(format!(
                    "{} in {} ({}, for `{}`)",
                    n.what,
                    n.folder.display(),
                    ByteSize(b),
                    n.service
                ))
            })
            .collect();
        diags.warning(needs[0].span.clone(), format!(
            "the filesystem at {fs} has {} free, but {} {} {} for {size} sectors: the parent cache is written at the first PreCommit1 and the parameters are fetched at start, and a full disk fails them; free space there, or point FIL_PROOFS_PARENT_CACHE / FIL_PROOFS_PARAMETER_CACHE (in `env`) at a larger disk",
            ByteSize(bytes),
            list.join(" and "),
            if list.len() == 1 { "needs" } else { "need" },
            ByteSize(total)
        ));
    }
}

#[cfg(test)]
mod tests;
