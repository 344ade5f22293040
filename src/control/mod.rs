//! The control protocol: newline-delimited JSON over a Unix stream socket
//! in the state folder (`control.sock`). One request per line, one
//! response line per request, in order; a client may send several.
//!
//! Request:  `{"version": 1, "command": "status", "name": "worker01"}`
//!           commands: `status` (name optional), `start`, `stop`,
//!           `restart`, `timer-run` (each with `name`), `reload`, `metrics`,
//!           `upgrade` (`binary` optional: the new program; its answer
//!           comes from the new image once it runs, or says why the old
//!           one goes on). Debug builds also take `debug-panic`, which
//!           panics the daemon (for the tests of the panic re-exec).
//! Response: `{"version": 1, "ok": true, "result": ...}` or
//!           `{"version": 1, "ok": false, "error": "..."}`.
//!
//! Bounds: a request line is at most [`MAX_REQUEST`] bytes; a client that
//! sends nothing for [`IDLE_TIMEOUT`] is dropped; at most [`MAX_CLIENTS`]
//! at once besides root (more are told "busy"), and root gets
//! [`ROOT_SLOTS`] more, so it always gets in. Per loop turn a client gets
//! at most [`READ_PER_TURN`] bytes read and [`REQUESTS_PER_TURN`] requests
//! answered, then the others and the children come first; a client that
//! lets more than [`MAX_PENDING_OUTPUT`] of answers pile up unread is
//! dropped. Only root (and, when the config names one, a group) may
//! connect: the socket's mode and the peer's credentials (SO_PEERCRED)
//! both say so.

pub mod client;
pub mod http;
pub mod peer;
pub mod server;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;
/// The socket's file name in the state folder.
pub const SOCKET_NAME: &str = "control.sock";
pub const MAX_REQUEST: usize = 64 * 1024;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The requests each of `clients` ready clients gets in a turn (pure).
pub fn share(clients: usize) -> usize {
    (TURN_REQUESTS / clients.max(1)).clamp(1, REQUESTS_PER_TURN)
}

/// A connection's idle time left, as handed over to a new image.
fn idle_left_ms(deadline: Instant, now: Instant) -> u64 {
    u64::try_from(deadline.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
}
/// Clients at once, root's aside (and connections on the metrics listener).
pub const MAX_CLIENTS: usize = 512;
/// Connections kept for root beyond [`MAX_CLIENTS`]: slow clients of the
/// control group cannot lock root out.
pub const ROOT_SLOTS: usize = 4;
/// A client that does not read its responses is dropped past this.
pub const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// Bytes read from one client in one loop turn.
pub const READ_PER_TURN: usize = 64 * 1024;
/// Requests of one client answered in one loop turn; the rest wait for
/// the next turn, after the other clients, the signals and the timers.
pub const REQUESTS_PER_TURN: usize = 16;
/// Requests answered in one loop turn, all clients together: with many
/// clients busy each gets less (one at least), so a turn stays short and
/// a new client is answered in the next one.
pub const TURN_REQUESTS: usize = 64;
/// Connections accepted in one loop turn.
pub const ACCEPTS_PER_TURN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    Restart {
        name: String,
        /// Also restart every service that starts after it (transitively).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        with_dependents: bool,
    },
    TimerRun {
        name: String,
    },
    Reload,
    Metrics,
    /// Replace the daemon's program in place with `binary` (default: the
    /// file it was started from), keeping every child.
    Upgrade {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<std::path::PathBuf>,
    },
    /// Debug builds only: panic in the request handler, to test the
    /// panic re-exec. Release builds do not know this command.
    #[cfg(debug_assertions)]
    DebugPanic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub command: Command,
}

impl Request {
    pub fn new(command: Command) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            command,
        }
    }

    /// Parses one request line, with an error fit to send back.
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let req: Request = serde_json::from_slice(line).map_err(|e| {
            format!("malformed request ({e}); send one JSON object per line, e.g. {{\"version\": 1, \"command\": \"status\"}}")
        })?;
        if req.version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {} is not supported (this daemon speaks {PROTOCOL_VERSION})",
                req.version
            ));
        }
        Ok(req)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(error: impl Into<String>) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| {
            b"{\"version\":1,\"ok\":false,\"error\":\"unencodable response\"}".to_vec()
        });
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_round_trip() {
        let r =
            Request::parse(br#"{"version": 1, "command": "stop", "name": "worker01"}"#).unwrap();
        assert_eq!(
            r.command,
            Command::Stop {
                name: "worker01".into()
            }
        );
        let r = Request::parse(br#"{"version":1,"command":"status"}"#).unwrap();
        assert_eq!(r.command, Command::Status { name: None });
        let line = serde_json::to_string(&Request::new(Command::TimerRun {
            name: "pledge".into(),
        }))
        .unwrap();
        assert_eq!(
            line,
            r#"{"version":1,"command":"timer-run","name":"pledge"}"#
        );
    }

    #[test]
    fn a_turn_is_shared_and_everyone_gets_one() {
        assert_eq!(share(1), REQUESTS_PER_TURN);
        assert_eq!(share(0), REQUESTS_PER_TURN);
        assert_eq!(share(8), TURN_REQUESTS / 8);
        assert_eq!(share(25), 2);
        assert_eq!(share(500), 1);
    }

    #[test]
    fn bad_requests_say_why() {
        assert!(Request::parse(b"hello")
            .unwrap_err()
            .contains("malformed request"));
        assert!(Request::parse(br#"{"version":1,"command":"explode"}"#)
            .unwrap_err()
            .contains("malformed"));
        assert!(Request::parse(br#"{"version":1,"command":"stop"}"#)
            .unwrap_err()
            .contains("name"));
        assert!(Request::parse(br#"{"version":2,"command":"status"}"#)
            .unwrap_err()
            .contains("version 2"));
    }
}
