//! Emotion scores in pipeline chats from a fake expression-measurement service speaking
//! Hume's streaming protocol over a real WebSocket: the scores of each spoken turn are the
//! averaged predictions, in `user_message.models.prosody.scores` and the recorded
//! `emotion_features`; a failing or unreachable service gives no scores and the chat goes
//! on.

use crate::harness::*;
use crate::pipeline::{pipeline_to, send_audio, speech_16k, Fake};
use base64::Engine;
use colloquy_server::Settings;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "expression-key";

/// The fake service: counts connections, checks every payload, answers from a script.
#[derive(Clone, Default)]
struct FakeExpression {
    connections: Arc<Mutex<usize>>,
    /// Duration (ms) of each WAV received.
    received_ms: Arc<Mutex<Vec<u64>>>,
    /// `true`: answer the next payload with an error (default: predictions).
    fail_next: Arc<Mutex<VecDeque<bool>>>,
    /// Never answer.
    silent: Arc<Mutex<bool>>,
}

impl FakeExpression {
    async fn start() -> (Self, String) {
        let fake = FakeExpression::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v0/stream/models", listener.local_addr().unwrap());
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, f.clone()));
            }
        });
        (fake, url)
    }
}

#[allow(clippy::result_large_err)] // tungstenite's handshake callback signature
async fn serve(tcp: tokio::net::TcpStream, fake: FakeExpression) {
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        assert_eq!(req.uri().path(), "/v0/stream/models");
        let key = req
            .headers()
            .get("X-Hume-Api-Key")
            .and_then(|v| v.to_str().ok());
        if key != Some(KEY) {
            let mut err = ErrorResponse::new(Some("invalid API key".into()));
            *err.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
            return Err(err);
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    *fake.connections.lock().unwrap() += 1;
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let req: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(req["models"], json!({"prosody": {}}), "{req}");
        assert_eq!(req["raw_text"], false);
        let wav = base64::engine::general_purpose::STANDARD
            .decode(req["data"].as_str().unwrap())
            .expect("base64 data");
        let pcm = colloquy_speech::decode_wav(&wav).expect("a WAV file");
        assert_eq!(pcm.sample_rate, 16_000);
        assert!(pcm.duration_ms() <= 5_000, "{} ms", pcm.duration_ms());
        fake.received_ms.lock().unwrap().push(pcm.duration_ms());
        if *fake.silent.lock().unwrap() {
            continue;
        }
        let id = req["payload_id"].clone();
        let fail = fake.fail_next.lock().unwrap().pop_front().unwrap_or(false);
        let answer = if fail {
            json!({"error": "the model failed", "code": "E0000", "payload_id": id})
        } else {
            json!({"payload_id": id, "prosody": {"predictions": [
                {"time": {"begin": 0.0, "end": 1.0}, "emotions": [
                    {"name": "Joy", "score": 0.5}, {"name": "Calmness", "score": 0.25},
                    {"name": "Interest", "score": 0.125}]},
                {"time": {"begin": 1.0, "end": 2.0}, "emotions": [
                    {"name": "Joy", "score": 0.25}, {"name": "Calmness", "score": 0.75},
                    {"name": "Interest", "score": 0.125}]},
            ]}})
        };
        if ws
            .send(Message::Text(answer.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn with_expression(url: String, expression: String) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        pipeline_to(url)(s);
        s.engine.expression.url = Some(expression);
        s.engine.expression.api_key = Some(KEY.into());
    }
}

/// Speaks `text` and returns the final `user_message`, then reads the answer up to its
/// `assistant_end`.
async fn spoken_turn(ws: &mut Ws, speech: &[u8]) -> Value {
    send_audio(ws, speech).await;
    send_audio(ws, &[0u8; 32_000]).await; // 1 s of silence ends the turn
    let mut heard = recv_json(ws).await;
    if heard["type"] == "user_interruption" {
        heard = recv_json(ws).await; // the previous answer was still playing
    }
    assert_eq!(heard["type"], "user_message", "{heard}");
    assert_eq!(heard["interim"], false);
    loop {
        let m = recv_json(ws).await;
        assert_ne!(m["type"], "error", "{m}");
        if m["type"] == "assistant_end" {
            return heard;
        }
    }
}

const AUDIO_QUERY: &str = "session_settings[audio][encoding]=linear16\
     &session_settings[audio][sample_rate]=16000&session_settings[audio][channels]=1";

#[tokio::test]
async fn spoken_turns_get_the_averaged_scores_of_the_expression_service() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (fake, url) = Fake::start().await;
        fake.transcripts.lock().unwrap().extend([
            "hello".to_string(),
            "again".to_string(),
            "third".to_string(),
        ]);
        let (expr, expr_url) = FakeExpression::start().await;
        let Some((srv, db)) = TestServer::start(backend, with_expression(url, expr_url)).await
        else {
            continue;
        };
        let key = srv.key(true).await;
        let (mut ws, meta) = srv.connect(&key.api_key, AUDIO_QUERY).await;
        let chat_id = meta["chat_id"].as_str().unwrap().to_string();
        let speech = speech_16k("Hello, how are you doing today?").await;
        let averaged = json!({"Calmness": 0.5, "Interest": 0.125, "Joy": 0.375});

        // The scores of the utterance: each emotion averaged over the predictions.
        let first = spoken_turn(&mut ws, &speech).await;
        assert_eq!(first["message"]["content"], "hello");
        assert_eq!(first["models"], json!({"prosody": {"scores": averaged}}));
        let received = expr.received_ms.lock().unwrap().clone();
        assert_eq!(received.len(), 1, "one piece: {received:?}");
        assert!(received[0] > 1_000, "the whole utterance: {received:?}");

        // The service fails: no scores, and the chat goes on.
        expr.fail_next.lock().unwrap().push_back(true);
        let second = spoken_turn(&mut ws, &speech).await;
        assert_eq!(second["message"]["content"], "again");
        assert_eq!(second["models"], json!({}), "no invented scores");

        // The next utterance opens a new socket (the first one was reused until it failed).
        let third = spoken_turn(&mut ws, &speech).await;
        assert_eq!(third["models"], json!({"prosody": {"scores": averaged}}));
        assert_eq!(*expr.connections.lock().unwrap(), 2);
        ws.close(None).await.unwrap();

        let events = srv.all_events(&key.api_key, &chat_id, 100).await;
        let users: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "USER_MESSAGE")
            .collect();
        assert_eq!(users.len(), 3);
        let recorded: Value =
            serde_json::from_str(users[0]["emotion_features"].as_str().unwrap()).unwrap();
        assert_eq!(recorded, averaged);
        assert_eq!(users[1]["emotion_features"], "", "no scores, none invented");
        let recorded: Value =
            serde_json::from_str(users[2]["emotion_features"].as_str().unwrap()).unwrap();
        assert_eq!(recorded, averaged);
        srv.stop(db).await;
    }
}

#[tokio::test]
async fn an_unreachable_refusing_or_silent_expression_service_gives_no_scores() {
    let (fake, url) = Fake::start().await;
    let (expr, expr_url) = FakeExpression::start().await;
    // Nothing listens on the first address; the second refuses the API key; the third
    // never answers.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("ws://{}/v0/stream/models", l.local_addr().unwrap())
    };
    let cases = [
        (closed, "wrong-key", false),
        (expr_url.clone(), "wrong-key", false),
        (expr_url, KEY, true),
    ];
    for (target, key, silent) in cases {
        *expr.silent.lock().unwrap() = silent;
        fake.transcripts.lock().unwrap().push_back("hello".into());
        let tweak = {
            let (url, target) = (url.clone(), target.clone());
            move |s: &mut Settings| {
                with_expression(url, target)(s);
                s.engine.expression.api_key = Some(key.into());
                s.engine.expression.timeout_secs = 1;
            }
        };
        let Some((srv, db)) = TestServer::start(Backend::Sqlite, tweak).await else {
            continue;
        };
        let user = srv.key(true).await;
        let (mut ws, meta) = srv.connect(&user.api_key, AUDIO_QUERY).await;
        let chat_id = meta["chat_id"].as_str().unwrap().to_string();
        let speech = speech_16k("Hello, how are you doing today?").await;
        let heard = spoken_turn(&mut ws, &speech).await;
        assert_eq!(heard["message"]["content"], "hello");
        assert_eq!(heard["models"], json!({}), "{target}: no invented scores");
        ws.close(None).await.unwrap();
        let events = srv.all_events(&user.api_key, &chat_id, 100).await;
        let msg = events.iter().find(|e| e["type"] == "USER_MESSAGE").unwrap();
        assert_eq!(msg["emotion_features"], "");
        srv.stop(db).await;
    }
    assert_eq!(
        *expr.connections.lock().unwrap(),
        1,
        "the wrong key was refused"
    );
}
