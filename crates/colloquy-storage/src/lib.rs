//! Colloquy's storage trait: what every database backend must provide.
//!
//! Backends (`colloquy-storage-sqlite`, `colloquy-storage-postgres`) implement [`Store`] and
//! own their migrations. What their SQL agrees on (column lists, row decoding, the
//! listings' filters and paging) is written once in [`sql`]. Every backend must pass the
//! shared conformance suite (`conformance`, with the `test-support` feature): one test per
//! scenario, generated in the backend's tests by `conformance_tests!`.
//!
//! Writes from chat sessions go through [`Store::apply_batch`]: the server groups the
//! operations of many sessions into one transaction (group commit) and only acknowledges an
//! operation to its session once the batch is committed.

mod batch;
#[cfg(feature = "test-support")]
pub mod conformance;
mod error;
mod live;
mod model;
mod resources;
mod search;
pub mod sql;
mod voices;
pub mod webhooks;

pub use batch::{
    batch_keys, chats_written, limited_accounts, may_start_chat, now_ms, resumed_groups, storable,
    storable_text, BatchRules, BatchTx, ChatCounters, QueuedEvent, QueuedEvents, Step,
};
pub use error::{StoreError, StoreResult};
pub use live::{LiveOwner, LiveStore, MAX_PAYLOAD};
pub use model::*;
pub use resources::*;
pub use search::{search_terms, MAX_SEARCH_TERMS};
pub use voices::*;
pub use webhooks::{
    AttemptReport, ChatWebhooks, ClaimedDelivery, DeliveryFilter, DeliveryRecord, DeliveryStatus,
    NewDelivery, WebhookEvent, WebhookSubscription, WebhookTx,
};

use async_trait::async_trait;
use uuid::Uuid;

/// Who forms the batches of [`Store::apply_batch`] (`colloquy-server`'s recorder does the
/// group commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// The recorder queues operations and hands whatever has queued up to one call, with
    /// up to `concurrency` calls in flight; a failing batch is applied again in halves to
    /// isolate the operations that fail.
    Recorder { concurrency: usize },
    /// The store forms its own batches: each operation is handed over in a call of its own
    /// as soon as it is submitted, and the store commits the calls queued at it together.
    /// When such a transaction fails, the store applies each call again alone, so only an
    /// operation that fails on its own is refused.
    Store,
}

/// The storage of accounts, keys, chats, chat groups, events and audio reconstructions,
/// and (through [`ResourceStore`]) of prompts, tools and configs, and (through
/// [`VoiceStore`]) of text to speech's generations and saved voices.
///
/// Reads are scoped by `user_id` where an id comes from a caller; a row owned by another
/// account is reported as absent, never as forbidden.
#[async_trait]
pub trait Store: ResourceStore + LiveStore + VoiceStore + Send + Sync + 'static {
    /// Short backend name (`sqlite`, `postgres`) for logs.
    fn backend(&self) -> &'static str;

    /// Who forms the batches of [`Store::apply_batch`] (the group commit).
    fn batching(&self) -> Batching {
        Batching::Recorder { concurrency: 1 }
    }

    // ----- accounts and keys -----

    /// Creates an account together with its first API key.
    async fn create_account(&self, account: &NewAccount, key: &NewApiKey) -> StoreResult<()>;

    /// Adds another key to an existing account.
    async fn add_api_key(&self, key: &NewApiKey) -> StoreResult<()>;

    /// Number of accounts (used to create the first key on an empty database).
    async fn count_accounts(&self) -> StoreResult<u64>;

    /// All keys, newest first, revoked ones included.
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;

    /// Marks a key revoked; returns false if it does not exist or was already revoked.
    async fn revoke_api_key(&self, api_key_id: Uuid, now_ms: i64) -> StoreResult<bool>;

    /// The identity behind a live (not revoked) API key, by the key's SHA-256 hash.
    async fn principal_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<Principal>>;

    /// Remembers an access token (by hash) minted for a key.
    async fn insert_access_token(
        &self,
        token_hash: &str,
        api_key_id: Uuid,
        expires_at_ms: i64,
    ) -> StoreResult<()>;

    /// The identity behind an unexpired access token whose key is still live.
    async fn principal_by_token_hash(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<Principal>>;

    /// Forgets an access token (sign-out); false if there was none.
    async fn delete_access_token(&self, token_hash: &str) -> StoreResult<bool>;

    /// Secret-key hash of a live key, for the client-credentials grant.
    async fn secret_hash_for_key(&self, key_hash: &str)
        -> StoreResult<Option<(Principal, String)>>;

    // ----- server instances (crash recovery) -----

    /// Records that a server instance is alive at `now_ms`.
    async fn heartbeat_instance(&self, instance_id: Uuid, now_ms: i64) -> StoreResult<()>;

    /// Forgets an instance that shut down cleanly.
    async fn remove_instance(&self, instance_id: Uuid) -> StoreResult<()>;

    /// Ends every `ACTIVE` chat whose server instance has not sent a heartbeat since
    /// `stale_before_ms` (or is unknown): status `ERROR`, `end_timestamp` = its last event
    /// time, and a `CHAT_END_MESSAGE` event. Returns the number of chats closed.
    async fn close_orphaned_chats(&self, stale_before_ms: i64) -> StoreResult<u64>;

    // ----- session writes -----

    /// Applies the operations in one transaction, in order, and reports each one's outcome.
    /// Operations of a revoked key are not applied ([`OpOutcome::KeyRevoked`]), except
    /// [`WriteOp::EndChat`], which always closes its chat (and still reports the revocation).
    /// Appending to or ending a chat that is not `ACTIVE` (or does not exist) applies nothing
    /// and reports [`OpOutcome::ChatClosed`], so one stale session never fails a whole batch.
    /// A [`WriteOp::StartChat`] with `max_active_chats` over an account already at its
    /// limit applies nothing and reports [`OpOutcome::TooManyChats`]; the count is exact
    /// however many batches (and servers) start chats at once.
    /// Text is stored through [`storable_text`] (NUL becomes U+FFFD on every backend).
    /// The rules are [`BatchRules`]'.
    /// On an error nothing of the batch is stored.
    async fn apply_batch(&self, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>>;

    // ----- reads -----

    /// The account's chats, by start time.
    async fn list_chats(
        &self,
        user_id: Uuid,
        filter: &ChatFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ChatRecord>>;

    /// One chat of the account.
    async fn get_chat(&self, user_id: Uuid, chat_id: Uuid) -> StoreResult<Option<ChatRecord>>;

    /// Events of one chat, by time.
    async fn list_chat_events(
        &self,
        chat_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<Page<EventRecord>>;

    /// The account's chat groups, by first start time; `config_id` matches the most recent
    /// chat's config.
    async fn list_chat_groups(
        &self,
        user_id: Uuid,
        config_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<GroupRecord>>;

    /// One chat group of the account.
    async fn get_chat_group(
        &self,
        user_id: Uuid,
        group_id: Uuid,
    ) -> StoreResult<Option<GroupRecord>>;

    /// The chats of a group, by start time, optionally of one status.
    async fn list_group_chats(
        &self,
        group_id: Uuid,
        status: Option<colloquy_wire::ChatStatus>,
        page: PageRequest,
    ) -> StoreResult<Page<ChatRecord>>;

    /// Events of every chat of a group, by time.
    async fn list_group_events(
        &self,
        group_id: Uuid,
        page: PageRequest,
    ) -> StoreResult<Page<EventRecord>>;

    // ----- audio reconstructions -----

    /// Returns the reconstruction record of each chat, creating missing ones as `QUEUED`
    /// together with their job, in the same transaction (exactly one record and one job per
    /// chat, whatever the concurrency). Chats must belong to `user_id`.
    async fn ensure_reconstructions(
        &self,
        user_id: Uuid,
        chat_ids: &[Uuid],
        now_ms: i64,
    ) -> StoreResult<Vec<ReconstructionRecord>>;

    /// Claims the oldest runnable reconstruction job for `worker`: its chat has ended and it
    /// is unleased or its lease expired (a crashed worker's job is taken again). The record
    /// becomes `IN_PROGRESS`. Jobs already tried `max_attempts` times end as `ERROR` instead.
    async fn claim_reconstruction(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
        max_attempts: i64,
    ) -> StoreResult<Option<ClaimedJob>>;

    /// Extends the lease of a job `worker` holds; false if it lost the lease.
    async fn renew_reconstruction_lease(
        &self,
        chat_id: Uuid,
        worker: &str,
        until_ms: i64,
    ) -> StoreResult<bool>;

    /// Records the result of a job `worker` holds and removes the job; false (and nothing
    /// changed) if it lost the lease, so a job finishes exactly once.
    async fn finish_reconstruction(
        &self,
        chat_id: Uuid,
        worker: &str,
        result: &JobResult,
        now_ms: i64,
    ) -> StoreResult<bool>;

    // ----- webhooks -----

    /// Claims up to `limit` due deliveries (`pending`, `next_attempt_at` passed, unleased or
    /// lease expired) for `worker` until `now_ms + lease_ms`. A delivery is held by one
    /// worker at a time, whatever the number of processes.
    async fn claim_webhook_deliveries(
        &self,
        worker: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>>;

    /// Records attempts `worker` made, in one transaction, and releases their leases; a
    /// report for a delivery whose lease `worker` lost changes nothing. Returns how many
    /// were recorded.
    async fn finish_webhook_deliveries(
        &self,
        worker: &str,
        reports: &[AttemptReport],
        now_ms: i64,
    ) -> StoreResult<u64>;

    /// Deliveries, newest first unless `page.ascending`; of one account, or (`None`) all.
    async fn list_webhook_deliveries(
        &self,
        user_id: Option<Uuid>,
        filter: &DeliveryFilter,
        page: PageRequest,
    ) -> StoreResult<Page<DeliveryRecord>>;

    /// Makes a delivery pending again, due now, with a new retry window; `None` if there is
    /// no such delivery (of that account, with `Some`).
    async fn retry_webhook_delivery(
        &self,
        user_id: Option<Uuid>,
        id: Uuid,
        now_ms: i64,
    ) -> StoreResult<Option<DeliveryRecord>>;

    /// The account's webhook signing key, set to `candidate` first if it has none; `None`
    /// if there is no such account.
    async fn webhook_signing_key(
        &self,
        user_id: Uuid,
        candidate: &str,
    ) -> StoreResult<Option<String>>;

    /// Replaces the account's webhook signing key; false if there is no such account.
    async fn set_webhook_signing_key(&self, user_id: Uuid, key: &str) -> StoreResult<bool>;

    // ----- erasure -----

    /// Erases chats of the account with everything stored about them: events, audio
    /// reconstruction records and their jobs (a pending job is cancelled: its worker can no
    /// longer finish it). Groups left without chats are erased; the others' summaries are
    /// recomputed. Returns the chats erased (ids not owned by `user_id` are skipped).
    /// An `ACTIVE` chat may be erased: its session learns it at its next write.
    async fn delete_chats(&self, user_id: Uuid, chat_ids: &[Uuid]) -> StoreResult<Vec<Uuid>>;

    /// The ids of every chat of a group of the account; `None` if there is no such group.
    async fn group_chat_ids(&self, user_id: Uuid, group_id: Uuid)
        -> StoreResult<Option<Vec<Uuid>>>;
}
