//! Decoding SQLite rows into storage models.

use colloquy_storage::*;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use std::str::FromStr;
use uuid::Uuid;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Any column, with a decoding failure reported as corruption.
pub fn col<'r, T>(r: &'r SqliteRow, i: usize) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    r.try_get(i).map_err(corrupt)
}

/// A UUID stored as text.
pub fn uuid_col(r: &SqliteRow, i: usize) -> StoreResult<Uuid> {
    let s: String = r.try_get(i).map_err(corrupt)?;
    Uuid::parse_str(&s).map_err(|e| corrupt(format!("bad uuid `{s}`: {e}")))
}

fn opt_uuid_col(r: &SqliteRow, i: usize) -> StoreResult<Option<Uuid>> {
    let s: Option<String> = r.try_get(i).map_err(corrupt)?;
    s.map(|s| Uuid::parse_str(&s).map_err(|e| corrupt(format!("bad uuid `{s}`: {e}"))))
        .transpose()
}

fn enum_col<T: FromStr>(r: &SqliteRow, i: usize) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    let s: String = r.try_get(i).map_err(corrupt)?;
    s.parse().map_err(corrupt)
}

/// `user_id, api_key_id, data_retention, prefix`.
pub fn principal(r: &SqliteRow) -> StoreResult<Principal> {
    Ok(Principal {
        user_id: uuid_col(r, 0)?,
        api_key_id: uuid_col(r, 1)?,
        data_retention: r.try_get(2).map_err(corrupt)?,
        key_prefix: r.try_get(3).map_err(corrupt)?,
    })
}

/// Columns of `CHAT_COLUMNS`.
pub fn chat_row(r: &SqliteRow) -> StoreResult<ChatRecord> {
    Ok(ChatRecord {
        id: uuid_col(r, 0)?,
        user_id: uuid_col(r, 1)?,
        chat_group_id: uuid_col(r, 2)?,
        status: enum_col(r, 3)?,
        start_timestamp: r.try_get(4).map_err(corrupt)?,
        end_timestamp: r.try_get(5).map_err(corrupt)?,
        event_count: r.try_get(6).map_err(corrupt)?,
        metadata: r.try_get(7).map_err(corrupt)?,
        config_id: r.try_get(8).map_err(corrupt)?,
        config_version: r.try_get(9).map_err(corrupt)?,
    })
}

/// Columns of `EVENT_COLUMNS`.
pub fn event_row(r: &SqliteRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: uuid_col(r, 0)?,
        chat_id: uuid_col(r, 1)?,
        seq: r.try_get(2).map_err(corrupt)?,
        timestamp: r.try_get(3).map_err(corrupt)?,
        role: enum_col(r, 4)?,
        event_type: enum_col(r, 5)?,
        message_text: r.try_get(6).map_err(corrupt)?,
        emotion_features: r.try_get(7).map_err(corrupt)?,
        metadata: r.try_get(8).map_err(corrupt)?,
        related_event_id: opt_uuid_col(r, 9)?,
    })
}

/// Columns of `GROUP_COLUMNS`.
pub fn group_row(r: &SqliteRow) -> StoreResult<GroupRecord> {
    Ok(GroupRecord {
        id: uuid_col(r, 0)?,
        user_id: uuid_col(r, 1)?,
        first_start_timestamp: r.try_get(2).map_err(corrupt)?,
        most_recent_start_timestamp: r.try_get(3).map_err(corrupt)?,
        num_chats: r.try_get(4).map_err(corrupt)?,
        most_recent_chat_id: opt_uuid_col(r, 5)?,
        most_recent_config_id: r.try_get(6).map_err(corrupt)?,
        most_recent_config_version: r.try_get(7).map_err(corrupt)?,
        active: r.try_get(8).map_err(corrupt)?,
    })
}

/// `chat_id, user_id, status, filename, modified_at, error`.
pub fn reconstruction_row(r: &SqliteRow) -> StoreResult<ReconstructionRecord> {
    Ok(ReconstructionRecord {
        chat_id: uuid_col(r, 0)?,
        user_id: uuid_col(r, 1)?,
        status: enum_col(r, 2)?,
        filename: r.try_get(3).map_err(corrupt)?,
        modified_at: r.try_get(4).map_err(corrupt)?,
        error: r.try_get(5).map_err(corrupt)?,
    })
}
