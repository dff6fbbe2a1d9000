//! The lab of the TURN tests and benchmark, on [`crate::netns`]: the doctor and the patient each in
//! a namespace linked to the root namespace (where the server and TURN servers run), and linked to
//! each other directly. With the direct link's UDP dropped, and the root namespace forwarding
//! nothing, the only way between them is a TURN relay. Also coturn as a child process, and the
//! embedded TURN server alone on loopback ([`LoopbackTurn`]).

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use televisit_server::secrets::Clock;
use televisit_server::turn::{EmbeddedTurn, TlsListen, TurnConfig};
use televisit_server::Config;

use crate::netns::{Link, Netns};
use crate::TestServer;

/// Doctor and patient namespaces, their links to the root namespace and the direct link.
pub struct Lab {
    /// The doctor's namespace.
    pub doctor: Netns,
    /// The patient's namespace.
    pub patient: Netns,
    /// Root (`a`) to doctor (`b`).
    pub to_doctor: Link,
    /// Root (`a`) to patient (`b`).
    pub to_patient: Link,
    /// Doctor (`a`) to patient (`b`), both ends dropping UDP when the lab blocks it.
    pub direct: Link,
}

impl Lab {
    /// The lab; `block_direct`: drop every UDP datagram on the direct link.
    pub fn new(block_direct: bool) -> Lab {
        let doctor = Netns::new("doctor");
        let patient = Netns::new("patient");
        let to_doctor = Link::new(None, Some(&doctor));
        let to_patient = Link::new(None, Some(&patient));
        let direct = Link::new(Some(&doctor), Some(&patient));
        doctor.default_route(to_doctor.a.ip);
        patient.default_route(to_patient.a.ip);
        if block_direct {
            direct.a.block_udp(None);
            direct.b.block_udp(None);
        }
        Lab { doctor, patient, to_doctor, to_patient, direct }
    }

    /// The server's address as both namespaces reach it (the doctor's link's root end; the
    /// patient reaches it through its default route, as the root namespace owns it).
    pub fn server_ip(&self) -> IpAddr {
        IpAddr::V4(self.to_doctor.a.ip)
    }

    /// A server listening on [`Lab::server_ip`], adjusted by `adjust`.
    pub async fn server(&self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let ip = self.server_ip();
        TestServer::start(|c| {
            c.listen = SocketAddr::new(ip, 0);
            c.public_url = format!("http://{ip}:0");
            adjust(c);
        })
        .await
    }

    /// The embedded TURN server on [`Lab::server_ip`] (any free port).
    pub fn embedded_turn(&self) -> TurnConfig {
        let ip = self.server_ip();
        TurnConfig {
            listen: SocketAddr::new(ip, 0),
            tls: None,
            external_ip: ip,
            tls_host: None,
            relay_ports: None,
            realm: "televisit".into(),
            streams: Default::default(),
        }
    }
}

/// `call-join` (the binary at `program`) in `netns`, in the call for `seconds` once connected.
pub fn join(program: &str, netns: &Netns, link: &str, seconds: u64) -> Child {
    netns
        .command(program)
        .args([link, "--seconds", &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("call-join starts")
}

/// Debian's coturn (`turnserver`), killed on drop.
pub struct Coturn {
    child: Child,
    /// Its UDP and TCP port.
    pub port: u16,
}

impl Coturn {
    /// coturn on `ip` with the REST shared secret (`use-auth-secret`, `static-auth-secret`).
    pub fn start(ip: IpAddr, secret: &str) -> Coturn {
        let port = std::net::UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap().port();
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint", "--log-file=stdout"])
            .arg(format!("--listening-ip={ip}"))
            .arg(format!("--relay-ip={ip}"))
            .arg(format!("--listening-port={port}"))
            .args(["--min-port=49152", "--max-port=65535", "--realm=televisit", "--use-auth-secret"])
            .arg(format!("--static-auth-secret={secret}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver starts (scripts/install-build-deps.sh installs coturn)");
        // Ready once it accepts TCP on its port.
        for _ in 0..100 {
            if std::net::TcpStream::connect((ip, port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Coturn { child, port }
    }

    /// The process id (to read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat` (clock ticks of 10 ms).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The server crate's embedded TURN server on loopback: UDP and TCP on one port, TLS on another
/// with a self-signed certificate for `localhost`, checking credentials made with a shared secret.
pub struct LoopbackTurn {
    /// The running server.
    pub server: EmbeddedTurn,
    /// A TLS client configuration that trusts its certificate.
    pub client_tls: Arc<rustls::ClientConfig>,
}

impl LoopbackTurn {
    /// Starts it on free ports of `127.0.0.1`, checking credentials made with `secret`.
    pub async fn start(secret: &str) -> LoopbackTurn {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
        let dir =
            std::env::temp_dir().join(format!("televisit-ice-turn-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("turn.pem"), dir.join("turn.key"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = TurnConfig {
            listen: loopback,
            tls: Some(TlsListen { listen: loopback, cert, key }),
            external_ip: loopback.ip(),
            tls_host: Some("localhost".into()),
            relay_ports: None,
            realm: "televisit".into(),
            streams: Default::default(),
        };
        let server = EmbeddedTurn::start(&config, secret, Clock::default()).await.expect("TURN starts");
        let _ = std::fs::remove_dir_all(dir);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone()).expect("a root");
        let client_tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        LoopbackTurn { server, client_tls: Arc::new(client_tls) }
    }

    /// Its URL that starts with `prefix` (`turn:` … `?transport=udp`, `turns:`).
    pub fn url(&self, prefix: &str, suffix: &str) -> String {
        let urls = self.server.urls();
        urls.iter()
            .find(|u| u.starts_with(prefix) && u.ends_with(suffix))
            .cloned()
            .unwrap_or_else(|| panic!("no {prefix}…{suffix} in {urls:?}"))
    }

    /// Its `turn:…?transport=udp` URL.
    pub fn udp_url(&self) -> String {
        self.url("turn:", "?transport=udp")
    }

    /// Allocations it created.
    pub fn allocations(&self) -> u64 {
        self.server.counters.allocations.load(Ordering::Relaxed)
    }

    /// TCP and TLS connections it accepted.
    pub fn stream_connections(&self) -> u64 {
        self.server.counters.stream_connections.load(Ordering::Relaxed)
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}
