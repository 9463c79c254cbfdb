//! `TcpRosterActor`: owns the TCP listeners whose ports go in `Accept`: the
//! seed-format roster, and the Pigeon-format one (with the revision and
//! each user's instance id). Each connection gets the roster snapshot, one
//! .NET `BinaryWriter` string, and is closed.
//!
//! The snapshot is read from the [`Directory`] the roster writes through to,
//! never through the roster's mailbox. Each connection is served by its own
//! task under a write deadline, and at most `max_connections` are served at
//! once (the rest wait in the kernel's backlog), so slow or silent clients
//! cost a bounded amount and hold nobody else up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
pub use pigeon_shared::roster_snapshot::RosterFormat;
use pigeon_shared::roster_snapshot::{decode_frame, parse_roster_request, MAX_REQUEST_BYTES};
use pigeon_shared::LogLimit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::directory::{Directory, Rendered};
use crate::roster_actor::RosterFetched;

/// Limits of the TCP roster service.
#[derive(Debug, Clone)]
pub struct TcpRosterConfig {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed to write one snapshot and close.
    pub write_timeout: Duration,
    /// Time a Pigeon client has to say who it is before it gets the roster
    /// anyway (without deltas following).
    pub request_timeout: Duration,
}

impl Default for TcpRosterConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            write_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// The TCP roster actor. See the module documentation.
pub struct TcpRosterActor {
    listeners: Vec<(TcpListener, RosterFormat)>,
    directory: Arc<Directory>,
    config: TcpRosterConfig,
    fetched: Recipient<RosterFetched>,
}

/// Stop serving and close the listener.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopTcpRoster;

impl TcpRosterActor {
    /// Serves `directory` on each listener in its format, telling
    /// `fetched` who fetched the Pigeon roster.
    pub fn new(
        listeners: Vec<(TcpListener, RosterFormat)>,
        directory: Arc<Directory>,
        config: TcpRosterConfig,
        fetched: Recipient<RosterFetched>,
    ) -> Self {
        Self {
            listeners,
            directory,
            config,
            fetched,
        }
    }
}

impl Actor for TcpRosterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // One budget of connection slots for both listeners.
        let slots = Arc::new(Semaphore::new(self.config.max_connections.max(1)));
        for (listener, format) in std::mem::take(&mut self.listeners) {
            let service = Service {
                format,
                directory: self.directory.clone(),
                config: self.config.clone(),
                fetched: self.fetched.clone(),
            };
            let accept = accept_loop(listener, service, slots.clone());
            ctx.spawn(accept.into_actor(self));
        }
    }
}

impl Handler<StopTcpRoster> for TcpRosterActor {
    type Result = ();

    fn handle(&mut self, _: StopTcpRoster, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// What one listener needs to serve a connection.
#[derive(Clone)]
struct Service {
    format: RosterFormat,
    directory: Arc<Directory>,
    config: TcpRosterConfig,
    fetched: Recipient<RosterFetched>,
}

async fn accept_loop(listener: TcpListener, service: Service, slots: Arc<Semaphore>) {
    let mut error_log = LogLimit::default();
    loop {
        // Wait for a free slot before accepting: excess clients queue in the
        // kernel's backlog instead of costing memory here.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let service = service.clone();
                actix_rt::spawn(async move {
                    service.serve(stream, peer).await;
                    drop(slot);
                });
            }
            Err(e) => {
                if let Some(held_back) = error_log.allow(Instant::now()) {
                    warn!(error = %e, held_back, "accept failed");
                }
                // Errors such as running out of file descriptors repeat at
                // once; pause instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Service {
    async fn serve(&self, mut stream: TcpStream, peer: SocketAddr) {
        // A Pigeon client says who it is first; a seed client says nothing
        // and never connects to the Pigeon port.
        let asker = match self.format {
            RosterFormat::Seed => None,
            RosterFormat::Pigeon => read_request(&mut stream, self.config.request_timeout).await,
        };
        let Rendered {
            revision,
            users,
            bytes: buf,
        } = self.directory.encode(self.format);
        if let Some((name, token)) = asker {
            self.fetched.do_send(RosterFetched {
                name,
                token,
                revision,
            });
        }
        let timeout = self.config.write_timeout;
        let format = self.format;
        let write = async {
            stream.write_all(&buf).await?;
            stream.shutdown().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => info!(
                %peer,
                users,
                bytes = buf.len(),
                ?format,
                revision,
                "roster sent over TCP"
            ),
            Ok(Err(e)) => debug!(%peer, error = %e, "roster not sent: connection failed"),
            Err(_) => warn!(%peer, ?timeout, "roster not sent: client too slow"),
        }
    }
}

/// Reads a Pigeon client's roster request, if it sends a well-formed one in
/// time.
async fn read_request(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Option<(pigeon_shared::UserName, pigeon_shared::SessionToken)> {
    let read = async {
        let mut buf = BytesMut::with_capacity(64);
        loop {
            if let Some((text, _)) = decode_frame(&buf, MAX_REQUEST_BYTES).ok()? {
                return parse_roster_request(&text);
            }
            if stream.read_buf(&mut buf).await.ok()? == 0 || buf.len() > MAX_REQUEST_BYTES + 5 {
                return None;
            }
        }
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}
