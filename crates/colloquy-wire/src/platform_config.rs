//! Wire types of the EVI platform API's configs (spec `evi-platform.md` §4): the posted
//! config with every nested spec, and `ReturnConfig` with every nested return type.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

use crate::enums::UnknownValue;
use crate::platform::{PromptExpansionSpec, ReturnPrompt, ReturnUserDefinedTool, ToolType};

wire_enum! {
    /// `evi_version` accepted on writes (EVI 1 and 2 are retired).
    EviVersion { V3 = "3", V4Mini = "4-mini" }
}

wire_enum! {
    /// `model_provider` of the supplemental language model.
    ModelProvider {
        Groq = "GROQ",
        OpenAi = "OPEN_AI",
        Fireworks = "FIREWORKS",
        Anthropic = "ANTHROPIC",
        CustomLanguageModel = "CUSTOM_LANGUAGE_MODEL",
        Google = "GOOGLE",
        HumeAi = "HUME_AI",
        AmazonBedrock = "AMAZON_BEDROCK",
        Perplexity = "PERPLEXITY",
        Sambanova = "SAMBANOVA",
        Cerebras = "CEREBRAS",
        XAi = "X_AI",
    }
}

wire_enum! {
    /// Built-in tools.
    BuiltinToolName { WebSearch = "web_search", HangUp = "hang_up" }
}

wire_enum! {
    /// Chat webhook events.
    WebhookEventType { ChatStarted = "chat_started", ChatEnded = "chat_ended", ToolCall = "tool_call" }
}

wire_enum! {
    /// Where a voice comes from: Hume's shared library or the account's own voices.
    VoiceProvider { HumeAi = "HUME_AI", CustomVoice = "CUSTOM_VOICE" }
}

/// An optional whole number, also when written with a zero fraction (`807.0`), as JSON
/// Schema counts integers.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
        _ => Err(D::Error::custom(format!(
            "invalid value: {n}, expected a whole number"
        ))),
    }
}

/// `PostedConfigPrompt`: an existing prompt (`id`, optionally `version`) or a new one
/// (`text`), not both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedConfigPrompt {
    /// An existing prompt of the account (UUID).
    #[schema(format = Uuid, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub id: Option<String>,
    /// Its version; absent: always the latest.
    #[schema(minimum = 0, maximum = 2147483647)]
    #[serde(default, deserialize_with = "whole_number")]
    pub version: Option<i64>,
    /// The text of a new prompt, created for this config and named after it.
    pub text: Option<String>,
    /// Prompt expansion of the new prompt (with `text` only).
    pub prompt_expansion: Option<PromptExpansionSpec>,
}

/// `VoiceRef`: a voice by `id` or by `name`, not both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedVoice {
    /// The voice's id.
    pub id: Option<String>,
    /// The voice's name.
    pub name: Option<String>,
    /// Default `CUSTOM_VOICE`; library voices need `HUME_AI`.
    pub provider: Option<VoiceProvider>,
}

/// `PostedLanguageModel`: the supplemental language model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedLanguageModel {
    /// Who serves the model.
    pub model_provider: Option<ModelProvider>,
    /// The model (or, with `CUSTOM_LANGUAGE_MODEL`, its endpoint URL).
    pub model_resource: Option<String>,
    /// Sampling temperature, 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub temperature: Option<f64>,
}

/// `PostedEllmModel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedEllmModel {
    /// Whether the eLLM may answer briefly; a new config defaults to false, a new version
    /// without it keeps the previous version's value.
    pub allow_short_responses: Option<bool>,
}

/// `PostedUserDefinedToolSpec`: a tool of the account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedUserDefinedToolSpec {
    /// The tool's id (UUID).
    #[schema(format = Uuid, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub id: String,
    /// Its version; absent: always the latest.
    #[schema(minimum = 0, maximum = 2147483647)]
    #[serde(default, deserialize_with = "whole_number")]
    pub version: Option<i64>,
}

/// `PostedBuiltinTool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedBuiltinTool {
    /// Which built-in tool.
    pub name: BuiltinToolName,
    /// Given to the model instead of a result if the tool fails.
    pub fallback_content: Option<String>,
}

/// `PostedEventMessageSpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedEventMessageSpec {
    /// Whether the message is sent.
    pub enabled: bool,
    /// What EVI says; absent: EVI composes it.
    pub text: Option<String>,
}

/// `PostedEventMessageSpecs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedEventMessageSpecs {
    /// Said when a chat starts.
    pub on_new_chat: Option<PostedEventMessageSpec>,
    /// Said when the inactivity timeout fires.
    pub on_inactivity_timeout: Option<PostedEventMessageSpec>,
    /// Said when the maximum duration is reached.
    pub on_max_duration_timeout: Option<PostedEventMessageSpec>,
}

/// `PostedTimeoutSpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedTimeoutSpec {
    /// Whether the timeout applies.
    pub enabled: bool,
    /// Seconds, 30 to 1800.
    #[schema(minimum = 30, maximum = 1800)]
    #[serde(default, deserialize_with = "whole_number")]
    pub duration_secs: Option<i64>,
}

/// `PostedTimeoutSpecs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedTimeoutSpecs {
    /// No user message for this long ends the chat (default 120 s).
    pub inactivity: Option<PostedTimeoutSpec>,
    /// The chat ends after this long (default 1800 s).
    pub max_duration: Option<PostedTimeoutSpec>,
}

/// `PostedNudgeSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedNudgeSpec {
    /// Whether EVI nudges a silent user.
    pub enabled: Option<bool>,
    /// Seconds of silence before a nudge, 1 to 1800.
    #[schema(minimum = 1, maximum = 1800)]
    #[serde(default, deserialize_with = "whole_number")]
    pub interval_secs: Option<i64>,
}

/// `PostedInterruptionSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedInterruptionSpec {
    /// How long the user must speak over the assistant to interrupt it, 50 to 2000 ms.
    #[schema(minimum = 50, maximum = 2000)]
    #[serde(default, deserialize_with = "whole_number")]
    pub min_interruption_ms: Option<i64>,
}

/// `PostedTurnDetectionSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedTurnDetectionSpec {
    /// Silence that ends the user's turn, 500 to 3000 ms.
    #[schema(minimum = 500, maximum = 3000)]
    #[serde(default, deserialize_with = "whole_number")]
    pub end_of_turn_silence_ms: Option<i64>,
    /// Audio kept from before detected speech, 0 to 1000 ms.
    #[schema(minimum = 0, maximum = 1000)]
    #[serde(default, deserialize_with = "whole_number")]
    pub prefix_padding_ms: Option<i64>,
    /// Confidence needed to treat audio as speech, 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub speech_detection_threshold: Option<f64>,
}

/// The pattern of [`PostedWebhookSpec::url`].
pub const WEBHOOK_URL_PATTERN: &str =
    r"^[hH][tT][tT][pP][sS]?://[^\s/?#@\x00-\x1f\x7f]+[^\s\x00-\x1f\x7f]*$";

/// `PostedWebhookSpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostedWebhookSpec {
    /// An `http://` or `https://` URL with a host.
    #[schema(
        max_length = 2048,
        pattern = r"^[hH][tT][tT][pP][sS]?://[^\s/?#@\x00-\x1f\x7f]+[^\s\x00-\x1f\x7f]*$"
    )]
    pub url: String,
    /// The events sent to it, at least one.
    #[schema(min_items = 1)]
    pub events: Vec<WebhookEventType>,
}

/// Declares the posted config types, which differ only in `name`.
macro_rules! posted_config {
    ($(#[$meta:meta])* $name:ident { $($head:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
        pub struct $name {
            $($head)*
            /// `3` or `4-mini`.
            pub evi_version: EviVersion,
            /// Description of this version.
            pub version_description: Option<String>,
            /// The system prompt.
            pub prompt: Option<PostedConfigPrompt>,
            /// The voice.
            pub voice: Option<PostedVoice>,
            /// The supplemental language model.
            pub language_model: Option<PostedLanguageModel>,
            /// The eLLM.
            pub ellm_model: Option<PostedEllmModel>,
            /// Tools of the account (each at most once; `null` items are skipped).
            pub tools: Option<Vec<Option<PostedUserDefinedToolSpec>>>,
            /// Built-in tools (each at most once; `null` items are skipped).
            pub builtin_tools: Option<Vec<Option<PostedBuiltinTool>>>,
            /// Event messages.
            pub event_messages: Option<PostedEventMessageSpecs>,
            /// Timeouts.
            pub timeouts: Option<PostedTimeoutSpecs>,
            /// Nudges.
            pub nudges: Option<PostedNudgeSpec>,
            /// Interruption.
            pub interruption: Option<PostedInterruptionSpec>,
            /// Turn detection.
            pub turn_detection: Option<PostedTurnDetectionSpec>,
            /// Webhooks (`null` items are skipped).
            pub webhooks: Option<Vec<Option<PostedWebhookSpec>>>,
        }
    };
}

posted_config! {
    /// `PostedConfig`: a new config (its version 0).
    PostedConfig {
        /// Name shared by all versions: 1 to 256 characters, not all blank.
        #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
        pub name: String,
    }
}

posted_config! {
    /// `PostedConfigVersion`: the next version of a config; it replaces every setting.
    PostedConfigVersion {}
}

/// `ReturnVoice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnVoice {
    /// Voice id.
    pub id: String,
    /// Voice name.
    pub name: String,
    /// Where the voice comes from.
    pub provider: VoiceProvider,
    /// Octave versions the voice works with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatible_octave_models: Option<Vec<String>>,
}

/// `ReturnLanguageModel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReturnLanguageModel {
    /// Who serves the model.
    pub model_provider: Option<ModelProvider>,
    /// The model (or a custom model's URL).
    pub model_resource: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
}

/// `ReturnEllmModel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnEllmModel {
    /// Whether the eLLM may answer briefly.
    pub allow_short_responses: bool,
}

/// `ReturnBuiltinTool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnBuiltinTool {
    /// `web_search` or `hang_up`.
    pub name: String,
    /// Always `BUILTIN`.
    pub tool_type: ToolType,
    /// Given to the model instead of a result if the tool fails.
    pub fallback_content: Option<String>,
}

/// `ReturnEventMessageSpec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnEventMessageSpec {
    /// Whether the message is sent.
    pub enabled: bool,
    /// What EVI says; `null`: EVI composes it.
    pub text: Option<String>,
}

/// `ReturnEventMessageSpecs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnEventMessageSpecs {
    /// Said when a chat starts.
    pub on_new_chat: Option<ReturnEventMessageSpec>,
    /// Said when the inactivity timeout fires.
    pub on_inactivity_timeout: Option<ReturnEventMessageSpec>,
    /// Said when the maximum duration is reached.
    pub on_max_duration_timeout: Option<ReturnEventMessageSpec>,
}

/// `ReturnTimeoutSpec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnTimeoutSpec {
    /// Whether the timeout applies.
    pub enabled: bool,
    /// Seconds.
    pub duration_secs: Option<i64>,
}

/// `ReturnTimeoutSpecs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnTimeoutSpecs {
    /// Inactivity timeout.
    pub inactivity: ReturnTimeoutSpec,
    /// Maximum duration.
    pub max_duration: ReturnTimeoutSpec,
}

/// `ReturnNudgeSpec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnNudgeSpec {
    /// Whether EVI nudges a silent user.
    pub enabled: bool,
    /// Seconds of silence before a nudge.
    pub interval_secs: Option<i64>,
}

/// `ReturnInterruptionSpec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnInterruptionSpec {
    /// Milliseconds.
    pub min_interruption_ms: Option<i64>,
}

/// `ReturnTurnDetectionSpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReturnTurnDetectionSpec {
    /// Milliseconds.
    pub end_of_turn_silence_ms: Option<i64>,
    /// Milliseconds.
    pub prefix_padding_ms: Option<i64>,
    /// 0 to 1.
    pub speech_detection_threshold: Option<f64>,
}

/// `ReturnWebhookSpec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReturnWebhookSpec {
    /// Where events are posted.
    pub url: String,
    /// Which events.
    pub events: Vec<WebhookEventType>,
}

/// `ReturnConfig`: one version of a config, its references resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReturnConfig {
    /// Config id (UUID).
    pub id: String,
    /// Version number.
    pub version: i64,
    /// Description of this version.
    pub version_description: Option<String>,
    /// Name shared by all versions.
    pub name: String,
    /// Epoch ms when the first version was created.
    pub created_on: i64,
    /// Epoch ms when this version was created (or its description last changed).
    pub modified_on: i64,
    /// `3` or `4-mini`.
    pub evi_version: String,
    /// The prompt (`version_type` `LATEST`: its newest version now).
    pub prompt: Option<ReturnPrompt>,
    /// The voice.
    pub voice: Option<ReturnVoice>,
    /// The supplemental language model.
    pub language_model: Option<ReturnLanguageModel>,
    /// The eLLM.
    pub ellm_model: ReturnEllmModel,
    /// Tools (`version_type` `LATEST`: their newest version now).
    pub tools: Vec<ReturnUserDefinedTool>,
    /// Built-in tools.
    pub builtin_tools: Vec<ReturnBuiltinTool>,
    /// Event messages; the ones not set are disabled.
    pub event_messages: ReturnEventMessageSpecs,
    /// Timeouts, defaults filled in.
    pub timeouts: ReturnTimeoutSpecs,
    /// Nudges, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nudges: Option<ReturnNudgeSpec>,
    /// Interruption, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption: Option<ReturnInterruptionSpec>,
    /// Turn detection, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_detection: Option<ReturnTurnDetectionSpec>,
    /// Webhooks, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<ReturnWebhookSpec>>,
}

/// `ReturnPagedConfigs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReturnPagedConfigs {
    /// Zero-based page index, as requested.
    pub page_number: i64,
    /// Page size, as requested.
    pub page_size: i64,
    /// Pages in the whole listing.
    pub total_pages: i64,
    /// The page's config versions.
    pub configs_page: Vec<ReturnConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's example (§4.3), which both SDKs parse.
    const EXAMPLE: &str = r#"{"id":"1b60e1a0-cc59-424a-8d2c-189d354db3f3","version":1,"version_description":"adds tool",
 "name":"Weather Assistant Config","created_on":1715275452390,"modified_on":1722642242998,"evi_version":"3",
 "prompt":{"id":"af699d45-2985-42cc-91b9-af9e5da3bac5","version":0,"version_type":"FIXED","version_description":"",
   "name":"Weather Assistant Prompt","created_on":1715267200693,"modified_on":1715267200693,"text":"You are a weather assistant."},
 "voice":{"id":"5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c","name":"Ava Song","provider":"HUME_AI"},
 "language_model":{"model_provider":"ANTHROPIC","model_resource":"claude-sonnet-4-5-20250929","temperature":1.0},
 "ellm_model":{"allow_short_responses":false},
 "tools":[{"tool_type":"FUNCTION","id":"4442f3ea-9038-40e3-a2ce-1522b7de770f","version":0,"version_type":"LATEST",
   "name":"get_current_weather","created_on":1715266126705,"modified_on":1715266126705,
   "parameters":"{\"type\":\"object\",\"properties\":{\"location\":{\"type\":\"string\"}},\"required\":[\"location\"]}"}],
 "builtin_tools":[{"name":"hang_up","tool_type":"BUILTIN","fallback_content":null}],
 "event_messages":{"on_new_chat":{"enabled":true,"text":"Hi!"},"on_inactivity_timeout":{"enabled":false,"text":""},
   "on_max_duration_timeout":{"enabled":false,"text":""}},
 "timeouts":{"inactivity":{"enabled":true,"duration_secs":120},"max_duration":{"enabled":true,"duration_secs":1800}},
 "interruption":{"min_interruption_ms":300},
 "turn_detection":{"end_of_turn_silence_ms":800,"prefix_padding_ms":200,"speech_detection_threshold":0.5},
 "webhooks":[{"url":"https://example.com/hume-webhook","events":["chat_started","chat_ended","tool_call"]}]}"#;

    #[test]
    fn the_spec_example_round_trips() {
        let c: ReturnConfig = serde_json::from_str(EXAMPLE).unwrap();
        assert_eq!(c.tools[0].name, "get_current_weather");
        assert_eq!(c.voice.as_ref().unwrap().provider, VoiceProvider::HumeAi);
        let again: ReturnConfig =
            serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let json = serde_json::to_value(&c).unwrap();
        assert!(json.get("nudges").is_none(), "unset blocks are omitted");
    }

    #[test]
    fn a_posted_config_as_the_sdk_sends_it() {
        let c: PostedConfig = serde_json::from_str(
            r#"{"evi_version":"3","name":"n","prompt":{"id":"pid","version":0},
            "voice":{"name":"Ava Song","provider":"HUME_AI"},"tools":[{"id":"tid"},null],
            "timeouts":{"inactivity":{"enabled":true,"duration_secs":120},
            "max_duration":{"enabled":false}},"unknown":1}"#,
        )
        .unwrap();
        assert_eq!(c.evi_version, EviVersion::V3);
        assert_eq!(c.tools.as_ref().unwrap().len(), 2);
        let v: Result<PostedConfigVersion, _> = serde_json::from_str(r#"{"evi_version":"2"}"#);
        assert!(v
            .unwrap_err()
            .to_string()
            .contains("expected `3` or `4-mini`"));
    }
}
