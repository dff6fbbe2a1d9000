//! Signaling: the sans-I/O room, the hub that runs rooms, and the two transports.

pub mod chat_writer;
pub mod http_fallback;
pub mod hub;
pub mod in_order;
pub mod input;
pub mod rate_limit;
pub mod room;
pub mod shared;
pub mod shared_mailbox;
pub mod ws;
