//! A real TURN server for the tests, in process on loopback: the `turn` crate's server (UDP) with
//! coturn's REST authentication (`use-auth-secret`: the user name is `<expiry unix time>:<id>`,
//! the password the base64 HMAC-SHA1 of it with the shared secret), so the Televisit server's
//! `turn_secret` credentials work against it and expired ones are refused as coturn refuses them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use turn::auth::{generate_auth_key, AuthHandler};
use turn::relay::relay_static::RelayAddressGeneratorStatic;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;

/// The realm the test TURN server announces.
pub const REALM: &str = "televisit.test";

/// A running TURN server on `127.0.0.1`, relaying from `127.0.0.1` too.
pub struct TurnServer {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    /// Allocation requests refused because the user name had expired.
    pub expired_refusals: Arc<AtomicU64>,
    /// User names of the requests whose credentials it accepted, in order.
    pub accepted: Arc<Mutex<Vec<String>>>,
    server: Server,
}

struct RestAuth {
    secret: String,
    expired_refusals: Arc<AtomicU64>,
    accepted: Arc<Mutex<Vec<String>>>,
}

impl AuthHandler for RestAuth {
    fn auth_handle(&self, username: &str, realm: &str, _src: SocketAddr) -> Result<Vec<u8>, turn::Error> {
        let (expiry, id) = username.split_once(':').unwrap_or((username, ""));
        let expiry: i64 = expiry.parse().map_err(|_| turn::Error::Other("not a REST user name".into()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if expiry < now {
            self.expired_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(turn::Error::Other(format!("expired user name {username}")));
        }
        let (_, password) = televisit_server::secrets::turn_credentials(&self.secret, id, expiry);
        self.accepted.lock().unwrap_or_else(|e| e.into_inner()).push(username.to_owned());
        Ok(generate_auth_key(username, realm, &password))
    }
}

impl TurnServer {
    /// Starts a TURN server on a free UDP port of `127.0.0.1` checking REST credentials made with
    /// `secret`.
    pub async fn start(secret: &str) -> TurnServer {
        let conn = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("TURN port"));
        let addr = conn.local_addr().expect("TURN address");
        let (expired_refusals, accepted) = (Arc::new(AtomicU64::new(0)), Arc::default());
        let server = Server::new(ServerConfig {
            conn_configs: vec![ConnConfig {
                conn,
                relay_addr_generator: Box::new(RelayAddressGeneratorStatic {
                    relay_address: "127.0.0.1".parse().expect("an address"),
                    address: "127.0.0.1".to_owned(),
                    net: Arc::new(webrtc_util::vnet::net::Net::new(None)),
                }),
            }],
            realm: REALM.to_owned(),
            auth_handler: Arc::new(RestAuth {
                secret: secret.to_owned(),
                expired_refusals: Arc::clone(&expired_refusals),
                accepted: Arc::clone(&accepted),
            }),
            channel_bind_timeout: std::time::Duration::from_secs(0),
            alloc_close_notify: None,
        })
        .await
        .expect("TURN server starts");
        TurnServer { addr, expired_refusals, accepted, server }
    }

    /// The `turn:` URL of its UDP port.
    pub fn udp_url(&self) -> String {
        format!("turn:{}?transport=udp", self.addr)
    }

    /// Whether it accepted a request with this user name.
    pub fn accepted(&self, username: &str) -> bool {
        self.accepted.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|u| u == username)
    }

    /// Stops it.
    pub async fn close(&self) {
        let _ = self.server.close().await;
    }
}

/// TURN over TCP or TLS in front of a [`TurnServer`]: each connection gets its own UDP socket to
/// the server (so one allocation per connection, as a TCP-serving TURN server keeps them), and the
/// messages are cut and padded as RFC 8656 §12.5 says, with the core's own framing.
pub struct StreamFront {
    /// Where it listens (TCP).
    pub addr: SocketAddr,
    /// Connections accepted (TLS: handshakes completed).
    pub connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StreamFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A self-signed certificate for `localhost`: the TLS front's configuration, and a client
/// configuration that trusts it.
pub fn localhost_tls() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("the certificate and key match");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("a root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

impl TurnServer {
    /// A TCP front (TLS with `tls`) on a free port of `127.0.0.1`.
    pub async fn stream_front(&self, tls: Option<Arc<rustls::ServerConfig>>) -> StreamFront {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a TCP port");
        let addr = listener.local_addr().expect("its address");
        let (turn, connections) = (self.addr, Arc::new(AtomicU64::new(0)));
        let counted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, counted) = (tls.clone(), Arc::clone(&counted));
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    match tls {
                        None => {
                            counted.fetch_add(1, Ordering::Relaxed);
                            carry(tcp, turn).await
                        }
                        Some(config) => {
                            if let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                                counted.fetch_add(1, Ordering::Relaxed);
                                carry(stream, turn).await
                            }
                        }
                    }
                });
            }
        });
        StreamFront { addr, connections, task }
    }
}

/// Carries one stream's TURN messages to the UDP server and back.
async fn carry<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static>(
    stream: S,
    turn: SocketAddr,
) {
    use televisit_core::client::turn_framing::{to_stream, StreamDecoder};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else { return };
    if socket.connect(turn).await.is_err() {
        return;
    }
    let socket = Arc::new(socket);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let to_server = {
        let socket = Arc::clone(&socket);
        async move {
            let (mut decoder, mut buffer) = (StreamDecoder::new(), vec![0u8; 65_536]);
            while let Ok(n @ 1..) = reader.read(&mut buffer).await {
                decoder.push(&buffer[..n]);
                while let Ok(Some(message)) = decoder.next_message() {
                    let _ = socket.send(&message).await;
                }
            }
        }
    };
    let to_client = async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok(n) = socket.recv(&mut buffer).await {
            let Ok(bytes) = to_stream(&buffer[..n]) else { continue };
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
    }
}
