//! TURN benchmark, in the network namespaces of [`televisit_tests::turn_lab`] (needs root; prints
//! why and exits otherwise): the headless client (`call-join`) as doctor and patient, each in its
//! namespace.
//!
//! 1. Join → first decoded picture (median of 10 calls) when the two reach each other directly
//!    (host candidates on their direct link), and when their direct link drops UDP so the call is
//!    relayed over UDP by the embedded TURN server and by coturn. Timed from the doctor's process
//!    start (the patient already waits) to the `first picture decoded` line of the doctor and of
//!    the patient.
//! 2. Join → first decoded picture by relay transport, on loopback in this process: a relay-only
//!    patient (the core's client) reaches the embedded TURN server over UDP, over TCP and over TLS
//!    (the core's TURN-over-TCP/TLS bridges), the doctor on host candidates; median and worst of
//!    10 calls. Timed from the doctor's `join()` to the patient's camera picture decoded at the
//!    doctor.
//! 3. The TURN server's CPU time per relayed call: a 10 s call through the embedded server (this
//!    process's CPU time; it also serves the signaling, which is idle during a call) and through
//!    coturn (its process's), with the relayed rate (what both clients received), scaled to a
//!    1.5 Mbps call.
//! 4. Media back after a network switch (`televisit_tests::network_switch`: the patient's wifi goes
//!    down mid-call, cell comes up, `network_changed()`): median and worst of 5 switches, both
//!    ways, and audio alone.
//!
//! Run: `cargo bench -p televisit-tests --bench turn`.
//!
//! Measured (debug build, `cargo test -p televisit-tests --bench turn`, a busy 2-core machine):
//! before the keyframe-request fix the waiting patient decoded a picture in 1 relayed call of 10
//! (3071 ms embedded TURN, 3084 ms coturn); after it in 10 of 10 (1567 / 1574 ms median; the
//! doctor 1482 / 1485 ms; direct 111 / 114 ms).

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallListener, CallOptions, ClientEvent};
use televisit_core::frame::FrameKind;
use televisit_join::{spawn_synthetic_media, PictureReader};
use televisit_tests::netns::{self, Netns};
use televisit_tests::turn_lab::{cpu_time, join, Coturn, Lab, LoopbackTurn};
use televisit_tests::TestServer;

const CALLS: usize = 10;
const CALL_JOIN: &str = env!("CARGO_BIN_EXE_call-join");

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    EmbeddedTurn,
    Coturn,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "host (direct)",
            Path::EmbeddedTurn => "relay/UDP, embedded TURN",
            Path::Coturn => "relay/UDP, coturn",
        }
    }
}

/// A `call-join` whose output lines arrive, time-stamped, on a channel.
struct Watched {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl Watched {
    fn spawn(netns: &Netns, link: &str, seconds: u64) -> Watched {
        let mut child = join(CALL_JOIN, netns, link, seconds);
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        Watched { child, lines, seen: Vec::new() }
    }

    /// When a line containing `what` was printed, waiting up to `timeout`.
    fn wait_for(&mut self, what: &str, timeout: Duration) -> Option<Instant> {
        if let Some((at, _)) = self.seen.iter().find(|(_, l)| l.contains(what)) {
            return Some(*at);
        }
        let deadline = Instant::now() + timeout;
        while let Ok((at, line)) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let found = line.contains(what);
            self.seen.push((at, line));
            if found {
                return Some(at);
            }
        }
        None
    }

    /// Waits for the end (killing it after `timeout`); returns every line.
    fn finish(mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        self.seen.into_iter().map(|(_, l)| l).collect()
    }
}

/// The lab, server and (for coturn) TURN process of one path.
async fn setup(path: Path) -> (Lab, TestServer, Option<Coturn>) {
    let lab = Lab::new(path != Path::Direct);
    let coturn = (path == Path::Coturn).then(|| Coturn::start(lab.server_ip(), "bench-secret"));
    let (turn, ip) = (lab.embedded_turn(), lab.server_ip());
    let port = coturn.as_ref().map(|c| c.port);
    let server = lab
        .server(|c| {
            c.turn_secret = Some("bench-secret".into());
            match (path, port) {
                (Path::EmbeddedTurn, _) => c.embedded_turn = Some(turn),
                (Path::Coturn, Some(port)) => c.turn_urls = vec![format!("turn:{ip}:{port}?transport=udp")],
                _ => {}
            }
        })
        .await;
    (lab, server, coturn)
}

/// One call: (doctor's join → first picture at the doctor, … at the patient).
async fn one_call(
    lab: &Lab,
    server: &TestServer,
    seconds: u64,
) -> (Option<Duration>, Option<Duration>, Vec<String>) {
    let visit = server.started_visit().await;
    let mut patient = Watched::spawn(&lab.patient, &visit.patient_link, seconds);
    patient.wait_for("event: state WaitingRoom", Duration::from_secs(20));
    let start = Instant::now();
    let mut doctor = Watched::spawn(&lab.doctor, &visit.doctor_link, seconds);
    let timeout = Duration::from_secs(15);
    let at_doctor = doctor.wait_for("event: first picture decoded", timeout).map(|t| t - start);
    let at_patient = patient.wait_for("event: first picture decoded", timeout).map(|t| t - start);
    let budget = Duration::from_secs(seconds + 20);
    let (mut lines, patient_lines) = (doctor.finish(budget), patient.finish(budget));
    lines.extend(patient_lines);
    (at_doctor, at_patient, lines)
}

fn median(mut samples: Vec<Duration>) -> Option<Duration> {
    samples.sort();
    samples.get(samples.len() / 2).copied()
}

fn show(samples: &[Option<Duration>]) -> String {
    let got: Vec<Duration> = samples.iter().flatten().copied().collect();
    match median(got.clone()) {
        Some(m) => format!("{:>7.0} ms ({}/{})", m.as_secs_f64() * 1000.0, got.len(), samples.len()),
        None => format!("{:>7} ({}/{})", "none", 0, samples.len()),
    }
}

/// The last `receive N kbps` of a client's stats lines.
fn last_receive_kbps(lines: &[String]) -> Vec<f64> {
    let parse = |l: &String| l.split("receive ").nth(1)?.split(' ').next()?.parse::<f64>().ok();
    let mut per_client = Vec::new();
    // The two clients' lines are concatenated; take the last value of each half.
    for half in lines.split(|l| l.starts_with("summary:")) {
        if let Some(kbps) = half.iter().rev().filter(|l| l.starts_with("stats:")).find_map(parse) {
            per_client.push(kbps);
        }
    }
    per_client
}

fn main() {
    if netns::skip() {
        return;
    }
    televisit_tests::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        println!("\nJoin → first decoded picture, median of {CALLS} calls (calls that got one / calls)\n");
        println!("| path | at the doctor (joins second) | at the patient (waiting) |");
        println!("|---|---|---|");
        for path in [Path::Direct, Path::EmbeddedTurn, Path::Coturn] {
            let (lab, server, _coturn) = setup(path).await;
            let (mut doctor, mut patient) = (Vec::new(), Vec::new());
            for _ in 0..CALLS {
                let (d, p, _) = one_call(&lab, &server, 3).await;
                doctor.push(d);
                patient.push(p);
            }
            println!("| {} | {} | {} |", path.name(), show(&doctor), show(&patient));
        }
        relay_transports().await;

        println!("\nTURN server CPU for one relayed call (10 s, both cameras on)\n");
        println!("| server | CPU time | relayed (both directions) | CPU per 1.5 Mbps relayed |");
        println!("|---|---|---|---|");
        for path in [Path::EmbeddedTurn, Path::Coturn] {
            let (lab, server, coturn) = setup(path).await;
            let pid = coturn.as_ref().map_or(std::process::id(), |c| c.pid());
            let before = (cpu_time(pid), Instant::now());
            let (_, _, lines) = one_call(&lab, &server, 10).await;
            let (cpu, wall) = (cpu_time(pid) - before.0, before.1.elapsed());
            let kbps: f64 = last_receive_kbps(&lines).iter().sum();
            let share = cpu.as_secs_f64() / wall.as_secs_f64();
            let per_call = if kbps > 0.0 { share * 1500.0 / kbps } else { f64::NAN };
            println!(
                "| {} | {:.2} s in {:.1} s ({:.1} % of a core) | {:.2} Mbps | {:.1} % of a core |",
                path.name(),
                cpu.as_secs_f64(),
                wall.as_secs_f64(),
                share * 100.0,
                kbps / 1000.0,
                per_call * 100.0
            );
        }
        network_switches().await;
        println!();
    });
}

/// Switches measured by [`network_switches`].
const SWITCHES: usize = 5;

async fn network_switches() {
    println!(
        "\nMedia back after a network switch (wifi → cell, then `network_changed()`), {SWITCHES} switches\n"
    );
    let (mut media, mut audio) = (Vec::new(), Vec::new());
    for _ in 0..SWITCHES {
        match televisit_tests::network_switch::wifi_to_cell(CALL_JOIN, Duration::from_secs(30)).await {
            Ok(outcome) => {
                media.push(Some(outcome.media_back()));
                audio.push(Some(outcome.audio_back()));
            }
            Err(error) => {
                eprintln!("a switch failed: {}", error.lines().next().unwrap_or_default());
                media.push(None);
                audio.push(None);
            }
        }
    }
    println!("| media back, both ways | audio back, both ways |");
    println!("|---|---|");
    let worst = |samples: &[Option<Duration>]| {
        samples
            .iter()
            .flatten()
            .max()
            .map_or("none".into(), |w| format!("{:.0} ms", w.as_secs_f64() * 1000.0))
    };
    println!("| {}, worst {} | {}, worst {} |", show(&media), worst(&media), show(&audio), worst(&audio));
}

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

fn loopback_media(turn_tls: Option<Arc<rustls::ClientConfig>>) -> Arc<WebRtcMedia> {
    Arc::new(WebRtcMedia::new(WebRtcSettings {
        udp_addrs: vec!["127.0.0.1:0".into()],
        turn_tls,
        ..WebRtcSettings::default()
    }))
}

/// One loopback call with a relay-only patient: the doctor's join → the patient's first picture
/// decoded at the doctor.
async fn relayed_call(server: &TestServer, turn_tls: Option<Arc<rustls::ClientConfig>>) -> Duration {
    let visit = server.started_visit().await;
    let patient_side = FirstPicture::new();
    let options = CallOptions { relay_only: true, ..CallOptions::default() };
    let patient = Arc::new(
        CallClient::new(&visit.patient_link, patient_side.clone(), loopback_media(turn_tls), options)
            .unwrap(),
    );
    patient.join();
    tokio::time::sleep(Duration::from_millis(300)).await; // the patient waits in the waiting room
    let probe = FirstPicture::new();
    let doctor = Arc::new(
        CallClient::new(&visit.doctor_link, probe.clone(), loopback_media(None), CallOptions::default())
            .unwrap(),
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
        assert!(started.elapsed() < Duration::from_secs(20), "no picture within 20 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    stop.store(true, Ordering::Relaxed);
    camera.join().unwrap();
    doctor.close();
    patient.close();
    first
}

/// Table 2: the embedded TURN server reached over UDP, TCP and TLS by the core's client.
async fn relay_transports() {
    let turn = LoopbackTurn::start("bench-secret").await;
    println!(
        "\nJoin → first decoded picture by relay transport (loopback, relay-only patient, embedded TURN; relay nomination wait {:?}; {} build)\n",
        WebRtcSettings::default().relay_acceptance_min_wait,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    println!("| path | median of {CALLS} | worst |");
    println!("|---|---|---|");
    let rows = [
        ("relay/UDP", turn.udp_url(), None),
        ("relay/TCP", turn.url("turn:", "?transport=tcp"), None),
        ("relay/TLS", turn.url("turns:localhost:", "?transport=tcp"), Some(Arc::clone(&turn.client_tls))),
    ];
    for (name, url, tls) in rows {
        let server = TestServer::start(move |c| {
            c.turn_urls = vec![url];
            c.turn_secret = Some("bench-secret".into());
        })
        .await;
        relayed_call(&server, tls.clone()).await; // warm-up
        let mut times = Vec::new();
        for _ in 0..CALLS {
            times.push(relayed_call(&server, tls.clone()).await);
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("| {name} | {:.0} ms | {:.0} ms |", ms(times[CALLS / 2]), ms(times[CALLS - 1]));
    }
    turn.server.stop().await;
}
