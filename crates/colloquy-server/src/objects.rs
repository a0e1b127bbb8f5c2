//! The one door to stored audio: the object store holding captured audio and reconstructed
//! MP4s (a folder under the data dir by default, any S3-compatible store when `[storage]`
//! names a bucket). Everything else asks [`Objects`]: the recorders write captured
//! segments, formats and missing-span notes through it, the workers fetch a chat's voices
//! and upload the MP4 through it, the download route reads files through it, REST and the
//! UI get download links from it, and deleting a chat erases through it. No other code
//! names `object_store` (tests may look at [`Objects::store`] directly).

use crate::clock::now_ms;
use crate::config::StorageSettings;
use crate::signing::{UrlSigner, URL_LIFETIME_MS};
use anyhow::Context;
use bytes::Bytes;
use colloquy_audio::{Linear16Format, VoiceFormat};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// Whose voice a captured stream is; [`Voice::as_str`] is its folder name in the keys.
pub use colloquy_audio::Voice;

/// Why the object store refused a request.
pub type ObjectError = object_store::Error;

/// How a voice's chunks are encoded (stored as the voice's `format.json`, e.g.
/// `{"format":"linear16","sample_rate":16000,"channels":1}`, `{"format":"container"}` or
/// `{"format":"wav_clips"}`). The reconstruction reads it as colloquy-audio's
/// [`VoiceFormat`].
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

impl From<CapturedFormat> for VoiceFormat {
    fn from(f: CapturedFormat) -> Self {
        match f {
            CapturedFormat::Linear16 {
                sample_rate,
                channels,
            } => VoiceFormat::Linear16(Linear16Format {
                sample_rate,
                channels,
            }),
            CapturedFormat::Container => VoiceFormat::Container,
            CapturedFormat::WavClips => VoiceFormat::WavClips,
        }
    }
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

/// The object store and, for S3, its URL signer.
#[derive(Clone)]
pub struct Objects {
    /// The store. Only this module reads and writes it; tests may look at it directly.
    pub store: Arc<dyn ObjectStore>,
    /// Set when the store can presign URLs (S3); local files are served by Colloquy itself.
    pub s3: Option<Arc<AmazonS3>>,
}

impl Objects {
    /// Opens the configured store: S3 when a bucket is set, else `<data_dir>/objects`.
    pub fn open(settings: &StorageSettings, data_dir: &FsPath) -> anyhow::Result<Self> {
        match &settings.bucket {
            Some(bucket) => {
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(settings.region.as_deref().unwrap_or("us-east-1"));
                if let Some(endpoint) = &settings.endpoint {
                    b = b
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let (Some(id), Some(secret)) =
                    (&settings.access_key_id, &settings.secret_access_key)
                {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                let s3 = Arc::new(b.build().context("invalid [storage] S3 settings")?);
                Ok(Self {
                    store: s3.clone(),
                    s3: Some(s3),
                })
            }
            None => {
                let dir = data_dir.join("objects");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("could not create {}", dir.display()))?;
                let local = LocalFileSystem::new_with_prefix(&dir)
                    .with_context(|| format!("could not open {}", dir.display()))?
                    .with_automatic_cleanup(true);
                Ok(Self {
                    store: Arc::new(local),
                    s3: None,
                })
            }
        }
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Self {
        Self {
            store: Arc::new(object_store::memory::InMemory::new()),
            s3: None,
        }
    }

    // Capture: what the recorders write.

    /// Writes a voice's `format.json`.
    pub async fn write_format(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        voice: Voice,
        format: CapturedFormat,
    ) -> Result<(), ObjectError> {
        let key = ObjectKey::VoiceFormat {
            user_id,
            chat_id,
            voice,
        };
        self.put_json(&key, &format).await
    }

    /// Writes segment `index` of a voice's records.
    pub async fn write_segment(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        voice: Voice,
        index: u32,
        records: Bytes,
    ) -> Result<(), ObjectError> {
        let key = ObjectKey::Segment {
            user_id,
            chat_id,
            voice,
            index,
        };
        self.store
            .put(&key.path(), PutPayload::from(records))
            .await?;
        Ok(())
    }

    /// Writes a voice's `missing.json`: every span of it lost so far.
    pub async fn write_missing(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        voice: Voice,
        spans: &[MissingSpan],
    ) -> Result<(), ObjectError> {
        let key = ObjectKey::VoiceMissing {
            user_id,
            chat_id,
            voice,
        };
        self.put_json(&key, spans).await
    }

    async fn put_json<T: Serialize + ?Sized>(
        &self,
        key: &ObjectKey,
        value: &T,
    ) -> Result<(), ObjectError> {
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.store.put(&key.path(), PutPayload::from(body)).await?;
        Ok(())
    }

    // Reconstruction: what the workers read and write.

    /// Downloads one voice's segments, in order, into `dir/<voice>.rec` (streaming) and
    /// returns its format and that file; `None` if the voice has no audio (no
    /// `format.json`).
    pub async fn fetch_voice(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        voice: Voice,
        dir: &FsPath,
    ) -> anyhow::Result<Option<(VoiceFormat, PathBuf)>> {
        let format_key = ObjectKey::VoiceFormat {
            user_id,
            chat_id,
            voice,
        };
        let format = match self.store.get(&format_key.path()).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let format: CapturedFormat =
            serde_json::from_slice(&format).context("unreadable captured-audio format")?;
        let mut segments: Vec<_> = self
            .store
            .list(Some(&ObjectKey::segments_prefix(user_id, chat_id, voice)))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        segments.sort();
        let path = dir.join(format!("{}.rec", voice.as_str()));
        let mut file = tokio::fs::File::create(&path).await?;
        for seg in segments {
            let mut stream = self.store.get(&seg).await?.into_stream();
            while let Some(bytes) = stream.try_next().await? {
                file.write_all(&bytes).await?;
            }
        }
        file.flush().await?;
        Ok(Some((format.into(), path)))
    }

    /// The spans of a voice's audio noted as lost (its `missing.json`); none when there is
    /// no note or it cannot be read.
    pub async fn missing_spans(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        voice: Voice,
    ) -> Vec<MissingSpan> {
        let key = ObjectKey::VoiceMissing {
            user_id,
            chat_id,
            voice,
        };
        match self.store.get(&key.path()).await {
            Ok(r) => match r.bytes().await {
                Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
                Err(_) => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }

    /// Streams a reconstructed MP4 from a local file into the store; returns its key (the
    /// reconstruction's `filename`).
    pub async fn upload_reconstruction(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        file: &FsPath,
    ) -> anyhow::Result<String> {
        let key = ObjectKey::Reconstruction { user_id, chat_id };
        let mut src = tokio::fs::File::open(file).await?;
        let mut dst = object_store::buffered::BufWriter::new(self.store.clone(), key.path());
        tokio::io::copy(&mut src, &mut dst).await?;
        dst.shutdown().await?;
        Ok(key.to_string())
    }

    // Downloads.

    /// A link to download the stored file `key`, valid for [`URL_LIFETIME_MS`] from now:
    /// the store's presigned URL on S3, else Colloquy's own download route signed by
    /// `signer`, under `base` (empty: a link relative to the host). `None` (logged) when
    /// S3 cannot presign.
    pub async fn download_link(
        &self,
        signer: &UrlSigner,
        base: &str,
        key: &str,
    ) -> Option<DownloadLink> {
        let expires_ms = now_ms() + URL_LIFETIME_MS;
        let url = match &self.s3 {
            Some(s3) => {
                use object_store::signer::Signer;
                let lifetime = std::time::Duration::from_millis(URL_LIFETIME_MS as u64);
                match s3
                    .signed_url(axum::http::Method::GET, &Path::from(key), lifetime)
                    .await
                {
                    Ok(u) => u.to_string(),
                    Err(e) => {
                        tracing::error!(error = %e, "could not presign the audio URL");
                        return None;
                    }
                }
            }
            None => signer.url(base, key, expires_ms),
        };
        Some(DownloadLink { url, expires_ms })
    }

    /// The size in bytes of the stored file `key`; `None` if there is none.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, ObjectError> {
        match self.store.head(&Path::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads the stored file `key`, all of it or the byte `range`; `None` if there is none.
    pub async fn read(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<ByteStream>, ObjectError> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        match self.store.get_opts(&Path::from(key), opts).await {
            Ok(r) => Ok(Some(r.into_stream().boxed())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    // Erasure.

    /// Erases everything stored for a chat: captured segments, formats and its MP4.
    pub async fn erase_chat(&self, user_id: Uuid, chat_id: Uuid) -> Result<(), ObjectError> {
        let captured: Vec<Path> = self
            .store
            .list(Some(&ObjectKey::capture_prefix(user_id, chat_id)))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        let mp4 = ObjectKey::Reconstruction { user_id, chat_id }.path();
        for path in captured.iter().chain(std::iter::once(&mp4)) {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_stable_paths() {
        let u = Uuid::nil();
        let c = Uuid::from_u128(1);
        assert_eq!(
            ObjectKey::Reconstruction {
                user_id: u,
                chat_id: c
            }
            .to_string(),
            format!("{u}/{c}/reconstructed_audio.mp4")
        );
        let seg = ObjectKey::Segment {
            user_id: u,
            chat_id: c,
            voice: Voice::User,
            index: 7,
        };
        assert_eq!(
            seg.to_string(),
            format!("capture/{u}/{c}/user/segments/00000007.rec")
        );
        assert!(seg
            .to_string()
            .starts_with(ObjectKey::segments_prefix(u, c, Voice::User).as_ref()));
    }

    async fn collect(stream: ByteStream) -> Vec<u8> {
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        chunks.concat()
    }

    #[test]
    fn stored_formats_read_as_they_were_written() {
        for (json, format, voice) in [
            (
                r#"{"format":"linear16","sample_rate":16000,"channels":1}"#,
                CapturedFormat::Linear16 {
                    sample_rate: 16_000,
                    channels: 1,
                },
                VoiceFormat::Linear16(Linear16Format {
                    sample_rate: 16_000,
                    channels: 1,
                }),
            ),
            (
                r#"{"format":"container"}"#,
                CapturedFormat::Container,
                VoiceFormat::Container,
            ),
            (
                r#"{"format":"wav_clips"}"#,
                CapturedFormat::WavClips,
                VoiceFormat::WavClips,
            ),
        ] {
            assert_eq!(
                serde_json::from_str::<CapturedFormat>(json).unwrap(),
                format
            );
            assert_eq!(serde_json::to_string(&format).unwrap(), json);
            assert_eq!(VoiceFormat::from(format), voice);
        }
        assert_eq!(Voice::User.as_str(), "user");
        assert_eq!(Voice::Assistant.as_str(), "assistant");
    }

    #[tokio::test]
    async fn captured_voices_come_back_for_the_reconstruction() {
        let objects = Objects::in_memory();
        let (u, c) = (Uuid::new_v4(), Uuid::new_v4());
        let format = CapturedFormat::Linear16 {
            sample_rate: 24_000,
            channels: 2,
        };
        objects
            .write_format(u, c, Voice::User, format)
            .await
            .unwrap();
        // Written out of order; read back in segment order, all of them.
        for (index, body) in [(1u32, &b"second"[..]), (0, b"first-"), (10, b"-last")] {
            objects
                .write_segment(u, c, Voice::User, index, Bytes::from_static(body))
                .await
                .unwrap();
        }
        let lost = [MissingSpan {
            from_ms: 100,
            to_ms: 250,
        }];
        objects
            .write_missing(u, c, Voice::User, &lost)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (got, path) = objects
            .fetch_voice(u, c, Voice::User, dir.path())
            .await
            .unwrap()
            .expect("the user's voice");
        assert_eq!(got, VoiceFormat::from(format));
        assert_eq!(path, dir.path().join("user.rec"));
        assert_eq!(std::fs::read(&path).unwrap(), b"first-second-last");
        assert_eq!(objects.missing_spans(u, c, Voice::User).await, lost);
        // A voice that said nothing has no audio and no note.
        assert!(objects
            .fetch_voice(u, c, Voice::Assistant, dir.path())
            .await
            .unwrap()
            .is_none());
        assert!(objects
            .missing_spans(u, c, Voice::Assistant)
            .await
            .is_empty());
        // What was stored is where the keys say, in the stored formats.
        let key = ObjectKey::VoiceFormat {
            user_id: u,
            chat_id: c,
            voice: Voice::User,
        };
        let raw = objects.read(&key.to_string(), None).await;
        assert_eq!(
            collect(raw.unwrap().unwrap()).await,
            br#"{"format":"linear16","sample_rate":24000,"channels":2}"#
        );
        // Another chat of the same user is another folder.
        assert!(objects
            .fetch_voice(u, Uuid::new_v4(), Voice::User, dir.path())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn an_uploaded_file_is_read_whole_or_in_ranges_and_erased_with_its_chat() {
        let objects = Objects::in_memory();
        let (u, c) = (Uuid::new_v4(), Uuid::new_v4());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.mp4");
        let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        std::fs::write(&file, &body).unwrap();
        let key = objects.upload_reconstruction(u, c, &file).await.unwrap();
        assert_eq!(key, format!("{u}/{c}/reconstructed_audio.mp4"));
        assert_eq!(objects.size(&key).await.unwrap(), Some(10_000));
        let whole = objects.read(&key, None).await.unwrap().unwrap();
        assert_eq!(collect(whole).await, body);
        let part = objects.read(&key, Some(10..20)).await.unwrap().unwrap();
        assert_eq!(collect(part).await, &body[10..20]);
        objects
            .write_segment(u, c, Voice::Assistant, 0, Bytes::from_static(b"x"))
            .await
            .unwrap();
        objects.erase_chat(u, c).await.unwrap();
        assert_eq!(objects.size(&key).await.unwrap(), None);
        assert!(objects.read(&key, None).await.unwrap().is_none());
        assert!(objects
            .fetch_voice(u, c, Voice::Assistant, dir.path())
            .await
            .unwrap()
            .is_none());
        // Erasing what is already gone is no error.
        objects.erase_chat(u, c).await.unwrap();
    }

    #[tokio::test]
    async fn local_links_go_through_the_signed_download_route() {
        let objects = Objects::in_memory();
        let signer = UrlSigner::new(b"secret");
        let key = "u/c/reconstructed_audio.mp4";
        let before = now_ms();
        let link = objects
            .download_link(&signer, "http://colloquy.test", key)
            .await
            .unwrap();
        assert!((before + URL_LIFETIME_MS..=now_ms() + URL_LIFETIME_MS).contains(&link.expires_ms));
        let path = format!("{}{key}", crate::signing::DOWNLOAD_PREFIX);
        assert_eq!(
            link.url,
            format!(
                "http://colloquy.test{path}?expires={}&signature={}",
                link.expires_ms,
                signer.sign(&path, link.expires_ms)
            )
        );
        // Under an empty base the link is relative to the host.
        let relative = objects.download_link(&signer, "", key).await.unwrap();
        assert!(relative.url.starts_with(&format!("{path}?expires=")));
    }

    #[tokio::test]
    async fn s3_links_are_presigned_by_the_store() {
        let settings = StorageSettings {
            bucket: Some("audio".into()),
            endpoint: Some("http://127.0.0.1:9".into()),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("secret".into()),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(&settings, dir.path()).unwrap();
        let signer = UrlSigner::new(b"secret");
        let before = now_ms();
        let link = objects
            .download_link(
                &signer,
                "http://colloquy.test",
                "u/c/reconstructed_audio.mp4",
            )
            .await
            .unwrap();
        assert!(
            link.url
                .starts_with("http://127.0.0.1:9/audio/u/c/reconstructed_audio.mp4?"),
            "{}",
            link.url
        );
        assert!(link.url.contains("X-Amz-Expires=3600"), "{}", link.url);
        assert!(link.url.contains("X-Amz-Signature="), "{}", link.url);
        assert!(!link.url.contains(crate::signing::DOWNLOAD_PREFIX));
        assert!(link.expires_ms >= before + URL_LIFETIME_MS);
    }
}
