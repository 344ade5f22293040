//! Requests from the control socket (and SIGHUP's reload), applied to the
//! supervisor's state: each answers at once; what takes time (a stop, a
//! start) goes on in the loop and shows in the snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::service::{AfterStop, Service};
use super::timer::Timer;
use super::{kill_group, Owner, Supervisor};
use crate::control::server::Token;
use crate::control::{Command, Request, Response};
use crate::plan::render;
use crate::runtime::confine::Helpers;
use crate::runtime::logs;
use crate::runtime::service::State;
use crate::util::names;

/// Lines of a service's log shown by `status NAME`.
const LOG_TAIL_LINES: usize = 20;

/// What a reload did.
#[derive(Debug, Default, Serialize)]
pub struct ReloadSummary {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    pub unchanged: Vec<String>,
    /// Host settings the reload applied: `hooks`, `textfile`, `gpu lock
    /// folders`.
    pub applied: Vec<String>,
    /// Host settings that changed but take effect only when venussup
    /// restarts, each with why.
    pub needs_restart: Vec<String>,
    /// Timers added, changed (their next run planned anew) or removed:
    /// `pledge (changed)`.
    pub timers: Vec<String>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} new, {} removed, {} changed (restarting), {} unchanged",
            self.started.len(),
            self.stopped.len(),
            self.restarted.len(),
            self.unchanged.len()
        )
    }
}

impl Supervisor {
    /// Reads, answers and forgets what the ready control descriptors bring.
    pub(super) fn serve_control(&mut self, tokens: &[Token]) {
        let now = Instant::now();
        let clients = tokens.iter().filter(|t| matches!(t, Token::Client(_)));
        let share = crate::control::share(clients.count());
        for token in tokens {
            let requests = match self.control.as_mut() {
                Some(server) => server.ready(*token, now, share),
                None => return,
            };
            for (client, request) in requests {
                let response = match request {
                    // Answered later: by the new image, or when a check fails.
                    Ok(Request {
                        command: Command::Upgrade { binary },
                        ..
                    }) => match self.upgrade_requested(client, binary) {
                        Some(r) => r,
                        None => continue,
                    },
                    Ok(r) => self.handle(r.command),
                    Err(e) => Response::err(e),
                };
                if let Some(server) = self.control.as_mut() {
                    server.respond(client, &response);
                }
            }
        }
    }

    fn service_index(&self, name: &str) -> Result<usize, String> {
        self.services
            .iter()
            .position(|s| s.plan.name == name && !s.retiring)
            .ok_or_else(|| {
                let names: Vec<&str> = self.services.iter().map(|s| s.plan.name.as_str()).collect();
                format!("no service `{name}` (services: {})", names.join(", "))
            })
    }

    /// The services `name` means: the one of that name, else every
    /// instance of it (`worker` is `worker@0`, `worker@1`, ...).
    fn service_indices(&self, name: &str) -> Result<Vec<usize>, String> {
        if let Ok(i) = self.service_index(name) {
            return Ok(vec![i]);
        }
        let all: Vec<usize> = self
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.retiring && names::is_instance_of(&s.plan.name, name))
            .map(|(i, _)| i)
            .collect();
        if all.is_empty() {
            self.service_index(name).map(|i| vec![i])
        } else {
            Ok(all)
        }
    }

    /// `act` on each service `name` means. One service: its answer. Every
    /// instance: `{"services": [answer or {"service", "error"}, ...]}`,
    /// refused only when every instance refused.
    fn on_each(
        &mut self,
        name: &str,
        mut act: impl FnMut(&mut Self, usize) -> Result<Value, String>,
    ) -> Result<Value, String> {
        let which = self.service_indices(name)?;
        if let [i] = which[..] {
            if self.services[i].plan.name == name {
                return act(self, i);
            }
        }
        let mut answers = Vec::new();
        let mut errors = Vec::new();
        for i in which {
            match act(self, i) {
                Ok(v) => answers.push(v),
                Err(e) => {
                    answers.push(json!({"service": self.services[i].plan.name, "error": e}));
                    errors.push(e);
                }
            }
        }
        if errors.len() == answers.len() {
            Err(errors.join("; "))
        } else {
            Ok(json!({ "services": answers }))
        }
    }

    pub(super) fn handle(&mut self, command: Command) -> Response {
        let now = Instant::now();
        let result = match command {
            Command::Status { name: None } => {
                serde_json::to_value(self.snapshot()).map_err(|e| e.to_string())
            }
            Command::Status { name: Some(name) } => self.detail(&name),
            Command::Start { name } => self.on_each(&name, |sup, i| sup.start_on_request(i, now)),
            Command::Stop { name } => self.on_each(&name, |sup, i| {
                sup.stop_on_request(i, now, AfterStop::StayStopped)
            }),
            Command::Restart {
                name,
                with_dependents,
            } => self.on_each(&name, |sup, i| {
                let mut which = vec![i];
                if with_dependents {
                    which.extend(sup.dependents(i));
                }
                let mut last = Value::Null;
                for j in which {
                    last = sup.restart_one(j, now)?;
                }
                Ok(last)
            }),
            Command::TimerRun { name } => self.timer_now(&name, now),
            Command::Reload => self
                .reload()
                .and_then(|summary| serde_json::to_value(summary).map_err(|e| e.to_string())),
            Command::Metrics => Ok(Value::String(crate::status::metrics::render(
                &self.snapshot(),
            ))),
            Command::Upgrade { .. } => Err("`upgrade` is answered by `serve_control`".into()),
            #[cfg(debug_assertions)]
            Command::DebugPanic => panic!("a debug-panic request (debug builds only)"),
        };
        match result {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e),
        }
    }

    /// `status NAME`: the snapshot entry plus the command, recent exits and
    /// the log's last lines; built from that one service or timer, not the
    /// whole snapshot.
    fn detail(&self, name: &str) -> Result<Value, String> {
        let now = Instant::now();
        if let Some(i) = self.timers.iter().position(|t| t.plan.name == name) {
            let t = self.timer_status(i, now);
            let mut v = serde_json::to_value(t).map_err(|e| e.to_string())?;
            v["kind"] = json!("timer");
            v["log_tail"] = json!(logs::tail(&self.timers[i].plan.log_file, LOG_TAIL_LINES));
            return Ok(v);
        }
        let i = self.service_index(name)?;
        let s = &self.services[i];
        let shown = render::redacted_service(&s.plan);
        let entry = self.service_status(i, now, crate::util::clock::unix_now());
        let mut v = serde_json::to_value(entry).map_err(|e| e.to_string())?;
        v["argv"] = json!(shown.argv);
        v["env"] = json!(shown.env);
        v["recent_exits"] = json!(s.life.recent_exits);
        v["log_tail"] = json!(logs::tail(&s.plan.log_file, LOG_TAIL_LINES));
        v["after"] = json!(s.plan.after);
        Ok(v)
    }

    fn restart_one(&mut self, i: usize, now: Instant) -> Result<Value, String> {
        if self.services[i].life.state.pid().is_some() {
            self.stop_on_request(i, now, AfterStop::StartAgain)
        } else {
            self.start_on_request(i, now)
        }
    }

    /// Every service that starts after `i`, directly or through others.
    fn dependents(&self, i: usize) -> Vec<usize> {
        let mut found: Vec<usize> = Vec::new();
        let mut frontier = vec![i];
        while let Some(j) = frontier.pop() {
            for (k, s) in self.services.iter().enumerate() {
                if s.deps.contains(&j) && k != i && !found.contains(&k) {
                    found.push(k);
                    frontier.push(k);
                }
            }
        }
        found
    }

    fn start_on_request(&mut self, i: usize, now: Instant) -> Result<Value, String> {
        let s = &mut self.services[i];
        match s.life.state {
            State::Stopped
            | State::Exited
            | State::Failed { .. }
            | State::Done
            | State::Backoff { .. } => {
                info!(service = %s.plan.name, "start requested");
                s.life.backoff = Default::default();
                s.life.history.clear();
                s.life.reason = None;
                s.after_stop = AfterStop::StayStopped;
                s.life.state = State::Waiting;
                self.dirty = true;
                self.step_service(i, now);
                Ok(self.service_reply(i))
            }
            State::Stopping { .. } => {
                s.after_stop = AfterStop::StartAgain;
                Ok(json!({"service": s.plan.name, "state": "stopping, then starting"}))
            }
            _ => Err(format!(
                "`{}` is already {}",
                s.plan.name,
                s.life.state.name()
            )),
        }
    }

    /// Sends the stop signal now (not waiting for dependents: the operator
    /// asked for this one); `after` says what follows the exit.
    pub(super) fn stop_on_request(
        &mut self,
        i: usize,
        now: Instant,
        after: AfterStop,
    ) -> Result<Value, String> {
        let s = &mut self.services[i];
        s.after_stop = after;
        self.dirty = true;
        match s.life.state.clone() {
            State::Starting { pid, .. } | State::Running { pid } => {
                info!(service = %s.plan.name, "stop requested");
                self.planned_stop(i, pid, now);
            }
            State::Stopping { .. } | State::Draining { .. } => {}
            _ => {
                s.life.state = State::Stopped;
                self.after_requested_stop(i, now);
            }
        }
        Ok(self.service_reply(i))
    }

    /// A request's answer about service `i`: its name and state now.
    fn service_reply(&self, i: usize) -> Value {
        let s = &self.services[i];
        json!({"service": s.plan.name, "state": s.life.state.name()})
    }

    /// What follows a stop venussup asked for: a changed plan takes over, a
    /// restart starts again, a removed service goes.
    pub(super) fn after_requested_stop(&mut self, i: usize, now: Instant) {
        let s = &mut self.services[i];
        if s.retiring {
            return;
        }
        if let Some(plan) = s.replacement.take() {
            let mut clamped = BTreeSet::new();
            let fresh = Service::new(&plan, &self.ceilings, &mut clamped);
            for w in clamped {
                warn!(service = %plan.name, "{w}");
            }
            *s = fresh;
            self.link();
            self.step_service(i, now);
        } else if s.after_stop == AfterStop::StartAgain {
            s.after_stop = AfterStop::StayStopped;
            s.life.backoff = Default::default();
            s.life.state = State::Waiting;
            self.step_service(i, now);
        }
    }

    fn timer_now(&mut self, name: &str, now: Instant) -> Result<Value, String> {
        let i = self
            .timers
            .iter()
            .position(|t| t.plan.name == name)
            .ok_or_else(|| format!("no timer `{name}`"))?;
        if self.timers[i].state.busy() {
            return Err(format!(
                "`{name}` is running already; a timer never runs twice at once"
            ));
        }
        info!(timer = %name, "run requested");
        self.run_timer(i, now);
        Ok(json!({"timer": name, "running": self.timers[i].state.run.is_some()}))
    }

    /// Re-reads the config; an invalid one changes nothing. A valid one is
    /// applied as a diff: new services start, removed ones stop, changed
    /// ones restart, unchanged ones keep running with the same pid.
    pub(super) fn reload(&mut self) -> Result<ReloadSummary, String> {
        let (config, plan) = crate::runtime::load_plan(&self.config, &self.fs_root)?;
        self.config_digest = super::upgrade::config_digest(&self.config);
        let now = Instant::now();
        if config.host.state_dir != self.state_dir {
            warn!("state_dir changed in the config; it takes effect when venussup restarts");
        }
        self.log_max = plan.host.log_max_size.0;
        self.log_keep = plan.host.log_keep;
        let mut summary = ReloadSummary::default();
        let mut old: HashMap<String, Service> = HashMap::new();
        let old_index: HashMap<String, usize> = self.name_index();
        for s in self.services.drain(..) {
            old.insert(s.plan.name.clone(), s);
        }
        let mut services = Vec::new();
        let mut clamped = BTreeSet::new();
        for p in &plan.services {
            match old.remove(&p.name) {
                Some(mut s) if s.retiring => {
                    // Removed earlier, back now: let it finish stopping, then start.
                    s.retiring = false;
                    s.replacement = Some(p.clone());
                    summary.restarted.push(p.name.clone());
                    services.push(s);
                }
                Some(s) if same_plan(&s.plan, p) => {
                    summary.unchanged.push(p.name.clone());
                    services.push(s);
                }
                Some(mut s) => {
                    summary.restarted.push(p.name.clone());
                    s.replacement = Some(p.clone());
                    services.push(s);
                }
                None => {
                    summary.started.push(p.name.clone());
                    services.push(Service::new(p, &self.ceilings, &mut clamped));
                }
            }
        }
        let mut removed: Vec<Service> = old.into_values().collect();
        removed.sort_by_key(|s| old_index.get(&s.plan.name).copied());
        for mut s in removed {
            if !s.retiring {
                summary.stopped.push(s.plan.name.clone());
            }
            s.retiring = true;
            services.push(s);
        }
        for w in clamped {
            warn!("{w}");
        }
        // Pids point at positions: move them with their services.
        let new_index: HashMap<&str, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.plan.name.as_str(), i))
            .collect();
        let old_names: HashMap<usize, String> =
            old_index.iter().map(|(n, i)| (*i, n.clone())).collect();
        let remap = |i: usize| {
            old_names
                .get(&i)
                .and_then(|n| new_index.get(n.as_str()).copied())
        };
        self.remap_owners(|owner| match owner {
            Owner::Service(i) => remap(i).map(Owner::Service),
            Owner::Probe(i) => remap(i).map(Owner::Probe),
            Owner::Drain(i) => remap(i).map(Owner::Drain),
            o @ (Owner::Timer(_) | Owner::Hook(_) | Owner::Gate(_) | Owner::Upgrade) => Some(o),
        });
        self.services = services;
        summary.timers = self.reload_timers(&plan.timers);
        self.reload_host(&plan.host, &mut summary);
        self.link();
        // Changed and removed services stop now; the rest follows in the loop.
        for i in 0..self.services.len() {
            let s = &self.services[i];
            if s.retiring || s.replacement.is_some() {
                if s.life.state.pid().is_some() {
                    let _ = self.stop_on_request(i, now, AfterStop::StayStopped);
                } else if !s.retiring {
                    self.after_requested_stop(i, now);
                } else {
                    self.services[i].life.state = State::Stopped;
                }
            }
        }
        self.dirty = true;
        Ok(summary)
    }

    /// The host settings a reload applies (hooks, the metrics textfile, the
    /// GPU lock folders), or names as needing a restart (`[host.prepare]`).
    fn reload_host(&mut self, host: &crate::plan::HostPlan, summary: &mut ReloadSummary) {
        // Hooks: one whose plan is unchanged at its place keeps its queue
        // and its running delivery; a changed or removed one's delivery is
        // killed and forgotten.
        let old_hooks: Vec<crate::plan::HookPlan> =
            self.hooks.iter().map(|h| h.plan.clone()).collect();
        if old_hooks != host.hooks {
            let mut kept = Vec::new();
            for (k, h) in std::mem::take(&mut self.hooks).into_iter().enumerate() {
                if host.hooks.get(k) == Some(&h.plan) {
                    kept.push(h);
                    continue;
                }
                if let Some((pid, _)) = h.run {
                    kill_group(pid, Signal::SIGKILL);
                    self.owners.remove(&pid);
                    self.discard_helpers(Helpers::Hook(k));
                }
                if k < host.hooks.len() {
                    kept.push(super::hooks::Hook::new(&host.hooks[k]));
                }
            }
            for p in host.hooks.iter().skip(kept.len()) {
                kept.push(super::hooks::Hook::new(p));
            }
            self.hooks = kept;
            info!("reload: hooks applied ({} hooks)", self.hooks.len());
            summary.applied.push("hooks".to_string());
        }
        if host.textfile != self.textfile {
            self.textfile = host.textfile.clone();
            self.write_textfile();
            summary.applied.push("textfile".to_string());
        }
        if host.gpu_tmpdirs != self.gpu_tmpdirs {
            for e in crate::runtime::lockdirs::create_lock_dirs(&host.gpu_tmpdirs) {
                warn!("{e}");
            }
            self.gpu_tmpdirs = host.gpu_tmpdirs.clone();
            summary.applied.push("gpu lock folders".to_string());
        }
        if host.prepare != self.prepare_plan {
            let why = "[host.prepare]: runs once, when venussup starts; `systemctl restart venussup` applies it";
            warn!("reload: {why}");
            summary.needs_restart.push(why.to_string());
        }
    }

    /// Timers are replaced by name; a timer whose plan is unchanged keeps its
    /// schedule and counts. A running run of a removed timer is killed.
    /// Takes the new timers, keeping the state of those unchanged; returns
    /// what changed, for the reload's answer.
    fn reload_timers(&mut self, plans: &[crate::plan::TimerPlan]) -> Vec<String> {
        let mut changed = Vec::new();
        let mut old: BTreeMap<String, (usize, Timer)> = self
            .timers
            .drain(..)
            .enumerate()
            .map(|(i, t)| (t.plan.name.clone(), (i, t)))
            .collect();
        let mut moved: HashMap<usize, usize> = HashMap::new();
        for (new_i, p) in plans.iter().enumerate() {
            let t = match old.remove(&p.name) {
                Some((old_i, mut t)) => {
                    moved.insert(old_i, new_i);
                    if !same_timer(&t.plan, p) {
                        t.plan = p.clone();
                        t.state.due = None;
                        changed.push(format!("{} (changed)", p.name));
                    }
                    t
                }
                None => {
                    changed.push(format!("{} (new)", p.name));
                    Timer::new(p)
                }
            };
            self.timers.push(t);
        }
        let mut removed = Vec::new();
        for (name, (_, t)) in old {
            changed.push(format!("{name} (removed)"));
            for run in [t.state.run, t.state.asking].into_iter().flatten() {
                kill_group(run.pid, Signal::SIGKILL);
            }
            removed.push(name);
        }
        self.remap_owners(|owner| match owner {
            Owner::Timer(i) => moved.get(&i).map(|&j| Owner::Timer(j)),
            Owner::Gate(i) => moved.get(&i).map(|&j| Owner::Gate(j)),
            o => Some(o),
        });
        // No longer its: the killed run is reaped with what it left.
        for name in &removed {
            self.discard_helpers(Helpers::Timer(name));
        }
        changed
    }

    /// Removes retired services once nothing of theirs runs.
    pub(super) fn drop_retired(&mut self) {
        let done =
            |s: &Service| s.retiring && s.life.state.pid().is_none() && s.life.probe_pid.is_none();
        if !self.services.iter().any(done) {
            return;
        }
        let names: Vec<String> = self.services.iter().map(|s| s.plan.name.clone()).collect();
        self.services.retain(|s| !done(s));
        let index: HashMap<String, usize> = self.name_index();
        self.remap_owners(|owner| match owner {
            Owner::Service(i) => index.get(&names[i]).map(|&j| Owner::Service(j)),
            Owner::Probe(i) => index.get(&names[i]).map(|&j| Owner::Probe(j)),
            Owner::Drain(i) => index.get(&names[i]).map(|&j| Owner::Drain(j)),
            o @ (Owner::Timer(_) | Owner::Hook(_) | Owner::Gate(_) | Owner::Upgrade) => Some(o),
        });
        self.link();
        self.dirty = true;
    }
}

/// Plans compare as what they would show in `check --json`.
fn same_plan(a: &crate::plan::ServicePlan, b: &crate::plan::ServicePlan) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

fn same_timer(a: &crate::plan::TimerPlan, b: &crate::plan::TimerPlan) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}
