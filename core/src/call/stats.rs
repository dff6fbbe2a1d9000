//! What the call machine decides from: the media connection's measurements, once a second.

/// A gap without a new remote picture longer than this is a freeze.
pub const FREEZE_MS: u64 = 500;

/// Once-a-second measurements of the media connection. Fields the stack cannot measure are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaStats {
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Inbound jitter, ms.
    pub jitter_ms: Option<f64>,
    /// Inbound packet loss over the last second, percent.
    pub loss_percent: Option<f64>,
    /// Bits per second sent over the last second.
    pub send_bitrate_bps: u64,
    /// Bits per second received over the last second.
    pub receive_bitrate_bps: u64,
    /// Video frames sent so far.
    pub frames_sent: u64,
    /// Remote video frames decoded (or handed to the app) so far.
    pub frames_received: u64,
    /// Remote video frame width (read from VP8 keyframes; 0 while the camera arrives in H.264).
    pub frame_width: u32,
    /// Remote video frame height (read from VP8 keyframes; 0 while the camera arrives in H.264).
    pub frame_height: u32,
    /// Remote frames per second over the last second.
    pub frame_rate: f64,
    /// The send-side bandwidth estimate, bits per second.
    pub available_outgoing_bitrate_bps: Option<u64>,
    /// Selected candidate pair: `host`, `srflx`, `prflx` or `relay`.
    pub candidate_pair_type: Option<String>,
    /// The selected pair's local candidate type.
    pub local_candidate_type: Option<CandidateType>,
    /// The selected pair's remote candidate type.
    pub remote_candidate_type: Option<CandidateType>,
    /// How this side reaches its TURN server when the local candidate is a relay.
    pub relay_transport: Option<RelayTransport>,
    /// When a packet was last received, ms since the call client started.
    pub last_packet_at_ms: Option<i64>,
    /// What the peer acknowledged receiving over the last second (transport-wide feedback), bits
    /// per second; `None` when the peer sends no such feedback.
    pub acknowledged_bitrate_bps: Option<u64>,
    /// Remote video freezes so far: gaps of more than [`FREEZE_MS`] without a new picture.
    pub freeze_count: u64,
    /// Time spent frozen so far, ms: the sum of those gaps.
    pub total_freeze_ms: u64,
    /// Loss recovery totals so far (NACKs, retransmissions, repairs, give-ups).
    pub loss_recovery: LossRecoveryCounts,
}

/// An ICE candidate's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateType {
    /// An address of the device's own interfaces.
    Host,
    /// The device's address as a STUN server saw it (outside its NAT).
    Srflx,
    /// The peer's address as its connectivity checks showed it.
    Prflx,
    /// An address on a TURN server, which relays.
    Relay,
}

impl CandidateType {
    /// `host`, `srflx`, `prflx` or `relay`, as in SDP and the browser's stats.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::Srflx => "srflx",
            CandidateType::Prflx => "prflx",
            CandidateType::Relay => "relay",
        }
    }
}

/// How the device reaches the TURN server of a relay candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTransport {
    /// TURN over UDP.
    Udp,
    /// TURN over TCP.
    Tcp,
    /// TURN over TLS (`turns:`).
    Tls,
}

impl RelayTransport {
    /// `udp`, `tcp` or `tls`, as the browser's `relayProtocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayTransport::Udp => "udp",
            RelayTransport::Tcp => "tcp",
            RelayTransport::Tls => "tls",
        }
    }
}

/// Loss recovery totals of a session: what was asked for, resent, given up and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossRecoveryCounts {
    /// Sequence numbers this side NACKed (each try counted).
    pub nacks_sent: u64,
    /// Sequence numbers the peer NACKed.
    pub nacks_received: u64,
    /// Packets this side resent.
    pub retransmitted_packets: u64,
    /// RTP bytes this side resent.
    pub retransmitted_bytes: u64,
    /// NACKed packets not resent: over the retransmission budget, too late, too soon or unknown.
    pub retransmissions_refused: u64,
    /// Missing inbound packets that arrived as retransmissions.
    pub packets_repaired: u64,
    /// Missing inbound packets given up (then a keyframe was asked for).
    pub packets_given_up: u64,
    /// Keyframe requests (PLI) sent because inbound packets were given up.
    pub keyframe_requests_sent: u64,
    /// Outbound video frames the pacer dropped for waiting too long.
    pub video_frames_dropped: u64,
}

/// Counts freezes of the remote video, sans-I/O: feed it the time of every new picture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreezeCounter {
    last_picture_ms: Option<u64>,
    /// Freezes so far.
    pub count: u64,
    /// Time spent in them, ms.
    pub total_ms: u64,
}

impl FreezeCounter {
    /// A new picture arrived at `now_ms`.
    pub fn on_picture(&mut self, now_ms: u64) {
        if let Some(last) = self.last_picture_ms {
            let gap = now_ms.saturating_sub(last);
            if gap > FREEZE_MS {
                self.count += 1;
                self.total_ms += gap;
            }
        }
        self.last_picture_ms = Some(now_ms);
    }

    /// The freeze in progress at `now_ms`, if the last picture is older than [`FREEZE_MS`].
    pub fn frozen_for(&self, now_ms: u64) -> Option<u64> {
        self.last_picture_ms.map(|last| now_ms.saturating_sub(last)).filter(|gap| *gap > FREEZE_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_longer_than_half_a_second_are_freezes() {
        let mut freezes = FreezeCounter::default();
        for ms in (0..=1_000).step_by(33) {
            freezes.on_picture(ms);
        }
        assert_eq!((freezes.count, freezes.total_ms), (0, 0), "30 fps never freezes");
        freezes.on_picture(1_490);
        assert_eq!(freezes.count, 0, "a 500 ms gap is not yet a freeze");
        assert_eq!(freezes.frozen_for(2_500), Some(1_010));
        freezes.on_picture(2_700);
        assert_eq!((freezes.count, freezes.total_ms), (1, 1_210));
        assert_eq!(freezes.frozen_for(2_800), None);
    }
}
