//! Calls whose only path is a TURN relay, in network namespaces: the doctor and the patient each
//! sit in a namespace linked to the server's (the root namespace) and to each other by a direct
//! link on which every UDP datagram is dropped; the root namespace forwards nothing. Both run the
//! real headless client (`call-join`) and must connect through the relay with media decoded.
//! Then the patient behind a firewall that lets out only TCP to the signaling port and to the
//! embedded TURN server's TCP port (or its TLS port): no UDP at all, so the core's TURN over
//! TCP (TLS) client is its only way.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;

use televisit_server::turn::TlsListen;

use televisit_tests::netns::{self, Netns};
use televisit_tests::turn_lab::{Coturn, Lab};
use televisit_tests::TestServer;

fn join(netns: &Netns, link: &str, seconds: u64) -> Child {
    televisit_tests::turn_lab::join(env!("CARGO_BIN_EXE_call-join"), netns, link, seconds)
}

/// Waits (at most a minute) for a `call-join` and returns its output; panics if it failed.
async fn finish(mut child: Child, who: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{who} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A figure of a `call-join` summary, e.g. `audio frames decoded`.
fn summary_figure(stdout: &str, name: &str) -> u64 {
    let summary =
        stdout.lines().find(|l| l.starts_with("summary:")).unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    summary
        .split(&format!("{name} "))
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no decoded count in {summary}"))
}

/// One side's `call-join` output shows it connected and decoded media from the other: audio, and
/// the pictures from the start (at most half a second lost before the first keyframe).
fn assert_connected_with_media(who: &str, out: &str) {
    eprintln!("{who}: {}", out.lines().find(|l| l.starts_with("summary:")).unwrap_or("no summary"));
    assert!(out.contains("event: state Connected"), "{who} never connected:\n{out}");
    assert!(summary_figure(out, "audio frames decoded") >= 100, "{who} decoded too little audio:\n{out}");
    let received = summary_figure(out, "video frames received");
    let decoded = summary_figure(out, "video frames decoded");
    assert!(received >= 60, "{who} received too little video:\n{out}");
    assert!(received - decoded <= 15, "{who} decoded {decoded} of {received} pictures:\n{out}");
}

/// Both clients join from their namespaces, talk for 4 s, and must have had media both ways.
async fn call_between_namespaces(lab: &Lab, server: &TestServer) {
    let visit = server.started_visit().await;
    let patient = join(&lab.patient, &visit.patient_link, 4);
    let doctor = join(&lab.doctor, &visit.doctor_link, 4);
    let (patient, doctor) = (finish(patient, "patient").await, finish(doctor, "doctor").await);
    for (who, out) in [("patient", &patient), ("doctor", &doctor)] {
        assert_connected_with_media(who, out);
    }
    // The direct link was tried and dropped (host candidates of both ends are on it).
    assert!(lab.direct.a.dropped() + lab.direct.b.dropped() > 0, "nothing tried the direct link");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clients_without_a_direct_path_talk_through_the_embedded_turn() {
    if netns::skip() {
        return;
    }
    let lab = Lab::new(true);
    let turn = lab.embedded_turn();
    let server = lab
        .server(|c| {
            c.turn_secret = Some("embedded-turn-test-secret".into());
            c.embedded_turn = Some(turn);
        })
        .await;
    call_between_namespaces(&lab, &server).await;
    let counters = &server.server.turn.as_ref().expect("embedded TURN runs").counters;
    assert!(counters.allocations.load(Ordering::Relaxed) >= 1);
    let relayed = counters.relayed_out_bytes.load(Ordering::Relaxed);
    assert!(relayed > 200_000, "only {relayed} bytes went through the relay");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clients_without_a_direct_path_talk_through_coturn() {
    if netns::skip() {
        return;
    }
    let lab = Lab::new(true);
    let ip = lab.server_ip();
    let coturn = Coturn::start(ip, "coturn-test-secret");
    let server = lab
        .server(|c| {
            c.turn_urls = vec![format!("turn:{ip}:{}?transport=udp", coturn.port)];
            c.turn_secret = Some("coturn-test-secret".into());
        })
        .await;
    call_between_namespaces(&lab, &server).await;
}

/// The stats lines' paths of a `call-join` output (e.g. `relay/tcp-host`).
fn paths(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("stats:")).filter_map(|l| l.rsplit(", path ").next()).collect()
}

/// The patient may send only TCP to the signaling port and to the TURN server's TCP port (`tls`:
/// its TLS port, with a self-signed certificate for the server's IP that the patient's process
/// trusts through `SSL_CERT_FILE`). Both talk for 6 s; returns (patient's, doctor's) output.
async fn patient_behind_a_tcp_only_firewall(tls: bool) -> (String, String) {
    let lab = Lab::new(true);
    let ip = lab.server_ip();
    let dir = std::env::temp_dir().join(format!("televisit-turn-relay-{}-{tls}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec![ip.to_string()]).unwrap();
    let (cert, key) = (dir.join("turn.pem"), dir.join("turn.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut turn = lab.embedded_turn();
    turn.tls = Some(TlsListen { listen: SocketAddr::new(ip, 0), cert: cert.clone(), key });
    let server = lab
        .server(|c| {
            c.turn_secret = Some("embedded-turn-test-secret".into());
            c.embedded_turn = Some(turn);
        })
        .await;
    let embedded = server.server.turn.as_ref().expect("embedded TURN runs");
    let turn_port = if tls { embedded.tls_addr.expect("TLS listener").port() } else { embedded.addr.port() };
    lab.to_patient.b.allow_only_tcp_to(&[server.server.addr.port(), turn_port]);

    let visit = server.started_visit().await;
    let patient = lab
        .patient
        .command(env!("CARGO_BIN_EXE_call-join"))
        .args([visit.patient_link.as_str(), "--seconds", "6"])
        .env("SSL_CERT_FILE", &cert)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("call-join starts");
    let doctor = join(&lab.doctor, &visit.doctor_link, 6);
    let (patient, doctor) = (finish(patient, "patient").await, finish(doctor, "doctor").await);
    let _ = std::fs::remove_dir_all(dir);
    for (who, out) in [("patient", &patient), ("doctor", &doctor)] {
        eprintln!("{who}: last path {:?}", paths(out).last());
        assert_connected_with_media(who, out);
    }
    assert!(embedded.counters.stream_connections.load(Ordering::Relaxed) >= 1, "no TURN stream connection");
    assert!(lab.to_patient.b.dropped() > 0, "the patient's firewall dropped nothing (no UDP tried?)");
    (patient, doctor)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patient_whose_network_lets_out_only_tcp_to_the_turn_port_talks_over_turn_tcp() {
    if netns::skip() {
        return;
    }
    let (patient, _) = patient_behind_a_tcp_only_firewall(false).await;
    let paths = paths(&patient);
    assert!(paths.iter().any(|p| p.starts_with("relay/tcp-")), "relay over TCP: {paths:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patient_whose_network_lets_out_only_tls_to_the_turn_tls_port_talks_over_turn_tls() {
    if netns::skip() {
        return;
    }
    let (patient, _) = patient_behind_a_tcp_only_firewall(true).await;
    let paths = paths(&patient);
    assert!(paths.iter().any(|p| p.starts_with("relay/tls-")), "relay over TLS: {paths:?}");
}
