//! The web UI under `/ui`: sign-in with an API key, chat history, one chat (transcript, raw
//! events, audio player, emotion chart), one chat group, and the account's EVI configs.
//!
//! Server-rendered with askama templates (`templates/ui/`) and htmx; every asset is compiled
//! into the binary ([`assets`]). Pages read the same [`Store`](colloquy_storage::Store) the
//! REST API reads, always scoped to the signed-in account, so another account's chat is a
//! 404 here exactly as it is there.
//!
//! Each page is one request: htmx requests (`HX-Request`) get just the part that changes.
//! Sessions, cookies and CSRF are in [`session`]; errors become HTML pages in [`error`].

pub mod assets;
mod audio;
mod chat;
mod chats;
mod configs;
mod emotions;
pub mod error;
mod format;
mod group;
pub mod session;
mod speak;
mod transcript;
mod webhooks;

use crate::state::AppState;
use askama::Template;
use axum::extract::{OriginalUri, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, VARY};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use error::UiError;

/// Content-Security-Policy of every UI response: scripts and styles only from the binary's
/// own assets (no inline code), media from anywhere (S3 presigned audio URLs).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self' https: http:; connect-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// The `/ui` routes, to be nested under `/ui`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/chats", get(chats::list))
        .route("/chats/{id}", get(chat::page))
        .route("/chats/{id}/transcript", get(chat::transcript))
        .route("/chats/{id}/events", get(chat::events))
        .route("/chats/{id}/audio", get(chat::audio))
        .route("/groups/{id}", get(group::page))
        .route("/groups/{id}/transcript", get(group::transcript))
        .route("/configs", get(configs::list))
        .route("/configs/{id}", get(configs::page))
        .route("/speak", get(speak::page))
        .route("/speak/audio", get(speak::audio))
        .route("/assets/{file}", get(assets::serve))
        .fallback(unknown_page)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn(security_headers))
}

/// `GET /` and `GET /ui`: the chat list (which sends strangers to sign in).
pub async fn home() -> Redirect {
    Redirect::to("/ui/chats")
}

async fn unknown_page(OriginalUri(uri): OriginalUri) -> UiError {
    UiError::NotFound(format!("There is no page at {}.", uri.path()))
}

async fn wrong_method(method: axum::http::Method, OriginalUri(uri): OriginalUri) -> UiError {
    UiError::MethodNotAllowed(format!(
        "{method} is not supported on {}; use the links and buttons of the pages.",
        uri.path()
    ))
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // Pages link to signed audio URLs; never leak them (or ids) to other sites.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(CACHE_CONTROL) {
        // Account data: never kept by caches (and the back button re-checks the session).
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.append(VARY, HeaderValue::from_static("HX-Request"));
    res
}

/// True for htmx requests that want a fragment (not a history restore, which needs the page).
pub(crate) fn wants_fragment(headers: &HeaderMap) -> bool {
    let is = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    is("hx-request") && !is("hx-history-restore-request")
}

/// For a fragment URL requested as a plain page (no htmx, or a history restore): a redirect
/// to `page`, the page that holds the fragment. `None` when the fragment is wanted.
pub(crate) fn redirect_unless_fragment(headers: &HeaderMap, page: &str) -> Option<Response> {
    (!wants_fragment(headers)).then(|| Redirect::to(page).into_response())
}

/// Renders a template as an HTML response.
pub(crate) fn render<T: Template>(t: &T) -> Result<Response, UiError> {
    t.render()
        .map(|html| Html(html).into_response())
        .map_err(|e| UiError::Internal(format!("template rendering failed: {e}")))
}

/// Renders a template to a string (fragments embedded in pages).
pub(crate) fn render_string<T: Template>(t: &T) -> Result<String, UiError> {
    t.render()
        .map_err(|e| UiError::Internal(format!("template rendering failed: {e}")))
}

/// What the page frame (`base.html`) shows: title, navigation, the signed-in account.
pub struct Layout {
    /// `<title>` and the page's heading context.
    pub title: String,
    /// Where the page sits in the top navigation: `chats` (the list itself), `chat` (a page
    /// under it), `configs`, `config`, or empty.
    pub nav: &'static str,
    /// The signed-in account, if any.
    pub account: Option<AccountNav>,
    /// Asset URLs (with their content version).
    pub assets: &'static assets::AssetUrls,
}

/// The account shown in the header, with what the sign-out form needs.
pub struct AccountNav {
    /// Short form of the account id.
    pub short_id: String,
    /// Full account id.
    pub user_id: String,
    /// CSRF token for the sign-out form.
    pub csrf: String,
}

impl Layout {
    /// The frame of a signed-in page.
    pub fn signed_in(title: impl Into<String>, nav: &'static str, s: &session::UiSession) -> Self {
        Layout {
            title: title.into(),
            nav,
            account: Some(AccountNav {
                short_id: format::short_id(&s.principal.user_id),
                user_id: s.principal.user_id.to_string(),
                csrf: s.csrf.clone(),
            }),
            assets: assets::urls(),
        }
    }

    /// The frame of a page seen without a session (sign-in, errors).
    pub fn anonymous(title: impl Into<String>) -> Self {
        Layout {
            title: title.into(),
            nav: "",
            account: None,
            assets: assets::urls(),
        }
    }
}

/// A query string parsed leniently (the UI never answers 400 for a hand-edited URL: unknown
/// or repeated parameters are ignored, the last value wins).
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Self {
        Params(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The trimmed value of `key`, if present and not blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A 1-based page number (1 when absent or malformed).
    pub fn page(&self, key: &str) -> u32 {
        self.get(key)
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| *n >= 1)
            .unwrap_or(1)
    }
}

/// A link of a pager.
pub struct PageLink {
    /// Plain link (works without JavaScript).
    pub href: String,
    /// Fragment URL htmx loads instead.
    pub hx: String,
    /// URL pushed into the history by htmx.
    pub push: String,
}

/// Previous/next links and the position of a paginated list.
pub struct Pager {
    /// 1-based current page.
    pub page: u32,
    /// Number of pages (at least 1).
    pub pages: u32,
    /// Link to the previous page.
    pub prev: Option<PageLink>,
    /// Link to the next page.
    pub next: Option<PageLink>,
}

impl Pager {
    /// A pager; `link(n)` builds the link of page `n`.
    pub fn new(page: u32, total_items: u64, size: u32, link: impl Fn(u32) -> PageLink) -> Self {
        let pages = (total_items.div_ceil(size.max(1) as u64)).max(1) as u32;
        Pager {
            page,
            pages,
            prev: (page > 1).then(|| link((page - 1).min(pages))),
            next: (page < pages).then(|| link(page + 1)),
        }
    }

    /// Whether there is more than one page (the pager is shown).
    pub fn needed(&self) -> bool {
        self.pages > 1 || self.page > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_lenient() {
        let p = Params::parse(Some("page=0&page=3&q=+hi+&x=&size=abc"));
        assert_eq!(p.page("page"), 3, "the last value wins");
        assert_eq!(p.get("q"), Some("hi"));
        assert_eq!(p.get("x"), None, "blank is absent");
        assert_eq!(p.page("size"), 1);
        assert_eq!(Params::parse(None).page("page"), 1);
    }

    #[test]
    fn pager_links() {
        let link = |n: u32| PageLink {
            href: format!("?page={n}"),
            hx: String::new(),
            push: String::new(),
        };
        let p = Pager::new(1, 45, 20, link);
        assert_eq!((p.page, p.pages), (1, 3));
        assert!(p.prev.is_none());
        assert_eq!(p.next.as_ref().unwrap().href, "?page=2");
        let p = Pager::new(3, 45, 20, link);
        assert!(p.next.is_none());
        assert_eq!(p.prev.as_ref().unwrap().href, "?page=2");
        let empty = Pager::new(1, 0, 20, link);
        assert_eq!(empty.pages, 1);
        assert!(!empty.needed());
        // Past the end: a way back to the last page.
        let past = Pager::new(9, 45, 20, link);
        assert_eq!(past.prev.as_ref().unwrap().href, "?page=3");
        assert!(past.needed());
    }

    #[test]
    fn fragment_detection() {
        let mut h = HeaderMap::new();
        assert!(!wants_fragment(&h));
        h.insert("hx-request", HeaderValue::from_static("true"));
        assert!(wants_fragment(&h));
        h.insert(
            "hx-history-restore-request",
            HeaderValue::from_static("true"),
        );
        assert!(!wants_fragment(&h));
    }

    #[test]
    fn fragment_urls_redirect_plain_requests_to_their_page() {
        let mut h = HeaderMap::new();
        let page = "/ui/chats/x?page=2#transcript";
        let res = redirect_unless_fragment(&h, page).expect("a plain request is redirected");
        assert!(res.status().is_redirection());
        assert_eq!(res.headers()["location"], page);
        h.insert("hx-request", HeaderValue::from_static("true"));
        assert!(redirect_unless_fragment(&h, page).is_none());
        h.insert(
            "hx-history-restore-request",
            HeaderValue::from_static("true"),
        );
        assert!(redirect_unless_fragment(&h, page).is_some());
    }
}
