//! Whether anybody changed one of the guard's tables while it was read.
//! Reading a table back takes several dumps (chains, rules, sets, the
//! elements of each set), and the namespace's generation moves with every
//! commit by anybody: on a host where another program commits to a table
//! of its own a hundred times a second, a read of 10,000 elements almost
//! never finishes within one generation. What matters is whether a commit
//! touched *this* table between the start and the end of the read: every
//! transaction's notifications name the tables it touched, and the
//! witness listens to them for the duration of the read.
//!
//! Exact, not a heuristic: a transaction bumps the generation before it
//! sends its notifications, and the witness joins the notification group
//! before the read's first generation is taken, so every transaction after
//! that generation is heard; the read's last generation is known, and the
//! witness waits for the NEWGEN that closes it.

use std::time::{Duration, Instant};

use netlink_sys::Socket;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::error::NftError;
use crate::kernel_constants::NFNLGRP_NFTABLES;
use crate::monitor::Assembler;
use crate::socket::NfSocket;

/// Room for the notifications of a read's span. A flood (a restore of a
/// copy of the guard's table by the monitor) overflows it, which counts as
/// touched: correct, and the read is repeated.
const RECEIVE_BUFFER: usize = 1 << 20;
/// How long the witness waits for the notifications of a transaction whose
/// generation the read has already seen: they follow the generation's
/// bump within the same commit, so this only bounds a committer that was
/// descheduled in between.
const WAIT: Duration = Duration::from_secs(1);

/// A notification socket of the handle's namespace (opened with it), a
/// member of the notification group only while a read is witnessed: the
/// guard's own commits of thousands of elements are never copied to it.
pub(crate) struct ReadWitness {
    socket: Socket,
    assembler: Assembler,
}

impl ReadWitness {
    /// Opens the socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<ReadWitness, NftError> {
        let socket = NfSocket::open_monitor(Some(RECEIVE_BUFFER))?;
        socket
            .drop_membership(NFNLGRP_NFTABLES)
            .map_err(NftError::io("leave the nftables multicast group"))?;
        Ok(ReadWitness {
            socket,
            assembler: Assembler::default(),
        })
    }

    /// Starts listening. Call it before taking the generation the read
    /// starts at; listening ends when the returned value is dropped.
    pub(crate) fn listen(&mut self) -> Result<Listening<'_>, NftError> {
        // What the last read left queued (or an overflow it left
        // pending) has nothing to say about this one.
        self.drain();
        self.assembler.reset();
        self.socket
            .add_membership(NFNLGRP_NFTABLES)
            .map_err(NftError::io("join the nftables multicast group"))?;
        Ok(Listening { witness: self })
    }

    fn drain(&mut self) {
        if self.socket.set_non_blocking(true).is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut errors = 0;
        loop {
            match self.socket.recv(&mut &mut buf[..], 0) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // A pending overflow is reported once; anything else
                // repeating would loop forever.
                Err(_) if errors < 2 => errors += 1,
                Err(_) => break,
            }
        }
        let _ = self.socket.set_non_blocking(false);
    }
}

/// A read being witnessed.
pub(crate) struct Listening<'a> {
    witness: &'a mut ReadWitness,
}

impl Listening<'_> {
    /// Whether no transaction committed after generation `from`, up to and
    /// including `to`, may have touched table `inet NAME`. `false` when
    /// that cannot be known: notifications were lost, or those of `to`
    /// did not come within [`WAIT`].
    pub(crate) fn untouched(&mut self, name: &str, from: u32, to: u32) -> bool {
        let span = to.wrapping_sub(from);
        let deadline = Instant::now() + WAIT;
        let ReadWitness { socket, assembler } = &mut *self.witness;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(micros) = i64::try_from(left.as_micros()) else {
                return false;
            };
            if micros == 0
                || setsockopt(
                    &*socket,
                    sockopt::ReceiveTimeout,
                    &TimeVal::new(micros / 1_000_000, micros % 1_000_000),
                )
                .is_err()
            {
                return false;
            }
            // Lost notifications (ENOBUFS), a timeout or any other error:
            // nothing can be said.
            let Ok((data, _)) = socket.recv_from_full() else {
                return false;
            };
            for change in assembler.feed(&data) {
                let after_from = change.genid.wrapping_sub(from);
                // Committed before the read began (its notifications were
                // still on their way when listening began), or after it.
                if after_from == 0 || after_from > span {
                    continue;
                }
                if change.may_touch_table(name) {
                    return false;
                }
                if after_from == span {
                    return true;
                }
            }
        }
    }
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        // Failing to leave costs only notifications queued for nobody,
        // drained before the next read.
        let _ = self.witness.socket.drop_membership(NFNLGRP_NFTABLES);
    }
}
