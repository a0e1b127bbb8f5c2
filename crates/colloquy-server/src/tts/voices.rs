//! `/v0/tts/voices`: the library (`HUME_AI`) and the account's saved voices
//! (`CUSTOM_VOICE`), spec §7.8.

use super::error::{parse_json, TtsError};
use super::library::LibraryVoice;
use super::wire::{PostedVoiceSave, ReturnPagedVoices};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colloquy_storage::{SavedVoice, VoiceSaved};
use colloquy_wire::{ReturnVoice, VoiceProvider};
use serde_json::json;
use uuid::Uuid;

fn pairs(query: &Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn one<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// The voice list's query, checked.
struct ListQuery {
    provider: VoiceProvider,
    page_number: u64,
    page_size: u64,
    ascending: bool,
    tags: Vec<(String, String)>,
}

fn list_query(query: &Option<String>) -> Result<ListQuery, ApiError> {
    let p = pairs(query);
    let provider = match one(&p, "provider") {
        Some("HUME_AI") => VoiceProvider::HumeAi,
        Some("CUSTOM_VOICE") => VoiceProvider::CustomVoice,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "provider must be HUME_AI or CUSTOM_VOICE (got {other:?})"
            )))
        }
        None => return Err(ApiError::invalid(
            "provider is required: HUME_AI (the voice library) or CUSTOM_VOICE (your saved voices)",
        )),
    };
    let page_number = match one(&p, "page_number") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|&n| n <= u32::MAX as u64)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "page_number must be a whole number from 0 (got {v:?})"
                ))
            })?,
    };
    let page_size = match one(&p, "page_size") {
        None => 10,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!("page_size must be between 1 and 100 (got {v:?})"))
            })?,
    };
    let ascending = match one(&p, "ascending_order")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("true") => true,
        Some("false") => false,
        Some(v) => {
            return Err(ApiError::invalid(format!(
                "ascending_order must be true or false (got {v:?})"
            )))
        }
    };
    let mut tags = Vec::new();
    for (k, v) in &p {
        if (k == "filter_tag" || k.starts_with("filter_tag[")) && !v.is_empty() {
            let (tag, value) = v.split_once(':').ok_or_else(|| {
                ApiError::invalid(format!(
                    "filter_tag must be TAG:VALUE, e.g. GENDER:Female (got {v:?})"
                ))
            })?;
            tags.push((tag.trim().to_ascii_uppercase(), value.trim().to_string()));
        }
    }
    Ok(ListQuery {
        provider,
        page_number,
        page_size,
        ascending,
        tags,
    })
}

fn matches(v: &LibraryVoice, tags: &[(String, String)]) -> bool {
    tags.iter()
        .all(|(tag, value)| v.tags.iter().any(|(t, x)| t == tag && x == value))
}

/// `GET /v0/tts/voices?provider=…`: one page of voices.
pub async fn list_voices(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ReturnPagedVoices>, ApiError> {
    let q = list_query(&query)?;
    let mut all: Vec<ReturnVoice> = match q.provider {
        VoiceProvider::HumeAi => state
            .tts
            .get()
            .library
            .voices()
            .iter()
            .filter(|v| matches(v, &q.tags))
            .map(|v| v.voice.clone())
            .collect(),
        VoiceProvider::CustomVoice => {
            if !q.tags.is_empty() {
                Vec::new() // saved voices have no tags
            } else {
                state
                    .store
                    .list_voices(caller.0.user_id)
                    .await?
                    .into_iter()
                    .map(custom)
                    .collect()
            }
        }
    };
    if !q.ascending {
        all.reverse();
    }
    let total_pages = (all.len() as u64).div_ceil(q.page_size);
    let start = q.page_number.saturating_mul(q.page_size) as usize;
    let voices_page = all
        .into_iter()
        .skip(start)
        .take(q.page_size as usize)
        .collect();
    Ok(Json(ReturnPagedVoices {
        page_number: q.page_number,
        page_size: q.page_size,
        total_pages,
        voices_page,
    }))
}

fn custom(v: SavedVoice) -> ReturnVoice {
    ReturnVoice {
        id: v.id.to_string(),
        name: v.name,
        provider: VoiceProvider::CustomVoice,
        compatible_octave_models: Some(vec!["1".into(), "2".into()]),
    }
}

/// `POST /v0/tts/voices`: saves a generation's voice under a name.
pub async fn create_voice(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<ReturnVoice>, TtsError> {
    let req: PostedVoiceSave = parse_json(&body)?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 256 {
        return Err(TtsError::invalid(
            &[json!("body"), json!("name")],
            "name must be 1 to 256 characters, not all whitespace",
        ));
    }
    let account = caller.0.user_id;
    let remembered = super::plan::generation(
        state.tts.get(),
        state.store.as_ref(),
        account,
        &req.generation_id,
        &[json!("body"), json!("generation_id")],
    )
    .await?;
    let voice = SavedVoice {
        id: Uuid::new_v4(),
        name: name.to_string(),
        settings: serde_json::to_string(&remembered.settings).expect("serializable"),
        created_on: crate::clock::now_ms(),
    };
    match state.store.save_voice(account, &voice).await? {
        VoiceSaved::Saved => Ok(Json(custom(voice))),
        VoiceSaved::NameTaken => Err(TtsError::invalid(
            &[json!("body"), json!("name")],
            format!(
                "you already have a voice named {name:?}; delete it first or pick another name"
            ),
        )),
    }
}

/// `DELETE /v0/tts/voices?name=…`: deletes a saved voice.
pub async fn delete_voice(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let p = pairs(&query);
    let Some(name) = one(&p, "name") else {
        return Err(ApiError::invalid(
            "name is required: the saved voice to delete",
        ));
    };
    if state.store.delete_voice(caller.0.user_id, name).await? {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(ApiError::NotFound(format!(
            "you have no saved voice named {name:?}"
        )))
    }
}
