//! The seam between the call driver and the media stack: the driver sends [`PeerCommand`]s to a
//! [`MediaSession`] and hears back [`PeerEvent`]s. The WebRTC implementation lives in
//! [`super::webrtc`]; tests can plug in another.

use tokio::sync::mpsc;

use crate::audio::jitter::AudioPacket;
use crate::call::machine::PeerConnectionState;
pub use crate::call::machine::{IceConfig, PeerCommand};
pub use crate::call::stats::{LossRecoveryCounts, MediaStats};
use crate::frame::{EncodedFrame, FrameKind, VideoCodec};
use crate::protocol::{IceCandidate, Role};

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
    Stats(Box<MediaStats>),
    /// The bandwidth estimate was cut between two stats samples (bits per second, with what the
    /// peer acknowledged): the encoder should follow now, not at the next sample.
    EstimateCut {
        /// The new estimate.
        estimate_bps: u64,
        /// What the peer acknowledged, if it sends transport-wide feedback.
        acknowledged_bps: Option<u64>,
    },
    /// A frame from the peer, depacketized.
    Frame(EncodedFrame),
    /// An RTP packet of the peer's audio track as it arrived (for the audio engine's jitter
    /// buffer, which reorders and conceals itself).
    AudioPacket(AudioPacket, std::time::Instant),
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
    /// A new peer connection with these ICE servers and policy for this role; events go to `events`.
    /// `clock_origin` is the instant the call client measures `last_packet_at_ms` from.
    fn create_session(
        &self,
        ice: IceConfig,
        role: Role,
        clock_origin: std::time::Instant,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Box<dyn MediaSession>;
}
