//! Chat webhooks: the chat's subscriptions and the outbox inside a batch (on the writer's
//! `rusqlite` connection), in crash recovery (sqlx), and the outbox's claims, reports,
//! listings and retries; the accounts' signing keys.

use crate::db;
use crate::rows::col;
use crate::writer::db as rdb;
use crate::writes::Tx;
use colloquy_storage::sql::{corrupt, uuid_text};
use colloquy_storage::webhooks::WebhookTx;
use colloquy_storage::*;
use colloquy_wire::ChatStatus;
use rusqlite::{params, OptionalExtension};
use sqlx::sqlite::SqliteRow;
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (id, user_id, chat_id, event, \
     url, server_wide, body, status, attempts, next_attempt_at, window_start, created_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)";

const HOOKS_COLUMNS: &str =
    "chat_id, user_id, chat_group_id, start_timestamp, config_id, custom_session_id, subscriptions";

fn subscriptions(json: &str) -> StoreResult<Vec<WebhookSubscription>> {
    serde_json::from_str(json).map_err(corrupt)
}

impl WebhookTx for Tx<'_> {
    async fn insert_chat_webhooks(&mut self, h: &ChatWebhooks) -> StoreResult<()> {
        let subs = serde_json::to_string(&h.subscriptions).map_err(corrupt)?;
        self.0
            .prepare_cached(&format!(
                "INSERT INTO chat_webhooks ({HOOKS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    h.chat_id.to_string(),
                    h.user_id.to_string(),
                    h.chat_group_id.to_string(),
                    h.start_timestamp,
                    storable(h.config_id.as_deref()),
                    storable(h.custom_session_id.as_deref()),
                    subs
                ])
            })
            .map_err(rdb)?;
        Ok(())
    }

    async fn chat_webhooks(&mut self, chat_id: Uuid) -> StoreResult<Option<ChatWebhooks>> {
        let row = self
            .0
            .prepare_cached(&format!(
                "SELECT {HOOKS_COLUMNS} FROM chat_webhooks WHERE chat_id = ?"
            ))
            .and_then(|mut s| {
                s.query_row([chat_id.to_string()], |r| {
                    Ok((
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                })
                .optional()
            })
            .map_err(rdb)?;
        let Some((user, group, start, config_id, csid, subs)) = row else {
            return Ok(None);
        };
        Ok(Some(ChatWebhooks {
            chat_id,
            user_id: uuid_text(&user)?,
            chat_group_id: uuid_text(&group)?,
            start_timestamp: start,
            config_id,
            custom_session_id: csid,
            subscriptions: subscriptions(&subs)?,
        }))
    }

    async fn set_custom_session_id(&mut self, chat_id: Uuid, csid: &str) -> StoreResult<()> {
        self.0
            .prepare_cached("UPDATE chat_webhooks SET custom_session_id = ? WHERE chat_id = ?")
            .and_then(|mut s| s.execute(params![storable_text(csid), chat_id.to_string()]))
            .map_err(rdb)?;
        Ok(())
    }

    async fn insert_deliveries(&mut self, deliveries: &[NewDelivery]) -> StoreResult<()> {
        let mut stmt = self.0.prepare_cached(INSERT_DELIVERY).map_err(rdb)?;
        for d in deliveries {
            stmt.execute(params![
                d.id.to_string(),
                d.user_id.to_string(),
                d.chat_id.to_string(),
                d.event.as_str(),
                storable_text(&d.url),
                d.server_wide,
                storable_text(&d.body),
                d.created_at,
                d.created_at,
                d.created_at
            ])
            .map_err(rdb)?;
        }
        Ok(())
    }
}

/// Crash recovery: `chat_ended` (`ERROR`, at `end_timestamp`) for a chat it closes, in its
/// transaction.
pub async fn enqueue_recovered_end(
    tx: &mut SqliteConnection,
    chat_id: &str,
    end_timestamp: i64,
) -> StoreResult<()> {
    let Some(r) = sqlx::query(&format!(
        "SELECT {HOOKS_COLUMNS} FROM chat_webhooks WHERE chat_id = ?"
    ))
    .bind(chat_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?
    else {
        return Ok(());
    };
    let hooks = ChatWebhooks {
        chat_id: uuid_text(&col::<String>(&r, 0)?)?,
        user_id: uuid_text(&col::<String>(&r, 1)?)?,
        chat_group_id: uuid_text(&col::<String>(&r, 2)?)?,
        start_timestamp: col(&r, 3)?,
        config_id: col(&r, 4)?,
        custom_session_id: col(&r, 5)?,
        subscriptions: subscriptions(&col::<String>(&r, 6)?)?,
    };
    for d in hooks.ended(ChatStatus::Error, end_timestamp, colloquy_storage::now_ms()) {
        sqlx::query(INSERT_DELIVERY)
            .bind(d.id.to_string())
            .bind(d.user_id.to_string())
            .bind(d.chat_id.to_string())
            .bind(d.event.as_str())
            .bind(&d.url)
            .bind(d.server_wide)
            .bind(&d.body)
            .bind(d.created_at)
            .bind(d.created_at)
            .bind(d.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    Ok(())
}

pub async fn claim(
    write: &SqlitePool,
    worker: &str,
    now_ms: i64,
    lease_ms: i64,
    limit: u32,
) -> StoreResult<Vec<ClaimedDelivery>> {
    let mut conn = write.acquire().await.map_err(db)?;
    let sync = relaxed(&mut conn).await?;
    let rows = sqlx::query(
        "UPDATE webhook_deliveries SET lease_owner = ?, lease_until = ? WHERE id IN ( \
           SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ? \
           AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt_at LIMIT ?) \
         RETURNING id, user_id, event, url, server_wide, body, attempts, window_start",
    )
    .bind(worker)
    .bind(now_ms + lease_ms)
    .bind(now_ms)
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(db);
    restore(&mut conn, sync).await?;
    rows?
        .iter()
        .map(|r| {
            Ok(ClaimedDelivery {
                id: uuid_text(&col::<String>(r, 0)?)?,
                user_id: uuid_text(&col::<String>(r, 1)?)?,
                event: col::<String>(r, 2)?.parse().map_err(corrupt)?,
                url: col(r, 3)?,
                server_wide: col(r, 4)?,
                body: col(r, 5)?,
                attempts: col(r, 6)?,
                window_start: col(r, 7)?,
            })
        })
        .collect()
}

pub async fn finish(
    write: &SqlitePool,
    worker: &str,
    reports: &[AttemptReport],
) -> StoreResult<u64> {
    let mut conn = write.acquire().await.map_err(db)?;
    let sync = relaxed(&mut conn).await?;
    let n = finish_on(&mut conn, worker, reports).await;
    restore(&mut conn, sync).await?;
    n
}

/// Claims and reports commit without waiting for the disk (`synchronous = NORMAL` for their
/// statements only; the next `FULL` commit flushes them): losing one to a power cut only
/// makes a delivery be posted again, which at-least-once delivery allows, and the write lock
/// is not held through an fsync the session batches would wait for. The deliveries
/// themselves are written by the batches, with their durability.
async fn relaxed(conn: &mut SqliteConnection) -> StoreResult<i64> {
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    sqlx::query("PRAGMA synchronous = NORMAL")
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(sync)
}

async fn restore(conn: &mut SqliteConnection, sync: i64) -> StoreResult<()> {
    sqlx::query(&format!("PRAGMA synchronous = {sync}"))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

async fn finish_on(
    conn: &mut SqliteConnection,
    worker: &str,
    reports: &[AttemptReport],
) -> StoreResult<u64> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
    let mut n = 0;
    for r in reports {
        let res = sqlx::query(
            "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, \
             last_status_code = ?, last_error = ?, next_attempt_at = ?, lease_owner = NULL, \
             lease_until = NULL WHERE id = ? AND lease_owner = ? AND status = 'pending'",
        )
        .bind(r.status.as_str())
        .bind(r.status_code)
        .bind(storable(r.error.as_deref()))
        .bind(r.next_attempt_at)
        .bind(r.id.to_string())
        .bind(worker)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        n += res.rows_affected();
    }
    tx.commit().await.map_err(db)?;
    Ok(n)
}

const RECORD_COLUMNS: &str = "id, user_id, chat_id, event, url, status, attempts, \
     last_status_code, last_error, next_attempt_at, created_at, body";

fn record(r: &SqliteRow) -> StoreResult<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: uuid_text(&col::<String>(r, 0)?)?,
        user_id: uuid_text(&col::<String>(r, 1)?)?,
        chat_id: uuid_text(&col::<String>(r, 2)?)?,
        event: col::<String>(r, 3)?.parse().map_err(corrupt)?,
        url: col(r, 4)?,
        status: col::<String>(r, 5)?.parse().map_err(corrupt)?,
        attempts: col(r, 6)?,
        last_status_code: col(r, 7)?,
        last_error: col(r, 8)?,
        next_attempt_at: col(r, 9)?,
        created_at: col(r, 10)?,
        body: col(r, 11)?,
    })
}

pub async fn list(
    read: &SqlitePool,
    user_id: Option<Uuid>,
    filter: &DeliveryFilter,
    page: PageRequest,
) -> StoreResult<Page<DeliveryRecord>> {
    let mut conds = vec!["1 = 1".to_string()];
    let mut binds: Vec<String> = Vec::new();
    if let Some(u) = user_id {
        conds.push("user_id = ?".into());
        binds.push(u.to_string());
    }
    if let Some(c) = filter.chat_id {
        conds.push("chat_id = ?".into());
        binds.push(c.to_string());
    }
    if let Some(s) = filter.status {
        conds.push("status = ?".into());
        binds.push(s.as_str().into());
    }
    let wh = conds.join(" AND ");
    let dir = colloquy_storage::sql::direction(page.ascending);
    let q = format!(
        "SELECT {RECORD_COLUMNS} FROM webhook_deliveries WHERE {wh} \
         ORDER BY created_at {dir}, id {dir} LIMIT ? OFFSET ?"
    );
    let mut query = sqlx::query(&q);
    for b in &binds {
        query = query.bind(b);
    }
    let rows = query
        .bind(i64::from(page.size))
        .bind(page.offset())
        .fetch_all(read)
        .await
        .map_err(db)?;
    let cq = format!("SELECT COUNT(*) FROM webhook_deliveries WHERE {wh}");
    let mut count = sqlx::query_scalar::<_, i64>(&cq);
    for b in &binds {
        count = count.bind(b);
    }
    let total = count.fetch_one(read).await.map_err(db)?;
    colloquy_storage::sql::page(&rows, record, total)
}

pub async fn retry(
    write: &SqlitePool,
    user_id: Option<Uuid>,
    id: Uuid,
    now_ms: i64,
) -> StoreResult<Option<DeliveryRecord>> {
    let row = sqlx::query(&format!(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, \
         window_start = ?, lease_owner = NULL, lease_until = NULL \
         WHERE id = ? AND (? IS NULL OR user_id = ?) RETURNING {RECORD_COLUMNS}"
    ))
    .bind(now_ms)
    .bind(now_ms)
    .bind(id.to_string())
    .bind(user_id.map(|u| u.to_string()))
    .bind(user_id.map(|u| u.to_string()))
    .fetch_optional(write)
    .await
    .map_err(db)?;
    row.as_ref().map(record).transpose()
}

pub async fn signing_key(
    read: &SqlitePool,
    write: &SqlitePool,
    user_id: Uuid,
    candidate: &str,
) -> StoreResult<Option<String>> {
    let current: Option<Option<String>> =
        sqlx::query_scalar("SELECT webhook_signing_key FROM accounts WHERE id = ?")
            .bind(user_id.to_string())
            .fetch_optional(read)
            .await
            .map_err(db)?;
    match current {
        None => return Ok(None),
        Some(Some(key)) => return Ok(Some(key)),
        Some(None) => {}
    }
    sqlx::query_scalar::<_, String>(
        "UPDATE accounts SET webhook_signing_key = COALESCE(webhook_signing_key, ?) \
         WHERE id = ? RETURNING webhook_signing_key",
    )
    .bind(candidate)
    .bind(user_id.to_string())
    .fetch_optional(write)
    .await
    .map_err(db)
}

pub async fn set_signing_key(write: &SqlitePool, user_id: Uuid, key: &str) -> StoreResult<bool> {
    let res = sqlx::query("UPDATE accounts SET webhook_signing_key = ? WHERE id = ?")
        .bind(key)
        .bind(user_id.to_string())
        .execute(write)
        .await
        .map_err(db)?;
    Ok(res.rows_affected() == 1)
}
