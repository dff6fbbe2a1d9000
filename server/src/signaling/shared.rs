//! Rooms shared by several server nodes through Redis (`--redis-url`).
//!
//! Each room's state (the sans-I/O [`Room`]: presence, waiting-room status, seqs, the sizes of
//! the frames kept for resumption) is one JSON value in Redis; the kept frames' texts are a list
//! per role beside it, read only when a connection resumes. An input to a room takes the room's lock in Redis, reads
//! the room, applies the input and stores the chat it accepted (in the database, so that no chat
//! stays "being stored" in a room whose node died); then one Lua script writes the room back,
//! publishes the frames it sends to other nodes' connections and lets the lock go. Frames for the
//! node's own connections are sent by the node itself once the commit is in; those for another
//! node's connections go through that node's pub/sub channel, all of an input's in one message.
//! The two paths can swap a connection's frames, so each connection puts its numbered frames back
//! in the room's order ([`super::in_order`]).
//! Nodes beat in Redis; the connections of a node that stops are dropped by another
//! ([`SharedRooms::heartbeat`]), so grace periods run for them as for any drop.
//!
//! A connection id carries its node (`node << 32 | n`), so a frame for a connection on a node that
//! died goes nowhere and stays in the replay buffer: the client resumes on another node with
//! `join` + `resume.last_seq` and gets exactly what it missed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Script, ScriptInvocation};
use serde::{Deserialize, Serialize};
use televisit_protocol::{ErrorCode, Role};

use super::chat_writer::ChatStorer;
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
/// A node that dies holding a room's lock holds it this long at most.
const LOCK_TTL_MS: u64 = 5_000;
/// How long an input waits for a room's lock before it gives up.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes a room's lock (KEYS[1]) for us (ARGV[1]) for ARGV[2] ms if it is free, and reads the
/// room (KEYS[2]) in the same trip: nil while the lock is taken, "" when there is no room.
static LOCK_AND_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"if not redis.call("set", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then return false end
return redis.call("get", KEYS[2]) or """#,
    )
});

/// Deletes the lock only if it is still ours (it may have expired and been taken).
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end"#,
    )
});

/// Commits an input in one step, only while the lock (KEYS[2]) is still ours (ARGV[1]): writes
/// the room (KEYS[1], ARGV[2], expiring in ARGV[3] s); brings the doctor's and the patient's
/// replay lists (KEYS[3], KEYS[4]) to the room's: appends each one's new frames (ARGV[7] and
/// ARGV[9] of them, after the record flags) and keeps its newest ARGV[6] and ARGV[8]; adds the
/// appointment (ARGV[4]) to or removes it from the record of each node whose connections the
/// input changed (KEYS[5..], "1" or "0" from ARGV[10]), publishes the frames (channel, payload
/// pairs after the new frames) and lets the lock go, or keeps it ARGV[5] ms more when that is not
/// "0" (for the next input of this node, see [`Held`]). A node killed at any point leaves the
/// input wholly applied or not at all, and never a lock held until it expires once its frames are
/// out, unless it kept it.
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
if ARGV[5] == "0" then redis.call("del", KEYS[2]) else redis.call("pexpire", KEYS[2], ARGV[5]) end
return 1
"#,
    )
});

/// A frame (or close) for a connection on another node, as published to that node's channel
/// (an input's frames for one node go as one JSON array of these).
#[derive(Debug, Serialize, Deserialize)]
enum Wire {
    Send {
        conn: ConnId,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Close {
        conn: ConnId,
        code: ErrorCode,
        message: String,
    },
    CloseNormally {
        conn: ConnId,
    },
}

impl Wire {
    /// The frame or close an action sends, or the action back if it sends none.
    fn from_action(action: Action) -> Result<Wire, Action> {
        Ok(match action {
            Action::Send { conn, text, seq } => Wire::Send { conn, text, seq },
            Action::Close { conn, code, message } => Wire::Close { conn, code, message },
            Action::CloseNormally { conn } => Wire::CloseNormally { conn },
            other => return Err(other),
        })
    }

    fn into_action(self) -> Action {
        match self {
            Wire::Send { conn, text, seq } => Action::Send { conn, text, seq },
            Wire::Close { conn, code, message } => Action::Close { conn, code, message },
            Wire::CloseNormally { conn } => Action::CloseNormally { conn },
        }
    }

    fn conn(&self) -> ConnId {
        match self {
            Wire::Send { conn, .. } | Wire::Close { conn, .. } | Wire::CloseNormally { conn } => *conn,
        }
    }
}

/// The node whose connection this is.
pub fn node_of(conn: ConnId) -> u32 {
    (conn >> 32) as u32
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

/// A room's lock: the token of the input that holds it.
fn lock_key(appointment_id: &str) -> String {
    format!("{}:lock", room_key(appointment_id))
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
    /// The inputs of this node to a room take turns here (first come, first served) before they
    /// take the room's lock in Redis, rather than asking Redis again every few ms while it is
    /// taken: by appointment, while any wait.
    turns: Turns,
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
        let shared = SharedRooms {
            redis,
            client: client.clone(),
            node,
            settings,
            subscribed: Arc::clone(&subscribed),
            chats: ChatStorer::start(store, clock, Arc::clone(&metrics)),
            metrics,
            turns: Default::default(),
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
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(block + LOCK_WAIT));
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

    /// Applies an input to a room under its lock. `create`: the room to start when Redis has none
    /// (`None`: leave it absent and return `None`). `replay_of`: the role whose replay texts the
    /// input reads (a resume); other inputs go without them. The frames for other nodes'
    /// connections are published; the other actions are returned, with the frames and closes for
    /// this node's connections, to send now (chat is stored here already).
    pub async fn apply(
        &self,
        appointment_id: &str,
        create: Option<Room>,
        replay_of: Option<Role>,
        input: impl FnOnce(&mut Room) -> Vec<Action>,
    ) -> Result<Option<Vec<Action>>, Failed> {
        // Held to the end, on every return (dropped in reverse order: the turn, then the entry).
        let turn = Turn::take(self, appointment_id);
        let mut in_turn = turn.room.lock().await;
        let mut redis = self.redis.clone();
        let key = room_key(appointment_id);
        let lock = lock_key(appointment_id);
        // The lock the input before this one kept for it, with the room as committed; else take it.
        let (token, state, handed_on) = match in_turn.take() {
            Some(held) => (held.token, held.state, held.handed_on),
            None => {
                let token = uuid::Uuid::new_v4().simple().to_string();
                let state =
                    self.metrics.redis("lock_read", lock_and_read(&mut redis, &key, &lock, &token)).await?;
                (token, state, 0)
            }
        };
        let room = serde_json::from_str::<Room>(&state).ok().or(create);
        let keep = handed_on < HANDED_ON_AT_MOST && turn.others_wait();
        let applied = self
            .apply_locked(&mut redis, appointment_id, [&key, &lock, &token], room, replay_of, keep, input)
            .await;
        let (commit, state, rest) = match applied {
            Ok(Some(applied)) => applied,
            other => {
                self.metrics.redis("unlock", let_go(&mut redis, &lock, &token)).await?;
                other?;
                return Ok(None);
            }
        };
        let committed: i64 = match self.metrics.redis("commit", commit.invoke_async(&mut redis)).await {
            Ok(committed) => committed,
            Err(error) => {
                // The commit may have been carried out, with the seqs of this node's frames: their
                // connections would wait for them for ever.
                let unsent_to = rest
                    .iter()
                    .filter_map(|action| match action {
                        Action::Send { conn, seq: Some(_), .. } => Some(*conn),
                        _ => None,
                    })
                    .collect();
                return Err(Failed { error, unsent_to });
            }
        };
        if committed == 0 {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "room lock expired before the commit",
            ))
            .into());
        }
        if keep {
            *in_turn = Some(Held { token, state, handed_on: handed_on + 1 });
        }
        Ok(Some(rest))
    }

    /// Rooms whose turns this node keeps now (a room's goes when no input of this node holds or
    /// waits for it).
    pub fn rooms_in_turn(&self) -> usize {
        self.turns.lock().expect("turns lock").len()
    }

    /// Applies the input to the room read under its lock (`None`: none, and none to create),
    /// storing its chat; returns the commit of the room and its frames (which keeps the lock if
    /// `keep_lock`), the room as committed, and the actions left to the hub.
    #[allow(clippy::too_many_arguments)]
    async fn apply_locked(
        &self,
        redis: &mut ConnectionManager,
        appointment_id: &str,
        [key, lock, token]: [&str; 3],
        room: Option<Room>,
        replay_of: Option<Role>,
        keep_lock: bool,
        input: impl FnOnce(&mut Room) -> Vec<Action>,
    ) -> redis::RedisResult<Option<(ScriptInvocation<'static>, String, Vec<Action>)>> {
        let Some(mut room) = room else {
            return Ok(None);
        };
        if let Some(role) = replay_of {
            let mut texts = redis::cmd("LRANGE");
            texts.arg(replay_key(appointment_id, role)).arg(0).arg(-1);
            room.load_replay(role, self.metrics.redis("replay", texts.query_async(redis)).await?);
        }
        let seqs_before = ROLES.map(|role| room.out_seq(role));
        let nodes_before = nodes_in(&room);
        let mut actions = input(&mut room);
        self.store_chat(appointment_id, &mut room, &mut actions).await;
        let nodes_after = nodes_in(&room);
        // The records of the nodes that gained or lost connections in the room.
        let records: Vec<(u32, bool)> = nodes_after
            .iter()
            .map(|node| (*node, true))
            .chain(nodes_before.iter().filter(|node| !nodes_after.contains(node)).map(|node| (*node, false)))
            .collect();
        let mut commit = COMMIT.prepare_invoke();
        commit.key(key).key(lock);
        ROLES.iter().for_each(|role| _ = commit.key(replay_key(appointment_id, *role)));
        records.iter().for_each(|(node, _)| _ = commit.key(rooms_of_key(*node)));
        let state = serde_json::to_string(&room).expect("a room encodes");
        commit.arg(token).arg(&state).arg(ROOM_TTL_SECONDS).arg(appointment_id);
        commit.arg(if keep_lock { LOCK_TTL_MS } else { 0 });
        let replays = [0, 1].map(|i| room.replay_since(ROLES[i], seqs_before[i]));
        replays.iter().for_each(|(kept, new)| _ = commit.arg(kept).arg(new.len()));
        records.iter().for_each(|(_, kept)| _ = commit.arg(if *kept { "1" } else { "0" }));
        replays.iter().flat_map(|(_, new)| new).for_each(|text| _ = commit.arg(text));
        let mut rest = Vec::new();
        let mut to_nodes: BTreeMap<u32, Vec<Wire>> = BTreeMap::new();
        for action in actions {
            match Wire::from_action(action) {
                Ok(wire) if node_of(wire.conn()) != self.node => {
                    to_nodes.entry(node_of(wire.conn())).or_default().push(wire);
                }
                // This node's own connection: sent by the hub once the commit is in.
                Ok(wire) => rest.push(wire.into_action()),
                Err(action) => rest.push(action),
            }
        }
        for (node, frames) in to_nodes {
            commit.arg(node_channel(node));
            commit.arg(serde_json::to_string(&frames).expect("frames encode"));
        }
        Ok(Some((commit, state, rest)))
    }

    /// Stores the chat the room accepted (with other rooms' in batches) and gives the room the
    /// outcome of each message.
    async fn store_chat(&self, appointment_id: &str, room: &mut Room, actions: &mut Vec<Action>) {
        let mut i = 0;
        while i < actions.len() {
            let Action::StoreChat { from, text, client_seq } = &actions[i] else {
                i += 1;
                continue;
            };
            let (from, client_seq) = (*from, *client_seq);
            let chat =
                NewChat { appointment_id: appointment_id.to_owned(), from, text: text.clone(), client_seq };
            actions.remove(i);
            let outcome = match self.chats.store(chat).await {
                Some(stored) => room.chat_stored(stored, client_seq),
                None => room.chat_not_stored(from, client_seq),
            };
            actions.splice(i..i, outcome);
        }
    }
}

/// Each room's turn on this node, by appointment, with the room's lock if the last input kept it.
type Turns = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Held>>>>>;

/// Times in a row a room's lock is handed on from one input of this node to the next at most,
/// so that other nodes' inputs, which ask Redis for it every few ms, get their turn.
const HANDED_ON_AT_MOST: u32 = 4;

/// A room's lock in Redis that an input kept for the next input of this node to the room, which
/// was waiting for its turn: that input skips taking the lock and reading the room (one trip to
/// Redis of the two), so a room busy on this node costs one trip per input.
struct Held {
    token: String,
    /// The room as the input committed it, as JSON: the next input reads exactly what it would
    /// have read from Redis (a `Room` in memory may still hold replay texts, which Redis keeps
    /// apart).
    state: String,
    handed_on: u32,
}

/// An input's place in its room's turns on this node ([`SharedRooms::apply`]); when the last
/// input holding or waiting for the room's turn lets it go (also when its future is dropped),
/// the room leaves the map, and a lock kept for an input that went away is let go.
struct Turn<'a> {
    shared: &'a SharedRooms,
    appointment_id: &'a str,
    room: Arc<tokio::sync::Mutex<Option<Held>>>,
}

impl<'a> Turn<'a> {
    fn take(shared: &'a SharedRooms, appointment_id: &'a str) -> Self {
        let mut turns = shared.turns.lock().expect("turns lock");
        let room = Arc::clone(turns.entry(appointment_id.to_owned()).or_default());
        Turn { shared, appointment_id, room }
    }

    /// Whether other inputs of this node hold or wait for the room's turn.
    fn others_wait(&self) -> bool {
        Arc::strong_count(&self.room) > 2
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut turns = self.shared.turns.lock().expect("turns lock");
        // Only the map and this input hold it: nobody else has it or waits for it (they take it
        // from the map, under the map's lock).
        if Arc::strong_count(&self.room) == 2 {
            turns.remove(self.appointment_id);
            let kept = self.room.try_lock().ok().and_then(|mut held| held.take());
            if let Some(Held { token, .. }) = kept {
                let (mut redis, lock) = (self.shared.redis.clone(), lock_key(self.appointment_id));
                tokio::spawn(async move { let_go(&mut redis, &lock, &token).await });
            }
        }
    }
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

/// Lets a room's lock go if it is still the one taken with `token` ([`UNLOCK`]).
async fn let_go(redis: &mut ConnectionManager, lock: &str, token: &str) -> redis::RedisResult<i64> {
    let mut unlock = UNLOCK.key(lock);
    unlock.arg(token);
    unlock.invoke_async(redis).await
}

/// Takes a room's lock (`SET NX` with an expiry), waiting up to [`LOCK_WAIT`] for it, and reads
/// the room in the same trip ([`LOCK_AND_READ`]): its JSON, or "" when there is none.
async fn lock_and_read(
    redis: &mut ConnectionManager,
    key: &str,
    lock: &str,
    token: &str,
) -> redis::RedisResult<String> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        let mut take = LOCK_AND_READ.key(lock);
        take.key(key).arg(token).arg(LOCK_TTL_MS);
        if let Some(state) = take.invoke_async::<Option<String>>(redis).await? {
            return Ok(state);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(redis::RedisError::from((redis::ErrorKind::Io, "room lock not free")));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
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

/// Hands the frames each message to this node brings to `deliver` (the hub's, for its
/// connections). When the subscription drops, frames published meanwhile are lost to this node:
/// `lost` is called (the hub closes its connections, whose clients resume and get them from the
/// replay buffers), and it subscribes again until Redis answers; meanwhile the node takes no
/// connections.
pub async fn run_inbox(mut inbox: Inbox, deliver: impl Fn(Vec<Action>), lost: impl Fn()) {
    loop {
        while let Some(message) = inbox.stream.next().await {
            let frames = message.get_payload::<String>().ok();
            match frames.and_then(|frames| serde_json::from_str::<Vec<Wire>>(&frames).ok()) {
                Some(frames) => deliver(frames.into_iter().map(Wire::into_action).collect()),
                None => tracing::warn!("undecodable frames on the node channel"),
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
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    use super::*;
    use televisit_protocol::CallStatus;

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

    /// A node on a Redis of its own (and a SQLite database for its chat).
    async fn node_on_its_own_redis() -> (Scratch, SharedRooms, Inbox) {
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
        let (url, settings) = (
            format!("redis://127.0.0.1:{port}"),
            ClusterSettings { idle_timeout_seconds: 45, reconnect_grace_seconds: 1 },
        );
        for _ in 0..100 {
            let metrics = Arc::new(Metrics::default());
            if let Ok((shared, inbox)) =
                SharedRooms::connect(&url, settings, store.clone(), Clock::default(), metrics).await
            {
                return (scratch, shared, inbox);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server does not answer on port {port}");
    }

    /// Polls `future` once.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
    }

    async fn lock_holder(redis: &mut ConnectionManager) -> Option<String> {
        redis::cmd("GET").arg(lock_key("visit")).query_async(redis).await.unwrap()
    }

    /// An input keeps the room's lock for the input of this node waiting for the room's turn; if
    /// that input goes away before its turn (its request was cancelled), the lock is let go at
    /// once, not left for other nodes to wait on until it expires (5 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_kept_for_an_input_that_went_away_is_let_go() {
        let (_scratch, shared, _inbox) = node_on_its_own_redis().await;
        let room = Room::new("room".into(), CallStatus::Waiting, 45);
        let mut redis = shared.redis();
        // Another node holds the room's lock a moment: the first input waits for it, having
        // taken the room's turn on this node; the second waits for that turn.
        redis::cmd("SET")
            .arg(lock_key("visit"))
            .arg("another-node")
            .query_async::<()>(&mut redis)
            .await
            .unwrap();
        let mut first = Box::pin(shared.apply("visit", Some(room), None, |_| Vec::new()));
        let mut second = Box::pin(shared.apply("visit", None, None, |_| Vec::new()));
        assert!(poll_once(&mut first).await.is_pending());
        assert!(poll_once(&mut second).await.is_pending());
        redis::cmd("DEL").arg(lock_key("visit")).query_async::<()>(&mut redis).await.unwrap();
        assert!(first.await.unwrap().is_some(), "the room was created");
        assert!(lock_holder(&mut redis).await.is_some(), "the lock is kept for the second input");
        drop(second);
        let mut held = true;
        for _ in 0..50 {
            held = lock_holder(&mut redis).await.is_some();
            if !held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!held, "the lock is let go");
        assert_eq!(shared.rooms_in_turn(), 0);
        // The room is free for the next input, on this node or another.
        assert!(shared.apply("visit", None, None, |_| Vec::new()).await.unwrap().is_some());
    }
}
