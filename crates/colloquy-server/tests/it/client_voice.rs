//! Client-driven mode speaking `assistant_input` (`[engine.client] speak`, on by default):
//! with the default configuration the built-in espeak-ng voice speaks (the messages, the
//! WAV chunks, the recorded voice and where it is in the reconstruction); a configured
//! `/v1/audio/speech` service (a fake over real HTTP) is preferred to it; `speak = false`
//! answers with text only.

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

/// The defaults (speaking on) plus a TTS service.
fn speaking_with(url: String) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.engine.pipeline.tts = Some(ServiceConfig::new(url, "tts-1"));
        s.engine.pipeline.tts_voice = "nova".into();
    }
}

/// Reads `assistant_message`, its `audio_output` chunks and `assistant_end`; returns the
/// message id and the decoded chunks.
async fn spoken_answer(ws: &mut Ws, text: &str) -> (String, Vec<Pcm>) {
    let (m, chunks) = recv_answer(ws, text).await;
    (m["id"].as_str().unwrap().to_string(), chunks)
}

#[tokio::test]
async fn a_tts_service_speaks_assistant_input_and_the_voice_is_recorded() {
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
async fn with_speak_off_assistant_input_is_text_only() {
    let (asked, url) = fake_speech().await;
    // Off with the built-in voice, and off with a TTS service configured.
    let off = |s: &mut Settings| s.engine.client.speak = false;
    let off_with_tts = move |s: &mut Settings| {
        s.engine.client.speak = false;
        s.engine.pipeline.tts = Some(ServiceConfig::new(url, "tts-1"));
    };
    type Tweak = Box<dyn FnOnce(&mut Settings)>;
    let cases: [(&str, Tweak); 2] = [
        ("built-in voice", Box::new(off)),
        ("tts service", Box::new(off_with_tts)),
    ];
    for (case, tweak) in cases {
        let (srv, _) = TestServer::start(Backend::Sqlite, tweak).await.unwrap();
        assert!(srv.running().state.client_voice.is_none(), "{case}");
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

/// With the default configuration (no TTS service, `speak` on) the built-in espeak-ng voice
/// speaks `assistant_input`: real speech in `audio_output` chunks before `assistant_end`,
/// recorded, and heard in the chat's reconstruction when the message was sent.
#[tokio::test]
async fn the_built_in_voice_speaks_assistant_input_by_default() {
    let (srv, _) = TestServer::start(Backend::Sqlite, |_| {}).await.unwrap();
    let key = srv.key(true).await;
    let (mut ws, meta) = srv.connect(&key.api_key, "").await;
    let chat_id = meta["chat_id"].as_str().unwrap().to_string();
    // A second of silence first, so the reconstruction shows where the speech starts.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let text = "Hello from the built-in voice.";
    send_json(&mut ws, json!({"type": "assistant_input", "text": text})).await;
    let (id, chunks) = spoken_answer(&mut ws, text).await;
    assert!(!chunks.is_empty(), "audio_output before assistant_end");
    for c in &chunks {
        assert_eq!(c.sample_rate, 48_000);
        assert!(c.duration_ms() <= 100, "{} ms", c.duration_ms());
    }
    let total: u64 = chunks.iter().map(Pcm::duration_ms).sum();
    assert!((800..6000).contains(&total), "{total} ms of speech");
    let loud = chunks
        .iter()
        .flat_map(|p| p.samples.iter())
        .filter(|s| s.unsigned_abs() > 1_000)
        .count();
    assert!(
        loud > 4_800,
        "the chunks hold speech, not silence ({loud} loud samples)"
    );
    ws.close(None).await.unwrap();
    recv_until_close(&mut ws, Duration::from_secs(5)).await;

    // Recorded as the assistant's voice, one clip per chunk, from when the message was sent.
    let (_, chat) = srv
        .get(&key.api_key, &format!("/v0/evi/chats/{chat_id}"))
        .await;
    let start = chat["start_timestamp"].as_i64().unwrap();
    let events = srv.all_events(&key.api_key, &chat_id, 100).await;
    let message = events.iter().find(|e| e["id"] == id.as_str()).unwrap();
    assert_eq!(message["type"], "AGENT_MESSAGE");
    let sent = message["timestamp"].as_i64().unwrap() - start;
    assert!(sent >= 1000, "{sent}");
    let (fmt, clips) = crate::relay::captured(&srv, key.user_id, &chat_id, Track::Assistant).await;
    assert_eq!(fmt, CapturedFormat::WavClips);
    assert_eq!(clips.len(), chunks.len());
    assert!(
        clips[0].0 >= sent && clips[0].0 < sent + 500,
        "{} vs {sent}",
        clips[0].0
    );

    // The reconstruction: silence before the message, the voice after it.
    let rec = srv.audio_when_done(&key.api_key, &chat_id).await;
    assert_eq!(rec["status"], "COMPLETE", "{rec}");
    let mp4 = srv
        .http
        .get(rec["signed_audio_url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let pcm = decode_with_ffmpeg(&srv, &mp4);
    let rms_ms = |from: i64, to: i64| {
        let at = |ms: i64| (ms.max(0) as usize * 48).min(pcm.len());
        let part = &pcm[at(from)..at(to)];
        assert!(
            !part.is_empty(),
            "{from}..{to} ms is inside the reconstruction"
        );
        (part.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / part.len() as f64).sqrt()
    };
    let (before, during) = (rms_ms(0, sent - 100), rms_ms(sent + 50, sent + 800));
    assert!(before < 50.0, "silent before the message: rms {before}");
    assert!(
        during > 500.0,
        "the assistant speaks after it: rms {during}"
    );
    srv.stop(None).await;
}

/// Decodes an MP4 with ffmpeg (an independent decoder) to 48 kHz mono 16-bit samples.
fn decode_with_ffmpeg(srv: &TestServer, mp4: &[u8]) -> Vec<i16> {
    let path = srv.dir.path().join("reconstruction.mp4");
    std::fs::write(&path, mp4).unwrap();
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg is installed (scripts/setup-system)");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}
