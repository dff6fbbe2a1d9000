//! The signaling protocol: JSON text frames over the WebSocket (or the HTTP fallback).
//!
//! Every frame is one JSON object with a `"type"` and, optionally, a `"seq"` number that the sender
//! assigns (see [`Frame`]). `seq` lets a client that reconnects resume without losing or repeating a
//! frame: it tells the server the last `seq` it received and the server replays the rest.
//!
//! [`ClientMessage`] is what a participant sends; [`ServerMessage`] is what the server sends. Frames a
//! peer sends for the other peer (SDP, ICE, media state, quality, screen share) are relayed with the
//! sender's role added. The full description with an example of every frame is in `protocol.md`
//! beside this file (included below). [`api`] holds the bodies of the HTTP API. This crate needs
//! only serde: the server uses it without any WebRTC code, the client core re-exports it.
#![doc = include_str!("protocol.md")]

pub mod api;

use serde::{Deserialize, Serialize};

/// Largest frame, in bytes, that the server accepts. SDP offers with many codecs are ~6–10 kB.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;

/// Longest waiting-room status message from the doctor, in characters.
pub const MAX_WAITING_MESSAGE_CHARS: usize = 200;

/// The media stream id (the SDP `msid`'s first part) the native core gives its screen-share
/// track. A peer that announces no `stream_id` in `screen-share` (an older client) is taken to
/// send its screen in this stream, or as a track with the id `screen`.
pub const CORE_SCREEN_STREAM_ID: &str = "televisit-screen";

/// Whether a `screen-share` frame's `stream_id` is a valid SDP `msid` id (RFC 8830: 1 to 64
/// token characters), so every peer can compare it with the streams its stack reports.
pub fn valid_stream_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`{|}~".contains(&b))
}

/// Protocol name offered in `Sec-WebSocket-Protocol`. A client may also offer `token.<token>` there
/// instead of sending the token in its first `join` frame.
pub const WEBSOCKET_SUBPROTOCOL: &str = "televisit.v1";

/// Who a participant is in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The appointment's doctor: starts and ends the call, may share a screen, makes the offer.
    Doctor,
    /// The appointment's patient: waits in the waiting room until the doctor is in.
    Patient,
}

impl Role {
    /// The other participant's role.
    pub fn other(self) -> Role {
        match self {
            Role::Doctor => Role::Patient,
            Role::Patient => Role::Doctor,
        }
    }

    /// The wire name (`"doctor"` or `"patient"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Doctor => "doctor",
            Role::Patient => "patient",
        }
    }
}

/// The video call's status, stored on the appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// The doctor has not started the call.
    NotStarted,
    /// Started; not both participants have been in the room yet.
    Waiting,
    /// Both participants have been connected.
    InProgress,
    /// Ended; tokens are revoked and nobody can enter.
    Ended,
}

impl CallStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::NotStarted => "not_started",
            CallStatus::Waiting => "waiting",
            CallStatus::InProgress => "in_progress",
            CallStatus::Ended => "ended",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<CallStatus> {
        Some(match name {
            "not_started" => CallStatus::NotStarted,
            "waiting" => CallStatus::Waiting,
            "in_progress" => CallStatus::InProgress,
            "ended" => CallStatus::Ended,
            _ => return None,
        })
    }
}

/// One frame on the wire: a message plus the sender's optional sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame<M> {
    /// Sender-assigned, increasing by one per frame that must not be lost (relayed frames, chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The message itself (its `type` and fields sit beside `seq` in the same JSON object).
    #[serde(flatten)]
    pub message: M,
}

impl<M> Frame<M> {
    /// A frame without a sequence number.
    pub fn new(message: M) -> Self {
        Frame { seq: None, message }
    }

    /// A frame with a sequence number.
    pub fn numbered(seq: u64, message: M) -> Self {
        Frame { seq: Some(seq), message }
    }
}

/// SDP of an offer or answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sdp {
    /// The session description text.
    pub sdp: String,
}

/// A trickled ICE candidate (the browser's `RTCIceCandidateInit`, in snake case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// The `candidate:` line; empty marks the end of candidates.
    pub candidate: String,
    /// The media stream identification tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The m-line index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
}

/// Whether a participant's microphone and camera are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaState {
    /// Microphone on (not muted).
    pub audio: bool,
    /// Camera on.
    pub video: bool,
}

/// Connection quality level, the same rule in the core and the web page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

impl QualityLevel {
    /// The name on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityLevel::Excellent => "excellent",
            QualityLevel::Good => "good",
            QualityLevel::Poor => "poor",
            QualityLevel::Lost => "lost",
        }
    }

    /// Parses a name given by [`QualityLevel::as_str`].
    pub fn parse(name: &str) -> Option<QualityLevel> {
        Some(match name {
            "excellent" => QualityLevel::Excellent,
            "good" => QualityLevel::Good,
            "poor" => QualityLevel::Poor,
            "lost" => QualityLevel::Lost,
            _ => return None,
        })
    }
}

/// A client's own quality report, relayed to the peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// The sender's quality level.
    pub level: QualityLevel,
    /// Round-trip time in milliseconds, if measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Received packet loss in percent, if measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_percent: Option<f64>,
    /// Jitter in milliseconds, if measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
}

/// Resumption request carried by `join` after a dropped connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The last server `seq` this client received; the server replays everything after it.
    pub last_seq: u64,
}

/// A chat message as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Server-assigned id, increasing within the visit.
    pub id: i64,
    /// Who wrote it.
    pub from: Role,
    /// The text.
    pub text: String,
    /// When the server stored it, milliseconds since the Unix epoch.
    pub sent_at_ms: i64,
}

/// What a participant sends to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// Authenticate with a call token (must be the first frame unless the token came in the
    /// `Sec-WebSocket-Protocol` header); `resume` after a dropped connection.
    Join {
        /// The call token (omit when sent in the subprotocol header).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// Resume a previous connection of the same token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Resume>,
    },
    /// Leave the room (the call goes on; the participant may come back).
    Leave,
    /// SDP offer for the peer (the doctor makes it).
    Offer(Sdp),
    /// SDP answer for the peer.
    Answer(Sdp),
    /// A trickled ICE candidate for the peer.
    IceCandidate(IceCandidate),
    /// A chat message for the visit (stored, delivered to both).
    Chat {
        /// The text, at most [`MAX_CHAT_CHARS`] characters.
        text: String,
    },
    /// Start or stop sharing the screen (doctor only).
    ScreenShare {
        /// Sharing now.
        active: bool,
        /// The track role: the media stream id (`msid`) of the video track carrying the screen;
        /// every other video track of the sender is its camera. See [`valid_stream_id`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_id: Option<String>,
    },
    /// Start or stop the examination mode (doctor only): the patient's camera keeps its
    /// resolution and gives up frame rate when bandwidth is short (a rash, a wound).
    Examination {
        /// Examining now.
        active: bool,
    },
    /// Microphone/camera state for the peer.
    MediaState(MediaState),
    /// The sender's quality report for the peer.
    Quality(QualityReport),
    /// The doctor's short status for a waiting patient ("running 10 minutes late").
    WaitingMessage {
        /// The text, at most [`MAX_WAITING_MESSAGE_CHARS`] characters.
        text: String,
    },
    /// End the call for everyone (doctor only).
    EndCall,
    /// Keep-alive; the server answers `pong`.
    Ping,
}

/// What the server sends to a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// Reply to `join`: who you are, where the call stands, the chat so far.
    Joined {
        /// Your role.
        role: Role,
        /// The room (the appointment's room id).
        room_id: String,
        /// The call's status.
        status: CallStatus,
        /// The other participant is connected now.
        peer_present: bool,
        /// This connection resumed an earlier one (frames after `resume.last_seq` follow).
        resumed: bool,
        /// The visit's chat history.
        chat_history: Vec<ChatMessage>,
        /// The peer's last known media state, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer_media: Option<MediaState>,
        /// Seconds the server waits without a frame before closing; send `ping` more often.
        idle_timeout_seconds: u64,
        /// The last client `seq` the server accepted from this role; resend what came after it.
        last_client_seq: u64,
    },
    /// Patient only: the doctor is not in yet. Sent again when the doctor posts a status.
    Waiting {
        /// The doctor's status message, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Patient only: the doctor is in; the patient leaves the waiting room.
    Admitted,
    /// The other participant is connected. `make_offer` tells the doctor to start negotiation.
    PeerJoined {
        /// The peer's role.
        role: Role,
        /// This side makes the SDP offer now.
        make_offer: bool,
    },
    /// The other participant left or lost their connection.
    PeerLeft {
        /// The peer's role.
        role: Role,
        /// `left`, `disconnected` or `timeout`.
        reason: String,
    },
    /// SDP offer from the peer.
    Offer {
        /// Sender.
        from: Role,
        /// The SDP.
        sdp: String,
    },
    /// SDP answer from the peer.
    Answer {
        /// Sender.
        from: Role,
        /// The SDP.
        sdp: String,
    },
    /// ICE candidate from the peer.
    IceCandidate {
        /// Sender.
        from: Role,
        /// The candidate.
        #[serde(flatten)]
        candidate: IceCandidate,
    },
    /// A chat message (also echoed to its sender, with its id).
    Chat(ChatMessage),
    /// To the sender only: its chat frame numbered `client_seq` is stored, so it need not be
    /// resent. Sent without `seq` and never replayed; after a reconnect `joined.last_client_seq`
    /// tells the same.
    Ack {
        /// The `seq` the client gave the chat frame.
        client_seq: u64,
    },
    /// The doctor started or stopped sharing the screen.
    ScreenShare {
        /// Sender (always the doctor).
        from: Role,
        /// Sharing now.
        active: bool,
        /// The media stream id of the sender's screen track (absent from older clients: see
        /// [`CORE_SCREEN_STREAM_ID`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_id: Option<String>,
    },
    /// The doctor started or stopped the examination mode (for the patient's camera).
    Examination {
        /// Sender (always the doctor).
        from: Role,
        /// Examining now.
        active: bool,
    },
    /// The peer's microphone/camera state.
    MediaState {
        /// Sender.
        from: Role,
        /// The state.
        #[serde(flatten)]
        state: MediaState,
    },
    /// The peer's quality report.
    Quality {
        /// Sender.
        from: Role,
        /// The report.
        #[serde(flatten)]
        report: QualityReport,
    },
    /// The call ended; the connection closes after this frame.
    CallEnded {
        /// Who ended it (`None` when the server did, e.g. by the API).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ended_by: Option<Role>,
        /// The call's duration as recorded.
        duration_seconds: i64,
    },
    /// Reply to `ping`.
    Pong,
    /// Something was refused or went wrong; see [`ErrorCode`].
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation with what to do next.
        message: String,
    },
}

/// Machine-readable error codes, shared by the HTTP API and the signaling `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON or not an object with a string `type`.
    Malformed,
    /// The frame's `type` is not part of the protocol.
    UnknownType,
    /// The frame has a known type but missing or invalid fields.
    InvalidFrame,
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    FrameTooLarge,
    /// Too many frames per second on this connection.
    RateLimited,
    /// A frame other than `join` arrived before `join`.
    NotJoined,
    /// No token, or a token the server does not know.
    InvalidToken,
    /// The token expired.
    TokenExpired,
    /// The token was revoked (for example the call was restarted).
    TokenRevoked,
    /// The call has ended.
    CallEnded,
    /// The call has not been started by the doctor.
    CallNotStarted,
    /// Authenticated, but this role or person may not do this.
    Forbidden,
    /// No valid credentials for the API.
    Unauthorized,
    /// The thing asked for does not exist.
    NotFound,
    /// The request is not valid (bad JSON body, bad field).
    BadRequest,
    /// The action conflicts with the current state.
    Conflict,
    /// Another connection with the same token took over this one.
    Replaced,
    /// The connection was idle for too long.
    IdleTimeout,
    /// The request's origin is not allowed.
    OriginNotAllowed,
    /// The server could not get its turn at the database in time; retry after the HTTP
    /// `Retry-After` seconds.
    ServerBusy,
    /// Something failed on the server.
    Internal,
}

impl ErrorCode {
    /// The wire name, e.g. `"token_expired"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::CallEnded => "call_ended",
            ErrorCode::CallNotStarted => "call_not_started",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Replaced => "replaced",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::Internal => "internal",
        }
    }
}

/// The wire names of every [`ClientMessage`] type, to tell "unknown type" from "invalid fields".
pub const CLIENT_MESSAGE_TYPES: &[&str] = &[
    "join",
    "leave",
    "offer",
    "answer",
    "ice-candidate",
    "chat",
    "screen-share",
    "examination",
    "media-state",
    "quality",
    "waiting-message",
    "end-call",
    "ping",
];

/// Why a text frame could not be read as a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// [`ErrorCode::Malformed`], [`ErrorCode::UnknownType`], [`ErrorCode::InvalidFrame`] or
    /// [`ErrorCode::FrameTooLarge`].
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

/// Reads one client text frame, telling apart the ways it can be wrong.
pub fn decode_client_frame(text: &str) -> Result<Frame<ClientMessage>, DecodeError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(DecodeError {
            code: ErrorCode::FrameTooLarge,
            message: format!("frame is {} bytes; the limit is {MAX_FRAME_BYTES}", text.len()),
        });
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DecodeError {
        code: ErrorCode::Malformed,
        message: format!("frame is not valid JSON: {e}"),
    })?;
    let kind = value.get("type").and_then(|t| t.as_str()).ok_or_else(|| DecodeError {
        code: ErrorCode::Malformed,
        message: "frame must be a JSON object with a string \"type\"".into(),
    })?;
    if !CLIENT_MESSAGE_TYPES.contains(&kind) {
        let shown: String = kind.chars().take(40).collect();
        return Err(DecodeError {
            code: ErrorCode::UnknownType,
            message: format!("unknown frame type \"{shown}\""),
        });
    }
    let kind = kind.to_owned();
    serde_json::from_value(value).map_err(|e| DecodeError {
        code: ErrorCode::InvalidFrame,
        message: format!("invalid \"{kind}\" frame: {e}"),
    })
}

/// Encodes any frame as JSON text.
pub fn encode<M: Serialize>(frame: &Frame<M>) -> String {
    serde_json::to_string(frame).expect("protocol frames always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_candidate_frame_round_trips_with_seq() {
        let text = r#"{"type":"ice-candidate","seq":7,"candidate":"candidate:1 1 UDP 1 127.0.0.1 5000 typ host","sdp_mid":"0","sdp_m_line_index":0}"#;
        let frame = decode_client_frame(text).unwrap();
        assert_eq!(frame.seq, Some(7));
        let ClientMessage::IceCandidate(c) = &frame.message else { panic!("{frame:?}") };
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(decode_client_frame(&encode(&frame)).unwrap(), frame);
    }

    #[test]
    fn server_relay_frames_carry_the_sender_role() {
        let frame = Frame::numbered(
            3,
            ServerMessage::MediaState {
                from: Role::Patient,
                state: MediaState { audio: false, video: true },
            },
        );
        let json: serde_json::Value = serde_json::from_str(&encode(&frame)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"media-state","seq":3,"from":"patient","audio":false,"video":true})
        );
        let back: Frame<ServerMessage> = serde_json::from_value(json).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn malformed_unknown_and_invalid_frames_are_told_apart() {
        assert_eq!(decode_client_frame("{not json").unwrap_err().code, ErrorCode::Malformed);
        assert_eq!(decode_client_frame("[1,2]").unwrap_err().code, ErrorCode::Malformed);
        assert_eq!(decode_client_frame(r#"{"type":"teleport"}"#).unwrap_err().code, ErrorCode::UnknownType);
        assert_eq!(decode_client_frame(r#"{"type":"chat"}"#).unwrap_err().code, ErrorCode::InvalidFrame);
        let big = format!(r#"{{"type":"chat","text":"{}"}}"#, "x".repeat(MAX_FRAME_BYTES));
        assert_eq!(decode_client_frame(&big).unwrap_err().code, ErrorCode::FrameTooLarge);
    }

    #[test]
    fn every_listed_client_type_decodes_and_no_other() {
        let samples = [
            r#"{"type":"join","token":"t"}"#,
            r#"{"type":"leave"}"#,
            r#"{"type":"offer","sdp":"v=0"}"#,
            r#"{"type":"answer","sdp":"v=0"}"#,
            r#"{"type":"ice-candidate","candidate":""}"#,
            r#"{"type":"chat","text":"hi"}"#,
            r#"{"type":"screen-share","active":true}"#,
            r#"{"type":"examination","active":true}"#,
            r#"{"type":"media-state","audio":true,"video":false}"#,
            r#"{"type":"quality","level":"good"}"#,
            r#"{"type":"waiting-message","text":"5 minutes"}"#,
            r#"{"type":"end-call"}"#,
            r#"{"type":"ping"}"#,
        ];
        assert_eq!(samples.len(), CLIENT_MESSAGE_TYPES.len());
        for s in samples {
            decode_client_frame(s).unwrap_or_else(|e| panic!("{s}: {e:?}"));
        }
    }

    #[test]
    fn a_screen_share_frame_names_its_stream_or_not() {
        let frame =
            decode_client_frame(r#"{"type":"screen-share","active":true,"stream_id":"a1-b2"}"#).unwrap();
        assert_eq!(
            frame.message,
            ClientMessage::ScreenShare { active: true, stream_id: Some("a1-b2".into()) }
        );
        let old = decode_client_frame(r#"{"type":"screen-share","active":false}"#).unwrap();
        assert_eq!(old.message, ClientMessage::ScreenShare { active: false, stream_id: None });
        assert_eq!(encode(&old), r#"{"type":"screen-share","active":false}"#);
        assert!(valid_stream_id("{0f8e4a2c-55d1-4c2b-9d0e-3b1f2a7c9e10}"));
        assert!(valid_stream_id(CORE_SCREEN_STREAM_ID));
        for bad in ["", "two words", "quote\"", &"x".repeat(65)] {
            assert!(!valid_stream_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn error_code_names_match_serde() {
        for code in [ErrorCode::TokenExpired, ErrorCode::UnknownType, ErrorCode::OriginNotAllowed] {
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::Value::from(code.as_str()));
        }
    }
}
