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
use std::sync::Arc;
use std::time::{Duration, Instant};

use pigeon_shared::handshake::{self, Hello, Reply, REPLY_BYTES};
use pigeon_shared::rate_limit::{Bucket, Rate};
use pigeon_shared::seal::{SessionKey, SEAL_OVERHEAD};
use pigeon_shared::{
    same_host, Accept, AcceptExt, Bye, Closing, Datagram, Delta, Expired, InstanceId, Login,
    Logout, Meet, PeerAddr, Ping, Pong, Punch, RefuseReason, Refused, Revision, RosterChange,
    SessionToken, UserName,
};
use pigeon_shared::{Identity, PublicKey};
use pigeon_shared::{Nonce, PIGEON_TAG};
use rand::rngs::StdRng;
use rand::Rng;

use crate::directory::{Directory, DirectoryEntry, SessionSecrets};

/// Limits and settings of a roster.
#[derive(Debug, Clone)]
pub struct RosterConfig {
    /// The server's key pair: its side of every login handshake.
    pub identity: Identity,
    /// Seed-format roster port, announced in `Accept`.
    pub tcp_port: u16,
    /// Pigeon-format roster port, announced in Pigeon's `Accept` extension.
    pub roster_port: u16,
    /// Most users online at once; further logins are refused `server-full`.
    pub max_users: usize,
    /// Most users online from one host; further logins from it are refused
    /// `host-full`.
    pub max_users_per_host: usize,
    /// Most seed-era users online (they send no keepalives and are never
    /// evicted); further seed-style logins are refused `server-full`.
    pub max_seed_users: usize,
    /// How long a seed-style session waits for its host to fetch the
    /// roster over TCP (which no forged source can do); unconfirmed, it
    /// gets no broadcasts, and after this it is gone.
    pub seed_confirm_window: Duration,
    /// A Pigeon client not heard from for this long is evicted. Clients are
    /// told to send keepalives six times as often, so that even at 20% loss
    /// a live client is evicted only if six keepalives in a row are lost
    /// (odds of 1 in 15,000).
    pub liveness_timeout: Duration,
    /// Largest `delta` datagram, in bytes of UTF-16 text.
    pub max_delta_bytes: usize,
    /// How long roster changes wait to share a `delta` (zero: each change
    /// goes out at once, in a delta of its own).
    pub delta_delay: Duration,
    /// Time each delta recipient adds to the wait before a `delta`
    /// broadcast (see [`Roster::delta_delay`]).
    pub delta_wait_per_recipient: Duration,
    /// Longest wait before pending roster changes are sent.
    pub max_delta_delay: Duration,
    /// End-to-end frames relayed per Pigeon session per second (announced
    /// in `Accept`); `None`: no relay.
    pub relay_rate: Option<u32>,
    /// Most names registered in all; past it, new names stay unregistered
    /// (their users chat as usual; the name is registered at a later
    /// login once there is room).
    pub max_registered: usize,
    /// New names one host may register in an hour (a burst of as many,
    /// then one every 3,600 / N seconds); past it, as above.
    pub registrations_per_host: u32,
}

/// Default for [`RosterConfig::max_registered`].
pub const DEFAULT_MAX_REGISTERED: usize = 1_000_000;
/// Default for [`RosterConfig::registrations_per_host`].
pub const DEFAULT_REGISTRATIONS_PER_HOST: u32 = 100;

/// Default for [`RosterConfig::relay_rate`].
pub const DEFAULT_RELAY_RATE: u32 = 20;
/// Default for [`RosterConfig::max_users`].
pub const DEFAULT_MAX_USERS: usize = 10_000;
/// Default for [`RosterConfig::seed_confirm_window`].
pub const DEFAULT_SEED_CONFIRM_WINDOW: Duration = Duration::from_secs(10);
/// Default for [`RosterConfig::max_users_per_host`].
pub const DEFAULT_MAX_USERS_PER_HOST: usize = 256;
/// Default for [`RosterConfig::liveness_timeout`].
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`RosterConfig::delta_delay`].
pub const DEFAULT_DELTA_DELAY: Duration = Duration::from_millis(2);
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
    /// Defaults, with a new key pair.
    pub fn new(tcp_port: u16, roster_port: u16) -> Self {
        Self {
            identity: Identity::generate(),
            tcp_port,
            roster_port,
            max_users: DEFAULT_MAX_USERS,
            max_users_per_host: DEFAULT_MAX_USERS_PER_HOST,
            max_seed_users: DEFAULT_MAX_USERS / 2,
            seed_confirm_window: DEFAULT_SEED_CONFIRM_WINDOW,
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
            max_delta_bytes: DEFAULT_MAX_DELTA_BYTES,
            delta_delay: DEFAULT_DELTA_DELAY,
            delta_wait_per_recipient: DEFAULT_DELTA_WAIT_PER_RECIPIENT,
            max_delta_delay: DEFAULT_MAX_DELTA_DELAY,
            relay_rate: Some(DEFAULT_RELAY_RATE),
            max_registered: DEFAULT_MAX_REGISTERED,
            registrations_per_host: DEFAULT_REGISTRATIONS_PER_HOST,
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
    /// Where the server sees the user: for a Pigeon client behind a NAT,
    /// its public endpoint, not the one it claimed.
    endpoint: PeerAddr,
    /// The endpoint a Pigeon client behind a NAT claimed (its address on
    /// its own network): told only to a peer behind the same public
    /// address, when the two meet.
    local: Option<PeerAddr>,
    session: Session,
    last_seen: Instant,
    /// Meetings this user may still ask for ([`MEET_RATE`]).
    meets: Bucket,
    /// Whether the client proved it receives: a Pigeon client fetched the
    /// Pigeon roster with its token (and so gets deltas from then on); a
    /// seed-era client's host fetched the seed roster (and so gets
    /// broadcasts from then on).
    synced: bool,
}

// Nearly every user is a Pigeon session: boxing its fields would cost an
// allocation per user and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
enum Session {
    Seed,
    Pigeon {
        instance: InstanceId,
        token: SessionToken,
        /// What everything sent to it after `Accept` is sealed with; none
        /// for a client from before sealing (its login has no nonce),
        /// which is sent everything plain.
        key: Option<SessionKey>,
        /// The key the client logged in with (none for a client from
        /// before keys); proved once it names its token.
        client_key: Option<PublicKey>,
        /// The hello answered (with its login's nonce) and the answer, to
        /// repeat the same answer to a repeated login.
        answered: Option<(Asked, Reply)>,
        /// A handshake the client started over while the session runs.
        rekey: Option<Rekey>,
    },
}

/// The answer to a login's hello computed ahead (see
/// [`Roster::login_prepared`]): the token it carries and the answer, or why
/// the hello does not read.
pub type Prepared = Result<(SessionToken, handshake::Answered), String>;

/// A login's hello and nonce: a login repeated with both (its answer was
/// lost) gets the same answer; a new nonce is a new round.
type Asked = (Hello, Option<Nonce>);

/// The answer to a handshake started over during a session, with the token
/// and key the session moves to once the client names that token: only the
/// holder of the client's key can read it, so a login forged from the
/// client's address cannot move the session away from the client.
#[derive(Debug, Clone, Copy)]
struct Rekey {
    hello: Asked,
    reply: Reply,
    token: SessionToken,
    key: SessionKey,
}

impl Session {
    fn instance(self) -> Option<InstanceId> {
        match self {
            Self::Seed => None,
            Self::Pigeon { instance, .. } => Some(instance),
        }
    }

    /// The key the client logged in with, as the roster lists it. Listed
    /// before it is proved (its session proves it by naming its token, or
    /// is evicted soon): a key is only ever a key to encrypt to, which
    /// nobody but its holder can use.
    fn client_key(self) -> Option<PublicKey> {
        match self {
            Self::Seed => None,
            Self::Pigeon { client_key, .. } => client_key,
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
    /// When pending changes go out as deltas.
    delta_due: Option<Instant>,
    /// When to look for sessions to end (while any may have to).
    next_sweep: Option<Instant>,
    /// Seed-style sessions online.
    seed_count: usize,
    /// Registered names and their keys: a name is registered to the key of
    /// the first session under it that proved it holds its key.
    registry: HashMap<UserName, PublicKey>,
    /// New names each host may still register (see
    /// [`RosterConfig::registrations_per_host`]).
    registrations: HashMap<IpAddr, Bucket>,
    /// Users online through other servers of a cluster: listed here (in
    /// snapshots and deltas) and holding their names and endpoints, but
    /// with no session on this server.
    remote: HashMap<UserName, RemoteUser>,
}

/// A user online through another server of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUser {
    pub endpoint: PeerAddr,
    pub instance: Option<InstanceId>,
    pub key: Option<PublicKey>,
    /// The id of the server it is logged in to.
    pub server: Arc<str>,
}

/// How many meetings one user may ask for: a conversation asks when it
/// starts looking for a direct path.
pub const MEET_RATE: Rate = Rate {
    per_second: 5.0,
    burst: 20.0,
};

/// Why a request to meet was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeetRefusal {
    /// Not a session here (name, token or source wrong).
    NotASession,
    /// The peer is not online, or either side is not a synced Pigeon
    /// session with a key.
    NoSuchPeer,
    /// The request is smaller than its answer would be.
    Short,
    /// Over [`MEET_RATE`].
    OverRate,
}

impl MeetRefusal {
    /// The reason as logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotASession => "not-a-session",
            Self::NoSuchPeer => "no-such-peer",
            Self::Short => "short",
            Self::OverRate => "over-rate",
        }
    }
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
    /// Send one datagram to one Pigeon session, sealed with its key (plain
    /// to a client from before sealing, which has none).
    SendSealed {
        to: SocketAddr,
        datagram: Datagram,
        key: Option<SessionKey>,
    },
    /// Send the same datagram to each of these Pigeon sessions, each copy
    /// sealed with its session's key (or plain, as above).
    BroadcastSealed {
        to: Vec<(SocketAddr, Option<SessionKey>)>,
        datagram: Datagram,
    },
    /// Tell subscribers.
    Publish(RosterEvent),
    /// Keep, durably, that `name` is registered to `key`.
    Register { name: UserName, key: PublicKey },
    /// A session proved its key under a free name, which stays unregistered
    /// for now (to be logged and counted).
    NotRegistered { name: UserName, why: NotRegistered },
    /// Have the cluster's `server` tell its user `punch.to` where to probe.
    PunchElsewhere {
        server: Arc<str>,
        punch: RemotePunch,
    },
}

/// A meeting arranged by one server of a cluster for a user of another:
/// `to` is to probe `peer` at `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePunch {
    pub to: UserName,
    pub peer: UserName,
    pub endpoint: PeerAddr,
}

impl RemotePunch {
    /// As published to the other server: `<to> <peer> <endpoint>`.
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.to, self.peer, self.endpoint)
    }

    /// What [`RemotePunch::encode`] wrote, or `None`.
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let punch = Self {
            to: UserName::parse(parts.next()?).ok()?,
            peer: UserName::parse(parts.next()?).ok()?,
            endpoint: PeerAddr::parse(parts.next()?).ok()?,
        };
        parts.next().is_none().then_some(punch)
    }
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
    /// A seed-style session whose host never fetched the roster.
    Unconfirmed,
}

impl LeaveReason {
    /// Every reason.
    pub const ALL: [Self; 3] = [Self::LoggedOut, Self::Evicted, Self::Unconfirmed];

    /// A short name (a metric's label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoggedOut => "logged-out",
            Self::Evicted => "evicted",
            Self::Unconfirmed => "unconfirmed",
        }
    }

    /// This reason's place in [`Self::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::LoggedOut => 0,
            Self::Evicted => 1,
            Self::Unconfirmed => 2,
        }
    }
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

/// Why a name proved under a free name was not registered (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRegistered {
    /// As many names are registered as the server keeps.
    RegistryFull,
    /// The session's host registered its share of new names this hour.
    HostRate,
}

impl NotRegistered {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RegistryFull => "registry-full",
            Self::HostRate => "host-rate",
        }
    }
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

impl SessionDecision {
    /// Why a datagram was ignored, as a metric's label (`None`: it was
    /// not).
    pub fn ignored_as(&self) -> Option<&'static str> {
        match self {
            Self::Done => None,
            Self::UnknownUser => Some("unknown-user"),
            Self::EndpointMismatch { .. } => Some("endpoint-mismatch"),
            Self::WrongSource { .. } => Some("wrong-source"),
            Self::BadToken => Some("bad-token"),
        }
    }
}

impl Roster {
    /// An empty roster writing through to `directory`, drawing session
    /// tokens from `rng`.
    pub fn new(config: RosterConfig, directory: Arc<Directory>, rng: StdRng) -> Self {
        Self::with_registry(config, directory, rng, HashMap::new())
    }

    /// An empty roster that knows the names registered so far.
    pub fn with_registry(
        config: RosterConfig,
        directory: Arc<Directory>,
        rng: StdRng,
        registry: HashMap<UserName, PublicKey>,
    ) -> Self {
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
            delta_due: None,
            next_sweep: None,
            seed_count: 0,
            registry,
            registrations: HashMap::new(),
            remote: HashMap::new(),
        }
    }

    /// The rate of [`RosterConfig::registrations_per_host`].
    fn registration_rate(&self) -> Rate {
        let per_hour = f64::from(self.config.registrations_per_host.max(1));
        Rate {
            per_second: per_hour / 3600.0,
            burst: per_hour,
        }
    }

    /// Whether a session at `host` may register a new name at `now`
    /// (taking one of its host's registrations if so), or why not.
    fn may_register(&mut self, host: IpAddr, now: Instant) -> Result<(), NotRegistered> {
        if self.registry.len() >= self.config.max_registered {
            return Err(NotRegistered::RegistryFull);
        }
        let rate = self.registration_rate();
        // Hosts whose budget is whole again are forgotten; past four
        // times the users a server takes, a host not yet listed waits.
        let host = host.to_canonical();
        if self.registrations.len() > self.config.max_users {
            self.registrations
                .retain(|_, bucket| !bucket.is_full(rate, now));
        }
        if self.registrations.len() >= self.config.max_users.saturating_mul(4)
            && !self.registrations.contains_key(&host)
        {
            return Err(NotRegistered::HostRate);
        }
        let bucket = self
            .registrations
            .entry(host)
            .or_insert_with(|| Bucket::full(rate, now));
        if bucket.take(rate, now) {
            Ok(())
        } else {
            Err(NotRegistered::HostRate)
        }
    }

    /// Another server of the cluster says `name` is online through it:
    /// listed (and told to this server's users) unless the name or the
    /// endpoint is held by a session here, which keeps it (the first to
    /// log in wins; a login through two servers at once can end with
    /// both, each keeping its own).
    pub fn remote_joined(
        &mut self,
        name: UserName,
        user: RemoteUser,
        now: Instant,
    ) -> Vec<RosterAction> {
        if self.users.contains_key(&name) {
            return Vec::new();
        }
        if let Some(held) = self.remote.get(&name) {
            if *held == user {
                return Vec::new();
            }
            // Moved (or logged in again elsewhere): the old entry goes.
            let server = held.server.clone();
            let mut actions = self.remote_left(&name, &server, now);
            actions.extend(self.remote_joined(name, user, now));
            return actions;
        }
        if self.by_endpoint.contains_key(&user.endpoint) {
            return Vec::new();
        }
        let endpoint = user.endpoint;
        self.by_endpoint.insert(endpoint, name.clone());
        let entry = DirectoryEntry {
            endpoint,
            instance: user.instance,
            key: user.key,
        };
        self.directory
            .insert_remote(name.clone(), entry, user.server.clone());
        let change = RosterChange::Joined {
            name: name.clone(),
            endpoint,
            instance: user.instance,
            key: user.key,
        };
        self.remote.insert(name.clone(), user);
        let mut actions = Vec::new();
        actions.extend(self.seed_news(
            &name,
            Datagram::Login(Login {
                name: name.clone(),
                endpoint,
                pigeon: None,
            }),
        ));
        self.record(change);
        self.schedule_deltas(now, &mut actions);
        actions
    }

    /// Another server of the cluster says `name`, online through it, left
    /// (only what that server listed goes).
    pub fn remote_left(
        &mut self,
        name: &UserName,
        server: &str,
        now: Instant,
    ) -> Vec<RosterAction> {
        if self
            .remote
            .get(name)
            .is_none_or(|user| &*user.server != server)
        {
            return Vec::new();
        }
        let Some(user) = self.remote.remove(name) else {
            return Vec::new();
        };
        let mut actions = self.unlist(name, user.endpoint);
        self.schedule_deltas(now, &mut actions);
        actions
    }

    /// Another server of the cluster is gone: every user online through
    /// it leaves. The names that left.
    pub fn server_gone(
        &mut self,
        server: &str,
        now: Instant,
    ) -> (Vec<UserName>, Vec<RosterAction>) {
        let mut names: Vec<UserName> = self
            .remote
            .iter()
            .filter(|(_, user)| &*user.server == server)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        let mut actions = Vec::new();
        for name in &names {
            actions.extend(self.remote_left(name, server, now));
        }
        (names, actions)
    }

    /// What the directory lists for `name`, if online.
    pub fn entry_of(&self, name: &str) -> Option<DirectoryEntry> {
        self.directory.get(name)
    }

    /// The users online through this server, with what the directory
    /// lists for them, sorted by name.
    pub fn local_users(&self) -> Vec<(UserName, DirectoryEntry)> {
        let mut local: Vec<(UserName, DirectoryEntry)> = self
            .users
            .keys()
            .filter_map(|name| Some((name.clone(), self.directory.get(name.as_str())?)))
            .collect();
        local.sort_by(|a, b| a.0.cmp(&b.0));
        local
    }

    /// The users online through other servers are `present` (read afresh
    /// from the cluster): any other listed here left. The names that left.
    pub fn remote_present(
        &mut self,
        present: &[UserName],
        now: Instant,
    ) -> (Vec<UserName>, Vec<RosterAction>) {
        let present: std::collections::HashSet<&UserName> = present.iter().collect();
        let mut missing: Vec<(UserName, Arc<str>)> = self
            .remote
            .iter()
            .filter(|(name, _)| !present.contains(name))
            .map(|(name, user)| (name.clone(), user.server.clone()))
            .collect();
        missing.sort();
        let mut actions = Vec::new();
        for (name, server) in &missing {
            actions.extend(self.remote_left(name, server, now));
        }
        (missing.into_iter().map(|(name, _)| name).collect(), actions)
    }

    /// Users online through other servers.
    pub fn remote_users(&self) -> &HashMap<UserName, RemoteUser> {
        &self.remote
    }

    /// Another server of the cluster registered `name` to `key`: this one
    /// holds the name to it too (the first registration anywhere wins).
    pub fn remote_registered(&mut self, name: UserName, key: PublicKey) {
        self.registry.entry(name).or_insert(key);
    }

    /// Every registered name with its key.
    pub fn registry(&self) -> &HashMap<UserName, PublicKey> {
        &self.registry
    }

    /// The key `name` is registered to, if any.
    pub fn registered(&self, name: &str) -> Option<PublicKey> {
        self.registry.get(name).copied()
    }

    /// When [`Roster::handle_timeout`] is next due, if at all: pending
    /// changes to send, or a sweep for clients to evict.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.delta_due, self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Does what is due at `now`: sends the pending changes, evicts the
    /// Pigeon clients not heard from within the liveness timeout.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<RosterAction> {
        let mut actions = Vec::new();
        if self.next_sweep.is_some_and(|at| now >= at) {
            let (_, evicted) = self.expire(now);
            actions.extend(evicted);
            self.next_sweep = self
                .has_sessions_to_watch()
                .then(|| now + self.config.sweep_interval());
        }
        if self.delta_due.is_some_and(|at| now >= at) {
            actions.extend(self.flush_deltas());
        }
        self.schedule_deltas(now, &mut actions);
        actions
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
        self.login_prepared(login, source, now, None)
    }

    /// [`Roster::login`], with the answer to the login's hello computed
    /// already (by the server's handshake threads, so that the roster's
    /// thread does no key agreement): its token and answer, or why the
    /// hello does not read. Used if the login needs a new answer.
    pub fn login_prepared(
        &mut self,
        login: Login,
        source: SocketAddr,
        now: Instant,
        mut prepared: Option<Prepared>,
    ) -> (LoginDecision, Vec<RosterAction>) {
        // How large the login was: nothing sent back before the sender
        // proves it listens may be larger.
        let asked = Datagram::Login(login.clone()).encoded_len();
        let Login {
            name,
            endpoint,
            pigeon,
        } = login;
        // A Pigeon login's nonce: the answer echoes it.
        let nonce = pigeon.and_then(|ext| ext.nonce);
        let refused = |reason, detail| refuse(reason, detail, endpoint, source, asked, nonce);
        if let Err(problem) = endpoint.check_usable() {
            let detail = format!("endpoint {endpoint} cannot receive: {problem}");
            return refused(RefuseReason::BadEndpoint, detail);
        }
        if pigeon.is_none() && !same_host(endpoint.socket_addr().ip(), source.ip()) {
            let detail = format!(
                "endpoint {endpoint} is not on the sender's address {}",
                source.ip().to_canonical()
            );
            return refused(RefuseReason::BadEndpoint, detail);
        }
        // A Pigeon client logs in from its receive endpoint: its session is
        // where the login came from (behind a NAT, its public endpoint, not
        // the one it claimed, which its login handshake still names).
        // Nobody else can claim an endpoint in its name.
        let asked_at = endpoint;
        let observed = PeerAddr::from(SocketAddr::new(source.ip().to_canonical(), source.port()));
        let (endpoint, local) = match pigeon {
            Some(_) if observed != asked_at => {
                if let Err(problem) = observed.check_usable() {
                    let detail = format!("source {observed} cannot receive: {problem}");
                    return refused(RefuseReason::BadEndpoint, detail);
                }
                (observed, Some(asked_at))
            }
            _ => (endpoint, None),
        };
        // The Pigeon `Accept` is not sent to an endpoint that has proved
        // nothing yet unless it is no larger than the login (a Pigeon
        // client pads its login).
        if let Some(ext) = pigeon {
            // Every token is as long as any other, every answer too.
            let any = Session::Pigeon {
                instance: InstanceId(0),
                token: SessionToken(0),
                key: None,
                client_key: None,
                answered: ext.hello.map(|hello| ((hello, nonce), [0; REPLY_BYTES])),
                rekey: None,
            };
            let needed = self.accept_datagram(any, nonce).encoded_len();
            if needed > asked {
                let detail = format!("pad the login to {needed} bytes (newer clients do)");
                return refused(RefuseReason::ShortLogin, detail);
            }
        }
        // The key the login claims; proved later, when its session names
        // the token only that key's holder could read.
        let claimed = pigeon.and_then(|ext| ext.hello).map(|hello| key_of(&hello));
        if let Some(registered) = self.registry.get(&name) {
            if claimed != Some(*registered) {
                let detail = format!(
                    "{name} is registered to the key {}",
                    registered.fingerprint()
                );
                return refused(RefuseReason::NameRegistered, detail);
            }
        }
        if let Some(token) = pigeon.and_then(|ext| ext.token) {
            self.take_up_token(&name, token);
        }
        let next_token = SessionToken(self.rng.random());
        if let Some(user) = self.users.get_mut(&name) {
            let same_session = match (user.session, pigeon) {
                (Session::Seed, None) => true,
                (
                    Session::Pigeon {
                        instance,
                        token,
                        client_key,
                        ..
                    },
                    Some(ext),
                ) => {
                    ext.instance == instance
                        && ext.token.is_none_or(|t| t == token)
                        && client_key == claimed
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
                // A new hello (the client started over) gets a new answer,
                // with the token the session moves to when the client names
                // it; until then the session keeps its token and key.
                let mut shown = user.session;
                if let (
                    Session::Pigeon {
                        answered, rekey, ..
                    },
                    Some(hello),
                ) = (&mut user.session, pigeon.and_then(|ext| ext.hello))
                {
                    let asked = (hello, nonce);
                    let known = answered.is_some_and(|(seen, _)| seen == asked);
                    if !known && rekey.is_none_or(|r| r.hello != asked) {
                        let answered = prepared.take().unwrap_or_else(|| {
                            answer_with(
                                &self.config.identity,
                                &name,
                                asked_at,
                                nonce,
                                &hello,
                                next_token,
                            )
                        });
                        match answered {
                            Ok((next_token, answer)) => {
                                *rekey = Some(Rekey {
                                    hello: asked,
                                    reply: answer.reply,
                                    token: next_token,
                                    key: answer.key,
                                });
                                self.directory.offer_token(
                                    &name,
                                    SessionSecrets {
                                        token: next_token,
                                        key: Some(answer.key),
                                    },
                                );
                            }
                            Err(detail) => return refused(RefuseReason::BadHandshake, detail),
                        }
                    }
                    if let (
                        Session::Pigeon {
                            answered: shown, ..
                        },
                        Some(offer),
                    ) = (&mut shown, rekey.filter(|r| r.hello == asked))
                    {
                        *shown = Some((offer.hello, offer.reply));
                    }
                }
                if matches!(shown, Session::Seed) {
                    self.directory.seed_login(source.ip().to_canonical(), now);
                }
                let accept = self.accept(endpoint, shown, nonce, asked);
                return (LoginDecision::Refreshed, vec![accept]);
            }
            let detail = format!("{name} is already online");
            return refused(RefuseReason::NameTaken, detail);
        }
        if let Some(user) = self.remote.get(&name) {
            let detail = format!("{name} is already online (through server {})", user.server);
            return refused(RefuseReason::NameTaken, detail);
        }
        if let Some(holder) = self.by_endpoint.get(&endpoint) {
            let detail = format!("{holder} is already online at {endpoint}");
            return refused(RefuseReason::EndpointTaken, detail);
        }
        if self.users.len() >= self.config.max_users {
            let detail = format!("{} users are online, the most allowed", self.users.len());
            return refused(RefuseReason::ServerFull, detail);
        }
        if pigeon.is_none() && self.seed_count >= self.config.max_seed_users {
            let detail = format!(
                "{} seed-era users are online, the most allowed",
                self.seed_count
            );
            return refused(RefuseReason::ServerFull, detail);
        }
        let host = endpoint.canonical_ip();
        let on_host = self.per_host.get(&host).copied().unwrap_or(0);
        if on_host >= self.config.max_users_per_host {
            let detail = format!("{on_host} users are online from {host}, the most allowed");
            return refused(RefuseReason::HostFull, detail);
        }

        let session = match pigeon {
            Some(ext) => {
                let token = SessionToken(self.rng.random());
                match ext.hello {
                    Some(hello) => {
                        let answered = prepared.take().unwrap_or_else(|| {
                            answer_with(
                                &self.config.identity,
                                &name,
                                asked_at,
                                nonce,
                                &hello,
                                token,
                            )
                        });
                        match answered {
                            Ok((token, answer)) => Session::Pigeon {
                                instance: ext.instance,
                                token,
                                key: Some(answer.key),
                                client_key: Some(answer.client),
                                answered: Some(((hello, nonce), answer.reply)),
                                rekey: None,
                            },
                            Err(detail) => return refused(RefuseReason::BadHandshake, detail),
                        }
                    }
                    None => Session::Pigeon {
                        instance: ext.instance,
                        token,
                        key: ext.nonce.map(|_| SessionKey::from_token(token)),
                        client_key: None,
                        answered: None,
                        rekey: None,
                    },
                }
            }
            None => Session::Seed,
        };
        // Write through before the Accept goes out: a client fetches the
        // snapshot only after Accept, so it always finds itself and everyone
        // who joined before it.
        let mut actions = Vec::with_capacity(3);
        self.insert(name.clone(), endpoint, local, session, now);
        if matches!(session, Session::Seed) {
            // Its host may now fetch the seed-format roster, for a while.
            self.directory.seed_login(source.ip().to_canonical(), now);
        }
        actions.push(self.accept(endpoint, session, nonce, asked));
        let change = RosterChange::Joined {
            name: name.clone(),
            endpoint,
            instance: session.instance(),
            key: session.client_key(),
        };
        actions.extend(self.seed_news(
            &name,
            Datagram::Login(Login {
                name: name.clone(),
                endpoint,
                pigeon: None,
            }),
        ));
        self.record(change);
        actions.push(RosterAction::Publish(RosterEvent::Joined {
            name,
            endpoint,
        }));
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.config.sweep_interval());
        }
        self.schedule_deltas(now, &mut actions);
        (LoginDecision::Joined, actions)
    }

    /// Decides a logout that arrived from `source`: honoured only when the
    /// name, the endpoint and the sender's host match the user, and, for a
    /// Pigeon session, the token too.
    pub fn logout(
        &mut self,
        logout: Logout,
        source: SocketAddr,
        now: Instant,
    ) -> (SessionDecision, Vec<RosterAction>) {
        let Logout {
            name,
            endpoint,
            pigeon,
        } = logout;
        // A Pigeon client retries its logout until it hears `bye`; answer
        // even when the session is already gone (unsealed, then: its key is
        // gone with it).
        if let Some(ext) = pigeon {
            self.take_up_token(&name, ext.token);
        }
        // A Pigeon session is where its datagrams come from (behind a NAT,
        // not the endpoint its logout names); a seed-era one where it said.
        let endpoint = match pigeon {
            Some(_) => PeerAddr::new(source),
            None => endpoint,
        };
        let decision = self.check_session(&name, endpoint, source, pigeon.map(|e| e.token));
        if decision != SessionDecision::Done {
            let actions = match (decision.clone(), pigeon) {
                (SessionDecision::UnknownUser, Some(_)) => vec![RosterAction::Send {
                    to: source,
                    datagram: Datagram::Bye(Bye { name: name.clone() }),
                }],
                _ => Vec::new(),
            };
            return (decision, actions);
        }
        let bye = match self.users.get(&name).map(|user| user.session) {
            Some(Session::Pigeon { key, .. }) => Some(RosterAction::SendSealed {
                to: source,
                datagram: Datagram::Bye(Bye { name: name.clone() }),
                key,
            }),
            _ => None,
        };
        let mut actions = self.remove(&name, LeaveReason::LoggedOut);
        actions.extend(bye);
        self.schedule_deltas(now, &mut actions);
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
        let Ping { name, token, nonce } = ping;
        self.take_up_token(&name, token);
        // A Pigeon client pings from its receive endpoint, so the source
        // must be exactly the registered endpoint; seed-era sessions have
        // nothing to keep alive.
        let decision = match self.users.get(&name).map(|user| user.session) {
            Some(Session::Seed) => SessionDecision::BadToken,
            _ => self.check_session(&name, PeerAddr::new(source), source, Some(token)),
        };
        match decision {
            SessionDecision::Done => {
                let Some(user) = self.users.get_mut(&name) else {
                    return (SessionDecision::UnknownUser, Vec::new());
                };
                user.last_seen = now;
                let Session::Pigeon { key, .. } = user.session else {
                    return (SessionDecision::BadToken, Vec::new());
                };
                let pong = RosterAction::SendSealed {
                    to: source,
                    datagram: Datagram::Pong(Pong {
                        revision: self.revision,
                    }),
                    key,
                };
                (decision, vec![pong])
            }
            // Whatever is wrong, the answer goes only to the sender, and is
            // smaller than the ping: nothing to amplify. It echoes the
            // ping's nonce (there is no session key to seal it with).
            _ => {
                let expired = RosterAction::Send {
                    to: source,
                    datagram: Datagram::Expired(Expired { name, nonce }),
                };
                (decision, vec![expired])
            }
        }
    }

    /// Decides a request to meet (`len` bytes, from `source`): a synced
    /// Pigeon session with a key, from its own endpoint with its token,
    /// asking for another such user, within [`MEET_RATE`]; both are then
    /// told, sealed and at once, where to probe the other: its endpoint,
    /// and its local one too when both are behind the same public
    /// address. The answer to the sender is never larger than `len`.
    pub fn meet(
        &mut self,
        meet: Meet,
        source: SocketAddr,
        len: usize,
        now: Instant,
    ) -> Result<Vec<RosterAction>, MeetRefusal> {
        let Meet { name, token, peer } = meet;
        self.take_up_token(&name, token);
        if self.check_session(&name, PeerAddr::new(source), source, Some(token))
            != SessionDecision::Done
        {
            return Err(MeetRefusal::NotASession);
        }
        if peer == name {
            return Err(MeetRefusal::NoSuchPeer);
        }
        let meeting = |user: &User| match user.session {
            Session::Pigeon {
                key: Some(key),
                client_key: Some(_),
                ..
            } if user.synced => Some((Some(key), user.endpoint, user.local)),
            _ => None,
        };
        // A peer online through another server is told by that server
        // (its local endpoint stays there).
        let elsewhere = self
            .remote
            .get(&peer)
            .filter(|user| user.key.is_some())
            .map(|user| (None, user.endpoint, None));
        let (Some(asker), Some(asked)) = (
            self.users.get(&name).and_then(meeting),
            self.users.get(&peer).and_then(meeting).or(elsewhere),
        ) else {
            return Err(MeetRefusal::NoSuchPeer);
        };
        let (Some(asker_key), asker_at, asker_local) = asker else {
            return Err(MeetRefusal::NoSuchPeer);
        };
        let (asked_key, asked_at, asked_local) = asked;
        let shared = asker_at.canonical_ip() == asked_at.canonical_ip();
        let to_asker = Datagram::Punch(Punch {
            peer: peer.clone(),
            endpoint: asked_at,
            local: asked_local.filter(|_| shared),
        });
        if to_asker.encoded_len() + SEAL_OVERHEAD > len {
            return Err(MeetRefusal::Short);
        }
        let within = self
            .users
            .get_mut(&name)
            .is_some_and(|user| user.meets.take(MEET_RATE, now));
        if !within {
            return Err(MeetRefusal::OverRate);
        }
        let to_asker = RosterAction::SendSealed {
            to: asker_at.socket_addr(),
            datagram: to_asker,
            key: Some(asker_key),
        };
        let to_asked = match (asked_key, self.remote.get(&peer)) {
            (Some(key), _) => RosterAction::SendSealed {
                to: asked_at.socket_addr(),
                datagram: Datagram::Punch(Punch {
                    peer: name,
                    endpoint: asker_at,
                    local: asker_local.filter(|_| shared),
                }),
                key: Some(key),
            },
            (None, Some(remote)) => RosterAction::PunchElsewhere {
                server: remote.server.clone(),
                punch: RemotePunch {
                    to: peer,
                    peer: name,
                    endpoint: asker_at,
                },
            },
            (None, None) => return Err(MeetRefusal::NoSuchPeer),
        };
        Ok(vec![to_asker, to_asked])
    }

    /// Another server of the cluster arranged a meeting of one of its
    /// users with `punch.to`, online here: told where to probe (if it is
    /// a synced Pigeon session with a key).
    pub fn punch_from_elsewhere(&self, punch: RemotePunch) -> Option<RosterAction> {
        let user = self.users.get(&punch.to)?;
        match user.session {
            Session::Pigeon {
                key: Some(key),
                client_key: Some(_),
                ..
            } if user.synced => Some(RosterAction::SendSealed {
                to: user.endpoint.socket_addr(),
                datagram: Datagram::Punch(Punch {
                    peer: punch.peer,
                    endpoint: punch.endpoint,
                    local: None,
                }),
                key: Some(key),
            }),
            _ => None,
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
        now: Instant,
    ) -> (SessionDecision, Vec<RosterAction>) {
        self.take_up_token(name, token);
        let Some(user) = self.users.get_mut(name) else {
            return (SessionDecision::UnknownUser, Vec::new());
        };
        let (key, client_key) = match user.session {
            Session::Pigeon {
                token: expected,
                key,
                client_key,
                ..
            } if expected == token => (key, client_key),
            _ => return (SessionDecision::BadToken, Vec::new()),
        };
        user.synced = true;
        self.directory.mark_receiving(name);
        let to = user.endpoint.socket_addr();
        // Naming the token proves the key: only its holder could read it.
        // The first session under a free name to prove its key registers
        // the name to it.
        let mut registered = Vec::new();
        if let Some(client_key) = client_key {
            if !self.registry.contains_key(name) {
                match self.may_register(to.ip(), now) {
                    Ok(()) => {
                        self.registry.insert(name.clone(), client_key);
                        registered.push(RosterAction::Register {
                            name: name.clone(),
                            key: client_key,
                        });
                    }
                    Err(why) => registered.push(RosterAction::NotRegistered {
                        name: name.clone(),
                        why,
                    }),
                }
            }
        }
        if revision >= self.revision || revision < self.recent_from {
            return (SessionDecision::Done, registered);
        }
        let skip = usize::try_from(revision - self.recent_from).unwrap_or(usize::MAX);
        let missed: Vec<RosterChange> = self.recent.iter().skip(skip).cloned().collect();
        let mut actions = registered;
        actions.extend(
            chunk_changes(revision, &missed, self.config.max_delta_bytes)
                .into_iter()
                .map(|delta| RosterAction::SendSealed {
                    to,
                    datagram: Datagram::Delta(delta),
                    key,
                }),
        );
        (SessionDecision::Done, actions)
    }

    /// Evicts every Pigeon client not heard from within the liveness
    /// timeout, and every seed-style session whose host did not fetch the
    /// roster within the confirmation window. Confirmed seed-era clients
    /// send no keepalives and are never evicted.
    pub fn expire(&mut self, now: Instant) -> (Vec<UserName>, Vec<RosterAction>) {
        let timeout = self.config.liveness_timeout;
        let window = self.config.seed_confirm_window;
        let mut expired: Vec<(UserName, LeaveReason)> = self
            .users
            .iter()
            .filter_map(|(name, user)| {
                let idle = now.saturating_duration_since(user.last_seen);
                match user.session {
                    Session::Pigeon { .. } if idle > timeout => {
                        Some((name.clone(), LeaveReason::Evicted))
                    }
                    Session::Seed if !user.synced && idle > window => {
                        Some((name.clone(), LeaveReason::Unconfirmed))
                    }
                    _ => None,
                }
            })
            .collect();
        expired.sort_by(|a, b| a.0.cmp(&b.0));
        let mut actions = Vec::new();
        for (name, reason) in &expired {
            actions.extend(self.remove(name, *reason));
        }
        (expired.into_iter().map(|(name, _)| name).collect(), actions)
    }

    /// `host` fetched the seed-format roster, a snapshot at `revision`: its
    /// seed-style sessions have proved they listen, and get broadcasts from
    /// now on. Changes after `revision` that were broadcast while they
    /// waited are sent to them now, one seed datagram each, so that none
    /// falls between the snapshot and their first broadcast. How many were
    /// confirmed, and the sends.
    pub fn seed_fetched(&mut self, host: IpAddr, revision: Revision) -> (usize, Vec<RosterAction>) {
        let mut confirmed = Vec::new();
        for (name, user) in self.users.iter_mut() {
            if matches!(user.session, Session::Seed)
                && !user.synced
                && user.endpoint.canonical_ip() == host
            {
                user.synced = true;
                confirmed.push((name.clone(), user.endpoint.socket_addr()));
            }
        }
        let mut actions = Vec::new();
        if confirmed.is_empty() || revision >= self.revision || revision < self.recent_from {
            return (confirmed.len(), actions);
        }
        let skip = usize::try_from(revision - self.recent_from).unwrap_or(usize::MAX);
        for change in self.recent.iter().skip(skip) {
            let (subject, datagram) = match change {
                RosterChange::Joined { name, endpoint, .. } => (
                    name,
                    Datagram::Login(Login {
                        name: name.clone(),
                        endpoint: *endpoint,
                        pigeon: None,
                    }),
                ),
                RosterChange::Left { name, endpoint } => (
                    name,
                    Datagram::Logout(Logout {
                        name: name.clone(),
                        endpoint: *endpoint,
                        pigeon: None,
                    }),
                ),
            };
            let to: Vec<SocketAddr> = confirmed
                .iter()
                .filter(|(name, _)| name != subject)
                .map(|(_, addr)| *addr)
                .collect();
            if !to.is_empty() {
                actions.push(RosterAction::Broadcast { to, datagram });
            }
        }
        (confirmed.len(), actions)
    }

    /// The roster changes not yet sent to Pigeon clients, as `delta`
    /// datagrams of at most `max_delta_bytes` each, addressed to every
    /// Pigeon client online now. Due (see [`Roster::poll_timeout`]) a short
    /// delay after a change, so that a burst of changes shares datagrams;
    /// called directly only to send them early (the server is stopping).
    pub fn flush_deltas(&mut self) -> Vec<RosterAction> {
        self.delta_due = None;
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
            .map(|delta| RosterAction::BroadcastSealed {
                to: to.clone(),
                datagram: Datagram::Delta(delta),
            })
            .collect()
    }

    /// Whether changes wait to go out as deltas.
    pub fn has_pending_deltas(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Pending changes are due a little after `now` (see
    /// [`Roster::delta_delay`]), or, with no delay configured, go out at
    /// once into `actions`.
    fn schedule_deltas(&mut self, now: Instant, actions: &mut Vec<RosterAction>) {
        if self.pending.is_empty() || self.delta_due.is_some() {
            return;
        }
        if self.config.delta_delay.is_zero() {
            actions.extend(self.flush_deltas());
        } else {
            self.delta_due = Some(now + self.delta_delay(self.config.delta_delay));
        }
    }

    /// Whether any session may have to go: a Pigeon one (liveness), or a
    /// seed-style one not yet confirmed.
    fn has_sessions_to_watch(&self) -> bool {
        self.users.values().any(|user| match user.session {
            Session::Pigeon { .. } => true,
            Session::Seed => !user.synced,
        })
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
        (!to.is_empty()).then(|| RosterAction::BroadcastSealed {
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

    /// `mail` for `name`, if it is online as a Pigeon session that follows
    /// the roster (sealed with its key).
    pub fn mail_notice(&self, name: &str) -> Option<RosterAction> {
        let user = self.users.get(name).filter(|user| user.synced)?;
        match user.session {
            Session::Pigeon { key, .. } => Some(RosterAction::SendSealed {
                to: user.endpoint.socket_addr(),
                datagram: Datagram::Mail,
                key,
            }),
            Session::Seed => None,
        }
    }

    /// The endpoint of `name`, if online.
    pub fn endpoint_of(&self, name: &str) -> Option<PeerAddr> {
        self.users.get(name).map(|u| u.endpoint)
    }

    /// The client named the token its handshake started over was answered
    /// with: the session moves to it (and its key), and the old token is
    /// void. Anything else changes nothing.
    fn take_up_token(&mut self, name: &UserName, named: SessionToken) {
        let Some(user) = self.users.get_mut(name) else {
            return;
        };
        if let Session::Pigeon {
            token,
            key,
            answered,
            rekey,
            ..
        } = &mut user.session
        {
            if let Some(offer) = rekey.filter(|r| r.token == named) {
                *token = offer.token;
                *key = Some(offer.key);
                *answered = Some((offer.hello, offer.reply));
                *rekey = None;
                self.directory.move_token(
                    name,
                    SessionSecrets {
                        token: offer.token,
                        key: Some(offer.key),
                    },
                );
            }
        }
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

    fn insert(
        &mut self,
        name: UserName,
        endpoint: PeerAddr,
        local: Option<PeerAddr>,
        session: Session,
        now: Instant,
    ) {
        *self.per_host.entry(endpoint.canonical_ip()).or_insert(0) += 1;
        if matches!(session, Session::Seed) {
            self.seed_count += 1;
        }
        self.by_endpoint.insert(endpoint, name.clone());
        let entry = DirectoryEntry {
            endpoint,
            instance: session.instance(),
            key: session.client_key(),
        };
        let secrets = match session {
            Session::Pigeon { token, key, .. } => Some(SessionSecrets { token, key }),
            Session::Seed => None,
        };
        self.directory.insert(name.clone(), entry, secrets);
        self.users.insert(
            name,
            User {
                endpoint,
                local,
                session,
                last_seen: now,
                meets: Bucket::full(MEET_RATE, now),
                synced: false,
            },
        );
    }

    fn remove(&mut self, name: &UserName, reason: LeaveReason) -> Vec<RosterAction> {
        let Some(user) = self.users.remove(name) else {
            return Vec::new();
        };
        let endpoint = user.endpoint;
        if matches!(user.session, Session::Seed) {
            self.seed_count = self.seed_count.saturating_sub(1);
        }
        let host = endpoint.canonical_ip();
        if let Some(count) = self.per_host.get_mut(&host) {
            *count -= 1;
            if *count == 0 {
                self.per_host.remove(&host);
            }
        }
        let mut actions = self.unlist(name, endpoint);
        actions.push(RosterAction::Publish(RosterEvent::Left {
            name: name.clone(),
            endpoint,
            reason,
        }));
        actions
    }

    /// `name`, at `endpoint`, is no longer listed (a user of this server or
    /// of another): off the endpoint index and the directory, seed-era
    /// users told, and the change recorded for the next delta.
    fn unlist(&mut self, name: &UserName, endpoint: PeerAddr) -> Vec<RosterAction> {
        self.by_endpoint.remove(&endpoint);
        self.directory.remove(name.as_str());
        let mut actions = Vec::with_capacity(2);
        actions.extend(self.seed_news(
            name,
            Datagram::Logout(Logout {
                name: name.clone(),
                endpoint,
                pigeon: None,
            }),
        ));
        self.record(RosterChange::Left {
            name: name.clone(),
            endpoint,
        });
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
        self.directory.set_revision(self.revision);
        if self.recent.len() == MAX_RECENT {
            self.recent.pop_front();
            self.recent_from += 1;
        }
        self.recent.push_back(change.clone());
        self.pending.push(change);
    }

    /// The `Accept` for a login of `asked` bytes: with the client's public
    /// endpoint and the relay's rate where they fit in that (a client from
    /// before them pads less, and needs neither).
    fn accept(
        &self,
        endpoint: PeerAddr,
        session: Session,
        nonce: Option<Nonce>,
        asked: usize,
    ) -> RosterAction {
        let mut datagram = self.accept_datagram(session, nonce);
        if let Datagram::Accept(Accept {
            pigeon: Some(ext), ..
        }) = &mut datagram
        {
            if ext.nonce.is_some() {
                let plain = *ext;
                ext.public = Some(endpoint);
                ext.relay = self.config.relay_rate;
                if datagram.encoded_len() > asked {
                    datagram = Datagram::Accept(Accept {
                        tcp_port: self.config.tcp_port,
                        pigeon: Some(plain),
                    });
                }
            }
        }
        RosterAction::Send {
            to: endpoint.socket_addr(),
            datagram,
        }
    }

    fn accept_datagram(&self, session: Session, nonce: Option<Nonce>) -> Datagram {
        let pigeon = match session {
            Session::Seed => None,
            Session::Pigeon {
                token, answered, ..
            } => Some(AcceptExt {
                nonce,
                roster_port: self.config.roster_port,
                // With a handshake, the token goes encrypted in its reply.
                token: answered.is_none().then_some(token),
                keepalive_ms: u32::try_from(self.config.keepalive_interval().as_millis())
                    .unwrap_or(u32::MAX),
                reply: answered.map(|(_, reply)| reply),
                public: None,
                relay: None,
            }),
        };
        Datagram::Accept(Accept {
            tcp_port: self.config.tcp_port,
            pigeon,
        })
    }

    /// `datagram` (a plain `login` or `logout` about `name`) for every
    /// other confirmed seed-era user, if there is one.
    fn seed_news(&self, name: &UserName, datagram: Datagram) -> Option<RosterAction> {
        let to = self.seed_addresses_except(name);
        (!to.is_empty()).then_some(RosterAction::Broadcast { to, datagram })
    }

    fn seed_addresses_except(&self, name: &UserName) -> Vec<SocketAddr> {
        self.users
            .iter()
            .filter(|(other, user)| {
                *other != name && user.synced && matches!(user.session, Session::Seed)
            })
            .map(|(_, user)| user.endpoint.socket_addr())
            .collect()
    }

    /// Pigeon clients that fetched the roster (those that follow deltas),
    /// with their sessions' keys.
    fn pigeon_addresses(&self) -> Vec<(SocketAddr, Option<SessionKey>)> {
        self.delta_recipients()
            .filter_map(|user| match user.session {
                Session::Pigeon { key, .. } => Some((user.endpoint.socket_addr(), key)),
                Session::Seed => None,
            })
            .collect()
    }

    /// The users that get `delta`s: Pigeon clients that fetched the roster.
    fn delta_recipients(&self) -> impl Iterator<Item = &User> {
        self.users
            .values()
            .filter(|user| user.synced && matches!(user.session, Session::Pigeon { .. }))
    }
}

/// The server's answer to `hello`, with `token` inside; a hello that does
/// not read, as the refusal's sentence.
pub fn answer_hello(
    identity: &Identity,
    name: &UserName,
    endpoint: PeerAddr,
    nonce: Option<Nonce>,
    hello: &Hello,
    token: SessionToken,
) -> Result<handshake::Answered, String> {
    handshake::answer(
        identity,
        name,
        endpoint,
        nonce.unwrap_or(Nonce(0)),
        hello,
        token,
    )
    .map_err(|e| format!("the login's handshake: {e}"))
}

/// The answer to `hello` with `token`, as a [`Prepared`] one.
pub fn answer_with(
    identity: &Identity,
    name: &UserName,
    endpoint: PeerAddr,
    nonce: Option<Nonce>,
    hello: &Hello,
    token: SessionToken,
) -> Prepared {
    answer_hello(identity, name, endpoint, nonce, hello, token).map(|answer| (token, answer))
}

/// The static key a hello claims (the hello is that key).
fn key_of(hello: &Hello) -> PublicKey {
    PublicKey(*hello)
}

/// Splits changes into `delta`s of at most `max_bytes` on the wire, each
/// change rendered once (a single change always goes, whatever its size).
fn chunk_changes(from: Revision, changes: &[RosterChange], max_bytes: usize) -> Vec<Delta> {
    // "delta," plus two revisions of up to 20 digits and their commas,
    // sealed.
    const HEADER_BYTES: usize = 2 * (6 + 2 * 21) + SEAL_OVERHEAD;
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
    max_len: usize,
    nonce: Option<Nonce>,
) -> (LoginDecision, Vec<RosterAction>) {
    // Sent where nothing yet proves anyone listens: never larger than the
    // login it answers, so a forged login gains nothing by it. The reason
    // always fits; the sentence is cut to what room is left.
    let echo = nonce.map_or(0, |_| 2 * (PIGEON_TAG.len() + 3 + 32 + 1));
    let header = echo + 2 * format!("refused,{reason},").encode_utf16().count();
    let room = max_len.saturating_sub(header) / 2;
    let mut sent = String::new();
    let mut units = 0;
    for ch in detail.chars() {
        units += ch.len_utf16();
        if units > room {
            break;
        }
        sent.push(ch);
    }
    let to =
        if endpoint.check_usable().is_ok() && same_host(endpoint.socket_addr().ip(), source.ip()) {
            endpoint.socket_addr()
        } else {
            source
        };
    let datagram = Datagram::Refused(Refused {
        reason: reason.clone(),
        detail: sent,
        nonce,
    });
    // Even its reason does not fit (a short seed-style login, whose sender
    // would not read a refusal anyway): nothing goes back.
    let actions = if datagram.encoded_len() <= max_len {
        vec![RosterAction::Send { to, datagram }]
    } else {
        Vec::new()
    };
    (LoginDecision::Refused { reason, detail }, actions)
}

#[cfg(test)]
mod tests;
