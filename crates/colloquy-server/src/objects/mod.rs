//! The one door to stored audio: the object store holding captured audio and reconstructed
//! MP4s (a folder under the data dir by default, any S3-compatible store when `[storage]`
//! names a bucket). Everything else asks [`Objects`]: the recorders write captured
//! segments, formats and missing-span notes through it, the workers fetch a chat's voices
//! and upload the MP4 through it, the download route reads files through it, REST and the
//! UI get download links from it, and deleting a chat erases through it. No other code
//! names `object_store` (tests may look at [`Objects::store`] directly).

use crate::clock::now_ms;
use crate::config::StorageSettings;
mod keys;
#[cfg(test)]
mod tests;

pub use keys::*;

use crate::signing::{UrlSigner, URL_LIFETIME_MS};
use anyhow::Context;
use bytes::Bytes;
use colloquy_audio::VoiceFormat;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};
use serde::Serialize;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

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
        Ok(Some((format, path)))
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
