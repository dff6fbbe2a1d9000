//! The database under load, on a real SQLite file: many doctors starting, rejoining and ending
//! visits at once never see an error for contention (503 `server_busy` with `Retry-After` only
//! when another process holds the database for too long), and a chat frame is acknowledged only
//! once stored, so a burst cut off mid-flight loses nothing acknowledged and its resent rest is
//! stored once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use televisit_protocol::CallStatus;
use televisit_server::secrets::Clock;
use tokio_tungstenite::tungstenite::Message;

const VISITS: usize = 64;

/// One doctor with `n` appointments (not started), set up through the clinic API all at once.
async fn appointments(server: &TestServer, n: usize) -> (String, Vec<String>) {
    let doctor = server
        .clinic("/api/clinic/doctors", json!({"display_name": DOCTOR_NAME, "email": "load@clinic.test"}))
        .await;
    let doctor = &doctor;
    let ids = join_all((0..n).map(|i| async move {
        let patient =
            server.clinic("/api/clinic/patients", json!({"display_name": format!("Patient {i}")})).await;
        let body = json!({"doctor_id": doctor["id"], "patient_id": patient["id"], "scheduled_at_ms": 0});
        server.clinic("/api/clinic/appointments", body).await["id"].as_str().unwrap().to_owned()
    }))
    .await;
    (doctor["api_token"].as_str().unwrap().to_owned(), ids)
}

/// `POST /api/appointments/{id}/video-call/{action}` for every id at once: (status, body) each.
async fn all_at_once(server: &TestServer, ids: &[String], action: &str, bearer: &str) -> Vec<(u16, Value)> {
    join_all(ids.iter().map(|id| async move {
        server.call("POST", &format!("/api/appointments/{id}/video-call/{action}"), bearer).await
    }))
    .await
}

fn assert_all_ok(answers: &[(u16, Value)], what: &str) {
    let failed: Vec<_> = answers.iter().filter(|(status, _)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} failed, first: {:?}",
        failed.len(),
        answers.len(),
        failed[0]
    );
}

async fn count_audit(server: &TestServer, id: &str, action: &str) -> usize {
    server.audit(Some(id)).await.iter().filter(|e| e.action == action).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_visits_started_joined_rejoined_and_ended_at_once_never_fail() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    // Calls already in progress chat meanwhile: their messages are stored all along.
    let busy_visit = server.started_visit().await;
    let (_busy_doctor, mut busy_patient) = both_in_room(&server, &busy_visit).await;
    let chatter = tokio::spawn(async move {
        for seq in 1.. {
            busy_patient.send(json!({"type": "chat", "seq": seq, "text": format!("meanwhile {seq}")})).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    // Each visit is set up and started at once, as a clinic's morning would: the starts contend
    // with each other and with the other visits' set-up.
    let doctor = server
        .clinic("/api/clinic/doctors", json!({"display_name": DOCTOR_NAME, "email": "load@clinic.test"}))
        .await;
    let doctor_api_token = doctor["api_token"].as_str().unwrap();
    let (ids, started): (Vec<String>, Vec<(u16, Value)>) = join_all((0..VISITS).map(|i| {
        let (server, doctor) = (&server, &doctor);
        async move {
            let patient =
                server.clinic("/api/clinic/patients", json!({"display_name": format!("Patient {i}")})).await;
            let body = json!({"doctor_id": doctor["id"], "patient_id": patient["id"], "scheduled_at_ms": 0});
            let id = server.clinic("/api/clinic/appointments", body).await["id"].as_str().unwrap().to_owned();
            let path = format!("/api/appointments/{id}/video-call/start");
            let answer = server.call("POST", &path, doctor_api_token).await;
            (id, answer)
        }
    }))
    .await
    .into_iter()
    .unzip();
    assert_all_ok(&started, "start");
    chatter.abort();
    let store = &server.server.state.store;
    for id in &ids {
        let appointment = store.appointment(id).await.unwrap().unwrap();
        assert_eq!(appointment.status, CallStatus::Waiting);
        assert!(appointment.waiting_since_ms.is_some());
        assert_eq!(count_audit(&server, id, "start").await, 1, "started exactly once");
    }

    // Every doctor and patient joins at once (each join writes the audit log, the pairing the status).
    let sockets = join_all(started.iter().flat_map(|(_, body)| {
        ["doctor_link", "patient_link"].map(|key| {
            let token = token_of(body[key].as_str().unwrap());
            let server = &server;
            async move {
                let mut ws = server.join(&token).await;
                ws.expect("joined").await;
                ws
            }
        })
    }))
    .await;
    // Rejoin links (the doctor's app reopened) while everyone is in, all at once.
    assert_all_ok(&all_at_once(&server, &ids, "rejoin", doctor_api_token).await, "rejoin");
    for id in &ids {
        assert_eq!(store.appointment(id).await.unwrap().unwrap().status, CallStatus::InProgress);
        assert_eq!(count_audit(&server, id, "join").await, 2);
    }

    assert_all_ok(&all_at_once(&server, &ids, "end", doctor_api_token).await, "end");
    for id in &ids {
        assert_eq!(store.appointment(id).await.unwrap().unwrap().status, CallStatus::Ended);
        assert_eq!(count_audit(&server, id, "end").await, 1, "ended exactly once");
    }
    for mut ws in sockets {
        let frames = ws.until_closed().await;
        assert!(frames.iter().any(|f| f["type"] == "call-ended"), "{frames:?}");
    }
    assert_eq!(
        server.server.state.hub.room_count(),
        1,
        "ended rooms leave the hub (the chatting call stays)"
    );

    // Ending or starting again, all at once: the call's state answers, never the database.
    for action in ["end", "start"] {
        for (status, body) in all_at_once(&server, &ids, action, doctor_api_token).await {
            assert_eq!((status, body["error"]["code"].as_str()), (410, Some("call_ended")), "{action}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_held_by_another_process_beyond_the_busy_timeout_answers_503_with_retry_after() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let (doctor_api_token, ids) = appointments(&server, 1).await;
    let path = format!("/api/appointments/{}/video-call/start", ids[0]);

    // Another process (the CLI, a backup, a migration) holds the write lock for longer than the
    // server waits: SQLite's database lock, or PostgreSQL's lock on the table.
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut other = sqlx::AnyConnection::connect(&db.url()).await.unwrap();
    let lock = if db.is_postgres() {
        "BEGIN; LOCK TABLE appointments IN ACCESS EXCLUSIVE MODE"
    } else {
        "BEGIN IMMEDIATE"
    };
    sqlx::raw_sql(lock).execute(&mut other).await.unwrap();
    let response = server.http.post(server.url(&path)).bearer_auth(&doctor_api_token).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "server_busy");
    assert!(body["error"]["message"].as_str().unwrap().contains("try again"));

    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let (status, _) = server.call("POST", &path, &doctor_api_token).await;
    assert_eq!(status, 200, "once the lock is free, the retry succeeds");
}

const BURST: u64 = 400;

fn burst_text(seq: u64) -> String {
    format!("burst message {seq}")
}

/// Each stored text of the visit's chat, with how often it is stored.
async fn stored_counts(server: &TestServer, appointment_id: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for message in server.server.state.store.chat_history(appointment_id).await.unwrap() {
        *counts.entry(message.text).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chat_burst_cut_off_mid_flight_loses_nothing_acknowledged_and_the_rest_is_stored_once() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| {
        c.frames_per_second = 100_000;
        c.frame_burst = 100_000;
    })
    .await;
    let visit = server.started_visit().await;
    let (_doctor, patient) = both_in_room(&server, &visit).await;
    let Ws { stream, .. } = patient;
    let (mut sink, mut frames) = stream.split();

    // Send the burst while reading acks; cut the connection (TCP reset, so whatever the server has
    // not read yet is gone) after half the burst is out.
    let mut acked = BTreeSet::new();
    let mut seq = 0;
    while seq < BURST / 2 {
        seq += 1;
        let frame = json!({"type": "chat", "seq": seq, "text": burst_text(seq)});
        sink.send(Message::Text(frame.to_string().into())).await.unwrap();
        while let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_micros(1), frames.next()).await
        {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "ack" {
                let client_seq = frame["client_seq"].as_u64().unwrap();
                // Acknowledged means stored, at the moment the ack arrives.
                let stored = stored_counts(&server, &visit.appointment_id).await;
                assert_eq!(stored.get(&burst_text(client_seq)), Some(&1), "ack {client_seq} before storage");
                acked.insert(client_seq);
            }
        }
    }
    let socket = frames.reunite(sink).unwrap();
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_zero_linger().unwrap();
    }
    drop(socket);
    assert!(!acked.is_empty(), "some of the burst was acknowledged before the cut");

    // Back in: everything the server counts as handled is stored and comes back in the history;
    // that includes every acknowledged frame.
    let mut patient = server.join(&visit.patient_token).await;
    let joined = patient.expect("joined").await;
    let handled = joined["last_client_seq"].as_u64().unwrap();
    assert!(handled >= *acked.last().unwrap(), "handled {handled}, acked {acked:?}");
    let history: BTreeSet<String> = joined["chat_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    let stored = stored_counts(&server, &visit.appointment_id).await;
    for seq in 1..=handled {
        assert!(history.contains(&burst_text(seq)), "{seq} of {handled} not in the history");
        assert_eq!(stored.get(&burst_text(seq)), Some(&1), "{seq} stored once");
    }

    // The client resends the rest, and the other half of the burst: each is acknowledged once stored.
    let mut waiting: BTreeSet<u64> = (handled + 1..=BURST).collect();
    for seq in handled + 1..=BURST {
        patient.send(json!({"type": "chat", "seq": seq, "text": burst_text(seq)})).await;
    }
    while !waiting.is_empty() {
        let frame = patient.next().await;
        if frame["type"] == "ack" {
            waiting.remove(&frame["client_seq"].as_u64().unwrap());
        }
    }
    let stored = stored_counts(&server, &visit.appointment_id).await;
    for seq in 1..=BURST {
        assert_eq!(stored.get(&burst_text(seq)), Some(&1), "{seq} stored exactly once");
    }
    assert_eq!(stored.len() as u64, BURST);
}
