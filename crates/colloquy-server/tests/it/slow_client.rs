//! Clients that stop reading: the session must end on its own (send timeout, or the
//! inactivity and max-duration limits while a send is blocked) and let go of the connection.

use crate::harness::{Backend, TestServer, Ws};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Opens a chat over a socket with a small receive buffer, so that the server's sends block
/// soon after the client stops reading; returns the socket and its `chat_metadata`.
async fn connect_small_buffer(srv: &TestServer, key: &str) -> (Ws, Value) {
    let addr = srv.base.trim_start_matches("http://").to_string();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(addr.parse().unwrap()).await.unwrap();
    let mut req = srv.ws_url("").into_client_request().unwrap();
    req.headers_mut()
        .insert("X-Hume-Api-Key", key.parse().unwrap());
    let (mut ws, _) =
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let meta = crate::harness::recv_json(&mut ws).await;
    assert_eq!(meta["type"], "chat_metadata", "{meta}");
    (ws, meta)
}

/// Sends large `user_input` messages (each echoed in full) without reading anything, until
/// the socket stops taking them.
async fn flood_without_reading(ws: &mut Ws) -> usize {
    let text = "x".repeat(256 * 1024);
    let mut sent = 0;
    for _ in 0..64 {
        let msg = Message::Text(
            json!({"type": "user_input", "text": text})
                .to_string()
                .into(),
        );
        match tokio::time::timeout(Duration::from_millis(500), ws.send(msg)).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    sent
}

/// Polls the chat until it is no longer ACTIVE (at most `within`); its record.
async fn wait_until_ended(srv: &TestServer, key: &str, chat_id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, chat) = srv
            .get(key, &format!("/v0/evi/chats/{chat_id}?page_size=1"))
            .await;
        assert_eq!(status, 200, "{chat}");
        if chat["status"] != "ACTIVE" {
            return chat;
        }
        assert!(
            Instant::now() < deadline,
            "the chat is still ACTIVE after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After the chat ended, the server has closed the connection: reading drains what was
/// buffered and then reaches the end of the stream (a close frame, EOF or a reset).
async fn assert_connection_released(ws: &mut Ws) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the server kept the connection open"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

fn end_metadata(srv_chat_events: &[Value]) -> Value {
    let end = srv_chat_events
        .iter()
        .find(|e| e["type"] == "CHAT_END_MESSAGE")
        .expect("a CHAT_END_MESSAGE");
    serde_json::from_str(end["metadata"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_client_that_stops_reading_is_ended_after_the_send_timeout() {
    let (srv, _) = TestServer::start(Backend::Sqlite, |s| {
        s.chat.send_timeout_secs = 1;
        s.chat.inactivity_timeout_secs = 600;
        s.engine.client.speak = false;
    })
    .await
    .unwrap();
    let key = srv.key(true).await;
    let (mut ws, meta) = connect_small_buffer(&srv, &key.api_key).await;
    let chat_id = meta["chat_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let sent = flood_without_reading(&mut ws).await;
    assert!(sent > 0);
    let chat = wait_until_ended(&srv, &key.api_key, &chat_id, Duration::from_secs(15)).await;
    assert_eq!(chat["status"], "ERROR", "{chat}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "ended only after {:?}",
        started.elapsed()
    );
    let events = srv.all_events(&key.api_key, &chat_id, 100).await;
    let meta = end_metadata(&events);
    assert_eq!(meta["reason"], "client_not_reading", "{meta}");
    // Every stored user message was acknowledged or not, but none is half-written.
    for e in events.iter().filter(|e| e["type"] == "USER_MESSAGE") {
        assert_eq!(e["message_text"].as_str().unwrap().len(), 256 * 1024);
    }
    assert_connection_released(&mut ws).await;
    // Another chat on the same server is unaffected.
    let (mut other, _) = srv.connect(&key.api_key, "").await;
    crate::harness::send_json(
        &mut other,
        json!({"type": "user_input", "text": "still here"}),
    )
    .await;
    let echo = crate::harness::recv_json(&mut other).await;
    assert_eq!(echo["type"], "user_message", "{echo}");
    assert_eq!(echo["message"]["content"], "still here");
    srv.stop(None).await;
}

#[tokio::test]
async fn inactivity_ends_a_chat_whose_send_is_blocked() {
    let (srv, _) = TestServer::start(Backend::Sqlite, |s| {
        s.chat.send_timeout_secs = 600;
        s.chat.inactivity_timeout_secs = 2;
        s.engine.client.speak = false;
    })
    .await
    .unwrap();
    let key = srv.key(true).await;
    let (mut ws, meta) = connect_small_buffer(&srv, &key.api_key).await;
    let chat_id = meta["chat_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    flood_without_reading(&mut ws).await;
    let chat = wait_until_ended(&srv, &key.api_key, &chat_id, Duration::from_secs(10)).await;
    assert_eq!(chat["status"], "INACTIVITY_TIMEOUT", "{chat}");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_connection_released(&mut ws).await;
    srv.stop(None).await;
}

#[tokio::test]
async fn max_duration_ends_a_chat_whose_send_is_blocked() {
    let (srv, _) = TestServer::start(Backend::Sqlite, |s| {
        s.chat.send_timeout_secs = 600;
        s.chat.max_duration_secs = 2;
        s.engine.client.speak = false;
    })
    .await
    .unwrap();
    let key = srv.key(true).await;
    let (mut ws, meta) = connect_small_buffer(&srv, &key.api_key).await;
    let chat_id = meta["chat_id"].as_str().unwrap().to_string();
    flood_without_reading(&mut ws).await;
    let chat = wait_until_ended(&srv, &key.api_key, &chat_id, Duration::from_secs(10)).await;
    assert_eq!(chat["status"], "MAX_DURATION_TIMEOUT", "{chat}");
    assert_connection_released(&mut ws).await;
    srv.stop(None).await;
}
