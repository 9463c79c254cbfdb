//! The machine's raw UDP ceiling: datagrams per second from one socket to
//! many over loopback, with no actors and no protocol, measured again in
//! every load run so that Pigeon's figures can be read against it.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pigeon_shared::net::bind_udp;
use serde::Serialize;

/// What the ceiling measurement found.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ceiling {
    /// Datagrams the sender handed to the kernel per second.
    pub sent_per_s: f64,
    /// Datagrams the receivers got per second.
    pub received_per_s: f64,
    /// Payload of each datagram, bytes.
    pub payload_bytes: usize,
    /// Receiving sockets.
    pub receivers: usize,
}

impl Ceiling {
    /// The rate Pigeon is compared against: datagrams delivered per second
    /// (what the sender managed, if the receivers kept up with all of it).
    pub fn datagrams_per_s(&self) -> f64 {
        self.received_per_s.min(self.sent_per_s)
    }
}

/// The best of `runs` measurements, each lasting a share of `duration`:
/// the ceiling is what the machine can do, and a busy moment says less
/// about that than a quiet one.
pub fn best_of(
    runs: usize,
    receivers: usize,
    payload_bytes: usize,
    duration: Duration,
) -> io::Result<Ceiling> {
    let each = duration / u32::try_from(runs.max(1)).unwrap_or(1);
    let mut best: Option<Ceiling> = None;
    for _ in 0..runs.max(1) {
        let run = measure(receivers, payload_bytes, each)?;
        if best.is_none_or(|b| run.datagrams_per_s() > b.datagrams_per_s()) {
            best = Some(run);
        }
    }
    best.ok_or_else(|| io::Error::other("no ceiling measured"))
}

/// Sends `payload_bytes`-byte datagrams from one socket round-robin to
/// `receivers` sockets for `duration`, while one thread drains them.
pub fn measure(receivers: usize, payload_bytes: usize, duration: Duration) -> io::Result<Ceiling> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let buffer = 4 << 20;
    let sockets: Vec<UdpSocket> = (0..receivers.max(1))
        .map(|_| bind_udp(loopback, buffer))
        .collect::<io::Result<_>>()?;
    let targets: Vec<SocketAddr> = sockets
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<io::Result<_>>()?;
    let sender = UdpSocket::bind(loopback)?;
    socket2::SockRef::from(&sender).set_send_buffer_size(buffer)?;

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let drain = {
        let stop = stop.clone();
        let received = received.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for socket in &sockets {
                    while socket.recv_from(&mut buf).is_ok() {
                        count += 1;
                    }
                }
            }
            // What arrived before the stop was seen.
            for socket in &sockets {
                while socket.recv_from(&mut buf).is_ok() {
                    count += 1;
                }
            }
            received.store(count, Ordering::Relaxed);
        })
    };

    // A login broadcast's size: the payload is ASCII-ish bytes, as UTF-16.
    let payload = vec![0x61u8; payload_bytes];
    let started = Instant::now();
    let mut sent = 0u64;
    let mut index = 0usize;
    while started.elapsed() < duration {
        for _ in 0..256 {
            let to = targets[index % targets.len()];
            index += 1;
            if sender.send_to(&payload, to).is_ok() {
                sent += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Give the drain a moment to empty the buffers, then stop it.
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    let received = received.load(Ordering::Relaxed);
    Ok(Ceiling {
        sent_per_s: sent as f64 / elapsed,
        received_per_s: received as f64 / elapsed,
        payload_bytes,
        receivers,
    })
}
