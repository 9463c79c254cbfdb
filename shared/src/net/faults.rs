//! [`Faults`]: the seeded loss, duplication, delay and reordering that
//! tests and the load test put in front of a [`super::UdpSender`]. Compiled
//! only with the cargo feature `faults`, never into the programs users run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How a [`Faults`] layer mistreats datagrams. Probabilities are per
/// datagram sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Seed of the random generator that decides each datagram's fate.
    pub seed: u64,
    /// Chance a datagram is lost.
    pub drop: f64,
    /// Chance a datagram that is not lost arrives twice.
    pub duplicate: f64,
    /// Chance a datagram is held back for up to `max_delay`, so that later
    /// ones overtake it.
    pub delay: f64,
    /// Longest hold-back.
    pub max_delay: Duration,
}

impl FaultConfig {
    /// A network that loses, duplicates and reorders `rate` of datagrams
    /// (each), reordering by up to 50 ms.
    pub fn lossy(seed: u64, rate: f64) -> Self {
        Self {
            seed,
            drop: rate,
            duplicate: rate,
            delay: rate,
            max_delay: Duration::from_millis(50),
        }
    }
}

/// A datagram's fate under [`Faults`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Lost,
    Deliver { copies: u8, delay: Option<Duration> },
}

/// Counts of what a [`Faults`] layer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub delayed: u64,
}

/// A fault-injection layer for tests: every datagram sent through a
/// [`UdpSender`] that carries it has its fate drawn from one seeded
/// generator. Clone it to share one generator (and one set of counts)
/// between many senders.
#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<Mutex<FaultState>>,
}

#[derive(Debug)]
struct FaultState {
    config: FaultConfig,
    rng: StdRng,
    stats: FaultStats,
}

impl Faults {
    /// A layer that follows `config`.
    pub fn new(config: FaultConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(FaultState {
                config,
                rng: StdRng::seed_from_u64(config.seed),
                stats: FaultStats::default(),
            })),
        }
    }

    /// Draws the next datagram's fate.
    pub fn fate(&self) -> Fate {
        // A poisoned lock only means another sender panicked mid-draw; the
        // generator's state is still usable.
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let FaultState { config, rng, stats } = &mut *state;
        stats.sent += 1;
        if rng.random_bool(config.drop.clamp(0.0, 1.0)) {
            stats.lost += 1;
            return Fate::Lost;
        }
        let copies = if rng.random_bool(config.duplicate.clamp(0.0, 1.0)) {
            stats.duplicated += 1;
            2
        } else {
            1
        };
        let delay = if rng.random_bool(config.delay.clamp(0.0, 1.0)) {
            stats.delayed += 1;
            let max = u64::try_from(config.max_delay.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            Some(Duration::from_micros(rng.random_range(0..max)))
        } else {
            None
        };
        Fate::Deliver { copies, delay }
    }

    /// What the layer has done so far.
    pub fn stats(&self) -> FaultStats {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).stats
    }
}
