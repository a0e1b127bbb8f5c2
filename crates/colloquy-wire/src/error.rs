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
