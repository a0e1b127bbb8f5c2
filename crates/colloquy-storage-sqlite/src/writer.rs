//! The batch writer: every [`Store::apply_batch`](colloquy_storage::Store::apply_batch)
//! transaction runs start to end on one `rusqlite` connection, on a thread of its own.
//!
//! Through sqlx each statement is a hand-off to the driver's worker thread and back, seven
//! per group commit, and on a busy machine every hand-back waited behind other tasks while
//! the database stayed locked. The writer's chain of transactions is what limits ingestion
//! (docs/benchmarks.md), so here a batch costs one hand-off each way and the transaction
//! itself runs without a pause.
//!
//! **Merging.** The batches queued at the writer when it becomes free run in one
//! transaction: whatever arrived while the previous transaction ran commits together, so
//! transactions grow with the load and one commit serves them all. When that transaction
//! fails, each batch runs again alone and answers for itself (its caller isolates a
//! failing operation, `colloquy-server`'s recorder).
//!
//! **Flushing.** The connection commits with `synchronous = NORMAL`. With
//! `synchronous_full` a second thread, the flusher, takes the committed batches,
//! `fdatasync`s the WAL once for all of them and only then answers them; meanwhile the
//! writer runs the next transaction. One flush covers every commit before it started, so
//! an acknowledged batch is as durable as with `FULL` (the background checkpointer keeps
//! `FULL`). Both threads answer the batch's caller directly: nothing waits for an async
//! task to be scheduled between the commit, the flush and the answer.
//!
//! The batch itself, its statements on this connection, is [`crate::writes`].

use crate::writes::{self, SqlShapes};
use colloquy_storage::{OpOutcome, StoreError, StoreResult, WriteOp};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where a batch's outcome goes.
type Reply = tokio::sync::oneshot::Sender<StoreResult<Vec<OpOutcome>>>;

/// One batch for the writer thread, with where to send its outcome.
struct Job {
    ops: Vec<WriteOp>,
    reply: Reply,
}

/// The handle of the writer thread (and of the flusher, with `synchronous_full`).
pub(crate) struct BatchWriter {
    /// Transactions the writer has run (committed or not): how far batches were merged.
    transactions: Arc<AtomicU64>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Maps a rusqlite error as the sqlx side does: a unique violation is a conflict. A
/// database that is locked, out of disk or memory, or failing to read or write its files
/// is unavailable: no operation of the batch is at fault.
pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        {
            return StoreError::Conflict(msg.clone().unwrap_or_else(|| f.to_string()));
        }
        if matches!(
            f.code,
            DatabaseBusy
                | DatabaseLocked
                | OutOfMemory
                | ReadOnly
                | SystemIoFailure
                | DiskFull
                | CannotOpen
                | FileLockingProtocolFailed
                | NotADatabase
        ) {
            return StoreError::Unavailable(Box::new(e));
        }
    }
    StoreError::Database(Box::new(e))
}

fn gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer thread has stopped".into())
}

impl BatchWriter {
    /// Opens the writer's connection to an existing, migrated database file and starts its
    /// thread; with `wal`, the file flushed before a batch is answered, and the flusher.
    /// The writer stops adding queued batches to a transaction once it holds `max_batch`
    /// operations.
    pub(crate) fn open(
        path: &Path,
        wal: Option<std::fs::File>,
        max_batch: usize,
    ) -> StoreResult<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -32768; PRAGMA temp_store = memory; \
             PRAGMA wal_autocheckpoint = {};",
            crate::WRITER_AUTOCHECKPOINT_PAGES
        ))
        .map_err(db)?;
        // Every shape of every batch statement (a few powers of two each) stays prepared.
        conn.set_prepared_statement_cache_capacity(128);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| StoreError::Database(Box::new(e)))
        };
        let mut threads = Vec::with_capacity(2);
        let flushed = match wal {
            Some(file) => {
                let (tx, rx) = mpsc::channel::<Vec<Committed>>();
                threads.push(spawn(
                    "sqlite-flusher",
                    Box::new(move || flusher(&file, rx)),
                )?);
                Some(tx)
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let transactions = Arc::new(AtomicU64::new(0));
        let counted = transactions.clone();
        threads.push(spawn(
            "sqlite-writer",
            Box::new(move || {
                let mut conn = conn;
                let mut sql = SqlShapes::default();
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    let mut ops = jobs[0].ops.len();
                    while ops < max_batch {
                        let Ok(job) = rx.try_recv() else { break };
                        ops += job.ops.len();
                        jobs.push(job);
                    }
                    let committed = run_merged(&mut conn, &mut sql, jobs, &counted);
                    match &flushed {
                        Some(flusher) if !committed.is_empty() => {
                            if let Err(mpsc::SendError(committed)) = flusher.send(committed) {
                                answer(committed, || Err(gone()));
                            }
                        }
                        _ => answer(committed, || Ok(())),
                    }
                }
            }),
        )?);
        Ok(Self {
            transactions,
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Runs one batch, in one transaction with the batches queued beside it, commits it
    /// and, with `synchronous_full`, flushes the WAL.
    pub(crate) async fn apply(&self, ops: Vec<WriteOp>) -> StoreResult<Vec<OpOutcome>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let jobs = jobs.as_ref().ok_or_else(gone)?;
            jobs.send(Job { ops, reply }).map_err(|_| gone())?;
        }
        answer.await.map_err(|_| gone())?
    }

    /// Transactions run so far.
    #[cfg(test)]
    pub(crate) fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Stops taking batches, lets the threads finish the ones queued and closes the
    /// connection.
    pub(crate) async fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        tracing::debug!(
            transactions = self.transactions.load(Ordering::Relaxed),
            "the SQLite batch writer has stopped"
        );
    }
}

/// A batch the writer has committed, or failed, and where its answer goes.
struct Committed {
    reply: Reply,
    outcome: StoreResult<Vec<OpOutcome>>,
}

/// Answers batches: committed ones with their outcomes once `durable` says so, failed ones
/// with their error.
fn answer(batches: Vec<Committed>, durable: impl Fn() -> StoreResult<()>) {
    for Committed { reply, outcome } in batches {
        let _ = reply.send(outcome.and_then(|o| durable().map(|()| o)));
    }
}

/// The flusher: each round takes every batch committed so far, flushes the WAL once and
/// answers them. A failed flush fails the round's batches as unavailable (their commits may
/// not be on disk); the next round flushes again.
fn flusher(wal: &std::fs::File, rx: mpsc::Receiver<Vec<Committed>>) {
    while let Ok(mut round) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            round.extend(more);
        }
        let flushed = wal.sync_data().map_err(|e| e.to_string());
        answer(round, || {
            flushed
                .clone()
                .map_err(|e| StoreError::Unavailable(format!("flushing the WAL: {e}").into()))
        });
    }
}

/// Runs the batches `jobs` in one transaction, or, when that fails, each in a transaction
/// of its own, and returns each batch's outcome with its reply.
fn run_merged(
    conn: &mut Connection,
    sql: &mut SqlShapes,
    jobs: Vec<Job>,
    transactions: &AtomicU64,
) -> Vec<Committed> {
    let mut run = |ops: &[WriteOp]| {
        transactions.fetch_add(1, Ordering::Relaxed);
        writes::run(conn, sql, ops)
    };
    if jobs.len() == 1 {
        let Job { ops, reply } = jobs.into_iter().next().expect("one job");
        let outcome = run(&ops);
        return vec![Committed { reply, outcome }];
    }
    let mut all = Vec::with_capacity(jobs.iter().map(|j| j.ops.len()).sum());
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        replies.push((job.ops.len(), job.reply));
        all.extend(job.ops);
    }
    match run(&all) {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            replies
                .into_iter()
                .map(|(n, reply)| Committed {
                    reply,
                    outcome: Ok(outcomes.by_ref().take(n).collect()),
                })
                .collect()
        }
        Err(_) => {
            let mut rest = &all[..];
            replies
                .into_iter()
                .map(|(n, reply)| {
                    let (ops, after) = rest.split_at(n);
                    rest = after;
                    Committed {
                        reply,
                        outcome: run(ops),
                    }
                })
                .collect()
        }
    }
}
