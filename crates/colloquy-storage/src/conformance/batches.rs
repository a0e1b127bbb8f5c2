//! The outcome of each operation of a batch, and of a batch as a whole.

use super::support::*;
use crate::*;
use colloquy_wire::{ChatStatus, EventRole, EventType};
use uuid::Uuid;

/// A batch with a duplicate event sequence number fails as a whole: nothing of it is
/// stored, not even its valid operations, and the next batch commits normally.
pub async fn failed_batch_changes_nothing(store: &dyn Store) {
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

pub async fn revocation_in_batches(store: &dyn Store) {
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

/// A batch of nothing but appends and key checks (PostgreSQL writes it in one statement):
/// each operation's outcome is the one a mixed batch would give, only the events of live
/// keys on `ACTIVE` chats are stored and counted, several operations on one chat add up,
/// and a failing event fails the whole batch.
pub async fn appends_only_batches(store: &dyn Store) {
    let who = new_account(store, true).await;
    let gone = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let mut chats = Vec::new();
    for who in [&who, &who, &gone] {
        let group = GroupChoice::New(Uuid::new_v4());
        chats.push(start_chat(store, who, group, 1_000, None, instance).await.0);
    }
    let [a, ended, revoked_chat] = chats[..] else {
        unreachable!()
    };
    end_chat(store, &who, ended, 1_500).await;
    store.revoke_api_key(gone.api_key_id, 1_600).await.unwrap();
    let say = |seq: i64, text: &str| {
        event(
            seq,
            2_000 + seq,
            EventRole::User,
            EventType::UserMessage,
            text,
        )
    };
    let append = |who: &Principal, chat_id: Uuid, events: Vec<NewEvent>| WriteOp::AppendEvents {
        api_key_id: who.api_key_id,
        chat_id,
        events,
    };
    let out = store
        .apply_batch(&[
            append(&who, a, vec![say(1, "quokka one"), say(2, "quokka two")]),
            WriteOp::CheckKey {
                api_key_id: gone.api_key_id,
            },
            append(&who, ended, vec![say(2, "quokka ended")]),
            append(&gone, revoked_chat, vec![say(1, "quokka revoked")]),
            append(&who, a, vec![say(3, "quokka three")]),
            WriteOp::CheckKey {
                api_key_id: who.api_key_id,
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            OpOutcome::Applied,
            OpOutcome::KeyRevoked,
            OpOutcome::ChatClosed,
            OpOutcome::KeyRevoked,
            OpOutcome::Applied,
            OpOutcome::Applied,
        ]
    );
    let texts = |chat: Uuid| async move {
        store
            .list_chat_events(chat, page(0, 10, true))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| (e.seq, e.message_text.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let stored = texts(a).await;
    assert_eq!(
        stored[1..],
        [
            (1, "quokka one".to_string()),
            (2, "quokka two".to_string()),
            (3, "quokka three".to_string())
        ]
    );
    let chat = store.get_chat(who.user_id, a).await.unwrap().unwrap();
    assert_eq!(chat.event_count, 4, "start + the three appended");
    assert_eq!(texts(ended).await.len(), 2, "start and end only");
    let chat = store.get_chat(who.user_id, ended).await.unwrap().unwrap();
    assert_eq!((chat.event_count, chat.status), (2, ChatStatus::UserEnded));
    assert_eq!(
        texts(revoked_chat).await.len(),
        1,
        "the revoked key's append dropped"
    );
    let chat = store
        .get_chat(gone.user_id, revoked_chat)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(chat.event_count, 1);
    let search = |words: &str| ChatFilter {
        search: Some(words.into()),
        ..Default::default()
    };
    assert_eq!(found(store, &who, search("quokka three")).await, vec![a]);
    assert!(found(store, &who, search("ended")).await.is_empty());
    assert!(found(store, &gone, search("quokka")).await.is_empty());

    // A duplicate sequence number fails the batch as a whole.
    let failed = store
        .apply_batch(&[
            append(&who, a, vec![say(4, "quokka four")]),
            append(&who, a, vec![say(3, "quokka again")]),
        ])
        .await;
    assert!(
        failed.is_err(),
        "a duplicate sequence number must fail the batch"
    );
    assert_eq!(
        texts(a).await.len(),
        4,
        "nothing of the failed batch is stored"
    );
    let chat = store.get_chat(who.user_id, a).await.unwrap().unwrap();
    assert_eq!(chat.event_count, 4, "nor counted");
    assert!(found(store, &who, search("four")).await.is_empty());
}

pub async fn large_batches(store: &dyn Store) {
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

/// `max_active_chats` on `StartChat`: an account at its limit starts nothing more
/// ([`OpOutcome::TooManyChats`], nothing stored) until one of its chats ends; chats started
/// or ended earlier in the same batch count.
pub async fn active_chat_limit(store: &dyn Store) {
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
