//! Rooms shared by several server nodes through Redis (`--redis-url`).
//!
//! A room is owned by one node at a time: the first node with a connection in it that has an
//! input for it claims it (`televisit:room:<appointment>:owner`), keeps the sans-I/O [`Room`] in
//! memory and applies every input to it in the order they come, as a single node does; the inputs
//! that queue while the room's commit is out are applied together, in one commit. Another node
//! forwards its inputs to the owner over the owner's pub/sub channel ([`NodeMessage::Input`]) and
//! gets the answer, with the frames for its connections, in one message ([`NodeMessage::Reply`]).
//! No input waits for a lock, and no input reads the room from Redis, except the one that claims
//! it.
//!
//! The owner writes each batch through before any of its frames go out, so that another node can
//! take the room over where the owner left it: one Lua script, only while the room is still the
//! node's, writes the room's state (presence, waiting-room status, seqs, the sizes of the frames
//! kept for resumption) as one JSON value, appends the frames kept for resumption to a list per
//! role beside it (read only when a connection resumes), and publishes the frames for other nodes'
//! connections. The chat the room accepted is stored in the database first (so that no chat stays
//! "being stored" in a room whose node died). A node lets a room go when it has no connection left
//! in it (or the call ended), so a room follows its participants.
//!
//! Nodes beat in Redis; the connections of a node that stops are dropped by another
//! ([`SharedRooms::heartbeat`]), so grace periods run for them as for any drop, and a room owned
//! by a node that stopped is claimed by the next node with an input for it.
//!
//! A connection id carries its node (`node << 32 | n`), so a frame for a connection on a node that
//! died goes nowhere and stays in the replay buffer: the client resumes on another node with
//! `join` + `resume.last_seq` and gets exactly what it missed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::ConnectionManager;
use redis::{Script, ScriptInvocation};
use serde::{Deserialize, Serialize};
use televisit_protocol::{ErrorCode, Role};
use tokio::sync::{mpsc, oneshot};

use super::chat_writer::ChatStorer;
use super::input::{Applied, RoomInput};
pub use super::room::node_of;
use super::room::{Action, ConnId, Room};
use crate::metrics::Metrics;
use crate::secrets::Clock;
use crate::store::{NewChat, Store};

/// How often a node tells Redis it lives (and looks for nodes that stopped).
pub const NODE_HEARTBEAT: Duration = Duration::from_secs(1);
/// A node silent this long is dead: its connections are dropped (each gets its grace period).
const NODE_ALIVE_MS: u64 = 3_000;
/// The seats of a room, in the order the commit script takes their replay lists.
const ROLES: [Role; 2] = [Role::Doctor, Role::Patient];

/// The ids of the nodes that were alive (a set).
const NODES: &str = "televisit:nodes";
/// The [`ClusterSettings`] of the nodes alive (a string, expiring with the last of them).
const SETTINGS: &str = "televisit:settings";

/// Settings every node of a cluster must share: a room's grace period and a connection's idle
/// timeout run on whichever node handles the room or the fallback session next, so with two
/// values a session would end at one node's time or the other's, at random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `--idle-timeout-seconds`.
    pub idle_timeout_seconds: u64,
    /// `--reconnect-grace-seconds`.
    pub reconnect_grace_seconds: u64,
}

impl ClusterSettings {
    /// As kept in Redis, and shown when nodes disagree: the command-line names and values.
    fn encode(&self) -> String {
        format!(
            "--idle-timeout-seconds {} --reconnect-grace-seconds {}",
            self.idle_timeout_seconds, self.reconnect_grace_seconds
        )
    }
}

/// How often a node whose subscription dropped tries again.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(200);

/// A room's state is dropped from Redis this long after its last change.
const ROOM_TTL_SECONDS: u64 = 24 * 60 * 60;

/// How long a forwarded input waits for the owner's answer while the owner lives (after that the
/// input fails, and the client tries again); also how long a blocking read may overrun.
const FORWARD_WAIT: Duration = Duration::from_secs(5);
/// How often a node waiting for a forwarded input's answer checks that the owner still lives.
const OWNER_CHECK_EVERY: Duration = Duration::from_millis(250);
/// The owners of other nodes' rooms a node remembers (forgotten all at once past this).
const OWNERS_REMEMBERED: usize = 10_000;

/// Claims a room for this node (ARGV[1]) and reads it in one trip, unless another node that
/// lives owns it. KEYS[1]: the owner; KEYS[2]: the room. Answers `{owner}` when another node owns
/// it, `{}` when there is no room and none to create (ARGV[2] is "0"), else `{node, state}` with
/// the room's JSON, or "" for none. The owner is kept ARGV[3] s, like the room.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local owner = redis.call("get", KEYS[1])
if owner and owner ~= ARGV[1] and redis.call("exists", "televisit:node:" .. owner .. ":alive") == 1 then
  return {owner}
end
local state = redis.call("get", KEYS[2])
if not state and ARGV[2] == "0" then return {} end
redis.call("set", KEYS[1], ARGV[1], "EX", ARGV[3])
return {ARGV[1], state or ""}
"#,
    )
});

/// Commits an input in one step, only while the room (its owner, KEYS[2]) is still this node's
/// (ARGV[1]): writes the room (KEYS[1], ARGV[2], expiring in ARGV[3] s); brings the doctor's and
/// the patient's replay lists (KEYS[3], KEYS[4]) to the room's: appends each one's new frames
/// (ARGV[7] and ARGV[9] of them, after the record flags) and keeps its newest ARGV[6] and
/// ARGV[8]; adds the appointment (ARGV[4]) to or removes it from the record of each node whose
/// connections the input changed (KEYS[5..], "1" or "0" from ARGV[10]), publishes the frames
/// (channel, payload pairs after the new frames), and keeps the room this node's (ARGV[5] "1") or
/// lets it go ("0"). A node killed at any point leaves the input wholly applied or not at all.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call("get", KEYS[2]) ~= ARGV[1] then return 0 end
redis.call("set", KEYS[1], ARGV[2], "EX", ARGV[3])
local records = #KEYS - 4
for i = 1, records do
  if ARGV[9 + i] == "1" then redis.call("sadd", KEYS[4 + i], ARGV[4])
  else redis.call("srem", KEYS[4 + i], ARGV[4]) end
end
local next = 10 + records
for seat = 0, 1 do
  local list, kept, new = KEYS[3 + seat], tonumber(ARGV[6 + 2 * seat]), tonumber(ARGV[7 + 2 * seat])
  for i = next, next + new - 1 do redis.call("rpush", list, ARGV[i]) end
  next = next + new
  if kept == 0 then
    redis.call("del", list)
  else
    redis.call("ltrim", list, -kept, -1)
    redis.call("expire", list, ARGV[3])
  end
end
for i = next, #ARGV, 2 do redis.call("publish", ARGV[i], ARGV[i + 1]) end
if ARGV[5] == "0" then redis.call("del", KEYS[2]) else redis.call("expire", KEYS[2], ARGV[3]) end
return 1
"#,
    )
});

/// What one node publishes to another's channel.
#[derive(Debug, Serialize, Deserialize)]
pub enum NodeMessage {
    /// Frames and closes for the node's connections (an input's for one node go together).
    Frames(Vec<Action>),
    /// An input for a room the node owns, from another node.
    Input(Box<Forwarded>),
    /// The owner's answer to an input the node forwarded.
    Reply {
        /// The input's number on the node that forwarded it.
        id: u64,
        /// The input's frames and closes for the node's connections (delivered before the
        /// answer is taken).
        frames: Vec<Action>,
        /// The answer.
        reply: Reply,
    },
}

/// An input forwarded to the node that owns its room.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    from: u32,
    id: u64,
    appointment_id: String,
    create: Option<Room>,
    replay_of: Option<Role>,
    input: RoomInput,
}

/// The owner's answer to a forwarded input.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Applied (`None`: there was no room, and none to create); the actions left are those
    /// that need the database or a timer, for the node that forwarded it to carry out.
    Applied(Option<Applied>),
    /// The node does not own the room (any more).
    NotOwner,
    /// Redis failed.
    Failed(String),
}

/// The connection a frame or close is for (`None`: an action that is not sent).
fn addressee(action: &Action) -> Option<ConnId> {
    match action {
        Action::Send { conn, .. } | Action::Close { conn, .. } | Action::CloseNormally { conn } => {
            Some(*conn)
        }
        _ => None,
    }
}

fn node_channel(node: u32) -> String {
    format!("televisit:node:{node}")
}

fn alive_key(node: u32) -> String {
    format!("televisit:node:{node}:alive")
}

/// The appointments whose rooms a node has connections in (kept in the commit of each input
/// that adds or removes one).
fn rooms_of_key(node: u32) -> String {
    format!("televisit:node:{node}:rooms")
}

/// A role's replay texts in a room (a list, oldest first; the room has their sizes).
fn replay_key(appointment_id: &str, role: Role) -> String {
    let role = match role {
        Role::Doctor => "doctor",
        Role::Patient => "patient",
    };
    format!("{}:replay:{role}", room_key(appointment_id))
}

fn room_key(appointment_id: &str) -> String {
    format!("televisit:room:{appointment_id}")
}

/// The frames published to this node, for its connections: the subscription, and what it takes
/// to subscribe again when the connection to Redis drops.
pub struct Inbox {
    stream: redis::aio::PubSubStream,
    client: redis::Client,
    node: u32,
    subscribed: Arc<AtomicBool>,
}

impl Inbox {
    async fn subscribe(client: &redis::Client, node: u32) -> redis::RedisResult<redis::aio::PubSubStream> {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(node_channel(node)).await?;
        Ok(pubsub.into_on_message())
    }
}

/// The owner's key of a room: the id of the node that owns it.
fn owner_key(appointment_id: &str) -> String {
    format!("{}:owner", room_key(appointment_id))
}

/// Rooms in Redis, seen from one node.
pub struct SharedRooms {
    redis: ConnectionManager,
    /// For connections of their own (a blocking read must not hold up the shared one).
    client: redis::Client,
    node: u32,
    /// This node's [`ClusterSettings`], encoded.
    settings: String,
    /// Whether this node's inbox is subscribed: while it is not, frames for it are lost, so the
    /// node takes no connections.
    subscribed: Arc<AtomicBool>,
    /// Stores the chat the rooms accept, in batches.
    chats: ChatStorer,
    /// The rooms this node owns (in memory) or has inputs for now: by appointment.
    owned: Owned,
    /// The nodes that owned other rooms when this node last forwarded them an input.
    owners: std::sync::Mutex<HashMap<String, u32>>,
    /// The forwarded inputs waiting for their answers, by number.
    answers: Answers,
    /// The rooms whose turn is next, to the task that takes the turns ([`take_turns`]), and that
    /// task's end of the channel until it starts (with the first input).
    turns: mpsc::UnboundedSender<NextTurn>,
    turns_to_start: std::sync::Mutex<Option<mpsc::UnboundedReceiver<NextTurn>>>,
    /// The inputs to forward, in order, to the task that publishes them: (channel, number, message).
    forwards: mpsc::UnboundedSender<(String, u64, String)>,
    next_forwarded: AtomicU64,
    /// Times each Redis operation (`redis_seconds`).
    metrics: Arc<Metrics>,
}

impl SharedRooms {
    /// Connects to Redis as a new node (a random id) and subscribes to the node's channel.
    /// Fails when the nodes alive run with other [`ClusterSettings`].
    pub async fn connect(
        url: &str,
        settings: ClusterSettings,
        store: Store,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> redis::RedisResult<(SharedRooms, Inbox)> {
        let client = redis::Client::open(url)?;
        let mut redis = client.get_connection_manager().await?;
        let settings = settings.encode();
        let theirs: Option<String> = redis::cmd("SET")
            .arg(SETTINGS)
            .arg(&settings)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(NODE_ALIVE_MS)
            .query_async(&mut redis)
            .await?;
        if let Some(theirs) = theirs.filter(|theirs| *theirs != settings) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the other nodes run with other settings; every node needs the same",
                format!("theirs: {theirs}; this node's: {settings}"),
            )));
        }
        let node = rand::random::<u32>().max(1);
        let stream = Inbox::subscribe(&client, node).await?;
        let subscribed = Arc::new(AtomicBool::new(true));
        let answers = Answers::default();
        let (forwards, to_publish) = mpsc::unbounded_channel();
        let (turns, turns_to_start) = mpsc::unbounded_channel();
        tokio::spawn(publish_forwards(redis.clone(), Arc::clone(&answers), to_publish));
        let shared = SharedRooms {
            redis,
            client: client.clone(),
            node,
            settings,
            subscribed: Arc::clone(&subscribed),
            chats: ChatStorer::start(store, clock, Arc::clone(&metrics)),
            metrics,
            owned: Default::default(),
            owners: Default::default(),
            answers,
            forwards,
            turns,
            turns_to_start: std::sync::Mutex::new(Some(turns_to_start)),
            next_forwarded: AtomicU64::new(1),
        };
        shared.heartbeat().await?;
        tracing::info!(node, "multi-node signaling on Redis");
        Ok((shared, Inbox { stream, client, node, subscribed }))
    }

    /// Tells Redis this node lives, and claims the nodes that stopped doing so: returns each
    /// dead node with the appointments it had connections in (each dead node goes to one node).
    pub async fn heartbeat(&self) -> redis::RedisResult<Vec<(u32, Vec<String>)>> {
        let mut redis = self.redis.clone();
        let mut beat = redis::pipe();
        beat.cmd("SET")
            .arg(alive_key(self.node))
            .arg(1)
            .arg("PX")
            .arg(NODE_ALIVE_MS)
            .ignore()
            .cmd("SET")
            .arg(SETTINGS)
            .arg(&self.settings)
            .arg("PX")
            .arg(NODE_ALIVE_MS)
            .ignore()
            .cmd("SADD")
            .arg(NODES)
            .arg(self.node)
            .ignore()
            .cmd("SMEMBERS")
            .arg(NODES);
        let (nodes,) = self.metrics.redis("heartbeat", beat.query_async::<(Vec<u32>,)>(&mut redis)).await?;
        let mut dead = Vec::new();
        for node in nodes.into_iter().filter(|node| *node != self.node) {
            let alive: bool = redis::cmd("EXISTS").arg(alive_key(node)).query_async(&mut redis).await?;
            if alive {
                continue;
            }
            let claimed: i64 = redis::cmd("SREM").arg(NODES).arg(node).query_async(&mut redis).await?;
            if claimed == 1 {
                let (rooms,): (Vec<String>,) = redis::pipe()
                    .cmd("SMEMBERS")
                    .arg(rooms_of_key(node))
                    .cmd("DEL")
                    .arg(rooms_of_key(node))
                    .ignore()
                    .query_async(&mut redis)
                    .await?;
                dead.push((node, rooms));
            }
        }
        if !dead.is_empty() {
            let is_dead = |node: &u32| dead.iter().any(|(dead, _)| dead == node);
            self.owners.lock().expect("owners lock").retain(|_, owner| !is_dead(owner));
        }
        Ok(dead)
    }

    /// Whether this node receives frames now (its subscription is up).
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// This node's id: the high half of its connection ids.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// A handle on the shared connection to Redis.
    pub fn redis(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// A connection of its own, for a command that blocks up to `block` (the shared connection
    /// must not wait behind it); its answers may take that long and 5 s more.
    pub async fn own_connection(
        &self,
        block: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(block + FORWARD_WAIT));
        self.client.get_multiplexed_async_connection_with_config(&config).await
    }

    /// Whether a node beat lately (a node that stopped is dead: [`NODE_ALIVE_MS`]).
    pub async fn is_alive(&self, node: u32) -> redis::RedisResult<bool> {
        if node == self.node {
            return Ok(true);
        }
        redis::cmd("EXISTS").arg(alive_key(node)).query_async(&mut self.redis.clone()).await
    }

    /// Reads a room without changing it (for presence).
    pub async fn peek(&self, appointment_id: &str) -> redis::RedisResult<Option<Room>> {
        let mut redis = self.redis.clone();
        let mut read = redis::cmd("GET");
        read.arg(room_key(appointment_id));
        let state = self.metrics.redis("read", read.query_async::<Option<String>>(&mut redis)).await?;
        Ok(state.and_then(|state| serde_json::from_str(&state).ok()))
    }

    /// Applies an input to a room: here when this node owns the room (claiming it when nobody
    /// lives who does), else on the node that owns it. `create`: the room to start when Redis has
    /// none (`None`: leave it absent and return `None`). `replay_of`: the role whose replay texts
    /// the input reads (a resume). The frames for other nodes' connections are published; what
    /// is returned is the rest of what the input did, with the frames and closes for this node's
    /// connections, to send now (chat is stored already).
    ///
    /// The input takes its place when this is called, before the future is first polled: in its
    /// room's queue, or in the queue of inputs forwarded to the room's owner. So the inputs a
    /// caller hands over one after another are applied in that order, however many are in flight
    /// (an input handed back by an owner that let the room go meanwhile is sent again after them).
    pub fn apply(
        self: &Arc<Self>,
        appointment_id: &str,
        create: Option<Room>,
        replay_of: Option<Role>,
        input: RoomInput,
    ) -> impl Future<Output = Result<Option<Applied>, Failed>> + Send + 'static {
        let owner = self.owners.lock().expect("owners lock").get(appointment_id).copied();
        let mut sent = self.send_input(appointment_id, owner, create.clone(), replay_of, input);
        let (shared, appointment_id) = (Arc::clone(self), appointment_id.to_owned());
        async move {
            // An owner changes only when a node lets the room go or dies; a few tries are plenty.
            for _ in 0..4 {
                match sent.await? {
                    Sent::Applied(applied) => return Ok(applied),
                    Sent::Again(owner, input) => {
                        sent = shared.send_input(&appointment_id, owner, create.clone(), replay_of, input)
                    }
                }
            }
            Err(redis::RedisError::from((redis::ErrorKind::Io, "the room's owner kept changing")).into())
        }
    }

    /// Puts an input in its room's queue, when `owner` (as this node last knew it) is this node or
    /// unknown, or else forwards it to that node; returns the wait for where it went.
    fn send_input(
        self: &Arc<Self>,
        appointment_id: &str,
        owner: Option<u32>,
        create: Option<Room>,
        replay_of: Option<Role>,
        input: RoomInput,
    ) -> Pin<Box<dyn Future<Output = Result<Sent, Failed>> + Send>> {
        let shared = Arc::clone(self);
        let appointment_id = appointment_id.to_owned();
        let Some(owner) = owner.filter(|node| *node != self.node) else {
            let outcome = self.enqueue(&appointment_id, create, replay_of, input, None);
            return Box::pin(async move {
                match outcome.await.unwrap_or_else(|_| Err(turns_stopped().into()))? {
                    Here::Applied(applied) => Ok(Sent::Applied(applied)),
                    Here::OwnedBy(node, input) => {
                        shared.remember_owner(&appointment_id, node);
                        Ok(Sent::Again(Some(node), input))
                    }
                }
            });
        };
        let forwarded = Forwarded {
            from: self.node,
            id: self.next_forwarded.fetch_add(1, Ordering::Relaxed),
            appointment_id: appointment_id.clone(),
            create,
            replay_of,
            input: input.clone(),
        };
        let waiting = self.forward(owner, forwarded);
        Box::pin(async move {
            match shared.metrics.redis("forward", waiting.answer()).await? {
                Some(Reply::Applied(applied)) => Ok(Sent::Applied(applied)),
                Some(Reply::Failed(message)) => {
                    Err(redis::RedisError::from((redis::ErrorKind::Io, "the room's node failed", message))
                        .into())
                }
                // It let the room go, or died: ask again who owns it (or claim it).
                Some(Reply::NotOwner) | None => {
                    shared.owners.lock().expect("owners lock").remove(&appointment_id);
                    Ok(Sent::Again(None, input))
                }
            }
        })
    }

    /// Sends an input to the node that owns its room (in the order of the calls, through the
    /// publishing task) and returns the wait for its answer.
    fn forward(self: &Arc<Self>, owner: u32, forwarded: Forwarded) -> Waiting {
        let id = forwarded.id;
        let (answer, answered) = oneshot::channel();
        self.answers.lock().expect("answers lock").insert(id, answer);
        let waiting = Waiting { shared: Arc::clone(self), owner, id, answered };
        let message =
            serde_json::to_string(&NodeMessage::Input(Box::new(forwarded))).expect("an input encodes");
        if self.forwards.send((node_channel(owner), id, message)).is_err() {
            // The publishing task is gone (the runtime is shutting down).
            self.answered(id, Reply::Failed("this node stopped forwarding".into()));
        }
        waiting
    }

    /// The answer to an input this node forwarded (from its inbox).
    pub fn answered(&self, id: u64, reply: Reply) {
        if let Some(answer) = self.answers.lock().expect("answers lock").remove(&id) {
            let _ = answer.send(reply);
        }
    }

    fn remember_owner(&self, appointment_id: &str, node: u32) {
        let mut owners = self.owners.lock().expect("owners lock");
        if owners.len() >= OWNERS_REMEMBERED {
            owners.clear();
        }
        owners.insert(appointment_id.to_owned(), node);
    }

    /// Applies an input another node forwarded (from this node's inbox) and answers it; returns
    /// the frames and closes for this node's connections, to send now. The input takes its place
    /// in its room's queue when this is called, so the inputs of one node's forwarding are
    /// applied in the order they came.
    pub fn serve(
        self: &Arc<Self>,
        forwarded: Box<Forwarded>,
    ) -> impl Future<Output = Vec<Action>> + Send + 'static {
        let Forwarded { from, id, appointment_id, create, replay_of, input } = *forwarded;
        let outcome = self.enqueue(&appointment_id, create, replay_of, input, Some((from, id)));
        let shared = Arc::clone(self);
        async move {
            let applied = outcome.await.unwrap_or_else(|_| Err(turns_stopped().into()));
            let (own, reply) = match applied {
                // Answered in the commit, with its frames for that node.
                Ok(Here::Applied(Some(applied))) => return applied.actions,
                Ok(Here::Applied(None)) => (Vec::new(), Reply::Applied(None)),
                Ok(Here::OwnedBy(..)) => (Vec::new(), Reply::NotOwner),
                Err(failed) => {
                    tracing::error!(error = %failed.error, "Redis: a forwarded room input failed");
                    let message = "signaling is unavailable; try again";
                    let close =
                        |conn| Action::Close { conn, code: ErrorCode::Internal, message: message.into() };
                    (
                        failed.unsent_to.into_iter().map(close).collect(),
                        Reply::Failed(failed.error.to_string()),
                    )
                }
            };
            let message = NodeMessage::Reply { id, frames: Vec::new(), reply };
            let message = serde_json::to_string(&message).expect("a reply encodes");
            let publish = redis::cmd("PUBLISH").arg(node_channel(from)).arg(message).to_owned();
            if let Err(e) = publish.query_async::<()>(&mut shared.redis.clone()).await {
                tracing::error!(error = %e, "Redis: an answer to another node was not sent");
            }
            own
        }
    }

    /// Rooms this node owns or has inputs for now.
    pub fn rooms_in_memory(&self) -> usize {
        self.owned.lock().expect("owned lock").len()
    }

    /// Bytes the rooms this node owns keep for resumption (those busy now are not counted).
    pub fn replay_bytes(&self) -> usize {
        let rooms: Vec<_> = self.owned.lock().expect("owned lock").values().cloned().collect();
        rooms
            .iter()
            .filter_map(|slot| slot.0.lock().expect("slot lock").room.as_ref().map(Room::replay_bytes))
            .sum()
    }

    /// Puts an input in its room's queue, to be applied by the room's owner, this node (claiming
    /// the room first when it is not in memory; `OwnedBy` when another node that lives owns it);
    /// returns where its outcome comes. The input that finds the room's turn free schedules it
    /// ([`SharedRooms::schedule`]); the node's task that takes the turns applies the input, with the
    /// inputs queued beside it, in one commit.
    fn enqueue(
        self: &Arc<Self>,
        appointment_id: &str,
        create: Option<Room>,
        replay_of: Option<Role>,
        input: RoomInput,
        from: Option<(u32, u64)>,
    ) -> oneshot::Receiver<Result<Here, Failed>> {
        let (done, outcome) = oneshot::channel();
        let queued = Queued { create, replay_of, input, from, done };
        let start = {
            let mut owned = self.owned.lock().expect("owned lock");
            let slot = Arc::clone(owned.entry(appointment_id.to_owned()).or_default());
            let mut state = slot.0.lock().expect("slot lock");
            state.waiting.push_back(queued);
            let start = !std::mem::replace(&mut state.busy, true);
            drop(state);
            start.then_some(slot)
        };
        if let Some(slot) = start {
            self.schedule(appointment_id.to_owned(), slot);
        }
        outcome
    }

    /// Hands a room with inputs waiting and no batch out (`busy` set) to the task that takes the
    /// rooms' turns ([`take_turns`]): not to the input's caller, whose future may be dropped (an
    /// HTTP client that went away) while the inputs queued behind it must still have their turns.
    fn schedule(self: &Arc<Self>, appointment_id: String, slot: Arc<Slot>) {
        if let Some(rooms) = self.turns_to_start.lock().expect("turns lock").take() {
            tokio::spawn(take_turns(Arc::downgrade(self), rooms));
        }
        if let Err(mpsc::error::SendError((appointment_id, slot))) = self.turns.send((appointment_id, slot)) {
            // That task is gone (the runtime is shutting down): a task for this turn alone.
            tokio::spawn(Arc::clone(self).take_turn(appointment_id, slot));
        }
    }

    /// Applies the next batch of inputs queued at a room, then hands the room on
    /// ([`SharedRooms::finish_turn`]).
    async fn take_turn(self: Arc<Self>, appointment_id: String, slot: Arc<Slot>) {
        let (room, batch) = {
            let mut state = slot.0.lock().expect("slot lock");
            let room = state.room.take();
            let batch = next_batch(&mut state.waiting, room.is_some());
            (room, batch)
        };
        let (kept, outcomes) = self.apply_batch(&appointment_id, room, batch).await;
        self.finish_turn(appointment_id, slot, kept, outcomes);
    }

    /// Puts the room back after a batch (`kept`), schedules its next turn when inputs are waiting,
    /// or else frees the room's turn (and, unless the node owns the room, takes it out of the
    /// map); then tells the batch's inputs their outcomes, so that what their callers do next
    /// finds what their inputs left.
    fn finish_turn(
        self: &Arc<Self>,
        appointment_id: String,
        slot: Arc<Slot>,
        kept: Option<Room>,
        outcomes: Vec<Outcome>,
    ) {
        let more = {
            let mut owned = self.owned.lock().expect("owned lock");
            let mut state = slot.0.lock().expect("slot lock");
            state.room = kept;
            let more = !state.waiting.is_empty();
            if !more {
                state.busy = false;
                if state.room.is_none() {
                    owned.remove(&appointment_id);
                }
            }
            more
        };
        for (done, outcome) in outcomes {
            let _ = done.send(outcome);
        }
        if more {
            self.schedule(appointment_id, slot);
        }
    }

    /// Applies a batch of inputs to the room (`None`: not in memory, claimed first; then the batch
    /// is one input) in one commit; returns the room to keep in memory (`None`: this node does not
    /// own it, or a failure left its copy in doubt) and each input's outcome.
    async fn apply_batch(
        &self,
        appointment_id: &str,
        room: Option<Room>,
        batch: Vec<Queued>,
    ) -> (Option<Room>, Vec<Outcome>) {
        let room = match room {
            Some(room) => room,
            None => {
                let may_create = batch.iter().any(|queued| queued.create.is_some());
                let claimed = self.metrics.redis("claim", self.claim(appointment_id, may_create)).await;
                let state = match claimed {
                    Ok(Claim::Ours(state)) => state,
                    Ok(Claim::NoRoom) => String::new(),
                    Ok(Claim::Theirs(node)) => {
                        let given_back = batch
                            .into_iter()
                            .map(|queued| (queued.done, Ok(Here::OwnedBy(node, queued.input))));
                        return (None, given_back.collect());
                    }
                    Err(error) => return (None, fail_all(batch, &error)),
                };
                let create = batch.iter().find_map(|queued| queued.create.clone());
                match serde_json::from_str::<Room>(&state).ok().or(create) {
                    Some(room) => room,
                    None => {
                        let no_room = batch.into_iter().map(|queued| (queued.done, Ok(Here::Applied(None))));
                        return (None, no_room.collect());
                    }
                }
            }
        };
        let mut redis = self.redis.clone();
        let (commit, room, outcomes) = match self.apply_to(&mut redis, appointment_id, room, batch).await {
            Ok(applied) => applied,
            Err((error, batch)) => return (None, fail_all(batch, &error)),
        };
        let committed: redis::RedisResult<i64> =
            self.metrics.redis("commit", commit.invoke_async(&mut redis)).await;
        let error = match committed {
            Ok(1) => {
                let applied =
                    outcomes.into_iter().map(|(applied, done)| (done, Ok(Here::Applied(Some(applied)))));
                return (room, applied.collect());
            }
            // Another node took the room over (this one was thought dead), or Redis lost it.
            Ok(_) => {
                redis::RedisError::from((redis::ErrorKind::Io, "the room was taken over before the commit"))
            }
            Err(error) => error,
        };
        let failed = outcomes.into_iter().map(|(applied, done)| {
            // The commit may have been carried out, with the seqs of this node's frames: their
            // connections would wait for them for ever.
            let unsent_to = applied
                .actions
                .iter()
                .filter_map(|action| match action {
                    Action::Send { conn, seq: Some(_), .. } => Some(*conn),
                    _ => None,
                })
                .collect();
            (done, Err(Failed { error: copy_error(&error), unsent_to }))
        });
        (None, failed.collect())
    }

    /// Claims a room for this node and reads it ([`CLAIM`]).
    async fn claim(&self, appointment_id: &str, may_create: bool) -> redis::RedisResult<Claim> {
        let mut claim = CLAIM.key(owner_key(appointment_id));
        claim.key(room_key(appointment_id)).arg(self.node).arg(if may_create { "1" } else { "0" });
        claim.arg(ROOM_TTL_SECONDS);
        let answer: Vec<String> = claim.invoke_async(&mut self.redis.clone()).await?;
        Ok(match <[String; 2]>::try_from(answer) {
            Ok([_, state]) => Claim::Ours(state),
            Err(answer) => match answer.first().map(|owner| owner.parse()) {
                Some(Ok(owner)) => Claim::Theirs(owner),
                Some(Err(_)) => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Parse,
                        "a room's owner is not a node id",
                    )))
                }
                None => Claim::NoRoom,
            },
        })
    }

    /// Applies a batch of inputs to the room in order, storing their chat; returns the one commit
    /// of the room and their frames, the room to keep in memory (`None`: this node lets it go),
    /// and what each input did for this node, with where its outcome goes: for its own input,
    /// everything but the frames for other nodes; for an input forwarded `from` another node, the
    /// frames for this node's connections (the rest goes to that node in the commit). Only the
    /// batch's first input may resume (read its role's replay list: that list is the room's only
    /// before the batch's frames). A failure gives the batch back.
    #[allow(clippy::type_complexity)]
    async fn apply_to(
        &self,
        redis: &mut ConnectionManager,
        appointment_id: &str,
        mut room: Room,
        batch: Vec<Queued>,
    ) -> Result<
        (ScriptInvocation<'static>, Option<Room>, Vec<(Applied, oneshot::Sender<Result<Here, Failed>>)>),
        (redis::RedisError, Vec<Queued>),
    > {
        if let Some(role) = batch.first().and_then(|queued| queued.replay_of) {
            let mut texts = redis::cmd("LRANGE");
            texts.arg(replay_key(appointment_id, role)).arg(0).arg(-1);
            match self.metrics.redis("replay", texts.query_async(redis)).await {
                Ok(texts) => room.load_replay(role, texts),
                Err(error) => return Err((error, batch)),
            }
        }
        let seqs_before = ROLES.map(|role| room.out_seq(role));
        let nodes_before = nodes_in(&room);
        let mut inputs = Vec::with_capacity(batch.len());
        for Queued { input, from, done, .. } in batch {
            inputs.push((input.apply(&mut room), from, done));
        }
        self.store_chat(appointment_id, &mut room, inputs.iter_mut().map(|(applied, ..)| applied)).await;
        let nodes_after = nodes_in(&room);
        let keep = nodes_after.contains(&self.node) && !room.is_ended();
        // The records of the nodes that gained or lost connections in the room.
        let records: Vec<(u32, bool)> = nodes_after
            .iter()
            .map(|node| (*node, true))
            .chain(nodes_before.iter().filter(|node| !nodes_after.contains(node)).map(|node| (*node, false)))
            .collect();
        let mut commit = COMMIT.prepare_invoke();
        commit.key(room_key(appointment_id)).key(owner_key(appointment_id));
        ROLES.iter().for_each(|role| _ = commit.key(replay_key(appointment_id, *role)));
        records.iter().for_each(|(node, _)| _ = commit.key(rooms_of_key(*node)));
        let state = serde_json::to_string(&room).expect("a room encodes");
        commit.arg(self.node).arg(&state).arg(ROOM_TTL_SECONDS).arg(appointment_id);
        commit.arg(if keep { "1" } else { "0" });
        let replays = [0, 1].map(|i| room.replay_since(ROLES[i], seqs_before[i]));
        replays.iter().for_each(|(kept, new)| _ = commit.arg(kept).arg(new.len()));
        records.iter().for_each(|(_, kept)| _ = commit.arg(if *kept { "1" } else { "0" }));
        replays.iter().flat_map(|(_, new)| new).for_each(|text| _ = commit.arg(text));
        // This node's frames it sends itself once the commit is in; the others go in the commit,
        // each node's in the batch's order: an answer carries its node's frames so far.
        let mut to_nodes: BTreeMap<u32, Vec<Action>> = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(inputs.len());
        for (mut applied, from, done) in inputs {
            let (mut own, mut rest) = (Vec::new(), Vec::new());
            for action in std::mem::take(&mut applied.actions) {
                match addressee(&action).map(node_of) {
                    Some(node) if node == self.node => own.push(action),
                    Some(node) => to_nodes.entry(node).or_default().push(action),
                    None => rest.push(action),
                }
            }
            if let Some((node, id)) = from {
                let frames = to_nodes.remove(&node).unwrap_or_default();
                applied.actions = rest;
                let reply = NodeMessage::Reply { id, frames, reply: Reply::Applied(Some(applied)) };
                commit.arg(node_channel(node)).arg(serde_json::to_string(&reply).expect("a reply encodes"));
                applied = Applied { actions: own, ..Applied::default() };
            } else {
                own.extend(rest);
                applied.actions = own;
            }
            outcomes.push((applied, done));
        }
        for (node, frames) in to_nodes {
            commit.arg(node_channel(node));
            commit.arg(serde_json::to_string(&NodeMessage::Frames(frames)).expect("frames encode"));
        }
        Ok((commit, keep.then_some(room), outcomes))
    }

    /// Stores the chat the room accepted in a batch of inputs (all at once, with other rooms' in
    /// the storer's batches) and gives the room the outcome of each message, in the input's place.
    async fn store_chat<'a>(
        &self,
        appointment_id: &str,
        room: &mut Room,
        batch: impl Iterator<Item = &'a mut Applied>,
    ) {
        let batch: Vec<&mut Applied> = batch.collect();
        let is_chat = |action: &Action| matches!(action, Action::StoreChat { .. });
        let chats: Vec<NewChat> = batch
            .iter()
            .flat_map(|applied| applied.actions.iter())
            .filter_map(|action| match action {
                Action::StoreChat { from, text, client_seq } => Some(NewChat {
                    appointment_id: appointment_id.to_owned(),
                    from: *from,
                    text: text.clone(),
                    client_seq: *client_seq,
                }),
                _ => None,
            })
            .collect();
        if chats.is_empty() {
            return;
        }
        let stored =
            futures_util::future::join_all(chats.iter().cloned().map(|chat| self.chats.store(chat))).await;
        let mut outcomes = chats.into_iter().zip(stored);
        for applied in batch {
            let mut actions = Vec::with_capacity(applied.actions.len());
            for action in std::mem::take(&mut applied.actions) {
                if !is_chat(&action) {
                    actions.push(action);
                    continue;
                }
                let (chat, stored) = outcomes.next().expect("an outcome per message");
                actions.extend(match stored {
                    Some(stored) => room.chat_stored(stored, chat.client_seq),
                    None => room.chat_not_stored(chat.from, chat.client_seq),
                });
            }
            applied.actions = actions;
        }
    }
}

/// Where an input sent to its room's owner went ([`SharedRooms::send_input`]).
enum Sent {
    /// Applied (`None`: there was no room, and none to create).
    Applied(Option<Applied>),
    /// Not applied (the input, given back): send it again, to this owner (`None`: not known).
    Again(Option<u32>, RoomInput),
}

/// A forwarded input's wait for its answer ([`SharedRooms::forward`]); its place among the
/// answers goes with it.
struct Waiting {
    shared: Arc<SharedRooms>,
    owner: u32,
    id: u64,
    answered: oneshot::Receiver<Reply>,
}

impl Waiting {
    /// The answer: `None` when the owner died meanwhile (its input was not applied, or was
    /// applied and its answer lost); an error when it lives but did not answer in
    /// [`FORWARD_WAIT`].
    async fn answer(mut self) -> redis::RedisResult<Option<Reply>> {
        let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
        loop {
            match tokio::time::timeout(OWNER_CHECK_EVERY, &mut self.answered).await {
                Ok(Ok(reply)) => return Ok(Some(reply)),
                Ok(Err(_)) => unreachable!("the answer's sender is dropped only with its place"),
                Err(_) if !self.shared.is_alive(self.owner).await? => return Ok(None),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the room's node did not answer",
                    )))
                }
                Err(_) => {}
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.shared.answers.lock().expect("answers lock").remove(&self.id);
    }
}

/// The error of an input whose room's turns stopped before its outcome (the runtime is
/// shutting down).
fn turns_stopped() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "the room's turns stopped"))
}

/// Publishes the inputs this node forwards, in the order they were handed over, those waiting
/// together in one trip; tells the inputs of a trip that failed (their answers would never come).
async fn publish_forwards(
    mut redis: ConnectionManager,
    answers: Answers,
    mut forwards: mpsc::UnboundedReceiver<(String, u64, String)>,
) {
    while let Some(first) = forwards.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = forwards.try_recv() else { break };
            batch.push(next);
        }
        let mut publish = redis::pipe();
        batch
            .iter()
            .for_each(|(channel, _, message)| _ = publish.cmd("PUBLISH").arg(channel).arg(message).ignore());
        if let Err(error) = publish.query_async::<()>(&mut redis).await {
            tracing::error!(error = %error, "Redis: inputs for other nodes were not sent");
            let mut answers = answers.lock().expect("answers lock");
            for (_, id, _) in batch {
                if let Some(answer) = answers.remove(&id) {
                    let _ = answer.send(Reply::Failed(error.to_string()));
                }
            }
        }
    }
}

/// The forwarded inputs waiting for their answers, by number.
type Answers = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// Where an input went ([`SharedRooms::enqueue`]).
enum Here {
    /// Applied here (`None`: there was no room, and none to create).
    Applied(Option<Applied>),
    /// Not applied (the input, given back): this node (another, that lives) owns the room.
    OwnedBy(u32, RoomInput),
}

/// What a claim found ([`CLAIM`]).
enum Claim {
    /// The room is this node's now: its JSON, or "" for none (to create).
    Ours(String),
    /// No room, and none to create.
    NoRoom,
    /// Another node that lives owns it.
    Theirs(u32),
}

/// The rooms a node owns (in memory) or has inputs for now: by appointment.
type Owned = std::sync::Mutex<HashMap<String, Arc<Slot>>>;

/// A room on this node: the room while the node owns it, and the inputs waiting for their turn.
#[derive(Default)]
struct Slot(std::sync::Mutex<SlotState>);

#[derive(Default)]
struct SlotState {
    /// `None` while a batch has it out, or when the node does not own the room.
    room: Option<Room>,
    /// Inputs waiting for their turn, in the order they came.
    waiting: VecDeque<Queued>,
    /// Whether a task takes the room's turns now ([`SharedRooms::take_turns`]).
    busy: bool,
}

/// An input waiting for its room's turn ([`SharedRooms::apply_here`]), and where its outcome goes.
struct Queued {
    create: Option<Room>,
    replay_of: Option<Role>,
    input: RoomInput,
    from: Option<(u32, u64)>,
    done: oneshot::Sender<Result<Here, Failed>>,
}

/// Inputs applied in one commit at most: a commit's size stays bounded under any backlog.
const MAX_BATCH: usize = 64;

/// The next inputs to apply together: the first waiting input, and, when the room is in memory,
/// those behind it up to the next resume (which reads the replay lists as committed) or
/// [`MAX_BATCH`]. A room not in memory is claimed for its first input alone.
fn next_batch(waiting: &mut VecDeque<Queued>, in_memory: bool) -> Vec<Queued> {
    let mut batch: Vec<Queued> = waiting.pop_front().into_iter().collect();
    while in_memory && batch.len() < MAX_BATCH {
        match waiting.front() {
            Some(next) if next.replay_of.is_none() => batch.extend(waiting.pop_front()),
            _ => break,
        }
    }
    batch
}

/// Takes the rooms' turns on one node, as many rooms at once as have inputs waiting, in one task
/// (what wakes the batches, their chat's storing and their commits wakes this one task, however
/// many rooms are busy); ends with the node's [`SharedRooms`].
async fn take_turns(shared: Weak<SharedRooms>, mut rooms: mpsc::UnboundedReceiver<NextTurn>) {
    let mut running = futures_util::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            room = rooms.recv() => {
                let (Some((appointment_id, slot)), Some(shared)) = (room, shared.upgrade()) else { return };
                running.push(std::panic::AssertUnwindSafe(shared.take_turn(appointment_id, slot)).catch_unwind());
            }
            Some(turn) = running.next(), if !running.is_empty() => {
                if turn.is_err() {
                    // Its room's inputs fail ("the room's turns stopped"); the other rooms go on.
                    tracing::error!("a room's turn panicked");
                }
            }
        }
    }
}

/// A room whose turn is next: its appointment and its slot.
type NextTurn = (String, Arc<Slot>);

/// Where an input's outcome goes, and the outcome.
type Outcome = (oneshot::Sender<Result<Here, Failed>>, Result<Here, Failed>);

/// The outcomes of a batch none of whose inputs was applied: each failed.
fn fail_all(batch: Vec<Queued>, error: &redis::RedisError) -> Vec<Outcome> {
    batch.into_iter().map(|queued| (queued.done, Err(copy_error(error).into()))).collect()
}

/// A Redis error for each input of a batch (the errors do not clone).
fn copy_error(error: &redis::RedisError) -> redis::RedisError {
    redis::RedisError::from((error.kind(), "a room's batch failed", error.to_string()))
}

/// An input that Redis did not take, or may have taken without this node hearing back.
#[derive(Debug)]
pub struct Failed {
    /// What went wrong.
    pub error: redis::RedisError,
    /// This node's connections whose numbered frames the input may have committed but that were
    /// not sent: they must be closed (their clients resume and get the frames from the replay
    /// buffers), or they would wait for them for ever.
    pub unsent_to: Vec<ConnId>,
}

impl From<redis::RedisError> for Failed {
    fn from(error: redis::RedisError) -> Failed {
        Failed { error, unsent_to: Vec::new() }
    }
}

/// The nodes holding a connection in the room, or running the grace period of one that dropped
/// (so that the room stays in the node's record: if the node dies, another runs the grace period).
fn nodes_in(room: &Room) -> Vec<u32> {
    let mut nodes: Vec<u32> = ROLES
        .into_iter()
        .filter_map(|role| room.connection(role).or_else(|| room.unannounced_drop(role)).map(node_of))
        .collect();
    nodes.dedup();
    nodes
}

/// Hands each message to this node to `on_message` (the hub's). When the subscription drops,
/// messages published meanwhile are lost to this node: `lost` is called (the hub closes its
/// connections, whose clients resume and get their frames from the replay buffers; forwarded
/// inputs whose answers were lost fail after [`FORWARD_WAIT`]), and it subscribes again until
/// Redis answers; meanwhile the node takes no connections.
pub async fn run_inbox(mut inbox: Inbox, on_message: impl Fn(NodeMessage), lost: impl Fn()) {
    loop {
        while let Some(message) = inbox.stream.next().await {
            let payload = message.get_payload::<String>().ok();
            match payload.and_then(|payload| serde_json::from_str::<NodeMessage>(&payload).ok()) {
                Some(message) => on_message(message),
                None => tracing::warn!("undecodable message on the node channel"),
            }
        }
        tracing::error!("Redis subscription dropped: closing this node's connections; subscribing again");
        inbox.subscribed.store(false, Ordering::SeqCst);
        lost();
        loop {
            tokio::time::sleep(RESUBSCRIBE_EVERY).await;
            match Inbox::subscribe(&inbox.client, inbox.node).await {
                Ok(stream) => {
                    inbox.stream = stream;
                    inbox.subscribed.store(true, Ordering::SeqCst);
                    tracing::info!("Redis subscription renewed");
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "Redis: subscribing again failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use televisit_protocol::{CallStatus, ClientMessage, Frame};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    /// A `redis-server` and a directory of the test's own, removed when dropped.
    struct Scratch {
        redis: std::process::Child,
        dir: std::path::PathBuf,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = self.redis.kill();
            let _ = self.redis.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A Redis of the test's own (its URL) and a SQLite database for the nodes' chat.
    async fn scratch() -> (Scratch, String, Store) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let redis = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        let dir = std::env::temp_dir().join(format!("televisit-shared-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let scratch = Scratch { redis, dir };
        let store = Store::open(&format!("sqlite://{}/televisit.db", scratch.dir.display())).await.unwrap();
        (scratch, format!("redis://127.0.0.1:{port}"), store)
    }

    /// A node on `url` that beats and serves forwarded inputs as the hub does; what it sends to
    /// its connections comes out of the receiver. Aborting the handles kills it.
    async fn node(
        url: &str,
        store: &Store,
    ) -> (Arc<SharedRooms>, mpsc::UnboundedReceiver<Action>, [JoinHandle<()>; 2]) {
        let settings = ClusterSettings { idle_timeout_seconds: 45, reconnect_grace_seconds: 1 };
        let mut connected = None;
        for _ in 0..100 {
            let metrics = Arc::new(Metrics::default());
            match SharedRooms::connect(url, settings, store.clone(), Clock::default(), metrics).await {
                Ok(node) => {
                    connected = Some(node);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let (shared, inbox) = connected.expect("redis-server answers");
        let shared = Arc::new(shared);
        let (sent, sent_out) = mpsc::unbounded_channel();
        let served = Arc::downgrade(&shared);
        let on_message = move |message| {
            let Some(shared) = served.upgrade() else { return };
            let sent = sent.clone();
            match message {
                NodeMessage::Frames(frames) => frames.into_iter().for_each(|frame| _ = sent.send(frame)),
                NodeMessage::Reply { id, frames, reply } => {
                    frames.into_iter().for_each(|frame| _ = sent.send(frame));
                    shared.answered(id, reply);
                }
                NodeMessage::Input(forwarded) => {
                    let serving = shared.serve(forwarded);
                    _ = tokio::spawn(async move {
                        serving.await.into_iter().for_each(|frame| _ = sent.send(frame));
                    })
                }
            }
        };
        let inbox = tokio::spawn(run_inbox(inbox, on_message, || {}));
        let beating = Arc::downgrade(&shared);
        let beat = tokio::spawn(async move {
            while let Some(shared) = beating.upgrade() {
                let _ = shared.heartbeat().await;
                drop(shared);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        (shared, sent_out, [inbox, beat])
    }

    /// An appointment of a new doctor and patient: its id.
    async fn new_visit(store: &Store) -> String {
        let doctor_id = store.create_doctor("Dr Who", "who@example.org", None, None, 0).await.unwrap();
        let patient_id = store.create_patient("Pat", 0).await.unwrap();
        store.create_appointment(&doctor_id, &patient_id, 0, false, 0).await.unwrap().id.to_string()
    }

    /// A room to create, for a first input.
    fn room() -> Option<Room> {
        Some(Room::new("room".into(), CallStatus::Waiting, 45))
    }

    /// A connection's join, not resuming.
    fn join(role: Role, conn: ConnId) -> RoomInput {
        RoomInput::Connect { role, conn, resume_from: None, history: vec![], stored_through: 0 }
    }

    /// The types of the frames sent to `conn` so far.
    fn types_sent(sent: &mut mpsc::UnboundedReceiver<Action>, to: ConnId) -> Vec<String> {
        types_in(std::iter::from_fn(|| sent.try_recv().ok()), to)
    }

    /// The types of the frames among `actions` for `to`.
    fn types_in(actions: impl IntoIterator<Item = Action>, to: ConnId) -> Vec<String> {
        let for_it = |action| match action {
            Action::Send { conn, text, .. } if conn == to => Some(text),
            _ => None,
        };
        let frames = actions.into_iter().filter_map(for_it);
        frames
            .map(|text| {
                serde_json::from_str::<serde_json::Value>(&text).unwrap()["type"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    async fn owner(shared: &SharedRooms, visit: &str) -> Option<u32> {
        let owner: Option<String> =
            redis::cmd("GET").arg(owner_key(visit)).query_async(&mut shared.redis()).await.unwrap();
        owner.map(|owner| owner.parse().unwrap())
    }

    /// A room lives on the node that claimed it; another node's inputs are applied there and
    /// their frames come back with the answer; when that node dies, the next node with an input
    /// claims the room where it was left, and a node with no connection left in it lets it go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_is_applied_on_the_node_that_owns_it_and_claimed_when_that_node_dies() {
        let (_scratch, url, store) = scratch().await;
        let visit = new_visit(&store).await;
        let visit = visit.as_str();
        let (a, mut on_a, a_runs) = node(&url, &store).await;
        let (b, mut on_b, _b_runs) = node(&url, &store).await;
        let chat = |role, conn, seq, text: &str| RoomInput::Frame {
            role,
            conn,
            frame: Frame::numbered(seq, ClientMessage::Chat { text: text.into() }),
        };
        let (doctor, patient) = ((u64::from(a.node()) << 32) | 1, (u64::from(b.node()) << 32) | 1);

        // The doctor joins on node A, which claims the room.
        let joined = a.apply(visit, room(), None, join(Role::Doctor, doctor)).await.unwrap().unwrap();
        assert_eq!(joined.joined_from, Some(1));
        assert_eq!(owner(&a, visit).await, Some(a.node()));
        // The patient joins on node B: A applies it; the patient's frames come back to B.
        let joined = b.apply(visit, room(), None, join(Role::Patient, patient)).await.unwrap().unwrap();
        assert!(joined.joined_from.is_some());
        assert!(joined.actions.contains(&Action::MarkInProgress), "{:?}", joined.actions);
        assert!(types_sent(&mut on_b, patient).contains(&"joined".to_owned()));
        assert_eq!(owner(&a, visit).await, Some(a.node()), "still A's room");
        // A chat from B is stored once and reaches the doctor on A; its ack comes back to B.
        b.apply(visit, None, None, chat(Role::Patient, patient, 1, "hello")).await.unwrap().unwrap();
        assert_eq!(types_sent(&mut on_b, patient), ["chat", "ack"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(types_sent(&mut on_a, doctor).contains(&"chat".to_owned()));

        // Node A dies: B's next input finds it silent and claims the room as A committed it.
        a_runs.iter().for_each(JoinHandle::abort);
        redis::cmd("DEL").arg(alive_key(a.node())).query_async::<()>(&mut b.redis()).await.unwrap();
        let applied = b
            .apply(visit, None, None, chat(Role::Patient, patient, 2, "still there?"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(owner(&b, visit).await, Some(b.node()));
        // Its own connection's frames are B's to send now (the hub does, as the node that owns it).
        assert_eq!(types_in(applied.actions, patient), ["chat", "ack"]);
        // Its chat numbers go on where A left them: the first message is not taken again.
        b.apply(visit, None, None, chat(Role::Patient, patient, 1, "hello")).await.unwrap().unwrap();
        let stored = store.chat_history(visit).await.unwrap();
        assert_eq!(stored.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["hello", "still there?"]);

        // The patient's connection drops: B keeps the room while it runs the grace period, and
        // lets it go when that ends (it has no connection left in the room).
        b.apply(visit, None, None, RoomInput::Disconnect { role: Role::Patient, conn: patient })
            .await
            .unwrap();
        assert_eq!(owner(&b, visit).await, Some(b.node()));
        b.apply(visit, None, None, RoomInput::GraceExpired { role: Role::Patient, conn: patient })
            .await
            .unwrap();
        assert_eq!(owner(&b, visit).await, None);
        assert_eq!(b.rooms_in_memory(), 0);
    }

    /// The scripts Redis has run (claims and commits).
    async fn scripts_run(shared: &SharedRooms) -> u64 {
        let info: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut shared.redis()).await.unwrap();
        let calls = |line: &str| line.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok();
        info.lines().filter(|line| line.starts_with("cmdstat_eval")).filter_map(calls).sum()
    }

    /// Inputs that queued at a room while its commit was out are applied in the order they came
    /// and committed in one trip; when that commit is refused (another node took the room over),
    /// each of them fails, names the connections whose numbered frames went unsent, and the node
    /// keeps no copy of the room. (`take_turn` hands `apply_batch` the room and its batch so.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_of_queued_inputs_is_committed_in_one_trip_in_order_and_refused_whole() {
        let (_scratch, url, store) = scratch().await;
        let visit = new_visit(&store).await;
        let visit = visit.as_str();
        let (a, _on_a, _a_runs) = node(&url, &store).await;
        let (b, _on_b, _b_runs) = node(&url, &store).await;
        let (doctor, patient) = ((u64::from(a.node()) << 32) | 1, (u64::from(a.node()) << 32) | 2);
        a.apply(visit, room(), None, join(Role::Doctor, doctor)).await.unwrap().unwrap();
        a.apply(visit, room(), None, join(Role::Patient, patient)).await.unwrap().unwrap();
        let batch = |seqs: std::ops::RangeInclusive<u64>| -> Vec<Queued> {
            seqs.map(|seq| {
                let text = ClientMessage::Chat { text: format!("m{seq}") };
                let input =
                    RoomInput::Frame { role: Role::Doctor, conn: doctor, frame: Frame::numbered(seq, text) };
                Queued { create: None, replay_of: None, input, from: None, done: oneshot::channel().0 }
            })
            .collect()
        };
        let take_room = || a.owned.lock().unwrap()[visit].0.lock().unwrap().room.take();

        let scripts = scripts_run(&a).await;
        let (kept, outcomes) = a.apply_batch(visit, take_room(), batch(1..=3)).await;
        assert_eq!(scripts_run(&a).await - scripts, 1, "one commit for the batch");
        assert!(kept.is_some(), "the node keeps the room (its connections are here)");
        let to_patient: Vec<serde_json::Value> = outcomes
            .into_iter()
            .flat_map(|(_, outcome)| match outcome {
                Ok(Here::Applied(Some(applied))) => applied.actions,
                _ => panic!("every input of the batch is applied"),
            })
            .filter_map(|action| match action {
                Action::Send { conn, text, .. } if conn == patient => {
                    Some(serde_json::from_str(&text).unwrap())
                }
                _ => None,
            })
            .collect();
        let texts: Vec<&str> = to_patient.iter().map(|frame| frame["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["m1", "m2", "m3"]);
        let seqs: Vec<u64> = to_patient.iter().map(|frame| frame["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1), "{seqs:?}");
        let stored = store.chat_history(visit).await.unwrap();
        assert_eq!(stored.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["m1", "m2", "m3"]);
        a.owned.lock().unwrap()[visit].0.lock().unwrap().room = kept;

        // Node B takes the room over (as if A had been thought dead): A's next commit is refused.
        redis::cmd("SET")
            .arg(owner_key(visit))
            .arg(b.node())
            .query_async::<()>(&mut a.redis())
            .await
            .unwrap();
        let (kept, outcomes) = a.apply_batch(visit, take_room(), batch(4..=6)).await;
        assert!(kept.is_none(), "a refused commit leaves no copy of the room on A");
        assert_eq!(outcomes.len(), 3);
        for (_, outcome) in outcomes {
            match outcome {
                Err(failed) => assert!(failed.unsent_to.contains(&patient), "{:?}", failed.unsent_to),
                Ok(_) => panic!("an input of a refused commit is not applied"),
            }
        }
        assert_eq!(owner(&a, visit).await, Some(b.node()), "B's room is left alone");
    }
}
