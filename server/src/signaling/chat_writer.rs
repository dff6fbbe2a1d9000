//! The chat writer: one task stores every room's chat, in batches of one transaction each, so
//! stored chat keeps up with relayed frames (one transaction per message tops out at a few
//! thousand a second on SQLite). Each stored message goes back to its room, which delivers it and
//! acknowledges it to its sender; a message is never acknowledged before its batch committed.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use televisit_protocol::ChatMessage;
use tokio::sync::{mpsc, oneshot};

use super::hub::Hub;
use crate::metrics::Metrics;
use crate::secrets::Clock;
use crate::store::{is_busy, NewChat, Store};

/// Most messages in one transaction.
const MAX_BATCH: usize = 1000;
/// A batch that fails because the database is busy is tried again this many times, waiting
/// longer each time (the busy timeout already waited on each try).
const BUSY_RETRIES: u32 = 5;

/// A chat message waiting to be stored.
pub struct PendingChat {
    /// What to store (its appointment's room gets it once stored, by its `client_seq`).
    pub chat: NewChat,
    /// When its frame arrived.
    pub arrived: Instant,
}

enum Job {
    Store(PendingChat),
    /// Answered once every message submitted before it is stored (or failed).
    Flush(oneshot::Sender<()>),
}

/// The writer's queue. Dropping it (with the hub) ends the task once the queue is drained.
pub struct ChatWriter {
    jobs: mpsc::UnboundedSender<Job>,
}

impl ChatWriter {
    /// Starts the writer task; it hands outcomes to the hub while the hub lives.
    pub fn start(store: Store, hub: Weak<Hub>) -> ChatWriter {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(store, hub, queue));
        ChatWriter { jobs }
    }

    /// Queues a message. Unbounded here because each room bounds its own messages in storage
    /// (`STORING_LIMIT`) and each connection its frame rate.
    pub fn submit(&self, pending: PendingChat) {
        if self.jobs.send(Job::Store(pending)).is_err() {
            tracing::error!("chat writer stopped; message not stored");
        }
    }

    /// Waits until every message submitted so far is stored (or failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.jobs.send(Job::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(store: Store, hub: Weak<Hub>, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::new();
    let mut flushes = Vec::new();
    while let Some(job) = queue.recv().await {
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                Job::Store(pending) => batch.push(pending),
                Job::Flush(done) => flushes.push(done),
            }
            if batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let chats: Vec<NewChat> = batch.iter().map(|p| p.chat.clone()).collect();
            let outcome = store_batch(&store, &hub, &chats).await;
            let Some(hub) = hub.upgrade() else { return };
            hub.chat_outcome(std::mem::take(&mut batch), outcome);
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Stores a batch for the hub, while it lives. `None`: not stored.
async fn store_batch(store: &Store, hub: &Weak<Hub>, chats: &[NewChat]) -> Option<Vec<ChatMessage>> {
    let hub = hub.upgrade()?;
    store_with_retries(store, hub.metrics(), hub.now_ms(), chats).await
}

/// Stores a batch, trying again while the database is busy. `None`: not stored.
async fn store_with_retries(
    store: &Store,
    metrics: &Metrics,
    now_ms: i64,
    chats: &[NewChat],
) -> Option<Vec<ChatMessage>> {
    let mut attempt = 0;
    loop {
        match metrics.db("chat_batch", store.add_chats(chats, now_ms)).await {
            Ok(stored) => return Some(stored),
            Err(e) if is_busy(&e) && attempt < BUSY_RETRIES => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "database busy; chat batch waits");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, messages = chats.len(), "chat batch not stored");
                return None;
            }
        }
    }
}

/// A message to store for a caller that waits for it.
type Awaited = (NewChat, oneshot::Sender<Option<ChatMessage>>);

/// Stores chat for callers that wait for each message's outcome: rooms in Redis, whose input
/// holds the room's lock meanwhile. In batches of one transaction each, as [`ChatWriter`]: with
/// one transaction per message, each input held its room's lock behind every other room's write
/// (the database has one writer), and at 3 000 messages/s inputs waited seconds.
pub struct ChatStorer {
    jobs: mpsc::UnboundedSender<Awaited>,
}

impl ChatStorer {
    /// Starts the storing task (needs a Tokio runtime); it ends when the storer is dropped.
    pub fn start(store: Store, clock: Clock, metrics: Arc<Metrics>) -> ChatStorer {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(store_awaited(store, clock, metrics, queue));
        ChatStorer { jobs }
    }

    /// Stores a message with the others waiting; `None`: not stored.
    pub async fn store(&self, chat: NewChat) -> Option<ChatMessage> {
        let (done, outcome) = oneshot::channel();
        self.jobs.send((chat, done)).ok()?;
        outcome.await.ok().flatten()
    }
}

async fn store_awaited(
    store: Store,
    clock: Clock,
    metrics: Arc<Metrics>,
    mut queue: mpsc::UnboundedReceiver<Awaited>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = queue.try_recv() else { break };
            batch.push(next);
        }
        let (chats, waiting): (Vec<NewChat>, Vec<_>) = batch.into_iter().unzip();
        let stored = store_with_retries(&store, &metrics, clock.now_ms(), &chats).await;
        match stored.filter(|stored| stored.len() == waiting.len()) {
            Some(stored) => {
                stored.into_iter().zip(waiting).for_each(|(message, done)| _ = done.send(Some(message)))
            }
            None => waiting.into_iter().for_each(|done| _ = done.send(None)),
        }
    }
}
