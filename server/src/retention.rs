//! Retention: chat (health data), call tokens, web sessions and the audit log are kept only as
//! long as the clinic's settings say; a background job deletes the rest every hour.

use std::time::Duration;

use crate::store::{PurgeCounts, PurgeCutoffs, StoreResult};
use crate::SharedState;

/// How often the purge runs (and once at start).
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);

const DAY_MS: i64 = 24 * 3600 * 1000;

/// How long each kind of record is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days the chat of an ended visit is kept; `None` keeps it for good.
    pub chat_days: Option<u32>,
    /// Days an expired or revoked call token is kept (so its link is still answered "expired").
    pub token_days: u32,
    /// Days an audit entry is kept; `None` keeps it for good.
    pub audit_days: Option<u32>,
}

impl Retention {
    /// The cutoffs at `now_ms`. Web sessions go as soon as they expire.
    pub fn cutoffs(&self, now_ms: i64) -> PurgeCutoffs {
        let before = |days: u32| now_ms.saturating_sub(i64::from(days) * DAY_MS);
        PurgeCutoffs {
            now_ms,
            chat_of_visits_ended_before_ms: self.chat_days.map(before),
            tokens_dead_before_ms: before(self.token_days),
            audit_before_ms: self.audit_days.map(before),
        }
    }
}

/// Runs one purge at the server clock's now and logs what went (counts only).
pub async fn purge_once(state: &SharedState) -> StoreResult<PurgeCounts> {
    let counts = state.store.purge(&state.config.retention.cutoffs(state.clock.now_ms())).await?;
    if counts != PurgeCounts::default() {
        tracing::info!(?counts, "retention purge");
    }
    Ok(counts)
}

/// Purges now and then every [`PURGE_EVERY`], until the task is aborted.
pub async fn purge_periodically(state: SharedState) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        every.tick().await;
        if let Err(error) = purge_once(&state).await {
            tracing::warn!(%error, "retention purge failed; retrying at the next round");
        }
    }
}
