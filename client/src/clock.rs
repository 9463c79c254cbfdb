//! Where a client's time comes from. The client's decisions take time as
//! an input (`now`, and the time of day a message carries); the actors get
//! it from a [`Clock`], so that nothing in them reads a clock of its own
//! and a test can give them another.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use chrono::Timelike;
use pigeon_shared::{TalkTime, TimeOfDay};

/// A source of time.
pub trait Clock: Send + Sync {
    /// Now, for timers and deadlines.
    fn now(&self) -> Instant;
    /// The time of day a message written now carries.
    fn talk_time(&self) -> TalkTime;
    /// Milliseconds since the Unix epoch: when something is kept.
    fn wall_ms(&self) -> i64;
    /// The local hour and minute, for the lines on screen.
    fn hour_minute(&self) -> (u32, u32);
}

/// The machine's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn talk_time(&self) -> TalkTime {
        local_talk_time()
    }

    fn wall_ms(&self) -> i64 {
        chrono::Local::now().timestamp_millis()
    }

    fn hour_minute(&self) -> (u32, u32) {
        let now = chrono::Local::now();
        (now.hour(), now.minute())
    }
}

/// A shared clock, as the actors hold it.
#[derive(Clone)]
pub struct SharedClock(pub Arc<dyn Clock>);

impl SharedClock {
    /// The machine's clocks.
    pub fn system() -> Self {
        Self(Arc::new(SystemClock))
    }

    /// Now, for timers and deadlines.
    pub fn now(&self) -> Instant {
        self.0.now()
    }

    /// The time of day a message written now carries.
    pub fn talk_time(&self) -> TalkTime {
        self.0.talk_time()
    }

    /// Milliseconds since the Unix epoch.
    pub fn wall_ms(&self) -> i64 {
        self.0.wall_ms()
    }

    /// The local hour and minute.
    pub fn hour_minute(&self) -> (u32, u32) {
        self.0.hour_minute()
    }
}

impl Default for SharedClock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedClock")
    }
}

/// Now, on the local clock, as the seed writes it (`H:MM:SS`).
pub fn local_talk_time() -> TalkTime {
    let now = chrono::Local::now();
    // Hours, minutes and seconds from chrono are always below 24 and 60.
    let part = |value: u32| u8::try_from(value).unwrap_or(0);
    TalkTime::from_time_of_day(TimeOfDay {
        hour: part(now.hour()),
        minute: part(now.minute()),
        second: part(now.second()),
    })
}
