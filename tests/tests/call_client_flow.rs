//! The core's call client against the real server: waiting room, negotiation, chat, controls,
//! refusals, reconnects and the end — with simulated media (the WebRTC tests add real media).

use std::sync::Arc;
use std::time::Duration;

use televisit_core::call::machine::{CallEvent, CallState, EndReason};
use televisit_core::call::transport::SignalingTransport;
use televisit_core::client::media::PeerCommand;
use televisit_core::client::{CallClient, CallOptions, ClientEvent};
use televisit_core::error::CallError;
use televisit_core::protocol::{MediaState, QualityLevel, Role};
use televisit_tests::{CuttableProxy, Recorder, SimulatedMedia, TestServer};

const WAIT: Duration = Duration::from_secs(10);

fn new_client(link: &str, media: &Arc<SimulatedMedia>) -> (CallClient, Arc<Recorder>) {
    over(SignalingTransport::Auto, link, media)
}

/// A client whose signaling follows `transport`.
fn state(recorder: &Recorder, wanted: CallState) {
    recorder.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(wanted)));
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_and_patient_meet_chat_see_controls_and_end_with_the_duration() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let media = SimulatedMedia::new();
    let (patient, patient_events) = new_client(&visit.patient_link, &media);
    patient.join();
    state(&patient_events, CallState::WaitingRoom);
    patient_events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::Waiting { .. })));
    let joined = patient_events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::Joined { .. })));
    assert!(
        matches!(joined, ClientEvent::Call(CallEvent::Joined { role: Role::Patient, ref peer_display_name, .. }) if peer_display_name == "Dr. Ada Osei")
    );

    let (doctor, doctor_events) = new_client(&visit.doctor_link, &media);
    doctor.join();
    for events in [&doctor_events, &patient_events] {
        state(events, CallState::Connecting);
        state(events, CallState::Connected);
    }
    assert_eq!(doctor.role(), Some(Role::Doctor));
    let log = media.log.lock().unwrap().clone();
    assert!(
        log.contains(&(Role::Doctor, PeerCommand::CreateOffer { ice_restart: false })),
        "the doctor offers"
    );
    assert!(!log
        .iter()
        .any(|(role, c)| *role == Role::Patient && matches!(c, PeerCommand::CreateOffer { .. })));

    // Chat both ways.
    patient.send_chat("My knee hurts").unwrap();
    doctor.send_chat("Let's take a look").unwrap();
    for events in [&doctor_events, &patient_events] {
        events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::ChatReceived(m)) if m.text == "My knee hurts" && m.from == Role::Patient));
        events.wait_for(
            WAIT,
            |e| matches!(e, ClientEvent::Call(CallEvent::ChatReceived(m)) if m.text == "Let's take a look"),
        );
    }
    assert!(patient.send_chat("   ").is_err());

    // Mute and camera-off reach the peer.
    patient.set_microphone_enabled(false);
    doctor_events.wait_for(WAIT, |e| {
        *e == ClientEvent::Call(CallEvent::PeerMediaChanged(MediaState { audio: false, video: true }))
    });
    patient.set_camera_enabled(false);
    doctor_events.wait_for(WAIT, |e| {
        *e == ClientEvent::Call(CallEvent::PeerMediaChanged(MediaState { audio: false, video: false }))
    });

    // Screen share: the doctor's arrives, the patient's is refused on the device.
    doctor.set_screen_share(true).unwrap();
    patient_events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::PeerScreenShare(true)));
    assert!(media.log.lock().unwrap().contains(&(Role::Doctor, PeerCommand::SetScreenShare(true))));
    assert!(matches!(patient.set_screen_share(true), Err(CallError::NotAllowed(_))));

    // Quality is scored from stats once a second.
    doctor_events.wait_for(WAIT, |e| *e == ClientEvent::QualityChanged(QualityLevel::Excellent));

    doctor.hang_up();
    for events in [&doctor_events, &patient_events] {
        let ended = events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::Ended(_))));
        assert!(
            matches!(ended, ClientEvent::Call(CallEvent::Ended(EndReason::CallEnded { ended_by: Some(Role::Doctor), duration_seconds })) if (0..30).contains(&duration_seconds)),
            "{ended:?}"
        );
    }
    assert_eq!(patient.state(), CallState::Ended);
    // Events arrive on the client's event thread, never on the app's.
    assert!(patient_events.threads().iter().all(|t| t == "televisit-events"));
    doctor.close();
    patient.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_wrong_and_ended_links_give_typed_errors() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let media = SimulatedMedia::new();

    // Wrong shape: refused on the device, no network.
    let result = CallClient::new(
        "https://clinic.test/not-a-link",
        Arc::new(Recorder::default()),
        media.clone(),
        CallOptions::default(),
    );
    assert!(matches!(result, Err(CallError::LinkInvalid)));
    // Expired by the date written in the token: refused on the device.
    let expired = visit.patient_link.replacen("#token=tv1.", "#token=tv1.1000000000.", 1);
    let expired = {
        let (head, token) = expired.split_once("#token=").unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        format!("{head}#token=tv1.1000000000.{}", parts[parts.len() - 1])
    };
    let result =
        CallClient::new(&expired, Arc::new(Recorder::default()), media.clone(), CallOptions::default());
    assert!(matches!(result, Err(CallError::LinkExpired)));
    // Well-formed but unknown to the server.
    let forged = format!("{}AAAA", &visit.patient_link[..visit.patient_link.len() - 4]);
    let (client, events) = new_client(&forged, &media);
    client.join();
    events.wait_for(WAIT, |e| {
        *e == ClientEvent::Call(CallEvent::Ended(EndReason::Failed(CallError::LinkInvalid)))
    });
    // Unreachable server.
    let unreachable = visit.patient_link.replacen(&server.server.addr.to_string(), "127.0.0.1:9", 1);
    let (client, events) = new_client(&unreachable, &media);
    client.join();
    events.wait_for(WAIT, |e| {
        matches!(e, ClientEvent::Call(CallEvent::Ended(EndReason::Failed(CallError::ServerUnreachable(_)))))
    });
    // A call that has ended.
    let http = reqwest::Client::new();
    let end = format!("{}/api/appointments/{}/video-call/end", server.server.url(), visit.appointment_id);
    assert!(http.post(end).bearer_auth(&visit.doctor_api_token).send().await.unwrap().status().is_success());
    let (client, events) = new_client(&visit.doctor_link, &media);
    client.join();
    events.wait_for(WAIT, |e| {
        *e == ClientEvent::Call(CallEvent::Ended(EndReason::Failed(CallError::CallEnded)))
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_signaling_connection_reconnects_and_resumes_without_losing_chat() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let proxy = CuttableProxy::start(server.server.addr).await;
    let media = SimulatedMedia::new();
    let (patient, patient_events) = new_client(&proxy.link(&visit.patient_link, server.server.addr), &media);
    let (doctor, doctor_events) = new_client(&visit.doctor_link, &media);
    patient.join();
    state(&patient_events, CallState::WaitingRoom);
    doctor.join();
    state(&patient_events, CallState::Connected);
    state(&doctor_events, CallState::Connected);
    let sessions_before = media
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, c)| *r == Role::Patient && matches!(c, PeerCommand::Close))
        .count();

    proxy.cut_all();
    patient_events
        .wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::SignalingReconnecting { .. })));
    doctor.send_chat("Are you still there?").unwrap();
    patient_events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::SignalingRestored));
    patient_events.wait_for(
        WAIT,
        |e| matches!(e, ClientEvent::Call(CallEvent::ChatReceived(m)) if m.text == "Are you still there?"),
    );
    patient.send_chat("Yes, the line dropped").unwrap();
    doctor_events.wait_for(
        WAIT,
        |e| matches!(e, ClientEvent::Call(CallEvent::ChatReceived(m)) if m.text == "Yes, the line dropped"),
    );

    // The media connection was never torn down, and the doctor never saw the patient leave.
    assert_eq!(patient.state(), CallState::Connected);
    let sessions_after = media
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, c)| *r == Role::Patient && matches!(c, PeerCommand::Close))
        .count();
    assert_eq!(sessions_before, sessions_after);
    assert!(!doctor_events.events().contains(&ClientEvent::Call(CallEvent::PeerLeft)));
    let chats = doctor_events.events().iter().filter(|e| matches!(e, ClientEvent::Call(CallEvent::ChatReceived(m)) if m.text == "Yes, the line dropped")).count();
    assert_eq!(chats, 1, "delivered exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn close_releases_the_listener_and_no_callback_follows() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let media = SimulatedMedia::new();
    let (patient, events) = new_client(&visit.patient_link, &media);
    patient.join();
    state(&events, CallState::WaitingRoom);
    patient.close();
    assert_eq!(Arc::strong_count(&events), 1, "the client holds no reference to the listener after close");
    let count = events.events().len();
    // The doctor arriving would have produced events for a live client.
    let (doctor, _doctor_events) = new_client(&visit.doctor_link, &media);
    doctor.join();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events.events().len(), count);
    patient.close(); // idempotent
    doctor.close();
}

fn over(
    transport: SignalingTransport,
    link: &str,
    media: &Arc<SimulatedMedia>,
) -> (CallClient, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let options = CallOptions { signaling_transport: transport, ..CallOptions::default() };
    let client = CallClient::new(link, recorder.clone(), media.clone(), options).expect("valid link");
    (client, recorder)
}

/// Waits until a chat message with this text arrived.
fn chat_arrives(events: &Recorder, text: &str) {
    events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::ChatReceived(m)) if m.text == text));
}

fn chats_received(events: &Recorder, text: &str) -> usize {
    events
        .events()
        .iter()
        .filter(|e| matches!(e, ClientEvent::Call(CallEvent::ChatReceived(m)) if m.text == text))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_long_poll_resumes_over_http_without_losing_or_duplicating_chat() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let proxy = CuttableProxy::refusing_upgrades(server.server.addr).await;
    let media = SimulatedMedia::new();
    let link = proxy.link(&visit.patient_link, server.server.addr);
    let (patient, patient_events) = over(SignalingTransport::HttpOnly, &link, &media);
    let (doctor, doctor_events) = new_client(&visit.doctor_link, &media);
    patient.join();
    state(&patient_events, CallState::WaitingRoom);
    doctor.join();
    state(&patient_events, CallState::Connected);
    state(&doctor_events, CallState::Connected);
    patient.send_chat("Before the drop").unwrap();
    chat_arrives(&doctor_events, "Before the drop");

    // The line drops for a moment (the long poll in flight, or the next one, fails): the core
    // rejoins over HTTP, resuming after the last frame.
    proxy.black_out(Duration::from_millis(300));
    patient_events
        .wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::SignalingReconnecting { .. })));
    doctor.send_chat("Are you still there?").unwrap();
    patient.send_chat("Typed while the line was down").unwrap();
    patient_events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::SignalingRestored));
    chat_arrives(&patient_events, "Are you still there?");
    chat_arrives(&doctor_events, "Typed while the line was down");
    patient.send_chat("Back again").unwrap();
    chat_arrives(&doctor_events, "Back again");
    // Late duplicates would arrive within the next poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for text in ["Before the drop", "Are you still there?", "Typed while the line was down", "Back again"] {
        assert_eq!(chats_received(&patient_events, text), 1, "{text:?} reached the patient once");
        assert_eq!(chats_received(&doctor_events, text), 1, "{text:?} reached the doctor once");
    }
    assert_eq!(patient.state(), CallState::Connected, "the media connection stayed");
    assert!(!doctor_events.events().contains(&ClientEvent::Call(CallEvent::PeerLeft)));
    assert_eq!(proxy.refused_upgrades(), 0, "HTTP only: no WebSocket was tried");

    doctor.hang_up();
    let ended = patient_events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::Ended(_))));
    assert!(matches!(ended, ClientEvent::Call(CallEvent::Ended(EndReason::CallEnded { .. }))), "{ended:?}");
    doctor.close();
    patient.close();
}

/// A link replaced while the doctor is in the call (a new link issued): the next join is refused,
/// over HTTP with the same typed error as over the WebSocket.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_link_is_refused_over_http_with_the_same_typed_error_as_over_the_websocket() {
    let server = TestServer::start(|_| {}).await;
    let mut errors = Vec::new();
    for transport in [SignalingTransport::HttpOnly, SignalingTransport::WebSocketOnly] {
        let visit = server.started_visit().await;
        let proxy = CuttableProxy::refusing_upgrades(server.server.addr).await;
        let plain = CuttableProxy::start(server.server.addr).await;
        let through = if transport == SignalingTransport::HttpOnly { &proxy } else { &plain };
        let media = SimulatedMedia::new();
        let (doctor, events) = over(transport, &through.link(&visit.doctor_link, server.server.addr), &media);
        doctor.join();
        assert_eq!(doctor.joined().await, Ok(Role::Doctor));
        events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::ChatHistory(_))));

        let rejoin =
            format!("{}/api/appointments/{}/video-call/rejoin", server.server.url(), visit.appointment_id);
        let response =
            reqwest::Client::new().post(rejoin).bearer_auth(&visit.doctor_api_token).send().await.unwrap();
        assert!(response.status().is_success());
        through.cut_all();
        let ended = events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::Ended(_))));
        errors.push(ended);
        assert_eq!(proxy.refused_upgrades(), 0);
        doctor.close();
    }
    let refused = ClientEvent::Call(CallEvent::Ended(EndReason::Failed(CallError::LinkReplaced)));
    assert_eq!(errors, [refused.clone(), refused], "HTTP, then the WebSocket");
}

/// A proxy that closes upgrade connections without an answer: after three WebSocket attempts in a
/// row that never opened, signaling goes over HTTP.
#[tokio::test(flavor = "multi_thread")]
async fn websockets_that_never_open_move_signaling_to_http_after_three_tries() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let proxy = CuttableProxy::dropping_upgrades(server.server.addr).await;
    let media = SimulatedMedia::new();
    let (patient, patient_events) = new_client(&proxy.link(&visit.patient_link, server.server.addr), &media);
    patient.join();
    state(&patient_events, CallState::WaitingRoom);
    assert_eq!(proxy.refused_upgrades(), 3);
    let (doctor, doctor_events) = new_client(&visit.doctor_link, &media);
    doctor.join();
    state(&patient_events, CallState::Connected);
    patient.send_chat("Through the proxy").unwrap();
    chat_arrives(&doctor_events, "Through the proxy");
    doctor.close();
    patient.close();
}
