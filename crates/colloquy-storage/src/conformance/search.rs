//! Full-text search over what was said, and text with NUL characters.

use super::support::*;
use crate::*;
use colloquy_wire::{ChatStatus, EventRole, EventType};
use uuid::Uuid;

pub async fn search(store: &dyn Store) {
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
pub async fn nul_characters(store: &dyn Store) {
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
                    webhooks: Vec::new(),
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
