//! The chat-completion stream's pieces: [`LlmDelta`], and [`DeltaAssembler`], which turns
//! the JSON chunks of a streamed answer into deltas, assembling tool-call arguments that
//! arrive in fragments.

use std::collections::BTreeMap;

use serde_json::Value;

use super::snippet;

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmDelta {
    /// More answer text, as it arrives.
    Text(String),
    /// A complete tool call (its argument fragments assembled), reported when the model
    /// finishes, in the order the model emitted them.
    ToolCall {
        /// Call id (generated as `call_<n>` if the server sent none).
        id: String,
        /// Function name.
        name: String,
        /// Arguments, a JSON string (`"{}"` if the model sent none).
        arguments: String,
    },
    /// The answer is complete; always the last item.
    Done {
        /// `stop`, `tool_calls`, `length`, … as the server reported it.
        finish_reason: Option<String>,
    },
}

/// Turns chat-completion chunks (the JSON `data` of each event) into [`LlmDelta`]s,
/// assembling tool-call arguments that arrive in fragments.
#[derive(Debug, Default)]
pub struct DeltaAssembler {
    calls: BTreeMap<u64, PartialCall>,
    pub(super) finish_reason: Option<String>,
    pub(super) done: bool,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

impl DeltaAssembler {
    /// Feeds one event's data (`[DONE]` or a JSON chunk).
    pub fn feed(&mut self, data: &str) -> Result<Vec<LlmDelta>, String> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.finish(&mut out);
            return Ok(out);
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| format!("a chunk is not JSON ({e}): {}", snippet(data)))?;
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_string);
            return Err(format!("error in the stream: {}", snippet(&message)));
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                if !text.is_empty() {
                    out.push(LlmDelta::Text(text.to_string()));
                }
            }
            for (position, call) in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let partial = self.calls.entry(index).or_default();
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    partial.id = id.to_string();
                }
                if let Some(function) = call.get("function") {
                    if let Some(name) = function.get("name").and_then(Value::as_str) {
                        partial.name.push_str(name);
                    }
                    if let Some(args) = function.get("arguments").and_then(Value::as_str) {
                        partial.arguments.push_str(args);
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_string());
            }
        }
        Ok(out)
    }

    fn finish(&mut self, out: &mut Vec<LlmDelta>) {
        self.done = true;
        for (index, call) in std::mem::take(&mut self.calls) {
            out.push(LlmDelta::ToolCall {
                id: if call.id.is_empty() {
                    format!("call_{index}")
                } else {
                    call.id
                },
                name: call.name,
                arguments: if call.arguments.trim().is_empty() {
                    "{}".to_string()
                } else {
                    call.arguments
                },
            });
        }
        out.push(LlmDelta::Done {
            finish_reason: self.finish_reason.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_text_and_fragmented_tool_calls() {
        let mut a = DeltaAssembler::default();
        let chunks = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Let me check."}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"hang_up"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" \"Paris\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ];
        let mut out = Vec::new();
        for c in chunks {
            out.extend(a.feed(c).unwrap());
        }
        assert_eq!(
            out,
            vec![
                LlmDelta::Text("Let me check.".into()),
                LlmDelta::ToolCall {
                    id: "call_a".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\": \"Paris\"}".into()
                },
                LlmDelta::ToolCall {
                    id: "call_b".into(),
                    name: "hang_up".into(),
                    arguments: "{}".into()
                },
                LlmDelta::Done {
                    finish_reason: Some("tool_calls".into())
                },
            ]
        );
        assert!(a.feed("{}").unwrap().is_empty(), "nothing after [DONE]");
        let mut b = DeltaAssembler::default();
        let err = b
            .feed(r#"{"error":{"message":"model not found"}}"#)
            .unwrap_err();
        assert!(err.contains("model not found"), "{err}");
        assert!(b.feed("not json").is_err());
    }
}
