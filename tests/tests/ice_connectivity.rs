//! ICE as another WebRTC stack and a TURN relay see it (loopback only, real peer connections):
//! - the core's `ice-candidate` frames and SDPs satisfy a peer that checks them the way a browser's
//!   `addIceCandidate` does (a mid that names an m-line, end-of-candidates, trickle announced);
//! - relay-only ("hide my IP"): the doctor's side never hears a host or server-reflexive candidate
//!   of the patient, and media flows through the server's embedded TURN server; a relay-only policy
//!   that arrives mid-call (a later ice-servers reply) holds from the next ICE restart on;
//! - TURN over TCP and over TLS (the core's bridges; the embedded TURN server reached only that
//!   way): the relay-only patient's media flows and its stats name the relay transport;
//! - an ICE restart after the TURN credentials expired (`network_changed()`) fetches fresh ones and
//!   media comes back (the time is printed);
//! - over the relay both sides decode each other's camera from the start (the relay-only patient's
//!   first keyframe is lost on the way in; its keyframe request must reach the doctor's encoder),
//!   even when the patient's app never asks for a keyframe itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use televisit_core::api::IceServer;
use televisit_core::call::machine::{CallEvent, CallState, PeerConnectionState};
use televisit_core::call::stats::{CandidateType, RelayTransport};
use televisit_core::client::media::{
    IceConfig, MediaBackend, MediaSession, MediaStats, PeerCommand, PeerEvent,
};
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallOptions, ClientEvent};
use televisit_core::frame::FrameKind;
use televisit_core::protocol::{encode, ClientMessage, Frame, IceCandidate, Role};
use televisit_join::{spawn_synthetic_media, HeadlessOptions, PictureReader, SyntheticMedia};
use televisit_tests::turn_lab::LoopbackTurn as Turn;
use televisit_tests::{loopback_media, Recorder, SpyMedia, TestServer};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);
const TURN_SECRET: &str = "turn-test-secret";

/// The m-lines' mids of an SDP, in order.
fn mids(sdp: &str) -> Vec<String> {
    sdp.split("\nm=")
        .skip(1)
        .map(|section| {
            section.lines().find_map(|l| l.trim_end().strip_prefix("a=mid:")).unwrap_or_default().to_owned()
        })
        .collect()
}

/// What a browser's `addIceCandidate` does with an `ice-candidate` frame (W3C webrtc-pc §4.4.1.6
/// "add an ICE candidate"): refuse it before a remote description, without both mid and index,
/// or when the mid (else the index) names no m-line of the remote description. `Ok(true)` for the
/// end-of-candidates.
fn browser_add_ice_candidate(remote_sdp: Option<&str>, frame: &Value) -> Result<bool, String> {
    let sdp = remote_sdp.ok_or("InvalidStateError: no remote description")?;
    let (mid, index) = (frame["sdp_mid"].as_str(), frame["sdp_m_line_index"].as_u64());
    let mids = mids(sdp);
    match (mid, index) {
        (None, None) => return Err("TypeError: sdpMid and sdpMLineIndex are both null".into()),
        (Some(mid), _) if !mids.iter().any(|m| m == mid) => {
            return Err(format!("OperationError: no m-line has mid {mid:?} (mids {mids:?})"))
        }
        (None, Some(index)) if index as usize >= mids.len() => {
            return Err(format!("OperationError: no m-line {index}"))
        }
        _ => {}
    }
    Ok(frame["candidate"].as_str().ok_or("TypeError: no candidate")?.is_empty())
}

/// A candidate as the signaling server relays it: the core's `ice-candidate` frame, as JSON.
fn as_frame(candidate: &IceCandidate) -> Value {
    serde_json::from_str(&encode(&Frame::new(ClientMessage::IceCandidate(candidate.clone())))).unwrap()
}

/// One side of a directly wired call.
struct Side {
    role: Role,
    session: Box<dyn MediaSession>,
    events: mpsc::UnboundedReceiver<PeerEvent>,
    /// The other side's SDP, once applied.
    remote_sdp: Option<String>,
    /// The candidates the other side accepted.
    candidates_accepted: Vec<String>,
    end_of_candidates: bool,
    connected: bool,
}

fn side(role: Role) -> Side {
    side_on(role, loopback_media())
}

fn side_on(role: Role, media: Arc<dyn MediaBackend>) -> Side {
    let (tx, events) = mpsc::unbounded_channel();
    let session = media.create_session(IceConfig::default(), role, Instant::now(), tx);
    Side {
        role,
        session,
        events,
        remote_sdp: None,
        candidates_accepted: Vec::new(),
        end_of_candidates: false,
        connected: false,
    }
}

/// Hands `event` of `from` to `to` as the strict peer would; panics on what it would refuse.
fn deliver(event: PeerEvent, from: &mut Side, to: &mut Side) {
    match event {
        PeerEvent::LocalOffer(sdp) | PeerEvent::LocalAnswer(sdp) => {
            let session = sdp.split("\r\nm=").next().unwrap();
            assert!(session.contains("\r\na=ice-options:trickle"), "trickle announced: {sdp}");
            to.remote_sdp = Some(sdp.clone());
            let offer = from.remote_sdp.is_none();
            to.session.command(if offer {
                PeerCommand::AcceptOffer(sdp)
            } else {
                PeerCommand::AcceptAnswer(sdp)
            });
        }
        PeerEvent::LocalCandidate(candidate) => {
            let frame = as_frame(&candidate);
            match browser_add_ice_candidate(to.remote_sdp.as_deref(), &frame) {
                Ok(true) => from.end_of_candidates = true,
                Ok(false) => {
                    assert!(
                        !from.end_of_candidates,
                        "no candidate after the end-of-candidates: the {:?} sent {} after {:?}",
                        from.role, frame, from.candidates_accepted
                    );
                    from.candidates_accepted.push(candidate.candidate.clone());
                    to.session.command(PeerCommand::AddRemoteCandidate(candidate));
                }
                Err(refusal) => panic!("the peer refuses {frame}: {refusal}"),
            }
        }
        PeerEvent::State(PeerConnectionState::Connected) => from.connected = true,
        PeerEvent::Warning(warning) => panic!("{warning}"),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cores_offer_answer_and_candidates_satisfy_a_peer_that_checks_them_like_a_browser() {
    // The strict peer refuses what the crate alone sends: a mid that names no m-line.
    let offer = "v=0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
    let crate_form =
        serde_json::json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 5 typ host", "sdp_mid": ""});
    assert!(browser_add_ice_candidate(Some(offer), &crate_form).unwrap_err().starts_with("OperationError"));

    let (doctor, patient) = (side(Role::Doctor), side(Role::Patient));
    let (doctor, patient) = wire(doctor, patient).await;
    assert!(!doctor.candidates_accepted.is_empty() && !patient.candidates_accepted.is_empty());
    for mut side in [doctor, patient] {
        side.session.command(PeerCommand::Close);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sides_without_udp_connect_over_ice_tcp_host_candidates() {
    let tcp_only = || {
        Arc::new(WebRtcMedia::new(WebRtcSettings {
            udp_addrs: vec![],
            tcp_addrs: vec!["127.0.0.1:0".into()],
            ..WebRtcSettings::default()
        }))
    };
    let (doctor, patient) = wire(side_on(Role::Doctor, tcp_only()), side_on(Role::Patient, tcp_only())).await;
    assert!(doctor.connected && patient.connected);
    for candidate in doctor.candidates_accepted.iter().chain(&patient.candidates_accepted) {
        assert!(candidate.contains(" tcp ") && candidate.contains(" tcptype "), "TCP only: {candidate}");
    }
    for mut side in [doctor, patient] {
        side.session.command(PeerCommand::Close);
    }
}

/// Each ICE restart (a phone changing networks restarts as often as it moves) trickles its
/// candidates once each, after its offer and before its end-of-candidates, as a strict peer wants.
#[tokio::test(flavor = "multi_thread")]
async fn ice_restarts_trickle_each_candidate_once_between_their_offer_and_their_end() {
    let (mut doctor, mut patient) = wire(side(Role::Doctor), side(Role::Patient)).await;
    for n in 0..5 {
        let (from, to) = if n % 2 == 0 { (&mut patient, &mut doctor) } else { (&mut doctor, &mut patient) };
        let before = from.candidates_accepted.len();
        restart(from, to).await;
        let trickled = &from.candidates_accepted[before..];
        assert!(!trickled.is_empty(), "restart {n} trickled its candidates");
        let once: std::collections::HashSet<&String> = trickled.iter().collect();
        assert_eq!(once.len(), trickled.len(), "restart {n} trickled a candidate twice: {trickled:?}");
    }
    for mut side in [doctor, patient] {
        side.session.command(PeerCommand::Close);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_only_policy_that_arrives_mid_call_makes_the_next_restart_relay_only_without_the_patients_address(
) {
    let turn = Turn::start(TURN_SECRET).await;
    let (mut doctor, mut patient) = wire(side(Role::Doctor), side(Role::Patient)).await;
    let host_candidates = patient.candidates_accepted.len();
    let answer = doctor.remote_sdp.clone().unwrap_or_default();
    let host =
        answer.contains("typ host") || patient.candidates_accepted.iter().any(|c| c.contains("typ host"));
    assert!(host, "a host path first: {:?}", patient.candidates_accepted);

    // A later ice-servers reply brings the clinic's relay-only (what the call machine passes on
    // with `SetIceServers`), then the ICE restart.
    let expires =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 3600;
    let (username, credential) =
        televisit_server::secrets::turn_credentials(TURN_SECRET, "r-patient", expires);
    let servers = vec![IceServer {
        urls: vec![turn.udp_url()],
        username: Some(username),
        credential: Some(credential),
    }];
    patient.session.command(PeerCommand::SetIceServers(IceConfig { servers, relay_only: true }));
    let offer = restart(&mut patient, &mut doctor).await;
    assert!(!offer.contains("typ host") && !offer.contains("typ srflx"), "{offer}");
    let after = &patient.candidates_accepted[host_candidates..];
    assert!(!after.is_empty(), "the restart trickled its relay candidate");
    for candidate in after {
        assert!(candidate.contains(" typ relay "), "only relay candidates: {candidate}");
        assert!(candidate.ends_with("raddr 0.0.0.0 rport 0"), "no address of the patient: {candidate}");
    }
    assert!(turn.allocations() >= 1, "the patient allocated on the TURN server");
    for mut side in [doctor, patient] {
        side.session.command(PeerCommand::Close);
    }
    turn.server.stop().await;
}

/// An ICE restart offered by `from`: carries everything between the two as the strict peer would
/// until both have ended their new candidates; returns the restart offer.
async fn restart(from: &mut Side, to: &mut Side) -> String {
    from.session.command(PeerCommand::CreateOffer { ice_restart: true });
    from.end_of_candidates = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut restart_offer = None;
    while !(restart_offer.is_some() && from.end_of_candidates && to.end_of_candidates) {
        tokio::select! {
            Some(event) = from.events.recv() => match event {
                PeerEvent::LocalOffer(sdp) => {
                    to.remote_sdp = Some(sdp.clone());
                    to.end_of_candidates = false;
                    to.session.command(PeerCommand::AcceptOffer(sdp.clone()));
                    restart_offer = Some(sdp);
                }
                event => deliver(event, from, to),
            },
            Some(event) = to.events.recv() => deliver(event, to, from),
            _ = tokio::time::sleep_until(deadline) => panic!("timed out: the restart's candidates did not end"),
        }
    }
    restart_offer.expect("the restart's offer")
}

/// Offers from `doctor`, and carries everything between the two as the strict peer would, until
/// both are connected and each has ended its candidates.
async fn wire(mut doctor: Side, mut patient: Side) -> (Side, Side) {
    doctor.session.command(PeerCommand::CreateOffer { ice_restart: false });
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(doctor.connected && patient.connected && doctor.end_of_candidates && patient.end_of_candidates) {
        tokio::select! {
            Some(event) = doctor.events.recv() => deliver(event, &mut doctor, &mut patient),
            Some(event) = patient.events.recv() => deliver(event, &mut patient, &mut doctor),
            _ = tokio::time::sleep_until(deadline) => panic!(
                "timed out: connected {}/{}, end-of-candidates {}/{}",
                doctor.connected, patient.connected, doctor.end_of_candidates, patient.end_of_candidates
            ),
        }
    }
    (doctor, patient)
}

/// A server whose ICE servers are `turn`'s UDP URL, with credentials valid for `ttl_seconds`.
async fn server_with_turn(turn: &Turn, ttl_seconds: u64) -> TestServer {
    server_with_turn_url(turn.udp_url(), ttl_seconds).await
}

async fn server_with_turn_url(url: String, ttl_seconds: u64) -> TestServer {
    TestServer::start(move |config| {
        config.turn_urls = vec![url];
        config.turn_secret = Some(TURN_SECRET.into());
        config.turn_ttl_seconds = ttl_seconds;
    })
    .await
}

/// A call client (spied on), already joining.
fn join(
    link: &str,
    relay_only: bool,
    media: Arc<dyn MediaBackend>,
) -> (Arc<CallClient>, Arc<Recorder>, Arc<SpyMedia>) {
    let recorder = Arc::new(Recorder::default());
    let media = SpyMedia::new(media);
    let options = CallOptions { relay_only, ..CallOptions::default() };
    let client = CallClient::new(link, recorder.clone(), media.clone(), options).expect("valid link");
    client.join();
    (Arc::new(client), recorder, media)
}

/// A visit in a call: the patient (relay-only if asked, on `patient_media`) waited, the doctor
/// (loopback, all candidates) joined, both connected, and the patient's camera sends.
struct InCall {
    patient: Arc<CallClient>,
    patient_events: Arc<Recorder>,
    patient_media: Arc<SpyMedia>,
    doctor: Arc<CallClient>,
    doctor_events: Arc<Recorder>,
    doctor_media: Arc<SpyMedia>,
    stop: Arc<AtomicBool>,
    camera: SyntheticMedia,
}

impl InCall {
    async fn start(server: &TestServer, relay_only: bool, patient_media: Arc<dyn MediaBackend>) -> InCall {
        let visit = server.started_visit().await;
        let (patient, patient_events, patient_media) = join(&visit.patient_link, relay_only, patient_media);
        patient_events
            .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
        let (doctor, doctor_events, doctor_media) = join(&visit.doctor_link, false, loopback_media());
        for events in [&doctor_events, &patient_events] {
            events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let camera =
            spawn_synthetic_media(Arc::clone(&patient), Arc::new(AtomicBool::new(true)), Arc::clone(&stop))
                .expect("codecs");
        InCall { patient, patient_events, patient_media, doctor, doctor_events, doctor_media, stop, camera }
    }

    /// The patient's camera pictures the doctor received so far.
    fn pictures_at_the_doctor(&self) -> usize {
        self.doctor_events.remote_frames(FrameKind::Video).len()
    }

    /// Waits until the doctor has `count` more of the patient's pictures than `after`; returns when.
    async fn pictures_arrive(&self, after: usize, count: usize) -> Instant {
        let deadline = Instant::now() + WAIT;
        loop {
            let received = self.pictures_at_the_doctor();
            if received >= after + count {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "timed out: {} pictures, wanted {}", received, after + count);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The patient's latest stats with a selected pair (after waiting for a fresh sample).
    async fn patient_stats(&self) -> MediaStats {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let stats = self.patient_events.events().into_iter().rev().find_map(|e| match e {
            ClientEvent::Stats(stats) if stats.local_candidate_type.is_some() => Some(stats),
            _ => None,
        });
        let stats = stats.expect("stats with the selected pair");
        println!("patient's path: {}", televisit_join::path_description(&stats));
        stats
    }

    /// The patient's network changed: returns how long until the doctor got the first of the
    /// patient's pictures after it, and 30 of them (printed).
    async fn change_the_patients_network(&self, path: &str) {
        let before = self.pictures_at_the_doctor();
        let changed_at = Instant::now();
        self.patient.network_changed();
        let first_at = self.pictures_arrive(before, 1).await;
        let back_at = self.pictures_arrive(before, 30).await;
        println!(
            "network change ({path}) → first new picture at the doctor after {:?}, 30 after {:?}",
            first_at - changed_at,
            back_at - changed_at
        );
    }

    fn end(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.camera.join().unwrap();
        self.doctor.close();
        self.patient.close();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_only_patient_shows_the_doctor_only_relay_candidates_and_media_flows_through_turn() {
    let turn = Turn::start(TURN_SECRET).await;
    let server = server_with_turn(&turn, 3600).await;
    let call = InCall::start(&server, true, loopback_media()).await;
    call.pictures_arrive(0, 30).await;

    // Everything the doctor's peer connection heard of the patient.
    let seen = call.doctor_media.seen();
    let answer = seen
        .iter()
        .find_map(|(_, c)| match c {
            PeerCommand::AcceptAnswer(sdp) => Some(sdp.clone()),
            _ => None,
        })
        .expect("the patient's answer");
    assert!(!answer.contains("typ host") && !answer.contains("typ srflx"), "{answer}");
    let candidates: Vec<String> = seen
        .iter()
        .filter_map(|(_, c)| match c {
            PeerCommand::AddRemoteCandidate(c) if !c.candidate.is_empty() => Some(c.candidate.clone()),
            _ => None,
        })
        .collect();
    assert!(!candidates.is_empty(), "the patient trickled its relay candidate");
    for candidate in &candidates {
        assert!(candidate.contains(" typ relay "), "only relay candidates: {candidate}");
        assert!(candidate.ends_with("raddr 0.0.0.0 rport 0"), "no address of the patient: {candidate}");
    }
    assert!(turn.allocations() >= 1, "the patient allocated on the TURN server");
    assert!(turn.server.counters.relayed_out_bytes.load(Ordering::Relaxed) > 0, "media crossed the relay");

    let stats = call.patient_stats().await;
    assert_eq!(stats.local_candidate_type, Some(CandidateType::Relay), "{stats:?}");
    assert_eq!(stats.candidate_pair_type.as_deref(), Some("relay"));
    assert_eq!(stats.relay_transport, Some(RelayTransport::Udp));
    call.end();
    turn.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_change_after_the_turn_credentials_expired_restarts_ice_with_fresh_ones_and_media_comes_back(
) {
    let turn = Turn::start(TURN_SECRET).await;
    let ttl_seconds = 2;
    let server = server_with_turn(&turn, ttl_seconds).await;
    let call = InCall::start(&server, true, loopback_media()).await;
    call.pictures_arrive(0, 20).await;
    let allocations_before = turn.allocations();

    // The visit outlives the credentials it joined with.
    tokio::time::sleep(Duration::from_secs(ttl_seconds + 1)).await;
    let unix_now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    call.change_the_patients_network("relayed").await;

    let fresh: Vec<IceConfig> = call
        .patient_media
        .seen()
        .into_iter()
        .filter_map(|(_, c)| match c {
            PeerCommand::SetIceServers(ice) => Some(ice),
            _ => None,
        })
        .collect();
    let last = fresh.last().expect("fresh ICE servers applied before the restart");
    assert!(last.relay_only, "still relay-only");
    let username = last.servers[0].username.as_deref().unwrap();
    let expiry: i64 = username.split(':').next().unwrap().parse().unwrap();
    assert!(expiry >= unix_now, "the restart's credentials are fresh: {expiry} < {unix_now}");
    assert!(
        turn.allocations() > allocations_before,
        "the TURN server took the fresh credentials ({username}): a new allocation"
    );
    println!(
        "requests refused for expired credentials (the old allocation's release): {}",
        turn.server.counters.expired_refusals.load(Ordering::Relaxed)
    );
    assert_eq!(call.patient_stats().await.local_candidate_type, Some(CandidateType::Relay));
    call.end();
    turn.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_change_restarts_ice_and_media_comes_back() {
    let server = TestServer::start(|_| {}).await;
    let call = InCall::start(&server, false, loopback_media()).await;
    call.pictures_arrive(0, 20).await;
    let answers = || {
        let seen = call.patient_media.seen();
        seen.iter().filter(|(_, c)| matches!(c, PeerCommand::AcceptAnswer(_))).count()
    };
    let answers_before = answers();
    call.change_the_patients_network("host path").await;
    // The restart was negotiated: the patient offered, the doctor answered.
    assert!(answers() > answers_before, "an answer to the patient's restart offer");
    call.end();
}

/// A relay-only patient whose only TURN URL is `url` (reached through a TCP or TLS front) calls a
/// doctor; media flows and the patient's stats say `relay` over `transport`.
async fn relayed_call_over_a_stream(
    url: String,
    turn: &Turn,
    transport: RelayTransport,
    tls: Option<Arc<rustls::ClientConfig>>,
) {
    let server = server_with_turn_url(url, 3600).await;
    let media = Arc::new(WebRtcMedia::new(WebRtcSettings {
        udp_addrs: vec!["127.0.0.1:0".into()],
        turn_tls: tls,
        ..WebRtcSettings::default()
    }));
    let started = Instant::now();
    let call = InCall::start(&server, true, media).await;
    let first = call.pictures_arrive(0, 1).await;
    call.pictures_arrive(0, 30).await;
    println!(
        "relay over {}: visit start → first picture at the doctor {:?}",
        transport.as_str(),
        first - started
    );
    assert!(turn.stream_connections() >= 1, "the patient came in over {transport:?}");
    let stats = call.patient_stats().await;
    assert_eq!(stats.local_candidate_type, Some(CandidateType::Relay), "{stats:?}");
    assert_eq!(stats.relay_transport, Some(transport), "{stats:?}");
    call.end();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_only_patient_reaches_turn_over_tcp() {
    let turn = Turn::start(TURN_SECRET).await;
    let url = turn.url("turn:", "?transport=tcp");
    relayed_call_over_a_stream(url, &turn, RelayTransport::Tcp, None).await;
    turn.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_only_patient_reaches_turn_over_tls() {
    let turn = Turn::start(TURN_SECRET).await;
    let url = turn.url("turns:localhost:", "?transport=tcp");
    relayed_call_over_a_stream(url, &turn, RelayTransport::Tls, Some(Arc::clone(&turn.client_tls))).await;
    turn.server.stop().await;
}

/// Runs the headless client (synthetic camera and microphone, decodes what arrives, asks for a
/// keyframe when a picture cannot be decoded) on `link` for `seconds`; returns what it printed.
fn headless_call(link: String, relay_only: bool, seconds: u64) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let options = HeadlessOptions {
            link,
            duration: Some(Duration::from_secs(seconds)),
            relay_only,
            ..HeadlessOptions::default()
        };
        let mut out = Vec::new();
        let outcome = televisit_join::run(options, &mut out);
        let out = String::from_utf8_lossy(&out).into_owned();
        assert!(outcome.is_ok(), "{outcome:?}\n{out}");
        out
    })
}

/// A figure of a headless client's summary line, e.g. `video frames decoded`.
fn summary_figure(out: &str, name: &str) -> u64 {
    let summary =
        out.lines().find(|l| l.starts_with("summary:")).unwrap_or_else(|| panic!("no summary:\n{out}"));
    let after = summary.split(name).nth(1).unwrap_or_else(|| panic!("no {name} in {summary}"));
    after.trim().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Through the relay, the patient (relay-only, waiting first, the answerer) decodes the doctor's
/// camera from the start of the call, as the doctor decodes the patient's: the first keyframe is
/// lost there (the crate hands the relayed first packets over before the track exists), so this
/// holds only if the patient's keyframe request reaches the doctor's encoder.
#[tokio::test(flavor = "multi_thread")]
async fn through_the_relay_both_sides_decode_each_others_camera_from_the_start() {
    let turn = Turn::start(TURN_SECRET).await;
    let server = server_with_turn(&turn, 3600).await;
    let visit = server.started_visit().await;
    let patient = headless_call(visit.patient_link.clone(), true, 8);
    tokio::time::sleep(Duration::from_millis(500)).await; // the patient waits first
    let doctor = headless_call(visit.doctor_link.clone(), false, 6);
    let (doctor, patient) = (doctor.join().unwrap(), patient.join().unwrap());
    for (who, out) in [("doctor", &doctor), ("patient", &patient)] {
        let relayed = out.lines().any(|l| l.starts_with("stats:") && l.contains("relay"));
        assert!(relayed, "the {who}'s call went through the relay:\n{out}");
        let (received, decoded) =
            (summary_figure(out, "video frames received"), summary_figure(out, "video frames decoded"));
        println!("{who}: {decoded} of {received} pictures decoded");
        // Six seconds at 30 fps; at most half a second lost before the first keyframe.
        assert!(received >= 120, "the {who} received too few pictures:\n{out}");
        assert!(received - decoded <= 15, "the {who} decoded {decoded} of {received} pictures:\n{out}");
    }
}

/// Through the relay, a patient app that never asks for a keyframe itself still decodes the
/// doctor's camera from the start: the core asks when a stream starts without its keyframe.
#[tokio::test(flavor = "multi_thread")]
async fn through_the_relay_the_core_recovers_a_lost_first_keyframe_without_the_app() {
    let turn = Turn::start(TURN_SECRET).await;
    let server = server_with_turn(&turn, 3600).await;
    let call = InCall::start(&server, true, loopback_media()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let doctor_camera =
        spawn_synthetic_media(Arc::clone(&call.doctor), Arc::new(AtomicBool::new(true)), Arc::clone(&stop))
            .expect("codecs");
    // The doctor's app makes a keyframe when asked, as every app does.
    let started = Instant::now();
    let mut heard = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let requests = call
            .doctor_events
            .events()
            .iter()
            .filter(|e| **e == ClientEvent::KeyframeRequested(FrameKind::Video))
            .count();
        for _ in heard..requests {
            doctor_camera.request_keyframe();
        }
        heard = requests;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    doctor_camera.join().unwrap();
    let mut pictures = PictureReader::new().unwrap();
    let frames = call.patient_events.remote_frames(FrameKind::Video);
    let decoded = frames.iter().filter(|frame| pictures.receive(frame).is_ok()).count();
    println!("patient: {decoded} of {} of the doctor's pictures decoded", frames.len());
    assert!(frames.len() >= 60, "the patient received {} pictures", frames.len());
    assert!(frames.len() - decoded <= 15, "the patient decoded {decoded} of {}", frames.len());
    call.end();
}
