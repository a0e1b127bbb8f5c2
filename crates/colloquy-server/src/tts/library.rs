//! The voice library: every voice a TTS request, a chat's `voice_id` or a config's `voice`
//! can name, and the one function that resolves such a reference ([`resolve_voice`]).
//!
//! - `HUME_AI` voices: the built-in espeak-ng voices (stand-ins for the names Hume's own
//!   examples use, "Ava Song" keeping Hume's id, plus one per language), the voices of the
//!   `[engine.pipeline.tts]` service (`[tts] service_voices`), and the operator's
//!   `[[tts.voices]]`. Ids are stable: a UUID from SHA-256 of the name
//!   ([`library_voice_id`]), the rule configs already store voices by.
//! - `CUSTOM_VOICE` voices: an account's saved voices ([`colloquy_storage::VoiceStore`]).

use super::wire::{PostedVoice, Provider};
use crate::config::{PipelineSettings, TtsSettings};
use colloquy_storage::{Store, StoreError};
use colloquy_wire::{ReturnVoice, VoiceProvider};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of Hume's "Ava Song" library voice (the SDK's examples and fixtures use it).
pub const AVA_SONG_ID: &str = "5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c";

/// The id of the library voice named `name`: "Ava Song" keeps Hume's id, every other name
/// gets a UUID from SHA-256 of the name (stable across servers and versions).
pub fn library_voice_id(name: &str) -> String {
    if name == "Ava Song" {
        return AVA_SONG_ID.to_string();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("colloquy HUME_AI voice\0{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Which engine speaks a voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The built-in espeak-ng voice.
    Builtin,
    /// The `[engine.pipeline.tts]` service.
    Service,
}

/// What a voice speaks with: stored with generations and saved voices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoiceSettings {
    /// The engine.
    pub engine: EngineKind,
    /// espeak-ng voice (`en-us+f3`) or the service's voice name (`alloy`).
    pub engine_voice: String,
    /// Speed multiplier.
    pub speed: f64,
    /// Pitch 0–100 (built-in voice).
    pub pitch: u32,
}

/// One voice of the library.
#[derive(Debug, Clone)]
pub struct LibraryVoice {
    /// Id, name, provider `HUME_AI`.
    pub voice: ReturnVoice,
    /// What it speaks with.
    pub settings: VoiceSettings,
    /// One line about it.
    pub description: String,
    /// `(TAG, Value)` pairs for `filter_tag` (`GENDER`, `LANGUAGE`, `ENGINE`).
    pub tags: Vec<(String, String)>,
}

/// A resolved voice reference.
#[derive(Debug, Clone)]
pub struct ResolvedVoice {
    /// As answered (`ReturnVoice`).
    pub voice: ReturnVoice,
    /// What it speaks with.
    pub settings: VoiceSettings,
}

/// The built-in voices: `(name, espeak-ng voice, pitch, gender, language, description)`.
/// The first four stand in for names used in Hume's examples.
const BUILTIN: &[(&str, &str, u32, &str, &str, &str)] = &[
    (
        "Ava Song",
        "en-us+f3",
        55,
        "Female",
        "English",
        "Stand-in for Hume's Ava Song: US English, female",
    ),
    (
        "Male English Actor",
        "en+m3",
        42,
        "Male",
        "English",
        "Stand-in for Hume's Male English Actor: British English, male",
    ),
    (
        "Kora",
        "en-us+f2",
        60,
        "Female",
        "English",
        "Stand-in for Hume's Kora: US English, female",
    ),
    (
        "Dacher",
        "en-us+m1",
        45,
        "Male",
        "English",
        "Stand-in for Hume's Dacher: US English, male",
    ),
    (
        "Colloquy",
        "en-us",
        50,
        "Male",
        "English",
        "Colloquy's default voice (the one chats speak with): US English",
    ),
    (
        "Colloquy British",
        "en",
        50,
        "Male",
        "English",
        "British English",
    ),
    (
        "Colloquy Scottish",
        "en-gb-scotland",
        50,
        "Male",
        "English",
        "Scottish English",
    ),
    ("Colloquy German", "de", 50, "Male", "German", "German"),
    ("Colloquy French", "fr", 50, "Male", "French", "French"),
    ("Colloquy Spanish", "es", 50, "Male", "Spanish", "Spanish"),
    ("Colloquy Italian", "it", 50, "Male", "Italian", "Italian"),
];

/// The name of the voice spoken when a request names none.
pub const DEFAULT_VOICE: &str = "Colloquy";

/// The library of `HUME_AI` voices this server can speak.
#[derive(Debug, Clone, Default)]
pub struct Library {
    voices: Vec<LibraryVoice>,
}

impl Library {
    /// The built-in voices (when `builtin` is true: espeak-ng is available), the service's
    /// voices (when `[engine.pipeline.tts]` is set) and the operator's, by name.
    pub fn new(tts: &TtsSettings, pipeline: &PipelineSettings, builtin: bool) -> Self {
        let mut voices: Vec<LibraryVoice> = Vec::new();
        let has_service = pipeline.tts.is_some();
        for &(name, engine_voice, pitch, gender, language, description) in BUILTIN {
            // Without espeak-ng the stand-ins speak with the service's voice.
            let settings = match (builtin, has_service) {
                (true, _) => VoiceSettings {
                    engine: EngineKind::Builtin,
                    engine_voice: engine_voice.into(),
                    speed: 1.0,
                    pitch,
                },
                (false, true) if language == "English" => VoiceSettings {
                    engine: EngineKind::Service,
                    engine_voice: pipeline.tts_voice.clone(),
                    speed: 1.0,
                    pitch: 50,
                },
                _ => continue,
            };
            voices.push(entry(name, settings, description, gender, language));
        }
        if has_service {
            for v in &tts.service_voices {
                let settings = VoiceSettings {
                    engine: EngineKind::Service,
                    engine_voice: v.clone(),
                    speed: 1.0,
                    pitch: 50,
                };
                let description = format!("Voice `{v}` of the [engine.pipeline.tts] service");
                voices.retain(|x| x.voice.name != *v);
                voices.push(entry(v, settings, &description, "", ""));
            }
        }
        for v in &tts.voices {
            let engine = if v.engine == "service" {
                EngineKind::Service
            } else {
                EngineKind::Builtin
            };
            if (engine == EngineKind::Service && !has_service)
                || (engine == EngineKind::Builtin && !builtin)
            {
                tracing::warn!(
                    voice = %v.name,
                    "[[tts.voices]] entry left out: its engine is not available"
                );
                continue;
            }
            let settings = VoiceSettings {
                engine,
                engine_voice: v.engine_voice.clone(),
                speed: v.speed,
                pitch: v.pitch,
            };
            let description = v.description.clone().unwrap_or_default();
            voices.retain(|x| x.voice.name != v.name);
            voices.push(entry(&v.name, settings, &description, "", ""));
        }
        Self { voices }
    }

    /// Keeps the voices `keep` accepts (start-up drops those the engine refuses).
    pub fn retain(&mut self, keep: impl FnMut(&LibraryVoice) -> bool) {
        self.voices.retain(keep);
    }

    /// Every voice, in library order.
    pub fn voices(&self) -> &[LibraryVoice] {
        &self.voices
    }

    /// The voice named `name` (exact match).
    pub fn by_name(&self, name: &str) -> Option<&LibraryVoice> {
        self.voices.iter().find(|v| v.voice.name == name)
    }

    /// The voice with id `id` (case-insensitive).
    pub fn by_id(&self, id: &str) -> Option<&LibraryVoice> {
        let id = id.trim();
        self.voices
            .iter()
            .find(|v| v.voice.id.eq_ignore_ascii_case(id))
    }

    /// The voice spoken when none is named ([`DEFAULT_VOICE`], else the first).
    pub fn default_voice(&self) -> Option<&LibraryVoice> {
        self.by_name(DEFAULT_VOICE).or_else(|| self.voices.first())
    }

    /// The voice of take `k` when a request names none: take 0 the default voice, the
    /// others go round the library, so several takes sound different.
    pub fn voice_for_take(&self, k: usize) -> Option<&LibraryVoice> {
        if k == 0 || self.voices.is_empty() {
            return self.default_voice();
        }
        self.voices.get(k % self.voices.len())
    }
}

fn entry(
    name: &str,
    settings: VoiceSettings,
    description: &str,
    gender: &str,
    language: &str,
) -> LibraryVoice {
    let mut tags = vec![(
        "ENGINE".to_string(),
        match settings.engine {
            EngineKind::Builtin => "espeak-ng".to_string(),
            EngineKind::Service => "service".to_string(),
        },
    )];
    if !gender.is_empty() {
        tags.push(("GENDER".into(), gender.into()));
    }
    if !language.is_empty() {
        tags.push(("LANGUAGE".into(), language.into()));
    }
    LibraryVoice {
        voice: ReturnVoice {
            id: library_voice_id(name),
            name: name.to_string(),
            provider: VoiceProvider::HumeAi,
            compatible_octave_models: Some(vec!["1".into(), "2".into()]),
        },
        settings,
        description: description.to_string(),
        tags,
    }
}

/// Resolves a voice reference for `account`: `HUME_AI` in the library, `CUSTOM_VOICE` in
/// the account's saved voices. Without a provider (the SDKs' default is `CUSTOM_VOICE`)
/// the account's voices are tried first, then the library, so `{"name": "Ava Song"}` works.
///
/// This is the one place voice references are resolved: TTS requests, and (for configs and
/// the chat socket's `voice_id`) through [`super::resolve`].
///
/// `Ok(Err(message))`: no such voice; the message names it and says where voices are listed.
pub async fn resolve_voice(
    library: &Library,
    store: &dyn Store,
    account: Uuid,
    posted: &PostedVoice,
) -> Result<Result<ResolvedVoice, String>, StoreError> {
    let id = posted
        .id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let name = posted.name.as_deref().filter(|s| !s.trim().is_empty());
    let described = match (id, name) {
        (Some(id), _) => format!("id {id:?}"),
        (None, Some(name)) => format!("name {name:?}"),
        (None, None) => return Ok(Err("give the voice's id or name".into())),
    };
    if posted.provider != Some(Provider::HumeAi) {
        let saved = match (id, name) {
            (Some(id), _) => match Uuid::parse_str(id) {
                Ok(uuid) => store.voice_by_id(account, uuid).await?,
                Err(_) => None,
            },
            (None, Some(name)) => store.voice_by_name(account, name).await?,
            (None, None) => None,
        };
        if let Some(saved) = saved {
            let Ok(settings) = serde_json::from_str::<VoiceSettings>(&saved.settings) else {
                return Ok(Err(format!(
                    "the saved voice {described} is unreadable; save it again"
                )));
            };
            return Ok(Ok(ResolvedVoice {
                voice: ReturnVoice {
                    id: saved.id.to_string(),
                    name: saved.name,
                    provider: VoiceProvider::CustomVoice,
                    compatible_octave_models: Some(vec!["1".into(), "2".into()]),
                },
                settings,
            }));
        }
        if posted.provider == Some(Provider::CustomVoice) {
            return Ok(Err(format!(
                "no CUSTOM_VOICE voice with {described} in this account (GET \
                 /v0/tts/voices?provider=CUSTOM_VOICE lists them; library voices need \
                 \"provider\": \"HUME_AI\")"
            )));
        }
    }
    let found = match (id, name) {
        (Some(id), _) => library.by_id(id),
        (None, Some(name)) => library.by_name(name),
        (None, None) => None,
    };
    match found {
        Some(v) => Ok(Ok(ResolvedVoice {
            voice: v.voice.clone(),
            settings: v.settings.clone(),
        })),
        None => Ok(Err(format!(
            "no voice with {described} in the voice library (GET /v0/tts/voices?provider=HUME_AI \
             lists them; operators add voices with [[tts.voices]])"
        ))),
    }
}
