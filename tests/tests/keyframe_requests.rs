//! Keyframe requests across a real call (loopback, through the real server), with both cameras
//! sending: when one side's decoder loses the picture, its app asks for a keyframe, the request
//! travels as RTCP PLI, and the other side's app hears `KeyframeRequested` to make its encoder
//! send one.

use std::sync::Arc;
use std::time::Duration;

use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::ClientEvent;
use televisit_core::frame::{EncodedFrame, FrameKind};
use televisit_tests::{join_loopback, Recorder, TestServer};

const WAIT: Duration = Duration::from_secs(15);

/// A small camera frame: far below any bandwidth estimate, so the sender never drops one (a drop
/// would also ask for a keyframe and blur what this test checks).
fn small_frame(n: u32) -> EncodedFrame {
    let keyframe = n == 0;
    let mut data = vec![if keyframe { 0x10 } else { 0x11 }, 1];
    data.extend_from_slice(&n.to_be_bytes());
    data.resize(600, 0x33);
    EncodedFrame {
        kind: FrameKind::Video,
        data,
        duration: Duration::from_millis(100),
        keyframe,
        timing: Default::default(),
    }
}

fn keyframe_requests(events: &Recorder) -> usize {
    events.events().iter().filter(|e| **e == ClientEvent::KeyframeRequested(FrameKind::Video)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_both_cameras_on_a_keyframe_request_reaches_the_other_sides_encoder_both_ways() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let (patient, patient_events) = join_loopback(&visit.patient_link);
    let (doctor, doctor_events) = join_loopback(&visit.doctor_link);
    for events in [&doctor_events, &patient_events] {
        events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    }
    // Both cameras send, as in every call: each side then has a remote camera track as well as
    // its own, and a request must reach the encoder, not the track that receives the peer's.
    let senders: Vec<_> = [&doctor, &patient]
        .into_iter()
        .map(|client| {
            let client = Arc::clone(client);
            tokio::spawn(async move {
                for n in 0.. {
                    client.send_frame(small_frame(n));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    let remote_video =
        |e: &ClientEvent| matches!(e, ClientEvent::RemoteFrame(f) if f.kind == FrameKind::Video);
    for events in [&patient_events, &doctor_events] {
        events.wait_for(WAIT, remote_video);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(keyframe_requests(&doctor_events), 0, "nothing asked for a keyframe yet");

    patient.request_keyframe(FrameKind::Video);
    doctor_events.wait_for(WAIT, |e| *e == ClientEvent::KeyframeRequested(FrameKind::Video));
    patient.request_keyframe(FrameKind::Video);
    let deadline = std::time::Instant::now() + WAIT;
    while keyframe_requests(&doctor_events) < 2 {
        assert!(std::time::Instant::now() < deadline, "the second request did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the other way.
    assert_eq!(keyframe_requests(&patient_events), 0);
    doctor.request_keyframe(FrameKind::Video);
    patient_events.wait_for(WAIT, |e| *e == ClientEvent::KeyframeRequested(FrameKind::Video));
    for sender in senders {
        sender.abort();
    }
    doctor.close();
    patient.close();
}
