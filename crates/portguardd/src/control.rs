//! The control socket: one JSON request line in, one JSON response line
//! out. Requests are answered by the reconcile loop, which owns the state.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use anyhow::Context as _;
use portguard_core::control::{PROTOCOL_VERSION, Request, RequestBody, Response, ResponseBody};

use crate::triggers::Trigger;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const LOOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests are one short line; refuse anything longer.
const MAX_REQUEST: u64 = 64 * 1024;

/// Binds the socket (root only, or root and `group`) and serves it on a
/// thread of its own.
pub fn spawn(path: &Path, group: Option<&str>, tx: Sender<Trigger>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a previous run (we may have been SIGKILLed).
    if path.exists() && UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding control socket {}", path.display()))?;
    let mode = match group {
        Some(name) => {
            let group = nix::unistd::Group::from_name(name)
                .with_context(|| format!("looking up group {name}"))?
                .with_context(|| format!("[control] group {name} does not exist"))?;
            nix::unistd::chown(path, None, Some(group.gid)).context("chown control socket")?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .context("chmod control socket")?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = serve(stream, &tx) {
                            tracing::debug!(error = %e, "control client");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
                }
            }
        })?;
    Ok(())
}

fn serve(stream: UnixStream, tx: &Sender<Trigger>) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(&stream, MAX_REQUEST)).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) if request.version != PROTOCOL_VERSION => error(format!(
            "protocol version {} is not supported (this portguardd speaks {PROTOCOL_VERSION})",
            request.version
        )),
        Ok(request) => ask_loop(request.body, tx),
        Err(e) => error(format!("bad request: {e}")),
    };
    let mut text = serde_json::to_string(&response)?;
    text.push('\n');
    (&stream).write_all(text.as_bytes())?;
    Ok(())
}

fn ask_loop(body: RequestBody, tx: &Sender<Trigger>) -> Response {
    let (reply_tx, reply_rx) = channel();
    if tx.send(Trigger::Control(body, reply_tx)).is_err() {
        return error("portguardd is shutting down".into());
    }
    reply_rx
        .recv_timeout(LOOP_TIMEOUT)
        .unwrap_or_else(|_| error("portguardd did not answer in time".into()))
}

pub fn error(message: String) -> Response {
    Response {
        version: PROTOCOL_VERSION,
        ok: false,
        body: ResponseBody::Error(message),
    }
}

pub fn ok(body: ResponseBody) -> Response {
    Response {
        version: PROTOCOL_VERSION,
        ok: true,
        body,
    }
}
