//! Chats connected with `config_id`: the config version resolved at connect (refused with
//! `E0204` when there is none, nothing stored), recorded on the chat and its group, its
//! prompt recorded as `SYSTEM_PROMPT`, its greeting said, its timeouts ending the chat with
//! their messages; chats stay readable after the config is deleted.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `POST path` with `body` and the key; the status and the JSON answer.
pub(crate) async fn post(srv: &TestServer, key: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = srv
        .http
        .post(format!("{}{path}", srv.base))
        .header("X-Hume-Api-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Creates a config (or, with `id`, its next version); returns it as read back.
pub(crate) async fn config(srv: &TestServer, key: &str, id: Option<&str>, body: Value) -> Value {
    let path = match id {
        Some(id) => format!("/v0/evi/configs/{id}"),
        None => "/v0/evi/configs".to_string(),
    };
    let (status, created) = post(srv, key, &path, body).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// Connects and expects the connect to be refused with `code`: the `error`, then close 1000.
async fn refused(srv: &TestServer, key: &str, query: &str, code: &str) -> String {
    let req = colloquy_testkit::keyed_request(&srv.ws_url(query), key).unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let err = recv_json(&mut ws).await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], code, "{err}");
    assert_eq!(recv_close(&mut ws).await, Some(1000), "{query}");
    err["message"].as_str().unwrap().to_string()
}

fn event_texts<'a>(events: &'a [Value], kind: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["message_text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_chat_uses_the_resolved_config_version() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let key = srv.key(true).await;
            let k = key.api_key.as_str();
            let v0 = config(
                &srv,
                k,
                None,
                json!({"name": "Support", "evi_version": "3",
                       "prompt": {"text": "You help {{name}}."},
                       "event_messages": {"on_new_chat": {"enabled": true, "text": "Welcome to support!"}}}),
            )
            .await;
            let id = v0["id"].as_str().unwrap().to_string();
            config(
                &srv,
                k,
                Some(&id),
                json!({"evi_version": "3", "prompt": {"text": "Version one prompt."}}),
            )
            .await;

            // No version: the newest (1), which has no greeting.
            let (mut ws, meta) = srv.connect(k, &format!("config_id={id}")).await;
            send_json(&mut ws, json!({"type": "user_input", "text": "hi"})).await;
            assert_eq!(recv_json(&mut ws).await["type"], "user_message");
            ws.close(None).await.unwrap();
            let newest = meta["chat_id"].as_str().unwrap().to_string();

            // Version 0: its prompt and its greeting, said right after chat_metadata.
            let (mut ws, meta) = srv
                .connect(k, &format!("config_id={id}&config_version=0"))
                .await;
            let (greeting, _) = recv_answer(&mut ws, "Welcome to support!").await;
            assert_eq!(greeting["from_text"], false);
            ws.close(None).await.unwrap();
            let first = meta["chat_id"].as_str().unwrap().to_string();

            // The client's own prompt replaces the config's.
            let (ws, meta) = srv
                .connect(
                    k,
                    &format!(
                        "config_id={id}&config_version=0&session_settings[system_prompt]=Mine."
                    ),
                )
                .await;
            let mut ws = ws;
            recv_answer(&mut ws, "Welcome to support!").await;
            ws.close(None).await.unwrap();
            let own = meta["chat_id"].as_str().unwrap().to_string();
            tokio::time::sleep(Duration::from_millis(300)).await;

            for (chat, version) in [(&newest, 1), (&first, 0), (&own, 0)] {
                let (_, c) = srv.get(k, &format!("/v0/evi/chats/{chat}")).await;
                assert_eq!(c["config"], json!({"id": id, "version": version}), "{c}");
            }
            let events = srv.all_events(k, &newest, 100).await;
            assert_eq!(
                event_texts(&events, "SYSTEM_PROMPT"),
                ["Version one prompt."]
            );
            assert!(event_texts(&events, "AGENT_MESSAGE").is_empty());
            let events = srv.all_events(k, &first, 100).await;
            assert_eq!(
                types(&events)[..3],
                ["CHAT_START_MESSAGE", "SYSTEM_PROMPT", "AGENT_MESSAGE"]
            );
            assert_eq!(event_texts(&events, "SYSTEM_PROMPT"), ["You help {{name}}."]);
            assert_eq!(
                event_texts(&events, "AGENT_MESSAGE"),
                ["Welcome to support!"]
            );
            assert_eq!(
                events[2]["id"], greeting["id"],
                "the greeting's id is its event's"
            );
            let events = srv.all_events(k, &own, 100).await;
            assert_eq!(event_texts(&events, "SYSTEM_PROMPT"), ["Mine."]);

            // Filters and the group's most recent config.
            let other = srv.connect(k, "").await.1;
            let (_, page) = srv.get(k, &format!("/v0/evi/chats?config_id={id}")).await;
            let mut listed: Vec<&str> = page["chats_page"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap())
                .collect();
            listed.sort();
            let mut expected = vec![newest.as_str(), first.as_str(), own.as_str()];
            expected.sort();
            assert_eq!(listed, expected);
            let (_, groups) = srv
                .get(k, &format!("/v0/evi/chat_groups?config_id={id}"))
                .await;
            assert_eq!(groups["chat_groups_page"].as_array().unwrap().len(), 3);
            let group = meta["chat_group_id"].as_str().unwrap();
            let listed = groups["chat_groups_page"].as_array().unwrap();
            let g = listed.iter().find(|g| g["id"] == group).expect("the group is listed");
            assert_eq!(g["most_recent_config"], json!({"id": id, "version": 0}), "{g}");
            let (_, none) = srv
                .get(
                    k,
                    &format!("/v0/evi/chats/{}", other["chat_id"].as_str().unwrap()),
                )
                .await;
            assert_eq!(none["config"], Value::Null);

            // Deleting the config leaves its chats readable, their reference intact.
            let (status, _) = srv.delete(k, &format!("/v0/evi/configs/{id}")).await;
            assert_eq!(status, 200);
            let (status, c) = srv.get(k, &format!("/v0/evi/chats/{first}")).await;
            assert_eq!(status, 200);
            assert_eq!(c["config"], json!({"id": id, "version": 0}));
            assert_eq!(c["events_page"].as_array().unwrap().len(), 4, "{c}");
            // And the config can no longer be connected with.
            refused(&srv, k, &format!("config_id={id}"), "E0204").await;
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn an_unknown_config_is_refused_and_nothing_is_stored() {
    let srv = TestServer::sqlite(|_| {}).await;
    let key = srv.key(true).await;
    let stranger = srv.key(true).await;
    let k = key.api_key.as_str();
    let theirs = config(
        &srv,
        &stranger.api_key,
        None,
        json!({"name": "Theirs", "evi_version": "3"}),
    )
    .await;
    let theirs = theirs["id"].as_str().unwrap();
    let mine = config(&srv, k, None, json!({"name": "Mine", "evi_version": "3"})).await;
    let mine = mine["id"].as_str().unwrap();

    let unknown = uuid::Uuid::new_v4();
    let msg = refused(&srv, k, &format!("config_id={unknown}"), "E0204").await;
    assert!(
        msg.contains(&unknown.to_string()) && msg.contains("not found"),
        "{msg}"
    );
    // Another account's config is just as unknown.
    let msg = refused(&srv, k, &format!("config_id={theirs}"), "E0204").await;
    assert!(msg.contains("not found"), "{msg}");
    let msg = refused(
        &srv,
        k,
        &format!("config_id={mine}&config_version=7"),
        "E0204",
    )
    .await;
    assert!(msg.contains("no version 7"), "{msg}");
    let msg = refused(&srv, k, "config_version=1", "E0200").await;
    assert!(msg.contains("without config_id"), "{msg}");
    let msg = refused(
        &srv,
        k,
        &format!("config_id={mine}&config_version=-1"),
        "E0200",
    )
    .await;
    assert!(msg.contains("config_version"), "{msg}");

    let (_, page) = srv.get(k, "/v0/evi/chats").await;
    assert_eq!(page["chats_page"], json!([]), "no chat left behind");
    let (_, groups) = srv.get(k, "/v0/evi/chat_groups").await;
    assert_eq!(groups["chat_groups_page"], json!([]));
    // The stranger's own connect works.
    srv.connect(&stranger.api_key, &format!("config_id={theirs}"))
        .await;
    srv.stop(None).await;
}

/// Reads messages until the close; the messages and the close code.
async fn until_close(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => seen.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => return (seen, frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            _ => return (seen, None),
        }
    }
}

fn assistant_texts(seen: &[Value]) -> Vec<&str> {
    seen.iter()
        .filter(|m| m["type"] == "assistant_message")
        .map(|m| m["message"]["content"].as_str().unwrap())
        .collect()
}

/// The config's timeouts replace the server's (here 3 s of inactivity): a config with 30 s
/// of inactivity and a message says it, waits the grace period, and ends the chat; the
/// user answering in the grace period keeps the chat going; a config without inactivity
/// timeout runs to its maximum duration and says its message there.
#[tokio::test]
async fn config_timeouts_end_chats_with_their_messages() {
    let srv = TestServer::sqlite(|s| {
        s.chat.inactivity_timeout_secs = 3;
        s.chat.inactivity_grace_secs = 2;
    })
    .await;
    let key = srv.key(true).await;
    let k = key.api_key.as_str();
    let idle = config(
        &srv,
        k,
        None,
        json!({"name": "Idle", "evi_version": "3",
               "event_messages": {"on_inactivity_timeout": {"enabled": true, "text": "Are you there?"}},
               "timeouts": {"inactivity": {"enabled": true, "duration_secs": 30}}}),
    )
    .await;
    let long = config(
        &srv,
        k,
        None,
        json!({"name": "Long", "evi_version": "3",
               "event_messages": {"on_max_duration_timeout": {"enabled": true}},
               "timeouts": {"inactivity": {"enabled": false},
                            "max_duration": {"enabled": true, "duration_secs": 30}}}),
    )
    .await;
    let (idle, long) = (idle["id"].as_str().unwrap(), long["id"].as_str().unwrap());
    let started = Instant::now();
    let (mut a, meta_a) = srv.connect(k, &format!("config_id={idle}")).await;
    let (mut b, meta_b) = srv.connect(k, &format!("config_id={long}")).await;
    let (mut c, meta_c) = srv.connect(k, &format!("config_id={idle}")).await;

    let answering = async {
        // Chat c answers the inactivity message within the grace period.
        let first =
            tokio::time::timeout(Duration::from_secs(60), colloquy_testkit::next_json(&mut c))
                .await
                .expect("the inactivity message")
                .unwrap();
        let asked = started.elapsed();
        assert!(asked >= Duration::from_secs(29), "asked after {asked:?}");
        assert_eq!(first["message"]["content"], "Are you there?", "{first}");
        loop {
            if recv_json(&mut c).await["type"] == "assistant_end" {
                break;
            }
        }
        send_json(&mut c, json!({"type": "user_input", "text": "yes"})).await;
        assert_eq!(recv_json(&mut c).await["type"], "user_message");
        // Still open well after the grace period.
        tokio::time::sleep(Duration::from_secs(3)).await;
        send_json(&mut c, json!({"type": "user_input", "text": "still here"})).await;
        assert_eq!(recv_json(&mut c).await["type"], "user_message");
        c.close(None).await.unwrap();
    };
    let ((seen_a, close_a), (seen_b, close_b), ()) =
        tokio::join!(until_close(&mut a), until_close(&mut b), answering);
    let ended = started.elapsed();
    assert_eq!(assistant_texts(&seen_a), ["Are you there?"], "{seen_a:?}");
    assert_eq!(
        assistant_texts(&seen_b),
        [colloquy_server::platform::chat_config::DEFAULT_MAX_DURATION_MESSAGE],
        "{seen_b:?}"
    );
    assert!(
        seen_b.iter().any(|m| m["type"] == "assistant_end"),
        "{seen_b:?}"
    );
    assert_eq!(close_a, Some(1000));
    assert_eq!(close_b, Some(1000));
    assert!(ended >= Duration::from_secs(31), "ended after {ended:?}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    for (meta, status, said) in [
        (&meta_a, "INACTIVITY_TIMEOUT", "Are you there?"),
        (
            &meta_b,
            "MAX_DURATION_TIMEOUT",
            colloquy_server::platform::chat_config::DEFAULT_MAX_DURATION_MESSAGE,
        ),
        (&meta_c, "USER_ENDED", "Are you there?"),
    ] {
        let chat = meta["chat_id"].as_str().unwrap();
        let (_, c) = srv.get(k, &format!("/v0/evi/chats/{chat}")).await;
        assert_eq!(c["status"], status, "{c}");
        let events = srv.all_events(k, chat, 100).await;
        assert_eq!(event_texts(&events, "AGENT_MESSAGE"), [said]);
    }
    srv.stop(None).await;
}
