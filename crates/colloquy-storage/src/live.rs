//! What live sessions and the control plane need from the database beyond the write
//! batches: a live chat's metadata, who owns a live chat, and messages between servers. PostgreSQL carries them
//! (`NOTIFY` / `LISTEN`, no other infrastructure); a SQLite database has one server, so the
//! defaults say nothing is shared.

use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use futures::stream::BoxStream;
use uuid::Uuid;

/// Longest payload of one message between servers, in bytes (PostgreSQL's `NOTIFY` limit is
/// 8000; longer messages are split by the caller).
pub const MAX_PAYLOAD: usize = 7900;

/// The server instance running a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveOwner {
    /// The instance (`server_instances.id`).
    pub instance_id: Uuid,
    /// Epoch ms of its last heartbeat (`None`: it has none, i.e. it is gone).
    pub heartbeat_at: Option<i64>,
}

/// Reaching chats across servers that share the database.
#[async_trait]
pub trait LiveStore: Send + Sync {
    /// Whether several servers may share this database.
    fn shared(&self) -> bool {
        false
    }

    /// The instance owning `user_id`'s chat `chat_id` while it is `ACTIVE`.
    async fn live_chat_owner(
        &self,
        _user_id: Uuid,
        _chat_id: Uuid,
    ) -> StoreResult<Option<LiveOwner>> {
        Ok(None)
    }

    /// Replaces the `metadata` of `user_id`'s `ACTIVE` chat `chat_id` (its session's
    /// `custom_session_id` changed); false when there is no such chat.
    async fn set_chat_metadata(
        &self,
        _user_id: Uuid,
        _chat_id: Uuid,
        _metadata: &str,
    ) -> StoreResult<bool> {
        Ok(false)
    }

    /// Sends `payload` (at most [`MAX_PAYLOAD`] bytes) to whoever listens on `channel`.
    /// Messages of one caller arrive in the order their calls returned.
    async fn notify(&self, _channel: &str, _payload: &str) -> StoreResult<()> {
        Err(StoreError::Database(
            "this database is not shared between servers".into(),
        ))
    }

    /// The messages sent to `channel` from now on.
    async fn listen(&self, _channel: &str) -> StoreResult<BoxStream<'static, String>> {
        Err(StoreError::Database(
            "this database is not shared between servers".into(),
        ))
    }
}
