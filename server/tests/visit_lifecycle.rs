//! One visit from start to end, as the doctor and the patient see it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use televisit_server::secrets::Clock;

#[tokio::test]
async fn the_doctor_starts_the_call_and_gets_a_link_for_each_side() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let (appointment_id, doctor_api_token) = server.appointment().await;
    let started = server.start_call(&appointment_id, &doctor_api_token).await;
    assert_eq!(started["status"], "waiting");
    for link in ["doctor_link", "patient_link"] {
        let link = started[link].as_str().unwrap();
        assert!(
            link.starts_with(
                &server.url(&format!("/medical/appointments/{appointment_id}/video-call/#token=tv1."))
            ),
            "{link}"
        );
    }
    assert_ne!(started["doctor_link"], started["patient_link"]);
    let audit = server.audit(Some(&appointment_id)).await;
    assert!(audit.iter().any(|e| e.action == "start" && e.actor == "doctor"));
}

#[tokio::test]
async fn the_patient_joins_with_the_link_and_gets_the_room_role_names_and_ice_servers() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| {
        c.stun_urls = vec!["stun:stun.clinic.test:3478".into()];
        c.turn_urls = vec!["turn:turn.clinic.test:3478?transport=udp".into()];
        c.turn_secret = Some("turn-shared-secret".into());
    })
    .await;
    let visit = server.started_visit().await;
    let (code, join) = server.call("POST", "/api/video-call/join", &visit.patient_token).await;
    assert_eq!(code, 200, "{join}");
    assert_eq!(join["role"], "patient");
    assert_eq!(join["display_name"], PATIENT_NAME);
    assert_eq!(join["peer_display_name"], DOCTOR_NAME);
    assert_eq!(join["status"], "waiting");
    let room_id = join["room_id"].as_str().unwrap();
    assert_eq!(join["websocket_path"], format!("/api/video-call/ws/{room_id}"));
    assert_eq!(join["signal_path"], format!("/api/video-call/signal/{room_id}"));
    assert_eq!(join["ice_servers"][0]["urls"][0], "stun:stun.clinic.test:3478");
    let turn = &join["ice_servers"][1];
    let username = turn["username"].as_str().unwrap();
    let expiry: i64 = username.split(':').next().unwrap().parse().unwrap();
    let now = server.clock.now_ms() / 1000;
    assert!(expiry > now && expiry <= now + 3600, "short-lived TURN credential: {username}");
    assert!(turn["credential"].as_str().unwrap().len() >= 28);
    assert_eq!(join["ice_transport_policy"], "all");
}

/// A load balancer in front of several nodes hashes the signaling path to send both participants
/// of a visit to one node: the paths name the visit's room (the same for both, another for
/// another visit) and nothing personal or secret, and they work as given.
#[tokio::test]
async fn both_participants_get_signaling_paths_naming_their_room_and_nothing_else_and_they_work() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let other = server.started_visit().await;
    let join = |token: String| {
        let server = &server;
        async move {
            let (code, join) = server.call("POST", "/api/video-call/join", &token).await;
            assert_eq!(code, 200, "{join}");
            join
        }
    };
    let patient = join(visit.patient_token.clone()).await;
    let doctor = join(visit.doctor_token.clone()).await;
    let elsewhere = join(other.patient_token.clone()).await;
    for key in ["websocket_path", "signal_path"] {
        assert_eq!(patient[key], doctor[key], "{key}: one node for both participants");
        assert_ne!(patient[key], elsewhere[key], "{key}: another visit, another hash");
        let path = patient[key].as_str().unwrap();
        for private in [visit.appointment_id.as_str(), PATIENT_NAME, DOCTOR_NAME] {
            assert!(!path.contains(private), "{key} names {private}: {path}");
        }
        for token in [&visit.patient_token, &visit.doctor_token] {
            assert!(!path.contains(token.rsplit('.').next().unwrap()), "{key} holds a token: {path}");
        }
    }

    // The patient signals over the WebSocket at its path, the doctor over the HTTP fallback at
    // its path: they meet in the call.
    let ws_url = format!("ws://{}{}", server.server.addr, patient["websocket_path"].as_str().unwrap());
    let mut patient_ws = Ws::connect(&ws_url).await;
    patient_ws.send(json!({"type": "join", "token": visit.patient_token})).await;
    assert_eq!(patient_ws.expect("joined").await["peer_present"], false);
    patient_ws.expect("waiting").await;
    let doctor_fallback =
        FallbackClient::at(&server, doctor["signal_path"].as_str().unwrap(), &visit.doctor_token);
    let posted = doctor_fallback.post(json!({"type": "join"})).await.unwrap();
    assert_eq!(posted.status(), 200, "{}", posted.text().await.unwrap());
    let polled: serde_json::Value = doctor_fallback.poll(0).await.unwrap().json().await.unwrap();
    let joined = polled["frames"].as_array().unwrap().iter().find(|frame| frame["type"] == "joined");
    assert_eq!(joined.map(|frame| &frame["peer_present"]), Some(&json!(true)), "{polled}");
    patient_ws.expect("admitted").await;
    assert_eq!(patient_ws.expect("peer-joined").await["role"], "doctor");
}

#[tokio::test]
async fn with_patients_relay_only_the_patient_is_told_to_use_relayed_candidates_only() {
    let db = TempDb::new();
    let server = TestServer::start_with(&db, Clock::default(), |c| {
        c.turn_urls = vec!["turn:turn.clinic.test:3478?transport=udp".into()];
        c.turn_secret = Some("turn-shared-secret".into());
        c.patients_relay_only = true;
    })
    .await;
    let visit = server.started_visit().await;
    for (token, policy) in [(&visit.patient_token, "relay"), (&visit.doctor_token, "all")] {
        let (code, join) = server.call("POST", "/api/video-call/join", token).await;
        assert_eq!((code, &join["ice_transport_policy"]), (200, &policy.into()), "{join}");
        let (code, fresh) = server.call("GET", "/api/video-call/ice-servers", token).await;
        assert_eq!((code, &fresh["ice_transport_policy"]), (200, &policy.into()), "{fresh}");
    }
}

#[tokio::test]
async fn the_patient_waits_until_the_doctor_is_in_and_sees_the_doctors_status() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let mut patient = server.join(&visit.patient_token).await;
    let joined = patient.expect("joined").await;
    assert_eq!(joined["peer_present"], false);
    assert!(patient.expect("waiting").await.get("message").is_none());

    let status = server.status(&visit).await;
    assert_eq!(
        (status["patient_present"].as_bool(), status["doctor_present"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(status["patient_waiting_since_ms"].as_i64().is_some());

    let path = format!("/api/appointments/{}/video-call/waiting-message", visit.appointment_id);
    let response = server
        .http
        .post(server.url(&path))
        .bearer_auth(&visit.doctor_api_token)
        .json(&json!({"text": "Running 10 minutes late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["delivered"], true, "the patient is in the waiting room: {answer}");
    assert_eq!(patient.expect("waiting").await["message"], "Running 10 minutes late");
    patient.expect_silence(Duration::from_millis(200)).await;

    let mut doctor = server.join(&visit.doctor_token).await;
    assert_eq!(doctor.expect("joined").await["peer_present"], true);
    assert_eq!(doctor.expect("peer-joined").await["make_offer"], true);
    patient.expect("admitted").await;
    let peer = patient.expect("peer-joined").await;
    assert_eq!((peer["role"].as_str(), peer["make_offer"].as_bool()), (Some("doctor"), Some(false)));
    assert_eq!(server.status(&visit).await["status"], "in_progress");
}

#[tokio::test]
async fn offer_answer_and_candidates_reach_only_the_other_participant_of_the_same_room() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let other_visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    let (mut other_doctor, mut other_patient) = both_in_room(&server, &other_visit).await;

    doctor.send(json!({"type": "offer", "sdp": "v=0 offer"})).await;
    let offer = patient.expect("offer").await;
    assert_eq!((offer["sdp"].as_str(), offer["from"].as_str()), (Some("v=0 offer"), Some("doctor")));
    patient.send(json!({"type": "answer", "sdp": "v=0 answer"})).await;
    assert_eq!(doctor.expect("answer").await["sdp"], "v=0 answer");
    for i in 0..5 {
        let candidate = format!("candidate:{i} 1 udp 2122260223 192.0.2.1 5000{i} typ host");
        patient.send(json!({"type": "ice-candidate", "candidate": candidate, "sdp_mid": "0", "sdp_m_line_index": 0})).await;
        let got = doctor.expect("ice-candidate").await;
        assert_eq!(
            (got["candidate"].as_str(), got["from"].as_str()),
            (Some(candidate.as_str()), Some("patient"))
        );
    }
    patient.send(json!({"type": "media-state", "audio": false, "video": true})).await;
    let state = doctor.expect("media-state").await;
    assert_eq!((state["audio"].as_bool(), state["video"].as_bool()), (Some(false), Some(true)));
    patient.send(json!({"type": "quality", "level": "good", "rtt_ms": 42.0})).await;
    assert_eq!(doctor.expect("quality").await["level"], "good");

    // Nothing echoed to the sender, nothing leaked into the other room.
    for ws in [&mut doctor, &mut patient, &mut other_doctor, &mut other_patient] {
        ws.expect_silence(Duration::from_millis(150)).await;
    }
}

#[tokio::test]
async fn chat_is_delivered_to_both_stored_and_replayed_on_rejoin() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    patient.send(json!({"type": "chat", "text": "  My knee hurts when I climb stairs  "})).await;
    let to_doctor = doctor.expect("chat").await;
    let echo = patient.expect("chat").await;
    assert_eq!(to_doctor["text"], "My knee hurts when I climb stairs");
    assert_eq!(to_doctor["from"], "patient");
    assert_eq!(to_doctor["id"], echo["id"]);
    doctor.send(json!({"type": "chat", "text": "Let's take a look"})).await;
    patient.expect("chat").await;
    doctor.expect("chat").await;

    // Empty or oversized chat: an error, nothing stored.
    patient.send(json!({"type": "chat", "text": "   "})).await;
    assert_eq!(patient.expect("error").await["code"], "invalid_frame");

    drop(patient);
    let mut again = server.join(&visit.patient_token).await;
    let joined = again.expect("joined").await;
    let history: Vec<_> =
        joined["chat_history"].as_array().unwrap().iter().map(|m| m["text"].clone()).collect();
    assert_eq!(history, [json!("My knee hurts when I climb stairs"), json!("Let's take a look")]);
    let stored = server.server.state.store.chat_history(&visit.appointment_id).await.unwrap();
    assert_eq!(stored.len(), 2);
}

#[tokio::test]
async fn only_the_doctor_shares_a_screen() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;

    patient.send(json!({"type": "screen-share", "active": true})).await;
    assert_eq!(patient.expect("error").await["code"], "forbidden");
    doctor.expect_silence(Duration::from_millis(150)).await;
    assert_eq!(server.status(&visit).await["screen_sharing_active"], false);

    // A stream id that cannot be an SDP msid is refused and not relayed.
    doctor.send(json!({"type": "screen-share", "active": true, "stream_id": "two words"})).await;
    assert_eq!(doctor.expect("error").await["code"], "invalid_frame");
    patient.expect_silence(Duration::from_millis(150)).await;

    doctor.send(json!({"type": "screen-share", "active": true, "stream_id": "3f0c9a2e-55d1"})).await;
    let share = patient.expect("screen-share").await;
    assert_eq!((share["active"].as_bool(), share["from"].as_str()), (Some(true), Some("doctor")));
    assert_eq!(share["stream_id"], "3f0c9a2e-55d1", "the track role reaches the patient");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.status(&visit).await["screen_sharing_active"], true);
}

#[tokio::test]
async fn ending_records_the_duration_tells_everyone_and_closes_the_room() {
    let db = TempDb::new();
    let clock = Clock::default();
    let server = TestServer::start_with(&db, clock.clone(), |_| {}).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    clock.advance(Duration::from_secs(754));
    assert!(server.status(&visit).await["duration_seconds"].as_i64().unwrap() >= 754);

    // The patient may not end the call, over HTTP or signaling.
    let end_path = format!("/api/appointments/{}/video-call/end", visit.appointment_id);
    let (code, body) = server.call("POST", &end_path, &visit.patient_token).await;
    assert_eq!((code, body["error"]["code"].as_str()), (403, Some("forbidden")));
    patient.send(json!({"type": "end-call"})).await;
    assert_eq!(patient.expect("error").await["code"], "forbidden");

    doctor.send(json!({"type": "end-call"})).await;
    for ws in [&mut doctor, &mut patient] {
        let frames = ws.until_closed().await;
        let ended = frames.iter().find(|f| f["type"] == "call-ended").expect("call-ended");
        assert_eq!(ended["ended_by"], "doctor");
        let duration = ended["duration_seconds"].as_i64().unwrap();
        assert!((754..=756).contains(&duration), "{duration}");
    }
    let status = server.status(&visit).await;
    assert_eq!(status["status"], "ended");
    assert!(status["ended_at_ms"].as_i64().is_some());

    // Nobody gets back in.
    let mut late = server.join(&visit.patient_token).await;
    let frames = late.until_closed().await;
    assert_eq!(frames.last().unwrap()["code"], "call_ended");
    let (code, body) = server.call("POST", "/api/video-call/join", &visit.doctor_token).await;
    assert_eq!((code, body["error"]["code"].as_str()), (410, Some("call_ended")));
    let (code, _) = server.call("POST", &end_path, &visit.doctor_api_token).await;
    assert_eq!(code, 410);
}

#[tokio::test]
async fn the_doctor_can_end_over_http_and_both_sides_hear_it() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let (mut doctor, mut patient) = both_in_room(&server, &visit).await;
    let path = format!("/api/appointments/{}/video-call/end", visit.appointment_id);
    let (code, body) = server.call("POST", &path, &visit.doctor_api_token).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ended")));
    for ws in [&mut doctor, &mut patient] {
        assert!(ws.until_closed().await.iter().any(|f| f["type"] == "call-ended"));
    }
}
