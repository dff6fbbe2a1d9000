//! Two server nodes on one database and one Redis (`--redis-url`): node A runs in this process,
//! node B is the `televisit` binary in its own process, so it can be killed mid-call. Debian's
//! `redis-server` runs on a free port in a temporary directory (scripts/install-build-deps.sh
//! installs it). The database is the suite's: a shared SQLite file, or PostgreSQL when
//! `TELEVISIT_TEST_POSTGRES` is set (the second pass of `scripts/test rust`).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TempDb, TestServer, Visit, Ws};
use futures_util::StreamExt;
use serde_json::{json, Value};
use televisit_server::secrets::Clock;
use televisit_server::store::NewChat;

/// A throwaway `redis-server`, killed (and its directory removed) at drop.
struct Redis {
    child: Child,
    dir: PathBuf,
    url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} does not listen on port {port}");
}

impl Redis {
    async fn start() -> Redis {
        let dir = std::env::temp_dir().join(format!("televisit-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let child = Self::spawn(port, &dir).await;
        Redis { child, dir, url: format!("redis://127.0.0.1:{port}") }
    }

    /// Stops it and starts an empty one on the same port (nothing is persisted).
    async fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let port = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Self::spawn(port, &self.dir).await;
    }

    async fn spawn(port: u16, dir: &std::path::Path) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian's redis-server: scripts/install-build-deps.sh installs it)");
        wait_for_port(port, "redis-server").await;
        child
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Node B: the server binary in its own process, on the same database and Redis.
struct Node {
    child: Child,
    port: u16,
}

impl Node {
    async fn start(db: &TempDb, redis: &Redis, idle_timeout_seconds: u64) -> Node {
        Node::start_with(db, redis, idle_timeout_seconds, &[]).await
    }

    /// [`Node::start`] with more command-line arguments.
    async fn start_with(db: &TempDb, redis: &Redis, idle_timeout_seconds: u64, extra: &[&str]) -> Node {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_televisit"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &db.url(), "--redis-url", &redis.url])
            .args(["--clinic-api-key", common::CLINIC_KEY, "--reconnect-grace-seconds", "1"])
            .args(["--idle-timeout-seconds", &idle_timeout_seconds.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the televisit binary runs");
        let node = Node { child, port };
        for _ in 0..100 {
            let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
            if health.is_ok_and(|r| r.status() == 200) {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("node B does not serve");
    }

    async fn join(&self, token: &str, resume: Option<u64>) -> Ws {
        let mut ws = Ws::connect(&format!("ws://127.0.0.1:{}/api/video-call/ws", self.port)).await;
        let mut join = json!({"type": "join", "token": token});
        if let Some(last_seq) = resume {
            join["resume"] = json!({"last_seq": last_seq});
        }
        ws.send(join).await;
        ws
    }

    /// Kills the process (SIGKILL: no goodbye to anyone).
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Node A in this process, node B in its own, both on `db` and `redis`; a visit the doctor started.
async fn two_nodes(db: &TempDb, redis: &Redis) -> (TestServer, Node, Visit) {
    two_nodes_idle_after(db, redis, 45).await
}

/// [`two_nodes`] whose signaling connections go idle after `idle_timeout_seconds`.
async fn two_nodes_idle_after(
    db: &TempDb,
    redis: &Redis,
    idle_timeout_seconds: u64,
) -> (TestServer, Node, Visit) {
    let url = redis.url.clone();
    let a = TestServer::start_with(db, Clock::default(), |config| {
        config.redis_url = Some(url);
        config.reconnect_grace_seconds = 1;
        config.idle_timeout_seconds = idle_timeout_seconds;
    })
    .await;
    // B starts once A has created (and migrated) the database.
    let b = Node::start(db, redis, idle_timeout_seconds).await;
    let visit = a.started_visit().await;
    (a, b, visit)
}

/// The patient waits on node B, the doctor joins on node A; returns (doctor, patient) after the
/// doctor was asked to offer (the patient's `admitted` and `peer-joined` are still unread).
async fn doctor_on_a_patient_on_b(a: &TestServer, b: &Node, visit: &Visit) -> (Ws, Ws) {
    let mut patient = b.join(&visit.patient_token, None).await;
    patient.expect("joined").await;
    patient.expect("waiting").await;
    let mut doctor = a.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    doctor.expect("peer-joined").await;
    (doctor, patient)
}

/// Joins (resuming from `last_seq`) at `ws_url` until the node takes it: while it has no Redis it
/// answers `internal`, and clients retry. Returns the connection and its `joined`.
async fn join_when_taken(ws_url: &str, token: &str, last_seq: u64) -> (Ws, Value) {
    for _ in 0..50 {
        let mut ws = Ws::connect(ws_url).await;
        ws.send(json!({"type": "join", "token": token, "resume": {"last_seq": last_seq}})).await;
        let first = ws.next().await;
        if first["type"] == "joined" {
            return (ws, first);
        }
        assert_eq!(first["code"], "internal", "{first}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{ws_url} does not take joins again");
}

async fn resume_on_a(a: &TestServer, token: &str, last_seq: u64) -> Ws {
    let mut ws = Ws::connect(&a.ws_url()).await;
    ws.send(json!({"type": "join", "token": token, "resume": {"last_seq": last_seq}})).await;
    ws.last_seq = last_seq;
    ws
}

fn chat(seq: u64, text: &str) -> Value {
    json!({"type": "chat", "seq": seq, "text": text})
}

/// The next `chat` frame's text (skipping nothing: it must be the next frame).
async fn chat_text(ws: &mut Ws) -> String {
    ws.expect("chat").await["text"].as_str().unwrap().to_owned()
}

/// A proxy to `redis` that holds back what Redis sends for `delay`, except on connections that
/// subscribed (the pub/sub ones): returns its URL. It serves until the test ends.
async fn slow_answers_proxy(redis: &Redis, delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let upstream = redis.url.trim_start_matches("redis://").to_owned();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            let subscribed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let subscribing = subscribed.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                    if buf[..n].windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE")) {
                        subscribing.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    if to_server.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            // Each chunk goes out `delay` after it came, in order.
            let (chunks, mut due) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
            tokio::spawn(async move {
                while let Some((at, chunk)) = due.recv().await {
                    tokio::time::sleep_until(at).await;
                    if to_client.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                    let held = if subscribed.load(std::sync::atomic::Ordering::SeqCst) {
                        Duration::ZERO
                    } else {
                        delay
                    };
                    if chunks.send((tokio::time::Instant::now() + held, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            });
        }
    });
    url
}

/// Reads `ws` until it has `chats` chat frames and `acks` acks; asserts its numbered frames come
/// with no seq missing or out of turn; returns the chat texts in the order received.
async fn chats_in_seq_order(ws: &mut Ws, chats: usize, acks: usize) -> Vec<String> {
    let (mut texts, mut acked) = (Vec::new(), 0);
    while texts.len() < chats || acked < acks {
        let before = ws.last_seq;
        let frame = ws.next().await;
        if let Some(seq) = frame["seq"].as_u64() {
            assert_eq!(seq, before + 1, "frame {seq} came after {before}: {frame}");
        }
        match frame["type"].as_str() {
            Some("chat") => texts.push(frame["text"].as_str().unwrap().to_owned()),
            Some("ack") => acked += 1,
            _ => panic!("unexpected {frame}"),
        }
    }
    texts
}

/// A node (in this process) whose answers from Redis come 30 ms late ([`slow_answers_proxy`]).
async fn node_answered_late(db: &TempDb, redis: &Redis) -> TestServer {
    let slow_answers = slow_answers_proxy(redis, Duration::from_millis(30)).await;
    TestServer::start_with(db, Clock::default(), |config| {
        config.redis_url = Some(slow_answers);
        config.reconnect_grace_seconds = 1;
    })
    .await
}

/// Each node sends its own connections' frames itself and gets the others' through Redis: when
/// both sides write at once, each still gets every frame once, in the room's order (no seq
/// missing or swapped), and each writer's messages in the order written.
/// Node A's answers from Redis come 30 ms late while what other nodes publish to it does not
/// (a slow link and a fast one): frames for the doctor on A from the patient's later inputs on B
/// come before those from A's own earlier inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_written_at_once_on_two_nodes_reaches_each_side_whole_and_in_the_rooms_order() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let a = node_answered_late(&db, &redis).await;
    let b = Node::start(&db, &redis, 45).await;
    let visit = a.started_visit().await;
    let (doctor, mut patient) = doctor_on_a_patient_on_b(&a, &b, &visit).await;
    patient.expect("admitted").await;
    patient.expect("peer-joined").await;
    // The doctor's inputs each wait 60 ms on Redis; meanwhile the patient's go on every 10 ms.
    let (doctor_writes, patient_writes) = (20, 100);
    let write_and_read = |mut ws: Ws, who: &'static str, count: usize, pace: Duration| async move {
        for n in 1..=count {
            ws.send(chat(n as u64, &format!("{who} {n}"))).await;
            tokio::time::sleep(pace).await;
        }
        chats_in_seq_order(&mut ws, doctor_writes + patient_writes, count).await
    };
    let (doctor_saw, patient_saw) = tokio::join!(
        write_and_read(doctor, "doctor", doctor_writes, Duration::ZERO),
        write_and_read(patient, "patient", patient_writes, Duration::from_millis(10))
    );
    for saw in [&doctor_saw, &patient_saw] {
        for (who, count) in [("doctor", doctor_writes), ("patient", patient_writes)] {
            let theirs: Vec<&String> = saw.iter().filter(|text| text.starts_with(who)).collect();
            let written: Vec<String> = (1..=count).map(|n| format!("{who} {n}")).collect();
            assert_eq!(theirs, written.iter().collect::<Vec<_>>());
        }
    }
    // Both saw the room's one order.
    assert_eq!(doctor_saw, patient_saw);
    // Node B owns the room (the patient joined there first); node A forwards its inputs to B and
    // keeps no room once they are applied (a delivery confirmation may still be on its way
    // through the slow link).
    let mut line = String::new();
    for _ in 0..50 {
        let metrics = a.metrics().await;
        line =
            metrics.lines().find(|line| line.starts_with("televisit_signaling_rooms ")).unwrap().to_owned();
        if line == "televisit_signaling_rooms 0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(line, "televisit_signaling_rooms 0");
}

/// Prometheus's count for one operation's Redis timings in `metrics` (0 when there is none).
fn redis_trips(metrics: &str, operation: &str) -> u64 {
    let prefix = format!("televisit_redis_seconds_count{{operation=\"{operation}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&prefix)).map_or(0, |n| n.parse().unwrap())
}

/// The node that owns an appointment's room, if any.
async fn room_owner(redis: &Redis, appointment_id: &str) -> Option<String> {
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let owner = format!("televisit:room:{appointment_id}:owner");
    redis::cmd("GET").arg(owner).query_async(&mut connection).await.unwrap()
}

/// A room whose two sides are on one node lives in that node's memory: the node claims it once
/// (one trip to Redis that also reads it) and then writes its inputs through, those that queued
/// while a commit was out together: both sides on node A write 20 messages at once through a
/// link to Redis that answers 30 ms late; each gets all 40 in the room's one order, each side's
/// in the order written (a connection's next frames are read while its earlier ones wait for
/// their commit); node A claimed the room once, committed the 40 messages in fewer than 20
/// trips, and forwarded nothing; when both have left, the room is nobody's and node A keeps none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_sides_are_on_one_node_is_claimed_once_and_let_go_when_they_leave() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let a = node_answered_late(&db, &redis).await;
    let visit = a.started_visit().await;
    let mut patient = a.join(&visit.patient_token).await;
    patient.expect("joined").await;
    patient.expect("waiting").await;
    let mut doctor = a.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    doctor.expect("peer-joined").await;
    patient.expect("admitted").await;
    patient.expect("peer-joined").await;
    let writes = 20;
    let write_and_read = |mut ws: Ws, who: &'static str| async move {
        for n in 1..=writes {
            ws.send(chat(n as u64, &format!("{who} {n}"))).await;
        }
        let saw = chats_in_seq_order(&mut ws, 2 * writes, writes).await;
        (ws, saw)
    };
    let ((mut doctor, doctor_saw), (mut patient, patient_saw)) =
        tokio::join!(write_and_read(doctor, "doctor"), write_and_read(patient, "patient"));
    for who in ["doctor", "patient"] {
        let theirs: Vec<&String> = doctor_saw.iter().filter(|text| text.starts_with(who)).collect();
        let written: Vec<String> = (1..=writes).map(|n| format!("{who} {n}")).collect();
        assert_eq!(theirs, written.iter().collect::<Vec<_>>());
    }
    assert_eq!(doctor_saw, patient_saw);

    let metrics = a.metrics().await;
    let (claims, commits) = (redis_trips(&metrics, "claim"), redis_trips(&metrics, "commit"));
    assert_eq!(claims, 1, "{claims} claims for {commits} inputs committed");
    // Joins, admission and 40 messages: one commit each would be 43 or more.
    assert!(commits < writes as u64, "{commits} commits for the 40 messages and the joins");
    assert_eq!(redis_trips(&metrics, "forward"), 0);
    assert!(room_owner(&redis, &visit.appointment_id).await.is_some());

    // Both leave: node A lets the room go.
    patient.send(json!({"type": "leave"})).await;
    doctor.expect("peer-left").await;
    doctor.send(json!({"type": "leave"})).await;
    doctor.until_closed().await;
    let mut left = (Some(String::new()), String::new());
    for _ in 0..50 {
        let metrics = a.metrics().await;
        let rooms = metrics.lines().find(|line| line.starts_with("televisit_signaling_rooms ")).unwrap();
        left = (room_owner(&redis, &visit.appointment_id).await, rooms.to_owned());
        if left == (None, "televisit_signaling_rooms 0".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, (None, "televisit_signaling_rooms 0".to_owned()));
}

/// A node configured unlike the nodes alive would end sessions at its own times: it refuses to
/// start, saying which settings differ, and the cluster goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_idle_timeout_than_the_cluster_refuses_to_start() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes_idle_after(&db, &redis, 45).await;
    let mut odd = Command::new(env!("CARGO_BIN_EXE_televisit"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--database-url", &db.url(), "--redis-url", &redis.url])
        .args(["--clinic-api-key", common::CLINIC_KEY, "--reconnect-grace-seconds", "1"])
        .args(["--idle-timeout-seconds", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the televisit binary runs");
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = odd.try_wait().unwrap() {
            break status;
        }
        if waited > Duration::from_secs(20) {
            odd.kill().unwrap();
            panic!("a node with --idle-timeout-seconds 30 joined a cluster running 45");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut odd.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("--idle-timeout-seconds 45") && stderr.contains("--idle-timeout-seconds 30"),
        "the error names both values: {stderr}"
    );
    // The cluster is unharmed: a visit still starts across both nodes.
    let (mut doctor, mut patient) = doctor_on_a_patient_on_b(&a, &b, &visit).await;
    doctor.send(json!({"type": "admit"})).await;
    patient.expect("admitted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_across_two_nodes_survives_the_loss_of_one() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, mut b, visit) = two_nodes(&db, &redis).await;

    // The patient waits on node B; the doctor's status, posted through node A, reaches them.
    let mut patient = b.join(&visit.patient_token, None).await;
    assert_eq!(patient.expect("joined").await["peer_present"], false);
    patient.expect("waiting").await;
    let path = format!("/api/appointments/{}/video-call/status", visit.appointment_id);
    let (_, status) = a.call("GET", &path, &visit.doctor_api_token).await;
    assert_eq!(
        (status["patient_present"].clone(), status["doctor_present"].clone()),
        (json!(true), json!(false))
    );
    let response = a
        .http
        .post(a.url(&format!("/api/appointments/{}/video-call/waiting-message", visit.appointment_id)))
        .bearer_auth(&visit.doctor_api_token)
        .json(&json!({"text": "Two minutes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(patient.expect("waiting").await["message"], "Two minutes");

    // The doctor joins on node A: the patient on B is admitted, the doctor asked to offer.
    let mut doctor = a.join(&visit.doctor_token).await;
    assert_eq!(doctor.expect("joined").await["peer_present"], true);
    assert_eq!(doctor.expect("peer-joined").await["make_offer"], true);
    patient.expect("admitted").await;
    patient.expect("peer-joined").await;

    // Offer, answer and a candidate cross between the nodes.
    doctor.send(json!({"type": "offer", "sdp": "v=0 offer"})).await;
    assert_eq!(patient.expect("offer").await["sdp"], "v=0 offer");
    patient.send(json!({"type": "answer", "sdp": "v=0 answer"})).await;
    assert_eq!(doctor.expect("answer").await["sdp"], "v=0 answer");
    let candidate = json!({"type": "ice-candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdp_mid": "0", "sdp_m_line_index": 0});
    patient.send(candidate).await;
    doctor.expect("ice-candidate").await;

    // Chat both ways: each side gets the message, the sender its ack once stored.
    doctor.send(chat(1, "How are you feeling?")).await;
    assert_eq!(chat_text(&mut doctor).await, "How are you feeling?");
    assert_eq!(doctor.expect("ack").await["client_seq"], 1);
    assert_eq!(chat_text(&mut patient).await, "How are you feeling?");
    patient.send(chat(1, "Better, thanks")).await;
    assert_eq!(chat_text(&mut patient).await, "Better, thanks");
    assert_eq!(patient.expect("ack").await["client_seq"], 1);
    assert_eq!(chat_text(&mut doctor).await, "Better, thanks");

    // Node B dies. While the patient is away the doctor writes and mutes.
    let last_seen = patient.last_seq;
    b.kill();
    doctor.send(chat(2, "Are you still there?")).await;
    assert_eq!(chat_text(&mut doctor).await, "Are you still there?");
    doctor.expect("ack").await;
    doctor.send(json!({"type": "media-state", "audio": false, "video": true})).await;

    // The patient resumes on node A: exactly the frames it missed, once each.
    let mut patient = resume_on_a(&a, &visit.patient_token, last_seen).await;
    let joined = patient.expect("joined").await;
    assert_eq!(joined["resumed"], true, "{joined}");
    assert_eq!(joined["last_client_seq"], 1, "its one chat is stored: nothing to send again");
    let history: Vec<&str> =
        joined["chat_history"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(history, ["How are you feeling?", "Better, thanks", "Are you still there?"]);
    let missed = patient.expect("chat").await;
    assert_eq!(
        (missed["text"].as_str(), missed["seq"].as_u64()),
        (Some("Are you still there?"), Some(last_seen + 1))
    );
    assert_eq!(patient.expect("media-state").await["audio"], false);
    // Resuming keeps the peer connection: no new pairing for either side.
    patient.expect_silence(Duration::from_millis(300)).await;
    doctor.expect_silence(Duration::from_millis(300)).await;

    // The call goes on on one node; the patient's next chat number follows its last.
    patient.send(chat(2, "Yes, the connection dropped")).await;
    assert_eq!(chat_text(&mut patient).await, "Yes, the connection dropped");
    assert_eq!(patient.expect("ack").await["client_seq"], 2);
    assert_eq!(chat_text(&mut doctor).await, "Yes, the connection dropped");
    let stored = a.server.state.store.chat_history(&visit.appointment_id).await.unwrap();
    let texts: Vec<&str> = stored.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["How are you feeling?", "Better, thanks", "Are you still there?", "Yes, the connection dropped"],
        "nothing lost, nothing stored twice"
    );

    // The doctor ends the call: both hear it.
    doctor.send(json!({"type": "end-call"})).await;
    for ws in [&mut doctor, &mut patient] {
        let frames = ws.until_closed().await;
        assert!(frames.iter().any(|f| f["type"] == "call-ended"), "{frames:?}");
    }
    assert_eq!(a.status(&visit).await["status"], "ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_who_drops_on_one_node_and_stays_away_is_announced_to_the_doctor_on_the_other() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes(&db, &redis).await;
    let (mut doctor, patient) = doctor_on_a_patient_on_b(&a, &b, &visit).await;

    // The patient's socket closes on node B; B's grace timer (1 s) runs out without a return.
    drop(patient);
    let left = doctor.expect("peer-left").await;
    assert_eq!((left["role"].as_str(), left["reason"].as_str()), (Some("patient"), Some("disconnected")));
    let (_, status) = a
        .call(
            "GET",
            &format!("/api/appointments/{}/video-call/status", visit.appointment_id),
            &visit.doctor_api_token,
        )
        .await;
    assert_eq!(status["patient_present"], false);
}

/// The next frame within 10 s: longer than `Ws::next` waits, for a node's death to be noticed
/// (3 s) and a grace period to run.
async fn next_frame_within_10_s(ws: &mut Ws) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frame = ws.stream.next().await.expect("open").expect("frame");
            if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
                return serde_json::from_str::<Value>(&text).unwrap();
            }
        }
    })
    .await
    .expect("a frame within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_who_dropped_on_a_node_that_died_during_the_grace_period_is_announced_by_the_other() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, mut b, visit) = two_nodes(&db, &redis).await;
    let (mut doctor, patient) = doctor_on_a_patient_on_b(&a, &b, &visit).await;

    // The patient's socket closes on node B, which starts its grace timer (1 s) and dies within
    // it: the timer dies too. Node A notices B's silence (3 s) and runs the grace period itself.
    drop(patient);
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill();
    let left = next_frame_within_10_s(&mut doctor).await;
    assert_eq!(
        (left["type"].as_str(), left["role"].as_str(), left["reason"].as_str()),
        (Some("peer-left"), Some("patient"), Some("disconnected")),
        "{left}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_whose_node_dies_and_who_does_not_come_back_is_announced_after_the_grace_period() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, mut b, visit) = two_nodes(&db, &redis).await;
    let (mut doctor, _patient) = doctor_on_a_patient_on_b(&a, &b, &visit).await;

    // Node B dies with the patient on it; node A notices B's silence (3 s), then the grace (1 s).
    b.kill();
    let left = next_frame_within_10_s(&mut doctor).await;
    assert_eq!(
        (left["type"].as_str(), left["reason"].as_str()),
        (Some("peer-left"), Some("disconnected")),
        "{left}"
    );
    let path = format!("/api/appointments/{}/video-call/status", visit.appointment_id);
    assert_eq!(a.call("GET", &path, &visit.doctor_api_token).await.1["patient_present"], false);
}

/// A participant on the HTTP fallback (`/api/video-call/signal`): each request goes to the next
/// of its nodes in turn, as behind a load balancer.
struct HttpParticipant {
    http: reqwest::Client,
    signals: Vec<String>,
    requests: usize,
    token: String,
    cursor: u64,
    last_seq: u64,
    /// Every frame polled, in order.
    received: Vec<Value>,
}

impl HttpParticipant {
    fn on(port: u16, token: &str) -> HttpParticipant {
        HttpParticipant::across(&[port], token)
    }

    fn across(ports: &[u16], token: &str) -> HttpParticipant {
        HttpParticipant {
            http: reqwest::Client::new(),
            signals: ports
                .iter()
                .map(|port| format!("http://127.0.0.1:{port}/api/video-call/signal"))
                .collect(),
            requests: 0,
            token: token.to_owned(),
            cursor: 0,
            last_seq: 0,
            received: Vec::new(),
        }
    }

    /// The node of the next request.
    fn next_signal(&mut self) -> String {
        self.requests += 1;
        self.signals[(self.requests - 1) % self.signals.len()].clone()
    }

    /// Posts a frame; returns the status and the JSON body.
    async fn post(&mut self, frame: Value) -> (u16, Value) {
        let signal = self.next_signal();
        let response =
            self.http.post(signal).bearer_auth(&self.token).body(frame.to_string()).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// One long poll; returns the status and the frames. Numbered frames come one `seq` after the
    /// other (a resumed `joined` starts no new count).
    async fn poll(&mut self) -> (u16, Vec<Value>) {
        let signal = self.next_signal();
        let response = self
            .http
            .get(signal)
            .bearer_auth(&self.token)
            .query(&[("after", self.cursor)])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if status != 200 {
            return (status, vec![body]);
        }
        self.cursor = body["cursor"].as_u64().unwrap();
        let frames = body["frames"].as_array().unwrap().clone();
        for frame in &frames {
            if let Some(seq) = frame["seq"].as_u64() {
                assert_eq!(
                    seq,
                    self.last_seq + 1,
                    "every frame once, in order: {frame} after {}",
                    self.last_seq
                );
                self.last_seq = seq;
            }
        }
        self.received.extend(frames.iter().cloned());
        (status, frames)
    }

    /// Polls until a frame of this type arrives; returns the types of all frames up to it.
    async fn types_until(&mut self, kind: &str) -> Vec<String> {
        let mut types = Vec::new();
        while !types.iter().any(|t| t == kind) {
            let (status, frames) = self.poll().await;
            assert_eq!(status, 200, "{frames:?}");
            types.extend(frames.iter().map(|f| f["type"].as_str().unwrap().to_owned()));
        }
        types
    }

    /// The texts of the chat frames polled so far.
    fn chat_texts(&self) -> Vec<&str> {
        self.received.iter().filter(|f| f["type"] == "chat").map(|f| f["text"].as_str().unwrap()).collect()
    }
}

/// The patient on the HTTP fallback of the node on `port`, in the waiting room.
async fn waiting_by_http(port: u16, visit: &Visit) -> HttpParticipant {
    let mut patient = HttpParticipant::on(port, &visit.patient_token);
    assert_eq!(patient.post(json!({"type": "join"})).await.0, 200);
    assert_eq!(patient.types_until("waiting").await, ["joined", "waiting"]);
    patient
}

/// A client whose requests alternate between nodes draws from one rate limit, not one per node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_client_alternating_between_nodes_gets_one_rate_limit_not_one_per_node() {
    const BURST: usize = 10;
    let redis = Redis::start().await;
    let db = TempDb::new();
    let url = redis.url.clone();
    let a = TestServer::start_with(&db, Clock::default(), |config| {
        config.redis_url = Some(url);
        config.reconnect_grace_seconds = 1;
        config.idle_timeout_seconds = 45;
        config.frames_per_second = 1;
        config.frame_burst = BURST as u32;
    })
    .await;
    let b = Node::start_with(&db, &redis, 45, &["--frames-per-second", "1", "--frame-burst", "10"]).await;
    let visit = a.started_visit().await;
    let mut patient = HttpParticipant::across(&[a.server.addr.port(), b.port], &visit.patient_token);
    assert_eq!(patient.post(json!({"type": "join"})).await.0, 200);

    let mut accepted = 0;
    let mut refused = Vec::new();
    for _ in 0..3 * BURST {
        match patient.post(json!({"type": "ping"})).await {
            (200, _) => accepted += 1,
            (status, body) => refused.push((status, body)),
        }
    }
    // The burst, and the one or two tokens a second refills while the posts run.
    assert!((BURST..=BURST + 3).contains(&accepted), "{accepted} of {} posts accepted", 3 * BURST);
    let (status, body) = &refused[0];
    assert_eq!(*status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_on_the_http_fallback_whose_requests_alternate_between_nodes_gets_every_frame_once() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes(&db, &redis).await;
    // Joined on node A; then B, A, B, ... for each request.
    let mut patient = HttpParticipant::across(&[a.server.addr.port(), b.port], &visit.patient_token);
    assert_eq!(patient.post(json!({"type": "join"})).await.0, 200);
    assert_eq!(patient.types_until("waiting").await, ["joined", "waiting"]);

    let mut doctor = a.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    assert_eq!(doctor.expect("peer-joined").await["make_offer"], true);
    assert_eq!(patient.types_until("peer-joined").await, ["admitted", "peer-joined"]);
    doctor.send(json!({"type": "offer", "sdp": "v=0 to http"})).await;
    assert_eq!(patient.types_until("offer").await, ["offer"]);
    assert_eq!(patient.post(json!({"type": "answer", "sdp": "v=0 from http"})).await.0, 200);
    assert_eq!(doctor.expect("answer").await["sdp"], "v=0 from http");

    for n in 1..=3 {
        assert_eq!(patient.post(chat(n, &format!("patient {n}"))).await.0, 200);
        assert_eq!(chat_text(&mut doctor).await, format!("patient {n}"));
        doctor.send(chat(n, &format!("doctor {n}"))).await;
        assert_eq!(chat_text(&mut doctor).await, format!("doctor {n}"));
        doctor.expect("ack").await;
    }
    while patient.chat_texts().len() < 6 {
        assert_eq!(patient.poll().await.0, 200);
    }
    assert_eq!(
        patient.chat_texts(),
        ["patient 1", "doctor 1", "patient 2", "doctor 2", "patient 3", "doctor 3"],
        "each chat once, in order"
    );

    doctor.send(json!({"type": "end-call"})).await;
    assert!(patient.types_until("call-ended").await.contains(&"call-ended".to_owned()));
    let types: Vec<&str> = patient.received.iter().map(|f| f["type"].as_str().unwrap()).collect();
    let acks = types.iter().filter(|t| **t == "ack").count();
    assert_eq!(acks, 3, "one ack per chat: {types:?}");
    assert_eq!(types.iter().filter(|t| **t == "offer").count(), 1, "{types:?}");
    assert_eq!(a.status(&visit).await["status"], "ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_patient_who_stops_polling_is_dropped_at_the_outbox_bound_and_resumes_with_nothing_lost() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let url = redis.url.clone();
    let a = TestServer::start_with(&db, Clock::default(), |config| {
        config.redis_url = Some(url);
        config.frames_per_second = 100_000;
        config.frame_burst = 100_000;
    })
    .await;
    let visit = a.started_visit().await;
    let mut patient = waiting_by_http(a.server.addr.port(), &visit).await;
    let mut doctor = a.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    doctor.expect("peer-joined").await;

    // The patient's app stops polling while the doctor sends more than a connection's outbox
    // holds (1024 frames): its mailbox in Redis stops there and the session closes.
    const SENT: usize = 1200;
    let candidate = |n: usize| format!("candidate:{n} 1 udp 1 127.0.0.1 9 typ host");
    for n in 0..SENT {
        doctor.send(json!({"type": "ice-candidate", "candidate": candidate(n), "sdp_mid": "0", "sdp_m_line_index": 0})).await;
    }
    // The owner copies the frames into Redis one by one: wait until the mailbox is full.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let keys: Vec<String> =
                redis::cmd("KEYS").arg("televisit:fallback:*").query_async(&mut connection).await.unwrap();
            for key in keys.iter().filter(|key| !key.ends_with(":frames")) {
                let closed: Option<String> =
                    redis::cmd("HGET").arg(key).arg("closed").query_async(&mut connection).await.unwrap();
                if closed.as_deref() == Some("1") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the session closes at its bound");
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let (status, frames) = patient.poll().await;
            if status != 200 {
                return frames[0].clone();
            }
        }
    })
    .await
    .expect("the session of a client that stopped polling ends");
    assert_eq!(ended["error"]["code"], "not_joined", "{ended}");
    let candidates = |patient: &HttpParticipant| -> Vec<String> {
        let frames = patient.received.iter().filter(|f| f["type"] == "ice-candidate");
        frames.map(|f| f["candidate"].as_str().unwrap().to_owned()).collect()
    };
    assert!(candidates(&patient).len() < SENT, "the mailbox stopped at its bound");

    // It joins again with the last seq it saw: the room replays exactly what it missed.
    patient.cursor = 0;
    assert_eq!(patient.post(json!({"type": "join", "resume": {"last_seq": patient.last_seq}})).await.0, 200);
    while candidates(&patient).len() < SENT {
        let (status, frames) = patient.poll().await;
        assert_eq!(status, 200, "{frames:?}");
        assert!(!frames.is_empty(), "the rest arrives; got {} of {SENT}", candidates(&patient).len());
        if let Some(joined) = frames.iter().find(|f| f["type"] == "joined") {
            assert_eq!(joined["resumed"], true, "{joined}");
        }
    }
    assert_eq!(
        candidates(&patient),
        (0..SENT).map(candidate).collect::<Vec<_>>(),
        "every candidate once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_on_the_http_fallback_goes_on_polling_another_node_when_theirs_dies() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, mut b, visit) = two_nodes(&db, &redis).await;
    let mut patient = waiting_by_http(b.port, &visit).await;

    let mut doctor = a.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    doctor.expect("peer-joined").await;
    doctor.send(json!({"type": "offer", "sdp": "v=0 to http"})).await;
    assert_eq!(patient.types_until("offer").await, ["admitted", "peer-joined", "offer"]);
    assert_eq!(patient.post(chat(1, "Typed on a blocked network")).await.0, 200);
    assert_eq!(patient.types_until("ack").await, ["chat", "ack"]);
    assert_eq!(chat_text(&mut doctor).await, "Typed on a blocked network");

    // A chat the patient has not polled yet, then node B dies, then another chat.
    doctor.send(chat(1, "Before the loss")).await;
    assert_eq!(chat_text(&mut doctor).await, "Before the loss");
    doctor.expect("ack").await;
    b.kill();
    doctor.send(chat(2, "After the loss")).await;
    assert_eq!(chat_text(&mut doctor).await, "After the loss");
    doctor.expect("ack").await;

    // The patient's polls go to node A without a new join: the session goes on there.
    patient.signals = vec![a.url("/api/video-call/signal")];
    tokio::time::timeout(Duration::from_secs(15), async {
        while patient.chat_texts().len() < 3 {
            let (status, frames) = patient.poll().await;
            assert_eq!(status, 200, "{frames:?}");
        }
    })
    .await
    .expect("the chat reaches the patient on node A within 15 s");
    assert_eq!(patient.chat_texts(), ["Typed on a blocked network", "Before the loss", "After the loss"]);
    // And the patient's frames reach the room from node A.
    assert_eq!(patient.post(chat(2, "Still here")).await.0, 200);
    assert_eq!(chat_text(&mut doctor).await, "Still here");
    patient.types_until("ack").await;
    let stored = a.server.state.store.chat_history(&visit.appointment_id).await.unwrap();
    let texts: Vec<&str> = stored.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["Typed on a blocked network", "Before the loss", "After the loss", "Still here"]);
    assert_eq!(patient.chat_texts().len(), 4, "nothing twice: {:?}", patient.received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_request_with_a_wrong_token_is_refused_alike_on_either_node() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes(&db, &redis).await;
    let _patient = waiting_by_http(b.port, &visit).await; // a session open on node B

    let mut refusals = Vec::new();
    for port in [b.port, a.server.addr.port()] {
        let mut wrong = HttpParticipant::on(port, &format!("{}x", visit.patient_token));
        let (status, body) = wrong.poll().await;
        refusals.push((status, body[0]["error"]["code"].clone()));
        let (status, body) = wrong.post(chat(1, "not mine")).await;
        refusals.push((status, body["error"]["code"].clone()));
    }
    assert_eq!(refusals[0], (401, json!("invalid_token")), "{refusals:?}");
    assert_eq!(refusals[..2], refusals[2..], "node A refuses as node B does");
    assert!(refusals[..2].iter().all(|r| *r == refusals[0]), "{refusals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_redis_a_node_does_not_start_and_a_join_is_refused_with_an_error_frame() {
    let db = TempDb::new();
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let output = Command::new(env!("CARGO_BIN_EXE_televisit"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url(), "--redis-url", &nowhere])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Redis at --redis-url"), "{stderr}");

    // Redis goes away during a visit: a join gets an `error` frame, not silence.
    let mut redis = Redis::start().await;
    let (a, _b, visit) = two_nodes(&db, &redis).await;
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    let mut patient = a.join(&visit.patient_token).await;
    let refused = patient.expect("error").await;
    assert_eq!(refused["code"], "internal", "{refused}");
    assert!(patient.try_next().await.is_none(), "then the connection closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_the_nodes_close_their_connections_and_the_call_starts_over() {
    let mut redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes(&db, &redis).await;
    let (mut doctor, mut patient) = doctor_on_a_patient_on_b(&a, &b, &visit).await;
    patient.expect("admitted").await;
    patient.expect("peer-joined").await;
    doctor.send(chat(1, "Before the restart")).await;
    assert_eq!(chat_text(&mut patient).await, "Before the restart");

    // Redis restarts empty: frames published meanwhile never reached the nodes, so each closes
    // its connections (the clients resume) rather than leave them silently behind.
    redis.restart().await;
    for ws in [&mut doctor, &mut patient] {
        while ws.try_next().await.is_some() {}
    }
    let (doctor_seq, patient_seq) = (doctor.last_seq, patient.last_seq);
    // Until each node's Redis connection is back, a join is refused (`internal`); clients retry.
    let (mut doctor, joined) = join_when_taken(&a.ws_url(), &visit.doctor_token, doctor_seq).await;
    assert_eq!(joined["resumed"], false, "the room was in Redis: {joined}");
    assert_eq!(joined["chat_history"][0]["text"], "Before the restart", "chat is in the database");
    let b_url = format!("ws://127.0.0.1:{}/api/video-call/ws", b.port);
    let (mut patient, _) = join_when_taken(&b_url, &visit.patient_token, patient_seq).await;
    patient.expect("admitted").await;
    patient.expect("peer-joined").await;
    assert_eq!(doctor.expect("peer-joined").await["make_offer"], true);
    doctor.send(chat(2, "After the restart")).await;
    assert_eq!(chat_text(&mut patient).await, "After the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_work_of_each_room_input_is_timed_on_the_metrics() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes(&db, &redis).await;
    let (mut doctor, mut patient) = doctor_on_a_patient_on_b(&a, &b, &visit).await;
    doctor.send(json!({"type": "offer", "sdp": "v=0 offer"})).await;
    patient.expect("admitted").await;
    patient.expect("peer-joined").await;
    assert_eq!(patient.expect("offer").await["sdp"], "v=0 offer");

    // Node B owns the room (the patient joined there first). Node A tried to claim it for the
    // doctor's join, found B's, and forwarded B its two inputs (the join and the offer); it
    // committed none itself.
    let metrics = a.metrics().await;
    for (operation, trips) in [("claim", 1), ("forward", 2), ("commit", 0)] {
        assert_eq!(redis_trips(&metrics, operation), trips, "{operation} in\n{metrics}");
    }
    assert!(metrics.contains("televisit_redis_seconds_count{operation=\"heartbeat\"}"), "{metrics}");
}

/// The appointments in every node's record of the rooms it has connections in.
async fn recorded_rooms(redis: &Redis) -> Vec<String> {
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("televisit:node:*:rooms").query_async(&mut connection).await.unwrap();
    let mut rooms = Vec::new();
    for key in keys {
        let members: Vec<String> =
            redis::cmd("SMEMBERS").arg(key).query_async(&mut connection).await.unwrap();
        rooms.extend(members);
    }
    rooms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_records_only_the_rooms_it_has_connections_in() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes(&db, &redis).await;
    let (mut doctor, mut patient) = doctor_on_a_patient_on_b(&a, &b, &visit).await;
    let appointment = visit.appointment_id.clone();
    assert_eq!(recorded_rooms(&redis).await, [appointment.clone(), appointment.clone()], "A's and B's");

    // The patient leaves from node B: only node A still has a connection in the room.
    patient.expect("admitted").await;
    patient.send(json!({"type": "leave"})).await;
    doctor.expect("peer-left").await;
    assert_eq!(recorded_rooms(&redis).await, [appointment], "A's only");

    // The call ends: no node keeps it.
    doctor.send(json!({"type": "end-call"})).await;
    doctor.expect("call-ended").await;
    assert_eq!(recorded_rooms(&redis).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_stored_by_a_node_that_died_before_its_room_heard_of_it_is_stored_once_when_resent() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes(&db, &redis).await;
    let (mut doctor, mut patient) = doctor_on_a_patient_on_b(&a, &b, &visit).await;
    patient.expect("admitted").await;
    patient.expect("peer-joined").await;

    // A node stored the patient's message 1 and died before it committed the room: the database
    // has it; the room, the doctor and the patient's app (no ack) do not.
    let store = &a.server.state.store;
    let from = televisit_protocol::Role::Patient;
    let text = "My chest hurts".to_owned();
    let lost = NewChat { appointment_id: visit.appointment_id.clone(), from, text, client_seq: Some(1) };
    store.add_chats(&[lost], a.clock.now_ms()).await.unwrap();

    // The app sends it again: it is relayed and acknowledged once, and stored once.
    patient.send(chat(1, "My chest hurts")).await;
    assert_eq!(chat_text(&mut patient).await, "My chest hurts");
    assert_eq!(patient.expect("ack").await["client_seq"], 1);
    assert_eq!(chat_text(&mut doctor).await, "My chest hurts");
    patient.send(chat(2, "Since this morning")).await;
    assert_eq!(chat_text(&mut doctor).await, "Since this morning");
    let history: Vec<String> =
        store.chat_history(&visit.appointment_id).await.unwrap().into_iter().map(|m| m.text).collect();
    assert_eq!(history, ["My chest hurts", "Since this morning"]);
}

/// The next `chat` frame's text, after any frames telling of the peer's presence.
async fn chat_after_presence(ws: &mut Ws) -> String {
    loop {
        let frame = ws.next().await;
        match frame["type"].as_str() {
            Some("chat") => return frame["text"].as_str().unwrap().to_owned(),
            Some("waiting" | "admitted" | "peer-joined" | "peer-left") => continue,
            _ => panic!("expected chat, got {frame}"),
        }
    }
}

/// A node that lives (it beats) but answers nobody, holding a room it took over.
struct SilentOwner {
    connection: redis::aio::MultiplexedConnection,
    keys: [String; 2],
}

impl SilentOwner {
    async fn takes(redis: &Redis, appointment_id: &str) -> SilentOwner {
        let client = redis::Client::open(redis.url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let node = 7;
        let keys = [format!("televisit:node:{node}:alive"), format!("televisit:room:{appointment_id}:owner")];
        for key in &keys {
            let set = redis::cmd("SET").arg(key).arg(node).arg("PX").arg(20_000).clone();
            set.query_async::<()>(&mut connection).await.unwrap();
        }
        SilentOwner { connection, keys }
    }

    /// It dies and its keys with it: the next node with an input claims the room.
    async fn dies(mut self) {
        redis::cmd("DEL").arg(&self.keys).query_async::<()>(&mut self.connection).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_the_shared_room_could_not_take_closes_the_connection_and_is_stored_once_when_resent() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes(&db, &redis).await;
    let (mut doctor, mut patient) = doctor_on_a_patient_on_b(&a, &b, &visit).await;
    patient.expect("admitted").await;
    patient.expect("peer-joined").await;

    // Node B owns the room (the patient joined there first). Another node that lives takes it
    // over (it thought B dead, say) and answers nobody: B cannot commit the patient's chat.
    let silent_owner = SilentOwner::takes(&redis, &visit.appointment_id).await;
    patient.send(chat(1, "Can you hear me?")).await;

    // The patient's app is told and disconnected, not left believing the message is on its way.
    let frames = patient.until_closed().await;
    let error =
        frames.iter().find(|f| f["type"] == "error").unwrap_or_else(|| panic!("no error frame: {frames:?}"));
    assert_eq!(error["code"], "internal", "{error}");
    assert!(!frames.iter().any(|f| f["type"] == "ack"), "{frames:?}");
    // The doctor's chat on node A goes to B, which no longer owns the room, then to the node that
    // does, which beats but never answers: after 5 s the doctor's app is told and disconnected.
    doctor.send(chat(1, "Are you there?")).await;
    let error = next_frame_within_10_s(&mut doctor).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("internal")),
        "{error}"
    );

    // Once that node is gone both apps resume and send again what was not acknowledged: each
    // message is acknowledged, relayed and stored once.
    silent_owner.dies().await;
    let (mut patient, joined) = join_when_taken(
        &format!("ws://127.0.0.1:{}/api/video-call/ws", b.port),
        &visit.patient_token,
        patient.last_seq,
    )
    .await;
    assert_eq!(joined["last_client_seq"], 0, "{joined}");
    let (mut doctor, joined) = join_when_taken(&a.ws_url(), &visit.doctor_token, doctor.last_seq).await;
    assert_eq!(joined["last_client_seq"], 0, "{joined}");
    // (Each may first hear of the other's coming and going: their drops were applied once the
    // silent node was gone.)
    patient.send(chat(1, "Can you hear me?")).await;
    assert_eq!(chat_after_presence(&mut patient).await, "Can you hear me?");
    assert_eq!(patient.expect("ack").await["client_seq"], 1);
    assert_eq!(chat_after_presence(&mut doctor).await, "Can you hear me?");
    doctor.send(chat(1, "Are you there?")).await;
    assert_eq!(chat_text(&mut doctor).await, "Are you there?");
    assert_eq!(doctor.expect("ack").await["client_seq"], 1);
    assert_eq!(chat_after_presence(&mut patient).await, "Are you there?");
    let history: Vec<String> = a
        .server
        .state
        .store
        .chat_history(&visit.appointment_id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(history, ["Can you hear me?", "Are you there?"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_chat_the_room_could_not_take_on_another_node_is_refused_and_stored_once() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes(&db, &redis).await;
    let mut patient = waiting_by_http(b.port, &visit).await;
    let mut doctor = a.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    doctor.expect("peer-joined").await;
    assert_eq!(patient.types_until("peer-joined").await, ["admitted", "peer-joined"]);

    // Node B owns the room (the patient joined there first); another node that lives takes it
    // over and answers nobody. The patient's chat lands on node A, which forwards it to B, which
    // cannot commit it: the post is refused, not lost.
    let silent_owner = SilentOwner::takes(&redis, &visit.appointment_id).await;
    patient.signals = vec![a.url("/api/video-call/signal")];
    let (status, body) = patient.post(chat(1, "Can you hear me?")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (500, Some("internal")), "{body}");

    // Once the room is free the client joins again and resends: relayed and stored once.
    silent_owner.dies().await;
    let resume = json!({"type": "join", "resume": {"last_seq": patient.last_seq}});
    assert_eq!(patient.post(resume).await.0, 200);
    patient.cursor = 0;
    let joined = patient.types_until("joined").await;
    assert_eq!(joined, ["joined"]);
    assert_eq!(patient.received.last().unwrap()["last_client_seq"], 0);
    assert_eq!(patient.post(chat(1, "Can you hear me?")).await.0, 200);
    assert_eq!(chat_text(&mut doctor).await, "Can you hear me?");
    patient.types_until("ack").await;
    assert_eq!(patient.chat_texts(), ["Can you hear me?"]);
    let stored = a.server.state.store.chat_history(&visit.appointment_id).await.unwrap();
    assert_eq!(stored.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["Can you hear me?"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_session_polled_only_on_another_node_stays_until_the_client_stops_polling() {
    let redis = Redis::start().await;
    let db = TempDb::new();
    let (a, b, visit) = two_nodes_idle_after(&db, &redis, 2).await;
    let mut patient = waiting_by_http(b.port, &visit).await;
    let present = || async {
        let path = format!("/api/appointments/{}/video-call/status", visit.appointment_id);
        a.call("GET", &path, &visit.doctor_api_token).await.1["patient_present"].clone()
    };

    // Node B holds the session; the client polls only node A, for longer than the idle timeout.
    patient.signals = vec![a.url("/api/video-call/signal")];
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let (status, frames) = patient.poll().await;
        assert_eq!(status, 200, "{frames:?}");
    }
    assert_eq!(present().await, true, "B ended a session its client kept polling on A");

    // The client stops polling: the session ends after the idle timeout (and the grace period).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(present().await, false, "the session outlived its client");
    let (status, body) = patient.poll().await;
    assert_eq!((status, body[0]["error"]["code"].as_str()), (400, Some("not_joined")), "{body:?}");
}
