//! The synthesis endpoints and the router of every TTS route.

use super::error::{parse_json, TtsError};
use super::output::{collect, collect_file, Chunker, FileStream};
use super::plan::{plan, Plan};
use super::synthesis::{self, Event};
use super::wire::PostedTts;
use super::{conversion, stream_input, voices};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::mpsc;

/// Largest voice-conversion upload.
const MAX_UPLOAD: usize = 64 * 1024 * 1024;

/// The TTS routes (behind authentication and its failure limit, like the other REST routes).
pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v0/tts", post(synthesize_json))
        .route("/v0/tts/file", post(synthesize_file))
        .route("/v0/tts/stream/json", post(synthesize_json_streaming))
        .route("/v0/tts/stream/file", post(synthesize_file_streaming))
        .route("/v0/tts/stream/input", get(stream_input::socket))
        .route(
            "/v0/tts/voices",
            get(voices::list_voices)
                .post(voices::create_voice)
                .delete(voices::delete_voice),
        )
        .route(
            "/v0/tts/voice_conversion/file",
            post(conversion::convert_file).layer(DefaultBodyLimit::max(MAX_UPLOAD)),
        )
        .route(
            "/v0/tts/voice_conversion/json",
            post(conversion::convert_json).layer(DefaultBodyLimit::max(MAX_UPLOAD)),
        )
}

/// Parses, checks and plans a synthesis request; starts speaking it.
async fn start(
    state: &AppState,
    caller: &Caller,
    body: &[u8],
    max_generations: usize,
) -> Result<(Plan, mpsc::Receiver<Event>), TtsError> {
    let req: PostedTts = parse_json(body)?;
    let plan = plan(
        state.tts.get(),
        state.store.as_ref(),
        caller.0.user_id,
        &req,
        max_generations,
    )
    .await?;
    let rx = synthesis::run(
        state.tts.get().engines.clone(),
        state.store.clone(),
        caller.0.user_id,
        state.tts.get().generation_ttl_ms,
        plan.clone(),
    );
    Ok((plan, rx))
}

fn engine_failed(e: String) -> TtsError {
    TtsError::Api(ApiError::Internal(format!("TTS synthesis failed: {e}")))
}

/// `POST /v0/tts`: every take, base64, with its snippets.
pub async fn synthesize_json(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, TtsError> {
    let (plan, rx) = start(&state, &caller, &body, usize::MAX).await?;
    let answer = collect(rx, plan.request_id, plan.format, plan.utterances)
        .await
        .map_err(engine_failed)?;
    Ok(Json(answer).into_response())
}

/// `POST /v0/tts/file`: the first take's file.
pub async fn synthesize_file(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, TtsError> {
    let (plan, rx) = start(&state, &caller, &body, 1).await?;
    let bytes = collect_file(rx, plan.format).await.map_err(engine_failed)?;
    Ok(([(CONTENT_TYPE, plan.format.content_type())], bytes).into_response())
}

/// `POST /v0/tts/stream/file`: the first take's file, streamed as it is made.
pub async fn synthesize_file_streaming(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, TtsError> {
    let (plan, rx) = start(&state, &caller, &body, 1).await?;
    let stream = futures::stream::unfold(FileStream::new(rx, plan.format), |mut s| async move {
        let item = s.next().await?;
        Some((item.map(Bytes::from).map_err(std::io::Error::other), s))
    });
    Ok((
        [(CONTENT_TYPE, plan.format.content_type())],
        Body::from_stream(stream),
    )
        .into_response())
}

/// NDJSON lines of a run, as they are made.
pub fn ndjson(rx: mpsc::Receiver<Event>, chunker: Chunker) -> Response {
    let stream = futures::stream::unfold(
        (rx, chunker, false),
        |(mut rx, mut chunker, failed)| async move {
            if failed {
                return None;
            }
            loop {
                let ev = rx.recv().await?;
                match chunker.event(ev) {
                    Ok(lines) if lines.is_empty() => continue,
                    Ok(lines) => {
                        let mut text = String::new();
                        for (line, _) in lines {
                            text.push_str(&serde_json::to_string(&line).expect("serializable"));
                            text.push('\n');
                        }
                        return Some((
                            Ok::<_, std::io::Error>(Bytes::from(text)),
                            (rx, chunker, false),
                        ));
                    }
                    Err(e) => {
                        return Some((Err(std::io::Error::other(e)), (rx, chunker, true)));
                    }
                }
            }
        },
    );
    (
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `POST /v0/tts/stream/json`: `SnippetAudioChunk` and `TimestampMessage` lines.
pub async fn synthesize_json_streaming(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, TtsError> {
    let (plan, rx) = start(&state, &caller, &body, usize::MAX).await?;
    let chunker = Chunker::new(plan.request_id.clone(), plan.format, plan.strip_headers);
    Ok(ndjson(rx, chunker))
}
