//! The pacing policy: in which order, and how fast, outgoing packets leave.
//!
//! [`Pacer`] holds packets of four classes ([`Class`]):
//!
//! 1. audio and RTCP leave at once: a voice packet or a report never waits behind video;
//! 2. retransmissions leave before new video (a repair is older, and a frame waits on it), at the
//!    pacing rate; their share is already bounded by the retransmission budget
//!    ([`super::retransmit`]);
//! 3. video leaves at [`PacerConfig::pacing_factor`] times the target rate, a little above it so
//!    the queue drains after a burst (a keyframe);
//! 4. video that has waited longer than [`PacerConfig::max_queue_time`] is dropped, whole frames,
//!    oldest first, together with the frames of its stream that depend on it (up to the next
//!    keyframe queued). A **keyframe is not dropped** (nor a frame that has started to leave): it
//!    is what ends the freeze — unless a newer keyframe of its stream is queued behind it, which
//!    ends the freeze as well and is fresher. A dropped frame is reported ([`Pacer::poll_dropped`]) so the
//!    sender can ask its encoder for a keyframe and forget the packets it will never send.
//!
//! Everything spends from one leaky bucket, so the video rate is the paced rate minus what audio,
//! RTCP and retransmissions took.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How a [`Pacer`] paces.
#[derive(Debug, Clone)]
pub struct PacerConfig {
    /// Packets leave at this multiple of the target rate.
    pub pacing_factor: f64,
    /// Video waiting longer than this is dropped (keyframes excepted).
    pub max_queue_time: Duration,
    /// The most the bucket accumulates, as time at the paced rate (at least one 1 500-byte packet).
    pub burst: Duration,
    /// Video packets queued at most (a safety net: the queue time bounds the queue first).
    pub max_video_packets: usize,
}

impl Default for PacerConfig {
    fn default() -> Self {
        PacerConfig {
            pacing_factor: 1.25,
            max_queue_time: Duration::from_millis(500),
            burst: Duration::from_millis(40),
            max_video_packets: 4_096,
        }
    }
}

/// Which video frame a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The stream (its SSRC).
    pub stream: u32,
    /// Identifies the frame within its stream (its RTP timestamp).
    pub id: u32,
    /// Whether the frame decodes on its own.
    pub keyframe: bool,
}

/// The class of a packet, which decides its place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Audio RTP: leaves at once.
    Audio,
    /// RTCP: leaves at once.
    Control,
    /// A retransmission: before new video.
    Retransmission,
    /// Video RTP of this frame.
    Video(Frame),
}

/// Video frames the pacer dropped together: the oldest that waited too long, and the frames of its
/// stream that depended on it.
#[derive(Debug)]
pub struct DroppedFrame<T> {
    /// The frame's stream.
    pub stream: u32,
    /// How many frames: the oldest and the ones that depended on it.
    pub frames: u64,
    /// The packets that will never be sent.
    pub packets: Vec<T>,
    /// No keyframe of the stream is queued after it: the encoder must make one.
    pub needs_keyframe: bool,
}

/// Running totals of a [`Pacer`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PacerCounts {
    /// Video frames dropped for waiting too long.
    pub dropped_frames: u64,
    /// Video packets in those frames.
    pub dropped_packets: u64,
}

struct Queued<T> {
    item: T,
    bits: f64,
    class: Class,
    queued_at: Instant,
}

/// The pacing policy; see the module documentation.
pub struct Pacer<T> {
    config: PacerConfig,
    target_bps: f64,
    budget_bits: f64,
    last_refill: Option<Instant>,
    immediate: VecDeque<T>,
    retransmissions: VecDeque<Queued<T>>,
    video: VecDeque<Queued<T>>,
    video_bits: f64,
    /// Per stream, the frame whose first packets have left: it is not dropped.
    leaving: HashMap<u32, u32>,
    dropped: VecDeque<DroppedFrame<T>>,
    counts: PacerCounts,
}

impl<T> Pacer<T> {
    /// A pacer for `target_bps`, starting with a full bucket.
    pub fn new(config: PacerConfig, target_bps: u64) -> Pacer<T> {
        let mut pacer = Pacer {
            config,
            target_bps: target_bps as f64,
            budget_bits: 0.0,
            last_refill: None,
            immediate: VecDeque::new(),
            retransmissions: VecDeque::new(),
            video: VecDeque::new(),
            video_bits: 0.0,
            leaving: HashMap::new(),
            dropped: VecDeque::new(),
            counts: PacerCounts::default(),
        };
        pacer.budget_bits = pacer.burst_bits();
        pacer
    }

    /// The totals so far.
    pub fn counts(&self) -> PacerCounts {
        self.counts
    }

    /// The congestion controller's target, bits per second.
    pub fn target_rate(&self) -> u64 {
        self.target_bps as u64
    }

    /// Follows the congestion controller's target, bits per second.
    pub fn set_target_rate(&mut self, target_bps: u64) {
        self.target_bps = target_bps as f64;
        self.budget_bits = self.budget_bits.min(self.burst_bits());
    }

    /// Bytes of video waiting.
    pub fn queued_video_bytes(&self) -> u64 {
        (self.video_bits / 8.0) as u64
    }

    /// Retransmissions waiting.
    pub fn queued_retransmissions(&self) -> usize {
        self.retransmissions.len()
    }

    /// How long the oldest queued video packet has waited at `now`.
    pub fn oldest_video_wait(&self, now: Instant) -> Duration {
        self.video.front().map_or(Duration::ZERO, |p| now.saturating_duration_since(p.queued_at))
    }

    /// Queues a packet of `bytes` of this class at `now`.
    pub fn push(&mut self, now: Instant, item: T, class: Class, bytes: usize) {
        self.refill(now);
        let bits = (bytes * 8) as f64;
        match class {
            Class::Audio | Class::Control => {
                self.budget_bits -= bits;
                self.immediate.push_back(item);
            }
            Class::Retransmission => {
                self.retransmissions.push_back(Queued { item, bits, class, queued_at: now });
            }
            Class::Video(_) => {
                self.video_bits += bits;
                self.video.push_back(Queued { item, bits, class, queued_at: now });
                self.enforce_limits(now);
            }
        }
    }

    /// The next packet that may leave at `now`, if any.
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        if let Some(item) = self.immediate.pop_front() {
            return Some(item);
        }
        self.refill(now);
        self.enforce_limits(now);
        let retransmission = !self.retransmissions.is_empty();
        let head = if retransmission { self.retransmissions.front() } else { self.video.front() };
        let bits = head?.bits;
        if !self.can_release(bits) {
            return None;
        }
        let queue = if retransmission { &mut self.retransmissions } else { &mut self.video };
        let packet = queue.pop_front().expect("front just checked");
        self.budget_bits -= bits;
        if let Class::Video(frame) = packet.class {
            self.video_bits -= bits;
            self.leaving.insert(frame.stream, frame.id);
        }
        Some(packet.item)
    }

    /// When a queued packet may next leave ([`Pacer::pop`]); `None` with nothing queued.
    pub fn next_release(&self) -> Option<Instant> {
        if !self.immediate.is_empty() {
            return self.last_refill;
        }
        let head = self.retransmissions.front().or(self.video.front())?;
        let last = self.last_refill?;
        let needed = head.bits.min(self.burst_bits()) - self.budget_bits;
        let rate = self.paced_bps();
        if needed <= 0.0 {
            return Some(last);
        }
        if rate <= 0.0 {
            return None; // nothing leaves at a zero rate: no deadline rather than a busy loop
        }
        Some(last + Duration::from_secs_f64(needed / rate))
    }

    /// A frame dropped since the last call, if any.
    pub fn poll_dropped(&mut self) -> Option<DroppedFrame<T>> {
        self.dropped.pop_front()
    }

    fn paced_bps(&self) -> f64 {
        self.target_bps * self.config.pacing_factor
    }

    fn burst_bits(&self) -> f64 {
        (self.paced_bps() * self.config.burst.as_secs_f64()).max(8.0 * 1_500.0)
    }

    /// Whether `bits` may leave. A packet larger than the whole burst leaves once the bucket is
    /// full (it could never be afforded otherwise); half a bit of slack absorbs the rounding of
    /// [`Pacer::next_release`]'s instant.
    fn can_release(&self, bits: f64) -> bool {
        self.budget_bits + 0.5 >= bits.min(self.burst_bits())
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last_refill {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.budget_bits = (self.budget_bits + elapsed * self.paced_bps()).min(self.burst_bits());
        }
        self.last_refill = Some(self.last_refill.map_or(now, |last| last.max(now)));
    }

    /// Drops the oldest droppable frames while the queue is over its time or size limit.
    fn enforce_limits(&mut self, now: Instant) {
        while self.oldest_video_wait(now) > self.config.max_queue_time
            || self.video.len() > self.config.max_video_packets
        {
            let Some(victim) = self.oldest_droppable() else { return }; // what is left must stay
            self.drop_from(victim);
        }
    }

    /// The oldest delta frame that has not started to leave; failing that, the oldest such
    /// keyframe with a newer keyframe of its stream queued behind it (which ends the freeze as
    /// well, and is fresher).
    fn oldest_droppable(&self) -> Option<Frame> {
        let mut frames: Vec<Frame> = Vec::new();
        for packet in &self.video {
            if let Class::Video(frame) = packet.class {
                if frames.last() != Some(&frame) {
                    frames.push(frame);
                }
            }
        }
        let waiting = |f: &Frame| self.leaving.get(&f.stream) != Some(&f.id);
        if let Some(delta) = frames.iter().find(|f| !f.keyframe && waiting(f)) {
            return Some(*delta);
        }
        let superseded = |i: usize, f: &Frame| {
            frames[i + 1..].iter().any(|later| later.stream == f.stream && later.keyframe && later.id != f.id)
        };
        frames.iter().enumerate().find(|&(i, f)| waiting(f) && superseded(i, f)).map(|(_, f)| *f)
    }

    /// Drops `victim` and the later frames of its stream up to its next queued keyframe.
    fn drop_from(&mut self, victim: Frame) {
        let mut dropped =
            DroppedFrame { stream: victim.stream, frames: 0, packets: Vec::new(), needs_keyframe: true };
        let mut frames = 0;
        let mut dropping = false;
        let mut last_id = None;
        let mut kept = VecDeque::with_capacity(self.video.len());
        for packet in self.video.drain(..) {
            let Class::Video(frame) = packet.class else { continue };
            if frame.stream == victim.stream {
                if frame == victim {
                    dropping = true;
                } else if frame.keyframe && dropping {
                    dropping = false;
                    dropped.needs_keyframe = false;
                }
            }
            if dropping && frame.stream == victim.stream {
                if last_id != Some(frame.id) {
                    frames += 1;
                    last_id = Some(frame.id);
                }
                self.video_bits -= packet.bits;
                dropped.packets.push(packet.item);
            } else {
                kept.push_back(packet);
            }
        }
        self.video = kept;
        dropped.frames = frames;
        self.counts.dropped_frames += frames;
        self.counts.dropped_packets += dropped.packets.len() as u64;
        self.dropped.push_back(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: u32 = 9;

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    fn video(id: u32, keyframe: bool) -> Class {
        Class::Video(Frame { stream: STREAM, id, keyframe })
    }

    /// Pops everything that may leave at `now`.
    fn drain(pacer: &mut Pacer<&'static str>, now: Instant) -> Vec<&'static str> {
        std::iter::from_fn(|| pacer.pop(now)).collect()
    }

    #[test]
    fn audio_and_rtcp_never_wait_behind_video_or_retransmissions() {
        let start = Instant::now();
        let mut pacer = Pacer::new(PacerConfig::default(), 1_000_000);
        for _ in 0..50 {
            pacer.push(start, "video", video(1, false), 1_200);
        }
        pacer.push(start, "rtx", Class::Retransmission, 1_200);
        let first = drain(&mut pacer, start);
        assert_eq!(first[0], "rtx", "a retransmission goes before new video");
        assert!(first.len() < 10, "then a burst of video: {}", first.len());
        pacer.push(ms(start, 1), "audio", Class::Audio, 100);
        pacer.push(ms(start, 1), "rtcp", Class::Control, 60);
        assert_eq!(drain(&mut pacer, ms(start, 1)), ["audio", "rtcp"]);
    }

    #[test]
    fn video_leaves_a_little_above_the_target_rate() {
        let start = Instant::now();
        let config = PacerConfig { max_queue_time: Duration::from_secs(2), ..Default::default() };
        let mut pacer = Pacer::new(config, 1_000_000);
        // 150 kB: 1.2 s at 1 Mbps, 0.96 s at the paced 1.25 Mbps.
        for n in 0..125 {
            pacer.push(start, "video", video(n / 25, n == 0), 1_200);
        }
        let mut sent = 0;
        let mut at = start;
        while sent < 125 {
            at = pacer.next_release().expect("queued");
            sent += drain(&mut pacer, at).len();
        }
        let took = at - start;
        assert!(took > Duration::from_millis(900) && took < Duration::from_millis(960), "{took:?}");
        assert_eq!(pacer.queued_video_bytes(), 0);
    }

    #[test]
    fn the_queue_time_is_bounded_by_dropping_the_oldest_delta_frames() {
        let start = Instant::now();
        let mut pacer = Pacer::new(PacerConfig::default(), 500_000);
        let mut worst = Duration::ZERO;
        let mut needs_keyframe = 0;
        // 30 frames a second of 5 kB (1.2 Mbps) into a 625 kbps pacer, keyframe first only.
        for frame in 0..90u32 {
            let now = ms(start, u64::from(frame) * 33);
            for _ in 0..4 {
                pacer.push(now, "video", video(frame, frame == 0), 1_250);
            }
            for step in 0..33 {
                let now = now + Duration::from_millis(step);
                drain(&mut pacer, now);
                worst = worst.max(pacer.oldest_video_wait(now));
            }
            while let Some(dropped) = pacer.poll_dropped() {
                assert_eq!(dropped.stream, STREAM);
                needs_keyframe += usize::from(dropped.needs_keyframe);
            }
        }
        // The limit, plus the rest of a frame that had started to leave (it is not cut short).
        assert!(worst <= Duration::from_millis(600), "{worst:?}");
        assert!(pacer.counts().dropped_frames > 20, "{:?}", pacer.counts());
        assert!(needs_keyframe > 0);
    }

    #[test]
    fn a_keyframe_is_admitted_when_the_queue_is_full_and_never_dropped() {
        let start = Instant::now();
        let mut pacer = Pacer::new(PacerConfig::default(), 200_000);
        for n in 0..100 {
            pacer.push(start, "delta", video(n / 10, false), 1_200);
        }
        // 120 kB queued: ~3.8 s at 250 kbps. The keyframe goes in anyway...
        pacer.push(ms(start, 100), "key", video(100, true), 1_200);
        pacer.push(ms(start, 100), "key", video(100, true), 1_200);
        // ...and once the deltas before it have waited too long, they are dropped, not it.
        let mut sent = vec![];
        for step in 0..=200 {
            sent.extend(drain(&mut pacer, ms(start, step * 5)));
        }
        assert_eq!(sent.iter().filter(|s| **s == "key").count(), 2, "{sent:?}");
        let dropped = pacer.poll_dropped().expect("the deltas");
        assert!(!dropped.needs_keyframe, "a keyframe follows them");
        assert!(sent.len() + dropped.packets.len() >= 100);
    }

    #[test]
    fn a_waiting_keyframe_is_superseded_by_a_newer_one_so_keyframes_alone_cannot_grow_the_queue() {
        let start = Instant::now();
        let mut pacer = Pacer::new(PacerConfig::default(), 1_000_000);
        let mut worst = Duration::ZERO;
        // A 60 kB keyframe every 33 ms: 14.4 Mbps into 1.25.
        for frame in 0..60u32 {
            let now = ms(start, u64::from(frame) * 33);
            for _ in 0..50 {
                pacer.push(now, "key", video(frame, true), 1_200);
            }
            for step in 0..33 {
                let now = now + Duration::from_millis(step);
                drain(&mut pacer, now);
                worst = worst.max(pacer.oldest_video_wait(now));
            }
        }
        // The keyframe leaving (~400 ms at the paced rate) may exceed the limit; nothing else does.
        assert!(worst <= Duration::from_millis(1_000), "{worst:?}");
        assert!(pacer.counts().dropped_frames > 40, "{:?}", pacer.counts());
        let dropped = pacer.poll_dropped().expect("superseded keyframes");
        assert!(!dropped.needs_keyframe, "a newer keyframe follows");
    }

    #[test]
    fn at_a_zero_rate_nothing_is_scheduled() {
        let start = Instant::now();
        let mut pacer = Pacer::new(PacerConfig::default(), 0);
        pacer.push(start, "video", video(1, true), 20_000);
        assert_eq!(drain(&mut pacer, start), ["video"], "a full bucket lets one packet out");
        pacer.push(start, "video", video(1, true), 1_200);
        assert!(drain(&mut pacer, start).is_empty());
        assert_eq!(pacer.next_release(), None);
    }

    #[test]
    fn a_frame_that_has_started_to_leave_is_not_dropped() {
        let start = Instant::now();
        let mut pacer = Pacer::new(PacerConfig::default(), 100_000);
        for _ in 0..10 {
            pacer.push(start, "first", video(1, false), 1_200);
        }
        assert_eq!(drain(&mut pacer, start), ["first"]);
        pacer.push(start, "second", video(2, false), 1_200);
        drain(&mut pacer, ms(start, 600));
        let dropped = pacer.poll_dropped().expect("the second frame");
        assert_eq!(dropped.packets, ["second"]);
        assert!(dropped.needs_keyframe);
    }
}
