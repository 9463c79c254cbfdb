//! The load test: a server and N simulated peers in one process. Each peer
//! is a real client (the library and actors `pigeon` uses, its own UDP
//! socket, the real login flow and roster fetch); only its front end is a
//! [`sink::SinkActor`] that counts instead of printing.
//!
//! Phases: the raw UDP ceiling of this machine; a login storm (all peers at
//! once, until every roster holds everyone); a chat (every peer sends M
//! messages to random peers); a logout storm (until every client has left
//! and the server's roster is empty).

pub mod ceiling;
pub mod memory;
pub mod sink;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::{bail, Context as _};
use futures_util::future::join_all;
use pigeon_client::{ClientConfig, ClientHandle};
use pigeon_server::cluster_actor::ClusterConfig;
use pigeon_server::rate_limit::Rate;
use pigeon_server::{ServerConfig, ServerHandle};
use pigeon_shared::UserName;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tracing::info;

use self::ceiling::Ceiling;
use self::sink::{message_text, peer_name, Progress, Received, SinkActor, TakeReceived};

/// With several servers: how long one stays silent before the others
/// take it for gone.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(2);
/// With several servers: their liveness timeout (a client takes its
/// server for lost after 4/3 of it).
const CLUSTER_LIVENESS: Duration = Duration::from_secs(6);

/// What a load run is told.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Simulated peers.
    pub peers: usize,
    /// Messages each peer sends.
    pub messages: usize,
    /// How many of the peers speak only the seed's plain protocol.
    pub legacy: usize,
    /// A server to use instead of one in this process.
    pub server: Option<SocketAddr>,
    /// Seed for the choice of message targets.
    pub seed: u64,
    /// Arbiters (threads) the peers are spread over.
    pub arbiters: usize,
    /// Receiving sockets in the ceiling measurement.
    pub ceiling_receivers: usize,
    /// How long the ceiling is measured.
    pub ceiling_duration: Duration,
    /// Longest wait for each phase.
    pub phase_timeout: Duration,
    /// Whether the peers have keys, and so chat end-to-end encrypted
    /// (without: as clients from before keys, in clear).
    pub encrypt: bool,
    /// How many peers (after the seed-era ones) never look for a direct
    /// path: their conversations stay on the server's relay.
    pub relayed: usize,
    /// In-process servers the peers are spread over (more than one: a
    /// cluster over the Redis at `redis`).
    pub servers: usize,
    /// The Redis a cluster of servers shares.
    pub redis: Option<String>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            peers: 500,
            messages: 10,
            legacy: 0,
            server: None,
            seed: 1,
            arbiters: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ceiling_receivers: 500,
            ceiling_duration: Duration::from_millis(1500),
            phase_timeout: Duration::from_secs(120),
            encrypt: true,
            relayed: 0,
            servers: 1,
            redis: None,
        }
    }
}

/// Everything a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub peers: usize,
    /// Servers the peers were spread over (in-process; a cluster if more
    /// than one).
    pub servers: usize,
    pub legacy_peers: usize,
    pub messages_per_peer: usize,
    pub profile: &'static str,
    /// Raw UDP datagrams per second on this machine, measured in this run.
    pub ceiling_datagrams_per_s: f64,
    pub ceiling: Ceiling,
    /// The seed design's cost of the storm, N·(N−1)/2 datagrams, at the
    /// ceiling rate.
    pub naive_floor_s: f64,
    /// Time until every peer's roster held every peer.
    pub converge_s: f64,
    /// `converge_s / naive_floor_s`.
    pub converge_vs_floor: f64,
    /// Datagrams the server sent during the storm (in-process server only).
    pub server_datagrams: Option<u64>,
    pub server_datagrams_per_s: Option<f64>,
    /// `server_datagrams_per_s / ceiling_datagrams_per_s`.
    pub server_vs_ceiling: Option<f64>,
    /// Roster entries the peers learnt in the storm: N·(N−1).
    pub roster_events: u64,
    pub roster_events_per_s: f64,
    /// `roster_events_per_s / ceiling_datagrams_per_s`.
    pub events_vs_ceiling: f64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    pub messages_reordered: u64,
    pub messages_failed: u64,
    pub chat_s: f64,
    /// Whether chat was end-to-end encrypted.
    pub encrypted: bool,
    /// End-to-end handshakes completed in the chat phase (each counted by
    /// both ends), and per second of it.
    pub handshakes: u64,
    pub handshakes_per_s: f64,
    /// Peers forced onto the relay; end-to-end frames the server relayed
    /// in the chat phase, and per second of it.
    pub relayed_peers: usize,
    pub relayed_frames: u64,
    pub relayed_per_s: f64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_max_us: u64,
    /// With several servers: one is made to vanish after the chat; the
    /// peers it served, and the time until all of them were logged in
    /// again through the others.
    pub rehomed_peers: usize,
    pub rehome_s: Option<f64>,
    /// Time until every peer logged out and the server's roster was empty.
    pub logout_s: f64,
    /// Datagrams the server sent during the logout storm.
    pub logout_server_datagrams: Option<u64>,
    /// Heap bytes per online user in the server's roster (measured on the
    /// roster alone, with a counting allocator; `None` without one).
    pub server_bytes_per_user: Option<f64>,
    /// Heap bytes per roster entry in a client's session.
    pub client_bytes_per_roster_entry: Option<f64>,
    /// Live heap once every roster held everyone.
    pub heap_at_convergence_bytes: Option<u64>,
    /// Largest live heap during the login storm.
    pub peak_heap_in_storm_bytes: Option<u64>,
    /// Largest live heap during the run.
    pub peak_heap_bytes: Option<u64>,
    /// Peak resident memory of the whole run.
    pub peak_rss_bytes: Option<u64>,
    /// Whether every roster converged and every message arrived exactly
    /// once, in order.
    pub ok: bool,
    pub failures: Vec<String>,
}

/// What the driver shows while it runs.
pub trait Watcher {
    /// A phase started, with its total (`0`: unknown).
    fn phase(&mut self, name: &str, total: u64);
    /// Progress in the current phase.
    fn progress(&mut self, done: u64);
}

/// A watcher that shows nothing.
pub struct Quiet;

impl Watcher for Quiet {
    fn phase(&mut self, _: &str, _: u64) {}
    fn progress(&mut self, _: u64) {}
}

/// The build profile this code was compiled with.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Peak resident memory of this process, from /proc.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Raises the open-file limit to what `peers` need, as far as the system
/// allows, and says clearly when it cannot.
pub fn raise_fd_limit(peers: usize) -> anyhow::Result<u64> {
    // One UDP socket per peer, a TCP connection each while it fetches, the
    // ceiling's sockets and the server's: with room to spare.
    let needed = (peers as u64) * 2 + 1024;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    if limit.rlim_cur >= needed {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max.min(needed.max(limit.rlim_cur)),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        bail!(
            "cannot raise the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    if raised.rlim_cur < needed {
        bail!(
            "{peers} peers need about {needed} open files, but this system allows at most {} \
             (raise the hard limit, e.g. `ulimit -Hn {needed}` as root, or use fewer peers)",
            raised.rlim_cur
        );
    }
    Ok(raised.rlim_cur)
}

/// A running crowd: its peers and their sinks.
struct Crowd {
    handles: Vec<ClientHandle>,
    sinks: Vec<Addr<SinkActor>>,
    _arbiters: Vec<Arbiter>,
}

/// The peers' configurations, made before the storm: a client has its key
/// (and so its key pair) before it logs in.
fn crowd_configs(config: &LoadConfig, servers: &[SocketAddr]) -> anyhow::Result<Vec<ClientConfig>> {
    (0..config.peers)
        .map(|index| {
            let server = servers
                .get(index % servers.len().max(1))
                .copied()
                .context("no server")?;
            let mut client = ClientConfig::new(UserName::parse(&peer_name(index))?, server);
            // Every other server of the cluster, in turn after its own.
            let count = servers.len();
            client.alternates = (1..count)
                .filter_map(|step| servers.get((index + step) % count).copied())
                .collect();
            // The first `legacy` peers speak the seed's protocol only; the
            // `relayed` after them keep to the relay.
            client.plain_protocol = index < config.legacy;
            // A crowd of thousands in one process: each peer pins only
            // the keys it uses, not everyone's.
            client.pin_on_sight = false;
            client.relay_only = (config.legacy..config.legacy + config.relayed).contains(&index);
            if !config.encrypt {
                client.identity = None;
            }
            Ok(client)
        })
        .collect()
}

/// Starts one client for each of `configs`, spread over `arbiters`
/// threads.
async fn start_crowd(
    configs: Vec<ClientConfig>,
    arbiters: usize,
    progress: &Arc<Progress>,
) -> anyhow::Result<Crowd> {
    let peers = configs.len();
    let arbiters: Vec<Arbiter> = (0..arbiters.max(1)).map(|_| Arbiter::new()).collect();
    let mut shares: Vec<Vec<(usize, ClientConfig)>> = arbiters.iter().map(|_| Vec::new()).collect();
    let count = shares.len();
    for (index, client) in configs.into_iter().enumerate() {
        if let Some(share) = shares.get_mut(index % count) {
            share.push((index, client));
        }
    }
    let mut pending = Vec::new();
    for (arbiter, share) in arbiters.iter().zip(shares) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let progress = progress.clone();
        arbiter.spawn(async move {
            let started: anyhow::Result<Vec<_>> = share
                .into_iter()
                .map(|(index, client)| {
                    let sink = SinkActor::new(peers, progress.clone()).start();
                    let handle = ClientHandle::start(client, sink.clone().recipient())?;
                    Ok((index, handle, sink))
                })
                .collect();
            let _ = tx.send(started);
        });
        pending.push(rx);
    }
    let mut started = Vec::new();
    for rx in pending {
        started.extend(rx.await.context("a peer arbiter stopped")??);
    }
    started.sort_by_key(|(index, _, _)| *index);
    let (handles, sinks) = started.into_iter().map(|(_, h, s)| (h, s)).unzip();
    Ok(Crowd {
        handles,
        sinks,
        _arbiters: arbiters,
    })
}

/// Waits until `done` holds, reporting `count` to `watcher`, for at most
/// `timeout`. `false` on timeout.
async fn wait_until(
    timeout: Duration,
    watcher: &mut dyn Watcher,
    mut count: impl FnMut() -> (u64, bool),
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let (done, finished) = count();
        watcher.progress(done);
        if finished {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    u64::from(sorted[rank.min(sorted.len() - 1)])
}

/// Runs the whole load test. Must run inside an actix `System`.
/// `heap_bytes` reads the allocator's live byte count, if the caller
/// installed a counting allocator.
pub async fn run(
    config: LoadConfig,
    watcher: &mut dyn Watcher,
    heap_bytes: Option<fn() -> usize>,
    peak_heap: Option<fn() -> usize>,
) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(config.peers >= 2, "a load run needs at least two peers");
    anyhow::ensure!(
        config.legacy <= config.peers,
        "more legacy peers than peers"
    );
    anyhow::ensure!(
        config.legacy + config.relayed <= config.peers,
        "more seed-era and relayed peers than peers"
    );
    anyhow::ensure!(
        config.relayed == 0 || config.encrypt,
        "the relay carries only end-to-end encrypted chat: --relayed needs keys"
    );
    let n = config.peers;
    let mut failures = Vec::new();

    // Memory per user and per roster entry, on the data structures alone.
    let (server_bytes_per_user, client_bytes_per_roster_entry) = match heap_bytes {
        Some(read) => {
            let (server, client) = memory::measure(n.max(1000), read);
            (Some(server), Some(client))
        }
        None => (None, None),
    };

    // The ceiling, measured in this run, on this machine, now.
    watcher.phase("ceiling", 0);
    let ceiling = tokio::task::spawn_blocking({
        let receivers = config.ceiling_receivers;
        let duration = config.ceiling_duration;
        // A login broadcast to a seed-era client, `login,p123,127.0.0.1:54321`.
        move || ceiling::best_of(3, receivers, 54, duration)
    })
    .await??;
    let ceiling_rate = ceiling.datagrams_per_s();
    let naive_datagrams = (n as f64) * (n as f64 - 1.0) / 2.0;
    let naive_floor_s = naive_datagrams / ceiling_rate;
    info!(ceiling = ceiling_rate, naive_floor_s, "ceiling measured");

    // The servers: in this process, sized for the crowd, unless given;
    // several share a Redis as a cluster.
    let namespace = format!("load-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let mut servers = Vec::new();
    let in_process_servers = if config.server.is_some() {
        0
    } else {
        config.servers.max(1)
    };
    for index in 0..in_process_servers {
        let mut server_config = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        if config.servers > 1 {
            let url = config
                .redis
                .clone()
                .context("several servers share a Redis: give --redis URL")?;
            let mut cluster = ClusterConfig::new(url, format!("s{index}"));
            cluster.namespace = namespace.clone();
            cluster.timeout = CLUSTER_TIMEOUT;
            cluster.heartbeat = CLUSTER_TIMEOUT / 5;
            server_config.cluster = Some(cluster);
            // Clients find a vanished server within 4/3 of this.
            server_config.liveness_timeout = CLUSTER_LIVENESS;
        }
        server_config.max_users = n + 16;
        server_config.max_users_per_host = n + 16;
        // ... each registering its name.
        server_config.registrations_per_host = u32::try_from(n + 16).unwrap_or(u32::MAX);
        // Every peer is on this one host: the host's budget must cover a
        // storm of all of them.
        server_config.rate_limits.per_host =
            Rate::per_second(u32::try_from(n * 20).unwrap_or(u32::MAX).max(5_000));
        // ... and its share of roster connections a storm of all of them
        // fetching at once.
        server_config.tcp.max_per_host = server_config.tcp.max_per_host.max(n + 16);
        servers.push(ServerHandle::start(server_config).await?);
    }
    let server_addrs: Vec<SocketAddr> = match config.server {
        Some(addr) => vec![addr],
        None => servers.iter().map(ServerHandle::udp_addr).collect(),
    };
    let in_process = !servers.is_empty();
    let sent = |servers: &[ServerHandle]| servers.iter().map(|s| s.stats().sent).sum::<u64>();
    let relayed = |servers: &[ServerHandle]| servers.iter().map(|s| s.stats().relayed).sum::<u64>();
    let online = |servers: &[ServerHandle]| {
        servers
            .iter()
            .map(ServerHandle::online_count)
            .sum::<usize>()
    };
    let sent_before = in_process.then(|| sent(&servers));

    // Phase 1: the login storm.
    let progress = Arc::new(Progress::new());
    let configs = crowd_configs(&config, &server_addrs)?;
    watcher.phase("login storm", n as u64);
    let storm_start = Instant::now();
    let crowd = start_crowd(configs, config.arbiters, &progress).await?;
    let started_s = storm_start.elapsed().as_secs_f64();
    let mut ready_at = Vec::new();
    let converged = wait_until(config.phase_timeout, watcher, || {
        let done = progress.converged.load(Ordering::Relaxed);
        let refused = progress.refused.load(Ordering::Relaxed);
        let ready = progress.ready.load(Ordering::Relaxed);
        while ready_at.len() < 4 && ready * 4 >= n * (ready_at.len() + 1) {
            ready_at.push(storm_start.elapsed().as_secs_f64());
        }
        (done as u64, done == n || refused > 0)
    })
    .await;
    info!(
        started_s,
        ?ready_at,
        "login storm: peers started; a quarter, half, three quarters, all ready"
    );
    let converge_s = storm_start.elapsed().as_secs_f64();
    let heap_at_convergence = heap_bytes.map(|read| read() as u64);
    let peak_heap_in_storm = peak_heap.map(|read| read() as u64);
    let server_datagrams = sent_before.map(|before| sent(&servers) - before);
    let refused = progress.refused.load(Ordering::Relaxed);
    if refused > 0 {
        failures.push(format!("{refused} peers could not log in"));
    }
    if !converged || progress.converged.load(Ordering::Relaxed) != n {
        failures.push(format!(
            "only {} of {n} rosters converged within {:?}",
            progress.converged.load(Ordering::Relaxed),
            config.phase_timeout
        ));
    }
    // The sinks count roster events; check the clients' own rosters too,
    // one at a time (all of them at once would double the memory).
    let mut short = 0;
    for handle in &crowd.handles {
        if handle.users().await.len() != n {
            short += 1;
        }
    }
    if short > 0 {
        failures.push(format!(
            "{short} clients' rosters do not hold all {n} users"
        ));
    }
    let roster_events = (n as u64) * (n as u64 - 1);

    // Phase 2: chat. Every peer sends M messages to random other peers.
    let total = (n * config.messages) as u64;
    watcher.phase("chat", total);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut plan = Vec::with_capacity(total as usize);
    let mut next_seq = vec![std::collections::HashMap::<usize, u32>::new(); n];
    for _ in 0..config.messages {
        for (from, seqs) in next_seq.iter_mut().enumerate() {
            let mut to = rng.random_range(0..n - 1);
            if to >= from {
                to += 1;
            }
            let seq = seqs.entry(to).or_insert(0);
            plan.push((from, to, *seq));
            *seq += 1;
        }
    }
    let relayed_before = in_process.then(|| relayed(&servers));
    let chat_start = Instant::now();
    let mut send_errors = 0u64;
    // Sends go out in waves, each message stamped just before it leaves.
    for wave in plan.chunks(256) {
        let sends = wave.iter().map(|&(from, to, seq)| {
            let handle = crowd.handles[from].clone();
            let text = message_text(seq, progress.now_us());
            async move {
                let to = UserName::parse(&peer_name(to))?;
                handle
                    .send_text(to, text)
                    .await
                    .map_err(anyhow::Error::from)
            }
        });
        send_errors += join_all(sends).await.iter().filter(|r| r.is_err()).count() as u64;
        watcher.progress(progress.received.load(Ordering::Relaxed));
    }
    if send_errors > 0 {
        failures.push(format!("{send_errors} messages could not be sent"));
    }
    let messages_sent = total - send_errors;
    let all_received = wait_until(config.phase_timeout, watcher, || {
        let received = progress.received.load(Ordering::Relaxed);
        let failed = progress.failed.load(Ordering::Relaxed);
        (received, received + failed >= messages_sent)
    })
    .await;
    let chat_s = chat_start.elapsed().as_secs_f64();
    let relayed_frames = relayed_before.map_or(0, |before| relayed(&servers) - before);
    let handshakes: u64 = crowd
        .handles
        .iter()
        .map(|h| h.stats().handshakes.load(Ordering::Relaxed))
        .sum();
    let received: Vec<Received> = join_all(crowd.sinks.iter().map(|s| s.send(TakeReceived)))
        .await
        .into_iter()
        .map(|r| r.unwrap_or_default())
        .collect();
    let delivered: u64 = received.iter().map(|r| r.unique).sum();
    let duplicated: u64 = received.iter().map(|r| r.duplicated).sum();
    let reordered: u64 = received.iter().map(|r| r.reordered).sum();
    let garbled: u64 = received.iter().map(|r| r.garbled).sum();
    let mut latencies: Vec<u32> = received.into_iter().flat_map(|r| r.latencies_us).collect();
    latencies.sort_unstable();
    let lost = messages_sent.saturating_sub(delivered);
    let failed = progress.failed.load(Ordering::Relaxed);
    if !all_received || lost > 0 {
        failures.push(format!("{lost} of {messages_sent} messages lost"));
    }
    if duplicated > 0 || reordered > 0 || garbled > 0 {
        failures.push(format!(
            "{duplicated} messages duplicated, {reordered} reordered, {garbled} garbled"
        ));
    }
    if failed > 0 {
        failures.push(format!("{failed} messages reported failed"));
    }

    // With several servers: one vanishes (as a crash would); the peers it
    // served log in again through the others.
    let lost_before = progress.server_lost.load(Ordering::Relaxed);
    let (mut rehomed_peers, mut rehome_s) = (0, None);
    if servers.len() > 1 {
        rehomed_peers = (0..n).filter(|i| i % servers.len() == 0).count();
        watcher.phase("server killed, peers moving", rehomed_peers as u64);
        let before = progress.reconnected.load(Ordering::Relaxed);
        let killed = servers.remove(0);
        let kill_start = Instant::now();
        killed.vanish().await;
        let moved = wait_until(config.phase_timeout, watcher, || {
            let done = progress.reconnected.load(Ordering::Relaxed) - before;
            (done as u64, done >= rehomed_peers)
        })
        .await;
        if moved {
            rehome_s = Some(kill_start.elapsed().as_secs_f64());
        } else {
            failures.push(format!(
                "only {} of the {rehomed_peers} peers of the vanished server logged in again within {:?}",
                progress.reconnected.load(Ordering::Relaxed) - before,
                config.phase_timeout
            ));
        }
    }

    // Phase 3: the logout storm.
    watcher.phase("logout storm", n as u64);
    let logout_start = Instant::now();
    let sent_before_logout = in_process.then(|| sent(&servers));
    for handle in &crowd.handles {
        handle.logout();
    }
    let logged_out = wait_until(config.phase_timeout, watcher, || {
        let done = progress.logged_out.load(Ordering::Relaxed);
        let empty = online(&servers) == 0;
        (done as u64, done == n && empty)
    })
    .await;
    let logout_s = logout_start.elapsed().as_secs_f64();
    let logout_server_datagrams = sent_before_logout.map(|before| sent(&servers) - before);
    if !logged_out {
        failures.push(format!(
            "{} of {n} peers logged out within {:?}; {} still in the server's roster",
            progress.logged_out.load(Ordering::Relaxed),
            config.phase_timeout,
            online(&servers)
        ));
    }
    // Those of the vanished server lost it, as they should have.
    let lost_server = lost_before
        + (progress.server_lost.load(Ordering::Relaxed) - lost_before)
            .saturating_sub(rehomed_peers);
    if lost_server > 0 {
        failures.push(format!(
            "{lost_server} peers lost their server during the run"
        ));
    }
    for server in servers {
        server.shutdown().await;
    }

    let server_datagrams_per_s = server_datagrams.map(|d| d as f64 / converge_s);
    Ok(LoadReport {
        peers: n,
        servers: server_addrs.len(),
        legacy_peers: config.legacy,
        messages_per_peer: config.messages,
        profile: profile(),
        ceiling_datagrams_per_s: ceiling_rate,
        ceiling,
        naive_floor_s,
        converge_s,
        converge_vs_floor: converge_s / naive_floor_s,
        server_datagrams,
        server_datagrams_per_s,
        server_vs_ceiling: server_datagrams_per_s.map(|r| r / ceiling_rate),
        roster_events,
        roster_events_per_s: roster_events as f64 / converge_s,
        events_vs_ceiling: roster_events as f64 / converge_s / ceiling_rate,
        messages_sent,
        messages_delivered: delivered,
        messages_lost: lost,
        messages_duplicated: duplicated,
        messages_reordered: reordered,
        messages_failed: failed,
        chat_s,
        encrypted: config.encrypt,
        handshakes,
        handshakes_per_s: handshakes as f64 / chat_s.max(1e-9),
        relayed_peers: config.relayed,
        relayed_frames,
        relayed_per_s: relayed_frames as f64 / chat_s.max(1e-9),
        latency_p50_us: percentile(&latencies, 50.0),
        latency_p99_us: percentile(&latencies, 99.0),
        latency_max_us: latencies.last().copied().map_or(0, u64::from),
        rehomed_peers,
        rehome_s,
        logout_s,
        logout_server_datagrams,
        server_bytes_per_user,
        client_bytes_per_roster_entry,
        heap_at_convergence_bytes: heap_at_convergence,
        peak_heap_in_storm_bytes: peak_heap_in_storm,
        peak_heap_bytes: peak_heap.map(|read| read() as u64),
        peak_rss_bytes: peak_rss_bytes(),
        ok: failures.is_empty(),
        failures,
    })
}
