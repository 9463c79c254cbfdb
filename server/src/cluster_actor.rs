//! `ClusterActor`: this server's link to the Redis that several servers
//! share (`pigeon-server --cluster URL`). It holds one multiplexed
//! connection, says every [`ClusterConfig::heartbeat`] that this server is
//! alive (its id and the time, in a hash all servers read), and measures
//! Redis's round-trip time as it does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use redis::aio::MultiplexedConnection;
use tracing::{info, warn};

/// Default for [`ClusterConfig::heartbeat`].
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

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
}

impl ClusterConfig {
    /// A cluster at `url`, this server known as `server_id`.
    pub fn new(url: impl Into<String>, server_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            server_id: server_id.into(),
            namespace: "pigeon".into(),
            heartbeat: DEFAULT_HEARTBEAT,
        }
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
}

/// Writes a key and reads it back: proves the link works both ways, and
/// how long that takes.
#[derive(Message, Debug)]
#[rtype(result = "Result<Duration, ClusterError>")]
pub struct RoundTrip;

/// The cluster's actor. See the module documentation.
pub struct ClusterActor {
    config: ClusterConfig,
    connection: MultiplexedConnection,
    stats: Arc<ClusterStats>,
}

impl ClusterActor {
    /// Connects to the Redis at `config.url` (within a few seconds, or an
    /// error saying why not).
    pub async fn connect(
        config: ClusterConfig,
        stats: Arc<ClusterStats>,
    ) -> Result<Self, ClusterError> {
        let client = redis::Client::open(config.url.as_str())?;
        let connection = within(client.get_multiplexed_async_connection()).await??;
        Ok(Self {
            config,
            connection,
            stats,
        })
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let mut connection = self.connection.clone();
        let key = self.config.servers_key();
        let id = self.config.server_id.clone();
        let beat = async move {
            let started = Instant::now();
            let written: Result<(), ClusterError> = within(
                redis::cmd("HSET")
                    .arg(&key)
                    .arg(&id)
                    .arg(now_ms())
                    .query_async::<i64>(&mut connection),
            )
            .await
            .and_then(|answer| answer.map(drop).map_err(ClusterError::from));
            (written, started.elapsed())
        };
        ctx.spawn(
            beat.into_actor(self)
                .map(|(written, took), act, _| match written {
                    Ok(()) => {
                        act.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                        act.stats.rtt_us.store(micros(took), Ordering::Relaxed);
                    }
                    Err(e) => {
                        act.stats.errors.fetch_add(1, Ordering::Relaxed);
                        warn!(error = %e, "heartbeat not written");
                    }
                }),
        );
    }
}

impl Actor for ClusterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(server_id = %self.config.server_id, url = %self.config.url, "joined the cluster");
        self.heartbeat(ctx);
        ctx.run_interval(self.config.heartbeat, |act, ctx| act.heartbeat(ctx));
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
