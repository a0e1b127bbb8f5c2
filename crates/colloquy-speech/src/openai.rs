//! Clients for OpenAI-compatible HTTP services: transcription (`/audio/transcriptions`),
//! streamed chat completions (`/chat/completions`) and speech (`/audio/speech`).
//!
//! They work with OpenAI itself and with compatible servers (Ollama, vLLM, llama.cpp's
//! server, whisper.cpp's server, …). Each service is configured by a [`ServiceConfig`].
//!
//! **Base URL.** As in the OpenAI SDKs, the base URL includes the API version prefix,
//! e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`; the endpoint path is
//! appended to it. A base URL that is only a host (`http://127.0.0.1:11434`, no path) gets
//! `/v1` added.
//!
//! Every failure is a [`ServiceError`] naming the service, the URL and, for HTTP errors,
//! the status and the start of the response body.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pcm::Pcm;
use crate::voice::{Voice, VoiceError};
use crate::wav::{decode_wav, encode_wav};

/// Default for [`ServiceConfig::timeout_secs`].
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Most characters of an error response body kept in a [`ServiceError`].
const BODY_SNIPPET: usize = 300;

/// One OpenAI-compatible service. `Debug` redacts the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Base URL including the version prefix, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Model name sent with every request (`whisper-1`, `llama3.2`, `tts-1`, …).
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Time allowed to connect and get a response's headers; for streamed chat
    /// completions also the longest pause between two chunks; for transcription and
    /// speech the whole request.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl ServiceConfig {
    /// A configuration with no key and the default timeout.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }

    /// The full URL of `endpoint` (e.g. `"chat/completions"`).
    pub fn endpoint_url(&self, endpoint: &str) -> String {
        let base = self.base_url.trim_end_matches('/');
        let has_path = base
            .split_once("://")
            .map_or(base, |(_, rest)| rest)
            .contains('/');
        if has_path {
            format!("{base}/{endpoint}")
        } else {
            format!("{base}/v1/{endpoint}")
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// Which service failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Speech to text.
    Transcription,
    /// The language model.
    ChatCompletions,
    /// Text to speech.
    Speech,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Transcription => "transcription service",
            Service::ChatCompletions => "language model (chat completions)",
            Service::Speech => "speech service",
        })
    }
}

/// A failed call to an OpenAI-compatible service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Could not connect, send or receive (includes timeouts).
    #[error("the {service} at {url} could not be reached: {source}")]
    Unreachable {
        /// The service.
        service: Service,
        /// The endpoint URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// No response (or, when streaming, no next chunk) within the timeout.
    #[error("the {service} at {url} did not answer within {secs} s")]
    Timeout {
        /// The service.
        service: Service,
        /// The endpoint URL.
        url: String,
        /// The configured timeout.
        secs: u64,
    },
    /// The service answered with an HTTP error.
    #[error("the {service} at {url} answered HTTP {status}: {body}")]
    Status {
        /// The service.
        service: Service,
        /// The endpoint URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The response could not be understood.
    #[error("the {service} at {url} sent an invalid response: {detail}")]
    Invalid {
        /// The service.
        service: Service,
        /// The endpoint URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

impl ServiceError {
    /// The service that failed.
    pub fn service(&self) -> Service {
        match self {
            ServiceError::Unreachable { service, .. }
            | ServiceError::Timeout { service, .. }
            | ServiceError::Status { service, .. }
            | ServiceError::Invalid { service, .. } => *service,
        }
    }
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(BODY_SNIPPET) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Shared plumbing of the three clients.
#[derive(Debug, Clone)]
struct Endpoint {
    service: Service,
    config: ServiceConfig,
    url: String,
    http: reqwest::Client,
}

impl Endpoint {
    fn new(service: Service, config: ServiceConfig, path: &str) -> Self {
        let url = config.endpoint_url(path);
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout())
            .build()
            .unwrap_or_default();
        Self {
            service,
            config,
            url,
            http,
        }
    }

    fn post(&self) -> reqwest::RequestBuilder {
        let req = self.http.post(&self.url);
        match &self.config.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    fn unreachable(&self, source: reqwest::Error) -> ServiceError {
        if source.is_timeout() {
            return self.timeout();
        }
        ServiceError::Unreachable {
            service: self.service,
            url: self.url.clone(),
            source,
        }
    }

    fn timeout(&self) -> ServiceError {
        ServiceError::Timeout {
            service: self.service,
            url: self.url.clone(),
            secs: self.config.timeout().as_secs(),
        }
    }

    fn invalid(&self, detail: impl Into<String>) -> ServiceError {
        ServiceError::Invalid {
            service: self.service,
            url: self.url.clone(),
            detail: detail.into(),
        }
    }

    /// Sends `req`, waiting at most the timeout for the headers; HTTP errors become
    /// [`ServiceError::Status`].
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ServiceError> {
        let response = tokio::time::timeout(self.config.timeout(), req.send())
            .await
            .map_err(|_| self.timeout())?
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = tokio::time::timeout(self.config.timeout(), response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(ServiceError::Status {
            service: self.service,
            url: self.url.clone(),
            status: status.as_u16(),
            body: snippet(&body),
        })
    }

    async fn body(&self, response: reqwest::Response) -> Result<bytes::Bytes, ServiceError> {
        tokio::time::timeout(self.config.timeout(), response.bytes())
            .await
            .map_err(|_| self.timeout())?
            .map_err(|e| self.unreachable(e))
    }
}

// ---- transcription ----------------------------------------------------------------------------

/// Speech to text through `POST {base_url}/audio/transcriptions` (multipart upload of a WAV
/// file with `model`; the answer's `text` is the transcript).
#[derive(Debug, Clone)]
pub struct TranscriptionClient {
    endpoint: Endpoint,
}

impl TranscriptionClient {
    /// A client for the service `config` describes.
    pub fn new(config: ServiceConfig) -> Self {
        Self {
            endpoint: Endpoint::new(Service::Transcription, config, "audio/transcriptions"),
        }
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// Transcribes `audio` (sent as a 16-bit mono WAV file). `language` is an optional
    /// ISO-639-1 hint. Returns the text, trimmed.
    pub async fn transcribe(
        &self,
        audio: &Pcm,
        language: Option<&str>,
    ) -> Result<String, ServiceError> {
        let ep = &self.endpoint;
        let file = reqwest::multipart::Part::bytes(encode_wav(audio))
            .file_name("audio.wav")
            .mime_str("audio/wav")
            .expect("valid mime type");
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", ep.config.model.clone())
            .text("response_format", "json");
        if let Some(language) = language {
            form = form.text("language", language.to_string());
        }
        let response = ep.send(ep.post().multipart(form)).await?;
        let body = ep.body(response).await?;
        #[derive(Deserialize)]
        struct Transcription {
            text: String,
        }
        let parsed: Transcription = serde_json::from_slice(&body).map_err(|e| {
            ep.invalid(format!(
                "expected JSON with `text` ({e}): {}",
                snippet(&String::from_utf8_lossy(&body))
            ))
        })?;
        Ok(parsed.text.trim().to_string())
    }
}

/// A step of a streamed transcription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscriptEvent {
    /// The text recognized so far (for an interim `user_message`).
    Interim(String),
    /// The final text, trimmed; always the last item.
    Final(String),
}

/// A streamed transcription: [`TranscriptEvent::Interim`]s, then one
/// [`TranscriptEvent::Final`].
pub type TranscriptStream =
    Pin<Box<dyn Stream<Item = Result<TranscriptEvent, ServiceError>> + Send>>;

impl TranscriptionClient {
    /// Like [`transcribe`](Self::transcribe) but asks for a streamed answer
    /// (`stream=true`): a server that streams sends server-sent events
    /// (`transcript.text.delta` with `delta`, then `transcript.text.done` with `text`), which
    /// become [`TranscriptEvent::Interim`]s and the [`TranscriptEvent::Final`]; a server
    /// that ignores `stream` and answers JSON yields just the `Final`.
    pub async fn transcribe_stream(
        &self,
        audio: &Pcm,
        language: Option<&str>,
    ) -> Result<TranscriptStream, ServiceError> {
        let ep = self.endpoint.clone();
        let file = reqwest::multipart::Part::bytes(encode_wav(audio))
            .file_name("audio.wav")
            .mime_str("audio/wav")
            .expect("valid mime type");
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", ep.config.model.clone())
            .text("response_format", "json")
            .text("stream", "true");
        if let Some(language) = language {
            form = form.text("language", language.to_string());
        }
        let response = ep.send(ep.post().multipart(form)).await?;
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            let body = ep.body(response).await?;
            let text = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("text").and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| {
                    ep.invalid(format!(
                        "expected JSON with `text`: {}",
                        snippet(&String::from_utf8_lossy(&body))
                    ))
                })?;
            let item = Ok(TranscriptEvent::Final(text.trim().to_string()));
            return Ok(Box::pin(futures::stream::iter([item])));
        }
        let state = TranscriptState {
            body: Box::pin(response.bytes_stream()),
            sse: SseDecoder::default(),
            text: String::new(),
            queue: std::collections::VecDeque::new(),
            done: false,
            ep,
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            next_transcript_event,
        )))
    }
}

struct TranscriptState {
    body: ByteStream,
    sse: SseDecoder,
    text: String,
    queue: std::collections::VecDeque<Result<TranscriptEvent, ServiceError>>,
    done: bool,
    ep: Endpoint,
}

impl TranscriptState {
    fn feed(&mut self, data: &str) {
        if self.done {
            return;
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.finish();
            return;
        }
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            let err = self
                .ep
                .invalid(format!("an event is not JSON: {}", snippet(data)));
            self.queue.push_back(Err(err));
            self.done = true;
            return;
        };
        match event.get("type").and_then(Value::as_str) {
            Some("transcript.text.delta") => {
                if let Some(delta) = event.get("delta").and_then(Value::as_str) {
                    self.text.push_str(delta);
                    let so_far = self.text.trim().to_string();
                    if !so_far.is_empty() {
                        self.queue.push_back(Ok(TranscriptEvent::Interim(so_far)));
                    }
                }
            }
            Some("transcript.text.done") => {
                if let Some(text) = event.get("text").and_then(Value::as_str) {
                    self.text = text.to_string();
                }
                self.finish();
            }
            _ if event.get("error").is_some() => {
                let err = self
                    .ep
                    .invalid(format!("error in the stream: {}", snippet(data)));
                self.queue.push_back(Err(err));
                self.done = true;
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        self.queue
            .push_back(Ok(TranscriptEvent::Final(self.text.trim().to_string())));
        self.done = true;
    }
}

async fn next_transcript_event(
    mut st: TranscriptState,
) -> Option<(Result<TranscriptEvent, ServiceError>, TranscriptState)> {
    loop {
        if let Some(item) = st.queue.pop_front() {
            return Some((item, st));
        }
        if st.done {
            return None;
        }
        match tokio::time::timeout(st.ep.config.timeout(), st.body.next()).await {
            Err(_) => {
                let err = st.ep.timeout();
                st.queue.push_back(Err(err));
                st.done = true;
            }
            Ok(Some(Err(e))) => {
                let err = st.ep.unreachable(e);
                st.queue.push_back(Err(err));
                st.done = true;
            }
            Ok(Some(Ok(bytes))) => {
                for data in st.sse.feed(&bytes) {
                    st.feed(&data);
                }
            }
            Ok(None) => {
                for data in st.sse.finish() {
                    st.feed(&data);
                }
                if !st.done {
                    let err = st
                        .ep
                        .invalid("the stream ended before the final transcript");
                    st.queue.push_back(Err(err));
                    st.done = true;
                }
            }
        }
    }
}

// ---- speech -----------------------------------------------------------------------------------

/// Text to speech through `POST {base_url}/audio/speech` with `response_format: "wav"`.
/// Implements [`Voice`], like the built-in [`EspeakVoice`](crate::voice::EspeakVoice).
#[derive(Debug, Clone)]
pub struct SpeechClient {
    endpoint: Endpoint,
    voice: String,
}

impl SpeechClient {
    /// A client for the service `config` describes, speaking with `voice` (e.g. `"alloy"`).
    pub fn new(config: ServiceConfig, voice: impl Into<String>) -> Self {
        Self {
            endpoint: Endpoint::new(Service::Speech, config, "audio/speech"),
            voice: voice.into(),
        }
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// Speaks `text`; the WAV answer is decoded to mono PCM at the service's rate.
    pub async fn speak(&self, text: &str) -> Result<Pcm, ServiceError> {
        let ep = &self.endpoint;
        let request = serde_json::json!({
            "model": ep.config.model,
            "input": text,
            "voice": self.voice,
            "response_format": "wav",
        });
        let response = ep.send(ep.post().json(&request)).await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        let body = ep.body(response).await?;
        decode_wav(&body).map_err(|e| {
            ep.invalid(format!(
                "{e} (content type {content_type}, {} bytes); the service must support response_format \"wav\"",
                body.len()
            ))
        })
    }
}

#[async_trait]
impl Voice for SpeechClient {
    async fn synthesize(&self, text: &str) -> Result<Pcm, VoiceError> {
        if text.trim().is_empty() {
            return Ok(Pcm::default());
        }
        Ok(self.speak(text).await?)
    }
}

// ---- chat completions -------------------------------------------------------------------------

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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The conversation, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Functions the model may call (none: no `tools` field is sent).
    pub tools: Vec<ToolDefinition>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Output token limit.
    pub max_tokens: Option<u32>,
}

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
            "model": self.endpoint.config.model,
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
        let response = ep.send(ep.post().json(&self.request_body(request))).await?;
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

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

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

/// Splits a server-sent-events byte stream into the `data` of each event.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseDecoder {
    /// Feeds bytes; returns the data of every event completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, &mut out);
            } else {
                self.line.push(b);
            }
        }
        out
    }

    /// Ends the stream: an event without its final blank line is still delivered.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut out);
        }
        out.extend(self.data.take());
        out
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) {
        if line.is_empty() {
            out.extend(self.data.take());
            return;
        }
        let line = String::from_utf8_lossy(line);
        if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
        // Comments (`:`), `event:`, `id:`, `retry:` are ignored.
    }
}

/// Turns chat-completion chunks (the JSON `data` of each event) into [`LlmDelta`]s,
/// assembling tool-call arguments that arrive in fragments.
#[derive(Debug, Default)]
pub struct DeltaAssembler {
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<String>,
    done: bool,
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
    fn endpoint_urls() {
        let c = |base: &str| ServiceConfig::new(base, "m").endpoint_url("chat/completions");
        assert_eq!(
            c("https://api.openai.com/v1"),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            c("http://127.0.0.1:11434/v1/"),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
        assert_eq!(
            c("http://127.0.0.1:11434"),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
        assert_eq!(
            c("http://host:8080/"),
            "http://host:8080/v1/chat/completions"
        );
        assert_eq!(
            c("http://host/openai/v1"),
            "http://host/openai/v1/chat/completions"
        );
    }

    #[test]
    fn debug_redacts_the_key() {
        let mut config = ServiceConfig::new("http://x/v1", "m");
        config.api_key = Some("sk-secret".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn sse_events_split_anywhere() {
        let stream = b": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata:line2\n\ndata: [DONE]";
        for split in 0..stream.len() {
            let mut d = SseDecoder::default();
            let mut got = d.feed(&stream[..split]);
            got.extend(d.feed(&stream[split..]));
            got.extend(d.finish());
            assert_eq!(
                got,
                vec!["{\"a\":1}", "line1\nline2", "[DONE]"],
                "split at {split}"
            );
        }
    }

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
