//! The control socket: one JSON request line in, one JSON response line
//! out. Requests are answered by the reconcile loop, which owns the state.
//!
//! Clients are served concurrently on a tokio runtime of their own thread:
//! a slow or hostile client holds one connection of the few its user may
//! hold (see [`admission`]) until it has sent its request line or the
//! line's short deadline passes, never the socket, and never root's
//! reserve.

mod admission;

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::stat::Mode;
use portguard_core::control::{
    MAX_REQUEST_BYTES, PROTOCOL_VERSION, RequestBody, Response, ResponseBody, parse_request,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};

use crate::triggers::Trigger;
use admission::{Admission, Refusal};

/// Read, answer and write of one request, all together.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// For the request line alone: guardctl sends its line as soon as it is
/// connected, so a client that has not within this time is stalling, and
/// gives its connection back to others.
const FIRST_LINE_DEADLINE: Duration = Duration::from_secs(2);
/// Kept back from the deadline to tell the client that the loop was late.
const WRITE_RESERVE: Duration = Duration::from_secs(1);
/// How often a refused client is logged at most: a client that reconnects
/// in a loop must not flood the journal.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Binds the socket (root only, or root and `group`) and serves it on a
/// thread of its own.
pub fn spawn(path: &Path, group: Option<&str>, tx: Sender<Trigger>) -> anyhow::Result<()> {
    let gid = match group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .with_context(|| format!("looking up group {name}"))?
                .with_context(|| format!("[control] group {name} does not exist"))?
                .gid,
        ),
        None => None,
    };
    let listener = bind(path, gid)?;
    listener
        .set_nonblocking(true)
        .context("control socket: non-blocking")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("control socket: starting its runtime")?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || runtime.block_on(serve_all(listener, tx)))?;
    Ok(())
}

/// Creates the socket at `path` with its final owner and mode before
/// anybody can see it: bound under a private name beside it (with a umask
/// that leaves it 0600), chowned and chmodded, then linked into place,
/// which fails rather than replace whatever appeared there meanwhile. Only
/// a stale socket (one nobody listens on) is ever removed; anything else at
/// `path` is an error and is left as it is.
pub fn bind(
    path: &Path,
    gid: Option<nix::unistd::Gid>,
) -> anyhow::Result<std::os::unix::net::UnixListener> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_if_stale(path)?;
    let name = path
        .file_name()
        .with_context(|| format!("control socket {} has no file name", path.display()))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    // Left by an earlier portguardd with our pid (after a reboot).
    remove_if_stale(&temp)?;
    let old_umask = nix::sys::stat::umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(&temp);
    nix::sys::stat::umask(old_umask);
    let listener = bound.with_context(|| format!("binding control socket {}", temp.display()))?;
    let placed = (|| -> anyhow::Result<()> {
        let mode = match gid {
            Some(gid) => {
                nix::unistd::chown(&temp, None, Some(gid)).context("chown control socket")?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
            .context("chmod control socket")?;
        std::fs::hard_link(&temp, path).with_context(|| {
            format!(
                "placing control socket at {} (something appeared there meanwhile?)",
                path.display()
            )
        })?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&temp);
    placed?;
    Ok(listener)
}

/// Removes `path` if it is a socket nobody listens on. Nothing there is
/// fine; a live socket or anything that is not a socket is an error.
fn remove_if_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("control socket {}", path.display())),
    };
    let kind = meta.file_type();
    if !kind.is_socket() {
        let what = if kind.is_file() {
            "a regular file"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symbolic link"
        } else {
            "not a socket"
        };
        anyhow::bail!(
            "control socket {}: the path exists and is {what}; portguardd removes only a stale socket, so remove it yourself if it is not needed",
            path.display()
        );
    }
    match StdUnixStream::connect(path) {
        Ok(_) => anyhow::bail!(
            "control socket {}: another process is listening on it (is portguardd already running?)",
            path.display()
        ),
        // A socket left by a previous run (we may have been SIGKILLed).
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .with_context(|| format!("removing stale control socket {}", path.display())),
        Err(e) => Err(e).with_context(|| {
            format!(
                "control socket {}: cannot tell whether it is stale",
                path.display()
            )
        }),
    }
}

async fn serve_all(listener: std::os::unix::net::UnixListener, tx: Sender<Trigger>) {
    let listener = match UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("control socket cannot be served: {e}");
            return;
        }
    };
    let admission = Admission::default();
    let mut refusals = RefusalLog::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                // Out of file descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Who connected, as the kernel recorded it at connect.
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                tracing::debug!(error = %e, "control client's credentials unreadable");
                let _ = stream.try_write(&response_line(&error(
                    "refused: cannot tell which user connected".into(),
                )));
                continue;
            }
        };
        match admission.admit(uid) {
            Ok(slot) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    serve(stream, &tx).await;
                    drop(slot);
                });
            }
            Err(refusal) => {
                refusals.refused(uid, refusal);
                // A fresh socket's buffer takes a short line without waiting.
                let _ = stream.try_write(&response_line(&error(refusal.to_string())));
            }
        }
    }
}

/// Logs refused clients, at most once every [`REFUSAL_LOG_INTERVAL`], with
/// how many were refused since the last message.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn refused(&mut self, uid: u32, refusal: Refusal) {
        self.unlogged += 1;
        if self
            .last
            .is_some_and(|at| at.elapsed() < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            uid,
            refused = self.unlogged,
            "control socket: a client of uid {uid} was refused ({refusal}); {} refused since the last such message",
            self.unlogged
        );
        self.last = Some(std::time::Instant::now());
        self.unlogged = 0;
    }
}

async fn serve(mut stream: UnixStream, tx: &Sender<Trigger>) {
    let accepted = Instant::now();
    let deadline = accepted + REQUEST_DEADLINE;
    let (read, mut write) = stream.split();
    let mut line = Vec::new();
    // One byte more than allowed, so that parse_request sees it is too long.
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64 + 1);
    let response = match timeout_at(
        accepted + FIRST_LINE_DEADLINE,
        reader.read_until(b'\n', &mut line),
    )
    .await
    {
        Err(_) => error(format!(
            "bad request: no complete line within {} s",
            FIRST_LINE_DEADLINE.as_secs()
        )),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "control client read failed");
            return;
        }
        Ok(Ok(_)) => match parse_request(&line) {
            Ok(request) => ask_loop(request.body, tx, deadline - WRITE_RESERVE).await,
            Err(refused) => error(refused.to_string()),
        },
    };
    match timeout_at(deadline, write.write_all(&response_line(&response))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "control client write failed"),
        Err(_) => tracing::debug!("control client did not read its answer in time"),
    }
}

fn response_line(response: &Response) -> Vec<u8> {
    let mut text = serde_json::to_vec(response).unwrap_or_else(|e| {
        // Not expected (plain data), but a client still gets a line.
        format!(
            r#"{{"version":{PROTOCOL_VERSION},"ok":false,"error":"cannot encode the answer: {e}"}}"#
        )
        .into_bytes()
    });
    text.push(b'\n');
    text
}

pub async fn ask_loop(body: RequestBody, tx: &Sender<Trigger>, deadline: Instant) -> Response {
    let (reply_tx, reply_rx) = oneshot::channel();
    if tx.send(Trigger::Control(body, reply_tx)).is_err() {
        return error("portguardd is shutting down".into());
    }
    match timeout_at(deadline, reply_rx).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => error("portguardd is shutting down".into()),
        Err(_) => error("portguardd did not answer in time".into()),
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Runs in a process of its own (this test re-executes itself): the
    /// umask is process-wide, and a umask of 0 would leak into tests
    /// running beside it on other threads.
    #[test]
    fn the_socket_is_never_seen_with_another_mode_than_its_final_one() {
        const CHILD: &str = "PORTGUARD_UMASK_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "control_socket::tests::the_socket_is_never_seen_with_another_mode_than_its_final_one",
                    "--exact",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CHILD, "1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        // The worst umask an administrator could leave: the old code's
        // socket was 0777 between bind and chmod.
        let old = nix::sys::stat::umask(Mode::empty());
        let done = Arc::new(AtomicBool::new(false));
        let looks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let watcher = {
            let (dir, done, looks) = (
                dir.path().to_path_buf(),
                Arc::clone(&done),
                Arc::clone(&looks),
            );
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !done.load(Ordering::Relaxed) {
                    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                        if let Ok(meta) = std::fs::symlink_metadata(entry.path()) {
                            seen.insert((entry.file_name(), meta.mode() & 0o777));
                            looks.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                seen
            })
        };
        // At least 500 binds, and on until the watcher has looked a few
        // hundred times (a loaded machine may schedule it late).
        let mut binds = 0;
        while binds < 500 || (looks.load(Ordering::Relaxed) < 200 && binds < 50_000) {
            let listener = bind(&path, None).unwrap();
            drop(listener);
            std::fs::remove_file(&path).unwrap();
            binds += 1;
        }
        done.store(true, Ordering::Relaxed);
        nix::sys::stat::umask(old);
        let seen = watcher.join().unwrap();
        assert!(!seen.is_empty(), "the watcher saw nothing in {binds} binds");
        for (name, mode) in &seen {
            assert_eq!(*mode, 0o600, "{name:?} was seen with mode {mode:o}");
        }
    }

    #[test]
    fn only_a_stale_socket_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");

        // A regular file: an error naming it, and left as it was.
        std::fs::write(&path, "keep me").unwrap();
        let err = format!("{:#}", bind(&path, None).unwrap_err());
        assert!(err.contains("is a regular file"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
        std::fs::remove_file(&path).unwrap();

        // A directory, and a symbolic link (even to a stale socket).
        std::fs::create_dir(&path).unwrap();
        let err = format!("{:#}", bind(&path, None).unwrap_err());
        assert!(err.contains("is a directory"), "{err}");
        std::fs::remove_dir(&path).unwrap();
        let elsewhere = dir.path().join("elsewhere.sock");
        drop(std::os::unix::net::UnixListener::bind(&elsewhere).unwrap());
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let err = format!("{:#}", bind(&path, None).unwrap_err());
        assert!(err.contains("is a symbolic link"), "{err}");
        assert!(std::fs::symlink_metadata(&elsewhere).is_ok());
        std::fs::remove_file(&path).unwrap();

        // A live socket: somebody else's, kept.
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = format!("{:#}", bind(&path, None).unwrap_err());
        assert!(err.contains("another process is listening"), "{err}");
        assert!(StdUnixStream::connect(&path).is_ok());
        drop(live);

        // Now stale (nobody listens): replaced, and the new one answers.
        let listener = bind(&path, None).unwrap();
        assert!(StdUnixStream::connect(&path).is_ok());
        drop(listener);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary name left behind: {names:?}");
    }
}
