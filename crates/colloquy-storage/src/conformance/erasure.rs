//! Erasing chats and groups with everything stored about them.

use super::support::*;
use crate::*;
use colloquy_wire::{EventRole, EventType};
use uuid::Uuid;

pub async fn deletion(store: &dyn Store) {
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
