//! sd_notify, never blocking. The sd-notify crate sends on a blocking
//! socket: when the receiver's queue is full (a busy systemd, a test that
//! stopped reading) the reconcile loop would stall inside a status update.
//! Here a full queue drops the datagram instead.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STATUS=...`, several lines allowed) to
/// `$NOTIFY_SOCKET`, if set. Best effort.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "sd_notify message dropped");
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd wants beside it.
pub fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as i128 * 1_000_000 + t.tv_nsec() as i128 / 1_000)
        .unwrap_or(0);
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}\n"));
}
