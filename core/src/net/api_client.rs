//! The server's HTTP API as the call client uses it: join, status, end, ICE servers, and the
//! HTTP signaling fallback's two requests.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;

use crate::api::{
    EndResponse, ErrorBody, ErrorDetail, IceServersResponse, JoinResponse, SignalPollResponse, StatusResponse,
};
use crate::error::CallError;
use crate::link::JoinLink;

/// An HTTP client for one join link's server, authenticated by the link's token.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    link: JoinLink,
}

impl ApiClient {
    /// A client for the link's server.
    pub fn new(link: JoinLink) -> ApiClient {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*super::tls_config()).clone())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client builds");
        ApiClient { http, link }
    }

    /// `POST /api/video-call/join`.
    pub async fn join(&self) -> Result<JoinResponse, CallError> {
        self.send(self.http.post(self.url("/api/video-call/join"))).await
    }

    /// `GET /api/appointments/{id}/video-call/status`.
    pub async fn status(&self) -> Result<StatusResponse, CallError> {
        let path = format!("/api/appointments/{}/video-call/status", self.link.appointment_id);
        self.send(self.http.get(self.url(&path))).await
    }

    /// `POST /api/appointments/{id}/video-call/end` (doctor links only).
    pub async fn end(&self) -> Result<EndResponse, CallError> {
        let path = format!("/api/appointments/{}/video-call/end", self.link.appointment_id);
        self.send(self.http.post(self.url(&path))).await
    }

    /// `GET /api/video-call/ice-servers`: fresh TURN credentials.
    pub async fn ice_servers(&self) -> Result<IceServersResponse, CallError> {
        self.send(self.http.get(self.url("/api/video-call/ice-servers"))).await
    }

    /// `POST {signal_path}`: one client frame (JSON text) over the HTTP signaling fallback.
    pub async fn post_signal(&self, path: &str, frame: String) -> Result<(), ApiFailure> {
        let request = self.http.post(self.url(path)).header(CONTENT_TYPE, "application/json").body(frame);
        self.request::<serde_json::Value>(request).await.map(drop)
    }

    /// `GET {signal_path}?after=N`: the server's frames after cursor N, waiting up to 20 s.
    pub async fn poll_signal(&self, path: &str, after: u64) -> Result<SignalPollResponse, ApiFailure> {
        let request = self.http.get(self.url(path)).query(&[("after", after)]).timeout(POLL_TIMEOUT);
        self.request(request).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.link.server)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        self.request(request).await.map_err(|failure| match failure {
            ApiFailure::Unreachable(reason) => CallError::ServerUnreachable(reason),
            ApiFailure::Refused(error) => CallError::from_server(error.code, &error.message),
            ApiFailure::NotTelevisit { http_status } => CallError::Server {
                code: format!("http_{http_status}"),
                message: "the server answered with an error page; is this a Televisit server?".into(),
            },
            ApiFailure::BadResponse(reason) => CallError::Server {
                code: "bad_response".into(),
                message: format!("unexpected answer from the server: {reason}"),
            },
        })
    }

    /// Sends with the link's token in `Authorization` (never in the URL).
    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiFailure> {
        let response = request
            .bearer_auth(&self.link.token)
            .send()
            .await
            .map_err(|e| ApiFailure::Unreachable(describe(&e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| ApiFailure::Unreachable(describe(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| ApiFailure::BadResponse(e.to_string()));
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => Err(ApiFailure::Refused(error.error)),
            Err(_) => Err(ApiFailure::NotTelevisit { http_status: status.as_u16() }),
        }
    }
}

/// The long poll waits up to 20 s on the server; beyond this the connection is taken as dead.
const POLL_TIMEOUT: Duration = Duration::from_secs(35);

/// Why a request to the server failed, for callers that act on the kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiFailure {
    /// No answer (connection refused, no route, timeout, cut mid-answer).
    Unreachable(String),
    /// The server refused with its error body.
    Refused(ErrorDetail),
    /// An error status without the server's error body (a proxy's or another server's page).
    NotTelevisit {
        /// The HTTP status.
        http_status: u16,
    },
    /// A success status whose body is not what the API returns.
    BadResponse(String),
}

/// A short, URL-free description of a transport error for the app to show.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "connection refused or no route".into()
    } else {
        "the connection failed".into()
    }
}
