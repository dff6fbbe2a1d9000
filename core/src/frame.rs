//! Encoded media frames crossing the app boundary (phones encode with their hardware codecs).

use std::time::Duration;

/// A video codec this side can send and receive (the app encodes and decodes; the core packetizes
/// and depacketizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// VP8 (RFC 7741): frames are VP8 frames as libvpx writes them.
    Vp8,
    /// H.264 constrained baseline, packetization mode 1 (RFC 6184): frames are access units in
    /// Annex-B form (each NAL unit after a `00 00 00 01` or `00 00 01` start code).
    H264,
}

impl VideoCodec {
    /// The RTP mime type (`video/VP8`, `video/H264`).
    pub fn mime_type(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "video/VP8",
            VideoCodec::H264 => "video/H264",
        }
    }

    /// The codec of an RTP mime type or SDP encoding name (`video/VP8`, `H264`; any case).
    pub fn from_name(name: &str) -> Option<VideoCodec> {
        let name = name.rsplit('/').next().unwrap_or(name);
        if name.eq_ignore_ascii_case("VP8") {
            Some(VideoCodec::Vp8)
        } else if name.eq_ignore_ascii_case("H264") {
            Some(VideoCodec::H264)
        } else {
            None
        }
    }

    /// Whether this encoded video frame is a keyframe: for VP8 the frame tag's lowest bit is 0,
    /// for H.264 the access unit holds an IDR slice (NAL type 5) or a sequence parameter set (7).
    pub fn is_keyframe(self, data: &[u8]) -> bool {
        match self {
            VideoCodec::Vp8 => data.first().is_some_and(|b| b & 1 == 0),
            VideoCodec::H264 => {
                h264_nal_units(data).any(|nal| nal_type(nal).is_some_and(starts_h264_keyframe))
            }
        }
    }

    /// Whether this RTP payload is the first packet of a keyframe: for VP8 (RFC 7741) the start of
    /// partition 0 with a keyframe tag after the payload descriptor; for H.264 (RFC 6184) an IDR
    /// slice or a sequence parameter set, alone, first in a STAP-A, or in an FU-A's first fragment.
    pub fn starts_keyframe(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::Vp8 => vp8_frame_start(payload).is_some_and(|frame| self.is_keyframe(frame)),
            VideoCodec::H264 => {
                let keyframe_nal = |nal_header: u8| starts_h264_keyframe(nal_header & 0x1f);
                match payload {
                    [header, ..] if matches!(header & 0x1f, 1..=23) => keyframe_nal(*header),
                    // STAP-A: the first unit's 16-bit size, then its NAL header.
                    [header, _, _, first, ..] if header & 0x1f == 24 => keyframe_nal(*first),
                    // FU-A: the FU header's start bit, and the fragmented unit's type.
                    [header, fu, ..] if header & 0x1f == 28 => fu & 0x80 != 0 && keyframe_nal(*fu),
                    _ => false,
                }
            }
        }
    }
}

/// Whether an H.264 NAL unit of this type starts a keyframe: an IDR slice (5) or a sequence
/// parameter set (7).
fn starts_h264_keyframe(nal_type: u8) -> bool {
    matches!(nal_type, 5 | 7)
}

/// The VP8 frame's bytes in an RTP payload that starts one (S bit set, partition 0), after the
/// payload descriptor (RFC 7741 §4.2); `None` for any other packet.
fn vp8_frame_start(payload: &[u8]) -> Option<&[u8]> {
    let (&first, _) = payload.split_first()?;
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x07);
    if !start || partition != 0 {
        return None;
    }
    let mut at = 1;
    if extended {
        let flags = *payload.get(1)?;
        at = 2;
        if flags & 0x80 != 0 {
            // PictureID: 15 bits when its first byte's M bit is set, else 7.
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if flags & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if flags & 0x30 != 0 {
            at += 1; // TID, Y, KEYIDX
        }
    }
    payload.get(at..)
}

/// The NAL unit type (the low 5 bits of its first byte), `None` for an empty unit.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// The NAL units of an H.264 Annex-B access unit, without their start codes (`00 00 01` or
/// `00 00 00 01`). Bytes before the first start code are not a NAL unit and are skipped.
pub fn h264_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    // Where each start code ends, i.e. where each NAL unit begins.
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&next| {
            // The next start code begins 3 bytes before `next`, or 4 with a leading zero byte.
            let mut end = next - 3;
            if end > 0 && data[end - 1] == 0 {
                end -= 1;
            }
            end
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts.into_iter().zip(ends).map(move |(start, end)| &data[start..end.max(start)])
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Opus audio.
    Audio,
    /// Camera video (in the call's video codec, see [`VideoCodec`]).
    Video,
    /// Screen-share video (the doctor's second video track, same codec as the camera).
    Screen,
}

impl FrameKind {
    /// Camera or screen video.
    pub fn is_video(self) -> bool {
        matches!(self, FrameKind::Video | FrameKind::Screen)
    }
}

/// An encoded media frame crossing the app boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Audio, camera video or screen video.
    pub kind: FrameKind,
    /// The frame's bitstream (an Opus packet, a VP8 frame, an H.264 Annex-B access unit).
    pub data: Vec<u8>,
    /// Duration of the frame (20 ms audio, 33 ms at 30 fps video).
    pub duration: Duration,
    /// A keyframe (ignored for audio).
    pub keyframe: bool,
    /// When it was captured, for A/V sync: set on received frames, ignored on frames sent (the
    /// stack stamps those as it sends them).
    pub timing: FrameTiming,
}

/// A received frame's place in time (RFC 3550 §5.1, §6.4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameTiming {
    /// Its RTP timestamp (48 kHz for audio, 90 kHz for video).
    pub rtp_timestamp: Option<u32>,
    /// When the sender sent it, microseconds since the Unix epoch on the *sender's* wall clock,
    /// from the RTP timestamp and the sender's last RTCP sender report; `None` until the first
    /// report (about a second into the call). The audio and video of one sender share that clock,
    /// so comparing the two aligns lips with voice.
    pub capture_time_us: Option<i64>,
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

    #[test]
    fn annex_b_access_units_split_into_nal_units_with_either_start_code() {
        let au = [
            0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, // SPS
            0, 0, 1, 0x68, 0xce, // PPS, 3-byte start code
            0, 0, 0, 1, 0x65, 0x88, 0x00, 0x00, // IDR slice ending in zero bytes
        ];
        let nals: Vec<&[u8]> = h264_nal_units(&au).collect();
        assert_eq!(nals, vec![&[0x67, 0x42, 0xe0, 0x1f][..], &[0x68, 0xce][..], &[0x65, 0x88, 0, 0][..]]);
        assert_eq!(nals.iter().map(|n| nal_type(n)).collect::<Vec<_>>(), vec![Some(7), Some(8), Some(5)]);
        assert_eq!(h264_nal_units(&[0x65, 1, 2]).count(), 0, "no start code, no NAL unit");
        assert_eq!(h264_nal_units(&[]).count(), 0);
    }

    #[test]
    fn keyframes_are_told_apart_per_codec() {
        assert!(VideoCodec::H264.is_keyframe(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 3]));
        assert!(VideoCodec::H264.is_keyframe(&[0, 0, 1, 0x25, 0x88]), "an IDR slice alone (nal_ref_idc 1)");
        assert!(!VideoCodec::H264.is_keyframe(&[0, 0, 0, 1, 0x41, 0x9a, 0x00]), "a non-IDR slice");
        assert!(!VideoCodec::H264.is_keyframe(&[0x10, 0x02]), "VP8 bytes are not an H.264 keyframe");
        assert!(VideoCodec::Vp8.is_keyframe(&[0x10, 0x02]));
        assert!(!VideoCodec::Vp8.is_keyframe(&[0x11, 0x02]));
        assert!(!VideoCodec::Vp8.is_keyframe(&[]));
    }

    #[test]
    fn the_first_packet_of_a_keyframe_is_told_from_its_rtp_payload() {
        let vp8 = VideoCodec::Vp8;
        // Payload descriptor S=1, partition 0, then the frame tag (lowest bit 0: keyframe).
        assert!(vp8.starts_keyframe(&[0x10, 0x50, 0x42]));
        assert!(!vp8.starts_keyframe(&[0x10, 0x51, 0x42]), "an interframe's start");
        assert!(!vp8.starts_keyframe(&[0x00, 0x50, 0x42]), "not a frame's first packet (S=0)");
        assert!(!vp8.starts_keyframe(&[0x11, 0x50]), "partition 1");
        // Extended: I with a 15-bit PictureID (M set), L, T: 5 bytes of descriptor.
        assert!(vp8.starts_keyframe(&[0x90, 0xe0, 0x81, 0x23, 0x07, 0x40, 0x50]));
        assert!(!vp8.starts_keyframe(&[0x90, 0xe0, 0x81, 0x23, 0x07, 0x40, 0x51]));
        // A 7-bit PictureID only (M clear): the tag at byte 3.
        assert!(vp8.starts_keyframe(&[0x90, 0x80, 0x05, 0x50]));
        assert!(!vp8.starts_keyframe(&[0x90, 0x80, 0x05]), "cut short");
        assert!(!vp8.starts_keyframe(&[]));

        let h264 = VideoCodec::H264;
        assert!(h264.starts_keyframe(&[0x67, 0x42, 0xe0]), "an SPS alone");
        assert!(h264.starts_keyframe(&[0x65, 0x88]), "an IDR slice alone");
        assert!(!h264.starts_keyframe(&[0x41, 0x9a]), "a non-IDR slice");
        assert!(h264.starts_keyframe(&[0x78, 0x00, 0x04, 0x67, 0x42, 0xe0, 0x1f]), "STAP-A led by the SPS");
        assert!(!h264.starts_keyframe(&[0x78, 0x00, 0x02, 0x41, 0x9a]), "STAP-A of a non-IDR slice");
        assert!(h264.starts_keyframe(&[0x7c, 0x85, 0x88]), "FU-A, first fragment of an IDR slice");
        assert!(!h264.starts_keyframe(&[0x7c, 0x05, 0x88]), "FU-A, a later fragment");
        assert!(!h264.starts_keyframe(&[0x7c, 0x81, 0x9a]), "FU-A, first fragment of a non-IDR slice");
        assert!(!h264.starts_keyframe(&[0x78, 0x00]), "cut short");
    }

    #[test]
    fn codec_names_from_sdp_and_mime_types() {
        assert_eq!(VideoCodec::from_name("video/VP8"), Some(VideoCodec::Vp8));
        assert_eq!(VideoCodec::from_name("h264"), Some(VideoCodec::H264));
        assert_eq!(VideoCodec::from_name(VideoCodec::H264.mime_type()), Some(VideoCodec::H264));
        assert_eq!(VideoCodec::from_name("video/VP9"), None);
    }
}
