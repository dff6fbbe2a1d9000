//! Speech through a whole call, for an objective quality score: two call clients through a real
//! server, their media through the link emulator (`televisit_tests::netem`), over a real peer
//! connection. The doctor's "microphone" pushes recorded speech in 10 ms frames in real time; the
//! patient's "speaker" pulls a 10 ms frame every 10 ms and what it plays is written out. Unlike the
//! core's `audio_quality` bench (the engine over an in-process link), everything a phone's sound
//! meets is here: Opus with FEC sized from the call's own loss reports, RTP/SRTP, ICE and DTLS over
//! the lossy link, RTCP, and the adaptive jitter buffer.
//!
//! ```sh
//! cargo bench -p televisit-tests --bench audio_network -- speech.raw out/
//! ```
//!
//! `speech.raw` is 48 kHz mono signed 16-bit little-endian PCM. For each path it writes what the
//! patient played, from the moment the doctor began to speak, to `out/network-<path>.raw` (same
//! format) and prints what the jitter buffer did. `scripts/audio-quality` makes the speech, runs
//! this, and scores each output against the input with PESQ. The lossy path is netem's
//! `delay 50ms 30ms loss 5%` each way: every packet delayed 20 to 80 ms (uniform, so packets
//! reorder) and lost with probability 5 %, independently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use televisit_core::audio::FRAME_SAMPLES;
use televisit_tests::netem::{LinkConfig, Relay, RelayConfig};
use televisit_tests::{connected_through_relay, Recorder, TestServer};

const FRAME: Duration = Duration::from_millis(10);
/// Silence before the speech: the first loss reports reach the sender and the jitter buffer
/// settles, as in a call where the doctor speaks a few seconds in.
const LEAD_IN: Duration = Duration::from_secs(3);
/// Pulled after the speech ends: what is still on its way.
const TAIL: Duration = Duration::from_secs(1);

/// One path through the emulator.
struct Path {
    name: &'static str,
    loss: f64,
    jitter: Duration,
}

const PATHS: [Path; 2] = [
    Path { name: "clean", loss: 0.0, jitter: Duration::ZERO },
    Path { name: "loss5-jitter30", loss: 0.05, jitter: Duration::from_millis(30) },
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [speech, out] = &args[..] else {
        eprintln!("usage: audio_network SPEECH.raw OUT_DIR (48 kHz mono s16le)");
        std::process::exit(2);
    };
    let bytes = std::fs::read(speech).expect("the speech file");
    let speech_pcm: Vec<i16> = bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    std::fs::create_dir_all(out).expect("the output directory");
    televisit_tests::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = runtime.block_on(TestServer::start(|_| {}));

    println!();
    println!("Speech through a call: real server, two call clients, their media through the link emulator");
    println!("(50 ms each way at 10 Mbit/s); 10 ms PCM in real time -> Opus 20 ms + FEC -> RTP/SRTP -> jitter buffer");
    println!("-> 10 ms PCM out ({} build)", if cfg!(debug_assertions) { "debug" } else { "release" });
    println!();
    println!("| path | speech s | packets received | lost | rebuilt from FEC | concealed frames | jitter buffer target ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for path in PATHS {
        let link = LinkConfig {
            loss: path.loss,
            jitter: path.jitter,
            seed: 11,
            ..LinkConfig::new(10_000_000, Duration::from_millis(50))
        };
        let relay = runtime
            .block_on(Relay::start(RelayConfig::symmetric(link)))
            .expect("the relay binds on loopback");
        let visit = runtime.block_on(server.started_visit());
        let listener = Arc::new(Recorder::default());
        let (patient, doctor, _) = connected_through_relay(&visit, &relay, listener, Duration::from_secs(30));
        let microphone = doctor.audio_source().expect("the doctor's source");
        let speaker = patient.audio_sink().expect("the patient's sink");

        let speech = speech_pcm.clone();
        let lead_in = (LEAD_IN.as_millis() / FRAME.as_millis()) as usize;
        let mouth = std::thread::spawn(move || {
            let silence = vec![0i16; FRAME_SAMPLES];
            let frames = std::iter::repeat_n(&silence[..], lead_in).chain(speech.chunks(FRAME_SAMPLES));
            let start = Instant::now();
            for (n, frame) in frames.enumerate() {
                let mut frame = frame.to_vec();
                frame.resize(FRAME_SAMPLES, 0);
                microphone.push(&frame).expect("a 10 ms frame is taken");
                std::thread::sleep(
                    (start + FRAME * (n as u32 + 1)).saturating_duration_since(Instant::now()),
                );
            }
        });
        // The speaker pulls from the start, as a phone's audio callback does; what it plays from
        // the moment the speech began is kept.
        let speech_frames = speech_pcm.len().div_ceil(FRAME_SAMPLES);
        let tail = (TAIL.as_millis() / FRAME.as_millis()) as usize;
        let mut played = Vec::new();
        let start = Instant::now();
        for n in 0..lead_in + speech_frames + tail {
            let frame = speaker.pull().expect("a frame to play");
            if n >= lead_in {
                played.extend(frame);
            }
            std::thread::sleep((start + FRAME * (n as u32 + 1)).saturating_duration_since(Instant::now()));
        }
        mouth.join().expect("the microphone thread");
        let stats = speaker.stats();
        let file = format!("{out}/network-{}.raw", path.name);
        let pcm: Vec<u8> = played.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&file, pcm).expect("the output file");
        println!(
            "| {} | {:.1} | {} | {} | {} | {} | {} |",
            path.name,
            speech_pcm.len() as f64 / 48_000.0,
            stats.packets_received,
            stats.packets_lost,
            stats.packets_recovered,
            stats.concealed_frames,
            stats.target_delay_ms
        );
        doctor.hang_up();
        doctor.close();
        patient.close();
    }
}
