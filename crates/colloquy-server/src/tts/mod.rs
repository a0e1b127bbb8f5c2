//! Text to speech on Hume's TTS API (spec `evi-platform.md` §7, issue 16): synthesis
//! (`/v0/tts`, `/file`, `/stream/json`, `/stream/file`, the `stream/input` socket), the
//! voice library (`/v0/tts/voices`) and voice conversion (`/v0/tts/voice_conversion/*`).
//!
//! - [`wire`]: request and answer types; [`error`]: the 422 body.
//! - [`library`]: the voices and [`library::resolve_voice`], the one place a voice
//!   reference is resolved ([`resolve`] for configs and sessions).
//! - [`plan`]: checks a request and plans generations and snippets; [`description`]: what
//!   of a description the built-in voice can express.
//! - [`synthesis`]: speaks a plan as events; [`formats`]: wav, mp3, pcm; [`output`]:
//!   events to answers.
//! - `routes.rs`, `voices.rs`, `stream_input.rs`, `conversion.rs`: the endpoints.

pub mod conversion;
pub mod description;
pub mod error;
pub mod formats;
pub mod library;
pub mod output;
pub mod plan;
mod routes;
pub mod stream_input;
pub mod synthesis;
pub mod voices;
pub mod wire;

pub use library::{library_voice_id, resolve_voice, ResolvedVoice, AVA_SONG_ID};
pub use routes::router;

use crate::config::Settings;
use crate::state::AppState;
use colloquy_speech::openai::ServiceConfig;
use colloquy_speech::{EspeakOptions, EspeakVoice};
use colloquy_storage::StoreError;
use colloquy_wire::VoiceProvider;
use library::Library;
use synthesis::Engines;
use uuid::Uuid;

/// What the TTS endpoints share: the library, the engines and the ASR service.
pub struct Tts {
    /// The `HUME_AI` voices.
    pub library: Library,
    /// The engines.
    pub engines: Engines,
    /// `[engine.pipeline.asr]`, for voice conversion.
    pub asr: Option<ServiceConfig>,
    /// How long generations are remembered, ms.
    pub generation_ttl_ms: i64,
}

impl Tts {
    /// Loads the built-in voice (if the system has it) and builds the library.
    pub fn from_settings(settings: &Settings) -> Self {
        let p = &settings.engine.pipeline;
        let espeak = match EspeakVoice::new(EspeakOptions::default()) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "text to speech has no built-in voice");
                None
            }
        };
        let mut tts = Self::new(settings, espeak, p.tts.clone());
        if let Some(espeak) = tts.engines.espeak.clone() {
            // An espeak-ng voice name the library does not know fails here, once, rather
            // than in every request that names it.
            tts.library.retain(|v| {
                if v.settings.engine != library::EngineKind::Builtin {
                    return true;
                }
                let options = EspeakOptions {
                    voice: v.settings.engine_voice.clone(),
                    ..EspeakOptions::default()
                };
                match EspeakVoice::new(options) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(voice = %v.voice.name, error = %e, "voice left out of the library");
                        false
                    }
                }
            });
            drop(espeak);
        }
        tts
    }

    /// With the given engines.
    pub fn new(
        settings: &Settings,
        espeak: Option<EspeakVoice>,
        service: Option<ServiceConfig>,
    ) -> Self {
        let p = &settings.engine.pipeline;
        let mut pipeline = p.clone();
        pipeline.tts = service.clone();
        Self {
            library: Library::new(&settings.tts, &pipeline, espeak.is_some()),
            engines: Engines { espeak, service },
            asr: p.asr.clone(),
            generation_ttl_ms: (settings.tts.generation_ttl_secs as i64).saturating_mul(1000),
        }
    }

    /// Why nothing can be spoken.
    pub fn no_voice_message(&self) -> String {
        format!(
            "this server has no voice: install the built-in voice ({}) or configure \
             [engine.pipeline.tts]",
            colloquy_speech::ESPEAK_INSTALL_HINT
        )
    }
}

/// The server's [`Tts`], made on first use: the built-in voice is loaded by the first TTS
/// request (or voice lookup), not at start, so a server that never speaks never loads it.
pub struct TtsHandle {
    settings: Settings,
    made: std::sync::OnceLock<Tts>,
}

impl TtsHandle {
    /// A handle that will build its [`Tts`] from `settings`.
    pub fn new(settings: &Settings) -> Self {
        Self {
            settings: settings.clone(),
            made: std::sync::OnceLock::new(),
        }
    }

    /// The [`Tts`] (built on the first call; that call may block for the library's start,
    /// a few milliseconds).
    pub fn get(&self) -> &Tts {
        self.made.get_or_init(|| Tts::from_settings(&self.settings))
    }
}

/// The engine voice that speaks a resolved voice in chats (`audio_output`): the built-in
/// voice with the library voice's espeak-ng voice, speed and pitch, or the TTS service with
/// its voice name. `None` when that engine is not available on this server.
pub fn speaking_voice(
    state: &AppState,
    settings: &library::VoiceSettings,
) -> Option<std::sync::Arc<dyn colloquy_speech::Voice>> {
    let tts = state.tts.get();
    match settings.engine {
        library::EngineKind::Builtin => tts.engines.espeak.as_ref().map(|e| {
            let voice = e.with_options(EspeakOptions {
                voice: settings.engine_voice.clone(),
                rate_wpm: (synthesis::BASE_WPM * settings.speed)
                    .round()
                    .clamp(80.0, 450.0) as u32,
                pitch: settings.pitch.min(100),
            });
            std::sync::Arc::new(voice) as std::sync::Arc<dyn colloquy_speech::Voice>
        }),
        library::EngineKind::Service => tts.engines.service.as_ref().map(|c| {
            let client = colloquy_speech::openai::SpeechClient::new(
                c.clone(),
                settings.engine_voice.clone(),
            );
            std::sync::Arc::new(client) as std::sync::Arc<dyn colloquy_speech::Voice>
        }),
    }
}

/// Resolves a voice reference for `account` the way every part of Colloquy must: for a
/// config's `voice`, the chat socket's `voice_id` (`id` only, provider `None`) and TTS.
/// `Ok(Err(message))` when there is no such voice (the message names it).
pub async fn resolve(
    state: &AppState,
    account: Uuid,
    id: Option<&str>,
    name: Option<&str>,
    provider: Option<VoiceProvider>,
) -> Result<Result<ResolvedVoice, String>, StoreError> {
    let posted = wire::PostedVoice {
        id: id.map(str::to_string),
        name: name.map(str::to_string),
        provider: provider.map(|p| match p {
            VoiceProvider::HumeAi => wire::Provider::HumeAi,
            VoiceProvider::CustomVoice => wire::Provider::CustomVoice,
        }),
    };
    resolve_voice(
        &state.tts.get().library,
        state.store.as_ref(),
        account,
        &posted,
    )
    .await
}
