//! H.264 in software (OpenH264, built from the source bundled in the `openh264` crate): what the
//! headless client and desktop apps send and decode when a call negotiates H.264, as it does with
//! a phone whose hardware favours it. [`H264Encoder`] follows the ladder like [`Vp8Encoder`]
//! (a new bitrate goes to the running encoder, a new size or frame rate restarts it with a
//! keyframe, a keyframe on request, otherwise one at most every
//! [`KEYFRAME_INTERVAL_SECONDS`]); it makes constrained-baseline Annex-B access units, each IDR
//! carrying its parameter sets, which is what WebRTC's H.264 packetization and browsers take.
//! [`H264Decoder`] turns access units back into pictures.
//!
//! OpenH264 built from source is not covered by Cisco's patent licence for its own binaries:
//! whoever ships a desktop build with this feature (`h264`, on by default) should know that.
//!
//! [`Vp8Encoder`]: crate::video::Vp8Encoder

use std::time::Duration;

use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile, RateControlMode,
    SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSource;
use openh264::{OpenH264API, Timestamp};
use televisit_core::call::ladder::EncoderTarget;
use televisit_core::frame::{EncodedFrame, FrameKind};

use crate::video::{at_size, even_size, reshaped, KEYFRAME_INTERVAL_SECONDS, MIN_BITRATE_BPS};
use crate::{CodecError, I420Frame};

/// The NAL unit type of an IDR slice.
const IDR: u8 = 5;

/// An H.264 encoder following an [`EncoderTarget`].
pub struct H264Encoder {
    encoder: Option<Encoder>,
    target: EncoderTarget,
    bitrate_bps: u64,
    /// OpenH264 initialises the encoder on its first picture; options can only be set after it.
    initialised: bool,
    keyframe_requested: bool,
    frames: u64,
    starts: u32,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder").field("target", &self.target).field("frames", &self.frames).finish()
    }
}

fn init_error(codec: &'static str, error: openh264::Error) -> CodecError {
    CodecError::Init { codec, reason: error.to_string() }
}

impl H264Encoder {
    /// An encoder for this target (for the audio-only rung it encodes nothing until the target
    /// changes).
    pub fn new(target: EncoderTarget) -> Result<H264Encoder, CodecError> {
        let mut encoder = H264Encoder {
            encoder: None,
            target,
            bitrate_bps: 0,
            initialised: false,
            keyframe_requested: false,
            frames: 0,
            starts: 0,
        };
        encoder.start()?;
        Ok(encoder)
    }

    /// The picture size the encoder produces: the rung's, rounded down to even numbers (4:2:0
    /// needs them); `None` for the audio-only rung.
    pub fn size(&self) -> Option<(u32, u32)> {
        even_size(&self.target, 16)
    }

    /// The bitrate the running encoder aims at, bits per second (`None` for the audio-only rung).
    pub fn bitrate_bps(&self) -> Option<u64> {
        self.encoder.as_ref().map(|_| self.bitrate_bps)
    }

    /// How many times the encoder was (re)started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Follows a new target: a new bitrate goes to the running encoder; a new size or frame rate
    /// restarts it (the next frame is a keyframe).
    pub fn set_target(&mut self, target: EncoderTarget) -> Result<(), CodecError> {
        let reshaped = reshaped(&self.target, &target);
        self.target = target;
        let bitrate_bps = target.bitrate_bps.max(MIN_BITRATE_BPS);
        match self.encoder.as_mut() {
            Some(encoder) if !reshaped && self.initialised => {
                if bitrate_bps != self.bitrate_bps {
                    set_bitrate(encoder, self.bitrate_bps, bitrate_bps)?;
                    self.bitrate_bps = bitrate_bps;
                }
                Ok(())
            }
            _ => self.start(),
        }
    }

    /// Makes the next frame a keyframe (after a receiver lost the picture).
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    fn start(&mut self) -> Result<(), CodecError> {
        self.encoder = None;
        let Some(_) = self.size() else { return Ok(()) };
        let fps = self.target.fps.max(1);
        self.bitrate_bps = self.target.bitrate_bps.max(MIN_BITRATE_BPS);
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            // 4.0 holds the ladder's 1080p rung; the core offers the same level in its SDP.
            .level(Level::Level_4_0)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(self.bitrate_bps.min(u64::from(u32::MAX)) as u32))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            // As libwebrtc sets it for cameras: OpenH264 holds the bitrate only when it may skip
            // a frame (it says so otherwise).
            .skip_frames(true)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * KEYFRAME_INTERVAL_SECONDS))
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| init_error("H.264 encoder", e))?;
        self.encoder = Some(encoder);
        self.initialised = false;
        self.starts += 1;
        self.keyframe_requested = true;
        Ok(())
    }

    /// Encodes one picture (scaled to the target size first if it differs) into an Annex-B access
    /// unit. `None`: nothing for it (the audio-only rung).
    pub fn encode(&mut self, picture: &I420Frame) -> Result<Option<EncodedFrame>, CodecError> {
        picture.check()?;
        let Some((width, height)) = self.size() else { return Ok(None) };
        let Some(encoder) = self.encoder.as_mut() else { return Ok(None) };
        let mut scaled = None;
        let picture = at_size(picture, (width, height), &mut scaled);
        let fps = u64::from(self.target.fps.max(1));
        let duration_ms = 1000 / fps;
        // Rate control reads time from these: without them every picture seems to come at once.
        let timestamp = Timestamp::from_millis(self.frames * 1000 / fps);
        self.frames += 1;
        if std::mem::take(&mut self.keyframe_requested) {
            encoder.force_intra_frame();
        }
        let stream =
            encoder.encode_at(&Planes(picture), timestamp).map_err(|e| CodecError::Encode(e.to_string()))?;
        self.initialised = true;
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let data = stream.to_vec();
        let keyframe = televisit_core::frame::h264_nal_units(&data)
            .any(|nal| televisit_core::frame::nal_type(nal) == Some(IDR));
        Ok(Some(EncodedFrame {
            kind: FrameKind::Video,
            data,
            duration: Duration::from_millis(duration_ms),
            keyframe,
            timing: Default::default(),
        }))
    }
}

/// Sets the bitrate of a running encoder, `from_bps` → `to_bps` (OpenH264's options, which the
/// safe crate does not wrap; restarting the encoder instead would cost a keyframe on every ladder
/// move). The layer's maximum is kept equal to its target, as the crate starts it: OpenH264
/// refuses a target above the maximum, so a raise moves the maximum first and a cut moves it last.
fn set_bitrate(encoder: &mut Encoder, from_bps: u64, to_bps: u64) -> Result<(), CodecError> {
    use openh264_sys2::{ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0};
    let options = [(ENCODER_OPTION_MAX_BITRATE, "maximum"), (ENCODER_OPTION_BITRATE, "target")];
    let ordered: Vec<_> =
        if to_bps > from_bps { options.to_vec() } else { options.into_iter().rev().collect() };
    for (option, what) in ordered {
        match set_layer_option(encoder, option, SPATIAL_LAYER_0, to_bps) {
            0 => {}
            code => {
                return Err(CodecError::Encode(format!(
                    "OpenH264 refused the {what} bitrate {to_bps} (status {code})"
                )))
            }
        }
    }
    Ok(())
}

/// One `SBitrateInfo` option of a running encoder; OpenH264's status (0: done).
#[allow(unsafe_code)]
fn set_layer_option(
    encoder: &mut Encoder,
    option: openh264_sys2::ENCODER_OPTION,
    layer: openh264_sys2::LAYER_NUM,
    bitrate_bps: u64,
) -> i32 {
    let mut info =
        openh264_sys2::SBitrateInfo { iLayer: layer, iBitrate: bitrate_bps.min(i32::MAX as u64) as i32 };
    // SAFETY: the encoder is initialised (it has encoded a picture: `H264Encoder::initialised`), and
    // both bitrate options read one `SBitrateInfo`, which lives across the call.
    unsafe { encoder.raw_api().set_option(option, (&raw mut info).cast()) }
}

/// An [`I420Frame`] as OpenH264 reads it.
struct Planes<'a>(&'a I420Frame);

impl YUVSource for Planes<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width as usize, self.0.height as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let chroma = self.0.width.div_ceil(2) as usize;
        (self.0.width as usize, chroma, chroma)
    }

    fn y(&self) -> &[u8] {
        &self.0.y
    }

    fn u(&self) -> &[u8] {
        &self.0.u
    }

    fn v(&self) -> &[u8] {
        &self.0.v
    }
}

/// An H.264 decoder.
pub struct H264Decoder {
    decoder: Decoder,
    seen_keyframe: bool,
    decoded: u64,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder").field("decoded", &self.decoded).finish()
    }
}

impl H264Decoder {
    /// A decoder (the stream's size is taken from its parameter sets).
    pub fn new() -> Result<H264Decoder, CodecError> {
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| init_error("H.264 decoder", e))?;
        Ok(H264Decoder { decoder, seen_keyframe: false, decoded: 0 })
    }

    /// Pictures decoded so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Decodes one Annex-B access unit. `None`: no picture from it (OpenH264 may hold one back).
    /// Errors: a corrupt or truncated access unit, or one before the first IDR.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, CodecError> {
        let idr = televisit_core::frame::h264_nal_units(data)
            .any(|nal| televisit_core::frame::nal_type(nal) == Some(IDR));
        if !self.seen_keyframe && !idr {
            return Err(CodecError::Decode("a frame before any IDR".into()));
        }
        let picture = self.decoder.decode(data).map_err(|e| CodecError::Decode(e.to_string()))?;
        let Some(picture) = picture else { return Ok(None) };
        let frame = i420_from(&picture);
        self.seen_keyframe = true;
        self.decoded += 1;
        Ok(Some(frame))
    }
}

/// Copies a decoded picture out of OpenH264's padded planes.
fn i420_from(picture: &impl YUVSource) -> I420Frame {
    let (width, height) = picture.dimensions();
    let (y_stride, u_stride, v_stride) = picture.strides();
    let (chroma_width, chroma_height) = (width.div_ceil(2), height.div_ceil(2));
    let rows = |plane: &[u8], stride: usize, w: usize, h: usize| -> Vec<u8> {
        (0..h).flat_map(|row| plane[row * stride..row * stride + w].iter().copied()).collect()
    };
    I420Frame {
        width: width as u32,
        height: height as u32,
        y: rows(picture.y(), y_stride, width, height),
        u: rows(picture.u(), u_stride, chroma_width, chroma_height),
        v: rows(picture.v(), v_stride, chroma_width, chroma_height),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{read_counter, TestPattern};
    use televisit_core::call::ladder::LADDER;
    use televisit_core::frame::{h264_nal_units, nal_type};

    fn target(name: &str) -> EncoderTarget {
        let rung = *LADDER.iter().find(|r| r.name == name).unwrap();
        EncoderTarget::at_rung(rung)
    }

    fn nal_types(data: &[u8]) -> Vec<u8> {
        h264_nal_units(data).filter_map(nal_type).collect()
    }

    #[test]
    fn pictures_survive_encoding_and_decoding_with_their_counter() {
        let mut encoder = H264Encoder::new(target("360p")).unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        let mut pattern = TestPattern::new();
        let mut shown = vec![];
        for n in 0..30 {
            // Rate control may skip a picture after the big first keyframe, as libwebrtc's does.
            let Some(frame) = encoder.encode(&pattern.next_frame(640, 360)).unwrap() else { continue };
            assert_eq!(frame.kind, FrameKind::Video);
            assert_eq!(frame.keyframe, n == 0, "frame {n}");
            let decoded = decoder.decode(&frame.data).unwrap().expect("no delay in baseline");
            assert_eq!((decoded.width, decoded.height), (640, 360));
            shown.push(read_counter(&decoded).expect("a readable counter"));
        }
        assert_eq!(shown[0], 0);
        assert!(shown.windows(2).all(|w| w[0] < w[1]), "in order: {shown:?}");
        assert!(shown.len() >= 25, "few skipped: {shown:?}");
        assert_eq!(decoder.decoded(), shown.len() as u64);
    }

    #[test]
    fn every_idr_carries_its_parameter_sets_at_baseline_level_4() {
        let mut encoder = H264Encoder::new(target("720p")).unwrap();
        let mut pattern = TestPattern::new();
        let first = encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap();
        let types = nal_types(&first.data);
        assert_eq!(&types[..2], &[7, 8], "SPS and PPS first: {types:?}");
        assert!(types.contains(&IDR), "{types:?}");
        // profile_idc 66 (baseline), level_idc 40: what the SDP offers and the 1080p rung needs.
        let sps = h264_nal_units(&first.data).find(|n| nal_type(n) == Some(7)).unwrap();
        assert_eq!((sps[1], sps[3]), (66, 40), "SPS {:02x?}", &sps[..4]);
        let delta = encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap();
        assert!(!delta.keyframe);
        assert_eq!(nal_types(&delta.data), vec![1], "a delta frame is one non-IDR slice");
        encoder.request_keyframe();
        let again = encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap();
        assert!(again.keyframe);
        assert_eq!(&nal_types(&again.data)[..2], &[7, 8], "a requested IDR has them too");
        // A receiver that joins at that IDR decodes it.
        let picture = H264Decoder::new().unwrap().decode(&again.data).unwrap().unwrap();
        assert_eq!(read_counter(&picture), Some(2));
    }

    #[test]
    fn a_keyframe_comes_on_request_and_otherwise_only_every_twenty_seconds() {
        let mut encoder = H264Encoder::new(target("180p")).unwrap(); // 15 fps
        let mut pattern = TestPattern::new();
        let mut keyframes = vec![];
        for n in 0..(5 + 15 * KEYFRAME_INTERVAL_SECONDS + 10) {
            if n == 5 {
                encoder.request_keyframe();
            }
            if encoder.encode(&pattern.next_frame(320, 180)).unwrap().is_some_and(|frame| frame.keyframe) {
                keyframes.push(n);
            }
        }
        assert_eq!(&keyframes[..2], &[0, 5]);
        assert!(keyframes.len() <= 3, "at most one periodic keyframe: {keyframes:?}");
        assert!(keyframes[2..].iter().all(|&n| n >= 15 * 19), "{keyframes:?}");
    }

    #[test]
    fn the_encoder_follows_the_rung_size_and_bitrate_without_restarting_for_a_bitrate() {
        let mut encoder = H264Encoder::new(target("720p")).unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        let mut pattern = TestPattern::new();
        // Before the first picture OpenH264 takes no options: the new bitrate is a new start.
        encoder.set_target(EncoderTarget { bitrate_bps: 900_000, ..target("720p") }).unwrap();
        assert_eq!((encoder.starts(), encoder.bitrate_bps()), (2, Some(900_000)));
        decoder.decode(&encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap().data).unwrap();
        encoder.set_target(EncoderTarget { bitrate_bps: 600_000, ..target("720p") }).unwrap();
        assert_eq!((encoder.starts(), encoder.bitrate_bps()), (2, Some(600_000)));
        assert!(!encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap().keyframe);
        encoder.set_target(EncoderTarget { bitrate_bps: 1_000, ..target("720p") }).unwrap();
        assert_eq!(encoder.bitrate_bps(), Some(MIN_BITRATE_BPS), "never below the floor");
        // A new rung: 720p pictures are scaled down to 360p, starting with a keyframe.
        encoder.set_target(target("360p")).unwrap();
        let frame = encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap();
        assert!(frame.keyframe);
        assert_eq!(encoder.starts(), 3);
        let decoded = decoder.decode(&frame.data).unwrap().unwrap();
        assert_eq!((decoded.width, decoded.height), (640, 360));
        assert_eq!(read_counter(&decoded), Some(2));
        encoder.set_target(target("audio-only")).unwrap();
        assert_eq!(encoder.size(), None);
        assert_eq!(encoder.encode(&pattern.next_frame(1280, 720)).unwrap(), None);
    }

    #[test]
    fn a_lower_bitrate_on_the_running_encoder_makes_smaller_frames() {
        let mut encoder =
            H264Encoder::new(EncoderTarget { bitrate_bps: 1_500_000, ..target("720p") }).unwrap();
        let mut pattern = TestPattern::new();
        let mut second = |encoder: &mut H264Encoder| -> usize {
            let frames = (0..30).filter_map(|_| encoder.encode(&pattern.next_frame(1280, 720)).unwrap());
            frames.map(|frame| frame.data.len()).sum()
        };
        second(&mut encoder); // the first keyframe's second
        let high = second(&mut encoder) * 8 / 1000;
        encoder.set_target(EncoderTarget { bitrate_bps: 200_000, ..target("720p") }).unwrap();
        second(&mut encoder); // rate control settles
        let low = second(&mut encoder) * 8 / 1000;
        encoder.set_target(EncoderTarget { bitrate_bps: 1_500_000, ..target("720p") }).unwrap();
        second(&mut encoder);
        let high_again = second(&mut encoder) * 8 / 1000;
        assert_eq!(encoder.starts(), 1);
        assert!((750..2250).contains(&high), "kbit in a second at 1.5 Mbps: {high}");
        assert!((100..400).contains(&low), "kbit in a second at 200 kbps: {low}");
        assert!((750..2250).contains(&high_again), "kbit in a second at 1.5 Mbps again: {high_again}");
    }

    #[test]
    fn bad_pictures_and_corrupt_frames_are_errors_not_crashes() {
        let mut encoder = H264Encoder::new(target("360p")).unwrap();
        let mut picture = I420Frame::filled(640, 360, (16, 128, 128));
        picture.y.truncate(100);
        assert!(matches!(encoder.encode(&picture), Err(CodecError::BadInput(_))));

        let mut pattern = TestPattern::new();
        let key = encoder.encode(&pattern.next_frame(640, 360)).unwrap().unwrap();
        let delta = encoder.encode(&pattern.next_frame(640, 360)).unwrap().unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        assert!(matches!(decoder.decode(&delta.data), Err(CodecError::Decode(_))), "delta first");
        assert!(matches!(decoder.decode(&[]), Err(CodecError::Decode(_))), "empty frame");
        let mut garbage = key.data.clone();
        let half = garbage.len() / 2;
        garbage[half..].fill(0xff);
        let _ = decoder.decode(&garbage); // an error or a broken picture, never a panic
        let _ = decoder.decode(&key.data[..key.data.len() / 3]);
        // The decoder still works afterwards.
        let picture = decoder.decode(&key.data).unwrap().unwrap();
        assert_eq!(read_counter(&picture), Some(0));
    }
}
