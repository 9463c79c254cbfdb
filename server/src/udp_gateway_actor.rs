//! `UdpGatewayActor`: owns the server's UDP socket.
//!
//! Inbound, a receive loop holds back sources over their rate, decodes each
//! datagram and hands the roster a typed message, or drops it with a logged
//! reason and a counter. Outbound, it sends what the roster asks, encoding
//! each datagram once however many receivers it has. It makes no decisions
//! about users.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use pigeon_shared::net::{recv_with, LocalSender, SendCounters, UdpSender};
use pigeon_shared::{Datagram, DecodeErrorKind, LogLimit, Verb};
use tokio::net::UdpSocket;
use tracing::{debug, trace, warn};

use crate::roster_actor::{LoginReceived, LogoutReceived, PingReceived, RosterActor};
use pigeon_shared::rate_limit::{Limited, RateLimiter, RateLimits};

/// Most datagrams queued while the kernel's send buffer is full.
pub const MAX_SEND_QUEUE: usize = 65_536;

/// The gateway actor. See the module documentation.
pub struct UdpGatewayActor {
    sender: LocalSender,
    roster: Addr<RosterActor>,
    stats: Arc<GatewayStats>,
    send_log: LogLimit,
    limits: RateLimits,
}

/// Send one datagram.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendDatagram {
    pub to: SocketAddr,
    pub datagram: Datagram,
}

/// Send one datagram to many receivers; it is encoded once.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct BroadcastDatagram {
    pub to: Vec<SocketAddr>,
    pub datagram: Datagram,
}

/// Stop the gateway and close its socket.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopGateway;

/// Counters the gateway keeps, readable from any thread.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams sent, and those the kernel refused or the full send queue
    /// dropped.
    pub send: Arc<SendCounters>,
    /// Undecodable datagrams, by [`DecodeErrorKind::index`].
    pub undecodable: [AtomicU64; DecodeErrorKind::ALL.len()],
    /// Well-formed datagrams the server does not take (`talk`, `Accept`,
    /// `refused`, ...).
    pub unexpected: AtomicU64,
    /// Datagrams held back because their address sent too many.
    pub limited_address: AtomicU64,
    /// Datagrams held back because their host sent too many.
    pub limited_host: AtomicU64,
}

/// A copy of [`GatewayStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStatsSnapshot {
    pub received: u64,
    pub sent: u64,
    pub send_failed: u64,
    pub undecodable: Vec<(DecodeErrorKind, u64)>,
    pub unexpected: u64,
    pub limited_address: u64,
    pub limited_host: u64,
}

impl GatewayStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> GatewayStatsSnapshot {
        GatewayStatsSnapshot {
            received: self.received.load(Ordering::Relaxed),
            sent: self.send.sent.load(Ordering::Relaxed),
            send_failed: self.send.failed.load(Ordering::Relaxed),
            undecodable: DecodeErrorKind::ALL
                .iter()
                .map(|&kind| (kind, self.undecodable[kind.index()].load(Ordering::Relaxed)))
                .collect(),
            unexpected: self.unexpected.load(Ordering::Relaxed),
            limited_address: self.limited_address.load(Ordering::Relaxed),
            limited_host: self.limited_host.load(Ordering::Relaxed),
        }
    }
}

impl GatewayStatsSnapshot {
    /// Every datagram dropped on the way in.
    pub fn dropped(&self) -> u64 {
        self.undecodable.iter().map(|(_, n)| n).sum::<u64>()
            + self.unexpected
            + self.limited_address
            + self.limited_host
    }
}

impl UdpGatewayActor {
    /// A gateway sending through `sender` (whose socket was converted
    /// inside this arbiter) that feeds `roster`.
    pub fn new(
        sender: UdpSender,
        roster: Addr<RosterActor>,
        stats: Arc<GatewayStats>,
        limits: RateLimits,
    ) -> Self {
        Self {
            sender: LocalSender::new(sender, stats.send.clone()),
            roster,
            stats,
            send_log: LogLimit::default(),
            limits,
        }
    }

    fn send(&mut self, bytes: &Bytes, to: SocketAddr) {
        match self.sender.send_bytes(bytes, to) {
            Ok(()) => trace!(%to, bytes = bytes.len(), "sent datagram"),
            Err(e) => {
                if let Some(held_back) = self.send_log.allow(Instant::now()) {
                    warn!(%to, error = %e, held_back, "datagram not sent");
                }
            }
        }
    }
}

impl Actor for UdpGatewayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let socket = self.sender.socket();
        let limiter = RateLimiter::new(self.limits, Instant::now());
        let receive = receive_loop(socket, self.roster.clone(), self.stats.clone(), limiter);
        ctx.spawn(receive.into_actor(self).map(|(), _, ctx| ctx.stop()));
        debug!(local = %self.sender.local_addr(), "gateway started");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        debug!(local = %self.sender.local_addr(), "gateway stopped");
    }
}

/// Reads datagrams until the roster goes away.
///
/// Forwarding uses `try_send`; when the roster's mailbox is full it waits
/// (`send().await`), so a flood backs up into the kernel's buffer, which
/// drops the excess, instead of growing memory here.
async fn receive_loop(
    socket: Arc<UdpSocket>,
    roster: Addr<RosterActor>,
    stats: Arc<GatewayStats>,
    mut limiter: RateLimiter,
) {
    let mut drop_log = LogLimit::default();
    loop {
        // Rate limits are checked before decoding: a flood costs a table
        // lookup per datagram, not a parse.
        let received = recv_with(&socket, |bytes, source| {
            let decoded = limiter
                .check(source, Instant::now())
                .map(|()| Datagram::decode(bytes));
            (decoded, bytes.len())
        })
        .await;
        let ((checked, len), source) = match received {
            Ok(received) => received,
            Err(e) => {
                // Per-datagram errors (ICMP reports surfacing on Linux) do
                // not end the loop.
                debug!(error = %e, "receive error");
                continue;
            }
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let decoded = match checked {
            Ok(decoded) => decoded,
            Err(limited) => {
                let counter = match limited {
                    Limited::Address => &stats.limited_address,
                    Limited::Host => &stats.limited_host,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = drop_log.allow(Instant::now()) {
                    warn!(%source, len, over = ?limited, held_back, "dropped datagram: over the rate limit");
                }
                continue;
            }
        };
        let datagram = match decoded {
            Ok(datagram) => datagram,
            Err(e) => {
                stats.undecodable[e.kind().index()].fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = drop_log.allow(Instant::now()) {
                    warn!(%source, len, reason = %e, held_back, "dropped datagram");
                }
                continue;
            }
        };
        trace!(%source, verb = %datagram.verb(), "received datagram");
        let delivered = match datagram {
            Datagram::Login(login) => forward(&roster, LoginReceived { login, source }).await,
            Datagram::Logout(logout) => forward(&roster, LogoutReceived { logout, source }).await,
            Datagram::Ping(ping) => forward(&roster, PingReceived { ping, source }).await,
            other => {
                stats.unexpected.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = drop_log.allow(Instant::now()) {
                    let verb: Verb = other.verb();
                    warn!(%source, %verb, held_back, "dropped datagram: not for the server");
                }
                true
            }
        };
        if !delivered {
            debug!("roster gone; receive loop ends");
            return;
        }
    }
}

/// Hands `msg` to the roster, waiting only when its mailbox is full.
/// `false` once the roster has stopped.
async fn forward<M>(roster: &Addr<RosterActor>, msg: M) -> bool
where
    M: Message<Result = ()> + Send + 'static,
    RosterActor: Handler<M>,
{
    match roster.try_send(msg) {
        Ok(()) => true,
        Err(SendError::Full(msg)) => roster.send(msg).await.is_ok(),
        Err(SendError::Closed(_)) => false,
    }
}

impl Handler<SendDatagram> for UdpGatewayActor {
    type Result = ();

    fn handle(&mut self, msg: SendDatagram, _: &mut Context<Self>) {
        let bytes = msg.datagram.to_bytes();
        self.send(&bytes, msg.to);
    }
}

impl Handler<BroadcastDatagram> for UdpGatewayActor {
    type Result = ();

    fn handle(&mut self, msg: BroadcastDatagram, _: &mut Context<Self>) {
        let bytes = msg.datagram.to_bytes();
        for to in msg.to {
            self.send(&bytes, to);
        }
    }
}

impl Handler<StopGateway> for UdpGatewayActor {
    type Result = ();

    fn handle(&mut self, _: StopGateway, ctx: &mut Context<Self>) {
        // Whatever waits for the kernel (a `closing` to every client, say)
        // gets one more chance.
        self.sender.flush();
        ctx.stop();
    }
}
