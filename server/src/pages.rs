//! The web pages: doctor sign-in/out (form posts with CSRF protection), the doctor's appointment
//! list, the call page and the device test page (static files from `web/`), and the doctor's JSON.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use televisit_protocol::ErrorCode;

use crate::assets::page;
use crate::auth::{DoctorAuth, SESSION_COOKIE};
use crate::clinic::AppointmentView;
use crate::error::{ApiError, ApiResult};
use crate::secrets::{constant_time_eq, hash_password, hash_secret, random_secret, verify_password};
use crate::store::{AuditEntry, WebSession};
use crate::SharedState;

const LOGIN_CSRF_COOKIE: &str = "televisit_login_csrf";

/// `GET /medical/appointments/{id}/video-call/`: the call page (the token is in the fragment),
/// with the clinic's contact filled in (its error screens show it, even when the server is
/// unreachable later).
pub async fn call_page(State(state): State<SharedState>) -> Response {
    match crate::assets::read(&state, "call.html").await {
        Some(body) => Html(
            String::from_utf8_lossy(&body)
                .replace(CLINIC_CONTACT_MARK, &clinic_contact_html(&state.config.clinic_contact)),
        )
        .into_response(),
        None => ApiError::internal("web page call.html is missing").into_response(),
    }
}

/// Where call.html wants the clinic's contact.
const CLINIC_CONTACT_MARK: &str = "<!--clinic-contact-->";

/// "Your clinic: phone … · e-mail …" with `tel:` and `mailto:` links, escaped.
fn clinic_contact_html(contact: &crate::config::ClinicContact) -> String {
    let dial: String = contact.phone.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect();
    format!(
        r#"{}: <a href="tel:{}">{}</a> · <a href="mailto:{}">{}</a>"#,
        escape(&contact.name),
        escape(&dial),
        escape(&contact.phone),
        escape(&contact.email),
        escape(&contact.email)
    )
}

/// `GET /medical/video-call/test-devices/`: the device test page.
pub async fn device_test_page(State(state): State<SharedState>) -> Response {
    page(&state, "test-devices.html").await
}

/// `GET /medical/appointments/`: the doctor's appointments, or the sign-in page.
pub async fn doctor_page(State(state): State<SharedState>, auth: Result<DoctorAuth, ApiError>) -> Response {
    match auth {
        Ok(_) => page(&state, "doctor.html").await,
        Err(_) => Redirect::to("/medical/login").into_response(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The sign-in page; after a refused attempt, its `problem` and the `email` typed (kept, so that
/// only the password is typed again).
fn login_form(csrf: &str, problem: Option<&str>, email: &str) -> String {
    let problem = problem
        .map(|p| format!(r#"<p class="form-error" role="alert">{}</p>"#, escape(p)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in — Televisit</title><link rel="stylesheet" href="/static/style.css"></head>
<body class="login-page"><main class="card login-card">
<h1>Televisit</h1><p>Sign in to see today's video visits.</p>{problem}
<form method="post" action="/medical/login">
<input type="hidden" name="csrf" value="{csrf}">
<label for="email">E-mail</label><input id="email" name="email" type="email" autocomplete="username" required value="{email}">
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required{focus}>
<button type="submit">Sign in</button>
</form>
<p><a href="/medical/video-call/test-devices/">Test your camera, microphone and speaker</a></p>
</main></body></html>"#,
        csrf = escape(csrf),
        email = escape(email),
        focus = if email.is_empty() { "" } else { " autofocus" },
    )
}

fn login_csrf_cookie(state: &SharedState, value: String) -> Cookie<'static> {
    Cookie::build((LOGIN_CSRF_COOKIE, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.secure_cookies)
        .path("/medical/login")
        .build()
}

/// `GET /medical/login`.
pub async fn login_page(State(state): State<SharedState>, jar: CookieJar) -> (CookieJar, Html<String>) {
    let csrf = random_secret();
    let jar = jar.add(login_csrf_cookie(&state, csrf.clone()));
    (jar, Html(login_form(&csrf, None, "")))
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    /// E-mail.
    pub email: String,
    /// Password.
    pub password: String,
    /// Double-submit CSRF value (must equal the login CSRF cookie).
    pub csrf: String,
}

fn origin_allowed(state: &SharedState, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => state.config.allowed_origins.iter().any(|a| a == origin),
        None => true,
    }
}

/// `POST /medical/login`.
pub async fn login(
    State(state): State<SharedState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Response {
    let remote = Some(addr.ip().to_string());
    let cookie_csrf = jar.get(LOGIN_CSRF_COOKIE).map(|c| c.value().to_owned()).unwrap_or_default();
    if !origin_allowed(&state, &headers)
        || cookie_csrf.is_empty()
        || !constant_time_eq(&cookie_csrf, &form.csrf)
    {
        let error = ApiError::new(ErrorCode::Forbidden, "the sign-in form expired: reload the page");
        return state.refuse(error, None, "anonymous", remote).await.into_response();
    }
    let address = remote.clone().unwrap_or_default();
    if let Err(seconds) = state.failed_sign_ins.check(&address, Instant::now()) {
        let error = ApiError::rate_limited(seconds);
        return state.refuse(error, None, "anonymous", remote).await.into_response();
    }
    let doctor = match state.store.doctor_by_email(form.email.trim()).await {
        Ok(doctor) => doctor,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // An unknown e-mail costs the same Argon2 run as a known one, so timing does not tell them apart.
    let hash =
        doctor.as_ref().and_then(|d| d.password_hash.as_deref()).unwrap_or_else(|| dummy_password_hash());
    let verified =
        verify_password(&form.password, hash) && doctor.as_ref().is_some_and(|d| d.password_hash.is_some());
    let Some(doctor) = doctor.filter(|_| verified) else {
        state.failed_sign_ins.record(&address, Instant::now());
        let error = ApiError::new(ErrorCode::Unauthorized, "wrong e-mail or password");
        state.refuse(error, None, "anonymous", remote).await;
        let csrf = random_secret();
        let jar = jar.add(login_csrf_cookie(&state, csrf.clone()));
        return (
            StatusCode::UNAUTHORIZED,
            jar,
            Html(login_form(&csrf, Some("Wrong e-mail or password."), form.email.trim())),
        )
            .into_response();
    };
    let secret = random_secret();
    let now = state.clock.now_ms();
    let session = WebSession {
        doctor_id: doctor.id.clone(),
        csrf_token: random_secret(),
        expires_at_ms: now + state.config.session_ttl_hours as i64 * 3_600_000,
    };
    if let Err(e) = state.store.create_session(&hash_secret(&secret), &session, now).await {
        return ApiError::from(e).into_response();
    }
    let entry = AuditEntry::new(now, None, "doctor", "sign_in", "", remote);
    let _ = state.store.audit(&entry).await;
    let cookie = Cookie::build((SESSION_COOKIE, secret))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.secure_cookies)
        .path("/")
        .build();
    let jar = jar.remove(Cookie::build(LOGIN_CSRF_COOKIE).path("/medical/login")).add(cookie);
    (jar, Redirect::to("/medical/appointments/")).into_response()
}

/// An Argon2 hash of no one's password, with the parameters real ones have.
fn dummy_password_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_secret()))
}

/// The sign-out form.
#[derive(Deserialize)]
pub struct LogoutForm {
    /// The session's CSRF token.
    pub csrf: String,
}

/// `POST /medical/logout`.
pub async fn logout(
    State(state): State<SharedState>,
    jar: CookieJar,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some(cookie) = jar.get(SESSION_COOKIE) {
        let hash = hash_secret(cookie.value());
        if let Ok(Some(session)) = state.store.session(&hash).await {
            if !constant_time_eq(&session.csrf_token, &form.csrf) {
                return ApiError::new(ErrorCode::Forbidden, "wrong CSRF token: reload the page")
                    .into_response();
            }
            let _ = state.store.delete_session(&hash).await;
        }
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    (jar, Redirect::to("/medical/login")).into_response()
}

/// Reply of `GET /api/doctor/me`.
#[derive(Serialize)]
pub struct Me {
    /// Doctor id.
    pub id: String,
    /// Name.
    pub display_name: String,
    /// CSRF token to send as `X-CSRF-Token` (web sessions only).
    pub csrf_token: Option<String>,
}

/// `GET /api/doctor/me`.
pub async fn me(auth: DoctorAuth) -> Json<Me> {
    Json(Me { id: auth.doctor.id, display_name: auth.doctor.display_name, csrf_token: auth.csrf_token })
}

/// Window of `GET /api/doctor/appointments`.
#[derive(Deserialize)]
pub struct Window {
    /// From, ms since the Unix epoch [default: 12 hours ago].
    pub from_ms: Option<i64>,
    /// To, ms since the Unix epoch [default: 36 hours from now].
    pub to_ms: Option<i64>,
}

/// One row of the doctor's list.
#[derive(Serialize, Deserialize)]
pub struct DoctorAppointment {
    /// The appointment.
    #[serde(flatten)]
    pub appointment: AppointmentView,
    /// The patient's name (shown to the doctor only).
    pub patient_name: String,
    /// The patient is connected to the call now (in the waiting room or in the call).
    pub patient_present: bool,
    /// The doctor is connected to the call now.
    pub doctor_present: bool,
    /// The doctor's waiting-room status, shown to the patient while she waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_message: Option<String>,
}

/// `GET /api/doctor/appointments`: the signed-in doctor's appointments in a window (today's by default).
pub async fn doctor_appointments(
    State(state): State<SharedState>,
    auth: DoctorAuth,
    Query(window): Query<Window>,
) -> ApiResult<Json<Vec<DoctorAppointment>>> {
    let now = state.clock.now_ms();
    let from = window.from_ms.unwrap_or(now - 12 * 3_600_000);
    let to = window.to_ms.unwrap_or(now + 36 * 3_600_000);
    let rows = state.store.doctor_appointments(&auth.doctor.id, from, to).await?;
    let mut appointments = Vec::with_capacity(rows.len());
    for row in rows {
        let (doctor_present, patient_present) = state.hub.presence(&row.appointment.id).await;
        let waiting_message = state.hub.waiting_message(&row.appointment.id).await;
        appointments.push(DoctorAppointment {
            appointment: row.appointment.into(),
            patient_name: row.patient_name,
            patient_present,
            doctor_present,
            waiting_message,
        });
    }
    Ok(Json(appointments))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClinicContact;

    #[test]
    fn the_clinic_contact_is_escaped_and_dialable() {
        let contact = ClinicContact {
            name: "Dr <Who> & \"Co\"".into(),
            phone: "+44 (20) 7946-0000".into(),
            email: "desk@harbour.example\"><script>".into(),
        };
        let html = clinic_contact_html(&contact);
        assert!(html.starts_with("Dr &lt;Who&gt; &amp; &quot;Co&quot;: "), "{html}");
        assert!(html.contains(r#"<a href="tel:+442079460000">+44 (20) 7946-0000</a>"#), "{html}");
        assert!(!html.contains("<script>") && html.contains("&quot;&gt;&lt;script&gt;"), "{html}");
    }
}
