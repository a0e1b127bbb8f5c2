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
use std::ops::Range;

/// A `Range` header that cannot be satisfied (answered with 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A position of a byte range: decimal digits only (no sign, no spaces). A value too large
/// for `u64` is still a valid position, just beyond any file, so it saturates.
fn position(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// Parses a single-range `Range: bytes=…` header (RFC 9110 §14.1.2) against an object of
/// `size` bytes. `Ok(None)` means the whole object: no header, another range unit, several
/// ranges, or a value that does not parse (such a header is ignored, never an error).
/// A last position beyond the file is clamped to its last byte, a suffix longer than the
/// file is the whole file; a first position at or beyond the end, a last position before
/// the first, and a zero-length suffix are unsatisfiable.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let Some(spec) = header
        .map(str::trim)
        .and_then(|h| h.split_once('='))
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, spec)| spec.trim())
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: answer with the whole file
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let range = match (first, last) {
        ("", suffix) => {
            let Some(n) = position(suffix) else {
                return Ok(None);
            };
            if n == 0 {
                return Err(Unsatisfiable);
            }
            size.saturating_sub(n)..size
        }
        (first, "") => {
            let Some(start) = position(first) else {
                return Ok(None);
            };
            start..size
        }
        (first, last) => {
            let (Some(start), Some(end)) = (position(first), position(last)) else {
                return Ok(None);
            };
            if end < start {
                return Err(Unsatisfiable);
            }
            // `end` is inclusive; clamped below `size`, `end + 1` cannot overflow.
            start..end.min(size.saturating_sub(1)).saturating_add(1)
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
        ("user_id" = uuid::Uuid, Path, description = "Owner id (UUID)"),
        ("chat_id" = uuid::Uuid, Path, description = "Chat id (UUID)"),
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
    let not_found = || ApiError::NotFound("this audio file no longer exists".into());
    let internal = |e: crate::objects::ObjectError| ApiError::Internal(e.to_string());
    let size = state
        .objects
        .size(key)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
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
    let bytes = state
        .objects
        .read(key, range.clone())
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
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
    resp.body(Body::from_stream(bytes))
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
        assert_eq!(parse_range(Some("bytes=99-99"), 100), Ok(Some(99..100)));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=9-1"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=-0"), 100), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(parse_range(Some("Bytes=0-1"), 100), Ok(Some(0..2)));
    }

    #[test]
    fn huge_positions_never_overflow() {
        const MAX: &str = "18446744073709551615"; // u64::MAX
        const HUGE: &str = "123456789012345678901234567890";
        for last in [MAX, HUGE] {
            // an end beyond the file is clamped to its last byte
            assert_eq!(
                parse_range(Some(&format!("bytes=0-{last}")), 100),
                Ok(Some(0..100))
            );
            assert_eq!(
                parse_range(Some(&format!("bytes=7-{last}")), 100),
                Ok(Some(7..100))
            );
            // a suffix longer than the file is the whole file
            assert_eq!(
                parse_range(Some(&format!("bytes=-{last}")), 100),
                Ok(Some(0..100))
            );
            // a start beyond the file is unsatisfiable
            for spec in [format!("bytes={last}-"), format!("bytes={last}-{last}")] {
                assert_eq!(parse_range(Some(&spec), 100), Err(Unsatisfiable), "{spec}");
            }
        }
        assert_eq!(
            parse_range(Some("bytes=0-18446744073709551615"), u64::MAX),
            Ok(Some(0..u64::MAX))
        );
        assert_eq!(
            parse_range(Some("bytes=18446744073709551614-"), u64::MAX),
            Ok(Some(u64::MAX - 1..u64::MAX))
        );
    }

    #[test]
    fn unparseable_headers_are_ignored() {
        for h in [
            "bytes=",
            "bytes=-",
            "bytes=abc",
            "bytes=5",
            "bytes=a-5",
            "bytes=5-b",
            "bytes=+5-",
            "bytes=-+5",
            "bytes= 1 - 2",
            "bytes=0x10-",
            "bytes=1.5-2",
            "bytes=--5",
            "bytes",
            "",
        ] {
            assert_eq!(parse_range(Some(h), 100), Ok(None), "{h:?}");
        }
    }

    #[test]
    fn empty_files_satisfy_no_range() {
        assert_eq!(parse_range(Some("bytes=0-"), 0), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=-5"), 0), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Err(Unsatisfiable));
        assert_eq!(parse_range(None, 0), Ok(None));
    }
}
