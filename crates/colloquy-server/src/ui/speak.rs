//! The "Speak" page: a text box, a voice picker (the library and the account's saved
//! voices) and a player, for trying voices. The form is a plain `GET`, so it works without
//! JavaScript; the player's source is `/ui/speak/audio` with the same query, which
//! synthesizes through the TTS API's own code (`crate::tts`) for the signed-in account.

use super::error::UiError;
use super::session::UiSession;
use super::{render, Layout, Params};
use crate::state::AppState;
use crate::tts::output::collect_file;
use crate::tts::plan::plan;
use crate::tts::synthesis;
use crate::tts::wire::{AudioFormat, Format, PostedTts, PostedUtterance, PostedVoice, Provider};
use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Most characters the page speaks.
const MAX_CHARS: usize = 2_000;

/// One choice of the voice picker.
pub struct VoiceChoice {
    /// `HUME_AI:<name>` or `CUSTOM_VOICE:<name>`.
    value: String,
    /// What is shown.
    label: String,
    /// Currently chosen.
    selected: bool,
}

/// The page.
#[derive(Template)]
#[template(path = "ui/speak.html")]
pub struct SpeakPage {
    layout: Layout,
    text: String,
    voices: Vec<VoiceChoice>,
    mp3: bool,
    /// The player's source, when there is text to speak.
    audio_src: Option<String>,
}

/// The request's text, voice and format.
struct Asked {
    text: String,
    voice: Option<(Provider, String)>,
    format: AudioFormat,
}

fn asked(raw: Option<&str>) -> Asked {
    let p = Params::parse(raw);
    let voice = p.get("voice").and_then(|v| {
        let (provider, name) = v.split_once(':')?;
        let provider = match provider {
            "CUSTOM_VOICE" => Provider::CustomVoice,
            _ => Provider::HumeAi,
        };
        Some((provider, name.to_string()))
    });
    Asked {
        text: p
            .get("text")
            .unwrap_or("")
            .chars()
            .take(MAX_CHARS)
            .collect(),
        voice,
        format: if p.get("format") == Some("wav") {
            AudioFormat::Wav
        } else {
            AudioFormat::Mp3
        },
    }
}

/// `GET /ui/speak[?text=…&voice=…&format=…]`.
pub async fn page(
    State(state): State<AppState>,
    session: UiSession,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let a = asked(raw.as_deref());
    let chosen = a.voice.as_ref().map(|(p, n)| match p {
        Provider::CustomVoice => format!("CUSTOM_VOICE:{n}"),
        Provider::HumeAi => format!("HUME_AI:{n}"),
    });
    let mut voices: Vec<VoiceChoice> = Vec::new();
    for v in state.store.list_voices(session.principal.user_id).await? {
        let value = format!("CUSTOM_VOICE:{}", v.name);
        voices.push(VoiceChoice {
            selected: chosen.as_deref() == Some(&value),
            label: format!("{} (saved)", v.name),
            value,
        });
    }
    for v in state.tts.get().library.voices() {
        let value = format!("HUME_AI:{}", v.voice.name);
        voices.push(VoiceChoice {
            selected: chosen.as_deref() == Some(&value),
            label: if v.description.is_empty() {
                v.voice.name.clone()
            } else {
                format!("{} — {}", v.voice.name, v.description)
            },
            value,
        });
    }
    let audio_src = (!a.text.trim().is_empty())
        .then(|| format!("/ui/speak/audio?{}", raw.as_deref().unwrap_or("")));
    render(&SpeakPage {
        layout: Layout::signed_in("Speak", "speak", &session),
        text: a.text,
        voices,
        mp3: a.format == AudioFormat::Mp3,
        audio_src,
    })
}

/// `GET /ui/speak/audio?text=…&voice=…&format=…`: the audio file.
pub async fn audio(
    State(state): State<AppState>,
    session: UiSession,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let a = asked(raw.as_deref());
    let req = PostedTts {
        utterances: vec![PostedUtterance {
            text: a.text,
            voice: a.voice.map(|(provider, name)| PostedVoice {
                id: None,
                name: Some(name),
                provider: Some(provider),
            }),
            ..Default::default()
        }],
        format: Some(Format { kind: a.format }),
        ..Default::default()
    };
    let account = session.principal.user_id;
    let plan = match plan(state.tts.get(), state.store.as_ref(), account, &req, 1).await {
        Ok(p) => p,
        Err(e) => return Ok((StatusCode::UNPROCESSABLE_ENTITY, e.message()).into_response()),
    };
    let format = plan.format;
    let rx = synthesis::run(
        state.tts.get().engines.clone(),
        state.store.clone(),
        account,
        state.tts.get().generation_ttl_ms,
        plan,
    );
    let bytes = collect_file(rx, format).await.map_err(UiError::Internal)?;
    Ok(([(CONTENT_TYPE, format.content_type())], bytes).into_response())
}
