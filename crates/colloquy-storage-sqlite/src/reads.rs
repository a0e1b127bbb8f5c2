//! Reading chats, groups and events, page by page (on the read pool).

use crate::rows::Row;
use crate::{db, group_events};
use colloquy_storage::sql::{
    self, direction, ChatOwner, Clause, Listing, Piece, Value, CHAT_COLUMNS, EVENT_COLUMNS,
    GROUP_COLUMNS,
};
use colloquy_storage::*;
use colloquy_wire::ChatStatus;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use uuid::Uuid;

/// Appends a shared [`Clause`] with SQLite's placeholders (UUIDs as text). A search word is
/// one FTS5 probe (migration 0004).
fn push(qb: &mut QueryBuilder<'_, Sqlite>, clause: &Clause) {
    for piece in &clause.0 {
        match piece {
            Piece::Sql(s) => qb.push(s),
            Piece::Bind(Value::Uuid(u)) => qb.push_bind(u.to_string()),
            Piece::Bind(Value::Text(t)) => qb.push_bind(t.clone()),
            Piece::Bind(Value::Int(n)) => qb.push_bind(*n),
            Piece::Says(term) => qb
                .push("id IN (SELECT chat_id FROM chat_text WHERE chat_text MATCH ")
                .push_bind(format!("\"{term}\"*"))
                .push(")"),
        };
    }
}

/// One page of a [`Listing`] of `SELECT {columns} FROM {from}`, and its total.
pub(crate) async fn page_of<T>(
    read: &SqlitePool,
    columns: &str,
    from: &str,
    listing: &Listing,
    decode: fn(&SqliteRow) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let mut q = QueryBuilder::new(format!("SELECT {columns} FROM {from}"));
    push(&mut q, &listing.filter);
    q.push(&listing.order);
    push(&mut q, &listing.limit);
    let mut c = QueryBuilder::new(format!("SELECT COUNT(*) FROM {from}"));
    push(&mut c, &listing.filter);
    let rows = q.build().fetch_all(read).await.map_err(db)?;
    let total: i64 = c.build_query_scalar().fetch_one(read).await.map_err(db)?;
    sql::page(&rows, decode, total)
}

pub async fn list_chats(
    read: &SqlitePool,
    user_id: Uuid,
    filter: &ChatFilter,
    page: PageRequest,
) -> StoreResult<Page<ChatRecord>> {
    let listing = Listing::chats(ChatOwner::Account(user_id), filter, page);
    page_of(
        read,
        CHAT_COLUMNS,
        "chats",
        &listing,
        sql::chat_record::<Row>,
    )
    .await
}

pub async fn get_chat(
    read: &SqlitePool,
    user_id: Uuid,
    chat_id: Uuid,
) -> StoreResult<Option<ChatRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {CHAT_COLUMNS} FROM chats WHERE id = ? AND user_id = ?"
    ))
    .bind(chat_id.to_string())
    .bind(user_id.to_string())
    .fetch_optional(read)
    .await
    .map_err(db)?;
    row.as_ref().map(sql::chat_record::<Row>).transpose()
}

pub async fn list_chat_events(
    read: &SqlitePool,
    chat_id: Uuid,
    page: PageRequest,
) -> StoreResult<Page<EventRecord>> {
    let d = direction(page.ascending);
    let cid = chat_id.to_string();
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM chat_events WHERE chat_id = ? \
         ORDER BY seq {d} LIMIT ? OFFSET ?"
    ))
    .bind(&cid)
    .bind(page.size as i64)
    .bind(page.offset())
    .fetch_all(read)
    .await
    .map_err(db)?;
    let total: i64 = sqlx::query_scalar("SELECT event_count FROM chats WHERE id = ?")
        .bind(&cid)
        .fetch_optional(read)
        .await
        .map_err(db)?
        .unwrap_or(0);
    sql::page(&rows, sql::event_record::<Row>, total)
}

pub async fn list_chat_groups(
    read: &SqlitePool,
    user_id: Uuid,
    config_id: Option<&str>,
    page: PageRequest,
) -> StoreResult<Page<GroupRecord>> {
    let listing = Listing::groups(user_id, config_id, page);
    page_of(
        read,
        GROUP_COLUMNS,
        "chat_groups g",
        &listing,
        sql::group_record::<Row>,
    )
    .await
}

pub async fn get_chat_group(
    read: &SqlitePool,
    user_id: Uuid,
    group_id: Uuid,
) -> StoreResult<Option<GroupRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {GROUP_COLUMNS} FROM chat_groups g WHERE g.id = ? AND g.user_id = ?"
    ))
    .bind(group_id.to_string())
    .bind(user_id.to_string())
    .fetch_optional(read)
    .await
    .map_err(db)?;
    row.as_ref().map(sql::group_record::<Row>).transpose()
}

pub async fn list_group_chats(
    read: &SqlitePool,
    group_id: Uuid,
    status: Option<ChatStatus>,
    page: PageRequest,
) -> StoreResult<Page<ChatRecord>> {
    let listing = Listing::group_chats(group_id, status, page);
    page_of(
        read,
        CHAT_COLUMNS,
        "chats",
        &listing,
        sql::chat_record::<Row>,
    )
    .await
}

/// In one transaction, so that the counts and the rows agree ([`group_events`]).
pub async fn list_group_events(
    read: &SqlitePool,
    group_id: Uuid,
    page: PageRequest,
) -> StoreResult<Page<EventRecord>> {
    let mut tx = read.begin().await.map_err(db)?;
    let result = group_events::page(&mut tx, group_id, page).await?;
    tx.commit().await.map_err(db)?;
    Ok(result)
}
