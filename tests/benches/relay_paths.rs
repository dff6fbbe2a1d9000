//! Join → first decoded picture by network path: host (loopback), and a relay-only patient through
//! TURN over UDP, TCP and TLS (the in-process TURN server of `televisit_tests::turn`, and its TCP
//! and TLS fronts); median and worst of 10 calls each, through a real server with real peer
//! connections. The clock starts at the doctor's `join()` (the patient waits in the waiting room)
//! and stops when the patient's camera picture, live-encoded VP8, decodes at the doctor.
//!
//! Run: `cargo bench -p televisit-tests --bench relay_paths`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallListener, CallOptions, ClientEvent};
use televisit_core::frame::FrameKind;
use televisit_core::headless::{spawn_synthetic_media, PictureReader};
use televisit_tests::turn::{localhost_tls, TurnServer};
use televisit_tests::TestServer;

const TURN_SECRET: &str = "bench-secret";

/// Notes when the call connects and when the first picture decodes.
struct FirstPicture {
    connected: Arc<AtomicBool>,
    reader: Mutex<PictureReader>,
    at: Mutex<Option<Instant>>,
}

impl FirstPicture {
    fn new() -> Arc<FirstPicture> {
        let reader = Mutex::new(PictureReader::new().unwrap());
        Arc::new(FirstPicture { connected: Arc::default(), reader, at: Mutex::default() })
    }
}

impl CallListener for FirstPicture {
    fn on_event(&self, event: ClientEvent) {
        match event {
            ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)) => {
                self.connected.store(true, Ordering::SeqCst)
            }
            ClientEvent::RemoteFrame(frame) if frame.kind == FrameKind::Video => {
                if let Ok(Some(_)) = self.reader.lock().unwrap().receive(&frame) {
                    self.at.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
            _ => {}
        }
    }
}

struct Path {
    name: &'static str,
    server: TestServer,
    relay_only: bool,
    turn_tls: Option<Arc<rustls::ClientConfig>>,
}

fn media(turn_tls: Option<Arc<rustls::ClientConfig>>) -> Arc<WebRtcMedia> {
    Arc::new(WebRtcMedia::new(WebRtcSettings {
        udp_addrs: vec!["127.0.0.1:0".into()],
        turn_tls,
        ..WebRtcSettings::default()
    }))
}

/// One call on `path`: the doctor's join → the patient's first picture decoded at the doctor.
fn one_call(path: &Path, runtime: &tokio::runtime::Runtime) -> Duration {
    let visit = runtime.block_on(path.server.started_visit());
    let patient_side = FirstPicture::new();
    let options = CallOptions { relay_only: path.relay_only, ..CallOptions::default() };
    let patient = Arc::new(
        CallClient::new(&visit.patient_link, patient_side.clone(), media(path.turn_tls.clone()), options)
            .unwrap(),
    );
    patient.join();
    std::thread::sleep(Duration::from_millis(300)); // the patient waits in the waiting room
    let probe = FirstPicture::new();
    let doctor = Arc::new(
        CallClient::new(&visit.doctor_link, probe.clone(), media(None), CallOptions::default()).unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    // Media starts once connected (frames before that are dropped by the stack).
    let camera =
        spawn_synthetic_media(patient.clone(), patient_side.connected.clone(), stop.clone()).unwrap();
    let started = Instant::now();
    doctor.join();
    let first = loop {
        if let Some(at) = *probe.at.lock().unwrap() {
            break at - started;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{}: no picture within 20 s", path.name);
        std::thread::sleep(Duration::from_millis(1));
    };
    stop.store(true, Ordering::Relaxed);
    camera.join().unwrap();
    doctor.close();
    patient.close();
    first
}

fn main() {
    televisit_tests::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let turn = runtime.block_on(TurnServer::start(TURN_SECRET));
    let (server_tls, client_tls) = localhost_tls();
    let tcp = runtime.block_on(turn.stream_front(None));
    let tls = runtime.block_on(turn.stream_front(Some(server_tls)));
    let server_with = |url: String| {
        runtime.block_on(TestServer::start(move |config| {
            config.turn_urls = vec![url];
            config.turn_secret = Some(TURN_SECRET.into());
        }))
    };
    let paths = [
        Path {
            name: "host (loopback)",
            server: runtime.block_on(TestServer::start(|_| {})),
            relay_only: false,
            turn_tls: None,
        },
        Path {
            name: "relay, TURN over UDP",
            server: server_with(turn.udp_url()),
            relay_only: true,
            turn_tls: None,
        },
        Path {
            name: "relay, TURN over TCP",
            server: server_with(format!("turn:{}?transport=tcp", tcp.addr)),
            relay_only: true,
            turn_tls: None,
        },
        Path {
            name: "relay, TURN over TLS",
            server: server_with(format!("turns:localhost:{}?transport=tcp", tls.addr.port())),
            relay_only: true,
            turn_tls: Some(client_tls),
        },
    ];
    println!();
    println!(
        "Join → first decoded picture by path (doctor's join() to the patient's first VP8 picture decoded at the doctor; patient relay-only on relay paths; loopback; {} build)",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    println!(
        "relay nomination wait {:?}; in-process TURN server (turn 0.17), TCP/TLS through the core's bridges",
        WebRtcSettings::default().relay_acceptance_min_wait
    );
    println!();
    println!("| path | median of 10 | worst |");
    println!("|---|---|---|");
    for path in &paths {
        one_call(path, &runtime); // warm-up
        let mut times: Vec<Duration> = (0..10).map(|_| one_call(path, &runtime)).collect();
        times.sort();
        let median = (times[4] + times[5]) / 2;
        println!(
            "| {} | {:.0} ms | {:.0} ms |",
            path.name,
            median.as_secs_f64() * 1000.0,
            times[9].as_secs_f64() * 1000.0
        );
    }
    runtime.block_on(turn.close());
}
