//! Our pacer, and the state it shares with the session (the estimate, the queue).
//!
//! The crate's own pacer (`PacerInterceptor`) is one FIFO for every RTP packet: with video above
//! the estimate, audio waited seconds behind it (measured: up to 5.9 s), and on a lossy link the
//! retransmissions queued with the video until no new frame got in. [`AudioFirstPacer`] takes its
//! slot in the interceptor chain ([`Slot::Pacer`](rtc::interceptor::Slot)) and applies our pacing
//! policy ([`crate::network_control::pacer`]): audio and RTCP at once, retransmissions before new
//! video, video at 1.25 × the estimate, and video older than [`MAX_VIDEO_QUEUE_TIME`] dropped a
//! frame at a time, never a keyframe unless a newer one is queued.
//!
//! The queued video is published in [`PacingState`], so the session drops delta frames before
//! they join a queue already longer than [`MAX_VIDEO_QUEUE_DELAY`] (a keyframe is always let in);
//! frames the pacer dropped are reported there too, so the session asks for a keyframe.
//! The congestion controller ([`super::estimator`]) publishes its target and acknowledged rate
//! there too.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use crate::network_control::pacer as policy;

/// The most queueing delay a delta video frame may join: a delta frame that would wait longer
/// behind the video already queued (at the current estimate) is dropped instead. Keyframes are
/// always admitted.
pub const MAX_VIDEO_QUEUE_DELAY: Duration = Duration::from_millis(300);

/// Video that has waited this long in the pacer is dropped (whole delta frames, oldest first).
pub const MAX_VIDEO_QUEUE_TIME: Duration = Duration::from_millis(500);

/// Keyframes remembered by [`PacingState::mark_keyframe`] (the pacer looks them up on arrival).
const KEYFRAME_MARKS: usize = 16;

/// What the pacer and the estimator publish, shared with the session.
#[derive(Debug, Default)]
pub struct PacingState {
    /// The estimator's current target, bits per second.
    target_bps: AtomicU64,
    /// What the receiver acknowledged per second lately (0: not known yet).
    acknowledged_bps: AtomicU64,
    /// RTP bytes of video waiting in the pacer.
    queued_video_bytes: AtomicU64,
    /// Video packets the pacer dropped (in whole frames that waited too long).
    dropped_video_packets: AtomicU64,
    /// Video frames the pacer dropped.
    dropped_video_frames: AtomicU64,
    /// (SSRC, RTP timestamp) of the latest keyframes handed to the tracks.
    keyframes: Mutex<VecDeque<(u32, u32)>>,
    /// Streams (SSRC) whose decoder needs a keyframe because the pacer dropped a frame.
    keyframe_wanted: Mutex<HashSet<u32>>,
    /// (SSRC, sequence number) of packets the pacer dropped: never to be retransmitted.
    unsent: Mutex<Vec<(u32, u16)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Video frames the pacer dropped for waiting longer than [`MAX_VIDEO_QUEUE_TIME`].
    pub fn dropped_video_frames(&self) -> u64 {
        self.dropped_video_frames.load(Ordering::Relaxed)
    }

    /// Video packets in those frames.
    pub fn dropped_video_packets(&self) -> u64 {
        self.dropped_video_packets.load(Ordering::Relaxed)
    }

    /// Tells the pacer that the frame with this RTP timestamp on stream `ssrc` is a keyframe
    /// (call it before writing the frame's packets): the pacer drops a keyframe only for a newer one.
    pub fn mark_keyframe(&self, ssrc: u32, rtp_timestamp: u32) {
        let mut marks = lock(&self.keyframes);
        if marks.len() == KEYFRAME_MARKS {
            marks.pop_front();
        }
        marks.push_back((ssrc, rtp_timestamp));
    }

    /// Whether the frame was marked with [`PacingState::mark_keyframe`].
    pub fn is_keyframe(&self, ssrc: u32, rtp_timestamp: u32) -> bool {
        lock(&self.keyframes).contains(&(ssrc, rtp_timestamp))
    }

    /// Whether the pacer dropped a frame of stream `ssrc` with no keyframe behind it since the
    /// last call: the next frames cannot be decoded until a keyframe.
    pub fn take_keyframe_wanted(&self, ssrc: u32) -> bool {
        lock(&self.keyframe_wanted).remove(&ssrc)
    }

    /// The packets the pacer dropped since the last call, as (SSRC, sequence number).
    pub(crate) fn take_unsent_packets(&self) -> Vec<(u32, u16)> {
        std::mem::take(&mut *lock(&self.unsent))
    }

    fn on_frame_dropped(&self, dropped: &policy::DroppedFrame<TaggedPacket>) {
        self.dropped_video_frames.fetch_add(dropped.frames, Ordering::Relaxed);
        self.dropped_video_packets.fetch_add(dropped.packets.len() as u64, Ordering::Relaxed);
        if dropped.needs_keyframe {
            lock(&self.keyframe_wanted).insert(dropped.stream);
        }
        let mut unsent = lock(&self.unsent);
        for packet in &dropped.packets {
            if let Packet::Rtp(rtp) = &packet.message.packet {
                unsent.push((rtp.header.ssrc, rtp.header.sequence_number));
            }
        }
    }
}

/// The pacer in the interceptor chain: [`crate::network_control::pacer::Pacer`]'s policy over
/// the crate's packets. Audio and RTCP leave at once, retransmissions (tagged
/// [`Attribute::Retransmission`] by [`super::loss_recovery::RetransmissionResponder`]) before new
/// video, video at 1.25 × the estimate; video that waited too long is dropped a frame at a time,
/// never a keyframe unless a newer one is queued (the session marks keyframes with
/// [`PacingState::mark_keyframe`]).
pub struct AudioFirstPacer {
    policy: policy::Pacer<TaggedPacket>,
    audio_ssrcs: HashSet<u32>,
    /// Packets the policy released, ready for the next interceptor.
    released: VecDeque<TaggedPacket>,
    read_queue: VecDeque<TaggedPacket>,
    state: Arc<PacingState>,
}

impl AudioFirstPacer {
    /// A pacer starting at the state's current target.
    pub fn new(state: Arc<PacingState>) -> AudioFirstPacer {
        let config = policy::PacerConfig { max_queue_time: MAX_VIDEO_QUEUE_TIME, ..Default::default() };
        AudioFirstPacer {
            policy: policy::Pacer::new(config, state.target_bps()),
            audio_ssrcs: HashSet::new(),
            released: VecDeque::new(),
            read_queue: VecDeque::new(),
            state,
        }
    }

    fn class_of(&self, packet: &TaggedPacket) -> policy::Class {
        let Packet::Rtp(rtp) = &packet.message.packet else { return policy::Class::Control };
        let ssrc = rtp.header.ssrc;
        if self.audio_ssrcs.contains(&ssrc) {
            policy::Class::Audio
        } else if packet.message.has(&Attribute::Retransmission) {
            policy::Class::Retransmission
        } else {
            let id = rtp.header.timestamp;
            policy::Class::Video(policy::Frame {
                stream: ssrc,
                id,
                keyframe: self.state.is_keyframe(ssrc, id),
            })
        }
    }

    /// Moves what may leave at `now` to the released queue, and reports dropped frames.
    fn release(&mut self, now: Instant) {
        while let Some(mut packet) = self.policy.pop(now) {
            // Departs now: the send history below must see the release instant.
            packet.now = now;
            self.released.push_back(packet);
        }
        while let Some(dropped) = self.policy.poll_dropped() {
            self.state.on_frame_dropped(&dropped);
        }
        self.state.queued_video_bytes.store(self.policy.queued_video_bytes(), Ordering::Relaxed);
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
            self.policy.set_target_rate(*bits_per_second as u64);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let class = self.class_of(&msg);
        let bytes = match &msg.message.packet {
            Packet::Rtp(rtp) => rtp.marshal_size(),
            _ => 0,
        };
        let now = msg.now;
        self.policy.push(now, msg, class, bytes);
        self.release(now);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.released.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.release(now);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.policy.next_release()
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

        // Audio written behind all that video goes out at once, ahead of the video due by then.
        pacer.handle_write(rtp(AUDIO, 0, 100, start + Duration::from_millis(20))).unwrap();
        let next = drain(&mut pacer);
        assert_eq!(next[0], AUDIO, "{next:?}");

        // The video follows at the rate: all of it within about a second.
        let mut released = first.len() + next.len() - 1;
        for ms in (50..=1_200).step_by(50) {
            pacer.handle_timeout(start + Duration::from_millis(ms)).unwrap();
            released += drain(&mut pacer).len();
        }
        assert_eq!(released, 100);
        assert_eq!(state.queued_video_bytes(), 0);
    }

    /// A video packet of frame `timestamp`.
    fn frame_packet(sequence_number: u16, timestamp: u32, now: Instant) -> TaggedPacket {
        let mut packet = rtp(VIDEO, sequence_number, 1_200, now);
        if let Packet::Rtp(rtp) = &mut packet.message.packet {
            rtp.header.timestamp = timestamp;
        }
        packet
    }

    #[test]
    fn a_retransmission_leaves_before_the_video_queued_ahead_of_it() {
        let state = PacingState::new(1_000_000);
        let mut pacer = pacer(&state);
        let start = Instant::now();
        for n in 0..50 {
            pacer.handle_write(frame_packet(n, 1, start)).unwrap();
        }
        drain(&mut pacer);
        let mut retransmission = rtp(VIDEO + 1, 7, 1_200, start);
        retransmission.message.add(Attribute::Retransmission);
        pacer.handle_write(retransmission).unwrap();
        pacer.handle_timeout(start + Duration::from_millis(10)).unwrap();
        assert_eq!(drain(&mut pacer).first(), Some(&(VIDEO + 1)));
    }

    #[test]
    fn stale_delta_frames_are_dropped_and_reported_but_a_marked_keyframe_is_sent() {
        let state = PacingState::new(100_000);
        let mut pacer = pacer(&state);
        let start = Instant::now();
        // ~10 kbit a packet at 125 kbps: frame 1 is still leaving after 500 ms; frames 2 and 3
        // are deltas; frame 4 is a keyframe.
        for n in 0..30 {
            pacer.handle_write(frame_packet(n, 1 + u32::from(n / 10), start)).unwrap();
        }
        state.mark_keyframe(VIDEO, 4);
        pacer.handle_write(frame_packet(30, 4, start)).unwrap();
        let mut sent = drain(&mut pacer).len();
        for ms in (10..=2_000).step_by(10) {
            pacer.handle_timeout(start + Duration::from_millis(ms)).unwrap();
            sent += drain(&mut pacer).len();
        }
        assert_eq!(state.dropped_video_frames(), 2, "frames 2 and 3");
        assert_eq!(sent, 11, "frame 1 and the keyframe");
        let unsent = state.take_unsent_packets();
        assert_eq!(unsent.len(), 20);
        assert!(unsent.iter().all(|&(ssrc, seq)| ssrc == VIDEO && (10..30).contains(&seq)));
        assert!(!state.take_keyframe_wanted(VIDEO), "a keyframe was already queued behind them");
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
        assert_eq!(pacer.policy.target_rate(), 250_000);
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
