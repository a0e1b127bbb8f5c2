//! The crate's error type.

use std::fmt;
use std::io;

/// Whose voice a stream of the chat's audio is: the voice an error or clip belongs to, and
/// (as [`Voice::as_str`]) the folder the server keeps that voice's captured audio in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Voice {
    /// The end user (EVI `audio_input`).
    User,
    /// The assistant (EVI `audio_output`).
    Assistant,
}

impl Voice {
    /// `user` or `assistant`: the voice's name in messages and its folder name.
    pub fn as_str(self) -> &'static str {
        match self {
            Voice::User => "user",
            Voice::Assistant => "assistant",
        }
    }
}

impl fmt::Display for Voice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong while probing, decoding, mixing or encoding.
///
/// Undecodable input always ends up here (never in a panic).
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// Neither voice yielded a single sample.
    #[error("the chat has no audio")]
    NoAudio,
    /// A container stream starts with neither the EBML (WebM) nor the RIFF/WAVE magic.
    #[error("not WebM/Opus or WAV; send linear16 with session_settings.audio or a WebM/Opus or WAV stream")]
    UnrecognizedContainer,
    /// Well-formed input in a format this crate does not handle.
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// A linear16 chunk is not a whole number of sample frames.
    #[error("linear16 chunk of {len} bytes is not a multiple of the {frame_bytes}-byte frame (16-bit x {channels} channel(s))")]
    Linear16Misaligned {
        /// Chunk length in bytes.
        len: usize,
        /// Bytes per frame (`2 * channels`).
        frame_bytes: usize,
        /// Channel count of the declared format.
        channels: u16,
    },
    /// Malformed WAV data.
    #[error("invalid WAV: {0}")]
    InvalidWav(String),
    /// Malformed WebM/Matroska data.
    #[error("invalid WebM: {0}")]
    InvalidWebm(String),
    /// An Opus packet could not be decoded.
    #[error("invalid Opus data: {0}")]
    InvalidOpus(String),
    /// The record log is malformed (truncated record, oversized length...).
    #[error("corrupt record log: {0}")]
    RecordLog(String),
    /// An offset or requested duration puts audio absurdly far from the chat start.
    #[error("timeline too long: {ms} ms exceeds the {max_ms} ms limit")]
    TimelineTooLong {
        /// The offending position.
        ms: u64,
        /// The limit ([`crate::MAX_TIMELINE_MS`]).
        max_ms: u64,
    },
    /// Internal resampler failure.
    #[error("resampler error: {0}")]
    Resample(String),
    /// AAC encoder failure.
    #[error("AAC encoder error: {0}")]
    Encode(String),
    /// MP4 muxing failure.
    #[error("MP4 mux error: {0}")]
    Mux(String),
    /// An error attributed to one voice's input.
    #[error("{voice} audio: {source}")]
    InVoice {
        /// The voice whose input failed.
        voice: Voice,
        /// The underlying error.
        #[source]
        source: Box<AudioError>,
    },
    /// I/O error on the record log, spool file or output.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl AudioError {
    /// Attributes the error to `voice` (idempotent; [`AudioError::NoAudio`] is never wrapped).
    #[cfg(feature = "reconstruct")]
    pub(crate) fn in_voice(self, voice: Voice) -> Self {
        match self {
            AudioError::NoAudio | AudioError::InVoice { .. } => self,
            other => AudioError::InVoice {
                voice,
                source: Box::new(other),
            },
        }
    }

    /// The innermost error, looking through [`AudioError::InVoice`].
    pub fn root(&self) -> &AudioError {
        match self {
            AudioError::InVoice { source, .. } => source.root(),
            other => other,
        }
    }
}
