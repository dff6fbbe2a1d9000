//! The audio engine end to end: two call clients through the real server and a real peer
//! connection (loopback). Each side pushes a tone as 10 ms PCM frames into its `AudioSource`, as a
//! microphone callback would, and pulls 10 ms frames from its `AudioSink`, as a playout callback
//! would; what comes out must be the *other* side's tone (told apart by the Goertzel power).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use televisit_core::audio::signal::{goertzel_ratio, rms, tone};
use televisit_core::audio::FRAME_SAMPLES;
use televisit_core::call::machine::CallEvent;
use televisit_core::client::{CallClient, ClientEvent};
use televisit_core::frame::FrameKind;
use televisit_tests::{connected_on_loopback, TestServer};

const WAIT: Duration = Duration::from_secs(20);

/// Plays one side's devices in real time until `stop`: a microphone sending a tone at `hz` and a
/// speaker pulling every 10 ms. Returns what the speaker played.
fn devices(client: Arc<CallClient>, hz: f64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<i16>> {
    let source = client.audio_source().expect("a source");
    let sink = client.audio_sink().expect("a sink");
    std::thread::spawn(move || {
        let (start, mut played, mut n) = (Instant::now(), Vec::new(), 0u32);
        while !stop.load(Ordering::Relaxed) {
            let frame = tone(hz, u64::from(n) * FRAME_SAMPLES as u64, FRAME_SAMPLES);
            source.push(&frame).expect("a 10 ms frame is taken");
            played.extend(sink.pull().expect("a frame to play"));
            n += 1;
            let next = start + Duration::from_millis(10) * n;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        played
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tone_pushed_as_pcm_on_one_side_comes_out_of_the_other_sides_sink() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let ((patient, patient_events), (doctor, doctor_events)) = connected_on_loopback(&visit, WAIT);

    let stop = Arc::new(AtomicBool::new(false));
    let at_doctor = devices(doctor.clone(), 440.0, stop.clone());
    let at_patient = devices(patient.clone(), 660.0, stop.clone());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let (at_doctor, at_patient) = (at_doctor.join().unwrap(), at_patient.join().unwrap());

    for (side, played, hears, own, sink) in [
        ("doctor", &at_doctor, 660.0, 440.0, doctor.audio_sink().unwrap()),
        ("patient", &at_patient, 440.0, 660.0, patient.audio_sink().unwrap()),
    ] {
        let stats = sink.stats();
        // The last second: the peer's tone, loud, in every 10 ms, not this side's own.
        let last_second = &played[played.len() - 100 * FRAME_SAMPLES..];
        for frame in last_second.chunks(FRAME_SAMPLES) {
            assert!(rms(frame) > 3000.0, "{side}: a quiet 10 ms (rms {}), {stats:?}", rms(frame));
        }
        let ratio = goertzel_ratio(last_second, hears, own);
        assert!(ratio > 1000.0, "{side} hears {hears} Hz over {own} Hz only {ratio}x, {stats:?}");
        assert!(stats.packets_received >= 75, "{side}: {stats:?}");
        assert_eq!(stats.packets_lost, 0, "{side}: loopback loses nothing, {stats:?}");
        assert!(stats.target_delay_ms <= 100, "{side}: loopback has little jitter, {stats:?}");
    }
    // Once the app took the sink, the peer's audio is played there, not sent to the listener.
    assert!(doctor_events.remote_frames(FrameKind::Audio).is_empty());
    assert!(patient_events.remote_frames(FrameKind::Audio).is_empty());

    doctor.hang_up();
    patient_events.wait_for(WAIT, |e| matches!(e, ClientEvent::Call(CallEvent::Ended(_))));
    doctor.close();
    patient.close();
    assert!(doctor.audio_sink().is_err(), "no sink after close");
}
