//! An attacker's view of exposure: connection attempts from an outside
//! namespace to one target, counted as they complete.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::NetNs;

/// One new attempt every ~2 ms, each given 50 ms to complete. A dropped
/// SYN costs the whole timeout, so the attempts are spread over staggered
/// threads, each starting one attempt per [`Prober::PERIOD`]. A completed
/// handshake is exposure: the SYN passed the guard.
pub struct Prober {
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    connected: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Prober {
    pub const THREADS: u32 = 25;
    pub const PERIOD: Duration = Duration::from_millis(50);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(50);

    pub fn start(ns: &NetNs, target: SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicUsize::new(0));
        let connected = Arc::new(AtomicUsize::new(0));
        let threads = (0..Self::THREADS)
            .map(|k| {
                let (stop, attempts, connected) =
                    (stop.clone(), attempts.clone(), connected.clone());
                ns.spawn(move || {
                    std::thread::sleep(Self::PERIOD / Self::THREADS * k);
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        attempts.fetch_add(1, Ordering::Relaxed);
                        if TcpStream::connect_timeout(&target, Self::CONNECT_TIMEOUT).is_ok() {
                            connected.fetch_add(1, Ordering::Relaxed);
                        }
                        std::thread::sleep(Self::PERIOD.saturating_sub(started.elapsed()));
                    }
                })
            })
            .collect();
        Prober {
            stop,
            attempts,
            connected,
            threads,
        }
    }

    /// Stops probing; returns (attempts, connected).
    pub fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().expect("prober thread");
        }
        (
            self.attempts.load(Ordering::Relaxed),
            self.connected.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Prober {
    /// A test that fails before `finish` still stops its threads.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
