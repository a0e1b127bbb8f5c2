//! One chat group: its chats in order and their combined transcript.

use super::chat::{not_found, parse_id, TranscriptPart};
use super::chats::ChatRow;
use super::error::UiError;
use super::format::{self, Stamp};
use super::session::UiSession;
use super::transcript::turns;
use super::{redirect_unless_fragment, render, render_string, Layout, Params};
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use colloquy_storage::{ChatRecord, GroupRecord, PageRequest};
use std::collections::HashMap;
use uuid::Uuid;

/// Events per page of the combined transcript.
pub const GROUP_TRANSCRIPT_PAGE: u32 = 100;
/// Most chats listed for one group.
const MAX_GROUP_CHATS: u32 = 1000;

/// The chat group page.
#[derive(Template)]
#[template(path = "ui/group.html")]
pub struct GroupPage {
    layout: Layout,
    id: String,
    short_id: String,
    first_start: Stamp,
    most_recent_start: Stamp,
    num_chats: i64,
    active: bool,
    chats: Vec<(usize, ChatRow)>,
    more_chats: bool,
    transcript: String,
}

async fn load(state: &AppState, s: &UiSession, raw_id: &str) -> Result<GroupRecord, UiError> {
    let id = parse_id(raw_id, "chat group")?;
    state
        .store
        .get_chat_group(s.principal.user_id, id)
        .await?
        .ok_or_else(|| not_found("chat group", raw_id))
}

/// Every chat of the group, oldest first (up to [`MAX_GROUP_CHATS`]).
async fn group_chats(
    state: &AppState,
    group: &GroupRecord,
) -> Result<(Vec<ChatRecord>, bool), UiError> {
    let size = 100;
    let mut chats = Vec::new();
    let mut total = 0;
    for number in 0..MAX_GROUP_CHATS / size {
        let page = state
            .store
            .list_group_chats(
                group.id,
                None,
                PageRequest {
                    number,
                    size,
                    ascending: true,
                },
            )
            .await?;
        total = page.total;
        let n = page.items.len();
        chats.extend(page.items);
        if n < size as usize {
            break;
        }
    }
    let more = total > chats.len() as u64;
    Ok((chats, more))
}

async fn transcript_part(
    state: &AppState,
    group: &GroupRecord,
    chats: &[ChatRecord],
    page: u32,
) -> Result<TranscriptPart, UiError> {
    let events = state
        .store
        .list_group_events(
            group.id,
            PageRequest {
                number: page - 1,
                size: GROUP_TRANSCRIPT_PAGE,
                ascending: true,
            },
        )
        .await?;
    let numbers: HashMap<Uuid, usize> = chats
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, i + 1))
        .collect();
    let number = |id: Uuid| numbers.get(&id).copied().unwrap_or(0);
    Ok(TranscriptPart::new(
        turns(&events.items, None, Some(&number)),
        &format!("/ui/groups/{}", group.id),
        page,
        events.total,
        GROUP_TRANSCRIPT_PAGE,
    ))
}

/// `GET /ui/groups/{id}[?page=N]`.
pub async fn page(
    State(state): State<AppState>,
    session: UiSession,
    Path(raw_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let group = load(&state, &session, &raw_id).await?;
    let page = Params::parse(raw.as_deref()).page("page");
    let (chats, more_chats) = group_chats(&state, &group).await?;
    let transcript = transcript_part(&state, &group, &chats, page).await?;
    let short_id = format::short_id(&group.id);
    let view = GroupPage {
        layout: Layout::signed_in(format!("Chat group {short_id}"), "chat", &session),
        id: group.id.to_string(),
        short_id,
        first_start: format::stamp(group.first_start_timestamp),
        most_recent_start: format::stamp(group.most_recent_start_timestamp),
        num_chats: group.num_chats,
        active: group.active,
        chats: chats
            .iter()
            .enumerate()
            .map(|(i, c)| (i + 1, ChatRow::new(c)))
            .collect(),
        more_chats,
        transcript: render_string(&transcript)?,
    };
    render(&view)
}

/// `GET /ui/groups/{id}/transcript?page=N`: the combined transcript part (htmx).
pub async fn transcript(
    State(state): State<AppState>,
    session: UiSession,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let group = load(&state, &session, &raw_id).await?;
    let page = Params::parse(raw.as_deref()).page("page");
    let holder = format!("/ui/groups/{}?page={page}#transcript", group.id);
    if let Some(redirect) = redirect_unless_fragment(&headers, &holder) {
        return Ok(redirect);
    }
    let (chats, _) = group_chats(&state, &group).await?;
    let part = transcript_part(&state, &group, &chats, page).await?;
    Ok(Html(render_string(&part)?).into_response())
}
