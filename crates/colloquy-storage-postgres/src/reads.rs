//! Reading chats, groups and events, page by page.

use crate::db;
use crate::rows::Row;
use colloquy_storage::sql::{
    self, direction, ChatOwner, Clause, Listing, Piece, Value, CHAT_COLUMNS, EVENT_COLUMNS,
    GROUP_COLUMNS,
};
use colloquy_storage::*;
use colloquy_wire::ChatStatus;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

/// Appends a shared [`Clause`] with PostgreSQL's placeholders. A search word is one probe
/// of the partial GIN index of migration 0003.
pub(crate) fn push(qb: &mut QueryBuilder<'_, Postgres>, clause: &Clause) {
    for piece in &clause.0 {
        match piece {
            Piece::Sql(s) => qb.push(s),
            Piece::Bind(Value::Uuid(u)) => qb.push_bind(*u),
            Piece::Bind(Value::Text(t)) => qb.push_bind(t.clone()),
            Piece::Bind(Value::Int(n)) => qb.push_bind(*n),
            Piece::Says(term) => qb
                .push(
                    "id IN (SELECT chat_id FROM chat_events \
                     WHERE type IN ('USER_MESSAGE', 'AGENT_MESSAGE') \
                     AND to_tsvector('simple', message_text) @@ to_tsquery('simple', ",
                )
                .push_bind(format!("{term}:*"))
                .push("))"),
        };
    }
}

/// The total of a [`Listing`] of `from`.
pub(crate) async fn count(pool: &PgPool, from: &str, listing: &Listing) -> StoreResult<i64> {
    let mut c = QueryBuilder::new(format!("SELECT COUNT(*) FROM {from}"));
    push(&mut c, &listing.filter);
    c.build_query_scalar().fetch_one(pool).await.map_err(db)
}

/// One page of chats plus their total, by owner or by group.
async fn page_of_chats(pool: &PgPool, listing: &Listing) -> StoreResult<Page<ChatRecord>> {
    // The page's ids come from an index-only walk of the owner's (start_timestamp, id)
    // index; only those rows are then read. Without the subquery, PostgreSQL's custom plans
    // for a deep OFFSET switch to a sequential scan and sort of every chat of the owner
    // (docs/benchmarks.md, list_latency).
    let mut q = QueryBuilder::new(format!(
        "SELECT {CHAT_COLUMNS} FROM chats JOIN (SELECT id FROM chats"
    ));
    push(&mut q, &listing.filter);
    q.push(&listing.order);
    push(&mut q, &listing.limit);
    q.push(") AS page USING (id)").push(&listing.order);
    let rows = q.build().fetch_all(pool).await.map_err(db)?;
    let total = count(pool, "chats", listing).await?;
    sql::page(&rows, sql::chat_record::<Row>, total)
}

pub async fn list_chats(
    pool: &PgPool,
    user_id: Uuid,
    filter: &ChatFilter,
    page: PageRequest,
) -> StoreResult<Page<ChatRecord>> {
    page_of_chats(
        pool,
        &Listing::chats(ChatOwner::Account(user_id), filter, page),
    )
    .await
}

pub async fn get_chat(
    pool: &PgPool,
    user_id: Uuid,
    chat_id: Uuid,
) -> StoreResult<Option<ChatRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {CHAT_COLUMNS} FROM chats WHERE id = $1 AND user_id = $2"
    ))
    .bind(chat_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.as_ref().map(sql::chat_record::<Row>).transpose()
}

pub async fn list_chat_events(
    pool: &PgPool,
    chat_id: Uuid,
    page: PageRequest,
) -> StoreResult<Page<EventRecord>> {
    let d = direction(page.ascending);
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM chat_events WHERE chat_id = $1 \
         ORDER BY seq {d} LIMIT $2 OFFSET $3"
    ))
    .bind(chat_id)
    .bind(page.size as i64)
    .bind(page.offset())
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let total: i64 = sqlx::query_scalar("SELECT event_count FROM chats WHERE id = $1")
        .bind(chat_id)
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .unwrap_or(0);
    sql::page(&rows, sql::event_record::<Row>, total)
}

pub async fn list_chat_groups(
    pool: &PgPool,
    user_id: Uuid,
    config_id: Option<&str>,
    page: PageRequest,
) -> StoreResult<Page<GroupRecord>> {
    let listing = Listing::groups(user_id, config_id, page);
    let mut q = QueryBuilder::new(format!("SELECT {GROUP_COLUMNS} FROM chat_groups g"));
    push(&mut q, &listing.filter);
    q.push(&listing.order);
    push(&mut q, &listing.limit);
    let rows = q.build().fetch_all(pool).await.map_err(db)?;
    let total = count(pool, "chat_groups g", &listing).await?;
    sql::page(&rows, sql::group_record::<Row>, total)
}

pub async fn get_chat_group(
    pool: &PgPool,
    user_id: Uuid,
    group_id: Uuid,
) -> StoreResult<Option<GroupRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {GROUP_COLUMNS} FROM chat_groups g WHERE g.id = $1 AND g.user_id = $2"
    ))
    .bind(group_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.as_ref().map(sql::group_record::<Row>).transpose()
}

pub async fn list_group_chats(
    pool: &PgPool,
    group_id: Uuid,
    status: Option<ChatStatus>,
    page: PageRequest,
) -> StoreResult<Page<ChatRecord>> {
    page_of_chats(pool, &Listing::group_chats(group_id, status, page)).await
}

pub async fn list_group_events(
    pool: &PgPool,
    group_id: Uuid,
    page: PageRequest,
) -> StoreResult<Page<EventRecord>> {
    let d = direction(page.ascending);
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM chat_events WHERE chat_group_id = $1 \
         ORDER BY timestamp {d}, chat_id {d}, seq {d} LIMIT $2 OFFSET $3"
    ))
    .bind(group_id)
    .bind(page.size as i64)
    .bind(page.offset())
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let total: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(event_count), 0)::BIGINT FROM chats WHERE chat_group_id = $1",
    )
    .bind(group_id)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    sql::page(&rows, sql::event_record::<Row>, total)
}
