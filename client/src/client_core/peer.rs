//! `PeerCore`: one conversation's part of the client core. It wraps a
//! [`Conversation`] (the delivery machinery) with what the conversation
//! needs to know of its peer: whether it is a Pigeon client (numbered
//! `chat`s) or a seed-era one (one plain `talk`), and where to send
//! (the peer's endpoint, kept while it is offline so that
//! retransmissions reach it if it comes back before the deadline). It also
//! drains when the user leaves. With a peer whose key the roster lists
//! (and a key of this user's own), every `chat` and `ack` goes end-to-end
//! encrypted through the conversation's [`Link`], and only what arrives
//! through it, authenticated, reaches the conversation. No sockets, no
//! timers: inputs and `now` go in, datagrams with their destinations and
//! events come out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use pigeon_shared::{
    Datagram, Identity, Link, LinkEvent, PeerAddr, PublicKey, Secure, SecureFrame, TalkTime,
    UserName,
};

use crate::client_core::paths::Paths;
use crate::conversation::{ChatLine, Conversation, ConversationOutput, SendRefusal};
use crate::events::{ClientEvent, MessageId, MessageIds, Route};
use crate::session::{Peer, PeerInput, Refusal, Via};

/// The inner datagram of a path probe: not text (no text datagram starts
/// with `00`), and only ever inside an end-to-end frame.
pub const PROBE: [u8; 2] = [0x00, b'P'];
/// The inner datagram of a probe's answer.
pub const PROBED: [u8; 2] = [0x00, b'Q'];

/// What a conversation wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOutput {
    /// Send `datagram` to `to`.
    Transmit { to: SocketAddr, datagram: Datagram },
    /// Have the server relay this end-to-end frame to the peer.
    Relay(Secure),
    /// Ask the server to arrange a meeting with the peer (both told at
    /// once where to probe the other).
    Meet,
    /// Tell the front end.
    Emit(ClientEvent),
    /// Draining is over: everything sent was confirmed or reported
    /// failed.
    Drained,
    /// A datagram from the peer was dropped (to count and log).
    Refused(Refusal),
    /// An end-to-end handshake with the peer completed (to count).
    Established,
}

/// A message accepted for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its number in later `Delivered` and `Failed` events.
    pub id: MessageId,
    /// Whether the peer will confirm it (a Pigeon client does; a seed-era
    /// one never does).
    pub confirmed: bool,
    /// The time of day it carries (this user's clock), as the peer shows
    /// it and as the history keeps it.
    pub time: TalkTime,
}

/// One conversation. See the module documentation.
#[derive(Debug)]
pub struct PeerCore {
    conversation: Conversation,
    /// What the session last said about the peer (`None`: offline).
    peer: Option<Peer>,
    /// Where the peer was last seen.
    last_endpoint: Option<PeerAddr>,
    /// The peer's key when last seen (`None`: it has none; chat in clear).
    last_key: Option<PublicKey>,
    /// This user's key (`None`: no end-to-end encryption from this side).
    identity: Option<Arc<Identity>>,
    /// The end-to-end link, made when first needed.
    link: Option<Link>,
    /// How the link's frames reach the peer.
    paths: Paths,
    /// Leaving: what is unconfirmed at this time is given up.
    drain_deadline: Option<Instant>,
}

impl PeerCore {
    /// `conversation`, with the peer as the session knows it now, this
    /// user's key (if it has one and speaks Pigeon), and whether the
    /// server relays.
    pub fn new(
        conversation: Conversation,
        peer: Option<Peer>,
        identity: Option<Arc<Identity>>,
        relay: bool,
    ) -> Self {
        let mut paths = Paths::new(relay, peer.map(|p| p.endpoint.socket_addr()));
        // One side of each pair leads: the one whose name sorts first.
        paths.leading(conversation.own_name() < conversation.peer());
        Self {
            paths,
            last_endpoint: peer.map(|p| p.endpoint),
            last_key: peer.and_then(|p| p.key),
            conversation,
            peer,
            identity,
            link: None,
            drain_deadline: None,
        }
    }

    /// Never look for a direct path to the peer (the relay only, while
    /// there is one).
    pub fn relay_only(mut self, relay_only: bool) -> Self {
        if relay_only {
            self.paths.relay_only();
        }
        self
    }

    /// Whether chat with the peer is end-to-end encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.identity.is_some() && self.last_key.is_some()
    }

    /// Handshakes this conversation's link has completed.
    pub fn handshakes(&self) -> u64 {
        self.link.as_ref().map_or(0, Link::handshakes)
    }

    /// Who the conversation is with.
    pub fn name(&self) -> &UserName {
        self.conversation.peer()
    }

    /// The conversation so far, oldest line first.
    pub fn lines(&self) -> impl ExactSizeIterator<Item = &ChatLine> {
        self.conversation.lines()
    }

    /// Whether nothing is under way: no message to confirm, none being
    /// received in parts, not draining. An idle conversation's actor may
    /// stop; the conversation is kept.
    pub fn is_idle(&self) -> bool {
        self.conversation.is_idle() && self.drain_deadline.is_none()
    }

    /// What the session says.
    pub fn handle(&mut self, input: PeerInput, now: Instant) -> Vec<PeerOutput> {
        let out = match input {
            PeerInput::Peer(peer) => {
                if let Some(peer) = peer {
                    // Another key, or a restarted client: the keys agreed
                    // with the one before are of no use.
                    let restarted = self.peer.is_some_and(|old| old.instance != peer.instance);
                    if self.last_key != peer.key || restarted {
                        self.link = None;
                    }
                    self.last_endpoint = Some(peer.endpoint);
                    self.last_key = peer.key;
                    self.paths
                        .set_endpoint(Some(peer.endpoint.socket_addr()), now);
                }
                self.peer = peer;
                Vec::new()
            }
            PeerInput::Relay(relay) => {
                self.paths.set_relay(relay);
                Vec::new()
            }
            PeerInput::Punch { endpoint, local } => {
                self.paths.punched(
                    endpoint.socket_addr(),
                    local.map(|local| local.socket_addr()),
                    now,
                );
                Vec::new()
            }
            PeerInput::Talk(talk) => self.conversation.talk_received(talk),
            PeerInput::Chat(chat) => self.conversation.chat_received(chat),
            PeerInput::Ack(ack) => self.conversation.ack_received(ack, now),
            PeerInput::Secure(frame, via) => return self.secure_received(frame, via, now),
        };
        self.outputs(out, now)
    }

    /// An end-to-end frame from the peer: handshake frames are answered,
    /// probes too (straight back where they came from), and what a data
    /// frame holds, once authenticated, goes to the conversation like a
    /// `chat` or `ack` in clear would.
    fn secure_received(&mut self, frame: SecureFrame, via: Via, now: Instant) -> Vec<PeerOutput> {
        let (Some(identity), Some(link)) = (self.identity.clone(), self.link_mut()) else {
            return vec![PeerOutput::Refused(Refusal::NotEncrypted)];
        };
        let before = link.handshakes();
        let events = match link.receive(&identity, frame, now) {
            Ok(events) => events,
            Err(drop) => return vec![PeerOutput::Refused(Refusal::Secure(drop))],
        };
        let mut outputs = Vec::new();
        if let Via::Direct(from) = via {
            self.paths.heard_from(from, now);
        }
        if self
            .link
            .as_ref()
            .is_some_and(|link| link.handshakes() > before)
        {
            outputs.push(PeerOutput::Established);
            self.paths.kick(now);
        }
        for event in events {
            match event {
                LinkEvent::Send(frame) => outputs.extend(self.frame_to_peer(frame, now)),
                LinkEvent::Plain(bytes) if bytes == PROBE => {
                    // Answered where it came from; one relayed is no probe.
                    if let (Via::Direct(from), Some(link)) = (via, self.link.as_mut()) {
                        if let Some(frame) = link.seal_if_ready(&PROBED) {
                            outputs.push(self.secure_to(from, frame));
                        }
                    }
                }
                LinkEvent::Plain(bytes) if bytes == PROBED => {
                    if let Via::Direct(from) = via {
                        self.paths.answered(from, now);
                    }
                }
                LinkEvent::Plain(bytes) => {
                    let out = match Datagram::decode(&bytes) {
                        Ok(Datagram::Chat(chat)) if chat.from == *self.name() => {
                            if self.peer.and_then(|p| p.instance) == Some(chat.instance) {
                                self.paths.active(now);
                                self.conversation.chat_received(chat)
                            } else {
                                outputs.push(PeerOutput::Refused(Refusal::WrongInstance));
                                continue;
                            }
                        }
                        Ok(Datagram::Ack(ack)) if ack.from == *self.name() => {
                            self.conversation.ack_received(ack, now)
                        }
                        // Authenticated as the peer, yet not what a peer
                        // sends: a broken or hostile client.
                        _ => {
                            outputs.push(PeerOutput::Refused(Refusal::Inconsistent));
                            continue;
                        }
                    };
                    outputs.extend(self.outputs(out, now));
                }
            }
        }
        self.path_news(now, &mut outputs);
        outputs
    }

    /// The link with the peer, made if needed; `None` if chat with it is
    /// not encrypted.
    fn link_mut(&mut self) -> Option<&mut Link> {
        let key = self.last_key.filter(|_| self.identity.is_some())?;
        let me = self.conversation.own_name().clone();
        let peer = self.name().clone();
        Some(self.link.get_or_insert_with(|| Link::new(me, peer, key)))
    }

    /// `frame` on its way to the peer, by the route of the moment.
    fn frame_to_peer(&self, frame: SecureFrame, now: Instant) -> Option<PeerOutput> {
        match self.paths.route(now)? {
            Route::Direct(to) => Some(self.secure_to(to, frame)),
            Route::Relayed => Some(PeerOutput::Relay(self.secure(frame))),
        }
    }

    fn secure(&self, frame: SecureFrame) -> Secure {
        Secure {
            from: self.conversation.own_name().clone(),
            frame,
        }
    }

    /// `frame`, straight to `to`.
    fn secure_to(&self, to: SocketAddr, frame: SecureFrame) -> PeerOutput {
        PeerOutput::Transmit {
            to,
            datagram: Datagram::Secure(self.secure(frame)),
        }
    }

    /// Probes due now, and the route if it changed (told once).
    fn path_news(&mut self, now: Instant, outputs: &mut Vec<PeerOutput>) {
        if !self.is_encrypted() {
            return;
        }
        if self.paths.take_meeting(now) {
            outputs.push(PeerOutput::Meet);
        }
        for to in self.paths.due_probes(now) {
            if let Some(frame) = self
                .link
                .as_mut()
                .and_then(|link| link.seal_if_ready(&PROBE))
            {
                outputs.push(self.secure_to(to, frame));
            }
        }
        if self.link.is_some() {
            if let Some(route) = self.paths.news(now) {
                outputs.push(PeerOutput::Emit(ClientEvent::Path {
                    name: self.name().clone(),
                    route,
                }));
                // What went the old way may be lost: send it again now,
                // the new way.
                let again = self.conversation.resend_now(now);
                outputs.extend(self.outputs(again, now));
            }
        }
    }

    /// This user writes `text` at `time` (of day): numbered from `ids`
    /// once accepted (a refused message takes no number).
    pub fn say(
        &mut self,
        text: String,
        time: TalkTime,
        ids: &MessageIds,
        now: Instant,
    ) -> Result<(Sent, Vec<PeerOutput>), SendRefusal> {
        if self.drain_deadline.is_some() {
            return Err(SendRefusal::Leaving);
        }
        let pigeon = self.peer.is_some_and(|p| p.instance.is_some());
        self.conversation.check(&text, pigeon, &time)?;
        let id = ids.next();
        let out = self
            .conversation
            .send(id, text, pigeon, time.clone(), now)?;
        let sent = Sent {
            id,
            confirmed: pigeon,
            time,
        };
        Ok((sent, self.outputs(out, now)))
    }

    /// The user is leaving: deliver what can be until `deadline`, then
    /// give up the rest; [`PeerOutput::Drained`] says when it is done.
    pub fn drain(&mut self, deadline: Instant, now: Instant) -> Vec<PeerOutput> {
        self.drain_deadline = Some(deadline);
        self.handle_timeout(now)
    }

    /// When [`PeerCore::handle_timeout`] is next due, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let paths = self.link.as_ref().and_then(|_| self.paths.poll_timeout());
        [
            self.conversation.next_deadline(),
            self.drain_deadline,
            paths,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Retransmissions, deadlines, and the end of a drain.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<PeerOutput> {
        let mut out = self.conversation.tick(now);
        if let Some(deadline) = self.drain_deadline {
            if now >= deadline {
                out.extend(self.conversation.abandon());
            }
        }
        self.outputs(out, now)
    }

    /// The conversation's outputs with their destinations (encrypted where
    /// chat with the peer is); an ack that completes a drain ends it.
    fn outputs(&mut self, out: Vec<ConversationOutput>, now: Instant) -> Vec<PeerOutput> {
        let mut outputs = Vec::with_capacity(out.len());
        for o in out {
            match o {
                // Sent where the peer was last seen: while it is offline,
                // retransmissions keep going there, in case it comes back.
                ConversationOutput::Transmit(datagram) => {
                    let Some(to) = self.last_endpoint else {
                        continue;
                    };
                    let identity = self.identity.clone();
                    let answered = matches!(datagram, Datagram::Chat(_));
                    match (identity, self.link_mut()) {
                        (Some(identity), Some(link)) => {
                            let frames = link.seal(&identity, &datagram.to_bytes(), answered, now);
                            if answered {
                                self.paths.chat_sent(now);
                            }
                            outputs.extend(
                                frames
                                    .into_iter()
                                    .filter_map(|frame| self.frame_to_peer(frame, now)),
                            );
                        }
                        _ => outputs.push(PeerOutput::Transmit {
                            to: to.socket_addr(),
                            datagram,
                        }),
                    }
                }
                ConversationOutput::Emit(event) => outputs.push(PeerOutput::Emit(event)),
            }
        }
        if self.drain_deadline.is_some() && self.conversation.unconfirmed() == 0 {
            self.drain_deadline = None;
            outputs.push(PeerOutput::Drained);
        }
        self.path_news(now, &mut outputs);
        outputs
    }
}
