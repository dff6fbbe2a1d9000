//! Signaling hub benchmark: N rooms of two WebSocket clients each go through
//! join → offer/answer → 20 ICE candidates per side → one chat message per side,
//! against a real server process. Prints a table: frames relayed per second, relay latency
//! (p50/p99, send to receive), and the server's memory per open connection (RSS from /proc).
//!
//! Run: `cargo bench -p televisit-tests --bench signaling_hub` (rooms: `-- 100 1000`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

const CANDIDATES_PER_SIDE: usize = 20;
const CLINIC_KEY: &str = "bench-clinic-key";

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--serve-child") {
        return serve_child(&args[1]);
    }
    televisit_tests::install_crypto_provider();
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![100, 1000] } else { sizes };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut rows = Vec::new();
    for rooms in sizes {
        rows.push(runtime.block_on(run(rooms)));
    }
    println!();
    println!("Signaling hub: rooms of 2 WebSocket clients; join, offer/answer, {CANDIDATES_PER_SIDE} ICE candidates per side, 1 chat per side");
    println!("(server and clients on one 2-core machine; latency = client send -> peer receive)");
    println!();
    println!("| rooms | connections | frames relayed | seconds | frames/s | p50 ms | p99 ms | server KiB/connection |");
    println!("|------:|------------:|---------------:|--------:|---------:|-------:|-------:|----------------------:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1} |",
            r.rooms,
            r.connections,
            r.frames,
            r.seconds,
            r.frames as f64 / r.seconds,
            r.p50_ms,
            r.p99_ms,
            r.kib_per_connection
        );
    }
}

/// The server process: a real `RunningServer` on an ephemeral port; prints the port.
fn serve_child(db: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut config = televisit_server::Config::for_tests(&format!("sqlite://{db}"));
        config.clinic_api_key = Some(CLINIC_KEY.into());
        let server = televisit_server::RunningServer::start(config, Default::default()).await.unwrap();
        println!("{}", server.addr.port());
        server.wait().await.unwrap();
    });
}

struct Row {
    rooms: usize,
    connections: usize,
    frames: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    kib_per_connection: f64,
}

struct ServerProcess {
    child: Child,
    port: u16,
    db: std::path::PathBuf,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let db = std::env::temp_dir().join(format!("televisit-bench-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&db);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--serve-child", db.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        ServerProcess { child, port: line.trim().parse().expect("server prints its port"), db }
    }

    fn rss_kib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db.display()));
        }
    }
}

async fn create_visits(base: &str, rooms: usize) -> Vec<(String, String)> {
    let http = reqwest::Client::new();
    let post = |path: &str, bearer: &str, body: Value| {
        http.post(format!("{base}{path}")).bearer_auth(bearer).json(&body).send()
    };
    let doctor: Value = post(
        "/api/clinic/doctors",
        CLINIC_KEY,
        json!({"display_name": "Dr. Bench", "email": "bench@clinic.test"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let doctor_token = doctor["api_token"].as_str().unwrap().to_owned();
    let mut visits = Vec::with_capacity(rooms);
    for i in 0..rooms {
        let patient: Value =
            post("/api/clinic/patients", CLINIC_KEY, json!({"display_name": format!("Patient {i}")}))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let appointment: Value = post(
            "/api/clinic/appointments",
            CLINIC_KEY,
            json!({"doctor_id": doctor["id"], "patient_id": patient["id"], "scheduled_at_ms": 0}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let path = format!("/api/appointments/{}/video-call/start", appointment["id"].as_str().unwrap());
        let started: Value = post(&path, &doctor_token, json!({})).await.unwrap().json().await.unwrap();
        let token = |key: &str| started[key].as_str().unwrap().split_once("#token=").unwrap().1.to_owned();
        visits.push((token("doctor_link"), token("patient_link")));
    }
    visits
}

async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await.expect("frame within 60 s") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

async fn until(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = next_frame(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
}

async fn connect(url: &str, token: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    ws.send(Message::Text(json!({"type": "join", "token": token}).to_string().into())).await.unwrap();
    until(&mut ws, "joined").await;
    ws
}

fn stamp(start: Instant) -> String {
    start.elapsed().as_nanos().to_string()
}

fn latency_ns(start: Instant, field: &Value) -> u64 {
    let sent: u128 = field.as_str().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    (start.elapsed().as_nanos() - sent) as u64
}

/// One side of a room: sends its part of the exchange and collects the latencies of what it receives.
async fn side(mut ws: Ws, doctor: bool, start: Instant, go: Arc<Barrier>) -> (Vec<u64>, Ws) {
    go.wait().await;
    let mut latencies = Vec::with_capacity(CANDIDATES_PER_SIDE + 4);
    if doctor {
        send(&mut ws, json!({"type": "offer", "sdp": format!("v=0 {}", stamp(start))})).await;
        let answer = until(&mut ws, "answer").await;
        latencies.push(latency_ns(start, &answer["sdp"]));
    } else {
        let offer = until(&mut ws, "offer").await;
        latencies.push(latency_ns(start, &offer["sdp"]));
        send(&mut ws, json!({"type": "answer", "sdp": format!("v=0 {}", stamp(start))})).await;
    }
    for i in 0..CANDIDATES_PER_SIDE {
        let candidate =
            format!("candidate:{i} 1 udp 2122260223 192.0.2.1 {} typ host {}", 50000 + i, stamp(start));
        send(
            &mut ws,
            json!({"type": "ice-candidate", "candidate": candidate, "sdp_mid": "0", "sdp_m_line_index": 0}),
        )
        .await;
    }
    send(&mut ws, json!({"type": "chat", "text": format!("hello {}", stamp(start))})).await;
    // Receive the peer's candidates and both chat messages (ours comes back as the echo).
    let (mut candidates, mut chats) = (0, 0);
    while candidates < CANDIDATES_PER_SIDE || chats < 2 {
        let frame = next_frame(&mut ws).await;
        match frame["type"].as_str().unwrap() {
            "ice-candidate" => {
                candidates += 1;
                latencies.push(latency_ns(start, &frame["candidate"]));
            }
            "chat" => {
                chats += 1;
                latencies.push(latency_ns(start, &frame["text"]));
            }
            _ => {}
        }
    }
    (latencies, ws)
}

async fn run(rooms: usize) -> Row {
    let server = ServerProcess::start();
    let base = format!("http://127.0.0.1:{}", server.port);
    let ws_url = format!("ws://127.0.0.1:{}/api/video-call/ws", server.port);
    let visits = create_visits(&base, rooms).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss_kib();

    // Everyone joins (patients first, then doctors), 50 connections at a time.
    let mut pairs = Vec::with_capacity(rooms);
    for chunk in visits.chunks(50) {
        let joins = chunk.iter().map(|(doctor, patient)| {
            let url = ws_url.clone();
            async move {
                let mut patient_ws = connect(&url, patient).await;
                until(&mut patient_ws, "waiting").await;
                let mut doctor_ws = connect(&url, doctor).await;
                until(&mut doctor_ws, "peer-joined").await;
                until(&mut patient_ws, "peer-joined").await;
                (doctor_ws, patient_ws)
            }
        });
        pairs.extend(futures_util::future::join_all(joins).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let connections = rooms * 2;
    let rss_connected = server.rss_kib();

    let go = Arc::new(Barrier::new(connections + 1));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for (doctor_ws, patient_ws) in pairs {
        tasks.push(tokio::spawn(side(doctor_ws, true, start, Arc::clone(&go))));
        tasks.push(tokio::spawn(side(patient_ws, false, start, Arc::clone(&go))));
    }
    go.wait().await;
    let exchange_start = Instant::now();
    let mut latencies = Vec::new();
    let mut sockets = Vec::new();
    for task in tasks {
        let (mut side_latencies, ws) = task.await.unwrap();
        latencies.append(&mut side_latencies);
        sockets.push(ws);
    }
    let seconds = exchange_start.elapsed().as_secs_f64();
    drop(sockets);
    latencies.sort_unstable();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1e6;
    Row {
        rooms,
        connections,
        frames: latencies.len(),
        seconds,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        kib_per_connection: (rss_connected - rss_before) / connections as f64,
    }
}
