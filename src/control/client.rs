//! The command line's side: one request, one response, bounded in time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{Command, Request, Response, SOCKET_NAME};

/// How long the CLI waits for the daemon (a reload plans a whole host).
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("venussup is not running, or not reachable at {path}: {source}")]
    Unreachable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon's answer was cut off or unreadable: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    Refused(String),
}

/// Sends `command` to the daemon whose state folder is `state_dir`.
pub fn request(state_dir: &Path, command: Command) -> Result<serde_json::Value, ClientError> {
    request_within(state_dir, command, TIMEOUT)
}

/// [`request`], waiting up to `timeout` for the answer (an upgrade's
/// answer comes after its checks).
pub fn request_within(
    state_dir: &Path,
    command: Command,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    let path = state_dir.join(SOCKET_NAME);
    let unreachable = |source| ClientError::Unreachable {
        path: path.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(&path).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    let mut line = serde_json::to_vec(&Request::new(command))
        .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    line.push(b'\n');
    // A daemon that refuses the peer answers at once and closes, maybe
    // before the request is written: read its answer all the same.
    let written = stream.write_all(&line);
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    match (written, read) {
        (_, Ok(n)) if n > 0 => {}
        (Err(e), _) => return Err(unreachable(e)),
        (Ok(()), Err(e)) => return Err(ClientError::BadAnswer(e.to_string())),
        (Ok(()), Ok(_)) => {
            return Err(ClientError::BadAnswer(
                "the daemon closed the connection without an answer".into(),
            ))
        }
    }
    let response: Response = serde_json::from_str(&answer)
        .map_err(|e| ClientError::BadAnswer(format!("{e}: {answer:?}")))?;
    if response.ok {
        Ok(response.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(ClientError::Refused(response.error.unwrap_or_default()))
    }
}
