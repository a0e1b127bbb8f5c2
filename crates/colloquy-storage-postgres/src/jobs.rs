//! Audio reconstruction records and their jobs: queued, claimed under a lease, finished
//! once.

use crate::db;
use crate::rows::Row;
use colloquy_storage::sql::{self, JOB_COLUMNS, RECONSTRUCTION_COLUMNS};
use colloquy_storage::*;
use colloquy_wire::ReconstructionStatus;
use sqlx::postgres::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

pub async fn ensure_reconstructions(
    pool: &PgPool,
    user_id: Uuid,
    chat_ids: &[Uuid],
    now_ms: i64,
) -> StoreResult<Vec<ReconstructionRecord>> {
    // Inserting in id order keeps concurrent calls from waiting on each other in a cycle;
    // ON CONFLICT makes the loser of a race keep the winner's row.
    // The job is created by the same statement as its record: both or neither.
    sqlx::query(
        "WITH created AS ( \
           INSERT INTO audio_reconstructions (chat_id, user_id, status, modified_at) \
           SELECT id, user_id, $1, $2 FROM chats WHERE id = ANY($3) AND user_id = $4 \
           ORDER BY id ON CONFLICT (chat_id) DO NOTHING RETURNING chat_id, user_id) \
         INSERT INTO audio_jobs (chat_id, user_id, created_at) \
         SELECT chat_id, user_id, $2 FROM created",
    )
    .bind(ReconstructionStatus::Queued.as_str())
    .bind(now_ms)
    .bind(chat_ids)
    .bind(user_id)
    .execute(pool)
    .await
    .map_err(db)?;
    let rows = sqlx::query(&format!(
        "SELECT {RECONSTRUCTION_COLUMNS} \
         FROM audio_reconstructions WHERE chat_id = ANY($1) AND user_id = $2"
    ))
    .bind(chat_ids)
    .bind(user_id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut by_chat = HashMap::with_capacity(rows.len());
    for r in &rows {
        let rec = sql::reconstruction_record::<Row>(r)?;
        by_chat.insert(rec.chat_id, rec);
    }
    Ok(chat_ids
        .iter()
        .filter_map(|id| by_chat.get(id).cloned())
        .collect())
}

pub async fn claim_reconstruction(
    pool: &PgPool,
    worker: &str,
    now_ms: i64,
    lease_ms: i64,
    max_attempts: i64,
) -> StoreResult<Option<ClaimedJob>> {
    let mut tx = pool.begin().await.map_err(db)?;
    // Jobs whose last allowed attempt died with its worker fail for good.
    sqlx::query(
        "WITH dead AS ( \
           DELETE FROM audio_jobs WHERE chat_id IN ( \
             SELECT chat_id FROM audio_jobs WHERE attempts >= $1 \
             AND lease_expires_at IS NOT NULL AND lease_expires_at < $2 \
             FOR UPDATE SKIP LOCKED) RETURNING chat_id) \
         UPDATE audio_reconstructions r SET status = 'ERROR', error = $3, error_kind = $4, \
         modified_at = $2 FROM dead WHERE r.chat_id = dead.chat_id",
    )
    .bind(max_attempts)
    .bind(now_ms)
    .bind(exhausted_attempts_error(max_attempts))
    .bind(FailureKind::AttemptsExhausted.as_str())
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} \
         FROM audio_jobs j JOIN chats c ON c.id = j.chat_id \
         WHERE c.status <> 'ACTIVE' AND (j.lease_expires_at IS NULL OR j.lease_expires_at < $1) \
         ORDER BY j.created_at, j.chat_id LIMIT 1 FOR UPDATE OF j SKIP LOCKED"
    ))
    .bind(now_ms)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    let Some(r) = row else {
        tx.commit().await.map_err(db)?;
        return Ok(None);
    };
    let job = sql::claimed_job::<Row>(&r, now_ms)?;
    sqlx::query(
        "UPDATE audio_jobs SET attempts = attempts + 1, lease_owner = $1, lease_expires_at = $2 \
         WHERE chat_id = $3",
    )
    .bind(worker)
    .bind(now_ms + lease_ms)
    .bind(job.chat_id)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    sqlx::query(
        "UPDATE audio_reconstructions SET status = 'IN_PROGRESS', modified_at = $1 \
         WHERE chat_id = $2",
    )
    .bind(now_ms)
    .bind(job.chat_id)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(Some(job))
}

pub async fn renew_reconstruction_lease(
    pool: &PgPool,
    chat_id: Uuid,
    worker: &str,
    until_ms: i64,
) -> StoreResult<bool> {
    let res = sqlx::query(
        "UPDATE audio_jobs SET lease_expires_at = $1 WHERE chat_id = $2 AND lease_owner = $3",
    )
    .bind(until_ms)
    .bind(chat_id)
    .bind(worker)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(res.rows_affected() == 1)
}

pub async fn finish_reconstruction(
    pool: &PgPool,
    chat_id: Uuid,
    worker: &str,
    result: &JobResult,
    now_ms: i64,
) -> StoreResult<bool> {
    let mut tx = pool.begin().await.map_err(db)?;
    let held = sqlx::query("DELETE FROM audio_jobs WHERE chat_id = $1 AND lease_owner = $2")
        .bind(chat_id)
        .bind(worker)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    if held.rows_affected() == 0 {
        return Ok(false);
    }
    let (status, filename, error, error_kind) = result.record_fields();
    sqlx::query(
        "UPDATE audio_reconstructions SET status = $1, filename = $2, error = $3, \
         error_kind = $4, modified_at = $5 WHERE chat_id = $6",
    )
    .bind(status.as_str())
    .bind(filename)
    .bind(error)
    .bind(error_kind)
    .bind(now_ms)
    .bind(chat_id)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(true)
}
