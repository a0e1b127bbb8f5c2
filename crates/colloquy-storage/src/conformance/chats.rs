//! Chats, their events and their groups: writing, reading back, ordering and paging.

use super::support::*;
use crate::*;
use colloquy_wire::{ChatStatus, EventRole, EventType};
use uuid::Uuid;

pub async fn chat_lifecycle_and_listing(store: &dyn Store) {
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

pub async fn resume_and_groups(store: &dyn Store) {
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
pub async fn group_event_order(store: &dyn Store) {
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
