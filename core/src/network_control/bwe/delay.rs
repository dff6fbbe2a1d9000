//! Delay-based overuse detection: packets grouped into send bursts, the growth of the one-way
//! delay between groups, a trendline over the last groups, and an adaptive threshold on its slope.
//!
//! Follows libwebrtc's GoogCC (`InterArrivalDelta`, `TrendlineEstimator`) with its constants: a
//! queue that builds up at the bottleneck shows as arrival gaps growing faster than send gaps,
//! long before a packet is lost.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Packets sent within this span of a group's first packet belong to that group (a frame's burst).
const BURST_SPAN: Duration = Duration::from_millis(5);
/// A packet arriving this soon after its group's last one, and with less delay, joins the group:
/// it was held in the same queue.
const BURST_ARRIVAL_GAP: Duration = Duration::from_millis(5);
/// A burst never spans more than this on the arrival side.
const MAX_BURST_DURATION: Duration = Duration::from_millis(100);
/// A jump of the delay larger than this is a clock change or a stall, not congestion: start over.
const MAX_DELAY_JUMP_MS: f64 = 3_000.0;

/// How delay changed between two consecutive groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupDelta {
    /// Time between the groups' last departures, milliseconds.
    pub send_delta_ms: f64,
    /// Time between the groups' last arrivals, milliseconds (receiver clock).
    pub arrival_delta_ms: f64,
    /// The later group's last arrival, milliseconds on the receiver's clock.
    pub arrival_ms: f64,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: Duration,
    last_send: Duration,
    first_arrival: Duration,
    last_arrival: Duration,
}

/// Groups packets into send bursts and yields the delay change between consecutive groups.
#[derive(Debug, Default)]
pub struct InterArrival {
    current: Option<Group>,
    previous: Option<Group>,
}

impl InterArrival {
    /// Adds an arrived packet (in send order): its send time on the sender's clock and its
    /// arrival on the receiver's, each from any epoch. Returns a delta when it closes a group.
    pub fn add(&mut self, send: Duration, arrival: Duration) -> Option<GroupDelta> {
        let Some(current) = self.current.as_mut() else {
            self.current = Some(Group {
                first_send: send,
                last_send: send,
                first_arrival: arrival,
                last_arrival: arrival,
            });
            return None;
        };
        if send < current.first_send {
            return None; // older than the open group: reordered, too late to place
        }
        if Self::belongs(current, send, arrival) {
            current.last_send = current.last_send.max(send);
            current.last_arrival = current.last_arrival.max(arrival);
            return None;
        }
        let closed = *current;
        let delta = self.previous.and_then(|previous| {
            let send_delta_ms = ms(closed.last_send.saturating_sub(previous.last_send));
            let arrival_delta_ms = ms(closed.last_arrival) - ms(previous.last_arrival);
            (arrival_delta_ms >= 0.0).then_some(GroupDelta {
                send_delta_ms,
                arrival_delta_ms,
                arrival_ms: ms(closed.last_arrival),
            })
        });
        if delta.is_some_and(|d| (d.arrival_delta_ms - d.send_delta_ms).abs() > MAX_DELAY_JUMP_MS) {
            self.previous = None;
            self.current = Some(Group {
                first_send: send,
                last_send: send,
                first_arrival: arrival,
                last_arrival: arrival,
            });
            return None;
        }
        self.previous = Some(closed);
        self.current =
            Some(Group { first_send: send, last_send: send, first_arrival: arrival, last_arrival: arrival });
        delta
    }

    fn belongs(group: &Group, send: Duration, arrival: Duration) -> bool {
        if send.saturating_sub(group.first_send) <= BURST_SPAN {
            return true;
        }
        // Sent apart but arrived together with less delay: both waited in the same queue.
        let arrival_gap = arrival.saturating_sub(group.last_arrival);
        let send_gap = send.saturating_sub(group.last_send);
        arrival >= group.last_arrival
            && arrival_gap < BURST_ARRIVAL_GAP
            && arrival_gap < send_gap
            && arrival.saturating_sub(group.first_arrival) < MAX_BURST_DURATION
    }
}

/// How long the minimum one-way delay is remembered (a route change moves it).
const BASE_DELAY_MEMORY: Duration = Duration::from_secs(30);

/// The queueing delay: the one-way delay (receiver clock minus send clock, offset unknown) above
/// its minimum over the last [`BASE_DELAY_MEMORY`].
#[derive(Debug, Default)]
pub struct QueueDelay {
    epoch: Option<Instant>,
    /// Minimum offsets per 5 s bucket, oldest first: (bucket start, seconds).
    minima: VecDeque<(Instant, f64)>,
    latest: f64,
}

impl QueueDelay {
    /// Adds an arrived packet.
    pub fn on_packet(&mut self, send: Instant, arrival: Duration) {
        let epoch = *self.epoch.get_or_insert(send);
        let offset = arrival.as_secs_f64() - send.saturating_duration_since(epoch).as_secs_f64();
        self.latest = offset;
        match self.minima.back_mut() {
            Some((start, min)) if send.saturating_duration_since(*start) < Duration::from_secs(5) => {
                *min = min.min(offset);
            }
            _ => self.minima.push_back((send, offset)),
        }
        while self
            .minima
            .front()
            .is_some_and(|(start, _)| send.saturating_duration_since(*start) > BASE_DELAY_MEMORY)
        {
            self.minima.pop_front();
        }
    }

    /// The last packet's queueing delay.
    pub fn current(&self) -> Duration {
        let base = self.minima.iter().map(|(_, m)| *m).fold(f64::INFINITY, f64::min);
        Duration::from_secs_f64((self.latest - base).max(0.0))
    }
}

/// What the detector concludes about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Usage {
    /// The delay is steady: the path carries what we send.
    #[default]
    Normal,
    /// The delay grows: a queue is building, send less.
    Overusing,
    /// The delay shrinks: a queue is draining, hold the rate until it is gone.
    Underusing,
}

/// Groups in the trendline's regression window.
const WINDOW: usize = 20;
/// Exponential smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// The slope is multiplied by this (and by the sample count) before it meets the threshold.
const THRESHOLD_GAIN: f64 = 4.0;
/// Threshold adaptation speed when the trend is above it (slow: a real queue must not raise it)…
const K_UP: f64 = 0.0087;
/// …and below it (fast: come back down to catch the next queue).
const K_DOWN: f64 = 0.039;
/// A trend this far above the threshold is a spike that does not teach the threshold anything.
const MAX_ADAPT_OFFSET: f64 = 15.0;
/// Overuse must last this long (milliseconds of send time) before it is signalled.
const OVERUSE_TIME_MS: f64 = 10.0;

/// Linear regression of smoothed delay over arrival time, with an adaptive threshold.
#[derive(Debug)]
pub struct Trendline {
    window: VecDeque<(f64, f64)>,
    first_arrival_ms: Option<f64>,
    accumulated_delay: f64,
    smoothed_delay: f64,
    deltas: usize,
    prev_trend: f64,
    threshold: f64,
    last_threshold_update_ms: Option<f64>,
    time_over_using: Option<f64>,
    overuse_count: u32,
    usage: Usage,
}

impl Default for Trendline {
    fn default() -> Self {
        Trendline {
            window: VecDeque::with_capacity(WINDOW + 1),
            first_arrival_ms: None,
            accumulated_delay: 0.0,
            smoothed_delay: 0.0,
            deltas: 0,
            prev_trend: 0.0,
            threshold: 12.5,
            last_threshold_update_ms: None,
            time_over_using: None,
            overuse_count: 0,
            usage: Usage::Normal,
        }
    }
}

impl Trendline {
    /// Feeds one group delta; returns the detector's verdict.
    pub fn update(&mut self, delta: GroupDelta) -> Usage {
        self.deltas = (self.deltas + 1).min(1_000);
        self.accumulated_delay += delta.arrival_delta_ms - delta.send_delta_ms;
        self.smoothed_delay = SMOOTHING * self.smoothed_delay + (1.0 - SMOOTHING) * self.accumulated_delay;
        let first = *self.first_arrival_ms.get_or_insert(delta.arrival_ms);
        self.window.push_back((delta.arrival_ms - first, self.smoothed_delay));
        if self.window.len() > WINDOW {
            self.window.pop_front();
        }
        let trend = if self.window.len() == WINDOW {
            slope(&self.window).unwrap_or(self.prev_trend)
        } else {
            self.prev_trend
        };
        self.detect(trend, delta.send_delta_ms, delta.arrival_ms);
        self.usage
    }

    /// The last verdict.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn detect(&mut self, trend: f64, send_delta_ms: f64, now_ms: f64) {
        let modified = self.deltas.min(60) as f64 * trend * THRESHOLD_GAIN;
        if modified > self.threshold {
            let over = match self.time_over_using {
                None => send_delta_ms / 2.0,
                Some(t) => t + send_delta_ms,
            };
            self.time_over_using = Some(over);
            self.overuse_count += 1;
            if over > OVERUSE_TIME_MS && self.overuse_count > 1 && trend >= self.prev_trend {
                self.time_over_using = Some(0.0);
                self.overuse_count = 0;
                self.usage = Usage::Overusing;
            }
        } else if modified < -self.threshold {
            self.time_over_using = None;
            self.overuse_count = 0;
            self.usage = Usage::Underusing;
        } else {
            self.time_over_using = None;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.prev_trend = trend;
        self.adapt_threshold(modified, now_ms);
    }

    fn adapt_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.last_threshold_update_ms.get_or_insert(now_ms);
        self.last_threshold_update_ms = Some(now_ms);
        if modified.abs() > self.threshold + MAX_ADAPT_OFFSET {
            return;
        }
        let k = if modified.abs() < self.threshold { K_DOWN } else { K_UP };
        let elapsed = (now_ms - last).clamp(0.0, 100.0);
        self.threshold = (self.threshold + k * (modified.abs() - self.threshold) * elapsed).clamp(6.0, 600.0);
    }
}

fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points
        .iter()
        .fold((0.0, 0.0), |(num, den), (x, y)| (num + (x - mx) * (y - my), den + (x - mx) * (x - mx)));
    (den != 0.0).then(|| num / den)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups every 20 ms, with the arrival spacing stretched by `stretch_ms` per group.
    fn run(stretch_ms: f64, groups: u32) -> Usage {
        let mut arrival = InterArrival::default();
        let mut trend = Trendline::default();
        let mut usage = Usage::Normal;
        for i in 0..groups {
            let send = Duration::from_millis(20 * i as u64);
            let at = Duration::from_secs_f64((50.0 + 20.0 * i as f64 + stretch_ms * i as f64) / 1_000.0);
            if let Some(delta) = arrival.add(send, at) {
                usage = trend.update(delta);
            }
        }
        usage
    }

    #[test]
    fn a_steady_delay_is_normal_and_a_growing_one_is_overuse() {
        assert_eq!(run(0.0, 100), Usage::Normal);
        assert_eq!(run(2.0, 100), Usage::Overusing);
        assert_eq!(run(-2.0, 60), Usage::Underusing);
    }

    #[test]
    fn packets_sent_within_five_ms_form_one_group() {
        let t0 = Duration::ZERO;
        let mut arrival = InterArrival::default();
        let at = |ms: u64| Duration::from_millis(ms);
        assert_eq!(arrival.add(t0, at(100)), None);
        assert_eq!(arrival.add(t0 + at(3), at(104)), None);
        assert_eq!(arrival.add(t0 + at(20), at(121)), None, "closes the first group: no previous yet");
        let delta = arrival.add(t0 + at(40), at(150)).expect("second group closed");
        assert_eq!(delta.send_delta_ms, 17.0);
        assert_eq!(delta.arrival_delta_ms, 17.0);
    }
}
