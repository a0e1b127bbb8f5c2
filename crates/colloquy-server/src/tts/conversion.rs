//! Voice conversion (`/v0/tts/voice_conversion/file` and `/json`, spec §7.9): the upload
//! is decoded (WAV or WebM/Opus, as chat audio), cut into spoken segments where the level
//! rises above the noise floor, each segment transcribed by the `[engine.pipeline.asr]`
//! service, and the transcripts spoken again with the requested voice, each starting at
//! its segment's original time (silence between, the take as long as the upload).
//!
//! It keeps the words and their timing, **not** the speaker's intonation, rhythm within a
//! segment or emotion: the new voice reads the transcript.

use super::error::TtsError;
use super::output::{collect_file, Chunker};
use super::plan::{self, GenerationPlan, Plan, Remembered, SnippetPlan};
use super::routes::ndjson;
use super::synthesis;
use super::wire::{AudioFormat, Format, PostedVoice};
use crate::auth::Caller;
use crate::state::AppState;
use axum::extract::{Multipart, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use colloquy_audio::InputDecoder;
use colloquy_speech::openai::TranscriptionClient;
use colloquy_speech::pcm::to_i16;
use colloquy_speech::Pcm;
use serde_json::{json, Value};
use uuid::Uuid;

/// The form, parsed.
#[derive(Default)]
struct Form {
    audio: Option<Vec<u8>>,
    voice: Option<PostedVoice>,
    format: Option<AudioFormat>,
    words: bool,
    phonemes: bool,
    strip_headers: bool,
}

fn form_loc(field: &str) -> Vec<Value> {
    vec![json!("body"), json!(field)]
}

/// A JSON part, `null` or empty being absent.
fn json_part<T: serde::de::DeserializeOwned>(
    field: &str,
    text: &str,
) -> Result<Option<T>, TtsError> {
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| TtsError::invalid(&form_loc(field), format!("{field}: {e}")))
}

fn timestamp_type(form: &mut Form, v: &str) -> Result<(), TtsError> {
    match v.trim().trim_matches('"') {
        "word" => form.words = true,
        "phoneme" => form.phonemes = true,
        "" | "null" => {}
        other => {
            return Err(TtsError::invalid(
                &form_loc("include_timestamp_types"),
                format!("include_timestamp_types: word or phoneme (got {other:?})"),
            ))
        }
    }
    Ok(())
}

async fn read_form(mut multipart: Multipart) -> Result<Form, TtsError> {
    let mut form = Form::default();
    let bad = |e: axum::extract::multipart::MultipartError| {
        TtsError::invalid(
            &[json!("body")],
            format!("not a readable multipart/form-data body: {e}"),
        )
    };
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "audio" {
            form.audio = Some(field.bytes().await.map_err(bad)?.to_vec());
            continue;
        }
        let text = field.text().await.map_err(bad)?;
        match name.as_str() {
            "voice" => form.voice = json_part("voice", &text)?,
            "format" => form.format = json_part::<Format>("format", &text)?.map(|f| f.kind),
            "strip_headers" => form.strip_headers = text.trim().eq_ignore_ascii_case("true"),
            n if n == "include_timestamp_types" || n.starts_with("include_timestamp_types[") => {
                let t = text.trim();
                if t.starts_with('[') {
                    let list: Vec<String> =
                        json_part("include_timestamp_types", t)?.unwrap_or_default();
                    for v in list {
                        timestamp_type(&mut form, &v)?;
                    }
                } else {
                    timestamp_type(&mut form, t)?;
                }
            }
            _ => {} // context and unknown parts: accepted, not used
        }
    }
    Ok(form)
}

/// A spoken stretch of the upload, in samples of its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First sample.
    pub start: usize,
    /// One past the last sample.
    pub end: usize,
}

/// The spoken stretches of `samples`: 20 ms frames louder than -34 dBFS, joined across
/// pauses shorter than 400 ms, padded by 100 ms, at least 150 ms long.
pub fn segments(samples: &[f32], rate: u32) -> Vec<Segment> {
    let frame = (rate as usize / 50).max(1);
    let ms = |n: usize| n * rate as usize / 1000;
    let mut out: Vec<Segment> = Vec::new();
    for (i, chunk) in samples.chunks(frame).enumerate() {
        let rms = (chunk.iter().map(|s| s * s).sum::<f32>() / chunk.len() as f32).sqrt();
        if rms < 0.02 {
            continue;
        }
        let start = i * frame;
        let end = start + chunk.len();
        match out.last_mut() {
            Some(last) if start <= last.end + ms(400) => last.end = end,
            _ => out.push(Segment { start, end }),
        }
    }
    out.retain(|s| s.end - s.start >= ms(150));
    for s in &mut out {
        s.start = s.start.saturating_sub(ms(100));
        s.end = (s.end + ms(100)).min(samples.len());
    }
    out
}

/// Parses the form, transcribes the upload and plans its take.
async fn prepare(
    state: &AppState,
    caller: &Caller,
    multipart: Multipart,
) -> Result<Plan, TtsError> {
    let Some(asr) = state.tts.get().asr.clone() else {
        return Err(TtsError::invalid(
            &[json!("body"), json!("audio")],
            "voice conversion needs a speech-to-text service: configure [engine.pipeline.asr] \
             (base_url and model of an OpenAI-compatible /audio/transcriptions endpoint, e.g. \
             COLLOQUY_ENGINE__PIPELINE__ASR__BASE_URL)",
        ));
    };
    let form = read_form(multipart).await?;
    let Some(audio) = form.audio.filter(|a| !a.is_empty()) else {
        return Err(TtsError::Invalid {
            loc: form_loc("audio"),
            msg: "Field required: the audio to convert".into(),
            kind: "missing",
        });
    };
    let undecodable = || {
        TtsError::invalid(
            &form_loc("audio"),
            "audio: not a format Colloquy decodes (WAV or WebM/Opus)",
        )
    };
    let decoded = InputDecoder::default()
        .decode(&audio, None)
        .map_err(|_| undecodable())?
        .ok_or_else(undecodable)?;
    let rate = decoded.sample_rate;
    let account = caller.0.user_id;
    let voice = match &form.voice {
        Some(v) => Some(
            plan::voice(
                state.tts.get(),
                state.store.as_ref(),
                account,
                v,
                &form_loc("voice"),
            )
            .await?,
        ),
        None => None,
    };
    let (voice_ref, settings) = match voice {
        Some(v) => (Some(v.voice), v.settings),
        None => match state.tts.get().library.default_voice() {
            Some(v) => (None, v.settings.clone()),
            None => {
                return Err(TtsError::invalid(
                    &form_loc("voice"),
                    state.tts.get().no_voice_message(),
                ))
            }
        },
    };
    let client = TranscriptionClient::new(asr);
    let generation_id = Uuid::new_v4();
    let mut snippets = Vec::new();
    for (i, seg) in segments(&decoded.samples, rate).into_iter().enumerate() {
        let pcm = Pcm::new(
            decoded.samples[seg.start..seg.end]
                .iter()
                .map(|&s| to_i16(s))
                .collect(),
            rate,
        );
        let text = client.transcribe(&pcm, None).await.map_err(|e| {
            TtsError::Api(crate::error::ApiError::BadRequest {
                code: "asr_failed",
                message: format!("the [engine.pipeline.asr] service failed: {e}"),
            })
        })?;
        if text.trim().is_empty() {
            continue;
        }
        snippets.push(SnippetPlan {
            id: Uuid::new_v4(),
            utterance_index: i,
            text: text.clone(),
            settings: settings.clone(),
            trailing_silence_ms: 0,
            at_ms: Some(seg.start as u64 * 1000 / rate as u64),
            transcribed_text: Some(text),
        });
    }
    if snippets.is_empty() {
        return Err(TtsError::invalid(
            &form_loc("audio"),
            "audio: no speech was recognized in it",
        ));
    }
    // Utterance indexes count the recognized segments.
    for (i, s) in snippets.iter_mut().enumerate() {
        s.utterance_index = i;
    }
    let utterances = snippets.len();
    Ok(Plan {
        request_id: Uuid::new_v4().to_string(),
        format: form.format.unwrap_or_default(),
        strip_headers: form.strip_headers,
        words: form.words,
        phonemes: form.phonemes,
        utterances,
        generations: vec![GenerationPlan {
            id: generation_id,
            snippets,
            remembered: Remembered {
                voice: voice_ref,
                settings,
            },
            min_duration_ms: Some(decoded.samples.len() as u64 * 1000 / rate as u64),
        }],
    })
}

fn start(
    state: &AppState,
    caller: &Caller,
    plan: Plan,
) -> tokio::sync::mpsc::Receiver<synthesis::Event> {
    synthesis::run(
        state.tts.get().engines.clone(),
        state.store.clone(),
        caller.0.user_id,
        state.tts.get().generation_ttl_ms,
        plan,
    )
}

/// `POST /v0/tts/voice_conversion/file`.
pub async fn convert_file(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Multipart,
) -> Result<Response, TtsError> {
    let plan = prepare(&state, &caller, multipart).await?;
    let format = plan.format;
    let bytes = collect_file(start(&state, &caller, plan), format)
        .await
        .map_err(|e| TtsError::Api(crate::error::ApiError::Internal(e)))?;
    Ok(([(CONTENT_TYPE, format.content_type())], bytes).into_response())
}

/// `POST /v0/tts/voice_conversion/json`.
pub async fn convert_json(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Multipart,
) -> Result<Response, TtsError> {
    let plan = prepare(&state, &caller, multipart).await?;
    let chunker = Chunker::new(plan.request_id.clone(), plan.format, plan.strip_headers);
    Ok(ndjson(start(&state, &caller, plan), chunker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_the_speech() {
        let rate = 16_000;
        let mut s = vec![0.0f32; rate as usize * 3];
        for (i, x) in s.iter_mut().enumerate().take(24_000).skip(8_000) {
            *x = 0.3 * (i as f32 * 0.2).sin();
        }
        for (i, x) in s.iter_mut().enumerate().skip(40_000).take(4_000) {
            *x = 0.3 * (i as f32 * 0.2).sin();
        }
        let segs = segments(&s, rate);
        assert_eq!(segs.len(), 2, "{segs:?}");
        assert_eq!(segs[0].start, 8_000 - 1_600);
        assert_eq!(segs[1].start, 40_000 - 1_600);
    }
}
