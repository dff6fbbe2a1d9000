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
}
