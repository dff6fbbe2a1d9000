//! The objects an app holds for its audio, separate from the call's event listener: an
//! [`AudioSource`] the microphone callback pushes 10 ms frames into, and an [`AudioSink`] the
//! playout callback pulls 10 ms frames from. Both are thread-safe and never block for long: the
//! source only queues (a bounded queue, oldest dropped first) and the encoding runs on the call's
//! runtime; the sink decodes one frame's worth under a lock the network side holds only to add a
//! packet.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::jitter::{AudioPacket, JitterStats};
use super::voice::{check_frame, VoiceReceiver, VoiceSender};
use super::AudioError;
use crate::frame::{EncodedFrame, FrameKind};

/// Frames the source queues at most (100 ms); older ones are dropped when the encoder falls behind.
pub const SOURCE_QUEUE_FRAMES: usize = 10;

/// Samples from 16-bit little-endian PCM bytes.
pub fn samples_from_bytes(bytes: &[u8]) -> Result<Vec<i16>, AudioError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(AudioError::OddByteCount(bytes.len() as u32));
    }
    Ok(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
}

/// 16-bit little-endian PCM bytes of samples.
pub fn bytes_from_samples(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

struct SourceShared {
    queue: Mutex<VecDeque<Vec<i16>>>,
    wake: tokio::sync::Notify,
    dropped: AtomicU64,
    expected_loss: AtomicU8,
    closed: AtomicBool,
}

/// The microphone's way into the call: push 10 ms frames of 48 kHz mono PCM as they are captured.
/// They are Opus-encoded (20 ms packets, in-band FEC following the measured loss) and sent on
/// the call's audio track while the microphone is on and the media connection is up.
#[derive(Clone)]
pub struct AudioSource {
    shared: Arc<SourceShared>,
}

impl std::fmt::Debug for AudioSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSource").field("frames_dropped", &self.frames_dropped()).finish()
    }
}

impl AudioSource {
    /// A source whose encoder runs on `runtime` and hands each packet to `send` (it stops when
    /// `send` returns `false` or the source is closed).
    pub fn start(
        runtime: &tokio::runtime::Handle,
        send: impl Fn(EncodedFrame) -> bool + Send + 'static,
    ) -> Result<AudioSource, AudioError> {
        let mut sender = VoiceSender::new()?;
        let shared = Arc::new(SourceShared {
            queue: Mutex::new(VecDeque::with_capacity(SOURCE_QUEUE_FRAMES)),
            wake: tokio::sync::Notify::new(),
            dropped: AtomicU64::new(0),
            expected_loss: AtomicU8::new(super::opus::INITIAL_EXPECTED_LOSS_PERCENT),
            closed: AtomicBool::new(false),
        });
        let task = Arc::clone(&shared);
        runtime.spawn(async move {
            while !task.closed.load(Ordering::Relaxed) {
                task.wake.notified().await;
                if let Err(error) = sender.set_expected_loss(task.expected_loss.load(Ordering::Relaxed)) {
                    tracing::warn!(%error, "the voice encoder cannot follow the loss");
                }
                loop {
                    // Not in the loop's condition: the lock would be held while encoding.
                    let next = task.queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(pcm) = next else { break };
                    match sender.push(&pcm) {
                        Ok(Some(data)) => {
                            let frame = EncodedFrame {
                                kind: FrameKind::Audio,
                                data,
                                duration: Duration::from_millis(20),
                                keyframe: false,
                                timing: Default::default(),
                            };
                            if !send(frame) {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(error) => tracing::warn!(%error, "audio encoding failed"),
                    }
                }
            }
        });
        Ok(AudioSource { shared })
    }

    /// Queues one 10 ms frame ([`FRAME_SAMPLES`](super::FRAME_SAMPLES) samples). Never blocks; when the encoder is more
    /// than [`SOURCE_QUEUE_FRAMES`] behind, the oldest frame is dropped.
    pub fn push(&self, pcm: &[i16]) -> Result<(), AudioError> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(AudioError::Closed);
        }
        check_frame(pcm)?;
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.len() == SOURCE_QUEUE_FRAMES {
                queue.pop_front();
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back(pcm.to_vec());
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// [`AudioSource::push`] for 16-bit little-endian PCM bytes (960 bytes a frame).
    pub fn push_bytes(&self, pcm: &[u8]) -> Result<(), AudioError> {
        self.push(&samples_from_bytes(pcm)?)
    }

    /// Frames dropped because the encoder fell behind.
    pub fn frames_dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Sizes the FEC for the measured packet loss, percent (the call does this from its stats).
    pub fn set_expected_loss(&self, percent: u8) {
        self.shared.expected_loss.store(percent, Ordering::Relaxed);
    }

    /// Stops the encoder; later pushes fail with [`AudioError::Closed`].
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }
}

/// The speaker's way out of the call: pull a 10 ms frame of 48 kHz mono PCM each time the
/// platform's playout wants one. There is always a frame: the peer's decoded voice, what Opus
/// rebuilt or concealed for a lost packet, or silence (before the peer's audio, while muted).
pub struct AudioSink {
    receiver: Mutex<VoiceReceiver>,
    origin: Instant,
    closed: AtomicBool,
}

impl std::fmt::Debug for AudioSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSink").field("stats", &self.stats()).finish()
    }
}

impl AudioSink {
    /// A sink with an empty jitter buffer.
    pub fn new() -> Result<AudioSink, AudioError> {
        Ok(AudioSink {
            receiver: Mutex::new(VoiceReceiver::new()?),
            origin: Instant::now(),
            closed: AtomicBool::new(false),
        })
    }

    fn ms(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.origin).as_millis() as i64
    }

    fn receiver(&self) -> std::sync::MutexGuard<'_, VoiceReceiver> {
        self.receiver.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A packet of the peer's audio track that arrived at `arrival`.
    pub fn push(&self, packet: AudioPacket, arrival: Instant) {
        let arrival_ms = self.ms(arrival);
        self.receiver().push(packet, arrival_ms);
    }

    /// The next 10 ms frame ([`FRAME_SAMPLES`](super::FRAME_SAMPLES) samples) to play now.
    pub fn pull(&self) -> Result<Vec<i16>, AudioError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(AudioError::Closed);
        }
        let now_ms = self.ms(Instant::now());
        Ok(self.receiver().pull(now_ms))
    }

    /// [`AudioSink::pull`] as 16-bit little-endian PCM bytes (960 bytes).
    pub fn pull_bytes(&self) -> Result<Vec<u8>, AudioError> {
        self.pull().map(|pcm| bytes_from_samples(&pcm))
    }

    /// What the jitter buffer did so far (losses, FEC, concealment, its target delay).
    pub fn stats(&self) -> JitterStats {
        self.receiver().stats()
    }

    /// When the peer sent the sound of the last frame pulled, µs since the Unix epoch on the
    /// peer's clock, which its video frames' `capture_time_us` share: show the picture sent then.
    /// `None` until playout starts and the peer's first sender report.
    pub fn playing_capture_time_us(&self) -> Option<i64> {
        self.receiver().playing_capture_time_us()
    }

    /// Later pulls fail with [`AudioError::Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::signal::tone;
    use crate::audio::FRAME_SAMPLES;

    #[test]
    fn pcm_bytes_are_16_bit_little_endian_and_odd_lengths_are_refused() {
        assert_eq!(samples_from_bytes(&[0x01, 0x00, 0xff, 0xff]), Ok(vec![1, -1]));
        assert_eq!(bytes_from_samples(&[1, -2]), vec![0x01, 0x00, 0xfe, 0xff]);
        assert_eq!(samples_from_bytes(&[0; 3]), Err(AudioError::OddByteCount(3)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_source_encodes_pushed_frames_into_20_ms_packets_and_refuses_after_close() {
        let (sent, mut packets) = tokio::sync::mpsc::unbounded_channel();
        let source =
            AudioSource::start(&tokio::runtime::Handle::current(), move |f| sent.send(f).is_ok()).unwrap();
        let pcm = tone(440.0, 0, 4 * FRAME_SAMPLES);
        for frame in pcm.chunks(FRAME_SAMPLES) {
            source.push_bytes(&bytes_from_samples(frame)).unwrap();
        }
        for _ in 0..2 {
            let packet = tokio::time::timeout(Duration::from_secs(5), packets.recv()).await.unwrap().unwrap();
            assert_eq!((packet.kind, packet.duration), (FrameKind::Audio, Duration::from_millis(20)));
        }
        assert_eq!(source.push(&[0; 10]), Err(AudioError::WrongFrameSize { expected: 480, got: 10 }));
        assert_eq!(source.push_bytes(&[0; 961]), Err(AudioError::OddByteCount(961)));
        source.close();
        assert_eq!(source.push(&pcm[..FRAME_SAMPLES]), Err(AudioError::Closed));
    }

    #[test]
    fn a_full_source_queue_drops_its_oldest_frames() {
        // A runtime that never runs the encoder: the queue fills.
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let source = AudioSource::start(runtime.handle(), |_| true).unwrap();
        for _ in 0..SOURCE_QUEUE_FRAMES + 3 {
            source.push(&[0; FRAME_SAMPLES]).unwrap();
        }
        assert_eq!(source.frames_dropped(), 3);
        assert_eq!(source.shared.queue.lock().unwrap().len(), SOURCE_QUEUE_FRAMES);
    }

    #[test]
    fn a_sink_gives_silence_before_any_packet_and_refuses_after_close() {
        let sink = AudioSink::new().unwrap();
        assert_eq!(sink.pull().unwrap(), vec![0; FRAME_SAMPLES]);
        assert_eq!(sink.pull_bytes().unwrap().len(), 960);
        sink.close();
        assert_eq!(sink.pull(), Err(AudioError::Closed));
    }
}
