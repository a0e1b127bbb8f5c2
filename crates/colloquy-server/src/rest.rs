//! The chat-history REST endpoints (spec §2.1–§2.7). Handlers are thin: validate, ask the
//! store (always scoped to the caller's account), shape the response.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{path_uuid, Query};
use crate::reconstruction::{self, RequestedAudio};
use crate::state::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use colloquy_storage::{ChatFilter, PageRequest};
use colloquy_wire::*;
use uuid::Uuid;

/// Documentation of the paging parameters shared by every list endpoint. Like every
/// optional query parameter, an empty value (`page_size=`) is the same as none.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// Zero-based page index (default 0). A page past the end is an empty page.
    #[param(minimum = 0, maximum = 4294967295_u32)]
    page_number: Option<i64>,
    /// Items per page, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u32>,
    /// `true` (default) for oldest first, `false` for newest first.
    ascending_order: Option<bool>,
}

/// Filters of `GET /v0/evi/chats`. An empty value (`config_id=`) is no filter.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ChatListFilters {
    /// Only chats that used this config (UUID).
    config_id: Option<Uuid>,
    /// Only chats with this status.
    status: Option<ChatStatus>,
    /// Colloquy extension (not in the hosted EVI API): only chats whose user or assistant
    /// messages contain every word given (case-insensitive; a word also matches words it
    /// begins, so `hel` finds "Hello"). Punctuation only separates words. At most 16 words
    /// and 1000 characters.
    #[param(max_length = 1000)]
    search: Option<String>,
}

fn not_found_chat(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no chat with id {id} exists for this account"))
}

fn not_found_group(id: Uuid) -> ApiError {
    ApiError::NotFound(format!(
        "no chat group with id {id} exists for this account"
    ))
}

fn direction(page: PageRequest) -> PaginationDirection {
    PaginationDirection::from_ascending(page.ascending)
}

/// List chats.
#[utoipa::path(get, path = "/v0/evi/chats", tag = "chats",
    params(PageParams, ChatListFilters),
    responses((status = 200, body = ReturnPagedChats), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_chats(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnPagedChats>, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    let page = q.page()?;
    let filter = ChatFilter {
        status: q.status()?,
        config_id: q.config_id()?,
        search: q.search()?,
        ..Default::default()
    };
    let chats = state.store.list_chats(who.user_id, &filter, page).await?;
    Ok(Json(ReturnPagedChats {
        page_number: page.number.into(),
        page_size: page.size.into(),
        total_pages: page.total_pages(chats.total),
        pagination_direction: direction(page),
        chats_page: chats.items.into_iter().map(Into::into).collect(),
    }))
}

/// List chat events (the bare chat resource path).
#[utoipa::path(get, path = "/v0/evi/chats/{id}", tag = "chats",
    params(("id" = Uuid, Path, description = "Chat id (UUID)"), PageParams),
    responses((status = 200, body = ReturnChatPagedEvents), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_chat_events(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnChatPagedEvents>, ApiError> {
    let id = path_uuid("chat", &id)?;
    let page = Query::parse(raw.as_deref())?.page()?;
    let chat = state
        .store
        .get_chat(who.user_id, id)
        .await?
        .ok_or_else(|| not_found_chat(id))?;
    let events = state.store.list_chat_events(id, page).await?;
    let chat: ReturnChat = chat.into();
    Ok(Json(ReturnChatPagedEvents {
        id: chat.id,
        chat_group_id: chat.chat_group_id,
        status: chat.status,
        start_timestamp: chat.start_timestamp,
        end_timestamp: chat.end_timestamp,
        metadata: chat.metadata,
        config: chat.config,
        page_number: page.number.into(),
        page_size: page.size.into(),
        total_pages: page.total_pages(events.total),
        pagination_direction: direction(page),
        events_page: events.items.into_iter().map(Into::into).collect(),
    }))
}

/// Get (and on first call, start) the audio reconstruction of a chat.
#[utoipa::path(get, path = "/v0/evi/chats/{id}/audio", tag = "chats",
    params(("id" = Uuid, Path, description = "Chat id (UUID)")),
    responses((status = 200, body = ReturnChatAudioReconstruction),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get_chat_audio(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<ReturnChatAudioReconstruction>, ApiError> {
    let id = path_uuid("chat", &id)?;
    let requested = reconstruction::request(&state, who.user_id, &[id], &state.public_base)
        .await?
        .pop()
        .ok_or_else(|| not_found_chat(id))?;
    Ok(Json(wire_reconstruction(requested)))
}

/// List chat groups.
#[utoipa::path(get, path = "/v0/evi/chat_groups", tag = "chat_groups",
    params(PageParams, ("config_id" = Option<Uuid>, Query,
        description = "Only groups whose most recent chat used this config (UUID). Empty: \
                       no filter.")),
    responses((status = 200, body = ReturnPagedChatGroups), (status = 400, body = ErrorResponse),
              (status = 401, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_chat_groups(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnPagedChatGroups>, ApiError> {
    let q = Query::parse(raw.as_deref())?;
    let page = q.page()?;
    let config_id = q.config_id()?;
    let groups = state
        .store
        .list_chat_groups(who.user_id, config_id.as_deref(), page)
        .await?;
    Ok(Json(ReturnPagedChatGroups {
        page_number: page.number.into(),
        page_size: page.size.into(),
        total_pages: page.total_pages(groups.total),
        pagination_direction: direction(page),
        chat_groups_page: groups.items.into_iter().map(Into::into).collect(),
    }))
}

/// Get a chat group with one page of its chats.
#[utoipa::path(get, path = "/v0/evi/chat_groups/{id}", tag = "chat_groups",
    params(("id" = Uuid, Path, description = "Chat group id (UUID)"), PageParams,
        ("status" = Option<ChatStatus>, Query,
            description = "Only chats with this status. Empty: no filter.")),
    responses((status = 200, body = ReturnChatGroupPagedChats),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get_chat_group(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnChatGroupPagedChats>, ApiError> {
    let id = path_uuid("chat group", &id)?;
    let q = Query::parse(raw.as_deref())?;
    let page = q.page()?;
    let status = q.status()?;
    let group = state
        .store
        .get_chat_group(who.user_id, id)
        .await?
        .ok_or_else(|| not_found_group(id))?;
    let chats = state.store.list_group_chats(id, status, page).await?;
    Ok(Json(ReturnChatGroupPagedChats {
        id: group.id.to_string(),
        first_start_timestamp: group.first_start_timestamp,
        most_recent_start_timestamp: group.most_recent_start_timestamp,
        num_chats: group.num_chats,
        active: Some(group.active),
        page_number: page.number.into(),
        page_size: page.size.into(),
        total_pages: page.total_pages(chats.total),
        pagination_direction: direction(page),
        chats_page: chats.items.into_iter().map(Into::into).collect(),
    }))
}

/// List the events of every chat of a group.
#[utoipa::path(get, path = "/v0/evi/chat_groups/{id}/events", tag = "chat_groups",
    params(("id" = Uuid, Path, description = "Chat group id (UUID)"), PageParams),
    responses((status = 200, body = ReturnChatGroupPagedEvents),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_chat_group_events(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnChatGroupPagedEvents>, ApiError> {
    let id = path_uuid("chat group", &id)?;
    let page = Query::parse(raw.as_deref())?.page()?;
    state
        .store
        .get_chat_group(who.user_id, id)
        .await?
        .ok_or_else(|| not_found_group(id))?;
    let events = state.store.list_group_events(id, page).await?;
    Ok(Json(ReturnChatGroupPagedEvents {
        id: id.to_string(),
        page_number: page.number.into(),
        page_size: page.size.into(),
        total_pages: page.total_pages(events.total),
        pagination_direction: direction(page),
        events_page: events.items.into_iter().map(Into::into).collect(),
    }))
}

/// Page over a group's chats, getting (and starting) each chat's audio reconstruction.
#[utoipa::path(get, path = "/v0/evi/chat_groups/{id}/audio", tag = "chat_groups",
    params(("id" = Uuid, Path, description = "Chat group id (UUID)"), PageParams),
    responses((status = 200, body = ReturnChatGroupPagedAudioReconstructions),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get_chat_group_audio(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReturnChatGroupPagedAudioReconstructions>, ApiError> {
    let id = path_uuid("chat group", &id)?;
    let page = Query::parse(raw.as_deref())?.page()?;
    let group = state
        .store
        .get_chat_group(who.user_id, id)
        .await?
        .ok_or_else(|| not_found_group(id))?;
    let chats = state.store.list_group_chats(id, None, page).await?;
    let ids: Vec<Uuid> = chats.items.iter().map(|c| c.id).collect();
    let page_items = reconstruction::request(&state, who.user_id, &ids, &state.public_base)
        .await?
        .into_iter()
        .map(wire_reconstruction)
        .collect();
    Ok(Json(ReturnChatGroupPagedAudioReconstructions {
        id: id.to_string(),
        user_id: who.user_id.to_string(),
        num_chats: group.num_chats,
        page_number: page.number.into(),
        page_size: page.size.into(),
        total_pages: page.total_pages(chats.total),
        pagination_direction: direction(page),
        audio_reconstructions_page: page_items,
    }))
}

/// Shapes a reconstruction for the wire. Once `COMPLETE` it carries the file name and the
/// download link minted for this answer, valid for 60 minutes (S3: the store's presigned
/// URL; local store: a link to Colloquy's own download route signed with the server
/// secret).
fn wire_reconstruction(requested: RequestedAudio) -> ReturnChatAudioReconstruction {
    let RequestedAudio { record: r, link } = requested;
    let filename = match r.status {
        ReconstructionStatus::Complete => r.filename,
        _ => None,
    };
    ReturnChatAudioReconstruction {
        id: r.chat_id.to_string(),
        user_id: r.user_id.to_string(),
        status: r.status,
        filename,
        modified_at: Some(r.modified_at),
        signed_url_expiration_timestamp_millis: link.as_ref().map(|l| l.expires_ms),
        signed_audio_url: link.map(|l| l.url),
    }
}

/// Erases chats' stored objects after their rows are gone. Every chat is tried, so one
/// failure does not leave the others' audio behind; each failure is logged, and any makes
/// the request fail (the rows, and so every API answer, are already gone).
async fn erase_objects(state: &AppState, user_id: Uuid, chats: &[Uuid]) -> Result<(), ApiError> {
    let mut first_error = None;
    for chat_id in chats {
        if let Err(e) = state.objects.erase_chat(user_id, *chat_id).await {
            tracing::error!(%chat_id, error = %e, "could not erase the chat's stored audio");
            first_error.get_or_insert(ApiError::Internal(format!(
                "erasing audio of chat {chat_id}: {e}"
            )));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Delete a chat with its events, captured audio and reconstruction (not in the hosted API).
#[utoipa::path(delete, path = "/v0/evi/chats/{id}", tag = "chats",
    params(("id" = Uuid, Path, description = "Chat id (UUID)")),
    responses((status = 204, description = "Erased everywhere it was stored"),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_chat(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_uuid("chat", &id)?;
    let deleted = state.store.delete_chats(who.user_id, &[id]).await?;
    if deleted.is_empty() {
        return Err(not_found_chat(id));
    }
    erase_objects(&state, who.user_id, &deleted).await?;
    tracing::info!(chat_id = %id, "chat deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a chat group and all of its chats (not in the hosted API).
#[utoipa::path(delete, path = "/v0/evi/chat_groups/{id}", tag = "chat_groups",
    params(("id" = Uuid, Path, description = "Chat group id (UUID)")),
    responses((status = 204, description = "Erased everywhere it was stored"),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_chat_group(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_uuid("chat group", &id)?;
    let chats = state
        .store
        .group_chat_ids(who.user_id, id)
        .await?
        .ok_or_else(|| not_found_group(id))?;
    let deleted = state.store.delete_chats(who.user_id, &chats).await?;
    erase_objects(&state, who.user_id, &deleted).await?;
    tracing::info!(chat_group_id = %id, chats = deleted.len(), "chat group deleted");
    Ok(StatusCode::NO_CONTENT)
}
