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
pub use pigeon_shared::roster_snapshot::RosterFormat;
use pigeon_shared::LogLimit;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::roster::Directory;

/// Limits of the TCP roster service.
#[derive(Debug, Clone)]
pub struct TcpRosterConfig {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed to write one snapshot and close.
    pub write_timeout: Duration,
}

impl Default for TcpRosterConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// The TCP roster actor. See the module documentation.
pub struct TcpRosterActor {
    listeners: Vec<(TcpListener, RosterFormat)>,
    directory: Arc<Directory>,
    config: TcpRosterConfig,
}

/// Stop serving and close the listener.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopTcpRoster;

impl TcpRosterActor {
    /// Serves `directory` on each listener in its format.
    pub fn new(
        listeners: Vec<(TcpListener, RosterFormat)>,
        directory: Arc<Directory>,
        config: TcpRosterConfig,
    ) -> Self {
        Self {
            listeners,
            directory,
            config,
        }
    }
}

impl Actor for TcpRosterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // One budget of connection slots for both listeners.
        let slots = Arc::new(Semaphore::new(self.config.max_connections.max(1)));
        for (listener, format) in std::mem::take(&mut self.listeners) {
            let accept = accept_loop(
                listener,
                format,
                self.directory.clone(),
                self.config.write_timeout,
                slots.clone(),
            );
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

async fn accept_loop(
    listener: TcpListener,
    format: RosterFormat,
    directory: Arc<Directory>,
    timeout: Duration,
    slots: Arc<Semaphore>,
) {
    let mut error_log = LogLimit::default();
    loop {
        // Wait for a free slot before accepting: excess clients queue in the
        // kernel's backlog instead of costing memory here.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let directory = directory.clone();
                actix_rt::spawn(async move {
                    serve(stream, peer, format, &directory, timeout).await;
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

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    format: RosterFormat,
    directory: &Directory,
    timeout: Duration,
) {
    let (revision, users, buf) = directory.encode(format);
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
