//! Bad frames, floods, drops, takeovers, restarts and the HTTP fallback: the call survives them.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use televisit_protocol::MAX_FRAME_BYTES;
use televisit_server::secrets::Clock;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn malformed_unknown_and_oversized_frames_get_an_error_and_the_connection_goes_on() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    let cases = [
        ("{not json".to_owned(), "malformed"),
        ("[1,2,3]".to_owned(), "malformed"),
        (r#"{"type":"teleport"}"#.to_owned(), "unknown_type"),
        (r#"{"type":"offer"}"#.to_owned(), "invalid_frame"),
        (json!({"type": "chat", "text": "x".repeat(MAX_FRAME_BYTES)}).to_string(), "frame_too_large"),
    ];
    for (text, code) in cases {
        patient.send_text(text).await;
        let error = patient.expect("error").await;
        assert_eq!(error["code"], code);
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    doctor.expect_silence(Duration::from_millis(100)).await;
    patient.send(json!({"type": "ping"})).await;
    patient.expect("pong").await;
    patient.send(json!({"type": "answer", "sdp": "v=0 still works"})).await;
    assert_eq!(doctor.expect("answer").await["sdp"], "v=0 still works");
    // The server is fine for others too.
    assert_eq!(server.http.get(server.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_flood_of_frames_is_rate_limited_without_dropping_the_connection() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| {
        c.frames_per_second = 5;
        c.frame_burst = 10;
    })
    .await;
    let visit = server.started_visit().await;
    let (_doctor, mut patient) = both_in_room(&server, &visit).await;
    for _ in 0..30 {
        patient.send(json!({"type": "ping"})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..30 {
        match patient.next().await["type"].as_str().unwrap() {
            "pong" => pongs += 1,
            "error" => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!((10..=12).contains(&pongs), "the burst passes: {pongs}");
    assert_eq!(pongs + limited, 30);
    tokio::time::sleep(Duration::from_millis(400)).await;
    patient.send(json!({"type": "ping"})).await;
    patient.expect("pong").await;
    let metrics = server.metrics().await;
    assert!(metrics.contains("televisit_refusals_total{code=\"rate_limited\"}"), "{metrics}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_a_reason() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| c.idle_timeout_seconds = 1).await;
    let visit = server.started_visit().await;
    let mut patient = server.join(&visit.patient_token).await;
    let joined = patient.expect("joined").await;
    assert_eq!(joined["idle_timeout_seconds"], 1);
    let frames = patient.until_closed().await;
    assert_eq!(frames.last().unwrap()["code"], "idle_timeout");
}

#[tokio::test]
async fn a_dropped_connection_resumes_with_exactly_the_frames_it_missed() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, patient) = both_in_room(&server, &visit).await;
    let last_seq = patient.last_seq;
    drop(patient); // the network goes away
    tokio::time::sleep(Duration::from_millis(100)).await;
    doctor.send(json!({"type": "offer", "sdp": "v=0 restart"})).await;
    doctor.send(json!({"type": "chat", "text": "Can you hear me?"})).await;
    doctor.expect("chat").await;

    let mut patient = Ws::connect(&server.ws_url()).await;
    patient
        .send(json!({"type": "join", "token": visit.patient_token, "resume": {"last_seq": last_seq}}))
        .await;
    let joined = patient.expect("joined").await;
    assert_eq!(joined["resumed"], true);
    let offer = patient.expect("offer").await;
    assert_eq!(offer["seq"].as_u64(), Some(last_seq + 1));
    assert_eq!(patient.expect("chat").await["text"], "Can you hear me?");
    // A resume is not a new arrival: no renegotiation, and the doctor never heard of a departure.
    patient.expect_silence(Duration::from_millis(150)).await;
    doctor.expect_silence(Duration::from_millis(50)).await;

    // A client frame resent after the reconnect is relayed once.
    patient.send(json!({"type": "answer", "sdp": "v=0 a", "seq": 1})).await;
    patient.send(json!({"type": "answer", "sdp": "v=0 a", "seq": 1})).await;
    doctor.expect("answer").await;
    doctor.expect_silence(Duration::from_millis(150)).await;

    // A resume from frames this server never sent (another server's) starts over; the metrics count both.
    drop(patient);
    let mut patient = Ws::connect(&server.ws_url()).await;
    patient
        .send(json!({"type": "join", "token": visit.patient_token, "resume": {"last_seq": 1_000_000}}))
        .await;
    assert_eq!(patient.expect("joined").await["resumed"], false);
    let metrics = server.metrics().await;
    for line in [
        "televisit_signaling_resumes_total{outcome=\"resumed\"} 1",
        "televisit_signaling_resumes_total{outcome=\"started_over\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

/// Reads (and so answers the server's pings) for `wait`; no frame may arrive.
async fn read_quietly(ws: &mut Ws, wait: Duration) {
    let until = tokio::time::Instant::now() + wait;
    while let Ok(message) = tokio::time::timeout_at(until, ws.stream.next()).await {
        match message {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected no frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn frames_a_client_has_received_are_let_go_and_a_resume_still_gets_exactly_the_rest() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    let candidate = |n: usize| json!({"type": "ice-candidate", "candidate": format!("candidate:{n} 1 udp 1 127.0.0.1 9 typ host"), "sdp_mid": "0", "sdp_m_line_index": 0});
    for n in 0..40 {
        doctor.send(candidate(n)).await;
    }
    for _ in 0..40 {
        patient.expect("ice-candidate").await;
    }
    let kept = metric(&server.metrics().await, "televisit_signaling_replay_bytes");
    assert!(kept > 40.0 * 60.0, "the candidates are kept until the patient has them: {kept} bytes");

    // The patient's WebSocket answers the server's next ping: the room lets its frames go.
    read_quietly(&mut patient, Duration::from_millis(2500)).await;
    read_quietly(&mut doctor, Duration::from_millis(100)).await;
    let after = metric(&server.metrics().await, "televisit_signaling_replay_bytes");
    assert!(after < kept / 4.0, "{after} of {kept} bytes still kept after the patient confirmed them");

    // Three more while the patient's network is going away (it reads none of them), and a
    // pong it never got a ping for, which must not make the room let them go.
    let last_seq = patient.last_seq;
    for n in 40..43 {
        doctor.send(candidate(n)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let forged = u64::MAX.to_be_bytes().to_vec();
    patient.stream.send(Message::Pong(forged.into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(patient);

    let mut patient = Ws::connect(&server.ws_url()).await;
    patient
        .send(json!({"type": "join", "token": visit.patient_token, "resume": {"last_seq": last_seq}}))
        .await;
    assert_eq!(patient.expect("joined").await["resumed"], true);
    for n in 40..43 {
        let frame = patient.expect("ice-candidate").await;
        assert_eq!(frame["candidate"], candidate(n)["candidate"]);
    }
    patient.expect_silence(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn a_drop_without_return_is_announced_to_the_peer_after_the_grace_period() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| c.reconnect_grace_seconds = 1).await;
    let visit = server.started_visit().await;
    let (mut doctor, patient) = both_in_room(&server, &visit).await;
    drop(patient);
    doctor.expect_silence(Duration::from_millis(500)).await;
    let left = doctor.expect("peer-left").await;
    assert_eq!((left["role"].as_str(), left["reason"].as_str()), (Some("patient"), Some("disconnected")));
    let mut back = server.join(&visit.patient_token).await;
    assert_eq!(back.expect("joined").await["resumed"], false);
    assert_eq!(doctor.expect("peer-joined").await["make_offer"], true);
}

#[tokio::test]
async fn a_second_connection_with_the_same_link_replaces_the_first() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut first) = both_in_room(&server, &visit).await;
    let mut second = server.join(&visit.patient_token).await;
    second.expect("joined").await;
    let closing = first.until_closed().await;
    assert_eq!(closing.last().unwrap()["code"], "replaced");
    // The doctor renegotiates with the new connection; frames go to the second only.
    assert_eq!(doctor.expect("peer-joined").await["make_offer"], true);
    doctor.send(json!({"type": "offer", "sdp": "v=0 new"})).await;
    second.expect("admitted").await;
    second.expect("peer-joined").await;
    assert_eq!(second.expect("offer").await["sdp"], "v=0 new");
}

#[tokio::test]
async fn the_server_restarted_mid_call_keeps_status_and_chat_and_both_get_back_in() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    doctor.send(json!({"type": "chat", "text": "Before the restart"})).await;
    doctor.expect("chat").await;
    patient.expect("chat").await;
    server.server.stop().await;
    drop((doctor, patient));

    let server = TestServer::start(&db).await;
    let status = server.status(&visit).await;
    assert_eq!(status["status"], "in_progress");
    let mut patient = server.join(&visit.patient_token).await;
    let joined = patient.expect("joined").await;
    assert_eq!(joined["status"], "in_progress");
    assert_eq!(joined["chat_history"][0]["text"], "Before the restart");
    patient.expect("waiting").await;
    let mut doctor = server.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    assert_eq!(doctor.expect("peer-joined").await["make_offer"], true);
    patient.expect("admitted").await;
    patient.expect("peer-joined").await;
    doctor.send(json!({"type": "offer", "sdp": "v=0 after restart"})).await;
    assert_eq!(patient.expect("offer").await["sdp"], "v=0 after restart");
}

#[tokio::test]
async fn a_patient_behind_a_websocket_blocking_network_uses_the_http_fallback() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let patient = FallbackClient::new(&server, &visit.patient_token);
    // Before join: refused.
    let response = patient.post(json!({"type": "chat", "text": "hi"})).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"]["code"], "not_joined");

    assert_eq!(patient.post(json!({"type": "join"})).await.unwrap().status(), 200);
    let first: serde_json::Value = patient.poll(0).await.unwrap().json().await.unwrap();
    let kinds: Vec<_> = first["frames"].as_array().unwrap().iter().map(|f| f["type"].clone()).collect();
    assert_eq!(kinds, [json!("joined"), json!("waiting")]);
    let cursor = first["cursor"].as_u64().unwrap();

    let mut doctor = server.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    doctor.expect("peer-joined").await;
    doctor.send(json!({"type": "offer", "sdp": "v=0 via http"})).await;
    let mut seen = Vec::new();
    let mut cursor = cursor;
    while !seen.iter().any(|f: &serde_json::Value| f["type"] == "offer") {
        let batch: serde_json::Value = patient.poll(cursor).await.unwrap().json().await.unwrap();
        cursor = batch["cursor"].as_u64().unwrap();
        seen.extend(batch["frames"].as_array().unwrap().iter().cloned());
    }
    let kinds: Vec<_> = seen.iter().map(|f| f["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["admitted", "peer-joined", "offer"]);

    assert_eq!(patient.post(json!({"type": "answer", "sdp": "v=0 from http"})).await.unwrap().status(), 200);
    assert_eq!(doctor.expect("answer").await["sdp"], "v=0 from http");
    let malformed = server
        .http
        .post(&patient.signal)
        .bearer_auth(&visit.patient_token)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.json::<serde_json::Value>().await.unwrap()["error"]["code"], "malformed");
}

#[tokio::test]
async fn an_http_fallback_patient_who_stops_polling_is_dropped_at_the_outbox_bound_and_resumes_with_nothing_lost(
) {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |config| {
        config.frames_per_second = 100_000;
        config.frame_burst = 100_000;
    })
    .await;
    let visit = server.started_visit().await;
    let patient = FallbackClient::new(&server, &visit.patient_token);
    assert_eq!(patient.post(json!({"type": "join"})).await.unwrap().status(), 200);
    let mut doctor = server.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    doctor.expect("peer-joined").await;

    // The patient's app stops polling (a frozen tab) while the doctor sends more than a
    // connection's outbox holds (1024 frames).
    const SENT: usize = 1200;
    for n in 0..SENT {
        let candidate = format!("candidate:{n} 1 udp 1 127.0.0.1 9 typ host");
        doctor.send(json!({"type": "ice-candidate", "candidate": candidate, "sdp_mid": "0", "sdp_m_line_index": 0})).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // It polls again: it gets what its mailbox kept, then the session is over (`not_joined`).
    let (mut received, mut last_seq, mut cursor) = (Vec::new(), 0, 0);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let answer = patient.poll(cursor).await.unwrap();
            if answer.status() != 200 {
                return answer.json::<serde_json::Value>().await.unwrap();
            }
            let batch: serde_json::Value = answer.json().await.unwrap();
            cursor = batch["cursor"].as_u64().unwrap();
            for frame in batch["frames"].as_array().unwrap() {
                last_seq = frame["seq"].as_u64().unwrap_or(last_seq);
                if frame["type"] == "ice-candidate" {
                    received.push(frame["candidate"].as_str().unwrap().to_owned());
                }
            }
        }
    })
    .await
    .expect("the session of a client that stopped polling ends");
    assert_eq!(ended["error"]["code"], "not_joined", "{ended}");
    assert!(received.len() < SENT, "the mailbox stopped at its bound: {} frames", received.len());

    // It joins again with the last seq it saw: the room replays exactly what it missed.
    assert_eq!(
        patient.post(json!({"type": "join", "resume": {"last_seq": last_seq}})).await.unwrap().status(),
        200
    );
    let mut cursor = 0;
    while received.len() < SENT {
        let batch: serde_json::Value = patient.poll(cursor).await.unwrap().json().await.unwrap();
        cursor = batch["cursor"].as_u64().unwrap();
        let frames = batch["frames"].as_array().unwrap();
        assert!(!frames.is_empty(), "the rest arrives; got {} of {SENT}", received.len());
        for frame in frames {
            if frame["type"] == "joined" {
                assert_eq!(frame["resumed"], true, "{frame}");
            }
            if frame["type"] == "ice-candidate" {
                received.push(frame["candidate"].as_str().unwrap().to_owned());
            }
        }
    }
    let expected: Vec<String> =
        (0..SENT).map(|n| format!("candidate:{n} 1 udp 1 127.0.0.1 9 typ host")).collect();
    assert_eq!(received, expected, "every candidate once, in order");
}

#[tokio::test]
async fn an_http_fallback_patient_still_fetches_the_call_end_after_the_call_ended() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let patient = FallbackClient::new(&server, &visit.patient_token);
    assert_eq!(patient.post(json!({"type": "join"})).await.unwrap().status(), 200);
    let mut doctor = server.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    doctor.expect("peer-joined").await;
    doctor.send(json!({"type": "end-call"})).await;
    assert!(doctor.until_closed().await.iter().any(|f| f["type"] == "call-ended"));

    // The call has ended in the database, the patient has not polled yet: a frame it had in
    // flight is taken, not refused, and its next poll brings who ended the call.
    let late = patient.post(json!({"type": "quality", "level": "good"})).await.unwrap();
    assert_eq!(late.status(), 200, "{:?}", late.text().await);
    let mut frames = Vec::new();
    let mut cursor = 0;
    while !frames.iter().any(|f: &serde_json::Value| f["type"] == "call-ended") {
        let answer = patient.poll(cursor).await.unwrap();
        assert_eq!(answer.status(), 200);
        let batch: serde_json::Value = answer.json().await.unwrap();
        assert!(!batch["frames"].as_array().unwrap().is_empty(), "closed before the call's end was fetched");
        cursor = batch["cursor"].as_u64().unwrap();
        frames.extend(batch["frames"].as_array().unwrap().iter().cloned());
    }
    let ended = frames.iter().find(|f| f["type"] == "call-ended").unwrap();
    assert_eq!(ended["ended_by"], "doctor");

    // Once the session is gone, the token is checked again: the call has ended.
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let answer = patient.poll(cursor).await.unwrap();
            if answer.status() != 200 {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the closed session is forgotten");
    assert_eq!(refused.status(), 410);
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["error"]["code"], "call_ended");
}

#[tokio::test]
async fn health_and_metrics_report_calls_connections_and_relayed_frames() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    server.appointment().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    doctor.send(json!({"type": "offer", "sdp": "v=0"})).await;
    patient.expect("offer").await;
    let response = server.http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let metrics = server.metrics().await;
    for line in [
        "televisit_calls{status=\"in_progress\"} 1",
        "televisit_calls{status=\"not_started\"} 1",
        "televisit_signaling_connections_open 2",
        "televisit_signaling_frames_relayed_total 1",
        "televisit_signaling_frames_received_total{type=\"offer\"} 1",
        "televisit_signaling_rooms 1",
        // Both joins read the chat history and wrote the audit log.
        "televisit_db_seconds_count{operation=\"chat_history\"} 2",
        "televisit_db_seconds_count{operation=\"audit\"} 2",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_graceful_leave_is_a_normal_close_without_an_error_frame() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    patient.send(json!({"type": "leave"})).await;
    let mut frames = Vec::new();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), patient.stream.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => frames.push(text.to_string()),
            Some(Ok(Message::Close(close))) => break close,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert!(frames.iter().all(|f| !f.contains("\"error\"")), "no error frame on leave: {frames:?}");
    let close = close.expect("a close code");
    assert_eq!(u16::from(close.code), 1000, "{close:?}");
    let left = doctor.expect("peer-left").await;
    assert_eq!((left["role"].as_str(), left["reason"].as_str()), (Some("patient"), Some("left")));
}

/// A participant whose app stops reading (frozen, backgrounded) while the other keeps sending:
/// once its queue on the server is full, the server lets go of the connection and closes it, so
/// the app reconnects when it wakes up instead of sitting on an open socket that gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_participant_that_stops_reading_is_closed_and_gets_back_in() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |config| {
        config.frames_per_second = 1_000_000;
        config.frame_burst = 1_000_000;
    })
    .await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;

    // The doctor's app reads nothing while the patient sends ~100 MB of offers (36 KB each): more than the
    // sockets' buffers and the server's queue for the doctor hold.
    // Each "a=x\r\n" line is 9 characters of JSON.
    let sdp = format!("v=0\r\n{}", "a=x\r\n".repeat((MAX_FRAME_BYTES - 200) / 9));
    let offer = json!({"type": "offer", "sdp": sdp}).to_string();
    for _ in 0..3000 {
        patient.send_text(offer.clone()).await;
    }

    // When the doctor's app reads again, it gets what was queued and then the close.
    let queued = tokio::time::timeout(Duration::from_secs(60), doctor.until_closed())
        .await
        .expect("the server closes the connection it let go of");
    assert!(!queued.is_empty() && queued.len() < 3000, "{} of 3000 offers before the close", queued.len());

    // The app reconnects and is back in the call.
    let mut back = server.join(&visit.doctor_token).await;
    back.expect("joined").await;
    patient.send(json!({"type": "media-state", "audio": true, "video": false})).await;
    loop {
        let frame = back.next().await;
        if frame["type"] == "media-state" {
            assert_eq!(frame["video"], false, "{frame}");
            break;
        }
    }
}

/// Rooms do not pile up in memory: a room everyone left (or that nobody returned to within the
/// resume window) leaves the hub, and a later join gets a fresh one from the stored call.
#[tokio::test]
async fn a_room_everyone_left_leaves_the_hub_and_a_later_join_starts_over() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    patient.send(json!({"type": "chat", "seq": 1, "text": "before leaving"})).await;
    patient.expect("chat").await;
    patient.expect("ack").await;
    for ws in [&mut patient, &mut doctor] {
        ws.send(json!({"type": "leave"})).await;
        ws.until_closed().await;
    }
    // The hub lets the room go (and counts the connections closed) once the leave is handled.
    let mut waited = 0;
    let gone = |metrics: String| {
        metrics.contains("televisit_signaling_rooms 0")
            && metrics.contains("televisit_signaling_connections_open 0")
    };
    while !gone(server.metrics().await) {
        assert!(waited < 50, "the room stays in memory:\n{}", server.metrics().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }

    let mut patient = server.join(&visit.patient_token).await;
    let joined = patient.expect("joined").await;
    assert_eq!((joined["resumed"].as_bool(), joined["status"].as_str()), (Some(false), Some("in_progress")));
    assert_eq!(joined["chat_history"][0]["text"], "before leaving");
    patient.expect("waiting").await;
    let mut doctor = server.join(&visit.doctor_token).await;
    doctor.expect("joined").await;
    assert_eq!(doctor.expect("peer-joined").await["make_offer"], true);
    assert!(server.metrics().await.contains("televisit_signaling_rooms 1"));
}

/// A number from the metrics text (`name` with its labels, then the value).
fn metric(metrics: &str, name: &str) -> f64 {
    let line = metrics.lines().find(|line| line.starts_with(&format!("{name} ")));
    line.and_then(|line| line.rsplit(' ').next()?.parse().ok()).unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test]
async fn a_room_both_left_without_a_goodbye_is_let_go_when_the_resume_window_ends() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |config| {
        config.reconnect_grace_seconds = 1;
        config.resume_window_seconds = 3;
    })
    .await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    doctor.send(json!({"type": "offer", "sdp": "v=0 kept for a resume"})).await;
    patient.expect("offer").await;
    patient.send(json!({"type": "chat", "seq": 1, "text": "Is the picture clear?"})).await;
    patient.expect("chat").await;
    patient.expect("ack").await;
    doctor.expect("chat").await;
    let last_seq = patient.last_seq;
    drop((doctor, patient)); // both networks go away
    let dropped = std::time::Instant::now();

    // Past the grace period, within the window: the room and its frames are still kept.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let metrics = server.metrics().await;
    assert_eq!(metric(&metrics, "televisit_signaling_rooms"), 1.0, "{metrics}");
    assert!(metric(&metrics, "televisit_signaling_replay_bytes") > 0.0, "{metrics}");

    // When the window ends the room leaves the hub with its frames.
    loop {
        let metrics = server.metrics().await;
        if metric(&metrics, "televisit_signaling_rooms") == 0.0 {
            assert_eq!(metric(&metrics, "televisit_signaling_replay_bytes"), 0.0, "{metrics}");
            break;
        }
        assert!(dropped.elapsed() < Duration::from_secs(10), "the room is kept for good:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped.elapsed() >= Duration::from_secs(3), "let go before the window ended");

    // A resume after the window starts over in a fresh room, which knows the patient's stored
    // chat: an app that numbers from 1 again renumbers above it rather than reuse its number.
    let mut patient = Ws::connect(&server.ws_url()).await;
    patient
        .send(json!({"type": "join", "token": visit.patient_token, "resume": {"last_seq": last_seq}}))
        .await;
    let joined = patient.expect("joined").await;
    assert_eq!((joined["resumed"].as_bool(), joined["last_client_seq"].as_u64()), (Some(false), Some(1)));
}
