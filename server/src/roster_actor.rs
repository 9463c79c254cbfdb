//! `RosterActor`: the shell around [`Roster`]. It feeds the roster what the
//! gateway decoded, runs the one timer the roster asks for
//! ([`Roster::poll_timeout`]: evictions, and the short delay that lets a
//! burst of roster changes share `delta` datagrams), sends what the roster
//! decides through the gateway, logs each decision, and publishes roster
//! events to subscribing actors, so that new behaviour (an audit log, a
//! bot) is a new actor rather than an edit here.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use pigeon_shared::{
    LogLimit, Login, Logout, Meet, PeerAddr, Ping, RefuseReason, Revision, SessionToken, UserName,
};
use tracing::{debug, info, warn};

use crate::cluster_actor::{ClusterStats, FromCluster, ToCluster};
use crate::roster::{
    LeaveReason, LoginDecision, Prepared, Roster, RosterAction, RosterEvent, SessionDecision,
};
use crate::store_actor::{HasMail, Register, StoreActor};
use crate::udp_gateway_actor::{
    BroadcastDatagram, BroadcastSealedDatagram, SendDatagram, UdpGatewayActor,
};

/// Mailbox size: room for a burst of logins while the gateway waits.
pub const ROSTER_MAILBOX: usize = 4096;

/// The refusal reasons counted apart; any other is counted as `other`.
pub const REFUSALS: [&str; 9] = [
    "name-taken",
    "endpoint-taken",
    "bad-endpoint",
    "server-full",
    "host-full",
    "short-login",
    "name-registered",
    "bad-handshake",
    "other",
];

/// Why a logout or keepalive was ignored.
pub const IGNORED: [&str; 4] = [
    "unknown-user",
    "endpoint-mismatch",
    "wrong-source",
    "bad-token",
];

/// What the roster decided, counted (`pigeon-server --metrics` serves
/// them).
#[derive(Debug, Default)]
pub struct RosterStats {
    /// Logins that put a new user online.
    pub joined: AtomicU64,
    /// Logins repeated by the same session: `Accept` again.
    pub refreshed: AtomicU64,
    /// Logins refused, by reason ([`REFUSALS`]).
    pub refused: [AtomicU64; REFUSALS.len()],
    /// Users gone, by [`LeaveReason::index`].
    pub left: [AtomicU64; LeaveReason::ALL.len()],
    /// Keepalives that kept a session alive.
    pub keepalives: AtomicU64,
    /// Logouts (first) and keepalives (second) ignored, by why
    /// ([`IGNORED`]).
    pub ignored: [[AtomicU64; IGNORED.len()]; 2],
    /// Hosts whose roster fetch confirmed seed-style sessions.
    pub seed_confirmed: AtomicU64,
    /// Names proved under a free name but left unregistered (the registry
    /// full, or the host's registrations for the hour spent).
    pub not_registered: AtomicU64,
    /// Meetings arranged: both users told where to probe the other.
    pub meetings: AtomicU64,
    /// Requests to meet not answered.
    pub meets_refused: AtomicU64,
    /// Roster events a subscriber's full mailbox lost.
    pub events_dropped: AtomicU64,
}

impl RosterStats {
    fn refused(&self, reason: &RefuseReason) {
        let label = match reason {
            RefuseReason::Other(_) => "other",
            known => known.as_str(),
        };
        let index = REFUSALS
            .iter()
            .position(|r| *r == label)
            .unwrap_or(REFUSALS.len() - 1);
        if let Some(counter) = self.refused.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn ignored(&self, keepalive: bool, decision: &SessionDecision) {
        let Some(why) = decision.ignored_as() else {
            return;
        };
        let row = usize::from(keepalive);
        let counter = IGNORED
            .iter()
            .position(|i| *i == why)
            .and_then(|i| self.ignored.get(row).and_then(|r| r.get(i)));
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The roster actor. See the module documentation.
pub struct RosterActor {
    roster: Roster,
    gateway: Addr<UdpGatewayActor>,
    subscribers: Vec<Recipient<RosterEvent>>,
    events_dropped: u64,
    stats: Arc<RosterStats>,
    /// The timer, and when it fires.
    timer: Option<(Instant, SpawnHandle)>,
    /// Refusals are logged, but a flood of them must not flood the log.
    refusal_log: LogLimit,
    /// Where registrations are kept.
    store: Option<Addr<StoreActor>>,
    /// Users whose mailbox holds something (messages for them, receipts
    /// for messages they sent): told `mail` when they fetch the roster and
    /// with each keepalive answer until it is empty, so that a lost notice
    /// costs a keepalive interval, not the message.
    mail_waiting: HashSet<UserName>,
    /// The other servers of a cluster: told of this server's users and
    /// registrations.
    cluster: Option<(Recipient<ToCluster>, Arc<ClusterStats>)>,
}

/// A login datagram arrived from `source`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LoginReceived {
    pub login: Login,
    pub source: SocketAddr,
    /// The answer to its hello, computed already (see
    /// [`crate::handshake_actor`]).
    pub prepared: Option<Prepared>,
}

/// A logout datagram arrived from `source`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LogoutReceived {
    pub logout: Logout,
    pub source: SocketAddr,
}

/// A keepalive arrived from `source`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PingReceived {
    pub ping: Ping,
    pub source: SocketAddr,
}

/// A request to meet a peer arrived from `source`, `len` bytes long.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MeetReceived {
    pub meet: Meet,
    pub source: SocketAddr,
    pub len: usize,
}

/// A Pigeon client fetched the Pigeon roster at `revision`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RosterFetched {
    pub name: UserName,
    pub token: SessionToken,
    pub revision: Revision,
}

/// These users' mailboxes have news (`names`: each one online is sent
/// `mail`), and these are empty now (`emptied`).
#[derive(Message, Debug, Default)]
#[rtype(result = "()")]
pub struct NotifyMail {
    pub names: Vec<UserName>,
    pub emptied: Vec<UserName>,
}

/// A host fetched the seed-format roster over TCP: its seed-style
/// sessions proved they listen.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SeedFetched {
    pub host: std::net::IpAddr,
    /// The revision of the snapshot it was sent.
    pub revision: Revision,
}

/// Deliver every later [`RosterEvent`] to `subscriber`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub subscriber: Recipient<RosterEvent>,
}

/// The users online, sorted by name.
#[derive(Message, Debug)]
#[rtype(result = "Vec<(UserName, PeerAddr)>")]
pub struct OnlineUsers;

/// Tell Pigeon clients the server is going, then stop.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopRoster {
    /// Send `closing` to Pigeon clients first.
    pub announce: bool,
}

impl Message for RosterEvent {
    type Result = ();
}

impl RosterActor {
    /// A roster actor sending through `gateway`.
    pub fn new(roster: Roster, gateway: Addr<UdpGatewayActor>, stats: Arc<RosterStats>) -> Self {
        Self {
            roster,
            gateway,
            subscribers: Vec::new(),
            events_dropped: 0,
            stats,
            timer: None,
            refusal_log: LogLimit::default(),
            store: None,
            mail_waiting: HashSet::new(),
            cluster: None,
        }
    }

    /// Shares this server's users and registrations with the other
    /// servers of a cluster (and counts theirs in `stats`).
    pub fn with_cluster(mut self, cluster: Recipient<ToCluster>, stats: Arc<ClusterStats>) -> Self {
        self.cluster = Some((cluster, stats));
        self
    }

    /// Asks the store whether mail waits for `name`; if so, it is told.
    fn ask_mail(&mut self, name: UserName, ctx: &mut Context<Self>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let asked = store.send(HasMail { name: name.clone() });
        ctx.spawn(asked.into_actor(self).map(move |waits, act, ctx| {
            if waits.unwrap_or(false) {
                let notice = act.roster.mail_notice(name.as_str());
                act.mail_waiting.insert(name);
                act.dispatch(notice.into_iter().collect(), ctx);
            }
        }));
    }

    fn to_cluster(&self, change: ToCluster) {
        if let Some((cluster, _)) = &self.cluster {
            cluster.do_send(change);
        }
    }

    /// Registrations go to `store` to be kept (without one, they live as
    /// long as the roster).
    /// Users whose mailbox held something when the server started.
    pub fn with_mail_waiting(mut self, names: impl IntoIterator<Item = UserName>) -> Self {
        self.mail_waiting.extend(names);
        self
    }

    pub fn with_store(mut self, store: Option<Addr<StoreActor>>) -> Self {
        self.store = store;
        self
    }

    fn dispatch(&mut self, actions: Vec<RosterAction>, ctx: &mut Context<Self>) {
        self.carry_out(actions);
        self.schedule(ctx);
    }

    /// Arms the timer for the roster's next deadline, unless it fires by
    /// then already (it then finds nothing due, and arms itself again).
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let Some(due) = self.roster.poll_timeout() else {
            return;
        };
        if self.timer.as_ref().is_some_and(|(at, _)| *at <= due) {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let wait = due.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            let actions = act.roster.handle_timeout(Instant::now());
            act.dispatch(actions, ctx);
        });
        self.timer = Some((due, handle));
    }

    fn carry_out(&mut self, actions: Vec<RosterAction>) {
        for action in actions {
            match action {
                // `do_send` does not wait for room in the gateway's mailbox.
                // The backlog there is bounded all the same: each action
                // answers one inbound datagram or one timer tick, and inbound
                // datagrams reach this actor through a bounded mailbox.
                RosterAction::Send { to, datagram } => {
                    self.gateway.do_send(SendDatagram { to, datagram })
                }
                RosterAction::Broadcast { to, datagram } => {
                    self.gateway.do_send(BroadcastDatagram { to, datagram })
                }
                RosterAction::SendSealed { to, datagram, key } => {
                    self.gateway.do_send(BroadcastSealedDatagram {
                        to: vec![(to, key)],
                        datagram,
                    })
                }
                RosterAction::BroadcastSealed { to, datagram } => self
                    .gateway
                    .do_send(BroadcastSealedDatagram { to, datagram }),
                RosterAction::NotRegistered { name, why } => {
                    self.stats.not_registered.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = self.refusal_log.allow(Instant::now()) {
                        warn!(user = %name, reason = why.as_str(), held_back, "name left unregistered for now");
                    }
                }
                RosterAction::PunchElsewhere { server, punch } => {
                    self.to_cluster(ToCluster::Punch { server, punch });
                }
                RosterAction::Register { name, key } => {
                    info!(user = %name, key = %key.fingerprint(), "name registered to its key");
                    self.to_cluster(ToCluster::Registered {
                        name: name.clone(),
                        key,
                    });
                    if let Some(store) = &self.store {
                        store.do_send(Register { name, key });
                    }
                }
                RosterAction::Publish(event) => {
                    match &event {
                        RosterEvent::Joined { name, .. } => {
                            if let Some(entry) = self.roster.entry_of(name.as_str()) {
                                self.to_cluster(ToCluster::Joined {
                                    name: name.clone(),
                                    entry,
                                });
                            }
                        }
                        RosterEvent::Left { name, endpoint, .. } => {
                            self.to_cluster(ToCluster::Left {
                                name: name.clone(),
                                endpoint: *endpoint,
                            });
                        }
                    }
                    if let RosterEvent::Left { reason, .. } = &event {
                        if let Some(counter) = self.stats.left.get(reason.index()) {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    match &event {
                        RosterEvent::Left {
                            name,
                            reason: LeaveReason::Evicted,
                            ..
                        } => {
                            info!(user = %name, online = self.roster.len(), "user evicted: no keepalive within the liveness timeout");
                        }
                        RosterEvent::Left {
                            name,
                            reason: LeaveReason::Unconfirmed,
                            ..
                        } => {
                            info!(user = %name, online = self.roster.len(), "seed-era session ended: its host never fetched the roster");
                        }
                        _ => {}
                    }
                    self.publish(event);
                }
            }
        }
    }

    /// Fan-out with `try_send`: a subscriber that cannot keep up loses
    /// events (counted), and holds nobody else up.
    fn publish(&mut self, event: RosterEvent) {
        let mut dropped = 0;
        self.subscribers
            .retain(|subscriber| match subscriber.try_send(event.clone()) {
                Ok(()) => true,
                Err(SendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(SendError::Closed(_)) => false,
            });
        if dropped > 0 {
            self.events_dropped += dropped;
            self.stats
                .events_dropped
                .fetch_add(dropped, Ordering::Relaxed);
            warn!(
                dropped,
                total = self.events_dropped,
                "roster event not delivered: subscriber mailbox full"
            );
        }
    }

    fn log_ignored(
        &mut self,
        what: &str,
        name: &UserName,
        source: SocketAddr,
        decision: &SessionDecision,
    ) {
        let why = match decision {
            SessionDecision::Done => return,
            // A repeated logout (its `bye` was lost) or a keepalive from
            // before a restart: ordinary, not a sign of anything wrong.
            SessionDecision::UnknownUser => {
                debug!(user = %name, %source, "{what} ignored: no such user online");
                return;
            }
            SessionDecision::EndpointMismatch { registered } => {
                format!("not the user's endpoint ({registered})")
            }
            SessionDecision::WrongSource { registered } => {
                format!("not sent from the user's address ({registered})")
            }
            SessionDecision::BadToken => "no proof of the user's session".to_owned(),
        };
        if let Some(held_back) = self.refusal_log.allow(Instant::now()) {
            warn!(user = %name, %source, held_back, "{what} ignored: {why}");
        }
    }
}

impl Actor for RosterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(ROSTER_MAILBOX);
        self.schedule(ctx);
    }
}

impl Handler<LoginReceived> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: LoginReceived, ctx: &mut Context<Self>) {
        let name = msg.login.name.clone();
        let endpoint = msg.login.endpoint;
        let pigeon = msg.login.pigeon.is_some();
        let source = msg.source;
        let (decision, actions) =
            self.roster
                .login_prepared(msg.login, source, Instant::now(), msg.prepared);
        match &decision {
            LoginDecision::Joined => self.stats.joined.fetch_add(1, Ordering::Relaxed),
            LoginDecision::Refreshed => self.stats.refreshed.fetch_add(1, Ordering::Relaxed),
            LoginDecision::Refused { reason, .. } => {
                self.stats.refused(reason);
                0
            }
        };
        match &decision {
            LoginDecision::Joined => info!(
                user = %name,
                %endpoint,
                %source,
                pigeon,
                online = self.roster.len(),
                revision = self.roster.revision(),
                "user joined; others told"
            ),
            LoginDecision::Refreshed => {
                debug!(user = %name, %endpoint, %source, "login repeated; Accept sent again")
            }
            LoginDecision::Refused { reason, detail } => {
                if let Some(held_back) = self.refusal_log.allow(Instant::now()) {
                    warn!(user = %name, %endpoint, %source, %reason, held_back, "login refused: {detail}")
                }
            }
        }
        self.dispatch(actions, ctx);
    }
}

impl Handler<LogoutReceived> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: LogoutReceived, ctx: &mut Context<Self>) {
        let name = msg.logout.name.clone();
        let endpoint = msg.logout.endpoint;
        let source = msg.source;
        let (decision, actions) = self.roster.logout(msg.logout, source, Instant::now());
        if decision == SessionDecision::Done {
            info!(
                user = %name,
                %endpoint,
                %source,
                online = self.roster.len(),
                revision = self.roster.revision(),
                "user left; others told"
            );
        } else {
            self.stats.ignored(false, &decision);
            self.log_ignored("logout", &name, source, &decision);
        }
        self.dispatch(actions, ctx);
    }
}

impl Handler<PingReceived> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: PingReceived, ctx: &mut Context<Self>) {
        let name = msg.ping.name.clone();
        let source = msg.source;
        let (decision, mut actions) = self.roster.ping(msg.ping, source, Instant::now());
        if decision == SessionDecision::Done {
            self.stats.keepalives.fetch_add(1, Ordering::Relaxed);
            debug!(user = %name, %source, "keepalive");
            if self.mail_waiting.contains(&name) {
                actions.extend(self.roster.mail_notice(name.as_str()));
            }
        } else {
            self.stats.ignored(true, &decision);
            self.log_ignored("keepalive", &name, source, &decision);
        }
        self.dispatch(actions, ctx);
    }
}

impl Handler<FromCluster> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: FromCluster, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let actions = match msg {
            FromCluster::Joined { name, user } => {
                debug!(user = %name, server = %user.server, endpoint = %user.endpoint, "online through another server");
                self.roster.remote_joined(name, user, now)
            }
            FromCluster::Left { name, server } => {
                debug!(user = %name, %server, "left through another server");
                self.roster.remote_left(&name, &server, now)
            }
            FromCluster::Gone { server } => {
                let (names, actions) = self.roster.server_gone(&server, now);
                if !names.is_empty() {
                    info!(%server, users = names.len(), "users of a server that is gone left");
                }
                actions
            }
            FromCluster::Registered { name, key } => {
                self.roster.remote_registered(name, key);
                Vec::new()
            }
            FromCluster::Punch(punch) => {
                debug!(user = %punch.to, peer = %punch.peer, "meeting arranged through another server");
                self.roster
                    .punch_from_elsewhere(punch)
                    .into_iter()
                    .collect()
            }
            FromCluster::Mail { name } => {
                let notice = self.roster.mail_notice(name.as_str());
                if notice.is_some() {
                    self.mail_waiting.insert(name);
                }
                notice.into_iter().collect()
            }
            FromCluster::ShareAgain => {
                for (name, entry) in self.roster.local_users() {
                    self.to_cluster(ToCluster::Joined { name, entry });
                }
                let registry: Vec<(UserName, pigeon_shared::PublicKey)> = self
                    .roster
                    .registry()
                    .iter()
                    .map(|(name, key)| (name.clone(), *key))
                    .collect();
                for (name, key) in registry {
                    self.to_cluster(ToCluster::Registered { name, key });
                }
                Vec::new()
            }
            FromCluster::Present { names } => {
                let (gone, actions) = self.roster.remote_present(&names, now);
                if !gone.is_empty() {
                    info!(
                        users = gone.len(),
                        "users of other servers left while Redis was away"
                    );
                }
                actions
            }
        };
        if let Some((_, stats)) = &self.cluster {
            let remote = u64::try_from(self.roster.remote_users().len()).unwrap_or(u64::MAX);
            stats.remote_users.store(remote, Ordering::Relaxed);
        }
        self.dispatch(actions, ctx);
    }
}

impl Handler<MeetReceived> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: MeetReceived, ctx: &mut Context<Self>) {
        let MeetReceived { meet, source, len } = msg;
        let (name, peer) = (meet.name.clone(), meet.peer.clone());
        match self.roster.meet(meet, source, len, Instant::now()) {
            Ok(actions) => {
                self.stats.meetings.fetch_add(1, Ordering::Relaxed);
                debug!(user = %name, %peer, "meeting arranged");
                self.dispatch(actions, ctx);
            }
            Err(why) => {
                self.stats.meets_refused.fetch_add(1, Ordering::Relaxed);
                if let Some(held_back) = self.refusal_log.allow(Instant::now()) {
                    warn!(user = %name, %peer, %source, reason = why.as_str(), held_back, "meeting not arranged");
                }
            }
        }
    }
}

impl Handler<RosterFetched> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: RosterFetched, ctx: &mut Context<Self>) {
        let (decision, mut actions) =
            self.roster
                .synced(&msg.name, msg.token, msg.revision, Instant::now());
        if decision == SessionDecision::Done {
            debug!(user = %msg.name, revision = msg.revision, catch_up = actions.len(), "roster fetched");
            if self.mail_waiting.contains(&msg.name) {
                actions.extend(self.roster.mail_notice(msg.name.as_str()));
            } else if self.cluster.is_some() {
                // Mail may have been left for it through another server.
                self.ask_mail(msg.name.clone(), ctx);
            }
        } else {
            debug!(user = %msg.name, ?decision, "roster fetched by an unknown session");
        }
        self.dispatch(actions, ctx);
    }
}

impl Handler<NotifyMail> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: NotifyMail, ctx: &mut Context<Self>) {
        for name in &msg.emptied {
            self.mail_waiting.remove(name);
        }
        let actions: Vec<RosterAction> = msg
            .names
            .iter()
            .filter_map(|name| self.roster.mail_notice(name.as_str()))
            .collect();
        // Users online through other servers are told by theirs.
        for name in &msg.names {
            if self.roster.remote_users().contains_key(name) {
                self.to_cluster(ToCluster::Mail { name: name.clone() });
            }
        }
        self.mail_waiting.extend(msg.names);
        self.dispatch(actions, ctx);
    }
}

impl Handler<SeedFetched> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: SeedFetched, ctx: &mut Context<Self>) {
        let (confirmed, actions) = self.roster.seed_fetched(msg.host, msg.revision);
        if confirmed > 0 {
            self.stats.seed_confirmed.fetch_add(1, Ordering::Relaxed);
            debug!(host = %msg.host, confirmed, catch_up = actions.len(), "seed-era sessions confirmed by their roster fetch");
        }
        self.dispatch(actions, ctx);
    }
}

impl Handler<Subscribe> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.subscribers.push(msg.subscriber);
    }
}

impl Handler<OnlineUsers> for RosterActor {
    type Result = MessageResult<OnlineUsers>;

    fn handle(&mut self, _: OnlineUsers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.roster.users())
    }
}

impl Handler<StopRoster> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: StopRoster, ctx: &mut Context<Self>) {
        // Changes still waiting go out first, then the goodbye.
        let mut actions = self.roster.flush_deltas();
        if msg.announce {
            actions.extend(self.roster.closing("the server is shutting down"));
            info!(
                online = self.roster.len(),
                "telling Pigeon clients the server is going"
            );
        }
        self.carry_out(actions);
        ctx.stop();
    }
}
