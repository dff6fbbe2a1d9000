//! The small interface between the video engine and a codec: a [`VideoEncoder`] follows the
//! ladder's target and keyframe requests, a [`VideoDecoder`] turns frames back into pictures, and
//! [`VideoCodecs`] makes them for the codec the call negotiated. Phones implement it over their
//! hardware codecs (MediaCodec, VideoToolbox) through the bindings; the `televisit-codecs` crate
//! has software ones (VP8 through libvpx) for desktops, the headless client and the tests.

use super::picture::I420Frame;
use crate::call::ladder::EncoderTarget;
use crate::frame::{EncodedFrame, VideoCodec};

/// A codec failure. Bad input (a corrupt frame, a picture of the wrong shape) is an error, never
/// a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The codec library refused to start (e.g. an impossible size), or there is none for the codec.
    #[error("cannot start the {codec} codec: {reason}")]
    Init {
        /// `"VP8 encoder"`, `"Opus decoder"`, ...
        codec: &'static str,
        /// What the library said.
        reason: String,
    },
    /// A picture or a PCM buffer whose shape does not match what it claims.
    #[error("bad input: {0}")]
    BadInput(String),
    /// Encoding failed.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The bitstream could not be decoded (corrupt, truncated, or an inter frame before any
    /// keyframe).
    #[error("decoding failed: {0}")]
    Decode(String),
}

/// A video encoder of one codec.
pub trait VideoEncoder: Send {
    /// Follows a new target: its rung's width and height are the size to encode at (the engine
    /// fits them to the camera's shape), its frame rate and its bitrate.
    fn set_target(&mut self, target: EncoderTarget) -> Result<(), CodecError>;
    /// Makes the next frame a keyframe.
    fn request_keyframe(&mut self);
    /// Encodes one upright picture at the target's size (scaling it if it differs). `None`: no
    /// frame for this picture (the encoder skipped it).
    fn encode(&mut self, picture: &I420Frame) -> Result<Option<EncodedFrame>, CodecError>;
}

/// A video decoder of one codec.
pub trait VideoDecoder: Send {
    /// Decodes one frame. `None`: no picture yet (a decoder with a delay). An error means the
    /// picture is broken until the next keyframe.
    fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, CodecError>;
}

/// Makes encoders and decoders for the call's video codec.
pub trait VideoCodecs: Send + Sync {
    /// An encoder of `codec`.
    fn encoder(&self, codec: VideoCodec) -> Result<Box<dyn VideoEncoder>, CodecError>;
    /// A decoder of `codec`.
    fn decoder(&self, codec: VideoCodec) -> Result<Box<dyn VideoDecoder>, CodecError>;
}

/// The error for a codec a [`VideoCodecs`] does not have.
pub fn not_available(codec: VideoCodec, what: &'static str) -> CodecError {
    CodecError::Init { codec: what, reason: format!("{} is not available in this build", codec.mime_type()) }
}
