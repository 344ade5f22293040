//! NVIDIA GPUs: which the host has, which each service gets, and the
//! environment that holds a service to them.
//!
//! Discovery reads `/proc/driver/nvidia/gpus/<bus id>/information` (one
//! folder per GPU, named by its PCI bus id), else counts `/dev/nvidiaN`,
//! under the fs root; GPUs are numbered in PCI bus order, which is CUDA's
//! order once `CUDA_DEVICE_ORDER=PCI_BUS_ID` is set. No GPU is a normal host.
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
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::values::GpuSpec;
use crate::config::Task;
use crate::fsroot::FsRoot;

/// One folder per GPU, named by its PCI bus id.
pub const DRIVER_DIR: &str = "/proc/driver/nvidia/gpus";
/// Where the `nvidiaN` device nodes are.
pub const DEV_DIR: &str = "/dev";

/// One GPU of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// Its CUDA index with `CUDA_DEVICE_ORDER=PCI_BUS_ID`: its place in
    /// PCI bus order.
    pub index: u32,
    /// `0000:01:00.0`, lower case.
    pub bus_id: Option<String>,
    pub model: Option<String>,
    pub uuid: Option<String>,
}

impl fmt::Display for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.index)?;
        let about: Vec<&str> = [&self.bus_id, &self.model]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !about.is_empty() {
            write!(f, " ({})", about.join(" "))?;
        }
        Ok(())
    }
}

/// Where the host's GPUs were learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `/proc/driver/nvidia/gpus`.
    Driver,
    /// `/dev/nvidiaN` only: ordered by device number, which is bus order
    /// on most hosts but not guaranteed.
    DeviceNodes,
    /// `[host] gpus` in the config.
    Config,
    /// None found.
    #[default]
    None,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Driver => "the NVIDIA driver",
            Source::DeviceNodes => "/dev/nvidiaN",
            Source::Config => "[host] gpus",
            Source::None => "nothing",
        })
    }
}

/// The host's GPUs and where they were learned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub gpus: Vec<Gpu>,
    pub source: Source,
    /// Files that were there but could not be used.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Finds the NVIDIA GPUs of the host under `fs_root`.
pub fn discover(fs_root: &FsRoot) -> Discovery {
    let mut warnings = Vec::new();
    let driver = fs_root.path(DRIVER_DIR);
    let mut bus_ids: Vec<String> = entries(&driver)
        .into_iter()
        .filter_map(|name| normalize_bus_id(&name))
        .collect();
    bus_ids.sort();
    if !bus_ids.is_empty() {
        let gpus = bus_ids
            .into_iter()
            .zip(0..)
            .map(|(bus_id, index)| {
                let file = driver.join(&bus_id).join("information");
                let info = match fs::read_to_string(&file) {
                    Ok(text) => parse_information(&text),
                    Err(e) => {
                        warnings.push(format!("ignored {}: {e}", file.display()));
                        BTreeMap::new()
                    }
                };
                Gpu {
                    index,
                    model: info.get("Model").cloned(),
                    uuid: info.get("GPU UUID").cloned(),
                    bus_id: Some(bus_id),
                }
            })
            .collect();
        return Discovery {
            gpus,
            source: Source::Driver,
            warnings,
        };
    }
    let mut minors: Vec<u32> = entries(&fs_root.path(DEV_DIR))
        .iter()
        .filter_map(|name| name.strip_prefix("nvidia"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse().ok())
        .collect();
    minors.sort_unstable();
    let gpus: Vec<Gpu> = (0..)
        .zip(&minors)
        .map(|(index, _)| Gpu {
            index,
            bus_id: None,
            model: None,
            uuid: None,
        })
        .collect();
    Discovery {
        source: if gpus.is_empty() {
            Source::None
        } else {
            Source::DeviceNodes
        },
        gpus,
        warnings,
    }
}

/// The names in a folder; none when it cannot be listed (no driver).
fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `Key: value` lines of the driver's `information` file.
fn parse_information(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// A PCI bus id as `dddd:bb:dd.f` in lower case (`01:00.0` gets domain
/// `0000`); `None` when it is not one.
pub fn normalize_bus_id(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    let full = if lower.matches(':').count() == 1 {
        format!("0000:{lower}")
    } else {
        lower
    };
    let (domain, rest) = full.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(domain, 4)
        && hex(bus, 2)
        && hex(device, 2)
        && matches!(function.as_bytes(), [b'0'..=b'7']))
    .then_some(full)
}

/// Writes a simulated NVIDIA GPU under `fs_root` as the driver shows it:
/// `/proc/driver/nvidia/gpus/<bus id>/information` and `/dev/nvidia<minor>`
/// (tests and demos; no GPU is needed).
pub fn simulate(fs_root: &FsRoot, bus_id: &str, minor: u32, model: &str) -> std::io::Result<()> {
    let dir = fs_root.path(DRIVER_DIR).join(bus_id);
    fs::create_dir_all(&dir)?;
    fs::write(
        dir.join("information"),
        format!(
            "Model: \t\t {model}\nIRQ:   \t\t 142\nGPU UUID: \t GPU-{minor:08x}-sim\nBus Type: \t PCIe\nBus Location: \t {bus_id}\nDevice Minor: \t {minor}\n"
        ),
    )?;
    fs::create_dir_all(fs_root.path(DEV_DIR))?;
    fs::write(fs_root.path(DEV_DIR).join(format!("nvidia{minor}")), "")
}

/// The GPUs the host states in `[host] gpus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stated {
    Count(u32),
    BusIds(Vec<String>),
}

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
                    .unwrap_or(Gpu {
                        index,
                        bus_id: None,
                        model: None,
                        uuid: None,
                    })
            })
            .collect(),
        Stated::BusIds(ids) => {
            let mut ids = ids.clone();
            ids.sort();
            (0..)
                .zip(ids)
                .map(|(index, id)| {
                    let known = found.gpus.iter().find(|g| g.bus_id.as_deref() == Some(&id));
                    Gpu {
                        index,
                        model: known.and_then(|g| g.model.clone()),
                        uuid: known.and_then(|g| g.uuid.clone()),
                        bus_id: Some(id),
                    }
                })
                .collect()
        }
    };
    let same = match stated {
        Stated::Count(n) => found.gpus.len() == *n as usize,
        Stated::BusIds(_) => {
            found.gpus.len() == gpus.len()
                && gpus.iter().all(|g| {
                    found
                        .gpus
                        .iter()
                        .any(|f| f.bus_id.is_none() || f.bus_id == g.bus_id)
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
    pub spec: GpuSpec,
    pub tasks: Vec<Task>,
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
        GpuSpec::Indices(v) => !v.is_empty(),
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
        .map(|(i, c)| match &c.spec {
            GpuSpec::None => grant(Vec::new(), Reason::NotAsked),
            GpuSpec::Indices(list) => {
                for &gpu in list.iter().filter(|&&g| g >= gpus) {
                    problems.push(NoSuchGpu {
                        claim: i,
                        gpu,
                        gpus,
                    });
                }
                grant(list.clone(), Reason::Listed)
            }
            GpuSpec::Auto => grant(Vec::new(), Reason::NoGpuTask),
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
        .filter(|(_, c)| c.spec == GpuSpec::Auto)
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

/// The `TMPDIR` of each service that shares a GPU: services linked by
/// shared GPUs (directly or through others) get one folder,
/// `<state_dir>/gpu<N>-tmp`, N the lowest GPU among them, so that
/// bellperson's lock files (`bellman.gpu.lock`, `bellman.priority.lock`)
/// are the same files for all of them.
pub fn shared_tmpdirs(grants: &[Grant], state_dir: &Path) -> Vec<Option<PathBuf>> {
    let n = grants.len();
    let mut group: Vec<usize> = (0..n).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    let mut shares = vec![false; n];
    for i in 0..n {
        for j in i + 1..n {
            if grants[i]
                .devices
                .iter()
                .any(|d| grants[j].devices.contains(d))
            {
                shares[i] = true;
                shares[j] = true;
                let (a, b) = (root(&mut group, i), root(&mut group, j));
                group[a.max(b)] = a.min(b);
            }
        }
    }
    (0..n)
        .map(|i| {
            if !shares[i] {
                return None;
            }
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

/// Sets the environment that holds a service to `devices`: GPU services get
/// `CUDA_VISIBLE_DEVICES` (indices), `CUDA_DEVICE_ORDER=PCI_BUS_ID`, no
/// `BELLMAN_NO_GPU` (any value disables the GPU) and the shared `TMPDIR`
/// when they share a GPU; the others get `CUDA_VISIBLE_DEVICES=` and
/// `BELLMAN_NO_GPU=1`. Returns what the config had set for the variables
/// this replaced or removed.
pub fn apply_env(
    env: &mut BTreeMap<String, String>,
    devices: &[u32],
    tmpdir: Option<&Path>,
) -> BTreeMap<String, String> {
    let mut set: Vec<(&str, Option<String>)> = if devices.is_empty() {
        vec![
            ("CUDA_VISIBLE_DEVICES", Some(String::new())),
            ("BELLMAN_NO_GPU", Some("1".to_string())),
        ]
    } else {
        let list: Vec<String> = devices.iter().map(u32::to_string).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, spec: GpuSpec, tasks: &[Task]) -> Claim {
        Claim {
            name: name.to_string(),
            spec,
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
            claim("p2", GpuSpec::Auto, &[Task::PreCommit1, Task::PreCommit2]),
            claim("c2", GpuSpec::Auto, &[Task::Commit]),
            claim(
                "sealer",
                GpuSpec::Auto,
                &[Task::WindowPoSt, Task::WinningPoSt],
            ),
            claim("attach", GpuSpec::Auto, &[]),
            claim("cpu", GpuSpec::None, &[Task::Commit]),
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
        let tmp = shared_tmpdirs(&grants, Path::new("/var/lib/venussup"));
        assert_eq!(tmp[0], Some(PathBuf::from("/var/lib/venussup/gpu1-tmp")));
        assert_eq!(tmp[1], tmp[0]);
        assert_eq!(tmp[2], None);
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
        claims.push(claim("listed", GpuSpec::Indices(vec![0, 2]), &[]));
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
            claim("sealer", GpuSpec::Auto, &[Task::WindowPoSt]),
            claim("c2", GpuSpec::Indices(vec![0, 1]), &[Task::Commit]),
            claim("p2", GpuSpec::Indices(vec![1]), &[Task::PreCommit2]),
        ];
        let (grants, _) = assign(3, &claims);
        assert_eq!(devices(&grants), vec![vec![2], vec![0, 1], vec![1]]);
        let tmp = shared_tmpdirs(&grants, Path::new("/s"));
        assert_eq!(
            tmp,
            vec![
                None,
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
        let replaced = apply_env(&mut env, &[0, 1], Some(Path::new("/s/gpu0-tmp")));
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
    fn bus_ids_are_normalized() {
        assert_eq!(
            normalize_bus_id("0000:01:00.0").as_deref(),
            Some("0000:01:00.0")
        );
        assert_eq!(normalize_bus_id("41:00.0").as_deref(), Some("0000:41:00.0"));
        assert_eq!(
            normalize_bus_id("0000:C1:00.0").as_deref(),
            Some("0000:c1:00.0")
        );
        assert_eq!(normalize_bus_id("nvidia0"), None);
        assert_eq!(normalize_bus_id("0000:01:00.9"), None);
    }

    #[test]
    fn discovery_reads_the_driver_in_bus_order_else_device_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let root = FsRoot::new(dir.path());
        assert_eq!(discover(&root).source, Source::None);
        for minor in ["0", "1", "ctl", "-uvm"] {
            std::fs::create_dir_all(root.path(DEV_DIR)).unwrap();
            std::fs::write(root.path(format!("/dev/nvidia{minor}")), "").unwrap();
        }
        let found = discover(&root);
        assert_eq!((found.source, found.gpus.len()), (Source::DeviceNodes, 2));
        simulate(&root, "0000:41:00.0", 0, "NVIDIA GeForce RTX 3060 Ti B").unwrap();
        simulate(&root, "0000:01:00.0", 1, "NVIDIA GeForce RTX 3060 Ti A").unwrap();
        let found = discover(&root);
        assert_eq!(found.source, Source::Driver);
        assert_eq!(found.gpus[0].bus_id.as_deref(), Some("0000:01:00.0"));
        assert_eq!(found.gpus[0].uuid.as_deref(), Some("GPU-00000001-sim"));
        assert_eq!(
            found.gpus[1].to_string(),
            "1 (0000:41:00.0 NVIDIA GeForce RTX 3060 Ti B)"
        );
    }

    #[test]
    fn stated_gpus_win_and_disagreement_is_told() {
        let found = Discovery {
            gpus: vec![Gpu {
                index: 0,
                bus_id: Some("0000:01:00.0".into()),
                model: Some("M".into()),
                uuid: None,
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
            Some(&Stated::BusIds(vec!["0000:41:00.0".into()])),
            &Discovery::default(),
        );
        assert_eq!(none.gpus[0].bus_id.as_deref(), Some("0000:41:00.0"));
        assert!(!remark.unwrap().0);
        let (by_bus, remark) =
            reconcile(Some(&Stated::BusIds(vec!["0000:01:00.0".into()])), &found);
        assert_eq!((by_bus.gpus[0].model.as_deref(), remark), (Some("M"), None));
    }
}
