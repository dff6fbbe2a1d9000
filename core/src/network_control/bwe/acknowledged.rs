//! The acknowledged bitrate: what the receiver says it got, per second of its own clock.
//!
//! This is the path's delivered throughput while we send at least as much as it carries, and our
//! own send rate when the encoder produces less. Both make it the right ceiling for the target:
//! the controller never asks for much more than has demonstrably arrived.

use std::collections::VecDeque;
use std::time::Duration;

/// The span of receiver time the rate is averaged over.
const WINDOW: Duration = Duration::from_millis(500);
/// Less span than this says nothing yet.
const MIN_SPAN: Duration = Duration::from_millis(150);

/// Bytes that arrived over the last [`WINDOW`] of the receiver's clock.
#[derive(Debug, Default)]
pub struct AcknowledgedRate {
    /// (arrival on the receiver's clock, bytes), sorted by arrival.
    samples: VecDeque<(Duration, usize)>,
    bytes: usize,
}

impl AcknowledgedRate {
    /// Counts a packet that arrived at `arrival` (receiver clock).
    pub fn on_packet(&mut self, arrival: Duration, size: usize) {
        // Feedback can come out of order: keep the window sorted.
        let at = self.samples.partition_point(|(a, _)| *a <= arrival);
        self.samples.insert(at, (arrival, size));
        self.bytes += size;
        let latest = self.samples.back().map_or(arrival, |(a, _)| *a);
        while let Some(&(a, s)) = self.samples.front() {
            if latest.saturating_sub(a) <= WINDOW {
                break;
            }
            self.samples.pop_front();
            self.bytes -= s;
        }
    }

    /// Bits per second over the window, once it spans enough receiver time.
    pub fn bps(&self) -> Option<f64> {
        let (first, _) = *self.samples.front()?;
        let (last, _) = *self.samples.back()?;
        let span = last.saturating_sub(first);
        if span < MIN_SPAN {
            return None;
        }
        // The first packet's bytes arrived before the span began.
        let bytes = self.bytes - self.samples.front().map_or(0, |(_, s)| *s);
        Some(bytes as f64 * 8.0 / span.max(MIN_SPAN).as_secs_f64())
    }

    /// Bits per second over the last `window` of receiver time (at most the whole window): the
    /// link's rate right now when a queue keeps it busy.
    pub fn recent_bps(&self, window: Duration) -> Option<f64> {
        let (last, _) = *self.samples.back()?;
        let from = last.saturating_sub(window);
        let start = self.samples.partition_point(|(a, _)| *a < from);
        let recent = self.samples.range(start..);
        let first = recent.clone().next()?.0;
        let span = last.saturating_sub(first);
        if span < window / 2 {
            return None;
        }
        let bytes: usize = recent.skip(1).map(|(_, s)| *s).sum();
        Some(bytes as f64 * 8.0 / span.as_secs_f64())
    }

    /// Forgets everything (after an outage the old rate says nothing about the new path).
    pub fn reset(&mut self) {
        self.samples.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_what_arrived_over_the_last_half_second() {
        let mut rate = AcknowledgedRate::default();
        // 1 000 bytes every 10 ms: 800 kbps, for two seconds; then 250 bytes every 10 ms.
        for ms in 0..200 {
            rate.on_packet(Duration::from_millis(ms * 10), 1_000);
        }
        assert!((rate.bps().unwrap() - 800_000.0).abs() < 1_000.0, "{:?}", rate.bps());
        for ms in 200..300 {
            rate.on_packet(Duration::from_millis(ms * 10), 250);
        }
        assert!((rate.bps().unwrap() - 200_000.0).abs() < 1_000.0, "{:?}", rate.bps());
    }

    #[test]
    fn reordered_packets_are_counted_in_place() {
        let mut rate = AcknowledgedRate::default();
        for ms in (0..100).rev() {
            rate.on_packet(Duration::from_millis(1_000 + ms * 5), 500);
        }
        assert!((rate.bps().unwrap() - 800_000.0).abs() < 10_000.0, "{:?}", rate.bps());
    }
}
