//! sd_notify: tells systemd (Type=notify) when venussup is ready, a one-line
//! status, and watchdog pings when `WATCHDOG_USEC` asks for them.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Half the watchdog interval systemd set, when it set one.
    pub watchdog_every: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`, which
    /// must be ours when set).
    pub fn from_env() -> Self {
        let target = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
                None => SocketAddr::from_pathname(&path).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let for_us =
            std::env::var("WATCHDOG_PID").map_or(true, |p| p == std::process::id().to_string());
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|_| for_us)
            .map(|us| Duration::from_micros(us / 2));
        Self {
            target,
            watchdog_every,
        }
    }

    /// Sends `state` (e.g. "READY=1\nSTATUS=..."); failures are logged once
    /// by the caller's choice and otherwise ignored: systemd may be gone.
    pub fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!("sd_notify failed: {e}");
            }
        }
    }
}
