//! `[engine]`: which engine answers a chat, per API key, and each engine's settings.

use super::ConfigError;
use colloquy_speech::ServiceConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Which speech engine answers a chat (see `docs/engines.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineMode {
    /// The client drives the chat (`user_input`, `assistant_input`…); nothing else answers.
    #[default]
    Client,
    /// Every chat is relayed to an upstream EVI-compatible socket (`[engine.relay]`).
    Relay,
    /// Colloquy answers itself through OpenAI-compatible services (`[engine.pipeline]`).
    Pipeline,
}

impl EngineMode {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineMode::Client => "client",
            EngineMode::Relay => "relay",
            EngineMode::Pipeline => "pipeline",
        }
    }
}

/// `[engine]`: the mode for every chat, and overrides per API key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Mode of chats opened with a key that has no override.
    pub mode: EngineMode,
    /// The upstream used by `relay` mode.
    pub relay: RelaySettings,
    /// The services used by `pipeline` mode.
    pub pipeline: PipelineSettings,
    /// Emotion scores of the user's speech in `pipeline` mode (optional).
    pub expression: ExpressionSettings,
    /// Client-driven mode: whether `assistant_input` is spoken.
    pub client: ClientSettings,
    /// Per-key overrides, by API key prefix (as shown by `colloquy keys list`; compared
    /// case-insensitively; the longest matching prefix wins).
    pub keys: BTreeMap<String, KeyEngineSettings>,
}

/// `[engine.keys."<prefix>"]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEngineSettings {
    /// Mode of chats opened with a matching key.
    pub mode: EngineMode,
}

/// `[engine.relay]`: the upstream EVI-compatible chat socket.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// `ws://` or `wss://` URL of the upstream chat socket, e.g.
    /// `wss://api.hume.ai/v0/evi/chat`.
    pub url: Option<String>,
    /// Upstream API key, sent as the `X-Hume-Api-Key` header.
    pub api_key: Option<String>,
    /// Upstream access token, sent as the `access_token` query parameter.
    pub access_token: Option<String>,
    /// Seconds to open the upstream socket and receive its `chat_metadata`.
    pub connect_timeout_secs: u64,
    /// Seconds the upstream may stay completely silent (not even answering a ping) before
    /// the chat ends as `ERROR`.
    pub idle_timeout_secs: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            url: None,
            api_key: None,
            access_token: None,
            connect_timeout_secs: 10,
            idle_timeout_secs: 30,
        }
    }
}

impl fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("RelaySettings")
            .field("url", &self.url)
            .field("api_key", &hidden(&self.api_key))
            .field("access_token", &hidden(&self.access_token))
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .finish()
    }
}

/// `[engine.client]`: the client-driven mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSettings {
    /// Speak `assistant_input` (`audio_output` chunks, recorded as the assistant's voice)
    /// with the pipeline's voice: `[engine.pipeline.tts]`, else the built-in espeak-ng
    /// voice. Default `true`; without a voice the answer is text only.
    pub speak: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self { speak: true }
    }
}

pub use colloquy_speech::expression::ExpressionSettings;

/// `[engine.pipeline]`: OpenAI-compatible services that answer the chat.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSettings {
    /// Speech to text (`/audio/transcriptions`); without it spoken turns are not answered.
    pub asr: Option<ServiceConfig>,
    /// The language model (streamed `/chat/completions`); required for `pipeline` mode.
    pub llm: Option<ServiceConfig>,
    /// Text to speech (`/audio/speech`); without it answers are spoken by the built-in
    /// espeak-ng voice when the system has it, else they are text only.
    pub tts: Option<ServiceConfig>,
    /// Voice name sent to the TTS service.
    pub tts_voice: String,
    /// System prompt used when the client sends none (`session_settings.system_prompt`).
    pub system_prompt: Option<String>,
    /// Earlier events of a resumed chat group given to the model as history.
    pub event_limit: usize,
    /// Milliseconds of silence that end a spoken turn.
    pub vad_silence_ms: u32,
    /// Voiced milliseconds before speech counts as a turn (and interrupts the assistant).
    pub vad_min_speech_ms: u32,
    /// Voice-activity threshold, 0–1 (higher: fewer false starts in noise).
    pub vad_threshold: f32,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            asr: None,
            llm: None,
            tts: None,
            tts_voice: "alloy".into(),
            system_prompt: None,
            event_limit: colloquy_speech::prompt::DEFAULT_EVENT_LIMIT,
            vad_silence_ms: 600,
            vad_min_speech_ms: 160,
            vad_threshold: 0.5,
        }
    }
}

impl EngineSettings {
    /// The mode for a chat opened with the key whose prefix is `key_prefix` (`None` when
    /// unknown): the override with the longest matching prefix, else `mode`.
    pub fn mode_for(&self, key_prefix: Option<&str>) -> EngineMode {
        let Some(prefix) = key_prefix else {
            return self.mode;
        };
        let prefix = prefix.to_ascii_lowercase();
        self.keys
            .iter()
            .filter(|(k, _)| !k.is_empty() && prefix.starts_with(&k.to_ascii_lowercase()))
            .max_by_key(|(k, _)| k.len())
            .map_or(self.mode, |(_, o)| o.mode)
    }
}

impl super::Settings {
    pub(super) fn validate_engine(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let e = &self.engine;
        for k in e.keys.keys() {
            if k.len() < 4 {
                return bad(format!(
                    "engine.keys.\"{k}\": give at least 4 characters of the key prefix \
                     (see `colloquy keys list`)"
                ));
            }
        }
        let relayed =
            e.mode == EngineMode::Relay || e.keys.values().any(|o| o.mode == EngineMode::Relay);
        let r = &e.relay;
        if let Some(url) = &r.url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return bad(format!(
                    "engine.relay.url must start with ws:// or wss:// (got `{url}`)"
                ));
            }
        } else if relayed {
            return bad(
                "engine mode `relay` needs engine.relay.url, e.g. wss://api.hume.ai/v0/evi/chat"
                    .into(),
            );
        }
        for (name, secs) in [
            ("connect_timeout_secs", r.connect_timeout_secs),
            ("idle_timeout_secs", r.idle_timeout_secs),
        ] {
            if secs == 0 {
                return bad(format!("engine.relay.{name} must be at least 1 (got 0)"));
            }
        }
        let piped = e.mode == EngineMode::Pipeline
            || e.keys.values().any(|o| o.mode == EngineMode::Pipeline);
        if piped && e.pipeline.llm.is_none() {
            return bad(
                "engine mode `pipeline` needs [engine.pipeline.llm] (base_url and model of an \
                 OpenAI-compatible chat-completions service, e.g. http://127.0.0.1:11434/v1)"
                    .into(),
            );
        }
        let p = &e.pipeline;
        for (name, svc) in [("asr", &p.asr), ("llm", &p.llm), ("tts", &p.tts)] {
            if let Some(svc) = svc {
                if !(svc.base_url.starts_with("http://") || svc.base_url.starts_with("https://")) {
                    return bad(format!(
                        "engine.pipeline.{name}.base_url must start with http:// or https:// (got `{}`)",
                        svc.base_url
                    ));
                }
                if svc.timeout_secs == 0 {
                    return bad(format!(
                        "engine.pipeline.{name}.timeout_secs must be at least 1"
                    ));
                }
            }
        }
        let x = &e.expression;
        if let Some(url) = &x.url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return bad(format!(
                    "engine.expression.url must start with ws:// or wss:// (got `{url}`)"
                ));
            }
        }
        for (name, secs) in [
            ("connect_timeout_secs", x.connect_timeout_secs),
            ("timeout_secs", x.timeout_secs),
        ] {
            if secs == 0 {
                return bad(format!(
                    "engine.expression.{name} must be at least 1 (got 0)"
                ));
            }
        }
        if !(0.0..=1.0).contains(&p.vad_threshold) {
            return bad(format!(
                "engine.pipeline.vad_threshold must be within 0-1 (got {})",
                p.vad_threshold
            ));
        }
        if p.vad_silence_ms == 0 {
            return bad("engine.pipeline.vad_silence_ms must be at least 1 (got 0)".into());
        }
        Ok(())
    }
}
