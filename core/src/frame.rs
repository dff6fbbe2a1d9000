//! Encoded media frames crossing the app boundary (phones encode with their hardware codecs).

use std::time::Duration;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Opus audio.
    Audio,
    /// VP8 camera video.
    Video,
    /// VP8 screen-share video (the doctor's second video track).
    Screen,
}

impl FrameKind {
    /// Camera or screen video (VP8).
    pub fn is_video(self) -> bool {
        matches!(self, FrameKind::Video | FrameKind::Screen)
    }
}

/// An encoded media frame crossing the app boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Audio, camera video or screen video.
    pub kind: FrameKind,
    /// The frame's bitstream (an Opus packet, a VP8 frame).
    pub data: Vec<u8>,
    /// Duration of the frame (20 ms audio, 33 ms at 30 fps video).
    pub duration: Duration,
    /// A VP8 keyframe (ignored for audio).
    pub keyframe: bool,
}

/// The picture size a VP8 **keyframe** announces (RFC 6386 §9.1): a 3-byte frame tag whose lowest
/// bit is 0 on a keyframe, the start code `9d 01 2a`, then 14-bit width and height (little-endian,
/// the top two bits are the scaling). `None` for an interframe or anything that is not VP8.
pub fn vp8_keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    if data.len() < 10 || data[0] & 1 != 0 || data[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([data[6], data[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([data[8], data[9]]) & 0x3fff);
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vp8_keyframe_header_gives_the_picture_size() {
        // A 1280x720 keyframe as libvpx writes it (scaling bits set on the width to check masking).
        let header = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x45, 0xd0, 0x02, 0x00];
        assert_eq!(vp8_keyframe_size(&header), Some((1280, 720)));
        let mut interframe = header;
        interframe[0] |= 1;
        assert_eq!(vp8_keyframe_size(&interframe), None);
        assert_eq!(vp8_keyframe_size(&[0x10, 0x01, 0, 0, 0, 1, 0, 0, 0, 0]), None, "no start code");
        assert_eq!(vp8_keyframe_size(&header[..8]), None, "too short");
    }
}
