//! The optional Prometheus listener: `GET /metrics` over plain HTTP/1.1,
//! one response per connection (`HEAD /metrics`: its head). Non-blocking
//! and bounded like the control socket: a request head is at most
//! [`MAX_HEAD`] bytes and must arrive within [`IDLE_TIMEOUT`]; anything but
//! `GET`/`HEAD /metrics` gets 404 or 405. At most [`MAX_CLIENTS`]
//! connections, [`MAX_PER_PEER`] of them per local uid or remote address
//! ([`super::peer`]): 600 connections of one local user leave room for
//! Prometheus. Past the limits a connection is answered 503 and closed.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
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

/// Routes a complete request head (pure).
pub fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(path), Some(v)) if v.starts_with("HTTP/") => {
            let path = path.split('?').next().unwrap_or(path);
            match (method, path) {
                ("GET" | "HEAD", "/metrics") => Route::Metrics,
                ("GET" | "HEAD", _) => Route::NotFound,
                _ => Route::MethodNotAllowed,
            }
        }
        _ => Route::BadRequest,
    }
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
    if request.starts_with(b"HEAD ") {
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
            let flags = if c.answered {
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
                if !c.answered {
                    let mut buf = [0u8; 4096];
                    loop {
                        match c.stream.read(&mut buf) {
                            Ok(0) => {
                                self.conns.remove(&id);
                                return;
                            }
                            Ok(n) => c.input.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                        if c.input.len() > MAX_HEAD {
                            break;
                        }
                    }
                    let complete = c.input.windows(4).any(|w| w == b"\r\n\r\n")
                        || c.input.windows(2).any(|w| w == b"\n\n");
                    if c.input.len() > MAX_HEAD {
                        c.output = response(
                            "431 Request Header Fields Too Large",
                            "text/plain",
                            "request too large\n",
                        );
                    } else if complete {
                        let answer = match route(&c.input) {
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
                            Route::BadRequest => {
                                response("400 Bad Request", "text/plain", "not an HTTP request\n")
                            }
                        };
                        c.output = head_only(&c.input, answer);
                    } else {
                        return;
                    }
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
