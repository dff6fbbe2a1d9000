//! The software codec path (feature `software-codec`): VP8 and Opus in software, for the headless
//! participant (`televisit join`), the tests and the benchmark. Phones encode and decode with
//! their hardware codecs and build the core without this feature.
//!
//! - [`video`]: raw I420 pictures ([`I420Frame`]) → VP8 [`EncodedFrame`](crate::frame::EncodedFrame)s
//!   following the adaptive ladder's [`EncoderTarget`](crate::call::ladder::EncoderTarget), and back.
//! - [`audio`]: 48 kHz mono 20 ms PCM → Opus packets, and back.
//! - [`pattern`]: a moving test picture carrying a frame counter that survives lossy compression
//!   and can be read back from a *decoded* picture ([`crate::video::pattern`]), and a synthetic
//!   microphone (a sine tone).
//!
//! The video engine ([`crate::video`]) drives these codecs through its codec interface
//! ([`crate::video::software_codecs`]).
//!
//! ## Why these crates
//!
//! - **VP8: `env-libvpx-sys`** (raw bindings, pre-generated for Debian's libvpx 1.12, linked with
//!   pkg-config: no bindgen, no network at build time) under our own safe wrapper,
//!   `codec::vpx` (the core's one module with `unsafe`, documented there). The safe crates do not
//!   fit: `vpx-rs` (encoder and decoder) calls a libvpx 1.13-only control and does not build on
//!   Debian 12; `vpx-encode` has no decoder; neither can change the bitrate of a running encoder.
//! - **Opus**: the audio engine's (`crate::audio::opus`, `opusic-c` over a bundled libopus built
//!   with cmake), so the core links one libopus and needs no system Opus.

pub mod audio;
pub mod pattern;
pub mod video;
mod vpx;

pub use crate::video::codecs::CodecError;
pub use crate::video::picture::{chroma_size, I420Frame};
