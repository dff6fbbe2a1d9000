//! Test signals and measures for audio: a sine tone, RMS level, and the Goertzel power at one
//! frequency (how the tests and the benchmark tell which tone came out of a sink).

use super::SAMPLE_RATE;

/// `samples` of a sine tone at `hz`, amplitude 10 000, starting at sample `start` (so successive
/// calls continue the same wave).
pub fn tone(hz: f64, start: u64, samples: usize) -> Vec<i16> {
    (0..samples as u64)
        .map(|i| {
            let t = (start + i) as f64 / f64::from(SAMPLE_RATE);
            (f64::sin(2.0 * std::f64::consts::PI * hz * t) * 10_000.0) as i16
        })
        .collect()
}

/// The root mean square of the samples (0 for none).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// The signal's power at `hz` (Goertzel's algorithm over all the samples).
pub fn goertzel_power(samples: &[i16], hz: f64) -> f64 {
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * hz / f64::from(SAMPLE_RATE)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &sample in samples {
        let s0 = f64::from(sample) + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coefficient * s1 * s2
}

/// How much stronger the signal is at `hz` than at `other_hz` (power ratio; large when the
/// signal is a tone at `hz`).
pub fn goertzel_ratio(samples: &[i16], hz: f64, other_hz: f64) -> f64 {
    goertzel_power(samples, hz) / goertzel_power(samples, other_hz).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_tells_which_tone_it_is() {
        let a = tone(440.0, 0, 4800);
        assert!(goertzel_ratio(&a, 440.0, 660.0) > 1000.0);
        assert!(goertzel_ratio(&a, 660.0, 440.0) < 0.001);
        assert!((rms(&a) - 10_000.0 / 2f64.sqrt()).abs() < 50.0);
        assert_eq!(rms(&[]), 0.0);
        assert_eq!(tone(440.0, 100, 10), tone(440.0, 0, 110)[100..]);
    }
}
