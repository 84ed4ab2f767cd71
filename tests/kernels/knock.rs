//! The kernel matrix's traffic: a listener (the container's server, and a
//! docker-proxy-like listener on the host) and a prober that knocks every
//! few milliseconds and counts the connections that got through. Standard
//! library only, so it compiles in seconds with `rustc` and runs in the
//! small guest (tests/kernels/guest.sh).
//!
//!   knock listen ADDR...
//!       accept (and close) connections on every ADDR until killed
//!   knock probe STOPFILE INTERVAL_MS TIMEOUT_MS ADDR...
//!       start a connection attempt to every ADDR each INTERVAL_MS, each
//!       given TIMEOUT_MS to complete, until STOPFILE exists; then print
//!       one line per ADDR: `ADDR attempts=N through=M ports=P,...` (the
//!       local ports of the first connections that got through, to find
//!       them in conntrack)
//!
//! A connection "got through" when the TCP handshake completed: a SYN the
//! guard dropped is retransmitted only after 1 s, long after TIMEOUT_MS.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// At most this many attempts per address wait at once, so a long window
/// of dropped SYNs cannot pile up threads in a 1 GiB guest.
const MAX_IN_FLIGHT: usize = 200;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("listen") => listen(&args[1..]),
        Some("probe") => probe(&args[1..]),
        _ => Err("usage: knock listen ADDR... | knock probe STOPFILE INTERVAL_MS TIMEOUT_MS ADDR...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knock: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse_addrs(args: &[String]) -> Result<Vec<SocketAddr>, String> {
    if args.is_empty() {
        return Err("no address given".into());
    }
    args.iter()
        .map(|a| a.parse().map_err(|e| format!("{a}: {e}")))
        .collect()
}

fn listen(args: &[String]) -> Result<(), String> {
    let mut threads = Vec::new();
    for addr in parse_addrs(args)? {
        let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        threads.push(thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn probe(args: &[String]) -> Result<(), String> {
    let [stop, interval, timeout, addrs @ ..] = args else {
        return Err("probe STOPFILE INTERVAL_MS TIMEOUT_MS ADDR...".into());
    };
    let ms = |s: &str| s.parse::<u64>().map(Duration::from_millis).map_err(|e| format!("{s}: {e}"));
    let (interval, timeout) = (ms(interval)?, ms(timeout)?);
    let stop = Path::new(stop).to_path_buf();
    let knockers: Vec<_> = parse_addrs(addrs)?
        .into_iter()
        .map(|addr| {
            let stop = stop.clone();
            thread::spawn(move || knock(addr, &stop, interval, timeout))
        })
        .collect();
    for k in knockers {
        let (addr, attempts, through, ports) = k.join().map_err(|_| "a knocker panicked")?;
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        println!("{addr} attempts={attempts} through={through} ports={}", ports.join(","));
    }
    Ok(())
}

/// How many local ports of connections that got through are reported.
const PORTS_REPORTED: usize = 20;

fn knock(
    addr: SocketAddr,
    stop: &Path,
    interval: Duration,
    timeout: Duration,
) -> (SocketAddr, usize, usize, Vec<u16>) {
    let through = Arc::new(AtomicUsize::new(0));
    let ports = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut attempts = 0;
    let mut pending = Vec::new();
    while !stop.exists() {
        if in_flight.load(Ordering::SeqCst) < MAX_IN_FLIGHT {
            attempts += 1;
            in_flight.fetch_add(1, Ordering::SeqCst);
            let (through, in_flight) = (Arc::clone(&through), Arc::clone(&in_flight));
            let ports = Arc::clone(&ports);
            pending.push(thread::spawn(move || {
                if let Ok(stream) = TcpStream::connect_timeout(&addr, timeout) {
                    through.fetch_add(1, Ordering::SeqCst);
                    if let (Ok(local), Ok(mut ports)) = (stream.local_addr(), ports.lock()) {
                        if ports.len() < PORTS_REPORTED {
                            ports.push(local.port());
                        }
                    }
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        pending.retain(|t: &thread::JoinHandle<()>| !t.is_finished());
        thread::sleep(interval);
    }
    for t in pending {
        let _ = t.join();
    }
    let ports = ports.lock().map(|p| p.clone()).unwrap_or_default();
    (addr, attempts, through.load(Ordering::SeqCst), ports)
}
