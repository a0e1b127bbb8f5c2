//! `/v0/evi/configs` (spec `evi-platform.md` §4). A config version stores its checked
//! settings with references to prompts and tools by id ([`StoredConfig`]); they are read
//! back resolved, a reference to the latest version as the newest version at read time.

use super::prompts::{return_prompt, StoredPrompt};
use super::tools::return_tool;
use super::validation::{check_config, check_name, split_config, CheckedConfig, StoredConfig};
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
use colloquy_storage::{
    InlinePrompt, NewVersion, PageRequest, ResourceKind, ResourceRef, ResourceVersion,
};
use colloquy_wire::*;
use uuid::Uuid;

/// Default inactivity timeout, seconds.
pub const DEFAULT_INACTIVITY_SECS: i64 = 120;
/// Default (and largest) chat duration, seconds.
pub const DEFAULT_MAX_DURATION_SECS: i64 = 1800;

/// The fields of a posted config that hold objects ([`super::parse_body`]).
pub(crate) const CONFIG_OBJECTS: &[&str] = &[
    "",
    "prompt",
    "prompt.prompt_expansion",
    "voice",
    "language_model",
    "ellm_model",
    "tools[]",
    "builtin_tools[]",
    "event_messages",
    "event_messages.on_new_chat",
    "event_messages.on_inactivity_timeout",
    "event_messages.on_max_duration_timeout",
    "timeouts",
    "timeouts.inactivity",
    "timeouts.max_duration",
    "nudges",
    "interruption",
    "turn_detection",
    "webhooks[]",
];

/// The configs' [`Kind`].
pub(crate) struct Configs;

fn version_type(version: Option<i64>) -> VersionType {
    if version.is_some() {
        VersionType::Fixed
    } else {
        VersionType::Latest
    }
}

/// An event message as read back: one not set is disabled, with empty text (as Hume's
/// fixtures show them).
fn event_message(spec: Option<&PostedEventMessageSpec>) -> ReturnEventMessageSpec {
    match spec {
        Some(s) => ReturnEventMessageSpec {
            enabled: s.enabled,
            text: s.text.clone(),
        },
        None => ReturnEventMessageSpec {
            enabled: false,
            text: Some(String::new()),
        },
    }
}

/// A timeout as read back: enabled with its default duration unless set.
fn timeout(spec: Option<&PostedTimeoutSpec>, default_secs: i64) -> ReturnTimeoutSpec {
    ReturnTimeoutSpec {
        enabled: spec.is_none_or(|s| s.enabled),
        duration_secs: Some(spec.and_then(|s| s.duration_secs).unwrap_or(default_secs)),
    }
}

impl Kind for Configs {
    const KIND: ResourceKind = ResourceKind::Config;
    const WHAT: &'static str = "config";
    type Return = ReturnConfig;
    type Paged = ReturnPagedConfigs;

    fn paged(page: PageRequest, total: u64, items: Vec<ReturnConfig>) -> ReturnPagedConfigs {
        ReturnPagedConfigs {
            page_number: page.number.into(),
            page_size: page.size.into(),
            total_pages: page.total_pages(total),
            configs_page: items,
        }
    }

    async fn shape(refs: &mut Resolver<'_>, v: ResourceVersion) -> Result<ReturnConfig, ApiError> {
        let c: StoredConfig = super::stored_body(&v)?;
        let prompt = match c.prompt {
            None => None,
            Some(r) => refs
                .get(ResourceRef {
                    kind: ResourceKind::Prompt,
                    id: r.id,
                    version: r.version,
                })
                .await?
                .map(|p| return_prompt(p, version_type(r.version)))
                .transpose()?,
        };
        let mut tools = Vec::with_capacity(c.tools.len());
        for r in c.tools {
            let tool = ResourceRef {
                kind: ResourceKind::Tool,
                id: r.id,
                version: r.version,
            };
            // Never missing: the store refuses to delete what a config version uses.
            if let Some(t) = refs.get(tool).await? {
                tools.push(return_tool(t, version_type(r.version))?);
            }
        }
        let events = c.event_messages.unwrap_or_default();
        let timeouts = c.timeouts.unwrap_or_default();
        Ok(ReturnConfig {
            id: v.id.to_string(),
            version: v.version,
            version_description: v.version_description,
            name: v.name,
            created_on: v.created_on,
            modified_on: v.modified_on,
            evi_version: c.evi_version,
            prompt,
            voice: c.voice,
            language_model: c.language_model,
            ellm_model: c.ellm_model,
            tools,
            builtin_tools: c.builtin_tools,
            event_messages: ReturnEventMessageSpecs {
                on_new_chat: Some(event_message(events.on_new_chat.as_ref())),
                on_inactivity_timeout: Some(event_message(events.on_inactivity_timeout.as_ref())),
                on_max_duration_timeout: Some(event_message(
                    events.on_max_duration_timeout.as_ref(),
                )),
            },
            timeouts: ReturnTimeoutSpecs {
                inactivity: timeout(timeouts.inactivity.as_ref(), DEFAULT_INACTIVITY_SECS),
                max_duration: timeout(timeouts.max_duration.as_ref(), DEFAULT_MAX_DURATION_SECS),
            },
            nudges: c.nudges,
            interruption: c.interruption,
            turn_detection: c.turn_detection,
            webhooks: c.webhooks,
        })
    }
}

/// A config's `voice`, resolved in the voice library (`crate::tts::resolve`): a `HUME_AI`
/// library voice by id or name, or one of the account's saved voices (`CUSTOM_VOICE`);
/// without a provider, the account's voices first, then the library.
async fn config_voice(
    state: &AppState,
    user_id: Uuid,
    voice: Option<PostedVoice>,
) -> Result<Option<ReturnVoice>, ApiError> {
    let Some(v) = voice else { return Ok(None) };
    if v.id.is_some() && v.name.is_some() {
        return Err(super::validation::combination(
            "voice: give either id or name (with its provider), not both",
        ));
    }
    match crate::tts::resolve(
        state,
        user_id,
        v.id.as_deref(),
        v.name.as_deref(),
        v.provider,
    )
    .await?
    {
        Ok(resolved) => Ok(Some(resolved.voice)),
        Err(message) => Err(ApiError::BadRequest {
            code: "unknown_reference",
            message: format!("voice: {message}"),
        }),
    }
}

/// The version to store for a checked config named `name` (which a new prompt takes).
fn new_version(
    checked: &CheckedConfig,
    version_description: Option<String>,
    name: &str,
) -> Result<NewVersion, ApiError> {
    let mut references: Vec<ResourceRef> = checked.references.iter().map(|(r, _)| *r).collect();
    let inline_prompt = match &checked.new_prompt {
        None => None,
        Some(p) => {
            references.insert(
                0,
                ResourceRef {
                    kind: ResourceKind::Prompt,
                    id: p.id,
                    version: Some(0),
                },
            );
            Some(InlinePrompt {
                id: p.id,
                name: name.to_string(),
                body: super::to_body(&StoredPrompt {
                    text: p.text.clone(),
                    prompt_expansion: p.prompt_expansion.clone(),
                })?,
            })
        }
    };
    Ok(NewVersion {
        body: super::to_body(&checked.stored)?,
        version_description,
        references,
        inline_prompt,
        now_ms: now_ms(),
    })
}

/// Create a config (its version 0). A `prompt` given as `text` creates a prompt named
/// after the config.
#[utoipa::path(post, path = "/v0/evi/configs", tag = "configs", request_body = PostedConfig,
    responses((status = 201, body = ReturnConfig), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create_config(
    State(state): State<AppState>,
    who: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<ReturnConfig>), ApiError> {
    let posted: PostedConfig = super::parse_body(&body, CONFIG_OBJECTS)?;
    check_name("name", &posted.name)?;
    let (name, posted) = split_config(posted);
    let description = posted.version_description.clone();
    let voice = config_voice(&state, who.0.user_id, posted.voice.clone()).await?;
    let checked = check_config(posted, None, voice)?;
    let new = new_version(&checked, description, &name)?;
    let id = Uuid::new_v4();
    super::store::<Configs>(&state, &who, id, Some(&name), new, &checked.references).await
}

/// Create the next version of a config; it replaces every setting (but for
/// `ellm_model.allow_short_responses`, kept from the newest version when not given).
#[utoipa::path(post, path = "/v0/evi/configs/{id}", tag = "configs",
    params(("id" = Uuid, Path, description = "Config id (UUID)")),
    request_body = PostedConfigVersion,
    responses((status = 201, body = ReturnConfig), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create_config_version(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ReturnConfig>), ApiError> {
    let id = path_uuid("config", &id)?;
    let posted: PostedConfigVersion = super::parse_body(&body, CONFIG_OBJECTS)?;
    let newest = state
        .store
        .get_resource_version(who.0.user_id, ResourceKind::Config, id, None)
        .await?
        .ok_or_else(|| super::not_found::<Configs>(id))?;
    let previous: StoredConfig = super::stored_body(&newest)?;
    let description = posted.version_description.clone();
    let voice = config_voice(&state, who.0.user_id, posted.voice.clone()).await?;
    let checked = check_config(
        posted,
        Some(previous.ellm_model.allow_short_responses),
        voice,
    )?;
    let new = new_version(&checked, description, &newest.name)?;
    super::store::<Configs>(&state, &who, id, None, new, &checked.references).await
}

/// List configs (the newest version of each by default).
#[utoipa::path(get, path = "/v0/evi/configs", tag = "configs", params(super::ListParams),
    responses((status = 200, body = ReturnPagedConfigs), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_configs(
    State(state): State<AppState>,
    who: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnPagedConfigs>, ApiError> {
    super::list::<Configs>(&state, &who, raw.as_deref()).await
}

/// List the versions of a config (all of them by default).
#[utoipa::path(get, path = "/v0/evi/configs/{id}", tag = "configs",
    params(("id" = Uuid, Path, description = "Config id (UUID)"), super::VersionListParams),
    responses((status = 200, body = ReturnPagedConfigs), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_config_versions(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnPagedConfigs>, ApiError> {
    super::list_versions::<Configs>(&state, &who, &id, raw.as_deref()).await
}

/// Delete a config with all its versions.
#[utoipa::path(delete, path = "/v0/evi/configs/{id}", tag = "configs",
    params(("id" = Uuid, Path, description = "Config id (UUID)")),
    responses((status = 200, description = "Deleted (empty body)"),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_config(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    super::delete::<Configs>(&state, &who, &id, None).await
}

/// Rename a config (every version).
#[utoipa::path(patch, path = "/v0/evi/configs/{id}", tag = "configs",
    params(("id" = Uuid, Path, description = "Config id (UUID)")), request_body = PostedName,
    responses((status = 200, description = "Renamed (empty body)", content_type = "text/plain",
               body = String),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update_config_name(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    super::rename::<Configs>(&state, &who, &id, &body).await
}

/// Get one version of a config.
#[utoipa::path(get, path = "/v0/evi/configs/{id}/version/{version}", tag = "configs",
    params(("id" = Uuid, Path, description = "Config id (UUID)"),
           ("version" = i64, Path, minimum = 0, maximum = 2147483647,
            description = "Version number")),
    responses((status = 200, body = ReturnConfig), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get_config_version(
    State(state): State<AppState>,
    who: Caller,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<ReturnConfig>, ApiError> {
    super::get_version::<Configs>(&state, &who, (&id, &version)).await
}

/// Delete one version of a config (the last one deletes the config..
#[utoipa::path(delete, path = "/v0/evi/configs/{id}/version/{version}", tag = "configs",
    params(("id" = Uuid, Path, description = "Config id (UUID)"),
           ("version" = i64, Path, minimum = 0, maximum = 2147483647,
            description = "Version number")),
    responses((status = 200, description = "Deleted (empty body)"),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_config_version(
    State(state): State<AppState>,
    who: Caller,
    Path((id, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    super::delete::<Configs>(&state, &who, &id, Some(&version)).await
}

/// Change (or clear) the description of a config version.
#[utoipa::path(patch, path = "/v0/evi/configs/{id}/version/{version}", tag = "configs",
    params(("id" = Uuid, Path, description = "Config id (UUID)"),
           ("version" = i64, Path, minimum = 0, maximum = 2147483647,
            description = "Version number")),
    request_body = Option<PostedVersionDescription>,
    responses((status = 200, body = ReturnConfig), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn update_config_description(
    State(state): State<AppState>,
    who: Caller,
    Path((id, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ReturnConfig>, ApiError> {
    super::describe::<Configs>(&state, &who, (&id, &version), &body).await
}
