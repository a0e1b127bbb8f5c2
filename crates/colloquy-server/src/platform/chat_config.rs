//! A config as a chat uses it: `config_id` (and `config_version`) of the chat socket resolved
//! at connect into a [`ChatConfig`], before the chat is stored.
//!
//! Resolution reads the config version as `GET /v0/evi/configs/{id}/version/{v}` would
//! ([`Configs::shape`]): a prompt referenced without a version is its newest version now,
//! so the chat keeps the prompt it started with. Nothing is cached: every server sharing
//! the database sees a new version at the next connect. The config version is one indexed
//! read; the prompt and tools it references are then read concurrently, so a connect waits
//! for two reads one after the other whatever the config holds (measured by
//! `connect_latency`, `docs/benchmarks.md`).

use super::configs::Configs;
use super::validation::StoredConfig;
use super::{Kind, Resolver};
use crate::error::ApiError;
use crate::state::AppState;
use colloquy_storage::{ResourceKind, ResourceRef};
use colloquy_wire::socket::{BuiltinTool, Tool};
use colloquy_wire::{
    ReturnConfig, ReturnEventMessageSpec, ReturnLanguageModel, ReturnTimeoutSpec,
    ReturnTurnDetectionSpec, ReturnVoice, ReturnWebhookSpec,
};
use std::time::Duration;
use uuid::Uuid;

/// What `event_messages.on_new_chat` says when enabled without `text`.
pub const DEFAULT_GREETING: &str = "Hello! How can I help you today?";
/// What `event_messages.on_inactivity_timeout` says when enabled without `text`.
pub const DEFAULT_INACTIVITY_MESSAGE: &str = "Are you still there?";
/// What `event_messages.on_max_duration_timeout` says when enabled without `text`.
pub const DEFAULT_MAX_DURATION_MESSAGE: &str =
    "We have reached the time limit for this conversation. Goodbye!";

/// The resolved config version of a chat: what shapes it.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// The config's id.
    pub id: Uuid,
    /// The resolved version (the newest at connect when none was asked for).
    pub version: i64,
    /// The prompt's text (with its `{{variables}}` unsubstituted).
    pub prompt: Option<String>,
    /// The user-defined tools, as `session_settings.tools` would give them.
    pub tools: Vec<Tool>,
    /// The built-in tools.
    pub builtin_tools: Vec<BuiltinTool>,
    /// The voice.
    pub voice: Option<ReturnVoice>,
    /// The language model (model name and temperature).
    pub language_model: Option<ReturnLanguageModel>,
    /// Said when the chat opens (`event_messages.on_new_chat`), if enabled.
    pub greeting: Option<String>,
    /// Said when the user has been inactive for the timeout, if enabled; the chat ends
    /// after a grace period unless the user answers.
    pub on_inactivity: Option<String>,
    /// Said before the chat ends at its maximum duration, if enabled.
    pub on_max_duration: Option<String>,
    /// The inactivity timeout; `None`: disabled.
    pub inactivity: Option<Duration>,
    /// The maximum duration; `None`: disabled (the server's `chat.max_duration_secs` still
    /// bounds the chat).
    pub max_duration: Option<Duration>,
    /// How long the user may stay silent after the assistant spoke before it nudges them.
    pub nudge_interval: Option<Duration>,
    /// Speech shorter than this does not interrupt the assistant.
    pub min_interruption_ms: Option<u32>,
    /// Turn detection (end-of-turn silence, threshold, padding).
    pub turn_detection: Option<ReturnTurnDetectionSpec>,
    /// Where the chat's events are posted (`crate::webhooks`).
    pub webhooks: Vec<ReturnWebhookSpec>,
}

/// Why a config could not be resolved.
#[derive(Debug)]
pub enum Unresolved {
    /// No such config (or version) for this account; the message says which.
    NotFound(String),
    /// The store failed.
    Store(ApiError),
}

/// Resolves `config_id` (version `version`, or the newest) of `user_id`'s account.
pub async fn resolve(
    state: &AppState,
    user_id: Uuid,
    id: Uuid,
    version: Option<i64>,
) -> Result<ChatConfig, Unresolved> {
    let stored = state
        .store
        .get_resource_version(user_id, ResourceKind::Config, id, version)
        .await
        .map_err(|e| Unresolved::Store(e.into()))?;
    let Some(stored) = stored else {
        let msg = match version {
            Some(v) => format!(
                "config {id} has no version {v} in this account; connect with a version listed \
                 by GET /v0/evi/configs/{id}, or without config_version for the newest"
            ),
            None => format!(
                "config {id} was not found in this account; create it with POST \
                 /v0/evi/configs or pass the id of one listed by GET /v0/evi/configs"
            ),
        };
        return Err(Unresolved::NotFound(msg));
    };
    let mut refs = Resolver::new(state, user_id);
    // The prompt and tools it references, read at once rather than one after another.
    let body: StoredConfig = super::stored_body(&stored).map_err(Unresolved::Store)?;
    let prompt = body.prompt.iter().map(|r| (ResourceKind::Prompt, r));
    let tools = body.tools.iter().map(|r| (ResourceKind::Tool, r));
    let wanted = prompt
        .chain(tools)
        .map(|(kind, r)| ResourceRef {
            kind,
            id: r.id,
            version: r.version,
        })
        .collect();
    refs.prefetch(wanted).await.map_err(Unresolved::Store)?;
    let config = Configs::shape(&mut refs, stored)
        .await
        .map_err(Unresolved::Store)?;
    Ok(ChatConfig::from_config(config))
}

/// The text of an enabled event message (its default when it has none).
fn message(spec: Option<&ReturnEventMessageSpec>, default: &str) -> Option<String> {
    let spec = spec.filter(|s| s.enabled)?;
    Some(match spec.text.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => default.to_string(),
    })
}

fn timeout(spec: &ReturnTimeoutSpec) -> Option<Duration> {
    let secs = spec.duration_secs.filter(|_| spec.enabled)?;
    Some(Duration::from_secs(secs.max(0) as u64))
}

impl ChatConfig {
    /// What a config version (as read back) does to a chat.
    pub fn from_config(c: ReturnConfig) -> Self {
        let events = &c.event_messages;
        Self {
            id: Uuid::parse_str(&c.id).unwrap_or_default(),
            version: c.version,
            prompt: c.prompt.map(|p| p.text).filter(|t| !t.trim().is_empty()),
            tools: c
                .tools
                .into_iter()
                .map(|t| Tool {
                    tool_type: "function".into(),
                    name: t.name,
                    parameters: t.parameters,
                    description: t.description,
                    fallback_content: t.fallback_content,
                })
                .collect(),
            builtin_tools: c
                .builtin_tools
                .into_iter()
                .map(|b| BuiltinTool {
                    name: b.name,
                    fallback_content: b.fallback_content,
                })
                .collect(),
            voice: c.voice,
            language_model: c.language_model,
            greeting: message(events.on_new_chat.as_ref(), DEFAULT_GREETING),
            on_inactivity: message(
                events.on_inactivity_timeout.as_ref(),
                DEFAULT_INACTIVITY_MESSAGE,
            ),
            on_max_duration: message(
                events.on_max_duration_timeout.as_ref(),
                DEFAULT_MAX_DURATION_MESSAGE,
            ),
            inactivity: timeout(&c.timeouts.inactivity),
            max_duration: timeout(&c.timeouts.max_duration),
            nudge_interval: c
                .nudges
                .as_ref()
                .filter(|n| n.enabled)
                .and_then(|n| n.interval_secs)
                .map(|s| Duration::from_secs(s.max(1) as u64)),
            min_interruption_ms: c
                .interruption
                .as_ref()
                .and_then(|i| i.min_interruption_ms)
                .map(|ms| ms.clamp(0, u32::MAX as i64) as u32),
            turn_detection: c.turn_detection,
            webhooks: c.webhooks.unwrap_or_default(),
        }
    }

    /// The model name the config asks for (`language_model.model_resource`).
    pub fn model(&self) -> Option<&str> {
        self.language_model
            .as_ref()
            .and_then(|m| m.model_resource.as_deref())
            .filter(|m| !m.is_empty())
    }

    /// The sampling temperature the config asks for.
    pub fn temperature(&self) -> Option<f32> {
        self.language_model
            .as_ref()
            .and_then(|m| m.temperature)
            .map(|t| t as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ChatConfig {
        let c: ReturnConfig = serde_json::from_str(json).unwrap();
        ChatConfig::from_config(c)
    }

    const BASE: &str = r#"{"id":"1b60e1a0-cc59-424a-8d2c-189d354db3f3","version":3,
        "name":"c","created_on":1,"modified_on":2,"evi_version":"3",
        "ellm_model":{"allow_short_responses":true},"tools":[],"builtin_tools":[],
        "event_messages":{"on_new_chat":{"enabled":true,"text":""},
          "on_inactivity_timeout":{"enabled":false,"text":"hello?"},
          "on_max_duration_timeout":{"enabled":true,"text":"Bye now."}},
        "timeouts":{"inactivity":{"enabled":false,"duration_secs":60},
          "max_duration":{"enabled":true,"duration_secs":300}},
        "nudges":{"enabled":true,"interval_secs":7},
        "interruption":{"min_interruption_ms":400},
        "language_model":{"model_provider":"OPEN_AI","model_resource":"gpt-x","temperature":0.25}}"#;

    #[test]
    fn event_messages_timeouts_and_model() {
        let c = config(BASE);
        assert_eq!(c.version, 3);
        assert_eq!(c.greeting.as_deref(), Some(DEFAULT_GREETING));
        assert_eq!(c.on_inactivity, None, "disabled, even with text");
        assert_eq!(c.on_max_duration.as_deref(), Some("Bye now."));
        assert_eq!(c.inactivity, None);
        assert_eq!(c.max_duration, Some(Duration::from_secs(300)));
        assert_eq!(c.nudge_interval, Some(Duration::from_secs(7)));
        assert_eq!(c.min_interruption_ms, Some(400));
        assert_eq!(c.model(), Some("gpt-x"));
        assert_eq!(c.temperature(), Some(0.25));
        assert!(c.webhooks.is_empty());
    }
}
