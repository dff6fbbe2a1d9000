//! The video engine end to end: two call clients through the real server and a real peer
//! connection. The doctor's camera thread pushes raw pictures of the test pattern (NV12 from a
//! sensor mounted sideways, with its rotation and capture time) into its `VideoSource`, as a
//! camera callback would; the patient's renderer thread pulls decoded I420 pictures from its
//! `VideoSink`, as a display link would, and reads the frame counter the pattern carries. Once on
//! loopback, and through the link emulator with loss, delay and jitter: in VP8, and in H.264 as
//! two phones negotiate it (the software encoder here standing in for their hardware ones).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use televisit_codecs::software_codecs;
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, ClientEvent};
use televisit_core::frame::FrameKind;
use televisit_core::frame::VideoCodec;
use televisit_core::video::pattern::{picture, read_counter};
use televisit_core::video::{
    CameraPicture, CameraPlanes, DecodedPicture, Rotation, VideoError, VideoSinkStats, VideoSourceStats,
};
use televisit_tests::netem::{LinkConfig, Relay, RelayConfig};
use televisit_tests::{
    connected_on_loopback, connected_through_relay, connected_through_relay_with, unix_us, Recorder,
    TestServer,
};

const WAIT: Duration = Duration::from_secs(30);
/// The phone held upright: a 360×640 picture, which its sensor delivers as 640×360 (small enough
/// for a debug build to make 30 a second).
const UPRIGHT: (u32, u32) = (360, 640);

/// Picture `n` of the pattern as a sideways sensor delivers it: NV12, turned a quarter
/// counter-clockwise, so that the engine must turn it a quarter clockwise.
fn sensor_picture(n: u32, capture_time_us: i64) -> CameraPicture {
    let upright = picture(n, UPRIGHT.0, UPRIGHT.1);
    let sideways = upright.rotated(Rotation::ThreeQuarters);
    let uv = sideways.u.iter().zip(&sideways.v).flat_map(|(&u, &v)| [u, v]).collect();
    CameraPicture {
        width: sideways.width,
        height: sideways.height,
        planes: CameraPlanes::Nv12 { y: sideways.y, uv },
        rotation: Rotation::Quarter,
        capture_time_us,
    }
}

/// The doctor's camera: 30 pictures a second, in real time, until `stop`. Returns how many it
/// pushed.
fn camera(client: &CallClient, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    let source = client.video_source(software_codecs()).expect("a source");
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let at = start + Duration::from_micros(33_333) * n;
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            source
                .push(sensor_picture(n, at.duration_since(start).as_micros() as i64))
                .expect("a picture is taken");
            n += 1;
        }
        n
    })
}

/// What the patient's renderer saw: each picture pulled, with when.
struct Shown {
    at: Instant,
    picture: DecodedPicture,
    counter: Option<u32>,
}

/// The patient's renderer: pulls every 10 ms until `stop`.
fn renderer(client: &CallClient, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Shown>> {
    let sink = client.video_sink(software_codecs()).expect("a sink");
    std::thread::spawn(move || {
        let mut shown = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            while let Some(picture) = sink.pull().expect("the sink is open") {
                let counter = read_counter(&picture.picture);
                shown.push(Shown { at: Instant::now(), picture, counter });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        shown
    })
}

/// Runs the camera and the renderer for `seconds`; returns what was shown and the engines' stats.
fn run(
    doctor: &CallClient,
    patient: &CallClient,
    seconds: u64,
) -> (Vec<Shown>, u32, VideoSourceStats, VideoSinkStats) {
    let stop = Arc::new(AtomicBool::new(false));
    let pushing = camera(doctor, stop.clone());
    let showing = renderer(patient, stop.clone());
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let (pushed, shown) = (pushing.join().unwrap(), showing.join().unwrap());
    let source = doctor.video_source(software_codecs()).unwrap().stats();
    let sink = patient.video_sink(software_codecs()).unwrap().stats();
    (shown, pushed, source, sink)
}

/// What a patient checks on the screen: the doctor upright and moving, in order, not lagging.
fn check_shown(what: &str, shown: &[Shown], pushed: u32, sink: &VideoSinkStats, min_fps: f64) {
    let summary = format!("{what}: {} shown of {pushed} pushed, {sink:?}", shown.len());
    let last = shown.last().unwrap_or_else(|| panic!("nothing shown; {summary}"));
    // Upright: portrait, in the camera's 9:16 (at whichever rung the ladder reached).
    let (width, height) = (last.picture.picture.width, last.picture.picture.height);
    assert!(height > width && (width * 16).abs_diff(height * 9) <= 16, "{width}x{height}; {summary}");
    // Every picture of the pattern, and in the order captured.
    let counters: Vec<u32> = shown.iter().filter_map(|s| s.counter).collect();
    assert!(
        counters.len() * 10 >= shown.len() * 9,
        "counters unreadable: {} of {}; {summary}",
        counters.len(),
        shown.len()
    );
    assert!(counters.windows(2).all(|w| w[0] < w[1]), "out of order: {counters:?}");
    // Moving over the last two seconds at a frame rate a patient would call video.
    let window = last.at - Duration::from_secs(2);
    let recent: Vec<&Shown> = shown.iter().filter(|s| s.at >= window).collect();
    let fps = recent.len() as f64 / 2.0;
    let timeline: Vec<(u128, Option<u32>)> =
        recent.iter().map(|s| ((s.at - window).as_millis(), s.counter)).collect();
    assert!(
        fps >= min_fps,
        "{fps} pictures/s over the last 2 s (ms into them, picture): {timeline:?}; {summary}"
    );
    // Fresh: the last picture shown was captured less than a second before the camera stopped.
    let newest = counters.last().copied().unwrap_or(0);
    assert!(
        pushed - newest <= 30,
        "the last picture shown was {newest}, the camera was at {pushed}; {summary}"
    );
    // Dated on the doctor's clock (this machine's) for lip sync, a network and a decoder ago.
    let captured = last.picture.capture_time_us.unwrap_or_else(|| panic!("no capture time; {summary}"));
    let age_ms = (unix_us() - captured) / 1000;
    assert!((0..2_000).contains(&age_ms), "captured {age_ms} ms before it was checked; {summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pictures_pushed_into_the_doctors_source_come_out_of_the_patients_sink_upright_and_in_order() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let ((patient, patient_events), (doctor, doctor_events)) = connected_on_loopback(&visit, WAIT);

    let (shown, pushed, source, sink) = run(&doctor, &patient, 5);
    check_shown("loopback", &shown, pushed, &sink, 20.0);
    assert!(source.frames_sent >= u64::from(pushed) / 2, "{source:?}");
    assert!(
        source.keyframes_sent * 10 < source.frames_sent,
        "keyframes only at the start, on rung changes: {source:?}"
    );
    assert!(source.encoded_height > source.encoded_width, "encoded upright: {source:?}");
    assert_eq!(sink.decode_errors, 0, "loopback loses nothing: {sink:?}");
    // The engine took the work off the app: the listener hears no encoded camera frames.
    assert!(patient_events.remote_frames(FrameKind::Video).is_empty());
    // The doctor's listener still hears the ladder, for the app to show.
    assert!(doctor_events.events().iter().any(|e| matches!(e, ClientEvent::EncoderBitrate(_))));

    let bad = CameraPicture { rotation: Rotation::None, ..sensor_picture(0, 0) };
    let mut short = bad.clone();
    short.planes = CameraPlanes::Nv12 { y: vec![0; 10], uv: vec![] };
    let source = doctor.video_source(software_codecs()).unwrap();
    assert!(matches!(source.push(short), Err(VideoError::Codec(_))), "planes of the wrong size are refused");
    doctor.close();
    assert_eq!(source.push(bad), Err(VideoError::Closed));
    assert!(doctor.video_source(software_codecs()).is_err(), "no source after close");
    patient.close();
}

/// Home Wi-Fi on a bad day: 2 % loss, 40 ms each way ±15 ms, and a 2 s drop-out 3 s into the
/// video. Lost packets are resent; after the drop-out the picture is broken until a keyframe, which
/// the receiving side asks for on its own (no picture predicted from a lost one is shown: it would
/// be corrupt, seen as an older picture's counter), and within a second of the link's return the
/// patient sees the doctor again, moving and in order.
#[tokio::test(flavor = "multi_thread")]
async fn through_a_lossy_link_with_a_drop_out_the_sink_recovers_and_the_picture_keeps_moving() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let rate = 4_000_000;
    let link = LinkConfig {
        loss: 0.02,
        jitter: Duration::from_millis(15),
        seed: 5,
        schedule: vec![(Duration::from_secs(3), 0), (Duration::from_secs(5), rate)],
        ..LinkConfig::new(rate, Duration::from_millis(40))
    };
    let relay = Relay::start(RelayConfig::symmetric(link)).await.expect("the relay binds on loopback");
    let (patient, doctor, _) = connected_through_relay(&visit, &relay, Arc::new(Recorder::default()), WAIT);

    // The drop-out's time counts from the camera's start, however long the call took to connect;
    // the last 2 s checked start a second after the link's return.
    relay.restart_schedule();
    let (shown, pushed, source, sink) = run(&doctor, &patient, 8);
    check_shown("2 % loss", &shown, pushed, &sink, 10.0);
    assert!(source.frames_sent > 0 && sink.frames_received > 0, "{source:?} {sink:?}");
    doctor.close();
    patient.close();
}

/// Two phones: both offer H.264 first, as the Kotlin and Swift defaults do.
fn phone_media() -> Arc<WebRtcMedia> {
    Arc::new(WebRtcMedia::new(WebRtcSettings {
        udp_addrs: vec!["127.0.0.1:0".into()],
        video_codecs: vec![VideoCodec::H264, VideoCodec::Vp8],
        ..Default::default()
    }))
}

/// The same bad Wi-Fi (2 % loss, 40 ms ±15 ms) in H.264: OpenH264's access units cross as RTP
/// fragments (FU-A), lost ones are resent, and the patient sees the doctor upright and in order.
#[tokio::test(flavor = "multi_thread")]
async fn two_phones_negotiate_h264_and_the_picture_crosses_a_lossy_link() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let link = LinkConfig {
        loss: 0.02,
        jitter: Duration::from_millis(15),
        seed: 11,
        ..LinkConfig::new(4_000_000, Duration::from_millis(40))
    };
    let relay = Relay::start(RelayConfig::symmetric(link)).await.expect("the relay binds on loopback");
    let patient_events = Arc::new(Recorder::default());
    let (patient, doctor, doctor_events) =
        connected_through_relay_with(&visit, &relay, patient_events.clone(), WAIT, phone_media);
    for events in [&doctor_events, &patient_events] {
        assert!(events.events().contains(&ClientEvent::VideoCodec(VideoCodec::H264)), "both encode H.264");
    }

    let (shown, pushed, source, sink) = run(&doctor, &patient, 6);
    check_shown("H.264, 2 % loss", &shown, pushed, &sink, 10.0);
    assert!(source.encoded_height > source.encoded_width, "encoded upright: {source:?}");
    assert_eq!(source.encoder_errors, 0, "the ladder's bitrate moves reach the running encoder: {source:?}");
    assert!(
        patient_events.events().contains(&ClientEvent::RemoteVideoCodec(FrameKind::Video, VideoCodec::H264)),
        "the patient decodes H.264"
    );
    doctor.close();
    patient.close();
}
