//! The controller against a simulated bottleneck: a drop-tail queue in front of a link whose rate
//! follows a schedule, a sender whose encoder produces exactly the target (video frames at 30 fps
//! plus 50 audio packets a second), and a receiver that reports like webrtc-rs (transport-cc every
//! 100 ms, receiver reports every second) or like a stack without transport-cc (REMB + RR).
//! Everything runs on simulated time, so every run is the same.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::*;

const MBPS: f64 = 1_000_000.0;
const QUEUE_LIMIT: f64 = 0.300;
const AUDIO_BYTES: usize = 100;
const MAX_PACKET: usize = 1_200;

/// What the receiver sends back.
#[derive(Clone, Copy)]
struct Peer {
    twcc: bool,
    remb: bool,
    rr: bool,
    /// Deliver every other transport-cc feedback before the one sent ahead of it.
    reorder_feedback: bool,
    /// Also send the probe clusters the controller asks for (padding at the cluster's rate).
    probes: bool,
}

const WEBRTC_RS: Peer = Peer { twcc: true, remb: false, rr: true, reorder_feedback: false, probes: false };

enum Feedback {
    Twcc(Vec<PacketFeedback>),
    Remb(u64),
    Rr(f64),
}

struct Sim {
    t0: Instant,
    ms: u64,
    peer: Peer,
    /// (from second, bits per second); 0 is an outage.
    schedule: Vec<(f64, f64)>,
    random_loss: f64,
    rng: u64,
    cc: CongestionController,
    pacer: VecDeque<(usize, Option<u32>)>,
    budget_bits: f64,
    busy_until: f64,
    seq: u64,
    /// Sent packets the receiver has not reported yet: seq → (sent, bytes, arrival second).
    unreported: BTreeMap<u64, (Instant, usize, Option<f64>, Option<u32>)>,
    in_transit: VecDeque<(f64, Feedback)>,
    held_back: Option<Vec<PacketFeedback>>,
    rr_lost: u32,
    rr_total: u32,
    probe_until: Option<(f64, u32, f64)>,
    /// The pacer's rate as a multiple of the target.
    pace_factor: f64,
    /// Propagation delay each way, seconds.
    one_way: f64,
    /// Frames like a real encoder's: ±30 % around the mean, a keyframe 5× the mean every 2 s.
    uneven_frames: bool,
    frames: u64,
    /// (second, target bps, capacity bps), every 100 ms.
    targets: Vec<(f64, f64, f64)>,
    /// (second sent, queueing delay seconds) of every packet that entered the queue.
    queue: Vec<(f64, f64)>,
}

impl Sim {
    fn new(peer: Peer, schedule: &[(f64, f64)]) -> Sim {
        Sim {
            t0: Instant::now(),
            ms: 0,
            peer,
            schedule: schedule.to_vec(),
            random_loss: 0.0,
            rng: 0x2545_f491_4f6c_dd1d,
            cc: CongestionController::new(BweConfig::default()),
            pacer: VecDeque::new(),
            budget_bits: 0.0,
            busy_until: 0.0,
            seq: 0,
            unreported: BTreeMap::new(),
            in_transit: VecDeque::new(),
            held_back: None,
            rr_lost: 0,
            rr_total: 0,
            probe_until: None,
            pace_factor: 1.5,
            one_way: 0.050,
            uneven_frames: false,
            frames: 0,
            targets: Vec::new(),
            queue: Vec::new(),
        }
    }

    fn secs(&self) -> f64 {
        self.ms as f64 / 1_000.0
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn capacity(&self, secs: f64) -> f64 {
        self.schedule.iter().rev().find(|(from, _)| *from <= secs).map_or(0.0, |(_, bps)| *bps)
    }

    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn run_until(&mut self, secs: f64) {
        while self.secs() < secs {
            self.tick();
            self.ms += 1;
        }
    }

    fn tick(&mut self) {
        let t = self.secs();
        let now = self.at(t);
        let target = self.cc.target_bps() as f64;
        // The encoder: audio every 20 ms, a video frame every 33 ms, together at the target.
        if self.ms.is_multiple_of(20) {
            self.pacer.push_front((AUDIO_BYTES, None));
        }
        if self.ms.is_multiple_of(33) {
            let mean = (target - 40_000.0).max(20_000.0) / 8.0 / 30.0;
            self.frames += 1;
            let mut frame = if !self.uneven_frames {
                mean as usize
            } else if self.frames.is_multiple_of(60) {
                (5.0 * mean) as usize
            } else {
                // The other 59 make up for the keyframe's extra 4 means.
                (mean * (55.0 / 59.0) * (0.7 + 0.6 * self.random())) as usize
            };
            while frame > 0 {
                let size = frame.min(MAX_PACKET);
                self.pacer.push_back((size, None));
                frame -= size;
            }
        }
        if self.peer.probes {
            if let Some(cluster) = self.cc.wants_probe(now) {
                let until = t + cluster.duration.as_secs_f64();
                self.probe_until = Some((until, cluster.id, cluster.rate_bps as f64));
            }
            if let Some((until, id, rate)) = self.probe_until {
                if t < until {
                    // Padding on top of the media, 1 000-byte packets at the cluster's rate.
                    for _ in 0..((rate / 8.0 / 1_000.0 / 1_000.0).ceil() as usize) {
                        self.pacer.push_front((1_000, Some(id)));
                    }
                } else {
                    self.probe_until = None;
                }
            }
        }
        // The pacer: a leaky bucket at 1.5 × the target (probes at their own rate).
        let paced = self.pace_factor * target;
        let pace = self.probe_until.map_or(paced, |(_, _, rate)| rate.max(paced));
        self.budget_bits = (self.budget_bits + pace / 1_000.0).min(pace * 0.005);
        while self.budget_bits > 0.0 {
            let Some((size, probe)) = self.pacer.pop_front() else { break };
            self.budget_bits -= size as f64 * 8.0;
            self.send(t, size, probe);
        }
        // The receiver's feedback, then what reaches the sender.
        if self.peer.twcc && self.ms.is_multiple_of(100) {
            self.transport_cc(t);
        }
        if self.ms % 1_000 == 500 {
            if self.peer.rr {
                let fraction =
                    if self.rr_total == 0 { 0.0 } else { self.rr_lost as f64 / self.rr_total as f64 };
                self.in_transit.push_back((t + self.one_way, Feedback::Rr(fraction)));
            }
            if self.peer.remb {
                let remb = 0.9 * self.capacity(t - 0.5).min(self.capacity(t));
                self.in_transit.push_back((t + self.one_way, Feedback::Remb(remb as u64)));
            }
            self.rr_lost = 0;
            self.rr_total = 0;
        }
        while self.in_transit.front().is_some_and(|(due, _)| *due <= t) {
            match self.in_transit.pop_front().expect("front checked").1 {
                Feedback::Twcc(packets) => self.cc.on_feedback(now, &packets),
                Feedback::Remb(bps) => self.cc.on_remb(now, bps),
                Feedback::Rr(fraction) => {
                    self.cc.on_receiver_report(now, fraction, Some(Duration::from_millis(100)))
                }
            }
        }
        if self.ms.is_multiple_of(25) {
            self.cc.on_timeout(now);
        }
        if std::env::var("BWE_DEBUG").is_ok() && self.ms.is_multiple_of(100) {
            eprintln!(
                "{t:.1} target {:.2} acked {:?} recent {:?} cap {:?} usage {:?} queue {:?} loss {:?}",
                target / MBPS,
                self.cc.acknowledged_bps(),
                self.cc.acknowledged.recent_bps(RECENT_WINDOW),
                self.cc.link_capacity_bps(),
                self.cc.usage(),
                self.cc.queue_delay(),
                self.cc.loss_based_bps()
            );
        }
        if self.ms.is_multiple_of(100) {
            self.targets.push((t, self.cc.target_bps() as f64, self.capacity(t)));
        }
    }

    fn send(&mut self, t: f64, size: usize, probe: Option<u32>) {
        self.seq += 1;
        let rate = self.capacity(t);
        let start = self.busy_until.max(t);
        let arrival = if self.random() < self.random_loss || rate < 1.0 || start - t > QUEUE_LIMIT {
            None
        } else {
            self.queue.push((t, start - t));
            self.busy_until = start + size as f64 * 8.0 / rate;
            Some(self.busy_until + self.one_way)
        };
        // Counted at once for the receiver reports (the receiver learns of it a moment later).
        self.rr_total += 1;
        self.rr_lost += u32::from(arrival.is_none());
        self.unreported.insert(self.seq, (self.at(t), size, arrival, probe));
    }

    /// Everything up to the newest packet that arrived by `t`; the gaps before it are lost.
    fn transport_cc(&mut self, t: f64) {
        let Some(newest) =
            self.unreported.iter().filter(|(_, p)| p.2.is_some_and(|a| a <= t)).map(|(s, _)| *s).max()
        else {
            return;
        };
        let later = self.unreported.split_off(&(newest + 1));
        let reported = std::mem::replace(&mut self.unreported, later);
        let packets: Vec<PacketFeedback> = reported
            .into_iter()
            .map(|(sequence, (send_time, size, arrival, probe_cluster))| PacketFeedback {
                sequence,
                send_time,
                arrival: arrival.map(Duration::from_secs_f64),
                size,
                probe_cluster,
            })
            .collect();
        if self.peer.reorder_feedback {
            match self.held_back.take() {
                None => self.held_back = Some(packets),
                Some(earlier) => {
                    self.in_transit.push_back((t + self.one_way, Feedback::Twcc(packets)));
                    self.in_transit.push_back((t + self.one_way, Feedback::Twcc(earlier)));
                }
            }
        } else {
            self.in_transit.push_back((t + self.one_way, Feedback::Twcc(packets)));
        }
    }

    fn target_at(&self, secs: f64) -> f64 {
        self.targets.iter().rev().find(|(t, _, _)| *t <= secs).map_or(0.0, |(_, bps, _)| *bps)
    }

    /// Mean target over `[from, to)`, as a share of the capacity.
    fn utilisation(&self, from: f64, to: f64) -> f64 {
        let window: Vec<_> = self.targets.iter().filter(|(t, _, _)| *t >= from && *t < to).collect();
        window.iter().map(|(_, bps, cap)| bps / cap).sum::<f64>() / window.len() as f64
    }

    /// The 95th percentile of the queueing delay of packets sent in `[from, to)`, seconds.
    fn queue_p95(&self, from: f64, to: f64) -> f64 {
        let mut delays: Vec<f64> =
            self.queue.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, d)| *d).collect();
        delays.sort_by(f64::total_cmp);
        delays.get(delays.len() * 95 / 100).copied().unwrap_or(0.0)
    }

    /// The first second at or after `from` when the queue was under `delay` seconds.
    fn queue_under(&self, from: f64, delay: f64) -> f64 {
        self.queue.iter().find(|(t, d)| *t >= from && *d < delay).map_or(f64::INFINITY, |(t, _)| *t)
    }

    /// The first second at or after `from` when the target was at least `bps`.
    fn target_reaches(&self, from: f64, bps: f64) -> f64 {
        self.targets.iter().find(|(t, b, _)| *t >= from && *b >= bps).map_or(f64::INFINITY, |(t, _, _)| *t)
    }

    fn trace(&self) -> String {
        self.targets
            .iter()
            .step_by(5)
            .map(|(t, b, c)| format!("{t:.1}s {:.2}/{:.2}", b / MBPS, c / MBPS))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[test]
fn the_start_ramps_to_the_link_within_seconds() {
    let mut sim = Sim::new(WEBRTC_RS, &[(0.0, 2.5 * MBPS)]);
    sim.run_until(10.0);
    let reached = sim.target_reaches(0.0, 0.8 * 2.5 * MBPS);
    assert!(reached < 5.0, "80 % of 2.5 Mbps at {reached}s: {}", sim.trace());
}

#[test]
fn on_a_steady_link_the_target_stays_between_80_and_100_percent_with_a_short_queue() {
    let mut sim = Sim::new(WEBRTC_RS, &[(0.0, 1.0 * MBPS)]);
    sim.run_until(40.0);
    let utilisation = sim.utilisation(10.0, 40.0);
    assert!((0.8..=1.0).contains(&utilisation), "utilisation {utilisation:.2}: {}", sim.trace());
    let p95 = sim.queue_p95(10.0, 40.0);
    assert!(p95 <= 0.060, "queue p95 {:.0} ms: {}", p95 * 1e3, sim.trace());
}

#[test]
fn a_capacity_rise_is_followed_to_90_percent_within_5_seconds() {
    let mut sim = Sim::new(WEBRTC_RS, &[(0.0, 1.0 * MBPS), (20.0, 2.5 * MBPS)]);
    sim.run_until(30.0);
    let reached = sim.target_reaches(20.0, 0.9 * 2.5 * MBPS);
    assert!(reached <= 25.0, "90 % reached at {reached}s: {}", sim.trace());
}

#[test]
fn after_a_drop_the_target_is_under_the_new_capacity_within_1_5_s_and_the_queue_drains_in_1_s() {
    let mut sim = Sim::new(WEBRTC_RS, &[(0.0, 2.5 * MBPS), (20.0, 0.6 * MBPS)]);
    sim.run_until(30.0);
    assert!(sim.target_at(21.5) <= 0.6 * MBPS, "{}", sim.trace());
    let drained = sim.queue_under(20.2, 0.100);
    assert!(drained <= 21.0, "queue under 100 ms at {drained}s: {}", sim.trace());
    let utilisation = sim.utilisation(24.0, 30.0);
    assert!(utilisation >= 0.75, "utilisation {utilisation:.2} after the drop: {}", sim.trace());
}

/// The RFC 8867 §5.1 capacity schedule: 1.0 → 2.5 → 0.6 → 1.0 Mbps at 0/40/60/80 s.
const RFC_8867: [(f64, f64); 4] =
    [(0.0, 1.0 * MBPS), (40.0, 2.5 * MBPS), (60.0, 0.6 * MBPS), (80.0, 1.0 * MBPS)];

/// Runs `sim` through the RFC 8867 schedule's 100 s and asserts the benchmark's targets: queue
/// p95 ≤ 60 ms, utilisation ≥ 85 %, 90 % of the rise at 40 s within 5 s, the queue under 100 ms
/// within 1 s of the drop at 60 s.
fn assert_meets_the_benchmark_targets(mut sim: Sim, label: &str) {
    sim.run_until(100.0);
    let p95 = sim.queue_p95(5.0, 100.0);
    let utilisation = sim.utilisation(5.0, 100.0);
    if std::env::var("BWE_DEBUG").is_ok() {
        eprintln!(
            "{label}: p95 {p95:.3} utilisation {utilisation:.3} rise {:.1} drained {:.2}",
            sim.target_reaches(40.0, 0.9 * 2.5 * MBPS),
            sim.queue_under(60.2, 0.100)
        );
    }
    assert!(p95 <= 0.060, "{label}: queue p95 {:.0} ms: {}", p95 * 1e3, sim.trace());
    assert!(utilisation >= 0.85, "{label}: utilisation {utilisation:.2}: {}", sim.trace());
    assert!(sim.target_reaches(40.0, 0.9 * 2.5 * MBPS) <= 45.0, "{label}: rise: {}", sim.trace());
    assert!(sim.queue_under(60.2, 0.100) <= 61.0, "{label}: drop: {}", sim.trace());
}

#[test]
fn the_rfc_8867_schedule_meets_the_benchmark_targets() {
    assert_meets_the_benchmark_targets(Sim::new(WEBRTC_RS, &RFC_8867), "paced above the target");
}

#[test]
fn the_rfc_8867_schedule_meets_the_benchmark_targets_when_paced_at_the_target() {
    let mut sim = Sim::new(WEBRTC_RS, &RFC_8867);
    sim.pace_factor = 1.0;
    assert_meets_the_benchmark_targets(sim, "paced at the target");
}

#[test]
fn uneven_frames_of_a_real_encoder_keep_the_queue_short_and_the_link_used() {
    let mut sim = Sim::new(WEBRTC_RS, &RFC_8867);
    sim.pace_factor = 1.0;
    sim.uneven_frames = true;
    assert_meets_the_benchmark_targets(sim, "uneven frames");
}

#[test]
fn one_percent_random_loss_does_not_collapse_the_rate() {
    let mut sim = Sim::new(WEBRTC_RS, &[(0.0, 1.5 * MBPS)]);
    sim.random_loss = 0.01;
    sim.run_until(30.0);
    let utilisation = sim.utilisation(10.0, 30.0);
    assert!(utilisation >= 0.8, "utilisation {utilisation:.2}: {}", sim.trace());
}

#[test]
fn heavy_random_loss_brings_the_rate_down() {
    let mut sim = Sim::new(WEBRTC_RS, &[(0.0, 1.5 * MBPS)]);
    sim.run_until(10.0);
    let before = sim.target_at(10.0);
    sim.random_loss = 0.3;
    sim.run_until(13.0);
    assert!(sim.target_at(13.0) < 0.6 * before, "{}", sim.trace());
}

#[test]
fn reordered_feedback_does_not_disturb_the_estimate() {
    let peer = Peer { reorder_feedback: true, ..WEBRTC_RS };
    let mut sim = Sim::new(peer, &[(0.0, 1.0 * MBPS), (20.0, 2.0 * MBPS)]);
    sim.run_until(35.0);
    let utilisation = sim.utilisation(10.0, 20.0);
    assert!(utilisation >= 0.8, "utilisation {utilisation:.2}: {}", sim.trace());
    assert!(sim.target_reaches(20.0, 0.85 * 2.0 * MBPS) <= 27.0, "{}", sim.trace());
    let p95 = sim.queue_p95(10.0, 35.0);
    assert!(p95 <= 0.080, "queue p95 {:.0} ms: {}", p95 * 1e3, sim.trace());
}

#[test]
fn a_peer_without_transport_cc_is_followed_through_remb_and_receiver_reports() {
    let peer = Peer { twcc: false, remb: true, rr: true, reorder_feedback: false, probes: false };
    let mut sim = Sim::new(peer, &[(0.0, 1.0 * MBPS), (15.0, 2.5 * MBPS), (30.0, 0.6 * MBPS)]);
    sim.run_until(45.0);
    assert_eq!(sim.cc.source(sim.at(45.0)), FeedbackSource::Remb);
    let (t_1m, t_2m) = (sim.target_at(14.0), sim.target_at(20.0));
    assert!((0.8 * MBPS..=1.0 * MBPS).contains(&t_1m), "{}", sim.trace());
    assert!((2.0 * MBPS..=2.5 * MBPS).contains(&t_2m), "{}", sim.trace());
    assert!(sim.target_at(33.0) <= 0.6 * MBPS, "{}", sim.trace());
}

#[test]
fn on_receiver_reports_alone_the_estimate_climbs_until_loss_and_comes_back_down() {
    let peer = Peer { twcc: false, remb: false, rr: true, reorder_feedback: false, probes: false };
    let mut sim = Sim::new(peer, &[(0.0, 1.5 * MBPS)]);
    sim.run_until(60.0);
    assert_eq!(sim.cc.source(sim.at(60.0)), FeedbackSource::ReceiverReports);
    // Not frozen: it climbs from 700 kbps to the link, then loss at the full queue pushes it back.
    let peak = sim.targets.iter().map(|(_, b, _)| *b).fold(0.0, f64::max);
    assert!(peak >= 1.5 * MBPS, "peak {peak}: {}", sim.trace());
    let late = sim.utilisation(30.0, 60.0);
    assert!((0.5..=1.3).contains(&late), "utilisation {late:.2}: {}", sim.trace());
}

#[test]
fn after_an_outage_the_rate_recovers_within_seconds() {
    let mut sim = Sim::new(WEBRTC_RS, &[(0.0, 1.5 * MBPS), (20.0, 0.0), (23.0, 1.5 * MBPS)]);
    sim.run_until(35.0);
    assert!(sim.target_at(23.0) < sim.target_at(19.9), "the outage lowered the target: {}", sim.trace());
    let recovered = sim.target_reaches(23.0, 0.8 * 1.5 * MBPS);
    assert!(recovered <= 29.0, "80 % again at {recovered}s: {}", sim.trace());
    let p95 = sim.queue_p95(29.0, 35.0);
    assert!(p95 <= 0.060, "queue p95 {:.0} ms: {}", p95 * 1e3, sim.trace());
}

#[test]
fn probes_sent_by_a_padding_pacer_find_the_capacity_at_once() {
    let peer = Peer { probes: true, ..WEBRTC_RS };
    let mut sim = Sim::new(peer, &[(0.0, 4.0 * MBPS)]);
    sim.run_until(5.0);
    let reached = sim.target_reaches(0.0, 0.8 * 4.0 * MBPS);
    assert!(reached <= 1.5, "80 % of 4 Mbps at {reached}s: {}", sim.trace());
}

#[test]
fn the_benchmark_targets_hold_whatever_the_moment_of_the_change_and_the_path_delay() {
    // The sawtooth's phase at the moment of a change decides how long a rise takes to notice.
    for phase in [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5] {
        for one_way in [0.010, 0.050, 0.100] {
            let (rise, drop) = (40.0 + phase, 60.0 + phase);
            let schedule = [(0.0, 1.0 * MBPS), (rise, 2.5 * MBPS), (drop, 0.6 * MBPS), (80.0, 1.0 * MBPS)];
            let mut sim = Sim::new(WEBRTC_RS, &schedule);
            sim.pace_factor = 1.0;
            sim.one_way = one_way;
            sim.run_until(100.0);
            let case = format!("change +{phase}s, {:.0} ms one way", one_way * 1e3);
            let p95 = sim.queue_p95(5.0, 100.0);
            assert!(p95 <= 0.060, "{case}: queue p95 {:.0} ms", p95 * 1e3);
            let utilisation = sim.utilisation(5.0, 100.0);
            assert!(utilisation >= 0.85, "{case}: utilisation {utilisation:.2}");
            let risen = sim.target_reaches(rise, 0.9 * 2.5 * MBPS) - rise;
            assert!(risen <= 5.0, "{case}: 90 % of the rise after {risen:.1}s: {}", sim.trace());
            let drained = sim.queue_under(drop + 0.2, 0.100) - drop;
            assert!(
                drained <= 1.0,
                "{case}: queue under 100 ms {drained:.2}s after the drop: {}",
                sim.trace()
            );
        }
    }
}

#[test]
fn total_silence_lowers_the_target_to_the_initial_rate_and_no_further() {
    let t0 = Instant::now();
    let mut cc = CongestionController::new(BweConfig::default());
    cc.on_remb(t0, 3_000_000);
    assert_eq!(cc.target_bps(), 3_000_000);
    for ms in (0..20_000).step_by(100) {
        cc.on_timeout(t0 + Duration::from_millis(ms));
    }
    assert_eq!(cc.source(t0 + Duration::from_secs(20)), FeedbackSource::ReceiverReports);
    assert_eq!(cc.target_bps(), BweConfig::default().initial_bps, "decayed to the start, not below");
    assert!(cc.poll_timeout().is_some_and(|t| t > t0 + Duration::from_millis(19_900)));
}

#[test]
fn a_packet_reported_missing_then_arrived_is_late_not_lost_and_re_reports_count_once() {
    // The webrtc-rs receiver on a jittery link: each feedback (10 packets, every 100 ms) reports
    // its last two packets missing; they arrive after the next ones and the next feedback reports
    // them, with everything after them again.
    let t0 = Instant::now();
    let mut cc = CongestionController::new(BweConfig::default());
    let packet = |sequence: u64, arrived: bool| PacketFeedback {
        sequence,
        send_time: t0 + Duration::from_millis(10 * sequence),
        arrival: arrived.then(|| Duration::from_millis(60 + 10 * sequence)),
        size: 1_000,
        probe_cluster: None,
    };
    for i in 0..30u64 {
        let now = t0 + Duration::from_millis(100 * i + 150);
        let mut feedback: Vec<PacketFeedback> = Vec::new();
        if i > 0 {
            feedback.extend((10 * i - 2..10 * i).map(|s| packet(s, true)));
        }
        feedback.extend((10 * i..10 * i + 8).map(|s| packet(s, true)));
        feedback.extend((10 * i + 8..10 * i + 10).map(|s| packet(s, false)));
        cc.on_feedback(now, &feedback);
    }
    assert_eq!(cc.loss_fraction(), Some(0.0));
    assert_eq!(cc.loss_based_bps(), None, "20 % reported missing was only late");
}

#[test]
fn a_packet_reported_missing_and_never_arrived_is_lost() {
    let t0 = Instant::now();
    let mut cc = CongestionController::new(BweConfig::default());
    for i in 0..30u64 {
        let now = t0 + Duration::from_millis(100 * i + 150);
        let feedback: Vec<PacketFeedback> = (10 * i..10 * i + 10)
            .map(|sequence| PacketFeedback {
                sequence,
                send_time: t0 + Duration::from_millis(10 * sequence),
                arrival: (sequence % 10 < 7).then(|| Duration::from_millis(60 + 10 * sequence)),
                size: 1_000,
                probe_cluster: None,
            })
            .collect();
        cc.on_feedback(now, &feedback);
    }
    assert!(cc.loss_fraction().is_some_and(|l| l > 0.2), "{:?}", cc.loss_fraction());
    assert!(cc.loss_based_bps().is_some(), "30 % lost caps the rate");
}

#[test]
fn a_packet_a_later_feedback_names_as_arrived_is_late_not_lost() {
    // As webrtc-rs delivers it: each packet's fate once (two of ten "lost" in every feedback),
    // and the next feedback's own list, read by the adapter, names them arrived.
    let t0 = Instant::now();
    let mut cc = CongestionController::new(BweConfig::default());
    for i in 0..30u64 {
        let now = t0 + Duration::from_millis(100 * i + 150);
        if i > 0 {
            let late: Vec<u16> = (10 * i - 2..10 * i).map(|s| s as u16).collect();
            cc.on_feedback_statuses(&late, &[]);
        }
        let feedback: Vec<PacketFeedback> = (10 * i..10 * i + 10)
            .map(|sequence| PacketFeedback {
                sequence,
                send_time: t0 + Duration::from_millis(10 * sequence),
                arrival: (sequence % 10 < 8).then(|| Duration::from_millis(60 + 10 * sequence)),
                size: 1_000,
                probe_cluster: None,
            })
            .collect();
        cc.on_feedback(now, &feedback);
    }
    assert_eq!(cc.loss_fraction(), Some(0.0));
    assert_eq!(cc.loss_based_bps(), None);
}

#[test]
fn packets_no_feedback_named_have_no_known_fate_and_those_reported_missing_are_lost() {
    // Every third feedback is lost on the way: webrtc-rs then says its 10 packets were lost. Of
    // the rest, one packet in ten is reported missing for good (10 %: not enough to cut, 13 % is).
    let t0 = Instant::now();
    let run = |missing_per_ten: u64| {
        let mut cc = CongestionController::new(BweConfig::default());
        for i in 0..60u64 {
            let now = t0 + Duration::from_millis(100 * i + 150);
            let lost_feedback = i % 3 == 1;
            let feedback: Vec<PacketFeedback> = (10 * i..10 * i + 10)
                .map(|sequence| PacketFeedback {
                    sequence,
                    send_time: t0 + Duration::from_millis(10 * sequence),
                    arrival: (!lost_feedback && sequence % 10 >= missing_per_ten)
                        .then(|| Duration::from_millis(60 + 10 * sequence)),
                    size: 1_000,
                    probe_cluster: None,
                })
                .collect();
            if !lost_feedback {
                let (received, missing): (Vec<u16>, Vec<u16>) = (
                    feedback.iter().filter(|p| p.arrival.is_some()).map(|p| p.sequence as u16).collect(),
                    feedback.iter().filter(|p| p.arrival.is_none()).map(|p| p.sequence as u16).collect(),
                );
                cc.on_feedback_statuses(&received, &missing);
            }
            cc.on_feedback(now, &feedback);
        }
        (cc.loss_fraction(), cc.loss_based_bps())
    };
    let (loss, cap) = run(0);
    assert_eq!((loss, cap), (Some(0.0), None), "a lost feedback is not lost media");
    let (loss, cap) = run(2);
    assert!(loss.is_some_and(|l| (0.15..=0.25).contains(&l)), "{loss:?}");
    assert!(cap.is_some(), "20 % reported missing caps the rate");
}

#[test]
fn a_queue_every_packet_waits_in_is_cut_even_before_the_trendline_sees_it() {
    // Eight packets with no queue, then eight that all waited `queue_ms`: too few groups for the
    // trendline (it needs 20) to say anything, so only the standing queue can cut.
    let run = |queue_ms: f64| {
        let t0 = Instant::now();
        let mut cc = CongestionController::new(BweConfig::default());
        for (batch, queue) in [(0u64, 0.0), (1, queue_ms)] {
            let feedback: Vec<PacketFeedback> = (0..8u64)
                .map(|k| {
                    let sent = 300.0 * batch as f64 + 12.5 * k as f64;
                    PacketFeedback {
                        sequence: 8 * batch + k,
                        send_time: t0 + Duration::from_secs_f64(sent / 1e3),
                        arrival: Some(Duration::from_secs_f64((sent + 50.0 + queue) / 1e3)),
                        size: 1_250,
                        probe_cluster: None,
                    }
                })
                .collect();
            // 300 ms apart: the controller may cut again (once per round trip).
            cc.on_feedback(t0 + Duration::from_millis(300 * batch + 200), &feedback);
        }
        assert_eq!(cc.usage(), Usage::Normal, "the trendline saw nothing");
        cc.target_bps()
    };
    let initial = BweConfig::default().initial_bps;
    assert!(run(55.0) < initial, "a 55 ms standing queue is cut");
    assert!(run(45.0) >= initial, "45 ms is not (yet)");
}

#[test]
fn jitter_alone_is_no_standing_queue() {
    // ±30 ms on every packet, no queue: some packets of every feedback see little of it.
    let t0 = Instant::now();
    let mut cc = CongestionController::new(BweConfig::default());
    let mut sequence = 0u64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..100u64 {
        let feedback: Vec<PacketFeedback> = (0..8)
            .map(|k| {
                sequence += 1;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let jitter = (rng >> 11) as f64 / (1u64 << 53) as f64 * 60.0;
                let sent = 100.0 * i as f64 + 12.5 * k as f64;
                PacketFeedback {
                    sequence,
                    send_time: t0 + Duration::from_secs_f64(sent / 1e3),
                    arrival: Some(Duration::from_secs_f64((sent + 20.0 + jitter) / 1e3)),
                    size: 1_250,
                    probe_cluster: None,
                }
            })
            .collect();
        let lowest = cc.detect(&feedback).expect("8 packets arrived");
        assert!(lowest < STANDING_QUEUE, "feedback {i}: {lowest:?}");
    }
}
