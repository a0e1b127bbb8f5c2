//! Durable audio capture. Each voice of a chat is a sequence of records (colloquy-audio's
//! record log, [`colloquy_audio::write_record`]: `offset_ms: i64` LE, `len: u32` LE,
//! bytes), buffered briefly and written through [`Objects`] as numbered segments at least every [`FLUSH_INTERVAL`] (or every
//! [`SEGMENT_BYTES`]). A crash loses at most the unflushed tail; memory per voice stays
//! below one segment whatever the chat length.
//!
//! User audio from `audio_input` and assistant audio from `audio_output` (speech engines)
//! go through the same [`VoiceRecorder`].

pub use crate::objects::{CapturedFormat, MissingSpan};

use crate::objects::{ObjectError, Objects, Voice};
use colloquy_audio::write_record;
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

/// Why audio could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The object store failed; the audio is still buffered and will be retried.
    #[error("could not write audio to the object store (will retry): {0}")]
    Store(#[from] ObjectError),
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
        cause: ObjectError,
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
        if let Err(e) = write_record(&mut self.buf, offset_ms, data) {
            return Err(self.refuse(offset_ms, e));
        }
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

    async fn try_write(&mut self) -> Result<(), ObjectError> {
        let (objects, user, chat, voice) = (&self.objects, self.user_id, self.chat_id, self.voice);
        if !self.format_written && self.chunks > 0 {
            objects.write_format(user, chat, voice, self.format).await?;
            self.format_written = true;
        }
        if !self.buf.is_empty() {
            let body = bytes::Bytes::from(std::mem::take(&mut self.buf));
            let written = objects
                .write_segment(user, chat, voice, self.next_segment, body.clone())
                .await;
            if let Err(e) = written {
                self.buf = body.into();
                return Err(e);
            }
            self.next_segment += 1;
            self.oldest_unflushed = None;
            self.buffered_span = None;
        }
        if self.missing_written < self.missing.len() {
            objects
                .write_missing(user, chat, voice, &self.missing)
                .await?;
            self.missing_written = self.missing.len();
        }
        Ok(())
    }

    /// Notes a chunk too large for one record ([`colloquy_audio::MAX_RECORD_LEN`], far
    /// above any message the server accepts) as lost: the reconstruction could not read
    /// it back.
    fn refuse(&mut self, offset_ms: i64, e: std::io::Error) -> CaptureError {
        let span = MissingSpan {
            from_ms: offset_ms,
            to_ms: offset_ms,
        };
        self.missing.push(span);
        CaptureError::Lost {
            span,
            cause: ObjectError::Generic {
                store: "capture",
                source: Box::new(e),
            },
        }
    }

    /// Drops the buffered audio after writes kept failing and notes its span.
    fn give_up(&mut self, cause: ObjectError) -> CaptureError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::ObjectKey;
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
        write_record(&mut expected, 9_000, b"after").unwrap();
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
        write_record(&mut expected, 0, b"one").unwrap();
        write_record(&mut expected, 20, b"two").unwrap();
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
            CapturedFormat::Linear16(colloquy_audio::Linear16Format {
                sample_rate: 16_000,
                channels: 1,
            }),
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
        write_record(&mut expected, 20, b"efgh").unwrap();
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
            CapturedFormat::Linear16(colloquy_audio::Linear16Format {
                sample_rate: 16_000,
                channels: 1,
            })
        );
    }
}
