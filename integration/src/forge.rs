//! Forging UDP datagrams with any source address, as an off-path attacker
//! can: a raw IPv4 socket that writes its own IP and UDP headers. Needs
//! root (or CAP_NET_RAW); [`Forger::new`] says so when it cannot open one,
//! and the tests that need it skip with that reason.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, Ordering};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A raw socket for forged datagrams.
pub struct Forger {
    socket: Socket,
}

static PACKET_ID: AtomicU16 = AtomicU16::new(1);

impl Forger {
    /// A raw IPv4 socket whose datagrams carry the headers we write.
    pub fn new() -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))?;
        socket.set_header_included_v4(true)?;
        Ok(Self { socket })
    }

    /// A raw socket, or why the test that needs one is skipped.
    pub fn or_skip(test: &str) -> Option<Self> {
        match Self::new() {
            Ok(forger) => Some(forger),
            Err(e) => {
                eprintln!(
                    "{test}: skipped: no raw socket to forge source addresses ({e}); \
                     run as root (CI does)"
                );
                None
            }
        }
    }

    /// Sends `payload` to `to` as if from `from` (both IPv4).
    pub fn send(&self, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> io::Result<()> {
        let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
            return Err(io::Error::other("forging needs IPv4 addresses"));
        };
        let packet = packet(from, to, payload)?;
        let dest = SockAddr::from(SocketAddrV4::new(*to.ip(), 0));
        self.socket.send_to(&packet, &dest)?;
        Ok(())
    }
}

/// An IPv4 packet carrying one UDP datagram (no UDP checksum: optional in
/// IPv4; the kernel fills in the IP checksum).
fn packet(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> io::Result<Vec<u8>> {
    let udp_len = u16::try_from(8 + payload.len()).map_err(|_| io::Error::other("too long"))?;
    let total = udp_len
        .checked_add(20)
        .ok_or_else(|| io::Error::other("too long"))?;
    let id = PACKET_ID.fetch_add(1, Ordering::Relaxed);
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    Ok(p)
}
