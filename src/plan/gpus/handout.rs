//! Handing the host's GPUs out to the services that ask (pure).
//!
//! Listed GPUs are taken as listed and are no part of what `auto` hands
//! out. `auto` goes by the service's most urgent GPU task: WindowPoSt and
//! WinningPoSt first, then Commit (C2), then PreCommit2 (ties in config
//! order). PreCommit2 counts only with the proofs' GPU tree or column
//! builder on (`FIL_PROOFS_USE_GPU_TREE_BUILDER`,
//! `FIL_PROOFS_USE_GPU_COLUMN_BUILDER`; both off by default, so P2 builds
//! its trees on the CPU and a GPU would sit idle).
//!
//! 1. PoSt never shares: each PoSt taker gets a free GPU of its own while
//!    there is one, and none after that (bellperson's GPU lock makes a
//!    shared PoSt wait for C2: lotus#6181).
//! 2. The other takers, in priority order, each get one of their own while
//!    that leaves one for the rest, who share that last one; none when the
//!    PoSt takers took every free GPU.
//! 3. Which GPU: a taker whose cores lie on known NUMA nodes gets a free
//!    GPU on one of them when there is one (in priority order), the others
//!    the lowest free one.
//! 4. GPUs nobody took go to the C2 takers (bellperson splits C2's
//!    multiexp over every GPU it sees), each to one on the GPU's NUMA node
//!    when there is one, else to the one with the fewest.

use std::fmt;

use serde::Serialize;

use super::{holders, Claim, Want};
use crate::config::Task;
use crate::host::gpu::Gpu;

/// `gpu_priority` of WindowPoSt and WinningPoSt.
const POST: u8 = 3;

/// The most urgent GPU task among `tasks` and its priority; PreCommit2
/// only when `gpu_builders` (its trees are built on the GPU).
pub fn gpu_task(tasks: &[Task], gpu_builders: bool) -> Option<(u8, Task)> {
    tasks
        .iter()
        .filter(|&&t| gpu_builders || t != Task::PreCommit2)
        .filter_map(|t| t.gpu_priority().map(|p| (p, *t)))
        // The first of the most urgent, as listed.
        .min_by_key(|(p, _)| std::cmp::Reverse(*p))
}

/// The PoSt task among `tasks` (WindowPoSt before WinningPoSt).
pub fn post_task(tasks: &[Task]) -> Option<Task> {
    [Task::WindowPoSt, Task::WinningPoSt]
        .into_iter()
        .find(|t| tasks.contains(t))
}

/// How the GPU a service got lies to its cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "numa", rename_all = "kebab-case")]
pub enum NumaFit {
    /// Its cores or the GPU's node are not known.
    Unknown,
    /// On a node of its cores.
    Near { node: u32 },
    /// On `node`; no free GPU was on its cores' `cores`.
    Far { node: u32, cores: Vec<u32> },
}

impl NumaFit {
    fn of(gpu: Option<u32>, cores: Option<&[u32]>) -> Self {
        match (gpu, cores) {
            (Some(node), Some(cores)) if cores.contains(&node) => NumaFit::Near { node },
            (Some(node), Some(cores)) if !cores.is_empty() => NumaFit::Far {
                node,
                cores: cores.to_vec(),
            },
            _ => NumaFit::Unknown,
        }
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
    /// `auto` with PreCommit2 as its GPU task, but the GPU tree and column
    /// builders are off: the proofs build its trees on the CPU.
    CpuTrees,
    /// `auto`: one of its own, being the `rank`-th of `of` takers, and the
    /// `idle` GPUs nobody else took.
    Own {
        task: Task,
        rank: usize,
        of: usize,
        #[serde(flatten)]
        numa: NumaFit,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        idle: Vec<u32>,
    },
    /// `auto` with fewer GPUs than takers: it shares the last GPU.
    SharesLast { task: Task, rank: usize, of: usize },
    /// `auto`, but the PoSt takers (`by`) took every free GPU, and PoSt
    /// never shares one.
    Crowded { task: Task, by: Vec<String> },
    /// `auto`, but no GPU is left for `auto` on this host.
    NoneFree { task: Task, gpus: u32 },
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(gpus: &[u32]) -> String {
    gpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Listed => f.write_str("as listed"),
            Reason::NotAsked => f.write_str("asks for none"),
            Reason::NoGpuTask => f.write_str("auto: no task of it uses a GPU"),
            Reason::CpuTrees => f.write_str(
                "auto: PreCommit2 builds its trees on the CPU (the GPU tree and column builders are off); none",
            ),
            Reason::Own {
                task,
                rank,
                of,
                numa,
                idle,
            } => {
                write!(f, "auto: {task:?}, taker {rank} of {of}, a GPU of its own")?;
                match numa {
                    NumaFit::Unknown => {}
                    NumaFit::Near { node } => write!(f, " on its cores' NUMA node {node}")?,
                    NumaFit::Far { node, cores } => write!(
                        f,
                        " on NUMA node {node} (none was free on its cores' node {})",
                        list(cores)
                    )?,
                }
                if !idle.is_empty() {
                    write!(
                        f,
                        ", and idle GPU {}: C2 splits its work over every GPU it sees",
                        list(idle)
                    )?;
                }
                Ok(())
            }
            Reason::SharesLast { task, rank, of } => write!(
                f,
                "auto: {task:?}, taker {rank} of {of}; fewer GPUs than takers, so it shares the last GPU"
            ),
            Reason::Crowded { task, by } => write!(
                f,
                "auto: {task:?}, but the free GPUs went to {} (PoSt never shares a GPU); none",
                quoted(by)
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

/// One `auto` service with a GPU task.
#[derive(Debug, Clone, Copy)]
struct Taker {
    claim: usize,
    priority: u8,
    task: Task,
}

/// What a taker gets, before it is known which GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    Own,
    Last,
    Crowded,
    NoneFree,
}

/// Hands the host's `gpus` (in index order) out to `claims` (see the
/// module's rules).
pub fn assign(gpus: &[Gpu], claims: &[Claim]) -> (Vec<Grant>, Vec<NoSuchGpu>) {
    let count = u32::try_from(gpus.len()).unwrap_or(u32::MAX);
    let mut problems = Vec::new();
    let mut grants: Vec<Grant> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| match &c.want {
            Want::None => grant(Vec::new(), Reason::NotAsked),
            Want::Listed(list) => {
                for &gpu in list.iter().filter(|&&g| g >= count) {
                    problems.push(NoSuchGpu {
                        claim: i,
                        gpu,
                        gpus: count,
                    });
                }
                grant(list.clone(), Reason::Listed)
            }
            // Takers are handed out below; this is what the others get.
            Want::Auto if gpu_task(&c.tasks, true).is_some() && !c.gpu_builders => {
                grant(Vec::new(), Reason::CpuTrees)
            }
            Want::Auto => grant(Vec::new(), Reason::NoGpuTask),
        })
        .collect();
    let listed: Vec<u32> = grants
        .iter()
        .filter(|g| g.reason == Reason::Listed)
        .flat_map(|g| g.devices.clone())
        .collect();
    let mut free: Vec<u32> = (0..count).filter(|g| !listed.contains(g)).collect();
    let mut takers: Vec<Taker> = claims
        .iter()
        .enumerate()
        .filter(|(_, c)| c.want == Want::Auto)
        .filter_map(|(i, c)| {
            gpu_task(&c.tasks, c.gpu_builders).map(|(priority, task)| Taker {
                claim: i,
                priority,
                task,
            })
        })
        .collect();
    takers.sort_by_key(|t| (std::cmp::Reverse(t.priority), t.claim));
    let shares = shares(&takers, free.len());
    let posts: Vec<String> = takers
        .iter()
        .zip(&shares)
        .filter(|(t, s)| t.priority == POST && **s == Share::Own)
        .map(|(t, _)| claims[t.claim].name.clone())
        .collect();
    let node = |g: u32| gpus.get(g as usize).and_then(|x| x.numa);
    let cores = |t: &Taker| claims[t.claim].nodes.as_deref();
    // Own GPUs: first those on a taker's own nodes, then the lowest free.
    let mut own: Vec<Option<u32>> = vec![None; takers.len()];
    for near_only in [true, false] {
        for (k, t) in takers.iter().enumerate() {
            if shares[k] != Share::Own || own[k].is_some() {
                continue;
            }
            let pick = free.iter().position(|&g| {
                !near_only || cores(t).is_some_and(|c| node(g).is_some_and(|n| c.contains(&n)))
            });
            if let Some(at) = pick {
                own[k] = Some(free.remove(at));
            }
        }
    }
    let of = takers.len();
    for (k, t) in takers.iter().enumerate() {
        let (task, rank) = (t.task, k + 1);
        grants[t.claim] = match (shares[k], own[k], free.first()) {
            (Share::Own, Some(g), _) => grant(
                vec![g],
                Reason::Own {
                    task,
                    rank,
                    of,
                    numa: NumaFit::of(node(g), cores(t)),
                    idle: Vec::new(),
                },
            ),
            (Share::Last, _, Some(&g)) => grant(vec![g], Reason::SharesLast { task, rank, of }),
            (Share::Crowded, ..) => grant(
                Vec::new(),
                Reason::Crowded {
                    task,
                    by: posts.clone(),
                },
            ),
            _ => grant(Vec::new(), Reason::NoneFree { task, gpus: count }),
        };
    }
    if !shares.contains(&Share::Last) {
        give_idle(&free, &takers, claims, &mut grants, node);
    }
    (grants, problems)
}

/// What each taker (in priority order) gets when `free` GPUs are left for
/// `auto`: PoSt one of its own while there is one, never a shared one;
/// the others one of their own while that leaves one for the rest, who
/// share that last one.
fn shares(takers: &[Taker], free: usize) -> Vec<Share> {
    let posts = takers.iter().filter(|t| t.priority == POST).count();
    let own_posts = posts.min(free);
    let left = free - own_posts;
    let others = takers.len() - posts;
    takers
        .iter()
        .enumerate()
        .map(|(k, _)| {
            if k < posts {
                return match (k < own_posts, free) {
                    (true, _) => Share::Own,
                    (false, 0) => Share::NoneFree,
                    (false, _) => Share::Crowded,
                };
            }
            let j = k - posts;
            match left {
                0 if own_posts > 0 => Share::Crowded,
                0 => Share::NoneFree,
                _ if left >= others || j + 1 < left => Share::Own,
                _ => Share::Last,
            }
        })
        .collect()
}

/// The GPUs nobody took go to the C2 takers: each to one whose cores are
/// on its node when there is one, else to the one with the fewest GPUs
/// (then the first in priority order).
fn give_idle(
    idle: &[u32],
    takers: &[Taker],
    claims: &[Claim],
    grants: &mut [Grant],
    node: impl Fn(u32) -> Option<u32>,
) {
    let c2: Vec<usize> = takers
        .iter()
        .filter(|t| t.task == Task::Commit)
        .map(|t| t.claim)
        .collect();
    for &g in idle {
        let near = |i: usize| {
            let cores = claims[i].nodes.as_deref();
            node(g).is_some_and(|n| cores.is_some_and(|c| c.contains(&n)))
        };
        let Some(&to) = c2
            .iter()
            .enumerate()
            .min_by_key(|&(rank, &i)| (!near(i), grants[i].devices.len(), rank))
            .map(|(_, i)| i)
        else {
            return;
        };
        let grant = &mut grants[to];
        grant.devices.push(g);
        grant.devices.sort_unstable();
        if let Reason::Own { idle, .. } = &mut grant.reason {
            idle.push(g);
        }
    }
}

impl Grant {
    /// What a service that asked for a GPU does not get, for `check`:
    /// (`true` for a warning, `false` for a note, message).
    pub fn shortfall(&self, name: &str, shared_with: &[String]) -> Option<(bool, String)> {
        match &self.reason {
            Reason::NoneFree { task, gpus: 0 } => Some((true, format!(
                "`{name}` asks for a GPU ({task:?}), but this host has none: its GPU work runs on the CPU, much slower"
            ))),
            Reason::NoneFree { task, .. } => Some((true, format!(
                "`{name}` asks for a GPU ({task:?}), but every GPU is listed by other services, so its GPU work runs on the CPU; leave one to `gpus = \"auto\"`"
            ))),
            Reason::Crowded { task, by } => Some((true, format!(
                "`{name}` gets no GPU: the free GPUs went to {} alone, since WindowPoSt must never wait for a GPU; {task:?} runs on the CPU, much slower: give this host another GPU, or run {task:?} on a host with a free one",
                quoted(by)
            ))),
            Reason::SharesLast { task, .. } => Some((false, format!(
                "`{name}` ({task:?}) shares GPU {} with {}: there are fewer GPUs than services asking",
                list(&self.devices),
                quoted(shared_with)
            ))),
            Reason::CpuTrees => Some((false, format!(
                "`{name}` gets no GPU: PreCommit2 builds its trees on the CPU unless FIL_PROOFS_USE_GPU_TREE_BUILDER=1 or FIL_PROOFS_USE_GPU_COLUMN_BUILDER=1 (both off by default); set them in its `env` to build them on a GPU"
            ))),
            Reason::Own { numa: NumaFit::Far { node, cores }, task, .. } => Some((false, format!(
                "`{name}` ({task:?}) gets GPU {} on NUMA node {node}, away from its cores on node {}: no free GPU is on their node, so its GPU transfers cross nodes; give it cores on node {node}, or leave a GPU of node {} to `auto`",
                list(&self.devices),
                list(cores),
                list(cores)
            ))),
            Reason::Listed | Reason::NotAsked | Reason::NoGpuTask | Reason::Own { .. } => None,
        }
    }
}

pub(super) fn grant(devices: Vec<u32>, reason: Reason) -> Grant {
    Grant { devices, reason }
}

/// A WindowPoSt/WinningPoSt service whose GPUs other services hold too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostShare {
    /// The PoSt service (its index in the claims).
    pub post: usize,
    pub task: Task,
    /// The GPUs they share.
    pub gpus: Vec<u32>,
    /// The other services holding one of them, in claim order.
    pub with: Vec<usize>,
}

/// Every PoSt service (by its tasks, whatever its `gpus`) that holds a GPU
/// another service holds too.
pub fn post_shares(claims: &[Claim], grants: &[Grant]) -> Vec<PostShare> {
    let holders = holders(grants);
    claims
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let task = post_task(&c.tasks)?;
            let mut gpus = Vec::new();
            let mut with = Vec::new();
            for d in &grants[i].devices {
                let others: Vec<usize> = holders
                    .get(d)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&j| j != i)
                    .collect();
                if !others.is_empty() && !gpus.contains(d) {
                    gpus.push(*d);
                }
                with.extend(others);
            }
            with.sort_unstable();
            with.dedup();
            (!with.is_empty()).then_some(PostShare {
                post: i,
                task,
                gpus,
                with,
            })
        })
        .collect()
}
