//! A headless participant: joins a call from a terminal, prints events and a stats line each
//! second, sends a synthetic camera and microphone, and can save the received video.
//!
//! The synthetic media go through the software codec path ([`televisit_codecs`]): the moving test
//! picture ([`televisit_codecs::pattern`]) is VP8-encoded live at the ladder's rung (360p30 to start, climbing as the link allows)
//! and a 440 Hz tone is Opus-encoded. What arrives is decoded, and the frame counter is read back
//! from the *decoded picture* ([`PictureReader`]): the check covers the pictures, not just the
//! packets.

pub use televisit_codecs as codecs;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use televisit_codecs::audio::{OpusDecoder, OpusEncoder, INITIAL_EXPECTED_LOSS_PERCENT};
use televisit_codecs::pattern::{self, SineTone};
use televisit_codecs::video::{self, Vp8Decoder, Vp8Encoder};
use televisit_codecs::CodecError;
use televisit_core::audio::fec::FecSizing;
use televisit_core::call::ladder::{EncoderTarget, Rung};
use televisit_core::call::machine::{CallEvent, CallState, EndReason};
use televisit_core::call::transport::SignalingTransport;
use televisit_core::client::webrtc::{WebRtcMedia, WebRtcSettings};
use televisit_core::client::{CallClient, CallListener, CallOptions, ClientEvent};
use televisit_core::error::CallError;
use televisit_core::frame::{EncodedFrame, FrameKind, VideoCodec};
use televisit_core::protocol::Role;

/// What the headless client does.
#[derive(Debug, Clone, Default)]
pub struct HeadlessOptions {
    /// The join link.
    pub link: String,
    /// Leave (or end, as the doctor) after this long in the call; `None`: until the call ends.
    pub duration: Option<Duration>,
    /// Save the received video frames to this IVF file.
    pub save_video: Option<std::path::PathBuf>,
    /// Send a chat message once connected.
    pub chat: Option<String>,
    /// Mute the microphone this long after connecting.
    pub mute_after: Option<Duration>,
    /// Local UDP addresses for ICE (default `0.0.0.0:0`).
    pub udp_addrs: Vec<String>,
    /// Connect through a TURN relay only ("hide my IP").
    pub relay_only: bool,
    /// Signaling over the WebSocket with the HTTP fallback (`Auto`), or forced to one.
    pub signaling_transport: SignalingTransport,
    /// As the doctor, share a synthetic screen ([`spawn_synthetic_screen`]) this long after
    /// connecting.
    pub share_screen_after: Option<Duration>,
    /// Read standard input: each `network-changed` line calls [`CallClient::network_changed`]
    /// (what a device's network monitor does; tests switch interfaces and say so here).
    pub network_changes_on_stdin: bool,
}

/// How the run ended, as a process exit code: 0 the call ended or the time was up, 2 the link
/// was refused, 1 anything else.
pub fn exit_code(outcome: &Result<EndReason, CallError>) -> i32 {
    match outcome {
        Ok(EndReason::Failed(error)) | Err(error) => match error {
            CallError::LinkInvalid
            | CallError::LinkExpired
            | CallError::LinkReplaced
            | CallError::CallEnded => 2,
            _ => 1,
        },
        Ok(_) => 0,
    }
}

/// The first picture counter a participant sends: the doctor's pictures count from
/// `0x1000_0000`, the patient's from `0x2000_0000`, so a receiver can tell whose picture it
/// decoded (`counter >> 28` is 1 or 2).
pub fn first_counter(role: Option<Role>) -> u32 {
    if role == Some(Role::Doctor) {
        0x1000_0000
    } else {
        0x2000_0000
    }
}

/// The synthetic camera and microphone, running on their own thread (see
/// [`spawn_synthetic_media`]).
pub struct SyntheticMedia {
    target: Arc<Mutex<EncoderTarget>>,
    keyframe: Arc<AtomicBool>,
    /// The packet loss the voice's in-band FEC prepares for, percent.
    expected_loss: Arc<AtomicU8>,
    thread: std::thread::JoinHandle<()>,
}

impl SyntheticMedia {
    /// Follows a rung of the ladder (its size, frame rate and target bitrate).
    pub fn set_rung(&self, rung: Rung) {
        self.set_target(EncoderTarget::at_rung(rung));
    }

    /// Follows an encoder target.
    pub fn set_target(&self, target: EncoderTarget) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Makes the next video frame a keyframe.
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }

    /// Sizes the voice's in-band FEC for this packet loss, percent (the measured loss).
    pub fn set_expected_loss(&self, percent: u8) {
        self.expected_loss.store(percent, Ordering::Relaxed);
    }

    /// Waits for the thread to end (after `stop` was set).
    pub fn join(self) -> std::thread::Result<()> {
        self.thread.join()
    }
}

/// Sends the synthetic camera (the test pattern, VP8-encoded live at the target's size and frame
/// rate, 720p30 to start) and microphone (a 440 Hz tone, Opus, 20 ms frames) through `client`
/// while `sending` is set, until `stop`. Pictures count from [`first_counter`] of the client's
/// role. Fails only if a codec cannot start.
pub fn spawn_synthetic_media(
    client: Arc<CallClient>,
    sending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<SyntheticMedia, CodecError> {
    let target = Arc::new(Mutex::new(video::default_target()));
    let keyframe = Arc::new(AtomicBool::new(false));
    let mut encoder = Vp8Encoder::new(video::default_target())?;
    let mut voice = OpusEncoder::new()?;
    let expected_loss = Arc::new(AtomicU8::new(INITIAL_EXPECTED_LOSS_PERCENT));
    let thread = std::thread::spawn({
        let (target, keyframe) = (Arc::clone(&target), Arc::clone(&keyframe));
        let wanted_loss = Arc::clone(&expected_loss);
        move || {
            let mut tone = SineTone::new(440.0);
            let mut loss = INITIAL_EXPECTED_LOSS_PERCENT;
            let mut counter: Option<u32> = None;
            let (mut next_video, mut next_audio) = (Instant::now(), Instant::now());
            while !stop.load(Ordering::Relaxed) {
                if !sending.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                    (next_video, next_audio) = (Instant::now(), Instant::now());
                    continue;
                }
                let wanted = *target.lock().unwrap_or_else(|e| e.into_inner());
                if wanted != encoder.target() {
                    if let Err(error) = encoder.set_target(wanted) {
                        tracing::warn!(%error, "the video encoder cannot follow the ladder");
                    }
                }
                let now = Instant::now();
                if now >= next_video {
                    let fps = encoder.target().fps.max(1);
                    next_video += Duration::from_secs(1) / fps;
                    if now > next_video + Duration::from_millis(100) {
                        next_video = now; // fell behind (a slow machine): skip, don't burst
                    }
                    if let Some((width, height)) = encoder.size() {
                        let n = *counter.get_or_insert_with(|| first_counter(client.role()));
                        counter = Some(n.wrapping_add(1));
                        if keyframe.swap(false, Ordering::Relaxed) {
                            encoder.request_keyframe();
                        }
                        match encoder.encode(&pattern::picture(n, width, height)) {
                            Ok(Some(frame)) => client.send_frame(frame),
                            Ok(None) => {}
                            Err(error) => tracing::warn!(%error, "video encoding failed"),
                        }
                    }
                }
                let wanted = wanted_loss.load(Ordering::Relaxed);
                if wanted != loss {
                    loss = wanted;
                    if let Err(error) = voice.set_expected_loss(loss) {
                        tracing::warn!(%error, "the voice encoder cannot follow the loss");
                    }
                }
                while now >= next_audio {
                    next_audio += Duration::from_millis(20);
                    match voice.encode(&tone.next_frame()) {
                        Ok(frame) => client.send_frame(frame),
                        Err(error) => tracing::warn!(%error, "audio encoding failed"),
                    }
                }
                let wake = next_video.min(next_audio);
                std::thread::sleep(
                    wake.saturating_duration_since(Instant::now()).min(Duration::from_millis(5)),
                );
            }
        }
    });
    Ok(SyntheticMedia { target, keyframe, expected_loss, thread })
}

/// The first picture counter of the synthetic shared screen (`counter >> 28` is 3), so a
/// receiver can tell the screen's pictures from the doctor's camera.
pub const FIRST_SCREEN_COUNTER: u32 = 0x3000_0000;

/// The synthetic shared screen, running on its own thread (see [`spawn_synthetic_screen`]).
pub struct SyntheticScreen {
    keyframe: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl SyntheticScreen {
    /// Makes the next screen frame a keyframe.
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }

    /// Waits for the thread to end (after `stop` was set).
    pub fn join(self) -> std::thread::Result<()> {
        self.thread.join()
    }
}

/// Sends a synthetic shared screen through `client` until `stop`: the test pattern at 720p, 5
/// pictures a second (a screen changes slowly), VP8-encoded as [`FrameKind::Screen`] frames,
/// counting from [`FIRST_SCREEN_COUNTER`]. Fails only if the codec cannot start.
pub fn spawn_synthetic_screen(
    client: Arc<CallClient>,
    stop: Arc<AtomicBool>,
) -> Result<SyntheticScreen, CodecError> {
    const FPS: u32 = 5;
    let rung = televisit_core::call::ladder::LADDER
        .into_iter()
        .find(|r| r.name == "720p")
        .unwrap_or(video::default_target().rung);
    let mut encoder = Vp8Encoder::new(EncoderTarget { rung, fps: FPS, bitrate_bps: 1_000_000 })?;
    let keyframe = Arc::new(AtomicBool::new(true));
    let thread = std::thread::spawn({
        let keyframe = Arc::clone(&keyframe);
        move || {
            let mut n = FIRST_SCREEN_COUNTER;
            while !stop.load(Ordering::Relaxed) {
                if keyframe.swap(false, Ordering::Relaxed) {
                    encoder.request_keyframe();
                }
                match encoder.encode(&pattern::picture(n, rung.width, rung.height)) {
                    Ok(Some(frame)) => client.send_frame(EncodedFrame { kind: FrameKind::Screen, ..frame }),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "screen encoding failed"),
                }
                n = n.wrapping_add(1);
                std::thread::sleep(Duration::from_secs(1) / FPS);
            }
        }
    });
    Ok(SyntheticScreen { keyframe, thread })
}

/// Decodes received video and reads the test pattern's counter from each decoded picture.
#[derive(Debug)]
pub struct PictureReader {
    decoder: Vp8Decoder,
    /// Frames that failed to decode (corrupt, or inter frames before the first keyframe).
    pub errors: u64,
    /// The size of the last decoded picture.
    pub size: Option<(u32, u32)>,
    /// Counters read from decoded pictures, in arrival order (pictures without a counter, such as
    /// a browser's camera, add nothing).
    pub counters: Vec<u32>,
}

impl PictureReader {
    /// A reader with a fresh decoder.
    pub fn new() -> Result<PictureReader, CodecError> {
        Ok(PictureReader { decoder: Vp8Decoder::new()?, errors: 0, size: None, counters: Vec::new() })
    }

    /// Pictures decoded so far.
    pub fn decoded(&self) -> u64 {
        self.decoder.decoded()
    }

    /// The last counter read.
    pub fn last_counter(&self) -> Option<u32> {
        self.counters.last().copied()
    }

    /// Decodes one received VP8 frame; returns the picture's counter if it carries one.
    pub fn receive(&mut self, frame: &EncodedFrame) -> Result<Option<u32>, CodecError> {
        match self.decoder.decode(&frame.data) {
            Ok(picture) => {
                self.size = Some((picture.width, picture.height));
                let counter = pattern::read_counter(&picture);
                self.counters.extend(counter);
                Ok(counter)
            }
            Err(error) => {
                self.errors += 1;
                Err(error)
            }
        }
    }
}

struct Printer(mpsc::Sender<ClientEvent>);

impl CallListener for Printer {
    fn on_event(&self, event: ClientEvent) {
        let _ = self.0.send(event);
    }
}

/// An IVF file (the container of VP8 test streams). The header is written again when the run
/// ends, with the stream's size (from its first keyframe) and the number of frames.
struct IvfWriter {
    file: std::io::BufWriter<std::fs::File>,
    frames: u32,
    size: Option<(u16, u16)>,
}

impl IvfWriter {
    fn create(path: &std::path::Path) -> std::io::Result<IvfWriter> {
        let mut writer =
            IvfWriter { file: std::io::BufWriter::new(std::fs::File::create(path)?), frames: 0, size: None };
        writer.write_header()?;
        Ok(writer)
    }

    fn write_header(&mut self) -> std::io::Result<()> {
        let (width, height) = self.size.unwrap_or((1280, 720));
        let mut header = Vec::with_capacity(32);
        header.extend_from_slice(b"DKIF");
        header.extend_from_slice(&0u16.to_le_bytes()); // version
        header.extend_from_slice(&32u16.to_le_bytes()); // header size
        header.extend_from_slice(b"VP80");
        header.extend_from_slice(&width.to_le_bytes());
        header.extend_from_slice(&height.to_le_bytes());
        header.extend_from_slice(&30u32.to_le_bytes()); // time base denominator
        header.extend_from_slice(&1u32.to_le_bytes()); // numerator
        header.extend_from_slice(&self.frames.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        self.file.write_all(&header)
    }

    fn write(&mut self, frame: &EncodedFrame) -> std::io::Result<()> {
        if self.size.is_none() && frame.keyframe {
            // A VP8 keyframe: 3-byte tag, start code 9d 01 2a, then 14-bit width and height.
            if let Some(b) = frame.data.get(6..10) {
                self.size = Some((
                    u16::from_le_bytes([b[0], b[1]]) & 0x3fff,
                    u16::from_le_bytes([b[2], b[3]]) & 0x3fff,
                ));
            }
        }
        self.file.write_all(&(frame.data.len() as u32).to_le_bytes())?;
        self.file.write_all(&u64::from(self.frames).to_le_bytes())?;
        self.file.write_all(&frame.data)?;
        self.frames += 1;
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        use std::io::Seek;
        self.file.seek(std::io::SeekFrom::Start(0))?;
        self.write_header()?;
        self.file.flush()
    }
}

fn describe(event: &CallEvent) -> String {
    match event {
        CallEvent::StateChanged(state) => format!("state {state:?}"),
        CallEvent::Joined { role, peer_display_name, .. } => {
            format!("joined as {} (the other side: {peer_display_name})", role.as_str())
        }
        CallEvent::Waiting { message } => {
            format!("waiting room{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())
        }
        CallEvent::ChatHistory(history) => format!("chat history: {} messages", history.len()),
        CallEvent::ChatReceived(message) => format!("chat from {}: {}", message.from.as_str(), message.text),
        CallEvent::PeerMediaChanged(media) => {
            format!("peer microphone {} camera {}", on(media.audio), on(media.video))
        }
        CallEvent::PeerScreenShare(active) => format!("peer screen share {}", on(*active)),
        CallEvent::Examination(active) => format!("examination mode {}", on(*active)),
        CallEvent::PeerQuality(report) => format!("peer quality {:?}", report.level),
        CallEvent::PeerLeft => "peer left".into(),
        CallEvent::SignalingReconnecting { attempt } => format!("signaling reconnecting (attempt {attempt})"),
        CallEvent::SignalingRestored => "signaling restored".into(),
        CallEvent::Error(error) => format!("error: {error}"),
        CallEvent::Ended(reason) => format!("ended: {reason:?}"),
    }
}

/// A decoded frame this long after the one before ends a gap.
const MEDIA_GAP: Duration = Duration::from_millis(500);

/// Prints `event: <what> decoded again after a gap of N ms` when this decoded frame ends a gap.
fn announce_gap(out: &mut dyn Write, what: &str, last: &mut Option<Instant>) {
    let now = Instant::now();
    if let Some(gap) = last.map(|at| now - at).filter(|gap| *gap >= MEDIA_GAP) {
        let _ = writeln!(out, "event: {what} decoded again after a gap of {} ms", gap.as_millis());
    }
    *last = Some(now);
}

fn on(value: bool) -> &'static str {
    if value {
        "on"
    } else {
        "off"
    }
}

/// The selected candidate pair for the stats line: `local-remote`, with the relay's transport,
/// e.g. `relay/tcp-host` (`-` before ICE has chosen).
pub fn path_description(stats: &televisit_core::client::media::MediaStats) -> String {
    let (Some(local), Some(remote)) = (stats.local_candidate_type, stats.remote_candidate_type) else {
        return "-".into();
    };
    let (local, remote) = (local.as_str(), remote.as_str());
    match stats.relay_transport {
        Some(transport) => format!("{local}/{}-{remote}", transport.as_str()),
        None => format!("{local}-{remote}"),
    }
}

/// Joins, runs the call, and returns how it ended. Prints one line per event and a stats line
/// each second to `out`.
pub fn run(options: HeadlessOptions, out: &mut dyn Write) -> Result<EndReason, CallError> {
    let (tx, events) = mpsc::channel();
    let udp_addrs =
        if options.udp_addrs.is_empty() { vec!["0.0.0.0:0".to_owned()] } else { options.udp_addrs.clone() };
    // The software codec is libvpx: this side encodes and decodes VP8 only.
    let media = Arc::new(WebRtcMedia::new(WebRtcSettings {
        udp_addrs,
        video_codecs: vec![VideoCodec::Vp8],
        ..WebRtcSettings::default()
    }));
    let call_options = CallOptions {
        relay_only: options.relay_only,
        signaling_transport: options.signaling_transport,
        ..CallOptions::default()
    };
    let client = Arc::new(CallClient::new(&options.link, Arc::new(Printer(tx)), media, call_options)?);
    client.join();
    if options.network_changes_on_stdin {
        let client = Arc::downgrade(&client);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                match client.upgrade() {
                    Some(client) if line.trim() == "network-changed" => client.network_changed(),
                    Some(_) => {}
                    None => return,
                }
            }
        });
    }
    let mut video_file = match &options.save_video {
        Some(path) => Some(
            IvfWriter::create(path)
                .map_err(|e| CallError::Media(format!("cannot write {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let codec_error = |e: CodecError| CallError::Media(e.to_string());
    let sending = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let media = spawn_synthetic_media(Arc::clone(&client), Arc::clone(&sending), Arc::clone(&stop))
        .map_err(codec_error)?;
    let mut pictures = PictureReader::new().map_err(codec_error)?;
    let mut voice = OpusDecoder::new().map_err(codec_error)?;
    let mut connected_at: Option<Instant> = None;
    let mut keyframe_asked_at: Option<Instant> = None;
    let mut rung_now = video::default_target().rung;
    let mut muted = false;
    let mut fec = FecSizing::new();
    let (mut video_frames, mut audio_frames, mut audio_decoded) = (0u64, 0u64, 0u64);
    // The peer's shared screen: frames received, and pictures decoded from them.
    let (mut screen_frames, mut screen_pictures) = (0u64, PictureReader::new().map_err(codec_error)?);
    let mut screen: Option<SyntheticScreen> = None;
    let mut share_after = options.share_screen_after;
    // When the last picture and the last audio frame were decoded: one that ends a gap is
    // announced (media back after a network change).
    let (mut last_picture, mut last_audio) = (None::<Instant>, None::<Instant>);
    let outcome = loop {
        let event = match events.recv_timeout(Duration::from_millis(200)) {
            Ok(event) => Some(event),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err(CallError::Closed),
        };
        match event {
            Some(ClientEvent::Call(event)) => {
                let _ = writeln!(out, "event: {}", describe(&event));
                match event {
                    CallEvent::StateChanged(CallState::Connected) if connected_at.is_none() => {
                        connected_at = Some(Instant::now());
                        sending.store(true, Ordering::Relaxed);
                        if let Some(text) = &options.chat {
                            let _ = client.send_chat(text);
                        }
                    }
                    CallEvent::Ended(reason) => break Ok(reason),
                    _ => {}
                }
            }
            Some(ClientEvent::RemoteFrame(frame)) => match frame.kind {
                FrameKind::Video => {
                    video_frames += 1;
                    let received = pictures.receive(&frame);
                    if matches!(received, Ok(Some(_))) && pictures.decoded() == 1 {
                        let _ = writeln!(out, "event: first picture decoded");
                    }
                    if received.is_ok() {
                        announce_gap(out, "picture", &mut last_picture);
                    }
                    if let Err(error) = received {
                        if pictures.errors <= 3 {
                            let _ = writeln!(out, "warning: video frame {video_frames} not decoded: {error}");
                        }
                        // The picture is broken until a keyframe: ask the sender, at most once a second.
                        if keyframe_asked_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                            client.request_keyframe(FrameKind::Video);
                            keyframe_asked_at = Some(Instant::now());
                        }
                    }
                    if let Some(file) = video_file.as_mut() {
                        let _ = file.write(&frame);
                    }
                }
                FrameKind::Audio => {
                    audio_frames += 1;
                    if voice.decode(&frame.data).is_ok() {
                        audio_decoded += 1;
                        announce_gap(out, "audio", &mut last_audio);
                    }
                }
                FrameKind::Screen => {
                    screen_frames += 1;
                    if screen_pictures.receive(&frame).is_err() && screen_pictures.errors == 1 {
                        client.request_keyframe(FrameKind::Screen);
                    }
                }
            },
            Some(ClientEvent::Stats(stats)) => {
                // Our inbound loss stands for the peer's: the path is assumed symmetric (the
                // peer's own measure of what we send is not reported back yet).
                if let Some(loss) = stats.loss_percent {
                    media.set_expected_loss(fec.on_report(loss));
                }
                let _ = writeln!(
                    out,
                    "stats: video frames received {video_frames}, decoded {} at {} (picture counter {}), audio frames received {audio_frames}, decoded {audio_decoded}, screen frames received {screen_frames}, decoded {} at {}, receive {} kbps, send {} kbps, path {}",
                    pictures.decoded(),
                    pictures.size.map_or("-".into(), |(w, h)| format!("{w}x{h}")),
                    pictures.last_counter().map_or("-".into(), |c| c.to_string()),
                    screen_pictures.decoded(),
                    screen_pictures.size.map_or("-".into(), |(w, h)| format!("{w}x{h}")),
                    stats.receive_bitrate_bps / 1000,
                    stats.send_bitrate_bps / 1000,
                    path_description(&stats),
                );
            }
            Some(ClientEvent::QualityChanged(level)) => {
                let _ = writeln!(out, "event: quality {level:?}");
            }
            Some(ClientEvent::VideoRungChanged(rung)) => {
                let _ = writeln!(out, "event: video {}", rung.name);
                rung_now = rung;
                media.set_rung(rung);
            }
            Some(ClientEvent::EncoderBitrate(bitrate_bps)) => {
                media.set_target(EncoderTarget { rung: rung_now, fps: rung_now.fps, bitrate_bps });
            }
            Some(ClientEvent::KeyframeRequested(FrameKind::Video)) => media.request_keyframe(),
            Some(ClientEvent::KeyframeRequested(FrameKind::Screen)) => {
                if let Some(screen) = &screen {
                    screen.request_keyframe();
                }
            }
            Some(ClientEvent::KeyframeRequested(FrameKind::Audio)) => {}
            Some(ClientEvent::VideoCodec(codec)) => {
                let _ = writeln!(out, "video codec: {codec:?}");
            }
            Some(ClientEvent::RemoteVideoCodec(kind, codec)) => {
                let _ = writeln!(out, "remote {kind:?} codec: {codec:?}");
            }
            None => {}
        }
        if let Some(at) = connected_at {
            if !muted && options.mute_after.is_some_and(|after| at.elapsed() >= after) {
                muted = true;
                client.set_microphone_enabled(false);
                let _ = writeln!(out, "action: microphone muted");
            }
            if share_after.is_some_and(|after| at.elapsed() >= after) {
                share_after = None;
                let shared = client.set_screen_share(true).map_err(|e| e.to_string()).and_then(|()| {
                    spawn_synthetic_screen(Arc::clone(&client), Arc::clone(&stop)).map_err(|e| e.to_string())
                });
                match shared {
                    Ok(synthetic) => {
                        screen = Some(synthetic);
                        let _ = writeln!(out, "action: screen shared");
                    }
                    Err(error) => {
                        let _ = writeln!(out, "warning: cannot share the screen: {error}");
                    }
                }
            }
            if options.duration.is_some_and(|d| at.elapsed() >= d) {
                client.hang_up();
                connected_at = None;
                sending.store(false, Ordering::Relaxed);
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = media.join();
    if let Some(screen) = screen {
        let _ = screen.join();
    }
    if let Some(file) = video_file {
        if let Err(error) = file.finish() {
            let _ = writeln!(out, "warning: the saved video may be incomplete: {error}");
        }
    }
    client.close();
    let _ = writeln!(
        out,
        "summary: video frames received {video_frames}, audio frames received {audio_frames}, video frames decoded {}, audio frames decoded {audio_decoded}, pictures with a counter {}, last picture counter {}, screen frames received {screen_frames}, screen pictures decoded {}",
        pictures.decoded(),
        pictures.counters.len(),
        pictures.last_counter().map_or("-".into(), |c| c.to_string()),
        screen_pictures.decoded(),
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use televisit_codecs::pattern::TestPattern;
    use televisit_core::call::ladder::LADDER;

    #[test]
    fn the_stats_line_names_the_path_with_the_relays_transport() {
        use televisit_core::call::stats::{CandidateType, RelayTransport};
        use televisit_core::client::media::MediaStats;
        assert_eq!(path_description(&MediaStats::default()), "-");
        let host = MediaStats {
            local_candidate_type: Some(CandidateType::Host),
            remote_candidate_type: Some(CandidateType::Prflx),
            ..MediaStats::default()
        };
        assert_eq!(path_description(&host), "host-prflx");
        let relayed = MediaStats {
            local_candidate_type: Some(CandidateType::Relay),
            remote_candidate_type: Some(CandidateType::Host),
            relay_transport: Some(RelayTransport::Tcp),
            ..MediaStats::default()
        };
        assert_eq!(path_description(&relayed), "relay/tcp-host");
    }

    #[test]
    fn the_picture_reader_reads_counters_and_counts_undecodable_frames() {
        let mut encoder = Vp8Encoder::new(EncoderTarget::at_rung(LADDER[1])).unwrap();
        let mut pattern = TestPattern::new();
        let key = encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap();
        let inter = encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap();
        let mut reader = PictureReader::new().unwrap();
        assert!(reader.receive(&inter).is_err(), "nothing decodes before a keyframe");
        let garbage = EncodedFrame { data: vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0xff], ..key.clone() };
        assert!(reader.receive(&garbage).is_err());
        assert_eq!(reader.receive(&key), Ok(Some(0)));
        assert_eq!(reader.receive(&inter), Ok(Some(1)));
        assert_eq!((reader.errors, reader.decoded(), reader.size), (2, 2, Some((1280, 720))));
        assert_eq!((reader.counters.clone(), reader.last_counter()), (vec![0, 1], Some(1)));
    }

    #[test]
    fn each_role_counts_its_pictures_from_its_own_base() {
        assert_eq!(first_counter(Some(Role::Doctor)) >> 28, 1);
        assert_eq!(first_counter(Some(Role::Patient)) >> 28, 2);
    }

    #[test]
    fn refused_links_exit_with_2_and_other_failures_with_1() {
        assert_eq!(exit_code(&Err(CallError::LinkExpired)), 2);
        assert_eq!(exit_code(&Err(CallError::Media("no codec".into()))), 1);
    }
}
