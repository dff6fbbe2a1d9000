//! Televisit's shared client core.
//!
//! [`protocol`] holds the signaling message types shared by the server and every client; it needs
//! only serde, so the server depends on this crate with `default-features = false`.

pub mod api;
pub mod protocol;

#[cfg(feature = "client")]
pub mod audio;
#[cfg(feature = "client")]
pub mod call;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "software-codec")]
pub mod codec;
#[cfg(feature = "client")]
pub mod error;
#[cfg(feature = "client")]
pub mod frame;
#[cfg(feature = "software-codec")]
pub mod headless;
#[cfg(feature = "client")]
pub mod link;
#[cfg(feature = "client")]
pub mod net;
#[cfg(feature = "client")]
pub mod network_control;
#[cfg(feature = "client")]
pub mod video;
