//! The body of a batch ([`Store::apply_batch`](colloquy_storage::Store::apply_batch)) in
//! its transaction: the facts and every lock first, in one global order, then the
//! operations through [`BatchRules::apply`], then every event and every chat's counters in
//! one statement. A batch that only appends takes [`crate::appends`]' single statement.

use crate::appends::Appends;
use crate::db;
use colloquy_storage::*;
use colloquy_wire::ChatStatus;
use sqlx::postgres::{PgConnection, PgPool};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

pub async fn apply_batch(pool: &PgPool, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
    if let Some(appends) = Appends::of(ops) {
        return appends.write(pool, ops).await;
    }
    let mut tx = pool.begin().await.map_err(db)?;
    let outcomes = apply_in_tx(&mut tx, ops).await?;
    tx.commit().await.map_err(db)?;
    Ok(outcomes)
}

/// The body of [`Store::apply_batch`], inside its transaction; the decisions are
/// [`BatchRules`]'.
async fn apply_in_tx(conn: &mut PgConnection, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
    // 1. Which of the batch's keys are revoked: one query for the whole batch.
    let keys = batch_keys(ops);
    let revoked: HashSet<Uuid> = if keys.is_empty() {
        HashSet::new()
    } else {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE revoked_at IS NOT NULL AND id = ANY($1)",
        )
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        ids.into_iter().collect()
    };

    // 2. Every lock of the batch is taken here, each kind in one global order, so
    //    concurrent batches wait on each other and never deadlock. First the accounts
    //    whose active chats are counted (a limited `StartChat`): an account's count and
    //    its new chat commit before any other transaction counts again, on any server.
    let mut accounts: Vec<i64> = limited_accounts(ops, &revoked)
        .iter()
        .map(|u| account_lock_key(*u))
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    if !accounts.is_empty() {
        sqlx::query("SELECT pg_advisory_xact_lock(k) FROM UNNEST($1::int8[]) AS k")
            .bind(&accounts)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    //    Then the chats appended to, with their groups, in id order (as are resumed groups
    //    below): every later write of the batch touches rows it already holds, or rows it
    //    created.
    let existing = chats_written(ops);
    let mut groups: HashMap<Uuid, Uuid> = HashMap::with_capacity(existing.len());
    if !existing.is_empty() {
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT id, chat_group_id FROM chats WHERE id = ANY($1) AND status = 'ACTIVE' \
             ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(&existing)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        groups.extend(rows);
    }
    let resumed = resumed_groups(ops, &revoked);
    if !resumed.is_empty() {
        sqlx::query("SELECT id FROM chat_groups WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind(&resumed)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }

    // 3. Apply the ops in order; collect events and per-chat counters.
    let rules = BatchRules::new(revoked, groups);
    let (outcomes, queued) = rules.apply(ops, &mut Tx(conn)).await?;

    // 4. Insert the events and bump the chats' counters, in one statement.
    EventColumns::new(queued).write(conn).await?;
    Ok(outcomes)
}

/// The batch's statements in its transaction, for [`BatchRules::apply`].
pub(crate) struct Tx<'c>(pub(crate) &'c mut PgConnection);

impl BatchTx for Tx<'_> {
    async fn active_chats(&mut self, user_id: Uuid) -> StoreResult<u64> {
        let conn = &mut *self.0;
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM chats WHERE user_id = $1 AND status = 'ACTIVE'",
        )
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        Ok(n as u64)
    }

    async fn create_chat(&mut self, chat: &NewChat) -> StoreResult<bool> {
        let conn = &mut *self.0;
        let config_id = storable(chat.config_id.as_deref());
        let group = match chat.group {
            GroupChoice::New(g) => {
                sqlx::query(
                    "INSERT INTO chat_groups (id, user_id, first_start_timestamp, \
                     most_recent_start_timestamp, most_recent_chat_id, most_recent_config_id, \
                     most_recent_config_version, num_chats) VALUES ($1, $2, $3, $3, $4, $5, $6, 1)",
                )
                .bind(g)
                .bind(chat.user_id)
                .bind(chat.start_timestamp)
                .bind(chat.id)
                .bind(&config_id)
                .bind(chat.config_version)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
                g
            }
            GroupChoice::Resume(g) => {
                // Every SET expression reads the row as it was before the update.
                let res = sqlx::query(
                    "UPDATE chat_groups SET num_chats = num_chats + 1, \
                     most_recent_chat_id = CASE WHEN $1 >= most_recent_start_timestamp THEN $2 ELSE most_recent_chat_id END, \
                     most_recent_config_id = CASE WHEN $1 >= most_recent_start_timestamp THEN $3 ELSE most_recent_config_id END, \
                     most_recent_config_version = CASE WHEN $1 >= most_recent_start_timestamp THEN $4 ELSE most_recent_config_version END, \
                     most_recent_start_timestamp = GREATEST(most_recent_start_timestamp, $1) \
                     WHERE id = $5 AND user_id = $6",
                )
                .bind(chat.start_timestamp)
                .bind(chat.id)
                .bind(&config_id)
                .bind(chat.config_version)
                .bind(g)
                .bind(chat.user_id)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
                if res.rows_affected() == 0 {
                    return Ok(false);
                }
                g
            }
        };
        sqlx::query(
            "INSERT INTO chats (id, user_id, chat_group_id, status, start_timestamp, \
             last_event_timestamp, metadata, config_id, config_version, instance_id) \
             VALUES ($1, $2, $3, 'ACTIVE', $4, $4, $5, $6, $7, $8)",
        )
        .bind(chat.id)
        .bind(chat.user_id)
        .bind(group)
        .bind(chat.start_timestamp)
        .bind(storable(chat.metadata.as_deref()))
        .bind(&config_id)
        .bind(chat.config_version)
        .bind(chat.instance_id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(true)
    }

    async fn end_chat(
        &mut self,
        chat_id: Uuid,
        status: ChatStatus,
        end_timestamp: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE chats SET status = $1, end_timestamp = $2 \
             WHERE id = $3 AND status = 'ACTIVE'",
        )
        .bind(status.as_str())
        .bind(end_timestamp)
        .bind(chat_id)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }
}

/// The events of a batch as column arrays, for one `INSERT ... SELECT FROM UNNEST(...)`
/// (here, and in [`crate::appends`]' statement, which finds the groups itself).
#[derive(Default)]
pub(crate) struct EventColumns<'a> {
    pub(crate) id: Vec<Uuid>,
    pub(crate) chat_id: Vec<Uuid>,
    group_id: Vec<Uuid>,
    pub(crate) seq: Vec<i64>,
    pub(crate) timestamp: Vec<i64>,
    pub(crate) role: Vec<&'static str>,
    pub(crate) event_type: Vec<&'static str>,
    pub(crate) message_text: Vec<Option<Cow<'a, str>>>,
    pub(crate) emotion_features: Vec<Option<Cow<'a, str>>>,
    pub(crate) metadata: Vec<Option<Cow<'a, str>>>,
    pub(crate) related_event_id: Vec<Option<Uuid>>,
    /// Per chat, in id order: events added and the latest event time.
    counters: Vec<(Uuid, ChatCounters)>,
}

impl<'a> EventColumns<'a> {
    fn new(queued: QueuedEvents<'a>) -> Self {
        let mut columns = Self::default();
        for QueuedEvent {
            chat_id,
            group_id,
            event,
        } in queued.events
        {
            columns.push(chat_id, event);
            columns.group_id.push(group_id);
        }
        columns.counters = queued.chats.into_iter().collect();
        columns
    }

    /// Adds one event of `chat_id` to every column but the group's.
    pub(crate) fn push(&mut self, chat_id: Uuid, e: &'a NewEvent) {
        self.id.push(e.id);
        self.chat_id.push(chat_id);
        self.seq.push(e.seq);
        self.timestamp.push(e.timestamp);
        self.role.push(e.role.as_str());
        self.event_type.push(e.event_type.as_str());
        self.message_text.push(storable(e.message_text.as_deref()));
        self.emotion_features
            .push(storable(e.emotion_features.as_deref()));
        self.metadata.push(storable(e.metadata.as_deref()));
        self.related_event_id.push(e.related_event_id);
    }

    /// Inserts the events and bumps each chat's counters, in one statement (one round trip).
    async fn write(self, conn: &mut PgConnection) -> StoreResult<()> {
        if self.id.is_empty() {
            return Ok(());
        }
        let (mut ids, mut counts, mut lasts) = (Vec::new(), Vec::new(), Vec::new());
        for (id, c) in self.counters {
            ids.push(id);
            counts.push(c.count);
            lasts.push(c.last);
        }
        sqlx::query(
            "WITH inserted AS (INSERT INTO chat_events (id, chat_id, chat_group_id, seq, \
             timestamp, role, type, message_text, emotion_features, metadata, related_event_id) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::int8[], $5::int8[], \
               $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::uuid[])) \
             UPDATE chats c SET event_count = c.event_count + u.n, \
             last_event_timestamp = GREATEST(c.last_event_timestamp, u.last) \
             FROM UNNEST($12::uuid[], $13::int8[], $14::int8[]) AS u(id, n, last) \
             WHERE c.id = u.id",
        )
        .bind(&self.id)
        .bind(&self.chat_id)
        .bind(&self.group_id)
        .bind(&self.seq)
        .bind(&self.timestamp)
        .bind(&self.role)
        .bind(&self.event_type)
        .bind(&self.message_text)
        .bind(&self.emotion_features)
        .bind(&self.metadata)
        .bind(&self.related_event_id)
        .bind(&ids)
        .bind(&counts)
        .bind(&lasts)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(())
    }
}

/// The key of the transaction-scoped advisory lock under which an account's active chats
/// are counted: the account id folded to 64 bits.
fn account_lock_key(user_id: Uuid) -> i64 {
    let (high, low) = user_id.as_u64_pair();
    (high ^ low) as i64
}
