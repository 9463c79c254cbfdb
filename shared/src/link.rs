//! End-to-end encryption between two Pigeon peers, the way WireGuard does
//! it: a Noise `IK` handshake (the initiator knows the responder's key from
//! the roster), then transport datagrams with an explicit counter and a
//! replay window, on binary frames ([`Secure`]) that only Pigeon peers
//! send each other. Nothing here does I/O: frames, plaintexts and `now`
//! go in; frames and plaintexts come out.
//!
//! ```text
//! frame    = 00 | kind | name length (1 byte) | sender's name (UTF-8) | body
//! init     'I': sender index (u32 LE) | IK message 1 (96 bytes: e, s, empty payload)
//! response 'R': sender index | receiver index | IK message 2 (48 bytes: e, empty payload)
//! data     'D': receiver index | counter (u64 LE) | ChaCha20-Poly1305 of the inner datagram
//! prologue = "pigeon1 chat\n" <initiator's name> "\n" <responder's name>
//! ```
//!
//! A side sends only on a session it knows the other side holds: its own
//! initiation once answered, or an answered one once data arrives on it.
//! So a replayed initiation costs the responder a few key agreements and
//! never moves the conversation onto keys nobody else has; the sessions
//! kept are bounded, the answers to initiations rate-limited.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rand::RngCore;
use snow::{Builder, HandshakeState, StatelessTransportState};

use crate::datagram::{DecodeError, Verb};
use crate::identity::{Identity, PublicKey, KEY_BYTES};
use crate::name::UserName;
use crate::noise;

/// The Noise protocol between peers.
pub const PEER_PROTOCOL: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// Bytes of an AEAD tag.
pub const TAG_BYTES: usize = 16;

/// Bytes of IK's first message: the initiator's ephemeral key, its static
/// key encrypted, an empty payload's tag.
pub const INIT_BYTES: usize = KEY_BYTES + (KEY_BYTES + TAG_BYTES) + TAG_BYTES;

/// Bytes of IK's second message: the responder's ephemeral key, an empty
/// payload's tag.
pub const RESPONSE_BYTES: usize = KEY_BYTES + TAG_BYTES;

/// The first byte of every frame: no UTF-16LE datagram of the protocol
/// starts with it (a verb starts with an ASCII letter).
pub const FRAME_MARK: u8 = 0;

/// Plaintexts kept while a handshake is under way (the oldest go first;
/// the conversation retransmits what it lost).
pub const MAX_QUEUED: usize = 64;

/// Sessions kept per conversation (those not yet confirmed go first).
pub const MAX_SESSIONS: usize = 4;

/// Counters older than this many below the newest are refused.
pub const REPLAY_WINDOW: u64 = 1024;

/// How long an unanswered initiation waits before another is sent.
pub const INIT_RETRY: Duration = Duration::from_secs(1);

/// Sending on a session with nothing heard back for this long starts a
/// new handshake (the peer may have lost the session).
pub const REKEY_AFTER_SILENCE: Duration = Duration::from_secs(3);

/// At most this many initiations are answered per conversation in
/// [`ANSWER_PERIOD`].
pub const MAX_ANSWERS: usize = 8;

/// See [`MAX_ANSWERS`].
pub const ANSWER_PERIOD: Duration = Duration::from_secs(1);

/// An end-to-end frame: who sends it (in clear, to find the conversation)
/// and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secure {
    pub from: UserName,
    pub frame: SecureFrame,
}

/// The three kinds of frame.
#[derive(Clone, PartialEq, Eq)]
pub enum SecureFrame {
    /// A handshake's first message.
    Init {
        sender: u32,
        message: [u8; INIT_BYTES],
    },
    /// A handshake's second message.
    Response {
        sender: u32,
        receiver: u32,
        message: [u8; RESPONSE_BYTES],
    },
    /// An inner datagram (`chat` or `ack`), encrypted.
    Data {
        receiver: u32,
        counter: u64,
        ciphertext: Vec<u8>,
    },
}

impl fmt::Debug for SecureFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Init { sender, .. } => write!(f, "Init({sender:08x})"),
            Self::Response {
                sender, receiver, ..
            } => write!(f, "Response({sender:08x} -> {receiver:08x})"),
            Self::Data {
                receiver,
                counter,
                ciphertext,
            } => write!(
                f,
                "Data({receiver:08x} #{counter}, {} bytes)",
                ciphertext.len()
            ),
        }
    }
}

fn bad(field: &'static str) -> DecodeError {
    DecodeError::BadField {
        verb: Verb::Secure,
        field,
        text: String::new(),
    }
}

/// Reads little-endian integers and byte arrays off the front of a slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(bad(field));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        self.take(N, field)?.try_into().map_err(|_| bad(field))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_le_bytes)
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("length"))
        }
    }
}

impl Secure {
    /// Decodes a frame (the caller has seen [`FRAME_MARK`] first). Total.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor(bytes);
        if c.take(1, "mark")? != [FRAME_MARK] {
            return Err(bad("mark"));
        }
        let kind = c.take(1, "kind")?;
        let len = c.take(1, "name")?.first().copied().unwrap_or(0);
        let name =
            std::str::from_utf8(c.take(usize::from(len), "name")?).map_err(|_| bad("name"))?;
        let from = UserName::parse(name).map_err(|source| DecodeError::BadName {
            verb: Verb::Secure,
            source,
        })?;
        let frame = match kind {
            b"I" => {
                let sender = c.u32("sender")?;
                let message = c.array("message")?;
                c.end()?;
                SecureFrame::Init { sender, message }
            }
            b"R" => {
                let sender = c.u32("sender")?;
                let receiver = c.u32("receiver")?;
                let message = c.array("message")?;
                c.end()?;
                SecureFrame::Response {
                    sender,
                    receiver,
                    message,
                }
            }
            b"D" => {
                let receiver = c.u32("receiver")?;
                let counter = c.u64("counter")?;
                if c.0.len() < TAG_BYTES {
                    return Err(bad("ciphertext"));
                }
                SecureFrame::Data {
                    receiver,
                    counter,
                    ciphertext: c.0.to_vec(),
                }
            }
            _ => return Err(bad("kind")),
        };
        Ok(Self { from, frame })
    }

    /// Appends the frame's bytes to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let name = self.from.as_str().as_bytes();
        buf.put_u8(FRAME_MARK);
        buf.put_u8(match self.frame {
            SecureFrame::Init { .. } => b'I',
            SecureFrame::Response { .. } => b'R',
            SecureFrame::Data { .. } => b'D',
        });
        // A name is at most 32 characters of at most 4 bytes: it fits.
        buf.put_u8(u8::try_from(name.len()).unwrap_or(u8::MAX));
        buf.put_slice(name);
        match &self.frame {
            SecureFrame::Init { sender, message } => {
                buf.put_u32_le(*sender);
                buf.put_slice(message);
            }
            SecureFrame::Response {
                sender,
                receiver,
                message,
            } => {
                buf.put_u32_le(*sender);
                buf.put_u32_le(*receiver);
                buf.put_slice(message);
            }
            SecureFrame::Data {
                receiver,
                counter,
                ciphertext,
            } => {
                buf.put_u32_le(*receiver);
                buf.put_u64_le(*counter);
                buf.put_slice(ciphertext);
            }
        }
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        self.encode(&mut buf);
        buf.freeze()
    }
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDrop {
    /// It does not verify: forged, damaged, or for keys long gone.
    Forged,
    /// Its counter was seen already, or is too old to tell.
    Replayed,
    /// It names a session or handshake this side does not have.
    UnknownSession,
    /// The handshake is with another key than the roster's for the peer.
    WrongKey,
    /// Too many initiations lately: not answered.
    Busy,
}

/// What a frame that was taken gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Send this frame to the peer.
    Send(SecureFrame),
    /// This inner datagram arrived, authenticated.
    Plain(Vec<u8>),
}

/// Which counters of a session arrived: a sliding window of
/// [`REPLAY_WINDOW`] below the newest.
#[derive(Debug, Clone, Default)]
struct ReplayWindow {
    /// One past the newest counter seen (0: none yet).
    next: u64,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    fn slot(counter: u64) -> (usize, u64) {
        let bit = counter % REPLAY_WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    /// Whether `counter` may be new.
    fn fresh(&self, counter: u64) -> bool {
        if counter >= self.next {
            return true;
        }
        if self.next - counter > REPLAY_WINDOW {
            return false;
        }
        let (word, mask) = Self::slot(counter);
        self.bits.get(word).is_some_and(|w| w & mask == 0)
    }

    /// Marks `counter` seen (after it verified).
    fn mark(&mut self, counter: u64) {
        if counter >= self.next {
            // Clear the slots the window moves over.
            let moved = (counter + 1 - self.next).min(REPLAY_WINDOW);
            for step in 0..moved {
                let (word, mask) = Self::slot(self.next + step);
                if let Some(w) = self.bits.get_mut(word) {
                    *w &= !mask;
                }
            }
            self.next = counter + 1;
        }
        let (word, mask) = Self::slot(counter);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= mask;
        }
    }
}

/// One established set of keys.
struct Session {
    local: u32,
    remote: u32,
    transport: StatelessTransportState,
    /// The next counter to send with.
    sent: u64,
    window: ReplayWindow,
    /// Whether the other side is known to hold it.
    confirmed: bool,
}

/// Our handshake in flight.
struct Initiation {
    local: u32,
    state: HandshakeState,
    sent_at: Instant,
}

/// One conversation's end-to-end state. See the module documentation.
pub struct Link {
    me: UserName,
    peer: UserName,
    peer_key: PublicKey,
    /// Oldest first.
    sessions: VecDeque<Session>,
    initiation: Option<Initiation>,
    queue: VecDeque<Vec<u8>>,
    /// Since when this side has sent with nothing heard back.
    unanswered_since: Option<Instant>,
    /// When initiations were last answered.
    answers: VecDeque<Instant>,
    /// Handshakes completed (both roles), for counting.
    handshakes: u64,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("peer_key", &self.peer_key.fingerprint().to_string())
            .field("sessions", &self.sessions.len())
            .field("initiating", &self.initiation.is_some())
            .field("queued", &self.queue.len())
            .finish()
    }
}

fn prologue(initiator: &UserName, responder: &UserName) -> Vec<u8> {
    format!("pigeon1 chat\n{initiator}\n{responder}").into_bytes()
}

fn builder<'a>(identity: &'a Identity, prologue: &'a [u8]) -> Result<Builder<'a>, snow::Error> {
    noise::builder(PEER_PROTOCOL, identity, prologue)
}

fn random_index() -> u32 {
    rand::rng().next_u32()
}

impl Link {
    /// `me`'s end of the conversation with `peer`, whose key (from the
    /// roster) is `peer_key`.
    pub fn new(me: UserName, peer: UserName, peer_key: PublicKey) -> Self {
        Self {
            me,
            peer,
            peer_key,
            sessions: VecDeque::new(),
            initiation: None,
            queue: VecDeque::new(),
            unanswered_since: None,
            answers: VecDeque::new(),
            handshakes: 0,
        }
    }

    /// The peer's key this link is for.
    pub fn peer_key(&self) -> PublicKey {
        self.peer_key
    }

    /// Handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes
    }

    /// Whether a session is ready to send on.
    pub fn is_established(&self) -> bool {
        self.sessions.iter().any(|s| s.confirmed)
    }

    /// Encrypts `plaintext` for the peer: a data frame, or, with no session
    /// yet, an initiation (the plaintext waits for its answer). `answered`:
    /// the peer answers it (a `chat` is acknowledged; an `ack` is not), so
    /// that a peer silent for long after it has lost the session.
    pub fn seal(
        &mut self,
        identity: &Identity,
        plaintext: &[u8],
        answered: bool,
        now: Instant,
    ) -> Vec<SecureFrame> {
        let mut out = Vec::new();
        let silent = self
            .unanswered_since
            .is_some_and(|since| now.saturating_duration_since(since) >= REKEY_AFTER_SILENCE);
        match self.data_frame(plaintext) {
            Some(frame) => {
                out.push(frame);
                if answered {
                    self.unanswered_since.get_or_insert(now);
                }
                if silent {
                    out.extend(self.initiate(identity, now));
                }
            }
            None => {
                if self.queue.len() >= MAX_QUEUED {
                    self.queue.pop_front();
                }
                self.queue.push_back(plaintext.to_vec());
                out.extend(self.initiate(identity, now));
            }
        }
        out
    }

    /// `plaintext` in a data frame, if a session this side may send on is
    /// there; nothing otherwise (no handshake is started, nothing queued).
    /// For what is worth sending only now, such as a path probe.
    pub fn seal_if_ready(&mut self, plaintext: &[u8]) -> Option<SecureFrame> {
        self.data_frame(plaintext)
    }

    /// Takes a frame from the peer (the caller checked that it names the
    /// peer; where it came from is the caller's business: the frame is
    /// authenticated or dropped).
    pub fn receive(
        &mut self,
        identity: &Identity,
        frame: SecureFrame,
        now: Instant,
    ) -> Result<Vec<LinkEvent>, LinkDrop> {
        match frame {
            SecureFrame::Init { sender, message } => self.answer(identity, sender, &message, now),
            SecureFrame::Response {
                sender,
                receiver,
                message,
            } => self.answered(sender, receiver, &message),
            SecureFrame::Data {
                receiver,
                counter,
                ciphertext,
            } => self.open(receiver, counter, &ciphertext),
        }
    }

    /// A data frame on the newest session the peer holds, if any.
    fn data_frame(&mut self, plaintext: &[u8]) -> Option<SecureFrame> {
        let session = self
            .sessions
            .iter_mut()
            .rev()
            .find(|s| s.confirmed && s.sent < u64::MAX - 1)?;
        let mut ciphertext = vec![0u8; plaintext.len() + TAG_BYTES];
        let written = session
            .transport
            .write_message(session.sent, plaintext, &mut ciphertext)
            .ok()?;
        ciphertext.truncate(written);
        let counter = session.sent;
        session.sent += 1;
        Some(SecureFrame::Data {
            receiver: session.remote,
            counter,
            ciphertext,
        })
    }

    /// A new initiation, unless one was sent within [`INIT_RETRY`].
    fn initiate(&mut self, identity: &Identity, now: Instant) -> Option<SecureFrame> {
        if self
            .initiation
            .as_ref()
            .is_some_and(|i| now.saturating_duration_since(i.sent_at) < INIT_RETRY)
        {
            return None;
        }
        let prologue = prologue(&self.me, &self.peer);
        let mut state = builder(identity, &prologue)
            .and_then(|b| b.remote_public_key(&self.peer_key.0))
            .and_then(Builder::build_initiator)
            .ok()?;
        let mut message = [0u8; INIT_BYTES];
        let written = state.write_message(&[], &mut message).ok()?;
        if written != INIT_BYTES {
            return None;
        }
        let local = random_index();
        self.initiation = Some(Initiation {
            local,
            state,
            sent_at: now,
        });
        Some(SecureFrame::Init {
            sender: local,
            message,
        })
    }

    fn answer(
        &mut self,
        identity: &Identity,
        sender: u32,
        message: &[u8; INIT_BYTES],
        now: Instant,
    ) -> Result<Vec<LinkEvent>, LinkDrop> {
        while self
            .answers
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= ANSWER_PERIOD)
        {
            self.answers.pop_front();
        }
        if self.answers.len() >= MAX_ANSWERS {
            return Err(LinkDrop::Busy);
        }
        self.answers.push_back(now);
        let prologue = prologue(&self.peer, &self.me);
        let mut state = builder(identity, &prologue)
            .and_then(Builder::build_responder)
            .map_err(|_| LinkDrop::Forged)?;
        let mut payload = [0u8; INIT_BYTES];
        state
            .read_message(message, &mut payload)
            .map_err(|_| LinkDrop::Forged)?;
        if state.get_remote_static() != Some(&self.peer_key.0[..]) {
            return Err(LinkDrop::WrongKey);
        }
        let mut reply = [0u8; RESPONSE_BYTES];
        let written = state
            .write_message(&[], &mut reply)
            .map_err(|_| LinkDrop::Forged)?;
        if written != RESPONSE_BYTES {
            return Err(LinkDrop::Forged);
        }
        let transport = state
            .into_stateless_transport_mode()
            .map_err(|_| LinkDrop::Forged)?;
        let local = random_index();
        self.keep(Session {
            local,
            remote: sender,
            transport,
            sent: 0,
            window: ReplayWindow::default(),
            confirmed: false,
        });
        Ok(vec![LinkEvent::Send(SecureFrame::Response {
            sender: local,
            receiver: sender,
            message: reply,
        })])
    }

    fn answered(
        &mut self,
        sender: u32,
        receiver: u32,
        message: &[u8; RESPONSE_BYTES],
    ) -> Result<Vec<LinkEvent>, LinkDrop> {
        let Some(initiation) = self.initiation.as_mut().filter(|i| i.local == receiver) else {
            return Err(LinkDrop::UnknownSession);
        };
        let mut payload = [0u8; RESPONSE_BYTES];
        initiation
            .state
            .read_message(message, &mut payload)
            .map_err(|_| LinkDrop::Forged)?;
        let Some(initiation) = self.initiation.take() else {
            return Err(LinkDrop::UnknownSession);
        };
        let transport = initiation
            .state
            .into_stateless_transport_mode()
            .map_err(|_| LinkDrop::Forged)?;
        self.keep(Session {
            local: receiver,
            remote: sender,
            transport,
            sent: 0,
            window: ReplayWindow::default(),
            confirmed: true,
        });
        self.handshakes += 1;
        self.unanswered_since = None;
        Ok(self.flush())
    }

    fn open(
        &mut self,
        receiver: u32,
        counter: u64,
        ciphertext: &[u8],
    ) -> Result<Vec<LinkEvent>, LinkDrop> {
        let session = self
            .sessions
            .iter_mut()
            .find(|s| s.local == receiver)
            .ok_or(LinkDrop::UnknownSession)?;
        if !session.window.fresh(counter) {
            return Err(LinkDrop::Replayed);
        }
        let mut plaintext = vec![0u8; ciphertext.len()];
        let read = session
            .transport
            .read_message(counter, ciphertext, &mut plaintext)
            .map_err(|_| LinkDrop::Forged)?;
        plaintext.truncate(read);
        session.window.mark(counter);
        let newly = !session.confirmed;
        session.confirmed = true;
        self.unanswered_since = None;
        let mut events = Vec::new();
        if newly {
            self.handshakes += 1;
            events.extend(self.flush());
        }
        events.push(LinkEvent::Plain(plaintext));
        Ok(events)
    }

    /// What waited for a session, now that there is one.
    fn flush(&mut self) -> Vec<LinkEvent> {
        let queued: Vec<Vec<u8>> = self.queue.drain(..).collect();
        queued
            .iter()
            .filter_map(|plaintext| self.data_frame(plaintext))
            .map(LinkEvent::Send)
            .collect()
    }

    /// Adds `session`, dropping past [`MAX_SESSIONS`] the oldest of the
    /// others not confirmed, or else the oldest: the newest confirmed
    /// session survives any number of new ones.
    fn keep(&mut self, session: Session) {
        self.sessions.push_back(session);
        while self.sessions.len() > MAX_SESSIONS {
            let others = self.sessions.len() - 1;
            let victim = self
                .sessions
                .iter()
                .take(others)
                .position(|s| !s.confirmed)
                .unwrap_or(0);
            self.sessions.remove(victim);
        }
    }
}

#[cfg(test)]
mod tests;
