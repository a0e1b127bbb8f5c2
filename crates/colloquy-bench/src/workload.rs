//! The ingestion workload shared by `ingest` and `ingest_breakdown`: chats prepared through
//! the store, event rows spread round-robin over them (as concurrent sessions spread them),
//! and the baselines' batch loops.

use crate::{sentence, Summary};
use anyhow::Context;
use colloquy_server::keys::create_account_key;
use colloquy_storage::{GroupChoice, NewChat, NewEvent, Store, WriteOp};
use colloquy_wire::{EventRole, EventType};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, QueryBuilder, Sqlite, SqliteConnection};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Result of one baseline run (store batches or raw INSERTs).
pub struct Baseline {
    /// Rows (events) written.
    pub rows: u64,
    /// Wall time.
    pub secs: f64,
    /// Per-transaction latency.
    pub tx: Summary,
}

impl Baseline {
    /// Rows per second.
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.secs
    }
}

/// Now, epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Creates an account with a key and `chats` active chats (one `CHAT_START_MESSAGE` each,
/// seq 0) through the store; returns the (chat, group) ids.
pub async fn prepare_chats(
    store: &dyn Store,
    chats: usize,
) -> anyhow::Result<(Uuid, Vec<(Uuid, Uuid)>)> {
    let key = create_account_key(store, Some("baseline".into()), true).await?;
    let key_id = store
        .list_api_keys()
        .await?
        .into_iter()
        .find(|k| k.user_id == key.user_id)
        .context("the new key is not listed")?
        .id;
    let now = now_ms();
    let ids: Vec<(Uuid, Uuid)> = (0..chats)
        .map(|_| (Uuid::new_v4(), Uuid::new_v4()))
        .collect();
    let ops: Vec<WriteOp> = ids
        .iter()
        .map(|&(chat, group)| WriteOp::StartChat {
            api_key_id: key_id,
            chat: NewChat {
                id: chat,
                user_id: key.user_id,
                group: GroupChoice::New(group),
                start_timestamp: now,
                metadata: None,
                config_id: None,
                config_version: None,
                instance_id: Uuid::new_v4(),
                webhooks: Vec::new(),
            },
            events: vec![NewEvent {
                id: Uuid::new_v4(),
                seq: 0,
                timestamp: now,
                role: EventRole::System,
                event_type: EventType::ChatStartMessage,
                message_text: Some(String::new()),
                emotion_features: None,
                metadata: None,
                related_event_id: None,
            }],
            max_active_chats: None,
        })
        .collect();
    store.apply_batch(&ops).await?;
    Ok((key_id, ids))
}

/// Appends `rows` events through [`Store::apply_batch`], `batch` single-event
/// `AppendEvents` operations per call (round-robin over the chats), as the server's
/// group commit does with one input outstanding per session.
pub async fn store_batches(
    store: &dyn Store,
    rows: u64,
    chats: usize,
    batch: usize,
) -> anyhow::Result<Baseline> {
    let (key_id, ids) = prepare_chats(store, chats.max(1)).await?;
    let mut tx_times = Vec::new();
    let mut done = 0u64;
    let t0 = Instant::now();
    while done < rows {
        let n = (batch as u64).min(rows - done);
        let t = Instant::now();
        let ts = now_ms();
        let ops: Vec<WriteOp> = (done..done + n)
            .map(|k| {
                let (id, chat, _, seq, role, ty) = row_of(k, &ids);
                WriteOp::AppendEvents {
                    api_key_id: key_id,
                    chat_id: chat,
                    events: vec![NewEvent {
                        id,
                        seq,
                        timestamp: ts,
                        role,
                        event_type: ty,
                        message_text: Some(sentence(k).to_string()),
                        emotion_features: None,
                        metadata: None,
                        related_event_id: None,
                    }],
                }
            })
            .collect();
        store.apply_batch(&ops).await?;
        tx_times.push(t.elapsed());
        done += n;
    }
    Ok(Baseline {
        rows,
        secs: t0.elapsed().as_secs_f64(),
        tx: Summary::from_durations(&tx_times),
    })
}

/// The `k`-th baseline row: round-robin over the chats, alternating user and agent messages.
pub fn row_of(k: u64, chats: &[(Uuid, Uuid)]) -> (Uuid, Uuid, Uuid, i64, EventRole, EventType) {
    let (chat, group) = chats[(k % chats.len() as u64) as usize];
    let seq = 1 + (k / chats.len() as u64) as i64;
    let (role, ty) = if seq % 2 == 1 {
        (EventRole::User, EventType::UserMessage)
    } else {
        (EventRole::Agent, EventType::AgentMessage)
    };
    (Uuid::new_v4(), chat, group, seq, role, ty)
}

/// The column list of an event insert (every column the store writes).
pub const INSERT_EVENTS: &str = "INSERT INTO chat_events (id, chat_id, chat_group_id, seq, \
     timestamp, role, type, message_text, emotion_features, metadata, related_event_id) ";

/// A plain connection with the same settings as the SQLite store's writer.
pub async fn sqlite_writer(url: &str, full: bool) -> anyhow::Result<SqliteConnection> {
    Ok(SqliteConnectOptions::from_str(url)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if full {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .pragma("cache_size", "-32768")
        .pragma("temp_store", "memory")
        .pragma(
            "wal_autocheckpoint",
            colloquy_storage_sqlite::WRITER_AUTOCHECKPOINT_PAGES,
        )
        .connect()
        .await?)
}

/// Inserts rows `range` (see [`row_of`]) with one multi-row INSERT on `conn`, and their
/// text into the search index with another.
pub async fn sqlite_insert_rows(
    conn: &mut SqliteConnection,
    ids: &[(Uuid, Uuid)],
    range: std::ops::Range<u64>,
) -> anyhow::Result<()> {
    let ts = now_ms();
    let mut qb = QueryBuilder::<Sqlite>::new(INSERT_EVENTS);
    qb.push_values(range.clone(), |mut b, k| {
        let (id, chat, group, seq, role, ty) = row_of(k, ids);
        b.push_bind(id.to_string())
            .push_bind(chat.to_string())
            .push_bind(group.to_string())
            .push_bind(seq)
            .push_bind(ts)
            .push_bind(role.as_str())
            .push_bind(ty.as_str())
            .push_bind(sentence(k))
            .push_bind(None::<String>)
            .push_bind(None::<String>)
            .push_bind(None::<String>);
    });
    qb.build().execute(&mut *conn).await?;
    // Every row is a message: the schema's search index gets its text, as the store does.
    let mut qb = QueryBuilder::<Sqlite>::new("INSERT INTO chat_text (text, chat_id) ");
    qb.push_values(range, |mut b, k| {
        let (_, chat, ..) = row_of(k, ids);
        b.push_bind(sentence(k)).push_bind(chat.to_string());
    });
    qb.build().execute(&mut *conn).await?;
    Ok(())
}
