//! Erasing chats with everything stored about them, and the groups they leave behind.

use crate::db;
use crate::rows::{col, Row};
use colloquy_storage::sql::Decode;
use colloquy_storage::*;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use std::collections::HashSet;
use uuid::Uuid;

/// Ids per `IN (…)` list when deleting chats' rows (well below SQLite's parameter limit).
const DELETE_CHUNK: usize = 500;

pub async fn delete_chats(
    write: &SqlitePool,
    user_id: Uuid,
    chat_ids: &[Uuid],
) -> StoreResult<Vec<Uuid>> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let uid = user_id.to_string();
    let mut deleted = Vec::new();
    let mut groups = HashSet::new();
    for chat_id in chat_ids {
        let cid = chat_id.to_string();
        let group: Option<String> =
            sqlx::query_scalar("SELECT chat_group_id FROM chats WHERE id = ? AND user_id = ?")
                .bind(&cid)
                .bind(&uid)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let Some(group) = group else { continue };
        for sql in [
            "DELETE FROM audio_jobs WHERE chat_id = ?",
            "DELETE FROM chat_webhooks WHERE chat_id = ?",
            "DELETE FROM webhook_deliveries WHERE chat_id = ?",
            "DELETE FROM audio_reconstructions WHERE chat_id = ?",
            "DELETE FROM chat_events WHERE chat_id = ?",
            "DELETE FROM chats WHERE id = ?",
        ] {
            sqlx::query(sql)
                .bind(&cid)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        groups.insert(group);
        deleted.push(*chat_id);
    }
    // The search index holds a copy of the messages' text (migration 0004).
    for chunk in deleted.chunks(DELETE_CHUNK) {
        let mut qb = QueryBuilder::<Sqlite>::new("DELETE FROM chat_text WHERE chat_id IN (");
        let mut list = qb.separated(", ");
        for id in chunk {
            list.push_bind(id.to_string());
        }
        qb.push(")");
        qb.build().execute(&mut *tx).await.map_err(db)?;
    }
    for group in groups {
        refresh_group(&mut tx, &group).await?;
    }
    tx.commit().await.map_err(db)?;
    Ok(deleted)
}

/// Recomputes a group's summary from its remaining chats, or erases it when none is left.
async fn refresh_group(tx: &mut sqlx::Transaction<'_, Sqlite>, group_id: &str) -> StoreResult<()> {
    let latest = sqlx::query(
        "SELECT id, start_timestamp, config_id, config_version, \
           (SELECT COUNT(*) FROM chats WHERE chat_group_id = ?1), \
           (SELECT MIN(start_timestamp) FROM chats WHERE chat_group_id = ?1) \
         FROM chats WHERE chat_group_id = ?1 ORDER BY start_timestamp DESC, id DESC LIMIT 1",
    )
    .bind(group_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    match latest {
        None => {
            sqlx::query("DELETE FROM chat_groups WHERE id = ?")
                .bind(group_id)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        Some(r) => {
            sqlx::query(
                "UPDATE chat_groups SET most_recent_chat_id = ?, most_recent_start_timestamp = ?, \
                 most_recent_config_id = ?, most_recent_config_version = ?, num_chats = ?, \
                 first_start_timestamp = ? WHERE id = ?",
            )
            .bind(col::<String>(&r, 0)?)
            .bind(col::<i64>(&r, 1)?)
            .bind(col::<Option<String>>(&r, 2)?)
            .bind(col::<Option<i64>>(&r, 3)?)
            .bind(col::<i64>(&r, 4)?)
            .bind(col::<i64>(&r, 5)?)
            .bind(group_id)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
    }
    Ok(())
}

pub async fn group_chat_ids(
    read: &SqlitePool,
    user_id: Uuid,
    group_id: Uuid,
) -> StoreResult<Option<Vec<Uuid>>> {
    let gid = group_id.to_string();
    let exists: Option<String> =
        sqlx::query_scalar("SELECT id FROM chat_groups WHERE id = ? AND user_id = ?")
            .bind(&gid)
            .bind(user_id.to_string())
            .fetch_optional(read)
            .await
            .map_err(db)?;
    if exists.is_none() {
        return Ok(None);
    }
    let rows =
        sqlx::query("SELECT id FROM chats WHERE chat_group_id = ? ORDER BY start_timestamp, id")
            .bind(&gid)
            .fetch_all(read)
            .await
            .map_err(db)?;
    rows.iter()
        .map(|r| Row::uuid(r, 0))
        .collect::<StoreResult<Vec<_>>>()
        .map(Some)
}
