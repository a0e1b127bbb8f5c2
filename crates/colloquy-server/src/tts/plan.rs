//! From a checked request to what to speak: the generations, their snippets and each
//! snippet's voice settings. Everything a request can get wrong is found here, before the
//! first byte of an answer (so streamed answers never fail for the request's sake).

use super::description;
use super::error::TtsError;
use super::library::{resolve_voice, ResolvedVoice, VoiceSettings};
use super::wire::{AudioFormat, PostedTts, PostedUtterance, PostedVoice, TimestampType};
use super::Tts;
use colloquy_speech::SentenceSplitter;
use colloquy_storage::Store;
use colloquy_wire::ReturnVoice;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

/// Most characters in one utterance.
pub const MAX_TEXT_CHARS: usize = 5_000;
/// Most utterances in one request.
pub const MAX_UTTERANCES: usize = 100;
/// Most takes.
pub const MAX_GENERATIONS: i64 = 5;
/// Most characters a request may have spoken in all (its utterances' text times its
/// takes): about 10 minutes of speech, so one request cannot hold gigabytes of audio.
pub const MAX_REQUEST_CHARS: usize = 10_000;

/// What a generation remembers (for `context` and for saving it as a voice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    /// The library or saved voice it spoke with last, if it was named.
    pub voice: Option<ReturnVoice>,
    /// The settings of its last utterance.
    pub settings: VoiceSettings,
}

/// One snippet to speak.
#[derive(Debug, Clone)]
pub struct SnippetPlan {
    /// Snippet id.
    pub id: Uuid,
    /// Its utterance.
    pub utterance_index: usize,
    /// What to say.
    pub text: String,
    /// How.
    pub settings: VoiceSettings,
    /// Silence after it, ms (the utterance's `trailing_silence`, on its last snippet).
    pub trailing_silence_ms: u32,
    /// Voice conversion: where the snippet starts in the take (silence fills the gap
    /// before it; a snippet that would start earlier than the previous one's end starts
    /// then).
    pub at_ms: Option<u64>,
    /// Voice conversion: the transcript it speaks.
    pub transcribed_text: Option<String>,
}

/// One take.
#[derive(Debug, Clone)]
pub struct GenerationPlan {
    /// Its id.
    pub id: Uuid,
    /// Snippets in order.
    pub snippets: Vec<SnippetPlan>,
    /// What it remembers.
    pub remembered: Remembered,
    /// Voice conversion: the take lasts at least this long (silence at the end).
    pub min_duration_ms: Option<u64>,
}

/// A whole request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Request id.
    pub request_id: String,
    /// Output format.
    pub format: AudioFormat,
    /// Streamed chunks form one file.
    pub strip_headers: bool,
    /// Word timestamps wanted.
    pub words: bool,
    /// Phoneme timestamps wanted.
    pub phonemes: bool,
    /// Utterances in the request.
    pub utterances: usize,
    /// The takes.
    pub generations: Vec<GenerationPlan>,
}

fn at(path: &[Value]) -> Vec<Value> {
    let mut loc = vec![json!("body")];
    loc.extend_from_slice(path);
    loc
}

/// Checks one utterance's numbers and text.
fn check_utterance(u: &PostedUtterance, path: &[Value], allow_empty: bool) -> Result<(), TtsError> {
    let field = |name: &str| {
        let mut p = path.to_vec();
        p.push(json!(name));
        at(&p)
    };
    if !allow_empty && u.text.trim().is_empty() {
        return Err(TtsError::invalid(&field("text"), "text must not be empty"));
    }
    if u.text.chars().count() > MAX_TEXT_CHARS {
        return Err(TtsError::invalid(
            &field("text"),
            format!(
                "text is longer than {MAX_TEXT_CHARS} characters; split it into several utterances"
            ),
        ));
    }
    if let Some(speed) = u.speed {
        if !(0.25..=4.0).contains(&speed) {
            return Err(TtsError::invalid(
                &field("speed"),
                "speed must be between 0.25 and 4",
            ));
        }
    }
    if let Some(s) = u.trailing_silence {
        if !(0.0..=10.0).contains(&s) {
            return Err(TtsError::invalid(
                &field("trailing_silence"),
                "trailing_silence must be between 0 and 10 seconds",
            ));
        }
    }
    if u.description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1000)
    {
        return Err(TtsError::invalid(
            &field("description"),
            "description is longer than 1000 characters",
        ));
    }
    Ok(())
}

/// Resolves a voice or answers 422 naming it.
pub async fn voice(
    tts: &Tts,
    store: &dyn Store,
    account: Uuid,
    posted: &PostedVoice,
    loc: &[Value],
) -> Result<ResolvedVoice, TtsError> {
    match resolve_voice(&tts.library, store, account, posted).await? {
        Ok(v) => Ok(v),
        Err(msg) => Err(TtsError::Invalid {
            loc: loc.to_vec(),
            msg,
            kind: "value_error",
        }),
    }
}

/// Looks up a remembered generation or answers 422 at `loc`.
pub async fn generation(
    tts: &Tts,
    store: &dyn Store,
    account: Uuid,
    id: &str,
    loc: &[Value],
) -> Result<Remembered, TtsError> {
    let unknown = || {
        TtsError::invalid(
            loc,
            format!(
                "generation_id {id:?} is unknown or expired (generations are kept {} s)",
                tts.generation_ttl_ms / 1000
            ),
        )
    };
    let uuid = Uuid::parse_str(id.trim()).map_err(|_| unknown())?;
    let found = store
        .generation(account, uuid, crate::clock::now_ms())
        .await?;
    let text = found.ok_or_else(unknown)?;
    serde_json::from_str(&text).map_err(|_| unknown())
}

/// Checks `req` and plans it for `account`. `max_generations` caps the takes actually
/// made (1 for the file endpoints, which answer with the first).
pub async fn plan(
    tts: &Tts,
    store: &dyn Store,
    account: Uuid,
    req: &PostedTts,
    max_generations: usize,
) -> Result<Plan, TtsError> {
    if req.utterances.is_empty() {
        return Err(TtsError::invalid(
            &at(&[json!("utterances")]),
            "give at least one utterance",
        ));
    }
    if req.utterances.len() > MAX_UTTERANCES {
        return Err(TtsError::invalid(
            &at(&[json!("utterances")]),
            format!("at most {MAX_UTTERANCES} utterances a request"),
        ));
    }
    let takes = req.num_generations.unwrap_or(1);
    if !(1..=MAX_GENERATIONS).contains(&takes) {
        return Err(TtsError::invalid(
            &at(&[json!("num_generations")]),
            format!("num_generations must be between 1 and {MAX_GENERATIONS}"),
        ));
    }
    for (i, u) in req.utterances.iter().enumerate() {
        check_utterance(u, &[json!("utterances"), json!(i)], false)?;
    }
    let chars: usize = req.utterances.iter().map(|u| u.text.chars().count()).sum();
    let spoken = chars.saturating_mul((takes as usize).min(max_generations));
    if spoken > MAX_REQUEST_CHARS {
        return Err(TtsError::invalid(
            &at(&[json!("utterances")]),
            format!(
                "{spoken} characters to speak (text times num_generations); at most \
                 {MAX_REQUEST_CHARS} a request: split the text over several requests"
            ),
        ));
    }
    // The starting voice: a continued generation's, or unspoken context's.
    let mut start: Option<(Option<ReturnVoice>, VoiceSettings)> = None;
    if let Some(ctx) = &req.context {
        if let Some(id) = &ctx.generation_id {
            let r = generation(
                tts,
                store,
                account,
                id,
                &at(&[json!("context"), json!("generation_id")]),
            )
            .await?;
            start = Some((r.voice, r.settings));
        } else if let Some(us) = &ctx.utterances {
            for (i, u) in us.iter().enumerate() {
                let path = [json!("context"), json!("utterances"), json!(i)];
                check_utterance(u, &path, true)?;
                if let Some(v) = &u.voice {
                    let mut loc = at(&path);
                    loc.push(json!("voice"));
                    let r = voice(tts, store, account, v, &loc).await?;
                    start = Some((Some(r.voice), r.settings));
                }
            }
        }
    }
    // Each utterance's named voice, resolved once.
    let mut named: Vec<Option<ResolvedVoice>> = Vec::with_capacity(req.utterances.len());
    for (i, u) in req.utterances.iter().enumerate() {
        named.push(match &u.voice {
            Some(v) => Some(
                voice(
                    tts,
                    store,
                    account,
                    v,
                    &at(&[json!("utterances"), json!(i), json!("voice")]),
                )
                .await?,
            ),
            None => None,
        });
    }
    let made = (takes as usize).min(max_generations).max(1);
    let mut generations = Vec::with_capacity(made);
    for k in 0..made {
        let mut sticky = start.clone();
        let mut snippets = Vec::new();
        let mut last = None;
        for (i, u) in req.utterances.iter().enumerate() {
            if let Some(r) = &named[i] {
                sticky = Some((Some(r.voice.clone()), r.settings.clone()));
            }
            let (voice_ref, mut settings, design) = match &sticky {
                Some((v, s)) => (v.clone(), s.clone(), false),
                None => {
                    let Some(v) = tts.library.voice_for_take(k) else {
                        return Err(TtsError::invalid(
                            &at(&[json!("utterances"), json!(i), json!("voice")]),
                            tts.no_voice_message(),
                        ));
                    };
                    (None, v.settings.clone(), true)
                }
            };
            if let Some(d) = &u.description {
                description::apply(d, &mut settings, design);
            }
            if let Some(speed) = u.speed {
                settings.speed *= speed;
            }
            let texts = if req.split_utterances.unwrap_or(true) {
                split(&u.text)
            } else {
                vec![u.text.trim().to_string()]
            };
            let n = texts.len();
            for (j, text) in texts.into_iter().enumerate() {
                snippets.push(SnippetPlan {
                    id: Uuid::new_v4(),
                    utterance_index: i,
                    text,
                    settings: settings.clone(),
                    trailing_silence_ms: if j + 1 == n {
                        (u.trailing_silence.unwrap_or(0.0) * 1000.0).round() as u32
                    } else {
                        0
                    },
                    at_ms: None,
                    transcribed_text: None,
                });
            }
            last = Some(Remembered {
                voice: voice_ref,
                settings,
            });
        }
        generations.push(GenerationPlan {
            id: Uuid::new_v4(),
            snippets,
            remembered: last.expect("at least one utterance"),
            min_duration_ms: None,
        });
    }
    let types = req.include_timestamp_types.clone().unwrap_or_default();
    Ok(Plan {
        request_id: Uuid::new_v4().to_string(),
        format: req.format.map(|f| f.kind).unwrap_or_default(),
        strip_headers: req.strip_headers.unwrap_or(false),
        words: types.contains(&TimestampType::Word),
        phonemes: types.contains(&TimestampType::Phoneme),
        utterances: req.utterances.len(),
        generations,
    })
}

/// An utterance's sentences (at least one).
pub fn split(text: &str) -> Vec<String> {
    let mut splitter = SentenceSplitter::new();
    let mut out: Vec<String> = splitter
        .push(text)
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(rest) = splitter.finish() {
        let rest = rest.trim();
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    if out.is_empty() {
        out.push(text.trim().to_string());
    }
    out
}
