//! Reading chats, groups and events, page by page (on the read pool).

use crate::rows::Row;
use crate::{db, group_events};
use colloquy_storage::sql::{
    self, ChatOwner, Clause, Listing, Piece, Value, CHAT_COLUMNS, EVENT_COLUMNS, GROUP_COLUMNS,
};
use colloquy_storage::*;
use colloquy_wire::ChatStatus;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use uuid::Uuid;

/// Appends a shared [`Clause`] with SQLite's placeholders (UUIDs as text). A search word is
/// one FTS5 probe (migration 0004).
///
/// With a search word, the account's column is written `+user_id`, which keeps SQLite
/// from walking the account's index: without statistics it takes `user_id = ?` for a
/// selective condition and tests every chat of the account against the matches (27 ms for
/// a rare word at 10M events; docs/benchmarks.md, session 7), where looking the matching
/// chats up by id costs what the matches do.
pub(crate) fn push(qb: &mut QueryBuilder<'_, Sqlite>, clause: &Clause) {
    let searching = clause.0.iter().any(|p| matches!(p, Piece::Says(_)));
    for piece in &clause.0 {
        match piece {
            Piece::Sql("user_id") if searching => qb.push("+user_id"),
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

/// The total of a [`Listing`] of `from` ([`Listing::count`]).
pub(crate) async fn total(
    read: &SqlitePool,
    from: &'static str,
    listing: &Listing,
) -> StoreResult<i64> {
    let mut c = QueryBuilder::new("");
    push(&mut c, &listing.count(from));
    let (total, _): (i64, i64) = c.build_query_as().fetch_one(read).await.map_err(db)?;
    Ok(total)
}

/// One page of a [`Listing`] of `SELECT {columns} FROM {from}`, and its total: the total
/// first, then the page's rows read from the nearer end ([`Listing::window`]), or from the
/// bucket that holds them when the page lies deep ([`Listing::descent`]).
pub(crate) async fn page_of<T>(
    read: &SqlitePool,
    columns: &str,
    from: &'static str,
    listing: &Listing,
    decode: fn(&SqliteRow) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let total = total(read, from, listing).await?;
    let Some(mut window) = listing.window(total) else {
        return sql::page::<SqliteRow, T>(&[], decode, total);
    };
    if let Some(descent) = listing.descent(total) {
        let mut b = QueryBuilder::new("");
        push(&mut b, &descent.statement());
        let rows: Vec<sql::LevelRow> = b.build_query_as().fetch_all(read).await.map_err(db)?;
        if let Some(found) = descent.window(&rows) {
            window = found;
        }
    }
    // SQLite skips the OFFSET's rows in the ordering index before it reads any table row.
    let mut q = QueryBuilder::new(format!("SELECT {columns} FROM {from}"));
    push(&mut q, &listing.filter);
    push(&mut q, &window.bound);
    q.push(&window.order);
    push(&mut q, &window.limit);
    let rows = window.arrange(q.build().fetch_all(read).await.map_err(db)?);
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
    let listing = Listing::chat_events(chat_id, page);
    page_of(
        read,
        EVENT_COLUMNS,
        "chat_events",
        &listing,
        sql::event_record::<Row>,
    )
    .await
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
