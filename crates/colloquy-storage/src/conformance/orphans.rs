//! Crash recovery: chats of server instances that stopped sending heartbeats.

use super::support::*;
use crate::*;
use colloquy_wire::{ChatStatus, EventRole, EventType};
use uuid::Uuid;

pub async fn orphaned_chats(store: &dyn Store) {
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
