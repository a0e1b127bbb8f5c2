//! What is stored: the keys of every kind of object, the captured formats and notes, and
//! download links.

use bytes::Bytes;
use colloquy_audio::VoiceFormat;
use futures::stream::BoxStream;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Whose voice a captured stream is; [`Voice::as_str`] is its folder name in the keys.
pub use colloquy_audio::Voice;

/// Why the object store refused a request.
pub type ObjectError = object_store::Error;

/// How a voice's chunks are encoded, stored as the voice's `format.json` and read back by
/// the reconstruction: colloquy-audio's [`VoiceFormat`], the one stored-format type.
pub type CapturedFormat = VoiceFormat;

/// A span of a voice's audio (ms from the chat's start) that was received but could not be
/// stored; the reconstruction reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingSpan {
    /// Offset of the first lost chunk.
    pub from_ms: i64,
    /// Offset of the last lost chunk.
    pub to_ms: i64,
}

/// A link to download a stored file, and until when it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadLink {
    /// The URL.
    pub url: String,
    /// Its expiry, epoch ms.
    pub expires_ms: i64,
}

/// The bytes of a stored file, as they are read.
pub type ByteStream = BoxStream<'static, Result<Bytes, ObjectError>>;

/// Every kind of object Colloquy stores; the one place that knows their paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKey {
    /// The format of one voice's captured audio (JSON), written with its first chunk.
    VoiceFormat {
        /// Owner.
        user_id: Uuid,
        /// Chat.
        chat_id: Uuid,
        /// Voice.
        voice: Voice,
    },
    /// Spans of a voice's audio that could not be stored (JSON list of [`MissingSpan`]),
    /// written once the store accepts writes again.
    VoiceMissing {
        /// Owner.
        user_id: Uuid,
        /// Chat.
        chat_id: Uuid,
        /// Voice.
        voice: Voice,
    },
    /// One flushed segment of a voice's chunk records.
    Segment {
        /// Owner.
        user_id: Uuid,
        /// Chat.
        chat_id: Uuid,
        /// Voice.
        voice: Voice,
        /// Segment number, from 0.
        index: u32,
    },
    /// The reconstructed MP4 of a chat.
    Reconstruction {
        /// Owner.
        user_id: Uuid,
        /// Chat.
        chat_id: Uuid,
    },
}

impl ObjectKey {
    /// Object path.
    pub fn path(&self) -> Path {
        Path::from(self.to_string())
    }

    /// Folder holding a voice's segments.
    pub fn segments_prefix(user_id: Uuid, chat_id: Uuid, voice: Voice) -> Path {
        Path::from(format!(
            "capture/{user_id}/{chat_id}/{}/segments",
            voice.as_str()
        ))
    }

    /// Folder holding everything captured for a chat.
    pub fn capture_prefix(user_id: Uuid, chat_id: Uuid) -> Path {
        Path::from(format!("capture/{user_id}/{chat_id}"))
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectKey::VoiceFormat {
                user_id,
                chat_id,
                voice,
            } => write!(
                f,
                "capture/{user_id}/{chat_id}/{}/format.json",
                voice.as_str()
            ),
            ObjectKey::VoiceMissing {
                user_id,
                chat_id,
                voice,
            } => write!(
                f,
                "capture/{user_id}/{chat_id}/{}/missing.json",
                voice.as_str()
            ),
            ObjectKey::Segment {
                user_id,
                chat_id,
                voice,
                index,
            } => write!(
                f,
                "capture/{user_id}/{chat_id}/{}/segments/{index:08}.rec",
                voice.as_str()
            ),
            ObjectKey::Reconstruction { user_id, chat_id } => {
                write!(f, "{user_id}/{chat_id}/reconstructed_audio.mp4")
            }
        }
    }
}
