//! The HTTP fallback for networks that block WebSockets: `POST /api/video-call/signal` sends one
//! client frame (the first must be `join`), `GET /api/video-call/signal?after=N` long-polls for the
//! server's frames. Both carry the call token in `Authorization: Bearer`. A participant that stops
//! polling for the idle timeout is disconnected, like an idle WebSocket.
//!
//! The token is checked in full when it joins. After that the open session answers to it (found by
//! the token's hash) the way an open WebSocket does: it outlives the call's end and the token's
//! expiry, so the client can still fetch the last frames (the `call-ended` that closed it) instead of
//! being refused with `call_ended` before it heard who ended the call.

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
use crate::auth::CallToken;
use crate::error::{ApiError, ApiResult};
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

impl HttpSessions {
    /// The open session of this token, if it joined.
    fn of(&self, token: &CallToken) -> Option<Arc<HttpSession>> {
        self.sessions.lock().expect("sessions lock").get(&token.hash()).cloned()
    }
}

/// The answer to a token without an open session: the token's own refusal (invalid, expired, the
/// call ended) if it has one, else `not_joined`.
async fn no_session(state: &SharedState, token: &CallToken) -> ApiError {
    match token.check(state).await {
        Err(refusal) => refusal,
        Ok(_) => ApiError::new(ErrorCode::NotJoined, "send a join frame first"),
    }
}

/// `POST /api/video-call/signal`: one client frame as the JSON body.
pub async fn post(
    State(state): State<SharedState>,
    token: CallToken,
    body: String,
) -> ApiResult<Json<serde_json::Value>> {
    let open = state.http_sessions.of(&token);
    // Without an open session the token is checked before the frame is even parsed.
    let checked = match open {
        None => Some(token.check(&state).await?),
        Some(_) => None,
    };
    let frame = decode_client_frame(&body).map_err(|e| ApiError::new(e.code, e.message))?;
    if let ClientMessage::Join { resume, .. } = frame.message {
        // A (re)join is a new connection: the token must still admit one.
        let grant = match checked {
            Some(grant) => grant,
            None => token.check(&state).await?,
        };
        let key = token.hash();
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
    let Some(session) = open else {
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
    token: CallToken,
    Query(query): Query<PollQuery>,
) -> ApiResult<Json<SignalPollResponse>> {
    let Some(session) = state.http_sessions.of(&token) else {
        return Err(no_session(&state, &token).await);
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
