//! The video engine: raw pictures in and out, the codecs behind a small interface.
//!
//! - [`picture`]: [`I420Frame`], and what a camera gives ([`CameraPicture`]: I420 or NV12, with
//!   its rotation and capture time), turned upright before encoding.
//! - [`codecs`]: the [`VideoEncoder`]/[`VideoDecoder`] interface a platform's hardware codecs
//!   implement (the `televisit-codecs` crate has a software VP8 behind it).
//! - [`engine`]: the [`VideoSource`] a camera pushes into and the [`VideoSink`] a renderer pulls
//!   from; the call client wires them to the ladder, keyframe requests and the video track.
//! - [`h264`]: what platform H.264 encoders leave to their caller (parameter sets before each
//!   IDR, AVCC ↔ Annex B).
//! - [`pattern`]: a moving test picture whose frame counter can be read back after lossy coding.

pub mod codecs;
pub mod engine;
pub mod h264;
pub mod pattern;
pub mod picture;

pub use codecs::{CodecError, VideoCodecs, VideoDecoder, VideoEncoder};
pub use engine::{DecodedPicture, VideoSink, VideoSinkStats, VideoSource, VideoSourceStats};
pub use picture::{chroma_size, CameraPicture, CameraPlanes, I420Frame, Rotation};

/// Why a video source or sink refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoError {
    /// The source or sink was closed (the call was released).
    #[error("the video track is closed")]
    Closed,
    /// A picture the codec cannot take (planes of the wrong size, a rotation that is not a
    /// quarter turn), or no codec for the call.
    #[error(transparent)]
    Codec(#[from] CodecError),
}
