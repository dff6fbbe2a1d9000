//! VP8 in software (libvpx, through the small wrapper in `codec::vpx`): [`Vp8Encoder`] turns
//! I420 pictures into [`EncodedFrame`]s at the ladder's [`EncoderTarget`]; [`Vp8Decoder`] turns
//! VP8 frames back into pictures.
//!
//! The encoder runs in real-time mode (one pass, CBR, no look-ahead, no dropped frames, speed `-6`
//! as WebRTC uses on desktops), with a keyframe on request ([`Vp8Encoder::request_keyframe`]: the
//! receiver's picture-loss requests, frames the pacer dropped) and otherwise at most every
//! [`KEYFRAME_INTERVAL_SECONDS`], a safety net only: a keyframe is several times a delta frame,
//! and on a thin link each one is a burst the congestion controller reads as a queue building
//! (measured on the emulated 800 kbps link: a cut every 2 s with the old 2 s interval). A new
//! target bitrate is applied to the running encoder; a new size or frame rate
//! restarts it (its next frame is a keyframe), and pictures of another size are scaled to the
//! target's.

use std::time::Duration;

use super::vpx::{EncoderSettings, RawDecoder, RawEncoder};
use super::{CodecError, I420Frame};
use televisit_core::call::ladder::{BitrateLadder, EncoderTarget, Rung, DEFAULT_START_RUNG};
use televisit_core::frame::{EncodedFrame, FrameKind};

/// Longest time between two keyframes, seconds (keyframes come on request in between).
pub const KEYFRAME_INTERVAL_SECONDS: u32 = 20;
/// Least bitrate the encoder is given, bits per second.
pub const MIN_BITRATE_BPS: u64 = 50_000;

/// The target the headless client and the tests start with: the ladder's start rung
/// ([`DEFAULT_START_RUNG`]) at its comfortable bitrate.
pub fn default_target() -> EncoderTarget {
    BitrateLadder::new(DEFAULT_START_RUNG, "1080p").target()
}

/// The rung's picture size rounded down to even numbers (4:2:0 wants them), `None` below
/// `min` pixels a side (the audio-only rung).
pub(crate) fn even_size(target: &EncoderTarget, min: u32) -> Option<(u32, u32)> {
    let Rung { width, height, .. } = target.rung;
    (width >= min && height >= min).then_some((width & !1, height & !1))
}

/// Whether going from `old` to `new` needs a new encoder (a new size or frame rate), not only a
/// new bitrate.
pub(crate) fn reshaped(old: &EncoderTarget, new: &EncoderTarget) -> bool {
    (old.rung.width, old.rung.height, old.fps) != (new.rung.width, new.rung.height, new.fps)
}

/// `picture` at `size`: itself, or a copy scaled into `scaled`.
pub(crate) fn at_size<'a>(
    picture: &'a I420Frame,
    (width, height): (u32, u32),
    scaled: &'a mut Option<I420Frame>,
) -> &'a I420Frame {
    if (picture.width, picture.height) == (width, height) {
        picture
    } else {
        scaled.insert(picture.scaled(width, height))
    }
}

/// A VP8 encoder following an [`EncoderTarget`].
pub struct Vp8Encoder {
    encoder: Option<RawEncoder>,
    target: EncoderTarget,
    keyframe_requested: bool,
    frames: u64,
    starts: u32,
}

impl std::fmt::Debug for Vp8Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Encoder").field("target", &self.target).field("frames", &self.frames).finish()
    }
}

fn kbps(bitrate_bps: u64) -> u32 {
    (bitrate_bps.max(MIN_BITRATE_BPS) / 1000).min(u64::from(u32::MAX)) as u32
}

impl Vp8Encoder {
    /// An encoder for this target (for the audio-only rung it encodes nothing until the target
    /// changes).
    pub fn new(target: EncoderTarget) -> Result<Vp8Encoder, CodecError> {
        let mut encoder =
            Vp8Encoder { encoder: None, target, keyframe_requested: false, frames: 0, starts: 0 };
        encoder.start()?;
        Ok(encoder)
    }

    /// The picture size the encoder produces: the rung's, rounded down to even numbers (VP8 in
    /// I420 needs them here); `None` for the audio-only rung.
    pub fn size(&self) -> Option<(u32, u32)> {
        even_size(&self.target, 2)
    }

    /// The target in use.
    pub fn target(&self) -> EncoderTarget {
        self.target
    }

    /// The bitrate the running encoder aims at, kbit/s (`None` for the audio-only rung).
    pub fn bitrate_kbps(&self) -> Option<u32> {
        self.encoder.as_ref().map(|e| e.settings().bitrate_kbps)
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
        match self.encoder.as_mut() {
            Some(encoder) if !reshaped => {
                if encoder.settings().bitrate_kbps != kbps(target.bitrate_bps) {
                    encoder.set_bitrate(kbps(target.bitrate_bps)).map_err(CodecError::Encode)?;
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
        let Some((width, height)) = self.size() else { return Ok(()) };
        let fps = self.target.fps.max(1);
        let settings = EncoderSettings {
            width,
            height,
            fps,
            bitrate_kbps: kbps(self.target.bitrate_bps),
            keyframe_max_distance: fps * KEYFRAME_INTERVAL_SECONDS,
        };
        let encoder =
            RawEncoder::new(settings).map_err(|reason| CodecError::Init { codec: "VP8 encoder", reason })?;
        self.encoder = Some(encoder);
        self.starts += 1;
        Ok(())
    }

    /// Encodes one picture (scaled to the target size first if it differs). `None`: the encoder
    /// produced nothing for it (the audio-only rung).
    pub fn encode(&mut self, picture: &I420Frame) -> Result<Option<EncodedFrame>, CodecError> {
        picture.check()?;
        let Some((width, height)) = self.size() else { return Ok(None) };
        let Some(encoder) = self.encoder.as_mut() else { return Ok(None) };
        let fps = u64::from(self.target.fps.max(1));
        let mut scaled = None;
        let picture = at_size(picture, (width, height), &mut scaled);
        let duration_ms = (1000 / fps) as u32;
        let pts = (self.frames * 1000 / fps) as i64;
        self.frames += 1;
        let keyframe = std::mem::take(&mut self.keyframe_requested);
        let packets = encoder.encode(picture, pts, duration_ms, keyframe).map_err(CodecError::Encode)?;
        let mut out: Option<EncodedFrame> = None;
        for packet in packets {
            match out.as_mut() {
                Some(existing) => existing.data.extend_from_slice(&packet.data),
                None => {
                    out = Some(EncodedFrame {
                        kind: FrameKind::Video,
                        data: packet.data,
                        duration: Duration::from_millis(u64::from(duration_ms)),
                        keyframe: packet.keyframe,
                        timing: Default::default(),
                    })
                }
            }
        }
        Ok(out)
    }
}

/// A VP8 decoder.
pub struct Vp8Decoder {
    decoder: RawDecoder,
    seen_keyframe: bool,
    decoded: u64,
}

impl std::fmt::Debug for Vp8Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Decoder").field("decoded", &self.decoded).finish()
    }
}

impl Vp8Decoder {
    /// A decoder (the stream's size is taken from its keyframes).
    pub fn new() -> Result<Vp8Decoder, CodecError> {
        let decoder =
            RawDecoder::new().map_err(|reason| CodecError::Init { codec: "VP8 decoder", reason })?;
        Ok(Vp8Decoder { decoder, seen_keyframe: false, decoded: 0 })
    }

    /// Pictures decoded so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Decodes one VP8 frame into a picture. Errors: a corrupt or truncated frame, or an inter
    /// frame before the first keyframe (wait for the next keyframe and go on).
    pub fn decode(&mut self, data: &[u8]) -> Result<I420Frame, CodecError> {
        let keyframe = data.first().is_some_and(|b| b & 1 == 0);
        if !self.seen_keyframe && !keyframe {
            return Err(CodecError::Decode("an inter frame before any keyframe".into()));
        }
        let picture = self
            .decoder
            .decode(data)
            .map_err(CodecError::Decode)?
            .ok_or_else(|| CodecError::Decode("the frame held no picture".into()))?;
        self.seen_keyframe = true;
        self.decoded += 1;
        Ok(picture)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{read_counter, TestPattern};
    use televisit_core::call::ladder::LADDER;

    fn target(name: &str) -> EncoderTarget {
        let rung = *LADDER.iter().find(|r| r.name == name).unwrap();
        EncoderTarget::at_rung(rung)
    }

    #[test]
    fn pictures_survive_encoding_and_decoding_with_their_counter() {
        let mut encoder = Vp8Encoder::new(target("360p")).unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        let mut pattern = TestPattern::new();
        for n in 0..20 {
            let picture = pattern.next_frame(640, 360);
            let frame = encoder.encode(&picture).unwrap().expect("a frame per picture");
            assert_eq!(frame.kind, FrameKind::Video);
            assert_eq!(frame.keyframe, n == 0, "frame {n}");
            let decoded = decoder.decode(&frame.data).unwrap();
            assert_eq!((decoded.width, decoded.height), (640, 360));
            assert_eq!(read_counter(&decoded), Some(n));
        }
        assert_eq!(decoder.decoded(), 20);
    }

    #[test]
    fn a_keyframe_comes_on_request_and_otherwise_only_every_twenty_seconds() {
        let mut encoder = Vp8Encoder::new(target("180p")).unwrap(); // 15 fps
        let mut pattern = TestPattern::new();
        let mut keyframes = vec![];
        for n in 0..(5 + 15 * KEYFRAME_INTERVAL_SECONDS + 10) {
            if n == 5 {
                encoder.request_keyframe();
            }
            let frame = encoder.encode(&pattern.next_frame(320, 180)).unwrap().unwrap();
            if frame.keyframe {
                keyframes.push(n);
            }
        }
        assert_eq!(&keyframes[..2], &[0, 5]);
        // The periodic one counts from the requested one, 20 s (300 frames) later: no burst
        // every 2 s on a thin link.
        assert_eq!(keyframes.len(), 3, "one periodic keyframe: {keyframes:?}");
        assert!((5 + 15 * 19..=5 + 15 * 20).contains(&keyframes[2]), "{keyframes:?}");
    }

    #[test]
    fn the_encoder_follows_the_rung_size_and_big_bitrate_moves() {
        let mut encoder = Vp8Encoder::new(target("720p")).unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        let mut pattern = TestPattern::new();
        let picture = pattern.next_frame(1280, 720);
        decoder.decode(&encoder.encode(&picture).unwrap().unwrap().data).unwrap();
        // A new bitrate goes to the running encoder: no restart, no keyframe.
        encoder.set_target(EncoderTarget { bitrate_bps: 600_000, ..target("720p") }).unwrap();
        assert_eq!((encoder.starts(), encoder.bitrate_kbps()), (1, Some(600)));
        assert!(!encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap().keyframe);
        encoder.set_target(EncoderTarget { bitrate_bps: 1_000, ..target("720p") }).unwrap();
        assert_eq!(encoder.bitrate_kbps(), Some(50), "never below the floor");
        // A new rung: 720p pictures are scaled down to 360p, starting with a keyframe.
        encoder.set_target(target("360p")).unwrap();
        let frame = encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap();
        assert!(frame.keyframe);
        assert_eq!(encoder.starts(), 2);
        let decoded = decoder.decode(&frame.data).unwrap();
        assert_eq!((decoded.width, decoded.height), (640, 360));
        assert_eq!(read_counter(&decoded), Some(2));
        // Audio only: nothing to encode.
        encoder.set_target(target("audio-only")).unwrap();
        assert_eq!(encoder.size(), None);
        assert_eq!(encoder.encode(&pattern.next_frame(1280, 720)).unwrap(), None);
    }

    #[test]
    fn a_lower_bitrate_makes_smaller_frames() {
        let mut sizes = vec![];
        for bitrate_bps in [1_500_000, 200_000] {
            let mut encoder = Vp8Encoder::new(EncoderTarget { bitrate_bps, ..target("720p") }).unwrap();
            let mut pattern = TestPattern::new();
            let total: usize = (0..30)
                .map(|_| encoder.encode(&pattern.next_frame(1280, 720)).unwrap().unwrap().data.len())
                .sum();
            sizes.push(total);
        }
        // One second each; CBR keeps close to the target (the first keyframe overshoots a little).
        let kbps: Vec<usize> = sizes.iter().map(|bytes| bytes * 8 / 1000).collect();
        assert!((1000..2000).contains(&kbps[0]), "kbit in the first second at 1.5 Mbps: {kbps:?}");
        assert!((100..400).contains(&kbps[1]), "kbit in the first second at 200 kbps: {kbps:?}");
    }

    #[test]
    fn an_impossible_size_is_an_init_error() {
        let rung = Rung { width: 40_000, height: 40_000, ..LADDER[1] };
        let error = Vp8Encoder::new(EncoderTarget { rung, fps: 30, bitrate_bps: 1_000_000 }).unwrap_err();
        assert!(matches!(error, CodecError::Init { codec: "VP8 encoder", .. }), "{error}");
        let mut encoder = Vp8Encoder::new(target("360p")).unwrap();
        assert!(encoder.set_target(EncoderTarget { rung, fps: 30, bitrate_bps: 1_000_000 }).is_err());
    }

    #[test]
    fn a_bad_picture_is_refused() {
        let mut encoder = Vp8Encoder::new(target("360p")).unwrap();
        let mut picture = I420Frame::filled(640, 360, (16, 128, 128));
        picture.y.truncate(100);
        assert!(matches!(encoder.encode(&picture), Err(CodecError::BadInput(_))));
    }

    #[test]
    fn corrupt_or_out_of_order_frames_are_errors_not_crashes() {
        let mut encoder = Vp8Encoder::new(target("360p")).unwrap();
        let mut pattern = TestPattern::new();
        let key = encoder.encode(&pattern.next_frame(640, 360)).unwrap().unwrap();
        let inter = encoder.encode(&pattern.next_frame(640, 360)).unwrap().unwrap();
        let mut decoder = Vp8Decoder::new().unwrap();
        assert!(matches!(decoder.decode(&inter.data), Err(CodecError::Decode(_))), "inter frame first");
        assert!(matches!(decoder.decode(&[]), Err(CodecError::Decode(_))), "empty frame");
        assert!(decoder.decode(&key.data[..10]).is_err(), "truncated keyframe");
        let mut garbage = key.data.clone();
        garbage[3..10].copy_from_slice(&[0xff; 7]); // breaks the keyframe start code
        assert!(decoder.decode(&garbage).is_err(), "keyframe with a broken start code");
        // The decoder still works afterwards.
        let picture = Vp8Decoder::new().unwrap().decode(&key.data).unwrap();
        assert_eq!(read_counter(&picture), Some(0));
        assert_eq!(read_counter(&decoder.decode(&key.data).unwrap()), Some(0));
    }
}
