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
//! - from the HTTP API: `JoinAccepted`, `JoinFailed`, `IceServers`;
//! - from the signaling transport: `SignalingOpened`, `SignalingFailed`, `SignalingLost`, `Frame`;
//! - from the peer connection: `LocalOffer`, `LocalAnswer`, `LocalCandidate`, `PeerConnection`;
//! - from the clock: `Tick` (call it at [`CallMachine::next_timeout`] or sooner).
//!
//! Outputs ([`Output`]) tell the driver what to do: fetch the join, open or close signaling, send
//! a frame, drive the peer connection and its encoder, and tell the app (`Event`,
//! `QualityChanged`, `VideoRungChanged`, `EncoderBitrate`).
//!
//! Signaling survives drops: frames this side sends are numbered and kept until the server confirms
//! them (`ack` for a stored chat message, `joined.last_client_seq` after a reconnect) and resent
//! after a reconnect, frames from the server are numbered and duplicates dropped, and a reconnect
//! asks the server to resume after the last frame received.
//! Media keeps flowing while signaling reconnects (with backoff, up to [`SIGNALING_GIVE_UP_MS`]).
//! A network change reopens signaling at once (the old connection may be dead without knowing it)
//! and restarts ICE; numbered frames on a new connection wait for `joined`, so they reach the
//! server in order.
//!
//! Both sides may offer, so offers can cross: perfect negotiation settles it, the patient polite
//! (it rolls back its own offer and answers), the doctor impolite (see
//! `CallMachine::on_peer_offer` and `protocol.md`).
//!
//! TURN credentials expire (an hour by default): before an ICE restart, or before applying the
//! peer's offer, with credentials near expiry ([`TurnCredentials::stale`]) the machine fetches
//! fresh ones (`FetchIceServers`), holds the peer connection's negotiation commands until they
//! arrive (`IceServers`), applies them (`PeerCommand::SetIceServers`), then goes on.
//! Which transport signaling uses (WebSocket or the HTTP fallback) is the [`TransportPolicy`]'s
//! decision, fed by how opening failed.

use std::collections::VecDeque;

use crate::api::{IceServer, IceServersResponse, IceTransportPolicy, JoinResponse};
use crate::call::ladder::{BitrateLadder, EncoderTarget, LadderInput, Rung, VideoPreference};
use crate::call::quality::{QualitySample, QualityScorer};
use crate::call::stats::MediaStats;
use crate::call::transport::{OpenFailure, SignalingTransport, Transport, TransportPolicy};
use crate::call::turn_credentials::TurnCredentials;
use crate::error::CallError;
use crate::frame::{EncodedFrame, FrameKind};
use crate::protocol::{
    encode, CallStatus, ChatMessage, ClientMessage, ErrorCode, Frame, IceCandidate, MediaState, QualityLevel,
    QualityReport, Resume, Role, Sdp, ServerMessage, CORE_SCREEN_STREAM_ID,
};

/// Give up reconnecting signaling after this long without success.
pub const SIGNALING_GIVE_UP_MS: i64 = 60_000;
/// After the doctor asks to end, wait this long for `call-ended` before ending anyway.
pub const END_WAIT_MS: i64 = 5_000;
/// While the media connection is failed, the offerer restarts ICE this often.
pub const ICE_RESTART_EVERY_MS: i64 = 5_000;
/// An offer of this side's that has had no answer for this long no longer makes the doctor
/// ignore the patient's offers (its answer was lost): perfect negotiation's impolite side gives way.
pub const OFFER_ANSWER_WAIT_MS: i64 = 10_000;
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

/// How the peer connection reaches the peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceConfig {
    /// STUN/TURN servers.
    pub servers: Vec<IceServer>,
    /// Relay candidates only: the peer never learns this device's IP address.
    pub relay_only: bool,
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
    /// Abandon this side's pending offer (back to the stable state) so the peer's crossing offer
    /// can be applied: the polite side of perfect negotiation.
    Rollback,
    /// Apply the peer's answer.
    AcceptAnswer(String),
    /// Add the peer's ICE candidate.
    AddRemoteCandidate(IceCandidate),
    /// Use these ICE servers from the next gathering on (an ICE restart), e.g. fresh TURN
    /// credentials.
    SetIceServers(IceConfig),
    /// Send or stop sending audio.
    SetAudioSending(bool),
    /// Send or stop sending camera video.
    SetVideoSending(bool),
    /// Add or remove the screen-share track.
    SetScreenShare(bool),
    /// The peer's screen track is the one in this media stream (its `screen-share` frame's
    /// `stream_id`): its frames are `Screen` frames, its other video is the camera.
    PeerScreenStream(String),
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
    /// Fresh ICE servers fetched after `FetchIceServers` (or why not).
    IceServers(Result<Box<IceServersResponse>, CallError>),
    /// The signaling connection is open.
    SignalingOpened,
    /// The signaling connection could not be opened.
    SignalingFailed(OpenFailure),
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
    /// Open signaling over this transport at this path.
    OpenSignaling {
        /// The WebSocket or the HTTP fallback.
        transport: Transport,
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
        /// STUN/TURN servers and transport policy.
        ice: IceConfig,
    },
    /// `GET /api/video-call/ice-servers` with the link's token; the answer comes back as
    /// `IceServers`.
    FetchIceServers,
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
    /// The server answered `joined` on the current connection. Numbered frames wait until then:
    /// `joined` tells which ones the server has, the rest are resent in order, and the server
    /// ignores a seq at or below one it has seen, so a frame sent ahead of them (a candidate
    /// gathered while the join was on its way) would make it drop them (the restart's offer).
    joined_here: bool,
    signaling_lost_at: Option<i64>,
    reconnect_attempts: u32,
    next_reconnect_at: Option<i64>,
    transport: TransportPolicy,
    next_client_seq: u64,
    unconfirmed: VecDeque<(u64, ClientMessage)>,
    media: MediaState,
    screen_sharing: bool,
    /// The stream id the peer named for its screen track (see `PeerCommand::PeerScreenStream`).
    peer_screen_stream: Option<String>,
    peer_failed_at: Option<i64>,
    last_ice_restart_at: Option<i64>,
    end_requested_at: Option<i64>,
    scorer: QualityScorer,
    ladder: BitrateLadder,
    /// The encoder bitrate the app was last told.
    told_bitrate_bps: Option<u64>,
    /// The user asked for relay candidates only.
    relay_only: bool,
    /// The wall clock (Unix ms) at machine time 0, to tell when TURN credentials expire.
    unix_origin_ms: i64,
    /// When the current TURN credentials expire.
    credentials: TurnCredentials,
    /// Fresh credentials are being fetched: negotiation commands wait here until they arrive.
    awaiting_credentials: Option<Vec<PeerCommand>>,
    /// This side's offer not answered yet (see `CallMachine::on_peer_offer`).
    own_offer: Option<OwnOffer>,
    /// A rolled-back ICE restart is made again once the peer's offer is answered.
    restart_after_answer: bool,
}

/// An offer of this side's waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct OwnOffer {
    made_at: i64,
    ice_restart: bool,
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
            joined_here: false,
            signaling_lost_at: None,
            reconnect_attempts: 0,
            next_reconnect_at: None,
            transport: TransportPolicy::default(),
            next_client_seq: 1,
            unconfirmed: VecDeque::new(),
            media: MediaState { audio: true, video: true },
            screen_sharing: false,
            peer_screen_stream: None,
            peer_failed_at: None,
            last_ice_restart_at: None,
            end_requested_at: None,
            scorer: QualityScorer::default(),
            ladder: BitrateLadder::new(crate::call::ladder::DEFAULT_START_RUNG, "1080p"),
            told_bitrate_bps: None,
            relay_only: false,
            unix_origin_ms: 0,
            credentials: TurnCredentials::default(),
            awaiting_credentials: None,
            own_offer: None,
            restart_after_answer: false,
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

    /// Relay candidates only ("hide my IP"), whatever the server's policy.
    pub fn with_relay_only(mut self, relay_only: bool) -> CallMachine {
        self.relay_only = relay_only;
        self
    }

    /// Machine time 0 is this wall-clock time (Unix ms): TURN credentials expire in wall-clock
    /// time.
    pub fn with_wall_clock(mut self, unix_origin_ms: i64) -> CallMachine {
        self.unix_origin_ms = unix_origin_ms;
        self
    }

    /// The ICE configuration for the peer connection: the join's servers, relay-only if the user
    /// or the clinic asks for it.
    pub fn ice_config(&self) -> IceConfig {
        let join = self.join.as_ref();
        IceConfig {
            servers: join.map(|j| j.ice_servers.clone()).unwrap_or_default(),
            relay_only: self.relay_only
                || join.is_some_and(|j| j.ice_transport_policy == IceTransportPolicy::Relay),
        }
    }

    /// The same machine with signaling following this transport setting (`Auto` by default).
    pub fn with_signaling_transport(self, setting: SignalingTransport) -> CallMachine {
        CallMachine { transport: TransportPolicy::new(setting), ..self }
    }

    /// The transport signaling uses (or opens next).
    pub fn signaling_transport(&self) -> Transport {
        self.transport.current()
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
        // What the fresh credentials released goes out, even if they could not be fetched.
        let releases = matches!(input, Input::IceServers(_));
        match input {
            Input::Join => {
                if self.state == CallState::Idle {
                    self.set_state(CallState::Joining, &mut out);
                    out.push(Output::FetchJoin);
                }
            }
            Input::JoinAccepted(join) => self.on_join_accepted(*join, now_ms, &mut out),
            Input::JoinFailed(error) => self.end(EndReason::Failed(error), &mut out),
            Input::SignalingOpened => self.on_signaling_opened(&mut out),
            Input::SignalingFailed(failure) => {
                let fell_back = self.transport.open_failed(failure);
                self.on_signaling_lost(now_ms, &mut out);
                if fell_back && self.next_reconnect_at.is_some() {
                    self.next_reconnect_at = Some(now_ms); // the fallback is a new path: try it at once
                }
            }
            Input::SignalingLost => self.on_signaling_lost(now_ms, &mut out),
            Input::Frame(frame) => self.on_frame(frame, now_ms, &mut out),
            Input::LocalOffer(sdp) => self.send(ClientMessage::Offer(Sdp { sdp }), &mut out),
            Input::LocalAnswer(sdp) => {
                self.send(ClientMessage::Answer(Sdp { sdp }), &mut out);
                if std::mem::take(&mut self.restart_after_answer) {
                    self.last_ice_restart_at = Some(now_ms);
                    self.make_offer(true, now_ms, &mut out);
                }
            }
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
            Input::SetScreenShare(active) => self.on_screen_share(active, now_ms, &mut out),
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
                self.transport.network_changed();
                if matches!(
                    self.state,
                    CallState::Connected | CallState::Reconnecting | CallState::Connecting
                ) {
                    self.last_ice_restart_at = Some(now_ms);
                    self.make_offer(true, now_ms, &mut out);
                }
                if self.signaling_open && self.has_joined {
                    // The connection was opened on the old network: its TCP connection may be
                    // dead without knowing it yet (the interface went away), and the restart's
                    // offer would wait behind it until the keep-alive notices (up to
                    // `SILENCE_LIMIT`). A new one opens at once and resumes; the offer, not yet
                    // made, goes out on it (frames sent while signaling is closed are kept and
                    // sent after `joined`).
                    out.push(Output::CloseSignaling);
                    self.signaling_open = false;
                    self.joined_here = false;
                }
                if !self.signaling_open && self.has_joined {
                    // A new network is a good moment to retry at once.
                    self.next_reconnect_at = Some(now_ms);
                }
            }
            Input::IceServers(result) => self.on_ice_servers(result, now_ms, &mut out),
            Input::Hangup => self.on_hangup(now_ms, &mut out),
            Input::Tick => self.on_tick(now_ms, &mut out),
        }
        if !releases {
            self.hold_while_fetching_credentials(now_ms, &mut out);
        }
        out
    }

    fn unix_now_s(&self, now_ms: i64) -> i64 {
        (self.unix_origin_ms + now_ms) / 1000
    }

    /// Negotiation commands that would gather candidates with stale TURN credentials (an offer
    /// of this side's, an ICE restart's or a new peer connection's, or the peer's offer) wait for
    /// fresh ones, and so do the negotiation commands after them.
    fn hold_while_fetching_credentials(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        if out.iter().any(|o| matches!(o, Output::ResetPeer { .. })) {
            if let Some(held) = self.awaiting_credentials.as_mut() {
                held.clear(); // they were for the connection just replaced
            }
        }
        let negotiates = |o: &Output| {
            matches!(
                o,
                Output::Peer(
                    PeerCommand::CreateOffer { .. }
                        | PeerCommand::Rollback
                        | PeerCommand::AcceptOffer(_)
                        | PeerCommand::AcceptAnswer(_)
                        | PeerCommand::AddRemoteCandidate(_)
                )
            )
        };
        if self.awaiting_credentials.is_none() {
            let restarts = out.iter().any(|o| {
                matches!(o, Output::Peer(PeerCommand::CreateOffer { .. } | PeerCommand::AcceptOffer(_)))
            });
            if !restarts || !self.credentials.stale(self.unix_now_s(now_ms)) {
                return;
            }
            self.awaiting_credentials = Some(Vec::new());
            out.push(Output::FetchIceServers);
        }
        let Some(held) = self.awaiting_credentials.as_mut() else { return };
        out.retain(|o| match o {
            Output::Peer(command) if negotiates(o) => {
                held.push(command.clone());
                false
            }
            _ => true,
        });
    }

    fn on_ice_servers(
        &mut self,
        result: Result<Box<IceServersResponse>, CallError>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        let Some(held) = self.awaiting_credentials.take() else { return };
        match result {
            Ok(response) => {
                self.credentials = TurnCredentials::new(
                    &response.ice_servers,
                    self.unix_now_s(now_ms),
                    Some(response.ttl_seconds),
                );
                if let Some(join) = self.join.as_mut() {
                    join.ice_servers = response.ice_servers;
                    if response.ice_transport_policy == IceTransportPolicy::Relay {
                        join.ice_transport_policy = IceTransportPolicy::Relay;
                    }
                }
                out.push(Output::Peer(PeerCommand::SetIceServers(self.ice_config())));
            }
            // Restart with the old ones: a failed restart is retried, and fetches again.
            Err(error) => out.push(Output::Event(CallEvent::Error(error))),
        }
        out.extend(held.into_iter().map(Output::Peer));
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
        self.joined_here = false;
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
            // Negotiation frames go stale; chat is what a person typed: it goes last.
            let oldest_other =
                self.unconfirmed.iter().position(|(_, m)| !matches!(m, ClientMessage::Chat { .. }));
            self.unconfirmed.remove(oldest_other.unwrap_or(0));
        }
        self.unconfirmed.push_back((seq, message.clone()));
        if self.signaling_open && self.joined_here {
            out.push(Output::Send(encode(&Frame::numbered(seq, message))));
        }
    }

    fn on_join_accepted(&mut self, join: JoinResponse, now_ms: i64, out: &mut Vec<Output>) {
        if join.status == CallStatus::Ended {
            return self.end(EndReason::Failed(CallError::CallEnded), out);
        }
        self.role = Some(join.role);
        out.push(Output::Event(CallEvent::Joined {
            role: join.role,
            display_name: join.display_name.clone(),
            peer_display_name: join.peer_display_name.clone(),
        }));
        self.credentials = TurnCredentials::new(&join.ice_servers, self.unix_now_s(now_ms), None);
        self.join = Some(join);
        self.open_signaling(out);
    }

    fn open_signaling(&self, out: &mut Vec<Output>) {
        if let Some(join) = &self.join {
            let transport = self.transport.current();
            let path = match transport {
                Transport::WebSocket => join.websocket_path.clone(),
                Transport::Http => join.signal_path.clone(),
            };
            out.push(Output::OpenSignaling { transport, path });
        }
    }

    fn on_signaling_opened(&mut self, out: &mut Vec<Output>) {
        self.signaling_open = true;
        self.joined_here = false;
        self.transport.opened();
        let resume = self.has_joined.then_some(Resume { last_seq: self.last_seq });
        out.push(Output::SendJoin { resume });
    }

    fn on_signaling_lost(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        self.signaling_open = false;
        self.joined_here = false;
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
            self.open_signaling(out);
        }
        if let Some(failed_at) = self.peer_failed_at {
            let last = self.last_ice_restart_at.unwrap_or(failed_at);
            if now_ms - last >= ICE_RESTART_EVERY_MS && self.role == Some(Role::Doctor) {
                self.last_ice_restart_at = Some(now_ms);
                self.make_offer(true, now_ms, out);
            }
        }
        if self.end_requested_at.is_some_and(|at| now_ms - at >= END_WAIT_MS) {
            self.end(EndReason::Left, out);
        }
    }

    fn on_frame(&mut self, frame: Frame<ServerMessage>, now_ms: i64, out: &mut Vec<Output>) {
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
                out.push(Output::ResetPeer { ice: self.ice_config() });
                self.own_offer = None;
                self.restart_after_answer = false;
                self.scorer = QualityScorer::default();
                self.peer_failed_at = None;
                // A fresh peer connection starts from the current controls.
                out.push(Output::Peer(PeerCommand::SetAudioSending(self.media.audio)));
                out.push(Output::Peer(PeerCommand::SetVideoSending(self.media.video)));
                if self.screen_sharing {
                    out.push(Output::Peer(PeerCommand::SetScreenShare(true)));
                }
                if let Some(stream_id) = &self.peer_screen_stream {
                    out.push(Output::Peer(PeerCommand::PeerScreenStream(stream_id.clone())));
                }
                self.set_state(CallState::Connecting, out);
                if make_offer {
                    self.make_offer(false, now_ms, out);
                }
                self.send(ClientMessage::MediaState(self.media), out);
                if self.screen_sharing {
                    // A peer that joined afresh (a reloaded page, a new device) missed the first one.
                    self.send_screen_share(true, out);
                }
            }
            ServerMessage::PeerLeft { .. } => {
                out.push(Output::Peer(PeerCommand::Close));
                self.peer_failed_at = None;
                self.own_offer = None;
                self.restart_after_answer = false;
                self.peer_screen_stream = None; // a peer that comes back names its streams anew
                self.set_state(CallState::WaitingRoom, out);
                out.push(Output::Event(CallEvent::PeerLeft));
            }
            ServerMessage::Offer { sdp, .. } => self.on_peer_offer(sdp, now_ms, out),
            ServerMessage::Answer { sdp, .. } => {
                self.own_offer = None;
                out.push(Output::Peer(PeerCommand::AcceptAnswer(sdp)));
            }
            ServerMessage::IceCandidate { candidate, .. } => {
                out.push(Output::Peer(PeerCommand::AddRemoteCandidate(candidate)))
            }
            ServerMessage::Chat(message) => out.push(Output::Event(CallEvent::ChatReceived(message))),
            ServerMessage::Ack { client_seq } => self.unconfirmed.retain(|(seq, _)| *seq != client_seq),
            ServerMessage::ScreenShare { active, stream_id, .. } => {
                if let Some(stream_id) = stream_id {
                    self.peer_screen_stream = Some(stream_id.clone());
                    out.push(Output::Peer(PeerCommand::PeerScreenStream(stream_id)));
                }
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
        self.joined_here = true;
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
        if crate::error::ends_the_call(code) {
            self.end(EndReason::Failed(error), out);
        } else {
            out.push(Output::Event(CallEvent::Error(error)));
        }
    }

    /// Asks the peer connection for an offer; it is pending until the peer's answer.
    fn make_offer(&mut self, ice_restart: bool, now_ms: i64, out: &mut Vec<Output>) {
        let restarts_already = self.own_offer.is_some_and(|o| o.ice_restart);
        self.own_offer = Some(OwnOffer { made_at: now_ms, ice_restart: ice_restart || restarts_already });
        out.push(Output::Peer(PeerCommand::CreateOffer { ice_restart }));
    }

    /// The peer's offer, with perfect negotiation for offers that cross: both sides may offer
    /// (the doctor on joining, sharing and restarting while the connection is failed; the
    /// patient on a network change). The patient is polite: with its own offer pending it rolls
    /// it back and answers the doctor's, then makes its ICE restart again if the rolled-back
    /// offer was one. The doctor is impolite: it ignores the patient's offer while its own is
    /// pending (the patient answers it), unless that one has waited [`OFFER_ANSWER_WAIT_MS`].
    fn on_peer_offer(&mut self, sdp: String, now_ms: i64, out: &mut Vec<Output>) {
        if let Some(own) = self.own_offer {
            let impolite = self.role == Some(Role::Doctor);
            if impolite && now_ms - own.made_at < OFFER_ANSWER_WAIT_MS {
                return;
            }
            out.push(Output::Peer(PeerCommand::Rollback));
            self.own_offer = None;
            // The doctor's own restarts go on by the clock while the connection is failed.
            self.restart_after_answer |= own.ice_restart && !impolite;
        }
        if self.peer_failed_at.is_some() {
            // The peer's offer is a restart of its own: the next timed one waits its turn.
            self.last_ice_restart_at = Some(now_ms);
        }
        out.push(Output::Peer(PeerCommand::AcceptOffer(sdp)));
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
                            self.make_offer(true, now_ms, out);
                        }
                    }
                }
            }
        }
    }

    fn on_screen_share(&mut self, active: bool, now_ms: i64, out: &mut Vec<Output>) {
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
        self.send_screen_share(active, out);
        if matches!(self.state, CallState::Connected | CallState::Connecting | CallState::Reconnecting) {
            self.make_offer(false, now_ms, out);
        }
    }

    /// Tells the peer whether the screen is shared, naming the screen track's stream (its role).
    fn send_screen_share(&mut self, active: bool, out: &mut Vec<Output>) {
        let stream_id = Some(CORE_SCREEN_STREAM_ID.to_owned());
        self.send(ClientMessage::ScreenShare { active, stream_id }, out);
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
            ice_transport_policy: IceTransportPolicy::All,
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

    /// A machine for `role` in a connected call whose first negotiation is done (the doctor
    /// offered, the patient answered).
    fn in_call(role: Role) -> CallMachine {
        let mut m = in_room(role);
        let peer = ServerMessage::PeerJoined { role: role.other(), make_offer: role == Role::Doctor };
        m.handle(Input::Frame(Frame::numbered(1, peer)), 0);
        match role {
            Role::Doctor => {
                m.handle(Input::LocalOffer("doctor offer".into()), 0);
                m.handle(
                    Input::Frame(Frame::new(ServerMessage::Answer { from: Role::Patient, sdp: "a".into() })),
                    0,
                );
            }
            _ => {
                m.handle(
                    Input::Frame(Frame::new(ServerMessage::Offer { from: Role::Doctor, sdp: "o".into() })),
                    0,
                );
                m.handle(Input::LocalAnswer("patient answer".into()), 0);
            }
        }
        m.handle(Input::PeerConnection(PeerConnectionState::Connected), 100);
        m
    }

    #[test]
    fn a_patient_goes_from_idle_through_the_waiting_room_to_connected() {
        let mut m = CallMachine::new();
        let out = m.handle(Input::Join, 0);
        assert_eq!(states(&out), [CallState::Joining]);
        assert!(out.contains(&Output::FetchJoin));
        let out = m.handle(Input::JoinAccepted(Box::new(join_response(Role::Patient))), 10);
        assert!(out.contains(&Output::OpenSignaling {
            transport: Transport::WebSocket,
            path: "/api/video-call/ws".into()
        }));
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
    fn chat_is_resent_after_a_reconnect_until_the_server_acknowledges_it() {
        let mut m = in_room(Role::Patient);
        let first = sent(&m.handle(Input::SendChat("one".into()), 0))[0]["seq"].as_u64().unwrap();
        let second = sent(&m.handle(Input::SendChat("two".into()), 0))[0]["seq"].as_u64().unwrap();
        m.handle(Input::Frame(Frame::new(ServerMessage::Ack { client_seq: first })), 0);
        m.handle(Input::SignalingLost, 10);
        m.handle(Input::SignalingOpened, 300);
        // The server stored neither as far as `joined` says; the acknowledged one is not resent.
        let resent = sent(&m.handle(Input::Frame(joined(true, 0)), 310));
        assert_eq!(resent.len(), 1);
        assert_eq!((resent[0]["text"].as_str(), resent[0]["seq"].as_u64()), (Some("two"), Some(second)));
    }

    #[test]
    fn a_full_resend_queue_lets_negotiation_frames_go_before_chat() {
        let mut m = in_room(Role::Patient);
        m.handle(Input::SignalingLost, 0);
        m.handle(Input::SendChat("typed offline".into()), 0);
        for _ in 0..UNCONFIRMED_LIMIT {
            m.handle(Input::SetMicrophone(true), 0);
        }
        m.handle(Input::SignalingOpened, 300);
        let resent = sent(&m.handle(Input::Frame(joined(true, 0)), 310));
        assert_eq!(resent.len(), UNCONFIRMED_LIMIT);
        assert_eq!(resent[0]["text"], "typed offline");
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
        assert!(m.handle(Input::Tick, 1250).contains(&Output::OpenSignaling {
            transport: Transport::WebSocket,
            path: "/api/video-call/ws".into()
        }));
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

    const WS: &str = "/api/video-call/ws";
    const SIGNAL: &str = "/api/video-call/signal";

    fn opens(out: &[Output]) -> Vec<(Transport, &str)> {
        out.iter()
            .filter_map(|o| match o {
                Output::OpenSignaling { transport, path } => Some((*transport, path.as_str())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_refused_upgrade_moves_signaling_to_http_at_once_and_joins_there() {
        let mut m = CallMachine::new();
        m.handle(Input::Join, 0);
        let out = m.handle(Input::JoinAccepted(Box::new(join_response(Role::Patient))), 0);
        assert_eq!(opens(&out), [(Transport::WebSocket, WS)]);
        m.handle(Input::SignalingFailed(OpenFailure::Refused { http_status: 403 }), 100);
        assert_eq!(m.next_timeout(), Some(100), "no backoff before the fallback");
        assert_eq!(opens(&m.handle(Input::Tick, 100)), [(Transport::Http, SIGNAL)]);
        assert_eq!(m.handle(Input::SignalingOpened, 120), [Output::SendJoin { resume: None }]);
        assert_eq!(states(&m.handle(Input::Frame(joined(false, 0)), 130)), [CallState::WaitingRoom]);
        assert_eq!(m.signaling_transport(), Transport::Http);
    }

    #[test]
    fn websockets_that_never_open_move_signaling_to_http_after_three_tries() {
        let mut m = CallMachine::new();
        m.handle(Input::Join, 0);
        m.handle(Input::JoinAccepted(Box::new(join_response(Role::Patient))), 0);
        let mut now = 0;
        for _ in 0..2 {
            m.handle(Input::SignalingFailed(OpenFailure::Unreachable), now);
            now = m.next_timeout().unwrap();
            assert_eq!(opens(&m.handle(Input::Tick, now)), [(Transport::WebSocket, WS)]);
        }
        m.handle(Input::SignalingFailed(OpenFailure::Unreachable), now);
        assert_eq!(opens(&m.handle(Input::Tick, now)), [(Transport::Http, SIGNAL)]);
    }

    #[test]
    fn after_a_network_change_signaling_tries_the_websocket_again() {
        let mut m = CallMachine::new();
        m.handle(Input::Join, 0);
        m.handle(Input::JoinAccepted(Box::new(join_response(Role::Patient))), 0);
        m.handle(Input::SignalingFailed(OpenFailure::Refused { http_status: 400 }), 0);
        assert_eq!(opens(&m.handle(Input::Tick, 0)), [(Transport::Http, SIGNAL)]);
        m.handle(Input::SignalingOpened, 0);
        m.handle(Input::Frame(joined(false, 0)), 0);
        m.handle(Input::NetworkChanged, 1000);
        m.handle(Input::SignalingLost, 1000);
        let now = m.next_timeout().unwrap();
        assert_eq!(opens(&m.handle(Input::Tick, now)), [(Transport::WebSocket, WS)]);
    }

    #[test]
    fn a_network_change_reopens_signaling_at_once_and_the_restart_offer_goes_out_on_the_new_connection() {
        let mut m = in_call(Role::Patient);
        let out = m.handle(Input::NetworkChanged, 1000);
        assert!(out.contains(&Output::Peer(PeerCommand::CreateOffer { ice_restart: true })), "{out:?}");
        assert!(out.contains(&Output::CloseSignaling), "the old network's connection is let go: {out:?}");
        assert_eq!(m.next_timeout(), Some(1000), "a new one at once");
        assert_eq!(opens(&m.handle(Input::Tick, 1000)), [(Transport::WebSocket, WS)]);
        // The offer is made while signaling is closed: kept, not sent on the dead connection.
        assert!(sent(&m.handle(Input::LocalOffer("restart".into()), 1010)).is_empty());
        let out = m.handle(Input::SignalingOpened, 1020);
        assert_eq!(out, [Output::SendJoin { resume: Some(Resume { last_seq: 1 }) }]);
        let frames = sent(&m.handle(Input::Frame(joined(true, 0)), 1030));
        let offer = frames.iter().find(|f| f["type"] == "offer").expect("the offer goes out after joined");
        assert_eq!(offer["sdp"], "restart");
    }

    #[test]
    fn frames_made_while_the_join_is_on_its_way_wait_for_joined_and_go_after_the_resent_ones() {
        let mut m = in_call(Role::Patient);
        m.handle(Input::NetworkChanged, 1000);
        m.handle(Input::LocalOffer("restart".into()), 1005);
        m.handle(Input::Tick, 1010);
        m.handle(Input::SignalingOpened, 1020);
        // A candidate of the restart, gathered before the server answers the join: it waits.
        let candidate =
            IceCandidate { candidate: "candidate:1".into(), sdp_mid: None, sdp_m_line_index: None };
        assert!(sent(&m.handle(Input::LocalCandidate(candidate), 1030)).is_empty());
        let frames = sent(&m.handle(Input::Frame(joined(true, 0)), 1300));
        let types: Vec<_> = frames.iter().map(|f| f["type"].as_str().unwrap().to_owned()).collect();
        let offer = types.iter().position(|t| t == "offer").expect("the offer");
        assert_eq!(types[offer..], ["offer", "ice-candidate"], "{frames:?}");
        let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in seq order: {seqs:?}");
    }

    fn offer_from(from: Role, seq: u64) -> Input {
        Input::Frame(Frame::numbered(seq, ServerMessage::Offer { from, sdp: format!("offer {seq}") }))
    }

    fn answer_from(from: Role, seq: u64) -> Input {
        Input::Frame(Frame::numbered(seq, ServerMessage::Answer { from, sdp: "answer".into() }))
    }

    fn peer_commands(outputs: &[Output]) -> Vec<PeerCommand> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Peer(c) if !matches!(c, PeerCommand::SetEncoderTarget(_)) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_polite_patient_rolls_back_its_restart_offer_answers_the_doctors_then_restarts_again() {
        let mut m = in_call(Role::Patient);
        m.handle(Input::NetworkChanged, 1000);
        m.handle(Input::LocalOffer("patient restart".into()), 1010);
        // The doctor's own restart crossed it.
        let out = m.handle(offer_from(Role::Doctor, 2), 1100);
        assert_eq!(
            peer_commands(&out),
            [PeerCommand::Rollback, PeerCommand::AcceptOffer("offer 2".into())],
            "its offer is abandoned and the doctor's applied"
        );
        let out = m.handle(Input::LocalAnswer("answer".into()), 1150);
        assert_eq!(
            peer_commands(&out),
            [PeerCommand::CreateOffer { ice_restart: true }],
            "the restart again"
        );
        // Answered this time: a later offer of the doctor's is applied as is.
        m.handle(Input::LocalOffer("patient restart 2".into()), 1160);
        m.handle(answer_from(Role::Doctor, 3), 1300);
        let out = m.handle(offer_from(Role::Doctor, 4), 2000);
        assert_eq!(peer_commands(&out), [PeerCommand::AcceptOffer("offer 4".into())]);
        let out = m.handle(Input::LocalAnswer("answer".into()), 2050);
        assert!(peer_commands(&out).is_empty(), "no restart after this one: {out:?}");
    }

    #[test]
    fn the_impolite_doctor_ignores_the_patients_offer_while_its_own_waits_for_an_answer() {
        let mut m = in_call(Role::Doctor);
        m.handle(Input::PeerConnection(PeerConnectionState::Failed), 1000);
        m.handle(Input::LocalOffer("doctor restart".into()), 1010);
        let out = m.handle(offer_from(Role::Patient, 2), 1100);
        assert!(peer_commands(&out).is_empty(), "the patient answers the doctor's instead: {out:?}");
        // The patient's answer settles it; the patient's next offer is applied.
        m.handle(answer_from(Role::Patient, 3), 1200);
        let out = m.handle(offer_from(Role::Patient, 4), 1300);
        assert_eq!(peer_commands(&out), [PeerCommand::AcceptOffer("offer 4".into())]);
        assert_eq!(
            m.next_timeout(),
            Some(1300 + ICE_RESTART_EVERY_MS),
            "the patient's restart puts off the doctor's next"
        );
    }

    #[test]
    fn the_doctor_gives_way_when_its_offer_had_no_answer_for_too_long() {
        let mut m = in_call(Role::Doctor);
        m.handle(Input::SetScreenShare(true), 1000);
        m.handle(Input::LocalOffer("doctor offer".into()), 1010);
        let out = m.handle(offer_from(Role::Patient, 2), 1000 + OFFER_ANSWER_WAIT_MS);
        assert_eq!(
            peer_commands(&out),
            [PeerCommand::Rollback, PeerCommand::AcceptOffer("offer 2".into())],
            "its answer was lost: rolled back"
        );
        let out = m.handle(Input::LocalAnswer("answer".into()), 1000 + OFFER_ANSWER_WAIT_MS + 50);
        assert!(peer_commands(&out).is_empty(), "not a restart: nothing to make again: {out:?}");
    }

    #[test]
    fn a_patients_offer_that_crosses_nothing_is_answered_at_once() {
        let mut m = in_call(Role::Patient);
        let out = m.handle(offer_from(Role::Doctor, 2), 1000);
        assert_eq!(peer_commands(&out), [PeerCommand::AcceptOffer("offer 2".into())]);
    }

    #[test]
    fn a_websocket_only_call_keeps_retrying_the_websocket() {
        let mut m = CallMachine::new().with_signaling_transport(SignalingTransport::WebSocketOnly);
        m.handle(Input::Join, 0);
        m.handle(Input::JoinAccepted(Box::new(join_response(Role::Patient))), 0);
        m.handle(Input::SignalingFailed(OpenFailure::Refused { http_status: 403 }), 0);
        let now = m.next_timeout().unwrap();
        assert_eq!(now, reconnect_backoff_ms(1), "the usual backoff");
        assert_eq!(opens(&m.handle(Input::Tick, now)), [(Transport::WebSocket, WS)]);
    }

    #[test]
    fn an_http_only_call_resumes_over_http_after_a_drop() {
        let mut m = CallMachine::new().with_signaling_transport(SignalingTransport::HttpOnly);
        m.handle(Input::Join, 0);
        let out = m.handle(Input::JoinAccepted(Box::new(join_response(Role::Patient))), 0);
        assert_eq!(opens(&out), [(Transport::Http, SIGNAL)]);
        m.handle(Input::SignalingOpened, 0);
        m.handle(Input::Frame(joined(false, 0)), 0);
        m.handle(Input::Frame(Frame::numbered(3, ServerMessage::Waiting { message: None })), 0);
        m.handle(Input::SignalingLost, 1000);
        let now = m.next_timeout().unwrap();
        assert_eq!(opens(&m.handle(Input::Tick, now)), [(Transport::Http, SIGNAL)]);
        let out = m.handle(Input::SignalingOpened, now);
        assert_eq!(out, [Output::SendJoin { resume: Some(Resume { last_seq: 3 }) }]);
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
        assert_eq!(sent(&out)[0]["stream_id"], CORE_SCREEN_STREAM_ID, "the track role goes with it");
    }

    #[test]
    fn a_sharing_doctor_tells_a_patient_who_joins_afresh_that_the_screen_is_shared() {
        let mut doctor = in_room(Role::Doctor);
        let patient_joined = |seq| {
            Input::Frame(Frame::numbered(
                seq,
                ServerMessage::PeerJoined { role: Role::Patient, make_offer: true },
            ))
        };
        let out = doctor.handle(patient_joined(1), 0);
        assert!(sent(&out).iter().all(|frame| frame["type"] != "screen-share"), "not sharing: {out:?}");
        doctor.handle(Input::SetScreenShare(true), 0);
        // The patient's page is reloaded: a new peer connection, and it must learn the screen's role.
        let out = doctor.handle(patient_joined(2), 0);
        let share: Vec<_> = sent(&out).into_iter().filter(|frame| frame["type"] == "screen-share").collect();
        assert_eq!(share.len(), 1, "{out:?}");
        assert_eq!(share[0]["active"], true);
        assert_eq!(share[0]["stream_id"], CORE_SCREEN_STREAM_ID);
    }

    #[test]
    fn the_peers_screen_stream_goes_to_every_peer_connection_until_the_peer_leaves() {
        let mut patient = in_room(Role::Patient);
        let share = |seq, stream_id: Option<&str>| {
            let stream_id = stream_id.map(str::to_owned);
            Input::Frame(Frame::numbered(
                seq,
                ServerMessage::ScreenShare { from: Role::Doctor, active: true, stream_id },
            ))
        };
        let out = patient.handle(share(1, None), 0);
        assert!(peer_commands(&out).is_empty(), "an older doctor names no stream: {out:?}");
        assert!(out.contains(&Output::Event(CallEvent::PeerScreenShare(true))));
        let out = patient.handle(share(2, Some("browser-screen")), 0);
        assert_eq!(peer_commands(&out), [PeerCommand::PeerScreenStream("browser-screen".into())]);
        let joined = |seq| {
            Input::Frame(Frame::numbered(
                seq,
                ServerMessage::PeerJoined { role: Role::Doctor, make_offer: false },
            ))
        };
        let out = patient.handle(joined(3), 0);
        assert!(
            peer_commands(&out).contains(&PeerCommand::PeerScreenStream("browser-screen".into())),
            "a new peer connection hears it too: {out:?}"
        );
        let left = ServerMessage::PeerLeft { role: Role::Doctor, reason: "left".into() };
        patient.handle(Input::Frame(Frame::numbered(4, left)), 0);
        let out = patient.handle(joined(5), 0);
        assert!(!peer_commands(&out).iter().any(|c| matches!(c, PeerCommand::PeerScreenStream(_))));
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

    /// A doctor's machine whose wall clock starts at `UNIX_START_MS`, joined with TURN credentials
    /// that expire an hour later, in a connected call.
    fn in_call_with_turn(relay_policy: IceTransportPolicy) -> CallMachine {
        let mut m = CallMachine::new().with_wall_clock(UNIX_START_MS);
        let join = JoinResponse {
            ice_servers: vec![turn_server(UNIX_START_MS / 1000 + 3600)],
            ice_transport_policy: relay_policy,
            ..join_response(Role::Doctor)
        };
        m.handle(Input::Join, 0);
        m.handle(Input::JoinAccepted(Box::new(join)), 0);
        m.handle(Input::SignalingOpened, 0);
        m.handle(Input::Frame(joined(false, 0)), 0);
        let peer = ServerMessage::PeerJoined { role: Role::Patient, make_offer: true };
        m.handle(Input::Frame(Frame::numbered(1, peer)), 0);
        m.handle(
            Input::Frame(Frame::new(ServerMessage::Answer { from: Role::Patient, sdp: "v=0".into() })),
            50,
        );
        m.handle(Input::PeerConnection(PeerConnectionState::Connected), 100);
        m
    }

    const UNIX_START_MS: i64 = 1_800_000_000_000;
    const MINUTE_MS: i64 = 60_000;

    fn turn_server(expiry_s: i64) -> IceServer {
        IceServer {
            urls: vec!["turn:turn.example:3478".into()],
            username: Some(format!("{expiry_s}:r-doctor")),
            credential: Some("secret".into()),
        }
    }

    fn remote_candidate(seq: u64) -> Input {
        let candidate = IceCandidate {
            candidate: "candidate:1 1 udp 1 192.0.2.1 5000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
        };
        Input::Frame(Frame::numbered(seq, ServerMessage::IceCandidate { from: Role::Patient, candidate }))
    }

    #[test]
    fn a_restart_in_the_seventy_minute_visits_last_minutes_fetches_fresh_turn_credentials_first() {
        let mut m = in_call_with_turn(IceTransportPolicy::All);
        // Ten minutes in, the join's credentials are good: the restart goes at once.
        let out = m.handle(Input::NetworkChanged, 10 * MINUTE_MS);
        assert!(out.contains(&Output::Peer(PeerCommand::CreateOffer { ice_restart: true })), "{out:?}");
        assert!(!out.contains(&Output::FetchIceServers));

        // 65 minutes in, they expire within the margin: fetch first, hold the restart and what follows.
        let at = 65 * MINUTE_MS;
        let out = m.handle(Input::NetworkChanged, at);
        assert_eq!(out, [Output::FetchIceServers], "nothing negotiates before the credentials are fresh");
        assert!(m.handle(remote_candidate(2), at + 10).is_empty(), "the peer's candidate waits too");
        let fresh = vec![turn_server(UNIX_START_MS / 1000 + 65 * 60 + 3600)];
        let response = IceServersResponse {
            ice_servers: fresh.clone(),
            ttl_seconds: 3600,
            ice_transport_policy: IceTransportPolicy::All,
        };
        let out = m.handle(Input::IceServers(Ok(Box::new(response))), at + 50);
        let Some(Output::Peer(PeerCommand::AddRemoteCandidate(_))) = out.get(2) else { panic!("{out:?}") };
        assert_eq!(
            out[..2],
            [
                Output::Peer(PeerCommand::SetIceServers(IceConfig { servers: fresh, relay_only: false })),
                Output::Peer(PeerCommand::CreateOffer { ice_restart: true }),
            ],
            "fresh servers, then the restart, then the held candidate"
        );
        // The visit's 70th minute: the fresh ones are good.
        let out = m.handle(Input::NetworkChanged, 70 * MINUTE_MS);
        assert!(out.contains(&Output::Peer(PeerCommand::CreateOffer { ice_restart: true })), "{out:?}");
    }

    #[test]
    fn when_the_credentials_cannot_be_fetched_the_restart_goes_on_with_the_old_ones() {
        let mut m = in_call_with_turn(IceTransportPolicy::All);
        let at = 58 * MINUTE_MS;
        // The peer's restart offer waits the same way.
        let offer = ServerMessage::Offer { from: Role::Patient, sdp: "v=0".into() };
        assert_eq!(m.handle(Input::Frame(Frame::numbered(2, offer)), at), [Output::FetchIceServers]);
        let error = CallError::ServerUnreachable("timed out".into());
        let out = m.handle(Input::IceServers(Err(error.clone())), at + 30_000);
        assert_eq!(
            out,
            [Output::Event(CallEvent::Error(error)), Output::Peer(PeerCommand::AcceptOffer("v=0".into()))]
        );
        let out = m.handle(Input::NetworkChanged, at + 40_000);
        assert!(out.contains(&Output::FetchIceServers), "tried again: {out:?}");
    }

    #[test]
    fn a_peer_that_rejoins_late_in_the_visit_gets_a_connection_with_fresh_credentials() {
        let mut m = in_call_with_turn(IceTransportPolicy::All);
        let at = 66 * MINUTE_MS;
        m.handle(
            Input::Frame(Frame::numbered(
                2,
                ServerMessage::PeerLeft { role: Role::Patient, reason: "disconnected".into() },
            )),
            at,
        );
        let rejoined = ServerMessage::PeerJoined { role: Role::Patient, make_offer: true };
        let out = m.handle(Input::Frame(Frame::numbered(3, rejoined)), at + 1_000);
        assert!(matches!(out[0], Output::ResetPeer { .. }), "{out:?}");
        assert!(out.contains(&Output::FetchIceServers));
        assert!(
            !out.iter().any(|o| matches!(o, Output::Peer(PeerCommand::CreateOffer { .. }))),
            "held: {out:?}"
        );
        let fresh = vec![turn_server(UNIX_START_MS / 1000 + 66 * 60 + 3600)];
        let response = IceServersResponse {
            ice_servers: fresh,
            ttl_seconds: 3600,
            ice_transport_policy: IceTransportPolicy::All,
        };
        let out = m.handle(Input::IceServers(Ok(Box::new(response))), at + 1_050);
        assert!(matches!(out[0], Output::Peer(PeerCommand::SetIceServers(_))), "{out:?}");
        assert_eq!(out[1], Output::Peer(PeerCommand::CreateOffer { ice_restart: false }));
    }

    #[test]
    fn a_relay_policy_that_first_comes_with_a_later_ice_servers_reply_applies_from_the_next_restart() {
        let mut m = in_call_with_turn(IceTransportPolicy::All);
        let at = 65 * MINUTE_MS;
        assert_eq!(
            m.handle(Input::NetworkChanged, at).iter().filter(|o| **o == Output::FetchIceServers).count(),
            1
        );
        let fresh = vec![turn_server(UNIX_START_MS / 1000 + 65 * 60 + 3600)];
        let response = IceServersResponse {
            ice_servers: fresh.clone(),
            ttl_seconds: 3600,
            ice_transport_policy: IceTransportPolicy::Relay,
        };
        let out = m.handle(Input::IceServers(Ok(Box::new(response))), at + 50);
        assert_eq!(
            peer_commands(&out),
            [
                PeerCommand::SetIceServers(IceConfig { servers: fresh.clone(), relay_only: true }),
                PeerCommand::CreateOffer { ice_restart: true },
            ],
            "the restart gathers relay candidates only"
        );
        // A new peer connection has it too.
        assert!(m.ice_config().relay_only);
        let rejoined = ServerMessage::PeerJoined { role: Role::Patient, make_offer: true };
        let out = m.handle(Input::Frame(Frame::numbered(9, rejoined)), at + 60_000);
        assert_eq!(out[0], Output::ResetPeer { ice: IceConfig { servers: fresh, relay_only: true } });
    }

    #[test]
    fn relay_only_comes_from_the_user_or_the_clinic() {
        let forced = in_call_with_turn(IceTransportPolicy::Relay);
        assert!(forced.ice_config().relay_only, "the server's policy");
        let mut asked = CallMachine::new().with_relay_only(true);
        asked.handle(Input::Join, 0);
        asked.handle(Input::JoinAccepted(Box::new(join_response(Role::Patient))), 0);
        assert_eq!(asked.ice_config(), IceConfig { servers: vec![], relay_only: true }, "the user's option");
        assert!(!in_call_with_turn(IceTransportPolicy::All).ice_config().relay_only);
        let mut m = CallMachine::new().with_relay_only(true);
        let out = [
            Input::Join,
            Input::JoinAccepted(Box::new(join_response(Role::Patient))),
            Input::SignalingOpened,
        ]
        .into_iter()
        .chain([Input::Frame(joined(false, 0))])
        .chain([Input::Frame(Frame::numbered(
            1,
            ServerMessage::PeerJoined { role: Role::Doctor, make_offer: false },
        ))])
        .flat_map(|input| m.handle(input, 0))
        .find(|o| matches!(o, Output::ResetPeer { .. }));
        assert_eq!(out, Some(Output::ResetPeer { ice: IceConfig { servers: vec![], relay_only: true } }));
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

    /// The shared rules (`rules_vectors.json`, also run against the web page's `rules.js`).
    #[derive(serde::Deserialize)]
    struct RulesVectors {
        reconnect_backoff: Vec<Backoff>,
        websocket_failures_before_fallback: u32,
        ice_restart_every_ms: i64,
        ice_restarts: Vec<IceRestarts>,
    }

    #[derive(serde::Deserialize)]
    struct Backoff {
        attempt: u32,
        delay_ms: i64,
    }

    /// What the peer connection reports over time, and when the doctor's ICE restarts go out.
    #[derive(serde::Deserialize)]
    struct IceRestarts {
        name: String,
        role: Role,
        events: Vec<PeerEvent>,
        restarts_at_ms: Vec<i64>,
    }

    #[derive(serde::Deserialize)]
    struct PeerEvent {
        at_ms: i64,
        event: String,
    }

    fn rules_vectors() -> RulesVectors {
        serde_json::from_str(include_str!("rules_vectors.json")).expect("valid vectors")
    }

    #[test]
    fn the_shared_reconnect_rules_pass_the_same_as_in_the_web_page() {
        let vectors = rules_vectors();
        for b in &vectors.reconnect_backoff {
            assert_eq!(reconnect_backoff_ms(b.attempt), b.delay_ms, "backoff before attempt {}", b.attempt);
        }
        assert_eq!(
            vectors.websocket_failures_before_fallback,
            crate::call::transport::UNREACHABLE_BEFORE_FALLBACK
        );
        assert_eq!(vectors.ice_restart_every_ms, ICE_RESTART_EVERY_MS);
    }

    #[test]
    fn the_shared_ice_restart_vectors_pass_the_same_as_in_the_web_page() {
        for sequence in rules_vectors().ice_restarts {
            let mut m = in_call(sequence.role);
            let mut restarts = vec![];
            for e in &sequence.events {
                let input = match e.event.as_str() {
                    "tick" => Input::Tick,
                    "failed" => Input::PeerConnection(PeerConnectionState::Failed),
                    "disconnected" => Input::PeerConnection(PeerConnectionState::Disconnected),
                    "connected" => Input::PeerConnection(PeerConnectionState::Connected),
                    other => panic!("unknown event {other}"),
                };
                let out = m.handle(input, e.at_ms);
                if out.contains(&Output::Peer(PeerCommand::CreateOffer { ice_restart: true })) {
                    restarts.push(e.at_ms);
                }
            }
            assert_eq!(restarts, sequence.restarts_at_ms, "{}", sequence.name);
        }
    }
}
