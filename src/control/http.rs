//! The optional Prometheus listener: `GET /metrics` over plain HTTP/1.1,
//! one response per connection (`HEAD /metrics`: its head). Non-blocking
//! and bounded like the control socket: a request head is at most
//! [`MAX_HEAD`] bytes and must arrive within [`IDLE_TIMEOUT`]; anything but
//! `GET`/`HEAD /metrics` gets 404 or 405. At most [`MAX_CLIENTS`]
//! connections, [`MAX_PER_PEER`] of them per local uid or remote address
//! ([`super::peer`]): 600 connections of one local user leave room for
//! Prometheus. Past the limits a connection is answered 503 and closed.
//! After an answer the write side is shut down and what the peer still
//! sends is dropped until its EOF (a lingering close, within the same
//! deadline): closing with input unread would reset the connection and
//! lose the end of a large answer.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use serde::{Deserialize, Serialize};

use super::peer::{self, PeerKey};
use super::{ACCEPTS_PER_TURN, IDLE_TIMEOUT, MAX_CLIENTS};
use crate::sys::reexec::HandedFd;
use crate::util::clock::after;

pub const MAX_HEAD: usize = 8 * 1024;
/// Connections at once from one local uid, or one remote address.
pub const MAX_PER_PEER: usize = 32;

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    peer: PeerKey,
    input: Vec<u8>,
    output: Vec<u8>,
    deadline: Instant,
    answered: bool,
    /// The answer is sent and the write side shut down: what the peer
    /// still sends is read and dropped until its EOF (or the deadline).
    lingering: bool,
}

/// An open connection as the daemon hands it to the next image of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    pub fd: HandedFd,
    #[serde(default)]
    pub input: Vec<u8>,
    #[serde(default)]
    pub output: Vec<u8>,
    #[serde(default)]
    pub answered: bool,
    #[serde(default)]
    pub idle_left_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpToken {
    Listener,
    Conn(u64),
}

#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    conns: HashMap<u64, Conn>,
    next: u64,
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// The request line's method, target and version: its first three
/// words, split at ASCII whitespace (pure). `route` and `head_only` both
/// read the method here, so a `HEAD` routed as one is answered as one.
fn request_line(head: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty());
    Some((words.next()?, words.next()?, words.next()?))
}

/// Routes a complete request head (pure).
pub fn route(head: &[u8]) -> Route {
    match request_line(head) {
        Some((method, target, version)) if version.starts_with(b"HTTP/") => {
            let path = target.split(|b| *b == b'?').next().unwrap_or(target);
            match (method, path) {
                (b"GET" | b"HEAD", b"/metrics") => Route::Metrics,
                (b"GET" | b"HEAD", _) => Route::NotFound,
                _ => Route::MethodNotAllowed,
            }
        }
        _ => Route::BadRequest,
    }
}

/// Where the request head ends: after its first empty line (pure).
fn head_len(input: &[u8]) -> Option<usize> {
    let crlf = input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    let lf = input.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    crlf.into_iter().chain(lf).min()
}

/// Reads what `from` has onto `input`, up to one byte past [`MAX_HEAD`]
/// (what follows a complete head is read too, as far as that, so that
/// closing after the answer does not reset the connection); `true` when
/// the peer has sent all it will (EOF, or an error).
fn read_head(mut from: impl Read, input: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    while input.len() <= MAX_HEAD {
        let want = buf.len().min(MAX_HEAD + 1 - input.len());
        match from.read(&mut buf[..want]) {
            Ok(0) => return true,
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() != io::ErrorKind::WouldBlock,
        }
    }
    false
}

/// Reads and drops what the peer sent after its head, at most
/// [`MAX_HEAD`] bytes a turn; `true` at its EOF (or an error): then the
/// connection can close without a reset, which would throw away the end
/// of the answer still in the send queue (a large metrics text).
fn discard_unread(mut from: impl Read) -> bool {
    let mut buf = [0u8; 4096];
    let mut left = MAX_HEAD;
    while left > 0 {
        match from.read(&mut buf[..left.min(4096)]) {
            Ok(0) => return true,
            Ok(n) => left -= n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() != io::ErrorKind::WouldBlock,
        }
    }
    false
}

/// The answer to what a connection sent, once that is a complete head or
/// too long for one; `metrics` renders the body when it is asked for.
fn answer(input: &[u8], metrics: impl FnOnce() -> String) -> Option<Vec<u8>> {
    let head = match head_len(input) {
        Some(end) if end <= MAX_HEAD => &input[..end],
        _ if input.len() > MAX_HEAD => {
            return Some(response(
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
            ))
        }
        _ => return None,
    };
    let answer = match route(head) {
        Route::Metrics => response("200 OK", METRICS_TYPE, &metrics()),
        Route::NotFound => response(
            "404 Not Found",
            "text/plain",
            "only /metrics is served here\n",
        ),
        Route::MethodNotAllowed => response(
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD /metrics\n",
        ),
        Route::BadRequest => response("400 Bad Request", "text/plain", "not an HTTP request\n"),
    };
    Some(head_only(head, answer))
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer to a `HEAD` request is the head of the `GET` one (pure).
fn head_only(request: &[u8], mut answer: Vec<u8>) -> Vec<u8> {
    if request_line(request).is_some_and(|(method, _, _)| method == b"HEAD") {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            answer.truncate(end + 4);
        }
    }
    answer
}

const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl MetricsServer {
    pub fn bind(addr: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            conns: HashMap::new(),
            next: 0,
        })
    }

    /// A server on a listener the previous image of the daemon bound, with
    /// its open connections.
    pub fn adopt(
        listener: TcpListener,
        conns: Vec<(ConnRecord, TcpStream)>,
        now: Instant,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut server = Self {
            listener,
            conns: HashMap::new(),
            next: 0,
        };
        for (r, stream) in conns {
            stream.set_nonblocking(true)?;
            let Ok(peer) = peer::key_of(&stream) else {
                continue; // the peer is gone: nothing to answer
            };
            server.conns.insert(
                server.next,
                Conn {
                    stream,
                    peer,
                    input: r.input,
                    output: r.output,
                    deadline: after(now, Duration::from_millis(r.idle_left_ms)),
                    answered: r.answered,
                    lingering: false,
                },
            );
            server.next += 1;
        }
        Ok(server)
    }

    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The open connections, to hand over.
    pub fn records(&self, now: Instant) -> Vec<ConnRecord> {
        self.conns
            .values()
            .filter_map(|c| {
                Some(ConnRecord {
                    fd: HandedFd::of(c.stream.as_fd()).ok()?,
                    input: c.input.clone(),
                    output: c.output.clone(),
                    answered: c.answered,
                    idle_left_ms: super::idle_left_ms(c.deadline, now),
                })
            })
            .collect()
    }

    pub fn poll_set(&self) -> Vec<(HttpToken, BorrowedFd<'_>, PollFlags)> {
        let mut v = vec![(
            HttpToken::Listener,
            self.listener.as_fd(),
            PollFlags::POLLIN,
        )];
        for (id, c) in &self.conns {
            let flags = if c.answered && !c.lingering {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            v.push((HttpToken::Conn(*id), c.stream.as_fd(), flags));
        }
        v
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.conns.values().map(|c| c.deadline).min()
    }

    pub fn expire(&mut self, now: Instant) {
        self.conns.retain(|_, c| c.deadline > now);
    }

    /// Handles readiness; `metrics` renders the body when it is asked for.
    pub fn ready(&mut self, token: HttpToken, now: Instant, metrics: impl FnOnce() -> String) {
        match token {
            HttpToken::Listener => self.accept(now),
            HttpToken::Conn(id) => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                if c.lingering {
                    if discard_unread(&c.stream) {
                        self.conns.remove(&id);
                    }
                    return;
                }
                if !c.answered {
                    // A head sent with EOF right after it is answered still.
                    let eof = read_head(&mut c.stream, &mut c.input);
                    let Some(answer) = answer(&c.input, metrics) else {
                        if eof {
                            self.conns.remove(&id);
                        }
                        return;
                    };
                    c.output = answer;
                    c.answered = true;
                }
                loop {
                    match c.stream.write(&c.output) {
                        Ok(0) => break,
                        Ok(n) => {
                            c.output.drain(..n);
                            if c.output.is_empty() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                // Closing with input unread would reset the connection, and
                // a reset throws away the end of the answer still queued:
                // shut down writing (a FIN after the answer), then drop
                // what the peer sends until its EOF.
                if c.output.is_empty() && c.stream.shutdown(Shutdown::Write).is_ok() {
                    c.lingering = true;
                    if !discard_unread(&c.stream) {
                        return;
                    }
                }
                self.conns.remove(&id);
            }
        }
    }

    /// Accepts up to [`ACCEPTS_PER_TURN`] connections; one past the
    /// limits is answered 503 and closed.
    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_TURN {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let _ = stream.set_nonblocking(true);
            let Ok(peer) = peer::key_of(&stream) else {
                continue; // gone already
            };
            let same = self.conns.values().filter(|c| c.peer == peer).count();
            if self.conns.len() >= MAX_CLIENTS || same >= MAX_PER_PEER {
                tracing::debug!("metrics connection from {peer} refused: {same} open");
                // One short answer into an empty socket buffer, then closed.
                let _ = (&stream).write(&response(
                    "503 Service Unavailable",
                    "text/plain",
                    "too many connections\n",
                ));
                continue;
            }
            self.conns.insert(
                self.next,
                Conn {
                    stream,
                    peer,
                    input: Vec::new(),
                    output: Vec::new(),
                    deadline: after(now, IDLE_TIMEOUT),
                    answered: false,
                    lingering: false,
                },
            );
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_gets_32_connections_and_the_next_a_503() {
        let mut server = MetricsServer::bind("127.0.0.1:0").unwrap();
        let addr = server.listener.local_addr().unwrap();
        let streams: Vec<TcpStream> = (0..MAX_PER_PEER + 1)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        server.ready(HttpToken::Listener, Instant::now(), String::new);
        assert_eq!(server.conns.len(), MAX_PER_PEER);
        let mut last = streams.last().unwrap();
        last.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        last.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }

    #[test]
    fn head_gets_the_head_with_the_body_length() {
        let get = response("200 OK", METRICS_TYPE, "up 1\n");
        let head = head_only(b"HEAD /metrics HTTP/1.1\r\n\r\n", get.clone());
        let text = String::from_utf8(head).unwrap();
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert!(text.contains("Content-Length: 5\r\n"), "{text}");
        assert_eq!(
            head_only(b"GET /metrics HTTP/1.1\r\n\r\n", get.clone()),
            get
        );
    }

    /// Fuzzing found all three (`fuzz/README.md`).
    #[test]
    fn a_head_split_by_any_ascii_blank_is_answered_without_a_body() {
        let get = response("200 OK", METRICS_TYPE, "up 1\n");
        for request in [
            &b"HEAD\t/metrics HTTP/1.1\r\n\r\n"[..],
            b" HEAD /metrics HTTP/1.1\n\n",
        ] {
            assert_eq!(route(request), Route::Metrics);
            let head = head_only(request, get.clone());
            assert!(
                head.ends_with(b"\r\n\r\n"),
                "{}",
                String::from_utf8_lossy(&head)
            );
        }
        // Not ASCII whitespace: one word, not a request line.
        assert_eq!(
            route("GET\u{a0}/metrics HTTP/1.1\r\n\r\n".as_bytes()),
            Route::BadRequest
        );
    }

    #[test]
    fn a_complete_head_is_answered_however_much_follows_it() {
        let head = b"GET /metrics HTTP/1.1\r\n\r\n";
        let mut sent = head.to_vec();
        sent.extend(vec![b'b'; 2 * MAX_HEAD]);
        let mut input = Vec::new();
        assert!(!read_head(io::Cursor::new(&sent), &mut input));
        assert_eq!(input.len(), MAX_HEAD + 1);
        assert!(answer(&input, || "up 1\n".into())
            .unwrap()
            .starts_with(b"HTTP/1.1 200 "));
        // Without an end: one byte past the limit, then 431.
        let mut input = Vec::new();
        read_head(io::Cursor::new(vec![b'a'; 3 * MAX_HEAD]), &mut input);
        assert_eq!(input.len(), MAX_HEAD + 1);
        assert!(answer(&input, String::new)
            .unwrap()
            .starts_with(b"HTTP/1.1 431 "));
    }

    #[test]
    fn a_head_followed_by_eof_is_answered() {
        let mut server = MetricsServer::bind("127.0.0.1:0").unwrap();
        let addr = server.listener.local_addr().unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        server.ready(HttpToken::Listener, Instant::now(), String::new);
        let id = *server.conns.keys().next().expect("accepted");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        // The EOF is there before the server reads: once, or a turn later.
        for _ in 0..2 {
            server.ready(HttpToken::Conn(id), Instant::now(), || "up 1\n".into());
        }
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nup 1\n"), "{answer}");
    }

    #[test]
    fn a_large_answer_arrives_whole_though_the_client_sent_more_after_its_head() {
        let mut server = MetricsServer::bind("127.0.0.1:0").unwrap();
        let addr = server.listener.local_addr().unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        server.ready(HttpToken::Listener, Instant::now(), String::new);
        let id = *server.conns.keys().next().expect("accepted");
        let body = "m".repeat(8 << 20);
        // Reads the head, answers: the socket takes a part of the answer.
        server.ready(HttpToken::Conn(id), Instant::now(), || body.clone());
        s.write_all(&[b'b'; 100]).unwrap();
        let reader = std::thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got)
                .map(|_| got.len())
                .map_err(|e| e.kind())
        });
        for _ in 0..10_000 {
            if server.conns.is_empty() {
                break;
            }
            {
                let set = server.poll_set();
                let mut fds: Vec<nix::poll::PollFd<'_>> = set
                    .iter()
                    .map(|(_, fd, flags)| nix::poll::PollFd::new(*fd, *flags))
                    .collect();
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).unwrap();
            }
            server.ready(HttpToken::Conn(id), Instant::now(), String::new);
        }
        let got = reader.join().unwrap().expect("a FIN, not a reset");
        assert!(got > body.len(), "{got} bytes");
        // The reader's EOF closed it: the server sees that and closes too.
        server.ready(HttpToken::Conn(id), Instant::now(), String::new);
        assert!(server.conns.is_empty(), "closed after the peer's EOF");
    }

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"HEAD /x HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"\x00\x01garbage\r\n\r\n"), Route::BadRequest);
    }
}
