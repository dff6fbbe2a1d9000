//! Televisit's server: appointments, the call lifecycle, tokens, the signaling hub and the web pages.
//!
//! Layout, one job per module: [`config`] (settings), [`store`] (every query), [`secrets`] (tokens,
//! hashes, TURN credentials, the clock), [`auth`] (who is asking), [`clinic`] (integration API),
//! [`calls`] (call lifecycle API), [`signaling`] (rooms, hub, WebSocket, HTTP fallback), [`pages`]
//! (web pages and the doctor's JSON), [`assets`] (the built-in web folder), [`turn`] (the embedded
//! TURN server), [`edge`] (connections: timeouts, caps, TLS, proxies), [`conn_caps`], [`throttle`]
//! (failed attempts, audit rows), [`metrics`], [`demo`].

pub mod assets;
pub mod auth;
pub mod calls;
pub mod clinic;
pub mod config;
pub mod conn_caps;
pub mod demo;
pub mod edge;
pub mod error;
pub mod metrics;
pub mod pages;
pub mod retention;
pub mod secrets;
pub mod signaling;
pub mod store;
pub mod throttle;
pub mod turn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use televisit_protocol::ErrorCode;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;

pub use config::{Config, Settings};
use metrics::Metrics;
use secrets::Clock;
use signaling::http_fallback::HttpSessions;
use signaling::hub::Hub;
use signaling::shared::{ClusterSettings, SharedRooms};
use store::Store;
use throttle::{AuditLimiter, WindowCounter};

/// The pages load scripts, styles and media only from this server; no inline script can run.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; media-src 'self' blob: mediastream:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// Everything a handler needs.
pub struct AppState {
    /// Settings.
    pub config: Arc<Config>,
    /// Database.
    pub store: Store,
    /// Clock for expiry.
    pub clock: Clock,
    /// Signaling hub.
    pub hub: Arc<Hub>,
    /// HTTP-fallback participants.
    pub http_sessions: HttpSessions,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Failed sign-ins per client address.
    pub failed_sign_ins: WindowCounter,
    /// Failed call tokens per client address.
    pub failed_tokens: WindowCounter,
    /// Which refusals get an audit row.
    pub audit_limiter: AuditLimiter,
}

/// Refusal audit rows per minute from all addresses together.
const AUDIT_REFUSALS_PER_MINUTE_IN_ALL: u32 = 1000;

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Opens the database (and Redis, with `--redis-url`) and builds the state.
    pub async fn new(
        config: Config,
        clock: Clock,
    ) -> Result<SharedState, Box<dyn std::error::Error + Send + Sync>> {
        let store = Store::open(&config.database_url).await?;
        let metrics = Arc::new(Metrics::default());
        let cluster_settings = ClusterSettings {
            idle_timeout_seconds: config.idle_timeout_seconds,
            reconnect_grace_seconds: config.reconnect_grace_seconds,
        };
        let shared = match &config.redis_url {
            Some(url) => Some(
                SharedRooms::connect(
                    url,
                    cluster_settings,
                    store.clone(),
                    clock.clone(),
                    Arc::clone(&metrics),
                )
                .await
                .map_err(|e| format!("Redis at --redis-url: {e}"))?,
            ),
            None => None,
        };
        let hub = Hub::new(
            store.clone(),
            clock.clone(),
            Arc::clone(&metrics),
            Duration::from_secs(config.reconnect_grace_seconds),
            Duration::from_secs(config.resume_window_seconds),
            config.idle_timeout_seconds,
            shared,
        );
        let minute = Duration::from_secs(60);
        Ok(Arc::new(AppState {
            failed_sign_ins: WindowCounter::new(config.failed_sign_ins_per_minute, minute),
            failed_tokens: WindowCounter::new(config.failed_tokens_per_minute, minute),
            audit_limiter: AuditLimiter::new(
                config.audit_refusals_per_minute,
                AUDIT_REFUSALS_PER_MINUTE_IN_ALL,
            ),
            config: Arc::new(config),
            store,
            clock,
            hub,
            http_sessions: HttpSessions::default(),
            metrics,
        }))
    }
}

async fn healthz(State(state): State<SharedState>) -> impl IntoResponse {
    match state.store.count_by_status().await {
        Ok(_) => (axum::http::StatusCode::OK, "ok"),
        Err(_) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
    }
}

/// `GET /metrics` on the main address: only with the metrics key.
async fn metrics_handler(State(state): State<SharedState>, headers: axum::http::HeaderMap) -> Response {
    metrics_response(&state, &headers, true).await
}

/// `GET /metrics` on `--metrics-listen`: with the metrics key if one is set.
async fn metrics_listener_handler(
    State(state): State<SharedState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let key_required = state.config.metrics_key.is_some();
    metrics_response(&state, &headers, key_required).await
}

async fn metrics_response(
    state: &SharedState,
    headers: &axum::http::HeaderMap,
    key_required: bool,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let allowed = match (&state.config.metrics_key, given) {
        _ if !key_required => true,
        (Some(key), Some(given)) => secrets::constant_time_eq(given.trim(), key),
        _ => false,
    };
    if !allowed {
        let message = if state.config.metrics_key.is_some() {
            "a valid metrics key is required (Authorization: Bearer <key>)"
        } else {
            "metrics are disabled: start the server with --metrics-key or --metrics-listen"
        };
        return error::ApiError::new(ErrorCode::Unauthorized, message).into_response();
    }
    let calls = state.store.count_by_status().await.unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(&calls, state.hub.memory()),
    )
        .into_response()
}

/// The whole HTTP surface.
pub fn router(state: SharedState) -> Router {
    let api = Router::new()
        .route("/clinic/doctors", post(clinic::create_doctor))
        .route("/clinic/patients", post(clinic::create_patient))
        .route("/clinic/appointments", post(clinic::create_appointment))
        .route("/clinic/appointments/{id}", get(clinic::appointment))
        .route("/clinic/appointments/{id}/summary", get(clinic::visit_summary))
        .route("/clinic/audit", get(clinic::audit))
        .route("/doctor/me", get(pages::me))
        .route("/doctor/appointments", get(pages::doctor_appointments))
        .route("/appointments/{id}/video-call/start", post(calls::start))
        .route("/appointments/{id}/video-call/rejoin", post(calls::rejoin))
        .route("/appointments/{id}/video-call/patient-link", post(calls::patient_link))
        .route("/appointments/{id}/video-call/end", post(calls::end))
        .route("/appointments/{id}/video-call/status", get(calls::status))
        .route("/appointments/{id}/video-call/waiting-message", post(calls::waiting_message))
        .route("/video-call/join", post(calls::join))
        .route("/video-call/ice-servers", get(calls::ice_servers_handler))
        .route("/video-call/ws", get(signaling::ws::upgrade))
        .route("/video-call/signal", post(signaling::http_fallback::post).get(signaling::http_fallback::poll))
        // The same, with the room id a load balancer may hash (`calls::with_room`).
        .route("/video-call/ws/{room_id}", get(signaling::ws::upgrade))
        .route(
            "/video-call/signal/{room_id}",
            post(signaling::http_fallback::post).get(signaling::http_fallback::poll),
        )
        .layer(DefaultBodyLimit::max(televisit_protocol::MAX_FRAME_BYTES))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    let static_files = match &state.config.web_dir {
        Some(dir) => Router::new().nest_service("/static", ServeDir::new(dir.join("static"))),
        None => Router::new().route("/static/{*path}", get(assets::static_file)),
    };
    // Over HTTPS, ours or a proxy's in front (browsers ignore the header over plain HTTP).
    let https = state.config.tls.is_some() || state.config.secure_cookies;
    let hsts = https.then(|| {
        SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        )
    });
    let trusted_proxies = Arc::new(state.config.trusted_proxies.clone());
    // With a separate metrics address, the main one does not know /metrics.
    let metrics = match state.config.metrics_listen {
        Some(_) => Router::new(),
        None => Router::new().route("/metrics", get(metrics_handler)),
    };
    Router::new()
        .nest("/api", api)
        .route("/", get(|| async { axum::response::Redirect::to("/medical/appointments/") }))
        .route("/medical/login", get(pages::login_page).post(pages::login))
        .route("/medical/logout", post(pages::logout))
        .route("/medical/appointments/", get(pages::doctor_page))
        .route("/medical/appointments/{id}/video-call/", get(pages::call_page))
        .route("/medical/video-call/test-devices/", get(pages::device_test_page))
        .merge(static_files)
        .merge(metrics)
        .route("/healthz", get(healthz))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(tower::util::option_layer(hsts))
        .layer(axum::middleware::from_fn_with_state(trusted_proxies, edge::client_address))
        .layer(request_tracing())
        .with_state(state)
}

type HttpClassifier = tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>;
type MakeSpan = fn(&axum::extract::Request) -> tracing::Span;

/// One span per request and a line per response (status, latency). The span names the route
/// template (`/api/appointments/{id}/video-call/end`), never the path itself (it carries ids),
/// the query string or a header (they carry tokens), nor the client's address.
fn request_tracing() -> TraceLayer<HttpClassifier, MakeSpan, (), DefaultOnResponse> {
    fn span(request: &axum::extract::Request) -> tracing::Span {
        let route = request.extensions().get::<axum::extract::MatchedPath>().map(|path| path.as_str());
        tracing::info_span!("request", method = %request.method(), route = %route.unwrap_or("unmatched"))
    }
    TraceLayer::new_for_http()
        .make_span_with(span as MakeSpan)
        .on_request(())
        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros))
}

/// A server running in this process (tests, benchmarks, the CLI).
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The shared state (database, hub, clock).
    pub state: SharedState,
    /// The embedded TURN server, when the configuration runs one.
    pub turn: Option<Arc<turn::EmbeddedTurn>>,
    /// The bound address of `/metrics` when it has its own (`--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    purge: tokio::task::JoinHandle<()>,
    metrics_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Binds `config.listen` and serves until [`RunningServer::stop`] (or forever).
    pub async fn start(
        config: Config,
        clock: Clock,
    ) -> Result<RunningServer, Box<dyn std::error::Error + Send + Sync>> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let metrics_listener = match config.metrics_listen {
            Some(metrics_listen) => Some(tokio::net::TcpListener::bind(metrics_listen).await?),
            None => None,
        };
        let mut config = config;
        if config.public_url.ends_with(":0") {
            // Ephemeral port (tests): links and origins use the real one.
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            config.public_url = format!("{scheme}://{addr}");
            config.allowed_origins = vec![config.public_url.clone()];
        }
        let turn = match &config.embedded_turn {
            Some(turn_config) => {
                let secret = config.turn_secret.as_deref().expect("resolved with the embedded TURN's secret");
                let turn = turn::EmbeddedTurn::start(turn_config, secret, clock.clone()).await?;
                config.turn_urls.extend(turn.urls());
                Some(Arc::new(turn))
            }
            None => None,
        };
        let tls = match &config.tls {
            Some((cert, key)) => Some(turn::tls_acceptor(cert, key, "HTTPS")?),
            None => None,
        };
        let state = AppState::new(config, clock).await?;
        let config = &state.config;
        let edge = edge::Edge {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(config.http_idle_timeout_seconds),
            caps: conn_caps::ConnectionCaps::new(config.max_connections_per_address, config.max_connections),
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            tls,
            metrics: Arc::clone(&state.metrics),
        };
        let app = router(Arc::clone(&state));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(edge::serve(listener, app, edge, async move {
            let _ = rx.await;
        }));
        let purge = tokio::spawn(retention::purge_periodically(Arc::clone(&state)));
        let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        // An internal address for the scraper: no pages, no edge caps, only /metrics.
        let metrics_task = metrics_listener.map(|listener| {
            let app =
                Router::new().route("/metrics", get(metrics_listener_handler)).with_state(Arc::clone(&state));
            tokio::spawn(async move { axum::serve(listener, app).await })
        });
        Ok(RunningServer { addr, state, turn, metrics_addr, shutdown: Some(tx), task, purge, metrics_task })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        let scheme = if self.state.config.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, closes the database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
        self.purge.abort();
        if let Some(metrics_task) = &self.metrics_task {
            metrics_task.abort();
        }
        let _ = (&mut self.task).await;
        if let Some(turn) = &self.turn {
            turn.stop().await;
        }
        self.state.store.close().await;
    }

    /// Serves until the process is interrupted (Ctrl-C / SIGTERM).
    pub async fn wait(mut self) -> std::io::Result<()> {
        let shutdown = self.shutdown.take();
        tokio::select! {
            result = &mut self.task => result.unwrap_or(Ok(())),
            _ = tokio::signal::ctrl_c() => {
                if let Some(tx) = shutdown { let _ = tx.send(()); }
                self.state.store.close().await;
                Ok(())
            }
        }
    }
}
