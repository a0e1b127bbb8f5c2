//! Listing a chat group's events in time order without an index on the group.
//!
//! Events are indexed by `(chat_id, seq)` only (migration 0005), so an event insert updates
//! one index. A group's events are ordered by `(timestamp, chat_id, seq)`, as on
//! PostgreSQL. Each chat stores the time span of its events (`first_event_timestamp`,
//! `last_event_timestamp`); chats whose spans do not overlap form separate *runs* that
//! follow each other in time, so a page is read run by run, each through the chat index.
//! Only chats whose spans overlap (several sessions of one group at once) are merged by
//! time in one query.

use crate::db;
use crate::rows::{col, Row};
use colloquy_storage::sql::{self, direction, EVENT_COLUMNS};
use colloquy_storage::{EventRecord, Page, PageRequest, StoreResult};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use uuid::Uuid;

/// One chat's events as the chats table knows them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatSpan {
    pub id: String,
    pub count: i64,
    /// Earliest event timestamp.
    pub first: i64,
    /// Not earlier than the latest event timestamp.
    pub last: i64,
}

/// Chats whose events interleave in time, and how many events they hold together.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Run {
    pub chats: Vec<String>,
    pub count: i64,
}

/// Splits a group's chats into runs in ascending time order: every event of a run comes
/// strictly before every event of the next run. Chats without events are left out.
pub(crate) fn runs(mut spans: Vec<ChatSpan>) -> Vec<Run> {
    spans.retain(|s| s.count > 0);
    spans.sort_by(|a, b| (a.first, &a.id).cmp(&(b.first, &b.id)));
    let mut runs: Vec<Run> = Vec::new();
    let mut run_last = i64::MIN;
    for s in spans {
        match runs.last_mut() {
            // Equal timestamps interleave by chat id, so a tie joins the run too.
            Some(run) if s.first <= run_last => {
                run.chats.push(s.id);
                run.count += s.count;
            }
            _ => runs.push(Run {
                chats: vec![s.id],
                count: s.count,
            }),
        }
        run_last = run_last.max(s.last);
    }
    runs
}

/// One page of the group's events, read in one transaction so that the counts and the
/// rows agree while chats of the group are being written.
pub(crate) async fn page(
    conn: &mut SqliteConnection,
    group_id: Uuid,
    page: PageRequest,
) -> StoreResult<Page<EventRecord>> {
    let spans = sqlx::query(
        "SELECT id, event_count, first_event_timestamp, last_event_timestamp \
         FROM chats WHERE chat_group_id = ? AND event_count > 0",
    )
    .bind(group_id.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?
    .iter()
    .map(|r| {
        let last: i64 = col(r, 3)?;
        Ok(ChatSpan {
            id: col(r, 0)?,
            count: col(r, 1)?,
            first: col::<Option<i64>>(r, 2)?.unwrap_or(i64::MIN),
            last,
        })
    })
    .collect::<StoreResult<Vec<_>>>()?;
    let mut runs = runs(spans);
    let total: i64 = runs.iter().map(|r| r.count).sum();
    if !page.ascending {
        runs.reverse();
    }

    let d = direction(page.ascending);
    let mut skip = page.offset();
    let mut want = i64::from(page.size);
    let mut items = Vec::new();
    for run in &runs {
        if want == 0 {
            break;
        }
        if skip >= run.count {
            skip -= run.count;
            continue;
        }
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {EVENT_COLUMNS} FROM chat_events WHERE chat_id IN ("
        ));
        let mut ids = qb.separated(", ");
        for id in &run.chats {
            ids.push_bind(id.as_str());
        }
        qb.push(format!(
            ") ORDER BY timestamp {d}, chat_id {d}, seq {d} LIMIT "
        ))
        .push_bind(want)
        .push(" OFFSET ")
        .push_bind(skip);
        let rows = qb.build().fetch_all(&mut *conn).await.map_err(db)?;
        want -= rows.len() as i64;
        skip = 0;
        for r in &rows {
            items.push(sql::event_record::<Row>(r)?);
        }
    }
    Ok(Page {
        items,
        total: total as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, count: i64, first: i64, last: i64) -> ChatSpan {
        ChatSpan {
            id: id.into(),
            count,
            first,
            last,
        }
    }

    fn ids(runs: &[Run]) -> Vec<Vec<&str>> {
        runs.iter()
            .map(|r| r.chats.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn chats_one_after_another_are_separate_runs_in_time_order() {
        let r = runs(vec![
            span("b", 3, 200, 300),
            span("a", 2, 100, 150),
            span("c", 4, 301, 400),
        ]);
        assert_eq!(ids(&r), vec![vec!["a"], vec!["b"], vec!["c"]]);
        assert_eq!(r.iter().map(|r| r.count).collect::<Vec<_>>(), vec![2, 3, 4]);
    }

    #[test]
    fn overlapping_and_touching_chats_share_a_run() {
        // b starts inside a; c starts exactly when b ends (a tie); d is later.
        let r = runs(vec![
            span("a", 1, 100, 250),
            span("b", 1, 200, 300),
            span("c", 1, 300, 310),
            span("d", 1, 311, 320),
        ]);
        assert_eq!(ids(&r), vec![vec!["a", "b", "c"], vec!["d"]]);
    }

    #[test]
    fn a_long_chat_swallows_the_chats_inside_its_span() {
        // b and c both lie within a, even though b ends before c starts.
        let r = runs(vec![
            span("a", 5, 0, 1000),
            span("b", 1, 10, 20),
            span("c", 1, 30, 40),
            span("d", 1, 2000, 2001),
        ]);
        assert_eq!(ids(&r), vec![vec!["a", "b", "c"], vec!["d"]]);
        assert_eq!(r[0].count, 7);
    }

    #[test]
    fn chats_without_events_are_left_out() {
        let r = runs(vec![span("a", 0, i64::MIN, 5), span("b", 2, 10, 20)]);
        assert_eq!(ids(&r), vec![vec!["b"]]);
    }
}
