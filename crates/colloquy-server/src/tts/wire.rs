//! The TTS wire types (spec `evi-platform.md` §7): request bodies as the SDKs send them and
//! the answers their models parse. Unknown request fields are ignored and `null` is the
//! same as absent, as everywhere in Colloquy.

use colloquy_wire::ReturnVoice;
use serde::{Deserialize, Serialize};

/// `PostedTts`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PostedTts {
    /// What to speak.
    pub utterances: Vec<PostedUtterance>,
    /// A generation to continue, or unspoken context.
    #[serde(default)]
    pub context: Option<PostedContext>,
    /// Output format (default mp3).
    #[serde(default)]
    pub format: Option<Format>,
    /// Takes, 1 to 5 (default 1).
    #[serde(default)]
    pub num_generations: Option<i64>,
    /// Split utterances into sentences (default true).
    #[serde(default)]
    pub split_utterances: Option<bool>,
    /// Streamed chunks concatenate into one file (default false: each chunk is a file).
    #[serde(default)]
    pub strip_headers: Option<bool>,
    /// `word` and/or `phoneme`.
    #[serde(default)]
    pub include_timestamp_types: Option<Vec<TimestampType>>,
    /// Accepted, not used (`"1"` or `"2"`).
    #[serde(default)]
    pub version: Option<OctaveVersion>,
    /// Accepted: Colloquy always streams as soon as it can.
    #[serde(default)]
    pub instant_mode: Option<bool>,
    /// Accepted, not used.
    #[serde(default)]
    pub temperature: Option<f64>,
}

/// `"1"` or `"2"` (a string on the wire; a number is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OctaveVersion {
    /// Octave 1.
    #[serde(rename = "1", alias = "1.0")]
    One,
    /// Octave 2.
    #[serde(rename = "2", alias = "2.0")]
    Two,
}

/// `PostedUtterance`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PostedUtterance {
    /// The text.
    pub text: String,
    /// Acting directions (with a voice) or a voice description (without).
    #[serde(default)]
    pub description: Option<String>,
    /// The voice, sticky for the following utterances.
    #[serde(default)]
    pub voice: Option<PostedVoice>,
    /// Speed multiplier.
    #[serde(default)]
    pub speed: Option<f64>,
    /// Seconds of silence after the utterance.
    #[serde(default)]
    pub trailing_silence: Option<f64>,
}

/// A voice reference: `{id, provider?}` or `{name, provider?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PostedVoice {
    /// Voice id.
    #[serde(default)]
    pub id: Option<String>,
    /// Voice name.
    #[serde(default)]
    pub name: Option<String>,
    /// `HUME_AI` (the library) or `CUSTOM_VOICE` (the account's saved voices).
    #[serde(default)]
    pub provider: Option<Provider>,
}

/// `VoiceProvider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Provider {
    /// The voice library.
    #[serde(rename = "HUME_AI")]
    HumeAi,
    /// The account's saved voices.
    #[serde(rename = "CUSTOM_VOICE")]
    CustomVoice,
}

/// `PostedContext`: `{generation_id}` or `{utterances}`; `{}` is the same as absent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PostedContext {
    /// Continue this generation's voice and settings.
    #[serde(default)]
    pub generation_id: Option<String>,
    /// Unspoken context (their voice, if any, becomes the starting voice).
    #[serde(default)]
    pub utterances: Option<Vec<PostedUtterance>>,
}

/// `Format`: `{"type": "mp3" | "wav" | "pcm"}`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Format {
    /// The format.
    #[serde(rename = "type")]
    pub kind: AudioFormat,
}

/// `AudioFormatType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// MPEG-1 Layer III.
    #[default]
    Mp3,
    /// RIFF WAVE, 16-bit PCM.
    Wav,
    /// Headerless signed 16-bit little-endian PCM.
    Pcm,
}

impl AudioFormat {
    /// The `Content-Type` of a file in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "audio/mpeg",
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Pcm => "audio/pcm",
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "mp3",
            AudioFormat::Wav => "wav",
            AudioFormat::Pcm => "pcm",
        }
    }
}

/// `TimestampType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampType {
    /// Words.
    Word,
    /// Phonemes.
    Phoneme,
}

/// `ReturnTts`.
#[derive(Debug, Clone, Serialize)]
pub struct ReturnTts {
    /// One per take.
    pub generations: Vec<ReturnGeneration>,
    /// This request's id.
    pub request_id: String,
}

/// `ReturnGeneration`.
#[derive(Debug, Clone, Serialize)]
pub struct ReturnGeneration {
    /// Reusable as `context` and to save a voice.
    pub generation_id: String,
    /// The whole file, base64.
    pub audio: String,
    /// Seconds.
    pub duration: f64,
    /// Bytes of the file.
    pub file_size: usize,
    /// Format and rate.
    pub encoding: AudioEncoding,
    /// One list per utterance.
    pub snippets: Vec<Vec<Snippet>>,
}

/// `AudioEncoding`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AudioEncoding {
    /// The format.
    pub format: AudioFormat,
    /// Hz.
    pub sample_rate: u32,
}

/// `Snippet`.
#[derive(Debug, Clone, Serialize)]
pub struct Snippet {
    /// Snippet id.
    pub id: String,
    /// Its generation.
    pub generation_id: String,
    /// Its text.
    pub text: String,
    /// Its audio (a whole file), base64.
    pub audio: String,
    /// Requested timestamps (else empty).
    pub timestamps: Vec<Timestamp>,
    /// Index of its utterance.
    pub utterance_index: usize,
    /// The text again (Colloquy speaks exactly what it is given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcribed_text: Option<String>,
}

/// `Timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timestamp {
    /// `word` or `phoneme`.
    #[serde(rename = "type")]
    pub kind: TimestampType,
    /// The word or phoneme (IPA).
    pub text: String,
    /// Milliseconds from the start of the snippet.
    pub time: TimeRange,
}

/// `{begin, end}` in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeRange {
    /// Start, ms.
    pub begin: u64,
    /// End, ms.
    pub end: u64,
}

/// A line of the streamed JSON (`TtsOutput`): `SnippetAudioChunk` or `TimestampMessage`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TtsOutput {
    /// `SnippetAudioChunk`.
    Audio(SnippetAudioChunk),
    /// `TimestampMessage`.
    Timestamp(TimestampMessage),
}

/// `SnippetAudioChunk`.
#[derive(Debug, Clone, Serialize)]
pub struct SnippetAudioChunk {
    /// The request.
    pub request_id: String,
    /// The take.
    pub generation_id: String,
    /// The snippet.
    pub snippet_id: String,
    /// The snippet's text.
    pub text: String,
    /// This chunk's bytes, base64.
    pub audio: String,
    /// The format.
    pub audio_format: AudioFormat,
    /// Index within the snippet.
    pub chunk_index: usize,
    /// Last chunk of the snippet.
    pub is_last_chunk: bool,
    /// Index of the utterance.
    pub utterance_index: usize,
    /// Transcript (voice conversion only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcribed_text: Option<String>,
}

/// `TimestampMessage`.
#[derive(Debug, Clone, Serialize)]
pub struct TimestampMessage {
    /// The request.
    pub request_id: String,
    /// The take.
    pub generation_id: String,
    /// The snippet.
    pub snippet_id: String,
    /// The timestamp (ms from the start of the snippet).
    pub timestamp: Timestamp,
}

/// `ReturnPagedVoices`.
#[derive(Debug, Clone, Serialize)]
pub struct ReturnPagedVoices {
    /// Zero-based page.
    pub page_number: u64,
    /// Items per page.
    pub page_size: u64,
    /// Pages in all.
    pub total_pages: u64,
    /// The voices.
    pub voices_page: Vec<ReturnVoice>,
}

/// `POST /v0/tts/voices` body.
#[derive(Debug, Clone, Deserialize)]
pub struct PostedVoiceSave {
    /// The generation whose voice to save.
    pub generation_id: String,
    /// The name to save it under.
    pub name: String,
}

/// `PublishTts`: a stream-input socket frame (no `type`; every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PublishTts {
    /// Text appended to the buffer.
    #[serde(default)]
    pub text: Option<String>,
    /// Sticky voice.
    #[serde(default)]
    pub voice: Option<PostedVoice>,
    /// Acting directions for what follows.
    #[serde(default)]
    pub description: Option<String>,
    /// Speed for what follows.
    #[serde(default)]
    pub speed: Option<f64>,
    /// Trailing silence after each flush.
    #[serde(default)]
    pub trailing_silence: Option<f64>,
    /// Synthesize the buffer now.
    #[serde(default)]
    pub flush: Option<bool>,
    /// Synthesize the rest, then close.
    #[serde(default)]
    pub close: Option<bool>,
}
