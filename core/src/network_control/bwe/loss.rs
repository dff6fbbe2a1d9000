//! The loss-based limit: a cap that loss above 10 % pulls down and loss below 2 % lets rise.
//!
//! libwebrtc's classic rule (`SendSideBandwidthEstimation`), except that loss between 2 % and
//! 10 % lets the cap grow slowly (3 %/s) instead of holding it; random loss of a percent or so
//! (Wi-Fi, cellular) therefore never lowers the rate. The cap only exists after heavy loss; when
//! it has grown back above what the other sources allow it disappears.

use std::time::{Duration, Instant};

/// Loss above this fraction cuts the cap.
pub const HIGH_LOSS: f64 = 0.10;
/// Loss below this fraction lets the cap grow.
pub const LOW_LOSS: f64 = 0.02;
/// Growth of the cap per second while loss is low.
const GROWTH_PER_SECOND: f64 = 1.08;
/// Growth of the cap per second while loss is between [`LOW_LOSS`] and [`HIGH_LOSS`]. Holding
/// the cap there (libwebrtc's rule) makes it permanent on a link with steady random loss in that
/// band: on the emulated 1 Mbps / 5 % link one unlucky sample capped the rate at 0.52 Mbps for
/// the remaining 24 s of the call. Growing slowly, a cap that is too low is given back within
/// seconds; a real limit (a policer) shows as loss above 10 % again and cuts it.
const HOLD_GROWTH_PER_SECOND: f64 = 1.03;
/// Packets a transport-cc loss sample needs before it counts…
const MIN_PACKETS: u32 = 20;
/// …and the time it must span: 20 packets is a tenth of a second of video, and 3 random losses
/// in 20 (15 %) come every few seconds on a 5 %-loss link, each cutting the rate though the
/// link's loss holds steady (seen on the emulated 1 Mbps / 5 % link: the estimate walked down to
/// the minimum in 20 s). Over half a second, 5 % random loss stays in the band that holds.
const MIN_SAMPLE_TIME: Duration = Duration::from_millis(500);
/// A cut waits this long (plus a round trip) after the previous one: its effect must show first.
const CUT_INTERVAL: Duration = Duration::from_millis(300);

/// The loss-based cap.
#[derive(Debug, Default)]
pub struct LossBased {
    cap: Option<f64>,
    lost: u32,
    total: u32,
    last_cut: Option<Instant>,
    last_sample: Option<Instant>,
    last_loss: Option<f64>,
    /// When the transport-cc sample being counted began.
    sample_start: Option<Instant>,
}

impl LossBased {
    /// The cap, bits per second; `None` while loss does not limit the rate.
    pub fn cap(&self) -> Option<f64> {
        self.cap
    }

    /// The last loss fraction that was acted on.
    pub fn loss(&self) -> Option<f64> {
        self.last_loss
    }

    /// Forgets the cap and the counts (after an outage: its loss was not congestion).
    pub fn reset(&mut self) {
        *self = LossBased { last_loss: self.last_loss, ..LossBased::default() };
    }

    /// Transport-cc verdicts: `lost` of `total` packets. Acted on per [`MIN_PACKETS`].
    /// `current` is the target now, `unconstrained` what the other sources would allow.
    pub fn on_packets(
        &mut self,
        now: Instant,
        lost: u32,
        total: u32,
        current: f64,
        unconstrained: f64,
        rtt: Duration,
    ) {
        self.lost += lost;
        self.total += total;
        let start = *self.sample_start.get_or_insert(now);
        if self.total >= MIN_PACKETS && now.saturating_duration_since(start) >= MIN_SAMPLE_TIME {
            let loss = self.lost as f64 / self.total as f64;
            self.lost = 0;
            self.total = 0;
            self.sample_start = None;
            self.on_fraction(now, loss, current, unconstrained, rtt);
        }
    }

    /// A loss fraction over some interval (a receiver report's, or a transport-cc sample).
    pub fn on_fraction(&mut self, now: Instant, loss: f64, current: f64, unconstrained: f64, rtt: Duration) {
        let elapsed = self.last_sample.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_sample = Some(now);
        self.last_loss = Some(loss);
        if loss > HIGH_LOSS {
            if self.last_cut.is_none_or(|t| now.saturating_duration_since(t) >= CUT_INTERVAL + rtt) {
                self.cap = Some(current * (1.0 - 0.5 * loss));
                self.last_cut = Some(now);
                self.lost = 0;
                self.total = 0;
                self.sample_start = None;
            }
        } else if let Some(cap) = self.cap {
            let growth = if loss < LOW_LOSS { GROWTH_PER_SECOND } else { HOLD_GROWTH_PER_SECOND };
            let seconds = elapsed.as_secs_f64().min(2.0);
            let grown = cap * growth.powf(seconds) + 1_000.0 * seconds;
            self.cap = (grown < unconstrained).then_some(grown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_loss_cuts_light_loss_holds_and_no_loss_releases_the_cap() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut loss = LossBased::default();
        loss.on_fraction(t0, 0.01, 1_000_000.0, 1_000_000.0, rtt);
        assert_eq!(loss.cap(), None, "1 % loss is not congestion");
        loss.on_fraction(t0, 0.20, 1_000_000.0, 1_000_000.0, rtt);
        assert_eq!(loss.cap(), Some(900_000.0));
        loss.on_fraction(t0 + Duration::from_millis(100), 0.20, 900_000.0, 1_000_000.0, rtt);
        assert_eq!(loss.cap(), Some(900_000.0), "one cut per 300 ms + rtt");
        loss.on_fraction(t0 + Duration::from_secs(1), 0.05, 900_000.0, 1_000_000.0, rtt);
        let cap = loss.cap().expect("5 % keeps the cap");
        assert!(
            (900_000.0..=900_000.0 * 1.03 + 1_000.0).contains(&cap),
            "5 % lets it grow 3 %/s at most: {cap}"
        );
        let mut t = t0 + Duration::from_secs(1);
        for _ in 0..3 {
            t += Duration::from_secs(1);
            loss.on_fraction(t, 0.0, 900_000.0, 1_000_000.0, rtt);
        }
        assert_eq!(loss.cap(), None, "grown back past the other limits");
    }

    /// Feedback every 100 ms of 10 packets, `lost(i)` of them lost in the i-th; the cap at the end.
    fn feed(lost: impl Fn(u32) -> u32, feedbacks: u32) -> Option<f64> {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut loss = LossBased::default();
        for i in 0..feedbacks {
            let now = t0 + Duration::from_millis(100 * u64::from(i));
            loss.on_packets(now, lost(i), 10, 1_000_000.0, 1_000_000.0, rtt);
        }
        loss.cap()
    }

    #[test]
    fn a_cluster_of_random_losses_is_judged_over_half_a_second_not_twenty_packets() {
        // 3 % on average, but 3 of the first 20 packets (15 %): a cut when 20 packets made a sample.
        assert_eq!(feed(|i| if i % 10 == 0 { 3 } else { 0 }, 600), None);
        // 5 % random loss, clustered as badly as one second in ten of a 1 Mbps link is.
        assert_eq!(feed(|i| [3, 2, 0, 0, 0, 0, 0, 0, 0, 0][i as usize % 10], 600), None);
    }

    #[test]
    fn heavy_loss_still_cuts_within_a_second() {
        assert!(feed(|_| 3, 6).is_some_and(|cap| cap < 1_000_000.0), "30 % for 600 ms");
    }

    #[test]
    fn a_cap_set_by_one_unlucky_sample_is_given_back_under_steady_five_percent_loss() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut loss = LossBased::default();
        loss.on_fraction(t0, 0.12, 1_000_000.0, 1_000_000.0, rtt);
        assert_eq!(loss.cap(), Some(940_000.0));
        for s in 1..=10 {
            loss.on_fraction(t0 + Duration::from_secs(s), 0.05, 940_000.0, 1_000_000.0, rtt);
        }
        assert_eq!(loss.cap(), None, "grown back past the delay-based rate within 10 s");
    }
}
