//! The WebRTC media backend on webrtc-rs 0.21: one real peer connection per session, with an Opus
//! audio track and a video track carrying **encoded frames** (phones encode with their hardware
//! codecs; the app hands frames in and gets depacketized frames out). The doctor's connection has
//! a second video track, `screen`, from the start: it carries nothing until screen sharing starts,
//! so starting to share needs no new m-line (the machine's re-offer changes nothing in the SDP).
//!
//! **Video codecs**: the media engine holds exactly [`WebRtcSettings::video_codecs`] (plus Opus),
//! in that order, so offers list them in our order. The answerer sends the first codec of the
//! offer's video m-line it supports (the crate orders the answer that way too); the offerer sends
//! the first codec of the answer. The video tracks are created without a codec and get it (and
//! their packetizer) once the choice is known, before media can flow: the answerer after applying
//! the offer, the offerer from the answer's SDP before applying it (the crate binds the sender's
//! interceptor streams to the track's codec when it applies the answer). The app hears the codec
//! to encode ([`PeerEvent::VideoCodec`]) and, per remote track, the codec to decode
//! ([`PeerEvent::RemoteVideoCodec`]).
//!
//! Each session is an actor: [`PeerCommand`]s are queued to a task that owns the peer connection,
//! and everything it learns goes back as [`PeerEvent`]s. Settings that matter (measured in
//! `shared/design/webrtc-notes.md`): ICE checks every 20 ms instead of 200 ms (loopback setup in
//! tens of ms), peer-reflexive pairs nominated at once (the crate waits 1 s, see
//! [`WebRtcSettings::prflx_acceptance_min_wait`]), media only after `Connected` (earlier samples
//! are dropped by the stack).
//!
//! **Congestion control**: the core's own controller ([`crate::network_control::bwe`], plugged in by
//! [`super::estimator`]) on transport-wide CC feedback, REMB and receiver reports, starting at
//! [`WebRtcSettings::initial_bitrate_bps`]; its estimate is `available_outgoing_bitrate_bps` in the
//! stats, which drives the bitrate ladder. The pacer is ours ([`super::pacing::AudioFirstPacer`]):
//! audio never waits behind video nor video behind unbounded retransmissions; delta frames that
//! would queue longer than [`super::pacing::MAX_VIDEO_QUEUE_DELAY`] (or that the pacer dropped for
//! waiting too long) are dropped until the next keyframe, which the app's encoder is asked for
//! ([`PeerEvent::KeyframeNeeded`], `ClientEvent::KeyframeRequested`). A keyframe is never refused.
//!
//! **Loss recovery** is ours too ([`super::loss_recovery`]): NACKs with bounded retries that count
//! an RTX retransmission as the repair it is, a keyframe request when packets are given up, and
//! retransmissions within a budget and only while they can arrive in time. A received video frame
//! that follows a lost one is not handed to the app (its decoder would show a corrupt picture) until
//! a keyframe, which is asked for at once, as it is when a stream starts without its keyframe (over
//! a relay the crate drops the first packets) ([`super::received_frames`]). Keyframe requests reach the encoder only because each side's track
//! ids name its role: the crate routes inbound RTCP by track id, remote tracks first.
//!
//! **Stats**: from `get_stats` what the stack fills (candidate-pair RTT, inbound loss and jitter,
//! RTP bytes), the rest counted here (frames, VP8 keyframe picture size, frame rate); see
//! [`StatsSampler`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{CongestionControlBuilder, Slot, TwccSenderBuilder};
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::codec::opus::OpusPacket;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Packetizer;
use rtc::rtp::sequence::Sequencer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only, MediaEngine,
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfiguration,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    StatsSelector,
};
use webrtc::rtp_transceiver::RtpSender;

use super::codecs::{first_video_codec, opus, register_codecs, video_codec_parameters};
use super::estimator::{shared_controller, ControllerEstimator, ReportReader};
use super::ice::{self, CandidatePolicy};
use super::keyframe_requests::{is_keyframe_request, picture_loss, KeyframeRequestForwarder};
use super::loss_recovery::{
    InboundRtpLoss, LossRecoveryGenerator, LossRecoveryStats, RetransmissionResponder,
};
use super::media::{MediaBackend, MediaSession, PeerCommand, PeerEvent};
use super::pacing::{AudioFirstPacer, PacingState};
use super::received_frames::{FrameChain, FrameOrder, PacketAction, Verdict};
use super::remb::{register_abs_send_time, AbsSendTimeStamper, RembGenerator};
use super::sender_clock::SenderClocks;
use super::stats::{OwnCounts, StackReading, StatsSampler};
use super::turn_bridge::TurnBridges;
use crate::audio::jitter::AudioPacket;
use crate::call::machine::IceConfig;
use crate::call::machine::PeerConnectionState;
use crate::call::stats::FreezeCounter;
use crate::frame::{vp8_keyframe_size, EncodedFrame, FrameKind, FrameTiming, VideoCodec};
use crate::network_control::bwe::BweConfig;
use crate::network_control::nack::NackConfig;
use crate::network_control::retransmit::RetransmitConfig;
use crate::protocol::{Role, CORE_SCREEN_STREAM_ID};

/// The track id of the doctor's screen-share track (its stream id is [`CORE_SCREEN_STREAM_ID`]).
pub const SCREEN_TRACK_ID: &str = "screen";

/// Whether a remote video track is the peer's screen (otherwise it is its camera): the track
/// role the peer's `screen-share` frame gave (`announced`, its screen's stream id), or from a
/// peer that gave none, the core's own screen stream or track id.
fn is_screen(stream_id: &str, track_id: &str, announced: Option<&str>) -> bool {
    match announced {
        Some(announced) => stream_id == announced,
        None => stream_id == CORE_SCREEN_STREAM_ID || track_id == SCREEN_TRACK_ID,
    }
}

/// The stream id the peer named for its screen (`PeerCommand::PeerScreenStream`), shared with
/// the receive tasks.
type PeerScreenStream = Arc<std::sync::Mutex<Option<String>>>;

/// Settings of the WebRTC backend.
#[derive(Debug, Clone)]
pub struct WebRtcSettings {
    /// Local UDP addresses to gather host candidates on (`0.0.0.0:0` on a device; tests use
    /// `127.0.0.1:0` so no traffic leaves the machine). A wildcard stands for every interface
    /// except loopback and link-local ones: loopback candidates come only from a loopback
    /// address listed here.
    pub udp_addrs: Vec<String>,
    /// Local TCP addresses for ICE-TCP host candidates (RFC 6544: a passive one per address, and
    /// an active one), for networks that block UDP but let TCP through to the peer. Empty (the
    /// default): none; relays over TCP/TLS (`turn:…?transport=tcp`, `turns:`) are what usually
    /// gets through a clinic's firewall.
    pub tcp_addrs: Vec<String>,
    /// Interval between ICE connectivity checks.
    pub ice_check_interval: Duration,
    /// How long the controlling ICE agent waits before nominating a pair with a peer-reflexive
    /// candidate (the crate's default is 1 s; ours is 0). Through our signaling the peer's
    /// connectivity checks usually arrive before its trickled host candidate does, so the first
    /// valid pair is peer-reflexive (the same address, learned first from the check): with the
    /// 1 s wait every call took ~1.05 s from ICE `Checking` to `Connected` instead of one check
    /// round trip. Nominating at once costs nothing when that pair is the host pair learned early,
    /// and behind a NAT it is often the only pair that works anyway.
    pub prflx_acceptance_min_wait: Duration,
    /// How long the controlling ICE agent waits, from the start of checks, before nominating a
    /// pair with a relay candidate: a direct pair validated meanwhile wins, so a call that can go
    /// peer to peer is not relayed, but a relayed call (relay-only, UDP blocked) waits that long
    /// at setup and after every ICE restart. The crate's 2 s made a relayed call's join → first
    /// picture ~3.3 s and a relayed restart's media gap ~2.1 s on loopback (`ice_connectivity`);
    /// 0 made them ~1.6 s and ~0.13 s. Ours, 500 ms, leaves direct checks (one round trip
    /// once the candidates are in) the time they need on most paths.
    pub relay_acceptance_min_wait: Duration,
    /// The bandwidth estimate to start from, bits per second: a low rung's worth, which the
    /// controller's fast start (1.5×/s until the first sign of a queue) leaves within seconds.
    pub initial_bitrate_bps: u64,
    /// The least the estimate may fall to, bits per second.
    pub min_bitrate_bps: u64,
    /// The most the estimate may rise to, bits per second.
    pub max_bitrate_bps: u64,
    /// The video codecs this side can encode and decode, best first (offers list them in this
    /// order; the answerer uses the first of the offer's it supports). Must not be empty.
    pub video_codecs: Vec<VideoCodec>,
    /// For tests of loss recovery: drop every n-th inbound RTP packet before any interceptor sees
    /// it, as a lossy link would. `None` (the default) in real use.
    pub drop_every_nth_inbound_rtp: Option<u32>,
    /// TLS for `turns:` servers; `None` (the default): the platform's verifier, as for the API
    /// ([`crate::net::tls_config`]). Tests give a configuration trusting their own root.
    pub turn_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for WebRtcSettings {
    fn default() -> Self {
        WebRtcSettings {
            udp_addrs: vec!["0.0.0.0:0".into()],
            tcp_addrs: Vec::new(),
            ice_check_interval: Duration::from_millis(20),
            prflx_acceptance_min_wait: Duration::ZERO,
            relay_acceptance_min_wait: Duration::from_millis(500),
            initial_bitrate_bps: 700_000,
            min_bitrate_bps: 100_000,
            max_bitrate_bps: 6_000_000,
            video_codecs: vec![VideoCodec::Vp8, VideoCodec::H264],
            drop_every_nth_inbound_rtp: None,
            turn_tls: None,
        }
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
        ice: IceConfig,
        role: Role,
        clock_origin: Instant,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Box<dyn MediaSession> {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let settings = self.settings.clone();
        tokio::spawn(async move {
            if let Err(message) =
                run_session(settings, ice, role, clock_origin, events.clone(), command_rx).await
            {
                let _ = events.send(PeerEvent::Warning(message));
                let _ = events.send(PeerEvent::State(PeerConnectionState::Failed));
            }
        });
        Box::new(Session { commands })
    }
}

/// Counters the receive tasks update and `ReportStats` reads (the stack's frame counters and
/// picture size stay 0, so they are counted here).
#[derive(Default)]
struct Counters {
    /// Remote camera frames handed to the app.
    frames_received: AtomicU64,
    /// Width and height of the last remote camera keyframe.
    frame_width: AtomicU32,
    frame_height: AtomicU32,
    /// Remote screen-share frames handed to the app.
    screen_frames_received: AtomicU64,
    last_packet_at_ms: AtomicI64,
    /// Gaps between remote camera frames longer than a freeze.
    freezes: std::sync::Mutex<FreezeCounter>,
}

struct Handler {
    events: mpsc::UnboundedSender<PeerEvent>,
    counters: Arc<Counters>,
    origin: Instant,
    connected: Arc<AtomicBool>,
    remote_tracks: RemoteTracks,
    peer_screen: PeerScreenStream,
    /// The mid of the bundle's first m-line, which trickled candidates name (see [`super::ice`]).
    first_mid: Arc<std::sync::Mutex<String>>,
    /// Which local candidates the peer may learn of (`SetIceServers` may make it relay-only).
    policy: SharedPolicy,
    /// The peer's sender reports, which date its frames.
    sender_clocks: SenderClocks,
}

/// The session's candidate policy, shared with its event handler.
type SharedPolicy = Arc<std::sync::Mutex<CandidatePolicy>>;

fn current(policy: &SharedPolicy) -> CandidatePolicy {
    *policy.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handler {
    fn trickle(&self, candidate: String) {
        let mid = self.first_mid.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = self.events.send(PeerEvent::LocalCandidate(ice::trickled(candidate, &mid)));
    }
}

/// The peer's video tracks (camera, screen), to send keyframe requests on.
type RemoteTracks = Arc<std::sync::Mutex<Vec<(FrameKind, Arc<dyn TrackRemote>)>>>;

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        // The crate's `sdp_mid` is "" (no m-line has it): ours names the bundle's first m-line.
        if let Some(candidate) =
            event.candidate.to_json().ok().and_then(|i| current(&self.policy).outgoing(&i.candidate))
        {
            self.trickle(candidate);
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.trickle(String::new()); // end-of-candidates
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
        let remote_tracks = Arc::clone(&self.remote_tracks);
        let peer_screen = Arc::clone(&self.peer_screen);
        let clocks = self.sender_clocks.clone();
        tokio::spawn(receive_track(track, events, counters, origin, remote_tracks, peer_screen, clocks));
    }
}

/// RTP clock rates (RFC 7587 for Opus, RFC 7741 and 6184 for VP8 and H.264).
const AUDIO_CLOCK_RATE: u32 = 48_000;
const VIDEO_CLOCK_RATE: u32 = 90_000;

/// A frame waits for a missing packet while the newer packets received span less than this much
/// media time: as long as loss recovery asks for the packet ([`NackConfig::horizon`]), and no
/// longer. Otherwise only the count of packets behind the gap (`max_late`) ends the wait, which
/// at a low rate is seconds.
fn reassembly_wait() -> Duration {
    NackConfig::default().horizon
}

/// Packets kept to push again into a builder started over: those received before a keyframe's
/// first packet but numbered after it (reordered by the link).
const PACKETS_KEPT_FOR_A_START_OVER: usize = 64;

/// Rebuilds frames from RTP packets: the crate's sample builder with a codec's depacketizer, which
/// can be started over at a keyframe's first packet ([`PacketAction::StartOverHere`]).
trait Reassembly: Send {
    /// Adds a packet; returns the frames it completed.
    fn push(&mut self, packet: rtc::rtp::Packet) -> Vec<Sample>;
    /// Forgets every packet before this one and starts over from it.
    fn start_over_at(&mut self, packet: rtc::rtp::Packet) -> Vec<Sample>;
}

/// [`Reassembly`] with the crate's sample builder, and copies of the last `kept` packets pushed
/// (none for audio, which never starts over).
struct SampleReassembly<T: rtc::rtp::packetizer::Depacketizer> {
    new_builder: fn() -> SampleBuilder<T>,
    builder: SampleBuilder<T>,
    recent: VecDeque<rtc::rtp::Packet>,
    kept: usize,
}

impl<T: rtc::rtp::packetizer::Depacketizer + Send + 'static> SampleReassembly<T> {
    fn boxed(new_builder: fn() -> SampleBuilder<T>, kept: usize) -> Box<dyn Reassembly> {
        Box::new(SampleReassembly { new_builder, builder: new_builder(), recent: VecDeque::new(), kept })
    }
}

impl<T: rtc::rtp::packetizer::Depacketizer + Send> Reassembly for SampleReassembly<T> {
    fn push(&mut self, packet: rtc::rtp::Packet) -> Vec<Sample> {
        if self.kept > 0 {
            if self.recent.len() == self.kept {
                self.recent.pop_front();
            }
            self.recent.push_back(packet.clone());
        }
        self.builder.push(Instant::now(), packet);
        std::iter::from_fn(|| self.builder.pop(Instant::now())).collect()
    }

    fn start_over_at(&mut self, packet: rtc::rtp::Packet) -> Vec<Sample> {
        let first = packet.header.sequence_number;
        let distance = |p: &rtc::rtp::Packet| p.header.sequence_number.wrapping_sub(first);
        let mut later: Vec<_> =
            self.recent.drain(..).filter(|p| (1..0x8000).contains(&distance(p))).collect();
        later.sort_by_key(distance);
        self.builder = (self.new_builder)();
        let mut samples = self.push(packet);
        for packet in later {
            samples.extend(self.push(packet));
        }
        samples
    }
}

/// Hands a received video packet to reassembly as its stream's [`FrameChain`] says: a keyframe's
/// first packet may start reassembly over, a packet of a frame before that keyframe is dropped.
/// Returns the frames completed.
fn reassemble_video(
    chain: &mut FrameChain,
    codec: Option<VideoCodec>,
    reassembly: &mut dyn Reassembly,
    packet: rtc::rtp::Packet,
) -> Vec<Sample> {
    let header = &packet.header;
    let starts_keyframe = codec.is_some_and(|codec| codec.starts_keyframe(&packet.payload));
    match chain.on_packet(
        header.timestamp,
        header.sequence_number,
        packet.payload.is_empty(),
        starts_keyframe,
    ) {
        PacketAction::Reassemble => reassembly.push(packet),
        PacketAction::StartOverHere => reassembly.start_over_at(packet),
        PacketAction::TooLate => Vec::new(),
    }
}

/// A video track's reassembly, with the codec's depacketizer `T`.
fn video_reassembly<T: rtc::rtp::packetizer::Depacketizer + Default + Send + 'static>() -> Box<dyn Reassembly>
{
    fn builder<T: rtc::rtp::packetizer::Depacketizer + Default>() -> SampleBuilder<T> {
        SampleBuilder::new(128, T::default(), VIDEO_CLOCK_RATE).with_max_time_delay(reassembly_wait())
    }
    SampleReassembly::boxed(builder::<T>, PACKETS_KEPT_FOR_A_START_OVER)
}

/// An audio track's reassembly (Opus).
fn audio_reassembly() -> Box<dyn Reassembly> {
    SampleReassembly::boxed(|| SampleBuilder::new(10, OpusPacket, AUDIO_CLOCK_RATE), 0)
}

/// The negotiated codec of a remote video track (known once its first packet opened it).
async fn remote_video_codec(track: &Arc<dyn TrackRemote>) -> Option<VideoCodec> {
    for ssrc in track.ssrcs().await {
        if let Some(codec) = track.codec(ssrc).await {
            return VideoCodec::from_name(&codec.mime_type);
        }
    }
    None
}

/// Depacketizes a remote track into frames. A video track's depacketizer follows its negotiated
/// codec (VP8, or H.264 as Annex-B access units), and the app hears that codec before the first
/// frame ([`PeerEvent::RemoteVideoCodec`]). A video track is the camera or the screen as the
/// peer's `screen-share` frame says ([`is_screen`]); that frame may come after the track's first
/// packets, so the role is looked at again on every packet.
async fn receive_track(
    track: Arc<dyn TrackRemote>,
    events: mpsc::UnboundedSender<PeerEvent>,
    counters: Arc<Counters>,
    origin: Instant,
    remote_tracks: RemoteTracks,
    peer_screen: PeerScreenStream,
    sender_clocks: SenderClocks,
) {
    let audio = track.kind().await == RtpCodecKind::Audio;
    let (stream_id, track_id) = (track.stream_id().await, track.track_id().await);
    let role = || {
        let announced = peer_screen.lock().unwrap_or_else(|e| e.into_inner());
        match is_screen(&stream_id, &track_id, announced.as_deref()) {
            _ if audio => FrameKind::Audio,
            true => FrameKind::Screen,
            false => FrameKind::Video,
        }
    };
    let mut frame_kind = role();
    let take_role = |frame_kind: FrameKind| {
        let mut tracks = remote_tracks.lock().unwrap_or_else(|e| e.into_inner());
        tracks.retain(|(k, t)| *k != frame_kind && !Arc::ptr_eq(t, &track));
        tracks.push((frame_kind, Arc::clone(&track)));
    };
    if frame_kind.is_video() {
        take_role(frame_kind);
    }
    // Made at the first packet, when the track's codec is surely known.
    let mut builder: Option<(Option<VideoCodec>, Box<dyn Reassembly>)> = None;
    let mut order = FrameOrder::default();
    // Which video frames can be decoded (see `received_frames`).
    let mut chain = FrameChain::new(KEYFRAME_REQUEST_INTERVAL);
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else { continue };
        let ssrc = packet.header.ssrc;
        counters.last_packet_at_ms.store(origin.elapsed().as_millis() as i64, Ordering::Relaxed);
        if audio {
            let raw = AudioPacket {
                ssrc: packet.header.ssrc,
                sequence: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                payload: packet.payload.to_vec(),
                capture_time_us: sender_clocks.unix_us(ssrc, packet.header.timestamp, AUDIO_CLOCK_RATE),
            };
            if events.send(PeerEvent::AudioPacket(raw, Instant::now())).is_err() {
                return;
            }
        }
        if role() != frame_kind {
            // The peer's `screen-share` frame named this track's role after it started.
            frame_kind = role();
            take_role(frame_kind);
            if let Some((Some(codec), _)) = &builder {
                if events.send(PeerEvent::RemoteVideoCodec(frame_kind, *codec)).is_err() {
                    return;
                }
            }
        }
        if builder.is_none() {
            builder = Some(if frame_kind.is_video() {
                let codec = match remote_video_codec(&track).await {
                    Some(codec) => codec,
                    None => {
                        let _ = events.send(PeerEvent::Warning(format!(
                            "the peer's {frame_kind:?} track has no codec this side decodes; its frames are dropped"
                        )));
                        return;
                    }
                };
                if events.send(PeerEvent::RemoteVideoCodec(frame_kind, codec)).is_err() {
                    return;
                }
                let reassembly = match codec {
                    VideoCodec::Vp8 => video_reassembly::<Vp8Packet>(),
                    VideoCodec::H264 => video_reassembly::<H264Packet>(),
                };
                (Some(codec), reassembly)
            } else {
                (None, audio_reassembly())
            });
        }
        let Some((codec, builder)) = builder.as_mut() else { continue };
        let clock_rate = if frame_kind.is_video() { VIDEO_CLOCK_RATE } else { AUDIO_CLOCK_RATE };
        let samples = if frame_kind.is_video() {
            reassemble_video(&mut chain, *codec, builder.as_mut(), packet)
        } else {
            builder.push(packet)
        };
        for sample in samples {
            if !order.admits(ssrc, sample.packet_timestamp, clock_rate) {
                continue;
            }
            let keyframe = codec.is_some_and(|codec| codec.is_keyframe(&sample.data));
            if frame_kind.is_video() {
                let Verdict { decode, ask_keyframe } =
                    chain.on_frame(sample.packet_timestamp, keyframe, Instant::now());
                if ask_keyframe {
                    for ssrc in track.ssrcs().await {
                        let _ = track.write_rtcp(vec![picture_loss(ssrc)]).await;
                    }
                }
                if !decode {
                    continue;
                }
            }
            match frame_kind {
                FrameKind::Video => {
                    counters.frames_received.fetch_add(1, Ordering::Relaxed);
                    let now_ms = origin.elapsed().as_millis() as u64;
                    counters.freezes.lock().unwrap_or_else(|e| e.into_inner()).on_picture(now_ms);
                    if *codec == Some(VideoCodec::Vp8) {
                        if let Some((width, height)) = vp8_keyframe_size(&sample.data) {
                            counters.frame_width.store(width, Ordering::Relaxed);
                            counters.frame_height.store(height, Ordering::Relaxed);
                        }
                    }
                }
                FrameKind::Screen => {
                    counters.screen_frames_received.fetch_add(1, Ordering::Relaxed);
                }
                FrameKind::Audio => {}
            }
            let timing = FrameTiming {
                rtp_timestamp: Some(sample.packet_timestamp),
                capture_time_us: sender_clocks.unix_us(ssrc, sample.packet_timestamp, clock_rate),
            };
            let frame = EncodedFrame {
                kind: frame_kind,
                data: sample.data.to_vec(),
                duration: sample.duration,
                keyframe,
                timing,
            };
            if events.send(PeerEvent::Frame(frame)).is_err() {
                return;
            }
        }
    }
}

/// The largest RTP packet the packetizers make (as `TrackLocalStaticSample` does).
const RTP_OUTBOUND_MTU: usize = 1200;

/// A local track and its packetizer. The packetizer is ours (not `TrackLocalStaticSample`'s,
/// which fixes it when the track is built) so a video track can take its codec once it is
/// negotiated ([`LocalTrack::set_codec`]).
struct LocalTrack {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    /// The codec the track sends; `None` for a video track before negotiation.
    codec: Option<RTCRtpCodec>,
    packetizer: Option<Box<dyn Packetizer>>,
    /// Kept across codec changes, so sequence numbers go on.
    sequencer: Box<dyn Sequencer>,
    /// Negotiated payload type, read once media can flow.
    payload_type: Option<u8>,
    enabled: bool,
    /// A video frame was dropped: the next ones cannot be decoded until a keyframe.
    awaiting_keyframe: bool,
    /// When the app's encoder was last asked for a keyframe for this track.
    keyframe_requested_at: Option<Instant>,
}

impl LocalTrack {
    /// Adds a track with this stream id and track id, sending `codec` (a video track is added
    /// without one: its transceiver then offers every codec of the media engine, in order).
    async fn add(
        pc: &Arc<dyn PeerConnection>,
        kind: RtpCodecKind,
        codec: Option<RTCRtpCodec>,
        stream_id: &str,
        track_id: &str,
    ) -> Result<LocalTrack, String> {
        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream_id.to_owned(),
            track_id.to_owned(),
            track_id.to_owned(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: codec.clone().unwrap_or_default(),
                ..Default::default()
            }],
        )));
        let sender = pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| format!("cannot add the {track_id} track: {e}"))?;
        let mut local = LocalTrack {
            track,
            sender,
            ssrc,
            codec: None,
            packetizer: None,
            sequencer: Box::new(rtc::rtp::sequence::new_random_sequencer()),
            payload_type: None,
            enabled: true,
            awaiting_keyframe: false,
            keyframe_requested_at: None,
        };
        if let Some(codec) = codec {
            local.packetizer = Some(local.packetizer(&codec)?);
            local.codec = Some(codec);
        }
        Ok(local)
    }

    fn packetizer(&self, codec: &RTCRtpCodec) -> Result<Box<dyn Packetizer>, String> {
        let payloader =
            codec.payloader().map_err(|e| format!("no packetizer for {}: {e}", codec.mime_type))?;
        Ok(Box::new(rtc::rtp::packetizer::new_packetizer(
            Instant::now(),
            RTP_OUTBOUND_MTU,
            0, // set per packet from the negotiated payload type
            self.ssrc,
            payloader,
            self.sequencer.clone(),
            codec.clock_rate,
        )))
    }

    /// Sends `codec` from now on: the sender's track is replaced by one with the same SSRCs and
    /// this codec (what the crate binds the send-side interceptors to when it starts sending, so
    /// it must happen before the description that starts media is applied), and the packetizer
    /// is rebuilt. Nothing happens if the track already sends this codec.
    async fn set_codec(&mut self, codec: RTCRtpCodec) -> Result<(), String> {
        let same = |c: &RTCRtpCodec| c.mime_type.eq_ignore_ascii_case(&codec.mime_type);
        if self.codec.as_ref().is_some_and(same) {
            return Ok(());
        }
        let parameters = self.sender.get_parameters().await.map_err(|e| e.to_string())?;
        let encodings = parameters
            .encodings
            .into_iter()
            .map(|encoding| RTCRtpEncodingParameters { codec: codec.clone(), ..encoding })
            .collect();
        let old = self.track.track().await;
        let track = MediaStreamTrack::new(
            old.stream_id().clone(),
            old.track_id().clone(),
            old.label().clone(),
            old.kind(),
            encodings,
        );
        self.sender
            .replace_track(Arc::new(TrackLocalStaticRTP::new(track)))
            .await
            .map_err(|e| format!("cannot switch the track to {}: {e}", codec.mime_type))?;
        self.packetizer = Some(self.packetizer(&codec)?);
        self.codec = Some(codec);
        self.payload_type = None;
        Ok(())
    }

    /// Packetizes and writes a frame; a keyframe is marked for the pacer first (which drops one
    /// only for a newer keyframe).
    async fn write(&mut self, frame: &EncodedFrame, pacing: &PacingState) -> Result<(), String> {
        let Some(codec) = self.codec.as_ref() else { return Ok(()) };
        if self.payload_type.is_none() {
            let parameters = self.sender.get_parameters().await.map_err(|e| e.to_string())?;
            let codecs = &parameters.rtp_parameters.codecs;
            self.payload_type = codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type))
                .or(codecs.first())
                .map(|c| c.payload_type);
        }
        let (Some(payload_type), Some(packetizer)) = (self.payload_type, self.packetizer.as_mut()) else {
            return Ok(());
        };
        let samples = (frame.duration.as_secs_f64() * f64::from(codec.clock_rate)) as u32;
        let packets = packetizer
            .packetize(Instant::now(), &frame.data.clone().into(), samples)
            .map_err(|e| e.to_string())?;
        if let (true, Some(first)) = (frame.keyframe, packets.first()) {
            pacing.mark_keyframe(first.header.ssrc, first.header.timestamp);
        }
        for mut packet in packets {
            packet.header.payload_type = payload_type;
            self.track.write_rtp(packet).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The app's encoder is asked for a keyframe at most this often per track.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// What happened to a frame handed to [`send_frame`].
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// Written to its track.
    Written,
    /// Its track is off (muted, camera off, not sharing) or media cannot flow yet.
    Off,
    /// A delta video frame dropped (the video queue was too long for the estimate, or it depends
    /// on a frame dropped here or in the pacer); delta frames are dropped until a keyframe, and
    /// the encoder should be asked for one (at most once a second per track).
    DroppedAskKeyframe,
    /// A delta video frame dropped; a keyframe was asked for less than a second ago.
    Dropped,
}

/// Writes a frame unless its track is off. A keyframe is always written (it ends a freeze, and
/// the pacer drops it only for a newer keyframe); a delta frame only while the pacer's video
/// queue has room for it and the frames it depends on were sent.
async fn send_frame(
    track: &mut LocalTrack,
    frame: &EncodedFrame,
    pacing: &PacingState,
) -> Result<Sent, String> {
    if !track.enabled {
        return Ok(Sent::Off);
    }
    if frame.kind.is_video() {
        if pacing.take_keyframe_wanted(track.ssrc) {
            track.awaiting_keyframe = true;
        }
        let dropped =
            !frame.keyframe && (track.awaiting_keyframe || !pacing.admits_video_frame(frame.data.len()));
        if dropped {
            track.awaiting_keyframe = true;
            let now = Instant::now();
            if track
                .keyframe_requested_at
                .is_some_and(|at| now.duration_since(at) < KEYFRAME_REQUEST_INTERVAL)
            {
                return Ok(Sent::Dropped);
            }
            track.keyframe_requested_at = Some(now);
            return Ok(Sent::DroppedAskKeyframe);
        }
        track.awaiting_keyframe = false;
    }
    track.write(frame, pacing).await?;
    Ok(Sent::Written)
}

/// The interceptor chain: the crate's defaults (RTCP reports, TWCC receiver) with our loss
/// recovery in place of its NACK generator and responder, plus send-side congestion control.
/// The congestion control has the shape `configure_congestion_control(registry, Gcc, Twcc, ..)`
/// gives it — the send history with an estimator and the TWCC sequence numbers; the TWCC header
/// extension and feedback are registered with the TWCC receiver — but the estimator is ours
/// ([`super::estimator`], with REMB and report fallbacks) and so is the pacer, in the same slot,
/// so audio is not queued behind video nor video behind retransmissions. See
/// [`super::loss_recovery`] for the order of the chain.
fn interceptors(
    media_engine: &mut MediaEngine,
    settings: &WebRtcSettings,
    pacing: &Arc<PacingState>,
    loss: &Arc<LossRecoveryStats>,
    sender_clocks: &SenderClocks,
) -> Result<Registry, String> {
    // What `register_default_interceptors` registers, with `configure_nack`'s feedback types but
    // not its interceptors.
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback { typ: "nack".into(), parameter: parameter.into() },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(media_engine).map_err(|e| e.to_string())?;
    let registry = configure_twcc_receiver_only(Registry::new(), media_engine).map_err(|e| e.to_string())?;
    let registry = configure_rtcp_reports(registry);
    register_abs_send_time(media_engine)?;
    let controller = shared_controller(BweConfig {
        initial_bps: settings.initial_bitrate_bps,
        min_bps: settings.min_bitrate_bps,
        max_bps: settings.max_bitrate_bps,
    });
    let estimator = ControllerEstimator::new(Arc::clone(&controller), Arc::clone(pacing));
    let registry = match settings.drop_every_nth_inbound_rtp {
        // Wire-most, below everything: what it drops, no interceptor ever sees.
        Some(n) => registry.with(Slot::from(500), InboundRtpLoss::every(n)),
        None => registry,
    };
    Ok(registry
        .with(Slot::CongestionControl, CongestionControlBuilder::new(estimator).build())
        // REMB and report blocks, for peers without transport-cc (see `super::estimator`), and
        // the peer's sender reports, which date the frames it sends (see `super::sender_clock`).
        .with(Slot::from(1_500), ReportReader::new(controller, Arc::clone(pacing), sender_clocks.clone()))
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        // abs-send-time out, REMB back to peers without transport-cc (see `super::remb`).
        .with(Slot::from(2_500), AbsSendTimeStamper::default())
        .with(Slot::from(8_500), RembGenerator::default())
        .with(Slot::Pacer, AudioFirstPacer::new(Arc::clone(pacing)))
        .with(
            Slot::NackResponder,
            RetransmissionResponder::new(RetransmitConfig::default(), Arc::clone(pacing), Arc::clone(loss)),
        )
        .with(Slot::NackGenerator, LossRecoveryGenerator::new(NackConfig::default(), Arc::clone(loss)))
        // Last, so every interceptor has seen the inbound RTCP before it narrows it down.
        .with(Slot::from(14_000), KeyframeRequestForwarder::default()))
}

/// Tells the app's encoder when the peer asks for a keyframe of this track (PLI or FIR: its
/// decoder lost the picture), at most once per [`KEYFRAME_REQUEST_INTERVAL`]: a request within
/// the interval is passed on when it ends. A receiver gives up each gap the pacer left by
/// dropping a frame and asks again, and a keyframe is large: one in flight answers them all.
fn forward_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
    kind: FrameKind,
    events: mpsc::UnboundedSender<PeerEvent>,
) {
    tokio::spawn(async move {
        let mut forwarded_at: Option<tokio::time::Instant> = None;
        let mut pending = false;
        loop {
            let next_allowed = forwarded_at.map(|at| at + KEYFRAME_REQUEST_INTERVAL);
            let wanted = tokio::select! {
                event = track.poll() => match event {
                    Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                        packets.iter().any(|p| is_keyframe_request(p.as_ref()))
                    }
                    Some(_) => false,
                    None => return,
                },
                _ = tokio::time::sleep_until(next_allowed.unwrap_or_else(tokio::time::Instant::now)),
                    if pending => true,
            };
            pending |= wanted;
            let now = tokio::time::Instant::now();
            if pending && next_allowed.is_none_or(|at| now >= at) {
                pending = false;
                forwarded_at = Some(now);
                if events.send(PeerEvent::KeyframeNeeded(kind)).is_err() {
                    return;
                }
            }
        }
    });
}

/// Asks the peer for a keyframe of its `kind` track (our decoder lost the picture).
async fn request_keyframe(remote_tracks: &RemoteTracks, kind: FrameKind) -> Result<(), String> {
    let track = remote_tracks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, t)| Arc::clone(t));
    let Some(track) = track else { return Ok(()) }; // nothing received yet: the first frame is a keyframe anyway
    for ssrc in track.ssrcs().await {
        track
            .write_rtcp(vec![picture_loss(ssrc)])
            .await
            .map_err(|e| format!("cannot ask for a keyframe: {e}"))?;
    }
    Ok(())
}

/// The ids of this side's microphone and camera tracks (`doctor-audio`, `patient-video`, …):
/// never the same as the peer's (see `run_session`). The doctor's screen track is
/// [`SCREEN_TRACK_ID`] (the patient has none).
fn local_track_ids(role: Role) -> (String, String) {
    (format!("{}-audio", role.as_str()), format!("{}-video", role.as_str()))
}

/// Tells the app which codec to encode, unless it was told already.
fn tell_codec(events: &mpsc::UnboundedSender<PeerEvent>, told: &mut Option<VideoCodec>, codec: VideoCodec) {
    if *told != Some(codec) {
        *told = Some(codec);
        let _ = events.send(PeerEvent::VideoCodec(codec));
    }
}

/// The crate's configuration for these ICE servers and policy.
fn rtc_configuration(ice: &IceConfig) -> RTCConfiguration {
    let servers = ice.servers.iter().map(|s| RTCIceServer {
        urls: s.urls.clone(),
        username: s.username.clone().unwrap_or_default(),
        credential: s.credential.clone().unwrap_or_default(),
    });
    let policy = if ice.relay_only { RTCIceTransportPolicy::Relay } else { RTCIceTransportPolicy::All };
    RTCConfigurationBuilder::new()
        .with_ice_servers(servers.collect())
        .with_ice_transport_policy(policy)
        .build()
}

async fn run_session(
    settings: WebRtcSettings,
    ice: IceConfig,
    role: Role,
    origin: Instant,
    events: mpsc::UnboundedSender<PeerEvent>,
    mut commands: mpsc::UnboundedReceiver<PeerCommand>,
) -> Result<(), String> {
    let mut media_engine = MediaEngine::default();
    register_codecs(&mut media_engine, &settings.video_codecs)?;
    let pacing = PacingState::new(settings.initial_bitrate_bps);
    let loss = LossRecoveryStats::new();
    let sender_clocks = SenderClocks::default();
    let registry = interceptors(&mut media_engine, &settings, &pacing, &loss, &sender_clocks)?;
    // TURN over TCP and TLS goes through local bridges (the crate speaks TURN over UDP only).
    let mut bridges = TurnBridges::new(settings.turn_tls.clone().unwrap_or_else(crate::net::tls_config));
    let bridged = |servers| IceConfig { servers, relay_only: ice.relay_only };
    let configuration = rtc_configuration(&bridged(bridges.rewrite(&ice.servers).await?));
    let policy: SharedPolicy =
        Arc::new(std::sync::Mutex::new(CandidatePolicy { relay_only: ice.relay_only }));
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_connection_attempts(Some(settings.ice_check_interval), None)
        .with_prflx_acceptance_min_wait(Some(settings.prflx_acceptance_min_wait))
        .with_relay_acceptance_min_wait(Some(settings.relay_acceptance_min_wait))
        // An ICE restart (a network change, a failed path) rebinds the sockets and gathers anew:
        // host candidates of the interfaces there are now, and new TURN allocations (with the
        // credentials `SetIceServers` renewed). The crate keeps the old ones by default, which
        // name addresses a phone that left its Wi-Fi no longer has.
        .with_discard_local_candidates_during_ice_restart(true)
        .build();
    let first_mid = Arc::new(std::sync::Mutex::new(ice::DEFAULT_MID.to_owned()));
    let counters = Arc::new(Counters::default());
    let connected = Arc::new(AtomicBool::new(false));
    let remote_tracks = RemoteTracks::default();
    let peer_screen = PeerScreenStream::default();
    let handler = Arc::new(Handler {
        events: events.clone(),
        counters: Arc::clone(&counters),
        origin,
        connected: Arc::clone(&connected),
        remote_tracks: Arc::clone(&remote_tracks),
        peer_screen: Arc::clone(&peer_screen),
        first_mid: Arc::clone(&first_mid),
        policy: Arc::clone(&policy),
        sender_clocks,
    });
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting_engine)
            .with_handler(handler)
            .with_udp_addrs(settings.udp_addrs.clone())
            .with_tcp_addrs(settings.tcp_addrs.clone())
            .build()
            .await
            .map_err(|e| format!("cannot create the peer connection: {e}"))?,
    );
    // The track ids name the role: the crate routes inbound RTCP by track id and tries the remote
    // tracks first, so with the same ids on both sides (`televisit-video`) the peer's keyframe
    // requests for our camera went to *its* camera's remote track here and were never heard.
    let (audio_id, video_id) = local_track_ids(role);
    let mut audio = LocalTrack::add(&pc, RtpCodecKind::Audio, Some(opus()), "televisit", &audio_id).await?;
    // Video tracks get their codec once it is negotiated (see the module's documentation).
    let mut video = LocalTrack::add(&pc, RtpCodecKind::Video, None, "televisit", &video_id).await?;
    // Only the doctor shares a screen. The track is there from the first offer and silent until
    // sharing starts, so sharing needs no renegotiation of m-lines.
    let mut screen = match role {
        Role::Doctor => {
            let mut track =
                LocalTrack::add(&pc, RtpCodecKind::Video, None, CORE_SCREEN_STREAM_ID, SCREEN_TRACK_ID)
                    .await?;
            track.enabled = false;
            Some(track)
        }
        _ => None,
    };
    // The codec the app was told to encode.
    let mut told_codec: Option<VideoCodec> = None;
    forward_keyframe_requests(Arc::clone(&video.track), FrameKind::Video, events.clone());
    if let Some(screen) = &screen {
        forward_keyframe_requests(Arc::clone(&screen.track), FrameKind::Screen, events.clone());
    }
    let mut sampler = StatsSampler::new(Instant::now());
    let mut frames_sent = 0u64;
    // The estimate the ladder last heard (from a stats sample or a cut), and when: see
    // `estimate_fell`.
    let (mut told_estimate, mut told_at) = (pacing.target_bps(), Instant::now());

    while let Some(command) = commands.recv().await {
        let result: Result<(), String> = async {
            match command {
                PeerCommand::CreateOffer { ice_restart } => {
                    // The restart as an offer option, not `restart_ice()`: that one starts a
                    // gathering at once, before the offer exists, and applying the offer starts a
                    // second, which sends the first's candidates again after its end-of-candidates
                    // when the first was quick (a loaded machine). Both ways rebind the sockets.
                    let options = RTCOfferOptions { ice_restart };
                    let offer = pc.create_offer(Some(options)).await.map_err(|e| e.to_string())?;
                    // Before gathering starts (applying it starts it): the candidates name this
                    // mid, and go out after the offer, which the peer must have to add them.
                    set_first_mid(&first_mid, &offer.sdp);
                    let _ = events.send(PeerEvent::LocalOffer(current(&policy).outgoing_sdp(&offer.sdp)));
                    pc.set_local_description(offer).await.map_err(|e| e.to_string())?;
                }
                PeerCommand::Rollback => {
                    // Only an offer still pending can be rolled back (it may have failed to apply).
                    if pc.pending_local_description().await.is_some() {
                        let rollback = RTCSessionDescription::rollback(None).map_err(|e| e.to_string())?;
                        pc.set_local_description(rollback).await.map_err(|e| format!("rollback: {e}"))?;
                    }
                }
                PeerCommand::AcceptOffer(sdp) => {
                    let offer = RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?;
                    pc.set_remote_description(offer).await.map_err(|e| e.to_string())?;
                    // The transceiver now holds the offer's codecs in the offer's order, filtered
                    // to ours: its first is what this side sends (and the answer leads with).
                    let parameters = video.sender.get_parameters().await.map_err(|e| e.to_string())?;
                    let chosen = parameters.rtp_parameters.codecs.iter().find_map(|c| {
                        VideoCodec::from_name(&c.rtp_codec.mime_type)
                            .filter(|codec| settings.video_codecs.contains(codec))
                            .map(|codec| (codec, c.rtp_codec.clone()))
                    });
                    match chosen {
                        Some((codec, rtp_codec)) => {
                            for track in std::iter::once(&mut video).chain(screen.as_mut()) {
                                track.set_codec(rtp_codec.clone()).await?;
                            }
                            tell_codec(&events, &mut told_codec, codec);
                        }
                        None => {
                            let _ = events.send(PeerEvent::Warning(
                                "the offer has no video codec this side supports: no video is sent".into(),
                            ));
                        }
                    }
                    let answer = pc.create_answer(None).await.map_err(|e| e.to_string())?;
                    set_first_mid(&first_mid, &answer.sdp);
                    let _ = events.send(PeerEvent::LocalAnswer(current(&policy).outgoing_sdp(&answer.sdp)));
                    pc.set_local_description(answer).await.map_err(|e| e.to_string())?;
                }
                PeerCommand::AcceptAnswer(sdp) => {
                    // Before applying it: applying the answer starts the senders, bound to their
                    // tracks' codec.
                    match first_video_codec(&sdp, &settings.video_codecs) {
                        Some(codec) => {
                            let (parameters, _) = video_codec_parameters(codec);
                            for track in std::iter::once(&mut video).chain(screen.as_mut()) {
                                track.set_codec(parameters.rtp_codec.clone()).await?;
                            }
                            tell_codec(&events, &mut told_codec, codec);
                        }
                        None => {
                            let _ = events.send(PeerEvent::Warning(
                                "the answer has no video codec this side supports: no video is sent".into(),
                            ));
                        }
                    }
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
                // Takes effect at the next gathering (the ICE restart that follows), the policy
                // too: a clinic's relay-only may first arrive with a later ice-servers reply.
                PeerCommand::SetIceServers(ice) => {
                    *policy.lock().unwrap_or_else(|e| e.into_inner()) =
                        CandidatePolicy { relay_only: ice.relay_only };
                    let servers = bridges.rewrite(&ice.servers).await?;
                    let ice = IceConfig { servers, relay_only: ice.relay_only };
                    pc.set_configuration(rtc_configuration(&ice)).await.map_err(|e| e.to_string())?;
                }
                PeerCommand::SetAudioSending(on) => audio.enabled = on,
                PeerCommand::SetVideoSending(on) => video.enabled = on,
                PeerCommand::PeerScreenStream(stream_id) => {
                    *peer_screen.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream_id);
                }
                PeerCommand::SetScreenShare(on) => match screen.as_mut() {
                    Some(screen) => {
                        screen.enabled = on;
                        // The first shared frame must be decodable on its own.
                        screen.awaiting_keyframe = on;
                        if on {
                            screen.keyframe_requested_at = Some(Instant::now());
                            let _ = events.send(PeerEvent::KeyframeNeeded(FrameKind::Screen));
                        }
                    }
                    None => return Err("only the doctor's connection has a screen-share track".into()),
                },
                // The encoder is the app's: the driver tells it (`VideoRungChanged`, `EncoderBitrate`).
                PeerCommand::SetEncoderTarget(_) => {}
                PeerCommand::SendFrame(frame) => {
                    if connected.load(Ordering::Relaxed) {
                        let track = match frame.kind {
                            FrameKind::Audio => Some(&mut audio),
                            FrameKind::Video => Some(&mut video),
                            FrameKind::Screen => screen.as_mut(),
                        };
                        if let Some(track) = track {
                            let sent = send_frame(track, &frame, &pacing).await?;
                            match sent {
                                Sent::Written if frame.kind == FrameKind::Video => {
                                    frames_sent += 1;
                                    let estimate_bps = pacing.target_bps();
                                    if estimate_fell(told_estimate, estimate_bps)
                                        && told_at.elapsed() >= EARLY_CUT_GAP
                                    {
                                        (told_estimate, told_at) = (estimate_bps, Instant::now());
                                        let acknowledged_bps = pacing.acknowledged_bps();
                                        let _ = events
                                            .send(PeerEvent::EstimateCut { estimate_bps, acknowledged_bps });
                                    }
                                }
                                Sent::DroppedAskKeyframe => {
                                    let _ = events.send(PeerEvent::KeyframeNeeded(frame.kind));
                                }
                                _ => {}
                            }
                        }
                    }
                }
                PeerCommand::RequestKeyframe(kind) => request_keyframe(&remote_tracks, kind).await?,
                PeerCommand::ReportStats => {
                    let now = Instant::now();
                    let report = pc.get_stats(now, StatsSelector::None).await;
                    let own = OwnCounts {
                        frames_sent,
                        frames_received: counters.frames_received.load(Ordering::Relaxed),
                        frame_width: counters.frame_width.load(Ordering::Relaxed),
                        frame_height: counters.frame_height.load(Ordering::Relaxed),
                        last_packet_at_ms: counters.last_packet_at_ms.load(Ordering::Relaxed),
                        estimate_bps: pacing.target_bps(),
                        acknowledged_bps: pacing.acknowledged_bps(),
                        freezes: {
                            let freezes = counters.freezes.lock().unwrap_or_else(|e| e.into_inner());
                            (freezes.count, freezes.total_ms)
                        },
                        loss_recovery: loss.snapshot(&pacing),
                    };
                    (told_estimate, told_at) = (own.estimate_bps, now);
                    let mut reading = StackReading::from_report(&report);
                    // A bridged relay's URL is the bridge's: name the server's real transport.
                    if let Some(transport) =
                        reading.relay_url.as_deref().and_then(|u| bridges.transport_of(u))
                    {
                        reading.relay_transport = Some(transport);
                    }
                    if let Some(rtt_ms) = reading.rtt_ms {
                        loss.set_rtt(Duration::from_secs_f64(rtt_ms / 1000.0));
                    }
                    let _ = events.send(PeerEvent::Stats(Box::new(sampler.sample(reading, own, now))));
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

/// Remembers the first m-line's mid of a local description, for the candidates gathered for it.
fn set_first_mid(first_mid: &std::sync::Mutex<String>, sdp: &str) {
    if let Some(mid) = ice::first_mid(sdp) {
        *first_mid.lock().unwrap_or_else(|e| e.into_inner()) = mid;
    }
}

/// Stats samples (which move the encoder along the ladder) come once a second; a cut of the
/// estimate between two of them left the encoder at the old rate for up to a second, above the
/// link, and every sawtooth tooth of the RFC 8867 bench was a 100-150 ms queue. A cut of more
/// than this share since the ladder last heard the estimate is told at the next video frame
/// ([`PeerEvent::EstimateCut`]).
const EARLY_CUT_DROP: f64 = 0.10;
/// Cuts told between samples are at least this far apart.
const EARLY_CUT_GAP: Duration = Duration::from_millis(200);

/// Whether the estimate fell by more than [`EARLY_CUT_DROP`] since the ladder last heard it.
fn estimate_fell(told_bps: u64, now_bps: u64) -> bool {
    (now_bps as f64) < (1.0 - EARLY_CUT_DROP) * told_bps as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_video_tracks_role_is_the_one_its_peer_named_else_the_cores_screen_ids() {
        // A browser's screen: a random stream id, named in its `screen-share` frame.
        let browser_screen = "{7d2e0c1a-9b44-4f0e-8a61-2c5d3e9f1b70}";
        assert!(is_screen(browser_screen, "f3a1", Some(browser_screen)));
        assert!(!is_screen("{camera-stream}", "c9b2", Some(browser_screen)), "its camera");
        assert!(!is_screen(browser_screen, "f3a1", None), "not named (yet): a camera");
        // The core's screen, named or not (an older core names nothing).
        assert!(is_screen(CORE_SCREEN_STREAM_ID, SCREEN_TRACK_ID, Some(CORE_SCREEN_STREAM_ID)));
        assert!(is_screen(CORE_SCREEN_STREAM_ID, SCREEN_TRACK_ID, None));
        assert!(is_screen("other", SCREEN_TRACK_ID, None));
        assert!(!is_screen("televisit", "doctor-video", None));
    }

    /// The RTP packets of VP8 frames (keyframe or not, the byte they are filled with), packetized
    /// as the sending side does.
    fn vp8_frames(frames: &[(bool, u8)]) -> Vec<Vec<rtc::rtp::Packet>> {
        use rtc::rtp::packetizer::Payloader;
        let mut payloader = rtc::rtp::codec::vp8::Vp8Payloader::default();
        let mut sequence = 65_530u16; // wrapping on the way
        frames
            .iter()
            .enumerate()
            .map(|(n, &(keyframe, fill))| {
                // A frame tag (lowest bit 0: a keyframe), then 3 000 bytes: three packets.
                let mut data = vec![fill; 3_001];
                data[0] = if keyframe { 0x10 } else { 0x11 };
                let timestamp = 90_000 + 3_000 * n as u32;
                let payloads = payloader.payload(RTP_OUTBOUND_MTU, &data.into()).expect("payloads");
                let count = payloads.len();
                payloads
                    .into_iter()
                    .enumerate()
                    .map(|(i, payload)| {
                        sequence = sequence.wrapping_add(1);
                        let header = rtc::rtp::header::Header {
                            version: 2,
                            marker: i + 1 == count,
                            payload_type: 96,
                            sequence_number: sequence,
                            timestamp,
                            ssrc: 7,
                            ..Default::default()
                        };
                        rtc::rtp::Packet { header, payload }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_keyframe_after_a_frame_that_lost_a_packet_comes_out_at_once_and_whole() {
        // Keyframe 0; delta 1 loses its second packet for good; delta 2; keyframe 3; deltas 4, 5.
        let frames = vp8_frames(&[(true, 0), (false, 1), (false, 2), (true, 3), (false, 4), (false, 5)]);
        let mut chain = FrameChain::new(KEYFRAME_REQUEST_INTERVAL);
        let mut reassembly = video_reassembly::<Vp8Packet>();
        let mut out = Vec::new();
        let packets = frames
            .iter()
            .flatten()
            .filter(|p| p.header.sequence_number != frames[1][1].header.sequence_number);
        for packet in packets {
            out.extend(reassemble_video(
                &mut chain,
                Some(VideoCodec::Vp8),
                reassembly.as_mut(),
                packet.clone(),
            ));
        }
        // A frame comes out once the next one starts: keyframe 3 is out, not held behind deltas 1
        // and 2 (which wait for the lost packet for a second of media, or 128 packets), and whole,
        // and delta 4 follows it.
        let frames_out: Vec<u8> = out.iter().map(|sample| sample.data[1]).collect();
        assert_eq!(frames_out, vec![0, 3, 4], "the frames out, by the byte they are filled with");
        let keyframe = &out[1].data;
        assert!(keyframe.len() == 3_001 && keyframe[0] == 0x10 && keyframe[1..].iter().all(|&b| b == 3));
        // The lost packet, resent late, is dropped: the builder does not go back for it.
        let late = frames[1][1].clone();
        assert!(reassemble_video(&mut chain, Some(VideoCodec::Vp8), reassembly.as_mut(), late).is_empty());
    }

    #[test]
    fn a_cut_of_the_estimate_by_more_than_a_tenth_is_told_before_the_next_sample() {
        assert!(estimate_fell(1_000_000, 850_000), "a 15 % cut");
        assert!(!estimate_fell(1_000_000, 950_000), "5 % is the sawtooth's noise");
        assert!(!estimate_fell(1_000_000, 1_500_000), "a rise waits for the next sample");
    }

    /// The video m-lines' codec names in order, from an SDP.
    fn video_codec_names(sdp: &str) -> Vec<Vec<String>> {
        let sections = sdp.split("m=").filter(|s| s.starts_with("video "));
        sections
            .map(|section| {
                let m_line = section.lines().next().unwrap_or_default();
                m_line
                    .split_whitespace()
                    .skip(3)
                    .filter_map(|pt| {
                        let prefix = format!("a=rtpmap:{pt} ");
                        section.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
                    })
                    .map(|name| name.split('/').next().unwrap_or_default().to_owned())
                    .collect()
            })
            .collect()
    }

    async fn offer(video_codecs: Vec<VideoCodec>) -> String {
        let media = WebRtcMedia::new(WebRtcSettings {
            udp_addrs: vec!["127.0.0.1:0".into()],
            video_codecs,
            ..Default::default()
        });
        let (events, mut event_rx) = mpsc::unbounded_channel();
        let mut session = media.create_session(IceConfig::default(), Role::Doctor, Instant::now(), events);
        session.command(PeerCommand::CreateOffer { ice_restart: false });
        let offer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match event_rx.recv().await.expect("the session runs") {
                    PeerEvent::LocalOffer(sdp) => return sdp,
                    PeerEvent::Warning(w) => panic!("{w}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("an offer");
        session.command(PeerCommand::Close);
        offer
    }

    #[test]
    fn our_loss_recovery_and_pacer_take_the_crates_slots() {
        let mut media_engine = MediaEngine::default();
        register_codecs(&mut media_engine, &[VideoCodec::Vp8]).unwrap();
        let registry = interceptors(
            &mut media_engine,
            &WebRtcSettings::default(),
            &PacingState::new(1_000_000),
            &LossRecoveryStats::new(),
            &SenderClocks::default(),
        )
        .unwrap();
        let slots: Vec<(usize, String)> =
            registry.slots().into_iter().map(|(slot, name)| (slot.slot(), name)).collect();
        let at = |slot: Slot| slots.iter().find(|(s, _)| *s == slot.slot()).map(|(_, n)| n.as_str());
        assert_eq!(at(Slot::Pacer), Some("AudioFirstPacer"), "{slots:?}");
        assert_eq!(at(Slot::NackResponder), Some("RetransmissionResponder"), "{slots:?}");
        assert_eq!(at(Slot::NackGenerator), Some("LossRecoveryGenerator"), "{slots:?}");
        assert!(at(Slot::TwccReceiver).is_some() && at(Slot::ReceiverReport).is_some(), "{slots:?}");
    }

    #[tokio::test]
    async fn offers_list_exactly_our_video_codecs_in_our_order_on_both_video_m_lines() {
        let h264_first = offer(vec![VideoCodec::H264, VideoCodec::Vp8]).await;
        let names = video_codec_names(&h264_first);
        assert_eq!(names.len(), 2, "camera and screen: {h264_first}");
        for codecs in &names {
            assert_eq!(codecs, &["H264", "rtx", "VP8", "rtx"], "{h264_first}");
        }
        assert!(h264_first.contains("packetization-mode=1;profile-level-id=42e028"), "{h264_first}");
        assert_eq!(
            first_video_codec(&h264_first, &[VideoCodec::Vp8, VideoCodec::H264]),
            Some(VideoCodec::H264)
        );

        let vp8_only = offer(vec![VideoCodec::Vp8]).await;
        assert_eq!(video_codec_names(&vp8_only)[0], ["VP8", "rtx"], "{vp8_only}");
        assert!(!vp8_only.contains("H264"));
    }

    #[tokio::test]
    async fn offers_carry_transport_cc_and_abs_send_time_for_the_congestion_controller() {
        let sdp = offer(vec![VideoCodec::Vp8]).await;
        let media: Vec<&str> =
            sdp.split("\r\nm=").skip(1).filter(|m| !m.starts_with("application")).collect();
        assert_eq!(media.len(), 3, "audio, camera, screen: {sdp}");
        for section in media {
            assert!(section.contains("transport-wide-cc-extensions"), "{section}");
            assert!(section.contains(super::super::remb::ABS_SEND_TIME_URI), "{section}");
        }
    }
}
