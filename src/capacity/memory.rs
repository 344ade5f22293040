//! The whole-host memory budget: what every declared task of every service
//! on the host takes, with the figures of venus-sealer's resource table
//! (`sector-storage/storiface/resources.go`, v1.6.0-3), and the
//! `limits.memory_max` each worker should have so that it advertises the
//! memory its tasks need (venus-worker reports its cgroup's limit to the
//! sealer: `sector-storage/worker_local.go` `memInfo`).
//!
//! Pure: tasks are named as strings (`"PreCommit2"`, `"Commit"`, ...), so
//! this layer needs nothing of the config.

use serde::Serialize;

use crate::util::units::ByteSize;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// One row of venus-sealer's resource table for one sector size. The
/// scheduler (`sched_resources.go` `canHandleRequest`) gives a task to a
/// worker only when `min + base_min` fits its free physical memory and
/// `max + base_min` its free memory plus swap; `base_min` is counted again
/// for every task (its TODO to share it was never done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Row {
    pub min: ByteSize,
    pub max: ByteSize,
    pub base_min: ByteSize,
    /// `GPUUtilization` 1.0: the scheduler would run one per GPU, but the
    /// budget counts one per service: the `memory_max` suggested for it
    /// admits one at a time (`canHandleRequest`'s `MaxMemory` test), and
    /// that one splits its multiexp over every GPU the service sees
    /// (bellperson 0.21 `multiexp.rs`, `Device::all()`), so a second GPU
    /// speeds C2 up instead of doubling its memory.
    pub gpu: bool,
}

impl Row {
    /// What one task takes at its peak: `MaxMemory + BaseMinMemory`.
    pub fn peak(self) -> u64 {
        self.max.0 + self.base_min.0
    }
}

/// The rows by table name: AddPiece, PreCommit1, PreCommit2, Commit2,
/// ReplicaUpdate, ProveReplicaUpdate2 at 64 GiB, 32 GiB and 512 MiB; the
/// 2 KiB and 8 MiB rows take the sector size for every figure.
fn table(row: &str, sector_size: u64) -> Option<Row> {
    let (min, max, base, gpu) = match (row, sector_size) {
        (_, s) if s == 2 * KIB || s == 8 * MIB => (
            s,
            s,
            s,
            matches!(row, "PreCommit2" | "Commit2" | "ProveReplicaUpdate2"),
        ),
        ("AddPiece" | "ReplicaUpdate", s) if s == 64 * GIB => (8 * GIB, 8 * GIB, GIB, false),
        ("AddPiece" | "ReplicaUpdate", s) if s == 32 * GIB => (4 * GIB, 4 * GIB, GIB, false),
        ("AddPiece" | "ReplicaUpdate", s) if s == 512 * MIB => (GIB, GIB, GIB, false),
        ("PreCommit1", s) if s == 64 * GIB => (112 * GIB, 128 * GIB, 10 * MIB, false),
        ("PreCommit1", s) if s == 32 * GIB => (56 * GIB, 64 * GIB, 10 * MIB, false),
        ("PreCommit1", s) if s == 512 * MIB => (768 * MIB, GIB, MIB, false),
        ("PreCommit2", s) if s == 64 * GIB => (30 * GIB, 30 * GIB, GIB, true),
        ("PreCommit2", s) if s == 32 * GIB => (15 * GIB, 15 * GIB, GIB, true),
        ("PreCommit2", s) if s == 512 * MIB => (GIB, 3 * GIB / 2, GIB, false),
        ("Commit2" | "ProveReplicaUpdate2", s) if s == 64 * GIB => {
            (60 * GIB, 190 * GIB, 64 * GIB, true)
        }
        ("Commit2" | "ProveReplicaUpdate2", s) if s == 32 * GIB => {
            (30 * GIB, 150 * GIB, 32 * GIB, true)
        }
        ("Commit2" | "ProveReplicaUpdate2", s) if s == 512 * MIB => {
            (GIB, 3 * GIB / 2, 10 * GIB, true)
        }
        _ => return None,
    };
    Some(Row {
        min: ByteSize(min),
        max: ByteSize(max),
        base_min: ByteSize(base),
        gpu,
    })
}

/// The resource-table row a venussup task uses: `Commit` is C2
/// (`TTCommit2`; C1 is ~100 ms and 1 GiB); `Unseal` copies PreCommit1 and
/// `RegenSectorKey` ReplicaUpdate (`resources.go` `init`). `None` for a task
/// the table does not have (WindowPoSt, WinningPoSt: the sealer proves them
/// itself, unscheduled) or a sector size it lacks.
pub fn row(task: &str, sector_size: u64) -> Option<Row> {
    let name = match task {
        "Commit" => "Commit2",
        "Unseal" => "PreCommit1",
        "RegenSectorKey" => "ReplicaUpdate",
        t
        @ ("AddPiece" | "PreCommit1" | "PreCommit2" | "ReplicaUpdate" | "ProveReplicaUpdate2") => t,
        _ => return None,
    };
    table(name, sector_size)
}

/// WindowPoSt's memory where a source gives it: ~120 GiB for 32 GiB sectors
/// (damocles `docs/en/12.damocles-worker-config-guide.md`); no source gives
/// it for other sizes, so `[capacity] window_post_memory` must.
pub fn window_post_default(sector_size: u64) -> Option<u64> {
    (sector_size == 32 * GIB).then_some(120 * GIB)
}

/// One service of the host as the budget sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// Its declared tasks, by name.
    pub tasks: Vec<String>,
    /// Whether it is a venus-worker (the sealer does not read its cgroup).
    pub worker: bool,
    /// Its `limits.memory_max`, if set.
    pub memory_max: Option<u64>,
}

#[cfg(test)]
impl Service {
    /// A venus-worker with no `memory_max`, for tests.
    pub fn worker(name: &str, tasks: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            tasks: tasks.iter().map(ToString::to_string).collect(),
            worker: true,
            memory_max: None,
        }
    }
}

/// What one task of one service takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub task: String,
    /// How many run at once.
    pub count: u64,
    pub each: ByteSize,
    pub total: ByteSize,
    /// Where the figure comes from.
    pub source: &'static str,
}

/// One service's share of the budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceBudget {
    pub service: String,
    pub lines: Vec<Line>,
    /// Tasks declared but not counted: no figure for this sector size.
    pub uncounted: Vec<String>,
    pub total: ByteSize,
    /// `limits.memory_max` to set (workers only), rounded up to a GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_memory_max: Option<ByteSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<ByteSize>,
    /// The largest single task: the sealer never schedules it on a worker
    /// that advertises less (without swap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub largest_task: Option<(String, ByteSize)>,
}

/// Everything but the PreCommit1 sectors, per service; those are counted
/// by [`super::compute`] and added with [`finish`].
pub fn other_tasks(
    services: &[Service],
    sector_size: u64,
    window_post: Option<u64>,
) -> Vec<ServiceBudget> {
    services
        .iter()
        .map(|s| {
            let mut lines = Vec::new();
            let mut uncounted = Vec::new();
            let mut largest: Option<(String, ByteSize)> = None;
            for task in &s.tasks {
                if task == "PreCommit1" {
                    if let Some(r) = row(task, sector_size) {
                        largest = bigger(largest, task, r.peak());
                    }
                    continue;
                }
                let (count, each, source) = match (row(task, sector_size), task.as_str()) {
                    (Some(r), _) => {
                        largest = bigger(largest, task, r.peak());
                        (
                            1,
                            r.peak(),
                            "venus-sealer resources.go: MaxMemory + BaseMinMemory",
                        )
                    }
                    (None, "WindowPoSt") => {
                        match window_post.or_else(|| window_post_default(sector_size)) {
                            Some(m) => (
                                1,
                                m,
                                if window_post.is_some() {
                                    "[capacity] window_post_memory"
                                } else {
                                    "damocles docs: ~120GiB for 32GiB sectors"
                                },
                            ),
                            None => {
                                uncounted.push(task.clone());
                                continue;
                            }
                        }
                    }
                    (None, _) => {
                        uncounted.push(task.clone());
                        continue;
                    }
                };
                lines.push(Line {
                    task: task.clone(),
                    count,
                    each: ByteSize(each),
                    total: ByteSize(each * count),
                    source,
                });
            }
            let total = lines.iter().map(|l| l.total.0).sum();
            ServiceBudget {
                service: s.name.clone(),
                lines,
                uncounted,
                total: ByteSize(total),
                suggested_memory_max: None,
                memory_max: s.memory_max.map(ByteSize),
                largest_task: largest,
            }
        })
        .collect()
}

fn bigger(
    current: Option<(String, ByteSize)>,
    task: &str,
    peak: u64,
) -> Option<(String, ByteSize)> {
    match current {
        Some((t, b)) if b.0 >= peak => Some((t, b)),
        _ => Some((task.to_string(), ByteSize(peak))),
    }
}

/// Adds the PreCommit1 sectors (`sectors` of `per_sector` each, spread over
/// the PreCommit1 services, each holding the `shared` parent cache) and
/// suggests each worker's `memory_max`.
pub fn finish(
    budgets: &mut [ServiceBudget],
    services: &[Service],
    sectors: u64,
    per_sector: u64,
    shared: u64,
) {
    let pc1 = services
        .iter()
        .filter(|s| s.tasks.iter().any(|t| t == "PreCommit1"))
        .count() as u64;
    for (b, s) in budgets.iter_mut().zip(services) {
        if s.tasks.iter().any(|t| t == "PreCommit1") && pc1 > 0 {
            let count = sectors.div_ceil(pc1);
            b.lines.insert(
                0,
                Line {
                    task: "PreCommit1".to_string(),
                    count,
                    each: ByteSize(per_sector),
                    total: ByteSize(count * per_sector),
                    source: "per sector, plus the shared parent cache",
                },
            );
            b.lines.insert(
                0,
                Line {
                    task: "parent cache".to_string(),
                    count: 1,
                    each: ByteSize(shared),
                    total: ByteSize(shared),
                    source: "14 parents x 4 bytes per node, read by every PreCommit1",
                },
            );
            b.total = ByteSize(b.lines.iter().map(|l| l.total.0).sum());
        }
        if s.worker && b.total.0 > 0 {
            b.suggested_memory_max = Some(ByteSize(b.total.0.div_ceil(GIB) * GIB));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_tables_c2_and_pc1_rows() {
        let c2 = row("Commit", 64 * GIB).unwrap();
        assert_eq!(
            (c2.min.0, c2.max.0, c2.base_min.0),
            (60 * GIB, 190 * GIB, 64 * GIB)
        );
        assert_eq!(c2.peak(), 254 * GIB);
        assert_eq!(
            row("ProveReplicaUpdate2", 32 * GIB).unwrap().peak(),
            182 * GIB
        );
        assert_eq!(row("Unseal", 64 * GIB), row("PreCommit1", 64 * GIB));
        assert_eq!(row("RegenSectorKey", 32 * GIB).unwrap().peak(), 5 * GIB);
        assert_eq!(row("AddPiece", 2 * KIB).unwrap().peak(), 4 * KIB);
        assert!(row("WindowPoSt", 32 * GIB).is_none());
        assert!(row("Commit", 16 * GIB).is_none());
    }

    /// Host B: worker01 PreCommit1 + PreCommit2 on the CPU, worker02 C2 on
    /// one GPU, 64 GiB sectors, 3 sectors.
    #[test]
    fn host_b_budget_per_worker() {
        let services = [
            Service::worker("worker01", &["PreCommit1", "PreCommit2"]),
            Service::worker("worker02", &["Commit"]),
        ];
        let mut b = other_tasks(&services, 64 * GIB, None);
        assert_eq!(b[0].total, ByteSize(31 * GIB));
        assert_eq!(b[1].total, ByteSize(254 * GIB));
        finish(&mut b, &services, 3, 128 * GIB, 112 * GIB);
        // 112 + 3 × 128 + 31
        assert_eq!(b[0].total, ByteSize(527 * GIB));
        assert_eq!(b[0].suggested_memory_max, Some(ByteSize(527 * GIB)));
        assert_eq!(b[1].suggested_memory_max, Some(ByteSize(254 * GIB)));
        assert_eq!(
            b[0].largest_task,
            Some(("PreCommit1".to_string(), ByteSize(128 * GIB + 10 * MIB)))
        );
        assert_eq!(
            b[1].largest_task,
            Some(("Commit".to_string(), ByteSize(254 * GIB)))
        );
    }

    #[test]
    fn a_gpu_task_counts_once_whatever_its_gpus_and_post_needs_a_figure() {
        let services = [
            Service::worker("c2", &["Commit"]),
            Service::worker("sealer", &["WindowPoSt", "WinningPoSt"]),
        ];
        let b = other_tasks(&services, 64 * GIB, None);
        assert_eq!((b[0].lines[0].count, b[0].total), (1, ByteSize(254 * GIB)));
        assert_eq!(b[1].uncounted, ["WindowPoSt", "WinningPoSt"]);
        let b = other_tasks(&services, 32 * GIB, None);
        assert_eq!((b[1].total, b[1].uncounted.len()), (ByteSize(120 * GIB), 1));
        let b = other_tasks(&services, 64 * GIB, Some(200 * GIB));
        assert_eq!(b[1].total, ByteSize(200 * GIB));
    }

    #[test]
    fn several_pc1_services_split_the_sectors_and_the_sealer_gets_no_limit() {
        let mut services = vec![
            Service::worker("a", &["PreCommit1"]),
            Service::worker("b", &["PreCommit1"]),
        ];
        services.push(Service {
            worker: false,
            ..Service::worker("sealer", &["WindowPoSt"])
        });
        let mut b = other_tasks(&services, 32 * GIB, None);
        finish(&mut b, &services, 3, 64 * GIB, 56 * GIB);
        // ceil(3 / 2) = 2 each, each with the parent cache.
        assert_eq!(b[0].total, ByteSize((56 + 2 * 64) * GIB));
        assert_eq!(b[1].total, b[0].total);
        assert_eq!(b[2].suggested_memory_max, None);
    }
}
