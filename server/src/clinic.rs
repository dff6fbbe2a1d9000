//! The clinic integration API (Bearer API key): doctors, patients, appointments, and what
//! happened (the audit log, a visit's summary).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use televisit_protocol::{CallStatus, ErrorCode};

use crate::auth::{Clinic, DOCTOR_TOKEN_PREFIX};
use crate::error::{json_rejection, ApiError, ApiResult};
use crate::secrets::{hash_password, hash_secret, random_secret};
use crate::store::{Appointment, AuditEntry, AuditFilter, StoredQualityReport};
use crate::SharedState;

/// Longest display name accepted.
const MAX_NAME_CHARS: usize = 200;

fn check_name(field: &str, value: &str) -> ApiResult<()> {
    let n = value.trim().chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{field} must have 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Body of `POST /api/clinic/doctors`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDoctor {
    /// Name shown to patients.
    pub display_name: String,
    /// Sign-in e-mail.
    pub email: String,
    /// Web sign-in password (at least 10 characters); omit for app-only doctors.
    #[serde(default)]
    pub password: Option<String>,
}

/// Reply of `POST /api/clinic/doctors`: the app token is shown once and stored only hashed.
#[derive(Serialize, Deserialize)]
pub struct CreatedDoctor {
    /// The doctor's id.
    pub id: String,
    /// The doctor's app token (`Authorization: Bearer tvd.…`).
    pub api_token: String,
}

/// Creates a doctor account with a new app token, returning both.
pub async fn create_doctor_account(
    state: &SharedState,
    display_name: &str,
    email: &str,
    password: Option<&str>,
) -> ApiResult<CreatedDoctor> {
    check_name("display_name", display_name)?;
    if !email.contains('@') || email.len() > 254 {
        return Err(ApiError::new(ErrorCode::BadRequest, "email must be an e-mail address"));
    }
    if password.is_some_and(|p| p.chars().count() < 10) {
        return Err(ApiError::new(ErrorCode::BadRequest, "password must have at least 10 characters"));
    }
    if state.store.doctor_by_email(email).await?.is_some() {
        return Err(ApiError::new(ErrorCode::Conflict, "a doctor with this e-mail exists"));
    }
    let api_token = format!("{DOCTOR_TOKEN_PREFIX}{}", random_secret());
    let password_hash = password.map(hash_password);
    let id = state
        .store
        .create_doctor(
            display_name.trim(),
            email,
            password_hash.as_deref(),
            Some(&hash_secret(&api_token)),
            state.clock.now_ms(),
        )
        .await?;
    Ok(CreatedDoctor { id, api_token })
}

/// `POST /api/clinic/doctors`.
pub async fn create_doctor(
    State(state): State<SharedState>,
    _clinic: Clinic,
    body: Result<Json<NewDoctor>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedDoctor>)> {
    let Json(body) = body.map_err(json_rejection)?;
    let created =
        create_doctor_account(&state, &body.display_name, &body.email, body.password.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Body of `POST /api/clinic/patients`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPatient {
    /// Name shown to the doctor.
    pub display_name: String,
}

/// `POST /api/clinic/patients`.
pub async fn create_patient(
    State(state): State<SharedState>,
    _clinic: Clinic,
    body: Result<Json<NewPatient>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Json(body) = body.map_err(json_rejection)?;
    check_name("display_name", &body.display_name)?;
    let id = state.store.create_patient(body.display_name.trim(), state.clock.now_ms()).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

/// Body of `POST /api/clinic/appointments`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAppointment {
    /// The doctor.
    pub doctor_id: String,
    /// The patient.
    pub patient_id: String,
    /// Scheduled time, ms since the Unix epoch.
    pub scheduled_at_ms: i64,
    /// The patient consented to recording.
    #[serde(default)]
    pub recording_enabled: bool,
}

/// An appointment as the API shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AppointmentView {
    /// Id.
    pub id: String,
    /// Doctor.
    pub doctor_id: String,
    /// Patient.
    pub patient_id: String,
    /// Scheduled time.
    pub scheduled_at_ms: i64,
    /// Room id.
    pub room_id: String,
    /// Call status.
    pub status: CallStatus,
    /// When both were first connected.
    pub started_at_ms: Option<i64>,
    /// When the call ended.
    pub ended_at_ms: Option<i64>,
    /// Recorded duration.
    pub duration_seconds: i64,
    /// Recording consent.
    pub recording_enabled: bool,
    /// Screen sharing active.
    pub screen_sharing_active: bool,
}

impl From<Appointment> for AppointmentView {
    fn from(a: Appointment) -> Self {
        AppointmentView {
            id: a.id,
            doctor_id: a.doctor_id,
            patient_id: a.patient_id,
            scheduled_at_ms: a.scheduled_at_ms,
            room_id: a.room_id,
            status: a.status,
            started_at_ms: a.started_at_ms,
            ended_at_ms: a.ended_at_ms,
            duration_seconds: a.duration_seconds,
            recording_enabled: a.recording_enabled,
            screen_sharing_active: a.screen_sharing_active,
        }
    }
}

/// `POST /api/clinic/appointments`.
pub async fn create_appointment(
    State(state): State<SharedState>,
    _clinic: Clinic,
    body: Result<Json<NewAppointment>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<AppointmentView>)> {
    let Json(body) = body.map_err(json_rejection)?;
    if state.store.doctor(&body.doctor_id).await?.is_none() {
        return Err(ApiError::new(ErrorCode::NotFound, "no such doctor"));
    }
    if state.store.patient_name(&body.patient_id).await?.is_none() {
        return Err(ApiError::new(ErrorCode::NotFound, "no such patient"));
    }
    let appointment = state
        .store
        .create_appointment(
            &body.doctor_id,
            &body.patient_id,
            body.scheduled_at_ms,
            body.recording_enabled,
            state.clock.now_ms(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(appointment.into())))
}

/// `GET /api/clinic/appointments/{id}`.
pub async fn appointment(
    State(state): State<SharedState>,
    _clinic: Clinic,
    Path(id): Path<String>,
) -> ApiResult<Json<AppointmentView>> {
    let appointment = state.store.appointment(&id).await?.ok_or_else(ApiError::appointment_not_found)?;
    Ok(Json(appointment.into()))
}

/// Most audit entries one `GET /api/clinic/audit` page returns.
pub const MAX_AUDIT_PAGE: i64 = 1000;

/// Query of `GET /api/clinic/audit`: every field narrows; pages follow `after_id`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Of this appointment only.
    pub appointment_id: Option<String>,
    /// At or after this time (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Before this time.
    pub to_ms: Option<i64>,
    /// After this entry (the previous page's `next_after_id`).
    pub after_id: Option<i64>,
    /// Entries per page, 1 to 1000 [default: 100].
    pub limit: Option<i64>,
}

/// One audit entry as the clinic reads it: the entry and its id.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AuditEntryView {
    /// The entry's id (increasing).
    pub id: i64,
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Reply of `GET /api/clinic/audit`.
#[derive(Serialize, Deserialize, Debug)]
pub struct AuditPage {
    /// The entries, oldest first.
    pub entries: Vec<AuditEntryView>,
    /// Pass as `after_id` for the next page; absent on the last page.
    pub next_after_id: Option<i64>,
}

/// `GET /api/clinic/audit`: the audit log, paged, filtered by appointment and time.
pub async fn audit(
    State(state): State<SharedState>,
    _clinic: Clinic,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<AuditPage>> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(ErrorCode::BadRequest, format!("invalid query: {}", rejection.body_text()))
    })?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("limit must be 1 to {MAX_AUDIT_PAGE}")));
    }
    let filter = AuditFilter {
        appointment_id: query.appointment_id,
        from_ms: query.from_ms,
        to_ms: query.to_ms,
        after_id: query.after_id,
    };
    // One more than asked tells whether a next page exists.
    let mut rows = state.store.audit_page(&filter, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_after_id = if more { rows.last().map(|(id, _)| *id) } else { None };
    let entries = rows.into_iter().map(|(id, entry)| AuditEntryView { id, entry }).collect();
    Ok(Json(AuditPage { entries, next_after_id }))
}

/// Reply of `GET /api/clinic/appointments/{id}/summary`: what happened in one visit.
#[derive(Serialize, Deserialize, Debug)]
pub struct VisitSummary {
    /// The appointment as it is now.
    pub appointment: AppointmentView,
    /// When the doctor started the call (opened the waiting room).
    pub waiting_since_ms: Option<i64>,
    /// Seconds both were in the call: from the first moment both were connected to the end
    /// (or to now, while it goes on).
    pub face_to_face_seconds: i64,
    /// Who started, joined, left and ended when, oldest first.
    pub timeline: Vec<AuditEntryView>,
    /// The participants' quality reports over the call (sent on each change of level), oldest
    /// first; at most a bounded number per participant. Purged with the chat.
    pub quality: Vec<StoredQualityReport>,
}

/// `GET /api/clinic/appointments/{id}/summary`.
pub async fn visit_summary(
    State(state): State<SharedState>,
    _clinic: Clinic,
    Path(id): Path<String>,
) -> ApiResult<Json<VisitSummary>> {
    let appointment = state.store.appointment(&id).await?.ok_or_else(ApiError::appointment_not_found)?;
    let filter = AuditFilter { appointment_id: Some(id), ..AuditFilter::default() };
    let timeline = state
        .store
        .audit_page(&filter, MAX_AUDIT_PAGE)
        .await?
        .into_iter()
        .map(|(id, entry)| AuditEntryView { id, entry })
        .collect();
    let quality = state.store.quality_reports(&appointment.id).await?;
    let face_to_face_seconds = match (appointment.status, appointment.started_at_ms) {
        (CallStatus::InProgress, Some(started)) => (state.clock.now_ms() - started).max(0) / 1000,
        _ => appointment.duration_seconds,
    };
    Ok(Json(VisitSummary {
        waiting_since_ms: appointment.waiting_since_ms,
        face_to_face_seconds,
        appointment: appointment.into(),
        timeline,
        quality,
    }))
}
