//! Connection quality from the once-a-second stats, sans-I/O.
//!
//! # The rule (the web page's `quality.js` implements the same one)
//!
//! Each sample is scored on its own:
//! - **Lost** — nothing received for [`LOST_AFTER_MS`] (3 s) while the call is connected;
//! - **Excellent** — RTT < 150 ms, packet loss < 1 %, jitter < 30 ms;
//! - **Good** — RTT < 300 ms, loss < 5 %, jitter < 60 ms;
//! - **Poor** — anything worse.
//!
//! A missing measurement (no RTT yet) does not count against the level. Hysteresis keeps the
//! indicator calm: the shown level gets **worse** after 2 consecutive worse samples, and **better**
//! only after 5 consecutive better ones; **Lost** shows at once, and the first sample after Lost
//! shows as it is.

use crate::protocol::QualityLevel;

/// No packets for this long means Lost.
pub const LOST_AFTER_MS: i64 = 3000;
/// Consecutive worse samples before the level drops.
pub const SAMPLES_TO_DROP: u32 = 2;
/// Consecutive better samples before the level rises.
pub const SAMPLES_TO_RISE: u32 = 5;

/// One second's measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QualitySample {
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Packet loss over the last interval, percent.
    pub loss_percent: Option<f64>,
    /// Inbound jitter, ms.
    pub jitter_ms: Option<f64>,
    /// When a packet was last received, ms (same clock as `now_ms`).
    pub last_packet_at_ms: Option<i64>,
}

fn rank(level: QualityLevel) -> u8 {
    match level {
        QualityLevel::Excellent => 3,
        QualityLevel::Good => 2,
        QualityLevel::Poor => 1,
        QualityLevel::Lost => 0,
    }
}

/// The level of one sample, without hysteresis.
pub fn score(sample: &QualitySample, now_ms: i64) -> QualityLevel {
    if sample.last_packet_at_ms.is_none_or(|at| now_ms - at >= LOST_AFTER_MS) {
        return QualityLevel::Lost;
    }
    let within = |value: Option<f64>, limit: f64| value.is_none_or(|v| v < limit);
    let (rtt, loss, jitter) = (sample.rtt_ms, sample.loss_percent, sample.jitter_ms);
    if within(rtt, 150.0) && within(loss, 1.0) && within(jitter, 30.0) {
        QualityLevel::Excellent
    } else if within(rtt, 300.0) && within(loss, 5.0) && within(jitter, 60.0) {
        QualityLevel::Good
    } else {
        QualityLevel::Poor
    }
}

/// The shown quality level, with hysteresis.
#[derive(Debug, Clone)]
pub struct QualityScorer {
    shown: QualityLevel,
    candidate: QualityLevel,
    streak: u32,
}

impl Default for QualityScorer {
    fn default() -> Self {
        QualityScorer { shown: QualityLevel::Good, candidate: QualityLevel::Good, streak: 0 }
    }
}

impl QualityScorer {
    /// The level shown now.
    pub fn level(&self) -> QualityLevel {
        self.shown
    }

    /// Feeds one sample; returns the new level if it changed.
    pub fn update(&mut self, sample: &QualitySample, now_ms: i64) -> Option<QualityLevel> {
        let instant = score(sample, now_ms);
        let before = self.shown;
        if instant == self.shown {
            self.streak = 0;
        } else if instant == QualityLevel::Lost || self.shown == QualityLevel::Lost {
            self.shown = instant;
            self.streak = 0;
        } else {
            if instant == self.candidate {
                self.streak += 1;
            } else {
                self.candidate = instant;
                self.streak = 1;
            }
            let needed = if rank(instant) < rank(self.shown) { SAMPLES_TO_DROP } else { SAMPLES_TO_RISE };
            if self.streak >= needed {
                self.shown = instant;
                self.streak = 0;
            }
        }
        (self.shown != before).then_some(self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rtt: f64, loss: f64, jitter: f64, now: i64) -> QualitySample {
        QualitySample {
            rtt_ms: Some(rtt),
            loss_percent: Some(loss),
            jitter_ms: Some(jitter),
            last_packet_at_ms: Some(now),
        }
    }

    #[test]
    fn each_sample_is_scored_by_the_documented_thresholds() {
        assert_eq!(score(&sample(40.0, 0.0, 5.0, 0), 0), QualityLevel::Excellent);
        assert_eq!(score(&sample(200.0, 0.0, 5.0, 0), 0), QualityLevel::Good);
        assert_eq!(score(&sample(40.0, 3.0, 5.0, 0), 0), QualityLevel::Good);
        assert_eq!(score(&sample(40.0, 0.0, 80.0, 0), 0), QualityLevel::Poor);
        assert_eq!(score(&sample(400.0, 0.0, 5.0, 0), 0), QualityLevel::Poor);
        let unmeasured = QualitySample { last_packet_at_ms: Some(0), ..Default::default() };
        assert_eq!(score(&unmeasured, 0), QualityLevel::Excellent);
        assert_eq!(score(&sample(40.0, 0.0, 5.0, 0), LOST_AFTER_MS), QualityLevel::Lost);
    }

    #[test]
    fn the_level_drops_after_two_bad_seconds_and_recovers_after_five_good_ones() {
        let mut scorer = QualityScorer::default();
        let mut now = 0;
        let mut feed = |scorer: &mut QualityScorer, rtt: f64| {
            now += 1000;
            scorer.update(&sample(rtt, 0.0, 5.0, now), now)
        };
        assert_eq!(feed(&mut scorer, 40.0), None);
        for _ in 0..3 {
            feed(&mut scorer, 40.0);
        }
        assert_eq!(feed(&mut scorer, 40.0), Some(QualityLevel::Excellent));
        // One bad second is noise.
        assert_eq!(feed(&mut scorer, 500.0), None);
        assert_eq!(feed(&mut scorer, 40.0), None);
        assert_eq!(feed(&mut scorer, 500.0), None);
        assert_eq!(feed(&mut scorer, 500.0), Some(QualityLevel::Poor));
        for _ in 0..4 {
            assert_eq!(feed(&mut scorer, 40.0), None);
        }
        assert_eq!(feed(&mut scorer, 40.0), Some(QualityLevel::Excellent));
    }

    /// One sample of the shared vectors (`quality_vectors.json`, also run against the web page's
    /// `quality.js`), with the level expected.
    #[derive(serde::Deserialize)]
    struct Vector {
        now_ms: i64,
        rtt_ms: Option<f64>,
        loss_percent: Option<f64>,
        jitter_ms: Option<f64>,
        last_packet_at_ms: Option<i64>,
        #[serde(alias = "shown")]
        level: QualityLevel,
    }

    impl Vector {
        fn sample(&self) -> QualitySample {
            QualitySample {
                rtt_ms: self.rtt_ms,
                loss_percent: self.loss_percent,
                jitter_ms: self.jitter_ms,
                last_packet_at_ms: self.last_packet_at_ms,
            }
        }
    }

    #[derive(serde::Deserialize)]
    struct Sequence {
        name: String,
        steps: Vec<Vector>,
    }

    #[derive(serde::Deserialize)]
    struct Vectors {
        scores: Vec<Vector>,
        sequences: Vec<Sequence>,
    }

    #[test]
    fn the_shared_vectors_pass_the_same_as_in_the_web_page() {
        let vectors: Vectors =
            serde_json::from_str(include_str!("quality_vectors.json")).expect("valid vectors");
        for (i, v) in vectors.scores.iter().enumerate() {
            assert_eq!(score(&v.sample(), v.now_ms), v.level, "score vector {i}");
        }
        for sequence in &vectors.sequences {
            let mut scorer = QualityScorer::default();
            for (i, step) in sequence.steps.iter().enumerate() {
                scorer.update(&step.sample(), step.now_ms);
                assert_eq!(scorer.level(), step.level, "{}: step {i}", sequence.name);
            }
        }
    }

    #[test]
    fn lost_shows_at_once_and_clears_at_once() {
        let mut scorer = QualityScorer::default();
        let stale = sample(40.0, 0.0, 5.0, 0);
        assert_eq!(scorer.update(&stale, 3500), Some(QualityLevel::Lost));
        assert_eq!(scorer.update(&sample(200.0, 0.0, 5.0, 4000), 4000), Some(QualityLevel::Good));
    }
}
