//! Event hooks (`[[host.hook]]`): a service died, was OOM-killed or
//! failed, a timer run failed, the SMT step or host preparation failed.
//! Each hook is a child process of the supervisor, so the loop never
//! blocks on it: a command (the event in `VENUSSUP_*` variables and as JSON
//! on stdin), or venussup's own `webhook` helper that POSTs the JSON.
//! A hook runs one event at a time; events that come meanwhile wait in a
//! queue of [`QUEUE_MAX`], and beyond that are dropped and counted.
//!
//! The queue, the event's shape and the URL are pure, and
//! `supervisor/hooks.rs` runs the hooks as children; [`post`] is the
//! helper's blocking client (it runs in its own short-lived process).

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::EventKind;
use crate::status::HookCounts;
pub use crate::util::url::HttpUrl;

/// Events kept per hook while it is busy; more are dropped and counted.
pub const QUEUE_MAX: usize = 16;

/// One event, as a hook receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub event: EventKind,
    /// The host's name (`uname -n`).
    pub host: String,
    /// Unix time it happened.
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<String>,
    /// How the process ended (`killed by SIGKILL`, `exit code 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// One line for a person (a chat message, a mail subject).
    pub message: String,
}

impl Event {
    pub fn new(event: EventKind, message: String) -> Self {
        Self {
            event,
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            at: crate::util::clock::unix_now(),
            service: None,
            timer: None,
            exit: None,
            message,
        }
    }

    /// `VENUSSUP_EVENT`, `VENUSSUP_SERVICE`, ... for a command hook: every
    /// field of the JSON, upper-cased; absent fields are not set.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) {
            for (k, v) in fields {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                env.insert(format!("VENUSSUP_{}", k.to_ascii_uppercase()), text);
            }
        }
        env
    }
}

/// One hook's queue: never two runs at once.
#[derive(Debug, Default)]
pub struct Slot {
    pub busy: bool,
    pub queue: VecDeque<Event>,
    pub counts: HookCounts,
}

impl Slot {
    /// An event for this hook: returned when it can run now, else queued
    /// (or dropped when the queue is full).
    pub fn offer(&mut self, e: Event) -> Option<Event> {
        if !self.busy {
            self.busy = true;
            return Some(e);
        }
        if self.queue.len() < QUEUE_MAX {
            self.queue.push_back(e);
        } else {
            self.counts.dropped += 1;
        }
        None
    }

    /// The run ended; the next event to run, if one waits.
    pub fn finished(&mut self, ok: bool) -> Option<Event> {
        if ok {
            self.counts.ok += 1;
        } else {
            self.counts.failed += 1;
        }
        let next = self.queue.pop_front();
        self.busy = next.is_some();
        next
    }
}

/// The wait before try `n` (from 1): 0.5 s × 2^(n−1), at most 8 s.
pub fn retry_delay(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.saturating_sub(1).min(4)))
}

/// POSTs `body` to `url`, `tries` times at most, each try bounded by
/// `per_try`; Ok with the status of the first 2xx answer. Blocking: run
/// only in the `webhook` helper process.
pub fn post(url: &HttpUrl, body: &[u8], tries: u32, per_try: Duration) -> Result<u16, String> {
    let mut last = String::new();
    for n in 1..=tries.max(1) {
        if n > 1 {
            // The helper is its own process; waiting here blocks nothing.
            std::thread::sleep(retry_delay(n - 1));
        }
        match post_once(url, body, per_try) {
            Ok(code) if (200..300).contains(&code) => return Ok(code),
            Ok(code) => last = format!("answered {code}"),
            Err(e) => last = e,
        }
        eprintln!(
            "webhook try {n}/{tries} to {}:{}: {last}",
            url.host, url.port
        );
    }
    Err(last)
}

fn post_once(url: &HttpUrl, body: &[u8], timeout: Duration) -> Result<u16, String> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("failed to resolve {}: {e}", url.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", url.host))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("failed to connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: venussup/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("failed to send to {addr}: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // The status line is all we need.
    while !answer.contains(&b'\n') && answer.len() < 8192 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer from {addr}: {e}")),
        }
    }
    status_code(&answer).ok_or_else(|| {
        format!(
            "`{}` from {addr} is not an HTTP answer",
            String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .unwrap_or("")
        )
    })
}

/// The code of an `HTTP/1.x NNN ...` status line.
fn status_code(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer).ok()?;
    let mut words = text.lines().next()?.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// `venussup webhook [--url URL] --tries N --timeout T`: the event's JSON
/// from stdin, POSTed to URL (default `VENUSSUP_WEBHOOK_URL`). Exit 0 when
/// the server answered 2xx.
pub fn webhook_main(url: Option<String>, tries: u32, per_try: Duration) -> u8 {
    let Some(url) = url.or_else(|| std::env::var("VENUSSUP_WEBHOOK_URL").ok()) else {
        eprintln!("webhook: no --url and no VENUSSUP_WEBHOOK_URL");
        return 1;
    };
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("webhook: failed to read the event from stdin: {e}");
        return 1;
    }
    let url = match HttpUrl::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("webhook: {e}");
            return 1;
        }
    };
    match post(&url, &body, tries, per_try) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("webhook: gave up after {tries} tries: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(msg: &str) -> Event {
        let mut e = Event::new(EventKind::Death, msg.to_string());
        e.service = Some("worker01".into());
        e.exit = Some("killed by SIGKILL".into());
        e
    }

    #[test]
    fn one_run_at_a_time_then_a_bounded_queue() {
        let mut slot = Slot::default();
        assert!(slot.offer(event("a")).is_some());
        for i in 0..QUEUE_MAX + 3 {
            assert!(slot.offer(event(&i.to_string())).is_none());
        }
        assert_eq!(slot.queue.len(), QUEUE_MAX);
        assert_eq!(slot.counts.dropped, 3);
        assert_eq!(slot.finished(true).unwrap().message, "0");
        assert!(slot.busy);
        for _ in 1..QUEUE_MAX {
            slot.finished(false);
        }
        assert!(slot.finished(true).is_none());
        assert!(!slot.busy);
        assert_eq!(
            (slot.counts.ok, slot.counts.failed),
            (2, QUEUE_MAX as u64 - 1)
        );
    }

    #[test]
    fn the_event_is_json_and_environment() {
        let e = event("worker01 died");
        let env = e.env();
        assert_eq!(env["VENUSSUP_EVENT"], "death");
        assert_eq!(env["VENUSSUP_SERVICE"], "worker01");
        assert_eq!(env["VENUSSUP_EXIT"], "killed by SIGKILL");
        assert!(!env.contains_key("VENUSSUP_TIMER"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["event"], "death");
        assert_eq!(json["message"], "worker01 died");
    }

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/robot/send?x=1").unwrap();
        assert_eq!(
            u,
            HttpUrl {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/robot/send?x=1".into()
            }
        );
        assert_eq!(HttpUrl::parse("http://hooks.example").unwrap().port, 80);
        assert_eq!(HttpUrl::parse("http://hooks.example").unwrap().path, "/");
        assert!(HttpUrl::parse("https://oapi.dingtalk.com/x")
            .unwrap_err()
            .contains("https"));
        assert!(HttpUrl::parse("http://h:99999/").is_err());
        assert!(HttpUrl::parse("http://u:p@h/").is_err());
    }

    #[test]
    fn status_lines_and_backoff() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert_eq!(retry_delay(3), Duration::from_secs(2));
        assert_eq!(retry_delay(30), Duration::from_secs(8));
    }
}
