//! What the WebRTC backend measures and how it sends under congestion, in real calls through the
//! real server (loopback): the quality stats a user sees, and audio that never waits behind video.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallListener, CallOptions, ClientEvent};
use televisit_core::frame::{EncodedFrame, FrameKind};
use televisit_tests::counted::{audio_frame as synthetic_audio_frame, counter as frame_counter};
use televisit_tests::{loopback_media, Recorder, TestServer};

const WAIT: Duration = Duration::from_secs(15);

/// A backend whose bandwidth estimate can never exceed `max_bps`, like a thin uplink.
fn thin_uplink_media(max_bps: u64) -> Arc<WebRtcMedia> {
    Arc::new(WebRtcMedia::new(WebRtcSettings {
        udp_addrs: vec!["127.0.0.1:0".into()],
        initial_bitrate_bps: max_bps,
        max_bitrate_bps: max_bps,
        ..Default::default()
    }))
}

/// A 640x360 VP8-shaped camera frame: keyframes (every 30th) carry a real VP8 keyframe header.
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

/// Connects a patient (waiting first) and a doctor; `patient_listener` gets the patient's events.
async fn connected_call(
    server: &TestServer,
    patient_listener: Arc<dyn CallListener>,
    patient_events: &Recorder,
) -> (Arc<CallClient>, Arc<Recorder>, Arc<CallClient>) {
    let visit = server.started_visit().await;
    let patient =
        CallClient::new(&visit.patient_link, patient_listener, loopback_media(), CallOptions::default())
            .unwrap();
    patient.join();
    patient_events
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    let doctor_events = Arc::new(Recorder::default());
    let doctor =
        CallClient::new(&visit.doctor_link, doctor_events.clone(), loopback_media(), CallOptions::default())
            .unwrap();
    doctor.join();
    for events in [&*doctor_events, patient_events] {
        events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    }
    (Arc::new(doctor), doctor_events, Arc::new(patient))
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_report_rtt_loss_jitter_frames_picture_size_pair_type_and_the_estimate() {
    let server = TestServer::start(|_| {}).await;
    let patient_events = Arc::new(Recorder::default());
    let (doctor, doctor_events, patient) =
        connected_call(&server, patient_events.clone(), &patient_events).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = std::thread::spawn({
        let (doctor, stop) = (doctor.clone(), stop.clone());
        move || {
            let start = Instant::now();
            let (mut video, mut audio) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let elapsed = start.elapsed().as_millis() as u32;
                while video * 33 <= elapsed {
                    doctor.send_frame(camera_frame(video));
                    video += 1;
                }
                while audio * 20 <= elapsed {
                    doctor.send_frame(synthetic_audio_frame(1, audio));
                    audio += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });

    // A stats line from after the first keyframe and a full second of frames.
    let stats = tokio::task::spawn_blocking({
        let patient_events = patient_events.clone();
        move || {
            let event = patient_events.wait_for(
                WAIT,
                |e| matches!(e, ClientEvent::Stats(s) if s.frame_width > 0 && s.frames_received >= 45),
            );
            let ClientEvent::Stats(stats) = event else { unreachable!() };
            stats
        }
    })
    .await
    .unwrap();
    println!("patient stats: {stats:?}");
    assert_eq!((stats.frame_width, stats.frame_height), (640, 360), "picture size from the VP8 keyframe");
    assert!((20.0..=40.0).contains(&stats.frame_rate), "about 30 fps: {}", stats.frame_rate);
    let rtt = stats.rtt_ms.expect("RTT from the selected candidate pair");
    assert!(rtt > 0.0 && rtt < 100.0, "loopback RTT in ms: {rtt}");
    assert!(stats.loss_percent.expect("loss measured") < 1.0, "no loss on loopback");
    assert!(stats.jitter_ms.expect("jitter measured") < 30.0, "jitter in ms: {:?}", stats.jitter_ms);
    assert_eq!(stats.candidate_pair_type.as_deref(), Some("host"));
    // 30 fps of 3-12 kB frames: about 0.8 Mbps.
    assert!(stats.receive_bitrate_bps > 300_000, "receive bitrate: {}", stats.receive_bitrate_bps);
    assert!(stats.available_outgoing_bitrate_bps.is_some_and(|b| b >= 100_000));

    let event = doctor_events.wait_for(WAIT, |e| matches!(e, ClientEvent::Stats(s) if s.frames_sent >= 45));
    let ClientEvent::Stats(sent) = event else { unreachable!() };
    assert!(sent.send_bitrate_bps > 300_000, "send bitrate: {}", sent.send_bitrate_bps);
    let estimate = sent.available_outgoing_bitrate_bps.expect("the congestion controller's estimate");
    assert!((100_000..=6_000_000).contains(&estimate), "estimate within the controller's bounds: {estimate}");
    // What the patient acknowledged (transport-cc) is about what was sent, and bounds the estimate.
    let acknowledged =
        sent.acknowledged_bitrate_bps.expect("an acknowledged rate from transport-cc feedback");
    assert!(
        acknowledged * 2 >= sent.send_bitrate_bps && acknowledged <= sent.send_bitrate_bps * 2,
        "acknowledged {acknowledged} vs sent {}",
        sent.send_bitrate_bps
    );
    assert_eq!(
        (sent.freeze_count, sent.total_freeze_ms),
        (0, 0),
        "the doctor receives no camera: no freezes"
    );
    // Nothing the patient sent: no camera frames counted.
    assert_eq!(sent.frames_received, 0);

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    doctor.close();
    patient.close();
}

/// Records when each audio frame (by counter) and each video frame reached the app.
#[derive(Default)]
struct ArrivalClock {
    recorder: Recorder,
    audio: Mutex<Vec<(u32, Instant)>>,
    video_frames: std::sync::atomic::AtomicU64,
}

impl CallListener for ArrivalClock {
    fn on_event(&self, event: ClientEvent) {
        if let ClientEvent::RemoteFrame(frame) = &event {
            match frame.kind {
                FrameKind::Audio => {
                    let counter = frame_counter(frame).expect("a counter");
                    self.audio.lock().unwrap().push((counter, Instant::now()));
                }
                _ => {
                    self.video_frames.fetch_add(1, Ordering::Relaxed);
                }
            }
            return; // keep the recorder small
        }
        self.recorder.on_event(event);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn audio_arrives_on_time_while_video_is_pushed_far_above_the_estimate() {
    let server = TestServer::start(|_| {}).await;
    let clock = Arc::new(ArrivalClock::default());
    let (doctor, doctor_events, patient) = {
        let clock = clock.clone();
        let listener: Arc<dyn CallListener> = clock.clone();
        connected_call(&server, listener, &clock.recorder).await
    };

    // 60 kB keyframes at 30 fps: 14.4 Mbps, far above the estimate (1.2 Mbps to start, 6 at most),
    // and 50 audio frames a second; for 6 seconds.
    let sent_at = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let sender = std::thread::spawn({
        let (doctor, sent_at) = (doctor.clone(), sent_at.clone());
        move || {
            let start = Instant::now();
            let (mut video, mut audio) = (0u32, 0u32);
            while start.elapsed() < Duration::from_secs(6) {
                let elapsed = start.elapsed().as_millis() as u32;
                while video * 33 <= elapsed {
                    let mut data = vec![0x10, 0x01];
                    data.extend_from_slice(&video.to_be_bytes());
                    data.resize(60_000, 0xab);
                    doctor.send_frame(EncodedFrame {
                        kind: FrameKind::Video,
                        data,
                        duration: Duration::from_millis(33),
                        keyframe: true,
                        timing: Default::default(),
                    });
                    video += 1;
                }
                while audio * 20 <= elapsed {
                    sent_at.lock().unwrap().push(Instant::now());
                    doctor.send_frame(synthetic_audio_frame(1, audio));
                    audio += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    tokio::task::spawn_blocking(move || sender.join().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sent_at = sent_at.lock().unwrap().clone();
    let arrivals = clock.audio.lock().unwrap().clone();
    let mut delays: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(n, at)| sent_at.get(*n as usize).map(|sent| at.saturating_duration_since(*sent)))
        .collect();
    delays.sort();
    let p95 = delays[delays.len() * 95 / 100];
    let video_frames = clock.video_frames.load(Ordering::Relaxed);
    println!(
        "audio frames sent {}, received {}, delay median {:?}, p95 {:?}, max {:?}; video frames received {video_frames}",
        sent_at.len(),
        delays.len(),
        delays[delays.len() / 2],
        p95,
        delays.last().unwrap()
    );
    let estimates: Vec<u64> = doctor_events
        .events()
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Stats(s) => s.available_outgoing_bitrate_bps,
            _ => None,
        })
        .collect();
    println!("the doctor's bandwidth estimate each second (bps): {estimates:?}");
    let keyframe_requests = doctor_events
        .events()
        .iter()
        .filter(|e| **e == ClientEvent::KeyframeRequested(FrameKind::Video))
        .count();
    // Every frame here is a keyframe: none is refused, and the pacer drops a waiting one only
    // for the newer one behind it, so the receiver's picture never depends on a dropped frame
    // and no keyframe needs asking for (at most once a second if it did).
    assert!(keyframe_requests <= 7, "keyframe requests at most once a second: {keyframe_requests}");
    let dropped = doctor_events
        .events()
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Stats(s) => Some(s.loss_recovery.video_frames_dropped),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    assert!(dropped > 0, "the pacer drops the keyframes that waited too long");
    assert!(video_frames >= 6, "the video goes on, about one keyframe a second or more: {video_frames}");
    assert!(
        estimates.iter().any(|e| *e != 1_200_000),
        "the estimate is GCC's, moving with the feedback, not the configured start: {estimates:?}"
    );
    assert!(delays.len() * 100 >= sent_at.len() * 95, "at least 95 % of the audio arrived");
    assert!(p95 < Duration::from_millis(200), "audio is not queued behind video: p95 {p95:?}");
    assert!(video_frames >= 10, "video still flows, within the estimate: {video_frames} frames");

    doctor.close();
    patient.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_low_bandwidth_estimate_steps_the_video_ladder_down() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let patient_events = Arc::new(Recorder::default());
    let patient = CallClient::new(
        &visit.patient_link,
        patient_events.clone(),
        loopback_media(),
        CallOptions::default(),
    )
    .unwrap();
    patient.join();
    patient_events
        .wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::WaitingRoom)));
    // The doctor starts at 720p, and the estimate is held at 400 kbps at most.
    let doctor_events = Arc::new(Recorder::default());
    let doctor = Arc::new(
        CallClient::new(
            &visit.doctor_link,
            doctor_events.clone(),
            thin_uplink_media(400_000),
            CallOptions { start_video: "720p".into(), ..CallOptions::default() },
        )
        .unwrap(),
    );
    doctor.join();
    doctor_events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    let stop = Arc::new(AtomicBool::new(false));
    let sender =
        televisit_join::spawn_synthetic_media(doctor.clone(), Arc::new(AtomicBool::new(true)), stop.clone())
            .expect("the software camera starts");

    // 400 kbps leaves 336 kbps for video after the audio reserve: below 720p's and 540p's minimum,
    // enough for 360p. The ladder steps straight down to the rung that fits.
    tokio::task::spawn_blocking({
        let doctor_events = doctor_events.clone();
        move || {
            doctor_events.wait_for(
                Duration::from_secs(20),
                |e| matches!(e, ClientEvent::VideoRungChanged(rung) if rung.name == "360p"),
            );
            // A cut of the estimate can move the ladder before the first stats sample reports it.
            doctor_events.wait_for(
                Duration::from_secs(5),
                |e| matches!(e, ClientEvent::Stats(s) if s.available_outgoing_bitrate_bps.is_some()),
            );
        }
    })
    .await
    .unwrap();
    let rungs: Vec<&str> = doctor_events
        .events()
        .iter()
        .filter_map(|e| match e {
            ClientEvent::VideoRungChanged(rung) => Some(rung.name),
            _ => None,
        })
        .collect();
    assert_eq!(rungs, ["360p"], "straight to the rung that fits");
    let estimate = doctor_events
        .events()
        .iter()
        .rev()
        .find_map(|e| match e {
            ClientEvent::Stats(s) => s.available_outgoing_bitrate_bps,
            _ => None,
        })
        .unwrap();
    assert!(estimate <= 400_000, "the estimate the ladder followed: {estimate}");
    // The encoder is told the bitrate within the rung too: the video's share of the estimate.
    let bitrate = doctor_events
        .events()
        .iter()
        .rev()
        .find_map(|e| match e {
            ClientEvent::EncoderBitrate(bps) => Some(*bps),
            _ => None,
        })
        .expect("an encoder bitrate");
    assert!((100_000..=336_000).contains(&bitrate), "encoder bitrate under a 400 kbps estimate: {bitrate}");

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    doctor.close();
    patient.close();
}
