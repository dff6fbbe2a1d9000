//! `call-join <join link> [--seconds N] [--udp ADDR]... [--network-changes-on-stdin]`: the headless
//! call client of `televisit join` (synthetic camera and microphone, decodes what arrives, one line
//! per event and a summary), built in this crate so its tests can run it as a process, e.g. inside
//! a network namespace. With `--network-changes-on-stdin`, a `network-changed` line on standard
//! input tells the client its network changed (an ICE restart). With `TELEVISIT_LOG` set (an
//! `EnvFilter`, e.g. `televisit_core=debug`), it logs to standard error.

use std::time::Duration;

use televisit_join::{exit_code, run, HeadlessOptions};

fn main() -> std::process::ExitCode {
    let mut options = HeadlessOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let seconds = args.next().and_then(|s| s.parse().ok()).expect("--seconds takes a number");
                options.duration = Some(Duration::from_secs(seconds));
            }
            "--network-changes-on-stdin" => options.network_changes_on_stdin = true,
            "--udp" => options.udp_addrs.push(args.next().expect("--udp takes an address")),
            _ if options.link.is_empty() && !arg.starts_with("--") => options.link = arg,
            _ => {
                eprintln!("call-join: unknown argument {arg}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("TELEVISIT_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    televisit_tests::install_crypto_provider();
    let outcome = run(options, &mut std::io::stdout());
    if let Err(error) = &outcome {
        eprintln!("call-join: {error}");
    }
    std::process::ExitCode::from(exit_code(&outcome) as u8)
}
