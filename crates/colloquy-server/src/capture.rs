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
/// While the store refuses writes, buffered audio is kept (and retried with a growing
/// delay) until it reaches this size or has failed for [`GIVE_UP_AFTER`]; then it is
/// dropped and its span recorded as missing. Bounds memory per voice.
pub const MAX_BUFFERED_BYTES: usize = 4 * SEGMENT_BYTES;
/// How long writes may keep failing before the buffered audio is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// Delay before the first retry of a failed write; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(4);

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

/// A span of a voice's audio (ms from the chat's start) that was received but could not be
/// stored; the reconstruction reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingSpan {
    /// Offset of the first lost chunk.
    pub from_ms: i64,
    /// Offset of the last lost chunk.
    pub to_ms: i64,
}

/// Why audio could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The object store failed; the audio is still buffered and will be retried.
    #[error("could not write audio to the object store (will retry): {0}")]
    Store(#[from] object_store::Error),
    /// Writes kept failing: this span of audio was dropped.
    #[error(
        "audio from {:.1} s to {:.1} s could not be stored and is lost: {cause}",
        span.from_ms as f64 / 1000.0,
        span.to_ms as f64 / 1000.0
    )]
    Lost {
        /// What was dropped.
        span: MissingSpan,
        /// The last store error.
        cause: object_store::Error,
    },
}

/// Appends one voice's chunks of one chat to the object store. Writes that fail are
/// retried (the audio stays buffered, up to [`MAX_BUFFERED_BYTES`] and [`GIVE_UP_AFTER`]);
/// audio that finally cannot be written is dropped and its span recorded in the voice's
/// `missing.json` once the store works again.
pub struct VoiceRecorder {
    objects: Objects,
    user_id: Uuid,
    chat_id: Uuid,
    voice: Voice,
    format: CapturedFormat,
    format_written: bool,
    buf: Vec<u8>,
    /// Offsets of the first and last chunk in `buf`.
    buffered_span: Option<MissingSpan>,
    next_segment: u32,
    oldest_unflushed: Option<Instant>,
    chunks: u64,
    /// Since when writes have been failing, and when to try again.
    failing_since: Option<Instant>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    missing: Vec<MissingSpan>,
    missing_written: usize,
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
            format_written: false,
            buf: Vec::new(),
            buffered_span: None,
            next_segment: 0,
            oldest_unflushed: None,
            chunks: 0,
            failing_since: None,
            retry_at: None,
            retry_delay: FIRST_RETRY_DELAY,
            missing: Vec::new(),
            missing_written: 0,
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

    /// Spans given up so far.
    pub fn missing(&self) -> &[MissingSpan] {
        &self.missing
    }

    /// When the next write is due, if anything waits to be written: the flush deadline of
    /// the buffered tail, or the next retry while writes fail.
    pub fn flush_deadline(&self) -> Option<Instant> {
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        self.oldest_unflushed.map(|t| t + FLUSH_INTERVAL)
    }

    /// Whether something still waits to be written (buffered audio or a missing-span note).
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty()
            || self.missing_written < self.missing.len()
            || (!self.format_written && self.chunks > 0)
    }

    /// Appends a chunk that arrived `offset_ms` after the chat started. `Err` when a write
    /// failed: [`CaptureError::Store`] means the chunk is kept and retried,
    /// [`CaptureError::Lost`] that buffered audio had to be dropped.
    pub async fn append(&mut self, offset_ms: i64, data: &[u8]) -> Result<(), CaptureError> {
        write_record(&mut self.buf, offset_ms, data);
        self.chunks += 1;
        let span = self.buffered_span.get_or_insert(MissingSpan {
            from_ms: offset_ms,
            to_ms: offset_ms,
        });
        span.to_ms = offset_ms;
        self.oldest_unflushed.get_or_insert_with(Instant::now);
        let due = match self.retry_at {
            Some(at) => at <= Instant::now(),
            None => {
                self.buf.len() >= SEGMENT_BYTES
                    || self.flush_deadline().is_some_and(|d| d <= Instant::now())
            }
        };
        if due {
            self.flush().await?;
        } else if self.retry_at.is_some() && self.buf.len() >= MAX_BUFFERED_BYTES {
            // Still failing and the buffer is full: try once more, then give up.
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what is pending: the voice's format, the buffered records as the next
    /// segment, and new missing spans.
    pub async fn flush(&mut self) -> Result<(), CaptureError> {
        match self.try_write().await {
            Ok(()) => {
                self.failing_since = None;
                self.retry_at = None;
                self.retry_delay = FIRST_RETRY_DELAY;
                Ok(())
            }
            Err(e) => {
                let now = Instant::now();
                let since = *self.failing_since.get_or_insert(now);
                if !self.buf.is_empty()
                    && (self.buf.len() >= MAX_BUFFERED_BYTES || now - since >= GIVE_UP_AFTER)
                {
                    return Err(self.give_up(e));
                }
                self.retry_at = Some(now + self.retry_delay);
                self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY_DELAY);
                Err(CaptureError::Store(e))
            }
        }
    }

    /// Flushes, retrying failed writes until they succeed or the audio is given up
    /// (at most about [`GIVE_UP_AFTER`]); for the end of a chat.
    pub async fn flush_until_done(&mut self) -> Result<(), CaptureError> {
        let stop = Instant::now() + GIVE_UP_AFTER + MAX_RETRY_DELAY;
        loop {
            match self.flush().await {
                Ok(()) => return Ok(()),
                Err(CaptureError::Store(e)) if Instant::now() < stop => {
                    tracing::warn!(chat_id = %self.chat_id, voice = self.voice.as_str(), error = %e, "audio write failed; retrying");
                    if let Some(at) = self.retry_at {
                        tokio::time::sleep_until(at.min(stop)).await;
                    }
                }
                Err(CaptureError::Store(e)) => return Err(self.give_up(e)),
                Err(lost) => {
                    // What was lost is noted; write the note if the store recovered.
                    let _ = self.try_write().await;
                    return Err(lost);
                }
            }
        }
    }

    async fn try_write(&mut self) -> Result<(), object_store::Error> {
        if !self.format_written && self.chunks > 0 {
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
            self.format_written = true;
        }
        if !self.buf.is_empty() {
            let key = ObjectKey::Segment {
                user_id: self.user_id,
                chat_id: self.chat_id,
                voice: self.voice,
                index: self.next_segment,
            };
            let body = bytes::Bytes::from(std::mem::take(&mut self.buf));
            if let Err(e) = self
                .objects
                .store
                .put(&key.path(), PutPayload::from(body.clone()))
                .await
            {
                self.buf = body.into();
                return Err(e);
            }
            self.next_segment += 1;
            self.oldest_unflushed = None;
            self.buffered_span = None;
        }
        if self.missing_written < self.missing.len() {
            let key = ObjectKey::VoiceMissing {
                user_id: self.user_id,
                chat_id: self.chat_id,
                voice: self.voice,
            };
            let body = serde_json::to_vec(&self.missing).unwrap_or_default();
            self.objects
                .store
                .put(&key.path(), PutPayload::from(body))
                .await?;
            self.missing_written = self.missing.len();
        }
        Ok(())
    }

    /// Drops the buffered audio after writes kept failing and notes its span.
    fn give_up(&mut self, cause: object_store::Error) -> CaptureError {
        let span = self.buffered_span.take().unwrap_or(MissingSpan {
            from_ms: 0,
            to_ms: 0,
        });
        if !self.buf.is_empty() {
            tracing::error!(chat_id = %self.chat_id, voice = self.voice.as_str(), from_ms = span.from_ms, to_ms = span.to_ms, error = %cause, "audio could not be stored and was dropped");
            self.missing.push(span);
        }
        self.buf = Vec::new();
        self.oldest_unflushed = None;
        self.failing_since = None;
        // Keep trying now and then, to write the missing-span note.
        self.retry_at =
            (self.missing_written < self.missing.len()).then(|| Instant::now() + MAX_RETRY_DELAY);
        self.retry_delay = FIRST_RETRY_DELAY;
        CaptureError::Lost { span, cause }
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

    /// A store whose writes fail until `heal` is called: its root is a file, so no folder
    /// can be made under it.
    struct Breakable {
        root: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Breakable {
        fn new() -> (Self, Objects) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("store");
            std::fs::write(&root, b"not a folder").unwrap();
            let store = object_store::local::LocalFileSystem::new_with_prefix(&root).unwrap();
            let objects = Objects {
                store: std::sync::Arc::new(store),
                s3: None,
            };
            (Breakable { root, _dir: dir }, objects)
        }

        fn heal(&self) {
            std::fs::remove_file(&self.root).unwrap();
            std::fs::create_dir(&self.root).unwrap();
        }
    }

    async fn read(objects: &Objects, key: ObjectKey) -> Option<Vec<u8>> {
        match objects.store.get(&key.path()).await {
            Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn failed_writes_are_retried_and_lost_audio_is_noted() {
        let (store, objects) = Breakable::new();
        let (u, c) = (Uuid::new_v4(), Uuid::new_v4());
        let mut rec =
            VoiceRecorder::new(objects.clone(), u, c, Voice::User, CapturedFormat::WavClips);
        // A failed write keeps the audio and schedules a retry.
        rec.append(1_000, b"first").await.unwrap();
        match rec.flush().await {
            Err(CaptureError::Store(_)) => {}
            other => panic!("expected a retried failure, got {other:?}"),
        }
        assert!(rec.has_pending());
        let retry = rec.flush_deadline().expect("a retry is scheduled");
        assert!(retry > Instant::now());
        // Healing now would keep everything; instead the failure lasts until the buffer is
        // full, and the buffered span is given up.
        let big = vec![7u8; SEGMENT_BYTES];
        let mut lost = None;
        for i in 0..8 {
            match rec.append(2_000 + i * 100, &big).await {
                Ok(()) => {}
                Err(CaptureError::Store(_)) => {}
                Err(CaptureError::Lost { span, .. }) => {
                    lost = Some((i, span));
                    break;
                }
            }
        }
        let (last, span) = lost.expect("the audio was given up once the buffer was full");
        assert_eq!(span.from_ms, 1_000);
        assert_eq!(span.to_ms, 2_000 + last * 100);
        assert_eq!(rec.missing(), &[span]);
        // Space returns: new audio, the format and the note of what was lost are written.
        store.heal();
        rec.append(9_000, b"after").await.unwrap();
        rec.flush_until_done().await.unwrap();
        assert!(!rec.has_pending());
        let missing = read(
            &objects,
            ObjectKey::VoiceMissing {
                user_id: u,
                chat_id: c,
                voice: Voice::User,
            },
        )
        .await
        .expect("missing.json");
        assert_eq!(
            serde_json::from_slice::<Vec<MissingSpan>>(&missing).unwrap(),
            vec![span]
        );
        let segment = read(
            &objects,
            ObjectKey::Segment {
                user_id: u,
                chat_id: c,
                voice: Voice::User,
                index: 0,
            },
        )
        .await
        .expect("segment 0");
        let mut expected = Vec::new();
        write_record(&mut expected, 9_000, b"after");
        assert_eq!(segment, expected, "only the audio after the loss is stored");
        assert!(read(
            &objects,
            ObjectKey::VoiceFormat {
                user_id: u,
                chat_id: c,
                voice: Voice::User,
            },
        )
        .await
        .is_some());
    }

    #[tokio::test]
    async fn a_short_outage_loses_nothing() {
        let (store, objects) = Breakable::new();
        let (u, c) = (Uuid::new_v4(), Uuid::new_v4());
        let mut rec =
            VoiceRecorder::new(objects.clone(), u, c, Voice::User, CapturedFormat::WavClips);
        rec.append(0, b"one").await.unwrap();
        assert!(rec.flush().await.is_err());
        rec.append(20, b"two").await.unwrap();
        store.heal();
        rec.flush_until_done().await.unwrap();
        let segment = read(
            &objects,
            ObjectKey::Segment {
                user_id: u,
                chat_id: c,
                voice: Voice::User,
                index: 0,
            },
        )
        .await
        .unwrap();
        let mut expected = Vec::new();
        write_record(&mut expected, 0, b"one");
        write_record(&mut expected, 20, b"two");
        assert_eq!(segment, expected);
        assert!(rec.missing().is_empty());
    }

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
