//! Hostile clients: absurd `Range` values, credential guessing (the failed-authentication
//! limit), slow headers (the header-read timeout), odd but valid query parameters.

use crate::harness::*;
use colloquy_server::ui::session::{csrf_token, SIGN_IN_COOKIE};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn every_range_value_gets_200_206_or_416() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let state = &srv.running().state;
    let filename = format!(
        "{}/{}/reconstructed_audio.mp4",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    );
    let body: Vec<u8> = (0..100u8).collect();
    state
        .objects
        .store
        .put(
            &object_store::path::Path::from(filename.as_str()),
            body.clone().into(),
        )
        .await
        .unwrap();
    let url = state.signer.url(
        &state.public_base,
        &filename,
        colloquy_server::clock::now_ms() + 60_000,
    );
    const MAX: &str = "18446744073709551615";
    const HUGE: &str = "123456789012345678901234567890";
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        (format!("bytes=0-{MAX}"), 206, Some("bytes 0-99/100")),
        (format!("bytes=0-{HUGE}"), 206, Some("bytes 0-99/100")),
        (format!("bytes=10-{MAX}"), 206, Some("bytes 10-99/100")),
        (format!("bytes=-{MAX}"), 206, Some("bytes 0-99/100")),
        (format!("bytes=-{HUGE}"), 206, Some("bytes 0-99/100")),
        (format!("bytes={MAX}-"), 416, Some("bytes */100")),
        (format!("bytes={HUGE}-"), 416, Some("bytes */100")),
        (format!("bytes={MAX}-{MAX}"), 416, Some("bytes */100")),
        (
            "bytes=18446744073709551614-18446744073709551615".into(),
            416,
            None,
        ),
        ("bytes=90-".into(), 206, Some("bytes 90-99/100")),
        ("bytes=-0".into(), 416, None),
        ("bytes=5-1".into(), 416, None),
        ("bytes=abc".into(), 200, None),
        ("bytes=-".into(), 200, None),
        ("bytes=+1-2".into(), 200, None),
        ("bytes=0-1,3-4".into(), 200, None),
        ("pages=1-2".into(), 200, None),
        ("bytes=1e3-".into(), 200, None),
    ];
    for (range, status, content_range) in cases {
        let resp = srv
            .http
            .get(&url)
            .header("Range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{range}");
        if let Some(cr) = content_range {
            assert_eq!(resp.headers()["content-range"], cr, "{range}");
        }
        let bytes = resp.bytes().await.unwrap();
        match status {
            200 => assert_eq!(bytes.as_ref(), body.as_slice(), "{range}"),
            206 => assert!(body.ends_with(&bytes), "{range}"),
            _ => {
                let err: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(err["code"], "range_not_satisfiable", "{range}");
            }
        }
    }
    srv.stop(None).await;
}

/// `POST /oauth2-cc/token` with optional Basic credentials and form body.
async fn token(srv: &TestServer, basic: Option<(&str, &str)>, form: Option<&str>) -> (u16, Value) {
    let mut req = srv
        .http
        .post(format!("{}/oauth2-cc/token", srv.base))
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((user, pass)) = basic {
        req = req.basic_auth(user, Some(pass));
    }
    if let Some(f) = form {
        req = req.body(f.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_token_endpoint_checks_credentials_before_the_form() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let key = srv.key(true).await;
    let good = Some((key.api_key.as_str(), key.secret_key.as_str()));
    let wrong = Some((key.api_key.as_str(), "not-the-secret"));
    let unknown = Some(("no-such-key", "x"));
    for basic in [None, wrong, unknown] {
        for form in [
            None,
            Some(""),
            Some("grant_type=password"),
            Some("grant_type=client_credentials"),
        ] {
            let (status, body) = token(&srv, basic, form).await;
            assert_eq!(status, 401, "{basic:?} {form:?}: {body}");
            assert_eq!(body["code"], "unauthorized");
        }
    }
    // Not Basic, or not base64 of `key:secret`: wrong credentials too.
    for authorization in ["Bearer abc", "Basic !!!", "Basic bm9jb2xvbg=="] {
        let resp = srv
            .http
            .post(format!("{}/oauth2-cc/token", srv.base))
            .header("authorization", authorization)
            .body("grant_type=password")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{authorization}");
    }
    let (status, body) = token(&srv, good, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = token(&srv, good, Some("grant_type=password")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, body) = token(&srv, good, Some("grant_type=client_credentials")).await;
    assert_eq!(status, 200, "{body}");
    srv.stop(None).await;
}

/// Sends the start of a request, then one header line a second, until the server closes
/// the connection; how long that took.
async fn dribble(addr: std::net::SocketAddr, give_up: Duration) -> Duration {
    let start = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let mut line = 0;
    while start.elapsed() < give_up {
        match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue, // an error response before the close
            Err(_) => {
                line += 1;
                if tcp
                    .write_all(format!("X-Slow-{line}: 1\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return start.elapsed();
                }
            }
        }
    }
    start.elapsed()
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_websockets_are_not() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |s| {
        s.limits.header_read_timeout_secs = 1;
    })
    .await
    else {
        return;
    };
    let addr = srv.running().addr;
    let key = srv.key(true).await;
    // A chat opened before the slow clients, idle for longer than the timeout meanwhile.
    let (mut ws, _) = srv.connect(&key.api_key, "").await;
    // 200 slow clients at once: each is closed within the timeout (+2 s of slack).
    let slow: Vec<_> = (0..200)
        .map(|_| tokio::spawn(dribble(addr, Duration::from_secs(10))))
        .collect();
    for s in slow {
        let took = s.await.unwrap();
        assert!(took < Duration::from_secs(3), "closed after {took:?}");
    }
    // A normal request still works.
    let resp = srv
        .http
        .get(format!("{}/healthz", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The chat, idle for > 1 s, is still open and answers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send_json(
        &mut ws,
        json!({"type": "user_input", "text": "still there?"}),
    )
    .await;
    let echo = recv_json(&mut ws).await;
    assert_eq!(echo["type"], "user_message", "{echo}");
    // A kept-alive connection idle for longer than the timeout is closed by the server;
    // the client just opens another one.
    let resp = srv
        .http
        .get(format!("{}/healthz", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    srv.stop(None).await;
}

#[tokio::test]
async fn a_request_sent_at_once_is_not_cut_off() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |s| {
        s.limits.header_read_timeout_secs = 1;
    })
    .await
    else {
        return;
    };
    let mut tcp = TcpStream::connect(srv.running().addr).await.unwrap();
    // Two requests on one connection, the second after a pause shorter than the timeout.
    for _ in 0..2 {
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Idle past the timeout: closed.
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
        .await
        .expect("closed within the timeout")
        .unwrap_or(0);
    assert!(
        n == 0 || buf[..n].starts_with(b"HTTP/1.1 408"),
        "{:?}",
        &buf[..n]
    );
    srv.stop(None).await;
}

/// `GET /v0/evi/chats` with `X-Hume-Api-Key: key`: status, `Retry-After`, body.
async fn chats(srv: &TestServer, key: &str) -> (u16, Option<u64>, Value) {
    let resp = srv
        .http
        .get(format!("{}/v0/evi/chats", srv.base))
        .header("X-Hume-Api-Key", key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

/// The HTTP status of a refused socket upgrade (`None` if the socket opened).
async fn upgrade_status(srv: &TestServer, key: &str) -> Option<u16> {
    let mut req = srv.ws_url("").into_client_request().unwrap();
    req.headers_mut()
        .insert("X-Hume-Api-Key", key.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
        Err(e) => panic!("unexpected socket error: {e}"),
    }
}

#[tokio::test]
async fn wrong_credentials_past_the_limit_get_429_and_right_ones_keep_working() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    assert_eq!(
        srv.running().state.settings.limits.auth_failures_per_minute,
        60,
        "the default limit"
    );
    let key = srv.key(true).await;
    for i in 0..60 {
        let (status, retry, body) = chats(&srv, &format!("guess-{i}")).await;
        assert_eq!((status, retry), (401, None), "attempt {i}: {body}");
    }
    // The 61st failure in the minute, and every one after it.
    let (status, retry, body) = chats(&srv, "guess-60").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "too_many_requests");
    assert_eq!(body["error"], "Too Many Requests");
    let retry = retry.expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("wait {retry} seconds")),
        "{body}"
    );
    // A repeat of a failed key (refused without a lookup) and a new guess.
    for guess in ["guess-3", "guess-61"] {
        let (status, retry, _) = chats(&srv, guess).await;
        assert_eq!(status, 429, "{guess}");
        assert!(retry.is_some());
    }
    // The right key still works from the same address, on REST and the socket.
    let (status, _, body) = chats(&srv, &key.api_key).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upgrade_status(&srv, &key.api_key).await, None);
    // Wrong credentials anywhere else are refused the same way.
    assert_eq!(upgrade_status(&srv, "guess-ws").await, Some(429));
    let resp = srv
        .http
        .get(format!("{}/v0/evi/chat_groups", srv.base))
        .bearer_auth("no-such-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let (status, body) = token(
        &srv,
        Some((&key.api_key, "not-the-secret")),
        Some("grant_type=client_credentials"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too_many_requests"))
    );
    // ...while the right client credentials and tokens keep working.
    let (status, body) = token(
        &srv,
        Some((&key.api_key, &key.secret_key)),
        Some("grant_type=client_credentials"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let resp = srv
        .http
        .get(format!("{}/v0/evi/chats", srv.base))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // No credentials at all is not a failed authentication: still 401.
    let resp = srv
        .http
        .get(format!("{}/v0/evi/chats", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The web UI's sign-in form counts and refuses the same way (HTML, 429).
    let page = srv
        .http
        .get(format!("{}/ui/sign-in", srv.base))
        .send()
        .await
        .unwrap();
    let nonce = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{SIGN_IN_COOKIE}=")))
        .and_then(|v| v.split(';').next())
        .expect("sign-in cookie")
        .to_string();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |api_key: String| {
        let nonce = nonce.clone();
        let http = no_redirects.clone();
        let url = format!("{}/ui/sign-in", srv.base);
        async move {
            http.post(url)
                .header("cookie", format!("{SIGN_IN_COOKIE}={nonce}"))
                .form(&[("api_key", api_key), ("csrf", csrf_token(&nonce))])
                .send()
                .await
                .unwrap()
        }
    };
    let refused = sign_in("guess-ui".into()).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("Too many failed sign-ins"));
    let ok = sign_in(key.api_key.clone()).await;
    assert_eq!(ok.status(), 303, "the right key signs in");
    srv.stop(None).await;
}

#[tokio::test]
async fn ui_sign_in_failures_count_towards_the_limit() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |s| {
        s.limits.auth_failures_per_minute = 3;
    })
    .await
    else {
        return;
    };
    let page = srv
        .http
        .get(format!("{}/ui/sign-in", srv.base))
        .send()
        .await
        .unwrap();
    let nonce = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{SIGN_IN_COOKIE}=")))
        .and_then(|v| v.split(';').next())
        .expect("sign-in cookie")
        .to_string();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = srv
            .http
            .post(format!("{}/ui/sign-in", srv.base))
            .header("cookie", format!("{SIGN_IN_COOKIE}={nonce}"))
            .form(&[
                ("api_key", format!("guess-{i}")),
                ("csrf", csrf_token(&nonce)),
            ])
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
    // The API sees the same address over the limit.
    let (status, _, _) = chats(&srv, "guess-api").await;
    assert_eq!(status, 429);
    srv.stop(None).await;
}

#[tokio::test]
async fn a_limit_of_zero_counts_nothing() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |s| {
        s.limits.auth_failures_per_minute = 0;
    })
    .await
    else {
        return;
    };
    for i in 0..100 {
        let (status, retry, _) = chats(&srv, &format!("guess-{i}")).await;
        assert_eq!((status, retry), (401, None), "attempt {i}");
    }
    assert_eq!(upgrade_status(&srv, "guess-ws").await, Some(401));
    assert_eq!(srv.running().state.auth_failures.tracked(), 0);
    srv.stop(None).await;
}

#[tokio::test]
async fn empty_filters_mean_not_given() {
    on_each_backend(
        |_| {},
        |srv| async move {
            let key = srv.key(true).await;
            let (_, meta) = srv.connect(&key.api_key, "").await;
            let group = meta["chat_group_id"].as_str().unwrap().to_string();
            for path in [
                "/v0/evi/chats?config_id=".to_string(),
                "/v0/evi/chats?status=&search=&config_id=".to_string(),
                "/v0/evi/chats?status=%20&config_id=%20".to_string(),
                "/v0/evi/chats?page_number=&page_size=&ascending_order=".to_string(),
                "/v0/evi/chat_groups?config_id=".to_string(),
                format!("/v0/evi/chat_groups/{group}?status="),
            ] {
                let (status, body) = srv.get(&key.api_key, &path).await;
                assert_eq!(status, 200, "{path}: {body}");
                let items = body
                    .get("chats_page")
                    .or_else(|| body.get("chat_groups_page"))
                    .or_else(|| body.get("chats"))
                    .and_then(Value::as_array)
                    .unwrap_or_else(|| panic!("{path}: {body}"));
                assert_eq!(items.len(), 1, "{path}: the filter was not applied");
            }
            // A value that is there but wrong is still refused.
            for path in ["/v0/evi/chats?config_id=x", "/v0/evi/chats?status=x"] {
                let (status, _) = srv.get(&key.api_key, path).await;
                assert_eq!(status, 400, "{path}");
            }
            srv
        },
    )
    .await;
}

#[tokio::test]
async fn the_document_declares_uuids_and_empty_values() {
    let Some((srv, _)) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let (status, doc) = srv.get("", "/openapi.json").await;
    assert_eq!(status, 200);
    let mut ids = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let at = format!("{method} {path} {name}");
                if p["in"] == "path" && name == "version" {
                    // Version numbers of prompts, tools and configs.
                    assert_eq!(p["schema"]["type"], "integer", "{at}");
                    assert_eq!(p["schema"]["minimum"], 0, "{at}");
                } else if p["in"] == "path" || name == "config_id" {
                    ids += 1;
                    assert_eq!(p["schema"]["type"], "string", "{at}");
                    assert_eq!(p["schema"]["format"], "uuid", "{at}");
                }
                let optional_query = p["in"] == "query" && p["required"] != true;
                assert_eq!(
                    p.get("allowEmptyValue") == Some(&Value::Bool(true)),
                    optional_query,
                    "{at}: allowEmptyValue on exactly the optional query parameters"
                );
            }
        }
    }
    assert!(ids >= 11 + 18, "{ids} ids");
    let page_number = doc["paths"]["/v0/evi/chats"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "page_number")
        .unwrap();
    assert_eq!(page_number["schema"]["maximum"], u32::MAX);
    let token = &doc["paths"]["/oauth2-cc/token"]["post"];
    assert!(token["responses"]["429"].is_object());
    let form = &doc["components"]["schemas"]["GrantType"];
    assert_eq!(form["enum"], serde_json::json!(["client_credentials"]));
    srv.stop(None).await;
}
