//! Deep pages of an account's chats and groups, found through counts per span of time.
//!
//! The database keeps, in the same transaction as the rows, how many chats (groups) an
//! account has in each bucket of start time, at three levels of span
//! ([`BUCKET_SHIFTS`]: 2^34 ms ≈ 199 days, 2^27 ms ≈ 1.6 days, 2^20 ms ≈ 17.5 minutes),
//! per status and config (migrations `list_buckets`). A page deep in a listing is found by
//! walking down them: the top level's buckets are added up in order until the one that
//! holds the page's first row, then that bucket's 128 children, then theirs; the rows
//! themselves are read from the start of the last bucket found, skipping only the rows
//! before the page inside it. What that costs grows with the account's age in years and
//! with how many chats one 17.5-minute span holds, not with how many chats come before
//! the page (docs/decisions.md, "Deep pages").

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

/// The walk down the buckets to one page: ask [`Descent::query`], hand its rows to
/// [`Descent::take`], until `query` gives `None`; then [`Descent::window`] reads the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descent {
    buckets: Buckets,
    /// The listing's ordering columns; the first is `buckets.column`.
    keys: Vec<&'static str>,
    /// The order in which the walk goes (the page's order, or the opposite one when the
    /// page is nearer the end).
    ascending: bool,
    /// Rows still to skip, from the start of the current range.
    skip: i64,
    /// Rows of the page.
    limit: i64,
    /// The rows come in the opposite order of the listing's.
    reversed: bool,
    /// Index into [`BUCKET_SHIFTS`] of the next level to read.
    next: usize,
    /// The buckets of that level to read (inclusive); `None` at the top: all of them.
    range: Option<(i64, i64)>,
    /// The bucket found at the last level read.
    found: Option<i64>,
    /// The counts did not hold the page (they changed between reads): read the page the
    /// ordinary way.
    lost: bool,
}

/// Walks given up in this process so far ([`lost_descents`]).
static LOST: AtomicU64 = AtomicU64::new(0);

/// How many walks this process gave up because the counts did not hold their page. The
/// counts change in the same transactions as the rows, so only a write between a walk's
/// reads can do that; the conformance suite checks that its deep pages lose none (counts
/// that were wrong would show here, not in the pages).
pub fn lost_descents() -> u64 {
    LOST.load(Ordering::Relaxed)
}

/// One row of a level's read: a bucket, its count and how many stored rows made it up.
pub type BucketRow = (i64, i64, i64);

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
            next: 0,
            range: None,
            found: None,
            lost: false,
        }
    }

    /// The table the walk reads.
    pub fn table(&self) -> &'static str {
        self.buckets.table
    }

    /// The level and range of buckets the next [`Descent::query`] reads (for a backend
    /// that folds what it read, [`Descent::take`]'s third column).
    pub fn reading(&self) -> (i64, i64, i64) {
        let (lo, hi) = self.range.unwrap_or((i64::MIN, i64::MAX));
        (self.level(), lo, hi)
    }

    fn level(&self) -> i64 {
        (BUCKET_SHIFTS.len() - 1 - self.next) as i64
    }

    /// The next level's read in the walk's order, one row per key of the table (bucket,
    /// count, how many stored rows made it up), or `None` when the walk is over.
    pub fn query(&self) -> Option<Clause> {
        if self.lost || self.next == BUCKET_SHIFTS.len() {
            return None;
        }
        let mut c = Clause::default();
        c.sql("SELECT bucket, CAST(SUM(n) AS BIGINT), CAST(COUNT(*) AS BIGINT) FROM ")
            .sql(self.buckets.table);
        c.0.extend(self.buckets.keys.0.iter().cloned());
        c.and("level", " = ", Value::Int(self.level()));
        if let Some((lo, hi)) = self.range {
            c.and("bucket", " >= ", Value::Int(lo))
                .and("bucket", " <= ", Value::Int(hi));
        }
        c.sql(" GROUP BY bucket, ")
            .sql(self.buckets.key_columns)
            .sql(" ORDER BY bucket ")
            .sql(direction(self.ascending));
        Some(c)
    }

    /// Takes the rows of [`Descent::query`] (a bucket's keys are adjacent): finds the
    /// bucket that holds the page's first row and narrows the next read to its children.
    pub fn take(&mut self, rows: &[BucketRow]) {
        let mut found = None;
        let mut keys = rows.iter().peekable();
        while let Some(&(bucket, first, _)) = keys.next() {
            let mut n = first;
            while let Some(&(_, more, _)) = keys.next_if(|r| r.0 == bucket) {
                n += more;
            }
            if n <= 0 {
                continue;
            }
            if self.skip < n {
                found = Some(bucket);
                break;
            }
            self.skip -= n;
        }
        let Some(bucket) = found else {
            self.lost = true;
            LOST.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.found = Some(bucket);
        self.next += 1;
        if let Some(&shift) = BUCKET_SHIFTS.get(self.next) {
            let width = BUCKET_SHIFTS[self.next - 1] - shift;
            self.range = Some((bucket << width, ((bucket + 1) << width) - 1));
        }
    }

    /// The page's window once the walk is over: from the start of the last bucket found,
    /// skipping the rows before the page inside it. `None` when the counts did not hold
    /// the page.
    pub fn window(&self) -> Option<Window> {
        if self.lost || self.next != BUCKET_SHIFTS.len() {
            return None;
        }
        let bucket = self.found?;
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
            self.skip,
            self.reversed,
        ))
    }
}

/// Walks a [`Descent`] with `read` (which runs a level's query and returns its rows) and
/// gives the page's window; `None` when the counts did not hold the page.
pub async fn descend<F, Fut, E>(mut descent: Descent, mut read: F) -> Result<Option<Window>, E>
where
    F: FnMut(Clause, (i64, i64, i64)) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<BucketRow>, E>>,
{
    while let Some(q) = descent.query() {
        let rows = read(q, descent.reading()).await?;
        descent.take(&rows);
    }
    Ok(descent.window())
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

    /// The walk, against bucket counts made from `rows` (start times, in listing order by
    /// (time, index)), lands on exactly the page that skipping would.
    #[test]
    fn the_walk_finds_every_deep_page() {
        descend_after_for_tests(TEST_DESCEND_AFTER);
        // Start times over ~3 years, a burst in one bucket with ties, sorted as a listing.
        let mut times: Vec<i64> = (0..9_000i64)
            .map(|i| {
                if i % 4 == 0 {
                    1_700_000_000_000 + (i % 13)
                } else {
                    1_700_000_000_000 + (i.wrapping_mul(2_654_435_761) % (1 << 36))
                }
            })
            .collect();
        times.sort();
        let total = times.len() as i64;
        let counts = |level: i64, lo: i64, hi: i64, ascending: bool| -> Vec<BucketRow> {
            let shift = BUCKET_SHIFTS[BUCKET_SHIFTS.len() - 1 - level as usize];
            let mut m = std::collections::BTreeMap::<i64, i64>::new();
            for t in &times {
                let b = t >> shift;
                if (lo..=hi).contains(&b) {
                    *m.entry(b).or_default() += 1;
                }
            }
            // Two keys per bucket (as statuses would be), one of them sometimes empty.
            let mut v: Vec<BucketRow> = m
                .into_iter()
                .flat_map(|(b, n)| [(b, n / 3, 1), (b, n - n / 3, 2)])
                .collect();
            if !ascending {
                v.reverse();
            }
            v
        };
        let mut walked = 0;
        for (number, size) in [(500, 10), (449, 10), (4_000, 1), (3, 2_100), (80, 100)] {
            for ascending in [true, false] {
                let listing = Listing::chats(
                    ChatOwner::Account(Uuid::nil()),
                    &ChatFilter::default(),
                    PageRequest {
                        number,
                        size,
                        ascending,
                    },
                );
                let Some(mut d) = listing.descent(total) else {
                    continue;
                };
                walked += 1;
                let mut reads = 0;
                while let Some(q) = d.query() {
                    reads += 1;
                    let (level, lo, hi) = d.reading();
                    assert_eq!(ints(&q)[0], level, "the query reads its level");
                    let rows = counts(level, lo, hi, d.ascending);
                    d.take(&rows);
                }
                assert_eq!(reads, BUCKET_SHIFTS.len());
                let w = d.window().expect("the counts hold the page");
                let from = ints(&w.bound)[0];
                let (limit, skip) = (ints(&w.limit)[0], ints(&w.limit)[1]);
                let read_asc = w.order.starts_with(" ORDER BY start_timestamp ASC");
                let mut rows: Vec<i64> = if read_asc {
                    times.iter().copied().filter(|t| *t >= from).collect()
                } else {
                    times.iter().rev().copied().filter(|t| *t < from).collect()
                };
                rows = rows
                    .into_iter()
                    .skip(skip as usize)
                    .take(limit as usize)
                    .collect();
                let got = w.arrange(rows);
                let mut all = times.clone();
                if !ascending {
                    all.reverse();
                }
                let offset = number as usize * size as usize;
                let want: Vec<i64> = all.into_iter().skip(offset).take(size as usize).collect();
                assert_eq!(got, want, "page {number} of {size}, ascending {ascending}");
                assert!(skip < 2_500, "skips inside one bucket only ({skip})");
            }
        }
        assert!(walked >= 6);
        // Near either end the ordinary window is read.
        let first = Listing::chats(
            ChatOwner::Account(Uuid::nil()),
            &ChatFilter::default(),
            PageRequest {
                number: 5,
                size: 10,
                ascending: true,
            },
        );
        assert_eq!(first.descent(total), None);
    }

    /// Counts that no longer hold the page (changed between reads) give no window: the
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
        let mut d = listing.descent(10_000).expect("deep");
        assert_eq!(d.table(), "group_buckets");
        d.take(&[(1, 1_500, 1), (1, 500, 2), (2, 0, 3)]);
        assert_eq!(d.query(), None);
        assert_eq!(d.window(), None);
    }
}
