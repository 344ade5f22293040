//! The `metrics_http` target: a real `control::http::MetricsServer` on a
//! loopback port and up to [`MAX_CONNS`] real TCP clients, driven by a
//! script of events (connect, write bytes split anywhere, canned request
//! heads, shut down writing, read some or nothing, hang up, the clock
//! moves, the metrics text's size), each followed by one turn as the
//! supervisor's loop runs the listener (`runtime/supervisor/mod.rs`
//! `step`, `poll.rs` `wait` and `handle_ready`: expire, poll without
//! waiting, at most `ACCEPTS_PER_TURN` ready descriptors served, the
//! metrics text rendered once per turn).
//!
//! The oracle reads what each client sent as HTTP/1.1 does (RFC 9112: the
//! head ends at the first empty line; the request line is method, target
//! and version, split at ASCII whitespace): a complete head within
//! [`MAX_HEAD`] bytes gets exactly one response, the one its request line
//! asks for (200 for `GET`/`HEAD /metrics`, 404 other paths, 405 other
//! methods, 400 not HTTP), even when more bytes follow it or the client
//! shuts down writing after it; a `HEAD` gets no body and the `GET`'s
//! `Content-Length`; more than [`MAX_HEAD`] bytes without an end get 431;
//! a 503 only past [`MAX_PER_PEER`] connections; then the connection
//! closes. Clients past their idle deadline may be cut anywhere.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use venussup::control::http::{HttpToken, MetricsServer, MAX_HEAD, MAX_PER_PEER};
use venussup::control::{ACCEPTS_PER_TURN, IDLE_TIMEOUT};

use crate::ignore_sigpipe;
use crate::script::Cursor;

/// Clients of one script: enough to pass the per-peer limit.
pub const MAX_CONNS: usize = MAX_PER_PEER + 4;
const SETTLE_TURNS: usize = 500;

const HEADS: [&str; 7] = [
    "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "HEAD /metrics HTTP/1.1\r\n\r\n",
    "GET /metrics?x=1 HTTP/1.0\n\n",
    "GET / HTTP/1.1\r\n\r\n",
    "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    "HEAD /nothing HTTP/1.1\r\n\r\n",
    "hello\r\n\r\n",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connect,
    Write(usize, Vec<u8>),
    /// One of [`HEADS`]; then shuts down writing, before the server's turn.
    Head(usize, usize, bool),
    Shutdown(usize),
    /// Reads up to this many bytes; 0: all there is.
    Read(usize, usize),
    HangUp(usize),
    Advance(Duration),
    BodySize(usize),
    Turns(usize),
}

pub fn script(data: &[u8]) -> Vec<Event> {
    let mut c = Cursor::new(data);
    let mut events = Vec::new();
    while !c.is_empty() {
        let op = c.u8();
        let client = usize::from(c.u8()) % MAX_CONNS;
        events.push(match op % 9 {
            0 => Event::Connect,
            1 => {
                let n = usize::from(c.u16());
                Event::Write(client, c.take(n).to_vec())
            }
            2 => {
                let b = c.u8();
                Event::Head(client, usize::from(b & 0x7f) % HEADS.len(), b & 0x80 != 0)
            }
            3 => Event::Shutdown(client),
            4 => Event::Read(client, usize::from(c.u16())),
            5 => Event::HangUp(client),
            6 => Event::Advance(Duration::from_millis(u64::from(c.u16()))),
            7 => Event::BodySize(usize::from(c.u16()) * 64),
            _ => Event::Turns(usize::from(c.u8() % 8)),
        });
    }
    events
}

/// What a request head must be answered with (the oracle): the status
/// code, and whether it is a `HEAD`.
fn expected(head: &[u8]) -> (u16, bool) {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty());
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return (400, false);
    };
    // A request line with a `HEAD` gets no body, a 400 included.
    let head = method == b"HEAD";
    if !version.starts_with(b"HTTP/") {
        return (400, head);
    }
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let status = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => 200,
        (b"GET" | b"HEAD", _) => 404,
        _ => 405,
    };
    (status, head)
}

/// Where the head ends in what was sent: after its first empty line.
fn head_end(sent: &[u8]) -> Option<usize> {
    let crlf = sent
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    let lf = sent.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    crlf.into_iter().chain(lf).min()
}

#[derive(Debug, Default)]
struct Conn {
    stream: Option<TcpStream>,
    sent: Vec<u8>,
    shut: bool,
    /// Accepted at this time on the script's clock (idle after 5 s).
    accepted: Option<Duration>,
    /// Connections before it that had not seen their end when it came.
    open_before: usize,
    received: Vec<u8>,
    eof: bool,
}

impl Conn {
    fn expired(&self, clock: Duration) -> bool {
        self.accepted.is_some_and(|at| at + IDLE_TIMEOUT <= clock)
    }

    /// What it got, checked against what it sent; `settled`: the server
    /// had every chance to answer.
    fn check(&self, clock: Duration, bodies: &[usize], settled: bool) {
        let got = &self.received;
        let text = String::from_utf8_lossy(got);
        if got.starts_with(b"HTTP/1.1 503") {
            assert!(
                self.open_before >= MAX_PER_PEER,
                "503 with {} open",
                self.open_before
            );
            return;
        }
        let want = match head_end(&self.sent) {
            Some(end) if end <= MAX_HEAD => Some(expected(&self.sent[..end])),
            _ if self.sent.len() > MAX_HEAD => Some((431, false)),
            _ => None,
        };
        let Some((status, head)) = want else {
            assert!(got.is_empty(), "an answer to no complete head: {text:.300}");
            return;
        };
        let response = head_end(got).and_then(|end| {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|n| n.trim().parse().ok())?;
            Some((end, length))
        });
        let complete = response.is_some_and(|(end, length)| got.len() >= end + length || head);
        if self.expired(clock) && !complete {
            return; // cut off anywhere
        }
        if !self.eof {
            assert!(
                !settled,
                "a complete head never answered (want {status}): {text:.300}"
            );
            return; // still being answered
        }
        let (end, length) = response.unwrap_or_else(|| panic!("no complete response: {text:.300}"));
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "want {status}: {text:.300}"
        );
        if head {
            assert_eq!(got.len(), end, "a HEAD answered with a body: {text:.300}");
        } else {
            assert_eq!(
                got.len() - end,
                length,
                "one body, Content-Length long: {text:.300}"
            );
        }
        if status == 200 {
            assert!(
                bodies.contains(&length),
                "{length} bytes: no metrics text was that long"
            );
        }
    }
}

pub struct Harness {
    server: MetricsServer,
    addr: SocketAddr,
    conns: Vec<Conn>,
    /// Connected, not accepted yet, in order.
    backlog: Vec<usize>,
    start: Instant,
    clock: Duration,
    body: String,
    /// The lengths the metrics text has had.
    bodies: Vec<usize>,
}

impl Harness {
    pub fn new() -> Self {
        ignore_sigpipe();
        let server = MetricsServer::bind("127.0.0.1:0").expect("a loopback port");
        let addr = server_addr(&server);
        Self {
            server,
            addr,
            conns: Vec::new(),
            backlog: Vec::new(),
            start: Instant::now(),
            clock: Duration::ZERO,
            body: "up 1\n".into(),
            bodies: vec![5],
        }
    }

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
                let s = TcpStream::connect(self.addr).expect("connect");
                s.set_nonblocking(true).expect("non-blocking");
                // An upper bound of the server's connections before it: it
                // closes one at its client's EOF or hang-up (the turn after),
                // at the deadline, or (lingering after an answer) not before.
                let clock = self.clock;
                let open_before = self
                    .conns
                    .iter()
                    .filter(|c| c.stream.is_some() && !c.expired(clock) && !(c.shut && c.eof))
                    .count();
                self.backlog.push(self.conns.len());
                self.conns.push(Conn {
                    stream: Some(s),
                    open_before,
                    ..Conn::default()
                });
            }
            Event::Connect => {}
            Event::Write(n, bytes) => self.write(*n, bytes),
            Event::Head(n, which, shut) => {
                self.write(*n, HEADS[*which].as_bytes());
                if *shut {
                    self.event(&Event::Shutdown(*n));
                }
            }
            Event::Shutdown(n) => {
                if let Some(c) = self.conn(*n) {
                    if let Some(s) = &c.stream {
                        let _ = s.shutdown(Shutdown::Write);
                    }
                    c.shut = true;
                }
            }
            Event::Read(n, max) => {
                self.read(*n, *max);
            }
            Event::HangUp(n) => {
                if let Some(c) = self.conn(*n) {
                    c.stream = None;
                }
            }
            Event::Advance(d) => self.clock += *d,
            Event::BodySize(n) => {
                self.body = "m".repeat(*n);
                self.bodies.push(*n);
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
    }

    /// Reads up to `max` bytes (0: all there is); the bytes read.
    fn read(&mut self, n: usize, max: usize) -> usize {
        let clock = self.clock;
        let bodies = std::mem::take(&mut self.bodies);
        let got = self.read_conn(n, max, clock, &bodies);
        self.bodies = bodies;
        got
    }

    fn read_conn(&mut self, n: usize, max: usize, clock: Duration, bodies: &[usize]) -> usize {
        let Some(c) = self.conn(n) else { return 0 };
        let mut buf = [0u8; 64 * 1024];
        let mut got = 0;
        while !c.eof && (max == 0 || got < max) {
            let want = if max == 0 {
                buf.len()
            } else {
                (max - got).min(buf.len())
            };
            let Some(mut s) = c.stream.as_ref() else {
                break;
            };
            match s.read(&mut buf[..want]) {
                // Closed, or reset (closed with our bytes unread).
                Ok(0) => c.eof = true,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => c.eof = true,
                Ok(k) => {
                    c.received.extend_from_slice(&buf[..k]);
                    got += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
        if c.eof {
            c.check(clock, bodies, false);
        }
        got
    }

    fn turn(&mut self) {
        let now = self.start + self.clock;
        self.server.expire(now);
        let ready: Vec<HttpToken> = {
            let set = self.server.poll_set();
            let empty = set.iter().any(|(_, _, flags)| flags.is_empty());
            assert!(!empty, "a connection polled with no flags");
            crate::ready_now(&set)
        };
        let mut text: Option<String> = None;
        for token in ready.into_iter().take(ACCEPTS_PER_TURN) {
            if token == HttpToken::Listener {
                for i in self.backlog.drain(..) {
                    self.conns[i].accepted = Some(self.clock);
                }
            }
            let body = &self.body;
            self.server.ready(token, now, || {
                text.get_or_insert_with(|| body.clone()).clone()
            });
        }
    }

    /// Turns with every client reading until nothing moves (waiting up to
    /// 2 ms for a descriptor when it does not); then each client
    /// that did not hang up has what it must.
    fn settle(&mut self) {
        let mut still = 0;
        for _ in 0..SETTLE_TURNS {
            self.turn();
            let mut moved = 0;
            for n in 0..self.conns.len() {
                moved += self.read(n, 0);
            }
            if moved > 0 {
                still = 0;
                continue;
            }
            still += 1;
            if still == 2 {
                break;
            }
            self.wait(Duration::from_millis(2));
        }
        for c in &self.conns {
            if c.stream.is_some() && !c.eof {
                c.check(self.clock, &self.bodies, true);
            }
        }
    }

    /// Waits until a server or client descriptor is ready, at most `d`.
    fn wait(&self, d: Duration) {
        let set = self.server.poll_set();
        let mut fds: Vec<PollFd<'_>> = set.iter().map(|(_, fd, f)| PollFd::new(*fd, *f)).collect();
        for c in &self.conns {
            if let (Some(s), false) = (&c.stream, c.eof) {
                fds.push(PollFd::new(std::os::fd::AsFd::as_fd(s), PollFlags::POLLIN));
            }
        }
        let ms = u16::try_from(d.as_millis()).unwrap_or(u16::MAX);
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }
}

fn server_addr(server: &MetricsServer) -> SocketAddr {
    let fd = server.listener().try_clone_to_owned().expect("dup");
    std::net::TcpListener::from(fd)
        .local_addr()
        .expect("the port")
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
