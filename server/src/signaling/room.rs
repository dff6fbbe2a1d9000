//! One call's signaling room, sans-I/O: connections come and go, frames arrive, and the room answers
//! with [`Action`]s for the hub to carry out. No sockets, no clocks, no database in here.
//!
//! Inputs:
//! - [`Room::connect`] — an authenticated connection of a role (replacing any earlier one);
//! - [`Room::frame`] — a decoded client frame from a connection;
//! - [`Room::chat_stored`] / [`Room::chat_not_stored`] — the outcome of storing a chat message;
//! - [`Room::disconnect`] / [`Room::grace_expired`] — a connection dropped, and its grace ended;
//! - [`Room::forget_replay`] — a dropped participant stayed away too long to resume;
//! - [`Room::end`] — the call ended (by the doctor, or through the API).
//!
//! Every frame the room sends to a role is numbered (`seq`) and kept in a short replay buffer
//! (bounded in frames per participant and in bytes per room), so a participant that reconnects
//! with `resume.last_seq` gets exactly the frames it missed. Client frames carrying a `seq` at or
//! below the last one accepted are duplicates of a resend and dropped. A numbered chat frame is
//! acknowledged (`ack`) only once stored, and `joined.last_client_seq` never counts a chat frame
//! that is not stored yet, so a client resends exactly what might otherwise be lost.
//! A dropped connection is announced to the peer (`peer-left`) only after a grace period, so a brief
//! network blip that resumes does not tear down the peer connection.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use televisit_protocol::{
    encode, valid_stream_id, CallStatus, ChatMessage, ClientMessage, ErrorCode, Frame, MediaState,
    QualityReport, Role, ServerMessage, MAX_CHAT_CHARS, MAX_WAITING_MESSAGE_CHARS,
};

/// A connection's id, unique within the server process.
pub type ConnId = u64;

/// The node whose connection this is (a connection id is `node << 32 | n`; node 0 when alone).
pub fn node_of(conn: ConnId) -> u32 {
    (conn >> 32) as u32
}

/// How many frames per role the room keeps for resumption.
pub const REPLAY_FRAMES: usize = 512;

/// How many bytes of frames the room keeps for resumption, both roles together. A blip of a few
/// seconds needs far less; a resume that finds its frames gone starts over (`resumed: false`).
pub const REPLAY_BYTES_PER_ROOM: usize = 64 * 1024;

/// Chat frames of one participant that may wait for storage at once. The hub stops reading the
/// participant's frames until storage catches up; a room given more refuses them with
/// `rate_limited` (the client resends them after its next reconnect).
pub const STORING_LIMIT: usize = 256;

/// Quality reports stored per call and role, for the visit's summary. Apps send one on each change
/// of level, a few per call; later ones are still relayed, not stored.
pub const QUALITY_REPORTS_PER_ROLE: usize = 100;

/// Bytes a kept frame costs: its text and its place in the buffer.
fn kept_bytes(text: &str) -> usize {
    text.len() + std::mem::size_of::<(Box<str>, u32)>()
}

/// The frames a seat keeps for resumption: consecutive seqs, oldest first. Their sizes are part of
/// the room's state; their texts are not serialized: with `--redis-url` they live in a Redis list
/// beside the room, so that an input reads and writes the room without them, and they are read
/// only when a connection resumes ([`Room::load_replay`]).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Replay {
    /// The seq of the oldest frame kept (while any is).
    first_seq: u64,
    /// [`kept_bytes`] of each frame kept, oldest first.
    sizes: VecDeque<u32>,
    /// The sum of `sizes`.
    bytes: usize,
    /// The texts of the newest `texts.len()` frames kept: of all of them in process; in a room
    /// read from Redis, of those pushed since (until [`Room::load_replay`] gives the rest).
    #[serde(skip)]
    texts: VecDeque<Box<str>>,
}

impl Replay {
    fn len(&self) -> usize {
        self.sizes.len()
    }

    fn push(&mut self, seq: u64, text: &str) {
        if self.sizes.is_empty() {
            self.first_seq = seq;
        }
        let size = kept_bytes(text);
        self.sizes.push_back(size as u32);
        self.bytes += size;
        self.texts.push_back(text.into());
    }

    fn drop_oldest(&mut self) {
        if let Some(size) = self.sizes.pop_front() {
            self.bytes -= size as usize;
            self.first_seq += 1;
            if self.texts.len() > self.sizes.len() {
                self.texts.pop_front();
            }
        }
    }

    fn clear(&mut self) {
        *self = Replay::default();
    }

    /// The seq of the oldest frame kept, or `next` when none is.
    fn oldest_or(&self, next: u64) -> u64 {
        if self.sizes.is_empty() {
            next
        } else {
            self.first_seq
        }
    }

    /// The kept frames after seq `last` with their seqs, or `None` when some of their texts are
    /// not here.
    fn after(&self, last: u64) -> Option<Vec<(u64, String)>> {
        if self.texts.len() < self.sizes.len() {
            return None;
        }
        let skip = ((last + 1).saturating_sub(self.first_seq) as usize).min(self.texts.len());
        let numbered = self.texts.iter().enumerate().skip(skip);
        Some(numbered.map(|(i, text)| (self.first_seq + i as u64, text.to_string())).collect())
    }

    /// Lets go of the kept frames numbered `through` or lower.
    fn drop_through(&mut self, through: u64) {
        while !self.sizes.is_empty() && self.first_seq <= through {
            self.drop_oldest();
        }
    }
}

/// What the hub must do after an input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Send an encoded frame to a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The JSON text.
        text: String,
        /// Its `seq` when it is numbered (kept for replay until [`Room::delivered`]).
        seq: Option<u64>,
    },
    /// Send an `error` frame, then close the connection with the code as its reason.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
    },
    /// Close the connection normally, without an `error` frame (the participant left).
    CloseNormally {
        /// The connection.
        conn: ConnId,
    },
    /// Store this chat message, then call [`Room::chat_stored`] (or [`Room::chat_not_stored`]).
    StoreChat {
        /// Sender.
        from: Role,
        /// The text.
        text: String,
        /// The `seq` the sender gave the frame, to acknowledge it by.
        client_seq: Option<u64>,
    },
    /// Store this quality report of a participant (for the visit's summary).
    StoreQuality {
        /// Who reported it.
        from: Role,
        /// The report.
        report: QualityReport,
    },
    /// Both participants are connected: the call is in progress (first time only).
    MarkInProgress,
    /// The doctor started or stopped sharing the screen.
    SetScreenSharing(bool),
    /// The doctor asked to end the call.
    EndCall,
    /// Call [`Room::grace_expired`] for this connection after the grace period.
    StartGrace {
        /// The role whose connection dropped.
        role: Role,
        /// The dropped connection.
        conn: ConnId,
    },
    /// A frame was relayed to the peer (for metrics).
    Relayed,
    /// A reconnection asked to resume; `resumed`: every missed frame was still kept (for metrics).
    ResumeAsked {
        /// Whether it resumed.
        resumed: bool,
    },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Seat {
    conn: Option<ConnId>,
    /// The connection that most recently held this seat (for the grace period).
    last_conn: Option<ConnId>,
    out_seq: u64,
    replay: Replay,
    last_client_seq: u64,
    /// Client seqs of chat frames being stored, oldest first.
    storing: VecDeque<u64>,
    /// Client seqs of chat frames that could not be stored: accepted again when resent.
    lost: BTreeSet<u64>,
    media: Option<MediaState>,
    /// Quality reports handed to storage (the store bounds them per call as well).
    quality_reports: usize,
}

impl Seat {
    fn forget_replay(&mut self) {
        self.replay.clear();
    }

    /// The client seq up to which every frame is handled: relayed, or stored for chat.
    fn handled_through(&self) -> u64 {
        let first_open = self.storing.iter().chain(&self.lost).copied().min();
        first_open.map_or(self.last_client_seq, |seq| seq - 1)
    }
}

/// One call's signaling state (serializable: with `--redis-url` it lives in Redis between inputs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Room {
    room_id: String,
    status: CallStatus,
    seats: [Seat; 2],
    /// Both are connected and have been told so (the doctor was asked to offer).
    paired: bool,
    waiting_message: Option<String>,
    idle_timeout_seconds: u64,
    ended: bool,
}

fn seat_index(role: Role) -> usize {
    match role {
        Role::Doctor => 0,
        Role::Patient => 1,
    }
}

impl Room {
    /// A room for a call with the given stored status.
    pub fn new(room_id: String, status: CallStatus, idle_timeout_seconds: u64) -> Room {
        Room {
            room_id,
            status,
            seats: Default::default(),
            paired: false,
            waiting_message: None,
            idle_timeout_seconds,
            ended: status == CallStatus::Ended,
        }
    }

    fn seat(&mut self, role: Role) -> &mut Seat {
        &mut self.seats[seat_index(role)]
    }

    /// Whether a role is connected now.
    pub fn is_present(&self, role: Role) -> bool {
        self.seats[seat_index(role)].conn.is_some()
    }

    /// The doctor's waiting-room status, if any.
    pub fn waiting_message(&self) -> Option<&str> {
        self.waiting_message.as_deref()
    }

    /// Whether the patient is in the waiting room now (connected, not in the call): a status
    /// set now is in front of her at once.
    pub fn patient_waiting(&self) -> bool {
        self.is_present(Role::Patient) && !self.paired
    }

    /// Whether the call ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The connection holding a role's seat, if any.
    pub fn connection(&self, role: Role) -> Option<ConnId> {
        self.seats[seat_index(role)].conn
    }

    /// Numbers a frame for a role, keeps it for replay, and sends it if the role is connected.
    fn push(&mut self, to: Role, message: ServerMessage, actions: &mut Vec<Action>) {
        let seat = self.seat(to);
        seat.out_seq += 1;
        let text = encode(&Frame::numbered(seat.out_seq, message));
        if seat.replay.len() == REPLAY_FRAMES {
            seat.replay.drop_oldest();
        }
        seat.replay.push(seat.out_seq, &text);
        if let Some(conn) = seat.conn {
            actions.push(Action::Send { conn, text, seq: Some(seat.out_seq) });
        }
        // Over the room's budget: the larger buffer gives up its oldest frames.
        let [doctor, patient] = &mut self.seats;
        while doctor.replay.bytes + patient.replay.bytes > REPLAY_BYTES_PER_ROOM {
            if doctor.replay.bytes >= patient.replay.bytes {
                doctor.replay.drop_oldest()
            } else {
                patient.replay.drop_oldest()
            }
        }
    }

    /// Whether a role has [`STORING_LIMIT`] chat frames waiting for storage.
    pub fn storing_full(&self, role: Role) -> bool {
        self.seats[seat_index(role)].storing.len() >= STORING_LIMIT
    }

    /// The last seq sent to a role.
    pub fn out_seq(&self, role: Role) -> u64 {
        self.seats[seat_index(role)].out_seq
    }

    /// A role's frames kept for resumption, for a copy kept elsewhere: how many are kept, and
    /// the texts of those numbered after `since` (the newest; their order kept).
    pub fn replay_since(&self, role: Role, since: u64) -> (usize, Vec<&str>) {
        let seat = &self.seats[seat_index(role)];
        let kept = seat.replay.len();
        let new = (seat.out_seq.saturating_sub(since) as usize).min(kept).min(seat.replay.texts.len());
        let texts =
            seat.replay.texts.iter().skip(seat.replay.texts.len() - new).map(|text| &**text).collect();
        (kept, texts)
    }

    /// Gives a room read without its replay texts those of a role (oldest first), before an
    /// input that may resume it. Texts that do not match the kept frames (a copy that was lost)
    /// are not used: the frames are let go, and a resume starts over.
    pub fn load_replay(&mut self, role: Role, texts: Vec<String>) {
        let replay = &mut self.seat(role).replay;
        if texts.len() == replay.len() {
            replay.texts = texts.into_iter().map(String::into_boxed_str).collect();
        } else {
            replay.clear();
        }
    }

    /// Bytes kept for resumption, both roles together.
    pub fn replay_bytes(&self) -> usize {
        self.seats.iter().map(|seat| seat.replay.bytes).sum()
    }

    fn reply(conn: ConnId, message: ServerMessage, actions: &mut Vec<Action>) {
        actions.push(Action::Send { conn, text: encode(&Frame::new(message)), seq: None });
    }

    fn reply_error(conn: ConnId, code: ErrorCode, message: &str, actions: &mut Vec<Action>) {
        Self::reply(conn, ServerMessage::Error { code, message: message.to_owned() }, actions);
    }

    /// A connection of `role` authenticated. Replaces (and closes) an earlier connection of the same
    /// role, answers `joined`, replays missed frames when resuming, and admits the patient when the
    /// doctor is in.
    pub fn connect(
        &mut self,
        role: Role,
        conn: ConnId,
        resume_from: Option<u64>,
        chat_history: Vec<ChatMessage>,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.ended {
            actions.push(Action::Close {
                conn,
                code: ErrorCode::CallEnded,
                message: "the call has ended".into(),
            });
            return actions;
        }
        let seat = self.seat(role);
        if let Some(old) = seat.conn.replace(conn) {
            actions.push(Action::Close {
                conn: old,
                code: ErrorCode::Replaced,
                message: "another connection with the same link took over this call".into(),
            });
        }
        seat.last_conn = Some(conn);
        // Resumable when every frame after `last_seq` is still in the buffer.
        let oldest_kept = seat.replay.oldest_or(seat.out_seq + 1);
        let missed = resume_from
            .filter(|last| *last <= seat.out_seq && last + 1 >= oldest_kept)
            .and_then(|last| seat.replay.after(last));
        let resumed = missed.is_some();
        let last_client_seq = seat.handled_through();
        if resume_from.is_some() {
            actions.push(Action::ResumeAsked { resumed });
        }
        let peer_present = self.is_present(role.other());
        let peer_media = self.seats[seat_index(role.other())].media;
        Self::reply(
            conn,
            ServerMessage::Joined {
                role,
                room_id: self.room_id.clone(),
                status: self.status,
                peer_present,
                resumed,
                chat_history,
                peer_media,
                idle_timeout_seconds: self.idle_timeout_seconds,
                last_client_seq,
            },
            &mut actions,
        );
        for (seq, text) in missed.into_iter().flatten() {
            actions.push(Action::Send { conn, text, seq: Some(seq) });
        }
        if peer_present {
            // A resumed connection keeps its peer connection; a fresh one needs a new negotiation.
            if !self.paired || !resumed {
                self.pair(&mut actions);
            }
        } else if role == Role::Patient {
            let message = self.waiting_message.clone();
            self.push(Role::Patient, ServerMessage::Waiting { message }, &mut actions);
        }
        actions
    }

    /// Tells both that the other is in and asks the doctor to make the offer.
    fn pair(&mut self, actions: &mut Vec<Action>) {
        self.paired = true;
        self.push(Role::Patient, ServerMessage::Admitted, actions);
        self.push(
            Role::Patient,
            ServerMessage::PeerJoined { role: Role::Doctor, make_offer: false },
            actions,
        );
        self.push(Role::Doctor, ServerMessage::PeerJoined { role: Role::Patient, make_offer: true }, actions);
        if self.status == CallStatus::Waiting || self.status == CallStatus::NotStarted {
            self.status = CallStatus::InProgress;
            actions.push(Action::MarkInProgress);
        }
    }

    /// A frame from a connection. Frames from a connection that no longer holds its seat are
    /// ignored (it was replaced).
    pub fn frame(&mut self, role: Role, conn: ConnId, frame: Frame<ClientMessage>) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.seats[seat_index(role)].conn != Some(conn) || self.ended {
            return actions;
        }
        let client_seq = frame.seq;
        if matches!(frame.message, ClientMessage::Chat { .. }) && self.storing_full(role) {
            // Not taken: its seq is accepted again when resent, and `joined` stops before it.
            let seat = self.seat(role);
            if let Some(seq) = client_seq.filter(|seq| *seq > seat.last_client_seq) {
                seat.lost.insert(seq);
                seat.last_client_seq = seq;
            }
            let message = "chat arrives faster than it can be stored: send it again in a moment";
            Self::reply_error(conn, ErrorCode::RateLimited, message, &mut actions);
            return actions;
        }
        if let Some(seq) = client_seq {
            let seat = self.seat(role);
            if seq <= seat.last_client_seq && !seat.lost.remove(&seq) {
                return actions; // a resend of a frame already handled
            }
            seat.last_client_seq = seat.last_client_seq.max(seq);
        }
        let peer = role.other();
        let relayed = match frame.message {
            ClientMessage::Offer(sdp) => Some(ServerMessage::Offer { from: role, sdp: sdp.sdp }),
            ClientMessage::Answer(sdp) => Some(ServerMessage::Answer { from: role, sdp: sdp.sdp }),
            ClientMessage::IceCandidate(candidate) => {
                Some(ServerMessage::IceCandidate { from: role, candidate })
            }
            ClientMessage::MediaState(state) => {
                self.seat(role).media = Some(state);
                Some(ServerMessage::MediaState { from: role, state })
            }
            ClientMessage::Quality(report) => {
                let seat = self.seat(role);
                if seat.quality_reports < QUALITY_REPORTS_PER_ROLE {
                    seat.quality_reports += 1;
                    actions.push(Action::StoreQuality { from: role, report: report.clone() });
                }
                Some(ServerMessage::Quality { from: role, report })
            }
            ClientMessage::ScreenShare { active, stream_id } => {
                if role != Role::Doctor {
                    Self::reply_error(
                        conn,
                        ErrorCode::Forbidden,
                        "only the doctor can share a screen",
                        &mut actions,
                    );
                    return actions;
                }
                if stream_id.as_deref().is_some_and(|id| !valid_stream_id(id)) {
                    let message = "a screen-share stream_id is 1 to 64 token characters (an SDP msid id)";
                    Self::reply_error(conn, ErrorCode::InvalidFrame, message, &mut actions);
                    return actions;
                }
                actions.push(Action::SetScreenSharing(active));
                Some(ServerMessage::ScreenShare { from: role, active, stream_id })
            }
            ClientMessage::Examination { active } => {
                if role != Role::Doctor {
                    let message = "only the doctor can start the examination mode";
                    Self::reply_error(conn, ErrorCode::Forbidden, message, &mut actions);
                    return actions;
                }
                Some(ServerMessage::Examination { from: role, active })
            }
            ClientMessage::Chat { text } => {
                let text = text.trim();
                if text.is_empty() || text.chars().count() > MAX_CHAT_CHARS {
                    let message = format!("a chat message must have 1 to {MAX_CHAT_CHARS} characters");
                    Self::reply_error(conn, ErrorCode::InvalidFrame, &message, &mut actions);
                } else {
                    self.seat(role).storing.extend(client_seq);
                    actions.push(Action::StoreChat { from: role, text: text.to_owned(), client_seq });
                }
                None
            }
            ClientMessage::WaitingMessage { text } => {
                if role != Role::Doctor {
                    Self::reply_error(
                        conn,
                        ErrorCode::Forbidden,
                        "only the doctor can post a waiting-room status",
                        &mut actions,
                    );
                } else if text.chars().count() > MAX_WAITING_MESSAGE_CHARS {
                    let message =
                        format!("a waiting-room status has at most {MAX_WAITING_MESSAGE_CHARS} characters");
                    Self::reply_error(conn, ErrorCode::InvalidFrame, &message, &mut actions);
                } else {
                    actions.extend(self.set_waiting_message(&text));
                }
                None
            }
            ClientMessage::EndCall => {
                if role == Role::Doctor {
                    actions.push(Action::EndCall);
                } else {
                    Self::reply_error(
                        conn,
                        ErrorCode::Forbidden,
                        "only the doctor can end the call; use leave",
                        &mut actions,
                    );
                }
                None
            }
            ClientMessage::Leave => {
                // A participant that left does not resume: nothing is kept for it.
                let seat = self.seat(role);
                seat.conn = None;
                seat.forget_replay();
                actions.push(Action::CloseNormally { conn });
                self.announce_left(role, "left", &mut actions);
                None
            }
            ClientMessage::Ping => {
                Self::reply(conn, ServerMessage::Pong, &mut actions);
                None
            }
            ClientMessage::Join { .. } => {
                Self::reply_error(conn, ErrorCode::InvalidFrame, "already joined", &mut actions);
                None
            }
        };
        if let Some(message) = relayed {
            self.push(peer, message, &mut actions);
            actions.push(Action::Relayed);
        }
        actions
    }

    /// The doctor's status for the waiting room (empty clears it); shown at once to a waiting
    /// patient. Texts longer than [`MAX_WAITING_MESSAGE_CHARS`] are ignored (callers check first).
    pub fn set_waiting_message(&mut self, text: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        if text.chars().count() > MAX_WAITING_MESSAGE_CHARS {
            return actions;
        }
        let text = text.trim();
        self.waiting_message = (!text.is_empty()).then(|| text.to_owned());
        if !self.paired {
            let message = self.waiting_message.clone();
            self.push(Role::Patient, ServerMessage::Waiting { message }, &mut actions);
        }
        actions
    }

    fn announce_left(&mut self, role: Role, reason: &str, actions: &mut Vec<Action>) {
        if self.paired {
            self.paired = false;
            self.seat(role).media = None;
            self.push(role.other(), ServerMessage::PeerLeft { role, reason: reason.to_owned() }, actions);
            if role == Role::Doctor {
                let message = self.waiting_message.clone();
                self.push(Role::Patient, ServerMessage::Waiting { message }, actions);
            }
        }
    }

    /// A chat message was stored: deliver it to both (the sender gets its id this way) and
    /// acknowledge it to the sender by the `seq` it gave the frame.
    pub fn chat_stored(&mut self, message: ChatMessage, client_seq: Option<u64>) -> Vec<Action> {
        let mut actions = Vec::new();
        let from = message.from;
        if let Some(seq) = client_seq {
            self.seat(from).storing.retain(|s| *s != seq);
        }
        if self.ended {
            return actions;
        }
        self.push(Role::Doctor, ServerMessage::Chat(message.clone()), &mut actions);
        self.push(Role::Patient, ServerMessage::Chat(message), &mut actions);
        if let (Some(client_seq), Some(conn)) = (client_seq, self.connection(from)) {
            Self::reply(conn, ServerMessage::Ack { client_seq }, &mut actions);
        }
        actions
    }

    /// A chat message could not be stored. A numbered one is resent by its client: the room
    /// accepts that seq again, and closes the sender's connection so that it reconnects and
    /// resends (`joined.last_client_seq` stops before it). An unnumbered one gets an `error`.
    pub fn chat_not_stored(&mut self, from: Role, client_seq: Option<u64>) -> Vec<Action> {
        let mut actions = Vec::new();
        let seat = self.seat(from);
        let Some(conn) = seat.conn else {
            seat.storing.retain(|s| Some(*s) != client_seq);
            seat.lost.extend(client_seq);
            return actions;
        };
        let message = "a chat message could not be stored; send it again";
        match client_seq {
            Some(seq) => {
                seat.storing.retain(|s| *s != seq);
                seat.lost.insert(seq);
                actions.push(Action::Close { conn, code: ErrorCode::Internal, message: message.into() });
            }
            None => Self::reply_error(conn, ErrorCode::Internal, message, &mut actions),
        }
        actions
    }

    /// A seat nobody held yet in this room starts after the chat its role already stored in
    /// this call (`stored_through`: the highest stored `client_seq`). So a room made afresh (after
    /// a restart, an eviction, a Redis loss) tells a client that numbers from 1 again to renumber
    /// above them (`joined.last_client_seq`), and the store never takes a new message for a
    /// stored one with the same number.
    pub fn chat_stored_through(&mut self, role: Role, stored_through: u64) {
        let seat = self.seat(role);
        if seat.last_conn.is_none() {
            seat.last_client_seq = seat.last_client_seq.max(stored_through);
        }
    }

    /// A connection dropped (closed, failed, timed out). The peer hears of it after the grace period.
    pub fn disconnect(&mut self, role: Role, conn: ConnId) -> Vec<Action> {
        let seat = self.seat(role);
        if seat.conn != Some(conn) {
            return Vec::new();
        }
        seat.conn = None;
        vec![Action::StartGrace { role, conn }]
    }

    /// The grace period after a drop ended: if nobody came back, tell the peer.
    pub fn grace_expired(&mut self, role: Role, conn: ConnId) -> Vec<Action> {
        let mut actions = Vec::new();
        let seat = &self.seats[seat_index(role)];
        if seat.conn.is_none() && seat.last_conn == Some(conn) && !self.ended {
            self.announce_left(role, "disconnected", &mut actions);
        }
        actions
    }

    /// The connection whose drop the peer has not heard of yet (a grace period runs for it
    /// somewhere): for the node that finds the node running that grace period dead.
    pub fn unannounced_drop(&self, role: Role) -> Option<ConnId> {
        let seat = &self.seats[seat_index(role)];
        (seat.conn.is_none() && self.paired && !self.ended).then_some(seat.last_conn).flatten()
    }

    /// A participant that dropped this connection stayed away too long to resume: its frames
    /// are let go (a later join starts over with `resumed: false`).
    pub fn forget_replay(&mut self, role: Role, conn: ConnId) {
        let seat = self.seat(role);
        if seat.conn.is_none() && seat.last_conn == Some(conn) {
            seat.forget_replay();
        }
    }

    /// The client on this connection has received every frame numbered `through` or lower (its
    /// WebSocket answered a ping sent after them): they need not be kept for a resume any more.
    /// Ignored for a connection that no longer holds the seat, and for seqs not sent yet.
    pub fn delivered(&mut self, role: Role, conn: ConnId, through: u64) {
        let seat = self.seat(role);
        if seat.conn == Some(conn) {
            let through = through.min(seat.out_seq);
            seat.replay.drop_through(through);
        }
    }

    /// Whether the room holds nothing worth keeping once no participant can still resume (the
    /// hub knows that: no grace timer runs): nobody connected, no chat being stored, no
    /// waiting-room status. The hub lets such a room go; a later join makes a fresh one from the
    /// stored call (its frames start again at `seq` 1, so an old `resume` gets `resumed: false`).
    pub fn is_idle(&self) -> bool {
        self.waiting_message.is_none()
            && self.seats.iter().all(|seat| seat.conn.is_none() && seat.storing.is_empty())
    }

    /// The call ended: everyone gets `call-ended` and is disconnected; nobody can join again, so
    /// nothing is kept for resumption.
    pub fn end(&mut self, ended_by: Option<Role>, duration_seconds: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.ended {
            return actions;
        }
        for role in [Role::Doctor, Role::Patient] {
            self.push(role, ServerMessage::CallEnded { ended_by, duration_seconds }, &mut actions);
            if let Some(conn) = self.seat(role).conn.take() {
                actions.push(Action::Close {
                    conn,
                    code: ErrorCode::CallEnded,
                    message: "the call has ended".into(),
                });
            }
        }
        self.ended = true;
        self.status = CallStatus::Ended;
        self.paired = false;
        self.seats.iter_mut().for_each(Seat::forget_replay);
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use televisit_protocol::{IceCandidate, Sdp};

    fn sent(actions: &[Action], to: ConnId) -> Vec<serde_json::Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { conn, text, .. } if *conn == to => Some(serde_json::from_str(text).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn types(frames: &[serde_json::Value]) -> Vec<&str> {
        frames.iter().map(|f| f["type"].as_str().unwrap()).collect()
    }

    fn room() -> Room {
        Room::new("room-1".into(), CallStatus::Waiting, 45)
    }

    const DOCTOR: ConnId = 1;
    const PATIENT: ConnId = 2;

    #[test]
    fn a_patient_who_arrives_first_waits_until_the_doctor_is_in() {
        let mut room = room();
        let actions = room.connect(Role::Patient, PATIENT, None, vec![]);
        assert_eq!(types(&sent(&actions, PATIENT)), ["joined", "waiting"]);

        let actions = room.connect(Role::Doctor, DOCTOR, None, vec![]);
        assert_eq!(types(&sent(&actions, PATIENT)), ["admitted", "peer-joined"]);
        let doctor = sent(&actions, DOCTOR);
        assert_eq!(types(&doctor), ["joined", "peer-joined"]);
        assert_eq!(doctor[1]["make_offer"], true);
        assert!(actions.contains(&Action::MarkInProgress));
    }

    #[test]
    fn the_doctors_status_reaches_the_waiting_patient() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        assert!(room.patient_waiting());
        let frames = sent(&room.set_waiting_message("Running 10 minutes late"), PATIENT);
        assert_eq!(types(&frames), ["waiting"]);
        assert_eq!(frames[0]["message"], "Running 10 minutes late");
        assert_eq!(room.waiting_message(), Some("Running 10 minutes late"));
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        assert!(!room.patient_waiting(), "in the call: the waiting room is not in front of her");
        let too_long = "x".repeat(MAX_WAITING_MESSAGE_CHARS + 1);
        assert!(room.set_waiting_message(&too_long).is_empty());
    }

    #[test]
    fn a_status_posted_before_the_patient_arrives_is_shown_in_the_waiting_room() {
        let mut room = room();
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        room.frame(Role::Doctor, DOCTOR, Frame::new(ClientMessage::WaitingMessage { text: "5 min".into() }));
        room.frame(Role::Doctor, DOCTOR, Frame::new(ClientMessage::Leave));
        let frames = sent(&room.connect(Role::Patient, PATIENT, None, vec![]), PATIENT);
        assert_eq!(frames[1]["type"], "waiting");
        assert_eq!(frames[1]["message"], "5 min");
    }

    #[test]
    fn a_leave_closes_normally_and_the_peer_hears_it() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        let actions = room.frame(Role::Patient, PATIENT, Frame::new(ClientMessage::Leave));
        assert!(actions.contains(&Action::CloseNormally { conn: PATIENT }), "{actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, Action::Close { .. })), "no error frame: {actions:?}");
        let to_doctor = sent(&actions, DOCTOR);
        assert_eq!((&to_doctor[0]["type"], &to_doctor[0]["reason"]), (&"peer-left".into(), &"left".into()));
    }

    #[test]
    fn sdp_and_candidates_go_only_to_the_other_participant() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        let actions =
            room.frame(Role::Doctor, DOCTOR, Frame::new(ClientMessage::Offer(Sdp { sdp: "v=0".into() })));
        assert!(sent(&actions, DOCTOR).is_empty());
        let frames = sent(&actions, PATIENT);
        assert_eq!(frames[0]["type"], "offer");
        assert_eq!(frames[0]["from"], "doctor");
        let candidate = IceCandidate {
            candidate: "candidate:1".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
        };
        let actions = room.frame(Role::Patient, PATIENT, Frame::new(ClientMessage::IceCandidate(candidate)));
        assert_eq!(types(&sent(&actions, DOCTOR)), ["ice-candidate"]);
        assert!(sent(&actions, PATIENT).is_empty());
    }

    #[test]
    fn a_patient_cannot_share_a_screen_start_an_examination_or_end_the_call() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        for message in [
            ClientMessage::ScreenShare { active: true, stream_id: None },
            ClientMessage::Examination { active: true },
            ClientMessage::EndCall,
        ] {
            let actions = room.frame(Role::Patient, PATIENT, Frame::new(message));
            let frames = sent(&actions, PATIENT);
            assert_eq!(frames[0]["code"], "forbidden");
            assert!(sent(&actions, DOCTOR).is_empty());
            assert!(!actions.iter().any(|a| matches!(a, Action::SetScreenSharing(_) | Action::EndCall)));
        }
        let share = |stream_id: &str| {
            let stream_id = Some(stream_id.to_owned());
            Frame::new(ClientMessage::ScreenShare { active: true, stream_id })
        };
        let actions = room.frame(Role::Doctor, DOCTOR, share("bad id"));
        assert_eq!(sent(&actions, DOCTOR)[0]["code"], "invalid_frame");
        assert!(sent(&actions, PATIENT).is_empty(), "an invalid stream id is not relayed");
        assert!(!actions.contains(&Action::SetScreenSharing(true)));
        let actions = room.frame(Role::Doctor, DOCTOR, share("{5b0c-77}"));
        assert!(actions.contains(&Action::SetScreenSharing(true)));
        assert_eq!(sent(&actions, PATIENT)[0]["type"], "screen-share");
        assert_eq!(
            sent(&actions, PATIENT)[0]["stream_id"],
            "{5b0c-77}",
            "the track role reaches the patient"
        );
        let actions =
            room.frame(Role::Doctor, DOCTOR, Frame::new(ClientMessage::Examination { active: true }));
        assert_eq!(sent(&actions, PATIENT)[0]["type"], "examination");
        assert_eq!(sent(&actions, PATIENT)[0]["active"], true);
    }

    #[test]
    fn a_resumed_connection_gets_exactly_the_frames_it_missed() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        let actions = room.connect(Role::Doctor, DOCTOR, None, vec![]);
        let last_seen = sent(&actions, PATIENT).last().unwrap()["seq"].as_u64().unwrap();
        room.disconnect(Role::Patient, PATIENT);
        room.frame(Role::Doctor, DOCTOR, Frame::new(ClientMessage::Offer(Sdp { sdp: "v=0".into() })));
        room.frame(
            Role::Doctor,
            DOCTOR,
            Frame::new(ClientMessage::MediaState(MediaState { audio: false, video: true })),
        );

        let frames = sent(&room.connect(Role::Patient, 5, Some(last_seen), vec![]), 5);
        assert_eq!(types(&frames), ["joined", "offer", "media-state"]);
        assert_eq!(frames[0]["resumed"], true);
        assert_eq!(frames[1]["seq"].as_u64().unwrap(), last_seen + 1);
        // Resuming does not restart negotiation, and the grace timer of the old connection is void.
        assert!(room.grace_expired(Role::Patient, PATIENT).is_empty());
    }

    #[test]
    fn a_resent_client_frame_is_relayed_once() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        let chat = Frame::numbered(1, ClientMessage::Chat { text: "hello".into() });
        assert_eq!(room.frame(Role::Patient, PATIENT, chat.clone()).len(), 1);
        assert!(room.frame(Role::Patient, PATIENT, chat).is_empty());
    }

    #[test]
    fn a_second_connection_replaces_the_first() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        let actions = room.connect(Role::Patient, 7, None, vec![]);
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Close { conn: PATIENT, code: ErrorCode::Replaced, .. })));
        assert!(room.frame(Role::Patient, PATIENT, Frame::new(ClientMessage::Ping)).is_empty());
        assert_eq!(types(&sent(&room.frame(Role::Patient, 7, Frame::new(ClientMessage::Ping)), 7)), ["pong"]);
    }

    #[test]
    fn a_drop_is_announced_only_when_the_grace_period_ends_without_return() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        assert_eq!(
            room.disconnect(Role::Patient, PATIENT),
            [Action::StartGrace { role: Role::Patient, conn: PATIENT }]
        );
        assert_eq!(room.unannounced_drop(Role::Patient), Some(PATIENT), "a grace period runs for it");
        assert_eq!(room.unannounced_drop(Role::Doctor), None, "the doctor is connected");
        let frames = sent(&room.grace_expired(Role::Patient, PATIENT), DOCTOR);
        assert_eq!(frames[0]["type"], "peer-left");
        assert_eq!(frames[0]["reason"], "disconnected");
        assert_eq!(room.unannounced_drop(Role::Patient), None, "the doctor heard of it");
        assert!(room.grace_expired(Role::Patient, PATIENT).is_empty(), "announced once");
    }

    #[test]
    fn ending_tells_everyone_and_locks_the_room() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        let actions = room.end(Some(Role::Doctor), 42);
        for conn in [DOCTOR, PATIENT] {
            let frames = sent(&actions, conn);
            assert_eq!(frames[0]["type"], "call-ended");
            assert_eq!(frames[0]["duration_seconds"], 42);
            assert!(actions.iter().any(
                |a| matches!(a, Action::Close { conn: c, code: ErrorCode::CallEnded, .. } if *c == conn)
            ));
        }
        let actions = room.connect(Role::Patient, 9, None, vec![]);
        assert!(matches!(actions[..], [Action::Close { code: ErrorCode::CallEnded, .. }]));
    }

    fn chat(seq: u64, text: &str) -> Frame<ClientMessage> {
        Frame::numbered(seq, ClientMessage::Chat { text: text.into() })
    }

    fn stored(id: i64, from: Role, text: &str) -> ChatMessage {
        ChatMessage { id, from, text: text.into(), sent_at_ms: 0 }
    }

    fn joined_last_client_seq(actions: &[Action], conn: ConnId) -> u64 {
        sent(actions, conn)[0]["last_client_seq"].as_u64().unwrap()
    }

    #[test]
    fn a_chat_is_acknowledged_to_its_sender_only_once_stored() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        let actions = room.frame(Role::Patient, PATIENT, chat(3, "hello"));
        assert_eq!(
            actions,
            [Action::StoreChat { from: Role::Patient, text: "hello".into(), client_seq: Some(3) }]
        );
        let actions = room.chat_stored(stored(17, Role::Patient, "hello"), Some(3));
        assert_eq!(types(&sent(&actions, PATIENT)), ["chat", "ack"]);
        assert_eq!(sent(&actions, PATIENT)[1], serde_json::json!({"type": "ack", "client_seq": 3}));
        assert_eq!(types(&sent(&actions, DOCTOR)), ["chat"]);
    }

    #[test]
    fn joined_counts_no_chat_that_is_not_stored_yet() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        room.frame(Role::Patient, PATIENT, chat(1, "one"));
        room.frame(Role::Patient, PATIENT, chat(2, "two"));
        room.frame(
            Role::Patient,
            PATIENT,
            Frame::numbered(3, ClientMessage::MediaState(MediaState { audio: true, video: false })),
        );
        room.chat_stored(stored(1, Role::Patient, "one"), Some(1));
        room.disconnect(Role::Patient, PATIENT);
        // "two" is still being stored: the client must keep it (and resend from 2).
        let actions = room.connect(Role::Patient, 5, None, vec![]);
        assert_eq!(joined_last_client_seq(&actions, 5), 1);
        // Its resend is a duplicate; the ack comes when it is stored, to the new connection.
        assert!(room.frame(Role::Patient, 5, chat(2, "two")).is_empty());
        let actions = room.chat_stored(stored(2, Role::Patient, "two"), Some(2));
        assert_eq!(sent(&actions, 5)[1], serde_json::json!({"type": "ack", "client_seq": 2}));
        room.disconnect(Role::Patient, 5);
        assert_eq!(joined_last_client_seq(&room.connect(Role::Patient, 6, None, vec![]), 6), 3);
    }

    #[test]
    fn a_chat_that_could_not_be_stored_is_taken_again_when_resent() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        room.frame(Role::Patient, PATIENT, chat(1, "one"));
        room.frame(Role::Patient, PATIENT, chat(2, "two"));
        let actions = room.chat_not_stored(Role::Patient, Some(1));
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Close { conn: PATIENT, code: ErrorCode::Internal, .. })));
        room.chat_stored(stored(1, Role::Patient, "two"), Some(2));
        room.disconnect(Role::Patient, PATIENT);
        assert_eq!(joined_last_client_seq(&room.connect(Role::Patient, 5, None, vec![]), 5), 0);
        assert_eq!(room.frame(Role::Patient, 5, chat(1, "one")).len(), 1, "the resend is stored");
        assert!(room.frame(Role::Patient, 5, chat(2, "two")).is_empty(), "this one was stored");
    }

    #[test]
    fn chat_beyond_the_storing_limit_is_refused_and_not_counted() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        for seq in 1..=STORING_LIMIT as u64 {
            assert_eq!(room.frame(Role::Patient, PATIENT, chat(seq, "x")).len(), 1);
        }
        let refused = room.frame(Role::Patient, PATIENT, chat(STORING_LIMIT as u64 + 1, "x"));
        assert_eq!(sent(&refused, PATIENT)[0]["code"], "rate_limited");
        room.chat_stored(stored(1, Role::Patient, "x"), Some(1));
        // The refused seq was not taken: `joined` stops before it, and sent again it is accepted.
        room.disconnect(Role::Patient, PATIENT);
        let actions = room.connect(Role::Patient, 5, None, vec![]);
        assert_eq!(joined_last_client_seq(&actions, 5), 1);
        assert_eq!(room.frame(Role::Patient, 5, chat(STORING_LIMIT as u64 + 1, "x")).len(), 1);
    }

    /// A room kept in Redis: its state as JSON, and each role's replay texts in a list that each
    /// input brings up to date from [`Room::replay_since`], as the commit script does.
    struct Stored {
        json: String,
        lists: [Vec<String>; 2],
    }

    impl Stored {
        fn apply(&mut self, input: impl FnOnce(&mut Room) -> Vec<Action>) -> Vec<Action> {
            let mut room: Room = serde_json::from_str(&self.json).unwrap();
            let before = [Role::Doctor, Role::Patient].map(|role| room.out_seq(role));
            let actions = input(&mut room);
            for (i, role) in [Role::Doctor, Role::Patient].into_iter().enumerate() {
                let (kept, new) = room.replay_since(role, before[i]);
                self.lists[i].extend(new.iter().map(|text| text.to_string()));
                let trimmed = self.lists[i].len() - kept;
                self.lists[i].drain(..trimmed);
            }
            self.json = serde_json::to_string(&room).unwrap();
            actions
        }
    }

    #[test]
    fn a_room_is_stored_without_its_replay_texts_and_resumes_once_they_are_loaded() {
        let mut stored = Stored { json: serde_json::to_string(&room()).unwrap(), lists: Default::default() };
        stored.apply(|room| room.connect(Role::Patient, PATIENT, None, vec![]));
        stored.apply(|room| room.connect(Role::Doctor, DOCTOR, None, vec![]));
        stored.apply(|room| room.disconnect(Role::Patient, PATIENT));
        let offer = |n: usize| {
            Frame::new(ClientMessage::Offer(Sdp { sdp: format!("offer {n} {}", "v".repeat(3_000)) }))
        };
        for n in 0..30 {
            stored.apply(|room| room.frame(Role::Doctor, DOCTOR, offer(n)));
        }
        assert!(!stored.json.contains("offer 29"), "the room's state holds no frame text");
        assert!(stored.json.len() < 2_000, "{} bytes", stored.json.len());

        // Read back without its texts, the room cannot replay: the resume starts over.
        let mut without: Room = serde_json::from_str(&stored.json).unwrap();
        let frames = sent(&without.connect(Role::Patient, 5, Some(4), vec![]), 5);
        assert_eq!(frames[0]["resumed"], false);

        // With the list, it replays exactly the offers kept after seq 4 (the budget dropped the
        // oldest), in order, and the list follows the room's budget.
        let list = stored.lists[1].clone();
        let mut room: Room = serde_json::from_str(&stored.json).unwrap();
        let oldest: serde_json::Value = serde_json::from_str(&list[0]).unwrap();
        let last_seen = oldest["seq"].as_u64().unwrap() - 1;
        room.load_replay(Role::Patient, list.clone());
        let frames = sent(&room.connect(Role::Patient, 5, Some(last_seen), vec![]), 5);
        assert_eq!(frames[0]["resumed"], true);
        assert_eq!(frames.len() - 1, list.len(), "{:?}", types(&frames));
        assert_eq!(frames.last().unwrap()["sdp"].as_str().unwrap()[..8], *"offer 29");
        assert!(list.len() < 30 && list.len() > 10, "{} kept", list.len());
        let seqs: Vec<u64> = frames[1..].iter().map(|f| f["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

        // A list that lost frames is not used: the resume starts over.
        let mut room: Room = serde_json::from_str(&stored.json).unwrap();
        room.load_replay(Role::Patient, list[1..].to_vec());
        let frames = sent(&room.connect(Role::Patient, 5, Some(last_seen), vec![]), 5);
        assert_eq!(frames[0]["resumed"], false);
        let numbered = frames.iter().filter(|f| f.get("seq").is_some()).count();
        assert_eq!(room.replay_since(Role::Patient, 0).0, numbered, "only what was sent since is kept");
    }

    #[test]
    fn the_replay_buffers_are_bounded_in_bytes_per_room_and_let_go() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        let sdp = "v".repeat(10_000);
        for _ in 0..20 {
            room.frame(Role::Doctor, DOCTOR, Frame::new(ClientMessage::Offer(Sdp { sdp: sdp.clone() })));
            room.frame(Role::Patient, PATIENT, Frame::new(ClientMessage::Answer(Sdp { sdp: sdp.clone() })));
        }
        assert!(room.replay_bytes() <= REPLAY_BYTES_PER_ROOM, "{}", room.replay_bytes());
        assert!(room.replay_bytes() > REPLAY_BYTES_PER_ROOM / 2, "{}", room.replay_bytes());
        // A resume from before the kept frames starts over.
        room.disconnect(Role::Patient, PATIENT);
        let frames = sent(&room.connect(Role::Patient, 5, Some(1), vec![]), 5);
        assert_eq!(frames[0]["resumed"], false);
        // Away longer than a client tries to resume: its frames are let go.
        let before = room.replay_bytes();
        room.disconnect(Role::Patient, 5);
        room.forget_replay(Role::Patient, 5);
        assert!(room.replay_bytes() < before);
        room.end(None, 0);
        assert_eq!(room.replay_bytes(), 0);
    }

    #[test]
    fn frames_a_client_confirmed_are_let_go_and_a_resume_still_gets_exactly_the_rest() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        let offer = |n: usize| Frame::new(ClientMessage::Offer(Sdp { sdp: format!("offer {n}") }));
        let seqs = |actions: &[Action]| -> Vec<u64> {
            actions
                .iter()
                .filter_map(|a| if let Action::Send { seq, .. } = a { *seq } else { None })
                .collect()
        };
        let first = seqs(&room.frame(Role::Doctor, DOCTOR, offer(0)));
        for n in 1..10 {
            room.frame(Role::Doctor, DOCTOR, offer(n));
        }
        let confirmed = room.out_seq(Role::Patient);
        assert_eq!(first, [confirmed - 9], "numbered frames are sent with their seq");
        let kept = room.replay_bytes();

        // A stale connection, and a seq never sent, change nothing.
        room.delivered(Role::Patient, DOCTOR, confirmed);
        assert_eq!(room.replay_bytes(), kept);
        // The patient confirms every frame so far: the room keeps only what comes after.
        room.delivered(Role::Patient, PATIENT, u64::MAX);
        let doctors = room.replay_bytes();
        assert!(doctors < kept, "{doctors} of {kept} kept");
        assert_eq!(room.replay_since(Role::Patient, 0).0, 0);
        room.frame(Role::Doctor, DOCTOR, offer(10));
        room.frame(Role::Doctor, DOCTOR, offer(11));
        room.delivered(Role::Patient, PATIENT, confirmed + 1);
        assert_eq!(room.replay_since(Role::Patient, 0).0, 1);

        // The network goes away; the patient saw up to `confirmed + 1` and gets exactly the rest.
        room.disconnect(Role::Patient, PATIENT);
        let actions = room.connect(Role::Patient, 5, Some(confirmed + 1), vec![]);
        let frames = sent(&actions, 5);
        assert_eq!(frames[0]["resumed"], true);
        assert_eq!(types(&frames), ["joined", "offer"]);
        assert_eq!(frames[1]["sdp"], "offer 11");
        assert_eq!(seqs(&actions), [confirmed + 2], "a replayed frame keeps its seq");
        // One that claims less than it confirmed cannot resume: it starts over.
        room.disconnect(Role::Patient, 5);
        assert_eq!(sent(&room.connect(Role::Patient, 6, Some(confirmed), vec![]), 6)[0]["resumed"], false);
    }

    #[test]
    fn a_room_is_idle_once_nobody_is_in_it_nothing_is_being_stored_and_no_status_is_set() {
        let mut room = room();
        room.connect(Role::Patient, PATIENT, None, vec![]);
        room.connect(Role::Doctor, DOCTOR, None, vec![]);
        room.frame(Role::Patient, PATIENT, chat(1, "one"));
        room.frame(Role::Patient, PATIENT, Frame::new(ClientMessage::Leave));
        assert!(!room.is_idle(), "the doctor is in");
        room.frame(Role::Doctor, DOCTOR, Frame::new(ClientMessage::Leave));
        assert!(!room.is_idle(), "a chat is being stored");
        room.chat_stored(stored(1, Role::Patient, "one"), Some(1));
        assert!(room.is_idle());
        room.set_waiting_message("running late");
        assert!(!room.is_idle(), "the status is shown to the next patient that joins");
    }
}
