//! The batch writer: every [`Store::apply_batch`](colloquy_storage::Store::apply_batch)
//! transaction runs start to end on one `rusqlite` connection, on a thread of its own.
//!
//! Through sqlx each statement is a hand-off to the driver's worker thread and back, seven
//! per group commit, and on a busy machine every hand-back waited behind other tasks while
//! the database stayed locked. The writer's chain of transactions is what limits ingestion
//! (docs/benchmarks.md), so here a batch costs one hand-off each way and the transaction
//! itself runs without a pause.
//!
//! The connection commits with `synchronous = NORMAL`: with `synchronous_full` the store
//! flushes the WAL itself after the commit and before it acknowledges the batch, off the
//! write lock ([`crate::SqliteStore`]).
//!
//! The batch itself, its statements on this connection, is [`crate::writes`].

use crate::writes::{self, SqlShapes};
use colloquy_storage::{OpOutcome, StoreError, StoreResult, WriteOp};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// One batch for the writer thread, with where to send its outcome.
struct Job {
    ops: Vec<WriteOp>,
    reply: tokio::sync::oneshot::Sender<StoreResult<Vec<OpOutcome>>>,
}

/// The handle of the writer thread.
pub(crate) struct BatchWriter {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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
    /// thread.
    pub(crate) fn open(path: &Path) -> StoreResult<Self> {
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
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                let mut sql = SqlShapes::default();
                for job in rx {
                    let result = writes::run(&mut conn, &mut sql, &job.ops);
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs one batch in one transaction and commits it (without the WAL flush).
    pub(crate) async fn apply(&self, ops: Vec<WriteOp>) -> StoreResult<Vec<OpOutcome>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let jobs = jobs.as_ref().ok_or_else(gone)?;
            jobs.send(Job { ops, reply }).map_err(|_| gone())?;
        }
        answer.await.map_err(|_| gone())?
    }

    /// Stops taking batches, lets the thread finish the ones queued and closes the
    /// connection.
    pub(crate) async fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
