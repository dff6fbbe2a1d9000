//! Mouth-to-ear latency through the audio engine on loopback: two call clients through a real
//! server and a real peer connection. The doctor's "microphone" pushes 10 ms PCM frames in real
//! time, silence with a 100 ms 1 kHz burst every 600 ms; the patient's "speaker" pulls a frame every
//! 10 ms. The latency of one burst runs from the push of its first frame to the moment its first
//! loud sample is played (the pull of the frame that holds it, plus the sample's place in the
//! frame): Opus encoding, packetization, the network, the jitter buffer's delay and decoding. A
//! real device adds its own capture and playout buffers (10 ms each here) on top.
//!
//! Run: `cargo bench -p televisit-tests --bench audio_latency` (`AUDIO_LATENCY_BURSTS=40` for more).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use televisit_core::audio::signal::tone;
use televisit_core::audio::FRAME_SAMPLES;
use televisit_tests::{connected_on_loopback, TestServer};

const SAMPLE_RATE: f64 = 48_000.0;
const FRAME: Duration = Duration::from_millis(10);
/// A burst every this many frames, lasting `BURST_FRAMES`.
const PERIOD_FRAMES: u32 = 60;
const BURST_FRAMES: u32 = 10;
/// A sample this loud is the burst (the tone's peak is 10 000; silence decodes to ~0).
const LOUD: i16 = 3000;

fn main() {
    televisit_tests::install_crypto_provider();
    let bursts: u32 = std::env::var("AUDIO_LATENCY_BURSTS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = runtime.block_on(TestServer::start(|_| {}));
    let visit = runtime.block_on(server.started_visit());
    let wait = Duration::from_secs(20);
    let ((patient, _), (doctor, _)) = connected_on_loopback(&visit, wait);

    let microphone = doctor.audio_source().expect("the doctor's source");
    let speaker = patient.audio_sink().expect("the patient's sink");
    let burst_pushed: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // The doctor's microphone: one 10 ms frame every 10 ms, in real time.
    let mouth = std::thread::spawn({
        let (burst_pushed, stop) = (burst_pushed.clone(), stop.clone());
        move || {
            let silence = vec![0i16; FRAME_SAMPLES];
            let start = Instant::now();
            for n in 0..(bursts + 1) * PERIOD_FRAMES {
                let in_period = n % PERIOD_FRAMES;
                // The first period is silence: the jitter buffer settles.
                let loud = n >= PERIOD_FRAMES && in_period < BURST_FRAMES;
                if loud && in_period == 0 {
                    burst_pushed.lock().unwrap().push(Instant::now());
                }
                let frame = if loud {
                    tone(1000.0, u64::from(n) * FRAME_SAMPLES as u64, FRAME_SAMPLES)
                } else {
                    silence.clone()
                };
                microphone.push(&frame).expect("a 10 ms frame is taken");
                std::thread::sleep((start + FRAME * (n + 1)).saturating_duration_since(Instant::now()));
            }
            stop.store(true, Ordering::Relaxed);
        }
    });
    // The patient's speaker: pulls every 10 ms; notes when each burst starts playing.
    let mut heard = Vec::new();
    let mut quiet_frames = 0u32;
    let start = Instant::now();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) || n < 50 {
        let pulled_at = Instant::now();
        let frame = speaker.pull().expect("a frame to play");
        match frame.iter().position(|s| s.unsigned_abs() >= LOUD as u16) {
            // A burst's onset: loud after at least 100 ms of quiet.
            Some(sample) if quiet_frames >= 10 => {
                heard.push(pulled_at + Duration::from_secs_f64(sample as f64 / SAMPLE_RATE));
                quiet_frames = 0;
            }
            Some(_) => quiet_frames = 0,
            None => quiet_frames += 1,
        }
        n += 1;
        std::thread::sleep((start + FRAME * n).saturating_duration_since(Instant::now()));
    }
    mouth.join().unwrap();
    let stats = speaker.stats();
    let pushed = burst_pushed.lock().unwrap().clone();

    // Pair each burst heard with the latest burst pushed before it.
    let mut latencies: Vec<f64> = heard
        .iter()
        .filter_map(|&at| pushed.iter().rev().find(|&&p| p <= at).map(|&p| (at - p).as_secs_f64() * 1000.0))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];

    println!();
    println!(
        "Mouth-to-ear latency through the audio engine (10 ms PCM in -> Opus 20 ms + FEC -> RTP over a real"
    );
    println!(
        "peer connection on loopback -> adaptive jitter buffer -> 10 ms PCM out), {} build; one process,",
        profile()
    );
    println!("server, doctor and patient; device buffers not included (a phone adds its capture and playout buffers)");
    println!();
    println!("| bursts pushed | heard | median ms | p95 ms | min ms | max ms | jitter buffer target ms | packets received | lost | concealed frames |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if latencies.is_empty() {
        println!(
            "| {} | 0 | - | - | - | - | {} | {} | {} | {} |",
            pushed.len(),
            stats.target_delay_ms,
            stats.packets_received,
            stats.packets_lost,
            stats.concealed_frames
        );
    } else {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            pushed.len(),
            latencies.len(),
            quantile(0.5),
            quantile(0.95),
            latencies[0],
            latencies[latencies.len() - 1],
            stats.target_delay_ms,
            stats.packets_received,
            stats.packets_lost,
            stats.concealed_frames
        );
    }
    doctor.hang_up();
    doctor.close();
    patient.close();
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}
