//! The HTTP signaling fallback, behind the WebSocket's interface ([`super::signaling::connect`]):
//! frames sent on the channel are posted one at a time, in order, to `POST {signal_path}` (the
//! first is `join`), and a long poll (`GET {signal_path}?after=<cursor>`) brings the server's
//! frames. It reports the same [`SignalingEvent`]s, so the call machine joins, resumes (`seq`,
//! `resume.last_seq`, client `seq` resend) and reconnects exactly as over the WebSocket. The token
//! travels in `Authorization`, never in the URL.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::api_client::{ApiClient, ApiFailure};
use super::signaling::SignalingEvent;
use crate::api::ErrorDetail;
use crate::protocol::{encode, ErrorCode, Frame, ServerMessage};

/// An empty poll answer sooner than this is not the long poll's timeout: the server closed the
/// session (it answers at once, with nothing, until it forgets it).
const CLOSED_ANSWER: Duration = Duration::from_millis(500);

/// How long a refused post waits for the poll to fetch the frames the server left before closing.
const LAST_FRAMES_WAIT: Duration = Duration::from_secs(2);

/// Starts the fallback in the background at `path` on the link's server. Same contract as the
/// WebSocket's `connect`: events tagged with `generation`; dropping the sender stops it (frames
/// already queued are still posted) without a `Closed` event.
pub fn connect(
    api: ApiClient,
    path: String,
    generation: u64,
    events: mpsc::Sender<(u64, SignalingEvent)>,
) -> mpsc::Sender<String> {
    let (tx, mut outgoing) = mpsc::channel::<String>(256);
    tokio::spawn(async move {
        let reporter = Reporter { generation, events };
        // There is no connection to open: the `join` frame's POST is the handshake.
        reporter.report(SignalingEvent::Opened).await;
        let Some(join) = outgoing.recv().await else { return };
        if !post(&api, &path, join, true, &reporter).await {
            return reporter.report(SignalingEvent::Closed).await;
        }
        let mut poller = AbortOnDrop(tokio::spawn(poll(api.clone(), path.clone(), reporter.clone())));
        loop {
            tokio::select! {
                frame = outgoing.recv() => match frame {
                    Some(text) => {
                        if !post(&api, &path, text, false, &reporter).await {
                            // The server may have closed the session with frames still to fetch
                            // (the call's end, posted as it closed): the poll fetches them before
                            // the machine hears the connection closed, or it would rejoin an ended
                            // call and fail.
                            let _ = tokio::time::timeout(LAST_FRAMES_WAIT, &mut poller.0).await;
                            break;
                        }
                    }
                    None => return, // the driver closed it on purpose: no Closed event
                },
                _ = &mut poller.0 => break,
            }
        }
        drop(poller);
        reporter.report(SignalingEvent::Closed).await;
    });
    tx
}

/// Posts one frame; false when the session is unusable (network trouble, the join refused, or
/// the server forgot the session), which the caller reports as closed.
async fn post(api: &ApiClient, path: &str, text: String, is_join: bool, reporter: &Reporter) -> bool {
    match api.post_signal(path, text).await {
        Ok(()) => true,
        Err(ApiFailure::Refused(error)) if error.code == ErrorCode::NotJoined => false,
        Err(ApiFailure::Refused(error)) => {
            // What the WebSocket would have said in an `error` frame (a refused token, a refused
            // frame): the machine decides the same way.
            reporter.error_frame(error).await;
            !is_join
        }
        Err(failure) => {
            tracing::info!(?failure, "the HTTP signaling fallback could not post a frame");
            false
        }
    }
}

/// Long-polls until the session ends; every frame received is reported in order.
async fn poll(api: ApiClient, path: String, reporter: Reporter) {
    let mut cursor = 0;
    loop {
        let asked_at = Instant::now();
        match api.poll_signal(&path, cursor).await {
            Ok(answer) => {
                if answer.frames.is_empty() && asked_at.elapsed() < CLOSED_ANSWER {
                    return;
                }
                for frame in answer.frames {
                    reporter.report(SignalingEvent::Frame(frame.to_string())).await;
                }
                cursor = answer.cursor;
            }
            Err(ApiFailure::Refused(error)) if error.code != ErrorCode::NotJoined => {
                return reporter.error_frame(error).await;
            }
            Err(failure) => {
                tracing::info!(?failure, "the HTTP signaling fallback's long poll ended");
                return;
            }
        }
    }
}

#[derive(Clone)]
struct Reporter {
    generation: u64,
    events: mpsc::Sender<(u64, SignalingEvent)>,
}

impl Reporter {
    async fn report(&self, event: SignalingEvent) {
        let _ = self.events.send((self.generation, event)).await;
    }

    async fn error_frame(&self, error: ErrorDetail) {
        let frame = Frame::new(ServerMessage::Error { code: error.code, message: error.message });
        self.report(SignalingEvent::Frame(encode(&frame))).await;
    }
}

/// The poller stops with the connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
