//! `Roster`: who is online, and every decision about logins, logouts,
//! keepalives and evictions.
//!
//! Plain state machine, no sockets, no clock, no entropy of its own: a
//! datagram, the address it came from and the time go in; what to send and
//! what happened come out. Randomness (session tokens) comes from the
//! seeded generator it is given. [`crate::roster_actor::RosterActor`] is the
//! thin shell around it.
//!
//! Two kinds of user are kept apart throughout. A *seed-era* client speaks
//! the plain protocol: it gets one `login`/`logout` datagram per change and
//! is checked by its host's address only. A *Pigeon* client declared
//! `pigeon1` in its login: it gets a session token, sends keepalives (and is
//! evicted without them), and gets roster changes as numbered `delta`s.
//!
//! The roster also writes through to a [`Directory`], the concurrent map
//! from which TCP roster snapshots are served without a mailbox round trip.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use pigeon_shared::roster_snapshot::{
    pigeon_roster_header, put_dotnet_string, RosterFormat, END_MARK,
};
use pigeon_shared::{
    same_host, Accept, AcceptExt, Bye, Closing, Datagram, Delta, Expired, InstanceId, Login,
    Logout, PeerAddr, Ping, Pong, RefuseReason, Refused, Revision, RosterChange, SessionToken,
    UserName,
};
use rand::rngs::StdRng;
use rand::Rng;

/// The users online, readable from any thread: what TCP roster snapshots
/// are made of. Written only by the [`Roster`], always before the `Accept`
/// that lets a client read it. Each user's roster line is rendered once,
/// when it joins, so that a snapshot is a run of copies: a login storm asks
/// for thousands of them.
///
/// Snapshots are sorted by name (so a client builds its roster from them
/// in one pass) and cached per format for the revision they were made at:
/// in a login storm, thousands of fetches at one revision share one
/// rendering.
#[derive(Debug, Default)]
pub struct Directory {
    users: DashMap<UserName, Listing>,
    revision: AtomicU64,
    /// The last snapshot rendered in each format, `[seed, pigeon]`.
    rendered: Mutex<[Option<Rendered>; 2]>,
}

/// A snapshot as sent: its revision, how many users it holds, its bytes.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub revision: Revision,
    pub users: usize,
    pub bytes: Arc<[u8]>,
}

/// One user in the [`Directory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub endpoint: PeerAddr,
    /// The instance id of a Pigeon client; `None` for a seed-era client.
    pub instance: Option<InstanceId>,
}

/// A [`DirectoryEntry`] and its roster line, `name,ip:port,iid` (`-` for no
/// instance id); the seed format's line is the part before the last comma.
#[derive(Debug)]
struct Listing {
    entry: DirectoryEntry,
    line: Arc<str>,
    seed_len: usize,
}

impl Listing {
    fn new(name: &UserName, entry: DirectoryEntry) -> Self {
        let seed = format!("{name},{}", entry.endpoint);
        let seed_len = seed.len();
        let line = match entry.instance {
            Some(iid) => format!("{seed},{iid}"),
            None => format!("{seed},-"),
        };
        Self {
            entry,
            line: Arc::from(line),
            seed_len,
        }
    }

    fn line(&self, format: RosterFormat) -> &str {
        match format {
            RosterFormat::Seed => self.line.get(..self.seed_len).unwrap_or_default(),
            RosterFormat::Pigeon => &self.line,
        }
    }
}

impl Directory {
    /// The revision, then every user: read in that order, a snapshot never
    /// misses a change at or below the revision it reports. (It may hold a
    /// few later ones too; replaying them is harmless, as every change is
    /// idempotent.)
    pub fn snapshot(&self) -> (Revision, Vec<(UserName, DirectoryEntry)>) {
        let revision = self.revision.load(Ordering::Acquire);
        let users = self
            .users
            .iter()
            .map(|listing| (listing.key().clone(), listing.value().entry))
            .collect();
        (revision, users)
    }

    /// The roster in `format`, as one .NET `BinaryWriter` string sorted by
    /// name, with the number of users in it and its revision (read first,
    /// as in [`Directory::snapshot`]). Rendered once per revision and
    /// format; later calls at the same revision share the bytes.
    pub fn encode(&self, format: RosterFormat) -> Rendered {
        let slot = match format {
            RosterFormat::Seed => 0,
            RosterFormat::Pigeon => 1,
        };
        // Held while rendering, so that concurrent fetches at one revision
        // wait for one rendering instead of each making their own.
        let mut rendered = self
            .rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let revision = self.revision.load(Ordering::Acquire);
        if let Some(cached) = rendered.get(slot).and_then(Option::as_ref) {
            if cached.revision == revision {
                return cached.clone();
            }
        }
        let fresh = self.render(revision, format);
        if let Some(cached) = rendered.get_mut(slot) {
            *cached = Some(fresh.clone());
        }
        fresh
    }

    /// Renders the roster in `format` afresh, labelled `revision`: what
    /// [`Directory::encode`] does when the roster has changed since the last
    /// rendering.
    pub fn render(&self, revision: Revision, format: RosterFormat) -> Rendered {
        let mut lines: Vec<(UserName, Arc<str>, usize)> = self
            .users
            .iter()
            .map(|listing| {
                let value = listing.value();
                let len = value.line(format).len();
                (listing.key().clone(), value.line.clone(), len)
            })
            .collect();
        lines.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let body: usize = lines.iter().map(|(_, _, len)| len + 1).sum();
        let mut text = String::with_capacity(body + 64);
        if format == RosterFormat::Pigeon {
            text.push_str(&pigeon_roster_header(revision));
        }
        for (_, line, len) in &lines {
            text.push_str(line.get(..*len).unwrap_or_default());
            text.push(';');
        }
        text.push_str(END_MARK);
        let mut buf = Vec::with_capacity(text.len() + 5);
        put_dotnet_string(&mut buf, &text);
        Rendered {
            revision,
            users: lines.len(),
            bytes: Arc::from(buf),
        }
    }

    /// Forgets every user, and the revision starts again from zero.
    fn clear(&self) {
        let mut rendered = self
            .rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.users.clear();
        self.revision.store(0, Ordering::Release);
        *rendered = [None, None];
    }

    /// How many users are online.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether nobody is online.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<DirectoryEntry> {
        self.users.get(name).map(|listing| listing.value().entry)
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }
}

/// Limits and settings of a roster.
#[derive(Debug, Clone)]
pub struct RosterConfig {
    /// Seed-format roster port, announced in `Accept`.
    pub tcp_port: u16,
    /// Pigeon-format roster port, announced in Pigeon's `Accept` extension.
    pub roster_port: u16,
    /// Most users online at once; further logins are refused `server-full`.
    pub max_users: usize,
    /// Most users online from one host; further logins from it are refused
    /// `host-full`.
    pub max_users_per_host: usize,
    /// A Pigeon client not heard from for this long is evicted. Clients are
    /// told to send keepalives six times as often, so that even at 20% loss
    /// a live client is evicted only if six keepalives in a row are lost
    /// (odds of 1 in 15,000).
    pub liveness_timeout: Duration,
    /// Largest `delta` datagram, in bytes of UTF-16 text.
    pub max_delta_bytes: usize,
    /// Time each delta recipient adds to the wait before a `delta`
    /// broadcast (see [`Roster::delta_delay`]).
    pub delta_wait_per_recipient: Duration,
    /// Longest wait before pending roster changes are sent.
    pub max_delta_delay: Duration,
}

/// Default for [`RosterConfig::max_users`].
pub const DEFAULT_MAX_USERS: usize = 10_000;
/// Default for [`RosterConfig::max_users_per_host`].
pub const DEFAULT_MAX_USERS_PER_HOST: usize = 256;
/// Default for [`RosterConfig::liveness_timeout`].
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`RosterConfig::delta_wait_per_recipient`]: at most
/// 100,000 delta datagrams a second, well under what one socket can send.
pub const DEFAULT_DELTA_WAIT_PER_RECIPIENT: Duration = Duration::from_micros(10);
/// Default for [`RosterConfig::max_delta_delay`].
pub const DEFAULT_MAX_DELTA_DELAY: Duration = Duration::from_millis(50);
/// Default for [`RosterConfig::max_delta_bytes`]: well inside one Ethernet
/// frame, so a delta is never fragmented.
pub const DEFAULT_MAX_DELTA_BYTES: usize = 1200;

impl RosterConfig {
    /// Defaults, announcing the given ports.
    pub fn new(tcp_port: u16, roster_port: u16) -> Self {
        Self {
            tcp_port,
            roster_port,
            max_users: DEFAULT_MAX_USERS,
            max_users_per_host: DEFAULT_MAX_USERS_PER_HOST,
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
            max_delta_bytes: DEFAULT_MAX_DELTA_BYTES,
            delta_wait_per_recipient: DEFAULT_DELTA_WAIT_PER_RECIPIENT,
            max_delta_delay: DEFAULT_MAX_DELTA_DELAY,
        }
    }

    /// How often Pigeon clients are told to send `ping`.
    pub fn keepalive_interval(&self) -> Duration {
        (self.liveness_timeout / 6).max(Duration::from_millis(50))
    }

    /// How often to look for clients to evict: often enough that an
    /// eviction is late by at most a twentieth of the timeout.
    pub fn sweep_interval(&self) -> Duration {
        (self.liveness_timeout / 20).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }
}

/// One user online.
#[derive(Debug, Clone)]
struct User {
    endpoint: PeerAddr,
    session: Session,
    last_seen: Instant,
    /// Whether the client has fetched the Pigeon roster (and so gets
    /// deltas from then on).
    synced: bool,
}

#[derive(Debug, Clone, Copy)]
enum Session {
    Seed,
    Pigeon {
        instance: InstanceId,
        token: SessionToken,
    },
}

impl Session {
    fn instance(self) -> Option<InstanceId> {
        match self {
            Self::Seed => None,
            Self::Pigeon { instance, .. } => Some(instance),
        }
    }
}

/// The online users and the rules for changing them.
#[derive(Debug)]
pub struct Roster {
    config: RosterConfig,
    users: HashMap<UserName, User>,
    by_endpoint: HashMap<PeerAddr, UserName>,
    per_host: HashMap<IpAddr, usize>,
    directory: Arc<Directory>,
    revision: Revision,
    /// Changes not yet sent to Pigeon clients, after revision `pending_from`.
    pending: Vec<RosterChange>,
    pending_from: Revision,
    /// The latest changes, for clients that fetched a snapshot a little
    /// behind: `recent_from` is the revision before the first.
    recent: VecDeque<RosterChange>,
    recent_from: Revision,
    rng: StdRng,
}

/// Changes kept for clients catching up after a snapshot.
const MAX_RECENT: usize = 65_536;

/// Something the roster wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterAction {
    /// Send one datagram to one address.
    Send { to: SocketAddr, datagram: Datagram },
    /// Send the same datagram to each of these addresses.
    Broadcast {
        to: Vec<SocketAddr>,
        datagram: Datagram,
    },
    /// Tell subscribers.
    Publish(RosterEvent),
}

/// A change to who is online, published to subscribing actors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterEvent {
    Joined {
        name: UserName,
        endpoint: PeerAddr,
    },
    Left {
        name: UserName,
        endpoint: PeerAddr,
        reason: LeaveReason,
    },
}

/// Why a user left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// It logged out.
    LoggedOut,
    /// Nothing was heard from it within the liveness timeout.
    Evicted,
}

/// What the roster decided about a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginDecision {
    /// A new user is online.
    Joined,
    /// The same session logged in again (a lost `Accept`, a reconnect):
    /// `Accept` is repeated, nobody else is told.
    Refreshed,
    /// Refused, with the reason sent back and a sentence for the log.
    Refused {
        reason: RefuseReason,
        detail: String,
    },
}

/// What the roster decided about a logout, keepalive or other session
/// datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionDecision {
    /// The user left (logout) or is kept alive (ping).
    Done,
    /// Ignored: nobody is online under that name.
    UnknownUser,
    /// Ignored: the endpoint is not the one the user logged in with.
    EndpointMismatch { registered: PeerAddr },
    /// Ignored: the datagram did not come from the user's host.
    WrongSource { registered: PeerAddr },
    /// Ignored: a Pigeon session's token was missing or wrong.
    BadToken,
}

impl Roster {
    /// An empty roster writing through to `directory`, drawing session
    /// tokens from `rng`.
    pub fn new(config: RosterConfig, directory: Arc<Directory>, rng: StdRng) -> Self {
        directory.clear();
        Self {
            config,
            users: HashMap::new(),
            by_endpoint: HashMap::new(),
            per_host: HashMap::new(),
            directory,
            revision: 0,
            pending: Vec::new(),
            pending_from: 0,
            recent: VecDeque::new(),
            recent_from: 0,
            rng,
        }
    }

    /// Decides a login that arrived from `source` at `now`.
    ///
    /// The claimed endpoint must be on the sender's host (a seed client
    /// sends its login from a separate ephemeral socket, so only the host,
    /// not the port, can be checked): otherwise anyone could have the server
    /// send `Accept` and broadcasts at a third party.
    pub fn login(
        &mut self,
        login: Login,
        source: SocketAddr,
        now: Instant,
    ) -> (LoginDecision, Vec<RosterAction>) {
        let Login {
            name,
            endpoint,
            pigeon,
        } = login;
        if let Err(problem) = endpoint.check_usable() {
            let detail = format!("endpoint {endpoint} cannot receive: {problem}");
            return refuse(RefuseReason::BadEndpoint, detail, endpoint, source);
        }
        if !same_host(endpoint.socket_addr().ip(), source.ip()) {
            let detail = format!(
                "endpoint {endpoint} is not on the sender's address {}",
                source.ip().to_canonical()
            );
            return refuse(RefuseReason::BadEndpoint, detail, endpoint, source);
        }
        // A Pigeon client logs in from its receive endpoint, so nobody else
        // on its host can claim that endpoint in its name.
        let exact = SocketAddr::new(endpoint.canonical_ip(), endpoint.socket_addr().port());
        if pigeon.is_some() && exact != source {
            let detail =
                format!("a Pigeon login for {endpoint} must come from {endpoint}, not {source}");
            return refuse(RefuseReason::BadEndpoint, detail, endpoint, source);
        }
        if let Some(user) = self.users.get_mut(&name) {
            let same_session = match (user.session, pigeon) {
                (Session::Seed, None) => true,
                (Session::Pigeon { instance, token }, Some(ext)) => {
                    ext.instance == instance && ext.token.is_none_or(|t| t == token)
                }
                _ => false,
            };
            if user.endpoint == endpoint && same_session {
                // Only a token proves the session is alive: a repeated login
                // without one (a retry before the first Accept arrived) gets
                // its Accept again but no credit against eviction.
                if pigeon.is_some_and(|ext| ext.token.is_some()) {
                    user.last_seen = now;
                }
                let session = user.session;
                let accept = self.accept(endpoint, session);
                return (LoginDecision::Refreshed, vec![accept]);
            }
            let detail = format!("{name} is already online");
            return refuse(RefuseReason::NameTaken, detail, endpoint, source);
        }
        if let Some(holder) = self.by_endpoint.get(&endpoint) {
            let detail = format!("{holder} is already online at {endpoint}");
            return refuse(RefuseReason::EndpointTaken, detail, endpoint, source);
        }
        if self.users.len() >= self.config.max_users {
            let detail = format!("{} users are online, the most allowed", self.users.len());
            return refuse(RefuseReason::ServerFull, detail, endpoint, source);
        }
        let host = endpoint.canonical_ip();
        let on_host = self.per_host.get(&host).copied().unwrap_or(0);
        if on_host >= self.config.max_users_per_host {
            let detail = format!("{on_host} users are online from {host}, the most allowed");
            return refuse(RefuseReason::HostFull, detail, endpoint, source);
        }

        let session = match pigeon {
            Some(ext) => Session::Pigeon {
                instance: ext.instance,
                token: SessionToken(self.rng.random()),
            },
            None => Session::Seed,
        };
        // Write through before the Accept goes out: a client fetches the
        // snapshot only after Accept, so it always finds itself and everyone
        // who joined before it.
        let mut actions = Vec::with_capacity(3);
        self.insert(name.clone(), endpoint, session, now);
        actions.push(self.accept(endpoint, session));
        let change = RosterChange::Joined {
            name: name.clone(),
            endpoint,
            instance: session.instance(),
        };
        let seed_users = self.seed_addresses_except(&name);
        if !seed_users.is_empty() {
            actions.push(RosterAction::Broadcast {
                to: seed_users,
                datagram: Datagram::Login(Login {
                    name: name.clone(),
                    endpoint,
                    pigeon: None,
                }),
            });
        }
        self.record(change);
        actions.push(RosterAction::Publish(RosterEvent::Joined {
            name,
            endpoint,
        }));
        (LoginDecision::Joined, actions)
    }

    /// Decides a logout that arrived from `source`: honoured only when the
    /// name, the endpoint and the sender's host match the user, and, for a
    /// Pigeon session, the token too.
    pub fn logout(
        &mut self,
        logout: Logout,
        source: SocketAddr,
    ) -> (SessionDecision, Vec<RosterAction>) {
        let Logout {
            name,
            endpoint,
            pigeon,
        } = logout;
        // A Pigeon client retries its logout until it hears `bye`; answer
        // even when the session is already gone.
        let bye = pigeon.map(|_| RosterAction::Send {
            to: source,
            datagram: Datagram::Bye(Bye { name: name.clone() }),
        });
        let decision = self.check_session(&name, endpoint, source, pigeon.map(|e| e.token));
        if decision != SessionDecision::Done {
            let actions = match decision {
                SessionDecision::UnknownUser => bye.into_iter().collect(),
                _ => Vec::new(),
            };
            return (decision, actions);
        }
        let mut actions = self.remove(&name, LeaveReason::LoggedOut);
        actions.extend(bye);
        (SessionDecision::Done, actions)
    }

    /// Decides a keepalive: a known Pigeon session from its own endpoint
    /// with its token is kept alive and told the roster's revision; anyone
    /// else is told the session is unknown, so that a client whose server
    /// restarted logs in again.
    pub fn ping(
        &mut self,
        ping: Ping,
        source: SocketAddr,
        now: Instant,
    ) -> (SessionDecision, Vec<RosterAction>) {
        let Ping { name, token } = ping;
        // A Pigeon client pings from its receive endpoint, so the source
        // must be exactly the registered endpoint; seed-era sessions have
        // nothing to keep alive.
        let decision = match self.users.get(&name).map(|user| user.session) {
            Some(Session::Seed) => SessionDecision::BadToken,
            _ => self.check_session(&name, PeerAddr::new(source), source, Some(token)),
        };
        match decision {
            SessionDecision::Done => {
                if let Some(user) = self.users.get_mut(&name) {
                    user.last_seen = now;
                }
                let pong = RosterAction::Send {
                    to: source,
                    datagram: Datagram::Pong(Pong {
                        revision: self.revision,
                    }),
                };
                (decision, vec![pong])
            }
            // Whatever is wrong, the answer goes only to the sender, and is
            // smaller than the ping: nothing to amplify.
            _ => {
                let expired = RosterAction::Send {
                    to: source,
                    datagram: Datagram::Expired(Expired { name }),
                };
                (decision, vec![expired])
            }
        }
    }

    /// A Pigeon client fetched the Pigeon roster at `revision`, asking with
    /// its token: from now on it gets deltas, and at once the changes it
    /// missed since that revision (as far as they are still kept; a client
    /// further behind sees a gap at its next delta or keepalive, and fetches
    /// again).
    pub fn synced(
        &mut self,
        name: &UserName,
        token: SessionToken,
        revision: Revision,
    ) -> (SessionDecision, Vec<RosterAction>) {
        let Some(user) = self.users.get_mut(name) else {
            return (SessionDecision::UnknownUser, Vec::new());
        };
        match user.session {
            Session::Pigeon {
                token: expected, ..
            } if expected == token => {}
            _ => return (SessionDecision::BadToken, Vec::new()),
        }
        user.synced = true;
        let to = user.endpoint.socket_addr();
        if revision >= self.revision || revision < self.recent_from {
            return (SessionDecision::Done, Vec::new());
        }
        let skip = usize::try_from(revision - self.recent_from).unwrap_or(usize::MAX);
        let missed: Vec<RosterChange> = self.recent.iter().skip(skip).cloned().collect();
        let actions = chunk_changes(revision, &missed, self.config.max_delta_bytes)
            .into_iter()
            .map(|delta| RosterAction::Send {
                to,
                datagram: Datagram::Delta(delta),
            })
            .collect();
        (SessionDecision::Done, actions)
    }

    /// Evicts every Pigeon client not heard from within the liveness
    /// timeout. Seed-era clients send no keepalives and are never evicted.
    pub fn expire(&mut self, now: Instant) -> (Vec<UserName>, Vec<RosterAction>) {
        let timeout = self.config.liveness_timeout;
        let mut expired: Vec<UserName> = self
            .users
            .iter()
            .filter(|(_, user)| {
                matches!(user.session, Session::Pigeon { .. })
                    && now.saturating_duration_since(user.last_seen) > timeout
            })
            .map(|(name, _)| name.clone())
            .collect();
        expired.sort();
        let mut actions = Vec::new();
        for name in &expired {
            actions.extend(self.remove(name, LeaveReason::Evicted));
        }
        (expired, actions)
    }

    /// The roster changes not yet sent to Pigeon clients, as `delta`
    /// datagrams of at most `max_delta_bytes` each, addressed to every
    /// Pigeon client online now. Called after each change, or after a short
    /// delay so that a burst of changes shares datagrams.
    pub fn flush_deltas(&mut self) -> Vec<RosterAction> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let changes = std::mem::take(&mut self.pending);
        let from = self.pending_from;
        self.pending_from = self.revision;
        let to = self.pigeon_addresses();
        if to.is_empty() {
            return Vec::new();
        }
        chunk_changes(from, &changes, self.config.max_delta_bytes)
            .into_iter()
            .map(|delta| RosterAction::Broadcast {
                to: to.clone(),
                datagram: Datagram::Delta(delta),
            })
            .collect()
    }

    /// Whether changes wait for [`Roster::flush_deltas`].
    pub fn has_pending_deltas(&self) -> bool {
        !self.pending.is_empty()
    }

    /// How long pending changes should wait to share datagrams: `base`,
    /// or longer when many clients must be told, so that delta broadcasts
    /// cost at most one datagram per
    /// [`RosterConfig::delta_wait_per_recipient`] (a storm of 2,000 logouts
    /// then sends a delta every 20 ms, not every 2 ms), but never longer
    /// than [`RosterConfig::max_delta_delay`] (unless `base` is).
    pub fn delta_delay(&self, base: Duration) -> Duration {
        let recipients = u32::try_from(self.delta_recipients().count()).unwrap_or(u32::MAX);
        let wait = self
            .config
            .delta_wait_per_recipient
            .saturating_mul(recipients)
            .min(self.config.max_delta_delay);
        base.max(wait)
    }

    /// `closing` for every Pigeon client: the server is shutting down.
    pub fn closing(&self, detail: &str) -> Option<RosterAction> {
        let to = self.pigeon_addresses();
        (!to.is_empty()).then(|| RosterAction::Broadcast {
            to,
            datagram: Datagram::Closing(Closing {
                detail: detail.to_owned(),
            }),
        })
    }

    /// The users online, sorted by name.
    pub fn users(&self) -> Vec<(UserName, PeerAddr)> {
        let mut users: Vec<_> = self
            .users
            .iter()
            .map(|(n, u)| (n.clone(), u.endpoint))
            .collect();
        users.sort();
        users
    }

    /// How many users are online.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether nobody is online.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The roster's settings.
    pub fn config(&self) -> &RosterConfig {
        &self.config
    }

    /// The roster's revision.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The endpoint of `name`, if online.
    pub fn endpoint_of(&self, name: &str) -> Option<PeerAddr> {
        self.users.get(name).map(|u| u.endpoint)
    }

    fn check_session(
        &self,
        name: &UserName,
        endpoint: PeerAddr,
        source: SocketAddr,
        token: Option<SessionToken>,
    ) -> SessionDecision {
        let Some(user) = self.users.get(name) else {
            return SessionDecision::UnknownUser;
        };
        let registered = user.endpoint;
        if registered != endpoint {
            return SessionDecision::EndpointMismatch { registered };
        }
        if !same_host(registered.socket_addr().ip(), source.ip()) {
            return SessionDecision::WrongSource { registered };
        }
        match (user.session, token) {
            (Session::Seed, _) => SessionDecision::Done,
            (
                Session::Pigeon {
                    token: expected, ..
                },
                Some(token),
            ) if token == expected => SessionDecision::Done,
            (Session::Pigeon { .. }, _) => SessionDecision::BadToken,
        }
    }

    fn insert(&mut self, name: UserName, endpoint: PeerAddr, session: Session, now: Instant) {
        *self.per_host.entry(endpoint.canonical_ip()).or_insert(0) += 1;
        self.by_endpoint.insert(endpoint, name.clone());
        let entry = DirectoryEntry {
            endpoint,
            instance: session.instance(),
        };
        self.directory
            .users
            .insert(name.clone(), Listing::new(&name, entry));
        self.users.insert(
            name,
            User {
                endpoint,
                session,
                last_seen: now,
                synced: false,
            },
        );
    }

    fn remove(&mut self, name: &UserName, reason: LeaveReason) -> Vec<RosterAction> {
        let Some(user) = self.users.remove(name) else {
            return Vec::new();
        };
        let endpoint = user.endpoint;
        self.by_endpoint.remove(&endpoint);
        let host = endpoint.canonical_ip();
        if let Some(count) = self.per_host.get_mut(&host) {
            *count -= 1;
            if *count == 0 {
                self.per_host.remove(&host);
            }
        }
        self.directory.users.remove(name);
        let mut actions = Vec::with_capacity(2);
        let seed_users = self.seed_addresses_except(name);
        if !seed_users.is_empty() {
            actions.push(RosterAction::Broadcast {
                to: seed_users,
                datagram: Datagram::Logout(Logout {
                    name: name.clone(),
                    endpoint,
                    pigeon: None,
                }),
            });
        }
        self.record(RosterChange::Left {
            name: name.clone(),
            endpoint,
        });
        actions.push(RosterAction::Publish(RosterEvent::Left {
            name: name.clone(),
            endpoint,
            reason,
        }));
        actions
    }

    /// Counts a change: the revision grows (published to the directory
    /// after the map was changed), and the change waits for the next
    /// delta.
    fn record(&mut self, change: RosterChange) {
        if self.pending.is_empty() {
            self.pending_from = self.revision;
        }
        self.revision += 1;
        self.directory
            .revision
            .store(self.revision, Ordering::Release);
        if self.recent.len() == MAX_RECENT {
            self.recent.pop_front();
            self.recent_from += 1;
        }
        self.recent.push_back(change.clone());
        self.pending.push(change);
    }

    fn accept(&self, endpoint: PeerAddr, session: Session) -> RosterAction {
        let pigeon = match session {
            Session::Seed => None,
            Session::Pigeon { token, .. } => Some(AcceptExt {
                roster_port: self.config.roster_port,
                token,
                keepalive_ms: u32::try_from(self.config.keepalive_interval().as_millis())
                    .unwrap_or(u32::MAX),
            }),
        };
        RosterAction::Send {
            to: endpoint.socket_addr(),
            datagram: Datagram::Accept(Accept {
                tcp_port: self.config.tcp_port,
                pigeon,
            }),
        }
    }

    fn seed_addresses_except(&self, name: &UserName) -> Vec<SocketAddr> {
        self.users
            .iter()
            .filter(|(other, user)| *other != name && matches!(user.session, Session::Seed))
            .map(|(_, user)| user.endpoint.socket_addr())
            .collect()
    }

    /// Pigeon clients that fetched the roster: those that follow deltas.
    fn pigeon_addresses(&self) -> Vec<SocketAddr> {
        self.delta_recipients()
            .map(|user| user.endpoint.socket_addr())
            .collect()
    }

    /// The users that get `delta`s: Pigeon clients that fetched the roster.
    fn delta_recipients(&self) -> impl Iterator<Item = &User> {
        self.users
            .values()
            .filter(|user| user.synced && matches!(user.session, Session::Pigeon { .. }))
    }
}

/// Splits changes into `delta`s of at most `max_bytes` on the wire, each
/// change rendered once (a single change always goes, whatever its size).
fn chunk_changes(from: Revision, changes: &[RosterChange], max_bytes: usize) -> Vec<Delta> {
    // "delta," plus two revisions of up to 20 digits and their commas.
    const HEADER_BYTES: usize = 2 * (6 + 2 * 21);
    let mut deltas = Vec::new();
    let mut start = 0;
    let mut bytes = HEADER_BYTES;
    for (i, change) in changes.iter().enumerate() {
        let size = 2
            * (1 + change
                .to_string()
                .chars()
                .map(char::len_utf16)
                .sum::<usize>());
        if i > start && bytes + size > max_bytes {
            deltas.push(Delta::new(from + start as u64, &changes[start..i]));
            start = i;
            bytes = HEADER_BYTES;
        }
        bytes += size;
    }
    if start < changes.len() {
        deltas.push(Delta::new(from + start as u64, &changes[start..]));
    }
    deltas
}

/// A refusal goes to the claimed endpoint when that is on the sender's host
/// (where a Pigeon client listens), otherwise back to the sender only:
/// never to a third party.
fn refuse(
    reason: RefuseReason,
    detail: String,
    endpoint: PeerAddr,
    source: SocketAddr,
) -> (LoginDecision, Vec<RosterAction>) {
    let to =
        if endpoint.check_usable().is_ok() && same_host(endpoint.socket_addr().ip(), source.ip()) {
            endpoint.socket_addr()
        } else {
            source
        };
    let send = RosterAction::Send {
        to,
        datagram: Datagram::Refused(Refused {
            reason: reason.clone(),
            detail: detail.clone(),
        }),
    };
    (LoginDecision::Refused { reason, detail }, vec![send])
}

#[cfg(test)]
mod tests {
    use pigeon_shared::{LoginExt, LogoutExt};
    use rand::SeedableRng;

    use super::*;

    const IID_A: InstanceId = InstanceId(0xA);
    const IID_B: InstanceId = InstanceId(0xB);

    struct Fixture {
        roster: Roster,
        directory: Arc<Directory>,
        t0: Instant,
    }

    fn fixture() -> Fixture {
        fixture_with(|_| {})
    }

    fn fixture_with(tune: impl FnOnce(&mut RosterConfig)) -> Fixture {
        let mut config = RosterConfig::new(4242, 4343);
        config.liveness_timeout = Duration::from_secs(8);
        tune(&mut config);
        let directory = Arc::new(Directory::default());
        Fixture {
            roster: Roster::new(config, directory.clone(), StdRng::seed_from_u64(7)),
            directory,
            t0: Instant::now(),
        }
    }

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    fn addr(text: &str) -> PeerAddr {
        PeerAddr::parse(text).unwrap()
    }

    fn sock(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn seed_login(n: &str, a: &str) -> Login {
        Login {
            name: name(n),
            endpoint: addr(a),
            pigeon: None,
        }
    }

    fn pigeon_login(n: &str, a: &str, instance: InstanceId, token: Option<SessionToken>) -> Login {
        Login {
            name: name(n),
            endpoint: addr(a),
            pigeon: Some(LoginExt { instance, token }),
        }
    }

    fn seed_accept_to(a: &str) -> RosterAction {
        RosterAction::Send {
            to: sock(a),
            datagram: Datagram::Accept(Accept {
                tcp_port: 4242,
                pigeon: None,
            }),
        }
    }

    fn refusal(decision: &LoginDecision) -> Option<RefuseReason> {
        match decision {
            LoginDecision::Refused { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }

    /// Logs in a Pigeon client, has it fetch the roster, and returns its
    /// token.
    fn join_pigeon(f: &mut Fixture, n: &str, a: &str, instance: InstanceId) -> SessionToken {
        let token = join_unsynced(f, n, a, instance);
        let revision = f.roster.revision();
        let (decision, _) = f.roster.synced(&name(n), token, revision);
        assert_eq!(decision, SessionDecision::Done);
        token
    }

    /// Logs in a Pigeon client that has not fetched the roster yet.
    fn join_unsynced(f: &mut Fixture, n: &str, a: &str, instance: InstanceId) -> SessionToken {
        let (decision, actions) = f
            .roster
            .login(pigeon_login(n, a, instance, None), sock(a), f.t0);
        assert_eq!(decision, LoginDecision::Joined);
        match &actions[0] {
            RosterAction::Send {
                datagram:
                    Datagram::Accept(Accept {
                        pigeon: Some(ext), ..
                    }),
                ..
            } => ext.token,
            other => panic!("no Pigeon Accept: {other:?}"),
        }
    }

    #[test]
    fn a_seed_login_gets_a_plain_accept_at_its_claimed_endpoint() {
        let mut f = fixture();
        // A seed client logs in from an ephemeral port.
        let (decision, actions) = f.roster.login(
            seed_login("alice", "10.0.0.1:5000"),
            sock("10.0.0.1:61000"),
            f.t0,
        );
        assert_eq!(decision, LoginDecision::Joined);
        assert_eq!(
            actions,
            vec![
                seed_accept_to("10.0.0.1:5000"),
                RosterAction::Publish(RosterEvent::Joined {
                    name: name("alice"),
                    endpoint: addr("10.0.0.1:5000")
                }),
            ]
        );
        assert_eq!(
            f.directory.get("alice"),
            Some(DirectoryEntry {
                endpoint: addr("10.0.0.1:5000"),
                instance: None
            })
        );
        assert_eq!(f.directory.revision(), 1);
    }

    #[test]
    fn a_pigeon_login_gets_a_token_the_roster_port_and_the_keepalive_interval() {
        let mut f = fixture();
        let (_, actions) = f.roster.login(
            pigeon_login("alice", "10.0.0.1:5000", IID_A, None),
            sock("10.0.0.1:5000"),
            f.t0,
        );
        let RosterAction::Send {
            to,
            datagram:
                Datagram::Accept(Accept {
                    tcp_port,
                    pigeon: Some(ext),
                }),
        } = &actions[0]
        else {
            panic!("{actions:?}")
        };
        assert_eq!(*to, sock("10.0.0.1:5000"));
        assert_eq!(
            (*tcp_port, ext.roster_port, ext.keepalive_ms),
            (4242, 4343, 1333)
        );
        assert_eq!(f.directory.get("alice").unwrap().instance, Some(IID_A));
    }

    #[test]
    fn seed_users_get_one_datagram_per_change_and_pigeon_users_get_deltas() {
        let mut f = fixture();
        f.roster.login(
            seed_login("old", "10.0.0.9:5000"),
            sock("10.0.0.9:5000"),
            f.t0,
        );
        join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
        f.roster.flush_deltas();
        let (_, actions) = f.roster.login(
            pigeon_login("bob", "10.0.0.2:5000", IID_B, None),
            sock("10.0.0.2:5000"),
            f.t0,
        );
        // The seed user hears of bob at once, in the seed's form.
        assert!(actions.contains(&RosterAction::Broadcast {
            to: vec![sock("10.0.0.9:5000")],
            datagram: Datagram::Login(seed_login("bob", "10.0.0.2:5000")),
        }));
        // Pigeon users that fetched the roster hear of it in the next delta
        // (bob, who has not fetched yet, gets it in his snapshot).
        let deltas = f.roster.flush_deltas();
        let [RosterAction::Broadcast {
            to,
            datagram: Datagram::Delta(delta),
        }] = deltas.as_slice()
        else {
            panic!("{deltas:?}")
        };
        let mut to = to.clone();
        to.sort();
        assert_eq!(to, vec![sock("10.0.0.1:5000")]);
        assert_eq!((delta.from, delta.to()), (2, 3));
        let changes: Vec<_> = delta.changes().map(|(_, c)| c.unwrap()).collect();
        assert_eq!(
            changes,
            vec![RosterChange::Joined {
                name: name("bob"),
                endpoint: addr("10.0.0.2:5000"),
                instance: Some(IID_B)
            }]
        );
        assert!(f.roster.flush_deltas().is_empty());
    }

    #[test]
    fn deltas_go_only_to_clients_that_fetched_the_roster_and_catch_them_up() {
        let mut f = fixture();
        let alice_token = join_unsynced(&mut f, "alice", "10.0.0.1:5000", IID_A);
        f.roster.login(
            seed_login("old", "10.0.0.9:5000"),
            sock("10.0.0.9:5000"),
            f.t0,
        );
        // alice has not fetched the roster: no deltas for her yet.
        assert!(f.roster.flush_deltas().is_empty());
        f.roster.login(
            seed_login("older", "10.0.0.8:5000"),
            sock("10.0.0.8:5000"),
            f.t0,
        );
        f.roster.flush_deltas();
        // Her snapshot was taken at revision 1 (herself only): the two
        // changes after it come to her at once.
        let (decision, actions) = f.roster.synced(&name("alice"), alice_token, 1);
        assert_eq!(decision, SessionDecision::Done);
        let [RosterAction::Send {
            to,
            datagram: Datagram::Delta(delta),
        }] = actions.as_slice()
        else {
            panic!("{actions:?}")
        };
        assert_eq!(*to, sock("10.0.0.1:5000"));
        assert_eq!((delta.from, delta.to()), (1, 3));
        // From now on she is in every delta.
        f.roster.login(
            seed_login("oldest", "10.0.0.7:5000"),
            sock("10.0.0.7:5000"),
            f.t0,
        );
        assert_eq!(f.roster.flush_deltas().len(), 1);
        // Only her token syncs her.
        let (decision, _) = f.roster.synced(&name("alice"), SessionToken(1), 1);
        assert_eq!(decision, SessionDecision::BadToken);
        let (decision, _) = f.roster.synced(&name("nobody"), alice_token, 1);
        assert_eq!(decision, SessionDecision::UnknownUser);
    }

    #[test]
    fn bursts_of_changes_share_deltas_with_contiguous_revisions() {
        let mut f = fixture_with(|c| c.max_delta_bytes = 300);
        join_pigeon(&mut f, "watcher", "10.0.0.1:5000", IID_A);
        f.roster.flush_deltas();
        for i in 0..20 {
            let endpoint = format!("10.0.1.{i}:5000");
            f.roster.login(
                seed_login(&format!("user{i}"), &endpoint),
                sock(&endpoint),
                f.t0,
            );
        }
        let deltas = f.roster.flush_deltas();
        assert!(
            deltas.len() > 1,
            "one delta cannot hold 20 changes in 300 bytes"
        );
        let mut next = 1;
        for action in &deltas {
            let RosterAction::Broadcast {
                datagram: datagram @ Datagram::Delta(delta),
                ..
            } = action
            else {
                panic!("{action:?}")
            };
            assert_eq!(delta.from, next);
            assert!(datagram.encoded_len() <= 300, "{}", datagram.encoded_len());
            next = delta.to();
        }
        assert_eq!(next, 21);
        assert_eq!(f.roster.revision(), 21);
    }

    #[test]
    fn a_repeated_login_refreshes_but_only_a_token_proves_liveness() {
        let mut f = fixture();
        let token = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
        let later = f.t0 + Duration::from_secs(6);
        // A retry before the first Accept arrived: no token yet.
        let (decision, actions) = f.roster.login(
            pigeon_login("alice", "10.0.0.1:5000", IID_A, None),
            sock("10.0.0.1:5000"),
            later,
        );
        assert_eq!(decision, LoginDecision::Refreshed);
        assert_eq!(actions.len(), 1);
        let (evicted, _) = f.roster.expire(f.t0 + Duration::from_secs(9));
        assert_eq!(
            evicted,
            vec![name("alice")],
            "a login without token kept alice alive"
        );

        let token2 = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
        assert_ne!(token, token2);
        let (decision, _) = f.roster.login(
            pigeon_login("alice", "10.0.0.1:5000", IID_A, Some(token2)),
            sock("10.0.0.1:5000"),
            f.t0 + Duration::from_secs(6),
        );
        assert_eq!(decision, LoginDecision::Refreshed);
        let (evicted, _) = f.roster.expire(f.t0 + Duration::from_secs(9));
        assert!(evicted.is_empty());
    }

    #[test]
    fn nobody_can_refresh_or_take_over_a_pigeon_session() {
        let mut f = fixture();
        join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
        for (login, source) in [
            (
                pigeon_login("alice", "10.0.0.1:5000", IID_A, Some(SessionToken(1))),
                "10.0.0.1:5000",
            ),
            (
                pigeon_login("alice", "10.0.0.1:5000", IID_B, None),
                "10.0.0.1:5000",
            ),
            (seed_login("alice", "10.0.0.1:5000"), "10.0.0.1:6000"),
            (
                pigeon_login("alice", "10.0.0.1:6000", IID_A, None),
                "10.0.0.1:6000",
            ),
        ] {
            let (decision, _) = f.roster.login(login.clone(), sock(source), f.t0);
            assert_eq!(
                refusal(&decision),
                Some(RefuseReason::NameTaken),
                "{login:?}"
            );
        }
    }

    #[test]
    fn a_pigeon_login_must_come_from_its_own_endpoint() {
        let mut f = fixture();
        let (decision, _) = f.roster.login(
            pigeon_login("alice", "10.0.0.1:5000", IID_A, None),
            sock("10.0.0.1:6000"),
            f.t0,
        );
        assert_eq!(refusal(&decision), Some(RefuseReason::BadEndpoint));
    }

    #[test]
    fn second_login_with_same_name_is_refused() {
        let mut f = fixture();
        f.roster.login(
            seed_login("alice", "10.0.0.1:5000"),
            sock("10.0.0.1:5000"),
            f.t0,
        );
        let (decision, actions) = f.roster.login(
            seed_login("alice", "10.0.0.2:6000"),
            sock("10.0.0.2:6000"),
            f.t0,
        );
        assert_eq!(refusal(&decision), Some(RefuseReason::NameTaken));
        let [RosterAction::Send {
            to,
            datagram: Datagram::Refused(refused),
        }] = actions.as_slice()
        else {
            panic!("{actions:?}")
        };
        assert_eq!(*to, sock("10.0.0.2:6000"));
        assert_eq!(refused.reason, RefuseReason::NameTaken);
        assert_eq!(f.roster.endpoint_of("alice"), Some(addr("10.0.0.1:5000")));
    }

    #[test]
    fn same_seed_login_from_same_endpoint_is_a_refresh() {
        let mut f = fixture();
        f.roster.login(
            seed_login("alice", "10.0.0.1:5000"),
            sock("10.0.0.1:5000"),
            f.t0,
        );
        let (decision, actions) = f.roster.login(
            seed_login("alice", "10.0.0.1:5000"),
            sock("10.0.0.1:61000"),
            f.t0,
        );
        assert_eq!(decision, LoginDecision::Refreshed);
        assert_eq!(actions, vec![seed_accept_to("10.0.0.1:5000")]);
        assert_eq!(f.roster.revision(), 1);
    }

    #[test]
    fn endpoint_host_and_capacity_refusals() {
        let mut f = fixture_with(|c| {
            c.max_users = 3;
            c.max_users_per_host = 2;
        });
        f.roster.login(
            seed_login("alice", "10.0.0.1:5000"),
            sock("10.0.0.1:5000"),
            f.t0,
        );
        let cases = [
            (
                seed_login("mallory", "10.0.0.1:5000"),
                "10.0.0.1:7000",
                RefuseReason::EndpointTaken,
            ),
            (
                seed_login("eve", "10.9.9.9:5000"),
                "10.0.0.6:4444",
                RefuseReason::BadEndpoint,
            ),
            (
                seed_login("zero", "10.0.0.1:0"),
                "10.0.0.1:5000",
                RefuseReason::BadEndpoint,
            ),
            (
                seed_login("any", "0.0.0.0:5000"),
                "10.0.0.1:5000",
                RefuseReason::BadEndpoint,
            ),
            (
                seed_login("multi", "224.0.0.1:5000"),
                "10.0.0.1:5000",
                RefuseReason::BadEndpoint,
            ),
        ];
        for (login, source, reason) in cases {
            let (decision, _) = f.roster.login(login.clone(), sock(source), f.t0);
            assert_eq!(refusal(&decision), Some(reason), "{login:?}");
        }
        f.roster.login(
            seed_login("bob", "10.0.0.1:5001"),
            sock("10.0.0.1:5001"),
            f.t0,
        );
        let (decision, _) = f.roster.login(
            seed_login("carol", "10.0.0.1:5002"),
            sock("10.0.0.1:5002"),
            f.t0,
        );
        assert_eq!(refusal(&decision), Some(RefuseReason::HostFull));
        f.roster.login(
            seed_login("dave", "10.0.0.4:5000"),
            sock("10.0.0.4:5000"),
            f.t0,
        );
        let (decision, _) = f.roster.login(
            seed_login("erin", "10.0.0.5:5000"),
            sock("10.0.0.5:5000"),
            f.t0,
        );
        assert_eq!(refusal(&decision), Some(RefuseReason::ServerFull));
        assert_eq!(f.roster.len(), 3);
    }

    #[test]
    fn a_login_claiming_another_hosts_endpoint_is_refused_back_to_the_sender() {
        let mut f = fixture();
        let (_, actions) = f.roster.login(
            seed_login("eve", "10.9.9.9:5000"),
            sock("10.0.0.6:4444"),
            f.t0,
        );
        let [RosterAction::Send { to, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(*to, sock("10.0.0.6:4444"));
        assert!(f.roster.is_empty());
    }

    #[test]
    fn ipv4_mapped_sources_match_ipv4_endpoints() {
        let mut f = fixture();
        let (decision, _) = f.roster.login(
            seed_login("alice", "10.0.0.1:5000"),
            sock("[::ffff:10.0.0.1]:5000"),
            f.t0,
        );
        assert_eq!(decision, LoginDecision::Joined);
    }

    #[test]
    fn seed_logout_needs_the_name_endpoint_and_host() {
        let mut f = fixture();
        f.roster.login(
            seed_login("alice", "10.0.0.1:5000"),
            sock("10.0.0.1:5000"),
            f.t0,
        );
        f.roster.login(
            seed_login("bob", "10.0.0.2:5000"),
            sock("10.0.0.2:5000"),
            f.t0,
        );
        let logout = |n: &str, a: &str| Logout {
            name: name(n),
            endpoint: addr(a),
            pigeon: None,
        };
        let (decision, actions) = f
            .roster
            .logout(logout("alice", "10.0.0.1:5000"), sock("10.0.0.66:5000"));
        assert_eq!(
            decision,
            SessionDecision::WrongSource {
                registered: addr("10.0.0.1:5000")
            }
        );
        assert!(actions.is_empty());
        let (decision, _) = f
            .roster
            .logout(logout("alice", "10.0.0.1:5001"), sock("10.0.0.1:5001"));
        assert!(matches!(decision, SessionDecision::EndpointMismatch { .. }));
        let (decision, _) = f
            .roster
            .logout(logout("nobody", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        assert_eq!(decision, SessionDecision::UnknownUser);

        let (decision, actions) = f
            .roster
            .logout(logout("alice", "10.0.0.1:5000"), sock("10.0.0.1:61000"));
        assert_eq!(decision, SessionDecision::Done);
        assert_eq!(
            actions,
            vec![
                RosterAction::Broadcast {
                    to: vec![sock("10.0.0.2:5000")],
                    datagram: Datagram::Logout(logout("alice", "10.0.0.1:5000")),
                },
                RosterAction::Publish(RosterEvent::Left {
                    name: name("alice"),
                    endpoint: addr("10.0.0.1:5000"),
                    reason: LeaveReason::LoggedOut,
                }),
            ]
        );
        assert!(f.directory.get("alice").is_none());
        // The endpoint is free again.
        let (decision, _) = f.roster.login(
            seed_login("carol", "10.0.0.1:5000"),
            sock("10.0.0.1:5000"),
            f.t0,
        );
        assert_eq!(decision, LoginDecision::Joined);
    }

    #[test]
    fn pigeon_logout_needs_the_token_and_is_answered_with_bye() {
        let mut f = fixture();
        let token = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
        let logout = |token: Option<SessionToken>| Logout {
            name: name("alice"),
            endpoint: addr("10.0.0.1:5000"),
            pigeon: token.map(|token| LogoutExt { token }),
        };
        // From alice's own host, but without her token.
        let (decision, actions) = f.roster.logout(logout(None), sock("10.0.0.1:5000"));
        assert_eq!(decision, SessionDecision::BadToken);
        assert!(actions.is_empty());
        let (decision, _) = f
            .roster
            .logout(logout(Some(SessionToken(99))), sock("10.0.0.1:5000"));
        assert_eq!(decision, SessionDecision::BadToken);
        assert_eq!(f.roster.len(), 1);

        let (decision, actions) = f.roster.logout(logout(Some(token)), sock("10.0.0.1:5000"));
        assert_eq!(decision, SessionDecision::Done);
        assert!(actions.contains(&RosterAction::Send {
            to: sock("10.0.0.1:5000"),
            datagram: Datagram::Bye(Bye {
                name: name("alice")
            }),
        }));
        // A retry after the bye was lost is answered again.
        let (decision, actions) = f.roster.logout(logout(Some(token)), sock("10.0.0.1:5000"));
        assert_eq!(decision, SessionDecision::UnknownUser);
        assert_eq!(actions.len(), 1);
    }

    #[test]
    fn pings_keep_a_session_alive_and_others_are_told_to_log_in_again() {
        let mut f = fixture();
        let token = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
        let ping = |token| Ping {
            name: name("alice"),
            token,
        };
        let at = f.t0 + Duration::from_secs(5);
        let (decision, actions) = f.roster.ping(ping(token), sock("10.0.0.1:5000"), at);
        assert_eq!(decision, SessionDecision::Done);
        assert_eq!(
            actions,
            vec![RosterAction::Send {
                to: sock("10.0.0.1:5000"),
                datagram: Datagram::Pong(Pong { revision: 1 }),
            }]
        );
        // Wrong token, wrong port, or nobody by that name: `expired`, to the
        // sender only, and no credit.
        for (token, source) in [
            (SessionToken(1), "10.0.0.1:5000"),
            (token, "10.0.0.1:5001"),
            (token, "10.0.0.7:5000"),
        ] {
            let (decision, actions) = f.roster.ping(ping(token), sock(source), at);
            assert_ne!(decision, SessionDecision::Done, "{source}");
            assert_eq!(
                actions,
                vec![RosterAction::Send {
                    to: sock(source),
                    datagram: Datagram::Expired(Expired {
                        name: name("alice")
                    }),
                }]
            );
        }
        let (evicted, _) = f.roster.expire(f.t0 + Duration::from_secs(12));
        assert!(evicted.is_empty(), "the ping at 5 s keeps alice until 13 s");
        let (evicted, actions) = f.roster.expire(f.t0 + Duration::from_secs(14));
        assert_eq!(evicted, vec![name("alice")]);
        assert!(actions.contains(&RosterAction::Publish(RosterEvent::Left {
            name: name("alice"),
            endpoint: addr("10.0.0.1:5000"),
            reason: LeaveReason::Evicted,
        })));
        let (decision, _) = f.roster.ping(ping(token), sock("10.0.0.1:5000"), at);
        assert_eq!(decision, SessionDecision::UnknownUser);
    }

    #[test]
    fn seed_users_are_never_evicted() {
        let mut f = fixture();
        f.roster.login(
            seed_login("old", "10.0.0.9:5000"),
            sock("10.0.0.9:5000"),
            f.t0,
        );
        let (evicted, _) = f.roster.expire(f.t0 + Duration::from_secs(3600));
        assert!(evicted.is_empty());
        let (decision, _) = f.roster.ping(
            Ping {
                name: name("old"),
                token: SessionToken(0),
            },
            sock("10.0.0.9:5000"),
            f.t0,
        );
        assert_eq!(decision, SessionDecision::BadToken);
    }

    #[test]
    fn closing_goes_to_pigeon_users_only() {
        let mut f = fixture();
        f.roster.login(
            seed_login("old", "10.0.0.9:5000"),
            sock("10.0.0.9:5000"),
            f.t0,
        );
        assert!(f.roster.closing("bye").is_none());
        join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
        assert_eq!(
            f.roster.closing("restarting"),
            Some(RosterAction::Broadcast {
                to: vec![sock("10.0.0.1:5000")],
                datagram: Datagram::Closing(Closing {
                    detail: "restarting".into()
                }),
            })
        );
    }

    #[test]
    fn the_directory_encodes_both_roster_formats() {
        use pigeon_shared::roster_snapshot::decode_frame;
        use pigeon_shared::RosterSnapshot;
        let mut f = fixture();
        join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
        f.roster.login(
            seed_login("old", "10.0.0.9:5000"),
            sock("10.0.0.9:5000"),
            f.t0,
        );
        let rendered = f.directory.encode(RosterFormat::Pigeon);
        assert_eq!((rendered.revision, rendered.users), (2, 2));
        let (text, _) = decode_frame(&rendered.bytes, 1 << 20).unwrap().unwrap();
        let snapshot = RosterSnapshot::parse(&text).unwrap();
        assert_eq!(snapshot.revision, Some(2));
        let entries: Vec<_> = snapshot
            .entries
            .iter()
            .map(|e| (e.name.to_string(), e.endpoint.to_string(), e.instance))
            .collect();
        assert_eq!(
            entries,
            vec![
                ("alice".into(), "10.0.0.1:5000".into(), Some(IID_A)),
                ("old".into(), "10.0.0.9:5000".into(), None),
            ]
        );
        let rendered = f.directory.encode(RosterFormat::Seed);
        let (text, _) = decode_frame(&rendered.bytes, 1 << 20).unwrap().unwrap();
        assert!(!text.contains("pigeon1"), "{text}");
        let parts: Vec<_> = text.split(';').collect();
        assert_eq!(parts, ["alice,10.0.0.1:5000", "old,10.0.0.9:5000", "end"]);
    }

    #[test]
    fn deltas_wait_longer_the_more_clients_must_be_told() {
        let base = Duration::from_millis(2);
        let mut f = fixture_with(|c| {
            c.delta_wait_per_recipient = Duration::from_micros(100);
            c.max_delta_delay = Duration::from_millis(7);
        });
        assert_eq!(f.roster.delta_delay(base), base);
        // Seed-era users and Pigeon clients that have not fetched the
        // roster get no deltas, so they do not count.
        for i in 0..40 {
            let host = format!("10.1.0.{i}:5000");
            f.roster
                .login(seed_login(&format!("old{i}"), &host), sock(&host), f.t0);
        }
        join_unsynced(&mut f, "late", "10.9.9.9:5000", IID_B);
        assert_eq!(f.roster.delta_delay(base), base);
        for i in 0..50 {
            let host = format!("10.0.0.{i}:5000");
            join_pigeon(&mut f, &format!("p{i}"), &host, InstanceId(i + 100));
        }
        // 50 recipients at 100 µs each.
        assert_eq!(f.roster.delta_delay(base), Duration::from_millis(5));
        for i in 50..100 {
            let host = format!("10.0.0.{i}:5000");
            join_pigeon(&mut f, &format!("p{i}"), &host, InstanceId(i + 100));
        }
        assert_eq!(f.roster.delta_delay(base), Duration::from_millis(7));
        assert_eq!(
            f.roster.delta_delay(Duration::from_millis(80)),
            Duration::from_millis(80)
        );
    }

    #[test]
    fn directory_snapshots_are_sorted_by_name_and_follow_every_change() {
        use pigeon_shared::roster_snapshot::decode_frame;
        use pigeon_shared::RosterSnapshot;
        let names = |rendered: &Rendered| -> Vec<String> {
            let (text, _) = decode_frame(&rendered.bytes, 1 << 20).unwrap().unwrap();
            RosterSnapshot::parse(&text)
                .unwrap()
                .entries
                .iter()
                .map(|e| e.name.to_string())
                .collect()
        };
        let mut f = fixture();
        for (i, who) in ["mallory", "bob", "zoe", "alice", "carol"]
            .iter()
            .enumerate()
        {
            let host = format!("10.0.0.{}:5000", i + 1);
            f.roster.login(seed_login(who, &host), sock(&host), f.t0);
        }
        let first = f.directory.encode(RosterFormat::Pigeon);
        assert_eq!(names(&first), ["alice", "bob", "carol", "mallory", "zoe"]);
        // Asked again at the same revision: the same bytes, not a copy.
        let again = f.directory.encode(RosterFormat::Pigeon);
        assert!(Arc::ptr_eq(&first.bytes, &again.bytes));
        // Any change makes a new one.
        let bob = Logout {
            name: name("bob"),
            endpoint: addr("10.0.0.2:5000"),
            pigeon: None,
        };
        f.roster.logout(bob, sock("10.0.0.2:5000"));
        let after = f.directory.encode(RosterFormat::Pigeon);
        assert_eq!(after.revision, first.revision + 1);
        assert_eq!(names(&after), ["alice", "carol", "mallory", "zoe"]);
    }

    #[test]
    fn the_directory_snapshot_reports_its_revision() {
        let mut f = fixture();
        join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
        f.roster.login(
            seed_login("old", "10.0.0.9:5000"),
            sock("10.0.0.9:5000"),
            f.t0,
        );
        let (revision, mut users) = f.directory.snapshot();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(revision, 2);
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].1.instance, Some(IID_A));
        assert_eq!(users[1].1.instance, None);
    }
}
