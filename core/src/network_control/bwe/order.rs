//! Puts feedback back in send order for the delay detector.
//!
//! Each feedback covers a contiguous run of sequence numbers (lost packets included), so a gap
//! before a batch means an earlier feedback is still on its way: the batch waits for it, up to
//! [`GAP_WAIT`]. The detector then sees every packet once, in order, whatever order the feedback
//! came in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::PacketFeedback;

/// How long packets wait for an earlier feedback before the gap is given up on.
const GAP_WAIT: Duration = Duration::from_millis(200);

/// The reorder buffer.
#[derive(Debug, Default)]
pub struct InOrder {
    held: BTreeMap<u64, PacketFeedback>,
    next: Option<u64>,
    /// Since when the oldest held packet waits behind a gap.
    waiting_since: Option<Instant>,
}

impl InOrder {
    /// Adds a feedback's packets; returns those now in order.
    pub fn push(&mut self, now: Instant, packets: &[PacketFeedback]) -> Vec<PacketFeedback> {
        for packet in packets {
            if self.next.is_none_or(|next| packet.sequence >= next) {
                self.held.insert(packet.sequence, *packet);
            }
        }
        self.release(now)
    }

    /// Releases what is in order, or what waited too long for a gap to fill.
    pub fn release(&mut self, now: Instant) -> Vec<PacketFeedback> {
        let mut ready = Vec::new();
        loop {
            let Some((&first, _)) = self.held.first_key_value() else {
                self.waiting_since = None;
                break;
            };
            let next = *self.next.get_or_insert(first);
            let gave_up = self.waiting_since.is_some_and(|t| now.saturating_duration_since(t) >= GAP_WAIT);
            if first != next && !gave_up {
                self.waiting_since.get_or_insert(now);
                break;
            }
            self.waiting_since = None;
            let (sequence, packet) = self.held.pop_first().expect("first exists");
            self.next = Some(sequence + 1);
            ready.push(packet);
        }
        ready
    }

    /// Forgets everything (after an outage).
    pub fn reset(&mut self) {
        *self = InOrder::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(t0: Instant, range: std::ops::Range<u64>) -> Vec<PacketFeedback> {
        range
            .map(|sequence| PacketFeedback {
                sequence,
                send_time: t0,
                arrival: Some(Duration::ZERO),
                size: 100,
                probe_cluster: None,
            })
            .collect()
    }

    fn sequences(packets: Vec<PacketFeedback>) -> Vec<u64> {
        packets.into_iter().map(|p| p.sequence).collect()
    }

    #[test]
    fn a_batch_behind_a_gap_waits_for_the_earlier_one() {
        let t0 = Instant::now();
        let mut order = InOrder::default();
        assert_eq!(sequences(order.push(t0, &packets(t0, 0..3))), [0, 1, 2]);
        assert!(order.push(t0, &packets(t0, 6..8)).is_empty(), "3..6 is missing");
        assert_eq!(sequences(order.push(t0, &packets(t0, 3..6))), [3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_gap_that_never_fills_is_given_up_on() {
        let t0 = Instant::now();
        let mut order = InOrder::default();
        order.push(t0, &packets(t0, 0..3));
        assert!(order.push(t0, &packets(t0, 6..8)).is_empty());
        assert_eq!(sequences(order.release(t0 + GAP_WAIT)), [6, 7]);
        assert!(order.push(t0, &packets(t0, 3..6)).is_empty(), "too late: dropped");
    }
}
