//! Test harness: a real server on an ephemeral port with a real SQLite file, the clinic API to set
//! up a visit, and a real WebSocket client.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use televisit_server::secrets::Clock;
use televisit_server::{Config, RunningServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub const CLINIC_KEY: &str = "test-clinic-key";
pub const METRICS_KEY: &str = "test-metrics-key";
pub const PATIENT_NAME: &str = "Zelda Quartermaine";
pub const DOCTOR_NAME: &str = "Dr. Ada Osei";
pub const DOCTOR_PASSWORD: &str = "correct horse battery";

/// A fresh database for one test: a temporary SQLite file, removed at drop, or, when
/// `TELEVISIT_TEST_POSTGRES` names a PostgreSQL server (`postgres://user@host:port`, as
/// `scripts/test` sets it for the suite's second run), a new database on it, which the server
/// creates on first open (the test cluster is thrown away after the run).
pub struct TempDb(pub PathBuf, Option<String>);

impl TempDb {
    pub fn new() -> TempDb {
        let name = format!("televisit_test_{}", uuid::Uuid::new_v4().simple());
        let postgres = std::env::var("TELEVISIT_TEST_POSTGRES").ok().filter(|url| !url.is_empty());
        let path = std::env::temp_dir().join(format!("{name}.db"));
        TempDb(path, postgres.map(|server| format!("{}/{name}", server.trim_end_matches('/'))))
    }
    pub fn url(&self) -> String {
        self.1.clone().unwrap_or_else(|| format!("sqlite://{}", self.0.display()))
    }
    /// Whether this run is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.1.is_some()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

pub struct TestServer {
    pub server: RunningServer,
    pub http: reqwest::Client,
    pub clock: Clock,
}

/// A visit set up through the clinic API and started by the doctor.
#[derive(Clone, Debug)]
pub struct Visit {
    pub appointment_id: String,
    pub doctor_api_token: String,
    pub doctor_token: String,
    pub patient_token: String,
}

pub fn token_of(link: &str) -> String {
    link.split_once("#token=").expect("link has a token fragment").1.to_owned()
}

impl TestServer {
    pub async fn start(db: &TempDb) -> TestServer {
        Self::start_with(db, Clock::default(), |_| {}).await
    }

    pub async fn start_with(db: &TempDb, clock: Clock, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = Config::for_tests(&db.url());
        adjust(&mut config);
        let server = RunningServer::start(config, clock.clone()).await.expect("server starts");
        TestServer { server, http: reqwest::Client::new(), clock }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/video-call/ws", self.server.addr)
    }

    pub async fn clinic(&self, path: &str, body: Value) -> Value {
        let response =
            self.http.post(self.url(path)).bearer_auth(CLINIC_KEY).json(&body).send().await.expect("request");
        assert_eq!(response.status(), 201, "{path}");
        response.json().await.expect("json")
    }

    /// A doctor with a web password and app token, a patient, an appointment (not started).
    pub async fn appointment(&self) -> (String, String) {
        let email = format!("{}@clinic.test", uuid::Uuid::new_v4().simple());
        let doctor = self
            .clinic(
                "/api/clinic/doctors",
                json!({"display_name": DOCTOR_NAME, "email": email, "password": DOCTOR_PASSWORD}),
            )
            .await;
        let patient = self.clinic("/api/clinic/patients", json!({"display_name": PATIENT_NAME})).await;
        let appointment = self
            .clinic(
                "/api/clinic/appointments",
                json!({"doctor_id": doctor["id"], "patient_id": patient["id"], "scheduled_at_ms": self.clock.now_ms()}),
            )
            .await;
        (appointment["id"].as_str().unwrap().to_owned(), doctor["api_token"].as_str().unwrap().to_owned())
    }

    /// An appointment whose call the doctor started.
    pub async fn started_visit(&self) -> Visit {
        let (appointment_id, doctor_api_token) = self.appointment().await;
        let started = self.start_call(&appointment_id, &doctor_api_token).await;
        Visit {
            appointment_id,
            doctor_api_token,
            doctor_token: token_of(started["doctor_link"].as_str().unwrap()),
            patient_token: token_of(started["patient_link"].as_str().unwrap()),
        }
    }

    pub async fn start_call(&self, appointment_id: &str, doctor_api_token: &str) -> Value {
        let response = self
            .http
            .post(self.url(&format!("/api/appointments/{appointment_id}/video-call/start")))
            .bearer_auth(doctor_api_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// GET or POST with a bearer credential; returns (status, JSON body).
    pub async fn call(&self, method: &str, path: &str, bearer: &str) -> (u16, Value) {
        let request = match method {
            "GET" => self.http.get(self.url(path)),
            _ => self.http.post(self.url(path)),
        };
        let response = request.bearer_auth(bearer).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn status(&self, visit: &Visit) -> Value {
        let path = format!("/api/appointments/{}/video-call/status", visit.appointment_id);
        let (code, body) = self.call("GET", &path, &visit.doctor_api_token).await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// The `/metrics` page, fetched with the metrics key.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).bearer_auth(METRICS_KEY).send().await.unwrap();
        response.text().await.unwrap()
    }

    pub async fn audit(&self, appointment_id: Option<&str>) -> Vec<televisit_server::store::AuditEntry> {
        self.server.state.store.audit_entries(appointment_id).await.unwrap()
    }

    /// Opens a WebSocket and sends `join` with the token.
    pub async fn join(&self, token: &str) -> Ws {
        let mut ws = Ws::connect(&self.ws_url()).await;
        ws.send(json!({"type": "join", "token": token})).await;
        ws
    }
}

pub struct Ws {
    pub stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    pub last_seq: u64,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        Ws { stream, last_seq: 0 }
    }

    pub async fn connect_with_origin(
        url: &str,
        origin: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Ws { stream, last_seq: 0 })
    }

    pub async fn send(&mut self, frame: Value) {
        self.stream.send(Message::Text(frame.to_string().into())).await.expect("send");
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream.send(Message::Text(text.into())).await.expect("send");
    }

    /// The next JSON frame (5 s at most); `None` when the connection closed.
    pub async fn try_next(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), self.stream.next())
                .await
                .expect("a frame within 5 s");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("server frames are JSON");
                    if let Some(seq) = value["seq"].as_u64() {
                        assert!(seq > self.last_seq, "seq goes up: {seq} after {}", self.last_seq);
                        self.last_seq = seq;
                    }
                    return Some(value);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        self.try_next().await.expect("connection open")
    }

    /// The next frame, which must have this type.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], kind, "expected {kind}, got {frame}");
        frame
    }

    /// Asserts no frame arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(wait, self.stream.next()).await {
            panic!("expected no frame, got {text}");
        }
    }

    /// Reads until the server closes; returns the frames before the close.
    pub async fn until_closed(&mut self) -> Vec<Value> {
        let mut frames = Vec::new();
        while let Some(frame) = self.try_next().await {
            frames.push(frame);
        }
        frames
    }
}

/// Doctor and patient both in the room, negotiation requested; returns (doctor, patient).
pub async fn both_in_room(server: &TestServer, visit: &Visit) -> (Ws, Ws) {
    let mut patient = server.join(&visit.patient_token).await;
    patient.expect("joined").await;
    patient.expect("waiting").await;
    let mut doctor = server.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    let offer_request = doctor.expect("peer-joined").await;
    assert_eq!(offer_request["make_offer"], true);
    patient.expect("admitted").await;
    patient.expect("peer-joined").await;
    (doctor, patient)
}

/// A participant on the HTTP signaling fallback: posts frames, long-polls for the server's.
pub struct FallbackClient<'a> {
    server: &'a TestServer,
    /// The URL it posts to and polls.
    pub signal: String,
    token: String,
}

impl<'a> FallbackClient<'a> {
    /// At the bare fallback path.
    pub fn new(server: &'a TestServer, token: &str) -> FallbackClient<'a> {
        FallbackClient::at(server, "/api/video-call/signal", token)
    }

    /// At a given path (the join response's `signal_path`).
    pub fn at(server: &'a TestServer, path: &str, token: &str) -> FallbackClient<'a> {
        FallbackClient { server, signal: server.url(path), token: token.to_owned() }
    }

    pub async fn post(&self, frame: Value) -> reqwest::Result<reqwest::Response> {
        self.server.http.post(&self.signal).bearer_auth(&self.token).body(frame.to_string()).send().await
    }

    pub async fn poll(&self, after: u64) -> reqwest::Result<reqwest::Response> {
        self.server.http.get(&self.signal).bearer_auth(&self.token).query(&[("after", after)]).send().await
    }
}
