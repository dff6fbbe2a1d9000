//! Loss recovery in real calls through the real server (loopback): with every 20th packet lost on
//! the way to the patient, the patient asks again (NACK), the doctor resends on the RTX flow, and
//! the patient counts each retransmission as the repair of the packet it carries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::media::LossRecoveryCounts;
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallListener, CallOptions, ClientEvent};
use televisit_core::frame::{EncodedFrame, FrameKind};
use televisit_tests::{loopback_media, Recorder, TestServer};

const WAIT: Duration = Duration::from_secs(15);

/// A backend whose inbound RTP loses every `n`-th packet.
fn lossy_media(n: u32) -> Arc<WebRtcMedia> {
    Arc::new(WebRtcMedia::new(WebRtcSettings {
        udp_addrs: vec!["127.0.0.1:0".into()],
        drop_every_nth_inbound_rtp: Some(n),
        ..Default::default()
    }))
}

/// A VP8-shaped camera frame: a keyframe every 30th (12 kB), deltas of 3 kB.
fn camera_frame(n: u32) -> EncodedFrame {
    let keyframe = n.is_multiple_of(30);
    let mut data = if keyframe {
        vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]
    } else {
        vec![0x11, 0x02, 0x00]
    };
    data.resize(if keyframe { 12_000 } else { 3_000 }, (n % 251) as u8);
    EncodedFrame {
        kind: FrameKind::Video,
        data,
        duration: Duration::from_millis(33),
        keyframe,
        timing: Default::default(),
    }
}

/// Counts the remote video frames and records every other event.
#[derive(Default)]
struct Patient {
    recorder: Recorder,
    video_frames: AtomicU64,
}

impl CallListener for Patient {
    fn on_event(&self, event: ClientEvent) {
        if let ClientEvent::RemoteFrame(frame) = &event {
            if frame.kind == FrameKind::Video {
                self.video_frames.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        self.recorder.on_event(event);
    }
}

/// The loss recovery totals of the last stats a side reported.
fn last_counts(recorder: &Recorder) -> LossRecoveryCounts {
    recorder
        .events()
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Stats(stats) => Some(stats.loss_recovery),
            _ => None,
        })
        .next_back()
        .expect("stats were reported")
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_packets_are_nacked_resent_on_rtx_and_counted_as_repairs() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let patient_events = Arc::new(Patient::default());
    let patient =
        CallClient::new(&visit.patient_link, patient_events.clone(), lossy_media(20), CallOptions::default())
            .unwrap();
    patient.join();
    patient_events
        .recorder
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    let doctor_events = Arc::new(Recorder::default());
    let doctor =
        CallClient::new(&visit.doctor_link, doctor_events.clone(), loopback_media(), CallOptions::default())
            .unwrap();
    doctor.join();
    for events in [&*doctor_events, &patient_events.recorder] {
        events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    }

    // 5 s of camera at 30 fps: ~1 Mbps, ~600 packets, ~30 of them lost.
    let doctor = Arc::new(doctor);
    let sender = std::thread::spawn({
        let doctor = doctor.clone();
        move || {
            for n in 0..150 {
                doctor.send_frame(camera_frame(n));
                std::thread::sleep(Duration::from_millis(33));
            }
        }
    });
    tokio::task::spawn_blocking(move || sender.join().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await; // two more rounds of stats

    let receiver = last_counts(&patient_events.recorder);
    let sender = last_counts(&doctor_events);
    let frames = patient_events.video_frames.load(Ordering::Relaxed);
    println!(
        "patient (receiving): {receiver:?}\ndoctor (sending): {sender:?}\nvideo frames received: {frames}"
    );
    assert!(receiver.nacks_sent >= 10, "the patient asked for the lost packets: {receiver:?}");
    assert!(
        sender.nacks_received >= 10 && sender.retransmitted_packets >= 10,
        "the doctor resent: {sender:?}"
    );
    assert!(
        receiver.packets_repaired * 10 >= (receiver.packets_repaired + receiver.packets_given_up) * 9,
        "retransmissions on the RTX flow count as repairs: {receiver:?}"
    );
    // Each retransmission answers one NACK; a few more NACKs for the retransmissions lost too.
    assert!(receiver.nacks_sent <= receiver.packets_repaired * 2, "{receiver:?}");
    assert!(frames >= 140, "the video went on: {frames} of 150 frames");

    doctor.close();
    patient.close();
}
