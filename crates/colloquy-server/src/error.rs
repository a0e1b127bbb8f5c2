//! The one HTTP error type. Every non-2xx answer carries the spec's `ErrorResponse` body.
//!
//! Policy: client mistakes say exactly what to change; internal failures are logged with
//! their cause and answered with a generic message and the request id, never the cause.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use colloquy_storage::StoreError;
use colloquy_wire::ErrorResponse;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a parameter is malformed or out of range.
    #[error("{message}")]
    BadRequest {
        /// Stable code, e.g. `invalid_parameter`.
        code: &'static str,
        /// What to fix.
        message: String,
    },
    /// 401: no credentials were given.
    #[error("{0}")]
    Unauthorized(String),
    /// 401: credentials were given and are wrong (unknown, revoked or expired). The response
    /// carries [`AuthFailed`], which the failed-authentication limit counts
    /// (`crate::limits`).
    #[error("{0}")]
    BadCredentials(String),
    /// 403: a signature or permission check failed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource for this account.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 416: a `Range` outside the file.
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// 429: too many failed authentications from the client's address; `Retry-After` says
    /// when the next attempt will be checked normally again.
    #[error("too many failed authentications; retry after {retry_after_secs} s")]
    TooManyAuthFailures {
        /// Seconds until the address is below the limit again (at least 1).
        retry_after_secs: u64,
        /// The limit, failures per minute.
        limit: u32,
    },
    /// 503: the server could not do it now; a retry may work.
    #[error("{0}")]
    Unavailable(String),
    /// 500: logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Marks a response as a failed authentication with credentials (a 401 from
/// [`ApiError::BadCredentials`]), for the failed-authentication limit.
#[derive(Debug, Clone, Copy)]
pub struct AuthFailed;

impl ApiError {
    /// A 400 with code `invalid_parameter`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "invalid_parameter",
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let mut auth_failed = false;
        let (status, code, message) = match self {
            ApiError::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            ApiError::BadCredentials(m) => {
                auth_failed = true;
                (StatusCode::UNAUTHORIZED, "unauthorized", m)
            }
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::MethodNotAllowed(m) => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", m)
            }
            ApiError::RangeNotSatisfiable(m) => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                m,
            ),
            ApiError::TooManyAuthFailures {
                retry_after_secs,
                limit,
            } => {
                retry_after = Some(retry_after_secs);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    format!(
                        "too many failed authentications from your address (the limit is \
                         {limit} a minute); wait {retry_after_secs} seconds before trying \
                         again. Correct credentials keep working meanwhile."
                    ),
                )
            }
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the server failed to handle this request; the cause is in the server log \
                     under this request's x-request-id"
                        .to_string(),
                )
            }
        };
        let body = ErrorResponse {
            code: Some(code.to_string()),
            error: Some(status.canonical_reason().unwrap_or("Error").to_string()),
            message: Some(message),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if auth_failed {
            response.extensions_mut().insert(AuthFailed);
        }
        response
    }
}
