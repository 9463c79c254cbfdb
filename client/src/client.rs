//! Starting a client: bind its receive socket, work out the endpoint to
//! announce, and start its session. The same entry point serves the
//! console, the tests and the load generator.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
#[cfg(feature = "faults")]
use pigeon_shared::net::faults::Faults;
use pigeon_shared::net::{bind_udp, LocalSender, UdpSender};
use pigeon_shared::{Identity, InstanceId, PeerAddr, UserName};

use crate::mail_seen;
use rand::Rng;
use tokio::net::UdpSocket;

use crate::client_core::Sent;
use crate::clock::SharedClock;
use crate::conversation::{ChatLine, DeliveryConfig};
use crate::events::{ClientEvents, MessageId};
use crate::known_servers;
use crate::session::{
    default_login_timeouts, default_logout_timeouts, KeyInfo, SendTextError, Session,
    SessionConfig, TrustError,
};
use crate::session_actor::{
    ClientStats, ConversationWith, ListUsers, Logout, SendText, SessionActor, SessionSettings,
    Trust, WhoIs,
};

/// Kernel buffer for a client's socket: room for a burst of broadcasts.
const CLIENT_UDP_BUFFER: usize = 1 << 20;

/// Datagrams queued while the kernel's send buffer is full.
const MAX_SEND_QUEUE: usize = 4096;

/// How long an idle conversation keeps its actor by default.
pub const DEFAULT_IDLE_STOP: Duration = Duration::from_secs(60);

/// The client's default receive address.
pub const DEFAULT_BIND: &str = "127.0.0.1:0";

/// Everything a client can be told.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name to log in with.
    pub name: UserName,
    /// The server's UDP address.
    pub server: SocketAddr,
    /// Where to receive. An unspecified IP (`0.0.0.0`, `::`) announces the
    /// local address that routes to the server.
    pub bind: SocketAddr,
    /// Wait for `Accept` after each login attempt (one entry per attempt).
    pub login_timeouts: Vec<Duration>,
    /// Wait for `bye` after each logout attempt.
    pub logout_timeouts: Vec<Duration>,
    /// Longest wait between login attempts while reconnecting.
    pub max_reconnect_delay: Duration,
    /// Time allowed for the TCP roster fetch.
    pub fetch_timeout: Duration,
    /// How conversations deliver (retries, deadline, history kept).
    pub delivery: DeliveryConfig,
    /// How long a logout waits for messages still in flight.
    pub drain_timeout: Duration,
    /// How long an idle conversation keeps its actor (its state is kept
    /// when the actor stops).
    pub idle_stop: Duration,
    /// Where time comes from.
    pub clock: SharedClock,
    /// This client's instance id (`None`: a random one).
    pub instance: Option<InstanceId>,
    /// Speak only the seed's plain protocol, as a seed-era client does (for
    /// mixed crowds in load tests, and for servers that must not see the
    /// extension).
    pub plain_protocol: bool,
    /// Never give up the first login (see `SessionConfig::keep_trying`).
    pub keep_trying: bool,
    /// Who this user is (`None`: log in without a key, as clients from
    /// before keys did). [`ClientConfig::new`] makes a new key pair.
    pub identity: Option<Identity>,
    /// Where servers' keys are pinned (`None`: in memory only, for as
    /// long as the client runs).
    pub known_servers: Option<PathBuf>,
    /// Where peers' keys are pinned (`None`: in memory only, for as long
    /// as the client runs).
    pub known_peers: Option<PathBuf>,
    /// Where the offline messages shown are remembered, so that a later
    /// run does not show them again (`None`: for this run only).
    pub mail_seen: Option<PathBuf>,
    /// Pin the key of every user the roster shows, the first time it is
    /// seen (`false`: only once this user writes to, hears from or looks
    /// up the name, as a crowd of simulated peers in one process does to
    /// keep its memory).
    pub pin_on_sight: bool,
    /// Conversations never look for a direct path, and take the server's
    /// relay while there is one (load tests of the relay).
    pub relay_only: bool,
    /// Other servers of the cluster `server` is one of: when it is lost,
    /// the client logs in again through them in turn.
    pub alternates: Vec<SocketAddr>,
    /// A fault-injection layer on every datagram the client sends (tests).
    #[cfg(feature = "faults")]
    pub faults: Option<Faults>,
}

impl ClientConfig {
    /// Defaults for `name` logging in to `server`.
    pub fn new(name: UserName, server: SocketAddr) -> Self {
        Self {
            name,
            server,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            login_timeouts: default_login_timeouts(),
            logout_timeouts: default_logout_timeouts(),
            max_reconnect_delay: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(5),
            delivery: DeliveryConfig::default(),
            drain_timeout: Duration::from_secs(5),
            idle_stop: DEFAULT_IDLE_STOP,
            clock: SharedClock::system(),
            instance: None,
            plain_protocol: false,
            keep_trying: false,
            identity: Some(Identity::generate()),
            known_servers: None,
            known_peers: None,
            mail_seen: None,
            pin_on_sight: true,
            relay_only: false,
            alternates: Vec::new(),
            #[cfg(feature = "faults")]
            faults: None,
        }
    }
}

/// Why a client could not start. A system error is part of the message
/// (not a `source`), so that a printed chain says it once.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot receive on {addr}: {cause}")]
    Bind { addr: SocketAddr, cause: io::Error },
    #[error("cannot read the servers' keys in {path}: {cause}")]
    KnownServers { path: String, cause: io::Error },
    #[error("cannot read the offline messages already shown, in {path}: {cause}")]
    MailSeen { path: String, cause: io::Error },
    #[error("no local address reaches the server {server}: {cause}")]
    NoRoute {
        server: SocketAddr,
        cause: io::Error,
    },
    #[error("the server address {0} is not one host's address")]
    BadServer(SocketAddr),
}

/// A running client.
#[derive(Clone)]
pub struct ClientHandle {
    session: Addr<SessionActor>,
    name: UserName,
    endpoint: PeerAddr,
    stats: Arc<ClientStats>,
}

impl ClientHandle {
    /// Binds the receive socket and starts logging in; `events` hears
    /// everything that follows. Must run inside an actix `System`; the
    /// client's actors run on the current arbiter.
    pub fn start(
        config: ClientConfig,
        events: Recipient<ClientEvents>,
    ) -> Result<Self, StartError> {
        Ok(Self::bind(config)?.start(events))
    }

    /// The first half of [`ClientHandle::start`]: binds the receive socket
    /// and works out the endpoint, so that a front end can learn of a port
    /// in use before it takes over the terminal. Must run inside an actix
    /// `System`.
    pub fn bind(config: ClientConfig) -> Result<BoundClient, StartError> {
        let server_ip = config.server.ip();
        if server_ip.is_unspecified() || server_ip.is_multicast() || config.server.port() == 0 {
            return Err(StartError::BadServer(config.server));
        }
        let bind_error = |cause| StartError::Bind {
            addr: config.bind,
            cause,
        };
        let std_socket = bind_udp(config.bind, CLIENT_UDP_BUFFER).map_err(bind_error)?;
        let local = std_socket.local_addr().map_err(bind_error)?;
        let ip = if local.ip().is_unspecified() {
            route_to(config.server).map_err(|cause| StartError::NoRoute {
                server: config.server,
                cause,
            })?
        } else {
            local.ip()
        };
        let endpoint = PeerAddr::new(SocketAddr::new(ip.to_canonical(), local.port()));
        let socket = UdpSocket::from_std(std_socket).map_err(bind_error)?;
        let stats = Arc::new(ClientStats::default());
        let sender = UdpSender::new(Arc::new(socket), MAX_SEND_QUEUE).map_err(bind_error)?;
        #[cfg(feature = "faults")]
        let sender = sender.with_faults(config.faults);
        let sender = LocalSender::new(sender, stats.send.clone());
        let instance = config
            .instance
            .unwrap_or_else(|| InstanceId(rand::rng().random()));
        let pinned = |server| match &config.known_servers {
            Some(path) => {
                known_servers::lookup(path, server).map_err(|cause| StartError::KnownServers {
                    path: path.display().to_string(),
                    cause,
                })
            }
            None => Ok(None),
        };
        let server_key = pinned(config.server)?;
        let alternates = config
            .alternates
            .iter()
            .map(|&server| Ok((server, pinned(server)?)))
            .collect::<Result<Vec<_>, StartError>>()?;
        let pinned_peers = match &config.known_peers {
            Some(path) => {
                known_servers::load_peers(path).map_err(|cause| StartError::KnownServers {
                    path: path.display().to_string(),
                    cause,
                })?
            }
            None => Default::default(),
        };
        let mail_seen = match &config.mail_seen {
            Some(path) => mail_seen::load(path).map_err(|cause| StartError::MailSeen {
                path: path.display().to_string(),
                cause,
            })?,
            None => Vec::new(),
        };
        let session = Session::new(SessionConfig {
            name: config.name,
            server: config.server,
            endpoint,
            instance,
            login_timeouts: config.login_timeouts,
            logout_timeouts: config.logout_timeouts,
            max_reconnect_delay: config.max_reconnect_delay,
            drain_timeout: config.drain_timeout,
            plain_protocol: config.plain_protocol,
            keep_trying: config.keep_trying,
            nonce_seed: rand::rng().random(),
            identity: config.identity.map(Arc::new),
            server_key,
            alternates,
            pinned_peers,
            pin_on_sight: config.pin_on_sight,
            mail_seen,
        });
        let settings = SessionSettings {
            known_servers: config.known_servers,
            known_peers: config.known_peers,
            mail_seen: config.mail_seen,
            fetch_timeout: config.fetch_timeout,
            delivery: config.delivery,
            idle_stop: config.idle_stop,
            clock: config.clock,
            relay_only: config.relay_only,
        };
        Ok(BoundClient {
            session,
            sender,
            settings,
            endpoint,
            stats,
        })
    }

    /// The endpoint this client announced.
    pub fn endpoint(&self) -> PeerAddr {
        self.endpoint
    }

    /// The session actor, for front ends that talk to it directly.
    pub fn session(&self) -> &Addr<SessionActor> {
        &self.session
    }

    /// The client's counters.
    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    /// Sends `text` to `to`; the id names it in later `Delivered` and
    /// `Failed` events.
    pub async fn send_text(&self, to: UserName, text: String) -> Result<MessageId, SendTextError> {
        self.send(to, text).await.map(|sent| sent.id)
    }

    /// Sends `text` to `to`, saying also whether the peer will confirm it.
    pub async fn send(&self, to: UserName, text: String) -> Result<Sent, SendTextError> {
        self.session
            .send(SendText { to, text })
            .await
            .unwrap_or(Err(SendTextError::NotOnline))
    }

    /// The user trusts `name`'s new key.
    pub async fn trust(&self, name: UserName) -> Result<(), TrustError> {
        self.session
            .send(Trust { name: name.clone() })
            .await
            .unwrap_or(Err(TrustError::Unchanged(name)))
    }

    /// What is known of `name`'s key (this user's own for its own name).
    pub async fn whois(&self, name: UserName) -> KeyInfo {
        self.session.send(WhoIs { name }).await.unwrap_or(KeyInfo {
            online: false,
            current: None,
            pinned: None,
        })
    }

    /// This user's name.
    pub fn name(&self) -> &UserName {
        &self.name
    }

    /// The users online, this one included, sorted by name.
    pub async fn users(&self) -> Vec<(UserName, PeerAddr)> {
        self.session.send(ListUsers).await.unwrap_or_default()
    }

    /// The conversation with `peer` so far.
    pub async fn conversation(&self, peer: UserName) -> Vec<ChatLine> {
        self.session
            .send(ConversationWith { peer })
            .await
            .unwrap_or_default()
    }

    /// Finishes delivering, logs out; the session ends after
    /// `ClientEvent::LoggedOut`.
    pub fn logout(&self) {
        self.session.do_send(Logout);
    }
}

/// A client whose socket is bound, not yet logging in: see
/// [`ClientHandle::bind`].
pub struct BoundClient {
    session: Session,
    sender: LocalSender,
    settings: SessionSettings,
    endpoint: PeerAddr,
    stats: Arc<ClientStats>,
}

impl BoundClient {
    /// The endpoint the client will announce.
    pub fn endpoint(&self) -> PeerAddr {
        self.endpoint
    }

    /// Starts logging in; `events` hears everything that follows.
    pub fn start(self, events: Recipient<ClientEvents>) -> ClientHandle {
        let name = self.session.name().clone();
        let actor = SessionActor::new(
            self.session,
            self.sender,
            events,
            self.settings,
            self.stats.clone(),
        );
        ClientHandle {
            session: actor.start(),
            name,
            endpoint: self.endpoint,
            stats: self.stats,
        }
    }
}

/// The local address the system would use to reach `server`.
fn route_to(server: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let probe = StdUdpSocket::bind(any)?;
    // Connecting a UDP socket sends nothing; it only picks a route.
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}
