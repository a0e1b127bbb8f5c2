//! Deep pages of an account's chats and groups, found through counts per span of time.
//!
//! The database keeps, in the same transaction as the rows, how many chats (groups) an
//! account has in each bucket of start time, at three levels of span
//! ([`BUCKET_SHIFTS`]: 2^34 ms ≈ 199 days, 2^27 ms ≈ 1.6 days, 2^20 ms ≈ 17.5 minutes),
//! per status and config (migrations `list_buckets`). A page deep in a listing is found by
//! walking down them: the top level's buckets are added up in order until the one that
//! holds the page's first row, then that bucket's 128 children, then theirs, all in one
//! statement; the rows themselves are read from the start of the last bucket found,
//! skipping only the rows before the page inside it. What that costs grows with the
//! account's age in years and with how many chats one 17.5-minute span holds, not with how
//! many chats come before the page (docs/decisions.md, "Deep pages").

use super::{direction, Clause, Value, Window};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// How far right a start time (ms) is shifted to give its bucket at each level, the
/// widest first. Levels are numbered from the narrowest (0) up.
pub const BUCKET_SHIFTS: [i64; 3] = [34, 27, 20];

/// A page is found through the buckets only when more rows than this lie between it and
/// both ends of its listing: skipping this many inside the ordering index costs about
/// what the three reads of the counts do (docs/benchmarks.md, session 9).
pub const DESCEND_AFTER: i64 = 8_000;

/// [`DESCEND_AFTER`], or what a test set ([`descend_after_for_tests`]).
static THRESHOLD: AtomicI64 = AtomicI64::new(DESCEND_AFTER);

/// How many rows from both ends a page must lie to be found through the buckets.
pub fn descend_after() -> i64 {
    THRESHOLD.load(Ordering::Relaxed)
}

/// Lowers (or raises) [`descend_after`] for this process, so that tests walk the buckets
/// on a few thousand rows. Only where a page is read from changes, never what it holds.
#[cfg(any(test, feature = "test-support"))]
pub fn descend_after_for_tests(rows: i64) {
    THRESHOLD.store(rows, Ordering::Relaxed);
}

/// The maintained counts per bucket of a listing: which table, the listing's filter as
/// that table's keys, and the ordering column the buckets span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    /// `chat_buckets` or `group_buckets`.
    pub table: &'static str,
    /// ` WHERE user_id = … [AND status = …] [AND config_id = …]`.
    pub keys: Clause,
    /// The listing's time column (`start_timestamp`, `g.first_start_timestamp`).
    pub column: &'static str,
    /// The table's columns that, with the bucket, make a row's key (`status, config_id`).
    pub key_columns: &'static str,
}

/// The walk down the buckets to one page, in one statement: [`Descent::statement`] reads
/// every level (each narrowed to the children of the bucket the level above found), and
/// [`Descent::window`] takes its rows ([`LevelRow`]) and gives where the page is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descent {
    buckets: Buckets,
    /// The listing's ordering columns; the first is `buckets.column`.
    keys: Vec<&'static str>,
    /// The order in which the walk goes (the page's order, or the opposite one when the
    /// page is nearer the end).
    ascending: bool,
    /// Rows to skip from the start of the listing (in the walk's order).
    skip: i64,
    /// Rows of the page.
    limit: i64,
    /// The rows come in the opposite order of the listing's.
    reversed: bool,
}

/// Walks given up in this process so far ([`lost_descents`]).
static LOST: AtomicU64 = AtomicU64::new(0);

/// How many walks this process gave up because the counts did not hold their page. The
/// counts change in the same transactions as the rows and the walk reads them in one
/// statement, so only a write between the read of the listing's total and the walk (or
/// counts that were wrong) can do that; the conformance suite checks that its deep pages
/// lose none.
pub fn lost_descents() -> u64 {
    LOST.load(Ordering::Relaxed)
}

/// One level of a walk, as [`Descent::statement`] gives it: the level, the bucket that
/// holds the page's first row, the rows before the page inside that bucket (in the walk's
/// order), how many stored rows of counts the level added up, and how many rows they
/// made once added up per key (a backend that folds change rows compares the two).
pub type LevelRow = (i64, i64, i64, i64, i64);

/// The names of one level's parts of [`Descent::statement`]: the counts per bucket and
/// key, per bucket with how many rows lie up to each, and the bucket found.
const LEVEL_PARTS: [[&str; 3]; 3] = [["k2", "u2", "f2"], ["k1", "u1", "f1"], ["k0", "u0", "f0"]];
const _: () = assert!(LEVEL_PARTS.len() == BUCKET_SHIFTS.len());

impl Descent {
    pub(crate) fn new(
        buckets: Buckets,
        keys: Vec<&'static str>,
        ascending: bool,
        skip: i64,
        limit: i64,
        reversed: bool,
    ) -> Self {
        Self {
            buckets,
            keys,
            ascending,
            skip,
            limit,
            reversed,
        }
    }

    /// The table the walk reads.
    pub fn table(&self) -> &'static str {
        self.buckets.table
    }

    /// The level read `i`-th ([`BUCKET_SHIFTS`]'s index).
    fn level(i: usize) -> i64 {
        (BUCKET_SHIFTS.len() - 1 - i) as i64
    }

    /// The whole walk as one statement (one round trip, one snapshot of the counts): one
    /// [`LevelRow`] per level, the widest first. Each level adds up its counts per bucket
    /// in the walk's order and keeps the first bucket whose running total passes the rows
    /// still to skip; the next level reads only that bucket's children. A level that finds
    /// nothing (the counts do not hold the page) ends the rows early.
    pub fn statement(&self) -> Clause {
        let order = direction(self.ascending);
        let mut c = Clause::default();
        c.sql("WITH ");
        for (i, [counted, upto, found]) in LEVEL_PARTS.iter().enumerate() {
            if i > 0 {
                c.sql(", ");
            }
            // The level's counts in its range, added up per bucket and key.
            c.sql(counted)
                .sql(" AS (SELECT bucket, SUM(n) AS n, COUNT(*) AS stored FROM ")
                .sql(self.buckets.table);
            c.0.extend(self.buckets.keys.0.iter().cloned());
            c.and("level", " = ", Value::Int(Self::level(i)));
            if i > 0 {
                let above = LEVEL_PARTS[i - 1][2];
                let width = Value::Int(1 << (BUCKET_SHIFTS[i - 1] - BUCKET_SHIFTS[i]));
                c.sql(" AND bucket >= (SELECT found * ")
                    .bind(width.clone())
                    .sql(" FROM ")
                    .sql(above)
                    .sql(") AND bucket < (SELECT (found + 1) * ")
                    .bind(width)
                    .sql(" FROM ")
                    .sql(above)
                    .sql(")");
            }
            c.sql(" GROUP BY bucket, ")
                .sql(self.buckets.key_columns)
                .sql("), ");
            // Its buckets that hold rows, with the rows up to each one's end.
            c.sql(upto)
                .sql(" AS (SELECT bucket, n, CAST(SUM(n) OVER (ORDER BY bucket ")
                .sql(order)
                .sql(" ROWS UNBOUNDED PRECEDING) AS BIGINT) AS upto FROM (SELECT bucket, CAST(SUM(n) AS BIGINT) AS n FROM ")
                .sql(counted)
                .sql(" GROUP BY bucket HAVING SUM(n) > 0) AS b), ");
            // The first whose rows reach past the rows to skip, and what is left to skip.
            let mut to_skip = Clause::default();
            if i == 0 {
                to_skip.bind(Value::Int(self.skip));
            } else {
                to_skip
                    .sql("(SELECT skip FROM ")
                    .sql(LEVEL_PARTS[i - 1][2])
                    .sql(")");
            }
            c.sql(found).sql(" AS (SELECT bucket AS found, ");
            c.0.extend(to_skip.0.iter().cloned());
            c.sql(" - (upto - n) AS skip FROM ")
                .sql(upto)
                .sql(" WHERE upto > ");
            c.0.extend(to_skip.0);
            c.sql(" ORDER BY bucket ").sql(order).sql(" LIMIT 1)");
        }
        for (i, [counted, _, found]) in LEVEL_PARTS.iter().enumerate() {
            c.sql(if i == 0 { " " } else { " UNION ALL " })
                .sql("SELECT CAST(")
                .bind(Value::Int(Self::level(i)))
                .sql(" AS BIGINT) AS level, found, skip, (SELECT CAST(COALESCE(SUM(stored), 0) AS BIGINT) FROM ")
                .sql(counted)
                .sql("), (SELECT CAST(COUNT(*) AS BIGINT) FROM ")
                .sql(counted)
                .sql(") FROM ")
                .sql(found);
        }
        c.sql(" ORDER BY level DESC");
        c
    }

    /// The buckets each level of `rows` read, inclusive, as (level, first, last): all of
    /// them at the top, then the children of the bucket found above.
    pub fn ranges(rows: &[LevelRow]) -> Vec<(i64, i64, i64)> {
        let mut range = (i64::MIN, i64::MAX);
        let mut out = Vec::new();
        for (i, row) in rows.iter().enumerate().take(BUCKET_SHIFTS.len()) {
            out.push((row.0, range.0, range.1));
            if let Some(&shift) = BUCKET_SHIFTS.get(i + 1) {
                let width = BUCKET_SHIFTS[i] - shift;
                range = (row.1 << width, ((row.1 + 1) << width) - 1);
            }
        }
        out
    }

    /// The page's window from the rows of [`Descent::statement`]: from the start of the
    /// narrowest bucket found, skipping the rows before the page inside it. `None` when
    /// the counts did not hold the page (a level found nothing): read it the ordinary way.
    pub fn window(&self, rows: &[LevelRow]) -> Option<Window> {
        let levels_found = rows.len() == BUCKET_SHIFTS.len()
            && rows
                .iter()
                .enumerate()
                .all(|(i, r)| r.0 == Self::level(i) && r.2 >= 0);
        if !levels_found {
            LOST.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let &(_, bucket, skip, _, _) = rows.last()?;
        let shift = BUCKET_SHIFTS[BUCKET_SHIFTS.len() - 1];
        let mut bound = Clause::default();
        bound.sql(" AND ").sql(self.buckets.column);
        if self.ascending {
            bound.sql(" >= ").bind(Value::Int(bucket << shift));
        } else {
            bound.sql(" < ").bind(Value::Int((bucket + 1) << shift));
        }
        Some(Window::new(
            &self.keys,
            self.ascending,
            bound,
            self.limit,
            skip,
            self.reversed,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{ChatOwner, Listing, Piece};
    use crate::{ChatFilter, PageRequest};
    use uuid::Uuid;

    /// What the tests lower [`descend_after`] to.
    const TEST_DESCEND_AFTER: i64 = 2_000;

    fn ints(c: &Clause) -> Vec<i64> {
        c.0.iter()
            .filter_map(|p| match p {
                Piece::Bind(Value::Int(n)) => Some(*n),
                _ => None,
            })
            .collect()
    }

    /// The statement reads the levels widest first, each narrowed by the one above; its
    /// rows give the window from the narrowest bucket found, and the ranges each level read.
    /// (The walk itself runs on a real database: `colloquy-storage-sqlite`'s
    /// `the_walk_finds_every_deep_page`, and the conformance suite's `deep_pages`.)
    #[test]
    fn one_statement_reads_every_level() {
        descend_after_for_tests(TEST_DESCEND_AFTER);
        let listing = Listing::chats(
            ChatOwner::Account(Uuid::nil()),
            &ChatFilter::default(),
            PageRequest {
                number: 400,
                size: 10,
                ascending: false,
            },
        );
        let d = listing.descent(10_000).expect("deep");
        let q = d.statement();
        // Levels 2, 1, 0; the skip twice at the top; 128 children twice below; the levels
        // of the rows.
        assert_eq!(
            ints(&q),
            vec![2, 4_000, 4_000, 1, 128, 128, 0, 128, 128, 2, 1, 0]
        );
        let text: String =
            q.0.iter()
                .filter_map(|p| match p {
                    Piece::Sql(s) => Some(*s),
                    _ => None,
                })
                .collect();
        assert!(text.contains("ORDER BY bucket DESC"), "{text}");
        let rows: Vec<LevelRow> = vec![
            (2, 100, 3_000, 5, 2),
            (1, 12_805, 700, 90, 40),
            (0, 1_639_100, 4, 130, 128),
        ];
        assert_eq!(
            Descent::ranges(&rows),
            vec![
                (2, i64::MIN, i64::MAX),
                (1, 100 << 7, (101 << 7) - 1),
                (0, 12_805 << 7, (12_806 << 7) - 1)
            ]
        );
        let w = d.window(&rows).expect("found");
        assert_eq!(ints(&w.bound), vec![(1_639_100 + 1) << 20]);
        assert_eq!(ints(&w.limit), vec![10, 4]);
        assert!(w.order.starts_with(" ORDER BY start_timestamp DESC"));
    }

    /// Counts that no longer hold the page (a level found nothing) give no window: the
    /// page is read the ordinary way.
    #[test]
    fn counts_short_of_the_page_are_lost() {
        descend_after_for_tests(TEST_DESCEND_AFTER);
        let listing = Listing::groups(
            Uuid::nil(),
            None,
            PageRequest {
                number: 300,
                size: 10,
                ascending: true,
            },
        );
        let d = listing.descent(10_000).expect("deep");
        assert_eq!(d.table(), "group_buckets");
        let lost = lost_descents();
        assert_eq!(d.window(&[(2, 1, 1_500, 3, 3), (1, 130, 20, 9, 9)]), None);
        assert_eq!(d.window(&[]), None);
        assert!(lost_descents() >= lost + 2);
        // Near either end the ordinary window is read.
        let first = Listing::groups(
            Uuid::nil(),
            None,
            PageRequest {
                number: 5,
                size: 10,
                ascending: true,
            },
        );
        assert_eq!(first.descent(10_000), None);
    }
}
