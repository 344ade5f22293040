//! How the model's programs talk: one request line, then the answer
//! (`ok` or `err MESSAGE` on the first line, the body after) and the
//! connection closes. The real programs speak JSON-RPC over HTTP at
//! `/rpc/v0`; venussup never speaks it, only connects (the ready probe) and
//! runs the CLIs, so the wire format is the one thing the model does not
//! copy. A connection that sends nothing (a probe) is simply closed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub type Handler = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// Answers every connection on its own thread.
pub fn serve(listener: TcpListener, handler: Handler) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || answer(conn, &handler));
        }
    });
}

fn answer(conn: TcpStream, handler: &Handler) {
    let mut line = String::new();
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    if BufReader::new(conn).read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let reply = match handler(line.trim_end()) {
        Ok(body) => format!("ok\n{body}"),
        Err(e) => format!("err {e}\n"),
    };
    let _ = writer.write_all(reply.as_bytes());
}

/// An I/O error in Go's words, as the real programs print it.
pub fn go_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::AddrInUse => "bind: address already in use".into(),
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        _ => e.to_string(),
    }
}

/// Sends one request; the body of an `ok`, or the error (Go's dial error
/// when nothing listens).
pub fn call(addr: SocketAddr, request: &str) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
        .map_err(|e| format!("dial tcp {addr}: {}", go_words(&e)))?;
    conn.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    match reply.split_once('\n') {
        Some(("ok", body)) => Ok(body.to_string()),
        Some((err, _)) => Err(err.strip_prefix("err ").unwrap_or(err).to_string()),
        None => Err(format!("no answer from {addr}")),
    }
}
