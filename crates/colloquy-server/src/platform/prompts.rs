//! `/v0/evi/prompts` (spec `evi-platform.md` §2).

use super::{Kind, Resolver};
use crate::auth::Caller;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::params::path_uuid;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use colloquy_storage::{NewVersion, PageRequest, ResourceKind, ResourceVersion};
use colloquy_wire::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A prompt version's body as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPrompt {
    /// The system prompt.
    pub text: String,
    /// Prompt expansion as posted.
    pub prompt_expansion: Option<PromptExpansionSpec>,
}

/// The prompts' [`Kind`].
pub(crate) struct Prompts;

/// A stored prompt version on the wire, `FIXED` or (in a config) `LATEST`.
pub(crate) fn return_prompt(
    v: ResourceVersion,
    version_type: VersionType,
) -> Result<ReturnPrompt, ApiError> {
    let body: StoredPrompt = super::stored_body(&v)?;
    Ok(ReturnPrompt {
        id: v.id.to_string(),
        version: v.version,
        version_type,
        version_description: v.version_description,
        name: v.name,
        created_on: v.created_on,
        modified_on: v.modified_on,
        text: body.text,
        prompt_expansion: body.prompt_expansion,
    })
}

impl Kind for Prompts {
    const KIND: ResourceKind = ResourceKind::Prompt;
    const WHAT: &'static str = "prompt";
    type Return = ReturnPrompt;
    type Paged = ReturnPagedPrompts;

    fn paged(page: PageRequest, total: u64, items: Vec<ReturnPrompt>) -> ReturnPagedPrompts {
        ReturnPagedPrompts {
            page_number: page.number.into(),
            page_size: page.size.into(),
            total_pages: page.total_pages(total),
            prompts_page: items,
        }
    }

    async fn shape(_: &mut Resolver<'_>, v: ResourceVersion) -> Result<ReturnPrompt, ApiError> {
        return_prompt(v, VersionType::Fixed)
    }
}

fn new_version(
    text: String,
    prompt_expansion: Option<PromptExpansionSpec>,
    version_description: Option<String>,
) -> Result<NewVersion, ApiError> {
    Ok(NewVersion {
        body: super::to_body(&StoredPrompt {
            text,
            prompt_expansion,
        })?,
        version_description,
        references: vec![],
        inline_prompt: None,
        now_ms: now_ms(),
    })
}

/// List prompts (the newest version of each by default).
#[utoipa::path(get, path = "/v0/evi/prompts", tag = "prompts", params(super::ListParams),
    responses((status = 200, body = ReturnPagedPrompts), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_prompts(
    State(state): State<AppState>,
    who: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnPagedPrompts>, ApiError> {
    super::list::<Prompts>(&state, &who, raw.as_deref()).await
}

/// Create a prompt (its version 0).
#[utoipa::path(post, path = "/v0/evi/prompts", tag = "prompts", request_body = PostedPrompt,
    responses((status = 201, body = ReturnPrompt), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create_prompt(
    State(state): State<AppState>,
    who: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<ReturnPrompt>), ApiError> {
    let posted: PostedPrompt = super::parse_body(&body, &["", "prompt_expansion"])?;
    super::validation::check_name("name", &posted.name)?;
    let new = new_version(
        posted.text,
        posted.prompt_expansion,
        posted.version_description,
    )?;
    let id = Uuid::new_v4();
    super::store::<Prompts>(&state, &who, id, Some(&posted.name), new, &vec![]).await
}

/// List the versions of a prompt (all of them by default).
#[utoipa::path(get, path = "/v0/evi/prompts/{id}", tag = "prompts",
    params(("id" = Uuid, Path, description = "Prompt id (UUID)"), super::VersionListParams),
    responses((status = 200, body = ReturnPagedPrompts), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_prompt_versions(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnPagedPrompts>, ApiError> {
    super::list_versions::<Prompts>(&state, &who, &id, raw.as_deref()).await
}

/// Create the next version of a prompt.
#[utoipa::path(post, path = "/v0/evi/prompts/{id}", tag = "prompts",
    params(("id" = Uuid, Path, description = "Prompt id (UUID)")),
    request_body = PostedPromptVersion,
    responses((status = 201, body = ReturnPrompt), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create_prompt_version(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ReturnPrompt>), ApiError> {
    let id = path_uuid("prompt", &id)?;
    let posted: PostedPromptVersion = super::parse_body(&body, &["", "prompt_expansion"])?;
    let new = new_version(
        posted.text,
        posted.prompt_expansion,
        posted.version_description,
    )?;
    super::store::<Prompts>(&state, &who, id, None, new, &vec![]).await
}

/// Delete a prompt with all its versions (refused while a config version uses it).
#[utoipa::path(delete, path = "/v0/evi/prompts/{id}", tag = "prompts",
    params(("id" = Uuid, Path, description = "Prompt id (UUID)")),
    responses((status = 200, description = "Deleted (empty body)"),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_prompt(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    super::delete::<Prompts>(&state, &who, &id, None).await
}

/// Rename a prompt (every version).
#[utoipa::path(patch, path = "/v0/evi/prompts/{id}", tag = "prompts",
    params(("id" = Uuid, Path, description = "Prompt id (UUID)")), request_body = PostedName,
    responses((status = 200, description = "Renamed (empty body)", content_type = "text/plain",
               body = String),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update_prompt_name(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    super::rename::<Prompts>(&state, &who, &id, &body).await
}

/// Get one version of a prompt.
#[utoipa::path(get, path = "/v0/evi/prompts/{id}/version/{version}", tag = "prompts",
    params(("id" = Uuid, Path, description = "Prompt id (UUID)"),
           ("version" = i64, Path, minimum = 0, maximum = 2147483647,
            description = "Version number")),
    responses((status = 200, body = ReturnPrompt), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get_prompt_version(
    State(state): State<AppState>,
    who: Caller,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<ReturnPrompt>, ApiError> {
    super::get_version::<Prompts>(&state, &who, (&id, &version)).await
}

/// Delete one version of a prompt (the last one deletes the prompt; refused while a config
/// version uses it).
#[utoipa::path(delete, path = "/v0/evi/prompts/{id}/version/{version}", tag = "prompts",
    params(("id" = Uuid, Path, description = "Prompt id (UUID)"),
           ("version" = i64, Path, minimum = 0, maximum = 2147483647,
            description = "Version number")),
    responses((status = 200, description = "Deleted (empty body)"),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_prompt_version(
    State(state): State<AppState>,
    who: Caller,
    Path((id, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    super::delete::<Prompts>(&state, &who, &id, Some(&version)).await
}

/// Change (or clear) the description of a prompt version.
#[utoipa::path(patch, path = "/v0/evi/prompts/{id}/version/{version}", tag = "prompts",
    params(("id" = Uuid, Path, description = "Prompt id (UUID)"),
           ("version" = i64, Path, minimum = 0, maximum = 2147483647,
            description = "Version number")),
    request_body = Option<PostedVersionDescription>,
    responses((status = 200, body = ReturnPrompt), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update_prompt_description(
    State(state): State<AppState>,
    who: Caller,
    Path((id, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ReturnPrompt>, ApiError> {
    super::describe::<Prompts>(&state, &who, (&id, &version), &body).await
}
