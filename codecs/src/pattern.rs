//! A synthetic camera and microphone whose content can be checked after lossy coding: the
//! picture is [`televisit_core::video::pattern`]'s; the sound is a sine tone ([`SineTone`]), 48 kHz mono,
//! in 20 ms frames.

pub use televisit_core::video::pattern::*;

use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE};

/// A synthetic microphone: a sine tone at a third of full scale.
#[derive(Debug, Clone)]
pub struct SineTone {
    hz: f64,
    sample: u64,
}

impl SineTone {
    /// A tone at this frequency.
    pub fn new(hz: f64) -> SineTone {
        SineTone { hz, sample: 0 }
    }

    /// The next 20 ms of the tone ([`FRAME_SAMPLES`] samples at [`SAMPLE_RATE`]).
    pub fn next_frame(&mut self) -> Vec<i16> {
        let frame = (0..FRAME_SAMPLES as u64)
            .map(|i| {
                let t = (self.sample + i) as f64 / f64::from(SAMPLE_RATE);
                (f64::sin(2.0 * std::f64::consts::PI * self.hz * t) * 10_000.0) as i16
            })
            .collect();
        self.sample += FRAME_SAMPLES as u64;
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tone_is_continuous_across_frames() {
        let mut tone = SineTone::new(1000.0);
        let (a, b) = (tone.next_frame(), tone.next_frame());
        assert_eq!(a.len(), FRAME_SAMPLES);
        assert!((i32::from(a[FRAME_SAMPLES - 1]) - i32::from(b[0])).abs() < 1400);
        assert!(a.iter().any(|&s| s > 9_000) && a.iter().any(|&s| s < -9_000));
    }
}
