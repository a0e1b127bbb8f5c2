//! The REST error body (spec §1.5).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `ErrorResponse`: every non-2xx REST answer carries this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    /// Stable machine-readable code, e.g. `invalid_parameter`, `not_found`.
    pub code: Option<String>,
    /// Short reason phrase of the HTTP status, e.g. `Bad Request`.
    pub error: Option<String>,
    /// What went wrong and what to change, for a person.
    pub message: Option<String>,
}

/// One item of [`HttpValidationError`]: where the request is wrong and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValidationError {
    /// Where: `["body"]`, `["body", "type"]`, `["body", "session_settings", "audio"]`, ….
    pub loc: Vec<serde_json::Value>,
    /// What to fix, for a person.
    pub msg: String,
    /// A short machine-readable kind, e.g. `value_error`, `missing`.
    #[serde(rename = "type")]
    pub error_type: String,
}

/// `HTTPValidationError`: the 422 body of the control plane (and the TTS API), as the SDKs
/// model it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = HTTPValidationError)]
pub struct HttpValidationError {
    /// The problems found.
    pub detail: Vec<ValidationError>,
}
