//! Building blocks of Colloquy's **pipeline engine** (issue 5): a voice chat answered by
//! OpenAI-compatible HTTP services, and the **built-in offline voice**.
//!
//! This crate does not know about sockets or storage; the chat session wires the pieces
//! together. A pipeline turn looks like this:
//!
//! 1. [`vad::TurnDetector`] gets the user's `audio_input` as mono PCM and reports
//!    [`vad::VadEvent::SpeechStart`] (user speech — an interruption if the assistant is
//!    speaking) and [`vad::VadEvent::SpeechEnd`] with the utterance's audio.
//! 2. [`openai::TranscriptionClient::transcribe`] turns that audio into the final
//!    `user_message` text ([`openai::TranscriptionClient::transcribe_stream`] also gives
//!    interim text when the service streams, for `verbose_transcription=true`).
//! 3. [`prompt`] builds the request: system prompt with `{{variables}}`, the chat group's
//!    earlier events as history (bounded by `event_limit`), the current turns, `context`,
//!    and `session_settings.tools` plus the built-in `hang_up` as function definitions.
//! 4. [`openai::ChatClient::stream`] streams the answer as [`openai::LlmDelta`]s; text goes
//!    through [`sentences::SentenceSplitter`] (one `assistant_message` per sentence), tool
//!    calls come out whole.
//! 5. Each sentence is spoken by a [`voice::Voice`] — [`openai::SpeechClient`]
//!    (`/audio/speech`) or the offline [`voice::EspeakVoice`] — and sent as `audio_output`
//!    chunks made with [`wav::wav_chunks`] (each a complete WAV file).
//!
//! With an expression-measurement service ([`expression::ExpressionClient`], Hume's
//! streaming protocol), each utterance is also scored for emotions.
//!
//! [`pcm::Pcm`] (mono `i16` + sample rate) is the audio type throughout; `Pcm::resample`
//! converts rates (EVI clients expect 48 kHz `audio_output`).
//!
//! The offline voice loads the system's espeak-ng library at run time (Debian/Ubuntu:
//! `libespeak-ng1` and `espeak-ng-data`); building needs nothing but Rust.

pub mod expression;
pub mod openai;
pub mod pcm;
pub mod prompt;
pub mod sentences;
pub mod vad;
pub mod voice;
pub mod wav;

pub use openai::{
    ChatClient, ChatMessage, ChatRequest, LlmDelta, LlmStream, ServiceConfig, ServiceError,
    SpeechClient, ToolDefinition, Transcript, TranscriptEvent, TranscriptionClient,
};
pub use pcm::Pcm;
pub use sentences::SentenceSplitter;
pub use vad::{TurnDetector, VadConfig, VadEvent};
pub use voice::{
    EspeakOptions, EspeakVoice, SpeechPiece, SpeechStream, Voice, VoiceError, ESPEAK_INSTALL_HINT,
};
pub use wav::{decode_wav, encode_wav, wav_chunks};
