//! What the SQL of both backends agrees on, written once: the column lists they read and
//! how each list decodes into a model ([`Decode`]), and the listings' filters, order and
//! paging as [`Clause`]s of SQL and values, which each backend renders with its own
//! placeholders, value types and full-text index.

use crate::{
    search_terms, storable_text, ApiKeyRecord, ChatFilter, ChatRecord, ClaimedJob, EventRecord,
    GroupRecord, Page, PageRequest, Principal, ReconstructionRecord, StoreError, StoreResult,
};
use colloquy_wire::ChatStatus;
use std::str::FromStr;
use uuid::Uuid;

pub mod buckets;
pub mod resources;

pub use buckets::{Buckets, Descent, LevelRow};

/// Columns of a chat ([`chat_record`]), from `chats`.
pub const CHAT_COLUMNS: &str =
    "id, user_id, chat_group_id, status, start_timestamp, end_timestamp, \
     event_count, metadata, config_id, config_version";

/// Columns of an event ([`event_record`]), from `chat_events`.
pub const EVENT_COLUMNS: &str = "id, chat_id, seq, timestamp, role, type, message_text, \
     emotion_features, metadata, related_event_id";

/// Columns of a group ([`group_record`]), from `chat_groups g`.
pub const GROUP_COLUMNS: &str = "g.id, g.user_id, g.first_start_timestamp, \
     g.most_recent_start_timestamp, g.num_chats, g.most_recent_chat_id, \
     g.most_recent_config_id, g.most_recent_config_version, \
     EXISTS (SELECT 1 FROM chats c WHERE c.chat_group_id = g.id AND c.status = 'ACTIVE') AS active";

/// Columns of a principal ([`principal`]), from `api_keys k JOIN accounts a`.
pub const PRINCIPAL_COLUMNS: &str = "k.user_id, k.id, a.data_retention, k.prefix";

/// Columns of a key ([`api_key_record`]), from `api_keys k JOIN accounts a`.
pub const API_KEY_COLUMNS: &str =
    "k.id, k.user_id, k.name, k.prefix, k.created_at, k.revoked_at, a.data_retention";

/// Columns of a reconstruction ([`reconstruction_record`]), from `audio_reconstructions`.
pub const RECONSTRUCTION_COLUMNS: &str =
    "chat_id, user_id, status, filename, modified_at, error, error_kind";

/// Columns of a claimed job ([`claimed_job`]), from `audio_jobs j JOIN chats c`.
pub const JOB_COLUMNS: &str =
    "j.chat_id, j.user_id, j.attempts, c.start_timestamp, c.end_timestamp";

/// The `metadata` of the `CHAT_END_MESSAGE` with which crash recovery ends an orphaned chat
/// ([`crate::Store::close_orphaned_chats`]).
pub const ORPHANED_CHAT_END_METADATA: &str = r#"{"reason":"server_failure"}"#;

/// How a backend reads column `i` of its rows as the few types the models hold (SQLite
/// keeps UUIDs as text, PostgreSQL as `uuid`). A value that does not decode is
/// [`StoreError::Corrupt`].
pub trait Decode {
    /// The backend's row.
    type Row;
    /// A UUID.
    fn uuid(r: &Self::Row, i: usize) -> StoreResult<Uuid>;
    /// A UUID or NULL.
    fn opt_uuid(r: &Self::Row, i: usize) -> StoreResult<Option<Uuid>>;
    /// Text.
    fn text(r: &Self::Row, i: usize) -> StoreResult<String>;
    /// Text or NULL.
    fn opt_text(r: &Self::Row, i: usize) -> StoreResult<Option<String>>;
    /// An integer.
    fn int(r: &Self::Row, i: usize) -> StoreResult<i64>;
    /// An integer or NULL.
    fn opt_int(r: &Self::Row, i: usize) -> StoreResult<Option<i64>>;
    /// A boolean.
    fn flag(r: &Self::Row, i: usize) -> StoreResult<bool>;

    /// A status, role or type stored as its wire name.
    fn name<T: FromStr>(r: &Self::Row, i: usize) -> StoreResult<T>
    where
        T::Err: std::fmt::Display,
    {
        Self::text(r, i)?.parse().map_err(corrupt)
    }
}

/// A value that does not decode.
pub fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A UUID stored as text.
pub fn uuid_text(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| corrupt(format!("bad uuid `{s}`: {e}")))
}

/// [`PRINCIPAL_COLUMNS`].
pub fn principal<D: Decode>(r: &D::Row) -> StoreResult<Principal> {
    Ok(Principal {
        user_id: D::uuid(r, 0)?,
        api_key_id: D::uuid(r, 1)?,
        data_retention: D::flag(r, 2)?,
        key_prefix: D::text(r, 3)?,
    })
}

/// [`API_KEY_COLUMNS`].
pub fn api_key_record<D: Decode>(r: &D::Row) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: D::uuid(r, 0)?,
        user_id: D::uuid(r, 1)?,
        name: D::opt_text(r, 2)?,
        prefix: D::text(r, 3)?,
        created_at: D::int(r, 4)?,
        revoked_at: D::opt_int(r, 5)?,
        data_retention: D::flag(r, 6)?,
    })
}

/// [`CHAT_COLUMNS`].
pub fn chat_record<D: Decode>(r: &D::Row) -> StoreResult<ChatRecord> {
    Ok(ChatRecord {
        id: D::uuid(r, 0)?,
        user_id: D::uuid(r, 1)?,
        chat_group_id: D::uuid(r, 2)?,
        status: D::name(r, 3)?,
        start_timestamp: D::int(r, 4)?,
        end_timestamp: D::opt_int(r, 5)?,
        event_count: D::int(r, 6)?,
        metadata: D::opt_text(r, 7)?,
        config_id: D::opt_text(r, 8)?,
        config_version: D::opt_int(r, 9)?,
    })
}

/// [`EVENT_COLUMNS`].
pub fn event_record<D: Decode>(r: &D::Row) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: D::uuid(r, 0)?,
        chat_id: D::uuid(r, 1)?,
        seq: D::int(r, 2)?,
        timestamp: D::int(r, 3)?,
        role: D::name(r, 4)?,
        event_type: D::name(r, 5)?,
        message_text: D::opt_text(r, 6)?,
        emotion_features: D::opt_text(r, 7)?,
        metadata: D::opt_text(r, 8)?,
        related_event_id: D::opt_uuid(r, 9)?,
    })
}

/// [`GROUP_COLUMNS`].
pub fn group_record<D: Decode>(r: &D::Row) -> StoreResult<GroupRecord> {
    Ok(GroupRecord {
        id: D::uuid(r, 0)?,
        user_id: D::uuid(r, 1)?,
        first_start_timestamp: D::int(r, 2)?,
        most_recent_start_timestamp: D::int(r, 3)?,
        num_chats: D::int(r, 4)?,
        most_recent_chat_id: D::opt_uuid(r, 5)?,
        most_recent_config_id: D::opt_text(r, 6)?,
        most_recent_config_version: D::opt_int(r, 7)?,
        active: D::flag(r, 8)?,
    })
}

/// [`RECONSTRUCTION_COLUMNS`]. An `error_kind` this version does not know (written by a
/// newer one) reads as none, like a row from before failures had kinds.
pub fn reconstruction_record<D: Decode>(r: &D::Row) -> StoreResult<ReconstructionRecord> {
    Ok(ReconstructionRecord {
        chat_id: D::uuid(r, 0)?,
        user_id: D::uuid(r, 1)?,
        status: D::name(r, 2)?,
        filename: D::opt_text(r, 3)?,
        modified_at: D::int(r, 4)?,
        error: D::opt_text(r, 5)?,
        error_kind: D::opt_text(r, 6)?.and_then(|k| k.parse().ok()),
    })
}

/// [`JOB_COLUMNS`] of the job about to be claimed at `now_ms`: this is its next attempt.
pub fn claimed_job<D: Decode>(r: &D::Row, now_ms: i64) -> StoreResult<ClaimedJob> {
    Ok(ClaimedJob {
        chat_id: D::uuid(r, 0)?,
        user_id: D::uuid(r, 1)?,
        attempt: D::int(r, 2)? + 1,
        chat_start_ms: D::int(r, 3)?,
        chat_end_ms: D::opt_int(r, 4)?.unwrap_or(now_ms),
    })
}

/// A page of `rows`, decoded, in a collection of `total`.
pub fn page<R, T>(
    rows: &[R],
    decode: impl Fn(&R) -> StoreResult<T>,
    total: i64,
) -> StoreResult<Page<T>> {
    Ok(Page {
        items: rows.iter().map(decode).collect::<StoreResult<_>>()?,
        total: total as u64,
    })
}

/// `ASC` or `DESC`.
pub fn direction(ascending: bool) -> &'static str {
    if ascending {
        "ASC"
    } else {
        "DESC"
    }
}

/// A value bound to a statement's parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A UUID (text on SQLite).
    Uuid(Uuid),
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
}

/// A piece of a [`Clause`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// SQL text.
    Sql(&'static str),
    /// A parameter.
    Bind(Value),
    /// A condition: the chat (`id`) holds a user or agent message with a word that starts
    /// with this one (one of [`search_terms`]). Each backend asks its own full-text index.
    Says(String),
}

/// Part of a statement as SQL text and values, in order; each backend renders it with its
/// own placeholders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clause(pub Vec<Piece>);

impl Clause {
    pub(crate) fn sql(&mut self, sql: &'static str) -> &mut Self {
        self.0.push(Piece::Sql(sql));
        self
    }

    pub(crate) fn bind(&mut self, value: Value) -> &mut Self {
        self.0.push(Piece::Bind(value));
        self
    }

    /// `sql` followed by this clause.
    pub(crate) fn after(self, sql: &'static str) -> Self {
        let mut c = Clause(vec![Piece::Sql(sql)]);
        c.0.extend(self.0);
        c
    }

    /// Adds `column = value` (`column op value`) to the `WHERE`, or starts it.
    pub(crate) fn and(
        &mut self,
        column: &'static str,
        op: &'static str,
        value: Value,
    ) -> &mut Self {
        self.sql(if self.0.is_empty() {
            " WHERE "
        } else {
            " AND "
        })
        .sql(column)
        .sql(op)
        .bind(value)
    }
}

/// Whose chats a listing holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatOwner {
    /// An account's (`user_id`).
    Account(Uuid),
    /// A group's (`chat_group_id`).
    Group(Uuid),
}

/// One page of a listing: `SELECT … FROM …` then its [`Listing::filter`] and the
/// [`Window`] of the page, once the listing's total is known ([`Listing::count`]).
///
/// Pages are read from the nearer end: a page past the middle is read in the opposite
/// order from the other end and turned around ([`Window::reversed`]), so the last page
/// costs what the first does. Skipping happens inside the ordering index (the page's ids
/// first, then their rows), and the total comes from counts the database maintains in the
/// same transaction as the rows ([`Listing::counted`]), not from counting rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// ` WHERE …`.
    pub filter: Clause,
    /// The ordering columns, most significant first.
    keys: Vec<&'static str>,
    /// Smallest keys first.
    ascending: bool,
    /// The page asked for.
    page: PageRequest,
    /// A statement that reads the total from maintained counts; `None`: count the rows.
    pub counted: Option<Clause>,
    /// The table of maintained counts [`Listing::counted`] reads and the account whose
    /// rows it adds up, when they are change rows to fold together (PostgreSQL;
    /// [`Listing::count`]).
    pub counts_of: Option<(&'static str, Uuid)>,
    /// Counts per span of time that find a deep page ([`Listing::descent`]).
    pub buckets: Option<Buckets>,
}

/// Where a page lies in its listing: ` ORDER BY …` and ` LIMIT … OFFSET …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// ` ORDER BY …`.
    pub order: String,
    /// ` AND …` after the listing's filter: where a page found through the buckets starts
    /// ([`Descent::window`]); empty otherwise.
    pub bound: Clause,
    /// ` LIMIT … OFFSET …`.
    pub limit: Clause,
    /// Read from the other end: the rows come in the opposite order and are turned around
    /// ([`Window::arrange`]).
    pub reversed: bool,
}

impl Window {
    /// The window that reads `limit` rows after skipping `skip`, ordered by `keys` (all
    /// ascending or all descending), where `bound` allows.
    pub(crate) fn new(
        keys: &[&'static str],
        ascending: bool,
        bound: Clause,
        limit: i64,
        skip: i64,
        reversed: bool,
    ) -> Self {
        let d = direction(ascending);
        let order = keys
            .iter()
            .map(|k| format!("{k} {d}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut l = Clause::default();
        l.sql(" LIMIT ")
            .bind(Value::Int(limit))
            .sql(" OFFSET ")
            .bind(Value::Int(skip));
        Window {
            order: format!(" ORDER BY {order}"),
            bound,
            limit: l,
            reversed,
        }
    }

    /// The rows a query of this window returned, in the listing's order.
    pub fn arrange<R>(&self, mut rows: Vec<R>) -> Vec<R> {
        if self.reversed {
            rows.reverse();
        }
        rows
    }
}

impl Listing {
    fn new(filter: Clause, keys: [&'static str; 2], page: PageRequest) -> Self {
        Self {
            filter,
            keys: keys.to_vec(),
            ascending: page.ascending,
            page,
            counted: None,
            counts_of: None,
            buckets: None,
        }
    }

    /// The statement that gives the total and how many rows of maintained counts it
    /// added up (two `BIGINT`s): [`Listing::counted`], else `SELECT COUNT(*) FROM {from}`
    /// and the filter (and 0).
    pub fn count(&self, from: &'static str) -> Clause {
        if let Some(counted) = &self.counted {
            return counted.clone();
        }
        let mut c = Clause::default();
        c.sql("SELECT COUNT(*), CAST(0 AS BIGINT) FROM ").sql(from);
        c.0.extend(self.filter.0.iter().cloned());
        c
    }

    /// Where the page lies in a listing of `total` rows: the order to read in, how many
    /// rows, how many to skip first, and whether that is the opposite of the listing's
    /// order (the page is nearer the end: its rows are the last ones from the other end).
    /// `None` when the page lies past the end (it is empty).
    fn placement(&self, total: i64) -> Option<(bool, i64, i64, bool)> {
        let offset = self.page.offset();
        let size = self.page.size as i64;
        if offset >= total || size == 0 {
            return None;
        }
        let remaining = total - offset;
        // Nearer the end: read `remaining`'s last rows from the other end.
        let reversed = offset > remaining;
        Some(if reversed {
            (
                !self.ascending,
                size.min(remaining),
                (remaining - size).max(0),
                true,
            )
        } else {
            (self.ascending, size, offset, false)
        })
    }

    /// The page's window in a listing of `total` rows; `None` when the page lies past the
    /// end (it is empty).
    pub fn window(&self, total: i64) -> Option<Window> {
        let (ascending, limit, skip, reversed) = self.placement(total)?;
        Some(Window::new(
            &self.keys,
            ascending,
            Clause::default(),
            limit,
            skip,
            reversed,
        ))
    }

    /// The walk down the bucket counts to the page, when the listing has them and more
    /// than [`buckets::descend_after`] rows lie between the page and both ends; `None`:
    /// read [`Listing::window`].
    pub fn descent(&self, total: i64) -> Option<Descent> {
        let buckets = self.buckets.clone()?;
        let (ascending, limit, skip, reversed) = self.placement(total)?;
        (skip > buckets::descend_after())
            .then(|| Descent::new(buckets, self.keys.clone(), ascending, skip, limit, reversed))
    }

    /// Chats ([`CHAT_COLUMNS`] from `chats`) of an account or a group, by start time, that
    /// pass `filter`.
    pub fn chats(owner: ChatOwner, filter: &ChatFilter, page: PageRequest) -> Self {
        let mut c = Clause::default();
        match owner {
            ChatOwner::Account(id) => c.and("user_id", " = ", Value::Uuid(id)),
            ChatOwner::Group(id) => c.and("chat_group_id", " = ", Value::Uuid(id)),
        };
        if let Some(s) = filter.status {
            c.and("status", " = ", Value::Text(s.as_str().to_string()));
        }
        if let Some(cfg) = &filter.config_id {
            // As stored (a NUL would also fail the query on PostgreSQL).
            c.and(
                "config_id",
                " = ",
                Value::Text(storable_text(cfg).into_owned()),
            );
        }
        if let Some(from) = filter.started_from {
            c.and("start_timestamp", " >= ", Value::Int(from));
        }
        if let Some(before) = filter.started_before {
            c.and("start_timestamp", " < ", Value::Int(before));
        }
        // Every word must occur in the chat's messages (each may be in a different
        // message), as a word or the start of one: one index probe per word.
        let terms = search_terms(filter.search.as_deref().unwrap_or(""));
        let searched = !terms.is_empty();
        for term in terms {
            c.sql(" AND ").0.push(Piece::Says(term));
        }
        let mut listing = Self::new(c, ["start_timestamp", "id"], page);
        let by_time = filter.started_from.is_some() || filter.started_before.is_some();
        // `chat_counts` holds the chats of each account, status and config (`''`: none);
        // a group's `num_chats` its chats.
        let config = filter.config_id.as_deref().map(storable_text);
        if !searched && !by_time && config.as_deref() != Some("") {
            let mut n = Clause::default();
            match (owner, filter.status) {
                (ChatOwner::Account(id), status) => {
                    n.and("user_id", " = ", Value::Uuid(id));
                    if let Some(s) = status {
                        n.and("status", " = ", Value::Text(s.as_str().to_string()));
                    }
                    if let Some(cfg) = config {
                        n.and("config_id", " = ", Value::Text(cfg.into_owned()));
                    }
                    listing.buckets = Some(Buckets {
                        table: "chat_buckets",
                        keys: n.clone(),
                        column: "start_timestamp",
                        key_columns: "status, config_id",
                    });
                    listing.counted = Some(n.after(
                        "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT), COUNT(*) FROM chat_counts",
                    ));
                    listing.counts_of = Some(("chat_counts", id));
                }
                (ChatOwner::Group(id), None) if filter.config_id.is_none() => {
                    n.and("id", " = ", Value::Uuid(id));
                    listing.counted = Some(n.after(
                        "SELECT CAST(COALESCE(MAX(num_chats), 0) AS BIGINT), CAST(0 AS BIGINT) \
                         FROM chat_groups",
                    ));
                }
                // A group's chats of one status: counted in the group's index.
                (ChatOwner::Group(_), _) => {}
            }
        }
        listing
    }

    /// The chats of a group, optionally of one status.
    pub fn group_chats(group_id: Uuid, status: Option<ChatStatus>, page: PageRequest) -> Self {
        let filter = ChatFilter {
            status,
            ..Default::default()
        };
        Self::chats(ChatOwner::Group(group_id), &filter, page)
    }

    /// An account's groups ([`GROUP_COLUMNS`] from `chat_groups g`), by first start time,
    /// optionally only those whose most recent chat used `config_id`.
    pub fn groups(user_id: Uuid, config_id: Option<&str>, page: PageRequest) -> Self {
        let mut c = Clause::default();
        c.and("g.user_id", " = ", Value::Uuid(user_id));
        if let Some(cfg) = config_id {
            c.and(
                "g.most_recent_config_id",
                " = ",
                Value::Text(storable_text(cfg).into_owned()),
            );
        }
        let mut listing = Self::new(c, ["g.first_start_timestamp", "g.id"], page);
        // `group_counts` holds the groups of each account and most recent config (`''`:
        // none).
        let config = config_id.map(storable_text);
        if config.as_deref() != Some("") {
            let mut n = Clause::default();
            n.and("user_id", " = ", Value::Uuid(user_id));
            if let Some(cfg) = config {
                n.and("config_id", " = ", Value::Text(cfg.into_owned()));
            }
            listing.buckets = Some(Buckets {
                table: "group_buckets",
                keys: n.clone(),
                column: "g.first_start_timestamp",
                key_columns: "config_id",
            });
            listing.counted = Some(
                n.after("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT), COUNT(*) FROM group_counts"),
            );
            listing.counts_of = Some(("group_counts", user_id));
        }
        listing
    }

    /// A chat's events (from `chat_events`), by sequence number; the total is the chat's
    /// `event_count`.
    pub fn chat_events(chat_id: Uuid, page: PageRequest) -> Self {
        let mut c = Clause::default();
        c.and("chat_id", " = ", Value::Uuid(chat_id));
        let mut listing = Self {
            filter: c,
            keys: vec!["seq"],
            ascending: page.ascending,
            page,
            counted: None,
            counts_of: None,
            buckets: None,
        };
        let mut n = Clause::default();
        n.and("id", " = ", Value::Uuid(chat_id));
        listing.counted = Some(n.after(
            "SELECT CAST(COALESCE(MAX(event_count), 0) AS BIGINT), CAST(0 AS BIGINT) FROM chats",
        ));
        listing
    }

    /// A group's events (from `chat_events`), by time, then chat and sequence number; the
    /// total is the sum of its chats' `event_count`s.
    pub fn group_events(group_id: Uuid, page: PageRequest) -> Self {
        let mut c = Clause::default();
        c.and("chat_group_id", " = ", Value::Uuid(group_id));
        let mut n = Clause::default();
        n.and("chat_group_id", " = ", Value::Uuid(group_id));
        let n = n.after(
            "SELECT CAST(COALESCE(SUM(event_count), 0) AS BIGINT), CAST(0 AS BIGINT) FROM chats",
        );
        Self {
            filter: c,
            keys: vec!["timestamp", "chat_id", "seq"],
            ascending: page.ascending,
            page,
            counted: Some(n),
            counts_of: None,
            buckets: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders with `?` placeholders and values inline, as a backend would bind them.
    fn render(c: &Clause) -> String {
        c.0.iter()
            .map(|p| match p {
                Piece::Sql(s) => s.to_string(),
                Piece::Bind(v) => format!("?{v:?}"),
                Piece::Says(t) => format!("says({t})"),
            })
            .collect()
    }

    fn page(number: u32, size: u32, ascending: bool) -> PageRequest {
        PageRequest {
            number,
            size,
            ascending,
        }
    }

    #[test]
    fn a_chat_listing_filters_orders_and_pages() {
        let user = Uuid::nil();
        let plain = Listing::chats(
            ChatOwner::Account(user),
            &ChatFilter::default(),
            page(2, 10, true),
        );
        assert_eq!(
            render(&plain.filter),
            format!(" WHERE user_id = ?Uuid({user})")
        );
        // Page 2 of 100: from the start.
        let w = plain.window(100).unwrap();
        assert_eq!(w.order, " ORDER BY start_timestamp ASC, id ASC");
        assert_eq!(render(&w.limit), " LIMIT ?Int(10) OFFSET ?Int(20)");
        assert!(!w.reversed);
        // Totals from the maintained counts.
        assert_eq!(
            render(plain.counted.as_ref().unwrap()),
            format!(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT), COUNT(*) FROM chat_counts \
                 WHERE user_id = ?Uuid({user})"
            )
        );
        assert_eq!(plain.counts_of, Some(("chat_counts", user)));

        let filter = ChatFilter {
            status: Some(ChatStatus::Active),
            config_id: Some("c\0".into()),
            search: Some("Hello, hello wörld".into()),
            started_from: Some(5),
            started_before: Some(9),
        };
        let all = Listing::chats(ChatOwner::Group(user), &filter, page(0, 3, false));
        assert_eq!(
            render(&all.filter),
            format!(
                " WHERE chat_group_id = ?Uuid({user}) AND status = ?Text(\"ACTIVE\") \
                 AND config_id = ?Text(\"c\u{FFFD}\") AND start_timestamp >= ?Int(5) \
                 AND start_timestamp < ?Int(9) AND says(hello) AND says(wörld)"
            )
        );
        assert_eq!(
            all.window(10).unwrap().order,
            " ORDER BY start_timestamp DESC, id DESC"
        );
        // A search or a time range is counted in the rows.
        assert_eq!(all.counted, None);
        assert!(render(&all.count("chats"))
            .starts_with("SELECT COUNT(*), CAST(0 AS BIGINT) FROM chats WHERE chat_group_id"));
        assert_eq!(
            Listing::group_chats(user, Some(ChatStatus::Active), page(0, 3, false)).filter,
            Listing::chats(
                ChatOwner::Group(user),
                &ChatFilter {
                    status: Some(ChatStatus::Active),
                    ..Default::default()
                },
                page(0, 3, false)
            )
            .filter
        );
    }

    #[test]
    fn a_group_listing_filters_by_the_most_recent_config() {
        let user = Uuid::nil();
        let groups = Listing::groups(user, Some("cfg"), page(1, 5, false));
        assert_eq!(
            render(&groups.filter),
            format!(
                " WHERE g.user_id = ?Uuid({user}) AND g.most_recent_config_id = ?Text(\"cfg\")"
            )
        );
        let w = groups.window(100).unwrap();
        assert_eq!(w.order, " ORDER BY g.first_start_timestamp DESC, g.id DESC");
        assert_eq!(render(&w.limit), " LIMIT ?Int(5) OFFSET ?Int(5)");
        assert_eq!(
            render(groups.counted.as_ref().unwrap()),
            format!(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT), COUNT(*) FROM group_counts \
                 WHERE user_id = ?Uuid({user}) AND config_id = ?Text(\"cfg\")"
            )
        );
        let any = Listing::groups(user, None, page(0, 5, true));
        assert_eq!(
            render(&any.filter),
            format!(" WHERE g.user_id = ?Uuid({user})")
        );
    }

    #[test]
    fn a_page_past_the_middle_is_read_from_the_other_end() {
        let user = Uuid::nil();
        let chats = |n, size, asc| {
            Listing::chats(
                ChatOwner::Account(user),
                &ChatFilter::default(),
                page(n, size, asc),
            )
        };
        // 95 chats, pages of 10: page 8 holds rows 80..90, the 15 before the last 5.
        let w = chats(8, 10, true).window(95).unwrap();
        assert!(w.reversed);
        assert_eq!(w.order, " ORDER BY start_timestamp DESC, id DESC");
        assert_eq!(render(&w.limit), " LIMIT ?Int(10) OFFSET ?Int(5)");
        assert_eq!(w.arrange(vec![89, 88, 87]), vec![87, 88, 89]);
        // The last page holds 5: read as the first 5 from the end.
        let w = chats(9, 10, false).window(95).unwrap();
        assert!(w.reversed);
        assert_eq!(w.order, " ORDER BY start_timestamp ASC, id ASC");
        assert_eq!(render(&w.limit), " LIMIT ?Int(5) OFFSET ?Int(0)");
        // The middle is read from the start; past the end there is nothing to read.
        assert!(!chats(4, 10, true).window(95).unwrap().reversed);
        assert_eq!(chats(10, 10, true).window(95), None);
        assert_eq!(chats(0, 10, true).window(0), None);
        // Every page of every size, from either end, is the right slice.
        for total in 0..30i64 {
            for size in 1..12u32 {
                for number in 0..(total as u32 / size + 2) {
                    for asc in [true, false] {
                        let all: Vec<i64> = if asc {
                            (0..total).collect()
                        } else {
                            (0..total).rev().collect()
                        };
                        let want: Vec<i64> = all
                            .iter()
                            .copied()
                            .skip((number * size) as usize)
                            .take(size as usize)
                            .collect();
                        let got = match chats(number, size, asc).window(total) {
                            None => vec![],
                            Some(w) => {
                                let (limit, offset) = match &w.limit.0[..] {
                                    [_, Piece::Bind(Value::Int(l)), _, Piece::Bind(Value::Int(o))] => {
                                        (*l, *o)
                                    }
                                    other => panic!("{other:?}"),
                                };
                                let read_asc = w.order.contains("ASC");
                                let from: Vec<i64> = if read_asc {
                                    (0..total).collect()
                                } else {
                                    (0..total).rev().collect()
                                };
                                let rows = from
                                    .into_iter()
                                    .skip(offset as usize)
                                    .take(limit as usize)
                                    .collect();
                                w.arrange(rows)
                            }
                        };
                        assert_eq!(
                            got, want,
                            "total {total} size {size} page {number} asc {asc}"
                        );
                    }
                }
            }
        }
    }

    /// Decodes rows of strings, as SQLite hands back UUIDs.
    struct Strings;

    impl Decode for Strings {
        type Row = Vec<Option<&'static str>>;
        fn uuid(r: &Self::Row, i: usize) -> StoreResult<Uuid> {
            uuid_text(&Self::text(r, i)?)
        }
        fn opt_uuid(r: &Self::Row, i: usize) -> StoreResult<Option<Uuid>> {
            r[i].map(uuid_text).transpose()
        }
        fn text(r: &Self::Row, i: usize) -> StoreResult<String> {
            Self::opt_text(r, i)?.ok_or_else(|| corrupt("null"))
        }
        fn opt_text(r: &Self::Row, i: usize) -> StoreResult<Option<String>> {
            Ok(r[i].map(str::to_string))
        }
        fn int(r: &Self::Row, i: usize) -> StoreResult<i64> {
            Self::opt_int(r, i)?.ok_or_else(|| corrupt("null"))
        }
        fn opt_int(r: &Self::Row, i: usize) -> StoreResult<Option<i64>> {
            r[i].map(|s| s.parse().map_err(corrupt)).transpose()
        }
        fn flag(r: &Self::Row, i: usize) -> StoreResult<bool> {
            Ok(Self::int(r, i)? != 0)
        }
    }

    #[test]
    fn reconstruction_rows_carry_their_failure_kind() {
        let id = "00000000-0000-0000-0000-000000000001";
        let row = |kind: Option<&'static str>| {
            vec![
                Some(id),
                Some(id),
                Some("ERROR"),
                None,
                Some("7"),
                Some("the chat has no audio"),
                kind,
            ]
        };
        for kind in crate::FailureKind::ALL {
            let rec = reconstruction_record::<Strings>(&row(Some(kind.as_str()))).unwrap();
            assert_eq!(rec.error_kind, Some(kind));
        }
        let before = reconstruction_record::<Strings>(&row(None)).unwrap();
        assert_eq!(
            (before.error.as_deref(), before.error_kind),
            (Some("the chat has no audio"), None),
            "a row from before failures had kinds"
        );
        let newer = reconstruction_record::<Strings>(&row(Some("from_the_future"))).unwrap();
        assert_eq!(newer.error_kind, None, "a kind this version does not know");
    }

    #[test]
    fn rows_decode_by_their_column_lists() {
        let id = "00000000-0000-0000-0000-000000000001";
        let job = vec![Some(id), Some(id), Some("2"), Some("10"), None];
        let job = claimed_job::<Strings>(&job, 99).unwrap();
        assert_eq!(
            (job.attempt, job.chat_start_ms, job.chat_end_ms),
            (3, 10, 99)
        );
        let chat = vec![
            Some(id),
            Some(id),
            Some(id),
            Some("USER_ENDED"),
            Some("1"),
            None,
            Some("4"),
            None,
            Some("cfg"),
            None,
        ];
        let chat = chat_record::<Strings>(&chat).unwrap();
        assert_eq!(chat.status, ChatStatus::UserEnded);
        assert_eq!(chat.config_id.as_deref(), Some("cfg"));
        let bad = vec![
            Some(id),
            Some(id),
            Some(id),
            Some("NOPE"),
            Some("1"),
            None,
            Some("4"),
            None,
            None,
            None,
        ];
        assert!(matches!(
            chat_record::<Strings>(&bad),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(uuid_text("x"), Err(StoreError::Corrupt(_))));
        assert_eq!(CHAT_COLUMNS.split(", ").count(), 10);
        assert_eq!(EVENT_COLUMNS.split(", ").count(), 10);
        assert_eq!(RECONSTRUCTION_COLUMNS.split(", ").count(), 7);
        assert_eq!(JOB_COLUMNS.split(", ").count(), 5);
        assert_eq!(PRINCIPAL_COLUMNS.split(", ").count(), 4);
        assert_eq!(API_KEY_COLUMNS.split(", ").count(), 7);
    }
}
