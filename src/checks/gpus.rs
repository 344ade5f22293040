//! The Venus rules about GPUs, over one service and its plan: what turns a
//! GPU off inside venus-sealer and venus-worker, and the proofs' switches
//! that move PreCommit2's tree building onto a GPU. Who gets which GPU,
//! and a PoSt service sharing one, is the plan's (`plan::gpus`).

use crate::config::values::GpuSpec;
use crate::config::{Role, ServiceConfig, Task};
use crate::plan::gpus::{gpu_builders, gpu_builders_on, gpu_task, wants_gpu};
use crate::plan::ServicePlan;
use crate::util::diag::Diagnostics;

use super::venus::{env_span, flag_value};

/// Go's `strconv.ParseBool` false values, which urfave/cli's bool flags
/// accept (`--enable-gpu-proving=false`).
fn go_false(value: &str) -> bool {
    matches!(value, "0" | "f" | "F" | "false" | "FALSE" | "False")
}

/// Runs the GPU rules over one service and its plan.
pub fn check(s: &ServiceConfig, p: &ServicePlan, diags: &mut Diagnostics) {
    gpu_proving_off(s, p, diags);
    builders(s, p, diags);
}

/// `--enable-gpu-proving=false` makes venus-sealer (`app/venus-sealer/run.go`,
/// `run`) and venus-worker (`app/venus-worker/main.go`, a global flag) set
/// `BELLMAN_NO_GPU=true` in their own process, where venussup cannot
/// remove it: a service given a GPU then never uses it.
fn gpu_proving_off(s: &ServiceConfig, p: &ServicePlan, diags: &mut Diagnostics) {
    let program = match s.role {
        Role::Sealer => "venus-sealer",
        Role::Worker => "venus-worker",
        Role::Other => return,
    };
    let Some(value) = flag_value(&p.argv, "enable-gpu-proving").filter(|v| go_false(v)) else {
        return;
    };
    let builders = gpu_builders_on(&p.env);
    let gets = !p.gpus.devices.is_empty();
    if !gets && !wants_gpu(s.gpus.get_ref(), &s.tasks, builders) {
        return;
    }
    let what = if gets {
        format!(
            "it is given GPU {}",
            p.gpus
                .devices
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    } else {
        "it asks for a GPU".to_string()
    };
    let work = gpu_task(&s.tasks, builders)
        .map_or("its GPU work".to_string(), |(_, t)| format!("its {t:?}"));
    diags.error(
        s.command.span(),
        format!(
            "`{}` runs with --enable-gpu-proving={value}, yet {what}: {program} then sets BELLMAN_NO_GPU=true in its own process, and bellperson leaves every GPU unused when BELLMAN_NO_GPU is set at all, so {work} runs on the CPU, far slower; drop the flag, or set `gpus = \"none\"`",
            p.name
        ),
    );
}

/// The GPU tree/column builder switches: a value the proofs cannot read
/// panics them; on a `gpus = "none"` service that runs PreCommit2 they do
/// nothing (no GPU is visible, so the proofs fall back to the CPU); a
/// PreCommit2-only service that lists a GPU with both off leaves it idle.
fn builders(s: &ServiceConfig, p: &ServicePlan, diags: &mut Diagnostics) {
    let set = gpu_builders(&p.env);
    let venus = s.role != Role::Other;
    for (key, value, read) in &set {
        match read {
            None if venus => diags.error(env_span(s, key), format!(
                "{key}=\"{value}\" of `{}` is not a value the proofs read as on or off (1, true, on, yes / 0, false, off, no): their settings fail to load and the first proof panics with \"invalid configuration\"; write 1 or 0",
                p.name
            )),
            Some(true) if *s.gpus.get_ref() == GpuSpec::None && s.tasks.contains(&Task::PreCommit2) => diags.warning(env_span(s, key), format!(
                "{key}={value} on `{}`, which has `gpus = \"none\"`: with no GPU visible the proofs log \"no GPU found, falling back to CPU tree builder\" and build PreCommit2's trees on the CPU, so the switch does nothing; give it a GPU (`gpus = \"auto\"`) or drop the switch",
                p.name
            )),
            _ => {}
        }
    }
    let on = gpu_builders_on(&p.env);
    if let GpuSpec::List(listed) = s.gpus.get_ref() {
        let idle = !listed.is_empty()
            && gpu_task(&s.tasks, on).is_none()
            && gpu_task(&s.tasks, true).is_some_and(|(_, t)| t == Task::PreCommit2);
        if idle {
            diags.warning(s.gpus.span(), format!(
                "`{}` lists GPUs but does only PreCommit2 with the proofs' GPU tree and column builders off (their default): it builds its trees on the CPU and the GPU sits idle; set FIL_PROOFS_USE_GPU_TREE_BUILDER=1 and FIL_PROOFS_USE_GPU_COLUMN_BUILDER=1 in its `env`, or leave the GPU to `gpus = \"auto\"`",
                p.name
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_reads_these_as_false() {
        for v in ["0", "f", "F", "false", "FALSE", "False"] {
            assert!(go_false(v), "{v}");
        }
        for v in ["true", "1", "no", "off", ""] {
            assert!(!go_false(v), "{v}");
        }
    }
}
