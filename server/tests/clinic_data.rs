//! The clinic's data over time: retention (chat is health data; tokens, sessions and the audit
//! log are kept only as long as the settings say), the audit log read through the clinic API,
//! and a visit's summary. Runs on SQLite and, in `scripts/test`, on PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use televisit_server::retention::{self, Retention};
use televisit_server::secrets::Clock;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A visit whose doctor and patient joined, chatted once, reported its quality once and hung up.
async fn visit_with_chat(server: &TestServer, text: &str) -> Visit {
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(server, &visit).await;
    patient.send(json!({"type": "quality", "level": "good", "rtt_ms": 80.0})).await;
    doctor.expect("quality").await;
    patient.send(json!({"type": "chat", "text": text})).await;
    doctor.expect("chat").await;
    patient.expect("chat").await;
    let path = format!("/api/appointments/{}/video-call/end", visit.appointment_id);
    assert_eq!(server.call("POST", &path, &visit.doctor_api_token).await.0, 200);
    visit
}

/// The levels of a visit's quality reports in its summary, oldest first.
async fn quality_levels(server: &TestServer, visit: &Visit) -> Vec<String> {
    let path = format!("/api/clinic/appointments/{}/summary", visit.appointment_id);
    let (status, summary) = server.call("GET", &path, CLINIC_KEY).await;
    assert_eq!(status, 200, "{summary}");
    let reports = summary["quality"].as_array().unwrap();
    reports.iter().map(|report| report["level"].as_str().unwrap().to_owned()).collect()
}

async fn chat_texts(server: &TestServer, visit: &Visit) -> Vec<String> {
    let history = server.server.state.store.chat_history(&visit.appointment_id).await.unwrap();
    history.into_iter().map(|message| message.text).collect()
}

/// The error code a join with `token` gets.
async fn join_refusal(server: &TestServer, token: &str) -> String {
    let mut ws = server.join(token).await;
    let error = ws.expect("error").await;
    error["code"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_purge_removes_exactly_what_has_outlived_its_retention() {
    let db = TempDb::new();
    let clock = Clock::default();
    let server = TestServer::start_with(&db, clock.clone(), |config| {
        config.retention = Retention { chat_days: Some(30), token_days: 30, audit_days: Some(365) };
    })
    .await;

    // Day 0: the oldest visit. Day 2: a second one. Both end at once.
    let oldest = visit_with_chat(&server, "The oldest visit's chat").await;
    clock.advance(2 * DAY);
    let newer = visit_with_chat(&server, "The newer visit's chat").await;
    // Day 31: a visit still going on, and a doctor's session that expires in 12 hours.
    clock.advance(29 * DAY);
    let ongoing = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &ongoing).await;
    patient.send(json!({"type": "chat", "text": "Still talking"})).await;
    doctor.expect("chat").await;
    let audit_before = server.audit(None).await.len();

    // Nothing is due yet but the oldest visit: 31 days since it ended, 29 since the newer one.
    let counts = retention::purge_once(&server.server.state).await.unwrap();
    assert_eq!(counts.chat_messages, 1, "only the oldest visit's chat: {counts:?}");
    assert_eq!(counts.quality_reports, 1, "and its quality report: {counts:?}");
    assert!(quality_levels(&server, &oldest).await.is_empty());
    assert_eq!(quality_levels(&server, &newer).await, ["good"]);
    assert_eq!(counts.call_tokens, 2, "the oldest visit's two links: {counts:?}");
    assert_eq!(counts.audit_entries, 0);
    assert!(chat_texts(&server, &oldest).await.is_empty());
    assert_eq!(chat_texts(&server, &newer).await, ["The newer visit's chat"]);
    assert_eq!(chat_texts(&server, &ongoing).await, ["Still talking"]);
    assert_eq!(server.audit(None).await.len(), audit_before, "the audit log keeps a year");
    // The newer visit's old link is still known as a link of an ended call; the oldest one's
    // record is gone, so its link is now simply invalid.
    assert_eq!(join_refusal(&server, &newer.patient_token).await, "call_ended");
    assert_eq!(join_refusal(&server, &oldest.patient_token).await, "invalid_token");
    // The ongoing visit goes on.
    doctor.send(json!({"type": "chat", "text": "Good"})).await;
    patient.expect("chat").await;

    // A second purge at the same time finds nothing.
    let again = retention::purge_once(&server.server.state).await.unwrap();
    assert_eq!(again, Default::default());

    // A year and a day after day 0, the first days' audit entries go, the later ones stay.
    clock.advance((366 - 31) * DAY);
    let counts = retention::purge_once(&server.server.state).await.unwrap();
    let left = server.audit(None).await;
    assert!(counts.audit_entries > 0);
    assert_eq!(left.len() as u64 + counts.audit_entries, audit_before as u64 + 2, "two joins since");
    let year_ago = clock.now_ms() - 365 * DAY.as_millis() as i64;
    assert!(left.iter().all(|entry| entry.at_ms >= year_ago), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_retention_zero_keeps_chat_for_good() {
    let db = TempDb::new();
    let clock = Clock::default();
    let server = TestServer::start_with(&db, clock.clone(), |config| {
        config.retention = Retention { chat_days: None, token_days: 30, audit_days: None };
    })
    .await;
    let visit = visit_with_chat(&server, "Kept").await;
    clock.advance(3650 * DAY);
    let counts = retention::purge_once(&server.server.state).await.unwrap();
    assert_eq!((counts.chat_messages, counts.quality_reports, counts.audit_entries), (0, 0, 0));
    assert_eq!(chat_texts(&server, &visit).await, ["Kept"]);
    assert_eq!(quality_levels(&server, &visit).await, ["good"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_doctor_sessions_are_purged_and_live_ones_kept() {
    let db = TempDb::new();
    let clock = Clock::default();
    let server = TestServer::start_with(&db, clock.clone(), |_| {}).await;
    let store = &server.server.state.store;
    let session = |hours: i64| televisit_server::store::WebSession {
        doctor_id: String::new(),
        csrf_token: "csrf".into(),
        expires_at_ms: clock.now_ms() + hours * 3600 * 1000,
    };
    let (appointment_id, _) = server.appointment().await;
    let doctor_id = store.appointment(&appointment_id).await.unwrap().unwrap().doctor_id;
    for (hash, hours) in [("expires-in-1h", 1), ("expires-in-13h", 13)] {
        let session = televisit_server::store::WebSession { doctor_id: doctor_id.clone(), ..session(hours) };
        store.create_session(hash, &session, clock.now_ms()).await.unwrap();
    }
    clock.advance(Duration::from_secs(2 * 3600));
    let counts = retention::purge_once(&server.server.state).await.unwrap();
    assert_eq!(counts.web_sessions, 1);
    assert!(store.session("expires-in-1h").await.unwrap().is_none());
    assert!(store.session("expires-in-13h").await.unwrap().is_some());
}

async fn audit_page(server: &TestServer, query: &str) -> (u16, Value) {
    server.call("GET", &format!("/api/clinic/audit{query}"), CLINIC_KEY).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clinic_reads_the_audit_log_in_pages_filtered_by_visit_and_time() {
    let db = TempDb::new();
    let clock = Clock::default();
    let server = TestServer::start_with(&db, clock.clone(), |_| {}).await;
    let first = visit_with_chat(&server, "One").await;
    clock.advance(Duration::from_secs(3600));
    let second = visit_with_chat(&server, "Two").await;
    let all = server.audit(None).await;
    assert!(all.len() >= 8, "start, two joins, end... per visit: {all:?}");

    // Pages of 3, followed to the end: every entry once, in order.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = audit_page(&server, &format!("?limit=3{after}")).await;
        assert_eq!(status, 200, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 3);
        seen.extend(entries.iter().map(|entry| entry["id"].as_i64().unwrap()));
        match page["next_after_id"].as_i64() {
            Some(id) => after = format!("&after_id={id}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), all.len());
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "{seen:?}");

    // One visit's entries only.
    let (_, page) = audit_page(&server, &format!("?appointment_id={}", second.appointment_id)).await;
    let entries = page["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|entry| entry["appointment_id"] == second.appointment_id.as_str()));
    let actions: BTreeSet<&str> = entries.iter().map(|entry| entry["action"].as_str().unwrap()).collect();
    assert!(actions.is_superset(&BTreeSet::from(["start", "join", "end"])), "{actions:?}");

    // A time window: the hour of the first visit only.
    let (_, page) = audit_page(&server, &format!("?to_ms={}", clock.now_ms() - 1800 * 1000)).await;
    let entries = page["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(entries
        .iter()
        .all(|entry| entry["appointment_id"].as_str().is_none_or(|id| id == first.appointment_id)));

    // Refusals: no key, a doctor's token, a bad limit, an unknown parameter.
    let (status, body) = server.call("GET", "/api/clinic/audit", "wrong-key").await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let (status, _) = server.call("GET", "/api/clinic/audit", &first.doctor_api_token).await;
    assert_eq!(status, 401, "a doctor's app token is not the clinic's key");
    for (query, needle) in
        [("?limit=0", "limit"), ("?limit=5000", "limit"), ("?limit=ten", "limit"), ("?name=x", "name")]
    {
        let (status, body) = audit_page(&server, query).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{query}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_visit_summary_shows_who_came_when_and_the_face_to_face_time() {
    let db = TempDb::new();
    let clock = Clock::default();
    let server = TestServer::start_with(&db, clock.clone(), |_| {}).await;
    let visit = server.started_visit().await;
    let path = format!("/api/clinic/appointments/{}/summary", visit.appointment_id);
    clock.advance(Duration::from_secs(60)); // the patient comes a minute later
    let (doctor, patient) = both_in_room(&server, &visit).await;
    clock.advance(Duration::from_secs(600));

    let (status, summary) = server.call("GET", &path, CLINIC_KEY).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["appointment"]["status"], "in_progress");
    // The server's clock is real time moved on by the test: allow the seconds the test itself took.
    let seconds = |summary: &Value| summary["face_to_face_seconds"].as_i64().unwrap();
    assert!((600..=603).contains(&seconds(&summary)), "ten minutes so far: {summary}");

    clock.advance(Duration::from_secs(300));
    let end = format!("/api/appointments/{}/video-call/end", visit.appointment_id);
    assert_eq!(server.call("POST", &end, &visit.doctor_api_token).await.0, 200);
    drop((doctor, patient));
    let (_, summary) = server.call("GET", &path, CLINIC_KEY).await;
    assert_eq!(summary["appointment"]["status"], "ended");
    assert!((900..=903).contains(&seconds(&summary)), "fifteen minutes: {summary}");
    let timeline: Vec<(String, String)> = summary["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (entry["actor"].as_str().unwrap().to_owned(), entry["action"].as_str().unwrap().to_owned())
        })
        .collect();
    let pairs: Vec<(&str, &str)> = timeline.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(&pairs[..3], [("doctor", "start"), ("patient", "join"), ("doctor", "join")], "{pairs:?}");
    assert!(pairs.contains(&("doctor", "end")), "{pairs:?}");
    let started = summary["waiting_since_ms"].as_i64().unwrap();
    let patient_join = summary["timeline"][1]["at_ms"].as_i64().unwrap();
    assert!(
        (60_000..63_000).contains(&(patient_join - started)),
        "the patient joined a minute after the start"
    );

    let (status, body) =
        server.call("GET", "/api/clinic/appointments/no-such-visit/summary", CLINIC_KEY).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
}

/// The quality frames both apps send during the call (one on each change of level) end up in the
/// visit's summary, with who sent them, when, and the figures; a flood of them is bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_visit_summary_shows_both_sides_quality_reports_over_the_call_bounded_per_participant() {
    let db = TempDb::new();
    let clock = Clock::default();
    let server = TestServer::start_with(&db, clock.clone(), |_| {}).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    let begin = clock.now_ms();
    let reports = [
        (
            "patient",
            json!({"type": "quality", "level": "good", "rtt_ms": 84.0, "loss_percent": 1.5, "jitter_ms": 12.0}),
        ),
        ("doctor", json!({"type": "quality", "level": "excellent", "rtt_ms": 40.0})),
        ("patient", json!({"type": "quality", "level": "poor", "loss_percent": 9.0})),
        ("patient", json!({"type": "quality", "level": "lost"})),
    ];
    for (from, report) in reports {
        let (sender, peer) =
            if from == "doctor" { (&mut doctor, &mut patient) } else { (&mut patient, &mut doctor) };
        sender.send(report.clone()).await;
        // Relayed to the other side, and stored before the sender's next frame is handled.
        assert_eq!(peer.expect("quality").await["level"], report["level"]);
        sender.send(json!({"type": "ping"})).await;
        sender.expect("pong").await;
        clock.advance(Duration::from_secs(30));
    }

    let path = format!("/api/clinic/appointments/{}/summary", visit.appointment_id);
    let (status, summary) = server.call("GET", &path, CLINIC_KEY).await;
    assert_eq!(status, 200, "{summary}");
    let quality = summary["quality"].as_array().unwrap();
    let seen: Vec<(&str, &str)> =
        quality.iter().map(|r| (r["from"].as_str().unwrap(), r["level"].as_str().unwrap())).collect();
    assert_eq!(
        seen,
        [("patient", "good"), ("doctor", "excellent"), ("patient", "poor"), ("patient", "lost")]
    );
    assert_eq!(
        quality[0],
        json!({"at_ms": quality[0]["at_ms"], "from": "patient", "level": "good", "rtt_ms": 84.0, "loss_percent": 1.5, "jitter_ms": 12.0})
    );
    assert!(quality[1].get("loss_percent").is_none(), "not measured, not shown: {}", quality[1]);
    // The server's receipt times, half a minute apart as the test's clock moved.
    let at: Vec<i64> = quality.iter().map(|r| r["at_ms"].as_i64().unwrap()).collect();
    assert!((begin..begin + 3_000).contains(&at[0]), "{at:?}");
    assert!(
        (30_000..33_000).contains(&(at[1] - at[0])) && (30_000..33_000).contains(&(at[2] - at[1])),
        "{at:?}"
    );

    // A patient app gone wrong sends a report per frame: the summary keeps a bounded number.
    let limit = televisit_server::signaling::room::QUALITY_REPORTS_PER_ROLE;
    for _ in 0..limit {
        patient.send(json!({"type": "quality", "level": "good"})).await;
        doctor.expect("quality").await;
    }
    patient.send(json!({"type": "ping"})).await;
    patient.expect("pong").await;
    let (_, summary) = server.call("GET", &path, CLINIC_KEY).await;
    let from =
        |role: &str| summary["quality"].as_array().unwrap().iter().filter(|r| r["from"] == role).count();
    assert_eq!((from("patient"), from("doctor")), (limit, 1));
}
