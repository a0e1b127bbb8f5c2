//! SQLite backend of [`colloquy_storage::Store`]: the embedded default.
//!
//! Group-committed batches of chat events are written by one `rusqlite` connection on a
//! thread of its own ([`writer`]); every other write goes through one sqlx connection, and a
//! small sqlx pool reads. Writes take the lock up front (`BEGIN IMMEDIATE`), so the two
//! writing connections queue for each other; WAL mode lets reads run beside them and see
//! every committed batch at once.

mod group_events;
mod rows;
mod writer;

use async_trait::async_trait;
use colloquy_storage::*;
use colloquy_wire::{ChatStatus, EventRole, EventType, ReconstructionStatus};
use rows::*;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Settings of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// `FULL` (default) fsyncs the WAL on every commit: a committed batch survives power loss.
    /// `NORMAL` survives process crashes only, and is faster on slow disks.
    pub synchronous_full: bool,
    /// Connections of the read pool.
    pub read_connections: u32,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            synchronous_full: true,
            read_connections: 4,
        }
    }
}

/// A SQLite database opened by URL (`sqlite://path/to/file.db`).
pub struct SqliteStore {
    /// Runs [`Store::apply_batch`].
    writer: writer::BatchWriter,
    /// Every other write.
    write: SqlitePool,
    read: SqlitePool,
    /// The connection that checkpoints the WAL in the background.
    checkpoints: SqlitePool,
    checkpointer: tokio::task::JoinHandle<()>,
    /// With `synchronous_full`, the WAL file, flushed by [`Store::apply_batch`] after its
    /// commit and off the write lock (`None` for a database without a WAL file).
    wal: Option<Arc<std::fs::File>>,
}

/// How often the background task copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// WAL size (pages) at which the writer checkpoints by itself, if the background task ever
/// falls behind; SQLite's default of 1,000 would put a checkpoint into every few group
/// commits (docs/benchmarks.md, ingest).
pub const WRITER_AUTOCHECKPOINT_PAGES: &str = "20000";

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] from its own connection, off the write
/// path: a `PASSIVE` checkpoint runs beside the writer without blocking it. Each run copies
/// only the newest version of every page changed since the last one, however many commits
/// rewrote it.
async fn checkpoint_in_background(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "background WAL checkpoint failed; the writer checkpoints instead");
        }
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

fn db(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return StoreError::Conflict(d.message().to_string());
        }
    }
    StoreError::Database(Box::new(e))
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

/// Whether a `sqlite:` URL names an in-memory database (`sqlite::memory:`,
/// `sqlite://:memory:`, `?mode=memory`, no path), which [`SqliteStore::open`] refuses: its
/// connections (the batch writer's among them) could not share it.
pub fn is_in_memory_url(url: &str) -> bool {
    let path = url
        .strip_prefix("sqlite:")
        .unwrap_or(url)
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or("");
    path == ":memory:" || path.is_empty() || url.contains("mode=memory")
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies pending migrations.
    pub async fn open(url: &str, settings: &SqliteSettings) -> StoreResult<Self> {
        if is_in_memory_url(url) {
            return Err(StoreError::Database(
                format!(
                    "`{url}` is an in-memory SQLite database, which the store's connections \
                     cannot share; give a file"
                )
                .into(),
            ));
        }
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if settings.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", "-32768")
            .pragma("temp_store", "memory")
            .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(opts.clone())
            .await
            .map_err(db)?;
        MIGRATOR
            .run(&write)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let checkpoints = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(opts.clone())
            .await
            .map_err(db)?;
        let read = SqlitePoolOptions::new()
            .max_connections(settings.read_connections.max(1))
            .connect_with(opts.clone().read_only(true))
            .await
            .map_err(db)?;
        let writer = writer::BatchWriter::open(opts.get_filename())?;
        let checkpointer = tokio::spawn(checkpoint_in_background(checkpoints.clone()));
        let wal = if settings.synchronous_full {
            let mut path = opts.get_filename().as_os_str().to_owned();
            path.push("-wal");
            std::fs::File::open(&path).ok().map(Arc::new)
        } else {
            None
        };
        Ok(Self {
            writer,
            write,
            read,
            checkpoints,
            checkpointer,
            wal,
        })
    }

    /// Closes the pools, checkpointing the WAL.
    pub async fn close(&self) {
        self.checkpointer.abort();
        self.writer.close().await;
        self.checkpoints.close().await;
        self.read.close().await;
        self.write.close().await;
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

/// Rows of an event insert, with the group each event's chat belongs to.
struct PendingEvent<'a> {
    chat_id: Uuid,
    group_id: Uuid,
    event: &'a NewEvent,
}

/// Ids per `IN (…)` list when deleting chats' rows (well below SQLite's parameter limit).
const DELETE_CHUNK: usize = 500;

/// Rows of the largest batch statement (11 parameters each).
const SHAPED_MAX: usize = 256;

/// Splits `items` into chunks of at most [`SHAPED_MAX`], each paired with the number of
/// rows its statement has room for: the next power of two. The rows past the chunk are
/// bound as NULLs that the statement ignores. A batch of any size is then written by one
/// statement per kind, of one of a few shapes that stay in the connection's statement
/// cache; one shape per batch size would be parsed and planned again for almost every
/// batch, and one statement per power of two would multiply the statements.
fn padded<T>(items: &[T]) -> impl Iterator<Item = (&[T], usize)> {
    items
        .chunks(SHAPED_MAX)
        .map(|chunk| (chunk, chunk.len().next_power_of_two()))
}

/// Appends the `WHERE` clause of a chat listing (by owner or by group).
fn push_chat_filter(
    qb: &mut QueryBuilder<'_, Sqlite>,
    owner: (&'static str, Uuid),
    filter: &ChatFilter,
) {
    qb.push(" WHERE ")
        .push(owner.0)
        .push(" = ")
        .push_bind(owner.1.to_string());
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
    // Every word must occur in the chat's messages (each may be in a different message),
    // as a word or the start of one: one FTS5 probe per word (migration 0004).
    for term in search_terms(filter.search.as_deref().unwrap_or("")) {
        qb.push(" AND id IN (SELECT chat_id FROM chat_text WHERE chat_text MATCH ")
            .push_bind(format!("\"{term}\"*"))
            .push(")");
    }
}

/// One page of chats plus their total, by owner or by group.
async fn page_of_chats(
    pool: &SqlitePool,
    owner: (&'static str, Uuid),
    filter: &ChatFilter,
    page: PageRequest,
) -> StoreResult<Page<ChatRecord>> {
    let d = dir(page.ascending);
    let mut q = QueryBuilder::new(format!("SELECT {CHAT_COLUMNS} FROM chats"));
    push_chat_filter(&mut q, owner, filter);
    q.push(format!(" ORDER BY start_timestamp {d}, id {d} LIMIT "))
        .push_bind(page.size as i64)
        .push(" OFFSET ")
        .push_bind(page.offset());
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
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_account(&self, account: &NewAccount, key: &NewApiKey) -> StoreResult<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        sqlx::query(
            "INSERT INTO accounts (id, name, data_retention, created_at) VALUES (?, ?, ?, ?)",
        )
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

    async fn add_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        insert_key(&mut tx, key).await?;
        tx.commit().await.map_err(db)
    }

    async fn count_accounts(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&self.write)
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
        .fetch_all(&self.write)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyRecord {
                    id: uuid_col(r, 0)?,
                    user_id: uuid_col(r, 1)?,
                    name: col(r, 2)?,
                    prefix: col(r, 3)?,
                    created_at: col(r, 4)?,
                    revoked_at: col(r, 5)?,
                    data_retention: col(r, 6)?,
                })
            })
            .collect()
    }

    async fn revoke_api_key(&self, api_key_id: Uuid, now_ms: i64) -> StoreResult<bool> {
        let res =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now_ms)
                .bind(api_key_id.to_string())
                .execute(&self.write)
                .await
                .map_err(db)?;
        Ok(res.rows_affected() == 1)
    }

    async fn principal_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<Principal>> {
        let row = sqlx::query(
            "SELECT k.user_id, k.id, a.data_retention, k.prefix FROM api_keys k \
             JOIN accounts a ON a.id = k.user_id WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        row.map(|r| principal(&r)).transpose()
    }

    async fn delete_access_token(&self, token_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM access_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.write)
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
            "INSERT INTO access_tokens (token_hash, api_key_id, expires_at) VALUES (?, ?, ?)",
        )
        .bind(token_hash)
        .bind(api_key_id.to_string())
        .bind(expires_at_ms)
        .execute(&self.write)
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
             WHERE t.token_hash = ? AND t.expires_at > ? AND k.revoked_at IS NULL",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.read)
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
             JOIN accounts a ON a.id = k.user_id WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        row.map(|r| Ok((principal(&r)?, col(&r, 4)?))).transpose()
    }

    async fn heartbeat_instance(&self, instance_id: Uuid, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO server_instances (id, heartbeat_at) VALUES (?, ?) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(instance_id.to_string())
        .bind(now_ms)
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn remove_instance(&self, instance_id: Uuid) -> StoreResult<()> {
        sqlx::query("DELETE FROM server_instances WHERE id = ?")
            .bind(instance_id.to_string())
            .execute(&self.write)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn close_orphaned_chats(&self, stale_before_ms: i64) -> StoreResult<u64> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
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
            .bind(r#"{"reason":"server_failure"}"#)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(rows.len() as u64)
    }

    /// The batch runs on the writer thread ([`writer`]) and commits without the flush of
    /// `FULL`; with `synchronous_full` the WAL is flushed after the write lock is released,
    /// and the call returns only then. Another batch's transaction runs meanwhile (two
    /// writers, [`Self::write_concurrency`]), yet nothing is acknowledged before it is on
    /// disk: one flush covers every commit before it.
    async fn apply_batch(&self, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
        let outcomes = self.writer.apply(ops.to_vec()).await?;
        if let Some(wal) = &self.wal {
            let wal = wal.clone();
            // The batch is committed: the store is failing, not the batch.
            tokio::task::spawn_blocking(move || wal.sync_data())
                .await
                .map_err(|e| StoreError::Unavailable(Box::new(e)))?
                .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        }
        Ok(outcomes)
    }

    fn write_concurrency(&self) -> usize {
        // One batch flushes the WAL while the next one commits.
        if self.wal.is_some() {
            2
        } else {
            1
        }
    }

    async fn list_chats(
        &self,
        user_id: Uuid,
        filter: &ChatFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ChatRecord>> {
        page_of_chats(&self.read, ("user_id", user_id), filter, page).await
    }

    async fn get_chat(&self, user_id: Uuid, chat_id: Uuid) -> StoreResult<Option<ChatRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {CHAT_COLUMNS} FROM chats WHERE id = ? AND user_id = ?"
        ))
        .bind(chat_id.to_string())
        .bind(user_id.to_string())
        .fetch_optional(&self.read)
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
        let cid = chat_id.to_string();
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM chat_events WHERE chat_id = ? \
             ORDER BY seq {d} LIMIT ? OFFSET ?"
        ))
        .bind(&cid)
        .bind(page.size as i64)
        .bind(page.offset())
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        let total: i64 = sqlx::query_scalar("SELECT event_count FROM chats WHERE id = ?")
            .bind(&cid)
            .fetch_optional(&self.read)
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
        let where_ = if config_id.is_some() {
            "g.user_id = ? AND g.most_recent_config_id = ?"
        } else {
            "g.user_id = ?"
        };
        let d = dir(page.ascending);
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM chat_groups g WHERE {where_} \
             ORDER BY g.first_start_timestamp {d}, g.id {d} LIMIT ? OFFSET ?"
        );
        let count_sql = format!("SELECT COUNT(*) FROM chat_groups g WHERE {where_}");
        let uid = user_id.to_string();
        let mut q = sqlx::query(&sql).bind(&uid);
        let mut c = sqlx::query_scalar::<_, i64>(&count_sql).bind(&uid);
        let config_id = storable(config_id);
        if let Some(cfg) = &config_id {
            q = q.bind(cfg.as_ref());
            c = c.bind(cfg.as_ref());
        }
        let rows = q
            .bind(page.size as i64)
            .bind(page.offset())
            .fetch_all(&self.read)
            .await
            .map_err(db)?;
        let total = c.fetch_one(&self.read).await.map_err(db)?;
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
            "SELECT {GROUP_COLUMNS} FROM chat_groups g WHERE g.id = ? AND g.user_id = ?"
        ))
        .bind(group_id.to_string())
        .bind(user_id.to_string())
        .fetch_optional(&self.read)
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
        page_of_chats(&self.read, ("chat_group_id", group_id), &filter, page).await
    }

    async fn list_group_events(
        &self,
        group_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<Page<EventRecord>> {
        let mut tx = self.read.begin().await.map_err(db)?;
        let result = group_events::page(&mut tx, group_id, page).await?;
        tx.commit().await.map_err(db)?;
        Ok(result)
    }

    async fn ensure_reconstructions(
        &self,
        user_id: Uuid,
        chat_ids: &[Uuid],
        now_ms: i64,
    ) -> StoreResult<Vec<ReconstructionRecord>> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
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
                sqlx::query(
                    "INSERT INTO audio_jobs (chat_id, user_id, created_at) VALUES (?, ?, ?)",
                )
                .bind(&cid)
                .bind(&uid)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            let row = sqlx::query(
                "SELECT chat_id, user_id, status, filename, modified_at, error \
                 FROM audio_reconstructions WHERE chat_id = ? AND user_id = ?",
            )
            .bind(&cid)
            .bind(&uid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            if let Some(r) = row {
                out.push(reconstruction_row(&r)?);
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn claim_reconstruction(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
        max_attempts: i64,
    ) -> StoreResult<Option<ClaimedJob>> {
        let mut conn = self.write.acquire().await.map_err(db)?;
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

    async fn renew_reconstruction_lease(
        &self,
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
        .execute(&self.write)
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
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
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
        let (status, filename, error) = result.record_fields();
        let (filename, error) = (storable(filename), storable(error));
        sqlx::query(
            "UPDATE audio_reconstructions SET status = ?, filename = ?, error = ?, modified_at = ? \
             WHERE chat_id = ?",
        )
        .bind(status.as_str())
        .bind(filename)
        .bind(error)
        .bind(now_ms)
        .bind(&cid)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn delete_chats(&self, user_id: Uuid, chat_ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
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

    async fn group_chat_ids(
        &self,
        user_id: Uuid,
        group_id: Uuid,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        let gid = group_id.to_string();
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM chat_groups WHERE id = ? AND user_id = ?")
                .bind(&gid)
                .bind(user_id.to_string())
                .fetch_optional(&self.read)
                .await
                .map_err(db)?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT id FROM chats WHERE chat_group_id = ? ORDER BY start_timestamp, id",
        )
        .bind(&gid)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| uuid_col(r, 0))
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }
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

/// Claims one job inside an open `BEGIN IMMEDIATE` transaction.
async fn claim_in_tx(
    conn: &mut sqlx::SqliteConnection,
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
            "UPDATE audio_reconstructions SET status = 'ERROR', error = ?, modified_at = ? \
             WHERE chat_id = ?",
        )
        .bind(exhausted_attempts_error(max_attempts))
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
    let row = sqlx::query(
        "SELECT j.chat_id, j.user_id, j.attempts, c.start_timestamp, c.end_timestamp \
         FROM audio_jobs j JOIN chats c ON c.id = j.chat_id \
         WHERE c.status <> 'ACTIVE' AND (j.lease_expires_at IS NULL OR j.lease_expires_at < ?) \
         ORDER BY j.created_at, j.chat_id LIMIT 1",
    )
    .bind(now_ms)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    let Some(r) = row else { return Ok(None) };
    let job = ClaimedJob {
        chat_id: uuid_col(&r, 0)?,
        user_id: uuid_col(&r, 1)?,
        attempt: col::<i64>(&r, 2)? + 1,
        chat_start_ms: col(&r, 3)?,
        chat_end_ms: col::<Option<i64>>(&r, 4)?.unwrap_or(now_ms),
    };
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

/// What a batch adds to one chat's row: its event count and time span.
struct Counters {
    count: i64,
    first: i64,
    last: i64,
}

fn queue_events<'a>(
    pending: &mut Vec<PendingEvent<'a>>,
    counters: &mut HashMap<Uuid, Counters>,
    chat_id: Uuid,
    group_id: Uuid,
    events: &'a [NewEvent],
) {
    for e in events {
        pending.push(PendingEvent {
            chat_id,
            group_id,
            event: e,
        });
        let c = counters.entry(chat_id).or_insert(Counters {
            count: 0,
            first: i64::MAX,
            last: i64::MIN,
        });
        c.count += 1;
        c.first = c.first.min(e.timestamp);
        c.last = c.last.max(e.timestamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_written_by_statements_of_power_of_two_rows() {
        let shapes = |n: usize| {
            let items: Vec<usize> = (0..n).collect();
            let parts: Vec<(&[usize], usize)> = padded(&items).collect();
            let flat: Vec<usize> = parts.iter().flat_map(|(c, _)| c.iter().copied()).collect();
            assert_eq!(flat, items, "every item once, in order");
            parts
                .iter()
                .map(|(c, rows)| (c.len(), *rows))
                .collect::<Vec<_>>()
        };
        assert_eq!(shapes(0), vec![]);
        assert_eq!(shapes(1), vec![(1, 1)]);
        assert_eq!(shapes(100), vec![(100, 128)]);
        assert_eq!(shapes(256), vec![(256, 256)]);
        assert_eq!(shapes(600), vec![(256, 256), (256, 256), (88, 128)]);
    }

    #[tokio::test]
    async fn an_in_memory_database_is_refused() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://x.db?mode=memory",
        ] {
            assert!(is_in_memory_url(url), "{url}");
            let err = SqliteStore::open(url, &SqliteSettings::default())
                .await
                .err()
                .expect("refused");
            assert!(err.to_string().contains("in-memory"), "{url}: {err}");
        }
        assert!(!is_in_memory_url("sqlite://./memory.db?mode=rwc"));
        assert!(!is_in_memory_url("sqlite:x.db"));
    }

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let store = SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .unwrap();
        colloquy_storage::conformance::run_all(&store).await;
        // Batches commit with NORMAL on the writer thread's connection and flush the WAL
        // themselves; every other write keeps FULL.
        assert_eq!(store.write_concurrency(), 2);
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.write)
            .await
            .unwrap();
        assert_eq!(level, 2, "writes other than batches are FULL");
        // Reopening applies no migration twice and keeps the data.
        store.close().await;
        let again = SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .unwrap();
        assert!(again.count_accounts().await.unwrap() > 0);
    }

    /// A database written before migration 0005 (events indexed by group) opens with each
    /// chat's event time span filled in, and its group's events list in time order.
    #[tokio::test]
    async fn migration_0005_fills_in_the_chats_event_spans() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let mut conn = sqlx::SqliteConnection::connect_with(
            &SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true),
        )
        .await
        .unwrap();
        let old = sqlx::migrate::Migrator {
            migrations: MIGRATOR
                .iter()
                .filter(|m| m.version < 5)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        old.run(&mut conn).await.unwrap();
        let (g, c1, c2) = (Uuid::new_v4(), Uuid::now_v7(), Uuid::now_v7());
        sqlx::query(
            "INSERT INTO chat_groups (id, user_id, first_start_timestamp, \
             most_recent_start_timestamp, num_chats) VALUES (?, 'u', 100, 150, 2)",
        )
        .bind(g.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
        // c2 starts while c1 is still going; c1's stored last_event_timestamp lags behind.
        for (c, start, count, last) in [(c1, 100, 3, 100), (c2, 150, 2, 160)] {
            sqlx::query(
                "INSERT INTO chats (id, user_id, chat_group_id, status, start_timestamp, \
                 last_event_timestamp, event_count) VALUES (?, 'u', ?, 'USER_ENDED', ?, ?, ?)",
            )
            .bind(c.to_string())
            .bind(g.to_string())
            .bind(start)
            .bind(last)
            .bind(count)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        for (c, seq, ts) in [
            (c1, 0, 100),
            (c1, 1, 155),
            (c1, 2, 170),
            (c2, 0, 150),
            (c2, 1, 160),
        ] {
            sqlx::query(
                "INSERT INTO chat_events (id, chat_id, seq, chat_group_id, timestamp, role, type) \
                 VALUES (?, ?, ?, ?, ?, 'USER', 'USER_MESSAGE')",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(c.to_string())
            .bind(seq)
            .bind(g.to_string())
            .bind(ts)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        conn.close().await.unwrap();

        let store = SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .unwrap();
        let spans: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT id, first_event_timestamp, last_event_timestamp FROM chats ORDER BY id",
        )
        .fetch_all(&store.read)
        .await
        .unwrap();
        assert_eq!(
            spans,
            vec![(c1.to_string(), 100, 170), (c2.to_string(), 150, 160)]
        );
        let page = store
            .list_group_events(
                g,
                PageRequest {
                    number: 0,
                    size: 10,
                    ascending: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.total, 5);
        assert_eq!(
            page.items
                .iter()
                .map(|e| (e.timestamp, e.chat_id))
                .collect::<Vec<_>>(),
            vec![(100, c1), (150, c2), (155, c1), (160, c2), (170, c1)]
        );
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let url = format!("sqlite://{}", path.display());
        let store = SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .unwrap();
        let who = colloquy_storage::conformance::new_account(&store, true).await;
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        let before = std::fs::metadata(&path).unwrap().len();
        // A few hundred pages: far below the writer's own autocheckpoint threshold.
        let (chat, _) = colloquy_storage::conformance::start_chat(
            &store,
            &who,
            GroupChoice::New(Uuid::new_v4()),
            1,
            None,
            Uuid::new_v4(),
        )
        .await;
        let events: Vec<NewEvent> = (1..=2_000)
            .map(|seq| NewEvent {
                id: Uuid::now_v7(),
                seq,
                timestamp: seq,
                role: colloquy_wire::EventRole::User,
                event_type: colloquy_wire::EventType::UserMessage,
                message_text: Some(format!("message number {seq} with some words in it")),
                emotion_features: None,
                metadata: None,
                related_event_id: None,
            })
            .collect();
        store
            .apply_batch(&[WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id: chat,
                events,
            }])
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = std::fs::metadata(&path).unwrap().len();
            if now > before + 100_000 {
                break; // the events reached the database file, not only the WAL
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {now} bytes (was {before}): no background checkpoint"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.close().await;
    }

    /// Batches commit on the writer thread's connection while other writes use sqlx's:
    /// every transaction takes the write lock up front (`BEGIN IMMEDIATE`), so one that
    /// reads before it writes (deleting chats) waits for the other connection instead of
    /// failing with SQLITE_BUSY when a batch commits in between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_and_other_writes_run_side_by_side() {
        use colloquy_storage::conformance::{new_account, start_chat};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let store = Arc::new(
            SqliteStore::open(&url, &SqliteSettings::default())
                .await
                .unwrap(),
        );
        let who = new_account(&*store, true).await;
        let instance = Uuid::new_v4();
        let (busy, _) = start_chat(
            &*store,
            &who,
            GroupChoice::New(Uuid::new_v4()),
            1,
            None,
            instance,
        )
        .await;
        let mut doomed = Vec::new();
        for i in 0..60 {
            let group = GroupChoice::New(Uuid::new_v4());
            doomed.push(
                start_chat(&*store, &who, group, 10 + i, None, instance)
                    .await
                    .0,
            );
        }
        let event = |seq: i64| NewEvent {
            id: Uuid::now_v7(),
            seq,
            timestamp: 1_000 + seq,
            role: EventRole::User,
            event_type: EventType::UserMessage,
            message_text: Some(format!("words of message {seq}")),
            emotion_features: None,
            metadata: None,
            related_event_id: None,
        };
        let appender = {
            let store = store.clone();
            tokio::spawn(async move {
                // start_chat stored seq 0.
                for round in 0..300i64 {
                    let events = (1..=4).map(|k| event(round * 4 + k)).collect();
                    let out = store
                        .apply_batch(&[WriteOp::AppendEvents {
                            api_key_id: who.api_key_id,
                            chat_id: busy,
                            events,
                        }])
                        .await
                        .expect("a batch beside other writes");
                    assert_eq!(out, vec![OpOutcome::Applied]);
                }
            })
        };
        for chat in &doomed {
            let gone = store
                .delete_chats(who.user_id, &[*chat])
                .await
                .expect("a delete beside batches");
            assert_eq!(gone, vec![*chat]);
        }
        appender.await.unwrap();
        let chat = store.get_chat(who.user_id, busy).await.unwrap().unwrap();
        assert_eq!(
            chat.event_count,
            1 + 1_200,
            "every appended event is counted"
        );
        for chat in doomed {
            assert!(store.get_chat(who.user_id, chat).await.unwrap().is_none());
        }
        store.close().await;
    }

    #[tokio::test]
    async fn events_are_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let store = SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .unwrap();
        let who = colloquy_storage::conformance::new_account(&store, true).await;
        colloquy_storage::conformance::start_chat(
            &store,
            &who,
            GroupChoice::New(Uuid::new_v4()),
            1,
            None,
            Uuid::new_v4(),
        )
        .await;
        let err = sqlx::query("UPDATE chat_events SET message_text = 'changed'")
            .execute(&store.write)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("immutable"), "{err}");
    }
}
