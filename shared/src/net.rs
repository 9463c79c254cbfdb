//! Socket plumbing shared by the server's gateway and the client's session
//! (cargo feature `net`): binding UDP sockets with large buffers,
//! address-family fixes, and a send path that never blocks an actor. With
//! the feature `faults` (tests and the load test only), [`faults::Faults`]
//! puts seeded loss, duplication, delay and reordering in front of a
//! sender.
//!
//! Decisions live elsewhere; this module only moves bytes. The protocol
//! modules of this crate never use it.

#[cfg(feature = "faults")]
pub mod faults;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

#[cfg(feature = "faults")]
use self::faults::{Fate, Faults};
use crate::Datagram;

/// Receive and send buffer asked of the kernel for busy UDP sockets. The
/// default (about 208 KiB) overflowed once a few hundred small datagrams
/// were in flight; the kernel caps the request at its `rmem_max`.
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Largest receive buffer a datagram is read into.
pub const RECV_BUFFER_BYTES: usize = 65_536;

thread_local! {
    /// One receive buffer per thread, shared by every socket polled on it:
    /// hundreds of peers in one process need not hold 64 KiB each.
    static RECV_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; RECV_BUFFER_BYTES]);
}

/// Waits for the next datagram on `socket` and returns `read(bytes,
/// source)` and the (canonical) source. `read` runs while the bytes sit in
/// this thread's shared buffer, so it must turn them into an owned value
/// (decode them) and must not receive on another socket itself.
pub async fn recv_with<T>(
    socket: &UdpSocket,
    mut read: impl FnMut(&[u8], SocketAddr) -> T,
) -> io::Result<(T, SocketAddr)> {
    loop {
        socket.readable().await?;
        let received = RECV_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            socket.try_recv_from(&mut buf).map(|(len, source)| {
                let source = canonical_source(source);
                (read(buf.get(..len).unwrap_or_default(), source), source)
            })
        });
        match received {
            Ok(received) => return Ok(received),
            // Readiness can be spurious; wait again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Binds a non-blocking UDP socket at `addr` with `buffer_bytes` of kernel
/// buffer each way (best effort: a smaller grant is not an error).
///
/// The socket is returned as a std socket, so that binding errors surface
/// synchronously where they can be reported; convert it with
/// [`UdpSocket::from_std`] inside the arbiter that will own it.
pub fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer_bytes > 0 {
        // Best effort: the kernel clamps to its maximum silently, and an
        // unprivileged process may be refused a larger one.
        let _ = socket.set_recv_buffer_size(buffer_bytes);
        let _ = socket.set_send_buffer_size(buffer_bytes);
    }
    // tokio requires non-blocking mode; without it a release build would
    // block the arbiter's thread on every receive.
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The source of a received datagram as the protocol sees it: an
/// IPv4-mapped IPv6 source (from a dual-stack socket) becomes IPv4.
pub fn canonical_source(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The destination to hand the kernel for `to` on a socket bound to
/// `local`: an IPv6 socket reaches IPv4 hosts through mapped addresses.
pub fn outgoing_addr(to: SocketAddr, local: SocketAddr) -> SocketAddr {
    match (to.ip(), local.ip()) {
        (IpAddr::V4(v4), IpAddr::V6(_)) => {
            SocketAddr::V6(SocketAddrV6::new(v4.to_ipv6_mapped(), to.port(), 0, 0))
        }
        _ => to,
    }
}

/// What happened to one datagram handed to [`UdpSender::send`].
#[derive(Debug)]
pub enum SendOutcome {
    /// Handed to the kernel.
    Sent,
    /// The kernel's buffer is full: queued, to go out on the next flush.
    Queued,
    /// The queue is full too: dropped.
    QueueFull,
    /// The kernel refused it (unreachable network, firewall): dropped.
    Failed(io::Error),
}

/// Sends datagrams without ever awaiting: straight to the kernel while it
/// has room, into a bounded queue while it has not. The owner calls
/// [`UdpSender::flush`] once the socket is writable again.
#[derive(Debug)]
pub struct UdpSender {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    queue: VecDeque<(Bytes, SocketAddr)>,
    max_queue: usize,
    #[cfg(feature = "faults")]
    faults: Option<Faults>,
}

/// What a flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    pub sent: u64,
    pub failed: u64,
    /// The kernel's buffer filled again: wait for writability, then flush.
    pub blocked: bool,
}

impl UdpSender {
    /// A sender on `socket`, queueing at most `max_queue` datagrams.
    pub fn new(socket: Arc<UdpSocket>, max_queue: usize) -> io::Result<Self> {
        let local = socket.local_addr()?;
        Ok(Self {
            socket,
            local,
            queue: VecDeque::new(),
            max_queue,
            #[cfg(feature = "faults")]
            faults: None,
        })
    }

    /// Puts a fault-injection layer in front of the socket.
    #[cfg(feature = "faults")]
    pub fn with_faults(mut self, faults: Option<Faults>) -> Self {
        self.faults = faults;
        self
    }

    /// The socket.
    pub fn socket(&self) -> &Arc<UdpSocket> {
        &self.socket
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether datagrams wait for the kernel.
    pub fn is_blocked(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Sends `bytes` to `to`, or queues it behind earlier datagrams so that
    /// order is kept.
    pub fn send(&mut self, bytes: &Bytes, to: SocketAddr) -> SendOutcome {
        let to = outgoing_addr(to, self.local);
        #[cfg(feature = "faults")]
        if let Some(faults) = &self.faults {
            match faults.fate() {
                // As far as the sender can tell, a lost datagram was sent.
                Fate::Lost => return SendOutcome::Sent,
                Fate::Deliver { copies, delay } => {
                    for _ in 1..copies {
                        let _ = self.socket.try_send_to(bytes, to);
                    }
                    if let Some(delay) = delay {
                        let socket = self.socket.clone();
                        let bytes = bytes.clone();
                        tokio::task::spawn_local(async move {
                            tokio::time::sleep(delay).await;
                            let _ = socket.send_to(&bytes, to).await;
                        });
                        return SendOutcome::Sent;
                    }
                }
            }
        }
        if !self.queue.is_empty() {
            return self.enqueue(bytes, to);
        }
        match self.socket.try_send_to(bytes, to) {
            Ok(_) => SendOutcome::Sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.enqueue(bytes, to),
            Err(e) => SendOutcome::Failed(e),
        }
    }

    /// Sends what is queued, until done or the kernel is full again.
    pub fn flush(&mut self) -> FlushReport {
        let mut report = FlushReport::default();
        while let Some((bytes, to)) = self.queue.front() {
            match self.socket.try_send_to(bytes, *to) {
                Ok(_) => report.sent += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    report.blocked = true;
                    return report;
                }
                Err(_) => report.failed += 1,
            }
            self.queue.pop_front();
        }
        report
    }

    fn enqueue(&mut self, bytes: &Bytes, to: SocketAddr) -> SendOutcome {
        if self.queue.len() >= self.max_queue {
            return SendOutcome::QueueFull;
        }
        self.queue.push_back((bytes.clone(), to));
        SendOutcome::Queued
    }
}

/// Counts of what a [`LocalSender`] sent, readable from any thread.
#[derive(Debug, Default)]
pub struct SendCounters {
    /// Datagrams handed to the kernel (or to the fault layer).
    pub sent: AtomicU64,
    /// Datagrams the kernel refused or the full queue dropped.
    pub failed: AtomicU64,
}

/// A [`UdpSender`] shared by the actors of one arbiter (one thread): the
/// session and its conversations send from one socket without a mailbox
/// hop per datagram. When the kernel's buffer is full, a task on the same
/// thread waits for room and flushes the queue.
#[derive(Debug, Clone)]
pub struct LocalSender {
    inner: Rc<RefCell<UdpSender>>,
    flushing: Rc<Cell<bool>>,
    counters: Arc<SendCounters>,
}

impl LocalSender {
    /// Shares `sender`, counting into `counters`.
    pub fn new(sender: UdpSender, counters: Arc<SendCounters>) -> Self {
        Self {
            inner: Rc::new(RefCell::new(sender)),
            flushing: Rc::new(Cell::new(false)),
            counters,
        }
    }

    /// The socket.
    pub fn socket(&self) -> Arc<UdpSocket> {
        self.inner.borrow().socket().clone()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.borrow().local_addr()
    }

    /// Encodes and sends `datagram` to `to`.
    pub fn send(&self, datagram: &Datagram, to: SocketAddr) -> Result<(), io::Error> {
        self.send_bytes(&datagram.to_bytes(), to)
    }

    /// Sends `bytes` to `to`; an error says why the datagram was dropped.
    pub fn send_bytes(&self, bytes: &Bytes, to: SocketAddr) -> Result<(), io::Error> {
        let outcome = self.inner.borrow_mut().send(bytes, to);
        match outcome {
            SendOutcome::Sent => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            SendOutcome::Queued => {
                self.flush_later();
                Ok(())
            }
            SendOutcome::QueueFull => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                Err(io::Error::new(io::ErrorKind::WouldBlock, "send queue full"))
            }
            SendOutcome::Failed(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Sends what is queued, as far as the kernel takes it now.
    pub fn flush(&self) -> FlushReport {
        let report = self.inner.borrow_mut().flush();
        self.counters.sent.fetch_add(report.sent, Ordering::Relaxed);
        self.counters
            .failed
            .fetch_add(report.failed, Ordering::Relaxed);
        report
    }

    fn flush_later(&self) {
        if self.flushing.replace(true) {
            return;
        }
        let this = self.clone();
        tokio::task::spawn_local(async move {
            loop {
                let socket = this.socket();
                if socket.writable().await.is_err() {
                    break;
                }
                if !this.flush().blocked {
                    break;
                }
            }
            this.flushing.set(false);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_sources_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:99".parse().unwrap();
        assert_eq!(canonical_source(mapped), "10.1.2.3:99".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:99".parse().unwrap();
        assert_eq!(canonical_source(v6), v6);
    }

    #[test]
    fn ipv6_sockets_reach_ipv4_hosts_through_mapped_addresses() {
        let local: SocketAddr = "[::]:7788".parse().unwrap();
        let to: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert_eq!(
            outgoing_addr(to, local),
            "[::ffff:10.1.2.3]:5000".parse::<SocketAddr>().unwrap()
        );
        let local4: SocketAddr = "0.0.0.0:7788".parse().unwrap();
        assert_eq!(outgoing_addr(to, local4), to);
    }

    #[test]
    fn binding_a_port_in_use_is_an_error() {
        let first = bind_udp("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let taken = first.local_addr().unwrap();
        let err = bind_udp(taken, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
