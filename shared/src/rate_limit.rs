//! `RateLimiter`: per-source token buckets, so that one address (or one
//! host) sending a flood costs everyone else nothing but the time to drop
//! its datagrams.
//!
//! Each source address (IP and port) and each source host (IP) has a
//! bucket; a datagram passes when both have a token. Memory is bounded: at
//! most `max_sources` buckets of each kind are kept, idle ones are swept,
//! and when the table is full new sources share one overflow bucket. One
//! host holds at most `max_addresses_per_host` address buckets; its
//! further ports share a bucket of their own, so a host cycling through
//! its ports cannot fill the table and push everyone else into the
//! overflow.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Rate and burst of one kind of bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Datagrams per second, sustained.
    pub per_second: f64,
    /// Datagrams allowed at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    /// `per_second`, with a burst of twice that.
    pub fn per_second(per_second: u32) -> Self {
        let per_second = f64::from(per_second);
        Self {
            per_second,
            burst: (per_second * 2.0).max(1.0),
        }
    }
}

/// Limits of a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub per_address: Rate,
    pub per_host: Rate,
    /// Most buckets of each kind kept.
    pub max_sources: usize,
    /// Most address buckets one host may hold.
    pub max_addresses_per_host: usize,
}

/// Default datagrams per second from one address.
pub const DEFAULT_RATE_PER_ADDRESS: u32 = 50;
/// Default datagrams per second from one host.
pub const DEFAULT_RATE_PER_HOST: u32 = 5_000;

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_address: Rate::per_second(DEFAULT_RATE_PER_ADDRESS),
            per_host: Rate::per_second(DEFAULT_RATE_PER_HOST),
            max_sources: 65_536,
            max_addresses_per_host: 256,
        }
    }
}

/// Why a datagram was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Address,
    Host,
}

/// One token bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A bucket holding all of `rate`'s burst.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.updated = now;
    }

    /// Takes one token at `now`, if there is one.
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is there at `now` (none is taken).
    pub fn has(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= 1.0
    }

    /// Whether the bucket has refilled completely by `now`: it holds
    /// nothing a fresh one would not.
    pub fn is_full(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= rate.burst
    }
}

#[derive(Debug)]
struct Table<K> {
    rate: Rate,
    buckets: HashMap<K, Bucket>,
    overflow: Bucket,
}

impl<K: Eq + Hash> Table<K> {
    fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
            overflow: Bucket::full(rate, now),
        }
    }

    /// The bucket for `key`, refilled to `now`.
    fn bucket(&mut self, key: K, max: usize, now: Instant) -> &mut Bucket {
        let rate = self.rate;
        let bucket = if self.buckets.len() < max || self.buckets.contains_key(&key) {
            self.buckets
                .entry(key)
                .or_insert_with(|| Bucket::full(rate, now))
        } else {
            &mut self.overflow
        };
        bucket.refill(rate, now);
        bucket
    }

    /// Forgets buckets that have refilled completely: they hold no
    /// information a fresh bucket would not.
    fn sweep(&mut self, now: Instant) {
        let rate = self.rate;
        self.buckets.retain(|_, bucket| {
            bucket.refill(rate, now);
            bucket.tokens < rate.burst
        });
    }
}

/// Per-address and per-host token buckets. See the module documentation.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    addresses: Table<SocketAddr>,
    hosts: Table<IpAddr>,
    /// Address buckets held per host, and the bucket a host's further
    /// ports share once it holds its most.
    per_host: HashMap<IpAddr, usize>,
    host_overflow: HashMap<IpAddr, Bucket>,
    last_sweep: Instant,
}

/// How often idle buckets are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl RateLimiter {
    /// A limiter with every bucket full.
    pub fn new(limits: RateLimits, now: Instant) -> Self {
        Self {
            limits,
            addresses: Table::new(limits.per_address, now),
            hosts: Table::new(limits.per_host, now),
            per_host: HashMap::new(),
            host_overflow: HashMap::new(),
            last_sweep: now,
        }
    }

    /// Whether a datagram from `source` may pass at `now`; takes a token
    /// from both of its buckets if so.
    pub fn check(&mut self, source: SocketAddr, now: Instant) -> Result<(), Limited> {
        if now.saturating_duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.sweep(now);
        }
        let max = self.limits.max_sources;
        let ip = source.ip().to_canonical();
        let rate = self.limits.per_address;
        let held = self.per_host.get(&ip).copied().unwrap_or(0);
        let room = self.addresses.buckets.len() < max;
        let address: &mut Bucket = match self.addresses.buckets.entry(source) {
            Entry::Occupied(entry) => entry.into_mut(),
            // The host holds its most: its further ports share one bucket.
            Entry::Vacant(_) if held >= self.limits.max_addresses_per_host => self
                .host_overflow
                .entry(ip)
                .or_insert_with(|| Bucket::full(rate, now)),
            Entry::Vacant(entry) if room => {
                *self.per_host.entry(ip).or_insert(0) += 1;
                entry.insert(Bucket::full(rate, now))
            }
            Entry::Vacant(_) => &mut self.addresses.overflow,
        };
        address.refill(rate, now);
        if address.tokens < 1.0 {
            return Err(Limited::Address);
        }
        let host = self.hosts.bucket(ip, max, now);
        if host.tokens < 1.0 {
            return Err(Limited::Host);
        }
        host.tokens -= 1.0;
        address.tokens -= 1.0;
        Ok(())
    }

    /// Forgets buckets that have refilled completely.
    fn sweep(&mut self, now: Instant) {
        let rate = self.limits.per_address;
        let per_host = &mut self.per_host;
        self.addresses.buckets.retain(|source, bucket| {
            bucket.refill(rate, now);
            let keep = bucket.tokens < rate.burst;
            if !keep {
                let ip = source.ip().to_canonical();
                if let Some(count) = per_host.get_mut(&ip) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        per_host.remove(&ip);
                    }
                }
            }
            keep
        });
        self.host_overflow.retain(|_, bucket| {
            bucket.refill(rate, now);
            bucket.tokens < rate.burst
        });
        self.hosts.sweep(now);
        self.last_sweep = now;
    }

    /// How many buckets are kept (for tests and diagnostics).
    pub fn tracked(&self) -> usize {
        self.addresses.buckets.len() + self.hosts.buckets.len() + self.host_overflow.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(address: u32, host: u32, max_sources: usize) -> RateLimits {
        RateLimits {
            per_address: Rate::per_second(address),
            per_host: Rate::per_second(host),
            max_sources,
            max_addresses_per_host: max_sources,
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(limits(10, 1000, 100), t0);
        let flooder = addr("10.0.0.1:4000");
        let passed = (0..100)
            .filter(|_| limiter.check(flooder, t0).is_ok())
            .count();
        assert_eq!(passed, 20);
        assert_eq!(limiter.check(flooder, t0), Err(Limited::Address));
        // A tenth of a second later, one more token.
        assert!(limiter
            .check(flooder, t0 + Duration::from_millis(100))
            .is_ok());
    }

    #[test]
    fn a_flooding_address_does_not_starve_its_neighbours() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(limits(10, 100, 100), t0);
        for _ in 0..10_000 {
            let _ = limiter.check(addr("10.0.0.1:4000"), t0);
        }
        // Same host, another port: the host bucket still has room, because
        // the flooder could spend only its own address's burst.
        assert!(limiter.check(addr("10.0.0.1:5000"), t0).is_ok());
        assert!(limiter.check(addr("10.0.0.2:4000"), t0).is_ok());
    }

    #[test]
    fn a_host_is_limited_across_its_ports() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(limits(10, 5, 100), t0);
        let passed = (0..100)
            .filter(|port| {
                limiter
                    .check(addr(&format!("10.0.0.1:{}", 4000 + port)), t0)
                    .is_ok()
            })
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn the_table_is_bounded_and_idle_buckets_are_swept() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(limits(1, 1, 8), t0);
        for i in 0..1000u32 {
            let source = SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 4000));
            let _ = limiter.check(source, t0);
        }
        assert!(limiter.tracked() <= 16);
        let later = t0 + Duration::from_secs(60);
        let _ = limiter.check(addr("10.9.9.9:1"), later);
        assert_eq!(limiter.tracked(), 2);
    }

    #[test]
    fn a_host_cycling_through_its_ports_cannot_push_others_out() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(
            RateLimits {
                max_addresses_per_host: 256,
                ..RateLimits::default()
            },
            t0,
        );
        // Three hundred users, one datagram each.
        let user = |i: u32| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 5000));
        for i in 0..300 {
            assert!(limiter.check(user(i), t0).is_ok());
        }
        // Later (the users' buckets have refilled and are swept), one host
        // sends from every port it has, and keeps at it.
        let attacker = |port: u16| SocketAddr::from(([10, 66, 0, 1], port));
        let later = t0 + Duration::from_secs(11);
        for port in 1..=u16::MAX {
            let _ = limiter.check(attacker(port), later);
        }
        // It holds its share of the table, no more: its other ports share
        // one bucket of their own ...
        assert!(limiter.tracked() < 300, "{}", limiter.tracked());
        // ... and the users, back, get buckets of their own again: none
        // waits in an overflow bucket the attacker drains.
        let back = later + Duration::from_millis(500);
        for port in 1..=u16::MAX {
            let _ = limiter.check(attacker(port), back);
        }
        for i in 0..300 {
            assert!(limiter.check(user(i), back).is_ok(), "user {i}");
        }
        // A new user too.
        assert!(limiter
            .check(SocketAddr::from(([10, 2, 0, 1], 5000)), back)
            .is_ok());
    }
}
