//! Speech to text: `POST {base_url}/audio/transcriptions`, answered as JSON or streamed.

use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use std::pin::Pin;

use super::sse::SseDecoder;
use super::{snippet, ByteStream, Endpoint, Service, ServiceConfig, ServiceError};
use crate::pcm::Pcm;
use crate::wav::encode_wav;

/// A step of a streamed transcription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscriptEvent {
    /// The text recognized so far (for an interim `user_message`).
    Interim(String),
    /// The language the service detected (ISO 639-1), when it reports one; comes before
    /// the [`TranscriptEvent::Final`].
    Language(String),
    /// The final text, trimmed; always the last item.
    Final(String),
}

/// A finished transcription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// The text, trimmed.
    pub text: String,
    /// The detected language as an ISO 639-1 code, when the service reports one (Whisper
    /// servers' `verbose_json` answers do, as a name like `english`).
    pub language: Option<String>,
}

/// The ISO 639-1 code of a language a transcription service reported: a code (`en`,
/// `EN`, `en-US`) or a Whisper language name (`english`). `None` for anything else.
pub fn iso639_1(reported: &str) -> Option<String> {
    let r = reported.trim().to_ascii_lowercase();
    let primary = r.split(['-', '_']).next().unwrap_or_default();
    if primary.len() == 2 && primary.bytes().all(|b| b.is_ascii_lowercase()) {
        return Some(primary.to_string());
    }
    WHISPER_LANGUAGES
        .iter()
        .find(|(_, name)| *name == r)
        .map(|(code, _)| code.to_string())
}

/// Whisper's language names with their ISO 639-1 codes.
#[rustfmt::skip]
const WHISPER_LANGUAGES: &[(&str, &str)] = &[
    ("en", "english"), ("zh", "chinese"), ("de", "german"), ("es", "spanish"),
    ("ru", "russian"), ("ko", "korean"), ("fr", "french"), ("ja", "japanese"),
    ("pt", "portuguese"), ("tr", "turkish"), ("pl", "polish"), ("ca", "catalan"),
    ("nl", "dutch"), ("ar", "arabic"), ("sv", "swedish"), ("it", "italian"),
    ("id", "indonesian"), ("hi", "hindi"), ("fi", "finnish"), ("vi", "vietnamese"),
    ("he", "hebrew"), ("uk", "ukrainian"), ("el", "greek"), ("ms", "malay"),
    ("cs", "czech"), ("ro", "romanian"), ("da", "danish"), ("hu", "hungarian"),
    ("ta", "tamil"), ("no", "norwegian"), ("th", "thai"), ("ur", "urdu"),
    ("hr", "croatian"), ("bg", "bulgarian"), ("lt", "lithuanian"), ("la", "latin"),
    ("mi", "maori"), ("ml", "malayalam"), ("cy", "welsh"), ("sk", "slovak"),
    ("te", "telugu"), ("fa", "persian"), ("lv", "latvian"), ("bn", "bengali"),
    ("sr", "serbian"), ("az", "azerbaijani"), ("sl", "slovenian"), ("kn", "kannada"),
    ("et", "estonian"), ("mk", "macedonian"), ("br", "breton"), ("eu", "basque"),
    ("is", "icelandic"), ("hy", "armenian"), ("ne", "nepali"), ("mn", "mongolian"),
    ("bs", "bosnian"), ("kk", "kazakh"), ("sq", "albanian"), ("sw", "swahili"),
    ("gl", "galician"), ("mr", "marathi"), ("pa", "punjabi"), ("si", "sinhala"),
    ("km", "khmer"), ("sn", "shona"), ("yo", "yoruba"), ("so", "somali"),
    ("af", "afrikaans"), ("oc", "occitan"), ("ka", "georgian"), ("be", "belarusian"),
    ("tg", "tajik"), ("sd", "sindhi"), ("gu", "gujarati"), ("am", "amharic"),
    ("yi", "yiddish"), ("lo", "lao"), ("uz", "uzbek"), ("fo", "faroese"),
    ("ht", "haitian creole"), ("ps", "pashto"), ("tk", "turkmen"), ("nn", "nynorsk"),
    ("mt", "maltese"), ("sa", "sanskrit"), ("lb", "luxembourgish"), ("my", "myanmar"),
    ("bo", "tibetan"), ("tl", "tagalog"), ("mg", "malagasy"), ("as", "assamese"),
    ("tt", "tatar"), ("ln", "lingala"), ("ha", "hausa"), ("ba", "bashkir"),
    ("jw", "javanese"), ("su", "sundanese"),
];

/// The language field of a transcription answer, as ISO 639-1.
fn language_of(answer: &Value) -> Option<String> {
    answer
        .get("language")
        .and_then(Value::as_str)
        .and_then(iso639_1)
}

/// A streamed transcription: [`TranscriptEvent::Interim`]s, then one
/// [`TranscriptEvent::Final`].
pub type TranscriptStream =
    Pin<Box<dyn Stream<Item = Result<TranscriptEvent, ServiceError>> + Send>>;

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

    /// The multipart upload: the audio as a 16-bit mono WAV file, `model`,
    /// `response_format=json`, `stream=true` when `stream`, and the `language` hint.
    fn form(&self, audio: &Pcm, language: Option<&str>, stream: bool) -> reqwest::multipart::Form {
        let file = reqwest::multipart::Part::bytes(encode_wav(audio))
            .file_name("audio.wav")
            .mime_str("audio/wav")
            .expect("valid mime type");
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.endpoint.config.model.clone())
            .text("response_format", "json");
        if stream {
            form = form.text("stream", "true");
        }
        if let Some(language) = language {
            form = form.text("language", language.to_string());
        }
        form
    }

    /// Transcribes `audio` (sent as a 16-bit mono WAV file). `language` is an optional
    /// ISO-639-1 hint. Returns the text, trimmed.
    pub async fn transcribe(
        &self,
        audio: &Pcm,
        language: Option<&str>,
    ) -> Result<String, ServiceError> {
        Ok(self.transcript(audio, language).await?.text)
    }

    /// Like [`transcribe`](Self::transcribe), with the language the service detected when
    /// its answer has one.
    pub async fn transcript(
        &self,
        audio: &Pcm,
        language: Option<&str>,
    ) -> Result<Transcript, ServiceError> {
        let ep = &self.endpoint;
        let form = self.form(audio, language, false);
        let response = ep.send(ep.post().multipart(form)).await?;
        let body = ep.body(response).await?;
        #[derive(Deserialize)]
        struct Transcription {
            text: String,
            #[serde(default)]
            language: Option<Value>,
        }
        let parsed: Transcription = serde_json::from_slice(&body).map_err(|e| {
            ep.invalid(format!(
                "expected JSON with `text` ({e}): {}",
                snippet(&String::from_utf8_lossy(&body))
            ))
        })?;
        Ok(Transcript {
            text: parsed.text.trim().to_string(),
            language: parsed
                .language
                .as_ref()
                .and_then(Value::as_str)
                .and_then(iso639_1),
        })
    }

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
        let form = self.form(audio, language, true);
        let response = ep.send(ep.post().multipart(form)).await?;
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            let body = ep.body(response).await?;
            let answer = serde_json::from_slice::<Value>(&body).unwrap_or_default();
            let text = answer.get("text").and_then(Value::as_str).ok_or_else(|| {
                ep.invalid(format!(
                    "expected JSON with `text`: {}",
                    snippet(&String::from_utf8_lossy(&body))
                ))
            })?;
            let mut items: Vec<Result<TranscriptEvent, ServiceError>> = Vec::new();
            if let Some(language) = language_of(&answer) {
                items.push(Ok(TranscriptEvent::Language(language)));
            }
            items.push(Ok(TranscriptEvent::Final(text.trim().to_string())));
            return Ok(Box::pin(futures::stream::iter(items)));
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
                if let Some(language) = language_of(&event) {
                    self.queue
                        .push_back(Ok(TranscriptEvent::Language(language)));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The items of a streamed transcription whose body arrives in `chunks`.
    async fn events(chunks: &[&'static str]) -> Vec<Result<TranscriptEvent, String>> {
        let client = TranscriptionClient::new(ServiceConfig::new("http://x/v1", "whisper"));
        let chunks: Vec<reqwest::Result<bytes::Bytes>> = chunks
            .iter()
            .map(|c| Ok(bytes::Bytes::from_static(c.as_bytes())))
            .collect();
        let state = TranscriptState {
            body: Box::pin(futures::stream::iter(chunks)),
            sse: SseDecoder::default(),
            text: String::new(),
            queue: std::collections::VecDeque::new(),
            done: false,
            ep: client.endpoint,
        };
        futures::stream::unfold(state, next_transcript_event)
            .map(|item| item.map_err(|e| e.to_string()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn deltas_are_interims_and_done_is_final() {
        let got = events(&[
            "data: {\"type\":\"transcript.text.delta\",\"delta\":\"Hel\"}\n\ndata: {\"type\":\"tran",
            "script.text.delta\",\"delta\":\"lo \"}\n\n",
            "data: {\"type\":\"transcript.text.done\",\"text\":\" Hello there \"}\n\n",
            "data: {\"type\":\"transcript.text.delta\",\"delta\":\"ignored\"}\n\n",
        ])
        .await;
        assert_eq!(
            got,
            vec![
                Ok(TranscriptEvent::Interim("Hel".into())),
                Ok(TranscriptEvent::Interim("Hello".into())),
                Ok(TranscriptEvent::Final("Hello there".into())),
            ]
        );
    }

    #[tokio::test]
    async fn a_stream_without_its_end_is_an_error() {
        let got =
            events(&["data: {\"type\":\"transcript.text.delta\",\"delta\":\"Hi\"}\n\n"]).await;
        assert_eq!(got[0], Ok(TranscriptEvent::Interim("Hi".into())));
        let err = got[1].as_ref().unwrap_err();
        assert!(err.contains("ended before the final transcript"), "{err}");
        assert_eq!(got.len(), 2);

        let got = events(&["data: {\"error\":{\"message\":\"busy\"}}\n\ndata: [DONE]\n\n"]).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].as_ref().unwrap_err().contains("error in the stream"));

        let got = events(&["data: [DONE]\n\n"]).await;
        assert_eq!(got, vec![Ok(TranscriptEvent::Final(String::new()))]);
    }

    #[tokio::test]
    async fn a_reported_language_comes_before_the_final_text() {
        let got = events(&[
            "data: {\"type\":\"transcript.text.done\",\"text\":\"Hola\",\"language\":\"spanish\"}\n\n",
        ])
        .await;
        assert_eq!(
            got,
            vec![
                Ok(TranscriptEvent::Language("es".into())),
                Ok(TranscriptEvent::Final("Hola".into())),
            ]
        );
    }

    #[test]
    fn languages_become_iso_639_1() {
        assert_eq!(iso639_1("english").as_deref(), Some("en"));
        assert_eq!(iso639_1("English").as_deref(), Some("en"));
        assert_eq!(iso639_1("en-US").as_deref(), Some("en"));
        assert_eq!(iso639_1("FR").as_deref(), Some("fr"));
        assert_eq!(iso639_1("haitian creole").as_deref(), Some("ht"));
        assert_eq!(iso639_1("klingon"), None);
        assert_eq!(iso639_1(""), None);
        assert_eq!(iso639_1("e1"), None);
    }
}
