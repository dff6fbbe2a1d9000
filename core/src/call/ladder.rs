//! Adaptive bitrate: the congestion controller's estimate and what the receiver acknowledges
//! choose a step of the encoding ladder, sans-I/O (time is an argument).
//!
//! Audio is reserved first ([`AUDIO_RESERVE_BPS`]); the video gets the rest (the *budget*). A
//! **step** is a rung (a picture size) at a frame rate; the encoder's bitrate follows the budget
//! within the step, up to the rung's [`Rung::max_bps`].
//!
//! - **Down at once**: when the budget falls below the current step's minimum, the next sample
//!   moves to the best step the budget fits (several rungs at once if need be): the estimate is
//!   already smoothed by the controller, so waiting longer only keeps the queue full.
//! - **Up one step at a time**, after the budget fitted the next step with a quarter to spare for
//!   [`UP_AFTER_MS`] *and* the receiver acknowledged most of what the current step sends (the
//!   link carries it): the estimate alone may be a guess, the acknowledged rate is not.
//! - The last rung sends no video at all (audio only); the call comes back from it the same way.
//! - [`VideoPreference::Detail`] (the doctor's examination mode, for a rash or a wound) keeps the
//!   picture size and halves the frame rate (twice) before it gives up resolution.

/// Bits per second kept for Opus audio before video gets any.
pub const AUDIO_RESERVE_BPS: u64 = 64_000;
/// How long the budget must fit the next step, with headroom, before stepping up.
pub const UP_AFTER_MS: i64 = 2_000;
/// The headroom the budget must have over the next step's minimum to step up (×4/5: 1.25).
const UP_HEADROOM_NUM: u64 = 5;
const UP_HEADROOM_DEN: u64 = 4;
/// Share of the current sending rate the receiver must acknowledge before stepping up.
const ACKNOWLEDGED_SHARE: f64 = 0.75;

/// One rung of the ladder: a picture size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Name, e.g. `"720p"`.
    pub name: &'static str,
    /// Frame width (0 for audio only).
    pub width: u32,
    /// Frame height (0 for audio only).
    pub height: u32,
    /// Frames per second at full rate (0 for audio only).
    pub fps: u32,
    /// Video bitrate at which this rung is comfortable.
    pub target_bps: u64,
    /// Least video bitrate for this rung at full frame rate.
    pub min_bps: u64,
    /// Most video bitrate worth spending on this rung (beyond it the next rung looks better).
    pub max_bps: u64,
}

/// The ladder, best first.
pub const LADDER: [Rung; 6] = [
    Rung {
        name: "1080p",
        width: 1920,
        height: 1080,
        fps: 30,
        target_bps: 3_000_000,
        min_bps: 1_800_000,
        max_bps: 5_000_000,
    },
    Rung {
        name: "720p",
        width: 1280,
        height: 720,
        fps: 30,
        target_bps: 1_500_000,
        min_bps: 900_000,
        max_bps: 2_600_000,
    },
    Rung {
        name: "540p",
        width: 960,
        height: 540,
        fps: 30,
        target_bps: 900_000,
        min_bps: 500_000,
        max_bps: 1_400_000,
    },
    Rung {
        name: "360p",
        width: 640,
        height: 360,
        fps: 30,
        target_bps: 500_000,
        min_bps: 250_000,
        max_bps: 800_000,
    },
    Rung {
        name: "180p",
        width: 320,
        height: 180,
        fps: 15,
        target_bps: 200_000,
        min_bps: 80_000,
        max_bps: 300_000,
    },
    Rung { name: "audio-only", width: 0, height: 0, fps: 0, target_bps: 0, min_bps: 0, max_bps: 0 },
];

/// The rung a call starts on unless the app asks otherwise: low, so the first seconds do not
/// overshoot an unknown link; the ladder climbs as the receiver acknowledges what is sent.
pub const DEFAULT_START_RUNG: &str = "360p";

/// What to give up first when the bandwidth is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoPreference {
    /// Smooth motion: lower the resolution, keep the frame rate (a conversation).
    #[default]
    Balanced,
    /// The examination mode: keep the resolution, lower the frame rate (a rash, a wound).
    Detail,
}

/// Frame-rate divisors [`VideoPreference::Detail`] tries before giving up resolution, with the
/// share of the rung's minimum bitrate each needs (bitrate grows slower than frame rate).
const DETAIL_FRAME_RATES: [(u32, f64); 3] = [(1, 1.0), (2, 0.6), (4, 0.35)];

/// What the encoder should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderTarget {
    /// The rung in use (picture size).
    pub rung: Rung,
    /// Frames per second to encode (the rung's, or less in the examination mode).
    pub fps: u32,
    /// Video bitrate to aim for (within the step, at most the rung's maximum).
    pub bitrate_bps: u64,
}

impl EncoderTarget {
    /// A rung at its full frame rate and comfortable bitrate.
    pub fn at_rung(rung: Rung) -> EncoderTarget {
        EncoderTarget { rung, fps: rung.fps, bitrate_bps: rung.target_bps }
    }
}

/// One step of the ladder: a rung at a frame-rate divisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    rung: usize,
    divisor: u32,
    min_bps: u64,
}

/// What the ladder reads from one stats sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LadderInput {
    /// The congestion controller's target, bits per second (audio included).
    pub estimate_bps: u64,
    /// What the receiver acknowledged over the last interval, bits per second (audio included);
    /// `None` when the peer sends no transport-wide feedback.
    pub acknowledged_bps: Option<u64>,
}

/// The ladder controller.
#[derive(Debug, Clone)]
pub struct BitrateLadder {
    steps: Vec<Step>,
    /// Index into `steps`, best first.
    current: usize,
    above_since: Option<i64>,
    last: Option<EncoderTarget>,
}

impl BitrateLadder {
    /// Starts at `start` (a rung name) with `cap` as the best allowed rung, balanced.
    pub fn new(start: &str, cap: &str) -> BitrateLadder {
        BitrateLadder::with_preference(start, cap, VideoPreference::Balanced)
    }

    /// Starts at `start` with `cap` as the best allowed rung and this preference.
    pub fn with_preference(start: &str, cap: &str, preference: VideoPreference) -> BitrateLadder {
        let find = |name: &str, default: usize| LADDER.iter().position(|r| r.name == name).unwrap_or(default);
        let top = find(cap, 0);
        let start = find(start, 3).max(top);
        let mut ladder = BitrateLadder { steps: vec![], current: 0, above_since: None, last: None };
        ladder.set_steps(top, preference);
        ladder.current = ladder.steps.iter().position(|s| s.rung == start && s.divisor == 1).unwrap_or(0);
        ladder
    }

    fn set_steps(&mut self, top: usize, preference: VideoPreference) {
        let divisors: &[(u32, f64)] = match preference {
            VideoPreference::Balanced => &DETAIL_FRAME_RATES[..1],
            VideoPreference::Detail => &DETAIL_FRAME_RATES,
        };
        self.steps = (top..LADDER.len())
            .flat_map(|rung| {
                let rung_divisors = if LADDER[rung].fps == 0 { &divisors[..1] } else { divisors };
                rung_divisors.iter().map(move |&(divisor, share)| Step {
                    rung,
                    divisor,
                    min_bps: (LADDER[rung].min_bps as f64 * share) as u64,
                })
            })
            .collect();
    }

    /// Changes what to give up first; the current picture size is kept, at full frame rate.
    pub fn set_preference(&mut self, preference: VideoPreference) {
        let (rung, top) = (self.steps[self.current].rung, self.steps[0].rung);
        self.set_steps(top, preference);
        self.current = self.steps.iter().position(|s| s.rung == rung && s.divisor == 1).unwrap_or(0);
        self.above_since = None;
    }

    /// The rung in use.
    pub fn rung(&self) -> Rung {
        LADDER[self.steps[self.current].rung]
    }

    /// The encoder target right now (before any sample, the start rung's comfortable bitrate).
    pub fn target(&self) -> EncoderTarget {
        self.last.unwrap_or_else(|| {
            let step = self.steps[self.current];
            let rung = LADDER[step.rung];
            EncoderTarget { rung, fps: rung.fps / step.divisor, bitrate_bps: rung.target_bps }
        })
    }

    /// The best step the budget fits, among those no bigger than the current picture (the last
    /// step, audio only, fits anything).
    fn fitting(&self, budget: u64) -> usize {
        let rung = self.steps[self.current].rung;
        self.steps.iter().position(|s| s.rung >= rung && s.min_bps <= budget).unwrap_or(self.steps.len() - 1)
    }

    /// Feeds one sample; returns the encoder target, and whether the step (rung or frame rate)
    /// changed.
    pub fn update(&mut self, input: LadderInput, now_ms: i64) -> (EncoderTarget, bool) {
        let budget = input.estimate_bps.saturating_sub(AUDIO_RESERVE_BPS);
        let before = self.current;
        if budget < self.steps[self.current].min_bps {
            self.current = self.fitting(budget);
            self.above_since = None;
        } else if self.current > 0 {
            let next = self.steps[self.current - 1];
            let headroom = budget * UP_HEADROOM_DEN >= next.min_bps * UP_HEADROOM_NUM;
            let sending = self.last.map_or(0, |t| t.bitrate_bps) + AUDIO_RESERVE_BPS;
            let delivered = input.acknowledged_bps.is_none_or(|acked| {
                self.current + 1 == self.steps.len() || acked as f64 >= sending as f64 * ACKNOWLEDGED_SHARE
            });
            if headroom && delivered {
                let since = *self.above_since.get_or_insert(now_ms);
                if now_ms - since >= UP_AFTER_MS {
                    self.current -= 1;
                    self.above_since = None;
                }
            } else {
                self.above_since = None;
            }
        }
        let step = self.steps[self.current];
        let rung = LADDER[step.rung];
        let target = EncoderTarget {
            rung,
            fps: rung.fps / step.divisor,
            bitrate_bps: budget.min(rung.max_bps).max(step.min_bps.min(budget)),
        };
        self.last = Some(target);
        (target, self.current != before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(bps: u64) -> LadderInput {
        LadderInput { estimate_bps: bps, acknowledged_bps: None }
    }

    fn acked(estimate_bps: u64, acknowledged_bps: u64) -> LadderInput {
        LadderInput { estimate_bps, acknowledged_bps: Some(acknowledged_bps) }
    }

    #[test]
    fn calls_start_low_by_default() {
        let ladder = BitrateLadder::new(DEFAULT_START_RUNG, "1080p");
        assert_eq!(ladder.rung().name, "360p");
        assert_eq!(ladder.target().bitrate_bps, 500_000);
    }

    #[test]
    fn a_drop_steps_down_at_the_first_sample_to_the_rung_that_fits() {
        let mut ladder = BitrateLadder::new("720p", "1080p");
        let (target, changed) = ladder.update(estimate(AUDIO_RESERVE_BPS + 600_000), 1_000);
        assert!(changed);
        assert_eq!((target.rung.name, target.bitrate_bps), ("540p", 600_000));
        let (target, changed) = ladder.update(estimate(50_000), 2_000);
        assert!(changed);
        assert_eq!((target.rung.name, target.bitrate_bps), ("audio-only", 0));
    }

    #[test]
    fn a_dip_within_the_rung_only_lowers_the_bitrate() {
        let mut ladder = BitrateLadder::new("720p", "1080p");
        let (target, changed) = ladder.update(estimate(AUDIO_RESERVE_BPS + 1_000_000), 0);
        assert!(!changed);
        assert_eq!((target.rung.name, target.bitrate_bps), ("720p", 1_000_000));
        let (target, _) = ladder.update(estimate(AUDIO_RESERVE_BPS + 2_000_000), 1_000);
        assert_eq!(target.bitrate_bps, 2_000_000, "within the rung up to its maximum");
    }

    #[test]
    fn stepping_up_needs_headroom_for_two_seconds_one_step_at_a_time_and_respects_the_cap() {
        let mut ladder = BitrateLadder::new("360p", "720p");
        // Enough for 540p's minimum but not 1.25x of it: stay.
        for t in 0..10 {
            ladder.update(estimate(AUDIO_RESERVE_BPS + 550_000), t * 1000);
        }
        assert_eq!(ladder.rung().name, "360p");
        let mut changes = vec![];
        for t in 10..30 {
            let (target, changed) = ladder.update(estimate(10_000_000), t * 1000);
            if changed {
                changes.push((t, target.rung.name));
            }
        }
        assert_eq!(
            changes,
            [(12, "540p"), (15, "720p")],
            "one rung per two observed seconds, capped at 720p"
        );
        assert_eq!(ladder.update(estimate(10_000_000), 31_000).0.bitrate_bps, 2_600_000);
    }

    #[test]
    fn stepping_up_waits_for_the_receiver_to_acknowledge_what_is_sent() {
        let mut ladder = BitrateLadder::new("360p", "1080p");
        // The estimate claims 3 Mbps but only 200 kbps of the 564 sent arrive: stay.
        for t in 0..10 {
            let (_, changed) = ladder.update(acked(3_000_000, 200_000), t * 1000);
            assert!(!changed, "at {t} s");
        }
        // The receiver acknowledges what is sent: climb.
        let mut rungs = vec![];
        for t in 10..16 {
            let sending = ladder.target().bitrate_bps + AUDIO_RESERVE_BPS;
            if ladder.update(acked(3_000_000, sending), t * 1000).1 {
                rungs.push(ladder.rung().name);
            }
        }
        assert_eq!(rungs, ["540p", "720p"]);
    }

    #[test]
    fn audio_only_comes_back_to_video_when_the_estimate_recovers() {
        let mut ladder = BitrateLadder::new("360p", "1080p");
        ladder.update(acked(40_000, 40_000), 0);
        assert_eq!(ladder.rung().name, "audio-only");
        // Audio only sends no video: the acknowledged rate cannot show headroom, the estimate must.
        let mut t = 1_000;
        while ladder.rung().name == "audio-only" && t < 10_000 {
            ladder.update(acked(AUDIO_RESERVE_BPS + 150_000, 60_000), t);
            t += 1_000;
        }
        assert_eq!(ladder.rung().name, "180p", "back to video within {t} ms");
    }

    #[test]
    fn the_examination_mode_keeps_the_picture_size_and_lowers_the_frame_rate_first() {
        let mut ladder = BitrateLadder::with_preference("720p", "720p", VideoPreference::Detail);
        // 600 kbps: too little for 720p30 (900k) but enough for 720p15 (540k).
        let (target, changed) = ladder.update(estimate(AUDIO_RESERVE_BPS + 600_000), 1_000);
        assert!(changed);
        assert_eq!((target.rung.name, target.fps), ("720p", 15));
        // 350 kbps: 720p at 7 fps (315k).
        let (target, _) = ladder.update(estimate(AUDIO_RESERVE_BPS + 350_000), 2_000);
        assert_eq!((target.rung.name, target.fps), ("720p", 7));
        // 280 kbps: resolution goes only now.
        let (target, _) = ladder.update(estimate(AUDIO_RESERVE_BPS + 280_000), 3_000);
        assert_eq!((target.rung.name, target.fps), ("540p", 7));

        let mut balanced = BitrateLadder::new("720p", "720p");
        let (target, _) = balanced.update(estimate(AUDIO_RESERVE_BPS + 600_000), 1_000);
        assert_eq!((target.rung.name, target.fps), ("540p", 30), "a conversation keeps motion smooth");
    }

    #[test]
    fn switching_the_preference_keeps_the_rung() {
        let mut ladder = BitrateLadder::new("540p", "1080p");
        ladder.set_preference(VideoPreference::Detail);
        assert_eq!(ladder.rung().name, "540p");
        let (target, _) = ladder.update(estimate(AUDIO_RESERVE_BPS + 400_000), 0);
        assert_eq!((target.rung.name, target.fps), ("540p", 15));
    }

    /// The shared adaptation steps (`rules_vectors.json`, also run against the web page's
    /// `rules.js`): samples fed to a ladder and the encoder target after each.
    #[derive(serde::Deserialize)]
    struct LadderSequence {
        name: String,
        start: String,
        cap: String,
        preference: String,
        samples: Vec<LadderSample>,
    }

    #[derive(serde::Deserialize)]
    struct LadderSample {
        at_ms: i64,
        estimate_bps: u64,
        acknowledged_bps: Option<u64>,
        rung: String,
        fps: u32,
        bitrate_bps: u64,
        changed: bool,
    }

    #[derive(serde::Deserialize)]
    struct Vectors {
        ladder: Vec<LadderSequence>,
    }

    #[test]
    fn the_shared_ladder_vectors_pass_the_same_as_in_the_web_page() {
        let vectors: Vectors =
            serde_json::from_str(include_str!("rules_vectors.json")).expect("valid vectors");
        for sequence in &vectors.ladder {
            let preference = match sequence.preference.as_str() {
                "detail" => VideoPreference::Detail,
                _ => VideoPreference::Balanced,
            };
            let mut ladder = BitrateLadder::with_preference(&sequence.start, &sequence.cap, preference);
            for (i, s) in sequence.samples.iter().enumerate() {
                let input =
                    LadderInput { estimate_bps: s.estimate_bps, acknowledged_bps: s.acknowledged_bps };
                let (target, changed) = ladder.update(input, s.at_ms);
                assert_eq!(
                    (target.rung.name, target.fps, target.bitrate_bps, changed),
                    (s.rung.as_str(), s.fps, s.bitrate_bps, s.changed),
                    "{}: sample {i}",
                    sequence.name
                );
            }
        }
    }
}
