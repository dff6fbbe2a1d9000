//! A sans-I/O model of one direction of a network link: a bottleneck that serves packets at a
//! (possibly scheduled) rate from a drop-tail queue, random loss, then a propagation delay with
//! jitter that keeps packets in order.
//!
//! The caller owns time: it [`Link::push`]es packets as they arrive, [`Link::poll`]s for those
//! due and sleeps until [`Link::next_timeout`]. The same seed gives the same drops and jitter.
//!
//! How a packet crosses:
//! 1. Random loss: dropped with probability [`LinkConfig::loss`] (on the wire before the queue);
//!    a datagram offered through [`Link::push_datagram`] may also be lost on purpose
//!    ([`LinkConfig::lose_first_dtls_handshake`]), to test the DTLS handshake's retransmissions.
//! 2. Drop-tail queue: dropped if the time to drain what is already queued at the current rate
//!    exceeds [`LinkConfig::queue_limit`] (a rate of 0, an outage, drops every arrival).
//! 3. Serialization: packets leave the queue one after another at the rate in effect when each
//!    starts; during an outage the queue waits for the rate to come back.
//! 4. Propagation: [`LinkConfig::one_way_delay`] plus a uniform jitter in ±[`LinkConfig::jitter`],
//!    never earlier than the packet before it (a real link does not reorder).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The properties of one direction of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Bottleneck rate at the start, bits per second (0: an outage).
    pub rate_bps: u64,
    /// Propagation delay added to every packet.
    pub one_way_delay: Duration,
    /// Each packet's propagation delay varies uniformly by up to this much either way.
    pub jitter: Duration,
    /// Probability that a packet is lost at random, 0..1.
    pub loss: f64,
    /// Drop-tail limit of the bottleneck queue, as queueing time at the current rate.
    pub queue_limit: Duration,
    /// Rate changes: from `offset` after the schedule's start, the rate is `rate_bps`. In order.
    pub schedule: Vec<(Duration, u64)>,
    /// Seed of the loss and jitter draws.
    pub seed: u64,
    /// Loses the first datagram offered through [`Link::push_datagram`] that starts with a DTLS
    /// handshake message of this type (RFC 5246 §7.4: 2 ServerHello, 11 Certificate, ...), once:
    /// a flight that arrives in part. Random loss rarely hits the handful of handshake datagrams.
    pub lose_first_dtls_handshake: Option<u8>,
}

impl LinkConfig {
    /// A link at `rate_bps` with `one_way_delay`, a 300 ms queue, no jitter, loss or schedule.
    pub fn new(rate_bps: u64, one_way_delay: Duration) -> LinkConfig {
        LinkConfig {
            rate_bps,
            one_way_delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            queue_limit: Duration::from_millis(300),
            schedule: Vec::new(),
            seed: 1,
            lose_first_dtls_handshake: None,
        }
    }

    /// The rate in effect `elapsed` after the schedule's start.
    pub fn rate_at(&self, elapsed: Duration) -> u64 {
        self.schedule.iter().take_while(|(at, _)| *at <= elapsed).last().map_or(self.rate_bps, |(_, r)| *r)
    }

    /// The first schedule change strictly after `elapsed`.
    fn next_change_after(&self, elapsed: Duration) -> Option<Duration> {
        self.schedule.iter().map(|(at, _)| *at).find(|at| *at > elapsed)
    }
}

/// What happened to a pushed packet (so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Queued; it will come out of [`Link::poll`].
    Queued,
    /// Lost at random.
    Lost,
    /// Dropped by the full queue (or an outage).
    QueueFull,
}

/// What became of one packet, for the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Still in the queue.
    Queued,
    /// Lost at random.
    Lost,
    /// Dropped by the full queue.
    QueueFull,
    /// Left the bottleneck at `departed` (time since the schedule's start) after `queue_delay`
    /// in it (waiting plus its own serialization).
    Sent {
        /// When it left the bottleneck, since the schedule's start.
        departed: Duration,
        /// Time from arrival to the end of its serialization.
        queue_delay: Duration,
    },
}

/// One packet's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRecord {
    /// When it arrived, since the schedule's start (negative arrivals before a
    /// [`Link::restart_schedule`] are clamped to 0).
    pub arrived: Duration,
    /// Its size in bytes.
    pub len: usize,
    /// What became of it.
    pub fate: Fate,
}

/// A packet that crossed the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered<P> {
    /// The packet as pushed.
    pub packet: P,
    /// Its time in the bottleneck queue (waiting plus serialization).
    pub queue_delay: Duration,
}

struct InQueue<P> {
    packet: P,
    len: usize,
    arrived: Instant,
    record: usize,
}

struct InFlight<P> {
    packet: P,
    due: Instant,
    queue_delay: Duration,
}

/// One direction of an emulated link (see the module's documentation).
pub struct Link<P> {
    config: LinkConfig,
    origin: Instant,
    rng: XorShift,
    queue: VecDeque<InQueue<P>>,
    queued_bytes: usize,
    /// When the head of the queue finishes serializing, once it started.
    head_done: Option<Instant>,
    /// When the bottleneck became free last.
    free_at: Instant,
    flight: VecDeque<InFlight<P>>,
    records: Vec<PacketRecord>,
    /// Whether [`LinkConfig::lose_first_dtls_handshake`] has lost its datagram.
    lost_dtls_handshake: bool,
}

impl<P> Link<P> {
    /// A link whose schedule starts at `now`.
    pub fn new(config: LinkConfig, now: Instant) -> Link<P> {
        let rng = XorShift::new(config.seed);
        Link {
            config,
            origin: now,
            rng,
            queue: VecDeque::new(),
            queued_bytes: 0,
            head_done: None,
            free_at: now,
            flight: VecDeque::new(),
            records: Vec::new(),
            lost_dtls_handshake: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Starts the schedule (and the records' clock) again at `now`, e.g. when the call connects.
    pub fn restart_schedule(&mut self, now: Instant) {
        self.origin = now;
    }

    /// The rate in effect at `now`, bits per second.
    pub fn rate_at(&self, now: Instant) -> u64 {
        self.config.rate_at(now.saturating_duration_since(self.origin))
    }

    /// Offers a packet of `len` bytes arriving at `now`.
    pub fn push(&mut self, now: Instant, len: usize, packet: P) -> Verdict {
        self.offer(now, len, packet, false)
    }

    /// Offers a packet; `lost_on_purpose` loses it (recorded as [`Fate::Lost`]) without a draw.
    fn offer(&mut self, now: Instant, len: usize, packet: P, lost_on_purpose: bool) -> Verdict {
        self.advance(now);
        let arrived = now.saturating_duration_since(self.origin);
        let verdict = if lost_on_purpose || self.rng.next_f64() < self.config.loss {
            Verdict::Lost
        } else if self.backlog(now) > self.config.queue_limit {
            Verdict::QueueFull
        } else {
            Verdict::Queued
        };
        let fate = match verdict {
            Verdict::Queued => Fate::Queued,
            Verdict::Lost => Fate::Lost,
            Verdict::QueueFull => Fate::QueueFull,
        };
        self.records.push(PacketRecord { arrived, len, fate });
        if verdict == Verdict::Queued {
            self.queue.push_back(InQueue { packet, len, arrived: now, record: self.records.len() - 1 });
            self.queued_bytes += len;
            self.advance(now);
        }
        verdict
    }

    /// The next packet due at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Delivered<P>> {
        self.advance(now);
        if self.flight.front().is_some_and(|p| p.due <= now) {
            let p = self.flight.pop_front().expect("checked");
            return Some(Delivered { packet: p.packet, queue_delay: p.queue_delay });
        }
        None
    }

    /// When something next happens (a packet leaves the queue or is due), if anything is pending.
    pub fn next_timeout(&self) -> Option<Instant> {
        let due = self.flight.front().map(|p| p.due);
        let queue = match (self.head_done, self.queue.is_empty()) {
            (Some(done), _) => Some(done),
            (None, false) => self.next_start(),
            (None, true) => None,
        };
        [due, queue].into_iter().flatten().min()
    }

    /// Every packet pushed so far, in order.
    pub fn records(&self) -> &[PacketRecord] {
        &self.records
    }

    /// Packets and bytes waiting in the bottleneck queue now.
    pub fn queued(&self) -> (usize, usize) {
        (self.queue.len(), self.queued_bytes)
    }

    /// How long what is queued takes to drain at the rate in effect at `now` (an outage: forever).
    fn backlog(&self, now: Instant) -> Duration {
        if self.queue.is_empty() {
            // An idle link still cannot take a packet during an outage.
            return if self.rate_at(now) == 0 { Duration::MAX } else { Duration::ZERO };
        }
        let rate = self.rate_at(now);
        if rate == 0 {
            return Duration::MAX;
        }
        let in_service = self.head_done.map_or(Duration::ZERO, |done| done.saturating_duration_since(now));
        let waiting = self.queued_bytes - if self.head_done.is_some() { self.queue[0].len } else { 0 };
        in_service + bits_time(waiting, rate)
    }

    /// When the head of the queue can start serializing: when the bottleneck is free and the rate
    /// is not 0 (`None`: an outage that never ends).
    fn next_start(&self) -> Option<Instant> {
        let head = self.queue.front()?;
        let mut start = self.free_at.max(head.arrived);
        loop {
            let elapsed = start.saturating_duration_since(self.origin);
            if self.config.rate_at(elapsed) > 0 {
                return Some(start);
            }
            start = self.origin + self.config.next_change_after(elapsed)?;
        }
    }

    /// Moves packets through the bottleneck up to `now`.
    fn advance(&mut self, now: Instant) {
        loop {
            if self.head_done.is_none() {
                let Some(start) = self.next_start() else { return };
                if start > now {
                    return;
                }
                let rate = self.rate_at(start);
                self.head_done = Some(start + bits_time(self.queue[0].len, rate));
            }
            let done = self.head_done.expect("set above");
            if done > now {
                return;
            }
            let head = self.queue.pop_front().expect("a packet in service");
            self.queued_bytes -= head.len;
            self.head_done = None;
            self.free_at = done;
            let queue_delay = done.saturating_duration_since(head.arrived);
            self.records[head.record].fate =
                Fate::Sent { departed: done.saturating_duration_since(self.origin), queue_delay };
            let mut due = done + self.jittered_delay();
            if let Some(last) = self.flight.back() {
                due = due.max(last.due);
            }
            self.flight.push_back(InFlight { packet: head.packet, due, queue_delay });
        }
    }

    fn jittered_delay(&mut self) -> Duration {
        let jitter = self.config.jitter.as_secs_f64();
        let delay = self.config.one_way_delay.as_secs_f64() + jitter * (2.0 * self.rng.next_f64() - 1.0);
        Duration::from_secs_f64(delay.max(0.0))
    }
}

impl Link<Vec<u8>> {
    /// Offers a UDP datagram arriving at `now`: [`Link::push`], and
    /// [`LinkConfig::lose_first_dtls_handshake`] applies.
    pub fn push_datagram(&mut self, now: Instant, datagram: Vec<u8>) -> Verdict {
        let lose = !self.lost_dtls_handshake
            && self.config.lose_first_dtls_handshake.is_some()
            && dtls_handshake_type(&datagram) == self.config.lose_first_dtls_handshake;
        self.lost_dtls_handshake |= lose;
        self.offer(now, datagram.len(), datagram, lose)
    }
}

/// The type of the handshake message a datagram's first DTLS record starts with, if it is one:
/// a 13-byte record header (content type 22: handshake), then the message type.
fn dtls_handshake_type(datagram: &[u8]) -> Option<u8> {
    (datagram.first() == Some(&22)).then(|| datagram.get(13).copied()).flatten()
}

/// Time to send `bytes` at `rate_bps` (> 0).
fn bits_time(bytes: usize, rate_bps: u64) -> Duration {
    Duration::from_nanos((bytes as u64 * 8).saturating_mul(1_000_000_000) / rate_bps)
}

/// xorshift64*: small, fast, deterministic; good enough for loss and jitter draws.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Offers `len`-byte packets at `offered_bps` for `seconds`, polling every millisecond;
    /// returns the delivery times (since `t0`) and queue delays.
    fn run(
        link: &mut Link<u32>,
        t0: Instant,
        offered_bps: u64,
        len: usize,
        seconds: u64,
    ) -> Vec<(Duration, Duration)> {
        let gap = bits_time(len, offered_bps);
        let (mut next, mut n, mut out) = (t0, 0u32, Vec::new());
        let end = t0 + Duration::from_secs(seconds);
        let mut now = t0;
        while now < end + Duration::from_secs(2) {
            while next <= now && next < end {
                link.push(next, len, n);
                n += 1;
                next += gap;
            }
            while let Some(d) = link.poll(now) {
                out.push((now - t0, d.queue_delay));
            }
            now += MS;
        }
        out
    }

    #[test]
    fn a_saturated_link_delivers_its_rate() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::new(1_000_000, 50 * MS), t0);
        let out = run(&mut link, t0, 2_000_000, 1000, 10);
        let bits = out.len() as f64 * 8000.0;
        // 10 s at 1 Mbps plus what the 300 ms queue held when the offer stopped.
        assert!((10.0e6..10.4e6).contains(&bits), "{bits}");
        let first = out[0].0;
        assert_eq!(first, 58 * MS, "50 ms propagation + 8 ms serialization");
    }

    #[test]
    fn the_drop_tail_queue_caps_queueing_time() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::new(1_000_000, 50 * MS), t0);
        let out = run(&mut link, t0, 2_000_000, 1000, 5);
        let worst = out.iter().map(|(_, q)| *q).max().unwrap();
        assert!(worst <= 300 * MS + 8 * MS && worst >= 290 * MS, "{worst:?}");
        let dropped = link.records().iter().filter(|r| r.fate == Fate::QueueFull).count();
        let pushed = link.records().len();
        assert!((0.45..0.55).contains(&(dropped as f64 / pushed as f64)), "{dropped} of {pushed}");
    }

    #[test]
    fn an_underused_link_adds_only_delay_and_serialization() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::new(2_000_000, 30 * MS), t0);
        let out = run(&mut link, t0, 500_000, 500, 3);
        assert!(out.iter().all(|(_, q)| *q == 2 * MS), "500 bytes at 2 Mbps");
        assert_eq!(out.len(), link.records().len());
    }

    #[test]
    fn random_loss_drops_the_configured_share_and_the_seed_repeats_it() {
        let t0 = Instant::now();
        let config = LinkConfig { loss: 0.05, seed: 7, ..LinkConfig::new(10_000_000, 10 * MS) };
        let mut a = Link::new(config.clone(), t0);
        let mut b = Link::new(config, t0);
        for n in 0..20_000u32 {
            let at = t0 + MS * n;
            assert_eq!(a.push(at, 100, n), b.push(at, 100, n));
        }
        let lost = a.records().iter().filter(|r| r.fate == Fate::Lost).count();
        assert!((900..1100).contains(&lost), "{lost} of 20000");
    }

    #[test]
    fn jitter_varies_the_delay_but_keeps_the_order() {
        let t0 = Instant::now();
        let config = LinkConfig { jitter: 30 * MS, ..LinkConfig::new(10_000_000, 50 * MS) };
        let mut link = Link::new(config, t0);
        // 20 ms apart: a packet is held behind the one before only when their draws differ by more.
        for n in 0..1000u32 {
            link.push(t0 + 20 * MS * n, 100, n);
        }
        let (mut got, mut now, mut delays) = (Vec::new(), t0, Vec::new());
        while now < t0 + Duration::from_secs(21) {
            while let Some(d) = link.poll(now) {
                delays.push(now - (t0 + 20 * MS * d.packet));
                got.push(d.packet);
            }
            now += MS;
        }
        assert_eq!(got, (0..1000).collect::<Vec<_>>(), "in order, none lost");
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*min <= 25 * MS && *max >= 75 * MS && *max <= 81 * MS, "{min:?}..{max:?}");
    }

    #[test]
    fn the_first_dtls_handshake_datagram_of_a_type_is_lost_once() {
        let t0 = Instant::now();
        let config =
            LinkConfig { lose_first_dtls_handshake: Some(11), ..LinkConfig::new(10_000_000, 10 * MS) };
        let mut link = Link::new(config, t0);
        let record = |content: u8, message: u8| {
            let mut datagram = vec![content, 0xfe, 0xfd];
            datagram.resize(13, 0);
            datagram.push(message);
            datagram
        };
        let offered = [
            record(22, 2),   // ServerHello: kept
            record(23, 11),  // application data, whatever follows: kept
            record(22, 11),  // the first Certificate: lost
            vec![0x80, 111], // RTP: kept
            record(22, 11),  // the Certificate again (a retransmission): kept
        ];
        let verdicts: Vec<Verdict> =
            offered.into_iter().enumerate().map(|(n, d)| link.push_datagram(t0 + MS * n as u32, d)).collect();
        use Verdict::{Lost, Queued};
        assert_eq!(verdicts, [Queued, Queued, Lost, Queued, Queued]);
    }

    #[test]
    fn the_schedule_changes_the_rate() {
        let t0 = Instant::now();
        let config = LinkConfig {
            schedule: vec![(Duration::from_secs(2), 500_000), (Duration::from_secs(4), 2_000_000)],
            ..LinkConfig::new(1_000_000, 10 * MS)
        };
        let mut link = Link::new(config, t0);
        let out = run(&mut link, t0, 4_000_000, 1000, 6);
        let rate_in = |from: u64, to: u64| {
            let n = out
                .iter()
                .filter(|(at, _)| *at >= Duration::from_secs(from) && *at < Duration::from_secs(to))
                .count();
            n as f64 * 8000.0 / (to - from) as f64
        };
        for (from, to, want) in [(0, 2, 1.0e6), (2, 4, 0.5e6), (4, 6, 2.0e6)] {
            let got = rate_in(from, to);
            assert!((got - want).abs() < want * 0.05, "{from}..{to} s: {got}");
        }
    }

    #[test]
    fn an_outage_drops_arrivals_and_holds_the_queue_until_the_rate_returns() {
        let t0 = Instant::now();
        let config = LinkConfig {
            schedule: vec![(Duration::from_secs(1), 0), (Duration::from_secs(3), 1_000_000)],
            ..LinkConfig::new(1_000_000, 10 * MS)
        };
        let mut link = Link::new(config, t0);
        let out = run(&mut link, t0, 2_000_000, 1000, 5);
        let during = out.iter().filter(|(at, _)| *at > 1020 * MS && *at < 3000 * MS).count();
        assert_eq!(during, 0, "nothing crosses during the outage");
        let records = link.records();
        let in_outage =
            |r: &&PacketRecord| r.arrived >= Duration::from_secs(1) && r.arrived < Duration::from_secs(3);
        assert!(records.iter().filter(in_outage).all(|r| r.fate == Fate::QueueFull));
        // What was queued when it began leaves when it ends, having waited ~2 s.
        let worst = out.iter().map(|(_, q)| *q).max().unwrap();
        assert!(worst > Duration::from_secs(2), "{worst:?}");
        assert!(out.iter().any(|(at, _)| *at > Duration::from_secs(4)), "traffic resumes");
        assert_eq!(link.next_timeout(), None, "everything delivered");
    }
}
