//! The inputs a room takes, as values (sans-I/O): the hub applies them to a room in its memory, and
//! with Redis a node forwards them to the node that owns the room ([`super::shared`]), so they
//! are serializable.

use serde::{Deserialize, Serialize};
use televisit_protocol::{ChatMessage, ClientMessage, Frame, Role};

use super::room::{node_of, Action, ConnId, Room};

/// One input to a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RoomInput {
    /// An authenticated connection of a role joins ([`Room::connect`]), after `stored_through`
    /// of its chat was stored ([`Room::chat_stored_through`]).
    Connect {
        /// Its role.
        role: Role,
        /// The connection.
        conn: ConnId,
        /// `resume.last_seq`, when it resumes.
        resume_from: Option<u64>,
        /// The call's stored chat, for a fresh join.
        history: Vec<ChatMessage>,
        /// The highest `client_seq` of the role's stored chat.
        stored_through: u64,
    },
    /// A decoded frame from a connection ([`Room::frame`]).
    Frame {
        /// The sender's role.
        role: Role,
        /// Its connection.
        conn: ConnId,
        /// The frame.
        frame: Frame<ClientMessage>,
    },
    /// A connection is gone ([`Room::disconnect`]).
    Disconnect {
        /// Its role.
        role: Role,
        /// The connection.
        conn: ConnId,
    },
    /// The client has the frames numbered `through` or lower ([`Room::delivered`]).
    Delivered {
        /// Its role.
        role: Role,
        /// Its connection.
        conn: ConnId,
        /// The last seq it has.
        through: u64,
    },
    /// The doctor's waiting-room status ([`Room::set_waiting_message`]).
    SetWaitingMessage {
        /// The status.
        text: String,
    },
    /// The call ended ([`Room::end`]).
    End {
        /// Who ended it (`None`: the clinic, through the API).
        ended_by: Option<Role>,
        /// The call's length.
        duration_seconds: i64,
    },
    /// A dropped connection's grace period ran out ([`Room::grace_expired`]).
    GraceExpired {
        /// Its role.
        role: Role,
        /// The connection.
        conn: ConnId,
    },
    /// A dropped participant stayed away too long to resume ([`Room::forget_replay`]).
    ForgetReplay {
        /// Its role.
        role: Role,
        /// The connection.
        conn: ConnId,
    },
    /// A node died: its connections in the room are dropped, and the grace period of one that
    /// had dropped before (whose timer died with the node) runs again.
    DropNode {
        /// The node (the high half of its connection ids).
        node: u32,
    },
}

/// What an input did, besides changing the room.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    /// What the hub must do: send, close, store, time.
    pub actions: Vec<Action>,
    /// For a join: the seq its connection's numbered frames start at (with Redis, see
    /// [`super::in_order::InOrder::start`]); `None` when the join did not take the seat.
    pub joined_from: Option<u64>,
    /// For a waiting-room status: whether the patient is in the waiting room, so it reached her.
    pub patient_waiting: bool,
}

impl RoomInput {
    /// Applies the input to the room.
    pub fn apply(self, room: &mut Room) -> Applied {
        let mut applied = Applied::default();
        applied.actions = match self {
            RoomInput::Connect { role, conn, resume_from, history, stored_through } => {
                room.chat_stored_through(role, stored_through);
                let actions = room.connect(role, conn, resume_from, history);
                if room.connection(role) == Some(conn) {
                    let first = actions.iter().find_map(|action| match action {
                        Action::Send { conn: to, seq: Some(seq), .. } if *to == conn => Some(*seq),
                        _ => None,
                    });
                    applied.joined_from = Some(first.unwrap_or(room.out_seq(role) + 1));
                }
                actions
            }
            RoomInput::Frame { role, conn, frame } => room.frame(role, conn, frame),
            RoomInput::Disconnect { role, conn } => room.disconnect(role, conn),
            RoomInput::Delivered { role, conn, through } => {
                room.delivered(role, conn, through);
                Vec::new()
            }
            RoomInput::SetWaitingMessage { text } => {
                let actions = room.set_waiting_message(&text);
                applied.patient_waiting = room.patient_waiting();
                actions
            }
            RoomInput::End { ended_by, duration_seconds } => room.end(ended_by, duration_seconds),
            RoomInput::GraceExpired { role, conn } => room.grace_expired(role, conn),
            RoomInput::ForgetReplay { role, conn } => {
                room.forget_replay(role, conn);
                Vec::new()
            }
            RoomInput::DropNode { node } => {
                let on_node = |conn: &ConnId| node_of(*conn) == node;
                let mut actions = Vec::new();
                for role in [Role::Doctor, Role::Patient] {
                    if let Some(conn) = room.connection(role).filter(on_node) {
                        actions.extend(room.disconnect(role, conn));
                    } else if let Some(conn) = room.unannounced_drop(role).filter(on_node) {
                        actions.push(Action::StartGrace { role, conn });
                    }
                }
                actions
            }
        };
        applied
    }
}
