//! Group commit: sessions submit write operations and are answered only after the commit.
//! Under load one fsync covers many sessions' events; when idle a single operation commits
//! at once. Who forms the batches is the store's choice ([`Batching`]):
//!
//! - [`Batching::Recorder`] (PostgreSQL): writer tasks drain whatever has queued up (up to
//!   `max_batch`) into one [`Store::apply_batch`] transaction. A batch that fails is
//!   applied again in halves, so only the operations that fail on their own are refused
//!   ([`commit`]).
//! - [`Batching::Store`] (SQLite): each operation goes to the store from the submitting
//!   task, in a call of its own; the store's writer thread commits what has queued at it
//!   together and isolates a failing operation itself. There is no task in between to be
//!   scheduled, twice per operation, on a busy machine (docs/benchmarks.md, session 8).

use colloquy_storage::{Batching, OpOutcome, Store, StoreError, WriteOp};
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

/// Why an operation was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// The database failed to commit the operation (rolled back; the other operations of
    /// its batch are committed unless they fail too).
    #[error("the database failed to commit: {0}")]
    Database(String),
    /// The recorder is shutting down.
    #[error("the server is shutting down")]
    Closed,
}

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<OpOutcome, RecordError>>,
}

/// Handle to the group commit; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    to: To,
}

/// Where submitted operations go.
#[derive(Clone)]
enum To {
    /// The queue of the recorder's writer tasks.
    Writers(mpsc::Sender<Job>),
    /// The store itself, which batches them.
    Store(Arc<dyn Store>),
}

impl Recorder {
    /// Starts the group commit the store asks for: with [`Batching::Recorder`], its writer
    /// tasks on the current runtime.
    pub fn start(store: Arc<dyn Store>, max_batch: usize) -> Self {
        let concurrency = match store.batching() {
            Batching::Store => {
                return Recorder {
                    to: To::Store(store),
                }
            }
            Batching::Recorder { concurrency } => concurrency.max(1),
        };
        let (tx, rx) = mpsc::channel::<Job>(max_batch.max(1) * 8);
        let rx = Arc::new(Mutex::new(rx));
        let max_batch = max_batch.max(1);
        for _ in 0..concurrency {
            tokio::spawn(writer(store.clone(), rx.clone(), max_batch));
        }
        Recorder {
            to: To::Writers(tx),
        }
    }

    /// Submits one operation and waits until it is committed (or refused).
    pub async fn submit(&self, op: WriteOp) -> Result<OpOutcome, RecordError> {
        match &self.to {
            To::Writers(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.send(Job { op, reply })
                    .await
                    .map_err(|_| RecordError::Closed)?;
                rx.await.map_err(|_| RecordError::Closed)?
            }
            To::Store(store) => {
                let outcome = store.apply_batch(std::slice::from_ref(&op)).await;
                match outcome.map(|mut outcomes| outcomes.pop()) {
                    Ok(Some(outcome)) => Ok(outcome),
                    Ok(None) => Err(RecordError::Database(
                        "the store answered no outcome for the operation".into(),
                    )),
                    Err(e) => {
                        log_refused(&op, &e);
                        Err(RecordError::Database(e.to_string()))
                    }
                }
            }
        }
    }
}

async fn writer(store: Arc<dyn Store>, rx: Arc<Mutex<mpsc::Receiver<Job>>>, max_batch: usize) {
    let mut jobs = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, max_batch).await == 0 {
                return;
            }
        }
        let (ops, replies): (Vec<WriteOp>, Vec<_>) =
            jobs.drain(..).map(|j| (j.op, j.reply)).unzip();
        for (reply, result) in replies.into_iter().zip(commit(&*store, &ops).await) {
            let _ = reply.send(result);
        }
    }
}

/// Commits `ops` in one transaction and returns each one's result.
///
/// When that transaction fails, one session's operation must not fail every session of
/// the batch (an account could otherwise break other accounts' chats): the operations are
/// applied again in halves, and the halves of a failing half, until only the operations
/// that fail on their own are refused. Each operation is committed once at most, in the
/// batch's order. A database that is unavailable is not retried: everything not committed
/// yet is refused at once.
async fn commit(store: &dyn Store, ops: &[WriteOp]) -> Vec<Result<OpOutcome, RecordError>> {
    let failure = match store.apply_batch(ops).await {
        Ok(outcomes) => return outcomes.into_iter().map(Ok).collect(),
        Err(e) => e,
    };
    if ops.len() == 1 || matches!(failure, StoreError::Unavailable(_)) {
        tracing::error!(error = %failure, ops = ops.len(), "group commit failed");
        return vec![Err(RecordError::Database(failure.to_string())); ops.len()];
    }
    tracing::warn!(
        error = %failure,
        ops = ops.len(),
        "group commit failed; applying its operations in halves to isolate the failing ones"
    );
    let mut results: Vec<Option<Result<OpOutcome, RecordError>>> = vec![None; ops.len()];
    let mid = ops.len() / 2;
    // Ranges still to apply, the next one last.
    let mut todo: Vec<Range<usize>> = vec![mid..ops.len(), 0..mid];
    let mut unavailable: Option<RecordError> = None;
    while let Some(range) = todo.pop() {
        if let Some(e) = &unavailable {
            results[range].fill(Some(Err(e.clone())));
            continue;
        }
        match store.apply_batch(&ops[range.clone()]).await {
            Ok(outcomes) => {
                for (slot, outcome) in results[range].iter_mut().zip(outcomes) {
                    *slot = Some(Ok(outcome));
                }
            }
            Err(e) if range.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
                let mid = range.start + range.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
            }
            Err(e) => {
                if range.len() == 1 {
                    log_refused(&ops[range.start], &e);
                } else {
                    tracing::error!(error = %e, ops = range.len(), "group commit failed");
                }
                let err = RecordError::Database(e.to_string());
                if matches!(e, StoreError::Unavailable(_)) {
                    unavailable = Some(err.clone());
                }
                results[range].fill(Some(Err(err)));
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(RecordError::Closed)))
        .collect()
}

/// Logs an operation the database refused on its own.
fn log_refused(op: &WriteOp, e: &StoreError) {
    let (kind, chat_id) = describe(op);
    tracing::error!(error = %e, op = kind, chat_id = ?chat_id, "an operation failed to commit");
}

/// An operation's kind and chat, for logs.
fn describe(op: &WriteOp) -> (&'static str, Option<Uuid>) {
    match op {
        WriteOp::StartChat { chat, .. } => ("start_chat", Some(chat.id)),
        WriteOp::AppendEvents { chat_id, .. } => ("append_events", Some(*chat_id)),
        WriteOp::EndChat { chat_id, .. } => ("end_chat", Some(*chat_id)),
        WriteOp::CheckKey { .. } => ("check_key", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use colloquy_storage::*;
    use colloquy_wire::{ChatStatus, EventRole, EventType};
    use std::collections::HashSet;
    use std::sync::Mutex as StdMutex;

    /// A store whose batches fail as a whole when they hold an operation on a poisoned
    /// chat, and otherwise commit every operation; it remembers what it committed.
    #[derive(Default)]
    struct Poisoned {
        poison: HashSet<Uuid>,
        /// Fail with [`StoreError::Unavailable`] instead.
        unavailable: bool,
        committed: StdMutex<Vec<WriteOp>>,
        calls: StdMutex<Vec<usize>>,
    }

    impl ResourceStore for Poisoned {}
    impl colloquy_storage::LiveStore for Poisoned {}
    impl colloquy_storage::VoiceStore for Poisoned {}

    #[async_trait]
    impl Store for Poisoned {
        fn backend(&self) -> &'static str {
            "poisoned"
        }
        async fn apply_batch(&self, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
            self.calls.lock().unwrap().push(ops.len());
            if ops
                .iter()
                .any(|op| describe(op).1.is_some_and(|c| self.poison.contains(&c)))
            {
                return Err(if self.unavailable {
                    StoreError::Unavailable("down".into())
                } else {
                    StoreError::Database("poisoned".into())
                });
            }
            self.committed.lock().unwrap().extend_from_slice(ops);
            Ok(vec![OpOutcome::Applied; ops.len()])
        }
        async fn create_account(&self, _: &NewAccount, _: &NewApiKey) -> StoreResult<()> {
            unreachable!()
        }
        async fn add_api_key(&self, _: &NewApiKey) -> StoreResult<()> {
            unreachable!()
        }
        async fn claim_webhook_deliveries(
            &self,
            _: &str,
            _: i64,
            _: i64,
            _: u32,
        ) -> StoreResult<Vec<colloquy_storage::ClaimedDelivery>> {
            unreachable!()
        }
        async fn finish_webhook_deliveries(
            &self,
            _: &str,
            _: &[colloquy_storage::AttemptReport],
            _: i64,
        ) -> StoreResult<u64> {
            unreachable!()
        }
        async fn list_webhook_deliveries(
            &self,
            _: Option<Uuid>,
            _: &colloquy_storage::DeliveryFilter,
            _: PageRequest,
        ) -> StoreResult<Page<colloquy_storage::DeliveryRecord>> {
            unreachable!()
        }
        async fn retry_webhook_delivery(
            &self,
            _: Option<Uuid>,
            _: Uuid,
            _: i64,
        ) -> StoreResult<Option<colloquy_storage::DeliveryRecord>> {
            unreachable!()
        }
        async fn webhook_signing_key(&self, _: Uuid, _: &str) -> StoreResult<Option<String>> {
            unreachable!()
        }
        async fn set_webhook_signing_key(&self, _: Uuid, _: &str) -> StoreResult<bool> {
            unreachable!()
        }
        async fn count_accounts(&self) -> StoreResult<u64> {
            unreachable!()
        }
        async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
            unreachable!()
        }
        async fn revoke_api_key(&self, _: Uuid, _: i64) -> StoreResult<bool> {
            unreachable!()
        }
        async fn principal_by_key_hash(&self, _: &str) -> StoreResult<Option<Principal>> {
            unreachable!()
        }
        async fn insert_access_token(&self, _: &str, _: Uuid, _: i64) -> StoreResult<()> {
            unreachable!()
        }
        async fn principal_by_token_hash(&self, _: &str, _: i64) -> StoreResult<Option<Principal>> {
            unreachable!()
        }
        async fn delete_access_token(&self, _: &str) -> StoreResult<bool> {
            unreachable!()
        }
        async fn secret_hash_for_key(&self, _: &str) -> StoreResult<Option<(Principal, String)>> {
            unreachable!()
        }
        async fn heartbeat_instance(&self, _: Uuid, _: i64) -> StoreResult<()> {
            unreachable!()
        }
        async fn remove_instance(&self, _: Uuid) -> StoreResult<()> {
            unreachable!()
        }
        async fn close_orphaned_chats(&self, _: i64) -> StoreResult<u64> {
            unreachable!()
        }
        async fn list_chats(
            &self,
            _: Uuid,
            _: &ChatFilter,
            _: PageRequest,
        ) -> StoreResult<Page<ChatRecord>> {
            unreachable!()
        }
        async fn get_chat(&self, _: Uuid, _: Uuid) -> StoreResult<Option<ChatRecord>> {
            unreachable!()
        }
        async fn list_chat_events(
            &self,
            _: Uuid,
            _: PageRequest,
        ) -> StoreResult<Page<EventRecord>> {
            unreachable!()
        }
        async fn list_chat_groups(
            &self,
            _: Uuid,
            _: Option<&str>,
            _: PageRequest,
        ) -> StoreResult<Page<GroupRecord>> {
            unreachable!()
        }
        async fn get_chat_group(&self, _: Uuid, _: Uuid) -> StoreResult<Option<GroupRecord>> {
            unreachable!()
        }
        async fn list_group_chats(
            &self,
            _: Uuid,
            _: Option<ChatStatus>,
            _: PageRequest,
        ) -> StoreResult<Page<ChatRecord>> {
            unreachable!()
        }
        async fn list_group_events(
            &self,
            _: Uuid,
            _: PageRequest,
        ) -> StoreResult<Page<EventRecord>> {
            unreachable!()
        }
        async fn ensure_reconstructions(
            &self,
            _: Uuid,
            _: &[Uuid],
            _: i64,
        ) -> StoreResult<Vec<ReconstructionRecord>> {
            unreachable!()
        }
        async fn claim_reconstruction(
            &self,
            _: &str,
            _: i64,
            _: i64,
            _: i64,
        ) -> StoreResult<Option<ClaimedJob>> {
            unreachable!()
        }
        async fn renew_reconstruction_lease(&self, _: Uuid, _: &str, _: i64) -> StoreResult<bool> {
            unreachable!()
        }
        async fn finish_reconstruction(
            &self,
            _: Uuid,
            _: &str,
            _: &JobResult,
            _: i64,
        ) -> StoreResult<bool> {
            unreachable!()
        }
        async fn delete_chats(&self, _: Uuid, _: &[Uuid]) -> StoreResult<Vec<Uuid>> {
            unreachable!()
        }
        async fn group_chat_ids(&self, _: Uuid, _: Uuid) -> StoreResult<Option<Vec<Uuid>>> {
            unreachable!()
        }
    }

    fn append(chat_id: Uuid) -> WriteOp {
        WriteOp::AppendEvents {
            api_key_id: Uuid::nil(),
            chat_id,
            events: vec![],
        }
    }

    fn chats(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    #[tokio::test]
    async fn a_batch_that_commits_is_applied_once() {
        let store = Poisoned::default();
        let ops: Vec<WriteOp> = chats(9).into_iter().map(append).collect();
        let results = commit(&store, &ops).await;
        assert!(results.iter().all(|r| matches!(r, Ok(OpOutcome::Applied))));
        assert_eq!(*store.calls.lock().unwrap(), vec![9], "one transaction");
        assert_eq!(*store.committed.lock().unwrap(), ops);
    }

    #[tokio::test]
    async fn only_the_poisoned_operations_of_a_failed_batch_fail() {
        for (n, bad) in [
            (2, vec![0]),
            (2, vec![1]),
            (7, vec![3]),
            (16, vec![0, 15]),
            (33, vec![4, 5, 20]),
            (100, vec![99]),
        ] {
            let ids = chats(n);
            let store = Poisoned {
                poison: bad.iter().map(|&i| ids[i]).collect(),
                ..Default::default()
            };
            let ops: Vec<WriteOp> = ids.iter().copied().map(append).collect();
            let results = commit(&store, &ops).await;
            for (i, r) in results.iter().enumerate() {
                if bad.contains(&i) {
                    assert!(
                        matches!(r, Err(RecordError::Database(m)) if m.contains("poisoned")),
                        "{n}/{i}: {r:?}"
                    );
                } else {
                    assert!(matches!(r, Ok(OpOutcome::Applied)), "{n}/{i}: {r:?}");
                }
            }
            let good: Vec<WriteOp> = ops
                .iter()
                .enumerate()
                .filter(|(i, _)| !bad.contains(i))
                .map(|(_, op)| op.clone())
                .collect();
            assert_eq!(
                *store.committed.lock().unwrap(),
                good,
                "every other operation committed once, in order"
            );
            // One poisoned operation costs two transactions per halving.
            let calls = store.calls.lock().unwrap().len();
            if bad.len() == 1 {
                let depth = n.next_power_of_two().trailing_zeros() as usize;
                assert!(calls <= 1 + 2 * depth, "{n}: {calls} transactions");
            }
        }
    }

    #[tokio::test]
    async fn a_single_operation_or_an_unavailable_database_is_not_retried() {
        let id = Uuid::new_v4();
        let store = Poisoned {
            poison: HashSet::from([id]),
            ..Default::default()
        };
        let results = commit(&store, &[append(id)]).await;
        assert!(matches!(results[..], [Err(RecordError::Database(_))]));
        assert_eq!(store.calls.lock().unwrap().len(), 1);

        let ids = chats(8);
        let store = Poisoned {
            poison: ids.iter().copied().collect(),
            unavailable: true,
            ..Default::default()
        };
        let ops: Vec<WriteOp> = ids.into_iter().map(append).collect();
        let results = commit(&store, &ops).await;
        assert_eq!(results.len(), 8);
        assert!(results
            .iter()
            .all(|r| matches!(r, Err(RecordError::Database(m)) if m.contains("unavailable"))));
        assert_eq!(*store.calls.lock().unwrap(), vec![8], "no retry");
    }

    /// SQLite forms its own batches: the recorder hands each operation over from the
    /// submitting task, and of many submitted at once only the failing one is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn operations_go_straight_to_a_store_that_batches_them() {
        use colloquy_storage::conformance::{event, new_account, start_chat};
        use colloquy_storage_sqlite::{SqliteSettings, SqliteStore};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("r.db").display());
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&url, &SqliteSettings::default())
                .await
                .unwrap(),
        );
        assert_eq!(store.batching(), Batching::Store);
        let recorder = Recorder::start(store.clone(), 512);
        assert!(matches!(recorder.to, To::Store(_)));
        let who = new_account(&*store, true).await;
        let mut ids = Vec::new();
        for _ in 0..40 {
            let group = GroupChoice::New(Uuid::new_v4());
            ids.push(
                start_chat(&*store, &who, group, 1, None, Uuid::new_v4())
                    .await
                    .0,
            );
        }
        let submits = ids.iter().enumerate().map(|(i, &chat_id)| {
            let recorder = recorder.clone();
            let op = WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id,
                // seq 0 is the chat's start: chat 17's event collides with it.
                events: vec![event(
                    if i == 17 { 0 } else { 1 },
                    2,
                    EventRole::User,
                    EventType::UserMessage,
                    "hello",
                )],
            };
            tokio::spawn(async move { recorder.submit(op).await })
        });
        let results = futures::future::join_all(submits).await;
        for (i, r) in results.into_iter().enumerate() {
            let r = r.unwrap();
            if i == 17 {
                assert!(matches!(r, Err(RecordError::Database(_))), "{r:?}");
            } else {
                assert!(matches!(r, Ok(OpOutcome::Applied)), "{i}: {r:?}");
            }
            let chat = store.get_chat(who.user_id, ids[i]).await.unwrap().unwrap();
            assert_eq!(chat.event_count, if i == 17 { 1 } else { 2 }, "chat {i}");
        }
    }

    /// With a real database: a batch in which one session's events collide with stored ones
    /// (a duplicate sequence number fails the whole transaction) commits everybody else's.
    #[tokio::test]
    async fn a_failing_operation_leaves_the_others_of_its_batch_committed_in_sqlite() {
        use colloquy_storage::conformance::{new_account, start_chat};
        use colloquy_storage_sqlite::{SqliteSettings, SqliteStore};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("r.db").display());
        let store = SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .unwrap();
        let who = new_account(&store, true).await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            let group = GroupChoice::New(Uuid::new_v4());
            ids.push(
                start_chat(&store, &who, group, 1, None, Uuid::new_v4())
                    .await
                    .0,
            );
        }
        let say = |chat_id: Uuid, seq: i64| WriteOp::AppendEvents {
            api_key_id: who.api_key_id,
            chat_id,
            events: vec![NewEvent {
                id: Uuid::new_v4(),
                seq,
                timestamp: 2,
                role: EventRole::User,
                event_type: EventType::UserMessage,
                message_text: Some("hello".into()),
                emotion_features: None,
                metadata: None,
                related_event_id: None,
            }],
        };
        // seq 0 of ids[2] is its CHAT_START_MESSAGE.
        let ops: Vec<WriteOp> = ids
            .iter()
            .enumerate()
            .map(|(i, &c)| say(c, if i == 2 { 0 } else { 1 }))
            .collect();
        let results = commit(&store, &ops).await;
        for (i, r) in results.iter().enumerate() {
            if i == 2 {
                assert!(matches!(r, Err(RecordError::Database(_))), "{r:?}");
            } else {
                assert!(matches!(r, Ok(OpOutcome::Applied)), "{i}: {r:?}");
            }
            let chat = store.get_chat(who.user_id, ids[i]).await.unwrap().unwrap();
            assert_eq!(chat.event_count, if i == 2 { 1 } else { 2 });
        }
        store.close().await;
    }
}
