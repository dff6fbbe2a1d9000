//! `televisit`: the server's command line (`serve`, `demo`, `migrate`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use televisit_server::secrets::Clock;
use televisit_server::{demo, AppState, Config, RunningServer, Settings};

/// jemalloc's background threads give memory freed when calls end back to the system within
/// seconds; glibc's malloc keeps most of it (tests/benches/signaling_hub.rs, steady).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Televisit: video visits between doctors and patients.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Settings file (TOML); flags and TELEVISIT_* variables override it.
    #[arg(long, global = true, env = "TELEVISIT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Also create a demo visit and print how to open it; runs the embedded TURN server unless
        /// TURN is configured.
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        settings: Settings,
    },
    /// Create a demo visit (doctor, patient, appointment, started call) and print its links.
    Demo {
        #[command(flatten)]
        settings: Settings,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        settings: Settings,
    },
    /// Join a call from this terminal with a synthetic camera and microphone (exit 0: the call
    /// ended or the time was up; 2: the link was refused; 1: another failure).
    #[cfg(feature = "join")]
    Join {
        /// The join link (quote it: it contains `#`).
        link: String,
        /// Leave (or end, as the doctor) after this many seconds in the call.
        #[arg(long)]
        seconds: Option<u64>,
        /// Save the received video frames to this IVF file.
        #[arg(long)]
        save_video: Option<PathBuf>,
        /// Send this chat message once connected.
        #[arg(long)]
        chat: Option<String>,
        /// Mute the microphone this many seconds after connecting.
        #[arg(long)]
        mute_after_seconds: Option<u64>,
        /// As the doctor, share a synthetic screen (the test pattern, 720p, 5 frames/s) this many
        /// seconds after connecting.
        #[arg(long)]
        share_screen_after_seconds: Option<u64>,
        /// Local UDP address for ICE (repeatable) [default: 0.0.0.0:0].
        #[arg(long)]
        udp: Vec<String>,
        /// Connect through the clinic's TURN relay only, so the peer never sees this machine's IP
        /// address.
        #[arg(long)]
        relay_only: bool,
        /// Signaling transport: `auto` (the WebSocket, or the HTTP fallback behind a proxy that
        /// strips it), `websocket` or `http`.
        #[arg(long, default_value = "auto", value_parser = ["auto", "websocket", "http"])]
        signaling: String,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TELEVISIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn resolve(file: Option<&PathBuf>, settings: Settings, demo: bool) -> Result<Config, String> {
    let from_file = match file {
        Some(path) => Settings::from_toml_file(path)?,
        None => Settings::default(),
    };
    let settings = settings.over(from_file);
    Config::resolve(if demo { settings.with_demo_turn() } else { settings })
}

fn print_demo(demo: &demo::Demo, base: &str) {
    println!();
    println!("  Televisit demo visit");
    println!("  --------------------");
    println!("  Doctor sign-in:  {base}/medical/login");
    println!("      e-mail:      {}", demo.email);
    println!("      password:    {}", demo.password);
    println!("  Doctor's link:   {}", demo.doctor_link);
    println!("  Patient's link:  {}", demo.patient_link);
    println!("  Device test:     {base}/medical/video-call/test-devices/");
    println!();
    println!("  Open the two links in two browser windows (or `televisit join <link>` for one side).");
    println!();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { demo, settings } => serve(cli.config.as_ref(), settings, demo).await,
        Command::Demo { settings } => {
            async {
                let config = resolve(cli.config.as_ref(), settings, false)?;
                init_logging(&config.log_format);
                let base = config.public_url.clone();
                let state = AppState::new(config, Clock::default()).await.map_err(|e| e.to_string())?;
                let demo = demo::create(&state).await.map_err(|e| e.message)?;
                print_demo(&demo, &base);
                state.store.close().await;
                Ok(())
            }
            .await
        }
        #[cfg(feature = "join")]
        Command::Join {
            link,
            seconds,
            save_video,
            chat,
            mute_after_seconds,
            share_screen_after_seconds,
            udp,
            relay_only,
            signaling,
        } => {
            use televisit_core::call::transport::SignalingTransport;
            use televisit_join as headless;
            let options = headless::HeadlessOptions {
                link,
                duration: seconds.map(std::time::Duration::from_secs),
                save_video,
                chat,
                mute_after: mute_after_seconds.map(std::time::Duration::from_secs),
                share_screen_after: share_screen_after_seconds.map(std::time::Duration::from_secs),
                udp_addrs: udp,
                relay_only,
                signaling_transport: match signaling.as_str() {
                    "websocket" => SignalingTransport::WebSocketOnly,
                    "http" => SignalingTransport::HttpOnly,
                    _ => SignalingTransport::Auto,
                },
                network_changes_on_stdin: false,
            };
            let outcome = tokio::task::spawn_blocking(move || headless::run(options, &mut std::io::stdout()))
                .await
                .unwrap_or(Err(televisit_core::error::CallError::Closed));
            if let Err(error) = &outcome {
                eprintln!("televisit join: {error}");
            }
            return std::process::ExitCode::from(headless::exit_code(&outcome) as u8);
        }
        Command::Migrate { settings } => {
            async {
                let config = resolve(cli.config.as_ref(), settings, false)?;
                init_logging(&config.log_format);
                let state = AppState::new(config, Clock::default()).await.map_err(|e| e.to_string())?;
                state.store.close().await;
                tracing::info!("migrations applied");
                Ok(())
            }
            .await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("televisit: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(file: Option<&PathBuf>, settings: Settings, with_demo: bool) -> Result<(), String> {
    let config = resolve(file, settings, with_demo)?;
    init_logging(&config.log_format);
    if config.clinic_api_key.is_none() {
        tracing::info!("clinic API closed: no --clinic-api-key set");
    }
    let server = RunningServer::start(config, Clock::default()).await.map_err(|e| e.to_string())?;
    let base = server.state.config.public_url.clone();
    if with_demo {
        let demo = demo::create(&server.state).await.map_err(|e| e.message)?;
        print_demo(&demo, &base);
    }
    tracing::info!(address = %server.addr, "Televisit is serving; doctors sign in at {base}/medical/login");
    server.wait().await.map_err(|e| e.to_string())
}
