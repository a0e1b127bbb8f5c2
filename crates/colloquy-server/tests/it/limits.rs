//! `[limits]` on chat sockets: per-account message rate and concurrent chats.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn an_account_over_its_message_rate_gets_errors_and_others_do_not() {
    let (srv, _) = TestServer::start(Backend::Sqlite, |s| {
        s.limits.max_messages_per_second_per_account = 5;
        s.engine.client.speak = false;
    })
    .await
    .unwrap();
    let (busy, calm) = (srv.key(true).await, srv.key(true).await);
    let (mut ws, _) = srv.connect(&busy.api_key, "").await;
    let (mut other, _) = srv.connect(&calm.api_key, "").await;
    for i in 0..20 {
        send_json(
            &mut ws,
            json!({"type": "user_input", "text": format!("m{i}")}),
        )
        .await;
    }
    let (mut echoed, mut limited) = (Vec::new(), 0);
    for _ in 0..20 {
        let m = recv_json(&mut ws).await;
        match m["type"].as_str().unwrap() {
            "user_message" => echoed.push(m["message"]["content"].as_str().unwrap().to_string()),
            "error" => {
                assert_eq!(m["code"], "E0105", "{m}");
                assert_eq!(m["slug"], "rate_limited", "{m}");
                assert!(m["message"]
                    .as_str()
                    .unwrap()
                    .contains("max_messages_per_second_per_account"));
                limited += 1;
            }
            t => panic!("unexpected {t}: {m}"),
        }
    }
    assert!(
        (5..=7).contains(&echoed.len()),
        "a burst of 5, plus what refilled meanwhile: {echoed:?}"
    );
    assert_eq!(echoed.len() + limited, 20);
    // Another account is not limited by this one.
    for i in 0..5 {
        send_json(
            &mut other,
            json!({"type": "user_input", "text": format!("o{i}")}),
        )
        .await;
        let m = recv_json(&mut other).await;
        assert_eq!(m["type"], "user_message", "{m}");
    }
    // The limited session goes on once the rate allows.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send_json(&mut ws, json!({"type": "user_input", "text": "later"})).await;
    let m = recv_json(&mut ws).await;
    assert_eq!(m["message"]["content"], "later", "{m}");
    // Only echoed messages were stored.
    ws.close(None).await.unwrap();
    let _ = recv_close(&mut ws).await;
    let (_, chats) = srv.get(&busy.api_key, "/v0/evi/chats").await;
    let chat_id = chats["chats_page"][0]["id"].as_str().unwrap().to_string();
    let stored: Vec<String> = srv
        .all_events(&busy.api_key, &chat_id, 100)
        .await
        .iter()
        .filter(|e| e["type"] == "USER_MESSAGE")
        .map(|e| e["message_text"].as_str().unwrap().to_string())
        .collect();
    echoed.push("later".into());
    assert_eq!(stored, echoed);
    srv.stop(None).await;
}

/// Opens a chat socket; the first message (`chat_metadata` or an `error`).
async fn open(srv: &TestServer, key: &str) -> (Ws, serde_json::Value) {
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        srv.ws_url(""),
    )
    .unwrap();
    req.headers_mut()
        .insert("X-Hume-Api-Key", key.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let first = recv_json(&mut ws).await;
    (ws, first)
}

async fn concurrent_chats_are_limited(srv: &TestServer, retention: bool) {
    let key = srv.key(retention).await;
    let other = srv.key(retention).await;
    let (mut first, m) = open(srv, &key.api_key).await;
    assert_eq!(m["type"], "chat_metadata", "{m}");
    let (_second, m) = open(srv, &key.api_key).await;
    assert_eq!(m["type"], "chat_metadata", "{m}");
    let (mut third, m) = open(srv, &key.api_key).await;
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["code"], "E0203", "{m}");
    assert!(m["message"]
        .as_str()
        .unwrap()
        .contains("max_concurrent_chats_per_account"));
    assert_eq!(
        recv_close(&mut third).await,
        Some(1000),
        "a retry cannot help"
    );
    // Another account is not affected.
    let (_elsewhere, m) = open(srv, &other.api_key).await;
    assert_eq!(m["type"], "chat_metadata", "{m}");
    // Ending a chat makes room.
    first.close(None).await.unwrap();
    let _ = recv_close(&mut first).await;
    let mut m = serde_json::Value::Null;
    for _ in 0..50 {
        let (_ws, got) = open(srv, &key.api_key).await;
        m = got;
        if m["type"] == "chat_metadata" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m["type"], "chat_metadata", "{m}");
    if retention {
        // The refused chat left nothing behind: two ended or open, one new.
        let (_, chats) = srv.get(&key.api_key, "/v0/evi/chats").await;
        assert_eq!(chats["chats_page"].as_array().unwrap().len(), 3, "{chats}");
    }
}

#[tokio::test]
async fn concurrent_chats_of_an_account_without_retention_are_limited() {
    let (srv, _) = TestServer::start(Backend::Sqlite, |s| {
        s.limits.max_concurrent_chats_per_account = 2;
    })
    .await
    .unwrap();
    concurrent_chats_are_limited(&srv, false).await;
    srv.stop(None).await;
}

#[tokio::test]
async fn concurrent_chats_of_an_account_are_limited_on_each_backend() {
    on_each_backend(
        |s| s.limits.max_concurrent_chats_per_account = 2,
        |srv| async move {
            concurrent_chats_are_limited(&srv, true).await;
            srv
        },
    )
    .await;
}
