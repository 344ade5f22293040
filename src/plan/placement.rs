//! Placing the services on this host: their CPUs (see [`super::cpus`]),
//! their GPUs and the GPU environment (see [`super::gpus`]), and what
//! confinement makes of them (see [`super::confine`]).

use std::ops::Range;

use toml::Spanned;

use super::cpus::{self, Ask, Layout};
use super::gpus::{self, LockDir};
use super::{confine, GpuPlan, ServicePlan};
use crate::config::values::CpuSpec;
use crate::config::{Config, ServiceConfig, SmtPolicy};
use crate::host::cgroups::Hierarchy;
use crate::host::gpu::Discovery;
use crate::host::Host;
use crate::util::cpulist::CpuSet;
use crate::util::diag::{Diagnostics, Position};

/// The host as the CPU allocator sees it after the SMT step; `None` when
/// not even the online CPUs are known.
pub(super) fn layout(host: &Host, smt: SmtPolicy, reserved: &CpuSet) -> Option<Layout> {
    let smt_off = smt == SmtPolicy::Off;
    match (&host.topology, &host.online_cpus) {
        (Some(t), _) => Some(Layout::new(t, smt_off, reserved)),
        (None, Some(online)) => Some(Layout::flat(online, reserved)),
        (None, None) => None,
    }
}

/// An explicit CPU list must name CPUs that are online here.
pub(super) fn cpus_exist(
    set: &CpuSet,
    span: Range<usize>,
    what: &str,
    host: &Host,
    diags: &mut Diagnostics,
) {
    if let Some(online) = &host.online_cpus {
        let missing = set.difference(online);
        if !missing.is_empty() {
            diags.error(
                span,
                format!("CPUs {missing} in {what} are not online on this host (online: {online})"),
            );
        }
    }
}

/// Places every service's CPUs (see [`cpus`]) and reports what is wrong
/// at the `cpus` it is about.
pub(super) fn place_cpus(
    config: &Config,
    services: &mut [ServicePlan],
    layout: Option<&Layout>,
    diags: &mut Diagnostics,
) {
    let asking: Vec<(usize, &Spanned<CpuSpec>)> = config
        .services
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.cpus.as_ref().map(|c| (i, c)))
        .collect();
    let Some(layout) = layout else {
        for (i, spec) in asking {
            diags.error(
                spec.span(),
                format!(
                    "`cpus` of `{}` cannot be placed: the CPUs of this host could not be read",
                    services[i].name
                ),
            );
        }
        return;
    };
    let requests: Vec<cpus::Request> = asking
        .iter()
        .map(|&(i, spec)| cpus::Request {
            name: services[i].name.clone(),
            ask: match (spec.get_ref(), &services[i].instance) {
                (CpuSpec::Share(p), Some(inst)) => Ask::Part {
                    percent: *p,
                    parts: inst.count,
                },
                (CpuSpec::Share(p), None) => Ask::Share(*p),
                (CpuSpec::List(set), _) => Ask::List(set.clone()),
                (CpuSpec::Rest, _) => Ask::Rest,
                (CpuSpec::All, _) => Ask::All,
            },
            sdr_unit: services[i].cpus.as_ref().and_then(|c| c.sdr_unit),
            share_with: config.services[i]
                .share_cpus_with
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
            numa: services[i].instance.as_ref().and_then(|inst| inst.numa),
        })
        .collect();
    let outcome = cpus::allocate(layout, &requests);
    for (&(i, _), placement) in asking.iter().zip(outcome.placements) {
        if let (Some(plan), Some(p)) = (services[i].cpus.as_mut(), placement) {
            plan.cpus = Some(p.cpus);
            plan.span = Some(p.span);
        }
    }
    for (k, problem) in outcome.problems {
        let (i, spec) = asking[k];
        let message = format!("`cpus` of `{}`: {problem}", services[i].name);
        if problem.is_error() {
            diags.error(spec.span(), message);
        } else {
            diags.warning(spec.span(), message);
        }
    }
}

/// The GPUs to plan with: as stated in `[host] gpus`, else as found; what
/// the two disagree on is said at the statement.
pub(super) fn host_gpus(config: &Config, host: &Host, diags: &mut Diagnostics) -> Discovery {
    let stated = config.host.gpus.as_ref();
    let (gpus, remark) = gpus::reconcile(stated.map(|s| &s.get_ref().0), &host.gpus);
    if let (Some(s), Some((worth_warning, text))) = (stated, remark) {
        if worth_warning {
            diags.warning(s.span(), text);
        } else {
            diags.note(s.span(), text);
        }
    }
    for w in &gpus.warnings {
        diags.warning(None, w.clone());
    }
    gpus
}

/// Hands out the GPUs (see [`gpus`]), sets each service's GPU environment
/// and says what a service that asked for a GPU does not get. Returns the
/// lock domains' folders.
pub(super) fn hand_out_gpus(
    config: &Config,
    services: &mut [ServicePlan],
    gpus: &Discovery,
    diags: &mut Diagnostics,
) -> Vec<LockDir> {
    let mut claims = Vec::new();
    for (s, plan) in config.services.iter().zip(services.iter()) {
        let (want, problems) = gpus::want(s.gpus.get_ref(), &gpus.gpus);
        for p in problems {
            diags.error(
                s.gpus.span(),
                format!("`gpus` of `{}`: {p}", s.name.get_ref()),
            );
        }
        claims.push(gpus::Claim {
            name: s.name.get_ref().clone(),
            want,
            tasks: s.tasks.clone(),
            gpu_builders: gpus::gpu_builders_on(&plan.env),
            nodes: plan
                .cpus
                .as_ref()
                .and_then(|c| c.span.as_ref())
                .and_then(|span| span.numa.as_ref())
                .map(CpuSet::to_vec),
        });
    }
    let (grants, problems) = gpus::assign(&gpus.gpus, &claims);
    let span = |s: &ServiceConfig| {
        if s.gpus.span().is_empty() {
            s.name.span()
        } else {
            s.gpus.span()
        }
    };
    for p in problems {
        let s = &config.services[p.claim];
        diags.error(
            s.gpus.span(),
            format!("`gpus` of `{}`: {p}", s.name.get_ref()),
        );
    }
    post_shares(config, &claims, &grants, diags);
    let names: Vec<String> = claims.iter().map(|c| c.name.clone()).collect();
    let shared = gpus::sharing(&names, &grants);
    let tmpdirs = gpus::lock_tmpdirs(&grants, &config.host.state_dir);
    let owners: Vec<(Option<String>, Option<String>)> = services
        .iter()
        .map(|p| (p.user.clone(), p.group.clone()))
        .collect();
    let lock_dirs = gpus::lock_dirs(&names, &owners, &grants, &tmpdirs);
    let ids = &config.host.cuda_visible_devices;
    for (i, ((grant, shared_with), tmpdir)) in
        grants.into_iter().zip(shared).zip(tmpdirs).enumerate()
    {
        let s = &config.services[i];
        let name = s.name.get_ref();
        match grant.shortfall(name, &shared_with) {
            Some((true, text)) => diags.warning(span(s), text),
            Some((false, text)) => diags.note(span(s), text),
            None => {}
        }
        let visible = gpus::visible_devices(&grant.devices, &gpus.gpus, *ids.get_ref())
            .unwrap_or_else(|gpu| {
                diags.error(ids.span(), format!("`cuda_visible_devices = \"uuid\"`, but GPU {gpu} (of `{name}`) has no known UUID here (the driver's `GPU UUID`, or `[host] gpus` by UUID)"));
                grant.devices.iter().map(u32::to_string).collect()
            });
        let plan = &mut services[i];
        let replaced = gpus::apply_env(&mut plan.env, &visible, tmpdir.as_deref());
        plan.gpus = GpuPlan {
            request: s.gpus.get_ref().clone(),
            devices: grant.devices,
            reason: grant.reason,
            shared_with,
            tmpdir,
            replaced,
        };
    }
    for d in lock_dirs.iter().filter(|d| d.mixed_users) {
        diags.warning(
            None,
            format!(
                "{} share the GPU lock folder {} but run as different users: a lock file one of them creates there may not be writable by the others; run them as one user",
                d.services.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                d.path.display()
            ),
        );
    }
    lock_dirs
}

/// A PoSt service whose GPU another service holds too: an error, unless
/// `[host] share_post_gpu = true` (then a note), said at the PoSt
/// service's `gpus` with the lines of both.
fn post_shares(
    config: &Config,
    claims: &[gpus::Claim],
    grants: &[gpus::Grant],
    diags: &mut Diagnostics,
) {
    let line = |s: &ServiceConfig, text: &str| Position::of_offset(text, s.name.span().start).line;
    let allowed = *config.host.share_post_gpu.get_ref();
    for share in gpus::post_shares(claims, grants) {
        let s = &config.services[share.post];
        let text = diags.text();
        let others: Vec<String> = share
            .with
            .iter()
            .map(|&j| {
                let o = &config.services[j];
                let task = gpus::gpu_task(&o.tasks, true)
                    .map_or(String::new(), |(_, t)| format!("{t:?}, "));
                format!("`{}` ({task}line {})", o.name.get_ref(), line(o, text))
            })
            .collect();
        let head = format!(
            "`{}` ({:?}, line {}) shares GPU {} with {}",
            s.name.get_ref(),
            share.task,
            line(s, text),
            share
                .gpus
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            others.join(", ")
        );
        let at = if s.gpus.span().is_empty() {
            s.name.span()
        } else {
            s.gpus.span()
        };
        let risk = "C2 holds bellperson's GPU lock through each GPU phase of its proof and looks for PoSt's priority lock only when it starts a GPU kernel, so PoSt can wait minutes and miss its deadline (lotus#6181: a 42-minute WindowPoSt while C2 held the GPU lock)";
        if allowed {
            diags.note(at, format!("{head}, as `[host] share_post_gpu = true` allows: they share one TMPDIR lock folder, so PoSt takes bellperson's priority lock, but {risk}"));
        } else {
            diags.error(at, format!("{head}: {risk}; give each its own GPU (`gpus = \"auto\"` never makes PoSt share), or set `[host] share_post_gpu = true` to accept the risk"));
        }
    }
}

/// What confinement will do on this host, told where it falls short.
pub(super) fn confinement(
    config: &Config,
    services: &[ServicePlan],
    hierarchy: &Hierarchy,
    diags: &mut Diagnostics,
) {
    for (s, plan) in config.services.iter().zip(services) {
        let span = s.cpus.as_ref().map_or_else(|| s.name.span(), Spanned::span);
        match confine::decide(hierarchy, plan) {
            Ok(d) => {
                if let Some(w) = d.warning {
                    diags.warning(span, w);
                }
            }
            Err(e) => diags.warning(
                s.name.span(),
                format!("{e}: `{}` will fail to start", plan.name),
            ),
        }
    }
}
