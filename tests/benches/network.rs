//! Network benchmark: real two-party calls (real server, real peer connections, the core's
//! synthetic camera VP8-encoded live at the ladder's rung, an Opus tone) with the media path
//! through the link emulator (`televisit_tests::netem`), one call per scenario:
//!
//! - `rfc8867-variable-capacity`: RFC 8867 §5.1, 100 s: 1.0 → 2.5 → 0.6 → 1.0 Mbps at 0/40/60/80 s,
//!   50 ms one way, 300 ms drop-tail queue;
//! - `2mbps-1pct-loss`: 2 Mbps with 1 % random loss, 50 ms, 300 ms queue, 40 s;
//! - `1mbps-5pct-loss-30ms-jitter`: 1 Mbps, 5 % loss, 50 ± 30 ms, 300 ms queue, 40 s;
//! - `3s-outage`: 2 Mbps, 50 ms, 300 ms queue, nothing crosses from 20 s to 23 s, 40 s;
//! - `both-cameras`: 1.5 Mbps, 50 ms, 300 ms queue, both sides send video, 40 s.
//!
//! The link is the same both ways; only the doctor's camera is on except in `both-cameras`. Each
//! scenario prints a table (one column per direction that carries video) and writes a plot to
//! `target/network-bench/<scenario>.png` (`…-reverse.png` for the patient's video): capacity,
//! delivered rate, the sender's estimate and encoder bitrate above; the queue delay below.
//!
//! Run: `cargo bench -p televisit-tests --bench network [-- <name filter>...]`.
//! `NETWORK_BENCH_SECONDS=N` runs every scenario for N seconds instead (schedules scaled to fit);
//! `NETWORK_BENCH_FILTER=text` runs only the scenarios whose name contains `text`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use televisit_tests::netem::call::{CallSetup, EmulatedCall};
use televisit_tests::netem::plot::{Canvas, Colour, Panel};
use televisit_tests::netem::report::{table, DirectionFigures, DirectionRun};
use televisit_tests::netem::{LinkConfig, RelayConfig, Side};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// One benchmark scenario.
struct Scenario {
    name: &'static str,
    length: Duration,
    link: LinkConfig,
    patient_camera: bool,
}

fn scenarios() -> Vec<Scenario> {
    let base = |rate| LinkConfig::new(rate, 50 * MS);
    vec![
        Scenario {
            name: "rfc8867-variable-capacity",
            length: 100 * S,
            link: LinkConfig {
                schedule: vec![(40 * S, 2_500_000), (60 * S, 600_000), (80 * S, 1_000_000)],
                ..base(1_000_000)
            },
            patient_camera: false,
        },
        Scenario {
            name: "2mbps-1pct-loss",
            length: 40 * S,
            link: LinkConfig { loss: 0.01, ..base(2_000_000) },
            patient_camera: false,
        },
        Scenario {
            name: "1mbps-5pct-loss-30ms-jitter",
            length: 40 * S,
            link: LinkConfig { loss: 0.05, jitter: 30 * MS, ..base(1_000_000) },
            patient_camera: false,
        },
        Scenario {
            name: "3s-outage",
            length: 40 * S,
            link: LinkConfig { schedule: vec![(20 * S, 0), (23 * S, 2_000_000)], ..base(2_000_000) },
            patient_camera: false,
        },
        Scenario { name: "both-cameras", length: 40 * S, link: base(1_500_000), patient_camera: true },
    ]
}

fn main() {
    let seconds: Option<u64> = std::env::var("NETWORK_BENCH_SECONDS").ok().and_then(|s| s.parse().ok());
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .chain(std::env::var("NETWORK_BENCH_FILTER").ok())
        .collect();
    let out_dir = target_dir().join("network-bench");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for mut scenario in scenarios() {
        if !filters.is_empty() && !filters.iter().any(|f| scenario.name.contains(f.as_str())) {
            continue;
        }
        if let Some(seconds) = seconds {
            shorten(&mut scenario, Duration::from_secs(seconds));
        }
        runtime.block_on(run(&scenario, &out_dir));
    }
}

/// Runs the scenario for `length` with the schedule scaled to fit.
fn shorten(scenario: &mut Scenario, length: Duration) {
    let factor = length.as_secs_f64() / scenario.length.as_secs_f64();
    for (at, _) in &mut scenario.link.schedule {
        *at = at.mul_f64(factor);
    }
    scenario.length = length;
}

async fn run(scenario: &Scenario, out_dir: &Path) {
    let setup = CallSetup {
        link: RelayConfig::symmetric(scenario.link.clone()),
        doctor_camera: true,
        patient_camera: scenario.patient_camera,
    };
    let call = EmulatedCall::start(setup).await;
    tokio::time::sleep(scenario.length).await;
    call.finish().await;
    let origin = call.relay.origin();
    let (doctor, patient) = (call.doctor.log(), call.patient.log());
    let mut directions = vec![("doctor → patient", Side::B, &doctor, &patient, "")];
    if scenario.patient_camera {
        directions.push(("patient → doctor", Side::A, &patient, &doctor, "-reverse"));
    }
    let mut columns = Vec::new();
    for (heading, to, sender, receiver, suffix) in directions {
        let link = call.relay.report(to);
        let audio = call.relay.audio_delays(to);
        let run = DirectionRun {
            origin,
            duration: scenario.length,
            link: &link,
            sender,
            receiver,
            audio_delays: &audio,
        };
        let figures = DirectionFigures::compute(&run);
        let path = out_dir.join(format!("{}{suffix}.png", scenario.name));
        let plot_title = format!("{} {}", scenario.name, heading.replace('→', "TO"));
        match plot(&run, &plot_title, &path) {
            Ok(()) => eprintln!("plot: {}", path.display()),
            Err(error) => eprintln!("cannot write {}: {error}", path.display()),
        }
        eprintln!(
            "{heading}: {} packets offered to the link, {} undeliverable, {} decode errors, {} keyframes asked of the sender",
            link.records.len(),
            link.undeliverable,
            receiver.decode_errors,
            sender.keyframes_requested
        );
        columns.push((heading.to_owned(), figures));
    }
    let columns: Vec<(String, &DirectionFigures)> = columns.iter().map(|(h, f)| (h.clone(), f)).collect();
    println!("{}", table(&format!("{} ({} s)", scenario.name, scenario.length.as_secs()), &columns));
}

/// Capacity, delivered rate (500 ms windows), the sender's estimate and encoder bitrate (Mbps);
/// below, the queue delay (ms, the largest in each 100 ms).
fn plot(run: &DirectionRun, title: &str, path: &Path) -> std::io::Result<()> {
    let secs = run.duration.as_secs_f64();
    let x_step = if secs > 60.0 { 10.0 } else { 5.0 };
    let rates = run.rates(500 * MS);
    let estimates = run.estimates();
    let encoder: Vec<(f64, f64)> = run
        .sender
        .encoder_bitrates
        .iter()
        .filter(|(at, _)| *at >= run.origin)
        .map(|(at, bps)| ((*at - run.origin).as_secs_f64(), *bps as f64 / 1e6))
        .collect();
    let mbps_max =
        rates.iter().map(|r| r.1.max(r.2)).chain(estimates.iter().map(|e| e.1)).fold(0.0, f64::max) / 1e6;
    let y_max = (mbps_max * 1.15).ceil().max(1.0);
    let mut canvas = Canvas::new(1100, 700);
    let top = Panel { left: 80, top: 60, width: 980, height: 380, x_max: secs, y_max };
    canvas.axes(top, &format!("{title}: MBPS"), 5, x_step);
    let capacity: Vec<(f64, f64)> = (0..=(secs * 10.0) as u64)
        .map(|i| {
            let t = i as f64 / 10.0;
            (t, run.link.config.rate_at(Duration::from_secs_f64(t)) as f64 / 1e6)
        })
        .collect();
    canvas.series(top, &capacity, Colour::Black, true);
    let delivered: Vec<(f64, f64)> =
        rates.iter().map(|(t, d, _)| (t.as_secs_f64() - 0.25, d / 1e6)).collect();
    canvas.series(top, &delivered, Colour::Blue, false);
    let estimate: Vec<(f64, f64)> = estimates.iter().map(|(t, e)| (t.as_secs_f64(), e / 1e6)).collect();
    canvas.series(top, &estimate, Colour::Red, false);
    canvas.series(top, &encoder, Colour::Orange, true);
    for (i, (label, colour)) in [
        ("CAPACITY", Colour::Black),
        ("DELIVERED", Colour::Blue),
        ("ESTIMATE", Colour::Red),
        ("ENCODER", Colour::Orange),
        ("QUEUE DELAY (MS) BELOW", Colour::Green),
    ]
    .into_iter()
    .enumerate()
    {
        canvas.text((90 + 150 * i as i64, 24), label, colour, 2);
    }
    let delays = run.queue_delays();
    let bins = (secs * 10.0) as usize;
    let mut worst = vec![0.0f64; bins + 1];
    for (at, delay) in &delays {
        let bin = (at.as_secs_f64() * 10.0) as usize;
        if bin <= bins {
            worst[bin] = worst[bin].max(delay.as_secs_f64() * 1000.0);
        }
    }
    let q_max = (worst.iter().fold(0.0f64, |a, b| a.max(*b)) / 100.0).ceil().max(1.0) * 100.0;
    let bottom = Panel { left: 80, top: 500, width: 980, height: 160, x_max: secs, y_max: q_max };
    canvas.axes(bottom, "QUEUE DELAY MS (S SINCE CONNECTED)", 4, x_step);
    let queue: Vec<(f64, f64)> = worst.iter().enumerate().map(|(i, d)| (i as f64 / 10.0, *d)).collect();
    canvas.series(bottom, &queue, Colour::Green, false);
    canvas.save_png(path)
}

/// The target directory this benchmark was built in (`target/release/deps/network-…`).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}
