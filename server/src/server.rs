//! Starting and stopping a whole server: bind the sockets (where errors such
//! as a port in use are reported), then wire the three actors together,
//! the gateway on an arbiter (thread) of its own.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use pigeon_shared::{PeerAddr, UserName};
use tokio::net::{TcpListener, UdpSocket};
use tracing::info;

use crate::net::{bind_udp, UDP_BUFFER_BYTES};
use crate::roster::RosterEvent;
use crate::roster::{Directory, Roster, RosterConfig, DEFAULT_MAX_USERS};
use crate::roster_actor::{OnlineUsers, RosterActor, StopRoster, Subscribe};
use crate::tcp_roster_actor::{StopTcpRoster, TcpRosterActor, TcpRosterConfig};
use crate::udp_gateway_actor::{GatewayStats, GatewayStatsSnapshot, StopGateway, UdpGatewayActor};

/// The server's default UDP address, as in the seed's examples.
pub const DEFAULT_UDP_ADDR: &str = "127.0.0.1:7788";

/// Everything a server can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where datagrams are received; port 0 picks a free one.
    pub udp: SocketAddr,
    /// TCP roster port on the same address; 0 picks a free one.
    pub tcp_port: u16,
    /// Most users online at once.
    pub max_users: usize,
    /// Limits of the TCP roster service.
    pub tcp: TcpRosterConfig,
}

impl ServerConfig {
    /// Defaults, listening on `udp`.
    pub fn new(udp: SocketAddr) -> Self {
        Self {
            udp,
            tcp_port: 0,
            max_users: DEFAULT_MAX_USERS,
            tcp: TcpRosterConfig::default(),
        }
    }
}

/// Why a server could not listen.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on UDP {addr}: {source}")]
    Udp { addr: SocketAddr, source: io::Error },
    #[error("cannot listen on TCP {addr}: {source}")]
    Tcp { addr: SocketAddr, source: io::Error },
}

/// Sockets bound and ready; nothing runs yet.
#[derive(Debug)]
pub struct BoundServer {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    config: ServerConfig,
}

/// A running server.
pub struct ServerHandle {
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    roster: Addr<RosterActor>,
    gateway: Addr<UdpGatewayActor>,
    tcp: Addr<TcpRosterActor>,
    stats: Arc<GatewayStats>,
    directory: Directory,
    gateway_arbiter: Arbiter,
}

impl BoundServer {
    /// Binds the UDP socket and the TCP listener (on the same IP).
    pub fn bind(config: ServerConfig) -> Result<Self, BindError> {
        let udp = bind_udp(config.udp, UDP_BUFFER_BYTES).map_err(|source| BindError::Udp {
            addr: config.udp,
            source,
        })?;
        let udp_addr = udp.local_addr().map_err(|source| BindError::Udp {
            addr: config.udp,
            source,
        })?;
        let wanted_tcp = SocketAddr::new(udp_addr.ip(), config.tcp_port);
        let tcp_error = |source| BindError::Tcp {
            addr: wanted_tcp,
            source,
        };
        let tcp = std::net::TcpListener::bind(wanted_tcp).map_err(tcp_error)?;
        tcp.set_nonblocking(true).map_err(tcp_error)?;
        let tcp_addr = tcp.local_addr().map_err(tcp_error)?;
        Ok(Self {
            udp,
            tcp,
            udp_addr,
            tcp_addr,
            config,
        })
    }

    /// The bound UDP address (real port).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The bound TCP address (real port).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Starts the actors. Must run inside an actix `System`.
    pub async fn start(self) -> io::Result<ServerHandle> {
        let Self {
            udp,
            tcp,
            udp_addr,
            tcp_addr,
            config,
        } = self;
        let directory = Directory::default();
        let stats = Arc::new(GatewayStats::default());

        // The roster and the gateway each need the other's address: take
        // the roster's from its context before the actor runs.
        let roster_ctx = Context::<RosterActor>::new();
        let roster_addr = roster_ctx.address();

        let gateway_arbiter = Arbiter::new();
        let (gateway_tx, gateway_rx) = tokio::sync::oneshot::channel();
        let gateway_stats = stats.clone();
        // The tokio socket must be created on the thread that will poll it.
        gateway_arbiter.spawn(async move {
            let started = UdpSocket::from_std(udp)
                .and_then(|socket| UdpGatewayActor::new(socket, roster_addr, gateway_stats))
                .map(Actor::start);
            let _ = gateway_tx.send(started);
        });
        let gateway = gateway_rx
            .await
            .map_err(|_| io::Error::other("the gateway's arbiter stopped"))??;

        let roster = Roster::new(
            RosterConfig {
                tcp_port: tcp_addr.port(),
                max_users: config.max_users,
            },
            directory.clone(),
        );
        let roster = roster_ctx.run(RosterActor::new(roster, gateway.clone()));
        let tcp =
            TcpRosterActor::new(TcpListener::from_std(tcp)?, directory.clone(), config.tcp).start();
        info!(udp = %udp_addr, tcp = %tcp_addr, "server started");
        Ok(ServerHandle {
            udp_addr,
            tcp_addr,
            roster,
            gateway,
            tcp,
            stats,
            directory,
            gateway_arbiter,
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

    /// The TCP roster address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The roster actor.
    pub fn roster(&self) -> &Addr<RosterActor> {
        &self.roster
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

    /// Stops every actor and waits until the sockets are closed.
    pub async fn shutdown(self) {
        // Awaiting each stop means its socket is closed once this returns,
        // so a new server can bind the same ports at once.
        let _ = self.tcp.send(StopTcpRoster).await;
        let _ = self.roster.send(StopRoster).await;
        let _ = self.gateway.send(StopGateway).await;
        let arbiter = self.gateway_arbiter;
        arbiter.stop();
        // Joining blocks, so it waits on the blocking pool.
        let _ = tokio::task::spawn_blocking(move || arbiter.join()).await;
        info!(udp = %self.udp_addr, "server stopped");
    }
}
