//! Call benchmark: time from the doctor's `join()` to the first remote video frame at the patient
//! (median of 10 calls through a real server, real peer connections on loopback) with our settings
//! and with the crate's 1 s wait before nominating a peer-reflexive pair (the cause of a constant
//! ~1.05 s ICE delay, see `WebRtcSettings::prflx_acceptance_min_wait`), and CPU time and memory of
//! one call sending 720p30-sized encoded frames both ways for 10 s.
//!
//! Run: `cargo bench -p televisit-tests --bench call_setup`. The figures cover the encoded-frame
//! path (RTP, SRTP, depacketizing); no software encoder runs (see the issue notes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallListener, CallOptions, ClientEvent};
use televisit_core::headless::spawn_synthetic_media;
use televisit_tests::TestServer;

#[derive(Default)]
struct Probe {
    connected: Arc<AtomicBool>,
    first_frame: Mutex<Option<Instant>>,
    frames: std::sync::atomic::AtomicU64,
}

impl CallListener for Probe {
    fn on_event(&self, event: ClientEvent) {
        match event {
            ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)) => {
                self.connected.store(true, Ordering::SeqCst)
            }
            ClientEvent::RemoteFrame(_) => {
                self.frames.fetch_add(1, Ordering::Relaxed);
                self.first_frame.lock().unwrap().get_or_insert_with(Instant::now);
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

fn rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// One call; returns (doctor join → first frame at the patient, doctor join → patient connected).
fn one_call(
    server: &TestServer,
    runtime: &tokio::runtime::Runtime,
    seconds: f64,
    prflx_wait: Duration,
) -> (Duration, Duration) {
    let visit = runtime.block_on(server.started_visit());
    let patient_probe = Arc::new(Probe::default());
    let doctor_probe = Arc::new(Probe::default());
    let patient = CallClient::new(
        &visit.patient_link,
        patient_probe.clone(),
        media(prflx_wait),
        CallOptions::default(),
    )
    .unwrap();
    patient.join();
    std::thread::sleep(Duration::from_millis(300)); // the patient waits in the waiting room
    let doctor = Arc::new(
        CallClient::new(&visit.doctor_link, doctor_probe.clone(), media(prflx_wait), CallOptions::default())
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    doctor.join();
    let sender = spawn_synthetic_media(doctor.clone(), doctor_probe.connected.clone(), stop.clone());
    while patient_probe.first_frame.lock().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "no frame within 20 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let first_frame = patient_probe.first_frame.lock().unwrap().unwrap() - started;
    let connected = started.elapsed().min(first_frame);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    doctor.close();
    patient.close();
    (first_frame, connected)
}

fn main() {
    televisit_tests::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = runtime.block_on(TestServer::start(|_| {}));
    let ours = WebRtcSettings::default().prflx_acceptance_min_wait;
    let crate_default = Duration::from_secs(1);
    one_call(&server, &runtime, 0.2, ours); // warm-up
    let mut setups: Vec<Duration> = (0..10).map(|_| one_call(&server, &runtime, 0.2, ours).0).collect();
    setups.sort();
    let mut before: Vec<Duration> =
        (0..10).map(|_| one_call(&server, &runtime, 0.2, crate_default).0).collect();
    before.sort();
    let cpu_before = cpu_seconds();
    let rss_before = rss_kib();
    let call_start = Instant::now();
    one_call(&server, &runtime, 10.0, ours);
    let wall = call_start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let rss = rss_kib() - rss_before;
    println!();
    println!(
        "Call benchmark (server, doctor and patient in one process; loopback; debug or release as built)"
    );
    println!("webrtc-rs 0.21.1: ICE check interval 20 ms (default 200 ms), peer-reflexive pairs nominated at once (default after 1 s), loopback host candidates, default interceptors (NACK, RTCP reports, TWCC) + GCC with our audio-first pacer");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| doctor join → first remote video frame, median of 10 | {:.0} ms |",
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
    println!("| CPU time of one call, both sides, 30 fps 720p-sized encoded frames + 50 fps audio each way | {:.2} s over {:.1} s wall ({:.0} % of one core) |", cpu, wall, 100.0 * cpu / wall);
    println!("| process memory growth over that call (RSS) | {:.0} KiB |", rss);
}
