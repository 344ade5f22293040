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
//! helper's blocking client (ureq with rustls; it runs in its own
//! short-lived process).

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ureq::tls::{parse_pem, Certificate, PemItem, RootCerts, TlsConfig};

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

/// POSTs `body` to `url` (`raw` as written) with `agent`, `tries` times
/// at most; Ok with the status of the first 2xx answer. Blocking: run
/// only in the `webhook` helper process.
pub fn post(
    agent: &ureq::Agent,
    url: &HttpUrl,
    raw: &str,
    body: &[u8],
    tries: u32,
) -> Result<u16, String> {
    let mut last = String::new();
    for n in 1..=tries.max(1) {
        if n > 1 {
            // The helper is its own process; waiting here blocks nothing.
            std::thread::sleep(retry_delay(n - 1));
        }
        match post_once(agent, raw, body) {
            Ok(code) if (200..300).contains(&code) => return Ok(code),
            Ok(code) => last = format!("answered {code}"),
            Err(e) => last = explain(url, &e),
        }
        eprintln!(
            "webhook try {n}/{tries} to {}:{}: {last}",
            url.host, url.port
        );
    }
    Err(last)
}

/// The helper's client: one try within `per_try`, redirects not followed
/// (a 3xx is an answer like any other non-2xx), no proxy. An `https://`
/// server's certificate is checked against the Mozilla roots built in,
/// or only against the certificates in `ca` when it is given.
pub fn agent(per_try: Duration, ca: Option<&Path>) -> Result<ureq::Agent, String> {
    let mut tls = TlsConfig::builder();
    if let Some(path) = ca {
        tls = tls.root_certs(RootCerts::new_with_certs(&trust_anchors(path)?));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(per_try))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .proxy(None)
        .user_agent(format!("venussup/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into())
}

/// The certificates of a `ca` PEM file: the only roots that hook trusts.
fn trust_anchors(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("failed to read the CA file {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("the CA file {} is not PEM: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "the CA file {} holds no `BEGIN CERTIFICATE` block",
            path.display()
        ));
    }
    Ok(certs)
}

fn post_once(agent: &ureq::Agent, url: &str, body: &[u8]) -> Result<u16, ureq::Error> {
    let answer = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)?;
    Ok(answer.status().as_u16())
}

/// A failed try in words: a certificate the hook does not trust says
/// why and what to do about it.
fn explain(url: &HttpUrl, e: &ureq::Error) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("io: ").unwrap_or(&text);
    if !url.tls || !text.contains("certificate") {
        return text.to_string();
    }
    let advice = if text.contains("UnknownIssuer") {
        "; its CA is not trusted: for a private CA set the hook's `ca` to its PEM file"
    } else if text.contains("not valid for name") {
        "; it was made for another name: use that name in the url"
    } else if text.contains("CaUsedAsEndEntity") {
        "; the server shows a CA certificate (a self-signed one?): give it a certificate signed by a CA and set that CA as the hook's `ca`"
    } else {
        ""
    };
    format!(
        "TLS: the certificate of {} was refused ({text}){advice}",
        url.host
    )
}

/// `venussup webhook [--url URL] [--ca PEM] --tries N --timeout T`: the
/// event's JSON from stdin, POSTed to URL (default `VENUSSUP_WEBHOOK_URL`).
/// Exit 0 when the server answered 2xx.
pub fn webhook_main(url: Option<String>, ca: Option<&Path>, tries: u32, per_try: Duration) -> u8 {
    let Some(raw) = url.or_else(|| std::env::var("VENUSSUP_WEBHOOK_URL").ok()) else {
        eprintln!("webhook: no --url and no VENUSSUP_WEBHOOK_URL");
        return 1;
    };
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("webhook: failed to read the event from stdin: {e}");
        return 1;
    }
    let url = match HttpUrl::parse(&raw) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("webhook: {e}");
            return 1;
        }
    };
    let agent = match agent(per_try, ca) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("webhook: {e}; no try made");
            return 1;
        }
    };
    match post(&agent, &url, &raw, &body, tries) {
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
                tls: false,
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/robot/send?x=1".into()
            }
        );
        assert_eq!(HttpUrl::parse("http://hooks.example").unwrap().port, 80);
        assert_eq!(HttpUrl::parse("http://hooks.example").unwrap().path, "/");
        let dingtalk =
            HttpUrl::parse("https://oapi.dingtalk.com/robot/send?access_token=t").unwrap();
        assert!(dingtalk.tls);
        assert_eq!(
            (dingtalk.port, dingtalk.path.as_str()),
            (443, "/robot/send?access_token=t")
        );
        assert!(!HttpUrl::parse("http://h:81").unwrap().tls);
        let bare = HttpUrl::parse("https://h:8443?token=t").unwrap();
        assert_eq!(
            (bare.host.as_str(), bare.port, bare.path.as_str()),
            ("h", 8443, "/?token=t")
        );
        assert!(HttpUrl::parse("ftp://h/x")
            .unwrap_err()
            .contains("https://"));
        assert!(HttpUrl::parse("http://h:99999/").is_err());
        assert!(HttpUrl::parse("http://u:p@h/").is_err());
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        let e = agent(Duration::from_secs(1), Some(&missing)).unwrap_err();
        assert!(e.starts_with("failed to read the CA file"), "{e}");
        let key_only = dir.path().join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = agent(Duration::from_secs(1), Some(&key_only)).unwrap_err();
        assert!(e.contains("holds no `BEGIN CERTIFICATE` block"), "{e}");
        assert!(agent(Duration::from_secs(1), None).is_ok());
    }

    #[test]
    fn a_try_is_bounded_by_its_timeout() {
        // The kernel completes the connection; nobody ever answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let raw = format!("http://{}/x", silent.local_addr().unwrap());
        let url = HttpUrl::parse(&raw).unwrap();
        let agent = agent(Duration::from_millis(300), None).unwrap();
        let started = std::time::Instant::now();
        let e = post(&agent, &url, &raw, b"{}", 1).unwrap_err();
        let took = started.elapsed();
        assert!(e.contains("timeout"), "{e}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[test]
    fn backoff() {
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert_eq!(retry_delay(3), Duration::from_secs(2));
        assert_eq!(retry_delay(30), Duration::from_secs(8));
    }
}
