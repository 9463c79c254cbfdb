//! The server's counters as Prometheus metrics: what each means, and how
//! they are written (OpenMetrics text, which Prometheus reads). The
//! counters themselves live with the actors that count; this reads them
//! at each scrape. Served by [`crate::metrics_actor`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pigeon_shared::DecodeErrorKind;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::cluster_actor::ClusterStats;
use crate::directory::Directory;
use crate::relay::RelayDrop;
use crate::roster::LeaveReason;
use crate::roster_actor::{RosterStats, IGNORED, REFUSALS};
use crate::tcp_roster_actor::TcpStats;
use crate::udp_gateway_actor::GatewayStats;

/// How far back the datagram rates look.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Datagrams received and sent per second, over the last [`RATE_WINDOW`]:
/// samples of the two counters, taken once a second.
#[derive(Debug, Default)]
pub struct Rates {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Rates {
    /// Records the counters' values at `at`, forgetting samples older than
    /// the window.
    pub fn record(&mut self, at: Instant, received: u64, sent: u64) {
        self.samples.push_back((at, received, sent));
        while let Some(&(first, ..)) = self.samples.front() {
            if at.saturating_duration_since(first) > RATE_WINDOW && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// (received, sent) per second between the oldest and the newest
    /// sample; zero until there are two.
    pub fn per_second(&self) -> (f64, f64) {
        let (Some(&(t0, r0, s0)), Some(&(t1, r1, s1))) =
            (self.samples.front(), self.samples.back())
        else {
            return (0.0, 0.0);
        };
        let seconds = t1.saturating_duration_since(t0).as_secs_f64();
        if seconds <= 0.0 {
            return (0.0, 0.0);
        }
        (
            r1.saturating_sub(r0) as f64 / seconds,
            s1.saturating_sub(s0) as f64 / seconds,
        )
    }
}

/// Everything the metrics read.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    pub gateway: Arc<GatewayStats>,
    pub tcp: Arc<TcpStats>,
    pub roster: Arc<RosterStats>,
    pub directory: Arc<Directory>,
    pub rates: Arc<Mutex<Rates>>,
    /// The cluster's figures, if the server is in one.
    pub cluster: Option<Arc<ClusterStats>>,
}

impl ServerMetrics {
    /// Takes a sample of the datagram counters for the rates.
    pub fn sample(&self, now: Instant) {
        let received = self.gateway.received.load(Ordering::Relaxed);
        let sent = self.gateway.send.sent.load(Ordering::Relaxed);
        self.rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(now, received, sent);
    }

    /// A registry holding these metrics.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        registry
    }
}

/// The metrics of `registry` in OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Writes one counter without labels.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// Writes one gauge without labels.
fn gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: N) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// Writes a counter family: one value per label set.
fn counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, value) in values {
        let metric_encoder = family.encode_family(&labels)?;
        ConstCounter::new(value).encode(metric_encoder)?;
    }
    Ok(())
}

impl Collector for ServerMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        let g = &self.gateway;
        let r = &self.roster;
        let t = &self.tcp;

        gauge(
            e,
            "pigeon_users_online",
            "Users online (Pigeon and seed-era).",
            self.directory.len() as u64,
        )?;
        if let Some(cluster) = &self.cluster {
            gauge(
                e,
                "pigeon_cluster_servers",
                "Servers of the cluster alive at the last heartbeat, this one included.",
                cluster.servers.load(Ordering::Relaxed),
            )?;
            gauge(
                e,
                "pigeon_cluster_remote_users",
                "Users online through the other servers of the cluster.",
                cluster.remote_users.load(Ordering::Relaxed),
            )?;
            gauge(
                e,
                "pigeon_cluster_redis_rtt_seconds",
                "The last round trip to Redis (a heartbeat).",
                cluster.rtt_us.load(Ordering::Relaxed) as f64 / 1e6,
            )?;
            gauge(
                e,
                "pigeon_cluster_log_lag_seconds",
                "How old the last change read from the shared log was when it was read.",
                cluster.lag_ms.load(Ordering::Relaxed) as f64 / 1e3,
            )?;
            counter(
                e,
                "pigeon_cluster_changes_applied",
                "Changes of other servers read from the shared log.",
                cluster.applied.load(Ordering::Relaxed),
            )?;
            counter(
                e,
                "pigeon_cluster_errors",
                "Redis commands that failed or timed out.",
                cluster.errors.load(Ordering::Relaxed),
            )?;
        }
        let (received, sent) = self
            .rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .per_second();
        gauge(
            e,
            "pigeon_datagrams_received_per_second",
            "UDP datagrams received per second, over the last 10 seconds.",
            received,
        )?;
        gauge(
            e,
            "pigeon_datagrams_sent_per_second",
            "UDP datagrams sent per second, over the last 10 seconds.",
            sent,
        )?;

        counter(
            e,
            "pigeon_datagrams_received",
            "UDP datagrams received, before any check.",
            load(&g.received),
        )?;
        counter(
            e,
            "pigeon_datagrams_sent",
            "UDP datagrams sent.",
            load(&g.send.sent),
        )?;
        counter(
            e,
            "pigeon_datagrams_send_failed",
            "UDP datagrams not sent: the kernel refused them or the send queue was full.",
            load(&g.send.failed),
        )?;
        counters(
            e,
            "pigeon_datagrams_rate_limited",
            "UDP datagrams dropped unread: their address, their host, or (for keepalives and logouts proven by a token) their session sent too many.",
            [
                (vec![("limit", "address")], load(&g.limited_address)),
                (vec![("limit", "host")], load(&g.limited_host)),
                (vec![("limit", "session")], load(&g.limited_session)),
            ],
        )?;
        counter(
            e,
            "pigeon_datagrams_authenticated",
            "Keepalives and logouts proven by their session's token from its own endpoint (checked apart from the rest).",
            load(&g.authenticated),
        )?;
        counters(
            e,
            "pigeon_datagrams_undecodable",
            "UDP datagrams dropped because they do not decode, by what was wrong.",
            DecodeErrorKind::ALL.iter().map(|kind| {
                let value = g
                    .undecodable
                    .get(kind.index())
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                (vec![("error", kind.as_str())], value)
            }),
        )?;
        counter(
            e,
            "pigeon_datagrams_unexpected",
            "Well-formed datagrams the server does not take (talk, chat, Accept, ...), dropped.",
            load(&g.unexpected),
        )?;
        counter(
            e,
            "pigeon_relayed",
            "End-to-end encrypted frames relayed from one Pigeon user to another.",
            load(&g.relayed),
        )?;
        counters(
            e,
            "pigeon_relay_dropped",
            "Requests to relay a frame that were dropped, by why.",
            RelayDrop::ALL.iter().map(|why| {
                let value = g
                    .relay_dropped
                    .get(why.index())
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                (vec![("reason", why.as_str())], value)
            }),
        )?;

        counters(
            e,
            "pigeon_logins",
            "Logins taken: a new user online (joined), or the same session again (refreshed).",
            [
                (vec![("result", "joined")], load(&r.joined)),
                (vec![("result", "refreshed")], load(&r.refreshed)),
            ],
        )?;
        counters(
            e,
            "pigeon_logins_refused",
            "Logins refused, by reason (sent back when the refusal fits in the login).",
            REFUSALS
                .iter()
                .zip(r.refused.iter())
                .map(|(reason, c)| (vec![("reason", *reason)], load(c))),
        )?;
        counters(
            e,
            "pigeon_users_left",
            "Users gone: logged out, evicted (no keepalive in time), or unconfirmed (a seed-style session whose host never fetched the roster).",
            LeaveReason::ALL.iter().map(|reason| {
                let value = r.left.get(reason.index()).map_or(0, load);
                (vec![("reason", reason.as_str())], value)
            }),
        )?;
        counter(
            e,
            "pigeon_keepalives",
            "Keepalives that kept a session alive.",
            load(&r.keepalives),
        )?;
        let ignored = ["logout", "keepalive"]
            .iter()
            .zip(r.ignored.iter())
            .flat_map(|(datagram, row)| {
                IGNORED
                    .iter()
                    .zip(row.iter())
                    .map(|(why, c)| (vec![("datagram", *datagram), ("why", *why)], load(c)))
            });
        counters(
            e,
            "pigeon_session_datagrams_ignored",
            "Logouts and keepalives ignored: nobody by that name, not the user's endpoint or address, or no proof of the session.",
            ignored,
        )?;
        counter(
            e,
            "pigeon_names_unregistered",
            "Names proved by a key but left unregistered for now: the registry held --max-registered names, or the host had registered --registrations-per-host names in the hour.",
            load(&r.not_registered),
        )?;
        counter(
            e,
            "pigeon_meetings",
            "Meetings arranged: two users told at once where to probe each other.",
            load(&r.meetings),
        )?;
        counter(
            e,
            "pigeon_meets_refused",
            "Requests to meet not answered: not a session, no such peer, too short, or over the rate.",
            load(&r.meets_refused),
        )?;
        counter(
            e,
            "pigeon_seed_hosts_confirmed",
            "Roster fetches that confirmed a host's seed-style sessions.",
            load(&r.seed_confirmed),
        )?;
        counter(
            e,
            "pigeon_roster_events_dropped",
            "Roster events lost because a subscribing actor's mailbox was full.",
            load(&r.events_dropped),
        )?;

        counter(
            e,
            "pigeon_tcp_rosters_served",
            "Roster snapshots sent over TCP.",
            load(&t.served),
        )?;
        counters(
            e,
            "pigeon_tcp_connections_refused",
            "TCP roster connections closed without the roster: no valid request in time or no login from the host just now (roster), or the host had its share of connections open (host-full).",
            [
                (vec![("why", "roster")], load(&t.refused)),
                (vec![("why", "host-full")], load(&t.host_full)),
            ],
        )?;
        counter(
            e,
            "pigeon_tcp_rosters_failed",
            "Rosters not sent: the connection failed or the client was too slow.",
            load(&t.failed),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_averaged_over_the_window() {
        let mut rates = Rates::default();
        let t0 = Instant::now();
        assert_eq!(rates.per_second(), (0.0, 0.0));
        rates.record(t0, 100, 10);
        assert_eq!(rates.per_second(), (0.0, 0.0));
        for s in 1..=30u64 {
            // 50 received and 5 sent a second.
            rates.record(t0 + Duration::from_secs(s), 100 + 50 * s, 10 + 5 * s);
        }
        assert_eq!(rates.per_second(), (50.0, 5.0));
        // Only the window is kept.
        assert!(rates.samples.len() <= 12, "{}", rates.samples.len());
        // A quiet spell brings the rate down within the window.
        let last = t0 + Duration::from_secs(30);
        for s in 1..=10u64 {
            rates.record(last + Duration::from_secs(s), 1600, 160);
        }
        assert_eq!(rates.per_second(), (0.0, 0.0));
    }

    #[test]
    fn every_counter_is_written_with_its_help() {
        let metrics = ServerMetrics {
            gateway: Arc::new(GatewayStats::default()),
            tcp: Arc::new(TcpStats::default()),
            roster: Arc::new(RosterStats::default()),
            directory: Arc::new(Directory::default()),
            rates: Arc::new(Mutex::new(Rates::default())),
            cluster: None,
        };
        metrics.gateway.received.fetch_add(7, Ordering::Relaxed);
        metrics.roster.refused[0].fetch_add(3, Ordering::Relaxed);
        metrics.gateway.undecodable[DecodeErrorKind::UnknownVerb.index()]
            .fetch_add(2, Ordering::Relaxed);
        let text = render(&metrics.registry());
        for line in [
            "# HELP pigeon_users_online Users online (Pigeon and seed-era).",
            "# TYPE pigeon_users_online gauge",
            "pigeon_users_online 0",
            "pigeon_datagrams_received_total 7",
            "pigeon_logins_refused_total{reason=\"name-taken\"} 3",
            "pigeon_logins_refused_total{reason=\"short-login\"} 0",
            "pigeon_datagrams_undecodable_total{error=\"unknown-verb\"} 2",
            "pigeon_users_left_total{reason=\"unconfirmed\"} 0",
            "pigeon_session_datagrams_ignored_total{datagram=\"keepalive\",why=\"bad-token\"} 0",
            "pigeon_tcp_connections_refused_total{why=\"host-full\"} 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        // Every metric has its help and its type.
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(helps, types);
        assert!(helps >= 20, "{helps}");
    }
}
