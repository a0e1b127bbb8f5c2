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
//!
//! The clients live in `transcription.rs`, `chat.rs` and `speech.rs`; `sse.rs` decodes the
//! server-sent events of the streamed answers. Everything is re-exported here.

mod chat;
mod deltas;
mod speech;
mod sse;
mod transcription;

pub use chat::{
    ChatClient, ChatMessage, ChatRequest, FunctionCall, LlmStream, Role, ToolCallRef,
    ToolDefinition,
};
pub use deltas::{DeltaAssembler, LlmDelta};
pub use speech::SpeechClient;
pub use sse::SseDecoder;
pub use transcription::{
    iso639_1, Transcript, TranscriptEvent, TranscriptStream, TranscriptionClient,
};

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use serde::{Deserialize, Serialize};

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
        self.post_as(None)
    }

    /// A POST with `key` as the bearer token instead of the configured one.
    fn post_as(&self, key: Option<&str>) -> reqwest::RequestBuilder {
        let req = self.http.post(&self.url);
        match key.or(self.config.api_key.as_deref()) {
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

/// The body of a streamed response.
type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

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
}
