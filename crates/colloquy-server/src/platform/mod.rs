//! The EVI platform API's prompts, tools and configs (spec `evi-platform.md` §2–§4): nine
//! operations each under `/v0/evi/prompts`, `/v0/evi/tools` and `/v0/evi/configs`.
//!
//! The three are versioned resources of the account ([`colloquy_storage::ResourceStore`]);
//! what they share is written once here, generic over [`Kind`]: listing, reading, deleting,
//! renaming and describing versions, and turning storage outcomes into answers. Each kind's
//! file ([`prompts`], [`tools`], [`configs`]) has its handlers (with their OpenAPI
//! documentation), its body and how a stored version reads back; [`validation`] checks
//! request bodies with messages that name the field and what it accepts; `routes.rs` mounts
//! them ([`router`]) and lists them for the OpenAPI document ([`PlatformDoc`]).
//!
//! Errors: `400` (`invalid_parameter` for what the OpenAPI document also states;
//! `invalid_combination`, `invalid_json`, `unknown_reference` and `still_referenced` for
//! what it cannot), `401`, `404` for unknown ids and other accounts' ids alike.

pub mod chat_config;
pub mod configs;
pub mod prompts;
mod read;
mod routes;
pub mod tools;
pub mod validation;

pub(crate) use read::config_version;
pub use routes::{router, PlatformDoc};

use crate::auth::Caller;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::params::{path_uuid, Query};
use crate::state::AppState;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colloquy_storage::{
    Deleted, NewVersion, PageRequest, Referrer, ResourceFilter, ResourceKind, ResourceRef,
    ResourceVersion, Written,
};
use colloquy_wire::PostedVersionDescription;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;

/// Paging and filters of the collection listings (`GET /v0/evi/{prompts,tools,configs}`).
/// Like every optional query parameter, an empty value is the same as none.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Zero-based page index (default 0). A page past the end is an empty page.
    #[param(minimum = 0, maximum = 4294967295_u32)]
    page_number: Option<i64>,
    /// Items per page, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u32>,
    /// `true` (default): only the newest version of each; `false`: every version.
    restrict_to_most_recent: Option<bool>,
    /// Only those with exactly this name (case-sensitive).
    name: Option<String>,
}

/// Paging of one resource's versions (`GET /v0/evi/{prompts,tools,configs}/{id}`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct VersionListParams {
    /// Zero-based page index (default 0). A page past the end is an empty page.
    #[param(minimum = 0, maximum = 4294967295_u32)]
    page_number: Option<i64>,
    /// Items per page, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u32>,
    /// `false` (default here): every version; `true`: only the newest.
    restrict_to_most_recent: Option<bool>,
}

/// Largest version number a path or a reference may name.
pub const MAX_VERSION: i64 = i32::MAX as i64;

/// What one of the three kinds is, for the operations they share.
pub(crate) trait Kind {
    /// Its storage kind.
    const KIND: ResourceKind;
    /// Its name in messages (`prompt`).
    const WHAT: &'static str;
    /// One version on the wire.
    type Return: Serialize;
    /// A page of them on the wire.
    type Paged: Serialize;
    /// A page.
    fn paged(page: PageRequest, total: u64, items: Vec<Self::Return>) -> Self::Paged;
    /// A stored version as it reads back (references resolved through `refs`).
    async fn shape(refs: &mut Resolver<'_>, v: ResourceVersion) -> Result<Self::Return, ApiError>;
    /// Checks a new name (all of a kind's versions share it).
    fn check_name(name: &str) -> Result<(), ApiError> {
        validation::check_name("name", name)
    }
}

/// Reads what config versions reference, each prompt or tool version once per request.
pub(crate) struct Resolver<'a> {
    state: &'a AppState,
    user_id: Uuid,
    seen: HashMap<ResourceRef, Option<ResourceVersion>>,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(state: &'a AppState, user_id: Uuid) -> Self {
        Self {
            state,
            user_id,
            seen: HashMap::new(),
        }
    }

    /// Reads `refs` at once (concurrently), for the [`Self::get`]s that follow.
    pub(crate) async fn prefetch(&mut self, refs: Vec<ResourceRef>) -> Result<(), ApiError> {
        let missing: Vec<ResourceRef> = refs
            .into_iter()
            .filter(|r| !self.seen.contains_key(r))
            .collect();
        let store = &self.state.store;
        let user_id = self.user_id;
        let found = futures::future::try_join_all(
            missing
                .iter()
                .map(|r| store.get_resource_version(user_id, r.kind, r.id, r.version)),
        )
        .await?;
        self.seen.extend(missing.into_iter().zip(found));
        Ok(())
    }

    /// The referenced version (the newest one for a reference to the latest), if it exists.
    pub(crate) async fn get(
        &mut self,
        r: ResourceRef,
    ) -> Result<Option<ResourceVersion>, ApiError> {
        if let Some(found) = self.seen.get(&r) {
            return Ok(found.clone());
        }
        let found = self
            .state
            .store
            .get_resource_version(self.user_id, r.kind, r.id, r.version)
            .await?;
        self.seen.insert(r, found.clone());
        Ok(found)
    }
}

/// Parses a JSON request body; a failure names the field (`prompt.version`) and says what
/// it expected. `objects` lists the fields that hold objects (`timeouts.inactivity`,
/// `tools[]` for each item of `tools`, `""` for the body itself): serde would also take an
/// array there (as the struct's fields in order), which the OpenAPI document does not allow.
pub(crate) fn parse_body<T: DeserializeOwned>(
    bytes: &[u8],
    objects: &[&str],
) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid: {e}")))?;
    for path in objects {
        if let Some(at) = array_at(&value, path) {
            return Err(ApiError::invalid(if at.is_empty() {
                "the request body is not valid: it must be a JSON object, not an array".into()
            } else {
                format!("`{at}`: invalid type: sequence, expected an object")
            }));
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::invalid(format!("the request body is not valid: {inner}"))
        } else {
            ApiError::invalid(format!("`{path}`: {inner}"))
        }
    })
}

/// Where (`timeouts.inactivity`, `tools[2]`) the field at `path` holds an array, if it does.
fn array_at(value: &serde_json::Value, path: &str) -> Option<String> {
    let mut found: Vec<(String, &serde_json::Value)> = vec![(String::new(), value)];
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (key, each) = match segment.strip_suffix("[]") {
            Some(key) => (key, true),
            None => (segment, false),
        };
        let mut next = Vec::new();
        for (at, v) in found {
            let Some(child) = v.as_object().and_then(|o| o.get(key)) else {
                continue;
            };
            let here = if at.is_empty() {
                key.to_string()
            } else {
                format!("{at}.{key}")
            };
            match (each, child.as_array()) {
                (true, Some(items)) => next.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (format!("{here}[{i}]"), item)),
                ),
                (true, None) => {}
                (false, _) => next.push((here, child)),
            }
        }
        found = next;
    }
    found
        .into_iter()
        .find(|(_, v)| v.is_array())
        .map(|(at, _)| at)
}

/// A body stored by the server, read back.
pub(crate) fn stored_body<T: DeserializeOwned>(v: &ResourceVersion) -> Result<T, ApiError> {
    serde_json::from_str(&v.body).map_err(|e| {
        ApiError::Internal(format!(
            "stored body of {} v{} does not parse: {e}",
            v.id, v.version
        ))
    })
}

/// A body to store.
pub(crate) fn to_body<T: Serialize>(body: &T) -> Result<String, ApiError> {
    serde_json::to_string(body).map_err(|e| ApiError::Internal(format!("encoding a body: {e}")))
}

/// The `{version}` of a path: a whole number from 0 to [`MAX_VERSION`].
pub(crate) fn path_version(raw: &str) -> Result<i64, ApiError> {
    match raw.trim().parse::<i64>() {
        Ok(v) if (0..=MAX_VERSION).contains(&v) => Ok(v),
        _ => Err(ApiError::invalid(format!(
            "version must be a whole number from 0 to {MAX_VERSION} (got `{raw}`)"
        ))),
    }
}

fn flag(q: &Query, name: &str, default: bool) -> Result<bool, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) if v.trim().eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.trim().eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(ApiError::invalid(format!(
            "{name} must be `true` or `false` (got `{v}`)"
        ))),
    }
}

fn paging(q: &Query) -> Result<PageRequest, ApiError> {
    // These listings have no `ascending_order`: always oldest first.
    Ok(PageRequest {
        ascending: true,
        ..q.page()?
    })
}

pub(crate) fn not_found<K: Kind>(id: Uuid) -> ApiError {
    ApiError::NotFound(format!(
        "no {} with id {id} exists for this account",
        K::WHAT
    ))
}

pub(crate) fn no_version<K: Kind>(id: Uuid, version: i64) -> ApiError {
    ApiError::NotFound(format!(
        "no {} with id {id} and version {version} exists for this account",
        K::WHAT
    ))
}

/// `GET /v0/evi/{kind}`: the newest version of each (or every version), by name.
pub(crate) async fn list<K: Kind>(
    state: &AppState,
    who: &Caller,
    raw: Option<&str>,
) -> Result<Json<K::Paged>, ApiError> {
    let q = Query::parse(raw)?;
    let page = paging(&q)?;
    let filter = ResourceFilter {
        id: None,
        name: q.get("name").map(str::to_string),
        most_recent_only: flag(&q, "restrict_to_most_recent", true)?,
    };
    page_of::<K>(state, who, &filter, page).await.map(Json)
}

/// `GET /v0/evi/{kind}/{id}`: the versions of one (all of them by default).
pub(crate) async fn list_versions<K: Kind>(
    state: &AppState,
    who: &Caller,
    id: &str,
    raw: Option<&str>,
) -> Result<Json<K::Paged>, ApiError> {
    let id = path_uuid(K::WHAT, id)?;
    let q = Query::parse(raw)?;
    let page = paging(&q)?;
    let filter = ResourceFilter {
        id: Some(id),
        name: None,
        most_recent_only: flag(&q, "restrict_to_most_recent", false)?,
    };
    let (paged, total) = page_and_total::<K>(state, who, &filter, page).await?;
    // A resource always has a version: none means there is no such resource.
    if total == 0 {
        return Err(not_found::<K>(id));
    }
    Ok(Json(paged))
}

async fn page_of<K: Kind>(
    state: &AppState,
    who: &Caller,
    filter: &ResourceFilter,
    page: PageRequest,
) -> Result<K::Paged, ApiError> {
    Ok(page_and_total::<K>(state, who, filter, page).await?.0)
}

async fn page_and_total<K: Kind>(
    state: &AppState,
    who: &Caller,
    filter: &ResourceFilter,
    page: PageRequest,
) -> Result<(K::Paged, u64), ApiError> {
    let user_id = who.0.user_id;
    let found = state
        .store
        .list_resources(user_id, K::KIND, filter, page)
        .await?;
    let mut refs = Resolver::new(state, user_id);
    let mut items = Vec::with_capacity(found.items.len());
    for v in found.items {
        items.push(K::shape(&mut refs, v).await?);
    }
    Ok((K::paged(page, found.total, items), found.total))
}

/// `GET /v0/evi/{kind}/{id}/version/{version}`.
pub(crate) async fn get_version<K: Kind>(
    state: &AppState,
    who: &Caller,
    (id, version): (&str, &str),
) -> Result<Json<K::Return>, ApiError> {
    let id = path_uuid(K::WHAT, id)?;
    let version = path_version(version)?;
    let user_id = who.0.user_id;
    let found = state
        .store
        .get_resource_version(user_id, K::KIND, id, Some(version))
        .await?
        .ok_or_else(|| no_version::<K>(id, version))?;
    Ok(Json(
        K::shape(&mut Resolver::new(state, user_id), found).await?,
    ))
}

/// `DELETE /v0/evi/{kind}/{id}` (`version` `None`) and `…/version/{version}`: 200, empty.
pub(crate) async fn delete<K: Kind>(
    state: &AppState,
    who: &Caller,
    id: &str,
    version: Option<&str>,
) -> Result<StatusCode, ApiError> {
    let id = path_uuid(K::WHAT, id)?;
    let version = version.map(path_version).transpose()?;
    match state
        .store
        .delete_resource(who.0.user_id, K::KIND, id, version)
        .await?
    {
        Deleted::Done => {
            tracing::info!(kind = K::WHAT, %id, ?version, "deleted");
            Ok(StatusCode::OK)
        }
        Deleted::NotFound => Err(match version {
            Some(v) => no_version::<K>(id, v),
            None => not_found::<K>(id),
        }),
        Deleted::Referenced(by) => Err(still_referenced::<K>(id, version, &by)),
    }
}

/// The refusal to delete what config versions use, naming them.
fn still_referenced<K: Kind>(id: Uuid, version: Option<i64>, by: &[Referrer]) -> ApiError {
    let mut configs: Vec<(Uuid, &str, Vec<String>)> = Vec::new();
    for r in by {
        match configs.iter_mut().find(|(c, _, _)| *c == r.config_id) {
            Some((_, _, versions)) => versions.push(r.version.to_string()),
            None => configs.push((r.config_id, &r.name, vec![r.version.to_string()])),
        }
    }
    let list = configs
        .iter()
        .map(|(c, name, versions)| {
            let s = if versions.len() == 1 { "" } else { "s" };
            format!("config \"{name}\" ({c}) version{s} {}", versions.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let what = match version {
        Some(v) => format!("version {v} of {} {id}", K::WHAT),
        None => format!("{} {id}", K::WHAT),
    };
    ApiError::BadRequest {
        code: "still_referenced",
        message: format!(
            "{what} is used by {list}; delete those config versions (or give them other {}s) \
             first",
            K::WHAT
        ),
    }
}

/// `PATCH /v0/evi/{kind}/{id}` with `{"name": …}`: 200, `text/plain`, empty.
pub(crate) async fn rename<K: Kind>(
    state: &AppState,
    who: &Caller,
    id: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let id = path_uuid(K::WHAT, id)?;
    let posted: colloquy_wire::PostedName = parse_body(body, &[""])?;
    K::check_name(&posted.name)?;
    if !state
        .store
        .rename_resource(who.0.user_id, K::KIND, id, &posted.name)
        .await?
    {
        return Err(not_found::<K>(id));
    }
    Ok((
        StatusCode::OK,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        "",
    )
        .into_response())
}

/// `PATCH /v0/evi/{kind}/{id}/version/{version}` with `{"version_description": …}`; `{}`,
/// `null` or an empty body clear the description.
pub(crate) async fn describe<K: Kind>(
    state: &AppState,
    who: &Caller,
    (id, version): (&str, &str),
    body: &[u8],
) -> Result<Json<K::Return>, ApiError> {
    let id = path_uuid(K::WHAT, id)?;
    let version = path_version(version)?;
    let trimmed = std::str::from_utf8(body).map(str::trim).unwrap_or("x");
    let posted: PostedVersionDescription = if trimmed.is_empty() || trimmed == "null" {
        PostedVersionDescription::default()
    } else {
        parse_body(body, &[""])?
    };
    let user_id = who.0.user_id;
    let updated = state
        .store
        .describe_resource_version(
            user_id,
            K::KIND,
            id,
            version,
            posted.version_description.as_deref(),
            now_ms(),
        )
        .await?
        .ok_or_else(|| no_version::<K>(id, version))?;
    Ok(Json(
        K::shape(&mut Resolver::new(state, user_id), updated).await?,
    ))
}

/// Where a reference of a request came from, for messages (`tools[1].id`).
pub(crate) type Labeled = Vec<(ResourceRef, String)>;

/// Stores a new resource (`name` given) or the next version of `id`, and answers 201 with
/// it; a reference that names nothing is a 400 naming its field.
pub(crate) async fn store<K: Kind>(
    state: &AppState,
    who: &Caller,
    id: Uuid,
    name: Option<&str>,
    new: NewVersion,
    labels: &Labeled,
) -> Result<(StatusCode, Json<K::Return>), ApiError> {
    let user_id = who.0.user_id;
    let written = match name {
        Some(name) => {
            state
                .store
                .create_resource(user_id, K::KIND, id, name, &new)
                .await?
        }
        None => {
            state
                .store
                .add_resource_version(user_id, K::KIND, id, &new)
                .await?
        }
    };
    match written {
        Written::Stored(v) => {
            tracing::info!(kind = K::WHAT, id = %v.id, version = v.version, "stored");
            let shaped = K::shape(&mut Resolver::new(state, user_id), v).await?;
            Ok((StatusCode::CREATED, Json(shaped)))
        }
        Written::NotFound => Err(not_found::<K>(id)),
        Written::MissingReference(r) => {
            let field = labels
                .iter()
                .find(|(l, _)| *l == r)
                .map_or("a reference", |(_, f)| f.as_str());
            Err(validation::unknown_reference(field, r))
        }
    }
}
