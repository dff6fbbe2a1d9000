//! Signaling hub benchmark, against a real server process (SQLite file, WebSocket clients):
//!
//! - exchange: N rooms of two clients each go through join → offer/answer → 20 ICE candidates per
//!   side → one chat message per side. Prints frames relayed per second, relay latency (p50/p99,
//!   send to receive) and the server's memory per open connection (RSS from /proc).
//! - steady chat: 1000 rooms × 2 clients each send 5 numbered chat frames a second for 60 s
//!   (10 000 stored frames/s), then the offered rate steps up by one frame/s per client (2 000
//!   frames/s with 1000 rooms) until the p99 passes 50 ms. Prints, per phase, frames offered,
//!   stored (acknowledged) and relayed, latency from send to the peer's receipt (a chat frame is
//!   relayed only once stored), and the server's memory per connection at the start, after the
//!   steady phase and after every call ended. Then, from the server's own /metrics, the time from a
//!   chat frame's arrival to its delivery and the chat batches' transaction time, per phase: what
//!   of the latency is the server's storage, and what the sockets and the clients.
//!
//! - consecutive calls: 10 000 short calls, 8 at a time (start, both join, offer/answer, ICE, a
//!   chat, then the doctor ends it, or every tenth both leave and the room idles out). Prints the
//!   server's RSS after every 1000 calls, and the rooms, connections and replay bytes it holds:
//!   memory stays flat when rooms and their buffers are freed.
//!
//! - nodes: the steady chat load (as above) on one node, on one node with Redis, and on two
//!   nodes sharing one Redis and one database (each room's doctor on one node and its patient on
//!   the other, so every frame crosses nodes: the doctor on A in half the rooms, on B in the rest;
//!   then half the rooms wholly on A, half on B; then each client on either node, as a load
//!   balancer without affinity places them: a quarter of the rooms on A, a quarter on B, half
//!   across), printed side
//!   by side: relayed frames/s, latency, KiB per connection per node, CPU per 1000 frames (each
//!   node, Redis, the database), and the offered rate at which the p99 passes 50 ms. The
//!   database is one SQLite file shared by the nodes, or with
//!   `SIGNALING_BENCH_POSTGRES=postgres://user@host:port` a new PostgreSQL database for each
//!   column (`scripts/postgres-for-tests start DIR` prints such a URL). Needs Debian's
//!   `redis-server` (scripts/install-build-deps.sh). On this 2-core machine the nodes, Redis and
//!   the clients share the cores, so a second node cannot add CPU; `SIGNALING_BENCH_NODE_CPU=0.4`
//!   caps each node at 0.4 cores (a CPU cgroup; needs root), as if each ran on a machine of its
//!   own, to measure what a second node adds when the nodes are the limit. A node starts inside
//!   its cgroup, as in a container with that CPU limit, so its runtime has one worker thread per
//!   whole core of the cap (at least one).
//!
//! The server process uses the server's allocator (jemalloc); with `--features system-allocator`
//! it uses glibc's malloc, with `--features mimalloc` mimalloc, for comparison.
//!
//! Run: `cargo bench -p televisit-tests --bench signaling_hub` (all), `-- 100 1000` (exchange,
//! these sizes), `-- steady` (steady chat only), `-- nodes` (one node and two, side by side;
//! `SIGNALING_BENCH_COLUMNS=2,3` for some columns only, `SIGNALING_BENCH_ROUNDS=3` to measure them in
//! turn three times and print each one's median ceiling), `-- calls` (consecutive calls only,
//! `SIGNALING_BENCH_CALLS=2000` for fewer). Shorter: `SIGNALING_BENCH_SECONDS=10`
//! (steady phase), `SIGNALING_BENCH_STEP_SECONDS=5` (each step), `SIGNALING_BENCH_ROOMS=200`.
//! `SIGNALING_BENCH_FRAME=ice-candidate` sends the same load as ICE candidates, which are relayed
//! without storage: the floor the clients and the relay alone give on this machine.

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

/// The server process's allocator: the one the server binary uses (server/src/main.rs).
#[cfg(not(any(feature = "system-allocator", feature = "mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `--features mimalloc`: mimalloc instead, for comparison.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALLOCATOR_NAME: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else if cfg!(feature = "system-allocator") {
    "glibc malloc (system)"
} else {
    "jemalloc"
};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--serve-child") {
        return serve_child(&args[1], args.get(2).map(String::as_str));
    }
    televisit_tests::install_crypto_provider();
    let steady_only = args.iter().any(|a| a == "steady");
    let calls_only = args.iter().any(|a| a == "calls");
    let nodes_only = args.iter().any(|a| a == "nodes");
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let all = !steady_only && !calls_only && !nodes_only && sizes.is_empty();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if all || !sizes.is_empty() {
        let sizes = if sizes.is_empty() { vec![100, 1000] } else { sizes.clone() };
        exchange(&runtime, sizes);
    }
    if all || steady_only {
        let rooms = env_number("SIGNALING_BENCH_ROOMS", 1000);
        check_open_files(rooms * 4 + 256);
        runtime.block_on(steady::run(rooms));
    }
    if all || nodes_only {
        let rooms = env_number("SIGNALING_BENCH_ROOMS", 1000);
        check_open_files(rooms * 4 + 256);
        runtime.block_on(nodes::run(rooms));
    }
    if all || calls_only {
        runtime.block_on(calls::run(env_number("SIGNALING_BENCH_CALLS", 10_000)));
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Client and server sockets share this machine's limit on open files.
fn check_open_files(needed: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(soft) = soft.filter(|soft| *soft < needed) {
        eprintln!(
            "open files limit is {soft}; this run needs about {needed}: run `ulimit -n {needed}` first"
        );
        std::process::exit(2);
    }
}

fn exchange(runtime: &tokio::runtime::Runtime, sizes: Vec<usize>) {
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

/// The server process: a real `RunningServer` on an ephemeral port, on this database and, with a
/// Redis URL, sharing its rooms with other nodes; prints the port.
fn serve_child(database_url: &str, redis_url: Option<&str>) {
    // Into its CPU cgroup before anything else, so that the runtime sizes itself to the cap, as in
    // a container with that CPU limit (std's available_parallelism counts the quota).
    if let Ok(cgroup) = std::env::var(CpuCap::JOIN_ENV) {
        std::fs::write(std::path::Path::new(&cgroup).join("cgroup.procs"), std::process::id().to_string())
            .expect("a node joins its CPU cgroup");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut config = televisit_server::Config::for_tests(database_url);
        config.redis_url = redis_url.map(str::to_owned);
        config.clinic_api_key = Some(CLINIC_KEY.into());
        // Every simulated client connects from 127.0.0.1: lift the per-address and total caps.
        config.max_connections_per_address = 100_000;
        config.max_connections = 100_000;
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
    /// The SQLite file this process created, removed at drop.
    db: Option<std::path::PathBuf>,
    /// The CPU cap the process runs under, removed at drop (after the process is gone).
    _cpu_cap: Option<CpuCap>,
}

impl ServerProcess {
    /// A server alone, on a new SQLite file.
    fn start() -> ServerProcess {
        let db = std::env::temp_dir().join(format!("televisit-bench-{}.db", std::process::id()));
        remove_sqlite(&db);
        let mut server = ServerProcess::start_node(&format!("sqlite://{}", db.display()), None, None);
        server.db = Some(db);
        server
    }

    /// A server node on this database, sharing its rooms through Redis with `redis_url`, and
    /// capped at `cores` cores of CPU time (as if it ran on a machine of its own).
    fn start_node(database_url: &str, redis_url: Option<&str>, cores: Option<f64>) -> ServerProcess {
        let cpu_cap = cores.map(|cores| {
            CpuCap::new(cores)
                .unwrap_or_else(|error| panic!("SIGNALING_BENCH_NODE_CPU: cannot cap a node's CPU: {error}"))
        });
        let mut child = Command::new(std::env::current_exe().unwrap());
        child.args(["--serve-child", database_url]).args(redis_url);
        if let Some(cap) = &cpu_cap {
            child.env(CpuCap::JOIN_ENV, &cap.dir);
        }
        let mut child = child.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().expect("server prints its port");
        ServerProcess { child, port, db: None, _cpu_cap: cpu_cap }
    }

    /// CPU time the server used so far (user + system), in seconds.
    fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.child.id())
    }

    fn rss_kib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// CPU time a process used so far (user + system), in seconds.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(db) = &self.db {
            remove_sqlite(db);
        }
    }
}

/// A CPU cgroup for one node, capped at a number of cores (CFS quota over a 10 ms period, so
/// that a throttled process waits at most a few ms): a node given the CPU of a machine of its own,
/// to see what a second node adds when the nodes, not the shared machine, are the limit. The node
/// joins it as it starts, so it sees the cap as a container's CPU limit: its runtime has as many
/// worker threads as whole cores in the cap, at least one. Needs root and a writable cgroup file
/// system (v2, or v1's `cpu` controller).
struct CpuCap {
    dir: std::path::PathBuf,
}

impl CpuCap {
    const PERIOD_US: u64 = 10_000;
    /// The variable that tells a node process the cgroup to join.
    const JOIN_ENV: &str = "SIGNALING_BENCH_JOIN_CGROUP";

    fn new(cores: f64) -> std::io::Result<CpuCap> {
        static CAPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let quota = (cores * Self::PERIOD_US as f64).round() as u64;
        let number = CAPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("televisit-bench-{}-{number}", std::process::id());
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
        let dir = if v2.exists() {
            // A child cgroup gets the cpu controller only once its parent hands it down.
            std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu")?;
            let dir = std::path::Path::new("/sys/fs/cgroup").join(name);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("cpu.max"), format!("{quota} {}", Self::PERIOD_US))?;
            dir
        } else {
            let dir = std::path::Path::new("/sys/fs/cgroup/cpu").join(name);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("cpu.cfs_period_us"), Self::PERIOD_US.to_string())?;
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
            dir
        };
        Ok(CpuCap { dir })
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Removes a SQLite database and its WAL files.
fn remove_sqlite(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// A started visit: its appointment and the two participants' call tokens.
struct BenchVisit {
    appointment_id: String,
    doctor: String,
    patient: String,
}

/// The clinic API, as the benchmark's clinic and doctor use it.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, path: &str, bearer: &str, body: Value) -> Value {
        let request = self.http.post(format!("{}{path}", self.base)).bearer_auth(bearer).json(&body);
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap()
    }

    /// A doctor: (id, app token).
    async fn doctor(&self, email: &str) -> (Value, String) {
        let body = json!({"display_name": "Dr. Bench", "email": email});
        let doctor = self.post("/api/clinic/doctors", CLINIC_KEY, body).await;
        let token = doctor["api_token"].as_str().unwrap().to_owned();
        (doctor["id"].clone(), token)
    }

    async fn patient(&self, name: String) -> Value {
        self.post("/api/clinic/patients", CLINIC_KEY, json!({"display_name": name})).await["id"].clone()
    }

    /// An appointment of this doctor and patient, its call started by the doctor.
    async fn started_visit(&self, doctor: &(Value, String), patient: &Value) -> BenchVisit {
        let body = json!({"doctor_id": doctor.0, "patient_id": patient, "scheduled_at_ms": 0});
        let appointment = self.post("/api/clinic/appointments", CLINIC_KEY, body).await;
        let appointment_id = appointment["id"].as_str().unwrap().to_owned();
        let path = format!("/api/appointments/{appointment_id}/video-call/start");
        let started = self.post(&path, &doctor.1, json!({})).await;
        let token = |key: &str| started[key].as_str().unwrap().split_once("#token=").unwrap().1.to_owned();
        BenchVisit { appointment_id, doctor: token("doctor_link"), patient: token("patient_link") }
    }
}

/// Creates a doctor and `rooms` started visits; returns the doctor's app token and the visits.
async fn create_visits(base: &str, rooms: usize) -> (String, Vec<BenchVisit>) {
    let api = Api { http: reqwest::Client::new(), base: base.to_owned() };
    let doctor = api.doctor("bench@clinic.test").await;
    let mut visits = Vec::with_capacity(rooms);
    for i in 0..rooms {
        let patient = api.patient(format!("Patient {i}")).await;
        visits.push(api.started_visit(&doctor, &patient).await);
    }
    (doctor.1, visits)
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

/// A client joined with this call token. With TCP_NODELAY, as the core's client and browsers
/// connect: with Nagle's algorithm a frame sent just after a pong waited for the server's delayed
/// ACK (up to 40 ms), which was most of the steady chat p99 here (12-13 ms against 2.7-3.4 ms
/// inside the server).
async fn connect(url: &str, token: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await.expect("connect");
    ws.send(Message::Text(json!({"type": "join", "token": token}).to_string().into())).await.unwrap();
    until(&mut ws, "joined").await;
    ws
}

/// Everyone joins (patients first, then doctors), 50 rooms at a time: (doctor, patient) sockets.
async fn join_everyone(ws_url: &str, visits: &[BenchVisit]) -> Vec<(Ws, Ws)> {
    join_across(ws_url, ws_url, visits).await
}

/// As [`join_everyone`], doctors through `doctor_url` and patients through `patient_url`.
async fn join_across(doctor_url: &str, patient_url: &str, visits: &[BenchVisit]) -> Vec<(Ws, Ws)> {
    let mut pairs = Vec::with_capacity(visits.len());
    for chunk in visits.chunks(50) {
        let joins = chunk.iter().map(|visit| async move {
            let mut patient_ws = connect(patient_url, &visit.patient).await;
            until(&mut patient_ws, "waiting").await;
            let mut doctor_ws = connect(doctor_url, &visit.doctor).await;
            until(&mut doctor_ws, "peer-joined").await;
            until(&mut patient_ws, "peer-joined").await;
            (doctor_ws, patient_ws)
        });
        pairs.extend(futures_util::future::join_all(joins).await);
    }
    pairs
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
    let (_, visits) = create_visits(&base, rooms).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss_kib();
    let pairs = join_everyone(&ws_url, &visits).await;
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

/// The steady chat load and the step-up.
mod steady {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use futures_util::stream::{SplitSink, SplitStream};
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio::task::JoinHandle;
    use tokio_tungstenite::tungstenite::Message;

    use super::{
        create_visits, env_number, join_everyone, process_cpu_seconds, ServerProcess, Ws, ALLOCATOR_NAME,
    };

    /// Chat frames per second per client in the steady phase.
    pub(super) const STEADY_RATE: u64 = 5;
    /// The steps after it, per client (one frame/s per client more each step).
    pub(super) const STEP_RATES: std::ops::RangeInclusive<u64> = 6..=40;
    /// Stop stepping once a phase's p99 passes this.
    pub(super) const P99_LIMIT_MS: f64 = 50.0;

    /// Counters of one phase (one offered rate).
    #[derive(Default)]
    pub(super) struct Phase {
        pub(super) sent: AtomicU64,
        /// The sender's own chat frame came back: stored (it is relayed only once stored).
        pub(super) stored: AtomicU64,
        pub(super) acked: AtomicU64,
        pub(super) relayed: AtomicU64,
        /// Each relayed frame's send time (ns since the load started) and latency (ns).
        pub(super) relayed_ns: Mutex<Vec<(u64, u64)>>,
    }

    impl Phase {
        /// The latencies of the frames relayed so far, sorted.
        pub(super) fn sorted_latencies(&self) -> Vec<u64> {
            let mut latencies: Vec<u64> =
                self.relayed_ns.lock().unwrap().iter().map(|(_, latency)| *latency).collect();
            latencies.sort_unstable();
            latencies
        }
    }

    pub(super) struct Load {
        pub(super) start: Instant,
        /// ICE candidates (relayed, not stored) instead of chat.
        pub(super) relay_only: bool,
        pub(super) rate: AtomicU64,
        pub(super) phase: AtomicUsize,
        pub(super) stop: AtomicBool,
        pub(super) phases: Vec<Phase>,
    }

    /// A client's sending task; it gives its half of the socket back when the load stops.
    pub(super) type Sender = JoinHandle<SplitSink<Ws, Message>>;

    /// Starts a sender and a receiver for each client of each room, the senders spread over the
    /// first second; returns (senders, receivers).
    pub(super) fn start_clients(
        pairs: Vec<(Ws, Ws)>,
        load: &Arc<Load>,
    ) -> (Vec<Sender>, Vec<JoinHandle<()>>) {
        let connections = pairs.len() * 2;
        let mut senders = Vec::with_capacity(connections);
        let mut receivers = Vec::with_capacity(connections);
        for (i, (doctor, patient)) in pairs.into_iter().enumerate() {
            for (j, (ws, me)) in [(doctor, "doctor"), (patient, "patient")].into_iter().enumerate() {
                let (sink, stream) = ws.split();
                let offset = Duration::from_micros(((i * 2 + j) * 1_000_000 / connections) as u64);
                senders.push(tokio::spawn(send_chat(sink, Arc::clone(load), offset)));
                receivers.push(tokio::spawn(receive(stream, me, Arc::clone(load))));
            }
        }
        (senders, receivers)
    }

    /// Sends numbered chat frames at the current rate; the text carries the phase and send time.
    pub(super) async fn send_chat(
        mut sink: SplitSink<Ws, Message>,
        load: Arc<Load>,
        offset: Duration,
    ) -> SplitSink<Ws, Message> {
        let mut seq = 0u64;
        let mut next = tokio::time::Instant::now() + offset;
        loop {
            tokio::time::sleep_until(next).await;
            if load.stop.load(Ordering::Relaxed) {
                return sink;
            }
            let phase = load.phase.load(Ordering::Relaxed);
            seq += 1;
            let text = format!("p{phase} {}", load.start.elapsed().as_nanos());
            let frame = if load.relay_only {
                json!({"type": "ice-candidate", "seq": seq, "candidate": text, "sdp_mid": "0", "sdp_m_line_index": 0})
            } else {
                json!({"type": "chat", "seq": seq, "text": text})
            };
            let frame = frame.to_string();
            if sink.send(Message::Text(frame.into())).await.is_err() {
                return sink;
            }
            load.phases[phase].sent.fetch_add(1, Ordering::Relaxed);
            next += Duration::from_secs_f64(1.0 / load.rate.load(Ordering::Relaxed) as f64);
            // Fallen behind (an overloaded machine): go on from now rather than burst.
            let now = tokio::time::Instant::now();
            if next + Duration::from_millis(500) < now {
                next = now;
            }
        }
    }

    /// Counts what a client receives until its call ends.
    pub(super) async fn receive(mut stream: SplitStream<Ws>, me: &'static str, load: Arc<Load>) {
        let mut last_phase = 0;
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else { continue };
            let frame: Value = serde_json::from_str(&text).unwrap();
            match frame["type"].as_str().unwrap_or("") {
                kind @ ("chat" | "ice-candidate") => {
                    let body = frame[if kind == "chat" { "text" } else { "candidate" }].as_str().unwrap();
                    let (phase, sent) = body.split_once(' ').unwrap();
                    let phase: usize = phase[1..].parse().unwrap();
                    last_phase = phase;
                    let counters = &load.phases[phase];
                    if frame["from"] == me {
                        counters.stored.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let sent: u128 = sent.parse().unwrap();
                        let latency = (load.start.elapsed().as_nanos() - sent) as u64;
                        counters.relayed.fetch_add(1, Ordering::Relaxed);
                        counters.relayed_ns.lock().unwrap().push((sent as u64, latency));
                    }
                }
                // An ack follows the echo of the same frame: counted in the echo's phase.
                "ack" => _ = load.phases[last_phase].acked.fetch_add(1, Ordering::Relaxed),
                "call-ended" => return,
                "error" => eprintln!("error frame: {frame}"),
                _ => {}
            }
        }
    }

    /// Waits until every frame sent is stored, acknowledged and relayed, or nothing moved for 10 s.
    pub(super) async fn drain(load: &Load) -> String {
        let began = Instant::now();
        let total = |field: fn(&Phase) -> &AtomicU64| -> u64 {
            load.phases.iter().map(|p| field(p).load(Ordering::Relaxed)).sum()
        };
        let (mut last, mut last_change) = (0, Instant::now());
        loop {
            let sent = total(|p| &p.sent);
            let (stored, acked, relayed) = (total(|p| &p.stored), total(|p| &p.acked), total(|p| &p.relayed));
            let done = if load.relay_only {
                relayed == sent
            } else {
                stored == sent && acked == sent && relayed == sent
            };
            if done {
                let waited = began.elapsed().as_secs_f64();
                let what = if load.relay_only { "relayed" } else { "stored, acknowledged and relayed" };
                return format!(
                    "after the senders stopped: all {sent} frames {what} ({waited:.1} s to drain)"
                );
            }
            if stored + relayed != last {
                (last, last_change) = (stored + relayed, Instant::now());
            } else if last_change.elapsed() > Duration::from_secs(10) {
                return format!(
                    "NOT DRAINED: {sent} sent, {stored} stored, {acked} acknowledged, {relayed} relayed"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(super) fn percentile(sorted: &[u64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1e6
    }

    pub async fn run(rooms: usize) {
        let steady_seconds = env_number("SIGNALING_BENCH_SECONDS", 60) as u64;
        let step_seconds = env_number("SIGNALING_BENCH_STEP_SECONDS", 10) as u64;
        let server = ServerProcess::start();
        let base = format!("http://127.0.0.1:{}", server.port);
        let ws_url = format!("ws://127.0.0.1:{}/api/video-call/ws", server.port);
        let (doctor_api_token, visits) = create_visits(&base, rooms).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_idle = server.rss_kib();
        let pairs = join_everyone(&ws_url, &visits).await;
        let connections = rooms * 2;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let hub_memory = || async {
            let metrics =
                reqwest::Client::new().get(format!("{base}/metrics")).bearer_auth("test-metrics-key");
            let text = metrics.send().await.unwrap().text().await.unwrap();
            let gauge = |name: &str| -> f64 {
                let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_default();
                line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
            };
            (gauge("televisit_signaling_rooms "), gauge("televisit_signaling_replay_bytes "))
        };
        let mut memory = vec![("connected, before chat", server.rss_kib(), hub_memory().await)];

        let rates: Vec<u64> = std::iter::once(STEADY_RATE).chain(STEP_RATES).collect();
        let relay_only = std::env::var("SIGNALING_BENCH_FRAME").is_ok_and(|kind| kind == "ice-candidate");
        let load = Arc::new(Load {
            start: Instant::now(),
            relay_only,
            rate: AtomicU64::new(STEADY_RATE),
            phase: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            phases: rates.iter().map(|_| Phase::default()).collect(),
        });
        let (senders, receivers) = start_clients(pairs, &load);
        let mut durations = Vec::new();
        let mut cpu = Vec::new();
        let mut server_side = Vec::new();
        let mut crossed = None;
        let steady_began = load.start.elapsed();
        for (phase, rate) in rates.iter().enumerate() {
            load.rate.store(*rate, Ordering::Relaxed);
            load.phase.store(phase, Ordering::Relaxed);
            let seconds = if phase == 0 { steady_seconds } else { step_seconds };
            let histograms_before = server_histograms(&base).await;
            let began = Instant::now();
            let cpu_before = (server.cpu_seconds(), process_cpu_seconds(std::process::id()));
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            if phase == 0 {
                memory.push(("after the steady phase", server.rss_kib(), hub_memory().await));
            }
            // Let this phase's frames arrive (they carry their phase) before judging it.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            durations.push(began.elapsed().as_secs_f64());
            server_side.push((histograms_before, server_histograms(&base).await));
            cpu.push((
                server.cpu_seconds() - cpu_before.0,
                process_cpu_seconds(std::process::id()) - cpu_before.1,
            ));
            if percentile(&load.phases[phase].sorted_latencies(), 0.99) > P99_LIMIT_MS {
                crossed = Some(phase);
                break;
            }
        }
        load.stop.store(true, Ordering::Relaxed);
        let mut sinks = Vec::new();
        for sender in senders {
            sinks.push(sender.await.unwrap());
        }
        let drained = drain(&load).await;
        print_phases(&load, &rates, &durations, &cpu, rooms, crossed);
        println!("{drained}");
        print_steady_windows(&load, steady_began);
        if !load.relay_only {
            print_server_side(&server_side);
        }

        // End every call through the API; each client gets call-ended and is closed.
        let http = reqwest::Client::new();
        let ids: Vec<&str> = visits.iter().map(|v| v.appointment_id.as_str()).collect();
        for chunk in ids.chunks(32) {
            futures_util::future::join_all(chunk.iter().map(|id| {
                let request = http
                    .post(format!("{base}/api/appointments/{id}/video-call/end"))
                    .bearer_auth(&doctor_api_token);
                async move { assert!(request.send().await.unwrap().status().is_success()) }
            }))
            .await;
        }
        for receiver in receivers {
            receiver.await.unwrap();
        }
        drop(sinks);
        tokio::time::sleep(Duration::from_secs(2)).await;
        memory.push(("after every call ended", server.rss_kib(), hub_memory().await));
        // Allocators hand freed memory back with a delay (jemalloc's decay is 10 s).
        tokio::time::sleep(Duration::from_secs(15)).await;
        memory.push(("15 s later", server.rss_kib(), hub_memory().await));

        println!();
        println!(
            "Server memory (RSS, {ALLOCATOR_NAME}; idle with {rooms} started visits: {:.0} MiB)",
            rss_idle / 1024.0
        );
        println!();
        println!(
            "| when | RSS MiB | KiB per connection ({connections}) | rooms in memory | replay buffers KiB |"
        );
        println!("|------|--------:|------------------:|----------------:|-------------------:|");
        for (when, rss, (rooms, replay_bytes)) in memory {
            let per_connection = (rss - rss_idle) / connections as f64;
            println!(
                "| {when} | {:.1} | {per_connection:.1} | {rooms} | {:.0} |",
                rss / 1024.0,
                replay_bytes / 1024.0
            );
        }
    }

    /// The server's histograms of chat latency and chat batch time, from `/metrics`.
    async fn server_histograms(base: &str) -> [Vec<(f64, u64)>; 2] {
        let request = reqwest::Client::new().get(format!("{base}/metrics")).bearer_auth("test-metrics-key");
        let text = request.send().await.unwrap().text().await.unwrap();
        [
            histogram(&text, "televisit_signaling_chat_seconds", ""),
            histogram(&text, "televisit_db_seconds", "operation=\"chat_batch\""),
        ]
    }

    /// A histogram's buckets in the text exposition: (upper bound in seconds, cumulative count).
    fn histogram(metrics: &str, name: &str, label: &str) -> Vec<(f64, u64)> {
        let prefix = format!("{name}_bucket{{");
        let bucket = |line: &str| {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, line.rsplit(' ').next()?.parse().ok()?))
        };
        metrics.lines().filter(|l| l.starts_with(&prefix) && l.contains(label)).filter_map(bucket).collect()
    }

    /// Number counted between two scrapes of a histogram, and its `q` quantile in ms (interpolated
    /// within the bucket, as Prometheus does).
    fn histogram_quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> (u64, f64) {
        let counted = |i: usize| after[i].1 - before.get(i).map_or(0, |b| b.1);
        let total = if after.is_empty() { 0 } else { counted(after.len() - 1) };
        let target = q * total as f64;
        let mut lower = (0.0, 0);
        for (i, (le, _)) in after.iter().enumerate() {
            let cumulative = counted(i);
            if total > 0 && cumulative as f64 >= target {
                if le.is_infinite() {
                    return (total, lower.0 * 1e3); // beyond the last bound: at least that
                }
                let fraction = (target - lower.1 as f64) / (cumulative - lower.1).max(1) as f64;
                return (total, (lower.0 + (le - lower.0) * fraction) * 1e3);
            }
            lower = (*le, cumulative);
        }
        (total, f64::NAN)
    }

    type Histograms = [Vec<(f64, u64)>; 2];

    fn print_server_side(phases: &[(Histograms, Histograms)]) {
        println!();
        println!("Inside the server (its /metrics histograms): a chat frame's arrival -> stored and queued to both");
        println!("connections (the rest of the latency above is the sockets and the clients), and the time of each");
        println!("chat batch's transaction");
        println!();
        println!("| phase | chat p50 ms | chat p99 ms | chat p99.9 ms | batches | messages per batch | batch p50 ms | batch p99 ms |");
        println!("|------:|------------:|------------:|--------------:|--------:|-------------------:|-------------:|-------------:|");
        for (phase, ([chat_before, batch_before], [chat_after, batch_after])) in phases.iter().enumerate() {
            let chat = |q| histogram_quantile(chat_before, chat_after, q);
            let batch = |q| histogram_quantile(batch_before, batch_after, q);
            let (messages, batches) = (chat(0.5).0, batch(0.5).0);
            println!(
                "| {} | {:.2} | {:.2} | {:.2} | {batches} | {:.1} | {:.2} | {:.2} |",
                if phase == 0 { "steady".to_owned() } else { format!("step {phase}") },
                chat(0.5).1,
                chat(0.99).1,
                chat(0.999).1,
                messages as f64 / batches.max(1) as f64,
                batch(0.5).1,
                batch(0.99).1,
            );
        }
    }

    /// The steady phase in 10 s windows (by send time): whether the tail is the start (a new
    /// database file, a write-ahead log still growing) or spread over the run.
    fn print_steady_windows(load: &Load, began: Duration) {
        const WINDOW_NS: u64 = 10_000_000_000;
        let mut windows: Vec<Vec<u64>> = Vec::new();
        for (sent, latency) in load.phases[0].relayed_ns.lock().unwrap().iter() {
            let window = (sent.saturating_sub(began.as_nanos() as u64) / WINDOW_NS) as usize;
            if windows.len() <= window {
                windows.resize(window + 1, Vec::new());
            }
            windows[window].push(*latency);
        }
        println!();
        println!("The steady phase by 10 s window of send time");
        println!();
        println!("| seconds | relayed | p50 ms | p99 ms | p99.9 ms | max ms |");
        println!("|--------:|--------:|-------:|-------:|---------:|-------:|");
        for (i, latencies) in windows.iter_mut().enumerate() {
            latencies.sort_unstable();
            let max = latencies.last().map_or(f64::NAN, |max| *max as f64 / 1e6);
            println!(
                "| {}-{} | {} | {:.2} | {:.2} | {:.2} | {max:.1} |",
                i * 10,
                i * 10 + 10,
                latencies.len(),
                percentile(latencies, 0.5),
                percentile(latencies, 0.99),
                percentile(latencies, 0.999)
            );
        }
    }

    fn print_phases(
        load: &Load,
        rates: &[u64],
        durations: &[f64],
        cpu: &[(f64, f64)],
        rooms: usize,
        crossed: Option<usize>,
    ) {
        println!();
        if load.relay_only {
            println!("Steady relay (no storage): {rooms} rooms x 2 WebSocket clients, numbered ICE candidates (relayed at once);");
            println!("latency = send -> the peer receives it; 2-core machine shared with the clients;");
        } else {
            println!(
                "Steady chat: {rooms} rooms x 2 WebSocket clients, numbered chat frames (stored, acknowledged, relayed);"
            );
            println!("latency = send -> the peer receives it (relayed only once stored); 2-core machine shared with the clients;");
        }
        println!("counts after the run drained; server CPU µs/frame = server CPU time in the phase per frame sent in it;");
        println!("clients CPU = this benchmark process (the 2 000 clients), for comparison");
        println!();
        println!("| phase | per client/s | seconds | offered/s | sent | stored | acked | relayed | p50 ms | p99 ms | p99.9 ms | server CPU % of a core | server CPU µs/frame | clients CPU % of a core |");
        println!("|------:|-------------:|--------:|----------:|-----:|-------:|------:|--------:|-------:|-------:|-------:|------:|------:|------:|");
        for (phase, seconds) in durations.iter().enumerate() {
            let counters = &load.phases[phase];
            let latencies = counters.sorted_latencies();
            let (sent, stored) =
                (counters.sent.load(Ordering::Relaxed), counters.stored.load(Ordering::Relaxed));
            println!(
                "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
                if phase == 0 { "steady".to_owned() } else { format!("step {phase}") },
                rates[phase],
                seconds,
                sent as f64 / seconds,
                sent,
                stored,
                counters.acked.load(Ordering::Relaxed),
                counters.relayed.load(Ordering::Relaxed),
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99),
                percentile(&latencies, 0.999),
                cpu[phase].0 / seconds * 100.0,
                cpu[phase].0 * 1e6 / sent.max(1) as f64,
                cpu[phase].1 / seconds * 100.0,
            );
        }
        println!();
        let offered =
            |phase: usize| load.phases[phase].sent.load(Ordering::Relaxed) as f64 / durations[phase];
        match crossed {
            Some(0) => println!("p99 passed {P99_LIMIT_MS} ms already in the steady phase ({:.0} offered frames/s)", offered(0)),
            Some(phase) => println!(
                "p99 passed {P99_LIMIT_MS} ms at {} chat frames/s per client ({:.0} offered frames/s); it held at {:.0} offered frames/s",
                rates[phase],
                offered(phase),
                offered(phase - 1)
            ),
            None => println!(
                "p99 stayed under {P99_LIMIT_MS} ms up to {} chat frames/s per client ({:.0} offered frames/s)",
                rates[rates.len() - 1],
                offered(rates.len() - 1)
            ),
        }
    }
}

/// Consecutive short calls: the server's memory after every thousand.
mod calls {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use super::{connect, send, until, Api, ServerProcess, ALLOCATOR_NAME};

    /// Calls running at once.
    const LANES: usize = 8;
    /// RSS is sampled after every this many calls.
    const SAMPLE_EVERY: usize = 1000;

    /// One short call through the server; every tenth ends by both leaving (the room idles out).
    async fn one_call(api: &Api, ws_url: &str, doctor: &(Value, String), patient: &Value, n: usize) {
        let visit = api.started_visit(doctor, patient).await;
        let mut patient_ws = connect(ws_url, &visit.patient).await;
        until(&mut patient_ws, "waiting").await;
        let mut doctor_ws = connect(ws_url, &visit.doctor).await;
        until(&mut doctor_ws, "peer-joined").await;
        send(&mut doctor_ws, json!({"type": "offer", "sdp": format!("v=0 offer {}", "a".repeat(3000))}))
            .await;
        until(&mut patient_ws, "offer").await;
        send(&mut patient_ws, json!({"type": "answer", "sdp": format!("v=0 answer {}", "a".repeat(3000))}))
            .await;
        until(&mut doctor_ws, "answer").await;
        for ws in [&mut doctor_ws, &mut patient_ws] {
            let candidate = "candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host";
            send(ws, json!({"type": "ice-candidate", "candidate": candidate, "sdp_mid": "0", "sdp_m_line_index": 0}))
                .await;
        }
        send(&mut patient_ws, json!({"type": "chat", "seq": 1, "text": format!("call {n}: hello")})).await;
        until(&mut patient_ws, "ack").await;
        until(&mut doctor_ws, "chat").await;
        if n.is_multiple_of(10) {
            for ws in [&mut patient_ws, &mut doctor_ws] {
                send(ws, json!({"type": "leave"})).await;
            }
        } else {
            send(&mut doctor_ws, json!({"type": "end-call"})).await;
            until(&mut patient_ws, "call-ended").await;
        }
    }

    pub async fn run(total: usize) {
        let server = ServerProcess::start();
        let api = Api { http: reqwest::Client::new(), base: format!("http://127.0.0.1:{}", server.port) };
        let ws_url = format!("ws://127.0.0.1:{}/api/video-call/ws", server.port);
        let doctor = Arc::new(api.doctor("calls@clinic.test").await);
        let api = Arc::new(api);
        let mut patients = Vec::new();
        for lane in 0..LANES {
            patients.push(api.patient(format!("Patient {lane}")).await);
        }
        let hub = |metrics: &str, name: &str| -> f64 {
            let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_default();
            line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
        };
        let sample = || async {
            // Let the last calls' connections close.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let request = api.http.get(format!("{}/metrics", api.base)).bearer_auth("test-metrics-key");
            let metrics = request.send().await.unwrap().text().await.unwrap();
            (
                server.rss_kib(),
                hub(&metrics, "televisit_signaling_rooms "),
                hub(&metrics, "televisit_signaling_connections_open "),
                hub(&metrics, "televisit_signaling_replay_bytes "),
            )
        };
        let mut rows = vec![(0, 0.0, sample().await)];
        let started = Instant::now();
        let done = Arc::new(AtomicUsize::new(0));
        while rows.last().unwrap().0 < total {
            let target = (rows.last().unwrap().0 + SAMPLE_EVERY).min(total);
            let lanes = patients.iter().map(|patient| {
                let (api, doctor, patient, done) =
                    (Arc::clone(&api), Arc::clone(&doctor), patient.clone(), Arc::clone(&done));
                let ws_url = ws_url.clone();
                tokio::spawn(async move {
                    loop {
                        let n = done.fetch_add(1, Ordering::Relaxed);
                        if n >= target {
                            done.fetch_sub(1, Ordering::Relaxed);
                            return;
                        }
                        one_call(&api, &ws_url, &doctor, &patient, n).await;
                    }
                })
            });
            for lane in futures_util::future::join_all(lanes).await {
                lane.unwrap();
            }
            rows.push((target, started.elapsed().as_secs_f64(), sample().await));
        }

        println!();
        println!("Consecutive calls: {total} short calls, {LANES} at a time, through one server process ({ALLOCATOR_NAME});");
        println!("each: start, both join, offer/answer (3 KB SDPs), an ICE candidate each, a stored chat, then end-call");
        println!("(every tenth: both leave, and the room idles out). Sampled 0.5 s after each thousand.");
        println!();
        println!("| calls | seconds | server RSS MiB | RSS change since 1000 calls, KiB | rooms in memory | open connections | replay buffers KiB |");
        println!("|------:|--------:|---------------:|---------------------------------:|----------------:|-----------------:|-------------------:|");
        let base = rows.get(1).map_or(rows[0].2 .0, |row| row.2 .0);
        for (calls, seconds, (rss, rooms, connections, replay)) in &rows {
            let change = if *calls == 0 { "".to_owned() } else { format!("{:+.0}", rss - base) };
            println!(
                "| {calls} | {seconds:.0} | {:.1} | {change} | {rooms} | {connections} | {:.1} |",
                rss / 1024.0,
                replay / 1024.0
            );
        }
    }
}

/// The steady chat load on one node, on one node with Redis, and on two nodes sharing Redis.
mod nodes {
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::steady::{
        drain, percentile, start_clients, Load, Phase, P99_LIMIT_MS, STEADY_RATE, STEP_RATES,
    };
    use super::{
        create_visits, env_number, join_across, process_cpu_seconds, remove_sqlite, ServerProcess,
        ALLOCATOR_NAME,
    };

    /// How the server side is deployed in one column.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Deployment {
        /// One node, its rooms in its memory (no Redis): the default.
        OneNode,
        /// One node with `--redis-url`: what Redis alone costs a node.
        OneNodeRedis,
        /// Two nodes on one Redis: each room's doctor on one node, its patient on the other.
        TwoNodes,
        /// Two nodes on one Redis, each room on one of them (half the rooms on A, half on B):
        /// a room's frames do not cross nodes, though they still go through Redis.
        TwoNodesRoomsSplit,
        /// Two nodes on one Redis, each client on either, as a load balancer without affinity
        /// places them: a quarter of the rooms wholly on A, a quarter wholly on B, half across.
        TwoNodesEitherNode,
    }

    impl Deployment {
        fn name(self) -> &'static str {
            match self {
                Deployment::OneNode => "one node",
                Deployment::OneNodeRedis => "one node + Redis",
                Deployment::TwoNodes => "two nodes + Redis",
                Deployment::TwoNodesRoomsSplit => "two nodes + Redis, a room on one node",
                Deployment::TwoNodesEitherNode => "two nodes + Redis, a client on either node",
            }
        }
    }

    /// A throwaway `redis-server` on a free port (nothing persisted), killed at drop.
    struct Redis {
        child: Child,
        dir: PathBuf,
        port: u16,
    }

    impl Redis {
        fn start() -> Redis {
            let dir = std::env::temp_dir().join(format!("televisit-bench-redis-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .spawn()
                .expect(
                    "redis-server runs (Debian's redis-server: scripts/install-build-deps.sh installs it)",
                );
            let redis = Redis { child, dir, port };
            // Up to 20 s: on a loaded machine it took more than 5.
            for _ in 0..400 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return redis;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("redis-server does not listen on port {port}");
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// One column's database: a new SQLite file, or a new database on `SIGNALING_BENCH_POSTGRES`
    /// (the server creates it on first open).
    struct Database {
        url: String,
        sqlite: Option<PathBuf>,
        /// The PostgreSQL server's port, to find its processes.
        postgres_port: Option<u16>,
    }

    impl Database {
        fn new(column: usize) -> Database {
            let name = format!("televisit_bench_{}_{column}", std::process::id());
            match std::env::var("SIGNALING_BENCH_POSTGRES").ok().filter(|url| !url.is_empty()) {
                Some(server) => {
                    let server = server.trim_end_matches('/');
                    let port = server.rsplit(':').next().and_then(|port| port.parse().ok());
                    Database { url: format!("{server}/{name}"), sqlite: None, postgres_port: port }
                }
                None => {
                    let path = std::env::temp_dir().join(format!("{name}.db"));
                    remove_sqlite(&path);
                    let url = format!("sqlite://{}", path.display());
                    Database { url, sqlite: Some(path), postgres_port: None }
                }
            }
        }

        fn kind() -> &'static str {
            if std::env::var("SIGNALING_BENCH_POSTGRES").is_ok_and(|url| !url.is_empty()) {
                "one PostgreSQL database (SIGNALING_BENCH_POSTGRES)"
            } else {
                "one SQLite file"
            }
        }

        /// CPU seconds of the PostgreSQL server on our port (its postmaster and the backends it
        /// runs now); 0 on SQLite, whose work is in the nodes' own CPU time.
        fn cpu_seconds(&self) -> f64 {
            let Some(port) = self.postgres_port else { return 0.0 };
            let pids: Vec<u32> = std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            let postmaster = pids.iter().copied().find(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                args.first().is_some_and(|arg0| arg0.ends_with(b"postgres"))
                    && args.windows(2).any(|w| w[0] == b"-p" && w[1] == port.to_string().as_bytes())
            });
            let Some(postmaster) = postmaster else { return 0.0 };
            let parent = |pid: u32| -> Option<u32> {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
            };
            pids.into_iter()
                .filter(|pid| *pid == postmaster || parent(*pid) == Some(postmaster))
                .map(process_cpu_seconds)
                .sum()
        }
    }

    impl Drop for Database {
        fn drop(&mut self) {
            if let Some(path) = &self.sqlite {
                remove_sqlite(path);
            }
        }
    }

    /// CPU seconds used so far by each part.
    #[derive(Debug, Clone, Default)]
    struct Cpu {
        nodes: Vec<f64>,
        redis: f64,
        database: f64,
        clients: f64,
    }

    impl Cpu {
        fn now(nodes: &[ServerProcess], redis: Option<&Redis>, database: &Database) -> Cpu {
            Cpu {
                nodes: nodes.iter().map(ServerProcess::cpu_seconds).collect(),
                redis: redis.map_or(0.0, |redis| process_cpu_seconds(redis.child.id())),
                database: database.cpu_seconds(),
                clients: process_cpu_seconds(std::process::id()),
            }
        }

        fn since(&self, before: &Cpu) -> Cpu {
            Cpu {
                nodes: self.nodes.iter().zip(&before.nodes).map(|(now, then)| now - then).collect(),
                redis: self.redis - before.redis,
                database: self.database - before.database,
                clients: self.clients - before.clients,
            }
        }
    }

    /// What one column measured.
    struct Column {
        deployment: Deployment,
        load: Arc<Load>,
        rates: Vec<u64>,
        /// Each phase's length, seconds, and the CPU used in it.
        phases: Vec<(f64, Cpu)>,
        /// Each node's connections and its KiB per connection after the steady phase.
        memory: Vec<(usize, f64)>,
        crossed: Option<usize>,
        drained: String,
    }

    impl Column {
        fn offered(&self, phase: usize) -> f64 {
            self.load.phases[phase].sent.load(Ordering::Relaxed) as f64 / self.phases[phase].0
        }

        fn latencies(&self, phase: usize) -> Vec<u64> {
            self.load.phases[phase].sorted_latencies()
        }

        /// The highest offered frames/s with the p99 within the limit (0: not even the steady
        /// phase's), and whether that was the top step (the ceiling may be higher).
        fn ceiling(&self) -> (f64, bool) {
            match self.crossed {
                Some(0) => (0.0, false),
                Some(phase) => (self.offered(phase - 1), false),
                None => (self.offered(self.phases.len() - 1), true),
            }
        }
    }

    async fn measure(deployment: Deployment, column: usize, rooms: usize) -> Column {
        let steady_seconds = env_number("SIGNALING_BENCH_SECONDS", 60) as u64;
        let step_seconds = env_number("SIGNALING_BENCH_STEP_SECONDS", 10) as u64;
        let database = Database::new(column);
        let redis = (deployment != Deployment::OneNode).then(Redis::start);
        let redis_url = redis.as_ref().map(Redis::url);
        // Node A first: it creates and migrates the database.
        let mut nodes = vec![ServerProcess::start_node(&database.url, redis_url.as_deref(), node_cpu())];
        if matches!(
            deployment,
            Deployment::TwoNodes | Deployment::TwoNodesRoomsSplit | Deployment::TwoNodesEitherNode
        ) {
            nodes.push(ServerProcess::start_node(&database.url, redis_url.as_deref(), node_cpu()));
        }
        let base = format!("http://127.0.0.1:{}", nodes[0].port);
        let ws_url = |node: &ServerProcess| format!("ws://127.0.0.1:{}/api/video-call/ws", node.port);
        let (doctor_api_token, visits) = create_visits(&base, rooms).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_idle: Vec<f64> = nodes.iter().map(ServerProcess::rss_kib).collect();
        let (a, b) = (ws_url(&nodes[0]), ws_url(nodes.last().unwrap()));
        let pairs = if deployment == Deployment::TwoNodesRoomsSplit {
            // The first half of the rooms on node A, the rest on node B.
            let (first, rest) = visits.split_at(visits.len() / 2);
            let mut pairs = join_across(&a, &a, first).await;
            pairs.extend(join_across(&b, &b, rest).await);
            pairs
        } else if deployment == Deployment::TwoNodes {
            // Each room across both nodes: the doctor on A and the patient on B in half of them,
            // the other way round in the rest (as a load balancer spreads them; the patient, who
            // joins first, is the node that owns the room).
            let (first, rest) = visits.split_at(visits.len() / 2);
            let mut pairs = join_across(&a, &b, first).await;
            pairs.extend(join_across(&b, &a, rest).await);
            pairs
        } else if deployment == Deployment::TwoNodesEitherNode {
            // Doctor and patient each on A or B, every combination in a quarter of the rooms.
            let quarter = visits.len() / 4;
            let (on_a, rest) = visits.split_at(quarter);
            let (on_b, rest) = rest.split_at(quarter);
            let (doctor_on_a, doctor_on_b) = rest.split_at(rest.len() / 2);
            let mut pairs = join_across(&a, &a, on_a).await;
            pairs.extend(join_across(&b, &b, on_b).await);
            pairs.extend(join_across(&a, &b, doctor_on_a).await);
            pairs.extend(join_across(&b, &a, doctor_on_b).await);
            pairs
        } else {
            join_across(&a, &a, &visits).await
        };
        tokio::time::sleep(Duration::from_millis(300)).await;

        let rates: Vec<u64> = std::iter::once(STEADY_RATE).chain(STEP_RATES).collect();
        let load = Arc::new(Load {
            start: Instant::now(),
            relay_only: false,
            rate: AtomicU64::new(STEADY_RATE),
            phase: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            phases: rates.iter().map(|_| Phase::default()).collect(),
        });
        let connections = rooms * 2;
        let (senders, receivers) = start_clients(pairs, &load);
        let mut phases = Vec::new();
        let mut memory = Vec::new();
        let mut crossed = None;
        for (phase, rate) in rates.iter().enumerate() {
            load.rate.store(*rate, Ordering::Relaxed);
            load.phase.store(phase, Ordering::Relaxed);
            let seconds = if phase == 0 { steady_seconds } else { step_seconds };
            let began = Instant::now();
            let before = Cpu::now(&nodes, redis.as_ref(), &database);
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            if phase == 0 {
                let per_node = connections / nodes.len();
                memory = nodes
                    .iter()
                    .zip(&rss_idle)
                    .map(|(node, idle)| (per_node, (node.rss_kib() - idle) / per_node as f64))
                    .collect();
            }
            // Let this phase's frames arrive (they carry their phase) before judging it.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let cpu = Cpu::now(&nodes, redis.as_ref(), &database).since(&before);
            phases.push((began.elapsed().as_secs_f64(), cpu));
            if percentile(&load.phases[phase].sorted_latencies(), 0.99) > P99_LIMIT_MS {
                crossed = Some(phase);
                break;
            }
        }
        load.stop.store(true, Ordering::Relaxed);
        let mut sinks = Vec::new();
        for sender in senders {
            sinks.push(sender.await.unwrap());
        }
        let drained = drain(&load).await;

        // End every call through node A; each client gets call-ended (across nodes) and stops.
        let http = reqwest::Client::new();
        let ids: Vec<&str> = visits.iter().map(|v| v.appointment_id.as_str()).collect();
        for chunk in ids.chunks(32) {
            futures_util::future::join_all(chunk.iter().map(|id| {
                let request = http
                    .post(format!("{base}/api/appointments/{id}/video-call/end"))
                    .bearer_auth(&doctor_api_token);
                async move {
                    let status = request.send().await.map(|response| response.status());
                    if !status.as_ref().is_ok_and(|status| status.is_success()) {
                        eprintln!("ending a call answered {status:?}");
                    }
                }
            }))
            .await;
        }
        let ended = futures_util::future::join_all(receivers);
        if tokio::time::timeout(Duration::from_secs(30), ended).await.is_err() {
            eprintln!("{}: some clients heard no call-ended within 30 s", deployment.name());
        }
        drop(sinks);
        Column { deployment, load, rates, phases, memory, crossed, drained }
    }

    /// `SIGNALING_BENCH_NODE_CPU`: the cores each node may use (unset: no cap).
    fn node_cpu() -> Option<f64> {
        std::env::var("SIGNALING_BENCH_NODE_CPU").ok()?.parse().ok().filter(|cores: &f64| *cores > 0.0)
    }

    pub async fn run(rooms: usize) {
        let deployments = [
            Deployment::OneNode,
            Deployment::OneNodeRedis,
            Deployment::TwoNodes,
            Deployment::TwoNodesRoomsSplit,
            Deployment::TwoNodesEitherNode,
        ];
        // `SIGNALING_BENCH_COLUMNS=2,3`: only these columns (1-based), e.g. to compare two builds.
        let chosen: Option<Vec<usize>> = std::env::var("SIGNALING_BENCH_COLUMNS")
            .ok()
            .map(|columns| columns.split(',').filter_map(|column| column.trim().parse().ok()).collect());
        // `SIGNALING_BENCH_ROUNDS=3`: the columns again, in turn, this many times (this machine's
        // ceilings swing between runs more than builds differ: compare medians of one run).
        let rounds = env_number("SIGNALING_BENCH_ROUNDS", 1).max(1);
        let mut ceilings: Vec<(Deployment, Vec<(f64, bool)>)> = Vec::new();
        for round in 0..rounds {
            let mut columns = Vec::new();
            for (column, deployment) in deployments.into_iter().enumerate() {
                if chosen.as_ref().is_some_and(|chosen| !chosen.contains(&(column + 1))) {
                    continue;
                }
                eprintln!("nodes: round {}: measuring {}", round + 1, deployment.name());
                let measured = measure(deployment, column + 10 * round, rooms).await;
                match ceilings.iter_mut().find(|(of, _)| *of == deployment) {
                    Some((_, each)) => each.push(measured.ceiling()),
                    None => ceilings.push((deployment, vec![measured.ceiling()])),
                }
                columns.push(measured);
                // The table so far, in case a later column does not finish.
                print(&columns, rooms);
            }
        }
        if rounds > 1 {
            print_rounds(&ceilings);
        }
    }

    /// Each column's ceiling in each round, their median, and the median's ratio to the first
    /// column's.
    fn print_rounds(ceilings: &[(Deployment, Vec<(f64, bool)>)]) {
        let median = |each: &[(f64, bool)]| {
            let mut values: Vec<f64> = each.iter().map(|(ceiling, _)| *ceiling).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let first = ceilings.first().map_or(1.0, |(_, each)| median(each)).max(1.0);
        println!();
        println!("Highest offered frames/s with p99 ≤ {P99_LIMIT_MS} ms, each round (columns measured in turn; * = the top step):");
        println!();
        println!("| | each round | median | median / first column's |");
        println!("|---|---|--:|--:|");
        for (deployment, each) in ceilings {
            let rounds: Vec<String> = each
                .iter()
                .map(|(ceiling, top)| format!("{ceiling:.0}{}", if *top { "*" } else { "" }))
                .collect();
            let median = median(each);
            println!(
                "| {} | {} | {median:.0} | {:.2} |",
                deployment.name(),
                rounds.join(" / "),
                median / first
            );
        }
    }

    fn print(columns: &[Column], rooms: usize) {
        let row = |what: &str, cell: &dyn Fn(&Column) -> String| {
            let cells: Vec<String> = columns.iter().map(cell).collect();
            println!("| {what} | {} |", cells.join(" | "));
        };
        let each = |values: Vec<f64>, digits: usize| -> String {
            let values: Vec<String> = values.iter().map(|v| format!("{v:.digits$}")).collect();
            values.join(" / ")
        };
        println!();
        println!(
            "Nodes: {rooms} rooms x 2 WebSocket clients, numbered chat frames (stored, acknowledged, relayed), {} chat frames/s",
            STEADY_RATE
        );
        println!("per client steady, then +1/s per client each step until the p99 passes {P99_LIMIT_MS} ms. Database: {};", Database::kind());
        println!("with two nodes each room's doctor is on one node and its patient on the other (every frame crosses nodes;");
        println!("the doctor on A in half the rooms, on B in the other half),");
        println!("or, \"a room on one node\", half the rooms wholly on A and half on B (their frames still go through Redis),");
        println!("or, \"a client on either node\", as a load balancer without affinity: a quarter of the rooms wholly on A,");
        println!("a quarter wholly on B, half across.");
        println!("All processes (nodes, Redis, database, the clients) share one 2-core machine; \"a / b\" = node A / node B;");
        if let Some(cores) = node_cpu() {
            println!("each node is capped at {cores} cores (SIGNALING_BENCH_NODE_CPU: a CPU cgroup it starts in, as if on a machine of its own);");
        }
        println!("CPU ms per 1000 frames = CPU time in the steady phase per 1000 frames sent in it ({ALLOCATOR_NAME}).");
        println!();
        let names: Vec<&str> = columns.iter().map(|c| c.deployment.name()).collect();
        println!("| steady phase | {} |", names.join(" | "));
        println!("|---|{}", "--:|".repeat(columns.len()));
        row("offered frames/s", &|c| format!("{:.0}", c.offered(0)));
        row("relayed frames/s", &|c| {
            format!("{:.0}", c.load.phases[0].relayed.load(Ordering::Relaxed) as f64 / c.phases[0].0)
        });
        row("p50 / p99 / p99.9 ms", &|c| {
            let latencies = c.latencies(0);
            each([0.5, 0.99, 0.999].map(|p| percentile(&latencies, p)).to_vec(), 2)
        });
        row("connections per node", &|c| each(c.memory.iter().map(|m| m.0 as f64).collect(), 0));
        row("KiB per connection, each node", &|c| each(c.memory.iter().map(|m| m.1).collect(), 1));
        let per_1000 = |c: &Column, seconds: f64| {
            seconds * 1e6 / c.load.phases[0].sent.load(Ordering::Relaxed).max(1) as f64
        };
        row("CPU ms per 1000 frames, each node", &|c| {
            each(c.phases[0].1.nodes.iter().map(|s| per_1000(c, *s)).collect(), 0)
        });
        row("CPU ms per 1000 frames, all nodes", &|c| {
            format!("{:.0}", per_1000(c, c.phases[0].1.nodes.iter().sum()))
        });
        row("CPU ms per 1000 frames, Redis", &|c| format!("{:.0}", per_1000(c, c.phases[0].1.redis)));
        row("CPU ms per 1000 frames, PostgreSQL", &|c| format!("{:.0}", per_1000(c, c.phases[0].1.database)));
        let percent = |c: &Column, seconds: f64| seconds / c.phases[0].0 * 100.0;
        row("CPU % of a core, each node", &|c| {
            each(c.phases[0].1.nodes.iter().map(|s| percent(c, *s)).collect(), 0)
        });
        row("CPU % of a core, Redis / PostgreSQL / clients", &|c| {
            let cpu = &c.phases[0].1;
            each(vec![percent(c, cpu.redis), percent(c, cpu.database), percent(c, cpu.clients)], 0)
        });
        row("p99 passed 50 ms at offered frames/s", &|c| match c.crossed {
            Some(phase) => format!("{:.0}", c.offered(phase)),
            None => format!("not up to {:.0}", c.offered(c.phases.len() - 1)),
        });
        row("highest offered frames/s with p99 ≤ 50 ms", &|c| match c.ceiling() {
            (0.0, _) => "none".to_owned(),
            (ceiling, top) => format!("{ceiling:.0}{}", if top { " (the top step)" } else { "" }),
        });

        println!();
        println!("Each phase, per column: offered frames/s, relayed frames/s, p99 ms");
        println!();
        println!("| per client/s | {} |", names.join(" | "));
        println!("|--:|{}", "--:|".repeat(columns.len()));
        let phases = columns.iter().map(|c| c.phases.len()).max().unwrap_or(0);
        for phase in 0..phases {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| {
                    if phase >= c.phases.len() {
                        return String::new();
                    }
                    let relayed =
                        c.load.phases[phase].relayed.load(Ordering::Relaxed) as f64 / c.phases[phase].0;
                    let p99 = percentile(&c.latencies(phase), 0.99);
                    format!("{:.0} / {relayed:.0} / {p99:.1}", c.offered(phase))
                })
                .collect();
            println!("| {} | {} |", columns[0].rates[phase], cells.join(" | "));
        }
        println!();
        for c in columns {
            println!("{}: {}", c.deployment.name(), c.drained);
        }
    }
}
