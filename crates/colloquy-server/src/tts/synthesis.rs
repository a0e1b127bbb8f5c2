//! Speaking a [`Plan`]: one task per request turns each snippet into 48 kHz audio as the
//! engine makes it (espeak-ng streams ~50 ms blocks with its word and phoneme events; a
//! speech service answers whole sentences) and hands [`Event`]s to the endpoint over a
//! small channel, so a slow client slows synthesis down instead of filling memory, and a
//! client that leaves stops it.

use super::formats::SAMPLE_RATE;
use super::library::{EngineKind, VoiceSettings};
use super::plan::{Plan, SnippetPlan};
use super::wire::{TimeRange, Timestamp, TimestampType};
use colloquy_speech::openai::{ServiceConfig, SpeechClient};
use colloquy_speech::pcm::{to_f32, to_i16, StreamResampler};
use colloquy_speech::{EspeakOptions, EspeakVoice, SpeechPiece};
use colloquy_storage::Store;
use std::sync::Arc;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The engines a server can speak with.
#[derive(Clone, Default)]
pub struct Engines {
    /// The built-in voice, when the system has espeak-ng.
    pub espeak: Option<EspeakVoice>,
    /// The `[engine.pipeline.tts]` service.
    pub service: Option<ServiceConfig>,
}

/// What the synthesis task reports, in order.
#[derive(Debug)]
pub enum Event {
    /// A take starts.
    GenerationStart {
        /// Its id.
        id: Uuid,
    },
    /// A snippet starts.
    SnippetStart {
        /// Its plan.
        snippet: SnippetPlan,
        /// The last snippet of its take.
        last_in_generation: bool,
    },
    /// The next samples of the snippet (48 kHz mono).
    Audio(Vec<i16>),
    /// A word or phoneme of the snippet (times from the snippet's start), once its end is
    /// known.
    Timestamp(Timestamp),
    /// The snippet is over.
    SnippetEnd,
    /// The take is over (and remembered).
    GenerationEnd,
    /// The engine failed; nothing follows.
    Failed(String),
}

/// espeak-ng's normal rate, words per minute.
pub(crate) const BASE_WPM: f64 = 175.0;

/// Starts speaking `plan`; the generations are remembered for `account` (for `context` and
/// saving voices) before the first take ends.
pub fn run(
    engines: Engines,
    store: Arc<dyn Store>,
    account: Uuid,
    ttl_ms: i64,
    plan: Plan,
) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let now = crate::clock::now_ms();
        let remembered: Vec<(Uuid, String)> = plan
            .generations
            .iter()
            .map(|g| {
                (
                    g.id,
                    serde_json::to_string(&g.remembered).expect("serializable"),
                )
            })
            .collect();
        let mut remember = Some(tokio::spawn(async move {
            if let Err(e) = store
                .remember_generations(account, &remembered, now, now + ttl_ms)
                .await
            {
                tracing::warn!(error = %e, "could not remember TTS generations");
            }
        }));
        for g in &plan.generations {
            if tx.send(Event::GenerationStart { id: g.id }).await.is_err() {
                return;
            }
            let n = g.snippets.len();
            let mut position: u64 = 0; // samples of this take so far
            let ms_to_samples = |ms: u64| ms * SAMPLE_RATE as u64 / 1000;
            for (i, s) in g.snippets.iter().enumerate() {
                let start = Event::SnippetStart {
                    snippet: s.clone(),
                    last_in_generation: i + 1 == n,
                };
                if tx.send(start).await.is_err() {
                    return;
                }
                let gap = s
                    .at_ms
                    .map_or(0, |at| ms_to_samples(at).saturating_sub(position));
                position += gap;
                if !silence(gap, &tx).await {
                    return;
                }
                match speak(&engines, s, plan.words, plan.phonemes, &tx).await {
                    Ok(Some(samples)) => position += samples,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "TTS synthesis failed");
                        let _ = tx.send(Event::Failed(e)).await;
                        return;
                    }
                }
                if i + 1 == n {
                    let min = g.min_duration_ms.map_or(0, ms_to_samples);
                    if !silence(min.saturating_sub(position), &tx).await {
                        return;
                    }
                }
                if tx.send(Event::SnippetEnd).await.is_err() {
                    return;
                }
            }
            if let Some(r) = remember.take() {
                let _ = r.await;
            }
            if tx.send(Event::GenerationEnd).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Sends `samples` zeros in 100 ms pieces; false when the receiver is gone.
async fn silence(mut samples: u64, tx: &mpsc::Sender<Event>) -> bool {
    while samples > 0 {
        let n = samples.min(SAMPLE_RATE as u64 / 10);
        if tx.send(Event::Audio(vec![0; n as usize])).await.is_err() {
            return false;
        }
        samples -= n;
    }
    true
}

/// Speaks one snippet (and its trailing silence) into `tx`: the samples sent, `None` when
/// the receiver is gone.
async fn speak(
    engines: &Engines,
    s: &SnippetPlan,
    words: bool,
    phonemes: bool,
    tx: &mpsc::Sender<Event>,
) -> Result<Option<u64>, String> {
    let spoken = match s.settings.engine {
        EngineKind::Builtin => {
            let Some(espeak) = &engines.espeak else {
                return Err("the built-in voice is unavailable".into());
            };
            match speak_espeak(espeak, &s.settings, &s.text, words, phonemes, tx).await? {
                Some(ms) => ms,
                None => return Ok(None),
            }
        }
        EngineKind::Service => {
            let Some(config) = &engines.service else {
                return Err("[engine.pipeline.tts] is not configured".into());
            };
            let client = SpeechClient::new(config.clone(), s.settings.engine_voice.clone());
            let pcm = client.speak(&s.text).await.map_err(|e| e.to_string())?;
            let pcm = pcm.resample(SAMPLE_RATE);
            for block in pcm.samples.chunks(SAMPLE_RATE as usize / 10) {
                if tx.send(Event::Audio(block.to_vec())).await.is_err() {
                    return Ok(None);
                }
            }
            pcm.samples.len() as u64
        }
    };
    let trailing = s.trailing_silence_ms as u64 * SAMPLE_RATE as u64 / 1000;
    if !silence(trailing, tx).await {
        return Ok(None);
    }
    Ok(Some(spoken + trailing))
}

/// A word or phoneme whose end is not known yet.
struct Open {
    kind: TimestampType,
    text: String,
    begin: u64,
}

/// Speaks with espeak-ng, streaming; the samples sent, or `None` when the receiver is
/// gone.
async fn speak_espeak(
    espeak: &EspeakVoice,
    settings: &VoiceSettings,
    text: &str,
    words: bool,
    phonemes: bool,
    tx: &mpsc::Sender<Event>,
) -> Result<Option<u64>, String> {
    let voice = espeak.with_options(EspeakOptions {
        voice: settings.engine_voice.clone(),
        rate_wpm: (BASE_WPM * settings.speed).round().clamp(80.0, 450.0) as u32,
        pitch: settings.pitch.min(100),
    });
    let mut pieces = voice.synthesize_stream(text).map_err(|e| e.to_string())?;
    let mut resampler = StreamResampler::new(espeak.sample_rate(), SAMPLE_RATE);
    let chars: Vec<char> = text.chars().collect();
    let mut out_samples: u64 = 0;
    let mut open_word: Option<Open> = None;
    let mut open_phoneme: Option<Open> = None;
    let mut pending: Vec<Timestamp> = Vec::new();
    let mut f32_in = Vec::new();
    let mut f32_out = Vec::new();
    let close = |open: &mut Option<Open>, end: u64, pending: &mut Vec<Timestamp>| {
        if let Some(o) = open.take() {
            pending.push(Timestamp {
                kind: o.kind,
                text: o.text,
                time: TimeRange {
                    begin: o.begin,
                    end: end.max(o.begin),
                },
            });
        }
    };
    loop {
        let piece = pieces.recv().await;
        let mut block: Option<Vec<i16>> = None;
        let mut done = false;
        match piece {
            None => done = true,
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(SpeechPiece::Audio(samples))) => {
                f32_in.clear();
                f32_in.extend(samples.iter().map(|&s| to_f32(s)));
                f32_out.clear();
                resampler.process(&f32_in, &mut f32_out);
                block = Some(f32_out.iter().map(|&s| to_i16(s)).collect());
            }
            Some(Ok(SpeechPiece::Word { start, len, at_ms })) => {
                if words {
                    close(&mut open_word, at_ms as u64, &mut pending);
                    let word: String = chars.iter().skip(start).take(len).collect();
                    let word = word
                        .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
                        .to_string();
                    if !word.is_empty() {
                        open_word = Some(Open {
                            kind: TimestampType::Word,
                            text: word,
                            begin: at_ms as u64,
                        });
                    }
                }
            }
            Some(Ok(SpeechPiece::Phoneme { name, at_ms })) => {
                if phonemes {
                    close(&mut open_phoneme, at_ms as u64, &mut pending);
                    open_phoneme = Some(Open {
                        kind: TimestampType::Phoneme,
                        text: name,
                        begin: at_ms as u64,
                    });
                }
            }
        }
        if done {
            f32_out.clear();
            resampler.finish(&mut f32_out);
            block = Some(f32_out.iter().map(|&s| to_i16(s)).collect());
        }
        if let Some(b) = block.filter(|b| !b.is_empty()) {
            out_samples += b.len() as u64;
            if tx.send(Event::Audio(b)).await.is_err() {
                return Ok(None);
            }
        }
        let end_ms = out_samples * 1000 / SAMPLE_RATE as u64;
        if done {
            close(&mut open_word, end_ms, &mut pending);
            close(&mut open_phoneme, end_ms, &mut pending);
        }
        for mut t in pending.drain(..) {
            if done {
                // espeak-ng's times are within its audio; the last ends with it.
                t.time.begin = t.time.begin.min(end_ms);
                t.time.end = t.time.end.min(end_ms).max(t.time.begin);
            }
            if tx.send(Event::Timestamp(t)).await.is_err() {
                return Ok(None);
            }
        }
        if done {
            return Ok(Some(out_samples));
        }
    }
}
