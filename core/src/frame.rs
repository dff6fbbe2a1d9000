//! Encoded media frames crossing the app boundary (phones encode with their hardware codecs).

use std::time::Duration;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Opus audio.
    Audio,
    /// VP8 camera video.
    Video,
}

/// An encoded media frame crossing the app boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Audio or video.
    pub kind: FrameKind,
    /// The frame's bitstream (an Opus packet, a VP8 frame).
    pub data: Vec<u8>,
    /// Duration of the frame (20 ms audio, 33 ms at 30 fps video).
    pub duration: Duration,
    /// A VP8 keyframe (ignored for audio).
    pub keyframe: bool,
}
