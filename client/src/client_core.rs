//! `ClientCore`: the whole client as one state machine, in the manner of
//! quinn-proto's `Endpoint`: no sockets, no timers, no actors. Every input
//! goes in (a datagram with its source, a command, a roster fetch's result,
//! and `now`); what to do comes out, in order: datagrams with their
//! destinations ([`ClientCore::poll_transmit`]), fetches to start
//! ([`ClientCore::poll_fetch`]), events for the front end
//! ([`ClientCore::poll_event`]), and when to be called again
//! ([`ClientCore::poll_timeout`], then [`ClientCore::handle_timeout`]).
//!
//! It is made of two parts along their real seam: the [`Session`] (login
//! and liveness, the roster replica, and every decision about routing:
//! which datagram may reach which conversation, who may be written to, when
//! to drain and log out) and one [`PeerCore`] per conversation (numbering,
//! acknowledgements, retransmission, ordering and reassembly, and where to
//! send). This type wires them directly, for tests and the simulator; the
//! actors run the same parts, the session in the `SessionActor` and each
//! conversation in its `PeerActor`.

pub mod paths;
pub mod peer;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use pigeon_shared::{Datagram, RosterSnapshot, SessionToken, TalkTime, UserName};

pub use self::peer::{PeerCore, PeerOutput, Sent};
use crate::conversation::{ChatLine, Conversation, DeliveryConfig};
use crate::events::{ClientEvent, MessageIds};
use crate::session::{SendTextError, Session, SessionConfig, SessionOutput, TrustError};

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub datagram: Datagram,
}

/// A roster fetch to start; its result goes to
/// [`ClientCore::handle_fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The server's TCP roster address.
    pub from: SocketAddr,
    /// Who asks (a Pigeon server's roster port takes the name and token).
    pub as_user: Option<(UserName, SessionToken)>,
}

/// Counts a client keeps of what it turned away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Peer datagrams that did not come from the user they name, or did
    /// not verify.
    pub refused: u64,
    /// End-to-end handshakes completed.
    pub handshakes: u64,
}

/// The client. See the module documentation.
#[derive(Debug)]
pub struct ClientCore {
    session: Session,
    peers: BTreeMap<UserName, PeerCore>,
    delivery: DeliveryConfig,
    ids: MessageIds,
    /// Leaving: the conversations still delivering.
    draining: Option<BTreeSet<UserName>>,
    transmits: VecDeque<Transmit>,
    fetches: VecDeque<Fetch>,
    events: VecDeque<ClientEvent>,
    stats: CoreStats,
}

impl ClientCore {
    /// A client that has not sent anything yet; [`ClientCore::start`]
    /// logs it in.
    pub fn new(config: SessionConfig, delivery: DeliveryConfig) -> Self {
        Self {
            session: Session::new(config),
            peers: BTreeMap::new(),
            delivery,
            ids: MessageIds::default(),
            draining: None,
            transmits: VecDeque::new(),
            fetches: VecDeque::new(),
            events: VecDeque::new(),
            stats: CoreStats::default(),
        }
    }

    /// Sends the first login.
    pub fn start(&mut self, now: Instant) {
        let out = self.session.start(now);
        self.session_outputs(out, now);
    }

    /// A datagram (decoded) arrived from `source`.
    pub fn handle_datagram(&mut self, datagram: Datagram, source: SocketAddr, now: Instant) {
        let out = self.session.datagram_received(datagram, source, now);
        self.session_outputs(out, now);
    }

    /// A roster fetch ended.
    pub fn handle_fetch(&mut self, result: Result<RosterSnapshot, String>, now: Instant) {
        let out = self.session.roster_fetched(result, now);
        self.session_outputs(out, now);
    }

    /// This user writes `text` to `to` at `time` (of day, this user's
    /// clock).
    pub fn send_text(
        &mut self,
        to: UserName,
        text: String,
        time: TalkTime,
        now: Instant,
    ) -> Result<Sent, SendTextError> {
        let peer = self.session.check_send(&to)?;
        let pinned = self.session.use_key(&to);
        self.session_outputs(pinned, now);
        let conversation = self.peers.entry(to.clone()).or_insert_with(|| {
            PeerCore::new(
                Conversation::new(
                    to.clone(),
                    self.session.name().clone(),
                    self.session.instance(),
                    self.delivery.clone(),
                ),
                Some(peer),
                self.session.identity(),
                self.session.relays(),
            )
        });
        let (sent, out) = conversation.say(text, time, &self.ids, now)?;
        self.peer_outputs(&to, out, now);
        Ok(sent)
    }

    /// The user leaves: conversations deliver what they can, then the
    /// session logs out; [`ClientEvent::LoggedOut`] ends it.
    pub fn logout(&mut self, now: Instant) {
        let out = self.session.logout(now);
        self.session_outputs(out, now);
    }

    /// When [`ClientCore::handle_timeout`] is next due, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(PeerCore::poll_timeout)
            .chain(self.session.deadline())
            .min()
    }

    /// Does what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.session.deadline().is_some_and(|at| now >= at) {
            let out = self.session.timer_fired(now);
            self.session_outputs(out, now);
        }
        let due: Vec<UserName> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.poll_timeout().is_some_and(|at| now >= at))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            if let Some(peer) = self.peers.get_mut(&name) {
                let out = peer.handle_timeout(now);
                self.peer_outputs(&name, out, now);
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next roster fetch to start.
    pub fn poll_fetch(&mut self) -> Option<Fetch> {
        self.fetches.pop_front()
    }

    /// The next event for the front end, in the order things happened.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The user trusts `name`'s new key.
    pub fn trust(&mut self, name: &UserName, now: Instant) -> Result<(), TrustError> {
        let out = self.session.trust(name)?;
        self.session_outputs(out, now);
        Ok(())
    }

    /// The session part.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The conversation with `peer` so far.
    pub fn conversation(&self, peer: &str) -> Vec<ChatLine> {
        self.peers
            .get(peer)
            .map(|p| p.lines().cloned().collect())
            .unwrap_or_default()
    }

    /// What was turned away.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    fn session_outputs(&mut self, outputs: Vec<SessionOutput>, now: Instant) {
        for output in outputs {
            match output {
                SessionOutput::Send { to, datagram } => {
                    self.transmits.push_back(Transmit { to, datagram });
                }
                SessionOutput::FetchRoster { from, as_user } => {
                    self.fetches.push_back(Fetch { from, as_user });
                }
                SessionOutput::Emit(event) => self.events.push_back(event),
                // Nothing on disk here: the session keeps the key for as
                // long as it runs.
                // No disk, no TCP mailbox here: the session keeps its keys
                // for as long as it runs.
                SessionOutput::PinServer(_)
                | SessionOutput::PinPeer { .. }
                | SessionOutput::Mailbox(_) => {}
                SessionOutput::MailRefused { .. } => self.stats.refused += 1,
                SessionOutput::MailShown(_) => {}
                SessionOutput::Conversation { peer, input } => {
                    if input.opens() && !self.peers.contains_key(&peer) {
                        let known = self.session.peer(peer.as_str());
                        let conversation = Conversation::new(
                            peer.clone(),
                            self.session.name().clone(),
                            self.session.instance(),
                            self.delivery.clone(),
                        );
                        self.peers.insert(
                            peer.clone(),
                            PeerCore::new(
                                conversation,
                                known,
                                self.session.identity(),
                                self.session.relays(),
                            ),
                        );
                    }
                    if let Some(conversation) = self.peers.get_mut(&peer) {
                        let out = conversation.handle(input, now);
                        self.peer_outputs(&peer, out, now);
                    }
                }
                SessionOutput::Drain { deadline } => {
                    let names: Vec<UserName> = self.peers.keys().cloned().collect();
                    self.draining = Some(names.iter().cloned().collect());
                    for name in names {
                        if let Some(conversation) = self.peers.get_mut(&name) {
                            let out = conversation.drain(deadline, now);
                            self.peer_outputs(&name, out, now);
                        }
                    }
                    self.drain_done(now);
                }
                SessionOutput::Refused { .. } => self.stats.refused += 1,
            }
        }
    }

    fn peer_outputs(&mut self, name: &UserName, outputs: Vec<PeerOutput>, now: Instant) {
        for output in outputs {
            match output {
                PeerOutput::Transmit { to, datagram } => {
                    self.transmits.push_back(Transmit { to, datagram });
                }
                PeerOutput::Relay(secure) => {
                    if let Some((to, datagram)) = self.session.relay_request(name, secure) {
                        self.transmits.push_back(Transmit { to, datagram });
                    }
                }
                PeerOutput::Meet => {
                    if let Some((to, datagram)) = self.session.meet_request(name) {
                        self.transmits.push_back(Transmit { to, datagram });
                    }
                }
                PeerOutput::Emit(event) => self.events.push_back(event),
                PeerOutput::Refused(_) => self.stats.refused += 1,
                PeerOutput::Established => self.stats.handshakes += 1,
                PeerOutput::Drained => {
                    if let Some(waiting) = self.draining.as_mut() {
                        waiting.remove(name);
                    }
                    self.drain_done(now);
                }
            }
        }
    }

    /// Once no conversation is still delivering, the session logs out.
    fn drain_done(&mut self, now: Instant) {
        if self.draining.as_ref().is_some_and(BTreeSet::is_empty) {
            self.draining = None;
            let out = self.session.drained(now);
            self.session_outputs(out, now);
        }
    }
}
