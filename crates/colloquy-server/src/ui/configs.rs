//! The account's EVI configs: a list (name, id, number of versions, the newest version and
//! its date), and one config with every version and the settings of a chosen one.
//!
//! A config version is read through [`crate::platform::config_version`], the REST API's own
//! shaping (`ReturnConfig`, prompt and tools resolved), so the page shows what
//! `GET /v0/evi/configs/{id}/version/{version}` answers. A chat page links here through
//! [`config_ref`].

use super::chat::{not_found, parse_id};
use super::error::UiError;
use super::format::{self, Stamp};
use super::session::UiSession;
use super::{render, render_string, wants_fragment, Layout, PageLink, Pager, Params};
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use colloquy_storage::{PageRequest, ResourceFilter, ResourceKind, ResourceVersion};
use colloquy_wire::{ReturnConfig, ReturnEventMessageSpec, ReturnTimeoutSpec};
use uuid::Uuid;

/// Configs per page of the list.
pub const CONFIGS_PAGE: u32 = 20;
/// Most versions listed for one config.
const MAX_VERSIONS: u32 = 1000;

fn internal(e: crate::error::ApiError) -> UiError {
    UiError::Internal(format!("reading a config: {e}"))
}

/// A config as a row of the list.
pub struct ConfigRow {
    id: String,
    short: String,
    href: String,
    name: String,
    versions: u64,
    latest: i64,
    latest_href: String,
    latest_at: Stamp,
}

/// The list part of the configs page (`#configs`), swapped by htmx when paging.
#[derive(Template)]
#[template(path = "ui/_config_list.html")]
pub struct ConfigList {
    rows: Vec<ConfigRow>,
    total: u64,
    first: u64,
    last: u64,
    pager: Pager,
}

/// The configs page.
#[derive(Template)]
#[template(path = "ui/configs.html")]
pub struct ConfigsPage {
    layout: Layout,
    list: String,
}

/// How many versions config `id` has.
async fn version_count(state: &AppState, user_id: Uuid, id: Uuid) -> Result<u64, UiError> {
    let filter = ResourceFilter {
        id: Some(id),
        name: None,
        most_recent_only: false,
    };
    let page = PageRequest {
        number: 0,
        size: 1,
        ascending: true,
    };
    Ok(state
        .store
        .list_resources(user_id, ResourceKind::Config, &filter, page)
        .await?
        .total)
}

/// `GET /ui/configs[?page=N]`: the account's configs, oldest first (as the API lists them).
pub async fn list(
    State(state): State<AppState>,
    session: UiSession,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let page = Params::parse(raw.as_deref()).page("page");
    let user_id = session.principal.user_id;
    let req = PageRequest {
        number: page - 1,
        size: CONFIGS_PAGE,
        ascending: true,
    };
    let newest = ResourceFilter {
        id: None,
        name: None,
        most_recent_only: true,
    };
    let found = state
        .store
        .list_resources(user_id, ResourceKind::Config, &newest, req)
        .await?;
    let mut rows = Vec::with_capacity(found.items.len());
    for v in found.items {
        rows.push(ConfigRow {
            id: v.id.to_string(),
            short: format::short_id(&v.id),
            href: format!("/ui/configs/{}", v.id),
            versions: version_count(&state, user_id, v.id).await?,
            latest: v.version,
            latest_href: format!("/ui/configs/{}?version={}", v.id, v.version),
            latest_at: format::stamp(v.modified_on),
            name: v.name,
        });
    }
    let first = req.offset() as u64 + 1;
    let part = ConfigList {
        total: found.total,
        first,
        last: first + rows.len() as u64 - 1,
        rows,
        pager: Pager::new(page, found.total, CONFIGS_PAGE, |n| {
            let href = format!("/ui/configs?page={n}");
            PageLink {
                hx: href.clone(),
                push: href.clone(),
                href,
            }
        }),
    };
    if wants_fragment(&headers) {
        return Ok(Html(render_string(&part)?).into_response());
    }
    render(&ConfigsPage {
        layout: Layout::signed_in("Configs", "configs", &session),
        list: render_string(&part)?,
    })
}

/// One version in the config page's version table.
pub struct VersionRow {
    version: i64,
    description: Option<String>,
    created: Stamp,
    modified: Stamp,
    href: String,
    current: bool,
}

/// A setting of the chosen version: label and value, `key` naming it for tests and styles.
pub struct Setting {
    key: &'static str,
    label: &'static str,
    value: String,
}

/// A user-defined tool of the chosen version.
pub struct ToolView {
    name: String,
    id: String,
    short: String,
    version: String,
    description: String,
    parameters: String,
}

/// The prompt of the chosen version.
pub struct PromptView {
    name: String,
    id: String,
    short: String,
    version: String,
    text: String,
}

/// The chosen version as shown.
pub struct ConfigView {
    version: i64,
    description: Option<String>,
    modified: Stamp,
    prompt: Option<PromptView>,
    tools: Vec<ToolView>,
    builtin_tools: Vec<(String, String)>,
    settings: Vec<Setting>,
    webhooks: Vec<(String, String)>,
    json: String,
}

/// The config page.
#[derive(Template)]
#[template(path = "ui/config.html")]
pub struct ConfigPage {
    layout: Layout,
    id: String,
    short_id: String,
    name: String,
    created: Stamp,
    versions: Vec<VersionRow>,
    more_versions: bool,
    chosen: Option<ConfigView>,
    missing_version: Option<String>,
    chats_href: String,
}

/// Every version of config `id`, oldest first (up to [`MAX_VERSIONS`]), and whether there
/// are more.
async fn versions(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
) -> Result<(Vec<ResourceVersion>, bool), UiError> {
    let size = 100;
    let filter = ResourceFilter {
        id: Some(id),
        name: None,
        most_recent_only: false,
    };
    let mut all = Vec::new();
    let mut total = 0;
    for number in 0..MAX_VERSIONS / size {
        let page = state
            .store
            .list_resources(
                user_id,
                ResourceKind::Config,
                &filter,
                PageRequest {
                    number,
                    size,
                    ascending: true,
                },
            )
            .await?;
        total = page.total;
        let n = page.items.len();
        all.extend(page.items);
        if n < size as usize {
            break;
        }
    }
    let more = total > all.len() as u64;
    Ok((all, more))
}

/// `GET /ui/configs/{id}[?version=N]`: the config's versions, and the settings of version N
/// (the newest by default).
pub async fn page(
    State(state): State<AppState>,
    session: UiSession,
    Path(raw_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let id = parse_id(&raw_id, "config")?;
    let user_id = session.principal.user_id;
    let (all, more_versions) = versions(&state, user_id, id).await?;
    let Some(newest) = all.last() else {
        return Err(not_found("config", &raw_id));
    };
    let params = Params::parse(raw.as_deref());
    let asked = params.get("version").map(str::to_string);
    let wanted = match &asked {
        None => Some(newest.version),
        Some(v) => v.parse::<i64>().ok().filter(|v| *v >= 0),
    };
    let chosen = match wanted {
        Some(v) => crate::platform::config_version(&state, user_id, id, Some(v))
            .await
            .map_err(internal)?,
        None => None,
    };
    let current = chosen.as_ref().map(|c| c.version);
    let short_id = format::short_id(&id);
    let view = ConfigPage {
        layout: Layout::signed_in(
            format!("Config {} ({short_id})", newest.name),
            "config",
            &session,
        ),
        id: id.to_string(),
        short_id,
        name: newest.name.clone(),
        created: format::stamp(newest.created_on),
        versions: all
            .iter()
            .rev()
            .map(|v| VersionRow {
                version: v.version,
                description: v.version_description.clone(),
                created: format::stamp(v.created_on),
                modified: format::stamp(v.modified_on),
                href: format!("/ui/configs/{id}?version={}", v.version),
                current: Some(v.version) == current,
            })
            .collect(),
        more_versions,
        missing_version: if chosen.is_none() { asked } else { None },
        chosen: chosen.map(view_of),
        chats_href: format!("/ui/chats?config={id}"),
    };
    let missing = view.missing_version.is_some();
    let mut res = render(&view)?;
    if missing {
        *res.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(res)
}

fn on_off(enabled: bool) -> &'static str {
    if enabled {
        "on"
    } else {
        "off"
    }
}

fn event_message(m: Option<&ReturnEventMessageSpec>) -> String {
    match m {
        Some(m) if m.enabled => match m.text.as_deref().filter(|t| !t.is_empty()) {
            Some(text) => format!("on: \u{201c}{text}\u{201d}"),
            None => "on (no text)".into(),
        },
        _ => "off".into(),
    }
}

fn timeout(t: &ReturnTimeoutSpec) -> String {
    let secs = t
        .duration_secs
        .map(|s| format!("{s} s"))
        .unwrap_or_else(|| "default duration".into());
    if t.enabled {
        format!("on, after {secs}")
    } else {
        format!("off ({secs})")
    }
}

fn or_default<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    match v {
        Some(v) => format!("{v}{unit}"),
        None => "default".into(),
    }
}

/// Shapes a `ReturnConfig` for the page.
fn view_of(c: ReturnConfig) -> ConfigView {
    let json = serde_json::to_string_pretty(&c).unwrap_or_default();
    let version_text = |version: i64, kind: &str| format!("version {version} ({kind})");
    let prompt = c.prompt.map(|p| PromptView {
        short: format::short_text(&p.id),
        version: version_text(p.version, p.version_type.as_str()),
        name: p.name,
        id: p.id,
        text: p.text,
    });
    let tools = c
        .tools
        .into_iter()
        .map(|t| ToolView {
            short: format::short_text(&t.id),
            version: version_text(t.version, t.version_type.as_str()),
            name: t.name,
            id: t.id,
            description: t.description.unwrap_or_default(),
            parameters: super::transcript::pretty_json(&t.parameters),
        })
        .collect();
    let builtin_tools = c
        .builtin_tools
        .into_iter()
        .map(|b| (b.name, b.fallback_content.unwrap_or_default()))
        .collect();
    let voice = match &c.voice {
        Some(v) => format!("{} ({}, id {})", v.name, v.provider.as_str(), v.id),
        None => "none (the server's default voice)".into(),
    };
    let language_model = match &c.language_model {
        Some(m) => {
            let mut parts = Vec::new();
            if let Some(p) = m.model_provider {
                parts.push(p.as_str().to_string());
            }
            if let Some(r) = &m.model_resource {
                parts.push(r.clone());
            }
            if let Some(t) = m.temperature {
                parts.push(format!("temperature {t}"));
            }
            if parts.is_empty() {
                "set, without a model".into()
            } else {
                parts.join(", ")
            }
        }
        None => "none (the server's default)".into(),
    };
    let e = &c.event_messages;
    let mut settings = vec![
        Setting {
            key: "evi_version",
            label: "EVI version",
            value: c.evi_version.clone(),
        },
        Setting {
            key: "voice",
            label: "Voice",
            value: voice,
        },
        Setting {
            key: "language_model",
            label: "Language model",
            value: language_model,
        },
        Setting {
            key: "ellm_model",
            label: "Short responses (eLLM)",
            value: on_off(c.ellm_model.allow_short_responses).into(),
        },
        Setting {
            key: "on_new_chat",
            label: "Greeting (on new chat)",
            value: event_message(e.on_new_chat.as_ref()),
        },
        Setting {
            key: "on_inactivity_timeout",
            label: "Message on inactivity timeout",
            value: event_message(e.on_inactivity_timeout.as_ref()),
        },
        Setting {
            key: "on_max_duration_timeout",
            label: "Message on max duration timeout",
            value: event_message(e.on_max_duration_timeout.as_ref()),
        },
        Setting {
            key: "inactivity_timeout",
            label: "Inactivity timeout",
            value: timeout(&c.timeouts.inactivity),
        },
        Setting {
            key: "max_duration_timeout",
            label: "Max duration timeout",
            value: timeout(&c.timeouts.max_duration),
        },
    ];
    settings.push(Setting {
        key: "nudges",
        label: "Nudges",
        value: match &c.nudges {
            Some(n) if n.enabled => format!("on, every {}", or_default(n.interval_secs, " s")),
            Some(_) => "off".into(),
            None => "not set".into(),
        },
    });
    settings.push(Setting {
        key: "interruption",
        label: "Interruption",
        value: match &c.interruption {
            Some(i) => format!(
                "minimum interruption {}",
                or_default(i.min_interruption_ms, " ms")
            ),
            None => "not set".into(),
        },
    });
    settings.push(Setting {
        key: "turn_detection",
        label: "Turn detection",
        value: match &c.turn_detection {
            Some(t) => format!(
                "end-of-turn silence {}, prefix padding {}, speech threshold {}",
                or_default(t.end_of_turn_silence_ms, " ms"),
                or_default(t.prefix_padding_ms, " ms"),
                or_default(t.speech_detection_threshold, "")
            ),
            None => "not set".into(),
        },
    });
    let webhooks = c
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| {
            let events: Vec<&str> = w.events.iter().map(|e| e.as_str()).collect();
            (w.url, events.join(", "))
        })
        .collect();
    ConfigView {
        version: c.version,
        description: c.version_description,
        modified: format::stamp(c.modified_on),
        prompt,
        tools,
        builtin_tools,
        settings,
        webhooks,
        json,
    }
}

/// The config a chat used, as its page shows it.
pub struct ConfigRef {
    /// `config NAME, version N` (or what is known of a deleted one).
    pub label: String,
    /// The config page at that version; `None` when the config no longer exists.
    pub href: Option<String>,
    /// The config id as the chat recorded it.
    pub id: String,
    /// Its short form.
    pub short: String,
    /// What was deleted, if anything.
    pub note: Option<String>,
}

/// What the chat page shows of the config `raw_id` (version `version`) a chat used: a link
/// to that version's page, or, when the config or the version was deleted, that fact.
pub async fn config_ref(
    state: &AppState,
    session: &UiSession,
    raw_id: &str,
    version: Option<i64>,
) -> Result<ConfigRef, UiError> {
    let user_id = session.principal.user_id;
    let at = |v: Option<i64>| v.map(|v| format!(", version {v}")).unwrap_or_default();
    let mut out = ConfigRef {
        label: format!("deleted config{}", at(version)),
        href: None,
        id: raw_id.to_string(),
        short: format::short_text(raw_id),
        note: Some("(it no longer exists in your account)".into()),
    };
    let Ok(id) = Uuid::parse_str(raw_id.trim()) else {
        return Ok(out);
    };
    let store = &state.store;
    if let Some(v) = version {
        if let Some(found) = store
            .get_resource_version(user_id, ResourceKind::Config, id, Some(v))
            .await?
        {
            out.label = format!("config {}{}", found.name, at(version));
            out.href = Some(format!("/ui/configs/{id}?version={v}"));
            out.note = None;
            return Ok(out);
        }
    }
    if let Some(newest) = store
        .get_resource_version(user_id, ResourceKind::Config, id, None)
        .await?
    {
        out.label = format!("config {}{}", newest.name, at(version));
        out.href = Some(format!("/ui/configs/{id}"));
        out.note = version.map(|_| "(this version was deleted)".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_as_words() {
        let on = ReturnEventMessageSpec {
            enabled: true,
            text: Some("Hello!".into()),
        };
        assert_eq!(event_message(Some(&on)), "on: \u{201c}Hello!\u{201d}");
        assert_eq!(event_message(None), "off");
        let t = ReturnTimeoutSpec {
            enabled: true,
            duration_secs: Some(300),
        };
        assert_eq!(timeout(&t), "on, after 300 s");
        let off = ReturnTimeoutSpec {
            enabled: false,
            duration_secs: Some(60),
        };
        assert_eq!(timeout(&off), "off (60 s)");
    }
}
