//! The control socket as the soak uses and abuses it: requests with their
//! latency, garbage and oversized lines, clients that never read or never
//! send, many clients at once. Every read is bounded.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest a `status` may take before the daemon counts as wedged.
pub const STATUS_BOUND: Duration = Duration::from_secs(5);
pub const STATUS: &str = r#"{"version":1,"command":"status"}"#;

fn connect(sock: &Path) -> Result<UnixStream, String> {
    let s = UnixStream::connect(sock).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(STATUS_BOUND * 2)).unwrap();
    s.set_write_timeout(Some(STATUS_BOUND * 2)).unwrap();
    Ok(s)
}

fn read_line(s: &UnixStream) -> std::io::Result<String> {
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).map(|_| line)
}

/// One request, its answer, and how long it took.
pub fn ask(sock: &Path, request: &str) -> Result<(Value, Duration), String> {
    let t = Instant::now();
    let mut s = connect(sock)?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let line = read_line(&s).map_err(|e| format!("read: {e}"))?;
    let v = serde_json::from_str(&line).map_err(|e| format!("answer {line:?}: {e}"))?;
    Ok((v, t.elapsed()))
}

/// Sends `bytes` (garbage, an oversized line) on one connection: an error
/// answer or a closed connection is expected within the bound. The broken
/// rule, if any.
pub fn abuse(sock: &Path, bytes: &[u8]) -> Result<(), (&'static str, String)> {
    let Ok(mut s) = connect(sock) else {
        return Ok(()); // a daemon restarting: the next status says
    };
    let _ = s.write_all(bytes);
    match read_line(&s) {
        Ok(line) if line.is_empty() || line.contains("\"ok\":false") => Ok(()),
        Ok(line) => Err(("garbage is answered with an error", line)),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(("garbage is answered within the bound", e.to_string())),
    }
}

/// A client that sends a burst of `status` requests (until its socket
/// buffer is full) and never reads the answers; kept open by the caller.
pub fn non_reader(sock: &Path) -> Option<UnixStream> {
    let s = UnixStream::connect(sock).ok()?;
    s.set_nonblocking(true).unwrap();
    let burst = format!("{STATUS}\n").repeat(4096);
    let mut sent = 0;
    while sent < (8 << 20) {
        match (&s).write(burst.as_bytes()) {
            Ok(n) => sent += n,
            Err(_) => break, // full (WouldBlock), or dropped by the daemon
        }
    }
    Some(s)
}

/// A client that connects and never sends; kept open by the caller.
pub fn idle(sock: &Path) -> Option<UnixStream> {
    UnixStream::connect(sock).ok()
}

/// `n` clients at once, each asking `status`; each must get an answer.
pub fn many(sock: &Path, n: usize) -> Result<(), (&'static str, String)> {
    let conns: Vec<UnixStream> = (0..n).filter_map(|_| connect(sock).ok()).collect();
    for mut c in &conns {
        let _ = c.write_all(format!("{STATUS}\n").as_bytes());
    }
    for c in &conns {
        match read_line(c) {
            Ok(line) if !line.is_empty() => {}
            other => {
                return Err((
                    "many clients at once are each answered",
                    format!("{other:?}"),
                ))
            }
        }
    }
    Ok(())
}
