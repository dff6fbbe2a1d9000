//! Secrets: call tokens, doctor app tokens, session cookies, TURN credentials, and the clock that
//! decides expiry.
//!
//! A secret is 256 random bits. Only its SHA-256 is stored; comparisons are constant-time. A call
//! token carries its expiry in clear (`tv1.<expiry-unix-seconds>.<random>`) so a client can tell an
//! expired link before it contacts the server; the server never trusts that field, it reads the
//! stored expiry.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix and version of call tokens.
pub const CALL_TOKEN_PREFIX: &str = "tv1";

/// The server's clock, in ms since the Unix epoch. Tests move it forward instead of sleeping.
#[derive(Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// Now.
    pub fn now_ms(&self) -> i64 {
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        system + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.offset_ms.fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}

/// 256 random bits, base64url without padding (43 characters).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new call token expiring at `expires_at_ms`.
pub fn new_call_token(expires_at_ms: i64) -> String {
    format!("{CALL_TOKEN_PREFIX}.{}.{}", expires_at_ms.div_euclid(1000), random_secret())
}

/// Whether a string has the shape of a call token (cheap check before any lookup).
pub fn looks_like_call_token(token: &str) -> bool {
    let mut parts = token.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(CALL_TOKEN_PREFIX), Some(expiry), Some(random), None)
            if !expiry.is_empty() && expiry.bytes().all(|b| b.is_ascii_digit())
                && random.len() == 43
                && random.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    )
}

/// SHA-256 of a secret, hex: what the database stores.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time equality of two strings (e.g. a stored hash and a computed one, API keys).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// TURN credentials in coturn's REST-API scheme (`use-auth-secret`): the user name is
/// `<expiry-unix-seconds>:<id>`, the password base64(HMAC-SHA1(secret, user name)).
pub fn turn_credentials(secret: &str, id: &str, expires_at_unix: i64) -> (String, String) {
    let username = format!("{expires_at_unix}:{id}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let credential = STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

/// Argon2id hash of a password, as a PHC string.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).expect("16 bytes is a valid salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

/// Checks a password against a PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc)
        .map(|hash| argon2::Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_tokens_are_long_random_and_recognisable() {
        let a = new_call_token(1_800_000_000_000);
        let b = new_call_token(1_800_000_000_000);
        assert_ne!(a, b);
        assert!(a.starts_with("tv1.1800000000."), "{a}");
        assert!(looks_like_call_token(&a));
        assert!(!looks_like_call_token("tv1.x.abc"));
        assert!(!looks_like_call_token(&format!("{a}.extra")));
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }

    #[test]
    fn turn_credentials_match_coturns_rest_scheme() {
        // Computed independently: printf '1700000000:abc' | openssl dgst -sha1 -hmac secret -binary | base64
        let (user, pass) = turn_credentials("secret", "abc", 1_700_000_000);
        assert_eq!(user, "1700000000:abc");
        assert_eq!(pass, "JHgegmW+/B84iarkT5SFAOC1Iqw=");
    }

    #[test]
    fn passwords_verify_only_with_the_right_one() {
        let phc = hash_password("correct horse");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn the_clock_moves_forward_for_every_clone() {
        let clock = Clock::default();
        let other = clock.clone();
        let before = other.now_ms();
        clock.advance(std::time::Duration::from_secs(3600));
        assert!(other.now_ms() - before >= 3_600_000);
    }
}
