//! `/v0/evi/tools` (spec `evi-platform.md` §3): user-defined (function) tools.

use super::validation::{check_parameters, check_tool_name};
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

/// A tool version's body as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTool {
    /// The JSON Schema of the arguments, as a string.
    pub parameters: String,
    /// When and how the model should call it.
    pub description: Option<String>,
    /// Given to the model instead of a result if the tool fails.
    pub fallback_content: Option<String>,
}

/// The tools' [`Kind`].
pub(crate) struct Tools;

/// A stored tool version on the wire, `FIXED` or (in a config) `LATEST`.
pub(crate) fn return_tool(
    v: ResourceVersion,
    version_type: VersionType,
) -> Result<ReturnUserDefinedTool, ApiError> {
    let body: StoredTool = super::stored_body(&v)?;
    Ok(ReturnUserDefinedTool {
        tool_type: ToolType::Function,
        id: v.id.to_string(),
        version: v.version,
        version_type,
        version_description: v.version_description,
        name: v.name,
        created_on: v.created_on,
        modified_on: v.modified_on,
        fallback_content: body.fallback_content,
        description: body.description,
        parameters: body.parameters,
    })
}

impl Kind for Tools {
    const KIND: ResourceKind = ResourceKind::Tool;
    const WHAT: &'static str = "tool";
    type Return = ReturnUserDefinedTool;
    type Paged = ReturnPagedUserDefinedTools;

    fn paged(
        page: PageRequest,
        total: u64,
        items: Vec<ReturnUserDefinedTool>,
    ) -> ReturnPagedUserDefinedTools {
        ReturnPagedUserDefinedTools {
            page_number: page.number.into(),
            page_size: page.size.into(),
            total_pages: page.total_pages(total),
            tools_page: items,
        }
    }

    async fn shape(
        _: &mut Resolver<'_>,
        v: ResourceVersion,
    ) -> Result<ReturnUserDefinedTool, ApiError> {
        return_tool(v, VersionType::Fixed)
    }

    /// A tool's name is the function name the model calls.
    fn check_name(name: &str) -> Result<(), ApiError> {
        check_tool_name(name)
    }
}

fn new_version(
    tool: StoredTool,
    version_description: Option<String>,
) -> Result<NewVersion, ApiError> {
    check_parameters(&tool.parameters)?;
    Ok(NewVersion {
        body: super::to_body(&tool)?,
        version_description,
        references: vec![],
        inline_prompt: None,
        now_ms: now_ms(),
    })
}

/// List tools (the newest version of each by default).
#[utoipa::path(get, path = "/v0/evi/tools", tag = "tools", params(super::ListParams),
    responses((status = 200, body = ReturnPagedUserDefinedTools), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_tools(
    State(state): State<AppState>,
    who: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnPagedUserDefinedTools>, ApiError> {
    super::list::<Tools>(&state, &who, raw.as_deref()).await
}

/// Create a tool (its version 0).
#[utoipa::path(post, path = "/v0/evi/tools", tag = "tools", request_body = PostedUserDefinedTool,
    responses((status = 201, body = ReturnUserDefinedTool), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create_tool(
    State(state): State<AppState>,
    who: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<ReturnUserDefinedTool>), ApiError> {
    let posted: PostedUserDefinedTool = super::parse_body(&body, &[""])?;
    check_tool_name(&posted.name)?;
    let new = new_version(
        StoredTool {
            parameters: posted.parameters,
            description: posted.description,
            fallback_content: posted.fallback_content,
        },
        posted.version_description,
    )?;
    let id = Uuid::new_v4();
    super::store::<Tools>(&state, &who, id, Some(&posted.name), new, &vec![]).await
}

/// List the versions of a tool (all of them by default).
#[utoipa::path(get, path = "/v0/evi/tools/{id}", tag = "tools",
    params(("id" = Uuid, Path, description = "Tool id (UUID)"), super::VersionListParams),
    responses((status = 200, body = ReturnPagedUserDefinedTools), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_tool_versions(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnPagedUserDefinedTools>, ApiError> {
    super::list_versions::<Tools>(&state, &who, &id, raw.as_deref()).await
}

/// Create the next version of a tool.
#[utoipa::path(post, path = "/v0/evi/tools/{id}", tag = "tools",
    params(("id" = Uuid, Path, description = "Tool id (UUID)")),
    request_body = PostedUserDefinedToolVersion,
    responses((status = 201, body = ReturnUserDefinedTool), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create_tool_version(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ReturnUserDefinedTool>), ApiError> {
    let id = path_uuid("tool", &id)?;
    let posted: PostedUserDefinedToolVersion = super::parse_body(&body, &[""])?;
    let new = new_version(
        StoredTool {
            parameters: posted.parameters,
            description: posted.description,
            fallback_content: posted.fallback_content,
        },
        posted.version_description,
    )?;
    super::store::<Tools>(&state, &who, id, None, new, &vec![]).await
}

/// Delete a tool with all its versions (refused while a config version uses it).
#[utoipa::path(delete, path = "/v0/evi/tools/{id}", tag = "tools",
    params(("id" = Uuid, Path, description = "Tool id (UUID)")),
    responses((status = 200, description = "Deleted (empty body)"),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_tool(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    super::delete::<Tools>(&state, &who, &id, None).await
}

/// Rename a tool (every version).
#[utoipa::path(patch, path = "/v0/evi/tools/{id}", tag = "tools",
    params(("id" = Uuid, Path, description = "Tool id (UUID)")), request_body = PostedToolName,
    responses((status = 200, description = "Renamed (empty body)", content_type = "text/plain",
               body = String),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update_tool_name(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    super::rename::<Tools>(&state, &who, &id, &body).await
}

/// Get one version of a tool.
#[utoipa::path(get, path = "/v0/evi/tools/{id}/version/{version}", tag = "tools",
    params(("id" = Uuid, Path, description = "Tool id (UUID)"),
           ("version" = i64, Path, minimum = 0, maximum = 2147483647,
            description = "Version number")),
    responses((status = 200, body = ReturnUserDefinedTool), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get_tool_version(
    State(state): State<AppState>,
    who: Caller,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<ReturnUserDefinedTool>, ApiError> {
    super::get_version::<Tools>(&state, &who, (&id, &version)).await
}

/// Delete one version of a tool (the last one deletes the tool; refused while a config
/// version uses it).
#[utoipa::path(delete, path = "/v0/evi/tools/{id}/version/{version}", tag = "tools",
    params(("id" = Uuid, Path, description = "Tool id (UUID)"),
           ("version" = i64, Path, minimum = 0, maximum = 2147483647,
            description = "Version number")),
    responses((status = 200, description = "Deleted (empty body)"),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_tool_version(
    State(state): State<AppState>,
    who: Caller,
    Path((id, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    super::delete::<Tools>(&state, &who, &id, Some(&version)).await
}

/// Change (or clear) the description of a tool version.
#[utoipa::path(patch, path = "/v0/evi/tools/{id}/version/{version}", tag = "tools",
    params(("id" = Uuid, Path, description = "Tool id (UUID)"),
           ("version" = i64, Path, minimum = 0, maximum = 2147483647,
            description = "Version number")),
    request_body = Option<PostedVersionDescription>,
    responses((status = 200, body = ReturnUserDefinedTool), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update_tool_description(
    State(state): State<AppState>,
    who: Caller,
    Path((id, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ReturnUserDefinedTool>, ApiError> {
    super::describe::<Tools>(&state, &who, (&id, &version), &body).await
}
