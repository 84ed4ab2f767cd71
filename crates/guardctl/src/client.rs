//! Talking to portguardd over its control socket: connect, send one
//! request, receive and decode the answer. What the answers look like to a
//! person is `render`'s.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use portguard_core::control::{PROTOCOL_VERSION, Request, RequestBody, Response, ResponseBody};

/// The daemon could not be reached at all; each case has its own exit code.
#[derive(Debug)]
pub enum Unreachable {
    /// Nothing listens at the socket (or there is no socket).
    NotRunning(String),
    /// The socket is there but this user may not use it.
    PermissionDenied(String),
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreachable::NotRunning(m) | Unreachable::PermissionDenied(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Unreachable {}

pub fn ask(socket: &Path, body: RequestBody) -> anyhow::Result<ResponseBody> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Unreachable::PermissionDenied(format!(
                "permission denied: cannot connect to {} (the control socket is for root, \
                 or for members of the group set in [control] group)",
                socket.display()
            ))
        } else {
            Unreachable::NotRunning(format!(
                "portguardd is not running (cannot connect to {}: {e})",
                socket.display()
            ))
        }
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(35)))?;
    let mut line = serde_json::to_string(&Request {
        version: PROTOCOL_VERSION,
        body,
    })?;
    line.push('\n');
    // A daemon that refuses the connection (busy) answers and closes at
    // once, maybe before the request is written: the write then fails
    // (broken pipe), and the answer, which says why, is still there.
    let written = (&stream).write_all(line.as_bytes());
    let mut reply = String::new();
    let read = BufReader::new(&stream).read_line(&mut reply);
    if reply.is_empty() {
        written?;
        read?;
    }
    let response: Response = serde_json::from_str(&reply).map_err(|e| {
        anyhow::anyhow!("portguardd sent an answer this guardctl does not understand: {e}")
    })?;
    match response.body {
        ResponseBody::Error(message) => anyhow::bail!("portguardd: {message}"),
        body => Ok(body),
    }
}
