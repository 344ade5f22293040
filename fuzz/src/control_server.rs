//! The `control_server` target: a real `control::server::Server`, bound
//! in a temporary folder, and up to [`MAX_CONNS`] real clients on its
//! socket, driven by a script of events (connect, write bytes split
//! anywhere, long lines, shut down writing, read some or nothing, hang up,
//! the clock moves, answers held as an upgrade's are). After each event
//! the server runs one turn as the supervisor's loop does
//! (`runtime/supervisor/mod.rs` `step`, `poll.rs` `wait`, `requests.rs`
//! `serve_control`): expire, poll the server's set (without waiting),
//! serve the ready and pending clients with `control::share`, answer each
//! request with a canned response through `respond`.
//!
//! A model of each client says what it must get, and every turn checks:
//! the requests taken are the client's complete lines in order, none
//! twice, none past a line over [`MAX_REQUEST`]; the answers arrive in
//! order, a "request too large" refusal last; no more requests per turn
//! than the shares, no more than [`READ_PER_TURN`] bytes read from one
//! client (the kernel's count of its queue, `FIONREAD`); unsent output
//! within the cap plus one answer; a client leaves only when it has to
//! (idle past its deadline, over the output cap, finished, hung up), and
//! a client that left is in neither `poll_set` nor `pending`. At the end
//! every client still there reads everything and has all its answers.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;
use venussup::control::server::{Access, Server, Token};
use venussup::control::{
    share, Command, Request, Response, IDLE_TIMEOUT, MAX_PENDING_OUTPUT, MAX_REQUEST,
    READ_PER_TURN, TURN_REQUESTS,
};

use crate::script::Cursor;

/// Clients of one script (the server's limits are far above).
pub const MAX_CONNS: usize = 8;
/// How long a held answer keeps its client from idling out, as an
/// upgrade's checks do (`Server::hold`).
const HOLD: Duration = Duration::from_secs(60);
/// Turns of the final phase before the server must have settled.
const SETTLE_TURNS: usize = 2_000;

/// Valid requests a script can send by number.
const REQUESTS: [&str; 5] = [
    r#"{"version":1,"command":"status"}"#,
    r#"{"version": 1, "command": "status", "name": "worker01"}"#,
    r#"{"version":1,"command":"stop","name":"sealer"}"#,
    r#"{"version":1,"command":"metrics"}"#,
    r#"{"version":1,"command":"upgrade"}"#,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connect,
    /// Bytes, written as far as the socket takes them.
    Write(usize, Vec<u8>),
    /// One of [`REQUESTS`], with its newline.
    Request(usize, usize),
    /// `len` bytes of `x`, with a newline or not.
    Long(usize, usize, bool),
    Shutdown(usize),
    /// Reads up to this many bytes; 0: all there is.
    Read(usize, usize),
    HangUp(usize),
    Advance(Duration),
    /// The size of this client's answers from now on.
    AnswerSize(usize, usize),
    /// Answers to this client are held (as an upgrade's), or given.
    Hold(usize),
    Turns(usize),
}

/// The events an input stands for, one opcode byte each and its operands.
pub fn script(data: &[u8]) -> Vec<Event> {
    let mut c = Cursor::new(data);
    let mut events = Vec::new();
    while !c.is_empty() {
        let op = c.u8();
        let client = usize::from(c.u8()) % MAX_CONNS;
        events.push(match op % 11 {
            0 => Event::Connect,
            1 => {
                let n = usize::from(c.u16());
                Event::Write(client, c.take(n).to_vec())
            }
            2 => Event::Request(client, usize::from(c.u8()) % REQUESTS.len()),
            3 => Event::Long(client, c.u24() % 300_000, c.u8() % 2 == 1),
            4 => Event::Shutdown(client),
            5 => Event::Read(client, usize::from(c.u16()) * 16),
            6 => Event::HangUp(client),
            7 => Event::Advance(Duration::from_millis(u64::from(c.u16()))),
            8 => Event::AnswerSize(client, usize::from(c.u16()) * 32),
            9 => Event::Hold(client),
            _ => Event::Turns(usize::from(c.u8() % 8)),
        });
    }
    events
}

/// Why the server let a client go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    Idle,
    OverCap,
    Finished,
    HungUp,
}

#[derive(Debug, Default)]
struct Conn {
    stream: Option<UnixStream>,
    id: Option<u64>,
    /// What the socket took from this client.
    sent: Vec<u8>,
    /// `sent[..scanned]` is cut into `expected`.
    scanned: usize,
    /// The requests of the complete lines sent, in order.
    expected: Vec<Result<Request, String>>,
    /// A line past [`MAX_REQUEST`] was sent: nothing after it is taken.
    over_limit: bool,
    shut: bool,
    hung_up: bool,
    /// Requests the server handed over, answered, held.
    taken: usize,
    answered: usize,
    held: VecDeque<usize>,
    holding: bool,
    answer_size: usize,
    largest_answer: usize,
    /// Read and not a whole line yet; whole answers read; the refusal.
    received: Vec<u8>,
    got: usize,
    refused: bool,
    eof: bool,
    /// The idle deadline the server must keep, on the script's clock.
    deadline: Duration,
    /// What a held answer keeps it until: a floor the idle deadline never
    /// goes below (`Server::hold`).
    held_until: Duration,
    gone: Option<Gone>,
}

impl Conn {
    /// Cuts what was sent into requests, as far as it is complete.
    fn scan(&mut self) {
        while !self.over_limit {
            let rest = &self.sent[self.scanned..];
            let Some(pos) = rest.iter().position(|b| *b == b'\n') else {
                self.over_limit = rest.len() > MAX_REQUEST;
                return;
            };
            if pos > MAX_REQUEST {
                self.over_limit = true;
                return;
            }
            let line = rest[..pos].trim_ascii();
            if !line.is_empty() {
                self.expected.push(Request::parse(line));
            }
            self.scanned += pos + 1;
        }
    }

    /// Whether the server may close it as done: every line it will take
    /// is taken and answered, and it sent its last (EOF, a too long line).
    fn may_finish(&self) -> bool {
        self.answered == self.taken
            && self.taken == self.expected.len()
            && (self.over_limit || self.shut || self.hung_up)
    }

    /// Checks the answers read so far, line by line.
    fn check_received(&mut self) {
        while let Some(pos) = self.received.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.received.drain(..=pos).collect();
            assert!(!self.refused, "an answer after the refusal");
            let r: Response = serde_json::from_slice(&line).expect("an answer is JSON");
            if r.ok {
                let k = r.result.as_ref().and_then(|v| v["k"].as_u64());
                assert_eq!(k, Some(self.got as u64), "answers in order");
                self.got += 1;
                assert!(self.got <= self.answered, "an answer never given");
            } else {
                let error = r.error.unwrap_or_default();
                assert!(
                    error.contains("request too large") && self.over_limit,
                    "refused without a line over the limit: {error}"
                );
                assert_eq!(self.got, self.taken, "the refusal before an answer");
                self.refused = true;
            }
        }
    }

    /// At EOF: the server closed it; what it got must fit why.
    fn check_eof(&self) {
        match self.gone {
            Some(Gone::Finished) => {
                assert!(self.received.is_empty(), "a partial answer at EOF");
                assert_eq!(self.got, self.expected.len(), "finished, answers missing");
                assert_eq!(self.refused, self.over_limit, "refusal iff too long");
            }
            // Cut off, maybe in the middle of an answer.
            Some(Gone::Idle | Gone::OverCap | Gone::HungUp) => {}
            None => panic!("EOF from a server that still holds the client"),
        }
    }
}

/// The answer to request `k` of a client, about `size` bytes.
fn answer(k: usize, size: usize) -> Response {
    Response::ok(json!({ "k": k, "pad": "p".repeat(size) }))
}

/// Bytes queued to be read on `fd` (FIONREAD).
pub fn queued(fd: BorrowedFd<'_>) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points
    // at `n`, alive for the call; `fd` is open for as long as it is borrowed.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD: {}", io::Error::last_os_error());
    usize::try_from(n).unwrap_or(0)
}

/// One script's server, clients and clock.
pub struct Harness {
    server: Server,
    path: PathBuf,
    conns: Vec<Conn>,
    /// Connections not accepted yet, in the order they connected.
    backlog: VecDeque<usize>,
    start: Instant,
    clock: Duration,
    /// Bytes moved, requests taken: the final phase runs until this stops.
    progress: usize,
}

impl Harness {
    pub fn new() -> Self {
        crate::ignore_sigpipe();
        static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
        let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder"));
        let path = dir.path().join("control.sock");
        let server = Server::bind(&path, Access::default()).expect("the server binds");
        Self {
            server,
            path,
            conns: Vec::new(),
            backlog: VecDeque::new(),
            start: Instant::now(),
            clock: Duration::ZERO,
            progress: 0,
        }
    }

    fn now(&self) -> Instant {
        self.start + self.clock
    }

    /// The connection a script's client number means, if it has a socket.
    fn conn(&mut self, n: usize) -> Option<&mut Conn> {
        let len = self.conns.len();
        let c = self.conns.get_mut(n % len.max(1))?;
        c.stream.is_some().then_some(c)
    }

    pub fn run(&mut self, events: &[Event]) {
        for e in events {
            self.event(e);
            self.turn();
        }
        self.settle();
    }

    fn event(&mut self, e: &Event) {
        match e {
            Event::Connect if self.conns.len() < MAX_CONNS => {
                let s = UnixStream::connect(&self.path).expect("connect");
                s.set_nonblocking(true).expect("non-blocking");
                self.backlog.push_back(self.conns.len());
                self.conns.push(Conn {
                    stream: Some(s),
                    ..Conn::default()
                });
            }
            Event::Connect => {}
            Event::Write(n, bytes) => self.write(*n, bytes),
            Event::Request(n, which) => {
                self.write(*n, format!("{}\n", REQUESTS[*which]).as_bytes())
            }
            Event::Long(n, len, newline) => {
                let mut line = vec![b'x'; *len];
                if *newline {
                    line.push(b'\n');
                }
                self.write(*n, &line);
            }
            Event::Shutdown(n) => {
                if let Some(c) = self.conn(*n) {
                    if let Some(s) = &c.stream {
                        s.shutdown(Shutdown::Write).expect("shutdown");
                    }
                    c.shut = true;
                }
            }
            Event::Read(n, max) => self.read(*n, *max),
            Event::HangUp(n) => {
                if let Some(c) = self.conn(*n) {
                    c.stream = None;
                    c.hung_up = true;
                }
            }
            Event::Advance(d) => self.clock += *d,
            Event::AnswerSize(n, size) => {
                if let Some(c) = self.conn(*n) {
                    c.answer_size = *size;
                }
            }
            Event::Hold(n) => {
                let i = n % self.conns.len().max(1);
                if let Some(c) = self.conns.get_mut(i) {
                    c.holding = !c.holding;
                    if !c.holding {
                        self.release(i);
                    }
                }
            }
            Event::Turns(k) => {
                for _ in 0..*k {
                    self.turn();
                }
            }
        }
    }

    fn write(&mut self, n: usize, bytes: &[u8]) {
        let Some(c) = self.conn(n) else { return };
        if c.shut {
            return;
        }
        let Some(s) = c.stream.as_ref() else {
            return;
        };
        let took = crate::client_write(s, bytes);
        c.sent.extend_from_slice(&bytes[..took]);
        c.scan();
    }

    /// Reads up to `max` bytes (0: all there is) and checks them.
    fn read(&mut self, n: usize, max: usize) {
        let Some(c) = self.conn(n) else { return };
        if c.eof {
            return;
        }
        let mut buf = [0u8; 64 * 1024];
        let mut got = 0;
        let mut moved = 0;
        while max == 0 || got < max {
            let want = if max == 0 {
                buf.len()
            } else {
                (max - got).min(buf.len())
            };
            let Some(mut s) = c.stream.as_ref() else {
                return;
            };
            match s.read(&mut buf[..want]) {
                Ok(0) => {
                    c.eof = true;
                    c.check_received();
                    c.check_eof();
                    break;
                }
                Ok(k) => {
                    c.received.extend_from_slice(&buf[..k]);
                    got += k;
                    moved += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Closed with input unread: the same as EOF.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    c.eof = true;
                    c.check_received();
                    c.check_eof();
                    break;
                }
                Err(e) => panic!("client read: {e}"),
            }
        }
        c.check_received();
        self.progress += moved;
    }

    /// Gives the held answers of connection `i`, in order.
    fn release(&mut self, i: usize) {
        while let Some(k) = self.conns[i].held.pop_front() {
            self.respond(i, k);
        }
    }

    /// Answers request `k` of connection `i` through `respond`.
    fn respond(&mut self, i: usize, k: usize) {
        let c = &mut self.conns[i];
        let (Some(id), None) = (c.id, c.gone) else {
            c.answered += 1;
            return;
        };
        let response = answer(k, c.answer_size);
        let len = response.to_line().len();
        c.largest_answer = c.largest_answer.max(len);
        let before = self.server.unsent(id).expect("a client the model holds");
        self.server.respond(id, &response);
        let c = &mut self.conns[i];
        c.answered += 1;
        match self.server.unsent(id) {
            Some(unsent) => assert!(
                unsent <= MAX_PENDING_OUTPUT + c.largest_answer.max(256),
                "{unsent} bytes unsent, over the cap plus one answer"
            ),
            None if before > 0 && before + len > MAX_PENDING_OUTPUT => c.gone = Some(Gone::OverCap),
            None if c.hung_up => c.gone = Some(Gone::HungUp),
            None => {
                assert!(
                    c.may_finish(),
                    "dropped after an answer for no reason: {c:?}"
                );
                c.gone = Some(Gone::Finished);
            }
        }
    }

    /// Connection of server client `id`.
    fn index(&self, id: u64) -> usize {
        self.conns
            .iter()
            .position(|c| c.id == Some(id))
            .expect("every client id belongs to a connection")
    }

    /// One turn of the supervisor's loop, and the checks.
    fn turn(&mut self) {
        let now = self.now();
        self.server.expire(now);
        for c in &mut self.conns {
            let (Some(id), None) = (c.id, c.gone) else {
                continue;
            };
            let expired = c.deadline.max(c.held_until) <= self.clock;
            assert_eq!(
                self.server.unsent(id).is_none(),
                expired,
                "expiry at its deadline"
            );
            if expired {
                c.gone = Some(Gone::Idle);
            }
        }
        let pending = self.server.pending();
        let (mut ready, queues) = self.poll(&pending);
        for t in pending {
            if !ready.contains(&t) {
                ready.push(t);
            }
        }
        let clients = ready
            .iter()
            .filter(|t| matches!(t, Token::Client(_)))
            .count();
        let share = share(clients);
        let mut total = 0;
        for token in ready {
            let Token::Client(id) = token else {
                let first = self.server.next_id();
                self.server.ready(token, now, share);
                for id in first..self.server.next_id() {
                    let i = self.backlog.pop_front().expect("accepted what connected");
                    self.conns[i].id = Some(id);
                    self.conns[i].deadline = self.clock + IDLE_TIMEOUT;
                }
                continue;
            };
            let requests = self.server.ready(token, now, share);
            assert!(
                requests.len() <= share,
                "{} requests over the share {share}",
                requests.len()
            );
            total += requests.len();
            let i = self.index(id);
            let before = queues.iter().find(|(q, _)| *q == id).map(|(_, n)| *n);
            if let (Some(before), Some(after)) = (before, self.queued(id)) {
                let read = before - after;
                assert!(read <= READ_PER_TURN, "{read} bytes read in one turn");
                if read > 0 {
                    self.conns[i].deadline = self.clock + IDLE_TIMEOUT;
                }
                self.progress += read;
            }
            self.take(i, requests);
        }
        assert!(
            total <= TURN_REQUESTS.max(clients),
            "{total} requests in one turn"
        );
        for c in &self.conns {
            if let Some(id) = c.id {
                assert_eq!(c.gone.is_none(), self.server.unsent(id).is_some(), "{c:?}");
            }
        }
    }

    /// Checks the requests the server took from connection `i` and answers
    /// or holds them.
    fn take(&mut self, i: usize, requests: Vec<(u64, Result<Request, String>)>) {
        let now = self.now();
        let c = &mut self.conns[i];
        let id = c.id.expect("an accepted client");
        if !requests.is_empty() {
            c.deadline = self.clock + IDLE_TIMEOUT;
            self.progress += requests.len();
        }
        let mut ks = Vec::new();
        for (from, request) in requests {
            assert_eq!(from, id, "a request of another client");
            let k = c.taken;
            let expected = c.expected.get(k).unwrap_or_else(|| {
                panic!(
                    "request {k} taken, but only {} complete lines under the limit were sent",
                    c.expected.len()
                )
            });
            assert_eq!(&request, expected, "request {k} is the line sent");
            c.taken += 1;
            let upgrade = matches!(
                request,
                Ok(Request {
                    command: Command::Upgrade { .. },
                    ..
                })
            );
            if upgrade || c.holding {
                c.holding = true;
                self.server.hold(id, now + HOLD);
                c.held_until = c.held_until.max(self.clock + HOLD);
                c.held.push_back(k);
            } else {
                ks.push(k);
            }
        }
        if self.server.unsent(id).is_none() && self.conns[i].gone.is_none() {
            let c = &mut self.conns[i];
            if c.hung_up {
                c.gone = Some(Gone::HungUp);
                return;
            }
            assert!(c.may_finish(), "dropped while reading for no reason: {c:?}");
            c.gone = Some(Gone::Finished);
        }
        for k in ks {
            self.respond(i, k);
        }
    }

    /// The queued input of server client `id`, if it is polled.
    fn queued(&self, id: u64) -> Option<usize> {
        self.server
            .poll_set()
            .into_iter()
            .find(|(t, _, _)| *t == Token::Client(id))
            .map(|(_, fd, _)| queued(fd))
    }

    /// Polls the server's set without waiting, as the loop's `wait` does
    /// (whose timeout is 0 with requests pending), after checking it: the
    /// ready tokens, and each client's queued input.
    fn poll(&self, pending: &[Token]) -> (Vec<Token>, Vec<(u64, usize)>) {
        let set = self.server.poll_set();
        for t in pending {
            let Token::Client(id) = t else {
                panic!("the listener pending")
            };
            assert!(
                self.conns[self.index(*id)].gone.is_none(),
                "a client that left is pending"
            );
        }
        let mut queues = Vec::new();
        for (t, fd, flags) in &set {
            let Token::Client(id) = t else { continue };
            let c = &self.conns[self.index(*id)];
            assert!(c.gone.is_none(), "a client that left is polled");
            // One with nothing to wait for (EOF and an answer owed) is left
            // out: a hung-up socket polled with no flags reports POLLHUP
            // at every poll, and the loop would spin.
            assert!(!flags.is_empty(), "client {id} polled with no flags: {c:?}");
            queues.push((*id, queued(*fd)));
        }
        let ready = crate::ready_now(&set);
        (ready, queues)
    }

    /// Answers what was held, then turns with every client reading (and
    /// what an `upgrade` holds answered) until nothing moves; then every
    /// client the server still holds has all its answers.
    fn settle(&mut self) {
        for i in 0..self.conns.len() {
            self.conns[i].holding = false;
            self.release(i);
        }
        let mut still = 0;
        for _ in 0..SETTLE_TURNS {
            let before = self.progress;
            self.turn();
            // An `upgrade` among the lines still to be taken holds what
            // follows it again: its answer comes too.
            for i in 0..self.conns.len() {
                self.conns[i].holding = false;
                self.release(i);
            }
            for n in 0..self.conns.len() {
                self.read(n, 0);
            }
            still = if self.progress == before {
                still + 1
            } else {
                0
            };
            if still == 3 {
                break;
            }
        }
        assert_eq!(still, 3, "still moving after {SETTLE_TURNS} turns");
        for c in &self.conns {
            if c.gone.is_none() && c.stream.is_some() && c.id.is_some() {
                assert!(
                    !c.over_limit,
                    "a too long line, and the client is kept: {c:?}"
                );
                assert_eq!(c.got, c.expected.len(), "answers missing: {c:?}");
            }
        }
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
