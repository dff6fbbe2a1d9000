//! The embedded TURN server over each of its transports (UDP, TCP, TLS): a TURN client's
//! Allocate request, built by hand, with the credentials `POST /api/video-call/join` issues and
//! sent to the URLs it advertises. A request without credentials, with a wrong password or with
//! expired credentials is refused with 401; a good one gets a relayed address at the external IP.
//! TCP and TLS connections are capped per address and closed when they never allocate.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::{ErrorCodeAttribute, CODE_BAD_REQUEST, CODE_UNAUTHORIZED};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE,
    METHOD_ALLOCATE, METHOD_BINDING,
};
use stun::textattrs::{Nonce, Realm, TextAttribute};
use televisit_server::secrets::Clock;
use televisit_server::turn::{StreamLimits, TlsListen, TurnConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;

/// A way to the TURN server: UDP datagrams or a byte stream (TCP, TLS).
enum Transport {
    Udp(tokio::net::UdpSocket),
    Stream(Box<dyn Stream>),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Transport {
    async fn exchange(&mut self, request: &Message) -> Message {
        let raw = match self {
            Transport::Udp(socket) => {
                socket.send(&request.raw).await.unwrap();
                let mut buf = vec![0u8; 1500];
                let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                buf.truncate(n);
                buf
            }
            Transport::Stream(stream) => {
                stream.write_all(&request.raw).await.unwrap();
                let mut header = [0u8; 20];
                tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut header))
                    .await
                    .unwrap()
                    .unwrap();
                let mut body = vec![0u8; u16::from_be_bytes([header[2], header[3]]) as usize];
                stream.read_exact(&mut body).await.unwrap();
                [&header[..], &body].concat()
            }
        };
        let mut response = Message { raw, ..Default::default() };
        response.decode().unwrap();
        response
    }
}

/// Allocate with these credentials, as a TURN client does: first without (to learn the realm
/// and nonce), then signed. Returns the signed request's response.
async fn allocate(transport: &mut Transport, username: &str, password: &str) -> Message {
    let mut first = Message::new();
    first
        .build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(RequestedTransport { protocol: PROTO_UDP }),
            Box::new(FINGERPRINT),
        ])
        .unwrap();
    let challenge = transport.exchange(&first).await;
    assert_eq!(challenge.typ.class, CLASS_ERROR_RESPONSE, "anonymous allocations are refused");
    let mut code = ErrorCodeAttribute::default();
    code.get_from(&challenge).unwrap();
    assert!(code.code == CODE_UNAUTHORIZED, "{code}");
    let realm = Realm::get_from_as(&challenge, ATTR_REALM).unwrap();
    assert_eq!(realm.text, "televisit");
    let nonce = Nonce::get_from_as(&challenge, ATTR_NONCE).unwrap();
    let mut signed = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        Box::new(RequestedTransport { protocol: PROTO_UDP }),
        Box::new(TextAttribute::new(ATTR_USERNAME, username.into())),
        Box::new(realm.clone()),
        Box::new(nonce),
        Box::new(MessageIntegrity::new_long_term_integrity(
            username.into(),
            realm.text.clone(),
            password.into(),
        )),
        Box::new(FINGERPRINT),
    ];
    signed.build(&setters).unwrap();
    transport.exchange(&signed).await
}

/// A refusal: the `turn` crate answers 400 (not RFC 5389's 401) to a request whose signature or
/// user name does not check out; either way no allocation is made.
fn assert_refused(response: &Message) {
    assert_eq!(response.typ.class, CLASS_ERROR_RESPONSE, "{response}");
    let mut code = ErrorCodeAttribute::default();
    code.get_from(response).unwrap();
    assert!(code.code == CODE_UNAUTHORIZED || code.code == CODE_BAD_REQUEST, "{code}");
    let mut relayed = RelayedAddress::default();
    assert!(relayed.get_from(response).is_err(), "no relayed address");
}

fn relayed_ip(response: &Message) -> IpAddr {
    assert_eq!(response.typ.class, CLASS_SUCCESS_RESPONSE, "{response}");
    let mut relayed = RelayedAddress::default();
    relayed.get_from(response).unwrap();
    relayed.ip
}

/// A self-signed certificate for `localhost`, written to PEM files.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, private) = (dir.join("turn.pem"), dir.join("turn.key"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&private, key.signing_key.serialize_pem()).unwrap();
    (cert, private, key.cert.der().to_vec())
}

async fn connect(url: &str, trusted: &[u8]) -> Transport {
    // turn:127.0.0.1:40000?transport=udp, turns:localhost:40001?transport=tcp
    let (scheme, rest) = url.split_once(':').unwrap();
    let (host_port, transport) = rest.split_once("?transport=").unwrap();
    let port: u16 = host_port.rsplit_once(':').unwrap().1.parse().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match (scheme, transport) {
        ("turn", "udp") => {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.connect(addr).await.unwrap();
            Transport::Udp(socket)
        }
        ("turn", "tcp") => Transport::Stream(Box::new(tokio::net::TcpStream::connect(addr).await.unwrap())),
        ("turns", "tcp") => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(rustls::pki_types::CertificateDer::from(trusted.to_vec())).unwrap();
            let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            Transport::Stream(Box::new(connector.connect(name, tcp).await.unwrap()))
        }
        other => panic!("unexpected URL {url}: {other:?}"),
    }
}

/// A server whose embedded TURN listens on loopback (UDP and TCP, and TLS with a fresh
/// certificate for `localhost` written to `dir`); returns it and the certificate's DER.
async fn server_with_turn(
    db: &TempDb,
    dir: &std::path::Path,
    clock: Clock,
    relay_ports: (u16, u16),
    streams: StreamLimits,
) -> (TestServer, Vec<u8>) {
    let (cert, key, der) = certificate(dir);
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = TestServer::start_with(db, clock, |c| {
        c.turn_secret = Some("embedded-secret".into());
        c.embedded_turn = Some(TurnConfig {
            listen: local,
            tls: Some(TlsListen { listen: local, cert, key }),
            external_ip: "127.0.0.1".parse().unwrap(),
            tls_host: Some("localhost".into()),
            relay_ports: Some(relay_ports),
            realm: "televisit".into(),
            streams,
        });
    })
    .await;
    (server, der)
}

#[tokio::test]
async fn allocations_over_udp_tcp_and_tls_need_the_rest_credentials_the_server_issues() {
    let db = TempDb::new();
    let dir = std::env::temp_dir().join(format!("televisit-turn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Clock::default();
    let (server, der) = server_with_turn(&db, &dir, clock.clone(), (40000, 40999), Default::default()).await;
    let visit = server.started_visit().await;
    let (code, join) = server.call("POST", "/api/video-call/join", &visit.patient_token).await;
    assert_eq!(code, 200);
    let turn = join["ice_servers"].as_array().unwrap().iter().find(|s| s["username"].is_string()).unwrap();
    let (username, password) = (turn["username"].as_str().unwrap(), turn["credential"].as_str().unwrap());
    let urls: Vec<&str> = turn["urls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    assert_eq!(urls.len(), 3, "UDP, TCP and TLS: {urls:?}");
    assert!(urls[2].starts_with("turns:localhost:"), "{urls:?}");
    for url in &urls {
        let mut transport = connect(url, &der).await;
        assert_refused(&allocate(&mut transport, username, "not-the-password").await);
        let mut transport = connect(url, &der).await;
        let ip = relayed_ip(&allocate(&mut transport, username, password).await);
        assert_eq!(ip.to_string(), "127.0.0.1", "relayed at the external IP ({url})");
    }
    // Once the credentials' lifetime has passed they are refused.
    clock.advance(Duration::from_secs(3601));
    let mut transport = connect(urls[0], &der).await;
    assert_refused(&allocate(&mut transport, username, password).await);
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether the server closes `stream` within `limit` (reads return end of stream or an error).
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn tcp_from(from: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn tcp_and_tls_connections_are_capped_per_address_and_closed_when_they_never_allocate() {
    let db = TempDb::new();
    let dir = std::env::temp_dir().join(format!("televisit-turn-caps-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let streams = StreamLimits { per_address: 3, total: 100, allocate_within: Duration::from_secs(1) };
    let (server, der) = server_with_turn(&db, &dir, Clock::default(), (41000, 41999), streams).await;
    let turn = server.server.turn.as_ref().unwrap();
    let (tcp, tls) = (turn.addr, turn.tls_addr.unwrap());
    let visit = server.started_visit().await;
    let (_, join) = server.call("POST", "/api/video-call/join", &visit.patient_token).await;
    let ice = join["ice_servers"].as_array().unwrap().iter().find(|s| s["username"].is_string()).unwrap();
    let (username, password) = (ice["username"].as_str().unwrap(), ice["credential"].as_str().unwrap());
    let tls_url = format!("turns:localhost:{}?transport=tcp", tls.port());

    // Three silent TCP connections from one address; a fourth (to the TLS port: the cap counts
    // both) is closed at once.
    let opened = std::time::Instant::now();
    let mut silent_tcp = Vec::new();
    for _ in 0..3 {
        silent_tcp.push(tcp_from("127.0.0.2", tcp).await);
    }
    let mut over = tcp_from("127.0.0.2", tls).await;
    assert!(closed_within(&mut over, Duration::from_millis(500)).await, "a fourth from one address");
    // A TLS connection (from 127.0.0.1) that completes its handshake and never allocates.
    let mut silent_tls = connect(&tls_url, &der).await;
    // Another address allocates meanwhile, and keeps its connection past the deadline.
    let mut other = Transport::Stream(Box::new(tcp_from("127.0.0.3", tcp).await));
    relayed_ip(&allocate(&mut other, username, password).await);

    for stream in &mut silent_tcp {
        assert!(closed_within(stream, Duration::from_secs(4)).await, "a TCP connection without allocation");
    }
    if let Transport::Stream(stream) = &mut silent_tls {
        assert!(closed_within(stream, Duration::from_secs(4)).await, "a TLS connection without allocation");
    }
    let elapsed = opened.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
    let mut binding = Message::new();
    binding
        .build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_BINDING, CLASS_REQUEST)),
            Box::new(FINGERPRINT),
        ])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = other.exchange(&binding).await;
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE, "the allocated connection is still served");
    // Places freed: the first address connects and allocates again.
    let mut again = Transport::Stream(Box::new(tcp_from("127.0.0.2", tcp).await));
    relayed_ip(&allocate(&mut again, username, password).await);
    server.server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
