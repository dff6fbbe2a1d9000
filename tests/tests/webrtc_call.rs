//! Real WebRTC calls between two call clients through the real server (loopback only): ICE, DTLS-SRTP,
//! Opus and VP8 tracks carrying encoded frames both ways; the frames' content is checked end to end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallOptions, ClientEvent};
use televisit_core::frame::{EncodedFrame, FrameKind};
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

/// A video frame whose bytes say who sent it and its number (spanning several RTP packets).
fn video_frame(sender: u8, number: u32) -> EncodedFrame {
    let mut data = vec![if number.is_multiple_of(30) { 0x10 } else { 0x11 }, sender];
    data.extend_from_slice(&number.to_be_bytes());
    data.resize(3000, (number % 251) as u8);
    EncodedFrame {
        kind: FrameKind::Video,
        data,
        duration: Duration::from_millis(33),
        keyframe: number.is_multiple_of(30),
    }
}

fn audio_frame(sender: u8, number: u32) -> EncodedFrame {
    let mut data = vec![0xfc, sender];
    data.extend_from_slice(&number.to_be_bytes());
    data.resize(80, 0x55);
    EncodedFrame { kind: FrameKind::Audio, data, duration: Duration::from_millis(20), keyframe: false }
}

/// Sends 30 fps video and 50 fps audio until `stop`.
fn start_sending(client: Arc<CallClient>, sender: u8, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let (mut video, mut audio) = (0u32, 0u32);
        while !stop.load(Ordering::Relaxed) {
            let elapsed = start.elapsed().as_millis() as u32;
            while video * 33 <= elapsed {
                client.send_frame(video_frame(sender, video));
                video += 1;
            }
            while audio * 20 <= elapsed {
                client.send_frame(audio_frame(sender, audio));
                audio += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// The numbers of the frames of `kind` received from `sender`, checking each frame's content.
fn received(recorder: &Recorder, kind: FrameKind, sender: u8) -> Vec<u32> {
    recorder
        .events()
        .iter()
        .filter_map(|e| match e {
            ClientEvent::RemoteFrame(frame) if frame.kind == kind => {
                assert_eq!(frame.data[1], sender, "frames come from the other participant");
                let number = u32::from_be_bytes(frame.data[2..6].try_into().unwrap());
                let expected = if kind == FrameKind::Video {
                    video_frame(sender, number)
                } else {
                    audio_frame(sender, number)
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
    let senders =
        [start_sending(doctor.clone(), 1, stop.clone()), start_sending(patient.clone(), 2, stop.clone())];
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
    let sender = start_sending(doctor.clone(), 1, stop.clone());
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
