//! Accounts, API keys, access tokens, and server instances with the crash recovery of their
//! chats.

use crate::db;
use crate::rows::{col, Row};
use colloquy_storage::sql::{self, Decode, ORPHANED_CHAT_END_METADATA, PRINCIPAL_COLUMNS};
use colloquy_storage::*;
use colloquy_wire::{EventRole, EventType};
use sqlx::{Sqlite, SqlitePool};
use uuid::Uuid;

pub async fn create_account(
    write: &SqlitePool,
    account: &NewAccount,
    key: &NewApiKey,
) -> StoreResult<()> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    sqlx::query("INSERT INTO accounts (id, name, data_retention, created_at) VALUES (?, ?, ?, ?)")
        .bind(account.id.to_string())
        .bind(&account.name)
        .bind(account.data_retention)
        .bind(account.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    insert_key(&mut tx, key).await?;
    tx.commit().await.map_err(db)
}

pub async fn add_api_key(write: &SqlitePool, key: &NewApiKey) -> StoreResult<()> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    insert_key(&mut tx, key).await?;
    tx.commit().await.map_err(db)
}

async fn insert_key(tx: &mut sqlx::Transaction<'_, Sqlite>, key: &NewApiKey) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, secret_hash, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.id.to_string())
    .bind(key.user_id.to_string())
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(&key.key_hash)
    .bind(&key.secret_hash)
    .bind(key.created_at)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn count_accounts(write: &SqlitePool) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
        .fetch_one(write)
        .await
        .map_err(db)?;
    Ok(n as u64)
}

pub async fn list_api_keys(write: &SqlitePool) -> StoreResult<Vec<ApiKeyRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM api_keys k JOIN accounts a ON a.id = k.user_id \
         ORDER BY k.created_at DESC, k.id",
        sql::API_KEY_COLUMNS
    ))
    .fetch_all(write)
    .await
    .map_err(db)?;
    rows.iter().map(sql::api_key_record::<Row>).collect()
}

pub async fn revoke_api_key(
    write: &SqlitePool,
    api_key_id: Uuid,
    now_ms: i64,
) -> StoreResult<bool> {
    let res = sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
        .bind(now_ms)
        .bind(api_key_id.to_string())
        .execute(write)
        .await
        .map_err(db)?;
    Ok(res.rows_affected() == 1)
}

pub async fn principal_by_key_hash(
    read: &SqlitePool,
    key_hash: &str,
) -> StoreResult<Option<Principal>> {
    let row = sqlx::query(&format!(
        "SELECT {PRINCIPAL_COLUMNS} FROM api_keys k \
         JOIN accounts a ON a.id = k.user_id WHERE k.key_hash = ? AND k.revoked_at IS NULL"
    ))
    .bind(key_hash)
    .fetch_optional(read)
    .await
    .map_err(db)?;
    row.as_ref().map(sql::principal::<Row>).transpose()
}

pub async fn insert_access_token(
    write: &SqlitePool,
    token_hash: &str,
    api_key_id: Uuid,
    expires_at_ms: i64,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO access_tokens (token_hash, api_key_id, expires_at) VALUES (?, ?, ?)")
        .bind(token_hash)
        .bind(api_key_id.to_string())
        .bind(expires_at_ms)
        .execute(write)
        .await
        .map_err(db)?;
    Ok(())
}

pub async fn principal_by_token_hash(
    read: &SqlitePool,
    token_hash: &str,
    now_ms: i64,
) -> StoreResult<Option<Principal>> {
    let row = sqlx::query(&format!(
        "SELECT {PRINCIPAL_COLUMNS} FROM access_tokens t \
         JOIN api_keys k ON k.id = t.api_key_id JOIN accounts a ON a.id = k.user_id \
         WHERE t.token_hash = ? AND t.expires_at > ? AND k.revoked_at IS NULL"
    ))
    .bind(token_hash)
    .bind(now_ms)
    .fetch_optional(read)
    .await
    .map_err(db)?;
    row.as_ref().map(sql::principal::<Row>).transpose()
}

pub async fn delete_access_token(write: &SqlitePool, token_hash: &str) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM access_tokens WHERE token_hash = ?")
        .bind(token_hash)
        .execute(write)
        .await
        .map_err(db)?;
    Ok(done.rows_affected() > 0)
}

pub async fn secret_hash_for_key(
    read: &SqlitePool,
    key_hash: &str,
) -> StoreResult<Option<(Principal, String)>> {
    let row = sqlx::query(&format!(
        "SELECT {PRINCIPAL_COLUMNS}, k.secret_hash FROM api_keys k \
         JOIN accounts a ON a.id = k.user_id WHERE k.key_hash = ? AND k.revoked_at IS NULL"
    ))
    .bind(key_hash)
    .fetch_optional(read)
    .await
    .map_err(db)?;
    row.map(|r| Ok((sql::principal::<Row>(&r)?, Row::text(&r, 4)?)))
        .transpose()
}

pub async fn heartbeat_instance(
    write: &SqlitePool,
    instance_id: Uuid,
    now_ms: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO server_instances (id, heartbeat_at) VALUES (?, ?) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
    )
    .bind(instance_id.to_string())
    .bind(now_ms)
    .execute(write)
    .await
    .map_err(db)?;
    Ok(())
}

pub async fn remove_instance(write: &SqlitePool, instance_id: Uuid) -> StoreResult<()> {
    sqlx::query("DELETE FROM server_instances WHERE id = ?")
        .bind(instance_id.to_string())
        .execute(write)
        .await
        .map_err(db)?;
    Ok(())
}

pub async fn close_orphaned_chats(write: &SqlitePool, stale_before_ms: i64) -> StoreResult<u64> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let rows = sqlx::query(
        "SELECT c.id, c.chat_group_id, c.last_event_timestamp, \
           (SELECT COALESCE(MAX(e.seq), -1) + 1 FROM chat_events e WHERE e.chat_id = c.id) \
         FROM chats c LEFT JOIN server_instances i ON i.id = c.instance_id \
         WHERE c.status = 'ACTIVE' AND (i.id IS NULL OR i.heartbeat_at < ?)",
    )
    .bind(stale_before_ms)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    for r in &rows {
        let chat_id: String = col(r, 0)?;
        let group_id: String = col(r, 1)?;
        let last: i64 = col(r, 2)?;
        let seq: i64 = col(r, 3)?;
        sqlx::query(
            "UPDATE chats SET status = 'ERROR', end_timestamp = ?, event_count = event_count + 1, \
             first_event_timestamp = COALESCE(first_event_timestamp, last_event_timestamp) \
             WHERE id = ?",
        )
        .bind(last)
        .bind(&chat_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO chat_events (id, chat_id, chat_group_id, seq, timestamp, role, type, \
             message_text, emotion_features, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, '', '', ?)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(&chat_id)
        .bind(&group_id)
        .bind(seq)
        .bind(last)
        .bind(EventRole::System.as_str())
        .bind(EventType::ChatEndMessage.as_str())
        .bind(ORPHANED_CHAT_END_METADATA)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        crate::webhooks::enqueue_recovered_end(&mut tx, &chat_id, last).await?;
    }
    tx.commit().await.map_err(db)?;
    Ok(rows.len() as u64)
}
