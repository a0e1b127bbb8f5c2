//! Chat completions: the request types and the streamed answer of
//! `POST {base_url}/chat/completions`.

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::pin::Pin;

use super::deltas::{DeltaAssembler, LlmDelta};
use super::sse::SseDecoder;
use super::{ByteStream, Endpoint, Service, ServiceConfig, ServiceError};

/// Who wrote a [`ChatMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// A tool call the model made, as it appears in the conversation history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallRef {
    /// The call id (answered by a [`Role::Tool`] message with the same `tool_call_id`).
    pub id: String,
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub call_type: String,
    /// Name and JSON-encoded arguments.
    pub function: FunctionCall,
}

/// Function name and arguments of a [`ToolCallRef`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Tool name.
    pub name: String,
    /// Arguments as a JSON string.
    pub arguments: String,
}

/// One message of a chat-completions request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text (`None` only for an assistant message that just calls tools).
    pub content: Option<String>,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallRef>,
    /// For [`Role::Tool`]: the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text(Role::Assistant, content)
    }

    /// An assistant message calling one tool (`arguments` is a JSON string).
    pub fn assistant_tool_call(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            role: Role::Assistant,
            content: None,
            tool_calls: vec![ToolCallRef {
                id: id.into(),
                call_type: "function".into(),
                function: FunctionCall {
                    name: name.into(),
                    arguments: arguments.into(),
                },
            }],
            tool_call_id: None,
        }
    }

    /// A tool's answer to the call `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(tool_call_id.into()),
        }
    }
}

/// A function the model may call (`tools[]` of the request, `type: "function"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Function name.
    pub name: String,
    /// What it does (helps the model decide when to call it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the arguments.
    pub parameters: Value,
}

/// A chat-completions request (the model comes from the [`ServiceConfig`]).
#[derive(Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The conversation, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Functions the model may call (none: no `tools` field is sent).
    pub tools: Vec<ToolDefinition>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Output token limit.
    pub max_tokens: Option<u32>,
    /// The model to use instead of the service's configured `model`.
    pub model: Option<String>,
    /// The API key to send instead of the service's configured one (a chat's
    /// `language_model_api_key`); never logged.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRequest")
            .field("messages", &self.messages)
            .field("tools", &self.tools)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The streamed answer: text deltas, then tool calls, then [`LlmDelta::Done`]. Dropping it
/// closes the connection (use that to cancel on interruption).
pub type LlmStream = Pin<Box<dyn Stream<Item = Result<LlmDelta, ServiceError>> + Send>>;

/// Streams answers from `POST {base_url}/chat/completions` (`stream: true`, server-sent
/// events).
#[derive(Debug, Clone)]
pub struct ChatClient {
    endpoint: Endpoint,
}

impl ChatClient {
    /// A client for the service `config` describes.
    pub fn new(config: ServiceConfig) -> Self {
        Self {
            endpoint: Endpoint::new(Service::ChatCompletions, config, "chat/completions"),
        }
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// The JSON body sent for `request`.
    pub fn request_body(&self, request: &ChatRequest) -> Value {
        let mut body = serde_json::json!({
            "model": request.model.as_deref().unwrap_or(&self.endpoint.config.model),
            "messages": request.messages,
            "stream": true,
        });
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| serde_json::json!({"type": "function", "function": t}))
                .collect();
        }
        if let Some(t) = request.temperature {
            body["temperature"] = serde_json::json!(t);
        }
        if let Some(m) = request.max_tokens {
            body["max_tokens"] = serde_json::json!(m);
        }
        body
    }

    /// Sends `request` and returns the answer as a stream once the response headers
    /// arrived. HTTP errors are returned here; errors while streaming (a dropped
    /// connection, no chunk within the timeout, an `error` event, a stream that ends before
    /// the model finished) come as the stream's last item.
    pub async fn stream(&self, request: &ChatRequest) -> Result<LlmStream, ServiceError> {
        let ep = self.endpoint.clone();
        let post = ep.post_as(request.api_key.as_deref());
        let response = ep.send(post.json(&self.request_body(request))).await?;
        let state = StreamState {
            body: Box::pin(response.bytes_stream()),
            sse: SseDecoder::default(),
            assembler: DeltaAssembler::default(),
            queue: std::collections::VecDeque::new(),
            finished: false,
            finished_input: false,
            ep,
        };
        Ok(Box::pin(futures::stream::unfold(state, next_delta)))
    }
}

struct StreamState {
    body: ByteStream,
    sse: SseDecoder,
    assembler: DeltaAssembler,
    queue: std::collections::VecDeque<Result<LlmDelta, ServiceError>>,
    finished: bool,
    finished_input: bool,
    ep: Endpoint,
}

async fn next_delta(mut st: StreamState) -> Option<(Result<LlmDelta, ServiceError>, StreamState)> {
    loop {
        if let Some(item) = st.queue.pop_front() {
            if item.is_err() || matches!(item, Ok(LlmDelta::Done { .. })) {
                st.finished = true;
                st.queue.clear();
            }
            return Some((item, st));
        }
        if st.finished || st.finished_input {
            return None;
        }
        let chunk = tokio::time::timeout(st.ep.config.timeout(), st.body.next()).await;
        let payloads = match chunk {
            Err(_) => {
                st.queue.push_back(Err(st.ep.timeout()));
                continue;
            }
            Ok(Some(Err(e))) => {
                let err = st.ep.unreachable(e);
                st.queue.push_back(Err(err));
                continue;
            }
            Ok(Some(Ok(bytes))) => st.sse.feed(&bytes),
            Ok(None) => {
                for data in st.sse.finish() {
                    st.feed(&data);
                }
                if !st.assembler.done {
                    // The connection closed without `[DONE]`: accept that if the model said
                    // it finished, otherwise the answer is truncated.
                    if st.assembler.finish_reason.is_some() {
                        st.feed("[DONE]");
                    } else {
                        let err = st
                            .ep
                            .invalid("the stream ended before the answer was complete");
                        st.queue.push_back(Err(err));
                    }
                }
                st.finished_input = true;
                continue;
            }
        };
        for data in payloads {
            st.feed(&data);
        }
    }
}

impl StreamState {
    fn feed(&mut self, data: &str) {
        match self.assembler.feed(data) {
            Ok(deltas) => self.queue.extend(deltas.into_iter().map(Ok)),
            Err(detail) => {
                let err = self.ep.invalid(detail);
                self.queue.push_back(Err(err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_body_shape() {
        let client = ChatClient::new(ServiceConfig::new("http://x/v1", "llama"));
        let body = client.request_body(&ChatRequest {
            messages: vec![
                ChatMessage::system("Be brief."),
                ChatMessage::assistant_tool_call("c1", "f", "{}"),
                ChatMessage::tool_result("c1", "ok"),
            ],
            tools: vec![ToolDefinition {
                name: "f".into(),
                description: None,
                parameters: serde_json::json!({"type": "object"}),
            }],
            temperature: None,
            max_tokens: Some(100),
            model: None,
            api_key: None,
        });
        assert_eq!(
            body,
            serde_json::json!({
                "model": "llama",
                "stream": true,
                "max_tokens": 100,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "content": "ok", "tool_call_id": "c1"},
                ],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            })
        );
    }
}
