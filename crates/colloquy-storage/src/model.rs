//! Rows and requests exchanged with a [`crate::Store`].

use colloquy_wire::{
    ChatStatus, EventRole, EventType, ReconstructionStatus, ReturnChat, ReturnChatEvent,
    ReturnChatGroup, ReturnConfigSpec,
};
use std::borrow::Cow;
use uuid::Uuid;

/// Who is calling: the owner of a live API key or access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account (`user_id` on the wire).
    pub user_id: Uuid,
    /// The key used (or behind the token used).
    pub api_key_id: Uuid,
    /// False for accounts with data retention disabled: nothing of theirs is stored.
    pub data_retention: bool,
    /// The key's prefix as `colloquy keys list` shows it (chooses per-key settings such as
    /// `[engine.keys."<prefix>"]`).
    pub key_prefix: String,
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Account id.
    pub id: Uuid,
    /// Optional label.
    pub name: Option<String>,
    /// False disables data retention.
    pub data_retention: bool,
    /// Epoch ms.
    pub created_at: i64,
}

/// A new API key, stored hashed.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Key id.
    pub id: Uuid,
    /// Owning account.
    pub user_id: Uuid,
    /// Optional label.
    pub name: Option<String>,
    /// First characters of the key, shown in listings.
    pub prefix: String,
    /// SHA-256 (hex) of the API key.
    pub key_hash: String,
    /// SHA-256 (hex) of the secret key.
    pub secret_hash: String,
    /// Epoch ms.
    pub created_at: i64,
}

/// A stored API key, without its hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Key id.
    pub id: Uuid,
    /// Owning account.
    pub user_id: Uuid,
    /// Label.
    pub name: Option<String>,
    /// First characters of the key.
    pub prefix: String,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms, if revoked.
    pub revoked_at: Option<i64>,
    /// The account's retention flag.
    pub data_retention: bool,
}

pub use colloquy_wire::PageRequest;

/// One page of rows plus the size of the whole collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// Rows of the page.
    pub items: Vec<T>,
    /// Rows in the whole collection (for `total_pages`).
    pub total: u64,
}

/// Filters of `GET /v0/evi/chats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatFilter {
    /// Only chats of this status.
    pub status: Option<ChatStatus>,
    /// Only chats that used this config id.
    pub config_id: Option<String>,
    /// Only chats whose message text contains all of these words (full-text search over
    /// `USER_MESSAGE` / `AGENT_MESSAGE` text; empty or blank means no filter).
    pub search: Option<String>,
    /// Only chats started at or after this epoch-ms instant.
    pub started_from: Option<i64>,
    /// Only chats started before this epoch-ms instant.
    pub started_before: Option<i64>,
}

/// A stored chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRecord {
    /// Chat id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Chat group.
    pub chat_group_id: Uuid,
    /// Status.
    pub status: ChatStatus,
    /// Epoch ms.
    pub start_timestamp: i64,
    /// Epoch ms.
    pub end_timestamp: Option<i64>,
    /// Events stored so far.
    pub event_count: i64,
    /// Stringified JSON.
    pub metadata: Option<String>,
    /// Config id, if one was given.
    pub config_id: Option<String>,
    /// Config version, if one was given.
    pub config_version: Option<i64>,
}

impl From<ChatRecord> for ReturnChat {
    fn from(c: ChatRecord) -> Self {
        ReturnChat {
            id: c.id.to_string(),
            chat_group_id: c.chat_group_id.to_string(),
            status: c.status,
            start_timestamp: c.start_timestamp,
            end_timestamp: c.end_timestamp,
            event_count: Some(c.event_count),
            metadata: c.metadata,
            config: config_spec(c.config_id, c.config_version),
        }
    }
}

/// Builds a `ReturnConfigSpec` when a config id is known.
pub fn config_spec(id: Option<String>, version: Option<i64>) -> Option<ReturnConfigSpec> {
    id.map(|id| ReturnConfigSpec { id, version })
}

/// A stored chat event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Event id.
    pub id: Uuid,
    /// Chat.
    pub chat_id: Uuid,
    /// Position in the chat (0-based, strictly increasing).
    pub seq: i64,
    /// Epoch ms.
    pub timestamp: i64,
    /// Role.
    pub role: EventRole,
    /// Type.
    pub event_type: EventType,
    /// Content.
    pub message_text: Option<String>,
    /// Stringified JSON of prosody scores.
    pub emotion_features: Option<String>,
    /// Stringified JSON.
    pub metadata: Option<String>,
    /// Related event (for `ASSISTANT_PROSODY`).
    pub related_event_id: Option<Uuid>,
}

impl From<EventRecord> for ReturnChatEvent {
    fn from(e: EventRecord) -> Self {
        ReturnChatEvent {
            id: e.id.to_string(),
            chat_id: e.chat_id.to_string(),
            timestamp: e.timestamp,
            role: e.role,
            event_type: e.event_type,
            message_text: e.message_text,
            emotion_features: Some(e.emotion_features.unwrap_or_default()),
            metadata: Some(e.metadata.unwrap_or_default()),
            related_event_id: e.related_event_id.map(|id| id.to_string()),
        }
    }
}

/// A stored chat group with its derived fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Group id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Epoch ms.
    pub first_start_timestamp: i64,
    /// Epoch ms.
    pub most_recent_start_timestamp: i64,
    /// Chats in the group.
    pub num_chats: i64,
    /// Most recent chat.
    pub most_recent_chat_id: Option<Uuid>,
    /// Its config id.
    pub most_recent_config_id: Option<String>,
    /// Its config version.
    pub most_recent_config_version: Option<i64>,
    /// True while a chat of the group is `ACTIVE`.
    pub active: bool,
}

impl From<GroupRecord> for ReturnChatGroup {
    fn from(g: GroupRecord) -> Self {
        ReturnChatGroup {
            id: g.id.to_string(),
            first_start_timestamp: g.first_start_timestamp,
            most_recent_start_timestamp: g.most_recent_start_timestamp,
            num_chats: g.num_chats,
            most_recent_chat_id: g.most_recent_chat_id.map(|id| id.to_string()),
            most_recent_config: config_spec(g.most_recent_config_id, g.most_recent_config_version),
            active: Some(g.active),
        }
    }
}

/// A stored audio reconstruction (one per chat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconstructionRecord {
    /// The chat.
    pub chat_id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Status.
    pub status: ReconstructionStatus,
    /// Object key of the MP4 once written.
    pub filename: Option<String>,
    /// Epoch ms of the last status change.
    pub modified_at: i64,
    /// Why it failed, for the owner (for a finished file: the note on audio that could not
    /// be stored).
    pub error: Option<String>,
    /// Why it failed, for programs: set on every `ERROR` recorded since failures carry a
    /// kind; `None` on success and on older rows (and a kind this version does not know).
    pub error_kind: Option<FailureKind>,
}

/// Why a reconstruction failed for good, for programs (its `error` says it for people).
/// Stored as [`FailureKind::as_str`] in the record's `error_kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The chat has no audio: none was received or spoken, or none of it held a sample.
    NoAudio,
    /// The captured audio could not be decoded.
    Undecodable,
    /// Every allowed attempt died with its worker.
    AttemptsExhausted,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 3] = [
        FailureKind::NoAudio,
        FailureKind::Undecodable,
        FailureKind::AttemptsExhausted,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::NoAudio => "no_audio",
            FailureKind::Undecodable => "undecodable",
            FailureKind::AttemptsExhausted => "attempts_exhausted",
        }
    }
}

impl std::str::FromStr for FailureKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FailureKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown reconstruction failure kind `{s}`"))
    }
}

/// A new event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Event id.
    pub id: Uuid,
    /// Position in the chat; the session counts from 0.
    pub seq: i64,
    /// Epoch ms (non-decreasing within a chat).
    pub timestamp: i64,
    /// Role.
    pub role: EventRole,
    /// Type.
    pub event_type: EventType,
    /// Content.
    pub message_text: Option<String>,
    /// Stringified JSON of prosody scores.
    pub emotion_features: Option<String>,
    /// Stringified JSON.
    pub metadata: Option<String>,
    /// Related event.
    pub related_event_id: Option<Uuid>,
}

/// Whether a new chat starts a new group or resumes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupChoice {
    /// Create a group with this id.
    New(Uuid),
    /// Join this existing group (must belong to the same account).
    Resume(Uuid),
}

impl GroupChoice {
    /// The group's id, new or resumed.
    pub fn id(&self) -> Uuid {
        match *self {
            GroupChoice::New(g) | GroupChoice::Resume(g) => g,
        }
    }
}

/// A chat to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChat {
    /// Chat id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Group to create or join.
    pub group: GroupChoice,
    /// Epoch ms.
    pub start_timestamp: i64,
    /// Stringified JSON.
    pub metadata: Option<String>,
    /// Config id.
    pub config_id: Option<String>,
    /// Config version.
    pub config_version: Option<i64>,
    /// Server instance hosting the session (crash recovery).
    pub instance_id: Uuid,
    /// Where the chat's webhook events go (stored with the chat; empty for none).
    pub webhooks: Vec<crate::WebhookSubscription>,
}

/// One operation of a write batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Create a chat (and its group, or join one) with its first events.
    StartChat {
        /// The key that opened the session.
        api_key_id: Uuid,
        /// The chat.
        chat: NewChat,
        /// First events.
        events: Vec<NewEvent>,
        /// When set, the chat is not created if the account (`chat.user_id`) already has
        /// this many `ACTIVE` chats, counting those started earlier in the same batch
        /// ([`OpOutcome::TooManyChats`]).
        max_active_chats: Option<u32>,
    },
    /// Append events to an active chat.
    AppendEvents {
        /// The key that opened the session.
        api_key_id: Uuid,
        /// The chat.
        chat_id: Uuid,
        /// Events in order.
        events: Vec<NewEvent>,
    },
    /// Append final events and end the chat.
    EndChat {
        /// The key that opened the session.
        api_key_id: Uuid,
        /// The chat.
        chat_id: Uuid,
        /// Final status (not `ACTIVE`).
        status: ChatStatus,
        /// Epoch ms.
        end_timestamp: i64,
        /// Final events (e.g. `CHAT_END_MESSAGE`).
        events: Vec<NewEvent>,
    },
    /// Only check that the key is still live (sessions that store nothing).
    CheckKey {
        /// The key.
        api_key_id: Uuid,
    },
}

impl WriteOp {
    /// The key whose liveness gates the operation.
    pub fn api_key_id(&self) -> Uuid {
        match self {
            WriteOp::StartChat { api_key_id, .. }
            | WriteOp::AppendEvents { api_key_id, .. }
            | WriteOp::EndChat { api_key_id, .. }
            | WriteOp::CheckKey { api_key_id } => *api_key_id,
        }
    }
}

/// What happened to one operation of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpOutcome {
    /// Applied and committed.
    Applied,
    /// Not applied: the key was revoked.
    KeyRevoked,
    /// Not applied: the group to resume does not exist for this account.
    GroupNotFound,
    /// Not applied: the chat is no longer `ACTIVE` (for example crash recovery closed it).
    ChatClosed,
    /// Not applied: the account already has its `max_active_chats` `ACTIVE` chats.
    TooManyChats,
}

/// A reconstruction job claimed by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The chat to reconstruct.
    pub chat_id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// 1 on the first try.
    pub attempt: i64,
    /// When the chat started (epoch ms).
    pub chat_start_ms: i64,
    /// When it ended (epoch ms).
    pub chat_end_ms: i64,
}

/// How a reconstruction job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    /// The MP4 is stored under `filename`.
    Complete {
        /// Object key of the file.
        filename: String,
        /// Audio that was received but could not be stored (silence in the file), said
        /// for the owner; kept in the record's `error` field.
        missing: Option<String>,
    },
    /// It failed for good; `reason` is shown to the owner.
    Failed {
        /// What kind of failure, for programs.
        kind: FailureKind,
        /// Human-readable reason.
        reason: String,
    },
}

/// The final columns of a reconstruction record, as stored ([`JobResult::record_fields`]).
pub type RecordFields<'a> = (
    ReconstructionStatus,
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
    Option<&'static str>,
);

impl JobResult {
    /// The record's final `status`, `filename`, `error` and `error_kind`, as stored
    /// ([`crate::storable`]).
    pub fn record_fields(&self) -> RecordFields<'_> {
        let (status, filename, error, kind) = match self {
            JobResult::Complete { filename, missing } => (
                ReconstructionStatus::Complete,
                Some(filename.as_str()),
                missing.as_deref(),
                None,
            ),
            JobResult::Failed { kind, reason } => (
                ReconstructionStatus::Error,
                None,
                Some(reason.as_str()),
                Some(kind.as_str()),
            ),
        };
        (
            status,
            crate::storable(filename),
            crate::storable(error),
            kind,
        )
    }
}

/// The error recorded on a reconstruction whose every allowed attempt died with its worker.
pub fn exhausted_attempts_error(max_attempts: i64) -> String {
    format!("reconstruction was attempted {max_attempts} times and the worker stopped each time")
}
