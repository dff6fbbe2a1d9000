//! One signaling WebSocket connection: frames in and out on channels. Reconnecting is the call
//! machine's decision; this only reports that the connection is gone.

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::{MAX_FRAME_BYTES, WEBSOCKET_SUBPROTOCOL};

/// What the connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalingEvent {
    /// Connected (the join frame can be sent).
    Opened,
    /// A text frame from the server.
    Frame(String),
    /// The connection could not be made, or it closed.
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
            return report(SignalingEvent::Closed).await;
        };
        request
            .headers_mut()
            .insert("sec-websocket-protocol", WEBSOCKET_SUBPROTOCOL.parse().expect("a valid header value"));
        let connector = tokio_tungstenite::Connector::Rustls(super::tls_config());
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(4 * MAX_FRAME_BYTES))
            .read_buffer_size(16 * 1024);
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, Some(config), false, Some(connector));
        let Ok(Ok((socket, _))) = tokio::time::timeout(std::time::Duration::from_secs(10), connecting).await
        else {
            return report(SignalingEvent::Closed).await;
        };
        report(SignalingEvent::Opened).await;
        let (mut sink, mut stream) = socket.split();
        loop {
            tokio::select! {
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
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => report(SignalingEvent::Frame(text.to_string())).await,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                }
            }
        }
        report(SignalingEvent::Closed).await;
    });
    tx
}
