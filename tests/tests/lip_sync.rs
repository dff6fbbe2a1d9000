//! Lip sync for an app that renders the peer's video itself: the core dates the sound its audio
//! sink plays (`AudioSink::playing_capture_time_us`) and each received video frame
//! (`FrameTiming::capture_time_us`) on the sender's clock, so the app shows the picture sent with
//! the sound playing. A call through the link emulator (40 ms each way, ±10 ms jitter): the
//! doctor's microphone pushes silence with a 100 ms burst every 600 ms while its camera sends a
//! counted frame every 33 ms; the patient's speaker pulls every 10 ms and, when a burst starts
//! playing, picks the picture as an app would. That picture must be the one the doctor sent with
//! the burst, and the sound's date the time the doctor spoke.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use televisit_core::audio::signal::tone;
use televisit_core::audio::FRAME_SAMPLES;
use televisit_core::client::{CallListener, ClientEvent};
use televisit_core::frame::FrameKind;
use televisit_tests::counted::{counter, video_frame};
use televisit_tests::netem::{LinkConfig, Relay, RelayConfig};
use televisit_tests::{connected_through_relay, unix_us, Recorder, TestServer};

const MS: Duration = Duration::from_millis(1);
const FRAME: Duration = Duration::from_millis(10);
const WAIT: Duration = Duration::from_secs(15);
const PERIOD_FRAMES: u32 = 60;
const BURST_FRAMES: u32 = 10;
const BURSTS: u32 = 8;
const SILENT_PERIODS: u32 = 3;
/// A sample this loud is the burst (the tone's peak is 10 000; silence decodes to ~0).
const LOUD: i16 = 3000;

/// The patient's received video frames: (counter, capture time).
#[derive(Default)]
struct Screen {
    recorder: Recorder,
    pictures: Mutex<Vec<(u32, Option<i64>)>>,
}

impl AsRef<Recorder> for Screen {
    fn as_ref(&self) -> &Recorder {
        &self.recorder
    }
}

impl CallListener for Screen {
    fn on_event(&self, event: ClientEvent) {
        if let ClientEvent::RemoteFrame(frame) = &event {
            if frame.kind == FrameKind::Video {
                if let Some(n) = counter(frame) {
                    self.pictures.lock().unwrap().push((n, frame.timing.capture_time_us));
                }
            }
            return;
        }
        self.recorder.on_event(event);
    }
}

/// What the patient played at a burst's first loud sample.
#[derive(Debug)]
struct Heard {
    /// The sound's date on the doctor's clock (the sink's, plus the sample's place in its frame).
    sound_sent_us: i64,
    /// When it played, this machine's clock.
    played_us: i64,
    /// The picture an app shows with it: the latest received whose date is not after the sound's.
    picture: Option<u32>,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_picture_shown_with_a_sound_is_the_one_sent_with_it() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let link = LinkConfig { jitter: 10 * MS, ..LinkConfig::new(10_000_000, 40 * MS) };
    let relay = Relay::start(RelayConfig::symmetric(link)).await.expect("relay binds on loopback");
    let screen = Arc::new(Screen::default());
    let (patient, doctor, _) = connected_through_relay(&visit, &relay, screen.clone(), WAIT);

    let stop = Arc::new(AtomicBool::new(false));
    // The doctor's camera: a counted frame every 33 ms.
    let camera = std::thread::spawn({
        let (doctor, stop) = (doctor.clone(), stop.clone());
        move || {
            let mut sent = Vec::new();
            let start = Instant::now();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                sent.push((n, unix_us()));
                doctor.send_frame(video_frame(1, n));
                std::thread::sleep((start + 33 * MS * (n + 1)).saturating_duration_since(Instant::now()));
            }
            sent
        }
    });
    // The doctor's microphone: 10 ms frames in real time. The first periods are silent: the
    // doctor's first sender report, which dates the sound, comes about a second in.
    let microphone = doctor.audio_source().expect("the doctor's source");
    let mouth = std::thread::spawn(move || {
        let mut bursts = Vec::new();
        let start = Instant::now();
        for n in 0..(BURSTS + SILENT_PERIODS) * PERIOD_FRAMES {
            let loud = n >= SILENT_PERIODS * PERIOD_FRAMES && n % PERIOD_FRAMES < BURST_FRAMES;
            if loud && n % PERIOD_FRAMES == 0 {
                bursts.push(unix_us());
            }
            let frame = if loud {
                tone(1000.0, u64::from(n) * FRAME_SAMPLES as u64, FRAME_SAMPLES)
            } else {
                vec![0; FRAME_SAMPLES]
            };
            microphone.push(&frame).expect("a 10 ms frame is taken");
            std::thread::sleep((start + FRAME * (n + 1)).saturating_duration_since(Instant::now()));
        }
        bursts
    });
    // The patient's speaker: a frame every 10 ms; at each burst's start, the picture to show.
    let speaker = patient.audio_sink().expect("the patient's sink");
    let ear = std::thread::spawn({
        let (screen, stop) = (screen.clone(), stop.clone());
        move || {
            let mut heard: Vec<Heard> = Vec::new();
            let mut loud_before = false;
            let start = Instant::now();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let pcm = speaker.pull().expect("a frame");
                let onset = pcm.iter().position(|s| s.abs() >= LOUD);
                if let (Some(at), false, Some(dated)) =
                    (onset, loud_before, speaker.playing_capture_time_us())
                {
                    let sound_sent_us = dated + at as i64 * 1_000_000 / 48_000;
                    let pictures = screen.pictures.lock().unwrap();
                    let picture = pictures.iter().rev().find(|(_, t)| t.is_some_and(|t| t <= sound_sent_us));
                    heard.push(Heard { sound_sent_us, played_us: unix_us(), picture: picture.map(|p| p.0) });
                }
                loud_before = pcm.iter().any(|s| s.abs() >= LOUD);
                std::thread::sleep((start + FRAME * (n + 1)).saturating_duration_since(Instant::now()));
            }
            heard
        }
    });
    let bursts = tokio::task::spawn_blocking(move || mouth.join().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = tokio::task::spawn_blocking(move || camera.join().unwrap()).await.unwrap();
    let heard = tokio::task::spawn_blocking(move || ear.join().unwrap()).await.unwrap();
    doctor.close();
    patient.close();

    assert_eq!(heard.len(), bursts.len(), "every burst was heard once, and dated: {heard:?}");
    for (spoken_us, heard) in bursts.iter().zip(&heard) {
        // The sound's date is when its 20 ms Opus packet left: up to a packet after the burst began.
        let error_ms = (heard.sound_sent_us - spoken_us) as f64 / 1000.0;
        let latency_ms = (heard.played_us - spoken_us) as f64 / 1000.0;
        // The picture the doctor's camera sent at that moment.
        let with_it = sent.iter().rev().find(|(_, at)| *at <= heard.sound_sent_us).map(|(n, _)| *n);
        eprintln!(
            "burst: dated {error_ms:+.1} ms from when it was spoken, played {latency_ms:.1} ms after; picture shown {:?}, sent with it {with_it:?}",
            heard.picture
        );
        assert!((-5.0..=35.0).contains(&error_ms), "the sound's date is {error_ms} ms off: {heard:?}");
        assert!(
            latency_ms > 45.0,
            "played {latency_ms} ms after it was spoken: dated on arrival, not sending?"
        );
        let (shown, with_it) =
            (heard.picture.expect("a dated picture"), with_it.expect("a picture sent before"));
        assert!(
            shown.abs_diff(with_it) <= 1,
            "showed picture {shown} with the sound sent with picture {with_it}"
        );
    }
}
