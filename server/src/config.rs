//! Server settings: defaults, an optional TOML file, `TELEVISIT_*` environment variables and flags,
//! in rising order of precedence. The defaults are safe: loopback only, no clinic API without a key,
//! no TURN without a secret.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use crate::retention::Retention;
use crate::turn::{StreamLimits, TlsListen, TurnConfig};

/// Every setting, each optional so that the sources can be layered. One field here is one flag
/// (`--token-ttl-seconds`), one environment variable (`TELEVISIT_TOKEN_TTL_SECONDS`) and one TOML
/// key (`token_ttl_seconds`).
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TELEVISIT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Database URL [default: sqlite://televisit.db].
    #[arg(long, env = "TELEVISIT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL for multi-node signaling (`redis://host:6379`); without it signaling stays in
    /// this process [default: none].
    #[arg(long, env = "TELEVISIT_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Public base URL used in join links [default: http://<listen>].
    #[arg(long, env = "TELEVISIT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Call token lifetime in seconds [default: 86400].
    #[arg(long, env = "TELEVISIT_TOKEN_TTL_SECONDS")]
    pub token_ttl_seconds: Option<u64>,
    /// Origins allowed to open the WebSocket and post forms (comma-separated) [default: the public URL's].
    #[arg(long, env = "TELEVISIT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// STUN server URLs (comma-separated) [default: none].
    #[arg(long, env = "TELEVISIT_STUN_URLS", value_delimiter = ',')]
    pub stun_urls: Option<Vec<String>>,
    /// TURN server URLs (comma-separated) [default: none].
    #[arg(long, env = "TELEVISIT_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Option<Vec<String>>,
    /// Shared secret of the TURN server's REST API (coturn `static-auth-secret`).
    #[arg(long, env = "TELEVISIT_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Lifetime of TURN credentials in seconds [default: 3600].
    #[arg(long, env = "TELEVISIT_TURN_TTL_SECONDS")]
    pub turn_ttl_seconds: Option<u64>,
    /// Run the embedded TURN server on this address, UDP and TCP (e.g. 0.0.0.0:3478); its
    /// `turn:` URLs are then advertised with any --turn-urls [default: off; with `serve --demo`,
    /// the listen address's IP and port 3478].
    #[arg(long, env = "TELEVISIT_TURN_LISTEN")]
    pub turn_listen: Option<SocketAddr>,
    /// The embedded TURN server's address as clients reach it (relayed candidates, URLs)
    /// [default: the IP of --turn-listen, which must then not be 0.0.0.0].
    #[arg(long, env = "TELEVISIT_TURN_EXTERNAL_IP")]
    pub turn_external_ip: Option<IpAddr>,
    /// Relayed UDP ports of the embedded TURN server, `low-high` [default: 49152-65535].
    #[arg(long, env = "TELEVISIT_TURN_RELAY_PORTS")]
    pub turn_relay_ports: Option<String>,
    /// Realm of the embedded TURN server [default: televisit].
    #[arg(long, env = "TELEVISIT_TURN_REALM")]
    pub turn_realm: Option<String>,
    /// Also accept TURN over TLS on this address (e.g. 0.0.0.0:443); needs --turn-tls-cert/-key.
    #[arg(long, env = "TELEVISIT_TURN_TLS_LISTEN")]
    pub turn_tls_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) of TURN over TLS.
    #[arg(long, env = "TELEVISIT_TURN_TLS_CERT")]
    pub turn_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of TURN over TLS.
    #[arg(long, env = "TELEVISIT_TURN_TLS_KEY")]
    pub turn_tls_key: Option<PathBuf>,
    /// Seconds a TCP/TLS connection to the embedded TURN server has to get an allocation before
    /// it is closed [default: 10].
    #[arg(long, env = "TELEVISIT_TURN_ALLOCATE_TIMEOUT_SECONDS")]
    pub turn_allocate_timeout_seconds: Option<u64>,
    /// Host name in the advertised `turns:` URL, which the certificate names [default: the
    /// external IP].
    #[arg(long, env = "TELEVISIT_TURN_TLS_HOST")]
    pub turn_tls_host: Option<String>,
    /// Patients always connect through TURN (relay-only), so the doctor's device never learns
    /// their IP address [default: false].
    #[arg(long, env = "TELEVISIT_PATIENTS_RELAY_ONLY", num_args = 0..=1, default_missing_value = "true")]
    pub patients_relay_only: Option<bool>,
    /// API key of the clinic integration API; without one the API is closed.
    #[arg(long, env = "TELEVISIT_CLINIC_API_KEY", hide_env_values = true)]
    pub clinic_api_key: Option<String>,
    /// Seconds without any frame before a signaling connection is closed [default: 45].
    #[arg(long, env = "TELEVISIT_IDLE_TIMEOUT_SECONDS")]
    pub idle_timeout_seconds: Option<u64>,
    /// Seconds a dropped participant has to come back before the peer hears it left [default: 5].
    #[arg(long, env = "TELEVISIT_RECONNECT_GRACE_SECONDS")]
    pub reconnect_grace_seconds: Option<u64>,
    /// Seconds between the server's WebSocket pings [default: 15].
    #[arg(long, env = "TELEVISIT_KEEPALIVE_SECONDS")]
    pub keepalive_seconds: Option<u64>,
    /// Sustained signaling frames per second per connection [default: 50].
    #[arg(long, env = "TELEVISIT_FRAMES_PER_SECOND")]
    pub frames_per_second: Option<u32>,
    /// Burst of signaling frames per connection [default: 200].
    #[arg(long, env = "TELEVISIT_FRAME_BURST")]
    pub frame_burst: Option<u32>,
    /// Serve the web pages from this folder instead of the copy built into the binary (for
    /// working on the pages) [default: the built-in pages].
    #[arg(long, env = "TELEVISIT_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Seconds a connection has to send a complete request head [default: 10].
    #[arg(long, env = "TELEVISIT_HEADER_READ_TIMEOUT_SECONDS")]
    pub header_read_timeout_seconds: Option<u64>,
    /// Seconds without a byte either way before an HTTP connection is closed [default: 60].
    #[arg(long, env = "TELEVISIT_HTTP_IDLE_TIMEOUT_SECONDS")]
    pub http_idle_timeout_seconds: Option<u64>,
    /// Open connections allowed from one client address, over HTTP and (counted apart) over the
    /// embedded TURN's TCP/TLS [default: 256].
    #[arg(long, env = "TELEVISIT_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Open connections allowed in all, HTTP and TURN each; keep it below the process's file descriptor limit
    /// (`ulimit -n`) [default: 4096].
    #[arg(long, env = "TELEVISIT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Addresses of reverse proxies whose `X-Forwarded-For` names the client (comma-separated)
    /// [default: none, the header is ignored].
    #[arg(long, env = "TELEVISIT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// Failed sign-ins allowed per client address per minute before 429 [default: 10].
    #[arg(long, env = "TELEVISIT_FAILED_SIGN_INS_PER_MINUTE")]
    pub failed_sign_ins_per_minute: Option<u32>,
    /// Failed call tokens, doctor app tokens and clinic keys allowed per client address per
    /// minute before 429 [default: 30].
    #[arg(long, env = "TELEVISIT_FAILED_TOKENS_PER_MINUTE")]
    pub failed_tokens_per_minute: Option<u32>,
    /// Refusal rows written to the audit log per client address per minute; the rest are counted
    /// in the next row [default: 30].
    #[arg(long, env = "TELEVISIT_AUDIT_REFUSALS_PER_MINUTE")]
    pub audit_refusals_per_minute: Option<u32>,
    /// Bearer key of `GET /metrics`; without one /metrics answers 401 [default: none].
    #[arg(long, env = "TELEVISIT_METRICS_KEY", hide_env_values = true)]
    pub metrics_key: Option<String>,
    /// Serve `GET /metrics` on this separate address (e.g. an internal interface) instead of the
    /// main one; it needs --metrics-key only if one is set [default: the main address].
    #[arg(long, env = "TELEVISIT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Certificate chain (PEM): serve HTTPS (with HSTS) instead of HTTP; needs --tls-key.
    #[arg(long, env = "TELEVISIT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "TELEVISIT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Doctor web session lifetime in hours [default: 12].
    #[arg(long, env = "TELEVISIT_SESSION_TTL_HOURS")]
    pub session_ttl_hours: Option<u64>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "TELEVISIT_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Days the chat of an ended visit is kept; 0 keeps it for good [default: 30].
    #[arg(long, env = "TELEVISIT_CHAT_RETENTION_DAYS")]
    pub chat_retention_days: Option<u32>,
    /// Days an expired or revoked join link's record is kept (until then it is answered
    /// "expired", then "invalid") [default: 30].
    #[arg(long, env = "TELEVISIT_TOKEN_RETENTION_DAYS")]
    pub token_retention_days: Option<u32>,
    /// Days an audit entry is kept; 0 keeps it for good [default: 365].
    #[arg(long, env = "TELEVISIT_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    /// The clinic's name as patients know it, shown with its contact on the call page's error
    /// screens [default: "Your clinic"].
    #[arg(long, env = "TELEVISIT_CLINIC_NAME")]
    pub clinic_name: Option<String>,
    /// The clinic's phone number for patients whose link does not work [default: +1 555 0100, a
    /// fictional number: set yours].
    #[arg(long, env = "TELEVISIT_CLINIC_PHONE")]
    pub clinic_phone: Option<String>,
    /// The clinic's e-mail address for patients [default: help@clinic.example, a reserved
    /// domain that reaches nobody: set yours].
    #[arg(long, env = "TELEVISIT_CLINIC_EMAIL")]
    pub clinic_email: Option<String>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default cap on open connections from one client address (HTTP, and TURN over TCP/TLS).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// Default cap on open connections in all (HTTP, and TURN over TCP/TLS, each).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

macro_rules! layer {
    ($high:expr, $low:expr, $($field:ident),*) => {
        Settings { $($field: $high.$field.or($low.$field)),* }
    };
}

impl Settings {
    /// Reads a TOML settings file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Settings, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid settings file {}: {e}", path.display()))
    }

    /// `serve --demo`: the embedded TURN server on the listen address's IP, port 3478, unless
    /// TURN is configured.
    pub fn with_demo_turn(mut self) -> Settings {
        if self.turn_listen.is_none() && self.turn_urls.is_none() {
            let listen = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid"));
            self.turn_listen = Some(SocketAddr::new(listen.ip(), 3478));
        }
        self
    }

    /// These settings, with `lower`'s filling the gaps.
    pub fn over(self, lower: Settings) -> Settings {
        layer!(
            self,
            lower,
            listen,
            database_url,
            redis_url,
            public_url,
            token_ttl_seconds,
            allowed_origins,
            stun_urls,
            turn_urls,
            turn_secret,
            turn_ttl_seconds,
            turn_listen,
            turn_external_ip,
            turn_relay_ports,
            turn_realm,
            turn_tls_listen,
            turn_tls_cert,
            turn_tls_key,
            turn_tls_host,
            turn_allocate_timeout_seconds,
            patients_relay_only,
            clinic_api_key,
            idle_timeout_seconds,
            reconnect_grace_seconds,
            keepalive_seconds,
            frames_per_second,
            frame_burst,
            web_dir,
            header_read_timeout_seconds,
            http_idle_timeout_seconds,
            max_connections_per_address,
            max_connections,
            trusted_proxies,
            failed_sign_ins_per_minute,
            failed_tokens_per_minute,
            audit_refusals_per_minute,
            metrics_key,
            metrics_listen,
            tls_cert,
            tls_key,
            session_ttl_hours,
            log_format,
            chat_retention_days,
            token_retention_days,
            audit_retention_days,
            clinic_name,
            clinic_phone,
            clinic_email
        )
    }
}

/// How patients reach the clinic when a link does not work.
#[derive(Debug, Clone)]
pub struct ClinicContact {
    /// The clinic's name.
    pub name: String,
    /// Its phone number as written for people.
    pub phone: String,
    /// Its e-mail address.
    pub email: String,
}

/// The resolved configuration the server runs with.
#[derive(Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Redis for multi-node signaling; `None`: signaling state stays in this process.
    pub redis_url: Option<String>,
    /// Public base URL (no trailing slash), used in join links.
    pub public_url: String,
    /// Call token lifetime.
    pub token_ttl_seconds: u64,
    /// Origins allowed for the WebSocket and form posts.
    pub allowed_origins: Vec<String>,
    /// STUN URLs.
    pub stun_urls: Vec<String>,
    /// TURN URLs.
    pub turn_urls: Vec<String>,
    /// TURN REST shared secret.
    pub turn_secret: Option<String>,
    /// TURN credential lifetime.
    pub turn_ttl_seconds: u64,
    /// The embedded TURN server, if it runs (its URLs join `turn_urls` once it is bound).
    pub embedded_turn: Option<TurnConfig>,
    /// Patients connect relay-only (the join and ice-servers replies say so).
    pub patients_relay_only: bool,
    /// Clinic API key.
    pub clinic_api_key: Option<String>,
    /// Idle timeout of a signaling connection.
    pub idle_timeout_seconds: u64,
    /// Grace period of a dropped participant.
    pub reconnect_grace_seconds: u64,
    /// How long a dropped participant's frames are kept for resumption: as long as the core
    /// keeps trying to reconnect (`SIGNALING_GIVE_UP_MS`, 60 s); shorter only in tests.
    pub resume_window_seconds: u64,
    /// Interval of the server's WebSocket pings.
    pub keepalive_seconds: u64,
    /// Sustained frames per second per connection.
    pub frames_per_second: u32,
    /// Frame burst per connection.
    pub frame_burst: u32,
    /// Web pages folder; `None`: the pages built into the binary.
    pub web_dir: Option<PathBuf>,
    /// Time to send a complete request head.
    pub header_read_timeout_seconds: u64,
    /// Time without a byte either way before an HTTP connection closes.
    pub http_idle_timeout_seconds: u64,
    /// Open connections per client address.
    pub max_connections_per_address: usize,
    /// Open connections in all.
    pub max_connections: usize,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Failed sign-ins per address per minute before 429.
    pub failed_sign_ins_per_minute: u32,
    /// Failed call tokens per address per minute before 429.
    pub failed_tokens_per_minute: u32,
    /// Refusal audit rows per address per minute.
    pub audit_refusals_per_minute: u32,
    /// Bearer key of /metrics.
    pub metrics_key: Option<String>,
    /// Separate address of /metrics (then not served on the main one).
    pub metrics_listen: Option<SocketAddr>,
    /// HTTPS certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Doctor web session lifetime.
    pub session_ttl_hours: u64,
    /// Secure cookies (when the public URL is https).
    pub secure_cookies: bool,
    /// `text` or `json`.
    pub log_format: String,
    /// How long chat, tokens, sessions and audit entries are kept.
    pub retention: Retention,
    /// How patients reach the clinic (shown on the call page's error screens).
    pub clinic_contact: ClinicContact,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are shown only as present/absent.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &without_password(&self.database_url))
            .field("redis_url", &self.redis_url.as_deref().map(without_password))
            .field("public_url", &self.public_url)
            .field("token_ttl_seconds", &self.token_ttl_seconds)
            .field("allowed_origins", &self.allowed_origins)
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| "<set>"))
            .field("embedded_turn", &self.embedded_turn)
            .field("patients_relay_only", &self.patients_relay_only)
            .field("clinic_api_key", &self.clinic_api_key.as_ref().map(|_| "<set>"))
            .field("retention", &self.retention)
            .field("metrics_key", &self.metrics_key.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Fills every unset setting with its default.
    pub fn resolve(settings: Settings) -> Result<Config, String> {
        let embedded_turn = match settings.turn_listen {
            Some(listen) => Some(embedded_turn(listen, &settings)?),
            None => None,
        };
        let listen = settings.listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid"));
        let tls = match (settings.tls_cert, settings.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = settings
            .public_url
            .unwrap_or_else(|| format!("{scheme}://{listen}"))
            .trim_end_matches('/')
            .to_owned();
        let public = url::Url::parse(&public_url).map_err(|e| format!("invalid public URL: {e}"))?;
        let allowed_origins =
            settings.allowed_origins.unwrap_or_else(|| vec![public.origin().ascii_serialization()]);
        let turn_urls = settings.turn_urls.unwrap_or_default();
        if !turn_urls.is_empty() && settings.turn_secret.is_none() {
            return Err("TURN URLs are set but no TURN secret: set --turn-secret".into());
        }
        // The embedded server alone needs no configured secret: it makes up its own.
        let turn_secret = match (&embedded_turn, settings.turn_secret) {
            (Some(_), None) => Some(crate::secrets::random_secret()),
            (_, secret) => secret,
        };
        let log_format = settings.log_format.unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            return Err(format!("log format must be text or json, not {log_format}"));
        }
        Ok(Config {
            listen,
            database_url: settings.database_url.unwrap_or_else(|| "sqlite://televisit.db".into()),
            redis_url: settings.redis_url,
            secure_cookies: public.scheme() == "https",
            public_url,
            token_ttl_seconds: settings.token_ttl_seconds.unwrap_or(24 * 3600),
            allowed_origins,
            stun_urls: settings.stun_urls.unwrap_or_default(),
            turn_urls,
            turn_secret,
            turn_ttl_seconds: settings.turn_ttl_seconds.unwrap_or(3600),
            embedded_turn,
            patients_relay_only: settings.patients_relay_only.unwrap_or(false),
            clinic_api_key: settings.clinic_api_key.filter(|k| !k.is_empty()),
            idle_timeout_seconds: settings.idle_timeout_seconds.unwrap_or(45),
            reconnect_grace_seconds: settings.reconnect_grace_seconds.unwrap_or(5),
            resume_window_seconds: 60,
            keepalive_seconds: settings.keepalive_seconds.unwrap_or(15),
            frames_per_second: settings.frames_per_second.unwrap_or(50),
            frame_burst: settings.frame_burst.unwrap_or(200),
            web_dir: settings.web_dir,
            header_read_timeout_seconds: settings.header_read_timeout_seconds.unwrap_or(10).max(1),
            http_idle_timeout_seconds: settings.http_idle_timeout_seconds.unwrap_or(60).max(1),
            max_connections_per_address: settings
                .max_connections_per_address
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
            max_connections: settings.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            trusted_proxies: settings.trusted_proxies.unwrap_or_default(),
            failed_sign_ins_per_minute: settings.failed_sign_ins_per_minute.unwrap_or(10),
            failed_tokens_per_minute: settings.failed_tokens_per_minute.unwrap_or(30),
            audit_refusals_per_minute: settings.audit_refusals_per_minute.unwrap_or(30),
            metrics_key: settings.metrics_key.filter(|k| !k.is_empty()),
            metrics_listen: settings.metrics_listen,
            tls,
            session_ttl_hours: settings.session_ttl_hours.unwrap_or(12),
            log_format,
            retention: Retention {
                chat_days: Some(settings.chat_retention_days.unwrap_or(30)).filter(|&days| days > 0),
                token_days: settings.token_retention_days.unwrap_or(30),
                audit_days: Some(settings.audit_retention_days.unwrap_or(365)).filter(|&days| days > 0),
            },
            clinic_contact: ClinicContact {
                name: settings.clinic_name.unwrap_or_else(|| "Your clinic".into()),
                phone: settings.clinic_phone.unwrap_or_else(|| "+1 555 0100".into()),
                email: settings.clinic_email.unwrap_or_else(|| "help@clinic.example".into()),
            },
        })
    }

    /// A configuration for tests: an ephemeral loopback port and the given database.
    pub fn for_tests(database_url: &str) -> Config {
        let mut config = Config::resolve(Settings {
            listen: Some("127.0.0.1:0".parse().expect("valid")),
            database_url: Some(database_url.into()),
            ..Settings::default()
        })
        .expect("valid test settings");
        config.clinic_api_key = Some("test-clinic-key".into());
        config.metrics_key = Some("test-metrics-key".into());
        config
    }
}

/// The embedded TURN server's configuration from the `turn_*` settings.
fn embedded_turn(listen: SocketAddr, settings: &Settings) -> Result<TurnConfig, String> {
    let external_ip = match settings.turn_external_ip {
        Some(ip) => ip,
        None if listen.ip().is_unspecified() => {
            return Err("--turn-listen on an unspecified address needs --turn-external-ip".into())
        }
        None => listen.ip(),
    };
    let ports = settings.turn_relay_ports.as_deref().unwrap_or("49152-65535");
    let relay_ports = ports
        .split_once('-')
        .and_then(|(low, high)| Some((low.trim().parse::<u16>().ok()?, high.trim().parse::<u16>().ok()?)))
        .filter(|(low, high)| *low > 0 && low <= high)
        .ok_or_else(|| format!("TURN relay ports must be low-high, not {ports}"))?;
    let tls = match (settings.turn_tls_listen, &settings.turn_tls_cert, &settings.turn_tls_key) {
        (None, _, _) => None,
        (Some(listen), Some(cert), Some(key)) => {
            Some(TlsListen { listen, cert: cert.clone(), key: key.clone() })
        }
        _ => return Err("--turn-tls-listen needs --turn-tls-cert and --turn-tls-key".into()),
    };
    Ok(TurnConfig {
        listen,
        tls,
        external_ip,
        tls_host: settings.turn_tls_host.clone(),
        relay_ports: Some(relay_ports),
        realm: settings.turn_realm.clone().unwrap_or_else(|| "televisit".into()),
        streams: StreamLimits {
            per_address: settings.max_connections_per_address.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
            total: settings.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            allocate_within: std::time::Duration::from_secs(
                settings.turn_allocate_timeout_seconds.unwrap_or(10).max(1),
            ),
        },
    })
}

/// A database URL fit for a log: a password in it (`postgres://user:secret@host/db`) is masked.
pub fn without_password(database_url: &str) -> String {
    match url::Url::parse(database_url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => database_url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_never_reaches_the_log() {
        let config = Config::for_tests("postgres://televisit:s3cret-pw@db.clinic.internal/televisit");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("postgres://televisit:***@db.clinic.internal/televisit"), "{shown}");
        assert_eq!(without_password("sqlite://televisit.db"), "sqlite://televisit.db");
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: Settings = toml::from_str("token_ttl_seconds = 60\nstun_urls = [\"stun:a:3478\"]").unwrap();
        let flags = Settings { token_ttl_seconds: Some(30), ..Settings::default() };
        let config = Config::resolve(flags.over(file)).unwrap();
        assert_eq!(config.token_ttl_seconds, 30);
        assert_eq!(config.stun_urls, vec!["stun:a:3478".to_string()]);
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.allowed_origins, vec!["http://127.0.0.1:8080".to_string()]);
        assert!(!config.secure_cookies);
    }

    #[test]
    fn unknown_file_keys_and_turn_without_secret_are_refused() {
        assert!(toml::from_str::<Settings>("tokn_ttl = 5").is_err());
        let settings = Settings { turn_urls: Some(vec!["turn:x".into()]), ..Settings::default() };
        assert!(Config::resolve(settings).unwrap_err().contains("TURN secret"));
    }

    #[test]
    fn the_embedded_turn_is_configured_from_its_settings_and_on_with_the_demo() {
        let file: Settings = toml::from_str(
            "turn_listen = \"0.0.0.0:3478\"\nturn_external_ip = \"203.0.113.10\"\nturn_relay_ports = \"50000-50100\"\npatients_relay_only = true",
        )
        .unwrap();
        let config = Config::resolve(file).unwrap();
        let turn = config.embedded_turn.expect("embedded TURN configured");
        assert_eq!(
            (turn.external_ip.to_string(), turn.relay_ports),
            ("203.0.113.10".into(), Some((50000, 50100)))
        );
        assert!(config.turn_secret.is_some(), "a secret is made up when none is set");
        assert!(config.patients_relay_only);

        let demo = Config::resolve(Settings::default().with_demo_turn()).unwrap();
        assert_eq!(demo.embedded_turn.unwrap().listen.to_string(), "127.0.0.1:3478");
        let external = Settings {
            turn_urls: Some(vec!["turn:x".into()]),
            turn_secret: Some("s".into()),
            ..Settings::default()
        };
        assert!(
            Config::resolve(external.with_demo_turn()).unwrap().embedded_turn.is_none(),
            "configured TURN wins"
        );
    }

    #[test]
    fn unusable_embedded_turn_settings_are_refused() {
        let listen = Some("0.0.0.0:3478".parse().unwrap());
        let unspecified = Settings { turn_listen: listen, ..Settings::default() };
        assert!(Config::resolve(unspecified).unwrap_err().contains("--turn-external-ip"));
        let ports = Settings {
            turn_listen: Some("127.0.0.1:3478".parse().unwrap()),
            turn_relay_ports: Some("60000-50000".into()),
            ..Settings::default()
        };
        assert!(Config::resolve(ports).unwrap_err().contains("low-high"));
        let tls = Settings {
            turn_listen: Some("127.0.0.1:3478".parse().unwrap()),
            turn_tls_listen: Some("127.0.0.1:5349".parse().unwrap()),
            ..Settings::default()
        };
        assert!(Config::resolve(tls).unwrap_err().contains("--turn-tls-cert"));
    }

    #[test]
    fn tls_needs_both_files_and_makes_the_public_url_https() {
        let cert_only = Settings { tls_cert: Some("cert.pem".into()), ..Settings::default() };
        assert!(Config::resolve(cert_only).unwrap_err().contains("--tls-key"));
        let file: Settings =
            toml::from_str("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntrusted_proxies = [\"10.0.0.2\"]")
                .unwrap();
        let config = Config::resolve(file).unwrap();
        assert_eq!(config.public_url, "https://127.0.0.1:8080");
        assert!(config.secure_cookies);
        assert_eq!(config.trusted_proxies, vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = Config::for_tests("sqlite::memory:");
        config.turn_secret = Some("hunter2".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("test-clinic-key"), "{shown}");
        assert!(!shown.contains("test-metrics-key"), "{shown}");
    }
}
