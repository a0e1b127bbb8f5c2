//! The REST API: pagination, filters, errors, tenancy, tokens, audio records, OpenAPI.

use crate::harness::*;
use serde_json::{json, Value};

/// Opens and closes `n` chats (each with one user message) in one group; returns chat ids.
async fn make_chats(srv: &TestServer, key: &str, n: usize, query: &str) -> (Vec<String>, String) {
    let mut ids = Vec::new();
    let mut group: Option<String> = None;
    for i in 0..n {
        let q = match &group {
            Some(g) => format!("{query}&resumed_chat_group_id={g}"),
            None => query.to_string(),
        };
        let (mut ws, meta) = srv.connect(key, &q).await;
        send_json(
            &mut ws,
            json!({"type": "user_input", "text": format!("chat {i}")}),
        )
        .await;
        recv_json(&mut ws).await;
        futures::SinkExt::close(&mut ws).await.unwrap();
        let _ = recv_close(&mut ws).await;
        ids.push(meta["chat_id"].as_str().unwrap().to_string());
        group.get_or_insert(meta["chat_group_id"].as_str().unwrap().to_string());
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    (ids, group.unwrap())
}

#[tokio::test]
async fn pagination_filters_and_groups() {
    // No reconstruction workers: audio records stay QUEUED while this test reads them.
    on_each_backend(|s| s.audio.workers = 0, |srv| async move {
        let key = srv.key(true).await;
        let k = key.api_key.as_str();
        let created = crate::configs::config(&srv, k, None, json!({"name": "c", "evi_version": "3"})).await;
        let cfg = created["id"].as_str().unwrap().to_string();
        for _ in 0..2 {
            crate::configs::config(&srv, k, Some(&cfg), json!({"evi_version": "3"})).await;
        }
        let cfg = cfg.as_str();
        let (ids, group) = make_chats(&srv, k, 5, &format!("config_id={cfg}&config_version=2")).await;
        let (other, _) = make_chats(&srv, k, 1, "").await;

        let (_, p0) = srv.get(k, "/v0/evi/chats?page_size=2&page_number=0").await;
        assert_eq!(p0["total_pages"], 3);
        assert_eq!(p0["pagination_direction"], "ASC");
        assert_eq!(p0["chats_page"][0]["id"], ids[0].as_str());
        assert_eq!(p0["chats_page"][0]["config"], json!({"id": cfg, "version": 2}));
        assert_eq!(p0["chats_page"][0]["event_count"], 3);
        let (_, p2) = srv.get(k, "/v0/evi/chats?page_size=2&page_number=2").await;
        assert_eq!(p2["chats_page"][0]["id"], ids[4].as_str());
        assert_eq!(p2["chats_page"][1]["id"], other[0].as_str());
        let (status, past) = srv.get(k, "/v0/evi/chats?page_size=2&page_number=3").await;
        assert_eq!((status, past["chats_page"].clone()), (200, json!([])), "past the end: empty page");
        let (_, desc) = srv.get(k, "/v0/evi/chats?ascending_order=false&page_size=1").await;
        assert_eq!(desc["chats_page"][0]["id"], other[0].as_str());
        assert_eq!(desc["pagination_direction"], "DESC");

        let (_, by_cfg) = srv.get(k, &format!("/v0/evi/chats?config_id={cfg}&page_size=100")).await;
        assert_eq!(by_cfg["chats_page"].as_array().unwrap().len(), 5);
        let (_, ended) = srv.get(k, "/v0/evi/chats?status=USER_ENDED").await;
        assert_eq!(ended["chats_page"].as_array().unwrap().len(), 6);
        let (_, active) = srv.get(k, "/v0/evi/chats?status=ACTIVE").await;
        assert_eq!(active["chats_page"], json!([]));

        let (_, groups) = srv.get(k, "/v0/evi/chat_groups").await;
        let gs = groups["chat_groups_page"].as_array().unwrap();
        assert_eq!(gs.len(), 2);
        assert_eq!(gs[0]["id"], group.as_str());
        assert_eq!(gs[0]["num_chats"], 5);
        assert_eq!(gs[0]["most_recent_chat_id"], ids[4].as_str());
        assert_eq!(gs[0]["most_recent_config"], json!({"id": cfg, "version": 2}));
        assert_eq!(gs[0]["active"], false);
        let (_, gcfg) = srv.get(k, &format!("/v0/evi/chat_groups?config_id={cfg}")).await;
        assert_eq!(gcfg["chat_groups_page"].as_array().unwrap().len(), 1);

        let (_, g) = srv.get(k, &format!("/v0/evi/chat_groups/{group}?page_size=2&page_number=1&ascending_order=false")).await;
        assert_eq!(g["num_chats"], 5);
        assert_eq!(g["total_pages"], 3);
        assert_eq!(g["chats_page"][0]["id"], ids[2].as_str());
        let (_, gst) = srv.get(k, &format!("/v0/evi/chat_groups/{group}?status=ERROR")).await;
        assert_eq!(gst["chats_page"], json!([]));
        assert_eq!(gst["num_chats"], 5, "num_chats counts the whole group");

        let (_, ge) = srv.get(k, &format!("/v0/evi/chat_groups/{group}/events?page_size=100")).await;
        let evs = ge["events_page"].as_array().unwrap();
        assert_eq!(evs.len(), 15);
        let texts: Vec<&str> = evs.iter().filter(|e| e["type"] == "USER_MESSAGE").map(|e| e["message_text"].as_str().unwrap()).collect();
        assert_eq!(texts, vec!["chat 0", "chat 1", "chat 2", "chat 3", "chat 4"]);
        assert_eq!(ge["total_pages"], 1);

        // Audio: one record per chat, created once, QUEUED, no URL yet.
        let (_, a1) = srv.get(k, &format!("/v0/evi/chats/{}/audio", ids[0])).await;
        assert_eq!(a1["status"], "QUEUED");
        assert_eq!(a1["id"], ids[0].as_str());
        assert_eq!(a1["user_id"], key.user_id.to_string());
        assert_eq!(a1["signed_audio_url"], Value::Null);
        let (_, a2) = srv.get(k, &format!("/v0/evi/chats/{}/audio", ids[0])).await;
        assert_eq!(a1, a2, "repeated calls return the same record");
        let (_, ga) = srv.get(k, &format!("/v0/evi/chat_groups/{group}/audio?page_size=2")).await;
        assert_eq!(ga["num_chats"], 5);
        assert_eq!(ga["total_pages"], 3);
        let recs = ga["audio_reconstructions_page"].as_array().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0], a1);
        assert_eq!(recs[1]["id"], ids[1].as_str());
        srv
    })
    .await;
}

#[tokio::test]
async fn search_finds_chats_by_what_was_said() {
    on_each_backend(
        |s| s.audio.workers = 0,
        |srv| async move {
            let key = srv.key(true).await;
            let k = key.api_key.as_str();
            let other = srv.key(true).await;
            let mut ids = Vec::new();
            for (user, agent) in [
                ("I want to book a flight to Lisbon", "Which day?"),
                ("Is it raining in Porto?", "No, it's sunny in Porto."),
            ] {
                let (mut ws, meta) = srv.connect(k, "").await;
                send_json(&mut ws, json!({"type": "user_input", "text": user})).await;
                recv_json(&mut ws).await;
                send_json(&mut ws, json!({"type": "assistant_input", "text": agent})).await;
                recv_answer(&mut ws, agent).await;
                // Searchable while the chat is still open: the event is committed before its echo.
                let (_, live) = srv.get(k, "/v0/evi/chats?search=sunny").await;
                if agent.contains("sunny") {
                    assert_eq!(live["chats_page"][0]["id"], meta["chat_id"]);
                }
                futures::SinkExt::close(&mut ws).await.unwrap();
                let _ = recv_close(&mut ws).await;
                ids.push(meta["chat_id"].as_str().unwrap().to_string());
            }
            let (mut ws, _) = srv.connect(&other.api_key, "").await;
            send_json(
                &mut ws,
                json!({"type": "user_input", "text": "flight to Lisbon"}),
            )
            .await;
            recv_json(&mut ws).await;

            let found = |v: &Value| -> Vec<String> {
                v["chats_page"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_str().unwrap().to_string())
                    .collect()
            };
            let (status, v) = srv.get(k, "/v0/evi/chats?search=lisbon%20FLIGHT").await;
            assert_eq!((status, found(&v)), (200, vec![ids[0].clone()]));
            assert_eq!(v["total_pages"], 1);
            let (_, v) = srv.get(k, "/v0/evi/chats?search=raining+sunny").await;
            assert_eq!(
                found(&v),
                vec![ids[1].clone()],
                "words from the user and the assistant"
            );
            let (_, v) = srv
                .get(k, "/v0/evi/chats?search=port&status=USER_ENDED")
                .await;
            assert_eq!(
                found(&v),
                vec![ids[1].clone()],
                "prefix match, with another filter"
            );
            let (_, v) = srv.get(k, "/v0/evi/chats?search=madrid").await;
            assert_eq!((found(&v), v["total_pages"].clone()), (vec![], json!(0)));
            let (_, v) = srv.get(k, "/v0/evi/chats?search=%22%3B%20--").await;
            assert_eq!(found(&v).len(), 2, "a search without words filters nothing");
            let many = (0..17)
                .map(|i| format!("w{i}"))
                .collect::<Vec<_>>()
                .join("+");
            let (status, v) = srv.get(k, &format!("/v0/evi/chats?search={many}")).await;
            assert_eq!(status, 400);
            assert!(v["message"].as_str().unwrap().contains("at most 16"), "{v}");

            // Deleted chats are no longer found.
            let (status, _) = srv.delete(k, &format!("/v0/evi/chats/{}", ids[0])).await;
            assert_eq!(status, 204);
            let (_, v) = srv.get(k, "/v0/evi/chats?search=lisbon").await;
            assert_eq!(found(&v), Vec::<String>::new());
            let (_, v) = srv.get(&other.api_key, "/v0/evi/chats?search=lisbon").await;
            assert_eq!(found(&v).len(), 1, "the other account's chat stays");
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn errors_are_json_and_tenants_are_isolated() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let alice = srv.key(true).await;
            let bob = srv.key(true).await;
            let (ids, group) = make_chats(&srv, &alice.api_key, 1, "").await;
            let chat = &ids[0];
            for path in [
                format!("/v0/evi/chats/{chat}"),
                format!("/v0/evi/chats/{chat}/audio"),
                format!("/v0/evi/chat_groups/{group}"),
                format!("/v0/evi/chat_groups/{group}/events"),
                format!("/v0/evi/chat_groups/{group}/audio"),
            ] {
                let (status, body) = srv.get(&bob.api_key, &path).await;
                assert_eq!(status, 404, "{path}: another account's id is not found");
                assert_eq!(body["code"], "not_found");
                assert!(body["message"]
                    .as_str()
                    .unwrap()
                    .contains("for this account"));
            }
            let bad = [
                ("/v0/evi/chats?page_size=0", "page_size"),
                ("/v0/evi/chats?page_size=101", "page_size"),
                ("/v0/evi/chats?page_number=-1", "page_number"),
                ("/v0/evi/chats?ascending_order=maybe", "ascending_order"),
                ("/v0/evi/chats?status=DONE", "status"),
                ("/v0/evi/chats?config_id=abc", "config_id"),
                ("/v0/evi/chats/not-a-uuid", "chat id"),
                ("/v0/evi/chat_groups/not-a-uuid/events", "chat group id"),
                ("/v0/evi/chat_groups?page_size=x", "page_size"),
            ];
            for (path, names) in bad {
                let (status, body) = srv.get(&alice.api_key, path).await;
                assert_eq!(status, 400, "{path}");
                assert_eq!(body["error"], "Bad Request");
                assert!(
                    body["message"].as_str().unwrap().contains(names),
                    "{path}: {body}"
                );
            }
            let (status, body) = srv.get("wrong-key", "/v0/evi/chats").await;
            assert_eq!(status, 401);
            assert_eq!(body["code"], "unauthorized");
            let resp = srv
                .http
                .get(format!("{}/v0/evi/chats", srv.base))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401);
            let (status, body) = srv.get(&alice.api_key, "/v0/evi/nothing").await;
            assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
            let resp = srv
                .http
                .delete(format!("{}/v0/evi/chats", srv.base))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 405);
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn client_credentials_tokens_work_for_rest_and_sockets() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let key = srv.key(true).await;
    let token_url = format!("{}/oauth2-cc/token", srv.base);
    let resp = srv
        .http
        .post(&token_url)
        .basic_auth(&key.api_key, Some(&key.secret_key))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap().to_string();

    let resp = srv
        .http
        .get(format!("{}/v0/evi/chats", srv.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(srv.ws_url(&format!("access_token={token}")))
            .await
            .unwrap();
    assert_eq!(recv_json(&mut ws).await["type"], "chat_metadata");

    let wrong = srv
        .http
        .post(&token_url)
        .basic_auth(&key.api_key, Some("not-the-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let grant = srv
        .http
        .post(&token_url)
        .basic_auth(&key.api_key, Some(&key.secret_key))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), 400);
    let body: Value = grant.json().await.unwrap();
    assert_eq!(body["code"], "unsupported_grant_type");
    srv.stop(None).await;
}

#[tokio::test]
async fn openapi_lists_every_endpoint_and_schema() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let (status, doc) = srv.get("", "/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v0/evi/chats",
        "/v0/evi/chats/{id}",
        "/v0/evi/chats/{id}/audio",
        "/v0/evi/chat_groups",
        "/v0/evi/chat_groups/{id}",
        "/v0/evi/chat_groups/{id}/events",
        "/v0/evi/chat_groups/{id}/audio",
        "/oauth2-cc/token",
        "/v0/evi/prompts",
        "/v0/evi/prompts/{id}",
        "/v0/evi/prompts/{id}/version/{version}",
        "/v0/evi/tools",
        "/v0/evi/tools/{id}",
        "/v0/evi/tools/{id}/version/{version}",
        "/v0/evi/configs",
        "/v0/evi/configs/{id}",
        "/v0/evi/configs/{id}/version/{version}",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    let operations: usize = ["prompts", "tools", "configs"]
        .iter()
        .flat_map(|k| {
            let d = &doc["paths"];
            [
                format!("/v0/evi/{k}"),
                format!("/v0/evi/{k}/{{id}}"),
                format!("/v0/evi/{k}/{{id}}/version/{{version}}"),
            ]
            .map(|p| d[p.as_str()].as_object().map_or(0, |o| o.len()))
        })
        .sum();
    assert_eq!(
        operations, 27,
        "nine operations each for prompts, tools and configs"
    );
    let schemas = &doc["components"]["schemas"];
    let chat = &schemas["ReturnChat"];
    let mut required: Vec<&str> = chat["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(
        required,
        vec!["chat_group_id", "id", "start_timestamp", "status"]
    );
    assert!(schemas["ReturnChatEvent"]["properties"]["type"].is_object());
    srv.stop(None).await;
}
