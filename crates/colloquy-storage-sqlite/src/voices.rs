//! Text to speech's generations and saved voices ([`VoiceStore`]), in the tables of
//! migration 0010.

use crate::{db, SqliteStore};
use async_trait::async_trait;
use colloquy_storage::*;
use uuid::Uuid;

type VoiceRow = (String, String, String, i64);

fn voice(row: VoiceRow) -> StoreResult<SavedVoice> {
    let (id, name, settings, created_on) = row;
    Ok(SavedVoice {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Database(Box::new(e)))?,
        name,
        settings,
        created_on,
    })
}

const VOICE_COLUMNS: &str = "SELECT id, name, settings, created_on FROM tts_voices";

#[async_trait]
impl VoiceStore for SqliteStore {
    async fn remember_generations(
        &self,
        user_id: Uuid,
        generations: &[(Uuid, String)],
        now_ms: i64,
        expires_on: i64,
    ) -> StoreResult<()> {
        let mut tx = self.write.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM tts_generations WHERE expires_on < ?")
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for (id, settings) in generations {
            sqlx::query(
                "INSERT INTO tts_generations (id, user_id, settings, created_on, expires_on) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(id.to_string())
            .bind(user_id.to_string())
            .bind(storable_text(settings))
            .bind(now_ms)
            .bind(expires_on)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn generation(
        &self,
        user_id: Uuid,
        id: Uuid,
        now_ms: i64,
    ) -> StoreResult<Option<String>> {
        sqlx::query_scalar(
            "SELECT settings FROM tts_generations WHERE id = ? AND user_id = ? AND expires_on >= ?",
        )
        .bind(id.to_string())
        .bind(user_id.to_string())
        .bind(now_ms)
        .fetch_optional(&self.read)
        .await
        .map_err(db)
    }

    async fn save_voice(&self, user_id: Uuid, v: &SavedVoice) -> StoreResult<VoiceSaved> {
        let done = sqlx::query(
            "INSERT INTO tts_voices (id, user_id, name, settings, created_on) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, name) DO NOTHING",
        )
        .bind(v.id.to_string())
        .bind(user_id.to_string())
        .bind(storable_text(&v.name))
        .bind(storable_text(&v.settings))
        .bind(v.created_on)
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(if done.rows_affected() == 1 {
            VoiceSaved::Saved
        } else {
            VoiceSaved::NameTaken
        })
    }

    async fn list_voices(&self, user_id: Uuid) -> StoreResult<Vec<SavedVoice>> {
        let rows: Vec<VoiceRow> = sqlx::query_as(&format!(
            "{VOICE_COLUMNS} WHERE user_id = ? ORDER BY name, id"
        ))
        .bind(user_id.to_string())
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.into_iter().map(voice).collect()
    }

    async fn voice_by_name(&self, user_id: Uuid, name: &str) -> StoreResult<Option<SavedVoice>> {
        let row: Option<VoiceRow> =
            sqlx::query_as(&format!("{VOICE_COLUMNS} WHERE user_id = ? AND name = ?"))
                .bind(user_id.to_string())
                .bind(storable_text(name))
                .fetch_optional(&self.read)
                .await
                .map_err(db)?;
        row.map(voice).transpose()
    }

    async fn voice_by_id(&self, user_id: Uuid, id: Uuid) -> StoreResult<Option<SavedVoice>> {
        let row: Option<VoiceRow> =
            sqlx::query_as(&format!("{VOICE_COLUMNS} WHERE user_id = ? AND id = ?"))
                .bind(user_id.to_string())
                .bind(id.to_string())
                .fetch_optional(&self.read)
                .await
                .map_err(db)?;
        row.map(voice).transpose()
    }

    async fn delete_voice(&self, user_id: Uuid, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM tts_voices WHERE user_id = ? AND name = ?")
            .bind(user_id.to_string())
            .bind(storable_text(name))
            .execute(&self.write)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
