//! The call state machine, sans-I/O.
//!
//! `idle → joining → waiting_room → connecting → connected ⇄ reconnecting → ended`
//!
//! Inputs ([`Input`]), each with the time in ms:
//! - from the app: `Join`, `SetMicrophone`, `SetCamera`, `SetScreenShare`, `SendChat`, `Hangup`,
//!   `NetworkChanged`, `SetVideoPreference`;
//! - from the media connection, once a second: `Stats` (it scores the connection quality, tells the
//!   peer, and moves the encoder along the bitrate ladder); between samples, `EstimateCut` (the
//!   ladder follows a cut of the estimate at once);
//! - from the HTTP API: `JoinAccepted`, `JoinFailed`;
//! - from the signaling transport: `SignalingOpened`, `SignalingLost`, `Frame`;
//! - from the peer connection: `LocalOffer`, `LocalAnswer`, `LocalCandidate`, `PeerConnection`;
//! - from the clock: `Tick` (call it at [`CallMachine::next_timeout`] or sooner).
//!
//! Outputs ([`Output`]) tell the driver what to do: fetch the join, open or close signaling, send
//! a frame, drive the peer connection and its encoder, and tell the app (`Event`,
//! `QualityChanged`, `VideoRungChanged`, `EncoderBitrate`).
//!
//! Signaling survives drops: frames this side sends are numbered and kept until the server confirms
//! them (`joined.last_client_seq` after a reconnect), frames from the server are numbered and
//! duplicates dropped, and a reconnect asks the server to resume after the last frame received.
//! Media keeps flowing while signaling reconnects (with backoff, up to [`SIGNALING_GIVE_UP_MS`]).

use std::collections::VecDeque;

use crate::api::{IceServer, JoinResponse};
use crate::call::ladder::{BitrateLadder, EncoderTarget, LadderInput, Rung, VideoPreference};
use crate::call::quality::{QualitySample, QualityScorer};
use crate::call::stats::MediaStats;
use crate::error::CallError;
use crate::frame::{EncodedFrame, FrameKind};
use crate::protocol::{
    encode, CallStatus, ChatMessage, ClientMessage, ErrorCode, Frame, IceCandidate, MediaState, QualityLevel,
    QualityReport, Resume, Role, Sdp, ServerMessage,
};

/// Give up reconnecting signaling after this long without success.
pub const SIGNALING_GIVE_UP_MS: i64 = 60_000;
/// After the doctor asks to end, wait this long for `call-ended` before ending anyway.
pub const END_WAIT_MS: i64 = 5_000;
/// While the media connection is failed, the offerer restarts ICE this often.
pub const ICE_RESTART_EVERY_MS: i64 = 5_000;
/// Most unconfirmed frames kept for resending.
const UNCONFIRMED_LIMIT: usize = 512;

/// Where the call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Not joined yet.
    Idle,
    /// Checking the link with the server and opening signaling.
    Joining,
    /// In the room; the other participant is not (the patient waits for the doctor).
    WaitingRoom,
    /// Both in the room; the media connection is being set up.
    Connecting,
    /// Media flows.
    Connected,
    /// The media connection dropped; trying to get it back.
    Reconnecting,
    /// Over (see the `Ended` event for why).
    Ended,
}

/// The peer connection's state, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerConnectionState {
    /// ICE/DTLS in progress.
    Connecting,
    /// Media can flow.
    Connected,
    /// Temporarily lost (may recover by itself).
    Disconnected,
    /// Lost; needs an ICE restart.
    Failed,
}

/// What the driver asks of the peer connection (and of its encoder).
#[derive(Debug, Clone, PartialEq)]
pub enum PeerCommand {
    /// Create an offer (with an ICE restart if asked); the answer comes back as `LocalOffer`.
    CreateOffer {
        /// Restart ICE (new credentials, new candidates).
        ice_restart: bool,
    },
    /// Apply the peer's offer and create an answer; it comes back as `LocalAnswer`.
    AcceptOffer(String),
    /// Apply the peer's answer.
    AcceptAnswer(String),
    /// Add the peer's ICE candidate.
    AddRemoteCandidate(IceCandidate),
    /// Send or stop sending audio.
    SetAudioSending(bool),
    /// Send or stop sending camera video.
    SetVideoSending(bool),
    /// Add or remove the screen-share track.
    SetScreenShare(bool),
    /// Apply the adaptive-bitrate decision to the encoder.
    SetEncoderTarget(EncoderTarget),
    /// Send an encoded frame (dropped while that kind is off or before media can flow).
    SendFrame(EncodedFrame),
    /// Ask the peer for a keyframe of its camera or screen track (our decoder lost the picture).
    RequestKeyframe(FrameKind),
    /// Report the connection's stats.
    ReportStats,
    /// Close the peer connection.
    Close,
}

/// Why the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The call ended for everyone (by the doctor or the clinic).
    CallEnded {
        /// Who ended it, if a participant did.
        ended_by: Option<Role>,
        /// The recorded duration.
        duration_seconds: i64,
    },
    /// This side left (the call may go on without it).
    Left,
    /// An error ended it.
    Failed(CallError),
}

/// What the app hears.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// The state changed.
    StateChanged(CallState),
    /// The server accepted the link.
    Joined {
        /// This side's role.
        role: Role,
        /// This side's display name.
        display_name: String,
        /// The other side's display name.
        peer_display_name: String,
    },
    /// In the waiting room, with the doctor's status if any.
    Waiting {
        /// The doctor's status message.
        message: Option<String>,
    },
    /// The chat so far (on every join, including reconnects).
    ChatHistory(Vec<ChatMessage>),
    /// A chat message (the own ones come back with their id).
    ChatReceived(ChatMessage),
    /// The peer's microphone/camera state.
    PeerMediaChanged(MediaState),
    /// The doctor started or stopped sharing a screen.
    PeerScreenShare(bool),
    /// The doctor started or stopped the examination mode: this side's camera keeps its
    /// resolution and gives up frame rate when bandwidth is short ("hold still").
    Examination(bool),
    /// The peer's own quality report.
    PeerQuality(QualityReport),
    /// The peer left or lost its connection.
    PeerLeft,
    /// Signaling dropped and is being reconnected (media may still flow).
    SignalingReconnecting {
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// Signaling is back.
    SignalingRestored,
    /// Something was refused or failed without ending the call.
    Error(CallError),
    /// The call is over for this side.
    Ended(EndReason),
}

/// An input to the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The app wants to join.
    Join,
    /// Microphone on/off.
    SetMicrophone(bool),
    /// Camera on/off.
    SetCamera(bool),
    /// Screen share on/off (doctor only).
    SetScreenShare(bool),
    /// Send a chat message.
    SendChat(String),
    /// What to give up first when bandwidth is short (the examination mode keeps resolution).
    SetVideoPreference(VideoPreference),
    /// The doctor starts or stops examining: the patient's camera keeps its resolution (doctor
    /// only; a patient gets `NotAllowed`).
    SetExamination(bool),
    /// The media connection's measurements (once a second).
    Stats(Box<MediaStats>),
    /// The congestion controller cut its estimate between two stats samples: the ladder follows
    /// at once (the quality level waits for the next sample).
    EstimateCut {
        /// The new estimate, bits per second.
        estimate_bps: u64,
        /// What the peer acknowledged, bits per second, if it sends transport-wide feedback.
        acknowledged_bps: Option<u64>,
    },
    /// End the call (doctor) or leave it (patient).
    Hangup,
    /// The device's network changed (Wi-Fi to cellular, ...).
    NetworkChanged,
    /// The server accepted the link.
    JoinAccepted(Box<JoinResponse>),
    /// The server refused the link, or could not be reached.
    JoinFailed(CallError),
    /// The signaling connection is open.
    SignalingOpened,
    /// The signaling connection closed or failed.
    SignalingLost,
    /// A frame from the server.
    Frame(Frame<ServerMessage>),
    /// The peer connection made an offer.
    LocalOffer(String),
    /// The peer connection made an answer.
    LocalAnswer(String),
    /// The peer connection found a local ICE candidate.
    LocalCandidate(IceCandidate),
    /// The peer connection's state changed.
    PeerConnection(PeerConnectionState),
    /// Time passed.
    Tick,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// `POST /api/video-call/join` with the link's token.
    FetchJoin,
    /// Open the signaling WebSocket at this path.
    OpenSignaling {
        /// Path on the link's server.
        path: String,
    },
    /// Close the signaling connection.
    CloseSignaling,
    /// Send the `join` frame with the link's token (the machine never holds the token).
    SendJoin {
        /// Resume after this server `seq`.
        resume: Option<Resume>,
    },
    /// Send this JSON text frame.
    Send(String),
    /// (Re)create the peer connection with these ICE servers; any earlier one is closed.
    ResetPeer {
        /// STUN/TURN servers.
        ice_servers: Vec<IceServer>,
    },
    /// Drive the peer connection (answers come back as `LocalOffer`, `LocalAnswer`, ...).
    Peer(PeerCommand),
    /// Tell the app.
    Event(CallEvent),
    /// Tell the app: the connection quality level changed.
    QualityChanged(QualityLevel),
    /// Tell the app's encoder: encode at this rung's size and frame rate.
    VideoRungChanged(Rung),
    /// Tell the app's encoder: the video bitrate within the rung (sent when it moved by a tenth
    /// or more, and with every rung change).
    EncoderBitrate(u64),
}

/// The call's logic.
#[derive(Debug)]
pub struct CallMachine {
    state: CallState,
    role: Option<Role>,
    join: Option<JoinResponse>,
    /// Highest server `seq` received.
    last_seq: u64,
    /// Joined at least once (so a reconnect asks to resume).
    has_joined: bool,
    signaling_open: bool,
    signaling_lost_at: Option<i64>,
    reconnect_attempts: u32,
    next_reconnect_at: Option<i64>,
    next_client_seq: u64,
    unconfirmed: VecDeque<(u64, ClientMessage)>,
    media: MediaState,
    screen_sharing: bool,
    peer_failed_at: Option<i64>,
    last_ice_restart_at: Option<i64>,
    end_requested_at: Option<i64>,
    scorer: QualityScorer,
    ladder: BitrateLadder,
    /// The encoder bitrate the app was last told.
    told_bitrate_bps: Option<u64>,
}

impl Default for CallMachine {
    fn default() -> Self {
        CallMachine {
            state: CallState::Idle,
            role: None,
            join: None,
            last_seq: 0,
            has_joined: false,
            signaling_open: false,
            signaling_lost_at: None,
            reconnect_attempts: 0,
            next_reconnect_at: None,
            next_client_seq: 1,
            unconfirmed: VecDeque::new(),
            media: MediaState { audio: true, video: true },
            screen_sharing: false,
            peer_failed_at: None,
            last_ice_restart_at: None,
            end_requested_at: None,
            scorer: QualityScorer::default(),
            ladder: BitrateLadder::new(crate::call::ladder::DEFAULT_START_RUNG, "1080p"),
            told_bitrate_bps: None,
        }
    }
}

/// Backoff before reconnect attempt `n` (from 1): 250 ms doubling up to 8 s.
pub fn reconnect_backoff_ms(attempt: u32) -> i64 {
    (250_i64 << attempt.saturating_sub(1).min(5)).min(8_000)
}

impl CallMachine {
    /// A machine in `Idle`.
    pub fn new() -> CallMachine {
        CallMachine::default()
    }

    /// A machine in `Idle` whose camera follows this ladder.
    pub fn with_ladder(ladder: BitrateLadder) -> CallMachine {
        CallMachine { ladder, ..CallMachine::default() }
    }

    /// The current state.
    pub fn state(&self) -> CallState {
        self.state
    }

    /// This side's role, once joined.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// The microphone/camera state this side announces.
    pub fn media(&self) -> MediaState {
        self.media
    }

    /// When the driver must call `Tick` next, if at all (ms, same clock as the inputs).
    pub fn next_timeout(&self) -> Option<i64> {
        let restart = self
            .peer_failed_at
            .map(|_| self.last_ice_restart_at.or(self.peer_failed_at).unwrap_or(0) + ICE_RESTART_EVERY_MS);
        let end = self.end_requested_at.map(|at| at + END_WAIT_MS);
        [self.next_reconnect_at, restart, end].into_iter().flatten().min()
    }

    /// Feeds one input at time `now_ms`; returns what to do.
    pub fn handle(&mut self, input: Input, now_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        if self.state == CallState::Ended {
            return out;
        }
        match input {
            Input::Join => {
                if self.state == CallState::Idle {
                    self.set_state(CallState::Joining, &mut out);
                    out.push(Output::FetchJoin);
                }
            }
            Input::JoinAccepted(join) => self.on_join_accepted(*join, &mut out),
            Input::JoinFailed(error) => self.end(EndReason::Failed(error), &mut out),
            Input::SignalingOpened => self.on_signaling_opened(&mut out),
            Input::SignalingLost => self.on_signaling_lost(now_ms, &mut out),
            Input::Frame(frame) => self.on_frame(frame, &mut out),
            Input::LocalOffer(sdp) => self.send(ClientMessage::Offer(Sdp { sdp }), &mut out),
            Input::LocalAnswer(sdp) => self.send(ClientMessage::Answer(Sdp { sdp }), &mut out),
            Input::LocalCandidate(candidate) => self.send(ClientMessage::IceCandidate(candidate), &mut out),
            Input::PeerConnection(state) => self.on_peer_state(state, now_ms, &mut out),
            Input::SetMicrophone(on) => {
                self.media.audio = on;
                out.push(Output::Peer(PeerCommand::SetAudioSending(on)));
                self.send(ClientMessage::MediaState(self.media), &mut out);
            }
            Input::SetCamera(on) => {
                self.media.video = on;
                out.push(Output::Peer(PeerCommand::SetVideoSending(on)));
                self.send(ClientMessage::MediaState(self.media), &mut out);
            }
            Input::SetScreenShare(active) => self.on_screen_share(active, &mut out),
            Input::SendChat(text) => self.send(ClientMessage::Chat { text }, &mut out),
            Input::SetVideoPreference(preference) => self.ladder.set_preference(preference),
            Input::SetExamination(active) => {
                if self.role == Some(Role::Doctor) {
                    self.send(ClientMessage::Examination { active }, &mut out);
                } else {
                    out.push(Output::Event(CallEvent::Error(CallError::NotAllowed(
                        "only the doctor can start the examination mode".into(),
                    ))));
                }
            }
            Input::Stats(stats) => self.on_stats(&stats, now_ms, &mut out),
            Input::EstimateCut { estimate_bps, acknowledged_bps } => {
                self.follow_estimate(LadderInput { estimate_bps, acknowledged_bps }, now_ms, &mut out)
            }
            Input::NetworkChanged => {
                if matches!(
                    self.state,
                    CallState::Connected | CallState::Reconnecting | CallState::Connecting
                ) {
                    self.last_ice_restart_at = Some(now_ms);
                    out.push(Output::Peer(PeerCommand::CreateOffer { ice_restart: true }));
                }
                if !self.signaling_open && self.has_joined {
                    // A new network is a good moment to retry at once.
                    self.next_reconnect_at = Some(now_ms);
                }
            }
            Input::Hangup => self.on_hangup(now_ms, &mut out),
            Input::Tick => self.on_tick(now_ms, &mut out),
        }
        out
    }

    fn set_state(&mut self, state: CallState, out: &mut Vec<Output>) {
        if self.state != state {
            self.state = state;
            out.push(Output::Event(CallEvent::StateChanged(state)));
        }
    }

    fn end(&mut self, reason: EndReason, out: &mut Vec<Output>) {
        out.push(Output::Peer(PeerCommand::Close));
        out.push(Output::CloseSignaling);
        self.signaling_open = false;
        self.next_reconnect_at = None;
        self.peer_failed_at = None;
        self.end_requested_at = None;
        self.set_state(CallState::Ended, out);
        out.push(Output::Event(CallEvent::Ended(reason)));
    }

    /// Numbers a frame, keeps it until confirmed, and sends it if signaling is open.
    fn send(&mut self, message: ClientMessage, out: &mut Vec<Output>) {
        let seq = self.next_client_seq;
        self.next_client_seq += 1;
        if self.unconfirmed.len() == UNCONFIRMED_LIMIT {
            self.unconfirmed.pop_front();
        }
        self.unconfirmed.push_back((seq, message.clone()));
        if self.signaling_open && self.has_joined {
            out.push(Output::Send(encode(&Frame::numbered(seq, message))));
        }
    }

    fn on_join_accepted(&mut self, join: JoinResponse, out: &mut Vec<Output>) {
        if join.status == CallStatus::Ended {
            return self.end(EndReason::Failed(CallError::CallEnded), out);
        }
        self.role = Some(join.role);
        out.push(Output::Event(CallEvent::Joined {
            role: join.role,
            display_name: join.display_name.clone(),
            peer_display_name: join.peer_display_name.clone(),
        }));
        out.push(Output::OpenSignaling { path: join.websocket_path.clone() });
        self.join = Some(join);
    }

    fn on_signaling_opened(&mut self, out: &mut Vec<Output>) {
        self.signaling_open = true;
        let resume = self.has_joined.then_some(Resume { last_seq: self.last_seq });
        out.push(Output::SendJoin { resume });
    }

    fn on_signaling_lost(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        self.signaling_open = false;
        if self.join.is_none() {
            return;
        }
        let lost_at = *self.signaling_lost_at.get_or_insert(now_ms);
        if now_ms - lost_at >= SIGNALING_GIVE_UP_MS {
            let error = CallError::ServerUnreachable("signaling could not reconnect".into());
            return self.end(EndReason::Failed(error), out);
        }
        self.reconnect_attempts += 1;
        self.next_reconnect_at = Some(now_ms + reconnect_backoff_ms(self.reconnect_attempts));
        out.push(Output::Event(CallEvent::SignalingReconnecting { attempt: self.reconnect_attempts }));
    }

    /// Scores the connection (and tells the peer when the level changes) and moves the encoder
    /// along the ladder.
    fn on_stats(&mut self, stats: &MediaStats, now_ms: i64, out: &mut Vec<Output>) {
        let sample = QualitySample {
            rtt_ms: stats.rtt_ms,
            loss_percent: stats.loss_percent,
            jitter_ms: stats.jitter_ms,
            last_packet_at_ms: stats.last_packet_at_ms,
        };
        let in_call = matches!(self.state, CallState::Connected | CallState::Reconnecting);
        if let Some(level) = self.scorer.update(&sample, now_ms).filter(|_| in_call) {
            out.push(Output::QualityChanged(level));
            if self.signaling_open {
                let report = QualityReport {
                    level,
                    rtt_ms: stats.rtt_ms,
                    loss_percent: stats.loss_percent,
                    jitter_ms: stats.jitter_ms,
                };
                // Only the latest matters: not kept for resending.
                out.push(Output::Send(encode(&Frame::new(ClientMessage::Quality(report)))));
            }
        }
        if let Some(estimate_bps) = stats.available_outgoing_bitrate_bps {
            let input = LadderInput { estimate_bps, acknowledged_bps: stats.acknowledged_bitrate_bps };
            self.follow_estimate(input, now_ms, out);
        }
    }

    /// Moves the encoder along the ladder: the rung and the bitrate within it.
    fn follow_estimate(&mut self, input: LadderInput, now_ms: i64, out: &mut Vec<Output>) {
        let (target, changed) = self.ladder.update(input, now_ms);
        out.push(Output::Peer(PeerCommand::SetEncoderTarget(target)));
        if changed {
            out.push(Output::VideoRungChanged(Rung { fps: target.fps, ..target.rung }));
        }
        let moved = self.told_bitrate_bps.is_none_or(|told| target.bitrate_bps.abs_diff(told) * 10 >= told);
        if changed || moved {
            self.told_bitrate_bps = Some(target.bitrate_bps);
            out.push(Output::EncoderBitrate(target.bitrate_bps));
        }
    }

    fn on_tick(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        if self.next_reconnect_at.is_some_and(|at| at <= now_ms) {
            self.next_reconnect_at = None;
            if let Some(join) = &self.join {
                out.push(Output::OpenSignaling { path: join.websocket_path.clone() });
            }
        }
        if let Some(failed_at) = self.peer_failed_at {
            let last = self.last_ice_restart_at.unwrap_or(failed_at);
            if now_ms - last >= ICE_RESTART_EVERY_MS && self.role == Some(Role::Doctor) {
                self.last_ice_restart_at = Some(now_ms);
                out.push(Output::Peer(PeerCommand::CreateOffer { ice_restart: true }));
            }
        }
        if self.end_requested_at.is_some_and(|at| now_ms - at >= END_WAIT_MS) {
            self.end(EndReason::Left, out);
        }
    }

    fn on_frame(&mut self, frame: Frame<ServerMessage>, out: &mut Vec<Output>) {
        if let Some(seq) = frame.seq {
            if seq <= self.last_seq {
                return; // already handled before a reconnect
            }
            self.last_seq = seq;
        }
        match frame.message {
            ServerMessage::Joined { status, chat_history, resumed, last_client_seq, peer_media, .. } => {
                self.on_joined(status, resumed, last_client_seq, out);
                out.push(Output::Event(CallEvent::ChatHistory(chat_history)));
                if let Some(media) = peer_media {
                    out.push(Output::Event(CallEvent::PeerMediaChanged(media)));
                }
            }
            ServerMessage::Waiting { message } => {
                self.set_state(CallState::WaitingRoom, out);
                out.push(Output::Event(CallEvent::Waiting { message }));
            }
            ServerMessage::Admitted => {}
            ServerMessage::PeerJoined { make_offer, .. } => {
                let ice_servers = self.join.as_ref().map(|j| j.ice_servers.clone()).unwrap_or_default();
                out.push(Output::ResetPeer { ice_servers });
                self.scorer = QualityScorer::default();
                self.peer_failed_at = None;
                // A fresh peer connection starts from the current controls.
                out.push(Output::Peer(PeerCommand::SetAudioSending(self.media.audio)));
                out.push(Output::Peer(PeerCommand::SetVideoSending(self.media.video)));
                if self.screen_sharing {
                    out.push(Output::Peer(PeerCommand::SetScreenShare(true)));
                }
                self.set_state(CallState::Connecting, out);
                if make_offer {
                    out.push(Output::Peer(PeerCommand::CreateOffer { ice_restart: false }));
                }
                self.send(ClientMessage::MediaState(self.media), out);
            }
            ServerMessage::PeerLeft { .. } => {
                out.push(Output::Peer(PeerCommand::Close));
                self.peer_failed_at = None;
                self.set_state(CallState::WaitingRoom, out);
                out.push(Output::Event(CallEvent::PeerLeft));
            }
            ServerMessage::Offer { sdp, .. } => out.push(Output::Peer(PeerCommand::AcceptOffer(sdp))),
            ServerMessage::Answer { sdp, .. } => out.push(Output::Peer(PeerCommand::AcceptAnswer(sdp))),
            ServerMessage::IceCandidate { candidate, .. } => {
                out.push(Output::Peer(PeerCommand::AddRemoteCandidate(candidate)))
            }
            ServerMessage::Chat(message) => out.push(Output::Event(CallEvent::ChatReceived(message))),
            ServerMessage::ScreenShare { active, .. } => {
                out.push(Output::Event(CallEvent::PeerScreenShare(active)));
            }
            ServerMessage::Examination { active, .. } => {
                let preference = if active { VideoPreference::Detail } else { VideoPreference::Balanced };
                self.ladder.set_preference(preference);
                out.push(Output::Event(CallEvent::Examination(active)));
            }
            ServerMessage::MediaState { state, .. } => {
                out.push(Output::Event(CallEvent::PeerMediaChanged(state)))
            }
            ServerMessage::Quality { report, .. } => out.push(Output::Event(CallEvent::PeerQuality(report))),
            ServerMessage::CallEnded { ended_by, duration_seconds } => {
                self.end(EndReason::CallEnded { ended_by, duration_seconds }, out);
            }
            ServerMessage::Pong => {}
            ServerMessage::Error { code, message } => self.on_error(code, &message, out),
        }
    }

    fn on_joined(&mut self, status: CallStatus, resumed: bool, last_client_seq: u64, out: &mut Vec<Output>) {
        if self.signaling_lost_at.take().is_some() {
            out.push(Output::Event(CallEvent::SignalingRestored));
        }
        self.reconnect_attempts = 0;
        if !resumed {
            // Fresh start on the server (first join, too long away, or a server restart): a new
            // negotiation follows, so stale SDP and candidates are dropped; chat is kept.
            self.last_seq = 0;
            self.unconfirmed.retain(|(_, m)| matches!(m, ClientMessage::Chat { .. }));
        }
        if self.next_client_seq <= last_client_seq {
            // The server saw higher seqs from an earlier instance of this participant (an app
            // restart): none of ours reached it. Renumber above them, since it ignores seqs it saw.
            let first = self.unconfirmed.front().map_or(self.next_client_seq, |(seq, _)| *seq);
            let shift = last_client_seq + 1 - first;
            for (seq, _) in self.unconfirmed.iter_mut() {
                *seq += shift;
            }
            self.next_client_seq += shift;
        } else {
            self.unconfirmed.retain(|(seq, _)| *seq > last_client_seq);
        }
        self.has_joined = true;
        for (seq, message) in &self.unconfirmed {
            out.push(Output::Send(encode(&Frame::numbered(*seq, message.clone()))));
        }
        if status == CallStatus::Ended {
            return self.end(EndReason::Failed(CallError::CallEnded), out);
        }
        if self.state == CallState::Joining {
            self.set_state(CallState::WaitingRoom, out);
        }
    }

    fn on_error(&mut self, code: ErrorCode, message: &str, out: &mut Vec<Output>) {
        let error = CallError::from_server(code, message);
        let fatal = matches!(
            code,
            ErrorCode::InvalidToken
                | ErrorCode::TokenExpired
                | ErrorCode::TokenRevoked
                | ErrorCode::CallEnded
                | ErrorCode::Replaced
        );
        if fatal {
            self.end(EndReason::Failed(error), out);
        } else {
            out.push(Output::Event(CallEvent::Error(error)));
        }
    }

    fn on_peer_state(&mut self, state: PeerConnectionState, now_ms: i64, out: &mut Vec<Output>) {
        match state {
            PeerConnectionState::Connecting => {}
            PeerConnectionState::Connected => {
                self.peer_failed_at = None;
                self.set_state(CallState::Connected, out);
            }
            PeerConnectionState::Disconnected => {
                if self.state == CallState::Connected {
                    self.set_state(CallState::Reconnecting, out);
                }
            }
            PeerConnectionState::Failed => {
                if matches!(
                    self.state,
                    CallState::Connected | CallState::Reconnecting | CallState::Connecting
                ) {
                    self.set_state(CallState::Reconnecting, out);
                    if self.peer_failed_at.is_none() {
                        self.peer_failed_at = Some(now_ms);
                        if self.role == Some(Role::Doctor) {
                            self.last_ice_restart_at = Some(now_ms);
                            out.push(Output::Peer(PeerCommand::CreateOffer { ice_restart: true }));
                        }
                    }
                }
            }
        }
    }

    fn on_screen_share(&mut self, active: bool, out: &mut Vec<Output>) {
        if self.role != Some(Role::Doctor) {
            let error = CallError::NotAllowed("only the doctor can share a screen".into());
            out.push(Output::Event(CallEvent::Error(error)));
            return;
        }
        if self.screen_sharing == active {
            return;
        }
        self.screen_sharing = active;
        out.push(Output::Peer(PeerCommand::SetScreenShare(active)));
        self.send(ClientMessage::ScreenShare { active }, out);
        if matches!(self.state, CallState::Connected | CallState::Connecting | CallState::Reconnecting) {
            out.push(Output::Peer(PeerCommand::CreateOffer { ice_restart: false }));
        }
    }

    fn on_hangup(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        match self.role {
            Some(Role::Doctor) if self.signaling_open => {
                self.send(ClientMessage::EndCall, out);
                self.end_requested_at = Some(now_ms);
            }
            Some(_) if self.signaling_open => {
                self.send(ClientMessage::Leave, out);
                self.end(EndReason::Left, out);
            }
            _ => self.end(EndReason::Left, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_response(role: Role) -> JoinResponse {
        JoinResponse {
            appointment_id: "a".into(),
            room_id: "r".into(),
            role,
            display_name: "Me".into(),
            peer_display_name: "You".into(),
            status: CallStatus::Waiting,
            ice_servers: vec![],
            ice_transport_policy: Default::default(),
            expires_at_ms: i64::MAX,
            websocket_path: "/api/video-call/ws".into(),
            signal_path: "/api/video-call/signal".into(),
            recording_enabled: false,
        }
    }

    fn joined(resumed: bool, last_client_seq: u64) -> Frame<ServerMessage> {
        Frame::new(ServerMessage::Joined {
            role: Role::Doctor,
            room_id: "r".into(),
            status: CallStatus::Waiting,
            peer_present: false,
            resumed,
            chat_history: vec![],
            peer_media: None,
            idle_timeout_seconds: 45,
            last_client_seq,
        })
    }

    fn sent(outputs: &[Output]) -> Vec<serde_json::Value> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Send(text) => Some(serde_json::from_str(text).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn states(outputs: &[Output]) -> Vec<CallState> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Event(CallEvent::StateChanged(s)) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// A machine for `role` joined to the room, waiting for the peer.
    fn in_room(role: Role) -> CallMachine {
        let mut m = CallMachine::new();
        m.handle(Input::Join, 0);
        m.handle(Input::JoinAccepted(Box::new(join_response(role))), 0);
        m.handle(Input::SignalingOpened, 0);
        m.handle(Input::Frame(joined(false, 0)), 0);
        m
    }

    #[test]
    fn a_patient_goes_from_idle_through_the_waiting_room_to_connected() {
        let mut m = CallMachine::new();
        let out = m.handle(Input::Join, 0);
        assert_eq!(states(&out), [CallState::Joining]);
        assert!(out.contains(&Output::FetchJoin));
        let out = m.handle(Input::JoinAccepted(Box::new(join_response(Role::Patient))), 10);
        assert!(out.contains(&Output::OpenSignaling { path: "/api/video-call/ws".into() }));
        let out = m.handle(Input::SignalingOpened, 20);
        assert_eq!(out, [Output::SendJoin { resume: None }]);
        let out = m.handle(Input::Frame(joined(false, 0)), 30);
        assert_eq!(states(&out), [CallState::WaitingRoom]);
        let out = m.handle(
            Input::Frame(Frame::numbered(1, ServerMessage::Waiting { message: Some("5 min".into()) })),
            40,
        );
        assert!(out.contains(&Output::Event(CallEvent::Waiting { message: Some("5 min".into()) })));
        let peer = ServerMessage::PeerJoined { role: Role::Doctor, make_offer: false };
        let out = m.handle(Input::Frame(Frame::numbered(2, peer)), 50);
        assert_eq!(states(&out), [CallState::Connecting]);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Peer(PeerCommand::CreateOffer { .. }))),
            "the patient answers, never offers"
        );
        let out = m.handle(
            Input::Frame(Frame::numbered(3, ServerMessage::Offer { from: Role::Doctor, sdp: "o".into() })),
            60,
        );
        assert!(out.contains(&Output::Peer(PeerCommand::AcceptOffer("o".into()))));
        let out = m.handle(Input::LocalAnswer("a".into()), 70);
        assert_eq!(sent(&out)[0]["type"], "answer");
        let out = m.handle(Input::PeerConnection(PeerConnectionState::Connected), 80);
        assert_eq!(states(&out), [CallState::Connected]);
    }

    fn connected(role: Role) -> CallMachine {
        let mut m = in_room(role);
        let other = if role == Role::Doctor { Role::Patient } else { Role::Doctor };
        let peer = ServerMessage::PeerJoined { role: other, make_offer: role == Role::Doctor };
        m.handle(Input::Frame(Frame::numbered(1, peer)), 0);
        m.handle(Input::PeerConnection(PeerConnectionState::Connected), 0);
        m
    }

    fn stats(estimate_bps: u64, acknowledged_bps: u64, loss_percent: f64, now_ms: i64) -> Input {
        Input::Stats(Box::new(MediaStats {
            rtt_ms: Some(100.0),
            loss_percent: Some(loss_percent),
            jitter_ms: Some(5.0),
            last_packet_at_ms: Some(now_ms),
            available_outgoing_bitrate_bps: Some(estimate_bps),
            acknowledged_bitrate_bps: Some(acknowledged_bps),
            ..MediaStats::default()
        }))
    }

    #[test]
    fn stats_score_the_connection_and_tell_the_peer_when_the_level_changes() {
        let mut m = connected(Role::Patient);
        let mut levels = vec![];
        for second in 1..=3 {
            let out = m.handle(stats(600_000, 600_000, 8.0, second * 1000), second * 1000);
            for o in &out {
                if let Output::QualityChanged(level) = o {
                    levels.push((second, *level));
                    let quality =
                        sent(&out).into_iter().find(|f| f["type"] == "quality").expect("told the peer");
                    assert_eq!(quality["level"], "poor");
                }
            }
        }
        assert_eq!(levels, [(2, QualityLevel::Poor)], "two poor samples in a row");
    }

    #[test]
    fn stats_move_the_encoder_down_at_once_and_up_only_on_acknowledged_video() {
        let mut m = connected(Role::Doctor);
        let rungs = |out: &[Output]| -> Vec<(&'static str, u32)> {
            out.iter()
                .filter_map(|o| match o {
                    Output::VideoRungChanged(rung) => Some((rung.name, rung.fps)),
                    _ => None,
                })
                .collect()
        };
        // 360p to start; a 330 kbps link keeps it, a 200 kbps one drops it at once.
        let out = m.handle(stats(330_000, 330_000, 0.0, 1_000), 1_000);
        assert!(rungs(&out).is_empty());
        assert!(out.contains(&Output::EncoderBitrate(266_000)));
        let out = m.handle(stats(200_000, 200_000, 0.0, 2_000), 2_000);
        assert_eq!(rungs(&out), [("180p", 15)]);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Peer(PeerCommand::SetEncoderTarget(t)) if t.rung.name == "180p")));
        // A big estimate that the receiver does not confirm changes nothing.
        for second in 3..8 {
            let out = m.handle(stats(3_000_000, 100_000, 0.0, second * 1000), second * 1000);
            assert!(rungs(&out).is_empty(), "at {second} s");
        }
        // Confirmed: one step every two seconds.
        let mut climbed = vec![];
        for second in 8..14 {
            let out = m.handle(stats(3_000_000, 3_000_000, 0.0, second * 1000), second * 1000);
            climbed.extend(rungs(&out));
        }
        assert_eq!(climbed, [("360p", 30), ("540p", 30)]);
    }

    #[test]
    fn a_cut_between_samples_moves_the_encoder_at_once_without_scoring_the_quality() {
        let mut m = connected(Role::Doctor);
        m.handle(stats(1_000_000, 1_000_000, 0.0, 1_000), 1_000);
        let out =
            m.handle(Input::EstimateCut { estimate_bps: 200_000, acknowledged_bps: Some(300_000) }, 1_300);
        assert!(
            out.iter().any(|o| matches!(o, Output::VideoRungChanged(rung) if rung.name == "180p")),
            "{out:?}"
        );
        assert!(out.contains(&Output::EncoderBitrate(136_000)));
        assert!(!out.iter().any(|o| matches!(o, Output::QualityChanged(_) | Output::Send(_))));
    }

    #[test]
    fn the_doctor_starts_the_examination_mode_for_the_patients_camera() {
        let mut patient = connected(Role::Patient);
        let out = patient.handle(Input::SetExamination(true), 0);
        assert!(matches!(&out[..], [Output::Event(CallEvent::Error(CallError::NotAllowed(_)))]), "{out:?}");
        let mut doctor = connected(Role::Doctor);
        let out = doctor.handle(Input::SetExamination(true), 0);
        assert_eq!(sent(&out)[0]["type"], "examination");

        // The patient at 720p on a link that no longer carries 720p30: 720p15.
        let mut patient = CallMachine::with_ladder(BitrateLadder::new("720p", "720p"));
        let examining = ServerMessage::Examination { from: Role::Doctor, active: true };
        let out = patient.handle(Input::Frame(Frame::numbered(5, examining)), 0);
        assert!(out.contains(&Output::Event(CallEvent::Examination(true))));
        let out = patient.handle(stats(700_000, 700_000, 0.0, 1_000), 1_000);
        assert!(out.contains(&Output::VideoRungChanged(Rung { fps: 15, ..crate::call::ladder::LADDER[1] })));
    }

    #[test]
    fn the_examination_mode_keeps_the_resolution_and_lowers_the_frame_rate() {
        let mut m = CallMachine::with_ladder(BitrateLadder::new("720p", "720p"));
        m.handle(Input::SetVideoPreference(VideoPreference::Detail), 0);
        let out = m.handle(stats(700_000, 700_000, 0.0, 1_000), 1_000);
        assert!(out.contains(&Output::VideoRungChanged(Rung { fps: 15, ..crate::call::ladder::LADDER[1] })));
    }

    #[test]
    fn the_doctor_makes_the_offer_when_the_patient_is_in() {
        let mut m = in_room(Role::Doctor);
        let peer = ServerMessage::PeerJoined { role: Role::Patient, make_offer: true };
        let out = m.handle(Input::Frame(Frame::numbered(1, peer)), 0);
        assert!(out.iter().any(|o| matches!(o, Output::ResetPeer { .. })));
        assert!(out.contains(&Output::Peer(PeerCommand::CreateOffer { ice_restart: false })));
    }

    #[test]
    fn a_signaling_drop_reconnects_with_backoff_resumes_and_resends_what_the_server_missed() {
        let mut m = in_room(Role::Patient);
        m.handle(
            Input::Frame(Frame::numbered(
                7,
                ServerMessage::PeerJoined { role: Role::Doctor, make_offer: false },
            )),
            0,
        );
        m.handle(Input::PeerConnection(PeerConnectionState::Connected), 0);
        let out = m.handle(Input::SignalingLost, 1000);
        assert!(out.contains(&Output::Event(CallEvent::SignalingReconnecting { attempt: 1 })));
        assert!(!out.contains(&Output::Peer(PeerCommand::Close)), "media keeps flowing");
        assert_eq!(m.state(), CallState::Connected);
        // Chat typed while offline is kept.
        assert!(sent(&m.handle(Input::SendChat("still there?".into()), 1100)).is_empty());
        assert_eq!(m.next_timeout(), Some(1250));
        assert!(m.handle(Input::Tick, 1200).is_empty());
        assert!(m
            .handle(Input::Tick, 1250)
            .contains(&Output::OpenSignaling { path: "/api/video-call/ws".into() }));
        let out = m.handle(Input::SignalingOpened, 1300);
        assert_eq!(out, [Output::SendJoin { resume: Some(Resume { last_seq: 7 }) }]);
        // The server had confirmed the media-state (seq 1) but not the chat (seq 2).
        let out = m.handle(Input::Frame(joined(true, 1)), 1400);
        let resent = sent(&out);
        assert_eq!(resent.len(), 1);
        assert_eq!((resent[0]["type"].as_str(), resent[0]["seq"].as_u64()), (Some("chat"), Some(2)));
        assert!(out.contains(&Output::Event(CallEvent::SignalingRestored)));
        // A replayed frame already seen is ignored.
        assert!(m
            .handle(
                Input::Frame(Frame::numbered(
                    7,
                    ServerMessage::Offer { from: Role::Doctor, sdp: "x".into() }
                )),
                1500
            )
            .is_empty());
    }

    #[test]
    fn signaling_that_stays_down_for_a_minute_ends_the_call() {
        let mut m = in_room(Role::Patient);
        let mut now = 0;
        m.handle(Input::SignalingLost, now);
        while m.state() != CallState::Ended {
            now = m.next_timeout().expect("a retry is scheduled");
            assert!(now <= SIGNALING_GIVE_UP_MS + 8_000, "gives up in time");
            m.handle(Input::Tick, now);
            m.handle(Input::SignalingLost, now);
        }
        assert!(matches!(m.handle(Input::Tick, now + 1), v if v.is_empty()));
    }

    #[test]
    fn a_fresh_client_continues_above_the_servers_last_seen_seq() {
        let mut m = CallMachine::new();
        m.handle(Input::Join, 0);
        m.handle(Input::JoinAccepted(Box::new(join_response(Role::Patient))), 0);
        m.handle(Input::SendChat("typed while joining".into()), 0);
        m.handle(Input::SignalingOpened, 0);
        let out = m.handle(Input::Frame(joined(false, 40)), 0);
        let resent = sent(&out);
        assert_eq!(resent[0]["seq"], 41);
        assert_eq!(sent(&m.handle(Input::SendChat("next".into()), 0))[0]["seq"], 42);
    }

    #[test]
    fn a_patient_cannot_share_a_screen_and_a_doctor_renegotiates_to_share() {
        let mut patient = in_room(Role::Patient);
        let out = patient.handle(Input::SetScreenShare(true), 0);
        assert!(matches!(&out[..], [Output::Event(CallEvent::Error(CallError::NotAllowed(_)))]));
        let mut doctor = in_room(Role::Doctor);
        doctor.handle(
            Input::Frame(Frame::numbered(
                1,
                ServerMessage::PeerJoined { role: Role::Patient, make_offer: true },
            )),
            0,
        );
        let out = doctor.handle(Input::SetScreenShare(true), 0);
        assert!(out.contains(&Output::Peer(PeerCommand::SetScreenShare(true))));
        assert!(out.contains(&Output::Peer(PeerCommand::CreateOffer { ice_restart: false })));
        assert_eq!(sent(&out)[0]["type"], "screen-share");
    }

    #[test]
    fn mute_and_camera_off_stop_sending_and_tell_the_peer() {
        let mut m = in_room(Role::Patient);
        let out = m.handle(Input::SetMicrophone(false), 0);
        assert!(out.contains(&Output::Peer(PeerCommand::SetAudioSending(false))));
        let frame = &sent(&out)[0];
        assert_eq!(
            (frame["type"].as_str(), frame["audio"].as_bool(), frame["video"].as_bool()),
            (Some("media-state"), Some(false), Some(true))
        );
        let out = m.handle(Input::SetCamera(false), 0);
        assert!(out.contains(&Output::Peer(PeerCommand::SetVideoSending(false))));
    }

    #[test]
    fn a_failed_media_connection_makes_the_doctor_restart_ice_until_it_is_back() {
        let mut m = in_room(Role::Doctor);
        m.handle(
            Input::Frame(Frame::numbered(
                1,
                ServerMessage::PeerJoined { role: Role::Patient, make_offer: true },
            )),
            0,
        );
        m.handle(Input::PeerConnection(PeerConnectionState::Connected), 100);
        let out = m.handle(Input::PeerConnection(PeerConnectionState::Failed), 1000);
        assert_eq!(states(&out), [CallState::Reconnecting]);
        assert!(out.contains(&Output::Peer(PeerCommand::CreateOffer { ice_restart: true })));
        assert_eq!(m.next_timeout(), Some(1000 + ICE_RESTART_EVERY_MS));
        assert!(m
            .handle(Input::Tick, 1000 + ICE_RESTART_EVERY_MS)
            .contains(&Output::Peer(PeerCommand::CreateOffer { ice_restart: true })));
        let out = m.handle(Input::PeerConnection(PeerConnectionState::Connected), 7000);
        assert_eq!(states(&out), [CallState::Connected]);
        assert_eq!(m.next_timeout(), None);
    }

    #[test]
    fn call_ended_and_fatal_errors_end_the_call_with_the_reason() {
        let mut m = in_room(Role::Patient);
        let out = m.handle(
            Input::Frame(Frame::numbered(
                1,
                ServerMessage::CallEnded { ended_by: Some(Role::Doctor), duration_seconds: 61 },
            )),
            0,
        );
        assert!(out.contains(&Output::Peer(PeerCommand::Close)));
        assert!(out.contains(&Output::Event(CallEvent::Ended(EndReason::CallEnded {
            ended_by: Some(Role::Doctor),
            duration_seconds: 61
        }))));
        let mut m = in_room(Role::Patient);
        let out = m.handle(
            Input::Frame(Frame::new(ServerMessage::Error { code: ErrorCode::Replaced, message: "x".into() })),
            0,
        );
        assert!(out.contains(&Output::Event(CallEvent::Ended(EndReason::Failed(CallError::JoinedElsewhere)))));
        let mut m = in_room(Role::Patient);
        let out = m.handle(
            Input::Frame(Frame::new(ServerMessage::Error {
                code: ErrorCode::RateLimited,
                message: "slow".into(),
            })),
            0,
        );
        assert_eq!(m.state(), CallState::WaitingRoom, "not fatal");
        assert!(matches!(&out[..], [Output::Event(CallEvent::Error(CallError::Server { .. }))]));
    }

    #[test]
    fn the_doctor_hangs_up_by_ending_and_ends_anyway_if_the_server_is_silent() {
        let mut m = in_room(Role::Doctor);
        let out = m.handle(Input::Hangup, 0);
        assert_eq!(sent(&out)[0]["type"], "end-call");
        assert_eq!(m.state(), CallState::WaitingRoom);
        let out = m.handle(Input::Tick, END_WAIT_MS);
        assert!(out.contains(&Output::Event(CallEvent::Ended(EndReason::Left))));
        let mut patient = in_room(Role::Patient);
        let out = patient.handle(Input::Hangup, 0);
        assert_eq!(sent(&out)[0]["type"], "leave");
        assert_eq!(patient.state(), CallState::Ended);
    }

    #[test]
    fn a_refused_link_ends_before_any_signaling() {
        let mut m = CallMachine::new();
        m.handle(Input::Join, 0);
        let out = m.handle(Input::JoinFailed(CallError::LinkExpired), 0);
        assert!(out.contains(&Output::Event(CallEvent::Ended(EndReason::Failed(CallError::LinkExpired)))));
        assert!(!out.iter().any(|o| matches!(o, Output::OpenSignaling { .. })));
    }
}
