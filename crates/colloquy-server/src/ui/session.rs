//! UI sessions: an API key is exchanged, once, for a session token kept in an `HttpOnly`,
//! `SameSite=Strict` cookie; signing out forgets the token.
//!
//! A session token is an ordinary access token (the `/oauth2-cc/token` kind: stored only as
//! its SHA-256, bound to the key, expiring), so revoking the key ends its UI sessions at
//! once, and several servers sharing a database share sessions.
//!
//! CSRF: every form carries a token derived from the session token,
//! `HMAC-SHA256(key = session token, "colloquy-ui-csrf")`. Only a page served to the
//! session's owner can know it (the cookie is `HttpOnly` and the derivation is one-way), and
//! every POST handler checks it. The sign-in form, which has no session yet, uses the same
//! derivation from a random pre-session cookie (double submit).

use super::error::UiError;
use super::{render, Layout, Params};
use crate::clock::now_ms;
use crate::keys::{constant_time_eq, hash_secret, random_token};
use crate::limits::{fingerprint_of, ClientIp};
use crate::state::AppState;
use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, OriginalUri, RawQuery, State};
use axum::http::header::{COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use colloquy_storage::Principal;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Cookie holding the session token.
pub const SESSION_COOKIE: &str = "colloquy_session";
/// Cookie holding the sign-in form's pre-session nonce.
pub const SIGN_IN_COOKIE: &str = "colloquy_sign_in";
/// How long a UI session lasts.
pub const SESSION_LIFETIME_SECS: i64 = 12 * 3600;
/// How long a sign-in form stays usable.
const SIGN_IN_FORM_LIFETIME_SECS: i64 = 3600;
/// Form field (or `X-CSRF-Token` header) carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// The value of cookie `name`, from every `Cookie` header of the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value scoped to `/ui`, `HttpOnly`, `SameSite=Strict` (and `Secure` when the
/// server is reached over HTTPS). `max_age` 0 deletes the cookie.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.public_base.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are alphanumeric")
}

/// The CSRF token of forms posted under `secret` (a session token or a sign-in nonce).
pub fn csrf_token(secret: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key size");
    mac.update(b"colloquy-ui-csrf");
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` is the CSRF token for `secret`.
pub fn csrf_valid(secret: &str, given: Option<&str>) -> bool {
    given.is_some_and(|g| constant_time_eq(&csrf_token(secret), g))
}

/// Tokens we mint are alphanumeric; anything else in a cookie is not ours.
fn plausible_token(t: &str) -> bool {
    (32..=128).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Only same-site UI paths are followed after sign-in.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("/ui/sign-")
                && !n.contains(['\\', '\r', '\n'])
                && !n.contains("//") =>
        {
            n.to_string()
        }
        _ => "/ui/chats".to_string(),
    }
}

/// A parsed `application/x-www-form-urlencoded` body (never rejected: missing fields are
/// reported by the handler as a page, not as a bare 4xx).
pub fn form(body: &Bytes) -> Params {
    Params(form_urlencoded::parse(body).into_owned().collect())
}

/// The signed-in account of a UI request.
pub struct UiSession {
    /// Whose data the request may see.
    pub principal: Principal,
    /// The session token (from the cookie).
    token: String,
    /// The CSRF token to put in this session's forms.
    pub csrf: String,
}

impl UiSession {
    /// Refuses a form whose CSRF token (field `csrf` or header `X-CSRF-Token`) is not this
    /// session's.
    pub fn check_csrf(&self, form: &Params, headers: &HeaderMap) -> Result<(), UiError> {
        let given = form.get(CSRF_FIELD).or_else(|| {
            headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        });
        if csrf_valid(&self.token, given) {
            Ok(())
        } else {
            Err(UiError::Forbidden(
                "This form was not sent from a page of this session (its security token is \
                 missing or wrong), so nothing was done. Go back, reload the page and try again."
                    .into(),
            ))
        }
    }
}

/// Where to come back to after signing in, for a request that found no session.
fn return_path(parts: &Parts) -> String {
    if parts.method != Method::GET {
        return "/ui/chats".into();
    }
    let htmx_page = parts
        .headers
        .get("hx-current-url")
        .and_then(|v| v.to_str().ok())
        .map(|u| {
            // The page the fragment belongs to: strip scheme and host.
            match u.split_once("://") {
                Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
                None => u,
            }
            .to_string()
        });
    let path = match htmx_page {
        Some(p) => p,
        None => parts
            .extensions
            .get::<OriginalUri>()
            .map(|u| &u.0)
            .unwrap_or(&parts.uri)
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
    };
    safe_next(Some(&path))
}

/// Finds the account behind the session cookie, if it is live.
async fn lookup(state: &AppState, headers: &HeaderMap) -> Result<Lookup, UiError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(Lookup::None);
    };
    if !plausible_token(&token) {
        return Ok(Lookup::Dead);
    }
    match state
        .store
        .principal_by_token_hash(&hash_secret(&token), now_ms())
        .await?
    {
        Some(principal) => Ok(Lookup::Live(UiSession {
            principal,
            csrf: csrf_token(&token),
            token,
        })),
        None => Ok(Lookup::Dead),
    }
}

enum Lookup {
    None,
    Dead,
    Live(UiSession),
}

impl FromRequestParts<AppState> for UiSession {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let expired = match lookup(state, &parts.headers).await? {
            Lookup::Live(s) => return Ok(s),
            Lookup::None => false,
            Lookup::Dead => true,
        };
        Err(UiError::SignIn {
            expired,
            next: return_path(parts),
            htmx: parts.headers.contains_key("hx-request"),
        })
    }
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "ui/sign_in.html")]
pub struct SignInPage {
    layout: Layout,
    csrf: String,
    next: String,
    /// Why the user is here (expired session, signed out).
    notice: Option<String>,
    /// What went wrong with the last attempt.
    error: Option<String>,
}

fn notice_for(m: Option<&str>) -> Option<String> {
    match m {
        Some("expired") => Some(
            "Your session has ended (it expired, you signed out elsewhere, or the API key was \
             revoked). Sign in again to continue."
                .into(),
        ),
        Some("signed_out") => Some("You have signed out.".into()),
        _ => None,
    }
}

/// Renders the sign-in form with a (new or reused) pre-session nonce cookie.
fn sign_in_form(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    next: String,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, UiError> {
    let existing = cookie(headers, SIGN_IN_COOKIE).filter(|n| plausible_token(n));
    let nonce = existing.clone().unwrap_or_else(|| random_token(32));
    let page = SignInPage {
        layout: Layout::anonymous("Sign in"),
        csrf: csrf_token(&nonce),
        next,
        notice,
        error,
    };
    let mut res = render(&page)?;
    *res.status_mut() = status;
    if existing.is_none() {
        res.headers_mut().append(
            SET_COOKIE,
            set_cookie(state, SIGN_IN_COOKIE, &nonce, SIGN_IN_FORM_LIFETIME_SECS),
        );
    }
    Ok(res)
}

/// `GET /ui/sign-in[?next=…&m=expired|signed_out]`.
pub async fn sign_in_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let q = Params::parse(raw.as_deref());
    let next = safe_next(q.get("next"));
    if let Lookup::Live(_) = lookup(&state, &headers).await? {
        return Ok(redirect(&next));
    }
    sign_in_form(
        &state,
        &headers,
        StatusCode::OK,
        next,
        notice_for(q.get("m")),
        None,
    )
}

/// The sign-in form refused because the client's address has too many failed
/// authentications (`[limits] auth_failures_per_minute`).
fn too_many_sign_ins(
    state: &AppState,
    headers: &HeaderMap,
    next: String,
    retry_after_secs: u64,
) -> Result<Response, UiError> {
    let mut res = sign_in_form(
        state,
        headers,
        StatusCode::TOO_MANY_REQUESTS,
        next,
        None,
        Some(format!(
            "Too many failed sign-ins from your address. Wait {retry_after_secs} seconds, then \
             try again."
        )),
    )?;
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    Ok(res)
}

/// `POST /ui/sign-in` (form: `api_key`, `csrf`, `next`). A wrong key counts as a failed
/// authentication of the client's address; past the limit the form is answered 429, and a
/// key that already failed from the address is not looked up again.
pub async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, UiError> {
    let f = form(&body);
    let next = safe_next(f.get("next"));
    let nonce = cookie(&headers, SIGN_IN_COOKIE).filter(|n| plausible_token(n));
    if !nonce.is_some_and(|n| csrf_valid(&n, f.get(CSRF_FIELD))) {
        return sign_in_form(
            &state,
            &HeaderMap::new(), // a fresh nonce
            StatusCode::FORBIDDEN,
            next,
            None,
            Some(
                "This sign-in form had expired or did not come from this site (cookies must be \
                 enabled). Enter your API key again."
                    .into(),
            ),
        );
    }
    let Some(key) = f.get("api_key") else {
        return sign_in_form(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            next,
            None,
            Some("Enter your API key.".into()),
        );
    };
    let limited = ip.filter(|_| state.auth_failures.enabled()).map(|ip| {
        let fp = fingerprint_of("/ui/sign-in", [(&b"api_key"[..], key.as_bytes())]);
        (ip, fp)
    });
    if let Some((ip, Some(fp))) = &limited {
        if let Some(secs) = state.auth_failures.repeated_failure(*ip, fp) {
            return too_many_sign_ins(&state, &headers, next, secs);
        }
    }
    let Some(principal) = state.store.principal_by_key_hash(&hash_secret(key)).await? else {
        if let Some((ip, fp)) = limited {
            if let Some(secs) = state.auth_failures.record_failure(ip, fp) {
                return too_many_sign_ins(&state, &headers, next, secs);
            }
        }
        return sign_in_form(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            next,
            None,
            Some(
                "That API key is not valid: it does not exist or was revoked. Run \
                 colloquy keys list to see your keys, or colloquy keys create to make one."
                    .into(),
            ),
        );
    };
    let token = random_token(64);
    state
        .store
        .insert_access_token(
            &hash_secret(&token),
            principal.api_key_id,
            now_ms() + SESSION_LIFETIME_SECS * 1000,
        )
        .await?;
    tracing::info!(user_id = %principal.user_id, "web UI sign-in");
    let mut res = redirect(&next);
    let h = res.headers_mut();
    h.append(
        SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &token, SESSION_LIFETIME_SECS),
    );
    h.append(SET_COOKIE, set_cookie(&state, SIGN_IN_COOKIE, "", 0));
    Ok(res)
}

/// `POST /ui/sign-out` (form: `csrf`): forgets the session everywhere.
pub async fn sign_out(
    State(state): State<AppState>,
    session: UiSession,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, UiError> {
    session.check_csrf(&form(&body), &headers)?;
    state
        .store
        .delete_access_token(&hash_secret(&session.token))
        .await?;
    let mut res = redirect("/ui/sign-in?m=signed_out");
    res.headers_mut()
        .append(SET_COOKIE, set_cookie(&state, SESSION_COOKIE, "", 0));
    Ok(res)
}

/// A 303 to a same-site path.
fn redirect(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => (StatusCode::SEE_OTHER, [(LOCATION, v)]).into_response(),
        Err(_) => (
            StatusCode::SEE_OTHER,
            [(LOCATION, HeaderValue::from_static("/ui/chats"))],
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; colloquy_session=abc"),
        );
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "colloquy"), None);
    }

    #[test]
    fn csrf_tokens_bind_to_their_secret() {
        let t = csrf_token("session-one");
        assert_eq!(t.len(), 64);
        assert!(csrf_valid("session-one", Some(&t)));
        assert!(!csrf_valid("session-two", Some(&t)));
        assert!(!csrf_valid("session-one", None));
        assert!(!csrf_valid("session-one", Some("")));
    }

    #[test]
    fn only_ui_paths_are_followed() {
        assert_eq!(safe_next(Some("/ui/chats/x?page=2")), "/ui/chats/x?page=2");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil.example",
            "/v0/evi/chats",
            "/ui/sign-out",
            "/ui/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/chats", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/chats");
    }
}
