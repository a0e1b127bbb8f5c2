//! TTS errors: `422` with FastAPI's `HttpValidationError` body for requests Colloquy cannot
//! serve as given (spec §1: synthesis, conversion and `POST /v0/tts/voices`), and the
//! server's usual [`ApiError`] (401, 400, 404) for the rest.

use crate::error::ApiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colloquy_wire::{HttpValidationError, ValidationError};
use serde_json::{json, Value};

/// An error of a TTS endpoint.
#[derive(Debug)]
pub enum TtsError {
    /// 422: what is wrong, where (`loc` starts with `body`, `query` or `form`).
    Invalid {
        /// Where, e.g. `["body", "utterances", 0, "text"]`.
        loc: Vec<Value>,
        /// What to change.
        msg: String,
        /// FastAPI's error type (`missing`, `value_error`, …).
        kind: &'static str,
    },
    /// Any other answer.
    Api(ApiError),
}

impl TtsError {
    /// A 422 `value_error` at `loc`.
    pub fn invalid(loc: &[Value], msg: impl Into<String>) -> Self {
        TtsError::Invalid {
            loc: loc.to_vec(),
            msg: msg.into(),
            kind: "value_error",
        }
    }

    /// The message, for logs and socket close reasons.
    pub fn message(&self) -> String {
        match self {
            TtsError::Invalid { loc, msg, .. } => {
                let loc: Vec<String> = loc
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                format!("{}: {msg}", loc.join("."))
            }
            TtsError::Api(e) => e.to_string(),
        }
    }
}

impl From<ApiError> for TtsError {
    fn from(e: ApiError) -> Self {
        TtsError::Api(e)
    }
}

impl From<colloquy_storage::StoreError> for TtsError {
    fn from(e: colloquy_storage::StoreError) -> Self {
        TtsError::Api(e.into())
    }
}

impl IntoResponse for TtsError {
    fn into_response(self) -> Response {
        match self {
            TtsError::Invalid { loc, msg, kind } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(HttpValidationError {
                    detail: vec![ValidationError {
                        loc,
                        msg,
                        error_type: kind.into(),
                    }],
                }),
            )
                .into_response(),
            TtsError::Api(e) => e.into_response(),
        }
    }
}

/// Parses a JSON body into `T`; a failure is a 422 whose `loc` names the field
/// (`["body", "utterances", 0, "text"]` for a missing `text`).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, TtsError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(TtsError::Invalid {
            loc: vec![json!("body")],
            msg: "Field required: send a JSON body".into(),
            kind: "missing",
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value =
        serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| located("body", &e))?;
    de.end().map_err(|e| TtsError::Invalid {
        loc: vec![json!("body")],
        msg: format!("JSON decode error: {e}"),
        kind: "json_invalid",
    })?;
    Ok(value)
}

/// The 422 for a deserialization error at `e.path()`, under `root`.
pub fn located(root: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> TtsError {
    let mut loc = vec![json!(root)];
    for seg in e.path().iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => loc.push(json!(index)),
            serde_path_to_error::Segment::Map { key } => loc.push(json!(key)),
            serde_path_to_error::Segment::Enum { variant } => loc.push(json!(variant)),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    let inner = e.inner().to_string();
    let detail = inner
        .split(" at line ")
        .next()
        .unwrap_or(&inner)
        .to_string();
    if let Some(field) = detail
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        loc.push(json!(field));
        return TtsError::Invalid {
            loc,
            msg: "Field required".into(),
            kind: "missing",
        };
    }
    let kind = if e.inner().is_syntax() || e.inner().is_eof() {
        "json_invalid"
    } else {
        "value_error"
    };
    TtsError::Invalid {
        loc,
        msg: detail,
        kind,
    }
}
