//! Nobody gets into a call they were not invited to, and every refusal is clear and audited.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use televisit_server::secrets::Clock;

#[tokio::test]
async fn an_expired_link_is_refused_over_http_and_signaling() {
    let db = TempDb::new();
    let clock = Clock::default();
    let server = TestServer::start_with(&db, clock.clone(), |c| c.token_ttl_seconds = 600).await;
    let visit = server.started_visit().await;
    let (code, _) = server.call("POST", "/api/video-call/join", &visit.patient_token).await;
    assert_eq!(code, 200);
    clock.advance(Duration::from_secs(601));
    let (code, body) = server.call("POST", "/api/video-call/join", &visit.patient_token).await;
    assert_eq!((code, body["error"]["code"].as_str()), (410, Some("token_expired")));
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"));
    let mut ws = server.join(&visit.patient_token).await;
    let frames = ws.until_closed().await;
    assert_eq!(frames.last().unwrap()["code"], "token_expired");
    let audit = server.audit(Some(&visit.appointment_id)).await;
    assert!(audit
        .iter()
        .any(|e| e.action == "refused" && e.detail == "token_expired" && e.actor == "patient"));
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_invalid_token_and_audited() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let mut forged = visit.patient_token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    for token in [forged.as_str(), "not-a-token", ""] {
        let (code, body) = server.call("POST", "/api/video-call/join", token).await;
        assert_eq!((code, body["error"]["code"].as_str()), (401, Some("invalid_token")), "{token}");
    }
    let mut ws = server.join(&forged).await;
    assert_eq!(ws.until_closed().await.last().unwrap()["code"], "invalid_token");
    let refused = server.audit(None).await.into_iter().filter(|e| e.detail == "invalid_token").count();
    assert!(refused >= 4, "{refused}");
}

#[tokio::test]
async fn another_appointments_token_cannot_see_or_end_this_call() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let other = server.started_visit().await;
    let status = format!("/api/appointments/{}/video-call/status", visit.appointment_id);
    let end = format!("/api/appointments/{}/video-call/end", visit.appointment_id);
    let (code, body) = server.call("GET", &status, &other.patient_token).await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (code, _) = server.call("POST", &end, &other.doctor_token).await;
    assert_eq!(code, 404);
    // Another appointment's doctor account cannot start or end it either.
    let start = format!("/api/appointments/{}/video-call/start", visit.appointment_id);
    let (code, _) = server.call("POST", &start, &other.doctor_api_token).await;
    assert_eq!(code, 404);
    let (code, _) = server.call("POST", &end, &other.doctor_api_token).await;
    assert_eq!(code, 404);
    assert_eq!(server.status(&visit).await["status"], "waiting");
    let audit = server.audit(Some(&visit.appointment_id)).await;
    assert!(audit.iter().filter(|e| e.action == "refused" && e.detail == "not_found").count() >= 4);
}

#[tokio::test]
async fn a_patient_token_cannot_do_doctor_actions() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let id = &visit.appointment_id;
    for (method, path) in [
        ("POST", format!("/api/appointments/{id}/video-call/end")),
        ("POST", format!("/api/appointments/{id}/video-call/start")),
        ("POST", format!("/api/appointments/{id}/video-call/rejoin")),
        ("POST", format!("/api/appointments/{id}/video-call/patient-link")),
        ("POST", format!("/api/appointments/{id}/video-call/waiting-message")),
    ] {
        let (code, body) = server.call(method, &path, &visit.patient_token).await;
        assert_eq!(code, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let audit = server.audit(None).await;
    assert!(audit.iter().filter(|e| e.action == "refused" && e.detail == "forbidden").count() >= 5);
    assert_eq!(server.status(&visit).await["status"], "waiting");
}

#[tokio::test]
async fn a_third_person_without_a_token_gets_nothing() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    let mut stranger = Ws::connect(&server.ws_url()).await;
    stranger.send(json!({"type": "offer", "sdp": "v=0 evil"})).await;
    assert_eq!(stranger.expect("error").await["code"], "not_joined");
    stranger.send(json!({"type": "join"})).await;
    assert_eq!(stranger.expect("error").await["code"], "invalid_token");
    stranger
        .send(json!({"type": "join", "token": "tv1.9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}))
        .await;
    assert_eq!(stranger.until_closed().await.last().unwrap()["code"], "invalid_token");
    doctor.expect_silence(Duration::from_millis(150)).await;
    patient.expect_silence(Duration::from_millis(50)).await;
    let status = format!("/api/appointments/{}/video-call/status", visit.appointment_id);
    let response = server.http.get(server.url(&status)).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_websocket_from_a_foreign_origin_is_refused() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let error =
        Ws::connect_with_origin(&server.ws_url(), "https://evil.example").await.err().expect("refused");
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 403),
        other => panic!("expected HTTP 403, got {other}"),
    }
    let own = server.server.url();
    assert!(Ws::connect_with_origin(&server.ws_url(), &own).await.is_ok());
    assert!(server.audit(None).await.iter().any(|e| e.detail == "origin_not_allowed"));
}

#[tokio::test]
async fn restarting_the_call_revokes_the_earlier_links() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let again = server.start_call(&visit.appointment_id, &visit.doctor_api_token).await;
    let (code, body) = server.call("POST", "/api/video-call/join", &visit.patient_token).await;
    assert_eq!((code, body["error"]["code"].as_str()), (410, Some("token_revoked")));
    let fresh = token_of(again["patient_link"].as_str().unwrap());
    assert_eq!(server.call("POST", "/api/video-call/join", &fresh).await.0, 200);
}

#[tokio::test]
async fn the_doctor_gets_a_fresh_patient_link_that_replaces_the_earlier_one() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let (appointment_id, doctor_api_token) = server.appointment().await;
    let path = format!("/api/appointments/{appointment_id}/video-call/patient-link");
    // Not before the call is started.
    let (code, body) = server.call("POST", &path, &doctor_api_token).await;
    assert_eq!((code, body["error"]["code"].as_str()), (409, Some("call_not_started")), "{body}");
    let started = server.start_call(&appointment_id, &doctor_api_token).await;
    let first = token_of(started["patient_link"].as_str().unwrap());
    let doctor = token_of(started["doctor_link"].as_str().unwrap());

    // Neither link can ask for one: the patient's nor the doctor's call link.
    for token in [&first, &doctor] {
        let (code, body) = server.call("POST", &path, token).await;
        assert_eq!((code, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    }

    // The doctor's account gets a new link; the earlier one stops working, the doctor's does not.
    let (code, body) = server.call("POST", &path, &doctor_api_token).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["appointment_id"], appointment_id.as_str());
    let fresh = token_of(body["patient_link"].as_str().unwrap());
    assert_ne!(fresh, first);
    let (code, body) = server.call("POST", "/api/video-call/join", &first).await;
    assert_eq!((code, body["error"]["code"].as_str()), (410, Some("token_revoked")));
    assert_eq!(server.call("POST", "/api/video-call/join", &fresh).await.0, 200);
    assert_eq!(server.call("POST", "/api/video-call/join", &doctor).await.0, 200);
    let audit = server.audit(Some(&appointment_id)).await;
    assert!(audit.iter().any(|e| e.action == "patient_link"));
    assert!(audit.iter().all(|e| !e.detail.contains(&fresh)), "the token stays out of the audit log");

    // In progress too; not once the call has ended.
    let (_doctor_ws, _patient_ws) = {
        let mut d = server.join(&doctor).await;
        let mut p = server.join(&fresh).await;
        d.expect("joined").await;
        p.expect("joined").await;
        (d, p)
    };
    wait_in_progress(&server, &appointment_id, &doctor_api_token).await;
    assert_eq!(server.call("POST", &path, &doctor_api_token).await.0, 200);
    let end = format!("/api/appointments/{appointment_id}/video-call/end");
    assert_eq!(server.call("POST", &end, &doctor_api_token).await.0, 200);
    let (code, body) = server.call("POST", &path, &doctor_api_token).await;
    assert_eq!((code, body["error"]["code"].as_str()), (410, Some("call_ended")), "{body}");
}

/// Waits until the call's status is `in_progress` (both joined).
async fn wait_in_progress(server: &TestServer, appointment_id: &str, doctor_api_token: &str) {
    let path = format!("/api/appointments/{appointment_id}/video-call/status");
    for _ in 0..100 {
        let (_, body) = server.call("GET", &path, doctor_api_token).await;
        if body["status"] == "in_progress" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the call never went in progress");
}

#[tokio::test]
async fn the_clinic_api_needs_its_key_and_answers_bad_input_with_json_errors() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let response = server
        .http
        .post(server.url("/api/clinic/patients"))
        .bearer_auth("wrong")
        .json(&json!({"display_name": "X"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let response = server
        .http
        .post(server.url("/api/clinic/patients"))
        .bearer_auth(CLINIC_KEY)
        .header("content-type", "application/json")
        .body("{\"display_name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");

    let response = server
        .http
        .post(server.url("/api/clinic/appointments"))
        .bearer_auth(CLINIC_KEY)
        .json(&json!({"doctor_id": "nope", "patient_id": "nope", "scheduled_at_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_doctor_signs_in_on_the_web_and_state_changes_need_the_csrf_token() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let email = "web.doctor@clinic.test";
    server
        .clinic(
            "/api/clinic/doctors",
            json!({"display_name": DOCTOR_NAME, "email": email, "password": DOCTOR_PASSWORD}),
        )
        .await;
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let form = no_redirects.get(server.url("/medical/login")).send().await.unwrap();
    let login_cookie = form.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = form.text().await.unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();

    // Wrong password: 401, no session.
    let wrong = no_redirects
        .post(server.url("/medical/login"))
        .header("cookie", &login_cookie)
        .form(&[("email", email), ("password", "nope"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // A forged form (no CSRF cookie): refused.
    let forged = no_redirects
        .post(server.url("/medical/login"))
        .form(&[("email", email), ("password", DOCTOR_PASSWORD), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let ok = no_redirects
        .post(server.url("/medical/login"))
        .header("cookie", &login_cookie)
        .form(&[("email", email), ("password", DOCTOR_PASSWORD), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let session_cookie = ok
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("televisit_session="))
        .expect("session cookie");
    assert!(
        session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Strict"),
        "{session_cookie}"
    );
    let session = session_cookie.split(';').next().unwrap().to_owned();

    let me: serde_json::Value = no_redirects
        .get(server.url("/api/doctor/me"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["display_name"], DOCTOR_NAME);
    let csrf_token = me["csrf_token"].as_str().unwrap();

    let patient = server.clinic("/api/clinic/patients", json!({"display_name": PATIENT_NAME})).await;
    let appointment = server
        .clinic(
            "/api/clinic/appointments",
            json!({"doctor_id": me["id"], "patient_id": patient["id"], "scheduled_at_ms": server.clock.now_ms()}),
        )
        .await;
    let list: serde_json::Value = no_redirects
        .get(server.url("/api/doctor/appointments"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["patient_name"], PATIENT_NAME);

    let start =
        server.url(&format!("/api/appointments/{}/video-call/start", appointment["id"].as_str().unwrap()));
    let without = no_redirects.post(&start).header("cookie", &session).send().await.unwrap();
    assert_eq!(without.status(), 403);
    let with = no_redirects
        .post(&start)
        .header("cookie", &session)
        .header("x-csrf-token", csrf_token)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
}
