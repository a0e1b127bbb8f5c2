//! Hostile clients: absurd `Range` values, the token endpoint probed without credentials.

use crate::harness::*;
use serde_json::Value;

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
