//! Congestion control around the webrtc crate's GCC, with audio first.
//!
//! The crate's own pacer (`PacerInterceptor`) is one FIFO for every RTP packet: with video above
//! the estimate, audio waited seconds behind it (measured: up to 5.9 s). [`AudioFirstPacer`] takes
//! its slot in the interceptor chain ([`Slot::Pacer`](rtc::interceptor::Slot)) and keeps the same
//! leaky bucket (the crate's [`Pacer`]) but queues **only video**: audio packets (and RTCP) leave at
//! once. Audio still spends from the bucket, so the video is paced at the estimate minus what the
//! audio took. The queued video is published in [`PacingState`], so the session can drop whole
//! video frames before they join a queue that is already longer than [`MAX_VIDEO_QUEUE_DELAY`].
//!
//! [`PublishedEstimate`] wraps the bandwidth estimator (GCC) so its target is readable from the
//! session: the crate has no getter for it.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, BandwidthEstimator, EstimatorStats, Interceptor, Pacer, Packet, PacketReport, StreamInfo,
    TaggedPacket,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

/// The most queueing delay a video frame may join: a frame that would wait longer behind the
/// video already queued (at the current estimate) is dropped instead.
pub const MAX_VIDEO_QUEUE_DELAY: Duration = Duration::from_millis(300);

/// Packets the video queue holds at most (a safety net; frames are dropped well before this).
const VIDEO_QUEUE_LIMIT: usize = 4096;

/// What the pacer and the estimator publish, shared with the session.
#[derive(Debug, Default)]
pub struct PacingState {
    /// The estimator's current target, bits per second.
    target_bps: AtomicU64,
    /// What the receiver acknowledged per second lately (0: not known yet).
    acknowledged_bps: AtomicU64,
    /// RTP bytes of video waiting in the pacer.
    queued_video_bytes: AtomicU64,
    /// Video packets refused because the queue was full.
    refused_packets: AtomicU64,
}

impl PacingState {
    /// A state starting at `initial_bps`.
    pub fn new(initial_bps: u64) -> Arc<PacingState> {
        let state = PacingState::default();
        state.target_bps.store(initial_bps, Ordering::Relaxed);
        Arc::new(state)
    }

    /// The send-side bandwidth estimate, bits per second.
    pub fn target_bps(&self) -> u64 {
        self.target_bps.load(Ordering::Relaxed)
    }

    /// What the peer acknowledged receiving per second lately (transport-cc), if known.
    pub fn acknowledged_bps(&self) -> Option<u64> {
        Some(self.acknowledged_bps.load(Ordering::Relaxed)).filter(|bps| *bps > 0)
    }

    /// Publishes the congestion controller's target and acknowledged rate.
    pub fn publish_estimate(&self, target_bps: u64, acknowledged_bps: Option<u64>) {
        self.target_bps.store(target_bps, Ordering::Relaxed);
        self.acknowledged_bps.store(acknowledged_bps.unwrap_or(0), Ordering::Relaxed);
    }

    /// Bytes of video waiting in the pacer.
    pub fn queued_video_bytes(&self) -> u64 {
        self.queued_video_bytes.load(Ordering::Relaxed)
    }

    /// How long the queued video takes to leave at the current estimate.
    pub fn video_queue_delay(&self) -> Duration {
        let target = self.target_bps().max(1);
        Duration::from_secs_f64(self.queued_video_bytes() as f64 * 8.0 / target as f64)
    }

    /// Whether a video frame of `bytes` may join the queue: it would not wait longer than
    /// [`MAX_VIDEO_QUEUE_DELAY`]. An empty queue always takes a frame, however big.
    pub fn admits_video_frame(&self, bytes: usize) -> bool {
        let queued = self.queued_video_bytes();
        if queued == 0 {
            return true;
        }
        let target = self.target_bps().max(1) as f64;
        (queued + bytes as u64) as f64 * 8.0 / target <= MAX_VIDEO_QUEUE_DELAY.as_secs_f64()
    }
}

/// A bandwidth estimator whose target the session can read.
pub struct PublishedEstimate<E> {
    inner: E,
    state: Arc<PacingState>,
}

impl<E: BandwidthEstimator> PublishedEstimate<E> {
    /// Wraps `inner`, publishing its target to `state`.
    pub fn new(inner: E, state: Arc<PacingState>) -> PublishedEstimate<E> {
        state.target_bps.store(inner.target_bitrate() as u64, Ordering::Relaxed);
        PublishedEstimate { inner, state }
    }

    fn publish(&self) {
        self.state.target_bps.store(self.inner.target_bitrate() as u64, Ordering::Relaxed);
    }
}

impl<E: BandwidthEstimator> BandwidthEstimator for PublishedEstimate<E> {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.inner.on_reports(now, reports);
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.inner.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        self.publish();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

/// A pacer that never holds audio: video is queued and released at the estimate, audio and RTCP
/// go straight through (spending from the same budget).
pub struct AudioFirstPacer {
    bucket: Pacer,
    audio_ssrcs: HashSet<u32>,
    video: VecDeque<TaggedPacket>,
    /// Unpaced packets (audio, RTCP), ready for the next interceptor.
    immediate: VecDeque<TaggedPacket>,
    /// Video packets the budget released.
    released: VecDeque<TaggedPacket>,
    read_queue: VecDeque<TaggedPacket>,
    state: Arc<PacingState>,
}

impl AudioFirstPacer {
    /// A pacer starting at the state's current target.
    pub fn new(state: Arc<PacingState>) -> AudioFirstPacer {
        AudioFirstPacer {
            bucket: Pacer::new(state.target_bps() as f64),
            audio_ssrcs: HashSet::new(),
            video: VecDeque::new(),
            immediate: VecDeque::new(),
            released: VecDeque::new(),
            read_queue: VecDeque::new(),
            state,
        }
    }

    fn bits_of(packet: &TaggedPacket) -> f64 {
        match &packet.message.packet {
            Packet::Rtp(rtp) => (rtp.marshal_size() * 8) as f64,
            _ => 0.0,
        }
    }

    fn publish_queue(&self) {
        let bytes: f64 = self.video.iter().map(Self::bits_of).sum::<f64>() / 8.0;
        self.state.queued_video_bytes.store(bytes as u64, Ordering::Relaxed);
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for AudioFirstPacer {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        // The congestion controller attaches a new estimate to the feedback packet that produced
        // it, on the read leg (it is wire-ward of this slot).
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
            msg.message.get(&Attribute::TargetBitrateChanged { bits_per_second: 0.0 })
        {
            self.bucket.set_target_bitrate(*bits_per_second);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.bucket.refill(msg.now);
        // Only video RTP is held; audio, RTCP and anything else go at once.
        let audio = match &msg.message.packet {
            Packet::Rtp(rtp) => self.audio_ssrcs.contains(&rtp.header.ssrc),
            _ => true,
        };
        if audio {
            self.bucket.consume(Self::bits_of(&msg));
            self.immediate.push_back(msg);
            return Ok(());
        }
        if self.video.len() >= VIDEO_QUEUE_LIMIT {
            self.state.refused_packets.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.video.push_back(msg);
        self.publish_queue();
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.immediate.pop_front().or_else(|| self.released.pop_front())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.bucket.refill(now);
        let mut released = false;
        while let Some(head) = self.video.front() {
            let bits = Self::bits_of(head);
            if !self.bucket.can_release(bits) {
                break;
            }
            let mut packet = self.video.pop_front().expect("front just checked");
            self.bucket.consume(bits);
            // Departs now: the send history below must see the release instant.
            packet.now = now;
            self.released.push_back(packet);
            released = true;
        }
        if released {
            self.publish_queue();
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        let head = self.video.front()?;
        self.bucket.releasable_at(Self::bits_of(head))
    }
}

impl Interceptor for AudioFirstPacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("audio/") {
            self.audio_ssrcs.insert(info.ssrc);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.audio_ssrcs.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::{TransportContext, TransportMessage};

    const AUDIO: u32 = 1;
    const VIDEO: u32 = 2;

    fn rtp(ssrc: u32, sequence_number: u16, bytes: usize, now: Instant) -> TaggedPacket {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header { ssrc, sequence_number, ..Default::default() },
            payload: vec![0u8; bytes].into(),
        };
        TransportMessage {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        }
    }

    fn pacer(state: &Arc<PacingState>) -> AudioFirstPacer {
        let mut pacer = AudioFirstPacer::new(Arc::clone(state));
        let info = |ssrc, mime: &str| StreamInfo { ssrc, mime_type: mime.into(), ..Default::default() };
        pacer.bind_local_stream(&info(AUDIO, "audio/opus"));
        pacer.bind_local_stream(&info(VIDEO, "video/VP8"));
        pacer
    }

    fn drain(pacer: &mut AudioFirstPacer) -> Vec<u32> {
        std::iter::from_fn(|| pacer.poll_write())
            .map(|p| match p.message.packet {
                Packet::Rtp(rtp) => rtp.header.ssrc,
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn audio_leaves_at_once_while_video_above_the_rate_waits_its_turn() {
        let state = PacingState::new(1_000_000);
        let mut pacer = pacer(&state);
        let start = Instant::now();
        // 100 video packets of ~1.2 kB: ~1 Mbit, a second's worth at 1 Mbps.
        for n in 0..100 {
            pacer.handle_write(rtp(VIDEO, n, 1_200, start)).unwrap();
        }
        pacer.handle_timeout(start).unwrap();
        let first = drain(&mut pacer);
        assert!(first.len() < 20 && first.iter().all(|s| *s == VIDEO), "one burst of video: {}", first.len());
        assert!(state.video_queue_delay() > Duration::from_millis(800), "{:?}", state.video_queue_delay());

        // Audio written behind all that video goes out at once.
        pacer.handle_write(rtp(AUDIO, 0, 100, start + Duration::from_millis(20))).unwrap();
        assert_eq!(drain(&mut pacer), [AUDIO]);

        // The video follows at the rate: all of it within about a second.
        let mut released = first.len();
        for ms in (50..=1_200).step_by(50) {
            pacer.handle_timeout(start + Duration::from_millis(ms)).unwrap();
            released += drain(&mut pacer).len();
        }
        assert_eq!(released, 100);
        assert_eq!(state.queued_video_bytes(), 0);
    }

    #[test]
    fn the_rate_follows_the_estimate_announced_on_feedback() {
        let state = PacingState::new(1_000_000);
        let mut pacer = pacer(&state);
        let start = Instant::now();
        let mut feedback = rtp(VIDEO, 0, 0, start);
        feedback.message.packet = Packet::Rtcp(vec![]);
        feedback.message.add(Attribute::TargetBitrateChanged { bits_per_second: 250_000.0 });
        pacer.handle_read(feedback).unwrap();
        assert_eq!(pacer.bucket.target_bitrate(), 250_000.0);
        assert!(pacer.poll_read().is_some(), "the feedback goes on to the application side");
    }

    #[test]
    fn a_video_frame_is_admitted_only_while_the_queue_drains_within_the_bound() {
        let state = PacingState::new(1_000_000);
        assert!(state.admits_video_frame(1_000_000), "an empty queue takes any frame");
        // 30 000 bytes at 1 Mbps: 240 ms queued.
        state.queued_video_bytes.store(30_000, Ordering::Relaxed);
        assert!(state.admits_video_frame(3_000), "264 ms: admitted");
        assert!(!state.admits_video_frame(10_000), "320 ms: dropped");
        assert_eq!(state.video_queue_delay(), Duration::from_millis(240));
    }
}
