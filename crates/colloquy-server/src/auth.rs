//! Authentication: API keys (`X-Hume-Api-Key` header or `api_key` query), access tokens
//! (`Authorization: Bearer` header or `access_token` query), and the client-credentials
//! token endpoint `POST /oauth2-cc/token`.

use crate::clock::now_ms;
use crate::error::ApiError;
use crate::keys::{constant_time_eq, hash_secret, random_token};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::Json;
use base64::Engine;
use colloquy_storage::Principal;
use colloquy_wire::AccessTokenResponse;

/// Header carrying an API key.
pub const API_KEY_HEADER: &str = "x-hume-api-key";
/// Lifetime of access tokens, seconds.
pub const TOKEN_LIFETIME_SECS: i64 = 1800;

/// Credentials found on a request, before they are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// An API key.
    ApiKey(String),
    /// An access token.
    Token(String),
}

/// Finds credentials in the headers, then (for sockets) in the query.
pub fn find_credentials(
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<Option<Credentials>, ApiError> {
    if let Some(v) = headers.get(API_KEY_HEADER) {
        let key = v.to_str().map_err(|_| {
            ApiError::BadCredentials("the X-Hume-Api-Key header is not valid text".into())
        })?;
        return Ok(Some(Credentials::ApiKey(key.trim().to_string())));
    }
    if let Some(v) = headers.get(AUTHORIZATION) {
        let v = v.to_str().unwrap_or_default();
        if let Some(token) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Ok(Some(Credentials::Token(token.trim().to_string())));
        }
    }
    for (k, v) in query {
        match k.as_str() {
            "api_key" => return Ok(Some(Credentials::ApiKey(v.clone()))),
            "access_token" => return Ok(Some(Credentials::Token(v.clone()))),
            _ => {}
        }
    }
    Ok(None)
}

/// Checks credentials against the store.
pub async fn authenticate(
    state: &AppState,
    credentials: Option<Credentials>,
) -> Result<Principal, ApiError> {
    let found = match &credentials {
        None => {
            return Err(ApiError::Unauthorized(
                "missing credentials: send your API key in the X-Hume-Api-Key header, or an \
                 access token as `Authorization: Bearer <token>`"
                    .into(),
            ))
        }
        Some(Credentials::ApiKey(key)) => {
            state.store.principal_by_key_hash(&hash_secret(key)).await?
        }
        Some(Credentials::Token(token)) => {
            state
                .store
                .principal_by_token_hash(&hash_secret(token), now_ms())
                .await?
        }
    };
    found.ok_or_else(|| match credentials {
        Some(Credentials::Token(_)) => ApiError::BadCredentials(
            "invalid or expired access token: fetch a new one from POST /oauth2-cc/token".into(),
        ),
        _ => ApiError::BadCredentials(
            "invalid API key: it does not exist or was revoked (`colloquy keys list` shows your keys)"
                .into(),
        ),
    })
}

/// The authenticated caller of a REST endpoint.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let creds = find_credentials(&parts.headers, &[])?;
        Ok(Caller(authenticate(state, creds).await?))
    }
}

/// The form of `POST /oauth2-cc/token` (documentation only: the handler parses the body
/// itself, after checking the credentials).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenRequest {
    /// The only grant supported.
    grant_type: GrantType,
}

/// OAuth 2 grant types of the token endpoint.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// Client credentials (the API key and its secret key, as HTTP Basic).
    ClientCredentials,
}

/// `POST /oauth2-cc/token`: exchanges `Authorization: Basic base64(api_key:secret_key)` and
/// `grant_type=client_credentials` for a 30-minute bearer token.
///
/// The credentials are checked first: without valid ones the answer is 401 whatever the
/// body says, so the form's errors (400) are only shown to the key's owner.
#[utoipa::path(
    post,
    path = "/oauth2-cc/token",
    tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = AccessTokenResponse),
        (status = 400, body = colloquy_wire::ErrorResponse),
        (status = 401, body = colloquy_wire::ErrorResponse),
        (status = 429, body = colloquy_wire::ErrorResponse,
            description = "Too many failed authentications from this address"),
    ),
    security(("basic" = []))
)]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AccessTokenResponse>, ApiError> {
    let principal = basic_credentials(&state, &headers).await?;
    let grant: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    match grant
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.as_str())
    {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(ApiError::BadRequest {
                code: "unsupported_grant_type",
                message: format!(
                    "grant_type `{other}` is not supported; send grant_type=client_credentials"
                ),
            })
        }
        None => {
            return Err(ApiError::BadRequest {
                code: "invalid_request",
                message: "the form body must contain grant_type=client_credentials".into(),
            })
        }
    }
    let token = random_token(64);
    let now = now_ms();
    state
        .store
        .insert_access_token(
            &hash_secret(&token),
            principal.api_key_id,
            now + TOKEN_LIFETIME_SECS * 1000,
        )
        .await?;
    Ok(Json(AccessTokenResponse {
        access_token: token,
        expires_in: TOKEN_LIFETIME_SECS,
        token_type: "Bearer".into(),
        issued_at: now / 1000,
    }))
}

/// Checks `Authorization: Basic base64(api_key:secret_key)`. No Basic credentials is
/// [`ApiError::Unauthorized`]; malformed or wrong ones are [`ApiError::BadCredentials`]
/// (counted by the failed-authentication limit).
async fn basic_credentials(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    const HOW: &str = "send `Authorization: Basic base64(<api_key>:<secret_key>)` with a live \
                       key and its secret key";
    let wrong = || ApiError::BadCredentials(format!("wrong client credentials: {HOW}"));
    let Some(authorization) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(format!(
            "missing client credentials: {HOW}"
        )));
    };
    let basic = authorization
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .ok_or_else(wrong)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(wrong)?;
    let (api_key, secret) = decoded.split_once(':').ok_or_else(wrong)?;
    let (principal, secret_hash) = state
        .store
        .secret_hash_for_key(&hash_secret(api_key))
        .await?
        .ok_or_else(wrong)?;
    if !constant_time_eq(&hash_secret(secret), &secret_hash) {
        return Err(wrong());
    }
    Ok(principal)
}
