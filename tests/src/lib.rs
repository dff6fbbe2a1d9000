//! Helpers shared by the cross-component tests and benchmarks: a server with a started visit, a
//! recording call listener, a simulated media backend, a TCP proxy that can cut connections, and a
//! network link emulator on a call's media path ([`netem`]).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use televisit_core::call::machine::PeerConnectionState;
use televisit_core::client::media::{
    IceConfig, MediaBackend, MediaSession, MediaStats, PeerCommand, PeerEvent,
};
use televisit_core::client::{CallListener, ClientEvent};
use televisit_core::protocol::Role;
use televisit_server::secrets::Clock;
use televisit_server::{Config, RunningServer};
use tokio::sync::mpsc;

pub mod netem;
pub mod netns;
pub mod network_switch;
pub mod turn_lab;

/// Installs ring as the process's rustls provider, which the tests' own HTTP clients need.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server on an ephemeral port with a temporary SQLite file.
pub struct TestServer {
    /// The running server.
    pub server: RunningServer,
    /// Its clock.
    pub clock: Clock,
    db: std::path::PathBuf,
}

/// Join links of a started visit.
pub struct Visit {
    /// The appointment.
    pub appointment_id: String,
    /// The doctor's link.
    pub doctor_link: String,
    /// The patient's link.
    pub patient_link: String,
    /// The doctor's app token (for the API).
    pub doctor_api_token: String,
}

impl TestServer {
    /// Starts a server; `adjust` may change the test configuration.
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> TestServer {
        install_crypto_provider();
        let db = std::env::temp_dir().join(format!("televisit-e2e-{}.db", uuid_like()));
        let mut config = Config::for_tests(&format!("sqlite://{}", db.display()));
        adjust(&mut config);
        let clock = Clock::default();
        let server = RunningServer::start(config, clock.clone()).await.expect("server starts");
        TestServer { server, clock, db }
    }

    /// Creates a doctor, a patient and an appointment, and starts the call.
    pub async fn started_visit(&self) -> Visit {
        let http = reqwest::Client::new();
        let base = self.server.url();
        let key = "test-clinic-key";
        let post = |path: String, bearer: String, body: Value| {
            let http = http.clone();
            async move {
                let response = http.post(path).bearer_auth(bearer).json(&body).send().await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.json::<Value>().await.unwrap()
            }
        };
        let email = format!("{}@clinic.test", uuid_like());
        let doctor = post(
            format!("{base}/api/clinic/doctors"),
            key.into(),
            json!({"display_name": "Dr. Ada Osei", "email": email}),
        )
        .await;
        let patient = post(
            format!("{base}/api/clinic/patients"),
            key.into(),
            json!({"display_name": "Zelda Quartermaine"}),
        )
        .await;
        let appointment = post(
            format!("{base}/api/clinic/appointments"),
            key.into(),
            json!({"doctor_id": doctor["id"], "patient_id": patient["id"], "scheduled_at_ms": self.clock.now_ms()}),
        )
        .await;
        let id = appointment["id"].as_str().unwrap().to_owned();
        let doctor_api_token = doctor["api_token"].as_str().unwrap().to_owned();
        let started = post(
            format!("{base}/api/appointments/{id}/video-call/start"),
            doctor_api_token.clone(),
            json!({}),
        )
        .await;
        Visit {
            appointment_id: id,
            doctor_link: started["doctor_link"].as_str().unwrap().to_owned(),
            patient_link: started["patient_link"].as_str().unwrap().to_owned(),
            doctor_api_token,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db.display()));
        }
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), Clock::default().now_ms())
}

/// This machine's wall clock, µs since the Unix epoch (what the core's sender clocks report in).
pub fn unix_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_micros() as i64
}

/// A WebRTC backend that gathers loopback candidates only, so no test traffic leaves the machine.
pub fn loopback_media() -> Arc<televisit_core::client::webrtc::WebRtcMedia> {
    use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
    Arc::new(WebRtcMedia::new(WebRtcSettings { udp_addrs: vec!["127.0.0.1:0".into()], ..Default::default() }))
}

/// A call client and the recorder of its events.
pub type LoopbackClient = (Arc<televisit_core::client::CallClient>, Arc<Recorder>);

/// A call client on [`loopback_media`] that records its events, already joining.
pub fn join_loopback(link: &str) -> LoopbackClient {
    use televisit_core::client::{CallClient, CallOptions};
    let recorder = Arc::new(Recorder::default());
    let client = CallClient::new(link, recorder.clone(), loopback_media(), CallOptions::default())
        .expect("valid link");
    client.join();
    (Arc::new(client), recorder)
}

/// Both sides of `visit` on [`join_loopback`], connected: the patient joins and waits, then the
/// doctor joins, and both reach `Connected` within `wait`. Returns (patient, doctor), each with its
/// recorder.
pub fn connected_on_loopback(visit: &Visit, wait: Duration) -> (LoopbackClient, LoopbackClient) {
    use televisit_core::call::machine::{CallEvent, CallState};
    let patient = join_loopback(&visit.patient_link);
    patient.1.wait_for(wait, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    let doctor = join_loopback(&visit.doctor_link);
    for events in [&doctor.1, &patient.1] {
        events.wait_for(wait, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    }
    (patient, doctor)
}

/// Both sides of `visit` with their media through `relay` (the patient as side B, the doctor as
/// side A), connected: the patient joins and waits, then the doctor joins, and both reach
/// `Connected` within `wait`. `patient` hears the patient's events and keeps them in its
/// [`Recorder`]. Returns (patient, doctor, the doctor's recorder).
pub fn connected_through_relay<L>(
    visit: &Visit,
    relay: &netem::Relay,
    patient: Arc<L>,
    wait: Duration,
) -> (Arc<televisit_core::client::CallClient>, Arc<televisit_core::client::CallClient>, Arc<Recorder>)
where
    L: televisit_core::client::CallListener + AsRef<Recorder> + 'static,
{
    connected_through_relay_with(visit, relay, patient, wait, loopback_media)
}

/// [`connected_through_relay`] with both sides' media made by `media` (say, with other codecs)
/// instead of [`loopback_media`].
pub fn connected_through_relay_with<L>(
    visit: &Visit,
    relay: &netem::Relay,
    patient: Arc<L>,
    wait: Duration,
    media: fn() -> Arc<televisit_core::client::webrtc::WebRtcMedia>,
) -> (Arc<televisit_core::client::CallClient>, Arc<televisit_core::client::CallClient>, Arc<Recorder>)
where
    L: televisit_core::client::CallListener + AsRef<Recorder> + 'static,
{
    use televisit_core::call::machine::{CallEvent, CallState};
    use televisit_core::client::{CallClient, CallOptions};
    let media = |side| relay.media(side, media());
    let patient_client =
        CallClient::new(&visit.patient_link, patient.clone(), media(netem::Side::B), CallOptions::default())
            .expect("valid link");
    patient_client.join();
    let state = |s| move |e: &ClientEvent| *e == ClientEvent::Call(CallEvent::StateChanged(s));
    (*patient).as_ref().wait_for(wait, state(CallState::WaitingRoom));
    let doctor_events = Arc::new(Recorder::default());
    let doctor = CallClient::new(
        &visit.doctor_link,
        doctor_events.clone(),
        media(netem::Side::A),
        CallOptions::default(),
    )
    .expect("valid link");
    doctor.join();
    for events in [&*doctor_events, (*patient).as_ref()] {
        events.wait_for(wait, state(CallState::Connected));
    }
    (Arc::new(patient_client), Arc::new(doctor), doctor_events)
}

/// Records every event and lets a test wait for one.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<ClientEvent>>,
    changed: Condvar,
    threads: Mutex<Vec<String>>,
}

/// A plain recorder is its own record ([`connected_through_relay`] takes listeners that keep one).
impl AsRef<Recorder> for Recorder {
    fn as_ref(&self) -> &Recorder {
        self
    }
}

impl CallListener for Recorder {
    fn on_event(&self, event: ClientEvent) {
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        self.threads.lock().unwrap().push(thread);
        self.events.lock().unwrap().push(event);
        self.changed.notify_all();
    }
}

impl Recorder {
    /// Waits up to `timeout` for an event matching `predicate`; returns it.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut predicate: impl FnMut(&ClientEvent) -> bool,
    ) -> ClientEvent {
        let deadline = std::time::Instant::now() + timeout;
        let mut events = self.events.lock().unwrap();
        loop {
            if let Some(event) = events.iter().find(|e| predicate(e)) {
                return event.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "timed out; events so far: {:#?}", *events);
            events = self.changed.wait_timeout(events, left).unwrap().0;
        }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<ClientEvent> {
        self.events.lock().unwrap().clone()
    }

    /// The peer's frames of this kind received so far, in order.
    pub fn remote_frames(
        &self,
        kind: televisit_core::frame::FrameKind,
    ) -> Vec<televisit_core::frame::EncodedFrame> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ClientEvent::RemoteFrame(f) if f.kind == kind => Some(f.clone()),
                _ => None,
            })
            .collect()
    }

    /// Names of the threads events arrived on.
    pub fn threads(&self) -> Vec<String> {
        self.threads.lock().unwrap().clone()
    }
}

/// A media backend without media: SDP is a marker, the connection "connects" when negotiation
/// completes. It tests the call's control flow; the WebRTC backend is tested with real media.
pub struct SimulatedMedia {
    /// Every command each session received, in order, by role.
    pub log: Arc<Mutex<Vec<(Role, PeerCommand)>>>,
}

impl SimulatedMedia {
    /// A backend with an empty log.
    pub fn new() -> Arc<SimulatedMedia> {
        Arc::new(SimulatedMedia { log: Arc::default() })
    }
}

struct SimulatedSession {
    role: Role,
    log: Arc<Mutex<Vec<(Role, PeerCommand)>>>,
    events: mpsc::UnboundedSender<PeerEvent>,
    connected: bool,
}

impl MediaBackend for SimulatedMedia {
    fn create_session(
        &self,
        _ice: IceConfig,
        role: Role,
        _origin: std::time::Instant,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Box<dyn MediaSession> {
        Box::new(SimulatedSession { role, log: Arc::clone(&self.log), events, connected: false })
    }
}

impl MediaSession for SimulatedSession {
    fn command(&mut self, command: PeerCommand) {
        self.log.lock().unwrap().push((self.role, command.clone()));
        let send = |event| {
            let _ = self.events.send(event);
        };
        match command {
            PeerCommand::CreateOffer { ice_restart } => {
                send(PeerEvent::LocalOffer(format!("sim-offer restart={ice_restart}")))
            }
            PeerCommand::AcceptOffer(_) => {
                send(PeerEvent::LocalAnswer("sim-answer".into()));
                self.connected = true;
                send(PeerEvent::State(PeerConnectionState::Connected));
            }
            PeerCommand::AcceptAnswer(_) => {
                self.connected = true;
                send(PeerEvent::State(PeerConnectionState::Connected));
            }
            PeerCommand::ReportStats if self.connected => send(PeerEvent::Stats(Box::new(MediaStats {
                rtt_ms: Some(2.0),
                loss_percent: Some(0.0),
                jitter_ms: Some(1.0),
                available_outgoing_bitrate_bps: Some(5_000_000),
                last_packet_at_ms: Some(i64::MAX / 2),
                ..MediaStats::default()
            }))),
            _ => {}
        }
    }
}

/// A TCP proxy in front of the server whose connections a test can cut, like a network drop.
/// Started with [`CuttableProxy::refusing_upgrades`] it is also a corporate proxy that strips
/// WebSockets: plain HTTP passes, an upgrade request gets `403 Forbidden` (or, with
/// [`CuttableProxy::dropping_upgrades`], its connection is closed without an answer).
pub struct CuttableProxy {
    /// The proxy's address.
    pub addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
    refused_upgrades: Arc<std::sync::atomic::AtomicUsize>,
    /// New connections are dropped unanswered until then (see [`CuttableProxy::black_out`]).
    blackout_until: Arc<Mutex<Option<std::time::Instant>>>,
}

impl CuttableProxy {
    /// Proxies to `target`.
    pub async fn start(target: std::net::SocketAddr) -> CuttableProxy {
        CuttableProxy::listen(target, Upgrades::Pass).await
    }

    /// Proxies plain HTTP to `target` and answers every WebSocket upgrade with 403. It reads the
    /// first request of each connection (a WebSocket client opens a fresh connection to upgrade).
    pub async fn refusing_upgrades(target: std::net::SocketAddr) -> CuttableProxy {
        CuttableProxy::listen(target, Upgrades::Forbid).await
    }

    /// Like [`CuttableProxy::refusing_upgrades`], but closes an upgrade's connection unanswered.
    pub async fn dropping_upgrades(target: std::net::SocketAddr) -> CuttableProxy {
        CuttableProxy::listen(target, Upgrades::Drop).await
    }

    async fn listen(target: std::net::SocketAddr, upgrades: Upgrades) -> CuttableProxy {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watch) = tokio::sync::watch::channel(0u64);
        let refused_upgrades = Arc::new(AtomicUsize::new(0));
        let refused = refused_upgrades.clone();
        let blackout_until = Arc::new(Mutex::new(None::<std::time::Instant>));
        let blackout = blackout_until.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if blackout.lock().unwrap().is_some_and(|until| std::time::Instant::now() < until) {
                    continue; // dropped unanswered
                }
                let mut watch = watch.clone();
                watch.mark_unchanged();
                let refused = refused.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    if upgrades != Upgrades::Pass {
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                            let mut chunk = [0u8; 4096];
                            match inbound.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let upgrade = String::from_utf8_lossy(&head)
                            .lines()
                            .any(|line| line.to_ascii_lowercase().starts_with("upgrade:"));
                        if upgrade {
                            refused.fetch_add(1, Ordering::Relaxed);
                            if upgrades == Upgrades::Forbid {
                                let refusal =
                                    "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                                let _ = inbound.write_all(refusal.as_bytes()).await;
                            }
                            return;
                        }
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    if outbound.write_all(&head).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.changed() => {} // dropping both sockets cuts the connection
                    }
                });
            }
        });
        CuttableProxy { addr, cut, refused_upgrades, blackout_until }
    }

    /// WebSocket upgrades refused or dropped so far.
    pub fn refused_upgrades(&self) -> usize {
        self.refused_upgrades.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Cuts every open connection (new ones still work).
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Cuts every open connection and drops new ones for `duration`: a network blip that a client
    /// notices whether or not it had a request in flight (an idle pooled HTTP connection that is cut
    /// is silently replaced by the next request, so a bare [`CuttableProxy::cut_all`] between two
    /// long polls goes unnoticed).
    pub fn black_out(&self, duration: Duration) {
        *self.blackout_until.lock().unwrap() = Some(std::time::Instant::now() + duration);
        self.cut_all();
    }

    /// A link rewritten to go through the proxy.
    pub fn link(&self, link: &str, server: std::net::SocketAddr) -> String {
        link.replacen(&server.to_string(), &self.addr.to_string(), 1)
    }
}

/// What a [`CuttableProxy`] does with WebSocket upgrades.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Upgrades {
    Pass,
    Forbid,
    Drop,
}

/// Frames whose content is a counter (bytes 2..6, big-endian) instead of a picture: for tests of
/// the transport (RTP, SRTP, pacing, depacketizing) where decoding would only add noise. The
/// software codec path (`televisit_join`) carries counters inside real pictures.
pub mod counted {
    use std::time::Duration;

    use televisit_core::frame::{EncodedFrame, FrameKind};

    /// Audio frame `n` (20 ms, Opus-sized) from participant `sender`.
    pub fn audio_frame(sender: u8, n: u32) -> EncodedFrame {
        let mut data = vec![0xfc, sender];
        data.extend_from_slice(&n.to_be_bytes());
        data.resize(80, 0x55);
        EncodedFrame {
            kind: FrameKind::Audio,
            data,
            duration: Duration::from_millis(20),
            keyframe: false,
            timing: Default::default(),
        }
    }

    /// Camera frame `n` (a VP8-shaped interframe of 1 000 bytes) from participant `sender`.
    pub fn video_frame(sender: u8, n: u32) -> EncodedFrame {
        let mut data = vec![0x11, sender];
        data.extend_from_slice(&n.to_be_bytes());
        data.resize(1_000, 0x55);
        EncodedFrame {
            kind: FrameKind::Video,
            data,
            duration: Duration::from_millis(33),
            keyframe: false,
            timing: Default::default(),
        }
    }

    /// The counter a counted frame carries.
    pub fn counter(frame: &EncodedFrame) -> Option<u32> {
        frame.data.get(2..6).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
}

/// A media backend that passes everything to a real one and keeps what the peer connection is
/// told of the other side (its SDPs, its candidates) and of the ICE servers, per role.
pub struct SpyMedia {
    inner: Arc<dyn MediaBackend>,
    /// `(role of this side, command)` for `AcceptOffer`, `AcceptAnswer`, `AddRemoteCandidate`,
    /// `SetIceServers`, in order.
    pub seen: Arc<Mutex<Vec<(Role, PeerCommand)>>>,
    /// The ICE configuration of every session created, in order.
    pub sessions: Arc<Mutex<Vec<IceConfig>>>,
}

impl SpyMedia {
    /// Spies on `inner`.
    pub fn new(inner: Arc<dyn MediaBackend>) -> Arc<SpyMedia> {
        Arc::new(SpyMedia { inner, seen: Arc::default(), sessions: Arc::default() })
    }

    /// The commands seen so far.
    pub fn seen(&self) -> Vec<(Role, PeerCommand)> {
        self.seen.lock().unwrap().clone()
    }
}

struct SpySession {
    inner: Box<dyn MediaSession>,
    role: Role,
    seen: Arc<Mutex<Vec<(Role, PeerCommand)>>>,
}

impl MediaBackend for SpyMedia {
    fn create_session(
        &self,
        ice: IceConfig,
        role: Role,
        origin: std::time::Instant,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Box<dyn MediaSession> {
        self.sessions.lock().unwrap().push(ice.clone());
        let inner = self.inner.create_session(ice, role, origin, events);
        Box::new(SpySession { inner, role, seen: Arc::clone(&self.seen) })
    }
}

impl MediaSession for SpySession {
    fn command(&mut self, command: PeerCommand) {
        if matches!(
            command,
            PeerCommand::AcceptOffer(_)
                | PeerCommand::AcceptAnswer(_)
                | PeerCommand::AddRemoteCandidate(_)
                | PeerCommand::SetIceServers(_)
        ) {
            self.seen.lock().unwrap().push((self.role, command.clone()));
        }
        self.inner.command(command);
    }
}
