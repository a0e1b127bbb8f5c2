//! The one HTTP error type. Every non-2xx answer carries the spec's `ErrorResponse` body.
//!
//! Policy: client mistakes say exactly what to change; internal failures are logged with
//! their cause and answered with a generic message and the request id, never the cause.

use axum::http::StatusCode;
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
    /// 401: credentials are missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
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
    /// 500: logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

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
        let (status, code, message) = match self {
            ApiError::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
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
        (status, Json(body)).into_response()
    }
}
