//! Join links, checked on the device before any network traffic.
//!
//! A link looks like `https://clinic.example/medical/appointments/<id>/video-call/#token=tv1.<expiry>.<secret>`.
//! The token's middle part is its expiry in Unix seconds, readable without the server; the server
//! still decides (it keeps the real expiry and may have revoked the token).

use crate::error::CallError;

/// A parsed join link.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinLink {
    /// The server's base URL, e.g. `https://clinic.example` (no trailing slash).
    pub server: String,
    /// The appointment id from the path.
    pub appointment_id: String,
    /// The call token (a secret: never log it).
    pub token: String,
    /// The expiry written in the token, ms since the Unix epoch.
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for JoinLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinLink")
            .field("server", &self.server)
            .field("appointment_id", &self.appointment_id)
            .field("token", &"<secret>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl JoinLink {
    /// Parses a link and checks its shape. Does not check expiry (see [`JoinLink::check_expiry`]).
    pub fn parse(link: &str) -> Result<JoinLink, CallError> {
        let link = link.trim();
        let (before, token) = link.split_once("#token=").ok_or(CallError::LinkInvalid)?;
        let (scheme, rest) = before.split_once("://").ok_or(CallError::LinkInvalid)?;
        if scheme != "https" && scheme != "http" {
            return Err(CallError::LinkInvalid);
        }
        let (host, path) = rest.split_once('/').ok_or(CallError::LinkInvalid)?;
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(CallError::LinkInvalid);
        }
        let appointment_id = path
            .strip_prefix("medical/appointments/")
            .and_then(|p| p.strip_suffix("/video-call/"))
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .ok_or(CallError::LinkInvalid)?;
        let expires_at_ms = token_expiry_ms(token).ok_or(CallError::LinkInvalid)?;
        Ok(JoinLink {
            server: format!("{scheme}://{host}"),
            appointment_id: appointment_id.to_owned(),
            token: token.to_owned(),
            expires_at_ms,
        })
    }

    /// [`CallError::LinkExpired`] if the expiry written in the token has passed at `now_ms`.
    pub fn check_expiry(&self, now_ms: i64) -> Result<(), CallError> {
        if self.expires_at_ms <= now_ms {
            Err(CallError::LinkExpired)
        } else {
            Ok(())
        }
    }

    /// The WebSocket URL of a signaling path on this link's server.
    pub fn websocket_url(&self, path: &str) -> String {
        let base = self.server.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
        format!("{base}{path}")
    }
}

/// The expiry in a `tv1.<unix-seconds>.<43 base64url chars>` token, in ms.
fn token_expiry_ms(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (version, expiry, secret) = (parts.next()?, parts.next()?, parts.next()?);
    let well_formed = version == "tv1"
        && parts.next().is_none()
        && secret.len() == 43
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let seconds: i64 = expiry.parse().ok().filter(|_| well_formed)?;
    seconds.checked_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0uAanDDiijKoeu40dfzT714u-EwRBDgcPHhOZOyPJIQ";

    #[test]
    fn a_server_link_parses_into_its_parts() {
        let link = JoinLink::parse(&format!(
            "https://clinic.example:8443/medical/appointments/622f75f9-a6fa/video-call/#token=tv1.1795575184.{SECRET}"
        ))
        .unwrap();
        assert_eq!(link.server, "https://clinic.example:8443");
        assert_eq!(link.appointment_id, "622f75f9-a6fa");
        assert_eq!(link.expires_at_ms, 1_795_575_184_000);
        assert_eq!(link.websocket_url("/api/video-call/ws"), "wss://clinic.example:8443/api/video-call/ws");
        assert!(!format!("{link:?}").contains(SECRET), "the token stays out of debug output");
    }

    #[test]
    fn expiry_is_checked_against_the_time_given() {
        let link =
            JoinLink::parse(&format!("http://h/medical/appointments/a/video-call/#token=tv1.100.{SECRET}"))
                .unwrap();
        assert_eq!(link.check_expiry(99_999), Ok(()));
        assert_eq!(link.check_expiry(100_000), Err(CallError::LinkExpired));
    }

    #[test]
    fn malformed_links_are_invalid() {
        for bad in [
            "",
            "not a link",
            "http://h/medical/appointments/a/video-call/",
            "ftp://h/medical/appointments/a/video-call/#token=tv1.1.".to_owned().as_str(),
            &format!("http://h/other/a/video-call/#token=tv1.100.{SECRET}"),
            &format!("http://h/medical/appointments/a/video-call/#token=tv2.100.{SECRET}"),
            "http://h/medical/appointments/a/video-call/#token=tv1.100.short",
            &format!("http://h/medical/appointments/a/video-call/#token=tv1.soon.{SECRET}"),
        ] {
            assert_eq!(JoinLink::parse(bad), Err(CallError::LinkInvalid), "{bad}");
        }
    }
}
