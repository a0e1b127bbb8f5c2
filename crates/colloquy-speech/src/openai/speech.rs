//! Text to speech: `POST {base_url}/audio/speech`, a [`Voice`].

use async_trait::async_trait;

use super::{Endpoint, Service, ServiceConfig, ServiceError};
use crate::pcm::Pcm;
use crate::voice::{Voice, VoiceError};
use crate::wav::decode_wav;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blank_text_is_silence_without_a_request() {
        // Nothing listens on port 9: a request would fail.
        let client = SpeechClient::new(ServiceConfig::new("http://127.0.0.1:9", "tts-1"), "alloy");
        assert_eq!(client.url(), "http://127.0.0.1:9/v1/audio/speech");
        assert_eq!(client.synthesize(" \n").await.unwrap(), Pcm::default());
    }
}
