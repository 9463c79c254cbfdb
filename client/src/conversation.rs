//! `Conversation`: one chat's history and its delivery machinery, without
//! sockets or timers.
//!
//! With a Pigeon peer every message travels as numbered `chat` parts:
//!
//! - **Sending.** A message is split into parts that fit a datagram
//!   comfortably; each part gets the next sequence number of this client's
//!   stream to the peer, is sent, and is sent again with doubling waits until
//!   the peer acknowledges it or the message's deadline passes, when the
//!   whole message is reported failed. At most `window` parts are in flight;
//!   the rest queue. Each `chat` carries `base`, the oldest sequence number
//!   still in flight, so the receiver never waits for a part that was given
//!   up.
//! - **Receiving.** Parts are acknowledged (again, if repeated), put in
//!   order, duplicates dropped, and a message is shown once all its parts
//!   are in, in the order its sender sent it.
//!
//! With a seed-era peer a message is one plain `talk`, sent once: the seed
//! protocol has no acknowledgement, so nothing more can be known.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pigeon_shared::{Ack, Chat, Datagram, InstanceId, Seq, Talk, TalkTime, UserName};

use crate::events::{ClientEvent, MessageId};

/// Lines a conversation keeps in memory by default.
pub const DEFAULT_HISTORY_LINES: usize = 1000;

/// Largest datagram a message part is sized for: well inside one Ethernet
/// frame, so parts are never fragmented.
pub const COMFORTABLE_DATAGRAM_BYTES: usize = 1200;

/// Most UTF-16 code units of text in one `chat` part (the wire format's
/// limit): what is left of [`COMFORTABLE_DATAGRAM_BYTES`] after the longest
/// possible header.
pub const MAX_PART_UNITS: usize = pigeon_shared::MAX_PART_UNITS;

/// Most parts one message may have (the wire format's limit).
pub const MAX_PARTS: usize = pigeon_shared::MAX_PARTS as usize;

/// Who wrote a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer wrote it.
    Incoming,
    /// This user wrote it.
    Outgoing,
}

/// Where an outgoing message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Sent, not yet acknowledged.
    Sending,
    /// The peer acknowledged every part.
    Delivered,
    /// Given up.
    Failed,
    /// Sent to a seed-era peer, which does not acknowledge.
    Unconfirmed,
    /// An incoming line.
    Received,
}

/// One message in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    pub direction: Direction,
    /// The writer's local time of day, as sent.
    pub time: TalkTime,
    pub text: String,
    pub delivery: Delivery,
    /// This client's number for an outgoing message.
    pub id: Option<MessageId>,
}

/// How hard a conversation tries.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// First wait for an acknowledgement.
    pub initial_retry: Duration,
    /// Longest wait between two sends of a part.
    pub max_retry: Duration,
    /// Time a message has to be acknowledged before it is reported failed.
    pub deadline: Duration,
    /// Parts in flight at once.
    pub window: usize,
    /// Parts waiting for room in the window.
    pub max_queued: usize,
    /// Parts received ahead of a gap, kept until the gap fills.
    pub reorder_window: u64,
    /// Bytes of text received and not yet shown (parts ahead of a gap, a
    /// message half assembled) that one conversation may hold; past it,
    /// parts are dropped unacknowledged, and their sender sends them again.
    pub max_held_bytes: usize,
    /// What all of a client's conversations may hold together: clones of
    /// one configuration share it.
    pub budget: ReceiveBudget,
    /// Lines of history kept.
    pub history_lines: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            initial_retry: Duration::from_millis(150),
            max_retry: Duration::from_secs(1),
            deadline: Duration::from_secs(30),
            window: 64,
            max_queued: 4096,
            reorder_window: 1024,
            max_held_bytes: 1 << 20,
            budget: ReceiveBudget::new(DEFAULT_CLIENT_HELD_BYTES),
            history_lines: DEFAULT_HISTORY_LINES,
        }
    }
}

/// Why a message was not accepted for sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendRefusal {
    #[error("nothing to send")]
    Empty,
    /// Longer than a Pigeon message can be: `units` (characters, with
    /// those beyond U+FFFF, such as emoji, counted twice) over `max`.
    #[error("the message is too long: {}", too_long(*.chars, *.units, *.max))]
    TooLong {
        chars: usize,
        units: usize,
        max: usize,
    },
    #[error(
        "the message is too long for {peer}'s older client: {bytes} bytes in one datagram; \
         at most {max} (send it in shorter pieces)"
    )]
    TooLongForSeedPeer {
        peer: UserName,
        bytes: usize,
        max: usize,
    },
    #[error("{queued} parts are already waiting for {peer}; try again when they are through")]
    Backlog { peer: UserName, queued: usize },
    #[error("logging out")]
    Leaving,
}

/// How a message over the length limit is described to a person.
fn too_long(chars: usize, units: usize, max: usize) -> String {
    if chars == units {
        format!("{chars} characters, at most {max}; send it in shorter pieces")
    } else {
        format!(
            "{chars} characters, which count as {units} because emoji and other rare \
             characters count twice; at most {max}; send it in shorter pieces"
        )
    }
}

/// Something the conversation wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationOutput {
    /// Send this datagram to the peer.
    Transmit(Datagram),
    /// Tell the front end.
    Emit(ClientEvent),
}

/// A part waiting for, or in, flight.
#[derive(Debug, Clone)]
struct Part {
    message: MessageId,
    part: u16,
    parts: u16,
    time: TalkTime,
    text: String,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct InFlight {
    part: Part,
    next_send: Instant,
    wait: Duration,
}

#[derive(Debug, Clone)]
struct Pending {
    unacked_parts: u16,
    text: String,
}

/// The stream of `chat`s from one instance of the peer.
#[derive(Debug, Clone)]
struct Inbound {
    instance: InstanceId,
    next: Seq,
    ahead: BTreeMap<Seq, Chat>,
    partial: Option<Partial>,
    /// Bytes of text in `ahead` and `partial`.
    held: usize,
}

#[derive(Debug, Clone)]
struct Partial {
    time: TalkTime,
    parts: u16,
    next_part: u16,
    text: String,
}

/// One conversation. See the module documentation.
#[derive(Debug)]
pub struct Conversation {
    peer: UserName,
    own_name: UserName,
    own_instance: InstanceId,
    config: DeliveryConfig,
    history: VecDeque<ChatLine>,
    next_seq: Seq,
    in_flight: BTreeMap<Seq, InFlight>,
    queued: VecDeque<Part>,
    pending: BTreeMap<MessageId, Pending>,
    inbound: Option<Inbound>,
}

impl Conversation {
    /// An empty conversation between this user and `peer`.
    pub fn new(
        peer: UserName,
        own_name: UserName,
        own_instance: InstanceId,
        config: DeliveryConfig,
    ) -> Self {
        Self {
            peer,
            own_name,
            own_instance,
            config,
            history: VecDeque::new(),
            next_seq: 1,
            in_flight: BTreeMap::new(),
            queued: VecDeque::new(),
            pending: BTreeMap::new(),
            inbound: None,
        }
    }

    /// Bytes of received text held, not yet shown.
    pub fn held_bytes(&self) -> usize {
        self.inbound.as_ref().map_or(0, |stream| stream.held)
    }

    /// Who this conversation is with.
    pub fn peer(&self) -> &UserName {
        &self.peer
    }

    /// This user's name.
    pub fn own_name(&self) -> &UserName {
        &self.own_name
    }

    /// The history, oldest line first.
    pub fn lines(&self) -> impl ExactSizeIterator<Item = &ChatLine> {
        self.history.iter()
    }

    /// Messages sent and not yet acknowledged or given up.
    pub fn unconfirmed(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is under way: nothing to send or confirm, and no
    /// message half received.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.in_flight.is_empty()
            && self.queued.is_empty()
            && self
                .inbound
                .as_ref()
                .is_none_or(|stream| stream.ahead.is_empty() && stream.partial.is_none())
    }

    /// Checks that `text` can be sent to a Pigeon peer (`pigeon`) or a
    /// seed-era one, without sending anything.
    pub fn check(&self, text: &str, pigeon: bool, time: &TalkTime) -> Result<(), SendRefusal> {
        if text.is_empty() {
            return Err(SendRefusal::Empty);
        }
        if pigeon {
            let units: usize = text.chars().map(char::len_utf16).sum();
            let parts = units.div_ceil(MAX_PART_UNITS);
            if parts > MAX_PARTS {
                return Err(SendRefusal::TooLong {
                    chars: text.chars().count(),
                    units,
                    max: MAX_PARTS * MAX_PART_UNITS,
                });
            }
            if self.queued.len() + parts > self.config.max_queued {
                return Err(SendRefusal::Backlog {
                    peer: self.peer.clone(),
                    queued: self.queued.len(),
                });
            }
        } else {
            let bytes = self.talk(time.clone(), text.to_owned()).encoded_len();
            if bytes > COMFORTABLE_DATAGRAM_BYTES {
                return Err(SendRefusal::TooLongForSeedPeer {
                    peer: self.peer.clone(),
                    bytes,
                    max: COMFORTABLE_DATAGRAM_BYTES,
                });
            }
        }
        Ok(())
    }

    /// Sends `text` as message `id`: numbered parts to a Pigeon peer
    /// (`pigeon`), one plain `talk` to a seed-era one.
    pub fn send(
        &mut self,
        id: MessageId,
        text: String,
        pigeon: bool,
        time: TalkTime,
        now: Instant,
    ) -> Result<Vec<ConversationOutput>, SendRefusal> {
        self.check(&text, pigeon, &time)?;
        if !pigeon {
            self.record(ChatLine {
                direction: Direction::Outgoing,
                time: time.clone(),
                text: text.clone(),
                delivery: Delivery::Unconfirmed,
                id: Some(id),
            });
            return Ok(vec![ConversationOutput::Transmit(self.talk(time, text))]);
        }
        let pieces = split(&text, MAX_PART_UNITS);
        // Parts are at most MAX_PARTS (checked), so this fits a u16.
        let parts = u16::try_from(pieces.len()).unwrap_or(u16::MAX);
        let deadline = now + self.config.deadline;
        for (index, piece) in pieces.into_iter().enumerate() {
            self.queued.push_back(Part {
                message: id,
                part: u16::try_from(index + 1).unwrap_or(u16::MAX),
                parts,
                time: time.clone(),
                text: piece,
                deadline,
            });
        }
        self.pending.insert(
            id,
            Pending {
                unacked_parts: parts,
                text: text.clone(),
            },
        );
        self.record(ChatLine {
            direction: Direction::Outgoing,
            time,
            text,
            delivery: Delivery::Sending,
            id: Some(id),
        });
        Ok(self.pump(now))
    }

    /// A plain `talk` from a seed-era peer: shown as it is (the seed
    /// protocol has no numbers to order or deduplicate by).
    pub fn talk_received(&mut self, talk: Talk) -> Vec<ConversationOutput> {
        let Talk { time, from, text } = talk;
        vec![self.received(from, time, text)]
    }

    /// A `chat` part from the peer.
    pub fn chat_received(&mut self, chat: Chat) -> Vec<ConversationOutput> {
        let ack = ConversationOutput::Transmit(Datagram::Ack(Ack {
            from: self.own_name.clone(),
            instance: chat.instance,
            seq: chat.seq,
        }));
        if self
            .inbound
            .as_ref()
            .is_some_and(|stream| stream.instance != chat.instance)
        {
            // A new instance of the peer (it restarted) starts a new stream.
            self.drop_stream();
        }
        let stream = self.inbound.get_or_insert_with(|| Inbound {
            instance: chat.instance,
            next: chat.base,
            ahead: BTreeMap::new(),
            partial: None,
            held: 0,
        });
        if chat.base > stream.next {
            // The sender gave up on everything below `base`; but a base moves
            // the stream on only within reach of what a sender can have
            // given up (its window and its queue), never to anywhere.
            if chat.base - stream.next > MAX_BASE_JUMP {
                return Vec::new();
            }
            let kept = stream.ahead.split_off(&chat.base);
            let dropped: usize = stream.ahead.values().map(|c| c.text.len()).sum::<usize>()
                + stream.partial.take().map_or(0, |p| p.text.len());
            stream.ahead = kept;
            stream.next = chat.base;
            stream.held = stream.held.saturating_sub(dropped);
            self.config.budget.give(dropped);
        }
        let Some(stream) = self.inbound.as_mut() else {
            return Vec::new();
        };
        if chat.seq < stream.next {
            // Seen before: the acknowledgement was lost. Acknowledge again.
            return vec![ack];
        }
        if chat.seq >= stream.next.saturating_add(self.config.reorder_window) {
            // Too far ahead to hold; the sender will send it again.
            return Vec::new();
        }
        if stream.ahead.contains_key(&chat.seq) {
            return vec![ack];
        }
        // Held until shown: within this conversation's share and the
        // client's, or not taken at all (no acknowledgement: the sender
        // sends it again later).
        let len = chat.text.len();
        if stream.held + len > self.config.max_held_bytes || !self.config.budget.take(len) {
            return Vec::new();
        }
        stream.held += len;
        let mut ready = Vec::new();
        if chat.seq == stream.next && stream.ahead.is_empty() {
            // In order, nothing waiting: the usual case holds nothing.
            stream.next += 1;
            ready.push(chat);
        } else {
            stream.ahead.insert(chat.seq, chat);
            while let Some(chat) = stream.ahead.remove(&stream.next) {
                stream.next += 1;
                ready.push(chat);
            }
            release_if_empty(&mut stream.ahead);
        }
        let mut out = vec![ack];
        for chat in ready {
            if let Some(message) = self.assemble(chat) {
                out.push(message);
            }
        }
        out
    }

    /// Forgets the stream from the peer, and what it held.
    fn drop_stream(&mut self) {
        if let Some(stream) = self.inbound.take() {
            self.config.budget.give(stream.held);
        }
    }

    /// Adds a part, in order, to the message being assembled; the whole
    /// message once its last part is in. The part's bytes are held already.
    fn assemble(&mut self, chat: Chat) -> Option<ConversationOutput> {
        let stream = self.inbound.as_mut()?;
        if chat.part == 1 {
            // A message left unfinished was given up by its sender.
            let unfinished = stream.partial.take().map_or(0, |p| p.text.len());
            stream.held = stream.held.saturating_sub(unfinished);
            self.config.budget.give(unfinished);
            stream.partial = Some(Partial {
                time: chat.time.clone(),
                parts: chat.parts,
                next_part: 1,
                text: String::new(),
            });
        }
        let fits = stream
            .partial
            .as_ref()
            .is_some_and(|p| chat.part == p.next_part && chat.parts == p.parts);
        if !fits {
            let lost = chat.text.len() + stream.partial.take().map_or(0, |p| p.text.len());
            stream.held = stream.held.saturating_sub(lost);
            self.config.budget.give(lost);
            return None;
        }
        let partial = stream.partial.as_mut()?;
        partial.text.push_str(&chat.text);
        partial.next_part += 1;
        if chat.part < chat.parts {
            return None;
        }
        let Partial { time, text, .. } = stream.partial.take()?;
        stream.held = stream.held.saturating_sub(text.len());
        self.config.budget.give(text.len());
        Some(self.received(chat.from, time, text))
    }

    /// A whole message from the peer: into the history, and out to the
    /// front end.
    fn received(&mut self, from: UserName, time: TalkTime, text: String) -> ConversationOutput {
        self.record(ChatLine {
            direction: Direction::Incoming,
            time: time.clone(),
            text: text.clone(),
            delivery: Delivery::Received,
            id: None,
        });
        ConversationOutput::Emit(ClientEvent::Message { from, time, text })
    }

    /// An acknowledgement from the peer.
    pub fn ack_received(&mut self, ack: Ack, now: Instant) -> Vec<ConversationOutput> {
        // An acknowledgement for an earlier instance of this client is stale.
        if ack.instance != self.own_instance {
            return Vec::new();
        }
        let Some(acked) = self.in_flight.remove(&ack.seq) else {
            return Vec::new();
        };
        release_if_empty(&mut self.in_flight);
        let mut out = Vec::new();
        let id = acked.part.message;
        if let Some(pending) = self.pending.get_mut(&id) {
            pending.unacked_parts = pending.unacked_parts.saturating_sub(1);
            if pending.unacked_parts == 0 {
                self.pending.remove(&id);
                release_if_empty(&mut self.pending);
                self.set_delivery(id, Delivery::Delivered);
                out.push(ConversationOutput::Emit(ClientEvent::Delivered {
                    to: self.peer.clone(),
                    id,
                }));
            }
        }
        out.extend(self.pump(now));
        out
    }

    /// Sends again what waited too long for its acknowledgement, and gives
    /// up on messages past their deadline.
    pub fn tick(&mut self, now: Instant) -> Vec<ConversationOutput> {
        let mut out = Vec::new();
        let expired: Vec<MessageId> = self
            .in_flight
            .values()
            .map(|f| &f.part)
            .chain(self.queued.iter())
            .filter(|part| now >= part.deadline)
            .map(|part| part.message)
            .collect();
        for id in expired {
            out.extend(self.fail(id));
        }
        let base = self.base();
        let due: Vec<Seq> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now >= f.next_send)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in due {
            if let Some(flight) = self.in_flight.get_mut(&seq) {
                flight.wait = (flight.wait * 2).min(self.config.max_retry);
                flight.next_send = now + flight.wait;
                let part = flight.part.clone();
                out.push(ConversationOutput::Transmit(self.chat(seq, base, &part)));
            }
        }
        out.extend(self.pump(now));
        out
    }

    /// Sends every unacknowledged part again now (the way to the peer
    /// changed, and what went the old way may be lost).
    pub fn resend_now(&mut self, now: Instant) -> Vec<ConversationOutput> {
        for flight in self.in_flight.values_mut() {
            flight.next_send = now;
        }
        self.tick(now)
    }

    /// When [`Conversation::tick`] should next be called, if at all.
    pub fn next_deadline(&self) -> Option<Instant> {
        let flights = self
            .in_flight
            .values()
            .flat_map(|f| [f.next_send, f.part.deadline]);
        let queued = self.queued.front().map(|p| p.deadline);
        flights.chain(queued).min()
    }

    /// Gives up every message still unacknowledged (the user is leaving).
    pub fn abandon(&mut self) -> Vec<ConversationOutput> {
        let ids: Vec<MessageId> = self.pending.keys().copied().collect();
        ids.into_iter().flat_map(|id| self.fail(id)).collect()
    }

    fn fail(&mut self, id: MessageId) -> Vec<ConversationOutput> {
        self.in_flight.retain(|_, f| f.part.message != id);
        release_if_empty(&mut self.in_flight);
        self.queued.retain(|p| p.message != id);
        if self.queued.is_empty() {
            self.queued.shrink_to_fit();
        }
        let Some(pending) = self.pending.remove(&id) else {
            return Vec::new();
        };
        release_if_empty(&mut self.pending);
        self.set_delivery(id, Delivery::Failed);
        vec![ConversationOutput::Emit(ClientEvent::Failed {
            to: self.peer.clone(),
            id,
            text: pending.text,
        })]
    }

    /// Moves queued parts into flight while the window has room.
    fn pump(&mut self, now: Instant) -> Vec<ConversationOutput> {
        let mut out = Vec::new();
        while self.in_flight.len() < self.config.window {
            let Some(part) = self.queued.pop_front() else {
                break;
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            self.in_flight.insert(
                seq,
                InFlight {
                    part: part.clone(),
                    next_send: now + self.config.initial_retry,
                    wait: self.config.initial_retry,
                },
            );
            let base = self.base();
            out.push(ConversationOutput::Transmit(self.chat(seq, base, &part)));
        }
        if self.queued.is_empty() {
            self.queued.shrink_to_fit();
        }
        out
    }

    /// The oldest sequence number still in flight (or the next one).
    fn base(&self) -> Seq {
        self.in_flight
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_seq)
    }

    fn chat(&self, seq: Seq, base: Seq, part: &Part) -> Datagram {
        Datagram::Chat(Chat {
            instance: self.own_instance,
            seq,
            base: base.min(seq),
            part: part.part,
            parts: part.parts,
            time: part.time.clone(),
            from: self.own_name.clone(),
            text: part.text.clone(),
        })
    }

    fn talk(&self, time: TalkTime, text: String) -> Datagram {
        Datagram::Talk(Talk {
            time,
            from: self.own_name.clone(),
            text,
        })
    }

    fn record(&mut self, line: ChatLine) {
        if self.history.len() >= self.config.history_lines.max(1) {
            self.history.pop_front();
        }
        self.history.push_back(line);
    }

    fn set_delivery(&mut self, id: MessageId, delivery: Delivery) {
        if let Some(line) = self.history.iter_mut().rev().find(|l| l.id == Some(id)) {
            line.delivery = delivery;
        }
    }
}

/// What all of a client's conversations may hold of text received and not
/// yet shown, by default.
pub const DEFAULT_CLIENT_HELD_BYTES: usize = 64 << 20;

/// How far a `base` may move a stream on at once: what a sender can have
/// given up together (its window and its queue), with room to spare.
pub const MAX_BASE_JUMP: Seq = 8192;

/// What all of a client's conversations may hold, together, of text
/// received and not yet shown. Shared by the conversations of one client.
#[derive(Debug, Clone)]
pub struct ReceiveBudget {
    used: Arc<AtomicUsize>,
    limit: usize,
}

impl ReceiveBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            used: Arc::default(),
            limit,
        }
    }

    /// No limit but each conversation's own.
    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    /// Bytes held now, by every conversation sharing it.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// Frees an emptied map's storage (a `BTreeMap` keeps its last node): an
/// idle conversation holds no buffers, and a crowd has many idle ones.
fn release_if_empty<K, V>(map: &mut BTreeMap<K, V>) {
    if map.is_empty() {
        *map = BTreeMap::new();
    }
}

/// Splits `text` into pieces of at most `max_units` UTF-16 code units, at
/// character boundaries (a surrogate pair is never cut).
pub fn split(text: &str, max_units: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    let mut units = 0;
    for ch in text.chars() {
        let len = ch.len_utf16();
        if units + len > max_units && !piece.is_empty() {
            pieces.push(std::mem::take(&mut piece));
            units = 0;
        }
        piece.push(ch);
        units += len;
    }
    if !piece.is_empty() || pieces.is_empty() {
        pieces.push(piece);
    }
    pieces
}

#[cfg(test)]
mod tests;
