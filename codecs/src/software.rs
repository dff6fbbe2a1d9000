//! The software codecs behind the video engine's codec interface.

use std::sync::Arc;

use televisit_core::call::ladder::EncoderTarget;
use televisit_core::frame::{EncodedFrame, VideoCodec};
#[cfg(not(feature = "h264"))]
use televisit_core::video::codecs::not_available;
use televisit_core::video::codecs::{VideoCodecs, VideoDecoder, VideoEncoder};

use crate::video::{default_target, Vp8Decoder, Vp8Encoder};
use crate::{CodecError, I420Frame};

/// VP8 through libvpx ([`crate::video`]) and, with the `h264` feature, H.264 through OpenH264
/// ([`crate::h264`]), for the engine's `VideoSource` and `VideoSink`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoftwareCodecs;

/// The software codecs, as the call client's `video_source` and `video_sink` take them.
pub fn software_codecs() -> Arc<dyn VideoCodecs> {
    Arc::new(SoftwareCodecs)
}

impl VideoCodecs for SoftwareCodecs {
    fn encoder(&self, codec: VideoCodec) -> Result<Box<dyn VideoEncoder>, CodecError> {
        match codec {
            VideoCodec::Vp8 => Ok(Box::new(Vp8Encoder::new(default_target())?)),
            #[cfg(feature = "h264")]
            VideoCodec::H264 => Ok(Box::new(crate::h264::H264Encoder::new(default_target())?)),
            #[cfg(not(feature = "h264"))]
            VideoCodec::H264 => Err(not_available(codec, "H.264 encoder")),
        }
    }

    fn decoder(&self, codec: VideoCodec) -> Result<Box<dyn VideoDecoder>, CodecError> {
        match codec {
            VideoCodec::Vp8 => Ok(Box::new(Vp8Decoder::new()?)),
            #[cfg(feature = "h264")]
            VideoCodec::H264 => Ok(Box::new(crate::h264::H264Decoder::new()?)),
            #[cfg(not(feature = "h264"))]
            VideoCodec::H264 => Err(not_available(codec, "H.264 decoder")),
        }
    }
}

impl VideoEncoder for Vp8Encoder {
    fn set_target(&mut self, target: EncoderTarget) -> Result<(), CodecError> {
        Vp8Encoder::set_target(self, target)
    }

    fn request_keyframe(&mut self) {
        Vp8Encoder::request_keyframe(self)
    }

    fn encode(&mut self, picture: &I420Frame) -> Result<Option<EncodedFrame>, CodecError> {
        Vp8Encoder::encode(self, picture)
    }
}

impl VideoDecoder for Vp8Decoder {
    fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, CodecError> {
        Vp8Decoder::decode(self, data).map(Some)
    }
}

#[cfg(feature = "h264")]
impl VideoEncoder for crate::h264::H264Encoder {
    fn set_target(&mut self, target: EncoderTarget) -> Result<(), CodecError> {
        crate::h264::H264Encoder::set_target(self, target)
    }

    fn request_keyframe(&mut self) {
        crate::h264::H264Encoder::request_keyframe(self)
    }

    fn encode(&mut self, picture: &I420Frame) -> Result<Option<EncodedFrame>, CodecError> {
        crate::h264::H264Encoder::encode(self, picture)
    }
}

#[cfg(feature = "h264")]
impl VideoDecoder for crate::h264::H264Decoder {
    fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, CodecError> {
        crate::h264::H264Decoder::decode(self, data)
    }
}
