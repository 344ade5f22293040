//! The daemon's side of the control socket: non-blocking, driven by the
//! supervisor's one `poll`. It accepts, reads lines, enforces the bounds
//! and hands complete requests to the supervisor; a client can never make
//! the loop wait.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Uid, User};
use serde::{Deserialize, Serialize};

use super::{Request, Response, IDLE_TIMEOUT, MAX_CLIENTS, MAX_PENDING_OUTPUT, MAX_REQUEST};
use crate::sys::reexec::HandedFd;
use crate::util::clock::after;

/// Who may use the socket besides root.
#[derive(Debug, Clone, Copy, Default)]
pub struct Access {
    pub group: Option<Gid>,
}

impl Access {
    fn allows(&self, uid: u32, gid: u32) -> bool {
        if uid == 0 || Uid::from_raw(uid) == Uid::effective() {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        if gid == group.as_raw() {
            return true;
        }
        // A supplementary group of the peer's user.
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .and_then(|u| {
                let name = std::ffi::CString::new(u.name).ok()?;
                nix::unistd::getgrouplist(&name, u.gid).ok()
            })
            .is_some_and(|groups| groups.contains(&group))
    }
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    deadline: Instant,
    /// Close once the output is flushed.
    closing: bool,
}

/// A connected client as the daemon hands it to the next image of itself
/// (`venussup upgrade`): its connection, what it sent that was not
/// answered yet, and what was not written to it yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub id: u64,
    pub fd: HandedFd,
    #[serde(default)]
    pub input: Vec<u8>,
    #[serde(default)]
    pub output: Vec<u8>,
    #[serde(default)]
    pub closing: bool,
    /// What was left of its idle timeout.
    #[serde(default)]
    pub idle_left_ms: u64,
}

/// What the poll set needs from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Listener,
    Client(u64),
}

#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    access: Access,
    clients: HashMap<u64, Client>,
    next_id: u64,
}

impl Server {
    /// Binds `path` (a stale socket there is replaced), mode 0600, or 0660
    /// owned by `access.group`.
    pub fn bind(path: &Path, access: Access) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let mode = if access.group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        if let Some(g) = access.group {
            nix::unistd::chown(path, None, Some(g)).map_err(io::Error::from)?;
        }
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            access,
            clients: HashMap::new(),
            next_id: 0,
        })
    }

    /// A server on a listener the previous image of the daemon bound
    /// (inherited across its exec, so no client was refused meanwhile),
    /// with the clients it had.
    pub fn adopt(
        listener: UnixListener,
        path: &Path,
        access: Access,
        clients: Vec<(ClientRecord, UnixStream)>,
        next_id: u64,
        now: Instant,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut server = Self {
            listener,
            path: path.to_path_buf(),
            access,
            clients: HashMap::new(),
            next_id,
        };
        for (r, stream) in clients {
            stream.set_nonblocking(true)?;
            server.next_id = server.next_id.max(r.id + 1);
            server.clients.insert(
                r.id,
                Client {
                    stream,
                    input: r.input,
                    output: r.output,
                    deadline: after(now, Duration::from_millis(r.idle_left_ms)),
                    closing: r.closing,
                },
            );
        }
        Ok(server)
    }

    /// The listening socket.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The connected clients, to hand over; clients whose descriptor
    /// cannot be described are left out (they see the connection close).
    pub fn records(&self, now: Instant) -> Vec<ClientRecord> {
        self.clients
            .iter()
            .filter_map(|(id, c)| {
                Some(ClientRecord {
                    id: *id,
                    fd: HandedFd::of(c.stream.as_fd()).ok()?,
                    input: c.input.clone(),
                    output: c.output.clone(),
                    closing: c.closing,
                    idle_left_ms: super::idle_left_ms(c.deadline, now),
                })
            })
            .collect()
    }

    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Client `id` waits for an answer that takes time (an upgrade's
    /// checks): it is not dropped as idle before `until`.
    pub fn hold(&mut self, id: u64, until: Instant) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.deadline = c.deadline.max(until);
        }
    }

    /// Descriptors to poll, with what to wait for.
    pub fn poll_set(&self) -> Vec<(Token, BorrowedFd<'_>, PollFlags)> {
        let mut v = vec![(Token::Listener, self.listener.as_fd(), PollFlags::POLLIN)];
        for (id, c) in &self.clients {
            let mut flags = PollFlags::empty();
            if !c.closing {
                flags |= PollFlags::POLLIN;
            }
            if !c.output.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            v.push((Token::Client(*id), c.stream.as_fd(), flags));
        }
        v
    }

    /// The earliest idle deadline of a client.
    pub fn deadline(&self) -> Option<Instant> {
        self.clients.values().map(|c| c.deadline).min()
    }

    /// Drops clients past their deadline.
    pub fn expire(&mut self, now: Instant) {
        self.clients.retain(|_, c| c.deadline > now);
    }

    /// Handles readiness of `token`; returns the complete requests read.
    pub fn ready(&mut self, token: Token, now: Instant) -> Vec<(u64, Result<Request, String>)> {
        match token {
            Token::Listener => {
                self.accept(now);
                Vec::new()
            }
            Token::Client(id) => self.service(id, now),
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    return;
                }
            };
            let _ = stream.set_nonblocking(true);
            let id = self.next_id;
            self.next_id += 1;
            let mut client = Client {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                deadline: after(now, IDLE_TIMEOUT),
                closing: false,
            };
            let refuse = match getsockopt(&client.stream, PeerCredentials) {
                Ok(cred) if self.access.allows(cred.uid(), cred.gid()) => None,
                Ok(cred) => Some(format!(
                    "permission denied: uid {} may not control venussup (root only, or the group named by [host] control_group)",
                    cred.uid()
                )),
                Err(e) => Some(format!("cannot check the peer's credentials: {e}")),
            };
            if let Some(why) = refuse.or_else(|| {
                (self.clients.len() >= MAX_CLIENTS)
                    .then(|| "busy: too many clients; try again".to_string())
            }) {
                client.output = Response::err(why).to_line();
                client.closing = true;
                let _ = flush(&mut client);
                if client.output.is_empty() {
                    continue;
                }
            }
            self.clients.insert(id, client);
        }
    }

    fn service(&mut self, id: u64, now: Instant) -> Vec<(u64, Result<Request, String>)> {
        let Some(c) = self.clients.get_mut(&id) else {
            return Vec::new();
        };
        let mut requests = Vec::new();
        let mut eof = false;
        if !c.closing {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        c.input.extend_from_slice(&buf[..n]);
                        c.deadline = after(now, IDLE_TIMEOUT);
                        if c.input.len() > MAX_REQUEST && !c.input[..MAX_REQUEST].contains(&b'\n') {
                            c.output.extend(Response::err(format!("request too large (over {MAX_REQUEST} bytes without a newline)")).to_line());
                            c.closing = true;
                            c.input.clear();
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
            while let Some(pos) = c.input.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = c.input.drain(..=pos).collect();
                let line = line.trim_ascii();
                if !line.is_empty() {
                    requests.push((id, Request::parse(line)));
                }
            }
        }
        if flush(c).is_err()
            || (eof && requests.is_empty() && c.output.is_empty())
            || (c.closing && c.output.is_empty())
        {
            self.clients.remove(&id);
        } else if eof {
            // Answer what was asked, then close.
            c.closing = true;
        }
        requests
    }

    /// Queues `response` for client `id` and sends what the socket takes.
    pub fn respond(&mut self, id: u64, response: &Response) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        c.output.extend(response.to_line());
        if c.output.len() > MAX_PENDING_OUTPUT
            || flush(c).is_err()
            || (c.closing && c.output.is_empty())
        {
            self.clients.remove(&id);
        }
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

fn flush(c: &mut Client) -> io::Result<()> {
    while !c.output.is_empty() {
        match c.stream.write(&c.output) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
