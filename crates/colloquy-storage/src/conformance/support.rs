//! What the scenarios share: accounts, chats and events made the same way, and reads.

use crate::*;
use colloquy_wire::{ChatStatus, EventRole, EventType};
use uuid::Uuid;

pub fn page(number: u32, size: u32, ascending: bool) -> PageRequest {
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

pub fn event(seq: i64, ts: i64, role: EventRole, ty: EventType, text: &str) -> NewEvent {
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
pub fn start_op(
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
            webhooks: Vec::new(),
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

pub async fn end_chat(store: &dyn Store, who: &Principal, chat: Uuid, at: i64) {
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

pub async fn status_of(store: &dyn Store, who: &Principal, chat: Uuid) -> ReconstructionRecord {
    store
        .ensure_reconstructions(who.user_id, &[chat], 0)
        .await
        .unwrap()
        .pop()
        .unwrap()
}

/// Chats whose ids `list_chats` returns for `filter`, oldest first.
pub async fn found(store: &dyn Store, who: &Principal, filter: ChatFilter) -> Vec<Uuid> {
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

pub fn searching(words: &str) -> ChatFilter {
    ChatFilter {
        search: Some(words.to_string()),
        ..Default::default()
    }
}
