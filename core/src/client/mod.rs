//! The call client: the one object an app talks to.
//!
//! [`CallClient::new`] checks the join link on the device (shape, expiry) and starts the client's
//! own tokio runtime. Every method returns at once; the work runs on that runtime, and events reach
//! the app's [`CallListener`] on a dedicated background thread (never the caller's, never blocking
//! the driver). The driver feeds the sans-I/O [`CallMachine`] with what the network, the media
//! stack and the clock report, and carries out what it decides.

pub mod codecs;
pub mod estimator;
pub mod ice;
pub mod keyframe_requests;
pub mod loss_recovery;
pub mod media;
pub mod pacing;
pub mod received_frames;
pub mod remb;
pub mod sender_clock;
pub mod stats;
pub mod turn_bridge;
pub mod turn_framing;
pub mod webrtc;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::audio::fec::FecSizing;
use crate::audio::{AudioSink, AudioSource};
use crate::call::ladder::{BitrateLadder, EncoderTarget, Rung, VideoPreference, DEFAULT_START_RUNG};
use crate::call::machine::{CallEvent, CallMachine, CallState, EndReason, Input, Output};
use crate::call::transport::{SignalingTransport, Transport};
use crate::error::CallError;
use crate::frame::{EncodedFrame, FrameKind, VideoCodec};
use crate::link::JoinLink;
use crate::net::api_client::ApiClient;
use crate::net::http_signaling;
use crate::net::signaling::{self, SignalingEvent};
use crate::protocol::{encode, ClientMessage, Frame, QualityLevel, Role, ServerMessage, MAX_CHAT_CHARS};
use crate::video::{VideoCodecs, VideoSink, VideoSource};
use media::{MediaBackend, MediaSession, MediaStats, PeerCommand, PeerEvent};

/// Everything the app hears.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The call's own events (state, waiting room, chat, peer state, end).
    Call(CallEvent),
    /// Once a second while the media connection exists.
    Stats(MediaStats),
    /// The connection quality level changed (see [`crate::call::quality`] for the rule).
    QualityChanged(QualityLevel),
    /// The adaptive bitrate chose another rung of the ladder: encode at its size and frame rate
    /// (the frame rate is below the ladder's while the examination mode keeps the resolution).
    VideoRungChanged(Rung),
    /// The video bitrate to encode at now, within the rung (from the bandwidth estimate); sent
    /// when it moved by a tenth or more, and with every rung change.
    EncoderBitrate(u64),
    /// A frame from the peer (encoded; decode it with the platform's codec, or with the
    /// `televisit-codecs` crate's software ones). Audio frames
    /// stop coming here once the app took the [`CallClient::audio_sink`]: the sink plays them.
    RemoteFrame(EncodedFrame),
    /// Encode the next frame of this kind (camera or screen) as a keyframe: the peer's decoder lost
    /// the picture (RTCP PLI/FIR), or frames were dropped because more video was sent than the
    /// bandwidth estimate allows, and frames that depend on them are dropped until a keyframe.
    KeyframeRequested(FrameKind),
    /// Encode camera and screen video with this codec (the one negotiated with the peer, see
    /// [`webrtc::WebRtcSettings::video_codecs`]). Comes before any frame is wanted, once per
    /// connection (again only if a renegotiation changes it).
    VideoCodec(VideoCodec),
    /// The peer's camera (`Video`) or screen (`Screen`) frames arrive in this codec: decode them
    /// with it. Comes before the first [`ClientEvent::RemoteFrame`] of that kind.
    RemoteVideoCodec(FrameKind, VideoCodec),
}

/// The app's listener. Called on the client's event thread, one event at a time, in order.
pub trait CallListener: Send + Sync {
    /// One event.
    fn on_event(&self, event: ClientEvent);
}

/// Options of a call client.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Best video rung to send (`"1080p"`, `"720p"`, ...).
    pub max_video: String,
    /// Rung to start with (low by default: the ladder climbs as the peer acknowledges the video).
    pub start_video: String,
    /// Connect through a TURN relay only ("hide my IP"): the peer never sees this device's host or
    /// server-reflexive candidates. The clinic's server can force it too.
    pub relay_only: bool,
    /// Signaling over the WebSocket with the HTTP fallback (`Auto`, the default), or forced to one.
    pub signaling_transport: SignalingTransport,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            max_video: "1080p".into(),
            start_video: DEFAULT_START_RUNG.into(),
            relay_only: false,
            signaling_transport: SignalingTransport::Auto,
        }
    }
}

/// Where the call is: what [`CallClient::state`] reads and what [`CallClient::joined`] and
/// [`CallClient::ended`] wait on.
#[derive(Debug, Clone, PartialEq)]
struct Status {
    state: CallState,
    role: Option<Role>,
    end: Option<EndReason>,
}

enum Command {
    Input(Input),
    Frame(EncodedFrame),
    Peer(PeerCommand),
    Close,
}

/// The call's audio engine objects, made when the app first asks for them.
#[derive(Default)]
struct AudioTracks {
    source: Mutex<Option<AudioSource>>,
    sink: Mutex<Option<Arc<AudioSink>>>,
}

impl AudioTracks {
    fn source(&self) -> Option<AudioSource> {
        self.source.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn sink(&self) -> Option<Arc<AudioSink>> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The call's video engine objects, made when the app first asks for them, and what they must
/// know when they start: the ladder's target and the codecs negotiated so far.
struct VideoTracks {
    source: Mutex<Option<VideoSource>>,
    sink: Mutex<Option<Arc<VideoSink>>>,
    target: Mutex<EncoderTarget>,
    codec: Mutex<Option<VideoCodec>>,
    remote_codec: Mutex<Option<VideoCodec>>,
}

impl VideoTracks {
    fn new(target: EncoderTarget) -> VideoTracks {
        VideoTracks {
            source: Mutex::default(),
            sink: Mutex::default(),
            target: Mutex::new(target),
            codec: Mutex::default(),
            remote_codec: Mutex::default(),
        }
    }

    fn source(&self) -> Option<VideoSource> {
        self.source.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn sink(&self) -> Option<Arc<VideoSink>> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_target(&self, change: impl FnOnce(&mut EncoderTarget)) {
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut target);
        if let Some(source) = self.source() {
            source.set_target(*target);
        }
    }

    fn set_codec(&self, codec: VideoCodec) {
        *self.codec.lock().unwrap_or_else(|e| e.into_inner()) = Some(codec);
        if let Some(source) = self.source() {
            source.set_codec(codec);
        }
    }

    fn set_remote_codec(&self, codec: VideoCodec) {
        *self.remote_codec.lock().unwrap_or_else(|e| e.into_inner()) = Some(codec);
        if let Some(sink) = self.sink() {
            sink.set_codec(codec);
        }
    }
}

/// The call client.
pub struct CallClient {
    commands: mpsc::UnboundedSender<Command>,
    status: tokio::sync::watch::Receiver<Status>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    events: EventThread,
    link: JoinLink,
    audio: Arc<AudioTracks>,
    video: Arc<VideoTracks>,
}

impl CallClient {
    /// Checks the link locally and prepares a call; nothing is sent until [`CallClient::join`].
    pub fn new(
        link: &str,
        listener: Arc<dyn CallListener>,
        media: Arc<dyn MediaBackend>,
        options: CallOptions,
    ) -> Result<CallClient, CallError> {
        let link = JoinLink::parse(link)?;
        link.check_expiry(unix_ms())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("televisit-core")
            .enable_all()
            .build()
            .map_err(|e| CallError::Media(format!("cannot start the call runtime: {e}")))?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (status_tx, status) =
            tokio::sync::watch::channel(Status { state: CallState::Idle, role: None, end: None });
        let events = EventThread::start(listener);
        let audio = Arc::new(AudioTracks::default());
        let video =
            Arc::new(VideoTracks::new(BitrateLadder::new(&options.start_video, &options.max_video).target()));
        let driver = Driver::new(link.clone(), media, options, commands.clone(), events.sender(), status_tx)
            .with_audio(Arc::clone(&audio))
            .with_video(Arc::clone(&video));
        runtime.spawn(driver.run(command_rx));
        Ok(CallClient { commands, status, runtime: Mutex::new(Some(runtime)), events, link, audio, video })
    }

    fn input(&self, input: Input) {
        let _ = self.commands.send(Command::Input(input));
    }

    /// Joins: checks the link with the server, opens signaling, waits for the other side.
    pub fn join(&self) {
        self.input(Input::Join);
    }

    /// The call's state now.
    pub fn state(&self) -> CallState {
        self.status.borrow().state
    }

    /// This side's role, once the server accepted the link.
    pub fn role(&self) -> Option<Role> {
        self.status.borrow().role
    }

    /// Resolves once the server accepted the link (waiting room or beyond) with this side's role,
    /// or with the error that ended the attempt. Call [`CallClient::join`] first. The future
    /// holds no reference to the client and runs on any executor.
    pub fn joined(&self) -> impl std::future::Future<Output = Result<Role, CallError>> + Send + 'static {
        let mut status = self.status.clone();
        async move {
            let status = status
                .wait_for(|s| {
                    s.end.is_some()
                        || !matches!(s.state, CallState::Idle | CallState::Joining | CallState::Ended)
                })
                .await
                .map_err(|_| CallError::Closed)?;
            match (&status.end, status.role) {
                (None, Some(role)) => Ok(role),
                (Some(EndReason::Failed(error)), _) => Err(error.clone()),
                (Some(EndReason::CallEnded { .. }), _) => Err(CallError::CallEnded),
                _ => Err(CallError::Closed),
            }
        }
    }

    /// Resolves when the call is over for this side, with the reason (for a call ended by the
    /// doctor or the clinic, the duration the server recorded). Runs on any executor.
    pub fn ended(&self) -> impl std::future::Future<Output = EndReason> + Send + 'static {
        let mut status = self.status.clone();
        async move {
            match status.wait_for(|s| s.end.is_some()).await {
                Ok(status) => status.end.clone().unwrap_or(EndReason::Left),
                Err(_) => EndReason::Failed(CallError::Closed),
            }
        }
    }

    /// The client's own runtime, for work that must run beside the call (bindings spawn their
    /// async methods here instead of starting another runtime).
    pub fn runtime(&self) -> Result<tokio::runtime::Handle, CallError> {
        let runtime = self.runtime.lock().expect("runtime lock");
        runtime.as_ref().map(|r| r.handle().clone()).ok_or(CallError::Closed)
    }

    /// The appointment this link belongs to.
    pub fn appointment_id(&self) -> &str {
        &self.link.appointment_id
    }

    /// Microphone on (unmuted) or off; the peer is told.
    pub fn set_microphone_enabled(&self, enabled: bool) {
        self.input(Input::SetMicrophone(enabled));
    }

    /// Camera on or off; the peer is told.
    pub fn set_camera_enabled(&self, enabled: bool) {
        self.input(Input::SetCamera(enabled));
    }

    /// What this side's camera gives up first when bandwidth is short: `Detail` (the examination
    /// mode) keeps the picture's resolution and lowers its frame rate.
    pub fn set_video_preference(&self, preference: VideoPreference) {
        self.input(Input::SetVideoPreference(preference));
    }

    /// Starts or stops sharing the screen. Doctors only: a patient gets [`CallError::NotAllowed`].
    pub fn set_screen_share(&self, active: bool) -> Result<(), CallError> {
        if self.role() == Some(Role::Patient) {
            return Err(CallError::NotAllowed("only the doctor can share a screen".into()));
        }
        self.input(Input::SetScreenShare(active));
        Ok(())
    }

    /// Starts or stops the examination mode (doctors only: a patient gets
    /// [`CallError::NotAllowed`]): the patient's camera keeps its resolution and gives up frame
    /// rate when bandwidth is short, for looking at a rash or a wound.
    pub fn set_examination(&self, active: bool) -> Result<(), CallError> {
        if self.role() == Some(Role::Patient) {
            return Err(CallError::NotAllowed("only the doctor can start the examination mode".into()));
        }
        self.input(Input::SetExamination(active));
        Ok(())
    }

    /// Sends a chat message (1 to 2000 characters).
    pub fn send_chat(&self, text: &str) -> Result<(), CallError> {
        let length = text.trim().chars().count();
        if length == 0 || length > MAX_CHAT_CHARS {
            return Err(CallError::Server {
                code: "invalid_frame".into(),
                message: format!("a chat message has 1 to {MAX_CHAT_CHARS} characters"),
            });
        }
        self.input(Input::SendChat(text.to_owned()));
        Ok(())
    }

    /// Sends an encoded audio or video frame (from the platform's encoder). Frames are dropped
    /// while the microphone or camera is off, and until the media connection is up.
    pub fn send_frame(&self, frame: EncodedFrame) {
        let _ = self.commands.send(Command::Frame(frame));
    }

    /// The microphone's way into the call (the same object on every call): push 10 ms frames of
    /// 48 kHz mono PCM; the core encodes them with Opus (in-band FEC following the measured
    /// loss) and sends them while the microphone is on. Use it instead of sending encoded audio
    /// with [`CallClient::send_frame`].
    pub fn audio_source(&self) -> Result<AudioSource, CallError> {
        let mut source = self.audio.source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = source.as_ref() {
            return Ok(source.clone());
        }
        let commands = self.commands.clone();
        let made =
            AudioSource::start(&self.runtime()?, move |frame| commands.send(Command::Frame(frame)).is_ok())
                .map_err(|e| CallError::Media(e.to_string()))?;
        *source = Some(made.clone());
        Ok(made)
    }

    /// The speaker's way out of the call (the same object on every call): pull a 10 ms frame of
    /// 48 kHz mono PCM from the platform's playout callback. From the first call on, the peer's
    /// audio goes through the core's jitter buffer and Opus decoder to it, not to the listener.
    pub fn audio_sink(&self) -> Result<Arc<AudioSink>, CallError> {
        self.runtime()?; // not after close
        let mut sink = self.audio.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = sink.as_ref() {
            return Ok(Arc::clone(sink));
        }
        let made = Arc::new(AudioSink::new().map_err(|e| CallError::Media(e.to_string()))?);
        *sink = Some(Arc::clone(&made));
        Ok(made)
    }

    /// The camera's way into the call (the same object on every call): push raw pictures (I420 or
    /// NV12, with their rotation and capture time); the core encodes them with `codecs` (the
    /// platform's hardware codecs, or the `televisit-codecs` crate's) in the negotiated codec,
    /// following the ladder and the peer's keyframe requests, and sends them while the camera is
    /// on. Use it instead of sending encoded video with [`CallClient::send_frame`]; the ladder and
    /// keyframe events still reach the listener, for the app to show.
    pub fn video_source(&self, codecs: Arc<dyn VideoCodecs>) -> Result<VideoSource, CallError> {
        self.runtime()?; // not after close
        let mut source = self.video.source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = source.as_ref() {
            return Ok(source.clone());
        }
        let commands = self.commands.clone();
        let target = *self.video.target.lock().unwrap_or_else(|e| e.into_inner());
        let made =
            VideoSource::start(codecs, target, move |frame| commands.send(Command::Frame(frame)).is_ok());
        if let Some(codec) = *self.video.codec.lock().unwrap_or_else(|e| e.into_inner()) {
            made.set_codec(codec);
        }
        *source = Some(made.clone());
        Ok(made)
    }

    /// The renderer's way out of the call (the same object on every call): pull the peer's camera
    /// pictures, decoded with `codecs`. From then on the peer's camera frames go to it, not to the
    /// listener; a broken picture asks the peer for a keyframe by itself.
    pub fn video_sink(&self, codecs: Arc<dyn VideoCodecs>) -> Result<Arc<VideoSink>, CallError> {
        self.runtime()?; // not after close
        let mut sink = self.video.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = sink.as_ref() {
            return Ok(Arc::clone(sink));
        }
        let commands = self.commands.clone();
        let made = Arc::new(VideoSink::start(codecs, move || {
            let _ = commands.send(Command::Peer(PeerCommand::RequestKeyframe(FrameKind::Video)));
        }));
        if let Some(codec) = *self.video.remote_codec.lock().unwrap_or_else(|e| e.into_inner()) {
            made.set_codec(codec);
        }
        *sink = Some(Arc::clone(&made));
        Ok(made)
    }

    /// Asks the peer for a keyframe of its camera (`Video`) or screen (`Screen`): call it when the
    /// platform's decoder reports a broken picture. The peer's app hears `KeyframeRequested`.
    pub fn request_keyframe(&self, kind: FrameKind) {
        let _ = self.commands.send(Command::Peer(PeerCommand::RequestKeyframe(kind)));
    }

    /// Ends the call (doctor) or leaves it (patient).
    pub fn hang_up(&self) {
        self.input(Input::Hangup);
    }

    /// The device's network changed: restart ICE and reconnect signaling now.
    pub fn network_changed(&self) {
        self.input(Input::NetworkChanged);
    }

    /// Stops everything and releases the listener: once this returns, no callback comes any more
    /// (unless called from a callback, where the current one finishes). Idempotent; works from any
    /// thread, async or not. The client is unusable afterwards.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
        if let Some(source) = self.audio.source() {
            source.close();
        }
        if let Some(sink) = self.audio.sink() {
            sink.close();
        }
        if let Some(source) = self.video.source() {
            source.close();
        }
        if let Some(sink) = self.video.sink() {
            sink.close();
        }
        self.events.stop();
        if let Some(runtime) = self.runtime.lock().expect("runtime lock").take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for CallClient {
    fn drop(&mut self) {
        self.close();
    }
}

/// Events are delivered on their own thread so a slow listener never stalls the call.
struct EventThread {
    sender: std::sync::mpsc::Sender<Option<ClientEvent>>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl EventThread {
    fn start(listener: Arc<dyn CallListener>) -> EventThread {
        let (sender, receiver) = std::sync::mpsc::channel::<Option<ClientEvent>>();
        let handle = std::thread::Builder::new()
            .name("televisit-events".into())
            .spawn(move || {
                // `None` is the stop signal; the listener is dropped when this returns.
                while let Ok(Some(event)) = receiver.recv() {
                    listener.on_event(event);
                }
            })
            .expect("event thread starts");
        EventThread { sender, handle: Mutex::new(Some(handle)) }
    }

    fn sender(&self) -> EventSender {
        EventSender(self.sender.clone())
    }

    fn stop(&self) {
        let _ = self.sender.send(None);
        let handle = self.handle.lock().expect("event thread lock").take();
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

/// The driver's end of the event thread.
struct EventSender(std::sync::mpsc::Sender<Option<ClientEvent>>);

impl EventSender {
    fn send(&self, event: ClientEvent) -> Result<(), ()> {
        self.0.send(Some(event)).map_err(|_| ())
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Driver {
    link: JoinLink,
    api: ApiClient,
    media: Arc<dyn MediaBackend>,
    machine: CallMachine,
    origin: Instant,
    commands: mpsc::UnboundedSender<Command>,
    events: EventSender,
    status: tokio::sync::watch::Sender<Status>,
    signaling: Option<mpsc::Sender<String>>,
    /// Frames waiting for room in the connection's queue (a resend after a reconnect can be longer
    /// than the queue). They go with their connection: the machine resends what was not confirmed.
    backlog: VecDeque<String>,
    signaling_generation: u64,
    session: Option<Box<dyn MediaSession>>,
    peer_events: (mpsc::UnboundedSender<PeerEvent>, mpsc::UnboundedReceiver<PeerEvent>),
    audio: Arc<AudioTracks>,
    video: Arc<VideoTracks>,
    fec: FecSizing,
}

impl Driver {
    fn new(
        link: JoinLink,
        media: Arc<dyn MediaBackend>,
        options: CallOptions,
        commands: mpsc::UnboundedSender<Command>,
        events: EventSender,
        status: tokio::sync::watch::Sender<Status>,
    ) -> Driver {
        Driver {
            api: ApiClient::new(link.clone()),
            link,
            media,
            machine: CallMachine::with_ladder(BitrateLadder::new(&options.start_video, &options.max_video))
                .with_relay_only(options.relay_only)
                .with_wall_clock(unix_ms())
                .with_signaling_transport(options.signaling_transport),
            origin: Instant::now(),
            commands,
            events,
            status,
            signaling: None,
            backlog: VecDeque::new(),
            signaling_generation: 0,
            session: None,
            peer_events: mpsc::unbounded_channel(),
            audio: Arc::default(),
            video: Arc::new(VideoTracks::new(BitrateLadder::new(DEFAULT_START_RUNG, "1080p").target())),
            fec: FecSizing::new(),
        }
    }

    fn with_audio(self, audio: Arc<AudioTracks>) -> Driver {
        Driver { audio, ..self }
    }

    fn with_video(self, video: Arc<VideoTracks>) -> Driver {
        Driver { video, ..self }
    }

    fn now_ms(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let (signaling_tx, mut signaling_rx) = mpsc::channel::<(u64, SignalingEvent)>(256);
        let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let deadline =
                self.machine.next_timeout().map(|at| self.origin + Duration::from_millis(at.max(0) as u64));
            let backlog_to = self.signaling.clone().filter(|_| !self.backlog.is_empty());
            let input = tokio::select! {
                Some(permit) = async { backlog_to?.reserve_owned().await.ok() } => {
                    if let Some(text) = self.backlog.pop_front() {
                        permit.send(text);
                    }
                    continue;
                }
                command = commands.recv() => match command {
                    Some(Command::Input(input)) => input,
                    Some(Command::Frame(frame)) => {
                        if let Some(session) = self.session.as_mut() {
                            session.command(PeerCommand::SendFrame(frame));
                        }
                        continue;
                    }
                    Some(Command::Peer(command)) => {
                        self.peer(command);
                        continue;
                    }
                    Some(Command::Close) | None => break,
                },
                Some((generation, event)) = signaling_rx.recv() => {
                    if generation != self.signaling_generation {
                        continue; // a connection we already replaced
                    }
                    match event {
                        SignalingEvent::Opened => Input::SignalingOpened,
                        SignalingEvent::OpenFailed(failure) => {
                            self.set_signaling(None);
                            Input::SignalingFailed(failure)
                        }
                        SignalingEvent::Closed => {
                            self.set_signaling(None);
                            Input::SignalingLost
                        }
                        SignalingEvent::Frame(text) => match serde_json::from_str::<Frame<ServerMessage>>(&text) {
                            Ok(frame) => {
                                tracing::debug!(seq = ?frame.seq, kind = frame_type(&text), "signaling frame in");
                                Input::Frame(frame)
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "ignoring a server frame this client does not understand");
                                continue;
                            }
                        },
                    }
                },
                Some(event) = self.peer_events.1.recv() => match event {
                    PeerEvent::LocalOffer(sdp) => Input::LocalOffer(sdp),
                    PeerEvent::LocalAnswer(sdp) => Input::LocalAnswer(sdp),
                    PeerEvent::LocalCandidate(candidate) => Input::LocalCandidate(candidate),
                    PeerEvent::State(state) => Input::PeerConnection(state),
                    PeerEvent::Stats(stats) => {
                        self.on_stats(*stats, &signaling_tx);
                        continue;
                    }
                    PeerEvent::EstimateCut { estimate_bps, acknowledged_bps } => {
                        Input::EstimateCut { estimate_bps, acknowledged_bps }
                    }
                    PeerEvent::Frame(frame) => {
                        match (frame.kind, self.audio.sink(), self.video.sink()) {
                            (FrameKind::Audio, Some(_), _) => {}
                            (FrameKind::Video, _, Some(sink)) => sink.push(frame),
                            _ => {
                                let _ = self.events.send(ClientEvent::RemoteFrame(frame));
                            }
                        }
                        continue;
                    }
                    PeerEvent::AudioPacket(packet, arrival) => {
                        if let Some(sink) = self.audio.sink() {
                            sink.push(packet, arrival);
                        }
                        continue;
                    }
                    PeerEvent::VideoCodec(codec) => {
                        self.video.set_codec(codec);
                        let _ = self.events.send(ClientEvent::VideoCodec(codec));
                        continue;
                    }
                    PeerEvent::RemoteVideoCodec(kind, codec) => {
                        if kind == FrameKind::Video {
                            self.video.set_remote_codec(codec);
                        }
                        let _ = self.events.send(ClientEvent::RemoteVideoCodec(kind, codec));
                        continue;
                    }
                    PeerEvent::KeyframeNeeded(kind) => {
                        if let (FrameKind::Video, Some(source)) = (kind, self.video.source()) {
                            source.request_keyframe();
                        }
                        let _ = self.events.send(ClientEvent::KeyframeRequested(kind));
                        continue;
                    }
                    PeerEvent::Warning(message) => {
                        tracing::warn!(%message, "media warning");
                        continue;
                    }
                },
                _ = sleep_until(deadline) => Input::Tick,
                _ = stats_tick.tick() => {
                    if let Some(session) = self.session.as_mut() {
                        session.command(PeerCommand::ReportStats);
                    }
                    continue;
                }
            };
            let now = self.now_ms();
            let outputs = self.machine.handle(input, now);
            // Before any event goes out, so `state()` never lags behind what the app was told.
            let (state, role) = (self.machine.state(), self.machine.role());
            self.status.send_modify(|s| (s.state, s.role) = (state, role));
            self.execute(outputs, &signaling_tx);
        }
        if let Some(mut session) = self.session.take() {
            session.command(PeerCommand::Close);
        }
        self.signaling = None;
    }

    fn execute(&mut self, outputs: Vec<Output>, signaling_tx: &mpsc::Sender<(u64, SignalingEvent)>) {
        for output in outputs {
            match output {
                Output::FetchJoin => {
                    let api = self.api.clone();
                    let commands = self.commands.clone();
                    tokio::spawn(async move {
                        let input = match api.join().await {
                            Ok(join) => Input::JoinAccepted(Box::new(join)),
                            Err(error) => Input::JoinFailed(error),
                        };
                        let _ = commands.send(Command::Input(input));
                    });
                }
                Output::FetchIceServers => {
                    let api = self.api.clone();
                    let commands = self.commands.clone();
                    tokio::spawn(async move {
                        let result = api.ice_servers().await.map(Box::new);
                        let _ = commands.send(Command::Input(Input::IceServers(result)));
                    });
                }
                Output::OpenSignaling { transport, path } => {
                    self.signaling_generation += 1;
                    let (generation, events) = (self.signaling_generation, signaling_tx.clone());
                    let sender = match transport {
                        Transport::WebSocket => {
                            signaling::connect(self.link.websocket_url(&path), generation, events)
                        }
                        Transport::Http => {
                            tracing::info!("signaling over the HTTP fallback");
                            http_signaling::connect(self.api.clone(), path, generation, events)
                        }
                    };
                    self.set_signaling(Some(sender));
                }
                Output::CloseSignaling => {
                    self.signaling_generation += 1;
                    self.set_signaling(None);
                }
                Output::SendJoin { resume } => {
                    let join = ClientMessage::Join { token: Some(self.link.token.clone()), resume };
                    self.send_text(encode(&Frame::new(join)));
                }
                Output::Send(text) => self.send_text(text),
                Output::ResetPeer { ice } => {
                    if let Some(mut old) = self.session.take() {
                        old.command(PeerCommand::Close);
                    }
                    let role = self.machine.role().unwrap_or(Role::Patient);
                    // A fresh channel, so events of the closed session cannot reach the machine.
                    self.peer_events = mpsc::unbounded_channel();
                    let session =
                        self.media.create_session(ice, role, self.origin, self.peer_events.0.clone());
                    self.session = Some(session);
                }
                Output::Peer(PeerCommand::Close) => {
                    if let Some(mut session) = self.session.take() {
                        session.command(PeerCommand::Close);
                    }
                }
                Output::Peer(command) => self.peer(command),
                Output::QualityChanged(level) => {
                    let _ = self.events.send(ClientEvent::QualityChanged(level));
                }
                Output::VideoRungChanged(rung) => {
                    self.video.set_target(|t| *t = EncoderTarget::at_rung(rung));
                    let _ = self.events.send(ClientEvent::VideoRungChanged(rung));
                }
                Output::EncoderBitrate(bps) => {
                    self.video.set_target(|t| t.bitrate_bps = bps);
                    let _ = self.events.send(ClientEvent::EncoderBitrate(bps));
                }
                Output::Event(event) => {
                    if let CallEvent::Ended(reason) = &event {
                        self.status.send_modify(|s| s.end = Some(reason.clone()));
                    }
                    let _ = self.events.send(ClientEvent::Call(event));
                }
            }
        }
    }

    fn peer(&mut self, command: PeerCommand) {
        if !matches!(command, PeerCommand::SendFrame(_) | PeerCommand::SetEncoderTarget(_)) {
            tracing::debug!(command = command_name(&command), "peer connection command");
        }
        match self.session.as_mut() {
            Some(session) => session.command(command),
            None => tracing::debug!(?command, "no peer connection for this command"),
        }
    }

    fn set_signaling(&mut self, signaling: Option<mpsc::Sender<String>>) {
        self.signaling = signaling;
        self.backlog.clear();
    }

    /// Queues a frame on the connection, in order behind any backlog.
    fn send_text(&mut self, text: String) {
        let Some(signaling) = &self.signaling else { return };
        tracing::debug!(kind = frame_type(&text), "signaling frame out");
        if !self.backlog.is_empty() {
            self.backlog.push_back(text);
        } else if let Err(mpsc::error::TrySendError::Full(text)) = signaling.try_send(text) {
            self.backlog.push_back(text);
        }
    }

    /// The machine decides from the stats (quality level, ladder); the app gets them too.
    fn on_stats(&mut self, stats: MediaStats, signaling_tx: &mpsc::Sender<(u64, SignalingEvent)>) {
        let now = self.now_ms();
        let outputs = self.machine.handle(Input::Stats(Box::new(stats.clone())), now);
        self.execute(outputs, signaling_tx);
        // Our inbound loss stands for the peer's (the path is taken as symmetric: the stack does
        // not parse the peer's reports) and sizes the voice's in-band FEC.
        if let Some(loss) = stats.loss_percent {
            let expected = self.fec.on_report(loss);
            if let Some(source) = self.audio.source() {
                source.set_expected_loss(expected);
            }
        }
        let _ = self.events.send(ClientEvent::Stats(stats));
    }
}

/// A signaling frame's `type`, for the log (the rest may be private).
fn frame_type(text: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let seq = value.get("seq").map(|s| format!(" #{s}")).unwrap_or_default();
    format!("{}{seq}", value.get("type").and_then(|t| t.as_str()).unwrap_or("?"))
}

/// A command's name for the log (SDP and candidates stay out of it).
fn command_name(command: &PeerCommand) -> &'static str {
    match command {
        PeerCommand::CreateOffer { ice_restart: true } => "create offer (ICE restart)",
        PeerCommand::CreateOffer { ice_restart: false } => "create offer",
        PeerCommand::AcceptOffer(_) => "accept offer",
        PeerCommand::AcceptAnswer(_) => "accept answer",
        PeerCommand::Rollback => "rollback",
        PeerCommand::AddRemoteCandidate(_) => "add remote candidate",
        PeerCommand::SetIceServers(_) => "set ICE servers",
        _ => "other",
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
