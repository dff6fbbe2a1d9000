//! Televisit's software codecs: VP8, H.264 and Opus in software, for the headless participant
//! (`televisit join`), desktop apps, the tests and the benchmarks. Phones encode and decode with
//! their hardware codecs and do not link this crate (nor libvpx). The only crate of the workspace
//! with `unsafe` code: the libvpx wrapper, [`vpx`](crate#why-these-crates), and one OpenH264 call.
//!
//! - [`video`]: raw I420 pictures ([`I420Frame`]) → VP8 [`EncodedFrame`](televisit_core::frame::EncodedFrame)s
//!   following the adaptive ladder's [`EncoderTarget`](televisit_core::call::ladder::EncoderTarget), and back.
//! - [`h264`] (feature `h264`, on by default): the same for H.264 through OpenH264, what a call
//!   with a phone whose hardware favours H.264 negotiates.
//! - [`audio`]: 48 kHz mono 20 ms PCM → Opus packets, and back.
//! - [`pattern`]: a moving test picture carrying a frame counter that survives lossy compression
//!   and can be read back from a *decoded* picture ([`televisit_core::video::pattern`]), and a
//!   synthetic microphone (a sine tone).
//! - [`software`]: VP8 and H.264 behind the video engine's codec interface ([`software_codecs`]
//!   for the call client's `video_source` and `video_sink`).
//!
//! ## Why these crates
//!
//! - **VP8: `env-libvpx-sys`** (raw bindings, pre-generated for Debian's libvpx 1.12, linked with
//!   pkg-config: no bindgen, no network at build time) under our own safe wrapper,
//!   `vpx` (the workspace's one module with `unsafe`, documented there). The safe crates do not
//!   fit: `vpx-rs` (encoder and decoder) calls a libvpx 1.13-only control and does not build on
//!   Debian 12; `vpx-encode` has no decoder; neither can change the bitrate of a running encoder.
//! - **H.264: `openh264`** (a safe wrapper over Cisco's OpenH264, built by `cc` from the source
//!   it bundles: no system library, no download). One call needs `unsafe`: the bitrate of a
//!   running encoder, which the wrapper does not expose (`h264::set_bitrate`).
//! - **Opus**: the core audio engine's (`televisit_core::audio::opus`, `opusic-c` over a bundled
//!   libopus built with cmake), so an app links one libopus and needs no system Opus.

pub mod audio;
#[cfg(feature = "h264")]
pub mod h264;
pub mod pattern;
pub mod software;
pub mod video;
mod vpx;

pub use software::{software_codecs, SoftwareCodecs};
pub use televisit_core::video::{chroma_size, CodecError, I420Frame};
