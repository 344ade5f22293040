//! Event hooks at run time: each run is a child reaped like any other,
//! one per hook at a time, killed at its `timeout`. Which event runs when
//! (the queue, the drops) is decided in `runtime/hooks.rs`.

use std::io::Write as _;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{info, warn};

use super::{kill_group, Owner, Supervisor};
use crate::config::EventKind;
use crate::plan::{HookPlan, HookTarget};
use crate::runtime::confine::{Confinement, Helpers};
use crate::runtime::hooks::{Event, Slot};
use crate::status::ExitKind;
use crate::sys::spawn::{self, Output, SpawnSpec};
use crate::util::clock::after;

/// One `[[host.hook]]` at run time.
#[derive(Debug)]
pub(super) struct Hook {
    pub plan: HookPlan,
    pub slot: Slot,
    /// The running child, and when it is killed (`None` once it was).
    pub run: Option<(Pid, Option<Instant>)>,
}

impl Hook {
    pub fn new(plan: &HookPlan) -> Self {
        Self {
            plan: plan.clone(),
            slot: Slot::default(),
            run: None,
        }
    }
}

impl Supervisor {
    /// Tells every hook that wants `event` about it.
    pub(super) fn emit(&mut self, event: Event) {
        for k in 0..self.hooks.len() {
            if !self.hooks[k].plan.on.contains(&event.event) {
                continue;
            }
            if let Some(now) = self.hooks[k].slot.offer(event.clone()) {
                self.run_hook(k, now);
            } else {
                self.dirty = true;
            }
        }
    }

    /// A service's or timer's event with its name and exit.
    pub(super) fn emit_about(
        &mut self,
        kind: EventKind,
        service: Option<&str>,
        timer: Option<&str>,
        exit: Option<String>,
        message: String,
    ) {
        let mut e = Event::new(kind, message);
        e.service = service.map(str::to_string);
        e.timer = timer.map(str::to_string);
        e.exit = exit;
        self.emit(e);
    }

    pub(super) fn run_hook(&mut self, k: usize, event: Event) {
        let hook = &self.hooks[k];
        let json = serde_json::to_vec(&event).unwrap_or_default();
        let mut env = event.env();
        env.insert("PATH".into(), crate::plan::DEFAULT_PATH.into());
        let argv = match &hook.plan.target {
            HookTarget::Command(c) => c.clone(),
            HookTarget::Url(url) => {
                // The URL goes in the environment: a token in its query
                // would show in `ps` on the command line.
                env.insert("VENUSSUP_WEBHOOK_URL".into(), url.clone());
                let per_try = hook.plan.timeout.0 / hook.plan.tries.max(1);
                let mut argv = vec![
                    std::env::current_exe()
                        .map_or("/proc/self/exe".into(), |p| p.display().to_string()),
                    "webhook".into(),
                    "--tries".into(),
                    hook.plan.tries.to_string(),
                    "--timeout".into(),
                    format!("{}ms", per_try.as_millis().max(100)),
                ];
                if let Some(ca) = &hook.plan.ca {
                    argv.extend(["--ca".into(), ca.display().to_string()]);
                }
                argv
            }
        };
        // In the hook's own cgroup: what it leaves behind goes at its exit.
        let tracked = self.tracking(Helpers::Hook(k));
        let started = stdin_with(&json).and_then(|stdin| {
            spawn::spawn(SpawnSpec {
                cgroup: tracked.as_ref().and_then(Confinement::target),
                ..SpawnSpec::helper(
                    &argv,
                    &env,
                    Output::Append(self.log_dir.join("hooks.log")),
                    Some(stdin),
                )
            })
            .map_err(|e| e.to_string())
        });
        let now = Instant::now();
        match started {
            Ok(child) => {
                info!(hook = k, event = ?event.event, pid = child.pid.as_raw(), "hook started");
                self.owners.insert(child.pid, Owner::Hook(k));
                self.hooks[k].run =
                    Some((child.pid, Some(after(now, self.hooks[k].plan.timeout.0))));
            }
            Err(e) => {
                warn!(hook = k, "failed to start the hook: {e}");
                if let Some(next) = self.hooks[k].slot.finished(false) {
                    self.run_hook(k, next);
                }
            }
        }
        self.dirty = true;
    }

    pub(super) fn hook_exited(&mut self, k: usize, how: ExitKind) {
        let Some((pid, _)) = self.hooks[k].run.take() else {
            return;
        };
        kill_group(pid, Signal::SIGKILL);
        self.empty_named(&Helpers::Hook(k).cgroup());
        if !how.success() {
            warn!(hook = k, "hook {how} (see hooks.log)");
        }
        self.dirty = true;
        if let Some(next) = self.hooks[k].slot.finished(how.success()) {
            self.run_hook(k, next);
        }
    }

    /// Kills hooks past their timeout (their exit is then a failure).
    pub(super) fn step_hooks(&mut self, now: Instant) {
        for (k, h) in self.hooks.iter_mut().enumerate() {
            if let Some((pid, kill_at)) = &mut h.run {
                if kill_at.is_some_and(|at| at <= now) {
                    warn!(
                        hook = k,
                        "hook still running after {}; killing it", h.plan.timeout
                    );
                    kill_group(*pid, Signal::SIGKILL);
                    // SIGKILL cannot be ignored; its exit comes.
                    *kill_at = None;
                }
            }
        }
    }

    pub(super) fn hook_deadlines(&self) -> impl Iterator<Item = Option<Instant>> + '_ {
        self.hooks.iter().map(|h| h.run.and_then(|(_, at)| at))
    }
}

/// A pipe's read end holding `bytes` (an event is far smaller than a pipe's
/// buffer, so the write never blocks), for a child's stdin.
fn stdin_with(bytes: &[u8]) -> Result<std::fs::File, String> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("failed to make a pipe: {e}"))?;
    let _ = nix::fcntl::fcntl(
        &write,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut w = std::fs::File::from(write);
    w.write_all(bytes)
        .map_err(|e| format!("failed to write the event to the hook's stdin: {e}"))?;
    Ok(std::fs::File::from(read))
}
