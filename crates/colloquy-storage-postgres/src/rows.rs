//! Decoding PostgreSQL rows into storage models.

use colloquy_storage::*;
use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};
use std::str::FromStr;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Column `i` of `r`, or [`StoreError::Corrupt`].
pub fn col<'r, T>(r: &'r PgRow, i: usize) -> StoreResult<T>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    r.try_get(i).map_err(corrupt)
}

/// A status, role or type stored as its wire name.
fn enum_col<T: FromStr>(r: &PgRow, i: usize) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    let s: String = col(r, i)?;
    s.parse().map_err(corrupt)
}

/// `user_id, api_key_id, data_retention, prefix`.
pub fn principal(r: &PgRow) -> StoreResult<Principal> {
    Ok(Principal {
        user_id: col(r, 0)?,
        api_key_id: col(r, 1)?,
        data_retention: col(r, 2)?,
        key_prefix: col(r, 3)?,
    })
}

/// `id, user_id, name, prefix, created_at, revoked_at, data_retention`.
pub fn api_key_row(r: &PgRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: col(r, 0)?,
        user_id: col(r, 1)?,
        name: col(r, 2)?,
        prefix: col(r, 3)?,
        created_at: col(r, 4)?,
        revoked_at: col(r, 5)?,
        data_retention: col(r, 6)?,
    })
}

/// Columns of `CHAT_COLUMNS`.
pub fn chat_row(r: &PgRow) -> StoreResult<ChatRecord> {
    Ok(ChatRecord {
        id: col(r, 0)?,
        user_id: col(r, 1)?,
        chat_group_id: col(r, 2)?,
        status: enum_col(r, 3)?,
        start_timestamp: col(r, 4)?,
        end_timestamp: col(r, 5)?,
        event_count: col(r, 6)?,
        metadata: col(r, 7)?,
        config_id: col(r, 8)?,
        config_version: col(r, 9)?,
    })
}

/// Columns of `EVENT_COLUMNS`.
pub fn event_row(r: &PgRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: col(r, 0)?,
        chat_id: col(r, 1)?,
        seq: col(r, 2)?,
        timestamp: col(r, 3)?,
        role: enum_col(r, 4)?,
        event_type: enum_col(r, 5)?,
        message_text: col(r, 6)?,
        emotion_features: col(r, 7)?,
        metadata: col(r, 8)?,
        related_event_id: col(r, 9)?,
    })
}

/// Columns of `GROUP_COLUMNS`.
pub fn group_row(r: &PgRow) -> StoreResult<GroupRecord> {
    Ok(GroupRecord {
        id: col(r, 0)?,
        user_id: col(r, 1)?,
        first_start_timestamp: col(r, 2)?,
        most_recent_start_timestamp: col(r, 3)?,
        num_chats: col(r, 4)?,
        most_recent_chat_id: col(r, 5)?,
        most_recent_config_id: col(r, 6)?,
        most_recent_config_version: col(r, 7)?,
        active: col(r, 8)?,
    })
}

/// `chat_id, user_id, status, filename, modified_at, error`.
pub fn reconstruction_row(r: &PgRow) -> StoreResult<ReconstructionRecord> {
    Ok(ReconstructionRecord {
        chat_id: col(r, 0)?,
        user_id: col(r, 1)?,
        status: enum_col(r, 2)?,
        filename: col(r, 3)?,
        modified_at: col(r, 4)?,
        error: col(r, 5)?,
    })
}
