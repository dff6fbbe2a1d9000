//! `televisit join`: two headless participants make a real call through the server.

mod common;

use std::process::Command;

use common::*;

fn join(link: &str, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_televisit"))
        .args(["join", link, "--udp", "127.0.0.1:0"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("televisit join starts")
}

fn link(server: &TestServer, token: &str, appointment_id: &str) -> String {
    server.url(&format!("/medical/appointments/{appointment_id}/video-call/#token={token}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_headless_participants_talk_and_the_doctor_ends_the_call() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let video = std::env::temp_dir().join(format!("televisit-received-{}.ivf", std::process::id()));
    let patient = join(
        &link(&server, &visit.patient_token, &visit.appointment_id),
        // The patient signals over the HTTP fallback, the doctor over the WebSocket.
        &["--save-video", video.to_str().unwrap(), "--mute-after-seconds", "1", "--signaling", "http"],
    );
    let doctor = join(
        &link(&server, &visit.doctor_token, &visit.appointment_id),
        &["--seconds", "3", "--chat", "Hello from the doctor"],
    );
    let (doctor, patient) = tokio::task::spawn_blocking(move || {
        (doctor.wait_with_output().unwrap(), patient.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let doctor_out = String::from_utf8_lossy(&doctor.stdout);
    let patient_out = String::from_utf8_lossy(&patient.stdout);
    assert!(doctor.status.success(), "doctor: {doctor_out}{}", String::from_utf8_lossy(&doctor.stderr));
    assert!(patient.status.success(), "patient: {patient_out}");
    for out in [&doctor_out, &patient_out] {
        assert!(out.contains("event: state Connected"), "{out}");
        assert!(out.contains("event: chat from doctor: Hello from the doctor"), "{out}");
        assert!(out.contains("ended: CallEnded { ended_by: Some(Doctor)"), "{out}");
        let received: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("summary: video frames received "))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .expect("a summary line");
        assert!(received >= 30, "at least a second of video arrived: {received}\n{out}");
        let summary = out.lines().find(|l| l.starts_with("summary: ")).unwrap();
        let number = |label: &str| -> u64 {
            summary
                .split(", ")
                .find_map(|part| part.rsplit_once(label).map(|(_, n)| n.trim()))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{label} in {summary}"))
        };
        assert!(number("video frames decoded ") >= 30, "{summary}");
        assert!(number("pictures with a counter ") >= 30, "the pictures carry the counter: {summary}");
        assert!(number("audio frames decoded ") >= 40, "{summary}");
        assert!(
            out.contains(" at 640x360 (picture counter "),
            "pictures of the ladder's start rung decoded:\n{out}"
        );
    }
    assert!(
        doctor_out.contains("event: peer microphone off camera on"),
        "the doctor sees the patient mute:\n{doctor_out}"
    );
    // The received video was saved: an IVF file of VP8 frames that decode to the doctor's pictures,
    // whose counters (read from the decoded pictures) increase.
    let bytes = std::fs::read(&video).unwrap();
    let _ = std::fs::remove_file(&video);
    assert_eq!(&bytes[0..4], b"DKIF");
    assert_eq!(&bytes[8..12], b"VP80");
    assert_eq!((&bytes[12..14], &bytes[14..16]), (&640u16.to_le_bytes()[..], &360u16.to_le_bytes()[..]));
    let frames_in_header = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let mut decoder = televisit_join::codecs::video::Vp8Decoder::new().unwrap();
    let (mut at, mut counters) = (32, vec![]);
    while at + 12 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if let Ok(picture) = decoder.decode(&bytes[at + 12..at + 12 + size]) {
            counters.extend(televisit_join::codecs::pattern::read_counter(&picture));
        }
        at += 12 + size;
    }
    assert!(counters.len() >= 30 && counters.windows(2).all(|w| w[0] < w[1]), "{counters:?}");
    assert!(frames_in_header as usize >= counters.len(), "the header counts the frames: {frames_in_header}");
    assert!(counters.iter().all(|c| c >> 28 == 1), "the doctor's pictures: {counters:x?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_link_exits_with_status_2_and_says_why() {
    let db = TempDb::new();
    let server = TestServer::start(&db).await;
    let visit = server.started_visit().await;
    let mut forged = visit.patient_token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let child = join(&link(&server, &forged, &visit.appointment_id), &[]);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stdout).contains("LinkInvalid"));
    let output = Command::new(env!("CARGO_BIN_EXE_televisit"))
        .args(["join", "https://clinic.test/nope"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("this link is not valid"));
}
