//! Send-side loss recovery: which NACKed packets are worth sending again.
//!
//! [`Retransmitter`] keeps a history of the packets sent on each stream (the payload is the
//! caller's: the adapter stores RTP packets) and answers each NACKed sequence number with the
//! packet to resend, or the reason not to:
//!
//! - retransmissions share a token bucket refilled at [`RetransmitConfig::budget_fraction`] of
//!   the target rate, so on a lossy link they cannot crowd out new video (which would be lost
//!   in turn and NACKed again);
//! - a packet is not resent again within one round trip of its last resend (the receiver's next
//!   NACK may have crossed our retransmission);
//! - a packet first sent more than [`RetransmitConfig::too_late`] ago is not resent: it would
//!   arrive after the receiver has given it up.
//!
//! The send time recorded is when the application handed the packet down (before the pacer),
//! which is what the receiver's playout deadline is measured from.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How a [`Retransmitter`] decides.
#[derive(Debug, Clone)]
pub struct RetransmitConfig {
    /// Share of the target rate retransmissions may use.
    pub budget_fraction: f64,
    /// The most budget that accumulates while nothing is resent, as time at the budget's rate.
    pub budget_burst: Duration,
    /// A packet is not resent again sooner than this after its last resend, nor sooner than one
    /// round trip.
    pub min_resend_interval: Duration,
    /// Packets first sent longer ago than this are not resent.
    pub too_late: Duration,
    /// Packets kept per stream at most.
    pub history_packets: usize,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        RetransmitConfig {
            budget_fraction: 0.3,
            budget_burst: Duration::from_millis(300),
            min_resend_interval: Duration::from_millis(10),
            too_late: Duration::from_secs(1),
            history_packets: 2_048,
        }
    }
}

/// Why a NACKed packet is not resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not in the history (never sent on this stream, or long gone).
    Unknown,
    /// First sent too long ago: it would arrive too late to be played.
    TooLate,
    /// Resent less than a round trip ago.
    TooSoon,
    /// The retransmission budget is spent.
    OverBudget,
}

/// Running totals of a [`Retransmitter`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitCounts {
    /// Sequence numbers asked for by NACKs.
    pub requested: u64,
    /// Packets resent.
    pub resent: u64,
    /// Bytes resent.
    pub resent_bytes: u64,
    /// Requests refused for lack of budget.
    pub over_budget: u64,
    /// Requests refused as too late or too soon, or for packets not in the history.
    pub refused_other: u64,
}

struct Sent<T> {
    payload: T,
    bytes: usize,
    sent_at: Instant,
    resent_at: Option<Instant>,
}

/// The send history and the retransmission policy; see the module documentation.
pub struct Retransmitter<T> {
    config: RetransmitConfig,
    /// Per stream (SSRC), by unwrapped sequence number.
    streams: HashMap<u32, BTreeMap<u64, Sent<T>>>,
    budget_bits: f64,
    rate_bps: f64,
    last_refill: Option<Instant>,
    counts: RetransmitCounts,
}

impl<T> Retransmitter<T> {
    /// A retransmitter whose budget follows `target_bps` (see [`Retransmitter::set_target_rate`]).
    pub fn new(config: RetransmitConfig, target_bps: u64) -> Retransmitter<T> {
        let mut retransmitter = Retransmitter {
            config,
            streams: HashMap::new(),
            budget_bits: 0.0,
            rate_bps: 0.0,
            last_refill: None,
            counts: RetransmitCounts::default(),
        };
        retransmitter.set_target_rate(target_bps);
        retransmitter.budget_bits = retransmitter.burst_bits();
        retransmitter
    }

    /// The totals so far.
    pub fn counts(&self) -> RetransmitCounts {
        self.counts
    }

    /// Follows the congestion controller's target, bits per second.
    pub fn set_target_rate(&mut self, target_bps: u64) {
        self.rate_bps = target_bps as f64 * self.config.budget_fraction;
        self.budget_bits = self.budget_bits.min(self.burst_bits());
    }

    /// Records a packet of `bytes` sent on `ssrc` with sequence number `seq`.
    pub fn on_sent(&mut self, now: Instant, ssrc: u32, seq: u16, bytes: usize, payload: T) {
        let limit = self.config.history_packets;
        let history = self.streams.entry(ssrc).or_default();
        let ext = match history.last_key_value() {
            Some((&last, _)) => unwrap(last, seq),
            None => u64::from(seq) + (1 << 16),
        };
        history.insert(ext, Sent { payload, bytes, sent_at: now, resent_at: None });
        while history.len() > limit {
            history.pop_first();
        }
    }

    /// Forgets a packet that will never be sent (the pacer dropped it): a NACK for it is refused.
    pub fn forget(&mut self, ssrc: u32, seq: u16) {
        if let Some(history) = self.streams.get_mut(&ssrc) {
            if let Some((&last, _)) = history.last_key_value() {
                history.remove(&unwrap(last, seq));
            }
        }
    }

    /// Forgets a stream's history.
    pub fn remove_stream(&mut self, ssrc: u32) {
        self.streams.remove(&ssrc);
    }

    /// Answers a NACK for `seq` on `ssrc` at `now`, with the current round-trip time: the packet to
    /// resend (its resend recorded and its bytes spent from the budget), or why not.
    pub fn on_nack(&mut self, now: Instant, ssrc: u32, seq: u16, rtt: Duration) -> Result<&T, Refusal> {
        self.counts.requested += 1;
        self.refill(now);
        let decision = self.decide(now, ssrc, seq, rtt);
        let sent = match decision {
            Ok(sent) => sent,
            Err(refusal) => {
                match refusal {
                    Refusal::OverBudget => self.counts.over_budget += 1,
                    _ => self.counts.refused_other += 1,
                }
                return Err(refusal);
            }
        };
        let history = self.streams.get_mut(&ssrc).expect("decided on this stream");
        let packet = history.get_mut(&sent).expect("decided on this packet");
        packet.resent_at = Some(now);
        self.budget_bits -= (packet.bytes * 8) as f64;
        self.counts.resent += 1;
        self.counts.resent_bytes += packet.bytes as u64;
        Ok(&packet.payload)
    }

    /// The unwrapped sequence number of the packet to resend, or why not.
    fn decide(&self, now: Instant, ssrc: u32, seq: u16, rtt: Duration) -> Result<u64, Refusal> {
        let history = self.streams.get(&ssrc).ok_or(Refusal::Unknown)?;
        let (&last, _) = history.last_key_value().ok_or(Refusal::Unknown)?;
        let ext = unwrap(last, seq);
        let packet = history.get(&ext).ok_or(Refusal::Unknown)?;
        if now.saturating_duration_since(packet.sent_at) > self.config.too_late {
            return Err(Refusal::TooLate);
        }
        let interval = rtt.max(self.config.min_resend_interval);
        if packet.resent_at.is_some_and(|at| now.saturating_duration_since(at) < interval) {
            return Err(Refusal::TooSoon);
        }
        // Like the pacer's bucket, a packet is affordable while any budget is left, so one larger
        // than the whole burst is not refused forever.
        if self.budget_bits <= 0.0 {
            return Err(Refusal::OverBudget);
        }
        Ok(ext)
    }

    fn burst_bits(&self) -> f64 {
        self.rate_bps * self.config.budget_burst.as_secs_f64()
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last_refill {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.budget_bits = (self.budget_bits + elapsed * self.rate_bps).min(self.burst_bits());
        }
        self.last_refill = Some(now);
    }
}

/// `seq` unwrapped to the 64-bit sequence nearest to `reference`.
fn unwrap(reference: u64, seq: u16) -> u64 {
    let delta = i64::from(seq.wrapping_sub(reference as u16) as i16);
    reference.saturating_add_signed(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 7;
    const RTT: Duration = Duration::from_millis(50);

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    /// 1 Mbps target: 300 kbps of retransmissions, 90 kbit (~9 packets of 1 250 bytes) of burst.
    fn sent(start: Instant, packets: u16) -> Retransmitter<u16> {
        let mut r = Retransmitter::new(RetransmitConfig::default(), 1_000_000);
        for seq in 0..packets {
            r.on_sent(start, SSRC, seq, 1_250, seq);
        }
        r
    }

    #[test]
    fn a_nacked_packet_is_resent_once_per_round_trip() {
        let start = Instant::now();
        let mut r = sent(start, 10);
        assert_eq!(r.on_nack(ms(start, 20), SSRC, 3, RTT), Ok(&3));
        assert_eq!(r.on_nack(ms(start, 40), SSRC, 3, RTT), Err(Refusal::TooSoon));
        assert_eq!(r.on_nack(ms(start, 70), SSRC, 3, RTT), Ok(&3));
        assert_eq!(r.on_nack(ms(start, 70), SSRC + 1, 3, RTT), Err(Refusal::Unknown));
        assert_eq!(r.counts().resent_bytes, 2_500);
    }

    #[test]
    fn nothing_is_resent_once_the_budget_is_spent_until_it_refills() {
        let start = Instant::now();
        let mut r = sent(start, 100);
        let now = ms(start, 10);
        let resent = (0..100).filter(|&seq| r.on_nack(now, SSRC, seq, RTT).is_ok()).count();
        assert_eq!(resent, 9, "90 kbit of burst: nine packets of 10 kbit");
        assert_eq!(r.on_nack(now, SSRC, 50, RTT), Err(Refusal::OverBudget));
        assert_eq!(r.counts().over_budget, 92);
        // 100 ms at 300 kbps is 30 kbit: three more.
        let later = ms(start, 110);
        let resent = (50..100).filter(|&seq| r.on_nack(later, SSRC, seq, RTT).is_ok()).count();
        assert_eq!(resent, 3);
    }

    #[test]
    fn a_packet_too_old_to_arrive_in_time_is_not_resent() {
        let start = Instant::now();
        let mut r = sent(start, 10);
        assert_eq!(r.on_nack(ms(start, 1_001), SSRC, 5, RTT), Err(Refusal::TooLate));
    }

    #[test]
    fn a_forgotten_packet_is_not_resent_and_the_history_is_bounded() {
        let start = Instant::now();
        let mut r =
            Retransmitter::new(RetransmitConfig { history_packets: 4, ..Default::default() }, 1_000_000);
        for seq in 65_533..=65_535u16 {
            r.on_sent(start, SSRC, seq, 100, seq);
        }
        for seq in 0..3u16 {
            r.on_sent(start, SSRC, seq, 100, seq);
        }
        assert_eq!(r.on_nack(start, SSRC, 65_534, RTT), Err(Refusal::Unknown), "dropped from the history");
        assert_eq!(r.on_nack(start, SSRC, 65_535, RTT), Ok(&65_535), "across the wrap");
        r.forget(SSRC, 1);
        assert_eq!(r.on_nack(start, SSRC, 1, RTT), Err(Refusal::Unknown));
    }
}
