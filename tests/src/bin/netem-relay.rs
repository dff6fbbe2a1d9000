//! `netem-relay [--rate-kbps 1000] [--delay-ms 50] [--jitter-ms 0] [--loss-percent 0]
//! [--queue-ms 300]`: the link emulator's UDP relay on its own, for two peers that cannot be
//! wrapped (two browser pages in the web suite), the same link both ways.
//!
//! The first output line is `fronts <A> <B>`: the addresses the relay advertises as A's and B's.
//! The peers must learn each other only as those fronts (A's peer candidates replaced by `<B>`,
//! B's by `<A>`); the relay learns each peer's real address from its first packet. Everything
//! listens on 127.0.0.1 (Chromium needs `--allow-loopback-in-peer-connection`).
//!
//! On stdin: `start` restarts the links' schedule and clock (e.g. once the call connects) and
//! answers `started`; `stop` or the end of stdin prints, per direction, a `direction` line with
//! the figures since the start, then exits. Meanwhile a line a second says what each direction
//! delivered.

use std::io::BufRead;
use std::time::Duration;

use televisit_tests::netem::{Fate, LinkConfig, Relay, RelayConfig, Side};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut config = LinkConfig::new(1_000_000, Duration::from_millis(50));
    while let Some(arg) = args.next() {
        let mut value = || -> f64 {
            let v = args.next().and_then(|v| v.parse().ok());
            v.unwrap_or_else(|| usage(&format!("{arg} needs a number")))
        };
        match arg.as_str() {
            "--rate-kbps" => config.rate_bps = (value() * 1000.0) as u64,
            "--delay-ms" => config.one_way_delay = Duration::from_secs_f64(value() / 1000.0),
            "--jitter-ms" => config.jitter = Duration::from_secs_f64(value() / 1000.0),
            "--loss-percent" => config.loss = value() / 100.0,
            "--queue-ms" => config.queue_limit = Duration::from_secs_f64(value() / 1000.0),
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async move {
        let relay = std::sync::Arc::new(Relay::start(RelayConfig::symmetric(config)).await.expect("relay binds"));
        println!("fronts {} {}", relay.front(Side::A), relay.front(Side::B));
        let (commands, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                let _ = commands.send(line.trim().to_owned());
            }
        });
        let ticker = tokio::spawn({
            let relay = relay.clone();
            async move {
                let mut second = 0u64;
                loop {
                    second += 1;
                    let origin = relay.origin();
                    tokio::time::sleep_until((origin + Duration::from_secs(second)).into()).await;
                    if relay.origin() != origin {
                        second = 0;
                        continue;
                    }
                    let window = Duration::from_secs(second - 1)..Duration::from_secs(second);
                    let kbps = |to: Side| sent_bits(&relay, to, &window) / 1000;
                    println!("{second:>4} s: A→B {} kbps, B→A {} kbps", kbps(Side::B), kbps(Side::A));
                }
            }
        });
        while let Some(line) = lines.recv().await {
            match line.as_str() {
                "start" => {
                    relay.restart_schedule();
                    println!("started");
                }
                "stop" => break,
                _ => eprintln!("unknown command {line:?}"),
            }
        }
        ticker.abort();
        let elapsed = relay.origin().elapsed();
        for (name, to) in [("A→B", Side::B), ("B→A", Side::A)] {
            let report = relay.report(to);
            let since_start: Vec<_> = report.records.iter().filter(|r| r.arrived > Duration::ZERO).collect();
            let count = |f: fn(&Fate) -> bool| since_start.iter().filter(|r| f(&r.fate)).count();
            let sent = count(|f| matches!(f, Fate::Sent { .. }));
            let lost = count(|f| matches!(f, Fate::Lost));
            let queue_full = count(|f| matches!(f, Fate::QueueFull));
            let bits = sent_bits(&relay, to, &(Duration::ZERO..elapsed));
            let mut delays: Vec<f64> = since_start
                .iter()
                .filter_map(|r| match r.fate {
                    Fate::Sent { queue_delay, .. } => Some(queue_delay.as_secs_f64() * 1000.0),
                    _ => None,
                })
                .collect();
            delays.sort_by(f64::total_cmp);
            let median = delays.get(delays.len() / 2).copied().unwrap_or(0.0);
            println!(
                "direction {name}: seconds {:.1}, delivered {} kbps, packets offered {}, sent {sent}, lost {lost}, queue-full {queue_full}, median queue delay {median:.0} ms, undeliverable {}",
                elapsed.as_secs_f64(),
                (bits as f64 / elapsed.as_secs_f64().max(0.001) / 1000.0).round(),
                since_start.len(),
                report.undeliverable
            );
        }
    });
}

/// Bits that left the bottleneck toward `to` within `window` (times since the schedule's start).
fn sent_bits(relay: &Relay, to: Side, window: &std::ops::Range<Duration>) -> usize {
    relay
        .report(to)
        .records
        .iter()
        .filter(|r| matches!(r.fate, Fate::Sent { departed, .. } if window.contains(&departed)))
        .map(|r| r.len * 8)
        .sum()
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: netem-relay [--rate-kbps 1000] [--delay-ms 50] [--jitter-ms 0] [--loss-percent 0] [--queue-ms 300]");
    std::process::exit(2)
}
