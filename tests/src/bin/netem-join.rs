//! `netem-join <join link> [--seconds 30] [--rate-kbps 1000] [--delay-ms 50] [--jitter-ms 0]
//! [--loss-percent 0] [--queue-ms 300] [--no-camera]`: joins a call like `televisit join` (the
//! synthetic camera VP8-encoded at the ladder's rung, an Opus tone; decodes what arrives) with its
//! media path through the link emulator, the same link both ways, for a peer that cannot be
//! wrapped, such as a browser in the web suite.
//!
//! How: the relay's front A is advertised as this side's address and the peer's own candidates are
//! hidden from this side's ICE agent ([`Relay::media_with_plain_peer`]), so the peer's packets reach
//! us only through the relay. Everything listens on 127.0.0.1: the peer must be on this machine
//! (Chromium needs `--allow-loopback-in-peer-connection` to use loopback candidates). Prints a line
//! a second and, at the end, the figures of both directions.

use std::time::Duration;

use televisit_core::call::machine::CallState;
use televisit_tests::netem::call::{Participant, ParticipantLog};
use televisit_tests::netem::report::{table, DirectionFigures, DirectionRun};
use televisit_tests::netem::{Fate, LinkConfig, Relay, RelayConfig, Side};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut link = None;
    let (mut seconds, mut camera) = (30u64, true);
    let mut config = LinkConfig::new(1_000_000, Duration::from_millis(50));
    while let Some(arg) = args.next() {
        let mut value = || -> f64 {
            let v = args.next().and_then(|v| v.parse().ok());
            v.unwrap_or_else(|| usage(&format!("{arg} needs a number")))
        };
        match arg.as_str() {
            "--seconds" => seconds = value() as u64,
            "--rate-kbps" => config.rate_bps = (value() * 1000.0) as u64,
            "--delay-ms" => config.one_way_delay = Duration::from_secs_f64(value() / 1000.0),
            "--jitter-ms" => config.jitter = Duration::from_secs_f64(value() / 1000.0),
            "--loss-percent" => config.loss = value() / 100.0,
            "--queue-ms" => config.queue_limit = Duration::from_secs_f64(value() / 1000.0),
            "--no-camera" => camera = false,
            _ if link.is_none() && !arg.starts_with("--") => link = Some(arg),
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    let link = link.unwrap_or_else(|| usage("a join link is needed"));
    televisit_tests::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let relay = Relay::start(RelayConfig::symmetric(config)).await.expect("relay binds on loopback");
        let me = Participant::join_with(&link, camera, |webrtc| relay.media_with_plain_peer(Side::A, webrtc));
        me.wait_for_state(CallState::Connected, Duration::from_secs(120)).await;
        relay.restart_schedule();
        println!("connected; the link's schedule starts now");
        for second in 1..=seconds {
            tokio::time::sleep_until((relay.origin() + Duration::from_secs(second)).into()).await;
            let window = Duration::from_secs(second - 1)..Duration::from_secs(second);
            let kbps = |to: Side| {
                let bits: usize = relay
                    .report(to)
                    .records
                    .iter()
                    .filter(|r| matches!(r.fate, Fate::Sent { departed, .. } if window.contains(&departed)))
                    .map(|r| r.len * 8)
                    .sum();
                bits / 1000
            };
            let log = me.log();
            println!(
                "{second:>4} s: to the peer {} kbps, from the peer {} kbps, pictures decoded {}",
                kbps(Side::B),
                kbps(Side::A),
                log.decoded.len()
            );
        }
        if let Some(client) = me.client() {
            client.hang_up();
        }
        me.close();
        let (mine, nobody) = (me.log(), ParticipantLog::default());
        let mut columns = Vec::new();
        for (heading, to, sender, receiver) in
            [("to the peer", Side::B, &mine, &nobody), ("from the peer", Side::A, &nobody, &mine)]
        {
            let report = relay.report(to);
            let audio = relay.audio_delays(to);
            let run = DirectionRun {
                origin: relay.origin(),
                duration: Duration::from_secs(seconds),
                link: &report,
                sender,
                receiver,
                audio_delays: &audio,
            };
            columns.push((heading.to_owned(), DirectionFigures::compute(&run)));
        }
        let columns: Vec<_> = columns.iter().map(|(h, f)| (h.clone(), f)).collect();
        println!("{}", table("netem-join", &columns));
        println!("(the peer's decoding is not visible here: the decoded and freeze rows of \"to the peer\" are empty)");
    });
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: netem-join <join link> [--seconds 30] [--rate-kbps 1000] [--delay-ms 50] [--jitter-ms 0] [--loss-percent 0] [--queue-ms 300] [--no-camera]");
    std::process::exit(2)
}
