//! One signaling WebSocket connection: frames in and out on channels, with a keep-alive that
//! notices a dead network. Reconnecting, and falling back to HTTP ([`super::http_signaling`], the
//! same interface), is the call machine's decision; this only reports how opening failed, or that
//! the connection is gone.

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::call::transport::OpenFailure;
use crate::protocol::{MAX_FRAME_BYTES, WEBSOCKET_SUBPROTOCOL};

/// How often the client pings the server (WebSocket ping; the server answers with a pong).
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(10);
/// Nothing at all from the server for this long means the connection is dead (a network that
/// vanished without closing the TCP connection), and it is reported closed.
pub const SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalingEvent {
    /// Connected (the join frame can be sent).
    Opened,
    /// A text frame from the server.
    Frame(String),
    /// The connection could not be opened.
    OpenFailed(OpenFailure),
    /// The connection closed (after it opened).
    Closed,
}

/// Opens a connection in the background. Frames sent on the returned sender are written in
/// order; events arrive on `events` tagged with `generation`, so the driver can ignore a
/// connection it already replaced. Dropping the sender closes the connection.
pub fn connect(
    url: String,
    generation: u64,
    events: mpsc::Sender<(u64, SignalingEvent)>,
) -> mpsc::Sender<String> {
    let (tx, mut outgoing) = mpsc::channel::<String>(256);
    tokio::spawn(async move {
        let report = |event| {
            let events = events.clone();
            async move {
                let _ = events.send((generation, event)).await;
            }
        };
        let Ok(mut request) = url.as_str().into_client_request() else {
            return report(SignalingEvent::OpenFailed(OpenFailure::Unreachable)).await;
        };
        request
            .headers_mut()
            .insert("sec-websocket-protocol", WEBSOCKET_SUBPROTOCOL.parse().expect("a valid header value"));
        let connector = tokio_tungstenite::Connector::Rustls(super::tls_config());
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(4 * MAX_FRAME_BYTES))
            .read_buffer_size(16 * 1024);
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(connector));
        let socket = match tokio::time::timeout(std::time::Duration::from_secs(10), connecting).await {
            Ok(Ok((socket, _))) => socket,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                // Something answered the upgrade with a plain HTTP status (a proxy that strips it).
                let http_status = response.status().as_u16();
                tracing::info!(http_status, "the signaling WebSocket upgrade was refused");
                return report(SignalingEvent::OpenFailed(OpenFailure::Refused { http_status })).await;
            }
            Ok(Err(_)) | Err(_) => return report(SignalingEvent::OpenFailed(OpenFailure::Unreachable)).await,
        };
        report(SignalingEvent::Opened).await;
        let (mut sink, mut stream) = socket.split();
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = keepalive.tick() => {
                    let silent = last_heard.elapsed() >= SILENCE_LIMIT;
                    if silent || sink.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
                frame = outgoing.recv() => match frame {
                    Some(text) => {
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        let _ = sink.send(Message::Close(None)).await;
                        return; // the driver closed it on purpose: no Closed event
                    }
                },
                message = stream.next() => {
                    last_heard = tokio::time::Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => report(SignalingEvent::Frame(text.to_string())).await,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {} // pings are answered by tungstenite; pongs only prove life
                    }
                }
            }
        }
        report(SignalingEvent::Closed).await;
    });
    tx
}
