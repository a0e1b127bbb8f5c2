//! Erasing chats with everything stored about them, and the groups they leave behind.

use crate::db;
use colloquy_storage::*;
use sqlx::postgres::PgPool;
use uuid::Uuid;

pub async fn delete_chats(
    pool: &PgPool,
    user_id: Uuid,
    chat_ids: &[Uuid],
) -> StoreResult<Vec<Uuid>> {
    let mut tx = pool.begin().await.map_err(db)?;
    let owned: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT id, chat_group_id FROM chats WHERE id = ANY($1) AND user_id = $2 \
         ORDER BY id FOR UPDATE",
    )
    .bind(chat_ids)
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let ids: Vec<Uuid> = owned.iter().map(|(c, _)| *c).collect();
    for sql in [
        "DELETE FROM audio_jobs WHERE chat_id = ANY($1)",
        "DELETE FROM chat_webhooks WHERE chat_id = ANY($1)",
        "DELETE FROM webhook_deliveries WHERE chat_id = ANY($1)",
        "DELETE FROM audio_reconstructions WHERE chat_id = ANY($1)",
        "DELETE FROM chat_events WHERE chat_id = ANY($1)",
        "DELETE FROM chats WHERE id = ANY($1)",
    ] {
        sqlx::query(sql)
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    let mut groups: Vec<Uuid> = owned.iter().map(|(_, g)| *g).collect();
    groups.sort_unstable();
    groups.dedup();
    sqlx::query(
        "DELETE FROM chat_groups g WHERE g.id = ANY($1) \
         AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.chat_group_id = g.id)",
    )
    .bind(&groups)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    sqlx::query(
        "UPDATE chat_groups g SET most_recent_chat_id = l.id, \
           most_recent_start_timestamp = l.start_timestamp, \
           most_recent_config_id = l.config_id, most_recent_config_version = l.config_version, \
           num_chats = s.n, first_start_timestamp = s.first \
         FROM (SELECT DISTINCT ON (chat_group_id) chat_group_id, id, start_timestamp, \
                 config_id, config_version FROM chats WHERE chat_group_id = ANY($1) \
               ORDER BY chat_group_id, start_timestamp DESC, id DESC) l, \
              (SELECT chat_group_id, COUNT(*) AS n, MIN(start_timestamp) AS first FROM chats \
               WHERE chat_group_id = ANY($1) GROUP BY chat_group_id) s \
         WHERE g.id = l.chat_group_id AND g.id = s.chat_group_id",
    )
    .bind(&groups)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(chat_ids
        .iter()
        .copied()
        .filter(|c| ids.contains(c))
        .collect())
}

pub async fn group_chat_ids(
    pool: &PgPool,
    user_id: Uuid,
    group_id: Uuid,
) -> StoreResult<Option<Vec<Uuid>>> {
    let exists: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM chat_groups WHERE id = $1 AND user_id = $2")
            .bind(group_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
    if exists.is_none() {
        return Ok(None);
    }
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM chats WHERE chat_group_id = $1 ORDER BY start_timestamp, id",
    )
    .bind(group_id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(Some(ids))
}
