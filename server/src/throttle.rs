//! Per-address counting over fixed windows, sans-I/O (the caller passes the time): the throttle of
//! failed sign-ins and failed call tokens, and the cap on refusal rows in the audit log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered before expired windows are swept.
const SWEEP_ABOVE: usize = 10_000;

/// Counts events per key in fixed windows; a key is over once it has `limit` in its window.
#[derive(Debug)]
pub struct WindowCounter {
    limit: u32,
    window: Duration,
    keys: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

impl WindowCounter {
    /// `limit` events per key per `window`.
    pub fn new(limit: u32, window: Duration) -> WindowCounter {
        WindowCounter { limit, window, keys: Mutex::default() }
    }

    /// `Err(seconds to wait)` while `key` has used up its window.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u64> {
        let keys = self.keys.lock().expect("window counter lock");
        match keys.get(key) {
            Some(w) if w.count >= self.limit && now < w.start + self.window => {
                Err((w.start + self.window - now).as_secs_f64().ceil().max(1.0) as u64)
            }
            _ => Ok(()),
        }
    }

    /// Counts one event for `key`; returns how many it has had in its window, this one included.
    pub fn record(&self, key: &str, now: Instant) -> u32 {
        let mut keys = self.keys.lock().expect("window counter lock");
        if keys.len() >= SWEEP_ABOVE {
            keys.retain(|_, w| now < w.start + self.window);
        }
        let window = keys.entry(key.to_owned()).or_insert(Window { start: now, count: 0 });
        if now >= window.start + self.window {
            *window = Window { start: now, count: 0 };
        }
        window.count = window.count.saturating_add(1);
        window.count
    }

    /// Counts one event for `key` if it is still under its limit; `false` when over.
    pub fn try_record(&self, key: &str, now: Instant) -> bool {
        self.record(key, now) <= self.limit
    }
}

/// Decides which refusals get an audit row: at most `per_address` per address and `total` in all
/// per minute. The others are counted and reported in the next row written for that address, so a
/// flood of refusals cannot grow the database.
#[derive(Debug)]
pub struct AuditLimiter {
    per_address: WindowCounter,
    total: WindowCounter,
    suppressed: Mutex<HashMap<String, u64>>,
}

/// What to do with one refusal's audit row.
#[derive(Debug, PartialEq, Eq)]
pub enum AuditDecision {
    /// Write it; `suppressed` earlier refusals from this address were not written.
    Write {
        /// Refusals left out since the last row for this address.
        suppressed: u64,
    },
    /// Leave it out (counted for the next row).
    Skip,
}

impl AuditLimiter {
    /// At most `per_address` rows per address and `total` rows in all per minute.
    pub fn new(per_address: u32, total: u32) -> AuditLimiter {
        let minute = Duration::from_secs(60);
        AuditLimiter {
            per_address: WindowCounter::new(per_address, minute),
            total: WindowCounter::new(total, minute),
            suppressed: Mutex::default(),
        }
    }

    /// The decision for one refusal from `address`.
    pub fn decide(&self, address: &str, now: Instant) -> AuditDecision {
        let mut suppressed = self.suppressed.lock().expect("audit limiter lock");
        if self.per_address.try_record(address, now) && self.total.try_record("", now) {
            AuditDecision::Write { suppressed: suppressed.remove(address).unwrap_or(0) }
        } else {
            if suppressed.len() >= SWEEP_ABOVE {
                suppressed.clear();
            }
            *suppressed.entry(address.to_owned()).or_default() += 1;
            AuditDecision::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_back_until_its_window_ends() {
        let start = Instant::now();
        let counter = WindowCounter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(counter.check("a", start), Ok(()));
            counter.record("a", start);
        }
        assert_eq!(counter.check("a", start + Duration::from_secs(10)), Err(50));
        assert_eq!(counter.check("b", start), Ok(()), "another key is not affected");
        assert_eq!(counter.check("a", start + Duration::from_secs(60)), Ok(()));
        assert_eq!(counter.record("a", start + Duration::from_secs(60)), 1, "a new window");
    }

    #[test]
    fn audit_rows_are_capped_and_the_left_out_ones_reported_later() {
        let start = Instant::now();
        let limiter = AuditLimiter::new(2, 3);
        let written = |address: &str, at| matches!(limiter.decide(address, at), AuditDecision::Write { .. });
        assert!(written("a", start) && written("a", start));
        assert!(!written("a", start) && !written("a", start), "per-address cap");
        assert!(written("b", start));
        assert!(!written("c", start), "total cap");
        let next_minute = start + Duration::from_secs(61);
        assert_eq!(limiter.decide("a", next_minute), AuditDecision::Write { suppressed: 2 });
    }
}
