//! `SessionActor`: owns a client's UDP socket, its timer and its roster
//! fetches, and carries out what the socket-free [`Session`] decides. It
//! routes each peer datagram to the [`PeerActor`] of its conversation,
//! starting one when someone new writes, and on logout lets every
//! conversation finish delivering before it says goodbye.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use futures_util::stream;
use pigeon_shared::net::{recv_with, LocalSender, SendCounters};
use pigeon_shared::{Datagram, DecodeError, LogLimit, PeerAddr, SessionToken, UserName};
use tracing::{debug, info, warn};

use crate::clock::local_talk_time;
use crate::conversation::{ChatLine, Conversation, DeliveryConfig, SendRefusal};
use crate::events::{ClientEvent, ClientEvents, MessageId, MessageIds};
use crate::peer_actor::{
    AckReceived, ChatReceived, Drain, History, PeerActor, PeerUpdated, Say, TalkReceived,
};
use crate::roster_fetch::fetch_roster;
use crate::session::{Session, SessionOutput};

/// The session actor. See the module documentation.
pub struct SessionActor {
    session: Session,
    sender: LocalSender,
    events: Recipient<ClientEvents>,
    peers: HashMap<UserName, Addr<PeerActor>>,
    timer: Option<SpawnHandle>,
    fetch_timeout: Duration,
    delivery: DeliveryConfig,
    /// How long a logout waits for messages in flight.
    drain_timeout: Duration,
    ids: MessageIds,
    leaving: bool,
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
    /// Peer datagrams dropped because they did not come from the user they
    /// name.
    pub refused: AtomicU64,
    /// What was sent.
    pub send: Arc<SendCounters>,
}

/// Send a chat message to an online user.
#[derive(Message, Debug)]
#[rtype(result = "Result<Sent, SendTextError>")]
pub struct SendText {
    pub to: UserName,
    pub text: String,
}

/// A message handed to its conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Its number in later `Delivered` and `Failed` events.
    pub id: MessageId,
    /// Whether the peer will confirm it (a Pigeon client does; a seed-era
    /// one never does).
    pub confirmed: bool,
}

/// Why a chat message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendTextError {
    #[error("not logged in yet")]
    NotOnline,
    #[error("logging out")]
    LoggingOut,
    #[error("{0} is not online")]
    UnknownUser(UserName),
    #[error("{0}")]
    Refused(#[from] SendRefusal),
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

/// Finish delivering, log out and end the session.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Logout;

/// One datagram off the socket, decoded or not.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct Inbound(io::Result<(Result<Datagram, DecodeError>, SocketAddr)>);

/// Settings of a session actor beyond the session's own.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Time allowed for a TCP roster fetch.
    pub fetch_timeout: Duration,
    /// How conversations deliver.
    pub delivery: DeliveryConfig,
    /// How long a logout waits for messages in flight.
    pub drain_timeout: Duration,
}

impl SessionActor {
    /// A session sending through `sender` (bound on this arbiter).
    pub fn new(
        session: Session,
        sender: LocalSender,
        events: Recipient<ClientEvents>,
        settings: SessionSettings,
        stats: Arc<ClientStats>,
    ) -> Self {
        Self {
            session,
            sender,
            events,
            peers: HashMap::new(),
            timer: None,
            fetch_timeout: settings.fetch_timeout,
            delivery: settings.delivery,
            drain_timeout: settings.drain_timeout,
            ids: MessageIds::default(),
            leaving: false,
            stats,
            drop_log: LogLimit::default(),
        }
    }

    fn apply(&mut self, outputs: Vec<SessionOutput>, ctx: &mut Context<Self>) {
        let mut ended = false;
        let mut events = Vec::new();
        for output in outputs {
            match output {
                SessionOutput::Send { to, datagram } => {
                    if let Err(e) = self.sender.send(&datagram, to) {
                        warn!(%to, error = %e, "datagram not sent");
                    }
                }
                SessionOutput::FetchRoster { from, as_user } => self.fetch(from, as_user, ctx),
                SessionOutput::Emit(event) => {
                    ended |= event.is_final();
                    self.log_event(&event);
                    // An open conversation follows its peer.
                    if let ClientEvent::Online { name, .. } | ClientEvent::Offline { name } = &event
                    {
                        if let Some(actor) = self.peers.get(name) {
                            actor.do_send(PeerUpdated(self.session.peer(name.as_str())));
                        }
                    }
                    events.push(event);
                }
                SessionOutput::PeerUpdated { name, peer } => {
                    if let Some(actor) = self.peers.get(&name) {
                        actor.do_send(PeerUpdated(peer));
                    }
                }
                SessionOutput::DeliverTalk(talk) => {
                    let from = talk.from.clone();
                    self.peer(from).do_send(TalkReceived(talk));
                }
                SessionOutput::DeliverChat(chat) => {
                    let from = chat.from.clone();
                    self.peer(from).do_send(ChatReceived(chat));
                }
                SessionOutput::DeliverAck(ack) => {
                    // An acknowledgement for a conversation never opened
                    // answers nothing.
                    if let Some(actor) = self.peers.get(&ack.from) {
                        actor.do_send(AckReceived(ack));
                    }
                }
                SessionOutput::Refused {
                    from,
                    source,
                    refusal,
                } => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = self.drop_log.allow(Instant::now()) {
                        warn!(claimed = %from, %source, ?refusal, held_back, "dropped a datagram claiming to be from another user");
                    }
                }
            }
        }
        if !events.is_empty() {
            self.events.do_send(ClientEvents(events));
        }
        self.schedule(ctx);
        if ended {
            ctx.stop();
        }
    }

    fn log_event(&self, event: &ClientEvent) {
        match event {
            ClientEvent::ServerLost { reason } => warn!(%reason, "server lost; logging in again"),
            ClientEvent::Reconnected { online } => info!(online, "logged in again"),
            _ => {}
        }
    }

    fn fetch(
        &mut self,
        from: SocketAddr,
        as_user: Option<(UserName, SessionToken)>,
        ctx: &mut Context<Self>,
    ) {
        debug!(%from, "fetching roster");
        let fetch = fetch_roster(from, self.fetch_timeout, as_user);
        ctx.spawn(fetch.into_actor(self).map(move |result, act, ctx| {
            let result = match result {
                Ok(snapshot) => {
                    debug!(%from, users = snapshot.entries.len(), "roster fetched");
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
            act.apply(outputs, ctx);
        }));
    }

    /// The conversation with `name`, opened if it is not yet.
    fn peer(&mut self, name: UserName) -> Addr<PeerActor> {
        if let Some(peer) = self.peers.get(&name) {
            if peer.connected() {
                return peer.clone();
            }
        }
        let conversation = Conversation::new(
            name.clone(),
            self.session.name().clone(),
            self.session.instance(),
            self.delivery.clone(),
        );
        let peer = PeerActor::new(
            conversation,
            self.session.peer(name.as_str()),
            self.sender.clone(),
            self.events.clone(),
            self.ids.clone(),
        )
        .start();
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
        let socket = self.sender.socket();
        let datagrams = stream::unfold(socket, |socket| async move {
            let received = recv_with(&socket, |bytes, _| Datagram::decode(bytes)).await;
            Some((Inbound(received), socket))
        });
        ctx.add_stream(datagrams);
        let outputs = self.session.start(Instant::now());
        info!(
            user = %self.session.name(),
            endpoint = %self.session.endpoint(),
            instance = %self.session.instance(),
            "logging in"
        );
        self.apply(outputs, ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Datagrams still queued get one last chance (a logout, typically).
        if self.sender.flush().blocked {
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
                let outputs = self
                    .session
                    .datagram_received(datagram, source, Instant::now());
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
    type Result = ResponseFuture<Result<Sent, SendTextError>>;

    fn handle(&mut self, msg: SendText, _: &mut Context<Self>) -> Self::Result {
        if self.leaving {
            return Box::pin(async { Err(SendTextError::LoggingOut) });
        }
        if !self.session.can_chat() {
            return Box::pin(async { Err(SendTextError::NotOnline) });
        }
        let Some(known) = self.session.peer(msg.to.as_str()) else {
            return Box::pin(async move { Err(SendTextError::UnknownUser(msg.to)) });
        };
        let confirmed = known.instance.is_some();
        let say = Say {
            text: msg.text,
            time: local_talk_time(),
        };
        let peer = self.peer(msg.to);
        Box::pin(async move {
            match peer.send(say).await {
                Ok(Ok(id)) => Ok(Sent { id, confirmed }),
                Ok(Err(refusal)) => Err(SendTextError::Refused(refusal)),
                Err(_) => Err(SendTextError::NotOnline),
            }
        })
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
        if self.leaving {
            return;
        }
        self.leaving = true;
        info!(user = %self.session.name(), "logging out");
        // Every conversation first delivers what it can (or reports it
        // failed); the Drain requests queue behind any message already on
        // its way to a conversation, so nothing sent before is lost.
        let deadline = Instant::now() + self.drain_timeout;
        let drains: Vec<_> = self
            .peers
            .values()
            .map(|peer| peer.send(Drain { deadline }))
            .collect();
        let drained = async move {
            join_all(drains).await;
        };
        ctx.spawn(drained.into_actor(self).map(|(), act, ctx| {
            let outputs = act.session.logout(Instant::now());
            act.apply(outputs, ctx);
        }));
    }
}
