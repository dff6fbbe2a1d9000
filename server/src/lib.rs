//! Televisit's server: appointments, the call lifecycle, tokens, the signaling hub and the web pages.
//!
//! Layout, one job per module: [`config`] (settings), [`store`] (every query), [`secrets`] (tokens,
//! hashes, TURN credentials, the clock), [`auth`] (who is asking), [`clinic`] (integration API),
//! [`calls`] (call lifecycle API), [`signaling`] (rooms, hub, WebSocket, HTTP fallback), [`pages`]
//! (web pages and the doctor's JSON), [`turn`] (the embedded TURN server), [`metrics`], [`demo`].

pub mod auth;
pub mod calls;
pub mod clinic;
pub mod config;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod pages;
pub mod secrets;
pub mod signaling;
pub mod store;
pub mod turn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

pub use config::{Config, Settings};
use metrics::Metrics;
use secrets::Clock;
use signaling::http_fallback::HttpSessions;
use signaling::hub::Hub;
use store::Store;

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
}

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Opens the database and builds the state.
    pub async fn new(config: Config, clock: Clock) -> Result<SharedState, sqlx::Error> {
        let store = Store::open(&config.database_url).await?;
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(
            store.clone(),
            clock.clone(),
            Arc::clone(&metrics),
            Duration::from_secs(config.reconnect_grace_seconds),
            config.idle_timeout_seconds,
        );
        Ok(Arc::new(AppState {
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

async fn metrics_handler(State(state): State<SharedState>) -> impl IntoResponse {
    let calls = state.store.count_by_status().await.unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(&calls, state.hub.memory()),
    )
}

/// The whole HTTP surface.
pub fn router(state: SharedState) -> Router {
    let api = Router::new()
        .route("/clinic/doctors", post(clinic::create_doctor))
        .route("/clinic/patients", post(clinic::create_patient))
        .route("/clinic/appointments", post(clinic::create_appointment))
        .route("/clinic/appointments/{id}", get(clinic::appointment))
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
        .layer(DefaultBodyLimit::max(televisit_core::protocol::MAX_FRAME_BYTES))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    Router::new()
        .nest("/api", api)
        .route("/", get(|| async { axum::response::Redirect::to("/medical/appointments/") }))
        .route("/medical/login", get(pages::login_page).post(pages::login))
        .route("/medical/logout", post(pages::logout))
        .route("/medical/appointments/", get(pages::doctor_page))
        .route("/medical/appointments/{id}/video-call/", get(pages::call_page))
        .route("/medical/video-call/test-devices/", get(pages::device_test_page))
        .nest_service("/static", ServeDir::new(state.config.web_dir.join("static")))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
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
        .with_state(state)
}

/// A server running in this process (tests, benchmarks, the CLI).
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The shared state (database, hub, clock).
    pub state: SharedState,
    /// The embedded TURN server, when the configuration runs one.
    pub turn: Option<Arc<turn::EmbeddedTurn>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Binds `config.listen` and serves until [`RunningServer::stop`] (or forever).
    pub async fn start(
        config: Config,
        clock: Clock,
    ) -> Result<RunningServer, Box<dyn std::error::Error + Send + Sync>> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let mut config = config;
        if config.public_url.ends_with(":0") {
            // Ephemeral port (tests): links and origins use the real one.
            config.public_url = format!("http://{addr}");
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
        let state = AppState::new(config, clock).await?;
        let app = router(Arc::clone(&state)).into_make_service_with_connect_info::<SocketAddr>();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // Signaling frames are small and come in bursts (an answer, then candidates): without
        // TCP_NODELAY the second frame of a burst waits for the first one's delayed ACK (~40 ms).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Ok(RunningServer { addr, state, turn, shutdown: Some(tx), task })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes the database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
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
