//! A batch that only appends events (and checks keys) in **one statement**, committed on
//! its own: the live socket's common case, one round trip to the database instead of five
//! (`BEGIN`, revoked keys, the chats' locks, the write, `COMMIT`). On a loaded machine each
//! round trip waits for the database's process and then the writer's task to be scheduled,
//! so the round trips, not the statements' work, were most of a batch's time
//! (docs/decisions.md, "Ingest").
//!
//! The statement reads the facts [`BatchRules`] decides on, the batch's revoked keys and
//! its chats still `ACTIVE` (locked, in id order, as in [`crate::writes`]), and inserts the
//! events whose key is live and whose chat is `ACTIVE`, bumping those chats' counters. The
//! outcomes are then [`BatchRules::step`]'s, from the same facts, and the number of events
//! the rules queue is checked against the rows inserted on every batch. A mismatch (a bug)
//! is an error, although the statement has committed by then: better to refuse operations
//! whose rows may be stored than to acknowledge one whose rows are not.

use crate::db;
use crate::writes::EventColumns;
use colloquy_storage::webhooks::concerns_webhooks;
use colloquy_storage::*;
use sqlx::postgres::PgPool;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// The batch's operations as columns for the statement, when every operation is an
/// [`WriteOp::AppendEvents`] whose events need no webhook statements, or a
/// [`WriteOp::CheckKey`]; `None` otherwise (the batch takes [`crate::writes`]' path).
#[derive(Default)]
pub(crate) struct Appends<'a> {
    keys: Vec<Uuid>,
    chats: Vec<Uuid>,
    /// The key of each event's operation.
    key: Vec<Uuid>,
    events: EventColumns<'a>,
}

impl<'a> Appends<'a> {
    pub(crate) fn of(ops: &'a [WriteOp]) -> Option<Self> {
        let takes_the_statement = |op: &WriteOp| match op {
            WriteOp::CheckKey { .. } => true,
            WriteOp::AppendEvents { events, .. } => !concerns_webhooks(events),
            _ => false,
        };
        if !ops.iter().all(takes_the_statement) {
            return None;
        }
        let mut appends = Self::default();
        for op in ops {
            if let WriteOp::AppendEvents {
                api_key_id,
                chat_id,
                events,
            } = op
            {
                for e in events {
                    appends.key.push(*api_key_id);
                    appends.events.push(*chat_id, e);
                }
            }
        }
        appends.keys = batch_keys(ops);
        appends.chats = chats_written(ops);
        Some(appends)
    }

    /// Runs the statement (its own transaction: answered once committed) and returns each
    /// operation's outcome.
    pub(crate) async fn write(self, pool: &PgPool, ops: &[WriteOp]) -> StoreResult<Vec<OpOutcome>> {
        type Facts = (Vec<Uuid>, Vec<Uuid>, Vec<Uuid>, i64);
        let e = &self.events;
        let (revoked, active, groups, inserted): Facts = sqlx::query_as(STATEMENT)
            .bind(&self.keys)
            .bind(&self.chats)
            .bind(&self.key)
            .bind(&e.id)
            .bind(&e.chat_id)
            .bind(&e.seq)
            .bind(&e.timestamp)
            .bind(&e.role)
            .bind(&e.event_type)
            .bind(&e.message_text)
            .bind(&e.emotion_features)
            .bind(&e.metadata)
            .bind(&e.related_event_id)
            .fetch_one(pool)
            .await
            .map_err(db)?;
        let revoked: HashSet<Uuid> = revoked.into_iter().collect();
        let active: HashMap<Uuid, Uuid> = active.into_iter().zip(groups).collect();
        let (outcomes, queued) = decide(BatchRules::new(revoked, active), ops)?;
        if queued != inserted as usize {
            // The statement's filter and the rules disagree: a bug, reported as such.
            return Err(StoreError::Corrupt(format!(
                "a batch of appends inserted {inserted} events where the batch rules queue {queued}"
            )));
        }
        Ok(outcomes)
    }
}

/// Each operation's outcome, and how many events the rules queue, for a batch of appends
/// and key checks.
fn decide(mut rules: BatchRules, ops: &[WriteOp]) -> StoreResult<(Vec<OpOutcome>, usize)> {
    let mut queued = 0;
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        outcomes.push(match rules.step(op) {
            Step::Report(outcome) => outcome,
            Step::Append { events, .. } => {
                queued += events.len();
                OpOutcome::Applied
            }
            Step::Start { .. } | Step::End { .. } => {
                return Err(StoreError::Corrupt(
                    "a batch of appends holds a chat's start or end".into(),
                ))
            }
        });
    }
    Ok((outcomes, queued))
}

/// `$1` the batch's keys, `$2` its chats, then one array per event column (`$3` the key
/// of the event's operation). Returns the revoked keys, the `ACTIVE` chats and their
/// groups (in id order), and how many events were inserted.
const STATEMENT: &str = "\
WITH revoked AS (
    SELECT id FROM api_keys WHERE revoked_at IS NOT NULL AND id = ANY($1)
), active AS MATERIALIZED (
    SELECT id, chat_group_id FROM chats WHERE id = ANY($2) AND status = 'ACTIVE'
    ORDER BY id FOR NO KEY UPDATE
), inserted AS (
    INSERT INTO chat_events (id, chat_id, chat_group_id, seq, timestamp, role, type,
                             message_text, emotion_features, metadata, related_event_id)
    SELECT e.id, e.chat_id, a.chat_group_id, e.seq, e.timestamp, e.role, e.type,
           e.message_text, e.emotion_features, e.metadata, e.related_event_id
    FROM UNNEST($3::uuid[], $4::uuid[], $5::uuid[], $6::int8[], $7::int8[], $8::text[],
                $9::text[], $10::text[], $11::text[], $12::text[], $13::uuid[])
         AS e(key, id, chat_id, seq, timestamp, role, type, message_text, emotion_features,
              metadata, related_event_id)
    JOIN active a ON a.id = e.chat_id
    WHERE e.key NOT IN (SELECT id FROM revoked)
    RETURNING chat_id, timestamp
), bumped AS (
    UPDATE chats c SET event_count = c.event_count + u.n,
                       last_event_timestamp = GREATEST(c.last_event_timestamp, u.last)
    FROM (SELECT chat_id, COUNT(*) AS n, MAX(timestamp) AS last FROM inserted GROUP BY chat_id) u
    WHERE c.id = u.chat_id
)
SELECT ARRAY(SELECT id FROM revoked),
       ARRAY(SELECT id FROM active ORDER BY id),
       ARRAY(SELECT chat_group_id FROM active ORDER BY id),
       (SELECT COUNT(*) FROM inserted)";

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy_wire::{ChatStatus, EventRole, EventType};

    fn said(seq: i64, event_type: EventType) -> NewEvent {
        NewEvent {
            id: Uuid::new_v4(),
            seq,
            timestamp: 1_000 + seq,
            role: EventRole::User,
            event_type,
            message_text: Some("hello".into()),
            emotion_features: None,
            metadata: None,
            related_event_id: None,
        }
    }

    fn append(key: Uuid, chat: Uuid, events: Vec<NewEvent>) -> WriteOp {
        WriteOp::AppendEvents {
            api_key_id: key,
            chat_id: chat,
            events,
        }
    }

    #[test]
    fn only_appends_and_key_checks_take_the_statement() {
        let (key, other, chat) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let ops = [
            append(
                key,
                chat,
                vec![
                    said(1, EventType::UserMessage),
                    said(2, EventType::AgentMessage),
                ],
            ),
            WriteOp::CheckKey { api_key_id: other },
            append(other, chat, vec![said(3, EventType::UserMessage)]),
        ];
        let appends = Appends::of(&ops).expect("appends and key checks");
        assert_eq!(appends.key, vec![key, key, other]);
        assert_eq!(appends.events.seq, vec![1, 2, 3]);
        assert_eq!(appends.events.chat_id, vec![chat; 3]);
        assert_eq!(appends.chats, vec![chat]);
        let mut keys = vec![key, other];
        keys.sort();
        assert_eq!(appends.keys, keys);

        // Events that may concern webhooks, and any start or end, take the transaction.
        let tool = [append(key, chat, vec![said(1, EventType::FunctionCall)])];
        assert!(Appends::of(&tool).is_none());
        let end = [
            ops[0].clone(),
            WriteOp::EndChat {
                api_key_id: key,
                chat_id: chat,
                status: ChatStatus::UserEnded,
                end_timestamp: 2_000,
                events: vec![],
            },
        ];
        assert!(Appends::of(&end).is_none());
    }

    #[test]
    fn outcomes_come_from_the_batch_rules() {
        let (live, revoked) = (Uuid::new_v4(), Uuid::new_v4());
        let (open, closed, group) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let ops = [
            append(live, open, vec![said(1, EventType::UserMessage)]),
            append(live, closed, vec![said(1, EventType::UserMessage)]),
            append(revoked, open, vec![said(2, EventType::UserMessage)]),
            WriteOp::CheckKey {
                api_key_id: revoked,
            },
            append(
                live,
                open,
                vec![
                    said(3, EventType::UserMessage),
                    said(4, EventType::UserMessage),
                ],
            ),
        ];
        let rules = BatchRules::new(HashSet::from([revoked]), HashMap::from([(open, group)]));
        let (outcomes, queued) = decide(rules, &ops).unwrap();
        assert_eq!(
            outcomes,
            vec![
                OpOutcome::Applied,
                OpOutcome::ChatClosed,
                OpOutcome::KeyRevoked,
                OpOutcome::KeyRevoked,
                OpOutcome::Applied
            ]
        );
        assert_eq!(queued, 3, "the live key's events on the open chat");
    }
}
