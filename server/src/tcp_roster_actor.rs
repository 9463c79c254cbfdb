//! `TcpRosterActor`: owns the TCP listener whose port goes in `Accept`.
//! Each connection gets the roster snapshot, one .NET `BinaryWriter`
//! string, and is closed.
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
use pigeon_shared::roster_snapshot::encode_roster;
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
    listener: Option<TcpListener>,
    directory: Directory,
    config: TcpRosterConfig,
}

/// Stop serving and close the listener.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopTcpRoster;

impl TcpRosterActor {
    /// Serves `directory` on `listener`.
    pub fn new(listener: TcpListener, directory: Directory, config: TcpRosterConfig) -> Self {
        Self {
            listener: Some(listener),
            directory,
            config,
        }
    }
}

impl Actor for TcpRosterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let accept = accept_loop(listener, self.directory.clone(), self.config.clone());
        ctx.spawn(accept.into_actor(self));
    }
}

impl Handler<StopTcpRoster> for TcpRosterActor {
    type Result = ();

    fn handle(&mut self, _: StopTcpRoster, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

async fn accept_loop(listener: TcpListener, directory: Directory, config: TcpRosterConfig) {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
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
                let timeout = config.write_timeout;
                actix_rt::spawn(async move {
                    serve(stream, peer, &directory, timeout).await;
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

async fn serve(mut stream: TcpStream, peer: SocketAddr, directory: &Directory, timeout: Duration) {
    let entries: Vec<_> = directory
        .iter()
        .map(|entry| (entry.key().clone(), *entry.value()))
        .collect();
    let mut buf = BytesMut::new();
    encode_roster(entries.iter().map(|(name, addr)| (name, addr)), &mut buf);
    let write = async {
        stream.write_all(&buf).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => info!(
            %peer,
            users = entries.len(),
            bytes = buf.len(),
            "roster sent over TCP"
        ),
        Ok(Err(e)) => debug!(%peer, error = %e, "roster not sent: connection failed"),
        Err(_) => warn!(%peer, ?timeout, "roster not sent: client too slow"),
    }
}
