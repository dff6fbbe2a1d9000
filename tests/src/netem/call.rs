//! A two-party call through the real server with the media path through a [`Relay`], and real
//! encoded media both ways: the doctor (side A) and the patient (side B) each send the core's
//! synthetic camera (VP8, live at the ladder's rung) and microphone (Opus), decode what arrives and
//! log what a benchmark needs: rung changes, stats, decoded pictures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use televisit_codecs::audio::OpusEncoder;
use televisit_codecs::pattern::SineTone;
use televisit_codecs::video;
use televisit_core::call::ladder::{EncoderTarget, Rung};
use televisit_core::call::machine::{CallEvent, CallState};
use televisit_core::client::media::{MediaBackend, MediaStats};
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallListener, CallOptions, ClientEvent};
use televisit_core::frame::{FrameKind, VideoCodec};
use televisit_join::{spawn_synthetic_media, PictureReader, SyntheticMedia};

use super::relay::{Relay, RelayConfig, Side};
use crate::TestServer;

/// What a call through the emulator looks like.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// The link, both directions.
    pub link: RelayConfig,
    /// The doctor sends camera video (else microphone only).
    pub doctor_camera: bool,
    /// The patient sends camera video (else microphone only).
    pub patient_camera: bool,
}

/// A connected call through the emulator; the links' schedules start when both sides connected.
pub struct EmulatedCall {
    /// The server the call runs through (kept alive for the call).
    pub server: TestServer,
    /// The relay on the media path.
    pub relay: Relay,
    /// Side A.
    pub doctor: Arc<Participant>,
    /// Side B.
    pub patient: Arc<Participant>,
}

impl EmulatedCall {
    /// Starts a server and a visit, joins the patient then the doctor through the relay, and
    /// returns once both are connected (panics after 30 s). Needs a multi-threaded tokio runtime.
    pub async fn start(setup: CallSetup) -> EmulatedCall {
        let server = TestServer::start(|_| {}).await;
        let visit = server.started_visit().await;
        let relay = Relay::start(setup.link).await.expect("relay binds on loopback");
        let patient = Participant::join(&visit.patient_link, &relay, Side::B, setup.patient_camera);
        patient.wait_for_state(CallState::WaitingRoom, Duration::from_secs(30)).await;
        let doctor = Participant::join(&visit.doctor_link, &relay, Side::A, setup.doctor_camera);
        for side in [&doctor, &patient] {
            side.wait_for_state(CallState::Connected, Duration::from_secs(30)).await;
        }
        relay.restart_schedule();
        EmulatedCall { server, relay, doctor, patient }
    }

    /// The participant on `side`.
    pub fn participant(&self, side: Side) -> &Arc<Participant> {
        match side {
            Side::A => &self.doctor,
            Side::B => &self.patient,
        }
    }

    /// Stops the media, ends the call (the doctor hangs up) and closes both clients; the logs and
    /// the relay's reports stay readable.
    pub async fn finish(&self) {
        for side in [&self.doctor, &self.patient] {
            side.stop_media();
        }
        if let Some(client) = self.doctor.client.get() {
            client.hang_up();
            let _ = tokio::time::timeout(Duration::from_secs(5), client.ended()).await;
        }
        for side in [&self.doctor, &self.patient] {
            side.close();
        }
    }
}

/// What one participant saw, timestamped.
#[derive(Debug, Default, Clone)]
pub struct ParticipantLog {
    /// Rungs the ladder chose for this side's camera.
    pub rungs: Vec<(Instant, Rung)>,
    /// Encoder bitrates asked for.
    pub encoder_bitrates: Vec<(Instant, u64)>,
    /// The once-a-second stats.
    pub stats: Vec<(Instant, MediaStats)>,
    /// When each remote picture was decoded, and its size.
    pub decoded: Vec<(Instant, u32, u32)>,
    /// Remote video frames that did not decode.
    pub decode_errors: u64,
    /// Keyframes the peer (or the pacer) asked this side for.
    pub keyframes_requested: u64,
    /// Remote audio frames received.
    pub audio_frames: u64,
}

enum Sender {
    Camera(SyntheticMedia),
    Microphone(std::thread::JoinHandle<()>),
}

/// One side of an [`EmulatedCall`]: a call client with synthetic media, which decodes the peer's
/// video as it arrives.
pub struct Participant {
    client: OnceLock<Arc<CallClient>>,
    state: tokio::sync::watch::Sender<CallState>,
    sending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sender: Mutex<Option<Sender>>,
    rung: Mutex<Rung>,
    pictures: Mutex<(PictureReader, Option<Instant>)>,
    log: Mutex<ParticipantLog>,
}

impl Participant {
    /// Joins `link` through `relay` as `side`, with the camera on or off.
    pub fn join(link: &str, relay: &Relay, side: Side, camera: bool) -> Arc<Participant> {
        Participant::join_with(link, camera, |webrtc| relay.media(side, webrtc))
    }

    /// Joins `link` on a VP8-only WebRTC backend gathering one host candidate on 127.0.0.1, which
    /// `route` may wrap (e.g. [`Relay::media_with_plain_peer`]).
    pub fn join_with(
        link: &str,
        camera: bool,
        route: impl FnOnce(Arc<dyn MediaBackend>) -> Arc<dyn MediaBackend>,
    ) -> Arc<Participant> {
        let participant = Arc::new(Participant {
            client: OnceLock::new(),
            state: tokio::sync::watch::channel(CallState::Idle).0,
            sending: Arc::default(),
            stop: Arc::default(),
            sender: Mutex::new(None),
            rung: Mutex::new(video::default_target().rung),
            pictures: Mutex::new((PictureReader::new().expect("libvpx decoder"), None)),
            log: Mutex::default(),
        });
        // The software codec is libvpx: VP8 only, one host candidate on loopback.
        let webrtc: Arc<dyn MediaBackend> = Arc::new(WebRtcMedia::new(WebRtcSettings {
            udp_addrs: vec!["127.0.0.1:0".into()],
            video_codecs: vec![VideoCodec::Vp8],
            ..WebRtcSettings::default()
        }));
        let client = Arc::new(
            CallClient::new(link, participant.clone(), route(webrtc), CallOptions::default())
                .expect("valid link"),
        );
        let _ = participant.client.set(Arc::clone(&client));
        let sender = if camera {
            let media = spawn_synthetic_media(
                Arc::clone(&client),
                Arc::clone(&participant.sending),
                Arc::clone(&participant.stop),
            )
            .expect("libvpx and libopus encoders");
            Sender::Camera(media)
        } else {
            client.set_camera_enabled(false);
            Sender::Microphone(spawn_microphone(
                Arc::clone(&client),
                Arc::clone(&participant.sending),
                Arc::clone(&participant.stop),
            ))
        };
        *participant.sender.lock().unwrap() = Some(sender);
        client.join();
        participant
    }

    /// Waits until the call reaches `state` (panics after `timeout`).
    pub async fn wait_for_state(&self, state: CallState, timeout: Duration) {
        assert!(self.reached_state(state, timeout).await, "not {state:?} after {timeout:?}");
    }

    /// Whether the call reaches `state` within `timeout` (true at once if it is there).
    pub async fn reached_state(&self, state: CallState, timeout: Duration) -> bool {
        let mut watch = self.state.subscribe();
        let reached = match tokio::time::timeout(timeout, watch.wait_for(|s| *s == state)).await {
            Ok(result) => {
                result.expect("the participant lives");
                true
            }
            Err(_) => false,
        };
        reached
    }

    /// The call client (set once joined).
    pub fn client(&self) -> Option<&Arc<CallClient>> {
        self.client.get()
    }

    /// Stops the media and closes the client (leaving the call).
    pub fn close(&self) {
        self.stop_media();
        if let Some(client) = self.client.get() {
            client.close();
        }
    }

    /// A copy of the log so far.
    pub fn log(&self) -> ParticipantLog {
        self.log.lock().unwrap().clone()
    }

    /// Stops sending and waits for the media thread.
    pub fn stop_media(&self) {
        self.stop.store(true, Ordering::Relaxed);
        match self.sender.lock().unwrap().take() {
            Some(Sender::Camera(media)) => {
                let _ = media.join();
            }
            Some(Sender::Microphone(thread)) => {
                let _ = thread.join();
            }
            None => {}
        }
    }

    fn with_camera(&self, f: impl FnOnce(&SyntheticMedia)) {
        if let Some(Sender::Camera(media)) = self.sender.lock().unwrap().as_ref() {
            f(media);
        }
    }

    fn decode(&self, frame: &televisit_core::frame::EncodedFrame) {
        let mut pictures = self.pictures.lock().unwrap();
        let (reader, asked_at) = &mut *pictures;
        let now = Instant::now();
        if reader.receive(frame).is_ok() {
            let (width, height) = reader.size.unwrap_or_default();
            self.log.lock().unwrap().decoded.push((now, width, height));
        } else {
            self.log.lock().unwrap().decode_errors += 1;
            // The picture is broken until a keyframe: ask the sender, at most once a second.
            if asked_at.is_none_or(|at| now - at >= Duration::from_secs(1)) {
                *asked_at = Some(now);
                if let Some(client) = self.client.get() {
                    client.request_keyframe(FrameKind::Video);
                }
            }
        }
    }
}

impl CallListener for Participant {
    fn on_event(&self, event: ClientEvent) {
        let now = Instant::now();
        match event {
            ClientEvent::Call(CallEvent::StateChanged(state)) => {
                if state == CallState::Connected {
                    self.sending.store(true, Ordering::Relaxed);
                }
                self.state.send_replace(state);
            }
            ClientEvent::Stats(stats) => self.log.lock().unwrap().stats.push((now, stats)),
            ClientEvent::VideoRungChanged(rung) => {
                *self.rung.lock().unwrap() = rung;
                self.log.lock().unwrap().rungs.push((now, rung));
                self.with_camera(|media| media.set_rung(rung));
            }
            ClientEvent::EncoderBitrate(bitrate_bps) => {
                let rung = *self.rung.lock().unwrap();
                self.log.lock().unwrap().encoder_bitrates.push((now, bitrate_bps));
                self.with_camera(|media| {
                    media.set_target(EncoderTarget { rung, fps: rung.fps, bitrate_bps })
                });
            }
            ClientEvent::KeyframeRequested(FrameKind::Video) => {
                self.log.lock().unwrap().keyframes_requested += 1;
                self.with_camera(SyntheticMedia::request_keyframe);
            }
            ClientEvent::RemoteFrame(frame) => match frame.kind {
                FrameKind::Video => self.decode(&frame),
                FrameKind::Audio => self.log.lock().unwrap().audio_frames += 1,
                FrameKind::Screen => {}
            },
            _ => {}
        }
    }
}

/// The microphone alone (a 440 Hz tone, Opus, 20 ms frames) for a side whose camera is off.
fn spawn_microphone(
    client: Arc<CallClient>,
    sending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let mut voice = OpusEncoder::new().expect("libopus encoder");
    std::thread::spawn(move || {
        let mut tone = SineTone::new(440.0);
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if !sending.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                next = Instant::now();
                continue;
            }
            while Instant::now() >= next {
                next += Duration::from_millis(20);
                if let Ok(frame) = voice.encode(&tone.next_frame()) {
                    client.send_frame(frame);
                }
            }
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    })
}
