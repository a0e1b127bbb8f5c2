//! Messages of the chat WebSocket `/v0/evi/chat` (spec §6.3–§6.5).
//!
//! Client messages are parsed one type at a time (see [`ClientMessage::parse`]) so that a bad
//! frame yields a precise error. Server messages serialize with their `type` tag.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `audio` of `session_settings`: the format of raw `audio_input` chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioConfiguration {
    /// Number of interleaved channels.
    pub channels: u32,
    /// Sample encoding; only `linear16` exists.
    #[serde(default = "AudioConfiguration::default_encoding")]
    pub encoding: String,
    /// Samples per second.
    pub sample_rate: u32,
    /// Optional codec name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
}

impl AudioConfiguration {
    fn default_encoding() -> String {
        "linear16".to_string()
    }
}

/// `context` of `session_settings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Text injected into the conversation.
    pub text: String,
    /// `persistent` or `temporary` (default).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub context_type: Option<String>,
}

/// A tool the assistant may call (`Tool`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// `builtin` or `function`.
    #[serde(rename = "type")]
    pub tool_type: String,
    /// Tool name.
    pub name: String,
    /// Stringified JSON schema of the parameters.
    pub parameters: String,
    /// What the tool does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What to say if the tool fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_content: Option<String>,
}

/// A built-in tool enabled for the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltinTool {
    /// `web_search` or `hang_up`.
    pub name: String,
    /// What to say if the tool fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_content: Option<String>,
}

/// `session_settings` (as a message and, flattened, as connect-time query parameters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionSettings {
    /// Format of raw audio input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioConfiguration>,
    /// Built-in tools to enable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin_tools: Option<Vec<BuiltinTool>>,
    /// Context injection; an explicit `null` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// Client-chosen session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_session_id: Option<String>,
    /// Cap on history events restored on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_limit: Option<u32>,
    /// Key for a third-party language model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_model_api_key: Option<String>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// System prompt for the assistant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Tools the assistant may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Prompt variables: string, number or boolean values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<BTreeMap<String, Value>>,
    /// Voice to speak with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_id: Option<String>,
}

/// `tool_response` from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResponse {
    /// The `tool_call_id` of the call being answered.
    pub tool_call_id: String,
    /// The tool's result.
    pub content: String,
    /// Tool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// `builtin` or `function`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_type: Option<String>,
}

/// `tool_error` from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolError {
    /// The `tool_call_id` of the call that failed.
    pub tool_call_id: String,
    /// Error text.
    pub error: String,
    /// Error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Content to speak instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// `builtin` or `function`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_type: Option<String>,
}

/// `user_input` / `assistant_input`: a text turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextInput {
    /// The text.
    pub text: String,
}

/// `audio_input`: one base64 audio chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioInput {
    /// Base64 audio data.
    pub data: String,
}

/// A client → server message (`PublishEvent`).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `audio_input`.
    AudioInput(AudioInput),
    /// `session_settings`.
    SessionSettings(SessionSettings),
    /// `user_input`.
    UserInput(TextInput),
    /// `assistant_input`.
    AssistantInput(TextInput),
    /// `tool_response`.
    ToolResponse(ToolResponse),
    /// `tool_error`.
    ToolError(ToolError),
    /// `pause_assistant_message`.
    PauseAssistantMessage,
    /// `resume_assistant_message`.
    ResumeAssistantMessage,
}

/// Why a text frame is not a valid client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON at all (`E0100`).
    NotJson(String),
    /// JSON of the wrong shape or an unknown `type` (`E0101`).
    BadShape(String),
}

impl ParseError {
    /// The socket error it is answered with.
    pub fn error(&self) -> crate::SocketError {
        match self {
            ParseError::NotJson(_) => crate::SocketError::InvalidJson,
            ParseError::BadShape(_) => crate::SocketError::InvalidMessage,
        }
    }

    /// The error code sent on the socket.
    pub fn code(&self) -> &'static str {
        self.error().code()
    }

    /// The error slug sent on the socket.
    pub fn slug(&self) -> &'static str {
        self.error().slug()
    }

    /// Human-readable explanation.
    pub fn message(&self) -> &str {
        match self {
            ParseError::NotJson(m) | ParseError::BadShape(m) => m,
        }
    }
}

/// The `type` values a client may send.
pub const CLIENT_MESSAGE_TYPES: [&str; 8] = [
    "audio_input",
    "session_settings",
    "user_input",
    "assistant_input",
    "tool_response",
    "tool_error",
    "pause_assistant_message",
    "resume_assistant_message",
];

impl ClientMessage {
    /// Parses one text frame, explaining precisely what is wrong when it is invalid.
    pub fn parse(text: &str) -> Result<(ClientMessage, Option<String>), ParseError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            ParseError::NotJson(format!(
                "the message is not valid JSON ({e}); send one JSON object per text frame"
            ))
        })?;
        let Value::Object(map) = value else {
            return Err(ParseError::BadShape(
                "the message must be a JSON object with a `type` field".to_string(),
            ));
        };
        let ty = match map.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => {
                return Err(ParseError::BadShape(
                    "the `type` field must be a string".to_string(),
                ))
            }
            None => {
                return Err(ParseError::BadShape(format!(
                    "the message has no `type` field; expected one of {}",
                    CLIENT_MESSAGE_TYPES.join(", ")
                )))
            }
        };
        let custom_session_id = match map.get("custom_session_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ParseError::BadShape(
                    "`custom_session_id` must be a string".to_string(),
                ))
            }
        };
        // A NUL can only come from a `\u0000` escape (JSON forbids raw control characters
        // in strings), so frames without one are not walked.
        if text.contains("\\u0000") && CLIENT_MESSAGE_TYPES.contains(&ty.as_str()) {
            if let Some(at) = nul_in(&map, &ty) {
                return Err(ParseError::BadShape(at.explain()));
            }
        }
        let value = Value::Object(map);
        fn body<T: serde::de::DeserializeOwned>(ty: &str, value: Value) -> Result<T, ParseError> {
            serde_json::from_value(value)
                .map_err(|e| ParseError::BadShape(format!("invalid `{ty}` message: {e}")))
        }
        let msg = match ty.as_str() {
            "audio_input" => ClientMessage::AudioInput(body(&ty, value)?),
            "session_settings" => ClientMessage::SessionSettings(body(&ty, value)?),
            "user_input" => ClientMessage::UserInput(body(&ty, value)?),
            "assistant_input" => ClientMessage::AssistantInput(body(&ty, value)?),
            "tool_response" => ClientMessage::ToolResponse(body(&ty, value)?),
            "tool_error" => ClientMessage::ToolError(body(&ty, value)?),
            "pause_assistant_message" => ClientMessage::PauseAssistantMessage,
            "resume_assistant_message" => ClientMessage::ResumeAssistantMessage,
            other => {
                return Err(ParseError::BadShape(format!(
                    "unknown message type `{other}`; expected one of {}",
                    CLIENT_MESSAGE_TYPES.join(", ")
                )))
            }
        };
        Ok((msg, custom_session_id))
    }

    /// The message's `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::AudioInput(_) => "audio_input",
            ClientMessage::SessionSettings(_) => "session_settings",
            ClientMessage::UserInput(_) => "user_input",
            ClientMessage::AssistantInput(_) => "assistant_input",
            ClientMessage::ToolResponse(_) => "tool_response",
            ClientMessage::ToolError(_) => "tool_error",
            ClientMessage::PauseAssistantMessage => "pause_assistant_message",
            ClientMessage::ResumeAssistantMessage => "resume_assistant_message",
        }
    }
}

/// Where a client message holds a NUL character (U+0000).
///
/// JSON allows `\u0000` in a string, but PostgreSQL cannot store it in text, so a message
/// carrying one is refused before anything of it is used: the other backend, SQLite, would
/// store it, and the two must agree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NulAt {
    /// In the string value at this path.
    Value(String),
    /// In a key of the object at this path.
    Key(String),
}

impl NulAt {
    fn explain(&self) -> String {
        match self {
            NulAt::Value(path) => format!(
                "`{path}` contains a NUL character (\\u0000), which cannot be stored; remove it"
            ),
            NulAt::Key(path) => format!(
                "a key of `{path}` contains a NUL character (\\u0000), which cannot be \
                 stored; remove it"
            ),
        }
    }
}

/// The first NUL character in any string of the message (object keys included), with its
/// path from the message type: `user_input.text`, `session_settings.tools[0].name`.
fn nul_in(map: &Map<String, Value>, ty: &str) -> Option<NulAt> {
    fn object(map: &Map<String, Value>, path: &str) -> Option<NulAt> {
        for (key, value) in map {
            if key.contains('\0') {
                return Some(NulAt::Key(path.to_string()));
            }
            let found = walk(value, &mut || format!("{path}.{key}"));
            if found.is_some() {
                return found;
            }
        }
        None
    }
    // The path is only spelled out once a NUL is found.
    fn walk(value: &Value, path: &mut dyn FnMut() -> String) -> Option<NulAt> {
        match value {
            Value::String(s) if s.contains('\0') => Some(NulAt::Value(path())),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, &mut || format!("{}[{i}]", path()))),
            Value::Object(map) => object(map, &path()),
            _ => None,
        }
    }
    object(map, ty)
}

/// `ChatMessage` inside `user_message` / `assistant_message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `user`, `assistant`, …
    pub role: String,
    /// The text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// On the assistant message of a turn that calls a tool: the `ToolCallMessage` (the
    /// `tool_call` message itself, `type` included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<Value>,
    /// On a message with role `tool`: the `tool_response` or `tool_error` that answered a
    /// call (`type` included: the SDKs' union is untagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_result: Option<Value>,
}

impl ChatMessage {
    /// A message of `role` saying `content`.
    pub fn text(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: Some(content.into()),
            tool_call: None,
            tool_result: None,
        }
    }
}

/// `Inference`: prosody scores, absent when no real source produced them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inference {
    /// `{ "scores": { <48 emotions> } }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prosody: Option<Value>,
}

/// `MillisecondInterval`: offsets from chat start, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MillisecondInterval {
    /// Start offset in ms.
    pub begin: i64,
    /// End offset in ms.
    pub end: i64,
}

/// A server → client message (`SubscribeEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message of every connection.
    ChatMetadata {
        /// The new chat's id.
        chat_id: String,
        /// The chat group it belongs to.
        chat_group_id: String,
        /// Id of the connection request.
        request_id: String,
    },
    /// A user turn (final unless `interim`).
    UserMessage {
        /// The message.
        message: ChatMessage,
        /// Prosody scores.
        models: Inference,
        /// Offsets from chat start.
        time: MillisecondInterval,
        /// True when it came from `user_input`.
        from_text: bool,
        /// True for interim transcripts.
        interim: bool,
        /// The language the speech recognizer detected (ISO 639-1), when it reports one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// An assistant sentence.
    AssistantMessage {
        /// Id shared with the `AGENT_MESSAGE` event and the `audio_output` chunks.
        id: String,
        /// The message.
        message: ChatMessage,
        /// Prosody scores.
        models: Inference,
        /// True when it came from `assistant_input`.
        from_text: bool,
        /// Quick-response flag.
        is_quick_response: bool,
        /// The language of the message (ISO 639-1), when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// The assistant finished its turn.
    AssistantEnd {},
    /// Prosody of the assistant's speech for one `assistant_message`.
    AssistantProsody {
        /// The `assistant_message.id` these scores belong to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Prosody scores.
        models: Inference,
    },
    /// A chunk of the assistant's speech.
    AudioOutput {
        /// The `assistant_message.id` this audio speaks.
        id: String,
        /// Position of the chunk within that message.
        index: u32,
        /// Base64 WAV.
        data: String,
    },
    /// The user talked over the assistant.
    UserInterruption {
        /// Unix timestamp (ms) of the interruption.
        time: i64,
    },
    /// The assistant calls a tool; the client answers with `tool_response` or `tool_error`.
    ToolCall {
        /// Tool name.
        name: String,
        /// Arguments, stringified JSON.
        parameters: String,
        /// Id the answer must carry.
        tool_call_id: String,
        /// `builtin` or `function`.
        tool_type: String,
        /// Whether the assistant waits for an answer.
        response_required: bool,
    },
    /// An error; the session goes on unless the socket is then closed.
    Error {
        /// `E…` for client errors, `I…` for internal faults.
        code: String,
        /// Stable slug.
        slug: String,
        /// What went wrong and what to do.
        message: String,
        /// The connection's request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
}

/// What the model is told of a `tool_response` or `tool_error` (`message`, `type`
/// included): the response's `content`; for an error, its `content` when the client gave
/// one ("text passed to the supplemental LLM in place of the tool call result"), else that
/// the tool failed (the `error` itself is "not exposed to the LLM").
pub fn tool_result_content(message: &Value) -> String {
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty());
    match (message.get("type").and_then(Value::as_str), content) {
        (Some("tool_response"), _) => content.unwrap_or_default().to_string(),
        (_, Some(c)) => c.to_string(),
        _ => "The tool call failed.".to_string(),
    }
}

impl ServerMessage {
    /// The `assistant_message` of a turn that calls a tool: `message.tool_call` is the call
    /// (the `tool_call` message that follows it, as JSON) and `content` is empty, because
    /// the words the assistant said in that turn went out as their own messages. `id` is
    /// the `FUNCTION_CALL` event's.
    pub fn assistant_tool_call(id: String, call: Value) -> Self {
        ServerMessage::AssistantMessage {
            id,
            message: ChatMessage {
                role: "assistant".into(),
                content: Some(String::new()),
                tool_call: Some(call),
                tool_result: None,
            },
            models: Inference::default(),
            from_text: false,
            is_quick_response: false,
            language: None,
        }
    }

    /// The `user_message` with role `tool` that carries a tool's answer: `content` is what
    /// the model is told, `message.tool_result` the `tool_response` / `tool_error` (as JSON,
    /// `type` included). `at` is the offset from the chat's start in ms.
    pub fn tool_result(result: Value, content: String, at: i64) -> Self {
        ServerMessage::UserMessage {
            message: ChatMessage {
                role: "tool".into(),
                content: Some(content),
                tool_call: None,
                tool_result: Some(result),
            },
            models: Inference::default(),
            time: MillisecondInterval { begin: at, end: at },
            from_text: true,
            interim: false,
            language: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sdk_frames() {
        let (m, _) = ClientMessage::parse(r#"{"text": "hello", "type": "user_input"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::UserInput(TextInput {
                text: "hello".into()
            })
        );
        let (m, csid) = ClientMessage::parse(
            r#"{"type":"session_settings","audio":{"channels":1,"encoding":"linear16","sample_rate":16000},"custom_session_id":"x"}"#,
        )
        .unwrap();
        assert_eq!(csid.as_deref(), Some("x"));
        match m {
            ClientMessage::SessionSettings(s) => assert_eq!(s.audio.unwrap().sample_rate, 16000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn explains_bad_frames() {
        let e = ClientMessage::parse("not json").unwrap_err();
        assert_eq!(e.code(), "E0100");
        let e = ClientMessage::parse(r#"{"type":"user_input"}"#).unwrap_err();
        assert_eq!(e.code(), "E0101");
        assert!(
            e.message().contains("missing field `text`"),
            "{}",
            e.message()
        );
        let e = ClientMessage::parse(r#"{"type":"dance"}"#).unwrap_err();
        assert!(e.message().contains("unknown message type `dance`"));
        let e = ClientMessage::parse("[1]").unwrap_err();
        assert_eq!(e.code(), "E0101");
    }

    #[test]
    fn refuses_nul_characters_naming_the_field() {
        let refused = |frame: &str| {
            let e = ClientMessage::parse(frame).unwrap_err();
            assert_eq!(e.code(), "E0101", "{frame}");
            assert_eq!(e.slug(), "invalid_message");
            e.message().to_string()
        };
        assert_eq!(
            refused(r#"{"type":"user_input","text":"a\u0000b"}"#),
            "`user_input.text` contains a NUL character (\\u0000), which cannot be stored; \
             remove it"
        );
        let m = refused(r#"{"type":"session_settings","system_prompt":"\u0000"}"#);
        assert!(
            m.starts_with("`session_settings.system_prompt` contains a NUL"),
            "{m}"
        );
        let m = refused(r#"{"type":"tool_response","tool_call_id":"t","content":"x\u0000"}"#);
        assert!(
            m.starts_with("`tool_response.content` contains a NUL"),
            "{m}"
        );
        let m = refused(
            r#"{"type":"session_settings","tools":[{"type":"function","name":"ok",
                "parameters":"{}"},{"type":"function","name":"b\u0000d","parameters":"{}"}]}"#,
        );
        assert!(
            m.starts_with("`session_settings.tools[1].name` contains a NUL"),
            "{m}"
        );
        let m = refused(r#"{"type":"session_settings","metadata":{"a":{"deep":["\u0000"]}}}"#);
        assert!(
            m.starts_with("`session_settings.metadata.a.deep[0]` contains a NUL"),
            "{m}"
        );
        // Object keys, and fields no message type knows.
        let m = refused(r#"{"type":"session_settings","variables":{"k\u0000":"v"}}"#);
        assert!(
            m.starts_with("a key of `session_settings.variables` contains a NUL"),
            "{m}"
        );
        let m = refused(r#"{"type":"user_input","text":"hi","extra\u0000":1}"#);
        assert!(m.starts_with("a key of `user_input` contains a NUL"), "{m}");
        let m = refused(r#"{"type":"user_input","text":"hi","custom_session_id":"\u0000"}"#);
        assert!(
            m.starts_with("`user_input.custom_session_id` contains"),
            "{m}"
        );
        let m = refused(r#"{"type":"audio_input","data":"AAAA\u0000"}"#);
        assert!(m.starts_with("`audio_input.data` contains"), "{m}");
    }

    #[test]
    fn other_escapes_and_control_characters_pass() {
        // An escaped backslash followed by `u0000` is not a NUL, nor is any other control
        // character.
        let (m, _) =
            ClientMessage::parse(r#"{"type":"user_input","text":"\\u0000 \u0001 \t"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::UserInput(TextInput {
                text: "\\u0000 \u{1} \t".into()
            })
        );
        // An unknown type is reported as such, whatever it carries.
        let e = ClientMessage::parse(r#"{"type":"dance","x":"\u0000"}"#).unwrap_err();
        assert!(e.message().contains("unknown message type `dance`"));
    }

    #[test]
    fn server_messages_have_type_tags() {
        let s = serde_json::to_string(&ServerMessage::AssistantEnd {}).unwrap();
        assert_eq!(s, r#"{"type":"assistant_end"}"#);
        let s = serde_json::to_value(ServerMessage::ChatMetadata {
            chat_id: "c".into(),
            chat_group_id: "g".into(),
            request_id: "r".into(),
        })
        .unwrap();
        assert_eq!(s["type"], "chat_metadata");
        let s = serde_json::to_value(ServerMessage::ToolCall {
            name: "weather".into(),
            parameters: "{}".into(),
            tool_call_id: "t".into(),
            tool_type: "function".into(),
            response_required: true,
        })
        .unwrap();
        assert_eq!(s["type"], "tool_call");
        let s = serde_json::to_value(ServerMessage::UserInterruption { time: 5 }).unwrap();
        assert_eq!(s["type"], "user_interruption");
        let s = serde_json::to_value(ServerMessage::AudioOutput {
            id: "a".into(),
            index: 0,
            data: "UklGRg==".into(),
        })
        .unwrap();
        assert_eq!(s["type"], "audio_output");
    }
}
