//! Audio reconstruction records and their jobs: queued, claimed under a lease, finished
//! once.

use crate::db;
use crate::rows::Row;
use colloquy_storage::sql::{self, JOB_COLUMNS, RECONSTRUCTION_COLUMNS};
use colloquy_storage::*;
use colloquy_wire::ReconstructionStatus;
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

pub async fn ensure_reconstructions(
    write: &SqlitePool,
    user_id: Uuid,
    chat_ids: &[Uuid],
    now_ms: i64,
) -> StoreResult<Vec<ReconstructionRecord>> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let uid = user_id.to_string();
    let mut out = Vec::with_capacity(chat_ids.len());
    for chat_id in chat_ids {
        let cid = chat_id.to_string();
        let inserted = sqlx::query(
            "INSERT INTO audio_reconstructions (chat_id, user_id, status, modified_at) \
             SELECT id, user_id, ?, ? FROM chats WHERE id = ? AND user_id = ? \
             ON CONFLICT (chat_id) DO NOTHING",
        )
        .bind(ReconstructionStatus::Queued.as_str())
        .bind(now_ms)
        .bind(&cid)
        .bind(&uid)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 1 {
            sqlx::query("INSERT INTO audio_jobs (chat_id, user_id, created_at) VALUES (?, ?, ?)")
                .bind(&cid)
                .bind(&uid)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let row = sqlx::query(&format!(
            "SELECT {RECONSTRUCTION_COLUMNS} \
             FROM audio_reconstructions WHERE chat_id = ? AND user_id = ?"
        ))
        .bind(&cid)
        .bind(&uid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(r) = row {
            out.push(sql::reconstruction_record::<Row>(&r)?);
        }
    }
    tx.commit().await.map_err(db)?;
    Ok(out)
}

pub async fn claim_reconstruction(
    write: &SqlitePool,
    worker: &str,
    now_ms: i64,
    lease_ms: i64,
    max_attempts: i64,
) -> StoreResult<Option<ClaimedJob>> {
    let mut conn = write.acquire().await.map_err(db)?;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let result = claim_in_tx(&mut conn, worker, now_ms, lease_ms, max_attempts).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let fin = sqlx::query(end).execute(&mut *conn).await.map_err(db);
    let claimed = result?;
    fin?;
    Ok(claimed)
}

/// Claims one job inside an open `BEGIN IMMEDIATE` transaction.
async fn claim_in_tx(
    conn: &mut SqliteConnection,
    worker: &str,
    now_ms: i64,
    lease_ms: i64,
    max_attempts: i64,
) -> StoreResult<Option<ClaimedJob>> {
    // Jobs whose last allowed attempt died with its worker fail for good.
    let exhausted: Vec<String> = sqlx::query_scalar(
        "SELECT chat_id FROM audio_jobs WHERE attempts >= ? \
         AND lease_expires_at IS NOT NULL AND lease_expires_at < ?",
    )
    .bind(max_attempts)
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    for cid in exhausted {
        sqlx::query(
            "UPDATE audio_reconstructions SET status = 'ERROR', error = ?, error_kind = ?, \
             modified_at = ? WHERE chat_id = ?",
        )
        .bind(exhausted_attempts_error(max_attempts))
        .bind(FailureKind::AttemptsExhausted.as_str())
        .bind(now_ms)
        .bind(&cid)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM audio_jobs WHERE chat_id = ?")
            .bind(&cid)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} \
         FROM audio_jobs j JOIN chats c ON c.id = j.chat_id \
         WHERE c.status <> 'ACTIVE' AND (j.lease_expires_at IS NULL OR j.lease_expires_at < ?) \
         ORDER BY j.created_at, j.chat_id LIMIT 1"
    ))
    .bind(now_ms)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    let Some(r) = row else { return Ok(None) };
    let job = sql::claimed_job::<Row>(&r, now_ms)?;
    let cid = job.chat_id.to_string();
    sqlx::query(
        "UPDATE audio_jobs SET attempts = attempts + 1, lease_owner = ?, lease_expires_at = ? \
         WHERE chat_id = ?",
    )
    .bind(worker)
    .bind(now_ms + lease_ms)
    .bind(&cid)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    sqlx::query(
        "UPDATE audio_reconstructions SET status = 'IN_PROGRESS', modified_at = ? WHERE chat_id = ?",
    )
    .bind(now_ms)
    .bind(&cid)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(Some(job))
}

pub async fn renew_reconstruction_lease(
    write: &SqlitePool,
    chat_id: Uuid,
    worker: &str,
    until_ms: i64,
) -> StoreResult<bool> {
    let res = sqlx::query(
        "UPDATE audio_jobs SET lease_expires_at = ? WHERE chat_id = ? AND lease_owner = ?",
    )
    .bind(until_ms)
    .bind(chat_id.to_string())
    .bind(worker)
    .execute(write)
    .await
    .map_err(db)?;
    Ok(res.rows_affected() == 1)
}

pub async fn finish_reconstruction(
    write: &SqlitePool,
    chat_id: Uuid,
    worker: &str,
    result: &JobResult,
    now_ms: i64,
) -> StoreResult<bool> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let cid = chat_id.to_string();
    let held = sqlx::query("DELETE FROM audio_jobs WHERE chat_id = ? AND lease_owner = ?")
        .bind(&cid)
        .bind(worker)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    if held.rows_affected() == 0 {
        return Ok(false);
    }
    let (status, filename, error, error_kind) = result.record_fields();
    sqlx::query(
        "UPDATE audio_reconstructions SET status = ?, filename = ?, error = ?, error_kind = ?, \
         modified_at = ? WHERE chat_id = ?",
    )
    .bind(status.as_str())
    .bind(filename)
    .bind(error)
    .bind(error_kind)
    .bind(now_ms)
    .bind(&cid)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(true)
}
