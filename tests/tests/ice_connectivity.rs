//! ICE as another WebRTC stack and a TURN relay see it (loopback only, real peer connections):
//! - the core's `ice-candidate` frames and SDPs satisfy a peer that checks them the way a browser's
//!   `addIceCandidate` does (a mid that names an m-line, end-of-candidates, trickle announced);
//! - relay-only ("hide my IP"): the doctor's side never hears a host or server-reflexive candidate
//!   of the patient, and media flows through a real TURN server;
//! - an ICE restart after the TURN credentials expired (`network_changed()`) fetches fresh ones and
//!   media comes back (the time is printed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use televisit_core::call::machine::{CallEvent, CallState, PeerConnectionState};
use televisit_core::client::media::{IceConfig, MediaBackend, MediaSession, PeerCommand, PeerEvent};
use televisit_core::client::{CallClient, CallOptions, ClientEvent};
use televisit_core::frame::FrameKind;
use televisit_core::headless::{spawn_synthetic_media, SyntheticMedia};
use televisit_core::protocol::{encode, ClientMessage, Frame, IceCandidate, Role};
use televisit_tests::turn::TurnServer;
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
    session: Box<dyn MediaSession>,
    events: mpsc::UnboundedReceiver<PeerEvent>,
    /// The other side's SDP, once applied.
    remote_sdp: Option<String>,
    candidates_accepted: usize,
    end_of_candidates: bool,
    connected: bool,
}

fn side(role: Role) -> Side {
    let (tx, events) = mpsc::unbounded_channel();
    let session = loopback_media().create_session(IceConfig::default(), role, Instant::now(), tx);
    Side {
        session,
        events,
        remote_sdp: None,
        candidates_accepted: 0,
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
                    assert!(!from.end_of_candidates, "no candidate after the end-of-candidates");
                    from.candidates_accepted += 1;
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

    let (mut doctor, mut patient) = (side(Role::Doctor), side(Role::Patient));
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
    assert!(doctor.candidates_accepted >= 1 && patient.candidates_accepted >= 1);
    for mut side in [doctor, patient] {
        side.session.command(PeerCommand::Close);
    }
}

/// A server whose ICE servers are `turn`'s, with credentials valid for `ttl_seconds`.
async fn server_with_turn(turn: &TurnServer, ttl_seconds: u64) -> TestServer {
    let url = turn.udp_url();
    TestServer::start(move |config| {
        config.turn_urls = vec![url];
        config.turn_secret = Some(TURN_SECRET.into());
        config.turn_ttl_seconds = ttl_seconds;
    })
    .await
}

/// A call client on loopback media (spied on), already joining.
fn join(link: &str, relay_only: bool) -> (Arc<CallClient>, Arc<Recorder>, Arc<SpyMedia>) {
    let recorder = Arc::new(Recorder::default());
    let media = SpyMedia::new(loopback_media());
    let options = CallOptions { relay_only, ..CallOptions::default() };
    let client = CallClient::new(link, recorder.clone(), media.clone(), options).expect("valid link");
    client.join();
    (Arc::new(client), recorder, media)
}

fn connected(event: &ClientEvent) -> bool {
    *event == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected))
}

fn send_media(client: &Arc<CallClient>, stop: &Arc<AtomicBool>) -> SyntheticMedia {
    spawn_synthetic_media(Arc::clone(client), Arc::new(AtomicBool::new(true)), Arc::clone(stop))
        .expect("codecs")
}

/// Waits until `recorder` has `count` more remote video frames than `after`; returns when.
async fn frames_arrive(recorder: &Arc<Recorder>, after: usize, count: usize) -> Instant {
    let deadline = Instant::now() + WAIT;
    loop {
        let received = recorder.remote_frames(FrameKind::Video).len();
        if received >= after + count {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "timed out: {} video frames, wanted {}", received, after + count);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The patient's latest stats.
fn last_stats(recorder: &Recorder) -> Option<televisit_core::client::media::MediaStats> {
    recorder.events().into_iter().rev().find_map(|e| match e {
        ClientEvent::Stats(stats) if stats.local_candidate_type.is_some() => Some(stats),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_only_patient_shows_the_doctor_only_relay_candidates_and_media_flows_through_turn() {
    let turn = TurnServer::start(TURN_SECRET).await;
    let server = server_with_turn(&turn, 3600).await;
    let visit = server.started_visit().await;
    let (patient, patient_events, _) = join(&visit.patient_link, true);
    patient_events
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    let (doctor, doctor_events, doctor_media) = join(&visit.doctor_link, false);
    for events in [&doctor_events, &patient_events] {
        events.wait_for(WAIT, connected);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sender = send_media(&patient, &stop);
    frames_arrive(&doctor_events, 0, 30).await;

    // Everything the doctor's peer connection heard of the patient.
    let seen = doctor_media.seen();
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
    assert!(!turn.accepted.lock().unwrap().is_empty(), "the patient allocated on the TURN server");

    // The patient's stats tell the path.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = last_stats(&patient_events).expect("stats with the selected pair");
    assert_eq!(stats.local_candidate_type.as_deref(), Some("relay"), "{stats:?}");
    assert_eq!(stats.candidate_pair_type.as_deref(), Some("relay"));
    assert_eq!(stats.relay_transport.as_deref(), Some("udp"));
    println!("patient's path: {}", televisit_core::headless::path_description(&stats));

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    doctor.close();
    patient.close();
    turn.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_change_after_the_turn_credentials_expired_restarts_ice_with_fresh_ones_and_media_comes_back(
) {
    let turn = TurnServer::start(TURN_SECRET).await;
    let ttl_seconds = 2;
    let server = server_with_turn(&turn, ttl_seconds).await;
    let visit = server.started_visit().await;
    let (patient, patient_events, patient_media) = join(&visit.patient_link, true);
    patient_events
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    let (doctor, doctor_events, _) = join(&visit.doctor_link, false);
    for events in [&doctor_events, &patient_events] {
        events.wait_for(WAIT, connected);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sender = send_media(&patient, &stop);
    frames_arrive(&doctor_events, 0, 20).await;

    // The visit outlives the credentials it joined with.
    tokio::time::sleep(Duration::from_secs(ttl_seconds + 1)).await;
    let unix_now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let before = doctor_events.remote_frames(FrameKind::Video).len();
    let changed_at = Instant::now();
    patient.network_changed();
    let first_at = frames_arrive(&doctor_events, before, 1).await;
    let back_at = frames_arrive(&doctor_events, before, 30).await;
    println!(
        "network change → first new picture at the doctor after {:?}, 30 after {:?} (relayed)",
        first_at - changed_at,
        back_at - changed_at
    );

    let fresh: Vec<IceConfig> = patient_media
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
    assert!(turn.accepted(username), "the TURN server took the fresh credentials");
    println!(
        "requests refused for expired credentials (the old allocation's release): {}",
        turn.expired_refusals.load(Ordering::Relaxed)
    );
    // The pictures after the change came relayed, through a new allocation.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(last_stats(&patient_events).unwrap().local_candidate_type.as_deref(), Some("relay"));

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    doctor.close();
    patient.close();
    turn.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_change_restarts_ice_and_media_comes_back() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let (patient, patient_events, patient_media) = join(&visit.patient_link, false);
    patient_events
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    let (doctor, doctor_events, _) = join(&visit.doctor_link, false);
    for events in [&doctor_events, &patient_events] {
        events.wait_for(WAIT, connected);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sender = send_media(&patient, &stop);
    frames_arrive(&doctor_events, 0, 20).await;
    let answers_before = answers_applied(&patient_media);
    let before = doctor_events.remote_frames(FrameKind::Video).len();
    let changed_at = Instant::now();
    patient.network_changed();
    let first_at = frames_arrive(&doctor_events, before, 1).await;
    let back_at = frames_arrive(&doctor_events, before, 30).await;
    println!(
        "network change → first new picture at the doctor after {:?}, 30 after {:?} (host path)",
        first_at - changed_at,
        back_at - changed_at
    );
    // The restart was negotiated: the patient offered, the doctor answered with new ICE credentials.
    let answers = answers_applied(&patient_media);
    assert!(answers > answers_before, "an answer to the patient's restart offer");
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    doctor.close();
    patient.close();
}

/// How many answers the patient's peer connection applied.
fn answers_applied(patient_media: &SpyMedia) -> usize {
    patient_media.seen().iter().filter(|(_, c)| matches!(c, PeerCommand::AcceptAnswer(_))).count()
}
