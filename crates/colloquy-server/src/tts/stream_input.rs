//! `WSS /v0/tts/stream/input` (spec §7.6): text arrives in pieces and is buffered; `flush`
//! speaks the buffer, `close` speaks the rest and ends the socket with 1000. The answer is
//! `SnippetAudioChunk`/`TimestampMessage` text frames, each audio one followed by its bytes
//! as a binary frame unless `no_binary`. Bad input closes with 1008, an engine failure
//! with 1011, each with a reason.

use super::output::Chunker;
use super::plan::plan;
use super::synthesis;
use super::wire::{
    AudioFormat, PostedContext, PostedTts, PostedUtterance, PostedVoice, PublishTts, TimestampType,
    TtsOutput,
};
use crate::auth::{authenticate, find_credentials};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

/// The connect query.
#[derive(Debug, Default)]
struct Params {
    format: AudioFormat,
    words: bool,
    phonemes: bool,
    no_binary: bool,
    strip_headers: bool,
    context_generation_id: Option<String>,
}

fn truthy(v: &str) -> bool {
    v.eq_ignore_ascii_case("true") || v == "1"
}

fn params(pairs: &[(String, String)]) -> Result<Params, String> {
    let mut p = Params::default();
    for (k, v) in pairs {
        match k.as_str() {
            "format_type" => {
                p.format = match v.to_ascii_lowercase().as_str() {
                    "mp3" => AudioFormat::Mp3,
                    "wav" => AudioFormat::Wav,
                    "pcm" => AudioFormat::Pcm,
                    "" => AudioFormat::Mp3,
                    other => {
                        return Err(format!(
                            "format_type must be mp3, wav or pcm (got {other:?})"
                        ))
                    }
                }
            }
            "include_timestamp_types" | "include_timestamp_types[]" => match v.as_str() {
                "word" => p.words = true,
                "phoneme" => p.phonemes = true,
                "" => {}
                other => {
                    return Err(format!(
                        "include_timestamp_types: word or phoneme (got {other:?})"
                    ))
                }
            },
            "no_binary" => p.no_binary = truthy(v),
            "strip_headers" => p.strip_headers = truthy(v),
            "context_generation_id" if !v.is_empty() => p.context_generation_id = Some(v.clone()),
            _ => {}
        }
    }
    Ok(p)
}

/// The upgrade: 401 without valid credentials (header or `api_key`/`access_token` query).
pub async fn socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let principal = match find_credentials(&headers, &pairs) {
        Ok(creds) => match authenticate(&state, creds).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        },
        Err(e) => return e.into_response(),
    };
    let params = match params(&pairs) {
        Ok(p) => p,
        Err(m) => return ApiError::invalid(m).into_response(),
    };
    let Ok(ws) = ws else {
        return ApiError::BadRequest {
            code: "websocket_required",
            message: "this is the TTS stream-input WebSocket; connect with a WebSocket client"
                .into(),
        }
        .into_response();
    };
    ws.on_upgrade(move |socket| run(state, principal.user_id, params, socket))
}

/// What the client has set so far.
#[derive(Default)]
struct Buffer {
    text: String,
    voice: Option<PostedVoice>,
    description: Option<String>,
    speed: Option<f64>,
    trailing_silence: Option<f64>,
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let mut reason = reason.to_string();
    while reason.len() > 120 {
        reason.pop();
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn run(state: AppState, account: Uuid, params: Params, mut socket: WebSocket) {
    let mut buffer = Buffer::default();
    let mut context = params.context_generation_id.clone();
    while let Some(Ok(message)) = socket.recv().await {
        let text = match message {
            Message::Text(t) => t.to_string(),
            Message::Binary(_) => {
                close(&mut socket, 1008, "send PublishTts JSON text frames").await;
                return;
            }
            Message::Close(_) => return,
            _ => continue,
        };
        let publish: PublishTts = match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                close(&mut socket, 1008, &format!("not a PublishTts message: {e}")).await;
                return;
            }
        };
        if let Some(t) = publish.text {
            buffer.text.push_str(&t);
        }
        if publish.voice.is_some() {
            buffer.voice = publish.voice;
        }
        if publish.description.is_some() {
            buffer.description = publish.description;
        }
        if publish.speed.is_some() {
            buffer.speed = publish.speed;
        }
        if publish.trailing_silence.is_some() {
            buffer.trailing_silence = publish.trailing_silence;
        }
        let closing = publish.close == Some(true);
        if (publish.flush == Some(true) || closing) && !buffer.text.trim().is_empty() {
            let text = std::mem::take(&mut buffer.text);
            match speak(
                &state,
                account,
                &params,
                &buffer,
                text,
                context.as_deref(),
                &mut socket,
            )
            .await
            {
                Ok(generation) => context = Some(generation),
                Err((code, reason)) => {
                    close(&mut socket, code, &reason).await;
                    return;
                }
            }
        }
        if closing {
            close(&mut socket, 1000, "").await;
            return;
        }
    }
}

/// Speaks `text` and sends its chunks; the generation id, or the close code and reason.
async fn speak(
    state: &AppState,
    account: Uuid,
    params: &Params,
    buffer: &Buffer,
    text: String,
    context: Option<&str>,
    socket: &mut WebSocket,
) -> Result<String, (u16, String)> {
    let mut types = Vec::new();
    if params.words {
        types.push(TimestampType::Word);
    }
    if params.phonemes {
        types.push(TimestampType::Phoneme);
    }
    let req = PostedTts {
        utterances: vec![PostedUtterance {
            text,
            description: buffer.description.clone(),
            voice: buffer.voice.clone(),
            speed: buffer.speed,
            trailing_silence: buffer.trailing_silence,
        }],
        context: context.map(|id| PostedContext {
            generation_id: Some(id.to_string()),
            utterances: None,
        }),
        format: Some(super::wire::Format {
            kind: params.format,
        }),
        include_timestamp_types: Some(types),
        strip_headers: Some(params.strip_headers),
        ..Default::default()
    };
    let plan = plan(state.tts.get(), state.store.as_ref(), account, &req, 1)
        .await
        .map_err(|e| (1008, e.message()))?;
    let generation = plan.generations[0].id.to_string();
    let mut chunker = Chunker::new(plan.request_id.clone(), plan.format, plan.strip_headers);
    let mut rx = synthesis::run(
        state.tts.get().engines.clone(),
        state.store.clone(),
        account,
        state.tts.get().generation_ttl_ms,
        plan,
    );
    while let Some(ev) = rx.recv().await {
        let lines = chunker
            .event(ev)
            .map_err(|e| (1011, format!("synthesis failed: {e}")))?;
        for (line, bytes) in lines {
            let json = serde_json::to_string(&line).expect("serializable");
            if socket.send(Message::Text(json.into())).await.is_err() {
                return Err((1000, String::new()));
            }
            if let (TtsOutput::Audio(_), Some(bytes), false) = (&line, bytes, params.no_binary) {
                if socket.send(Message::Binary(bytes.into())).await.is_err() {
                    return Err((1000, String::new()));
                }
            }
        }
    }
    Ok(generation)
}
