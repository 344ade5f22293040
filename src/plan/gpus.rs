//! Which GPUs each service gets, and the environment that holds a service
//! to them. What the host has is `host::gpu`.
//!
//! Assignment (pure): a service asks for `none`, indices, or `auto`. `auto`
//! goes by what the service does: WindowPoSt/WinningPoSt first, then
//! Commit (C2), then PreCommit2 (ties in config order); a service without
//! such a task gets none. Listed GPUs are taken as listed and are no part of
//! what `auto` hands out. With at least as many GPUs as takers each gets one
//! of its own. With fewer, the takers in priority order each get one of
//! their own until one GPU is left, and the others share that last one;
//! but the first never shares: with a single GPU it gets it alone and the
//! others get none (WindowPoSt must never wait for a GPU).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::values::{GpuRef, GpuSpec};
use crate::config::{CudaIds, Task};
use crate::config::{Stated, StatedId};
use crate::host::gpu::{Discovery, Gpu, Source, DRIVER_DIR};

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

/// The most urgent GPU task among `tasks` and its priority.
pub fn gpu_task(tasks: &[Task]) -> Option<(u8, Task)> {
    tasks
        .iter()
        .filter_map(|t| t.gpu_priority().map(|p| (p, *t)))
        // The first of the most urgent, as listed.
        .min_by_key(|(p, _)| std::cmp::Reverse(*p))
}

/// Whether a service means to use a GPU: listed ones, or `auto` with a
/// GPU task.
pub fn wants_gpu(spec: &GpuSpec, tasks: &[Task]) -> bool {
    match spec {
        GpuSpec::None => false,
        GpuSpec::List(v) => !v.is_empty(),
        GpuSpec::Auto => gpu_task(tasks).is_some(),
    }
}

/// Why a service gets the GPUs it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
pub enum Reason {
    /// It lists them.
    Listed,
    /// It asks for `none`.
    NotAsked,
    /// `auto`, but none of its tasks uses a GPU.
    NoGpuTask,
    /// `auto`: one of its own, being the `rank`-th of `of` takers.
    Own { task: Task, rank: usize, of: usize },
    /// `auto` with fewer GPUs than takers: it shares the last GPU.
    SharesLast { task: Task, rank: usize, of: usize },
    /// `auto` with a single GPU for several takers: `by` gets it alone.
    Crowded { task: Task, by: String },
    /// `auto`, but no GPU is left for `auto` on this host.
    NoneFree { task: Task, gpus: u32 },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Listed => f.write_str("as listed"),
            Reason::NotAsked => f.write_str("asks for none"),
            Reason::NoGpuTask => f.write_str("auto: no task of it uses a GPU"),
            Reason::Own { task, rank, of } => {
                write!(f, "auto: {task:?}, taker {rank} of {of}, a GPU of its own")
            }
            Reason::SharesLast { task, rank, of } => write!(
                f,
                "auto: {task:?}, taker {rank} of {of}; fewer GPUs than takers, so it shares the last GPU"
            ),
            Reason::Crowded { task, by } => write!(
                f,
                "auto: {task:?}, but the only GPU goes to `{by}` alone; none"
            ),
            Reason::NoneFree { task, gpus: 0 } => {
                write!(f, "auto: {task:?}, but this host has no GPU; none")
            }
            Reason::NoneFree { task, .. } => write!(
                f,
                "auto: {task:?}, but every GPU is listed by other services; none"
            ),
        }
    }
}

/// The GPUs one service gets, as CUDA indices, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub devices: Vec<u32>,
    #[serde(flatten)]
    pub reason: Reason,
}

/// A listed GPU the host does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSuchGpu {
    pub claim: usize,
    pub gpu: u32,
    pub gpus: u32,
}

impl fmt::Display for NoSuchGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gpus {
            0 => write!(
                f,
                "GPU {} is listed, but this host has no GPU (state them in `[host] gpus` to plan for another host)",
                self.gpu
            ),
            n => write!(
                f,
                "GPU {} is listed, but this host has {n} GPU{} (0-{})",
                self.gpu,
                if n == 1 { "" } else { "s" },
                n - 1
            ),
        }
    }
}

/// Hands the host's `gpus` out to `claims` (see the module's rules).
pub fn assign(gpus: u32, claims: &[Claim]) -> (Vec<Grant>, Vec<NoSuchGpu>) {
    let mut problems = Vec::new();
    let mut grants: Vec<Grant> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| match &c.want {
            Want::None => grant(Vec::new(), Reason::NotAsked),
            Want::Listed(list) => {
                for &gpu in list.iter().filter(|&&g| g >= gpus) {
                    problems.push(NoSuchGpu {
                        claim: i,
                        gpu,
                        gpus,
                    });
                }
                grant(list.clone(), Reason::Listed)
            }
            Want::Auto => grant(Vec::new(), Reason::NoGpuTask),
        })
        .collect();
    let listed: Vec<u32> = grants
        .iter()
        .filter(|g| g.reason == Reason::Listed)
        .flat_map(|g| g.devices.clone())
        .collect();
    let free: Vec<u32> = (0..gpus).filter(|g| !listed.contains(g)).collect();
    let mut takers: Vec<(usize, u8, Task)> = claims
        .iter()
        .enumerate()
        .filter(|(_, c)| c.want == Want::Auto)
        .filter_map(|(i, c)| gpu_task(&c.tasks).map(|(p, t)| (i, p, t)))
        .collect();
    takers.sort_by_key(|&(i, p, _)| (std::cmp::Reverse(p), i));
    let of = takers.len();
    for (k, &(i, _, task)) in takers.iter().enumerate() {
        let rank = k + 1;
        grants[i] = if free.is_empty() {
            grant(Vec::new(), Reason::NoneFree { task, gpus })
        } else if free.len() >= of || k + 1 < free.len() {
            grant(vec![free[k]], Reason::Own { task, rank, of })
        } else if free.len() == 1 && k > 0 {
            let by = claims[takers[0].0].name.clone();
            grant(Vec::new(), Reason::Crowded { task, by })
        } else if free.len() == 1 {
            grant(vec![free[0]], Reason::Own { task, rank, of })
        } else {
            grant(
                vec![free[free.len() - 1]],
                Reason::SharesLast { task, rank, of },
            )
        };
    }
    (grants, problems)
}

impl Grant {
    /// What a service that asked for a GPU does not get, for `check`:
    /// (`true` for a warning, `false` for a note, message).
    pub fn shortfall(&self, name: &str, shared_with: &[String]) -> Option<(bool, String)> {
        let quoted = |names: &[String]| {
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.reason {
            Reason::NoneFree { task, gpus: 0 } => Some((true, format!(
                "`{name}` asks for a GPU ({task:?}), but this host has none: its GPU work runs on the CPU, much slower"
            ))),
            Reason::NoneFree { task, .. } => Some((true, format!(
                "`{name}` asks for a GPU ({task:?}), but every GPU is listed by other services; list one in its `gpus` to share it"
            ))),
            Reason::Crowded { task, by } => Some((true, format!(
                "`{name}` gets no GPU: the only GPU goes to `{by}` alone, so that it never waits; {task:?} runs on the CPU, much slower (`gpus = [0]` would share it, through a shared TMPDIR lock)"
            ))),
            Reason::SharesLast { task, .. } => Some((false, format!(
                "`{name}` ({task:?}) shares GPU {} with {}: there are fewer GPUs than services asking",
                self.devices.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
                quoted(shared_with)
            ))),
            Reason::Listed | Reason::NotAsked | Reason::NoGpuTask | Reason::Own { .. } => None,
        }
    }
}

fn grant(devices: Vec<u32>, reason: Reason) -> Grant {
    Grant { devices, reason }
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
