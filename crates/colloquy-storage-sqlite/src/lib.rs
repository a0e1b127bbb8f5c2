//! SQLite backend of [`colloquy_storage::Store`]: the embedded default.
//!
//! Group-committed batches of chat events are written by one `rusqlite` connection on a
//! thread of its own ([`writer`]); every other write goes through one sqlx connection, and a
//! small sqlx pool reads. Writes take the lock up front (`BEGIN IMMEDIATE`), so the two
//! writing connections queue for each other; WAL mode lets reads run beside them and see
//! every committed batch at once.
//!
//! The files are those of the PostgreSQL backend, one subject each: this one opens the
//! database and delegates [`Store`]'s methods; [`keys`] (accounts, keys, tokens, server
//! instances), [`reads`] (chats, groups, events, paging), [`writes`] (the body of a batch),
//! [`jobs`] (audio reconstructions), [`erasure`] (deleting chats and groups), [`rows`]
//! (reading rows), [`configs`] (prompts, tools and configs, [`ResourceStore`]), `tests.rs`.
//! Two are SQLite's only: [`writer`], the batch thread, and [`group_events`], which lists a
//! group's events without an index on the group.

mod configs;
mod erasure;
mod group_events;
mod jobs;
mod keys;
mod reads;
mod rows;
mod voices;
mod webhooks;
mod writer;
mod writes;

#[cfg(test)]
mod tests;

use async_trait::async_trait;
use colloquy_storage::*;
use colloquy_wire::ChatStatus;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
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
    /// Most operations the writer thread merges into one transaction.
    pub max_batch: usize,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            synchronous_full: true,
            read_connections: 4,
            max_batch: 512,
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

pub(crate) fn db(e: sqlx::Error) -> StoreError {
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
        // With `synchronous_full`, the WAL file the writer's flusher flushes (none for a
        // database without one).
        let wal = settings.synchronous_full.then(|| {
            let mut path = opts.get_filename().as_os_str().to_owned();
            path.push("-wal");
            std::fs::File::open(&path).ok()
        });
        let writer =
            writer::BatchWriter::open(opts.get_filename(), wal.flatten(), settings.max_batch)?;
        let checkpointer = tokio::spawn(checkpoint_in_background(checkpoints.clone()));
        Ok(Self {
            writer,
            write,
            read,
            checkpoints,
            checkpointer,
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

/// One server owns a SQLite database: nothing to reach across servers.
#[async_trait]
impl colloquy_storage::LiveStore for SqliteStore {
    async fn set_chat_metadata(
        &self,
        user_id: Uuid,
        chat_id: Uuid,
        metadata: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE chats SET metadata = ? WHERE id = ? AND user_id = ? AND status = 'ACTIVE'",
        )
        .bind(colloquy_storage::storable_text(metadata).as_ref())
        .bind(chat_id.to_string())
        .bind(user_id.to_string())
        .execute(&self.write)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    /// The writer thread forms the batches ([`writer`]): an operation handed over while
    /// another transaction commits or flushes joins the next commit, without waiting for an
    /// async task to collect it.
    fn batching(&self) -> Batching {
        Batching::Store
    }

    async fn create_account(&self, account: &NewAccount, key: &NewApiKey) -> StoreResult<()> {
        keys::create_account(&self.write, account, key).await
    }

    async fn add_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        keys::add_api_key(&self.write, key).await
    }

    async fn count_accounts(&self) -> StoreResult<u64> {
        keys::count_accounts(&self.write).await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        keys::list_api_keys(&self.write).await
    }

    async fn revoke_api_key(&self, api_key_id: Uuid, now_ms: i64) -> StoreResult<bool> {
        keys::revoke_api_key(&self.write, api_key_id, now_ms).await
    }

    async fn principal_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<Principal>> {
        keys::principal_by_key_hash(&self.read, key_hash).await
    }

    async fn insert_access_token(
        &self,
        token_hash: &str,
        api_key_id: Uuid,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        keys::insert_access_token(&self.write, token_hash, api_key_id, expires_at_ms).await
    }

    async fn principal_by_token_hash(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<Principal>> {
        keys::principal_by_token_hash(&self.read, token_hash, now_ms).await
    }

    async fn delete_access_token(&self, token_hash: &str) -> StoreResult<bool> {
        keys::delete_access_token(&self.write, token_hash).await
    }

    async fn secret_hash_for_key(
        &self,
        key_hash: &str,
    ) -> StoreResult<Option<(Principal, String)>> {
        keys::secret_hash_for_key(&self.read, key_hash).await
    }

    async fn heartbeat_instance(&self, instance_id: Uuid, now_ms: i64) -> StoreResult<()> {
        keys::heartbeat_instance(&self.write, instance_id, now_ms).await
    }

    async fn remove_instance(&self, instance_id: Uuid) -> StoreResult<()> {
        keys::remove_instance(&self.write, instance_id).await
    }

    async fn close_orphaned_chats(&self, stale_before_ms: i64) -> StoreResult<u64> {
        keys::close_orphaned_chats(&self.write, stale_before_ms).await
    }

    /// The batch runs on the writer thread ([`writer`]), in one transaction with the
    /// batches queued beside it; with `synchronous_full` it is answered once the WAL has been
    /// flushed after its commit, off the write lock.
    async fn apply_batch(&self, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
        self.writer.apply(ops.to_vec()).await
    }

    async fn list_chats(
        &self,
        user_id: Uuid,
        filter: &ChatFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ChatRecord>> {
        reads::list_chats(&self.read, user_id, filter, page).await
    }

    async fn get_chat(&self, user_id: Uuid, chat_id: Uuid) -> StoreResult<Option<ChatRecord>> {
        reads::get_chat(&self.read, user_id, chat_id).await
    }

    async fn list_chat_events(
        &self,
        chat_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<Page<EventRecord>> {
        reads::list_chat_events(&self.read, chat_id, page).await
    }

    async fn list_chat_groups(
        &self,
        user_id: Uuid,
        config_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<GroupRecord>> {
        reads::list_chat_groups(&self.read, user_id, config_id, page).await
    }

    async fn get_chat_group(
        &self,
        user_id: Uuid,
        group_id: Uuid,
    ) -> StoreResult<Option<GroupRecord>> {
        reads::get_chat_group(&self.read, user_id, group_id).await
    }

    async fn list_group_chats(
        &self,
        group_id: Uuid,
        status: Option<ChatStatus>,
        page: PageRequest,
    ) -> StoreResult<Page<ChatRecord>> {
        reads::list_group_chats(&self.read, group_id, status, page).await
    }

    async fn list_group_events(
        &self,
        group_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<Page<EventRecord>> {
        reads::list_group_events(&self.read, group_id, page).await
    }

    async fn ensure_reconstructions(
        &self,
        user_id: Uuid,
        chat_ids: &[Uuid],
        now_ms: i64,
    ) -> StoreResult<Vec<ReconstructionRecord>> {
        jobs::ensure_reconstructions(&self.write, user_id, chat_ids, now_ms).await
    }

    async fn claim_reconstruction(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
        max_attempts: i64,
    ) -> StoreResult<Option<ClaimedJob>> {
        jobs::claim_reconstruction(&self.write, worker, now_ms, lease_ms, max_attempts).await
    }

    async fn renew_reconstruction_lease(
        &self,
        chat_id: Uuid,
        worker: &str,
        until_ms: i64,
    ) -> StoreResult<bool> {
        jobs::renew_reconstruction_lease(&self.write, chat_id, worker, until_ms).await
    }

    async fn finish_reconstruction(
        &self,
        chat_id: Uuid,
        worker: &str,
        result: &JobResult,
        now_ms: i64,
    ) -> StoreResult<bool> {
        jobs::finish_reconstruction(&self.write, chat_id, worker, result, now_ms).await
    }

    async fn claim_webhook_deliveries(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        webhooks::claim(&self.write, worker, now_ms, lease_ms, limit).await
    }

    async fn finish_webhook_deliveries(
        &self,
        worker: &str,
        reports: &[AttemptReport],
        _now_ms: i64,
    ) -> StoreResult<u64> {
        webhooks::finish(&self.write, worker, reports).await
    }

    async fn list_webhook_deliveries(
        &self,
        user_id: Option<Uuid>,
        filter: &DeliveryFilter,
        page: PageRequest,
    ) -> StoreResult<Page<DeliveryRecord>> {
        webhooks::list(&self.read, user_id, filter, page).await
    }

    async fn retry_webhook_delivery(
        &self,
        user_id: Option<Uuid>,
        id: Uuid,
        now_ms: i64,
    ) -> StoreResult<Option<DeliveryRecord>> {
        webhooks::retry(&self.write, user_id, id, now_ms).await
    }

    async fn webhook_signing_key(
        &self,
        user_id: Uuid,
        candidate: &str,
    ) -> StoreResult<Option<String>> {
        webhooks::signing_key(&self.read, &self.write, user_id, candidate).await
    }

    async fn set_webhook_signing_key(&self, user_id: Uuid, key: &str) -> StoreResult<bool> {
        webhooks::set_signing_key(&self.write, user_id, key).await
    }

    async fn delete_chats(&self, user_id: Uuid, chat_ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        erasure::delete_chats(&self.write, user_id, chat_ids).await
    }

    async fn group_chat_ids(
        &self,
        user_id: Uuid,
        group_id: Uuid,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        erasure::group_chat_ids(&self.read, user_id, group_id).await
    }
}
