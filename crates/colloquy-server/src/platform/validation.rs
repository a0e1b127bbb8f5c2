//! Checks of posted prompts, tools and configs beyond their JSON types (which
//! [`super::parse_body`] checks), each failure a `400` naming the field and what it accepts.

use crate::error::ApiError;
use colloquy_storage::{ResourceKind, ResourceRef};
use colloquy_wire::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Labeled, MAX_VERSION};

/// What the OpenAPI document cannot state: two fields that exclude each other, or a value
/// repeated.
pub const INVALID_COMBINATION: &str = "invalid_combination";

pub(crate) fn combination(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        code: INVALID_COMBINATION,
        message: message.into(),
    }
}

/// Whitespace as JSON Schema's `\s` has it (ECMAScript: Unicode's White_Space but for
/// U+0085, plus U+FEFF), so that the server and the OpenAPI patterns agree.
fn space(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}'
}

/// ASCII control characters (`\x00-\x1f`, `\x7f`).
fn control(c: char) -> bool {
    c < ' ' || c == '\x7f'
}

fn blank(s: &str) -> bool {
    s.chars().all(space)
}

/// A prompt, tool or config name: 1 to 256 characters, not all blank.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(ApiError::invalid(format!(
            "{field} must be at most {MAX_NAME_CHARS} characters long (got {n})"
        )));
    }
    if blank(name) {
        return Err(ApiError::invalid(format!(
            "{field} must not be empty or blank"
        )));
    }
    Ok(())
}

/// A tool's name, the function name the model calls: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn check_tool_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "name must be 1 to 64 characters among a-z, A-Z, 0-9, `_` and `-` \
             (^[a-zA-Z0-9_-]{{1,64}}$), as the model calls it (got {name:?})"
        )))
    }
}

/// A tool's `parameters`: a string holding a JSON (Schema) object.
pub fn check_parameters(parameters: &str) -> Result<(), ApiError> {
    let problem = match serde_json::from_str::<serde_json::Value>(parameters) {
        Ok(serde_json::Value::Object(_)) => return Ok(()),
        Ok(other) => format!("it is JSON, but not an object (got {other})"),
        Err(e) => format!("it is not JSON: {e}"),
    };
    Err(ApiError::BadRequest {
        code: "invalid_json",
        message: format!(
            "parameters must be a JSON Schema object written as a string, such as \
             \"{{\\\"type\\\": \\\"object\\\", \\\"properties\\\": {{}}}}\"; {problem}"
        ),
    })
}

/// A reference (`prompt.id`, `tools[0].id`) that names no prompt or tool of the account.
pub fn unknown_reference(field: &str, r: ResourceRef) -> ApiError {
    let what = match r.kind {
        ResourceKind::Tool => "tool",
        _ => "prompt",
    };
    let version = r.version.map_or(String::new(), |v| format!(" version {v}"));
    ApiError::BadRequest {
        code: "unknown_reference",
        message: format!(
            "{field}: no {what} {}{version} exists for this account (create it first with \
             POST /v0/evi/{what}s)",
            r.id
        ),
    }
}

fn range(field: &str, value: Option<i64>, lo: i64, hi: i64) -> Result<(), ApiError> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::invalid(format!(
            "{field} must be between {lo} and {hi} inclusive (got {v})"
        ))),
        _ => Ok(()),
    }
}

fn unit_range(field: &str, value: Option<f64>) -> Result<(), ApiError> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) => Err(ApiError::invalid(format!(
            "{field} must be between 0 and 1 inclusive (got {v})"
        ))),
        _ => Ok(()),
    }
}

fn uuid(field: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| ApiError::invalid(format!("{field} must be a UUID (got {raw:?})")))
}

/// A webhook URL: `http://` or `https://`, a host, no whitespace or control characters, at
/// most 2048 characters (the OpenAPI pattern
/// [`colloquy_wire::WEBHOOK_URL_PATTERN`]).
pub fn check_webhook_url(field: &str, url: &str) -> Result<(), ApiError> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        ""
    };
    let host_starts = rest
        .chars()
        .next()
        .is_some_and(|c| !(space(c) || control(c) || "/?#@".contains(c)));
    let n = url.chars().count();
    if host_starts && !rest.chars().any(|c| space(c) || control(c)) && n <= 2048 {
        return Ok(());
    }
    Err(ApiError::invalid(format!(
        "{field} must be an http:// or https:// URL with a host and no spaces or control \
         characters, at most 2048 characters (got {url:?})"
    )))
}

/// A reference as a config version stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRef {
    /// The prompt or tool.
    pub id: Uuid,
    /// Fixed version; `None`: the latest.
    pub version: Option<i64>,
}

/// A config version's body as stored: the posted settings checked, references by id, the
/// voice resolved, `allow_short_responses` settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredConfig {
    /// `3` or `4-mini`.
    pub evi_version: String,
    /// The prompt.
    pub prompt: Option<StoredRef>,
    /// The voice.
    pub voice: Option<ReturnVoice>,
    /// The supplemental language model.
    pub language_model: Option<ReturnLanguageModel>,
    /// The eLLM.
    pub ellm_model: ReturnEllmModel,
    /// Tools, in the posted order.
    pub tools: Vec<StoredRef>,
    /// Built-in tools, in the posted order.
    pub builtin_tools: Vec<ReturnBuiltinTool>,
    /// Event messages as posted.
    pub event_messages: Option<PostedEventMessageSpecs>,
    /// Timeouts as posted.
    pub timeouts: Option<PostedTimeoutSpecs>,
    /// Nudges.
    pub nudges: Option<ReturnNudgeSpec>,
    /// Interruption.
    pub interruption: Option<ReturnInterruptionSpec>,
    /// Turn detection.
    pub turn_detection: Option<ReturnTurnDetectionSpec>,
    /// Webhooks.
    pub webhooks: Option<Vec<ReturnWebhookSpec>>,
}

/// A new prompt to create with the config (`prompt: {text}`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrompt {
    /// Its id.
    pub id: Uuid,
    /// Its text.
    pub text: String,
    /// Its prompt expansion.
    pub prompt_expansion: Option<PromptExpansionSpec>,
}

/// A checked config version.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedConfig {
    /// What to store.
    pub stored: StoredConfig,
    /// What it references, with the field each came from.
    pub references: Labeled,
    /// The prompt to create with it.
    pub new_prompt: Option<NewPrompt>,
}

fn check_prompt(p: PostedConfigPrompt, refs: &mut Labeled) -> Result<Prompted, ApiError> {
    match (p.id, p.text) {
        (Some(_), Some(_)) => Err(combination(
            "prompt: give either id (an existing prompt, optionally with version) or text (a \
             new prompt), not both",
        )),
        (None, None) => Err(combination(
            "prompt: give id (an existing prompt, optionally with version) or text (a new \
             prompt)",
        )),
        (None, Some(text)) => {
            if p.version.is_some() {
                return Err(combination(
                    "prompt.version goes with prompt.id; a new prompt (text) is version 0",
                ));
            }
            Ok(Prompted::New(NewPrompt {
                id: Uuid::new_v4(),
                text,
                prompt_expansion: p.prompt_expansion,
            }))
        }
        (Some(id), None) => {
            if p.prompt_expansion.is_some() {
                return Err(combination(
                    "prompt.prompt_expansion applies to a new prompt (with text); set it on \
                     the prompt itself",
                ));
            }
            let id = uuid("prompt.id", &id)?;
            range("prompt.version", p.version, 0, MAX_VERSION)?;
            let r = ResourceRef {
                kind: ResourceKind::Prompt,
                id,
                version: p.version,
            };
            refs.push((r, "prompt.id".into()));
            Ok(Prompted::Existing(StoredRef {
                id,
                version: p.version,
            }))
        }
    }
}

enum Prompted {
    New(NewPrompt),
    Existing(StoredRef),
}

fn check_tools(
    tools: Vec<Option<PostedUserDefinedToolSpec>>,
    refs: &mut Labeled,
) -> Result<Vec<StoredRef>, ApiError> {
    let mut out: Vec<(usize, StoredRef)> = Vec::new();
    for (i, t) in tools.into_iter().enumerate() {
        let Some(t) = t else { continue };
        let field = format!("tools[{i}].id");
        let id = uuid(&field, &t.id)?;
        range(&format!("tools[{i}].version"), t.version, 0, MAX_VERSION)?;
        if let Some((j, _)) = out.iter().find(|(_, s)| s.id == id) {
            return Err(combination(format!(
                "tools[{i}].id repeats tools[{j}].id; list each tool once"
            )));
        }
        let r = ResourceRef {
            kind: ResourceKind::Tool,
            id,
            version: t.version,
        };
        refs.push((r, field));
        out.push((
            i,
            StoredRef {
                id,
                version: t.version,
            },
        ));
    }
    Ok(out.into_iter().map(|(_, s)| s).collect())
}

fn check_builtins(
    tools: Vec<Option<PostedBuiltinTool>>,
) -> Result<Vec<ReturnBuiltinTool>, ApiError> {
    let mut out: Vec<ReturnBuiltinTool> = Vec::new();
    for (i, t) in tools.into_iter().enumerate() {
        let Some(t) = t else { continue };
        if out.iter().any(|o| o.name == t.name.as_str()) {
            return Err(combination(format!(
                "builtin_tools[{i}].name repeats {}; list each built-in tool once",
                t.name
            )));
        }
        out.push(ReturnBuiltinTool {
            name: t.name.as_str().to_string(),
            tool_type: ToolType::Builtin,
            fallback_content: t.fallback_content,
        });
    }
    Ok(out)
}

fn check_timeouts(t: &PostedTimeoutSpecs) -> Result<(), ApiError> {
    for (name, spec) in [
        ("inactivity", &t.inactivity),
        ("max_duration", &t.max_duration),
    ] {
        if let Some(spec) = spec {
            let field = format!("timeouts.{name}.duration_secs");
            range(&field, spec.duration_secs, 30, 1800)?;
        }
    }
    Ok(())
}

fn check_webhooks(
    hooks: Vec<Option<PostedWebhookSpec>>,
) -> Result<Vec<ReturnWebhookSpec>, ApiError> {
    let mut out = Vec::new();
    for (i, h) in hooks.into_iter().enumerate() {
        let Some(h) = h else { continue };
        check_webhook_url(&format!("webhooks[{i}].url"), &h.url)?;
        if h.events.is_empty() {
            return Err(ApiError::invalid(format!(
                "webhooks[{i}].events must name at least one of chat_started, chat_ended, \
                 tool_call"
            )));
        }
        out.push(ReturnWebhookSpec {
            url: h.url,
            events: h.events,
        });
    }
    Ok(out)
}

/// Checks a posted config version. `previous_short_responses` is the newest version's
/// `allow_short_responses` (for a new version that omits it; `None` for a new config).
pub fn check_config(
    c: PostedConfigVersion,
    previous_short_responses: Option<bool>,
    resolved_voice: Option<ReturnVoice>,
) -> Result<CheckedConfig, ApiError> {
    let mut references = Labeled::new();
    let (prompt, new_prompt) = match c.prompt.map(|p| check_prompt(p, &mut references)) {
        None => (None, None),
        Some(Err(e)) => return Err(e),
        Some(Ok(Prompted::Existing(r))) => (Some(r), None),
        Some(Ok(Prompted::New(p))) => (
            Some(StoredRef {
                id: p.id,
                version: Some(0),
            }),
            Some(p),
        ),
    };
    // The voice is resolved in the voice library by the caller (it needs the account's
    // saved voices): `resolved_voice`.
    let voice = resolved_voice;
    if let Some(lm) = &c.language_model {
        unit_range("language_model.temperature", lm.temperature)?;
    }
    let tools = check_tools(c.tools.unwrap_or_default(), &mut references)?;
    let builtin_tools = check_builtins(c.builtin_tools.unwrap_or_default())?;
    if let Some(t) = &c.timeouts {
        check_timeouts(t)?;
    }
    if let Some(n) = &c.nudges {
        range("nudges.interval_secs", n.interval_secs, 1, 1800)?;
    }
    if let Some(i) = &c.interruption {
        range(
            "interruption.min_interruption_ms",
            i.min_interruption_ms,
            50,
            2000,
        )?;
    }
    if let Some(t) = &c.turn_detection {
        let f = "turn_detection.";
        range(
            &format!("{f}end_of_turn_silence_ms"),
            t.end_of_turn_silence_ms,
            500,
            3000,
        )?;
        range(
            &format!("{f}prefix_padding_ms"),
            t.prefix_padding_ms,
            0,
            1000,
        )?;
        unit_range(
            &format!("{f}speech_detection_threshold"),
            t.speech_detection_threshold,
        )?;
    }
    let webhooks = c.webhooks.map(check_webhooks).transpose()?;
    let allow_short_responses = c
        .ellm_model
        .and_then(|e| e.allow_short_responses)
        .or(previous_short_responses)
        .unwrap_or(false);
    let stored = StoredConfig {
        evi_version: c.evi_version.as_str().to_string(),
        prompt,
        voice,
        language_model: c.language_model.map(|lm| ReturnLanguageModel {
            model_provider: lm.model_provider,
            model_resource: lm.model_resource,
            temperature: lm.temperature,
        }),
        ellm_model: ReturnEllmModel {
            allow_short_responses,
        },
        tools,
        builtin_tools,
        event_messages: c.event_messages,
        timeouts: c.timeouts,
        nudges: c.nudges.map(|n| ReturnNudgeSpec {
            // Giving the block means nudging unless it says otherwise.
            enabled: n.enabled.unwrap_or(true),
            interval_secs: n.interval_secs,
        }),
        interruption: c.interruption.map(|i| ReturnInterruptionSpec {
            min_interruption_ms: i.min_interruption_ms,
        }),
        turn_detection: c.turn_detection.map(|t| ReturnTurnDetectionSpec {
            end_of_turn_silence_ms: t.end_of_turn_silence_ms,
            prefix_padding_ms: t.prefix_padding_ms,
            speech_detection_threshold: t.speech_detection_threshold,
        }),
        webhooks,
    };
    Ok(CheckedConfig {
        stored,
        references,
        new_prompt,
    })
}

/// A posted new config as its name and its first version.
pub fn split_config(c: PostedConfig) -> (String, PostedConfigVersion) {
    let version = PostedConfigVersion {
        evi_version: c.evi_version,
        version_description: c.version_description,
        prompt: c.prompt,
        voice: c.voice,
        language_model: c.language_model,
        ellm_model: c.ellm_model,
        tools: c.tools,
        builtin_tools: c.builtin_tools,
        event_messages: c.event_messages,
        timeouts: c.timeouts,
        nudges: c.nudges,
        interruption: c.interruption,
        turn_detection: c.turn_detection,
        webhooks: c.webhooks,
    };
    (c.name, version)
}

#[cfg(test)]
#[path = "validation_tests.rs"]
mod tests;
