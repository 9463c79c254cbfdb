//! `Session`: the session part of the client core: a client's login flow,
//! its keepalive and its reconnects, its copy of the roster (kept by the
//! replica, `session/replica.rs`), and every routing decision, as a state machine without
//! sockets or timers.
//!
//! ```text
//! LoggingIn --Accept--> FetchingRoster --snapshot--> Online --logout--> LoggingOut --bye--> Ended
//!   |  ^                   |                          |   ^
//!   |  +----fetch failed---+                          |   | Accept + snapshot
//!   |                         expired / closing / silence  |
//!   +--refused / out of attempts--> Ended             +-> Reconnecting
//! ```
//!
//! With a Pigeon server (one that answered with Pigeon's `Accept`
//! extension) the session keeps alive with `ping`, follows the roster
//! through numbered `delta`s (fetching a fresh snapshot when it sees a gap),
//! and logs in again by itself when the server restarts or goes quiet. With
//! a seed server it speaks the plain protocol only: `login`, `logout`, and
//! nothing else a seed server could choke on.
//!
//! Roster changes that arrive before a snapshot is in are kept and replayed
//! on top of it, in order. The session also decides which chat datagrams may
//! reach a conversation (only those from the address of the user they name,
//! and, between Pigeon clients, from its exact endpoint and instance), tells
//! every open conversation when its peer changes, who may be written to,
//! and when the user's leaving has waited long enough for the
//! conversations to deliver. [`crate::client_core::ClientCore`] wires it to
//! the conversations directly; [`crate::session_actor::SessionActor`] owns
//! the socket, the TCP fetch and the timer, and carries out the outputs.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pigeon_shared::{
    same_host, Accept, AcceptExt, Ack, Chat, Datagram, Delta, InstanceId, Login, LoginExt, Logout,
    LogoutExt, Meet, PeerAddr, Ping, Punch, Refused, Revision, RosterChange, RosterSnapshot,
    SessionToken, Talk, UserName,
};

use pigeon_shared::handshake::{Hello, LoginHandshake, Reply};
use pigeon_shared::mailbox::{Mail, MailRequest, Receipt};
use pigeon_shared::rate_limit::{Rate, RateLimiter, RateLimits};
use pigeon_shared::seal::{open, SessionKey};
use pigeon_shared::{offline, Nonce};
use pigeon_shared::{
    Fingerprint, Identity, LinkDrop, PublicKey, RefuseReason, Relay, Secure, SecureFrame,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use self::pins::KeyInfo;
use self::pins::KeyPins;
use self::replica::{Buffered, Replica};
use crate::conversation::SendRefusal;
use crate::events::{ClientEvent, MessageId, RosterView};

/// What one source may send a client (a peer's window of 64 parts and its
/// acknowledgements, with room to spare) and one host (many peers behind
/// one address); a few thousand sources are tracked.
pub const PEER_RATE_LIMITS: RateLimits = RateLimits {
    per_address: Rate {
        per_second: 500.0,
        burst: 1000.0,
    },
    per_host: Rate {
        per_second: 5000.0,
        burst: 10_000.0,
    },
    max_sources: 4096,
    max_addresses_per_host: 256,
};

/// Keepalive nonces remembered for an `expired` to echo.
const PING_NONCES_KEPT: usize = 4;

/// Fetching the roster again to fill a gap, at most this often.
const RESYNC_EVERY: Duration = Duration::from_secs(1);

/// How long after the drain's deadline a logout goes on regardless.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// How long a seed-style `Accept` waits for a Pigeon server's answer to
/// come instead (see [`Session::hold_seed_answer`]).
const SEED_ANSWER_GRACE: Duration = Duration::from_millis(300);

/// Why a login is tried again when nothing came back.
pub const NO_ANSWER: &str = "no answer from the server";

/// Keepalive intervals of silence after which the server counts as lost:
/// at 20% loss each way a keepalive goes unanswered a third of the time,
/// and eight in a row one time in 3,500.
const SILENT_INTERVALS: u32 = 8;

/// The refusal a session ends with when the server shows another key than
/// the one pinned for it.
pub const SERVER_KEY_CHANGED: &str = "server-key-changed";

/// What a session needs to know.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The name to log in with.
    pub name: UserName,
    /// The server's UDP address.
    pub server: SocketAddr,
    /// This client's receive endpoint, as announced in `login`.
    pub endpoint: PeerAddr,
    /// This client's instance id, announced to Pigeon servers and peers.
    pub instance: InstanceId,
    /// How long to wait for `Accept` after each login attempt; the number of
    /// entries is the number of attempts.
    pub login_timeouts: Vec<Duration>,
    /// How long to wait for `bye` after each logout attempt.
    pub logout_timeouts: Vec<Duration>,
    /// Longest wait between login attempts while reconnecting.
    pub max_reconnect_delay: Duration,
    /// How long a logout waits for messages still on their way.
    pub drain_timeout: Duration,
    /// Speak the seed's plain protocol only, as a seed-era client would:
    /// no extension in `login`, so the server treats this client as one.
    pub plain_protocol: bool,
    /// Seed of the random numbers (login and keepalive nonces) this
    /// session makes: from the system's randomness, except in a
    /// reproducible test.
    pub nonce_seed: u64,
    /// Never give up the first login: after `login_timeouts` run out, keep
    /// trying with the reconnect backoff (for a person watching a screen,
    /// who quits when they want to). Otherwise the session ends with
    /// `LoginFailed` (for scripts).
    pub keep_trying: bool,
    /// Who this user is: the key pair its logins prove (`None`: log in
    /// without a handshake, as clients from before keys did).
    pub identity: Option<Arc<Identity>>,
    /// The key this server showed before (pinned on first contact): a
    /// server showing another one is not logged in to.
    pub server_key: Option<PublicKey>,
    /// The peers' keys pinned before (the first key seen for each name).
    pub pinned_peers: BTreeMap<UserName, PublicKey>,
    /// Pin every key the roster shows on first sight (`false`: on first
    /// use only; see `ClientConfig::pin_on_sight`).
    pub pin_on_sight: bool,
    /// Offline messages shown in earlier runs (their
    /// [`offline::digest`]s): not shown again.
    pub mail_seen: Vec<u64>,
    /// Other servers of the cluster `server` is one of, each with the key
    /// it showed before: when the server is lost, logins go to each in
    /// turn (and back), until one answers.
    pub alternates: Vec<(SocketAddr, Option<PublicKey>)>,
}

/// Default wait after each login attempt: eight attempts over 13.5 s (at
/// 20% loss each way, all eight fail one time in 3,500).
pub fn default_login_timeouts() -> Vec<Duration> {
    [500, 1000, 2000, 2000, 2000, 2000, 2000, 2000]
        .into_iter()
        .map(Duration::from_millis)
        .collect()
}

/// Default wait after each logout attempt: three attempts over 1.4 s.
pub fn default_logout_timeouts() -> Vec<Duration> {
    [200, 400, 800]
        .into_iter()
        .map(Duration::from_millis)
        .collect()
}

/// A client's roster: every user online, this one included, by name.
pub type RosterMap = BTreeMap<UserName, Peer>;

/// What this client knows about another user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Where the user receives.
    pub endpoint: PeerAddr,
    /// The user's instance id if it is a Pigeon client (which takes `chat`);
    /// `None` for a seed-era client, which takes only `talk`.
    pub instance: Option<InstanceId>,
    /// The user's public key, from a Pigeon server's roster: chat with it
    /// is end-to-end encrypted. `None` for a seed-era client, a client
    /// without a key, or anyone on a seed server.
    pub key: Option<PublicKey>,
}

/// Something the session wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    /// Send a datagram.
    Send { to: SocketAddr, datagram: Datagram },
    /// Fetch the roster snapshot over TCP from this address, then call
    /// [`Session::roster_fetched`]. From a Pigeon server, the fetch first
    /// says who asks (`as_user`: name and token), so that deltas follow.
    FetchRoster {
        from: SocketAddr,
        as_user: Option<(UserName, SessionToken)>,
    },
    /// Tell the front end.
    Emit(ClientEvent),
    /// Remember `key` as this server's (first contact): a later login to a
    /// server at this address showing another key is refused.
    PinServer(PublicKey),
    /// Remember `key` as `name`'s (first sight, or trusted by the user in
    /// place of the key pinned before).
    PinPeer { name: UserName, key: PublicKey },
    /// Ask the server's mailbox (over TCP, as this session; see
    /// [`Session::mailbox_access`]) and hand a fetch's answer to
    /// [`Session::mail_received`].
    Mailbox(MailRequest),
    /// An offline message that does not open (not sealed by the key
    /// registered to its sender, or not for this user): dropped.
    MailRefused { from: UserName },
    /// These offline messages (their [`offline::digest`]s) were shown:
    /// remembered for later runs before they are acknowledged.
    MailShown(Vec<u64>),
    /// An input for the conversation with `peer`: see [`PeerInput`] for
    /// which inputs open a conversation and which only reach an open one.
    Conversation { peer: UserName, input: PeerInput },
    /// The user is leaving: every conversation delivers what it can until
    /// `deadline` (reporting the rest failed); call [`Session::drained`]
    /// once all have.
    Drain { deadline: Instant },
    /// A peer datagram was dropped: it did not come from the user it names.
    Refused {
        from: UserName,
        source: SocketAddr,
        refusal: Refusal,
    },
}

/// What the session tells one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerInput {
    /// What is known about the peer changed (`None`: it left). For open
    /// conversations only: an open conversation follows its peer.
    Peer(Option<Peer>),
    /// A `talk` from the peer (opens the conversation).
    Talk(Talk),
    /// A `chat` from the peer (opens the conversation).
    Chat(Chat),
    /// An `ack` from the peer: for an open conversation only (one never
    /// opened sent nothing to acknowledge).
    Ack(Ack),
    /// An end-to-end frame from the peer (opens the conversation): a
    /// handshake, an encrypted `chat` or `ack`, or a path probe; and how
    /// it came.
    Secure(SecureFrame, Via),
    /// Whether the server relays end-to-end frames for this session (it
    /// says so in `Accept`).
    Relay(bool),
    /// The server says: probe the peer now, at these addresses (its
    /// public endpoint, and its local one when both are behind the same
    /// public address). Opens the conversation.
    Punch {
        endpoint: PeerAddr,
        local: Option<PeerAddr>,
    },
}

impl PeerInput {
    /// Whether this input starts a conversation that is not open yet
    /// (the others are for open conversations only).
    pub fn opens(&self) -> bool {
        matches!(
            self,
            Self::Talk(_) | Self::Chat(_) | Self::Secure(..) | Self::Punch { .. }
        )
    }
}

/// How an end-to-end frame arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight from this address.
    Direct(SocketAddr),
    /// Through the server's relay.
    Relay,
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
    #[error("nobody called {0} is registered on this server")]
    Unregistered(UserName),
    #[error("{0} is not online, and the server cannot keep a message for them: {1}")]
    NotKept(UserName, String),
    #[error("{name}'s key changed (to {new}): nothing is sent to {name} until you trust it with /trust {name}")]
    KeyChanged { name: UserName, new: Fingerprint },
    #[error("{0}")]
    Refused(#[from] SendRefusal),
}

/// Why `/trust` did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("{0}'s key has not changed: there is nothing to trust")]
    Unchanged(UserName),
}

/// Why a chat datagram was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sender names a user who is not online (yet).
    UnknownSender,
    /// The sender names a user online at another address.
    WrongAddress,
    /// The sender names a user online under another instance id.
    WrongInstance,
    /// The source sent more than its share: dropped unread.
    RateLimited,
    /// In clear from a user chat with is end-to-end encrypted (or an
    /// end-to-end frame where it is not).
    NotEncrypted,
    /// An end-to-end frame that did not verify, was replayed, or names a
    /// session this client does not have.
    Secure(LinkDrop),
    /// Authenticated as the peer, but not what a peer sends.
    Inconsistent,
}

/// Where and as whom a session asks its mailbox: the server's Pigeon
/// roster port, the session's name and token, and the key its requests are
/// signed with.
#[derive(Debug, Clone)]
pub struct MailboxAccess {
    pub addr: SocketAddr,
    pub name: UserName,
    pub token: SessionToken,
    pub key: SessionKey,
}

/// What the server is, as far as this session has learnt.
#[derive(Debug, Clone, Copy)]
enum Server {
    /// No `Accept` yet.
    Unknown,
    /// A seed-era server: plain protocol only.
    Seed,
    /// A Pigeon server.
    Pigeon {
        token: SessionToken,
        roster_port: u16,
        keepalive: Duration,
        /// Whether it relays end-to-end frames for this session.
        relay: bool,
    },
}

#[derive(Debug, Clone)]
enum State {
    /// Sending `login`; `reconnect` says whether this is a return.
    LoggingIn {
        attempt: usize,
        reconnect: bool,
    },
    /// `Accept` came; the snapshot is on its way.
    FetchingRoster {
        attempt: usize,
        reconnect: bool,
    },
    /// Live. `resyncing`: a fresh snapshot is on its way (a gap was seen).
    Online {
        resyncing: bool,
    },
    /// The server went away; logging in again until it answers.
    Reconnecting {
        attempt: u32,
    },
    /// `logout` sent; waiting for `bye`.
    LoggingOut {
        attempt: usize,
    },
    Ended,
}

/// A client's session. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    server: Server,
    /// The roster, as this client knows it.
    replica: Replica,
    /// When the current state's wait ends (login, reconnect, logout retry).
    deadline: Option<Instant>,
    next_ping: Option<Instant>,
    last_heard: Option<Instant>,
    /// Leaving: conversations are delivering what they can until then.
    drain_until: Option<Instant>,
    /// What each source may make this client do.
    limiter: RateLimiter,
    /// Where this session's nonces come from.
    rng: StdRng,
    /// The nonce of this round of login attempts: the server's answer must
    /// echo it.
    login_nonce: Nonce,
    /// This round's login handshake and the hello each attempt repeats.
    handshake: Option<(LoginHandshake, Hello)>,
    /// The server's key: pinned, or first seen in this process.
    server_key: Option<PublicKey>,
    /// The server answered the last login again with `name-taken` while
    /// the user was still listed through the server lost: ask it again.
    refused_for_now: bool,
    /// The key the server seals what it sends this session with, from the
    /// token in its `Accept`.
    key: Option<SessionKey>,
    /// The nonces of the last keepalives: an `expired` must echo one.
    ping_nonces: VecDeque<Nonce>,
    /// When the roster was last fetched again to fill a gap.
    last_resync: Option<Instant>,
    /// Where the server sees this client (behind a NAT, its router's
    /// address), as its `Accept` said.
    public: Option<PeerAddr>,
    /// What conversations were last told of the relay.
    relay_told: bool,
    /// A seed-style `Accept` held until this time, in case the server is a
    /// Pigeon server whose answer (which proves itself) is still coming.
    seed_answer: Option<(Accept, Instant)>,
    /// Offline messages and receipts already told (a fetch can repeat
    /// them if its acknowledgement was lost).
    mail_seen: SeenSerials,
    receipts_seen: SeenSerials,
}

/// Offline messages (by digest) or receipts (by serial) already seen: the
/// latest [`MAX_SEEN_SERIALS`].
#[derive(Debug, Default)]
struct SeenSerials {
    set: std::collections::HashSet<u64>,
    order: VecDeque<u64>,
}

/// Offline serials remembered against repeats.
const MAX_SEEN_SERIALS: usize = 4096;

impl SeenSerials {
    /// Seen in an earlier run, oldest first.
    fn from(earlier: &[u64]) -> Self {
        let mut seen = Self::default();
        for &serial in earlier {
            seen.insert(serial);
        }
        seen
    }

    /// Whether `serial` is new (and now seen).
    fn insert(&mut self, serial: u64) -> bool {
        if !self.set.insert(serial) {
            return false;
        }
        self.order.push_back(serial);
        if self.order.len() > MAX_SEEN_SERIALS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

impl Session {
    /// A session that has not sent anything yet.
    pub fn new(config: SessionConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.nonce_seed);
        let login_nonce = Nonce(rng.random());
        let me = Peer {
            endpoint: config.endpoint,
            instance: (!config.plain_protocol).then_some(config.instance),
            key: config
                .identity
                .as_ref()
                .filter(|_| !config.plain_protocol)
                .map(|identity| identity.public()),
        };
        let handshake = Self::new_handshake(&config, login_nonce);
        let server_key = config.server_key;
        let mail_seen = SeenSerials::from(&config.mail_seen);
        Self {
            replica: Replica::new(
                config.name.clone(),
                me,
                KeyPins::new(config.pinned_peers.clone(), config.pin_on_sight),
            ),
            config,
            state: State::LoggingIn {
                attempt: 0,
                reconnect: false,
            },
            server: Server::Unknown,
            deadline: None,
            next_ping: None,
            last_heard: None,
            drain_until: None,
            limiter: RateLimiter::new(PEER_RATE_LIMITS, Instant::now()),
            rng,
            login_nonce,
            handshake,
            server_key,
            refused_for_now: false,
            key: None,
            ping_nonces: VecDeque::new(),
            last_resync: None,
            public: None,
            relay_told: false,
            seed_answer: None,
            mail_seen,
            receipts_seen: SeenSerials::default(),
        }
    }

    /// A login handshake for a new round of logins, if this client has a
    /// key and speaks Pigeon.
    fn new_handshake(config: &SessionConfig, nonce: Nonce) -> Option<(LoginHandshake, Hello)> {
        if config.plain_protocol {
            return None;
        }
        let identity = config.identity.as_ref()?;
        LoginHandshake::start(identity, &config.name, config.endpoint, nonce).ok()
    }

    /// Starts a new round of logins: a new nonce for the answer to echo,
    /// a new handshake.
    fn new_round(&mut self) {
        self.login_nonce = Nonce(self.rng.random());
        self.handshake = Self::new_handshake(&self.config, self.login_nonce);
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// The server's key, once it showed one.
    pub fn server_key(&self) -> Option<PublicKey> {
        self.server_key
    }

    /// The nonce the server's answer to this round of logins must echo
    /// (it is in the `login` this session sends).
    pub fn login_nonce(&self) -> Nonce {
        self.login_nonce
    }

    /// Sends the first login.
    pub fn start(&mut self, now: Instant) -> Vec<SessionOutput> {
        vec![self.send_login(0, now)]
    }

    /// When [`Session::timer_fired`] should next be called, if at all.
    pub fn deadline(&self) -> Option<Instant> {
        let watchdog = self.watchdog();
        let seed_answer = self.seed_answer.as_ref().map(|(_, at)| *at);
        [
            self.deadline,
            self.next_ping,
            watchdog,
            self.drain_until,
            seed_answer,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the roster is fetched and the session is live.
    pub fn is_online(&self) -> bool {
        matches!(self.state, State::Online { .. })
    }

    /// Whether the session has logged in at least once and not ended: chat
    /// goes on while the server is away.
    pub fn can_chat(&self) -> bool {
        matches!(
            self.state,
            State::Online { .. }
                | State::Reconnecting { .. }
                | State::LoggingIn {
                    reconnect: true,
                    ..
                }
                | State::FetchingRoster {
                    reconnect: true,
                    ..
                }
        )
    }

    /// Whether the session is over.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// This client's name.
    pub fn name(&self) -> &UserName {
        &self.config.name
    }

    /// This client's instance id.
    pub fn instance(&self) -> InstanceId {
        self.config.instance
    }

    /// This client's receive endpoint.
    pub fn endpoint(&self) -> PeerAddr {
        self.config.endpoint
    }

    /// The users online, sorted by name, this one included.
    pub fn users(&self) -> Vec<(UserName, PeerAddr)> {
        self.replica.users()
    }

    /// What is known about `name`, if online.
    pub fn peer(&self, name: &str) -> Option<Peer> {
        self.replica.peer(name)
    }

    /// The roster revision this client has reached (Pigeon servers only).
    pub fn revision(&self) -> Option<Revision> {
        self.replica.revision()
    }

    /// Whether a `talk` may be delivered: its sender must be online, and it
    /// must come from that user's address: the exact endpoint for a Pigeon
    /// client (which sends from it), the host for a seed-era client (which
    /// sends from throwaway ports, so its port cannot be checked).
    pub fn check_talk(&self, talk: &Talk, source: SocketAddr) -> Result<(), Refusal> {
        self.replica.check_talk(talk, source)?;
        // A Pigeon client with a key never sends `talk` to one with a key.
        match self.replica.peer(talk.from.as_str()) {
            Some(peer) if self.encrypted_with(&peer) => Err(Refusal::NotEncrypted),
            _ => Ok(()),
        }
    }

    /// Whether chat with `peer` is end-to-end encrypted: this client has a
    /// key and speaks Pigeon, and the roster lists the peer's key.
    pub fn encrypted_with(&self, peer: &Peer) -> bool {
        // On every peer datagram: no need to take a share of the key.
        peer.key.is_some() && self.config.identity.is_some() && !self.config.plain_protocol
    }

    /// Where and as whom to ask the mailbox: a Pigeon server's roster
    /// port, this user's name and session token; `None` before a Pigeon
    /// server accepted this session, or without a key.
    pub fn mailbox_access(&self) -> Option<MailboxAccess> {
        self.identity()?;
        let key = self.key?;
        match self.server {
            Server::Pigeon {
                token, roster_port, ..
            } => Some(MailboxAccess {
                addr: SocketAddr::new(self.config.server.ip(), roster_port),
                name: self.config.name.clone(),
                token,
                key,
            }),
            _ => None,
        }
    }

    /// The server says `name` is registered to `key` (to seal an offline
    /// message to): checked against the key pinned for `name`, pinned if
    /// it is the first.
    pub fn offline_key(
        &mut self,
        name: &UserName,
        key: PublicKey,
    ) -> Result<Vec<SessionOutput>, SendTextError> {
        let mut out = Vec::new();
        self.replica.pins_mut().vet(name, key, true, &mut out);
        match self.replica.pins().blocked(name.as_str()) {
            Some((_, new)) => Err(SendTextError::KeyChanged {
                name: name.clone(),
                new: new.fingerprint(),
            }),
            None => Ok(out),
        }
    }

    /// What a mailbox fetch found: each message opened and told, in the
    /// order kept (each once, even if a fetch repeats it), each receipt
    /// told as delivered; then the acknowledgement that deletes them, and
    /// another fetch if more wait.
    pub fn mail_received(
        &mut self,
        mail: Vec<Mail>,
        receipts: Vec<Receipt>,
        more: bool,
    ) -> Vec<SessionOutput> {
        let Some(identity) = self.identity() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut acked_mail = Vec::with_capacity(mail.len());
        let mut shown = Vec::new();
        for m in mail {
            acked_mail.push(m.serial);
            let digest = offline::digest(&m.sealed);
            if !self.mail_seen.insert(digest) {
                continue;
            }
            shown.push(digest);
            match offline::open(&identity, &m.from, &self.config.name, &m.sealed) {
                Ok((sender, message)) if sender == m.from_key => {
                    self.replica.pins_mut().vet(&m.from, sender, true, &mut out);
                    out.push(SessionOutput::Emit(ClientEvent::OfflineMessage {
                        from: m.from,
                        time: message.time,
                        sent_at_ms: message.sent_at_ms,
                        text: message.text,
                    }));
                }
                _ => out.push(SessionOutput::MailRefused { from: m.from }),
            }
        }
        let mut acked_receipts = Vec::with_capacity(receipts.len());
        for r in receipts {
            acked_receipts.push(r.serial);
            if self.receipts_seen.insert(r.serial) {
                out.push(SessionOutput::Emit(ClientEvent::Delivered {
                    to: r.to,
                    id: MessageId(r.id),
                }));
            }
        }
        if !shown.is_empty() {
            out.push(SessionOutput::MailShown(shown));
        }
        if !acked_mail.is_empty() || !acked_receipts.is_empty() {
            out.push(SessionOutput::Mailbox(MailRequest::Ack {
                mail: acked_mail,
                receipts: acked_receipts,
            }));
        }
        if more {
            out.push(SessionOutput::Mailbox(MailRequest::Fetch));
        }
        out
    }

    /// This user's key, if chat may be encrypted with it (a client
    /// speaking the seed's plain protocol never encrypts).
    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.config
            .identity
            .clone()
            .filter(|_| !self.config.plain_protocol)
    }

    /// Why a `chat` would be refused, for counting (the same checks as
    /// delivery, without learning anything).
    pub fn check_chat(&self, chat: &Chat, source: SocketAddr) -> Result<(), Refusal> {
        self.replica.check_chat(chat, source)
    }

    /// A datagram arrived from `source` at `now`.
    pub fn datagram_received(
        &mut self,
        datagram: Datagram,
        source: SocketAddr,
        now: Instant,
    ) -> Vec<SessionOutput> {
        let mut out = self.datagram_taken(datagram, source, now);
        self.relay_changes(&mut out);
        out
    }

    fn datagram_taken(
        &mut self,
        datagram: Datagram,
        source: SocketAddr,
        now: Instant,
    ) -> Vec<SessionOutput> {
        // What a peer (or anyone) may make this client do is rate-limited
        // per source; the server's own address is not (its datagrams are
        // checked, and its bursts of catch-up deltas are legitimate).
        if source != self.config.server && self.limiter.check(source, now).is_err() {
            let from = match &datagram {
                Datagram::Talk(talk) => talk.from.clone(),
                Datagram::Chat(chat) => chat.from.clone(),
                Datagram::Ack(ack) => ack.from.clone(),
                Datagram::Secure(secure) => secure.from.clone(),
                _ => return Vec::new(),
            };
            return refused(from, source, Refusal::RateLimited);
        }
        match datagram {
            // Peer to peer.
            Datagram::Talk(talk) => match self.check_talk(&talk, source) {
                Ok(()) => vec![to_conversation(talk.from.clone(), PeerInput::Talk(talk))],
                Err(refusal) => refused(talk.from, source, refusal),
            },
            Datagram::Chat(chat) => self.chat_received(chat, source),
            Datagram::Ack(ack) => match self.replica.check_exact(&ack.from, source) {
                Ok(peer) if self.encrypted_with(&peer) => {
                    refused(ack.from, source, Refusal::NotEncrypted)
                }
                Ok(_) => vec![to_conversation(ack.from.clone(), PeerInput::Ack(ack))],
                Err(refusal) => refused(ack.from, source, refusal),
            },
            // From anywhere: behind NATs a peer's frames come from its
            // router's address, or its address on a shared network; the
            // frame is authenticated, or its conversation drops it.
            Datagram::Secure(secure) => self.secure_received(secure, source, Via::Direct(source)),
            Datagram::Relayed(secure) if source == self.config.server => {
                self.secure_received(secure, source, Via::Relay)
            }
            // Everything else comes from the server, or from nobody we
            // listen to.
            other if !self.is_from_server(&other, source) => Vec::new(),
            // Sealed with this session's key: the server's, after Accept.
            Datagram::Sealed(sealed) => {
                let opened = self.key.as_ref().and_then(|key| open(key, &sealed).ok());
                match opened {
                    Some(Datagram::Mail) => {
                        self.last_heard = Some(now);
                        match self.mailbox_access() {
                            Some(_) => vec![SessionOutput::Mailbox(MailRequest::Fetch)],
                            None => Vec::new(),
                        }
                    }
                    Some(Datagram::Punch(punch)) => {
                        self.last_heard = Some(now);
                        self.punched(punch)
                    }
                    Some(
                        inner @ (Datagram::Delta(_)
                        | Datagram::Pong(_)
                        | Datagram::Closing(_)
                        | Datagram::Bye(_)),
                    ) => {
                        self.last_heard = Some(now);
                        self.server_datagram(inner, now)
                    }
                    _ => Vec::new(),
                }
            }
            other if !self.authentic(&other) => Vec::new(),
            other => {
                self.last_heard = Some(now);
                self.server_datagram(other, now)
            }
        }
    }

    /// Whether `datagram` may come from the server. A Pigeon server sends
    /// from its own socket, so once the server is known to be one (and for
    /// everything only a Pigeon server sends) the source must be exactly the
    /// server's address; a seed server sends from throwaway ports, so for
    /// the plain protocol only its host can be checked.
    fn is_from_server(&self, datagram: &Datagram, source: SocketAddr) -> bool {
        let pigeon_only = match datagram {
            Datagram::Accept(accept) => accept.pigeon.is_some(),
            Datagram::Login(_) | Datagram::Logout(_) | Datagram::Refused(_) => false,
            _ => true,
        };
        if pigeon_only || matches!(self.server, Server::Pigeon { .. }) {
            source == self.config.server
        } else {
            same_host(source.ip(), self.config.server.ip())
        }
    }

    /// Whether an unsealed datagram from the server's address can be the
    /// server's: an answer to a login echoes its nonce; an `expired`
    /// echoes a keepalive's; the seed's plain broadcasts come only from a
    /// seed server. What a Pigeon server sends after `Accept` comes sealed.
    fn authentic(&self, datagram: &Datagram) -> bool {
        let pigeon_server = matches!(self.server, Server::Pigeon { .. });
        match datagram {
            Datagram::Accept(Accept {
                pigeon: Some(ext), ..
            }) => ext.nonce == Some(self.login_nonce),
            // A seed server's answer carries nothing to check (and no
            // Pigeon server sends one to a Pigeon client); a server that
            // showed a key before is a Pigeon server.
            Datagram::Accept(Accept { pigeon: None, .. }) => {
                !pigeon_server && self.server_key.is_none()
            }
            Datagram::Refused(refused) => {
                self.config.plain_protocol || refused.nonce == Some(self.login_nonce)
            }
            Datagram::Expired(expired) => expired
                .nonce
                .is_some_and(|nonce| self.ping_nonces.contains(&nonce)),
            Datagram::Login(_) | Datagram::Logout(_) => !pigeon_server,
            _ => false,
        }
    }

    fn server_datagram(&mut self, datagram: Datagram, now: Instant) -> Vec<SessionOutput> {
        match datagram {
            Datagram::Accept(accept) if accept.pigeon.is_none() && !self.config.plain_protocol => {
                self.hold_seed_answer(accept, now)
            }
            Datagram::Accept(accept) => self.accepted(accept),
            Datagram::Refused(refused) => self.refused(refused),
            Datagram::Login(Login {
                name,
                endpoint,
                pigeon,
            }) => self.plain_change(RosterChange::Joined {
                name,
                endpoint,
                instance: pigeon.map(|ext| ext.instance),
                key: None,
            }),
            Datagram::Logout(Logout { name, endpoint, .. }) => {
                self.plain_change(RosterChange::Left { name, endpoint })
            }
            Datagram::Delta(delta) => self.delta(delta, now),
            Datagram::Pong(pong) => match (self.replica.revision(), &self.state) {
                // A delta went missing: the revision moved on without us.
                (Some(mine), State::Online { resyncing: false }) if pong.revision > mine => {
                    self.resync(now)
                }
                _ => Vec::new(),
            },
            Datagram::Expired(_) if self.is_online() => {
                self.lose_server("the server no longer knows this session", true, now)
            }
            // Once: a repeated `closing` (a duplicate, or the next from a
            // server still stopping) is not news while logging in again.
            Datagram::Closing(closing)
                if self.can_chat() && !matches!(self.state, State::Reconnecting { .. }) =>
            {
                let reason = if closing.detail.is_empty() {
                    "the server is shutting down".to_owned()
                } else {
                    closing.detail
                };
                self.lose_server(&reason, false, now)
            }
            Datagram::Bye(_) => match self.state {
                State::LoggingOut { .. } => self.end_logout(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// An end-to-end frame from `secure.from`, come `via`.
    fn secure_received(
        &mut self,
        secure: Secure,
        source: SocketAddr,
        via: Via,
    ) -> Vec<SessionOutput> {
        match self.replica.peer(secure.from.as_str()) {
            Some(peer) if self.encrypted_with(&peer) => {
                let mut out = self.use_key(&secure.from);
                out.push(to_conversation(
                    secure.from,
                    PeerInput::Secure(secure.frame, via),
                ));
                out
            }
            Some(_) => refused(secure.from, source, Refusal::NotEncrypted),
            None => refused(secure.from, source, Refusal::UnknownSender),
        }
    }

    /// Whether the server relays end-to-end frames for this session now
    /// (logged in to a server that said so in its `Accept`).
    pub fn relays(&self) -> bool {
        matches!(self.server, Server::Pigeon { relay: true, .. })
            && matches!(
                self.state,
                State::FetchingRoster { .. } | State::Online { .. }
            )
    }

    /// Tells every conversation when the relay comes or goes (while the
    /// server is away, conversations try their peers straight).
    fn relay_changes(&mut self, out: &mut Vec<SessionOutput>) {
        let relay = self.relays();
        if relay != self.relay_told {
            self.relay_told = relay;
            // Leaving: the conversations are done (or draining, and their
            // peers keep taking what they send straight).
            if matches!(self.state, State::LoggingOut { .. } | State::Ended) {
                return;
            }
            out.extend(
                self.replica
                    .names()
                    .map(|peer| to_conversation(peer.clone(), PeerInput::Relay(relay))),
            );
        }
    }

    /// Where the server sees this client, as its `Accept` said.
    pub fn public_endpoint(&self) -> Option<PeerAddr> {
        self.public
    }

    /// `secure`, for `to`, as a request to the server's relay, and where
    /// it goes; `None` if the server does not relay for this session.
    pub fn relay_request(&self, to: &UserName, secure: Secure) -> Option<(SocketAddr, Datagram)> {
        match self.server {
            Server::Pigeon {
                token, relay: true, ..
            } => Some((
                self.config.server,
                Datagram::Relay(Relay {
                    token,
                    to: to.clone(),
                    secure,
                }),
            )),
            _ => None,
        }
    }

    /// A request to the server to tell this user and `peer`, at once,
    /// where to probe each other: `None` unless the server relays (a
    /// server that relays also arranges meetings).
    pub fn meet_request(&self, peer: &UserName) -> Option<(SocketAddr, Datagram)> {
        match self.server {
            Server::Pigeon {
                token, relay: true, ..
            } => Some((
                self.config.server,
                Datagram::Meet(Meet {
                    name: self.config.name.clone(),
                    token,
                    peer: peer.clone(),
                }),
            )),
            _ => None,
        }
    }

    /// The server arranged a meeting: the conversation with the peer
    /// probes it now (if chat with it is end-to-end encrypted; probes are
    /// end-to-end frames).
    fn punched(&mut self, punch: Punch) -> Vec<SessionOutput> {
        if !self.relays() {
            return Vec::new();
        }
        match self.replica.peer(punch.peer.as_str()) {
            Some(peer) if self.encrypted_with(&peer) => vec![to_conversation(
                punch.peer,
                PeerInput::Punch {
                    endpoint: punch.endpoint,
                    local: punch.local,
                },
            )],
            _ => Vec::new(),
        }
    }

    fn chat_received(&mut self, chat: Chat, source: SocketAddr) -> Vec<SessionOutput> {
        let peer = match self.replica.check_exact(&chat.from, source) {
            Ok(peer) if self.encrypted_with(&peer) => {
                return refused(chat.from, source, Refusal::NotEncrypted)
            }
            Ok(peer) => peer,
            Err(refusal) => return refused(chat.from, source, refusal),
        };
        match peer.instance {
            Some(instance) if instance == chat.instance => {
                vec![to_conversation(chat.from.clone(), PeerInput::Chat(chat))]
            }
            Some(_) => refused(chat.from, source, Refusal::WrongInstance),
            // A roster from a seed server does not say who is a Pigeon
            // client; a chat from the user's exact endpoint does.
            None => {
                let learnt = Peer {
                    instance: Some(chat.instance),
                    ..peer
                };
                vec![
                    self.replica.learn(&chat.from, learnt),
                    to_conversation(chat.from.clone(), PeerInput::Chat(chat)),
                ]
            }
        }
    }

    /// The TCP fetch finished.
    pub fn roster_fetched(
        &mut self,
        result: Result<RosterSnapshot, String>,
        now: Instant,
    ) -> Vec<SessionOutput> {
        let mut out = self.fetch_taken(result, now);
        self.relay_changes(&mut out);
        out
    }

    fn fetch_taken(
        &mut self,
        result: Result<RosterSnapshot, String>,
        now: Instant,
    ) -> Vec<SessionOutput> {
        match (&self.state, result) {
            (State::FetchingRoster { attempt, .. }, Err(reason)) => {
                let attempt = *attempt;
                self.retry_or_fail(attempt, &format!("roster fetch failed: {reason}"), now)
            }
            (State::Online { resyncing: true }, Err(_)) => {
                // Try again at the next keepalive's answer.
                self.state = State::Online { resyncing: false };
                Vec::new()
            }
            (State::FetchingRoster { reconnect, .. }, Ok(snapshot)) => {
                let reconnect = *reconnect;
                self.state = State::Online { resyncing: false };
                self.deadline = None;
                if let Server::Pigeon { keepalive, .. } = self.server {
                    self.next_ping = Some(now + keepalive);
                    self.last_heard = Some(now);
                }
                // Back from a lost server, the differences are news; a first
                // roster comes whole, with `Ready`.
                let mut out = self.install(snapshot, reconnect, now);
                let online = self.replica.len();
                let event = if reconnect {
                    ClientEvent::Reconnected { online }
                } else {
                    ClientEvent::Ready {
                        name: self.config.name.clone(),
                        endpoint: self.config.endpoint,
                        online,
                        roster: RosterView(self.replica.shared()),
                    }
                };
                out.insert(0, SessionOutput::Emit(event));
                // What waited in the mailbox while this user was away comes
                // with a `mail` notice, now and with each keepalive answer
                // until it is fetched.
                out
            }
            (State::Online { resyncing: true }, Ok(snapshot)) => {
                self.state = State::Online { resyncing: false };
                self.install(snapshot, true, now)
            }
            _ => Vec::new(),
        }
    }

    /// A deadline passed (or may have).
    pub fn timer_fired(&mut self, now: Instant) -> Vec<SessionOutput> {
        let mut out = self.timer_taken(now);
        self.relay_changes(&mut out);
        out
    }

    fn timer_taken(&mut self, now: Instant) -> Vec<SessionOutput> {
        if self.drain_until.is_some_and(|at| now >= at) {
            return self.drained(now);
        }
        let mut out = Vec::new();
        if self.seed_answer.as_ref().is_some_and(|(_, at)| now >= *at) {
            if let Some((accept, _)) = self.seed_answer.take() {
                out.extend(self.accepted(accept));
            }
        }
        if self.watchdog().is_some_and(|at| now >= at) {
            return self.lose_server(NO_ANSWER, false, now);
        }
        if self.next_ping.is_some_and(|at| now >= at) {
            out.extend(self.ping(now));
        }
        if self.deadline.is_some_and(|at| now >= at) {
            self.deadline = None;
            match self.state.clone() {
                State::LoggingIn { attempt, .. } => {
                    out.extend(self.retry_or_fail(attempt, NO_ANSWER, now))
                }
                State::Reconnecting { attempt } => out.extend(self.reconnect_attempt(attempt, now)),
                State::LoggingOut { attempt } => out.extend(self.logout_attempt(attempt + 1, now)),
                _ => {}
            }
        }
        out
    }

    /// The user wants to leave. First every conversation delivers what it
    /// can ([`SessionOutput::Drain`]; then [`Session::drained`]); then a
    /// logout goes to the server if it knows us, and a Pigeon server is
    /// asked until it says `bye`.
    pub fn logout(&mut self, now: Instant) -> Vec<SessionOutput> {
        if self.drain_until.is_some()
            || matches!(self.state, State::Ended | State::LoggingOut { .. })
        {
            return Vec::new();
        }
        // The session stays as it is meanwhile (keepalives, roster), so
        // that peers keep taking this user's messages.
        let deadline = now + self.config.drain_timeout;
        // Should a conversation never answer, the logout goes on a little
        // after the drain's deadline.
        self.drain_until = Some(deadline + DRAIN_GRACE);
        vec![SessionOutput::Drain { deadline }]
    }

    /// Every conversation has delivered what it could: log out.
    pub fn drained(&mut self, now: Instant) -> Vec<SessionOutput> {
        match (self.drain_until.take(), &self.state) {
            (Some(_), State::Ended | State::LoggingOut { .. }) | (None, _) => Vec::new(),
            (Some(_), _) => self.logout_attempt(0, now),
        }
    }

    /// Whether a message may be sent to `to` now: the session must be live
    /// (logged in once, not leaving) and `to` online. What is known of
    /// `to`, if so.
    pub fn check_send(&self, to: &UserName) -> Result<Peer, SendTextError> {
        if self.drain_until.is_some() || matches!(self.state, State::LoggingOut { .. }) {
            return Err(SendTextError::LoggingOut);
        }
        if !self.can_chat() {
            return Err(SendTextError::NotOnline);
        }
        if let Some((_, new)) = self.replica.pins().blocked(to.as_str()) {
            return Err(SendTextError::KeyChanged {
                name: to.clone(),
                new: new.fingerprint(),
            });
        }
        self.peer(to.as_str())
            .ok_or_else(|| SendTextError::UnknownUser(to.clone()))
    }

    /// This user writes to, hears from or looks up `name`: the key the
    /// roster shows for it is pinned if none was (pinning on use only, the
    /// key is pinned here).
    pub fn use_key(&mut self, name: &UserName) -> Vec<SessionOutput> {
        let mut out = Vec::new();
        if let Some(key) = self.replica.peer(name.as_str()).and_then(|peer| peer.key) {
            self.replica.pins_mut().vet(name, key, true, &mut out);
        }
        out
    }

    /// The user trusts the key the roster now shows for `name`, in place
    /// of the one pinned before: sending to `name` is allowed again.
    pub fn trust(&mut self, name: &UserName) -> Result<Vec<SessionOutput>, TrustError> {
        match self.replica.pins_mut().trust(name) {
            Some(pin) => Ok(vec![pin]),
            None => Err(TrustError::Unchanged(name.clone())),
        }
    }

    /// What is known of `name`'s key (this user's own for its own name).
    pub fn key_info(&self, name: &str) -> KeyInfo {
        if name == self.config.name.as_str() {
            let own = self.identity().map(|identity| identity.public());
            return KeyInfo {
                online: true,
                current: own,
                pinned: own,
            };
        }
        let peer = self.replica.peer(name);
        KeyInfo {
            online: peer.is_some(),
            current: peer.and_then(|peer| peer.key),
            pinned: self.replica.pins().pinned(name),
        }
    }

    fn logout_attempt(&mut self, attempt: usize, now: Instant) -> Vec<SessionOutput> {
        self.next_ping = None;
        let pigeon = match self.server {
            Server::Pigeon { token, .. } => Some(LogoutExt { token }),
            _ => None,
        };
        let send = SessionOutput::Send {
            to: self.config.server,
            datagram: Datagram::Logout(Logout {
                name: self.config.name.clone(),
                endpoint: self.config.endpoint,
                pigeon,
            }),
        };
        let wait = self.config.logout_timeouts.get(attempt).copied();
        match (pigeon, wait) {
            // Only a Pigeon server answers; ask again until it does.
            (Some(_), Some(wait)) => {
                self.state = State::LoggingOut { attempt };
                self.deadline = Some(now + wait);
                vec![send]
            }
            (Some(_), None) => self.end_logout(),
            (None, _) => {
                let mut out = vec![send];
                out.extend(self.end_logout());
                out
            }
        }
    }

    fn end_logout(&mut self) -> Vec<SessionOutput> {
        self.state = State::Ended;
        self.deadline = None;
        self.next_ping = None;
        vec![SessionOutput::Emit(ClientEvent::LoggedOut)]
    }

    /// When silence from a Pigeon server means it is gone.
    fn watchdog(&self) -> Option<Instant> {
        match (self.server, &self.state, self.last_heard) {
            (Server::Pigeon { keepalive, .. }, State::Online { .. }, Some(heard)) => {
                Some(heard + keepalive * SILENT_INTERVALS)
            }
            _ => None,
        }
    }

    fn ping(&mut self, now: Instant) -> Vec<SessionOutput> {
        let Server::Pigeon {
            token, keepalive, ..
        } = self.server
        else {
            self.next_ping = None;
            return Vec::new();
        };
        self.next_ping = Some(now + keepalive);
        let nonce = Nonce(self.rng.random());
        if self.ping_nonces.len() >= PING_NONCES_KEPT {
            self.ping_nonces.pop_front();
        }
        self.ping_nonces.push_back(nonce);
        vec![SessionOutput::Send {
            to: self.config.server,
            datagram: Datagram::Ping(Ping {
                name: self.config.name.clone(),
                token,
                nonce: Some(nonce),
            }),
        }]
    }

    /// A login. It never carries a session token: a client logging in
    /// again cannot know whether the server it reaches still has its old
    /// session (it went quiet) or a new one (it restarted and took an
    /// earlier attempt whose `Accept` was lost, or a duplicate of one), and
    /// a login with a token the server does not hold is refused
    /// `name-taken`. Without one, a server that still has the session
    /// answers with its `Accept` again.
    fn login_datagram(&self) -> Datagram {
        // The extension goes to every server: a seed server ignores the
        // field, and forwards the login verbatim, which is how Pigeon peers
        // on a seed server find each other.
        let pigeon = (!self.config.plain_protocol).then_some(LoginExt {
            instance: self.config.instance,
            token: None,
            nonce: Some(self.login_nonce),
            hello: self.handshake.as_ref().map(|(_, hello)| *hello),
            pad: 0,
        });
        // Padded: the server's answer is never larger than what asked.
        Datagram::Login(
            Login {
                name: self.config.name.clone(),
                endpoint: self.config.endpoint,
                pigeon,
            }
            .padded(),
        )
    }

    fn send_login(&mut self, attempt: usize, now: Instant) -> SessionOutput {
        self.renew_spent_handshake();
        let configured = self.config.login_timeouts.len();
        let wait = match self.config.login_timeouts.get(attempt) {
            Some(wait) => *wait,
            // Then the reconnect backoff, never faster than the last
            // configured wait.
            None if self.config.keep_trying => {
                let beyond = u32::try_from(attempt.saturating_sub(configured)).unwrap_or(u32::MAX);
                let last = self.config.login_timeouts.last().copied();
                self.reconnect_delay(beyond).max(last.unwrap_or_default())
            }
            None => Duration::from_secs(1),
        };
        self.deadline = Some(now + wait);
        SessionOutput::Send {
            to: self.config.server,
            datagram: self.login_datagram(),
        }
    }

    fn retry_or_fail(&mut self, attempt: usize, why: &str, now: Instant) -> Vec<SessionOutput> {
        let reconnect = matches!(
            self.state,
            State::LoggingIn {
                reconnect: true,
                ..
            } | State::FetchingRoster {
                reconnect: true,
                ..
            }
        );
        if reconnect {
            // A returning client never gives up; it keeps trying, slower.
            self.state = State::Reconnecting { attempt: 0 };
            return self.reconnect_attempt(0, now);
        }
        let next = attempt + 1;
        if next >= self.config.login_timeouts.len() && !self.config.keep_trying {
            self.state = State::Ended;
            self.deadline = None;
            let also = match self.config.alternates.len() {
                0 => String::new(),
                1 => " and 1 other server".to_owned(),
                others => format!(" and {others} other servers"),
            };
            let reason = format!(
                "{why}: gave up after {next} login attempt{} to {}{also}",
                if next == 1 { "" } else { "s" },
                self.config.server
            );
            return vec![SessionOutput::Emit(ClientEvent::LoginFailed { reason })];
        }
        // Another server of the cluster may answer where this one did not.
        self.next_server();
        self.state = State::LoggingIn {
            attempt: next,
            reconnect: false,
        };
        vec![
            SessionOutput::Emit(ClientEvent::Connecting {
                server: self.config.server,
                attempt: next + 1,
                why: why.to_owned(),
            }),
            self.send_login(next, now),
        ]
    }

    /// The server is gone (or forgot us): keep the roster and the chats,
    /// and log in again until it answers.
    fn lose_server(&mut self, reason: &str, at_once: bool, now: Instant) -> Vec<SessionOutput> {
        // A new round of logins: its answer echoes a new nonce.
        self.new_round();
        self.next_ping = None;
        self.last_heard = None;
        self.replica.clear_buffered();
        let mut out = vec![SessionOutput::Emit(ClientEvent::ServerLost {
            reason: reason.to_owned(),
        })];
        self.state = State::Reconnecting { attempt: 0 };
        if at_once {
            out.extend(self.reconnect_attempt(0, now));
        } else {
            self.deadline = Some(now + self.reconnect_delay(0));
        }
        out
    }

    fn reconnect_delay(&self, attempt: u32) -> Duration {
        let delay = Duration::from_millis(500).saturating_mul(1 << attempt.min(10));
        delay.min(self.config.max_reconnect_delay)
    }

    /// The next server of the cluster takes the place of the one that
    /// does not answer (which goes to the back of the line).
    fn next_server(&mut self) {
        if self.config.alternates.is_empty() {
            return;
        }
        let (server, key) = self.config.alternates.remove(0);
        self.config
            .alternates
            .push((self.config.server, self.server_key));
        self.config.server = server;
        self.server_key = key;
        self.server = Server::Unknown;
        self.new_round();
    }

    fn reconnect_attempt(&mut self, attempt: u32, now: Instant) -> Vec<SessionOutput> {
        // The server did not answer the last attempt: another of its
        // cluster may. (One that answered, refusing for now, is asked
        // again.)
        if attempt > 0 && !std::mem::take(&mut self.refused_for_now) {
            self.next_server();
        }
        self.state = State::Reconnecting {
            attempt: attempt + 1,
        };
        self.deadline = Some(now + self.reconnect_delay(attempt));
        self.renew_spent_handshake();
        vec![SessionOutput::Send {
            to: self.config.server,
            datagram: self.login_datagram(),
        }]
    }

    /// An answer to this round was read already (and what followed it
    /// failed): its handshake is spent, so a new round begins.
    fn renew_spent_handshake(&mut self) {
        if self.handshake.is_none() && self.config.identity.is_some() && !self.config.plain_protocol
        {
            self.new_round();
        }
    }

    /// A seed-style `Accept` to a Pigeon login: anyone on the path to
    /// the server's host could have forged it, and a Pigeon server's own
    /// answer (which echoes the login's nonce and proves the server's key)
    /// may still be on its way. It is taken only if no such answer comes
    /// within [`SEED_ANSWER_GRACE`]; a forger racing a Pigeon server
    /// cannot make this client treat it as a seed server.
    fn hold_seed_answer(&mut self, accept: Accept, now: Instant) -> Vec<SessionOutput> {
        let waiting = matches!(
            self.state,
            State::LoggingIn { .. } | State::Reconnecting { .. }
        );
        if waiting && self.seed_answer.is_none() {
            self.seed_answer = Some((accept, now + SEED_ANSWER_GRACE));
        }
        Vec::new()
    }

    fn accepted(&mut self, accept: Accept) -> Vec<SessionOutput> {
        self.seed_answer = None;
        let (attempt, reconnect) = match self.state {
            State::LoggingIn { attempt, reconnect } => (attempt, reconnect),
            State::Reconnecting { .. } => (0, true),
            // A second Accept answers a repeated login: already handled.
            _ => return Vec::new(),
        };
        let mut out = Vec::new();
        self.server = match accept.pigeon {
            Some(AcceptExt {
                roster_port,
                token,
                keepalive_ms,
                reply,
                public,
                relay,
                ..
            }) => {
                let (token, key) = match self.answered(reply, token) {
                    Ok((token, key, pin)) => {
                        out.extend(pin.map(SessionOutput::PinServer));
                        (token, key)
                    }
                    Err(end) => return end,
                };
                self.key = Some(key);
                // Only a session with a key sends what a relay carries.
                let relay = relay.is_some() && reply.is_some();
                self.public = public;
                Server::Pigeon {
                    token,
                    roster_port,
                    keepalive: Duration::from_millis(u64::from(keepalive_ms)),
                    relay,
                }
            }
            None => {
                self.key = None;
                Server::Seed
            }
        };
        self.state = State::FetchingRoster { attempt, reconnect };
        // The fetch carries its own timeout.
        self.deadline = None;
        // Connect to the server's configured address, not to the datagram's
        // source: a forged Accept cannot point the fetch elsewhere.
        let port = match self.server {
            Server::Pigeon { roster_port, .. } => roster_port,
            _ => accept.tcp_port,
        };
        out.push(SessionOutput::FetchRoster {
            from: SocketAddr::new(self.config.server.ip(), port),
            as_user: self.roster_request(),
        });
        out
    }

    /// Reads a Pigeon `Accept`'s handshake reply (or, from a server that
    /// answered without one, its token in clear): the token, the sealing
    /// key and, on first contact, the server key to pin. A server showing
    /// another key than the pinned one is not logged in to: the session
    /// ends refused, `server-key-changed`.
    #[allow(clippy::type_complexity)]
    fn answered(
        &mut self,
        reply: Option<Reply>,
        token: Option<SessionToken>,
    ) -> Result<(SessionToken, SessionKey, Option<PublicKey>), Vec<SessionOutput>> {
        let outcome = match (reply, self.handshake.take()) {
            (Some(reply), Some((handshake, _))) => match handshake.finish(&reply) {
                Ok(outcome) => Some(outcome),
                // It echoed the nonce but does not verify: someone on the
                // path. Start over; a genuine answer to the new round
                // will do.
                Err(_) => {
                    self.new_round();
                    return Err(Vec::new());
                }
            },
            (_, handshake) => {
                self.handshake = handshake;
                None
            }
        };
        match (outcome, token) {
            (Some(outcome), _) => match self.server_key {
                Some(pinned) if pinned != outcome.server => {
                    Err(self.server_key_changed(pinned, Some(outcome.server)))
                }
                Some(_) => Ok((outcome.token, outcome.key, None)),
                None => {
                    self.server_key = Some(outcome.server);
                    Ok((outcome.token, outcome.key, Some(outcome.server)))
                }
            },
            // A server that proves no key: one from before keys. Not if
            // this one showed a key before (that would be a downgrade).
            (None, Some(token)) => match self.server_key {
                Some(pinned) => Err(self.server_key_changed(pinned, None)),
                None => Ok((token, SessionKey::from_token(token), None)),
            },
            // No token at all (a handshake reply this session did not ask
            // for): nothing to log in with.
            (None, None) => Err(Vec::new()),
        }
    }

    /// The server shows another key than the pinned one (`None`: no key
    /// at all): the session ends, refused `server-key-changed`.
    fn server_key_changed(
        &mut self,
        pinned: PublicKey,
        shown: Option<PublicKey>,
    ) -> Vec<SessionOutput> {
        let server = self.config.server;
        let pinned = pinned.fingerprint();
        let detail = match shown {
            Some(shown) => format!(
                "the server at {server} shows the key {}, not {pinned} as before; if its operator changed the key, remove its line from known_servers in the data folder",
                shown.fingerprint()
            ),
            None => format!("the server at {server} shows no key, but showed {pinned} before"),
        };
        self.end_refused(RefuseReason::Other(SERVER_KEY_CHANGED.to_owned()), detail)
    }

    /// Who asks for a Pigeon roster: this client, with its token.
    fn roster_request(&self) -> Option<(UserName, SessionToken)> {
        match self.server {
            Server::Pigeon { token, .. } => Some((self.config.name.clone(), token)),
            _ => None,
        }
    }

    fn refused(&mut self, refused: Refused) -> Vec<SessionOutput> {
        let waiting = matches!(
            self.state,
            State::LoggingIn { .. } | State::FetchingRoster { .. } | State::Reconnecting { .. }
        );
        if !waiting {
            return Vec::new();
        }
        // Logging in again through another server of the cluster while
        // the one lost still lists this user: it will not for long (the
        // others drop the users of a server that stopped).
        if matches!(self.state, State::Reconnecting { .. })
            && refused.reason == RefuseReason::NameTaken
            && !self.config.alternates.is_empty()
        {
            self.refused_for_now = true;
            return Vec::new();
        }
        self.end_refused(refused.reason, refused.detail)
    }

    fn end_refused(&mut self, reason: RefuseReason, detail: String) -> Vec<SessionOutput> {
        self.state = State::Ended;
        self.deadline = None;
        self.next_ping = None;
        vec![SessionOutput::Emit(ClientEvent::Refused { reason, detail })]
    }

    fn resync(&mut self, now: Instant) -> Vec<SessionOutput> {
        let Server::Pigeon { roster_port, .. } = self.server else {
            return Vec::new();
        };
        // At most once a second: the gap is noticed again at the next
        // keepalive's answer if need be.
        if self
            .last_resync
            .is_some_and(|at| now.saturating_duration_since(at) < RESYNC_EVERY)
        {
            return Vec::new();
        }
        self.last_resync = Some(now);
        self.state = State::Online { resyncing: true };
        vec![SessionOutput::FetchRoster {
            from: SocketAddr::new(self.config.server.ip(), roster_port),
            as_user: self.roster_request(),
        }]
    }

    fn plain_change(&mut self, change: RosterChange) -> Vec<SessionOutput> {
        match self.state {
            State::LoggingIn { .. } | State::FetchingRoster { .. } => {
                self.replica.buffer(Buffered::Plain(change));
                Vec::new()
            }
            State::Online { .. } => {
                let mut out = Vec::new();
                self.replica.apply(change, &mut out);
                out
            }
            _ => Vec::new(),
        }
    }

    fn delta(&mut self, delta: Delta, now: Instant) -> Vec<SessionOutput> {
        match self.state {
            State::LoggingIn { .. }
            | State::FetchingRoster { .. }
            | State::Online { resyncing: true } => {
                self.replica.buffer(Buffered::Delta(delta));
                Vec::new()
            }
            State::Online { resyncing: false } => match self.replica.revision() {
                Some(mine) if delta.from > mine => {
                    // A gap: a delta went missing. Fetch a fresh snapshot
                    // and replay this one on top of it.
                    self.replica.buffer(Buffered::Delta(delta));
                    self.resync(now)
                }
                _ => {
                    let mut out = Vec::new();
                    if !self.replica.apply_delta(delta, &mut out) {
                        out.extend(self.resync(now));
                    }
                    out
                }
            },
            _ => Vec::new(),
        }
    }

    /// Installs a fetched snapshot (reporting the differences if
    /// `report`), and fetches again if a change that waited for it showed
    /// a gap.
    fn install(
        &mut self,
        snapshot: RosterSnapshot,
        report: bool,
        now: Instant,
    ) -> Vec<SessionOutput> {
        let (mut out, gap) = self.replica.install(snapshot, report);
        if gap {
            out.extend(self.resync(now));
        }
        out
    }
}

pub(crate) fn to_conversation(peer: UserName, input: PeerInput) -> SessionOutput {
    SessionOutput::Conversation { peer, input }
}

fn refused(from: UserName, source: SocketAddr, refusal: Refusal) -> Vec<SessionOutput> {
    vec![SessionOutput::Refused {
        from,
        source,
        refusal,
    }]
}

mod pins;
mod replica;

#[cfg(test)]
mod tests;
