//! Figures of one direction of an emulated call, computed from the relay's per-packet records and
//! the participants' logs (see [`DirectionFigures::compute`]), as a table and as series to plot.

use std::time::{Duration, Instant};

use televisit_core::call::ladder::Rung;

use super::call::ParticipantLog;
use super::link::{Fate, PacketRecord};
use super::relay::DirectionReport;

/// A gap longer than this without a newly decoded picture is a freeze.
pub const FREEZE: Duration = Duration::from_millis(500);

/// What one direction (sender → receiver) achieved over a run.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionFigures {
    /// Delivered bits over the capacity's bits (outages count as no capacity).
    pub utilisation: f64,
    /// Mean delivered rate, Mbps.
    pub delivered_mbps: f64,
    /// Queue delay of the delivered packets, median and 95th percentile, ms.
    pub queue_p50_ms: f64,
    /// See `queue_p50_ms`.
    pub queue_p95_ms: f64,
    /// Packets dropped by the queue (or an outage), percent of those offered.
    pub queue_drop_percent: f64,
    /// Packets lost at random, percent of those offered.
    pub random_loss_percent: f64,
    /// For each rise of the capacity (and the start): when, and how long until the delivered rate
    /// (over 500 ms) reached 90 % of the new capacity; `None` if not before the next change.
    pub time_to_90: Vec<(Duration, Option<Duration>)>,
    /// For each drop of the capacity (to a rate above 0): when, and how long until the queue delay is
    /// back under 100 ms (the end of its first episode above 100 ms after the drop; 0 if none).
    pub queue_above_100ms: Vec<(Duration, Duration)>,
    /// The sender's rungs: the last (`… (start)`: the ladder never chose one, the encoder kept
    /// its start), and the smallest and largest chosen (`-`: none).
    pub rung_last: String,
    /// See `rung_last`.
    pub rung_range: (String, String),
    /// Video frames the sender sent per second, on average.
    pub sent_fps: f64,
    /// The last decoded picture size.
    pub decoded_size: Option<(u32, u32)>,
    /// The size most pictures were decoded at.
    pub decoded_size_mostly: Option<(u32, u32)>,
    /// Pictures decoded per second, on average.
    pub decoded_fps: f64,
    /// Gaps longer than [`FREEZE`] between decoded pictures (and at the end), and the longest.
    pub freezes: usize,
    /// See `freezes`.
    pub longest_freeze: Duration,
    /// 95th percentile of the audio frames' delay, sender's `SendFrame` to receiver, ms.
    pub audio_delay_p95_ms: Option<f64>,
}

/// One run of one direction: what [`DirectionFigures::compute`] and the plot read.
pub struct DirectionRun<'a> {
    /// When the schedules started (the records' zero).
    pub origin: Instant,
    /// How long the run lasted from `origin`.
    pub duration: Duration,
    /// The relay's records of this direction.
    pub link: &'a DirectionReport,
    /// The sender's log.
    pub sender: &'a ParticipantLog,
    /// The receiver's log.
    pub receiver: &'a ParticipantLog,
    /// Audio delays measured at the receiver.
    pub audio_delays: &'a [(Instant, Duration)],
}

impl DirectionRun<'_> {
    /// Bits delivered (left the bottleneck) in `[from, to)`.
    pub fn delivered_bits(&self, from: Duration, to: Duration) -> f64 {
        self.link
            .records
            .iter()
            .filter_map(|r| match r.fate {
                Fate::Sent { departed, .. } if departed >= from && departed < to => Some(r.len as f64 * 8.0),
                _ => None,
            })
            .sum()
    }

    /// Capacity bits in `[from, to)` (10 ms steps).
    pub fn capacity_bits(&self, from: Duration, to: Duration) -> f64 {
        let step = Duration::from_millis(10);
        let mut t = from;
        let mut bits = 0.0;
        while t < to {
            bits += self.link.config.rate_at(t) as f64 * step.as_secs_f64();
            t += step;
        }
        bits
    }

    /// Rates over consecutive windows of `width`: (window end, delivered bps, capacity bps).
    pub fn rates(&self, width: Duration) -> Vec<(Duration, f64, f64)> {
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t + width <= self.duration {
            let secs = width.as_secs_f64();
            out.push((
                t + width,
                self.delivered_bits(t, t + width) / secs,
                self.capacity_bits(t, t + width) / secs,
            ));
            t += width;
        }
        out
    }

    /// Queue delays of the delivered packets: (departure, delay).
    pub fn queue_delays(&self) -> Vec<(Duration, Duration)> {
        self.link
            .records
            .iter()
            .filter_map(|r| match r.fate {
                Fate::Sent { departed, queue_delay } => Some((departed, queue_delay)),
                _ => None,
            })
            .collect()
    }

    /// The sender's bandwidth estimate each second: (time since origin, bps).
    pub fn estimates(&self) -> Vec<(Duration, f64)> {
        self.sender
            .stats
            .iter()
            .filter(|(at, _)| *at >= self.origin)
            .filter_map(|(at, s)| Some((*at - self.origin, s.available_outgoing_bitrate_bps? as f64)))
            .collect()
    }
}

impl DirectionFigures {
    /// The figures of one direction.
    pub fn compute(run: &DirectionRun) -> DirectionFigures {
        let end = run.duration;
        let records: Vec<&PacketRecord> = run.link.records.iter().filter(|r| r.arrived < end).collect();
        let offered = records.len().max(1) as f64;
        let count = |fate: Fate| records.iter().filter(|r| r.fate == fate).count() as f64;
        let mut queue: Vec<f64> =
            run.queue_delays().iter().filter(|(at, _)| *at < end).map(|(_, d)| ms(*d)).collect();
        queue.sort_by(f64::total_cmp);
        let delivered = run.delivered_bits(Duration::ZERO, end);

        let config = &run.link.config;
        let mut changes: Vec<(Duration, u64, u64)> = Vec::new(); // (at, from, to)
        let mut rate = 0;
        for (at, to) in
            std::iter::once((Duration::ZERO, config.rate_bps)).chain(config.schedule.iter().copied())
        {
            if at < end && to != rate {
                changes.push((at, rate, to));
            }
            rate = to;
        }
        let next_change = |at: Duration| changes.iter().map(|c| c.0).find(|t| *t > at).unwrap_or(end);
        let window = Duration::from_millis(500);
        let time_to_90 = changes
            .iter()
            .filter(|(_, from, to)| to > from)
            .map(|&(at, _, to)| {
                let until = next_change(at);
                let mut t = at + window;
                let reached = loop {
                    if t > until {
                        break None;
                    }
                    if run.delivered_bits(t - window, t) / window.as_secs_f64() >= 0.9 * to as f64 {
                        break Some(t - at);
                    }
                    t += Duration::from_millis(100);
                };
                (at, reached)
            })
            .collect();
        let delays = run.queue_delays();
        let queue_above_100ms = changes
            .iter()
            .filter(|(_, from, to)| to < from && *to > 0)
            .map(|&(at, _, _)| {
                // The first episode above 100 ms after the drop, until a packet leaves under it.
                let until = next_change(at);
                let above = |d: &Duration| *d > Duration::from_millis(100);
                let after: Vec<_> = delays.iter().filter(|(t, _)| *t >= at && *t < until).collect();
                let stays = match after.iter().position(|(_, d)| above(d)) {
                    Some(first) => match after[first..].iter().find(|(_, d)| !above(d)) {
                        Some((back, _)) => *back - at,
                        None => until - at,
                    },
                    None => Duration::ZERO,
                };
                (at, stays)
            })
            .collect();

        // The rungs chosen from the connection (just before the origin) to the end.
        let rungs: Vec<_> = run.sender.rungs.iter().filter(|(at, _)| *at < run.origin + end).collect();
        let last_rung = rungs.last().copied();
        let by_height = |a: &&&(Instant, Rung), b: &&&(Instant, Rung)| a.1.height.cmp(&b.1.height);
        let name = |r: Option<&&(Instant, Rung)>| r.map_or("-".to_owned(), |r| r.1.name.to_owned());
        let in_run = |at: &Instant| *at >= run.origin && *at < run.origin + end;
        let sent: Vec<_> = run.sender.stats.iter().filter(|(at, _)| in_run(at)).collect();
        let sent_fps = match (sent.first(), sent.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                b.1.frames_sent.saturating_sub(a.1.frames_sent) as f64 / (b.0 - a.0).as_secs_f64()
            }
            _ => 0.0,
        };
        let decoded: Vec<Instant> = run.receiver.decoded.iter().map(|d| d.0).filter(in_run).collect();
        let mut gaps: Vec<Duration> = decoded.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.push(match decoded.last() {
            Some(last) => run.origin + end - *last,
            None => end,
        });
        let freezes: Vec<Duration> = gaps.into_iter().filter(|g| *g > FREEZE).collect();
        let mut audio: Vec<f64> =
            run.audio_delays.iter().filter(|(at, _)| in_run(at)).map(|(_, d)| ms(*d)).collect();
        audio.sort_by(f64::total_cmp);
        DirectionFigures {
            utilisation: delivered / run.capacity_bits(Duration::ZERO, end).max(1.0),
            delivered_mbps: delivered / end.as_secs_f64() / 1e6,
            queue_p50_ms: percentile(&queue, 0.50).unwrap_or(0.0),
            queue_p95_ms: percentile(&queue, 0.95).unwrap_or(0.0),
            queue_drop_percent: 100.0 * count(Fate::QueueFull) / offered,
            random_loss_percent: 100.0 * count(Fate::Lost) / offered,
            time_to_90,
            queue_above_100ms,
            rung_last: match last_rung {
                Some((_, rung)) => rung.name.to_owned(),
                None => format!("{} (start)", televisit_codecs::video::default_target().rung.name),
            },
            rung_range: (name(rungs.iter().min_by(by_height)), name(rungs.iter().max_by(by_height))),
            sent_fps,
            decoded_size: run.receiver.decoded.iter().rfind(|d| in_run(&d.0)).map(|d| (d.1, d.2)),
            decoded_size_mostly: mode(
                run.receiver.decoded.iter().filter(|d| in_run(&d.0)).map(|d| (d.1, d.2)),
            ),
            decoded_fps: decoded.len() as f64 / end.as_secs_f64(),
            freezes: freezes.len(),
            longest_freeze: freezes.iter().max().copied().unwrap_or_default(),
            audio_delay_p95_ms: percentile(&audio, 0.95),
        }
    }

    /// The figures as (metric, value) rows.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let list = |items: Vec<String>| if items.is_empty() { "-".to_owned() } else { items.join(", ") };
        vec![
            ("utilisation", format!("{:.0} %", 100.0 * self.utilisation)),
            ("delivered", format!("{:.2} Mbps", self.delivered_mbps)),
            ("queue delay p50 / p95", format!("{:.0} / {:.0} ms", self.queue_p50_ms, self.queue_p95_ms)),
            (
                "loss: queue + random",
                format!("{:.2} % + {:.2} %", self.queue_drop_percent, self.random_loss_percent),
            ),
            (
                "time to 90 % after rise at",
                list(
                    self.time_to_90
                        .iter()
                        .map(|(at, t)| format!("{}: {}", secs(*at), t.map_or("never".into(), secs)))
                        .collect(),
                ),
            ),
            (
                "queue > 100 ms after drop at",
                list(
                    self.queue_above_100ms
                        .iter()
                        .map(|(at, t)| format!("{}: {}", secs(*at), secs(*t)))
                        .collect(),
                ),
            ),
            (
                "rung sent: last (min..max)",
                format!("{} ({}..{})", self.rung_last, self.rung_range.0, self.rung_range.1),
            ),
            ("fps sent", format!("{:.1}", self.sent_fps)),
            (
                "decoded: last size (mostly), fps",
                format!(
                    "{} ({}), {:.1}",
                    size(self.decoded_size),
                    size(self.decoded_size_mostly),
                    self.decoded_fps
                ),
            ),
            ("freezes > 500 ms (longest)", format!("{} ({})", self.freezes, secs(self.longest_freeze))),
            ("audio delay p95", self.audio_delay_p95_ms.map_or("-".into(), |d| format!("{d:.0} ms"))),
        ]
    }
}

/// Prints `columns` (a heading and the figures of each direction) as a table, metrics as rows.
pub fn table(title: &str, columns: &[(String, &DirectionFigures)]) -> String {
    let rows: Vec<Vec<(&str, String)>> = columns.iter().map(|(_, f)| f.rows()).collect();
    let names: Vec<&str> = rows.first().map(|r| r.iter().map(|(n, _)| *n).collect()).unwrap_or_default();
    let first = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let widths: Vec<usize> = columns
        .iter()
        .zip(&rows)
        .map(|((h, _), r)| r.iter().map(|(_, v)| v.len()).chain([h.len()]).max().unwrap_or(0))
        .collect();
    let mut out = format!("\n## {title}\n\n| {:first$} |", "");
    for ((heading, _), w) in columns.iter().zip(&widths) {
        out += &format!(" {heading:w$} |");
    }
    out += &format!("\n|{}|", "-".repeat(first + 2));
    for w in &widths {
        out += &format!("{}|", "-".repeat(w + 2));
    }
    for (i, name) in names.iter().enumerate() {
        out += &format!("\n| {name:first$} |");
        for (r, w) in rows.iter().zip(&widths) {
            out += &format!(" {:w$} |", r[i].1);
        }
    }
    out + "\n"
}

fn size(size: Option<(u32, u32)>) -> String {
    size.map_or("-".into(), |(w, h)| format!("{w}x{h}"))
}

/// The most frequent value.
fn mode<T: Ord + Copy>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts = std::collections::BTreeMap::new();
    for value in values {
        *counts.entry(value).or_insert(0usize) += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(value, _)| value)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q` quantile (0..1) of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * q).round() as usize])
}
