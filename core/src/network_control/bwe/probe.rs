//! Probing: short bursts above the target that find a capacity rise at once, instead of seconds
//! of ramping.
//!
//! The controller *asks* for a probe ([`ProbeCluster`]); whatever sends the packets (a pacer that
//! can pad, or an encoder that can overshoot briefly) marks the packets it sent for it with the
//! cluster's id ([`super::PacketFeedback::probe_cluster`]). When their feedback is in, the rate
//! the receiver got them at is the probe's result: the path carries at least that much.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a cluster sends.
pub const PROBE_DURATION: Duration = Duration::from_millis(15);
/// Packets of a cluster that must arrive for its result to count.
pub const MIN_PROBE_PACKETS: usize = 5;
/// A cluster whose packets have not all been reported this long after it began is judged on
/// what did arrive (or forgotten).
const RESULT_WAIT: Duration = Duration::from_millis(1_000);
/// A probe that got at least this share of its rate through asks for the next, twice as high.
const FURTHER_PROBE_SHARE: f64 = 0.7;
/// Received below this share of the sent rate: the link was saturated and the received rate is
/// its capacity.
const SATURATED_SHARE: f64 = 0.9;
/// The result used when saturated, as a share of the received rate (leave the queue room).
const SATURATED_TARGET: f64 = 0.95;

/// A request to send `rate_bps` for `duration`, packets marked with `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeCluster {
    /// Marks the packets sent for this cluster.
    pub id: u32,
    /// The rate to send at, bits per second (media plus padding).
    pub rate_bps: u64,
    /// How long to send at it.
    pub duration: Duration,
    /// The fewest packets to send, however short that makes the spacing.
    pub min_packets: usize,
}

#[derive(Debug)]
struct Running {
    cluster: ProbeCluster,
    started: Instant,
    /// (departure, arrival on the receiver's clock, bytes)
    packets: Vec<(Instant, Option<Duration>, usize)>,
}

/// The probing side of the controller: requests, and results from feedback.
#[derive(Debug, Default)]
pub struct Prober {
    next_id: u32,
    pending: VecDeque<(u64, Duration)>,
    running: HashMap<u32, Running>,
}

impl Prober {
    /// Queues a request for `rate_bps`.
    pub fn request(&mut self, rate_bps: f64) {
        self.pending.push_back((rate_bps as u64, PROBE_DURATION));
    }

    /// Whether any probe is queued or awaiting its result.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty() || !self.running.is_empty()
    }

    /// The next cluster to send, starting now.
    pub fn next(&mut self, now: Instant) -> Option<ProbeCluster> {
        let (rate_bps, duration) = self.pending.pop_front()?;
        self.next_id += 1;
        let cluster = ProbeCluster { id: self.next_id, rate_bps, duration, min_packets: MIN_PROBE_PACKETS };
        self.running.insert(cluster.id, Running { cluster, started: now, packets: Vec::new() });
        Some(cluster)
    }

    /// A reported packet that was sent for cluster `id`.
    pub fn on_packet(&mut self, id: u32, departure: Instant, arrival: Option<Duration>, size: usize) {
        if let Some(running) = self.running.get_mut(&id) {
            running.packets.push((departure, arrival, size));
        }
    }

    /// Results of the clusters that are complete by `now`, bits per second each. A result of
    /// at least [`FURTHER_PROBE_SHARE`] of its rate queues the next probe at twice the result.
    pub fn results(&mut self, now: Instant) -> Vec<f64> {
        let done: Vec<u32> = self
            .running
            .iter()
            .filter(|(_, r)| {
                let sent_enough = r.packets.len() >= r.cluster.min_packets
                    && now.saturating_duration_since(r.started) >= r.cluster.duration;
                sent_enough || now.saturating_duration_since(r.started) >= RESULT_WAIT
            })
            .map(|(id, _)| *id)
            .collect();
        let mut results = Vec::new();
        for id in done {
            let running = self.running.remove(&id).expect("listed above");
            if let Some(rate) = evaluate(&running.packets) {
                if rate >= FURTHER_PROBE_SHARE * running.cluster.rate_bps as f64 {
                    self.request(2.0 * rate);
                }
                results.push(rate);
            }
        }
        results
    }
}

/// The rate the path carried the cluster at, if enough of it arrived.
fn evaluate(packets: &[(Instant, Option<Duration>, usize)]) -> Option<f64> {
    let arrived: Vec<_> = packets.iter().filter_map(|(d, a, s)| a.map(|a| (*d, a, *s))).collect();
    if arrived.len() < MIN_PROBE_PACKETS {
        return None;
    }
    let first_send = packets.iter().map(|p| p.0).min()?;
    let last_send = packets.iter().map(|p| p.0).max()?;
    let first_arrival = arrived.iter().map(|p| p.1).min()?;
    let last_arrival = arrived.iter().map(|p| p.1).max()?;
    let send_span = last_send.saturating_duration_since(first_send).as_secs_f64();
    let arrival_span = last_arrival.saturating_sub(first_arrival).as_secs_f64();
    if send_span <= 0.0 || arrival_span <= 0.0 {
        return None;
    }
    // Each span leaves out one packet's bytes: the last sent, the first received.
    let sent_bytes: usize =
        packets.iter().map(|p| p.2).sum::<usize>() - packets.iter().max_by_key(|p| p.0)?.2;
    let received_bytes: usize =
        arrived.iter().map(|p| p.2).sum::<usize>() - arrived.iter().min_by_key(|p| p.1)?.2;
    let send_rate = sent_bytes as f64 * 8.0 / send_span;
    let receive_rate = received_bytes as f64 * 8.0 / arrival_span;
    Some(if receive_rate < SATURATED_SHARE * send_rate {
        SATURATED_TARGET * receive_rate
    } else {
        send_rate.min(receive_rate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_through_a_narrower_link_measures_the_link() {
        let t0 = Instant::now();
        let mut prober = Prober::default();
        prober.request(4_000_000.0);
        let cluster = prober.next(t0).expect("requested");
        // 10 packets of 1 000 bytes, sent 2 ms apart (4 Mbps), arriving 4 ms apart (2 Mbps).
        for i in 0..10u64 {
            let sent = t0 + Duration::from_millis(2 * i);
            prober.on_packet(cluster.id, sent, Some(Duration::from_millis(50 + 4 * i)), 1_000);
        }
        let results = prober.results(t0 + Duration::from_millis(100));
        assert_eq!(results.len(), 1);
        assert!((results[0] - 0.95 * 2_000_000.0).abs() < 1_000.0, "{results:?}");
        assert!(!prober.busy(), "half the probe's rate got through: no further probe");
    }
}
