//! HTTP-fallback sessions in Redis (`--redis-url`), so that a poll or post landing on any node
//! finds the session, and a session whose node died goes on from another.
//!
//! Why this design: a session is a record (a hash: the grant, the connection, the mailbox's last
//! cursor, the `seq` of the last numbered frame in it, closed or not, when the client was last
//! seen) and its mailbox a Redis stream whose entry ids are the cursors (`0-N`), both keyed by the
//! token's hash. Any node answers a poll from the stream and posts a frame to the room with the
//! recorded connection (rooms are in Redis already), so no request is routed to another node and
//! no node holds anything a poll needs. The node holding the connection (its "owner") only copies
//! the room's frames into the stream; the copy and the record's `last_seq` change in one script,
//! so when the owner dies, the node that takes over resumes the room's connection after exactly
//! the frames the stream has: nothing lost, nothing twice. The stream keeps what the client has not
//! acknowledged (`after`), like the in-process mailbox. Routing polls to the owner over pub/sub was
//! the alternative: it needs request/response across nodes and still loses the mailbox with its node.

use redis::Script;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use super::hub::{Grant, OUTBOX_FRAMES};
use super::room::ConnId;
use super::shared::SharedRooms;

/// A record and its mailbox expire this long after the client or the owner last touched them
/// (the owner's reaper deletes them before, at idle timeout or close).
const SESSION_TTL_MS: u64 = 10 * 60 * 1000;

/// How long one blocking read of the stream waits, and so how often a waiting poll looks whether
/// the owner still lives.
const READ_BLOCK: Duration = Duration::from_millis(400);

/// A node taking over a session holds this lock so that two polls do not both take over.
const TAKEOVER_LOCK_MS: u64 = 5_000;

/// Appends a frame to the mailbox, only while the session's connection is still ARGV[1] (a node
/// that lost the session copies nothing more): the next cursor, the frame (ARGV[2], none when
/// empty), the record's `last_seq` (ARGV[3], when the frame is numbered) and `closed` (ARGV[4]).
/// Returns the cursor, -1 when the connection is not the session's, or -2 (and the session
/// closed) when the mailbox already holds ARGV[6] frames the client has not fetched.
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call("hget", KEYS[1], "conn") ~= ARGV[1] then return -1 end
if ARGV[2] ~= "" and redis.call("xlen", KEYS[2]) >= tonumber(ARGV[6]) then
  redis.call("hset", KEYS[1], "closed", "1")
  return -2
end
local cursor = redis.call("hget", KEYS[1], "cursor")
if ARGV[2] ~= "" then
  cursor = redis.call("hincrby", KEYS[1], "cursor", 1)
  redis.call("xadd", KEYS[2], "0-" .. cursor, "f", ARGV[2])
end
if ARGV[3] ~= "" then redis.call("hset", KEYS[1], "last_seq", ARGV[3]) end
if ARGV[4] == "1" then redis.call("hset", KEYS[1], "closed", "1") end
redis.call("pexpire", KEYS[1], ARGV[5])
redis.call("pexpire", KEYS[2], ARGV[5])
return tonumber(cursor)
"#,
    )
});

/// Deletes the session only while its connection is still ARGV[1] (not replaced or taken over).
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"if redis.call("hget", KEYS[1], "conn") == ARGV[1] then return redis.call("del", KEYS[1], KEYS[2]) else return 0 end"#,
    )
});

/// Moves the session to a new connection only while it is still on ARGV[1] (a takeover).
static MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"if redis.call("hget", KEYS[1], "conn") == ARGV[1] then redis.call("hset", KEYS[1], "conn", ARGV[2]) return 1 else return 0 end"#,
    )
});

/// A post: the client was here (`seen` = ARGV[1], both keys expire in ARGV[2] ms), and takes a
/// token from the session's bucket (ARGV[3] per second, ARGV[4] at most), kept in the record and
/// timed by Redis's clock, so every node draws from the same bucket. Returns 1, or 0: no token.
static POST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call("hset", KEYS[1], "seen", ARGV[1])
redis.call("pexpire", KEYS[1], ARGV[2])
redis.call("pexpire", KEYS[2], ARGV[2])
local time = redis.call("time")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local per_second, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local bucket = redis.call("hmget", KEYS[1], "tokens", "tokens_at")
local tokens = tonumber(bucket[1]) or burst
local elapsed = math.max(0, now - (tonumber(bucket[2]) or now))
tokens = math.min(burst, tokens + elapsed * per_second / 1000)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call("hset", KEYS[1], "tokens", tostring(tokens), "tokens_at", tostring(now))
return allowed
"#,
    )
});

/// What became of a frame copied into a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// It is in the mailbox.
    Kept,
    /// The session is no longer this connection's (a new join, a takeover): nothing was copied.
    MovedOn,
    /// The mailbox holds [`OUTBOX_FRAMES`] the client has not fetched: too slow, as a WebSocket
    /// whose outbox is full. The session is closed; the frame stays in the room's replay buffer.
    Full,
}

/// A fallback session as Redis records it.
#[derive(Debug, Clone)]
pub struct Record {
    /// What the token granted when it joined.
    pub grant: Grant,
    /// The room's connection of the session (its node is the owner).
    pub conn: ConnId,
    /// The `seq` of the last numbered frame in the mailbox (`None`: none yet, and it joined fresh).
    pub last_seq: Option<u64>,
    /// The session ended (its last frame, if any, is in the mailbox).
    pub closed: bool,
    /// When the client last polled or posted, ms since the Unix epoch.
    pub seen_ms: i64,
}

/// The fallback sessions in Redis, seen from one node.
pub struct SharedMailboxes<'a> {
    shared: &'a SharedRooms,
}

fn record_key(token_hash: &str) -> String {
    format!("televisit:fallback:{token_hash}")
}

fn frames_key(token_hash: &str) -> String {
    format!("televisit:fallback:{token_hash}:frames")
}

impl<'a> SharedMailboxes<'a> {
    /// The sessions in the Redis of these rooms.
    pub fn new(shared: &'a SharedRooms) -> Self {
        SharedMailboxes { shared }
    }

    /// Starts a session (replacing any of the token's, with an empty mailbox).
    pub async fn open(
        &self,
        token_hash: &str,
        grant: &Grant,
        conn: ConnId,
        resume_from: Option<u64>,
        now_ms: i64,
    ) -> redis::RedisResult<()> {
        let (record, frames) = (record_key(token_hash), frames_key(token_hash));
        let grant = serde_json::to_string(grant).expect("a grant encodes");
        let mut open = redis::pipe();
        open.atomic().del(&[&record, &frames]).ignore();
        open.hset_multiple(&record, &[("grant", grant), ("conn", conn.to_string()), ("cursor", "0".into())])
            .ignore();
        open.hset(&record, "seen", now_ms).ignore();
        if let Some(last_seq) = resume_from {
            open.hset(&record, "last_seq", last_seq).ignore();
        }
        open.pexpire(&record, SESSION_TTL_MS as i64).ignore();
        open.query_async::<()>(&mut self.shared.redis()).await
    }

    /// The token's session, if one is open.
    pub async fn load(&self, token_hash: &str) -> redis::RedisResult<Option<Record>> {
        let fields: HashMap<String, String> =
            redis::cmd("HGETALL").arg(record_key(token_hash)).query_async(&mut self.shared.redis()).await?;
        let grant = fields.get("grant").and_then(|grant| serde_json::from_str(grant).ok());
        let conn = fields.get("conn").and_then(|conn| conn.parse().ok());
        let (Some(grant), Some(conn)) = (grant, conn) else { return Ok(None) };
        Ok(Some(Record {
            grant,
            conn,
            last_seq: fields.get("last_seq").and_then(|seq| seq.parse().ok()),
            closed: fields.get("closed").is_some_and(|closed| closed == "1"),
            seen_ms: fields.get("seen").and_then(|seen| seen.parse().ok()).unwrap_or(0),
        }))
    }

    /// The client was here now: keeps the session from going idle.
    pub async fn touch(&self, token_hash: &str, now_ms: i64) -> redis::RedisResult<()> {
        let (record, frames) = (record_key(token_hash), frames_key(token_hash));
        redis::pipe()
            .hset(&record, "seen", now_ms)
            .ignore()
            .pexpire(&record, SESSION_TTL_MS as i64)
            .ignore()
            .pexpire(&frames, SESSION_TTL_MS as i64)
            .ignore()
            .query_async::<()>(&mut self.shared.redis())
            .await
    }

    /// The client posts a frame now: keeps the session from going idle, and takes a token from
    /// its rate limit (`per_second` sustained, `burst` at once), shared by every node. Returns
    /// false when the client is over it.
    pub async fn post(
        &self,
        token_hash: &str,
        now_ms: i64,
        per_second: u32,
        burst: u32,
    ) -> redis::RedisResult<bool> {
        let mut post = POST.key(record_key(token_hash));
        post.key(frames_key(token_hash))
            .arg(now_ms)
            .arg(SESSION_TTL_MS)
            .arg(per_second.max(1))
            .arg(burst.max(1));
        let allowed: i64 = post.invoke_async(&mut self.shared.redis()).await?;
        Ok(allowed == 1)
    }

    /// The owner copies a frame of connection `conn` into the mailbox (`text` empty: only closes).
    /// Returns false when the session is no longer on `conn`.
    pub async fn push(
        &self,
        token_hash: &str,
        conn: ConnId,
        text: &str,
        seq: Option<u64>,
        closed: bool,
    ) -> redis::RedisResult<Pushed> {
        let mut push = PUSH.key(record_key(token_hash));
        push.key(frames_key(token_hash)).arg(conn.to_string()).arg(text);
        push.arg(seq.map_or(String::new(), |seq| seq.to_string())).arg(if closed { "1" } else { "0" });
        push.arg(SESSION_TTL_MS).arg(OUTBOX_FRAMES);
        let cursor: i64 = push.invoke_async(&mut self.shared.redis()).await?;
        Ok(match cursor {
            -1 => Pushed::MovedOn,
            -2 => Pushed::Full,
            _ => Pushed::Kept,
        })
    }

    /// Drops the frames up to cursor `after` (the client has them) and returns the rest with the
    /// cursor of the last one, and whether the session is closed.
    pub async fn take_after(
        &self,
        token_hash: &str,
        after: u64,
    ) -> redis::RedisResult<(Vec<serde_json::Value>, u64, bool)> {
        let (record, frames) = (record_key(token_hash), frames_key(token_hash));
        let next = format!("0-{}", after + 1);
        let (entries, closed): (Vec<Entry>, Option<String>) = redis::pipe()
            .atomic()
            .cmd("XTRIM")
            .arg(&frames)
            .arg("MINID")
            .arg(&next)
            .ignore()
            .cmd("XRANGE")
            .arg(&frames)
            .arg(&next)
            .arg("+")
            .hget(&record, "closed")
            .query_async(&mut self.shared.redis())
            .await?;
        Ok(decode_entries(entries, after, closed.is_some_and(|closed| closed == "1")))
    }

    /// A connection for [`SharedMailboxes::wait_after`].
    pub async fn waiting_connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.shared.own_connection(READ_BLOCK).await
    }

    /// Waits on a connection of its own for a frame after cursor `after`, at most about
    /// [`READ_BLOCK`]; true when one came.
    pub async fn wait_after(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
        token_hash: &str,
        after: u64,
    ) -> redis::RedisResult<bool> {
        let read: Option<redis::Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(frames_key(token_hash))
            .arg(format!("0-{after}"))
            .query_async(connection)
            .await?;
        Ok(read.is_some_and(|read| !matches!(read, redis::Value::Nil)))
    }

    /// Takes the takeover lock of a session (false: another node is taking it over).
    pub async fn lock_takeover(&self, token_hash: &str) -> redis::RedisResult<bool> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(format!("{}:takeover", record_key(token_hash)))
            .arg(self.shared.node())
            .arg("NX")
            .arg("PX")
            .arg(TAKEOVER_LOCK_MS)
            .query_async(&mut self.shared.redis())
            .await?;
        Ok(taken.is_some())
    }

    /// Moves the session from connection `from` to `to` (a takeover); false if it is not on `from`.
    pub async fn move_to(&self, token_hash: &str, from: ConnId, to: ConnId) -> redis::RedisResult<bool> {
        let mut move_to = MOVE.key(record_key(token_hash));
        move_to.arg(from.to_string()).arg(to.to_string());
        let moved: i64 = move_to.invoke_async(&mut self.shared.redis()).await?;
        let _: () = redis::cmd("DEL")
            .arg(format!("{}:takeover", record_key(token_hash)))
            .query_async(&mut self.shared.redis())
            .await?;
        Ok(moved == 1)
    }

    /// Deletes the session and its mailbox if it is still on `conn`.
    pub async fn remove(&self, token_hash: &str, conn: ConnId) -> redis::RedisResult<()> {
        let mut remove = REMOVE.key(record_key(token_hash));
        remove.key(frames_key(token_hash)).arg(conn.to_string());
        remove.invoke_async::<i64>(&mut self.shared.redis()).await.map(|_| ())
    }

    /// The number of frames in the mailbox (not yet acknowledged).
    pub async fn waiting(&self, token_hash: &str) -> redis::RedisResult<u64> {
        redis::cmd("XLEN").arg(frames_key(token_hash)).query_async(&mut self.shared.redis()).await
    }

    /// Whether the node of a connection lives.
    pub async fn owner_alive(&self, conn: ConnId) -> redis::RedisResult<bool> {
        self.shared.is_alive(super::shared::node_of(conn)).await
    }
}

/// A stream entry: its id and fields.
type Entry = (String, HashMap<String, String>);

/// Stream entries (`0-N`, field `f`) as frames, the cursor of the last (else `after`), `closed`.
fn decode_entries(entries: Vec<Entry>, after: u64, closed: bool) -> (Vec<serde_json::Value>, u64, bool) {
    let mut cursor = after;
    let mut frames = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        if let Some(n) = id.strip_prefix("0-").and_then(|n| n.parse::<u64>().ok()) {
            cursor = cursor.max(n);
        }
        if let Some(frame) = fields.get("f").and_then(|text| serde_json::from_str(text).ok()) {
            frames.push(frame);
        }
    }
    (frames, cursor, closed)
}
