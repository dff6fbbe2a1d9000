//! Received frames carry their RTP timestamp and the time the sender sent them on its own clock
//! (from its RTCP sender reports), the basis of lip sync for apps that render themselves: a call
//! through the link emulator (40 ms each way, ±10 ms jitter), the doctor sending counted audio and
//! video frames while noting the wall-clock time of each, the patient checking the capture times
//! it is given against those notes. Sender and receiver share this machine's clock, so the truth
//! is known.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use televisit_core::client::{CallListener, ClientEvent};
use televisit_core::frame::{FrameKind, FrameTiming};
use televisit_tests::counted::{audio_frame, counter, video_frame};
use televisit_tests::netem::{LinkConfig, Relay, RelayConfig};
use televisit_tests::{connected_through_relay, unix_us, Recorder, TestServer};

const MS: Duration = Duration::from_millis(1);
const WAIT: Duration = Duration::from_secs(15);
const DOCTOR: u8 = 1;

/// What the patient received: (kind, counter, timing, arrival in Unix µs).
#[derive(Default)]
struct Receiver {
    recorder: Recorder,
    frames: Mutex<Vec<(FrameKind, u32, FrameTiming, i64)>>,
}

impl AsRef<Recorder> for Receiver {
    fn as_ref(&self) -> &Recorder {
        &self.recorder
    }
}

impl CallListener for Receiver {
    fn on_event(&self, event: ClientEvent) {
        if let ClientEvent::RemoteFrame(frame) = &event {
            if let Some(n) = counter(frame) {
                self.frames.lock().unwrap().push((frame.kind, n, frame.timing, unix_us()));
            }
            return;
        }
        self.recorder.on_event(event);
    }
}

fn median(mut values: Vec<i64>) -> i64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn percentile(mut values: Vec<i64>, p: f64) -> i64 {
    values.sort_unstable();
    values[((values.len() - 1) as f64 * p) as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn received_frames_carry_the_time_the_sender_sent_them_on_its_clock() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let link = LinkConfig { jitter: 10 * MS, ..LinkConfig::new(10_000_000, 40 * MS) };
    let relay = Relay::start(RelayConfig::symmetric(link)).await.expect("relay binds on loopback");
    let patient_events = Arc::new(Receiver::default());
    let (patient, doctor, _) = connected_through_relay(&visit, &relay, patient_events.clone(), WAIT);

    // 5 s of 20 ms audio frames and 30 fps video, each noted as it is handed over.
    let sent = std::thread::spawn({
        let doctor = Arc::clone(&doctor);
        move || {
            let mut sent: HashMap<(FrameKind, u32), i64> = HashMap::new();
            let start = std::time::Instant::now();
            let (mut audio, mut video) = (0u32, 0u32);
            while start.elapsed() < Duration::from_secs(5) {
                let now = start.elapsed();
                if now >= 20 * MS * audio {
                    sent.insert((FrameKind::Audio, audio), unix_us());
                    doctor.send_frame(audio_frame(DOCTOR, audio));
                    audio += 1;
                }
                if now >= 33 * MS * video {
                    sent.insert((FrameKind::Video, video), unix_us());
                    doctor.send_frame(video_frame(DOCTOR, video));
                    video += 1;
                }
                std::thread::sleep(2 * MS);
            }
            sent
        }
    });
    let sent = tokio::task::spawn_blocking(move || sent.join().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = patient_events.frames.lock().unwrap().clone();
    doctor.close();
    patient.close();

    for kind in [FrameKind::Audio, FrameKind::Video] {
        let frames: Vec<_> = received.iter().filter(|f| f.0 == kind).collect();
        let sent_of_kind = sent.keys().filter(|k| k.0 == kind).count();
        assert!(
            frames.len() * 10 >= sent_of_kind * 9,
            "{kind:?}: {} of {sent_of_kind} arrived",
            frames.len()
        );
        assert!(
            frames.iter().all(|f| f.2.rtp_timestamp.is_some()),
            "{kind:?}: every frame has its RTP timestamp"
        );
        // The first sender report comes about a second in; from then on every frame is dated.
        let dated: Vec<_> = frames.iter().filter(|f| f.2.capture_time_us.is_some()).collect();
        let first = frames.iter().position(|f| f.2.capture_time_us.is_some()).expect("a sender report came");
        assert_eq!(dated.len(), frames.len() - first, "{kind:?}: once dated, always dated");
        assert!(
            dated.len() * 2 >= frames.len(),
            "{kind:?}: {} of {} frames dated",
            dated.len(),
            frames.len()
        );
        let error: Vec<i64> =
            dated.iter().map(|f| f.2.capture_time_us.unwrap() - sent[&(kind, f.1)]).collect();
        let transit: Vec<i64> = dated.iter().map(|f| f.3 - f.2.capture_time_us.unwrap()).collect();
        let (error_median, error_p90) =
            (median(error.clone()), percentile(error.iter().map(|e| e.abs()).collect(), 0.9));
        let transit_median = median(transit);
        eprintln!(
            "{kind:?}: {} frames dated; capture time minus the true send time: median {error_median} µs, p90 |error| {error_p90} µs; arrival minus capture time: median {transit_median} µs",
            dated.len()
        );
        assert!(error_median.abs() <= 5_000, "{kind:?}: capture times are off by {error_median} µs");
        assert!(error_p90 <= 15_000, "{kind:?}: p90 error {error_p90} µs");
        // Dated on the sender's clock, not on arrival: they trail arrival by the link's 40 ms.
        assert!(
            (35_000..150_000).contains(&transit_median),
            "{kind:?}: arrival - capture {transit_median} µs"
        );
    }
}
