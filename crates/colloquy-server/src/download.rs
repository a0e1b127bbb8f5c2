//! `GET /v0/evi/audio/<user_id>/<chat_id>/reconstructed_audio.mp4?expires=…&signature=…`:
//! streams a reconstructed MP4 from the local object store, honouring `Range`.
//! The signature is the only credential: tampered, expired or foreign links get 403.

use crate::clock::now_ms;
use crate::error::ApiError;
use crate::signing::DOWNLOAD_PREFIX;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use object_store::{GetOptions, GetRange};
use std::ops::Range;

/// A `Range` header that cannot be satisfied (answered with 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Parses a single-range `Range: bytes=…` header against an object of `size` bytes.
/// `Ok(None)` means the whole object.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: answer with the whole file
    }
    let (start, end) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let range = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| Unsatisfiable)?;
            if n == 0 {
                return Err(Unsatisfiable);
            }
            size.saturating_sub(n)..size
        }
        (start, "") => start.parse::<u64>().map_err(|_| Unsatisfiable)?..size,
        (start, end) => {
            let (s, e): (u64, u64) = (
                start.parse().map_err(|_| Unsatisfiable)?,
                end.parse().map_err(|_| Unsatisfiable)?,
            );
            if e < s {
                return Err(Unsatisfiable);
            }
            s..(e + 1).min(size)
        }
    };
    if range.start >= size {
        return Err(Unsatisfiable);
    }
    Ok(Some(range))
}

/// Download a reconstructed MP4 through a signed link (the `signed_audio_url`).
#[utoipa::path(get, path = "/v0/evi/audio/{user_id}/{chat_id}/reconstructed_audio.mp4", tag = "audio",
    params(
        ("user_id" = String, Path, description = "Owner id (UUID)"),
        ("chat_id" = String, Path, description = "Chat id (UUID)"),
        ("expires" = i64, Query, description = "Expiry of the link, epoch milliseconds"),
        ("signature" = String, Query, description = "HMAC-SHA256 of the link, hex"),
        ("Range" = Option<String>, Header, description = "A single byte range, e.g. bytes=0-1023"),
    ),
    responses(
        (status = 200, description = "The whole file", content_type = "audio/mp4", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "audio/mp4", body = Vec<u8>),
        (status = 403, body = colloquy_wire::ErrorResponse, description = "Tampered, expired or foreign link"),
        (status = 404, body = colloquy_wire::ErrorResponse, description = "The file no longer exists"),
        (status = 416, body = colloquy_wire::ErrorResponse, description = "Range outside the file"),
    ))]
pub async fn download(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let path = uri.path();
    let mut expires = None;
    let mut signature = None;
    for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "expires" => expires = Some(v.into_owned()),
            "signature" => signature = Some(v.into_owned()),
            _ => {}
        }
    }
    state
        .signer
        .verify(path, expires.as_deref(), signature.as_deref(), now_ms())
        .map_err(|e| ApiError::Forbidden(e.to_string()))?;
    let key = path.strip_prefix(DOWNLOAD_PREFIX).unwrap_or_default();
    let location = object_store::path::Path::from(key);
    let not_found = || ApiError::NotFound("this audio file no longer exists".into());
    let meta = match state.objects.store.head(&location).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    let size = meta.size;
    let range = match parse_range(headers.get(RANGE).and_then(|v| v.to_str().ok()), size) {
        Ok(r) => r,
        Err(Unsatisfiable) => {
            let mut resp = ApiError::RangeNotSatisfiable(format!(
                "the requested range is outside the file, which has {size} bytes"
            ))
            .into_response();
            if let Ok(v) = format!("bytes */{size}").parse() {
                resp.headers_mut().insert(CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let opts = GetOptions {
        range: range.clone().map(GetRange::Bounded),
        ..Default::default()
    };
    let result = match state.objects.store.get_opts(&location, opts).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    let mut resp = Response::builder()
        .header(CONTENT_TYPE, "audio/mp4")
        .header(ACCEPT_RANGES, "bytes")
        .header(CACHE_CONTROL, "private, max-age=3600");
    resp = match &range {
        Some(r) => resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header(CONTENT_LENGTH, r.end - r.start)
            .header(
                CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start, r.end - 1),
            ),
        None => resp.status(StatusCode::OK).header(CONTENT_LENGTH, size),
    };
    resp.body(Body::from_stream(result.into_stream()))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some(0..10)));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some(90..100)));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some(90..100)));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Some(50..100)));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=9-1"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
    }
}
