//! When the TURN credentials need renewing before an ICE restart, sans-I/O (the wall-clock time is
//! an argument).
//!
//! The server hands out coturn REST credentials: the user name is `<expiry unix time>:<id>`, the
//! password an HMAC of it, valid until that time (`turn_ttl_seconds`, an hour by default). A visit
//! longer than that whose ICE restarts (a network change, a failed path) reuses the join's
//! credentials, and the TURN server refuses the new allocation: the restart fails. So before a
//! restart, credentials that expire within [`REFRESH_MARGIN_S`] are fetched again
//! (`GET /api/video-call/ice-servers`) and applied first.

use crate::api::IceServer;

/// Credentials that expire within this many seconds are renewed before an ICE restart: a new
/// allocation must outlive the restart, and the allocation refreshes that follow.
pub const REFRESH_MARGIN_S: i64 = 300;

/// When a set of ICE servers' TURN credentials expire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnCredentials {
    /// Unix seconds; `None` when no server has expiring credentials (STUN only, or static ones).
    expires_at_s: Option<i64>,
}

impl TurnCredentials {
    /// The credentials of `servers`, received at `now_s` (Unix seconds) with the server's TTL, if
    /// it said one: the earliest expiry of a REST user name, else `now_s + ttl` when a server has
    /// a user name at all.
    pub fn new(servers: &[IceServer], now_s: i64, ttl_s: Option<u64>) -> TurnCredentials {
        let with_user: Vec<&str> = servers.iter().filter_map(|s| s.username.as_deref()).collect();
        let from_names = with_user.iter().filter_map(|name| rest_expiry(name)).min();
        let from_ttl = ttl_s.filter(|_| !with_user.is_empty()).map(|ttl| now_s + ttl as i64);
        TurnCredentials { expires_at_s: from_names.or(from_ttl) }
    }

    /// When they expire, Unix seconds.
    pub fn expires_at_s(&self) -> Option<i64> {
        self.expires_at_s
    }

    /// Whether to fetch fresh ones before an ICE restart at `now_s`.
    pub fn stale(&self, now_s: i64) -> bool {
        self.expires_at_s.is_some_and(|at| at - now_s < REFRESH_MARGIN_S)
    }
}

/// The expiry of a coturn REST user name, `<unix time>:<id>` (or a bare `<unix time>`).
fn rest_expiry(username: &str) -> Option<i64> {
    username.split(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(username: &str) -> IceServer {
        IceServer {
            urls: vec!["turn:turn.example:3478".into()],
            username: Some(username.into()),
            credential: Some("c".into()),
        }
    }

    #[test]
    fn a_seventy_minute_visit_renews_the_credentials_before_a_restart_after_fifty_five_minutes() {
        let joined_at = 1_800_000_000;
        let stun = IceServer { urls: vec!["stun:stun.example".into()], username: None, credential: None };
        let servers = vec![stun.clone(), turn(&format!("{}:room-patient", joined_at + 3600))];
        let credentials = TurnCredentials::new(&servers, joined_at, None);
        assert_eq!(credentials.expires_at_s(), Some(joined_at + 3600));
        let minute = 60;
        for at in [0, 10, 30, 54] {
            assert!(!credentials.stale(joined_at + at * minute), "a restart at {at} min keeps them");
        }
        for at in [56, 60, 65, 70] {
            assert!(credentials.stale(joined_at + at * minute), "a restart at {at} min renews them");
        }
        // Renewed at 65 min: good until the visit's end.
        let renewed = vec![turn(&format!("{}:room-patient", joined_at + 65 * minute + 3600))];
        let fresh = TurnCredentials::new(&renewed, joined_at + 65 * minute, Some(3600));
        assert!(!fresh.stale(joined_at + 70 * minute));

        assert!(
            !TurnCredentials::new(&[stun], joined_at, Some(3600)).stale(joined_at + 100 * minute),
            "STUN only"
        );
    }

    #[test]
    fn without_a_rest_user_name_the_ttl_tells_the_expiry() {
        let credentials = TurnCredentials::new(&[turn("static-user")], 1000, Some(600));
        assert_eq!(credentials.expires_at_s(), Some(1600));
        assert!(TurnCredentials::new(&[turn("static-user")], 1000, None).expires_at_s().is_none());
        let earliest = TurnCredentials::new(&[turn("2000:a"), turn("1500:b")], 1000, Some(9999));
        assert_eq!(earliest.expires_at_s(), Some(1500), "the earliest user name wins");
    }
}
