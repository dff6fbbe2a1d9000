//! Real WebRTC calls between two call clients through the real server (loopback only): ICE, DTLS-SRTP,
//! Opus and VP8 tracks carrying encoded frames both ways; the frames' content is checked end to end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallOptions, ClientEvent};
use televisit_core::frame::FrameKind;
use televisit_core::headless::{
    frame_counter, spawn_synthetic_media, synthetic_audio_frame, synthetic_video_frame,
};
use televisit_tests::{CuttableProxy, Recorder, TestServer};

const WAIT: Duration = Duration::from_secs(15);

fn media() -> Arc<WebRtcMedia> {
    Arc::new(WebRtcMedia::new(WebRtcSettings { udp_addrs: vec!["127.0.0.1:0".into()], ..Default::default() }))
}

fn join(link: &str) -> (Arc<CallClient>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let client =
        CallClient::new(link, recorder.clone(), media(), CallOptions::default()).expect("valid link");
    client.join();
    (Arc::new(client), recorder)
}

/// Sends the synthetic camera and microphone (ids: doctor 1, patient 2) until `stop`.
fn start_sending(client: Arc<CallClient>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    spawn_synthetic_media(client, Arc::new(AtomicBool::new(true)), stop)
}

/// The numbers of the frames of `kind` received from `sender`, checking each frame's content.
fn received(recorder: &Recorder, kind: FrameKind, sender: u8) -> Vec<u32> {
    recorder
        .events()
        .iter()
        .filter_map(|e| match e {
            ClientEvent::RemoteFrame(frame) if frame.kind == kind => {
                assert_eq!(frame.data[1], sender, "frames come from the other participant");
                let number = frame_counter(frame).expect("a counter");
                let expected = if kind == FrameKind::Video {
                    synthetic_video_frame(sender, number)
                } else {
                    synthetic_audio_frame(sender, number)
                };
                assert_eq!(frame.data, expected.data, "frame {number} arrived intact");
                Some(number)
            }
            _ => None,
        })
        .collect()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn video_and_audio_flow_both_ways_over_a_real_peer_connection() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let (patient, patient_events) = join(&visit.patient_link);
    patient_events
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    let joined_at = Instant::now();
    let (doctor, doctor_events) = join(&visit.doctor_link);
    for events in [&doctor_events, &patient_events] {
        events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    }
    println!("doctor join to both connected: {:?}", joined_at.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let senders = [start_sending(doctor.clone(), stop.clone()), start_sending(patient.clone(), stop.clone())];
    tokio::task::spawn_blocking({
        let (doctor_events, patient_events) = (doctor_events.clone(), patient_events.clone());
        move || {
            wait_until("30 video frames each way", || {
                received(&patient_events, FrameKind::Video, 1).len() >= 30
                    && received(&doctor_events, FrameKind::Video, 2).len() >= 30
            });
            wait_until("50 audio frames each way", || {
                received(&patient_events, FrameKind::Audio, 1).len() >= 50
                    && received(&doctor_events, FrameKind::Audio, 2).len() >= 50
            });
        }
    })
    .await
    .unwrap();
    let numbers = received(&patient_events, FrameKind::Video, 1);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "video frames arrive in order: {numbers:?}");

    // Mute: the patient's audio stops reaching the doctor; the peer is told.
    patient.set_microphone_enabled(false);
    doctor_events
        .wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::PeerMediaChanged(m)) if !m.audio));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = received(&doctor_events, FrameKind::Audio, 2).len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = received(&doctor_events, FrameKind::Audio, 2).len();
    assert!(after - before <= 2, "muted audio stops: {before} -> {after}");
    assert!(received(&doctor_events, FrameKind::Video, 2).len() > 30, "video goes on");

    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    doctor.hang_up();
    patient_events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::Ended(_))));
    doctor.close();
    patient.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn cutting_signaling_mid_call_does_not_stop_the_media() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let proxy = CuttableProxy::start(server.server.addr).await;
    let (patient, patient_events) = join(&proxy.link(&visit.patient_link, server.server.addr));
    patient_events
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    let (doctor, doctor_events) = join(&visit.doctor_link);
    patient_events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = start_sending(doctor.clone(), stop.clone());
    let events = patient_events.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("first frames", || received(&events, FrameKind::Video, 1).len() >= 10)
    })
    .await
    .unwrap();

    proxy.cut_all();
    patient_events
        .wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::SignalingReconnecting { .. })));
    let during = received(&patient_events, FrameKind::Video, 1).len();
    let events = patient_events.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("frames while signaling reconnects", || {
            received(&events, FrameKind::Video, 1).len() >= during + 15
        })
    })
    .await
    .unwrap();
    patient_events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::SignalingRestored));
    assert_eq!(patient.state(), CallState::Connected);
    assert!(!doctor_events.events().contains(&ClientEvent::Call(CallEvent::PeerLeft)));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    doctor.close();
    patient.close();
}
