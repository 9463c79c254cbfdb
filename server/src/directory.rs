//! `Directory`: the users online as the TCP roster service reads them,
//! from any thread, without a mailbox round trip: the read model the
//! [`crate::roster::Roster`] writes through to. Each user's roster line is
//! rendered once, when it joins, by the protocol crate's [`roster_line`],
//! and every snapshot is written by its one encoder,
//! [`encode_roster_lines`] (the one the property tests round-trip).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use pigeon_shared::roster_snapshot::{encode_roster_lines, roster_line, RosterFormat};
use pigeon_shared::seal::SessionKey;
use pigeon_shared::{InstanceId, PeerAddr, PublicKey, Revision, SessionToken, UserName};

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
    /// Each Pigeon session's token (the roster goes to a Pigeon client
    /// that names itself with it) and sealing key (a mailbox request must
    /// carry its MAC).
    tokens: DashMap<UserName, SessionSecrets>,
    /// A session's next token and key, offered to a client that started its
    /// handshake over; they replace the current ones once the client names
    /// the token.
    next_tokens: DashMap<UserName, SessionSecrets>,
    /// Pigeon sessions that proved they receive (fetched the roster with
    /// their token): only they are relayed to.
    receiving: DashMap<UserName, ()>,
    /// The server each user online through another server of the cluster
    /// is logged in to (frames relayed to it go there).
    homes: DashMap<UserName, Arc<str>>,
    /// When each host last sent a seed-style login: the seed-format roster
    /// goes only to a host that just logged in.
    seed_logins: DashMap<IpAddr, Instant>,
}

/// How long after a seed-style login its host may fetch the roster.
pub const SEED_FETCH_WINDOW: Duration = Duration::from_secs(10);

/// Most hosts remembered as having just logged in (forged logins from many
/// addresses cannot grow it without bound).
const MAX_SEED_LOGINS: usize = 65_536;

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
    /// A Pigeon client's public key, if it logged in with one.
    pub key: Option<PublicKey>,
}

/// A Pigeon session's token, and the key its sealed datagrams and mailbox
/// requests are made with (`None`: a session without a key, which has no
/// mailbox).
#[derive(Debug, Clone, Copy)]
pub struct SessionSecrets {
    pub token: SessionToken,
    pub key: Option<SessionKey>,
}

/// A [`DirectoryEntry`] and its roster line, `name,ip:port,iid[,key]` (`-`
/// for no instance id), with the length of its seed-format start.
#[derive(Debug)]
struct Listing {
    entry: DirectoryEntry,
    line: Arc<str>,
    seed_len: usize,
}

impl Listing {
    fn new(name: &UserName, entry: DirectoryEntry) -> Self {
        let (line, seed_len) = roster_line(name, &entry.endpoint, entry.instance, entry.key);
        Self {
            entry,
            line: Arc::from(line),
            seed_len,
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
                (listing.key().clone(), value.line.clone(), value.seed_len)
            })
            .collect();
        lines.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let body: usize = lines.iter().map(|(_, line, _)| line.len() + 1).sum();
        let mut buf = Vec::with_capacity(body + 64);
        encode_roster_lines(
            format,
            revision,
            lines.iter().map(|(_, line, len)| (&**line, *len)),
            &mut buf,
        );
        Rendered {
            revision,
            users: lines.len(),
            bytes: Arc::from(buf),
        }
    }

    /// Lists `name` (the roster has admitted it); a Pigeon session with
    /// its `token`.
    pub(crate) fn insert(
        &self,
        name: UserName,
        entry: DirectoryEntry,
        secrets: Option<SessionSecrets>,
    ) {
        let listing = Listing::new(&name, entry);
        if let Some(secrets) = secrets {
            self.tokens.insert(name.clone(), secrets);
        }
        self.users.insert(name, listing);
    }

    /// Takes `name` off.
    pub(crate) fn remove(&self, name: &str) {
        self.users.remove(name);
        self.tokens.remove(name);
        self.next_tokens.remove(name);
        self.receiving.remove(name);
        self.homes.remove(name);
    }

    /// Lists `name`, online through the cluster's server `home`.
    pub(crate) fn insert_remote(&self, name: UserName, entry: DirectoryEntry, home: Arc<str>) {
        self.homes.insert(name.clone(), home);
        self.insert(name, entry, None);
    }

    /// The server `name` is online through, if another of the cluster.
    pub fn home(&self, name: &str) -> Option<Arc<str>> {
        self.homes.get(name).map(|home| home.value().clone())
    }

    /// `name`'s Pigeon session proved it receives.
    pub(crate) fn mark_receiving(&self, name: &UserName) {
        if self.users.contains_key(name.as_str()) {
            self.receiving.insert(name.clone(), ());
        }
    }

    /// Whether `name`'s Pigeon session proved it receives.
    pub fn receives(&self, name: &str) -> bool {
        self.receiving.contains_key(name)
    }

    /// `name`'s session may move to these secrets (see
    /// [`Directory::holds`]).
    pub(crate) fn offer_token(&self, name: &UserName, secrets: SessionSecrets) {
        if self.tokens.contains_key(name) {
            self.next_tokens.insert(name.clone(), secrets);
        }
    }

    /// `name`'s session moved to these secrets: the ones before are void.
    pub(crate) fn move_token(&self, name: &UserName, secrets: SessionSecrets) {
        self.next_tokens.remove(name);
        if let Some(mut current) = self.tokens.get_mut(name) {
            *current = secrets;
        }
    }

    /// `host` sent a seed-style login at `now`: it may fetch the roster
    /// for a while.
    pub(crate) fn seed_login(&self, host: IpAddr, now: Instant) {
        if self.seed_logins.len() >= MAX_SEED_LOGINS {
            self.seed_logins
                .retain(|_, at| now.saturating_duration_since(*at) < SEED_FETCH_WINDOW);
            if self.seed_logins.len() >= MAX_SEED_LOGINS {
                return;
            }
        }
        self.seed_logins.insert(host, now);
    }

    /// Whether `name` is online with the Pigeon session `token`.
    /// (Or with the token it was offered to move to.)
    pub fn holds(&self, name: &str, token: SessionToken) -> bool {
        self.secrets(name, token).is_some()
    }

    /// The sealing key of `name`'s session whose token is `token` (or of
    /// the one it was offered to move to), if it has one.
    pub fn sealing_key(&self, name: &str, token: SessionToken) -> Option<SessionKey> {
        self.secrets(name, token)?.key
    }

    /// The secrets of `name`'s session (current or offered) whose token
    /// is `token` (the offered ones looked up only if the current ones
    /// are not: this is on every keepalive's path).
    fn secrets(&self, name: &str, token: SessionToken) -> Option<SessionSecrets> {
        let named = |secrets: &SessionSecrets| secrets.token == token;
        self.tokens
            .get(name)
            .map(|s| *s)
            .filter(named)
            .or_else(|| self.next_tokens.get(name).map(|s| *s).filter(named))
    }

    /// Whether `host` sent a seed-style login within the window before
    /// `now`.
    pub fn seed_login_recent(&self, host: IpAddr, now: Instant) -> bool {
        self.seed_logins
            .get(&host)
            .is_some_and(|at| now.saturating_duration_since(*at) < SEED_FETCH_WINDOW)
    }

    /// Publishes the roster's revision, after the change it counts.
    pub(crate) fn set_revision(&self, revision: Revision) {
        self.revision.store(revision, Ordering::Release);
    }

    /// Forgets every user, and the revision starts again from zero.
    pub(crate) fn clear(&self) {
        let mut rendered = self
            .rendered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.users.clear();
        self.tokens.clear();
        self.next_tokens.clear();
        self.receiving.clear();
        self.homes.clear();
        self.seed_logins.clear();
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
