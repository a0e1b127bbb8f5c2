//! PostgreSQL backend of [`colloquy_storage::Store`], for several server processes sharing
//! one database.
//!
//! One connection pool serves reads and writes. [`Store::apply_batch`] runs one transaction
//! per call and locks the rows it updates in id order, so the server's parallel group-commit
//! writers ([`Store::batching`]) cannot deadlock each other.
//!
//! The files are those of the SQLite backend, one subject each: this one opens the database
//! and delegates [`Store`]'s methods; [`keys`] (accounts, keys, tokens, server instances),
//! [`reads`] (chats, groups, events, paging), [`writes`] (the body of a batch), [`jobs`]
//! (audio reconstructions), [`erasure`] (deleting chats and groups), [`rows`] (reading
//! rows), [`configs`] (prompts, tools and configs, [`ResourceStore`]), `tests.rs`, and
//! [`testing`] (throwaway databases, with the `test-support` feature). SQLite's other two
//! have no counterpart here: its `writer.rs` runs batches on a `rusqlite` thread of their
//! own because each sqlx statement there is a hand-off to a worker thread, while a batch
//! here is a few round trips on a pooled connection (its events in one `UNNEST` insert)
//! that several writers run at once; and its `group_events.rs` lists a group's events
//! through its chats because SQLite's events are indexed by chat only, while here
//! `chat_events_by_group` answers in one query. One file is this backend's own:
//! [`appends`], a batch that only appends events, written in one statement that commits on
//! its own (one round trip instead of five).

mod appends;
mod configs;
mod erasure;
mod jobs;
mod keys;
mod live;
mod reads;
mod rows;
#[cfg(feature = "test-support")]
pub mod testing;
mod voices;
mod webhooks;
mod writes;

#[cfg(test)]
mod tests;

use async_trait::async_trait;
use colloquy_storage::*;
use colloquy_wire::ChatStatus;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
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
pub(crate) fn db(e: sqlx::Error) -> StoreError {
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
    ///
    /// Every connection turns off JIT compilation and parallel workers: Colloquy's queries
    /// are small index lookups, and on a large database the planner's estimates (a
    /// full-text prefix match is guessed at thousands of rows when it finds a hundred) made
    /// PostgreSQL compile and start workers for them, 16–150 ms of a 0.5 ms search
    /// (docs/benchmarks.md, session 7).
    pub async fn open(url: &str, settings: &PostgresSettings) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(db)?
            .options([("jit", "off"), ("max_parallel_workers_per_gather", "0")]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .connect_with(options)
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

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    /// Two: one batch commits (and waits for its WAL flush) while the next is written.
    /// On 2 cores shared with the database server, alternated runs of the ingest benchmark
    /// gave 2 writers 19.9–26.4k events/s against 19.1–22.5k for 4 and 14.8–16.0k for 8
    /// (docs/benchmarks.md, session 4): more writers make smaller batches and more commits.
    fn batching(&self) -> Batching {
        Batching::Recorder { concurrency: 2 }
    }

    async fn create_account(&self, account: &NewAccount, key: &NewApiKey) -> StoreResult<()> {
        keys::create_account(&self.pool, account, key).await
    }

    async fn add_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        keys::add_api_key(&self.pool, key).await
    }

    async fn count_accounts(&self) -> StoreResult<u64> {
        keys::count_accounts(&self.pool).await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        keys::list_api_keys(&self.pool).await
    }

    async fn revoke_api_key(&self, api_key_id: Uuid, now_ms: i64) -> StoreResult<bool> {
        keys::revoke_api_key(&self.pool, api_key_id, now_ms).await
    }

    async fn principal_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<Principal>> {
        keys::principal_by_key_hash(&self.pool, key_hash).await
    }

    async fn insert_access_token(
        &self,
        token_hash: &str,
        api_key_id: Uuid,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        keys::insert_access_token(&self.pool, token_hash, api_key_id, expires_at_ms).await
    }

    async fn principal_by_token_hash(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<Principal>> {
        keys::principal_by_token_hash(&self.pool, token_hash, now_ms).await
    }

    async fn delete_access_token(&self, token_hash: &str) -> StoreResult<bool> {
        keys::delete_access_token(&self.pool, token_hash).await
    }

    async fn secret_hash_for_key(
        &self,
        key_hash: &str,
    ) -> StoreResult<Option<(Principal, String)>> {
        keys::secret_hash_for_key(&self.pool, key_hash).await
    }

    async fn heartbeat_instance(&self, instance_id: Uuid, now_ms: i64) -> StoreResult<()> {
        keys::heartbeat_instance(&self.pool, instance_id, now_ms).await
    }

    async fn remove_instance(&self, instance_id: Uuid) -> StoreResult<()> {
        keys::remove_instance(&self.pool, instance_id).await
    }

    async fn close_orphaned_chats(&self, stale_before_ms: i64) -> StoreResult<u64> {
        keys::close_orphaned_chats(&self.pool, stale_before_ms).await
    }

    async fn apply_batch(&self, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
        writes::apply_batch(&self.pool, ops).await
    }

    async fn list_chats(
        &self,
        user_id: Uuid,
        filter: &ChatFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ChatRecord>> {
        reads::list_chats(&self.pool, user_id, filter, page).await
    }

    async fn get_chat(&self, user_id: Uuid, chat_id: Uuid) -> StoreResult<Option<ChatRecord>> {
        reads::get_chat(&self.pool, user_id, chat_id).await
    }

    async fn list_chat_events(
        &self,
        chat_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<Page<EventRecord>> {
        reads::list_chat_events(&self.pool, chat_id, page).await
    }

    async fn list_chat_groups(
        &self,
        user_id: Uuid,
        config_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<GroupRecord>> {
        reads::list_chat_groups(&self.pool, user_id, config_id, page).await
    }

    async fn get_chat_group(
        &self,
        user_id: Uuid,
        group_id: Uuid,
    ) -> StoreResult<Option<GroupRecord>> {
        reads::get_chat_group(&self.pool, user_id, group_id).await
    }

    async fn list_group_chats(
        &self,
        group_id: Uuid,
        status: Option<ChatStatus>,
        page: PageRequest,
    ) -> StoreResult<Page<ChatRecord>> {
        reads::list_group_chats(&self.pool, group_id, status, page).await
    }

    async fn list_group_events(
        &self,
        group_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<Page<EventRecord>> {
        reads::list_group_events(&self.pool, group_id, page).await
    }

    async fn ensure_reconstructions(
        &self,
        user_id: Uuid,
        chat_ids: &[Uuid],
        now_ms: i64,
    ) -> StoreResult<Vec<ReconstructionRecord>> {
        jobs::ensure_reconstructions(&self.pool, user_id, chat_ids, now_ms).await
    }

    async fn claim_reconstruction(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
        max_attempts: i64,
    ) -> StoreResult<Option<ClaimedJob>> {
        jobs::claim_reconstruction(&self.pool, worker, now_ms, lease_ms, max_attempts).await
    }

    async fn renew_reconstruction_lease(
        &self,
        chat_id: Uuid,
        worker: &str,
        until_ms: i64,
    ) -> StoreResult<bool> {
        jobs::renew_reconstruction_lease(&self.pool, chat_id, worker, until_ms).await
    }

    async fn finish_reconstruction(
        &self,
        chat_id: Uuid,
        worker: &str,
        result: &JobResult,
        now_ms: i64,
    ) -> StoreResult<bool> {
        jobs::finish_reconstruction(&self.pool, chat_id, worker, result, now_ms).await
    }

    async fn claim_webhook_deliveries(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        webhooks::claim(&self.pool, worker, now_ms, lease_ms, limit).await
    }

    async fn finish_webhook_deliveries(
        &self,
        worker: &str,
        reports: &[AttemptReport],
        _now_ms: i64,
    ) -> StoreResult<u64> {
        webhooks::finish(&self.pool, worker, reports).await
    }

    async fn list_webhook_deliveries(
        &self,
        user_id: Option<Uuid>,
        filter: &DeliveryFilter,
        page: PageRequest,
    ) -> StoreResult<Page<DeliveryRecord>> {
        webhooks::list(&self.pool, user_id, filter, page).await
    }

    async fn retry_webhook_delivery(
        &self,
        user_id: Option<Uuid>,
        id: Uuid,
        now_ms: i64,
    ) -> StoreResult<Option<DeliveryRecord>> {
        webhooks::retry(&self.pool, user_id, id, now_ms).await
    }

    async fn webhook_signing_key(
        &self,
        user_id: Uuid,
        candidate: &str,
    ) -> StoreResult<Option<String>> {
        webhooks::signing_key(&self.pool, user_id, candidate).await
    }

    async fn set_webhook_signing_key(&self, user_id: Uuid, key: &str) -> StoreResult<bool> {
        webhooks::set_signing_key(&self.pool, user_id, key).await
    }

    async fn delete_chats(&self, user_id: Uuid, chat_ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        erasure::delete_chats(&self.pool, user_id, chat_ids).await
    }

    async fn group_chat_ids(
        &self,
        user_id: Uuid,
        group_id: Uuid,
    ) -> StoreResult<Option<Vec<Uuid>>> {
        erasure::group_chat_ids(&self.pool, user_id, group_id).await
    }
}
