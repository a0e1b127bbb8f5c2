//! Hostile clients: absurd `Range` values.

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
