//! `PeerCore`: one conversation's part of the client core. It wraps a
//! [`Conversation`] (the delivery machinery) with what the conversation
//! needs to know of its peer: whether it is a Pigeon client (numbered
//! `chat`s) or a seed-era one (one plain `talk`), and where to send
//! (the peer's endpoint, kept while it is offline so that
//! retransmissions reach it if it comes back before the deadline). It also
//! drains when the user leaves. No sockets, no timers: inputs and `now`
//! go in, datagrams with their destinations and events come out.

use std::net::SocketAddr;
use std::time::Instant;

use pigeon_shared::{Datagram, PeerAddr, TalkTime, UserName};

use crate::conversation::{ChatLine, Conversation, ConversationOutput, SendRefusal};
use crate::events::{ClientEvent, MessageId, MessageIds};
use crate::session::{Peer, PeerInput};

/// What a conversation wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOutput {
    /// Send `datagram` to `to`.
    Transmit { to: SocketAddr, datagram: Datagram },
    /// Tell the front end.
    Emit(ClientEvent),
    /// Draining is over: everything sent was confirmed or reported
    /// failed.
    Drained,
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
    /// Leaving: what is unconfirmed at this time is given up.
    drain_deadline: Option<Instant>,
}

impl PeerCore {
    /// `conversation`, with the peer as the session knows it now.
    pub fn new(conversation: Conversation, peer: Option<Peer>) -> Self {
        Self {
            last_endpoint: peer.map(|p| p.endpoint),
            conversation,
            peer,
            drain_deadline: None,
        }
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
                    self.last_endpoint = Some(peer.endpoint);
                }
                self.peer = peer;
                Vec::new()
            }
            PeerInput::Talk(talk) => self.conversation.talk_received(talk),
            PeerInput::Chat(chat) => self.conversation.chat_received(chat),
            PeerInput::Ack(ack) => self.conversation.ack_received(ack, now),
        };
        self.outputs(out)
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
        Ok((sent, self.outputs(out)))
    }

    /// The user is leaving: deliver what can be until `deadline`, then
    /// give up the rest; [`PeerOutput::Drained`] says when it is done.
    pub fn drain(&mut self, deadline: Instant, now: Instant) -> Vec<PeerOutput> {
        self.drain_deadline = Some(deadline);
        self.handle_timeout(now)
    }

    /// When [`PeerCore::handle_timeout`] is next due, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.conversation.next_deadline(), self.drain_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Retransmissions, deadlines, and the end of a drain.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<PeerOutput> {
        let mut out = self.conversation.tick(now);
        if let Some(deadline) = self.drain_deadline {
            if now >= deadline {
                out.extend(self.conversation.abandon());
            }
        }
        self.outputs(out)
    }

    /// The conversation's outputs with their destinations; an ack that
    /// completes a drain ends it.
    fn outputs(&mut self, out: Vec<ConversationOutput>) -> Vec<PeerOutput> {
        let mut outputs: Vec<PeerOutput> = out
            .into_iter()
            .filter_map(|o| match o {
                // Sent where the peer was last seen: while it is offline,
                // retransmissions keep going there, in case it comes back.
                ConversationOutput::Transmit(datagram) => {
                    self.last_endpoint.map(|to| PeerOutput::Transmit {
                        to: to.socket_addr(),
                        datagram,
                    })
                }
                ConversationOutput::Emit(event) => Some(PeerOutput::Emit(event)),
            })
            .collect();
        if self.drain_deadline.is_some() && self.conversation.unconfirmed() == 0 {
            self.drain_deadline = None;
            outputs.push(PeerOutput::Drained);
        }
        outputs
    }
}
