//! The control plane's HTTP error: the spec's `ErrorResponse` for everything but a bad
//! message, which is a `422` `HTTPValidationError` (as the SDKs expect).

use crate::error::ApiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colloquy_wire::{HttpValidationError, ValidationError};
use serde_json::Value;

/// An error answered by a control-plane endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// 401, 404, 500, … as every REST endpoint answers them.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// 422: the body is not a message the control plane takes.
    #[error("{message}")]
    Invalid {
        /// Where (`["body", "type"]`).
        loc: Vec<&'static str>,
        /// What to fix.
        message: String,
    },
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        match self {
            ControlError::Api(e) => e.into_response(),
            ControlError::Invalid { loc, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(HttpValidationError {
                    detail: vec![ValidationError {
                        loc: loc.into_iter().map(Value::from).collect(),
                        msg: message,
                        error_type: "value_error".into(),
                    }],
                }),
            )
                .into_response(),
        }
    }
}
