//! `pigeon-server`: the presence server, from the command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pigeon_server::cluster_actor::{generated_server_id, valid_server_id, ClusterConfig};
use pigeon_server::rate_limit::{Rate, DEFAULT_RATE_PER_ADDRESS, DEFAULT_RATE_PER_HOST};
use pigeon_server::relay::{RelayConfig, DEFAULT_RELAY_GLOBAL_RATE};
use pigeon_server::roster::{
    DEFAULT_MAX_REGISTERED, DEFAULT_MAX_USERS, DEFAULT_MAX_USERS_PER_HOST,
    DEFAULT_REGISTRATIONS_PER_HOST, DEFAULT_RELAY_RATE,
};
use pigeon_server::store::{MailLimits, Store, StoreChoice};
use pigeon_server::tcp_roster_actor::TcpRosterConfig;
use pigeon_server::{BoundServer, ServerConfig, DEFAULT_UDP_ADDR};
use pigeon_shared::log::init_tracing;
use pigeon_shared::UserName;
use tracing::{error, info};

/// Pigeon's presence server: keeps the list of who is online and tells
/// everyone when it changes. Chat goes peer to peer, not through here,
/// except, end-to-end encrypted, between peers that cannot reach each
/// other directly.
#[derive(Parser, Debug)]
#[command(name = "pigeon-server", version, about)]
struct Args {
    /// UDP address to receive logins and logouts on (port 0: any free port).
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_UDP_ADDR)]
    udp: SocketAddr,

    /// TCP port for roster snapshots, on the same IP (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    tcp_port: u16,

    /// TCP port for Pigeon-format roster snapshots (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    roster_port: u16,

    /// Most users online at once; later logins are refused `server-full`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_USERS)]
    max_users: usize,

    /// Most users online from one host; later logins from it are refused
    /// `host-full`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_USERS_PER_HOST)]
    max_users_per_host: usize,

    /// Most seed-era users online at once (they send no keepalives and are
    /// never evicted); later seed-style logins are refused `server-full`
    /// [default: half of --max-users]
    #[arg(long, value_name = "N")]
    max_seed_users: Option<usize>,

    /// Most names registered to keys in all; past it, new names stay
    /// unregistered (their users chat as usual, but the name is not
    /// theirs) until there is room.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_REGISTERED)]
    max_registered: usize,

    /// New names one host may register to keys in an hour (a burst of as
    /// many); past it, new names from it stay unregistered for now, and are
    /// registered at a later login.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REGISTRATIONS_PER_HOST, value_parser = clap::value_parser!(u32).range(1..))]
    registrations_per_host: u32,

    /// Evict a Pigeon client not heard from for this long (clients send a
    /// keepalive every sixth of it). Seed-era clients are never evicted.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = parse_seconds)]
    liveness_timeout: f64,

    /// Datagrams per second accepted from one address (burst: twice that).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RATE_PER_ADDRESS)]
    rate_per_address: u32,

    /// Datagrams per second accepted from one host (burst: twice that).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RATE_PER_HOST)]
    rate_per_host: u32,

    /// Roster connections (TCP) served at once to one host; more are
    /// closed at once and their clients try again.
    #[arg(long, value_name = "N", default_value_t = TcpRosterConfig::default().max_per_host)]
    roster_connections_per_host: usize,

    /// Keep the server's key and the registered names in this folder
    /// [default: pigeon-server in the per-user data folder, such as
    /// ~/.local/share/pigeon-server]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,

    /// Keep nothing on disk: a new server key each start, and names
    /// registered only until it stops.
    #[arg(long, conflicts_with = "data")]
    ephemeral: bool,

    /// Free NAME, registered to a key that was lost, so that the next
    /// login under it registers it again; print what was done and exit.
    #[arg(long, value_name = "NAME", value_parser = parse_name, conflicts_with = "ephemeral")]
    forget: Option<UserName>,

    /// Offline messages kept for one user at most; a message past it is
    /// refused and its sender told.
    #[arg(long, value_name = "N", default_value_t = MailLimits::default().max_messages)]
    mailbox_messages: usize,

    /// Bytes of offline messages (sealed) kept for one user at most.
    #[arg(long, value_name = "BYTES", default_value_t = MailLimits::default().max_bytes)]
    mailbox_bytes: usize,

    /// Days an offline message is kept before it is dropped unread.
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    mailbox_days: u32,

    /// End-to-end encrypted frames relayed for one Pigeon user per second,
    /// for peers that cannot reach each other directly (behind NATs); what
    /// is over it is dropped and counted, and retransmission recovers it.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RELAY_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    relay_rate: u32,

    /// Relay nothing: peers that cannot reach each other directly cannot
    /// chat.
    #[arg(long, conflicts_with = "relay_rate")]
    no_relay: bool,

    /// Serve the server's counters, the online count and the datagram
    /// rates for Prometheus at http://IP:PORT/metrics (port 0: any free
    /// port).
    #[arg(long, value_name = "IP:PORT")]
    metrics: Option<SocketAddr>,

    /// Run as one of several servers sharing their users, names and
    /// change log through the Redis at URL (redis://HOST:PORT or
    /// redis+unix:///PATH).
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,

    /// This server's id in the cluster: letters, digits, '-', '_', '.'
    /// (default: generated, and printed in the listening line).
    #[arg(long, value_name = "ID", requires = "cluster", value_parser = parse_server_id)]
    server_id: Option<String>,

    /// Seconds without a heartbeat after which a server of the cluster is
    /// taken for gone, and its users leave.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, requires = "cluster", value_parser = parse_seconds)]
    cluster_timeout: f64,

    /// Prefix of the cluster's keys in Redis (several clusters can share
    /// one Redis).
    #[arg(long, value_name = "NAME", default_value = "pigeon", requires = "cluster", value_parser = parse_server_id)]
    cluster_namespace: String,
}

fn parse_server_id(text: &str) -> Result<String, String> {
    if valid_server_id(text) {
        Ok(text.to_owned())
    } else {
        Err("1 to 64 letters, digits, '-', '_' or '.'".to_owned())
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.2..=86_400.0).contains(&s) => Ok(s),
        _ => Err("a number of seconds from 0.2 to 86400".to_owned()),
    }
}

fn parse_name(text: &str) -> Result<UserName, String> {
    UserName::parse(text).map_err(|e| e.to_string())
}

/// The store the flags choose.
fn store_choice(args: &Args) -> Result<StoreChoice, String> {
    if args.ephemeral {
        return Ok(StoreChoice::Ephemeral);
    }
    match args.data.clone().or_else(StoreChoice::default_folder) {
        Some(dir) => Ok(StoreChoice::Folder(dir)),
        None => Err(
            "no per-user data folder to keep the server's key in; give --data DIR or --ephemeral"
                .to_owned(),
        ),
    }
}

/// `--forget NAME`: frees the name in the store and says what was done.
fn forget(store: &StoreChoice, name: &UserName) -> ExitCode {
    let opened = match store {
        StoreChoice::Folder(dir) => Store::open(dir),
        StoreChoice::Ephemeral => Store::in_memory(),
    };
    match opened.and_then(|store| store.forget(name).map(|key| (key, store))) {
        Ok((Some(key), store)) => {
            println!(
                "forgot {name}: it was registered to the key {} in {}; the next login under it registers it again (restart a running server for it to take effect)",
                key.fingerprint(),
                store.path()
            );
            ExitCode::SUCCESS
        }
        Ok((None, store)) => {
            println!(
                "{name} is not registered in {}; nothing to do",
                store.path()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pigeon-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing("info");
    let store = match store_choice(&args) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("pigeon-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(name) = &args.forget {
        return forget(&store, name);
    }
    let mut config = ServerConfig::new(args.udp);
    config.tcp_port = args.tcp_port;
    config.roster_port = args.roster_port;
    config.max_users = args.max_users;
    config.max_users_per_host = args.max_users_per_host;
    config.max_seed_users = args.max_seed_users;
    config.max_registered = args.max_registered;
    config.registrations_per_host = args.registrations_per_host;
    config.liveness_timeout = Duration::from_secs_f64(args.liveness_timeout);
    config.rate_limits.per_address = Rate::per_second(args.rate_per_address);
    config.rate_limits.per_host = Rate::per_second(args.rate_per_host);
    config.metrics = args.metrics;
    config.store = store;
    // The key is the store's: kept in the data folder, or new each start.
    config.identity = None;
    config.tcp.max_per_host = args.roster_connections_per_host.max(1);
    config.mail_limits.max_messages = args.mailbox_messages;
    config.mail_limits.max_bytes = args.mailbox_bytes;
    config.mail_limits.keep_ms = u64::from(args.mailbox_days) * 24 * 3600 * 1000;
    config.relay = (!args.no_relay).then_some(RelayConfig {
        per_session: args.relay_rate,
        global_rate: DEFAULT_RELAY_GLOBAL_RATE,
    });
    config.cluster = args.cluster.as_ref().map(|url| {
        let id = args.server_id.clone().unwrap_or_else(generated_server_id);
        let mut cluster = ClusterConfig::new(url.clone(), id);
        cluster.timeout = Duration::from_secs_f64(args.cluster_timeout);
        cluster.heartbeat =
            (cluster.timeout / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
        cluster.namespace = args.cluster_namespace.clone();
        cluster
    });

    let bound = match BoundServer::bind(config) {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("pigeon-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let system = actix::System::new();
    let outcome = system.block_on(async move {
        let server = bound.start().await?;
        let mut stdout = std::io::stdout().lock();
        write!(
            stdout,
            "listening udp={} tcp={}",
            server.udp_addr(),
            server.tcp_addr()
        )?;
        if let Some(metrics) = server.metrics_addr() {
            write!(stdout, " metrics={metrics}")?;
        }
        if let Some(id) = server.server_id() {
            write!(stdout, " server-id={id}")?;
        }
        writeln!(stdout)?;
        stdout.flush()?;
        drop(stdout);
        let signal = shutdown_signal().await?;
        info!(signal, "stopping");
        server.shutdown().await;
        anyhow::Ok(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("pigeon-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for Ctrl-C or SIGTERM and says which.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.map(|()| "interrupt"),
            _ = term.recv() => Ok("terminate"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map(|()| "interrupt")
    }
}
