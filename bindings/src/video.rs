//! Video for Kotlin and Swift apps: camera pictures in (`call.videoSource(…)`), the peer's decoded
//! pictures out (`call.videoSink(…)`), and the interface a platform's hardware codec implements
//! ([`PlatformVideoEncoder`], [`PlatformVideoDecoder`]: MediaCodec, VideoToolbox). Without one,
//! the core's software codec is used where the library was built with it.

use std::sync::Arc;
use std::time::Duration;

use televisit_core::call::ladder::EncoderTarget;
use televisit_core::frame::{EncodedFrame, FrameKind, VideoCodec as CoreVideoCodec};
use televisit_core::video::h264::{self, ParameterSets};
use televisit_core::video::{
    self as core_video, pattern, CameraPicture, CameraPlanes, CodecError, I420Frame, Rotation,
    VideoError as CoreVideoError,
};

use crate::{Call, CallError, VideoCodec};

/// Why a picture or a codec was refused (Kotlin `VideoException.BadPicture`, Swift
/// `VideoError.BadPicture(reason:)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum VideoError {
    /// Planes whose sizes do not match the picture's, or a rotation that is not a quarter turn.
    #[error("bad picture: {reason}")]
    BadPicture {
        /// What is wrong with it.
        reason: String,
    },
    /// No codec: no platform codec was given and this build has no software one.
    #[error("no video codec: {reason}")]
    NoCodec {
        /// Why.
        reason: String,
    },
    /// A codec failed (the platform's, or the software one).
    #[error("video codec: {reason}")]
    Codec {
        /// What it said.
        reason: String,
    },
    /// The call was released.
    #[error("the call is closed")]
    Closed,
}

impl From<CodecError> for VideoError {
    fn from(error: CodecError) -> VideoError {
        match error {
            CodecError::BadInput(reason) => VideoError::BadPicture { reason },
            other => VideoError::Codec { reason: other.to_string() },
        }
    }
}

impl From<CoreVideoError> for VideoError {
    fn from(error: CoreVideoError) -> VideoError {
        match error {
            CoreVideoError::Closed => VideoError::Closed,
            CoreVideoError::Codec(error) => error.into(),
        }
    }
}

impl From<CallError> for VideoError {
    fn from(error: CallError) -> VideoError {
        match error {
            CallError::Closed { .. } => VideoError::Closed,
            other => VideoError::Codec { reason: other.to_string() },
        }
    }
}

/// An exception a platform codec threw that is not a `VideoError`.
impl From<uniffi::UnexpectedUniFFICallbackError> for VideoError {
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> VideoError {
        VideoError::Codec { reason: error.reason }
    }
}

impl From<VideoError> for CodecError {
    fn from(error: VideoError) -> CodecError {
        match error {
            VideoError::BadPicture { reason } => CodecError::BadInput(reason),
            other => CodecError::Encode(other.to_string()),
        }
    }
}

/// A raw picture in I420: a full-size luma plane, then the blue and the red chroma planes at half
/// width and half height (rounded up), each without row padding.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct VideoPicture {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Luma, `width × height` bytes.
    pub y: Vec<u8>,
    /// Blue chroma.
    pub u: Vec<u8>,
    /// Red chroma.
    pub v: Vec<u8>,
}

impl From<I420Frame> for VideoPicture {
    fn from(p: I420Frame) -> VideoPicture {
        VideoPicture { width: p.width, height: p.height, y: p.y, u: p.u, v: p.v }
    }
}

impl From<VideoPicture> for I420Frame {
    fn from(p: VideoPicture) -> I420Frame {
        I420Frame { width: p.width, height: p.height, y: p.y, u: p.u, v: p.v }
    }
}

/// A picture of the peer's camera, decoded, with when the peer captured it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DecodedPicture {
    /// The picture, upright.
    pub picture: VideoPicture,
    /// Its RTP timestamp (90 kHz).
    pub rtp_timestamp: Option<u32>,
    /// When the peer captured it, µs on the peer's clock, the clock of
    /// `AudioSink.playingCaptureTimeUs()`: show it when the voice of that moment plays. Null until
    /// the peer's first sender report (about a second into the call).
    pub capture_time_us: Option<i64>,
}

/// What an encoder should make now: called before the first picture and whenever the ladder
/// moves. A new size or frame rate needs a restart (its first frame a keyframe); a new bitrate
/// goes to the running encoder.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EncoderSettings {
    /// The codec the call negotiated.
    pub codec: VideoCodec,
    /// Width to encode at (the pictures given are already this size or are scaled to it).
    pub width: u32,
    /// Height to encode at.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Bitrate to aim for, bits per second.
    pub bitrate_bps: u64,
}

/// One encoded frame from a platform encoder.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EncodedVideo {
    /// VP8: the frame as libvpx writes it. H.264: the access unit in Annex-B form (VideoToolbox's
    /// AVCC through `annexBFromAvcc`). The parameter sets may come alone, as MediaCodec's
    /// codec-config buffer does: the core keeps them and puts them in front of each IDR.
    pub data: Vec<u8>,
    /// A keyframe (VP8 key frame, H.264 IDR); the core also reads it from the bitstream.
    pub keyframe: bool,
}

/// A platform's hardware video encoder (Android `MediaCodec`, iOS `VTCompressionSession`), driven
/// by the core: it configures it from the ladder and asks for keyframes when the peer needs one.
/// Called on the core's encoder thread, one call at a time.
#[uniffi::export(with_foreign)]
pub trait PlatformVideoEncoder: Send + Sync {
    /// Starts or reconfigures the encoder.
    fn configure(&self, settings: EncoderSettings) -> Result<(), VideoError>;
    /// Makes the next frame a keyframe.
    fn request_keyframe(&self);
    /// Encodes one upright I420 picture. Null: no frame for it (yet: a pipelined encoder may
    /// return each frame one call late).
    fn encode(&self, picture: VideoPicture) -> Result<Option<EncodedVideo>, VideoError>;
}

/// A platform's hardware video decoder (Android `MediaCodec`, iOS `VTDecompressionSession`).
/// Called on the core's decoder thread, one call at a time.
#[uniffi::export(with_foreign)]
pub trait PlatformVideoDecoder: Send + Sync {
    /// Starts or restarts the decoder for `codec` (the peer's camera arrives in it).
    fn configure(&self, codec: VideoCodec) -> Result<(), VideoError>;
    /// Decodes one frame into an I420 picture. Null: no picture (yet). An error: the picture is
    /// broken; the core drops frames until a keyframe and asks the peer for one.
    fn decode(&self, data: Vec<u8>) -> Result<Option<VideoPicture>, VideoError>;
}

/// The core's codec interface over the platform's codecs.
struct PlatformCodecs {
    encoder: Option<Arc<dyn PlatformVideoEncoder>>,
    decoder: Option<Arc<dyn PlatformVideoDecoder>>,
}

impl core_video::VideoCodecs for PlatformCodecs {
    fn encoder(&self, codec: CoreVideoCodec) -> Result<Box<dyn core_video::VideoEncoder>, CodecError> {
        let platform =
            self.encoder.clone().ok_or_else(|| core_video::codecs::not_available(codec, "video encoder"))?;
        Ok(Box::new(ForeignEncoder { platform, codec, fps: 30, parameter_sets: ParameterSets::new() }))
    }

    fn decoder(&self, codec: CoreVideoCodec) -> Result<Box<dyn core_video::VideoDecoder>, CodecError> {
        let platform =
            self.decoder.clone().ok_or_else(|| core_video::codecs::not_available(codec, "video decoder"))?;
        platform.configure(codec.into())?;
        Ok(Box::new(ForeignDecoder(platform)))
    }
}

struct ForeignEncoder {
    platform: Arc<dyn PlatformVideoEncoder>,
    codec: CoreVideoCodec,
    fps: u32,
    parameter_sets: ParameterSets,
}

impl core_video::VideoEncoder for ForeignEncoder {
    fn set_target(&mut self, target: EncoderTarget) -> Result<(), CodecError> {
        self.fps = target.fps.max(1);
        Ok(self.platform.configure(EncoderSettings {
            codec: self.codec.into(),
            width: target.rung.width,
            height: target.rung.height,
            fps: self.fps,
            bitrate_bps: target.bitrate_bps,
        })?)
    }

    fn request_keyframe(&mut self) {
        self.platform.request_keyframe();
    }

    fn encode(&mut self, picture: &I420Frame) -> Result<Option<EncodedFrame>, CodecError> {
        let Some(encoded) = self.platform.encode(picture.clone().into())? else { return Ok(None) };
        let data = match self.codec {
            CoreVideoCodec::H264 => match self.parameter_sets.complete(encoded.data) {
                Some(data) => data,
                None => return Ok(None), // parameter sets alone: kept for the next IDR
            },
            CoreVideoCodec::Vp8 => encoded.data,
        };
        Ok(Some(EncodedFrame {
            kind: FrameKind::Video,
            keyframe: encoded.keyframe || self.codec.is_keyframe(&data),
            data,
            duration: Duration::from_micros(1_000_000 / u64::from(self.fps)),
            timing: Default::default(),
        }))
    }
}

struct ForeignDecoder(Arc<dyn PlatformVideoDecoder>);

impl core_video::VideoDecoder for ForeignDecoder {
    fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, CodecError> {
        let picture = self.0.decode(data.to_vec()).map_err(|e| CodecError::Decode(e.to_string()))?;
        match picture.map(I420Frame::from) {
            Some(picture) => {
                picture.check().map_err(|e| CodecError::Decode(format!("the platform decoder gave {e}")))?;
                Ok(Some(picture))
            }
            None => Ok(None),
        }
    }
}

/// The codecs for a source or sink: the platform's if given, else the core's software ones.
fn codecs(
    encoder: Option<Arc<dyn PlatformVideoEncoder>>,
    decoder: Option<Arc<dyn PlatformVideoDecoder>>,
) -> Result<Arc<dyn core_video::VideoCodecs>, VideoError> {
    if encoder.is_some() || decoder.is_some() {
        return Ok(Arc::new(PlatformCodecs { encoder, decoder }));
    }
    #[cfg(feature = "software-codec")]
    {
        Ok(televisit_codecs::software_codecs())
    }
    #[cfg(not(feature = "software-codec"))]
    {
        Err(VideoError::NoCodec {
            reason: "this build has no software video codec: give the platform's".into(),
        })
    }
}

#[uniffi::export]
impl Call {
    /// The camera's way in: push each picture the camera gives (I420 or NV12, with its rotation
    /// and capture time). The core turns it upright, fits it to the ladder's rung, keeps the rung's
    /// frame rate, and encodes it with `encoder` (the platform's hardware encoder; null: the core's
    /// software VP8 or H.264, where built in), following the bitrate and the peer's keyframe requests by
    /// itself. The same object each time (the first call's encoder stays). Use it or `sendFrame`
    /// with your own encoder, not both.
    pub fn video_source(
        &self,
        encoder: Option<Arc<dyn PlatformVideoEncoder>>,
    ) -> Result<Arc<VideoSource>, VideoError> {
        let codecs = codecs(encoder, None)?;
        let source = self.client()?.video_source(codecs).map_err(CallError::from)?;
        Ok(Arc::new(VideoSource(source)))
    }

    /// The view's way out: pull the peer's camera pictures, decoded by `decoder` (the platform's
    /// hardware decoder; null: the core's software VP8 or H.264, where built in). From the first call on,
    /// the peer's camera frames go to it, not to the listener, and a broken picture asks the peer
    /// for a keyframe by itself. The same object each time.
    pub fn video_sink(
        &self,
        decoder: Option<Arc<dyn PlatformVideoDecoder>>,
    ) -> Result<Arc<VideoSink>, VideoError> {
        let codecs = codecs(None, decoder)?;
        let sink = self.client()?.video_sink(codecs).map_err(CallError::from)?;
        Ok(Arc::new(VideoSink(sink)))
    }
}

/// What a video source did so far.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct VideoSourceStats {
    /// Pictures pushed.
    pub pictures_pushed: u64,
    /// Pictures dropped: the encoder fell behind, the rung's frame rate is below the camera's, or
    /// no codec was negotiated yet.
    pub pictures_dropped: u64,
    /// Frames encoded and sent.
    pub frames_sent: u64,
    /// Of them, keyframes.
    pub keyframes_sent: u64,
    /// Pictures the encoder failed on.
    pub encoder_errors: u64,
    /// Width of the last frame encoded (0 before any).
    pub encoded_width: u32,
    /// Height of the last frame encoded.
    pub encoded_height: u32,
}

/// The camera's way into the call (`call.videoSource(encoder)`). Never blocks on the encoder: it
/// keeps the newest two pictures and drops older ones when the encoder falls behind.
#[derive(uniffi::Object)]
pub struct VideoSource(core_video::VideoSource);

fn camera(
    width: u32,
    height: u32,
    planes: CameraPlanes,
    rotation_degrees: i32,
    capture_time_us: i64,
) -> Result<CameraPicture, VideoError> {
    let rotation = Rotation::from_degrees(rotation_degrees)?;
    Ok(CameraPicture { width, height, planes, rotation, capture_time_us })
}

#[uniffi::export]
impl VideoSource {
    /// Queues an I420 picture (Android `YUV_420_888` read plane by plane without padding, or a
    /// picture from `testPatternPicture`). `rotation_degrees` turns it clockwise to upright (0,
    /// 90, 180, 270); `capture_time_us` is on any steady clock. `BadPicture` for planes of the
    /// wrong size, `Closed` after release.
    pub fn push_i420(
        &self,
        picture: VideoPicture,
        rotation_degrees: i32,
        capture_time_us: i64,
    ) -> Result<(), VideoError> {
        let VideoPicture { width, height, y, u, v } = picture;
        let picture =
            camera(width, height, CameraPlanes::I420 { y, u, v }, rotation_degrees, capture_time_us)?;
        Ok(self.0.push(picture)?)
    }

    /// Queues an NV12 picture (iOS `kCVPixelFormatType_420YpCbCr8BiPlanarFullRange`, Android
    /// buffers whose chroma is interleaved): luma, then `u, v` pairs.
    pub fn push_nv12(
        &self,
        width: u32,
        height: u32,
        y: Vec<u8>,
        uv: Vec<u8>,
        rotation_degrees: i32,
        capture_time_us: i64,
    ) -> Result<(), VideoError> {
        let picture = camera(width, height, CameraPlanes::Nv12 { y, uv }, rotation_degrees, capture_time_us)?;
        Ok(self.0.push(picture)?)
    }

    /// What the source did so far.
    pub fn stats(&self) -> VideoSourceStats {
        let s = self.0.stats();
        VideoSourceStats {
            pictures_pushed: s.pictures_pushed,
            pictures_dropped: s.pictures_dropped,
            frames_sent: s.frames_sent,
            keyframes_sent: s.keyframes_sent,
            encoder_errors: s.encoder_errors,
            encoded_width: s.encoded_width,
            encoded_height: s.encoded_height,
        }
    }
}

/// What a video sink did so far.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct VideoSinkStats {
    /// Frames of the peer's camera that arrived.
    pub frames_received: u64,
    /// Frames dropped before decoding (waiting for a keyframe, decoder far behind).
    pub frames_discarded: u64,
    /// Pictures decoded.
    pub pictures_decoded: u64,
    /// Decoded pictures not pulled in time (the oldest are dropped).
    pub pictures_dropped: u64,
    /// Frames the decoder failed on.
    pub decode_errors: u64,
    /// Keyframes asked of the peer.
    pub keyframes_requested: u64,
}

/// The view's way out of the call (`call.videoSink(decoder)`): pull the peer's pictures, oldest
/// first, from the display's refresh callback. It keeps the newest three.
#[derive(uniffi::Object)]
pub struct VideoSink(Arc<core_video::VideoSink>);

#[uniffi::export]
impl VideoSink {
    /// The oldest decoded picture not pulled yet; null if none. Never waits. `Closed` after
    /// release.
    pub fn pull(&self) -> Result<Option<DecodedPicture>, VideoError> {
        Ok(self.0.pull()?.map(|d| DecodedPicture {
            picture: d.picture.into(),
            rtp_timestamp: d.rtp_timestamp,
            capture_time_us: d.capture_time_us,
        }))
    }

    /// What the sink did so far.
    pub fn stats(&self) -> VideoSinkStats {
        let s = self.0.stats();
        VideoSinkStats {
            frames_received: s.frames_received,
            frames_discarded: s.frames_discarded,
            pictures_decoded: s.pictures_decoded,
            pictures_dropped: s.pictures_dropped,
            decode_errors: s.decode_errors,
            keyframes_requested: s.keyframes_requested,
        }
    }
}

/// The picture as RGBA bytes (4 per pixel, row after row) for a view that draws bitmaps (Android
/// `Bitmap.copyPixelsFromBuffer` with `ARGB_8888`, iOS a `CGImage` of `premultipliedLast`).
#[uniffi::export]
pub fn rgba_pixels(picture: VideoPicture) -> Result<Vec<u8>, VideoError> {
    let picture = I420Frame::from(picture);
    picture.check()?;
    Ok(picture.rgba())
}

/// An H.264 access unit with start codes (Annex B) from VideoToolbox's length-prefixed one
/// (AVCC, 4-byte lengths). `BadPicture` if a length runs past the end.
#[uniffi::export]
pub fn annex_b_from_avcc(avcc: Vec<u8>) -> Result<Vec<u8>, VideoError> {
    h264::annex_b_from_avcc(&avcc)
        .ok_or_else(|| VideoError::BadPicture { reason: "an AVCC length runs past the end".into() })
}

/// A length-prefixed (AVCC) access unit for VideoToolbox's decoder from an Annex-B one, without
/// its parameter sets (see `h264ParameterSets`).
#[uniffi::export]
pub fn avcc_from_annex_b(annex_b: Vec<u8>) -> Vec<u8> {
    h264::avcc_from_annex_b(&annex_b)
}

/// The sequence and picture parameter sets of an H.264 keyframe, for a decoder's format
/// description (`CMVideoFormatDescriptionCreateFromH264ParameterSets`); null if it lacks them.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct H264ParameterSets {
    /// The sequence parameter set NAL unit, without a start code.
    pub sps: Vec<u8>,
    /// The picture parameter set NAL unit.
    pub pps: Vec<u8>,
}

/// The parameter sets of an Annex-B access unit, if it has both.
#[uniffi::export]
pub fn h264_parameter_sets(annex_b: Vec<u8>) -> Option<H264ParameterSets> {
    h264::parameter_sets(&annex_b).map(|(sps, pps)| H264ParameterSets { sps, pps })
}

/// Picture `counter` of the test pattern at this size: moving colour bars and a frame counter
/// that survives encoding, for a pre-call camera check without a camera and for tests.
#[uniffi::export]
pub fn test_pattern_picture(counter: u32, width: u32, height: u32) -> VideoPicture {
    pattern::picture(counter, width.max(2), height.max(2)).into()
}

/// The frame counter of a (decoded) test-pattern picture; null if it carries none.
#[uniffi::export]
pub fn read_test_pattern(picture: VideoPicture) -> Option<u32> {
    let picture = I420Frame::from(picture);
    picture.check().ok()?;
    pattern::read_counter(&picture)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_failures_keep_their_kind() {
        assert!(matches!(VideoError::from(CodecError::BadInput("x".into())), VideoError::BadPicture { .. }));
        assert_eq!(VideoError::from(CoreVideoError::Closed), VideoError::Closed);
        assert!(matches!(
            Rotation::from_degrees(45).map_err(VideoError::from),
            Err(VideoError::BadPicture { .. })
        ));
    }

    struct FakeH264;

    impl PlatformVideoEncoder for FakeH264 {
        fn configure(&self, _: EncoderSettings) -> Result<(), VideoError> {
            Ok(())
        }
        fn request_keyframe(&self) {}
        fn encode(&self, picture: VideoPicture) -> Result<Option<EncodedVideo>, VideoError> {
            // MediaCodec's order: the codec config alone, then an IDR without the sets, then P.
            let nal: &[u8] = match picture.y[0] {
                0 => &[0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce],
                1 => &[0, 0, 0, 1, 0x65, 0x88],
                _ => &[0, 0, 0, 1, 0x41, 0x9a],
            };
            Ok(Some(EncodedVideo { data: nal.to_vec(), keyframe: false }))
        }
    }

    #[test]
    fn a_platform_h264_encoders_idrs_carry_the_parameter_sets_and_are_known_as_keyframes() {
        let codecs = PlatformCodecs { encoder: Some(Arc::new(FakeH264)), decoder: None };
        let mut encoder = core_video::VideoCodecs::encoder(&codecs, CoreVideoCodec::H264).unwrap();
        let mut frame = |n| encoder.encode(&I420Frame::filled(2, 2, (n, 128, 128))).unwrap();
        assert_eq!(frame(0), None, "the config alone is no frame");
        let idr = frame(1).unwrap();
        assert!(idr.keyframe);
        assert_eq!(idr.data, [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88]);
        assert!(!frame(2).unwrap().keyframe);
        assert!(core_video::VideoCodecs::decoder(&codecs, CoreVideoCodec::H264).is_err(), "no decoder given");
        assert!(rgba_pixels(VideoPicture { width: 2, height: 2, y: vec![], u: vec![], v: vec![] }).is_err());
    }

    #[test]
    fn the_test_pattern_reads_back_and_a_malformed_picture_has_no_counter() {
        let picture = test_pattern_picture(77, 640, 360);
        assert_eq!(read_test_pattern(picture.clone()), Some(77));
        assert_eq!(read_test_pattern(VideoPicture { y: vec![], ..picture }), None);
    }
}
