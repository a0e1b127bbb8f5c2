//! Text to speech over real HTTP (issue 16): the streamed file starts long before a long
//! text is spoken, and a generation made on one server can be continued and saved on
//! another server sharing the PostgreSQL database.

use crate::harness::*;
use colloquy_testkit::{settings, start_server, TestDatabase};
use serde_json::{json, Value};
use std::time::Instant;

async fn post(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: Value,
) -> reqwest::Response {
    http.post(format!("{base}{path}"))
        .header("X-Hume-Api-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streamed_file_starts_before_the_text_is_spoken() {
    let srv = TestServer::sqlite(|_| {}).await;
    let key = srv.key(true).await;
    // The first TTS request loads the built-in voice; time the second.
    let warm = post(
        &srv.http,
        &srv.base,
        &key.api_key,
        "/v0/tts/file",
        json!({"utterances": [{"text": "Warm up."}]}),
    )
    .await;
    assert_eq!(warm.status(), 200);
    let text = "This sentence is spoken again and again to make a long text. ".repeat(40);
    let started = Instant::now();
    let mut response = post(
        &srv.http,
        &srv.base,
        &key.api_key,
        "/v0/tts/stream/file",
        json!({"utterances": [{"text": text}], "format": {"type": "pcm"}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/pcm");
    let mut first = None;
    let mut bytes = 0usize;
    while let Some(chunk) = response.chunk().await.unwrap() {
        if first.is_none() && !chunk.is_empty() {
            first = Some(started.elapsed());
        }
        bytes += chunk.len();
    }
    let total = started.elapsed();
    let first = first.expect("audio");
    let seconds = bytes as f64 / 2.0 / 48_000.0;
    assert!(seconds > 60.0, "{seconds} s of audio");
    assert!(
        first * 10 < total,
        "first byte after {first:?} of {total:?}: not streamed"
    );
    srv.stop(None).await;
}

#[tokio::test]
async fn generations_are_shared_by_servers_on_one_database() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = start_server(settings(dirs[0].path(), Some(db.url())))
        .await
        .unwrap();
    let b = start_server(settings(dirs[1].path(), Some(db.url())))
        .await
        .unwrap();
    let store = a.state.store.clone();
    let key = colloquy_server::keys::create_account_key(store.as_ref(), Some("tts".into()), true)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let made: Value = post(
        &http,
        &a.base_url(),
        &key.api_key,
        "/v0/tts",
        json!({"utterances": [{"text": "Hello.", "voice": {"name": "Kora", "provider": "HUME_AI"}}],
               "format": {"type": "wav"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    let generation = made["generations"][0]["generation_id"].as_str().unwrap();
    let continued = post(
        &http,
        &b.base_url(),
        &key.api_key,
        "/v0/tts",
        json!({"utterances": [{"text": "Again."}], "context": {"generation_id": generation}}),
    )
    .await;
    assert_eq!(continued.status(), 200);
    let saved: Value = post(
        &http,
        &b.base_url(),
        &key.api_key,
        "/v0/tts/voices",
        json!({"generation_id": generation, "name": "Shared"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(saved["provider"], "CUSTOM_VOICE");
    let listed: Value = http
        .get(format!(
            "{}/v0/tts/voices?provider=CUSTOM_VOICE",
            a.base_url()
        ))
        .header("X-Hume-Api-Key", &key.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["voices_page"][0]["name"], "Shared");
    a.shutdown().await;
    b.shutdown().await;
    db.drop_database().await;
}

/// The store's rules on both backends: generations expire (and expired ones are deleted by
/// the next write), voice names are unique per account, everything is per account.
#[tokio::test]
async fn the_voice_store_keeps_its_rules() {
    use colloquy_storage::{SavedVoice, VoiceSaved};
    use uuid::Uuid;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((srv, db)) = TestServer::start(backend, |_| {}).await else {
            continue;
        };
        let store = srv.running().state.store.clone();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (g1, g2) = (Uuid::new_v4(), Uuid::new_v4());
        store
            .remember_generations(a, &[(g1, "{\"x\":1}".into())], 1_000, 2_000)
            .await
            .unwrap();
        assert_eq!(
            store.generation(a, g1, 1_500).await.unwrap().as_deref(),
            Some("{\"x\":1}")
        );
        assert_eq!(
            store.generation(a, g1, 2_000).await.unwrap().as_deref(),
            Some("{\"x\":1}")
        );
        assert_eq!(
            store.generation(a, g1, 2_001).await.unwrap(),
            None,
            "expired"
        );
        assert_eq!(
            store.generation(b, g1, 1_500).await.unwrap(),
            None,
            "another account's"
        );
        // The next write deletes what expired before it.
        store
            .remember_generations(a, &[(g2, "{}".into())], 3_000, 4_000)
            .await
            .unwrap();
        assert_eq!(
            store.generation(a, g1, 1_500).await.unwrap(),
            None,
            "deleted"
        );
        assert!(store.generation(a, g2, 3_500).await.unwrap().is_some());

        let voice = |name: &str| SavedVoice {
            id: Uuid::new_v4(),
            name: name.into(),
            settings: "{}".into(),
            created_on: 5,
        };
        let v = voice("Mine");
        assert_eq!(store.save_voice(a, &v).await.unwrap(), VoiceSaved::Saved);
        assert_eq!(
            store.save_voice(a, &voice("Mine")).await.unwrap(),
            VoiceSaved::NameTaken
        );
        assert_eq!(
            store.save_voice(b, &voice("Mine")).await.unwrap(),
            VoiceSaved::Saved
        );
        assert_eq!(
            store.save_voice(a, &voice("Another")).await.unwrap(),
            VoiceSaved::Saved
        );
        let names: Vec<String> = store
            .list_voices(a)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["Another", "Mine"]);
        assert_eq!(store.voice_by_id(a, v.id).await.unwrap(), Some(v.clone()));
        assert_eq!(store.voice_by_id(b, v.id).await.unwrap(), None);
        assert_eq!(
            store.voice_by_name(a, "Mine").await.unwrap().map(|x| x.id),
            Some(v.id)
        );
        assert!(store.delete_voice(a, "Mine").await.unwrap());
        assert!(!store.delete_voice(a, "Mine").await.unwrap());
        assert!(
            store.voice_by_name(b, "Mine").await.unwrap().is_some(),
            "b's is untouched"
        );
        srv.stop(db).await;
    }
}
