//! Hostile clients: absurd `Range` values, the token endpoint probed without credentials,
//! slow headers (the header-read timeout).

use crate::harness::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
