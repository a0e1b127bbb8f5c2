//! The object store holding captured audio and reconstructed MP4s: a folder under the data
//! dir by default, any S3-compatible store when `[storage]` names a bucket.

use crate::config::StorageSettings;
use anyhow::Context;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use std::path::Path as FsPath;
use std::sync::Arc;
use uuid::Uuid;

/// Whose voice a captured stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Voice {
    /// The person talking to the assistant.
    User,
    /// The assistant.
    Assistant,
}

impl Voice {
    /// Folder name of the voice.
    pub fn as_str(self) -> &'static str {
        match self {
            Voice::User => "user",
            Voice::Assistant => "assistant",
        }
    }
}

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
    /// Spans of a voice's audio that could not be stored (JSON list of
    /// [`crate::capture::MissingSpan`]), written once the store accepts writes again.
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
    /// The store.
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

    /// Erases everything stored for a chat: captured segments, formats and its MP4.
    pub async fn erase_chat(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
    ) -> Result<(), object_store::Error> {
        use futures::TryStreamExt;
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

    /// An in-memory store, for tests.
    pub fn in_memory() -> Self {
        Self {
            store: Arc::new(object_store::memory::InMemory::new()),
            s3: None,
        }
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
}
