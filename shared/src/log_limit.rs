//! `LogLimit`: keeps a flood of bad input from becoming a flood of log lines.
//!
//! Hostile or broken peers can send thousands of bad datagrams a second;
//! each refusal is logged, but only the first few per window, and the next
//! line that is let through says how many were held back.

use std::time::{Duration, Instant};

/// Allows up to `burst` log lines per `window`, and counts the rest.
#[derive(Debug, Clone)]
pub struct LogLimit {
    window: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimit {
    /// A limit of `burst` lines per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            window,
            burst,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`. `Some(n)`: yes, and `n` lines
    /// were held back since the last one let through. `None`: hold it back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = match self.window_start {
            Some(start) => now.saturating_duration_since(start) >= self.window,
            None => true,
        };
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl Default for LogLimit {
    /// Twenty lines a second.
    fn default() -> Self {
        Self::new(20, Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_counted_until_the_next_window() {
        let mut limit = LogLimit::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limit.allow(t0), Some(0));
        assert_eq!(limit.allow(t0), Some(0));
        assert_eq!(limit.allow(t0), None);
        assert_eq!(limit.allow(t0 + Duration::from_millis(999)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(limit.allow(t0 + Duration::from_secs(1)), Some(0));
    }
}
