//! Video codec negotiation across a real call (loopback, through the real server): both sides
//! offer what they support in their order of preference, the answerer sends the first codec of
//! the offer it supports, and the offerer follows the answer. The app hears which codec to encode
//! (`VideoCodec`) and which one the peer's frames come in (`RemoteVideoCodec`), and frames cross
//! intact: VP8 frames, or H.264 Annex-B access units rebuilt from RTP (FU-A, STAP-A).

use std::sync::Arc;
use std::time::Duration;

use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallOptions, ClientEvent};
use televisit_core::frame::{h264_nal_units, nal_type, EncodedFrame, FrameKind, VideoCodec};
use televisit_tests::{Recorder, TestServer};

const WAIT: Duration = Duration::from_secs(15);

fn join(link: &str, video_codecs: Vec<VideoCodec>) -> (Arc<CallClient>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let media = Arc::new(WebRtcMedia::new(WebRtcSettings {
        udp_addrs: vec!["127.0.0.1:0".into()],
        video_codecs,
        ..Default::default()
    }));
    let client = CallClient::new(link, recorder.clone(), media, CallOptions::default()).expect("valid link");
    client.join();
    (Arc::new(client), recorder)
}

/// A small VP8-looking frame with counter `n` in bytes 2..6 (a keyframe every 10th).
fn vp8_frame(n: u32) -> EncodedFrame {
    let keyframe = n.is_multiple_of(10);
    let mut data = vec![if keyframe { 0x10 } else { 0x11 }, 1];
    data.extend_from_slice(&n.to_be_bytes());
    data.resize(600, 0x33);
    EncodedFrame {
        kind: FrameKind::Video,
        data,
        duration: Duration::from_millis(100),
        keyframe,
        timing: Default::default(),
    }
}

/// A NAL unit of this header byte carrying counter `n`, `len` bytes long. Like a real one (after
/// emulation prevention) it holds no `00 00 01`: the counter is written as four 7-bit digits with
/// the top bit set, and the filler is 0x5a.
fn nal(header: u8, n: u32, len: usize) -> Vec<u8> {
    let mut nal = vec![header];
    nal.extend((0..4).rev().map(|k| 0x80 | ((n >> (7 * k)) & 0x7f) as u8));
    nal.resize(len, 0x5a);
    nal
}

/// The NAL units of H.264 access unit `n`: SPS, PPS and an IDR slice every 10th (a keyframe),
/// one non-IDR slice otherwise. The IDR slice is larger than an RTP packet, so it travels as
/// FU-A fragments; SPS and PPS go as a STAP-A.
fn h264_nals(n: u32) -> Vec<Vec<u8>> {
    if n.is_multiple_of(10) {
        vec![nal(0x67, n, 12), nal(0x68, n, 6), nal(0x65, n, 3000)]
    } else {
        vec![nal(0x41, n, 500)]
    }
}

/// Access unit `n` in Annex-B form.
fn h264_frame(n: u32) -> EncodedFrame {
    let mut data = Vec::new();
    for nal in h264_nals(n) {
        data.extend_from_slice(&[0, 0, 0, 1]);
        data.extend_from_slice(&nal);
    }
    EncodedFrame {
        kind: FrameKind::Video,
        data,
        duration: Duration::from_millis(100),
        keyframe: n.is_multiple_of(10),
        timing: Default::default(),
    }
}

/// The counter of an H.264 access unit made by [`h264_frame`] (bytes 1..5 of its first NAL unit).
fn h264_counter(frame: &EncodedFrame) -> Option<u32> {
    let first = h264_nal_units(&frame.data).next()?;
    first.get(1..5).map(|digits| digits.iter().fold(0, |n, d| (n << 7) | u32::from(d & 0x7f)))
}

fn connected(events: &Recorder) {
    events.wait_for(WAIT, |e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)));
}

/// Starts the doctor sending `frame(n)` every 50 ms.
fn send_frames(doctor: &Arc<CallClient>, frame: fn(u32) -> EncodedFrame) -> tokio::task::JoinHandle<()> {
    let doctor = Arc::clone(doctor);
    tokio::spawn(async move {
        for n in 0.. {
            doctor.send_frame(frame(n));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// The camera frames the patient received so far.
fn received(events: &Recorder) -> Vec<EncodedFrame> {
    events.remote_frames(FrameKind::Video)
}

fn wait_for_frames(events: &Recorder, count: usize) -> Vec<EncodedFrame> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let frames = received(events);
        if frames.len() >= count {
            return frames;
        }
        assert!(std::time::Instant::now() < deadline, "only {} frames arrived", frames.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The codec events each side heard: (to encode, the peer's camera).
fn codec_events(events: &Recorder) -> (Vec<VideoCodec>, Vec<VideoCodec>) {
    let all = events.events();
    let sending = all.iter().filter_map(|e| match e {
        ClientEvent::VideoCodec(c) => Some(*c),
        _ => None,
    });
    let receiving = all.iter().filter_map(|e| match e {
        ClientEvent::RemoteVideoCodec(FrameKind::Video, c) => Some(*c),
        _ => None,
    });
    (sending.collect(), receiving.collect())
}

/// The `VideoCodec` event comes before anything is connected, and the `RemoteVideoCodec` one
/// before the first remote frame.
fn assert_event_order(events: &Recorder) {
    let all = events.events();
    let position = |p: &dyn Fn(&ClientEvent) -> bool| all.iter().position(p);
    let codec = position(&|e| matches!(e, ClientEvent::VideoCodec(_))).expect("a VideoCodec event");
    let connected = position(&|e| *e == ClientEvent::Call(CallEvent::StateChanged(CallState::Connected)))
        .expect("connected");
    assert!(codec < connected, "the codec to encode is known before frames are wanted");
    if let Some(first_frame) =
        position(&|e| matches!(e, ClientEvent::RemoteFrame(f) if f.kind == FrameKind::Video))
    {
        let remote = position(&|e| matches!(e, ClientEvent::RemoteVideoCodec(FrameKind::Video, _)))
            .expect("a RemoteVideoCodec event");
        assert!(remote < first_frame, "the decoder's codec is known before its first frame");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_sides_preferring_vp8_use_vp8_and_frames_flow() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let (patient, patient_events) = join(&visit.patient_link, vec![VideoCodec::Vp8, VideoCodec::H264]);
    let (doctor, doctor_events) = join(&visit.doctor_link, vec![VideoCodec::Vp8, VideoCodec::H264]);
    connected(&doctor_events);
    connected(&patient_events);
    let sender = send_frames(&doctor, vp8_frame);
    let frames = wait_for_frames(&patient_events, 10);
    sender.abort();

    assert_eq!(codec_events(&doctor_events).0, vec![VideoCodec::Vp8]);
    assert_eq!(codec_events(&patient_events), (vec![VideoCodec::Vp8], vec![VideoCodec::Vp8]));
    assert_event_order(&patient_events);
    assert_event_order(&doctor_events);
    let mut counters = Vec::new();
    for frame in &frames {
        let n = u32::from_be_bytes(frame.data[2..6].try_into().unwrap());
        // Intact; received, it also carries its timing.
        assert!(frame.timing.rtp_timestamp.is_some(), "frame {n} has its RTP timestamp");
        assert_eq!(*frame, EncodedFrame { timing: frame.timing, ..vp8_frame(n) }, "frame {n} crossed intact");
        counters.push(n);
    }
    assert!(counters.windows(2).all(|w| w[1] == w[0] + 1), "all of them, in order: {counters:?}");
    doctor.close();
    patient.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_answerer_sends_the_offers_first_choice_h264_and_access_units_cross_intact() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    // The patient prefers VP8, but the doctor's offer puts H.264 first: the peer's choice wins.
    let (patient, patient_events) = join(&visit.patient_link, vec![VideoCodec::Vp8, VideoCodec::H264]);
    let (doctor, doctor_events) = join(&visit.doctor_link, vec![VideoCodec::H264, VideoCodec::Vp8]);
    connected(&doctor_events);
    connected(&patient_events);
    let sender = send_frames(&doctor, h264_frame);
    let frames = wait_for_frames(&patient_events, 25);
    sender.abort();

    assert_eq!(codec_events(&doctor_events).0, vec![VideoCodec::H264], "the doctor encodes H.264");
    assert_eq!(
        codec_events(&patient_events),
        (vec![VideoCodec::H264], vec![VideoCodec::H264]),
        "the patient encodes H.264 too and decodes the doctor's camera as H.264"
    );
    assert_event_order(&patient_events);

    // Every access unit arrives whole: the same NAL units, in order, and the counter survives.
    let mut counters = Vec::new();
    for frame in &frames {
        let n = h264_counter(frame).expect("an access unit with a counter");
        let nals: Vec<Vec<u8>> = h264_nal_units(&frame.data).map(<[u8]>::to_vec).collect();
        assert_eq!(nals, h264_nals(n), "access unit {n} crossed intact");
        assert_eq!(
            frame.keyframe,
            n.is_multiple_of(10),
            "access unit {n}: keyframe iff it holds an IDR slice"
        );
        counters.push(n);
    }
    assert!(counters.windows(2).all(|w| w[1] == w[0] + 1), "all of them, in order: {counters:?}");
    let keyframes: Vec<u32> = counters.iter().copied().filter(|n| n.is_multiple_of(10)).collect();
    assert!(keyframes.len() >= 2, "keyframes (SPS/PPS/IDR, FU-A) arrived too: {counters:?}");
    assert!(frames.iter().filter(|f| f.keyframe).all(|f| {
        h264_nal_units(&f.data).map(nal_type).collect::<Vec<_>>() == vec![Some(7), Some(8), Some(5)]
    }));
    doctor.close();
    patient.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_side_without_h264_answers_an_h264_first_offer_with_vp8() {
    let server = TestServer::start(|_| {}).await;
    let visit = server.started_visit().await;
    let (patient, patient_events) = join(&visit.patient_link, vec![VideoCodec::Vp8]);
    let (doctor, doctor_events) = join(&visit.doctor_link, vec![VideoCodec::H264, VideoCodec::Vp8]);
    connected(&doctor_events);
    connected(&patient_events);
    let sender = send_frames(&doctor, vp8_frame);
    let frames = wait_for_frames(&patient_events, 10);
    sender.abort();

    assert_eq!(codec_events(&doctor_events).0, vec![VideoCodec::Vp8], "the doctor follows the answer");
    assert_eq!(codec_events(&patient_events), (vec![VideoCodec::Vp8], vec![VideoCodec::Vp8]));
    for frame in &frames {
        let n = u32::from_be_bytes(frame.data[2..6].try_into().unwrap());
        // Intact; received, it also carries its timing.
        assert!(frame.timing.rtp_timestamp.is_some(), "frame {n} has its RTP timestamp");
        assert_eq!(*frame, EncodedFrame { timing: frame.timing, ..vp8_frame(n) }, "frame {n} crossed intact");
    }
    // And the other way: the patient's VP8 reaches the doctor, who decodes it as VP8.
    let sender = {
        let patient = Arc::clone(&patient);
        tokio::spawn(async move {
            for n in 0.. {
                patient.send_frame(vp8_frame(n));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    wait_for_frames(&doctor_events, 5);
    sender.abort();
    assert_eq!(codec_events(&doctor_events).1, vec![VideoCodec::Vp8]);
    doctor.close();
    patient.close();
}
