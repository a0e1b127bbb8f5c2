//! Reading chats, groups and events, page by page.

use crate::db;
use crate::rows::Row;
use colloquy_storage::sql::{
    self, ChatOwner, Clause, Listing, Piece, Value, CHAT_COLUMNS, EVENT_COLUMNS, GROUP_COLUMNS,
};
use colloquy_storage::*;
use colloquy_wire::ChatStatus;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

/// Appends a shared [`Clause`] with PostgreSQL's placeholders. A search word is one probe
/// of the partial GIN index of migration 0003, evaluated once (an `ARRAY(…)` init plan)
/// and then looked up by primary key: as an `IN (…)` semi-join under a `LIMIT`, the planner
/// would walk the account's chats in order and test every message of each (1 s for a rare
/// word at 200,000 events; docs/benchmarks.md, session 7).
pub(crate) fn push(qb: &mut QueryBuilder<'_, Postgres>, clause: &Clause) {
    for piece in &clause.0 {
        match piece {
            Piece::Sql(s) => qb.push(s),
            Piece::Bind(Value::Uuid(u)) => qb.push_bind(*u),
            Piece::Bind(Value::Text(t)) => qb.push_bind(t.clone()),
            Piece::Bind(Value::Int(n)) => qb.push_bind(*n),
            Piece::Says(term) => qb
                .push(
                    "id = ANY(ARRAY(SELECT chat_id FROM chat_events \
                     WHERE type IN ('USER_MESSAGE', 'AGENT_MESSAGE') \
                     AND to_tsvector('simple', message_text) @@ to_tsquery('simple', ",
                )
                .push_bind(format!("{term}:*"))
                .push(")))"),
        };
    }
}

/// The total of a [`Listing`] of `from` ([`Listing::count`]). Maintained counts are
/// change rows that writers only ever insert (so that concurrent writers never wait on one
/// counter row, nor deadlock on two); once an account has gathered more than
/// [`FOLD_AFTER`] of them, they are folded into one row per key.
pub(crate) async fn count(
    pool: &PgPool,
    from: &'static str,
    listing: &Listing,
) -> StoreResult<i64> {
    let mut c = QueryBuilder::new("");
    push(&mut c, &listing.count(from));
    let (total, rows): (i64, i64) = c.build_query_as().fetch_one(pool).await.map_err(db)?;
    if let (Some((table, user_id)), true) = (listing.counts_of, rows > FOLD_AFTER) {
        fold_counts(pool, table, user_id).await?;
        if let Some(buckets) = &listing.buckets {
            fold_recent_buckets(pool, buckets.table, user_id).await?;
        }
    }
    Ok(total)
}

/// Change rows of one account's counts that a read folds together.
const FOLD_AFTER: i64 = 64;

/// Folds `user_id`'s rows of `table` (`chat_counts` or `group_counts`) into one per key.
/// Safe beside writers and other folds: rows inserted after this statement's snapshot are
/// not deleted, and a row another fold deleted first is skipped.
pub(crate) async fn fold_counts(pool: &PgPool, table: &str, user_id: Uuid) -> StoreResult<()> {
    let keys = match table {
        "chat_counts" => "status, config_id",
        _ => "config_id",
    };
    sqlx::query(&format!(
        "WITH gone AS (DELETE FROM {table} WHERE user_id = $1 RETURNING {keys}, n) \
         INSERT INTO {table} (user_id, {keys}, n) \
         SELECT $1, {keys}, SUM(n) FROM gone GROUP BY {keys} HAVING SUM(n) <> 0"
    ))
    .bind(user_id)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

/// Walks the bucket counts down to a deep page ([`sql::Descent`], one statement). A level
/// that added up more than [`FOLD_AFTER`] change rows beyond one per key folds the range it
/// read into one row per key (the account's, `counts_of`).
async fn descend(
    pool: &PgPool,
    descent: sql::Descent,
    counts_of: Option<(&'static str, Uuid)>,
) -> StoreResult<Option<sql::Window>> {
    let mut b = QueryBuilder::new("");
    push(&mut b, &descent.statement());
    let rows: Vec<sql::LevelRow> = b.build_query_as().fetch_all(pool).await.map_err(db)?;
    if let Some((_, user_id)) = counts_of {
        for (row, (level, lo, hi)) in rows.iter().zip(sql::Descent::ranges(&rows)) {
            if row.3 > row.4 + FOLD_AFTER {
                fold_buckets(pool, descent.table(), user_id, level, lo, hi).await?;
            }
        }
    }
    Ok(descent.window(&rows))
}

/// Folds `user_id`'s bucket rows of the last day at every level: where new chats and
/// groups, and the ends of chats, add their change rows. Run beside [`fold_counts`], so
/// that a deep page's first read does not add up every change since the account began.
async fn fold_recent_buckets(pool: &PgPool, table: &str, user_id: Uuid) -> StoreResult<()> {
    let since = colloquy_storage::now_ms() - 86_400_000;
    for (i, shift) in sql::buckets::BUCKET_SHIFTS.iter().enumerate() {
        let level = (sql::buckets::BUCKET_SHIFTS.len() - 1 - i) as i64;
        fold_buckets(pool, table, user_id, level, since >> shift, i64::MAX).await?;
    }
    Ok(())
}

/// Folds `user_id`'s rows of `table` (`chat_buckets` or `group_buckets`) at `level` in
/// buckets `lo..=hi` into one per key, as [`fold_counts`] does for the totals.
pub(crate) async fn fold_buckets(
    pool: &PgPool,
    table: &str,
    user_id: Uuid,
    level: i64,
    lo: i64,
    hi: i64,
) -> StoreResult<()> {
    let keys = match table {
        "chat_buckets" => "bucket, status, config_id",
        _ => "bucket, config_id",
    };
    sqlx::query(&format!(
        "WITH gone AS (DELETE FROM {table} WHERE user_id = $1 AND level = $2 \
         AND bucket >= $3 AND bucket <= $4 RETURNING {keys}, n) \
         INSERT INTO {table} (user_id, level, {keys}, n) \
         SELECT $1, $2, {keys}, SUM(n) FROM gone GROUP BY {keys} HAVING SUM(n) <> 0"
    ))
    .bind(user_id)
    .bind(level as i16)
    .bind(lo)
    .bind(hi)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

/// One page of a [`Listing`] of `SELECT {columns} FROM {from}`, and its total: the total
/// first, then the page's rows read from the nearer end ([`Listing::window`]). With `by_id`,
/// the page's ids come from an index-only walk of the ordering index and only those rows
/// are then read: without the subquery, PostgreSQL's custom plans for a deep OFFSET switch
/// to a sequential scan and sort of every chat of the owner (docs/benchmarks.md,
/// list_latency).
pub(crate) async fn page_of<T>(
    pool: &PgPool,
    columns: &str,
    from: &'static str,
    by_id: bool,
    listing: &Listing,
    decode: fn(&PgRow) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let total = count(pool, from, listing).await?;
    let Some(mut window) = listing.window(total) else {
        return sql::page::<PgRow, T>(&[], decode, total);
    };
    if let Some(descent) = listing.descent(total) {
        if let Some(found) = descend(pool, descent, listing.counts_of).await? {
            window = found;
        }
    }
    let mut q = if by_id {
        let mut q = QueryBuilder::new(format!(
            "SELECT {columns} FROM {from} JOIN (SELECT id FROM {from}"
        ));
        push(&mut q, &listing.filter);
        push(&mut q, &window.bound);
        q.push(&window.order);
        push(&mut q, &window.limit);
        q.push(") AS page USING (id)").push(&window.order);
        q
    } else {
        let mut q = QueryBuilder::new(format!("SELECT {columns} FROM {from}"));
        push(&mut q, &listing.filter);
        push(&mut q, &window.bound);
        q.push(&window.order);
        push(&mut q, &window.limit);
        q
    };
    let rows = window.arrange(q.build().fetch_all(pool).await.map_err(db)?);
    sql::page(&rows, decode, total)
}

/// One page of chats plus their total, by owner or by group.
async fn page_of_chats(pool: &PgPool, listing: &Listing) -> StoreResult<Page<ChatRecord>> {
    page_of(
        pool,
        CHAT_COLUMNS,
        "chats",
        true,
        listing,
        sql::chat_record::<Row>,
    )
    .await
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
    let listing = Listing::chat_events(chat_id, page);
    page_of(
        pool,
        EVENT_COLUMNS,
        "chat_events",
        false,
        &listing,
        sql::event_record::<Row>,
    )
    .await
}

pub async fn list_chat_groups(
    pool: &PgPool,
    user_id: Uuid,
    config_id: Option<&str>,
    page: PageRequest,
) -> StoreResult<Page<GroupRecord>> {
    let listing = Listing::groups(user_id, config_id, page);
    page_of(
        pool,
        GROUP_COLUMNS,
        "chat_groups g",
        true,
        &listing,
        sql::group_record::<Row>,
    )
    .await
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
    let listing = Listing::group_events(group_id, page);
    page_of(
        pool,
        EVENT_COLUMNS,
        "chat_events",
        false,
        &listing,
        sql::event_record::<Row>,
    )
    .await
}
