//! Receive-side loss recovery for one RTP stream: which packets to NACK, when to ask again, and
//! when to stop asking and request a keyframe instead.
//!
//! The webrtc crate's generator asks for every missing packet every 100 ms with no limit, and it
//! tracks retransmissions under the RTX stream's own SSRC, so a repair never fills the gap it was
//! sent for: on a lossy link the NACKs and the retransmissions they trigger end up filling it.
//! [`LossTracker`] instead:
//!
//! - counts a repair (a retransmission's original sequence number) as an arrival;
//! - waits [`NackConfig::reorder_delay`] before the first NACK, so reordering is not loss;
//! - asks at most [`NackConfig::max_retries`] times per packet, spaced by the round-trip time;
//! - gives a packet up after those tries or once it is older than [`NackConfig::horizon`], and
//!   then asks for a keyframe (at most once per [`NackConfig::keyframe_request_interval`]), since
//!   the decoder cannot go on without the packet.
//!
//! Sequence numbers are unwrapped to 64 bits internally, so wrap-around needs no special case.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How a [`LossTracker`] asks for missing packets.
#[derive(Debug, Clone)]
pub struct NackConfig {
    /// How long a gap may be reordering before the first NACK for it.
    pub reorder_delay: Duration,
    /// NACKs sent per missing packet at most.
    pub max_retries: u8,
    /// A retry waits this many round trips after the previous NACK...
    pub rtt_factor: f64,
    /// ...and at least this long.
    pub min_retry_interval: Duration,
    /// A packet missing for longer than this is given up: it would arrive too late to play.
    pub horizon: Duration,
    /// Packets tracked as missing at most; a larger gap gives up its oldest packets.
    pub max_missing: usize,
    /// Keyframe requests go out at most this often.
    pub keyframe_request_interval: Duration,
}

impl Default for NackConfig {
    fn default() -> Self {
        NackConfig {
            reorder_delay: Duration::from_millis(10),
            max_retries: 4,
            rtt_factor: 1.5,
            min_retry_interval: Duration::from_millis(20),
            horizon: Duration::from_secs(1),
            max_missing: 1_000,
            keyframe_request_interval: Duration::from_millis(500),
        }
    }
}

/// What a [`LossTracker`] wants sent now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LossActions {
    /// Sequence numbers to NACK, oldest first.
    pub nacks: Vec<u16>,
    /// Ask the sender for a keyframe: packets were given up.
    pub request_keyframe: bool,
}

/// Running totals of a [`LossTracker`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LossCounts {
    /// Sequence numbers put in NACKs (a packet asked for three times counts three).
    pub nacked: u64,
    /// Missing packets that arrived as retransmissions.
    pub repaired: u64,
    /// Missing packets that arrived late on their own (reordering).
    pub late: u64,
    /// Packets given up: never arrived within the tries or the horizon.
    pub given_up: u64,
    /// Keyframe requests asked for.
    pub keyframe_requests: u64,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    detected_at: Instant,
    tries: u8,
    last_nack_at: Option<Instant>,
}

/// The missing packets of one stream and the decisions about them; see the module documentation.
#[derive(Debug)]
pub struct LossTracker {
    config: NackConfig,
    /// Highest sequence number seen, unwrapped.
    highest: Option<u64>,
    missing: BTreeMap<u64, Missing>,
    /// Since when a keyframe request waits to be sent (packets were given up).
    keyframe_pending: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    counts: LossCounts,
}

impl LossTracker {
    /// A tracker with these settings.
    pub fn new(config: NackConfig) -> LossTracker {
        LossTracker {
            config,
            highest: None,
            missing: BTreeMap::new(),
            keyframe_pending: None,
            last_keyframe_request: None,
            counts: LossCounts::default(),
        }
    }

    /// The totals so far.
    pub fn counts(&self) -> LossCounts {
        self.counts
    }

    /// Packets currently missing.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// Records the arrival of `seq`: a retransmission's original sequence number if `is_repair`.
    pub fn on_packet(&mut self, now: Instant, seq: u16, is_repair: bool) {
        let Some(highest) = self.highest else {
            self.highest = Some(u64::from(seq) + (1 << 16)); // room below for reordering
            return;
        };
        let ext = unwrap(highest, seq);
        if ext > highest {
            for lost in highest + 1..ext {
                self.missing.insert(lost, Missing { detected_at: now, tries: 0, last_nack_at: None });
            }
            self.highest = Some(ext);
            let excess = self.missing.len().saturating_sub(self.config.max_missing);
            for _ in 0..excess {
                self.missing.pop_first();
                self.give_up_one(now);
            }
        } else if self.missing.remove(&ext).is_some() {
            if is_repair {
                self.counts.repaired += 1;
            } else {
                self.counts.late += 1;
            }
        }
    }

    /// What to send at `now`, with the current round-trip time `rtt`: the packets due a NACK
    /// (each try counted), and whether to request a keyframe. Call it again by
    /// [`LossTracker::next_deadline`].
    pub fn poll(&mut self, now: Instant, rtt: Duration) -> LossActions {
        let retry = self.retry_interval(rtt);
        let mut actions = LossActions::default();
        let mut given_up = Vec::new();
        for (&ext, missing) in self.missing.iter_mut() {
            let too_old = now.saturating_duration_since(missing.detected_at) >= self.config.horizon;
            let exhausted = missing.tries >= self.config.max_retries
                && missing.last_nack_at.is_some_and(|at| now.saturating_duration_since(at) >= retry);
            if too_old || exhausted {
                given_up.push(ext);
                continue;
            }
            let due = match missing.last_nack_at {
                None => now.saturating_duration_since(missing.detected_at) >= self.config.reorder_delay,
                Some(at) => {
                    missing.tries < self.config.max_retries && now.saturating_duration_since(at) >= retry
                }
            };
            if due {
                missing.tries += 1;
                missing.last_nack_at = Some(now);
                actions.nacks.push(ext as u16);
            }
        }
        for ext in given_up {
            self.missing.remove(&ext);
            self.give_up_one(now);
        }
        self.counts.nacked += actions.nacks.len() as u64;
        if self.keyframe_pending.is_some() && self.keyframe_request_allowed(now) {
            self.keyframe_pending = None;
            self.last_keyframe_request = Some(now);
            self.counts.keyframe_requests += 1;
            actions.request_keyframe = true;
        }
        actions
    }

    /// When [`LossTracker::poll`] next has something to do, if ever.
    pub fn next_deadline(&self, rtt: Duration) -> Option<Instant> {
        let retry = self.retry_interval(rtt);
        let packets = self.missing.values().map(|m| {
            let give_up = m.detected_at + self.config.horizon;
            match m.last_nack_at {
                None => m.detected_at + self.config.reorder_delay,
                // The last try's wait ends in either a retry or giving up.
                Some(at) => (at + retry).min(give_up),
            }
        });
        let keyframe = self.keyframe_pending.map(|since| match self.last_keyframe_request {
            Some(at) => since.max(at + self.config.keyframe_request_interval),
            None => since,
        });
        packets.chain(keyframe).min()
    }

    fn retry_interval(&self, rtt: Duration) -> Duration {
        rtt.mul_f64(self.config.rtt_factor).max(self.config.min_retry_interval)
    }

    fn keyframe_request_allowed(&self, now: Instant) -> bool {
        self.last_keyframe_request
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.keyframe_request_interval)
    }

    fn give_up_one(&mut self, now: Instant) {
        self.counts.given_up += 1;
        self.keyframe_pending.get_or_insert(now);
    }
}

/// `seq` unwrapped to the 64-bit sequence nearest to `reference`.
fn unwrap(reference: u64, seq: u16) -> u64 {
    let delta = i64::from(seq.wrapping_sub(reference as u16) as i16);
    reference.saturating_add_signed(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(50);

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    fn tracker() -> LossTracker {
        LossTracker::new(NackConfig::default())
    }

    #[test]
    fn a_gap_is_nacked_after_the_reorder_delay_and_a_repair_closes_it() {
        let start = Instant::now();
        let mut t = tracker();
        t.on_packet(start, 10, false);
        t.on_packet(start, 13, false);
        assert_eq!(t.missing(), 2);
        assert!(t.poll(start, RTT).nacks.is_empty(), "not yet: it may be reordering");
        assert_eq!(t.poll(ms(start, 10), RTT).nacks, [11, 12]);
        // 11 comes back as a retransmission (its original sequence number): repaired.
        t.on_packet(ms(start, 60), 11, true);
        assert_eq!(t.counts().repaired, 1);
        assert_eq!(t.poll(ms(start, 90), RTT).nacks, [12], "only what is still missing is asked again");
        assert_eq!(t.counts().nacked, 3);
    }

    #[test]
    fn reordered_packets_are_not_nacked() {
        let start = Instant::now();
        let mut t = tracker();
        t.on_packet(start, 1, false);
        t.on_packet(start, 3, false);
        assert!(t.poll(ms(start, 2), RTT).nacks.is_empty());
        t.on_packet(ms(start, 4), 2, false);
        assert!(t.poll(ms(start, 20), RTT).nacks.is_empty());
        assert_eq!(t.counts(), LossCounts { late: 1, ..Default::default() });
    }

    #[test]
    fn retries_are_bounded_and_spaced_by_the_round_trip() {
        let start = Instant::now();
        let mut t = tracker();
        t.on_packet(start, 100, false);
        t.on_packet(start, 102, false);
        let mut sent_at = vec![];
        for step in 0..100 {
            let now = ms(start, step * 5);
            if t.poll(now, RTT).nacks == [101] {
                sent_at.push(step * 5);
            }
        }
        // First after 10 ms, then every 1.5 RTT (75 ms): four tries in all.
        assert_eq!(sent_at, [10, 85, 160, 235]);
    }

    #[test]
    fn a_packet_given_up_asks_for_one_keyframe_and_requests_are_throttled() {
        let start = Instant::now();
        let mut t = tracker();
        t.on_packet(start, 0, false);
        t.on_packet(start, 2, false);
        let mut keyframes = vec![];
        for step in 0..=200 {
            let now = ms(start, step * 5);
            if step == 80 {
                t.on_packet(now, 5, false); // 3 and 4 lost too
            }
            if t.poll(now, RTT).request_keyframe {
                keyframes.push(step * 5);
            }
        }
        // Packet 1 is given up at 310 ms (after its fourth try's wait); 3 and 4 at 710 ms, but
        // the request for them waits out the throttle until 810 ms.
        assert_eq!(keyframes, [310, 810]);
        assert_eq!(t.counts().given_up, 3);
        assert_eq!(t.counts().keyframe_requests, 2);
        assert_eq!(t.missing(), 0);
        assert_eq!(t.next_deadline(RTT), None, "nothing left to do");
    }

    #[test]
    fn packets_older_than_the_horizon_are_given_up_even_on_a_long_round_trip() {
        let start = Instant::now();
        let mut t = tracker();
        t.on_packet(start, 0, false);
        t.on_packet(start, 2, false);
        let rtt = Duration::from_millis(400); // retries every 600 ms
        assert_eq!(t.poll(ms(start, 10), rtt).nacks, [1]);
        assert_eq!(t.poll(ms(start, 610), rtt).nacks, [1]);
        assert_eq!(t.next_deadline(rtt), Some(ms(start, 1_000)));
        let actions = t.poll(ms(start, 1_000), rtt);
        assert!(actions.nacks.is_empty() && actions.request_keyframe);
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let start = Instant::now();
        let mut t = tracker();
        t.on_packet(start, 65_534, false);
        t.on_packet(start, 1, false);
        assert_eq!(t.poll(ms(start, 10), RTT).nacks, [65_535, 0]);
        t.on_packet(ms(start, 20), 0, true);
        assert_eq!(t.counts().repaired, 1);
        t.on_packet(ms(start, 20), 65_530, false); // an old duplicate: ignored
        assert_eq!(t.missing(), 1);
    }

    #[test]
    fn a_huge_gap_gives_up_its_oldest_packets_at_once() {
        let start = Instant::now();
        let mut t = tracker();
        t.on_packet(start, 0, false);
        t.on_packet(start, 2_000, false);
        assert_eq!(t.missing(), 1_000);
        assert_eq!(t.counts().given_up, 999);
        assert!(t.poll(ms(start, 10), RTT).request_keyframe);
    }
}
