//! The delay-based rate: additive increase near the link's known capacity, multiplicative far
//! from it, and a cut to a fraction of the acknowledged rate when the detector sees a queue.
//!
//! libwebrtc's `AimdRateControl`, with two changes that the measurements call for: a
//! faster multiplicative ramp before the first overuse and after the capacity estimate is found
//! stale (the path got faster), and the rule that the target never runs far ahead of the
//! acknowledged rate (the crate's GCC climbed to 2–6× the link's capacity without it).

use std::time::{Duration, Instant};

use super::delay::Usage;

/// On overuse the rate drops to this fraction of the acknowledged rate: below the link, so its
/// queue drains.
const BETA: f64 = 0.85;
/// Multiplicative increase per second far from the capacity, in steady state.
const SLOW_RAMP_PER_SECOND: f64 = 1.08;
/// Multiplicative increase per second before the first overuse and after the capacity estimate
/// went stale (the rate left it upwards without a queue forming).
const FAST_RAMP_PER_SECOND: f64 = 1.5;
/// How long after a capacity reset the fast ramp lasts; then the slow one (avoid ramping blind).
const FAST_RAMP_AFTER_RESET: Duration = Duration::from_secs(4);
/// The target may exceed the acknowledged rate by this factor, plus [`HEADROOM_BPS`].
const HEADROOM_FACTOR: f64 = 1.5;
/// See [`HEADROOM_FACTOR`].
const HEADROOM_BPS: f64 = 10_000.0;
/// The headroom limit never holds the rate below this: a sender with little to send (audio
/// only, after the ladder gave up video) acknowledges little, and 1.5 × its audio would keep
/// the rate below the lowest video rung for good (seen on the emulated links: after a collapse
/// to audio only, the estimate sat at the minimum and video never came back). Rising this far on
/// audio alone still needs the delay detector's consent.
const MIN_LIMIT_BPS: f64 = 250_000.0;
/// The additive increase is at least this share of the rate per second (libwebrtc's one packet
/// per response time is ~1 %/s at 2.5 Mbps: far too slow to come back after a cut).
const MIN_ADDITIVE_SHARE: f64 = 0.08;
/// A queue of this many seconds is drained in [`DRAIN_TIME`] seconds by a deeper cut…
const DRAIN_TIME: f64 = 0.5;
/// …but never below this share of the acknowledged rate.
const DEEPEST_CUT: f64 = 0.5;
/// The packet size the additive increase assumes, bytes.
const PACKET_BYTES: f64 = 1_200.0;

/// Where the controller is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateState {
    /// Keep the rate (a queue is draining).
    Hold,
    /// Raise it.
    Increase,
    /// Cut it (a queue is building).
    Decrease,
}

/// The rate the link carried when queues formed, with its spread (kbps domain, as libwebrtc).
#[derive(Debug, Clone, Copy, Default)]
struct LinkCapacity {
    estimate_kbps: Option<f64>,
    variance: f64,
}

impl LinkCapacity {
    fn on_overuse(&mut self, acked_bps: f64) {
        let sample = acked_bps / 1_000.0;
        let alpha = 0.05;
        let estimate = match self.estimate_kbps {
            None => sample,
            Some(e) => (1.0 - alpha) * e + alpha * sample,
        };
        let error = estimate - sample;
        self.variance =
            ((1.0 - alpha) * self.variance + alpha * error * error / estimate.max(1.0)).clamp(0.4, 2.5);
        self.estimate_kbps = Some(estimate);
    }

    fn deviation_kbps(&self, estimate: f64) -> f64 {
        (self.variance.max(0.4) * estimate).sqrt()
    }

    fn upper_bps(&self) -> Option<f64> {
        self.estimate_kbps.map(|e| (e + 3.0 * self.deviation_kbps(e)) * 1_000.0)
    }

    fn lower_bps(&self) -> Option<f64> {
        self.estimate_kbps.map(|e| (e - 3.0 * self.deviation_kbps(e)) * 1_000.0)
    }

    fn estimate_bps(&self) -> Option<f64> {
        self.estimate_kbps.map(|e| e * 1_000.0)
    }
}

/// The AIMD rate controller.
#[derive(Debug)]
pub struct Aimd {
    bitrate: f64,
    state: RateState,
    capacity: LinkCapacity,
    last_change: Option<Instant>,
    /// Until when the fast multiplicative ramp applies (`None`: only before the first overuse).
    fast_until: Option<Instant>,
    seen_overuse: bool,
    restarts: u32,
    rtt: Duration,
}

impl Aimd {
    /// A controller starting at `bitrate`.
    pub fn new(bitrate: f64) -> Aimd {
        Aimd {
            bitrate,
            state: RateState::Hold,
            capacity: LinkCapacity::default(),
            last_change: None,
            fast_until: None,
            seen_overuse: false,
            restarts: 0,
            rtt: Duration::from_millis(200),
        }
    }

    /// The delay-based rate, bits per second.
    pub fn bitrate(&self) -> f64 {
        self.bitrate
    }

    /// Where the cycle is.
    pub fn state(&self) -> RateState {
        self.state
    }

    /// The link's capacity as measured at the last overuses, if any.
    pub fn link_capacity_bps(&self) -> Option<f64> {
        self.capacity.estimate_bps()
    }

    /// Whether the next increase is the fast multiplicative one.
    pub fn in_fast_ramp(&self, now: Instant) -> bool {
        self.capacity.estimate_kbps.is_none()
            && (!self.seen_overuse || self.fast_until.is_some_and(|t| now < t))
    }

    /// How many times the ramp restarted (a change says the capacity went stale).
    pub fn ramp_restarts(&self) -> u32 {
        self.restarts
    }

    /// Sets the round trip the additive increase and the reduction interval depend on.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    /// Jumps to `bitrate` (another source knows better: a probe, the fallback that ran meanwhile).
    pub fn set_bitrate(&mut self, now: Instant, bitrate: f64) {
        self.bitrate = bitrate;
        self.last_change = Some(now);
    }

    /// Forgets the link's capacity and ramps fast again (a probe or an outage says the path
    /// changed).
    pub fn restart_ramp(&mut self, now: Instant) {
        self.capacity = LinkCapacity::default();
        self.restarts += 1;
        self.fast_until = Some(now + FAST_RAMP_AFTER_RESET);
    }

    /// Whether an overuse now should cut the rate again: once per round trip, or at once when
    /// the acknowledged rate is already below half the target.
    pub fn time_to_reduce_further(&self, now: Instant, acked: Option<f64>) -> bool {
        let interval = self.rtt.clamp(Duration::from_millis(10), Duration::from_millis(200));
        if self.last_change.is_none_or(|t| now.saturating_duration_since(t) >= interval) {
            return true;
        }
        acked.is_some_and(|a| a < 0.5 * self.bitrate)
    }

    /// Moves the rate for the detector's verdict, the acknowledged rate (`acked` over the last
    /// half second, `recent` over the last moments) and the queueing delay; returns it.
    pub fn update(
        &mut self,
        now: Instant,
        usage: Usage,
        acked: Option<f64>,
        recent: Option<f64>,
        queue: Duration,
    ) -> f64 {
        self.state = match (usage, self.state) {
            (Usage::Normal, RateState::Hold) => {
                self.last_change = Some(now);
                RateState::Increase
            }
            (Usage::Normal, state) => state,
            (Usage::Overusing, _) => RateState::Decrease,
            (Usage::Underusing, _) => RateState::Hold,
        };
        let since = self.last_change.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        match self.state {
            RateState::Hold => {}
            // Nothing acknowledged yet (start, after an outage): no evidence to rise on.
            RateState::Increase if acked.is_none() => {}
            RateState::Increase => {
                let acked = acked.expect("matched above");
                if self.capacity.upper_bps().is_some_and(|upper| acked > upper) {
                    // The path carries more than it did at the last overuse: it got faster.
                    self.restart_ramp(now);
                }
                let seconds = since.as_secs_f64().min(1.0);
                let multiplicative = |per_second: f64, bitrate: f64| {
                    bitrate + (bitrate * (per_second.powf(seconds) - 1.0)).max(1_000.0 * seconds)
                };
                let increased = match (self.capacity.estimate_bps(), self.capacity.lower_bps()) {
                    // Far below the capacity (after a deep cut): back up to it quickly…
                    (Some(_), Some(lower)) if self.bitrate < lower => {
                        multiplicative(FAST_RAMP_PER_SECOND, self.bitrate).min(lower)
                    }
                    // …near it, carefully.
                    (Some(_), _) => self.bitrate + self.additive_per_second() * seconds,
                    (None, _) if self.in_fast_ramp(now) => multiplicative(FAST_RAMP_PER_SECOND, self.bitrate),
                    (None, _) => multiplicative(SLOW_RAMP_PER_SECOND, self.bitrate),
                };
                let limit = (HEADROOM_FACTOR * acked + HEADROOM_BPS).max(MIN_LIMIT_BPS);
                // Never raise above the limit, but an existing rate above it is not cut for it.
                if increased > self.bitrate {
                    self.bitrate = increased.min(limit.max(self.bitrate));
                }
                self.last_change = Some(now);
            }
            RateState::Decrease => {
                if let Some(a) = acked {
                    // What the link carried while the queue kept it busy: the capacity sample.
                    // Not the half-second mean, which is what we *sent* when the overuse comes
                    // from a burst (a keyframe): measured that low, every later second with
                    // a little more acknowledged read as "the path got faster" and restarted
                    // the fast ramp into the next queue (seen on the emulated 800 kbps link).
                    let link = recent.unwrap_or(a);
                    // The cut starts from the lower of the two: the half-second mean still
                    // remembers the time before a drop, the recent rate a burst's peak.
                    let a = recent.map_or(a, |r| r.min(a));
                    // A long queue needs a deeper cut to drain in time.
                    let drain = (1.0 - queue.as_secs_f64() / DRAIN_TIME).max(DEEPEST_CUT);
                    let mut decreased = BETA.min(drain) * a;
                    if decreased > self.bitrate {
                        if let Some(capacity) = self.capacity.estimate_bps() {
                            decreased = BETA * capacity;
                        }
                    }
                    if decreased < self.bitrate {
                        self.bitrate = decreased;
                    }
                    if self.capacity.lower_bps().is_some_and(|lower| link < lower) {
                        // Far below the capacity measured so far: the link got slower, measure
                        // it afresh.
                        self.capacity = LinkCapacity::default();
                    }
                    self.capacity.on_overuse(link);
                } else {
                    self.bitrate *= BETA;
                }
                self.seen_overuse = true;
                self.fast_until = None;
                self.state = RateState::Hold;
                self.last_change = Some(now);
            }
        }
        self.bitrate
    }

    /// Near the capacity: about one packet more per response time (a round trip plus 100 ms).
    fn additive_per_second(&self) -> f64 {
        let frame_bytes = self.bitrate / 8.0 / 30.0;
        let packets = (frame_bytes / PACKET_BYTES).ceil().max(1.0);
        let packet_bits = frame_bytes / packets * 8.0;
        let response = (self.rtt + Duration::from_millis(100)).as_secs_f64();
        (packet_bits / response).max(4_000.0).max(MIN_ADDITIVE_SHARE * self.bitrate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_overuse_measures_the_link_at_the_rate_its_queue_drained_not_at_what_was_sent() {
        // A keyframe burst on an 800 kbps link: the half-second mean says 650 kbps (what the
        // encoder sent), the last 150 ms the link's 800 kbps while the burst drained.
        let t0 = Instant::now();
        let mut aimd = Aimd::new(700_000.0);
        let cut = aimd.update(t0, Usage::Overusing, Some(650_000.0), Some(800_000.0), 20 * MS);
        assert_eq!(cut, 0.85 * 650_000.0, "the cut still starts from the lower rate");
        assert_eq!(aimd.link_capacity_bps(), Some(800_000.0));
        // The next seconds acknowledge a little more than was sent before the burst: no news
        // about the path, so no restart of the fast ramp (with 650 kbps as the capacity, 760
        // was above its upper bound and restarted it).
        let restarts = aimd.ramp_restarts();
        let mut t = t0;
        for _ in 0..20 {
            t += 100 * MS;
            aimd.update(t, Usage::Normal, Some(760_000.0), Some(760_000.0), 5 * MS);
        }
        assert_eq!(aimd.ramp_restarts(), restarts);
        assert!(!aimd.in_fast_ramp(t));
    }

    #[test]
    fn a_sender_of_audio_alone_may_still_rise_to_what_the_lowest_video_rung_needs() {
        let t0 = Instant::now();
        let mut aimd = Aimd::new(100_000.0);
        let mut t = t0;
        for _ in 0..100 {
            t += 100 * MS;
            aimd.update(t, Usage::Normal, Some(45_000.0), Some(45_000.0), Duration::ZERO);
        }
        // 1.5 × 45 kbps + 10 kbps would be 77 kbps: below the 180p rung's 80 kbps + audio.
        assert_eq!(aimd.bitrate(), MIN_LIMIT_BPS);
    }

    #[test]
    fn an_overuse_far_below_the_measured_capacity_measures_it_afresh() {
        let t0 = Instant::now();
        let mut aimd = Aimd::new(2_500_000.0);
        aimd.update(t0, Usage::Overusing, Some(2_500_000.0), Some(2_500_000.0), 20 * MS);
        // The link dropped to 600 kbps: the recent rate is the new link, the mean remembers the old.
        let t1 = t0 + Duration::from_secs(1);
        let cut = aimd.update(t1, Usage::Overusing, Some(1_800_000.0), Some(600_000.0), 300 * MS);
        assert_eq!(aimd.link_capacity_bps(), Some(600_000.0));
        assert!(cut <= 0.5 * 600_000.0 + 1.0, "a 300 ms queue: the deepest cut, {cut}");
    }
}
