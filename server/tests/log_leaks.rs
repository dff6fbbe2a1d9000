//! A whole visit's log lines never contain a token, a patient's name or a client's address.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_patient_name_or_client_address_reaches_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Everything at debug for our crates, the production default for the rest.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,sqlx=warn,televisit_server=trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (code, _) = server.call("POST", "/api/video-call/join", &visit.patient_token).await;
    assert_eq!(code, 200);
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    doctor.send(json!({"type": "offer", "sdp": "v=0"})).await;
    patient.expect("offer").await;
    patient.send(json!({"type": "chat", "text": "I am Zelda Quartermaine"})).await;
    doctor.expect("chat").await;
    patient.expect("chat").await;
    patient.send_text("{broken".into()).await;
    patient.expect("error").await;
    // Refusals log too: a wrong token, a patient token on a doctor action.
    let mut forged = visit.patient_token.clone();
    forged.replace_range(forged.len() - 3.., "xyz");
    server.call("POST", "/api/video-call/join", &forged).await;
    // A query string with an id in it.
    let audit = format!("/api/clinic/audit?appointment_id={}&limit=5", visit.appointment_id);
    assert_eq!(server.call("GET", &audit, CLINIC_KEY).await.0, 200);
    let end = format!("/api/appointments/{}/video-call/end", visit.appointment_id);
    assert_eq!(server.call("POST", &end, &visit.patient_token).await.0, 403);
    assert_eq!(server.call("POST", &end, &visit.doctor_token).await.0, 200);
    doctor.until_closed().await;
    patient.until_closed().await;
    server.server.stop().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.lines().count() >= 5, "the visit was logged:\n{log}");
    assert!(log.contains("call ended"), "{log}");
    for secret in [&visit.patient_token, &visit.doctor_token, &forged, &visit.doctor_api_token] {
        let random_part = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(random_part), "a token leaked into the log:\n{log}");
    }
    for personal in [PATIENT_NAME, "Zelda", "Quartermaine", "127.0.0.1", CLINIC_KEY] {
        assert!(!log.contains(personal), "{personal} leaked into the log:\n{log}");
    }
    // Every request is traced by its route template and answered status, never its path or query.
    let requests: Vec<&str> = log.lines().filter(|line| line.contains("request{method=")).collect();
    for route in [
        "route=/api/appointments/{id}/video-call/end}",
        "route=/api/video-call/join}",
        "route=/api/clinic/audit}",
        "route=/api/video-call/ws}",
    ] {
        assert!(requests.iter().any(|line| line.contains(route)), "no request line with {route}:\n{log}");
    }
    assert!(requests.iter().any(|line| line.contains("status=403")), "{log}");
    for raw in [end.as_str(), audit.as_str(), "limit=5", "uri=", "?"] {
        assert!(!log.contains(raw), "{raw} in the log:\n{log}");
    }
}
