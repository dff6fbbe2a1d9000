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
