//! The conformance suite every [`Store`] backend must pass.
//!
//! Each backend's tests call [`run_all`] with a fresh, migrated, empty store. The checks are
//! plain `assert!`s so a failure names the property that broke.

use crate::*;
use colloquy_wire::{ChatStatus, EventRole, EventType, ReconstructionStatus};
use uuid::Uuid;

/// Runs every check in sequence against one empty store.
pub async fn run_all(store: &dyn Store) {
    keys_and_auth(store).await;
    chat_lifecycle_and_listing(store).await;
    resume_and_groups(store).await;
    group_event_order(store).await;
    failed_batch_changes_nothing(store).await;
    tenancy(store).await;
    revocation_in_batches(store).await;
    orphaned_chats(store).await;
    reconstructions(store).await;
    reconstruction_jobs(store).await;
    deletion(store).await;
    search(store).await;
    large_batches(store).await;
    nul_characters(store).await;
    active_chat_limit(store).await;
}

fn page(number: u32, size: u32, ascending: bool) -> PageRequest {
    PageRequest {
        number,
        size,
        ascending,
    }
}

/// Creates an account with one key; returns (principal, key hash, secret hash).
pub async fn new_account(store: &dyn Store, retention: bool) -> Principal {
    let user_id = Uuid::new_v4();
    let key_id = Uuid::new_v4();
    let key_hash = format!("hash-{key_id}");
    store
        .create_account(
            &NewAccount {
                id: user_id,
                name: Some("test".into()),
                data_retention: retention,
                created_at: 1,
            },
            &NewApiKey {
                id: key_id,
                user_id,
                name: None,
                prefix: key_id.to_string()[..8].to_string(),
                key_hash: key_hash.clone(),
                secret_hash: format!("secret-{key_id}"),
                created_at: 1,
            },
        )
        .await
        .expect("create account");
    Principal {
        user_id,
        api_key_id: key_id,
        data_retention: retention,
        key_prefix: key_id.to_string()[..8].to_string(),
    }
}

fn event(seq: i64, ts: i64, role: EventRole, ty: EventType, text: &str) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        seq,
        timestamp: ts,
        role,
        event_type: ty,
        message_text: Some(text.to_string()),
        emotion_features: None,
        metadata: None,
        related_event_id: None,
    }
}

/// A `StartChat` in a new group (or resuming `group`) with a `CHAT_START_MESSAGE`, and the
/// new chat's id.
fn start_op(
    who: &Principal,
    group: GroupChoice,
    start: i64,
    config: Option<&str>,
    instance: Uuid,
    max_active_chats: Option<u32>,
) -> (Uuid, WriteOp) {
    let chat_id = Uuid::new_v4();
    let op = WriteOp::StartChat {
        api_key_id: who.api_key_id,
        chat: NewChat {
            id: chat_id,
            user_id: who.user_id,
            group,
            start_timestamp: start,
            metadata: Some("{}".into()),
            config_id: config.map(str::to_string),
            config_version: config.map(|_| 3),
            instance_id: instance,
        },
        events: vec![event(
            0,
            start,
            EventRole::System,
            EventType::ChatStartMessage,
            "",
        )],
        max_active_chats,
    };
    (chat_id, op)
}

/// Starts a chat in a new group (or resumes `group`) with a `CHAT_START_MESSAGE`.
pub async fn start_chat(
    store: &dyn Store,
    who: &Principal,
    group: GroupChoice,
    start: i64,
    config: Option<&str>,
    instance: Uuid,
) -> (Uuid, OpOutcome) {
    let (chat_id, op) = start_op(who, group, start, config, instance, None);
    let out = store.apply_batch(&[op]).await.expect("start chat");
    (chat_id, out[0])
}

async fn keys_and_auth(store: &dyn Store) {
    let before = store.count_accounts().await.unwrap();
    let who = new_account(store, true).await;
    assert_eq!(store.count_accounts().await.unwrap(), before + 1);
    let hash = format!("hash-{}", who.api_key_id);
    let p = store.principal_by_key_hash(&hash).await.unwrap();
    assert_eq!(p, Some(who.clone()), "a live key resolves to its principal");
    assert_eq!(store.principal_by_key_hash("nope").await.unwrap(), None);

    let (p, secret) = store.secret_hash_for_key(&hash).await.unwrap().unwrap();
    assert_eq!(p, who.clone());
    assert_eq!(secret, format!("secret-{}", who.api_key_id));

    store
        .insert_access_token("tok-1", who.api_key_id, 10_000)
        .await
        .unwrap();
    assert_eq!(
        store.principal_by_token_hash("tok-1", 9_999).await.unwrap(),
        Some(who.clone())
    );
    assert_eq!(
        store
            .principal_by_token_hash("tok-1", 10_000)
            .await
            .unwrap(),
        None,
        "an expired token is refused"
    );
    store
        .insert_access_token("tok-2", who.api_key_id, 10_000)
        .await
        .unwrap();
    assert!(store.delete_access_token("tok-2").await.unwrap());
    assert!(!store.delete_access_token("tok-2").await.unwrap());
    assert_eq!(
        store.principal_by_token_hash("tok-2", 9_000).await.unwrap(),
        None,
        "a deleted (signed-out) token is refused"
    );

    // A second key on the same account, then revoke the first.
    let second = NewApiKey {
        id: Uuid::new_v4(),
        user_id: who.user_id,
        name: Some("second".into()),
        prefix: "second00".into(),
        key_hash: "hash-second".into(),
        secret_hash: "secret-second".into(),
        created_at: 2,
    };
    store.add_api_key(&second).await.unwrap();
    let dup = store.add_api_key(&second).await;
    assert!(
        matches!(dup, Err(StoreError::Conflict(_))),
        "duplicate key: {dup:?}"
    );
    let keys = store.list_api_keys().await.unwrap();
    assert!(keys
        .iter()
        .any(|k| k.id == second.id && k.name.as_deref() == Some("second")));

    assert!(store.revoke_api_key(who.api_key_id, 5).await.unwrap());
    assert!(!store.revoke_api_key(who.api_key_id, 6).await.unwrap());
    assert_eq!(store.principal_by_key_hash(&hash).await.unwrap(), None);
    assert_eq!(
        store.principal_by_token_hash("tok-1", 9_000).await.unwrap(),
        None,
        "a revoked key's tokens stop working"
    );
    assert!(store
        .principal_by_key_hash("hash-second")
        .await
        .unwrap()
        .is_some());
    let revoked = store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == who.api_key_id)
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(5));
}

async fn chat_lifecycle_and_listing(store: &dyn Store) {
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    store.heartbeat_instance(instance, 1_000).await.unwrap();
    let mut chats = Vec::new();
    for i in 0..7 {
        let cfg = if i % 2 == 0 { Some("cfg-even") } else { None };
        let (id, out) = start_chat(
            store,
            &who,
            GroupChoice::New(Uuid::new_v4()),
            1_000 + i,
            cfg,
            instance,
        )
        .await;
        assert_eq!(out, OpOutcome::Applied);
        chats.push(id);
    }
    // Append to the first chat, in two batches, then end it.
    let c0 = chats[0];
    let out = store
        .apply_batch(&[
            WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id: c0,
                events: vec![event(
                    1,
                    2_000,
                    EventRole::User,
                    EventType::UserMessage,
                    "hello",
                )],
            },
            WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id: c0,
                events: vec![
                    event(2, 2_000, EventRole::Agent, EventType::AgentMessage, "hi"),
                    event(3, 2_001, EventRole::User, EventType::UserMessage, "bye"),
                ],
            },
        ])
        .await
        .unwrap();
    assert_eq!(out, vec![OpOutcome::Applied, OpOutcome::Applied]);
    store
        .apply_batch(&[WriteOp::EndChat {
            api_key_id: who.api_key_id,
            chat_id: c0,
            status: ChatStatus::UserEnded,
            end_timestamp: 2_005,
            events: vec![event(
                4,
                2_005,
                EventRole::System,
                EventType::ChatEndMessage,
                "",
            )],
        }])
        .await
        .unwrap();

    let chat = store.get_chat(who.user_id, c0).await.unwrap().unwrap();
    assert_eq!(chat.status, ChatStatus::UserEnded);
    assert_eq!(chat.end_timestamp, Some(2_005));
    assert_eq!(chat.event_count, 5);
    assert_eq!(chat.config_id.as_deref(), Some("cfg-even"));
    assert_eq!(chat.config_version, Some(3));
    assert_eq!(chat.metadata.as_deref(), Some("{}"));

    // Events in order, both directions, paged.
    let all = store
        .list_chat_events(c0, page(0, 100, true))
        .await
        .unwrap();
    assert_eq!(all.total, 5);
    let texts: Vec<_> = all
        .items
        .iter()
        .map(|e| e.message_text.clone().unwrap())
        .collect();
    assert_eq!(texts, vec!["", "hello", "hi", "bye", ""]);
    assert_eq!(all.items[1].role, EventRole::User);
    assert_eq!(all.items[2].event_type, EventType::AgentMessage);
    let desc = store.list_chat_events(c0, page(0, 2, false)).await.unwrap();
    assert_eq!(desc.items[0].event_type, EventType::ChatEndMessage);
    assert_eq!(desc.items[1].message_text.as_deref(), Some("bye"));
    let p2 = store.list_chat_events(c0, page(2, 2, true)).await.unwrap();
    assert_eq!(p2.items.len(), 1);
    assert_eq!(p2.total, 5);
    let past = store.list_chat_events(c0, page(3, 2, true)).await.unwrap();
    assert!(past.items.is_empty(), "a page past the end is empty");

    // Chat listing: order, paging, filters.
    let asc = store
        .list_chats(who.user_id, &ChatFilter::default(), page(0, 3, true))
        .await
        .unwrap();
    assert_eq!(asc.total, 7);
    assert_eq!(
        asc.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        chats[..3].to_vec()
    );
    let desc = store
        .list_chats(who.user_id, &ChatFilter::default(), page(0, 3, false))
        .await
        .unwrap();
    assert_eq!(desc.items[0].id, chats[6]);
    let last = store
        .list_chats(who.user_id, &ChatFilter::default(), page(2, 3, true))
        .await
        .unwrap();
    assert_eq!(
        last.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![chats[6]]
    );
    let ended = store
        .list_chats(
            who.user_id,
            &ChatFilter {
                status: Some(ChatStatus::UserEnded),
                config_id: None,
                ..Default::default()
            },
            page(0, 10, true),
        )
        .await
        .unwrap();
    assert_eq!(ended.total, 1);
    assert_eq!(ended.items[0].id, c0);
    let active = store
        .list_chats(
            who.user_id,
            &ChatFilter {
                status: Some(ChatStatus::Active),
                config_id: Some("cfg-even".into()),
                ..Default::default()
            },
            page(0, 10, true),
        )
        .await
        .unwrap();
    assert_eq!(active.total, 3, "chats 2, 4, 6 are active with cfg-even");
}

async fn resume_and_groups(store: &dyn Store) {
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    store.heartbeat_instance(instance, 1_000).await.unwrap();
    let g = Uuid::new_v4();
    let (c1, _) = start_chat(store, &who, GroupChoice::New(g), 5_000, Some("a"), instance).await;
    store
        .apply_batch(&[WriteOp::EndChat {
            api_key_id: who.api_key_id,
            chat_id: c1,
            status: ChatStatus::UserEnded,
            end_timestamp: 5_100,
            events: vec![event(
                1,
                5_100,
                EventRole::System,
                EventType::ChatEndMessage,
                "",
            )],
        }])
        .await
        .unwrap();
    let (c2, out) = start_chat(
        store,
        &who,
        GroupChoice::Resume(g),
        6_000,
        Some("b"),
        instance,
    )
    .await;
    assert_eq!(out, OpOutcome::Applied);
    let (_, out) = start_chat(
        store,
        &who,
        GroupChoice::Resume(Uuid::new_v4()),
        6_500,
        None,
        instance,
    )
    .await;
    assert_eq!(out, OpOutcome::GroupNotFound);
    let (other_group_chat, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        7_000,
        Some("a"),
        instance,
    )
    .await;

    let group = store.get_chat_group(who.user_id, g).await.unwrap().unwrap();
    assert_eq!(group.num_chats, 2);
    assert_eq!(group.first_start_timestamp, 5_000);
    assert_eq!(group.most_recent_start_timestamp, 6_000);
    assert_eq!(group.most_recent_chat_id, Some(c2));
    assert_eq!(group.most_recent_config_id.as_deref(), Some("b"));
    assert!(group.active, "c2 is still active");

    let chats = store
        .list_group_chats(g, None, page(0, 10, true))
        .await
        .unwrap();
    assert_eq!(
        chats.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![c1, c2]
    );
    let ended = store
        .list_group_chats(g, Some(ChatStatus::UserEnded), page(0, 10, true))
        .await
        .unwrap();
    assert_eq!(ended.items.len(), 1);
    assert_eq!(ended.total, 1);

    let events = store.list_group_events(g, page(0, 10, true)).await.unwrap();
    assert_eq!(events.total, 3);
    assert_eq!(
        events.items.iter().map(|e| e.chat_id).collect::<Vec<_>>(),
        vec![c1, c1, c2]
    );
    let desc = store.list_group_events(g, page(0, 1, false)).await.unwrap();
    assert_eq!(desc.items[0].chat_id, c2);

    // Group listing with the most-recent-config filter: g's latest chat used "b".
    let by_a = store
        .list_chat_groups(who.user_id, Some("a"), page(0, 10, true))
        .await
        .unwrap();
    assert_eq!(by_a.total, 1);
    let by_b = store
        .list_chat_groups(who.user_id, Some("b"), page(0, 10, true))
        .await
        .unwrap();
    assert_eq!(by_b.items.len(), 1);
    assert_eq!(by_b.items[0].id, g);
    let all = store
        .list_chat_groups(who.user_id, None, page(0, 10, false))
        .await
        .unwrap();
    assert_eq!(all.total, 2);
    assert_eq!(
        all.items[1].id, g,
        "newest first: the other group started later"
    );
    assert_eq!(all.items[0].most_recent_chat_id, Some(other_group_chat));
}

/// A group's events come in `(timestamp, chat_id, seq)` order across chats that follow
/// each other, overlap in time, or tie, in both directions and across page boundaries.
async fn group_event_order(store: &dyn Store) {
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let g = Uuid::new_v4();
    let append = |chat_id: Uuid, events: Vec<NewEvent>| WriteOp::AppendEvents {
        api_key_id: who.api_key_id,
        chat_id,
        events,
    };
    let msg = |seq: i64, ts: i64| event(seq, ts, EventRole::User, EventType::UserMessage, "hi");
    let end = |chat_id: Uuid, seq: i64, ts: i64| WriteOp::EndChat {
        api_key_id: who.api_key_id,
        chat_id,
        status: ChatStatus::UserEnded,
        end_timestamp: ts,
        events: vec![event(
            seq,
            ts,
            EventRole::System,
            EventType::ChatEndMessage,
            "",
        )],
    };
    // c1 and c2 overlap; c3 follows both; c4 starts at the instant c3's last event has.
    let (c1, _) = start_chat(store, &who, GroupChoice::New(g), 1_000, None, instance).await;
    let (c2, _) = start_chat(store, &who, GroupChoice::Resume(g), 1_015, None, instance).await;
    store
        .apply_batch(&[
            append(c1, vec![msg(1, 1_010), msg(2, 1_020)]),
            append(c2, vec![msg(1, 1_025)]),
            end(c1, 3, 1_030),
        ])
        .await
        .unwrap();
    store.apply_batch(&[end(c2, 2, 1_026)]).await.unwrap();
    let (c3, _) = start_chat(store, &who, GroupChoice::Resume(g), 2_000, None, instance).await;
    store
        .apply_batch(&[append(c3, vec![msg(1, 2_000)]), end(c3, 2, 2_005)])
        .await
        .unwrap();
    // c4 stays active.
    let (c4, _) = start_chat(store, &who, GroupChoice::Resume(g), 2_005, None, instance).await;
    store
        .apply_batch(&[append(c4, vec![msg(1, 2_010)])])
        .await
        .unwrap();

    let mut expected = Vec::new();
    for (chat, events) in [
        (c1, vec![(0, 1_000), (1, 1_010), (2, 1_020), (3, 1_030)]),
        (c2, vec![(0, 1_015), (1, 1_025), (2, 1_026)]),
        (c3, vec![(0, 2_000), (1, 2_000), (2, 2_005)]),
        (c4, vec![(0, 2_005), (1, 2_010)]),
    ] {
        for (seq, ts) in events {
            expected.push((ts, chat, seq));
        }
    }
    expected.sort();
    for size in [1, 3, 4, 20] {
        for ascending in [true, false] {
            let mut got = Vec::new();
            let mut number = 0;
            loop {
                let p = store
                    .list_group_events(g, page(number, size, ascending))
                    .await
                    .unwrap();
                assert_eq!(p.total, expected.len() as u64);
                if p.items.is_empty() {
                    break;
                }
                got.extend(p.items.iter().map(|e| (e.timestamp, e.chat_id, e.seq)));
                number += 1;
            }
            let mut want = expected.clone();
            if !ascending {
                want.reverse();
            }
            assert_eq!(got, want, "page size {size}, ascending {ascending}");
        }
    }
}

/// A batch with a duplicate event sequence number fails as a whole: nothing of it is
/// stored, not even its valid operations, and the next batch commits normally.
async fn failed_batch_changes_nothing(store: &dyn Store) {
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let (a, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1_000,
        None,
        instance,
    )
    .await;
    let (b, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1_000,
        None,
        instance,
    )
    .await;
    let say = |seq: i64, text: &str| {
        event(
            seq,
            1_000 + seq,
            EventRole::User,
            EventType::UserMessage,
            text,
        )
    };
    let append = |chat_id: Uuid, events: Vec<NewEvent>| WriteOp::AppendEvents {
        api_key_id: who.api_key_id,
        chat_id,
        events,
    };
    let new_group = Uuid::new_v4();
    let (c, start_c) = start_op(
        &who,
        GroupChoice::New(new_group),
        1_001,
        None,
        instance,
        Some(10),
    );
    let failed = store
        .apply_batch(&[
            start_c,
            append(b, vec![say(1, "zanzibar")]),
            // seq 0 is the chat's CHAT_START_MESSAGE already.
            append(a, vec![say(1, "zanzibar"), say(0, "zanzibar")]),
        ])
        .await;
    assert!(
        failed.is_err(),
        "a duplicate sequence number must fail the batch"
    );
    for chat in [a, b] {
        let c = store.get_chat(who.user_id, chat).await.unwrap().unwrap();
        assert_eq!(c.event_count, 1, "nothing of the failed batch is counted");
        let events = store
            .list_chat_events(chat, page(0, 10, true))
            .await
            .unwrap();
        assert_eq!(
            events.items.len(),
            1,
            "nothing of the failed batch is stored"
        );
    }
    assert!(
        store.get_chat(who.user_id, c).await.unwrap().is_none(),
        "the chat started in the failed batch is not stored"
    );
    assert!(
        store
            .get_chat_group(who.user_id, new_group)
            .await
            .unwrap()
            .is_none(),
        "nor its group"
    );
    let chats = store
        .list_chats(who.user_id, &ChatFilter::default(), page(0, 10, true))
        .await
        .unwrap();
    assert_eq!(chats.total, 2);
    let search = ChatFilter {
        search: Some("zanzibar".into()),
        ..Default::default()
    };
    assert!(found(store, &who, search.clone()).await.is_empty());

    store
        .apply_batch(&[append(a, vec![say(1, "zanzibar")])])
        .await
        .expect("the store works after a failed batch");
    let c = store.get_chat(who.user_id, a).await.unwrap().unwrap();
    assert_eq!(c.event_count, 2);
    assert_eq!(found(store, &who, search).await, vec![a]);
}

async fn tenancy(store: &dyn Store) {
    let alice = new_account(store, true).await;
    let bob = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let g = Uuid::new_v4();
    let (chat, _) = start_chat(store, &alice, GroupChoice::New(g), 1, None, instance).await;
    assert!(store.get_chat(bob.user_id, chat).await.unwrap().is_none());
    assert!(store
        .get_chat_group(bob.user_id, g)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .list_chats(bob.user_id, &ChatFilter::default(), page(0, 10, true))
            .await
            .unwrap()
            .total,
        0
    );
    let (_, out) = start_chat(store, &bob, GroupChoice::Resume(g), 2, None, instance).await;
    assert_eq!(
        out,
        OpOutcome::GroupNotFound,
        "another account's group cannot be resumed"
    );
    assert!(
        store
            .ensure_reconstructions(bob.user_id, &[chat], 3)
            .await
            .unwrap()
            .is_empty(),
        "no reconstruction for another account's chat"
    );
}

async fn revocation_in_batches(store: &dyn Store) {
    let who = new_account(store, true).await;
    let live = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let (chat, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1,
        None,
        instance,
    )
    .await;
    let (live_chat, _) = start_chat(
        store,
        &live,
        GroupChoice::New(Uuid::new_v4()),
        1,
        None,
        instance,
    )
    .await;
    store.revoke_api_key(who.api_key_id, 2).await.unwrap();
    let out = store
        .apply_batch(&[
            WriteOp::CheckKey {
                api_key_id: who.api_key_id,
            },
            WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id: chat,
                events: vec![event(1, 3, EventRole::User, EventType::UserMessage, "x")],
            },
            WriteOp::AppendEvents {
                api_key_id: live.api_key_id,
                chat_id: live_chat,
                events: vec![event(1, 3, EventRole::User, EventType::UserMessage, "y")],
            },
            WriteOp::CheckKey {
                api_key_id: live.api_key_id,
            },
            WriteOp::EndChat {
                api_key_id: who.api_key_id,
                chat_id: chat,
                status: ChatStatus::Error,
                end_timestamp: 4,
                events: vec![event(
                    1,
                    4,
                    EventRole::System,
                    EventType::ChatEndMessage,
                    "",
                )],
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            OpOutcome::KeyRevoked,
            OpOutcome::KeyRevoked,
            OpOutcome::Applied,
            OpOutcome::Applied,
            OpOutcome::KeyRevoked
        ]
    );
    let c = store.get_chat(who.user_id, chat).await.unwrap().unwrap();
    assert_eq!(
        c.event_count, 2,
        "start + end; the revoked append was dropped"
    );
    assert_eq!(
        c.status,
        ChatStatus::Error,
        "EndChat applies even when revoked"
    );
    let l = store
        .get_chat(live.user_id, live_chat)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l.event_count, 2);
}

async fn orphaned_chats(store: &dyn Store) {
    let who = new_account(store, true).await;
    let dead = Uuid::new_v4();
    let alive = Uuid::new_v4();
    store.heartbeat_instance(dead, 10_000).await.unwrap();
    store.heartbeat_instance(alive, 10_000).await.unwrap();
    let (orphan, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        10_000,
        None,
        dead,
    )
    .await;
    store
        .apply_batch(&[WriteOp::AppendEvents {
            api_key_id: who.api_key_id,
            chat_id: orphan,
            events: vec![event(
                1,
                10_500,
                EventRole::User,
                EventType::UserMessage,
                "last words",
            )],
        }])
        .await
        .unwrap();
    let (kept, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        10_000,
        None,
        alive,
    )
    .await;
    store.heartbeat_instance(alive, 20_000).await.unwrap();
    let closed = store.close_orphaned_chats(15_000).await.unwrap();
    assert!(closed >= 1);
    let o = store.get_chat(who.user_id, orphan).await.unwrap().unwrap();
    assert_eq!(o.status, ChatStatus::Error);
    assert_eq!(o.end_timestamp, Some(10_500), "ends at its last event");
    assert_eq!(o.event_count, 3);
    let evs = store
        .list_chat_events(orphan, page(0, 10, true))
        .await
        .unwrap();
    assert_eq!(
        evs.items.last().unwrap().event_type,
        EventType::ChatEndMessage
    );
    assert_eq!(evs.items.last().unwrap().timestamp, 10_500);
    let k = store.get_chat(who.user_id, kept).await.unwrap().unwrap();
    assert_eq!(
        k.status,
        ChatStatus::Active,
        "a live instance's chat is untouched"
    );
    // A session that outlived its closed chat is told so, without failing the batch.
    let out = store
        .apply_batch(&[
            WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id: orphan,
                events: vec![event(
                    2,
                    10_600,
                    EventRole::User,
                    EventType::UserMessage,
                    "late",
                )],
            },
            WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id: kept,
                events: vec![event(
                    1,
                    10_600,
                    EventRole::User,
                    EventType::UserMessage,
                    "on time",
                )],
            },
            WriteOp::EndChat {
                api_key_id: who.api_key_id,
                chat_id: orphan,
                status: ChatStatus::UserEnded,
                end_timestamp: 10_700,
                events: vec![event(
                    2,
                    10_700,
                    EventRole::System,
                    EventType::ChatEndMessage,
                    "",
                )],
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            OpOutcome::ChatClosed,
            OpOutcome::Applied,
            OpOutcome::ChatClosed
        ]
    );
    let o = store.get_chat(who.user_id, orphan).await.unwrap().unwrap();
    assert_eq!(
        (o.status, o.event_count),
        (ChatStatus::Error, 3),
        "unchanged"
    );
    assert_eq!(
        store
            .get_chat(who.user_id, kept)
            .await
            .unwrap()
            .unwrap()
            .event_count,
        2
    );
    store.remove_instance(alive).await.unwrap();
    store.close_orphaned_chats(0).await.unwrap();
    let k = store.get_chat(who.user_id, kept).await.unwrap().unwrap();
    assert_eq!(
        k.status,
        ChatStatus::Error,
        "an unknown instance's chat is orphaned"
    );
}

async fn reconstructions(store: &dyn Store) {
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let (a, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1,
        None,
        instance,
    )
    .await;
    let (b, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        2,
        None,
        instance,
    )
    .await;
    let first = store
        .ensure_reconstructions(who.user_id, &[a], 100)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].status, ReconstructionStatus::Queued);
    assert_eq!(first[0].modified_at, 100);
    assert_eq!(first[0].user_id, who.user_id);
    let again = store
        .ensure_reconstructions(who.user_id, &[b, a], 200)
        .await
        .unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].chat_id, b);
    assert_eq!(again[1], first[0], "a second call does not recreate");
}

async fn large_batches(store: &dyn Store) {
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let mut chats = Vec::new();
    for _ in 0..20 {
        chats.push(
            start_chat(
                store,
                &who,
                GroupChoice::New(Uuid::new_v4()),
                1,
                None,
                instance,
            )
            .await
            .0,
        );
    }
    let mut ops = Vec::new();
    for seq in 1..=30 {
        for c in &chats {
            ops.push(WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id: *c,
                events: vec![event(
                    seq,
                    seq,
                    EventRole::User,
                    EventType::UserMessage,
                    &format!("m{seq}"),
                )],
            });
        }
    }
    let out = store.apply_batch(&ops).await.unwrap();
    assert_eq!(out.len(), 600);
    assert!(out.iter().all(|o| *o == OpOutcome::Applied));
    for c in &chats {
        let chat = store.get_chat(who.user_id, *c).await.unwrap().unwrap();
        assert_eq!(chat.event_count, 31);
        let last = store.list_chat_events(*c, page(0, 1, false)).await.unwrap();
        assert_eq!(last.items[0].message_text.as_deref(), Some("m30"));
    }
    // Every message of the 600 is searchable, the first and the last included.
    for word in ["m5", "m17", "m30"] {
        let mut hits = found(store, &who, searching(word)).await;
        hits.sort();
        let mut want = chats.clone();
        want.sort();
        assert_eq!(hits, want, "every chat said {word}");
    }
}

async fn end_chat(store: &dyn Store, who: &Principal, chat: Uuid, at: i64) {
    store
        .apply_batch(&[WriteOp::EndChat {
            api_key_id: who.api_key_id,
            chat_id: chat,
            status: ChatStatus::UserEnded,
            end_timestamp: at,
            events: vec![event(
                1,
                at,
                EventRole::System,
                EventType::ChatEndMessage,
                "",
            )],
        }])
        .await
        .unwrap();
}

async fn status_of(store: &dyn Store, who: &Principal, chat: Uuid) -> ReconstructionRecord {
    store
        .ensure_reconstructions(who.user_id, &[chat], 0)
        .await
        .unwrap()
        .pop()
        .unwrap()
}

async fn reconstruction_jobs(store: &dyn Store) {
    // Drain jobs left by earlier checks so this one sees only its own.
    while let Some(j) = store
        .claim_reconstruction("drain", i64::MAX / 4, 1, 100)
        .await
        .unwrap()
    {
        let failed = JobResult::Failed {
            reason: "drained".into(),
        };
        store
            .finish_reconstruction(j.chat_id, "drain", &failed, 1)
            .await
            .unwrap();
    }
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let (chat, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1_000,
        None,
        instance,
    )
    .await;
    store
        .ensure_reconstructions(who.user_id, &[chat], 1_100)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_reconstruction("w1", 2_000, 1_000, 3)
            .await
            .unwrap(),
        None,
        "an ACTIVE chat's job waits until the chat ends"
    );
    end_chat(store, &who, chat, 1_500).await;

    let job = store
        .claim_reconstruction("w1", 2_000, 1_000, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.chat_id, job.user_id, job.attempt),
        (chat, who.user_id, 1)
    );
    assert_eq!((job.chat_start_ms, job.chat_end_ms), (1_000, 1_500));
    let rec = status_of(store, &who, chat).await;
    assert_eq!(
        (rec.status, rec.modified_at),
        (ReconstructionStatus::InProgress, 2_000)
    );
    assert_eq!(
        store
            .claim_reconstruction("w2", 2_500, 1_000, 3)
            .await
            .unwrap(),
        None,
        "a leased job is not claimed twice"
    );
    assert!(store
        .renew_reconstruction_lease(chat, "w1", 3_500)
        .await
        .unwrap());
    assert!(!store
        .renew_reconstruction_lease(chat, "w2", 9_000)
        .await
        .unwrap());
    assert_eq!(
        store
            .claim_reconstruction("w2", 3_400, 1_000, 3)
            .await
            .unwrap(),
        None
    );

    // w1 dies: its lease runs out and w2 takes the job over.
    let again = store
        .claim_reconstruction("w2", 3_600, 1_000, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.chat_id, again.attempt), (chat, 2));
    let done = JobResult::Complete {
        filename: format!("{}/{}/reconstructed_audio.mp4", who.user_id, chat),
        missing: None,
    };
    assert!(
        !store
            .finish_reconstruction(chat, "w1", &done, 3_700)
            .await
            .unwrap(),
        "a worker that lost its lease cannot finish the job"
    );
    assert!(store
        .finish_reconstruction(chat, "w2", &done, 3_800)
        .await
        .unwrap());
    assert!(
        !store
            .finish_reconstruction(chat, "w2", &done, 3_900)
            .await
            .unwrap(),
        "exactly once"
    );
    let rec = status_of(store, &who, chat).await;
    assert_eq!(rec.status, ReconstructionStatus::Complete);
    assert_eq!(rec.modified_at, 3_800);
    assert_eq!(
        rec.filename.as_deref(),
        Some(format!("{}/{}/reconstructed_audio.mp4", who.user_id, chat).as_str())
    );
    store
        .ensure_reconstructions(who.user_id, &[chat], 5_000)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_reconstruction("w3", 9_000, 1_000, 3)
            .await
            .unwrap(),
        None,
        "a finished reconstruction is never queued again"
    );

    // A job whose every attempt dies ends as ERROR; a failed job carries its reason.
    let (flaky, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        10_000,
        None,
        instance,
    )
    .await;
    let (empty, _) = start_chat(
        store,
        &who,
        GroupChoice::New(Uuid::new_v4()),
        10_001,
        None,
        instance,
    )
    .await;
    end_chat(store, &who, flaky, 10_100).await;
    end_chat(store, &who, empty, 10_100).await;
    store
        .ensure_reconstructions(who.user_id, &[flaky], 10_200)
        .await
        .unwrap();
    store
        .ensure_reconstructions(who.user_id, &[empty], 10_201)
        .await
        .unwrap();
    let j = store
        .claim_reconstruction("w1", 11_000, 100, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.chat_id, flaky);
    let j2 = store
        .claim_reconstruction("w1", 11_000, 100, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j2.chat_id, empty);
    let failed = JobResult::Failed {
        reason: "the chat has no audio".into(),
    };
    assert!(store
        .finish_reconstruction(empty, "w1", &failed, 11_050)
        .await
        .unwrap());
    assert_eq!(
        store
            .claim_reconstruction("w2", 12_000, 100, 1)
            .await
            .unwrap(),
        None
    );
    let rec = status_of(store, &who, flaky).await;
    assert_eq!(rec.status, ReconstructionStatus::Error);
    assert!(rec.error.unwrap().contains("attempted 1 times"));
    let rec = status_of(store, &who, empty).await;
    assert_eq!(
        (rec.status, rec.error.as_deref()),
        (ReconstructionStatus::Error, Some("the chat has no audio"))
    );
}

async fn deletion(store: &dyn Store) {
    let who = new_account(store, true).await;
    let other = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let g = Uuid::new_v4();
    let (c1, _) = start_chat(store, &who, GroupChoice::New(g), 100, Some("a"), instance).await;
    end_chat(store, &who, c1, 150).await;
    let (c2, _) = start_chat(
        store,
        &who,
        GroupChoice::Resume(g),
        200,
        Some("b"),
        instance,
    )
    .await;
    end_chat(store, &who, c2, 250).await;
    let (c3, _) = start_chat(
        store,
        &who,
        GroupChoice::Resume(g),
        300,
        Some("c"),
        instance,
    )
    .await;
    store
        .ensure_reconstructions(who.user_id, &[c2, c3], 400)
        .await
        .unwrap();

    assert_eq!(store.group_chat_ids(other.user_id, g).await.unwrap(), None);
    assert_eq!(
        store.group_chat_ids(who.user_id, g).await.unwrap(),
        Some(vec![c1, c2, c3])
    );
    assert!(
        store
            .delete_chats(other.user_id, &[c1])
            .await
            .unwrap()
            .is_empty(),
        "another account's chat is not erased"
    );

    // Erasing the newest (still active) chat recomputes the group summary.
    assert_eq!(
        store.delete_chats(who.user_id, &[c3]).await.unwrap(),
        vec![c3]
    );
    assert!(store.get_chat(who.user_id, c3).await.unwrap().is_none());
    assert_eq!(
        store
            .list_chat_events(c3, page(0, 10, true))
            .await
            .unwrap()
            .items,
        vec![]
    );
    let group = store.get_chat_group(who.user_id, g).await.unwrap().unwrap();
    assert_eq!(group.num_chats, 2);
    assert_eq!(group.most_recent_chat_id, Some(c2));
    assert_eq!(group.most_recent_config_id.as_deref(), Some("b"));
    assert!(!group.active);
    // Its session learns at the next write that the chat is gone.
    let out = store
        .apply_batch(&[WriteOp::AppendEvents {
            api_key_id: who.api_key_id,
            chat_id: c3,
            events: vec![event(1, 301, EventRole::User, EventType::UserMessage, "x")],
        }])
        .await
        .unwrap();
    assert_eq!(out, vec![OpOutcome::ChatClosed]);

    // A queued job of an erased chat is withdrawn: nobody can claim or finish it.
    let claimed = store
        .claim_reconstruction("w", 1_000, 1_000, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.chat_id, c2);
    assert_eq!(
        store.delete_chats(who.user_id, &[c1, c2]).await.unwrap(),
        vec![c1, c2]
    );
    let done = JobResult::Complete {
        filename: "x".into(),
        missing: None,
    };
    assert!(!store
        .finish_reconstruction(c2, "w", &done, 1_100)
        .await
        .unwrap());
    assert!(store
        .ensure_reconstructions(who.user_id, &[c2], 1_200)
        .await
        .unwrap()
        .is_empty());
    assert!(
        store
            .get_chat_group(who.user_id, g)
            .await
            .unwrap()
            .is_none(),
        "empty groups go"
    );
    assert_eq!(
        store
            .list_group_events(g, page(0, 10, true))
            .await
            .unwrap()
            .items,
        vec![]
    );
}

/// Chats whose ids `list_chats` returns for `filter`, oldest first.
async fn found(store: &dyn Store, who: &Principal, filter: ChatFilter) -> Vec<Uuid> {
    let got = store
        .list_chats(who.user_id, &filter, page(0, 100, true))
        .await
        .expect("list chats");
    assert_eq!(
        got.total as usize,
        got.items.len(),
        "total counts the matches"
    );
    got.items.iter().map(|c| c.id).collect()
}

fn searching(words: &str) -> ChatFilter {
    ChatFilter {
        search: Some(words.to_string()),
        ..Default::default()
    }
}

async fn search(store: &dyn Store) {
    let who = new_account(store, true).await;
    let other = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let said = [
        (
            "Hello there, I'd like to book a flight to Lisbon.",
            "Sure! When?",
        ),
        (
            "What's the weather in Lisbon tomorrow?",
            "Sunny, 24 degrees.",
        ),
        ("Cancel my subscription please", "Done, it is cancelled."),
    ];
    let mut chats = Vec::new();
    for (i, (user, agent)) in said.iter().enumerate() {
        let start = 1_000_000 + i as i64 * 1_000;
        let (chat, _) = start_chat(
            store,
            &who,
            GroupChoice::New(Uuid::new_v4()),
            start,
            None,
            instance,
        )
        .await;
        store
            .apply_batch(&[WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id: chat,
                events: vec![
                    event(1, start + 1, EventRole::User, EventType::UserMessage, user),
                    event(
                        2,
                        start + 2,
                        EventRole::Agent,
                        EventType::AgentMessage,
                        agent,
                    ),
                    // Only what was said is searched, not other events' text.
                    event(
                        3,
                        start + 3,
                        EventRole::System,
                        EventType::SystemPrompt,
                        "zebra",
                    ),
                ],
            }])
            .await
            .unwrap();
        chats.push(chat);
    }
    // The other account said the same words: never found by `who`.
    let (theirs, _) = start_chat(
        store,
        &other,
        GroupChoice::New(Uuid::new_v4()),
        1_000_500,
        None,
        instance,
    )
    .await;
    store
        .apply_batch(&[WriteOp::AppendEvents {
            api_key_id: other.api_key_id,
            chat_id: theirs,
            events: vec![event(
                1,
                1_000_501,
                EventRole::User,
                EventType::UserMessage,
                "lisbon flight",
            )],
        }])
        .await
        .unwrap();

    assert_eq!(
        found(store, &who, searching("lisbon")).await,
        chats[..2].to_vec()
    );
    assert_eq!(
        found(store, &who, searching("LISBON flight")).await,
        chats[..1].to_vec(),
        "all words, case-insensitive"
    );
    assert_eq!(
        found(store, &who, searching("weather sunny")).await,
        chats[1..2].to_vec(),
        "words may come from different messages of the chat"
    );
    assert_eq!(
        found(store, &who, searching("cancel")).await,
        chats[2..3].to_vec(),
        "a word matches words it begins"
    );
    assert_eq!(
        found(store, &who, searching("ancel")).await,
        Vec::<Uuid>::new(),
        "but not their middle"
    );
    assert_eq!(
        found(store, &who, searching("zebra")).await,
        Vec::<Uuid>::new(),
        "only messages are searched"
    );
    assert_eq!(
        found(store, &who, searching("\"lisbon\" OR NEAR(")).await,
        Vec::<Uuid>::new(),
        "operators are words"
    );
    assert_eq!(
        found(store, &who, searching("flight")).await,
        chats[..1].to_vec(),
        "tenants never see each other"
    );
    assert_eq!(
        found(store, &other, searching("flight")).await,
        vec![theirs]
    );
    assert_eq!(
        found(store, &who, searching(" ,;")).await.len(),
        3,
        "no words is no filter"
    );

    // Combined with the other filters.
    let filter = ChatFilter {
        search: Some("lisbon".into()),
        started_from: Some(1_001_000),
        ..Default::default()
    };
    assert_eq!(found(store, &who, filter).await, chats[1..2].to_vec());
    let filter = ChatFilter {
        started_from: Some(1_000_000),
        started_before: Some(1_002_000),
        ..Default::default()
    };
    assert_eq!(
        found(store, &who, filter).await,
        chats[..2].to_vec(),
        "start range is [from, before)"
    );
    let filter = ChatFilter {
        search: Some("lisbon".into()),
        status: Some(ChatStatus::UserEnded),
        ..Default::default()
    };
    assert_eq!(found(store, &who, filter).await, Vec::<Uuid>::new());

    // Erased chats leave the index.
    store.delete_chats(who.user_id, &chats[..1]).await.unwrap();
    assert_eq!(
        found(store, &who, searching("lisbon")).await,
        chats[1..2].to_vec()
    );
    assert_eq!(
        found(store, &other, searching("lisbon")).await,
        vec![theirs],
        "others' chats stay"
    );
}

/// Text that did not come from a client message (upstream or language-model text,
/// metadata, a config id) may hold NUL characters: every backend stores them as U+FFFD
/// ([`storable_text`]) instead of failing the batch, and reads back the same text.
async fn nul_characters(store: &dyn Store) {
    let who = new_account(store, true).await;
    let bystander = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let group = Uuid::new_v4();
    let chat_id = Uuid::new_v4();
    let (theirs, _) = start_chat(
        store,
        &bystander,
        GroupChoice::New(Uuid::new_v4()),
        1,
        None,
        instance,
    )
    .await;
    let said = NewEvent {
        metadata: Some("{\"from\":\"up\0stream\"}".into()),
        emotion_features: Some("{\"Joy\0\":0.5}".into()),
        ..event(
            1,
            2,
            EventRole::Agent,
            EventType::AgentMessage,
            "zebra\0quagga\0",
        )
    };
    let out = store
        .apply_batch(&[
            WriteOp::StartChat {
                api_key_id: who.api_key_id,
                chat: NewChat {
                    id: chat_id,
                    user_id: who.user_id,
                    group: GroupChoice::New(group),
                    start_timestamp: 1,
                    metadata: Some("{\"k\":\"v\0\"}".into()),
                    config_id: Some("cfg\0".into()),
                    config_version: Some(1),
                    instance_id: instance,
                },
                events: vec![event(
                    0,
                    1,
                    EventRole::System,
                    EventType::ChatStartMessage,
                    "\0",
                )],
                max_active_chats: None,
            },
            WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id,
                events: vec![said.clone()],
            },
            // Another account's operation in the same batch is applied.
            WriteOp::AppendEvents {
                api_key_id: bystander.api_key_id,
                chat_id: theirs,
                events: vec![event(1, 2, EventRole::User, EventType::UserMessage, "hi")],
            },
        ])
        .await
        .expect("text with NUL characters is stored");
    assert_eq!(out, vec![OpOutcome::Applied; 3]);

    let chat = store.get_chat(who.user_id, chat_id).await.unwrap().unwrap();
    assert_eq!(chat.metadata.as_deref(), Some("{\"k\":\"v\u{FFFD}\"}"));
    assert_eq!(chat.config_id.as_deref(), Some("cfg\u{FFFD}"));
    let g = store
        .get_chat_group(who.user_id, group)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.most_recent_config_id.as_deref(), Some("cfg\u{FFFD}"));
    let events = store
        .list_chat_events(chat_id, page(0, 10, true))
        .await
        .unwrap();
    assert_eq!(events.items.len(), 2);
    assert_eq!(events.items[0].message_text.as_deref(), Some("\u{FFFD}"));
    let e = &events.items[1];
    assert_eq!(e.id, said.id);
    assert_eq!(
        e.message_text.as_deref(),
        Some("zebra\u{FFFD}quagga\u{FFFD}")
    );
    assert_eq!(
        e.metadata.as_deref(),
        Some("{\"from\":\"up\u{FFFD}stream\"}")
    );
    assert_eq!(e.emotion_features.as_deref(), Some("{\"Joy\u{FFFD}\":0.5}"));
    let theirs = store
        .get_chat(bystander.user_id, theirs)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(theirs.event_count, 2);

    // Filters read the text as it is stored, a NUL included.
    for config in ["cfg\0", "cfg\u{FFFD}"] {
        let filter = ChatFilter {
            config_id: Some(config.into()),
            ..Default::default()
        };
        assert_eq!(
            found(store, &who, filter).await,
            vec![chat_id],
            "{config:?}"
        );
        let groups = store
            .list_chat_groups(who.user_id, Some(config), page(0, 10, true))
            .await
            .unwrap();
        assert_eq!(groups.total, 1, "{config:?}");
    }
    // The replacement character separates words.
    assert_eq!(found(store, &who, searching("quagga")).await, vec![chat_id]);
    assert_eq!(found(store, &who, searching("zebra")).await, vec![chat_id]);
}

/// `max_active_chats` on `StartChat`: an account at its limit starts nothing more
/// ([`OpOutcome::TooManyChats`], nothing stored) until one of its chats ends; chats started
/// or ended earlier in the same batch count.
async fn active_chat_limit(store: &dyn Store) {
    let who = new_account(store, true).await;
    let other = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let start = |who: &Principal, group: GroupChoice, limit: Option<u32>| {
        start_op(who, group, 10, None, instance, limit)
    };
    let new = || GroupChoice::New(Uuid::new_v4());
    let apply = |ops: Vec<WriteOp>| async move { store.apply_batch(&ops).await.unwrap() };

    let (first, op) = start(&who, new(), Some(2));
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::Applied]);
    let (_, op) = start(&who, new(), Some(2));
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::Applied]);
    let group = new();
    let (third, op) = start(&who, group, Some(2));
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::TooManyChats]);
    assert!(store.get_chat(who.user_id, third).await.unwrap().is_none());
    assert!(store
        .get_chat_group(who.user_id, group.id())
        .await
        .unwrap()
        .is_none());
    let listed = store
        .list_chats(who.user_id, &ChatFilter::default(), page(0, 10, true))
        .await
        .unwrap();
    assert_eq!(listed.total, 2, "nothing of the refused chat is stored");
    // Resuming a group is refused alike, and leaves the group as it was.
    let before = store
        .get_chat_group(who.user_id, {
            let c = store.get_chat(who.user_id, first).await.unwrap().unwrap();
            c.chat_group_id
        })
        .await
        .unwrap()
        .unwrap();
    let (_, op) = start(&who, GroupChoice::Resume(before.id), Some(2));
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::TooManyChats]);
    let after = store
        .get_chat_group(who.user_id, before.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, before);
    // A higher limit, no limit, or another account: applied.
    let (_, op) = start(&who, new(), Some(3));
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::Applied]);
    let (_, op) = start(&who, new(), None);
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::Applied]);
    let (_, op) = start(&other, new(), Some(1));
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::Applied]);
    // At the limit again: four active chats.
    let (_, op) = start(&who, new(), Some(4));
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::TooManyChats]);

    // Ending a chat makes room.
    end_chat(store, &who, first, 20).await;
    let (_, op) = start(&who, new(), Some(4));
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::Applied]);
    let (_, op) = start(&who, new(), Some(4));
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::TooManyChats]);

    // In one batch: the first of two starts takes the last place; an end earlier in the
    // batch makes room for a start after it, not before it.
    let third = new_account(store, true).await;
    let (a, op_a) = start(&third, new(), Some(1));
    let (b, op_b) = start(&third, new(), Some(1));
    assert_eq!(
        apply(vec![op_a, op_b]).await,
        vec![OpOutcome::Applied, OpOutcome::TooManyChats]
    );
    assert!(store.get_chat(third.user_id, b).await.unwrap().is_none());
    let (c, op_c) = start(&third, new(), Some(1));
    let (d, op_d) = start(&third, new(), Some(1));
    let end_a = WriteOp::EndChat {
        api_key_id: third.api_key_id,
        chat_id: a,
        status: ChatStatus::UserEnded,
        end_timestamp: 30,
        events: vec![event(
            1,
            30,
            EventRole::System,
            EventType::ChatEndMessage,
            "",
        )],
    };
    assert_eq!(
        apply(vec![op_c, end_a, op_d]).await,
        vec![
            OpOutcome::TooManyChats,
            OpOutcome::Applied,
            OpOutcome::Applied
        ]
    );
    assert!(store.get_chat(third.user_id, c).await.unwrap().is_none());
    let d = store.get_chat(third.user_id, d).await.unwrap().unwrap();
    assert_eq!((d.status, d.event_count), (ChatStatus::Active, 1));

    // A revoked key is reported as such before the limit is looked at.
    store.revoke_api_key(third.api_key_id, 40).await.unwrap();
    let (_, op) = start(&third, new(), Some(1));
    assert_eq!(apply(vec![op]).await, vec![OpOutcome::KeyRevoked]);
}
