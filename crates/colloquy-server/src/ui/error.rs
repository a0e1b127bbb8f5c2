//! Errors of the UI, answered as HTML pages (the REST API's JSON error shape is for API
//! clients). An expired or missing session is not a page but a redirect to sign-in.
//!
//! As in the API: another account's chat is "not found", never "forbidden"; internal
//! failures are logged with their cause and shown without it.

use super::{render, Layout};
use askama::Template;
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use colloquy_storage::StoreError;

/// Why a UI request failed.
#[derive(Debug)]
pub enum UiError {
    /// No valid session: go to the sign-in page, then come back to `next`.
    SignIn {
        /// The session cookie was there but is expired, signed out, or its key revoked.
        expired: bool,
        /// Where to return after signing in (a `/ui/` path).
        next: String,
        /// The request came from htmx (answer with `HX-Redirect`, not a 303).
        htmx: bool,
    },
    /// 404: no such page, chat or group for this account.
    NotFound(String),
    /// 403: a form without a valid CSRF token.
    Forbidden(String),
    /// 405.
    MethodNotAllowed(String),
    /// 500: logged, shown without the cause.
    Internal(String),
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> Self {
        UiError::Internal(e.to_string())
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "ui/error.html")]
pub struct ErrorPage {
    /// Frame.
    pub layout: Layout,
    /// HTTP status code shown big.
    pub code: u16,
    /// Heading.
    pub heading: String,
    /// What happened and what to do.
    pub message: String,
}

/// The sign-in URL that brings the user back to `next`.
pub fn sign_in_url(next: &str, expired: bool) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if next != "/ui/chats" {
        q.append_pair("next", next);
    }
    if expired {
        q.append_pair("m", "expired");
    }
    let q = q.finish();
    if q.is_empty() {
        "/ui/sign-in".into()
    } else {
        format!("/ui/sign-in?{q}")
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match self {
            UiError::SignIn {
                expired,
                next,
                htmx,
            } => {
                let to = sign_in_url(&next, expired);
                let Ok(location) = HeaderValue::from_str(&to) else {
                    return StatusCode::UNAUTHORIZED.into_response();
                };
                return if htmx {
                    // htmx follows HX-Redirect with a full page load.
                    (StatusCode::UNAUTHORIZED, [("hx-redirect", location)]).into_response()
                } else {
                    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
                };
            }
            UiError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            UiError::Forbidden(m) => (StatusCode::FORBIDDEN, "Request refused", m),
            UiError::MethodNotAllowed(m) => {
                (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", m)
            }
            UiError::Internal(cause) => {
                tracing::error!(%cause, "internal error in the web UI");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The server could not show this page. The cause is in the server log under \
                     this request's x-request-id; try again in a moment."
                        .to_string(),
                )
            }
        };
        let page = ErrorPage {
            layout: Layout::anonymous(heading),
            code: status.as_u16(),
            heading: heading.to_string(),
            message,
        };
        match render(&page) {
            Ok(mut res) => {
                *res.status_mut() = status;
                res
            }
            Err(_) => (status, heading).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_urls_keep_where_to_return() {
        assert_eq!(sign_in_url("/ui/chats", false), "/ui/sign-in");
        assert_eq!(sign_in_url("/ui/chats", true), "/ui/sign-in?m=expired");
        assert_eq!(
            sign_in_url("/ui/chats/abc?page=2", true),
            "/ui/sign-in?next=%2Fui%2Fchats%2Fabc%3Fpage%3D2&m=expired"
        );
    }

    #[test]
    fn htmx_gets_hx_redirect() {
        let res = UiError::SignIn {
            expired: true,
            next: "/ui/chats".into(),
            htmx: true,
        }
        .into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()["hx-redirect"], "/ui/sign-in?m=expired");
        let res = UiError::SignIn {
            expired: false,
            next: "/ui/groups/x".into(),
            htmx: false,
        }
        .into_response();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            res.headers()[LOCATION],
            "/ui/sign-in?next=%2Fui%2Fgroups%2Fx"
        );
    }
}
