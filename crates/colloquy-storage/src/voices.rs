//! Text to speech's stored state (spec `evi-platform.md` §7): the generations a client may
//! continue (`context.generation_id`) or save as a voice, and each account's saved voices
//! (`CUSTOM_VOICE`), stored per account by [`VoiceStore`].
//!
//! Both are settings as JSON text that the server writes and reads (the store never looks
//! inside): the engine voice, speed, pitch and so on that a generation used.
//!
//! Rules every backend keeps:
//! - Generations expire: [`VoiceStore::generation`] does not return one whose `expires_on`
//!   has passed, and [`VoiceStore::remember_generations`] deletes the expired ones, so the
//!   table holds at most one lifetime's worth. They live in the database, so every server
//!   sharing it can continue or save a generation another server made.
//! - Voice names are unique per account ([`VoiceSaved::NameTaken`] otherwise).
//! - Everything is scoped by account: another account's generations and voices are absent.

use crate::StoreResult;
use async_trait::async_trait;
use uuid::Uuid;

/// One account's saved voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedVoice {
    /// Its id (`ReturnVoice.id`).
    pub id: Uuid,
    /// Its name, unique in the account.
    pub name: String,
    /// What to speak with, as JSON text.
    pub settings: String,
    /// Epoch ms of its creation.
    pub created_on: i64,
}

/// The outcome of [`VoiceStore::save_voice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceSaved {
    /// Stored.
    Saved,
    /// The account already has a voice of that name; nothing stored.
    NameTaken,
}

/// Generations and saved voices (see the module documentation). The default methods fail,
/// for stores that keep none (test doubles).
#[async_trait]
pub trait VoiceStore: Send + Sync {
    /// Remembers generations of `user_id` (id and settings as JSON text) until
    /// `expires_on` (epoch ms), and deletes every generation that expired before `now_ms`.
    async fn remember_generations(
        &self,
        _user_id: Uuid,
        _generations: &[(Uuid, String)],
        _now_ms: i64,
        _expires_on: i64,
    ) -> StoreResult<()> {
        Err(unsupported())
    }

    /// The settings of generation `id` of `user_id`, unless it expired before `now_ms`.
    async fn generation(
        &self,
        _user_id: Uuid,
        _id: Uuid,
        _now_ms: i64,
    ) -> StoreResult<Option<String>> {
        Err(unsupported())
    }

    /// Saves a voice of `user_id`.
    async fn save_voice(&self, _user_id: Uuid, _voice: &SavedVoice) -> StoreResult<VoiceSaved> {
        Err(unsupported())
    }

    /// The account's voices, by name (byte order).
    async fn list_voices(&self, _user_id: Uuid) -> StoreResult<Vec<SavedVoice>> {
        Err(unsupported())
    }

    /// The account's voice named `name` (exact match).
    async fn voice_by_name(&self, _user_id: Uuid, _name: &str) -> StoreResult<Option<SavedVoice>> {
        Err(unsupported())
    }

    /// The account's voice with id `id`.
    async fn voice_by_id(&self, _user_id: Uuid, _id: Uuid) -> StoreResult<Option<SavedVoice>> {
        Err(unsupported())
    }

    /// Deletes the account's voice named `name`; `false` when it has none.
    async fn delete_voice(&self, _user_id: Uuid, _name: &str) -> StoreResult<bool> {
        Err(unsupported())
    }
}

fn unsupported() -> crate::StoreError {
    crate::StoreError::Database("this store keeps no voices or generations".into())
}
