//! The receiver's half of REMB: the same delay detector and AIMD as the sender's controller, run
//! on the packets that arrive here with their abs-send-time, giving the rate we can receive.
//!
//! For a peer that does not use transport-cc: it sends REMB-driven (libwebrtc without send-side
//! BWE, older stacks), and REMB is what tells it to slow down. Time is an argument; the 24-bit
//! abs-send-time (6.18 fixed-point seconds, wrapping every 64 s) is unwrapped here.

use std::time::{Duration, Instant};

use super::acknowledged::AcknowledgedRate;
use super::aimd::Aimd;
use super::delay::{InterArrival, Trendline, Usage};

/// abs-send-time units per second (18 fractional bits).
const UNITS_PER_SECOND: f64 = (1 << 18) as f64;
/// abs-send-time wraps at 2^24 units (64 s).
const WRAP: u32 = 1 << 24;
/// A REMB is sent at least this often…
const REMB_INTERVAL: Duration = Duration::from_secs(1);
/// …and at once when the estimate fell below this share of the last one sent.
const REMB_DROP: f64 = 0.97;
/// The window the incoming rate is measured over when a cut is based on it.
const RECENT_WINDOW: Duration = Duration::from_millis(150);

/// Estimates the rate this endpoint can receive at, for REMB.
#[derive(Debug, Default)]
pub struct ReceiveSideEstimator {
    inter_arrival: InterArrival,
    trendline: Trendline,
    incoming: AcknowledgedRate,
    aimd: Option<Aimd>,
    epoch: Option<Instant>,
    /// The last packet's abs-send-time, raw and unwrapped.
    last_send: Option<(u32, Duration)>,
    last_remb: Option<(Instant, u64)>,
}

impl ReceiveSideEstimator {
    /// A packet of `size` bytes that arrived `now`, stamped `abs_send_time` (24 bits) by its
    /// sender.
    pub fn on_packet(&mut self, now: Instant, abs_send_time: u32, size: usize) {
        let raw = abs_send_time & (WRAP - 1);
        let send = match self.last_send {
            None => Duration::from_secs(64), // room below for slightly reordered packets
            Some((last_raw, last)) => {
                let forward = raw.wrapping_sub(last_raw) & (WRAP - 1);
                if forward < WRAP / 2 {
                    last + units(forward)
                } else {
                    last.saturating_sub(units(WRAP - forward))
                }
            }
        };
        if self.last_send.is_none_or(|(_, last)| send >= last) {
            self.last_send = Some((raw, send));
        }
        let arrival = now.saturating_duration_since(*self.epoch.get_or_insert(now));
        self.incoming.on_packet(arrival, size);
        let incoming = self.incoming.bps();
        if self.aimd.is_none() {
            self.aimd = incoming.map(Aimd::new);
        }
        let Some(delta) = self.inter_arrival.add(send, arrival) else { return };
        let usage = self.trendline.update(delta);
        let Some(aimd) = self.aimd.as_mut() else { return };
        if usage != Usage::Overusing || aimd.time_to_reduce_further(now, incoming) {
            let recent = self.incoming.recent_bps(RECENT_WINDOW);
            aimd.update(now, usage, incoming, recent, Duration::ZERO);
        }
    }

    /// The rate this endpoint can receive at, once packets have been measured.
    pub fn estimate_bps(&self) -> Option<u64> {
        self.aimd.as_ref().map(|a| a.bitrate() as u64)
    }

    /// The estimate to send as a REMB now, if one is due: every second, and at once when it fell.
    pub fn remb_due(&mut self, now: Instant) -> Option<u64> {
        let estimate = self.estimate_bps()?;
        let due = match self.last_remb {
            None => true,
            Some((at, sent)) => {
                now.saturating_duration_since(at) >= REMB_INTERVAL
                    || (estimate as f64) < REMB_DROP * sent as f64
            }
        };
        due.then(|| {
            self.last_remb = Some((now, estimate));
            estimate
        })
    }

    /// When the next periodic REMB is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.last_remb.map(|(at, _)| at + REMB_INTERVAL)
    }
}

fn units(n: u32) -> Duration {
    Duration::from_secs_f64(n as f64 / UNITS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 000-byte packets sent every `gap_ms` over a link of `link_bps` (arrivals spaced by the
    /// slower of the two), for `seconds`; REMBs sent along the way.
    fn run(
        estimator: &mut ReceiveSideEstimator,
        t0: Instant,
        from: f64,
        seconds: f64,
        gap_ms: f64,
        link_bps: f64,
    ) -> Vec<u64> {
        let serialise = 1_000.0 * 8.0 / link_bps;
        let mut rembs = Vec::new();
        let mut busy_until = from;
        let mut sent = from;
        while sent < from + seconds {
            busy_until = busy_until.max(sent) + serialise;
            let abs = ((sent * UNITS_PER_SECOND) as u64 % WRAP as u64) as u32;
            let now = t0 + Duration::from_secs_f64(busy_until + 0.05);
            estimator.on_packet(now, abs, 1_000);
            rembs.extend(estimator.remb_due(now));
            sent += gap_ms / 1_000.0;
        }
        rembs
    }

    #[test]
    fn the_estimate_follows_what_arrives_and_falls_when_a_queue_builds() {
        let t0 = Instant::now();
        let mut estimator = ReceiveSideEstimator::default();
        // 800 kbps through a 2 Mbps link: no queue, the estimate rises above what is sent.
        let rembs = run(&mut estimator, t0, 60.0, 5.0, 10.0, 2_000_000.0);
        assert!(rembs.len() >= 4, "about one a second: {rembs:?}");
        let before = estimator.estimate_bps().unwrap();
        assert!(before > 800_000, "{before}");
        // 1.6 Mbps into a 1 Mbps link (the abs-send-time wraps at 64 s meanwhile): a queue grows.
        let rembs = run(&mut estimator, t0, 65.0, 2.0, 5.0, 1_000_000.0);
        let after = estimator.estimate_bps().unwrap();
        assert!(after <= 1_000_000, "{before} → {after}: {rembs:?}");
        assert!(!rembs.is_empty());
    }
}
