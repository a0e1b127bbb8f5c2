//! The rules of [`crate::Store::apply_batch`], shared by every backend: which operations
//! are applied, what each one reports, and how text is stored. A backend reads the facts
//! (revoked keys, active chats, an account's active chat count) and writes; the decisions
//! are taken here, once.

use crate::{NewChat, NewEvent, OpOutcome, WriteOp};
use colloquy_wire::ChatStatus;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GroupChoice;

    #[test]
    fn nul_becomes_the_replacement_character() {
        assert!(matches!(storable_text("plain"), Cow::Borrowed("plain")));
        assert_eq!(storable_text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(storable(None), None);
        assert_eq!(storable(Some("\0")).as_deref(), Some("\u{FFFD}"));
    }

    fn start(key: Uuid, user: Uuid, limit: Option<u32>) -> WriteOp {
        WriteOp::StartChat {
            api_key_id: key,
            chat: NewChat {
                id: Uuid::new_v4(),
                user_id: user,
                group: GroupChoice::New(Uuid::new_v4()),
                start_timestamp: 1,
                metadata: None,
                config_id: None,
                config_version: None,
                instance_id: Uuid::nil(),
            },
            events: vec![],
            max_active_chats: limit,
        }
    }

    #[test]
    fn limits_and_revocations() {
        assert!(may_start_chat(2, 1));
        assert!(!may_start_chat(2, 2));
        assert!(!may_start_chat(0, 0));
        let (live, gone) = (Uuid::new_v4(), Uuid::new_v4());
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
        let ops = [
            start(live, a, Some(1)),
            start(live, b, Some(1)),
            start(live, a, Some(3)),
            start(live, Uuid::new_v4(), None),
            start(gone, Uuid::new_v4(), Some(1)),
        ];
        let revoked = HashSet::from([gone]);
        assert_eq!(limited_accounts(&ops, &revoked), vec![b, a]);
        let mut rules = BatchRules::new(revoked, HashMap::new());
        assert!(matches!(
            rules.step(&ops[0]),
            Step::Start { limit: Some(1), .. }
        ));
        assert!(matches!(
            rules.step(&ops[4]),
            Step::Report(OpOutcome::KeyRevoked)
        ));
    }

    #[test]
    fn chats_are_active_once_started_and_until_ended() {
        let key = Uuid::new_v4();
        let op = start(key, Uuid::new_v4(), None);
        let WriteOp::StartChat { chat, .. } = &op else {
            unreachable!()
        };
        let append = WriteOp::AppendEvents {
            api_key_id: key,
            chat_id: chat.id,
            events: vec![],
        };
        let end = WriteOp::EndChat {
            api_key_id: key,
            chat_id: chat.id,
            status: ChatStatus::UserEnded,
            end_timestamp: 2,
            events: vec![],
        };
        assert_eq!(chats_written(&[append.clone(), end.clone()]), vec![chat.id]);
        let mut rules = BatchRules::default();
        assert!(matches!(
            rules.step(&append),
            Step::Report(OpOutcome::ChatClosed)
        ));
        let group = rules.started(chat);
        assert!(matches!(rules.step(&append), Step::Append { group_id, .. } if group_id == group));
        assert!(matches!(
            rules.step(&end),
            Step::End {
                outcome: OpOutcome::Applied,
                ..
            }
        ));
        assert!(matches!(
            rules.step(&end),
            Step::Report(OpOutcome::ChatClosed)
        ));
    }
}
