//! Durable audio capture. Each voice of a chat is a sequence of records
//! (`offset_ms: i64` LE, `len: u32` LE, bytes), buffered briefly and written to the object
//! store as numbered segments at least every [`FLUSH_INTERVAL`] (or every
//! [`SEGMENT_BYTES`]). A crash loses at most the unflushed tail; memory per voice stays
//! below one segment whatever the chat length.
//!
//! User audio from `audio_input` and assistant audio from `audio_output` (speech engines)
//! go through the same [`VoiceRecorder`].

use crate::objects::{ObjectKey, Objects, Voice};
use object_store::PutPayload;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Longest time a captured chunk stays in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// Segment size that triggers an early write.
pub const SEGMENT_BYTES: usize = 1024 * 1024;

/// How a voice's chunks are encoded (stored as the voice's `format.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum CapturedFormat {
    /// Raw little-endian 16-bit PCM.
    Linear16 {
        /// Samples per second.
        sample_rate: u32,
        /// Interleaved channels.
        channels: u16,
    },
    /// One container stream (WebM/Opus or WAV) split across chunks.
    Container,
    /// Every chunk is a complete WAV file (speech-engine output).
    WavClips,
}

/// Why audio could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The object store failed.
    #[error("could not write audio to the object store: {0}")]
    Store(#[from] object_store::Error),
}

/// Appends one voice's chunks of one chat to the object store.
pub struct VoiceRecorder {
    objects: Objects,
    user_id: Uuid,
    chat_id: Uuid,
    voice: Voice,
    format: CapturedFormat,
    buf: Vec<u8>,
    next_segment: u32,
    oldest_unflushed: Option<Instant>,
    chunks: u64,
}

impl VoiceRecorder {
    /// A recorder for a voice whose chunks use `format`.
    pub fn new(
        objects: Objects,
        user_id: Uuid,
        chat_id: Uuid,
        voice: Voice,
        format: CapturedFormat,
    ) -> Self {
        Self {
            objects,
            user_id,
            chat_id,
            voice,
            format,
            buf: Vec::new(),
            next_segment: 0,
            oldest_unflushed: None,
            chunks: 0,
        }
    }

    /// The format chunks are recorded in.
    pub fn format(&self) -> CapturedFormat {
        self.format
    }

    /// Chunks appended so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// When the buffered tail must be written, if anything is buffered.
    pub fn flush_deadline(&self) -> Option<Instant> {
        self.oldest_unflushed.map(|t| t + FLUSH_INTERVAL)
    }

    /// Appends a chunk that arrived `offset_ms` after the chat started.
    pub async fn append(&mut self, offset_ms: i64, data: &[u8]) -> Result<(), CaptureError> {
        if self.chunks == 0 {
            let format = serde_json::to_vec(&self.format).unwrap_or_default();
            let key = ObjectKey::VoiceFormat {
                user_id: self.user_id,
                chat_id: self.chat_id,
                voice: self.voice,
            };
            self.objects
                .store
                .put(&key.path(), PutPayload::from(format))
                .await?;
        }
        write_record(&mut self.buf, offset_ms, data);
        self.chunks += 1;
        self.oldest_unflushed.get_or_insert_with(Instant::now);
        if self.buf.len() >= SEGMENT_BYTES
            || self.flush_deadline().is_some_and(|d| d <= Instant::now())
        {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the buffered records as the next segment.
    pub async fn flush(&mut self) -> Result<(), CaptureError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let key = ObjectKey::Segment {
            user_id: self.user_id,
            chat_id: self.chat_id,
            voice: self.voice,
            index: self.next_segment,
        };
        let body = std::mem::take(&mut self.buf);
        self.objects
            .store
            .put(&key.path(), PutPayload::from(body))
            .await?;
        self.next_segment += 1;
        self.oldest_unflushed = None;
        Ok(())
    }
}

/// Appends one record to `buf`.
pub fn write_record(buf: &mut Vec<u8>, offset_ms: i64, data: &[u8]) {
    buf.extend_from_slice(&offset_ms.to_le_bytes());
    buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
    buf.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn segments_hold_records_in_order() {
        let objects = Objects::in_memory();
        let (u, c) = (Uuid::new_v4(), Uuid::new_v4());
        let mut rec = VoiceRecorder::new(
            objects.clone(),
            u,
            c,
            Voice::User,
            CapturedFormat::Linear16 {
                sample_rate: 16_000,
                channels: 1,
            },
        );
        rec.append(0, b"abcd").await.unwrap();
        assert!(
            rec.flush_deadline().is_some(),
            "buffered until the deadline"
        );
        rec.flush().await.unwrap();
        rec.append(20, b"efgh").await.unwrap();
        rec.flush().await.unwrap();
        assert_eq!(rec.flush_deadline(), None);
        let mut listed: Vec<_> = objects
            .store
            .list(Some(&ObjectKey::segments_prefix(u, c, Voice::User)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        listed.sort();
        assert_eq!(listed.len(), 2);
        let second = objects
            .store
            .get(&listed[1].as_str().into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut expected = Vec::new();
        write_record(&mut expected, 20, b"efgh");
        assert_eq!(second.to_vec(), expected);
        let fmt = objects
            .store
            .get(
                &ObjectKey::VoiceFormat {
                    user_id: u,
                    chat_id: c,
                    voice: Voice::User,
                }
                .path(),
            )
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<CapturedFormat>(&fmt).unwrap(),
            CapturedFormat::Linear16 {
                sample_rate: 16_000,
                channels: 1
            }
        );
    }
}
