//! The control plane on one server: messages posted into a live chat
//! (`POST /v0/evi/chat/{id}/send`) handled as the client's own, and observers
//! (`/v0/evi/chat/{id}/connect`) that get the chat so far and then every message live.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

/// `POST /v0/evi/chat/{chat}/send` with `body`; the status and the raw answer.
pub(crate) async fn send(srv: &TestServer, key: &str, chat: &str, body: Value) -> (u16, String) {
    let resp = srv
        .http
        .post(format!("{}/v0/evi/chat/{chat}/send", srv.base))
        .header("X-Hume-Api-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Opens an observer of `chat`.
async fn observer(srv: &TestServer, key: &str, chat: &str) -> Ws {
    let url = format!(
        "{}/v0/evi/chat/{chat}/connect",
        srv.base.replace("http://", "ws://")
    );
    let req = colloquy_testkit::keyed_request(&url, key).unwrap();
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

#[tokio::test]
async fn messages_sent_to_a_live_chat_are_handled_as_the_clients_own() {
    let srv = TestServer::sqlite(|_| {}).await;
    let key = srv.key(true).await;
    let stranger = srv.key(true).await;
    let k = key.api_key.as_str();
    let (mut ws, meta) = srv.connect(k, "").await;
    let chat = meta["chat_id"].as_str().unwrap().to_string();

    let (status, body) = send(
        &srv,
        k,
        &chat,
        json!({"type": "user_input", "text": "from the backend"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let echo = recv_json(&mut ws).await;
    assert_eq!(echo["type"], "user_message");
    assert_eq!(echo["message"]["content"], "from the backend");
    let (status, _) = send(
        &srv,
        k,
        &chat,
        json!({"type": "session_settings", "system_prompt": "Be terse.", "custom_session_id": "s-1"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &srv,
        k,
        &chat,
        json!({"type": "assistant_input", "text": "Noted."}),
    )
    .await;
    assert_eq!(status, 200);
    recv_answer(&mut ws, "Noted.").await;

    // Bad bodies: 422 with the validation body, naming what to fix; nothing reaches the chat.
    for (body, says) in [
        (
            json!({"type": "audio_input", "data": "AAAA"}),
            "audio_input",
        ),
        (json!({"type": "shout", "text": "x"}), "shout"),
        (json!({"text": "no type"}), "type"),
        (json!({"type": "user_input"}), "text"),
        (
            json!({"type": "session_settings", "audio": {"encoding": "mp3", "channels": 1, "sample_rate": 16000}}),
            "encoding",
        ),
    ] {
        let (status, answer) = send(&srv, k, &chat, body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        let msg = v["detail"][0]["msg"].as_str().unwrap();
        assert!(msg.contains(says), "{body}: {msg}");
        assert_eq!(v["detail"][0]["loc"][0], "body");
    }
    // Unknown, another account's, malformed: 404 alike.
    for (who, id) in [
        (k, uuid::Uuid::new_v4().to_string()),
        (stranger.api_key.as_str(), chat.clone()),
        (k, "not-a-chat".to_string()),
    ] {
        let (status, answer) =
            send(&srv, who, &id, json!({"type": "user_input", "text": "x"})).await;
        assert_eq!(status, 404, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["code"], "not_found");
    }
    ws.close(None).await.unwrap();
    let _ = recv_close(&mut ws).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = send(
        &srv,
        k,
        &chat,
        json!({"type": "user_input", "text": "late"}),
    )
    .await;
    assert_eq!(status, 404, "an ended chat takes no messages");

    let events = srv.all_events(k, &chat, 100).await;
    let texts: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["message_text"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        texts.contains(&("USER_MESSAGE", "from the backend")),
        "{texts:?}"
    );
    assert!(texts.contains(&("SYSTEM_PROMPT", "Be terse.")), "{texts:?}");
    assert!(texts.contains(&("AGENT_MESSAGE", "Noted.")), "{texts:?}");
    assert!(!texts.iter().any(|(_, t)| *t == "late" || *t == "x"));
    srv.stop(None).await;
}

/// Reads until the observer's socket closes; the messages and the close frame.
async fn until_closed(ws: &mut Ws) -> (Vec<Value>, Option<(u16, String)>) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => seen.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(f)))) => {
                return (seen, f.map(|f| (u16::from(f.code), f.reason.to_string())))
            }
            Ok(Some(Ok(_))) => {}
            _ => return (seen, None),
        }
    }
}

#[tokio::test]
async fn observers_get_the_chat_so_far_then_everything_live() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let key = srv.key(true).await;
            let k = key.api_key.as_str();
            let (mut ws, meta) = srv.connect(k, "allow_connection=true").await;
            let chat = meta["chat_id"].as_str().unwrap().to_string();
            send_json(&mut ws, json!({"type": "user_input", "text": "first"})).await;
            recv_json(&mut ws).await;
            send_json(
                &mut ws,
                json!({"type": "assistant_input", "text": "Answer one."}),
            )
            .await;
            let (said, _) = recv_answer(&mut ws, "Answer one.").await;
            send_json(&mut ws, json!({"type": "user_input", "text": "second"})).await;
            recv_json(&mut ws).await;

            let mut a = observer(&srv, k, &chat).await;
            let first = recv_json(&mut a).await;
            assert_eq!(first, meta, "chat_metadata with the chat's own ids");
            let history: Vec<Value> = vec![
                recv_json(&mut a).await,
                recv_json(&mut a).await,
                recv_json(&mut a).await,
                recv_json(&mut a).await,
            ];
            let kinds: Vec<&str> = history
                .iter()
                .map(|m| m["type"].as_str().unwrap())
                .collect();
            assert_eq!(
                kinds,
                [
                    "user_message",
                    "assistant_message",
                    "assistant_end",
                    "user_message"
                ]
            );
            assert_eq!(history[0]["message"]["content"], "first");
            assert_eq!(history[1]["id"], said["id"]);
            assert_eq!(history[3]["message"]["content"], "second");

            // A second observer; then live traffic reaches both, in order.
            let mut b = observer(&srv, k, &chat).await;
            for _ in 0..5 {
                recv_json(&mut b).await;
            }
            send_json(&mut ws, json!({"type": "user_input", "text": "live"})).await;
            let echo = recv_json(&mut ws).await;
            assert_eq!(recv_json(&mut a).await, echo);
            assert_eq!(recv_json(&mut b).await, echo);

            // An observer posts: the chat's client sees it as its own echo.
            send_json(
                &mut a,
                json!({"type": "user_input", "text": "from observer"}),
            )
            .await;
            let echo = recv_json(&mut ws).await;
            assert_eq!(echo["message"]["content"], "from observer");
            assert_eq!(recv_json(&mut a).await, echo);
            assert_eq!(recv_json(&mut b).await, echo);
            // Audio from an observer is refused; the observer stays.
            send_json(&mut a, json!({"type": "audio_input", "data": "AAAA"})).await;
            let err = recv_json(&mut a).await;
            assert_eq!(
                (err["type"].as_str(), err["code"].as_str()),
                (Some("error"), Some("E0101"))
            );
            assert!(
                err["message"].as_str().unwrap().contains("audio_input"),
                "{err}"
            );

            // An observer leaving does not affect the chat.
            b.close(None).await.unwrap();
            send_json(&mut ws, json!({"type": "user_input", "text": "still on"})).await;
            assert_eq!(recv_json(&mut ws).await["message"]["content"], "still on");
            assert_eq!(recv_json(&mut a).await["message"]["content"], "still on");

            // The chat ends: the observer closes with 1000 and the end reason.
            ws.close(None).await.unwrap();
            let (_, close) = until_closed(&mut a).await;
            assert_eq!(close, Some((1000, "client_closed".to_string())));
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn observers_are_refused_without_allow_connection_or_a_live_chat() {
    let srv = TestServer::sqlite(|_| {}).await;
    let key = srv.key(true).await;
    let stranger = srv.key(true).await;
    let k = key.api_key.as_str();
    let (_ws, meta) = srv.connect(k, "").await;
    let closed = meta["chat_id"].as_str().unwrap();
    let (_ws2, open) = srv.connect(k, "allow_connection=true").await;
    let open = open["chat_id"].as_str().unwrap();
    for (who, chat, code) in [
        (k, closed.to_string(), "E0206"),
        (stranger.api_key.as_str(), open.to_string(), "E0205"),
        (k, uuid::Uuid::new_v4().to_string(), "E0205"),
    ] {
        let mut o = observer(&srv, who, &chat).await;
        let (seen, close) = until_closed(&mut o).await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0]["code"], code, "{seen:?}");
        assert!(!seen[0]["message"].as_str().unwrap().contains("request_id"));
        assert_eq!(close.map(|c| c.0), Some(1000));
    }
    // Bad credentials fail the upgrade itself.
    let url = format!(
        "{}/v0/evi/chat/{open}/connect",
        srv.base.replace("http://", "ws://")
    );
    let req = colloquy_testkit::keyed_request(&url, "wrong-key").unwrap();
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    srv.stop(None).await;
}

/// Nothing is stored for a retention-disabled account: an observer's history is what the
/// session still holds.
#[tokio::test]
async fn a_retention_disabled_chat_is_observed_from_what_it_holds() {
    let srv = TestServer::sqlite(|_| {}).await;
    let key = srv.key(false).await;
    let k = key.api_key.as_str();
    let (mut ws, meta) = srv.connect(k, "allow_connection=true").await;
    let chat = meta["chat_id"].as_str().unwrap();
    send_json(&mut ws, json!({"type": "user_input", "text": "held"})).await;
    recv_json(&mut ws).await;
    let mut o = observer(&srv, k, chat).await;
    assert_eq!(recv_json(&mut o).await["type"], "chat_metadata");
    let held = recv_json(&mut o).await;
    assert_eq!(held["message"]["content"], "held");
    let (status, _) = send(&srv, k, chat, json!({"type": "user_input", "text": "sent"})).await;
    assert_eq!(status, 200);
    assert_eq!(recv_json(&mut o).await["message"]["content"], "sent");
    assert_eq!(recv_json(&mut ws).await["message"]["content"], "sent");
    srv.stop(None).await;
}

/// `custom_session_id` from connect or a later `session_settings` (also one sent through
/// the control plane) is echoed on every server message and stored in the chat's metadata.
#[tokio::test]
async fn the_custom_session_id_is_echoed_and_stored() {
    let srv = TestServer::sqlite(|_| {}).await;
    let key = srv.key(true).await;
    let k = key.api_key.as_str();
    let (mut ws, meta) = srv
        .connect(k, "session_settings[custom_session_id]=first")
        .await;
    assert_eq!(meta["custom_session_id"], "first", "{meta}");
    let chat = meta["chat_id"].as_str().unwrap().to_string();
    send_json(&mut ws, json!({"type": "user_input", "text": "hi"})).await;
    assert_eq!(recv_json(&mut ws).await["custom_session_id"], "first");
    send_json(&mut ws, json!({"type": "nonsense"})).await;
    let err = recv_json(&mut ws).await;
    assert_eq!(
        (err["type"].as_str(), err["custom_session_id"].as_str()),
        (Some("error"), Some("first"))
    );

    let (status, _) = send(
        &srv,
        k,
        &chat,
        json!({"type": "session_settings", "custom_session_id": "second"}),
    )
    .await;
    assert_eq!(status, 200);
    send_json(&mut ws, json!({"type": "assistant_input", "text": "Ok."})).await;
    let said = recv_json(&mut ws).await;
    assert_eq!(said["custom_session_id"], "second", "{said}");
    let (_, c) = srv.get(k, &format!("/v0/evi/chats/{chat}")).await;
    let stored: Value = serde_json::from_str(c["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(stored["custom_session_id"], "second", "{stored}");
    assert!(
        stored["request_id"].is_string(),
        "the rest is kept: {stored}"
    );
    srv.stop(None).await;
}

/// Inactivity means no user activity: a client streaming silent microphone audio reaches
/// `INACTIVITY_TIMEOUT`; one streaming sound does not; a control-plane message counts.
#[tokio::test]
async fn silent_audio_is_not_activity() {
    use base64::Engine as _;
    let srv = TestServer::sqlite(|s| s.chat.inactivity_timeout_secs = 2).await;
    let key = srv.key(true).await;
    let k = key.api_key.as_str();
    let query = colloquy_testkit::LINEAR16_16K_MONO;
    let (mut silent, quiet_meta) = srv.connect(k, query).await;
    let (mut loud, loud_meta) = srv.connect(k, query).await;
    let (mut steered, steered_meta) = srv.connect(k, query).await;
    let silence = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 3200]);
    let sound = base64::engine::general_purpose::STANDARD.encode(tone(440.0, 16_000, 100));
    let started = std::time::Instant::now();
    // Sends without caring whether the socket is still open.
    async fn push(ws: &mut Ws, v: Value) {
        let text = tokio_tungstenite::tungstenite::Message::Text(v.to_string().into());
        let _ = futures::SinkExt::send(ws, text).await;
    }
    let mut paused = false;
    while started.elapsed() < Duration::from_millis(2800) {
        push(&mut silent, json!({"type": "audio_input", "data": silence})).await;
        push(&mut loud, json!({"type": "audio_input", "data": sound})).await;
        push(
            &mut steered,
            json!({"type": "audio_input", "data": silence}),
        )
        .await;
        if !paused && started.elapsed() > Duration::from_millis(1000) {
            paused = true;
            let chat = steered_meta["chat_id"].as_str().unwrap();
            let (status, _) = send(&srv, k, chat, json!({"type": "pause_assistant_message"})).await;
            assert_eq!(status, 200);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = |meta: &Value| {
        let chat = meta["chat_id"].as_str().unwrap().to_string();
        let srv = &srv;
        async move { srv.get(k, &format!("/v0/evi/chats/{chat}")).await.1["status"].clone() }
    };
    assert_eq!(
        status(&quiet_meta).await,
        "INACTIVITY_TIMEOUT",
        "silence is not activity"
    );
    assert_eq!(status(&loud_meta).await, "ACTIVE", "sound is activity");
    assert_eq!(
        status(&steered_meta).await,
        "ACTIVE",
        "a control-plane message is activity"
    );
    srv.stop(None).await;
}

/// An unknown `voice_id` at connect is told right after `chat_metadata`; the chat goes on
/// with its voice unchanged (a known one is taken silently).
#[tokio::test]
async fn an_unknown_voice_id_at_connect_is_an_error_and_the_chat_goes_on() {
    let srv = TestServer::sqlite(|_| {}).await;
    let key = srv.key(true).await;
    let k = key.api_key.as_str();
    let (mut ws, _) = srv
        .connect(k, "session_settings[voice_id]=no-such-voice")
        .await;
    let err = recv_json(&mut ws).await;
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("E0101")),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("no-such-voice"),
        "{err}"
    );
    send_json(&mut ws, json!({"type": "user_input", "text": "still here"})).await;
    assert_eq!(recv_json(&mut ws).await["message"]["content"], "still here");
    let ava = colloquy_server::tts::AVA_SONG_ID;
    let (mut ws, _) = srv
        .connect(k, &format!("session_settings[voice_id]={ava}"))
        .await;
    send_json(&mut ws, json!({"type": "user_input", "text": "fine"})).await;
    assert_eq!(
        recv_json(&mut ws).await["type"],
        "user_message",
        "no error first"
    );
    srv.stop(None).await;
}
