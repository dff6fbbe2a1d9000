//! A headless participant: joins a call from a terminal, prints events and a stats line each
//! second, sends a synthetic camera and microphone, and can save the received video.
//!
//! The synthetic media are **encoded frames with a readable counter** (bytes 2..6 of every frame,
//! big-endian), VP8-shaped (keyframe bit every second) and Opus-sized — what a phone's hardware
//! encoder would hand over. They test the whole path (RTP packetization, SRTP, depacketization)
//! and let a test read the counter back; they are not decodable pictures (the software codec
//! path is not built yet).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::call::machine::{CallEvent, CallState, EndReason};
use crate::client::webrtc::{WebRtcMedia, WebRtcSettings};
use crate::client::{CallClient, CallListener, CallOptions, ClientEvent};
use crate::error::CallError;
use crate::frame::{EncodedFrame, FrameKind};
use crate::protocol::Role;

/// What the headless client does.
#[derive(Debug, Clone)]
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

/// The synthetic video frame number `n` from participant `sender`.
pub fn synthetic_video_frame(sender: u8, n: u32) -> EncodedFrame {
    let keyframe = n.is_multiple_of(30);
    let mut data = vec![if keyframe { 0x10 } else { 0x11 }, sender];
    data.extend_from_slice(&n.to_be_bytes());
    data.resize(if keyframe { 12_000 } else { 3_000 }, (n % 251) as u8);
    EncodedFrame { kind: FrameKind::Video, data, duration: Duration::from_millis(33), keyframe }
}

/// The synthetic audio frame number `n` (20 ms) from participant `sender`.
pub fn synthetic_audio_frame(sender: u8, n: u32) -> EncodedFrame {
    let mut data = vec![0xfc, sender];
    data.extend_from_slice(&n.to_be_bytes());
    data.resize(80, 0x55);
    EncodedFrame { kind: FrameKind::Audio, data, duration: Duration::from_millis(20), keyframe: false }
}

/// The counter of a synthetic frame.
pub fn frame_counter(frame: &EncodedFrame) -> Option<u32> {
    frame.data.get(2..6).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
}

/// Sends the synthetic camera (30 fps) and microphone (50 fps) through `client` while `sending`
/// is set, until `stop`. Frames carry the sender's id: 1 for the doctor, 2 for the patient.
pub fn spawn_synthetic_media(
    client: Arc<CallClient>,
    sending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let (mut video, mut audio) = (0u32, 0u32);
        while !stop.load(Ordering::Relaxed) {
            if sending.load(Ordering::Relaxed) {
                let id = if client.role() == Some(Role::Doctor) { 1 } else { 2 };
                let elapsed = start.elapsed().as_millis() as u32;
                while video * 33 <= elapsed {
                    client.send_frame(synthetic_video_frame(id, video));
                    video += 1;
                }
                while audio * 20 <= elapsed {
                    client.send_frame(synthetic_audio_frame(id, audio));
                    audio += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

struct Printer(mpsc::Sender<ClientEvent>);

impl CallListener for Printer {
    fn on_event(&self, event: ClientEvent) {
        let _ = self.0.send(event);
    }
}

/// An IVF file (the container of VP8 test streams).
struct IvfWriter {
    file: std::io::BufWriter<std::fs::File>,
    frames: u32,
}

impl IvfWriter {
    fn create(path: &std::path::Path) -> std::io::Result<IvfWriter> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut header = Vec::with_capacity(32);
        header.extend_from_slice(b"DKIF");
        header.extend_from_slice(&0u16.to_le_bytes()); // version
        header.extend_from_slice(&32u16.to_le_bytes()); // header size
        header.extend_from_slice(b"VP80");
        header.extend_from_slice(&1280u16.to_le_bytes());
        header.extend_from_slice(&720u16.to_le_bytes());
        header.extend_from_slice(&30u32.to_le_bytes()); // time base denominator
        header.extend_from_slice(&1u32.to_le_bytes()); // numerator
        header.extend_from_slice(&0u32.to_le_bytes()); // frame count (unknown while streaming)
        header.extend_from_slice(&0u32.to_le_bytes());
        file.write_all(&header)?;
        Ok(IvfWriter { file, frames: 0 })
    }

    fn write(&mut self, frame: &EncodedFrame) -> std::io::Result<()> {
        self.file.write_all(&(frame.data.len() as u32).to_le_bytes())?;
        self.file.write_all(&u64::from(self.frames).to_le_bytes())?;
        self.file.write_all(&frame.data)?;
        self.frames += 1;
        Ok(())
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
        CallEvent::PeerQuality(report) => format!("peer quality {:?}", report.level),
        CallEvent::PeerLeft => "peer left".into(),
        CallEvent::SignalingReconnecting { attempt } => format!("signaling reconnecting (attempt {attempt})"),
        CallEvent::SignalingRestored => "signaling restored".into(),
        CallEvent::Error(error) => format!("error: {error}"),
        CallEvent::Ended(reason) => format!("ended: {reason:?}"),
    }
}

fn on(value: bool) -> &'static str {
    if value {
        "on"
    } else {
        "off"
    }
}

/// Joins, runs the call, and returns how it ended. Prints one line per event and a stats line
/// each second to `out`.
pub fn run(options: HeadlessOptions, out: &mut dyn Write) -> Result<EndReason, CallError> {
    let (tx, events) = mpsc::channel();
    let udp_addrs =
        if options.udp_addrs.is_empty() { vec!["0.0.0.0:0".to_owned()] } else { options.udp_addrs.clone() };
    let media = Arc::new(WebRtcMedia::new(WebRtcSettings { udp_addrs, ..WebRtcSettings::default() }));
    let client =
        Arc::new(CallClient::new(&options.link, Arc::new(Printer(tx)), media, CallOptions::default())?);
    client.join();
    let mut video_file = match &options.save_video {
        Some(path) => Some(
            IvfWriter::create(path)
                .map_err(|e| CallError::Media(format!("cannot write {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let sending = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sender_thread = spawn_synthetic_media(Arc::clone(&client), Arc::clone(&sending), Arc::clone(&stop));
    let mut connected_at: Option<Instant> = None;
    let mut muted = false;
    let mut last_counter: Option<u32> = None;
    let (mut video_frames, mut audio_frames) = (0u64, 0u64);
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
                    last_counter = frame_counter(&frame).or(last_counter);
                    if let Some(file) = video_file.as_mut() {
                        let _ = file.write(&frame);
                    }
                }
                FrameKind::Audio => audio_frames += 1,
                FrameKind::Screen => {} // the headless client records only the camera
            },
            Some(ClientEvent::Stats(stats)) => {
                let _ = writeln!(
                    out,
                    "stats: video frames received {video_frames} (last counter {}), audio frames {audio_frames}, receive {} kbps, send {} kbps",
                    last_counter.map_or("-".into(), |c| c.to_string()),
                    stats.receive_bitrate_bps / 1000,
                    stats.send_bitrate_bps / 1000,
                );
            }
            Some(ClientEvent::QualityChanged(level)) => {
                let _ = writeln!(out, "event: quality {level:?}");
            }
            Some(ClientEvent::VideoRungChanged(rung)) => {
                let _ = writeln!(out, "event: video {}", rung.name);
            }
            // The synthetic camera sends a keyframe every second anyway.
            Some(ClientEvent::KeyframeRequested(_)) => {}
            None => {}
        }
        if let Some(at) = connected_at {
            if !muted && options.mute_after.is_some_and(|after| at.elapsed() >= after) {
                muted = true;
                client.set_microphone_enabled(false);
                let _ = writeln!(out, "action: microphone muted");
            }
            if options.duration.is_some_and(|d| at.elapsed() >= d) {
                client.hang_up();
                connected_at = None;
                sending.store(false, Ordering::Relaxed);
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = sender_thread.join();
    client.close();
    let _ =
        writeln!(out, "summary: video frames received {video_frames}, audio frames received {audio_frames}");
    outcome
}
