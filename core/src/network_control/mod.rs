//! Network control, sans-I/O: what the core decides about the packets it sends and receives,
//! with time passed as an argument and no sockets, threads or clocks inside. The adapters that
//! plug these decisions into the webrtc crate's interceptor chain live in [`crate::client`].
//!
//! - `bwe`: the send-side congestion controller (delay-based trendline over transport-cc
//!   feedback, loss-based, capped by the acknowledged rate, probing; REMB and receiver-report
//!   fallbacks for peers without transport-cc).
//! - [`nack`], [`retransmit`]: loss recovery with bounded retries and a retransmission budget.
//! - [`pacer`]: audio and RTCP first, retransmissions within their budget, then video.

pub mod bwe;
pub mod nack;
pub mod pacer;
pub mod retransmit;
