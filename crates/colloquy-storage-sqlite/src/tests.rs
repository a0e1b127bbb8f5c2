//! SQLite's own tests, and the conformance suite on a fresh database file per scenario.

use super::*;
use crate::writes::padded;
use colloquy_storage::conformance::{event, new_account, page, start_chat};
use colloquy_wire::{EventRole, EventType};
use std::sync::Arc;

#[test]
fn batches_are_written_by_statements_of_power_of_two_rows() {
    let shapes = |n: usize| {
        let items: Vec<usize> = (0..n).collect();
        let parts: Vec<(&[usize], usize)> = padded(&items).collect();
        let flat: Vec<usize> = parts.iter().flat_map(|(c, _)| c.iter().copied()).collect();
        assert_eq!(flat, items, "every item once, in order");
        parts
            .iter()
            .map(|(c, rows)| (c.len(), *rows))
            .collect::<Vec<_>>()
    };
    assert_eq!(shapes(0), vec![]);
    assert_eq!(shapes(1), vec![(1, 1)]);
    assert_eq!(shapes(100), vec![(100, 128)]);
    assert_eq!(shapes(256), vec![(256, 256)]);
    assert_eq!(shapes(600), vec![(256, 256), (256, 256), (88, 128)]);
}

#[tokio::test]
async fn an_in_memory_database_is_refused() {
    for url in [
        "sqlite::memory:",
        "sqlite://:memory:",
        "sqlite://x.db?mode=memory",
    ] {
        assert!(is_in_memory_url(url), "{url}");
        let err = SqliteStore::open(url, &SqliteSettings::default())
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("in-memory"), "{url}: {err}");
    }
    assert!(!is_in_memory_url("sqlite://./memory.db?mode=rwc"));
    assert!(!is_in_memory_url("sqlite:x.db"));
}

/// A fresh database file for each scenario of the conformance suite.
mod conformance {
    use super::*;
    use colloquy_storage::conformance::Scenario;

    async fn run(scenario: Scenario) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let store = SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .unwrap();
        scenario(&store).await;
        store.close().await;
    }

    colloquy_storage::conformance_tests!(#[tokio::test] run: run);
}

/// The bucket counts of deep pages are exactly the chats' and groups' own after every
/// kind of change (the pages alone would not show counts that are too low).
#[tokio::test]
async fn bucket_counts_match_the_rows_they_count() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = SqliteStore::open(&url, &SqliteSettings::default())
        .await
        .unwrap();
    colloquy_storage::conformance::scenarios::deep_pages(&store).await;
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chat_buckets")
        .fetch_one(&store.read)
        .await
        .unwrap();
    assert!(kept > 1_000, "{kept}");
    let wrong: i64 = sqlx::query_scalar(colloquy_storage::conformance::BUCKET_MISMATCHES)
        .fetch_one(&store.read)
        .await
        .unwrap();
    assert_eq!(wrong, 0);
    store.close().await;
}

#[tokio::test]
async fn batches_flush_the_wal_themselves_and_reopening_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = SqliteStore::open(&url, &SqliteSettings::default())
        .await
        .unwrap();
    new_account(&store, true).await;
    // Batches commit with NORMAL on the writer thread's connection and flush the WAL
    // themselves; every other write keeps FULL.
    assert_eq!(store.batching(), Batching::Store);
    let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&store.write)
        .await
        .unwrap();
    assert_eq!(level, 2, "writes other than batches are FULL");
    // Reopening applies no migration twice and keeps the data.
    store.close().await;
    let again = SqliteStore::open(&url, &SqliteSettings::default())
        .await
        .unwrap();
    assert!(again.count_accounts().await.unwrap() > 0);
}

/// Batches queued at the writer while it is busy commit in one transaction; when that
/// transaction fails, each batch runs alone, so only the failing one is refused.
#[tokio::test]
async fn batches_queued_behind_a_transaction_commit_together_and_fail_alone() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let store = Arc::new(
        SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .unwrap(),
    );
    let who = new_account(&*store, true).await;
    let mut chats = Vec::new();
    for _ in 0..6 {
        let group = GroupChoice::New(Uuid::new_v4());
        chats.push(
            start_chat(&*store, &who, group, 1, None, Uuid::new_v4())
                .await
                .0,
        );
    }
    let say = |chat_id: Uuid, seq: i64| {
        vec![WriteOp::AppendEvents {
            api_key_id: who.api_key_id,
            chat_id,
            events: vec![event(
                seq,
                2,
                EventRole::User,
                EventType::UserMessage,
                &format!("hello {chat_id}"),
            )],
        }]
    };
    for bad in [None, Some(3)] {
        // Another connection holds the write lock: the writer's first transaction waits
        // for it, and the other batches queue behind.
        let mut blocker = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut blocker)
            .await
            .unwrap();
        let before = store.writer.transactions();
        let seq = if bad.is_some() { 2 } else { 1 };
        let mut calls = Vec::new();
        for (i, &chat) in chats.iter().enumerate() {
            // Seq 0 is the chat's start: a duplicate that fails its transaction.
            let ops = say(chat, if bad == Some(i) { 0 } else { seq });
            let store = store.clone();
            calls.push(tokio::spawn(async move { store.apply_batch(&ops).await }));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
        for (i, call) in calls.into_iter().enumerate() {
            let outcome = call.await.unwrap();
            if bad == Some(i) {
                assert!(outcome.is_err(), "batch {i}: {outcome:?}");
            } else {
                assert_eq!(outcome.unwrap(), vec![OpOutcome::Applied], "batch {i}");
            }
        }
        let transactions = store.writer.transactions() - before;
        match bad {
            // The first batch alone, then the five queued behind it together.
            None => assert_eq!(transactions, 2),
            // ... and when those five fail together, each of them again alone.
            Some(_) => assert_eq!(transactions, 2 + 5),
        }
        for (i, &chat) in chats.iter().enumerate() {
            let events = store
                .list_chat_events(chat, page(0, 10, true))
                .await
                .unwrap();
            let expected = if bad == Some(i) { seq } else { seq + 1 };
            assert_eq!(events.items.len() as i64, expected, "chat {i}");
        }
    }
    Arc::try_unwrap(store).ok().unwrap().close().await;
}

/// A database written before migration 0005 (events indexed by group) opens with each
/// chat's event time span filled in, and its group's events list in time order.
#[tokio::test]
async fn migration_0005_fills_in_the_chats_event_spans() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let mut conn = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true),
    )
    .await
    .unwrap();
    let old = sqlx::migrate::Migrator {
        migrations: MIGRATOR
            .iter()
            .filter(|m| m.version < 5)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    old.run(&mut conn).await.unwrap();
    let (g, c1, c2) = (Uuid::new_v4(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO chat_groups (id, user_id, first_start_timestamp, \
         most_recent_start_timestamp, num_chats) VALUES (?, 'u', 100, 150, 2)",
    )
    .bind(g.to_string())
    .execute(&mut conn)
    .await
    .unwrap();
    // c2 starts while c1 is still going; c1's stored last_event_timestamp lags behind.
    for (c, start, count, last) in [(c1, 100, 3, 100), (c2, 150, 2, 160)] {
        sqlx::query(
            "INSERT INTO chats (id, user_id, chat_group_id, status, start_timestamp, \
             last_event_timestamp, event_count) VALUES (?, 'u', ?, 'USER_ENDED', ?, ?, ?)",
        )
        .bind(c.to_string())
        .bind(g.to_string())
        .bind(start)
        .bind(last)
        .bind(count)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    for (c, seq, ts) in [
        (c1, 0, 100),
        (c1, 1, 155),
        (c1, 2, 170),
        (c2, 0, 150),
        (c2, 1, 160),
    ] {
        sqlx::query(
            "INSERT INTO chat_events (id, chat_id, seq, chat_group_id, timestamp, role, type) \
             VALUES (?, ?, ?, ?, ?, 'USER', 'USER_MESSAGE')",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(c.to_string())
        .bind(seq)
        .bind(g.to_string())
        .bind(ts)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();

    let store = SqliteStore::open(&url, &SqliteSettings::default())
        .await
        .unwrap();
    let spans: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT id, first_event_timestamp, last_event_timestamp FROM chats ORDER BY id",
    )
    .fetch_all(&store.read)
    .await
    .unwrap();
    assert_eq!(
        spans,
        vec![(c1.to_string(), 100, 170), (c2.to_string(), 150, 160)]
    );
    let events = store.list_group_events(g, page(0, 10, true)).await.unwrap();
    assert_eq!(events.total, 5);
    assert_eq!(
        events
            .items
            .iter()
            .map(|e| (e.timestamp, e.chat_id))
            .collect::<Vec<_>>(),
        vec![(100, c1), (150, c2), (155, c1), (160, c2), (170, c1)]
    );
}

#[tokio::test]
async fn the_wal_is_checkpointed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::open(&url, &SqliteSettings::default())
        .await
        .unwrap();
    let who = new_account(&store, true).await;
    tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
    let before = std::fs::metadata(&path).unwrap().len();
    // A few hundred pages: far below the writer's own autocheckpoint threshold.
    let (chat, _) = start_chat(
        &store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1,
        None,
        Uuid::new_v4(),
    )
    .await;
    let events: Vec<NewEvent> = (1..=2_000)
        .map(|seq| NewEvent {
            id: Uuid::now_v7(),
            seq,
            timestamp: seq,
            role: colloquy_wire::EventRole::User,
            event_type: colloquy_wire::EventType::UserMessage,
            message_text: Some(format!("message number {seq} with some words in it")),
            emotion_features: None,
            metadata: None,
            related_event_id: None,
        })
        .collect();
    store
        .apply_batch(&[WriteOp::AppendEvents {
            api_key_id: who.api_key_id,
            chat_id: chat,
            events,
        }])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = std::fs::metadata(&path).unwrap().len();
        if now > before + 100_000 {
            break; // the events reached the database file, not only the WAL
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {now} bytes (was {before}): no background checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.close().await;
}

/// Batches commit on the writer thread's connection while other writes use sqlx's:
/// every transaction takes the write lock up front (`BEGIN IMMEDIATE`), so one that
/// reads before it writes (deleting chats) waits for the other connection instead of
/// failing with SQLITE_BUSY when a batch commits in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_other_writes_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = Arc::new(
        SqliteStore::open(&url, &SqliteSettings::default())
            .await
            .unwrap(),
    );
    let who = new_account(&*store, true).await;
    let instance = Uuid::new_v4();
    let (busy, _) = start_chat(
        &*store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1,
        None,
        instance,
    )
    .await;
    let mut doomed = Vec::new();
    for i in 0..60 {
        let group = GroupChoice::New(Uuid::new_v4());
        doomed.push(
            start_chat(&*store, &who, group, 10 + i, None, instance)
                .await
                .0,
        );
    }
    let event = |seq: i64| NewEvent {
        id: Uuid::now_v7(),
        seq,
        timestamp: 1_000 + seq,
        role: EventRole::User,
        event_type: EventType::UserMessage,
        message_text: Some(format!("words of message {seq}")),
        emotion_features: None,
        metadata: None,
        related_event_id: None,
    };
    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            // start_chat stored seq 0.
            for round in 0..300i64 {
                let events = (1..=4).map(|k| event(round * 4 + k)).collect();
                let out = store
                    .apply_batch(&[WriteOp::AppendEvents {
                        api_key_id: who.api_key_id,
                        chat_id: busy,
                        events,
                    }])
                    .await
                    .expect("a batch beside other writes");
                assert_eq!(out, vec![OpOutcome::Applied]);
            }
        })
    };
    for chat in &doomed {
        let gone = store
            .delete_chats(who.user_id, &[*chat])
            .await
            .expect("a delete beside batches");
        assert_eq!(gone, vec![*chat]);
    }
    appender.await.unwrap();
    let chat = store.get_chat(who.user_id, busy).await.unwrap().unwrap();
    assert_eq!(
        chat.event_count,
        1 + 1_200,
        "every appended event is counted"
    );
    for chat in doomed {
        assert!(store.get_chat(who.user_id, chat).await.unwrap().is_none());
    }
    store.close().await;
}

#[tokio::test]
async fn events_are_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = SqliteStore::open(&url, &SqliteSettings::default())
        .await
        .unwrap();
    let who = new_account(&store, true).await;
    start_chat(
        &store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1,
        None,
        Uuid::new_v4(),
    )
    .await;
    let err = sqlx::query("UPDATE chat_events SET message_text = 'changed'")
        .execute(&store.write)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
}

/// The walk's statement ([`colloquy_storage::sql::Descent`]) against bucket counts made
/// from start times over ~3 years with a burst of ties in one bucket, two keys per bucket
/// (one sometimes empty), and another account's counts in the same buckets: every deep
/// page lands exactly where skipping would, and skips inside one bucket only.
#[tokio::test]
async fn the_walk_finds_every_deep_page() {
    use colloquy_storage::sql::buckets::{descend_after_for_tests, BUCKET_SHIFTS};
    use colloquy_storage::sql::{ChatOwner, Listing, Piece, Value};
    use std::collections::BTreeMap;
    descend_after_for_tests(2_000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("w.db").display());
    let store = SqliteStore::open(&url, &SqliteSettings::default())
        .await
        .unwrap();
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
    let (who, other) = (Uuid::new_v4(), Uuid::new_v4());
    for (level, shift) in BUCKET_SHIFTS.iter().rev().enumerate() {
        let mut m = BTreeMap::<i64, i64>::new();
        for t in &times {
            *m.entry(t >> shift).or_default() += 1;
        }
        for (bucket, n) in m {
            for (user, status, count) in [
                (who, "USER_ENDED", n / 3),
                (who, "ACTIVE", n - n / 3),
                (other, "ACTIVE", 7),
            ] {
                sqlx::query(
                    "INSERT INTO chat_buckets (user_id, level, bucket, status, config_id, n) \
                     VALUES (?, ?, ?, ?, '', ?)",
                )
                .bind(user.to_string())
                .bind(level as i64)
                .bind(bucket)
                .bind(status)
                .bind(count)
                .execute(&store.write)
                .await
                .unwrap();
            }
        }
    }
    let ints = |c: &colloquy_storage::sql::Clause| -> Vec<i64> {
        c.0.iter()
            .filter_map(|p| match p {
                Piece::Bind(Value::Int(n)) => Some(*n),
                _ => None,
            })
            .collect()
    };
    let mut walked = 0;
    for (number, size) in [(500, 10), (449, 10), (4_000, 1), (3, 2_100), (80, 100)] {
        for ascending in [true, false] {
            let listing = Listing::chats(
                ChatOwner::Account(who),
                &ChatFilter::default(),
                PageRequest {
                    number,
                    size,
                    ascending,
                },
            );
            let Some(d) = listing.descent(total) else {
                continue;
            };
            walked += 1;
            let mut b = sqlx::QueryBuilder::new("");
            reads::push(&mut b, &d.statement());
            let rows: Vec<colloquy_storage::sql::LevelRow> =
                b.build_query_as().fetch_all(&store.read).await.unwrap();
            assert_eq!(rows.len(), BUCKET_SHIFTS.len(), "{rows:?}");
            let w = d.window(&rows).expect("the counts hold the page");
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
}
