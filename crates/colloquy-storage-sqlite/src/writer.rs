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

use crate::{padded, queue_events, Counters, PendingEvent};
use colloquy_storage::{
    batch_keys, chats_written, may_start_chat, storable, BatchRules, GroupChoice, NewChat,
    OpOutcome, Step, StoreError, StoreResult, WriteOp,
};
use rusqlite::types::Null;
use rusqlite::{params, Connection, OpenFlags, Statement, TransactionBehavior};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::Duration;
use uuid::Uuid;

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
fn db(e: rusqlite::Error) -> StoreError {
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
                    let result = run(&mut conn, &mut sql, &job.ops);
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

/// The multi-row statements, one text per row count (rows are padded to a power of two by
/// [`padded`], so there are few), built once.
#[derive(Default)]
struct SqlShapes {
    texts: HashMap<(Shape, usize), String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Shape {
    RevokedKeys,
    ActiveChats,
    InsertEvents,
    BumpCounters,
}

/// `(?, ?, …)` rows of `width` parameters, `rows` times, comma-separated.
fn value_rows(rows: usize, width: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    vec![row; rows].join(", ")
}

impl SqlShapes {
    fn get(&mut self, shape: Shape, rows: usize) -> &str {
        self.texts.entry((shape, rows)).or_insert_with(|| {
            let list = || vec!["?"; rows].join(", ");
            match shape {
                Shape::RevokedKeys => format!(
                    "SELECT id FROM api_keys WHERE revoked_at IS NOT NULL AND id IN ({})",
                    list()
                ),
                Shape::ActiveChats => format!(
                    "SELECT id, chat_group_id FROM chats WHERE status = 'ACTIVE' AND id IN ({})",
                    list()
                ),
                // OR ROLLBACK: a duplicate sequence number fails the whole batch, as any
                // error does.
                Shape::InsertEvents => format!(
                    "INSERT OR ROLLBACK INTO chat_events (id, chat_id, chat_group_id, seq, \
                     timestamp, role, type, message_text, emotion_features, metadata, \
                     related_event_id) SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL",
                    value_rows(rows, 11)
                ),
                Shape::BumpCounters => format!(
                    "WITH v(id, n, first, last) AS (VALUES {}) \
                     UPDATE OR ROLLBACK chats SET event_count = event_count + v.n, \
                     first_event_timestamp = MIN(COALESCE(first_event_timestamp, v.first), v.first), \
                     last_event_timestamp = MAX(last_event_timestamp, v.last) \
                     FROM v WHERE chats.id = v.id",
                    value_rows(rows, 4)
                ),
            }
        })
    }
}

/// Runs a query of `shape` that lists `ids` in an `IN (…)` and selects UUID columns, and
/// hands each row's UUIDs to `row`.
fn select_by_ids(
    conn: &Connection,
    sql: &mut SqlShapes,
    shape: Shape,
    ids: &[Uuid],
    mut row: impl FnMut(&[Uuid]),
) -> StoreResult<()> {
    let mut values = Vec::with_capacity(2);
    for (chunk, rows) in padded(ids) {
        let mut stmt = conn.prepare_cached(sql.get(shape, rows)).map_err(db)?;
        bind_ids(&mut stmt, chunk, rows)?;
        let columns = stmt.column_count();
        let mut found = stmt.raw_query();
        while let Some(r) = found.next().map_err(db)? {
            values.clear();
            for i in 0..columns {
                values.push(uuid_text(
                    r.get_ref(i).map_err(db)?.as_str().map_err(corrupt)?,
                )?);
            }
            row(&values);
        }
    }
    Ok(())
}

/// Binds `ids` as the statement's first parameters and NULLs after them, up to `rows`.
fn bind_ids(stmt: &mut Statement<'_>, ids: &[Uuid], rows: usize) -> StoreResult<()> {
    for (i, id) in ids.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, id.to_string()).map_err(db)?;
    }
    for i in ids.len()..rows {
        stmt.raw_bind_parameter(i + 1, Null).map_err(db)?;
    }
    Ok(())
}

fn uuid_text(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("bad uuid `{s}`: {e}")))
}

/// One batch in one `BEGIN IMMEDIATE` transaction; nothing of it stays if any part fails.
fn run(conn: &mut Connection, sql: &mut SqlShapes, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    // On an error the transaction rolls back when dropped (a no-op if OR ROLLBACK already
    // did).
    let outcomes = apply(&tx, sql, ops)?;
    tx.commit().map_err(db)?;
    Ok(outcomes)
}

/// The body of a batch, inside its transaction; the decisions are [`BatchRules`]'.
fn apply(conn: &Connection, sql: &mut SqlShapes, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
    // 1. Which of the batch's keys are revoked: one query for the whole batch.
    let mut revoked = HashSet::new();
    select_by_ids(conn, sql, Shape::RevokedKeys, &batch_keys(ops), |ids| {
        revoked.insert(ids[0]);
    })?;

    // 2. The groups of the active chats appended to (chats started here are added below).
    let mut groups: HashMap<Uuid, Uuid> = HashMap::new();
    select_by_ids(conn, sql, Shape::ActiveChats, &chats_written(ops), |ids| {
        groups.insert(ids[0], ids[1]);
    })?;

    // 3. Apply the ops in order; collect events and per-chat counters. The write lock
    // (`BEGIN IMMEDIATE`) makes an account's count of active chats exact.
    let mut rules = BatchRules::new(revoked, groups);
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut pending: Vec<PendingEvent> = Vec::new();
    let mut counters: HashMap<Uuid, Counters> = HashMap::new();
    for op in ops {
        let outcome = match rules.step(op) {
            Step::Report(outcome) => outcome,
            Step::Start {
                chat,
                events,
                limit,
            } => {
                let full = match limit {
                    Some(limit) => !may_start_chat(limit, active_chats(conn, chat.user_id)?),
                    None => false,
                };
                if full {
                    OpOutcome::TooManyChats
                } else if !start_chat(conn, chat)? {
                    OpOutcome::GroupNotFound
                } else {
                    let group = rules.started(chat);
                    queue_events(&mut pending, &mut counters, chat.id, group, events);
                    OpOutcome::Applied
                }
            }
            Step::Append {
                chat_id,
                group_id,
                events,
            } => {
                queue_events(&mut pending, &mut counters, chat_id, group_id, events);
                OpOutcome::Applied
            }
            Step::End {
                chat_id,
                group_id,
                status,
                end_timestamp,
                events,
                outcome,
            } => {
                queue_events(&mut pending, &mut counters, chat_id, group_id, events);
                conn.prepare_cached(
                    "UPDATE chats SET status = ?, end_timestamp = ? \
                     WHERE id = ? AND status = 'ACTIVE'",
                )
                .and_then(|mut s| {
                    s.execute(params![status.as_str(), end_timestamp, chat_id.to_string()])
                })
                .map_err(db)?;
                outcome
            }
        };
        outcomes.push(outcome);
    }

    // 4. Insert the events in few statements. New rows get consecutive rowids after the
    // last one: the first statement's last rowid, less its row count, is where this
    // batch's rows start.
    let mut rowid_before: Option<i64> = None;
    for (chunk, rows) in padded(&pending) {
        let mut stmt = conn
            .prepare_cached(sql.get(Shape::InsertEvents, rows))
            .map_err(db)?;
        for i in 0..rows {
            bind_event(&mut stmt, i * 11, chunk.get(i)).map_err(db)?;
        }
        let inserted = stmt.raw_execute().map_err(db)?;
        if rowid_before.is_none() {
            rowid_before = Some(conn.last_insert_rowid() - inserted as i64);
        }
    }
    // What was said goes into the search index (migration 0004) in the same transaction,
    // searchable as soon as it is committed: one statement for the whole batch, because
    // FTS5 writes its pending terms out as a new index segment at every statement.
    if let Some(rowid_before) = rowid_before {
        conn.prepare_cached(
            "INSERT INTO chat_text (text, chat_id) SELECT message_text, chat_id \
             FROM chat_events WHERE rowid > ? AND type IN ('USER_MESSAGE', 'AGENT_MESSAGE') \
             AND message_text <> ''",
        )
        .and_then(|mut s| s.execute([rowid_before]))
        .map_err(db)?;
    }
    // 5. One statement for every chat's counters.
    let counters: Vec<(Uuid, Counters)> = counters.into_iter().collect();
    for (chunk, rows) in padded(&counters) {
        let mut stmt = conn
            .prepare_cached(sql.get(Shape::BumpCounters, rows))
            .map_err(db)?;
        for i in 0..rows {
            bind_counters(&mut stmt, i * 4, chunk.get(i)).map_err(db)?;
        }
        stmt.raw_execute().map_err(db)?;
    }
    Ok(outcomes)
}

/// Binds one event row from parameter `at + 1` on, or NULLs for a padding row.
fn bind_event(
    stmt: &mut Statement<'_>,
    at: usize,
    row: Option<&PendingEvent>,
) -> rusqlite::Result<()> {
    let Some(p) = row else {
        return (1..=11).try_for_each(|k| stmt.raw_bind_parameter(at + k, Null));
    };
    let e = p.event;
    stmt.raw_bind_parameter(at + 1, e.id.to_string())?;
    stmt.raw_bind_parameter(at + 2, p.chat_id.to_string())?;
    stmt.raw_bind_parameter(at + 3, p.group_id.to_string())?;
    stmt.raw_bind_parameter(at + 4, e.seq)?;
    stmt.raw_bind_parameter(at + 5, e.timestamp)?;
    stmt.raw_bind_parameter(at + 6, e.role.as_str())?;
    stmt.raw_bind_parameter(at + 7, e.event_type.as_str())?;
    stmt.raw_bind_parameter(at + 8, storable(e.message_text.as_deref()).as_deref())?;
    stmt.raw_bind_parameter(at + 9, storable(e.emotion_features.as_deref()).as_deref())?;
    stmt.raw_bind_parameter(at + 10, storable(e.metadata.as_deref()).as_deref())?;
    stmt.raw_bind_parameter(at + 11, e.related_event_id.map(|u| u.to_string()))
}

/// Binds one chat's counter row from parameter `at + 1` on, or NULLs for a padding row.
fn bind_counters(
    stmt: &mut Statement<'_>,
    at: usize,
    row: Option<&(Uuid, Counters)>,
) -> rusqlite::Result<()> {
    let Some((chat_id, c)) = row else {
        return (1..=4).try_for_each(|k| stmt.raw_bind_parameter(at + k, Null));
    };
    stmt.raw_bind_parameter(at + 1, chat_id.to_string())?;
    stmt.raw_bind_parameter(at + 2, c.count)?;
    stmt.raw_bind_parameter(at + 3, c.first)?;
    stmt.raw_bind_parameter(at + 4, c.last)
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The account's `ACTIVE` chats, those started or ended earlier in the transaction included.
fn active_chats(conn: &Connection, user_id: Uuid) -> StoreResult<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM chats WHERE user_id = ? AND status = 'ACTIVE'")
        .and_then(|mut s| s.query_row([user_id.to_string()], |r| r.get::<_, i64>(0)))
        .map(|n| n as u64)
        .map_err(db)
}

/// Inserts a chat and creates or joins its group; false when the group to resume is not
/// the account's.
fn start_chat(conn: &Connection, chat: &NewChat) -> StoreResult<bool> {
    let uid = chat.user_id.to_string();
    let cid = chat.id.to_string();
    let config_id = storable(chat.config_id.as_deref());
    let metadata = storable(chat.metadata.as_deref());
    let group = match chat.group {
        GroupChoice::New(g) => {
            conn.prepare_cached(
                "INSERT INTO chat_groups (id, user_id, first_start_timestamp, \
                 most_recent_start_timestamp, most_recent_chat_id, most_recent_config_id, \
                 most_recent_config_version, num_chats) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    g.to_string(),
                    uid,
                    chat.start_timestamp,
                    chat.start_timestamp,
                    cid,
                    config_id,
                    chat.config_version
                ])
            })
            .map_err(db)?;
            g
        }
        GroupChoice::Resume(g) => {
            let changed = conn
                .prepare_cached(
                    "UPDATE chat_groups SET num_chats = num_chats + 1, \
                     most_recent_chat_id = CASE WHEN ?1 >= most_recent_start_timestamp THEN ?2 ELSE most_recent_chat_id END, \
                     most_recent_config_id = CASE WHEN ?1 >= most_recent_start_timestamp THEN ?3 ELSE most_recent_config_id END, \
                     most_recent_config_version = CASE WHEN ?1 >= most_recent_start_timestamp THEN ?4 ELSE most_recent_config_version END, \
                     most_recent_start_timestamp = MAX(most_recent_start_timestamp, ?1) \
                     WHERE id = ?5 AND user_id = ?6",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        chat.start_timestamp,
                        cid,
                        config_id,
                        chat.config_version,
                        g.to_string(),
                        uid
                    ])
                })
                .map_err(db)?;
            if changed == 0 {
                return Ok(false);
            }
            g
        }
    };
    conn.prepare_cached(
        "INSERT INTO chats (id, user_id, chat_group_id, status, start_timestamp, \
         last_event_timestamp, metadata, config_id, config_version, instance_id) \
         VALUES (?, ?, ?, 'ACTIVE', ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            cid,
            uid,
            group.to_string(),
            chat.start_timestamp,
            chat.start_timestamp,
            metadata,
            config_id,
            chat.config_version,
            chat.instance_id.to_string()
        ])
    })
    .map_err(db)?;
    Ok(true)
}
