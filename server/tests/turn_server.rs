//! The embedded TURN server over each of its transports (UDP, TCP, TLS): a TURN client's
//! Allocate request, built by hand, with the credentials `POST /api/video-call/join` issues and
//! sent to the URLs it advertises. A request without credentials, with a wrong password or with
//! expired credentials is refused with 401; a good one gets a relayed address at the external IP.

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
    METHOD_ALLOCATE,
};
use stun::textattrs::{Nonce, Realm, TextAttribute};
use televisit_server::secrets::Clock;
use televisit_server::turn::{TlsListen, TurnConfig};
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

#[tokio::test]
async fn allocations_over_udp_tcp_and_tls_need_the_rest_credentials_the_server_issues() {
    let db = TempDb::new();
    let dir = std::env::temp_dir().join(format!("televisit-turn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, der) = certificate(&dir);
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let clock = Clock::default();
    let server = TestServer::start_with(&db, clock.clone(), |c| {
        c.turn_secret = Some("embedded-secret".into());
        c.embedded_turn = Some(TurnConfig {
            listen: local,
            tls: Some(TlsListen { listen: local, cert, key }),
            external_ip: "127.0.0.1".parse().unwrap(),
            tls_host: Some("localhost".into()),
            relay_ports: Some((40000, 40999)),
            realm: "televisit".into(),
        });
    })
    .await;
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
