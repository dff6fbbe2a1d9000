//! The typed errors an app shows. Every server refusal and every local failure maps to one of these,
//! each with a message that says what happened and what to do next.

use crate::protocol::ErrorCode;

/// Why a call could not start, or had to stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The link is not a Televisit join link, or the server does not know its token.
    #[error("this link is not valid: check it, or ask the clinic for a new one")]
    LinkInvalid,
    /// The link's token expired.
    #[error("this link has expired: ask the clinic for a new one")]
    LinkExpired,
    /// A newer link replaced this one.
    #[error("this link was replaced by a newer one: use the latest link from the clinic")]
    LinkReplaced,
    /// The call has ended; nobody can join it any more.
    #[error("this call has ended")]
    CallEnded,
    /// The doctor has not started the call yet.
    #[error("the doctor has not started this call yet: try again in a moment")]
    CallNotStarted,
    /// The link belongs to another appointment, or the role may not do this.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The server cannot be reached (network down, wrong address, server stopped).
    #[error("cannot reach the clinic's server: check your connection ({0})")]
    ServerUnreachable(String),
    /// Another device joined with the same link and took over this call.
    #[error("this call continued on another device")]
    JoinedElsewhere,
    /// The server refused something else.
    #[error("the server refused: {message} ({code})")]
    Server {
        /// The server's code, e.g. `rate_limited`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The media connection could not be made or was lost for good.
    #[error("the video connection failed: {0}")]
    Media(String),
    /// The call client was closed.
    #[error("the call client is closed")]
    Closed,
}

impl CallError {
    /// The typed error for a server error code and message.
    pub fn from_server(code: ErrorCode, message: &str) -> CallError {
        match code {
            ErrorCode::InvalidToken => CallError::LinkInvalid,
            ErrorCode::TokenExpired => CallError::LinkExpired,
            ErrorCode::TokenRevoked => CallError::LinkReplaced,
            ErrorCode::CallEnded => CallError::CallEnded,
            ErrorCode::CallNotStarted => CallError::CallNotStarted,
            ErrorCode::Forbidden | ErrorCode::NotFound | ErrorCode::OriginNotAllowed => {
                CallError::NotAllowed(message.to_owned())
            }
            ErrorCode::Replaced => CallError::JoinedElsewhere,
            other => CallError::Server { code: other.as_str().to_owned(), message: message.to_owned() },
        }
    }

    /// Whether retrying the same thing can help (network trouble) or not (the link is bad).
    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::ServerUnreachable(_) | CallError::CallNotStarted)
    }

    /// A heading for this error, above its message (the web page's error card).
    pub fn title(&self) -> &'static str {
        match self {
            CallError::LinkInvalid => "This link is not valid",
            CallError::LinkExpired => "This link has expired",
            CallError::LinkReplaced => "This link was replaced",
            CallError::CallEnded => "This call has ended",
            CallError::CallNotStarted => "The call has not started yet",
            CallError::NotAllowed(_) => "Not allowed",
            CallError::ServerUnreachable(_) => "Cannot reach the clinic",
            CallError::JoinedElsewhere => "The call continued elsewhere",
            CallError::Server { .. } => "Something went wrong",
            CallError::Media(_) => "The video connection failed",
            CallError::Closed => "The call was closed",
        }
    }
}

/// Whether a server `error` with this code ends the call (the link cannot be used any more, or
/// another connection took over); any other code is shown and the call goes on.
pub fn ends_the_call(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidToken
            | ErrorCode::TokenExpired
            | ErrorCode::TokenRevoked
            | ErrorCode::CallEnded
            | ErrorCode::Replaced
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_refusals_map_to_errors_an_app_can_show() {
        assert_eq!(CallError::from_server(ErrorCode::TokenExpired, "x"), CallError::LinkExpired);
        assert_eq!(CallError::from_server(ErrorCode::CallEnded, "x"), CallError::CallEnded);
        assert_eq!(
            CallError::from_server(ErrorCode::NotFound, "no such appointment"),
            CallError::NotAllowed("no such appointment".into())
        );
        assert!(CallError::LinkExpired.to_string().contains("ask the clinic"));
        assert!(!CallError::LinkInvalid.is_retryable());
    }

    /// One server error code of the shared rules (`call/rules_vectors.json`, also run against the
    /// web page's `rules.js`): whether it ends the call, and what the user reads.
    #[derive(serde::Deserialize)]
    struct ErrorVector {
        code: ErrorCode,
        ends_call: bool,
        retryable: bool,
        title: String,
        message: String,
    }

    #[derive(serde::Deserialize)]
    struct Vectors {
        server_message: String,
        errors: Vec<ErrorVector>,
    }

    #[test]
    fn the_shared_error_vectors_pass_the_same_as_in_the_web_page() {
        let vectors: Vectors =
            serde_json::from_str(include_str!("call/rules_vectors.json")).expect("valid vectors");
        for v in &vectors.errors {
            let error = CallError::from_server(v.code, &vectors.server_message);
            let code = v.code.as_str();
            assert_eq!(ends_the_call(v.code), v.ends_call, "{code}: ends the call");
            assert_eq!(error.is_retryable(), v.retryable, "{code}: retryable");
            assert_eq!(error.title(), v.title, "{code}: title");
            assert_eq!(error.to_string(), v.message, "{code}: message");
        }
        let codes: std::collections::HashSet<_> = vectors.errors.iter().map(|v| v.code).collect();
        assert_eq!(codes.len(), 21, "every error code of protocol.rs has one vector");
    }
}
