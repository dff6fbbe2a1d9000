//! The sender's clock of received media, from its RTCP sender reports (RFC 3550 §6.4.1), sans-I/O.
//!
//! A sender report pairs an NTP wall-clock time with the RTP timestamp of the same instant on one
//! stream. With the stream's clock rate that maps any RTP timestamp of the stream to the sender's
//! wall clock, the same clock for its audio and its video: what A/V sync compares.
//! [`SenderClocks`] keeps the last report of each stream (the interceptor that reads reports
//! writes it, the track readers read it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: i64 = 2_208_988_800;
/// Streams remembered at most (a peer has a handful; a hostile one cannot grow this).
const MAX_STREAMS: usize = 64;

/// A 64-bit NTP timestamp (32.32 fixed point since 1900) as microseconds since the Unix epoch.
pub fn ntp_to_unix_us(ntp: u64) -> i64 {
    let seconds = (ntp >> 32) as i64 - NTP_UNIX_OFFSET_SECS;
    let micros = ((ntp & 0xffff_ffff) * 1_000_000) >> 32;
    seconds * 1_000_000 + micros as i64
}

/// One stream's last sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    /// The report's NTP time.
    pub ntp_time: u64,
    /// The stream's RTP timestamp at that time.
    pub rtp_time: u32,
}

impl SenderClock {
    /// When the media stamped `rtp_timestamp` was sampled, microseconds since the Unix epoch on the
    /// sender's clock. RTP timestamps wrap: the nearer of the two readings (within half the
    /// 32-bit range either side of the report) is taken.
    pub fn unix_us(&self, rtp_timestamp: u32, clock_rate: u32) -> i64 {
        let ticks = i64::from(rtp_timestamp.wrapping_sub(self.rtp_time) as i32);
        ntp_to_unix_us(self.ntp_time) + ticks * 1_000_000 / i64::from(clock_rate.max(1))
    }
}

/// The last sender report of each received stream, shared between the reader of reports and the
/// readers of tracks.
#[derive(Debug, Clone, Default)]
pub struct SenderClocks(Arc<Mutex<HashMap<u32, SenderClock>>>);

impl SenderClocks {
    /// Takes a sender report of stream `ssrc`.
    pub fn on_report(&self, ssrc: u32, ntp_time: u64, rtp_time: u32) {
        let mut clocks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if clocks.len() >= MAX_STREAMS && !clocks.contains_key(&ssrc) {
            clocks.clear(); // streams of an old connection; live ones report again within seconds
        }
        clocks.insert(ssrc, SenderClock { ntp_time, rtp_time });
    }

    /// [`SenderClock::unix_us`] of stream `ssrc`, once it reported.
    pub fn unix_us(&self, ssrc: u32, rtp_timestamp: u32, clock_rate: u32) -> Option<i64> {
        let clocks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        clocks.get(&ssrc).map(|clock| clock.unix_us(rtp_timestamp, clock_rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01 00:00:00 UTC plus half a second, as NTP.
    const NTP: u64 = ((1_796_083_200 + NTP_UNIX_OFFSET_SECS as u64) << 32) | (1 << 31);
    const UNIX_US: i64 = 1_796_083_200_500_000;

    #[test]
    fn ntp_times_convert_to_unix_microseconds() {
        assert_eq!(ntp_to_unix_us(NTP), UNIX_US);
        assert_eq!(ntp_to_unix_us((NTP_UNIX_OFFSET_SECS as u64) << 32), 0);
    }

    #[test]
    fn rtp_timestamps_map_to_the_senders_clock_either_side_of_the_report_and_across_the_wrap() {
        let clock = SenderClock { ntp_time: NTP, rtp_time: u32::MAX - 899 };
        // 90 kHz video: 900 ticks are 10 ms; 1800 ticks later the timestamp has wrapped.
        assert_eq!(clock.unix_us(u32::MAX - 899, 90_000), UNIX_US);
        assert_eq!(clock.unix_us(900, 90_000), UNIX_US + 20_000);
        assert_eq!(clock.unix_us(u32::MAX - 1799, 90_000), UNIX_US - 10_000);
        // 48 kHz audio: 960 ticks are 20 ms.
        let audio = SenderClock { ntp_time: NTP, rtp_time: 48_000 };
        assert_eq!(audio.unix_us(48_960, 48_000), UNIX_US + 20_000);
    }

    #[test]
    fn each_stream_has_its_own_clock_known_only_once_it_reported() {
        let clocks = SenderClocks::default();
        assert_eq!(clocks.unix_us(7, 0, 48_000), None);
        clocks.on_report(7, NTP, 0);
        clocks.on_report(8, NTP, 90_000);
        assert_eq!(clocks.unix_us(7, 48_000, 48_000), Some(UNIX_US + 1_000_000));
        assert_eq!(clocks.unix_us(8, 90_000, 90_000), Some(UNIX_US));
        // A newer report replaces the older.
        clocks.on_report(7, NTP, 48_000);
        assert_eq!(clocks.unix_us(7, 48_000, 48_000), Some(UNIX_US));
    }

    #[test]
    fn the_streams_remembered_are_bounded() {
        let clocks = SenderClocks::default();
        for ssrc in 0..1000 {
            clocks.on_report(ssrc, NTP, 0);
        }
        assert!(clocks.0.lock().unwrap().len() <= MAX_STREAMS);
        assert!(clocks.unix_us(999, 0, 48_000).is_some(), "the latest stream is kept");
    }
}
