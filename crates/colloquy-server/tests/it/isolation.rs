//! One account cannot break other accounts' chats: messages the database could not store
//! are refused to their sender alone, while everybody else's are committed.

use crate::harness::*;
use serde_json::{json, Value};

const BYSTANDERS: usize = 10;
const MESSAGES: usize = 30;
const ROUNDS: usize = 6;

/// Sends `msg` and expects an `E0101` naming `field` (the session goes on).
async fn refused(ws: &mut Ws, msg: Value, field: &str) {
    send_json(ws, msg).await;
    let err = recv_json(ws).await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "E0101", "{err}");
    assert_eq!(err["slug"], "invalid_message", "{err}");
    let text = err["message"].as_str().unwrap();
    assert!(
        text.contains(&format!("`{field}` contains a NUL character")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nul_characters_are_refused_to_their_sender_alone() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let bystander = srv.key(true).await;
            let attacker = srv.key(true).await;
            let mut tasks = Vec::new();
            for s in 0..BYSTANDERS {
                let url = srv.ws_url(&format!("api_key={}", bystander.api_key));
                tasks.push(tokio::spawn(async move {
                    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                    let meta = recv_json(&mut ws).await;
                    assert_eq!(meta["type"], "chat_metadata");
                    for i in 0..MESSAGES {
                        let text = format!("bystander {s} says {i}");
                        send_json(&mut ws, json!({"type": "user_input", "text": text})).await;
                        let echo = recv_json(&mut ws).await;
                        assert_eq!(echo["type"], "user_message", "{echo}");
                        assert_eq!(echo["message"]["content"], text.as_str());
                    }
                    ws.close(None).await.unwrap();
                    let _ = recv_close(&mut ws).await;
                    meta["chat_id"].as_str().unwrap().to_string()
                }));
            }
            let url = srv.ws_url(&format!("api_key={}", attacker.api_key));
            let attack = tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                let meta = recv_json(&mut ws).await;
                for round in 0..ROUNDS {
                    refused(
                        &mut ws,
                        json!({"type": "user_input", "text": "bad\u{0}text"}),
                        "user_input.text",
                    )
                    .await;
                    refused(
                        &mut ws,
                        json!({"type": "session_settings", "system_prompt": "be \u{0} evil"}),
                        "session_settings.system_prompt",
                    )
                    .await;
                    refused(
                        &mut ws,
                        json!({"type": "tool_response", "tool_call_id": "t1",
                               "content": "\u{0}"}),
                        "tool_response.content",
                    )
                    .await;
                    // The session is still open and records what it can.
                    let text = format!("attacker round {round}");
                    send_json(&mut ws, json!({"type": "user_input", "text": text})).await;
                    let echo = recv_json(&mut ws).await;
                    assert_eq!(echo["type"], "user_message", "{echo}");
                    assert_eq!(echo["message"]["content"], text.as_str());
                }
                ws.close(None).await.unwrap();
                let _ = recv_close(&mut ws).await;
                meta["chat_id"].as_str().unwrap().to_string()
            });

            let attacker_chat = attack.await.unwrap();
            for (s, task) in tasks.into_iter().enumerate() {
                let chat_id = task.await.unwrap();
                let (status, chat) = srv
                    .get(&bystander.api_key, &format!("/v0/evi/chats/{chat_id}"))
                    .await;
                assert_eq!(status, 200, "{chat}");
                assert_eq!(chat["status"], "USER_ENDED", "{chat}");
                let events = srv.all_events(&bystander.api_key, &chat_id, 100).await;
                assert_eq!(events.len(), MESSAGES + 2, "start, messages, end");
                assert_eq!(events[0]["type"], "CHAT_START_MESSAGE");
                assert_eq!(events[MESSAGES + 1]["type"], "CHAT_END_MESSAGE");
                for (i, e) in events[1..=MESSAGES].iter().enumerate() {
                    assert_eq!(e["type"], "USER_MESSAGE");
                    assert_eq!(e["message_text"], format!("bystander {s} says {i}"));
                }
            }
            let (_, chat) = srv
                .get(&attacker.api_key, &format!("/v0/evi/chats/{attacker_chat}"))
                .await;
            assert_eq!(chat["status"], "USER_ENDED", "{chat}");
            let events = srv.all_events(&attacker.api_key, &attacker_chat, 100).await;
            let texts: Vec<&str> = events
                .iter()
                .filter(|e| e["type"] == "USER_MESSAGE")
                .map(|e| e["message_text"].as_str().unwrap())
                .collect();
            let want: Vec<String> = (0..ROUNDS).map(|r| format!("attacker round {r}")).collect();
            assert_eq!(texts, want, "only the attacker's valid messages are stored");
            assert_eq!(
                types(&events),
                [
                    vec!["CHAT_START_MESSAGE"],
                    vec!["USER_MESSAGE"; ROUNDS],
                    vec!["CHAT_END_MESSAGE"]
                ]
                .concat(),
                "refused messages store nothing"
            );
            srv
        },
    )
    .await;
}
