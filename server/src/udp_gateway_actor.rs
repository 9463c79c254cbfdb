//! `UdpGatewayActor`: owns the server's UDP socket.
//!
//! Inbound, a receive loop holds back sources over their rate, decodes each
//! datagram and hands the roster a typed message, or drops it with a logged
//! reason and a counter. Outbound, it sends what the roster asks, encoding
//! each datagram once however many receivers it has. It makes no decisions
//! about users.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use pigeon_shared::net::{recv_with, LocalSender, SendCounters, UdpSender};
use pigeon_shared::rate_limit::{Limited, Rate, RateLimiter, RateLimits};
use pigeon_shared::seal::{seal_bytes, SessionKey};
use pigeon_shared::{Datagram, DecodeError, DecodeErrorKind, LogLimit, Verb};
use tokio::net::UdpSocket;
use tracing::{debug, trace, warn};

use crate::cluster_actor::RelayAcross;
use crate::directory::Directory;
use crate::handshake_actor::{AnswerLogin, HandshakeActor, MAX_WAITING};
use crate::relay::{Hop, Relay, RelayConfig, RelayDrop};
use crate::roster_actor::{LoginReceived, LogoutReceived, MeetReceived, PingReceived, RosterActor};

/// Most datagrams queued while the kernel's send buffer is full.
pub const MAX_SEND_QUEUE: usize = 65_536;

/// The gateway actor. See the module documentation.
pub struct UdpGatewayActor {
    sender: LocalSender,
    roster: Addr<RosterActor>,
    stats: Arc<GatewayStats>,
    send_log: LogLimit,
    limits: RateLimits,
    /// Who holds which session, to recognise authenticated keepalives.
    directory: Arc<Directory>,
    /// Where logins with a handshake go first (`None`: to the roster),
    /// and how many wait there.
    handshakes: Option<(Addr<HandshakeActor>, Arc<AtomicUsize>)>,
    /// The relay's limits (`None`: no relay).
    relay: Option<RelayConfig>,
    /// Where frames for users of other servers go (set once the cluster
    /// is joined; empty for a server alone).
    across: Arc<OnceLock<Recipient<RelayAcross>>>,
}

/// What one session may send the server, proven (keepalives every sixth
/// of the liveness timeout, a few logout retries): far more than it needs.
const SESSION_RATE: RateLimits = RateLimits {
    per_address: Rate {
        per_second: 20.0,
        burst: 40.0,
    },
    per_host: Rate {
        per_second: 1e9,
        burst: 1e9,
    },
    max_sources: 65_536,
    max_addresses_per_host: 65_536,
};

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

/// Send one datagram to many Pigeon sessions, each copy sealed with its
/// session's key (plain where there is none); it is encoded once.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct BroadcastSealedDatagram {
    pub to: Vec<(SocketAddr, Option<SessionKey>)>,
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
    /// Keepalives and logouts proven by their session's token, from the
    /// session's own endpoint: checked apart from everything else.
    pub authenticated: AtomicU64,
    /// ... of which held back because the session sent too many.
    pub limited_session: AtomicU64,
    /// End-to-end frames relayed from one user to another.
    pub relayed: AtomicU64,
    /// Requests to relay that were dropped, by [`RelayDrop::index`]
    /// (and, with the relay off, all of them as `not-a-session`).
    pub relay_dropped: [AtomicU64; RelayDrop::ALL.len()],
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
    pub authenticated: u64,
    pub limited_session: u64,
    pub relayed: u64,
    pub relay_dropped: Vec<(RelayDrop, u64)>,
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
            authenticated: self.authenticated.load(Ordering::Relaxed),
            limited_session: self.limited_session.load(Ordering::Relaxed),
            relayed: self.relayed.load(Ordering::Relaxed),
            relay_dropped: RelayDrop::ALL
                .iter()
                .map(|&why| (why, self.relay_dropped[why.index()].load(Ordering::Relaxed)))
                .collect(),
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
            + self.limited_session
            + self.relay_dropped.iter().map(|(_, n)| n).sum::<u64>()
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
        directory: Arc<Directory>,
    ) -> Self {
        Self {
            sender: LocalSender::new(sender, stats.send.clone()),
            roster,
            stats,
            send_log: LogLimit::default(),
            limits,
            directory,
            handshakes: None,
            relay: None,
            across: Arc::new(OnceLock::new()),
        }
    }

    /// Where frames for users online through another server of the
    /// cluster go, once the cluster is joined.
    pub fn with_cluster_slot(mut self, across: Arc<OnceLock<Recipient<RelayAcross>>>) -> Self {
        self.across = across;
        self
    }

    /// End-to-end frames between Pigeon users are relayed, within
    /// `config`'s limits.
    pub fn with_relay(mut self, config: RelayConfig) -> Self {
        self.relay = Some(config);
        self
    }

    /// Logins with a handshake go to `handshakes` to be answered, and on to
    /// the roster from there.
    pub fn with_handshakes(
        mut self,
        handshakes: Addr<HandshakeActor>,
        waiting: Arc<AtomicUsize>,
    ) -> Self {
        self.handshakes = Some((handshakes, waiting));
        self
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
        let limiter = Limiters {
            all: RateLimiter::new(self.limits, Instant::now()),
            sessions: RateLimiter::new(SESSION_RATE, Instant::now()),
            directory: self.directory.clone(),
        };
        let relay = self
            .relay
            .map(|config| (Relay::new(config, Instant::now()), self.directory.clone()));
        let receive = receive_loop(
            socket,
            self.roster.clone(),
            self.handshakes.clone(),
            self.stats.clone(),
            limiter,
            relay,
            self.across.clone(),
        );
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
    handshakes: Option<(Addr<HandshakeActor>, Arc<AtomicUsize>)>,
    stats: Arc<GatewayStats>,
    mut limiter: Limiters,
    mut relay: Option<(Relay, Arc<Directory>)>,
    across: Arc<OnceLock<Recipient<RelayAcross>>>,
) {
    let mut drop_log = LogLimit::default();
    loop {
        let received = recv_with(&socket, |bytes, source| {
            (limiter.check(bytes, source, Instant::now()), bytes.len())
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
            Checked::Session(decoded) => {
                stats.authenticated.fetch_add(1, Ordering::Relaxed);
                Ok(decoded)
            }
            Checked::Other(decoded) => decoded,
            Checked::Limited(limited) => {
                let counter = match limited {
                    Over::Address => &stats.limited_address,
                    Over::Host => &stats.limited_host,
                    Over::Session => &stats.limited_session,
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
            Datagram::Login(login) => match &handshakes {
                Some((pool, waiting)) if login.pigeon.is_some_and(|ext| ext.hello.is_some()) => {
                    // Bounded by hand (a sync actor's mailbox has no
                    // capacity to set): past the bound, wait for room.
                    while waiting.load(Ordering::Acquire) >= MAX_WAITING {
                        actix_rt::time::sleep(Duration::from_millis(1)).await;
                    }
                    waiting.fetch_add(1, Ordering::AcqRel);
                    pool.do_send(AnswerLogin { login, source });
                    pool.connected()
                }
                _ => {
                    let login = LoginReceived {
                        login,
                        source,
                        prepared: None,
                    };
                    forward(&roster, login).await
                }
            },
            Datagram::Logout(logout) => forward(&roster, LogoutReceived { logout, source }).await,
            Datagram::Ping(ping) => forward(&roster, PingReceived { ping, source }).await,
            Datagram::Meet(meet) => forward(&roster, MeetReceived { meet, source, len }).await,
            Datagram::Relay(request) => {
                let decided = match &mut relay {
                    Some((relay, directory)) => {
                        relay.forward(&request, source, Instant::now(), &**directory)
                    }
                    None => Err(RelayDrop::NotASession),
                };
                let decided = match decided {
                    Ok(Hop::Remote(server)) => match across.get() {
                        Some(cluster) => {
                            stats.relayed.fetch_add(1, Ordering::Relaxed);
                            cluster.do_send(RelayAcross {
                                server,
                                to: request.to.clone(),
                                secure: request.secure.clone(),
                            });
                            Ok(None)
                        }
                        None => Err(RelayDrop::NoSuchPeer),
                    },
                    Ok(Hop::Local(to)) => Ok(Some(to)),
                    Err(why) => Err(why),
                };
                match decided {
                    Ok(None) => {}
                    Ok(Some(to)) => {
                        let bytes = Datagram::Relayed(request.secure).to_bytes();
                        match socket.send_to(&bytes, to).await {
                            Ok(_) => {
                                stats.relayed.fetch_add(1, Ordering::Relaxed);
                                stats.send.sent.fetch_add(1, Ordering::Relaxed);
                                trace!(%source, %to, bytes = bytes.len(), "relayed");
                            }
                            Err(e) => {
                                stats.send.failed.fetch_add(1, Ordering::Relaxed);
                                debug!(%to, error = %e, "relayed frame not sent");
                            }
                        }
                    }
                    Err(why) => {
                        stats.relay_dropped[why.index()].fetch_add(1, Ordering::Relaxed);
                        if let Some(held_back) = drop_log.allow(Instant::now()) {
                            warn!(%source, to = %request.to, reason = why.as_str(), held_back, "not relayed");
                        }
                    }
                }
                true
            }
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

/// The rate limits a datagram goes through.
struct Limiters {
    /// Everything but proven session traffic.
    all: RateLimiter,
    /// Keepalives and logouts proven by their session's token: checked
    /// apart, so that junk sent in a user's name (even from its exact
    /// address) cannot use up what keeps it online.
    sessions: RateLimiter,
    directory: Arc<Directory>,
}

/// Which limit a datagram went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Address,
    Host,
    Session,
}

/// What the limits made of a datagram.
enum Checked {
    /// A proven keepalive or logout, within its session's share.
    Session(Datagram),
    /// Anything else within the limits, and whether it decoded.
    Other(Result<Datagram, DecodeError>),
    Limited(Over),
}

impl Limiters {
    /// Checks `bytes` from `source` against the limits. Everything but a
    /// keepalive or logout is held to the per-address and per-host limits
    /// before it is decoded: a flood costs a table lookup per datagram,
    /// not a parse. A keepalive or logout is decoded first (they are
    /// short), and if its session's token proves it and it comes from the
    /// session's own endpoint, it is held only to that session's share.
    fn check(&mut self, bytes: &[u8], source: SocketAddr, now: Instant) -> Checked {
        if starts_with_verb(bytes, "ping,") || starts_with_verb(bytes, "logout,") {
            let decoded = Datagram::decode(bytes);
            if let Ok(datagram) = &decoded {
                if self.proven(datagram, source) {
                    return match self.sessions.check(source, now) {
                        Ok(()) => decoded
                            .map_or_else(|_| Checked::Limited(Over::Session), Checked::Session),
                        Err(_) => Checked::Limited(Over::Session),
                    };
                }
            }
            return match self.all.check(source, now) {
                Ok(()) => Checked::Other(decoded),
                Err(limited) => Checked::Limited(over(limited)),
            };
        }
        match self.all.check(source, now) {
            Ok(()) => Checked::Other(Datagram::decode(bytes)),
            Err(limited) => Checked::Limited(over(limited)),
        }
    }

    /// Whether `datagram` is a keepalive or logout carrying its session's
    /// token, from the session's own endpoint.
    fn proven(&self, datagram: &Datagram, source: SocketAddr) -> bool {
        let (name, token) = match datagram {
            Datagram::Ping(ping) => (&ping.name, ping.token),
            Datagram::Logout(logout) => match &logout.pigeon {
                Some(ext) => (&logout.name, ext.token),
                None => return false,
            },
            _ => return false,
        };
        self.directory.holds(name.as_str(), token)
            && self
                .directory
                .get(name.as_str())
                .is_some_and(|entry| entry.endpoint.socket_addr() == source)
    }
}

fn over(limited: Limited) -> Over {
    match limited {
        Limited::Address => Over::Address,
        Limited::Host => Over::Host,
    }
}

/// Whether `bytes` (UTF-16LE) start with `verb`.
fn starts_with_verb(bytes: &[u8], verb: &str) -> bool {
    let mut at = 0;
    for unit in verb.encode_utf16() {
        match bytes.get(at..at + 2) {
            Some(pair) if pair == unit.to_le_bytes() => at += 2,
            _ => return false,
        }
    }
    true
}

/// Hands `msg` to the roster, waiting only when its mailbox is full.
/// `false` once the roster has stopped.
async fn forward<A, M>(roster: &Addr<A>, msg: M) -> bool
where
    A: Actor + Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: Message<Result = ()> + Send + 'static,
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

impl Handler<BroadcastSealedDatagram> for UdpGatewayActor {
    type Result = ();

    fn handle(&mut self, msg: BroadcastSealedDatagram, _: &mut Context<Self>) {
        let inner = msg.datagram.to_bytes();
        for (to, key) in msg.to {
            match key {
                Some(key) => self.send(&seal_bytes(&key, &inner), to),
                None => self.send(&inner, to),
            }
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
