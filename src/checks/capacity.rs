//! Checks against the capacity plan: nothing fits, huge pages the proofs
//! never read, multicore-SDR runs per L3 group under the proofs in use,
//! tasks without a memory figure, and each worker's `limits.memory_max`
//! against what its tasks need. venus-worker tells the
//! sealer its cgroup's memory limit (`sector-storage/worker_local.go`
//! `memInfo`: cgroup v1 `memory.limit_in_bytes` and every v2 `memory.max`
//! up to the root, the lowest wins), and the sealer schedules a task only
//! where `MinMemory + BaseMinMemory` fits the free physical memory and
//! `MaxMemory + BaseMinMemory` the free memory plus swap
//! (`sector-storage/sched_resources.go` `canHandleRequest`).

use std::ops::Range;

use crate::capacity::{memory, Capacity, Proofs};
use crate::config::Config;
use crate::plan::Plan;
use crate::util::diag::Diagnostics;
use crate::util::units::ByteSize;

/// Runs the checks. `hugepages_wasted` is what `[host.prepare]` reserves
/// in huge pages that the proofs in use never read (0 when none).
pub fn check(
    config: &Config,
    plan: &Plan,
    capacity: &Capacity,
    hugepages_wasted: u64,
    diags: &mut Diagnostics,
) {
    let at = config.capacity.as_ref().map(|c| c.sector_size.span());
    // A warning: `check` may run on a smaller machine than the one it is
    // for; `venussup plan` exits non-zero.
    if capacity.recommended.is_none() {
        diags.warning(
            at.clone(),
            format!(
                "{} (venussup plan shows the budget)",
                crate::capacity::nothing_fits(capacity)
            ),
        );
    }
    if hugepages_wasted > 0 {
        diags.warning(at.clone(), format!(
            "[host.prepare] reserves {} of huge pages, but only damocles' fork of the proofs reads them (for PreCommit1's layers); the proofs venus-worker ships (storage-proofs-porep 11.1.1) never do, so they only take memory from the sectors; drop [host.prepare] hugepages, or set [capacity] proofs = \"damocles\" if that is what runs",
            ByteSize(hugepages_wasted)
        ));
    }
    sdr_runs(config, plan, capacity, diags);
    for b in &capacity.budget {
        let span = service_span(config, plan, &b.service).or_else(|| at.clone());
        for task in &b.uncounted {
            let fix = if task == "WindowPoSt" {
                "set [capacity] window_post_memory"
            } else {
                "leave room for it"
            };
            diags.note(span.clone(), format!(
                "{task} of `{}` is not in the memory budget: no source gives its memory for {} sectors (venus-sealer's resource table has no row for it); {fix}",
                b.service, capacity.profile.sector_size
            ));
        }
        memory_max(b, capacity, span, diags);
    }
}

/// One worker's `limits.memory_max` against its tasks.
fn memory_max(
    b: &memory::ServiceBudget,
    capacity: &Capacity,
    span: Option<Range<usize>>,
    diags: &mut Diagnostics,
) {
    let Some(suggested) = b.suggested_memory_max else {
        return;
    };
    let name = &b.service;
    let Some(set) = b.memory_max else {
        let many = capacity.budget.iter().filter(|o| o.total.0 > 0).count() > 1;
        let text = format!(
            "`{name}` has no limits.memory_max, so venus-worker advertises the whole host's memory to the sealer, which then schedules more than its tasks' share; set limits.memory_max = \"{suggested}\" (its tasks' budget, venussup plan)"
        );
        if many {
            diags.warning(span, text);
        } else {
            diags.note(span, text);
        }
        return;
    };
    if let Some((task, peak)) = &b.largest_task {
        let row = memory::row(task, capacity.profile.sector_size.0);
        let floor = row.map_or(0, |r| r.min.0 + r.base_min.0);
        if set.0 < floor {
            diags.error(span, format!(
                "`{name}` has limits.memory_max = \"{set}\", below the {} that {task} needs in physical memory (MinMemory + BaseMinMemory of venus-sealer's resource table): the sealer never schedules {task} there; set limits.memory_max = \"{suggested}\"",
                ByteSize(floor)
            ));
            return;
        }
        if set.0 < peak.0 {
            diags.warning(span, format!(
                "`{name}` has limits.memory_max = \"{set}\", below the {peak} that one {task} takes at its peak (MaxMemory + BaseMinMemory): the sealer schedules it there only with swap to make up the rest; set limits.memory_max = \"{suggested}\""
            ));
            return;
        }
    }
    if set.0 < b.total.0 {
        diags.warning(span, format!(
            "`{name}` has limits.memory_max = \"{set}\", less than the {} its declared tasks take at once: they are OOM-killed or wait; set limits.memory_max = \"{suggested}\" or give it fewer tasks",
            b.total
        ));
    }
}

/// The span of the `[[service]]` a planned service comes from.
fn service_span(config: &Config, plan: &Plan, name: &str) -> Option<Range<usize>> {
    let of = plan
        .services
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.instance.as_ref())
        .map_or(name, |i| i.of.as_str());
    config
        .services
        .iter()
        .find(|s| s.name.get_ref() == of)
        .map(|s| s.name.span())
}

/// With the proofs venus-worker ships (storage-proofs-porep 11.1.1,
/// `cores.rs`), one SDR run checks out a whole L3 group: a PreCommit1
/// worker with room for several units per group gets one run per group.
fn sdr_runs(config: &Config, plan: &Plan, capacity: &Capacity, diags: &mut Diagnostics) {
    if capacity.proofs != Proofs::Venus {
        return;
    }
    for p in &plan.services {
        let Some(cpu) = &p.cpus else { continue };
        let (Some(unit), Some(span)) = (cpu.sdr_unit, &cpu.span) else {
            continue;
        };
        let per_group = span.min_per_group();
        if !span.l3_known || !span.even() || per_group < 2 * unit {
            continue;
        }
        diags.note(service_span(config, plan, &p.name), format!(
            "`{}` gets {per_group} cores in each of {} L3 groups, room for {} multicore-SDR units of {unit} per group, but the proofs venus-worker ships (storage-proofs-porep 11.1.1) run one SDR per L3 group (cores.rs checks out a whole group): {} PreCommit1s run bound to their caches, more run unbound; the capacity plan counts that. If a newer proofs library runs (12.0.0 or later), set [capacity] proofs = \"v12\"",
            p.name,
            span.l3.len(),
            per_group / unit,
            span.l3.len()
        ));
    }
}
