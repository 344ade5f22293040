//! One service at run time, whole: its plan, the user it runs as, its
//! rlimits and open files around the [`Lifecycle`] its decisions change.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use tracing::error;

use crate::config::values::Limit;
use crate::plan::{ReadyPlan, ServicePlan};
use crate::runtime::backoff::BackoffPolicy;
use crate::runtime::confine::Confinement;
use crate::runtime::limits::{self, Ceilings};
use crate::runtime::service::{GiveUp, Lifecycle, RestartRules, ServiceRules};
use crate::sys::spawn::{self, ChildHook, Identity, Output, SpawnSpec};

#[derive(Debug)]
pub(super) struct Service {
    pub plan: ServicePlan,
    /// What its decisions need of `plan`.
    pub rules: ServiceRules,
    /// The services in its `after`, by index.
    pub deps: Vec<usize>,
    pub identity: Option<Identity>,
    /// Its confinement warnings were logged (once per service, not per
    /// start).
    pub confine_warned: bool,
    pub life: Lifecycle,
    /// The kernel's start time of the current pid (`services.json`).
    pub start_time: Option<u64>,
    /// The quiet probe's output, while it runs (matched against
    /// `quiet_output`).
    pub drain_output: Option<File>,
    /// A TCP ready probe's connection under way, and when it is given up.
    pub probe_conn: Option<(OwnedFd, Instant)>,
    /// The cgroup's OOM kill count when the current run started.
    pub oom_base: Option<u64>,
    pub after_stop: AfterStop,
    /// A reload changed it: this plan takes over at its next start.
    pub replacement: Option<ServicePlan>,
    /// A reload removed it: dropped once stopped.
    pub retiring: bool,
    /// The rlimits it really gets (see `limits.rs`).
    pub nofile: Limit,
    pub memlock: Limit,
}

/// What a service does once a stop venussup asked for is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterStop {
    StayStopped,
    /// `restart NAME`, or a reload that changed it.
    StartAgain,
}

impl Service {
    /// A service as first seen (at start or in a reload), not yet started.
    pub fn new(s: &ServicePlan, ceilings: &Ceilings, clamped: &mut BTreeSet<String>) -> Self {
        let identity = s.user.as_ref().and_then(|u| {
            spawn::identity(u, s.group.as_deref())
                .map_err(|e| error!(service = %s.name, "{e}; it cannot start"))
                .ok()
        });
        let (nofile, why) = limits::clamp("nofile", s.limits.nofile, ceilings.nofile);
        let (memlock, why2) = limits::clamp("memlock", s.limits.memlock, ceilings.memlock);
        clamped.extend([why, why2].into_iter().flatten());
        Service {
            rules: rules_of(s),
            plan: s.clone(),
            deps: Vec::new(),
            identity,
            confine_warned: false,
            life: Lifecycle::default(),
            start_time: None,
            drain_output: None,
            probe_conn: None,
            oom_base: None,
            after_stop: AfterStop::StayStopped,
            replacement: None,
            retiring: false,
            nofile,
            memlock,
        }
    }

    /// A side process of this service (ready probe, drain command): its
    /// environment, folder and user, in its cgroups and on its CPUs
    /// (`confinement`, prepared for it); no limits of its own.
    pub fn side_process<'a>(
        &'a self,
        argv: &'a [String],
        output: Output,
        confinement: Option<&'a Arc<Confinement>>,
    ) -> SpawnSpec<'a> {
        SpawnSpec {
            workdir: self.plan.workdir.as_deref(),
            identity: self.identity.as_ref(),
            hook: confinement.cloned().map(child_hook),
            cgroup: confinement.and_then(|c| c.target()),
            ..SpawnSpec::helper(argv, &self.plan.env, output, None)
        }
    }
}

/// What a child of the service does to itself before its exec: join its
/// cgroups, take its CPUs.
pub(super) fn child_hook(c: Arc<Confinement>) -> ChildHook {
    ChildHook(Arc::new(move || c.apply_in_child()))
}

/// What the decisions need of a service's plan.
fn rules_of(plan: &ServicePlan) -> ServiceRules {
    ServiceRules {
        name: plan.name.clone(),
        once: plan.once,
        restart: RestartRules {
            kind: plan.kind,
            policy: plan.restart.policy,
            backoff: BackoffPolicy {
                max: plan.restart.backoff_max.0,
                stable_after: plan.restart.stable_after.0,
                ..BackoffPolicy::default()
            },
            give_up: plan.restart.give_up.as_ref().map(|g| GiveUp {
                restarts: *g.restarts.get_ref(),
                within: g.within.0,
            }),
        },
        stop_signal: plan.stop.signal.0,
        stop_timeout: plan.stop.timeout.0,
        ready_timeout: plan.ready.as_ref().map(|r| probe_timeout(r).0),
        drain: plan.drain.clone(),
        memory_max: plan.limits.memory_max.map(|m| m.to_string()),
    }
}

/// How long a ready probe may take.
fn probe_timeout(r: &ReadyPlan) -> crate::config::values::HumanDuration {
    match r {
        ReadyPlan::Tcp { timeout, .. }
        | ReadyPlan::File { timeout, .. }
        | ReadyPlan::Command { timeout, .. }
        | ReadyPlan::WorkerListen { timeout, .. } => *timeout,
    }
}
