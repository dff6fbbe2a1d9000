//! The server's HTTP API as the call client uses it: join, status, end, ICE servers.

use std::time::Duration;

use crate::api::{EndResponse, ErrorBody, IceServersResponse, JoinResponse, StatusResponse};
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.link.server)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let response = request
            .bearer_auth(&self.link.token)
            .send()
            .await
            .map_err(|e| CallError::ServerUnreachable(describe(&e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| CallError::ServerUnreachable(describe(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| CallError::Server {
                code: "bad_response".into(),
                message: format!("unexpected answer from the server: {e}"),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => Err(CallError::from_server(error.error.code, &error.error.message)),
            Err(_) => Err(CallError::Server {
                code: format!("http_{}", status.as_u16()),
                message: "the server answered with an error page; is this a Televisit server?".into(),
            }),
        }
    }
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
