//! Chat webhooks (issue 14) against a real HTTP receiver that verifies every signature as
//! Hume's documentation describes it (HMAC-SHA256 of the raw body, ".", the timestamp
//! header; lowercase hex), on SQLite and PostgreSQL: both events with every field, a resumed
//! chat, a retry after a 500 with the same body and delivery id, server-wide subscriptions,
//! `deny_private_targets` both ways, retention-disabled accounts, and `tool_call` in a
//! pipeline chat answered through the control plane (`POST /v0/evi/chat/{id}/send`).

use crate::harness::*;
use crate::pipeline::{pipeline_to, Fake};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use colloquy_server::config::ServerWebhook;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub body: String,
    pub json: Value,
    pub timestamp: String,
    pub signature: String,
    pub delivery: String,
}

/// A webhook receiver on 127.0.0.1:0; answers 500 to the first `fail_first` requests.
#[derive(Clone, Default)]
pub struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    fail_first: Arc<AtomicUsize>,
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(h("content-type"), "application/json");
    let body = String::from_utf8(body.to_vec()).unwrap();
    r.got.lock().unwrap().push(Got {
        json: serde_json::from_str(&body).unwrap(),
        body,
        timestamp: h("x-hume-ai-webhook-timestamp"),
        signature: h("x-hume-ai-webhook-signature"),
        delivery: h("x-colloquy-delivery"),
    });
    if r.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

impl Receiver {
    /// Starts it; returns it and its URL.
    pub async fn start() -> (Self, String) {
        let r = Receiver::default();
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    /// Waits (up to 10 s) until `n` requests matching `pred` have arrived; returns them.
    pub async fn wait_for(&self, n: usize, pred: impl Fn(&Got) -> bool) -> Vec<Got> {
        for _ in 0..200 {
            let got: Vec<Got> = self
                .got
                .lock()
                .unwrap()
                .iter()
                .filter(|g| pred(g))
                .cloned()
                .collect();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{n} webhooks did not arrive; got {:#?}",
            self.got.lock().unwrap()
        );
    }

    pub fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

/// Verifies a request as Hume's documented receivers do: the timestamp is recent, and the
/// signature is the lowercase hex HMAC-SHA256, keyed with the signing key, of the raw body,
/// ".", and the timestamp.
pub fn verify(g: &Got, key: &str) {
    let ts: i64 = g.timestamp.parse().expect("a Unix-seconds timestamp");
    let now = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()) as i64;
    assert!((now - ts).abs() <= 180, "stale timestamp {ts}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{}.{}", g.body, g.timestamp).as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(g.signature, expected, "signature of {}", g.body);
}

fn event<'a>(name: &'a str, chat_id: &'a str) -> impl Fn(&Got) -> bool + 'a {
    move |g| g.json["event_name"] == name && g.json["chat_id"] == chat_id
}

async fn post_json(srv: &TestServer, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = srv
        .http
        .post(format!("{}{path}", srv.base))
        .header("X-Hume-Api-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn end_chat(mut ws: Ws) {
    ws.close(None).await.unwrap();
    let _ = recv_until_close(&mut ws, Duration::from_secs(5)).await;
}

async fn wait_ended(
    srv: &TestServer,
    key: &colloquy_server::keys::CreatedKey,
    meta: &Value,
) -> colloquy_storage::ChatRecord {
    for _ in 0..100 {
        let c = srv.stored_chat(key, meta).await;
        if c.end_timestamp.is_some() {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the chat did not end");
}

#[tokio::test]
async fn config_webhooks_carry_every_field_resume_and_retry_on_both_backends() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (rx, url) = Receiver::start().await;
        let Some((srv, db)) = TestServer::start(backend, |_| {}).await else {
            continue;
        };
        let key = srv.key(true).await;
        let signing = key
            .webhook_signing_key
            .clone()
            .expect("keys create prints the signing key");
        assert_eq!(signing.len(), 64);
        let (status, config) = post_json(
            &srv,
            &key.api_key,
            "/v0/evi/configs",
            json!({"name": "hooked", "evi_version": "3",
                   "webhooks": [{"url": url, "events": ["chat_started", "chat_ended"]}]}),
        )
        .await;
        assert_eq!(status, 201, "{config}");
        let config_id = config["id"].as_str().unwrap().to_string();

        // A new chat; the custom_session_id is set after the start.
        let (mut ws, meta) = srv
            .connect(&key.api_key, &format!("config_id={config_id}"))
            .await;
        let chat_id = meta["chat_id"].as_str().unwrap().to_string();
        let group_id = meta["chat_group_id"].as_str().unwrap().to_string();
        let started = rx.wait_for(1, event("chat_started", &chat_id)).await;
        send_json(
            &mut ws,
            json!({"type": "session_settings", "custom_session_id": "user-42"}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        end_chat(ws).await;
        let ended = rx.wait_for(1, event("chat_ended", &chat_id)).await;
        let chat = wait_ended(&srv, &key, &meta).await;
        assert_eq!(
            started[0].json,
            json!({"event_name": "chat_started", "chat_group_id": group_id, "chat_id": chat_id,
                   "config_id": config_id, "custom_session_id": null, "caller_number": null,
                   "twilio_metadata": null, "start_time": chat.start_timestamp,
                   "chat_start_type": "new_chat_group"})
        );
        let end = chat.end_timestamp.unwrap();
        assert_eq!(
            ended[0].json,
            json!({"event_name": "chat_ended", "chat_group_id": group_id, "chat_id": chat_id,
                   "config_id": config_id, "custom_session_id": "user-42", "caller_number": null,
                   "twilio_metadata": null, "end_time": end,
                   "duration_seconds": (end - chat.start_timestamp) / 1000,
                   "end_reason": "USER_ENDED"})
        );
        verify(&started[0], &signing);
        verify(&ended[0], &signing);
        assert_ne!(started[0].delivery, ended[0].delivery);

        // A resumed chat; its end is refused once (500), then retried with the same body
        // and delivery id, signed afresh.
        let (ws, meta2) = srv
            .connect(
                &key.api_key,
                &format!("config_id={config_id}&resumed_chat_group_id={group_id}"),
            )
            .await;
        let chat2 = meta2["chat_id"].as_str().unwrap().to_string();
        let s2 = rx.wait_for(1, event("chat_started", &chat2)).await;
        assert_eq!(s2[0].json["chat_start_type"], "resumed_chat_group");
        assert_eq!(s2[0].json["chat_group_id"], group_id.as_str());
        verify(&s2[0], &signing);
        rx.fail_first.store(1, Ordering::SeqCst);
        let closed_at = std::time::Instant::now();
        end_chat(ws).await;
        let tries = rx.wait_for(2, event("chat_ended", &chat2)).await;
        assert!(
            closed_at.elapsed() < Duration::from_secs(6),
            "the first retry comes within 5 s"
        );
        assert_eq!(tries[0].body, tries[1].body);
        assert_eq!(tries[0].delivery, tries[1].delivery);
        verify(&tries[0], &signing);
        verify(&tries[1], &signing);

        // Listed for the account, not for another; retried by hand.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, list) = srv
            .get(
                &key.api_key,
                &format!("/v0/evi/webhook_deliveries?chat_id={chat2}"),
            )
            .await;
        assert_eq!(status, 200, "{list}");
        let items = list["deliveries_page"].as_array().unwrap();
        let ended_row = items.iter().find(|d| d["event"] == "chat_ended").unwrap();
        assert_eq!(ended_row["id"], tries[0].delivery.as_str());
        assert_eq!(ended_row["status"], "delivered");
        assert_eq!(ended_row["attempts"], 2);
        assert_eq!(ended_row["last_status_code"], 204);
        assert_eq!(ended_row["url"], url.as_str());
        let other = srv.key(true).await;
        let (_, none) = srv.get(&other.api_key, "/v0/evi/webhook_deliveries").await;
        assert_eq!(none["total_items"], 0, "{none}");
        let retry_path = format!("/v0/evi/webhook_deliveries/{}/retry", tries[0].delivery);
        let (status, _) = post_json(&srv, &other.api_key, &retry_path, json!({})).await;
        assert_eq!(status, 404);
        let (status, row) = post_json(&srv, &key.api_key, &retry_path, json!({})).await;
        assert_eq!(status, 200, "{row}");
        let again = rx.wait_for(3, event("chat_ended", &chat2)).await;
        assert_eq!(again[2].body, tries[0].body);

        // The chat page lists the chat's deliveries.
        let page = ui_page(&srv, &key.api_key, &format!("/ui/chats/{chat2}")).await;
        assert!(page.contains(r#"id="webhook-deliveries""#), "{page}");
        assert!(
            page.contains(&format!(r#"data-delivery="{}""#, tries[0].delivery)),
            "{page}"
        );
        assert!(page.contains("chat_started") && page.contains("chat_ended"));
        srv.stop(db).await;
    }
}

/// A UI page, signed in with the key.
async fn ui_page(srv: &TestServer, api_key: &str, path: &str) -> String {
    use colloquy_server::ui::session::{csrf_token, SESSION_COOKIE, SIGN_IN_COOKIE};
    let cookie_of = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("cookie {name}"))
    };
    let page = srv
        .http
        .get(format!("{}/ui/sign-in", srv.base))
        .send()
        .await
        .unwrap();
    let nonce = cookie_of(&page, SIGN_IN_COOKIE);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed = http
        .post(format!("{}/ui/sign-in", srv.base))
        .header("cookie", format!("{SIGN_IN_COOKIE}={nonce}"))
        .form(&[
            ("api_key", api_key.to_string()),
            ("csrf", csrf_token(&nonce)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    let session = cookie_of(&signed, SESSION_COOKIE);
    let r = http
        .get(format!("{}{path}", srv.base))
        .header("cookie", format!("{SESSION_COOKIE}={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn server_wide(url: &str, events: &[&str], key: &str) -> ServerWebhook {
    ServerWebhook {
        url: url.to_string(),
        events: events.iter().map(|e| e.to_string()).collect(),
        signing_key: key.into(),
    }
}

#[tokio::test]
async fn server_wide_subscriptions_and_private_targets() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for deny in [false, true] {
            let (rx, url) = Receiver::start().await;
            let sub = server_wide(&url, &["chat_ended"], "server-secret");
            let Some((srv, db)) = TestServer::start(backend, move |s| {
                s.webhooks.subscriptions = vec![sub];
                s.webhooks.deny_private_targets = deny;
            })
            .await
            else {
                continue;
            };
            // Every account's chats; a retention-disabled one's too (from memory).
            let a = srv.key(true).await;
            let b = srv.key(false).await;
            let (ws, meta_a) = srv.connect(&a.api_key, "").await;
            end_chat(ws).await;
            let (ws, meta_b) = srv.connect(&b.api_key, "").await;
            end_chat(ws).await;
            let (ca, cb) = (
                meta_a["chat_id"].as_str().unwrap(),
                meta_b["chat_id"].as_str().unwrap(),
            );
            if deny {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                assert!(
                    rx.all().is_empty(),
                    "a loopback target is refused: {:?}",
                    rx.all()
                );
                let (_, list) = srv
                    .get(&a.api_key, "/v0/evi/webhook_deliveries?status=failed")
                    .await;
                let row = &list["deliveries_page"][0];
                assert_eq!(row["chat_id"], ca, "{list}");
                assert_eq!(row["status"], "failed");
                assert!(
                    row["last_error"]
                        .as_str()
                        .unwrap()
                        .contains("deny_private_targets"),
                    "{row}"
                );
            } else {
                let got_a = rx.wait_for(1, event("chat_ended", ca)).await;
                let got_b = rx.wait_for(1, event("chat_ended", cb)).await;
                verify(&got_a[0], "server-secret");
                verify(&got_b[0], "server-secret");
                assert_eq!(got_b[0].json["end_reason"], "USER_ENDED");
                assert_eq!(got_b[0].json["config_id"], Value::Null);
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert!(rx
                    .all()
                    .iter()
                    .all(|g| g.json["event_name"] == "chat_ended"));
                assert_eq!(rx.all().len(), 2, "{:?}", rx.all());
                // Nothing of the retention-disabled account is stored.
                let (_, list) = srv.get(&b.api_key, "/v0/evi/webhook_deliveries").await;
                assert_eq!(list["total_items"], 0, "{list}");
                let (_, list) = srv.get(&a.api_key, "/v0/evi/webhook_deliveries").await;
                assert_eq!(list["total_items"], 1, "{list}");
                assert_eq!(list["deliveries_page"][0]["status"], "delivered");
            }
            srv.stop(db).await;
        }
    }
}

#[tokio::test]
async fn a_pipeline_tool_call_is_posted_with_the_whole_message() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (_fake, llm) = Fake::start().await;
        let (rx, url) = Receiver::start().await;
        let sub = server_wide(&url, &["tool_call"], "tool-secret");
        let pipeline = pipeline_to(llm);
        let Some((srv, db)) = TestServer::start(backend, move |s| {
            pipeline(s);
            s.webhooks.subscriptions = vec![sub];
        })
        .await
        else {
            continue;
        };
        let key = srv.key(true).await;
        let (mut ws, meta) = srv.connect(&key.api_key, "").await;
        let chat_id = meta["chat_id"].as_str().unwrap().to_string();
        send_json(
            &mut ws,
            json!({"type": "session_settings", "custom_session_id": "s-1",
                   "tools": [{"type": "function", "name": "get_weather",
                              "parameters": "{\"type\":\"object\"}"}]}),
        )
        .await;
        send_json(&mut ws, json!({"type": "user_input", "text": "weather"})).await;
        let got = rx.wait_for(1, event("tool_call", &chat_id)).await;
        verify(&got[0], "tool-secret");
        let ts = got[0].json["timestamp"].as_i64().unwrap();
        let group = meta["chat_group_id"].as_str().unwrap();
        assert_eq!(
            got[0].json,
            json!({"event_name": "tool_call", "chat_group_id": group, "chat_id": chat_id,
                   "config_id": null, "custom_session_id": "s-1", "caller_number": null,
                   "twilio_metadata": null, "timestamp": ts,
                   "tool_call_message": {"type": "tool_call", "name": "get_weather",
                       "parameters": "{\"city\":\"Paris\"}", "tool_call_id": "call-1",
                       "tool_type": "function", "response_required": true,
                       "custom_session_id": "s-1"}})
        );
        let chat = srv.stored_chat(&key, &meta).await;
        assert!(ts >= chat.start_timestamp);

        // The receiver's backend answers through the control plane; the pipeline goes on.
        let call = &got[0].json["tool_call_message"];
        let (status, body) = post_json(
            &srv,
            &key.api_key,
            &format!("/v0/evi/chat/{chat_id}/send"),
            json!({"type": "tool_response", "tool_call_id": call["tool_call_id"], "content": "sunny"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let mut answered = false;
        for _ in 0..60 {
            let m = recv_json(&mut ws).await;
            if m["type"] == "assistant_message"
                && m["message"]["content"] == "It is sunny in Paris."
            {
                answered = true;
                break;
            }
        }
        assert!(answered, "the pipeline answered after the tool response");
        end_chat(ws).await;
        srv.stop(db).await;
    }
}
