//! The HTTP edge: accepts TCP connections, applies the connection caps, optionally speaks TLS,
//! and serves each connection with hyper under two timeouts: the request head must arrive within
//! the header-read timeout (a silent or slow-header connection is closed), and a connection on
//! which no byte moves for the idle timeout is closed. Also: the client's address behind a
//! trusted proxy (`X-Forwarded-For`). Client addresses stay out of the log.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::conn_caps::{ConnectionCaps, ConnectionPermit};
use crate::metrics::Metrics;

/// How the edge treats connections.
#[derive(Clone)]
pub struct Edge {
    /// Time a connection has to send a complete request head (from its opening, or from the end
    /// of the previous response).
    pub header_read_timeout: Duration,
    /// Time without a byte in either direction after which a connection is closed.
    pub idle_timeout: Duration,
    /// Open connections per client address and in total.
    pub caps: Arc<ConnectionCaps>,
    /// Proxies whose `X-Forwarded-For` is believed; they are exempt from the per-address cap.
    pub trusted_proxies: Arc<Vec<IpAddr>>,
    /// TLS, when the server terminates it itself.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Refusals are counted here.
    pub metrics: Arc<Metrics>,
}

/// What a client over a cap is told before the connection closes.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Retry-After: 2\r\nConnection: close\r\nContent-Length: 88\r\n\r\n\
{\"error\":{\"code\":\"server_busy\",\"message\":\"too many connections; try again in a moment\"}}";

/// Accepts and serves connections until `shutdown` fires; open connections then finish their
/// current request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    edge: Edge,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    // Dropped when this function returns (or its task is aborted): every connection sees it.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: let connections close, then go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let exempt = edge.trusted_proxies.contains(&peer.ip());
        let Some(permit) = edge.caps.try_open(peer.ip(), exempt) else {
            edge.metrics.refused(televisit_protocol::ErrorCode::ServerBusy);
            tracing::debug!("connection refused: cap reached");
            let _ = stream.try_write(BUSY_RESPONSE);
            continue;
        };
        // Signaling frames are small and come in bursts (an answer, then candidates): without
        // TCP_NODELAY the second frame of a burst waits for the first one's delayed ACK (~40 ms).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let (app, edge, stop) = (app.clone(), edge.clone(), stop_rx.clone());
        tokio::spawn(serve_connection(stream, permit, peer, app, edge, stop));
    }
    drop(stop_tx);
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    permit: ConnectionPermit,
    peer: SocketAddr,
    app: Router,
    edge: Edge,
    stop: tokio::sync::watch::Receiver<()>,
) {
    let (stream, activity) = Watched::new(stream, permit);
    match &edge.tls {
        None => serve_http(stream, peer, app, &edge, activity, stop).await,
        Some(acceptor) => match tokio::time::timeout(edge.header_read_timeout, acceptor.accept(stream)).await
        {
            Ok(Ok(tls)) => serve_http(tls, peer, app, &edge, activity, stop).await,
            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        },
    }
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    edge: &Edge,
    activity: Arc<Activity>,
    mut stop: tokio::sync::watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(edge.header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let idle_deadline = activity.last() + edge.idle_timeout;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection closed");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_deadline) => {
                if activity.last() + edge.idle_timeout <= Instant::now() {
                    tracing::debug!("idle connection closed");
                    return;
                }
            }
        }
    }
}

/// When a byte last moved on a connection.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records its activity for the idle timeout, and holds its place under the
/// connection caps for as long as it is open: a WebSocket keeps it after the upgrade.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    _permit: ConnectionPermit,
}

impl<S> Watched<S> {
    fn new(inner: S, permit: ConnectionPermit) -> (Watched<S>, Arc<Activity>) {
        let activity = Arc::new(Activity { start: Instant::now(), last_ms: AtomicU64::new(0) });
        (Watched { inner, activity: Arc::clone(&activity), _permit: permit }, activity)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Middleware: behind a trusted proxy, the client is the last address in `X-Forwarded-For` that
/// is not itself a trusted proxy; handlers (audit log, throttling) then see that address. From any
/// other peer the header is ignored.
pub async fn client_address(
    axum::extract::State(trusted): axum::extract::State<Arc<Vec<IpAddr>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
    if peer.is_some_and(|peer| trusted.contains(&peer.ip())) {
        let hops = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("?").split(','))
            .map(|hop| hop.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        // From the right: our proxies' own entries are skipped; the first other one is the client.
        // An unreadable entry stops the walk (what lies left of it may be forged).
        let client = hops.into_iter().rev().map_while(|hop| hop).find(|hop| !trusted.contains(hop));
        if let Some(client) = client {
            request.extensions_mut().insert(ConnectInfo(SocketAddr::new(client, 0)));
        }
    }
    next.run(request).await
}
