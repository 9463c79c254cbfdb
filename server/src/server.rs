//! Starting and stopping a whole server: bind the sockets (where errors such
//! as a port in use are reported), then wire the three actors together,
//! the gateway on an arbiter (thread) of its own.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use pigeon_shared::{Identity, PeerAddr, PublicKey, UserName};
use rand::rngs::StdRng;
use rand::SeedableRng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tracing::info;

use crate::cluster_actor::{ClusterActor, ClusterConfig, ClusterStats, StopCluster};
use crate::directory::Directory;
use crate::handshake_actor::HandshakeActor;
use crate::metrics::{Rates, ServerMetrics};
use crate::metrics_actor::{MetricsActor, StopMetrics};
use crate::relay::{RelayConfig, DEFAULT_RELAY_GLOBAL_RATE};
use crate::roster::{
    Roster, RosterConfig, RosterEvent, DEFAULT_DELTA_WAIT_PER_RECIPIENT, DEFAULT_LIVENESS_TIMEOUT,
    DEFAULT_MAX_DELTA_DELAY, DEFAULT_MAX_USERS, DEFAULT_MAX_USERS_PER_HOST, DEFAULT_RELAY_RATE,
};
use crate::roster_actor::{OnlineUsers, RosterActor, RosterStats, StopRoster, Subscribe};
use crate::shared_mail::SharedMail;
use crate::store::MailLimits;
use crate::store::{Store, StoreChoice, StoreError};
use crate::store_actor::StoreActor;
use crate::tcp_roster_actor::MailService;
use crate::tcp_roster_actor::{
    RosterFormat, StopTcpRoster, TcpRosterActor, TcpRosterConfig, TcpStats,
};
use crate::udp_gateway_actor::{GatewayStats, GatewayStatsSnapshot, StopGateway, UdpGatewayActor};
#[cfg(feature = "faults")]
use pigeon_shared::net::faults::Faults;
use pigeon_shared::net::{bind_udp, UdpSender, UDP_BUFFER_BYTES};
use pigeon_shared::rate_limit::RateLimits;

/// The server's default UDP address, as in the seed's examples.
pub const DEFAULT_UDP_ADDR: &str = "127.0.0.1:7788";

pub use crate::roster::DEFAULT_DELTA_DELAY;

/// Everything a server can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where datagrams are received; port 0 picks a free one.
    pub udp: SocketAddr,
    /// Seed-format TCP roster port on the same address; 0 picks a free one.
    pub tcp_port: u16,
    /// Pigeon-format TCP roster port on the same address; 0 picks a free one.
    pub roster_port: u16,
    /// Most users online at once.
    pub max_users: usize,
    /// Most users online from one host.
    pub max_users_per_host: usize,
    /// Most seed-era users online (`None`: half of `max_users`).
    pub max_seed_users: Option<usize>,
    /// Most names registered in all.
    pub max_registered: usize,
    /// New names one host may register in an hour.
    pub registrations_per_host: u32,
    /// How long a seed-style session waits for its host's roster fetch.
    pub seed_confirm_window: Duration,
    /// Pigeon clients not heard from for this long are evicted.
    pub liveness_timeout: Duration,
    /// Per-source rate limits on inbound datagrams.
    pub rate_limits: RateLimits,
    /// How long roster changes wait to share a `delta` (zero: one each).
    pub delta_delay: Duration,
    /// Time each delta recipient adds to that wait: with many Pigeon
    /// clients online, deltas are sent less often, in fewer datagrams.
    pub delta_wait_per_recipient: Duration,
    /// Longest wait for a `delta` however many clients are online.
    pub max_delta_delay: Duration,
    /// Limits of the TCP roster service.
    pub tcp: TcpRosterConfig,
    /// Seed of the session-token generator (`None`: from the OS, which is
    /// what anything but a reproducible test wants).
    pub token_seed: Option<u64>,
    /// Where to serve the metrics over HTTP (`None`: nowhere).
    pub metrics: Option<SocketAddr>,
    /// Where the server keeps its key and the registered names.
    pub store: StoreChoice,
    /// The server's key pair (`None`: the one in the store, or a new one
    /// kept there). [`ServerConfig::new`] makes one, so that a server
    /// started again from the same config keeps its key in memory too.
    pub identity: Option<Identity>,
    /// A fault-injection layer on every datagram the server sends (tests).
    /// Bounds of the offline mailboxes.
    pub mail_limits: MailLimits,
    /// The relay's limits (`None`: no relay; see [`crate::relay`]).
    pub relay: Option<RelayConfig>,
    /// The cluster this server is one of (`None`: it is alone).
    pub cluster: Option<ClusterConfig>,
    #[cfg(feature = "faults")]
    pub faults: Option<Faults>,
}

impl ServerConfig {
    /// Defaults, listening on `udp`.
    pub fn new(udp: SocketAddr) -> Self {
        Self {
            udp,
            tcp_port: 0,
            roster_port: 0,
            max_users: DEFAULT_MAX_USERS,
            max_users_per_host: DEFAULT_MAX_USERS_PER_HOST,
            max_seed_users: None,
            max_registered: crate::roster::DEFAULT_MAX_REGISTERED,
            registrations_per_host: crate::roster::DEFAULT_REGISTRATIONS_PER_HOST,
            seed_confirm_window: crate::roster::DEFAULT_SEED_CONFIRM_WINDOW,
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
            rate_limits: RateLimits::default(),
            delta_delay: DEFAULT_DELTA_DELAY,
            delta_wait_per_recipient: DEFAULT_DELTA_WAIT_PER_RECIPIENT,
            max_delta_delay: DEFAULT_MAX_DELTA_DELAY,
            tcp: TcpRosterConfig::default(),
            token_seed: None,
            metrics: None,
            store: StoreChoice::Ephemeral,
            identity: Some(Identity::generate()),
            mail_limits: MailLimits::default(),
            cluster: None,
            relay: Some(RelayConfig {
                per_session: DEFAULT_RELAY_RATE,
                global_rate: DEFAULT_RELAY_GLOBAL_RATE,
            }),
            #[cfg(feature = "faults")]
            faults: None,
        }
    }
}

/// Why a server could not listen. The system error is part of the message
/// (not a `source`), so that a printed chain says it once.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on UDP {addr}: {cause}")]
    Udp { addr: SocketAddr, cause: io::Error },
    #[error("cannot listen on TCP {addr}: {cause}")]
    Tcp { addr: SocketAddr, cause: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sockets bound and ready; nothing runs yet.
#[derive(Debug)]
pub struct BoundServer {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    roster_tcp: std::net::TcpListener,
    metrics: Option<(std::net::TcpListener, SocketAddr)>,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    roster_addr: SocketAddr,
    config: ServerConfig,
    store: Store,
    identity: Identity,
    registry: HashMap<UserName, PublicKey>,
    /// Who has something in its mailbox.
    mail_waiting: Vec<UserName>,
}

/// A running server.
pub struct ServerHandle {
    public_key: PublicKey,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    roster_addr: SocketAddr,
    roster: Addr<RosterActor>,
    gateway: Addr<UdpGatewayActor>,
    tcp: Addr<TcpRosterActor>,
    metrics: Option<(Addr<MetricsActor>, SocketAddr)>,
    stats: Arc<GatewayStats>,
    tcp_stats: Arc<TcpStats>,
    roster_stats: Arc<RosterStats>,
    directory: Arc<Directory>,
    gateway_arbiter: Arbiter,
    cluster: Option<(Addr<ClusterActor>, String)>,
}

/// Connections the kernel queues for the roster listeners: a login storm
/// fetches thousands of rosters at once, and a full queue makes clients
/// wait a second or more for a retransmitted SYN. (The kernel caps this at
/// `net.core.somaxconn`.)
const TCP_BACKLOG: i32 = 4096;

fn bind_tcp(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), BindError> {
    let error = |cause| BindError::Tcp { addr, cause };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(error)?;
    // As std does: a restarted server can listen again at once.
    socket.set_reuse_address(true).map_err(error)?;
    socket.bind(&addr.into()).map_err(error)?;
    socket.listen(TCP_BACKLOG).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    let listener: std::net::TcpListener = socket.into();
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

impl BoundServer {
    /// Binds the UDP socket and the two TCP listeners (on the same IP).
    pub fn bind(config: ServerConfig) -> Result<Self, BindError> {
        let udp_error = |cause| BindError::Udp {
            addr: config.udp,
            cause,
        };
        let udp = bind_udp(config.udp, UDP_BUFFER_BYTES).map_err(udp_error)?;
        let udp_addr = udp.local_addr().map_err(udp_error)?;
        let (tcp, tcp_addr) = bind_tcp(SocketAddr::new(udp_addr.ip(), config.tcp_port))?;
        let (roster_tcp, roster_addr) =
            bind_tcp(SocketAddr::new(udp_addr.ip(), config.roster_port))?;
        let metrics = config.metrics.map(bind_tcp).transpose()?;
        let store = config.store.open()?;
        let identity = match &config.identity {
            Some(identity) => identity.clone(),
            None => store.identity()?,
        };
        let registry = store.registry()?;
        let mail_waiting = store.names_with_mail()?;
        Ok(Self {
            udp,
            tcp,
            roster_tcp,
            metrics,
            udp_addr,
            tcp_addr,
            roster_addr,
            config,
            store,
            identity,
            registry,
            mail_waiting,
        })
    }

    /// The bound UDP address (real port).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The bound seed-format TCP roster address (real port).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The bound Pigeon-format TCP roster address (real port).
    pub fn roster_addr(&self) -> SocketAddr {
        self.roster_addr
    }

    /// Where the metrics are served, if anywhere (real port).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    /// The server's public key.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public()
    }

    /// Starts the actors. Must run inside an actix `System`.
    pub async fn start(self) -> io::Result<ServerHandle> {
        let Self {
            udp,
            tcp,
            roster_tcp,
            metrics,
            udp_addr,
            tcp_addr,
            roster_addr,
            config,
            store,
            identity,
            registry,
            mail_waiting,
        } = self;
        let public_key = identity.public();
        let registered = registry.len();
        // One thread owns the store (on disk, or in memory with
        // `--ephemeral`): registrations and the mailboxes.
        let mail_limits = config.mail_limits;
        let cell = Mutex::new(Some(store));
        // In a cluster the mailboxes are in the Redis all its servers share.
        let shared_mail = match &config.cluster {
            Some(cluster) => Some((
                redis::Client::open(cluster.url.as_str()).map_err(|e| {
                    io::Error::other(format!("cannot join the cluster at {}: {e}", cluster.url))
                })?,
                cluster.namespace.clone(),
            )),
            None => None,
        };
        let store_actor = SyncArbiter::start(1, move || {
            let store = cell
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            let shared = shared_mail
                .clone()
                .map(|(client, namespace)| SharedMail::new(client, namespace));
            StoreActor::new(store, mail_limits).with_shared_mail(shared)
        });
        let directory = Arc::new(Directory::default());
        let stats = Arc::new(GatewayStats::default());

        // The roster and the gateway each need the other's address: take
        // the roster's from its context before the actor runs.
        let roster_ctx = Context::<RosterActor>::new();
        let roster_addr_actor = roster_ctx.address();
        let roster_addr_actor_for_cluster = roster_addr_actor.clone();

        let gateway_arbiter = Arbiter::new();
        let (gateway_tx, gateway_rx) = tokio::sync::oneshot::channel();
        let gateway_stats = stats.clone();
        // A host allowed N users needs a rate-limiter bucket for each.
        let mut limits = config.rate_limits;
        limits.max_addresses_per_host = limits
            .max_addresses_per_host
            .max(config.max_users_per_host.saturating_add(16));
        let gateway_directory = directory.clone();
        // The login handshakes' key agreements, on a thread per core.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (gateway_waiting, handshakes_waiting) = (waiting.clone(), waiting.clone());
        let handshakes = {
            let identity = identity.clone();
            let roster = roster_addr_actor.clone();
            let waiting = waiting.clone();
            let answered = Arc::new(dashmap::DashMap::new());
            SyncArbiter::start(threads, move || {
                HandshakeActor::new(
                    identity.clone(),
                    roster.clone(),
                    waiting.clone(),
                    answered.clone(),
                )
            })
        };
        #[cfg(feature = "faults")]
        let faults = config.faults.clone();
        let relay = config.relay;
        let across = Arc::new(std::sync::OnceLock::new());
        let gateway_across = across.clone();
        // The tokio socket must be created on the thread that will poll it.
        gateway_arbiter.spawn(async move {
            let started = UdpSocket::from_std(udp)
                .and_then(|socket| {
                    UdpSender::new(Arc::new(socket), crate::udp_gateway_actor::MAX_SEND_QUEUE)
                })
                .map(|sender| {
                    #[cfg(feature = "faults")]
                    let sender = sender.with_faults(faults);
                    let gateway = UdpGatewayActor::new(
                        sender,
                        roster_addr_actor,
                        gateway_stats,
                        limits,
                        gateway_directory,
                    )
                    .with_handshakes(handshakes, gateway_waiting)
                    .with_cluster_slot(gateway_across);
                    match relay {
                        Some(config) => gateway.with_relay(config).start(),
                        None => gateway.start(),
                    }
                });
            let _ = gateway_tx.send(started);
        });
        let gateway = gateway_rx
            .await
            .map_err(|_| io::Error::other("the gateway's arbiter stopped"))??;

        let mut roster_config = RosterConfig::new(tcp_addr.port(), roster_addr.port());
        roster_config.identity = identity;
        roster_config.max_users = config.max_users;
        roster_config.max_users_per_host = config.max_users_per_host;
        roster_config.max_seed_users = config.max_seed_users.unwrap_or(config.max_users / 2);
        roster_config.relay_rate = config.relay.map(|relay| relay.per_session);
        roster_config.max_registered = config.max_registered;
        roster_config.registrations_per_host = config.registrations_per_host;
        roster_config.seed_confirm_window = config.seed_confirm_window;
        roster_config.liveness_timeout = config.liveness_timeout;
        roster_config.delta_wait_per_recipient = config.delta_wait_per_recipient;
        roster_config.max_delta_delay = config.max_delta_delay;
        roster_config.delta_delay = config.delta_delay;
        let rng = match config.token_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let roster = Roster::with_registry(roster_config, directory.clone(), rng, registry);
        let roster_stats = Arc::new(RosterStats::default());
        let cluster_stats = Arc::new(ClusterStats::default());
        let mut roster_actor = RosterActor::new(roster, gateway.clone(), roster_stats.clone())
            .with_store(Some(store_actor.clone()))
            .with_mail_waiting(mail_waiting);
        let cluster = match config.cluster.clone() {
            Some(cluster) => {
                let (url, id) = (cluster.url.clone(), cluster.server_id.clone());
                let actor = ClusterActor::connect(cluster, cluster_stats.clone())
                    .await
                    .map_err(|e| {
                        io::Error::other(format!("cannot join the cluster at {url}: {e}"))
                    })?
                    .with_roster(roster_addr_actor_for_cluster.recipient())
                    .with_delivery(gateway.clone(), directory.clone())
                    .start();
                let _ = across.set(actor.clone().recipient());
                roster_actor =
                    roster_actor.with_cluster(actor.clone().recipient(), cluster_stats.clone());
                Some((actor, id))
            }
            None => None,
        };
        let roster = roster_ctx.run(roster_actor);
        let listeners = vec![
            (TcpListener::from_std(tcp)?, RosterFormat::Seed),
            (TcpListener::from_std(roster_tcp)?, RosterFormat::Pigeon),
        ];
        let tcp_stats = Arc::new(TcpStats::default());
        let tcp = TcpRosterActor::new(
            listeners,
            directory.clone(),
            config.tcp,
            roster.clone().recipient(),
            roster.clone().recipient(),
            tcp_stats.clone(),
        )
        .with_handshake_queue(handshakes_waiting)
        .with_mailbox(MailService {
            store: store_actor,
            notify: roster.clone().recipient(),
        })
        .start();
        let metrics = match metrics {
            Some((listener, addr)) => {
                let served = ServerMetrics {
                    gateway: stats.clone(),
                    tcp: tcp_stats.clone(),
                    roster: roster_stats.clone(),
                    directory: directory.clone(),
                    rates: Arc::new(Mutex::new(Rates::default())),
                    cluster: config.cluster.is_some().then(|| cluster_stats.clone()),
                };
                let actor = MetricsActor::new(TcpListener::from_std(listener)?, served).start();
                info!(url = %crate::metrics_actor::url(addr), "serving metrics");
                Some((actor, addr))
            }
            None => None,
        };
        info!(
            udp = %udp_addr,
            tcp = %tcp_addr,
            pigeon_roster = %roster_addr,
            liveness_timeout = ?config.liveness_timeout,
            key = %public_key.fingerprint(),
            registered,
            "server started"
        );
        Ok(ServerHandle {
            public_key,
            udp_addr,
            tcp_addr,
            roster_addr,
            roster,
            gateway,
            tcp,
            metrics,
            stats,
            tcp_stats,
            roster_stats,
            directory,
            gateway_arbiter,
            cluster,
        })
    }
}

impl ServerHandle {
    /// Binds and starts a server. Must run inside an actix `System`.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        Ok(BoundServer::bind(config)?.start().await?)
    }

    /// The UDP address clients log in to.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The server's public key (clients pin it).
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The seed-format TCP roster address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The Pigeon-format TCP roster address.
    pub fn roster_addr(&self) -> SocketAddr {
        self.roster_addr
    }

    /// The roster actor.
    pub fn roster(&self) -> &Addr<RosterActor> {
        &self.roster
    }

    /// What the TCP roster service did.
    pub fn tcp_stats(&self) -> &Arc<TcpStats> {
        &self.tcp_stats
    }

    /// What the roster decided, counted.
    pub fn roster_stats(&self) -> &Arc<RosterStats> {
        &self.roster_stats
    }

    /// Where the metrics are served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    /// This server's id in its cluster, if it is in one.
    pub fn server_id(&self) -> Option<&str> {
        self.cluster.as_ref().map(|(_, id)| id.as_str())
    }

    /// The users online, readable without a mailbox round trip.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Subscribes `subscriber` to roster events.
    pub fn subscribe(&self, subscriber: Recipient<RosterEvent>) {
        self.roster.do_send(Subscribe { subscriber });
    }

    /// The users online, sorted by name.
    pub async fn online_users(&self) -> Vec<(UserName, PeerAddr)> {
        self.roster.send(OnlineUsers).await.unwrap_or_default()
    }

    /// How many users are online, read without a mailbox round trip.
    pub fn online_count(&self) -> usize {
        self.directory.len()
    }

    /// The gateway's counters.
    pub fn stats(&self) -> GatewayStatsSnapshot {
        self.stats.snapshot()
    }

    /// Tells Pigeon clients the server is going, stops every actor, and
    /// waits until the sockets are closed.
    pub async fn shutdown(self) {
        self.stop(true).await;
    }

    /// Stops without telling anyone, as a crash would (for tests of what
    /// clients do when their server vanishes).
    pub async fn vanish(self) {
        self.stop(false).await;
    }

    async fn stop(self, announce: bool) {
        // Awaiting each stop means its socket is closed once this returns,
        // so a new server can bind the same ports at once. The roster goes
        // first: its goodbye reaches the gateway before the gateway stops.
        let _ = self.tcp.send(StopTcpRoster).await;
        // A server leaving its cluster says so (its users leave every
        // roster at once); one vanishing goes quiet, and is found gone.
        if let Some((cluster, _)) = &self.cluster {
            let _ = cluster.send(StopCluster { leave: announce }).await;
        }
        if let Some((metrics, _)) = &self.metrics {
            let _ = metrics.send(StopMetrics).await;
        }
        let _ = self.roster.send(StopRoster { announce }).await;
        let _ = self.gateway.send(StopGateway).await;
        let arbiter = self.gateway_arbiter;
        arbiter.stop();
        // Joining blocks, so it waits on the blocking pool.
        let _ = tokio::task::spawn_blocking(move || arbiter.join()).await;
        info!(udp = %self.udp_addr, "server stopped");
    }
}
