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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use televisit_core::protocol::{CallStatus, ChatMessage, ClientMessage, ErrorCode, Frame, Role};
use tokio::sync::mpsc;

use super::chat_writer::{ChatWriter, PendingChat};
use super::room::{Action, ConnId, Room, QUALITY_REPORTS_PER_ROLE};
use crate::error::{ApiError, ApiResult};
use crate::metrics::{HubMemory, Metrics};
use crate::secrets::Clock;
use crate::store::{Appointment, AuditEntry, NewChat, Store};

/// Frames queued per connection before it counts as too slow and is dropped (it can resume).
const OUTBOX_FRAMES: usize = 1024;

/// How long a dropped participant's frames are kept for resumption: as long as the core keeps
/// trying to reconnect (`SIGNALING_GIVE_UP_MS`).
const REPLAY_KEPT_AFTER_DROP: Duration = Duration::from_secs(60);

/// What a transport writes to its client.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A JSON text frame.
    Text(String),
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
#[derive(Debug, Clone)]
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
    rooms: Mutex<HashMap<String, Arc<Mutex<Room>>>>,
    conns: Mutex<HashMap<ConnId, mpsc::Sender<Outgoing>>>,
    next_conn: AtomicU64,
    store: Store,
    clock: Clock,
    metrics: Arc<Metrics>,
    grace: Duration,
    idle_timeout_seconds: u64,
    chat_writer: ChatWriter,
    /// Woken after each batch of chat is stored.
    chat_stored: tokio::sync::Notify,
}

impl Hub {
    /// A hub over the given store, with its chat writer running (needs a Tokio runtime).
    pub fn new(
        store: Store,
        clock: Clock,
        metrics: Arc<Metrics>,
        grace: Duration,
        idle_timeout_seconds: u64,
    ) -> Arc<Self> {
        Arc::new_cyclic(|hub| Hub {
            rooms: Mutex::default(),
            conns: Mutex::default(),
            next_conn: AtomicU64::new(1),
            chat_writer: ChatWriter::start(store.clone(), hub.clone()),
            store,
            clock,
            metrics,
            grace,
            idle_timeout_seconds,
            chat_stored: tokio::sync::Notify::new(),
        })
    }

    /// The server's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The hub's clock, ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn room(&self, grant: &Grant) -> Arc<Mutex<Room>> {
        self.room_for(&grant.appointment_id, &grant.room_id, grant.status)
    }

    /// The appointment's room, created from its stored state on first use (also after a restart).
    fn room_for(&self, appointment_id: &str, room_id: &str, status: CallStatus) -> Arc<Mutex<Room>> {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        rooms
            .entry(appointment_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Room::new(room_id.to_owned(), status, self.idle_timeout_seconds)))
            })
            .clone()
    }

    fn existing_room(&self, appointment_id: &str) -> Option<Arc<Mutex<Room>>> {
        self.rooms.lock().expect("rooms lock").get(appointment_id).cloned()
    }

    /// Who is connected to an appointment's room: (doctor, patient).
    pub fn presence(&self, appointment_id: &str) -> (bool, bool) {
        self.existing_room(appointment_id).map_or((false, false), |room| {
            let room = room.lock().expect("room lock");
            (room.is_present(Role::Doctor), room.is_present(Role::Patient))
        })
    }

    /// Number of open signaling connections.
    pub fn connection_count(&self) -> usize {
        self.conns.lock().expect("conns lock").len()
    }

    /// Number of rooms in memory (a room leaves when its call ends).
    pub fn room_count(&self) -> usize {
        self.rooms.lock().expect("rooms lock").len()
    }

    /// Rooms in memory and the bytes they keep for resumption.
    pub fn memory(&self) -> HubMemory {
        let rooms: Vec<_> = self.rooms.lock().expect("rooms lock").values().cloned().collect();
        let replay_bytes = rooms.iter().map(|room| room.lock().expect("room lock").replay_bytes()).sum();
        HubMemory { rooms: rooms.len(), replay_bytes }
    }

    /// Admits an authenticated participant to its room.
    pub async fn connect(self: &Arc<Self>, grant: &Grant, resume_from: Option<u64>) -> ApiResult<Connection> {
        // Chat this participant sent before reconnecting is stored first, so the history and
        // `joined.last_client_seq` include it.
        self.chat_writer.flush().await;
        let history = self.metrics.db("chat_history", self.store.chat_history(&grant.appointment_id)).await?;
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTBOX_FRAMES);
        self.conns.lock().expect("conns lock").insert(id, tx.clone());
        self.metrics.connections_opened();
        let room = self.room(grant);
        let deferred = {
            let mut room = room.lock().expect("room lock");
            let actions = room.connect(grant.role, id, resume_from, history);
            self.deliver(actions)
        };
        self.run(grant, &room, deferred).await;
        self.audit(grant, "join", if resume_from.is_some() { "resume" } else { "" }).await;
        Ok(Connection { id, outgoing: rx, reply: tx.downgrade() })
    }

    /// A decoded frame from a participant's connection.
    pub async fn frame(self: &Arc<Self>, grant: &Grant, conn: ConnId, frame: Frame<ClientMessage>) {
        let Some(room) = self.existing_room(&grant.appointment_id) else {
            return; // the call ended
        };
        self.metrics.frame_received(&frame.message);
        let is_leave = matches!(frame.message, ClientMessage::Leave);
        if matches!(frame.message, ClientMessage::Chat { .. }) {
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
        let deferred = {
            let mut room = room.lock().expect("room lock");
            self.deliver(room.frame(grant.role, conn, frame))
        };
        self.run(grant, &room, deferred).await;
        if is_leave {
            drop(room);
            self.evict_if_idle(&grant.appointment_id);
            self.audit(grant, "leave", "").await;
        }
    }

    /// A participant's connection is gone (closed, failed, idle, replaced).
    pub async fn disconnect(self: &Arc<Self>, grant: &Grant, conn: ConnId) {
        if self.conns.lock().expect("conns lock").remove(&conn).is_some() {
            self.metrics.connections_closed();
        }
        let Some(room) = self.existing_room(&grant.appointment_id) else {
            return; // the call ended
        };
        let deferred = {
            let mut room = room.lock().expect("room lock");
            self.deliver(room.disconnect(grant.role, conn))
        };
        self.run(grant, &room, deferred).await;
    }

    /// The doctor's waiting-room status for an appointment; whether it was delivered, that is
    /// the patient is in the waiting room and it went to her connection (otherwise she sees it
    /// when she opens her link).
    pub fn set_waiting_message(&self, appointment: &Appointment, text: &str) -> bool {
        let room = self.room_for(&appointment.id, &appointment.room_id, appointment.status);
        let mut room = room.lock().expect("room lock");
        let deferred = self.deliver(room.set_waiting_message(text));
        debug_assert!(deferred.is_empty());
        room.patient_waiting()
    }

    /// The doctor's waiting-room status for an appointment, if one is set.
    pub fn waiting_message(&self, appointment_id: &str) -> Option<String> {
        let room = self.existing_room(appointment_id)?;
        let room = room.lock().expect("room lock");
        room.waiting_message().map(str::to_owned)
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
        let room = self.rooms.lock().expect("rooms lock").remove(appointment_id);
        if let Some(room) = room {
            let mut room = room.lock().expect("room lock");
            let deferred = self.deliver(room.end(ended_by, appointment.duration_seconds));
            debug_assert!(deferred.is_empty());
        }
        tracing::info!(appointment = %appointment_id, duration_seconds = appointment.duration_seconds, "call ended");
        Ok(appointment.duration_seconds)
    }

    /// Lets an appointment's room go if it is idle ([`Room::is_idle`]) and nothing else holds it:
    /// a connection being admitted, a frame being handled, a grace timer or a chat being stored
    /// each hold a reference, and check again (or keep the room busy) when they are done.
    fn evict_if_idle(&self, appointment_id: &str) {
        let mut rooms = self.rooms.lock().expect("rooms lock");
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
            let mut room = pending.room.lock().expect("room lock");
            let actions = match message {
                Some(message) => room.chat_stored(message, pending.client_seq),
                None => room.chat_not_stored(pending.chat.from, pending.client_seq),
            };
            let deferred = self.deliver(actions);
            debug_assert!(deferred.is_empty());
        }
        self.chat_stored.notify_waiters();
    }

    /// Sends and closes now (the room is locked); returns the actions that need I/O.
    fn deliver(&self, actions: Vec<Action>) -> Vec<Action> {
        let mut deferred = Vec::new();
        let mut conns = self.conns.lock().expect("conns lock");
        for action in actions {
            match action {
                Action::Send { conn, text } => {
                    if let Some(tx) = conns.get(&conn) {
                        if tx.try_send(Outgoing::Text(text)).is_err() {
                            // Too slow or gone: drop it; the client resumes from its last seq.
                            tracing::warn!(conn, "signaling connection too slow; dropping it");
                            conns.remove(&conn);
                            self.metrics.connections_closed();
                        }
                    }
                }
                Action::Close { conn, code, message } => {
                    if let Some(tx) = conns.remove(&conn) {
                        self.metrics.connections_closed();
                        let _ = tx.try_send(Outgoing::Close { code, message });
                    }
                }
                Action::CloseNormally { conn } => {
                    if let Some(tx) = conns.remove(&conn) {
                        self.metrics.connections_closed();
                        let _ = tx.try_send(Outgoing::CloseNormally);
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
    async fn run(self: &Arc<Self>, grant: &Grant, room: &Arc<Mutex<Room>>, mut actions: Vec<Action>) {
        while let Some(action) = actions.pop() {
            let result: ApiResult<()> = async {
                match action {
                    Action::StoreChat { from, text, client_seq } => {
                        let chat = NewChat { appointment_id: grant.appointment_id.clone(), from, text };
                        self.chat_writer.submit(PendingChat { room: Arc::clone(room), chat, client_seq });
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
                        let hub = Arc::clone(self);
                        let room = Arc::clone(room);
                        let grant = grant.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(hub.grace).await;
                            let deferred = {
                                let mut room = room.lock().expect("room lock");
                                hub.deliver(room.grace_expired(role, conn))
                            };
                            debug_assert!(deferred.is_empty());
                            hub.audit(&grant, "leave", "disconnected").await;
                            tokio::time::sleep(REPLAY_KEPT_AFTER_DROP.saturating_sub(hub.grace)).await;
                            room.lock().expect("room lock").forget_replay(role, conn);
                            drop(room);
                            hub.evict_if_idle(&grant.appointment_id);
                        });
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

    async fn audit(&self, grant: &Grant, action: &str, detail: &str) {
        let entry = AuditEntry::new(
            self.clock.now_ms(),
            Some(&grant.appointment_id),
            grant.role.as_str(),
            action,
            detail,
            grant.remote_addr.clone(),
        );
        if let Err(e) = self.metrics.db("audit", self.store.audit(&entry)).await {
            tracing::error!(error = %e, "audit write failed");
        }
    }
}
