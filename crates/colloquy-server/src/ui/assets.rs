//! The UI's static files, compiled into the binary (nothing is fetched from a CDN).
//!
//! Pages link to `/ui/assets/<name>?v=<content hash>`; a request carrying the current hash
//! may be cached for a year (`immutable`), any other gets `no-cache` with an `ETag`, so a
//! new binary's assets are picked up at once.

use axum::extract::{Path, RawQuery};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

use super::error::UiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/app.js"),
    },
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/htmx.min.js"),
    },
    Asset {
        name: "htmx.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../assets/htmx.LICENSE"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/icon.svg"),
    },
];

/// Short content hash of each asset, by index in [`ASSETS`].
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| hex::encode(&Sha256::digest(a.body)[..6]))
        .collect()
});

/// Versioned URLs of the assets pages link to.
pub struct AssetUrls {
    /// The stylesheet.
    pub css: String,
    /// The UI's own script.
    pub js: String,
    /// htmx.
    pub htmx: String,
    /// The favicon.
    pub icon: String,
}

static URLS: LazyLock<AssetUrls> = LazyLock::new(|| AssetUrls {
    css: url("app.css"),
    js: url("app.js"),
    htmx: url("htmx.min.js"),
    icon: url("icon.svg"),
});

/// The asset URLs.
pub fn urls() -> &'static AssetUrls {
    &URLS
}

fn find(name: &str) -> Option<(usize, &'static Asset)> {
    ASSETS.iter().enumerate().find(|(_, a)| a.name == name)
}

fn url(name: &str) -> String {
    let (i, _) = find(name).expect("linked assets are embedded");
    format!("/ui/assets/{name}?v={}", VERSIONS[i])
}

/// `GET /ui/assets/{file}`.
pub async fn serve(
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let (i, asset) =
        find(&file).ok_or_else(|| UiError::NotFound(format!("There is no asset {file}.")))?;
    let version = &VERSIONS[i];
    let etag = format!("\"{version}\"");
    let current = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == format!("v={version}")));
    let cache = if current {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        r
    };
    let h = res.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_content_versions() {
        let u = urls();
        assert!(u.css.starts_with("/ui/assets/app.css?v="), "{}", u.css);
        assert!(u.htmx.starts_with("/ui/assets/htmx.min.js?v="));
        assert_eq!(VERSIONS.len(), ASSETS.len());
        assert!(VERSIONS.iter().all(|v| v.len() == 12));
    }

    #[test]
    fn htmx_keeps_its_license_notice() {
        let (_, htmx) = find("htmx.min.js").unwrap();
        let head = std::str::from_utf8(&htmx.body[..200]).unwrap();
        assert!(head.starts_with("/*! htmx 2."), "{head}");
        assert!(head.contains("0BSD"));
    }
}
