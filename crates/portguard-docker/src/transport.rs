//! The Docker Engine API over its unix socket, with a cap on what one
//! connection may send us. bollard collects response bodies into memory
//! without a limit (a 3 GB answer took the daemon to 3.1 GB), and its
//! timeout covers only the headers; the cap is enforced underneath it, in
//! the stream hyper reads from, so it holds for every call bollard makes.
//!
//! Connections are not pooled, so one connection carries one request and
//! the cap is a cap per response. The event stream is one long response:
//! after [`MAX_RESPONSE_BYTES`] of events it fails like a dockerd restart
//! and the observer reconnects and resyncs everything.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes one response may take, headers included. A host with a thousand
/// containers answers `/containers/json` in about 2 MB. Kept small because
/// bollard re-parses an unfinished event line on every read: an event
/// that never ends costs CPU quadratic in its length until the cap.
pub const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Seconds bollard waits for the headers of an answer.
const HEADER_TIMEOUT_SECS: u64 = 60;

/// A client for the Engine at `socket` whose connections fail once the
/// Engine has sent more than `cap` bytes on one of them, and what tells
/// that this happened (bollard's event stream keeps only the message of
/// the outermost error, "error reading a body from connection").
pub fn connect(socket: &Path, cap: u64) -> Result<(Docker, CapHit), bollard::errors::Error> {
    let hit = CapHit(Arc::new(AtomicBool::new(false)));
    let connector = CappedConnector {
        socket: Arc::new(socket.to_path_buf()),
        cap,
        hit: hit.clone(),
    };
    let client = Arc::new(
        Client::builder(TokioExecutor::new())
            // One request per connection: the cap is per response.
            .pool_max_idle_per_host(0)
            .build(connector),
    );
    let docker = Docker::connect_with_custom_transport(
        move |request: BollardRequest| {
            let client = Arc::clone(&client);
            async move {
                client
                    .request(request)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        },
        // Only the path of the URI matters: the connector ignores the host.
        Some("http://docker"),
        HEADER_TIMEOUT_SECS,
        API_DEFAULT_VERSION,
    )?;
    Ok((docker, hit))
}

/// Set once a connection of this client went over the cap.
#[derive(Clone)]
pub struct CapHit(Arc<AtomicBool>);

impl CapHit {
    /// `error`, with the cap named if the cap is what ended the answer.
    pub fn explain(&self, error: &bollard::errors::Error, cap: u64) -> String {
        let text = describe(error);
        let why = over_cap(cap).to_string();
        if self.0.load(Ordering::Relaxed) && !text.contains(&why) {
            format!("{text}: {why}")
        } else {
            text
        }
    }
}

#[derive(Clone)]
struct CappedConnector {
    socket: Arc<PathBuf>,
    cap: u64,
    hit: CapHit,
}

impl tower_service::Service<Uri> for CappedConnector {
    type Response = TokioIo<CappedStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (socket, cap, hit) = (Arc::clone(&self.socket), self.cap, self.hit.clone());
        Box::pin(async move {
            let inner = tokio::net::UnixStream::connect(socket.as_path()).await?;
            Ok(TokioIo::new(CappedStream {
                inner,
                cap,
                received: 0,
                hit,
            }))
        })
    }
}

/// A unix stream that fails its reads once `cap` bytes came in.
pub struct CappedStream {
    inner: tokio::net::UnixStream,
    cap: u64,
    received: u64,
    hit: CapHit,
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.received > self.cap {
            return Poll::Ready(Err(over_cap(self.cap)));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.received += (buf.filled().len() - before) as u64;
            if self.received > self.cap {
                // At most one read buffer beyond the cap ever reaches hyper.
                self.hit.0.store(true, Ordering::Relaxed);
                return Poll::Ready(Err(over_cap(self.cap)));
            }
        }
        poll
    }
}

fn over_cap(cap: u64) -> io::Error {
    io::Error::other(format!(
        "the Docker Engine sent more than {} MiB in one answer; refused",
        cap / (1024 * 1024)
    ))
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connection for CappedStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// `error` with its causes, `a: b: c`: bollard's own message for a failed
/// body read ("error reading a body from connection") hides why.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    // An I/O error under the client's layers says what happened in words
    // an administrator knows ("Error in the hyper legacy client: client
    // error (Connect)" says nothing).
    let mut layer = Some(error);
    while let Some(e) = layer {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io_words(io);
        }
        layer = e.source();
    }
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// An I/O error on Docker's socket, in plain words.
fn io_words(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => {
            "Docker's socket does not exist (dockerd is not running, or [docker] socket names another path)".into()
        }
        io::ErrorKind::ConnectionRefused => {
            "nobody listens on Docker's socket (dockerd is stopped or still starting)".into()
        }
        io::ErrorKind::PermissionDenied => "permission denied on Docker's socket".into(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            format!("dockerd closed the connection ({error})")
        }
        _ => format!("cannot talk to Docker: {error}"),
    }
}

#[cfg(test)]
mod plain_words {
    use super::*;

    /// An error of the client's layers, over an I/O error.
    #[derive(Debug)]
    struct Layer(io::Error);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Error in the hyper legacy client: client error (Connect)")
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn socket_errors_read_as_sentences() {
        let said = |kind| describe(&Layer(io::Error::from(kind)));
        assert!(said(io::ErrorKind::NotFound).starts_with("Docker's socket does not exist"));
        assert!(said(io::ErrorKind::ConnectionRefused).starts_with("nobody listens"));
        assert_eq!(
            said(io::ErrorKind::PermissionDenied),
            "permission denied on Docker's socket"
        );
        assert!(!said(io::ErrorKind::NotFound).contains("hyper"));
    }
}
