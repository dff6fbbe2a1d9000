//! Call benchmark on the software codec path: time from the doctor's `join()` to the first
//! *decoded* picture at the patient (median of 10 calls through a real server, real peer
//! connections on loopback), with our settings and with the crate's 1 s wait before nominating a
//! peer-reflexive pair (the cause of a constant ~1.05 s ICE delay, see
//! `WebRtcSettings::prflx_acceptance_min_wait`); CPU time and memory of one 10 s call with 720p30
//! VP8 + Opus encoded and decoded both ways; and the VP8 encoder's and decoder's cost per 720p
//! frame alone.
//!
//! Run: `cargo bench -p televisit-tests --bench call_setup` (release build of our code; libvpx and
//! libopus are Debian's).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use televisit_codecs::audio::OpusDecoder;
use televisit_codecs::pattern::TestPattern;
use televisit_codecs::video::{default_target, Vp8Decoder, Vp8Encoder};
use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallListener, CallOptions, ClientEvent};
use televisit_core::frame::FrameKind;
use televisit_join::{spawn_synthetic_media, PictureReader};
use televisit_tests::TestServer;

/// A listener that decodes what arrives, like an app would.
struct Probe {
    connected: Arc<AtomicBool>,
    first_picture: Mutex<Option<Instant>>,
    pictures: Mutex<PictureReader>,
    voice: Mutex<OpusDecoder>,
    audio_decoded: AtomicU64,
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::new(Probe {
            connected: Arc::default(),
            first_picture: Mutex::new(None),
            pictures: Mutex::new(PictureReader::new().unwrap()),
            voice: Mutex::new(OpusDecoder::new().unwrap()),
            audio_decoded: AtomicU64::new(0),
        })
    }
}

impl CallListener for Probe {
    fn on_event(&self, event: ClientEvent) {
        match event {
            ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)) => {
                self.connected.store(true, Ordering::SeqCst)
            }
            ClientEvent::RemoteFrame(frame) if frame.kind == FrameKind::Video => {
                if let Ok(Some(_)) = self.pictures.lock().unwrap().receive(&frame) {
                    self.first_picture.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
            ClientEvent::RemoteFrame(frame) if self.voice.lock().unwrap().decode(&frame.data).is_ok() => {
                self.audio_decoded.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

fn media(prflx_wait: Duration) -> Arc<WebRtcMedia> {
    Arc::new(WebRtcMedia::new(WebRtcSettings {
        udp_addrs: vec!["127.0.0.1:0".into()],
        prflx_acceptance_min_wait: prflx_wait,
        ..Default::default()
    }))
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn status_kib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find(|l| l.starts_with(field)).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

struct CallFigures {
    first_picture: Duration,
    pictures: [(u64, usize); 2],
    audio: [u64; 2],
}

/// One call, both sides sending the live-encoded pattern and tone after they connect.
fn one_call(
    server: &TestServer,
    runtime: &tokio::runtime::Runtime,
    seconds: f64,
    prflx_wait: Duration,
) -> CallFigures {
    let visit = runtime.block_on(server.started_visit());
    let (patient_probe, doctor_probe) = (Probe::new(), Probe::new());
    let patient = Arc::new(
        CallClient::new(
            &visit.patient_link,
            patient_probe.clone(),
            media(prflx_wait),
            CallOptions::default(),
        )
        .unwrap(),
    );
    patient.join();
    std::thread::sleep(Duration::from_millis(300)); // the patient waits in the waiting room
    let doctor = Arc::new(
        CallClient::new(&visit.doctor_link, doctor_probe.clone(), media(prflx_wait), CallOptions::default())
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    doctor.join();
    let senders = [
        spawn_synthetic_media(doctor.clone(), doctor_probe.connected.clone(), stop.clone()).unwrap(),
        spawn_synthetic_media(patient.clone(), patient_probe.connected.clone(), stop.clone()).unwrap(),
    ];
    while patient_probe.first_picture.lock().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "no picture within 20 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let first_picture = patient_probe.first_picture.lock().unwrap().unwrap() - started;
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    doctor.close();
    patient.close();
    let pictures = |probe: &Probe| {
        let reader = probe.pictures.lock().unwrap();
        (reader.decoded(), reader.counters.len())
    };
    CallFigures {
        first_picture,
        pictures: [pictures(&patient_probe), pictures(&doctor_probe)],
        audio: [
            patient_probe.audio_decoded.load(Ordering::Relaxed),
            doctor_probe.audio_decoded.load(Ordering::Relaxed),
        ],
    }
}

/// Encoder and decoder alone: ms of CPU per 720p frame over 300 frames (30 distinct pictures of
/// the pattern, cycled, so that making them is not measured).
fn codec_alone() -> (f64, f64, f64) {
    let mut pattern = TestPattern::new();
    let pictures: Vec<_> = (0..30).map(|_| pattern.next_frame(1280, 720)).collect();
    let mut encoder = Vp8Encoder::new(default_target()).unwrap();
    let before = cpu_seconds();
    let frames: Vec<_> = (0..300).map(|n| encoder.encode(&pictures[n % 30]).unwrap().unwrap()).collect();
    let encode_ms = (cpu_seconds() - before) * 1000.0 / 300.0;
    let mut decoder = Vp8Decoder::new().unwrap();
    let before = cpu_seconds();
    for frame in &frames {
        decoder.decode(&frame.data).unwrap();
    }
    let decode_ms = (cpu_seconds() - before) * 1000.0 / 300.0;
    let kbps = frames.iter().map(|f| f.data.len()).sum::<usize>() as f64 * 8.0 / 10.0 / 1000.0;
    (encode_ms, decode_ms, kbps)
}

fn main() {
    televisit_tests::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = runtime.block_on(TestServer::start(|_| {}));
    let ours = WebRtcSettings::default().prflx_acceptance_min_wait;
    let crate_default = Duration::from_secs(1);
    one_call(&server, &runtime, 0.2, ours); // warm-up
    let mut setups: Vec<Duration> =
        (0..10).map(|_| one_call(&server, &runtime, 0.2, ours).first_picture).collect();
    setups.sort();
    let mut before: Vec<Duration> =
        (0..10).map(|_| one_call(&server, &runtime, 0.2, crate_default).first_picture).collect();
    before.sort();
    let cpu_before = cpu_seconds();
    let rss_before = status_kib("VmRSS:");
    let call_start = Instant::now();
    let call = one_call(&server, &runtime, 10.0, ours);
    let wall = call_start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let rss = status_kib("VmRSS:") - rss_before;
    let peak = status_kib("VmHWM:");
    let (encode_ms, decode_ms, kbps) = codec_alone();
    println!();
    println!(
        "Call benchmark, software codec path (server, doctor and patient in one process; loopback; {} build)",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    println!("VP8 720p30 via Debian's libvpx (real-time, speed -6, CBR 1.5 Mbps), Opus 48 kHz mono 32 kbps via libopus");
    println!("webrtc-rs 0.21.1: ICE check interval 20 ms (default 200 ms), peer-reflexive pairs nominated at once (default after 1 s), loopback host candidates, default interceptors (NACK, RTCP reports, TWCC) + GCC with our audio-first pacer");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| VP8 encode, 720p test pattern, alone | {encode_ms:.2} ms CPU per frame ({:.0} % of one core at 30 fps), {kbps:.0} kbps out |", encode_ms * 3.0);
    println!(
        "| VP8 decode, 720p, alone | {decode_ms:.2} ms CPU per frame ({:.0} % of one core at 30 fps) |",
        decode_ms * 3.0
    );
    println!(
        "| doctor join → first decoded picture with its counter at the patient, median of 10 | {:.0} ms |",
        setups[5].as_secs_f64() * 1000.0
    );
    println!(
        "| same, min / max | {:.0} / {:.0} ms |",
        setups[0].as_secs_f64() * 1000.0,
        setups[9].as_secs_f64() * 1000.0
    );
    println!(
        "| same with the crate's 1 s peer-reflexive wait: median (min / max) | {:.0} ms ({:.0} / {:.0}) |",
        before[5].as_secs_f64() * 1000.0,
        before[0].as_secs_f64() * 1000.0,
        before[9].as_secs_f64() * 1000.0
    );
    println!("| CPU time of one 10 s call, both sides (encode + decode 720p30 VP8 and Opus each way, RTP/SRTP, server) | {cpu:.2} s over {wall:.1} s wall ({:.0} % of one core) |", 100.0 * cpu / wall);
    println!(
        "| pictures decoded (with a readable counter) at the patient / at the doctor | {} ({}) / {} ({}) |",
        call.pictures[0].0, call.pictures[0].1, call.pictures[1].0, call.pictures[1].1
    );
    println!(
        "| audio frames decoded at the patient / at the doctor | {} / {} |",
        call.audio[0], call.audio[1]
    );
    println!("| process memory growth over that call (RSS) | {rss:.0} KiB |");
    println!(
        "| peak RSS of the benchmark process (server + 12 calls, before the codec-alone runs) | {:.0} MiB |",
        peak / 1024.0
    );
}
