//! Real calls (real server, real peer connections, VP8 and Opus encoded live) with the media path
//! through the link emulator (`televisit_tests::netem`).

use std::time::{Duration, Instant};

use televisit_codecs::video::default_target;
use televisit_core::call::machine::CallState;
use televisit_tests::netem::call::{CallSetup, EmulatedCall, Participant};
use televisit_tests::netem::link::Fate;
use televisit_tests::netem::report::{table, DirectionFigures, DirectionRun};
use televisit_tests::netem::{LinkConfig, Relay, RelayConfig, Side};
use televisit_tests::TestServer;

const MS: Duration = Duration::from_millis(1);
const WAIT: Duration = Duration::from_secs(30);

/// The emulator is only worth something if nothing bypasses it: when its links go dark, so does
/// the call's media.
#[tokio::test(flavor = "multi_thread")]
async fn every_media_packet_crosses_the_relay() {
    let link =
        LinkConfig { schedule: vec![(Duration::from_secs(4), 0)], ..LinkConfig::new(3_000_000, 10 * MS) };
    let call = EmulatedCall::start(CallSetup {
        link: RelayConfig::symmetric(link),
        doctor_camera: true,
        patient_camera: false,
    })
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let origin = call.relay.origin();
    let decoded = call.patient.log().decoded;
    let audio = call.doctor.log().audio_frames;
    call.finish().await;

    let before = decoded.iter().filter(|d| d.0 < origin + Duration::from_secs(4)).count();
    // Pictures already on their way at 4 s may still be decoded a little later on a busy machine.
    let after: Vec<_> = decoded.iter().filter(|d| d.0 > origin + Duration::from_millis(5_500)).collect();
    assert!(before >= 10, "the patient decoded only {before} pictures in the first 4 s");
    assert!(
        after.is_empty(),
        "{} pictures decoded after the link went dark: a path bypasses it",
        after.len()
    );
    assert!(audio > 100, "the doctor heard the patient ({audio} audio frames)");
    for to in [Side::A, Side::B] {
        let report = call.relay.report(to);
        let sent = report.records.iter().filter(|r| matches!(r.fate, Fate::Sent { .. })).count();
        assert!(sent > 100, "{sent} packets crossed toward {to:?}");
        assert_eq!(report.undeliverable, 0);
    }
}

/// The way a browser is put behind the emulator: only our side is wrapped, and it hides the
/// peer's candidates; the peer (here a plain client that advertises its real address, like a
/// browser) still reaches us only through the relay.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_is_not_wrapped_is_reached_through_the_relay_too() {
    let link =
        LinkConfig { schedule: vec![(Duration::from_secs(4), 0)], ..LinkConfig::new(3_000_000, 10 * MS) };
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let relay = Relay::start(RelayConfig::symmetric(link)).await.unwrap();
    let patient = Participant::join_with(&visit.patient_link, false, |webrtc| webrtc);
    patient.wait_for_state(CallState::WaitingRoom, WAIT).await;
    let doctor = Participant::join_with(&visit.doctor_link, true, |webrtc| {
        relay.media_with_plain_peer(Side::A, webrtc)
    });
    for side in [&doctor, &patient] {
        side.wait_for_state(CallState::Connected, WAIT).await;
    }
    relay.restart_schedule();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let origin = relay.origin();
    let decoded = patient.log().decoded;
    for side in [&doctor, &patient] {
        side.close();
    }

    let before = decoded.iter().filter(|d| d.0 < origin + Duration::from_secs(4)).count();
    let after = decoded.iter().filter(|d| d.0 > origin + Duration::from_millis(5_500)).count();
    assert!(before >= 10, "the patient decoded only {before} pictures in the first 4 s");
    assert_eq!(after, 0, "pictures decoded after the link went dark: a path bypasses it");
    let crossed =
        relay.report(Side::B).records.iter().filter(|r| matches!(r.fate, Fate::Sent { .. })).count();
    assert!(crossed > 100, "{crossed} packets crossed toward the patient");
}

/// A thin lossy link (800 kbps, 50 ms one way, 1 % loss, 300 ms queue) for 20 s: video keeps
/// being decoded, the queue does not overflow for long, and the sender picks a rung that fits.
/// Counts and bounds, not timing. (With the crate's GCC, NACK and pacer the video stopped for
/// good within seconds on this link: 25 pictures decoded in 20 s, a 14 s stall, 9 % queue drops.)
#[tokio::test(flavor = "multi_thread")]
async fn a_call_on_a_thin_lossy_link_keeps_its_video_and_fits_the_link() {
    let link = LinkConfig { loss: 0.01, ..LinkConfig::new(800_000, 50 * MS) };
    let call = EmulatedCall::start(CallSetup {
        link: RelayConfig::symmetric(link),
        doctor_camera: true,
        patient_camera: false,
    })
    .await;
    let length = Duration::from_secs(20);
    tokio::time::sleep(length).await;
    let end = Instant::now();
    let origin = call.relay.origin();
    let (doctor, patient) = (call.doctor.log(), call.patient.log());
    call.finish().await;
    let report = call.relay.report(Side::B);
    let audio = call.relay.audio_delays(Side::B);
    let run = DirectionRun {
        origin,
        duration: length,
        link: &report,
        sender: &doctor,
        receiver: &patient,
        audio_delays: &audio,
    };
    eprintln!(
        "{}",
        table("800 kbps, 50 ms, 1 % loss", &[("doctor → patient".into(), &DirectionFigures::compute(&run))])
    );
    // The sender's view, second by second, for whoever reads a failure.
    for (at, stats) in &doctor.stats {
        eprintln!(
            "{:>5.1} s  estimate {:>5} kbps  acknowledged {:>5} kbps  sent {:>5} kbps  {:?}",
            (*at - origin).as_secs_f64(),
            stats.available_outgoing_bitrate_bps.unwrap_or(0) / 1000,
            stats.acknowledged_bitrate_bps.unwrap_or(0) / 1000,
            stats.send_bitrate_bps / 1000,
            stats.loss_recovery,
        );
    }
    let mut failures = Vec::new();

    // No lasting stall: after the first second, no 3 s without a decoded picture, to the end.
    let mut times: Vec<Instant> =
        patient.decoded.iter().map(|d| d.0).filter(|t| *t >= origin + Duration::from_secs(1)).collect();
    times.push(end);
    let longest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(length);
    if times.len() <= 100 {
        failures.push(format!("only {} pictures decoded", times.len() - 1));
    }
    if longest >= Duration::from_secs(3) {
        failures.push(format!("video stalled for {longest:?}"));
    }

    // The queue drops under 5 % of the packets (the random 1 % aside).
    let dropped = report.records.iter().filter(|r| r.fate == Fate::QueueFull).count();
    let share = dropped as f64 / report.records.len().max(1) as f64;
    if share >= 0.05 {
        failures.push(format!("the queue dropped {:.1} % of the packets", 100.0 * share));
    }

    // The rung fits 800 kbps: not above 540p by the end.
    let rung = doctor.rungs.last().map_or(default_target().rung, |(_, r)| *r);
    if rung.height > 540 {
        failures.push(format!("still sending {} at 800 kbps", rung.name));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
