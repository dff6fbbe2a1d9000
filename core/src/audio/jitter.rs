//! The adaptive jitter buffer, sans-I/O: RTP packets with their arrival time in, on each pull an
//! instruction for the decoder out ([`Playout`]). Time is an argument (ms on any monotonic clock).
//!
//! **Timeline.** Packets are ordered by their (unwrapped) RTP timestamp; the buffer keeps the
//! playout position `next`, the timestamp of the next sample to play. When it is time to play
//! `next` and its packet is there, it is decoded. When it is missing but later packets are there,
//! it is lost: rebuilt from the following packet's in-band FEC when that packet starts right
//! after the gap and carries FEC (Opus FEC covers one 20 ms frame; a longer gap is concealed up to
//! its last 20 ms first), else concealed with Opus PLC. When nothing later has arrived (an underrun, or a
//! late packet), concealment fills in *without* moving `next`, so a late packet still plays;
//! after [`MAX_CONCEALMENT_MS`] of it the output is silence, and after [`REBUFFER_AFTER_MS`] the
//! buffer starts over (waits for its target delay again).
//!
//! **Delay.** Each packet's *relative delay* is its arrival time minus its timestamp (as ms).
//! Over the last [`DELAY_WINDOW`] packets, the spread between the smallest relative delay and the
//! 95th percentile is the jitter a packet must be waited for; the target delay is that spread plus
//! one pull (10 ms), between [`MIN_TARGET_MS`] and [`MAX_TARGET_MS`] (and at least
//! [`INITIAL_TARGET_MS`] for the first second). The current delay is how
//! much later than the fastest packet `next` plays. More than 20 ms over the target: the next
//! packet's first 10 ms are dropped (accelerate); more than 10 ms under it: 10 ms are concealed
//! before it (expand). A burst of jitter therefore raises the target at once and it falls back
//! as the window forgets the burst.
//!
//! **Memory** is bounded: at most [`MAX_PACKETS`] packets are held (the oldest go first) and
//! [`DELAY_WINDOW`] delays.

use std::collections::{BTreeMap, VecDeque};

use super::opus::{packet_has_fec, packet_samples};
use super::{FRAME_SAMPLES, SAMPLE_RATE};

/// Samples per ms at 48 kHz.
const SAMPLES_PER_MS: i64 = SAMPLE_RATE as i64 / 1000;
/// Packets held at most (2 s of 20 ms packets).
pub const MAX_PACKETS: usize = 100;
/// Relative delays remembered for the target (5 s of 20 ms packets).
pub const DELAY_WINDOW: usize = 250;
/// The least target delay, ms.
pub const MIN_TARGET_MS: f64 = 20.0;
/// The most target delay, ms.
pub const MAX_TARGET_MS: f64 = 400.0;
/// The least target until [`SETTLED_AFTER`] packets were measured, ms: a few packets say little
/// about the jitter, and starting too low means a stall at the first burst.
pub const INITIAL_TARGET_MS: f64 = 40.0;
/// Packets measured before the target may fall below [`INITIAL_TARGET_MS`] (1 s of 20 ms packets).
pub const SETTLED_AFTER: usize = 50;
/// Concealment in a row before the output turns to silence, ms (Opus PLC has faded out by then).
pub const MAX_CONCEALMENT_MS: i64 = 100;
/// Underrun in a row after which the buffer starts over, ms.
pub const REBUFFER_AFTER_MS: i64 = 500;
/// Above the target by more than this, the buffer accelerates, ms.
const ACCELERATE_ABOVE_MS: f64 = 20.0;
/// Below the target by more than this, the buffer expands, ms.
const EXPAND_BELOW_MS: f64 = 10.0;

/// One received RTP packet of the audio track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPacket {
    /// The stream it belongs to: a new SSRC (a new connection) starts the buffer over.
    pub ssrc: u32,
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp (48 kHz for Opus).
    pub timestamp: u32,
    /// The Opus packet.
    pub payload: Vec<u8>,
    /// When the sender sent it, µs since the Unix epoch on the sender's clock, once known (see
    /// [`crate::frame::FrameTiming`]).
    pub capture_time_us: Option<i64>,
}

/// What to put into the output next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet; drop the first `discard` samples of what it gives (accelerating).
    Decode {
        /// The Opus packet.
        payload: Vec<u8>,
        /// Samples to drop from the start of the decoded audio.
        discard: usize,
    },
    /// Rebuild `samples` lost just before `next` from `next`'s in-band FEC.
    Recover {
        /// The packet after the gap (it is decoded normally afterwards).
        next: Vec<u8>,
        /// The lost samples.
        samples: usize,
    },
    /// Conceal this many samples (Opus PLC).
    Conceal(usize),
    /// Play this many samples of silence (nothing to play, or concealment went on too long).
    Silence(usize),
}

/// What the buffer did, for stats and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub packets_received: u64,
    /// Packets that arrived after their playout time (dropped).
    pub packets_late: u64,
    /// Packets dropped as duplicates, unreadable, or because the buffer was full.
    pub packets_dropped: u64,
    /// Lost packets (gaps in the timeline once later packets had arrived).
    pub packets_lost: u64,
    /// Lost packets rebuilt from the next packet's FEC.
    pub packets_recovered: u64,
    /// 10 ms frames (or shorter pieces) of concealment, underruns and expansions included.
    pub concealed_frames: u64,
    /// 10 ms pieces dropped to bring the delay down.
    pub accelerations: u64,
    /// 10 ms pieces concealed to bring the delay up.
    pub expansions: u64,
    /// The target delay now, ms.
    pub target_delay_ms: u32,
}

#[derive(Debug)]
struct Buffered {
    sequence: i64,
    payload: Vec<u8>,
    samples: i64,
}

/// The adaptive jitter buffer of one audio stream.
#[derive(Debug)]
pub struct JitterBuffer {
    ssrc: Option<u32>,
    /// The last timestamp and sequence number seen, and their unwrapped values.
    last_timestamp: Option<(u32, i64)>,
    last_sequence: Option<(u16, i64)>,
    /// Packets by unwrapped timestamp.
    packets: BTreeMap<i64, Buffered>,
    /// The next sample to play (unwrapped timestamp); `None` until playout (re)starts.
    next: Option<i64>,
    /// The sequence number of the last packet played (decoded or rebuilt).
    played_sequence: Option<i64>,
    /// Relative delays (arrival ms − timestamp ms) of the last packets.
    delays: VecDeque<f64>,
    target_ms: f64,
    /// Concealment and underrun in a row, samples.
    concealed_run: i64,
    underrun_run: i64,
    stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        JitterBuffer::new()
    }
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new() -> JitterBuffer {
        JitterBuffer {
            ssrc: None,
            last_timestamp: None,
            last_sequence: None,
            packets: BTreeMap::new(),
            next: None,
            played_sequence: None,
            delays: VecDeque::with_capacity(DELAY_WINDOW),
            target_ms: INITIAL_TARGET_MS,
            concealed_run: 0,
            underrun_run: 0,
            stats: JitterStats { target_delay_ms: INITIAL_TARGET_MS as u32, ..Default::default() },
        }
    }

    /// What the buffer did so far.
    pub fn stats(&self) -> JitterStats {
        JitterStats { target_delay_ms: self.target_ms.round() as u32, ..self.stats }
    }

    /// Packets held now.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Takes a packet that arrived at `arrival_ms`.
    pub fn push(&mut self, packet: AudioPacket, arrival_ms: i64) {
        if self.ssrc != Some(packet.ssrc) {
            let stats = self.stats;
            *self = JitterBuffer { ssrc: Some(packet.ssrc), stats, ..JitterBuffer::new() };
        }
        let Some(samples) = packet_samples(&packet.payload) else {
            self.stats.packets_dropped += 1;
            return;
        };
        let timestamp =
            unwrap(&mut self.last_timestamp, packet.timestamp, i64::from(packet.timestamp), |v, raw| {
                i64::from(v.wrapping_sub(raw) as i32)
            });
        let sequence =
            unwrap(&mut self.last_sequence, packet.sequence, i64::from(packet.sequence), |v, raw| {
                i64::from(v.wrapping_sub(raw) as i16)
            });
        self.remember_delay(arrival_ms as f64 - timestamp as f64 / SAMPLES_PER_MS as f64);
        if self.next.is_some_and(|next| timestamp < next) {
            self.stats.packets_late += 1;
            return;
        }
        if self.packets.contains_key(&timestamp) {
            self.stats.packets_dropped += 1;
            return;
        }
        self.packets
            .insert(timestamp, Buffered { sequence, payload: packet.payload, samples: samples as i64 });
        self.stats.packets_received += 1;
        while self.packets.len() > MAX_PACKETS {
            self.packets.pop_first();
            self.stats.packets_dropped += 1;
        }
    }

    fn remember_delay(&mut self, delay: f64) {
        if self.delays.len() == DELAY_WINDOW {
            self.delays.pop_front();
        }
        self.delays.push_back(delay);
        let mut sorted: Vec<f64> = self.delays.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let p95 = sorted[(sorted.len() - 1) * 95 / 100];
        let spread = p95 - sorted[0];
        let measured = (spread + 10.0).clamp(MIN_TARGET_MS, MAX_TARGET_MS);
        self.target_ms =
            if self.delays.len() < SETTLED_AFTER { measured.max(INITIAL_TARGET_MS) } else { measured };
    }

    /// The smallest relative delay remembered (the fastest packet), ms.
    fn fastest(&self) -> Option<f64> {
        self.delays.iter().copied().min_by(f64::total_cmp)
    }

    /// How much later than the fastest packet a sample at `timestamp` plays, if it is the next
    /// thing played at `now_ms` after `pending` samples already decoded, ms.
    fn delay_of(&self, timestamp: i64, now_ms: i64, pending: usize) -> f64 {
        let plays_at = now_ms as f64 + pending as f64 / SAMPLES_PER_MS as f64;
        plays_at - timestamp as f64 / SAMPLES_PER_MS as f64 - self.fastest().unwrap_or(0.0)
    }

    /// The RTP timestamp of the next sample to play, once playing.
    pub fn next_timestamp(&self) -> Option<u32> {
        // The timeline starts at the first packet's own timestamp, so it wraps back to RTP's.
        self.next.map(|next| next as u32)
    }

    /// What to play next, at `now_ms`, with `pending` samples already decoded and not yet played.
    /// The caller asks again until it has a 10 ms frame.
    pub fn next(&mut self, now_ms: i64, pending: usize) -> Playout {
        let frame = FRAME_SAMPLES as i64;
        let Some(next) = self.next else {
            // Not playing: start once the first packet has waited for the target delay.
            return match self.packets.first_key_value() {
                Some((&first, _)) if self.delay_of(first, now_ms, pending) >= self.target_ms => {
                    self.next = Some(first);
                    self.next(now_ms, pending)
                }
                _ => Playout::Silence(FRAME_SAMPLES),
            };
        };
        let delay = self.delay_of(next, now_ms, pending);
        // Packets whose time passed while concealing are late now.
        while let Some(entry) = self.packets.first_entry() {
            let buffered = entry.get();
            if *entry.key() + buffered.samples <= next {
                entry.remove();
                self.stats.packets_late += 1;
            } else {
                break;
            }
        }
        let Some((&first, _)) = self.packets.first_key_value() else {
            return self.underrun();
        };
        self.underrun_run = 0;
        if first <= next {
            // Its packet is here (`first < next`: a packet partly played already, after an
            // expansion moved `next` into it; its rest is decoded).
            if delay < self.target_ms - EXPAND_BELOW_MS {
                self.stats.expansions += 1;
                return self.conceal(frame);
            }
            let packet = self.packets.pop_first().expect("first exists").1;
            let mut discard = (next - first) as usize;
            if delay > self.target_ms + ACCELERATE_ABOVE_MS && packet.samples - (discard as i64) > frame {
                discard += FRAME_SAMPLES;
                self.stats.accelerations += 1;
            }
            self.next = Some(first + packet.samples);
            self.played_sequence = Some(packet.sequence);
            self.concealed_run = 0;
            return Playout::Decode { payload: packet.payload, discard };
        }
        // `next`'s packet is missing and later ones are here: it is lost.
        let gap = first - next;
        if delay > self.target_ms + ACCELERATE_ABOVE_MS {
            // Too far behind: skip the lost audio instead of concealing it.
            self.next = Some(next + gap.min(frame));
            self.count_loss(first);
            return self.next(now_ms, pending);
        }
        let following = &self.packets[&first];
        if gap <= following.samples.min(2 * frame) {
            let has_fec = packet_has_fec(&following.payload);
            let next_payload = following.payload.clone();
            self.count_loss(first);
            if has_fec {
                self.stats.packets_recovered += 1;
                self.next = Some(first);
                self.concealed_run = 0;
                return Playout::Recover { next: next_payload, samples: gap as usize };
            }
            // No FEC in the packet after the gap (the sender expected no loss): conceal.
        }
        let samples = gap.min(frame);
        self.next = Some(next + samples);
        self.conceal(samples)
    }

    /// Counts the packets missing before the packet at `first` (by sequence number; a gap in the
    /// timeline without one is a sender's silence, not a loss) once.
    fn count_loss(&mut self, first: i64) {
        let sequence = self.packets[&first].sequence;
        if let Some(played) = self.played_sequence {
            self.stats.packets_lost += (sequence - played - 1).max(0) as u64;
        }
        self.played_sequence = Some(sequence - 1);
    }

    fn conceal(&mut self, samples: i64) -> Playout {
        self.concealed_run += samples;
        if self.concealed_run > MAX_CONCEALMENT_MS * SAMPLES_PER_MS {
            return Playout::Silence(samples as usize);
        }
        self.stats.concealed_frames += 1;
        Playout::Conceal(samples as usize)
    }

    /// Nothing to play: conceal (the packet may be late) without moving the timeline; after a
    /// long underrun, start over.
    fn underrun(&mut self) -> Playout {
        self.underrun_run += FRAME_SAMPLES as i64;
        if self.underrun_run > REBUFFER_AFTER_MS * SAMPLES_PER_MS {
            self.next = None;
            self.underrun_run = 0;
            self.concealed_run = 0;
            return Playout::Silence(FRAME_SAMPLES);
        }
        self.conceal(FRAME_SAMPLES as i64)
    }
}

/// Unwraps an RTP counter (timestamp or sequence number) against the newest value seen: `delta`
/// is the signed distance from that value.
fn unwrap<T: Copy>(last: &mut Option<(T, i64)>, value: T, start: i64, delta: impl Fn(T, T) -> i64) -> i64 {
    let unwrapped = match *last {
        Some((raw, extended)) => extended + delta(value, raw),
        None => start,
    };
    if last.is_none_or(|(_, extended)| unwrapped > extended) {
        *last = Some((value, unwrapped));
    }
    unwrapped
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: i64 = 960;

    /// A 20 ms Opus packet (SILK, 20 ms TOC) with in-band FEC (its SILK frame's LBRR flag set),
    /// numbered `n` in its third byte.
    fn packet(n: u32) -> AudioPacket {
        packet_with_fec(n, true)
    }

    /// [`packet`] with or without the FEC flag.
    fn packet_with_fec(n: u32, fec: bool) -> AudioPacket {
        AudioPacket {
            ssrc: 1,
            sequence: n as u16,
            timestamp: n.wrapping_mul(PACKET as u32),
            payload: vec![0x08, if fec { 0x40 } else { 0x00 }, n as u8],
            capture_time_us: None,
        }
    }

    /// Plays the buffer as a receiver would: asks until 10 ms are ready, then plays them.
    #[derive(Default)]
    struct Player {
        pending: usize,
        log: Vec<Playout>,
    }

    impl Player {
        fn pull(&mut self, buffer: &mut JitterBuffer, now_ms: i64) {
            while self.pending < FRAME_SAMPLES {
                let playout = buffer.next(now_ms, self.pending);
                self.pending += match &playout {
                    Playout::Decode { payload, discard } => packet_samples(payload).unwrap() - discard,
                    Playout::Recover { samples, .. } => *samples,
                    Playout::Conceal(n) | Playout::Silence(n) => *n,
                };
                self.log.push(playout);
            }
            self.pending -= FRAME_SAMPLES;
        }

        /// The numbers of the packets decoded, in order.
        fn decoded(&self) -> Vec<u8> {
            self.log
                .iter()
                .filter_map(|p| match p {
                    Playout::Decode { payload, .. } => Some(payload[2]),
                    _ => None,
                })
                .collect()
        }

        fn count(&self, wanted: impl Fn(&Playout) -> bool) -> usize {
            self.log.iter().filter(|p| wanted(p)).count()
        }
    }

    /// Sends packets `0..count` every 20 ms, each arriving at `send time + delay(n)` (unless
    /// `delay` says `None`: lost), and pulls every 10 ms until `end_ms`.
    fn run(
        buffer: &mut JitterBuffer,
        player: &mut Player,
        count: u32,
        end_ms: i64,
        delay: impl Fn(u32) -> Option<i64>,
    ) {
        run_packets(buffer, player, count, end_ms, delay, packet);
    }

    /// [`run`] with the packets `make` gives.
    fn run_packets(
        buffer: &mut JitterBuffer,
        player: &mut Player,
        count: u32,
        end_ms: i64,
        delay: impl Fn(u32) -> Option<i64>,
        make: impl Fn(u32) -> AudioPacket,
    ) {
        let mut arrivals: Vec<(i64, u32)> =
            (0..count).filter_map(|n| delay(n).map(|d| (i64::from(n) * 20 + 20 + d, n))).collect();
        arrivals.sort();
        let mut arrivals = arrivals.into_iter().peekable();
        for now in (0..end_ms).step_by(10) {
            while let Some((_, n)) = arrivals.next_if(|(at, _)| *at <= now) {
                buffer.push(make(n), now);
            }
            player.pull(buffer, now);
        }
    }

    /// A deterministic pseudo-random number in `0..range` for `n`.
    fn noise(n: u32, range: i64) -> i64 {
        let x = u64::from(n).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((x >> 33) % range as u64) as i64
    }

    #[test]
    fn it_plays_silence_until_the_target_delay_then_the_packets_in_order() {
        let (mut buffer, mut player) = (JitterBuffer::new(), Player::default());
        run(&mut buffer, &mut player, 20, 480, |_| Some(5));
        // The first packet arrives at 25 ms (seen at the 30 ms pull) and plays 40 ms later (the
        // initial target): seven pulls of silence before it.
        assert!(player.log[..7].iter().all(|p| *p == Playout::Silence(480)), "{:?}", &player.log[..8]);
        assert!(matches!(player.log[7], Playout::Decode { discard: 0, .. }));
        assert_eq!(player.decoded(), (0..20).collect::<Vec<u8>>());
        assert_eq!(buffer.stats().packets_lost, 0);
    }

    #[test]
    fn reordered_packets_play_in_timestamp_order() {
        let (mut buffer, mut player) = (JitterBuffer::new(), Player::default());
        // Every 5th packet is 30 ms late, arriving after the next one.
        run(&mut buffer, &mut player, 50, 1200, |n| Some(if n % 5 == 2 { 30 } else { 0 }));
        assert_eq!(player.decoded(), (0..50).collect::<Vec<u8>>());
        let stats = buffer.stats();
        assert_eq!((stats.packets_lost, stats.packets_late), (0, 0), "{stats:?}");
    }

    #[test]
    fn a_lost_packet_is_rebuilt_from_the_next_ones_fec_and_two_in_a_row_are_concealed_first() {
        let (mut buffer, mut player) = (JitterBuffer::new(), Player::default());
        run(&mut buffer, &mut player, 30, 700, |n| (n != 10 && n != 20 && n != 21).then_some(0));
        let recovered: Vec<&Playout> =
            player.log.iter().filter(|p| matches!(p, Playout::Recover { .. })).collect();
        assert_eq!(
            recovered,
            [
                &Playout::Recover { next: packet(11).payload, samples: 960 },
                &Playout::Recover { next: packet(22).payload, samples: 960 }
            ]
        );
        // Before the second recovery, packet 20's 20 ms are concealed.
        let at = player.log.iter().position(|p| *p == *recovered[1]).unwrap();
        assert_eq!(player.log[at - 2..at], [Playout::Conceal(480), Playout::Conceal(480)]);
        let stats = buffer.stats();
        assert_eq!((stats.packets_lost, stats.packets_recovered, stats.packets_late), (3, 2, 0), "{stats:?}");
        assert_eq!(player.decoded().len(), 27);
    }

    #[test]
    fn a_lost_packet_is_concealed_and_not_counted_recovered_when_the_next_one_has_no_fec() {
        let (mut buffer, mut player) = (JitterBuffer::new(), Player::default());
        // Packet 11 (after the lost 10) carries no FEC; packet 21 (after the lost 20) does.
        let make = |n| packet_with_fec(n, n != 11);
        run_packets(&mut buffer, &mut player, 30, 700, |n| (n != 10 && n != 20).then_some(0), make);
        let recovered: Vec<&Playout> =
            player.log.iter().filter(|p| matches!(p, Playout::Recover { .. })).collect();
        assert_eq!(recovered, [&Playout::Recover { next: make(21).payload, samples: 960 }]);
        let at =
            player.log.iter().position(|p| *p == Playout::Decode { payload: make(11).payload, discard: 0 });
        let at = at.expect("packet 11 is played");
        assert_eq!(player.log[at - 2..at], [Playout::Conceal(480), Playout::Conceal(480)], "10 is concealed");
        let stats = buffer.stats();
        assert_eq!((stats.packets_lost, stats.packets_recovered), (2, 1), "{stats:?}");
        assert_eq!(player.decoded().len(), 28);
    }

    #[test]
    fn a_late_packet_is_waited_for_with_concealment_and_then_played() {
        let (mut buffer, mut player) = (JitterBuffer::new(), Player::default());
        // Packet 10 is held up 100 ms, with everything after it: a stall, not a loss.
        run(&mut buffer, &mut player, 30, 900, |n| Some(if n >= 10 { 100 } else { 0 }));
        assert_eq!(player.decoded(), (0..30).collect::<Vec<u8>>());
        let stats = buffer.stats();
        assert_eq!((stats.packets_lost, stats.packets_late), (0, 0), "{stats:?}");
        assert!(stats.concealed_frames >= 5, "the stall is concealed: {stats:?}");
    }

    #[test]
    fn the_target_delay_follows_the_jitter_up_at_once_and_back_down_when_it_is_gone() {
        let (mut buffer, mut player) = (JitterBuffer::new(), Player::default());
        run(&mut buffer, &mut player, 100, 2100, |_| Some(10));
        assert_eq!(buffer.stats().target_delay_ms, MIN_TARGET_MS as u32, "no jitter");

        // Then ±30 ms of jitter (a uniform delay of 20 to 80 ms).
        let (mut jittery, mut player) = (JitterBuffer::new(), Player::default());
        run(&mut jittery, &mut player, 500, 10_400, |n| Some(20 + noise(n, 60)));
        let stats = jittery.stats();
        assert!((60..=75).contains(&stats.target_delay_ms), "{stats:?}");
        // Few packets come too late for their turn: 5 % at most, by the 95th percentile.
        assert!(stats.packets_late * 100 <= 5 * 500, "{stats:?}");
        assert_eq!(player.decoded().len() as u64 + stats.packets_late, 500, "{stats:?}");

        // The jitter stops: after the window forgets it the target is low again, and the delay
        // came down with it (packets were shortened).
        let (mut settling, mut player) = (JitterBuffer::new(), Player::default());
        run(&mut settling, &mut player, 800, 16_100, |n| Some(if n < 300 { 20 + noise(n, 60) } else { 20 }));
        let stats = settling.stats();
        assert_eq!(stats.target_delay_ms, MIN_TARGET_MS as u32, "{stats:?}");
        assert!(stats.accelerations >= 2, "{stats:?}");
        let now = 16_090;
        let delay = settling.delay_of(settling.next.unwrap(), now, player.pending);
        // At most the acceleration threshold, plus the 10 ms already decoded.
        assert!(delay <= MIN_TARGET_MS + ACCELERATE_ABOVE_MS + 10.0, "delay {delay} ms, {stats:?}");
    }

    #[test]
    fn after_an_outage_it_skips_ahead_instead_of_playing_the_gap_late() {
        let (mut buffer, mut player) = (JitterBuffer::new(), Player::default());
        // 2 s (100 packets) never arrive.
        run(&mut buffer, &mut player, 200, 4100, |n| (!(50..150).contains(&n)).then_some(0));
        let decoded = player.decoded();
        assert_eq!(decoded.len(), 100, "every packet that arrived plays");
        assert_eq!(*decoded.last().unwrap(), 199);
        // The last packet played about the target delay after it arrived, not 2 s later.
        let delay = buffer.delay_of(buffer.next.unwrap(), 4090, player.pending);
        assert!(delay < 100.0, "delay {delay} ms");
        assert!(player.count(|p| matches!(p, Playout::Silence(_))) > 100, "silence in the outage");
    }

    #[test]
    fn memory_stays_bounded_when_nobody_pulls() {
        let mut buffer = JitterBuffer::new();
        for n in 0..10_000 {
            buffer.push(packet(n), i64::from(n) * 20);
        }
        assert_eq!(buffer.len(), MAX_PACKETS);
        assert_eq!(buffer.delays.len(), DELAY_WINDOW);
        assert_eq!(buffer.stats().packets_dropped, 10_000 - MAX_PACKETS as u64);
    }

    #[test]
    fn duplicates_unreadable_packets_and_a_new_stream_are_handled() {
        let mut buffer = JitterBuffer::new();
        buffer.push(packet(0), 0);
        buffer.push(packet(0), 1);
        buffer.push(AudioPacket { payload: vec![], ..packet(1) }, 2);
        assert_eq!((buffer.len(), buffer.stats().packets_dropped), (1, 2));
        // A new SSRC (a new connection) starts over, far from the old timestamps.
        buffer.push(AudioPacket { ssrc: 2, ..packet(900_000) }, 3);
        assert_eq!(buffer.len(), 1);
        assert_eq!(buffer.next(43, 0), Playout::Decode { payload: packet(900_000).payload, discard: 0 });
    }

    #[test]
    fn timestamps_and_sequence_numbers_wrap() {
        let (mut buffer, mut player) = (JitterBuffer::new(), Player::default());
        let start = u32::MAX / PACKET as u32 - 5; // wraps after 5 packets
        let mut now = 0;
        for n in start..start + 12 {
            buffer.push(AudioPacket { sequence: (n as u16).wrapping_add(65_530), ..packet(n) }, now);
            player.pull(&mut buffer, now);
            player.pull(&mut buffer, now + 10);
            now += 20;
        }
        for _ in 0..6 {
            player.pull(&mut buffer, now);
            now += 10;
        }
        let expected: Vec<u8> = (start..start + 12).map(|n| n as u8).collect();
        assert_eq!(player.decoded(), expected);
        assert_eq!(buffer.stats().packets_lost, 0);
    }
}
