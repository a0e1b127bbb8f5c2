//! PostgreSQL backend of [`colloquy_storage::Store`], for several server processes sharing
//! one database.
//!
//! One connection pool serves reads and writes. [`Store::apply_batch`] runs one transaction
//! per call and locks the rows it updates in id order, so the server's parallel group-commit
//! writers ([`Store::write_concurrency`]) cannot deadlock each other.

mod rows;
pub mod testing;

use async_trait::async_trait;
use colloquy_storage::*;
use colloquy_wire::{ChatStatus, EventRole, EventType, ReconstructionStatus};
use rows::*;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// Settings of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Size of the connection pool (default 16).
    pub max_connections: u32,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
        }
    }
}

/// A PostgreSQL database opened by URL (`postgres://user@host/db`).
pub struct PostgresStore {
    pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Maps a sqlx error: a unique violation is a conflict; a lost or refused connection, and
/// the server's connection, resource, operator and system errors (SQLSTATE classes 08, 53,
/// 57, 58), mean the database is unavailable rather than that the request is at fault.
fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) => {
            if d.is_unique_violation() {
                return StoreError::Conflict(d.message().to_string());
            }
            let class = d.code().map(|c| c.chars().take(2).collect::<String>());
            if matches!(class.as_deref(), Some("08" | "53" | "57" | "58")) {
                return StoreError::Unavailable(Box::new(e));
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => return StoreError::Unavailable(Box::new(e)),
        _ => {}
    }
    StoreError::Database(Box::new(e))
}

impl PostgresStore {
    /// Connects and applies pending migrations (under sqlx's advisory lock, so servers
    /// starting together migrate once).
    pub async fn open(url: &str, settings: &PostgresSettings) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .connect(url)
            .await
            .map_err(db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(Self { pool })
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

const CHAT_COLUMNS: &str = "id, user_id, chat_group_id, status, start_timestamp, end_timestamp, \
     event_count, metadata, config_id, config_version";
const EVENT_COLUMNS: &str = "id, chat_id, seq, timestamp, role, type, message_text, \
     emotion_features, metadata, related_event_id";
const GROUP_COLUMNS: &str = "g.id, g.user_id, g.first_start_timestamp, \
     g.most_recent_start_timestamp, g.num_chats, g.most_recent_chat_id, \
     g.most_recent_config_id, g.most_recent_config_version, \
     EXISTS (SELECT 1 FROM chats c WHERE c.chat_group_id = g.id AND c.status = 'ACTIVE') AS active";

fn dir(ascending: bool) -> &'static str {
    if ascending {
        "ASC"
    } else {
        "DESC"
    }
}

/// Appends ` LIMIT $n OFFSET $m` for `page`.
fn push_page(qb: &mut QueryBuilder<'_, Postgres>, page: PageRequest) {
    qb.push(" LIMIT ")
        .push_bind(page.size as i64)
        .push(" OFFSET ")
        .push_bind(page.offset());
}

/// Appends the `WHERE` clause of a chat listing (by owner or by group).
fn push_chat_filter(
    qb: &mut QueryBuilder<'_, Postgres>,
    owner: (&'static str, Uuid),
    filter: &ChatFilter,
) {
    qb.push(" WHERE ")
        .push(owner.0)
        .push(" = ")
        .push_bind(owner.1);
    if let Some(s) = filter.status {
        qb.push(" AND status = ").push_bind(s.as_str());
    }
    if let Some(cfg) = &filter.config_id {
        // As stored (a NUL would also fail the query on PostgreSQL).
        qb.push(" AND config_id = ")
            .push_bind(storable_text(cfg).into_owned());
    }
    if let Some(from) = filter.started_from {
        qb.push(" AND start_timestamp >= ").push_bind(from);
    }
    if let Some(before) = filter.started_before {
        qb.push(" AND start_timestamp < ").push_bind(before);
    }
    // Every word must occur in the chat's messages (each may be in a different message), as
    // a word or the start of one; the partial GIN index of migration 0003 answers each probe.
    for term in search_terms(filter.search.as_deref().unwrap_or("")) {
        qb.push(
            " AND id IN (SELECT chat_id FROM chat_events \
             WHERE type IN ('USER_MESSAGE', 'AGENT_MESSAGE') \
             AND to_tsvector('simple', message_text) @@ to_tsquery('simple', ",
        )
        .push_bind(format!("{term}:*"))
        .push("))");
    }
}

/// One page of chats plus their total, by owner or by group.
async fn page_of_chats(
    pool: &PgPool,
    owner: (&'static str, Uuid),
    filter: &ChatFilter,
    page: PageRequest,
) -> StoreResult<Page<ChatRecord>> {
    let d = dir(page.ascending);
    // The page's ids come from an index-only walk of the owner's (start_timestamp, id)
    // index; only those rows are then read. Without the subquery, PostgreSQL's custom plans
    // for a deep OFFSET switch to a sequential scan and sort of every chat of the owner
    // (docs/benchmarks.md, list_latency).
    let mut q = QueryBuilder::new(format!(
        "SELECT {CHAT_COLUMNS} FROM chats JOIN (SELECT id FROM chats"
    ));
    push_chat_filter(&mut q, owner, filter);
    q.push(format!(" ORDER BY start_timestamp {d}, id {d}"));
    push_page(&mut q, page);
    q.push(format!(
        ") AS page USING (id) ORDER BY start_timestamp {d}, id {d}"
    ));
    let mut c = QueryBuilder::new("SELECT COUNT(*) FROM chats");
    push_chat_filter(&mut c, owner, filter);
    let rows = q.build().fetch_all(pool).await.map_err(db)?;
    let total: i64 = c.build_query_scalar().fetch_one(pool).await.map_err(db)?;
    Ok(Page {
        items: rows.iter().map(chat_row).collect::<StoreResult<_>>()?,
        total: total as u64,
    })
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    /// Two: one batch commits (and waits for its WAL flush) while the next is written.
    /// On 2 cores shared with the database server, alternated runs of the ingest benchmark
    /// gave 2 writers 19.9–26.4k events/s against 19.1–22.5k for 4 and 14.8–16.0k for 8
    /// (docs/benchmarks.md, session 4): more writers make smaller batches and more commits.
    fn write_concurrency(&self) -> usize {
        2
    }

    async fn create_account(&self, account: &NewAccount, key: &NewApiKey) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
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

    async fn add_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        insert_key(&mut *self.pool.acquire().await.map_err(db)?, key).await
    }

    async fn count_accounts(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(n as u64)
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(
            "SELECT k.id, k.user_id, k.name, k.prefix, k.created_at, k.revoked_at, a.data_retention \
             FROM api_keys k JOIN accounts a ON a.id = k.user_id \
             ORDER BY k.created_at DESC, k.id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(api_key_row).collect()
    }

    async fn revoke_api_key(&self, api_key_id: Uuid, now_ms: i64) -> StoreResult<bool> {
        let res =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms)
                .bind(api_key_id)
                .execute(&self.pool)
                .await
                .map_err(db)?;
        Ok(res.rows_affected() == 1)
    }

    async fn principal_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<Principal>> {
        let row = sqlx::query(
            "SELECT k.user_id, k.id, a.data_retention, k.prefix FROM api_keys k \
             JOIN accounts a ON a.id = k.user_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| principal(&r)).transpose()
    }

    async fn delete_access_token(&self, token_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM access_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_access_token(
        &self,
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
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn principal_by_token_hash(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<Principal>> {
        let row = sqlx::query(
            "SELECT k.user_id, k.id, a.data_retention, k.prefix FROM access_tokens t \
             JOIN api_keys k ON k.id = t.api_key_id JOIN accounts a ON a.id = k.user_id \
             WHERE t.token_hash = $1 AND t.expires_at > $2 AND k.revoked_at IS NULL",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| principal(&r)).transpose()
    }

    async fn secret_hash_for_key(
        &self,
        key_hash: &str,
    ) -> StoreResult<Option<(Principal, String)>> {
        let row = sqlx::query(
            "SELECT k.user_id, k.id, a.data_retention, k.prefix, k.secret_hash FROM api_keys k \
             JOIN accounts a ON a.id = k.user_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| Ok((principal(&r)?, col(&r, 4)?))).transpose()
    }

    async fn heartbeat_instance(&self, instance_id: Uuid, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO server_instances (id, heartbeat_at) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(instance_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn remove_instance(&self, instance_id: Uuid) -> StoreResult<()> {
        sqlx::query("DELETE FROM server_instances WHERE id = $1")
            .bind(instance_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn close_orphaned_chats(&self, stale_before_ms: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(db)?;
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
        .bind(r#"{"reason":"server_failure"}"#)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(res.rows_affected())
    }

    async fn apply_batch(&self, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let outcomes = apply_in_tx(&mut tx, ops).await?;
        tx.commit().await.map_err(db)?;
        Ok(outcomes)
    }

    async fn list_chats(
        &self,
        user_id: Uuid,
        filter: &ChatFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ChatRecord>> {
        page_of_chats(&self.pool, ("user_id", user_id), filter, page).await
    }

    async fn get_chat(&self, user_id: Uuid, chat_id: Uuid) -> StoreResult<Option<ChatRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {CHAT_COLUMNS} FROM chats WHERE id = $1 AND user_id = $2"
        ))
        .bind(chat_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(chat_row).transpose()
    }

    async fn list_chat_events(
        &self,
        chat_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<Page<EventRecord>> {
        let d = dir(page.ascending);
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM chat_events WHERE chat_id = $1 \
             ORDER BY seq {d} LIMIT $2 OFFSET $3"
        ))
        .bind(chat_id)
        .bind(page.size as i64)
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let total: i64 = sqlx::query_scalar("SELECT event_count FROM chats WHERE id = $1")
            .bind(chat_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .unwrap_or(0);
        Ok(Page {
            items: rows.iter().map(event_row).collect::<StoreResult<_>>()?,
            total: total as u64,
        })
    }

    async fn list_chat_groups(
        &self,
        user_id: Uuid,
        config_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<GroupRecord>> {
        let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
            qb.push(" WHERE g.user_id = ").push_bind(user_id);
            if let Some(cfg) = config_id {
                qb.push(" AND g.most_recent_config_id = ")
                    .push_bind(storable_text(cfg).into_owned());
            }
        };
        let d = dir(page.ascending);
        let mut q = QueryBuilder::new(format!("SELECT {GROUP_COLUMNS} FROM chat_groups g"));
        filter(&mut q);
        q.push(format!(" ORDER BY g.first_start_timestamp {d}, g.id {d}"));
        push_page(&mut q, page);
        let mut c = QueryBuilder::new("SELECT COUNT(*) FROM chat_groups g");
        filter(&mut c);
        let rows = q.build().fetch_all(&self.pool).await.map_err(db)?;
        let total: i64 = c
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(Page {
            items: rows.iter().map(group_row).collect::<StoreResult<_>>()?,
            total: total as u64,
        })
    }

    async fn get_chat_group(
        &self,
        user_id: Uuid,
        group_id: Uuid,
    ) -> StoreResult<Option<GroupRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS} FROM chat_groups g WHERE g.id = $1 AND g.user_id = $2"
        ))
        .bind(group_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(group_row).transpose()
    }

    async fn list_group_chats(
        &self,
        group_id: Uuid,
        status: Option<ChatStatus>,
        page: PageRequest,
    ) -> StoreResult<Page<ChatRecord>> {
        let filter = ChatFilter {
            status,
            ..Default::default()
        };
        page_of_chats(&self.pool, ("chat_group_id", group_id), &filter, page).await
    }

    async fn list_group_events(
        &self,
        group_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<Page<EventRecord>> {
        let d = dir(page.ascending);
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM chat_events WHERE chat_group_id = $1 \
             ORDER BY timestamp {d}, chat_id {d}, seq {d} LIMIT $2 OFFSET $3"
        ))
        .bind(group_id)
        .bind(page.size as i64)
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(event_count), 0)::BIGINT FROM chats WHERE chat_group_id = $1",
        )
        .bind(group_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(Page {
            items: rows.iter().map(event_row).collect::<StoreResult<_>>()?,
            total: total as u64,
        })
    }

    async fn ensure_reconstructions(
        &self,
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
        .execute(&self.pool)
        .await
        .map_err(db)?;
        let rows = sqlx::query(
            "SELECT chat_id, user_id, status, filename, modified_at, error \
             FROM audio_reconstructions WHERE chat_id = ANY($1) AND user_id = $2",
        )
        .bind(chat_ids)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut by_chat = HashMap::with_capacity(rows.len());
        for r in &rows {
            let rec = reconstruction_row(r)?;
            by_chat.insert(rec.chat_id, rec);
        }
        Ok(chat_ids
            .iter()
            .filter_map(|id| by_chat.get(id).cloned())
            .collect())
    }

    async fn claim_reconstruction(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
        max_attempts: i64,
    ) -> StoreResult<Option<ClaimedJob>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Jobs whose last allowed attempt died with its worker fail for good.
        sqlx::query(
            "WITH dead AS ( \
               DELETE FROM audio_jobs WHERE chat_id IN ( \
                 SELECT chat_id FROM audio_jobs WHERE attempts >= $1 \
                 AND lease_expires_at IS NOT NULL AND lease_expires_at < $2 \
                 FOR UPDATE SKIP LOCKED) RETURNING chat_id) \
             UPDATE audio_reconstructions r SET status = 'ERROR', error = $3, modified_at = $2 \
             FROM dead WHERE r.chat_id = dead.chat_id",
        )
        .bind(max_attempts)
        .bind(now_ms)
        .bind(exhausted_attempts_error(max_attempts))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let row = sqlx::query(
            "SELECT j.chat_id, j.user_id, j.attempts, c.start_timestamp, c.end_timestamp \
             FROM audio_jobs j JOIN chats c ON c.id = j.chat_id \
             WHERE c.status <> 'ACTIVE' AND (j.lease_expires_at IS NULL OR j.lease_expires_at < $1) \
             ORDER BY j.created_at, j.chat_id LIMIT 1 FOR UPDATE OF j SKIP LOCKED",
        )
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(r) = row else {
            tx.commit().await.map_err(db)?;
            return Ok(None);
        };
        let job = ClaimedJob {
            chat_id: col(&r, 0)?,
            user_id: col(&r, 1)?,
            attempt: col::<i64>(&r, 2)? + 1,
            chat_start_ms: col(&r, 3)?,
            chat_end_ms: col::<Option<i64>>(&r, 4)?.unwrap_or(now_ms),
        };
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

    async fn renew_reconstruction_lease(
        &self,
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
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(res.rows_affected() == 1)
    }

    async fn finish_reconstruction(
        &self,
        chat_id: Uuid,
        worker: &str,
        result: &JobResult,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let held = sqlx::query("DELETE FROM audio_jobs WHERE chat_id = $1 AND lease_owner = $2")
            .bind(chat_id)
            .bind(worker)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if held.rows_affected() == 0 {
            return Ok(false);
        }
        let (status, filename, error) = result.record_fields();
        let (filename, error) = (storable(filename), storable(error));
        sqlx::query(
            "UPDATE audio_reconstructions SET status = $1, filename = $2, error = $3, \
             modified_at = $4 WHERE chat_id = $5",
        )
        .bind(status.as_str())
        .bind(filename)
        .bind(error)
        .bind(now_ms)
        .bind(chat_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn delete_chats(&self, user_id: Uuid, chat_ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
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

    async fn group_chat_ids(
        &self,
        user_id: Uuid,
        group_id: Uuid,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let exists: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM chat_groups WHERE id = $1 AND user_id = $2")
                .bind(group_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        if exists.is_none() {
            return Ok(None);
        }
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM chats WHERE chat_group_id = $1 ORDER BY start_timestamp, id",
        )
        .bind(group_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(Some(ids))
    }
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

/// The events of a batch as column arrays, for one `INSERT ... SELECT FROM UNNEST(...)`.
#[derive(Default)]
struct EventColumns<'a> {
    id: Vec<Uuid>,
    chat_id: Vec<Uuid>,
    group_id: Vec<Uuid>,
    seq: Vec<i64>,
    timestamp: Vec<i64>,
    role: Vec<&'static str>,
    event_type: Vec<&'static str>,
    message_text: Vec<Option<Cow<'a, str>>>,
    emotion_features: Vec<Option<Cow<'a, str>>>,
    metadata: Vec<Option<Cow<'a, str>>>,
    related_event_id: Vec<Option<Uuid>>,
    /// Per chat: events added and the latest event time.
    counters: BTreeMap<Uuid, (i64, i64)>,
}

impl<'a> EventColumns<'a> {
    fn push(&mut self, chat_id: Uuid, group_id: Uuid, events: &'a [NewEvent]) {
        for e in events {
            self.id.push(e.id);
            self.chat_id.push(chat_id);
            self.group_id.push(group_id);
            self.seq.push(e.seq);
            self.timestamp.push(e.timestamp);
            self.role.push(e.role.as_str());
            self.event_type.push(e.event_type.as_str());
            self.message_text.push(storable(e.message_text.as_deref()));
            self.emotion_features
                .push(storable(e.emotion_features.as_deref()));
            self.metadata.push(storable(e.metadata.as_deref()));
            self.related_event_id.push(e.related_event_id);
            let c = self.counters.entry(chat_id).or_insert((0, i64::MIN));
            c.0 += 1;
            c.1 = c.1.max(e.timestamp);
        }
    }

    /// Inserts the events, then bumps each chat's counters (one statement each).
    async fn write(self, conn: &mut PgConnection) -> StoreResult<()> {
        if self.id.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO chat_events (id, chat_id, chat_group_id, seq, timestamp, role, type, \
             message_text, emotion_features, metadata, related_event_id) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::int8[], $5::int8[], \
               $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::uuid[])",
        )
        .bind(&self.id)
        .bind(&self.chat_id)
        .bind(&self.group_id)
        .bind(&self.seq)
        .bind(&self.timestamp)
        .bind(&self.role)
        .bind(&self.event_type)
        .bind(&self.message_text)
        .bind(&self.emotion_features)
        .bind(&self.metadata)
        .bind(&self.related_event_id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        let (mut ids, mut counts, mut lasts) = (Vec::new(), Vec::new(), Vec::new());
        for (id, (count, last)) in self.counters {
            ids.push(id);
            counts.push(count);
            lasts.push(last);
        }
        sqlx::query(
            "UPDATE chats c SET event_count = c.event_count + u.n, \
             last_event_timestamp = GREATEST(c.last_event_timestamp, u.last) \
             FROM UNNEST($1::uuid[], $2::int8[], $3::int8[]) AS u(id, n, last) \
             WHERE c.id = u.id",
        )
        .bind(&ids)
        .bind(&counts)
        .bind(&lasts)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(())
    }
}

/// The body of [`Store::apply_batch`], inside its transaction; the decisions are
/// [`BatchRules`]'.
async fn apply_in_tx(conn: &mut PgConnection, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
    // 1. Which of the batch's keys are revoked: one query for the whole batch.
    let keys = batch_keys(ops);
    let revoked: HashSet<Uuid> = if keys.is_empty() {
        HashSet::new()
    } else {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE revoked_at IS NOT NULL AND id = ANY($1)",
        )
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        ids.into_iter().collect()
    };

    // 2. Every lock of the batch is taken here, each kind in one global order, so
    //    concurrent batches wait on each other and never deadlock. First the accounts
    //    whose active chats are counted (a limited `StartChat`): an account's count and
    //    its new chat commit before any other transaction counts again, on any server.
    let mut accounts: Vec<i64> = limited_accounts(ops, &revoked)
        .iter()
        .map(|u| account_lock_key(*u))
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    if !accounts.is_empty() {
        sqlx::query("SELECT pg_advisory_xact_lock(k) FROM UNNEST($1::int8[]) AS k")
            .bind(&accounts)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    //    Then the chats appended to, with their groups, in id order (as are resumed groups
    //    below): every later write of the batch touches rows it already holds, or rows it
    //    created.
    let existing = chats_written(ops);
    let mut groups: HashMap<Uuid, Uuid> = HashMap::with_capacity(existing.len());
    if !existing.is_empty() {
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT id, chat_group_id FROM chats WHERE id = ANY($1) AND status = 'ACTIVE' \
             ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(&existing)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        groups.extend(rows);
    }
    let mut resumed: Vec<Uuid> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::StartChat {
                api_key_id,
                chat:
                    NewChat {
                        group: GroupChoice::Resume(g),
                        ..
                    },
                ..
            } if !revoked.contains(api_key_id) => Some(*g),
            _ => None,
        })
        .collect();
    resumed.sort_unstable();
    resumed.dedup();
    if !resumed.is_empty() {
        sqlx::query("SELECT id FROM chat_groups WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind(&resumed)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }

    // 3. Apply the ops in order; collect events and per-chat counters.
    let mut rules = BatchRules::new(revoked, groups);
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut events = EventColumns::default();
    for op in ops {
        let outcome = match rules.step(op) {
            Step::Report(outcome) => outcome,
            Step::Start {
                chat,
                events: evs,
                limit,
            } => {
                let full = match limit {
                    Some(limit) => !may_start_chat(limit, active_chats(conn, chat.user_id).await?),
                    None => false,
                };
                if full {
                    OpOutcome::TooManyChats
                } else if !start_chat(conn, chat).await? {
                    OpOutcome::GroupNotFound
                } else {
                    let group = rules.started(chat);
                    events.push(chat.id, group, evs);
                    OpOutcome::Applied
                }
            }
            Step::Append {
                chat_id,
                group_id,
                events: evs,
            } => {
                events.push(chat_id, group_id, evs);
                OpOutcome::Applied
            }
            Step::End {
                chat_id,
                group_id,
                status,
                end_timestamp,
                events: evs,
                outcome,
            } => {
                events.push(chat_id, group_id, evs);
                sqlx::query(
                    "UPDATE chats SET status = $1, end_timestamp = $2 \
                     WHERE id = $3 AND status = 'ACTIVE'",
                )
                .bind(status.as_str())
                .bind(end_timestamp)
                .bind(chat_id)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
                outcome
            }
        };
        outcomes.push(outcome);
    }

    // 4. Insert the events in one statement, then bump the chats' counters.
    events.write(conn).await?;
    Ok(outcomes)
}

/// The key of the transaction-scoped advisory lock under which an account's active chats
/// are counted: the account id folded to 64 bits.
fn account_lock_key(user_id: Uuid) -> i64 {
    let (high, low) = user_id.as_u64_pair();
    (high ^ low) as i64
}

/// The account's `ACTIVE` chats, those started or ended earlier in the transaction included.
async fn active_chats(conn: &mut PgConnection, user_id: Uuid) -> StoreResult<u64> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM chats WHERE user_id = $1 AND status = 'ACTIVE'")
            .bind(user_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    Ok(n as u64)
}

/// Inserts a chat and creates or joins its group; false when the group to resume is not
/// the account's.
async fn start_chat(conn: &mut PgConnection, chat: &NewChat) -> StoreResult<bool> {
    let config_id = storable(chat.config_id.as_deref());
    let group = match chat.group {
        GroupChoice::New(g) => {
            sqlx::query(
                "INSERT INTO chat_groups (id, user_id, first_start_timestamp, \
                 most_recent_start_timestamp, most_recent_chat_id, most_recent_config_id, \
                 most_recent_config_version, num_chats) VALUES ($1, $2, $3, $3, $4, $5, $6, 1)",
            )
            .bind(g)
            .bind(chat.user_id)
            .bind(chat.start_timestamp)
            .bind(chat.id)
            .bind(&config_id)
            .bind(chat.config_version)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            g
        }
        GroupChoice::Resume(g) => {
            // Every SET expression reads the row as it was before the update.
            let res = sqlx::query(
                "UPDATE chat_groups SET num_chats = num_chats + 1, \
                 most_recent_chat_id = CASE WHEN $1 >= most_recent_start_timestamp THEN $2 ELSE most_recent_chat_id END, \
                 most_recent_config_id = CASE WHEN $1 >= most_recent_start_timestamp THEN $3 ELSE most_recent_config_id END, \
                 most_recent_config_version = CASE WHEN $1 >= most_recent_start_timestamp THEN $4 ELSE most_recent_config_version END, \
                 most_recent_start_timestamp = GREATEST(most_recent_start_timestamp, $1) \
                 WHERE id = $5 AND user_id = $6",
            )
            .bind(chat.start_timestamp)
            .bind(chat.id)
            .bind(&config_id)
            .bind(chat.config_version)
            .bind(g)
            .bind(chat.user_id)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            if res.rows_affected() == 0 {
                return Ok(false);
            }
            g
        }
    };
    sqlx::query(
        "INSERT INTO chats (id, user_id, chat_group_id, status, start_timestamp, \
         last_event_timestamp, metadata, config_id, config_version, instance_id) \
         VALUES ($1, $2, $3, 'ACTIVE', $4, $4, $5, $6, $7, $8)",
    )
    .bind(chat.id)
    .bind(chat.user_id)
    .bind(group)
    .bind(chat.start_timestamp)
    .bind(storable(chat.metadata.as_deref()))
    .bind(&config_id)
    .bind(chat.config_version)
    .bind(chat.instance_id)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(true)
}

#[cfg(test)]
mod tests;
