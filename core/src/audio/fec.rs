//! How much in-band FEC the voice carries, from the loss each stats report measures (sans-I/O).
//!
//! libopus adds FEC in proportion to the loss it is told to expect, and none at 0 %. Following
//! each one-second report as it is would switch FEC off after every clean second, so the first
//! packets of the next burst of loss (Wi-Fi and 4G lose in bursts) would go unprotected. Instead
//! the expected loss rises at once with the measure and falls back slowly: each report it is the
//! larger of the measure and [`DECAY`] × the value before.

/// Share of the previous expected loss kept at each report (0.85: a 10 % burst is still covered
/// at 2 % some 10 s later).
pub const DECAY: f64 = 0.85;
/// Below this the expected loss is 0 % (no FEC): loss this rare costs more bits than it saves.
const NO_FEC_BELOW_PERCENT: f64 = 0.5;

/// The expected packet loss to give the voice encoder, kept across stats reports.
#[derive(Debug, Clone, Default)]
pub struct FecSizing {
    expected: Option<f64>,
}

impl FecSizing {
    /// No report yet (the encoder keeps its initial guess until the first).
    pub fn new() -> FecSizing {
        FecSizing::default()
    }

    /// Takes one report's measured loss, percent; returns the expected loss for the encoder.
    pub fn on_report(&mut self, measured_percent: f64) -> u8 {
        let measured = if measured_percent.is_finite() { measured_percent.clamp(0.0, 100.0) } else { 0.0 };
        let expected = match self.expected {
            None => measured,
            Some(before) => measured.max(before * DECAY),
        };
        self.expected = Some(expected);
        if expected < NO_FEC_BELOW_PERCENT {
            0
        } else {
            expected.ceil() as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_loss_rises_with_the_measure_and_falls_back_slowly() {
        let mut fec = FecSizing::new();
        assert_eq!(fec.on_report(0.0), 0, "the first report sets it");
        assert_eq!(fec.on_report(8.2), 9, "a burst raises it at once");
        // A clean second after the burst keeps FEC on.
        let after: Vec<u8> = (0..12).map(|_| fec.on_report(0.0)).collect();
        assert_eq!(after[..4], [7, 6, 6, 5], "{after:?}");
        assert!(after.windows(2).all(|w| w[1] <= w[0]), "never rises without loss: {after:?}");
        assert_eq!(fec.on_report(3.0), 3, "a new measure above what is left takes over");
        for _ in 0..30 {
            fec.on_report(0.0);
        }
        assert_eq!(fec.on_report(0.0), 0, "a long clean stretch turns FEC off");
    }

    #[test]
    fn nonsense_measures_are_clamped() {
        let mut fec = FecSizing::new();
        assert_eq!(fec.on_report(250.0), 100);
        let mut fec = FecSizing::new();
        assert_eq!(fec.on_report(f64::NAN), 0);
        assert_eq!(fec.on_report(-3.0), 0);
    }
}
