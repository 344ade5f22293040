//! Starting services and probing them: the checks before a start (done
//! once already, mounts), log rotation, confinement, the spawn, the ready
//! probes. What each outcome leads to is decided in `runtime/start.rs`.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::service::child_hook;
use super::{Owner, Supervisor};
use crate::plan::ReadyPlan;
use crate::runtime::confine::{self, Confinement};
use crate::runtime::service::{Lifecycle, State};
use crate::runtime::start::{self, Started};
use crate::runtime::state;
use crate::runtime::{listen, logs};
use crate::status::ExitKind;
use crate::sys::connect::{self, Connect};
use crate::sys::spawn::{self, Output, SpawnSpec};
use crate::util::clock::after;
use crate::util::mountinfo;

/// How long one TCP probe may wait for a connection.
const TCP_PROBE_TIMEOUT: Duration = Duration::from_millis(200);

impl Supervisor {
    /// Starts service `i` (its time has come).
    pub(super) fn start(&mut self, i: usize, now: Instant) {
        self.dirty = true;
        let started = self.try_start(i);
        self.service_transition(i, now, |life, rules| {
            start::decide_start(life, rules, started, now)
        });
    }

    /// The checks before a start, then the spawn.
    fn try_start(&mut self, i: usize) -> Started {
        let s = &mut self.services[i];
        if s.plan.once && state::once_marker(&self.state_dir, &s.plan.name).exists() {
            return Started::AlreadyDone;
        }
        let missing = missing_mounts(&s.plan.requires_mounts);
        if !missing.is_empty() {
            return Started::MissingMounts(missing);
        }
        if let Err(e) = logs::rotate_idle(&s.plan.log_file, self.log_max, self.log_keep) {
            warn!(service = %s.plan.name, "failed to rotate {}: {e}", s.plan.log_file.display());
        }
        // Confinement is prepared again at every start: a cgroup removed
        // or changed behind venussup's back is put right.
        let hook = match &self.cgroups {
            Some(setup) => match confine::prepare(setup, &s.plan) {
                Ok(c) => {
                    if !s.confine_warned {
                        for w in c.warnings() {
                            warn!(service = %s.plan.name, "{w}");
                        }
                        s.confine_warned = true;
                    }
                    Ok(Some(Arc::new(c)))
                }
                Err(e) => Err(format!("failed to confine it: {e}")),
            },
            None => Ok(None),
        };
        // After `prepare`: the memory cgroup exists from the first start on.
        s.oom_base = self
            .cgroups
            .as_ref()
            .and_then(|c| confine::oom_kills(c, &s.plan.name));
        let result = match hook {
            Err(e) => Err(e),
            Ok(_) if s.plan.user.is_some() && s.identity.is_none() => Err(format!(
                "user `{}` could not be resolved",
                s.plan.user.as_deref().unwrap_or_default()
            )),
            Ok(confinement) => spawn::spawn(SpawnSpec {
                hook: confinement.clone().map(child_hook),
                cgroup: confinement.as_deref().and_then(Confinement::target),
                argv: &s.plan.argv,
                env: &s.plan.env,
                workdir: s.plan.workdir.as_deref(),
                identity: s.identity.as_ref(),
                umask: s.plan.umask.map(|u| u.0),
                nofile: Some(s.nofile),
                memlock: Some(s.memlock),
                output: Output::Append(s.plan.log_file.clone()),
                stdin: None,
                oom_score_adj: Some(s.plan.oom_score_adjust),
            })
            .map_err(|e| e.to_string()),
        };
        match result {
            Ok(child) => {
                info!(service = %s.plan.name, pid = child.pid.as_raw(), "started");
                self.logs
                    .watch(&s.plan.log_file, self.log_max, self.log_keep);
                s.start_time = state::start_time(Path::new("/proc"), child.pid.as_raw());
                self.owners.insert(child.pid, Owner::Service(i));
                Started::Spawned(child.pid)
            }
            Err(e) => Started::Failed(e),
        }
    }

    /// Tries service `i`'s ready probe. A command probe answers with its
    /// exit ([`Supervisor::probe_exited`]).
    pub(super) fn probe(&mut self, i: usize, now: Instant) {
        let s = &mut self.services[i];
        let Some(ready) = s.plan.ready.clone() else {
            return;
        };
        let ok = match &ready {
            ReadyPlan::Tcp { address, .. } => match address.parse() {
                Ok(a) => return self.probe_tcp(i, a, now),
                Err(_) => false,
            },
            ReadyPlan::File { path, .. } => path.exists(),
            ReadyPlan::WorkerListen { rule, .. } => match listen::address(rule) {
                Ok(a) => return self.probe_tcp(i, a, now),
                Err(e) => {
                    debug!(service = %s.plan.name, "ready probe: {e}");
                    false
                }
            },
            ReadyPlan::Command { argv, .. } => {
                if s.life.probe_pid.is_none() {
                    let output = Output::Append(s.plan.log_file.clone());
                    match self.spawn_side(i, argv, output) {
                        Ok(child) => {
                            self.services[i].life.probe_pid = Some(child.pid);
                            self.owners.insert(child.pid, Owner::Probe(i));
                        }
                        Err(e) => {
                            warn!(service = %self.services[i].plan.name, "ready probe: {e}");
                        }
                    }
                }
                let s = &mut self.services[i];
                // The answer comes with the probe's exit.
                s.life.probe_at = None;
                return;
            }
        };
        self.service_transition(i, now, |life, _| start::probe_answered(life, ok, now));
    }

    /// Spawns a side process of service `i` (its ready probe, a drain,
    /// quiet or stop command) in the service's cgroups and on its CPUs, as
    /// systemd runs `ExecStop=` in the unit's cgroup: what it leaves
    /// behind (a setsid child) goes when that cgroup is emptied, at the
    /// service's next exit at the latest.
    pub(super) fn spawn_side(
        &self,
        i: usize,
        argv: &[String],
        output: Output,
    ) -> Result<spawn::Spawned, spawn::SpawnError> {
        let s = &self.services[i];
        // Prepared for each side process, not kept: the descriptors a
        // prepared confinement holds would add up over many services.
        let confinement = self.cgroups.as_ref().and_then(|setup| {
            confine::prepare(setup, &s.plan)
                .map_err(|e| debug!(service = %s.plan.name, "side process not confined: {e}"))
                .ok()
                .map(Arc::new)
        });
        spawn::spawn(s.side_process(argv, output, confinement.as_ref()))
    }

    /// A TCP probe of service `i`: the connection is started, not waited
    /// for; its answer comes through the poll set
    /// ([`Supervisor::probe_connected`]) or, after [`TCP_PROBE_TIMEOUT`],
    /// from [`Supervisor::step_probe_conns`]. An address whose packets
    /// are dropped never holds up the loop.
    fn probe_tcp(&mut self, i: usize, addr: std::net::SocketAddr, now: Instant) {
        let s = &mut self.services[i];
        if s.probe_conn.is_some() {
            return;
        }
        let ok = match connect::start(addr) {
            Ok(Connect::Done) => true,
            Ok(Connect::Pending(fd)) => {
                s.probe_conn = Some((fd, after(now, TCP_PROBE_TIMEOUT)));
                s.life.probe_at = None;
                return;
            }
            Err(_) => false,
        };
        self.service_transition(i, now, |life, _| start::probe_answered(life, ok, now));
    }

    /// The connection of service `i`'s TCP probe was decided.
    pub(super) fn probe_connected(&mut self, i: usize) {
        let Some((fd, _)) = self.services[i].probe_conn.take() else {
            return;
        };
        let ok = connect::finished(fd.as_fd()).is_ok();
        let now = Instant::now();
        self.service_transition(i, now, |life, _| start::probe_answered(life, ok, now));
    }

    /// TCP probes past their time are answered: not ready (yet).
    pub(super) fn step_probe_conns(&mut self, now: Instant) {
        for i in 0..self.services.len() {
            if self.services[i]
                .probe_conn
                .as_ref()
                .is_some_and(|(_, until)| *until <= now)
            {
                self.services[i].probe_conn = None;
                self.service_transition(i, now, |life, _| start::probe_answered(life, false, now));
            }
        }
    }

    /// A command probe ended: exit 0 is ready.
    pub(super) fn probe_exited(&mut self, i: usize, how: ExitKind) {
        let now = Instant::now();
        self.services[i].life.probe_pid = None;
        self.service_transition(i, now, |life, _| {
            start::probe_answered(life, how.success(), now)
        });
    }

    /// The mount table changed: blocked services look again.
    pub(super) fn mounts_changed(&mut self) {
        if let Some(m) = self.mounts.as_mut() {
            // Reading it to the end re-arms the notification.
            let mut sink = Vec::new();
            let _ = std::io::Seek::seek(m, std::io::SeekFrom::Start(0));
            let _ = m.read_to_end(&mut sink);
        }
        for s in &mut self.services {
            if matches!(s.life.state, State::Blocked { .. }) {
                s.life.state = State::Waiting;
            }
        }
    }

    /// Whether start-up is over (see `runtime::start::all_settled`).
    pub(super) fn all_settled(&self) -> bool {
        let view: Vec<(&Lifecycle, &[usize])> = self
            .services
            .iter()
            .map(|s| (&s.life, s.deps.as_slice()))
            .collect();
        start::all_settled(&view)
    }
}

/// Required mount points that are not mounted now.
fn missing_mounts(required: &[PathBuf]) -> Vec<String> {
    if required.is_empty() {
        return Vec::new();
    }
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted = mountinfo::points_and_types(&table);
    required
        .iter()
        .filter(|m| !mounted.iter().any(|(p, _)| Path::new(p) == m.as_path()))
        .map(|m| m.display().to_string())
        .collect()
}
