//! Chat cut off mid-flight, through the core's real call client: the server acknowledges each chat
//! message once stored, and after the connection comes back the client resends exactly what was
//! not acknowledged, so every message is stored, and shown to the peer, exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::{CallClient, CallOptions, ClientEvent};
use televisit_tests::{CuttableProxy, Recorder, SimulatedMedia, TestServer};

const WAIT: Duration = Duration::from_secs(20);
const MESSAGES: usize = 300;

fn new_client(link: &str, media: &Arc<SimulatedMedia>) -> (CallClient, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let client =
        CallClient::new(link, recorder.clone(), media.clone(), CallOptions::default()).expect("valid link");
    (client, recorder)
}

fn text(i: usize) -> String {
    format!("message {i} of the burst")
}

/// How often each text is stored.
async fn stored(server: &TestServer, appointment_id: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for message in server.server.state.store.chat_history(appointment_id).await.unwrap() {
        *counts.entry(message.text).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_cut_off_mid_flight_is_resent_by_the_core_and_stored_once() {
    // The burst is above the default per-connection rate limit on purpose: this is about storage.
    let server = TestServer::start(|c| {
        c.frames_per_second = 100_000;
        c.frame_burst = 100_000;
    })
    .await;
    let visit = server.started_visit().await;
    let proxy = CuttableProxy::start(server.server.addr).await;
    let media = SimulatedMedia::new();
    let (patient, patient_events) = new_client(&proxy.link(&visit.patient_link, server.server.addr), &media);
    let (doctor, doctor_events) = new_client(&visit.doctor_link, &media);
    patient.join();
    doctor.join();
    for events in [&patient_events, &doctor_events] {
        events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
    }

    for i in 0..MESSAGES {
        patient.send_chat(&text(i)).unwrap();
    }
    proxy.cut_all();
    let at_cut: usize = stored(&server, &visit.appointment_id).await.values().sum();
    assert!(at_cut < MESSAGES, "the cut came after the whole burst was stored: nothing tested");

    patient_events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::SignalingRestored));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let counts = stored(&server, &visit.appointment_id).await;
        if (0..MESSAGES).all(|i| counts.contains_key(&text(i))) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} of {MESSAGES} stored", counts.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing more arrives late, and nothing twice: in the database and on the doctor's screen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = stored(&server, &visit.appointment_id).await;
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(counts.len(), MESSAGES);
    let mut shown = BTreeMap::new();
    for event in doctor_events.events() {
        if let ClientEvent::Call(CallEvent::ChatReceived(message)) = event {
            *shown.entry(message.text).or_insert(0) += 1;
        }
    }
    assert_eq!(shown, counts, "the doctor saw each message once");
    patient.close();
    doctor.close();
}
