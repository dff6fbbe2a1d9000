//! TURN over TCP and TLS for the webrtc crate, whose relayer speaks TURN over UDP only (it skips
//! `turns:` and `?transport=tcp` URLs) — while clinic and hospital networks often block UDP.
//!
//! Each such URL gets a bridge: a UDP socket on `127.0.0.1` that the crate is given instead, as
//! `turn:127.0.0.1:<port>?transport=udp` with the same credentials. Every local socket of the crate
//! that talks to the bridge gets its own TCP (or TLS) connection to the real TURN server (one
//! allocation per 5-tuple, as over UDP), and the bridge carries each datagram as one stream message
//! and back ([`super::turn_framing`]). The TURN server allocates the relay address as it would for
//! a UDP client, so the relay candidate is the server's real relay address and everything above
//! (allocation, permissions, channels, refreshes, credentials) stays the crate's.
//!
//! Which URLs are bridged is decided sans-I/O ([`StreamTurnUrl::parse`]); the sockets and
//! connections are the I/O edge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::turn_framing::{to_stream, StreamDecoder};
use crate::api::IceServer;
use crate::call::stats::RelayTransport;

/// A TURN server reached over a stream: `turn:host[:port]?transport=tcp` (TCP, port 3478 by
/// default) or `turns:host[:port]` (TLS, port 5349 by default).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamTurnUrl {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS (`turns:`), else plain TCP.
    pub tls: bool,
}

impl StreamTurnUrl {
    /// The stream TURN server a URL names, or `None` for a UDP (or non-TURN) URL.
    pub fn parse(url: &str) -> Option<StreamTurnUrl> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("turns:") {
            (true, rest)
        } else {
            (false, url.strip_prefix("turn:")?)
        };
        let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
        let transport = query.split('&').find_map(|p| p.strip_prefix("transport="));
        match (tls, transport) {
            (false, Some("tcp")) | (true, None | Some("tcp")) => {}
            _ => return None, // UDP, or `turns:` over DTLS (which nothing here speaks)
        }
        let (host, port) = match address.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                (host, after.strip_prefix(':'))
            }
            None => match address.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            },
        };
        let port = match port {
            Some(port) => port.parse().ok()?,
            None if tls => 5349,
            None => 3478,
        };
        (!host.is_empty()).then(|| StreamTurnUrl { host: host.to_owned(), port, tls })
    }

    /// TCP or TLS, for the stats.
    pub fn transport(&self) -> RelayTransport {
        if self.tls {
            RelayTransport::Tls
        } else {
            RelayTransport::Tcp
        }
    }
}

/// The bridges of one peer connection, by the TURN server they reach; kept for the connection's
/// life (dropping them closes their sockets and connections).
pub struct TurnBridges {
    tls: Arc<rustls::ClientConfig>,
    bridges: HashMap<StreamTurnUrl, Bridge>,
}

impl TurnBridges {
    /// No bridges yet; TLS connections use `tls`.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> TurnBridges {
        TurnBridges { tls, bridges: HashMap::new() }
    }

    /// The ICE servers as the crate gets them: each TCP or TLS TURN URL replaced by its bridge's
    /// UDP URL (a bridge is made the first time a server is seen and reused after, so fresh
    /// credentials for the same servers keep the crate's allocations), everything else as it is.
    pub async fn rewrite(&mut self, servers: &[IceServer]) -> Result<Vec<IceServer>, String> {
        let mut out = Vec::with_capacity(servers.len());
        for server in servers {
            let mut urls = Vec::with_capacity(server.urls.len());
            for url in &server.urls {
                match StreamTurnUrl::parse(url) {
                    Some(target) => {
                        if !self.bridges.contains_key(&target) {
                            let bridge = Bridge::start(target.clone(), Arc::clone(&self.tls)).await?;
                            self.bridges.insert(target.clone(), bridge);
                        }
                        urls.push(format!("turn:{}?transport=udp", self.bridges[&target].local));
                    }
                    None => urls.push(url.clone()),
                }
            }
            out.push(IceServer { urls, ..server.clone() });
        }
        Ok(out)
    }

    /// How the relay that the crate reached through `url` is really reached: TCP or TLS for a
    /// bridge's URL, `None` for a URL that is no bridge's.
    pub fn transport_of(&self, url: &str) -> Option<RelayTransport> {
        let port = |a: &SocketAddr| format!("{}:{}", a.ip(), a.port());
        self.bridges.iter().find(|(_, b)| url.contains(&port(&b.local))).map(|(target, _)| target.transport())
    }
}

/// One bridge: its UDP socket's address and the task that serves it.
struct Bridge {
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Bridge {
    async fn start(target: StreamTurnUrl, tls: Arc<rustls::ClientConfig>) -> Result<Bridge, String> {
        let socket =
            UdpSocket::bind("127.0.0.1:0").await.map_err(|e| format!("cannot bind a TURN bridge: {e}"))?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(serve(Arc::new(socket), target, tls));
        Ok(Bridge { local, task })
    }
}

/// Datagrams from each of the crate's sockets go to that socket's own stream; what a stream
/// brings back goes to its socket. A stream that fails is forgotten, so the crate's next
/// datagram (it retransmits) opens a new one.
async fn serve(socket: Arc<UdpSocket>, target: StreamTurnUrl, tls: Arc<rustls::ClientConfig>) {
    let mut streams: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buffer).await else { return };
        let datagram = buffer[..n].to_vec();
        if let Some(stream) = streams.get(&from) {
            if stream.send(datagram.clone()).is_ok() {
                continue;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(datagram);
        streams.insert(from, tx);
        tokio::spawn(connect_and_pump(Arc::clone(&socket), from, target.clone(), Arc::clone(&tls), rx));
    }
}

async fn connect_and_pump(
    socket: Arc<UdpSocket>,
    crate_socket: SocketAddr,
    target: StreamTurnUrl,
    tls: Arc<rustls::ClientConfig>,
    outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let tcp = match TcpStream::connect((target.host.as_str(), target.port)).await {
        Ok(tcp) => tcp,
        Err(e) => return tracing::warn!(error = %e, tls = target.tls, "cannot reach the TURN server"),
    };
    let _ = tcp.set_nodelay(true); // small STUN messages must not wait for Nagle
    if !target.tls {
        return pump(tcp, socket, crate_socket, outgoing).await;
    }
    let name = match rustls::pki_types::ServerName::try_from(target.host.clone()) {
        Ok(name) => name,
        Err(e) => return tracing::warn!(error = %e, "the TURN server's name is no TLS server name"),
    };
    match tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await {
        Ok(stream) => pump(stream, socket, crate_socket, outgoing).await,
        Err(e) => tracing::warn!(error = %e, "TLS to the TURN server failed"),
    }
}

/// Carries datagrams both ways until either side ends.
async fn pump<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    socket: Arc<UdpSocket>,
    crate_socket: SocketAddr,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async move {
        while let Some(datagram) = outgoing.recv().await {
            let Ok(bytes) = to_stream(&datagram) else { continue }; // not TURN: nothing to carry
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let read = async move {
        let mut decoder = StreamDecoder::new();
        let mut buffer = vec![0u8; 65_536];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => decoder.push(&buffer[..n]),
            }
            loop {
                match decoder.next_message() {
                    Ok(Some(message)) => {
                        let _ = socket.send_to(&message, crate_socket).await;
                    }
                    Ok(None) => break,
                    Err(e) => return tracing::warn!(error = %e.0, "the TURN stream lost its framing"),
                }
            }
        }
    };
    tokio::select! {
        _ = write => {}
        _ = read => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_tls_turn_urls_are_bridged_and_udp_ones_are_left_to_the_crate() {
        let parse = StreamTurnUrl::parse;
        let tcp = |host: &str, port| Some(StreamTurnUrl { host: host.into(), port, tls: false });
        let tls = |host: &str, port| Some(StreamTurnUrl { host: host.into(), port, tls: true });
        assert_eq!(parse("turn:turn.example:3478?transport=tcp"), tcp("turn.example", 3478));
        assert_eq!(parse("turn:turn.example?transport=tcp"), tcp("turn.example", 3478));
        assert_eq!(parse("turns:turn.example:443?transport=tcp"), tls("turn.example", 443));
        assert_eq!(parse("turns:turn.example"), tls("turn.example", 5349));
        assert_eq!(parse("turn:[2001:db8::1]:3478?transport=tcp"), tcp("2001:db8::1", 3478));
        assert_eq!(parse("turn:turn.example:3478"), None, "UDP is the crate's");
        assert_eq!(parse("turn:turn.example:3478?transport=udp"), None);
        assert_eq!(parse("turns:turn.example:443?transport=udp"), None, "DTLS: nobody speaks it");
        assert_eq!(parse("stun:stun.example:3478"), None);
        assert_eq!(parse("turn::3478?transport=tcp"), None);
        assert_eq!(parse("turn:turn.example:x?transport=tcp"), None);
    }
}
