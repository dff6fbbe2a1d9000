//! The WebRTC media backend on webrtc-rs 0.21: one real peer connection per session, with an Opus
//! audio track and a VP8 video track carrying **encoded frames** (phones encode with their hardware
//! codecs; the app hands frames in and gets depacketized frames out).
//!
//! Each session is an actor: [`PeerCommand`]s are queued to a task that owns the peer connection,
//! and everything it learns goes back as [`PeerEvent`]s. Settings that matter (measured in
//! `shared/design/webrtc-notes.md`): ICE checks every 20 ms instead of 200 ms (loopback setup in
//! tens of ms), media only after `Connected` (earlier samples are dropped by the stack).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::media::io::sample_builder::SampleBuilder;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::codec::opus::OpusPacket;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::RtpSender;

use super::media::{MediaBackend, MediaSession, MediaStats, PeerCommand, PeerEvent};
use crate::api::IceServer;
use crate::call::machine::PeerConnectionState;
use crate::frame::{EncodedFrame, FrameKind};
use crate::protocol::{IceCandidate, Role};

/// Settings of the WebRTC backend.
#[derive(Debug, Clone)]
pub struct WebRtcSettings {
    /// Local UDP addresses to gather host candidates on (`0.0.0.0:0` on a device; tests use
    /// `127.0.0.1:0` so no traffic leaves the machine).
    pub udp_addrs: Vec<String>,
    /// Interval between ICE connectivity checks.
    pub ice_check_interval: Duration,
}

impl Default for WebRtcSettings {
    fn default() -> Self {
        WebRtcSettings { udp_addrs: vec!["0.0.0.0:0".into()], ice_check_interval: Duration::from_millis(20) }
    }
}

/// Makes real peer connections. Received frames go to the session's events as
/// [`PeerEvent::Frame`]; frames to send go in with [`PeerCommand::SendFrame`].
pub struct WebRtcMedia {
    settings: WebRtcSettings,
}

impl WebRtcMedia {
    /// A backend with these settings.
    pub fn new(settings: WebRtcSettings) -> WebRtcMedia {
        WebRtcMedia { settings }
    }
}

struct Session {
    commands: mpsc::UnboundedSender<PeerCommand>,
}

impl MediaSession for Session {
    fn command(&mut self, command: PeerCommand) {
        let _ = self.commands.send(command);
    }
}

impl MediaBackend for WebRtcMedia {
    fn create_session(
        &self,
        ice_servers: Vec<IceServer>,
        _role: Role,
        clock_origin: Instant,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Box<dyn MediaSession> {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let settings = self.settings.clone();
        tokio::spawn(async move {
            if let Err(message) =
                run_session(settings, ice_servers, clock_origin, events.clone(), command_rx).await
            {
                let _ = events.send(PeerEvent::Warning(message));
                let _ = events.send(PeerEvent::State(PeerConnectionState::Failed));
            }
        });
        Box::new(Session { commands })
    }
}

/// Counters the receive tasks update and `ReportStats` reads.
#[derive(Default)]
struct Counters {
    frames_received: AtomicU64,
    bytes_received: AtomicU64,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    last_packet_at_ms: AtomicI64,
}

struct Handler {
    events: mpsc::UnboundedSender<PeerEvent>,
    counters: Arc<Counters>,
    origin: Instant,
    connected: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.events.send(PeerEvent::LocalCandidate(IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_m_line_index: init.sdp_mline_index,
            }));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let state = match state {
            RTCPeerConnectionState::Connected => PeerConnectionState::Connected,
            RTCPeerConnectionState::Disconnected => PeerConnectionState::Disconnected,
            RTCPeerConnectionState::Failed => PeerConnectionState::Failed,
            _ => PeerConnectionState::Connecting,
        };
        self.connected.store(state == PeerConnectionState::Connected, Ordering::Relaxed);
        let _ = self.events.send(PeerEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let events = self.events.clone();
        let counters = Arc::clone(&self.counters);
        let origin = self.origin;
        tokio::spawn(receive_track(track, events, counters, origin));
    }
}

/// Depacketizes a remote track into frames.
async fn receive_track(
    track: Arc<dyn TrackRemote>,
    events: mpsc::UnboundedSender<PeerEvent>,
    counters: Arc<Counters>,
    origin: Instant,
) {
    let kind = track.kind().await;
    let (frame_kind, mut builder): (FrameKind, Box<dyn FnMut(rtc::rtp::Packet) -> Vec<Sample> + Send>) =
        if kind == RtpCodecKind::Audio {
            let mut builder = SampleBuilder::new(10, OpusPacket, 48_000);
            (
                FrameKind::Audio,
                Box::new(move |packet| {
                    builder.push(Instant::now(), packet);
                    std::iter::from_fn(|| builder.pop(Instant::now())).collect()
                }),
            )
        } else {
            let mut builder = SampleBuilder::new(128, Vp8Packet::default(), 90_000);
            (
                FrameKind::Video,
                Box::new(move |packet| {
                    builder.push(Instant::now(), packet);
                    std::iter::from_fn(|| builder.pop(Instant::now())).collect()
                }),
            )
        };
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else { continue };
        counters.last_packet_at_ms.store(origin.elapsed().as_millis() as i64, Ordering::Relaxed);
        counters.bytes_received.fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        for sample in builder(packet) {
            if frame_kind == FrameKind::Video {
                counters.frames_received.fetch_add(1, Ordering::Relaxed);
            }
            let keyframe = frame_kind == FrameKind::Video && sample.data.first().is_some_and(|b| b & 1 == 0);
            let frame = EncodedFrame {
                kind: frame_kind,
                data: sample.data.to_vec(),
                duration: sample.duration,
                keyframe,
            };
            if events.send(PeerEvent::Frame(frame)).is_err() {
                return;
            }
        }
    }
}

struct LocalTrack {
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    /// Negotiated payload type, read once media can flow.
    payload_type: Option<u8>,
    enabled: bool,
}

impl LocalTrack {
    async fn add(
        pc: &Arc<dyn PeerConnection>,
        kind: RtpCodecKind,
        codec: RTCRtpCodec,
    ) -> Result<LocalTrack, String> {
        let ssrc = rand::random::<u32>();
        let name = if kind == RtpCodecKind::Audio { "audio" } else { "video" };
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    "televisit".to_owned(),
                    format!("televisit-{name}"),
                    format!("televisit-{name}"),
                    kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec,
                        ..Default::default()
                    }],
                ),
            )
            .map_err(|e| format!("cannot create the {name} track: {e}"))?,
        );
        let sender = pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| format!("cannot add the {name} track: {e}"))?;
        Ok(LocalTrack { track, sender, ssrc, payload_type: None, enabled: true })
    }

    async fn write(&mut self, frame: &EncodedFrame) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.payload_type.is_none() {
            let parameters = self.sender.get_parameters().await.map_err(|e| e.to_string())?;
            self.payload_type = parameters.rtp_parameters.codecs.first().map(|c| c.payload_type);
        }
        let Some(payload_type) = self.payload_type else { return Ok(()) };
        let sample = Sample {
            data: frame.data.clone().into(),
            duration: frame.duration,
            ..Sample::new(Instant::now())
        };
        self.track
            .sample_writer(self.ssrc, payload_type)
            .write_sample(&sample)
            .await
            .map_err(|e| e.to_string())
    }
}

async fn run_session(
    settings: WebRtcSettings,
    ice_servers: Vec<IceServer>,
    origin: Instant,
    events: mpsc::UnboundedSender<PeerEvent>,
    mut commands: mpsc::UnboundedReceiver<PeerCommand>,
) -> Result<(), String> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs().map_err(|e| e.to_string())?;
    let registry =
        register_default_interceptors(Registry::new(), &mut media_engine).map_err(|e| e.to_string())?;
    let configuration = RTCConfigurationBuilder::new()
        .with_ice_servers(
            ice_servers
                .into_iter()
                .map(|s| RTCIceServer {
                    urls: s.urls,
                    username: s.username.unwrap_or_default(),
                    credential: s.credential.unwrap_or_default(),
                })
                .collect(),
        )
        .build();
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_connection_attempts(Some(settings.ice_check_interval), None)
        .with_include_loopback_candidate(true)
        .build();
    let counters = Arc::new(Counters::default());
    let connected = Arc::new(AtomicBool::new(false));
    let handler = Arc::new(Handler {
        events: events.clone(),
        counters: Arc::clone(&counters),
        origin,
        connected: Arc::clone(&connected),
    });
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting_engine)
            .with_handler(handler)
            .with_udp_addrs(settings.udp_addrs.clone())
            .build()
            .await
            .map_err(|e| format!("cannot create the peer connection: {e}"))?,
    );
    let opus = RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    };
    let vp8 = RTCRtpCodec {
        mime_type: "video/VP8".into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    };
    let mut audio = LocalTrack::add(&pc, RtpCodecKind::Audio, opus).await?;
    let mut video = LocalTrack::add(&pc, RtpCodecKind::Video, vp8).await?;
    let mut last_stats = (Instant::now(), 0u64, 0u64);

    while let Some(command) = commands.recv().await {
        let result: Result<(), String> = async {
            match command {
                PeerCommand::CreateOffer { ice_restart } => {
                    if ice_restart {
                        pc.restart_ice().await.map_err(|e| e.to_string())?;
                    }
                    let offer = pc.create_offer(None).await.map_err(|e| e.to_string())?;
                    pc.set_local_description(offer.clone()).await.map_err(|e| e.to_string())?;
                    let _ = events.send(PeerEvent::LocalOffer(offer.sdp));
                }
                PeerCommand::AcceptOffer(sdp) => {
                    let offer = RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?;
                    pc.set_remote_description(offer).await.map_err(|e| e.to_string())?;
                    let answer = pc.create_answer(None).await.map_err(|e| e.to_string())?;
                    pc.set_local_description(answer.clone()).await.map_err(|e| e.to_string())?;
                    let _ = events.send(PeerEvent::LocalAnswer(answer.sdp));
                }
                PeerCommand::AcceptAnswer(sdp) => {
                    let answer = RTCSessionDescription::answer(sdp).map_err(|e| e.to_string())?;
                    pc.set_remote_description(answer).await.map_err(|e| e.to_string())?;
                }
                PeerCommand::AddRemoteCandidate(candidate) => {
                    if !candidate.candidate.is_empty() {
                        let init = RTCIceCandidateInit {
                            candidate: candidate.candidate,
                            sdp_mid: candidate.sdp_mid,
                            sdp_mline_index: candidate.sdp_m_line_index,
                            ..Default::default()
                        };
                        pc.add_ice_candidate(init).await.map_err(|e| e.to_string())?;
                    }
                }
                PeerCommand::SetAudioSending(on) => audio.enabled = on,
                PeerCommand::SetVideoSending(on) => video.enabled = on,
                PeerCommand::SetScreenShare(_) | PeerCommand::SetEncoderTarget(_) => {}
                PeerCommand::SendFrame(frame) => {
                    if connected.load(Ordering::Relaxed) {
                        let track = if frame.kind == FrameKind::Audio { &mut audio } else { &mut video };
                        track.write(&frame).await?;
                        if frame.kind == FrameKind::Video {
                            counters.frames_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        counters.bytes_sent.fetch_add(frame.data.len() as u64, Ordering::Relaxed);
                    }
                }
                PeerCommand::ReportStats => {
                    let now = Instant::now();
                    let seconds = now.duration_since(last_stats.0).as_secs_f64().max(0.001);
                    let sent = counters.bytes_sent.load(Ordering::Relaxed);
                    let received = counters.bytes_received.load(Ordering::Relaxed);
                    let last_packet = counters.last_packet_at_ms.load(Ordering::Relaxed);
                    let stats = MediaStats {
                        send_bitrate_bps: ((sent - last_stats.1) as f64 * 8.0 / seconds) as u64,
                        receive_bitrate_bps: ((received - last_stats.2) as f64 * 8.0 / seconds) as u64,
                        frames_sent: counters.frames_sent.load(Ordering::Relaxed),
                        frames_received: counters.frames_received.load(Ordering::Relaxed),
                        last_packet_at_ms: (last_packet > 0).then_some(last_packet),
                        ..MediaStats::default()
                    };
                    last_stats = (now, sent, received);
                    let _ = events.send(PeerEvent::Stats(stats));
                }
                PeerCommand::Close => {
                    let _ = pc.close().await;
                    return Err(String::new());
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {}
            Err(message) if message.is_empty() => return Ok(()),
            Err(message) => {
                let _ = events.send(PeerEvent::Warning(message));
            }
        }
    }
    let _ = pc.close().await;
    Ok(())
}
