//! Accounts, API keys, access tokens, and server instances with the crash recovery of their
//! chats.

use crate::db;
use crate::rows::Row;
use colloquy_storage::sql::{self, Decode, ORPHANED_CHAT_END_METADATA, PRINCIPAL_COLUMNS};
use colloquy_storage::*;
use colloquy_wire::{EventRole, EventType};
use sqlx::postgres::{PgConnection, PgPool};
use uuid::Uuid;

pub async fn create_account(
    pool: &PgPool,
    account: &NewAccount,
    key: &NewApiKey,
) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query(
        "INSERT INTO accounts (id, name, data_retention, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(account.id)
    .bind(&account.name)
    .bind(account.data_retention)
    .bind(account.created_at)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    insert_key(&mut tx, key).await?;
    tx.commit().await.map_err(db)
}

pub async fn add_api_key(pool: &PgPool, key: &NewApiKey) -> StoreResult<()> {
    insert_key(&mut *pool.acquire().await.map_err(db)?, key).await
}

async fn insert_key(conn: &mut PgConnection, key: &NewApiKey) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, secret_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key.id)
    .bind(key.user_id)
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(&key.key_hash)
    .bind(&key.secret_hash)
    .bind(key.created_at)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn count_accounts(pool: &PgPool) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    Ok(n as u64)
}

pub async fn list_api_keys(pool: &PgPool) -> StoreResult<Vec<ApiKeyRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM api_keys k JOIN accounts a ON a.id = k.user_id \
         ORDER BY k.created_at DESC, k.id",
        sql::API_KEY_COLUMNS
    ))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(sql::api_key_record::<Row>).collect()
}

pub async fn revoke_api_key(pool: &PgPool, api_key_id: Uuid, now_ms: i64) -> StoreResult<bool> {
    let res =
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms)
            .bind(api_key_id)
            .execute(pool)
            .await
            .map_err(db)?;
    Ok(res.rows_affected() == 1)
}

pub async fn principal_by_key_hash(
    pool: &PgPool,
    key_hash: &str,
) -> StoreResult<Option<Principal>> {
    let row = sqlx::query(&format!(
        "SELECT {PRINCIPAL_COLUMNS} FROM api_keys k \
         JOIN accounts a ON a.id = k.user_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
    ))
    .bind(key_hash)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.as_ref().map(sql::principal::<Row>).transpose()
}

pub async fn insert_access_token(
    pool: &PgPool,
    token_hash: &str,
    api_key_id: Uuid,
    expires_at_ms: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO access_tokens (token_hash, api_key_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(token_hash)
    .bind(api_key_id)
    .bind(expires_at_ms)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn principal_by_token_hash(
    pool: &PgPool,
    token_hash: &str,
    now_ms: i64,
) -> StoreResult<Option<Principal>> {
    let row = sqlx::query(&format!(
        "SELECT {PRINCIPAL_COLUMNS} FROM access_tokens t \
         JOIN api_keys k ON k.id = t.api_key_id JOIN accounts a ON a.id = k.user_id \
         WHERE t.token_hash = $1 AND t.expires_at > $2 AND k.revoked_at IS NULL"
    ))
    .bind(token_hash)
    .bind(now_ms)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.as_ref().map(sql::principal::<Row>).transpose()
}

pub async fn delete_access_token(pool: &PgPool, token_hash: &str) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM access_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(done.rows_affected() > 0)
}

pub async fn secret_hash_for_key(
    pool: &PgPool,
    key_hash: &str,
) -> StoreResult<Option<(Principal, String)>> {
    let row = sqlx::query(&format!(
        "SELECT {PRINCIPAL_COLUMNS}, k.secret_hash FROM api_keys k \
         JOIN accounts a ON a.id = k.user_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
    ))
    .bind(key_hash)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.map(|r| Ok((sql::principal::<Row>(&r)?, Row::text(&r, 4)?)))
        .transpose()
}

pub async fn heartbeat_instance(pool: &PgPool, instance_id: Uuid, now_ms: i64) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO server_instances (id, heartbeat_at) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
    )
    .bind(instance_id)
    .bind(now_ms)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn remove_instance(pool: &PgPool, instance_id: Uuid) -> StoreResult<()> {
    sqlx::query("DELETE FROM server_instances WHERE id = $1")
        .bind(instance_id)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

pub async fn close_orphaned_chats(pool: &PgPool, stale_before_ms: i64) -> StoreResult<u64> {
    let mut tx = pool.begin().await.map_err(db)?;
    // Lock the orphans first, skipping chats another server is closing or writing to (a
    // chat ended meanwhile fails the re-checked `status`); the next statement's snapshot
    // then sees every event committed before the lock.
    let orphans: Vec<Uuid> = sqlx::query_scalar(
        "SELECT c.id FROM chats c LEFT JOIN server_instances i ON i.id = c.instance_id \
         WHERE c.status = 'ACTIVE' AND (i.id IS NULL OR i.heartbeat_at < $1) \
         ORDER BY c.id FOR NO KEY UPDATE OF c SKIP LOCKED",
    )
    .bind(stale_before_ms)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    if orphans.is_empty() {
        return Ok(0);
    }
    let res = sqlx::query(
        "WITH closed AS ( \
           UPDATE chats SET status = 'ERROR', end_timestamp = last_event_timestamp, \
             event_count = event_count + 1 \
           WHERE id = ANY($1) AND status = 'ACTIVE' \
           RETURNING id, chat_group_id, last_event_timestamp \
         ) \
         INSERT INTO chat_events (id, chat_id, chat_group_id, seq, timestamp, role, type, \
           message_text, emotion_features, metadata) \
         SELECT gen_random_uuid(), c.id, c.chat_group_id, \
           (SELECT COALESCE(MAX(e.seq), -1) + 1 FROM chat_events e WHERE e.chat_id = c.id), \
           c.last_event_timestamp, $2, $3, '', '', $4 \
         FROM closed c",
    )
    .bind(&orphans)
    .bind(EventRole::System.as_str())
    .bind(EventType::ChatEndMessage.as_str())
    .bind(ORPHANED_CHAT_END_METADATA)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    // `chat_ended` (`ERROR`) for the closed chats' webhooks, in the same transaction.
    crate::webhooks::enqueue_recovered_ends(&mut tx, &orphans).await?;
    tx.commit().await.map_err(db)?;
    Ok(res.rows_affected())
}
