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

use std::collections::BTreeMap;
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

/// For each grant, the other services that hold one of its GPUs.
pub fn sharing(names: &[String], grants: &[Grant]) -> Vec<Vec<String>> {
    grants
        .iter()
        .enumerate()
        .map(|(i, g)| {
            grants
                .iter()
                .enumerate()
                .filter(|&(j, other)| j != i && other.devices.iter().any(|d| g.devices.contains(d)))
                .map(|(j, _)| names[j].clone())
                .collect()
        })
        .collect()
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
    for i in 0..n {
        for j in i + 1..n {
            if grants[i]
                .devices
                .iter()
                .any(|d| grants[j].devices.contains(d))
            {
                let (a, b) = (root(&mut group, i), root(&mut group, j));
                group[a.max(b)] = a.min(b);
            }
        }
    }
    (0..n)
        .map(|i| {
            let r = root(&mut group, i);
            let lowest = (0..n)
                .filter(|&j| root(&mut group, j) == r)
                .flat_map(|j| grants[j].devices.clone())
                .min()?;
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
mod tests {
    use super::*;
    use crate::host::gpu::*;
    use crate::util::gpuid::normalize_uuid;

    fn claim(name: &str, want: Want, tasks: &[Task]) -> Claim {
        Claim {
            name: name.to_string(),
            want,
            tasks: tasks.to_vec(),
        }
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
        let (grants, problems) = assign(3, &three_takers());
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
        let (grants, _) = assign(2, &claims);
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
        let (grants, _) = assign(1, &three_takers());
        assert_eq!(
            devices(&grants),
            vec![vec![], vec![], vec![0], vec![], vec![]]
        );
        assert_eq!(
            grants[1].reason.to_string(),
            "auto: Commit, but the only GPU goes to `sealer` alone; none"
        );
    }

    #[test]
    fn no_gpu_is_a_normal_host_and_listed_gpus_must_exist() {
        let mut claims = three_takers();
        claims.push(claim("listed", Want::Listed(vec![0, 2]), &[]));
        let (grants, problems) = assign(0, &claims);
        assert!(grants[..3].iter().all(|g| g.devices.is_empty()));
        assert_eq!(
            grants[0].reason.to_string(),
            "auto: PreCommit2, but this host has no GPU; none"
        );
        assert_eq!(problems.len(), 2);
        let (_, problems) = assign(2, &claims);
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
        let (grants, _) = assign(3, &claims);
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
        let (grants, _) = assign(2, &claims);
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
}
