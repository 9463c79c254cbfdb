//! `pigeon-load`: a server and a crowd of simulated peers in one process,
//! measured against this machine's raw UDP ceiling.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use integration::load::{self, ceiling, LoadConfig, LoadReport, Watcher};

/// The system allocator, counting the bytes in use: the memory figures
/// per user and per roster entry are read from it.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator; only a
// counter is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            let live = LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn peak_bytes() -> usize {
    PEAK_BYTES.load(Ordering::Relaxed)
}

/// Load-test Pigeon: a login storm, a chat and a logout storm by N
/// simulated peers (real clients, one UDP socket each) in one process,
/// measured against this machine's raw UDP ceiling.
#[derive(Parser, Debug)]
#[command(
    name = "pigeon-load",
    version,
    about = "Load test: a Pigeon server and a crowd of simulated peers in one process \
             (login storm, chat, logout storm), measured against this machine's raw UDP ceiling."
)]
struct Args {
    /// Simulated peers.
    #[arg(long, default_value_t = 500)]
    peers: usize,

    /// Messages each peer sends to random other peers.
    #[arg(long, default_value_t = 10)]
    messages: usize,

    /// How many of the peers behave as seed-era clients (plain protocol).
    #[arg(long, value_name = "P", default_value_t = 0)]
    legacy: usize,

    /// Use this server instead of starting one in this process.
    #[arg(long, value_name = "IP:PORT")]
    server: Option<SocketAddr>,

    /// Only measure the raw UDP ceiling, and exit.
    #[arg(long)]
    ceiling: bool,

    /// Write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,

    /// Threads the peers are spread over (default: one per core).
    #[arg(long)]
    arbiters: Option<usize>,

    /// Peers without keys: chat in clear, as clients from before keys (to
    /// compare with the default, end-to-end encrypted).
    #[arg(long)]
    no_encryption: bool,

    /// How many peers (after the seed-era ones) never look for a direct
    /// path: their conversations stay on the server's relay (to measure
    /// the relay).
    #[arg(long, value_name = "P", default_value_t = 0)]
    relayed: usize,

    /// Spread the peers over K servers in this process; more than one
    /// share the Redis at --redis as a cluster.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64), conflicts_with = "server")]
    servers: u64,

    /// The Redis a cluster of servers shares (redis://HOST:PORT or
    /// redis+unix:///PATH; default: PIGEON_REDIS_URL).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,

    /// Seed for the choice of message targets.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Longest wait for each phase, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,

    /// How long the ceiling is measured, in milliseconds (three runs share
    /// it; the best counts).
    #[arg(long, value_name = "MS", default_value_t = 1500)]
    ceiling_ms: u64,
}

/// Progress bars on stderr.
struct Bars {
    bar: Option<ProgressBar>,
}

impl Watcher for Bars {
    fn phase(&mut self, name: &str, total: u64) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        let bar = if total == 0 {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::new(total)
        };
        let style =
            ProgressStyle::with_template("{prefix:>13} [{elapsed_precise}] {bar:40} {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        self.bar = Some(bar);
    }

    fn progress(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    pigeon_shared::log::init_tracing("warn");
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pigeon-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    if args.ceiling {
        let ceiling = ceiling::best_of(3, 500, 54, Duration::from_millis(args.ceiling_ms))?;
        println!(
            "raw UDP ceiling ({}-byte datagrams, one socket to {}): {:.0} sent/s, {:.0} received/s",
            ceiling.payload_bytes, ceiling.receivers, ceiling.sent_per_s, ceiling.received_per_s
        );
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&ceiling)?)?;
        }
        return Ok(true);
    }
    let limit = load::raise_fd_limit(args.peers)?;
    let config = LoadConfig {
        peers: args.peers,
        messages: args.messages,
        legacy: args.legacy,
        server: args.server,
        seed: args.seed,
        arbiters: args
            .arbiters
            .unwrap_or_else(|| LoadConfig::default().arbiters),
        phase_timeout: Duration::from_secs(args.timeout),
        ceiling_duration: Duration::from_millis(args.ceiling_ms),
        encrypt: !args.no_encryption,
        relayed: args.relayed,
        servers: usize::try_from(args.servers).unwrap_or(1),
        redis: args
            .redis
            .clone()
            .or_else(|| std::env::var("PIGEON_REDIS_URL").ok()),
        ..LoadConfig::default()
    };
    eprintln!(
        "pigeon-load: {} peers ({} seed-era), {} messages each, {} build, open-file limit {limit}",
        config.peers,
        config.legacy,
        config.messages,
        load::profile()
    );
    let system = actix::System::new();
    let report = system.block_on(async move {
        let mut bars = Bars { bar: None };
        load::run(config, &mut bars, Some(live_bytes), Some(peak_bytes)).await
    })?;
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    for failure in &report.failures {
        eprintln!("pigeon-load: FAILED: {failure}");
    }
    Ok(report.ok)
}

fn print_table(r: &LoadReport) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".to_owned(), |v| format!("{v:.0}{unit}"));
    let ratio = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}x"));
    let rows = [
        (
            "peers (seed-era)",
            format!("{} ({})", r.peers, r.legacy_peers),
        ),
        ("build", r.profile.to_owned()),
        (
            "raw UDP ceiling",
            format!("{:.0} datagrams/s", r.ceiling_datagrams_per_s),
        ),
        (
            "naive floor",
            format!(
                "{:.3} s  (N(N-1)/2 datagrams at the ceiling)",
                r.naive_floor_s
            ),
        ),
        (
            "login storm converged",
            format!(
                "{:.3} s  ({:.2}x the naive floor)",
                r.converge_s, r.converge_vs_floor
            ),
        ),
        (
            "server datagrams sent",
            opt(r.server_datagrams.map(|d| d as f64), ""),
        ),
        (
            "server datagrams/s",
            format!(
                "{}  ({} of the ceiling)",
                opt(r.server_datagrams_per_s, ""),
                ratio(r.server_vs_ceiling)
            ),
        ),
        (
            "roster events/s",
            format!(
                "{:.0}  ({:.2}x the ceiling)",
                r.roster_events_per_s, r.events_vs_ceiling
            ),
        ),
        ("messages sent", r.messages_sent.to_string()),
        (
            "delivered / lost",
            format!("{} / {}", r.messages_delivered, r.messages_lost),
        ),
        (
            "duplicated / reordered / failed",
            format!(
                "{} / {} / {}",
                r.messages_duplicated, r.messages_reordered, r.messages_failed
            ),
        ),
        ("chat phase", format!("{:.3} s", r.chat_s)),
        (
            "end-to-end encryption",
            if r.encrypted {
                format!(
                    "on: {} handshakes, {:.0}/s",
                    r.handshakes, r.handshakes_per_s
                )
            } else {
                "off (--no-encryption)".to_owned()
            },
        ),
        (
            "relay",
            format!(
                "{} frames, {:.0}/s ({} peers kept to it)",
                r.relayed_frames, r.relayed_per_s, r.relayed_peers
            ),
        ),
        (
            "latency p50 / p99 / max",
            format!(
                "{} / {} / {} µs",
                r.latency_p50_us, r.latency_p99_us, r.latency_max_us
            ),
        ),
        ("servers", r.servers.to_string()),
        (
            "peers of a vanished server served again",
            match r.rehome_s {
                Some(s) => format!("{} in {s:.3} s", r.rehomed_peers),
                None => "-".to_owned(),
            },
        ),
        ("logout storm", format!("{:.3} s", r.logout_s)),
        (
            "server datagrams in logout storm",
            opt(r.logout_server_datagrams.map(|d| d as f64), ""),
        ),
        ("server bytes per user", opt(r.server_bytes_per_user, " B")),
        (
            "client bytes per roster entry",
            opt(r.client_bytes_per_roster_entry, " B"),
        ),
        ("heap at convergence", mib(r.heap_at_convergence_bytes)),
        ("peak heap in login storm", mib(r.peak_heap_in_storm_bytes)),
        ("peak heap", mib(r.peak_heap_bytes)),
        ("peak RSS", mib(r.peak_rss_bytes)),
        (
            "result",
            if r.ok {
                "ok".to_owned()
            } else {
                "FAILED".to_owned()
            },
        ),
    ];
    for (label, value) in rows {
        println!("{label:>32}  {value}");
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_owned(), |b| {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    })
}
