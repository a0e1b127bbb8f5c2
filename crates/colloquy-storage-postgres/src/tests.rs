//! PostgreSQL's own tests, and the conformance suite on a fresh database per scenario, each
//! a throwaway database (skipped without a server; see [`crate::testing`]).

use super::*;
use crate::testing::with_database;
use colloquy_storage::conformance::{event, new_account, page, start_chat};
use colloquy_wire::{EventRole, EventType};
use std::collections::HashMap;
use std::sync::Arc;

async fn open(url: &str) -> Arc<PostgresStore> {
    Arc::new(
        PostgresStore::open(url, &PostgresSettings::default())
            .await
            .expect("open store"),
    )
}

/// A user's event of type `ty` saying `m{seq}`.
fn said(seq: i64, ts: i64, ty: EventType) -> NewEvent {
    event(seq, ts, EventRole::User, ty, &format!("m{seq}"))
}

/// Starts `n` chats of `who` on `instance`.
async fn start_chats(
    store: &PostgresStore,
    who: &Principal,
    n: usize,
    instance: Uuid,
) -> Vec<Uuid> {
    let mut chats = Vec::with_capacity(n);
    for _ in 0..n {
        let (id, out) = start_chat(
            store,
            who,
            GroupChoice::New(Uuid::new_v4()),
            1,
            None,
            instance,
        )
        .await;
        assert_eq!(out, OpOutcome::Applied);
        chats.push(id);
    }
    chats
}

async fn migration_count(store: &PostgresStore) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

/// A fresh database for each scenario of the conformance suite.
mod conformance {
    use super::*;
    use colloquy_storage::conformance::Scenario;

    async fn run(scenario: Scenario) {
        with_database(|url| async move {
            let store = open(&url).await;
            scenario(&*store).await;
            store.close().await;
        })
        .await;
    }

    colloquy_storage::conformance_tests!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        run: run
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_applies_no_migration_twice_and_keeps_the_data() {
    with_database(|url| async move {
        let store = open(&url).await;
        assert_eq!(store.backend(), "postgres");
        assert_eq!(store.batching(), Batching::Recorder { concurrency: 2 });
        new_account(&*store, true).await;
        store.close().await;
        let again = open(&url).await;
        assert!(again.count_accounts().await.unwrap() > 0);
        assert_eq!(
            migration_count(&again).await,
            MIGRATOR.iter().count() as i64
        );
        again.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_together_migrate_once() {
    with_database(|url| async move {
        let opens = (0..4).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { open(&url).await })
        });
        let mut stores = Vec::new();
        for h in opens {
            stores.push(h.await.unwrap());
        }
        assert_eq!(
            migration_count(&stores[0]).await,
            MIGRATOR.iter().count() as i64
        );
        for s in stores {
            s.close().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_immutable() {
    with_database(|url| async move {
        let store = open(&url).await;
        let who = new_account(&*store, true).await;
        start_chats(&store, &who, 1, Uuid::new_v4()).await;
        let err = sqlx::query("UPDATE chat_events SET message_text = 'changed'")
            .execute(&store.pool)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("chat events are immutable"),
            "{err}"
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_reconstructions() {
    with_database(|url| async move {
        let store = open(&url).await;
        let who = new_account(&*store, true).await;
        let instance = Uuid::new_v4();
        let per_writer: Vec<Vec<Uuid>> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(start_chats(&store, &who, 5, instance).await);
            }
            v
        };
        let all: Vec<Uuid> = per_writer.iter().flatten().copied().collect();

        let mut tasks = Vec::new();
        for chats in per_writer.clone() {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 1..=50i64 {
                    let ops: Vec<WriteOp> = chats
                        .iter()
                        .map(|&chat_id| {
                            let events = vec![said(seq, seq, EventType::UserMessage)];
                            if seq == 50 {
                                WriteOp::EndChat {
                                    api_key_id: who.api_key_id,
                                    chat_id,
                                    status: ChatStatus::UserEnded,
                                    end_timestamp: seq,
                                    events,
                                }
                            } else {
                                WriteOp::AppendEvents {
                                    api_key_id: who.api_key_id,
                                    chat_id,
                                    events,
                                }
                            }
                        })
                        .collect();
                    let out = store.apply_batch(&ops).await.expect("apply batch");
                    assert!(out.iter().all(|o| *o == OpOutcome::Applied));
                }
            }));
        }
        let mut recons = Vec::new();
        for k in 0..4usize {
            let store = store.clone();
            let mut ids = all.clone();
            ids.rotate_left(k * 5);
            if k % 2 == 1 {
                ids.reverse();
            }
            recons.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for round in 0..5 {
                    let recs = store
                        .ensure_reconstructions(who.user_id, &ids, (k * 100 + round) as i64)
                        .await
                        .expect("ensure reconstructions");
                    assert_eq!(
                        recs.iter().map(|r| r.chat_id).collect::<Vec<_>>(),
                        ids,
                        "records come back in the requested order"
                    );
                    seen.extend(recs);
                }
                seen
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut first: HashMap<Uuid, ReconstructionRecord> = HashMap::new();
        for r in recons {
            for rec in r.await.unwrap() {
                let kept = first.entry(rec.chat_id).or_insert_with(|| rec.clone());
                assert_eq!(*kept, rec, "every caller sees the same single record");
            }
        }
        assert_eq!(first.len(), all.len());
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audio_reconstructions")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows, all.len() as i64, "exactly one record per chat");

        for chat_id in &all {
            let c = store
                .get_chat(who.user_id, *chat_id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(c.event_count, 51);
            assert_eq!(c.status, ChatStatus::UserEnded);
            let evs = store
                .list_chat_events(*chat_id, page(0, 100, true))
                .await
                .unwrap();
            assert_eq!(evs.items.len(), 51);
            assert!(evs.items.windows(2).all(|w| w[0].seq < w[1].seq));
        }
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_batches_do_not_deadlock() {
    with_database(|url| async move {
        let store = open(&url).await;
        let who = new_account(&*store, true).await;
        let chats = start_chats(&store, &who, 10, Uuid::new_v4()).await;
        let mut tasks = Vec::new();
        for t in 0..4i64 {
            let store = store.clone();
            let mut order = chats.clone();
            order.rotate_left(t as usize * 3);
            if t % 2 == 1 {
                order.reverse();
            }
            tasks.push(tokio::spawn(async move {
                for i in 0..20i64 {
                    let ops: Vec<WriteOp> = order
                        .iter()
                        .map(|&chat_id| WriteOp::AppendEvents {
                            api_key_id: who.api_key_id,
                            chat_id,
                            events: vec![said(1 + t * 1000 + i, 10 + i, EventType::UserMessage)],
                        })
                        .collect();
                    store.apply_batch(&ops).await.expect("apply batch");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for chat_id in &chats {
            let c = store
                .get_chat(who.user_id, *chat_id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(c.event_count, 1 + 4 * 20);
        }
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reapers_close_each_chat_once() {
    with_database(|url| async move {
        let store = open(&url).await;
        let who = new_account(&*store, true).await;
        let dead = Uuid::new_v4();
        store.heartbeat_instance(dead, 1).await.unwrap();
        let chats = start_chats(&store, &who, 30, dead).await;
        let reapers: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.close_orphaned_chats(100).await.unwrap() })
            })
            .collect();
        let mut closed = 0;
        for r in reapers {
            closed += r.await.unwrap();
        }
        assert_eq!(closed, chats.len() as u64);
        for chat_id in &chats {
            let c = store
                .get_chat(who.user_id, *chat_id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(c.status, ChatStatus::Error);
            assert_eq!(c.event_count, 2);
            let evs = store
                .list_chat_events(*chat_id, page(0, 10, true))
                .await
                .unwrap();
            assert_eq!(evs.items.len(), 2, "one end event");
            assert_eq!(evs.items[1].event_type, EventType::ChatEndMessage);
            assert_eq!(evs.items[1].seq, 1);
            assert_eq!(
                evs.items[1].metadata.as_deref(),
                Some(r#"{"reason":"server_failure"}"#)
            );
        }
        store.close().await;
    })
    .await;
}

/// Two servers (two pools) start chats for the same accounts at once, in batches that
/// list the accounts in opposite orders: each account ends with exactly its limit of
/// active chats, and no batch deadlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_active_chat_limit_holds_across_servers() {
    with_database(|url| async move {
        let servers = [open(&url).await, open(&url).await];
        let alice = new_account(&*servers[0], true).await;
        let bob = new_account(&*servers[0], true).await;
        const LIMIT: u32 = 3;
        let start = |who: &Principal| WriteOp::StartChat {
            api_key_id: who.api_key_id,
            chat: NewChat {
                id: Uuid::new_v4(),
                user_id: who.user_id,
                group: GroupChoice::New(Uuid::new_v4()),
                start_timestamp: 1,
                metadata: None,
                config_id: None,
                config_version: None,
                instance_id: Uuid::new_v4(),
                webhooks: Vec::new(),
            },
            events: vec![said(0, 1, EventType::ChatStartMessage)],
            max_active_chats: Some(LIMIT),
        };
        let mut tasks = Vec::new();
        for t in 0..8usize {
            let store = servers[t % 2].clone();
            let ops = if t % 2 == 0 {
                vec![start(&alice), start(&bob)]
            } else {
                vec![start(&bob), start(&alice)]
            };
            tasks.push(tokio::spawn(async move {
                let out = store.apply_batch(&ops).await.expect("apply batch");
                let applied = |who: Uuid| {
                    ops.iter()
                        .zip(&out)
                        .filter(|(op, o)| {
                            matches!(op, WriteOp::StartChat { chat, .. } if chat.user_id == who)
                                && **o == OpOutcome::Applied
                        })
                        .count()
                };
                (applied(alice.user_id), applied(bob.user_id))
            }));
        }
        let (mut a, mut b) = (0, 0);
        for t in tasks {
            let (x, y) = t.await.unwrap();
            a += x;
            b += y;
        }
        assert_eq!((a, b), (LIMIT as usize, LIMIT as usize));
        for who in [alice, bob] {
            let active = servers[1]
                .list_chats(
                    who.user_id,
                    &ChatFilter {
                        status: Some(ChatStatus::Active),
                        ..Default::default()
                    },
                    page(0, 100, true),
                )
                .await
                .unwrap();
            assert_eq!(active.total, u64::from(LIMIT));
        }
        for s in servers {
            s.close().await;
        }
    })
    .await;
}

/// The bucket counts of deep pages, added up, are exactly the chats' and groups' own
/// after every kind of change and the folds of the reads (the pages alone would not show
/// counts that are too low).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_counts_match_the_rows_they_count() {
    with_database(|url| async move {
        let store = open(&url).await;
        colloquy_storage::conformance::scenarios::deep_pages(&*store).await;
        let wrong: i64 = sqlx::query_scalar(colloquy_storage::conformance::BUCKET_MISMATCHES)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(wrong, 0);
        // The deep reads folded the top level they added up: about one row per key, where
        // each chat left one change row there, and two more per change of status (the
        // other account's, never read deep, are not folded).
        let (rows, keys): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT (user_id, level, bucket, status, config_id)) \
             FROM chat_buckets WHERE level = 2 AND user_id = \
             (SELECT user_id FROM chats GROUP BY user_id ORDER BY COUNT(*) DESC LIMIT 1)",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert!(rows <= keys + 64, "{rows} rows for {keys} keys");
        // Reading folded rows again folds nothing: a fold rewrites rows (new ctids).
        let user: Uuid = sqlx::query_scalar(
            "SELECT user_id FROM chats GROUP BY user_id ORDER BY COUNT(*) DESC LIMIT 1",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        let places = || async {
            sqlx::query_scalar::<_, String>(
                "SELECT string_agg(ctid::text, ',' ORDER BY ctid) FROM chat_buckets",
            )
            .fetch_one(&store.pool)
            .await
            .unwrap()
        };
        let middle = || async {
            store
                .list_chats(user, &ChatFilter::default(), page(200, 10, true))
                .await
                .unwrap()
        };
        let first = middle().await;
        let before = places().await;
        let again = middle().await;
        assert_eq!(
            first.items.iter().map(|c| c.id).collect::<Vec<_>>(),
            again.items.iter().map(|c| c.id).collect::<Vec<_>>()
        );
        assert_eq!(
            places().await,
            before,
            "a second deep read folded rows again"
        );
        store.close().await;
    })
    .await;
}

/// Concurrent writers only insert change rows into `chat_counts`; a read that adds up
/// many of them folds them into one per key, and the totals stay exact, also when chats
/// start and end on many connections at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_changes_fold_and_stay_exact_under_concurrent_writers() {
    with_database(|url| async move {
        let store = open(&url).await;
        let who = new_account(&*store, true).await;
        let instance = Uuid::new_v4();
        store.heartbeat_instance(instance, 1).await.unwrap();
        // 8 tasks start and end 25 chats each at the same time (200 inserts, 100 ends).
        let tasks = (0..8).map(|t| {
            let store = store.clone();
            let who = who.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let cfg = if (t + i) % 2 == 0 {
                        Some("cfg-a")
                    } else {
                        None
                    };
                    let (id, out) = start_chat(
                        &*store,
                        &who,
                        GroupChoice::New(Uuid::new_v4()),
                        1 + i as i64,
                        cfg,
                        instance,
                    )
                    .await;
                    assert_eq!(out, OpOutcome::Applied);
                    if i % 2 == 0 {
                        colloquy_storage::conformance::end_chat(&*store, &who, id, 100).await;
                    }
                }
            })
        });
        for t in tasks {
            t.await.unwrap();
        }
        let rows = |table: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(&format!(
                    "SELECT COUNT(*) FROM {table} WHERE user_id = $1"
                ))
                .bind(who.user_id)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        };
        assert!(rows("chat_counts").await > 64, "one change row per change");
        let all = store
            .list_chats(who.user_id, &ChatFilter::default(), page(0, 10, true))
            .await
            .unwrap();
        assert_eq!(all.total, 200);
        // Folded: one row per (status, config).
        assert_eq!(rows("chat_counts").await, 4);
        let wrong: i64 = sqlx::query_scalar(colloquy_storage::conformance::BUCKET_MISMATCHES)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(wrong, 0, "bucket counts under concurrent writers");
        for (status, want) in [(ChatStatus::Active, 96), (ChatStatus::UserEnded, 104)] {
            let got = store
                .list_chats(
                    who.user_id,
                    &ChatFilter {
                        status: Some(status),
                        ..Default::default()
                    },
                    page(0, 1, true),
                )
                .await
                .unwrap();
            assert_eq!(got.total, want, "{status:?}");
        }
        let a = store
            .list_chats(
                who.user_id,
                &ChatFilter {
                    config_id: Some("cfg-a".into()),
                    ..Default::default()
                },
                page(0, 1, true),
            )
            .await
            .unwrap();
        assert_eq!(a.total, 100);
        let groups = store
            .list_chat_groups(who.user_id, None, page(0, 1, true))
            .await
            .unwrap();
        assert_eq!(groups.total, 200);
        store.close().await;
    })
    .await;
}

/// The store's connections run without JIT and parallel workers (small index lookups).
#[tokio::test]
async fn connections_turn_off_jit_and_parallel_workers() {
    with_database(|url| async move {
        let store = open(&url).await;
        let (jit, workers): (String, String) = sqlx::query_as(
            "SELECT current_setting('jit'), current_setting('max_parallel_workers_per_gather')",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!((jit.as_str(), workers.as_str()), ("off", "0"));
        store.close().await;
    })
    .await;
}
