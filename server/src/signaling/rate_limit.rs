//! A token bucket per connection, sans-I/O: the caller passes the time.

use std::time::Instant;

/// Allows `burst` frames at once and `per_second` frames per second sustained.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            capacity: f64::from(burst.max(1)),
            per_second: f64::from(per_second.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_sustained_rate_applies() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5, start);
        assert_eq!((0..8).filter(|_| bucket.try_take(start)).count(), 5);
        // A second later, ten more tokens (capped at the burst of five).
        let later = start + Duration::from_secs(1);
        assert_eq!((0..8).filter(|_| bucket.try_take(later)).count(), 5);
        // A tenth of a second later, one token.
        let a_bit_later = later + Duration::from_millis(100);
        assert!(bucket.try_take(a_bit_later));
        assert!(!bucket.try_take(a_bit_later));
    }
}
