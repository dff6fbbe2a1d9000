//! Who is asking: the clinic (API key), a doctor (web session or app token), or a call participant
//! (call token). Each is an axum extractor; every refusal is audited and counted.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum_extra::extract::CookieJar;
use televisit_protocol::{CallStatus, ErrorCode, Role};

use crate::error::{ApiError, ApiResult};
use crate::secrets::{constant_time_eq, hash_secret, looks_like_call_token};
use crate::signaling::hub::Grant;
use crate::store::{Appointment, AuditEntry, Doctor};
use crate::throttle::AuditDecision;
use crate::AppState;

/// Name of the doctor's session cookie.
pub const SESSION_COOKIE: &str = "televisit_session";
/// Header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Prefix of a doctor's app token.
pub const DOCTOR_TOKEN_PREFIX: &str = "tvd.";

/// The client's address, for the audit log.
pub fn remote_addr(parts: &Parts) -> Option<String> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string())
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

impl AppState {
    /// Records a refusal in the metrics and the audit log (rows per address are capped: see
    /// [`crate::throttle::AuditLimiter`]), and returns the error.
    pub async fn refuse(
        &self,
        error: ApiError,
        appointment_id: Option<&str>,
        actor: &str,
        remote_addr: Option<String>,
    ) -> ApiError {
        self.metrics.refused(error.code);
        let address = remote_addr.as_deref().unwrap_or("unknown");
        if let AuditDecision::Write { suppressed } = self.audit_limiter.decide(address, Instant::now()) {
            let detail = match suppressed {
                0 => error.code.as_str().to_owned(),
                n => format!("{}; {n} earlier refusals from this address not written", error.code.as_str()),
            };
            let entry =
                AuditEntry::new(self.clock.now_ms(), appointment_id, actor, "refused", &detail, remote_addr);
            if let Err(e) = self.store.audit(&entry).await {
                tracing::error!(error = %e, "audit write failed");
            }
        }
        tracing::info!(code = error.code.as_str(), actor, "refused");
        error
    }

    /// 429 (audited) while `remote_addr` has used up its failed tokens (call tokens, doctor app
    /// tokens, clinic keys) for the minute; checked before any token is, so that guessing stalls
    /// even when a guess would be right.
    async fn token_throttle(&self, remote_addr: &Option<String>) -> ApiResult<()> {
        let address = remote_addr.as_deref().unwrap_or("unknown");
        match self.failed_tokens.check(address, Instant::now()) {
            Ok(()) => Ok(()),
            Err(seconds) => Err(self
                .refuse(ApiError::rate_limited(seconds), None, "anonymous", remote_addr.clone())
                .await),
        }
    }

    /// Counts an unknown token from `remote_addr` towards its throttle.
    fn token_failed(&self, remote_addr: &Option<String>) {
        self.failed_tokens.record(remote_addr.as_deref().unwrap_or("unknown"), Instant::now());
    }

    /// Checks a call token: known, not revoked, not expired, call not ended. An address that
    /// presented too many unknown tokens gets 429 for the rest of the minute.
    pub async fn validate_call_token(&self, token: &str, remote_addr: Option<String>) -> ApiResult<Grant> {
        self.token_throttle(&remote_addr).await?;
        let address = remote_addr.clone();
        let result = self.check_call_token(token, remote_addr).await;
        if result.as_ref().is_err_and(|e| e.code == ErrorCode::InvalidToken) {
            self.token_failed(&address);
        }
        result
    }

    async fn check_call_token(&self, token: &str, remote_addr: Option<String>) -> ApiResult<Grant> {
        let invalid = || {
            ApiError::new(
                ErrorCode::InvalidToken,
                "this link is not valid: check it or ask the clinic for a new one",
            )
        };
        if !looks_like_call_token(token) {
            return Err(self.refuse(invalid(), None, "anonymous", remote_addr).await);
        }
        let hash = hash_secret(token);
        let Some(stored) = self.store.call_token(&hash).await? else {
            return Err(self.refuse(invalid(), None, "anonymous", remote_addr).await);
        };
        if !constant_time_eq(&stored.token_hash, &hash) {
            return Err(self.refuse(invalid(), None, "anonymous", remote_addr).await);
        }
        let appointment = self.store.appointment(&stored.appointment_id).await?.ok_or_else(invalid)?;
        let actor = stored.role.as_str();
        let refusal = if appointment.status == CallStatus::Ended {
            Some(ApiError::new(ErrorCode::CallEnded, "this call has ended"))
        } else if stored.revoked_at_ms.is_some() {
            Some(ApiError::new(
                ErrorCode::TokenRevoked,
                "this link was replaced by a newer one: use the latest link",
            ))
        } else if stored.expires_at_ms <= self.clock.now_ms() {
            Some(ApiError::new(
                ErrorCode::TokenExpired,
                "this link has expired: ask the clinic for a new one",
            ))
        } else {
            None
        };
        if let Some(error) = refusal {
            return Err(self.refuse(error, Some(&appointment.id), actor, remote_addr).await);
        }
        Ok(Grant {
            appointment_id: appointment.id,
            room_id: appointment.room_id,
            role: stored.role,
            status: appointment.status,
            expires_at_ms: stored.expires_at_ms,
            remote_addr,
        })
    }

    /// The appointment if this doctor owns it; otherwise 404 (audited), so ids cannot be probed.
    pub async fn doctors_appointment(
        &self,
        doctor: &Doctor,
        appointment_id: &str,
        remote_addr: Option<String>,
    ) -> ApiResult<Appointment> {
        match self.store.appointment(appointment_id).await? {
            Some(a) if a.doctor_id == doctor.id => Ok(a),
            Some(a) => {
                Err(self.refuse(ApiError::appointment_not_found(), Some(&a.id), "doctor", remote_addr).await)
            }
            None => Err(ApiError::appointment_not_found()),
        }
    }
}

/// The clinic's integration system, authenticated by the API key.
pub struct Clinic;

impl FromRequestParts<crate::SharedState> for Clinic {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &crate::SharedState) -> ApiResult<Self> {
        let Some(key) = state.config.clinic_api_key.as_deref() else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the clinic API is disabled: start the server with --clinic-api-key",
            ));
        };
        let remote = remote_addr(parts);
        state.token_throttle(&remote).await?;
        match bearer(parts) {
            Some(given) if constant_time_eq(given, key) => Ok(Clinic),
            _ => {
                state.token_failed(&remote);
                let error = ApiError::new(
                    ErrorCode::Unauthorized,
                    "a valid clinic API key is required (Authorization: Bearer <key>)",
                );
                Err(state.refuse(error, None, "clinic", remote).await)
            }
        }
    }
}

/// A signed-in doctor: by web session cookie (with the CSRF header on state changes) or app token.
pub struct DoctorAuth {
    /// The doctor.
    pub doctor: Doctor,
    /// The session's CSRF token, when signed in by cookie.
    pub csrf_token: Option<String>,
}

impl DoctorAuth {
    async fn from_parts(parts: &Parts, state: &crate::SharedState) -> ApiResult<Option<DoctorAuth>> {
        if let Some(token) = bearer(parts).filter(|t| t.starts_with(DOCTOR_TOKEN_PREFIX)) {
            let remote = remote_addr(parts);
            state.token_throttle(&remote).await?;
            let doctor = state.store.doctor_by_api_token_hash(&hash_secret(token)).await?;
            return match doctor {
                Some(doctor) => Ok(Some(DoctorAuth { doctor, csrf_token: None })),
                None => {
                    state.token_failed(&remote);
                    let error = ApiError::new(ErrorCode::Unauthorized, "unknown doctor app token");
                    Err(state.refuse(error, None, "anonymous", remote).await)
                }
            };
        }
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(cookie) = jar.get(SESSION_COOKIE) else { return Ok(None) };
        let Some(session) = state.store.session(&hash_secret(cookie.value())).await? else { return Ok(None) };
        if session.expires_at_ms <= state.clock.now_ms() {
            return Ok(None);
        }
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let given = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !constant_time_eq(given, &session.csrf_token) {
                let error =
                    ApiError::new(ErrorCode::Forbidden, "missing or wrong CSRF token: reload the page");
                return Err(state.refuse(error, None, "doctor", remote_addr(parts)).await);
            }
        }
        let Some(doctor) = state.store.doctor(&session.doctor_id).await? else { return Ok(None) };
        Ok(Some(DoctorAuth { doctor, csrf_token: Some(session.csrf_token) }))
    }
}

impl FromRequestParts<crate::SharedState> for DoctorAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &crate::SharedState) -> ApiResult<Self> {
        match Self::from_parts(parts, state).await? {
            Some(auth) => Ok(auth),
            None if bearer(parts).is_some_and(|t| t.starts_with(crate::secrets::CALL_TOKEN_PREFIX)) => {
                let error = ApiError::new(
                    ErrorCode::Forbidden,
                    "a call link cannot do this: only the doctor's account can",
                );
                Err(state.refuse(error, None, "patient_or_doctor_link", remote_addr(parts)).await)
            }
            None => Err(ApiError::new(ErrorCode::Unauthorized, "sign in as a doctor first")),
        }
    }
}

/// A call participant, authenticated by a call token in `Authorization: Bearer`.
pub struct Participant(pub Grant);

impl FromRequestParts<crate::SharedState> for Participant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &crate::SharedState) -> ApiResult<Self> {
        let token = bearer(parts).unwrap_or("");
        Ok(Participant(state.validate_call_token(token, remote_addr(parts)).await?))
    }
}

/// A call token as presented, not yet checked: for requests that an open session may answer
/// without a new check (the HTTP signaling fallback's polls and posts after its join).
pub struct CallToken {
    token: String,
    remote_addr: Option<String>,
}

impl CallToken {
    /// The token's hash, the key of what was opened with it.
    pub fn hash(&self) -> String {
        hash_secret(&self.token)
    }

    /// Checks the token as [`Participant`] does (throttled, audited when refused).
    pub async fn check(&self, state: &AppState) -> ApiResult<Grant> {
        state.validate_call_token(&self.token, self.remote_addr.clone()).await
    }
}

impl FromRequestParts<crate::SharedState> for CallToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &crate::SharedState,
    ) -> Result<Self, Self::Rejection> {
        Ok(CallToken { token: bearer(parts).unwrap_or("").to_owned(), remote_addr: remote_addr(parts) })
    }
}

/// Either a signed-in doctor or a call participant, for actions both may take on an appointment.
pub enum Actor {
    /// A doctor by session or app token.
    Doctor(DoctorAuth),
    /// A participant by call token.
    Participant(Grant),
}

impl FromRequestParts<crate::SharedState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &crate::SharedState) -> ApiResult<Self> {
        if bearer(parts).is_some_and(|t| t.starts_with(crate::secrets::CALL_TOKEN_PREFIX)) {
            return Ok(Actor::Participant(Participant::from_request_parts(parts, state).await?.0));
        }
        match DoctorAuth::from_parts(parts, state).await? {
            Some(auth) => Ok(Actor::Doctor(auth)),
            None => Err(ApiError::new(ErrorCode::Unauthorized, "sign in as a doctor or present a call link")),
        }
    }
}

impl Actor {
    /// Checks that this actor may act on the appointment, and, if `doctor_only`, that it is the
    /// appointment's doctor. A participant of another appointment gets 404, a patient on a
    /// doctor-only action 403; both are audited.
    pub async fn authorize(
        &self,
        state: &AppState,
        appointment_id: &str,
        doctor_only: bool,
        remote_addr: Option<String>,
    ) -> ApiResult<(Appointment, Role)> {
        match self {
            Actor::Doctor(auth) => {
                let appointment =
                    state.doctors_appointment(&auth.doctor, appointment_id, remote_addr).await?;
                Ok((appointment, Role::Doctor))
            }
            Actor::Participant(grant) => {
                if grant.appointment_id != appointment_id {
                    let error = ApiError::appointment_not_found();
                    return Err(state
                        .refuse(error, Some(appointment_id), grant.role.as_str(), remote_addr)
                        .await);
                }
                if doctor_only && grant.role != Role::Doctor {
                    let error = ApiError::new(ErrorCode::Forbidden, "only the doctor can do this");
                    return Err(state
                        .refuse(error, Some(appointment_id), grant.role.as_str(), remote_addr)
                        .await);
                }
                let appointment = state
                    .store
                    .appointment(appointment_id)
                    .await?
                    .ok_or_else(ApiError::appointment_not_found)?;
                Ok((appointment, grant.role))
            }
        }
    }
}
