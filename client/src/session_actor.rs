//! `SessionActor`: owns a client's UDP socket, its timer and its roster
//! fetch, and carries out what the socket-free [`Session`] decides. It
//! routes each chat message to the [`PeerActor`] of its conversation,
//! starting one when a message arrives from someone new.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::stream;
use pigeon_server::net::{recv_with, SendOutcome, UdpSender};
use pigeon_shared::{Datagram, DecodeError, LogLimit, PeerAddr, Talk, UserName, MAX_DATAGRAM_LEN};
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use crate::clock::local_talk_time;
use crate::conversation::ChatLine;
use crate::events::ClientEvent;
use crate::peer_actor::{History, PeerActor, Said, TalkReceived};
use crate::roster_fetch::fetch_roster;
use crate::session::{Session, SessionOutput};

/// Most datagrams queued while the kernel's send buffer is full.
const MAX_SEND_QUEUE: usize = 4096;

/// The session actor. See the module documentation.
pub struct SessionActor {
    session: Session,
    sender: UdpSender,
    events: Recipient<ClientEvent>,
    peers: HashMap<UserName, Addr<PeerActor>>,
    timer: Option<SpawnHandle>,
    fetch_timeout: Duration,
    history_lines: usize,
    flush_armed: bool,
    stats: Arc<ClientStats>,
    drop_log: LogLimit,
}

/// Counters a client keeps, readable from any thread.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams that did not decode.
    pub undecodable: AtomicU64,
    /// Datagrams handed to the kernel.
    pub sent: AtomicU64,
    /// Datagrams that could not be sent.
    pub send_failed: AtomicU64,
}

/// Send a chat message to an online user.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), SendTextError>")]
pub struct SendText {
    pub to: UserName,
    pub text: String,
}

/// Why a chat message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendTextError {
    #[error("not logged in yet")]
    NotOnline,
    #[error("{0} is not online")]
    UnknownUser(UserName),
    #[error("nothing to send")]
    Empty,
    #[error("the message is too long for one datagram ({bytes} bytes; at most {max})")]
    TooLong { bytes: usize, max: usize },
}

/// The users online, sorted by name, this one included.
#[derive(Message, Debug)]
#[rtype(result = "Vec<(UserName, PeerAddr)>")]
pub struct ListUsers;

/// The conversation with a user so far (empty if none was opened).
#[derive(Message, Debug)]
#[rtype(result = "Vec<ChatLine>")]
pub struct ConversationWith {
    pub peer: UserName,
}

/// Log out and end the session.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Logout;

/// One datagram off the socket, decoded or not.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct Inbound(io::Result<(Result<Datagram, DecodeError>, SocketAddr)>);

impl SessionActor {
    /// A session on `socket` (already converted on this arbiter).
    pub fn new(
        session: Session,
        socket: UdpSocket,
        events: Recipient<ClientEvent>,
        fetch_timeout: Duration,
        history_lines: usize,
        stats: Arc<ClientStats>,
    ) -> io::Result<Self> {
        Ok(Self {
            session,
            sender: UdpSender::new(Arc::new(socket), MAX_SEND_QUEUE)?,
            events,
            peers: HashMap::new(),
            timer: None,
            fetch_timeout,
            history_lines,
            flush_armed: false,
            stats,
            drop_log: LogLimit::default(),
        })
    }

    fn apply(&mut self, outputs: Vec<SessionOutput>, ctx: &mut Context<Self>) {
        let mut ended = false;
        for output in outputs {
            match output {
                SessionOutput::Send { to, datagram } => self.transmit(to, &datagram, ctx),
                SessionOutput::FetchRoster { from } => self.fetch(from, ctx),
                SessionOutput::Emit(event) => {
                    ended |= event.is_final();
                    self.events.do_send(event);
                }
                SessionOutput::DeliverTalk { talk, source } => self.deliver(talk, source),
            }
        }
        self.schedule(ctx);
        if ended {
            ctx.stop();
        }
    }

    fn transmit(&mut self, to: SocketAddr, datagram: &Datagram, ctx: &mut Context<Self>) {
        let bytes = datagram.to_bytes();
        match self.sender.send(&bytes, to) {
            SendOutcome::Sent => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            SendOutcome::Queued => self.arm_flush(ctx),
            SendOutcome::QueueFull => {
                self.stats.send_failed.fetch_add(1, Ordering::Relaxed);
                warn!(%to, "datagram not sent: send queue full");
            }
            SendOutcome::Failed(e) => {
                self.stats.send_failed.fetch_add(1, Ordering::Relaxed);
                warn!(%to, error = %e, "datagram not sent");
            }
        }
    }

    fn arm_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_armed {
            return;
        }
        self.flush_armed = true;
        let socket = self.sender.socket().clone();
        let writable = async move { socket.writable().await };
        ctx.spawn(writable.into_actor(self).map(|_, act, ctx| {
            act.flush_armed = false;
            let report = act.sender.flush();
            act.stats.sent.fetch_add(report.sent, Ordering::Relaxed);
            act.stats
                .send_failed
                .fetch_add(report.failed, Ordering::Relaxed);
            if report.blocked {
                act.arm_flush(ctx);
            }
        }));
    }

    fn fetch(&mut self, from: SocketAddr, ctx: &mut Context<Self>) {
        debug!(%from, "fetching roster");
        let fetch = fetch_roster(from, self.fetch_timeout);
        ctx.spawn(fetch.into_actor(self).map(|result, act, ctx| {
            let result = match result {
                Ok(snapshot) => {
                    for skipped in &snapshot.skipped {
                        warn!(entry = %skipped.excerpt, reason = %skipped.reason, "roster entry skipped");
                    }
                    Ok(snapshot)
                }
                Err(e) => {
                    warn!(error = %e, "roster fetch failed");
                    Err(e.to_string())
                }
            };
            let outputs = act.session.roster_fetched(result, Instant::now());
            if act.session.is_online() {
                info!(user = %act.session.name(), endpoint = %act.session.endpoint(), "online");
            }
            act.apply(outputs, ctx);
        }));
    }

    fn deliver(&mut self, talk: Talk, source: SocketAddr) {
        debug!(from = %talk.from, %source, "message received");
        let peer = self.peer(talk.from.clone());
        peer.do_send(TalkReceived { talk });
    }

    /// The conversation with `name`, opened if it is not yet.
    fn peer(&mut self, name: UserName) -> Addr<PeerActor> {
        if let Some(peer) = self.peers.get(&name) {
            if peer.connected() {
                return peer.clone();
            }
        }
        let peer = PeerActor::new(name.clone(), self.events.clone(), self.history_lines).start();
        self.peers.insert(name, peer.clone());
        peer
    }

    /// Arms the timer for the session's next deadline.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(deadline) = self.session.deadline() {
            let wait = deadline.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                let outputs = act.session.timer_fired(Instant::now());
                act.apply(outputs, ctx);
            }));
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let socket = self.sender.socket().clone();
        let datagrams = stream::unfold(socket, |socket| async move {
            let received = recv_with(&socket, Datagram::decode).await;
            Some((Inbound(received), socket))
        });
        ctx.add_stream(datagrams);
        let outputs = self.session.start(Instant::now());
        info!(
            user = %self.session.name(),
            endpoint = %self.session.endpoint(),
            "logging in"
        );
        self.apply(outputs, ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Datagrams still queued get one last chance (a logout, typically).
        let report = self.sender.flush();
        if report.blocked {
            warn!("session ended with datagrams unsent");
        }
        debug!(user = %self.session.name(), "session ended");
    }
}

impl StreamHandler<Inbound> for SessionActor {
    fn handle(&mut self, Inbound(received): Inbound, ctx: &mut Context<Self>) {
        let (decoded, source) = match received {
            Ok(received) => received,
            Err(e) => {
                debug!(error = %e, "receive error");
                return;
            }
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match decoded {
            Ok(datagram) => {
                let outputs = self.session.datagram_received(datagram, source);
                self.apply(outputs, ctx);
            }
            Err(e) => {
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = self.drop_log.allow(Instant::now()) {
                    warn!(%source, reason = %e, held_back, "dropped datagram");
                }
            }
        }
    }

    /// The datagram stream never ends by itself; stopping is explicit.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<SendText> for SessionActor {
    type Result = Result<(), SendTextError>;

    fn handle(&mut self, msg: SendText, ctx: &mut Context<Self>) -> Self::Result {
        if !self.session.is_online() {
            return Err(SendTextError::NotOnline);
        }
        let endpoint = self
            .session
            .endpoint_of(msg.to.as_str())
            .ok_or_else(|| SendTextError::UnknownUser(msg.to.clone()))?;
        if msg.text.is_empty() {
            return Err(SendTextError::Empty);
        }
        let time = local_talk_time();
        let talk = Datagram::Talk(Talk {
            time: time.clone(),
            from: self.session.name().clone(),
            text: msg.text.clone(),
        });
        let bytes = talk.encoded_len();
        if bytes > MAX_DATAGRAM_LEN {
            return Err(SendTextError::TooLong {
                bytes,
                max: MAX_DATAGRAM_LEN,
            });
        }
        self.transmit(endpoint.socket_addr(), &talk, ctx);
        let peer = self.peer(msg.to);
        peer.do_send(Said {
            text: msg.text,
            time,
        });
        Ok(())
    }
}

impl Handler<ListUsers> for SessionActor {
    type Result = MessageResult<ListUsers>;

    fn handle(&mut self, _: ListUsers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.session.users())
    }
}

impl Handler<ConversationWith> for SessionActor {
    type Result = ResponseFuture<Vec<ChatLine>>;

    fn handle(&mut self, msg: ConversationWith, _: &mut Context<Self>) -> Self::Result {
        let peer = self.peers.get(&msg.peer).cloned();
        Box::pin(async move {
            match peer {
                Some(peer) => peer.send(History).await.unwrap_or_default(),
                None => Vec::new(),
            }
        })
    }
}

impl Handler<Logout> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Logout, ctx: &mut Context<Self>) {
        info!(user = %self.session.name(), "logging out");
        let outputs = self.session.logout();
        self.apply(outputs, ctx);
    }
}
