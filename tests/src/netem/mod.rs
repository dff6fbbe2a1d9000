//! A network link emulator for calls between two real clients: [`link`] is the sans-I/O model of
//! one direction (rate and its schedule, delay, jitter, loss, a drop-tail queue), [`relay`] the UDP
//! relay that puts a link per direction on a call's media path, [`call`] a two-party call through
//! the real server and the relay with real encoded media, and [`report`] the figures computed
//! from what they recorded, [`plot`] the charts.

pub mod call;
pub mod link;
pub mod plot;
pub mod relay;
pub mod report;

pub use link::{Delivered, Fate, Link, LinkConfig, PacketRecord, Verdict};
pub use relay::{DirectionReport, Relay, RelayConfig, RelayedMedia, Side};
