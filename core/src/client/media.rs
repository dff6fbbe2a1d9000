//! The seam between the call driver and the media stack: the driver sends [`PeerCommand`]s to a
//! [`MediaSession`] and hears back [`PeerEvent`]s. The WebRTC implementation lives in
//! [`super::webrtc`]; tests can plug in another.

use tokio::sync::mpsc;

use crate::api::IceServer;
pub use crate::call::machine::PeerCommand;
use crate::call::machine::PeerConnectionState;
use crate::frame::{EncodedFrame, FrameKind, VideoCodec};
use crate::protocol::{IceCandidate, Role};

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
    /// When a packet was last received, ms since the call client started.
    pub last_packet_at_ms: Option<i64>,
    /// Loss recovery totals so far.
    pub loss_recovery: LossRecoveryCounts,
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

/// What the peer connection reports.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// The offer asked for.
    LocalOffer(String),
    /// The answer asked for.
    LocalAnswer(String),
    /// A local ICE candidate to trickle.
    LocalCandidate(IceCandidate),
    /// The connection state.
    State(PeerConnectionState),
    /// Stats asked for.
    Stats(MediaStats),
    /// A frame from the peer, depacketized.
    Frame(EncodedFrame),
    /// The video codec negotiated for sending (camera and screen): encode with it. Sent once the
    /// offer/answer settled it, before media flows, and again only if it changes.
    VideoCodec(VideoCodec),
    /// The codec the peer's camera (`Video`) or screen (`Screen`) track arrives in: decode its
    /// frames with it. Sent before the track's first frame.
    RemoteVideoCodec(FrameKind, VideoCodec),
    /// Video frames of this kind were dropped (the send queue was longer than the bandwidth
    /// estimate allows): frames are dropped until a keyframe, so the encoder should make one now.
    KeyframeNeeded(FrameKind),
    /// A failure that does not end the call (e.g. a bad remote candidate).
    Warning(String),
}

/// One peer connection. Commands are queued; answers come as events.
pub trait MediaSession: Send {
    /// Queues a command.
    fn command(&mut self, command: PeerCommand);
}

/// Makes peer connections for a call.
pub trait MediaBackend: Send + Sync {
    /// A new peer connection with these ICE servers for this role; events go to `events`.
    /// `clock_origin` is the instant the call client measures `last_packet_at_ms` from.
    fn create_session(
        &self,
        ice_servers: Vec<IceServer>,
        role: Role,
        clock_origin: std::time::Instant,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Box<dyn MediaSession>;
}
