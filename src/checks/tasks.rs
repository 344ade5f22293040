//! Task switches against the tasks a service declares: venus-worker's
//! `run` flags and venus-sealer's `[Storage] Allow*` keys. Each is on
//! unless turned off, the snap-deal ones too (venus-sealer v1.4.1 and
//! later; `docs/venus.md` cites the sources).

use std::path::Path;

use super::venus::{flag_on, section};
use crate::config::{ServiceConfig, Task};
use crate::plan::ServicePlan;
use crate::util::diag::Diagnostics;

/// One task's switches: venus-worker's `run` flag (`--FLAG=false` turns it
/// off) and the sealer's `[Storage]` key.
struct Switch {
    task: Task,
    flag: &'static str,
    allow: &'static str,
}

const fn switch(task: Task, flag: &'static str, allow: &'static str) -> Switch {
    Switch { task, flag, allow }
}

/// `app/venus-worker/main.go` (`runCmd` flags, each `Value: true`) and
/// `config/default_config.go` (each `Allow*: true`), venus-sealer v1.6.0-3.
const SWITCHES: [Switch; 8] = [
    switch(Task::AddPiece, "addpiece", "AllowAddPiece"),
    switch(Task::PreCommit1, "precommit1", "AllowPreCommit1"),
    switch(Task::PreCommit2, "precommit2", "AllowPreCommit2"),
    switch(Task::Commit, "commit", "AllowCommit"),
    switch(Task::Unseal, "unseal", "AllowUnseal"),
    switch(Task::ReplicaUpdate, "replica-update", "AllowReplicaUpdate"),
    switch(
        Task::ProveReplicaUpdate2,
        "prove-replica-update2",
        "AllowProveReplicaUpdate2",
    ),
    switch(
        Task::RegenSectorKey,
        "regen-sector-key",
        "AllowRegenSectorKey",
    ),
];

/// Why a task left on matters, beyond "it runs".
fn cost(task: Task) -> Option<&'static str> {
    match task {
        Task::ProveReplicaUpdate2 => Some(
            "ProveReplicaUpdate2 is a C2-class GPU proof (venus-sealer's resource table copies Commit2's, up to 150 GiB for 32 GiB sectors)",
        ),
        Task::ReplicaUpdate | Task::RegenSectorKey => {
            Some("ReplicaUpdate and RegenSectorKey rewrite a whole sector on the seal disk")
        }
        _ => None,
    }
}

/// The costs of `tasks`, each once, as a `; `-led clause.
fn costs(tasks: &[Task]) -> String {
    let mut said: Vec<&str> = Vec::new();
    for c in tasks.iter().filter_map(|t| cost(*t)) {
        if !said.contains(&c) {
            said.push(c);
        }
    }
    said.iter().map(|c| format!("; {c}")).collect()
}

fn names(tasks: &[&Switch], each: impl Fn(&Switch) -> String) -> String {
    tasks.iter().map(|s| each(s)).collect::<Vec<_>>().join(", ")
}

/// venus-worker enables every task unless told `--task=false`; the flags
/// must agree with the tasks the service declares. The tasks left on are
/// said in one warning, with every flag that turns them off.
pub fn worker_tasks(s: &ServiceConfig, p: &ServicePlan, diags: &mut Diagnostics) {
    if s.tasks.is_empty() {
        return;
    }
    let name = s.name.get_ref();
    let mut extra = Vec::new();
    for sw in &SWITCHES {
        let on = flag_on(&p.argv, sw.flag);
        let declared = s.tasks.contains(&sw.task);
        if on && !declared {
            extra.push(sw);
        } else if !on && declared {
            diags.warning(s.command.span(), format!("`{name}` declares {:?} in `tasks`, but `--{}=false` turns it off; drop one of them", sw.task, sw.flag));
        }
    }
    if extra.is_empty() {
        return;
    }
    let costs = costs(&extra.iter().map(|sw| sw.task).collect::<Vec<_>>());
    let params = if extra
        .iter()
        .any(|sw| matches!(sw.task, Task::Commit | Task::ProveReplicaUpdate2))
        && !s
            .tasks
            .iter()
            .any(|t| matches!(t, Task::Commit | Task::ProveReplicaUpdate2))
    {
        "; and with --commit or --prove-replica-update2 on, venus-worker fetches the proof parameters at every start"
    } else {
        ""
    };
    let since = if extra.iter().any(|sw| {
        matches!(
            sw.task,
            Task::ReplicaUpdate | Task::ProveReplicaUpdate2 | Task::RegenSectorKey
        )
    }) {
        " (the snap-deal tasks since v1.4.1)"
    } else {
        ""
    };
    diags.warning(
        s.command.span(),
        format!(
            "`{name}` will also run {}: venus-worker enables each task unless told `--TASK=false`{since}{costs}{params}; add {}, or add them to `tasks`",
            names(&extra, |sw| format!("{:?}", sw.task)),
            names(&extra, |sw| format!("`--{}=false`", sw.flag)),
        ),
    );
}

/// Whether the sealer only proves: it declares WindowPoSt or WinningPoSt
/// and no sealing task.
fn proves_only(tasks: &[Task]) -> bool {
    tasks
        .iter()
        .all(|t| matches!(t, Task::WindowPoSt | Task::WinningPoSt))
}

/// `[Storage] Allow*` of the sealer's `config.toml` against the tasks it
/// declares: venus-sealer's own local worker takes every task allowed
/// (`sector-storage/manager.go`, `New`), and every key defaults to true.
pub fn storage_allows(
    s: &ServiceConfig,
    path: &Path,
    table: &toml::Table,
    diags: &mut Diagnostics,
) {
    if s.tasks.is_empty() {
        return;
    }
    let name = s.name.get_ref();
    let storage = section(table, "Storage");
    for sw in &SWITCHES {
        let set = storage
            .and_then(|t| t.get(sw.allow))
            .and_then(toml::Value::as_bool);
        if set == Some(false) || s.tasks.contains(&sw.task) {
            continue;
        }
        let allow = sw.allow;
        let task = sw.task;
        let default = if set.is_none() { " (the default)" } else { "" };
        let why = if task == Task::ProveReplicaUpdate2 && proves_only(&s.tasks) {
            format!("`{name}` only proves, yet it would take ProveReplicaUpdate2, a C2-class GPU proof (venus-sealer's resource table copies Commit2's), on the GPU and memory its WindowPoSt needs")
        } else {
            format!(
                "`{name}` does not declare {task:?}: it would seal locally and compete with its proofs{}",
                costs(&[task])
            )
        };
        diags.warning(
            s.name.span(),
            format!(
                "{}: [Storage] {allow} is on{default}, but {why}; set {allow} = false",
                path.display()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::diag::Diagnostic;

    fn diagnose(service: &str) -> Vec<Diagnostic> {
        let text = format!("[[service]]\nname = \"w\"\nrole = \"worker\"\n{service}");
        crate::checks::testing::findings(&text, |config, plan, _, found| {
            worker_tasks(&config.services[0], &plan.services[0], found);
        })
    }

    #[test]
    fn a_worker_leaving_the_snap_tasks_on_is_told_every_flag_at_once() {
        let found = diagnose(
            "tasks = [\"PreCommit1\", \"PreCommit2\"]\ncommand = [\"/bin/w\", \"run\", \"--addpiece=false\", \"--commit=false\", \"--unseal=false\"]\n",
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        let m = &found[0].message;
        assert!(
            m.contains("`w` will also run ReplicaUpdate, ProveReplicaUpdate2, RegenSectorKey")
                && m.contains("`--replica-update=false`, `--prove-replica-update2=false`, `--regen-sector-key=false`")
                && m.contains("C2-class GPU proof")
                && m.contains("fetches the proof parameters at every start"),
            "{m}"
        );
    }

    #[test]
    fn a_worker_with_every_switch_as_declared_passes_and_snap_tasks_can_be_declared() {
        let off = "\"--addpiece=false\", \"--precommit1=false\", \"--precommit2=false\", \"--unseal=false\", \"--replica-update=false\", \"--regen-sector-key=false\"";
        let found = diagnose(&format!(
            "tasks = [\"C2\", \"PR2\"]\ncommand = [\"/bin/w\", \"run\", {off}]\n"
        ));
        assert!(found.is_empty(), "{found:#?}");
        // Declared but switched off.
        let found = diagnose(&format!(
            "tasks = [\"C2\", \"PR2\"]\ncommand = [\"/bin/w\", \"run\", {off}, \"--prove-replica-update2=false\"]\n"
        ));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].message.contains(
            "declares ProveReplicaUpdate2 in `tasks`, but `--prove-replica-update2=false`"
        ));
    }

    fn sealer(tasks: &[Task], storage: &str) -> Vec<String> {
        let text = format!(
            "[[service]]\nname = \"sealer\"\nrole = \"sealer\"\ncommand = [\"/bin/s\"]\ntasks = [{}]\n",
            tasks
                .iter()
                .map(|t| format!("\"{t:?}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let path = Path::new("t.toml");
        let mut diags = Diagnostics::new(path, &text);
        let config = crate::config::parse(path, &text, &mut diags).unwrap();
        let table: toml::Table = storage.parse().unwrap();
        storage_allows(
            &config.services[0],
            Path::new("/r/config.toml"),
            &table,
            &mut diags,
        );
        diags.into_sorted().into_iter().map(|d| d.message).collect()
    }

    #[test]
    fn a_prove_only_sealer_leaving_prove_replica_update2_on_is_told_it_takes_a_c2_class_proof() {
        let classic = "[Storage]\nAllowAddPiece = false\nAllowPreCommit1 = false\nAllowPreCommit2 = false\nAllowCommit = false\nAllowUnseal = false\n";
        let said = sealer(&[Task::WindowPoSt, Task::WinningPoSt], classic);
        assert_eq!(said.len(), 3, "{said:#?}");
        let pr2 = said
            .iter()
            .find(|m| m.contains("AllowProveReplicaUpdate2"))
            .unwrap();
        assert!(
            pr2.starts_with("/r/config.toml: [Storage] AllowProveReplicaUpdate2 is on (the default), but `sealer` only proves")
                && pr2.contains("C2-class GPU proof")
                && pr2.ends_with("set AllowProveReplicaUpdate2 = false"),
            "{pr2}"
        );
        let all_off = format!("{classic}AllowReplicaUpdate = false\nAllowProveReplicaUpdate2 = false\nAllowRegenSectorKey = false\n");
        assert!(sealer(&[Task::WindowPoSt], &all_off).is_empty());
        // A sealer that declares the snap tasks keeps them.
        let said = sealer(
            &[
                Task::WindowPoSt,
                Task::ReplicaUpdate,
                Task::ProveReplicaUpdate2,
                Task::RegenSectorKey,
            ],
            classic,
        );
        assert!(said.is_empty(), "{said:#?}");
    }
}
