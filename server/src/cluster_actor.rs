//! `ClusterActor`: this server's link to the Redis that several servers
//! share (`pigeon-server --cluster URL`). It says every
//! [`ClusterConfig::heartbeat`] that this server is alive, and finds
//! servers that stopped saying so ([`ClusterConfig::timeout`]); it writes
//! this server's users' comings and goings and registrations to the shared
//! log, and reads the others' from it, for the roster. The keys and the
//! text are in [`crate::cluster`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use pigeon_shared::{
    Datagram, LogLimit, PeerAddr, PublicKey, Relay, RosterChange, Secure, SessionToken, UserName,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use tracing::{debug, info, warn};

use crate::cluster::{gone_servers, parse_users_value, users_value, Shared};
use crate::directory::{Directory, DirectoryEntry};
use crate::roster::{RemotePunch, RemoteUser};
use crate::udp_gateway_actor::{SendDatagram, UdpGatewayActor};

/// Default for [`ClusterConfig::heartbeat`].
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Default for [`ClusterConfig::timeout`].
pub const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries the shared log keeps (about; Redis trims whole nodes).
const LOG_LENGTH: usize = 100_000;
/// Entries read from the log at once.
const READ_BATCH: usize = 512;
/// How long one read of the log waits for news.
const READ_BLOCK: Duration = Duration::from_millis(500);

/// Longest wait for Redis to answer one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How this server joins the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Where Redis is: `redis://HOST:PORT` or `redis+unix:///PATH`.
    pub url: String,
    /// This server's id among the others.
    pub server_id: String,
    /// The prefix of every key this cluster uses (several clusters, or
    /// tests, can share one Redis).
    pub namespace: String,
    /// How often this server says it is alive.
    pub heartbeat: Duration,
    /// A server not heard from for this long is gone: its users leave.
    pub timeout: Duration,
}

impl ClusterConfig {
    /// A cluster at `url`, this server known as `server_id`.
    pub fn new(url: impl Into<String>, server_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            server_id: server_id.into(),
            namespace: "pigeon".into(),
            heartbeat: DEFAULT_HEARTBEAT,
            timeout: DEFAULT_CLUSTER_TIMEOUT,
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.namespace)
    }

    /// The hash of servers' last heartbeats (milliseconds since the epoch).
    pub fn servers_key(&self) -> String {
        format!("{}:servers", self.namespace)
    }
}

/// A server id: 1 to 64 characters of letters, digits, `-`, `_` and `.`
/// (it names keys and appears in logs).
pub fn valid_server_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A new server id: `s-` and 12 random hex digits.
pub fn generated_server_id() -> String {
    format!("s-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Why Redis did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis answered {got:?}, expected {expected:?}")]
    Unexpected { got: String, expected: String },
}

/// Figures of the link, readable from any thread.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// The last round trip to Redis, in microseconds.
    pub rtt_us: AtomicU64,
    /// Heartbeats written.
    pub heartbeats: AtomicU64,
    /// Commands that failed (Redis away, or too slow).
    pub errors: AtomicU64,
    /// Servers of the cluster alive at the last heartbeat (this one
    /// included).
    pub servers: AtomicU64,
    /// Users online through other servers.
    pub remote_users: AtomicU64,
    /// How old the last entry read from the log was when it was read, in
    /// milliseconds.
    pub lag_ms: AtomicU64,
    /// Log entries read from other servers.
    pub applied: AtomicU64,
    /// Frames relayed to users of other servers, and from them to users
    /// here.
    pub relayed_out: AtomicU64,
    pub relayed_in: AtomicU64,
}

/// Writes a key and reads it back: proves the link works both ways, and
/// how long that takes.
#[derive(Message, Debug)]
#[rtype(result = "Result<Duration, ClusterError>")]
pub struct RoundTrip;

/// What the cluster tells the roster.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum FromCluster {
    /// A user is online through another server.
    Joined { name: UserName, user: RemoteUser },
    /// A user online through `server` left.
    Left { name: UserName, server: String },
    /// A server is gone, and its users with it.
    Gone { server: String },
    /// A name was registered through another server.
    Registered { name: UserName, key: PublicKey },
    /// Something waits in the mailbox of `name` (told through whichever
    /// server it is online through).
    Mail { name: UserName },
    /// Another server arranged a meeting for a user online here.
    Punch(RemotePunch),
    /// Redis lost what this server shared (it restarted): share every
    /// user online here, and every name registered, again.
    ShareAgain,
    /// The users online through other servers, read afresh: any other
    /// listed here left while Redis was away.
    Present { names: Vec<UserName> },
}

/// An end-to-end frame for `to`, online through `server`: published to
/// that server, which relays it on.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct RelayAcross {
    pub server: Arc<str>,
    pub to: UserName,
    pub secure: Secure,
}

/// This server stops: with `leave`, it says so first (its users leave
/// every roster at once); without, it just goes quiet, as a crash would.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopCluster {
    pub leave: bool,
}

/// What the roster tells the cluster: its own users' comings and goings
/// and registrations.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum ToCluster {
    Joined {
        name: UserName,
        entry: DirectoryEntry,
    },
    Left {
        name: UserName,
        endpoint: PeerAddr,
    },
    Registered {
        name: UserName,
        key: PublicKey,
    },
    Mail {
        name: UserName,
    },
    /// A meeting for a user of `server`.
    Punch {
        server: Arc<str>,
        punch: RemotePunch,
    },
}

/// Removes a user from the users hash only if this server listed it.
const LEFT_SCRIPT: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 's', ARGV[3], 'c', ARGV[4])
";

/// Declares a server gone, once: only if its heartbeat is still older
/// than the cutoff; its users are taken off the users hash and the log
/// says so. 1 if this call did it.
const GONE_SCRIPT: &str = r"
local beat = redis.call('HGET', KEYS[1], ARGV[1])
if not beat or tonumber(beat) >= tonumber(ARGV[3]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local all = redis.call('HGETALL', KEYS[2])
local prefix = ARGV[1] .. ' '
for i = 1, #all, 2 do
  if string.sub(all[i + 1], 1, #prefix) == prefix then
    redis.call('HDEL', KEYS[2], all[i])
  end
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 's', ARGV[2], 'c', '!' .. ARGV[1])
return 1
";

/// The cluster's actor. See the module documentation.
pub struct ClusterActor {
    config: ClusterConfig,
    client: redis::Client,
    /// Where frames from other servers for users here go out.
    delivery: Option<(Addr<UdpGatewayActor>, Arc<Directory>)>,
    /// Commands; it connects again by itself after Redis went away.
    connection: ConnectionManager,
    /// A connection of its own for the blocking reads of the log.
    reader: ConnectionManager,
    roster: Option<Recipient<FromCluster>>,
    stats: Arc<ClusterStats>,
    /// The last log entry read.
    last_id: String,
    error_log: LogLimit,
}

impl ClusterActor {
    /// Connects to the Redis at `config.url` (within a few seconds, or an
    /// error saying why not).
    pub async fn connect(
        config: ClusterConfig,
        stats: Arc<ClusterStats>,
    ) -> Result<Self, ClusterError> {
        let client = redis::Client::open(config.url.as_str())?;
        let managed = |timeout| {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_response_timeout(timeout)
                .set_max_delay(Duration::from_secs(1))
        };
        let connection =
            within(client.get_connection_manager_with_config(managed(Some(COMMAND_TIMEOUT))))
                .await??;
        // Its reads wait for news on purpose (bounded below).
        let reader = within(client.get_connection_manager_with_config(managed(None))).await??;
        Ok(Self {
            config,
            client,
            delivery: None,
            connection,
            reader,
            roster: None,
            stats,
            last_id: "0-0".into(),
            error_log: LogLimit::default(),
        })
    }

    /// Tells `roster` what the other servers do.
    pub fn with_roster(mut self, roster: Recipient<FromCluster>) -> Self {
        self.roster = Some(roster);
        self
    }

    /// Frames other servers relay to users here go out through `gateway`
    /// (to users `directory` lists as online here, that proved they
    /// receive).
    pub fn with_delivery(
        mut self,
        gateway: Addr<UdpGatewayActor>,
        directory: Arc<Directory>,
    ) -> Self {
        self.delivery = Some((gateway, directory));
        self
    }

    fn relay_channel(&self, server: &str) -> String {
        format!("{}:relay:{server}", self.config.namespace)
    }

    fn punch_channel(&self, server: &str) -> String {
        format!("{}:punch:{server}", self.config.namespace)
    }

    /// Listens for frames other servers relay to this one's users.
    fn subscribe(&mut self, ctx: &mut Context<Self>) {
        let client = self.client.clone();
        let channel = self.relay_channel(&self.config.server_id);
        let punches = self.punch_channel(&self.config.server_id);
        let subscribed = async move {
            let mut pubsub = within(client.get_async_pubsub()).await??;
            within(pubsub.subscribe(&channel)).await??;
            within(pubsub.subscribe(&punches)).await??;
            Ok::<_, ClusterError>(pubsub)
        };
        ctx.spawn(
            subscribed
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(pubsub) => {
                        ctx.add_stream(pubsub.into_on_message());
                    }
                    Err(e) => {
                        act.failed("subscribing to relayed frames", &e);
                        ctx.run_later(Duration::from_secs(1), |act, ctx| act.subscribe(ctx));
                    }
                }),
        );
    }

    fn failed(&mut self, what: &str, error: &ClusterError) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.error_log.allow(Instant::now()) {
            warn!(error = %error, held_back, "cluster: {what} failed");
        }
    }

    fn tell_roster(&self, news: FromCluster) {
        if let Some(roster) = &self.roster {
            roster.do_send(news);
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let mut connection = self.connection.clone();
        let servers = self.config.key("servers");
        let users = self.config.key("users");
        let log = self.config.key("log");
        let id = self.config.server_id.clone();
        let timeout_ms = micros(self.config.timeout) / 1000;
        let beat = async move {
            let started = Instant::now();
            let now = now_ms();
            // 1: a new field. After the first heartbeat, Redis lost it.
            let created = within(
                redis::cmd("HSET")
                    .arg(&servers)
                    .arg(&id)
                    .arg(now)
                    .query_async::<i64>(&mut connection),
            )
            .await??
                == 1;
            let took = started.elapsed();
            let beats: Vec<(String, u64)> = within(
                redis::cmd("HGETALL")
                    .arg(&servers)
                    .query_async::<Vec<(String, u64)>>(&mut connection),
            )
            .await??;
            let mut gone = Vec::new();
            let found_gone = gone_servers(&beats, &id, now, timeout_ms);
            let alive = beats.len().saturating_sub(found_gone.len());
            for server in found_gone {
                let done: i64 = within(
                    redis::Script::new(GONE_SCRIPT)
                        .key(&servers)
                        .key(&users)
                        .key(&log)
                        .arg(&server)
                        .arg(&id)
                        .arg(now.saturating_sub(timeout_ms))
                        .arg(LOG_LENGTH)
                        .invoke_async(&mut connection),
                )
                .await??;
                if done == 1 {
                    gone.push(server);
                }
            }
            Ok::<_, ClusterError>((took, gone, created, alive))
        };
        ctx.spawn(beat.into_actor(self).map(|result, act, ctx| match result {
            Ok((took, gone, created, alive)) => {
                act.stats
                    .servers
                    .store(u64::try_from(alive).unwrap_or(u64::MAX), Ordering::Relaxed);
                let before = act.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                if created && before > 0 && act.roster.is_some() {
                    warn!("cluster: Redis lost this server's state (restarted?): sharing its users again");
                    act.tell_roster(FromCluster::ShareAgain);
                    // Once the others have shared theirs again, users that
                    // left meanwhile are found missing.
                    ctx.run_later(act.config.timeout, |act, ctx| act.bootstrap(ctx, true));
                }
                act.stats.rtt_us.store(micros(took), Ordering::Relaxed);
                for server in gone {
                    warn!(%server, "cluster: server gone (no heartbeat); its users leave");
                    act.tell_roster(FromCluster::Gone { server });
                }
            }
            Err(e) => act.failed("heartbeat", &e),
        }));
    }

    /// Reads what is online now, then follows the log from there (or,
    /// `again`, already following it, tells the roster who is present).
    fn bootstrap(&mut self, ctx: &mut Context<Self>, again: bool) {
        let mut connection = self.connection.clone();
        let users = self.config.key("users");
        let names = self.config.key("names");
        let log = self.config.key("log");
        let read = async move {
            // The log's end first: a change after it is read again from
            // the log (every change can be applied twice).
            let last: StreamRangeReply = within(
                redis::cmd("XREVRANGE")
                    .arg(&log)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut connection),
            )
            .await??;
            let last_id = last
                .ids
                .first()
                .map_or_else(|| "0-0".to_owned(), |entry| entry.id.clone());
            let online: Vec<(String, String)> = within(
                redis::cmd("HGETALL")
                    .arg(&users)
                    .query_async(&mut connection),
            )
            .await??;
            let registered: Vec<(String, String)> = within(
                redis::cmd("HGETALL")
                    .arg(&names)
                    .query_async(&mut connection),
            )
            .await??;
            Ok::<_, ClusterError>((last_id, online, registered))
        };
        ctx.spawn(read.into_actor(self).map(move |result, act, ctx| match result {
            Ok((last_id, online, registered)) => {
                for (name, key) in registered {
                    if let (Ok(name), Some(key)) = (UserName::parse(&name), PublicKey::parse(&key)) {
                        act.tell_roster(FromCluster::Registered { name, key });
                    }
                }
                let mut present = Vec::new();
                for (_, value) in online {
                    if let Some((server, change)) = parse_users_value(&value) {
                        if server != act.config.server_id {
                            present.push(change.name().clone());
                            act.apply(&server, Shared::Roster(change));
                        }
                    }
                }
                info!(users = present.len(), from = %last_id, "cluster: users online through other servers read");
                if again {
                    act.tell_roster(FromCluster::Present { names: present });
                } else {
                    act.last_id = last_id;
                    act.follow(ctx);
                }
            }
            Err(e) => {
                act.failed("reading what is online", &e);
                ctx.run_later(Duration::from_secs(1), move |act, ctx| act.bootstrap(ctx, again));
            }
        }));
    }

    /// Reads the next entries of the log (waiting a while for some), then
    /// again.
    fn follow(&mut self, ctx: &mut Context<Self>) {
        let mut reader = self.reader.clone();
        let log = self.config.key("log");
        let from = self.last_id.clone();
        let read = async move {
            let options = StreamReadOptions::default()
                .count(READ_BATCH)
                .block(usize::try_from(READ_BLOCK.as_millis()).unwrap_or(500));
            let reply: Option<StreamReadReply> = tokio::time::timeout(
                READ_BLOCK + COMMAND_TIMEOUT,
                redis::cmd("XREAD")
                    .arg(&options)
                    .arg("STREAMS")
                    .arg(&log)
                    .arg(&from)
                    .query_async(&mut reader),
            )
            .await
            .map_err(|_| ClusterError::Timeout(READ_BLOCK + COMMAND_TIMEOUT))??;
            Ok::<_, ClusterError>(reply)
        };
        ctx.spawn(read.into_actor(self).map(|result, act, ctx| match result {
            Ok(reply) => {
                for key in reply.map(|r| r.keys).unwrap_or_default() {
                    for entry in key.ids {
                        act.last_id = entry.id.clone();
                        let server: Option<String> = entry.get("s");
                        let change: Option<String> = entry.get("c");
                        if let Some(ms) = entry
                            .id
                            .split('-')
                            .next()
                            .and_then(|ms| ms.parse::<u64>().ok())
                        {
                            act.stats
                                .lag_ms
                                .store(now_ms().saturating_sub(ms), Ordering::Relaxed);
                        }
                        let (Some(server), Some(change)) = (server, change) else {
                            continue;
                        };
                        if server == act.config.server_id {
                            continue;
                        }
                        match Shared::decode(&change) {
                            Some(shared) => {
                                act.stats.applied.fetch_add(1, Ordering::Relaxed);
                                act.apply(&server, shared);
                            }
                            None => debug!(%server, %change, "cluster: log entry not understood"),
                        }
                    }
                }
                act.follow(ctx);
            }
            Err(e) => {
                act.failed("reading the log", &e);
                ctx.run_later(Duration::from_secs(1), |act, ctx| act.follow(ctx));
            }
        }));
    }

    /// A change another server shared, for the roster.
    fn apply(&mut self, server: &str, shared: Shared) {
        let news = match shared {
            Shared::Roster(RosterChange::Joined {
                name,
                endpoint,
                instance,
                key,
            }) => FromCluster::Joined {
                name,
                user: RemoteUser {
                    endpoint,
                    instance,
                    key,
                    server: Arc::from(server),
                },
            },
            Shared::Roster(RosterChange::Left { name, .. }) => FromCluster::Left {
                name,
                server: server.to_owned(),
            },
            Shared::Registered { name, key } => FromCluster::Registered { name, key },
            Shared::Gone { server } => FromCluster::Gone { server },
            Shared::Mail { name } => FromCluster::Mail { name },
        };
        self.tell_roster(news);
    }

    /// Writes one of this server's changes where the others read it.
    fn share(&mut self, change: ToCluster, ctx: &mut Context<Self>) {
        let mut connection = self.connection.clone();
        let id = self.config.server_id.clone();
        let users = self.config.key("users");
        let names = self.config.key("names");
        let log = self.config.key("log");
        let punches = match &change {
            ToCluster::Punch { server, .. } => self.punch_channel(server),
            _ => String::new(),
        };
        let write = async move {
            match change {
                ToCluster::Punch { punch, .. } => {
                    within(
                        redis::cmd("PUBLISH")
                            .arg(&punches)
                            .arg(punch.encode())
                            .query_async::<i64>(&mut connection),
                    )
                    .await??;
                }
                ToCluster::Joined { name, entry } => {
                    let change = RosterChange::Joined {
                        name: name.clone(),
                        endpoint: entry.endpoint,
                        instance: entry.instance,
                        key: entry.key,
                    };
                    let mut pipe = redis::pipe();
                    pipe.atomic()
                        .cmd("HSET")
                        .arg(&users)
                        .arg(name.as_str())
                        .arg(users_value(&id, &change))
                        .ignore()
                        .add_command(append(&log, &id, &change.to_string()))
                        .ignore();
                    within(pipe.query_async::<()>(&mut connection)).await??;
                }
                ToCluster::Left { name, endpoint } => {
                    let change = RosterChange::Left {
                        name: name.clone(),
                        endpoint,
                    };
                    within(
                        redis::Script::new(LEFT_SCRIPT)
                            .key(&users)
                            .key(&log)
                            .arg(name.as_str())
                            .arg(format!("{id} "))
                            .arg(&id)
                            .arg(change.to_string())
                            .arg(LOG_LENGTH)
                            .invoke_async::<String>(&mut connection),
                    )
                    .await??;
                }
                ToCluster::Mail { name } => {
                    let change = Shared::Mail { name }.encode();
                    within(append(&log, &id, &change).query_async::<String>(&mut connection))
                        .await??;
                }
                ToCluster::Registered { name, key } => {
                    let shared = Shared::Registered {
                        name: name.clone(),
                        key,
                    };
                    let mut pipe = redis::pipe();
                    pipe.atomic()
                        .cmd("HSETNX")
                        .arg(&names)
                        .arg(name.as_str())
                        .arg(key.to_string())
                        .ignore()
                        .add_command(append(&log, &id, &shared.encode()))
                        .ignore();
                    within(pipe.query_async::<()>(&mut connection)).await??;
                }
            }
            Ok::<_, ClusterError>(())
        };
        ctx.spawn(write.into_actor(self).map(|result, act, _| {
            if let Err(e) = result {
                act.failed("sharing a change", &e);
            }
        }));
    }
}

impl Actor for ClusterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(server_id = %self.config.server_id, url = %self.config.url, "joined the cluster");
        self.heartbeat(ctx);
        ctx.run_interval(self.config.heartbeat, |act, ctx| act.heartbeat(ctx));
        if self.roster.is_some() {
            self.bootstrap(ctx, false);
        }
        if self.delivery.is_some() {
            self.subscribe(ctx);
        }
    }
}

impl Handler<RelayAcross> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: RelayAcross, ctx: &mut Context<Self>) {
        let channel = self.relay_channel(&msg.server);
        let mut bytes = Vec::new();
        // The relay request's own form; the token means nothing here.
        Relay {
            token: SessionToken(0),
            to: msg.to,
            secure: msg.secure,
        }
        .encode(&mut bytes);
        let mut connection = self.connection.clone();
        let publish = async move {
            within(
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(bytes)
                    .query_async::<i64>(&mut connection),
            )
            .await??;
            Ok::<_, ClusterError>(())
        };
        ctx.spawn(publish.into_actor(self).map(|result, act, _| match result {
            Ok(()) => {
                act.stats.relayed_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => act.failed("relaying to another server", &e),
        }));
    }
}

impl StreamHandler<redis::Msg> for ClusterActor {
    fn handle(&mut self, msg: redis::Msg, _: &mut Context<Self>) {
        if msg.get_channel_name() == self.punch_channel(&self.config.server_id) {
            match std::str::from_utf8(msg.get_payload_bytes())
                .ok()
                .and_then(RemotePunch::decode)
            {
                Some(punch) => self.tell_roster(FromCluster::Punch(punch)),
                None => debug!("cluster: a meeting from another server does not read"),
            }
            return;
        }
        let Some((gateway, directory)) = &self.delivery else {
            return;
        };
        let Ok(relay) = Relay::decode(msg.get_payload_bytes()) else {
            debug!("cluster: a relayed frame from another server does not decode");
            return;
        };
        let to = relay.to.as_str();
        let entry = directory
            .get(to)
            .filter(|entry| entry.key.is_some())
            .filter(|_| directory.receives(to) && directory.home(to).is_none());
        match entry {
            Some(entry) => {
                self.stats.relayed_in.fetch_add(1, Ordering::Relaxed);
                gateway.do_send(SendDatagram {
                    to: entry.endpoint.socket_addr(),
                    datagram: Datagram::Relayed(relay.secure),
                });
            }
            None => debug!(%to, "cluster: a frame relayed for a user not online here"),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        warn!("cluster: the subscription to relayed frames ended; subscribing again");
        ctx.run_later(Duration::from_secs(1), |act, ctx| act.subscribe(ctx));
    }
}

impl Handler<StopCluster> for ClusterActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: StopCluster, _: &mut Context<Self>) -> Self::Result {
        let mut connection = self.connection.clone();
        let (servers, users, log) = (
            self.config.key("servers"),
            self.config.key("users"),
            self.config.key("log"),
        );
        let id = self.config.server_id.clone();
        let leave = async move {
            if msg.leave {
                // Declared gone by itself, now: its heartbeat is older
                // than any cutoff.
                let _ = within(
                    redis::Script::new(GONE_SCRIPT)
                        .key(&servers)
                        .key(&users)
                        .key(&log)
                        .arg(&id)
                        .arg(&id)
                        .arg(u64::MAX)
                        .arg(LOG_LENGTH)
                        .invoke_async::<i64>(&mut connection),
                )
                .await;
            }
        };
        Box::pin(leave.into_actor(self).map(|(), _, ctx| ctx.stop()))
    }
}

impl Handler<ToCluster> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: ToCluster, ctx: &mut Context<Self>) {
        self.share(msg, ctx);
    }
}

impl Handler<RoundTrip> for ClusterActor {
    type Result = ResponseFuture<Result<Duration, ClusterError>>;

    fn handle(&mut self, _: RoundTrip, _: &mut Context<Self>) -> Self::Result {
        let mut connection = self.connection.clone();
        let key = format!(
            "{}:round-trip:{}",
            self.config.namespace, self.config.server_id
        );
        let stats = self.stats.clone();
        Box::pin(async move {
            let started = Instant::now();
            let value = format!("{}", now_ms());
            within(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("PX")
                    .arg(10_000)
                    .query_async::<()>(&mut connection),
            )
            .await??;
            let got: String = within(
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<String>(&mut connection),
            )
            .await??;
            let took = started.elapsed();
            if got != value {
                return Err(ClusterError::Unexpected {
                    got,
                    expected: value,
                });
            }
            stats.rtt_us.store(micros(took), Ordering::Relaxed);
            Ok(took)
        })
    }
}

/// Appends `change`, written by server `id`, to the shared `log`.
fn append(log: &str, id: &str, change: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(log)
        .arg("MAXLEN")
        .arg("~")
        .arg(LOG_LENGTH)
        .arg("*")
        .arg("s")
        .arg(id)
        .arg("c")
        .arg(change);
    cmd
}

/// `future`, or a timeout after [`COMMAND_TIMEOUT`].
async fn within<T>(future: impl std::future::Future<Output = T>) -> Result<T, ClusterError> {
    tokio::time::timeout(COMMAND_TIMEOUT, future)
        .await
        .map_err(|_| ClusterError::Timeout(COMMAND_TIMEOUT))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| micros(since) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_name_keys_safely() {
        assert!(valid_server_id("a"));
        assert!(valid_server_id("eu-west.1_b"));
        assert!(valid_server_id(&generated_server_id()));
        assert!(!valid_server_id(""));
        assert!(!valid_server_id("a b"));
        assert!(!valid_server_id("a:b"));
        assert!(!valid_server_id(&"x".repeat(65)));
    }
}
