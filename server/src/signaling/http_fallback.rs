//! The HTTP fallback for networks that block WebSockets: `POST /api/video-call/signal` sends one
//! client frame (the first must be `join`), `GET /api/video-call/signal?after=N` long-polls for the
//! server's frames. Both carry the call token in `Authorization: Bearer`. A participant that stops
//! polling for the idle timeout is disconnected, like an idle WebSocket.
//!
//! The token is checked in full when it joins. After that the open session answers to it (found by
//! the token's hash) the way an open WebSocket does: it outlives the call's end and the token's
//! expiry, so the client can still fetch the last frames (the `call-ended` that closed it) instead of
//! being refused with `call_ended` before it heard who ended the call.
//!
//! With Redis (`--redis-url`) the sessions live there instead ([`SharedMailboxes`]): a poll or post
//! is answered by whichever node it reaches, and a session whose node died goes on from the node
//! the client polls next, resuming the room's connection after the last frame its mailbox has.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use televisit_protocol::api::SignalPollResponse;
use televisit_protocol::{decode_client_frame, encode, ClientMessage, ErrorCode, Frame, ServerMessage};
use tokio::sync::Notify;

use super::hub::{Connection, Grant, Outgoing, OUTBOX_FRAMES};
use super::rate_limit::TokenBucket;
use super::room::ConnId;
use super::shared_mailbox::{Pushed, Record, SharedMailboxes};
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
    /// Puts a frame in the mailbox; `false` (and the frame left out) when the mailbox already
    /// holds [`OUTBOX_FRAMES`] the client has not fetched: it is too slow, as a WebSocket whose
    /// outbox is full, and the session ends (the frame stays in the room's replay buffer).
    fn push(&self, text: String, closed: bool) -> bool {
        let mut mailbox = self.mailbox.lock().expect("mailbox lock");
        if mailbox.frames.len() >= OUTBOX_FRAMES {
            return false;
        }
        mailbox.next_cursor += 1;
        let cursor = mailbox.next_cursor;
        mailbox.frames.push_back((cursor, text));
        mailbox.closed |= closed;
        drop(mailbox);
        self.notify.notify_waiters();
        true
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
    if state.hub.shared().is_some() {
        return post_shared(&state, &token, &body).await;
    }
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
            bucket: Mutex::new(new_bucket(&state)),
        });
        state.http_sessions.sessions.lock().expect("sessions lock").insert(key.clone(), Arc::clone(&session));
        let pump = Arc::clone(&session);
        tokio::spawn(async move {
            while let Some(outgoing) = connection.outgoing.recv().await {
                let (text, closes) = mailbox_entry(outgoing);
                let kept = text.is_empty() || pump.push(text, closes);
                if closes || !kept {
                    break;
                }
            }
            // Closed, the mailbox full, or the connection dropped by the hub: the session ends
            // once the client fetched what the mailbox holds (the reaper then disconnects it, and
            // the room runs the grace period); the client joins again and resumes from its last
            // frame.
            pump.close();
        });
        spawn_idle_reaper(state.clone(), key, session);
        return Ok(Json(serde_json::json!({ "ok": true })));
    }
    let Some(session) = open else {
        return Err(ApiError::new(ErrorCode::NotJoined, "send a join frame first"));
    };
    *session.last_seen.lock().expect("last_seen lock") = Instant::now();
    if !session.bucket.lock().expect("bucket lock").try_take(Instant::now()) {
        return Err(rate_limited(&state));
    }
    if let ClientMessage::Ping = frame.message {
        return Ok(Json(serde_json::json!({ "type": "pong" })));
    }
    state.hub.frame(&session.grant, session.conn_id, frame).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// What a connection's outgoing frame leaves in a fallback mailbox, in process or in Redis: the
/// frame's text (empty: none) and whether the session ends with it.
fn mailbox_entry(outgoing: Outgoing) -> (String, bool) {
    match outgoing {
        Outgoing::Text(text) | Outgoing::Numbered { text, .. } => (text, false),
        Outgoing::Close { code, message } => {
            (encode(&Frame::new(ServerMessage::Error { code, message })), true)
        }
        Outgoing::CloseNormally => (String::new(), true),
    }
}

fn new_bucket(state: &SharedState) -> TokenBucket {
    TokenBucket::new(state.config.frames_per_second, state.config.frame_burst, Instant::now())
}

fn rate_limited(state: &SharedState) -> ApiError {
    state.metrics.refused(ErrorCode::RateLimited);
    ApiError::new(ErrorCode::RateLimited, "too many frames: slow down")
}

/// When a long poll answers without frames.
fn poll_deadline(state: &SharedState) -> tokio::time::Instant {
    tokio::time::Instant::now()
        + LONG_POLL.min(Duration::from_secs(state.config.idle_timeout_seconds.max(2) / 2))
}

/// How long a closed session waits for the client to fetch its last frames.
const CLOSED_GRACE: Duration = Duration::from_secs(5);

/// When a reaper lets a closed session go: once the client fetched its last frames (the call's
/// end, the reason it was closed), or [`CLOSED_GRACE`] after the reaper saw it closed, so that
/// nothing is lost at the end.
#[derive(Default)]
struct ClosedSince(Option<Instant>);

impl ClosedSince {
    /// The session is closed: whether it can go now, `fetched` saying its mailbox is empty.
    fn over(&mut self, fetched: bool) -> bool {
        let since = *self.0.get_or_insert_with(Instant::now);
        fetched || since.elapsed() > CLOSED_GRACE
    }
}

fn spawn_idle_reaper(state: SharedState, key: String, session: Arc<HttpSession>) {
    let idle = Duration::from_secs(state.config.idle_timeout_seconds.max(1));
    tokio::spawn(async move {
        let mut closed_since = ClosedSince::default();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let last_seen = *session.last_seen.lock().expect("last_seen lock");
            let closed = {
                let mailbox = session.mailbox.lock().expect("mailbox lock");
                mailbox.closed && closed_since.over(mailbox.frames.is_empty())
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
    if state.hub.shared().is_some() {
        return poll_shared(&state, &token, query.after).await;
    }
    let Some(session) = state.http_sessions.of(&token) else {
        return Err(no_session(&state, &token).await);
    };
    *session.last_seen.lock().expect("last_seen lock") = Instant::now();
    let deadline = poll_deadline(&state);
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

fn shared(state: &SharedState) -> SharedMailboxes<'_> {
    SharedMailboxes::new(state.hub.shared().expect("called with Redis only"))
}

fn unavailable(e: redis::RedisError) -> ApiError {
    tracing::error!(error = %e, "Redis: a fallback session operation failed");
    ApiError::new(ErrorCode::Internal, "signaling is unavailable; try again")
}

/// `POST` with Redis: as [`post`], the session found in Redis by whichever node this is.
async fn post_shared(
    state: &SharedState,
    token: &CallToken,
    body: &str,
) -> ApiResult<Json<serde_json::Value>> {
    let key = token.hash();
    let open = shared(state).load(&key).await.map_err(unavailable)?;
    let checked = match open {
        None => Some(token.check(state).await?),
        Some(_) => None,
    };
    let frame = decode_client_frame(body).map_err(|e| ApiError::new(e.code, e.message))?;
    if let ClientMessage::Join { resume, .. } = frame.message {
        let grant = match checked {
            Some(grant) => grant,
            None => token.check(state).await?,
        };
        if let Some(old) = open {
            state.hub.disconnect(&old.grant, old.conn).await;
        }
        let resume_from = resume.map(|r| r.last_seq);
        let connection = state.hub.connect(&grant, resume_from).await?;
        let opened = shared(state).open(&key, &grant, connection.id, resume_from, state.clock.now_ms()).await;
        if let Err(e) = opened {
            state.hub.disconnect(&grant, connection.id).await;
            return Err(unavailable(e));
        }
        own_shared_session(state, key, grant, connection);
        return Ok(Json(serde_json::json!({ "ok": true })));
    }
    let Some(record) = open else {
        return Err(ApiError::new(ErrorCode::NotJoined, "send a join frame first"));
    };
    let record = continue_shared_session(state, &key, record).await?;
    let (per_second, burst) = (state.config.frames_per_second, state.config.frame_burst);
    if !shared(state).post(&key, state.clock.now_ms(), per_second, burst).await.map_err(unavailable)? {
        return Err(rate_limited(state));
    }
    if let ClientMessage::Ping = frame.message {
        return Ok(Json(serde_json::json!({ "type": "pong" })));
    }
    // Refused (Redis failed): the client hears it and joins again, rather than the frame being
    // lost without a word on a node that does not hold the connection.
    state.hub.frame(&record.grant, record.conn, frame).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// The session as it is, or, when its node died, taken over by this one: the room's connection
/// resumes after the last frame in the mailbox, whose copy goes on from here.
async fn continue_shared_session(state: &SharedState, key: &str, record: Record) -> ApiResult<Record> {
    let mailboxes = shared(state);
    if record.closed || mailboxes.owner_alive(record.conn).await.map_err(unavailable)? {
        return Ok(record);
    }
    if !mailboxes.lock_takeover(key).await.map_err(unavailable)? {
        return Ok(record); // another node is taking it over
    }
    let connection = state.hub.connect(&record.grant, record.last_seq).await?;
    let conn = connection.id;
    if !mailboxes.move_to(key, record.conn, conn).await.map_err(unavailable)? {
        // A new join replaced the session meanwhile.
        state.hub.disconnect(&record.grant, conn).await;
        return Ok(record);
    }
    tracing::info!(node = super::shared::node_of(conn), "a fallback session whose node died goes on here");
    own_shared_session(state, key.to_owned(), record.grant.clone(), connection);
    Ok(Record { conn, ..record })
}

/// Runs a shared session's connection on this node: copies its frames into the mailbox in Redis,
/// and ends it when it closes, goes idle, or moves on (a new join, a takeover).
fn own_shared_session(state: &SharedState, key: String, grant: Grant, mut connection: Connection) {
    let conn = connection.id;
    let (pump_state, pump_key) = (state.clone(), key.clone());
    tokio::spawn(async move {
        while let Some(outgoing) = connection.outgoing.recv().await {
            let (text, closed) = mailbox_entry(outgoing);
            let seq = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|f| f["seq"].as_u64());
            // Redis failing: the frame is copied again until it answers (later frames wait in the
            // connection's queue; if it fills, the hub drops the connection).
            loop {
                match shared(&pump_state).push(&pump_key, conn, &text, seq, closed).await {
                    Ok(Pushed::Kept) => break,
                    // The session moved on, or it closed as too slow (the reaper ends it).
                    Ok(Pushed::MovedOn | Pushed::Full) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "Redis: a fallback frame not copied; trying again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            if closed {
                return;
            }
        }
        // The hub dropped the connection (too slow): the session ends as at a full mailbox.
        if let Err(e) = shared(&pump_state).push(&pump_key, conn, "", None, true).await {
            tracing::warn!(error = %e, "Redis: a dropped fallback session not marked closed");
        }
    });
    spawn_shared_reaper(state.clone(), key, grant, conn);
}

/// The owner's reaper of a shared session: as [`spawn_idle_reaper`], with the client's last visit
/// (to any node) read from Redis.
fn spawn_shared_reaper(state: SharedState, key: String, grant: Grant, conn: ConnId) {
    let idle_ms = state.config.idle_timeout_seconds.max(1) as i64 * 1000;
    tokio::spawn(async move {
        let mut closed_since = ClosedSince::default();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mailboxes = shared(&state);
            let record = match mailboxes.load(&key).await {
                Ok(record) => record,
                Err(_) => continue,
            };
            let Some(record) = record.filter(|record| record.conn == conn) else {
                // Replaced by a new join or taken over: the connection here is no longer the room's.
                state.hub.disconnect(&grant, conn).await;
                return;
            };
            let closed =
                record.closed && closed_since.over(mailboxes.waiting(&key).await.is_ok_and(|n| n == 0));
            if closed || state.clock.now_ms() - record.seen_ms > idle_ms {
                if mailboxes.remove(&key, conn).await.is_err() {
                    continue;
                }
                state.hub.disconnect(&grant, conn).await;
                return;
            }
        }
    });
}

/// The long poll with Redis: as [`poll`], from the mailbox in Redis, on whichever node this is.
async fn poll_shared(
    state: &SharedState,
    token: &CallToken,
    after: u64,
) -> ApiResult<Json<SignalPollResponse>> {
    let key = token.hash();
    let mailboxes = shared(state);
    let Some(record) = mailboxes.load(&key).await.map_err(unavailable)? else {
        return Err(no_session(state, token).await);
    };
    continue_shared_session(state, &key, record).await?;
    mailboxes.touch(&key, state.clock.now_ms()).await.map_err(unavailable)?;
    let deadline = poll_deadline(state);
    let mut own = None;
    loop {
        let (frames, cursor, closed) = mailboxes.take_after(&key, after).await.map_err(unavailable)?;
        if !frames.is_empty() || closed || tokio::time::Instant::now() >= deadline {
            mailboxes.touch(&key, state.clock.now_ms()).await.map_err(unavailable)?;
            return Ok(Json(SignalPollResponse { frames, cursor }));
        }
        let connection = match &mut own {
            Some(connection) => connection,
            None => own.insert(mailboxes.waiting_connection().await.map_err(unavailable)?),
        };
        if let Err(e) = mailboxes.wait_after(connection, &key, after).await {
            // Looked at again at once: a Redis that is really gone fails the next read.
            tracing::warn!(error = %e, "Redis: waiting for fallback frames failed");
            own = None;
        }
        // While the client waits, the owner may die: the session goes on from here.
        match mailboxes.load(&key).await.map_err(unavailable)? {
            Some(record) => _ = continue_shared_session(state, &key, record).await?,
            None => return Ok(Json(SignalPollResponse { frames: Vec::new(), cursor: after })),
        }
    }
}
