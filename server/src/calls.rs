//! The video-call lifecycle API: start, rejoin, join, status, waiting-room status, end, ICE servers.

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::Json;
use serde::Deserialize;
use std::net::SocketAddr;
use televisit_protocol::api::{
    EndResponse, IceServer, IceServersResponse, IceTransportPolicy, JoinResponse, PatientLinkResponse,
    StartResponse, StatusResponse,
};
use televisit_protocol::{CallStatus, ErrorCode, Role, MAX_WAITING_MESSAGE_CHARS};

use crate::auth::{Actor, DoctorAuth, Participant};
use crate::config::Config;
use crate::error::{json_rejection, ApiError, ApiResult};
use crate::secrets::{hash_secret, new_call_token, turn_credentials};
use crate::store::{AuditEntry, NewCallToken};
use crate::SharedState;

/// Path of the signaling WebSocket.
pub const WEBSOCKET_PATH: &str = "/api/video-call/ws";
/// Path of the HTTP signaling fallback.
pub const SIGNAL_PATH: &str = "/api/video-call/signal";

/// A signaling path as the join response gives it: with the call's room id appended, so that a
/// load balancer in front of several nodes can hash it and send both participants of a visit to
/// one node (their frames then never cross nodes). The room id is random, is no secret and names
/// no one; the server ignores it (the token decides the room), and the bare path works too.
fn with_room(path: &str, room_id: &str) -> String {
    format!("{path}/{room_id}")
}

/// A join link: the call page with the token in the fragment, which browsers never send to a
/// server and which therefore stays out of access logs.
pub fn join_link(config: &Config, appointment_id: &str, token: &str) -> String {
    format!("{}/medical/appointments/{appointment_id}/video-call/#token={token}", config.public_url)
}

/// STUN servers, and TURN with short-lived REST credentials for this participant.
pub fn ice_servers(config: &Config, participant_id: &str, now_ms: i64) -> Vec<IceServer> {
    let mut servers = Vec::new();
    if !config.stun_urls.is_empty() {
        servers.push(IceServer { urls: config.stun_urls.clone(), username: None, credential: None });
    }
    if let (false, Some(secret)) = (config.turn_urls.is_empty(), config.turn_secret.as_deref()) {
        let expires = now_ms / 1000 + config.turn_ttl_seconds as i64;
        let (username, credential) = turn_credentials(secret, participant_id, expires);
        servers.push(IceServer {
            urls: config.turn_urls.clone(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    servers
}

/// The candidates a participant may use: relayed only for patients when the clinic says so.
pub fn ice_transport_policy(config: &Config, role: Role) -> IceTransportPolicy {
    match role {
        Role::Patient if config.patients_relay_only => IceTransportPolicy::Relay,
        _ => IceTransportPolicy::All,
    }
}

async fn issue_tokens(
    state: &SharedState,
    appointment_id: &str,
    roles: &[Role],
) -> ApiResult<(Vec<(Role, String)>, i64)> {
    let now = state.clock.now_ms();
    let expires_at_ms = now + state.config.token_ttl_seconds as i64 * 1000;
    let tokens: Vec<(Role, String)> =
        roles.iter().map(|&role| (role, new_call_token(expires_at_ms))).collect();
    let stored: Vec<NewCallToken> = tokens
        .iter()
        .map(|(role, token)| NewCallToken { token_hash: hash_secret(token), role: *role, expires_at_ms })
        .collect();
    if !state.store.start_call(appointment_id, &stored, now).await? {
        let appointment = state.store.appointment(appointment_id).await?;
        return Err(match appointment.map(|a| a.status) {
            Some(CallStatus::Ended) => ApiError::new(ErrorCode::CallEnded, "this call has ended"),
            _ => ApiError::new(
                ErrorCode::Conflict,
                "the call is in progress: use rejoin to get a new doctor link",
            ),
        });
    }
    Ok((tokens, expires_at_ms))
}

/// `POST /api/appointments/{id}/video-call/start` (doctor): status → waiting, new doctor and
/// patient tokens (earlier ones revoked), join links returned.
pub async fn start(
    State(state): State<SharedState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    auth: DoctorAuth,
    Path(appointment_id): Path<String>,
) -> ApiResult<Json<StartResponse>> {
    let remote = Some(addr.ip().to_string());
    state.doctors_appointment(&auth.doctor, &appointment_id, remote.clone()).await?;
    let (tokens, expires_at_ms) =
        issue_tokens(&state, &appointment_id, &[Role::Doctor, Role::Patient]).await?;
    let link = |role| {
        let token = &tokens.iter().find(|(r, _)| *r == role).expect("issued").1;
        join_link(&state.config, &appointment_id, token)
    };
    let entry = AuditEntry::new(state.clock.now_ms(), Some(&appointment_id), "doctor", "start", "", remote);
    state.store.audit(&entry).await?;
    tracing::info!(appointment = %appointment_id, "call started");
    let status = state.store.appointment(&appointment_id).await?.map_or(CallStatus::Waiting, |a| a.status);
    Ok(Json(StartResponse {
        appointment_id: appointment_id.clone(),
        status,
        doctor_link: link(Role::Doctor),
        patient_link: Some(link(Role::Patient)),
        expires_at_ms,
    }))
}

/// `POST /api/appointments/{id}/video-call/rejoin` (doctor): a new doctor link for a started call
/// (the earlier doctor link is revoked; the patient's stays valid).
pub async fn rejoin(
    State(state): State<SharedState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    auth: DoctorAuth,
    Path(appointment_id): Path<String>,
) -> ApiResult<Json<StartResponse>> {
    let appointment =
        state.doctors_appointment(&auth.doctor, &appointment_id, Some(addr.ip().to_string())).await?;
    if appointment.status == CallStatus::NotStarted {
        return Err(ApiError::new(ErrorCode::CallNotStarted, "start the call first"));
    }
    let (tokens, expires_at_ms) = issue_tokens(&state, &appointment_id, &[Role::Doctor]).await?;
    Ok(Json(StartResponse {
        appointment_id: appointment_id.clone(),
        status: appointment.status,
        doctor_link: join_link(&state.config, &appointment_id, &tokens[0].1),
        patient_link: None,
        expires_at_ms,
    }))
}

/// `POST /api/appointments/{id}/video-call/patient-link` (the doctor's account only, never a call
/// link): a fresh patient link for a started call, e.g. after a reload of the doctor's list or for
/// a call started elsewhere. Tokens are stored hashed, so an earlier link cannot be shown again; the
/// new one replaces it and the earlier patient link is revoked: one valid patient link at a time,
/// so re-sending also withdraws a link that went to the wrong address. A patient already connected
/// keeps her connection; to reconnect she needs the new link.
pub async fn patient_link(
    State(state): State<SharedState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    auth: DoctorAuth,
    Path(appointment_id): Path<String>,
) -> ApiResult<Json<PatientLinkResponse>> {
    let remote = Some(addr.ip().to_string());
    let appointment = state.doctors_appointment(&auth.doctor, &appointment_id, remote.clone()).await?;
    let ended = || ApiError::new(ErrorCode::CallEnded, "this call has ended");
    match appointment.status {
        CallStatus::NotStarted => {
            return Err(ApiError::new(ErrorCode::CallNotStarted, "start the call first"))
        }
        CallStatus::Ended => return Err(ended()),
        CallStatus::Waiting | CallStatus::InProgress => {}
    }
    let now = state.clock.now_ms();
    let expires_at_ms = now + state.config.token_ttl_seconds as i64 * 1000;
    let token = new_call_token(expires_at_ms);
    let stored = NewCallToken { token_hash: hash_secret(&token), role: Role::Patient, expires_at_ms };
    if !state.store.replace_call_token(&appointment_id, &stored, now).await? {
        return Err(ended()); // ended meanwhile
    }
    let entry = AuditEntry::new(now, Some(&appointment_id), "doctor", "patient_link", "", remote);
    state.store.audit(&entry).await?;
    Ok(Json(PatientLinkResponse {
        patient_link: join_link(&state.config, &appointment_id, &token),
        appointment_id,
        expires_at_ms,
    }))
}

/// `POST /api/video-call/join` (call token): everything a client needs to enter the call.
pub async fn join(
    State(state): State<SharedState>,
    Participant(grant): Participant,
) -> ApiResult<Json<JoinResponse>> {
    let appointment =
        state.store.appointment(&grant.appointment_id).await?.ok_or_else(ApiError::appointment_not_found)?;
    let doctor =
        state.store.doctor(&appointment.doctor_id).await?.ok_or_else(ApiError::appointment_not_found)?;
    let patient_name = state.store.patient_name(&appointment.patient_id).await?.unwrap_or_default();
    let (display_name, peer_display_name) = match grant.role {
        Role::Doctor => (doctor.display_name, patient_name),
        Role::Patient => (patient_name, doctor.display_name),
    };
    let participant_id = format!("{}-{}", appointment.room_id, grant.role.as_str());
    let websocket_path = with_room(WEBSOCKET_PATH, &appointment.room_id);
    let signal_path = with_room(SIGNAL_PATH, &appointment.room_id);
    Ok(Json(JoinResponse {
        appointment_id: appointment.id,
        room_id: appointment.room_id,
        role: grant.role,
        display_name,
        peer_display_name,
        status: appointment.status,
        ice_servers: ice_servers(&state.config, &participant_id, state.clock.now_ms()),
        ice_transport_policy: ice_transport_policy(&state.config, grant.role),
        expires_at_ms: grant.expires_at_ms,
        websocket_path,
        signal_path,
        recording_enabled: appointment.recording_enabled,
    }))
}

/// `GET /api/video-call/ice-servers` (call token): fresh STUN/TURN configuration.
pub async fn ice_servers_handler(
    State(state): State<SharedState>,
    Participant(grant): Participant,
) -> Json<IceServersResponse> {
    let participant_id = format!("{}-{}", grant.room_id, grant.role.as_str());
    Json(IceServersResponse {
        ice_servers: ice_servers(&state.config, &participant_id, state.clock.now_ms()),
        ice_transport_policy: ice_transport_policy(&state.config, grant.role),
        ttl_seconds: state.config.turn_ttl_seconds,
    })
}

/// `GET /api/appointments/{id}/video-call/status` (the doctor, or either participant's token).
pub async fn status(
    State(state): State<SharedState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    actor: Actor,
    Path(appointment_id): Path<String>,
) -> ApiResult<Json<StatusResponse>> {
    let (appointment, _) =
        actor.authorize(&state, &appointment_id, false, Some(addr.ip().to_string())).await?;
    let (doctor_present, patient_present) = state.hub.presence(&appointment_id).await;
    let now = state.clock.now_ms();
    let duration_seconds = match (appointment.status, appointment.started_at_ms) {
        (CallStatus::InProgress, Some(started)) => (now - started).max(0) / 1000,
        _ => appointment.duration_seconds,
    };
    Ok(Json(StatusResponse {
        appointment_id,
        status: appointment.status,
        doctor_present,
        patient_present,
        patient_waiting_since_ms: if patient_present && !doctor_present {
            appointment.waiting_since_ms
        } else {
            None
        },
        started_at_ms: appointment.started_at_ms,
        ended_at_ms: appointment.ended_at_ms,
        duration_seconds,
        screen_sharing_active: appointment.screen_sharing_active,
    }))
}

/// `POST /api/appointments/{id}/video-call/end` (the doctor, or the doctor's call token).
pub async fn end(
    State(state): State<SharedState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    actor: Actor,
    Path(appointment_id): Path<String>,
) -> ApiResult<Json<EndResponse>> {
    let remote = Some(addr.ip().to_string());
    let (appointment, role) = actor.authorize(&state, &appointment_id, true, remote.clone()).await?;
    if appointment.status == CallStatus::NotStarted {
        return Err(ApiError::new(ErrorCode::CallNotStarted, "the call has not been started"));
    }
    let duration_seconds = state.hub.end_call(&appointment_id, Some(role), remote).await?;
    Ok(Json(EndResponse { status: CallStatus::Ended, duration_seconds }))
}

/// Body of the waiting-room status.
#[derive(Deserialize)]
pub struct WaitingMessageBody {
    /// The text; empty clears it.
    pub text: String,
}

/// `POST /api/appointments/{id}/video-call/waiting-message` (the doctor): a short status shown to
/// the waiting patient, e.g. "Running 10 minutes late". Answers `{"ok":true,"delivered":bool}`:
/// delivered when the patient is in the waiting room now (else she sees it when she arrives).
pub async fn waiting_message(
    State(state): State<SharedState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    actor: Actor,
    Path(appointment_id): Path<String>,
    body: Result<Json<WaitingMessageBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let (appointment, _) =
        actor.authorize(&state, &appointment_id, true, Some(addr.ip().to_string())).await?;
    let Json(body) = body.map_err(json_rejection)?;
    if body.text.chars().count() > MAX_WAITING_MESSAGE_CHARS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("at most {MAX_WAITING_MESSAGE_CHARS} characters"),
        ));
    }
    if appointment.status == CallStatus::Ended {
        return Err(ApiError::new(ErrorCode::CallEnded, "this call has ended"));
    }
    let delivered = state.hub.set_waiting_message(&appointment, &body.text).await?;
    Ok(Json(serde_json::json!({ "ok": true, "delivered": delivered })))
}
