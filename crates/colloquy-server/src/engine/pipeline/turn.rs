//! The pipeline's services and its turns: Colloquy answers the chat through OpenAI-compatible services.
//!
//! A **turn** is one streamed answer of the language model: its text is split into
//! sentences, each sentence is spoken by the voice (the TTS service, or the built-in
//! espeak-ng voice when the system has it), and the turn reports [`TurnOutput`]s to the session
//! loop, which records and sends them. The turn runs as its own task so the session keeps
//! reading the client (tool answers, pauses) while the model and the voice work; dropping
//! the [`Turn`] cancels it (the HTTP streams close). See `docs/engines.md`.

use crate::config::{EngineMode, EngineSettings, PipelineSettings};
use crate::platform::chat_config::ChatConfig;
use colloquy_speech::expression::{ExpressionClient, Scores};
use colloquy_speech::{
    wav_chunks, ChatClient, ChatRequest, EspeakOptions, EspeakVoice, LlmDelta, Pcm,
    SentenceSplitter, SpeechClient, TranscriptEvent, TranscriptionClient, VadConfig, Voice,
    VoiceError,
};
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Sample rate of `audio_output` (what EVI clients play).
pub const OUTPUT_RATE: u32 = 48_000;
/// Longest `audio_output` chunk, in milliseconds.
pub const CHUNK_MS: u32 = 100;

/// The services of a pipeline chat (built once at start-up; clones share their HTTP clients
/// and voice).
#[derive(Clone)]
pub struct Services {
    /// Speech to text; `None`: spoken turns are not answered.
    pub asr: Option<TranscriptionClient>,
    /// Turn detection on the user's audio.
    pub vad: VadConfig,
    /// The language model.
    pub llm: ChatClient,
    /// Speaks the answers; `None`: text only.
    pub voice: Option<Arc<dyn Voice>>,
}

impl Services {
    /// The services `[engine.pipeline]` configures (`None` without an LLM).
    pub fn from_settings(p: &PipelineSettings, voice: Option<Arc<dyn Voice>>) -> Option<Self> {
        let llm = ChatClient::new(p.llm.clone()?);
        let vad = VadConfig {
            threshold: p.vad_threshold,
            min_speech_ms: p.vad_min_speech_ms,
            hangover_ms: p.vad_silence_ms,
            ..VadConfig::default()
        };
        let asr = p.asr.clone().map(TranscriptionClient::new);
        Some(Self {
            asr,
            vad,
            llm,
            voice,
        })
    }
}

impl Services {
    /// These services as a chat with `config` uses them: its turn detection
    /// (`turn_detection.end_of_turn_silence_ms` is the silence that ends a turn,
    /// `speech_detection_threshold` the voiced-frame threshold, `prefix_padding_ms` the
    /// audio kept before a turn's start). Its voice is set by the session
    /// ([`crate::engine::Engine::set_voice`]).
    pub fn for_config(&self, config: &ChatConfig) -> Self {
        let mut services = self.clone();
        if let Some(t) = &config.turn_detection {
            if let Some(ms) = t.end_of_turn_silence_ms {
                services.vad.hangover_ms = ms.clamp(1, u32::MAX as i64) as u32;
            }
            if let Some(threshold) = t.speech_detection_threshold {
                services.vad.threshold = threshold.clamp(0.0, 1.0) as f32;
            }
            if let Some(ms) = t.prefix_padding_ms {
                services.vad.pre_roll_ms = ms.clamp(0, u32::MAX as i64) as u32;
            }
        }
        services
    }
}

/// What the engines need from `[engine]`, built once at start-up and shared by every chat:
/// the pipeline's services (`None` unless some key uses the pipeline) and the voice that
/// speaks `assistant_input` in client mode (`None` unless `engine.client.speak`, some key
/// uses client mode, and a voice is available). Without a voice, one warning says why and
/// answers are text only.
pub fn shared_engines(e: &EngineSettings) -> (Option<Services>, Option<Arc<dyn Voice>>) {
    let uses = |mode| e.mode == mode || e.keys.values().any(|o| o.mode == mode);
    let piped = uses(EngineMode::Pipeline);
    let speak = e.client.speak && uses(EngineMode::Client);
    if !piped && !speak {
        return (None, None);
    }
    let voice = match voice_for(&e.pipeline) {
        Ok(voice) => Some(voice),
        Err(error) => {
            tracing::warn!(
                %error,
                "no voice: [engine.pipeline.tts] is not set and the built-in voice is \
                 unavailable, so answers are text only (no audio_output)"
            );
            None
        }
    };
    let services = if piped {
        Services::from_settings(&e.pipeline, voice.clone())
    } else {
        None
    };
    (services, voice.filter(|_| speak))
}

/// The voice `[engine.pipeline]` configures: its TTS service, else the built-in espeak-ng
/// voice (an error when the system lacks its library or data).
pub fn voice_for(p: &PipelineSettings) -> Result<Arc<dyn Voice>, VoiceError> {
    Ok(match &p.tts {
        Some(tts) => Arc::new(SpeechClient::new(tts.clone(), p.tts_voice.clone())),
        None => Arc::new(EspeakVoice::new(EspeakOptions::default())?),
    })
}

/// What a running turn reports, in order.
#[derive(Debug)]
pub enum TurnOutput {
    /// One sentence of the answer and its speech (`audio_output`-sized WAV files, empty
    /// when there is no voice or it failed).
    Sentence { text: String, audio: Vec<Vec<u8>> },
    /// The model calls a tool (after the answer's text).
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// The text of a spoken turn recognized so far (streamed transcription).
    HeardSoFar(String),
    /// The transcript of a spoken turn (the last output of a transcription) and the
    /// emotion scores of its speech, when an expression service measured them.
    Heard {
        text: String,
        scores: Option<Scores>,
        /// The language the recognizer detected (ISO 639-1), when it reports one.
        language: Option<String>,
    },
    /// A service failed; the turn is over.
    Failed(String),
    /// The answer is complete; always last unless `Failed`.
    Done,
}

/// A running answer. Dropping it cancels the work.
pub struct Turn {
    rx: mpsc::Receiver<TurnOutput>,
    task: JoinHandle<()>,
}

impl Turn {
    /// Starts answering `request`.
    pub fn start(services: Arc<Services>, request: ChatRequest) -> Self {
        // Small buffer: a paused session stops reading, and the turn waits.
        let (tx, rx) = mpsc::channel(2);
        let task = tokio::spawn(run_turn(services, request, tx));
        Self { rx, task }
    }

    /// Transcribes a spoken turn; with `interim`, asks the service to stream and reports the
    /// text recognized so far as it comes ([`TurnOutput::HeardSoFar`]). With `expression`,
    /// the utterance is measured at the same time, and [`TurnOutput::Heard`] waits for its
    /// scores (at most `engine.expression.timeout_secs`).
    pub fn transcribe(
        asr: TranscriptionClient,
        audio: Pcm,
        interim: bool,
        expression: Option<ExpressionClient>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(async move {
            // Aborted with this task (its guard is dropped with it).
            let measuring = expression.map(|client| {
                let audio = audio.clone();
                AbortOnDrop(tokio::spawn(async move { client.measure(&audio).await }))
            });
            let scores = |measuring: Option<AbortOnDrop<Option<Scores>>>| async move {
                match measuring {
                    Some(mut m) => (&mut m.0).await.ok().flatten(),
                    None => None,
                }
            };
            if !interim {
                let out = match asr.transcript(&audio, None).await {
                    Ok(t) => TurnOutput::Heard {
                        text: t.text,
                        scores: scores(measuring).await,
                        language: t.language,
                    },
                    Err(e) => TurnOutput::Failed(e.to_string()),
                };
                let _ = tx.send(out).await;
                return;
            }
            let mut stream = match asr.transcribe_stream(&audio, None).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(TurnOutput::Failed(e.to_string())).await;
                    return;
                }
            };
            let mut measuring = measuring;
            let mut language = None;
            while let Some(item) = stream.next().await {
                let (out, last) = match item {
                    Ok(TranscriptEvent::Interim(t)) => (TurnOutput::HeardSoFar(t), false),
                    Ok(TranscriptEvent::Language(l)) => {
                        language = Some(l);
                        continue;
                    }
                    Ok(TranscriptEvent::Final(text)) => {
                        let scores = scores(measuring.take()).await;
                        let language = language.take();
                        (
                            TurnOutput::Heard {
                                text,
                                scores,
                                language,
                            },
                            true,
                        )
                    }
                    Err(e) => (TurnOutput::Failed(e.to_string()), true),
                };
                if tx.send(out).await.is_err() || last {
                    return;
                }
            }
        });
        Self { rx, task }
    }

    /// The next output (`None`: the turn ended).
    pub fn receiver(&mut self) -> &mut mpsc::Receiver<TurnOutput> {
        &mut self.rx
    }
}

/// A spawned task that is aborted when this is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_turn(services: Arc<Services>, request: ChatRequest, tx: mpsc::Sender<TurnOutput>) {
    let mut stream = match services.llm.stream(&request).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(TurnOutput::Failed(e.to_string())).await;
            return;
        }
    };
    let mut splitter = SentenceSplitter::new();
    while let Some(item) = stream.next().await {
        let out = match item {
            Ok(LlmDelta::Text(t)) => {
                for sentence in splitter.push(&t) {
                    if !say(&services, sentence, &tx).await {
                        return;
                    }
                }
                continue;
            }
            Ok(LlmDelta::ToolCall {
                id,
                name,
                arguments,
            }) => TurnOutput::ToolCall {
                id,
                name,
                arguments,
            },
            Ok(LlmDelta::Done { .. }) => TurnOutput::Done,
            Err(e) => TurnOutput::Failed(e.to_string()),
        };
        if let Some(rest) = splitter.finish() {
            if !say(&services, rest, &tx).await {
                return;
            }
        }
        let last = matches!(out, TurnOutput::Done | TurnOutput::Failed(_));
        if tx.send(out).await.is_err() || last {
            return;
        }
    }
    let _ = tx
        .send(TurnOutput::Failed(
            "the language model's answer ended early".into(),
        ))
        .await;
}

/// Speaks one sentence and reports it; false once the session stopped listening.
async fn say(services: &Services, text: String, tx: &mpsc::Sender<TurnOutput>) -> bool {
    if text.trim().is_empty() {
        return true;
    }
    let audio = match &services.voice {
        Some(voice) => speak(voice.as_ref(), &text).await,
        None => Vec::new(),
    };
    tx.send(TurnOutput::Sentence { text, audio }).await.is_ok()
}

/// `text` spoken by `voice` as `audio_output` chunks: complete WAV files at
/// [`OUTPUT_RATE`], at most [`CHUNK_MS`] each. Empty when the voice fails (logged).
pub async fn speak(voice: &dyn Voice, text: &str) -> Vec<Vec<u8>> {
    match voice.synthesize(text).await {
        Ok(pcm) if !pcm.is_empty() => {
            let pcm = if pcm.sample_rate == OUTPUT_RATE {
                pcm
            } else {
                pcm.resample(OUTPUT_RATE)
            };
            wav_chunks(&pcm, CHUNK_MS)
        }
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "the voice failed; the text is sent without audio");
            Vec::new()
        }
    }
}
