//! The embedded TURN server: `televisit serve` relays media itself, so the one command gives calls
//! that connect behind NATs and firewalls without a separate coturn.
//!
//! - Listeners: UDP, TCP (TURN messages over a TCP stream, RFC 5766 §2.1; the relayed side is
//!   always UDP) on the same port, and optionally TLS on its own port (443 in production, so
//!   clinic networks that allow only HTTPS still reach it).
//! - Credentials: coturn's REST scheme (`use-auth-secret` / `static-auth-secret`), the same that
//!   `GET /api/video-call/ice-servers` issues: the user name is `<expiry-unix-seconds>:<id>` and
//!   the password base64(HMAC-SHA1(secret, user name)). Expiry is read from the server's
//!   [`Clock`], so tests can move time.
//! - Relayed sockets: UDP in a configurable port range, advertised at the external address.
//!
//! The TURN protocol itself is the `turn` crate's server (webrtc-rs 0.17 line); this module adds
//! the listeners it lacks (TCP, TLS: [`StreamMux`]), the REST-credential check and the byte counts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use turn::auth::{generate_auth_key, AuthHandler};
use turn::relay::RelayAddressGenerator;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::Conn;

use crate::config::{DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS};
use crate::conn_caps::ConnectionCaps;
use crate::secrets::Clock;

/// How the embedded TURN server runs (from `--turn-listen` and its companions).
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// UDP and TCP listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// TURN over TLS: listen address, certificate chain and key (PEM files).
    pub tls: Option<TlsListen>,
    /// The address clients reach this server at: the host of the advertised `turn:` URLs and the
    /// address of every relayed candidate.
    pub external_ip: IpAddr,
    /// Host name of the advertised `turns:` URLs (it must match the certificate).
    pub tls_host: Option<String>,
    /// Relayed ports, inclusive; `None` lets the system pick.
    pub relay_ports: Option<(u16, u16)>,
    /// The realm of the long-term credentials.
    pub realm: String,
    /// Caps and timeout of the TCP and TLS connections.
    pub streams: StreamLimits,
}

/// Limits on the TCP and TLS connections of the embedded TURN server.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Open connections per client address.
    pub per_address: usize,
    /// Open connections in all (TCP and TLS together).
    pub total: usize,
    /// A connection that has no allocation this long after it opened is closed.
    pub allocate_within: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            total: DEFAULT_MAX_CONNECTIONS,
            allocate_within: Duration::from_secs(10),
        }
    }
}

/// The TLS listener of the embedded TURN server.
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// Listen address.
    pub listen: SocketAddr,
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// Traffic counters of the embedded TURN server.
#[derive(Debug, Default)]
pub struct TurnCounters {
    /// Bytes received on relayed sockets (from peers, towards clients).
    pub relayed_in_bytes: AtomicU64,
    /// Bytes sent from relayed sockets (from clients, towards peers).
    pub relayed_out_bytes: AtomicU64,
    /// Allocations created.
    pub allocations: AtomicU64,
    /// TCP and TLS connections accepted.
    pub stream_connections: AtomicU64,
    /// Datagrams dropped because a client tried to relay them to, or they came from, an address
    /// no call peer can have (see [`peer_allowed`]).
    pub denied_peer_datagrams: AtomicU64,
    /// Requests refused because their credentials had expired.
    pub expired_refusals: AtomicU64,
}

/// Whether a relayed socket may exchange datagrams with `peer`. A TURN server relays to whatever
/// address a client with valid credentials names, so without this rule a call link would be a
/// key to the server's own loopback services and to link-local or multicast addresses on its
/// network. A call peer is never there: loopback is allowed only when the relay itself is on
/// loopback (the demo and the tests, where both sides run on this machine).
pub fn peer_allowed(peer: IpAddr, external_ip: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if peer.is_unspecified() || peer.is_multicast() {
        return false;
    }
    if peer.is_loopback() {
        return external_ip.is_loopback();
    }
    match peer {
        IpAddr::V4(v4) => !(v4.is_link_local() || v4.is_broadcast()),
        IpAddr::V6(v6) => !v6.is_unicast_link_local(),
    }
}

/// A running embedded TURN server.
pub struct EmbeddedTurn {
    server: Server,
    /// The bound UDP/TCP address.
    pub addr: SocketAddr,
    /// The bound TLS address, if any.
    pub tls_addr: Option<SocketAddr>,
    /// Traffic counters.
    pub counters: Arc<TurnCounters>,
    urls: Vec<String>,
    accept_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds UDP and TCP on the same port, as coturn does (3478 for both). With port 0 the system
/// picks a free UDP port, which another process may hold for TCP: then another port is tried.
async fn bind_udp_and_tcp(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut attempts_left = if listen.port() == 0 { 20 } else { 1 };
    loop {
        let udp = UdpSocket::bind(listen).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts_left > 1 => attempts_left -= 1,
            Err(e) => return Err(e),
        }
    }
}

impl EmbeddedTurn {
    /// Binds the listeners and starts serving, with credentials checked against `secret`.
    pub async fn start(config: &TurnConfig, secret: &str, clock: Clock) -> std::io::Result<EmbeddedTurn> {
        let counters = Arc::new(TurnCounters::default());
        let relay = || -> Box<dyn RelayAddressGenerator + Send + Sync> {
            Box::new(Relays {
                bind_ip: config.listen.ip(),
                external_ip: config.external_ip,
                ports: config.relay_ports,
                counters: Arc::clone(&counters),
            })
        };
        let (udp, tcp) = bind_udp_and_tcp(config.listen).await?;
        let udp = Arc::new(udp);
        let addr = udp.local_addr()?;
        let tcp_mux = Arc::new(StreamMux::new(addr));
        let streams = Streams {
            caps: ConnectionCaps::new(config.streams.per_address, config.streams.total),
            allocate_within: config.streams.allocate_within,
            counters: Arc::clone(&counters),
        };
        let mut accept_tasks = vec![tokio::spawn(accept(tcp, None, Arc::clone(&tcp_mux), streams.clone()))];
        let mut conn_configs = vec![
            ConnConfig { conn: udp, relay_addr_generator: relay() },
            ConnConfig { conn: tcp_mux, relay_addr_generator: relay() },
        ];
        let mut tls_addr = None;
        if let Some(tls) = &config.tls {
            let acceptor = tls_acceptor(&tls.cert, &tls.key, "TURN")?;
            let listener = TcpListener::bind(tls.listen).await?;
            let bound = listener.local_addr()?;
            let mux = Arc::new(StreamMux::new(bound));
            accept_tasks.push(tokio::spawn(accept(listener, Some(acceptor), Arc::clone(&mux), streams)));
            conn_configs.push(ConnConfig { conn: mux, relay_addr_generator: relay() });
            tls_addr = Some(bound);
        }
        let server = Server::new(ServerConfig {
            conn_configs,
            realm: config.realm.clone(),
            auth_handler: Arc::new(RestAuth {
                secret: secret.to_owned(),
                clock,
                counters: Arc::clone(&counters),
            }),
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: None,
        })
        .await
        .map_err(std::io::Error::other)?;
        let host = match config.external_ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let mut urls = vec![
            format!("turn:{host}:{}?transport=udp", addr.port()),
            format!("turn:{host}:{}?transport=tcp", addr.port()),
        ];
        if let Some(bound) = tls_addr {
            let tls_host = config.tls_host.clone().unwrap_or(host);
            urls.push(format!("turns:{tls_host}:{}?transport=tcp", bound.port()));
        }
        tracing::info!(%addr, ?tls_addr, external_ip = %config.external_ip, "embedded TURN server listening");
        Ok(EmbeddedTurn { server, addr, tls_addr, counters, urls, accept_tasks })
    }

    /// The `turn:`/`turns:` URLs clients use to reach this server.
    pub fn urls(&self) -> Vec<String> {
        self.urls.clone()
    }

    /// Closes every listener and allocation.
    pub async fn stop(&self) {
        for task in &self.accept_tasks {
            task.abort();
        }
        let _ = self.server.close().await;
    }
}

impl Drop for EmbeddedTurn {
    fn drop(&mut self) {
        for task in &self.accept_tasks {
            task.abort();
        }
    }
}

/// Checks coturn REST credentials: the password of `<expiry>:<id>` is derived from the shared
/// secret, and the expiry must not have passed.
struct RestAuth {
    secret: String,
    clock: Clock,
    counters: Arc<TurnCounters>,
}

impl AuthHandler for RestAuth {
    fn auth_handle(&self, username: &str, realm: &str, src_addr: SocketAddr) -> Result<Vec<u8>, turn::Error> {
        let expires: i64 = username
            .split(':')
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| turn::Error::Other("user name is not <expiry>:<id>".into()))?;
        if expires * 1000 < self.clock.now_ms() {
            tracing::debug!(%src_addr, "TURN credentials expired");
            self.counters.expired_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(turn::Error::Other("credentials expired".into()));
        }
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(self.secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(username.as_bytes());
        let password = STANDARD.encode(mac.finalize().into_bytes());
        Ok(generate_auth_key(username, realm, &password))
    }
}

/// Binds relayed UDP sockets in the port range and counts what crosses them.
struct Relays {
    bind_ip: IpAddr,
    external_ip: IpAddr,
    ports: Option<(u16, u16)>,
    counters: Arc<TurnCounters>,
}

#[async_trait]
impl RelayAddressGenerator for Relays {
    fn validate(&self) -> Result<(), turn::Error> {
        match self.ports {
            Some((low, high)) if low == 0 || high < low => Err(turn::Error::ErrMaxPortLessThanMinPort),
            _ => Ok(()),
        }
    }

    async fn allocate_conn(
        &self,
        _use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let candidates: Vec<u16> = match (requested_port, self.ports) {
            (0, None) => vec![0],
            (0, Some((low, high))) => {
                use rand::Rng;
                let mut rng = rand::rng();
                (0..20).map(|_| rng.random_range(low..=high)).collect()
            }
            (port, _) => vec![port],
        };
        for port in candidates {
            if let Ok(socket) = UdpSocket::bind(SocketAddr::new(self.bind_ip, port)).await {
                let mut relayed = socket.local_addr()?;
                relayed.set_ip(self.external_ip);
                self.counters.allocations.fetch_add(1, Ordering::Relaxed);
                let conn = CountingSocket {
                    socket,
                    external_ip: self.external_ip,
                    counters: Arc::clone(&self.counters),
                };
                return Ok((Arc::new(conn), relayed));
            }
        }
        Err(turn::Error::ErrMaxRetriesExceeded)
    }
}

/// A relayed UDP socket that counts the bytes it carries and exchanges nothing with addresses
/// [`peer_allowed`] refuses.
struct CountingSocket {
    socket: UdpSocket,
    external_ip: IpAddr,
    counters: Arc<TurnCounters>,
}

impl CountingSocket {
    fn refuse(&self, peer: SocketAddr) -> bool {
        let refused = !peer_allowed(peer.ip(), self.external_ip);
        if refused {
            self.counters.denied_peer_datagrams.fetch_add(1, Ordering::Relaxed);
        }
        refused
    }
}

#[async_trait]
impl Conn for CountingSocket {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        let n = self.socket.recv(buf).await?;
        self.counters.relayed_in_bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if self.refuse(from) {
                continue;
            }
            self.counters.relayed_in_bytes.fetch_add(n as u64, Ordering::Relaxed);
            return Ok((n, from));
        }
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        let n = self.socket.send(buf).await?;
        self.counters.relayed_out_bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if self.refuse(target) {
            return Ok(buf.len()); // dropped, as the network would drop it: the allocation lives on
        }
        let n = self.socket.send_to(buf, target).await?;
        self.counters.relayed_out_bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Many TCP (or TLS) connections seen as one packet connection, which is what the `turn` server
/// reads from: each TURN message or ChannelData frame that arrives on a stream is one datagram
/// "from" that stream's remote address, and a datagram sent to that address is written to it.
struct StreamMux {
    local: SocketAddr,
    inbound_tx: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    inbound: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    writers: Mutex<HashMap<SocketAddr, StreamWriter>>,
}

/// The way back to one stream, and whether the server has granted it an allocation.
#[derive(Clone)]
struct StreamWriter {
    frames: mpsc::Sender<Vec<u8>>,
    allocated: Arc<AtomicBool>,
}

/// STUN message type of a successful Allocate response (RFC 8656).
const ALLOCATE_SUCCESS: [u8; 2] = [0x01, 0x03];

/// Frames queued towards one stream before newer ones are dropped (as a full UDP buffer would).
const STREAM_QUEUE: usize = 256;

impl StreamMux {
    fn new(local: SocketAddr) -> StreamMux {
        let (inbound_tx, inbound) = mpsc::channel(STREAM_QUEUE);
        StreamMux { local, inbound_tx, inbound: tokio::sync::Mutex::new(inbound), writers: Mutex::default() }
    }

    /// Serves one accepted stream until it closes, or until `allocate_within` has passed
    /// without the server granting it an allocation.
    async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        allocate_within: Duration,
    ) {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
        let allocated = Arc::new(AtomicBool::new(false));
        let entry = StreamWriter { frames: tx, allocated: Arc::clone(&allocated) };
        self.writers.lock().expect("not poisoned").insert(peer, entry);
        let write = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let read = async {
            loop {
                match read_frame(&mut reader).await {
                    Ok(frame) => {
                        if self.inbound_tx.send((frame, peer)).await.is_err() {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "TURN stream closed");
                        break;
                    }
                }
            }
        };
        let unallocated = async {
            tokio::time::sleep(allocate_within).await;
            if allocated.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = read => {}
            () = unallocated => tracing::debug!("TURN stream closed: no allocation"),
        }
        self.writers.lock().expect("not poisoned").remove(&peer);
        write.abort();
    }
}

/// Reads one TURN frame from a stream: a STUN message (20-byte header, then its length) or a
/// ChannelData message (4-byte header, then its length padded to 4 bytes over streams).
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).await?;
    let length = u16::from_be_bytes([header[2], header[3]]) as usize;
    let rest = match header[0] >> 6 {
        0 => 16 + length,            // STUN: 20-byte header in all
        1 => length.div_ceil(4) * 4, // ChannelData: channel numbers 0x4000..0x7FFF
        _ => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a TURN frame")),
    };
    let mut frame = vec![0u8; 4 + rest];
    frame[..4].copy_from_slice(&header);
    reader.read_exact(&mut frame[4..]).await?;
    Ok(frame)
}

#[async_trait]
impl Conn for StreamMux {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other("a listener does not connect".into()))
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let (frame, peer) =
            self.inbound.lock().await.recv().await.ok_or(webrtc_util::Error::ErrAlreadyClosed)?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok((n, peer))
    }
    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other("send needs an address".into()))
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let writer = self.writers.lock().expect("not poisoned").get(&target).cloned();
        match writer {
            // A full queue drops the frame, as UDP would; the stream stays up.
            Some(writer) => {
                if buf.starts_with(&ALLOCATE_SUCCESS) {
                    writer.allocated.store(true, Ordering::Relaxed);
                }
                let _ = writer.frames.try_send(buf.to_vec());
                Ok(buf.len())
            }
            None => Err(webrtc_util::Error::Other(format!("no TURN stream from {target}"))),
        }
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// What the TCP and TLS listeners share: the caps, the allocation deadline, the counters.
#[derive(Clone)]
struct Streams {
    caps: Arc<ConnectionCaps>,
    allocate_within: Duration,
    counters: Arc<TurnCounters>,
}

/// Accepts TCP connections (TLS ones when there is an acceptor) under the caps.
async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mux: Arc<StreamMux>,
    streams: Streams,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "TURN TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(permit) = streams.caps.try_open(peer.ip(), false) else {
            tracing::debug!("TURN connection refused: cap reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (tls, mux, streams) = (tls.clone(), Arc::clone(&mux), streams.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Some(acceptor) = tls else {
                streams.counters.stream_connections.fetch_add(1, Ordering::Relaxed);
                return mux.serve(stream, peer, streams.allocate_within).await;
            };
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    streams.counters.stream_connections.fetch_add(1, Ordering::Relaxed);
                    mux.serve(tls, peer, streams.allocate_within).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, "TURN TLS handshake failed"),
                Err(_) => tracing::debug!("TURN TLS handshake timed out"),
            }
        });
    }
}

/// A TLS acceptor from PEM files (the first certificate chain and private key in them); `what`
/// names the listener in errors.
pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    what: &str,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |part: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} TLS {part}: {e}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid("certificate", &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid("key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("certificate", &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::turn_credentials;

    #[test]
    fn rest_credentials_are_accepted_until_they_expire() {
        let clock = Clock::default();
        let auth = RestAuth { secret: "s3cret".into(), clock: clock.clone(), counters: Arc::default() };
        let now = clock.now_ms() / 1000;
        let (user, pass) = turn_credentials("s3cret", "room-patient", now + 60);
        let from: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(
            auth.auth_handle(&user, "televisit", from).unwrap(),
            generate_auth_key(&user, "televisit", &pass)
        );
        let (_, wrong) = turn_credentials("other", "room-patient", now + 60);
        assert_ne!(
            auth.auth_handle(&user, "televisit", from).unwrap(),
            generate_auth_key(&user, "televisit", &wrong)
        );
        clock.advance(Duration::from_secs(61));
        assert!(auth.auth_handle(&user, "televisit", from).is_err());
        assert_eq!(auth.counters.expired_refusals.load(Ordering::Relaxed), 1);
        assert!(auth.auth_handle("not-a-time:x", "televisit", from).is_err());
    }

    #[test]
    fn relays_never_reach_loopback_link_local_or_multicast_addresses_of_a_public_server() {
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        let demo: IpAddr = "127.0.0.1".parse().unwrap();
        for peer in ["198.51.100.20", "10.1.2.3", "192.168.1.20", "2001:db8::1"] {
            assert!(peer_allowed(peer.parse().unwrap(), public), "{peer} is a possible call peer");
        }
        for peer in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(!peer_allowed(peer.parse().unwrap(), public), "{peer} must be refused");
        }
        assert!(peer_allowed("127.0.0.1".parse().unwrap(), demo), "the demo relays on loopback");
        assert!(!peer_allowed("169.254.169.254".parse().unwrap(), demo));
    }

    async fn relay(external_ip: &str) -> CountingSocket {
        CountingSocket {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            external_ip: external_ip.parse().unwrap(),
            counters: Arc::new(TurnCounters::default()),
        }
    }

    #[tokio::test]
    async fn a_relayed_socket_sends_nothing_to_a_refused_peer_and_counts_it() {
        let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = target.local_addr().unwrap();
        let mut buf = [0u8; 16];
        // A public relay asked to reach this machine's loopback service: nothing arrives.
        let public = relay("203.0.113.7").await;
        assert_eq!(public.send_to(b"probe", to).await.unwrap(), 5);
        assert_eq!(public.counters.denied_peer_datagrams.load(Ordering::Relaxed), 1);
        assert_eq!(public.counters.relayed_out_bytes.load(Ordering::Relaxed), 0);
        let nothing = tokio::time::timeout(Duration::from_millis(200), target.recv_from(&mut buf)).await;
        assert!(nothing.is_err(), "a datagram reached the refused peer");
        // The demo's loopback relay does deliver.
        let demo = relay("127.0.0.1").await;
        demo.send_to(b"media", to).await.unwrap();
        let (n, _) =
            tokio::time::timeout(Duration::from_secs(2), target.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"media");
    }

    #[tokio::test]
    async fn stream_frames_are_cut_at_message_and_padded_channel_data_boundaries() {
        // A STUN binding request (20-byte header, 0 attributes), then ChannelData of 5 bytes
        // padded to 8, then garbage.
        let mut bytes = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        bytes.extend_from_slice(&[7u8; 12]);
        bytes.extend_from_slice(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
        bytes.extend_from_slice(&[0xff, 0, 0, 0]);
        let mut reader = &bytes[..];
        assert_eq!(read_frame(&mut reader).await.unwrap().len(), 20);
        assert_eq!(read_frame(&mut reader).await.unwrap(), [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(read_frame(&mut reader).await.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }
}
