//! One error type for every HTTP handler, answered as `{ "error": { "code", "message" } }`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use televisit_protocol::api::{ErrorBody, ErrorDetail};
use televisit_protocol::ErrorCode;

/// An API error: a code, a message for people, and the HTTP status that goes with the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What went wrong and what to do next.
    pub message: String,
    /// Seconds before trying again (the `Retry-After` header), for `rate_limited`.
    pub retry_after_seconds: Option<u64>,
}

/// Result of an API handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after_seconds: None }
    }

    /// 429: too many failed attempts from this address; try again in `seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        ApiError {
            retry_after_seconds: Some(seconds),
            ..ApiError::new(
                ErrorCode::RateLimited,
                format!("too many failed attempts from your address: try again in {seconds} s"),
            )
        }
    }

    /// The HTTP status for the code.
    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::Unauthorized | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::TokenExpired | ErrorCode::TokenRevoked | ErrorCode::CallEnded => StatusCode::GONE,
            ErrorCode::Forbidden | ErrorCode::OriginNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict | ErrorCode::CallNotStarted | ErrorCode::Replaced => StatusCode::CONFLICT,
            ErrorCode::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServerBusy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Malformed
            | ErrorCode::UnknownType
            | ErrorCode::InvalidFrame
            | ErrorCode::NotJoined
            | ErrorCode::BadRequest
            | ErrorCode::IdleTimeout => StatusCode::BAD_REQUEST,
        }
    }

    /// 404 for an appointment that does not exist or that the caller may not see (the same answer
    /// for both, so ids cannot be probed).
    pub fn appointment_not_found() -> Self {
        ApiError::new(ErrorCode::NotFound, "no such appointment")
    }

    /// 500; the cause goes to the log, not to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        ApiError::new(ErrorCode::Internal, "something went wrong on the server; try again")
    }
}

/// Seconds a client waits before retrying after `server_busy` (the `Retry-After` header).
pub const BUSY_RETRY_AFTER_SECONDS: u64 = 2;

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::store::is_busy(&e) {
            // Writes wait their turn (see `Store`); this is the bound on that wait, not contention.
            tracing::warn!(cause = %e, "database busy beyond the write wait");
            ApiError::new(ErrorCode::ServerBusy, "the server is busy; try again in a moment")
        } else {
            ApiError::internal(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message.clone() } };
        let mut response = (self.status(), Json(body)).into_response();
        let retry_after = match self.code {
            ErrorCode::ServerBusy => Some(BUSY_RETRY_AFTER_SECONDS),
            _ => self.retry_after_seconds,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Turns axum's JSON body rejections into the one error shape.
pub fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, format!("invalid JSON body: {}", rejection.body_text()))
}
