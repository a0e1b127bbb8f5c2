//! Chat webhooks: subscriptions stored with the chat, deliveries written in the
//! transaction of the start, the end, a tool call and crash recovery; claims under leases
//! (never two holders), reports by the holder only, listings per account, retries, signing
//! keys.

use super::support::*;
use crate::*;
use colloquy_wire::{ChatStatus, EventRole, EventType};
use uuid::Uuid;

fn subs(url: &str) -> Vec<WebhookSubscription> {
    vec![WebhookSubscription {
        url: url.into(),
        events: WebhookEvent::ALL.to_vec(),
        server_wide: false,
    }]
}

async fn all(store: &dyn Store, who: Option<Uuid>, filter: DeliveryFilter) -> Vec<DeliveryRecord> {
    store
        .list_webhook_deliveries(who, &filter, page(0, 100, true))
        .await
        .unwrap()
        .items
}

pub async fn webhook_outbox(store: &dyn Store) {
    let who = new_account(store, true).await;
    let other = new_account(store, true).await;
    let instance = Uuid::new_v4();
    store.heartbeat_instance(instance, 10_000).await.unwrap();
    let group = Uuid::new_v4();
    let (chat_id, mut op) = start_op(
        &who,
        GroupChoice::New(group),
        10_000,
        Some("cfg"),
        instance,
        None,
    );
    if let WriteOp::StartChat { chat, events, .. } = &mut op {
        chat.webhooks = subs("https://example.com/a");
        events.push(event(
            1,
            10_001,
            EventRole::User,
            EventType::SessionSettings,
            r#"{"type":"session_settings","custom_session_id":"first"}"#,
        ));
    }
    assert_eq!(
        store.apply_batch(&[op]).await.unwrap(),
        [OpOutcome::Applied]
    );
    let tool = r#"{"type":"tool_call","name":"w","parameters":"{}","tool_call_id":"t1","tool_type":"function","response_required":true}"#;
    let out = store
        .apply_batch(&[
            WriteOp::AppendEvents {
                api_key_id: who.api_key_id,
                chat_id,
                events: vec![
                    event(
                        2,
                        11_000,
                        EventRole::User,
                        EventType::SessionSettings,
                        r#"{"type":"session_settings","custom_session_id":"second"}"#,
                    ),
                    event(3, 11_500, EventRole::Tool, EventType::FunctionCall, tool),
                ],
            },
            WriteOp::EndChat {
                api_key_id: who.api_key_id,
                chat_id,
                status: ChatStatus::UserEnded,
                end_timestamp: 13_999,
                events: vec![event(
                    4,
                    13_999,
                    EventRole::System,
                    EventType::ChatEndMessage,
                    "",
                )],
            },
        ])
        .await
        .unwrap();
    assert_eq!(out, [OpOutcome::Applied, OpOutcome::Applied]);
    let rows = all(store, Some(who.user_id), DeliveryFilter::default()).await;
    let events: Vec<WebhookEvent> = rows.iter().map(|d| d.event).collect();
    assert_eq!(
        events,
        [
            WebhookEvent::ChatStarted,
            WebhookEvent::ToolCall,
            WebhookEvent::ChatEnded
        ]
    );
    let body = |i: usize| serde_json::from_str::<serde_json::Value>(&rows[i].body).unwrap();
    assert_eq!(body(0)["custom_session_id"], "first");
    assert_eq!(body(0)["start_time"], 10_000);
    assert_eq!(body(0)["config_id"], "cfg");
    assert_eq!(body(1)["tool_call_message"]["custom_session_id"], "second");
    assert_eq!(body(2)["custom_session_id"], "second");
    assert_eq!(body(2)["duration_seconds"], 3);
    assert_eq!(body(2)["end_reason"], "USER_ENDED");
    assert!(rows
        .iter()
        .all(|d| d.status == DeliveryStatus::Pending && d.attempts == 0));
    assert!(all(store, Some(other.user_id), DeliveryFilter::default())
        .await
        .is_empty());
    let ended_only = DeliveryFilter {
        chat_id: Some(chat_id),
        status: None,
    };
    assert_eq!(all(store, Some(who.user_id), ended_only).await.len(), 3);

    // Claims: one holder at a time; another claims only once the lease ran out.
    let now = crate::now_ms();
    let a = store
        .claim_webhook_deliveries("a", now, 60_000, 2)
        .await
        .unwrap();
    assert_eq!(a.len(), 2);
    let b = store
        .claim_webhook_deliveries("b", now, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert!(a.iter().all(|d| d.id != b[0].id));
    assert!(store
        .claim_webhook_deliveries("c", now, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    // Only the holder reports.
    let report = |id, status, next| AttemptReport {
        id,
        status,
        status_code: Some(500),
        error: Some("HTTP 500".into()),
        next_attempt_at: next,
    };
    let n = store
        .finish_webhook_deliveries(
            "b",
            &[report(a[0].id, DeliveryStatus::Delivered, None)],
            now,
        )
        .await
        .unwrap();
    assert_eq!(n, 0, "a report without the lease changes nothing");
    let n = store
        .finish_webhook_deliveries(
            "a",
            &[
                report(a[0].id, DeliveryStatus::Pending, Some(now + 2_000)),
                report(a[1].id, DeliveryStatus::Failed, None),
            ],
            now,
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(store
        .claim_webhook_deliveries("c", now + 1_000, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let due = store
        .claim_webhook_deliveries("c", now + 2_000, 60_000, 10)
        .await
        .unwrap();
    assert_eq!((due.len(), due[0].id, due[0].attempts), (1, a[0].id, 1));
    // b's lease runs out: taken over.
    let taken = store
        .claim_webhook_deliveries("d", now + 60_001, 60_000, 10)
        .await
        .unwrap();
    assert!(taken.iter().any(|d| d.id == b[0].id));
    let failed = DeliveryFilter {
        chat_id: None,
        status: Some(DeliveryStatus::Failed),
    };
    let f = all(store, Some(who.user_id), failed.clone()).await;
    assert_eq!(
        (f.len(), f[0].last_status_code, f[0].attempts),
        (1, Some(500), 1)
    );
    // A retry by hand: pending again, due now; only by its account.
    assert!(store
        .retry_webhook_delivery(Some(other.user_id), f[0].id, now)
        .await
        .unwrap()
        .is_none());
    let r = store
        .retry_webhook_delivery(Some(who.user_id), f[0].id, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.status, r.next_attempt_at),
        (DeliveryStatus::Pending, Some(now))
    );
    assert!(all(store, None, failed).await.is_empty());

    // Crash recovery enqueues chat_ended (ERROR, at the last event) in its transaction.
    let dead = Uuid::new_v4();
    store.heartbeat_instance(dead, 20_000).await.unwrap();
    let (orphan, mut op) = start_op(
        &who,
        GroupChoice::New(Uuid::new_v4()),
        20_000,
        None,
        dead,
        None,
    );
    if let WriteOp::StartChat { chat, .. } = &mut op {
        chat.webhooks = vec![WebhookSubscription {
            url: "https://example.com/ended-only".into(),
            events: vec![WebhookEvent::ChatEnded],
            server_wide: true,
        }];
    }
    store.apply_batch(&[op]).await.unwrap();
    store
        .apply_batch(&[WriteOp::AppendEvents {
            api_key_id: who.api_key_id,
            chat_id: orphan,
            events: vec![event(
                1,
                25_500,
                EventRole::User,
                EventType::UserMessage,
                "hi",
            )],
        }])
        .await
        .unwrap();
    assert!(store.close_orphaned_chats(21_000).await.unwrap() >= 1);
    let rows = all(
        store,
        Some(who.user_id),
        DeliveryFilter {
            chat_id: Some(orphan),
            status: None,
        },
    )
    .await;
    assert_eq!(rows.len(), 1, "only chat_ended was subscribed");
    let b: serde_json::Value = serde_json::from_str(&rows[0].body).unwrap();
    assert_eq!(b["end_reason"], "ERROR");
    assert_eq!(b["end_time"], 25_500);
    assert_eq!(b["duration_seconds"], 5);
    let claimed = store
        .claim_webhook_deliveries("e", crate::now_ms(), 60_000, 100)
        .await
        .unwrap();
    assert!(claimed.iter().any(|d| d.id == rows[0].id && d.server_wide));

    // Deleting the chats deletes their deliveries.
    store
        .delete_chats(who.user_id, &[chat_id, orphan])
        .await
        .unwrap();
    assert!(all(store, Some(who.user_id), DeliveryFilter::default())
        .await
        .is_empty());

    // Signing keys: set once, replaced on rotation, none for an unknown account.
    let k = store.webhook_signing_key(who.user_id, "k1").await.unwrap();
    assert_eq!(k.as_deref(), Some("k1"));
    assert_eq!(
        store
            .webhook_signing_key(who.user_id, "k2")
            .await
            .unwrap()
            .as_deref(),
        Some("k1")
    );
    assert!(store
        .set_webhook_signing_key(who.user_id, "k3")
        .await
        .unwrap());
    assert_eq!(
        store
            .webhook_signing_key(who.user_id, "k4")
            .await
            .unwrap()
            .as_deref(),
        Some("k3")
    );
    assert_eq!(
        store
            .webhook_signing_key(Uuid::new_v4(), "x")
            .await
            .unwrap(),
        None
    );
    assert!(!store
        .set_webhook_signing_key(Uuid::new_v4(), "x")
        .await
        .unwrap());
}

pub async fn webhooks_roll_back_with_their_batch(store: &dyn Store) {
    let who = new_account(store, true).await;
    let instance = Uuid::new_v4();
    let (chat_id, mut op) = start_op(
        &who,
        GroupChoice::New(Uuid::new_v4()),
        1_000,
        None,
        instance,
        None,
    );
    if let WriteOp::StartChat { chat, .. } = &mut op {
        chat.webhooks = subs("https://example.com/b");
    }
    // A duplicate sequence number fails the whole batch: no chat, no delivery.
    let dup = WriteOp::AppendEvents {
        api_key_id: who.api_key_id,
        chat_id,
        events: vec![event(
            0,
            1_001,
            EventRole::User,
            EventType::UserMessage,
            "dup",
        )],
    };
    assert!(store.apply_batch(&[op, dup]).await.is_err());
    assert!(all(store, Some(who.user_id), DeliveryFilter::default())
        .await
        .is_empty());
    assert!(store
        .get_chat(who.user_id, chat_id)
        .await
        .unwrap()
        .is_none());
}
