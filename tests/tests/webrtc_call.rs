//! Real WebRTC calls between two call clients through the real server (loopback only): ICE, DTLS-SRTP,
//! Opus and VP8 tracks both ways, fed by the software codec path (the live-encoded test pattern and
//! tone). What arrives is decoded, and the frame counter is read from the *decoded pictures*.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use televisit_codecs::audio::{OpusDecoder, FRAME_SAMPLES};
use televisit_core::call::ladder::LADDER;
use televisit_core::call::machine::{CallEvent, CallState, EndReason};
use televisit_core::client::{CallClient, ClientEvent};
use televisit_core::frame::FrameKind;
use televisit_core::protocol::Role;
use televisit_join::{spawn_synthetic_media, PictureReader, SyntheticMedia};
use televisit_tests::{join_loopback, CuttableProxy, Recorder, TestServer};

const WAIT: Duration = Duration::from_secs(20);

/// Sends the live-encoded test pattern and tone (doctor's pictures count from 0x1000_0000,
/// patient's from 0x2000_0000) until `stop`.
fn start_sending(client: Arc<CallClient>, stop: Arc<AtomicBool>) -> SyntheticMedia {
    spawn_synthetic_media(client, Arc::new(AtomicBool::new(true)), stop).expect("codecs start")
}

/// Decodes what a recorder received, as it arrives: video through VP8 and the picture counter
/// reader, audio through Opus.
struct Received {
    recorder: Arc<Recorder>,
    seen: usize,
    pictures: PictureReader,
    voice: OpusDecoder,
    audio_decoded: usize,
    audio_samples: usize,
}

impl Received {
    fn new(recorder: &Arc<Recorder>) -> Arc<Mutex<Received>> {
        Arc::new(Mutex::new(Received {
            recorder: Arc::clone(recorder),
            seen: 0,
            pictures: PictureReader::new().unwrap(),
            voice: OpusDecoder::new().unwrap(),
            audio_decoded: 0,
            audio_samples: 0,
        }))
    }

    /// Decodes what arrived since the last call; returns the counters read from pictures so far.
    fn update(&mut self) -> Vec<u32> {
        let events = self.recorder.events();
        for event in &events[self.seen..] {
            if let ClientEvent::RemoteFrame(frame) = event {
                if frame.kind == FrameKind::Video {
                    let _ = self.pictures.receive(frame);
                } else {
                    let pcm = self.voice.decode(&frame.data).expect("every Opus packet decodes");
                    self.audio_decoded += 1;
                    self.audio_samples += pcm.len();
                }
            }
        }
        self.seen = events.len();
        self.pictures.counters.clone()
    }

    /// Counters of pictures decoded, checking they came from `sender` (1 doctor, 2 patient).
    fn counters_from(&mut self, sender: u32) -> Vec<u32> {
        let counters = self.update();
        assert!(counters.iter().all(|c| c >> 28 == sender), "pictures come from the other participant");
        counters
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until each side decoded 30 pictures with the other's counter, and 50 audio frames.
async fn decoded_both_ways(at_patient: &Arc<Mutex<Received>>, at_doctor: &Arc<Mutex<Received>>) {
    let (at_patient, at_doctor) = (at_patient.clone(), at_doctor.clone());
    tokio::task::spawn_blocking(move || {
        wait_until("30 decoded pictures with a counter each way", || {
            at_patient.lock().unwrap().counters_from(1).len() >= 30
                && at_doctor.lock().unwrap().counters_from(2).len() >= 30
        });
        wait_until("50 decoded audio frames each way", || {
            at_patient.lock().unwrap().update();
            at_doctor.lock().unwrap().update();
            at_patient.lock().unwrap().audio_decoded >= 50 && at_doctor.lock().unwrap().audio_decoded >= 50
        });
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn video_and_audio_flow_both_ways_over_a_real_peer_connection() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let (patient, patient_events) = join_loopback(&visit.patient_link);
    patient_events
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    let joined_at = Instant::now();
    let (doctor, doctor_events) = join_loopback(&visit.doctor_link);
    for events in [&doctor_events, &patient_events] {
        events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    }
    println!("doctor join to both connected: {:?}", joined_at.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let senders = [start_sending(doctor.clone(), stop.clone()), start_sending(patient.clone(), stop.clone())];
    let (at_patient, at_doctor) = (Received::new(&patient_events), Received::new(&doctor_events));
    decoded_both_ways(&at_patient, &at_doctor).await;
    {
        let mut at_patient = at_patient.lock().unwrap();
        let numbers = at_patient.counters_from(1);
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "picture counters increase: {numbers:?}");
        assert!(numbers[0] <= 0x1000_0000 + 60, "pictures decode from the start: {:#x}", numbers[0]);
        assert_eq!(at_patient.pictures.size, Some((640, 360)), "the ladder's start rung, 360p");
        assert_eq!(at_patient.audio_samples, at_patient.audio_decoded * FRAME_SAMPLES, "20 ms per packet");
    }

    // Mute: the patient's audio stops reaching the doctor; the peer is told.
    patient.set_microphone_enabled(false);
    doctor_events
        .wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::PeerMediaChanged(m)) if !m.audio));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before, pictures_before) = {
        let mut at_doctor = at_doctor.lock().unwrap();
        let pictures = at_doctor.counters_from(2).len();
        (at_doctor.audio_decoded, pictures)
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (after, pictures_after) = {
        let mut at_doctor = at_doctor.lock().unwrap();
        let pictures = at_doctor.counters_from(2).len();
        (at_doctor.audio_decoded, pictures)
    };
    assert!(after - before <= 2, "muted audio stops: {before} -> {after}");
    assert!(pictures_after > pictures_before + 5, "video goes on: {pictures_before} -> {pictures_after}");

    // The doctor's camera follows another rung of the ladder: 720p pictures arrive, still counting up.
    senders[0].set_rung(LADDER[1]);
    let received = at_patient.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("720p pictures", || {
            let mut at_patient = received.lock().unwrap();
            at_patient.counters_from(1);
            at_patient.pictures.size == Some((1280, 720))
        });
        let before = received.lock().unwrap().counters_from(1).len();
        wait_until("more 720p pictures with a counter", || {
            received.lock().unwrap().counters_from(1).len() > before + 10
        });
    })
    .await
    .unwrap();
    let numbers = at_patient.lock().unwrap().counters_from(1);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "picture counters still increase: {numbers:?}");

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
    let (patient, patient_events) = join_loopback(&proxy.link(&visit.patient_link, server.server.addr));
    patient_events
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    let (doctor, doctor_events) = join_loopback(&visit.doctor_link);
    patient_events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = start_sending(doctor.clone(), stop.clone());
    let at_patient = Received::new(&patient_events);
    let received = at_patient.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("first pictures", || received.lock().unwrap().counters_from(1).len() >= 10)
    })
    .await
    .unwrap();

    proxy.cut_all();
    patient_events
        .wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::SignalingReconnecting { .. })));
    let during = at_patient.lock().unwrap().counters_from(1).len();
    let received = at_patient.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("pictures while signaling reconnects", || {
            received.lock().unwrap().counters_from(1).len() >= during + 15
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

/// Behind a proxy that strips WebSocket upgrades (answers them 403), both cores fall back to the
/// HTTP signaling fallback on their own: waiting room, admitted, decoded pictures and audio both
/// ways, chat both ways, the doctor ends the call.
#[tokio::test(flavor = "multi_thread")]
async fn a_whole_visit_over_the_http_signaling_fallback_behind_a_proxy_that_strips_websockets() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let proxy = CuttableProxy::refusing_upgrades(server.server.addr).await;
    let through_proxy = |link: &str| proxy.link(link, server.server.addr);
    let (patient, patient_events) = join_loopback(&through_proxy(&visit.patient_link));
    patient_events
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    patient_events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::Waiting { .. })));
    assert_eq!(proxy.refused_upgrades(), 1, "the patient tried the WebSocket first");
    let joined_at = Instant::now();
    let (doctor, doctor_events) = join_loopback(&through_proxy(&visit.doctor_link));
    for events in [&doctor_events, &patient_events] {
        events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    }
    println!("doctor join to both connected over the HTTP fallback: {:?}", joined_at.elapsed());
    assert_eq!(proxy.refused_upgrades(), 2, "so did the doctor; nothing went around the proxy");

    let stop = Arc::new(AtomicBool::new(false));
    let senders = [start_sending(doctor.clone(), stop.clone()), start_sending(patient.clone(), stop.clone())];
    let (at_patient, at_doctor) = (Received::new(&patient_events), Received::new(&doctor_events));
    decoded_both_ways(&at_patient, &at_doctor).await;

    patient.send_chat("Can you hear me?").unwrap();
    doctor.send_chat("Loud and clear").unwrap();
    for events in [&doctor_events, &patient_events] {
        for text in ["Can you hear me?", "Loud and clear"] {
            events.wait_for(
                WAIT,
                |e| matches!(e, ClientEvent::Call(CallEvent::ChatReceived(m)) if m.text == text),
            );
        }
    }

    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    doctor.hang_up();
    for events in [&doctor_events, &patient_events] {
        let ended = events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::Ended(_))));
        assert!(
            matches!(
                ended,
                ClientEvent::Call(CallEvent::Ended(EndReason::CallEnded {
                    ended_by: Some(Role::Doctor),
                    ..
                }))
            ),
            "{ended:?}"
        );
    }
    assert_eq!(proxy.refused_upgrades(), 2, "no WebSocket was tried again");
    doctor.close();
    patient.close();
}
