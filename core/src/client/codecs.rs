//! The codecs this side offers and accepts: Opus and the video codecs of
//! `WebRtcSettings::video_codecs` in their order (VP8, H.264), registered in the media engine with
//! their RTX repair codecs, and which of them the other side chose, read from the SDP.

use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use webrtc::peer_connection::MediaEngine;

use crate::frame::VideoCodec;

/// H.264 as this side receives it: constrained baseline (`42e0`), level 4.0 (`28`), the least level
/// that holds the ladder's top rung (1080p at 30 fps). Browsers offer level 3.1 (`1f`), which caps
/// a sender at 720p; the level is not part of codec matching (RFC 6184 §8.2.2, with
/// `level-asymmetry-allowed`), so each side declares what it can receive.
const H264_PROFILE_LEVEL_ID: &str = "42e028";

/// The codec as this side registers it (H.264: constrained baseline, packetization mode 1, level
/// 4.0), with its payload type and its RTX one.
pub(crate) fn video_codec_parameters(codec: VideoCodec) -> (RTCRtpCodecParameters, u8) {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback { typ: typ.into(), parameter: parameter.into() };
    let (sdp_fmtp_line, payload_type, rtx) = match codec {
        VideoCodec::Vp8 => (String::new(), 96, 97),
        VideoCodec::H264 => {
            let fmtp = format!(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={H264_PROFILE_LEVEL_ID}"
            );
            (fmtp, 125, 105)
        }
    };
    let parameters = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: codec.mime_type().into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line,
            rtcp_feedback: vec![
                feedback("goog-remb", ""),
                feedback("ccm", "fir"),
                feedback("nack", ""),
                feedback("nack", "pli"),
            ],
        },
        payload_type,
    };
    (parameters, rtx)
}

pub(crate) fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

/// Registers Opus and exactly these video codecs, in this order (each with its RTX codec, which
/// repairs it after a NACK).
pub(crate) fn register_codecs(
    media_engine: &mut MediaEngine,
    video_codecs: &[VideoCodec],
) -> Result<(), String> {
    if video_codecs.is_empty() {
        return Err("no video codec to offer".into());
    }
    media_engine
        .register_codec(RTCRtpCodecParameters { rtp_codec: opus(), payload_type: 111 }, RtpCodecKind::Audio)
        .map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    for &codec in video_codecs {
        if seen.contains(&codec) {
            continue;
        }
        seen.push(codec);
        let (parameters, rtx) = video_codec_parameters(codec);
        let rtx = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "video/rtx".into(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: format!("apt={}", parameters.payload_type),
                rtcp_feedback: vec![],
            },
            payload_type: rtx,
        };
        media_engine.register_codec(parameters, RtpCodecKind::Video).map_err(|e| e.to_string())?;
        media_engine.register_codec(rtx, RtpCodecKind::Video).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The codec the answerer of this session chose: the first codec of the SDP's first video m-line
/// that is one of `supported` (an answer lists the offer's codecs in the offer's order, keeping
/// those the answerer has, so this is what it sends). H.264 counts only in packetization mode 1.
pub fn first_video_codec(sdp: &str, supported: &[VideoCodec]) -> Option<VideoCodec> {
    let mut lines = sdp.lines().map(str::trim);
    let m_line = lines.find(|l| l.starts_with("m=video "))?;
    let payload_types: Vec<&str> = m_line.split_whitespace().skip(3).collect();
    let section: Vec<&str> = lines.take_while(|l| !l.starts_with("m=")).collect();
    let attribute = |name: &str, pt: &str| {
        let prefix = format!("a={name}:{pt} ");
        section.iter().find_map(|l| l.strip_prefix(prefix.as_str())).map(str::trim)
    };
    payload_types.into_iter().find_map(|pt| {
        let encoding = attribute("rtpmap", pt)?.split('/').next()?;
        let codec = VideoCodec::from_name(encoding).filter(|c| supported.contains(c))?;
        if codec == VideoCodec::H264 {
            let fmtp = attribute("fmtp", pt).unwrap_or_default();
            if !fmtp.split(';').any(|p| p.trim() == "packetization-mode=1") {
                return None;
            }
        }
        Some(codec)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_supported_codec_of_the_first_video_m_line_is_chosen() {
        let sdp = "v=0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=rtpmap:111 opus/48000/2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 100 127 96 97 125\r\n\
            a=rtpmap:96 VP8/90000\r\n\
            a=rtpmap:97 rtx/90000\r\n\
            a=fmtp:97 apt=96\r\n\
            a=rtpmap:100 VP9/90000\r\n\
            a=rtpmap:127 H264/90000\r\n\
            a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
            a=rtpmap:125 H264/90000\r\n\
            a=fmtp:125 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 125\r\n\
            a=rtpmap:125 H264/90000\r\n";
        let both = [VideoCodec::H264, VideoCodec::Vp8];
        // VP9 is not ours and H.264 in packetization mode 0 cannot carry our access units.
        assert_eq!(first_video_codec(sdp, &both), Some(VideoCodec::Vp8));
        let without_vp8 = sdp.replace(" 100 127 96 97 125", " 100 127 125 96 97");
        assert_eq!(
            first_video_codec(&without_vp8, &both),
            Some(VideoCodec::H264),
            "the SDP's order, not ours"
        );
        assert_eq!(first_video_codec(&without_vp8, &[VideoCodec::Vp8]), Some(VideoCodec::Vp8));
        let only_mode_0 = sdp.replace(" 100 127 96 97 125", " 100 127 96 97");
        assert_eq!(
            first_video_codec(&only_mode_0, &[VideoCodec::H264]),
            None,
            "the second m-line is not read"
        );
        assert_eq!(first_video_codec("v=0\r\nm=audio 9 RTP/AVP 0\r\n", &both), None);
    }

    /// H.264 levels (RFC 6184 / ITU-T H.264 Table A-1): `level_idc`, most macroblocks per frame and
    /// per second.
    const H264_LEVELS: [(u8, u64, u64); 6] = [
        (0x1f, 3_600, 108_000),
        (0x20, 5_120, 216_000),
        (0x28, 8_192, 245_760),
        (0x29, 8_192, 245_760),
        (0x2a, 8_704, 522_240),
        (0x32, 22_080, 589_824),
    ];

    #[test]
    fn the_h264_level_we_declare_receives_every_rung_of_the_ladder() {
        let level_idc = u8::from_str_radix(&H264_PROFILE_LEVEL_ID[4..], 16).unwrap();
        let &(_, frame_mbs, mbs_per_second) =
            H264_LEVELS.iter().find(|(idc, _, _)| *idc == level_idc).expect("a known level");
        for rung in crate::call::ladder::LADDER {
            let mbs = u64::from(rung.width.div_ceil(16)) * u64::from(rung.height.div_ceil(16));
            assert!(mbs <= frame_mbs, "{} needs {mbs} macroblocks a frame", rung.name);
            let per_second = mbs * u64::from(rung.fps);
            assert!(per_second <= mbs_per_second, "{} needs {per_second} macroblocks a second", rung.name);
        }
        let (parameters, _) = video_codec_parameters(VideoCodec::H264);
        assert!(parameters.rtp_codec.sdp_fmtp_line.contains("profile-level-id=42e028"));
    }
}
