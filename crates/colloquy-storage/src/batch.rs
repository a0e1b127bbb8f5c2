//! The rules of [`crate::Store::apply_batch`], shared by every backend: which operations
//! are applied, what each one reports, and how text is stored. A backend reads the facts
//! (revoked keys, active chats, an account's active chat count) and runs its statements
//! ([`BatchTx`]); the decisions are taken here, once ([`BatchRules::apply`]).

use crate::webhooks::{concerns_webhooks, on_events, ChatWebhooks, WebhookTx};
use crate::{GroupChoice, NewChat, NewEvent, OpOutcome, StoreResult, WriteOp};
use colloquy_wire::ChatStatus;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// Text as both backends store it: every NUL character (U+0000) replaced by U+FFFD.
///
/// PostgreSQL refuses NUL in text (the whole transaction would fail) and SQLite keeps it, so
/// text that did not come from a client message (those are refused at the socket), such as
/// upstream or language-model text and metadata, goes through here on its way in.
pub fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// [`storable_text`] of an optional column.
pub fn storable(text: Option<&str>) -> Option<Cow<'_, str>> {
    text.map(storable_text)
}

/// The distinct keys of a batch's operations, sorted.
pub fn batch_keys(ops: &[WriteOp]) -> Vec<Uuid> {
    let mut keys: Vec<Uuid> = ops.iter().map(WriteOp::api_key_id).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The distinct chats a batch appends to or ends, sorted.
pub fn chats_written(ops: &[WriteOp]) -> Vec<Uuid> {
    let mut chats: Vec<Uuid> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::AppendEvents { chat_id, .. } | WriteOp::EndChat { chat_id, .. } => {
                Some(*chat_id)
            }
            _ => None,
        })
        .collect();
    chats.sort_unstable();
    chats.dedup();
    chats
}

/// The distinct accounts whose active chats the batch must count (a `StartChat` with
/// `max_active_chats` and a live key), sorted.
pub fn limited_accounts(ops: &[WriteOp], revoked: &HashSet<Uuid>) -> Vec<Uuid> {
    let mut users: Vec<Uuid> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::StartChat {
                api_key_id,
                chat,
                max_active_chats: Some(_),
                ..
            } if !revoked.contains(api_key_id) => Some(chat.user_id),
            _ => None,
        })
        .collect();
    users.sort_unstable();
    users.dedup();
    users
}

/// The distinct groups that live keys' `StartChat`s resume, sorted.
pub fn resumed_groups(ops: &[WriteOp], revoked: &HashSet<Uuid>) -> Vec<Uuid> {
    let mut groups: Vec<Uuid> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::StartChat {
                api_key_id,
                chat:
                    NewChat {
                        group: GroupChoice::Resume(g),
                        ..
                    },
                ..
            } if !revoked.contains(api_key_id) => Some(*g),
            _ => None,
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Whether an account that has `active` chats in progress may start one more.
pub fn may_start_chat(max_active_chats: u32, active: u64) -> bool {
    active < u64::from(max_active_chats)
}

/// What the backend does for one operation of a batch ([`BatchRules::step`]).
#[derive(Debug)]
pub enum Step<'a> {
    /// Nothing to write: the operation reports this.
    Report(OpOutcome),
    /// Start a chat. With a `limit`, count the account's `ACTIVE` chats first (those
    /// started or ended earlier in the batch included) and, unless [`may_start_chat`],
    /// write nothing and report [`OpOutcome::TooManyChats`]. Then create the chat (and
    /// its group, or join the group to resume); when the group to resume is not the
    /// account's, nothing is written and it reports [`OpOutcome::GroupNotFound`].
    /// Otherwise call [`BatchRules::started`], queue the events in the chat's group and
    /// report [`OpOutcome::Applied`].
    Start {
        /// The chat.
        chat: &'a NewChat,
        /// Its first events.
        events: &'a [NewEvent],
        /// The account's limit on `ACTIVE` chats.
        limit: Option<u32>,
    },
    /// Queue the events in the chat's group and report [`OpOutcome::Applied`].
    Append {
        /// The chat.
        chat_id: Uuid,
        /// Its group.
        group_id: Uuid,
        /// Events in order.
        events: &'a [NewEvent],
    },
    /// Queue the events, set the chat's final status and end time (if it is still
    /// `ACTIVE`), and report `outcome`.
    End {
        /// The chat.
        chat_id: Uuid,
        /// Its group.
        group_id: Uuid,
        /// Final status.
        status: ChatStatus,
        /// Epoch ms.
        end_timestamp: i64,
        /// Final events.
        events: &'a [NewEvent],
        /// [`OpOutcome::KeyRevoked`] when the key was revoked (the chat still ends).
        outcome: OpOutcome,
    },
}

/// The decisions of one batch, operation by operation, in order.
#[derive(Debug, Default)]
pub struct BatchRules {
    revoked: HashSet<Uuid>,
    /// Chat → group of every chat still `ACTIVE` at this point of the batch.
    active: HashMap<Uuid, Uuid>,
}

impl BatchRules {
    /// The batch's revoked keys, and the group of each `ACTIVE` chat it writes to.
    pub fn new(revoked: HashSet<Uuid>, active: HashMap<Uuid, Uuid>) -> Self {
        Self { revoked, active }
    }

    /// What to do for `op`, the next operation of the batch.
    pub fn step<'a>(&mut self, op: &'a WriteOp) -> Step<'a> {
        let revoked = self.revoked.contains(&op.api_key_id());
        match op {
            WriteOp::CheckKey { .. } if revoked => Step::Report(OpOutcome::KeyRevoked),
            WriteOp::CheckKey { .. } => Step::Report(OpOutcome::Applied),
            WriteOp::StartChat { .. } | WriteOp::AppendEvents { .. } if revoked => {
                Step::Report(OpOutcome::KeyRevoked)
            }
            WriteOp::StartChat {
                chat,
                events,
                max_active_chats,
                ..
            } => Step::Start {
                chat,
                events,
                limit: *max_active_chats,
            },
            WriteOp::AppendEvents {
                chat_id, events, ..
            } => match self.active.get(chat_id) {
                Some(group_id) => Step::Append {
                    chat_id: *chat_id,
                    group_id: *group_id,
                    events,
                },
                None => Step::Report(OpOutcome::ChatClosed),
            },
            // A revoked key's chat still ends.
            WriteOp::EndChat {
                chat_id,
                status,
                end_timestamp,
                events,
                ..
            } => match self.active.remove(chat_id) {
                Some(group_id) => Step::End {
                    chat_id: *chat_id,
                    group_id,
                    status: *status,
                    end_timestamp: *end_timestamp,
                    events,
                    outcome: if revoked {
                        OpOutcome::KeyRevoked
                    } else {
                        OpOutcome::Applied
                    },
                },
                None => Step::Report(OpOutcome::ChatClosed),
            },
        }
    }

    /// After a [`Step::Start`] created its chat: the chat is `ACTIVE` for the rest of the
    /// batch. Returns the group to queue its events in.
    pub fn started(&mut self, chat: &NewChat) -> Uuid {
        let group = chat.group.id();
        self.active.insert(chat.id, group);
        group
    }
}

/// The statements of a batch that a backend runs inside the batch's transaction, for
/// [`BatchRules::apply`].
// Used through generics only, so each backend's futures keep the auto traits they have
// (PostgreSQL's are `Send`; SQLite's run to their end at once, on the writer thread).
#[allow(async_fn_in_trait)]
pub trait BatchTx: WebhookTx {
    /// The account's `ACTIVE` chats, those started or ended earlier in the transaction
    /// included.
    async fn active_chats(&mut self, user_id: Uuid) -> StoreResult<u64>;

    /// Inserts the chat (`ACTIVE`) and creates or joins its group; false, with nothing
    /// written, when the group to resume is not the account's.
    async fn create_chat(&mut self, chat: &NewChat) -> StoreResult<bool>;

    /// Sets the final status and end time of a chat that is still `ACTIVE`.
    async fn end_chat(
        &mut self,
        chat_id: Uuid,
        status: ChatStatus,
        end_timestamp: i64,
    ) -> StoreResult<()>;
}

/// An event of a batch on its way in, with its chat's group.
#[derive(Debug, Clone, Copy)]
pub struct QueuedEvent<'a> {
    /// The chat.
    pub chat_id: Uuid,
    /// Its group.
    pub group_id: Uuid,
    /// The event.
    pub event: &'a NewEvent,
}

/// What a batch's events add to one chat's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatCounters {
    /// Events added.
    pub count: i64,
    /// The earliest of their timestamps.
    pub first: i64,
    /// The latest of their timestamps.
    pub last: i64,
}

/// The events a batch inserts, in order, and what they add to each chat's row.
#[derive(Debug, Default)]
pub struct QueuedEvents<'a> {
    /// In the order of the operations.
    pub events: Vec<QueuedEvent<'a>>,
    /// By chat id.
    pub chats: BTreeMap<Uuid, ChatCounters>,
}

impl<'a> QueuedEvents<'a> {
    fn push(&mut self, chat_id: Uuid, group_id: Uuid, events: &'a [NewEvent]) {
        for event in events {
            self.events.push(QueuedEvent {
                chat_id,
                group_id,
                event,
            });
            let c = self.chats.entry(chat_id).or_insert(ChatCounters {
                count: 0,
                first: i64::MAX,
                last: i64::MIN,
            });
            c.count += 1;
            c.first = c.first.min(event.timestamp);
            c.last = c.last.max(event.timestamp);
        }
    }
}

impl BatchRules {
    /// Runs the batch's operations in order: each one's statements through `tx`, its
    /// events queued for the backend to insert after the last operation. Returns each
    /// operation's outcome and the queued events.
    pub async fn apply<'a, T: BatchTx>(
        mut self,
        ops: &'a [WriteOp],
        tx: &mut T,
    ) -> StoreResult<(Vec<OpOutcome>, QueuedEvents<'a>)> {
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut queued = QueuedEvents::default();
        for op in ops {
            let outcome = match self.step(op) {
                Step::Report(outcome) => outcome,
                Step::Start {
                    chat,
                    events,
                    limit,
                } => {
                    let full = match limit {
                        Some(limit) => !may_start_chat(limit, tx.active_chats(chat.user_id).await?),
                        None => false,
                    };
                    if full {
                        OpOutcome::TooManyChats
                    } else if !tx.create_chat(chat).await? {
                        OpOutcome::GroupNotFound
                    } else {
                        let group = self.started(chat);
                        queued.push(chat.id, group, events);
                        // The chat's webhooks, and `chat_started`, in its transaction.
                        if let Some(hooks) = ChatWebhooks::for_new_chat(chat, events) {
                            tx.insert_chat_webhooks(&hooks).await?;
                            let started = hooks.started(chat.group, now_ms());
                            if !started.is_empty() {
                                tx.insert_deliveries(&started).await?;
                            }
                        }
                        OpOutcome::Applied
                    }
                }
                Step::Append {
                    chat_id,
                    group_id,
                    events,
                } => {
                    queued.push(chat_id, group_id, events);
                    if concerns_webhooks(events) {
                        if let Some(mut hooks) = tx.chat_webhooks(chat_id).await? {
                            on_events(tx, &mut hooks, events, now_ms()).await?;
                        }
                    }
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
                    queued.push(chat_id, group_id, events);
                    tx.end_chat(chat_id, status, end_timestamp).await?;
                    // `chat_ended` (and what the final events hold) in the same transaction.
                    if let Some(mut hooks) = tx.chat_webhooks(chat_id).await? {
                        let now = now_ms();
                        on_events(tx, &mut hooks, events, now).await?;
                        let ended = hooks.ended(status, end_timestamp, now);
                        if !ended.is_empty() {
                            tx.insert_deliveries(&ended).await?;
                        }
                    }
                    outcome
                }
            };
            outcomes.push(outcome);
        }
        Ok((outcomes, queued))
    }
}

/// Now, epoch ms (when a delivery was written).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
