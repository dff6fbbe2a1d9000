//! The objects an app holds for its video, separate from the call's event listener: a
//! [`VideoSource`] the camera callback pushes pictures into, and a [`VideoSink`] the renderer
//! pulls decoded pictures from. Each runs its codec on a thread of its own (encoding and decoding
//! take milliseconds a picture; the call's runtime must not wait on them) behind bounded queues:
//! a source keeps the newest [`SOURCE_QUEUE_PICTURES`] pictures, a sink the newest
//! [`SINK_QUEUE_PICTURES`] decoded ones, so a slow codec or renderer drops old pictures instead of
//! adding delay. The source follows the ladder (size, frame rate, bitrate) and keyframe requests
//! itself; the sink asks the peer for a keyframe when its picture breaks.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::codecs::{CodecError, VideoCodecs, VideoDecoder, VideoEncoder};
use super::picture::{CameraPicture, I420Frame};
use super::VideoError;
use crate::call::ladder::{EncoderTarget, Rung};
use crate::frame::{EncodedFrame, FrameKind, VideoCodec};

/// Pictures a source queues at most; older ones are dropped when the encoder falls behind.
pub const SOURCE_QUEUE_PICTURES: usize = 2;
/// Encoded frames a sink queues for its decoder at most (2 s at 30 fps); past that it drops them
/// and waits for a keyframe.
pub const SINK_FRAME_QUEUE: usize = 60;
/// Decoded pictures a sink keeps for the renderer at most; older ones are dropped.
pub const SINK_QUEUE_PICTURES: usize = 3;
/// Least time between two keyframe requests of a sink.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a source did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoSourceStats {
    /// Pictures the app pushed.
    pub pictures_pushed: u64,
    /// Pictures dropped: the encoder fell behind, the rung's frame rate is below the camera's,
    /// or no codec was negotiated yet.
    pub pictures_dropped: u64,
    /// Frames encoded and handed to the call.
    pub frames_sent: u64,
    /// Of them, keyframes.
    pub keyframes_sent: u64,
    /// Pictures the encoder failed on.
    pub encoder_errors: u64,
    /// The size of the last frame encoded (`0 × 0` before any).
    pub encoded_width: u32,
    /// See `encoded_width`.
    pub encoded_height: u32,
}

struct Captured {
    picture: I420Frame,
    capture_time_us: i64,
}

struct SourceState {
    queue: VecDeque<Captured>,
    codec: Option<VideoCodec>,
    target: EncoderTarget,
    keyframe: bool,
    closed: bool,
    stats: VideoSourceStats,
}

struct SourceShared {
    state: Mutex<SourceState>,
    wake: Condvar,
}

/// The camera's way into the call: push pictures as they are captured. They are turned upright,
/// encoded in the negotiated codec at the ladder's size, frame rate and bitrate (a keyframe when
/// the peer asks for one) and sent on the call's video track while the camera is on.
#[derive(Clone)]
pub struct VideoSource {
    shared: Arc<SourceShared>,
}

impl std::fmt::Debug for VideoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoSource").field("stats", &self.stats()).finish()
    }
}

impl VideoSource {
    /// A source encoding with `codecs`, starting at `target`, that hands each frame to `send` (it
    /// stops when `send` returns `false` or the source is closed).
    pub fn start(
        codecs: Arc<dyn VideoCodecs>,
        target: EncoderTarget,
        send: impl Fn(EncodedFrame) -> bool + Send + 'static,
    ) -> VideoSource {
        let shared = Arc::new(SourceShared {
            state: Mutex::new(SourceState {
                queue: VecDeque::with_capacity(SOURCE_QUEUE_PICTURES),
                codec: None,
                target,
                keyframe: false,
                closed: false,
                stats: VideoSourceStats::default(),
            }),
            wake: Condvar::new(),
        });
        let task = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("televisit-video-encoder".into())
            .spawn(move || Encoding::new(codecs).run(&task, send))
            .expect("the encoder thread starts");
        VideoSource { shared }
    }

    /// Queues one camera picture. Never blocks on the encoder; when it is
    /// [`SOURCE_QUEUE_PICTURES`] behind, the oldest picture is dropped. Planes of the wrong size
    /// are refused here, on the caller's thread.
    pub fn push(&self, picture: CameraPicture) -> Result<(), VideoError> {
        if lock(&self.shared.state).closed {
            return Err(VideoError::Closed);
        }
        let capture_time_us = picture.capture_time_us;
        let picture = picture.upright()?;
        let mut state = lock(&self.shared.state);
        state.stats.pictures_pushed += 1;
        if state.queue.len() == SOURCE_QUEUE_PICTURES {
            state.queue.pop_front();
            state.stats.pictures_dropped += 1;
        }
        state.queue.push_back(Captured { picture, capture_time_us });
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Encodes with this codec from the next picture on (the call negotiated it).
    pub fn set_codec(&self, codec: VideoCodec) {
        lock(&self.shared.state).codec = Some(codec);
    }

    /// Follows the ladder: the rung (its size is fitted to the camera's shape), frame rate and
    /// bitrate.
    pub fn set_target(&self, target: EncoderTarget) {
        lock(&self.shared.state).target = target;
    }

    /// The target the source follows.
    pub fn target(&self) -> EncoderTarget {
        lock(&self.shared.state).target
    }

    /// Makes the next frame a keyframe.
    pub fn request_keyframe(&self) {
        lock(&self.shared.state).keyframe = true;
    }

    /// What the source did so far.
    pub fn stats(&self) -> VideoSourceStats {
        lock(&self.shared.state).stats
    }

    /// Stops the encoder; later pushes fail with [`VideoError::Closed`].
    pub fn close(&self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
    }
}

/// The encoder thread's own state.
struct Encoding {
    codecs: Arc<dyn VideoCodecs>,
    encoder: Option<(VideoCodec, Box<dyn VideoEncoder>)>,
    /// The target given to the encoder (the rung's size fitted to the picture).
    applied: Option<EncoderTarget>,
    keyframe: bool,
    last_capture_us: Option<i64>,
}

impl Encoding {
    fn new(codecs: Arc<dyn VideoCodecs>) -> Encoding {
        Encoding { codecs, encoder: None, applied: None, keyframe: false, last_capture_us: None }
    }

    fn run(mut self, shared: &SourceShared, send: impl Fn(EncodedFrame) -> bool) {
        loop {
            let (captured, codec, target) = {
                let mut state = lock(&shared.state);
                while state.queue.is_empty() && !state.closed {
                    state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.closed {
                    return;
                }
                self.keyframe |= std::mem::take(&mut state.keyframe);
                (state.queue.pop_front().expect("a picture"), state.codec, state.target)
            };
            let outcome = self.encode(captured, codec, target);
            let mut state = lock(&shared.state);
            match outcome {
                Ok(Some(frame)) => {
                    state.stats.frames_sent += 1;
                    state.stats.keyframes_sent += u64::from(frame.keyframe);
                    if let Some((width, height)) = self.applied.map(|t| (t.rung.width, t.rung.height)) {
                        (state.stats.encoded_width, state.stats.encoded_height) = (width, height);
                    }
                    drop(state);
                    if !send(frame) {
                        return;
                    }
                }
                Ok(None) => state.stats.pictures_dropped += 1,
                Err(error) => {
                    state.stats.encoder_errors += 1;
                    if state.stats.encoder_errors <= 3 {
                        tracing::warn!(%error, "a camera picture was not encoded");
                    }
                }
            }
        }
    }

    /// Encodes one picture, or `None` when it is skipped (no codec yet, above the frame rate, the
    /// audio-only rung).
    fn encode(
        &mut self,
        captured: Captured,
        codec: Option<VideoCodec>,
        target: EncoderTarget,
    ) -> Result<Option<EncodedFrame>, CodecError> {
        let Some(codec) = codec else { return Ok(None) };
        if self.encoder.as_ref().is_none_or(|(current, _)| *current != codec) {
            self.encoder = Some((codec, self.codecs.encoder(codec)?));
            self.applied = None;
        }
        // The camera may run faster than the rung: keep a picture per frame interval (a fifth
        // early is on time: capture times jitter).
        let interval_us = 1_000_000 / i64::from(target.fps.max(1));
        if let Some(last) = self.last_capture_us {
            let gap = captured.capture_time_us - last;
            if (0..interval_us * 4 / 5).contains(&gap) {
                return Ok(None);
            }
        }
        let Some((width, height)) = captured.picture.fitted_size(target.rung.width, target.rung.height)
        else {
            return Ok(None);
        };
        let (_, encoder) = self.encoder.as_mut().expect("made above");
        let wanted = EncoderTarget { rung: Rung { width, height, ..target.rung }, ..target };
        if self.applied != Some(wanted) {
            encoder.set_target(wanted)?;
            self.applied = Some(wanted);
        }
        if std::mem::take(&mut self.keyframe) {
            encoder.request_keyframe();
        }
        self.last_capture_us = Some(captured.capture_time_us);
        let frame = encoder.encode(&captured.picture)?;
        Ok(frame.map(|frame| EncodedFrame { kind: FrameKind::Video, ..frame }))
    }
}

/// A decoded picture of the peer's camera, with when the peer captured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPicture {
    /// The picture, upright.
    pub picture: I420Frame,
    /// Its RTP timestamp (90 kHz).
    pub rtp_timestamp: Option<u32>,
    /// When the peer captured it, µs since the Unix epoch on the peer's clock (shared with its
    /// audio: compare with `AudioSink::playing_capture_time_us` for lip sync); `None` until the
    /// peer's first sender report.
    pub capture_time_us: Option<i64>,
}

/// What a sink did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoSinkStats {
    /// Frames of the peer's camera that arrived.
    pub frames_received: u64,
    /// Frames dropped before decoding: broken picture waiting for a keyframe, or the decoder too
    /// far behind.
    pub frames_discarded: u64,
    /// Pictures decoded.
    pub pictures_decoded: u64,
    /// Decoded pictures the renderer did not pull in time (dropped, oldest first).
    pub pictures_dropped: u64,
    /// Frames the decoder failed on.
    pub decode_errors: u64,
    /// Keyframes asked of the peer.
    pub keyframes_requested: u64,
}

struct SinkState {
    frames: VecDeque<EncodedFrame>,
    codec: Option<VideoCodec>,
    pictures: VecDeque<DecodedPicture>,
    /// The picture is broken (or not started): frames wait for a keyframe.
    need_keyframe: bool,
    last_request: Option<Instant>,
    closed: bool,
    stats: VideoSinkStats,
}

struct SinkShared {
    state: Mutex<SinkState>,
    wake: Condvar,
    request_keyframe: Box<dyn Fn() + Send + Sync>,
}

impl SinkShared {
    /// Marks the picture broken and asks the peer for a keyframe, at most once per
    /// [`KEYFRAME_REQUEST_INTERVAL`].
    fn broken(&self, state: &mut SinkState) {
        state.need_keyframe = true;
        if state.last_request.is_none_or(|at| at.elapsed() >= KEYFRAME_REQUEST_INTERVAL) {
            state.last_request = Some(Instant::now());
            state.stats.keyframes_requested += 1;
            (self.request_keyframe)();
        }
    }
}

/// The renderer's way out of the call: pull the peer's decoded camera pictures, oldest first.
pub struct VideoSink {
    shared: Arc<SinkShared>,
}

impl std::fmt::Debug for VideoSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoSink").field("stats", &self.stats()).finish()
    }
}

impl VideoSink {
    /// A sink decoding with `codecs`; `request_keyframe` asks the peer for a keyframe.
    pub fn start(
        codecs: Arc<dyn VideoCodecs>,
        request_keyframe: impl Fn() + Send + Sync + 'static,
    ) -> VideoSink {
        let shared = Arc::new(SinkShared {
            state: Mutex::new(SinkState {
                frames: VecDeque::new(),
                codec: None,
                pictures: VecDeque::with_capacity(SINK_QUEUE_PICTURES),
                need_keyframe: true,
                last_request: None,
                closed: false,
                stats: VideoSinkStats::default(),
            }),
            wake: Condvar::new(),
            request_keyframe: Box::new(request_keyframe),
        });
        let task = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("televisit-video-decoder".into())
            .spawn(move || decode_loop(&task, codecs))
            .expect("the decoder thread starts");
        VideoSink { shared }
    }

    /// The peer's camera arrives in this codec.
    pub fn set_codec(&self, codec: VideoCodec) {
        let mut state = lock(&self.shared.state);
        if state.codec != Some(codec) {
            state.codec = Some(codec);
            state.need_keyframe = true;
        }
    }

    /// A frame of the peer's camera, as it arrived.
    pub fn push(&self, frame: EncodedFrame) {
        let mut state = lock(&self.shared.state);
        if state.closed {
            return;
        }
        state.stats.frames_received += 1;
        if state.frames.len() >= SINK_FRAME_QUEUE {
            state.stats.frames_discarded += state.frames.len() as u64;
            state.frames.clear();
            self.shared.broken(&mut state);
        }
        if state.need_keyframe && !frame.keyframe {
            state.stats.frames_discarded += 1;
            self.shared.broken(&mut state);
            return;
        }
        state.need_keyframe = false;
        state.frames.push_back(frame);
        self.shared.wake.notify_one();
    }

    /// The oldest decoded picture not pulled yet, if any. Never blocks on the decoder.
    pub fn pull(&self) -> Result<Option<DecodedPicture>, VideoError> {
        let mut state = lock(&self.shared.state);
        if state.closed {
            return Err(VideoError::Closed);
        }
        Ok(state.pictures.pop_front())
    }

    /// What the sink did so far.
    pub fn stats(&self) -> VideoSinkStats {
        lock(&self.shared.state).stats
    }

    /// Stops the decoder; later pulls fail with [`VideoError::Closed`].
    pub fn close(&self) {
        let mut state = lock(&self.shared.state);
        state.closed = true;
        state.frames.clear();
        state.pictures.clear();
        self.shared.wake.notify_one();
    }
}

fn decode_loop(shared: &SinkShared, codecs: Arc<dyn VideoCodecs>) {
    let mut decoder: Option<(VideoCodec, Box<dyn VideoDecoder>)> = None;
    loop {
        let (frame, codec) = {
            let mut state = lock(&shared.state);
            while state.frames.is_empty() && !state.closed {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.closed {
                return;
            }
            (state.frames.pop_front().expect("a frame"), state.codec)
        };
        // Until the codec event, the stream is taken as the codec the data looks like (VP8 by
        // default): the event comes before the first frame, this is only a fallback.
        let codec = codec.unwrap_or(VideoCodec::Vp8);
        if decoder.as_ref().is_none_or(|(current, _)| *current != codec) {
            decoder = codecs.decoder(codec).map(|d| (codec, d)).ok();
        }
        let decoded = match decoder.as_mut() {
            Some((_, decoder)) => decoder.decode(&frame.data),
            None => Err(CodecError::Init { codec: "video decoder", reason: format!("none for {codec:?}") }),
        };
        let mut state = lock(&shared.state);
        match decoded {
            Ok(Some(picture)) => {
                state.stats.pictures_decoded += 1;
                if state.pictures.len() == SINK_QUEUE_PICTURES {
                    state.pictures.pop_front();
                    state.stats.pictures_dropped += 1;
                }
                let timing = frame.timing;
                state.pictures.push_back(DecodedPicture {
                    picture,
                    rtp_timestamp: timing.rtp_timestamp,
                    capture_time_us: timing.capture_time_us,
                });
            }
            Ok(None) => {}
            Err(error) => {
                state.stats.decode_errors += 1;
                if state.stats.decode_errors <= 3 {
                    tracing::warn!(%error, "a frame of the peer's camera was not decoded");
                }
                // The frames up to the next keyframe depend on it: drop them, and ask for a
                // keyframe if none is queued.
                while state.frames.front().is_some_and(|f| !f.keyframe) {
                    state.frames.pop_front();
                    state.stats.frames_discarded += 1;
                }
                if state.frames.is_empty() {
                    shared.broken(&mut state);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::ladder::LADDER;
    use crate::video::picture::{CameraPlanes, Rotation};

    /// A stand-in codec that shows what the engine asked of it: a "frame" is the picture's size,
    /// its first luma byte and whether it is a keyframe; decoding gives that picture back. Frames
    /// whose first byte is 0xff are corrupt.
    struct Recorder;

    struct RecordingEncoder {
        target: Option<EncoderTarget>,
        keyframe: bool,
    }

    impl VideoEncoder for RecordingEncoder {
        fn set_target(&mut self, target: EncoderTarget) -> Result<(), CodecError> {
            self.keyframe |= self
                .target
                .is_none_or(|t| (t.rung.width, t.rung.height) != (target.rung.width, target.rung.height));
            self.target = Some(target);
            Ok(())
        }
        fn request_keyframe(&mut self) {
            self.keyframe = true;
        }
        fn encode(&mut self, picture: &I420Frame) -> Result<Option<EncodedFrame>, CodecError> {
            let target = self.target.expect("a target before the first picture");
            let scaled = picture.scaled(target.rung.width, target.rung.height);
            let keyframe = std::mem::take(&mut self.keyframe);
            let mut data = vec![scaled.y[0], u8::from(keyframe)];
            data.extend(scaled.width.to_le_bytes());
            data.extend(scaled.height.to_le_bytes());
            Ok(Some(EncodedFrame {
                kind: FrameKind::Screen, // the engine must say it is camera video
                data,
                duration: Duration::from_millis(33),
                keyframe,
                timing: Default::default(),
            }))
        }
    }

    struct RecordingDecoder;

    impl VideoDecoder for RecordingDecoder {
        fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, CodecError> {
            if data[0] == 0xff {
                return Err(CodecError::Decode("corrupt".into()));
            }
            let width = u32::from_le_bytes(data[2..6].try_into().unwrap());
            let height = u32::from_le_bytes(data[6..10].try_into().unwrap());
            Ok(Some(I420Frame::filled(width, height, (data[0], 128, 128))))
        }
    }

    impl VideoCodecs for Recorder {
        fn encoder(&self, codec: VideoCodec) -> Result<Box<dyn VideoEncoder>, CodecError> {
            match codec {
                VideoCodec::Vp8 => Ok(Box::new(RecordingEncoder { target: None, keyframe: false })),
                VideoCodec::H264 => Err(super::super::codecs::not_available(codec, "H.264 encoder")),
            }
        }
        fn decoder(&self, _: VideoCodec) -> Result<Box<dyn VideoDecoder>, CodecError> {
            Ok(Box::new(RecordingDecoder))
        }
    }

    fn rung(name: &str) -> Rung {
        *LADDER.iter().find(|r| r.name == name).unwrap()
    }

    fn camera(width: u32, height: u32, luma: u8, at_ms: i64) -> CameraPicture {
        let picture = I420Frame::filled(width, height, (luma, 128, 128));
        CameraPicture {
            width,
            height,
            planes: CameraPlanes::I420 { y: picture.y, u: picture.u, v: picture.v },
            rotation: Rotation::None,
            capture_time_us: at_ms * 1000,
        }
    }

    fn source() -> (VideoSource, std::sync::mpsc::Receiver<EncodedFrame>) {
        let (sent, frames) = std::sync::mpsc::channel();
        let source = VideoSource::start(Arc::new(Recorder), EncoderTarget::at_rung(rung("360p")), move |f| {
            sent.send(f).is_ok()
        });
        (source, frames)
    }

    fn next(frames: &std::sync::mpsc::Receiver<EncodedFrame>) -> (u8, bool, u32, u32) {
        let frame = frames.recv_timeout(Duration::from_secs(5)).expect("a frame");
        assert_eq!(frame.kind, FrameKind::Video);
        let d = &frame.data;
        (
            d[0],
            d[1] == 1,
            u32::from_le_bytes(d[2..6].try_into().unwrap()),
            u32::from_le_bytes(d[6..10].try_into().unwrap()),
        )
    }

    /// Pushes one picture and waits until the encoder took it.
    fn push(source: &VideoSource, picture: CameraPicture) {
        let before = source.stats();
        source.push(picture).unwrap();
        let taken = |s: VideoSourceStats| s.frames_sent + s.pictures_dropped + s.encoder_errors;
        let deadline = Instant::now() + Duration::from_secs(5);
        while taken(source.stats()) == taken(before) {
            assert!(Instant::now() < deadline, "the encoder took no picture: {:?}", source.stats());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_source_encodes_at_the_rung_fitted_to_the_camera_and_follows_the_ladder_and_keyframe_requests() {
        let (source, frames) = source();
        push(&source, camera(1280, 720, 10, 0));
        assert_eq!(source.stats().pictures_dropped, 1, "nothing is encoded before a codec is negotiated");
        source.set_codec(VideoCodec::Vp8);
        push(&source, camera(1280, 720, 20, 100));
        assert_eq!(next(&frames), (20, true, 640, 360), "the start rung, a keyframe first");
        push(&source, camera(1280, 720, 30, 200));
        assert_eq!(next(&frames), (30, false, 640, 360));
        source.request_keyframe();
        push(&source, camera(1280, 720, 40, 300));
        assert_eq!(next(&frames), (40, true, 640, 360), "a keyframe on request");
        source.set_target(EncoderTarget::at_rung(rung("720p")));
        push(&source, camera(720, 1280, 50, 400));
        assert_eq!(next(&frames), (50, true, 720, 1280), "a portrait camera stays portrait, not enlarged");
        source.set_target(EncoderTarget::at_rung(rung("180p")));
        let mut turned = camera(1280, 720, 60, 500);
        turned.rotation = Rotation::Quarter;
        push(&source, turned);
        assert_eq!(next(&frames), (60, true, 180, 320), "turned upright, then fitted");
        assert_eq!((source.stats().encoded_width, source.stats().encoded_height), (180, 320));
        source.set_target(EncoderTarget::at_rung(rung("audio-only")));
        push(&source, camera(1280, 720, 70, 600));
        assert!(frames.try_recv().is_err(), "no video on the audio-only rung");
        let stats = source.stats();
        assert_eq!((stats.pictures_pushed, stats.frames_sent, stats.keyframes_sent), (7, 5, 4));
    }

    #[test]
    fn a_source_keeps_one_picture_per_frame_interval_of_the_rung() {
        let (source, frames) = source();
        source.set_codec(VideoCodec::Vp8);
        let mut target = EncoderTarget::at_rung(rung("360p"));
        target.fps = 15;
        source.set_target(target);
        // A 30 fps camera: every other picture is kept; a late one (capture jitter) still counts.
        for (n, at_ms) in [0, 33, 67, 100, 133, 160, 200].into_iter().enumerate() {
            push(&source, camera(640, 360, n as u8, at_ms));
        }
        let kept: Vec<u8> = frames.try_iter().map(|f| f.data[0]).collect();
        assert_eq!(kept, [0, 2, 4, 6]);
        assert_eq!(source.stats().pictures_dropped, 3);
    }

    #[test]
    fn a_source_refuses_bad_planes_and_pushes_after_close() {
        let (source, _frames) = source();
        let mut short = camera(64, 48, 0, 0);
        short.planes = CameraPlanes::Nv12 { y: vec![0; 64 * 48], uv: vec![0; 10] };
        assert!(matches!(source.push(short), Err(VideoError::Codec(CodecError::BadInput(_)))));
        source.close();
        assert_eq!(source.push(camera(64, 48, 0, 0)), Err(VideoError::Closed));
    }

    #[test]
    fn a_full_source_queue_drops_its_oldest_pictures() {
        // No codec: the encoder thread drops what it takes, but a push never waits for it.
        let (source, _frames) = source();
        for n in 0..50 {
            source.push(camera(640, 360, n, i64::from(n) * 33)).unwrap();
        }
        assert!(lock(&source.shared.state).queue.len() <= SOURCE_QUEUE_PICTURES);
        assert_eq!(source.stats().pictures_pushed, 50);
    }

    fn frame(luma: u8, keyframe: bool, rtp_timestamp: u32) -> EncodedFrame {
        let mut data = vec![luma, u8::from(keyframe)];
        data.extend(64u32.to_le_bytes());
        data.extend(48u32.to_le_bytes());
        EncodedFrame {
            kind: FrameKind::Video,
            data,
            duration: Duration::from_millis(33),
            keyframe,
            timing: crate::frame::FrameTiming {
                rtp_timestamp: Some(rtp_timestamp),
                capture_time_us: Some(7),
            },
        }
    }

    fn sink() -> (VideoSink, Arc<std::sync::atomic::AtomicU64>) {
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&requests);
        let sink = VideoSink::start(Arc::new(Recorder), move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        sink.set_codec(VideoCodec::Vp8);
        (sink, requests)
    }

    fn wait_for(sink: &VideoSink, done: impl Fn(&VideoSinkStats) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(&sink.stats()) {
            assert!(Instant::now() < deadline, "{:?}", sink.stats());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_sink_waits_for_a_keyframe_asks_for_one_and_gives_pictures_with_their_timing() {
        let (sink, requests) = sink();
        sink.push(frame(1, false, 90));
        sink.push(frame(2, false, 180));
        assert_eq!(requests.load(std::sync::atomic::Ordering::Relaxed), 1, "asked once, not per frame");
        sink.push(frame(3, true, 270));
        sink.push(frame(4, false, 360));
        wait_for(&sink, |s| s.pictures_decoded == 2);
        let first = sink.pull().unwrap().expect("a picture");
        assert_eq!(
            (first.picture.y[0], first.picture.width, first.rtp_timestamp, first.capture_time_us),
            (3, 64, Some(270), Some(7))
        );
        assert_eq!(sink.pull().unwrap().map(|p| p.picture.y[0]), Some(4));
        assert_eq!(sink.pull().unwrap(), None, "nothing more; never waits");
        assert_eq!(sink.stats().frames_discarded, 2);
    }

    #[test]
    fn a_broken_picture_drops_frames_until_a_keyframe_and_asks_for_one() {
        let (sink, requests) = sink();
        sink.push(frame(1, true, 0));
        wait_for(&sink, |s| s.pictures_decoded == 1);
        sink.push(frame(0xff, false, 1));
        wait_for(&sink, |s| s.decode_errors == 1);
        sink.push(frame(2, false, 2));
        assert_eq!(requests.load(std::sync::atomic::Ordering::Relaxed), 1);
        sink.push(frame(3, true, 3));
        wait_for(&sink, |s| s.pictures_decoded == 2);
        let shown: Vec<u8> = std::iter::from_fn(|| sink.pull().unwrap()).map(|p| p.picture.y[0]).collect();
        assert_eq!(shown, [1, 3], "the frame after the broken one is not shown");
    }

    #[test]
    fn a_renderer_that_does_not_pull_gets_the_newest_pictures() {
        let (sink, _) = sink();
        sink.push(frame(0, true, 0));
        for n in 1..10 {
            sink.push(frame(n, false, u32::from(n)));
        }
        wait_for(&sink, |s| s.pictures_decoded == 10);
        let shown: Vec<u8> = std::iter::from_fn(|| sink.pull().unwrap()).map(|p| p.picture.y[0]).collect();
        assert_eq!(shown, [7, 8, 9]);
        assert_eq!(sink.stats().pictures_dropped, 7);
        sink.close();
        assert_eq!(sink.pull(), Err(VideoError::Closed));
    }
}
