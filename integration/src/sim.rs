//! A deterministic simulator of a whole Pigeon network: a virtual clock,
//! one server's [`Roster`] (and the [`Directory`] its TCP service reads), N
//! client cores ([`ClientCore`]), wired through an in-memory network that
//! loses, duplicates, delays and reorders datagrams as a seeded generator
//! says. No sockets, no actors, no sleeping: a minute of virtual time takes
//! milliseconds, and the same seed replays the same run exactly.
//!
//! Every datagram goes through the real codec (encoded on sending, decoded
//! on arrival), and roster snapshots through the real roster encoder and
//! parser. A scenario drives the clients (log in, chat, log out, crash),
//! the server (restart, with or without telling its clients) and the
//! clock, then checks what a user would: every roster converges, every
//! message arrives exactly once and in order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pigeon_client::client_core::{ClientCore, Fetch};
use pigeon_client::conversation::DeliveryConfig;
use pigeon_client::events::ClientEvent;
use pigeon_client::session::{
    default_login_timeouts, default_logout_timeouts, SendTextError, SessionConfig,
};
use pigeon_server::directory::Directory;
use pigeon_server::relay::{Hop, Relay, RelayConfig, DEFAULT_RELAY_GLOBAL_RATE};
use pigeon_server::roster::{Roster, RosterAction, RosterConfig, DEFAULT_RELAY_RATE};
use pigeon_shared::roster_snapshot::{decode_frame, RosterFormat};
use pigeon_shared::seal::{seal, SessionKey};
use pigeon_shared::{
    Datagram, InstanceId, PeerAddr, RosterSnapshot, TalkTime, TimeOfDay, UserName,
};
use pigeon_shared::{Identity, PublicKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The server's UDP address in the simulated network.
pub const SERVER: &str = "10.0.0.1:7788";
const TCP_PORT: u16 = 7789;
const ROSTER_PORT: u16 = 7790;

/// How the simulated network and its nodes behave.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Clients in the network (they log in when a scenario says).
    pub clients: usize,
    /// Chance a datagram is lost.
    pub loss: f64,
    /// Chance a datagram that is not lost arrives twice.
    pub duplicate: f64,
    /// Chance a datagram is held back (up to `reorder_delay`), so that later
    /// ones overtake it.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// One-way latency, and its random extra.
    pub latency: Duration,
    pub jitter: Duration,
    /// Chance a roster fetch fails.
    pub fetch_failure: f64,
    /// The server's liveness timeout (keepalives every sixth of it).
    pub liveness_timeout: Duration,
    /// Sabotage, to prove the checks can fail: every `ack` is lost. (The
    /// clients then have no keys, so that acks cross the network in clear
    /// where the sabotage can see them.)
    pub eat_acks: bool,
}

impl SimConfig {
    /// `clients` clients on a network that loses, duplicates and reorders
    /// `rate` of datagrams (each).
    pub fn lossy(seed: u64, clients: usize, rate: f64) -> Self {
        Self {
            seed,
            clients,
            loss: rate,
            duplicate: rate,
            reorder: rate,
            reorder_delay: Duration::from_millis(50),
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(2),
            fetch_failure: rate / 2.0,
            liveness_timeout: Duration::from_secs(30),
            eat_acks: false,
        }
    }
}

/// Something the network or the server will do at a moment.
#[derive(Debug)]
enum Event {
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        bytes: bytes::Bytes,
    },
    /// The server reads its directory for a fetch (the TCP connection is
    /// up and, for a Pigeon roster, the request read).
    ServeFetch { client: usize, fetch: Fetch },
    /// The snapshot (or the failure) reaches the client.
    FetchDone {
        client: usize,
        /// Which life of the client asked.
        life: u32,
        result: Result<RosterSnapshot, String>,
    },
    /// The server comes back up.
    ServerUp,
}

struct Server {
    roster: Roster,
    directory: Arc<Directory>,
    relay: Relay,
}

/// One simulated client.
pub struct SimClient {
    pub name: UserName,
    pub addr: SocketAddr,
    /// `None` until it logs in, and after it crashed.
    pub core: Option<ClientCore>,
    /// How many times it was started.
    life: u32,
    /// Everything it told its front end, in order.
    pub events: Vec<ClientEvent>,
}

/// One message a scenario sent, and what became of it.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub from: usize,
    pub to: usize,
    pub text: String,
}

/// Counts of what the network did.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub undecodable: u64,
    /// End-to-end frames the server relayed, and requests it dropped.
    pub relayed: u64,
    pub relay_dropped: u64,
    /// Meetings the server arranged.
    pub meetings: u64,
}

/// The simulated network. See the module documentation.
pub struct Sim {
    pub config: SimConfig,
    rng: StdRng,
    /// The names the server registered, kept across its restarts.
    registry: HashMap<UserName, PublicKey>,
    base: Instant,
    now: Duration,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: HashMap<u64, Event>,
    next_event: u64,
    server: Option<Server>,
    server_addr: SocketAddr,
    pub clients: Vec<SimClient>,
    by_addr: HashMap<SocketAddr, usize>,
    pub sent: Vec<SentMessage>,
    pub net: NetStats,
    /// `PIGEON_SIM_TRACE=IP:PORT`: every datagram to or from there is
    /// printed as it is sent (for replaying a seed).
    trace: Option<SocketAddr>,
}

impl Sim {
    /// A network with its server up and its clients not yet logged in.
    pub fn new(config: SimConfig) -> Self {
        let server_addr: SocketAddr = SERVER
            .parse()
            .unwrap_or(SocketAddr::from(([10, 0, 0, 1], 7788)));
        let clients: Vec<SimClient> = (0..config.clients)
            .map(|i| {
                let addr =
                    SocketAddr::from(([10, 0, 1, (i % 250) as u8 + 1], 5000 + (i / 250) as u16));
                SimClient {
                    name: UserName::parse(&format!("u{i}")).unwrap_or_else(|_| unreachable!()),
                    addr,
                    core: None,
                    life: 0,
                    events: Vec::new(),
                }
            })
            .collect();
        let by_addr = clients
            .iter()
            .enumerate()
            .map(|(i, c)| (c.addr, i))
            .collect();
        let mut sim = Self {
            rng: StdRng::seed_from_u64(config.seed),
            registry: HashMap::new(),
            config,
            base: Instant::now(),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_event: 0,
            server: None,
            server_addr,
            clients,
            by_addr,
            sent: Vec::new(),
            net: NetStats::default(),
            trace: std::env::var("PIGEON_SIM_TRACE")
                .ok()
                .and_then(|a| a.parse().ok()),
        };
        sim.server_up();
        sim
    }

    /// The virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// The time of day a message written now carries.
    fn talk_time(&self) -> TalkTime {
        let secs = self.now.as_secs();
        let part = |value: u64| u8::try_from(value).unwrap_or(0);
        TalkTime::from_time_of_day(TimeOfDay {
            hour: part(secs / 3600 % 24),
            minute: part(secs / 60 % 60),
            second: part(secs % 60),
        })
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, event);
        self.queue.push(Reverse((self.now + after, id)));
    }

    fn server_up(&mut self) {
        let mut config = RosterConfig::new(TCP_PORT, ROSTER_PORT);
        config.liveness_timeout = self.config.liveness_timeout;
        // The server's key, as a real server keeps it in its store.
        config.identity = Identity::from_secret([0x33; 32]);
        let directory = Arc::new(Directory::default());
        let rng = StdRng::seed_from_u64(self.rng.random());
        let relay = Relay::new(
            RelayConfig {
                per_session: config.relay_rate.unwrap_or(DEFAULT_RELAY_RATE),
                global_rate: DEFAULT_RELAY_GLOBAL_RATE,
            },
            self.instant(),
        );
        self.server = Some(Server {
            roster: Roster::with_registry(config, directory.clone(), rng, self.registry.clone()),
            directory,
            relay,
        });
    }

    // --- What a scenario does. ---

    /// Client `i` starts and logs in (again, after a crash or a logout, as
    /// a new instance).
    pub fn start_client(&mut self, i: usize) {
        let instance = InstanceId(self.rng.random());
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        let config = SessionConfig {
            name: client.name.clone(),
            server: self.server_addr,
            endpoint: PeerAddr::new(client.addr),
            instance,
            login_timeouts: default_login_timeouts(),
            logout_timeouts: default_logout_timeouts(),
            max_reconnect_delay: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(5),
            plain_protocol: false,
            // As a person at the terminal UI: the first login is never
            // given up (a script's gives up after eight attempts, which a
            // lossy enough network sometimes takes).
            keep_trying: true,
            nonce_seed: self.rng.random(),
            // One key per name, the same in every life of the client.
            identity: (!self.config.eat_acks).then(|| Arc::new(identity_of(&client.name))),
            server_key: None,
            pinned_peers: Default::default(),
            pin_on_sight: true,
            mail_seen: Vec::new(),
            alternates: Vec::new(),
        };
        let mut core = ClientCore::new(config, DeliveryConfig::default());
        core.start(self.base + self.now);
        client.core = Some(core);
        client.life += 1;
        self.pump_client(i);
    }

    /// Client `i` dies without a word (SIGKILL).
    pub fn crash_client(&mut self, i: usize) {
        if let Some(client) = self.clients.get_mut(i) {
            client.core = None;
        }
    }

    /// Client `i` logs out.
    pub fn logout(&mut self, i: usize) {
        let now = self.instant();
        if let Some(core) = self.clients.get_mut(i).and_then(|c| c.core.as_mut()) {
            core.logout(now);
        }
        self.pump_client(i);
    }

    /// Client `from` writes `text` to client `to`; kept for the checks if
    /// it was accepted.
    pub fn send(&mut self, from: usize, to: usize, text: &str) -> Result<(), SendTextError> {
        let now = self.instant();
        let time = self.talk_time();
        let Some(to_name) = self.clients.get(to).map(|c| c.name.clone()) else {
            return Err(SendTextError::NotOnline);
        };
        let Some(core) = self.clients.get_mut(from).and_then(|c| c.core.as_mut()) else {
            return Err(SendTextError::NotOnline);
        };
        let sent = core.send_text(to_name, text.to_owned(), time, now);
        self.pump_client(from);
        sent.map(|_| {
            self.sent.push(SentMessage {
                from,
                to,
                text: text.to_owned(),
            });
        })
    }

    /// The server stops (telling its Pigeon clients first if `announce`)
    /// and comes back, empty but with its key and the names registered,
    /// after `downtime`.
    pub fn restart_server(&mut self, announce: bool, downtime: Duration) {
        if let Some(mut server) = self.server.take() {
            self.registry = server.roster.registry().clone();
            if announce {
                let mut actions = server.roster.flush_deltas();
                actions.extend(server.roster.closing("the server is shutting down"));
                self.server_actions(actions);
            }
        }
        self.schedule(downtime, Event::ServerUp);
    }

    /// Runs until `done` holds or `limit` of virtual time has passed since
    /// now; whether `done` held.
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            let Some(next) = self.next_moment() else {
                return done(self);
            };
            if next > end {
                self.now = end;
                return done(self);
            }
            self.now = self.now.max(next);
            self.step();
        }
    }

    /// Runs for `time` of virtual time.
    pub fn run_for(&mut self, time: Duration) {
        let _ = self.run_until(time, |_| false);
    }

    // --- What a scenario checks. ---

    /// The clients running (started, not crashed, session not over).
    pub fn alive(&self) -> BTreeSet<UserName> {
        self.clients
            .iter()
            .filter(|c| {
                c.core
                    .as_ref()
                    .is_some_and(|core| !core.session().is_ended())
            })
            .map(|c| c.name.clone())
            .collect()
    }

    /// The clients logged in now (their session is online).
    pub fn online(&self) -> BTreeSet<UserName> {
        self.clients
            .iter()
            .filter(|c| {
                c.core
                    .as_ref()
                    .is_some_and(|core| core.session().is_online())
            })
            .map(|c| c.name.clone())
            .collect()
    }

    /// Whether every online client's roster holds exactly the online
    /// clients (as the server has them).
    pub fn converged(&self) -> bool {
        let Some(server) = &self.server else {
            return false;
        };
        let listed: BTreeSet<UserName> = server
            .directory
            .snapshot()
            .1
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let online = self.online();
        if listed != online || online != self.alive() {
            return false;
        }
        self.clients
            .iter()
            .filter_map(|c| c.core.as_ref())
            .filter(|core| core.session().is_online())
            .all(|core| {
                let users: BTreeSet<UserName> =
                    core.session().users().into_iter().map(|(n, _)| n).collect();
                users == online
            })
    }

    /// The messages client `to` was shown from client `from`, in order.
    pub fn shown(&self, from: usize, to: usize) -> Vec<String> {
        let (Some(sender), Some(receiver)) = (self.clients.get(from), self.clients.get(to)) else {
            return Vec::new();
        };
        receiver
            .events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Message { from, text, .. } if *from == sender.name => {
                    Some(text.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// Whether every message sent was shown to its receiver.
    pub fn all_shown(&self) -> bool {
        self.pairs().into_iter().all(|((from, to), texts)| {
            let shown = self.shown(from, to);
            texts.iter().all(|t| shown.contains(t))
        })
    }

    /// Whether every message sent has been confirmed or reported failed.
    pub fn all_settled(&self) -> bool {
        self.clients.iter().enumerate().all(|(i, c)| {
            let sent = self.sent.iter().filter(|m| m.from == i).count();
            let settled = c
                .events
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        ClientEvent::Delivered { .. } | ClientEvent::Failed { .. }
                    )
                })
                .count();
            settled >= sent
        })
    }

    /// Every message sent shown exactly once, in the order it was sent,
    /// and confirmed to its sender; or what went wrong.
    pub fn check_chat(&self) -> Result<(), String> {
        for ((from, to), texts) in self.pairs() {
            let shown = self.shown(from, to);
            if shown != texts {
                return Err(format!("u{from} → u{to}: sent {texts:?}, shown {shown:?}"));
            }
        }
        for (i, client) in self.clients.iter().enumerate() {
            let sent = self.sent.iter().filter(|m| m.from == i).count();
            let delivered = client
                .events
                .iter()
                .filter(|e| matches!(e, ClientEvent::Delivered { .. }))
                .count();
            let failed: Vec<&ClientEvent> = client
                .events
                .iter()
                .filter(|e| matches!(e, ClientEvent::Failed { .. }))
                .collect();
            if !failed.is_empty() || delivered != sent {
                return Err(format!(
                    "u{i}: {sent} sent, {delivered} confirmed, failed: {failed:?}"
                ));
            }
        }
        Ok(())
    }

    fn pairs(&self) -> BTreeMap<(usize, usize), Vec<String>> {
        let mut pairs: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
        for m in &self.sent {
            pairs
                .entry((m.from, m.to))
                .or_default()
                .push(m.text.clone());
        }
        pairs
    }

    // --- The machinery. ---

    /// The next moment anything is due: an event, or a node's timer.
    fn next_moment(&self) -> Option<Duration> {
        let event = self.queue.peek().map(|Reverse((at, _))| *at);
        let base = self.base;
        let since = |at: Instant| at.saturating_duration_since(base);
        let server = self
            .server
            .as_ref()
            .and_then(|s| s.roster.poll_timeout())
            .map(since);
        let clients = self
            .clients
            .iter()
            .filter_map(|c| c.core.as_ref())
            .filter_map(ClientCore::poll_timeout)
            .map(since)
            .min();
        [event, server, clients].into_iter().flatten().min()
    }

    /// Does everything due now.
    fn step(&mut self) {
        while let Some(Reverse((at, id))) = self.queue.peek().copied() {
            if at > self.now {
                break;
            }
            self.queue.pop();
            if let Some(event) = self.events.remove(&id) {
                self.handle(event);
            }
        }
        let now = self.instant();
        let due = self
            .server
            .as_ref()
            .and_then(|s| s.roster.poll_timeout())
            .is_some_and(|at| at <= now);
        if due {
            let actions = self
                .server
                .as_mut()
                .map(|s| s.roster.handle_timeout(now))
                .unwrap_or_default();
            self.server_actions(actions);
        }
        for i in 0..self.clients.len() {
            let due = self
                .clients
                .get(i)
                .and_then(|c| c.core.as_ref())
                .and_then(ClientCore::poll_timeout)
                .is_some_and(|at| at <= now);
            if due {
                if let Some(core) = self.clients.get_mut(i).and_then(|c| c.core.as_mut()) {
                    core.handle_timeout(now);
                }
                self.pump_client(i);
            }
        }
    }

    fn handle(&mut self, event: Event) {
        let now = self.instant();
        match event {
            Event::Datagram { from, to, bytes } => {
                let Ok(datagram) = Datagram::decode(&bytes) else {
                    self.net.undecodable += 1;
                    return;
                };
                if to == self.server_addr {
                    self.server_datagram(datagram, from);
                } else if let Some(&i) = self.by_addr.get(&to) {
                    if let Some(core) = self.clients.get_mut(i).and_then(|c| c.core.as_mut()) {
                        core.handle_datagram(datagram, from, now);
                        self.pump_client(i);
                    }
                }
            }
            Event::ServeFetch { client, fetch } => {
                let life = self.clients.get(client).map_or(0, |c| c.life);
                let result = self.serve_fetch(&fetch);
                let latency = self.latency();
                self.schedule(
                    latency,
                    Event::FetchDone {
                        client,
                        life,
                        result,
                    },
                );
            }
            Event::FetchDone {
                client,
                life,
                result,
            } => {
                let current = self.clients.get(client).is_some_and(|c| c.life == life);
                if let Some(core) = self.clients.get_mut(client).and_then(|c| c.core.as_mut()) {
                    if current {
                        core.handle_fetch(result, now);
                    }
                }
                self.pump_client(client);
            }
            Event::ServerUp => self.server_up(),
        }
    }

    /// What the server's TCP service does with a fetch.
    fn serve_fetch(&mut self, fetch: &Fetch) -> Result<RosterSnapshot, String> {
        let fail = self
            .rng
            .random_bool(self.config.fetch_failure.clamp(0.0, 1.0));
        let Some(server) = self.server.as_mut() else {
            return Err("connection refused".into());
        };
        if fail {
            return Err("connection reset".into());
        }
        let format = match fetch.from.port() {
            ROSTER_PORT => RosterFormat::Pigeon,
            TCP_PORT => RosterFormat::Seed,
            _ => return Err("connection refused".into()),
        };
        // As the TCP service: the roster only to a session that just
        // logged in.
        let allowed = match (format, &fetch.as_user) {
            (RosterFormat::Pigeon, Some((name, token))) => {
                server.directory.holds(name.as_str(), *token)
            }
            (RosterFormat::Pigeon, None) => false,
            (RosterFormat::Seed, _) => true,
        };
        if !allowed {
            return Err("closed without the roster".into());
        }
        let rendered = server.directory.encode(format);
        let mut actions = Vec::new();
        if let (RosterFormat::Pigeon, Some((name, token))) = (format, &fetch.as_user) {
            let (_, caught_up) =
                server
                    .roster
                    .synced(name, *token, rendered.revision, self.base + self.now);
            actions = caught_up;
        }
        self.server_actions(actions);
        match decode_frame(&rendered.bytes, usize::MAX) {
            Ok(Some((text, _))) => RosterSnapshot::parse(&text).map_err(|e| e.to_string()),
            Ok(None) => Err("truncated roster".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn server_datagram(&mut self, datagram: Datagram, from: SocketAddr) {
        let now = self.instant();
        let Some(server) = self.server.as_mut() else {
            return;
        };
        let actions = match datagram {
            Datagram::Login(login) => server.roster.login(login, from, now).1,
            Datagram::Logout(logout) => server.roster.logout(logout, from, now).1,
            Datagram::Ping(ping) => server.roster.ping(ping, from, now).1,
            Datagram::Meet(meet) => {
                let len = Datagram::Meet(meet.clone()).encoded_len();
                match server.roster.meet(meet, from, len, now) {
                    Ok(actions) => {
                        self.net.meetings += 1;
                        actions
                    }
                    Err(_) => Vec::new(),
                }
            }
            Datagram::Relay(request) => {
                match server
                    .relay
                    .forward(&request, from, now, &*server.directory)
                {
                    // One server: every peer is here.
                    Ok(Hop::Local(to)) => {
                        let relayed = Datagram::Relayed(request.secure);
                        let server_addr = self.server_addr;
                        self.net.relayed += 1;
                        self.transmit(server_addr, to, &relayed);
                    }
                    Ok(Hop::Remote(_)) | Err(_) => self.net.relay_dropped += 1,
                }
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.server_actions(actions);
    }

    fn server_actions(&mut self, actions: Vec<RosterAction>) {
        let from = self.server_addr;
        for action in actions {
            match action {
                RosterAction::Send { to, datagram } => self.transmit(from, to, &datagram),
                RosterAction::Broadcast { mut to, datagram } => {
                    // The roster's order is a hash map's; the network's
                    // must not depend on it.
                    to.sort();
                    for to in to {
                        self.transmit(from, to, &datagram);
                    }
                }
                RosterAction::SendSealed { to, datagram, key } => {
                    self.transmit(from, to, &sealed(key, &datagram))
                }
                RosterAction::BroadcastSealed { mut to, datagram } => {
                    to.sort_by_key(|(addr, _)| *addr);
                    for (to, key) in to {
                        self.transmit(from, to, &sealed(key, &datagram));
                    }
                }
                // One server: no other to tell.
                RosterAction::Publish(_)
                | RosterAction::Register { .. }
                | RosterAction::NotRegistered { .. }
                | RosterAction::PunchElsewhere { .. } => {}
            }
        }
    }

    /// Carries out what client `i` wants done.
    fn pump_client(&mut self, i: usize) {
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        let from = client.addr;
        let Some(core) = client.core.as_mut() else {
            return;
        };
        let mut transmits = Vec::new();
        while let Some(t) = core.poll_transmit() {
            transmits.push(t);
        }
        let mut fetches = Vec::new();
        while let Some(f) = core.poll_fetch() {
            fetches.push(f);
        }
        while let Some(event) = core.poll_event() {
            client.events.push(event);
        }
        for t in transmits {
            self.transmit(from, t.to, &t.datagram);
        }
        for fetch in fetches {
            let latency = self.latency();
            self.schedule(latency, Event::ServeFetch { client: i, fetch });
        }
    }

    fn latency(&mut self) -> Duration {
        let jitter = self.config.jitter.as_micros().max(1) as u64;
        self.config.latency + Duration::from_micros(self.rng.random_range(0..jitter))
    }

    /// Puts a datagram on the network, which may lose, copy or delay it.
    fn transmit(&mut self, from: SocketAddr, to: SocketAddr, datagram: &Datagram) {
        self.net.sent += 1;
        if let Some(watched) = &self.trace {
            if *watched == from || *watched == to {
                eprintln!("{:?} {from} -> {to}: {datagram:?}", self.now);
            }
        }
        if self.config.eat_acks && matches!(datagram, Datagram::Ack(_)) {
            self.net.lost += 1;
            return;
        }
        if self.rng.random_bool(self.config.loss.clamp(0.0, 1.0)) {
            self.net.lost += 1;
            if self.trace.is_some_and(|w| w == from || w == to) {
                eprintln!("  (lost)");
            }
            return;
        }
        let copies = if self.rng.random_bool(self.config.duplicate.clamp(0.0, 1.0)) {
            self.net.duplicated += 1;
            2
        } else {
            1
        };
        let bytes = datagram.to_bytes();
        for _ in 0..copies {
            let mut after = self.latency();
            if self.rng.random_bool(self.config.reorder.clamp(0.0, 1.0)) {
                self.net.delayed += 1;
                let max = self.config.reorder_delay.as_micros().max(1) as u64;
                after += Duration::from_micros(self.rng.random_range(0..max));
            }
            self.schedule(
                after,
                Event::Datagram {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }
}

/// `datagram` as the server sends it to a session with `key`.
fn sealed(key: Option<SessionKey>, datagram: &Datagram) -> Datagram {
    match key {
        Some(key) => seal(&key, datagram),
        None => datagram.clone(),
    }
}

/// A simulated user's key pair, made from its name: the same in every run.
fn identity_of(name: &UserName) -> Identity {
    let mut secret = [0x5a; 32];
    for (byte, from) in secret.iter_mut().zip(name.as_str().bytes()) {
        *byte ^= from;
    }
    Identity::from_secret(secret)
}
