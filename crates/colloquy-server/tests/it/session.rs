//! The chat socket: recording, echoes, bad input, limits, revocation, timeouts, shutdown.

use crate::harness::*;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_chat_is_recorded_and_echoed_after_commit() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let key = srv.key(true).await;
            let (mut ws, meta) = srv
            .connect(
                &key.api_key,
                "session_settings[system_prompt]=Be%20brief&session_settings[variables][age]=30.0\
                 &session_settings[audio][encoding]=linear16&session_settings[audio][channels]=1\
                 &session_settings[audio][sample_rate]=16000",
            )
            .await;
            let chat_id = meta["chat_id"].as_str().unwrap().to_string();
            let group_id = meta["chat_group_id"].as_str().unwrap().to_string();
            assert!(meta["request_id"].is_string());

            send_json(
                &mut ws,
                json!({"type": "user_input", "text": "Hello there"}),
            )
            .await;
            let echo = recv_json(&mut ws).await;
            assert_eq!(echo["type"], "user_message");
            assert_eq!(echo["message"]["role"], "user");
            assert_eq!(echo["message"]["content"], "Hello there");
            assert_eq!(echo["from_text"], true);
            assert_eq!(echo["interim"], false);
            // Acknowledged means committed: readable at once, before the chat ends.
            let events = srv.all_events(&key.api_key, &chat_id, 100).await;
            assert_eq!(events.last().unwrap()["message_text"], "Hello there");

            send_json(
                &mut ws,
                json!({"type": "assistant_input", "text": "Hi! How can I help?"}),
            )
            .await;
            // Spoken by the built-in voice (audio_output chunks), then assistant_end.
            let (said, _) = recv_answer(&mut ws, "Hi! How can I help?").await;

            send_json(
                &mut ws,
                json!({"type": "session_settings", "variables": {"ok": true, "n": 5}}),
            )
            .await;
            send_json(&mut ws, json!({"type": "pause_assistant_message"})).await;
            send_json(&mut ws, json!({"type": "resume_assistant_message"})).await;
            send_json(
                &mut ws,
                json!({"type": "tool_response", "tool_call_id": "t1", "content": "42"}),
            )
            .await;
            send_json(&mut ws, json!({"type": "audio_input", "data": "AAAAAA=="})).await;
            send_json(&mut ws, json!({"type": "audio_input", "data": "AAAAAA=="})).await;
            ws.close(None).await.unwrap();
            let _ = recv_close(&mut ws).await;

            let events = srv.all_events(&key.api_key, &chat_id, 3).await;
            assert_eq!(
                types(&events),
                vec![
                    "CHAT_START_MESSAGE",
                    "SESSION_SETTINGS",
                    "SYSTEM_PROMPT",
                    "USER_MESSAGE",
                    "AGENT_MESSAGE",
                    "SESSION_SETTINGS",
                    "PAUSE_ONSET",
                    "RESUME_ONSET",
                    "FUNCTION_CALL_RESPONSE",
                    "USER_RECORDING_START_MESSAGE",
                    "CHAT_END_MESSAGE",
                ]
            );
            let roles: Vec<&str> = events.iter().map(|e| e["role"].as_str().unwrap()).collect();
            assert_eq!(roles[3], "USER");
            assert_eq!(roles[4], "AGENT");
            assert_eq!(roles[8], "TOOL");
            assert_eq!(
                events[4]["id"], said["id"],
                "assistant_message.id is the AGENT_MESSAGE id"
            );
            let first: Value =
                serde_json::from_str(events[1]["message_text"].as_str().unwrap()).unwrap();
            assert_eq!(first["type"], "session_settings");
            assert_eq!(first["variables"]["age"], "30.0");
            assert_eq!(events[2]["message_text"], "Be brief");
            let later: Value =
                serde_json::from_str(events[5]["message_text"].as_str().unwrap()).unwrap();
            assert_eq!(later["variables"], json!({"ok": "true", "n": "5"}));
            assert_eq!(events[8]["message_text"], "42");
            let ts: Vec<i64> = events
                .iter()
                .map(|e| e["timestamp"].as_i64().unwrap())
                .collect();
            assert!(
                ts.windows(2).all(|w| w[0] <= w[1]),
                "timestamps never go back: {ts:?}"
            );

            let (_, chat) = srv
                .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}"))
                .await;
            assert_eq!(chat["status"], "USER_ENDED");
            assert_eq!(chat["chat_group_id"], group_id.as_str());
            assert_eq!(chat["end_timestamp"], events.last().unwrap()["timestamp"]);
            let (_, list) = srv.get(&key.api_key, "/v0/evi/chats").await;
            assert_eq!(list["chats_page"][0]["event_count"], 11);
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_session_goes_on() {
    on_each_backend(
        |s| s.chat.max_message_bytes = 4096,
        |srv| async move {
            let key = srv.key(true).await;
            let (mut ws, meta) = srv.connect(&key.api_key, "").await;
            let cases: Vec<(Message, &str, &str)> = vec![
                (Message::Text("not json".into()), "E0100", "not valid JSON"),
                (Message::Text("{\"type\":\"dance\"}".into()), "E0101", "unknown message type `dance`"),
                (Message::Text("{\"type\":\"user_input\"}".into()), "E0101", "missing field `text`"),
                (Message::Text("[1,2]".into()), "E0101", "JSON object"),
                (Message::Binary(vec![1u8, 2, 3].into()), "E0101", "binary frames"),
                (
                    Message::Text(json!({"type":"audio_input","data":"%%%"}).to_string().into()),
                    "E0104",
                    "not valid base64",
                ),
                (
                    Message::Text(json!({"type":"audio_input","data":"AAAAAAAAAAAAAAAA"}).to_string().into()),
                    "E0104",
                    "could not be decoded",
                ),
                (
                    Message::Text(json!({"type":"session_settings","audio":{"channels":1,"sample_rate":3,"encoding":"linear16"}}).to_string().into()),
                    "E0101",
                    "sample_rate",
                ),
                (
                    Message::Text(json!({"type":"user_input","text":"x".repeat(5000)}).to_string().into()),
                    "E0102",
                    "limit is 4096 bytes",
                ),
            ];
            for (msg, code, text) in cases {
                ws.send(msg).await.unwrap();
                let err = recv_json(&mut ws).await;
                assert_eq!(err["type"], "error");
                assert_eq!(err["code"], code, "{err}");
                assert!(err["message"].as_str().unwrap().contains(text), "{err}");
                assert_eq!(err["request_id"], meta["request_id"]);
            }
            send_json(&mut ws, json!({"type": "user_input", "text": "still here"})).await;
            assert_eq!(recv_json(&mut ws).await["message"]["content"], "still here");
            // Far over the limit: the transport refuses it and closes with 1009.
            ws.send(Message::Text("y".repeat(4096 * 5).into())).await.unwrap();
            let mut code = None;
            loop {
                match tokio::time::timeout(std::time::Duration::from_secs(5), futures::StreamExt::next(&mut ws)).await {
                    Ok(Some(Ok(Message::Close(c)))) => {
                        code = c.map(|c| u16::from(c.code));
                        break;
                    }
                    Ok(Some(Ok(_))) => continue,
                    _ => break,
                }
            }
            assert!(code.is_none() || code == Some(1009), "close code {code:?}");
            let chat_id = meta["chat_id"].as_str().unwrap();
            let events = srv.all_events(&key.api_key, chat_id, 100).await;
            assert_eq!(
                types(&events),
                vec!["CHAT_START_MESSAGE", "USER_MESSAGE", "CHAT_END_MESSAGE"],
                "bad messages store nothing"
            );
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn resume_joins_the_group_and_refusals_leave_no_chat() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let alice = srv.key(true).await;
            let bob = srv.key(true).await;
            let (mut ws, meta) = srv.connect(&alice.api_key, "").await;
            ws.close(None).await.unwrap();
            let _ = recv_close(&mut ws).await;
            let group = meta["chat_group_id"].as_str().unwrap();

            let (mut ws, meta2) = srv
                .connect(&alice.api_key, &format!("resumed_chat_group_id={group}"))
                .await;
            assert_eq!(meta2["chat_group_id"], group);
            assert_ne!(meta2["chat_id"], meta["chat_id"]);
            ws.close(None).await.unwrap();
            let _ = recv_close(&mut ws).await;
            let (_, g) = srv
                .get(&alice.api_key, &format!("/v0/evi/chat_groups/{group}"))
                .await;
            assert_eq!(g["num_chats"], 2);
            assert_eq!(g["active"], false);

            // Bob cannot resume Alice's group, nor an unknown one; nothing is stored for him.
            for q in [
                format!("resumed_chat_group_id={group}"),
                format!("resumed_chat_group_id={}", uuid::Uuid::new_v4()),
            ] {
                let mut req =
                    tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                        srv.ws_url(&q),
                    )
                    .unwrap();
                req.headers_mut()
                    .insert("X-Hume-Api-Key", bob.api_key.parse().unwrap());
                let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
                let err = recv_json(&mut ws).await;
                assert_eq!(err["type"], "error", "{err}");
                assert_eq!(err["code"], "E0201");
                assert!(err["message"].as_str().unwrap().contains("not found"));
                assert_eq!(recv_close(&mut ws).await, Some(1000));
            }
            let (_, chats) = srv.get(&bob.api_key, "/v0/evi/chats").await;
            assert_eq!(chats["chats_page"], json!([]));
            let (_, groups) = srv.get(&bob.api_key, "/v0/evi/chat_groups").await;
            assert_eq!(groups["chat_groups_page"], json!([]));
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn retention_disabled_accounts_store_nothing() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let key = srv.key(false).await;
            let (mut ws, meta) = srv
                .connect(&key.api_key, "session_settings[system_prompt]=hi")
                .await;
            send_json(&mut ws, json!({"type": "user_input", "text": "secret"})).await;
            assert_eq!(recv_json(&mut ws).await["message"]["content"], "secret");
            send_json(&mut ws, json!({"type": "audio_input", "data": "AAAA"})).await;
            ws.close(None).await.unwrap();
            let _ = recv_close(&mut ws).await;
            let (_, chats) = srv.get(&key.api_key, "/v0/evi/chats").await;
            assert_eq!(chats["chats_page"], json!([]));
            assert_eq!(chats["total_pages"], 0);
            let chat_id = meta["chat_id"].as_str().unwrap();
            let (status, _) = srv
                .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}"))
                .await;
            assert_eq!(status, 404);
            assert!(
                !srv.dir
                    .path()
                    .join("objects/capture")
                    .join(key.user_id.to_string())
                    .exists(),
                "no audio is written"
            );
            // Resume is refused.
            let mut req =
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                    srv.ws_url(&format!(
                        "resumed_chat_group_id={}",
                        meta["chat_group_id"].as_str().unwrap()
                    )),
                )
                .unwrap();
            req.headers_mut()
                .insert("X-Hume-Api-Key", key.api_key.parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            let err = recv_json(&mut ws).await;
            assert_eq!(err["code"], "E0202");
            assert!(err["message"]
                .as_str()
                .unwrap()
                .contains("data retention is disabled"));
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn revoking_a_key_ends_its_open_sockets_at_the_next_message() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let key = srv.key(true).await;
            let (mut ws, meta) = srv.connect(&key.api_key, "").await;
            send_json(&mut ws, json!({"type": "user_input", "text": "before"})).await;
            recv_json(&mut ws).await;
            colloquy_server::keys::revoke(srv.running().state.store.as_ref(), &key.api_key[..8])
                .await
                .unwrap();
            send_json(&mut ws, json!({"type": "user_input", "text": "after"})).await;
            let err = recv_json(&mut ws).await;
            assert_eq!(err["code"], "E0300", "{err}");
            assert_eq!(recv_close(&mut ws).await, Some(1000));
            let (status, _) = srv.get(&key.api_key, "/v0/evi/chats").await;
            assert_eq!(status, 401, "REST refuses the revoked key at once");
            // The chat ended as ERROR, and "after" was never stored.
            let store = &srv.running().state.store;
            let chat_id = uuid::Uuid::parse_str(meta["chat_id"].as_str().unwrap()).unwrap();
            let chat = store.get_chat(key.user_id, chat_id).await.unwrap().unwrap();
            assert_eq!(chat.status, colloquy_wire::ChatStatus::Error);
            let events = store
                .list_chat_events(
                    chat_id,
                    colloquy_storage::PageRequest {
                        number: 0,
                        size: 100,
                        ascending: true,
                    },
                )
                .await
                .unwrap();
            let texts: Vec<_> = events
                .items
                .iter()
                .filter_map(|e| e.message_text.clone())
                .collect();
            assert!(texts.contains(&"before".to_string()));
            assert!(!texts.contains(&"after".to_string()));
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn timeouts_end_the_chat_with_their_status() {
    on_each_backend(
        |s| {
            s.chat.inactivity_timeout_secs = 1;
            s.chat.max_duration_secs = 3;
        },
        |srv| async move {
            let key = srv.key(true).await;
            let (mut idle, idle_meta) = srv.connect(&key.api_key, "").await;
            let (mut busy, busy_meta) = srv.connect(&key.api_key, "").await;
            // Keep one chat busy past the inactivity timeout until max duration ends it.
            let keep = async {
                for _ in 0..20 {
                    let tick = json!({"type": "user_input", "text": "tick"}).to_string();
                    if busy.send(Message::Text(tick.into())).await.is_err() {
                        return None;
                    }
                    if let Some(code) =
                        recv_until_close(&mut busy, std::time::Duration::from_millis(500)).await
                    {
                        return Some(code);
                    }
                }
                None
            };
            let (busy_code, idle_code) = tokio::join!(keep, recv_close(&mut idle));
            assert_eq!(idle_code, Some(1000));
            assert_eq!(busy_code, Some(1000), "max duration closes the busy chat");
            for (meta, status) in [
                (idle_meta, "INACTIVITY_TIMEOUT"),
                (busy_meta, "MAX_DURATION_TIMEOUT"),
            ] {
                let (_, chat) = srv
                    .get(
                        &key.api_key,
                        &format!("/v0/evi/chats/{}", meta["chat_id"].as_str().unwrap()),
                    )
                    .await;
                assert_eq!(chat["status"], status, "{chat}");
                assert!(chat["end_timestamp"].is_i64());
            }
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn many_concurrent_sessions_lose_nothing() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let key = srv.key(true).await;
            let mut tasks = Vec::new();
            for s in 0..40 {
                let url = srv.ws_url(&format!("api_key={}", key.api_key));
                tasks.push(tokio::spawn(async move {
                    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                    let meta = recv_json(&mut ws).await;
                    for i in 0..25 {
                        send_json(
                            &mut ws,
                            json!({"type": "user_input", "text": format!("s{s} m{i}")}),
                        )
                        .await;
                        let echo = recv_json(&mut ws).await;
                        assert_eq!(echo["message"]["content"], format!("s{s} m{i}"));
                    }
                    ws.close(None).await.unwrap();
                    let _ = recv_close(&mut ws).await;
                    meta["chat_id"].as_str().unwrap().to_string()
                }));
            }
            for t in tasks {
                let chat_id = t.await.unwrap();
                let events = srv.all_events(&key.api_key, &chat_id, 100).await;
                assert_eq!(events.len(), 27, "start + 25 messages + end");
                let texts: Vec<&str> = events[1..26]
                    .iter()
                    .map(|e| e["message_text"].as_str().unwrap())
                    .collect();
                let suffixes: Vec<String> = (0..25).map(|i| format!(" m{i}")).collect();
                assert!(
                    texts
                        .iter()
                        .zip(&suffixes)
                        .all(|(t, s)| t.ends_with(s.as_str())),
                    "in order"
                );
            }
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn graceful_shutdown_records_the_end_of_open_chats() {
    let Some((mut srv, _)) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let key = srv.key(true).await;
    let (mut ws, meta) = srv.connect(&key.api_key, "").await;
    send_json(&mut ws, json!({"type": "user_input", "text": "bye"})).await;
    recv_json(&mut ws).await;
    let store = srv.running().state.store.clone();
    srv.server.take().unwrap().shutdown().await;
    assert_eq!(recv_close(&mut ws).await, Some(1012));
    let chat_id = uuid::Uuid::parse_str(meta["chat_id"].as_str().unwrap()).unwrap();
    let chat = store.get_chat(key.user_id, chat_id).await.unwrap().unwrap();
    assert_eq!(chat.status, colloquy_wire::ChatStatus::Error);
    assert_eq!(chat.event_count, 3);
}

#[tokio::test]
async fn bad_credentials_fail_the_upgrade_with_401() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    for url in [
        srv.ws_url(""),
        srv.ws_url("api_key=wrong"),
        srv.ws_url("access_token=wrong"),
    ] {
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401);
                let body: Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}")).unwrap();
                assert_eq!(body["code"], "unauthorized");
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }
    srv.stop(None).await;
}

/// A chat's `request_id` (in `chat_metadata`, `error` messages and the stored chat's
/// metadata) is the upgrade request's `x-request-id`, so a user's bug report quoting either
/// finds the session's log lines.
#[tokio::test]
async fn the_chat_request_id_is_the_upgrade_request_id() {
    let (srv, _) = TestServer::start(Backend::Sqlite, |_| {}).await.unwrap();
    let key = srv.key(true).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        srv.ws_url(""),
    )
    .unwrap();
    req.headers_mut()
        .insert("X-Hume-Api-Key", key.api_key.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(req).await.unwrap();
    let header = response
        .headers()
        .get("x-request-id")
        .expect("an x-request-id header on the upgrade")
        .to_str()
        .unwrap()
        .to_string();
    let meta = recv_json(&mut ws).await;
    assert_eq!(meta["request_id"], header.as_str(), "{meta}");
    send_json(&mut ws, json!({"type": "no_such_type"})).await;
    let err = recv_json(&mut ws).await;
    assert_eq!(err["request_id"], header.as_str(), "{err}");
    futures::SinkExt::close(&mut ws).await.unwrap();
    let _ = recv_close(&mut ws).await;
    let chat = srv.stored_chat(&key, &meta).await;
    let stored: Value = serde_json::from_str(chat.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(stored["request_id"], header.as_str());
    // A client's own x-request-id is kept as the chat's.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        srv.ws_url(""),
    )
    .unwrap();
    req.headers_mut()
        .insert("X-Hume-Api-Key", key.api_key.parse().unwrap());
    req.headers_mut()
        .insert("x-request-id", "my-trace-42".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "my-trace-42");
    let meta = recv_json(&mut ws).await;
    assert_eq!(meta["request_id"], "my-trace-42");
    srv.stop(None).await;
}
