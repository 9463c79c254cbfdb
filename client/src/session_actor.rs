//! `SessionActor`: the client's shell. It owns the UDP socket, the one
//! timer of the session part of the client core ([`Session`]), the TCP
//! roster fetches, and the one path to the front end. It carries out what
//! the session decides, and runs each conversation's part of the core in a
//! [`PeerActor`], started when the session first routes something to it
//! and stopped again when the conversation has been idle for a while (its
//! state is kept here meanwhile).
//!
//! Events reach the front end in the order things happened: what a
//! conversation makes of a datagram is put in its place among the
//! session's own events, even though the conversation answers later.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::stream;
use pigeon_shared::net::{recv_with, LocalSender, SendCounters};
use pigeon_shared::{Datagram, DecodeError, LogLimit, PeerAddr, PublicKey, SessionToken, UserName};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::client_core::{PeerCore, PeerOutput, Sent};
use crate::clock::SharedClock;
use crate::conversation::SendRefusal;
use crate::conversation::{ChatLine, Conversation, DeliveryConfig};
use crate::events::{ClientEvent, ClientEvents, MessageIds};
use crate::known_servers;
use crate::mail_seen;
use crate::peer_actor::{Drain, History, Park, PeerActor, PeerIdle, PeerOutputs, Say, ToPeer};
use crate::roster_fetch::{ask_mailbox, fetch_roster};
use crate::session::{KeyInfo, PeerInput, SendTextError, Session, SessionOutput, TrustError};
use pigeon_shared::mailbox::{MailAnswer, MailRequest};
use pigeon_shared::offline::{self, OfflineMessage};

/// The session actor. See the module documentation.
pub struct SessionActor {
    session: Session,
    sender: LocalSender,
    events: Recipient<ClientEvents>,
    conversations: HashMap<UserName, Slot>,
    timer: Option<SpawnHandle>,
    settings: SessionSettings,
    ids: MessageIds,
    outbox: Outbox,
    /// Leaving: the conversations still delivering.
    draining: Option<HashSet<UserName>>,
    stats: Arc<ClientStats>,
    drop_log: LogLimit,
    /// The server the session logs in through (it may move to another of
    /// its cluster).
    server: SocketAddr,
}

/// Where a conversation is.
enum Slot {
    /// Its actor runs it.
    Running(Addr<PeerActor>),
    /// Its actor is being asked to hand it back; what arrives meanwhile
    /// waits here.
    Parking(Vec<ToPeer>),
    /// Idle, kept here without an actor.
    Parked(Box<PeerCore>),
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
    /// End-to-end handshakes completed (as initiator or responder).
    pub handshakes: AtomicU64,
    /// Conversation actors started (again, after an idle stop).
    pub conversations_started: AtomicU64,
    /// Meetings asked of the server (to punch through NATs).
    pub meetings: AtomicU64,
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
    /// Where servers' keys are pinned (`None`: nowhere on disk).
    pub known_servers: Option<std::path::PathBuf>,
    /// Where peers' keys are pinned (`None`: nowhere on disk).
    pub known_peers: Option<std::path::PathBuf>,
    /// Where offline messages shown are remembered (`None`: nowhere).
    pub mail_seen: Option<std::path::PathBuf>,
    /// Time allowed for a TCP roster fetch.
    pub fetch_timeout: Duration,
    /// How conversations deliver.
    pub delivery: DeliveryConfig,
    /// How long an idle conversation keeps its actor.
    pub idle_stop: Duration,
    /// Where time comes from.
    pub clock: SharedClock,
    /// Conversations never look for a direct path: they take the relay
    /// while there is one (load tests of the relay).
    pub relay_only: bool,
}

/// Events on their way to the front end, in order: a conversation's answer
/// to a datagram takes the place the datagram had.
#[derive(Default)]
struct Outbox {
    slots: VecDeque<(Option<u64>, Option<Vec<ClientEvent>>)>,
    next_ticket: u64,
}

impl Outbox {
    /// A place for events to come; its ticket.
    fn reserve(&mut self) -> u64 {
        self.next_ticket += 1;
        self.slots.push_back((Some(self.next_ticket), None));
        self.next_ticket
    }

    /// Events that happened now; what may go out now.
    fn push(&mut self, events: Vec<ClientEvent>) -> Vec<ClientEvent> {
        if events.is_empty() && self.slots.is_empty() {
            return Vec::new();
        }
        self.slots.push_back((None, Some(events)));
        self.ready()
    }

    /// The events for `ticket`; what may go out now.
    fn fill(&mut self, ticket: u64, events: Vec<ClientEvent>) -> Vec<ClientEvent> {
        if let Some(slot) = self.slots.iter_mut().find(|(t, _)| *t == Some(ticket)) {
            slot.1 = Some(events);
        }
        self.ready()
    }

    /// Everything held, in order, places never filled left out: the
    /// session is ending, and no answer will come for them (a
    /// conversation's answer still on its way when the server's `bye`
    /// arrives would otherwise hold back the end of the session itself).
    fn close(&mut self) -> Vec<ClientEvent> {
        self.slots
            .drain(..)
            .filter_map(|(_, events)| events)
            .flatten()
            .collect()
    }

    fn ready(&mut self) -> Vec<ClientEvent> {
        let mut out = Vec::new();
        while let Some((_, Some(_))) = self.slots.front() {
            if let Some((_, Some(events))) = self.slots.pop_front() {
                out.extend(events);
            }
        }
        out
    }
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
        let server = session.server();
        Self {
            session,
            sender,
            events,
            conversations: HashMap::new(),
            timer: None,
            settings,
            ids: MessageIds::default(),
            outbox: Outbox::default(),
            draining: None,
            stats,
            drop_log: LogLimit::default(),
            server,
        }
    }

    /// Carries out what the session decided.
    fn apply(&mut self, outputs: Vec<SessionOutput>, ctx: &mut Context<Self>) {
        let server = self.session.server();
        if server != self.server {
            info!(from = %self.server, to = %server, "logging in through another server of the cluster");
            self.server = server;
        }
        let mut events = Vec::new();
        // Written to the file together: a first roster pins every key in it.
        let mut pins = Vec::new();
        for output in outputs {
            match output {
                SessionOutput::Send { to, datagram } => self.transmit(to, &datagram),
                SessionOutput::FetchRoster { from, as_user } => self.fetch(from, as_user, ctx),
                SessionOutput::PinServer(key) => self.pin_server(key),
                SessionOutput::PinPeer { name, key } => pins.push((name, key)),
                SessionOutput::Mailbox(request) => self.ask_mailbox(request, ctx),
                SessionOutput::MailShown(digests) => self.mail_shown(&digests),
                SessionOutput::MailRefused { from } => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    warn!(claimed = %from, "dropped an offline message: not sealed by the key registered to its sender");
                }
                SessionOutput::Emit(event) => {
                    self.log_event(&event);
                    events.push(event);
                }
                SessionOutput::Conversation { peer, input } => {
                    // What the conversation makes of it takes its place
                    // among the events.
                    let ticket = match input {
                        // News of the peer, the relay or a meeting answers
                        // nothing in particular: what it brings goes after.
                        PeerInput::Peer(_) | PeerInput::Relay(_) | PeerInput::Punch { .. } => None,
                        _ => {
                            self.emit(std::mem::take(&mut events));
                            Some(self.outbox.reserve())
                        }
                    };
                    self.route(peer, ToPeer { input, ticket }, ctx);
                }
                SessionOutput::Drain { deadline } => self.drain(deadline, ctx),
                SessionOutput::Refused {
                    from,
                    source,
                    refusal,
                } => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = self.drop_log.allow(self.settings.clock.now()) {
                        warn!(claimed = %from, %source, ?refusal, held_back, "dropped a peer datagram");
                    }
                }
            }
        }
        self.pin_peers(&pins);
        self.emit(events);
        self.schedule(ctx);
    }

    /// Events that happened now, in their place.
    fn emit(&mut self, events: Vec<ClientEvent>) {
        let ready = self.outbox.push(events);
        self.deliver(ready);
    }

    fn deliver(&mut self, events: Vec<ClientEvent>) {
        if events.is_empty() {
            return;
        }
        self.events.do_send(ClientEvents(events));
    }

    fn transmit(&self, to: SocketAddr, datagram: &Datagram) {
        if let Err(e) = self.sender.send(datagram, to) {
            warn!(%to, error = %e, "datagram not sent");
        }
    }

    fn log_event(&self, event: &ClientEvent) {
        match event {
            ClientEvent::ServerLost { reason } => warn!(%reason, "server lost; logging in again"),
            ClientEvent::Reconnected { online } => info!(online, "logged in again"),
            _ => {}
        }
    }

    /// Routes `msg` to its conversation: to its actor, started (again) if
    /// need be; an update about the peer reaches only a conversation that
    /// exists.
    fn route(&mut self, peer: UserName, msg: ToPeer, ctx: &mut Context<Self>) {
        let opens = msg.input.opens();
        match self.conversations.get_mut(&peer) {
            Some(Slot::Running(actor)) if actor.connected() => actor.do_send(msg),
            Some(Slot::Parking(waiting)) => waiting.push(msg),
            // News about the peer, or a stale acknowledgement: a kept
            // conversation takes it without waking up.
            Some(Slot::Parked(core)) if !opens => {
                let outputs = core.handle(msg.input, self.settings.clock.now());
                self.peer_outputs(&peer, msg.ticket, outputs, ctx);
            }
            Some(Slot::Parked(_)) | Some(Slot::Running(_)) => {
                self.start_peer(&peer, ctx).do_send(msg);
            }
            None if opens => self.start_peer(&peer, ctx).do_send(msg),
            // Nothing to tell a conversation that does not exist; its place
            // among the events stays empty.
            None => self.peer_outputs(&peer, msg.ticket, Vec::new(), ctx),
        }
    }

    /// Carries out what a conversation wants done: datagrams now, events in
    /// the place of the input they answer (`ticket`), the end of a drain.
    fn peer_outputs(
        &mut self,
        peer: &UserName,
        ticket: Option<u64>,
        outputs: Vec<PeerOutput>,
        ctx: &mut Context<Self>,
    ) {
        let mut events = Vec::new();
        let mut drained = false;
        for output in outputs {
            match output {
                PeerOutput::Transmit { to, datagram } => self.transmit(to, &datagram),
                PeerOutput::Relay(secure) => {
                    if let Some((to, datagram)) = self.session.relay_request(peer, secure) {
                        self.transmit(to, &datagram);
                    }
                }
                PeerOutput::Meet => {
                    if let Some((to, datagram)) = self.session.meet_request(peer) {
                        self.stats.meetings.fetch_add(1, Ordering::Relaxed);
                        self.transmit(to, &datagram);
                    }
                }
                PeerOutput::Emit(event) => events.push(event),
                PeerOutput::Drained => drained = true,
                PeerOutput::Established => {
                    self.stats.handshakes.fetch_add(1, Ordering::Relaxed);
                }
                PeerOutput::Refused(refusal) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = self.drop_log.allow(self.settings.clock.now()) {
                        warn!(claimed = %peer, ?refusal, held_back, "dropped a peer datagram");
                    }
                }
            }
        }
        let ready = match ticket {
            Some(ticket) => self.outbox.fill(ticket, events),
            None => self.outbox.push(events),
        };
        self.deliver(ready);
        if drained {
            if let Some(waiting) = self.draining.as_mut() {
                waiting.remove(peer);
            }
            self.drain_done(ctx);
        }
    }

    /// Starts the actor for the conversation with `peer`, from its kept
    /// state or afresh.
    fn start_peer(&mut self, peer: &UserName, ctx: &mut Context<Self>) -> Addr<PeerActor> {
        let kept = match self.conversations.remove(peer) {
            Some(Slot::Parked(core)) => Some(*core),
            _ => None,
        };
        let core = kept.unwrap_or_else(|| {
            PeerCore::new(
                Conversation::new(
                    peer.clone(),
                    self.session.name().clone(),
                    self.session.instance(),
                    self.settings.delivery.clone(),
                ),
                self.session.peer(peer.as_str()),
                self.session.identity(),
                self.session.relays(),
            )
            .relay_only(self.settings.relay_only)
        });
        self.stats
            .conversations_started
            .fetch_add(1, Ordering::Relaxed);
        let actor = PeerActor::new(
            core,
            ctx.address().recipient(),
            ctx.address().recipient(),
            self.ids.clone(),
            self.settings.clock.clone(),
            self.settings.idle_stop,
        )
        .start();
        self.conversations
            .insert(peer.clone(), Slot::Running(actor.clone()));
        actor
    }

    /// The user is leaving: every conversation delivers what it can.
    fn drain(&mut self, deadline: std::time::Instant, ctx: &mut Context<Self>) {
        let mut waiting = HashSet::new();
        for (peer, slot) in &self.conversations {
            match slot {
                Slot::Running(actor) if actor.connected() => {
                    actor.do_send(Drain { deadline });
                    waiting.insert(peer.clone());
                }
                // A parking conversation was idle; a parked one is.
                _ => {}
            }
        }
        self.draining = Some(waiting);
        self.drain_done(ctx);
    }

    fn drain_done(&mut self, ctx: &mut Context<Self>) {
        if self.draining.as_ref().is_some_and(HashSet::is_empty) {
            self.draining = None;
            let outputs = self.session.drained(self.settings.clock.now());
            self.apply(outputs, ctx);
        }
    }

    /// Keeps the server's key, first seen now, for the next start.
    fn pin_server(&mut self, key: PublicKey) {
        let server = self.session.server();
        info!(%server, key = %key.fingerprint(), "server key pinned on first contact");
        if let Some(path) = &self.settings.known_servers {
            if let Err(e) = known_servers::pin(path, server, key) {
                warn!(path = %path.display(), error = %e, "the server's key is pinned for this run only: cannot write it");
            }
        }
    }

    /// Asks the server's mailbox; a fetch's answer goes to the session.
    fn ask_mailbox(&mut self, request: MailRequest, ctx: &mut Context<Self>) {
        let Some(access) = self.session.mailbox_access() else {
            return;
        };
        let timeout = self.settings.fetch_timeout;
        let asked = async move { ask_mailbox(&access, timeout, &request).await };
        ctx.spawn(asked.into_actor(self).map(|answer, act, ctx| match answer {
            Ok(MailAnswer::Box {
                mail,
                receipts,
                more,
            }) => {
                if !mail.is_empty() || !receipts.is_empty() {
                    info!(
                        messages = mail.len(),
                        receipts = receipts.len(),
                        "mailbox fetched"
                    );
                }
                let out = act.session.mail_received(mail, receipts, more);
                act.apply(out, ctx);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "mailbox request failed; tried again at the next news"),
        }));
    }

    /// `text` for `to`, who is offline: sealed to the key `to` is
    /// registered to and handed to the server to keep. Answers once the
    /// key is known (a name nobody registered is an error); whether the
    /// server keeps it comes later, as `Stored` or `NotStored`.
    fn send_offline(
        &mut self,
        to: UserName,
        text: String,
    ) -> ResponseActFuture<Self, Result<Sent, SendTextError>> {
        let (Some(access), Some(identity)) =
            (self.session.mailbox_access(), self.session.identity())
        else {
            return Box::pin(fut::ready(Err(SendTextError::UnknownUser(to))));
        };
        let units = text.encode_utf16().count();
        let max = crate::conversation::MAX_PARTS * crate::conversation::MAX_PART_UNITS;
        if text.is_empty() {
            return Box::pin(fut::ready(Err(SendTextError::Refused(SendRefusal::Empty))));
        }
        if units > max {
            return Box::pin(fut::ready(Err(SendTextError::Refused(
                SendRefusal::TooLong {
                    chars: text.chars().count(),
                    units,
                    max,
                },
            ))));
        }
        let timeout = self.settings.fetch_timeout;
        let time = self.settings.clock.talk_time();
        let sent_at_ms = u64::try_from(self.settings.clock.wall_ms()).unwrap_or(0);
        let ids = self.ids.clone();
        let lookup = {
            let (access, request) = (access.clone(), MailRequest::Key { name: to.clone() });
            async move { ask_mailbox(&access, timeout, &request).await }
        };
        Box::pin(lookup.into_actor(self).map(move |answer, act, ctx| {
            let key = match answer {
                Ok(MailAnswer::Key { key, .. }) => key,
                Ok(MailAnswer::Unregistered { .. }) => {
                    return Err(SendTextError::Unregistered(to));
                }
                Ok(_) => {
                    return Err(SendTextError::NotKept(
                        to,
                        "the server answered oddly".into(),
                    ))
                }
                Err(e) => return Err(SendTextError::NotKept(to, e.to_string())),
            };
            let pinned = act.session.offline_key(&to, key)?;
            act.apply(pinned, ctx);
            let message = OfflineMessage {
                sent_at_ms,
                time: time.clone(),
                text: text.clone(),
            };
            let sealed = offline::seal(&identity, &access.name, &to, key, &message)
                .map_err(|e| SendTextError::NotKept(to.clone(), e.to_string()))?;
            let id = ids.next();
            let request = MailRequest::Deposit {
                to: to.clone(),
                id: id.0,
                sealed,
            };
            let deposit = async move { ask_mailbox(&access, timeout, &request).await };
            ctx.spawn(deposit.into_actor(act).map(move |answer, act, _| {
                let not_stored = |why: String| ClientEvent::NotStored {
                    to: to.clone(),
                    id,
                    text: text.clone(),
                    why,
                };
                let event = match answer {
                    Ok(MailAnswer::Stored { serial }) => {
                        debug!(%to, %id, serial, "offline message stored");
                        ClientEvent::Stored { to: to.clone(), id }
                    }
                    Ok(MailAnswer::Full { detail }) => not_stored(detail),
                    Ok(MailAnswer::Unregistered { .. }) => {
                        not_stored(format!("{to} is no longer registered"))
                    }
                    Ok(_) => not_stored("the server answered oddly".into()),
                    Err(e) => not_stored(e.to_string()),
                };
                act.emit(vec![event]);
            }));
            Ok(Sent {
                id,
                confirmed: true,
                time,
            })
        }))
    }

    fn mail_shown(&mut self, digests: &[u64]) {
        if let Some(path) = &self.settings.mail_seen {
            if let Err(e) = mail_seen::record(path, digests) {
                warn!(path = %path.display(), error = %e, "offline messages shown are remembered for this run only: cannot write them");
            }
        }
    }

    fn pin_peers(&mut self, pins: &[(UserName, PublicKey)]) {
        if pins.is_empty() {
            return;
        }
        for (name, key) in pins {
            debug!(peer = %name, key = %key.fingerprint(), "peer key pinned");
        }
        if let Some(path) = &self.settings.known_peers {
            if let Err(e) = known_servers::pin_peers(path, pins) {
                warn!(path = %path.display(), error = %e, keys = pins.len(), "peers' keys are pinned for this run only: cannot write them");
            }
        }
    }

    fn fetch(
        &mut self,
        from: SocketAddr,
        as_user: Option<(UserName, SessionToken)>,
        ctx: &mut Context<Self>,
    ) {
        debug!(%from, "fetching roster");
        let fetch = fetch_roster(from, self.settings.fetch_timeout, as_user);
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
            let outputs = act
                .session
                .roster_fetched(result, act.settings.clock.now());
            act.apply(outputs, ctx);
        }));
    }

    /// Arms the timer for the session's next deadline.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if self.session.is_ended() {
            let rest = self.outbox.close();
            self.deliver(rest);
            ctx.stop();
            return;
        }
        if let Some(deadline) = self.session.deadline() {
            let wait = deadline.saturating_duration_since(self.settings.clock.now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                let outputs = act.session.timer_fired(act.settings.clock.now());
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
        let outputs = self.session.start(self.settings.clock.now());
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
                let outputs =
                    self.session
                        .datagram_received(datagram, source, self.settings.clock.now());
                self.apply(outputs, ctx);
            }
            Err(e) => {
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = self.drop_log.allow(self.settings.clock.now()) {
                    warn!(%source, reason = %e, held_back, "dropped datagram");
                }
            }
        }
    }

    /// The datagram stream never ends by itself; stopping is explicit.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<PeerOutputs> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: PeerOutputs, ctx: &mut Context<Self>) {
        self.peer_outputs(&msg.peer, msg.ticket, msg.outputs, ctx);
    }
}

impl Handler<PeerIdle> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: PeerIdle, ctx: &mut Context<Self>) {
        let current = matches!(
            self.conversations.get(&msg.peer),
            Some(Slot::Running(actor)) if *actor == msg.actor
        );
        if !current || self.draining.is_some() {
            return;
        }
        self.conversations
            .insert(msg.peer.clone(), Slot::Parking(Vec::new()));
        let peer = msg.peer;
        let actor = msg.actor;
        let park = actor.send(Park);
        ctx.spawn(park.into_actor(self).map(move |parked, act, ctx| {
            let waiting = match act.conversations.remove(&peer) {
                Some(Slot::Parking(waiting)) => waiting,
                Some(other) => {
                    act.conversations.insert(peer.clone(), other);
                    Vec::new()
                }
                None => Vec::new(),
            };
            match parked {
                // Handed back: kept here until the conversation is needed.
                Ok(Some(core)) => {
                    act.conversations
                        .insert(peer.clone(), Slot::Parked(Box::new(core)));
                }
                // Busy again after all: it runs on.
                Ok(None) => {
                    act.conversations.insert(peer.clone(), Slot::Running(actor));
                }
                // The actor is gone (it cannot be, short of a panic): what
                // it knew is lost; a new conversation starts when needed.
                Err(_) => {}
            }
            for msg in waiting {
                act.route(peer.clone(), msg, ctx);
            }
        }));
    }
}

impl Handler<SendText> for SessionActor {
    type Result = ResponseActFuture<Self, Result<Sent, SendTextError>>;

    fn handle(&mut self, msg: SendText, ctx: &mut Context<Self>) -> Self::Result {
        match self.session.check_send(&msg.to) {
            // Offline: kept by the server, if the name is registered.
            Err(SendTextError::UnknownUser(to)) => return self.send_offline(to, msg.text),
            Err(e) => return Box::pin(fut::ready(Err(e))),
            Ok(_) => {
                let pinned = self.session.use_key(&msg.to);
                self.apply(pinned, ctx);
            }
        }
        let actor = match self.conversations.get(&msg.to) {
            Some(Slot::Running(actor)) if actor.connected() => actor.clone(),
            Some(Slot::Parking(_)) => {
                // Being handed back this very moment (one mailbox round
                // trip): ask again once it is.
                let again = ctx.address();
                return Box::pin(
                    async move {
                        actix_rt::time::sleep(Duration::from_millis(1)).await;
                        again
                            .send(msg)
                            .await
                            .unwrap_or(Err(SendTextError::NotOnline))
                    }
                    .into_actor(self),
                );
            }
            _ => self.start_peer(&msg.to, ctx),
        };
        let (reply, answer) = oneshot::channel();
        actor.do_send(Say {
            text: msg.text,
            time: self.settings.clock.talk_time(),
            reply,
        });
        Box::pin(answer.into_actor(self).map(|said, _, _| match said {
            Ok(Ok(sent)) => Ok(sent),
            Ok(Err(refusal)) => Err(SendTextError::Refused(refusal)),
            Err(_) => Err(SendTextError::NotOnline),
        }))
    }
}

/// The user trusts `name`'s new key (`/trust NAME`).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), TrustError>")]
pub struct Trust {
    pub name: UserName,
}

/// What is known of `name`'s key (`/whois NAME`; this user's own for its
/// own name).
#[derive(Message, Debug)]
#[rtype(result = "KeyInfo")]
pub struct WhoIs {
    pub name: UserName,
}

impl Handler<Trust> for SessionActor {
    type Result = Result<(), TrustError>;

    fn handle(&mut self, msg: Trust, ctx: &mut Context<Self>) -> Self::Result {
        let out = self.session.trust(&msg.name)?;
        info!(peer = %msg.name, "new key trusted");
        self.apply(out, ctx);
        Ok(())
    }
}

impl Handler<WhoIs> for SessionActor {
    type Result = MessageResult<WhoIs>;

    fn handle(&mut self, msg: WhoIs, ctx: &mut Context<Self>) -> Self::Result {
        // Looked at is used: pinned, so that a change is told from now on.
        let pinned = self.session.use_key(&msg.name);
        self.apply(pinned, ctx);
        MessageResult(self.session.key_info(msg.name.as_str()))
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
        match self.conversations.get(&msg.peer) {
            Some(Slot::Running(actor)) => {
                let history = actor.send(History);
                Box::pin(async move { history.await.unwrap_or_default() })
            }
            Some(Slot::Parked(core)) => {
                let lines: Vec<ChatLine> = core.lines().cloned().collect();
                Box::pin(async move { lines })
            }
            Some(Slot::Parking(_)) | None => Box::pin(async { Vec::new() }),
        }
    }
}

impl Handler<Logout> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Logout, ctx: &mut Context<Self>) {
        info!(user = %self.session.name(), "logging out");
        // Every conversation first delivers what it can (or reports it
        // failed); the drain requests queue behind any message already on
        // its way to a conversation, so nothing sent before is lost.
        let outputs = self.session.logout(self.settings.clock.now());
        self.apply(outputs, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline(name: &str) -> ClientEvent {
        ClientEvent::Offline {
            name: UserName::parse(name).unwrap(),
        }
    }

    #[test]
    fn a_conversations_answer_keeps_the_place_of_its_datagram() {
        let mut outbox = Outbox::default();
        // Nothing waits: events go at once.
        assert_eq!(outbox.push(vec![offline("a")]), vec![offline("a")]);
        // A datagram went to a conversation; the session then saw bob
        // leave. The leaving waits for the conversation's answer.
        let ticket = outbox.reserve();
        assert!(outbox.push(vec![offline("bob")]).is_empty());
        let second = outbox.reserve();
        // The second answer comes first: still held.
        assert!(outbox.fill(second, vec![offline("c")]).is_empty());
        let message = ClientEvent::Message {
            from: UserName::parse("bob").unwrap(),
            time: pigeon_shared::TalkTime::parse("9:00:00").unwrap(),
            text: "bye".into(),
        };
        assert_eq!(
            outbox.fill(ticket, vec![message.clone()]),
            vec![message, offline("bob"), offline("c")]
        );
        // An answer with nothing to tell releases what waited behind it.
        let empty = outbox.reserve();
        assert!(outbox.push(vec![offline("d")]).is_empty());
        assert_eq!(outbox.fill(empty, Vec::new()), vec![offline("d")]);
        assert!(outbox.slots.is_empty());
    }

    #[test]
    fn the_outbox_keeps_order_and_gives_up_waiting_when_the_session_ends() {
        let mut outbox = Outbox::default();
        let ticket = outbox.reserve();
        // Held behind the place the conversation has yet to fill.
        assert!(outbox.push(vec![ClientEvent::LoggedOut]).is_empty());
        let later = outbox.reserve();
        assert!(outbox
            .fill(later, vec![ClientEvent::Reconnected { online: 1 }])
            .is_empty());
        assert_eq!(
            outbox.fill(ticket, vec![ClientEvent::Reconnected { online: 2 }]),
            vec![
                ClientEvent::Reconnected { online: 2 },
                ClientEvent::LoggedOut,
                ClientEvent::Reconnected { online: 1 },
            ]
        );
        // A place never filled: the end of the session still goes out.
        outbox.reserve();
        assert!(outbox.push(vec![ClientEvent::LoggedOut]).is_empty());
        assert_eq!(outbox.close(), vec![ClientEvent::LoggedOut]);
        assert!(outbox.close().is_empty());
    }
}
