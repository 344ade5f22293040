//! The handover at run time (`runtime/handover.rs` has its format and
//! rules): in the old image, the supervisor's state and the descriptors
//! that go with it; in the new image, reading them first thing and then
//! adopting what they describe, every pid checked; when the state cannot
//! be read, the running services adopted from `services.json` instead and
//! what was lost logged. Also the state kept for the panic hook.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::json;
use tracing::{error, info, warn};

use super::service::AfterStop;
use super::timer::RunOutput;
use super::{kill_group, Owner, Supervisor};
use crate::control::http::ConnRecord;
use crate::control::server::ClientRecord;
use crate::control::Response;
use crate::plan::HookTarget;
use crate::runtime::handover::{
    self, Anchor, Fds, Header, HookRecord, HookRunRecord, LifeRecord, Mono, OutputRecord, Reason,
    ServiceRecord, State, TimerRecord,
};
use crate::runtime::timer::Jitter;
use crate::runtime::{drain, panic, state};
use crate::status::HandoverStatus;
use crate::sys::reexec::{self, HandedFd};
use crate::sys::spawn;
use crate::util::clock::unix_now;

/// What the old image hands over: the two lines, and every descriptor
/// they name (close-on-exec is cleared on exactly these for the exec).
#[derive(Debug)]
pub(super) struct Outgoing {
    pub header: Header,
    pub state: State,
    pub fds: Vec<RawFd>,
}

/// What the new image received, read before it opens anything: the
/// header's descriptors adopted, the rest of the state still to adopt.
#[derive(Debug)]
pub struct Incoming {
    pub header: Option<Header>,
    pub state: Result<State, String>,
    pub lock: Option<OwnedFd>,
    pub control: Option<OwnedFd>,
    pub metrics: Option<OwnedFd>,
    pub clients: Vec<(ClientRecord, UnixStream)>,
    pub conns: Vec<(ConnRecord, std::net::TcpStream)>,
    /// What could not be adopted so far.
    pub lost: Vec<String>,
    /// When the previous image panicked, if that is why (the handover
    /// began then, not when its state was kept).
    pub panicked_at: Option<Mono>,
}

/// Takes `h` if it is still the descriptor handed over, else says why.
fn adopt(h: Option<HandedFd>, what: &str, lost: &mut Vec<String>) -> Option<OwnedFd> {
    h.and_then(|h| {
        h.adopt()
            .map_err(|e| lost.push(format!("{what}: {e}")))
            .ok()
    })
}

/// Every descriptor the state names besides the header's.
fn named_fds(s: &State) -> Vec<HandedFd> {
    let outputs = s
        .timers
        .iter()
        .flat_map(|t| [&t.run_output, &t.gate_output])
        .flatten()
        .filter_map(|o| o.pipe);
    s.services
        .iter()
        .filter_map(|r| r.drain_output)
        .chain(outputs)
        .chain(s.control_clients.iter().map(|c| c.fd))
        .chain(s.http_conns.iter().map(|c| c.fd))
        .collect()
}

/// Reads the handover in memfd `fd` and adopts the descriptors the
/// listeners and clients need; first thing in the new image.
pub fn receive(fd: RawFd) -> Incoming {
    let mut lost = Vec::new();
    let decoded = reexec::take_memfd(fd)
        .map_err(|e| format!("failed to read the handover in descriptor {fd}: {e}"))
        .and_then(|bytes| handover::decode(&bytes));
    let (header, state) = match decoded {
        Ok(d) => (Some(d.header), d.state),
        Err(e) => (None, Err(e)),
    };
    let fds = header.as_ref().map(|h| h.fds.clone()).unwrap_or_default();
    let mut keep: BTreeSet<RawFd> = [fds.lock, fds.control, fds.metrics]
        .into_iter()
        .flatten()
        .map(|h| h.fd)
        .collect();
    if let Ok(s) = &state {
        keep.extend(named_fds(s).iter().map(|h| h.fd));
    }
    // Whatever the handover does not account for (a panic's stale
    // numbers, a state that could not be read) must not stay open for
    // ever: a timer run whose pipe nobody reads would block on it.
    reexec::close_inherited_except(&keep);
    let Fds {
        lock,
        control,
        metrics,
    } = fds;
    let lock = adopt(lock, "the host lock", &mut lost);
    let control = adopt(control, "the control socket", &mut lost);
    let metrics = adopt(metrics, "the metrics listener", &mut lost);
    let mut clients = Vec::new();
    let mut conns = Vec::new();
    if let Ok(s) = &state {
        for c in &s.control_clients {
            if let Some(fd) = adopt(Some(c.fd), "a control client", &mut lost) {
                clients.push((c.clone(), UnixStream::from(fd)));
            }
        }
        for c in &s.http_conns {
            if let Some(fd) = adopt(Some(c.fd), "a metrics connection", &mut lost) {
                conns.push((c.clone(), std::net::TcpStream::from(fd)));
            }
        }
    }
    Incoming {
        header,
        state,
        lock,
        control,
        metrics,
        clients,
        conns,
        lost,
        panicked_at: None,
    }
}

/// Whether `pid` is still the child the handover names (not reaped by
/// the old image since, and, when its start time is known, not a reused
/// pid).
fn still_ours(pid: Pid, start_time: Option<u64>) -> bool {
    reexec::is_child(pid.as_raw())
        && start_time.is_none_or(|t| state::start_time(Path::new("/proc"), pid.as_raw()) == Some(t))
}

/// Nanoseconds CLOCK_BOOTTIME is ahead of CLOCK_MONOTONIC (time spent
/// suspended), and clock ticks per second: to place a process's start
/// time (ticks since boot) on the monotonic clock.
fn boot_clock() -> (u64, u64) {
    use nix::time::{clock_gettime, ClockId};
    let ns = |id| {
        clock_gettime(id).map_or(0, |t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
    };
    let ahead = ns(ClockId::CLOCK_BOOTTIME).saturating_sub(ns(ClockId::CLOCK_MONOTONIC));
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(100);
    (ahead, ticks)
}

/// Our children: (pid, session, start time in ticks since boot).
fn children() -> Vec<(i32, i32, u64)> {
    let me = i64::from(std::process::id());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 1..];
            let f: Vec<&str> = after.split_whitespace().collect();
            let ppid: i64 = f.get(1)?.parse().ok()?;
            let sid: i32 = f.get(3)?.parse().ok()?;
            let start: u64 = f.get(19)?.parse().ok()?;
            (ppid == me).then_some((pid, sid, start))
        })
        .collect()
}

impl Supervisor {
    /// Everything to hand over now. `with_clients`: the control and metrics
    /// connections too (an upgrade; the panic state is not fresh enough to
    /// name them).
    pub(super) fn outgoing(&self, reason: Reason, a: &Anchor, with_clients: bool) -> Outgoing {
        let mut fds = Vec::new();
        let mut hand = |fd: std::os::fd::BorrowedFd<'_>| -> Option<HandedFd> {
            let h = HandedFd::of(fd).ok()?;
            fds.push(h.fd);
            Some(h)
        };
        let header_fds = Fds {
            lock: self.lock.as_ref().and_then(|l| hand(l.fd())),
            control: self.control.as_ref().and_then(|c| hand(c.listener())),
            metrics: self.http.as_ref().and_then(|h| hand(h.listener())),
        };
        let services = self
            .services
            .iter()
            .map(|s| ServiceRecord {
                name: s.plan.name.clone(),
                life: LifeRecord::of(&s.life, a),
                start_time: s.start_time,
                oom_base: s.oom_base,
                start_again: s.after_stop == AfterStop::StartAgain,
                confine_warned: s.confine_warned,
                drain_output: s.drain_output.as_ref().and_then(|f| hand(f.as_fd())),
            })
            .collect();
        let mut output = |o: &RunOutput| OutputRecord {
            pipe: o.pipe.as_ref().and_then(|p| hand(p.as_fd())),
            kept: String::from_utf8_lossy(&o.kept).into_owned(),
        };
        let timers = self
            .timers
            .iter()
            .map(|t| TimerRecord {
                run_output: t.state.run.map(|_| output(&t.run_output)),
                gate_output: t.state.asking.map(|_| output(&t.gate_output)),
                ..TimerRecord::of(&t.plan.name, &t.state, a)
            })
            .collect();
        let hooks = self
            .hooks
            .iter()
            .map(|h| HookRecord {
                target: hook_target(&h.plan.target),
                busy: h.slot.busy,
                queue: h.slot.queue.iter().cloned().collect(),
                counts: h.slot.counts.clone(),
                run: h.run.map(|(pid, kill_at)| HookRunRecord {
                    pid: pid.as_raw(),
                    kill_at: kill_at.map(|t| a.mono(t)),
                }),
            })
            .collect();
        let (control_clients, http_conns) = if with_clients {
            let clients = self
                .control
                .as_ref()
                .map(|c| c.records(a.instant))
                .unwrap_or_default();
            let conns = self
                .http
                .as_ref()
                .map(|h| h.records(a.instant))
                .unwrap_or_default();
            fds.extend(clients.iter().map(|c| c.fd.fd));
            fds.extend(conns.iter().map(|c| c.fd.fd));
            (clients, conns)
        } else {
            (Vec::new(), Vec::new())
        };
        let state = State {
            started_at: self.started_at,
            binary: self.binary.clone(),
            announced_ready: self.announced_ready,
            stopping: self.stopping,
            orphans_reaped: self.orphans_reaped,
            jitter: self.jitter.state(),
            next_watchdog: self.next_watchdog.map(|t| a.mono(t)),
            smt: self.smt.clone(),
            prepare: self.prepare.clone(),
            services,
            timers,
            hooks,
            control_clients,
            control_next_id: self.control.as_ref().map_or(0, |c| c.next_id()),
            http_conns,
            upgrade_client: None,
        };
        Outgoing {
            header: Header::new(reason, a.mono, header_fds),
            state,
            fds,
        }
    }

    /// Keeps the state as of now for the panic hook (at the end of a loop
    /// turn that changed something): a panic re-execs with it.
    pub(super) fn remember_for_panic(&self) {
        let out = self.outgoing(Reason::Panic, &Anchor::now(), false);
        match handover::encode(&out.header, &out.state) {
            Ok(bytes) => panic::remember(bytes, out.fds),
            Err(e) => warn!("failed to keep the state for a panic: {e}"),
        }
    }

    /// In the new image: adopts what the previous one handed over, or
    /// (state unreadable) the services recorded in `services.json`; reaps
    /// what ended meanwhile, and answers the `upgrade` that asked for it.
    pub fn resume(&mut self, incoming: Incoming, read_at: Anchor) {
        let Incoming {
            header,
            state,
            mut lost,
            panicked_at,
            ..
        } = incoming;
        let reason = header.as_ref().map(|h| h.reason);
        let mut client = None;
        match state {
            Ok(s) => {
                client = s.upgrade_client;
                self.adopt_state(s, &read_at, &mut lost);
                if let (Some(Reason::Panic), Some(h)) = (reason, &header) {
                    self.stop_unknown_children(h.began, &mut lost);
                }
            }
            Err(why) => {
                error!("{why}");
                lost.push(why);
                self.adopt_recorded(&read_at, &mut lost);
            }
        }
        self.link();
        // Children that ended during the exec are zombies of this process:
        // reaped and decided on now (SIGCHLD came before the handler).
        self.reap();
        self.dirty = true;
        self.pids_dirty = true;
        let now = Anchor::now().mono;
        let began = panicked_at
            .or(header.as_ref().map(|h| h.began))
            .unwrap_or(read_at.mono);
        let ms = now.0.saturating_sub(began.0) as f64 / 1e6;
        let from = header
            .as_ref()
            .map_or_else(|| "?".to_string(), |h| h.writer.clone());
        let reason_name = match reason {
            Some(Reason::Panic) => "panic",
            _ => "upgrade",
        };
        let running = self
            .services
            .iter()
            .filter(|s| s.life.state.pid().is_some())
            .count();
        let timer_runs = self.timers.iter().filter(|t| t.state.run.is_some()).count();
        info!(
            "took over in place after {reason_name} from venussup {from}: {running} service processes and {timer_runs} timer runs kept, {} lost, in {ms:.1} ms",
            lost.len()
        );
        for l in &lost {
            warn!("handover: {l}");
        }
        self.handover = Some(HandoverStatus {
            at: unix_now(),
            reason: reason_name.to_string(),
            from: from.clone(),
            binary: self.binary.clone(),
            ms,
            lost: lost.clone(),
        });
        if let (Some(id), Some(server)) = (client, self.control.as_mut()) {
            server.respond(
                id,
                &Response::ok(json!({
                    "upgraded": true,
                    "pid": std::process::id(),
                    "from": from,
                    "to": env!("CARGO_PKG_VERSION"),
                    "binary": self.binary,
                    "services": running,
                    "timer_runs": timer_runs,
                    "handover_ms": ms,
                    "lost": lost,
                })),
            );
        }
        if self.announced_ready {
            self.notifier.send(&format!("STATUS={}", self.summary()));
        }
    }

    /// Adopts a state read whole: every service, timer and hook by name
    /// (hooks by position and target), each pid checked.
    fn adopt_state(&mut self, s: State, a: &Anchor, lost: &mut Vec<String>) {
        let now = a.instant;
        self.started_at = s.started_at;
        if !s.binary.as_os_str().is_empty() {
            self.binary = s.binary;
        }
        self.announced_ready = s.announced_ready;
        self.stopping = s.stopping;
        self.orphans_reaped = s.orphans_reaped;
        self.jitter = Jitter::resume(s.jitter);
        if self.notifier.watchdog_every.is_some() {
            self.next_watchdog = s.next_watchdog.map(|m| a.instant(m)).or(Some(now));
        }
        if s.smt.is_some() {
            self.smt = s.smt;
        }
        if s.prepare.is_some() {
            self.prepare = s.prepare;
        }
        let index = self.name_index();
        for rec in s.services {
            let Some(&i) = index.get(&rec.name) else {
                let pid = rec.life.lifecycle(a).state.pid();
                lost.push(format!(
                    "service `{}` is not in this image's plan{}",
                    rec.name,
                    pid.map_or(String::new(), |p| format!(
                        "; its process {p} runs on, unsupervised"
                    ))
                ));
                continue;
            };
            self.adopt_service(i, rec, a, lost);
        }
        for rec in s.timers {
            match self.timers.iter().position(|t| t.plan.name == rec.name) {
                Some(i) => self.adopt_timer(i, rec, a, lost),
                None => lost.push(format!("timer `{}` is not in this image's plan", rec.name)),
            }
        }
        for (k, rec) in s.hooks.into_iter().enumerate() {
            let Some(h) = self.hooks.get_mut(k) else {
                lost.push(format!("hook {k} is not in this image's plan"));
                continue;
            };
            if hook_target(&h.plan.target) != rec.target {
                lost.push(format!("hook {k} changed; its queue was dropped"));
                continue;
            }
            h.slot.busy = rec.busy;
            h.slot.queue = rec.queue.into();
            h.slot.counts = rec.counts;
            if let Some(r) = rec.run {
                let pid = Pid::from_raw(r.pid);
                if still_ours(pid, None) {
                    h.run = Some((pid, r.kill_at.map(|m| a.instant(m))));
                    self.owners.insert(pid, Owner::Hook(k));
                } else {
                    lost.push(format!("hook {k}'s run {pid} was gone"));
                }
            }
        }
        // A hook whose run was lost goes on with its queue.
        for k in 0..self.hooks.len() {
            if self.hooks[k].run.is_none() && self.hooks[k].slot.busy {
                match self.hooks[k].slot.queue.pop_front() {
                    Some(e) => self.run_hook(k, e),
                    None => self.hooks[k].slot.busy = false,
                }
            }
        }
    }

    fn adopt_service(&mut self, i: usize, rec: ServiceRecord, a: &Anchor, lost: &mut Vec<String>) {
        let now = a.instant;
        let s = &mut self.services[i];
        s.life = rec.life.lifecycle(a);
        s.start_time = rec.start_time;
        s.oom_base = rec.oom_base;
        s.confine_warned = rec.confine_warned;
        s.after_stop = if rec.start_again {
            AfterStop::StartAgain
        } else {
            AfterStop::StayStopped
        };
        let name = s.plan.name.clone();
        s.drain_output = adopt(
            rec.drain_output,
            &format!("{name}'s quiet probe output"),
            lost,
        )
        .map(File::from);
        if let Some(pid) = s.life.state.pid() {
            if still_ours(pid, s.start_time) {
                self.owners.insert(pid, Owner::Service(i));
                self.logs
                    .watch(&s.plan.log_file, self.log_max, self.log_keep);
            } else {
                lost.push(format!(
                    "{name}: its process {pid} was gone; it starts again"
                ));
                let again = s.after_stop == AfterStop::StartAgain;
                s.life = handover::lost_process(std::mem::take(&mut s.life), again, now);
            }
        }
        if let Some(p) = s.life.probe_pid {
            if still_ours(p, None) {
                self.owners.insert(p, Owner::Probe(i));
            } else {
                s.life.probe_pid = None;
                s.life.probe_at = Some(now);
            }
        }
        if let Some(p) = s.life.drain.helper {
            if still_ours(p, None) {
                self.owners.insert(p, Owner::Drain(i));
            } else {
                s.life.drain.helper = None;
                let why = format!("its drain command {p} was gone after the handover");
                self.service_transition(i, now, |life, rules| {
                    drain::helper_failed(life, rules, &why, now)
                });
            }
        }
    }

    fn adopt_timer(&mut self, i: usize, rec: TimerRecord, a: &Anchor, lost: &mut Vec<String>) {
        let mut recorded = crate::runtime::adopt::read_runs(&self.state_dir);
        let t = &mut self.timers[i];
        t.state = rec.timer_state(a);
        let name = t.plan.name.clone();
        // The run stays recorded for a daemon started after this one.
        t.recorded = recorded
            .remove(&name)
            .filter(|r| t.state.run.is_some_and(|run| run.pid.as_raw() == r.pid));
        for gate in [false, true] {
            let (running, out) = if gate {
                (t.state.asking, &rec.gate_output)
            } else {
                (t.state.run, &rec.run_output)
            };
            let Some(r) = running else { continue };
            if !still_ours(r.pid, None) {
                lost.push(format!(
                    "{name}: its {} {} was gone; its result is unknown",
                    if gate { "gate command" } else { "run" },
                    r.pid
                ));
                if gate {
                    t.state.asking = None;
                } else {
                    t.state.run = None;
                }
                continue;
            }
            let out = out.clone().unwrap_or_default();
            let pipe = adopt(out.pipe, &format!("{name}'s output"), lost).map(File::from);
            let log = (!gate)
                .then(|| spawn::open_log(&t.plan.log_file).ok())
                .flatten();
            *t.output_of(gate) = RunOutput {
                pipe,
                log,
                kept: out.kept.into_bytes(),
            };
            let owner = if gate {
                Owner::Gate(i)
            } else {
                Owner::Timer(i)
            };
            self.owners.insert(r.pid, owner);
        }
        let t = &mut self.timers[i];
        if t.state.run.is_none() {
            t.recorded = None;
        }
    }

    /// The state could not be read: every service whose recorded pid is
    /// still our child (same start time) runs on as `running`; the rest of
    /// what the previous image knew is lost, and said so.
    fn adopt_recorded(&mut self, a: &Anchor, lost: &mut Vec<String>) {
        let record = state::read_pids(&self.state_dir);
        let (ahead, ticks) = boot_clock();
        let mut adopted = Vec::new();
        for (i, s) in self.services.iter_mut().enumerate() {
            let Some(r) = record.get(&s.plan.name) else {
                continue;
            };
            let pid = Pid::from_raw(r.pid);
            if !still_ours(pid, Some(r.start_time)) {
                continue;
            }
            let since_boot = r.start_time.saturating_mul(1_000_000_000) / ticks.max(1);
            s.life.state = crate::runtime::service::State::Running { pid };
            s.life.ready = true;
            s.life.run_started = Some(a.instant(Mono(since_boot.saturating_sub(ahead))));
            s.start_time = Some(r.start_time);
            self.owners.insert(pid, Owner::Service(i));
            self.logs
                .watch(&s.plan.log_file, self.log_max, self.log_keep);
            adopted.push(s.plan.name.clone());
        }
        lost.push(format!(
            "adopted {} running service(s) from services.json ({}); their restart counts, backoff, last exits and drain progress, the timers' runs and schedule, the hooks' queues and the connected clients of the previous image are lost",
            adopted.len(),
            if adopted.is_empty() { "none".to_string() } else { adopted.join(", ") }
        ));
        // Whether READY=1 went out is lost too: it goes out again once the
        // services are up, which systemd takes as it is (same main pid).
    }

    /// After a panic: the state is as of the end of the last loop turn, so
    /// a child started during the turn that panicked is nobody's. Such a
    /// child (our own, a session leader as everything venussup starts is,
    /// and started since that state) is stopped, so no service runs twice:
    /// the state starts it again.
    fn stop_unknown_children(&mut self, began: Mono, lost: &mut Vec<String>) {
        let (ahead, ticks) = boot_clock();
        let since = (began.0.saturating_add(ahead) / 1_000_000).saturating_mul(ticks) / 1000;
        for (pid, sid, start) in children() {
            let p = Pid::from_raw(pid);
            if self.owners.contains_key(&p) || sid != pid || start < since {
                continue;
            }
            kill_group(p, Signal::SIGKILL);
            lost.push(format!(
                "process {pid}, started during the turn that panicked and not in the state, was stopped"
            ));
        }
    }

    /// The arguments that start `binary` as the next image of this one
    /// (`run` as this one was started), up to its `--handover`.
    pub(super) fn run_argv(&self, binary: &Path) -> Vec<String> {
        let mut argv = vec![
            binary.display().to_string(),
            "run".to_string(),
            "--config".to_string(),
            self.run_args.config.display().to_string(),
        ];
        if self.run_args.fs_root.root() != Path::new("/") {
            argv.push("--fs-root".into());
            argv.push(self.run_args.fs_root.root().display().to_string());
        }
        if let Some(l) = &self.run_args.log_level {
            argv.push("--log-level".into());
            argv.push(l.clone());
        }
        argv
    }
}

/// A hook as the handover matches it.
fn hook_target(t: &HookTarget) -> String {
    match t {
        HookTarget::Command(c) => c.join(" "),
        HookTarget::Url(u) => u.clone(),
    }
}
