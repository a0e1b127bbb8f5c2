//! Client-driven mode speaking `assistant_input` (`[engine.client] speak = true`) with a
//! fake `/v1/audio/speech` service over real HTTP: the messages, the WAV chunks, the
//! recorded assistant voice and its reconstruction; and nothing new without a voice.

use crate::harness::*;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use colloquy_server::capture::CapturedFormat;
use colloquy_server::objects::Voice as Track;
use colloquy_server::Settings;
use colloquy_speech::{Pcm, ServiceConfig};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A speech service answering 250 ms of a 440 Hz tone at 24 kHz; keeps what it was asked.
async fn fake_speech() -> (Arc<Mutex<Vec<Value>>>, String) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/audio/speech", post(speech))
        .with_state(asked.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (asked, url)
}

async fn speech(State(asked): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> Response {
    asked
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    Response::builder()
        .header("content-type", "audio/wav")
        .body(Body::from(tone_wav(440.0, 24_000, 250)))
        .unwrap()
}

fn speaking_with(url: String) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.engine.client.speak = true;
        s.engine.pipeline.tts = Some(ServiceConfig::new(url, "tts-1"));
        s.engine.pipeline.tts_voice = "nova".into();
    }
}

/// Reads `assistant_message`, its `audio_output` chunks and `assistant_end`; returns the
/// message id and the decoded chunks.
async fn spoken_answer(ws: &mut Ws, text: &str) -> (String, Vec<Pcm>) {
    let m = recv_json(ws).await;
    assert_eq!(m["type"], "assistant_message", "{m}");
    assert_eq!(m["message"]["content"], text);
    let id = m["id"].as_str().unwrap().to_string();
    let mut chunks = Vec::new();
    loop {
        let a = recv_json(ws).await;
        if a == json!({"type": "assistant_end"}) {
            return (id, chunks);
        }
        assert_eq!(a["type"], "audio_output", "{a}");
        assert_eq!(a["id"], id.as_str());
        assert_eq!(a["index"], chunks.len());
        chunks.push(wav_chunk_pcm(&a));
    }
}

#[tokio::test]
async fn client_mode_speaks_assistant_input_and_records_the_voice() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (asked, url) = fake_speech().await;
        let Some((srv, db)) = TestServer::start(backend, speaking_with(url)).await else {
            continue;
        };
        let key = srv.key(true).await;
        let (mut ws, meta) = srv.connect(&key.api_key, "").await;
        let chat_id = meta["chat_id"].as_str().unwrap().to_string();

        send_json(&mut ws, json!({"type": "user_input", "text": "hi"})).await;
        assert_eq!(recv_json(&mut ws).await["type"], "user_message");
        send_json(
            &mut ws,
            json!({"type": "assistant_input", "text": "Hello there."}),
        )
        .await;
        let (first, chunks) = spoken_answer(&mut ws, "Hello there.").await;
        // 250 ms at 48 kHz in chunks of at most 100 ms.
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|p| p.sample_rate == 48_000));
        let total: u64 = chunks.iter().map(Pcm::duration_ms).sum();
        assert!((245..=255).contains(&total), "{total} ms");

        // A second answer later in the chat.
        tokio::time::sleep(Duration::from_millis(700)).await;
        send_json(
            &mut ws,
            json!({"type": "assistant_input", "text": "Bye now."}),
        )
        .await;
        let (second, chunks) = spoken_answer(&mut ws, "Bye now.").await;
        assert_eq!(chunks.len(), 3);
        assert_ne!(first, second);
        {
            let asked = asked.lock().unwrap();
            assert_eq!(asked.len(), 2);
            assert_eq!(asked[0]["input"], "Hello there.");
            assert_eq!(asked[0]["voice"], "nova");
            assert_eq!(asked[0]["model"], "tts-1");
        }
        ws.close(None).await.unwrap();
        recv_until_close(&mut ws, Duration::from_secs(5)).await;

        // The voice is recorded where each answer was sent.
        let (_, chat) = srv
            .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}"))
            .await;
        let start = chat["start_timestamp"].as_i64().unwrap();
        let events = srv.all_events(&key.api_key, &chat_id, 100).await;
        let at = |id: &str| {
            events.iter().find(|e| e["id"] == id).unwrap()["timestamp"]
                .as_i64()
                .unwrap()
                - start
        };
        let (fmt, clips) =
            crate::relay::captured(&srv, key.user_id, &chat_id, Track::Assistant).await;
        assert_eq!(fmt, CapturedFormat::WavClips);
        assert_eq!(clips.len(), 6);
        for (answer, id) in [(&clips[..3], &first), (&clips[3..], &second)] {
            let sent = at(id);
            assert!(
                answer[0].0 >= sent && answer[0].0 < sent + 500,
                "speech at {} ms, message at {sent} ms",
                answer[0].0
            );
            // One chunk after another, as the client plays them.
            assert!(answer.windows(2).all(|w| w[1].0 >= w[0].0 + 100), "{:?}", {
                answer.iter().map(|c| c.0).collect::<Vec<_>>()
            });
        }
        assert!(
            clips[3].0 >= clips[0].0 + 700,
            "the second answer after the pause"
        );

        // ... and reconstructs.
        let rec = srv.audio_when_done(&key.api_key, &chat_id).await;
        assert_eq!(rec["status"], "COMPLETE", "{rec}");
        srv.stop(db).await;
    }
}

#[tokio::test]
async fn without_a_voice_assistant_input_is_text_only() {
    let (asked, url) = fake_speech().await;
    // A TTS service is configured but speaking is off; and speaking is on without a voice.
    let tts_only = move |s: &mut Settings| {
        s.engine.pipeline.tts = Some(ServiceConfig::new(url, "tts-1"));
    };
    let speak_no_voice = |s: &mut Settings| s.engine.client.speak = true;
    type Tweak = Box<dyn FnOnce(&mut Settings)>;
    let cases: [(&str, Tweak); 2] = [
        ("speak off", Box::new(tts_only)),
        ("no voice", Box::new(speak_no_voice)),
    ];
    for (case, tweak) in cases {
        if case == "no voice" && cfg!(feature = "offline-voice") {
            continue; // the built-in voice is available
        }
        let (srv, _) = TestServer::start(Backend::Sqlite, tweak).await.unwrap();
        let key = srv.key(true).await;
        let (mut ws, _) = srv.connect(&key.api_key, "").await;
        send_json(
            &mut ws,
            json!({"type": "assistant_input", "text": "Hello."}),
        )
        .await;
        let m = recv_json(&mut ws).await;
        assert_eq!(m["type"], "assistant_message", "{case}: {m}");
        assert_eq!(m["message"]["content"], "Hello.");
        assert_eq!(
            recv_json(&mut ws).await,
            json!({"type": "assistant_end"}),
            "{case}"
        );
        srv.stop(None).await;
    }
    assert!(asked.lock().unwrap().is_empty());
}

/// With `--features offline-voice` and no TTS service, the built-in voice speaks
/// (`cargo test -p colloquy-server --features offline-voice --test it client_voice`).
#[cfg(feature = "offline-voice")]
#[tokio::test]
async fn the_offline_voice_speaks_assistant_input_without_a_tts_service() {
    let speak = |s: &mut Settings| s.engine.client.speak = true;
    let (srv, _) = TestServer::start(Backend::Sqlite, speak).await.unwrap();
    let key = srv.key(true).await;
    let (mut ws, meta) = srv.connect(&key.api_key, "").await;
    let chat_id = meta["chat_id"].as_str().unwrap().to_string();
    send_json(
        &mut ws,
        json!({"type": "assistant_input", "text": "Hello from the built-in voice."}),
    )
    .await;
    let (_, chunks) = spoken_answer(&mut ws, "Hello from the built-in voice.").await;
    let total: u64 = chunks.iter().map(Pcm::duration_ms).sum();
    assert!(total > 800, "{total} ms of speech");
    let loud = chunks
        .iter()
        .flat_map(|p| p.samples.iter())
        .any(|s| s.unsigned_abs() > 1_000);
    assert!(loud, "the chunks hold speech, not silence");
    ws.close(None).await.unwrap();
    recv_until_close(&mut ws, Duration::from_secs(5)).await;
    let (fmt, clips) = crate::relay::captured(&srv, key.user_id, &chat_id, Track::Assistant).await;
    assert_eq!(fmt, CapturedFormat::WavClips);
    assert_eq!(clips.len(), chunks.len());
    srv.stop(None).await;
}
