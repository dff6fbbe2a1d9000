//! The in-process signaling hub: the rooms, the open connections, and the I/O the rooms ask for.
//!
//! Transports (the WebSocket in `ws.rs`, the HTTP fallback in `http_fallback.rs`) authenticate a
//! participant, then call [`Hub::connect`] and get a channel of [`Outgoing`] frames to write out.
//! Frames are sent while the room is locked, so each participant sees them in `seq` order.
//! Chat goes to the [`ChatWriter`], which stores it in batches and hands each message back.
//! A room leaves the hub when its call ends; a participant's replay buffer is let go when it has
//! been away longer than a client keeps trying to resume (at once when it leaves), and a room
//! with nobody in it and nothing kept leaves the hub then ([`Hub::evict_if_idle`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use televisit_protocol::{CallStatus, ChatMessage, ClientMessage, ErrorCode, Frame, Role};
use tokio::sync::mpsc;

use super::chat_writer::{ChatWriter, PendingChat};
use super::in_order::{GapNotFilled, InOrder};
use super::input::{Applied, RoomInput};
use super::room::{Action, ConnId, Room, QUALITY_REPORTS_PER_ROLE};
use super::shared::{run_inbox, Inbox, NodeMessage, SharedRooms, NODE_HEARTBEAT};
use crate::error::{ApiError, ApiResult};
use crate::metrics::{HubMemory, Metrics};
use crate::secrets::Clock;
use crate::store::{Appointment, AuditEntry, NewChat, Store};

/// Frames queued per connection before it counts as too slow and is dropped (it can resume).
pub const OUTBOX_FRAMES: usize = 1024;

/// What a transport writes to its client.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A JSON text frame.
    Text(String),
    /// A numbered JSON text frame (kept for a resume until the client has it: see
    /// [`Hub::delivered`]).
    Numbered {
        /// Its `seq`.
        seq: u64,
        /// The JSON text.
        text: String,
    },
    /// An `error` frame with this code and message, then close.
    Close {
        /// Why.
        code: ErrorCode,
        /// For people.
        message: String,
    },
    /// A normal end (the participant left): close without an `error` frame.
    CloseNormally,
}

/// A participant admitted by a valid call token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    /// The appointment.
    pub appointment_id: String,
    /// Its signaling room.
    pub room_id: String,
    /// The role the token grants.
    pub role: Role,
    /// The call's stored status when the token was checked.
    pub status: CallStatus,
    /// When the token expires, ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// The client's address (for the audit log only).
    pub remote_addr: Option<String>,
}

/// An open connection of a participant.
pub struct Connection {
    /// Its id.
    pub id: ConnId,
    /// Frames for the client, in order.
    pub outgoing: mpsc::Receiver<Outgoing>,
    /// A sender into the same queue, for replies that do not go through the room. It is weak:
    /// once the hub drops the connection (closed, replaced, or too slow to keep up), the queue
    /// ends after its last frame, the socket closes, and the client resumes on a new one.
    pub reply: mpsc::WeakSender<Outgoing>,
}

/// The signaling hub.
pub struct Hub {
    rooms: Rooms,
    conns: Mutex<HashMap<ConnId, Outbox>>,
    next_conn: AtomicU64,
    /// This node's id in the high half of its connection ids (0 on a single node).
    node_bits: u64,
    store: Store,
    clock: Clock,
    metrics: Arc<Metrics>,
    grace: Duration,
    /// How long a dropped participant's frames are kept for resumption (from the drop).
    resume_window: Duration,
    idle_timeout_seconds: u64,
    chat_writer: ChatWriter,
    /// Woken after each batch of chat is stored.
    chat_stored: tokio::sync::Notify,
}

/// An open connection's queue on this node.
struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    /// With rooms in Redis, the order its numbered frames go out in: they come from this node's
    /// inputs and from other nodes' in any order ([`InOrder`]). In one process they come in order.
    order: Option<InOrder>,
}

/// Where the rooms live: the one interface between the hub and its two deployments.
enum Rooms {
    /// One node (no `--redis-url`): rooms in this process, by appointment.
    Local(Mutex<HashMap<String, Arc<Mutex<Room>>>>),
    /// Several nodes: rooms in Redis, frames between nodes over pub/sub.
    Shared(Arc<SharedRooms>),
}

impl Hub {
    /// A hub over the given store, with its chat writer running (needs a Tokio runtime). With
    /// `shared` (from [`SharedRooms::connect`]) its rooms live in Redis, shared with other nodes.
    pub fn new(
        store: Store,
        clock: Clock,
        metrics: Arc<Metrics>,
        grace: Duration,
        resume_window: Duration,
        idle_timeout_seconds: u64,
        shared: Option<(SharedRooms, Inbox)>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|hub: &std::sync::Weak<Hub>| {
            let (rooms, node_bits) = match shared {
                Some((shared, inbox)) => {
                    tokio::spawn(Hub::watch_nodes(hub.clone()));
                    let (for_messages, for_loss) = (hub.clone(), hub.clone());
                    let on_message = move |message| {
                        if let Some(hub) = for_messages.upgrade() {
                            hub.on_node_message(message);
                        }
                    };
                    // Dropping the senders ends each connection after its queued frames.
                    let lost = move || {
                        if let Some(hub) = for_loss.upgrade() {
                            let closed = hub.conns.lock().expect("conns lock").drain().count();
                            (0..closed).for_each(|_| hub.metrics.connections_closed());
                        }
                    };
                    tokio::spawn(run_inbox(inbox, on_message, lost));
                    let node_bits = u64::from(shared.node()) << 32;
                    (Rooms::Shared(Arc::new(shared)), node_bits)
                }
                None => (Rooms::Local(Mutex::default()), 0),
            };
            Hub {
                rooms,
                conns: Mutex::default(),
                next_conn: AtomicU64::new(1),
                node_bits,
                chat_writer: ChatWriter::start(store.clone(), hub.clone()),
                store,
                clock,
                metrics,
                grace,
                resume_window,
                idle_timeout_seconds,
                chat_stored: tokio::sync::Notify::new(),
            }
        })
    }

    /// The rooms in Redis, when several nodes share them (`--redis-url`).
    pub fn shared(&self) -> Option<&SharedRooms> {
        match &self.rooms {
            Rooms::Shared(shared) => Some(shared),
            Rooms::Local(_) => None,
        }
    }

    /// The server's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The hub's clock, ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn existing_room(&self, appointment_id: &str) -> Option<Arc<Mutex<Room>>> {
        match &self.rooms {
            Rooms::Local(rooms) => rooms.lock().expect("rooms lock").get(appointment_id).cloned(),
            Rooms::Shared(_) => None,
        }
    }

    /// Applies an input to an appointment's room and delivers the frames it sends; returns what
    /// else it did: the actions that need the database or a timer, and its answers. `create`: the
    /// room's id and stored status, to create it from when it is not there (on first use, also
    /// after a restart); `None`: an absent room (the call ended) is left alone and the answer is
    /// `Ok(None)`. With Redis, `replay_of` is the role whose replay buffer the input reads (a
    /// resume), and the input is applied on the node that owns the room.
    async fn apply(
        &self,
        appointment_id: &str,
        create: Option<(&str, CallStatus)>,
        replay_of: Option<Role>,
        input: RoomInput,
    ) -> ApiResult<Option<Applied>> {
        let new_room = |(room_id, status): (&str, CallStatus)| {
            Room::new(room_id.to_owned(), status, self.idle_timeout_seconds)
        };
        let joining = match &input {
            RoomInput::Connect { conn, .. } => Some(*conn),
            _ => None,
        };
        let applied = match &self.rooms {
            Rooms::Local(rooms) => {
                let room = match create {
                    Some(create) => rooms
                        .lock()
                        .expect("rooms lock")
                        .entry(appointment_id.to_owned())
                        .or_insert_with(|| Arc::new(Mutex::new(new_room(create))))
                        .clone(),
                    None => match self.existing_room(appointment_id) {
                        Some(room) => room,
                        None => return Ok(None),
                    },
                };
                let mut room = room.lock().expect("room lock");
                let mut applied = input.apply(&mut room);
                applied.actions = self.deliver(applied.actions);
                return Ok(Some(applied));
            }
            Rooms::Shared(shared) => {
                shared.apply(appointment_id, create.map(new_room), replay_of, input).await
            }
        };
        match applied {
            Ok(applied) => Ok(applied.map(|mut applied| {
                // A join says where its connection's numbered frames start.
                if let (Some(conn), Some(from)) = (joining, applied.joined_from) {
                    self.start_numbering(conn, from);
                }
                applied.actions = self.deliver(applied.actions);
                applied
            })),
            Err(failed) => {
                tracing::error!(error = %failed.error, "Redis: a room input failed");
                let message = "signaling is unavailable; try again";
                let close = |conn| Action::Close { conn, code: ErrorCode::Internal, message: message.into() };
                self.deliver(failed.unsent_to.into_iter().map(close).collect());
                Err(ApiError::new(ErrorCode::Internal, message))
            }
        }
    }

    /// A message from another node: frames for this node's connections, an input for a room
    /// this node owns, or the answer to an input this node forwarded.
    fn on_node_message(self: &Arc<Self>, message: NodeMessage) {
        let Rooms::Shared(shared) = &self.rooms else { return };
        match message {
            NodeMessage::Frames(frames) => {
                let deferred = self.deliver(frames);
                debug_assert!(deferred.is_empty());
            }
            NodeMessage::Reply { id, frames, reply } => {
                let deferred = self.deliver(frames);
                debug_assert!(deferred.is_empty());
                shared.answered(id, reply);
            }
            NodeMessage::Input(forwarded) => {
                // Queued at its room here, in the order the inputs came; applied in a task.
                let serving = shared.serve(forwarded);
                let hub = Arc::clone(self);
                tokio::spawn(async move {
                    let deferred = hub.deliver(serving.await);
                    debug_assert!(deferred.is_empty());
                });
            }
        }
    }

    /// Who is connected to an appointment's room: (doctor, patient).
    pub async fn presence(&self, appointment_id: &str) -> (bool, bool) {
        let of = |room: &Room| (room.is_present(Role::Doctor), room.is_present(Role::Patient));
        match &self.rooms {
            Rooms::Local(_) => self
                .existing_room(appointment_id)
                .map_or((false, false), |room| of(&room.lock().expect("room lock"))),
            Rooms::Shared(shared) => match shared.peek(appointment_id).await {
                Ok(room) => room.as_ref().map_or((false, false), of),
                Err(e) => {
                    tracing::error!(error = %e, "Redis: presence not read");
                    (false, false)
                }
            },
        }
    }

    /// Number of open signaling connections on this node.
    pub fn connection_count(&self) -> usize {
        self.conns.lock().expect("conns lock").len()
    }

    /// Number of rooms in this process's memory (a room leaves when its call ends; with Redis
    /// only those it owns or has inputs for now).
    pub fn room_count(&self) -> usize {
        self.memory().rooms
    }

    /// Rooms in this process's memory and the bytes they keep for resumption (with Redis, the
    /// rooms this node owns; their frames are kept in Redis as well).
    pub fn memory(&self) -> HubMemory {
        let rooms = match &self.rooms {
            Rooms::Local(rooms) => rooms,
            Rooms::Shared(shared) => {
                return HubMemory { rooms: shared.rooms_in_memory(), replay_bytes: shared.replay_bytes() }
            }
        };
        let rooms: Vec<_> = rooms.lock().expect("rooms lock").values().cloned().collect();
        let replay_bytes = rooms.iter().map(|room| room.lock().expect("room lock").replay_bytes()).sum();
        HubMemory { rooms: rooms.len(), replay_bytes }
    }

    /// Admits an authenticated participant to its room.
    pub async fn connect(self: &Arc<Self>, grant: &Grant, resume_from: Option<u64>) -> ApiResult<Connection> {
        // Chat this participant sent before reconnecting is stored first, so the history and
        // `joined.last_client_seq` include it.
        if matches!(&self.rooms, Rooms::Shared(shared) if !shared.is_subscribed()) {
            return Err(ApiError::new(ErrorCode::Internal, "signaling is unavailable; try again"));
        }
        self.chat_writer.flush().await;
        let history = self.metrics.db("chat_history", self.store.chat_history(&grant.appointment_id)).await?;
        let last_chat = self.store.last_chat_seq(&grant.appointment_id, grant.role);
        let stored_through = self.metrics.db("chat_seq", last_chat).await?;
        let id = self.node_bits | self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTBOX_FRAMES);
        let order = matches!(self.rooms, Rooms::Shared(_)).then(InOrder::default);
        self.conns.lock().expect("conns lock").insert(id, Outbox { tx: tx.clone(), order });
        self.metrics.connections_opened();
        let create = Some((grant.room_id.as_str(), grant.status));
        let resuming = resume_from.map(|_| grant.role);
        let join = RoomInput::Connect { role: grant.role, conn: id, resume_from, history, stored_through };
        let connected = self.apply(&grant.appointment_id, create, resuming, join).await;
        let deferred = match connected {
            Ok(applied) => applied.map(|applied| applied.actions).unwrap_or_default(),
            Err(e) => {
                if self.conns.lock().expect("conns lock").remove(&id).is_some() {
                    self.metrics.connections_closed();
                }
                return Err(e);
            }
        };
        self.run(grant, deferred, Instant::now()).await;
        self.audit(grant, "join", if resume_from.is_some() { "resume" } else { "" }).await;
        Ok(Connection { id, outgoing: rx, reply: tx.downgrade() })
    }

    /// A decoded frame from a participant's connection. Refused when the room could not take it:
    /// the connection is closed with the reason too (when it is on this node). With Redis, the
    /// frame's input takes its place in its room's queue in the future's first poll (nothing is
    /// awaited before `SharedRooms::apply`): the WebSocket reader relies on that to keep a
    /// connection's frames in order while several are in flight.
    pub async fn frame(
        self: &Arc<Self>,
        grant: &Grant,
        conn: ConnId,
        frame: Frame<ClientMessage>,
    ) -> ApiResult<()> {
        let arrived = Instant::now();
        self.metrics.frame_received(&frame.message);
        let is_leave = matches!(frame.message, ClientMessage::Leave);
        if let (ClientMessage::Chat { .. }, Some(room)) =
            (&frame.message, self.existing_room(&grant.appointment_id))
        {
            // Backpressure: this participant's frames wait (and its socket is not read) until
            // storage catches up, rather than the room refusing chat.
            loop {
                let stored = self.chat_stored.notified();
                if !room.lock().expect("room lock").storing_full(grant.role) {
                    break;
                }
                stored.await;
            }
        }
        let input = RoomInput::Frame { role: grant.role, conn, frame };
        let applied = self.apply(&grant.appointment_id, None, None, input).await;
        let deferred = match applied {
            Ok(Some(applied)) => applied.actions,
            Ok(None) => return Ok(()), // the call ended
            Err(refusal) => {
                // The room did not take the frame (Redis failed, or the node that owns the room
                // did not answer): close the connection with the reason, so the client resumes
                // and sends again what it has not seen acknowledged, rather than lose the frame
                // without a word.
                let close = Action::Close { conn, code: refusal.code, message: refusal.message.clone() };
                self.deliver(vec![close]);
                return Err(refusal);
            }
        };
        self.run(grant, deferred, arrived).await;
        if is_leave {
            self.evict_if_idle(&grant.appointment_id);
            self.audit(grant, "leave", "").await;
        }
        Ok(())
    }

    /// A participant's connection is gone (closed, failed, idle, replaced).
    pub async fn disconnect(self: &Arc<Self>, grant: &Grant, conn: ConnId) {
        if self.conns.lock().expect("conns lock").remove(&conn).is_some() {
            self.metrics.connections_closed();
        }
        let input = RoomInput::Disconnect { role: grant.role, conn };
        if let Ok(Some(applied)) = self.apply(&grant.appointment_id, None, None, input).await {
            self.run(grant, applied.actions, Instant::now()).await;
        }
    }

    /// The client on a connection has received the frames numbered `through` or lower: the room
    /// lets go of their copies kept for a resume.
    pub async fn delivered(&self, grant: &Grant, conn: ConnId, through: u64) {
        let input = RoomInput::Delivered { role: grant.role, conn, through };
        let _ = self.apply(&grant.appointment_id, None, None, input).await;
    }

    /// The doctor's waiting-room status for an appointment; whether it was delivered, that is
    /// the patient is in the waiting room and it went to her connection (otherwise she sees it
    /// when she opens her link).
    pub async fn set_waiting_message(&self, appointment: &Appointment, text: &str) -> ApiResult<bool> {
        let create = Some((appointment.room_id.as_str(), appointment.status));
        let input = RoomInput::SetWaitingMessage { text: text.to_owned() };
        let applied = self.apply(&appointment.id, create, None, input).await?;
        debug_assert!(applied.as_ref().is_none_or(|applied| applied.actions.is_empty()));
        Ok(applied.is_some_and(|applied| applied.patient_waiting))
    }

    /// The doctor's waiting-room status for an appointment, if one is set.
    pub async fn waiting_message(&self, appointment_id: &str) -> Option<String> {
        let of = |room: &Room| room.waiting_message().map(str::to_owned);
        match &self.rooms {
            Rooms::Local(_) => {
                self.existing_room(appointment_id).and_then(|room| of(&room.lock().expect("room lock")))
            }
            Rooms::Shared(shared) => match shared.peek(appointment_id).await {
                Ok(room) => room.as_ref().and_then(of),
                Err(e) => {
                    tracing::error!(error = %e, "Redis: waiting message not read");
                    None
                }
            },
        }
    }

    /// Ends the call: stores the end and duration, revokes the tokens, tells everyone.
    pub async fn end_call(
        self: &Arc<Self>,
        appointment_id: &str,
        ended_by: Option<Role>,
        remote_addr: Option<String>,
    ) -> ApiResult<i64> {
        let end = self.store.end_call(appointment_id, self.clock.now_ms());
        let Some(appointment) = self.metrics.db("call_state", end).await? else {
            return Err(ApiError::new(ErrorCode::CallEnded, "the call has already ended"));
        };
        let actor = ended_by.map_or("clinic", Role::as_str);
        let entry = AuditEntry::new(self.clock.now_ms(), Some(appointment_id), actor, "end", "", remote_addr);
        self.store.audit(&entry).await?;
        let end = RoomInput::End { ended_by, duration_seconds: appointment.duration_seconds };
        match &self.rooms {
            Rooms::Local(rooms) => {
                let room = rooms.lock().expect("rooms lock").remove(appointment_id);
                if let Some(room) = room {
                    let mut room = room.lock().expect("room lock");
                    let deferred = self.deliver(end.apply(&mut room).actions);
                    debug_assert!(deferred.is_empty());
                }
            }
            // The ended room stays in Redis (without its replay buffers) until it expires, so a
            // late join on any node hears that the call ended.
            Rooms::Shared(_) => {
                self.apply(appointment_id, None, None, end).await?;
            }
        }
        tracing::info!(appointment = %appointment_id, duration_seconds = appointment.duration_seconds, "call ended");
        Ok(appointment.duration_seconds)
    }

    /// Lets an appointment's room go if it is idle ([`Room::is_idle`]) and nothing else holds it:
    /// a connection being admitted, a frame being handled, a grace timer or a chat being stored
    /// each hold a reference, and check again (or keep the room busy) when they are done.
    /// With Redis, rooms are not kept in this process.
    fn evict_if_idle(&self, appointment_id: &str) {
        let Rooms::Local(rooms) = &self.rooms else { return };
        let mut rooms = rooms.lock().expect("rooms lock");
        let idle = rooms
            .get(appointment_id)
            .is_some_and(|room| Arc::strong_count(room) == 1 && room.lock().expect("room lock").is_idle());
        if idle {
            rooms.remove(appointment_id);
        }
    }

    /// The chat writer's outcome for a batch: stored messages (in order), or `None`.
    pub(crate) fn chat_outcome(&self, batch: Vec<PendingChat>, stored: Option<Vec<ChatMessage>>) {
        let mut stored = stored.map(Vec::into_iter);
        for pending in batch {
            let message = stored.as_mut().and_then(Iterator::next);
            let is_stored = message.is_some();
            // A room that left (its call ended) has nothing to deliver.
            let Some(room) = self.existing_room(&pending.chat.appointment_id) else { continue };
            let mut room = room.lock().expect("room lock");
            let actions = match message {
                Some(message) => room.chat_stored(message, pending.chat.client_seq),
                None => room.chat_not_stored(pending.chat.from, pending.chat.client_seq),
            };
            let deferred = self.deliver(actions);
            debug_assert!(deferred.is_empty());
            if is_stored {
                self.metrics.chat_delivered(pending.arrived.elapsed().as_secs_f64());
            }
        }
        self.chat_stored.notify_waiters();
    }

    /// A joining connection's numbered frames start at `next` (with Redis: see [`InOrder`]):
    /// sends those held for it that are now in turn.
    fn start_numbering(&self, conn: ConnId, next: u64) {
        let mut conns = self.conns.lock().expect("conns lock");
        let Some(Outbox { tx, order: Some(order) }) = conns.get_mut(&conn) else { return };
        let ready = order.start(next).into_iter().map(|(seq, text)| Outgoing::Numbered { seq, text });
        if ready.into_iter().try_for_each(|frame| tx.try_send(frame)).is_err() {
            tracing::warn!(conn, "signaling connection too slow; dropping it");
            conns.remove(&conn);
            self.metrics.connections_closed();
        }
    }

    /// Sends and closes now (in one process, with the room locked); returns the actions that
    /// need I/O.
    fn deliver(&self, actions: Vec<Action>) -> Vec<Action> {
        let mut deferred = Vec::new();
        let mut conns = self.conns.lock().expect("conns lock");
        for action in actions {
            match action {
                Action::Send { conn, text, seq } => {
                    let Some(outbox) = conns.get_mut(&conn) else { continue };
                    let ready = match (seq, &mut outbox.order) {
                        (None, _) => Ok(vec![Outgoing::Text(text)]),
                        (Some(seq), None) => Ok(vec![Outgoing::Numbered { seq, text }]),
                        (Some(seq), Some(order)) => order.arrive(seq, text).map(|ready| {
                            ready.into_iter().map(|(seq, text)| Outgoing::Numbered { seq, text }).collect()
                        }),
                    };
                    let sent = match ready {
                        Ok(ready) => ready
                            .into_iter()
                            .try_for_each(|frame| outbox.tx.try_send(frame))
                            .map_err(|_| "signaling connection too slow; dropping it"),
                        Err(GapNotFilled) => Err("a gap in a connection's frames did not fill; dropping it"),
                    };
                    if let Err(why) = sent {
                        // The client resumes from its last seq.
                        tracing::warn!(conn, "{why}");
                        conns.remove(&conn);
                        self.metrics.connections_closed();
                    }
                }
                Action::Close { conn, code, message } => {
                    if let Some(outbox) = conns.remove(&conn) {
                        self.metrics.connections_closed();
                        let _ = outbox.tx.try_send(Outgoing::Close { code, message });
                    }
                }
                Action::CloseNormally { conn } => {
                    if let Some(outbox) = conns.remove(&conn) {
                        self.metrics.connections_closed();
                        let _ = outbox.tx.try_send(Outgoing::CloseNormally);
                    }
                }
                Action::Relayed => self.metrics.frame_relayed(),
                Action::ResumeAsked { resumed } => self.metrics.resume(resumed),
                other => deferred.push(other),
            }
        }
        deferred
    }

    /// Carries out the actions that need the database or a timer.
    /// `arrived`: when the frame that led to these actions arrived (for the chat's latency).
    async fn run(self: &Arc<Self>, grant: &Grant, mut actions: Vec<Action>, arrived: Instant) {
        while let Some(action) = actions.pop() {
            let result: ApiResult<()> = async {
                match action {
                    Action::StoreChat { from, text, client_seq } => {
                        let appointment_id = grant.appointment_id.clone();
                        let chat = NewChat { appointment_id, from, text, client_seq };
                        self.chat_writer.submit(PendingChat { chat, arrived });
                    }
                    Action::StoreQuality { from, report } => {
                        let (id, now) = (&grant.appointment_id, self.clock.now_ms());
                        let limit = QUALITY_REPORTS_PER_ROLE;
                        let add = self.store.add_quality_report(id, from, &report, now, limit);
                        self.metrics.db("quality_report", add).await?;
                    }
                    Action::MarkInProgress => {
                        let mark = self.store.mark_in_progress(&grant.appointment_id, self.clock.now_ms());
                        self.metrics.db("call_state", mark).await?;
                        tracing::info!(appointment = %grant.appointment_id, "call in progress");
                    }
                    Action::SetScreenSharing(active) => {
                        let set = self.store.set_screen_sharing(&grant.appointment_id, active);
                        self.metrics.db("call_state", set).await?;
                        self.audit(
                            grant,
                            if active { "screen_share_start" } else { "screen_share_stop" },
                            "",
                        )
                        .await;
                    }
                    Action::EndCall => {
                        self.end_call(&grant.appointment_id, Some(grant.role), grant.remote_addr.clone())
                            .await?;
                    }
                    Action::StartGrace { role, conn } => {
                        self.start_grace(&grant.appointment_id, role, conn, grant.remote_addr.clone());
                    }
                    Action::Send { .. }
                    | Action::Close { .. }
                    | Action::CloseNormally { .. }
                    | Action::Relayed
                    | Action::ResumeAsked { .. } => {
                        unreachable!("delivered while the room is locked")
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::error!(code = e.code.as_str(), "signaling action failed");
            }
        }
    }

    /// Runs a dropped connection's grace period, then lets its replay buffer go.
    fn start_grace(
        self: &Arc<Self>,
        appointment_id: &str,
        role: Role,
        conn: ConnId,
        remote_addr: Option<String>,
    ) {
        let hub = Arc::clone(self);
        let id = appointment_id.to_owned();
        // In process, the timer holds the room until the resume window ends, so it is not let go
        // (see `evict_if_idle`) while the dropped participant may still resume.
        let held = self.existing_room(appointment_id);
        tokio::spawn(async move {
            tokio::time::sleep(hub.grace).await;
            let expired = hub.apply(&id, None, None, RoomInput::GraceExpired { role, conn }).await;
            debug_assert!(expired.map_or(true, |a| a.is_none_or(|a| a.actions.is_empty())));
            hub.audit_as(&id, role, "leave", "disconnected", remote_addr).await;
            tokio::time::sleep(hub.resume_window.saturating_sub(hub.grace)).await;
            let _ = hub.apply(&id, None, None, RoomInput::ForgetReplay { role, conn }).await;
            drop(held);
            hub.evict_if_idle(&id);
        });
    }

    /// Every few seconds: tells Redis this node lives, and disconnects the connections of nodes
    /// that stopped doing so (died), so their participants get a grace period like any drop.
    async fn watch_nodes(hub: Weak<Hub>) {
        // The first beat was at connect; the hub is built by the second.
        let mut every =
            tokio::time::interval_at(tokio::time::Instant::now() + NODE_HEARTBEAT, NODE_HEARTBEAT);
        loop {
            every.tick().await;
            let Some(hub) = hub.upgrade() else { return };
            let Rooms::Shared(shared) = &hub.rooms else { return };
            let dead = match shared.heartbeat().await {
                Ok(dead) => dead,
                Err(e) => {
                    tracing::error!(error = %e, "Redis: heartbeat failed");
                    continue;
                }
            };
            for (node, appointments) in dead {
                tracing::warn!(
                    node,
                    rooms = appointments.len(),
                    "a signaling node died; its participants are dropped"
                );
                for appointment_id in appointments {
                    let drop_dead = RoomInput::DropNode { node };
                    let Ok(Some(applied)) = hub.apply(&appointment_id, None, None, drop_dead).await else {
                        continue;
                    };
                    for action in applied.actions {
                        if let Action::StartGrace { role, conn } = action {
                            hub.start_grace(&appointment_id, role, conn, None);
                        }
                    }
                }
            }
        }
    }

    async fn audit(&self, grant: &Grant, action: &str, detail: &str) {
        self.audit_as(&grant.appointment_id, grant.role, action, detail, grant.remote_addr.clone()).await;
    }

    async fn audit_as(
        &self,
        appointment_id: &str,
        role: Role,
        action: &str,
        detail: &str,
        remote_addr: Option<String>,
    ) {
        let entry = AuditEntry::new(
            self.clock.now_ms(),
            Some(appointment_id),
            role.as_str(),
            action,
            detail,
            remote_addr,
        );
        if let Err(e) = self.metrics.db("audit", self.store.audit(&entry)).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }
}
