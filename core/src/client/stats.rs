//! Once-a-second media stats from the webrtc crate's `get_stats`, plus what the crate leaves empty
//! and the session counts itself (see `shared/design/webrtc-notes.md`): a [`StackReading`] of one
//! snapshot, the session's [`OwnCounts`], and a sans-I/O [`StatsSampler`] that turns successive
//! readings into [`MediaStats`] over the last interval.

use std::time::Instant;

use rtc::peer_connection::transport::RTCIceCandidateType;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::peer_connection::{RTCStatsReport, RTCStatsReportEntry};

use super::media::{LossRecoveryCounts, MediaStats};
use crate::call::stats::{CandidateType, RelayTransport};

/// What one `get_stats` snapshot says, summed over the RTP streams.
///
/// Read from the stack, because it fills them: the selected candidate pair's
/// `current_round_trip_time` and its candidates' types, inbound `packets_received`,
/// `packets_lost` and `jitter` (in RTP clock units, whatever the field's doc says), RTP bytes.
/// Not read, because the stack leaves them empty: remote-inbound RTT/loss/jitter, frame counters,
/// picture size, frame rate, the candidate pair's `available_outgoing_bitrate`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StackReading {
    /// RTP bytes sent (payload and headers), all streams.
    pub bytes_sent: u64,
    /// RTP bytes received (payload and headers), all streams.
    pub bytes_received: u64,
    /// RTP packets received, all streams.
    pub packets_received: u64,
    /// RTP packets lost, all streams (may go down when late packets arrive).
    pub packets_lost: i64,
    /// The worst inbound stream's interarrival jitter, ms.
    pub jitter_ms: Option<f64>,
    /// The selected candidate pair's current RTT, ms.
    pub rtt_ms: Option<f64>,
    /// The selected candidate pair's type (see [`MediaStats::candidate_pair_type`]).
    pub candidate_pair_type: Option<String>,
    /// The selected pair's local and remote candidate types.
    pub local_candidate_type: Option<CandidateType>,
    /// See `local_candidate_type`.
    pub remote_candidate_type: Option<CandidateType>,
    /// The TURN URL a local relay candidate was allocated through.
    pub relay_url: Option<String>,
    /// How that TURN server is reached (see [`MediaStats::relay_transport`]).
    pub relay_transport: Option<RelayTransport>,
}

impl StackReading {
    /// Reads a `get_stats` report.
    pub fn from_report(report: &RTCStatsReport) -> StackReading {
        let mut reading = StackReading::default();
        for entry in report.iter() {
            match entry {
                RTCStatsReportEntry::InboundRtp(inbound) => {
                    let received = &inbound.received_rtp_stream_stats;
                    reading.packets_received += received.packets_received;
                    reading.packets_lost += received.packets_lost;
                    reading.bytes_received += inbound.bytes_received + inbound.header_bytes_received;
                    if received.packets_received > 0 {
                        let clock_rate = if received.rtp_stream_stats.kind == RtpCodecKind::Audio {
                            48_000
                        } else {
                            90_000
                        };
                        let ms = jitter_ms(received.jitter, clock_rate);
                        reading.jitter_ms = Some(reading.jitter_ms.map_or(ms, |j| j.max(ms)));
                    }
                }
                RTCStatsReportEntry::OutboundRtp(outbound) => {
                    reading.bytes_sent +=
                        outbound.sent_rtp_stream_stats.bytes_sent + outbound.header_bytes_sent;
                }
                _ => {}
            }
        }
        if let Some(pair) = selected_pair(report) {
            reading.rtt_ms = pair.rtt_ms;
            let relayed = [pair.local, pair.remote].contains(&Some(RTCIceCandidateType::Relay));
            reading.candidate_pair_type = if relayed { Some(RTCIceCandidateType::Relay) } else { pair.local }
                .and_then(candidate_type)
                .map(|t| t.as_str().to_owned());
            reading.local_candidate_type = pair.local.and_then(candidate_type);
            reading.remote_candidate_type = pair.remote.and_then(candidate_type);
            reading.relay_transport = pair.relay_url.as_deref().map(relay_transport);
            reading.relay_url = pair.relay_url;
        }
        reading
    }
}

/// RFC 3550 interarrival jitter, which the stack reports in RTP timestamp units, in ms.
pub fn jitter_ms(jitter_rtp_units: f64, clock_rate: u32) -> f64 {
    jitter_rtp_units * 1000.0 / f64::from(clock_rate.max(1))
}

/// Counts kept by the session itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnCounts {
    /// Camera frames written to the track.
    pub frames_sent: u64,
    /// Remote camera frames received.
    pub frames_received: u64,
    /// Remote camera picture size, from the last keyframe header (0 until one arrives).
    pub frame_width: u32,
    /// See `frame_width`.
    pub frame_height: u32,
    /// When a packet was last received, ms since the clock origin (0: never).
    pub last_packet_at_ms: i64,
    /// The bandwidth estimate, bits per second.
    pub estimate_bps: u64,
    /// What the peer acknowledged receiving, bits per second (`None` without transport-wide
    /// feedback).
    pub acknowledged_bps: Option<u64>,
    /// Remote camera freezes so far, and their total time in ms.
    pub freezes: (u64, u64),
    /// Loss recovery totals.
    pub loss_recovery: LossRecoveryCounts,
}

/// Turns successive readings into once-a-second [`MediaStats`]: loss, bitrates and frame rate
/// over the interval since the previous sample (the first: since the session started, when every
/// count was 0). Sans-I/O: time is an argument.
#[derive(Debug)]
pub struct StatsSampler {
    last: (Instant, StackReading, OwnCounts),
}

impl StatsSampler {
    /// A sampler for a session that started at `start`.
    pub fn new(start: Instant) -> StatsSampler {
        StatsSampler { last: (start, StackReading::default(), OwnCounts::default()) }
    }

    /// One sample at `now`.
    pub fn sample(&mut self, reading: StackReading, own: OwnCounts, now: Instant) -> MediaStats {
        let (at, before, own_before) = &self.last;
        let seconds = Some(now.saturating_duration_since(*at).as_secs_f64()).filter(|s| *s > 0.0);
        let per_second =
            |now: u64, before: u64| seconds.map_or(0.0, |s| now.saturating_sub(before) as f64 / s);
        let lost = (reading.packets_lost - before.packets_lost).max(0);
        let expected = reading.packets_received.saturating_sub(before.packets_received) as i64 + lost;
        let stats = MediaStats {
            rtt_ms: reading.rtt_ms,
            jitter_ms: reading.jitter_ms,
            loss_percent: (expected > 0).then(|| lost as f64 * 100.0 / expected as f64),
            send_bitrate_bps: (per_second(reading.bytes_sent, before.bytes_sent) * 8.0) as u64,
            receive_bitrate_bps: (per_second(reading.bytes_received, before.bytes_received) * 8.0) as u64,
            frames_sent: own.frames_sent,
            frames_received: own.frames_received,
            frame_width: own.frame_width,
            frame_height: own.frame_height,
            frame_rate: per_second(own.frames_received, own_before.frames_received),
            available_outgoing_bitrate_bps: Some(own.estimate_bps),
            candidate_pair_type: reading.candidate_pair_type.clone(),
            local_candidate_type: reading.local_candidate_type,
            remote_candidate_type: reading.remote_candidate_type,
            relay_transport: reading.relay_transport,
            last_packet_at_ms: (own.last_packet_at_ms > 0).then_some(own.last_packet_at_ms),
            acknowledged_bitrate_bps: own.acknowledged_bps,
            freeze_count: own.freezes.0,
            total_freeze_ms: own.freezes.1,
            loss_recovery: own.loss_recovery,
        };
        self.last = (now, reading, own);
        stats
    }
}

/// What the stats say of the selected candidate pair.
struct SelectedPair {
    rtt_ms: Option<f64>,
    local: Option<RTCIceCandidateType>,
    remote: Option<RTCIceCandidateType>,
    /// The TURN URL of a local relay candidate.
    relay_url: Option<String>,
}

/// The selected candidate pair: its RTT (ms), its candidates' types, and the TURN URL of a local
/// relay candidate.
fn selected_pair(report: &RTCStatsReport) -> Option<SelectedPair> {
    let pair =
        report.transport().and_then(|t| report.get(&t.selected_candidate_pair_id)).and_then(|e| match e {
            RTCStatsReportEntry::IceCandidatePair(pair) => Some(pair),
            _ => None,
        })?;
    let rtt_ms = (pair.current_round_trip_time > 0.0).then_some(pair.current_round_trip_time * 1000.0);
    // The pair names its candidates by their ICE ids, while the candidate entries are keyed
    // `RTCLocalIceCandidate_<id>` / `RTCRemoteIceCandidate_<id>` (webrtc 0.21.1): try both.
    let candidate = |prefix: &str, id: &str| {
        [id.to_owned(), format!("{prefix}{id}")].iter().find_map(|key| match report.get(key) {
            Some(RTCStatsReportEntry::LocalCandidate(c) | RTCStatsReportEntry::RemoteCandidate(c)) => Some(c),
            _ => None,
        })
    };
    let local = candidate("RTCLocalIceCandidate_", &pair.local_candidate_id);
    let remote = candidate("RTCRemoteIceCandidate_", &pair.remote_candidate_id);
    // The stack registers only the remote candidates that were signaled; one it learned from a
    // connectivity check before (or instead of) the signaled one is peer-reflexive (RFC 8445
    // §7.3.1.3) and has no entry, so a missing remote entry means `prflx`.
    let relay_url = local
        .filter(|c| c.candidate_type == RTCIceCandidateType::Relay && !c.url.is_empty())
        .map(|c| c.url.clone());
    Some(SelectedPair {
        rtt_ms,
        local: local.map(|c| c.candidate_type),
        remote: Some(remote.map_or(RTCIceCandidateType::Prflx, |c| c.candidate_type)),
        relay_url,
    })
}

fn candidate_type(kind: RTCIceCandidateType) -> Option<CandidateType> {
    Some(match kind {
        RTCIceCandidateType::Host => CandidateType::Host,
        RTCIceCandidateType::Srflx => CandidateType::Srflx,
        RTCIceCandidateType::Prflx => CandidateType::Prflx,
        RTCIceCandidateType::Relay => CandidateType::Relay,
        _ => return None,
    })
}

/// How a TURN URL reaches its server: TLS for `turns:`, TCP for `?transport=tcp`, else UDP.
pub fn relay_transport(url: &str) -> RelayTransport {
    if url.starts_with("turns:") {
        RelayTransport::Tls
    } else if url.split_once('?').is_some_and(|(_, query)| query.split('&').any(|p| p == "transport=tcp")) {
        RelayTransport::Tcp
    } else {
        RelayTransport::Udp
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_relay_transport_comes_from_the_turn_url() {
        assert_eq!(relay_transport("turn:turn.example:3478"), RelayTransport::Udp);
        assert_eq!(relay_transport("turn:turn.example:3478?transport=udp"), RelayTransport::Udp);
        assert_eq!(relay_transport("turn:turn.example:3478?transport=tcp"), RelayTransport::Tcp);
        assert_eq!(relay_transport("turns:turn.example:443?transport=tcp"), RelayTransport::Tls);
    }

    #[test]
    fn jitter_in_rtp_units_becomes_milliseconds_at_the_codec_clock_rate() {
        assert_eq!(jitter_ms(900.0, 90_000), 10.0);
        assert_eq!(jitter_ms(480.0, 48_000), 10.0);
    }

    #[test]
    fn loss_bitrates_and_frame_rate_are_over_the_last_interval() {
        let start = Instant::now();
        let mut sampler = StatsSampler::new(start);
        let reading = |sent: u64, received: u64, packets: u64, lost: i64| StackReading {
            bytes_sent: sent,
            bytes_received: received,
            packets_received: packets,
            packets_lost: lost,
            jitter_ms: Some(4.0),
            rtt_ms: Some(12.0),
            candidate_pair_type: Some("srflx".into()),
            ..StackReading::default()
        };
        let own = |frames: u64| OwnCounts {
            frames_received: frames,
            estimate_bps: 900_000,
            ..OwnCounts::default()
        };
        let first =
            sampler.sample(reading(250_000, 2_000, 990, 10), own(100), start + Duration::from_secs(2));
        assert_eq!(first.loss_percent, Some(1.0), "the first sample covers the call so far");
        assert_eq!((first.send_bitrate_bps, first.frame_rate), (1_000_000, 50.0), "over the first 2 s");

        let second =
            sampler.sample(reading(375_000, 252_000, 1_085, 15), own(130), start + Duration::from_secs(3));
        assert_eq!(second.loss_percent, Some(5.0), "5 lost of 100 expected in the last second");
        assert_eq!(second.send_bitrate_bps, 1_000_000);
        assert_eq!(second.receive_bitrate_bps, 2_000_000);
        assert_eq!(second.frame_rate, 30.0);
        assert_eq!((second.rtt_ms, second.jitter_ms), (Some(12.0), Some(4.0)));
        assert_eq!(second.candidate_pair_type.as_deref(), Some("srflx"));
        assert_eq!(second.available_outgoing_bitrate_bps, Some(900_000));

        let idle =
            sampler.sample(reading(375_000, 252_000, 1_085, 15), own(130), start + Duration::from_secs(4));
        assert_eq!(idle.loss_percent, None, "nothing expected, no loss figure");
        assert_eq!(idle.receive_bitrate_bps, 0);
    }
}
