//! A UDP echo server for test containers (busybox has none):
//! `pg-udp-echo PORT` answers every datagram with itself, IPv4 and IPv6.

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(53);
    let socket = match std::net::UdpSocket::bind(("::", port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pg-udp-echo: bind [::]:{port}: {e}");
            std::process::exit(1);
        }
    };
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        let _ = socket.send_to(&buf[..n], from);
    }
}
