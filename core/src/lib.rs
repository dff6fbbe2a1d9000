//! Televisit's shared client core.
//!
//! [`protocol`] (the signaling frames) and [`api`] (the HTTP API bodies) are the
//! `televisit-protocol` crate's, which the server shares; they are re-exported here for clients.

pub use televisit_protocol as protocol;
pub use televisit_protocol::api;

#[cfg(feature = "client")]
pub mod audio;
#[cfg(feature = "client")]
pub mod call;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod error;
#[cfg(feature = "client")]
pub mod frame;
#[cfg(feature = "client")]
pub mod link;
#[cfg(feature = "client")]
pub mod net;
#[cfg(feature = "client")]
pub mod network_control;
#[cfg(feature = "client")]
pub mod video;
