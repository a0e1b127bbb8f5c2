//! One chat: its facts, audio player, emotion chart, transcript (a page of events at a
//! time) and, on demand, its raw events.

use super::audio::{self, AudioPanel};
use super::chats::{chat_duration, status_class, status_label};
use super::emotions::{Collector, Emotions};
use super::error::UiError;
use super::format::{self, Stamp};
use super::session::UiSession;
use super::transcript::{pretty_json, turns, Turn};
use super::{
    redirect_unless_fragment, render, render_string, wants_fragment, Layout, PageLink, Pager,
    Params,
};
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use colloquy_storage::{ChatRecord, PageRequest};
use colloquy_wire::ReturnChatEvent;
use uuid::Uuid;

/// Events per transcript page.
pub const TRANSCRIPT_PAGE: u32 = 50;
/// Events per page of the raw event list.
pub const EVENTS_PAGE: u32 = 25;
/// Most events read for the emotion chart (a chat of 30 minutes has far fewer).
const CHART_SCAN_LIMIT: u32 = 20_000;

/// A path id, or the 404 page for anything that is not a UUID.
pub fn parse_id(raw: &str, what: &str) -> Result<Uuid, UiError> {
    Uuid::parse_str(raw.trim()).map_err(|_| not_found(what, raw))
}

/// The 404 of a chat or group this account cannot see (absent or another account's: the
/// same answer, so ids cannot be probed).
pub fn not_found(what: &str, id: &str) -> UiError {
    UiError::NotFound(format!(
        "There is no {what} with id {id} in your account. It may have been deleted, or the \
         link may be wrong."
    ))
}

async fn load_chat(state: &AppState, s: &UiSession, raw_id: &str) -> Result<ChatRecord, UiError> {
    let id = parse_id(raw_id, "chat")?;
    state
        .store
        .get_chat(s.principal.user_id, id)
        .await?
        .ok_or_else(|| not_found("chat", raw_id))
}

/// The transcript part of the chat page (`#transcript`).
#[derive(Template)]
#[template(path = "ui/_transcript.html")]
pub struct TranscriptPart {
    /// Entries.
    pub turns: Vec<Turn>,
    /// Paging over the events.
    pub pager: Pager,
    /// Whether the chat (group) has no events at all.
    pub empty: bool,
}

impl TranscriptPart {
    /// Page `page` of the transcript shown at `base` (`/ui/chats/{id}` or `/ui/groups/{id}`),
    /// `size` of `total` events per page.
    pub fn new(turns: Vec<Turn>, base: &str, page: u32, total: u64, size: u32) -> Self {
        TranscriptPart {
            turns,
            pager: Pager::new(page, total, size, |n| PageLink {
                href: format!("{base}?page={n}#transcript"),
                hx: format!("{base}/transcript?page={n}"),
                push: format!("{base}?page={n}"),
            }),
            empty: total == 0,
        }
    }
}

/// The raw events part (inside the "Raw events" panel).
#[derive(Template)]
#[template(path = "ui/_events.html")]
pub struct EventsPart {
    events: Vec<RawEvent>,
    pager: Pager,
}

/// The raw events as a page of their own (without JavaScript).
#[derive(Template)]
#[template(path = "ui/events.html")]
pub struct EventsPage {
    layout: Layout,
    chat_id: String,
    body: String,
}

/// One event with its wire fields.
pub struct RawEvent {
    id: String,
    short: String,
    seq: i64,
    event_type: &'static str,
    role: &'static str,
    at: Stamp,
    json: String,
    emotion_features: Option<String>,
    metadata: Option<String>,
}

/// The chat page.
#[derive(Template)]
#[template(path = "ui/chat.html")]
pub struct ChatPage {
    layout: Layout,
    id: String,
    short_id: String,
    status: &'static str,
    status_label: &'static str,
    status_class: &'static str,
    start: Stamp,
    end: Option<Stamp>,
    duration: String,
    group_id: String,
    group_href: String,
    group_chats: i64,
    config: Option<super::configs::ConfigRef>,
    event_count: i64,
    request_id: Option<String>,
    audio: String,
    emotions: Emotions,
    transcript: String,
    /// The chat's webhook deliveries (issue 14), rendered.
    webhooks: String,
}

async fn transcript_part(
    state: &AppState,
    chat: &ChatRecord,
    page: u32,
) -> Result<TranscriptPart, UiError> {
    let events = state
        .store
        .list_chat_events(
            chat.id,
            PageRequest {
                number: page - 1,
                size: TRANSCRIPT_PAGE,
                ascending: true,
            },
        )
        .await?;
    Ok(TranscriptPart::new(
        turns(&events.items, Some(chat.start_timestamp), None),
        &format!("/ui/chats/{}", chat.id),
        page,
        events.total,
        TRANSCRIPT_PAGE,
    ))
}

async fn emotions(state: &AppState, chat: &ChatRecord) -> Result<Emotions, UiError> {
    let mut collector = Collector::default();
    let size = 100;
    for number in 0..CHART_SCAN_LIMIT / size {
        let page = state
            .store
            .list_chat_events(
                chat.id,
                PageRequest {
                    number,
                    size,
                    ascending: true,
                },
            )
            .await?;
        collector.add(&page.items, chat.start_timestamp);
        if page.items.len() < size as usize {
            break;
        }
    }
    let end = chat
        .end_timestamp
        .unwrap_or_else(crate::clock::now_ms)
        .max(chat.start_timestamp);
    Ok(collector.finish(end - chat.start_timestamp))
}

fn request_id(chat: &ChatRecord) -> Option<String> {
    let meta: serde_json::Value = serde_json::from_str(chat.metadata.as_deref()?).ok()?;
    meta.get("request_id")?.as_str().map(str::to_string)
}

/// `GET /ui/chats/{id}[?page=N]`.
pub async fn page(
    State(state): State<AppState>,
    session: UiSession,
    Path(raw_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let chat = load_chat(&state, &session, &raw_id).await?;
    let page = Params::parse(raw.as_deref()).page("page");
    let transcript = transcript_part(&state, &chat, page).await?;
    let audio = audio::panel(&state, &chat).await?;
    let emotions = emotions(&state, &chat).await?;
    let group_chats = state
        .store
        .get_chat_group(session.principal.user_id, chat.chat_group_id)
        .await?
        .map(|g| g.num_chats)
        .unwrap_or(1);
    let short_id = format::short_id(&chat.id);
    let view = ChatPage {
        layout: Layout::signed_in(format!("Chat {short_id}"), "chat", &session),
        id: chat.id.to_string(),
        short_id,
        status: chat.status.as_str(),
        status_label: status_label(chat.status),
        status_class: status_class(chat.status),
        start: format::stamp(chat.start_timestamp),
        end: chat.end_timestamp.map(format::stamp),
        duration: chat_duration(&chat),
        group_id: chat.chat_group_id.to_string(),
        group_href: format!("/ui/groups/{}", chat.chat_group_id),
        group_chats,
        config: match &chat.config_id {
            Some(id) => {
                Some(super::configs::config_ref(&state, &session, id, chat.config_version).await?)
            }
            None => None,
        },
        event_count: chat.event_count,
        request_id: request_id(&chat),
        audio: render_string(&audio)?,
        emotions,
        transcript: render_string(&transcript)?,
        webhooks: render_string(&super::webhooks::panel(&state, &chat).await?)?,
    };
    render(&view)
}

/// `GET /ui/chats/{id}/transcript?page=N`: the transcript part (htmx); the whole page
/// otherwise.
pub async fn transcript(
    State(state): State<AppState>,
    session: UiSession,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let chat = load_chat(&state, &session, &raw_id).await?;
    let page = Params::parse(raw.as_deref()).page("page");
    let holder = format!("/ui/chats/{}?page={page}#transcript", chat.id);
    if let Some(redirect) = redirect_unless_fragment(&headers, &holder) {
        return Ok(redirect);
    }
    let part = transcript_part(&state, &chat, page).await?;
    Ok(Html(render_string(&part)?).into_response())
}

/// `GET /ui/chats/{id}/events?page=N`: a page of raw events, as the panel's content (htmx)
/// or as a page of its own.
pub async fn events(
    State(state): State<AppState>,
    session: UiSession,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let chat = load_chat(&state, &session, &raw_id).await?;
    let page = Params::parse(raw.as_deref()).page("page");
    let events = state
        .store
        .list_chat_events(
            chat.id,
            PageRequest {
                number: page - 1,
                size: EVENTS_PAGE,
                ascending: true,
            },
        )
        .await?;
    let base = format!("/ui/chats/{}/events", chat.id);
    let part = EventsPart {
        events: events
            .items
            .into_iter()
            .map(|e| {
                let (seq, at) = (e.seq, format::stamp(e.timestamp));
                let (event_type, role) = (e.event_type.as_str(), e.role.as_str());
                let wire: ReturnChatEvent = e.into();
                let parsed =
                    |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(pretty_json);
                RawEvent {
                    short: format::short_text(&wire.id),
                    id: wire.id.clone(),
                    seq,
                    event_type,
                    role,
                    at,
                    emotion_features: parsed(&wire.emotion_features),
                    metadata: parsed(&wire.metadata),
                    json: serde_json::to_string_pretty(&wire).unwrap_or_default(),
                }
            })
            .collect(),
        pager: Pager::new(page, events.total, EVENTS_PAGE, |n| PageLink {
            href: format!("{base}?page={n}"),
            hx: format!("{base}?page={n}"),
            push: String::new(),
        }),
    };
    let body = render_string(&part)?;
    if wants_fragment(&headers) {
        return Ok(Html(body).into_response());
    }
    render(&EventsPage {
        layout: Layout::signed_in(
            format!("Raw events of chat {}", format::short_id(&chat.id)),
            "chat",
            &session,
        ),
        chat_id: chat.id.to_string(),
        body,
    })
}

/// `GET /ui/chats/{id}/audio`: the audio panel, polled by htmx while it is pending.
pub async fn audio(
    State(state): State<AppState>,
    session: UiSession,
    headers: HeaderMap,
    Path(raw_id): Path<String>,
) -> Result<Response, UiError> {
    let chat = load_chat(&state, &session, &raw_id).await?;
    let holder = format!("/ui/chats/{}#audio", chat.id);
    if let Some(redirect) = redirect_unless_fragment(&headers, &holder) {
        return Ok(redirect);
    }
    let panel: AudioPanel = audio::panel(&state, &chat).await?;
    Ok(Html(render_string(&panel)?).into_response())
}
