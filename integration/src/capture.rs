//! Capturing every UDP datagram on the loopback interface, as an on-path
//! observer would: a packet socket (`AF_PACKET`) on `lo`, read on a thread
//! of its own. Needs root (or CAP_NET_RAW); [`Capture::or_skip`] says so
//! when it cannot open one, and the tests that need it skip with that
//! reason.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// `ETH_P_ALL`: every protocol.
const ETH_P_ALL: u16 = 0x0003;

/// One captured UDP datagram over IPv4.
#[derive(Debug, Clone)]
pub struct Captured {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

/// A capture running until dropped or [`Capture::stop`]ped.
pub struct Capture {
    seen: Arc<Mutex<Vec<Captured>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing on every interface (loopback included).
    pub fn start() -> io::Result<Self> {
        let protocol = Protocol::from(i32::from(ETH_P_ALL.to_be()));
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(protocol))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (into, until) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            let mut socket = socket;
            while !until.load(Ordering::Relaxed) {
                let Ok(len) = socket.read(&mut buf) else {
                    continue;
                };
                if let Some(datagram) = buf.get(..len).and_then(udp_in_ethernet) {
                    if let Ok(mut seen) = into.lock() {
                        seen.push(datagram);
                    }
                }
            }
        });
        Ok(Self {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// A capture, or why the test that needs one is skipped.
    pub fn or_skip(test: &str) -> Option<Self> {
        match Self::start() {
            Ok(capture) => Some(capture),
            Err(e) => {
                eprintln!("{test}: skipped: cannot capture packets ({e}); run as root (CI does)");
                None
            }
        }
    }

    /// Every datagram captured so far.
    pub fn datagrams(&self) -> Vec<Captured> {
        self.seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }

    /// Stops capturing; what was captured.
    pub fn stop(mut self) -> Vec<Captured> {
        self.halt();
        self.datagrams()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The UDP datagram in an Ethernet frame (loopback frames have an
/// all-zero Ethernet header), if it holds one over IPv4.
fn udp_in_ethernet(frame: &[u8]) -> Option<Captured> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype != 0x0800 {
        return None;
    }
    let ip = frame.get(14..)?;
    let header = usize::from(ip.first()? & 0x0F) * 4;
    if *ip.get(9)? != 17 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let src = Ipv4Addr::new(*ip.get(12)?, *ip.get(13)?, *ip.get(14)?, *ip.get(15)?);
    let dst = Ipv4Addr::new(*ip.get(16)?, *ip.get(17)?, *ip.get(18)?, *ip.get(19)?);
    let udp = ip.get(header..total.min(ip.len()))?;
    let sport = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    Some(Captured {
        from: SocketAddr::V4(SocketAddrV4::new(src, sport)),
        to: SocketAddr::V4(SocketAddrV4::new(dst, dport)),
        payload: udp.get(8..)?.to_vec(),
    })
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
