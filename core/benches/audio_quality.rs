//! The audio engine's send and receive paths over an in-process lossy, jittery link (sans-I/O, no
//! sockets: packets are delayed and dropped by a seeded generator), for an objective quality score.
//!
//! ```sh
//! cargo bench -p televisit-core --bench audio_quality -- speech.raw out/
//! ```
//!
//! `speech.raw` is 48 kHz mono signed 16-bit little-endian PCM. For each path it writes what the
//! receiving sink played to `out/<path>.raw` (same format) and prints a table of what the jitter
//! buffer did. `scripts/audio-quality` makes the speech, runs this, and scores each output against
//! the input with PESQ. The link is netem's `delay 50ms 30ms loss 5%`: every packet is delayed 20
//! to 80 ms (uniform, so packets reorder) and lost with probability 5 %, independently.

use televisit_core::audio::jitter::AudioPacket;
use televisit_core::audio::voice::{VoiceReceiver, VoiceSender};
use televisit_core::audio::{FRAME_SAMPLES, PACKET_SAMPLES};

/// One path through the link.
struct Path {
    name: &'static str,
    loss: f64,
    jitter_ms: i64,
    /// The loss the sender's FEC is sized for (the call tells it the measured loss).
    fec_for_percent: u8,
}

const PATHS: [Path; 3] = [
    Path { name: "clean", loss: 0.0, jitter_ms: 0, fec_for_percent: 0 },
    Path { name: "loss5-jitter30", loss: 0.05, jitter_ms: 30, fec_for_percent: 5 },
    Path { name: "loss5-jitter30-nofec", loss: 0.05, jitter_ms: 30, fec_for_percent: 0 },
];

/// The link's base one-way delay, ms.
const BASE_DELAY_MS: i64 = 50;

/// xorshift64*: a seeded, repeatable generator in `0.0..1.0`.
struct Random(u64);

impl Random {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn run(path: &Path, speech: &[i16]) -> (Vec<i16>, televisit_core::audio::jitter::JitterStats) {
    let mut sender = VoiceSender::new().expect("an encoder");
    sender.set_expected_loss(path.fec_for_percent).expect("FEC set");
    let mut random = Random(0x5eed_0000_0000_0001);
    // Each packet: (arrival ms, packet); sent at the end of its 20 ms.
    let mut arrivals = Vec::new();
    for (n, frame) in speech.chunks_exact(FRAME_SAMPLES).enumerate() {
        if let Some(payload) = sender.push(frame).expect("encodes") {
            let number = (n / 2) as u32;
            let sent_ms = i64::from(number) * 20 + 20;
            let jitter = ((random.next() * 2.0 - 1.0) * path.jitter_ms as f64).round() as i64;
            if random.next() >= path.loss {
                let packet = AudioPacket {
                    ssrc: 1,
                    sequence: number as u16,
                    timestamp: number * PACKET_SAMPLES as u32,
                    payload,
                    capture_time_us: None,
                };
                arrivals.push((sent_ms + BASE_DELAY_MS + jitter, packet));
            }
        }
    }
    arrivals.sort_by_key(|(at, _)| *at);
    let mut receiver = VoiceReceiver::new().expect("a decoder");
    let mut arrivals = arrivals.into_iter().peekable();
    let mut played = Vec::with_capacity(speech.len() + 48_000);
    // Pull every 10 ms until the speech and a second more have played.
    let end_ms = (speech.len() / FRAME_SAMPLES) as i64 * 10 + 1000;
    for now in (0..end_ms).step_by(10) {
        while let Some((_, packet)) = arrivals.next_if(|(at, _)| *at <= now) {
            receiver.push(packet, now);
        }
        played.extend(receiver.pull(now));
    }
    (played, receiver.stats())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [input, out_dir] = &args[..] else {
        eprintln!("usage: audio_quality <speech.raw: 48 kHz mono s16le> <output dir>");
        std::process::exit(2);
    };
    let bytes = std::fs::read(input).expect("the speech file");
    let speech: Vec<i16> = bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    std::fs::create_dir_all(out_dir).expect("the output directory");
    println!(
        "| path | packets lost | rebuilt by FEC | late | concealed 10 ms | accelerations | expansions | target delay ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for path in &PATHS {
        let (played, stats) = run(path, &speech);
        let bytes: Vec<u8> = played.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(format!("{out_dir}/{}.raw", path.name), bytes).expect("writes the output");
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            path.name,
            stats.packets_lost,
            stats.packets_recovered,
            stats.packets_late,
            stats.concealed_frames,
            stats.accelerations,
            stats.expansions,
            stats.target_delay_ms
        );
    }
}
