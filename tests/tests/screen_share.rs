//! Screen sharing over a real call through the real server (loopback): the doctor's screen reaches
//! the patient as frames of kind `Screen` on a second video track; a patient cannot share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use televisit_core::call::machine::CallEvent;
use televisit_core::client::ClientEvent;
use televisit_core::error::CallError;
use televisit_core::frame::{EncodedFrame, FrameKind};
use televisit_join::spawn_synthetic_media;
use televisit_tests::counted::counter as frame_counter;
use televisit_tests::{connected_on_loopback, Recorder, TestServer};

const WAIT: Duration = Duration::from_secs(15);

/// Screen frame `n`: a keyframe every 10th, with the counter at bytes 2..6 like the synthetic media.
fn screen_frame(n: u32) -> EncodedFrame {
    let keyframe = n.is_multiple_of(10);
    let mut data = vec![if keyframe { 0x10 } else { 0x11 }, 0x5c];
    data.extend_from_slice(&n.to_be_bytes());
    data.resize(if keyframe { 20_000 } else { 4_000 }, 0x5c);
    EncodedFrame {
        kind: FrameKind::Screen,
        data,
        duration: Duration::from_millis(100),
        keyframe,
        timing: Default::default(),
    }
}

fn screen_counters(events: &Recorder) -> Vec<u32> {
    events.remote_frames(FrameKind::Screen).iter().filter_map(frame_counter).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_doctors_shared_screen_reaches_the_patient_as_screen_frames_and_a_patient_cannot_share() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let ((patient, patient_events), (doctor, doctor_events)) = connected_on_loopback(&visit, WAIT);
    assert!(
        matches!(patient.set_screen_share(true), Err(CallError::NotAllowed(_))),
        "a patient cannot share a screen"
    );

    // The camera runs all along; screen frames before sharing starts go nowhere.
    let stop = Arc::new(AtomicBool::new(false));
    let camera = spawn_synthetic_media(doctor.clone(), Arc::new(AtomicBool::new(true)), stop.clone())
        .expect("the software camera starts");
    for n in 0..5 {
        doctor.send_frame(screen_frame(n));
    }
    doctor.set_screen_share(true).expect("the doctor may share");
    patient_events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::PeerScreenShare(true)));
    doctor_events.wait_for(WAIT, |e| *e == ClientEvent::KeyframeRequested(FrameKind::Screen));
    let deadline = Instant::now() + WAIT;
    let mut n = 5;
    // Both go on together: the camera's frames need its own keyframe, which may come after the
    // screen's first ten.
    while screen_counters(&patient_events).len() < 10
        || patient_events.remote_frames(FrameKind::Video).len() <= 10
    {
        assert!(
            Instant::now() < deadline,
            "at the patient within {WAIT:?}: {} screen frames, {} camera frames (the camera goes on beside the screen)",
            screen_counters(&patient_events).len(),
            patient_events.remote_frames(FrameKind::Video).len()
        );
        doctor.send_frame(screen_frame(n));
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counters = screen_counters(&patient_events);
    assert!(
        counters.iter().all(|c| *c >= 10),
        "nothing sent before sharing, and from a keyframe: {counters:?}"
    );
    assert!(counters.windows(2).all(|w| w[0] < w[1]), "in order: {counters:?}");
    let camera_frames = patient_events.remote_frames(FrameKind::Video);
    assert!(camera_frames.len() > 10, "the camera goes on beside the screen: {}", camera_frames.len());
    // The track roles: the screen's frames (filled with 0x5c) never arrive as camera frames.
    let screen_as_camera =
        camera_frames.iter().filter(|f| f.data.len() > 6 && f.data[6..].iter().all(|b| *b == 0x5c)).count();
    assert_eq!(screen_as_camera, 0, "screen frames arrived as camera frames");

    // Stopping: the patient is told, and screen frames stop.
    doctor.set_screen_share(false).unwrap();
    patient_events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::PeerScreenShare(false)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = screen_counters(&patient_events).len();
    for _ in 0..5 {
        doctor.send_frame(screen_frame(n));
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(screen_counters(&patient_events).len(), before, "no screen frames after sharing stopped");
    assert!(!doctor_events.events().iter().any(|e| matches!(e, ClientEvent::Call(CallEvent::Error(_)))));

    stop.store(true, Ordering::Relaxed);
    camera.join().unwrap();
    doctor.close();
    patient.close();
}
