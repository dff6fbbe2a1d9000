//! The DTLS handshake on a link that loses one of its datagrams: a patient on a poor link must
//! still get into the call. Each call runs through the link emulator, which loses the first
//! datagram of one handshake flight (the client's Certificate, or the server's ServerHello);
//! media and ICE checks cross untouched. Random loss on a real link hits these few datagrams
//! rarely, but when it does the call must not hang.
//!
//! Before the patch in `vendor/rtc-dtls` (see `vendor/README.md`), a side that received a flight
//! it could not complete yet (the rest lost, or a stale retransmission) cancelled its
//! retransmit timer; when the peer was waiting for that side's retransmission, neither side ever
//! sent again and the call never connected (5 of 8 of these calls).

use std::time::Duration;

use televisit_core::call::machine::CallState;
use televisit_tests::netem::call::Participant;
use televisit_tests::netem::{Fate, LinkConfig, Relay, RelayConfig, Side};
use televisit_tests::TestServer;

const MS: Duration = Duration::from_millis(1);
/// DTLS handshake message types (RFC 5246 §7.4).
const SERVER_HELLO: u8 = 2;
const CERTIFICATE: u8 = 11;

#[tokio::test(flavor = "multi_thread")]
async fn calls_connect_when_a_handshake_flight_loses_a_datagram() {
    let server = TestServer::start(|_| {}).await;
    let mut outcomes = Vec::new();
    for (n, message) in [CERTIFICATE, SERVER_HELLO].into_iter().cycle().take(8).enumerate() {
        let link =
            LinkConfig { lose_first_dtls_handshake: Some(message), ..LinkConfig::new(5_000_000, 20 * MS) };
        let relay = Relay::start(RelayConfig::symmetric(link)).await.expect("relay binds on loopback");
        let visit = server.started_visit().await;
        let patient = Participant::join(&visit.patient_link, &relay, Side::B, false);
        patient.wait_for_state(CallState::WaitingRoom, Duration::from_secs(30)).await;
        let doctor = Participant::join(&visit.doctor_link, &relay, Side::A, false);
        // Seven retransmissions a second apart are the handshake's whole budget.
        let connected = doctor.reached_state(CallState::Connected, Duration::from_secs(15)).await
            && patient.reached_state(CallState::Connected, Duration::from_secs(5)).await;
        let lost: usize = [Side::A, Side::B]
            .into_iter()
            .map(|to| relay.report(to).records.iter().filter(|r| r.fate == Fate::Lost).count())
            .sum();
        eprintln!("call {n}: handshake message {message} lost once: {lost} lost, connected {connected}");
        outcomes.push((message, lost, connected));
        doctor.close();
        patient.close();
    }
    assert!(outcomes.iter().all(|(_, lost, _)| *lost == 1), "each call lost its datagram: {outcomes:?}");
    let connected = outcomes.iter().filter(|(.., connected)| *connected).count();
    assert_eq!(connected, outcomes.len(), "{connected} of 8 calls connected: {outcomes:?}");
}
