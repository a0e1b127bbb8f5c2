//! Building chat-completions requests from an EVI session: variables in the system
//! prompt, history from the chat group's earlier events, `context` injection, and tools.
//!
//! * [`substitute_variables`] fills `{{name}}` placeholders from
//!   `session_settings.variables`.
//! * [`history_messages`] turns stored chat events ([`ReturnChatEvent`], oldest first)
//!   into messages, keeping only the last `event_limit` events ([`DEFAULT_EVENT_LIMIT`]).
//! * [`build_messages`] assembles system prompt + history + the current chat's turns,
//!   appending the `context` text to the last user message (as EVI does: "appended to the
//!   end of user messages"; a `temporary` context applies to one turn, a `persistent` one to
//!   every turn — the caller decides whether to pass it).
//! * [`tool_definitions`] converts `session_settings.tools` (EVI `Tool`s whose
//!   `parameters` is a stringified JSON schema) and enabled `builtin_tools` into function
//!   definitions; [`hang_up_tool`] is the built-in `hang_up`.

use std::collections::{BTreeMap, HashMap};

use colloquy_wire::socket::{tool_result_content, BuiltinTool, Tool};
use colloquy_wire::{EventType, ReturnChatEvent};
use serde_json::Value;

use crate::openai::{ChatMessage, ToolDefinition};

/// History events loaded when resuming, unless `event_limit` says otherwise.
pub const DEFAULT_EVENT_LIMIT: usize = 300;
/// Name of the built-in tool that ends the chat.
pub const HANG_UP_TOOL_NAME: &str = "hang_up";

/// Why the tools could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// A tool's `parameters` is not a JSON object (schema).
    #[error("tool `{name}`: `parameters` must be a stringified JSON schema object: {detail}")]
    BadParameters {
        /// The tool.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// Two tools share a name.
    #[error("tool `{0}` is defined twice")]
    Duplicate(String),
}

/// Replaces every `{{name}}` (spaces inside the braces allowed) whose `name` is in
/// `variables`: strings as they are, numbers and booleans in their JSON spelling.
/// Placeholders without a value are left unchanged.
pub fn substitute_variables(template: &str, variables: &BTreeMap<String, Value>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        let name = rest[open + 2..open + 2 + close].trim();
        out.push_str(&rest[..open]);
        match variables.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => out.push_str(&rest[open..open + 4 + close]),
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &rest[open + 4 + close..];
    }
    out.push_str(rest);
    out
}

/// The conversation in stored events (oldest first), as chat messages. Only the last
/// `event_limit` events are considered. User and assistant messages become `user` /
/// `assistant` messages (consecutive assistant sentences are joined into one message); a
/// `FUNCTION_CALL` with its `FUNCTION_CALL_RESPONSE` becomes an assistant tool call and its
/// tool result (a call without a recorded answer, or an answer without its call, is left
/// out, since the API rejects unpaired tool messages). Other events are skipped.
pub fn history_messages(events: &[ReturnChatEvent], event_limit: usize) -> Vec<ChatMessage> {
    let events = &events[events.len().saturating_sub(event_limit)..];
    // tool_call_id -> what the model was told
    let mut responses: HashMap<String, String> = HashMap::new();
    for e in events {
        if e.event_type == EventType::FunctionCallResponse {
            if let Some((id, told)) = response_of(e) {
                responses.insert(id, told);
            }
        }
    }
    let mut out: Vec<ChatMessage> = Vec::new();
    for e in events {
        let text = e.message_text.clone().unwrap_or_default();
        match e.event_type {
            EventType::UserMessage if !text.trim().is_empty() => out.push(ChatMessage::user(text)),
            EventType::AgentMessage if !text.trim().is_empty() => match out.last_mut() {
                Some(last)
                    if last.role == crate::openai::Role::Assistant
                        && last.tool_calls.is_empty() =>
                {
                    let content = last.content.get_or_insert_with(String::new);
                    content.push(' ');
                    content.push_str(text.trim());
                }
                _ => out.push(ChatMessage::assistant(text.trim())),
            },
            EventType::FunctionCall => {
                let Ok(call) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let (Some(id), Some(name)) = (
                    call.get("tool_call_id").and_then(Value::as_str),
                    call.get("name").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if let Some(result) = responses.remove(id) {
                    let args = call
                        .get("parameters")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    out.push(ChatMessage::assistant_tool_call(id, name, args));
                    out.push(ChatMessage::tool_result(id, result));
                }
            }
            _ => {}
        }
    }
    out
}

/// The call a `FUNCTION_CALL_RESPONSE` answered and what the model was told of it (the
/// client's message is the event's metadata; [`tool_result_content`]).
fn response_of(e: &ReturnChatEvent) -> Option<(String, String)> {
    let meta: Value = serde_json::from_str(e.metadata.as_deref()?).ok()?;
    let id = meta
        .get("tool_call_id")
        .and_then(Value::as_str)?
        .to_string();
    Some((id, tool_result_content(&meta)))
}

/// The full message list: the system prompt (with variables substituted; omitted when
/// empty), the history, then the current chat's `turns` (user and assistant messages,
/// tool calls and results so far, the latest user turn last). `context`, if given, is
/// appended to the last user message after a blank line.
pub fn build_messages(
    system_prompt: &str,
    variables: &BTreeMap<String, Value>,
    history: &[ChatMessage],
    turns: &[ChatMessage],
    context: Option<&str>,
) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(1 + history.len() + turns.len());
    let system = substitute_variables(system_prompt, variables);
    if !system.trim().is_empty() {
        out.push(ChatMessage::system(system));
    }
    out.extend_from_slice(history);
    out.extend_from_slice(turns);
    if let Some(context) = context.map(str::trim).filter(|c| !c.is_empty()) {
        let context = substitute_variables(context, variables);
        match out
            .iter_mut()
            .rev()
            .find(|m| m.role == crate::openai::Role::User)
        {
            Some(user) => {
                let content = user.content.get_or_insert_with(String::new);
                content.push_str("\n\n");
                content.push_str(&context);
            }
            None => out.push(ChatMessage::user(context)),
        }
    }
    out
}

/// The built-in `hang_up` tool: the model calls it to end the conversation.
pub fn hang_up_tool() -> ToolDefinition {
    ToolDefinition {
        name: HANG_UP_TOOL_NAME.to_string(),
        description: Some(
            "End the conversation and hang up. Call this when the user says goodbye or asks \
             to end the call, after saying goodbye yourself."
                .to_string(),
        ),
        parameters: serde_json::json!({"type": "object", "properties": {}}),
    }
}

/// Function definitions for the model: every `function` tool of `session_settings.tools`
/// (tools of type `builtin` there are skipped), then the enabled built-in tools this crate
/// implements (`hang_up`; others such as `web_search` are not offered).
pub fn tool_definitions(
    tools: &[Tool],
    builtin_tools: &[BuiltinTool],
) -> Result<Vec<ToolDefinition>, PromptError> {
    let mut out: Vec<ToolDefinition> = Vec::new();
    for tool in tools.iter().filter(|t| t.tool_type == "function") {
        let parameters: Value = if tool.parameters.trim().is_empty() {
            serde_json::json!({"type": "object", "properties": {}})
        } else {
            serde_json::from_str(&tool.parameters).map_err(|e| PromptError::BadParameters {
                name: tool.name.clone(),
                detail: e.to_string(),
            })?
        };
        if !parameters.is_object() {
            return Err(PromptError::BadParameters {
                name: tool.name.clone(),
                detail: "not an object".into(),
            });
        }
        if out.iter().any(|d| d.name == tool.name) {
            return Err(PromptError::Duplicate(tool.name.clone()));
        }
        out.push(ToolDefinition {
            name: tool.name.clone(),
            description: tool.description.clone(),
            parameters,
        });
    }
    if builtin_tools.iter().any(|b| b.name == HANG_UP_TOOL_NAME) {
        if out.iter().any(|d| d.name == HANG_UP_TOOL_NAME) {
            return Err(PromptError::Duplicate(HANG_UP_TOOL_NAME.into()));
        }
        out.push(hang_up_tool());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Role;
    use colloquy_wire::EventRole;

    fn vars() -> BTreeMap<String, Value> {
        serde_json::from_value(serde_json::json!({"name": "Ada", "age": 36, "vip": true})).unwrap()
    }

    #[test]
    fn substitutes_variables() {
        assert_eq!(
            substitute_variables(
                "Hi {{name}} ({{ age }}, vip={{vip}}), {{unknown}} {{",
                &vars()
            ),
            "Hi Ada (36, vip=true), {{unknown}} {{"
        );
        assert_eq!(
            substitute_variables("no placeholders", &vars()),
            "no placeholders"
        );
    }

    fn event(t: EventType, text: &str, metadata: &str) -> ReturnChatEvent {
        ReturnChatEvent {
            id: "e".into(),
            chat_id: "c".into(),
            timestamp: 0,
            role: EventRole::User,
            event_type: t,
            message_text: Some(text.into()),
            emotion_features: Some(String::new()),
            metadata: Some(metadata.into()),
            related_event_id: None,
        }
    }

    #[test]
    fn history_from_events() {
        let call = r#"{"name":"get_weather","parameters":"{\"city\":\"Paris\"}","tool_call_id":"t1","tool_type":"function","response_required":true}"#;
        let orphan = r#"{"name":"x","parameters":"{}","tool_call_id":"t2","tool_type":"function","response_required":true}"#;
        let events = vec![
            event(EventType::UserMessage, "dropped by the limit", ""),
            event(EventType::SystemPrompt, "sys", ""),
            event(EventType::UserMessage, "What's the weather?", ""),
            event(EventType::AgentMessage, "Let me check.", ""),
            event(EventType::FunctionCall, call, ""),
            event(
                EventType::FunctionCallResponse,
                "Sunny",
                r#"{"tool_call_id":"t1","content":"Sunny"}"#,
            ),
            event(EventType::AgentMessage, "It is sunny.", ""),
            event(EventType::AgentMessage, "Anything else?", ""),
            event(EventType::FunctionCall, orphan, ""),
            event(EventType::UserMessage, "No thanks.", ""),
        ];
        let msgs = history_messages(&events, events.len() - 1);
        assert_eq!(
            msgs,
            vec![
                ChatMessage::user("What's the weather?"),
                ChatMessage::assistant("Let me check."),
                ChatMessage::assistant_tool_call("t1", "get_weather", "{\"city\":\"Paris\"}"),
                ChatMessage::tool_result("t1", "Sunny"),
                ChatMessage::assistant("It is sunny. Anything else?"),
                ChatMessage::user("No thanks."),
            ]
        );
        assert_eq!(
            history_messages(&events, 1),
            vec![ChatMessage::user("No thanks.")]
        );
        assert!(history_messages(&events, 0).is_empty());

        // A resumed chat's failed call: the model is told the error's content, never the
        // error itself, as in the live chat.
        let failed = vec![
            event(EventType::FunctionCall, call, ""),
            event(
                EventType::FunctionCallResponse,
                "upstream 504",
                r#"{"type":"tool_error","tool_call_id":"t1","error":"upstream 504","content":"No forecast now."}"#,
            ),
            event(EventType::FunctionCall, orphan, ""),
            event(
                EventType::FunctionCallResponse,
                "boom",
                r#"{"type":"tool_error","tool_call_id":"t2","error":"boom"}"#,
            ),
        ];
        let msgs = history_messages(&failed, 10);
        assert_eq!(msgs[1], ChatMessage::tool_result("t1", "No forecast now."));
        assert_eq!(
            msgs[3],
            ChatMessage::tool_result("t2", "The tool call failed.")
        );
    }

    #[test]
    fn builds_messages_with_context() {
        let history = vec![
            ChatMessage::user("earlier"),
            ChatMessage::assistant("reply"),
        ];
        let turns = vec![ChatMessage::user("now")];
        let msgs = build_messages(
            "You help {{name}}.",
            &vars(),
            &history,
            &turns,
            Some("User is {{age}}."),
        );
        assert_eq!(msgs[0], ChatMessage::system("You help Ada."));
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[3].role, Role::User);
        assert_eq!(msgs[3].content.as_deref(), Some("now\n\nUser is 36."));
        assert_eq!(
            msgs[1].content.as_deref(),
            Some("earlier"),
            "only the last user message"
        );
        let bare = build_messages("  ", &vars(), &[], &[], None);
        assert!(bare.is_empty());
    }

    #[test]
    fn converts_tools() {
        let tool = |t: &str, name: &str, params: &str| Tool {
            tool_type: t.into(),
            name: name.into(),
            parameters: params.into(),
            description: Some("d".into()),
            fallback_content: None,
        };
        let hang_up = BuiltinTool {
            name: "hang_up".into(),
            fallback_content: None,
        };
        let web = BuiltinTool {
            name: "web_search".into(),
            fallback_content: None,
        };
        let defs = tool_definitions(
            &[
                tool(
                    "function",
                    "get_weather",
                    r#"{"type":"object","properties":{"city":{"type":"string"}}}"#,
                ),
                tool("builtin", "web_search", ""),
            ],
            &[web.clone(), hang_up.clone()],
        )
        .unwrap();
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[0].name, "get_weather");
        assert_eq!(defs[0].parameters["properties"]["city"]["type"], "string");
        assert_eq!(defs[1], hang_up_tool());
        assert!(matches!(
            tool_definitions(&[tool("function", "f", "{not json")], &[]),
            Err(PromptError::BadParameters { name, .. }) if name == "f"
        ));
        assert!(tool_definitions(&[tool("function", "f", "[1]")], &[]).is_err());
        assert_eq!(
            tool_definitions(&[tool("function", "hang_up", "{}")], &[hang_up]),
            Err(PromptError::Duplicate("hang_up".into()))
        );
        assert!(tool_definitions(&[], &[web]).unwrap().is_empty());
    }
}
