//! Chat webhooks: the chat's subscriptions and the outbox inside a batch and in crash
//! recovery, and the outbox's claims (`FOR UPDATE SKIP LOCKED`, so several servers share
//! it), reports, listings and retries; the accounts' signing keys.

use crate::db;
use crate::rows::col;
use crate::writes::Tx;
use colloquy_storage::sql::corrupt;
use colloquy_storage::webhooks::WebhookTx;
use colloquy_storage::*;
use colloquy_wire::ChatStatus;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

const HOOKS_COLUMNS: &str =
    "chat_id, user_id, chat_group_id, start_timestamp, config_id, custom_session_id, subscriptions";

fn hooks_row(r: &PgRow) -> StoreResult<ChatWebhooks> {
    Ok(ChatWebhooks {
        chat_id: col(r, 0)?,
        user_id: col(r, 1)?,
        chat_group_id: col(r, 2)?,
        start_timestamp: col(r, 3)?,
        config_id: col(r, 4)?,
        custom_session_id: col(r, 5)?,
        subscriptions: serde_json::from_str(&col::<String>(r, 6)?).map_err(corrupt)?,
    })
}

async fn chat_hooks(conn: &mut PgConnection, chat_id: Uuid) -> StoreResult<Option<ChatWebhooks>> {
    let row = sqlx::query(&format!(
        "SELECT {HOOKS_COLUMNS} FROM chat_webhooks WHERE chat_id = $1"
    ))
    .bind(chat_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    row.as_ref().map(hooks_row).transpose()
}

async fn insert(conn: &mut PgConnection, deliveries: &[NewDelivery]) -> StoreResult<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut users = Vec::new();
    let mut chats = Vec::new();
    let mut events = Vec::new();
    let mut urls = Vec::new();
    let mut wide = Vec::new();
    let mut bodies = Vec::new();
    let mut created = Vec::new();
    for d in deliveries {
        ids.push(d.id);
        users.push(d.user_id);
        chats.push(d.chat_id);
        events.push(d.event.as_str().to_string());
        urls.push(storable_text(&d.url).into_owned());
        wide.push(d.server_wide);
        bodies.push(storable_text(&d.body).into_owned());
        created.push(d.created_at);
    }
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, user_id, chat_id, event, url, server_wide, body, \
         status, attempts, next_attempt_at, window_start, created_at) \
         SELECT id, u, c, e, url, w, b, 'pending', 0, t, t, t FROM UNNEST($1::uuid[], \
         $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::int8[]) \
         AS x(id, u, c, e, url, w, b, t)",
    )
    .bind(&ids)
    .bind(&users)
    .bind(&chats)
    .bind(&events)
    .bind(&urls)
    .bind(&wide)
    .bind(&bodies)
    .bind(&created)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

impl WebhookTx for Tx<'_> {
    async fn insert_chat_webhooks(&mut self, h: &ChatWebhooks) -> StoreResult<()> {
        let subs = serde_json::to_string(&h.subscriptions).map_err(corrupt)?;
        sqlx::query(&format!(
            "INSERT INTO chat_webhooks ({HOOKS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(h.chat_id)
        .bind(h.user_id)
        .bind(h.chat_group_id)
        .bind(h.start_timestamp)
        .bind(storable(h.config_id.as_deref()))
        .bind(storable(h.custom_session_id.as_deref()))
        .bind(storable_text(&subs))
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn chat_webhooks(&mut self, chat_id: Uuid) -> StoreResult<Option<ChatWebhooks>> {
        chat_hooks(&mut *self.0, chat_id).await
    }

    async fn set_custom_session_id(&mut self, chat_id: Uuid, csid: &str) -> StoreResult<()> {
        sqlx::query("UPDATE chat_webhooks SET custom_session_id = $1 WHERE chat_id = $2")
            .bind(storable_text(csid))
            .bind(chat_id)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_deliveries(&mut self, deliveries: &[NewDelivery]) -> StoreResult<()> {
        insert(&mut *self.0, deliveries).await
    }
}

/// Crash recovery: `chat_ended` (`ERROR`, at their last event time) for the chats it
/// closes, in its transaction.
pub async fn enqueue_recovered_ends(conn: &mut PgConnection, closed: &[Uuid]) -> StoreResult<()> {
    let rows = sqlx::query(
        "SELECT w.chat_id, w.user_id, w.chat_group_id, w.start_timestamp, w.config_id, \
         w.custom_session_id, w.subscriptions, c.end_timestamp \
         FROM chat_webhooks w JOIN chats c ON c.id = w.chat_id \
         WHERE w.chat_id = ANY($1) AND c.status = 'ERROR'",
    )
    .bind(closed)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let now = now_ms();
    let mut out = Vec::new();
    for r in &rows {
        let hooks = hooks_row(r)?;
        let end: Option<i64> = col(r, 7)?;
        out.extend(hooks.ended(ChatStatus::Error, end.unwrap_or(now), now));
    }
    insert(conn, &out).await
}

pub async fn claim(
    pool: &PgPool,
    worker: &str,
    now_ms: i64,
    lease_ms: i64,
    limit: u32,
) -> StoreResult<Vec<ClaimedDelivery>> {
    let rows = sqlx::query(
        "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 WHERE id IN ( \
           SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $3 \
           AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt_at LIMIT $4 \
           FOR UPDATE SKIP LOCKED) \
         RETURNING id, user_id, event, url, server_wide, body, attempts, window_start",
    )
    .bind(worker)
    .bind(now_ms + lease_ms)
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(ClaimedDelivery {
                id: col(r, 0)?,
                user_id: col(r, 1)?,
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

pub async fn finish(pool: &PgPool, worker: &str, reports: &[AttemptReport]) -> StoreResult<u64> {
    if reports.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = reports.iter().map(|r| r.id).collect();
    let statuses: Vec<&str> = reports.iter().map(|r| r.status.as_str()).collect();
    let codes: Vec<Option<i64>> = reports.iter().map(|r| r.status_code).collect();
    let errors: Vec<Option<String>> = reports
        .iter()
        .map(|r| storable(r.error.as_deref()).map(|c| c.into_owned()))
        .collect();
    let next: Vec<Option<i64>> = reports.iter().map(|r| r.next_attempt_at).collect();
    let res = sqlx::query(
        "UPDATE webhook_deliveries d SET status = x.s, attempts = d.attempts + 1, \
         last_status_code = x.code, last_error = x.err, next_attempt_at = x.next, \
         lease_owner = NULL, lease_until = NULL \
         FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::int8[]) \
           AS x(id, s, code, err, next) \
         WHERE d.id = x.id AND d.lease_owner = $6 AND d.status = 'pending'",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&codes)
    .bind(&errors)
    .bind(&next)
    .bind(worker)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(res.rows_affected())
}

const RECORD_COLUMNS: &str = "id, user_id, chat_id, event, url, status, attempts, \
     last_status_code, last_error, next_attempt_at, created_at, body";

fn record(r: &PgRow) -> StoreResult<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: col(r, 0)?,
        user_id: col(r, 1)?,
        chat_id: col(r, 2)?,
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
    pool: &PgPool,
    user_id: Option<Uuid>,
    filter: &DeliveryFilter,
    page: PageRequest,
) -> StoreResult<Page<DeliveryRecord>> {
    let wh = "($1::uuid IS NULL OR user_id = $1) AND ($2::uuid IS NULL OR chat_id = $2) \
              AND ($3::text IS NULL OR status = $3)";
    let dir = colloquy_storage::sql::direction(page.ascending);
    let status = filter.status.map(|s| s.as_str());
    let rows = sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM webhook_deliveries WHERE {wh} \
         ORDER BY created_at {dir}, id {dir} LIMIT $4 OFFSET $5"
    ))
    .bind(user_id)
    .bind(filter.chat_id)
    .bind(status)
    .bind(i64::from(page.size))
    .bind(page.offset())
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE {wh}"
    ))
    .bind(user_id)
    .bind(filter.chat_id)
    .bind(status)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    colloquy_storage::sql::page(&rows, record, total)
}

pub async fn retry(
    pool: &PgPool,
    user_id: Option<Uuid>,
    id: Uuid,
    now_ms: i64,
) -> StoreResult<Option<DeliveryRecord>> {
    let row = sqlx::query(&format!(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, \
         window_start = $1, lease_owner = NULL, lease_until = NULL \
         WHERE id = $2 AND ($3::uuid IS NULL OR user_id = $3) RETURNING {RECORD_COLUMNS}"
    ))
    .bind(now_ms)
    .bind(id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.as_ref().map(record).transpose()
}

pub async fn signing_key(
    pool: &PgPool,
    user_id: Uuid,
    candidate: &str,
) -> StoreResult<Option<String>> {
    let current: Option<Option<String>> =
        sqlx::query_scalar("SELECT webhook_signing_key FROM accounts WHERE id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
    match current {
        None => return Ok(None),
        Some(Some(key)) => return Ok(Some(key)),
        Some(None) => {}
    }
    sqlx::query_scalar(
        "UPDATE accounts SET webhook_signing_key = COALESCE(webhook_signing_key, $1) \
         WHERE id = $2 RETURNING webhook_signing_key",
    )
    .bind(candidate)
    .bind(user_id)
    .fetch_optional(pool)
    .await
    .map_err(db)
}

pub async fn set_signing_key(pool: &PgPool, user_id: Uuid, key: &str) -> StoreResult<bool> {
    let res = sqlx::query("UPDATE accounts SET webhook_signing_key = $1 WHERE id = $2")
        .bind(key)
        .bind(user_id)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(res.rows_affected() == 1)
}
