//! Prometheus metrics at `/metrics`: calls by status, rooms, open connections, frames received
//! and relayed, refusals, resumes, and the latency of the signaling's database and Redis work.

use std::future::Future;
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use televisit_protocol::{CallStatus, ClientMessage, ErrorCode};

type Labels = Vec<(&'static str, &'static str)>;

/// Runs `work` and records how long it took in `histograms` under `operation`.
async fn timed<T>(
    histograms: &Family<Labels, Histogram>,
    operation: &'static str,
    work: impl Future<Output = T>,
) -> T {
    let began = Instant::now();
    let result = work.await;
    histograms.get_or_create(&vec![("operation", operation)]).observe(began.elapsed().as_secs_f64());
    result
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    connections_open: Gauge,
    connections_total: Counter,
    frames_relayed: Counter,
    frames_received: Family<Labels, Counter>,
    resumes: Family<Labels, Counter>,
    db_seconds: Family<Labels, Histogram>,
    redis_seconds: Family<Labels, Histogram>,
    chat_seconds: Histogram,
    refusals: Family<Labels, Counter>,
    calls: Family<Labels, Gauge>,
    rooms: Gauge,
    replay_bytes: Gauge,
}

/// The hub's memory at the moment of a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubMemory {
    /// Rooms in memory.
    pub rooms: usize,
    /// Bytes of frames kept for resumption, all rooms together.
    pub replay_bytes: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("televisit");
        let connections_open = Gauge::default();
        let connections_total = Counter::default();
        let frames_relayed = Counter::default();
        let refusals = Family::<Labels, Counter>::default();
        let calls = Family::<Labels, Gauge>::default();
        let frames_received = Family::<Labels, Counter>::default();
        let resumes = Family::<Labels, Counter>::default();
        // 0.1 ms to ~3 s, doubling.
        let latency = || {
            Family::<Labels, Histogram>::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 15))
            })
        };
        let (db_seconds, redis_seconds) = (latency(), latency());
        registry.register(
            "signaling_frames_received",
            "Frames received from participants, by type",
            frames_received.clone(),
        );
        registry.register(
            "signaling_resumes",
            "Reconnections that asked to resume, by outcome (resumed, or started over)",
            resumes.clone(),
        );
        // 0.5 ms to ~0.2 s, by half again each step: fine enough to tell a few ms from tens.
        let chat_seconds =
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 1.5, 16));
        registry.register(
            "signaling_chat_seconds",
            "Time from a chat frame's arrival to its delivery, stored (waiting for storage included)",
            chat_seconds.clone(),
        );
        registry.register(
            "db_seconds",
            "Time of the signaling's database work, by operation",
            db_seconds.clone(),
        );
        registry.register(
            "redis_seconds",
            "Time of the signaling's Redis work with --redis-url, by operation",
            redis_seconds.clone(),
        );
        registry.register(
            "signaling_connections_open",
            "Open signaling connections",
            connections_open.clone(),
        );
        registry.register(
            "signaling_connections",
            "Signaling connections admitted",
            connections_total.clone(),
        );
        registry.register(
            "signaling_frames_relayed",
            "Frames relayed between participants",
            frames_relayed.clone(),
        );
        registry.register("refusals", "Requests and connections refused, by error code", refusals.clone());
        registry.register("calls", "Appointments by call status", calls.clone());
        let (rooms, replay_bytes) = (Gauge::default(), Gauge::default());
        registry.register("signaling_rooms", "Signaling rooms in memory", rooms.clone());
        registry.register(
            "signaling_replay_bytes",
            "Bytes of frames kept for resumption, all rooms",
            replay_bytes.clone(),
        );
        Metrics {
            registry,
            connections_open,
            connections_total,
            frames_relayed,
            frames_received,
            resumes,
            db_seconds,
            redis_seconds,
            chat_seconds,
            refusals,
            calls,
            rooms,
            replay_bytes,
        }
    }
}

impl Metrics {
    /// A signaling connection was admitted.
    pub fn connections_opened(&self) {
        self.connections_open.inc();
        self.connections_total.inc();
    }

    /// A signaling connection closed.
    pub fn connections_closed(&self) {
        self.connections_open.dec();
    }

    /// A frame was relayed to a peer.
    pub fn frame_relayed(&self) {
        self.frames_relayed.inc();
    }

    /// A frame arrived from a participant.
    pub fn frame_received(&self, message: &ClientMessage) {
        self.frames_received.get_or_create(&vec![("type", frame_type(message))]).inc();
    }

    /// A reconnection asked to resume: `resumed` whether every missed frame was still kept.
    pub fn resume(&self, resumed: bool) {
        let outcome = if resumed { "resumed" } else { "started_over" };
        self.resumes.get_or_create(&vec![("outcome", outcome)]).inc();
    }

    /// Runs a database operation and records how long it took under `operation`.
    pub async fn db<T>(&self, operation: &'static str, work: impl Future<Output = T>) -> T {
        timed(&self.db_seconds, operation, work).await
    }

    /// Runs a Redis operation and records how long it took under `operation`.
    pub async fn redis<T>(&self, operation: &'static str, work: impl Future<Output = T>) -> T {
        timed(&self.redis_seconds, operation, work).await
    }

    /// A chat frame that arrived `seconds` ago was stored and delivered.
    pub fn chat_delivered(&self, seconds: f64) {
        self.chat_seconds.observe(seconds);
    }

    /// Something was refused with this code.
    pub fn refused(&self, code: ErrorCode) {
        self.refusals.get_or_create(&vec![("code", code.as_str())]).inc();
    }

    /// Frames relayed so far.
    pub fn frames_relayed_total(&self) -> u64 {
        self.frames_relayed.get()
    }

    /// The text exposition, with the call counts and the hub's memory read just now.
    pub fn render(&self, calls_by_status: &[(CallStatus, i64)], hub: HubMemory) -> String {
        self.rooms.set(hub.rooms as i64);
        self.replay_bytes.set(hub.replay_bytes as i64);
        for status in [CallStatus::NotStarted, CallStatus::Waiting, CallStatus::InProgress, CallStatus::Ended]
        {
            let count = calls_by_status.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
            self.calls.get_or_create(&vec![("status", status.as_str())]).set(count);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// A client frame's `type`, as on the wire.
fn frame_type(message: &ClientMessage) -> &'static str {
    match message {
        ClientMessage::Join { .. } => "join",
        ClientMessage::Leave => "leave",
        ClientMessage::Offer(_) => "offer",
        ClientMessage::Answer(_) => "answer",
        ClientMessage::IceCandidate(_) => "ice-candidate",
        ClientMessage::Chat { .. } => "chat",
        ClientMessage::ScreenShare { .. } => "screen-share",
        ClientMessage::Examination { .. } => "examination",
        ClientMessage::MediaState(_) => "media-state",
        ClientMessage::Quality(_) => "quality",
        ClientMessage::WaitingMessage { .. } => "waiting-message",
        ClientMessage::EndCall => "end-call",
        ClientMessage::Ping => "ping",
    }
}
