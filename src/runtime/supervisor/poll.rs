//! The poll set: every descriptor the loop waits on, each with the
//! [`Source`] it stands for, so what became ready is known by name, not by
//! its position in the set.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{error, info};

use super::Supervisor;
use crate::control::http::{HttpToken, MetricsServer};
use crate::control::server::{Server, Token};
use crate::runtime::service::State;

/// What a descriptor in the poll set stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The self-pipe of SIGTERM, SIGINT, SIGHUP and SIGCHLD.
    Signals,
    /// The control socket's listener or one of its clients.
    Control(Token),
    /// The mount table, while a service is blocked on a mount.
    Mounts,
    /// The metrics listener or one of its connections.
    Http(HttpToken),
    /// The inotify watch over the services' logs.
    Logs,
    /// The output of timer `timer`'s run, or of its gate command.
    Output { timer: usize, gate: bool },
    /// The output of an upgrade's check of the new program.
    Upgrade,
    /// The connection of service `i`'s TCP ready probe.
    Probe(usize),
}

/// Descriptors to poll, and what each stands for.
#[derive(Default)]
struct PollSet<'a> {
    fds: Vec<PollFd<'a>>,
    sources: Vec<Source>,
}

impl<'a> PollSet<'a> {
    fn add(&mut self, source: Source, fd: BorrowedFd<'a>, flags: PollFlags) {
        self.fds.push(PollFd::new(fd, flags));
        self.sources.push(source);
    }

    /// Blocks until one is ready or `timeout`; the ones that are.
    fn wait(mut self, timeout: PollTimeout) -> Vec<Source> {
        match poll(&mut self.fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => error!("poll failed: {e}"),
        }
        self.sources
            .into_iter()
            .zip(&self.fds)
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(source, _)| source)
            .collect()
    }
}

impl Supervisor {
    /// Blocks until a signal, a request, timer output, or the deadline;
    /// then handles what came.
    pub(super) fn wait(&mut self, timeout: Option<Duration>) {
        let timeout = match timeout {
            // Round up so the deadline has passed when poll returns.
            Some(d) => {
                PollTimeout::try_from(d.as_millis().saturating_add(1)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        // The mount table, while a service waits for a mount: the kernel
        // marks it readable with POLLPRI when it changes.
        let blocked = self
            .services
            .iter()
            .any(|s| matches!(s.life.state, State::Blocked { .. }));
        if blocked && self.mounts.is_none() {
            self.mounts = std::fs::File::open("/proc/self/mountinfo").ok();
        } else if !blocked {
            self.mounts = None;
        }
        // Requests already read wait for no descriptor: do not sleep.
        let pending = self
            .control
            .as_ref()
            .map(Server::pending)
            .unwrap_or_default();
        let timeout = if pending.is_empty() {
            timeout
        } else {
            PollTimeout::ZERO
        };
        let mut ready = self.poll_set(Instant::now()).wait(timeout);
        for token in pending {
            if !ready.contains(&Source::Control(token)) {
                ready.push(Source::Control(token));
            }
        }
        self.handle_ready(&ready);
    }

    fn poll_set(&self, now: Instant) -> PollSet<'_> {
        let mut set = PollSet::default();
        set.add(Source::Signals, self.signals.fd(), PollFlags::POLLIN);
        for (token, fd, flags) in self.control.iter().flat_map(Server::poll_set) {
            set.add(Source::Control(token), fd, flags);
        }
        if let Some(m) = &self.mounts {
            set.add(Source::Mounts, m.as_fd(), PollFlags::POLLPRI);
        }
        for (token, fd, flags) in self.http.iter().flat_map(MetricsServer::poll_set) {
            set.add(Source::Http(token), fd, flags);
        }
        if let Some(fd) = self.logs.fd(now) {
            set.add(Source::Logs, fd, PollFlags::POLLIN);
        }
        if let Some(fd) = self.upgrade_pipe() {
            set.add(Source::Upgrade, fd, PollFlags::POLLIN);
        }
        for (i, s) in self.services.iter().enumerate() {
            if let Some((conn, _)) = &s.probe_conn {
                set.add(Source::Probe(i), conn.as_fd(), PollFlags::POLLOUT);
            }
        }
        for (i, t) in self.timers.iter().enumerate() {
            for (gate, out) in [(false, &t.run_output), (true, &t.gate_output)] {
                if let Some(pipe) = &out.pipe {
                    let source = Source::Output { timer: i, gate };
                    set.add(source, pipe.as_fd(), PollFlags::POLLIN);
                }
            }
        }
        set
    }

    /// Handles the ready sources, in an order that matters: the mounts,
    /// the sockets, the logs, then the timers' output, and the signals last
    /// (a run's exit is reaped after its output was read). Each socket
    /// gets a bounded share of the turn (`control::REQUESTS_PER_TURN`,
    /// `READ_PER_TURN`), so however busy they are, the signals are
    /// handled, children reaped and restarts due (`step`) at every turn.
    fn handle_ready(&mut self, ready: &[Source]) {
        if ready.contains(&Source::Mounts) {
            self.mounts_changed();
        }
        // The metrics text once per turn, however many ask for it; at most
        // `ACCEPTS_PER_TURN` connections served (the others stay ready
        // for the next turn).
        let mut text: Option<String> = None;
        let http = ready.iter().filter_map(|s| match s {
            Source::Http(token) => Some(*token),
            _ => None,
        });
        for token in http.take(crate::control::ACCEPTS_PER_TURN) {
            // Out of `self` for the call, so the body can read the snapshot.
            if let Some(mut h) = self.http.take() {
                h.ready(token, Instant::now(), || {
                    text.get_or_insert_with(|| crate::status::metrics::render(&self.snapshot()))
                        .clone()
                });
                self.http = Some(h);
            }
        }
        let control: Vec<Token> = ready
            .iter()
            .filter_map(|s| match s {
                Source::Control(token) => Some(*token),
                _ => None,
            })
            .collect();
        if !control.is_empty() {
            self.serve_control(&control);
        }
        if ready.contains(&Source::Logs) {
            self.logs.check(Instant::now(), self.log_max, self.log_keep);
        }
        for source in ready {
            if let Source::Output { timer, gate } = *source {
                self.read_timer_output(timer, gate);
            }
        }
        if ready.contains(&Source::Upgrade) {
            self.read_upgrade_output();
        }
        for source in ready {
            if let Source::Probe(i) = *source {
                self.probe_connected(i);
            }
        }
        if ready.contains(&Source::Signals) {
            self.signalled();
        }
    }

    /// What the signals since the last turn ask for: reap, reload, stop.
    fn signalled(&mut self) {
        let p = self.signals.take();
        if p.child {
            self.reap();
        }
        if p.reload && !self.stopping {
            info!("SIGHUP: reloading {}", self.config.display());
            match self.reload() {
                Ok(summary) => info!("reloaded: {summary}"),
                Err(e) => error!("reload refused, nothing changed:\n{e}"),
            }
        }
        if p.stop && !self.stopping {
            self.begin_stop();
        }
    }
}
