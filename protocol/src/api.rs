//! The server's HTTP API bodies, shared by the server and the client (serde only).

use serde::{Deserialize, Serialize};

use crate::{CallStatus, ErrorCode, Role};

/// The one error shape of every HTTP error: `{ "error": { "code", "message" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation with what to do next.
    pub message: String,
}

/// One STUN or TURN server, in the browser's `RTCIceServer` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name (coturn REST scheme: `<expiry>:<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password (base64 HMAC-SHA1 of the user name with the shared secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Which ICE candidates a client may use, in the browser's `RTCIceTransportPolicy` words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Host, server-reflexive and relayed candidates.
    #[default]
    All,
    /// Relayed (TURN) candidates only: the peer never learns this client's IP addresses. The
    /// server sends it to patients when the clinic sets `patients_relay_only`; a client must
    /// then gather and send relayed candidates only, whatever its own setting.
    Relay,
}

/// Reply of `POST /api/appointments/{id}/video-call/start` (and `.../rejoin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartResponse {
    /// The appointment.
    pub appointment_id: String,
    /// The call's status after starting (`waiting`).
    pub status: CallStatus,
    /// The doctor's join link (the token is in the `#token=` fragment, which browsers never send).
    pub doctor_link: String,
    /// The patient's join link; absent for `rejoin`, which only renews the doctor's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_link: Option<String>,
    /// When the new tokens expire, ms since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Reply of `POST /api/appointments/{id}/video-call/patient-link`: a fresh patient link for a
/// started call (the earlier patient link stops working).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientLinkResponse {
    /// The appointment.
    pub appointment_id: String,
    /// The patient's new join link (the token is in the `#token=` fragment).
    pub patient_link: String,
    /// When the new token expires, ms since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Reply of `POST /api/video-call/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The appointment.
    pub appointment_id: String,
    /// The signaling room.
    pub room_id: String,
    /// The token holder's role.
    pub role: Role,
    /// The token holder's display name.
    pub display_name: String,
    /// The other participant's display name.
    pub peer_display_name: String,
    /// The call's status.
    pub status: CallStatus,
    /// STUN/TURN servers for the peer connection.
    pub ice_servers: Vec<IceServer>,
    /// The candidates this client may use (`relay`: TURN only; absent from older servers: `all`).
    #[serde(default)]
    pub ice_transport_policy: IceTransportPolicy,
    /// When the token expires, ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// WebSocket path for signaling (relative to the server's base URL). It ends with the call's
    /// room id, the same for both participants, so that a load balancer can send them to one node:
    /// use it as given.
    pub websocket_path: String,
    /// HTTP fallback path for signaling (ends with the room id, like `websocket_path`).
    pub signal_path: String,
    /// Recording consent given for this visit.
    pub recording_enabled: bool,
}

/// Reply of `GET .../video-call/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The appointment.
    pub appointment_id: String,
    /// The call's status.
    pub status: CallStatus,
    /// The doctor is connected to signaling now.
    pub doctor_present: bool,
    /// The patient is connected to signaling now.
    pub patient_present: bool,
    /// Since when the patient has been waiting for the doctor, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_waiting_since_ms: Option<i64>,
    /// When the call went in progress, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    /// When the call ended, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<i64>,
    /// Duration so far (in progress) or recorded (ended), in seconds.
    pub duration_seconds: i64,
    /// The doctor is sharing a screen.
    pub screen_sharing_active: bool,
}

/// Reply of `POST .../video-call/end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndResponse {
    /// `ended`.
    pub status: CallStatus,
    /// The recorded duration in seconds.
    pub duration_seconds: i64,
}

/// Reply of `GET /api/video-call/ice-servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServersResponse {
    /// STUN/TURN servers.
    pub ice_servers: Vec<IceServer>,
    /// The candidates this client may use, as in [`JoinResponse::ice_transport_policy`].
    #[serde(default)]
    pub ice_transport_policy: IceTransportPolicy,
    /// Seconds the TURN credentials stay valid.
    pub ttl_seconds: u64,
}

/// Reply of the HTTP signaling fallback's long poll, `GET /api/video-call/signal?after=N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalPollResponse {
    /// Server frames after the `after` cursor, oldest first.
    pub frames: Vec<serde_json::Value>,
    /// Pass this as `after` in the next poll (it acknowledges these frames).
    pub cursor: u64,
}
