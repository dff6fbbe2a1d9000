//! Adaptive bitrate: the send-side bandwidth estimate chooses a rung of the encoding ladder,
//! sans-I/O (time is an argument).
//!
//! Audio is reserved first ([`AUDIO_RESERVE_BPS`]); the video gets the rest. The controller steps
//! **down** one rung when the video budget stayed below the current rung's minimum for
//! [`DOWN_AFTER_MS`], and **up** one rung when it stayed at or above 1.25 × the next rung's minimum
//! for [`UP_AFTER_MS`]: quick to relieve congestion, slow to risk it again. The last rung sends
//! no video at all (audio only). The encoder's target bitrate follows the budget within the rung.

/// Bits per second kept for Opus audio before video gets any.
pub const AUDIO_RESERVE_BPS: u64 = 64_000;
/// How long the budget must stay below the rung before stepping down.
pub const DOWN_AFTER_MS: i64 = 2_000;
/// How long the budget must stay above the next rung before stepping up.
pub const UP_AFTER_MS: i64 = 5_000;

/// One rung of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Name, e.g. `"720p"`.
    pub name: &'static str,
    /// Frame width (0 for audio only).
    pub width: u32,
    /// Frame height (0 for audio only).
    pub height: u32,
    /// Frames per second (0 for audio only).
    pub fps: u32,
    /// Video bitrate at which this rung is comfortable.
    pub target_bps: u64,
    /// Least video bitrate for this rung.
    pub min_bps: u64,
}

/// The ladder, best first.
pub const LADDER: [Rung; 6] = [
    Rung { name: "1080p", width: 1920, height: 1080, fps: 30, target_bps: 3_000_000, min_bps: 1_800_000 },
    Rung { name: "720p", width: 1280, height: 720, fps: 30, target_bps: 1_500_000, min_bps: 900_000 },
    Rung { name: "540p", width: 960, height: 540, fps: 30, target_bps: 900_000, min_bps: 500_000 },
    Rung { name: "360p", width: 640, height: 360, fps: 30, target_bps: 500_000, min_bps: 250_000 },
    Rung { name: "180p", width: 320, height: 180, fps: 15, target_bps: 200_000, min_bps: 80_000 },
    Rung { name: "audio-only", width: 0, height: 0, fps: 0, target_bps: 0, min_bps: 0 },
];

/// What the encoder should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderTarget {
    /// The rung in use.
    pub rung: Rung,
    /// Video bitrate to aim for (within the rung, at most its target).
    pub bitrate_bps: u64,
}

/// The ladder controller.
#[derive(Debug, Clone)]
pub struct BitrateLadder {
    index: usize,
    /// Best rung allowed (the camera's or the app's cap).
    top: usize,
    below_since: Option<i64>,
    above_since: Option<i64>,
}

impl BitrateLadder {
    /// Starts at `start` (a rung name) with `cap` as the best allowed rung.
    pub fn new(start: &str, cap: &str) -> BitrateLadder {
        let find = |name: &str| LADDER.iter().position(|r| r.name == name).unwrap_or(1);
        let top = find(cap);
        BitrateLadder { index: find(start).max(top), top, below_since: None, above_since: None }
    }

    /// The rung in use.
    pub fn rung(&self) -> Rung {
        LADDER[self.index]
    }

    /// Feeds the current bandwidth estimate; returns the encoder target, and whether the rung changed.
    pub fn update(&mut self, estimate_bps: u64, now_ms: i64) -> (EncoderTarget, bool) {
        let budget = estimate_bps.saturating_sub(AUDIO_RESERVE_BPS);
        let before = self.index;
        let current = LADDER[self.index];
        if budget < current.min_bps && self.index + 1 < LADDER.len() {
            let since = *self.below_since.get_or_insert(now_ms);
            if now_ms - since >= DOWN_AFTER_MS {
                self.index += 1;
                self.below_since = None;
            }
        } else {
            self.below_since = None;
        }
        if self.index > self.top && self.index == before {
            let better = LADDER[self.index - 1];
            if budget * 4 >= better.min_bps * 5 {
                let since = *self.above_since.get_or_insert(now_ms);
                if now_ms - since >= UP_AFTER_MS {
                    self.index -= 1;
                    self.above_since = None;
                }
            } else {
                self.above_since = None;
            }
        } else {
            self.above_since = None;
        }
        let rung = LADDER[self.index];
        (EncoderTarget { rung, bitrate_bps: budget.min(rung.target_bps) }, self.index != before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sustained_drop_steps_down_one_rung_at_a_time_to_audio_only() {
        let mut ladder = BitrateLadder::new("720p", "1080p");
        let mut now = 0;
        let mut names = vec![];
        for _ in 0..40 {
            now += 500;
            let (target, changed) = ladder.update(50_000, now);
            if changed {
                names.push(target.rung.name);
            }
        }
        assert_eq!(names, ["540p", "360p", "180p", "audio-only"]);
        assert_eq!(ladder.update(50_000, now + 500).0.bitrate_bps, 0);
    }

    #[test]
    fn a_short_dip_changes_nothing() {
        let mut ladder = BitrateLadder::new("720p", "1080p");
        assert!(!ladder.update(300_000, 0).1);
        assert!(!ladder.update(300_000, 1_500).1);
        assert!(!ladder.update(2_000_000, 1_900).1);
        assert!(!ladder.update(300_000, 3_000).1, "the dip timer restarted");
        assert_eq!(ladder.rung().name, "720p");
    }

    #[test]
    fn stepping_up_needs_headroom_for_five_seconds_and_respects_the_cap() {
        let mut ladder = BitrateLadder::new("360p", "720p");
        // Enough for 540p's minimum but not 1.25x of it: stay.
        for t in 0..20 {
            ladder.update(AUDIO_RESERVE_BPS + 550_000, t * 1000);
        }
        assert_eq!(ladder.rung().name, "360p");
        let mut changes = vec![];
        for t in 20..60 {
            let (target, changed) = ladder.update(10_000_000, t * 1000);
            if changed {
                changes.push((t, target.rung.name));
            }
        }
        assert_eq!(
            changes,
            [(25, "540p"), (31, "720p")],
            "one rung per five observed seconds, capped at 720p"
        );
        assert_eq!(ladder.update(10_000_000, 61_000).0.bitrate_bps, 1_500_000);
    }
}
