//! Which signaling transport to use, sans-I/O: the WebSocket, or the HTTP fallback
//! (`POST`/long-poll `GET /api/video-call/signal`) for networks whose proxies strip upgrades.
//!
//! With [`SignalingTransport::Auto`] a call starts on the WebSocket and moves to HTTP for the rest
//! of the call when the upgrade is answered with an HTTP status (a proxy or firewall refusing it),
//! or when the WebSocket failed to open [`UNREACHABLE_BEFORE_FALLBACK`] times in a row and never
//! opened in this call (a proxy that swallows upgrades). Once a WebSocket opened, later failures
//! to reach the server are a network outage, not a proxy, and keep the WebSocket. A new network
//! (Wi-Fi to cellular) may have no such proxy: the next connection tries the WebSocket again.

/// The app's setting: which transport signaling may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignalingTransport {
    /// The WebSocket, falling back to HTTP when it cannot open.
    #[default]
    Auto,
    /// The WebSocket only (never the fallback).
    WebSocketOnly,
    /// The HTTP fallback only (never tries the WebSocket).
    HttpOnly,
}

/// A transport the driver opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The WebSocket at the join response's `websocket_path`.
    WebSocket,
    /// The HTTP fallback at the join response's `signal_path`.
    Http,
}

/// Why a signaling connection could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// Something answered, with this HTTP status instead of the upgrade (or the join).
    Refused {
        /// The status, e.g. 400 or 403 from a proxy.
        http_status: u16,
    },
    /// No answer: refused connection, no route, timeout, broken TLS.
    Unreachable,
}

/// WebSocket attempts that reach nothing, in a row, before `Auto` tries HTTP.
pub const UNREACHABLE_BEFORE_FALLBACK: u32 = 3;

/// The transport decision of one call.
#[derive(Debug, Clone)]
pub struct TransportPolicy {
    setting: SignalingTransport,
    current: Transport,
    unreachable_in_a_row: u32,
    websocket_opened: bool,
}

impl Default for TransportPolicy {
    fn default() -> Self {
        TransportPolicy::new(SignalingTransport::Auto)
    }
}

impl TransportPolicy {
    /// A policy following the app's setting.
    pub fn new(setting: SignalingTransport) -> TransportPolicy {
        let current = match setting {
            SignalingTransport::HttpOnly => Transport::Http,
            SignalingTransport::Auto | SignalingTransport::WebSocketOnly => Transport::WebSocket,
        };
        TransportPolicy { setting, current, unreachable_in_a_row: 0, websocket_opened: false }
    }

    /// The transport to open next.
    pub fn current(&self) -> Transport {
        self.current
    }

    /// The current transport opened.
    pub fn opened(&mut self) {
        self.unreachable_in_a_row = 0;
        if self.current == Transport::WebSocket {
            self.websocket_opened = true;
        }
    }

    /// The device's network changed: start over as at the beginning of the call.
    pub fn network_changed(&mut self) {
        *self = TransportPolicy::new(self.setting);
    }

    /// The current transport could not be opened; returns true when this moved signaling to HTTP.
    pub fn open_failed(&mut self, failure: OpenFailure) -> bool {
        if self.setting != SignalingTransport::Auto || self.current == Transport::Http {
            return false;
        }
        let fall_back = match failure {
            OpenFailure::Refused { .. } => true,
            OpenFailure::Unreachable => {
                self.unreachable_in_a_row += 1;
                !self.websocket_opened && self.unreachable_in_a_row >= UNREACHABLE_BEFORE_FALLBACK
            }
        };
        if fall_back {
            self.current = Transport::Http;
        }
        fall_back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: OpenFailure = OpenFailure::Refused { http_status: 403 };

    #[test]
    fn auto_moves_to_http_at_once_when_the_upgrade_is_refused_with_a_status() {
        let mut policy = TransportPolicy::new(SignalingTransport::Auto);
        assert_eq!(policy.current(), Transport::WebSocket);
        assert!(policy.open_failed(REFUSED));
        assert_eq!(policy.current(), Transport::Http);
        // It stays there: failures of HTTP are network trouble, retried on HTTP.
        assert!(!policy.open_failed(OpenFailure::Unreachable));
        assert!(!policy.open_failed(REFUSED));
        assert_eq!(policy.current(), Transport::Http);
    }

    #[test]
    fn auto_moves_to_http_after_three_unreachable_websockets_in_a_row() {
        let mut policy = TransportPolicy::new(SignalingTransport::Auto);
        assert!(!policy.open_failed(OpenFailure::Unreachable));
        assert!(!policy.open_failed(OpenFailure::Unreachable));
        assert_eq!(policy.current(), Transport::WebSocket);
        assert!(policy.open_failed(OpenFailure::Unreachable));
        assert_eq!(policy.current(), Transport::Http);
    }

    #[test]
    fn a_websocket_that_opened_once_keeps_being_retried_through_an_outage() {
        let mut policy = TransportPolicy::new(SignalingTransport::Auto);
        policy.opened();
        for _ in 0..10 {
            assert!(!policy.open_failed(OpenFailure::Unreachable));
        }
        assert_eq!(policy.current(), Transport::WebSocket);
        // A refusal with a status is still a proxy (a network change to one that strips upgrades).
        assert!(policy.open_failed(REFUSED));
        assert_eq!(policy.current(), Transport::Http);
    }

    #[test]
    fn a_new_network_tries_the_websocket_again() {
        let mut policy = TransportPolicy::new(SignalingTransport::Auto);
        policy.opened();
        policy.open_failed(REFUSED);
        policy.network_changed();
        assert_eq!(policy.current(), Transport::WebSocket);
        // And counts from zero again, as if the WebSocket had never opened.
        policy.open_failed(OpenFailure::Unreachable);
        policy.open_failed(OpenFailure::Unreachable);
        assert!(policy.open_failed(OpenFailure::Unreachable));
        let mut http = TransportPolicy::new(SignalingTransport::HttpOnly);
        http.network_changed();
        assert_eq!(http.current(), Transport::Http);
    }

    #[test]
    fn the_settings_force_one_transport() {
        let mut websocket = TransportPolicy::new(SignalingTransport::WebSocketOnly);
        assert!(!websocket.open_failed(REFUSED));
        for _ in 0..5 {
            assert!(!websocket.open_failed(OpenFailure::Unreachable));
        }
        assert_eq!(websocket.current(), Transport::WebSocket);
        let mut http = TransportPolicy::new(SignalingTransport::HttpOnly);
        assert_eq!(http.current(), Transport::Http);
        assert!(!http.open_failed(REFUSED));
        assert_eq!(http.current(), Transport::Http);
    }
}
