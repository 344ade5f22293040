//! Which GPUs each service gets, and the environment that holds a service
//! to them. What the host has is `host::gpu`; the hand-out itself (who
//! gets which GPU, and why) is [`handout`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::values::{GpuRef, GpuSpec};
use crate::config::{CudaIds, Task};
use crate::config::{Stated, StatedId};
use crate::host::gpu::{Discovery, Gpu, Source, DRIVER_DIR};

mod handout;
pub use handout::{
    assign, gpu_task, post_shares, post_task, Grant, NoSuchGpu, NumaFit, PostShare, Reason,
};

/// The GPUs to plan with: the stated ones when the config states them
/// (with what was found where the bus ids match), else the found ones; and
/// a remark when the two disagree (`true`: it is worth a warning).
pub fn reconcile(
    stated: Option<&Stated>,
    found: &Discovery,
) -> (Discovery, Option<(bool, String)>) {
    let Some(stated) = stated else {
        return (found.clone(), None);
    };
    let gpus: Vec<Gpu> = match stated {
        Stated::Count(n) => (0..*n)
            .map(|index| {
                found
                    .gpus
                    .get(index as usize)
                    .filter(|_| found.gpus.len() == *n as usize)
                    .cloned()
                    .unwrap_or(Gpu::numbered(index))
            })
            .collect(),
        Stated::Ids(ids) => {
            // What the driver knows of each, then PCI bus order; a UUID the
            // driver does not show has no known place and comes last, as
            // stated.
            let mut known: Vec<Gpu> = ids
                .iter()
                .map(|id| {
                    let matches = |g: &&Gpu| match id {
                        StatedId::Bus(b) => g.bus_id.as_deref() == Some(b),
                        StatedId::Uuid(u) => g.uuid.as_deref() == Some(u),
                    };
                    found
                        .gpus
                        .iter()
                        .find(matches)
                        .cloned()
                        .unwrap_or(match id {
                            StatedId::Bus(b) => Gpu {
                                bus_id: Some(b.clone()),
                                ..Gpu::numbered(0)
                            },
                            StatedId::Uuid(u) => Gpu {
                                uuid: Some(u.clone()),
                                ..Gpu::numbered(0)
                            },
                        })
                })
                .collect();
            known.sort_by(|a, b| {
                (a.bus_id.is_none(), &a.bus_id).cmp(&(b.bus_id.is_none(), &b.bus_id))
            });
            (0..)
                .zip(known)
                .map(|(index, g)| Gpu { index, ..g })
                .collect()
        }
    };
    let same = match stated {
        Stated::Count(n) => found.gpus.len() == *n as usize,
        Stated::Ids(ids) => {
            found.gpus.len() == gpus.len()
                && ids.iter().all(|id| {
                    found.gpus.iter().any(|f| match id {
                        StatedId::Bus(b) => f.bus_id.is_none() || f.bus_id.as_deref() == Some(b),
                        StatedId::Uuid(u) => f.uuid.as_deref() == Some(u),
                    })
                })
        }
    };
    let remark = (!same).then(|| {
        let list = |gpus: &[Gpu]| gpus.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        if found.gpus.is_empty() {
            (
                false,
                format!(
                    "`[host] gpus` states {}; none is found here (no {DRIVER_DIR}, no /dev/nvidiaN): planned as stated",
                    list(&gpus)
                ),
            )
        } else {
            (
                true,
                format!(
                    "`[host] gpus` states {}, but {} shows {}; planned as stated",
                    list(&gpus),
                    found.source,
                    list(&found.gpus)
                ),
            )
        }
    });
    (
        Discovery {
            gpus,
            source: Source::Config,
            warnings: found.warnings.clone(),
        },
        remark,
    )
}

/// What one service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub name: String,
    pub want: Want,
    pub tasks: Vec<Task>,
    /// The proofs build PreCommit2's trees on the GPU (see
    /// [`gpu_builders`]); otherwise PreCommit2 does not use one.
    pub gpu_builders: bool,
    /// The NUMA nodes of its cores; `None` when it is not confined to
    /// cores or the host does not tell.
    pub nodes: Option<Vec<u32>>,
}

/// A service's `gpus` with UUIDs resolved to indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    None,
    Auto,
    Listed(Vec<u32>),
}

/// The indices of the GPUs `spec` names on a host with `gpus`, and what it
/// names that this host does not have by UUID (indices past the host's
/// GPUs are [`assign`]'s to report).
pub fn want(spec: &GpuSpec, gpus: &[Gpu]) -> (Want, Vec<String>) {
    let refs = match spec {
        GpuSpec::None => return (Want::None, Vec::new()),
        GpuSpec::Auto => return (Want::Auto, Vec::new()),
        GpuSpec::List(refs) => refs,
    };
    let mut problems = Vec::new();
    let indices = refs
        .iter()
        .filter_map(|r| match r {
            GpuRef::Index(i) => Some(*i),
            GpuRef::Uuid(u) => {
                let found = gpus.iter().find(|g| g.uuid.as_deref() == Some(u));
                if found.is_none() {
                    problems.push(no_such_uuid(u, gpus));
                }
                found.map(|g| g.index)
            }
        })
        .collect();
    (Want::Listed(indices), problems)
}

fn no_such_uuid(uuid: &str, gpus: &[Gpu]) -> String {
    let known: Vec<String> = gpus
        .iter()
        .filter_map(|g| g.uuid.as_ref().map(|u| format!("{} ({u})", g.index)))
        .collect();
    if known.is_empty() {
        format!("GPU {uuid} is listed, but no GPU of this host has a known UUID (the driver's `GPU UUID` in {DRIVER_DIR}/*/information, or `[host] gpus` by UUID)")
    } else {
        format!(
            "GPU {uuid} is not on this host; its GPUs are {}",
            known.join(", ")
        )
    }
}

/// What `CUDA_VISIBLE_DEVICES` holds for `devices`: their indices, or with
/// `CudaIds::Uuid` their UUIDs; `Err` with the first GPU that has none.
pub fn visible_devices(devices: &[u32], gpus: &[Gpu], ids: CudaIds) -> Result<Vec<String>, u32> {
    devices
        .iter()
        .map(|&d| match ids {
            CudaIds::Index => Ok(d.to_string()),
            CudaIds::Uuid => gpus
                .iter()
                .find(|g| g.index == d)
                .and_then(|g| g.uuid.clone())
                .ok_or(d),
        })
        .collect()
}

/// Whether a service means to use a GPU: listed ones, or `auto` with a
/// GPU task (PreCommit2 only with the GPU builders on).
pub fn wants_gpu(spec: &GpuSpec, tasks: &[Task], gpu_builders: bool) -> bool {
    match spec {
        GpuSpec::None => false,
        GpuSpec::List(v) => !v.is_empty(),
        GpuSpec::Auto => gpu_task(tasks, gpu_builders).is_some(),
    }
}

/// The proofs' switches that build PreCommit2's trees on the GPU
/// (storage-proofs-core 11.1.1 `settings.rs`: `use_gpu_tree_builder`,
/// `use_gpu_column_builder`, both `false` by default).
pub const GPU_BUILDERS: [&str; 2] = [
    "FIL_PROOFS_USE_GPU_TREE_BUILDER",
    "FIL_PROOFS_USE_GPU_COLUMN_BUILDER",
];

/// A boolean as the proofs' settings read it from the environment (the
/// `config` crate 0.10.1, `Value::into_bool`): `1`, `true`, `on`, `yes`
/// and `0`, `false`, `off`, `no`, in any case; anything else (also an
/// empty value) is `None`, and the proofs panic on it ("invalid
/// configuration").
pub fn proofs_bool(value: &str) -> Option<bool> {
    match value.to_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// The GPU builder switches set in `env` (the proofs match the name in any
/// case): `(name as set, value, read as)`.
pub fn gpu_builders(env: &BTreeMap<String, String>) -> Vec<(&str, &str, Option<bool>)> {
    env.iter()
        .filter(|(k, _)| GPU_BUILDERS.iter().any(|b| b.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.as_str(), v.as_str(), proofs_bool(v)))
        .collect()
}

/// Whether the proofs build PreCommit2's trees on the GPU with `env`.
pub fn gpu_builders_on(env: &BTreeMap<String, String>) -> bool {
    gpu_builders(env).iter().any(|(_, _, on)| *on == Some(true))
}

/// For each grant, the other services that hold one of its GPUs (in the
/// order of `grants`). Found through each GPU's holders, not by comparing
/// every pair of services.
pub fn sharing(names: &[String], grants: &[Grant]) -> Vec<Vec<String>> {
    let holders = holders(grants);
    grants
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let others: std::collections::BTreeSet<usize> = g
                .devices
                .iter()
                .flat_map(|d| holders.get(d).into_iter().flatten().copied())
                .filter(|&j| j != i)
                .collect();
            others.into_iter().map(|j| names[j].clone()).collect()
        })
        .collect()
}

/// The grants that hold each GPU, by index, in order.
fn holders(grants: &[Grant]) -> HashMap<u32, Vec<usize>> {
    let mut by_gpu: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, g) in grants.iter().enumerate() {
        for &d in &g.devices {
            let list = by_gpu.entry(d).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
    }
    by_gpu
}

/// The `TMPDIR` of each service that has a GPU: its lock domain. Services
/// linked by shared GPUs (directly or through others) get one folder,
/// `<state_dir>/gpu<N>-tmp`, N the lowest GPU among them, so that
/// bellperson's lock files (`bellman.gpu.lock`, `bellman.priority.lock`)
/// are the same files for all of them; services on different GPUs get
/// different folders, so they never wait for each other's locks. The
/// state folder survives reboots (a vanished `TMPDIR` broke AddPiece,
/// lotus PR #10433) and is no shared `/tmp` where another user's lock file
/// can be in the way (lotus#3584).
pub fn lock_tmpdirs(grants: &[Grant], state_dir: &Path) -> Vec<Option<PathBuf>> {
    let n = grants.len();
    let mut group: Vec<usize> = (0..n).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    // Every holder of a GPU joins its first holder's group.
    for list in holders(grants).values() {
        for &j in &list[1..] {
            let (a, b) = (root(&mut group, list[0]), root(&mut group, j));
            group[a.max(b)] = a.min(b);
        }
    }
    let mut lowest: HashMap<usize, u32> = HashMap::new();
    for (i, g) in grants.iter().enumerate() {
        let r = root(&mut group, i);
        if let Some(&d) = g.devices.iter().min() {
            let low = lowest.entry(r).or_insert(d);
            *low = (*low).min(d);
        }
    }
    (0..n)
        .map(|i| {
            let lowest = lowest.get(&root(&mut group, i))?;
            Some(state_dir.join(format!("gpu{lowest}-tmp")))
        })
        .collect()
}

/// The variables the GPU plan decides.
pub const ENV_VARS: [&str; 4] = [
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "BELLMAN_NO_GPU",
    "TMPDIR",
];

/// Sets the environment that holds a service to its GPUs (`visible`, as
/// [`visible_devices`] names them): GPU services get
/// `CUDA_VISIBLE_DEVICES`, `CUDA_DEVICE_ORDER=PCI_BUS_ID`, no
/// `BELLMAN_NO_GPU` (any value disables the GPU) and their lock domain's
/// `TMPDIR`; the others get `CUDA_VISIBLE_DEVICES=` and `BELLMAN_NO_GPU=1`.
/// Returns what the config had set for the variables this replaced or
/// removed.
pub fn apply_env(
    env: &mut BTreeMap<String, String>,
    visible: &[String],
    tmpdir: Option<&Path>,
) -> BTreeMap<String, String> {
    let mut set: Vec<(&str, Option<String>)> = if visible.is_empty() {
        vec![
            ("CUDA_VISIBLE_DEVICES", Some(String::new())),
            ("BELLMAN_NO_GPU", Some("1".to_string())),
        ]
    } else {
        let list = visible;
        vec![
            ("CUDA_VISIBLE_DEVICES", Some(list.join(","))),
            ("CUDA_DEVICE_ORDER", Some("PCI_BUS_ID".to_string())),
            ("BELLMAN_NO_GPU", None),
        ]
    };
    if let Some(dir) = tmpdir {
        set.push(("TMPDIR", Some(dir.display().to_string())));
    }
    let mut replaced = BTreeMap::new();
    for (key, value) in set {
        let old = match value {
            Some(v) => env.insert(key.to_string(), v),
            None => env.remove(key),
        };
        if let Some(old) = old {
            replaced.insert(key.to_string(), old);
        }
    }
    replaced
}

/// One lock domain's `TMPDIR`, as `run` creates it before any service
/// starts: owned by the user its services run as, mode 0700; when they run
/// as different users (which `check` warns about), mode 1777 and owned by
/// venussup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockDir {
    pub path: PathBuf,
    pub gpus: Vec<u32>,
    pub services: Vec<String>,
    /// `None`: venussup's own user (or mixed users).
    pub user: Option<String>,
    pub group: Option<String>,
    /// Its services run as different users.
    pub mixed_users: bool,
}

/// The lock domains of services with the given names, `(user, group)`s,
/// GPUs and `TMPDIR`s, in order of first appearance.
pub fn lock_dirs(
    names: &[String],
    owners: &[(Option<String>, Option<String>)],
    grants: &[Grant],
    tmpdirs: &[Option<PathBuf>],
) -> Vec<LockDir> {
    let mut dirs: Vec<LockDir> = Vec::new();
    for (i, tmpdir) in tmpdirs.iter().enumerate() {
        let Some(path) = tmpdir else { continue };
        let (user, group) = owners[i].clone();
        match dirs.iter_mut().find(|d| &d.path == path) {
            Some(d) => {
                d.services.push(names[i].clone());
                d.gpus.extend(
                    grants[i]
                        .devices
                        .iter()
                        .filter(|g| !d.gpus.contains(g))
                        .collect::<Vec<_>>(),
                );
                d.gpus.sort_unstable();
                if (d.user.clone(), d.group.clone()) != (user.clone(), group.clone())
                    || d.mixed_users
                {
                    d.mixed_users = true;
                    d.user = None;
                    d.group = None;
                }
            }
            None => dirs.push(LockDir {
                path: path.clone(),
                gpus: grants[i].devices.clone(),
                services: vec![names[i].clone()],
                user,
                group,
                mixed_users: false,
            }),
        }
    }
    dirs
}

#[cfg(test)]
mod tests;
