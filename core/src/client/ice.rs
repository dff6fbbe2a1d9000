//! What this side tells the peer about its ICE candidates, sans-I/O: the SDP and the trickled
//! `ice-candidate` frames as any WebRTC stack expects them, and nothing more than the call allows.
//!
//! - **Interop**: the crate's trickled candidates carry `sdp_mid: ""`, which names no m-line (a
//!   browser's `addIceCandidate` rejects it): [`trickled`] gives them the mid of the bundle's first
//!   m-line instead ([`first_mid`]). When gathering completes the peer hears an end-of-candidates,
//!   an `ice-candidate` with an empty `candidate` ([`end_of_candidates`]), as browsers send it. The
//!   crate does not announce trickle ICE: [`with_trickle_option`] adds `a=ice-options:trickle`.
//! - **Relay-only ("hide my IP")**: [`CandidatePolicy::relay_only`] lets only relay candidates out,
//!   with their related address (the client's own address as the TURN server saw it) blanked to
//!   `0.0.0.0 0`, as browsers do; in the SDP too.

use crate::protocol::IceCandidate;

/// The mid a candidate names when the SDP has none yet (the crate numbers its m-lines from `0`).
pub const DEFAULT_MID: &str = "0";

/// The `a=mid:` of the SDP's first m-line: under BUNDLE every candidate belongs to it.
pub fn first_mid(sdp: &str) -> Option<String> {
    let media = sdp.split_once("\nm=")?.1;
    let section = media.split("\nm=").next().unwrap_or(media);
    section.lines().find_map(|line| line.trim_end().strip_prefix("a=mid:")).map(str::to_owned)
}

/// The SDP with a session-level `a=ice-options:trickle` (RFC 8840), unless it announces it already.
pub fn with_trickle_option(sdp: &str) -> String {
    if sdp
        .lines()
        .any(|l| l.starts_with("a=ice-options:") && l.split_whitespace().any(|o| o.ends_with("trickle")))
    {
        return sdp.to_owned();
    }
    // Session-level attributes go before the first m-line; after `t=` is always valid.
    let mut out = String::with_capacity(sdp.len() + 24);
    let mut added = false;
    for line in sdp.split_inclusive('\n') {
        out.push_str(line);
        if !added && line.starts_with("t=") {
            out.push_str("a=ice-options:trickle\r\n");
            added = true;
        }
    }
    out
}

/// A trickled candidate of the bundle, named by the first m-line's mid and index 0.
pub fn trickled(candidate: String, mid: &str) -> IceCandidate {
    IceCandidate { candidate, sdp_mid: Some(mid.to_owned()), sdp_m_line_index: Some(0) }
}

/// The end-of-candidates frame's candidate: empty, for the bundle's first m-line.
pub fn end_of_candidates(mid: &str) -> IceCandidate {
    trickled(String::new(), mid)
}

/// Which local candidates the peer may learn of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CandidatePolicy {
    /// Only relay candidates, without the client's own address in them.
    pub relay_only: bool,
}

impl CandidatePolicy {
    /// The candidate line (`candidate:…`, with or without the prefix) as the peer may see it, or
    /// `None` if the peer must not see it.
    pub fn outgoing(&self, candidate: &str) -> Option<String> {
        if !self.relay_only {
            return Some(candidate.to_owned());
        }
        let fields: Vec<&str> = candidate.split_whitespace().collect();
        let typ = fields.iter().position(|f| *f == "typ").and_then(|i| fields.get(i + 1));
        if typ != Some(&"relay") {
            return None;
        }
        let mut fields: Vec<String> = fields.into_iter().map(str::to_owned).collect();
        for (key, blank) in [("raddr", "0.0.0.0"), ("rport", "0")] {
            if let Some(i) = fields.iter().position(|f| f == key) {
                if let Some(value) = fields.get_mut(i + 1) {
                    *value = blank.to_owned();
                }
            }
        }
        Some(fields.join(" "))
    }

    /// The SDP as the peer may see it: its `a=candidate:` lines filtered and rewritten like
    /// trickled ones, and `a=ice-options:trickle` added.
    pub fn outgoing_sdp(&self, sdp: &str) -> String {
        let mut out = String::with_capacity(sdp.len());
        for line in sdp.split_inclusive('\n') {
            let Some(candidate) = line.trim_end().strip_prefix("a=") else {
                out.push_str(line);
                continue;
            };
            if !candidate.starts_with("candidate:") {
                out.push_str(line);
            } else if let Some(allowed) = self.outgoing(candidate) {
                out.push_str("a=");
                out.push_str(&allowed);
                out.push_str("\r\n");
            }
        }
        with_trickle_option(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
        a=candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host\r\n\
        a=candidate:2 1 udp 1694498815 198.51.100.7 40000 typ srflx raddr 192.0.2.10 rport 50000\r\n\
        a=candidate:3 1 udp 16777215 203.0.113.5 61000 typ relay raddr 198.51.100.7 rport 40000\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";

    #[test]
    fn candidates_name_the_first_m_lines_mid() {
        assert_eq!(first_mid(SDP).as_deref(), Some("0"));
        assert_eq!(first_mid(&SDP.replace("a=mid:0", "a=mid:audio")).as_deref(), Some("audio"));
        assert_eq!(first_mid("v=0\r\ns=-\r\n"), None, "no m-line, no mid");
        let c = trickled("candidate:1 1 udp 1 192.0.2.10 5 typ host".into(), "0");
        assert_eq!((c.sdp_mid.as_deref(), c.sdp_m_line_index), (Some("0"), Some(0)));
        let end = end_of_candidates("0");
        assert_eq!(
            serde_json::to_value(&end).unwrap(),
            serde_json::json!({"candidate": "", "sdp_mid": "0", "sdp_m_line_index": 0})
        );
    }

    #[test]
    fn the_sdp_announces_trickle_once_at_session_level() {
        let sdp = with_trickle_option(SDP);
        let session = sdp.split("\r\nm=").next().unwrap();
        assert!(session.ends_with("t=0 0\r\na=ice-options:trickle\r\na=group:BUNDLE 0 1"), "{sdp}");
        assert_eq!(with_trickle_option(&sdp), sdp, "not twice");
        assert_eq!(sdp.matches("ice-options").count(), 1);
    }

    #[test]
    fn relay_only_lets_only_relay_candidates_out_without_the_clients_address() {
        let relay_only = CandidatePolicy { relay_only: true };
        assert_eq!(relay_only.outgoing("candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host"), None);
        assert_eq!(
            relay_only.outgoing(
                "candidate:2 1 udp 1694498815 198.51.100.7 40000 typ srflx raddr 192.0.2.10 rport 50000"
            ),
            None
        );
        assert_eq!(
            relay_only
                .outgoing(
                    "candidate:3 1 udp 16777215 203.0.113.5 61000 typ relay raddr 198.51.100.7 rport 40000"
                )
                .as_deref(),
            Some("candidate:3 1 udp 16777215 203.0.113.5 61000 typ relay raddr 0.0.0.0 rport 0")
        );
        let sdp = relay_only.outgoing_sdp(SDP);
        assert!(!sdp.contains("192.0.2.10") && !sdp.contains("198.51.100.7"), "{sdp}");
        assert!(sdp
            .contains("a=candidate:3 1 udp 16777215 203.0.113.5 61000 typ relay raddr 0.0.0.0 rport 0\r\n"));
        assert!(sdp.contains("a=ice-options:trickle\r\n") && sdp.contains("a=mid:1\r\n"));

        let all = CandidatePolicy::default();
        assert_eq!(all.outgoing_sdp(SDP), with_trickle_option(SDP), "everything goes out by default");
    }
}
