//! Televisit for Kotlin and Swift apps: the uniffi surface of the core's call client.
//!
//! This crate holds no call logic. It translates the core's types into uniffi records, enums and
//! errors, and the foreign [`CallListener`] into the core's listener. Async methods spawn their work
//! on the call client's own tokio runtime and await the handle, so no second runtime appears and
//! the foreign side may poll the future from any executor (Kotlin coroutines, Swift tasks).
//!
//! Lifecycle: [`Call::new`] → [`Call::join`] → … → [`Call::hang_up`] → [`Call::release`]. `release()`
//! stops the runtime and drops the foreign listener; after it returns no callback comes any more,
//! so an app that shuts down never gets a call into freed objects.

use std::sync::{Arc, RwLock};

use televisit_core::audio::{self as core_audio, AudioError as CoreAudioError};

use televisit_core::call::ladder::Rung;
use televisit_core::call::machine as core_machine;
use televisit_core::call::transport::SignalingTransport as CoreSignalingTransport;
use televisit_core::client::media::MediaStats;
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{self as core_client, CallClient, ClientEvent};
use televisit_core::error::CallError as CoreError;
use televisit_core::frame::{EncodedFrame, FrameKind, VideoCodec as CoreVideoCodec};
use televisit_core::link::JoinLink;
use televisit_core::protocol;

uniffi::setup_scaffolding!("televisit");

// ---------------------------------------------------------------------------------------------
// Android: the JNI entry point that initialises the TLS verifier (android.rs)
// ---------------------------------------------------------------------------------------------

mod android;

// ---------------------------------------------------------------------------------------------
// Video: pictures in from the camera, pictures out to the view, platform codecs (video.rs)
// ---------------------------------------------------------------------------------------------

mod video;
pub use video::*;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a call could not start or had to stop. The exception's message is the sentence to show the
/// user (Kotlin `CallException.LinkExpired`, Swift `CallError.LinkExpired(message:)`).
#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum CallError {
    /// The link is not a Televisit join link, or the server does not know its token.
    #[error("{message}")]
    LinkInvalid {
        /// What to show.
        message: String,
    },
    /// The link's token expired.
    #[error("{message}")]
    LinkExpired {
        /// What to show.
        message: String,
    },
    /// A newer link replaced this one.
    #[error("{message}")]
    LinkReplaced {
        /// What to show.
        message: String,
    },
    /// The call has ended; nobody can join it any more.
    #[error("{message}")]
    CallEnded {
        /// What to show.
        message: String,
    },
    /// The doctor has not started the call yet.
    #[error("{message}")]
    CallNotStarted {
        /// What to show.
        message: String,
    },
    /// Not this link's appointment, or not allowed for this role (a patient sharing a screen).
    #[error("{message}")]
    NotAllowed {
        /// What to show.
        message: String,
    },
    /// The clinic's server cannot be reached.
    #[error("{message}")]
    ServerUnreachable {
        /// What to show.
        message: String,
    },
    /// Another device joined with the same link and took over.
    #[error("{message}")]
    JoinedElsewhere {
        /// What to show.
        message: String,
    },
    /// The server refused something else (`code` is the protocol's error code).
    #[error("{message}")]
    Server {
        /// The server's code, e.g. `rate_limited`.
        code: String,
        /// What to show.
        message: String,
    },
    /// The media connection could not be made or was lost for good.
    #[error("{message}")]
    Media {
        /// What to show.
        message: String,
    },
    /// The call object was closed.
    #[error("{message}")]
    Closed {
        /// What to show.
        message: String,
    },
}

impl From<CoreError> for CallError {
    fn from(error: CoreError) -> CallError {
        let message = error.to_string();
        match error {
            CoreError::LinkInvalid => CallError::LinkInvalid { message },
            CoreError::LinkExpired => CallError::LinkExpired { message },
            CoreError::LinkReplaced => CallError::LinkReplaced { message },
            CoreError::CallEnded => CallError::CallEnded { message },
            CoreError::CallNotStarted => CallError::CallNotStarted { message },
            CoreError::NotAllowed(_) => CallError::NotAllowed { message },
            CoreError::ServerUnreachable(_) => CallError::ServerUnreachable { message },
            CoreError::JoinedElsewhere => CallError::JoinedElsewhere { message },
            CoreError::Server { code, .. } => CallError::Server { code, message },
            CoreError::Media(_) => CallError::Media { message },
            CoreError::Closed => CallError::Closed { message },
        }
    }
}

fn closed() -> CallError {
    CoreError::Closed.into()
}

/// Why an audio frame was refused (Kotlin `AudioException.WrongFrameSize`, Swift
/// `AudioError.WrongFrameSize(expected:got:)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum AudioError {
    /// A frame of the wrong length: a frame is 10 ms, 480 samples (960 bytes).
    #[error("a frame of {got} samples; a frame is {expected} (10 ms of 48 kHz mono, 16 bits)")]
    WrongFrameSize {
        /// Samples wanted.
        expected: u32,
        /// Samples given.
        got: u32,
    },
    /// Bytes that are not whole 16-bit samples.
    #[error("{bytes} bytes are not whole 16-bit samples")]
    OddByteCount {
        /// Bytes given.
        bytes: u32,
    },
    /// Opus refused (it could not start). (Not `message`: Kotlin exceptions have one.)
    #[error("Opus: {reason}")]
    Codec {
        /// What Opus said.
        reason: String,
    },
    /// The call was released.
    #[error("the call is closed")]
    Closed,
}

impl From<CoreAudioError> for AudioError {
    fn from(error: CoreAudioError) -> AudioError {
        match error {
            CoreAudioError::WrongFrameSize { expected, got } => AudioError::WrongFrameSize { expected, got },
            CoreAudioError::OddByteCount(bytes) => AudioError::OddByteCount { bytes },
            CoreAudioError::Codec(reason) => AudioError::Codec { reason },
            CoreAudioError::Closed => AudioError::Closed,
        }
    }
}

impl From<CallError> for AudioError {
    fn from(error: CallError) -> AudioError {
        match error {
            CallError::Closed { .. } => AudioError::Closed,
            other => AudioError::Codec { reason: other.to_string() },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records and enums
// ---------------------------------------------------------------------------------------------

/// The call's state: `Idle → Joining → WaitingRoom → Connecting → Connected ⇄ Reconnecting → Ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum CallState {
    /// Created, not joined yet.
    Idle,
    /// Checking the link with the server.
    Joining,
    /// Waiting for the other side (the patient waits for the doctor).
    WaitingRoom,
    /// Both are in; the media connection is being made.
    Connecting,
    /// Media flows.
    Connected,
    /// The connection dropped and is being restored.
    Reconnecting,
    /// Over for this side.
    Ended,
}

impl From<core_machine::CallState> for CallState {
    fn from(state: core_machine::CallState) -> CallState {
        use core_machine::CallState as S;
        match state {
            S::Idle => CallState::Idle,
            S::Joining => CallState::Joining,
            S::WaitingRoom => CallState::WaitingRoom,
            S::Connecting => CallState::Connecting,
            S::Connected => CallState::Connected,
            S::Reconnecting => CallState::Reconnecting,
            S::Ended => CallState::Ended,
        }
    }
}

/// A participant's role in the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Role {
    /// Starts and ends the call; may share a screen.
    Doctor,
    /// Waits in the waiting room until the doctor is in.
    Patient,
}

impl From<protocol::Role> for Role {
    fn from(role: protocol::Role) -> Role {
        match role {
            protocol::Role::Doctor => Role::Doctor,
            protocol::Role::Patient => Role::Patient,
        }
    }
}

/// Connection quality, the same rule on every platform (see the core's `call::quality`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum QualityLevel {
    /// Smooth HD.
    Excellent,
    /// Usable, some degradation.
    Good,
    /// Noticeable freezes or audio gaps.
    Poor,
    /// No media for several seconds.
    Lost,
}

impl From<protocol::QualityLevel> for QualityLevel {
    fn from(level: protocol::QualityLevel) -> QualityLevel {
        match level {
            protocol::QualityLevel::Excellent => QualityLevel::Excellent,
            protocol::QualityLevel::Good => QualityLevel::Good,
            protocol::QualityLevel::Poor => QualityLevel::Poor,
            protocol::QualityLevel::Lost => QualityLevel::Lost,
        }
    }
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ChatMessage {
    /// Server-assigned id, increasing within the visit.
    pub id: i64,
    /// Who wrote it.
    pub from: Role,
    /// The text.
    pub text: String,
    /// When the server stored it, ms since the Unix epoch.
    pub sent_at_ms: i64,
}

impl From<protocol::ChatMessage> for ChatMessage {
    fn from(m: protocol::ChatMessage) -> ChatMessage {
        ChatMessage { id: m.id, from: m.from.into(), text: m.text, sent_at_ms: m.sent_at_ms }
    }
}

/// The peer's own quality report.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct PeerQuality {
    /// The peer's level.
    pub level: QualityLevel,
    /// The peer's round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// The peer's received packet loss, percent.
    pub loss_percent: Option<f64>,
    /// The peer's jitter, ms.
    pub jitter_ms: Option<f64>,
}

/// Why the call ended for this side.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum EndReason {
    /// The call ended for everyone, with the duration the server recorded.
    CallEnded {
        /// Who ended it, if a participant did.
        ended_by: Option<Role>,
        /// The recorded duration in seconds.
        duration_seconds: i64,
    },
    /// This side left; the call may go on without it.
    Left,
    /// An error ended it.
    Failed {
        /// What went wrong.
        error: CallError,
    },
}

impl From<core_machine::EndReason> for EndReason {
    fn from(reason: core_machine::EndReason) -> EndReason {
        match reason {
            core_machine::EndReason::CallEnded { ended_by, duration_seconds } => {
                EndReason::CallEnded { ended_by: ended_by.map(Role::from), duration_seconds }
            }
            core_machine::EndReason::Left => EndReason::Left,
            core_machine::EndReason::Failed(error) => EndReason::Failed { error: error.into() },
        }
    }
}

/// Once-a-second measurements of the media connection; `None` where nothing was measured.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct CallStats {
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
    /// Remote video frames received so far.
    pub frames_received: u64,
    /// Remote video width (from VP8 keyframes; 0 while the camera arrives in H.264).
    pub frame_width: u32,
    /// Remote video height (from VP8 keyframes; 0 while the camera arrives in H.264).
    pub frame_height: u32,
    /// Remote frames per second.
    pub frame_rate: f64,
    /// The send-side bandwidth estimate, bits per second.
    pub available_outgoing_bitrate_bps: Option<u64>,
    /// Selected candidate pair type: `host`, `srflx`, `prflx` or `relay`.
    pub candidate_pair_type: Option<String>,
    /// The selected pair's local candidate type: `host`, `srflx`, `prflx` or `relay`.
    pub local_candidate_type: Option<String>,
    /// The selected pair's remote candidate type.
    pub remote_candidate_type: Option<String>,
    /// How this device reaches its TURN server when it relays: `udp`, `tcp` or `tls`.
    pub relay_transport: Option<String>,
    /// What the peer acknowledged receiving over the last second, bits per second (`None` when
    /// the peer sends no transport-wide feedback).
    pub acknowledged_bitrate_bps: Option<u64>,
    /// Remote video freezes so far (more than 500 ms without a new picture).
    pub freeze_count: u64,
    /// Time spent in those freezes, ms.
    pub total_freeze_ms: u64,
    /// Bytes of retransmissions sent so far.
    pub retransmitted_bytes_sent: u64,
}

impl From<MediaStats> for CallStats {
    fn from(s: MediaStats) -> CallStats {
        CallStats {
            rtt_ms: s.rtt_ms,
            jitter_ms: s.jitter_ms,
            loss_percent: s.loss_percent,
            send_bitrate_bps: s.send_bitrate_bps,
            receive_bitrate_bps: s.receive_bitrate_bps,
            frames_sent: s.frames_sent,
            frames_received: s.frames_received,
            frame_width: s.frame_width,
            frame_height: s.frame_height,
            frame_rate: s.frame_rate,
            available_outgoing_bitrate_bps: s.available_outgoing_bitrate_bps,
            candidate_pair_type: s.candidate_pair_type,
            local_candidate_type: s.local_candidate_type.map(|t| t.as_str().to_owned()),
            remote_candidate_type: s.remote_candidate_type.map(|t| t.as_str().to_owned()),
            relay_transport: s.relay_transport.map(|t| t.as_str().to_owned()),
            acknowledged_bitrate_bps: s.acknowledged_bitrate_bps,
            freeze_count: s.freeze_count,
            total_freeze_ms: s.total_freeze_ms,
            retransmitted_bytes_sent: s.loss_recovery.retransmitted_bytes,
        }
    }
}

/// The video rung the adaptive bitrate chose (`width == 0`: audio only).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct VideoRung {
    /// Name, e.g. `"720p"` or `"audio-only"`.
    pub name: String,
    /// Frame width to encode.
    pub width: u32,
    /// Frame height to encode.
    pub height: u32,
    /// Frames per second to encode.
    pub fps: u32,
    /// Video bitrate the rung aims for.
    pub target_bps: u64,
}

impl From<Rung> for VideoRung {
    fn from(r: Rung) -> VideoRung {
        VideoRung {
            name: r.name.to_owned(),
            width: r.width,
            height: r.height,
            fps: r.fps,
            target_bps: r.target_bps,
        }
    }
}

/// What the camera gives up first when bandwidth is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum VideoPreference {
    /// Smooth motion: lower the resolution, keep the frame rate (a conversation).
    Balanced,
    /// The examination mode: keep the resolution, lower the frame rate (a rash, a wound).
    Detail,
}

impl From<VideoPreference> for televisit_core::call::ladder::VideoPreference {
    fn from(preference: VideoPreference) -> Self {
        match preference {
            VideoPreference::Balanced => Self::Balanced,
            VideoPreference::Detail => Self::Detail,
        }
    }
}

/// What a media frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum MediaKind {
    /// Opus audio.
    Audio,
    /// Camera video (in the codec of the `VideoCodec` / `RemoteVideoCodec` events).
    Video,
    /// Screen-share video (the doctor's second video track).
    Screen,
}

/// A video codec: what to encode (`VideoCodec` event) or decode (`RemoteVideoCodec` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum VideoCodec {
    /// VP8 frames.
    Vp8,
    /// H.264 constrained baseline; frames are access units in Annex-B form (start codes).
    H264,
}

impl From<CoreVideoCodec> for VideoCodec {
    fn from(codec: CoreVideoCodec) -> VideoCodec {
        match codec {
            CoreVideoCodec::Vp8 => VideoCodec::Vp8,
            CoreVideoCodec::H264 => VideoCodec::H264,
        }
    }
}

impl From<VideoCodec> for CoreVideoCodec {
    fn from(codec: VideoCodec) -> CoreVideoCodec {
        match codec {
            VideoCodec::Vp8 => CoreVideoCodec::Vp8,
            VideoCodec::H264 => CoreVideoCodec::H264,
        }
    }
}

/// Which transport signaling may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SignalingTransport {
    /// The WebSocket, moving to the HTTP fallback when a proxy refuses or swallows the upgrade.
    Auto,
    /// The WebSocket only.
    WebSocketOnly,
    /// The HTTP fallback only (`POST`/long-poll `GET /api/video-call/signal`).
    HttpOnly,
}

impl From<SignalingTransport> for CoreSignalingTransport {
    fn from(transport: SignalingTransport) -> CoreSignalingTransport {
        match transport {
            SignalingTransport::Auto => CoreSignalingTransport::Auto,
            SignalingTransport::WebSocketOnly => CoreSignalingTransport::WebSocketOnly,
            SignalingTransport::HttpOnly => CoreSignalingTransport::HttpOnly,
        }
    }
}

impl From<FrameKind> for MediaKind {
    fn from(kind: FrameKind) -> MediaKind {
        match kind {
            FrameKind::Audio => MediaKind::Audio,
            FrameKind::Video => MediaKind::Video,
            FrameKind::Screen => MediaKind::Screen,
        }
    }
}

impl From<MediaKind> for FrameKind {
    fn from(kind: MediaKind) -> FrameKind {
        match kind {
            MediaKind::Audio => FrameKind::Audio,
            MediaKind::Video => FrameKind::Video,
            MediaKind::Screen => FrameKind::Screen,
        }
    }
}

/// An encoded media frame: one Opus packet, one VP8 frame or one H.264 access unit (Annex-B), as
/// the platform's codec makes it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MediaFrame {
    /// Audio, camera video or screen video.
    pub kind: MediaKind,
    /// The bitstream.
    pub data: Vec<u8>,
    /// Duration in ms (20 for audio, 33 at 30 fps).
    pub duration_ms: u32,
    /// A keyframe (ignored for audio): VP8 key frame, or H.264 access unit with an IDR slice.
    pub keyframe: bool,
    /// A received frame's RTP timestamp (48 kHz audio, 90 kHz video); ignored when sending.
    #[uniffi(default = None)]
    pub rtp_timestamp: Option<u32>,
    /// When the sender sent a received frame, microseconds since the Unix epoch on the sender's
    /// clock (from its RTCP sender reports; null for the first second or so). Audio and video share
    /// that clock: render the picture whose time matches the sound playing. Ignored when sending.
    #[uniffi(default = None)]
    pub capture_time_us: Option<i64>,
}

impl From<EncodedFrame> for MediaFrame {
    fn from(f: EncodedFrame) -> MediaFrame {
        MediaFrame {
            kind: f.kind.into(),
            data: f.data,
            duration_ms: f.duration.as_millis() as u32,
            keyframe: f.keyframe,
            rtp_timestamp: f.timing.rtp_timestamp,
            capture_time_us: f.timing.capture_time_us,
        }
    }
}

impl From<MediaFrame> for EncodedFrame {
    fn from(f: MediaFrame) -> EncodedFrame {
        EncodedFrame {
            kind: f.kind.into(),
            data: f.data,
            duration: std::time::Duration::from_millis(f.duration_ms.into()),
            keyframe: f.keyframe,
            timing: Default::default(),
        }
    }
}

/// Everything the app hears, in order, on a background thread (never the app's main thread).
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum CallEvent {
    /// The state changed.
    StateChanged {
        /// The new state.
        state: CallState,
    },
    /// The server accepted the link.
    Joined {
        /// This side's role.
        role: Role,
        /// This side's display name.
        display_name: String,
        /// The other side's display name.
        peer_display_name: String,
    },
    /// In the waiting room.
    Waiting {
        /// The doctor's status message, if any.
        message: Option<String>,
    },
    /// The chat so far (on every join, including reconnects).
    ChatHistory {
        /// Oldest first.
        messages: Vec<ChatMessage>,
    },
    /// A chat message (own messages come back with their id).
    ChatReceived {
        /// The message.
        message: ChatMessage,
    },
    /// The peer turned its microphone or camera on or off.
    PeerMediaChanged {
        /// The peer's microphone is on (not muted).
        microphone_on: bool,
        /// The peer's camera is on.
        camera_on: bool,
    },
    /// The doctor started or stopped sharing a screen.
    PeerScreenShare {
        /// Sharing now.
        active: bool,
    },
    /// The doctor started or stopped the examination mode: this side's camera keeps its
    /// resolution and gives up frame rate when bandwidth is short (show "hold still").
    Examination {
        /// Examining now.
        active: bool,
    },
    /// The peer's own quality report.
    PeerQuality {
        /// The report.
        quality: PeerQuality,
    },
    /// The peer left or lost its connection.
    PeerLeft,
    /// Signaling dropped and is being reconnected (media may still flow).
    SignalingReconnecting {
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// Signaling is back.
    SignalingRestored,
    /// Something was refused or failed without ending the call.
    Error {
        /// What.
        error: CallError,
    },
    /// The call is over for this side.
    Ended {
        /// Why, with the duration when the call was ended for everyone.
        reason: EndReason,
    },
    /// Once a second while the media connection exists.
    Stats {
        /// The measurements.
        stats: CallStats,
    },
    /// The connection quality level changed.
    QualityChanged {
        /// The new level.
        level: QualityLevel,
    },
    /// The adaptive bitrate chose another rung: encode at this size and rate.
    VideoRungChanged {
        /// The rung.
        rung: VideoRung,
    },
    /// The video bitrate to encode at now, within the rung (from the bandwidth estimate).
    EncoderBitrate {
        /// Bits per second.
        bitrate_bps: u64,
    },
    /// A frame from the peer, to decode with the platform's codec.
    RemoteFrame {
        /// The frame.
        frame: MediaFrame,
    },
    /// Encode the next frame of this kind (camera or screen) as a keyframe: the peer's decoder lost
    /// the picture, or frames were dropped to stay within the bandwidth.
    KeyframeRequested {
        /// `Video` or `Screen`.
        kind: MediaKind,
    },
    /// Encode camera and screen video with this codec (negotiated with the peer). Comes before
    /// any frame is wanted.
    VideoCodec {
        /// The codec.
        codec: VideoCodec,
    },
    /// The peer's camera or screen frames arrive in this codec: decode them with it. Comes before
    /// the first `RemoteFrame` of that kind.
    RemoteVideoCodec {
        /// `Video` or `Screen`.
        kind: MediaKind,
        /// The codec.
        codec: VideoCodec,
    },
}

impl From<ClientEvent> for CallEvent {
    fn from(event: ClientEvent) -> CallEvent {
        use core_machine::CallEvent as E;
        match event {
            ClientEvent::Call(event) => match event {
                E::StateChanged(state) => CallEvent::StateChanged { state: state.into() },
                E::Joined { role, display_name, peer_display_name } => {
                    CallEvent::Joined { role: role.into(), display_name, peer_display_name }
                }
                E::Waiting { message } => CallEvent::Waiting { message },
                E::ChatHistory(messages) => {
                    CallEvent::ChatHistory { messages: messages.into_iter().map(Into::into).collect() }
                }
                E::ChatReceived(message) => CallEvent::ChatReceived { message: message.into() },
                E::PeerMediaChanged(state) => {
                    CallEvent::PeerMediaChanged { microphone_on: state.audio, camera_on: state.video }
                }
                E::PeerScreenShare(active) => CallEvent::PeerScreenShare { active },
                E::Examination(active) => CallEvent::Examination { active },
                E::PeerQuality(report) => CallEvent::PeerQuality {
                    quality: PeerQuality {
                        level: report.level.into(),
                        rtt_ms: report.rtt_ms,
                        loss_percent: report.loss_percent,
                        jitter_ms: report.jitter_ms,
                    },
                },
                E::PeerLeft => CallEvent::PeerLeft,
                E::SignalingReconnecting { attempt } => CallEvent::SignalingReconnecting { attempt },
                E::SignalingRestored => CallEvent::SignalingRestored,
                E::Error(error) => CallEvent::Error { error: error.into() },
                E::Ended(reason) => CallEvent::Ended { reason: reason.into() },
            },
            ClientEvent::Stats(stats) => CallEvent::Stats { stats: stats.into() },
            ClientEvent::QualityChanged(level) => CallEvent::QualityChanged { level: level.into() },
            ClientEvent::VideoRungChanged(rung) => CallEvent::VideoRungChanged { rung: rung.into() },
            ClientEvent::EncoderBitrate(bitrate_bps) => CallEvent::EncoderBitrate { bitrate_bps },
            ClientEvent::RemoteFrame(frame) => CallEvent::RemoteFrame { frame: frame.into() },
            ClientEvent::KeyframeRequested(kind) => CallEvent::KeyframeRequested { kind: kind.into() },
            ClientEvent::VideoCodec(codec) => CallEvent::VideoCodec { codec: codec.into() },
            ClientEvent::RemoteVideoCodec(kind, codec) => {
                CallEvent::RemoteVideoCodec { kind: kind.into(), codec: codec.into() }
            }
        }
    }
}

/// Options of a call.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CallOptions {
    /// Best video rung to send: `"1080p"`, `"720p"`, `"540p"`, `"360p"` or `"180p"`.
    #[uniffi(default = "1080p")]
    pub max_video: String,
    /// Rung to start with (low by default: the ladder climbs as the peer acknowledges the video).
    #[uniffi(default = "360p")]
    pub start_video: String,
    /// The video codecs this device encodes and decodes well, best first (a phone whose hardware
    /// favours H.264 puts it first). `None` or empty: VP8, then H.264. The peer's choice wins:
    /// the `VideoCodec` event says what to encode.
    #[uniffi(default = None)]
    pub video_codecs: Option<Vec<VideoCodec>>,
    /// Connect through a TURN relay only ("hide my IP"): the peer never learns this device's IP
    /// address. The clinic's server can require it too.
    #[uniffi(default = false)]
    pub relay_only: bool,
    /// How signaling reaches the server. `None` is `Auto`: the WebSocket, or the HTTP fallback
    /// behind a proxy that strips WebSockets.
    #[uniffi(default = None)]
    pub signaling_transport: Option<SignalingTransport>,
}

/// What a join link says, read on the device without the network.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LinkInfo {
    /// The clinic's server, e.g. `https://clinic.example`.
    pub server: String,
    /// The appointment the link belongs to.
    pub appointment_id: String,
    /// When the link expires, ms since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Checks a join link on the device (shape and expiry) before showing the call screen.
#[uniffi::export]
pub fn check_link(link: String) -> Result<LinkInfo, CallError> {
    let parsed = JoinLink::parse(&link)?;
    parsed.check_expiry(now_ms())?;
    Ok(LinkInfo {
        server: parsed.server,
        appointment_id: parsed.appointment_id,
        expires_at_ms: parsed.expires_at_ms,
    })
}

/// The library's version, e.g. for a support screen.
#[uniffi::export]
pub fn televisit_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The listener and the call
// ---------------------------------------------------------------------------------------------

/// The app's listener, implemented in Kotlin or Swift. Called on a background thread, one event at
/// a time, in order. Return quickly: hand the event to the UI's own queue.
#[uniffi::export(with_foreign)]
pub trait CallListener: Send + Sync {
    /// One event.
    fn on_event(&self, event: CallEvent);
}

/// Carries core events to the foreign listener. Dropped (with the foreign reference) on close.
struct ListenerBridge(Arc<dyn CallListener>);

impl core_client::CallListener for ListenerBridge {
    fn on_event(&self, event: ClientEvent) {
        self.0.on_event(event.into());
    }
}

/// One video visit, as one side (doctor or patient) sees it.
#[derive(uniffi::Object)]
pub struct Call {
    client: RwLock<Option<Arc<CallClient>>>,
    appointment_id: String,
}

impl Call {
    fn client(&self) -> Result<Arc<CallClient>, CallError> {
        self.client.read().expect("call lock").clone().ok_or_else(closed)
    }
}

#[uniffi::export]
impl Call {
    /// Checks the link on the device and prepares the call; nothing is sent until [`Call::join`].
    #[uniffi::constructor]
    pub fn new(
        link: String,
        listener: Arc<dyn CallListener>,
        options: CallOptions,
    ) -> Result<Arc<Call>, CallError> {
        let mut settings = WebRtcSettings::default();
        if let Some(codecs) = options.video_codecs.as_ref().filter(|c| !c.is_empty()) {
            settings.video_codecs = codecs.iter().map(|&c| c.into()).collect();
        }
        let media = Arc::new(WebRtcMedia::new(settings));
        let options = core_client::CallOptions {
            max_video: options.max_video,
            start_video: options.start_video,
            relay_only: options.relay_only,
            signaling_transport: options.signaling_transport.map_or(CoreSignalingTransport::Auto, Into::into),
        };
        let client = CallClient::new(&link, Arc::new(ListenerBridge(listener)), media, options)?;
        let appointment_id = client.appointment_id().to_owned();
        Ok(Arc::new(Call { client: RwLock::new(Some(Arc::new(client))), appointment_id }))
    }

    /// Joins: the server checks the link, signaling opens. Returns this side's role once the
    /// server accepted (the patient is then in the waiting room), or the typed refusal.
    pub async fn join(&self) -> Result<Role, CallError> {
        let client = self.client()?;
        client.join();
        let role = on_runtime(client, |c| c.joined()).await??;
        Ok(role.into())
    }

    /// Ends the call for everyone (doctor) or leaves it (patient); returns how it ended, with the
    /// server's duration when the call was ended.
    pub async fn hang_up(&self) -> Result<EndReason, CallError> {
        let client = self.client()?;
        client.hang_up();
        Ok(on_runtime(client, |c| c.ended()).await?.into())
    }

    /// Waits until the call is over for this side (ended by the peer, the clinic, or an error).
    pub async fn wait_for_end(&self) -> Result<EndReason, CallError> {
        Ok(on_runtime(self.client()?, |c| c.ended()).await?.into())
    }

    /// The state now.
    pub fn state(&self) -> CallState {
        self.client().map(|c| c.state().into()).unwrap_or(CallState::Ended)
    }

    /// This side's role, once the server accepted the link.
    pub fn role(&self) -> Option<Role> {
        self.client().ok().and_then(|c| c.role()).map(Role::from)
    }

    /// The appointment this call belongs to.
    pub fn appointment_id(&self) -> String {
        self.appointment_id.clone()
    }

    /// Microphone on (unmuted) or off; the peer is told.
    pub fn set_microphone_enabled(&self, enabled: bool) -> Result<(), CallError> {
        self.client()?.set_microphone_enabled(enabled);
        Ok(())
    }

    /// Camera on or off; the peer is told and no video is sent while off.
    pub fn set_camera_enabled(&self, enabled: bool) -> Result<(), CallError> {
        self.client()?.set_camera_enabled(enabled);
        Ok(())
    }

    /// What this side's camera gives up first when bandwidth is short: `Detail` (the examination
    /// mode, for a rash or a wound) keeps the resolution and lowers the frame rate.
    pub fn set_video_preference(&self, preference: VideoPreference) -> Result<(), CallError> {
        self.client()?.set_video_preference(preference.into());
        Ok(())
    }

    /// Starts or stops the examination mode. Doctors only: a patient gets `NotAllowed`. The
    /// patient's camera then keeps its resolution and gives up frame rate when bandwidth is short.
    pub fn set_examination(&self, active: bool) -> Result<(), CallError> {
        Ok(self.client()?.set_examination(active)?)
    }

    /// Starts or stops sharing the screen. Doctors only: a patient gets `NotAllowed`.
    pub fn set_screen_share(&self, active: bool) -> Result<(), CallError> {
        Ok(self.client()?.set_screen_share(active)?)
    }

    /// Sends a chat message (1 to 2000 characters). It comes back as `ChatReceived` with its id.
    pub fn send_chat(&self, text: String) -> Result<(), CallError> {
        Ok(self.client()?.send_chat(&text)?)
    }

    /// Sends an encoded frame from the platform's encoder. Dropped while that kind is off or
    /// before media can flow.
    pub fn send_frame(&self, frame: MediaFrame) -> Result<(), CallError> {
        self.client()?.send_frame(frame.into());
        Ok(())
    }

    /// The microphone's way in: push 10 ms PCM frames and the core sends Opus. The same object
    /// each time. Use it or `send_frame` with your own audio encoder, not both.
    pub fn audio_source(&self) -> Result<Arc<AudioSource>, AudioError> {
        let source = self.client()?.audio_source().map_err(CallError::from)?;
        Ok(Arc::new(AudioSource(source)))
    }

    /// The speaker's way out: pull 10 ms PCM frames of the peer's voice. From the first call on,
    /// the peer's audio plays through it and no longer comes as `RemoteFrame` events.
    pub fn audio_sink(&self) -> Result<Arc<AudioSink>, AudioError> {
        let sink = self.client()?.audio_sink().map_err(CallError::from)?;
        Ok(Arc::new(AudioSink(sink)))
    }

    /// Asks the peer for a keyframe of its camera (`Video`) or screen (`Screen`): call it when the
    /// platform's decoder reports a broken picture. The peer hears `KeyframeRequested`.
    pub fn request_keyframe(&self, kind: MediaKind) -> Result<(), CallError> {
        self.client()?.request_keyframe(kind.into());
        Ok(())
    }

    /// The device's network changed (Wi-Fi ↔ cellular): reconnect now instead of timing out.
    pub fn network_changed(&self) -> Result<(), CallError> {
        self.client()?.network_changed();
        Ok(())
    }

    /// Releases everything: the call's runtime, its connections and the listener. Once this
    /// returns no callback comes any more. Idempotent; later calls on this object fail with
    /// `Closed`. (Named `release`, not `close`, because the generated Kotlin class already has a
    /// `close()` that frees the object itself; freeing it also releases.)
    pub fn release(&self) {
        let client = self.client.write().expect("call lock").take();
        if let Some(client) = client {
            client.close();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Audio: PCM in from the microphone, PCM out to the speaker
// ---------------------------------------------------------------------------------------------

/// The microphone's way into the call (`call.audioSource()`): push each 10 ms frame your capture
/// callback gets, 48 kHz mono 16-bit PCM as 960 little-endian bytes (Android `AudioRecord` with
/// `ENCODING_PCM_16BIT` into a `ByteArray`; iOS `AVAudioPCMBuffer.int16ChannelData` as `Data`).
/// The core encodes Opus with FEC and sends it while the microphone is on. Never blocks.
#[derive(uniffi::Object)]
pub struct AudioSource(core_audio::AudioSource);

#[uniffi::export]
impl AudioSource {
    /// Queues one 10 ms frame (960 bytes). `WrongFrameSize` for another length, `Closed` after
    /// the call was released.
    pub fn push(&self, pcm: Vec<u8>) -> Result<(), AudioError> {
        Ok(self.0.push_bytes(&pcm)?)
    }

    /// Frames dropped because the encoder fell behind (more than 100 ms queued).
    pub fn frames_dropped(&self) -> u64 {
        self.0.frames_dropped()
    }
}

/// What the receiving audio did so far.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AudioStats {
    /// Packets received.
    pub packets_received: u64,
    /// Packets lost on the way.
    pub packets_lost: u64,
    /// Lost packets rebuilt from the next packet's forward error correction.
    pub packets_recovered: u64,
    /// Packets that came too late to play.
    pub packets_late: u64,
    /// 10 ms frames concealed (lost or late audio filled in).
    pub concealed_frames: u64,
    /// The jitter buffer's target delay, ms (it follows the measured jitter).
    pub target_delay_ms: u32,
}

/// The speaker's way out of the call (`call.audioSink()`): pull a 10 ms frame each time your
/// playout callback wants one (Android `AudioTrack` in `MODE_STREAM`, iOS an `AVAudioSourceNode`).
/// There is always a frame: the peer's voice, concealment of a lost packet, or silence.
#[derive(uniffi::Object)]
pub struct AudioSink(Arc<core_audio::AudioSink>);

#[uniffi::export]
impl AudioSink {
    /// The next 10 ms: 48 kHz mono 16-bit PCM, 960 little-endian bytes. `Closed` after the call
    /// was released.
    pub fn pull(&self) -> Result<Vec<u8>, AudioError> {
        Ok(self.0.pull_bytes()?)
    }

    /// Losses, FEC, concealment and the target delay so far.
    pub fn stats(&self) -> AudioStats {
        let s = self.0.stats();
        AudioStats {
            packets_received: s.packets_received,
            packets_lost: s.packets_lost,
            packets_recovered: s.packets_recovered,
            packets_late: s.packets_late,
            concealed_frames: s.concealed_frames,
            target_delay_ms: s.target_delay_ms,
        }
    }

    /// When the peer sent the sound of the last frame pulled, microseconds on the peer's clock, the
    /// clock of its video frames' `captureTimeUs`: show the picture sent then, for lips in sync
    /// with the voice. Null until the peer's voice plays and its first sender report came.
    pub fn playing_capture_time_us(&self) -> Option<i64> {
        self.0.playing_capture_time_us()
    }
}

/// Runs a wait of the client on the client's own runtime and awaits it from whatever executor polls
/// the foreign future. The client is dropped first: the waiting task must not keep it alive.
async fn on_runtime<T: Send + 'static, F>(
    client: Arc<CallClient>,
    wait: impl FnOnce(&CallClient) -> F,
) -> Result<T, CallError>
where
    F: std::future::Future<Output = T> + Send + 'static,
{
    let (runtime, waiting) = (client.runtime()?, wait(&client));
    drop(client);
    runtime.spawn(waiting).await.map_err(|_| closed())
}

impl Drop for Call {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_keep_their_kind_and_the_sentence_to_show() {
        let error: CallError = CoreError::LinkExpired.into();
        assert!(matches!(&error, CallError::LinkExpired { message } if message.contains("ask the clinic")));
        let error: CallError =
            CoreError::Server { code: "rate_limited".into(), message: "slow down".into() }.into();
        assert!(matches!(&error, CallError::Server { code, .. } if code == "rate_limited"));
        assert!(error.to_string().contains("slow down"));
    }

    #[test]
    fn check_link_reads_a_link_and_refuses_expired_and_malformed_ones() {
        let secret = "A".repeat(43);
        let future = now_ms() / 1000 + 3600;
        let link =
            format!("https://clinic.example/medical/appointments/a1/video-call/#token=tv1.{future}.{secret}");
        let info = check_link(link).expect("a valid link");
        assert_eq!((info.server.as_str(), info.appointment_id.as_str()), ("https://clinic.example", "a1"));
        assert_eq!(info.expires_at_ms, future * 1000);

        let past = now_ms() / 1000 - 60;
        let expired =
            format!("https://clinic.example/medical/appointments/a1/video-call/#token=tv1.{past}.{secret}");
        assert!(matches!(check_link(expired), Err(CallError::LinkExpired { .. })));
        assert!(matches!(check_link("https://clinic.example/".into()), Err(CallError::LinkInvalid { .. })));
    }

    #[test]
    fn a_released_call_refuses_every_action_with_closed() {
        struct Ignore;
        impl CallListener for Ignore {
            fn on_event(&self, _: CallEvent) {}
        }
        let secret = "A".repeat(43);
        let future = now_ms() / 1000 + 3600;
        let link =
            format!("http://127.0.0.1:9/medical/appointments/a1/video-call/#token=tv1.{future}.{secret}");
        let options = CallOptions {
            max_video: "1080p".into(),
            start_video: "360p".into(),
            video_codecs: None,
            relay_only: false,
            signaling_transport: None,
        };
        let call = Call::new(link, Arc::new(Ignore), options).expect("a call");
        call.release();
        call.release(); // idempotent
        assert!(matches!(call.send_chat("hi".into()), Err(CallError::Closed { .. })));
        assert!(matches!(call.set_camera_enabled(false), Err(CallError::Closed { .. })));
        assert_eq!(call.state(), CallState::Ended);
    }
}
