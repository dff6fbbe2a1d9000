//! The signaling WebSocket: origin check, authentication by the first `join` frame (or the
//! `token.<token>` subprotocol), then frames in and out until the call ends or the client goes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use televisit_protocol::{
    decode_client_frame, encode, ClientMessage, ErrorCode, Frame, ServerMessage, MAX_FRAME_BYTES,
    WEBSOCKET_SUBPROTOCOL,
};
use tokio::sync::mpsc;

use super::hub::{Grant, Outgoing};
use super::rate_limit::TokenBucket;
use crate::error::ApiError;
use crate::SharedState;

/// How long a new connection may take to send `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames above this size are not even read (the connection closes); frames between
/// [`MAX_FRAME_BYTES`] and this get an `error` frame and the connection goes on.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;

/// While numbered frames flow, how often the writer pings with the last `seq` it wrote: the
/// client's pong (sent by its WebSocket stack, no app code) confirms it has every frame up to
/// that one, and the room lets go of their copies kept for a resume. Without it a room would keep
/// its whole replay budget for the whole call.
const DELIVERY_PING: Duration = Duration::from_secs(2);

/// With Redis, a connection's frames read before the earlier ones are applied (each waits for its
/// room's commit); past this many the socket is not read until they are.
const FRAMES_IN_FLIGHT: usize = 32;

/// The rest of a frame's handling, once its input has its place in the room's queue.
type Handling = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Prefix of a token offered as a WebSocket subprotocol.
const TOKEN_PROTOCOL_PREFIX: &str = "token.";

/// `GET /api/video-call/ws`.
pub async fn upgrade(
    State(state): State<SharedState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let remote = Some(addr.ip().to_string());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        if !state.config.allowed_origins.iter().any(|allowed| allowed == origin) {
            let error =
                ApiError::new(ErrorCode::OriginNotAllowed, "this page's origin may not open the call");
            return state.refuse(error, None, "anonymous", remote).await.into_response();
        }
    }
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect();
    let header_token = offered.iter().find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX)).map(str::to_owned);
    // With the token in the header, refuse before upgrading: the client sees the HTTP error.
    let grant = match header_token {
        Some(token) => match state.validate_call_token(&token, remote.clone()).await {
            Ok(grant) => Some(grant),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    // Signaling frames are small: tungstenite's default 128 KiB buffers per socket would be most of
    // a connection's memory (measured by the signaling_hub benchmark). Frames queued together are
    // written out together (`write_frames` flushes), up to 4 KiB at a time.
    ws.protocols([WEBSOCKET_SUBPROTOCOL])
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(2 * HARD_FRAME_LIMIT)
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| run(state, socket, grant, remote))
}

fn text(message: &ServerMessage) -> Message {
    Message::Text(encode(&Frame::new(message.clone())).into())
}

fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error { code, message: message.into() }
}

async fn close(socket: &mut WebSocket, code: ErrorCode, message: &str) {
    let _ = socket.send(text(&error(code, message))).await;
    let frame = CloseFrame { code: close_code(code), reason: code.as_str().into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// WebSocket close codes: 1000 for a normal end, 4000+ for Televisit's reasons.
fn close_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::CallEnded => 1000,
        ErrorCode::Replaced => 4001,
        ErrorCode::IdleTimeout => 4002,
        ErrorCode::InvalidToken | ErrorCode::TokenExpired | ErrorCode::TokenRevoked => 4003,
        _ => 4000,
    }
}

/// Waits for the `join` frame; answers errors for anything else, as the protocol says.
async fn await_join(
    state: &SharedState,
    socket: &mut WebSocket,
    header_grant: Option<Grant>,
    remote: &Option<String>,
) -> Option<(Grant, Option<u64>)> {
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Ok(Some(Ok(message))) => message,
            Ok(_) => return None,
            Err(_) => {
                close(socket, ErrorCode::NotJoined, "no join frame within 10 seconds").await;
                return None;
            }
        };
        let Message::Text(body) = message else { continue };
        let frame = match decode_client_frame(body.as_str()) {
            Ok(frame) => frame,
            Err(e) => {
                let _ = socket.send(text(&error(e.code, e.message))).await;
                continue;
            }
        };
        let ClientMessage::Join { token, resume } = frame.message else {
            let _ = socket.send(text(&error(ErrorCode::NotJoined, "send join with your token first"))).await;
            continue;
        };
        let grant = match (&header_grant, token) {
            (Some(grant), _) => grant.clone(),
            (None, Some(token)) => match state.validate_call_token(&token, remote.clone()).await {
                Ok(grant) => grant,
                Err(e) => {
                    close(socket, e.code, &e.message).await;
                    return None;
                }
            },
            (None, None) => {
                let _ = socket.send(text(&error(ErrorCode::InvalidToken, "join needs a token"))).await;
                continue;
            }
        };
        return Some((grant, resume.map(|r| r.last_seq)));
    }
}

async fn run(state: SharedState, mut socket: WebSocket, header_grant: Option<Grant>, remote: Option<String>) {
    let Some((grant, resume_from)) = await_join(&state, &mut socket, header_grant, &remote).await else {
        return;
    };
    let connection = match state.hub.connect(&grant, resume_from).await {
        Ok(connection) => connection,
        Err(e) => return close(&mut socket, e.code, &e.message).await,
    };
    let conn_id = connection.id;
    let (sink, stream) = socket.split();
    let pinged = Arc::new(AtomicU64::new(0));
    let keepalive = Duration::from_secs(state.config.keepalive_seconds.max(1));
    let writer = tokio::spawn(write_frames(sink, connection.outgoing, keepalive, pinged.clone()));
    read_frames(&state, stream, &grant, conn_id, connection.reply, &pinged).await;
    state.hub.disconnect(&grant, conn_id).await;
    // The hub dropped its sender (the reply sender is weak): the writer ends after the last frame.
    let _ = writer.await;
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Most queued frames written out together (one write to the socket instead of one per frame).
const FRAMES_PER_WRITE: usize = 32;

/// Writes the queued frames out, in batches, and pings: every `keepalive`, and every
/// [`DELIVERY_PING`] while numbered frames flow, with the last `seq` written (stored in `pinged`).
async fn write_frames(
    mut sink: Sink,
    mut outgoing: mpsc::Receiver<Outgoing>,
    keepalive: Duration,
    pinged: Arc<AtomicU64>,
) {
    let every = DELIVERY_PING.min(keepalive);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    // A keep-alive ping goes out every this many ticks, whether frames flowed or not.
    let keepalive_ticks = (keepalive.as_millis() / every.as_millis()).max(1);
    let (mut written, mut quiet_ticks) = (0, 0);
    loop {
        tokio::select! {
            next = outgoing.recv() => {
                let (mut next, mut fed) = (next, 0);
                loop {
                    if let Some(Outgoing::Numbered { seq, .. }) = &next {
                        written = *seq;
                    }
                    if !feed(&mut sink, next).await {
                        return;
                    }
                    fed += 1;
                    if fed == FRAMES_PER_WRITE {
                        break;
                    }
                    match outgoing.try_recv() {
                        Ok(more) => next = Some(more),
                        Err(_) => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            },
            _ = tick.tick() => {
                quiet_ticks += 1;
                if written > pinged.load(Ordering::Relaxed) || quiet_ticks >= keepalive_ticks {
                    pinged.store(written, Ordering::Relaxed);
                    quiet_ticks = 0;
                    let payload = written.to_be_bytes().to_vec();
                    if sink.send(Message::Ping(payload.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Buffers one queued frame for the client (a close is written out at once); `false` once the
/// connection is done.
async fn feed(sink: &mut Sink, next: Option<Outgoing>) -> bool {
    match next {
        Some(Outgoing::Text(body) | Outgoing::Numbered { text: body, .. }) => {
            sink.feed(Message::Text(body.into())).await.is_ok()
        }
        Some(Outgoing::Close { code, message }) => {
            let _ = sink.feed(text(&error(code, message))).await;
            let frame = CloseFrame { code: close_code(code), reason: code.as_str().into() };
            let _ = sink.send(Message::Close(Some(frame))).await;
            false
        }
        Some(Outgoing::CloseNormally) => {
            let frame = CloseFrame { code: 1000, reason: "left".into() };
            let _ = sink.send(Message::Close(Some(frame))).await;
            false
        }
        None => {
            let _ = sink.send(Message::Close(None)).await;
            false
        }
    }
}

async fn read_frames(
    state: &SharedState,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    grant: &Grant,
    conn_id: u64,
    reply: mpsc::WeakSender<Outgoing>,
    pinged: &AtomicU64,
) {
    // The highest seq a pong confirmed; a pong counts only for a seq the writer pinged with.
    let mut confirmed = 0;
    let idle = Duration::from_secs(state.config.idle_timeout_seconds.max(1));
    let mut bucket =
        TokenBucket::new(state.config.frames_per_second, state.config.frame_burst, Instant::now());
    let reply_with = |outgoing: Outgoing| {
        if let Some(reply) = reply.upgrade() {
            let _ = reply.try_send(outgoing);
        }
    };
    let send_error = |code: ErrorCode, message: String| {
        reply_with(Outgoing::Text(encode(&Frame::new(error(code, message)))));
    };
    // With Redis, a frame waits for its room's commit (and its room's owner may be another node):
    // the next frames are read meanwhile, and each frame's handling is finished, in order, here.
    let in_flight = state.hub.shared().is_some().then(|| {
        let (in_flight, mut finishing) = mpsc::channel::<Handling>(FRAMES_IN_FLIGHT);
        tokio::spawn(async move {
            while let Some(handling) = finishing.recv().await {
                handling.await;
            }
        });
        in_flight
    });
    loop {
        let message = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(_) => return,
            Err(_) => {
                let message = format!("no frame for {} seconds", idle.as_secs());
                reply_with(Outgoing::Close { code: ErrorCode::IdleTimeout, message });
                return;
            }
        };
        let body = match message {
            Message::Text(body) => body,
            Message::Binary(_) => {
                send_error(ErrorCode::Malformed, "frames are JSON text, not binary".into());
                continue;
            }
            Message::Close(_) => return,
            Message::Pong(payload) => {
                let through = <[u8; 8]>::try_from(payload.as_ref()).ok().map(u64::from_be_bytes);
                if let Some(through) = through
                    .filter(|through| *through > confirmed && *through <= pinged.load(Ordering::Relaxed))
                {
                    confirmed = through;
                    state.hub.delivered(grant, conn_id, through).await;
                }
                continue;
            }
            Message::Ping(_) => continue,
        };
        if !bucket.try_take(Instant::now()) {
            state.metrics.refused(ErrorCode::RateLimited);
            send_error(ErrorCode::RateLimited, "too many frames: slow down".into());
            continue;
        }
        if body.len() > MAX_FRAME_BYTES {
            state.metrics.refused(ErrorCode::FrameTooLarge);
        }
        match (decode_client_frame(body.as_str()), &in_flight) {
            // A refusal closed the connection (its `error` frame is on the way).
            (Ok(frame), None) => _ = state.hub.frame(grant, conn_id, frame).await,
            (Ok(frame), Some(in_flight)) => {
                let (hub, grant) = (Arc::clone(&state.hub), grant.clone());
                let mut handling: Handling = Box::pin(async move {
                    _ = hub.frame(&grant, conn_id, frame).await;
                });
                // The first poll puts the frame's input in its place (`SharedRooms::apply`), so
                // the connection's frames are applied in the order they came.
                if futures_util::poll!(handling.as_mut()).is_pending()
                    && in_flight.send(handling).await.is_err()
                {
                    return;
                }
            }
            (Err(e), _) => send_error(e.code, e.message),
        }
        if reply.upgrade().is_none_or(|reply| reply.is_closed()) {
            return; // the hub let go of this connection
        }
    }
}
