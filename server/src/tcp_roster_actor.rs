//! `TcpRosterActor`: owns the TCP listeners whose ports go in `Accept`: the
//! seed-format roster, and the Pigeon-format one (with the revision and
//! each user's instance id). Each connection gets the roster snapshot, one
//! .NET `BinaryWriter` string, and is closed.
//!
//! The snapshot is read from the [`Directory`] the roster writes through to,
//! never through the roster's mailbox, and goes only to a session that just
//! logged in: a Pigeon client names itself with its session token within a
//! short deadline; a seed client's host must have sent a login moments
//! ago. Each connection is served by its own task under deadlines, at most
//! `max_connections` at once (the rest wait in the kernel's backlog) and at
//! most `max_per_host` from one host, so slow or silent clients cost a
//! bounded amount and hold nobody else up.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use pigeon_shared::mailbox::{
    parse_mail_request, MailRequest, SignedMailRequest, MAX_MAIL_REQUEST_BYTES,
};
pub use pigeon_shared::roster_snapshot::RosterFormat;
use pigeon_shared::roster_snapshot::{
    decode_frame, parse_roster_request, put_dotnet_string, MAX_REQUEST_BYTES,
};
use pigeon_shared::LogLimit;
use pigeon_shared::{SessionToken, UserName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::directory::{Directory, Rendered};
use crate::roster_actor::{NotifyMail, RosterFetched, SeedFetched};
use crate::store_actor::{Mailbox, StoreActor};

/// Limits of the TCP roster service.
#[derive(Debug, Clone)]
pub struct TcpRosterConfig {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once to one host: one host's silent
    /// connections cannot take the slots everyone else needs.
    pub max_per_host: usize,
    /// Time allowed to write one snapshot and close.
    pub write_timeout: Duration,
    /// Time a Pigeon client has to say who it is (the connection is closed
    /// without the roster after it).
    pub request_timeout: Duration,
}

impl Default for TcpRosterConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_host: 16,
            write_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(1),
        }
    }
}

/// The TCP roster actor. See the module documentation.
pub struct TcpRosterActor {
    listeners: Vec<(TcpListener, RosterFormat)>,
    directory: Arc<Directory>,
    config: TcpRosterConfig,
    fetched: Recipient<RosterFetched>,
    seed_fetched: Recipient<SeedFetched>,
    stats: Arc<TcpStats>,
    mailbox: Option<MailService>,
    /// Logins waiting for their handshake to be answered.
    handshakes_waiting: Option<Arc<AtomicUsize>>,
}

/// Longest a Pigeon roster fetch is held while logins wait for their
/// handshakes: in a login storm the snapshot then carries the storm,
/// instead of every early client getting the rest in deltas.
pub const MAX_STORM_HOLD: Duration = Duration::from_millis(500);

/// Where mailbox requests go, and who tells users their mailbox has news.
#[derive(Clone)]
pub struct MailService {
    pub store: Addr<StoreActor>,
    pub notify: Recipient<NotifyMail>,
}

/// What the TCP roster service did, readable from any thread.
#[derive(Debug, Default)]
pub struct TcpStats {
    /// Snapshots sent.
    pub served: AtomicU64,
    /// Connections closed without the roster: no recent login from the
    /// host, no valid request in time.
    pub refused: AtomicU64,
    /// Connections closed at once: their host had its share open.
    pub host_full: AtomicU64,
    /// Rosters not sent: the connection failed, or the client was too
    /// slow to take it.
    pub failed: AtomicU64,
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
        seed_fetched: Recipient<SeedFetched>,
        stats: Arc<TcpStats>,
    ) -> Self {
        Self {
            listeners,
            directory,
            config,
            fetched,
            seed_fetched,
            stats,
            mailbox: None,
            handshakes_waiting: None,
        }
    }

    /// Holds roster fetches (up to [`MAX_STORM_HOLD`]) while `waiting`
    /// logins wait for their handshakes.
    pub fn with_handshake_queue(mut self, waiting: Arc<AtomicUsize>) -> Self {
        self.handshakes_waiting = Some(waiting);
        self
    }

    /// Also serves mailbox requests on the Pigeon port.
    pub fn with_mailbox(mut self, mailbox: MailService) -> Self {
        self.mailbox = Some(mailbox);
        self
    }
}

impl Actor for TcpRosterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // One budget of connection slots for both listeners.
        let slots = Arc::new(Semaphore::new(self.config.max_connections.max(1)));
        let per_host = Arc::new(Mutex::new(HashMap::new()));
        for (listener, format) in std::mem::take(&mut self.listeners) {
            let service = Service {
                format,
                directory: self.directory.clone(),
                config: self.config.clone(),
                fetched: self.fetched.clone(),
                seed_fetched: self.seed_fetched.clone(),
                stats: self.stats.clone(),
                mailbox: self.mailbox.clone(),
                handshakes_waiting: self.handshakes_waiting.clone(),
                per_host: per_host.clone(),
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
    seed_fetched: Recipient<SeedFetched>,
    stats: Arc<TcpStats>,
    mailbox: Option<MailService>,
    handshakes_waiting: Option<Arc<AtomicUsize>>,
    /// Connections being served, per host (both listeners).
    per_host: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A host's place among the connections being served; given back when
/// dropped.
struct HostSlot {
    host: IpAddr,
    per_host: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut map = self.per_host.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.host) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.host);
            }
        }
    }
}

impl Service {
    /// A place for one more connection from `host`, if it has not its
    /// share open already.
    fn host_slot(&self, host: IpAddr) -> Option<HostSlot> {
        let mut map = self.per_host.lock().unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(host).or_insert(0);
        if *count >= self.config.max_per_host {
            return None;
        }
        *count += 1;
        Some(HostSlot {
            host,
            per_host: self.per_host.clone(),
        })
    }
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
                let Some(host_slot) = service.host_slot(peer.ip().to_canonical()) else {
                    service.stats.host_full.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = error_log.allow(Instant::now()) {
                        warn!(%peer, held_back, "roster connection closed: its host has its share open");
                    }
                    drop(stream);
                    continue;
                };
                let service = service.clone();
                actix_rt::spawn(async move {
                    service.serve(stream, peer).await;
                    drop(host_slot);
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
        // The roster goes only to a session that just logged in: a Pigeon
        // client names itself with its session's token (read within a
        // short deadline); a seed client says nothing, and gets the roster
        // if its host sent a login moments ago.
        let asker = match self.format {
            RosterFormat::Seed => {
                if !self
                    .directory
                    .seed_login_recent(peer.ip().to_canonical(), Instant::now())
                {
                    self.refuse(peer, "no login from this host just now");
                    return;
                }
                None
            }
            RosterFormat::Pigeon => {
                let request = read_request(
                    &mut stream,
                    self.config.request_timeout,
                    self.config.write_timeout,
                )
                .await;
                match request {
                    Some(Request::Roster(name, token))
                        if self.directory.holds(name.as_str(), token) =>
                    {
                        self.hold_for_storm().await;
                        Some((name, token))
                    }
                    Some(Request::Mail(signed)) => {
                        // The token names the session; only its sealing
                        // key (which the token does not give) makes the MAC.
                        let key = self
                            .directory
                            .sealing_key(signed.name.as_str(), signed.token);
                        match key {
                            Some(key) if signed.verify(&key) => {
                                self.serve_mail(stream, peer, signed.name, signed.request)
                                    .await;
                            }
                            Some(_) => self.refuse(peer, "a mailbox request with a wrong MAC"),
                            None => self.refuse(peer, "not an online session with a key"),
                        }
                        return;
                    }
                    Some(_) => {
                        self.refuse(peer, "not an online session");
                        return;
                    }
                    None => {
                        self.refuse(peer, "no request in time");
                        return;
                    }
                }
            }
        };
        let Rendered {
            revision,
            users,
            bytes: buf,
        } = self.directory.encode(self.format);
        match asker {
            Some((name, token)) => self.fetched.do_send(RosterFetched {
                name,
                token,
                revision,
            }),
            // A TCP handshake cannot be forged off-path: the host's
            // seed-style sessions listen where they said. Told after the
            // snapshot is taken, with its revision, so that the changes
            // since reach them.
            None => self.seed_fetched.do_send(SeedFetched {
                host: peer.ip().to_canonical(),
                revision,
            }),
        }
        let timeout = self.config.write_timeout;
        let format = self.format;
        match write_and_close(&mut stream, &buf, timeout).await {
            Ok(Ok(())) => {
                self.stats.served.fetch_add(1, Ordering::Relaxed);
                info!(
                    %peer,
                    users,
                    bytes = buf.len(),
                    ?format,
                    revision,
                    "roster sent over TCP"
                )
            }
            Ok(Err(e)) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, error = %e, "roster not sent: connection failed")
            }
            Err(_) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, ?timeout, "roster not sent: client too slow")
            }
        }
    }

    /// Waits, up to [`MAX_STORM_HOLD`], while logins wait for their
    /// handshakes.
    async fn hold_for_storm(&self) {
        let Some(waiting) = &self.handshakes_waiting else {
            return;
        };
        let until = tokio::time::Instant::now() + MAX_STORM_HOLD;
        while waiting.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Answers a mailbox request from `name` (an online session), and
    /// tells whoever has news.
    async fn serve_mail(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        name: UserName,
        request: MailRequest,
    ) {
        let Some(mailbox) = &self.mailbox else {
            self.refuse(peer, "no mailboxes here");
            return;
        };
        let done = match mailbox.store.send(Mailbox { name, request }).await {
            Ok(done) => done,
            Err(_) => {
                self.refuse(peer, "the store is gone");
                return;
            }
        };
        if !done.notify.is_empty() || !done.emptied.is_empty() {
            mailbox.notify.do_send(NotifyMail {
                names: done.notify,
                emptied: done.emptied,
            });
        }
        let Some(answer) = done.answer else {
            self.refuse(peer, "the store failed");
            return;
        };
        let mut buf = BytesMut::new();
        put_dotnet_string(&mut buf, &answer.to_text());
        match write_and_close(&mut stream, &buf, self.config.write_timeout).await {
            Ok(Ok(())) => debug!(%peer, bytes = buf.len(), "mailbox answered"),
            _ => debug!(%peer, "mailbox answer not sent: connection failed or too slow"),
        }
    }

    /// A connection closed without the roster.
    fn refuse(&self, peer: SocketAddr, why: &str) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        debug!(%peer, format = ?self.format, "roster refused: {why}");
    }
}

/// Writes `bytes` and closes, within `timeout`.
async fn write_and_close(
    stream: &mut TcpStream,
    bytes: &[u8],
    timeout: Duration,
) -> Result<std::io::Result<()>, tokio::time::error::Elapsed> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(timeout, write).await
}

/// What a Pigeon client asks on the Pigeon port.
enum Request {
    Roster(UserName, SessionToken),
    Mail(SignedMailRequest),
}

/// Reads a Pigeon client's request, if it sends a well-formed one in time:
/// the first bytes within `first`, and a request longer than a roster
/// request (a mailbox deposit) whole within `whole`.
async fn read_request(stream: &mut TcpStream, first: Duration, whole: Duration) -> Option<Request> {
    let start = tokio::time::Instant::now();
    let mut deadline = start + first;
    let mut buf = BytesMut::with_capacity(64);
    loop {
        if let Some((text, _)) = decode_frame(&buf, MAX_MAIL_REQUEST_BYTES).ok()? {
            return match parse_roster_request(&text) {
                Some((name, token)) => Some(Request::Roster(name, token)),
                None => parse_mail_request(&text).map(Request::Mail),
            };
        }
        if buf.len() > MAX_REQUEST_BYTES {
            deadline = start + whole.max(first);
        }
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
        if read.ok()?.ok()? == 0 || buf.len() > MAX_MAIL_REQUEST_BYTES + 5 {
            return None;
        }
    }
}
