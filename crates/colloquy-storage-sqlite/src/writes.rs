//! The body of a batch ([`Store::apply_batch`](colloquy_storage::Store::apply_batch)) on
//! the writer thread's `rusqlite` connection ([`crate::writer`]): the facts in one query
//! each, the operations through [`BatchRules::apply`], then every event and every chat's
//! counters in a few multi-row statements.

use crate::writer::db;
use colloquy_storage::sql::{corrupt, uuid_text};
use colloquy_storage::{
    batch_keys, chats_written, storable, BatchRules, BatchTx, ChatCounters, GroupChoice, NewChat,
    OpOutcome, QueuedEvent, StoreResult, WriteOp,
};
use colloquy_wire::ChatStatus;
use rusqlite::types::Null;
use rusqlite::{params, Connection, Statement, TransactionBehavior};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use uuid::Uuid;

/// Rows of the largest batch statement (11 parameters each).
const SHAPED_MAX: usize = 256;

/// Splits `items` into chunks of at most [`SHAPED_MAX`], each paired with the number of
/// rows its statement has room for: the next power of two. The rows past the chunk are
/// bound as NULLs that the statement ignores. A batch of any size is then written by one
/// statement per kind, of one of a few shapes that stay in the connection's statement
/// cache; one shape per batch size would be parsed and planned again for almost every
/// batch, and one statement per power of two would multiply the statements.
pub(crate) fn padded<T>(items: &[T]) -> impl Iterator<Item = (&[T], usize)> {
    items
        .chunks(SHAPED_MAX)
        .map(|chunk| (chunk, chunk.len().next_power_of_two()))
}

/// The multi-row statements, one text per row count (rows are padded to a power of two by
/// [`padded`], so there are few), built once.
#[derive(Default)]
pub(crate) struct SqlShapes {
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

/// One batch in one `BEGIN IMMEDIATE` transaction; nothing of it stays if any part fails.
pub(crate) fn run(
    conn: &mut Connection,
    sql: &mut SqlShapes,
    ops: &[WriteOp],
) -> StoreResult<Vec<OpOutcome>> {
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
    let rules = BatchRules::new(revoked, groups);
    let (outcomes, queued) = at_once(rules.apply(ops, &mut Tx(conn)))?;

    // 4. Insert the events in few statements. New rows get consecutive rowids after the
    // last one: the first statement's last rowid, less its row count, is where this
    // batch's rows start.
    let mut rowid_before: Option<i64> = None;
    for (chunk, rows) in padded(&queued.events) {
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
    let counters: Vec<(Uuid, ChatCounters)> = queued.chats.into_iter().collect();
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
    row: Option<&QueuedEvent>,
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
    row: Option<&(Uuid, ChatCounters)>,
) -> rusqlite::Result<()> {
    let Some((chat_id, c)) = row else {
        return (1..=4).try_for_each(|k| stmt.raw_bind_parameter(at + k, Null));
    };
    stmt.raw_bind_parameter(at + 1, chat_id.to_string())?;
    stmt.raw_bind_parameter(at + 2, c.count)?;
    stmt.raw_bind_parameter(at + 3, c.first)?;
    stmt.raw_bind_parameter(at + 4, c.last)
}

/// The batch's statements on the writer's connection, for [`BatchRules::apply`]. Each one
/// runs to its end before it returns: nothing here waits ([`at_once`]).
pub(crate) struct Tx<'c>(pub(crate) &'c Connection);

impl BatchTx for Tx<'_> {
    async fn active_chats(&mut self, user_id: Uuid) -> StoreResult<u64> {
        let conn = self.0;
        conn.prepare_cached("SELECT COUNT(*) FROM chats WHERE user_id = ? AND status = 'ACTIVE'")
            .and_then(|mut s| s.query_row([user_id.to_string()], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(db)
    }

    async fn create_chat(&mut self, chat: &NewChat) -> StoreResult<bool> {
        let conn = self.0;
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

    async fn end_chat(
        &mut self,
        chat_id: Uuid,
        status: ChatStatus,
        end_timestamp: i64,
    ) -> StoreResult<()> {
        self.0
            .prepare_cached(
                "UPDATE chats SET status = ?, end_timestamp = ? WHERE id = ? AND status = 'ACTIVE'",
            )
            .and_then(|mut s| {
                s.execute(params![status.as_str(), end_timestamp, chat_id.to_string()])
            })
            .map_err(db)?;
        Ok(())
    }
}

/// Runs a future that never waits, such as [`BatchRules::apply`] over [`Tx`], to its end
/// on this thread (which has no async runtime).
fn at_once<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the SQLite writer's statements never wait"),
    }
}
