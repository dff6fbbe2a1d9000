//! The HTTP fallback for networks that block WebSockets: `POST /api/video-call/signal` sends one
//! client frame (the first must be `join`), `GET /api/video-call/signal?after=N` long-polls for the
//! server's frames. Both carry the call token in `Authorization: Bearer`. A participant that stops
//! polling for the idle timeout is disconnected, like an idle WebSocket.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use televisit_core::api::SignalPollResponse;
use televisit_core::protocol::{decode_client_frame, encode, ClientMessage, ErrorCode, Frame, ServerMessage};
use tokio::sync::Notify;

use super::hub::{Grant, Outgoing};
use super::rate_limit::TokenBucket;
use crate::auth::Participant;
use crate::error::{ApiError, ApiResult};
use crate::secrets::hash_secret;
use crate::SharedState;

/// Longest a poll waits for a frame.
const LONG_POLL: Duration = Duration::from_secs(20);

/// The fallback participants, by token hash.
#[derive(Default)]
pub struct HttpSessions {
    sessions: Mutex<HashMap<String, Arc<HttpSession>>>,
}

struct HttpSession {
    grant: Grant,
    conn_id: u64,
    mailbox: Mutex<Mailbox>,
    notify: Notify,
    last_seen: Mutex<Instant>,
    bucket: Mutex<TokenBucket>,
}

#[derive(Default)]
struct Mailbox {
    next_cursor: u64,
    frames: VecDeque<(u64, String)>,
    closed: bool,
}

impl HttpSession {
    fn push(&self, text: String, closed: bool) {
        let mut mailbox = self.mailbox.lock().expect("mailbox lock");
        mailbox.next_cursor += 1;
        let cursor = mailbox.next_cursor;
        mailbox.frames.push_back((cursor, text));
        mailbox.closed |= closed;
        drop(mailbox);
        self.notify.notify_waiters();
    }

    /// Ends the session without a last frame (a normal end: the participant left).
    fn close(&self) {
        self.mailbox.lock().expect("mailbox lock").closed = true;
        self.notify.notify_waiters();
    }

    /// Drops acknowledged frames and returns the rest.
    fn take_after(&self, after: u64) -> (Vec<serde_json::Value>, u64, bool) {
        let mut mailbox = self.mailbox.lock().expect("mailbox lock");
        while mailbox.frames.front().is_some_and(|(cursor, _)| *cursor <= after) {
            mailbox.frames.pop_front();
        }
        let frames = mailbox.frames.iter().filter_map(|(_, text)| serde_json::from_str(text).ok()).collect();
        (frames, mailbox.next_cursor, mailbox.closed)
    }
}

fn bearer_hash(headers: &axum::http::HeaderMap) -> String {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    hash_secret(token.trim())
}

/// `POST /api/video-call/signal`: one client frame as the JSON body.
pub async fn post(
    State(state): State<SharedState>,
    headers: axum::http::HeaderMap,
    Participant(grant): Participant,
    body: String,
) -> ApiResult<Json<serde_json::Value>> {
    let frame = decode_client_frame(&body).map_err(|e| ApiError::new(e.code, e.message))?;
    let key = bearer_hash(&headers);
    if let ClientMessage::Join { resume, .. } = frame.message {
        let old = state.http_sessions.sessions.lock().expect("sessions lock").remove(&key);
        if let Some(old) = old {
            state.hub.disconnect(&old.grant, old.conn_id).await;
        }
        let mut connection = state.hub.connect(&grant, resume.map(|r| r.last_seq)).await?;
        let session = Arc::new(HttpSession {
            grant,
            conn_id: connection.id,
            mailbox: Mutex::default(),
            notify: Notify::new(),
            last_seen: Mutex::new(Instant::now()),
            bucket: Mutex::new(TokenBucket::new(
                state.config.frames_per_second,
                state.config.frame_burst,
                Instant::now(),
            )),
        });
        state.http_sessions.sessions.lock().expect("sessions lock").insert(key.clone(), Arc::clone(&session));
        let pump = Arc::clone(&session);
        tokio::spawn(async move {
            while let Some(outgoing) = connection.outgoing.recv().await {
                match outgoing {
                    Outgoing::Text(text) => pump.push(text, false),
                    Outgoing::Close { code, message } => {
                        pump.push(encode(&Frame::new(ServerMessage::Error { code, message })), true);
                        return;
                    }
                    Outgoing::CloseNormally => {
                        pump.close();
                        return;
                    }
                }
            }
        });
        spawn_idle_reaper(state.clone(), key, session);
        return Ok(Json(serde_json::json!({ "ok": true })));
    }
    let session = state.http_sessions.sessions.lock().expect("sessions lock").get(&key).cloned();
    let Some(session) = session else {
        return Err(ApiError::new(ErrorCode::NotJoined, "send a join frame first"));
    };
    *session.last_seen.lock().expect("last_seen lock") = Instant::now();
    if !session.bucket.lock().expect("bucket lock").try_take(Instant::now()) {
        state.metrics.refused(ErrorCode::RateLimited);
        return Err(ApiError::new(ErrorCode::RateLimited, "too many frames: slow down"));
    }
    if let ClientMessage::Ping = frame.message {
        return Ok(Json(serde_json::json!({ "type": "pong" })));
    }
    state.hub.frame(&session.grant, session.conn_id, frame).await;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// How long a closed session waits for the client to fetch its last frames.
const CLOSED_GRACE: Duration = Duration::from_secs(5);

fn spawn_idle_reaper(state: SharedState, key: String, session: Arc<HttpSession>) {
    let idle = Duration::from_secs(state.config.idle_timeout_seconds.max(1));
    tokio::spawn(async move {
        let mut closed_at: Option<Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let last_seen = *session.last_seen.lock().expect("last_seen lock");
            // A closed session stays until the client polled its last frames (the call's end,
            // the reason it was closed), or a few seconds passed: nothing is lost at the end.
            let closed = {
                let mailbox = session.mailbox.lock().expect("mailbox lock");
                mailbox.closed && {
                    let since = *closed_at.get_or_insert_with(Instant::now);
                    mailbox.frames.is_empty() || since.elapsed() > CLOSED_GRACE
                }
            };
            let current = {
                let sessions = state.http_sessions.sessions.lock().expect("sessions lock");
                sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, &session))
            };
            if !current {
                return; // replaced by a new join; that one has its own reaper
            }
            if closed || last_seen.elapsed() > idle {
                state.http_sessions.sessions.lock().expect("sessions lock").remove(&key);
                state.hub.disconnect(&session.grant, session.conn_id).await;
                return;
            }
        }
    });
}

/// Query of the long poll.
#[derive(Deserialize)]
pub struct PollQuery {
    /// The cursor of the last frame received (0 at first).
    #[serde(default)]
    pub after: u64,
}

/// `GET /api/video-call/signal?after=N`: frames after cursor N, waiting up to 20 s for one.
pub async fn poll(
    State(state): State<SharedState>,
    headers: axum::http::HeaderMap,
    Participant(_grant): Participant,
    Query(query): Query<PollQuery>,
) -> ApiResult<Json<SignalPollResponse>> {
    let key = bearer_hash(&headers);
    let session = state.http_sessions.sessions.lock().expect("sessions lock").get(&key).cloned();
    let Some(session) = session else {
        return Err(ApiError::new(ErrorCode::NotJoined, "send a join frame first"));
    };
    *session.last_seen.lock().expect("last_seen lock") = Instant::now();
    let deadline = tokio::time::Instant::now()
        + LONG_POLL.min(Duration::from_secs(state.config.idle_timeout_seconds.max(2) / 2));
    loop {
        let notified = session.notify.notified();
        let (frames, cursor, closed) = session.take_after(query.after);
        if !frames.is_empty() || closed || tokio::time::Instant::now() >= deadline {
            *session.last_seen.lock().expect("last_seen lock") = Instant::now();
            return Ok(Json(SignalPollResponse { frames, cursor }));
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}
